//! The built-in VPCEP + IAM simulator (README "Simulator"), used by `simulate`, `demo`, the
//! integration tests and the benchmarks. It behaves like the real API as documented in
//! the documented API (docs/design.md, "The API as the daemon uses it"):
//!
//! | route | notes |
//! |---|---|
//! | `GET /v1/{project}/vpc-endpoint-services` | filters `id`, `status`, `endpoint_service_name` (case-insensitive substring); `limit` 1–1000 (default 10), `offset` ≥ 0; `sort_key` `create_at`/`update_at`, `sort_dir` `desc` (default)/`asc`; `total_count` ignores paging |
//! | `GET /v1/{project}/vpc-endpoint-services/{id}` | one service, 404 `EndPoint.0005` if unknown |
//! | `GET …/{service}/connections` | filters `id`, `status`, `marker_id`; paging and sorting as above, by creation time by default |
//! | `POST …/{service}/connections/action` | `{"action":"receive"\|"reject","endpoints":[one id]}` → 200 `{"connections":[…]}` |
//! | `POST /v3/auth/tokens` | password method, project scope by id or name → 201, token in `X-Subject-Token` |
//! | `PUT /meta-data/latest/api/token` | ECS metadata session token for `X-Metadata-Token-Ttl-Seconds` (1–21600) seconds → 200, the token as text |
//! | `GET /openstack/latest/securitykey` | with `X-Metadata-Token` → 200 `{"credential":{…}}` (temporary keys) |
//! | `POST` [`PodIdentitySettings::path`] | CCE pod identity: `Authorization: <token>`, body `{}` → 200, credential body in [`PodBody`] spelling |
//! | `POST /v3.0/OS-CREDENTIAL/securitytokens` | `assume_role` of a configured [`SimAgency`], signed or with a token → 201 `{"credential":{…}}` |
//!
//! Every `/v1` request must carry a valid `SDK-HMAC-SHA256` signature by a known access
//! key (15 minutes of clock skew) or an unexpired `X-Auth-Token` issued by the simulator;
//! otherwise 401 `APIGW.0301` (`APIGW.0303` for an expired `X-Sdk-Date`). The known keys
//! are the permanent ones ([`SimConfig::credentials`], which ignore any
//! `X-Security-Token`) and the temporary ones the credential routes issued, which count
//! only with their own signed `X-Security-Token` and before their `expires_at` (401
//! `APIGW.0301` otherwise, counted in [`SimSnapshot::security_token_rejections`]); a key
//! from an agency acts only on that agency's projects. A token, `X-Project-Id` or agency
//! key for another project than the path's gets 403 `EndPoint.0004`. When
//! [`SimConfig::project_id`] is set, any other project in the path (but the agencies'
//! projects) gets 400 `EndPoint.0014` "Invalid project ID" (the real answer is
//! UNVERIFIED; this is the documented code for it). Unknown routes get the gateway's 404
//! `APIGW.0101`. Request bodies are capped (1 MiB on the API, 32 MiB on `/_sim/`), with
//! 413 above. Every response carries `X-Request-Id`.
//!
//! Admin routes, without authentication:
//! - `GET /_sim/state`: the [`SimSnapshot`] as JSON.
//! - `POST /_sim/connections`: `{"service_id":"…","connections":[SeedConnection…]}` or one
//!   connection `{"service_id":"…","id":…,"domain_id":…}` → 201 `{"connections":[…]}`.
//! - `GET`/`POST /_sim/faults`: read or replace the [`Faults`] (JSON, durations as
//!   humantime strings).
//! - `POST /_sim/status`: `{"endpoint_id":"…","status":"accepted"}` → 200
//!   `{"connection":{…}}`, 404 if unknown.
//! - `POST /_sim/tokens/expire` → 200 `{"expired":N}`.
//! - `POST /_sim/credentials`: `{"AK":"SK",…}` replaces the known permanent access keys
//!   (revokes the others; temporary keys stay) → 200 `{"access_keys":N}`.
//! - `GET /_sim/keyless`: the [`KeylessSettings`] (without the pod-identity token).
//! - `POST /_sim/keyless`: any subset of `{"credential_lifetime":"30s","metadata":{"mode":
//!   "normal"|"token_unsupported"|"no_agency","token_unsupported_status":404|405|503,
//!   "no_agency_status":401|404},"pod_identity":{"path":…,"token":…,"body":"credential"|
//!   "credentials_snake_case"|"credentials_camel_case"},"agencies":[SimAgency…]}` → 200 and
//!   the settings, or 400 changing nothing.
//! - `POST /_sim/keyless/expire-keys` → 200 `{"expired":N}`: every issued temporary key
//!   expires now.
//! - `POST /_sim/keyless/expire-sessions` → 200 `{"expired":N}`: every metadata session
//!   token expires now.
//!
//! Admin errors are `{"error":"…"}` with 400 or 404.

