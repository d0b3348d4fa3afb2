//! The VPCEP HTTP client (reference §1–§3, SPEC §4): list services, list connections,
//! read one connection back, accept or reject one endpoint.
//!
//! One [`Cloud`] is shared by all targets. It holds one reqwest client per distinct
//! `ca_file`, ONE rate limiter and ONE in-flight semaphore over every request of every
//! target (IAM token requests included), and the metrics. Each [`TargetClient`] adds the
//! target's endpoints and its authentication state.
//!
//! Every request goes through one loop ([`TargetClient::execute`]):
//! - fail fast while the target is in its authentication backoff;
//! - take an in-flight permit, then a rate-limit slot (in that order, so slots are not
//!   spent by requests that then queue for a permit), sign or attach the token, send,
//!   read the body in chunks up to a size cap, all within `request_timeout`;
//! - count the attempt in the metrics, release the permit;
//! - 429, 5xx, `EndPoint.0022`, timeouts and connection errors: sleep (permit released)
//!   with exponential backoff and full jitter, at least `Retry-After`, up to
//!   `max_retries` retries;
//! - 401: AK/SK enters the auth backoff and is never retried in a burst (five bad
//!   signatures lock the key for five minutes); password re-authenticates once, token
//!   re-reads its source once, and the request is retried once.
//!
//! Secrets never leave this module except as header values marked sensitive.

// `ApiError` is the public error type and carries everything a person needs (URL, status,
// code, message, request id); its size is nothing next to an HTTP round trip, and boxing
// it would only make every caller's matching clumsier.
#![allow(clippy::result_large_err)]

use super::auth::{self, Credentials};
use super::error::{ApiError, ApiErrorKind, CloudError, parse_error_body, sanitize};
use super::ratelimit::RateLimiter;
use super::retry::{Backoff, parse_retry_after};
use super::signer;
use super::types::{
    ActionRequest, ActionResponse, ConnectionList, EndpointService, ServiceList, WireConnection,
};
use crate::config::{Config, SecretSource, Target};
use crate::decision::Action;
use crate::metrics::Metrics;
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Operation name of `GET …/vpc-endpoint-services`.
pub const OP_LIST_SERVICES: &str = "list_services";
/// Operation name of `GET …/connections?status=`.
pub const OP_LIST_CONNECTIONS: &str = "list_connections";
/// Operation name of `GET …/connections?id=`.
pub const OP_GET_CONNECTION: &str = "get_connection";
/// Operation name of `POST …/connections/action`.
pub const OP_ACTION: &str = "action";
/// Operation name of `POST {iam}/v3/auth/tokens`.
pub const OP_IAM_TOKEN: &str = "iam_token";

/// Page size of list calls: the documented maximum.
pub const PAGE_LIMIT: u64 = 1000;
/// Most pages one list call reads (a million items) before it calls the answer malformed:
/// a server whose `total_count` keeps growing must not keep a cycle busy forever.
pub const MAX_PAGES: u32 = 1000;
/// Largest response body read.
pub const MAX_BODY_BYTES: usize = 32 << 20;
/// First AK/SK (or IAM password) authentication backoff.
pub const AUTH_BACKOFF_MIN: Duration = Duration::from_secs(5 * 60);
/// Longest authentication backoff.
pub const AUTH_BACKOFF_MAX: Duration = Duration::from_secs(60 * 60);
/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("vpcep-approver/", env!("CARGO_PKG_VERSION"));

/// Installs the `ring` crypto provider as rustls' process default. Idempotent; must run
/// before any reqwest client is built ([`Cloud::new`] calls it).
pub fn init_tls() {
    // An error only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The answer to a successful action.
#[derive(Debug, Clone, PartialEq)]
pub struct ActResponse {
    /// HTTP status (200).
    pub http_status: u16,
    /// The connection as the API returned it after the action, when it did.
    pub connection: Option<WireConnection>,
    /// HTTP attempts it took.
    pub attempts: u32,
}

/// The client for all targets.
pub struct Cloud {
    targets: Vec<TargetClient>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cloud")
            .field("targets", &self.targets)
            .field("auth", &self.shared.auth.method())
            .finish()
    }
}

impl Cloud {
    /// Builds the clients for every target of `cfg` (same order). Reads each `ca_file`.
    pub fn new(cfg: &Config, creds: Credentials, metrics: Metrics) -> Result<Cloud, CloudError> {
        init_tls();
        let shared = Arc::new(Shared {
            limiter: RateLimiter::new(cfg.poll.max_requests_per_second),
            in_flight: Semaphore::new(cfg.poll.max_in_flight.max(1)),
            metrics,
            request_timeout: cfg.poll.request_timeout,
            max_retries: cfg.poll.max_retries,
            backoff: Backoff::default(),
            max_body_bytes: AtomicUsize::new(MAX_BODY_BYTES),
            auth: SharedAuth::from(creds),
        });
        let mut clients: HashMap<(Option<PathBuf>, bool), reqwest::Client> = HashMap::new();
        let mut targets = Vec::with_capacity(cfg.targets.len());
        for t in &cfg.targets {
            let key = (t.ca_file.clone(), uses_tls(t));
            let http = match clients.get(&key) {
                Some(c) => c.clone(),
                None => {
                    let c = build_http(t, cfg.poll.request_timeout)?;
                    clients.insert(key, c.clone());
                    c
                }
            };
            for url in [&t.vpcep_endpoint, &t.iam_endpoint] {
                let u = Url::parse(url).map_err(|e| CloudError::Url {
                    target: t.name.clone(),
                    url: url.clone(),
                    message: e.to_string(),
                })?;
                if u.host_str().is_none() {
                    return Err(CloudError::Url {
                        target: t.name.clone(),
                        url: url.clone(),
                        message: "no host".into(),
                    });
                }
            }
            targets.push(TargetClient {
                inner: Arc::new(TargetInner {
                    target: t.clone(),
                    vpcep_base: t.vpcep_endpoint.trim_end_matches('/').to_owned(),
                    iam_base: t.iam_endpoint.trim_end_matches('/').to_owned(),
                    http,
                    shared: shared.clone(),
                    auth_backoff: Mutex::new(AuthBackoff::default()),
                    token: tokio::sync::Mutex::new(None),
                }),
            });
        }
        Ok(Cloud { targets, shared })
    }

