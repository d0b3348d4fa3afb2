//! Errors of the cloud client: [`ApiError`] for one failed API operation (with the URL,
//! HTTP status, `error_code`, message and request id that a person needs to follow it up
//! with Huawei support) and [`CloudError`] for building the client at startup.
//!
//! Error bodies come in several documented shapes (docs/design.md, "The API as the daemon uses it"); [`parse_error_body`]
//! understands all of them. Messages from the server are trimmed and stripped of control
//! characters before they reach a log line or an audit record.

use std::fmt;
use std::path::PathBuf;

/// Longest server-provided message kept in an error, in characters.
const MAX_MESSAGE_CHARS: usize = 512;

/// What kind of failure an [`ApiError`] is; decides whether it is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiErrorKind {
    /// HTTP 429, or 400 with `EndPoint.0022` (the service's own throttle).
    Throttled,
    /// HTTP 5xx.
    Server,
    /// Any other non-success answer (4xx, unexpected 3xx), or a request that could not be
    /// built.
    Client,
    /// HTTP 401: the signature, token or password was not accepted.
    Unauthorized,
    /// Not sent: the credential's key is in its authentication backoff.
    AuthBackoff,
    /// Not sent: the caller withdrew it (stopping, or the decision it carries is no
    /// longer fresh).
    NotSent,
    /// Sent, but given up before an answer came (the shutdown deadline).
    Aborted,
    /// No complete answer within `request_timeout`.
    Timeout,
    /// Connection refused, reset, TLS failure or a broken response stream.
    Connect,
    /// A success answer whose body is not the documented JSON.
    Malformed,
    /// A response body larger than the client accepts.
    TooLarge,
}

impl ApiErrorKind {
    /// The snake_case name used in messages and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiErrorKind::Throttled => "throttled",
            ApiErrorKind::Server => "server error",
            ApiErrorKind::Client => "request rejected",
            ApiErrorKind::Unauthorized => "unauthorized",
            ApiErrorKind::AuthBackoff => "authentication backoff in effect",
            ApiErrorKind::NotSent => "not sent",
            ApiErrorKind::Aborted => "no answer before the shutdown deadline",
            ApiErrorKind::Timeout => "timed out",
            ApiErrorKind::Connect => "connection failed",
            ApiErrorKind::Malformed => "malformed response",
            ApiErrorKind::TooLarge => "response too large",
        }
    }

    /// Whether a failure of this kind is worth another attempt (README "How a cycle works").
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ApiErrorKind::Throttled
                | ApiErrorKind::Server
                | ApiErrorKind::Timeout
                | ApiErrorKind::Connect
        )
    }
}

impl fmt::Display for ApiErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One API operation that failed, after all its attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// `list_services`, `list_connections`, `get_connection`, `action` or `iam_token`.
    pub operation: &'static str,
    /// The URL of the last attempt, with its query string (never holds a secret).
    pub url: String,
    /// HTTP status of the last answer, when there was one.
    pub http_status: Option<u16>,
    /// `error_code` from the error body (e.g. `EndPoint.2014`, `APIGW.0301`).
    pub error_code: Option<String>,
    /// The server's message, or the client's description when the server said nothing
    /// (e.g. what is wrong with a malformed body).
    pub error_message: Option<String>,
    /// `X-Request-Id` header or `request_id` body field.
    pub request_id: Option<String>,
    /// What went wrong.
    pub kind: ApiErrorKind,
    /// HTTP attempts made (0 when the call failed before sending anything).
    pub attempts: u32,
}

impl ApiError {
    /// An error with only the operation, URL and kind known.
    pub fn new(operation: &'static str, url: impl Into<String>, kind: ApiErrorKind) -> ApiError {
        ApiError {
            operation,
            url: url.into(),
            http_status: None,
            error_code: None,
            error_message: None,
            request_id: None,
            kind,
            attempts: 0,
        }
    }

    /// Sets the client-side or server message (sanitised and truncated).
    pub fn with_message(mut self, message: impl AsRef<str>) -> ApiError {
        self.error_message = Some(sanitize(message.as_ref()));
        self
    }

