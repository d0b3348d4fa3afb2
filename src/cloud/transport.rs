//! Sending one API request: the shared limits, the retry loop, the body cap (README "How
//! a cycle works").
//!
//! Every request of every target goes through [`Transport::execute`]:
//! - the credential of the attempt (for `password`, the project's IAM token, fetched
//!   through this same loop first when it is absent or due);
//! - the authentication gate of the credential's key: wait while the first request with
//!   the key probes it, fail fast while it is in backoff;
//! - an in-flight permit, then a rate-limit slot (in that order, so slots are not spent
//!   by requests that then queue for a permit); then, right before sending, the gate
//!   again, the stop signal and the caller's guard (an action whose decision is no
//!   longer fresh is not sent); send, read the body in chunks up to a size cap, all
//!   within `request_timeout`; count the attempt; release the permit;
//! - 429, 5xx, `EndPoint.0022`, timeouts and connection errors: sleep (permit released)
//!   with exponential backoff and full jitter, at least `Retry-After`, up to
//!   `max_retries` retries;
//! - 401: signing credentials enter the backoff and are never retried in a burst (five
//!   bad signatures lock the key for five minutes); a token is re-read or re-fetched
//!   once and the request retried once.
//!
//! Once stopping begins no new request starts (waits for a permit, a slot or a retry end
//! at once); when the stop is final, requests on the wire are given up.

use super::auth::{Credential, Credentials, Outgoing};
use super::error::{ApiError, ApiErrorKind, CloudError, parse_error_body, sanitize};
use super::ratelimit::RateLimiter;
use super::retry::{Backoff, parse_retry_after};
use super::signer;
use crate::config::{Poll, Target};
use crate::metrics::Metrics;
use crate::stop::Stop;
use chrono::Utc;
use reqwest::{Method, Url};
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

/// A log line about a failed API request, with the fields every such line carries
/// first; `tracing` takes the level only as a literal.
macro_rules! api_event {
    ($level:ident, $target:expr, $err:expr, $($rest:tt)+) => {
        tracing::$level!(
            target_name = %$target,
            operation = $err.operation,
            http_status = $err.http_status,
            error_code = $err.error_code.as_deref(),
            request_id = $err.request_id.as_deref(),
            $($rest)+
        )
    };
}

pub use super::fetch::OP_IAM_TOKEN;
/// Largest response body read.
pub const MAX_BODY_BYTES: usize = 32 << 20;

/// Installs the `ring` crypto provider as rustls' process default. Idempotent; must run
/// before any reqwest client is built (`Cloud::new` calls it).
pub fn init_tls() {
    // An error only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// What every request of every target shares: the limits, the credentials, the metrics.
pub(crate) struct Transport {
    limiter: Option<RateLimiter>,
    in_flight: Semaphore,
    pub(crate) metrics: Metrics,
    pub(crate) request_timeout: Duration,
    max_retries: u32,
    backoff: Backoff,
    max_body_bytes: AtomicUsize,
    pub(crate) creds: Credentials,
    pub(crate) stop: Stop,
    /// The client of the metadata and pod-identity services, built when first needed.
    local_http: std::sync::OnceLock<Result<reqwest::Client, String>>,
}

/// Asked right before each attempt of an action: `Some(why)` when it must not be sent.
pub type Guard<'a> = &'a (dyn Fn() -> Option<String> + Sync);

/// Where one target's requests go.
pub(crate) struct Endpoint<'a> {
    pub target: &'a Target,
    pub http: &'a reqwest::Client,
    pub vpcep_base: &'a str,
    pub iam_base: &'a str,
}

/// One attempt's request: where it goes, what it is, and its URL (also as text, for
/// errors).
#[derive(Clone, Copy)]
struct Outbound<'a> {
    ep: &'a Endpoint<'a>,
    call: &'a Call<'a>,
    url: &'a Url,
    url_text: &'a str,
}

/// Where a request goes and whose credential it carries.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Via {
    /// To the VPCEP endpoint, as the target (through its agency when it has one).
    Target,
    /// To IAM without a credential: a password token request.
    IamToken,
    /// To IAM as the base identity: assuming an agency.
    AssumeRole,
}

/// One request to make.
pub(crate) struct Call<'a> {
    pub op: &'static str,
    pub method: Method,
    pub via: Via,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: &'a [u8],
}

/// A complete HTTP answer.
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub request_id: Option<String>,
    pub retry_after: Option<Duration>,
    pub subject_token: Option<SecretString>,
    pub url: String,
    pub attempts: u32,
}

