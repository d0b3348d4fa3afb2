//! Keyless credentials (README "Simulator"): the ECS metadata service, CCE pod identity,
//! IAM agencies (`POST /v3.0/OS-CREDENTIAL/securitytokens`, `assume_role`), and the
//! registry of the temporary access keys they issue, which every signed request is
//! checked against.
//!
//! A temporary key is a known access key only together with its security token and
//! before its expiry: a signed request with one must carry `X-Security-Token` equal to
//! the key's token, listed in `SignedHeaders` (the official SDK signs it; whether the real
//! gateway insists on that is not documented, the simulator does so that a client that
//! forgets shows), and must arrive before `expires_at`. A key from an agency acts only
//! on the projects configured for that agency.
//!
//! This module holds the settings and the rules; `server` wires them to HTTP.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// Pod-identity token the simulator accepts when none is configured.
pub const DEFAULT_POD_TOKEN: &str = "sim-pod-identity-token";
/// Path of the pod-identity route when none is configured.
pub const DEFAULT_POD_IDENTITY_PATH: &str = "/v1/pod-identity/credentials";
/// Name of the example agency.
pub const DEFAULT_AGENCY_NAME: &str = "vpcep-approver";
/// Account (domain) name of the example agency's delegating account.
pub const DEFAULT_AGENCY_DOMAIN_NAME: &str = "sim-agency-domain";
/// Account (domain) id of the example agency's delegating account.
pub const DEFAULT_AGENCY_DOMAIN_ID: &str = "a9e2c4f0d17b4e6f8c3b5a7d9e1f2a3b";
/// The one project the example agency's keys may act on.
pub const DEFAULT_AGENCY_PROJECT_ID: &str = "5d1f0c3b8a2e4c7f9b6a1d0e3c5f7a9b";

/// Shortest and longest `duration_seconds` IAM grants an agency (15 min to 24 h).
pub const AGENCY_DURATION_RANGE: std::ops::RangeInclusive<u64> = 900..=86_400;
/// `duration_seconds` when the request has none (IAM's default, 15 min).
const AGENCY_DEFAULT_DURATION: u64 = 900;
/// Longest `duration_seconds` when the caller itself signs with a temporary key. IAM
/// documents this 1 h cap for its newer AssumeAgency API; the simulator applies it to
/// this one too (README "Simulator"), so a client that asks for more on top of metadata
/// or pod-identity keys is refused.
pub const AGENCY_MAX_DURATION_FROM_TEMPORARY: u64 = 3_600;
/// Range of `X-Metadata-Token-Ttl-Seconds` (1 s to 6 h).
pub const METADATA_TTL_RANGE: std::ops::RangeInclusive<u64> = 1..=21_600;
/// Text of the metadata service's answer when no agency is attached to the instance
/// (the official SDKs look for it).
pub const NO_AGENCY_TEXT: &str = "Please configure Cloud Service Agency first";
/// Issued temporary keys kept (expired ones too, so that their use is told apart from an
/// unknown key); the ones that expired first go beyond this.
const MAX_TEMPORARY_KEYS: usize = 100_000;

/// How the ECS metadata service behaves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataMode {
    /// Session tokens from the `PUT`, required by the `securitykey` `GET`.
    #[default]
    Normal,
    /// The token `PUT` answers [`MetadataSettings::token_unsupported_status`] and the
    /// `GET` needs no session token (an older service; the SDK then goes on without one).
    TokenUnsupported,
    /// No agency is attached to the instance: the `GET` answers
    /// [`MetadataSettings::no_agency_status`].
    NoAgency,
}

impl std::str::FromStr for MetadataMode {
    type Err = String;
    /// `normal`, `token-unsupported`, `no-agency` (or with `_`).
    fn from_str(s: &str) -> Result<Self, String> {
        choice(s, "metadata mode", "normal, token-unsupported or no-agency")
    }
}

/// One of an enum's snake_case serde names, also written with `-`.
fn choice<T: serde::de::DeserializeOwned>(
    s: &str,
    what: &str,
    expected: &str,
) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.replace('-', "_")))
        .map_err(|_| format!("unknown {what} {s:?}: expected {expected}"))
}