mod api;
mod faults;
mod keyless;
mod seed;
mod server;
mod store;

pub use faults::{ErrorShape, Faults, Operation, ScriptedFault};
pub use keyless::{
    AGENCY_DURATION_RANGE, AGENCY_MAX_DURATION_FROM_TEMPORARY, DEFAULT_AGENCY_DOMAIN_ID,
    DEFAULT_AGENCY_DOMAIN_NAME, DEFAULT_AGENCY_NAME, DEFAULT_AGENCY_PROJECT_ID,
    DEFAULT_POD_IDENTITY_PATH, DEFAULT_POD_TOKEN, KeylessSettings, METADATA_TTL_RANGE,
    MetadataMode, MetadataSettings, NO_AGENCY_TEXT, PodBody, PodIdentitySettings, SimAgency,
};
pub use seed::{Seed, SeedConnection, SeedService};
pub use server::Simulator;
pub use store::{SnapConnection, SnapService};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Access key the simulator knows when none is configured.
pub const DEFAULT_AK: &str = "SIMACCESSKEYEXAMPLE";
/// Secret key of [`DEFAULT_AK`].
pub const DEFAULT_SK: &str = "SIMSECRETKEYEXAMPLE0123456789";
/// Account (domain) name of the default IAM user.
pub const DEFAULT_DOMAIN: &str = "sim-domain";
/// User name of the default IAM user.
pub const DEFAULT_USER: &str = "sim-user";
/// Password of the default IAM user.
pub const DEFAULT_PASSWORD: &str = "sim-password";

/// An IAM user that may get tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct SimUser {
    /// Account (domain) name.
    pub domain_name: String,
    /// IAM user name.
    pub user_name: String,
    /// Password.
    pub password: String,
}

impl SimUser {
    /// A user.
    pub fn new(domain_name: &str, user_name: &str, password: &str) -> Self {
        SimUser {
            domain_name: domain_name.to_owned(),
            user_name: user_name.to_owned(),
            password: password.to_owned(),
        }
    }
}

impl fmt::Debug for SimUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimUser")
            .field("domain_name", &self.domain_name)
            .field("user_name", &self.user_name)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Everything the simulator starts with.
#[derive(Clone)]
pub struct SimConfig {
    /// Services and connections.
    pub seed: Seed,
    /// Sleep before answering each API request.
    pub latency: Duration,
    /// Probability (0–1) of a random 429/500/503 on a `/v1` request.
    pub fault_rate: f64,
    /// Known access keys and their secret keys.
    pub credentials: Vec<(String, String)>,
    /// IAM users that may get tokens.
    pub users: Vec<SimUser>,
    /// The only project served; `None` answers for any project id.
    pub project_id: Option<String>,
    /// Validity of issued tokens (the real one is 24 h).
    pub token_lifetime: Duration,
    /// `Retry-After` on injected 429s.
    pub retry_after: Duration,
    /// Lifetime of the temporary keys the metadata and pod-identity routes issue, and the
    /// cap on an agency's `duration_seconds` (short ones make keys that expire in seconds).
    pub credential_lifetime: Duration,
    /// The ECS metadata service.
    pub metadata: MetadataSettings,
    /// The CCE pod-identity route.
    pub pod_identity: PodIdentitySettings,
    /// The agencies `assume_role` may name.
    pub agencies: Vec<SimAgency>,
}

