//! Error answers in the shapes the real services use (docs/design.md, "The API as the daemon uses it"):
//! - VPCEP, flat: `{"error_code":"EndPoint.0002","error_msg":"Parameter error."}`
//! - VPCEP, nested (per-API pages): `{"error":{"code":"EndPoint.0002","message":"…"}}`
//! - API gateway (`APIGW.`/`APIG.` codes: auth, throttling, unknown API):
//!   `{"error_msg":"…","error_code":"APIGW.0301","request_id":"…"}`
//!
//! Which VPCEP shape is used is a fault setting ([`ErrorShape`]), so clients get tested
//! on both. IAM errors use the flat shape with `IAM.` codes (the exact IAM codes are a
//! simulator choice, UNVERIFIED against the real service).

use super::faults::ErrorShape;
use axum::http::StatusCode;
use serde_json::json;
use std::borrow::Cow;
use std::time::Duration;

/// One error answer: HTTP status, code, message and an optional `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// `EndPoint.XXXX`, `APIGW.XXXX` or `IAM.XXXX`.
    pub code: Cow<'static, str>,
    /// Human-readable message.
    pub message: Cow<'static, str>,
    /// Value of the `Retry-After` header, if any.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with a fixed code and message.
    pub const fn new(status: StatusCode, code: &'static str, message: &'static str) -> Self {
        ApiError {
            status,
            code: Cow::Borrowed(code),
            message: Cow::Borrowed(message),
            retry_after: None,
        }
    }

    /// Same code, another message (e.g. naming the offending value).
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Cow::Owned(message.into());
        self
    }

    /// True for API gateway codes, which always use the gateway shape.
    pub fn is_gateway(&self) -> bool {
        self.code.starts_with("APIGW.") || self.code.starts_with("APIG.")
    }

    /// True for VPCEP codes (`EndPoint.`, and the documented `Endpoint.1018` spelling).
    pub fn is_vpcep(&self) -> bool {
        self.code.starts_with("EndPoint.") || self.code.starts_with("Endpoint.")
    }

    /// The JSON body in the shape for this code; `shape` applies to VPCEP codes only.
    pub fn body(&self, shape: ErrorShape, request_id: &str) -> Vec<u8> {
        let v = if self.is_gateway() {
            json!({"error_msg": self.message, "error_code": self.code, "request_id": request_id})
        } else if self.is_vpcep() && shape.resolve() == ErrorShape::Nested {
            json!({"error": {"code": self.code, "message": self.message}})
        } else {
            json!({"error_code": self.code, "error_msg": self.message})
        };
        v.to_string().into_bytes()
    }
}

const BAD: StatusCode = StatusCode::BAD_REQUEST;

/// 500 EndPoint.0001.
pub(crate) const SYSTEM_ERROR: ApiError = ApiError::new(
    StatusCode::INTERNAL_SERVER_ERROR,
    "EndPoint.0001",
    "System error. Please retry.",
);
/// 503 with the VPCEP system-error code (the real gateway's 503 body is undocumented).
pub(crate) const UNAVAILABLE: ApiError = ApiError::new(
    StatusCode::SERVICE_UNAVAILABLE,
    "EndPoint.0001",
    "System error. Please retry.",
);
/// 400 EndPoint.0002.
pub(crate) const PARAMETER: ApiError = ApiError::new(BAD, "EndPoint.0002", "Parameter error.");
/// 404 EndPoint.0005.
pub(crate) const NOT_FOUND: ApiError = ApiError::new(
    StatusCode::NOT_FOUND,
    "EndPoint.0005",
    "The requested resource is unavailable.",
);
/// 403 EndPoint.0004 (token or `X-Project-Id` for another project).
pub(crate) const FORBIDDEN: ApiError = ApiError::new(
    StatusCode::FORBIDDEN,
    "EndPoint.0004",
    "Authentication information is incorrect or you have no permissions.",
);
/// 400 EndPoint.0006.
pub(crate) const INVALID_LIMIT: ApiError = ApiError::new(BAD, "EndPoint.0006", "Invalid limit.");
/// 400 EndPoint.0007.
pub(crate) const INVALID_ACTION: ApiError = ApiError::new(BAD, "EndPoint.0007", "Invalid action.");
/// 400 EndPoint.0010.
pub(crate) const INVALID_OFFSET: ApiError = ApiError::new(BAD, "EndPoint.0010", "Invalid offset.");
/// 400 EndPoint.0014.
pub(crate) const INVALID_PROJECT: ApiError =
    ApiError::new(BAD, "EndPoint.0014", "Invalid project ID.");
/// 400 EndPoint.0017.
pub(crate) const INVALID_SORT_KEY: ApiError =
    ApiError::new(BAD, "EndPoint.0017", "Invalid sort_key.");
