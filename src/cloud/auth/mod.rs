//! Credentials: the secrets of `[auth]`, what each request is authenticated with, the IAM
//! token caches and the authentication backoff ([`gate`]).
//!
//! [`Credentials`] is the one type: it owns the secrets (every one a [`SecretString`];
//! `Debug` shows none of them), the project-scoped IAM tokens of `method = "password"`
//! (one per project, fetched by one caller at a time), the token of `method = "token"`
//! (re-read from its source after a 401), and one [`Gate`] per credential key. Sending
//! is the transport's business: it asks [`Credentials::credential`] for the credential
//! of each attempt and [`Credentials::apply`] to put it on the request.

pub mod gate;
pub mod iam;

use super::error::{ApiError, sanitize};
use super::signer;
use crate::config::{Auth, ConfigError, SecretSource};
pub use gate::{BACKOFF_MAX, BACKOFF_MIN, Gate, Probe};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("vpcep-approver/", env!("CARGO_PKG_VERSION"));

/// The loaded secrets of `[auth]` and the state that goes with them.
pub struct Credentials {
    secret: Secret,
    /// Project-scoped IAM tokens (`password`), by project and IAM endpoint; each slot's
    /// async lock makes concurrent callers share one IAM request.
    tokens: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<CachedToken>>>>>,
    /// The authentication gate of each credential key (an access key, an IAM user),
    /// shared by every target that uses it.
    gates: Mutex<HashMap<String, Arc<Gate>>>,
}

enum Secret {
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

/// The token of `method = "token"` and how often it was replaced.
struct TokenSlot {
    token: Arc<SecretString>,
    generation: u64,
}

/// A cached IAM token of `method = "password"`.
struct CachedToken {
    token: Arc<SecretString>,
    refresh_at: Instant,
    expires_at: Instant,
    generation: u64,
}

/// What one attempt is authenticated with.
#[derive(Clone)]
pub enum Credential {
    /// `SDK-HMAC-SHA256` with the access key.
    Sign,
    /// `X-Auth-Token`, with its generation so a 401 invalidates exactly this one.
    Token(Arc<SecretString>, u64),
    /// Nothing (the IAM token request itself).
    None,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Credentials {
    fn with(secret: Secret) -> Credentials {
        Credentials {
            secret,
            tokens: Mutex::new(HashMap::new()),
            gates: Mutex::new(HashMap::new()),
        }
    }

    /// Access key / secret key signing; `security_token` for temporary keys.
    pub fn aksk(ak: &str, sk: &str, security_token: Option<&str>) -> Credentials {
        Credentials::with(Secret::AkSk {
            ak: ak.into(),
            sk: sk.into(),
            security_token: security_token.map(SecretString::from),
        })
    }

    /// An IAM user password, exchanged for a project-scoped token per target.
    pub fn password(user_name: &str, domain_name: &str, password: &str) -> Credentials {
        Credentials::with(Secret::Password {
            user_name: user_name.to_owned(),
            domain_name: domain_name.to_owned(),
            password: password.into(),
        })
    }

    /// A ready-made token, re-read from `source` when the API answers 401.
    pub fn token(source: SecretSource, current: &str) -> Credentials {
        Credentials::with(Secret::Token {
            source,
            slot: Mutex::new(TokenSlot {
                token: Arc::new(current.into()),
                generation: 0,
            }),
        })
    }

    /// Reads every secret `auth` names. A missing one is an error naming the environment
    /// variable or file (never the value).
    pub fn load(auth: &Auth) -> Result<Credentials, ConfigError> {
        Ok(Credentials::with(match auth {
            Auth::AkSk {
                access_key,
                secret_key,
                security_token,
            } => Secret::AkSk {
                ak: access_key.load()?,
                sk: secret_key.load()?,
                security_token: security_token.load_optional()?,
            },
            Auth::Password {
                user_name,
                domain_name,
                password,
            } => Secret::Password {
                user_name: user_name.clone(),
                domain_name: domain_name.clone(),
                password: password.load()?,
            },
            Auth::Token { token } => Secret::Token {
                source: token.clone(),
                slot: Mutex::new(TokenSlot {
                    token: Arc::new(token.load()?),
                    generation: 0,
                }),
            },
        }))
    }

    /// `aksk`, `password` or `token`.
    pub fn method(&self) -> &'static str {
        match &self.secret {
            Secret::AkSk { .. } => "aksk",
            Secret::Password { .. } => "password",
            Secret::Token { .. } => "token",
        }
    }