impl SimConfig {
    /// The keyless settings, as [`Simulator::keyless`] reports them.
    pub fn keyless(&self) -> KeylessSettings {
        KeylessSettings {
            credential_lifetime: self.credential_lifetime,
            metadata: self.metadata.clone(),
            pod_identity: self.pod_identity.clone(),
            agencies: self.agencies.clone(),
        }
    }
}

impl Default for SimConfig {
    /// Empty seed, no faults, [`DEFAULT_AK`]/[`DEFAULT_SK`], the default user, any project,
    /// 24 h tokens, `Retry-After: 1`; the keyless defaults of [`KeylessSettings::default`]
    /// (24 h temporary keys, the metadata service normal, pod identity on
    /// [`DEFAULT_POD_IDENTITY_PATH`] with [`DEFAULT_POD_TOKEN`], the example agency).
    fn default() -> Self {
        let keyless = KeylessSettings::default();
        SimConfig {
            seed: Seed::default(),
            latency: Duration::ZERO,
            fault_rate: 0.0,
            credentials: vec![(DEFAULT_AK.to_owned(), DEFAULT_SK.to_owned())],
            users: vec![SimUser::new(DEFAULT_DOMAIN, DEFAULT_USER, DEFAULT_PASSWORD)],
            project_id: None,
            token_lifetime: Duration::from_secs(24 * 3600),
            retry_after: Duration::from_secs(1),
            credential_lifetime: keyless.credential_lifetime,
            metadata: keyless.metadata,
            pod_identity: keyless.pod_identity,
            agencies: keyless.agencies,
        }
    }
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let aks: Vec<&str> = self.credentials.iter().map(|(ak, _)| ak.as_str()).collect();
        f.debug_struct("SimConfig")
            .field("services", &self.seed.services.len())
            .field("connections", &self.seed.connection_count())
            .field("latency", &self.latency)
            .field("fault_rate", &self.fault_rate)
            .field("access_keys", &aks)
            .field("users", &self.users)
            .field("project_id", &self.project_id)
            .field("token_lifetime", &self.token_lifetime)
            .field("retry_after", &self.retry_after)
            .field("credential_lifetime", &self.credential_lifetime)
            .field("metadata", &self.metadata)
            .field("pod_identity", &self.pod_identity)
            .field("agencies", &self.agencies)
            .finish()
    }
}

/// One request received on the action route, whatever its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// When it was received, RFC 3339 with milliseconds.
    pub time: String,
    /// The `X-Request-Id` of the answer.
    pub request_id: String,
    /// Service id from the path.
    pub service_id: String,
    /// First endpoint id of the body, if it could be read.
    pub endpoint_id: Option<String>,
    /// `action` of the body, if it could be read.
    pub action: Option<String>,
    /// HTTP status answered.
    pub http_status: u16,
    /// Error code answered, if any.
    pub error_code: Option<String>,
    /// Connection status after the request, when it changed state.
    pub status_after: Option<String>,
}

/// One `/v1` request signed with `SDK-HMAC-SHA256`, whatever its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRecord {
    /// When it arrived, RFC 3339 with milliseconds.
    pub time: String,
    /// `Access=` of its `Authorization` header.
    pub access_key: String,
    /// The operation (`list_services`, `list_connections`, `action`, …).
    pub operation: String,
    /// HTTP status answered (401 for a signature that did not verify).
    pub http_status: u16,
    /// The access key is a temporary one that a credential route issued.
    #[serde(default)]
    pub temporary: bool,
    /// The request carried `X-Security-Token`.
    #[serde(default)]
    pub security_token: bool,
    /// For a temporary key whose signature verified: whether its security token was
    /// valid (present, signed, its own, the key unexpired). `None` otherwise (a permanent
    /// key's token is ignored).
    #[serde(default)]
    pub security_token_valid: Option<bool>,
}