/// 400 EndPoint.0018.
pub(crate) const INVALID_SORT_DIR: ApiError =
    ApiError::new(BAD, "EndPoint.0018", "Invalid sort_dir.");
/// 400 EndPoint.0019.
pub(crate) const INVALID_STATUS: ApiError = ApiError::new(BAD, "EndPoint.0019", "Invalid status.");
/// 400 EndPoint.0021.
pub(crate) const INVALID_MARKER: ApiError =
    ApiError::new(BAD, "EndPoint.0021", "Invalid marker_id.");
/// 400 EndPoint.1003.
pub(crate) const INVALID_SERVICE_NAME: ApiError =
    ApiError::new(BAD, "EndPoint.1003", "Invalid service name.");
/// 400 EndPoint.1004.
pub(crate) const INVALID_REQUEST: ApiError =
    ApiError::new(BAD, "EndPoint.1004", "Invalid request.");
/// 400 EndPoint.2004.
pub(crate) const SERVICE_UNAVAILABLE: ApiError =
    ApiError::new(BAD, "EndPoint.2004", "The endpoint service is unavailable.");
/// 404 EndPoint.2006.
pub(crate) const ENDPOINT_NOT_FOUND: ApiError = ApiError::new(
    StatusCode::NOT_FOUND,
    "EndPoint.2006",
    "The endpoint does not exist.",
);
/// 400 EndPoint.2013.
pub(crate) const NOT_IN_SERVICE: ApiError = ApiError::new(
    BAD,
    "EndPoint.2013",
    "The endpoint does not belong to the endpoint service.",
);
/// 400 EndPoint.2014.
pub(crate) const ALREADY_CONNECTED: ApiError = ApiError::new(
    BAD,
    "EndPoint.2014",
    "The endpoint has connected to the endpoint service.",
);
/// 400 EndPoint.2017.
pub(crate) const INVALID_ENDPOINT_ID: ApiError =
    ApiError::new(BAD, "EndPoint.2017", "Invalid endpoint ID.");
/// 400 EndPoint.2018.
pub(crate) const BEING_DELETED: ApiError =
    ApiError::new(BAD, "EndPoint.2018", "The endpoint is being deleted.");
/// 400 EndPoint.2019.
pub(crate) const BEING_CREATED: ApiError =
    ApiError::new(BAD, "EndPoint.2019", "The endpoint is being created.");
/// 400 EndPoint.2031.
pub(crate) const ONE_ENDPOINT: ApiError =
    ApiError::new(BAD, "EndPoint.2031", "Only one endpoint is allowed.");

/// 401 APIGW.0301, bad or missing signature.
pub(crate) const BAD_SIGNATURE: ApiError = ApiError::new(
    StatusCode::UNAUTHORIZED,
    "APIGW.0301",
    "Incorrect IAM authentication information: verify aksk signature fail",
);
/// 401 APIGW.0301, bad or expired token.
pub(crate) const BAD_TOKEN: ApiError = ApiError::new(
    StatusCode::UNAUTHORIZED,
    "APIGW.0301",
    "Incorrect IAM authentication information: decrypt token fail",
);
/// 401 APIGW.0301, no credentials at all.
pub(crate) const NO_AUTH: ApiError = ApiError::new(
    StatusCode::UNAUTHORIZED,
    "APIGW.0301",
    "Incorrect IAM authentication information: Authorization not found",
);
/// 401 APIGW.0303, `X-Sdk-Date` more than 15 minutes off.
pub(crate) const SIGNATURE_EXPIRED: ApiError = ApiError::new(
    StatusCode::UNAUTHORIZED,
    "APIGW.0303",
    "Incorrect app authentication information: signature expired",
);
/// 401 APIGW.0301, a temporary key without `X-Security-Token` (message modelled on the
/// gateway's documented "x-auth-token not found"; a simulator choice).
pub(crate) const SECURITY_TOKEN_MISSING: ApiError = ApiError::new(
    StatusCode::UNAUTHORIZED,
    "APIGW.0301",
    "Incorrect IAM authentication information: x-security-token not found",
);
/// 401 APIGW.0301, `X-Security-Token` sent but not signed (simulator choice: the SDK signs
/// it, and the README says the daemon does).
pub(crate) const SECURITY_TOKEN_UNSIGNED: ApiError = ApiError::new(
    StatusCode::UNAUTHORIZED,
    "APIGW.0301",
    "Incorrect IAM authentication information: x-security-token is not signed",
);
/// 401 APIGW.0301, `X-Security-Token` of another key or garbled (simulator choice).
pub(crate) const SECURITY_TOKEN_MISMATCH: ApiError = ApiError::new(
    StatusCode::UNAUTHORIZED,
    "APIGW.0301",
    "Incorrect IAM authentication information: decrypt security token fail",
);
/// 401 APIGW.0301, an expired temporary key. The gateway documents "token expires,
/// expires_at: …" for an expired IAM token; nothing is documented for an expired
/// temporary key, so the simulator says the same of the security token and appends the
/// expiry (`with_message`).
pub(crate) const SECURITY_TOKEN_EXPIRED: ApiError = ApiError::new(
    StatusCode::UNAUTHORIZED,
    "APIGW.0301",
    "Incorrect IAM authentication information: security token expires",
);
/// 429 APIGW.0308.
pub(crate) const THROTTLED: ApiError = ApiError::new(
    StatusCode::TOO_MANY_REQUESTS,
    "APIGW.0308",
    "The throttling threshold has been reached: policy user over ratelimit,limit:10,time:1 second",
);
/// 404 APIGW.0101, no such API.
pub(crate) const NO_SUCH_API: ApiError = ApiError::new(
    StatusCode::NOT_FOUND,
    "APIGW.0101",
    "The API does not exist or has not been published in the environment",
);
/// 413, body over the cap.
pub(crate) const TOO_LARGE: ApiError = ApiError::new(
    StatusCode::PAYLOAD_TOO_LARGE,
    "APIGW.0201",
    "Request entity too large",
);