/// The ECS metadata service's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetadataSettings {
    /// Normal, token route unsupported, or no agency.
    pub mode: MetadataMode,
    /// Status of the token `PUT` in [`MetadataMode::TokenUnsupported`]: 404, 405 or 503.
    pub token_unsupported_status: u16,
    /// Status of the `securitykey` `GET` in [`MetadataMode::NoAgency`]: 401 (with
    /// [`NO_AGENCY_TEXT`]) or 404.
    pub no_agency_status: u16,
}

impl Default for MetadataSettings {
    /// Normal; 404 when the token route is unsupported; 401 when there is no agency.
    fn default() -> Self {
        MetadataSettings {
            mode: MetadataMode::Normal,
            token_unsupported_status: 404,
            no_agency_status: 401,
        }
    }
}

/// The spelling of the pod-identity credential body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodBody {
    /// `{"credential":{"access","secret","securitytoken","expires_at"}}`, as the metadata
    /// service and IAM answer.
    #[default]
    Credential,
    /// `{"credentials":{"access_key_id","secret_access_key","security_token","expiration"}}`.
    CredentialsSnakeCase,
    /// `{"credentials":{"accessKeyId","secretAccessKey","securityToken","expiration"},…}`
    /// with `assumedAgency`, `audience`, `podIdentityAssociationId` and `subject` beside
    /// it: the answer the official SDKs' own tests expect from the CCE agent.
    CredentialsCamelCase,
}

impl std::str::FromStr for PodBody {
    type Err = String;
    /// `credential`, `credentials-snake-case`, `credentials-camel-case` (or with `_`).
    fn from_str(s: &str) -> Result<Self, String> {
        choice(
            s,
            "pod-identity body",
            "credential, credentials-snake-case or credentials-camel-case",
        )
    }
}

/// The CCE pod-identity route's settings.
#[derive(Clone, PartialEq, Eq)]
pub struct PodIdentitySettings {
    /// Path of the `POST` (the client's `HC_CONTAINER_CREDENTIALS_FULL_URI` is the base
    /// URL plus this).
    pub path: String,
    /// The `Authorization` value accepted (the contents of the client's token file).
    pub token: String,
    /// Spelling of the answer.
    pub body: PodBody,
}

impl Default for PodIdentitySettings {
    /// [`DEFAULT_POD_IDENTITY_PATH`], [`DEFAULT_POD_TOKEN`], [`PodBody::Credential`].
    fn default() -> Self {
        PodIdentitySettings {
            path: DEFAULT_POD_IDENTITY_PATH.to_owned(),
            token: DEFAULT_POD_TOKEN.to_owned(),
            body: PodBody::Credential,
        }
    }
}

impl fmt::Debug for PodIdentitySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodIdentitySettings")
            .field("path", &self.path)
            .field("token", &"<redacted>")
            .field("body", &self.body)
            .finish()
    }
}

/// An IAM agency another account created for the caller's account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimAgency {
    /// `agency_name` to ask for.
    pub agency_name: String,
    /// Name of the delegating account; a request naming it must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_name: Option<String>,
    /// Id of the delegating account; a request naming it must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_id: Option<String>,
    /// The projects of the delegating account its keys may act on.
    #[serde(default)]
    pub project_ids: Vec<String>,
}

impl SimAgency {
    /// The example agency: [`DEFAULT_AGENCY_NAME`] in [`DEFAULT_AGENCY_DOMAIN_NAME`]
    /// ([`DEFAULT_AGENCY_DOMAIN_ID`]) on [`DEFAULT_AGENCY_PROJECT_ID`].
    pub fn example() -> Self {
        SimAgency {
            agency_name: DEFAULT_AGENCY_NAME.to_owned(),
            domain_name: Some(DEFAULT_AGENCY_DOMAIN_NAME.to_owned()),
            domain_id: Some(DEFAULT_AGENCY_DOMAIN_ID.to_owned()),
            project_ids: vec![DEFAULT_AGENCY_PROJECT_ID.to_owned()],
        }
    }

