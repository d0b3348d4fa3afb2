//! The TOML configuration (README "Configuration"), validated into a typed [`Config`].
//! Unknown keys are errors; every error names the file and the key
//! (`invalid config file F: poll.interval: …`). Secrets are never in the file: it names
//! where they come from ([`SecretSource`]), and only `run` reads them.
//!
//! Each section's defaults are written once, in its `Default` impl, which serde uses for
//! every key left out; [`Validator`] then checks what types cannot say (ranges, URLs,
//! ids) and resolves relative paths against the config file's directory.

mod secret;

pub use secret::{SecretSource, expand_vars};

use crate::decision::OnNoMatch;
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default config path when neither `-c` nor `$VPCEP_APPROVER_CONFIG` is given.
pub const DEFAULT_PATH: &str = "/etc/vpcep-approver/config.toml";
/// Access key variable of `method = "aksk"` (the official SDK's name).
pub const AK_ENV: &str = "HUAWEICLOUD_SDK_AK";
/// Secret key variable of `method = "aksk"`.
pub const SK_ENV: &str = "HUAWEICLOUD_SDK_SK";
/// Security token variable of temporary AK/SK.
pub const SECURITY_TOKEN_ENV: &str = "HUAWEICLOUD_SDK_SECURITY_TOKEN";
/// Password variable of `method = "password"`.
pub const PASSWORD_ENV: &str = "VPCEP_APPROVER_PASSWORD";
/// Token variable of `method = "token"`.
pub const TOKEN_ENV: &str = "VPCEP_APPROVER_TOKEN";
/// The pod-identity URL variable of `method = "pod-identity"` (set by CCE).
pub const POD_IDENTITY_URI_ENV: &str = "HC_CONTAINER_CREDENTIALS_FULL_URI";
/// The pod-identity token file variable of `method = "pod-identity"` (set by CCE).
pub const POD_IDENTITY_TOKEN_FILE_ENV: &str = "HC_CONTAINER_AUTHORIZATION_TOKEN_FILE";
/// The ECS metadata service, as the official SDKs reach it.
pub const DEFAULT_METADATA_ENDPOINT: &str = "http://169.254.169.254";
const METADATA_ADDRESS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 169, 254);

/// A configuration problem. Always names the file, and the key where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message (names the line).
        message: String,
    },
    /// A key is unknown, has the wrong type or a value that is not allowed.
    #[error("invalid config file {path}: {key}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The offending key, e.g. `poll.interval` or `target[0].vpcep_endpoint`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A secret could not be read when it was needed.
    #[error("cannot read secret {source_name}: {message}")]
    Secret {
        /// The environment variable or file (never the value).
        source_name: String,
        /// What is wrong.
        message: String,
    },
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file it came from.
    pub path: PathBuf,
    /// Projects to watch, one per region and project.
    pub targets: Vec<Target>,
    /// How to authenticate.
    pub auth: Auth,
    /// Polling, timeouts, concurrency and retries.
    pub poll: Poll,
    /// The policy directory and what to do without a match.
    pub policy: PolicyConfig,
    /// The audit log.
    pub audit: AuditConfig,
    /// The HTTP listener for health and metrics, when configured.
    pub http: Option<HttpConfig>,
    /// Logging.
    pub log: LogConfig,
}

/// One project in one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Label for logs, audit records and metrics.
    pub name: String,
    /// Region id, e.g. `cn-north-4`.
    pub region: String,
    /// Project id.
    pub project_id: String,
    /// VPCEP base URL without a trailing slash.
    pub vpcep_endpoint: String,
    /// IAM base URL without a trailing slash.
    pub iam_endpoint: String,
    /// Services to watch; `None` = every service with approval enabled.
    pub services: Option<Vec<String>>,
    /// An extra PEM trust root.
    pub ca_file: Option<PathBuf>,
    /// The IAM agency this target is reached through, if any.
    pub agency: Option<Agency>,
}

/// An IAM agency of another account: the target's requests are signed with temporary
/// keys obtained by assuming it with the `[auth]` identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Agency {
    /// The agency's name, as the other account created it.
    pub name: String,
    /// The account that created it.
    pub domain: AgencyDomain,
    /// The lifetime asked for (`duration_seconds`).
    pub duration: Duration,
}

/// The account of an agency, by name or by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AgencyDomain {
    /// `agency_domain_name`.
    Name(String),
    /// `agency_domain_id`.
    Id(String),
}

impl Agency {
    /// The default `agency_duration`.
    pub const DEFAULT_DURATION: Duration = Duration::from_secs(3600);
    /// The shortest lifetime IAM issues.
    pub const MIN_DURATION: Duration = Duration::from_secs(900);
    /// The longest lifetime IAM issues.
    pub const MAX_DURATION: Duration = Duration::from_secs(86400);
    /// The longest lifetime when the base identity uses temporary keys itself.
    pub const MAX_DURATION_TEMPORARY: Duration = Duration::from_secs(3600);
}

impl std::fmt::Display for Agency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.domain {
            AgencyDomain::Name(d) => write!(f, "agency {} of account {d}", self.name),
            AgencyDomain::Id(d) => write!(f, "agency {} of account id {d}", self.name),
        }
    }
}

impl Target {
    /// A target with the endpoints of a public region (tests, `demo`).
    pub fn new(name: &str, region: &str, project_id: &str) -> Target {
        Target {
            name: name.to_owned(),
            region: region.to_owned(),
            project_id: project_id.to_owned(),
            vpcep_endpoint: default_vpcep_endpoint(region),
            iam_endpoint: default_iam_endpoint(region),
            services: None,
            ca_file: None,
            agency: None,
        }
    }

