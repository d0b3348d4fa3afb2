//! Credentials: where each request's authentication comes from (README "Credentials"),
//! the caches of fetched credentials and the authentication backoff ([`gate`]).
//!
//! [`Credentials`] is the one type. It owns the base identity of `[auth]`:
//! - static keys, a password or a token, from the environment or from `*_file` secrets
//!   that are re-read when the files change ([`reload`]);
//! - or temporary keys fetched from the ECS metadata service or CCE pod identity;
//!
//! and the caches built on it: the project-scoped IAM tokens of `password`, and the
//! temporary keys of each IAM agency a target goes through. Every fetched credential
//! lives in a [`Slot`]: one fetch at a time, refreshed before it expires, never used when
//! it would expire during a request. Every key has one [`Gate`] (five bad signatures
//! lock a key). Sending is the transport's business: it asks for the credential of each
//! attempt and [`Credentials::apply`] puts it on the request. `Debug` shows no secret.

pub mod gate;
pub mod iam;
pub mod keys;
pub mod reload;
pub mod slot;

use super::error::{ApiError, sanitize};
use super::signer;
use crate::config::{
    Agency, Auth, ConfigError, POD_IDENTITY_TOKEN_FILE_ENV, POD_IDENTITY_URI_ENV, SecretSource,
};
pub use gate::{BACKOFF_MAX, BACKOFF_MIN, Gate, Probe};
pub use keys::Keys;
use reload::Reloading;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
pub use slot::{Held, Slot};
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("vpcep-approver/", env!("CARGO_PKG_VERSION"));

/// The loaded base identity of `[auth]` and the credentials built on it.
pub struct Credentials {
    base: Base,
    /// IAM tokens of `password`, by scope (a project id, or the account for agency
    /// requests).
    tokens: Mutex<HashMap<String, Arc<Slot<SecretString>>>>,
    /// Temporary keys of each agency, by IAM endpoint and agency.
    agencies: Mutex<HashMap<AgencyKey, Arc<Slot<Keys>>>>,
    /// The authentication gate of each key (an access key, an IAM user), shared by
    /// every target that uses it.
    gates: Mutex<HashMap<String, Arc<Gate>>>,
}

/// An agency as one IAM endpoint issues its keys.
type AgencyKey = (String, Agency);

enum Base {
    AkSk(Reloading<Keys>),
    Password {
        user_name: String,
        domain_name: String,
        password: Reloading<SecretString>,
    },
    Token {
        source: SecretSource,
        token: Reloading<SecretString>,
    },
    Fetched {
        source: KeySource,
        slot: Arc<Slot<Keys>>,
    },
}

/// The metadata session token and until when it is used.
pub type MetadataSession = tokio::sync::Mutex<Option<(Arc<SecretString>, tokio::time::Instant)>>;

/// A service that hands out temporary keys for the base identity.
pub enum KeySource {
    /// The ECS metadata service; the session token of its `PUT` is kept and reused.
    Metadata {
        /// Base URL.
        endpoint: String,
        /// The metadata session token, while it is valid.
        session: MetadataSession,
    },
    /// CCE pod identity.
    PodIdentity {
        /// `$HC_CONTAINER_CREDENTIALS_FULL_URI`.
        uri: String,
        /// `$HC_CONTAINER_AUTHORIZATION_TOKEN_FILE`, read at every fetch.
        token_file: PathBuf,
    },
}

impl KeySource {
    /// Where the keys come from, for messages: the service's URL.
    pub fn describe(&self) -> String {
        match self {
            KeySource::Metadata { endpoint, .. } => {
                format!("the ECS metadata service at {endpoint}")
            }
            KeySource::PodIdentity { uri, token_file } => format!(
                "CCE pod identity at {uri} (token file {})",
                token_file.display()
            ),
        }
    }
}

/// What one attempt is authenticated with.
#[derive(Clone)]
pub enum Credential {
    /// `SDK-HMAC-SHA256` with these keys (plus `X-Security-Token` for temporary ones).
    Sign {
        /// The keys.
        keys: Arc<Keys>,
        /// Where they came from.
        origin: Origin,
    },
    /// `X-Auth-Token`.
    Token {
        /// The token.
        token: Arc<SecretString>,
        /// Where it came from.
        origin: Origin,
    },
    /// Nothing (the IAM token request itself).
    None,
}