    /// The same error, saying why it was not retried.
    pub fn not_retried(mut self, why: &str) -> ApiError {
        let msg = match self.error_message.take() {
            Some(m) => format!("{m}; not retried: {why}"),
            None => format!("not retried: {why}"),
        };
        self.error_message = Some(sanitize(&msg));
        self
    }

    /// True for failures that are retried (throttling, 5xx, timeouts, connection errors).
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.operation, self.url, self.kind)?;
        if let Some(s) = self.http_status {
            write!(f, ", http {s}")?;
        }
        if let Some(c) = &self.error_code {
            write!(f, ", error_code {c}")?;
        }
        if let Some(m) = &self.error_message {
            write!(f, ", error_message {m:?}")?;
        }
        if let Some(r) = &self.request_id {
            write!(f, ", request_id {r}")?;
        }
        match self.attempts {
            0 => write!(f, ", not sent"),
            1 => write!(f, ", 1 attempt"),
            n => write!(f, ", {n} attempts"),
        }
    }
}

impl std::error::Error for ApiError {}

/// Building the shared client failed (startup only).
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The `ca_file` of a target could not be read.
    #[error("cannot read ca_file {path} of target {target}")]
    CaFileRead {
        /// The target that names it.
        target: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The `ca_file` holds no usable PEM certificate.
    #[error("invalid ca_file {path} of target {target}: {message}")]
    CaFileInvalid {
        /// The target that names it.
        target: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An endpoint URL of a target does not parse.
    #[error("invalid endpoint url {url} of target {target}: {message}")]
    Url {
        /// The target.
        target: String,
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// reqwest refused the client configuration (e.g. TLS setup).
    #[error("cannot build the https client for target {target}")]
    Build {
        /// The target.
        target: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
}

/// What an error body says, in whichever documented shape it came.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorBody {
    /// `error_code` / `errorCode` / `code` / `error.code`.
    pub code: Option<String>,
    /// `error_msg` / `errorMsg` / `message` / `error.message`.
    pub message: Option<String>,
    /// `request_id` (API gateway errors).
    pub request_id: Option<String>,
}

/// The (code, message) key pairs tried in order, as the official SDK does.
const KEY_PAIRS: [(&str, &str); 3] = [
    ("error_code", "error_msg"),
    ("errorCode", "errorMsg"),
    ("code", "message"),
];

/// Parses an error body in any documented shape:
/// `{"error_code","error_msg"}`, `{"errorCode","errorMsg"}`, `{"code","message"}`, and any
/// of these nested one level or more (`{"error":{"code","message"}}`), plus `request_id`.
/// A body that is not JSON gives an empty result; the caller still has the HTTP status.
pub fn parse_error_body(body: &[u8]) -> ErrorBody {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return ErrorBody::default();
    };
    let (code, message) = find_code(&v, 0).unwrap_or((None, None));
    let request_id = v
        .get("request_id")
        .and_then(scalar)
        .map(|s| sanitize(&s))
        .filter(|s| !s.is_empty());
    ErrorBody {
        code: code.map(|s| sanitize(&s)).filter(|s| !s.is_empty()),
        message: message.map(|s| sanitize(&s)).filter(|s| !s.is_empty()),
        request_id,
    }
}

type CodeAndMessage = (Option<String>, Option<String>);

fn find_code(v: &serde_json::Value, depth: u32) -> Option<CodeAndMessage> {
    let obj = v.as_object()?;
    for (ck, mk) in KEY_PAIRS {
        if let Some(code) = obj.get(ck).and_then(scalar) {
            return Some((Some(code), obj.get(mk).and_then(scalar)));
        }
    }
    // A message without a code still helps the reader.
    for (_, mk) in KEY_PAIRS {
        if let Some(msg) = obj.get(mk).and_then(scalar) {
            return Some((None, Some(msg)));
        }
    }
    if depth >= 4 {
        return None;
    }
    obj.values()
        .filter(|x| x.is_object())
        .find_map(|x| find_code(x, depth + 1))
}

/// A string or a number as text; anything else is not a code.
fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Trims, replaces control characters (no log injection) and truncates.
pub(crate) fn sanitize(s: &str) -> String {
    let t = s.trim();
    let mut out: String = t
        .chars()
        .take(MAX_MESSAGE_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if t.chars().count() > MAX_MESSAGE_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_shape() {
        let b =
            parse_error_body(br#"{"error_code":"EndPoint.0002","error_msg":"Parameter error."}"#);
        assert_eq!(b.code.as_deref(), Some("EndPoint.0002"));
        assert_eq!(b.message.as_deref(), Some("Parameter error."));
        assert_eq!(b.request_id, None);
    }

    #[test]
    fn nested_shape() {
        let b = parse_error_body(
            br#"{"error":{"code":"EndPoint.2014","message":"The endpoint has connected to the endpoint service."}}"#,
        );
        assert_eq!(b.code.as_deref(), Some("EndPoint.2014"));
        assert_eq!(
            b.message.as_deref(),
            Some("The endpoint has connected to the endpoint service.")
        );
    }

    #[test]
    fn gateway_shape_with_request_id() {
        let b = parse_error_body(
            br#"{"error_msg":"The API does not exist","error_code":"APIGW.0101","request_id":"fc93"}"#,
        );
        assert_eq!(b.code.as_deref(), Some("APIGW.0101"));
        assert_eq!(b.message.as_deref(), Some("The API does not exist"));
        assert_eq!(b.request_id.as_deref(), Some("fc93"));
    }

    #[test]
    fn camel_case_and_plain_code_message_shapes() {
        let b = parse_error_body(br#"{"errorCode":"IAM.0001","errorMsg":"bad"}"#);
        assert_eq!(
            (b.code.as_deref(), b.message.as_deref()),
            (Some("IAM.0001"), Some("bad"))
        );
        let b = parse_error_body(
            br#"{"code":401,"message":"The request you have made requires authentication."}"#,
        );
        assert_eq!(b.code.as_deref(), Some("401"));
        assert!(b.message.is_some());
    }

    #[test]
    fn non_json_and_empty_bodies_give_nothing() {
        assert_eq!(
            parse_error_body(b"<html>bad gateway</html>"),
            ErrorBody::default()
        );
        assert_eq!(parse_error_body(b""), ErrorBody::default());
        assert_eq!(parse_error_body(b"[1,2]"), ErrorBody::default());
    }

    #[test]
    fn messages_are_sanitised_and_truncated() {
        let long = "x".repeat(2000);
        let body = format!(r#"{{"error_code":"A\nB","error_msg":"{long}"}}"#);
        let b = parse_error_body(body.as_bytes());
        assert_eq!(b.code.as_deref(), Some("A B"));
        assert!(b.message.expect("message").chars().count() <= MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn display_names_everything_known_in_one_lowercase_line() {
        let e = ApiError {
            operation: "action",
            url: "https://vpcep.example.com/v1/p/vpc-endpoint-services/s/connections/action".into(),
            http_status: Some(400),
            error_code: Some("EndPoint.2014".into()),
            error_message: Some("already connected".into()),
            request_id: Some("req-1".into()),
            kind: ApiErrorKind::Client,
            attempts: 2,
        };
        let s = e.to_string();
        assert_eq!(
            s,
            "action https://vpcep.example.com/v1/p/vpc-endpoint-services/s/connections/action: request rejected, http 400, error_code EndPoint.2014, error_message \"already connected\", request_id req-1, 2 attempts"
        );
        assert!(!s.contains('\n'));
        let e = ApiError::new(
            "list_services",
            "http://127.0.0.1:1/x",
            ApiErrorKind::AuthBackoff,
        );
        assert_eq!(
            e.to_string(),
            "list_services http://127.0.0.1:1/x: authentication backoff in effect, not sent"
        );
    }

    #[test]
    fn retryable_kinds() {
        use ApiErrorKind::*;
        for k in [Throttled, Server, Timeout, Connect] {
            assert!(k.is_retryable(), "{k:?}");
        }
        for k in [
            Client,
            Unauthorized,
            AuthBackoff,
            NotSent,
            Aborted,
            Malformed,
            TooLarge,
        ] {
            assert!(!k.is_retryable(), "{k:?}");
        }
    }
}