/// An attempt that produced no complete answer.
pub(crate) enum Failure {
    Timeout,
    Connect(String),
    TooLarge(String),
    Build(String),
    /// Not sent after all (the gate closed, stopping began, the guard said no).
    Refused(ApiError),
    /// Given up on the wire at the final stop.
    Aborted,
    /// Not sent: the waits for a permit and a rate slot left the fetched credential
    /// without `request_timeout` to live, or its key's gate went through a backoff since
    /// the request was admitted. The request starts again from the credential, outside
    /// the permit (fetching agency keys or a token takes a permit of its own) and through
    /// the key's gate.
    Renew,
}

impl Transport {
    pub(crate) fn new(poll: &Poll, creds: Credentials, metrics: Metrics, stop: Stop) -> Transport {
        Transport {
            limiter: RateLimiter::new(poll.max_requests_per_second),
            in_flight: Semaphore::new(poll.max_in_flight.max(1)),
            metrics,
            request_timeout: poll.request_timeout,
            max_retries: poll.max_retries,
            backoff: Backoff::default(),
            max_body_bytes: AtomicUsize::new(MAX_BODY_BYTES),
            creds,
            stop,
            local_http: std::sync::OnceLock::new(),
        }
    }

    /// The HTTP client of the metadata and pod-identity services: no redirects, system
    /// trust roots (none for plain http, which only link-local and loopback hosts get).
    pub(crate) fn local_http(
        &self,
        op: &'static str,
        url: &str,
    ) -> Result<&reqwest::Client, ApiError> {
        let plain = url
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("http://"));
        let built = self.local_http.get_or_init(|| {
            // Never through an `HTTP_PROXY`: the session token, the pod's token and
            // the keys that come back must not cross another host.
            let mut b = reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(self.request_timeout)
                .pool_idle_timeout(Duration::from_secs(50));
            if plain {
                b = b.tls_certs_only(Vec::<reqwest::Certificate>::new());
            }
            b.build().map_err(|e| e.to_string())
        });
        built
            .as_ref()
            .map_err(|m| ApiError::new(op, url.to_owned(), ApiErrorKind::Client).with_message(m))
    }

    pub(crate) fn set_max_body_bytes(&self, n: usize) {
        self.max_body_bytes.store(n, Ordering::Relaxed);
    }

    /// The request loop: credential, gate, attempts, retries, 401 handling. `guard` is
    /// asked right before every attempt (the first and each retry).
    pub(crate) async fn execute(
        &self,
        ep: &Endpoint<'_>,
        call: &Call<'_>,
        guard: Guard<'_>,
    ) -> Result<Reply, ApiError> {
        let base = if call.via == Via::Target {
            ep.vpcep_base
        } else {
            ep.iam_base
        };
        let query = signer::canonical_query(&call.query);
        let url = build_url(base, &call.path, &query).map_err(|m| {
            ApiError::new(
                call.op,
                format!("{base}{}", call.path),
                ApiErrorKind::Client,
            )
            .with_message(m)
        })?;
        let url_text = url.to_string();
        let not_sent = |why: String, attempts: u32| {
            let mut e =
                ApiError::new(call.op, url_text.clone(), ApiErrorKind::NotSent).with_message(why);
            e.attempts = attempts;
            e
        };
        let mut attempts = 0u32;
        let mut retries = 0u32;
        let mut reauthenticated = false;
        loop {
            if let Some(why) = self.refusal(guard) {
                return Err(not_sent(why, attempts));
            }
            // Credentials first: an IAM request that fetches them is itself the probe
            // after a backoff, and it passes its own gate.
            let cred = tokio::select! {
                c = self.credential(ep, call.via) => c?,
                () = self.stop.begun() => {
                    return Err(not_sent("shutting down".into(), attempts));
                }
            };
            let gate = self.creds.gate_for(&cred, call.via == Via::IamToken);
            let probe = match &gate {
                Some(g) => tokio::select! {
                    p = g.admit(call.op, &url_text, attempts) => Some(p?),
                    () = self.stop.begun() => {
                        return Err(not_sent("shutting down".into(), attempts));
                    }
                },
                None => None,
            };
            let out = Outbound {
                ep,
                call,
                url: &url,
                url_text: &url_text,
            };
            let admitted = probe.as_ref().map(|p| p.epoch());
            let outcome = self.attempt(&out, &cred, admitted, attempts, guard).await;
            let mut retry_after = None;
            let err = match outcome {
                Err(Failure::Refused(e)) => return Err(e),
                Err(Failure::Renew) => continue,
                Ok(mut reply) => {
                    attempts += 1;
                    let auth_failed =
                        reply.status == 401 || (call.via == Via::IamToken && reply.status == 403);
                    // Only an answer that checked the signature says the key works: not a
                    // 5xx or a 429 from a gateway in front of the API.
                    let checked = (200..300).contains(&reply.status)
                        || ((400..500).contains(&reply.status) && reply.status != 429);
                    if checked
                        && !auth_failed
                        && let (Some(g), Some(p)) = (&gate, &probe)
                        && g.succeeded_since(p.epoch())
                    {
                        tracing::info!(
                            target_name = %ep.target.name,
                            "authentication works again; backoff ended"
                        );
                    }
                    if (200..300).contains(&reply.status) {
                        drop(probe);
                        reply.url = url_text;
                        reply.attempts = attempts;
                        return Ok(reply);
                    }
                    retry_after = reply.retry_after;
                    let err = error_from_reply(call.op, &url_text, &reply, attempts);
                    if auth_failed {
                        match (&cred, reauthenticated) {
                            (Credential::Token { .. }, false) => {
                                reauthenticated = true;
                                if self.creds.invalidate(&cred, &err)? {
                                    api_event!(
                                        warn,
                                        ep.target.name,
                                        err,
                                        method = self.creds.method(),
                                        "token not accepted; re-authenticating once and retrying once"
                                    );
                                    continue;
                                }
                            }
                            (Credential::Sign { .. }, _) | (Credential::None, _) => {
                                if let Some(g) = &gate {
                                    self.enter_backoff(ep, g, &err);
                                }
                                // Fetched keys are fetched anew for the next attempt.
                                self.creds.invalidate(&cred, &err)?;
                            }
                            (Credential::Token { .. }, true) => {}
                        }
                    }
                    err
                }
                Err(f) => {
                    attempts += 1;
                    failure_error(call.op, &url_text, f, attempts)
                }
            };
            drop(probe);
            if err.is_retryable() && retries < self.max_retries {
                let delay = self.backoff.delay(retries, retry_after, &mut rand::rng());
                retries += 1;
                api_event!(
                    warn,
                    ep.target.name,
                    err,
                    kind = err.kind.as_str(),
                    retry = retries,
                    max_retries = self.max_retries,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "api request failed; retrying"
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = self.stop.begun() => {}
                }
                if let Some(why) = self.refusal(guard) {
                    log_failure(&ep.target.name, &err);
                    return Err(err.not_retried(&why));
                }
                continue;
            }
            log_failure(&ep.target.name, &err);
            return Err(err);
        }
    }

    /// Why no request may start now: stopping, or the caller's guard.
    fn refusal(&self, guard: Guard<'_>) -> Option<String> {
        if self.stop.stopping() {
            return Some("shutting down".into());
        }
        guard()
    }

    fn enter_backoff(&self, ep: &Endpoint<'_>, gate: &super::auth::Gate, err: &ApiError) {
        let what = format!(
            "{} authentication failed ({}{}{})",
            self.creds.method(),
            err.http_status
                .map(|s| format!("http {s}"))
                .unwrap_or_default(),
            err.error_code
                .as_deref()
                .map(|c| format!(", {c}"))
                .unwrap_or_default(),
            err.request_id
                .as_deref()
                .map(|r| format!(", request_id {r}"))
                .unwrap_or_default(),
        );
        if let Some((d, wall)) = gate.failed(what) {
            api_event!(
                error,
                ep.target.name,
                err,
                backoff_secs = d.as_secs(),
                until = %wall.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "authentication failed; not retrying until the backoff ends"
            );
        }
    }

    /// One attempt: permit, rate slot, the last checks, credentials on the request, send,
    /// read the body, all within `request_timeout`; counted in the metrics.
    async fn attempt(
        &self,
        out: &Outbound<'_>,
        cred: &Credential,
        admitted: Option<u64>,
        attempts: u32,
        guard: Guard<'_>,
    ) -> Result<Reply, Failure> {
        let Outbound {
            ep, call, url_text, ..
        } = *out;
        let refused = |why: String| {
            let mut e = ApiError::new(call.op, url_text.to_owned(), ApiErrorKind::NotSent)
                .with_message(why);
            e.attempts = attempts;
            Failure::Refused(e)
        };
        let _permit = tokio::select! {
            p = self.in_flight.acquire() => {
                p.map_err(|_| Failure::Build("the client is shut down".into()))?
            }
            () = self.stop.begun() => return Err(refused("shutting down".into())),
        };
        if let Some(l) = &self.limiter {
            tokio::select! {
                () = l.acquire() => {}
                () = self.stop.begun() => return Err(refused("shutting down".into())),
            }
        }
        // The waits above can be long: the credential may be about to expire, and a
        // failure with the key, the stop or a reload may have come meanwhile.
        if cred
            .expires_at()
            .is_some_and(|at| tokio::time::Instant::now() + self.request_timeout >= at)
        {
            return Err(Failure::Renew);
        }
        if let Some(g) = self.creds.gate_for(cred, call.via == Via::IamToken)
            && let Some(epoch) = admitted
            && !g
                .still_open(epoch, call.op, url_text, attempts)
                .map_err(Failure::Refused)?
        {
            return Err(Failure::Renew);
        }
        if let Some(why) = self.refusal(guard) {
            return Err(refused(why));
        }
        let started = std::time::Instant::now();
        let result = tokio::select! {
            r = tokio::time::timeout(self.request_timeout, self.send(out, cred)) => {
                r.unwrap_or(Err(Failure::Timeout))
            }
            () = self.stop.given_up() => Err(Failure::Aborted),
        };
        if result.is_ok() {
            // An answer came: the daemon is making progress (`/healthz`).
            self.metrics.progress().beat();
        }
        let code = match &result {
            Ok(r) => r.status.to_string(),
            Err(Failure::Timeout) => "timeout".into(),
            Err(Failure::Connect(_)) => "connect".into(),
            Err(Failure::Aborted) => "aborted".into(),
            Err(_) => "error".into(),
        };
        self.metrics.api_request(
            &ep.target.name,
            call.op,
            &code,
            started.elapsed().as_secs_f64(),
        );
        result
    }

    async fn send(&self, out: &Outbound<'_>, cred: &Credential) -> Result<Reply, Failure> {
        let Outbound { ep, call, url, .. } = *out;
        let headers = self.headers(out, cred)?;
        let mut req = ep
            .http
            .request(call.method.clone(), url.clone())
            .headers(headers);
        if !call.body.is_empty() || call.method == Method::POST {
            req = req.body(call.body.to_vec());
        }
        let resp = req.send().await.map_err(transport_failure)?;
        read_reply(
            resp,
            self.max_body_bytes.load(Ordering::Relaxed),
            call.via == Via::IamToken,
        )
        .await
    }

    /// The headers of one attempt. The URL's query is already the signer's canonical
    /// query ([`build_url`]), so what is signed is what is sent.
    fn headers(
        &self,
        out: &Outbound<'_>,
        cred: &Credential,
    ) -> Result<reqwest::header::HeaderMap, Failure> {
        let Outbound { ep, call, url, .. } = *out;
        let host = host_header(url).ok_or_else(|| Failure::Build("url has no host".into()))?;
        self.creds
            .apply(
                cred,
                &Outgoing {
                    method: call.method.as_str(),
                    host: &host,
                    path: url.path(),
                    query: &call.query,
                    body: call.body,
                    project_id: (call.via != Via::AssumeRole).then_some(&*ep.target.project_id),
                },
            )
            .map_err(Failure::Build)
    }
}