    /// One client per configured target, in configuration order.
    pub fn targets(&self) -> &[TargetClient] {
        &self.targets
    }

    /// Lowers the response size cap (tests of `TooLarge`).
    #[doc(hidden)]
    pub fn set_max_body_bytes(&self, n: usize) {
        self.shared.max_body_bytes.store(n, Ordering::Relaxed);
    }
}

/// Whether either endpoint of `t` is `https://` (redirects are never followed, so a
/// target whose endpoints are both plain HTTP never does TLS).
fn uses_tls(t: &Target) -> bool {
    [&t.vpcep_endpoint, &t.iam_endpoint].iter().any(|u| {
        !u.get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("http://"))
    })
}

fn build_http(t: &Target, request_timeout: Duration) -> Result<reqwest::Client, CloudError> {
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

/// What all targets share.
struct Shared {
    limiter: Option<RateLimiter>,
    in_flight: Semaphore,
    metrics: Metrics,
    request_timeout: Duration,
    max_retries: u32,
    backoff: Backoff,
    max_body_bytes: AtomicUsize,
    auth: SharedAuth,
}

/// The credentials, with the live token of the `token` method.
enum SharedAuth {
    AkSk {
        ak: SecretString,
        sk: SecretString,
        security_token: Option<SecretString>,
    },
    Password {
        user_name: String,
        domain_name: String,
        password: SecretString,
    },
    Token {
        source: SecretSource,
        slot: Mutex<TokenSlot>,
    },
}

struct TokenSlot {
    token: Arc<SecretString>,
    generation: u64,
}

impl From<Credentials> for SharedAuth {
    fn from(c: Credentials) -> Self {
        match c {
            Credentials::AkSk {
                ak,
                sk,
                security_token,
            } => SharedAuth::AkSk {
                ak,
                sk,
                security_token,
            },
            Credentials::Password {
                user_name,
                domain_name,
                password,
            } => SharedAuth::Password {
                user_name,
                domain_name,
                password,
            },
            Credentials::Token { source, current } => SharedAuth::Token {
                source,
                slot: Mutex::new(TokenSlot {
                    token: Arc::new(current),
                    generation: 0,
                }),
            },
        }
    }
}

impl SharedAuth {
    fn method(&self) -> &'static str {
        match self {
            SharedAuth::AkSk { .. } => "aksk",
            SharedAuth::Password { .. } => "password",
            SharedAuth::Token { .. } => "token",
        }
    }
}

/// The client of one target. Cheap to clone.
#[derive(Clone)]
pub struct TargetClient {
    inner: Arc<TargetInner>,
}

impl fmt::Debug for TargetClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetClient")
            .field("target", &self.inner.target.name)
            .field("vpcep_endpoint", &self.inner.vpcep_base)
            .finish()
    }
}

struct TargetInner {
    target: Target,
    vpcep_base: String,
    iam_base: String,
    http: reqwest::Client,
    shared: Arc<Shared>,
    auth_backoff: Mutex<AuthBackoff>,
    /// The project-scoped IAM token (`password` method); the async lock makes concurrent
    /// callers share one IAM request.
    token: tokio::sync::Mutex<Option<CachedToken>>,
}

struct CachedToken {
    token: Arc<SecretString>,
    refresh_at: Instant,
    expires_at: Instant,
    generation: u64,
}

/// Authentication backoff of one target (AK/SK 401s, IAM password failures).
struct AuthBackoff {
    /// Until when nothing is sent (monotonic, and wall clock for messages).
    until: Option<(Instant, DateTime<Utc>)>,
    /// The next backoff length.
    next: Duration,
    /// Set by an authentication failure, cleared by the next success.
    failed: Option<String>,
    /// After a backoff ends, one request probes; the others keep failing fast.
    probe_in_flight: bool,
}

impl Default for AuthBackoff {
    fn default() -> Self {
        AuthBackoff {
            until: None,
            next: AUTH_BACKOFF_MIN,
            failed: None,
            probe_in_flight: false,
        }
    }
}

/// Clears the probe flag when the probing attempt ends, however it ends.
struct ProbeGuard<'a>(Option<&'a Mutex<AuthBackoff>>);

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if let Some(m) = self.0 {
            lock(m).probe_in_flight = false;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One request to make.
struct Call<'a> {
    op: &'static str,
    method: Method,
    /// `vpcep` base or IAM base.
    iam: bool,
    path: String,
    query: Vec<(String, String)>,
    body: &'a [u8],
}