/// Temporary keys issued, per route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IssuedKeys {
    /// By `GET /openstack/latest/securitykey`.
    pub metadata: u64,
    /// By the pod-identity route.
    pub pod_identity: u64,
    /// By `POST /v3.0/OS-CREDENTIAL/securitytokens`.
    pub agency: u64,
}

/// Signed requests by temporary keys refused for their security token, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenRejections {
    /// Without `X-Security-Token`.
    pub missing: u64,
    /// With `X-Security-Token` not in `SignedHeaders`.
    pub unsigned: u64,
    /// With another key's or a garbled token.
    pub mismatched: u64,
    /// With the right token after the key's `expires_at`.
    pub expired: u64,
}

impl TokenRejections {
    /// All refusals together.
    pub fn total(&self) -> u64 {
        self.missing + self.unsigned + self.mismatched + self.expired
    }
}

/// A copy of the simulator's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimSnapshot {
    /// Every service with every connection and its current status.
    pub services: Vec<SnapService>,
    /// Every request to the action route, oldest first.
    pub actions: Vec<ActionRecord>,
    /// API requests received per operation (`list_services`, `show_service`,
    /// `list_connections`, `action`, `token`, and the credential routes
    /// `metadata_token`, `metadata_securitykey`, `pod_identity`, `securitytokens`), counted
    /// before authentication.
    pub requests: BTreeMap<String, u64>,
    /// Tokens issued so far.
    pub tokens_issued: u64,
    /// Every signed request (the newest 100,000), oldest first.
    #[serde(default)]
    pub signed: Vec<SignedRecord>,
    /// Temporary keys issued, per route.
    #[serde(default)]
    pub temporary_keys_issued: IssuedKeys,
    /// Signed requests by temporary keys refused for their security token.
    #[serde(default)]
    pub security_token_rejections: TokenRejections,
}

impl SimSnapshot {
    /// A connection by endpoint id.
    pub fn connection(&self, endpoint_id: &str) -> Option<&SnapConnection> {
        self.services
            .iter()
            .flat_map(|s| &s.connections)
            .find(|c| c.id == endpoint_id)
    }

    /// A service by id.
    pub fn service(&self, service_id: &str) -> Option<&SnapService> {
        self.services.iter().find(|s| s.id == service_id)
    }

    /// Requests received for one operation.
    pub fn request_count(&self, op: Operation) -> u64 {
        self.requests.get(op.as_str()).copied().unwrap_or(0)
    }

    /// Signed requests by temporary keys (whatever their outcome).
    pub fn temporary_key_requests(&self) -> usize {
        self.signed.iter().filter(|r| r.temporary).count()
    }

    /// Signed requests with `access_key` that were answered 401 (failed signatures).
    pub fn failed_signatures(&self, access_key: &str) -> usize {
        self.signed
            .iter()
            .filter(|r| r.access_key == access_key && r.http_status == 401)
            .count()
    }
}