/// What is fetched into a [`Slot`] (temporary keys, an IAM token), and how it goes out
/// on a request, tied to its slot so that a 401 drops exactly that one.
pub trait Fetched: Sized {
    /// The credential of `held`, fetched into `slot`.
    fn credential(slot: Arc<Slot<Self>>, held: Held<Self>) -> Credential;
}

impl Fetched for Keys {
    fn credential(slot: Arc<Slot<Keys>>, held: Held<Keys>) -> Credential {
        Credential::Sign {
            keys: held.value,
            origin: Origin::Keys(slot, held.generation, held.expires_at),
        }
    }
}

impl Fetched for SecretString {
    fn credential(slot: Arc<Slot<SecretString>>, held: Held<SecretString>) -> Credential {
        Credential::Token {
            token: held.value,
            origin: Origin::Token(slot, held.generation, held.expires_at),
        }
    }
}

/// Where a credential came from, so a 401 drops exactly that one.
#[derive(Clone)]
pub enum Origin {
    /// The base identity's own keys or token, with its generation.
    Base(u64),
    /// Fetched keys (metadata, pod identity, an agency), with their generation and
    /// expiry.
    Keys(Arc<Slot<Keys>>, u64, tokio::time::Instant),
    /// An IAM token of `password`, with its generation and expiry.
    Token(Arc<Slot<SecretString>>, u64, tokio::time::Instant),
}

impl Credential {
    /// When a fetched credential stops being valid (`None`: the base identity's own
    /// keys or token, which do not expire on their own).
    pub fn expires_at(&self) -> Option<tokio::time::Instant> {
        match self {
            Credential::Sign { origin, .. } | Credential::Token { origin, .. } => match origin {
                Origin::Keys(_, _, at) | Origin::Token(_, _, at) => Some(*at),
                Origin::Base(_) => None,
            },
            Credential::None => None,
        }
    }
}