/// The credential used for one attempt.
enum AuthUse {
    AkSk,
    /// Token (either method) and its generation, to invalidate exactly this one on 401.
    Token(Arc<SecretString>, u64),
    /// IAM token request: no credential header.
    None,
}

/// A complete HTTP answer.
struct Reply {
    status: u16,
    body: Vec<u8>,
    request_id: Option<String>,
    retry_after: Option<Duration>,
    subject_token: Option<SecretString>,
    url: String,
    attempts: u32,
}

/// An attempt that produced no complete answer.
enum Failure {
    Timeout,
    Connect(String),
    TooLarge(String),
    Build(String),
}

impl TargetClient {
    /// The configured target.
    pub fn target(&self) -> &Target {
        &self.inner.target
    }

    /// Every endpoint service of the project (`limit=1000`, paged by `offset` until
    /// `total_count` or an empty page). Filtering by `approval_enabled`/`status` is the
    /// caller's business.
    pub async fn list_services(&self) -> Result<Vec<EndpointService>, ApiError> {
        let path = format!(
            "/v1/{}/vpc-endpoint-services",
            signer::encode(&self.inner.target.project_id)
        );
        let mut out: Vec<EndpointService> = Vec::new();
        let mut seen = HashSet::new();
        let mut offset = 0u64;
        for _ in 0..MAX_PAGES {
            let reply = self
                .execute(&Call {
                    op: OP_LIST_SERVICES,
                    method: Method::GET,
                    iam: false,
                    path: path.clone(),
                    query: vec![
                        ("limit".into(), PAGE_LIMIT.to_string()),
                        ("offset".into(), offset.to_string()),
                    ],
                    body: b"",
                })
                .await?;
            let page: ServiceList = decode(OP_LIST_SERVICES, &reply)?;
            let (Some(items), Some(total)) = (page.endpoint_services, page.total_count) else {
                return Err(malformed(
                    OP_LIST_SERVICES,
                    &reply,
                    "missing endpoint_services or total_count",
                ));
            };
            let n = items.len() as u64;
            for s in items {
                let Some(id) = s.id.clone().filter(|i| !i.is_empty()) else {
                    return Err(malformed(
                        OP_LIST_SERVICES,
                        &reply,
                        "an endpoint service has no id",
                    ));
                };
                // Pages can shift while we read them; keep the first copy.
                if seen.insert(id) {
                    out.push(s);
                }
            }
            offset += n;
            if n == 0 || offset >= total {
                return Ok(out);
            }
        }
        Err(self.too_many_pages(OP_LIST_SERVICES, &path))
    }

    /// Every connection of a service with `status` (empty: any status), `limit=1000`,
    /// paged until `offset >= total_count` or an empty page. A page without
    /// `connections` or `total_count`, or a body that is not the documented JSON, fails
    /// the whole call: never partial data.
    pub async fn list_connections(
        &self,
        service_id: &str,
        status: &str,
    ) -> Result<Vec<WireConnection>, ApiError> {
        let path = self.connections_path(service_id);
        let mut out: Vec<WireConnection> = Vec::new();
        let mut seen = HashSet::new();
        let mut offset = 0u64;
        for _ in 0..MAX_PAGES {
            let mut query = vec![
                ("limit".to_owned(), PAGE_LIMIT.to_string()),
                ("offset".to_owned(), offset.to_string()),
            ];
            if !status.is_empty() {
                query.push(("status".into(), status.to_owned()));
            }
            let reply = self
                .execute(&Call {
                    op: OP_LIST_CONNECTIONS,
                    method: Method::GET,
                    iam: false,
                    path: path.clone(),
                    query,
                    body: b"",
                })
                .await?;
            let (items, total) = connection_page(OP_LIST_CONNECTIONS, &reply)?;
            let n = items.len() as u64;
            for c in items {
                if seen.insert(c.id.clone().unwrap_or_default()) {
                    out.push(c);
                }
            }
            offset += n;
            if n == 0 || offset >= total {
                return Ok(out);
            }
        }
        Err(self.too_many_pages(OP_LIST_CONNECTIONS, &path))
    }

    /// Reads one connection back by endpoint id (`GET …/connections?id=`). `None` when the
    /// API does not know it (empty list, or 404 as the terraform provider treats it).
    pub async fn get_connection(
        &self,
        service_id: &str,
        endpoint_id: &str,
    ) -> Result<Option<WireConnection>, ApiError> {
        let call = Call {
            op: OP_GET_CONNECTION,
            method: Method::GET,
            iam: false,
            path: self.connections_path(service_id),
            query: vec![("id".into(), endpoint_id.to_owned())],
            body: b"",
        };
        let reply = match self.execute(&call).await {
            Ok(r) => r,
            Err(e) if e.http_status == Some(404) => return Ok(None),
            Err(e) => return Err(e),
        };
        let list: ConnectionList = decode(OP_GET_CONNECTION, &reply)?;
        let Some(items) = list.connections else {
            return Err(malformed(OP_GET_CONNECTION, &reply, "missing connections"));
        };
        Ok(items
            .into_iter()
            .find(|c| c.id.as_deref() == Some(endpoint_id)))
    }

