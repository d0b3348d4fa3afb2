//! Getting the credential of each request (README "Credentials"): the base identity's
//! static keys or token, its temporary keys from the ECS metadata service or CCE pod
//! identity, the project-scoped IAM tokens of `password`, and the temporary keys of an
//! IAM agency, assumed with the base identity. Every fetched credential sits in a
//! [`Slot`](super::auth::Slot): one fetch at a time, refreshed before it expires.
//!
//! The IAM requests (password tokens, `assume_role`) go through the transport's request
//! loop like every API request: same limits, retries and key gates. The metadata and
//! pod-identity services are local to the machine or node: one plain attempt per fetch,
//! within `request_timeout`, and the slot's backoff after a failure.

use super::auth::iam::{self, IssuedToken};
use super::auth::keys::{self, Keys, parse_credential_body};
use super::auth::slot::Issued;
use super::auth::{Credential, Fetched, KeySource, MetadataSession, Scope, Slot};
use super::error::{ApiError, ApiErrorKind};
use super::transport::{
    Call, Endpoint, Failure, Reply, Transport, Via, error_from_reply, failure_error, malformed,
    read_reply,
};
use crate::config::{Agency, AgencyDomain};
use chrono::Utc;
use reqwest::Method;
use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Operation name of `POST {iam}/v3/auth/tokens`.
pub const OP_IAM_TOKEN: &str = "iam_token";
/// Operation name of `POST {iam}/v3.0/OS-CREDENTIAL/securitytokens`.
pub const OP_ASSUME_ROLE: &str = "assume_role";
/// Operation name of the metadata session token `PUT`.
pub const OP_METADATA_TOKEN: &str = "metadata_token";
/// Operation name of the metadata `securitykey` `GET`.
pub const OP_METADATA_KEYS: &str = "metadata_securitykey";
/// Operation name of the pod-identity `POST`.
pub const OP_POD_IDENTITY: &str = "pod_identity";

/// What the metadata service says when the instance has no agency.
const NO_AGENCY_TEXT: &str = "Please configure Cloud Service Agency first";
/// Lifetime asked for the metadata session token (the official SDK's value).
const METADATA_SESSION_TTL: Duration = Duration::from_secs(21600);
/// Largest credential answer read.
const MAX_CREDENTIAL_BODY: usize = 64 << 10;

impl Transport {
    /// The credential of one attempt of `via`: the target's (through its agency when it
    /// has one), the base identity's for an agency request, none for an IAM token
    /// request.
    pub(crate) async fn credential(
        &self,
        ep: &Endpoint<'_>,
        via: Via,
    ) -> Result<Credential, ApiError> {
        match via {
            Via::IamToken => Ok(Credential::None),
            Via::AssumeRole => self.base_credential(ep, Scope::Account).await,
            Via::Target => match &ep.target.agency {
                Some(a) => self.agency_credential(ep, a).await,
                None => {
                    self.base_credential(ep, Scope::Project(&ep.target.project_id))
                        .await
                }
            },
        }
    }

    async fn base_credential(
        &self,
        ep: &Endpoint<'_>,
        scope: Scope<'_>,
    ) -> Result<Credential, ApiError> {
        if let Some(c) = self.creds.static_credential() {
            return Ok(c);
        }
        if let Some((source, slot)) = self.creds.key_source() {
            return self.held_in(slot, || self.fetch_keys(ep, source)).await;
        }
        // Boxed: `execute` → IAM token → `execute` (without a credential).
        let fetch = || Box::pin(self.fetch_iam_token(ep, scope));
        self.held_in(self.creds.token_slot(scope), fetch).await
    }

    async fn agency_credential(
        &self,
        ep: &Endpoint<'_>,
        agency: &Agency,
    ) -> Result<Credential, ApiError> {
        let fetch = || Box::pin(self.assume_role(ep, agency));
        self.held_in(self.creds.agency_slot(ep.iam_base, agency), fetch)
            .await
    }