    /// `NAME:DOMAIN_NAME:DOMAIN_ID:PROJECT_ID[,PROJECT_ID…]`; one of the domain fields may
    /// be empty.
    pub fn parse(spec: &str) -> Result<SimAgency, String> {
        let parts: Vec<&str> = spec.split(':').collect();
        let [name, domain_name, domain_id, projects] = parts.as_slice() else {
            return Err(format!(
                "agency {spec:?} must be NAME:DOMAIN_NAME:DOMAIN_ID:PROJECT_ID"
            ));
        };
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let a = SimAgency {
            agency_name: (*name).to_owned(),
            domain_name: some(domain_name),
            domain_id: some(domain_id),
            project_ids: projects
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        a.validate().map_err(|e| format!("agency {spec:?}: {e}"))?;
        Ok(a)
    }

    fn validate(&self) -> Result<(), String> {
        if self.agency_name.is_empty() {
            return Err("the agency name is empty".into());
        }
        if self.domain_name.is_none() && self.domain_id.is_none() {
            return Err(format!(
                "agency {} has neither a domain name nor a domain id",
                self.agency_name
            ));
        }
        if self.project_ids.is_empty() {
            return Err(format!("agency {} has no project id", self.agency_name));
        }
        Ok(())
    }

    /// Whether an `assume_role` request names this agency (every domain field it gives
    /// must match).
    fn matches(&self, r: &AssumeRole) -> bool {
        self.agency_name == r.agency_name
            && (r.domain_name.is_some() || r.domain_id.is_some())
            && r.domain_name
                .as_ref()
                .is_none_or(|n| self.domain_name.as_ref() == Some(n))
            && r.domain_id
                .as_ref()
                .is_none_or(|i| self.domain_id.as_ref() == Some(i))
    }
}

/// Every keyless setting; changed at run time through `POST /_sim/keyless` or
/// [`super::Simulator::set_keyless`].
#[derive(Debug, Clone, PartialEq)]
pub struct KeylessSettings {
    /// Lifetime of metadata and pod-identity keys, and the cap on an agency's
    /// `duration_seconds`.
    pub credential_lifetime: Duration,
    /// The ECS metadata service.
    pub metadata: MetadataSettings,
    /// The CCE pod-identity route.
    pub pod_identity: PodIdentitySettings,
    /// The agencies `assume_role` may name.
    pub agencies: Vec<SimAgency>,
}

impl Default for KeylessSettings {
    /// 24 h keys, the metadata service normal, the default pod route and token, and the
    /// [`SimAgency::example`].
    fn default() -> Self {
        KeylessSettings {
            credential_lifetime: Duration::from_secs(24 * 3600),
            metadata: MetadataSettings::default(),
            pod_identity: PodIdentitySettings::default(),
            agencies: vec![SimAgency::example()],
        }
    }
}

impl KeylessSettings {
    /// Checks every setting; the message names the one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.credential_lifetime.is_zero() {
            return Err("credential_lifetime must be more than zero".into());
        }
        if ![404, 405, 503].contains(&self.metadata.token_unsupported_status) {
            return Err(format!(
                "metadata token_unsupported_status {} is not 404, 405 or 503",
                self.metadata.token_unsupported_status
            ));
        }
        if ![401, 404].contains(&self.metadata.no_agency_status) {
            return Err(format!(
                "metadata no_agency_status {} is not 401 or 404",
                self.metadata.no_agency_status
            ));
        }
        let p = &self.pod_identity.path;
        if !p.starts_with('/') || p.starts_with("/_sim/") || p.contains(['?', '#']) {
            return Err(format!(
                "pod-identity path {p:?} must start with / and not be under /_sim/"
            ));
        }
        if self.pod_identity.token.is_empty() {
            return Err("the pod-identity token is empty".into());
        }
        for a in &self.agencies {
            a.validate()?;
        }
        Ok(())
    }

    /// The projects some agency's keys may act on.
    pub fn agency_projects(&self) -> impl Iterator<Item = &str> {
        self.agencies
            .iter()
            .flat_map(|a| a.project_ids.iter().map(String::as_str))
    }

    /// The admin view: everything but the pod-identity token.
    pub(crate) fn view(&self) -> Value {
        json!({
            "credential_lifetime": humantime::format_duration(self.credential_lifetime).to_string(),
            "metadata": self.metadata,
            "pod_identity": {"path": self.pod_identity.path, "body": self.pod_identity.body},
            "agencies": self.agencies,
        })
    }

    /// Applies an admin update; nothing changes if the result is invalid.
    pub(crate) fn apply(&mut self, u: KeylessUpdate) -> Result<(), String> {
        let mut next = self.clone();
        if let Some(d) = u.credential_lifetime {
            next.credential_lifetime = d;
        }
        if let Some(m) = u.metadata {
            if let Some(mode) = m.mode {
                next.metadata.mode = mode;
            }
            if let Some(s) = m.token_unsupported_status {
                next.metadata.token_unsupported_status = s;
            }
            if let Some(s) = m.no_agency_status {
                next.metadata.no_agency_status = s;
            }
        }
        if let Some(p) = u.pod_identity {
            if let Some(path) = p.path {
                next.pod_identity.path = path;
            }
            if let Some(token) = p.token {
                next.pod_identity.token = token;
            }
            if let Some(body) = p.body {
                next.pod_identity.body = body;
            }
        }
        if let Some(a) = u.agencies {
            next.agencies = a;
        }
        next.validate()?;
        *self = next;
        Ok(())
    }
}