    /// Accepts (`receive`) or rejects one endpoint. `Action::None` is refused without a
    /// request. A non-2xx answer is an error carrying the status and `error_code`; the
    /// caller reads the connection back (SPEC §4).
    pub async fn act(
        &self,
        service_id: &str,
        endpoint_id: &str,
        action: Action,
    ) -> Result<ActResponse, ApiError> {
        let path = format!("{}/action", self.connections_path(service_id));
        if action == Action::None {
            return Err(ApiError::new(
                OP_ACTION,
                format!("{}{path}", self.inner.vpcep_base),
                ApiErrorKind::Client,
            )
            .with_message("action none is never sent"));
        }
        let body = serde_json::to_vec(&ActionRequest {
            action: action.as_str().to_owned(),
            endpoints: vec![endpoint_id.to_owned()],
        })
        .map_err(|e| {
            ApiError::new(
                OP_ACTION,
                format!("{}{path}", self.inner.vpcep_base),
                ApiErrorKind::Client,
            )
            .with_message(format!("cannot serialise the action body: {e}"))
        })?;
        let reply = self
            .execute(&Call {
                op: OP_ACTION,
                method: Method::POST,
                iam: false,
                path,
                query: Vec::new(),
                body: &body,
            })
            .await?;
        let connection = if reply.body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            let r: ActionResponse = decode(OP_ACTION, &reply)?;
            let list = r.connections.unwrap_or_default();
            let pos = list
                .iter()
                .position(|c| c.id.as_deref() == Some(endpoint_id));
            match pos {
                Some(i) => list.into_iter().nth(i),
                None => list.into_iter().next(),
            }
        };
        Ok(ActResponse {
            http_status: reply.status,
            connection,
            attempts: reply.attempts,
        })
    }

    /// Why this target cannot work right now (an authentication backoff), if it cannot.
    pub fn unready_reason(&self) -> Option<String> {
        let b = lock(&self.inner.auth_backoff);
        let failed = b.failed.as_ref()?;
        Some(match b.until {
            Some((t, wall)) if t > Instant::now() => format!(
                "target {}: {failed}; auth backoff in effect until {}",
                self.inner.target.name,
                wall.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            _ => format!(
                "target {}: {failed}; auth backoff over, waiting for a successful request",
                self.inner.target.name
            ),
        })
    }

    fn connections_path(&self, service_id: &str) -> String {
        format!(
            "/v1/{}/vpc-endpoint-services/{}/connections",
            signer::encode(&self.inner.target.project_id),
            signer::encode(service_id)
        )
    }

    fn too_many_pages(&self, op: &'static str, path: &str) -> ApiError {
        ApiError::new(
            op,
            format!("{}{path}", self.inner.vpcep_base),
            ApiErrorKind::Malformed,
        )
        .with_message(format!(
            "more than {MAX_PAGES} pages: total_count keeps growing"
        ))
    }

    /// The request loop: auth backoff, credentials, attempts, retries, 401 handling.
    async fn execute(&self, call: &Call<'_>) -> Result<Reply, ApiError> {
        let shared = &self.inner.shared;
        let base = if call.iam {
            &self.inner.iam_base
        } else {
            &self.inner.vpcep_base
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
        let mut attempts = 0u32;
        let mut retries = 0u32;
        let mut reauthenticated = false;
        loop {
            // Credentials first: for `password` the IAM request is itself the probe after
            // a backoff, and it checks the backoff on its own.
            let auth_use = self.credential_for(call).await?;
            let probe = self.check_auth_backoff(call.op, &url_text, attempts)?;
            attempts += 1;
            let outcome = self.attempt(call, &url, &auth_use).await;
            let mut retry_after = None;
            let err = match outcome {
                Ok(mut reply) if (200..300).contains(&reply.status) => {
                    self.auth_succeeded();
                    drop(probe);
                    reply.url = url_text;
                    reply.attempts = attempts;
                    return Ok(reply);
                }
                Ok(reply) => {
                    retry_after = reply.retry_after;
                    let err = error_from_reply(call.op, &url_text, &reply, attempts);
                    if reply.status == 401 || (call.iam && reply.status == 403) {
                        match (&auth_use, reauthenticated) {
                            (AuthUse::Token(_, generation), false) => {
                                reauthenticated = true;
                                if self.invalidate_token(*generation, &err)? {
                                    tracing::warn!(
                                        target = %self.inner.target.name,
                                        operation = call.op,
                                        http_status = reply.status,
                                        error_code = err.error_code.as_deref(),
                                        request_id = err.request_id.as_deref(),
                                        method = shared.auth.method(),
                                        "token not accepted; re-authenticating once and retrying once"
                                    );
                                    continue;
                                }
                            }
                            (AuthUse::AkSk, _) | (AuthUse::None, _) => {
                                self.enter_auth_backoff(&err)
                            }
                            (AuthUse::Token(..), true) => {}
                        }
                    }
                    err
                }
                Err(f) => failure_error(call.op, &url_text, f, attempts),
            };
            drop(probe);
            if err.is_retryable() && retries < shared.max_retries {
                let delay = shared.backoff.delay(retries, retry_after, &mut rand::rng());
                retries += 1;
                tracing::warn!(
                    target = %self.inner.target.name,
                    operation = call.op,
                    http_status = err.http_status,
                    error_code = err.error_code.as_deref(),
                    request_id = err.request_id.as_deref(),
                    kind = err.kind.as_str(),
                    retry = retries,
                    max_retries = shared.max_retries,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "api request failed; retrying"
                );
                tokio::time::sleep(delay).await;
                continue;
            }
            log_failure(&self.inner.target.name, &err);
            return Err(err);
        }
    }

    /// One attempt: permit, rate slot, credentials on the request, send, read the body,
    /// all within `request_timeout`; counted in the metrics.
    async fn attempt(
        &self,
        call: &Call<'_>,
        url: &Url,
        auth_use: &AuthUse,
    ) -> Result<Reply, Failure> {
        let shared = &self.inner.shared;
        let _permit = shared
            .in_flight
            .acquire()
            .await
            .map_err(|_| Failure::Build("the client is shut down".into()))?;
        if let Some(l) = &shared.limiter {
            l.acquire().await;
        }
        let started = std::time::Instant::now();
        let result =
            tokio::time::timeout(shared.request_timeout, self.send(call, url, auth_use)).await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout),
        };
        let code = match &result {
            Ok(r) => r.status.to_string(),
            Err(Failure::Timeout) => "timeout".into(),
            Err(Failure::Connect(_)) => "connect".into(),
            Err(_) => "error".into(),
        };
        shared.metrics.api_request(
            &self.inner.target.name,
            call.op,
            &code,
            started.elapsed().as_secs_f64(),
        );
        result
    }

    async fn send(&self, call: &Call<'_>, url: &Url, auth_use: &AuthUse) -> Result<Reply, Failure> {
        let shared = &self.inner.shared;
        let mut url = url.clone();
        let headers = self.headers(call, &mut url, auth_use)?;
        let mut req = self
            .inner
            .http
            .request(call.method.clone(), url.clone())
            .headers(headers);
        if !call.body.is_empty() || call.method == Method::POST {
            req = req.body(call.body.to_vec());
        }
        let mut resp = req.send().await.map_err(transport_failure)?;
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
        let subject_token = if call.iam {
            header("x-subject-token").map(SecretString::from)
        } else {
            None
        };
        let cap = shared.max_body_bytes.load(Ordering::Relaxed);
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

    /// The headers of one attempt; for AK/SK also signs, and sets the URL's query to the
    /// signer's canonical query.
    fn headers(
        &self,
        call: &Call<'_>,
        url: &mut Url,
        auth_use: &AuthUse,
    ) -> Result<HeaderMap, Failure> {
        let mut h = HeaderMap::new();
        let put =
            |h: &mut HeaderMap, name: &str, value: &str, sensitive: bool| -> Result<(), Failure> {
                let n = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| Failure::Build(e.to_string()))?;
                let mut v = HeaderValue::from_str(value).map_err(|_| {
                    Failure::Build(format!(
                        "header {name} has a value that is not valid in http"
                    ))
                })?;
                v.set_sensitive(sensitive);
                h.insert(n, v);
                Ok(())
            };
        match (auth_use, &self.inner.shared.auth) {
            (
                AuthUse::AkSk,
                SharedAuth::AkSk {
                    ak,
                    sk,
                    security_token,
                },
            ) => {
                let host =
                    host_header(url).ok_or_else(|| Failure::Build("url has no host".into()))?;
                let mut signed: Vec<(String, String)> = vec![
                    ("Content-Type".into(), "application/json".into()),
                    ("Host".into(), host),
                    ("User-Agent".into(), USER_AGENT.into()),
                    ("X-Project-Id".into(), self.inner.target.project_id.clone()),
                    ("X-Sdk-Date".into(), signer::format_sdk_date(Utc::now())),
                ];
                if let Some(st) = security_token {
                    signed.push(("X-Security-Token".into(), st.expose_secret().to_owned()));
                }
                let s = signer::sign(
                    ak.expose_secret(),
                    sk.expose_secret().as_bytes(),
                    &signer::Request {
                        method: call.method.as_str(),
                        path: url.path(),
                        query: &call.query,
                        headers: &signed,
                        body: call.body,
                    },
                );
                url.set_query((!s.query.is_empty()).then_some(s.query.as_str()));
                for (k, v) in &signed {
                    put(&mut h, k, v, k == "X-Security-Token")?;
                }
                put(&mut h, "Authorization", &s.authorization, true)?;
            }
            (AuthUse::Token(token, _), _) => {
                put(&mut h, "Content-Type", "application/json", false)?;
                put(&mut h, "User-Agent", USER_AGENT, false)?;
                put(&mut h, "X-Auth-Token", token.expose_secret(), true)?;
            }
            _ => {
                put(&mut h, "Content-Type", "application/json", false)?;
                put(&mut h, "User-Agent", USER_AGENT, false)?;
            }
        }
        Ok(h)
    }

    /// The credential for the next attempt: AK/SK signing, the shared token, or this
    /// target's IAM token (fetched or refreshed first when needed).
    async fn credential_for(&self, call: &Call<'_>) -> Result<AuthUse, ApiError> {
        if call.iam {
            return Ok(AuthUse::None);
        }
        match &self.inner.shared.auth {
            SharedAuth::AkSk { .. } => Ok(AuthUse::AkSk),
            SharedAuth::Token { slot, .. } => {
                let s = lock(slot);
                Ok(AuthUse::Token(s.token.clone(), s.generation))
            }
            SharedAuth::Password { .. } => {
                let (t, g) = self.password_token().await?;
                Ok(AuthUse::Token(t, g))
            }
        }
    }

    /// The cached IAM token, fetched when absent or expired and refreshed when within its
    /// margin (keeping the old one if the refresh fails while it is still valid).
    async fn password_token(&self) -> Result<(Arc<SecretString>, u64), ApiError> {
        let mut slot = self.inner.token.lock().await;
        let now = Instant::now();
        let mut generation = 0;
        if let Some(c) = slot.as_ref() {
            generation = c.generation;
            if now < c.refresh_at {
                return Ok((c.token.clone(), c.generation));
            }
        }
        match self.fetch_iam_token().await {
            Ok(issued) => {
                let start = Instant::now();
                let margin = auth::refresh_margin(issued.lifetime);
                let token = Arc::new(issued.token);
                let generation = generation + 1;
                tracing::info!(
                    target = %self.inner.target.name,
                    expires_at = %issued.expires_at,
                    "obtained a project-scoped iam token"
                );
                *slot = Some(CachedToken {
                    token: token.clone(),
                    refresh_at: start + issued.lifetime.saturating_sub(margin),
                    expires_at: start + issued.lifetime,
                    generation,
                });
                Ok((token, generation))
            }
            Err(e) => match slot.as_ref() {
                Some(c) if Instant::now() < c.expires_at => {
                    tracing::warn!(
                        target = %self.inner.target.name,
                        error = %e,
                        "iam token refresh failed; using the current token until it expires"
                    );
                    Ok((c.token.clone(), c.generation))
                }
                _ => Err(e),
            },
        }
    }

    async fn fetch_iam_token(&self) -> Result<auth::IssuedToken, ApiError> {
        let SharedAuth::Password {
            user_name,
            domain_name,
            password,
        } = &self.inner.shared.auth
        else {
            return Err(ApiError::new(
                OP_IAM_TOKEN,
                self.inner.iam_base.clone(),
                ApiErrorKind::Client,
            )
            .with_message("not using password authentication"));
        };
        let body = auth::password_token_body(
            user_name,
            domain_name,
            password,
            &self.inner.target.project_id,
        );
        let call = Call {
            op: OP_IAM_TOKEN,
            method: Method::POST,
            iam: true,
            path: "/v3/auth/tokens".into(),
            query: vec![("nocatalog".into(), "true".into())],
            body: &body,
        };
        // Boxed: `execute` → credentials → IAM token → `execute` (without credentials).
        let reply = Box::pin(self.execute(&call)).await?;
        let subject = reply.subject_token.as_ref().map(|s| s.expose_secret());
        auth::parse_token_response(subject, &reply.body, Utc::now())
            .map_err(|m| malformed(OP_IAM_TOKEN, &reply, &m))
    }

    /// After a 401 with token `generation`: drop that token (password) or re-read the
    /// token source (token). Returns whether a retry can use a different credential.
    fn invalidate_token(&self, generation: u64, err: &ApiError) -> Result<bool, ApiError> {
        match &self.inner.shared.auth {
            SharedAuth::Password { .. } => {
                // `try_lock`: if another task holds the slot it is fetching a new token.
                if let Ok(mut slot) = self.inner.token.try_lock()
                    && slot.as_ref().is_some_and(|c| c.generation == generation)
                {
                    // Keep the generation counting up across the drop.
                    if let Some(c) = slot.as_mut() {
                        c.refresh_at = Instant::now();
                        c.expires_at = Instant::now();
                    }
                }
                Ok(true)
            }
            SharedAuth::Token { source, slot } => {
                let mut s = lock(slot);
                if s.generation != generation {
                    return Ok(true);
                }
                let fresh = source.load().map_err(|e| {
                    let mut out = err.clone();
                    out.error_message = Some(sanitize(&format!(
                        "{}; cannot re-read the token: {e}",
                        err.error_message.as_deref().unwrap_or("token not accepted")
                    )));
                    out
                })?;
                if fresh.expose_secret() == s.token.expose_secret() {
                    tracing::warn!(source = %source, "token not accepted and unchanged in its source");
                    return Ok(false);
                }
                s.token = Arc::new(fresh);
                s.generation += 1;
                Ok(true)
            }
            SharedAuth::AkSk { .. } => Ok(false),
        }
    }

    /// Fails fast while the auth backoff lasts; after it, lets exactly one request probe.
    fn check_auth_backoff(
        &self,
        op: &'static str,
        url: &str,
        attempts: u32,
    ) -> Result<ProbeGuard<'_>, ApiError> {
        let m = &self.inner.auth_backoff;
        let mut b = lock(m);
        let Some(reason) = b.failed.clone() else {
            return Ok(ProbeGuard(None));
        };
        let now = Instant::now();
        let blocked = match b.until {
            Some((t, wall)) if t > now => Some(format!(
                "{reason}; auth backoff until {}",
                wall.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )),
            _ if b.probe_in_flight => Some(format!(
                "{reason}; another request is probing the credentials"
            )),
            _ => None,
        };
        if let Some(msg) = blocked {
            let mut e = ApiError::new(op, url, ApiErrorKind::AuthBackoff).with_message(msg);
            e.attempts = attempts;
            return Err(e);
        }
        b.probe_in_flight = true;
        Ok(ProbeGuard(Some(m)))
    }

    fn enter_auth_backoff(&self, err: &ApiError) {
        let mut b = lock(&self.inner.auth_backoff);
        let now = Instant::now();
        if b.until.is_some_and(|(t, _)| t > now) {
            return; // a concurrent request already started it
        }
        let d = b.next;
        let wall = Utc::now()
            + chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::hours(1));
        b.until = Some((now + d, wall));
        b.next = (d * 2).min(AUTH_BACKOFF_MAX);
        b.failed = Some(format!(
            "{} authentication failed ({}{}{})",
            self.inner.shared.auth.method(),
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
        ));
        tracing::error!(
            target = %self.inner.target.name,
            operation = err.operation,
            http_status = err.http_status,
            error_code = err.error_code.as_deref(),
            request_id = err.request_id.as_deref(),
            backoff_secs = d.as_secs(),
            until = %wall.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "authentication failed; not retrying until the backoff ends"
        );
    }

    fn auth_succeeded(&self) {
        let mut b = lock(&self.inner.auth_backoff);
        if b.failed.is_some() {
            tracing::info!(target = %self.inner.target.name, "authentication works again; backoff reset");
        }
        *b = AuthBackoff::default();
    }
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