    /// The credential held in `slot`, fetched first when the slot has none that
    /// outlives a request.
    async fn held_in<T: Fetched, Fut>(
        &self,
        slot: Arc<Slot<T>>,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<Credential, ApiError>
    where
        Fut: Future<Output = Result<Issued<T>, ApiError>>,
    {
        let held = slot.get(self.request_timeout, fetch).await?;
        Ok(T::credential(slot, held))
    }

    async fn fetch_iam_token(
        &self,
        ep: &Endpoint<'_>,
        scope: Scope<'_>,
    ) -> Result<Issued<SecretString>, ApiError> {
        let Some(body) = self.creds.iam_token_body(scope) else {
            return Err(
                ApiError::new(OP_IAM_TOKEN, ep.iam_base.to_owned(), ApiErrorKind::Client)
                    .with_message("not using password authentication"),
            );
        };
        let call = Call {
            op: OP_IAM_TOKEN,
            method: Method::POST,
            via: Via::IamToken,
            path: "/v3/auth/tokens".into(),
            query: vec![("nocatalog".into(), "true".into())],
            body: &body,
        };
        let reply = Box::pin(self.execute(ep, &call, &|| None)).await?;
        let subject = reply.subject_token.as_ref().map(|s| s.expose_secret());
        let IssuedToken {
            token,
            lifetime,
            expires_at,
        } = iam::parse_token_response(subject, &reply.body, Utc::now())
            .map_err(|m| malformed(OP_IAM_TOKEN, &reply, &m))?;
        tracing::info!(
            target_name = %ep.target.name,
            scope = match scope {
                Scope::Project(p) => p,
                Scope::Account => "account",
            },
            expires_at = %expires_at,
            "obtained an iam token"
        );
        Ok(Issued {
            value: token,
            lifetime,
            margin: iam::refresh_margin(lifetime),
            expires_at,
        })
    }

    /// Temporary keys of another account: `assume_role` on the target's IAM endpoint,
    /// signed (or token-authenticated) with the base identity.
    async fn assume_role(
        &self,
        ep: &Endpoint<'_>,
        agency: &Agency,
    ) -> Result<Issued<Keys>, ApiError> {
        let body = assume_role_body(agency);
        let call = Call {
            op: OP_ASSUME_ROLE,
            method: Method::POST,
            via: Via::AssumeRole,
            path: "/v3.0/OS-CREDENTIAL/securitytokens".into(),
            query: Vec::new(),
            body: &body,
        };
        let reply = Box::pin(self.execute(ep, &call, &|| None)).await?;
        let issued = parse_credential_body(&reply.body, Utc::now())
            .map_err(|m| malformed(OP_ASSUME_ROLE, &reply, &m))?;
        Ok(self.obtained(ep, &agency.to_string(), issued))
    }

    async fn fetch_keys(
        &self,
        ep: &Endpoint<'_>,
        source: &KeySource,
    ) -> Result<Issued<Keys>, ApiError> {
        let issued = match source {
            KeySource::Metadata { endpoint, session } => {
                self.metadata_keys(ep, endpoint, session).await?
            }
            KeySource::PodIdentity { uri, token_file } => {
                self.pod_identity_keys(ep, uri, token_file).await?
            }
        };
        Ok(self.obtained(ep, &source.describe(), issued))
    }

    fn obtained(&self, ep: &Endpoint<'_>, from: &str, issued: keys::IssuedKeys) -> Issued<Keys> {
        tracing::info!(
            target_name = %ep.target.name,
            from = %from,
            expires_at = %issued.expires_at,
            lifetime_secs = issued.lifetime.as_secs(),
            "obtained temporary credentials"
        );
        Issued {
            value: issued.keys,
            lifetime: issued.lifetime,
            margin: keys::refresh_margin(issued.lifetime),
            expires_at: issued.expires_at,
        }
    }

    /// `PUT …/api/token` (kept for its lifetime), then `GET …/securitykey`. A 401 renews
    /// the session token once; a 404, or a 401 that says so, means no agency is attached.
    async fn metadata_keys(
        &self,
        ep: &Endpoint<'_>,
        endpoint: &str,
        session: &MetadataSession,
    ) -> Result<keys::IssuedKeys, ApiError> {
        let url = format!("{endpoint}/openstack/latest/securitykey");
        let mut renewed = false;
        loop {
            let token = self.metadata_session(ep, endpoint, session).await?;
            let http = self.local_http(OP_METADATA_KEYS, &url)?;
            let mut req = http.get(&url);
            if let Some(t) = &token {
                req = req.header(
                    "X-Metadata-Token",
                    sensitive(t.expose_secret(), OP_METADATA_KEYS, &url)?,
                );
            }
            let reply = self.local_send(ep, OP_METADATA_KEYS, &url, req).await?;
            if (200..300).contains(&reply.status) {
                return parse_credential_body(&reply.body, Utc::now())
                    .map_err(|m| malformed(OP_METADATA_KEYS, &reply, &m));
            }
            let says_no_agency = String::from_utf8_lossy(&reply.body).contains(NO_AGENCY_TEXT);
            if reply.status == 401 && !says_no_agency && !renewed {
                renewed = true;
                *session.lock().await = None;
                continue;
            }
            let mut e = local_error(OP_METADATA_KEYS, &url, &reply);
            if reply.status == 404 || (reply.status == 401 && says_no_agency) {
                e.kind = ApiErrorKind::Client;
                e = e.with_message(format!(
                    "no agency attached to this instance: {url} answered http {} (attach an agency with VPCEP permissions to the ECS instance)",
                    reply.status
                ));
            }
            return Err(e);
        }
    }

    async fn metadata_session(
        &self,
        ep: &Endpoint<'_>,
        endpoint: &str,
        session: &MetadataSession,
    ) -> Result<Option<Arc<SecretString>>, ApiError> {
        let mut s = session.lock().await;
        if let Some((t, until)) = s.as_ref()
            && tokio::time::Instant::now() < *until
        {
            return Ok(Some(t.clone()));
        }
        let url = format!("{endpoint}/meta-data/latest/api/token");
        let http = self.local_http(OP_METADATA_TOKEN, &url)?;
        let req = http.put(&url).header(
            "X-Metadata-Token-Ttl-Seconds",
            METADATA_SESSION_TTL.as_secs().to_string(),
        );
        let reply = self.local_send(ep, OP_METADATA_TOKEN, &url, req).await?;
        match reply.status {
            200..=299 => {
                let text = std::str::from_utf8(&reply.body)
                    .map(str::trim)
                    .unwrap_or_default();
                if text.is_empty() || HeaderValue::from_str(text).is_err() {
                    return Err(malformed(
                        OP_METADATA_TOKEN,
                        &reply,
                        "the session token is empty or not a header value",
                    ));
                }
                let t = Arc::new(SecretString::from(text.to_owned()));
                // Renewed a minute early, so it never expires on the way.
                let until = tokio::time::Instant::now()
                    + METADATA_SESSION_TTL.saturating_sub(Duration::from_secs(60));
                *s = Some((t.clone(), until));
                Ok(Some(t))
            }
            // Older metadata services have no session tokens (as the official SDK does).
            404 | 405 | 503 => Ok(None),
            _ => Err(local_error(OP_METADATA_TOKEN, &url, &reply)),
        }
    }

    /// `POST $HC_CONTAINER_CREDENTIALS_FULL_URI` with the token file's content (trimmed,
    /// read now: the kubelet rotates it) as `Authorization`.
    async fn pod_identity_keys(
        &self,
        ep: &Endpoint<'_>,
        uri: &str,
        token_file: &Path,
    ) -> Result<keys::IssuedKeys, ApiError> {
        let unreadable = |m: String| {
            ApiError::new(OP_POD_IDENTITY, uri.to_owned(), ApiErrorKind::NotSent).with_message(
                format!(
                    "cannot read the pod identity token file {}: {m}",
                    token_file.display()
                ),
            )
        };
        let token = std::fs::read_to_string(token_file).map_err(|e| unreadable(e.to_string()))?;
        let token = token.trim();
        if token.is_empty() {
            return Err(unreadable("empty".into()));
        }
        let http = self.local_http(OP_POD_IDENTITY, uri)?;
        let req = http
            .post(uri)
            .header("Authorization", sensitive(token, OP_POD_IDENTITY, uri)?)
            .header("Content-Type", "application/json")
            .body("{}");
        let reply = self.local_send(ep, OP_POD_IDENTITY, uri, req).await?;
        if (200..300).contains(&reply.status) {
            return parse_credential_body(&reply.body, Utc::now())
                .map_err(|m| malformed(OP_POD_IDENTITY, &reply, &m));
        }
        let mut e = local_error(OP_POD_IDENTITY, uri, &reply);
        if matches!(reply.status, 401 | 403) {
            e = e.with_message(format!(
                "pod identity did not accept the service account token of {} (http {}): is pod identity set up for this service account?",
                token_file.display(),
                reply.status
            ));
        }
        Err(e)
    }

    /// One request to the metadata or pod-identity service: within `request_timeout`,
    /// given up at the final stop, counted in the metrics.
    async fn local_send(
        &self,
        ep: &Endpoint<'_>,
        op: &'static str,
        url: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<Reply, ApiError> {
        if self.stop.stopping() {
            return Err(ApiError::new(op, url.to_owned(), ApiErrorKind::NotSent)
                .with_message("shutting down"));
        }
        let started = std::time::Instant::now();
        let send = async {
            let resp = req
                .send()
                .await
                .map_err(super::transport::transport_failure)?;
            read_reply(resp, MAX_CREDENTIAL_BODY, false).await
        };
        let result = tokio::select! {
            r = tokio::time::timeout(self.request_timeout, send) => r.unwrap_or(Err(Failure::Timeout)),
            () = self.stop.given_up() => Err(Failure::Aborted),
        };
        let code = match &result {
            Ok(r) => r.status.to_string(),
            Err(Failure::Timeout) => "timeout".into(),
            Err(Failure::Connect(_)) => "connect".into(),
            Err(_) => "error".into(),
        };
        self.metrics
            .api_request(&ep.target.name, op, &code, started.elapsed().as_secs_f64());
        match result {
            Ok(mut r) => {
                r.url = url.to_owned();
                r.attempts = 1;
                Ok(r)
            }
            Err(f) => Err(failure_error(op, url, f, 1)),
        }
    }
}

/// The error of a metadata or pod-identity answer. No key gate guards these services,
/// so a 401 is not an authentication failure of a key: the credential slot backs off.
fn local_error(op: &'static str, url: &str, reply: &Reply) -> ApiError {
    let mut e = error_from_reply(op, url, reply, 1);
    if e.kind == ApiErrorKind::Unauthorized {
        e.kind = ApiErrorKind::Client;
    }
    e
}

fn sensitive(value: &str, op: &'static str, url: &str) -> Result<HeaderValue, ApiError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        ApiError::new(op, url.to_owned(), ApiErrorKind::Client)
            .with_message("a credential holds characters an http header cannot carry")
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// The body of `assume_role`.
fn assume_role_body(agency: &Agency) -> Vec<u8> {
    let mut role = serde_json::json!({
        "agency_name": agency.name,
        "duration_seconds": agency.duration.as_secs(),
    });
    match &agency.domain {
        AgencyDomain::Name(n) => role["domain_name"] = n.as_str().into(),
        AgencyDomain::Id(d) => role["domain_id"] = d.as_str().into(),
    }
    serde_json::json!({
        "auth": {"identity": {"methods": ["assume_role"], "assume_role": role}}
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assume_role_body_names_the_agency_and_account() {
        let a = Agency {
            name: "vpcep-approver".into(),
            domain: AgencyDomain::Name("acme-prod".into()),
            duration: Duration::from_secs(3600),
        };
        let v: serde_json::Value = serde_json::from_slice(&assume_role_body(&a)).expect("json");
        let r = &v["auth"]["identity"]["assume_role"];
        assert_eq!(v["auth"]["identity"]["methods"][0], "assume_role");
        assert_eq!(r["agency_name"], "vpcep-approver");
        assert_eq!(r["domain_name"], "acme-prod");
        assert_eq!(r["duration_seconds"], 3600);
        assert!(r.get("domain_id").is_none());
        let a = Agency {
            domain: AgencyDomain::Id("0a1b".into()),
            ..a
        };
        let v: serde_json::Value = serde_json::from_slice(&assume_role_body(&a)).expect("json");
        assert_eq!(v["auth"]["identity"]["assume_role"]["domain_id"], "0a1b");
    }
}
