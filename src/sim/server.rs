//! The HTTP side of the simulator: one dispatcher for every route (so authentication,
//! faults, latency and `X-Request-Id` are applied uniformly), the IAM token store, and the
//! [`Simulator`] handle.
//!
//! Order of checks for an API request: route (404 `APIGW.0101`), latency, body cap (413),
//! authentication (401/403: the signature or token; a temporary key's security token and
//! projects; the metadata session token; the pod-identity token), injected fault, project
//! id (400 `EndPoint.0014`), then the operation itself.

use super::api::{self, ApiError};
use super::faults::{ErrorShape, FaultState, Faults, Injected, Operation, ScriptedFault};
use super::keyless::{
    self, AGENCY_MAX_DURATION_FROM_TEMPORARY, AssumeRoleError, Issued, KeySource, KeylessSettings,
    KeylessUpdate, MetadataMode, NO_AGENCY_TEXT, TempKey, TempKeys, TokenProblem, format_micros,
};
use super::seed::SeedConnection;
use super::store::{Action, AddError, ConnQuery, ServiceQuery, SnapConnection, Store};
use super::{ActionRecord, IssuedKeys, SimConfig, SimError, SimSnapshot, SimUser, TokenRejections};
use crate::cloud::signer::{self, VerifyError};
use crate::cloud::types::{ActionResponse, WireConnection};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::serve::ListenerExt as _;
use chrono::{DateTime, Utc};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Body cap on the API routes (an action body is ~100 bytes; the real gateway allows 12 MB).
const API_BODY_LIMIT: usize = 1 << 20;
/// Body cap on `/_sim/` (bulk connection adds).
const ADMIN_BODY_LIMIT: usize = 32 << 20;
/// Allowed `X-Sdk-Date` skew, as the real gateway.
const MAX_SKEW_MINUTES: i64 = 15;
/// How long `shutdown` waits for open connections before aborting the server task.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// `X-Subject-Token`.
const SUBJECT_TOKEN: HeaderName = HeaderName::from_static("x-subject-token");
/// `X-Request-Id`.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Content type of JSON answers, as the real service sends it.
const JSON_TYPE: &str = "application/json;charset=UTF-8";
/// Content type of the metadata service's and pod-identity route's text answers.
const TEXT_TYPE: &str = "text/plain; charset=utf-8";
/// Metadata session tokens kept at most; the ones that expire first go beyond this.
const MAX_METADATA_SESSIONS: usize = 100_000;

/// An issued IAM token.
#[derive(Debug, Clone)]
struct Token {
    project_id: Option<String>,
    expires_at: DateTime<Utc>,
}

/// State shared by the handle and the request handlers.
struct Shared {
    store: RwLock<Store>,
    faults: Mutex<FaultState>,
    tokens: Mutex<HashMap<String, Token>>,
    actions: Mutex<Vec<ActionRecord>>,
    /// Requests per operation, indexed like [`Operation::ALL`].
    counters: [AtomicU64; Operation::ALL.len()],
    tokens_issued: AtomicU64,
    credentials: RwLock<HashMap<String, String>>,
    keyless: RwLock<KeylessSettings>,
    temp_keys: Mutex<TempKeys>,
    /// Metadata session tokens and their expiry.
    sessions: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Temporary keys issued, indexed by [`KeySource`].
    keys_issued: [AtomicU64; 3],
    /// Security-token refusals, indexed by [`TokenProblem`].
    token_rejections: [AtomicU64; 4],
    signed: Mutex<std::collections::VecDeque<super::SignedRecord>>,
    users: Vec<SimUser>,
    project_id: Option<String>,
    token_lifetime: chrono::Duration,
    retry_after: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data behind; keep serving it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Who a verified request came from, as far as the operation cares.
#[derive(Debug, Clone, Copy, Default)]
struct Caller {
    /// Signed with a temporary key (an agency then grants at most 1 h).
    temporary: bool,
}

/// What the signed-request log records about a request's security token.
#[derive(Debug, Clone, Copy, Default)]
struct TokenSeen {
    temporary: bool,
    security_token: bool,
    valid: Option<bool>,
}

/// One API request's result, for the logs.
struct Outcome {
    reply: Reply,
    status_after: Option<String>,
    body: Bytes,
    token: TokenSeen,
}

/// An answer before it becomes an HTTP response; `code` is kept for the action log.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    headers: Vec<(HeaderName, HeaderValue)>,
    code: Option<String>,
}

impl Reply {
    fn json<T: Serialize>(status: StatusCode, v: &T) -> Reply {
        match serde_json::to_vec(v) {
            Ok(body) => Reply {
                status,
                body,
                headers: Vec::new(),
                code: None,
            },
            Err(e) => {
                tracing::error!(error = %e, "simulator could not serialise an answer");
                Reply::error(&api::SYSTEM_ERROR, ErrorShape::Flat, "")
            }
        }
    }

    fn error(e: &ApiError, shape: ErrorShape, request_id: &str) -> Reply {
        let mut headers = Vec::new();
        if let Some(d) = e.retry_after {
            headers.push((RETRY_AFTER, HeaderValue::from(retry_after_secs(d))));
        }
        Reply {
            status: e.status,
            body: e.body(shape, request_id),
            headers,
            code: Some(e.code.to_string()),
        }
    }

    fn admin_error(status: StatusCode, msg: impl Into<String>) -> Reply {
        Reply::json(status, &json!({ "error": msg.into() }))
    }

    /// A `text/plain` answer (the metadata service's and the pod-identity route's).
    fn text(status: StatusCode, text: impl Into<String>) -> Reply {
        Reply {
            status,
            body: text.into().into_bytes(),
            headers: vec![(CONTENT_TYPE, HeaderValue::from_static(TEXT_TYPE))],
            code: None,
        }
    }

    fn into_response(self, request_id: &str) -> Response {
        let mut resp = Response::new(Body::from(self.body));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_TYPE));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert(REQUEST_ID, v);
        }
        for (k, v) in self.headers {
            h.insert(k, v);
        }
        resp
    }
}

/// Whole seconds, rounded up, as `Retry-After` wants.
fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The API routes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    ListServices { project: String },
    ShowService { project: String, service: String },
    ListConnections { project: String, service: String },
    Action { project: String, service: String },
    Token,
    MetadataToken,
    MetadataSecurityKey,
    PodIdentity,
    SecurityTokens,
}