/// Simulator errors.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The seed file could not be read.
    #[error("failed to read seed file {}", path.display())]
    ReadSeed {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The seed is not valid JSON of the seed format.
    #[error("failed to parse seed {path}")]
    ParseSeed {
        /// The file, or `<inline seed>`.
        path: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The seed parsed but is inconsistent.
    #[error("invalid seed {origin}: {reason}")]
    InvalidSeed {
        /// The file, or `<inline seed>`.
        origin: String,
        /// What is wrong, naming the element.
        reason: String,
    },
    /// The listen address could not be bound.
    #[error("failed to bind the simulator to {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No service with this id.
    #[error("unknown endpoint service {0}")]
    UnknownService(String),
    /// A keyless setting is invalid.
    #[error("invalid simulator settings: {0}")]
    InvalidSettings(String),
    /// A connection to add is invalid.
    #[error("invalid connection for service {service_id}: {reason}")]
    InvalidConnection {
        /// The service.
        service_id: String,
        /// What is wrong, naming the element.
        reason: String,
    },
}

/// The `simulate` command: serves until SIGINT or SIGTERM. Prints exactly
/// `listening on http://ADDR` (the bound address) to stdout once ready.
pub async fn run_simulate(listen: SocketAddr, cfg: SimConfig) -> anyhow::Result<()> {
    let sim = Simulator::start(listen, cfg)
        .await
        .with_context(|| format!("starting the simulator on {listen}"))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{}", sim.addr()).context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
    }
    wait_for_stop_signal().await?;
    tracing::info!("simulator stopping");
    sim.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_stop_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let cfg = SimConfig::default();
        let s = format!("{cfg:?}");
        assert!(s.contains(DEFAULT_AK));
        assert!(!s.contains(DEFAULT_SK));
        assert!(!s.contains(DEFAULT_PASSWORD));
        assert!(!s.contains(DEFAULT_POD_TOKEN));
        assert!(s.contains(DEFAULT_AGENCY_NAME));
    }

    #[test]
    fn defaults_make_every_credential_route_work() {
        let cfg = SimConfig::default();
        assert_eq!(cfg.keyless(), KeylessSettings::default());
        assert_eq!(cfg.keyless().validate(), Ok(()));
        assert_eq!(cfg.pod_identity.token, DEFAULT_POD_TOKEN);
        assert_eq!(cfg.agencies, [SimAgency::example()]);
    }

    #[test]
    fn snapshot_round_trips_through_json() {
        let snap = SimSnapshot {
            services: vec![SnapService {
                id: "s".into(),
                service_name: "n".into(),
                approval_enabled: true,
                status: "available".into(),
                project_id: None,
                connections: vec![SnapConnection {
                    id: "e".into(),
                    domain_id: "d".into(),
                    description: String::new(),
                    marker_id: 422_321_321_312_321_321,
                    status: "accepted".into(),
                    created_at: "2026-01-01T00:00:00Z".into(),
                    updated_at: "2026-01-01T00:00:00Z".into(),
                }],
            }],
            actions: vec![],
            requests: BTreeMap::new(),
            tokens_issued: 0,
            signed: vec![SignedRecord {
                time: "2026-01-01T00:00:00.000Z".into(),
                access_key: "AK".into(),
                operation: "action".into(),
                http_status: 401,
                temporary: true,
                security_token: true,
                security_token_valid: Some(false),
            }],
            temporary_keys_issued: IssuedKeys {
                metadata: 1,
                pod_identity: 2,
                agency: 3,
            },
            security_token_rejections: TokenRejections {
                expired: 1,
                ..TokenRejections::default()
            },
        };
        let back: SimSnapshot =
            serde_json::from_str(&serde_json::to_string(&snap).expect("ser")).expect("de");
        assert_eq!(back, snap);
        assert_eq!(
            back.connection("e").map(|c| c.marker_id),
            Some(422_321_321_312_321_321)
        );
        assert!(back.service("s").is_some());
        assert_eq!(back.request_count(Operation::Action), 0);
        assert_eq!(back.temporary_key_requests(), 1);
        assert_eq!(back.security_token_rejections.total(), 1);
        // A snapshot from before the keyless fields still reads.
        let old: SimSnapshot = serde_json::from_str(
            r#"{"services":[],"actions":[],"requests":{},"tokens_issued":0,
                "signed":[{"time":"t","access_key":"AK","operation":"action","http_status":200}]}"#,
        )
        .expect("old snapshot");
        assert_eq!(old.signed[0].security_token_valid, None);
    }
}