/// The scope of an IAM token of `password`.
#[derive(Clone, Copy)]
pub enum Scope<'a> {
    /// A target's project: its requests.
    Project(&'a str),
    /// The user's own account: agency requests.
    Account,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn same_secret(a: &SecretString, b: &SecretString) -> bool {
    a.expose_secret() == b.expose_secret()
}

impl Credentials {
    fn with(base: Base) -> Credentials {
        Credentials {
            base,
            tokens: Mutex::new(HashMap::new()),
            agencies: Mutex::new(HashMap::new()),
            gates: Mutex::new(HashMap::new()),
        }
    }

    /// Access key / secret key signing; `security_token` for temporary keys.
    pub fn aksk(ak: &str, sk: &str, security_token: Option<&str>) -> Credentials {
        Credentials::with(Base::AkSk(Reloading::fixed(Keys::new(
            ak,
            sk,
            security_token,
        ))))
    }

    /// An IAM user password, exchanged for a project-scoped token per target.
    pub fn password(user_name: &str, domain_name: &str, password: &str) -> Credentials {
        Credentials::with(Base::Password {
            user_name: user_name.to_owned(),
            domain_name: domain_name.to_owned(),
            password: Reloading::fixed(password.into()),
        })
    }

    /// A ready-made token, re-read from `source` when the API answers 401.
    pub fn token(source: SecretSource, current: &str) -> Credentials {
        let token = Reloading::starting_with(current.into(), &[&source], {
            let s = source.clone();
            move || s.load()
        })
        .unwrap_or_else(|_| Reloading::fixed(current.into()));
        Credentials::with(Base::Token { source, token })
    }

    /// Temporary keys fetched from `source`.
    pub fn fetched(source: KeySource) -> Credentials {
        Credentials::with(Base::Fetched {
            source,
            slot: Arc::default(),
        })
    }

    /// Reads every secret `auth` names (fetched credentials are fetched when first
    /// needed). A missing one is an error naming the environment variable or file, never
    /// the value.
    pub fn load(auth: &Auth) -> Result<Credentials, ConfigError> {
        Ok(Credentials::with(match auth {
            Auth::AkSk {
                access_key,
                secret_key,
                security_token,
            } => {
                let (a, s, t) = (
                    access_key.clone(),
                    secret_key.clone(),
                    security_token.clone(),
                );
                Base::AkSk(Reloading::new(
                    &[access_key, secret_key, security_token],
                    move || {
                        Ok(Keys {
                            ak: a.load()?,
                            sk: s.load()?,
                            security_token: t.load_optional()?,
                        })
                    },
                )?)
            }
            Auth::Password {
                user_name,
                domain_name,
                password,
            } => Base::Password {
                user_name: user_name.clone(),
                domain_name: domain_name.clone(),
                password: Reloading::secret(password)?,
            },
            Auth::Token { token } => Base::Token {
                source: token.clone(),
                token: Reloading::secret(token)?,
            },
            Auth::Metadata { endpoint } => Base::Fetched {
                source: KeySource::Metadata {
                    endpoint: endpoint.clone(),
                    session: tokio::sync::Mutex::new(None),
                },
                slot: Arc::default(),
            },
            Auth::PodIdentity => Base::Fetched {
                source: pod_identity_from_env()?,
                slot: Arc::default(),
            },
        }))
    }

    /// The `[auth] method`.
    pub fn method(&self) -> &'static str {
        match &self.base {
            Base::AkSk(_) => "aksk",
            Base::Password { .. } => "password",
            Base::Token { .. } => "token",
            Base::Fetched {
                source: KeySource::Metadata { .. },
                ..
            } => "metadata",
            Base::Fetched {
                source: KeySource::PodIdentity { .. },
                ..
            } => "pod-identity",
        }
    }

    /// Whether the base identity signs with temporary keys.
    pub fn is_temporary(&self) -> bool {
        match &self.base {
            Base::AkSk(k) => k.current().0.security_token.is_some(),
            Base::Fetched { .. } => true,
            _ => false,
        }
    }

    /// The base identity's credential when it needs no fetch: static keys (after taking a
    /// change of their files) or the token of `method = "token"`.
    pub fn static_credential(&self) -> Option<Credential> {
        match &self.base {
            Base::AkSk(k) => {
                let (keys, generation) = k.current();
                Some(Credential::Sign {
                    keys,
                    origin: Origin::Base(generation),
                })
            }
            Base::Token { token, .. } => {
                let (token, generation) = token.current();
                Some(Credential::Token {
                    token,
                    origin: Origin::Base(generation),
                })
            }
            _ => None,
        }
    }

    /// The service and cache of fetched base keys, for `metadata` and `pod-identity`.
    pub fn key_source(&self) -> Option<(&KeySource, Arc<Slot<Keys>>)> {
        match &self.base {
            Base::Fetched { source, slot } => Some((source, slot.clone())),
            _ => None,
        }
    }

    /// Whether this method fetches IAM tokens with a password.
    pub fn uses_iam(&self) -> bool {
        matches!(self.base, Base::Password { .. })
    }

    /// The cache of the `password` IAM token for `scope`.
    pub fn token_slot(&self, scope: Scope<'_>) -> Arc<Slot<SecretString>> {
        let key = match scope {
            Scope::Project(p) => format!("project:{p}"),
            Scope::Account => "account".to_owned(),
        };
        lock(&self.tokens).entry(key).or_default().clone()
    }

    /// The cache of an agency's temporary keys, by the IAM endpoint that issues them.
    pub fn agency_slot(&self, iam_base: &str, agency: &Agency) -> Arc<Slot<Keys>> {
        lock(&self.agencies)
            .entry((iam_base.to_owned(), agency.clone()))
            .or_default()
            .clone()
    }

    /// The body of the IAM token request for `scope` (`password` only). It holds the
    /// password: send it and drop it.
    pub fn iam_token_body(&self, scope: Scope<'_>) -> Option<Vec<u8>> {
        match &self.base {
            Base::Password {
                user_name,
                domain_name,
                password,
            } => Some(iam::password_token_body(
                user_name,
                domain_name,
                &password.current().0,
                scope,
            )),
            _ => None,
        }
    }

    fn gate(&self, key: String) -> Arc<Gate> {
        let mut gates = lock(&self.gates);
        if !gates.contains_key(&key) && gates.len() >= 16 {
            // Temporary keys change with every refresh: forget the gates of keys no
            // request holds any more, unless they are in a backoff.
            gates.retain(|_, g| Arc::strong_count(g) > 1 || g.unready_reason().is_some());
        }
        gates.entry(key).or_default().clone()
    }

    /// The gate of the key an attempt uses: the access key for signing, the IAM user for
    /// password token requests; none for a token (a 401 re-reads or re-fetches it).
    pub fn gate_for(&self, cred: &Credential, iam_token_request: bool) -> Option<Arc<Gate>> {
        match (&self.base, cred) {
            (_, Credential::Sign { keys, .. }) => Some(self.gate(keys_gate(keys))),
            (
                Base::Password {
                    user_name,
                    domain_name,
                    ..
                },
                Credential::None,
            ) if iam_token_request => Some(self.gate(format!("iam:{domain_name}/{user_name}"))),
            _ => None,
        }
    }

    /// The gates of the keys and users a target's requests go out with now: the static
    /// or current fetched keys, the password user, its agency's current keys. A key replaced after
    /// its 401 (a rotated file, a refreshed temporary key) is in none of them, so its
    /// failure no longer keeps the daemon unready.
    fn live_gates(&self, iam_base: &str, agency: Option<&Agency>) -> Vec<String> {
        let mut live = Vec::new();
        match &self.base {
            Base::AkSk(keys) => live.push(keys_gate(&keys.current().0)),
            Base::Password {
                user_name,
                domain_name,
                ..
            } => live.push(format!("iam:{domain_name}/{user_name}")),
            Base::Token { .. } => {}
            Base::Fetched { slot, .. } => live.extend(slot.peek().map(|k| keys_gate(&k))),
        }
        // Only this target's agency: another account's failing agency key is not ours.
        if let Some(a) = agency {
            let slot = lock(&self.agencies)
                .get(&(iam_base.to_owned(), a.clone()))
                .cloned();
            live.extend(slot.and_then(|s| s.peek()).map(|k| keys_gate(&k)));
        }
        live
    }

    /// Why requests cannot work right now, if they cannot: a key in its authentication
    /// backoff, or fetched credentials that could not be had (for `agency`, its own).
    pub fn unready_reason(&self, iam_base: &str, agency: Option<&Agency>) -> Option<String> {
        let live = self.live_gates(iam_base, agency);
        let gates: Vec<Arc<Gate>> = {
            let all = lock(&self.gates);
            live.iter().filter_map(|k| all.get(k).cloned()).collect()
        };
        if let Some(r) = gates.iter().find_map(|g| g.unready_reason()) {
            return Some(r);
        }
        if let Some((source, slot)) = self.key_source()
            && let Some(e) = slot.unusable()
        {
            return Some(format!("no credentials from {}: {e}", source.describe()));
        }
        let slot = agency.and_then(|a| {
            lock(&self.agencies)
                .get(&(iam_base.to_owned(), a.clone()))
                .cloned()
        })?;
        let e = slot.unusable()?;
        Some(format!("no credentials for {}: {e}", agency?))
    }

    /// After a 401 with `cred`: drop it so the next attempt gets another one. Returns
    /// whether a retry right away can use a different credential (tokens only: a bad
    /// signature is never retried in a burst); an error when a token source cannot be
    /// re-read (it names the source, never the value).
    pub fn invalidate(&self, cred: &Credential, err: &ApiError) -> Result<bool, ApiError> {
        match cred {
            Credential::Sign {
                origin: Origin::Keys(slot, generation, _),
                ..
            } => {
                slot.invalidate(*generation);
                Ok(false)
            }
            Credential::Token {
                origin: Origin::Token(slot, generation, _),
                ..
            } => {
                slot.invalidate(*generation);
                Ok(true)
            }
            Credential::Token {
                origin: Origin::Base(generation),
                ..
            } => {
                let Base::Token { source, token } = &self.base else {
                    return Ok(false);
                };
                let changed = token.reload(*generation, same_secret).map_err(|e| {
                    let mut out = err.clone();
                    out.error_message = Some(sanitize(&format!(
                        "{}; cannot re-read the token: {e}",
                        err.error_message.as_deref().unwrap_or("token not accepted")
                    )));
                    out
                })?;
                if !changed {
                    tracing::warn!(source = %source, "token not accepted and unchanged in its source");
                }
                Ok(changed)
            }
            _ => Ok(false),
        }
    }

    /// Puts `cred` on a request: for signing, the signed headers and `Authorization`
    /// (the query of `url` becomes the signer's canonical query, so what is signed is
    /// what is sent); for a token, `X-Auth-Token`. Secret values are marked sensitive.
    pub fn apply(&self, cred: &Credential, req: &Outgoing<'_>) -> Result<HeaderMap, String> {
        let mut h = HeaderMap::new();
        match cred {
            Credential::Sign { keys, .. } => {
                let mut signed: Vec<(String, String)> = vec![
                    ("Content-Type".into(), "application/json".into()),
                    ("Host".into(), req.host.to_owned()),
                    ("User-Agent".into(), USER_AGENT.into()),
                    (
                        "X-Sdk-Date".into(),
                        signer::format_sdk_date(chrono::Utc::now()),
                    ),
                ];
                if let Some(p) = req.project_id {
                    signed.push(("X-Project-Id".into(), p.to_owned()));
                }
                if let Some(st) = &keys.security_token {
                    signed.push(("X-Security-Token".into(), st.expose_secret().to_owned()));
                }
                let s = signer::sign(
                    keys.ak.expose_secret(),
                    keys.sk.expose_secret().as_bytes(),
                    &signer::Request {
                        method: req.method,
                        path: req.path,
                        query: req.query,
                        headers: &signed,
                        body: req.body,
                    },
                );
                for (k, v) in &signed {
                    put(&mut h, k, v, k == "X-Security-Token")?;
                }
                put(&mut h, "Authorization", &s.authorization, true)?;
            }
            Credential::Token { token, .. } => {
                put(&mut h, "Content-Type", "application/json", false)?;
                put(&mut h, "User-Agent", USER_AGENT, false)?;
                put(&mut h, "X-Auth-Token", token.expose_secret(), true)?;
            }
            Credential::None => {
                put(&mut h, "Content-Type", "application/json", false)?;
                put(&mut h, "User-Agent", USER_AGENT, false)?;
            }
        }
        Ok(h)
    }
}