    fn gate(&self, key: String) -> Arc<Gate> {
        lock(&self.gates).entry(key).or_default().clone()
    }

    /// The gate of the key an attempt uses: the access key for signing, the IAM user for
    /// token requests; none for a ready-made token (a 401 re-reads it instead).
    pub fn gate_for(&self, cred: &Credential, iam: bool) -> Option<Arc<Gate>> {
        match (&self.secret, cred) {
            (Secret::AkSk { ak, .. }, Credential::Sign) => {
                Some(self.gate(format!("aksk:{}", ak.expose_secret())))
            }
            (
                Secret::Password {
                    user_name,
                    domain_name,
                    ..
                },
                Credential::None,
            ) if iam => Some(self.gate(format!("iam:{domain_name}/{user_name}"))),
            _ => None,
        }
    }

    /// Why requests with these credentials cannot work right now (the current key is in
    /// its authentication backoff), if they cannot.
    pub fn unready_reason(&self) -> Option<String> {
        let gate = match &self.secret {
            Secret::AkSk { .. } => self.gate_for(&Credential::Sign, false),
            Secret::Password { .. } => self.gate_for(&Credential::None, true),
            Secret::Token { .. } => None,
        };
        gate?.unready_reason()
    }

    /// Whether this method fetches a token per project from IAM.
    pub fn uses_iam(&self) -> bool {
        matches!(self.secret, Secret::Password { .. })
    }

    /// The body of the IAM token request for `project_id` (`password` only). It holds
    /// the password: send it and drop it.
    pub fn iam_token_body(&self, project_id: &str) -> Option<Vec<u8>> {
        match &self.secret {
            Secret::Password {
                user_name,
                domain_name,
                password,
            } => Some(iam::password_token_body(
                user_name,
                domain_name,
                password,
                project_id,
            )),
            _ => None,
        }
    }

    /// The credential for the next attempt of a request to a project: signing, the
    /// shared token, or the project's IAM token, fetched with `fetch` (one caller at a
    /// time per `project`) when absent or due. A failed refresh keeps the current token
    /// while it is still valid.
    pub async fn credential<F, Fut>(&self, project: &str, fetch: F) -> Result<Credential, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<iam::IssuedToken, ApiError>>,
    {
        match &self.secret {
            Secret::AkSk { .. } => Ok(Credential::Sign),
            Secret::Token { slot, .. } => {
                let s = lock(slot);
                Ok(Credential::Token(s.token.clone(), s.generation))
            }
            Secret::Password { .. } => {
                let cell = lock(&self.tokens)
                    .entry(project.to_owned())
                    .or_default()
                    .clone();
                let mut slot = cell.lock().await;
                let mut generation = 0;
                if let Some(c) = slot.as_ref() {
                    generation = c.generation;
                    if Instant::now() < c.refresh_at {
                        return Ok(Credential::Token(c.token.clone(), c.generation));
                    }
                }
                match fetch().await {
                    Ok(issued) => {
                        let start = Instant::now();
                        let margin = iam::refresh_margin(issued.lifetime);
                        let token = Arc::new(issued.token);
                        let generation = generation + 1;
                        tracing::info!(
                            project_id = project,
                            expires_at = %issued.expires_at,
                            "obtained a project-scoped iam token"
                        );
                        *slot = Some(CachedToken {
                            token: token.clone(),
                            refresh_at: start + issued.lifetime.saturating_sub(margin),
                            expires_at: start + issued.lifetime,
                            generation,
                        });
                        Ok(Credential::Token(token, generation))
                    }
                    Err(e) => match slot.as_ref() {
                        Some(c) if Instant::now() < c.expires_at => {
                            tracing::warn!(
                                project_id = project,
                                error = %e,
                                "iam token refresh failed; using the current token until it expires"
                            );
                            Ok(Credential::Token(c.token.clone(), c.generation))
                        }
                        _ => Err(e),
                    },
                }
            }
        }
    }

