//! IAM tokens of `method = "password"`: the request body of `POST /v3/auth/tokens`
//! ([`password_token_body`]), reading the answer ([`parse_token_response`]) and when to
//! refresh ([`refresh_margin`]). The lifetime is measured from the token's own
//! `issued_at`/`expires_at`, so a skewed local clock does not matter.

use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::time::Duration;

/// The body of `POST /v3/auth/tokens` for a password token scoped to a project (a
/// target's requests) or to the user's account (agency requests). It holds the password:
/// send it and drop it, never log it.
pub fn password_token_body(
    user_name: &str,
    domain_name: &str,
    password: &SecretString,
    scope: super::Scope<'_>,
) -> Vec<u8> {
    let scope = match scope {
        super::Scope::Project(id) => serde_json::json!({"project": {"id": id}}),
        super::Scope::Account => serde_json::json!({"domain": {"name": domain_name}}),
    };
    let v = serde_json::json!({
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": user_name,
                        "password": password.expose_secret(),
                        "domain": {"name": domain_name}
                    }
                }
            },
            "scope": scope
        }
    });
    v.to_string().into_bytes()
}

/// A token as IAM issued it.
pub struct IssuedToken {
    /// The `X-Subject-Token` value.
    pub token: SecretString,
    /// How long it is valid, by the token's own `issued_at`/`expires_at` (or by the local
    /// clock when `issued_at` is absent).
    pub lifetime: Duration,
    /// `expires_at` as IAM wrote it, for logs.
    pub expires_at: String,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"[redacted]")
            .field("lifetime", &self.lifetime)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Reads the token from an IAM answer: `X-Subject-Token` header and
/// `{"token":{"expires_at":…,"issued_at":…}}`. The error says what is missing.
pub fn parse_token_response(
    subject_token: Option<&str>,
    body: &[u8],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<IssuedToken, String> {
    let token = subject_token
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or("no X-Subject-Token header")?;
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let t = v.get("token").ok_or("no \"token\" object in the body")?;
    let expires_raw = t
        .get("expires_at")
        .and_then(|x| x.as_str())
        .ok_or("no token.expires_at string in the body")?;
    let expires = parse_time(expires_raw)
        .ok_or_else(|| format!("token.expires_at {expires_raw:?} is not an RFC 3339 time"))?;
    let issued = t
        .get("issued_at")
        .and_then(|x| x.as_str())
        .and_then(parse_time)
        .unwrap_or(now);
    let lifetime = (expires - issued)
        .to_std()
        .map_err(|_| format!("token.expires_at {expires_raw:?} is not after issued_at"))?;
    if lifetime.is_zero() {
        return Err(format!(
            "token.expires_at {expires_raw:?} is not after issued_at"
        ));
    }
    Ok(IssuedToken {
        token: SecretString::from(token.to_owned()),
        lifetime,
        expires_at: expires_raw.to_owned(),
    })
}

fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&chrono::Utc))
}

/// Largest refresh margin: a 24 h token is refreshed 30 min before it expires.
pub const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(30 * 60);

/// How long before expiry a token is refreshed: a fifth of its lifetime, at most
/// [`MAX_REFRESH_MARGIN`]. Short-lived tokens (tests, private clouds) are still used for
/// most of their life; long ones get a margin that covers a slow IAM and clock drift.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 5).min(MAX_REFRESH_MARGIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::now;

    #[test]
    fn password_body_is_project_scoped() {
        let body = password_token_body(
            "ops",
            "acme",
            &"pw".into(),
            super::super::Scope::Project("proj1"),
        );
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["auth"]["identity"]["methods"][0], "password");
        assert_eq!(v["auth"]["identity"]["password"]["user"]["name"], "ops");
        assert_eq!(
            v["auth"]["identity"]["password"]["user"]["domain"]["name"],
            "acme"
        );
        assert_eq!(v["auth"]["identity"]["password"]["user"]["password"], "pw");
        assert_eq!(v["auth"]["scope"]["project"]["id"], "proj1");
        let body = password_token_body("ops", "acme", &"pw".into(), super::super::Scope::Account);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["auth"]["scope"]["domain"]["name"], "acme");
    }

    #[test]
    fn token_response_lifetime_uses_the_tokens_own_clock() {
        let body = br#"{"token":{"expires_at":"2020-01-05T09:08:49.965000Z","issued_at":"2020-01-04T09:08:49.965000Z","methods":["password"]}}"#;
        let t = parse_token_response(Some("MIIabc"), body, now()).expect("parse");
        assert_eq!(t.lifetime, Duration::from_secs(86_400));
        assert_eq!(t.token.expose_secret(), "MIIabc");
        assert!(!format!("{t:?}").contains("MIIabc"));
        // Without issued_at, the local clock is used.
        let body = br#"{"token":{"expires_at":"2026-11-27T12:10:00Z"}}"#;
        let t = parse_token_response(Some("x"), body, now()).expect("parse");
        assert_eq!(t.lifetime, Duration::from_secs(600));
    }

    #[test]
    fn token_response_errors_say_what_is_missing() {
        let ok = br#"{"token":{"expires_at":"2026-11-27T13:00:00Z"}}"#;
        assert!(
            parse_token_response(None, ok, now())
                .expect_err("x")
                .contains("X-Subject-Token")
        );
        assert!(
            parse_token_response(Some("t"), b"{}", now())
                .expect_err("x")
                .contains("token")
        );
        assert!(
            parse_token_response(Some("t"), b"nope", now())
                .expect_err("x")
                .contains("JSON")
        );
        let past = br#"{"token":{"expires_at":"2026-11-27T11:00:00Z"}}"#;
        assert!(parse_token_response(Some("t"), past, now()).is_err());
        let bad = br#"{"token":{"expires_at":"tomorrow"}}"#;
        assert!(
            parse_token_response(Some("t"), bad, now())
                .expect_err("x")
                .contains("tomorrow")
        );
    }

    #[test]
    fn refresh_margin_is_a_capped_fraction() {
        assert_eq!(
            refresh_margin(Duration::from_secs(86_400)),
            MAX_REFRESH_MARGIN
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(60)),
            Duration::from_secs(12)
        );
        assert_eq!(refresh_margin(Duration::ZERO), Duration::ZERO);
    }
}
