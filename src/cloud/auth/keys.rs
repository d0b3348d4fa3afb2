//! Access keys ([`Keys`]) and the temporary ones the metadata service, pod identity and
//! IAM agencies hand out ([`parse_credential_body`]).

use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::time::Duration;

/// An access key pair, with the security token of temporary keys. `Debug` shows none of
/// it.
pub struct Keys {
    /// Access key id.
    pub ak: SecretString,
    /// Secret access key.
    pub sk: SecretString,
    /// `X-Security-Token` of temporary keys.
    pub security_token: Option<SecretString>,
}

impl Keys {
    /// Keys from their parts.
    pub fn new(ak: &str, sk: &str, security_token: Option<&str>) -> Keys {
        Keys {
            ak: ak.into(),
            sk: sk.into(),
            security_token: security_token.map(SecretString::from),
        }
    }

    /// The same key pair and token.
    pub fn same_as(&self, other: &Keys) -> bool {
        self.ak.expose_secret() == other.ak.expose_secret()
            && self.sk.expose_secret() == other.sk.expose_secret()
            && self
                .security_token
                .as_ref()
                .map(ExposeSecret::expose_secret)
                == other
                    .security_token
                    .as_ref()
                    .map(ExposeSecret::expose_secret)
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const R: &str = "[redacted]";
        f.debug_struct("Keys")
            .field("ak", &R)
            .field("sk", &R)
            .field("security_token", &self.security_token.as_ref().map(|_| R))
            .finish()
    }
}

/// Temporary keys as a credential service issued them.
#[derive(Debug)]
pub struct IssuedKeys {
    /// The keys, with their security token.
    pub keys: Keys,
    /// How long they are valid from now, by the `expires_at` the service returned.
    pub lifetime: Duration,
    /// `expires_at` as the service wrote it, for logs.
    pub expires_at: String,
}

/// Reads `{"credential":{"access","secret","securitytoken","expires_at"}}`, in the
/// spellings the official SDKs accept: `credentials`; `access_key_id`/`accessKeyId`,
/// `secret_access_key`/`secretAccessKey`, `security_token`/`securityToken`,
/// `expiration` (the CCE pod-identity agent answers in camelCase). The error says what
/// is missing, never a value.
pub fn parse_credential_body(
    body: &[u8],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<IssuedKeys, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "the body is not JSON".to_owned())?;
    let c = ["credential", "credentials"]
        .iter()
        .find_map(|k| v.get(k).filter(|c| c.is_object()))
        .ok_or("no \"credential\" object in the body")?;
    let field = |names: &[&str]| -> Result<&str, String> {
        names
            .iter()
            .find_map(|k| c.get(k).and_then(|x| x.as_str()))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("no credential.{} string in the body", names[0]))
    };
    let ak = field(&["access", "access_key_id", "accessKeyId"])?;
    let sk = field(&["secret", "secret_access_key", "secretAccessKey"])?;
    let token = field(&["securitytoken", "security_token", "securityToken"])?;
    let expires_raw = field(&["expires_at", "expiration"])?;
    let expires = chrono::DateTime::parse_from_rfc3339(expires_raw)
        .map_err(|_| format!("credential.expires_at {expires_raw:?} is not an RFC 3339 time"))?
        .with_timezone(&chrono::Utc);
    let lifetime = (expires - now)
        .to_std()
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("credential.expires_at {expires_raw:?} is not in the future"))?;
    for (name, value) in [("access", ak), ("secret", sk), ("securitytoken", token)] {
        // They go into http headers.
        if value.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
            return Err(format!(
                "credential.{name} has characters an http header cannot carry"
            ));
        }
    }
    Ok(IssuedKeys {
        keys: Keys::new(ak, sk, Some(token)),
        lifetime,
        expires_at: crate::cloud::error::sanitize(expires_raw),
    })
}

/// How long before expiry fetched keys are refreshed: a third of their lifetime, at most
/// 40 minutes (the official SDK's margin).
pub fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 3).min(Duration::from_secs(40 * 60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::now;

    #[test]
    fn both_spellings_are_read() {
        let a = br#"{"credential":{"access":"AK1","secret":"SK1","securitytoken":"ST1","expires_at":"2026-11-27T13:00:00.000000Z"}}"#;
        let b = br#"{"credentials":{"access_key_id":"AK1","secret_access_key":"SK1","security_token":"ST1","expiration":"2026-11-27T13:00:00Z"}}"#;
        let c = br#"{"credentials":{"accessKeyId":"AK1","secretAccessKey":"SK1","securityToken":"ST1","expiration":"2026-11-27T13:00:00Z","subject":"system:serviceaccount:ns:sa"}}"#;
        for body in [&a[..], &b[..], &c[..]] {
            let k = parse_credential_body(body, now()).expect("parses");
            assert_eq!(k.keys.ak.expose_secret(), "AK1");
            assert_eq!(k.keys.sk.expose_secret(), "SK1");
            assert_eq!(
                k.keys.security_token.as_ref().map(|s| s.expose_secret()),
                Some("ST1")
            );
            assert_eq!(k.lifetime, Duration::from_secs(3600));
            let d = format!("{k:?}");
            assert!(
                !d.contains("AK1") && !d.contains("SK1") && !d.contains("ST1"),
                "{d}"
            );
        }
    }

    #[test]
    fn errors_name_the_field_never_a_value() {
        let e = |b: &str| parse_credential_body(b.as_bytes(), now()).expect_err("fails");
        assert!(e("nope").contains("JSON"));
        assert!(e("{}").contains("credential"));
        let missing = e(
            r#"{"credential":{"access":"AKX","secret":"SKX","expires_at":"2026-11-27T13:00:00Z"}}"#,
        );
        assert!(
            missing.contains("securitytoken") && !missing.contains("SKX"),
            "{missing}"
        );
        assert!(e(r#"{"credential":{"access":"A","secret":"S","securitytoken":"T","expires_at":"2026-11-27T10:18:00Z"}}"#).contains("future"));
        assert!(e(r#"{"credential":{"access":"A","secret":"S","securitytoken":"T","expires_at":"soon"}}"#).contains("soon"));
        let newline = e(
            r#"{"credential":{"access":"A","secret":"S\nX","securitytoken":"T","expires_at":"2026-11-27T13:00:00Z"}}"#,
        );
        assert!(
            newline.contains("secret") && !newline.contains('X'),
            "{newline}"
        );
    }

    #[test]
    fn margin_is_a_third_at_most_forty_minutes() {
        assert_eq!(
            refresh_margin(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(6 * 3600)),
            Duration::from_secs(40 * 60)
        );
    }
}