impl Route {
    /// Matches a method and a raw path; a single trailing `/` is tolerated.
    fn parse(method: &Method, path: &str) -> Option<Route> {
        let path = path.strip_suffix('/').unwrap_or(path);
        let segs: Vec<String> = path
            .strip_prefix('/')?
            .split('/')
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let route = match (method, s.as_slice()) {
            (&Method::POST, ["v3", "auth", "tokens"]) => Route::Token,
            (&Method::POST, ["v3.0", "OS-CREDENTIAL", "securitytokens"]) => Route::SecurityTokens,
            (&Method::PUT, ["meta-data", "latest", "api", "token"]) => Route::MetadataToken,
            (&Method::GET, ["openstack", "latest", "securitykey"]) => Route::MetadataSecurityKey,
            (&Method::GET, ["v1", p, "vpc-endpoint-services"]) => Route::ListServices {
                project: (*p).to_owned(),
            },
            (&Method::GET, ["v1", p, "vpc-endpoint-services", id]) => Route::ShowService {
                project: (*p).to_owned(),
                service: (*id).to_owned(),
            },
            (&Method::GET, ["v1", p, "vpc-endpoint-services", id, "connections"]) => {
                Route::ListConnections {
                    project: (*p).to_owned(),
                    service: (*id).to_owned(),
                }
            }
            (
                &Method::POST,
                [
                    "v1",
                    p,
                    "vpc-endpoint-services",
                    id,
                    "connections",
                    "action",
                ],
            ) => Route::Action {
                project: (*p).to_owned(),
                service: (*id).to_owned(),
            },
            _ => return None,
        };
        Some(route)
    }

    fn op(&self) -> Operation {
        match self {
            Route::ListServices { .. } => Operation::ListServices,
            Route::ShowService { .. } => Operation::ShowService,
            Route::ListConnections { .. } => Operation::ListConnections,
            Route::Action { .. } => Operation::Action,
            Route::Token => Operation::Token,
            Route::MetadataToken => Operation::MetadataToken,
            Route::MetadataSecurityKey => Operation::MetadataSecurityKey,
            Route::PodIdentity => Operation::PodIdentity,
            Route::SecurityTokens => Operation::SecurityTokens,
        }
    }

    /// The project in the path of a `/v1` route.
    fn project(&self) -> Option<&str> {
        match self {
            Route::ListServices { project }
            | Route::ShowService { project, .. }
            | Route::ListConnections { project, .. }
            | Route::Action { project, .. } => Some(project),
            Route::Token
            | Route::MetadataToken
            | Route::MetadataSecurityKey
            | Route::PodIdentity
            | Route::SecurityTokens => None,
        }
    }

    /// Routes that take `SDK-HMAC-SHA256` signatures (logged in `SimSnapshot::signed`).
    fn takes_signatures(&self) -> bool {
        self.project().is_some() || *self == Route::SecurityTokens
    }
}

/// The header as a string (lossy: the signer covers the bytes the client sent as text).
fn header(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| api::TOO_LARGE)
}