/// Reads a whole answer, at most `cap` bytes of body; `X-Subject-Token` only when
/// `subject_token` (IAM token requests).
pub(crate) async fn read_reply(
    mut resp: reqwest::Response,
    cap: usize,
    subject_token: bool,
) -> Result<Reply, Failure> {
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let request_id = header("x-request-id")
        .map(|s| sanitize(&s))
        .filter(|s| !s.is_empty());
    let retry_after = header("retry-after").and_then(|v| parse_retry_after(&v, Utc::now()));
    let subject_token = if subject_token {
        header("x-subject-token").map(SecretString::from)
    } else {
        None
    };
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(Failure::TooLarge(format!(
            "content-length exceeds {cap} bytes"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport_failure)? {
        if body.len() + chunk.len() > cap {
            return Err(Failure::TooLarge(format!("body exceeds {cap} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        body,
        request_id,
        retry_after,
        subject_token,
        url: String::new(),
        attempts: 0,
    })
}

/// Whether either endpoint of `t` is `https://` (redirects are never followed, so a
/// target whose endpoints are both plain HTTP never does TLS).
pub(crate) fn uses_tls(t: &Target) -> bool {
    [&t.vpcep_endpoint, &t.iam_endpoint].iter().any(|u| {
        !u.get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("http://"))
    })
}

/// The HTTP client of a target: no redirects, its `ca_file` trusted on top of the
/// system roots, no trust store at all for plain-HTTP (loopback) targets.
pub(crate) fn build_http(
    t: &Target,
    request_timeout: Duration,
) -> Result<reqwest::Client, CloudError> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(request_timeout)
        .pool_idle_timeout(Duration::from_secs(50))
        .tcp_nodelay(true);
    if let Some(path) = &t.ca_file {
        let pem = std::fs::read(path).map_err(|source| CloudError::CaFileRead {
            target: t.name.clone(),
            path: path.clone(),
            source,
        })?;
        let invalid = |message: String| CloudError::CaFileInvalid {
            target: t.name.clone(),
            path: path.clone(),
            message,
        };
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| invalid(e.to_string()))?;
        if certs.is_empty() {
            return Err(invalid("no PEM certificate in it".into()));
        }
        b = b.tls_certs_merge(certs);
    } else if !uses_tls(t) {
        // Plain HTTP (loopback only, see config): no TLS handshake can happen, so skip
        // loading the system's trust store (~150 files, ~20 ms and ~1 MiB at start-up).
        b = b.tls_certs_only(Vec::<reqwest::Certificate>::new());
    }
    b.build().map_err(|source| CloudError::Build {
        target: t.name.clone(),
        source,
    })
}

fn build_url(base: &str, path: &str, query: &str) -> Result<Url, String> {
    let mut u = Url::parse(&format!("{base}{path}")).map_err(|e| format!("invalid url: {e}"))?;
    u.set_query((!query.is_empty()).then_some(query));
    u.set_fragment(None);
    Ok(u)
}

/// The `Host` header as reqwest sends it: host, plus `:port` for a non-default port.
fn host_header(u: &Url) -> Option<String> {
    let h = u.host_str()?;
    Some(match u.port() {
        Some(p) => format!("{h}:{p}"),
        None => h.to_owned(),
    })
}

pub(crate) fn transport_failure(e: reqwest::Error) -> Failure {
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    if e.is_timeout() {
        Failure::Timeout
    } else if e.is_builder() || e.is_redirect() {
        Failure::Build(msg)
    } else {
        // Connect, request and body errors: the exchange broke off, worth another try.
        Failure::Connect(msg)
    }
}

pub(crate) fn failure_error(op: &'static str, url: &str, f: Failure, attempts: u32) -> ApiError {
    let (kind, msg) = match f {
        Failure::Timeout => (
            ApiErrorKind::Timeout,
            "no complete answer within request_timeout".to_owned(),
        ),
        Failure::Connect(m) => (ApiErrorKind::Connect, m),
        Failure::TooLarge(m) => (ApiErrorKind::TooLarge, m),
        Failure::Build(m) => (ApiErrorKind::Client, m),
        Failure::Aborted => (
            ApiErrorKind::Aborted,
            "given up at the shutdown deadline".to_owned(),
        ),
        Failure::Renew => (
            ApiErrorKind::NotSent,
            "the credential would expire before an answer".to_owned(),
        ),
        Failure::Refused(e) => return e,
    };
    let mut e = ApiError::new(op, url, kind).with_message(msg);
    e.attempts = attempts;
    e
}

pub(crate) fn error_from_reply(
    op: &'static str,
    url: &str,
    reply: &Reply,
    attempts: u32,
) -> ApiError {
    let parsed = parse_error_body(&reply.body);
    let code = parsed.code;
    let kind = match reply.status {
        429 => ApiErrorKind::Throttled,
        400 if code.as_deref() == Some("EndPoint.0022") => ApiErrorKind::Throttled,
        401 => ApiErrorKind::Unauthorized,
        500..=599 => ApiErrorKind::Server,
        _ => ApiErrorKind::Client,
    };
    ApiError {
        operation: op,
        url: url.to_owned(),
        http_status: Some(reply.status),
        error_code: code,
        error_message: parsed.message,
        request_id: reply.request_id.clone().or(parsed.request_id),
        kind,
        attempts,
    }
}

fn log_failure(target: &str, e: &ApiError) {
    if e.kind == ApiErrorKind::Client {
        api_event!(info, target, e, attempts = e.attempts, error = %e, "api request rejected");
    } else {
        api_event!(warn, target, e, attempts = e.attempts, error = %e, "api request failed");
    }
}

/// A success answer that is not what the API documents.
pub(crate) fn malformed(op: &'static str, reply: &Reply, what: &str) -> ApiError {
    let mut e = ApiError::new(op, reply.url.clone(), ApiErrorKind::Malformed).with_message(what);
    e.http_status = Some(reply.status);
    e.request_id = reply.request_id.clone();
    e.attempts = reply.attempts;
    e
}

/// The body as `T`: UTF-8 and the documented JSON, or a malformed-answer error.
pub(crate) fn decode<T: DeserializeOwned>(op: &'static str, reply: &Reply) -> Result<T, ApiError> {
    if std::str::from_utf8(&reply.body).is_err() {
        return Err(malformed(op, reply, "body is not valid UTF-8"));
    }
    serde_json::from_slice(&reply.body)
        .map_err(|e| malformed(op, reply, &format!("body is not the documented JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            body: body.as_bytes().to_vec(),
            request_id: Some("rid".into()),
            retry_after: None,
            subject_token: None,
            url: String::new(),
            attempts: 0,
        }
    }

    #[test]
    fn host_header_matches_what_reqwest_sends() {
        let h = |u: &str| host_header(&Url::parse(u).expect("url"));
        for (url, host) in [
            ("https://vpcep.example.com/v1", "vpcep.example.com"),
            ("https://vpcep.example.com:443/v1", "vpcep.example.com"),
            (
                "https://vpcep.example.com:8443/v1",
                "vpcep.example.com:8443",
            ),
            ("http://127.0.0.1:8080", "127.0.0.1:8080"),
        ] {
            assert_eq!(h(url).as_deref(), Some(host), "{url}");
        }
        assert_eq!(h("http://[::1]:9/").as_deref(), Some("[::1]:9"));
    }

    #[test]
    fn statuses_and_codes_are_classified() {
        let k = |s: u16, b: &str| error_from_reply("action", "u", &reply(s, b), 1).kind;
        assert_eq!(k(429, ""), ApiErrorKind::Throttled);
        assert_eq!(
            k(
                400,
                r#"{"error_code":"EndPoint.0022","error_msg":"slow down"}"#
            ),
            ApiErrorKind::Throttled
        );
        assert_eq!(
            k(
                400,
                r#"{"error":{"code":"EndPoint.0022","message":"slow down"}}"#
            ),
            ApiErrorKind::Throttled
        );
        assert_eq!(
            k(400, r#"{"error_code":"EndPoint.2014"}"#),
            ApiErrorKind::Client
        );
        assert_eq!(
            k(401, r#"{"error_code":"APIGW.0301"}"#),
            ApiErrorKind::Unauthorized
        );
        assert_eq!(k(404, ""), ApiErrorKind::Client);
        assert_eq!(k(302, ""), ApiErrorKind::Client);
        assert_eq!(k(500, "<html>"), ApiErrorKind::Server);
        assert_eq!(k(503, ""), ApiErrorKind::Server);
        let e = error_from_reply(
            "action",
            "u",
            &reply(400, r#"{"error_code":"X","request_id":"body-rid"}"#),
            2,
        );
        assert_eq!(
            e.request_id.as_deref(),
            Some("rid"),
            "the header wins over the body"
        );
        assert_eq!(e.attempts, 2);
    }

    #[test]
    fn only_https_targets_need_tls() {
        let text = "[[target]]\nname = \"a\"\nregion = \"cn-north-4\"\nproject_id = \"p\"\n\
                    [[target]]\nname = \"b\"\nregion = \"cn-north-4\"\nproject_id = \"p\"\n\
                    vpcep_endpoint = \"http://127.0.0.1:1\"\niam_endpoint = \"http://[::1]:2\"\n\
                    [[target]]\nname = \"c\"\nregion = \"cn-north-4\"\nproject_id = \"p\"\n\
                    vpcep_endpoint = \"http://localhost:1\"\n";
        let cfg =
            crate::config::Config::parse(text, Path::new("/x/config.toml")).expect("valid config");
        let tls: Vec<bool> = cfg.targets.iter().map(uses_tls).collect();
        // c still reaches IAM over HTTPS.
        assert_eq!(tls, [true, false, true]);
    }
}