/// `POST /_sim/keyless`: any subset of the settings; what is absent is kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeylessUpdate {
    #[serde(default, with = "humantime_serde")]
    credential_lifetime: Option<Duration>,
    #[serde(default)]
    metadata: Option<MetadataUpdate>,
    #[serde(default)]
    pod_identity: Option<PodIdentityUpdate>,
    #[serde(default)]
    agencies: Option<Vec<SimAgency>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataUpdate {
    #[serde(default)]
    mode: Option<MetadataMode>,
    #[serde(default)]
    token_unsupported_status: Option<u16>,
    #[serde(default)]
    no_agency_status: Option<u16>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PodIdentityUpdate {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    body: Option<PodBody>,
}

impl fmt::Debug for PodIdentityUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodIdentityUpdate")
            .field("path", &self.path)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("body", &self.body)
            .finish()
    }
}

/// Which route issued a temporary key (the index of its counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeySource {
    Metadata,
    PodIdentity,
    Agency,
}

/// An issued temporary key.
#[derive(Clone)]
pub(crate) struct TempKey {
    pub secret: String,
    pub security_token: String,
    pub expires_at: DateTime<Utc>,
    /// The projects it may act on; `None`: any (the caller's own account).
    pub projects: Option<Vec<String>>,
}

impl fmt::Debug for TempKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TempKey")
            .field("expires_at", &self.expires_at)
            .field("projects", &self.projects)
            .finish_non_exhaustive()
    }
}

/// A freshly issued key, for the answer.
pub(crate) struct Issued {
    pub access: String,
    pub secret: String,
    pub security_token: String,
    pub expires_at: DateTime<Utc>,
}

/// Why a temporary key's request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenProblem {
    /// No `X-Security-Token`.
    Missing,
    /// `X-Security-Token` present but not in `SignedHeaders`.
    Unsigned,
    /// `X-Security-Token` is not the key's token.
    Mismatched,
    /// The key has expired.
    Expired,
}

/// The issued temporary keys.
#[derive(Debug, Default)]
pub(crate) struct TempKeys {
    keys: HashMap<String, TempKey>,
}

impl TempKeys {
    /// Issues a key valid for `lifetime` from `now`.
    pub fn issue(
        &mut self,
        lifetime: chrono::Duration,
        projects: Option<Vec<String>>,
        now: DateTime<Utc>,
    ) -> Issued {
        if self.keys.len() >= MAX_TEMPORARY_KEYS {
            self.prune();
        }
        let expires_at = now
            .checked_add_signed(lifetime)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut rng = rand::rng();
        let access = random_string(&mut rng, UPPER_ALNUM, 20);
        let secret = random_string(&mut rng, ALNUM, 40);
        // Real security tokens are long (kilobytes) and URL-safe base64: a client that
        // truncates or re-encodes one shows.
        let security_token = random_string(&mut rng, BASE64URL, 1536);
        self.keys.insert(
            access.clone(),
            TempKey {
                secret: secret.clone(),
                security_token: security_token.clone(),
                expires_at,
                projects,
            },
        );
        Issued {
            access,
            secret,
            security_token,
            expires_at,
        }
    }