/// The pod-identity service and token file as CCE sets them in the environment.
fn pod_identity_from_env() -> Result<KeySource, ConfigError> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ConfigError::Secret {
                source_name: format!("environment variable {name}"),
                message: "not set (is pod identity enabled for this workload?)".into(),
            })
    };
    let uri = var(POD_IDENTITY_URI_ENV)?;
    let invalid = |message: String| ConfigError::Secret {
        source_name: format!("environment variable {POD_IDENTITY_URI_ENV}"),
        message,
    };
    let u = url::Url::parse(&uri).map_err(|e| invalid(format!("{uri:?} is not a URL: {e}")))?;
    let plain_ok = match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_link_local(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback() || ip.is_unicast_link_local(),
        Some(h @ url::Host::Domain(_)) => crate::config::is_loopback_host(&h),
        None => return Err(invalid(format!("{uri:?} has no host"))),
    };
    match u.scheme() {
        "https" => {}
        "http" if plain_ok => {}
        s => {
            return Err(invalid(format!(
                "{uri:?}: {s}:// is allowed only for loopback and link-local hosts; use https"
            )));
        }
    }
    let token_file = PathBuf::from(var(POD_IDENTITY_TOKEN_FILE_ENV)?);
    std::fs::metadata(&token_file).map_err(|e| ConfigError::Secret {
        source_name: format!(
            "file {} (from {POD_IDENTITY_TOKEN_FILE_ENV})",
            token_file.display()
        ),
        message: e.to_string(),
    })?;
    Ok(KeySource::PodIdentity { uri, token_file })
}