fn transport_failure(e: reqwest::Error) -> Failure {
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

fn failure_error(op: &'static str, url: &str, f: Failure, attempts: u32) -> ApiError {
    let (kind, msg) = match f {
        Failure::Timeout => (
            ApiErrorKind::Timeout,
            "no complete answer within request_timeout".to_owned(),
        ),
        Failure::Connect(m) => (ApiErrorKind::Connect, m),
        Failure::TooLarge(m) => (ApiErrorKind::TooLarge, m),
        Failure::Build(m) => (ApiErrorKind::Client, m),
    };
    let mut e = ApiError::new(op, url, kind).with_message(msg);
    e.attempts = attempts;
    e
}

fn error_from_reply(op: &'static str, url: &str, reply: &Reply, attempts: u32) -> ApiError {
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
        tracing::info!(
            target = %target,
            operation = e.operation,
            http_status = e.http_status,
            error_code = e.error_code.as_deref(),
            request_id = e.request_id.as_deref(),
            attempts = e.attempts,
            error = %e,
            "api request rejected"
        );
    } else {
        tracing::warn!(
            target = %target,
            operation = e.operation,
            http_status = e.http_status,
            error_code = e.error_code.as_deref(),
            request_id = e.request_id.as_deref(),
            attempts = e.attempts,
            error = %e,
            "api request failed"
        );
    }
}