    /// Drops the quarter of the keys that expired first.
    fn prune(&mut self) {
        let mut times: Vec<DateTime<Utc>> = self.keys.values().map(|k| k.expires_at).collect();
        times.sort_unstable();
        if let Some(&cut) = times.get(times.len() / 4) {
            self.keys.retain(|_, k| k.expires_at > cut);
        }
    }

    pub fn get(&self, access: &str) -> Option<&TempKey> {
        self.keys.get(access)
    }

    /// Makes every key expired; returns how many there are.
    pub fn expire_all(&mut self, now: DateTime<Utc>) -> usize {
        let past = now - chrono::Duration::seconds(1);
        for k in self.keys.values_mut() {
            k.expires_at = k.expires_at.min(past);
        }
        self.keys.len()
    }
}

/// Checks a verified request by a temporary key: its `X-Security-Token` (`header`,
/// `signed` if listed in `SignedHeaders`) and its expiry.
pub(crate) fn check_security_token(
    key: &TempKey,
    header: Option<&str>,
    signed: bool,
    now: DateTime<Utc>,
) -> Result<(), TokenProblem> {
    let Some(token) = header else {
        return Err(TokenProblem::Missing);
    };
    if !signed {
        return Err(TokenProblem::Unsigned);
    }
    if !constant_time_eq(token.trim().as_bytes(), key.security_token.as_bytes()) {
        return Err(TokenProblem::Mismatched);
    }
    if key.expires_at <= now {
        return Err(TokenProblem::Expired);
    }
    Ok(())
}

/// Whether two byte strings are equal, in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn random_string(rng: &mut impl rand::Rng, alphabet: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

/// A metadata session token.
pub(crate) fn session_token() -> String {
    random_string(&mut rand::rng(), BASE64URL, 56)
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, the time format of IAM and of every credential answer.
pub(crate) fn format_micros(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// `{"credential":{"access","secret","securitytoken","expires_at"}}`: the metadata
/// service's and IAM's answer.
pub(crate) fn credential_body(c: &Issued) -> Value {
    json!({"credential": {
        "access": c.access,
        "secret": c.secret,
        "securitytoken": c.security_token,
        "expires_at": format_micros(c.expires_at),
    }})
}

/// The pod-identity answer in the spelling asked for.
pub(crate) fn pod_body(style: PodBody, c: &Issued) -> Value {
    let expiration = format_micros(c.expires_at);
    match style {
        PodBody::Credential => credential_body(c),
        PodBody::CredentialsSnakeCase => json!({"credentials": {
            "access_key_id": c.access,
            "secret_access_key": c.secret,
            "security_token": c.security_token,
            "expiration": expiration,
        }}),
        PodBody::CredentialsCamelCase => json!({
            "assumedAgency": {"urn": "", "id": ""},
            "audience": "",
            "credentials": {
                "accessKeyId": c.access,
                "secretAccessKey": c.secret,
                "securityToken": c.security_token,
                "expiration": expiration,
            },
            "podIdentityAssociationId": "",
            "subject": {"namespace": "", "serviceAccount": ""},
        }),
    }
}

/// `X-Metadata-Token-Ttl-Seconds`: whole seconds in [`METADATA_TTL_RANGE`].
pub(crate) fn parse_ttl(header: Option<&str>) -> Option<u64> {
    let v = header?.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|n| METADATA_TTL_RANGE.contains(n))
}

/// The `assume_role` part of a `securitytokens` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AssumeRole {
    pub agency_name: String,
    pub domain_name: Option<String>,
    pub domain_id: Option<String>,
    pub duration_seconds: u64,
}

/// Why a `securitytokens` request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AssumeRoleError {
    /// Unreadable body, wrong method, missing fields: 400.
    Body(String),
    /// `duration_seconds` out of range: 400.
    Duration(String),
}