/// 400 IAM.0011, unreadable token request (simulator choice).
pub(crate) const IAM_BAD_BODY: ApiError =
    ApiError::new(BAD, "IAM.0011", "Request body is invalid.");
/// 401 IAM.0004, wrong user, domain or password (simulator choice).
pub(crate) const IAM_BAD_PASSWORD: ApiError = ApiError::new(
    StatusCode::UNAUTHORIZED,
    "IAM.0004",
    "The username or password is wrong.",
);
/// 401 IAM.0007, scope names a project this simulator does not serve (simulator choice).
pub(crate) const IAM_BAD_PROJECT: ApiError = ApiError::new(
    StatusCode::UNAUTHORIZED,
    "IAM.0007",
    "The project does not exist or the user has no access to it.",
);

/// 400 IAM.0011, `duration_seconds` outside 900–86400, or above 3600 for a caller that
/// signs with a temporary key (simulator choice of code).
pub(crate) const IAM_BAD_DURATION: ApiError =
    ApiError::new(BAD, "IAM.0011", "duration_seconds is out of range.");
/// 403 IAM.0003, no such agency in that account (simulator choice of code).
pub(crate) const IAM_NO_AGENCY: ApiError = ApiError::new(
    StatusCode::FORBIDDEN,
    "IAM.0003",
    "The agency does not exist or the account is not its delegated party.",
);

/// The error for an HTTP status given without a code (scripted faults).
pub(crate) fn default_for_status(status: StatusCode) -> ApiError {
    match status.as_u16() {
        400 => PARAMETER,
        401 => BAD_SIGNATURE,
        403 => FORBIDDEN,
        404 => NOT_FOUND,
        429 => THROTTLED,
        503 => UNAVAILABLE,
        504 => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "EndPoint.0013",
            "The request timed out.",
        ),
        _ => ApiError {
            status,
            ..SYSTEM_ERROR
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: Vec<u8>) -> serde_json::Value {
        serde_json::from_slice(&b).expect("json")
    }

    #[test]
    fn shapes() {
        let flat = parse(PARAMETER.body(ErrorShape::Flat, "rid"));
        assert_eq!(
            flat,
            json!({"error_code":"EndPoint.0002","error_msg":"Parameter error."})
        );
        let nested = parse(PARAMETER.body(ErrorShape::Nested, "rid"));
        assert_eq!(
            nested,
            json!({"error":{"code":"EndPoint.0002","message":"Parameter error."}})
        );
        let gw = parse(THROTTLED.body(ErrorShape::Nested, "rid"));
        assert_eq!(gw["error_code"], "APIGW.0308");
        assert_eq!(gw["request_id"], "rid");
        let iam = parse(IAM_BAD_PASSWORD.body(ErrorShape::Nested, "rid"));
        assert_eq!(iam["error_code"], "IAM.0004");
    }

    #[test]
    fn defaults_by_status() {
        assert_eq!(
            default_for_status(StatusCode::TOO_MANY_REQUESTS).code,
            "APIGW.0308"
        );
        assert_eq!(
            default_for_status(StatusCode::BAD_GATEWAY).status,
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            default_for_status(StatusCode::BAD_GATEWAY).code,
            "EndPoint.0001"
        );
    }
}