    /// The same target with both endpoints at `base` (a simulator).
    pub fn at(mut self, base: &str) -> Target {
        base.trim_end_matches('/')
            .clone_into(&mut self.vpcep_endpoint);
        base.trim_end_matches('/')
            .clone_into(&mut self.iam_endpoint);
        self
    }
}

/// How the daemon authenticates to the cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Access key / secret key signing (`SDK-HMAC-SHA256`).
    AkSk {
        /// Access key id.
        access_key: SecretSource,
        /// Secret access key.
        secret_key: SecretSource,
        /// Security token of temporary keys; absent is fine.
        security_token: SecretSource,
    },
    /// IAM user password, exchanged for a project-scoped token per target.
    Password {
        /// IAM user name.
        user_name: String,
        /// Account (domain) name.
        domain_name: String,
        /// The password.
        password: SecretSource,
    },
    /// A ready-made token, re-read when the API answers 401.
    Token {
        /// The token.
        token: SecretSource,
    },
    /// Temporary AK/SK from the ECS metadata service (the agency attached to the VM).
    Metadata {
        /// The metadata service's base URL.
        endpoint: String,
    },
    /// Temporary AK/SK from CCE pod identity ([`POD_IDENTITY_URI_ENV`],
    /// [`POD_IDENTITY_TOKEN_FILE_ENV`]).
    PodIdentity,
}

impl Auth {
    /// The `method` as written in the file.
    pub fn method(&self) -> &'static str {
        match self {
            Auth::AkSk { .. } => "aksk",
            Auth::Password { .. } => "password",
            Auth::Token { .. } => "token",
            Auth::Metadata { .. } => "metadata",
            Auth::PodIdentity => "pod-identity",
        }
    }

    /// Where the credentials come from, in words, without reading any secret.
    pub fn describe(&self) -> String {
        match self {
            Auth::AkSk {
                access_key,
                secret_key,
                security_token,
            } => format!(
                "access key from {access_key}, secret key from {secret_key}, security token (temporary keys) from {security_token} when set{}",
                if [access_key, secret_key, security_token]
                    .iter()
                    .any(|s| matches!(s, SecretSource::File { .. }))
                {
                    "; files re-read when they change"
                } else {
                    ""
                }
            ),
            Auth::Password {
                user_name,
                domain_name,
                password,
            } => format!(
                "IAM user {user_name} of account {domain_name}, password from {password}; a project-scoped IAM token per target, refreshed before it expires"
            ),
            Auth::Token { token } => {
                format!("token from {token}, re-read when it changes or is not accepted")
            }
            Auth::Metadata { endpoint } => format!(
                "temporary keys of the agency attached to this ECS instance, from the metadata service at {endpoint}, refreshed before they expire"
            ),
            Auth::PodIdentity => {
                let env = |v: &str| match std::env::var(v) {
                    Ok(x) if !x.trim().is_empty() => format!("{v}={}", x.trim()),
                    _ => format!("{v} (not set here)"),
                };
                format!(
                    "temporary keys from CCE pod identity at {} with the token in {}, refreshed before they expire",
                    env(POD_IDENTITY_URI_ENV),
                    env(POD_IDENTITY_TOKEN_FILE_ENV)
                )
            }
        }
    }

    /// Whether the base identity signs with temporary keys for sure (an unset
    /// `HUAWEICLOUD_SDK_SECURITY_TOKEN` is known only when `run` reads it).
    pub fn is_temporary(&self) -> bool {
        match self {
            Auth::Metadata { .. } | Auth::PodIdentity => true,
            Auth::AkSk { security_token, .. } => {
                matches!(security_token, SecretSource::File { .. })
            }
            _ => false,
        }
    }

    /// AK/SK from [`AK_ENV`], [`SK_ENV`] and the optional [`SECURITY_TOKEN_ENV`]: the
    /// default.
    pub fn aksk_from_env() -> Auth {
        Auth::AkSk {
            access_key: SecretSource::Env(AK_ENV.into()),
            secret_key: SecretSource::Env(SK_ENV.into()),
            security_token: SecretSource::Env(SECURITY_TOKEN_ENV.into()),
        }
    }
}

/// Polling, timeouts, concurrency and retries (`[poll]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Poll {
    /// Time between cycles.
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    /// Random 0..jitter added to each wait.
    #[serde(deserialize_with = "duration")]
    pub jitter: Duration,
    /// Timeout of one HTTP request.
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// Concurrent API requests, all targets together.
    pub max_in_flight: usize,
    /// Token bucket rate over all requests; 0 = unlimited.
    pub max_requests_per_second: u32,
    /// Retries of a retryable failure.
    pub max_retries: u32,
    /// An action is sent only on facts listed at most this long ago.
    #[serde(deserialize_with = "duration")]
    pub max_decision_age: Duration,
}

impl Default for Poll {
    fn default() -> Self {
        Poll {
            interval: Duration::from_secs(30),
            jitter: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            max_in_flight: 8,
            max_requests_per_second: 10,
            max_retries: 4,
            max_decision_age: Duration::from_secs(5),
        }
    }
}