    /// After a 401 with token `generation`: drop that token (password) or re-read the
    /// token source (token). Returns whether a retry can use a different credential; an
    /// error when the source cannot be re-read (it names the source, never the value).
    pub fn invalidate(
        &self,
        project: &str,
        generation: u64,
        err: &ApiError,
    ) -> Result<bool, ApiError> {
        match &self.secret {
            Secret::Password { .. } => {
                let cell = lock(&self.tokens).get(project).cloned();
                // `try_lock`: if another task holds the slot it is fetching a new token.
                if let Some(cell) = cell
                    && let Ok(mut slot) = cell.try_lock()
                    && let Some(c) = slot.as_mut()
                    && c.generation == generation
                {
                    // Keep the generation counting up across the drop.
                    c.refresh_at = Instant::now();
                    c.expires_at = Instant::now();
                }
                Ok(true)
            }
            Secret::Token { source, slot } => {
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
            Secret::AkSk { .. } => Ok(false),
        }
    }

    /// Puts `cred` on a request: for signing, the signed headers and `Authorization`
    /// (the query of `url` becomes the signer's canonical query, so what is signed is
    /// what is sent); for a token, `X-Auth-Token`. Secret values are marked sensitive.
    pub fn apply(&self, cred: &Credential, req: &Outgoing<'_>) -> Result<HeaderMap, String> {
        let mut h = HeaderMap::new();
        match (cred, &self.secret) {
            (
                Credential::Sign,
                Secret::AkSk {
                    ak,
                    sk,
                    security_token,
                },
            ) => {
                let mut signed: Vec<(String, String)> = vec![
                    ("Content-Type".into(), "application/json".into()),
                    ("Host".into(), req.host.to_owned()),
                    ("User-Agent".into(), USER_AGENT.into()),
                    ("X-Project-Id".into(), req.project_id.to_owned()),
                    (
                        "X-Sdk-Date".into(),
                        signer::format_sdk_date(chrono::Utc::now()),
                    ),
                ];
                if let Some(st) = security_token {
                    signed.push(("X-Security-Token".into(), st.expose_secret().to_owned()));
                }
                let s = signer::sign(
                    ak.expose_secret(),
                    sk.expose_secret().as_bytes(),
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
            (Credential::Token(token, _), _) => {
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
    /// The target's project id (`X-Project-Id`).
    pub project_id: &'a str,
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
        match &self.secret {
            Secret::AkSk { security_token, .. } => f
                .debug_struct("AkSk")
                .field("ak", &R)
                .field("sk", &R)
                .field("security_token", &security_token.as_ref().map(|_| R))
                .finish(),
            Secret::Password {
                user_name,
                domain_name,
                ..
            } => f
                .debug_struct("Password")
                .field("user_name", user_name)
                .field("domain_name", domain_name)
                .field("password", &R)
                .finish(),
            Secret::Token { source, .. } => f
                .debug_struct("Token")
                .field("source", source)
                .field("current", &R)
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ak"), "AK1\n").expect("write");
        std::fs::write(dir.path().join("sk"), "SK1\n").expect("write");
        let file = |n: &str| SecretSource::File {
            template: n.into(),
            base: dir.path().into(),
        };
        let auth = Auth::AkSk {
            access_key: file("ak"),
            secret_key: file("sk"),
            security_token: SecretSource::Env("VPCEP_TEST_AUTH_UNSET_ST_2".into()),
        };
        let c = Credentials::load(&auth).expect("loads");
        match &c.secret {
            Secret::AkSk {
                ak,
                sk,
                security_token,
            } => {
                assert_eq!(ak.expose_secret(), "AK1");
                assert_eq!(sk.expose_secret(), "SK1");
                assert!(security_token.is_none());
            }
            _ => panic!("{c:?}"),
        }
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
        let g1 = c
            .gate_for(&Credential::Sign, false)
            .expect("signing has a gate");
        let g2 = c
            .gate_for(&Credential::Sign, false)
            .expect("signing has a gate");
        assert!(Arc::ptr_eq(&g1, &g2));
        let p = Credentials::password("u", "d", "pw");
        assert!(p.gate_for(&Credential::None, true).is_some());
        assert!(
            p.gate_for(&Credential::Token(Arc::new("t".into()), 1), false)
                .is_none()
        );
        let t = Credentials::token(SecretSource::Env("X".into()), "t");
        assert!(
            t.gate_for(&Credential::Token(Arc::new("t".into()), 0), false)
                .is_none()
        );
    }
}