/// The parts of an outgoing request that authentication looks at.
pub struct Outgoing<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// `Host` as sent: host, plus `:port` for a non-default port.
    pub host: &'a str,
    /// The path as sent.
    pub path: &'a str,
    /// Query parameters, unencoded.
    pub query: &'a [(String, String)],
    /// The exact body bytes.
    pub body: &'a [u8],
    /// The target's project id (`X-Project-Id`); none for account-wide requests.
    pub project_id: Option<&'a str>,
}

/// The gate name of an access key.
fn keys_gate(keys: &Keys) -> String {
    format!("aksk:{}", keys.ak.expose_secret())
}

fn put(h: &mut HeaderMap, name: &str, value: &str, sensitive: bool) -> Result<(), String> {
    let n = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| format!("header {name} has a value that is not valid in http"))?;
    v.set_sensitive(sensitive);
    h.insert(n, v);
    Ok(())
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const R: &str = "[redacted]";
        match &self.base {
            Base::AkSk(k) => f
                .debug_struct("AkSk")
                .field("keys", &k.current().0)
                .finish(),
            Base::Password {
                user_name,
                domain_name,
                ..
            } => f
                .debug_struct("Password")
                .field("user_name", user_name)
                .field("domain_name", domain_name)
                .field("password", &R)
                .finish(),
            Base::Token { source, .. } => f
                .debug_struct("Token")
                .field("source", source)
                .field("current", &R)
                .finish(),
            Base::Fetched { source, .. } => f
                .debug_struct("Fetched")
                .field("source", &source.describe())
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ak` and `sk` written in a new directory, and a source for each file there.
    fn key_files(ak: &str, sk: &str) -> (tempfile::TempDir, impl Fn(&str) -> SecretSource) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ak"), ak).expect("write");
        std::fs::write(dir.path().join("sk"), sk).expect("write");
        let base: std::path::PathBuf = dir.path().into();
        let file = move |n: &str| SecretSource::File {
            template: n.into(),
            base: base.clone(),
        };
        (dir, file)
    }

    #[test]
    fn debug_of_credentials_redacts_secrets() {
        let c = Credentials::aksk("AKVISIBLE123", "SKSECRETVALUE", Some("STSTOKENVALUE"));
        let d = format!("{c:?}");
        for s in ["AKVISIBLE123", "SKSECRETVALUE", "STSTOKENVALUE"] {
            assert!(!d.contains(s), "{d}");
        }
        let c = Credentials::password("ops", "acme", "hunter2-pw");
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2-pw") && d.contains("ops"), "{d}");
        let c = Credentials::token(
            SecretSource::Env("VPCEP_APPROVER_TOKEN".into()),
            "MIItokenvalue",
        );
        let d = format!("{c:?}");
        assert!(
            !d.contains("MIItokenvalue") && d.contains("VPCEP_APPROVER_TOKEN"),
            "{d}"
        );
    }

    #[test]
    fn load_names_the_missing_variable() {
        let auth = Auth::AkSk {
            access_key: SecretSource::Env("VPCEP_TEST_AUTH_UNSET_AK_1".into()),
            secret_key: SecretSource::Env("VPCEP_TEST_AUTH_UNSET_SK_1".into()),
            security_token: SecretSource::Env("VPCEP_TEST_AUTH_UNSET_ST_1".into()),
        };
        let e = Credentials::load(&auth).expect_err("missing").to_string();
        assert!(e.contains("VPCEP_TEST_AUTH_UNSET_AK_1"), "{e}");
    }

    #[test]
    fn load_reads_files_and_optional_token() {
        let (_dir, file) = key_files("AK1\n", "SK1\n");
        let auth = Auth::AkSk {
            access_key: file("ak"),
            secret_key: file("sk"),
            security_token: SecretSource::Env("VPCEP_TEST_AUTH_UNSET_ST_2".into()),
        };
        let c = Credentials::load(&auth).expect("loads");
        let Some(Credential::Sign { keys, .. }) = c.static_credential() else {
            panic!("{c:?}");
        };
        assert_eq!(keys.ak.expose_secret(), "AK1");
        assert_eq!(keys.sk.expose_secret(), "SK1");
        assert!(keys.security_token.is_none());
        let e = Credentials::load(&Auth::Token {
            token: file("nope"),
        })
        .expect_err("missing file")
        .to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn one_gate_per_key_shared_by_every_use() {
        let c = Credentials::aksk("a", "b", None);
        let cred = c.static_credential().expect("static keys");
        let g1 = c.gate_for(&cred, false).expect("signing has a gate");
        let g2 = c.gate_for(&cred, false).expect("signing has a gate");
        assert!(Arc::ptr_eq(&g1, &g2));
        let p = Credentials::password("u", "d", "pw");
        assert!(p.gate_for(&Credential::None, true).is_some());
        let token = Credential::Token {
            token: Arc::new("t".into()),
            origin: Origin::Base(0),
        };
        assert!(p.gate_for(&token, false).is_none());
        let t = Credentials::token(SecretSource::Env("X".into()), "t");
        assert!(t.gate_for(&token, false).is_none());
    }

    #[test]
    fn a_failed_key_that_was_replaced_no_longer_keeps_the_daemon_unready() {
        let (dir, file) = key_files("OLD", "s");
        let c = Credentials::load(&Auth::AkSk {
            access_key: file("ak"),
            secret_key: file("sk"),
            security_token: SecretSource::Env("VPCEP_TEST_AUTH_UNSET_ST_3".into()),
        })
        .expect("loads");
        let old = c.static_credential().expect("keys");
        c.gate_for(&old, false)
            .expect("gate")
            .failed("401 for OLD".into());
        let reason = c.unready_reason("https://iam", None).expect("unready");
        assert!(reason.contains("401 for OLD"), "{reason}");
        // The files are rotated; once the change is taken (quiet for a second), the old
        // key's gate no longer speaks for the daemon.
        std::fs::write(dir.path().join("ak"), "NEW").expect("write");
        std::thread::sleep(std::time::Duration::from_millis(2200));
        assert_eq!(c.unready_reason("https://iam", None), None);
        let Some(Credential::Sign { keys, .. }) = c.static_credential() else {
            panic!("keys");
        };
        assert_eq!(keys.ak.expose_secret(), "NEW");
    }

    #[tokio::test]
    async fn a_failing_agency_key_makes_only_its_own_target_unready() {
        let c = Credentials::aksk("BASE", "s", None);
        let agency = Agency {
            name: "approver".into(),
            domain: crate::config::AgencyDomain::Name("acct-b".into()),
            duration: std::time::Duration::from_secs(3600),
        };
        let slot = c.agency_slot("https://iam", &agency);
        let held = slot
            .get(std::time::Duration::from_secs(1), || async {
                Ok(super::slot::Issued {
                    value: Keys::new("AGENCYKEY", "s", Some("t")),
                    lifetime: std::time::Duration::from_secs(3600),
                    margin: std::time::Duration::from_secs(600),
                    expires_at: "later".into(),
                })
            })
            .await
            .expect("keys");
        let cred = Credential::Sign {
            keys: held.value.clone(),
            origin: Origin::Keys(slot.clone(), held.generation, held.expires_at),
        };
        c.gate_for(&cred, false)
            .expect("gate")
            .failed("401 for AGENCYKEY".into());
        let theirs = c
            .unready_reason("https://iam", Some(&agency))
            .expect("the agency target is unready");
        assert!(theirs.contains("AGENCYKEY"), "{theirs}");
        assert_eq!(c.unready_reason("https://iam", None), None);
    }

    #[test]
    fn gates_of_keys_nobody_holds_are_forgotten() {
        let c = Credentials::aksk("a", "b", None);
        let held = c
            .gate_for(
                &Credential::Sign {
                    keys: Arc::new(Keys::new("KEEP", "s", None)),
                    origin: Origin::Base(0),
                },
                false,
            )
            .expect("gate");
        for i in 0..100 {
            let keys = Arc::new(Keys::new(&format!("TEMP{i}"), "s", Some("t")));
            let _ = c.gate_for(
                &Credential::Sign {
                    keys,
                    origin: Origin::Base(0),
                },
                false,
            );
        }
        let gates = lock(&c.gates);
        assert!(gates.len() <= 17, "{}", gates.len());
        assert!(gates.values().any(|g| Arc::ptr_eq(g, &held)));
    }
}