/// The policy directory, the no-match action and the directory watch (`[policy]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// The directory with `*.cedar`, the schema, entities and tests.
    pub dir: PathBuf,
    /// What a `no-match` verdict does.
    pub on_no_match: OnNoMatch,
    /// Reload by itself when the directory changes.
    pub watch: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            dir: PathBuf::from("policies"),
            on_no_match: OnNoMatch::LeavePending,
            watch: true,
        }
    }
}

impl PolicyConfig {
    /// The defaults with another directory.
    pub fn at(dir: impl Into<PathBuf>) -> PolicyConfig {
        PolicyConfig {
            dir: dir.into(),
            ..PolicyConfig::default()
        }
    }
}

/// Where audit records go (`[audit] path`; `"-"` is standard output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditPath {
    /// Standard output (containers); the chain starts at 64 zeros on every start.
    Stdout,
    /// An append-only file, created with mode 0640 when missing.
    File(PathBuf),
}

/// The audit log (`[audit]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// File or stdout.
    pub path: AuditPath,
    /// fsync decision records before acting.
    pub fsync: bool,
    /// The Ed25519 key (PKCS#8 PEM) that signs checkpoint records; a file, like the
    /// other secrets, read by `run` and checked by `check`.
    pub signing_key_file: Option<SecretSource>,
    /// Time between checkpoint records (with a signing key).
    pub checkpoint_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: AuditPath::File(PathBuf::from("/var/lib/vpcep-approver/audit.jsonl")),
            fsync: true,
            signing_key_file: None,
            checkpoint_interval: Duration::from_secs(10 * 60),
        }
    }
}

impl AuditConfig {
    /// The defaults with another path.
    pub fn at(path: AuditPath) -> AuditConfig {
        AuditConfig {
            path,
            ..AuditConfig::default()
        }
    }
}

/// The HTTP listener (`[http]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
}

impl HttpConfig {
    /// The default connection limit.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

    /// A listener on `listen` with the default limit.
    pub fn on(listen: SocketAddr) -> HttpConfig {
        HttpConfig {
            listen,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging (`[log]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Text or JSON.
    pub format: LogFormat,
    /// A level or tracing filter directive (not `off`); `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// A humantime duration (`"30s"`, `"5m"`), with a message that shows the value.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(s.trim()).map_err(|e| {
        serde::de::Error::custom(format!(
            "{s:?} is not a duration like \"30s\" or \"5m\": {e}"
        ))
    })
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// The file as written; what types can check is checked by serde.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    target: Vec<RawTarget>,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    poll: Poll,
    #[serde(default)]
    policy: PolicyConfig,
    #[serde(default)]
    audit: RawAudit,
    http: Option<RawHttp>,
    #[serde(default)]
    log: LogConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: Option<String>,
    region: String,
    project_id: String,
    vpcep_endpoint: Option<String>,
    iam_endpoint: Option<String>,
    services: Option<Vec<String>>,
    ca_file: Option<String>,
    agency_name: Option<String>,
    agency_domain_name: Option<String>,
    agency_domain_id: Option<String>,
    #[serde(default, deserialize_with = "optional_duration")]
    agency_duration: Option<Duration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    method: Option<String>,
    access_key_file: Option<String>,
    secret_key_file: Option<String>,
    security_token_file: Option<String>,
    user_name: Option<String>,
    domain_name: Option<String>,
    password_file: Option<String>,
    token_file: Option<String>,
    metadata_endpoint: Option<String>,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawAudit {
    path: String,
    fsync: bool,
    signing_key_file: Option<String>,
    #[serde(deserialize_with = "optional_duration")]
    checkpoint_interval: Option<Duration>,
}

impl Default for RawAudit {
    fn default() -> Self {
        let d = AuditConfig::default();
        RawAudit {
            path: match d.path {
                AuditPath::Stdout => "-".into(),
                AuditPath::File(p) => p.display().to_string(),
            },
            fsync: d.fsync,
            signing_key_file: None,
            checkpoint_interval: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: String,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
}

fn default_max_connections() -> usize {
    HttpConfig::DEFAULT_MAX_CONNECTIONS
}

/// Default VPCEP endpoint of a public Huawei Cloud region.
pub fn default_vpcep_endpoint(region: &str) -> String {
    format!("https://vpcep.{region}.{}", public_domain(region))
}

/// Default IAM endpoint of a public Huawei Cloud region.
pub fn default_iam_endpoint(region: &str) -> String {
    format!("https://iam.{region}.{}", public_domain(region))
}

fn public_domain(region: &str) -> &'static str {
    if region == "eu-west-101" {
        "myhuaweicloud.eu"
    } else {
        "myhuaweicloud.com"
    }
}

/// Whether a URL host is a loopback address or `localhost`.
pub fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// An id that is safe in a URL path: 1–64 of `A-Z a-z 0-9 - _`.
fn valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Validates config text as if read from `path` (relative paths resolve against its
    /// directory).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let syntax = |e: toml::de::Error| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', " | "),
        };
        let de = toml::Deserializer::parse(text).map_err(syntax)?;
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let mut message = inner.message().trim_end().replace('\n', " | ");
            if let Some(span) = inner.span() {
                message.push_str(&format!(" (line {})", line_of(text, span.start)));
            }
            if key == "." {
                ConfigError::Parse {
                    path: path.to_owned(),
                    message,
                }
            } else {
                ConfigError::Invalid {
                    path: path.to_owned(),
                    key,
                    message,
                }
            }
        })?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let v = Validator { path, dir: &dir };
        v.build(raw)
    }
}