/// Reads `{"auth":{"identity":{"methods":["assume_role"],"assume_role":{…}}}}`.
pub(crate) fn parse_assume_role(body: &[u8]) -> Result<AssumeRole, AssumeRoleError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| AssumeRoleError::Body("the request body is not JSON".into()))?;
    let identity = &v["auth"]["identity"];
    let assume = identity["methods"]
        .as_array()
        .is_some_and(|m| m.iter().any(|x| x == "assume_role"));
    if !assume {
        return Err(AssumeRoleError::Body(
            "auth.identity.methods must be [\"assume_role\"]".into(),
        ));
    }
    let r = &identity["assume_role"];
    let text = |k: &str| -> Result<Option<String>, AssumeRoleError> {
        match &r[k] {
            Value::Null => Ok(None),
            Value::String(s) if !s.is_empty() => Ok(Some(s.clone())),
            _ => Err(AssumeRoleError::Body(format!(
                "auth.identity.assume_role.{k} must be a non-empty string"
            ))),
        }
    };
    let agency_name = text("agency_name")?.ok_or_else(|| {
        AssumeRoleError::Body("auth.identity.assume_role.agency_name is missing".into())
    })?;
    let (domain_name, domain_id) = (text("domain_name")?, text("domain_id")?);
    if domain_name.is_none() && domain_id.is_none() {
        return Err(AssumeRoleError::Body(
            "auth.identity.assume_role needs domain_name or domain_id".into(),
        ));
    }
    let duration_seconds = match &r["duration_seconds"] {
        Value::Null => AGENCY_DEFAULT_DURATION,
        d => d
            .as_u64()
            .filter(|n| AGENCY_DURATION_RANGE.contains(n))
            .ok_or_else(|| {
                AssumeRoleError::Duration(format!(
                    "duration_seconds {d} is not an integer from {} to {}",
                    AGENCY_DURATION_RANGE.start(),
                    AGENCY_DURATION_RANGE.end()
                ))
            })?,
    };
    Ok(AssumeRole {
        agency_name,
        domain_name,
        domain_id,
        duration_seconds,
    })
}