impl Shared {
    fn new(cfg: &SimConfig, store: Store) -> Shared {
        Shared {
            store: RwLock::new(store),
            faults: Mutex::new(FaultState::new(Faults {
                fault_rate: cfg.fault_rate,
                latency: cfg.latency,
                ..Faults::default()
            })),
            tokens: Mutex::new(HashMap::new()),
            actions: Mutex::new(Vec::new()),
            counters: Default::default(),
            tokens_issued: AtomicU64::new(0),
            credentials: RwLock::new(cfg.credentials.iter().cloned().collect()),
            keyless: RwLock::new(cfg.keyless()),
            temp_keys: Mutex::new(TempKeys::default()),
            sessions: Mutex::new(HashMap::new()),
            keys_issued: Default::default(),
            token_rejections: Default::default(),
            signed: Mutex::new(std::collections::VecDeque::new()),
            users: cfg.users.clone(),
            project_id: cfg.project_id.clone(),
            token_lifetime: chrono::Duration::from_std(cfg.token_lifetime)
                .unwrap_or(chrono::Duration::MAX),
            retry_after: cfg.retry_after,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the keyless settings.
    fn keyless(&self) -> KeylessSettings {
        self.keyless
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_keyless(&self, s: KeylessSettings) -> Result<(), SimError> {
        s.validate().map_err(SimError::InvalidSettings)?;
        *self.keyless.write().unwrap_or_else(PoisonError::into_inner) = s;
        Ok(())
    }

    fn update_keyless(&self, u: KeylessUpdate) -> Result<KeylessSettings, String> {
        let mut s = self.keyless.write().unwrap_or_else(PoisonError::into_inner);
        s.apply(u)?;
        Ok(s.clone())
    }

    fn count(&self, op: Operation) {
        if let Some(i) = Operation::ALL.iter().position(|o| *o == op) {
            self.counters[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> SimSnapshot {
        let services = self.read().snapshot();
        let actions = lock(&self.actions).clone();
        let requests: BTreeMap<String, u64> = Operation::ALL
            .iter()
            .zip(&self.counters)
            .map(|(op, n)| (op.as_str().to_owned(), n.load(Ordering::Relaxed)))
            .collect();
        let issued = |s: KeySource| self.keys_issued[s as usize].load(Ordering::Relaxed);
        let rejected = |p: TokenProblem| self.token_rejections[p as usize].load(Ordering::Relaxed);
        SimSnapshot {
            services,
            actions,
            requests,
            tokens_issued: self.tokens_issued.load(Ordering::Relaxed),
            signed: lock(&self.signed).iter().cloned().collect(),
            temporary_keys_issued: IssuedKeys {
                metadata: issued(KeySource::Metadata),
                pod_identity: issued(KeySource::PodIdentity),
                agency: issued(KeySource::Agency),
            },
            security_token_rejections: TokenRejections {
                missing: rejected(TokenProblem::Missing),
                unsigned: rejected(TokenProblem::Unsigned),
                mismatched: rejected(TokenProblem::Mismatched),
                expired: rejected(TokenProblem::Expired),
            },
        }
    }

    fn expire_tokens(&self) -> usize {
        let past = Utc::now() - chrono::Duration::seconds(1);
        let mut tokens = lock(&self.tokens);
        for t in tokens.values_mut() {
            t.expires_at = past;
        }
        tokens.len()
    }

    fn expire_temporary_keys(&self) -> usize {
        lock(&self.temp_keys).expire_all(Utc::now())
    }

    fn expire_sessions(&self) -> usize {
        let past = Utc::now() - chrono::Duration::seconds(1);
        let mut sessions = lock(&self.sessions);
        for t in sessions.values_mut() {
            *t = (*t).min(past);
        }
        sessions.len()
    }

    /// Issues a temporary key and counts it.
    fn issue_key(
        &self,
        source: KeySource,
        lifetime: Duration,
        projects: Option<Vec<String>>,
        now: DateTime<Utc>,
    ) -> Issued {
        self.keys_issued[source as usize].fetch_add(1, Ordering::Relaxed);
        let lifetime = chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::MAX);
        lock(&self.temp_keys).issue(lifetime, projects, now)
    }

    /// The temporary key behind an access key, unless it is a permanent one.
    fn temporary_key(&self, access: &str) -> Option<TempKey> {
        if self
            .credentials
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(access)
        {
            return None;
        }
        lock(&self.temp_keys).get(access).cloned()
    }

    /// Signature or token, and, for a `/v1` route, the project the credentials are for.
    /// `seen` gets what the signed-request log records about the security token.
    fn authenticate(
        &self,
        parts: &Parts,
        body: &[u8],
        project: Option<&str>,
        now: DateTime<Utc>,
        seen: &mut TokenSeen,
    ) -> Result<Caller, ApiError> {
        let authorization = header(parts, "authorization");
        if let Some(auth) = authorization
            .as_deref()
            .filter(|a| a.starts_with(signer::ALGORITHM))
        {
            let parsed = signer::parse_authorization(auth);
            let temp = parsed.as_ref().and_then(|a| self.temporary_key(&a.access));
            let security_token = header(parts, "x-security-token");
            seen.temporary = temp.is_some();
            seen.security_token = security_token.is_some();
            let verified = signer::verify(
                parts.method.as_str(),
                parts.uri.path(),
                parts.uri.query().unwrap_or(""),
                |name| header(parts, name),
                body,
                now,
                chrono::Duration::minutes(MAX_SKEW_MINUTES),
                |ak| {
                    if let Some(sk) = self
                        .credentials
                        .read()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(ak)
                    {
                        return Some(sk.as_bytes().to_vec());
                    }
                    // `temp` is the key of this very `Access=`, looked up above.
                    temp.as_ref().map(|k| k.secret.as_bytes().to_vec())
                },
            );
            match verified {
                Ok(_) => {}
                Err(VerifyError::Date)
                    if header(parts, "x-sdk-date")
                        .as_deref()
                        .and_then(signer::parse_sdk_date)
                        .is_some() =>
                {
                    return Err(api::SIGNATURE_EXPIRED);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "simulator rejected a signature");
                    return Err(api::BAD_SIGNATURE);
                }
            }
            let mut caller = Caller::default();
            if let Some(key) = &temp {
                let signed = parsed
                    .as_ref()
                    .is_some_and(|a| a.signed_headers.iter().any(|h| h == "x-security-token"));
                if let Err(problem) =
                    keyless::check_security_token(key, security_token.as_deref(), signed, now)
                {
                    seen.valid = Some(false);
                    self.token_rejections[problem as usize].fetch_add(1, Ordering::Relaxed);
                    return Err(match problem {
                        TokenProblem::Missing => api::SECURITY_TOKEN_MISSING,
                        TokenProblem::Unsigned => api::SECURITY_TOKEN_UNSIGNED,
                        TokenProblem::Mismatched => api::SECURITY_TOKEN_MISMATCH,
                        TokenProblem::Expired => {
                            let e = api::SECURITY_TOKEN_EXPIRED;
                            let msg = format!(
                                "{}, expires_at: {}",
                                e.message,
                                format_micros(key.expires_at)
                            );
                            e.with_message(msg)
                        }
                    });
                }
                seen.valid = Some(true);
                caller.temporary = true;
                if let (Some(project), Some(projects)) = (project, &key.projects)
                    && !projects.iter().any(|p| p == project)
                {
                    return Err(api::FORBIDDEN.with_message(
                        "The temporary access key of the agency may not act on the project in the path.",
                    ));
                }
            }
            if let Some(project) = project
                && header(parts, "x-project-id").is_some_and(|p| p != project)
            {
                return Err(api::FORBIDDEN
                    .with_message("X-Project-Id does not match the project in the path."));
            }
            return Ok(caller);
        }
        let Some(token) = header(parts, "x-auth-token") else {
            return Err(api::NO_AUTH);
        };
        let tokens = lock(&self.tokens);
        let t = tokens
            .get(token.trim())
            .filter(|t| t.expires_at > now)
            .ok_or(api::BAD_TOKEN)?;
        if let Some(project) = project
            && t.project_id.as_deref() != Some(project)
        {
            return Err(
                api::FORBIDDEN.with_message("The token is not scoped to the project in the path.")
            );
        }
        Ok(Caller::default())
    }

    /// The metadata session check of `securitykey`: a missing token is accepted only when
    /// the token route is unsupported; an unknown or expired one is a 401.
    fn check_metadata_session(&self, parts: &Parts, now: DateTime<Utc>) -> Result<(), Reply> {
        if self.keyless().metadata.mode == MetadataMode::TokenUnsupported {
            return Ok(());
        }
        let valid = header(parts, "x-metadata-token").is_some_and(|t| {
            lock(&self.sessions)
                .get(t.trim())
                .is_some_and(|exp| *exp > now)
        });
        // Never the no-agency text: a client renews its session on this one.
        unauthorized_unless(
            valid,
            "Unauthorized: X-Metadata-Token is missing, unknown or expired",
        )
    }

    /// The pod-identity check: `Authorization` must be the configured token.
    fn check_pod_token(&self, parts: &Parts) -> Result<(), Reply> {
        let token = self.keyless().pod_identity.token;
        let ok = header(parts, "authorization")
            .is_some_and(|a| keyless::constant_time_eq(a.trim().as_bytes(), token.as_bytes()));
        unauthorized_unless(
            ok,
            "Unauthorized: the Authorization header is not this pod's identity token",
        )
    }

    /// Logs a signed request (kept: the newest 100,000) with the status it was answered.
    fn record_signed(
        &self,
        parts: &Parts,
        op: Operation,
        arrived: DateTime<Utc>,
        status: u16,
        token: TokenSeen,
    ) {
        let Some(auth) = header(parts, "authorization")
            .as_deref()
            .and_then(signer::parse_authorization)
        else {
            return;
        };
        let mut log = lock(&self.signed);
        if log.len() >= 100_000 {
            log.pop_front();
        }
        log.push_back(super::SignedRecord {
            time: crate::clock::format_millis(arrived),
            access_key: auth.access,
            operation: op.as_str().to_owned(),
            http_status: status,
            temporary: token.temporary,
            security_token: token.security_token,
            security_token_valid: token.valid,
        });
    }

    /// The reply for an injected fault, whether the request is processed anyway, and the
    /// extra delay.
    fn injected_reply(
        &self,
        inj: Injected,
        shape: ErrorShape,
        request_id: &str,
    ) -> (Reply, bool, Option<Duration>) {
        match inj {
            Injected::Random(status) => {
                let mut e = api::default_for_status(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                );
                if status == 429 {
                    e.retry_after = Some(self.retry_after);
                }
                (Reply::error(&e, shape, request_id), false, None)
            }
            Injected::Scripted(f) => (self.scripted_reply(&f, shape, request_id), f.apply, f.delay),
        }
    }

    fn scripted_reply(&self, f: &ScriptedFault, shape: ErrorShape, request_id: &str) -> Reply {
        let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = f
            .retry_after
            .or((status == StatusCode::TOO_MANY_REQUESTS).then_some(self.retry_after));
        let mut reply = if let Some(body) = &f.body {
            Reply {
                status,
                body: body.clone().into_bytes(),
                headers: Vec::new(),
                code: f.error_code.clone(),
            }
        } else if f.error_code.is_none() && status.is_success() {
            Reply {
                status,
                body: Vec::new(),
                headers: Vec::new(),
                code: None,
            }
        } else {
            let mut e = api::default_for_status(status);
            if let Some(code) = &f.error_code {
                e.code = code.clone().into();
            }
            if let Some(msg) = &f.error_msg {
                e.message = msg.clone().into();
            }
            e.retry_after = None;
            Reply::error(&e, f.shape.unwrap_or(shape), request_id)
        };
        if let Some(d) = retry_after {
            reply.headers.retain(|(k, _)| *k != RETRY_AFTER);
            reply
                .headers
                .push((RETRY_AFTER, HeaderValue::from(retry_after_secs(d))));
        }
        reply
    }

    /// Runs one API request.
    async fn api(
        &self,
        route: &Route,
        parts: &Parts,
        body: Body,
        request_id: &str,
        arrived: tokio::time::Instant,
    ) -> Outcome {
        let op = route.op();
        self.count(op);
        let (latency, shape) = {
            let f = lock(&self.faults);
            (f.latency, f.error_shape)
        };
        if !latency.is_zero() {
            sleep_precisely(arrived + latency).await;
        }
        let mut out = Outcome {
            reply: Reply::error(&api::SYSTEM_ERROR, shape, request_id),
            status_after: None,
            body: Bytes::new(),
            token: TokenSeen::default(),
        };
        out.body = match read_body(body, API_BODY_LIMIT).await {
            Ok(b) => b,
            Err(e) => {
                out.reply = Reply::error(&e, shape, request_id);
                return out;
            }
        };
        let body = &out.body;
        let now = Utc::now();
        let caller = match route {
            Route::Token | Route::MetadataToken => Ok(Caller::default()),
            Route::MetadataSecurityKey => self
                .check_metadata_session(parts, now)
                .map(|()| Caller::default()),
            Route::PodIdentity => self.check_pod_token(parts).map(|()| Caller::default()),
            _ => self
                .authenticate(parts, body, route.project(), now, &mut out.token)
                .map_err(|e| Reply::error(&e, shape, request_id)),
        };
        let caller = match caller {
            Ok(c) => c,
            Err(reply) => {
                out.reply = reply;
                return out;
            }
        };
        let query = signer::parse_query(parts.uri.query().unwrap_or(""));
        let endpoint = (op == Operation::Action)
            .then(|| parse_action(body).ok().map(|(_, e)| e))
            .flatten();
        let injected = lock(&self.faults).take(op, &query, endpoint.as_deref());
        let mut replacement = None;
        if let Some(inj) = injected {
            let (reply, apply, delay) = self.injected_reply(inj, shape, request_id);
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            if !apply {
                out.reply = reply;
                return out;
            }
            replacement = Some(reply);
        }
        let (reply, status_after) = match self.process(route, parts, body, now, caller) {
            Ok((reply, status_after)) => (reply, status_after),
            Err(e) => (Reply::error(&e, shape, request_id), None),
        };
        out.reply = replacement.unwrap_or(reply);
        out.status_after = status_after;
        out
    }

    /// The operation itself, after authentication and faults.
    fn process(
        &self,
        route: &Route,
        parts: &Parts,
        body: &[u8],
        now: DateTime<Utc>,
        caller: Caller,
    ) -> Result<(Reply, Option<String>), ApiError> {
        let params = signer::parse_query(parts.uri.query().unwrap_or(""));
        let Some(project) = route.project() else {
            let reply = match route {
                Route::Token => self.issue_token(&params, body, now)?,
                Route::MetadataToken => self.metadata_token(parts, now),
                Route::MetadataSecurityKey => self.metadata_securitykey(now),
                Route::PodIdentity => self.pod_identity(body, now),
                Route::SecurityTokens => self.assume_role(body, now, caller)?,
                _ => return Err(api::NO_SUCH_API),
            };
            return Ok((reply, None));
        };
        let served = || {
            self.project_id.as_deref().is_none_or(|p| p == project)
                || self.keyless().agency_projects().any(|p| p == project)
        };
        if project.is_empty() || project.len() > 64 || !served() {
            return Err(api::INVALID_PROJECT);
        }
        match route {
            Route::ListServices { project } => {
                let q = ServiceQuery::parse(&params)?;
                let list = self.read().list_services(&q, project);
                Ok((Reply::json(StatusCode::OK, &list), None))
            }
            Route::ShowService { project, service } => {
                let s = self.read().show_service(service, project)?;
                Ok((Reply::json(StatusCode::OK, &s), None))
            }
            Route::ListConnections { project, service } => {
                let q = ConnQuery::parse(&params)?;
                let store = self.read();
                store.check_project(service, project)?;
                let list = store.list_connections(service, &q)?;
                Ok((Reply::json(StatusCode::OK, &list), None))
            }
            Route::Action { project, service } => {
                let json_body = header(parts, "content-type").is_some_and(|ct| {
                    ct.trim()
                        .to_ascii_lowercase()
                        .starts_with("application/json")
                });
                if !json_body {
                    return Err(
                        api::PARAMETER.with_message("Content-Type must be application/json.")
                    );
                }
                let (action, endpoint) = parse_action(body)?;
                let mut store = self.write();
                store.check_project(service, project)?;
                let conn = store.act(service, &endpoint, action, now)?;
                drop(store);
                let status_after = conn.status.clone();
                let resp = ActionResponse {
                    connections: Some(vec![conn]),
                };
                Ok((Reply::json(StatusCode::OK, &resp), status_after))
            }
            _ => Err(api::NO_SUCH_API),
        }
    }

    /// `PUT /meta-data/latest/api/token`: a session token valid for
    /// `X-Metadata-Token-Ttl-Seconds` seconds, as text.
    fn metadata_token(&self, parts: &Parts, now: DateTime<Utc>) -> Reply {
        let settings = self.keyless().metadata;
        if settings.mode == MetadataMode::TokenUnsupported {
            let status = StatusCode::from_u16(settings.token_unsupported_status)
                .unwrap_or(StatusCode::NOT_FOUND);
            return Reply::text(status, status.canonical_reason().unwrap_or(""));
        }
        let Some(ttl) =
            keyless::parse_ttl(header(parts, "x-metadata-token-ttl-seconds").as_deref())
        else {
            return Reply::text(
                StatusCode::BAD_REQUEST,
                format!(
                    "Bad Request: X-Metadata-Token-Ttl-Seconds must be whole seconds from {} to {}",
                    keyless::METADATA_TTL_RANGE.start(),
                    keyless::METADATA_TTL_RANGE.end()
                ),
            );
        };
        let token = keyless::session_token();
        let expires = now + chrono::Duration::seconds(i64::try_from(ttl).unwrap_or(i64::MAX));
        {
            let mut sessions = lock(&self.sessions);
            sessions.retain(|_, exp| *exp > now);
            if sessions.len() >= MAX_METADATA_SESSIONS {
                let mut times: Vec<DateTime<Utc>> = sessions.values().copied().collect();
                times.sort_unstable();
                let cut = times[times.len() / 4];
                sessions.retain(|_, exp| *exp > cut);
            }
            sessions.insert(token.clone(), expires);
        }
        Reply::text(StatusCode::OK, token)
    }

    /// `GET /openstack/latest/securitykey`, after the session check: temporary keys of
    /// the agency attached to the instance, or the no-agency answer.
    fn metadata_securitykey(&self, now: DateTime<Utc>) -> Reply {
        let settings = self.keyless();
        if settings.metadata.mode == MetadataMode::NoAgency {
            if settings.metadata.no_agency_status == 404 {
                return Reply::text(StatusCode::NOT_FOUND, "Not Found");
            }
            // The real body's shape is not documented; the SDKs look for the text in it.
            return Reply::json(
                StatusCode::UNAUTHORIZED,
                &json!({ "message": NO_AGENCY_TEXT }),
            );
        }
        let key = self.issue_key(KeySource::Metadata, settings.credential_lifetime, None, now);
        Reply::json(StatusCode::OK, &keyless::credential_body(&key))
    }

    /// The pod-identity `POST`, after the token check: the body must be a JSON object
    /// (the SDK sends `{}`).
    fn pod_identity(&self, body: &[u8], now: DateTime<Utc>) -> Reply {
        if !matches!(serde_json::from_slice::<Value>(body), Ok(Value::Object(_))) {
            return Reply::text(
                StatusCode::BAD_REQUEST,
                "Bad Request: the body must be a JSON object such as {}",
            );
        }
        let settings = self.keyless();
        let key = self.issue_key(
            KeySource::PodIdentity,
            settings.credential_lifetime,
            None,
            now,
        );
        Reply::json(
            StatusCode::OK,
            &keyless::pod_body(settings.pod_identity.body, &key),
        )
    }

    /// `POST /v3.0/OS-CREDENTIAL/securitytokens`, `assume_role`, after authentication.
    fn assume_role(
        &self,
        body: &[u8],
        now: DateTime<Utc>,
        caller: Caller,
    ) -> Result<Reply, ApiError> {
        let r = keyless::parse_assume_role(body).map_err(|e| match e {
            AssumeRoleError::Body(m) => api::IAM_BAD_BODY.with_message(m),
            AssumeRoleError::Duration(m) => api::IAM_BAD_DURATION.with_message(m),
        })?;
        if caller.temporary && r.duration_seconds > AGENCY_MAX_DURATION_FROM_TEMPORARY {
            return Err(api::IAM_BAD_DURATION.with_message(format!(
                "duration_seconds {} is more than {AGENCY_MAX_DURATION_FROM_TEMPORARY}, the most \
                 for a caller that signs with a temporary access key",
                r.duration_seconds
            )));
        }
        let settings = self.keyless();
        let agency = keyless::find_agency(&settings.agencies, &r).ok_or(api::IAM_NO_AGENCY)?;
        let lifetime = Duration::from_secs(r.duration_seconds).min(settings.credential_lifetime);
        let key = self.issue_key(
            KeySource::Agency,
            lifetime,
            Some(agency.project_ids.clone()),
            now,
        );
        Ok(Reply::json(
            StatusCode::CREATED,
            &keyless::credential_body(&key),
        ))
    }

    /// `POST /v3/auth/tokens`, password method.
    fn issue_token(
        &self,
        params: &[(String, String)],
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Reply, ApiError> {
        let v: Value = serde_json::from_slice(body).map_err(|_| api::IAM_BAD_BODY)?;
        let identity = &v["auth"]["identity"];
        let password_method = identity["methods"]
            .as_array()
            .is_some_and(|m| m.iter().any(|x| x == "password"));
        let user = &identity["password"]["user"];
        let (Some(name), Some(password), Some(domain)) = (
            user["name"].as_str(),
            user["password"].as_str(),
            user["domain"]["name"].as_str(),
        ) else {
            return Err(api::IAM_BAD_BODY);
        };
        if !password_method {
            return Err(api::IAM_BAD_BODY);
        }
        if !self
            .users
            .iter()
            .any(|u| u.user_name == name && u.domain_name == domain && u.password == password)
        {
            return Err(api::IAM_BAD_PASSWORD);
        }
        let scope = &v["auth"]["scope"]["project"];
        let project = match (scope["id"].as_str(), scope["name"].as_str()) {
            (Some(id), _) => {
                if id.is_empty() || self.project_id.as_deref().is_some_and(|p| p != id) {
                    return Err(api::IAM_BAD_PROJECT);
                }
                Some((id.to_owned(), "sim-region".to_owned()))
            }
            (None, Some(name)) if !name.is_empty() => {
                // A project name is a region name; without a configured project the id is
                // derived from it, so the same name always gives the same id.
                let id = self
                    .project_id
                    .clone()
                    .unwrap_or_else(|| signer::sha256_hex(name.as_bytes())[..32].to_owned());
                Some((id, name.to_owned()))
            }
            (None, Some(_)) => return Err(api::IAM_BAD_PROJECT),
            (None, None) => None,
        };
        let token: String = {
            let mut rng = rand::rng();
            let tail: String = (&mut rng)
                .sample_iter(rand::distr::Alphanumeric)
                .take(253)
                .map(char::from)
                .collect();
            format!("MII{tail}")
        };
        let expires_at = now
            .checked_add_signed(self.token_lifetime)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        {
            let mut tokens = lock(&self.tokens);
            tokens.retain(|_, t| t.expires_at > now);
            tokens.insert(
                token.clone(),
                Token {
                    project_id: project.as_ref().map(|(id, _)| id.clone()),
                    expires_at,
                },
            );
        }
        self.tokens_issued.fetch_add(1, Ordering::Relaxed);
        let mut t = json!({
            "expires_at": format_micros(expires_at),
            "issued_at": format_micros(now),
            "methods": ["password"],
            "user": {"name": name, "domain": {"name": domain}},
            "roles": [],
        });
        if let Some((id, pname)) = &project {
            t["project"] = json!({"id": id, "name": pname, "domain": {"name": domain}});
        }
        if !params.iter().any(|(k, _)| k == "nocatalog") {
            t["catalog"] = json!([]);
        }
        let mut reply = Reply::json(StatusCode::CREATED, &json!({ "token": t }));
        match HeaderValue::from_str(&token) {
            Ok(v) => reply.headers.push((SUBJECT_TOKEN, v)),
            Err(_) => return Err(api::SYSTEM_ERROR),
        }
        Ok(reply)
    }

    fn record_action(
        &self,
        route: &Route,
        body: &[u8],
        reply: &Reply,
        status_after: Option<String>,
        now: DateTime<Utc>,
        request_id: &str,
    ) {
        let Route::Action { service, .. } = route else {
            return;
        };
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let record = ActionRecord {
            time: crate::clock::format_millis(now),
            request_id: request_id.to_owned(),
            service_id: service.clone(),
            endpoint_id: v["endpoints"][0].as_str().map(str::to_owned),
            action: v["action"].as_str().map(str::to_owned),
            http_status: reply.status.as_u16(),
            error_code: reply.code.clone(),
            status_after,
        };
        lock(&self.actions).push(record);
    }

    async fn admin(&self, parts: &Parts, body: Body) -> Reply {
        let body = match read_body(body, ADMIN_BODY_LIMIT).await {
            Ok(b) => b,
            Err(_) => return Reply::admin_error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
        };
        let path = parts.uri.path();
        let path = path.strip_suffix('/').unwrap_or(path);
        match (&parts.method, path) {
            (&Method::GET, "/_sim/state") => Reply::json(StatusCode::OK, &self.snapshot()),
            (&Method::GET, "/_sim/faults") => {
                Reply::json(StatusCode::OK, &lock(&self.faults).get())
            }
            (&Method::POST, "/_sim/faults") => match serde_json::from_slice::<Faults>(&body) {
                Ok(f) => {
                    lock(&self.faults).set(f);
                    Reply::json(StatusCode::OK, &lock(&self.faults).get())
                }
                Err(e) => {
                    Reply::admin_error(StatusCode::BAD_REQUEST, format!("invalid faults: {e}"))
                }
            },
            (&Method::POST, "/_sim/connections") => {
                match serde_json::from_slice::<AddRequest>(&body) {
                    Ok(req) => {
                        let (service_id, conns) = req.into_parts();
                        match self.add_connections(&service_id, &conns) {
                            Ok(added) => {
                                Reply::json(StatusCode::CREATED, &json!({ "connections": added }))
                            }
                            Err(e @ SimError::UnknownService(_)) => {
                                Reply::admin_error(StatusCode::NOT_FOUND, e.to_string())
                            }
                            Err(e) => Reply::admin_error(StatusCode::BAD_REQUEST, e.to_string()),
                        }
                    }
                    Err(e) => Reply::admin_error(
                        StatusCode::BAD_REQUEST,
                        format!("invalid connections: {e}"),
                    ),
                }
            }
            (&Method::POST, "/_sim/status") => match serde_json::from_slice::<StatusRequest>(&body)
            {
                Ok(r) => match self
                    .write()
                    .set_status(&r.endpoint_id, &r.status, Utc::now())
                {
                    Some(c) => Reply::json(StatusCode::OK, &json!({ "connection": c })),
                    None => Reply::admin_error(
                        StatusCode::NOT_FOUND,
                        format!("unknown endpoint {}", r.endpoint_id),
                    ),
                },
                Err(e) => Reply::admin_error(
                    StatusCode::BAD_REQUEST,
                    format!("invalid status request: {e}"),
                ),
            },
            (&Method::POST, "/_sim/credentials") => {
                match serde_json::from_slice::<HashMap<String, String>>(&body) {
                    Ok(keys) => {
                        let n = keys.len();
                        *self
                            .credentials
                            .write()
                            .unwrap_or_else(PoisonError::into_inner) = keys;
                        Reply::json(StatusCode::OK, &json!({ "access_keys": n }))
                    }
                    Err(e) => Reply::admin_error(
                        StatusCode::BAD_REQUEST,
                        format!("invalid credentials: {e}"),
                    ),
                }
            }
            (&Method::POST, "/_sim/tokens/expire") => {
                Reply::json(StatusCode::OK, &json!({ "expired": self.expire_tokens() }))
            }
            (&Method::GET, "/_sim/keyless") => Reply::json(StatusCode::OK, &self.keyless().view()),
            (&Method::POST, "/_sim/keyless") => {
                match serde_json::from_slice::<KeylessUpdate>(&body) {
                    Ok(u) => match self.update_keyless(u) {
                        Ok(s) => Reply::json(StatusCode::OK, &s.view()),
                        Err(e) => Reply::admin_error(
                            StatusCode::BAD_REQUEST,
                            format!("invalid keyless settings: {e}"),
                        ),
                    },
                    Err(e) => Reply::admin_error(
                        StatusCode::BAD_REQUEST,
                        format!("invalid keyless settings: {e}"),
                    ),
                }
            }
            (&Method::POST, "/_sim/keyless/expire-keys") => Reply::json(
                StatusCode::OK,
                &json!({ "expired": self.expire_temporary_keys() }),
            ),
            (&Method::POST, "/_sim/keyless/expire-sessions") => Reply::json(
                StatusCode::OK,
                &json!({ "expired": self.expire_sessions() }),
            ),
            _ => Reply::admin_error(
                StatusCode::NOT_FOUND,
                format!("no admin route {} {path}", parts.method),
            ),
        }
    }

    /// The pod-identity route, on the path configured now (a single trailing `/`
    /// tolerated).
    fn pod_identity_route(&self, method: &Method, path: &str) -> Option<Route> {
        let configured = self.keyless().pod_identity.path;
        let trim = |p: &str| p.strip_suffix('/').unwrap_or(p).to_owned();
        (*method == Method::POST && trim(path) == trim(&configured)).then_some(Route::PodIdentity)
    }

    fn add_connections(
        &self,
        service_id: &str,
        conns: &[SeedConnection],
    ) -> Result<Vec<WireConnection>, SimError> {
        self.write()
            .add_connections(service_id, conns, Utc::now())
            .map_err(|e| match e {
                AddError::UnknownService(s) => SimError::UnknownService(s),
                AddError::Invalid(reason) => SimError::InvalidConnection {
                    service_id: service_id.to_owned(),
                    reason,
                },
            })
    }
}

/// Reads an action body: bad JSON or missing fields → `EndPoint.0002`, unknown action →
/// `EndPoint.0007`, not exactly one endpoint → `EndPoint.2031`.
fn parse_action(body: &[u8]) -> Result<(Action, String), ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| api::PARAMETER)?;
    let action = v
        .get("action")
        .and_then(Value::as_str)
        .ok_or(api::PARAMETER)?;
    let endpoints = v
        .get("endpoints")
        .and_then(Value::as_array)
        .ok_or(api::PARAMETER)?;
    let action = Action::parse(action).ok_or(api::INVALID_ACTION)?;
    let [endpoint] = endpoints.as_slice() else {
        return Err(api::ONE_ENDPOINT);
    };
    let endpoint = endpoint.as_str().ok_or(api::INVALID_ENDPOINT_ID)?;
    Ok((action, endpoint.to_owned()))
}

/// `POST /_sim/connections` body: a batch, or one connection with its service id.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AddRequest {
    Batch {
        service_id: String,
        connections: Vec<SeedConnection>,
    },
    One {
        service_id: String,
        #[serde(flatten)]
        connection: SeedConnection,
    },
}

impl AddRequest {
    fn into_parts(self) -> (String, Vec<SeedConnection>) {
        match self {
            AddRequest::Batch {
                service_id,
                connections,
            } => (service_id, connections),
            AddRequest::One {
                service_id,
                connection,
            } => (service_id, vec![connection]),
        }
    }
}

/// `POST /_sim/status` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusRequest {
    endpoint_id: String,
    status: String,
}

/// Sleeps until `deadline`, to within a fraction of a millisecond. The simulated latency is
/// the time from a request's arrival to its answer, and the benchmarks hold the daemon to
/// `requests × latency / in-flight`: a simulator that answered late would be charged to
/// the daemon. tokio's timer rounds a deadline up to the next millisecond and the driver
/// may wake later still, so the last stretch is slept on a blocking thread.
async fn sleep_precisely(deadline: tokio::time::Instant) {
    const COARSE: Duration = Duration::from_millis(2);
    if let Some(early) = deadline.checked_sub(COARSE) {
        tokio::time::sleep_until(early).await;
    }
    let rest = deadline.saturating_duration_since(tokio::time::Instant::now());
    if !rest.is_zero() {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
    }
}

async fn dispatch(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let started = tokio::time::Instant::now();
    let arrived = Utc::now();
    let request_id = uuid::Uuid::now_v7().simple().to_string();
    let (parts, body) = req.into_parts();
    let reply = if parts.uri.path().starts_with("/_sim/") {
        sh.admin(&parts, body).await
    } else if let Some(route) = Route::parse(&parts.method, parts.uri.path())
        .or_else(|| sh.pod_identity_route(&parts.method, parts.uri.path()))
    {
        let out = sh.api(&route, &parts, body, &request_id, started).await;
        if matches!(route, Route::Action { .. }) {
            sh.record_action(
                &route,
                &out.body,
                &out.reply,
                out.status_after,
                Utc::now(),
                &request_id,
            );
        }
        if route.takes_signatures() {
            sh.record_signed(
                &parts,
                route.op(),
                arrived,
                out.reply.status.as_u16(),
                out.token,
            );
        }
        out.reply
    } else {
        Reply::error(&api::NO_SUCH_API, ErrorShape::Flat, &request_id)
    };
    tracing::debug!(
        method = %parts.method,
        path = parts.uri.path(),
        http_status = reply.status.as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "simulator request"
    );
    reply.into_response(&request_id)
}

/// A running simulator. Dropping it stops the server too (without waiting).
pub struct Simulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// A 401 with `message`, unless the caller passed the check.
fn unauthorized_unless(passed: bool, message: &'static str) -> Result<(), Reply> {
    if passed {
        Ok(())
    } else {
        Err(Reply::text(StatusCode::UNAUTHORIZED, message))
    }
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Binds `addr` (port 0 picks a free port) and serves in a background task.
    pub async fn start(addr: SocketAddr, cfg: SimConfig) -> Result<Simulator, SimError> {
        cfg.keyless()
            .validate()
            .map_err(SimError::InvalidSettings)?;
        let store =
            Store::from_seed(&cfg.seed, Utc::now()).map_err(|reason| SimError::InvalidSeed {
                origin: "in the simulator config".into(),
                reason,
            })?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| SimError::Bind { addr, source })?;
        let connections = store.connection_count();
        let shared = Arc::new(Shared::new(&cfg, store));
        let app = Router::new()
            .fallback(dispatch)
            .with_state(Arc::clone(&shared));
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        // Small answers on keep-alive connections: no Nagle delay.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "simulator could not set TCP_NODELAY");
            }
        });
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "simulator server failed");
            }
        });
        tracing::info!(addr = %bound, services = cfg.seed.services.len(), connections, "simulator listening");
        Ok(Simulator {
            addr: bound,
            shared,
            cancel,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`; an unspecified bind address (`0.0.0.0`, `::`) is given as loopback.
    pub fn base_url(&self) -> String {
        let mut a = self.addr;
        if a.ip().is_unspecified() {
            a.set_ip(if a.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        format!("http://{a}")
    }

    /// A copy of services, connections, every action received and request counts.
    pub fn state(&self) -> SimSnapshot {
        self.shared.snapshot()
    }

    /// One connection's current state, without copying everything.
    pub fn connection(&self, endpoint_id: &str) -> Option<SnapConnection> {
        self.shared.read().connection(endpoint_id)
    }

    /// Every request received on the action route so far.
    pub fn actions(&self) -> Vec<ActionRecord> {
        lock(&self.shared.actions).clone()
    }

    /// Adds connections to a service (all or none; defaults as in the seed). Returns them
    /// as the API shows them, with their ids.
    pub fn add_connections(
        &self,
        service_id: &str,
        conns: Vec<SeedConnection>,
    ) -> Result<Vec<WireConnection>, SimError> {
        self.shared.add_connections(service_id, &conns)
    }

    /// Replaces all fault settings and the script.
    pub fn set_faults(&self, f: Faults) {
        lock(&self.shared.faults).set(f);
    }

    /// Appends one scripted answer, keeping the other settings.
    pub fn push_fault(&self, f: ScriptedFault) {
        lock(&self.shared.faults).push(f);
    }

    /// The current fault settings and the rest of the script.
    pub fn faults(&self) -> Faults {
        lock(&self.shared.faults).get()
    }

    /// Sets a connection's status directly, like another instance or a person deciding.
    /// Any string is accepted (to test unknown statuses). False if the endpoint is unknown.
    pub fn set_status(&self, endpoint_id: &str, status: &str) -> bool {
        self.shared
            .write()
            .set_status(endpoint_id, status, Utc::now())
            .is_some()
    }

    /// Makes every issued token expired; returns how many there were.
    pub fn expire_tokens(&self) -> usize {
        self.shared.expire_tokens()
    }

    /// Replaces the known access keys: every other key is revoked from now on.
    pub fn set_credentials(&self, keys: &[(&str, &str)]) {
        *self
            .shared
            .credentials
            .write()
            .unwrap_or_else(PoisonError::into_inner) = keys
            .iter()
            .map(|(a, s)| ((*a).to_owned(), (*s).to_owned()))
            .collect();
    }

    /// The keyless settings in force.
    pub fn keyless(&self) -> KeylessSettings {
        self.shared.keyless()
    }

    /// Replaces the keyless settings (validated first; nothing changes on error). Keys
    /// and sessions already issued stay valid; an agency key keeps the projects it was
    /// issued for.
    pub fn set_keyless(&self, s: KeylessSettings) -> Result<(), SimError> {
        self.shared.set_keyless(s)
    }

    /// Rotates the pod-identity token: only `token` is accepted from now on.
    pub fn set_pod_token(&self, token: &str) -> Result<(), SimError> {
        let mut s = self.keyless();
        s.pod_identity.token = token.to_owned();
        self.set_keyless(s)
    }

    /// Makes every issued temporary key expired; returns how many there are.
    pub fn expire_temporary_keys(&self) -> usize {
        self.shared.expire_temporary_keys()
    }

    /// Makes every metadata session token expired; returns how many there are.
    pub fn expire_metadata_sessions(&self) -> usize {
        self.shared.expire_sessions()
    }

    /// Stops accepting, lets open requests finish (at most 5 s), then returns.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let p = |m: &Method, s: &str| Route::parse(m, s);
        assert_eq!(p(&Method::POST, "/v3/auth/tokens"), Some(Route::Token));
        assert_eq!(
            p(&Method::GET, "/v1/p/vpc-endpoint-services/"),
            Some(Route::ListServices {
                project: "p".into()
            })
        );
        assert_eq!(
            p(
                &Method::GET,
                "/v1/p/vpc-endpoint-services/s%20x/connections"
            ),
            Some(Route::ListConnections {
                project: "p".into(),
                service: "s x".into()
            })
        );
        assert!(matches!(
            p(
                &Method::POST,
                "/v1/p/vpc-endpoint-services/s/connections/action"
            ),
            Some(Route::Action { .. })
        ));
        assert_eq!(
            p(
                &Method::GET,
                "/v1/p/vpc-endpoint-services/s/connections/action"
            ),
            None
        );
        assert_eq!(p(&Method::DELETE, "/v1/p/vpc-endpoint-services/s"), None);
        assert_eq!(p(&Method::GET, "/v2/p/vpc-endpoint-services"), None);
        assert_eq!(
            p(&Method::POST, "/v3.0/OS-CREDENTIAL/securitytokens"),
            Some(Route::SecurityTokens)
        );
        assert_eq!(
            p(&Method::PUT, "/meta-data/latest/api/token"),
            Some(Route::MetadataToken)
        );
        assert_eq!(p(&Method::GET, "/meta-data/latest/api/token"), None);
        assert_eq!(
            p(&Method::GET, "/openstack/latest/securitykey"),
            Some(Route::MetadataSecurityKey)
        );
        assert_eq!(p(&Method::POST, "/openstack/latest/securitykey"), None);
        assert!(Route::SecurityTokens.takes_signatures());
        assert!(!Route::Token.takes_signatures());
        assert!(!Route::PodIdentity.takes_signatures());
    }

    #[test]
    fn action_bodies() {
        let code = |b: &str| parse_action(b.as_bytes()).expect_err("error").code;
        assert_eq!(code("{"), "EndPoint.0002");
        assert_eq!(code(r#"{"endpoints":["a"]}"#), "EndPoint.0002");
        assert_eq!(
            code(r#"{"action":"accept","endpoints":["a"]}"#),
            "EndPoint.0007"
        );
        assert_eq!(
            code(r#"{"action":"Receive","endpoints":["a"]}"#),
            "EndPoint.0007"
        );
        assert_eq!(
            code(r#"{"action":"receive","endpoints":[]}"#),
            "EndPoint.2031"
        );
        assert_eq!(
            code(r#"{"action":"receive","endpoints":["a","b"]}"#),
            "EndPoint.2031"
        );
        assert_eq!(
            code(r#"{"action":"receive","endpoints":[1]}"#),
            "EndPoint.2017"
        );
        let (a, e) =
            parse_action(br#"{"action": "reject", "endpoints": ["x"]}"#).expect("spaced body");
        assert_eq!((a, e.as_str()), (Action::Reject, "x"));
    }

    #[test]
    fn time_formats() {
        let t = DateTime::parse_from_rfc3339("2020-01-04T09:08:49.965Z")
            .expect("t")
            .with_timezone(&Utc);
        assert_eq!(format_micros(t), "2020-01-04T09:08:49.965000Z");
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 0);
    }

    #[test]
    fn add_request_forms() {
        let r: AddRequest =
            serde_json::from_str(r#"{"service_id":"s","connections":[{"id":"a"},{}]}"#)
                .expect("batch");
        assert_eq!(r.into_parts().1.len(), 2);
        let r: AddRequest =
            serde_json::from_str(r#"{"service_id":"s","id":"a","domain_id":"d"}"#).expect("one");
        let (s, c) = r.into_parts();
        assert_eq!((s.as_str(), c[0].domain_id.as_deref()), ("s", Some("d")));
    }
}