/// Checks what types cannot say, naming the key.
struct Validator<'a> {
    path: &'a Path,
    dir: &'a Path,
}

impl Validator<'_> {
    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        self.dir.join(p)
    }

    fn build(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        if raw.target.is_empty() {
            return Err(self.err("target", "at least one [[target]] is required"));
        }
        let mut targets = Vec::with_capacity(raw.target.len());
        for (i, t) in raw.target.into_iter().enumerate() {
            let t = self.target(i, t)?;
            if targets.iter().any(|o: &Target| o.name == t.name) {
                return Err(self.err(
                    format!("target[{i}].name"),
                    format!("duplicate target name {:?}", t.name),
                ));
            }
            targets.push(t);
        }
        let auth = self.auth(raw.auth)?;
        if auth.is_temporary()
            && let Some((i, _)) = targets.iter().enumerate().find(|(_, t)| {
                t.agency
                    .as_ref()
                    .is_some_and(|a| a.duration > Agency::MAX_DURATION_TEMPORARY)
            })
        {
            return Err(self.err(
                format!("target[{i}].agency_duration"),
                format!(
                    "at most 1h: method = {:?} uses temporary keys itself",
                    auth.method()
                ),
            ));
        }
        Ok(Config {
            path: self.path.to_owned(),
            targets,
            auth,
            poll: self.poll(raw.poll)?,
            policy: self.policy(raw.policy)?,
            audit: self.audit(raw.audit)?,
            http: raw.http.map(|h| self.http(h)).transpose()?,
            log: self.log(raw.log)?,
        })
    }

    fn target(&self, i: usize, t: RawTarget) -> Result<Target, ConfigError> {
        let key = |k: &str| format!("target[{i}].{k}");
        let region_ok = !t.region.is_empty()
            && t.region.len() <= 64
            && t.region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(self.err(
                key("region"),
                format!("{:?} is not a region id (like \"cn-north-4\")", t.region),
            ));
        }
        if !valid_id(&t.project_id) {
            return Err(self.err(
                key("project_id"),
                format!(
                    "{:?} is not a project id (1-64 letters, digits, '-' or '_')",
                    t.project_id
                ),
            ));
        }
        let name = t.name.unwrap_or_else(|| t.region.clone());
        if name.trim().is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(self.err(key("name"), "must be 1-128 printable characters"));
        }
        let vpcep_endpoint = self.endpoint(
            &key("vpcep_endpoint"),
            t.vpcep_endpoint
                .unwrap_or_else(|| default_vpcep_endpoint(&t.region)),
        )?;
        let iam_endpoint = self.endpoint(
            &key("iam_endpoint"),
            t.iam_endpoint
                .unwrap_or_else(|| default_iam_endpoint(&t.region)),
        )?;
        if let Some(s) = &t.services {
            if s.is_empty() {
                return Err(self.err(
                    key("services"),
                    "empty list: omit the key to watch every service with approval enabled",
                ));
            }
            for (j, id) in s.iter().enumerate() {
                if !valid_id(id) {
                    return Err(self.err(
                        format!("target[{i}].services[{j}]"),
                        format!("{id:?} is not a service id"),
                    ));
                }
                if s[..j].contains(id) {
                    return Err(self.err(
                        format!("target[{i}].services[{j}]"),
                        format!("duplicate service id {id:?}"),
                    ));
                }
            }
        }
        Ok(Target {
            name,
            region: t.region,
            project_id: t.project_id,
            vpcep_endpoint,
            iam_endpoint,
            services: t.services,
            ca_file: t.ca_file.map(|p| self.resolve(Path::new(&p))),
            agency: self.agency(
                i,
                t.agency_name,
                t.agency_domain_name,
                t.agency_domain_id,
                t.agency_duration,
            )?,
        })
    }

    fn agency(
        &self,
        i: usize,
        name: Option<String>,
        domain_name: Option<String>,
        domain_id: Option<String>,
        duration: Option<Duration>,
    ) -> Result<Option<Agency>, ConfigError> {
        let key = |k: &str| format!("target[{i}].{k}");
        let Some(name) = name else {
            for (k, present) in [
                ("agency_domain_name", domain_name.is_some()),
                ("agency_domain_id", domain_id.is_some()),
                ("agency_duration", duration.is_some()),
            ] {
                if present {
                    return Err(self.err(key(k), "needs agency_name"));
                }
            }
            return Ok(None);
        };
        let printable = |k: &str, v: &str| {
            if v.trim().is_empty() || v.len() > 128 || v.chars().any(char::is_control) {
                Err(self.err(key(k), "must be 1-128 printable characters"))
            } else {
                Ok(())
            }
        };
        printable("agency_name", &name)?;
        let domain = match (domain_name, domain_id) {
            (Some(n), None) => {
                printable("agency_domain_name", &n)?;
                AgencyDomain::Name(n)
            }
            (None, Some(d)) => {
                if !valid_id(&d) {
                    return Err(self.err(
                        key("agency_domain_id"),
                        format!("{d:?} is not an account id"),
                    ));
                }
                AgencyDomain::Id(d)
            }
            _ => {
                return Err(self.err(
                    key("agency_name"),
                    "needs exactly one of agency_domain_name and agency_domain_id (the account that created the agency)",
                ));
            }
        };
        let duration = duration.unwrap_or(Agency::DEFAULT_DURATION);
        if !(Agency::MIN_DURATION..=Agency::MAX_DURATION).contains(&duration) {
            return Err(self.err(key("agency_duration"), "must be between 15m and 24h"));
        }
        Ok(Some(Agency {
            name,
            domain,
            duration,
        }))
    }

    fn endpoint(&self, key: &str, value: String) -> Result<String, ConfigError> {
        let url = url::Url::parse(&value)
            .map_err(|e| self.err(key, format!("{value:?} is not a URL: {e}")))?;
        let host = url
            .host()
            .ok_or_else(|| self.err(key, format!("{value:?} has no host")))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback_host(&host) => {}
            "http" => {
                return Err(self.err(
                    key,
                    format!("{value:?}: plain http is allowed only for loopback hosts; use https"),
                ));
            }
            s => return Err(self.err(key, format!("{value:?}: unsupported scheme {s:?}"))),
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(self.err(key, format!("{value:?} must not have a query or fragment")));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(self.err(key, "credentials do not belong in an endpoint URL"));
        }
        Ok(url.as_str().trim_end_matches('/').to_owned())
    }

    /// A `*_file` value: a path that may hold `${VAR}` references, read later.
    fn file(&self, key: &str, v: &Option<String>) -> Result<Option<SecretSource>, ConfigError> {
        match v {
            None => Ok(None),
            Some(t) if t.trim().is_empty() => Err(self.err(key, "empty path")),
            Some(t) => {
                // Catch malformed ${...} now; the variables themselves are read later.
                expand_vars(t, |_| Some(String::new())).map_err(|m| self.err(key, m))?;
                Ok(Some(SecretSource::File {
                    template: t.clone(),
                    base: self.dir.to_owned(),
                }))
            }
        }
    }

    fn auth(&self, a: RawAuth) -> Result<Auth, ConfigError> {
        let method = a.method.as_deref().unwrap_or("aksk");
        let allowed: &[&str] = match method {
            "aksk" => &["access_key_file", "secret_key_file", "security_token_file"],
            "password" => &["user_name", "domain_name", "password_file"],
            "token" => &["token_file"],
            "metadata" => &["metadata_endpoint"],
            "pod-identity" => &[],
            other => {
                return Err(self.err(
                    "auth.method",
                    format!(
                        "{other:?} is not one of \"aksk\", \"password\", \"token\", \"metadata\", \"pod-identity\""
                    ),
                ));
            }
        };
        let present = [
            ("access_key_file", a.access_key_file.is_some()),
            ("secret_key_file", a.secret_key_file.is_some()),
            ("security_token_file", a.security_token_file.is_some()),
            ("user_name", a.user_name.is_some()),
            ("domain_name", a.domain_name.is_some()),
            ("password_file", a.password_file.is_some()),
            ("token_file", a.token_file.is_some()),
            ("metadata_endpoint", a.metadata_endpoint.is_some()),
        ];
        if let Some((k, _)) = present.iter().find(|(k, p)| *p && !allowed.contains(k)) {
            return Err(self.err(
                format!("auth.{k}"),
                format!("not used with method = {method:?}"),
            ));
        }
        let file = |k: &str, v: &Option<String>, var: &str| {
            Ok::<_, ConfigError>(
                self.file(&format!("auth.{k}"), v)?
                    .unwrap_or_else(|| SecretSource::Env(var.to_owned())),
            )
        };
        let required = |k: &str, v: Option<String>| {
            v.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
                self.err(
                    format!("auth.{k}"),
                    format!("required with method = {method:?}"),
                )
            })
        };
        Ok(match method {
            "aksk" => Auth::AkSk {
                access_key: file("access_key_file", &a.access_key_file, AK_ENV)?,
                secret_key: file("secret_key_file", &a.secret_key_file, SK_ENV)?,
                security_token: file(
                    "security_token_file",
                    &a.security_token_file,
                    SECURITY_TOKEN_ENV,
                )?,
            },
            "password" => Auth::Password {
                user_name: required("user_name", a.user_name)?,
                domain_name: required("domain_name", a.domain_name)?,
                password: file("password_file", &a.password_file, PASSWORD_ENV)?,
            },
            "token" => Auth::Token {
                token: file("token_file", &a.token_file, TOKEN_ENV)?,
            },
            "metadata" => Auth::Metadata {
                endpoint: self.metadata_endpoint(
                    a.metadata_endpoint
                        .unwrap_or_else(|| DEFAULT_METADATA_ENDPOINT.to_owned()),
                )?,
            },
            _ => Auth::PodIdentity,
        })
    }

    /// `auth.metadata_endpoint`: like any endpoint, plus the one link-local address the
    /// metadata service has over plain http.
    fn metadata_endpoint(&self, value: String) -> Result<String, ConfigError> {
        const KEY: &str = "auth.metadata_endpoint";
        let link_local = url::Url::parse(&value).is_ok_and(|u| {
            u.scheme() == "http" && u.host() == Some(url::Host::Ipv4(METADATA_ADDRESS))
        });
        if link_local {
            let u = url::Url::parse(&value).map_err(|e| self.err(KEY, e.to_string()))?;
            if u.query().is_some()
                || u.fragment().is_some()
                || !u.username().is_empty()
                || u.password().is_some()
            {
                return Err(self.err(KEY, format!("{value:?} must be a plain base URL")));
            }
            return Ok(u.as_str().trim_end_matches('/').to_owned());
        }
        self.endpoint(KEY, value)
    }

    fn poll(&self, p: Poll) -> Result<Poll, ConfigError> {
        let at_least = |key: &str, v: Duration, min: Duration, what: &str| {
            if v < min {
                Err(self.err(format!("poll.{key}"), what.to_owned()))
            } else {
                Ok(())
            }
        };
        at_least(
            "interval",
            p.interval,
            Duration::from_secs(1),
            "must be at least 1s",
        )?;
        at_least(
            "request_timeout",
            p.request_timeout,
            Duration::from_millis(1),
            "must be greater than 0",
        )?;
        at_least(
            "max_decision_age",
            p.max_decision_age,
            Duration::from_millis(100),
            "must be at least 100ms",
        )?;
        let range = |key: &str, n: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&n) {
                Ok(())
            } else {
                Err(self.err(
                    format!("poll.{key}"),
                    format!("{n} is not between {lo} and {hi}"),
                ))
            }
        };
        range("max_in_flight", p.max_in_flight as u64, 1, 1024)?;
        range(
            "max_requests_per_second",
            u64::from(p.max_requests_per_second),
            0,
            100_000,
        )?;
        range("max_retries", u64::from(p.max_retries), 0, 20)?;
        Ok(p)
    }

    fn policy(&self, p: PolicyConfig) -> Result<PolicyConfig, ConfigError> {
        if p.dir.as_os_str().is_empty() {
            return Err(self.err("policy.dir", "empty path"));
        }
        Ok(PolicyConfig {
            dir: self.resolve(&p.dir),
            ..p
        })
    }

    fn audit(&self, a: RawAudit) -> Result<AuditConfig, ConfigError> {
        let path = match a.path.as_str() {
            "-" => AuditPath::Stdout,
            p if p.trim().is_empty() => return Err(self.err("audit.path", "empty path")),
            p => AuditPath::File(self.resolve(Path::new(p))),
        };
        let signing_key_file = self.file("audit.signing_key_file", &a.signing_key_file)?;
        let checkpoint_interval = match (a.checkpoint_interval, &signing_key_file) {
            (Some(_), None) => {
                return Err(self.err(
                    "audit.checkpoint_interval",
                    "checkpoints are signed: set audit.signing_key_file too",
                ));
            }
            (Some(d), Some(_)) if d < Duration::from_secs(1) => {
                return Err(self.err("audit.checkpoint_interval", "must be at least 1s"));
            }
            (Some(d), Some(_)) => d,
            (None, _) => AuditConfig::default().checkpoint_interval,
        };
        Ok(AuditConfig {
            path,
            fsync: a.fsync,
            signing_key_file,
            checkpoint_interval,
        })
    }

    fn http(&self, h: RawHttp) -> Result<HttpConfig, ConfigError> {
        let listen = h.listen.parse::<SocketAddr>().map_err(|_| {
            self.err(
                "http.listen",
                format!("{:?} is not an address like \"127.0.0.1:9464\"", h.listen),
            )
        })?;
        if !(1..=65_536).contains(&h.max_connections) {
            return Err(self.err(
                "http.max_connections",
                format!("{} is not between 1 and 65536", h.max_connections),
            ));
        }
        Ok(HttpConfig {
            listen,
            max_connections: h.max_connections,
        })
    }

    fn log(&self, l: LogConfig) -> Result<LogConfig, ConfigError> {
        crate::log_filter::parse_config_level(&l.level).map_err(|e| self.err("log.level", e))?;
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str =
        "[[target]]\nregion = \"cn-north-4\"\nproject_id = \"0605767a3300d5762fb7c0186d8bfc2b\"\n";

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("{MIN}{extra}"), Path::new("/etc/x/config.toml"))
    }

    fn err(extra: &str) -> String {
        match parse(extra) {
            Ok(_) => panic!("expected an error for {extra:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("").expect("valid");
        let t = &c.targets[0];
        assert_eq!(t.name, "cn-north-4");
        assert_eq!(
            t.vpcep_endpoint,
            "https://vpcep.cn-north-4.myhuaweicloud.com"
        );
        assert_eq!(t.iam_endpoint, "https://iam.cn-north-4.myhuaweicloud.com");
        assert_eq!(c.poll, Poll::default());
        assert_eq!(c.policy.dir, PathBuf::from("/etc/x/policies"));
        assert_eq!(c.policy.on_no_match, OnNoMatch::LeavePending);
        assert!(c.audit.fsync);
        assert!(c.http.is_none());
        assert_eq!(c.auth.method(), "aksk");
    }

    #[test]
    fn eu_west_101_uses_the_eu_domain() {
        assert_eq!(
            default_vpcep_endpoint("eu-west-101"),
            "https://vpcep.eu-west-101.myhuaweicloud.eu"
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_config_dir() {
        let c = parse("[policy]\ndir = \"../pol\"\n[audit]\npath = \"a.jsonl\"\n").expect("valid");
        assert_eq!(c.policy.dir, PathBuf::from("/etc/x/../pol"));
        assert_eq!(
            c.audit.path,
            AuditPath::File(PathBuf::from("/etc/x/a.jsonl"))
        );
        let c = parse("[audit]\npath = \"-\"\n").expect("valid");
        assert_eq!(c.audit.path, AuditPath::Stdout);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = err("[poll]\nintervall = \"30s\"\n");
        assert!(
            e.contains("/etc/x/config.toml") && e.contains("intervall"),
            "{e}"
        );
        let e = Config::parse(&format!("{MIN}bogus = 1\n"), Path::new("c.toml"))
            .expect_err("unknown top-level key")
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn bad_duration_is_named() {
        let e = err("[poll]\ninterval = \"soon\"\n");
        assert!(e.contains("poll.interval") && e.contains("soon"), "{e}");
        let e = err("[poll]\ninterval = \"100ms\"\n");
        assert!(
            e.contains("poll.interval") && e.contains("at least 1s"),
            "{e}"
        );
        let e = err("[poll]\nrequest_timeout = \"0s\"\n");
        assert!(e.contains("poll.request_timeout"), "{e}");
    }

    #[test]
    fn out_of_range_numbers_are_named() {
        assert!(err("[poll]\nmax_in_flight = 0\n").contains("poll.max_in_flight"));
        assert!(err("[poll]\nmax_retries = -1\n").contains("poll.max_retries"));
        assert!(
            err("[poll]\nmax_requests_per_second = -5\n").contains("poll.max_requests_per_second")
        );
    }

    /// The error of a whole config text that must not load.
    fn text_err(text: &str) -> String {
        match Config::parse(text, Path::new("c.toml")) {
            Ok(_) => panic!("expected an error for {text:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// Asserts that the error text `e` says each of `parts`.
    fn assert_says(e: &str, parts: &[&str]) {
        for part in parts {
            assert!(e.contains(part), "no {part:?} in: {e}");
        }
    }

    #[test]
    fn bad_url_is_named() {
        let e = err("vpcep_endpoint = \"not a url\"\n");
        assert_says(&e, &["target[0].vpcep_endpoint", "not a URL"]);
        let e = err("iam_endpoint = \"ftp://iam.example.com\"\n");
        assert_says(&e, &["target[0].iam_endpoint", "scheme"]);
    }

    #[test]
    fn plain_http_only_for_loopback() {
        let e = err("vpcep_endpoint = \"http://vpcep.example.com\"\n");
        assert_says(&e, &["target[0].vpcep_endpoint", "loopback"]);
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:9",
            "https://x.example.com/",
        ] {
            let c = parse(&format!("vpcep_endpoint = \"{ok}\"\n"))
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert!(!c.targets[0].vpcep_endpoint.ends_with('/'));
        }
    }

    #[test]
    fn bad_ids_and_duplicates_are_named() {
        let e = text_err("[[target]]\nregion = \"cn-north-4\"\nproject_id = \"../etc\"\n");
        assert_says(&e, &["target[0].project_id"]);
        assert!(err("services = [\"a/b\"]\n").contains("target[0].services[0]"));
        assert!(err("services = [\"a\", \"a\"]\n").contains("duplicate service id"));
        assert!(err("services = []\n").contains("target[0].services"));
        assert_says(&err(MIN), &["target[1].name", "duplicate"]);
        assert_says(&text_err(""), &["target"]);
        let e = text_err("[[target]]\nregion = \"CN North\"\nproject_id = \"p\"\n");
        assert_says(&e, &["target[0].region"]);
    }

    #[test]
    fn on_no_match_values() {
        assert_eq!(
            parse("[policy]\non_no_match = \"reject\"\n")
                .expect("ok")
                .policy
                .on_no_match,
            OnNoMatch::Reject
        );
        let e = err("[policy]\non_no_match = \"accept\"\n");
        assert!(
            e.contains("policy.on_no_match") && e.contains("accept"),
            "{e}"
        );
    }

    #[test]
    fn auth_method_and_keys_are_checked() {
        assert!(err("[auth]\nmethod = \"magic\"\n").contains("auth.method"));
        assert!(
            err("[auth]\nmethod = \"password\"\nuser_name = \"u\"\n").contains("auth.domain_name")
        );
        assert!(err("[auth]\nmethod = \"aksk\"\ntoken_file = \"t\"\n").contains("auth.token_file"));
        assert!(err("[auth]\nmethod = \"token\"\nuser_name = \"u\"\n").contains("auth.user_name"));
        assert!(err("[auth]\nsecret_key_file = \"${UNCLOSED\"\n").contains("auth.secret_key_file"));
        assert!(err("[auth]\nsecret_key_file = \"\"\n").contains("auth.secret_key_file"));
        let c = parse("[auth]\nmethod = \"password\"\nuser_name = \"u\"\ndomain_name = \"d\"\n")
            .expect("ok");
        assert_eq!(c.auth.method(), "password");
    }

    #[test]
    fn keyless_methods_and_their_keys() {
        let c = parse("[auth]\nmethod = \"metadata\"\n").expect("ok");
        assert_eq!(
            c.auth,
            Auth::Metadata {
                endpoint: DEFAULT_METADATA_ENDPOINT.into()
            }
        );
        assert!(c.auth.is_temporary());
        for ok in [
            "http://169.254.169.254/",
            "http://127.0.0.1:8080",
            "https://meta.example.com",
        ] {
            let c = parse(&format!(
                "[auth]\nmethod = \"metadata\"\nmetadata_endpoint = \"{ok}\"\n"
            ))
            .expect(ok);
            let Auth::Metadata { endpoint } = c.auth else {
                panic!("metadata")
            };
            assert!(!endpoint.ends_with('/'), "{endpoint}");
        }
        for bad in [
            "http://169.254.169.253",
            "http://10.0.0.1",
            "ftp://169.254.169.254",
        ] {
            let e = err(&format!(
                "[auth]\nmethod = \"metadata\"\nmetadata_endpoint = \"{bad}\"\n"
            ));
            assert!(e.contains("auth.metadata_endpoint"), "{e}");
        }
        assert!(
            err("[auth]\nmetadata_endpoint = \"http://127.0.0.1:1\"\n")
                .contains("auth.metadata_endpoint: not used with method = \"aksk\"")
        );
        let c = parse("[auth]\nmethod = \"pod-identity\"\n").expect("ok");
        assert_eq!(c.auth, Auth::PodIdentity);
        assert!(
            err("[auth]\nmethod = \"pod-identity\"\ntoken_file = \"t\"\n")
                .contains("auth.token_file")
        );
        assert!(err("[auth]\nmethod = \"magic\"\n").contains("\"pod-identity\""));
    }

    #[test]
    fn agencies_are_checked() {
        let c = parse("agency_name = \"vpcep-approver\"\nagency_domain_name = \"acme-prod\"\n")
            .expect("ok");
        assert_eq!(
            c.targets[0].agency,
            Some(Agency {
                name: "vpcep-approver".into(),
                domain: AgencyDomain::Name("acme-prod".into()),
                duration: Agency::DEFAULT_DURATION,
            })
        );
        let c =
            parse("agency_name = \"a\"\nagency_domain_id = \"0a1b2c\"\nagency_duration = \"6h\"\n")
                .expect("ok");
        let a = c.targets[0].agency.as_ref().expect("agency");
        assert_eq!(a.domain, AgencyDomain::Id("0a1b2c".into()));
        assert_eq!(a.duration, Duration::from_secs(6 * 3600));
        for (extra, key) in [
            (
                "agency_domain_name = \"d\"\n",
                "target[0].agency_domain_name: needs agency_name",
            ),
            (
                "agency_duration = \"1h\"\n",
                "target[0].agency_duration: needs agency_name",
            ),
            (
                "agency_name = \"a\"\n",
                "target[0].agency_name: needs exactly one",
            ),
            (
                "agency_name = \"a\"\nagency_domain_name = \"d\"\nagency_domain_id = \"i\"\n",
                "target[0].agency_name: needs exactly one",
            ),
            (
                "agency_name = \"a\"\nagency_domain_id = \"no/slash\"\n",
                "target[0].agency_domain_id",
            ),
            (
                "agency_name = \"a\"\nagency_domain_name = \"d\"\nagency_duration = \"5m\"\n",
                "target[0].agency_duration: must be between",
            ),
            (
                "agency_name = \"a\"\nagency_domain_name = \"d\"\nagency_duration = \"25h\"\n",
                "target[0].agency_duration: must be between",
            ),
        ] {
            let e = err(extra);
            assert!(e.contains(key), "{extra:?}: {e}");
        }
        // Temporary keys cannot ask for more than an hour.
        let e = err(
            "agency_name = \"a\"\nagency_domain_name = \"d\"\nagency_duration = \"2h\"\n[auth]\nmethod = \"metadata\"\n",
        );
        assert!(e.contains("target[0].agency_duration: at most 1h"), "{e}");
        let e = err(
            "agency_name = \"a\"\nagency_domain_name = \"d\"\nagency_duration = \"2h\"\n[auth]\nsecurity_token_file = \"st\"\n",
        );
        assert!(e.contains("at most 1h"), "{e}");
        parse("agency_name = \"a\"\nagency_domain_name = \"d\"\nagency_duration = \"2h\"\n")
            .expect("static keys may ask for more");
    }

    #[test]
    fn bad_listen_format_and_level_are_named() {
        assert!(err("[http]\nlisten = \"localhost\"\n").contains("http.listen"));
        assert!(err("[log]\nformat = \"xml\"\n").contains("log.format"));
        assert!(err("[log]\nlevel = \"info,[\"\n").contains("log.level"));
        assert!(err("[audit]\npath = \"\"\n").contains("audit.path"));
        assert!(err("[audit]\nfsync = \"yes\"\n").contains("fsync"));
    }

    #[test]
    fn secrets_expand_and_name_their_source_never_the_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("sk"), "s3cr3t-value\n").expect("write");
        let src = SecretSource::File {
            template: "${VPCEP_TEST_CRED_DIR_X}/sk".into(),
            base: PathBuf::from("/nonexistent"),
        };
        let e = src.load().expect_err("unset var").to_string();
        assert!(e.contains("VPCEP_TEST_CRED_DIR_X"), "{e}");
        let path =
            expand_vars("${A}/sk", |_| Some(dir.path().display().to_string())).expect("expand");
        let src = SecretSource::File {
            template: path,
            base: PathBuf::from("/"),
        };
        use secrecy::ExposeSecret;
        assert_eq!(src.load().expect("read").expose_secret(), "s3cr3t-value");
        let dbg = format!("{:?}", src.load().expect("read"));
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        let missing = SecretSource::Env("VPCEP_TEST_SURELY_UNSET_VAR".into());
        let e = missing.load().expect_err("unset").to_string();
        assert!(
            e.contains("VPCEP_TEST_SURELY_UNSET_VAR") && e.contains("not set"),
            "{e}"
        );
        let missing_file = SecretSource::File {
            template: "nope".into(),
            base: dir.path().into(),
        };
        assert!(
            missing_file
                .load()
                .expect_err("missing")
                .to_string()
                .contains("nope")
        );
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/vpcep-approver.toml");
        Config::load(&p).unwrap_or_else(|e| panic!("{e}"));
    }
}