fn malformed(op: &'static str, reply: &Reply, what: &str) -> ApiError {
    let mut e = ApiError::new(op, reply.url.clone(), ApiErrorKind::Malformed).with_message(what);
    e.http_status = Some(reply.status);
    e.request_id = reply.request_id.clone();
    e.attempts = reply.attempts;
    e
}

fn decode<T: DeserializeOwned>(op: &'static str, reply: &Reply) -> Result<T, ApiError> {
    if std::str::from_utf8(&reply.body).is_err() {
        return Err(malformed(op, reply, "body is not valid UTF-8"));
    }
    serde_json::from_slice(&reply.body)
        .map_err(|e| malformed(op, reply, &format!("body is not the documented JSON: {e}")))
}

/// One page of connections: both `connections` and `total_count` present, every
/// connection with an id.
fn connection_page(
    op: &'static str,
    reply: &Reply,
) -> Result<(Vec<WireConnection>, u64), ApiError> {
    let list: ConnectionList = decode(op, reply)?;
    let (Some(items), Some(total)) = (list.connections, list.total_count) else {
        return Err(malformed(op, reply, "missing connections or total_count"));
    };
    if items
        .iter()
        .any(|c| c.id.as_deref().is_none_or(str::is_empty))
    {
        return Err(malformed(op, reply, "a connection has no id"));
    }
    Ok((items, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cloud(endpoint: &str, creds: Credentials) -> Cloud {
        let text = format!(
            "[[target]]\nregion = \"cn-north-4\"\nproject_id = \"0605767a3300d5762fb7c0186d8bfc2b\"\nvpcep_endpoint = \"{endpoint}\"\n"
        );
        let cfg = Config::parse(&text, Path::new("/x/config.toml")).expect("valid config");
        Cloud::new(&cfg, creds, Metrics::new()).expect("cloud")
    }

    fn aksk(token: Option<&str>) -> Credentials {
        Credentials::AkSk {
            ak: "AKTESTEXAMPLE".into(),
            sk: "SKTESTEXAMPLESECRET".into(),
            security_token: token.map(SecretString::from),
        }
    }

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
        assert_eq!(
            h("https://vpcep.example.com/v1").as_deref(),
            Some("vpcep.example.com")
        );
        assert_eq!(
            h("https://vpcep.example.com:443/v1").as_deref(),
            Some("vpcep.example.com")
        );
        assert_eq!(
            h("https://vpcep.example.com:8443/v1").as_deref(),
            Some("vpcep.example.com:8443")
        );
        assert_eq!(
            h("http://127.0.0.1:8080").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(h("http://[::1]:9/").as_deref(), Some("[::1]:9"));
    }

    #[test]
    fn aksk_headers_are_signed_over_the_exact_request() {
        let c = cloud("https://vpcep.example.com:8443", aksk(Some("STSTOKEN")));
        let t = &c.targets()[0];
        let body = br#"{"action":"receive","endpoints":["e1"]}"#;
        let call = Call {
            op: OP_ACTION,
            method: Method::POST,
            iam: false,
            path: t.connections_path("svc 1"),
            query: vec![
                ("status".into(), "a b".into()),
                ("limit".into(), "1000".into()),
            ],
            body,
        };
        let mut url = build_url(
            &t.inner.vpcep_base,
            &call.path,
            &signer::canonical_query(&call.query),
        )
        .expect("url");
        let h = t
            .headers(&call, &mut url, &AuthUse::AkSk)
            .ok()
            .expect("headers");
        assert_eq!(url.query(), Some("limit=1000&status=a%20b"));
        assert!(
            url.path()
                .ends_with("/vpc-endpoint-services/svc%201/connections")
        );
        let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(get("host").as_deref(), Some("vpcep.example.com:8443"));
        assert_eq!(get("user-agent").as_deref(), Some(USER_AGENT));
        assert_eq!(
            get("x-project-id").as_deref(),
            Some("0605767a3300d5762fb7c0186d8bfc2b")
        );
        assert!(h.get("authorization").is_some_and(|v| v.is_sensitive()));
        assert!(h.get("x-security-token").is_some_and(|v| v.is_sensitive()));
        let auth = get("authorization").expect("authorization");
        assert!(
            auth.contains("SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date;x-security-token"),
            "{auth}"
        );
        let access = signer::verify(
            "POST",
            url.path(),
            url.query().unwrap_or(""),
            |n| get(n),
            body,
            Utc::now(),
            chrono::Duration::minutes(15),
            |ak| (ak == "AKTESTEXAMPLE").then(|| b"SKTESTEXAMPLESECRET".to_vec()),
        );
        assert_eq!(access.as_deref(), Ok("AKTESTEXAMPLE"));
        // Any other body fails verification: the hash covers the bytes sent.
        let tampered = signer::verify(
            "POST",
            url.path(),
            url.query().unwrap_or(""),
            |n| get(n),
            b"{}",
            Utc::now(),
            chrono::Duration::minutes(15),
            |_| Some(b"SKTESTEXAMPLESECRET".to_vec()),
        );
        assert!(tampered.is_err());
    }

    #[test]
    fn token_header_is_sensitive() {
        let c = cloud(
            "http://127.0.0.1:9",
            Credentials::Token {
                source: SecretSource::Env("VPCEP_TEST_CLIENT_UNSET".into()),
                current: "MIItoken".into(),
            },
        );
        let t = &c.targets()[0];
        let call = Call {
            op: OP_LIST_SERVICES,
            method: Method::GET,
            iam: false,
            path: "/v1/p/vpc-endpoint-services".into(),
            query: Vec::new(),
            body: b"",
        };
        let mut url = Url::parse("http://127.0.0.1:9/x").expect("url");
        let tok = AuthUse::Token(Arc::new("MIItoken".into()), 0);
        let h = t.headers(&call, &mut url, &tok).ok().expect("headers");
        assert!(h.get("x-auth-token").is_some_and(|v| v.is_sensitive()));
        assert!(h.get("authorization").is_none());
        assert!(!format!("{h:?}").contains("MIItoken"));
        assert!(!format!("{c:?}").contains("MIItoken"));
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
    fn missing_ca_file_is_named() {
        let text = "[[target]]\nregion = \"cn-north-4\"\nproject_id = \"p\"\nca_file = \"/nonexistent/ca.pem\"\n";
        let cfg = Config::parse(text, Path::new("/x/config.toml")).expect("valid config");
        let e = Cloud::new(&cfg, aksk(None), Metrics::new())
            .expect_err("missing")
            .to_string();
        assert!(
            e.contains("/nonexistent/ca.pem") && e.contains("cn-north-4"),
            "{e}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate").expect("write");
        let text = format!(
            "[[target]]\nregion = \"cn-north-4\"\nproject_id = \"p\"\nca_file = \"{}\"\n",
            p.display()
        );
        let cfg = Config::parse(&text, Path::new("/x/config.toml")).expect("valid config");
        let e = Cloud::new(&cfg, aksk(None), Metrics::new())
            .expect_err("invalid")
            .to_string();
        assert!(e.contains("ca.pem"), "{e}");
    }

    #[test]
    fn only_https_targets_need_tls() {
        let text = "[[target]]\nname = \"a\"\nregion = \"cn-north-4\"\nproject_id = \"p\"\n\
                    [[target]]\nname = \"b\"\nregion = \"cn-north-4\"\nproject_id = \"p\"\n\
                    vpcep_endpoint = \"http://127.0.0.1:1\"\niam_endpoint = \"http://[::1]:2\"\n\
                    [[target]]\nname = \"c\"\nregion = \"cn-north-4\"\nproject_id = \"p\"\n\
                    vpcep_endpoint = \"http://localhost:1\"\n";
        let cfg = Config::parse(text, Path::new("/x/config.toml")).expect("valid config");
        let tls: Vec<bool> = cfg.targets.iter().map(uses_tls).collect();
        // c still reaches IAM over HTTPS.
        assert_eq!(tls, [true, false, true]);
        Cloud::new(&cfg, aksk(None), Metrics::new()).expect("cloud");
    }

    #[test]
    fn one_http_client_per_ca_file_and_targets_in_order() {
        let text = "[[target]]\nname = \"a\"\nregion = \"cn-north-4\"\nproject_id = \"p\"\n\
                    [[target]]\nname = \"b\"\nregion = \"cn-east-3\"\nproject_id = \"q\"\n";
        let cfg = Config::parse(text, Path::new("/x/config.toml")).expect("valid config");
        let c = Cloud::new(&cfg, aksk(None), Metrics::new()).expect("cloud");
        let names: Vec<&str> = c
            .targets()
            .iter()
            .map(|t| t.target().name.as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(Arc::ptr_eq(
            &c.targets()[0].inner.shared,
            &c.targets()[1].inner.shared
        ));
    }
}