/// The agency an `assume_role` request names, if it is configured.
pub(crate) fn find_agency<'a>(agencies: &'a [SimAgency], r: &AssumeRole) -> Option<&'a SimAgency> {
    agencies.iter().find(|a| a.matches(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_bodies_parse_with_dashes_or_underscores() {
        assert_eq!(
            "token-unsupported".parse(),
            Ok(MetadataMode::TokenUnsupported)
        );
        assert_eq!("no_agency".parse(), Ok(MetadataMode::NoAgency));
        assert_eq!(
            "credentials-camel-case".parse(),
            Ok(PodBody::CredentialsCamelCase)
        );
        let err = "nope".parse::<MetadataMode>().expect_err("unknown");
        assert_eq!(
            err,
            "unknown metadata mode \"nope\": expected normal, token-unsupported or no-agency"
        );
        assert!(
            "Credential".parse::<PodBody>().is_err(),
            "names are lowercase"
        );
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-05-10T17:42:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn metadata_ttl_is_whole_seconds_from_1_to_21600() {
        assert_eq!(parse_ttl(Some("21600")), Some(21_600));
        assert_eq!(parse_ttl(Some(" 1 ")), Some(1));
        for bad in [
            "0",
            "21601",
            "-5",
            "+5",
            "1.5",
            "",
            "six",
            "99999999999999999999",
        ] {
            assert_eq!(parse_ttl(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(parse_ttl(None), None);
    }

    #[test]
    fn credential_bodies_in_every_spelling() {
        let c = Issued {
            access: "AK".into(),
            secret: "SK".into(),
            security_token: "ST".into(),
            expires_at: now() + chrono::Duration::hours(1),
        };
        let exp = "2026-05-10T18:42:00.000000Z";
        assert_eq!(
            credential_body(&c),
            json!({"credential":{"access":"AK","secret":"SK","securitytoken":"ST","expires_at":exp}})
        );
        assert_eq!(pod_body(PodBody::Credential, &c), credential_body(&c));
        assert_eq!(
            pod_body(PodBody::CredentialsSnakeCase, &c),
            json!({"credentials":{"access_key_id":"AK","secret_access_key":"SK",
                                  "security_token":"ST","expiration":exp}})
        );
        let camel = pod_body(PodBody::CredentialsCamelCase, &c);
        assert_eq!(
            camel["credentials"],
            json!({"accessKeyId":"AK","secretAccessKey":"SK","securityToken":"ST","expiration":exp})
        );
        assert!(camel["assumedAgency"].is_object());
    }

    #[test]
    fn temporary_keys_need_their_signed_token_and_expire() {
        let mut keys = TempKeys::default();
        let i = keys.issue(chrono::Duration::minutes(15), None, now());
        assert_eq!(i.access.len(), 20);
        assert!(i.security_token.len() > 1000);
        let k = keys.get(&i.access).expect("issued").clone();
        let t = Some(i.security_token.as_str());
        assert_eq!(check_security_token(&k, t, true, now()), Ok(()));
        assert_eq!(
            check_security_token(&k, None, true, now()),
            Err(TokenProblem::Missing)
        );
        assert_eq!(
            check_security_token(&k, t, false, now()),
            Err(TokenProblem::Unsigned)
        );
        assert_eq!(
            check_security_token(&k, Some("other"), true, now()),
            Err(TokenProblem::Mismatched)
        );
        let later = now() + chrono::Duration::minutes(15);
        assert_eq!(
            check_security_token(&k, t, true, later),
            Err(TokenProblem::Expired)
        );
        assert_eq!(keys.expire_all(now()), 1);
        let k = keys.get(&i.access).expect("kept after expiry");
        assert_eq!(
            check_security_token(k, t, true, now()),
            Err(TokenProblem::Expired)
        );
    }

    #[test]
    fn pruning_drops_the_keys_that_expired_first() {
        let mut keys = TempKeys::default();
        for i in 0..8 {
            keys.issue(chrono::Duration::seconds(i), None, now());
        }
        keys.prune();
        assert_eq!(keys.keys.len(), 5);
        assert!(
            keys.keys
                .values()
                .all(|k| k.expires_at > now() + chrono::Duration::seconds(2))
        );
    }

    #[test]
    fn assume_role_bodies() {
        let body = |ar: Value| {
            json!({"auth":{"identity":{"methods":["assume_role"],"assume_role":ar}}})
                .to_string()
                .into_bytes()
        };
        let r = parse_assume_role(&body(json!({"agency_name":"a","domain_id":"d",
                                                "duration_seconds":3600})))
        .expect("valid");
        assert_eq!(
            (
                r.agency_name.as_str(),
                r.domain_id.as_deref(),
                r.duration_seconds
            ),
            ("a", Some("d"), 3600)
        );
        let r = parse_assume_role(&body(json!({"agency_name":"a","domain_name":"n"})))
            .expect("default duration");
        assert_eq!(r.duration_seconds, 900);
        for d in [
            json!(899),
            json!(86_401),
            json!("3600"),
            json!(-1),
            json!(1.5),
        ] {
            assert!(
                matches!(
                    parse_assume_role(&body(json!({"agency_name":"a","domain_id":"d",
                                                   "duration_seconds":d}))),
                    Err(AssumeRoleError::Duration(_))
                ),
                "{d}"
            );
        }
        for bad in [
            json!({"domain_id":"d"}),
            json!({"agency_name":"a"}),
            json!({"agency_name":"","domain_id":"d"}),
            json!({"agency_name":"a","domain_id":7}),
        ] {
            assert!(
                matches!(
                    parse_assume_role(&body(bad.clone())),
                    Err(AssumeRoleError::Body(_))
                ),
                "{bad}"
            );
        }
        let token_method = json!({"auth":{"identity":{"methods":["token"],"token":{"id":"x"}}}});
        assert!(matches!(
            parse_assume_role(token_method.to_string().as_bytes()),
            Err(AssumeRoleError::Body(_))
        ));
        assert!(matches!(
            parse_assume_role(b"{"),
            Err(AssumeRoleError::Body(_))
        ));
    }

    #[test]
    fn an_agency_matches_on_name_and_every_domain_field_given() {
        let agencies = [SimAgency::example()];
        let ask = |name: &str, dn: Option<&str>, di: Option<&str>| AssumeRole {
            agency_name: name.into(),
            domain_name: dn.map(str::to_owned),
            domain_id: di.map(str::to_owned),
            duration_seconds: 900,
        };
        assert!(
            find_agency(
                &agencies,
                &ask(DEFAULT_AGENCY_NAME, Some(DEFAULT_AGENCY_DOMAIN_NAME), None)
            )
            .is_some()
        );
        assert!(
            find_agency(
                &agencies,
                &ask(DEFAULT_AGENCY_NAME, None, Some(DEFAULT_AGENCY_DOMAIN_ID))
            )
            .is_some()
        );
        assert!(
            find_agency(
                &agencies,
                &ask(
                    DEFAULT_AGENCY_NAME,
                    Some(DEFAULT_AGENCY_DOMAIN_NAME),
                    Some("other")
                )
            )
            .is_none()
        );
        assert!(
            find_agency(
                &agencies,
                &ask("other", Some(DEFAULT_AGENCY_DOMAIN_NAME), None)
            )
            .is_none()
        );
        assert!(find_agency(&agencies, &ask(DEFAULT_AGENCY_NAME, Some("other"), None)).is_none());
    }

    #[test]
    fn agency_specs() {
        let a = SimAgency::parse("ops:acme-prod::p1,p2").expect("no domain id");
        assert_eq!(a.domain_name.as_deref(), Some("acme-prod"));
        assert_eq!(a.domain_id, None);
        assert_eq!(a.project_ids, ["p1", "p2"]);
        for bad in [
            "ops:acme",
            "ops:::p1",
            ":acme::p1",
            "ops:acme::",
            "a:b:c:d:e",
        ] {
            assert!(SimAgency::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_are_validated_and_updates_all_or_nothing() {
        let mut s = KeylessSettings::default();
        assert_eq!(s.validate(), Ok(()));
        let u: KeylessUpdate = serde_json::from_str(
            r#"{"credential_lifetime":"30s","metadata":{"mode":"no_agency","no_agency_status":404},
                "pod_identity":{"token":"rotated"}}"#,
        )
        .expect("update");
        s.apply(u).expect("valid");
        assert_eq!(s.credential_lifetime, Duration::from_secs(30));
        assert_eq!(s.metadata.mode, MetadataMode::NoAgency);
        assert_eq!(s.metadata.no_agency_status, 404);
        assert_eq!(s.metadata.token_unsupported_status, 404, "kept");
        assert_eq!(s.pod_identity.token, "rotated");
        assert_eq!(s.pod_identity.path, DEFAULT_POD_IDENTITY_PATH, "kept");

        let before = s.clone();
        for bad in [
            r#"{"metadata":{"token_unsupported_status":500}}"#,
            r#"{"metadata":{"no_agency_status":403}}"#,
            r#"{"credential_lifetime":"0s","pod_identity":{"token":"x"}}"#,
            r#"{"pod_identity":{"path":"/_sim/x"}}"#,
            r#"{"pod_identity":{"token":""}}"#,
            r#"{"agencies":[{"agency_name":"a","project_ids":["p"]}]}"#,
        ] {
            let u: KeylessUpdate = serde_json::from_str(bad).expect(bad);
            assert!(s.apply(u).is_err(), "{bad}");
            assert_eq!(s, before, "unchanged after {bad}");
        }
        assert!(serde_json::from_str::<KeylessUpdate>(r#"{"lifetime":"1s"}"#).is_err());
        let view = s.view().to_string();
        assert!(!view.contains("rotated"), "no token in the view: {view}");
        assert!(view.contains("\"credential_lifetime\":\"30s\""), "{view}");
    }

    #[test]
    fn modes_parse_from_flags_and_debug_redacts_the_pod_token() {
        assert_eq!(
            "token-unsupported".parse(),
            Ok(MetadataMode::TokenUnsupported)
        );
        assert_eq!("no_agency".parse(), Ok(MetadataMode::NoAgency));
        assert!("off".parse::<MetadataMode>().is_err());
        assert_eq!(
            "credentials-camel-case".parse(),
            Ok(PodBody::CredentialsCamelCase)
        );
        assert!("camel".parse::<PodBody>().is_err());
        let s = format!("{:?}", KeylessSettings::default());
        assert!(!s.contains(DEFAULT_POD_TOKEN), "{s}");
        let u: KeylessUpdate =
            serde_json::from_str(r#"{"pod_identity":{"token":"hidden-token"}}"#).expect("u");
        assert!(!format!("{u:?}").contains("hidden-token"));
    }
}
