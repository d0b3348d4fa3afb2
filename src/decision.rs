//! The vocabulary every other module shares: verdicts, actions, outcomes and the
//! decision a policy evaluation produces. Pure data, no I/O.

use serde::{Deserialize, Serialize};
use std::fmt;

/// `as_str` and `Display` for each listed enum, from one line of spellings: the text the
/// API (for actions), the audit records, the metrics and the output use. The serde names
/// are the same (kebab-case).
macro_rules! spellings {
    ($($ty:ident { $($variant:ident => $text:literal),+ })+) => {$(
        impl $ty {
            /// The spelling used by the API, audit records, metrics and output.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )+};
}

spellings! {
    Verdict { Permit => "permit", Forbid => "forbid", NoMatch => "no-match", Error => "error" }
    Action { Receive => "receive", Reject => "reject", None => "none" }
    Outcome { Applied => "applied", NotPending => "not-pending", Failed => "failed", Skipped => "skipped", Unknown => "unknown" }
}

/// How the policies judged one connection (README "Policies").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Allow with no evaluation errors.
    Permit,
    /// Deny with at least one determining `forbid` policy and no errors.
    Forbid,
    /// Deny with no determining policy and no errors.
    NoMatch,
    /// Any evaluation or validation error: never act.
    Error,
}

/// What the daemon does about a connection. `None` leaves it pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Accept the connection (API action `receive`).
    Receive,
    /// Reject the connection (API action `reject`).
    Reject,
    /// Send nothing; the connection stays pending.
    None,
}

impl Action {
    /// The connection status a successful action produces.
    pub fn resulting_status(self) -> Option<&'static str> {
        match self {
            Action::Receive => Some("accepted"),
            Action::Reject => Some("rejected"),
            Action::None => None,
        }
    }
}

/// What `on_no_match` says to do when no policy decided (README "Configuration").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnNoMatch {
    /// Leave the connection pending (the default).
    #[default]
    LeavePending,
    /// Reject the connection.
    Reject,
}

impl OnNoMatch {
    /// The action a `no-match` verdict maps to.
    pub fn action(self) -> Action {
        match self {
            OnNoMatch::LeavePending => Action::None,
            OnNoMatch::Reject => Action::Reject,
        }
    }
}

/// How a decided action ended (README "Audit log").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The connection now has the status the action produces.
    Applied,
    /// Someone else decided first: the connection is no longer pending.
    NotPending,
    /// The action did not take effect.
    Failed,
    /// Decided but never sent: shutdown, a reload or newer facts superseded it, or the
    /// key is in backoff (`attempts` 0).
    Skipped,
    /// Sent, but no answer came before the shutdown deadline.
    Unknown,
}

/// The result of evaluating the policies for one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The verdict (README "Policies").
    pub verdict: Verdict,
    /// The action the verdict maps to.
    pub action: Action,
    /// Ids of the determining policies, sorted.
    pub policies: Vec<String>,
    /// `@reason` annotations of the determining policies, in the order of `policies`.
    pub reasons: Vec<String>,
    /// Evaluation and validation errors, each naming the policy it came from.
    pub errors: Vec<String>,
}

/// The connection a decision is about, as the API (or the command line) gave it: what
/// its audit record names (README "Audit log"). Owned strings so that callers can build
/// it from wire data or from flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// Target label (`[[target]] name`).
    pub target: String,
    /// Project id of the target.
    pub project_id: String,
    /// Endpoint service id.
    pub service_id: String,
    /// Endpoint service name.
    pub service_name: String,
    /// VPC endpoint id (the connection `id`).
    pub endpoint_id: String,
    /// Consumer account id (empty when the API left it out).
    pub domain_id: String,
    /// Consumer-controlled description; untrusted, stored verbatim as a JSON string.
    pub description: String,
    /// The endpoint's marker (packet) id.
    pub marker_id: i64,
    /// The connection's `created_at`, as the API reported it.
    pub created_at: String,
}

/// Everything a policy decision may look at for one connection (README "Policies").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionFacts {
    /// The connection.
    pub subject: Subject,
    /// Region of the target.
    pub region: String,
    /// When the connection was created (`subject.created_at`, read).
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Decision time.
    pub now: chrono::DateTime<chrono::Utc>,
    /// Accepted connections of this domain on this service.
    pub accepted_from_domain: i64,
    /// Pending connections of this domain on this service, this one included.
    pub pending_from_domain: i64,
}

impl ConnectionFacts {
    /// A connection of `domain_id` to the shipped examples' payments service, created
    /// and decided at 2026-11-27T12:00:00Z, no other connections of the account (tests,
    /// benchmarks).
    #[doc(hidden)]
    pub fn example(domain_id: &str, description: &str) -> ConnectionFacts {
        let text = "2026-11-27T12:00:00Z";
        let t = chrono::DateTime::parse_from_rfc3339(text)
            .expect("a valid time")
            .with_timezone(&chrono::Utc);
        ConnectionFacts {
            subject: Subject {
                target: "cn-north-4".into(),
                project_id: "0605767a3300d5762fb7c0186d8bfc2b".into(),
                service_id: "4189d3c2-8882-4871-a3c2-d380272eed88".into(),
                service_name: "payments".into(),
                endpoint_id: "705290f3-0d2e-4b7a-9d0c-6f1e2a3b4c5d".into(),
                domain_id: domain_id.into(),
                description: description.into(),
                marker_id: 16_777_510,
                created_at: text.into(),
            },
            region: "cn-north-4".into(),
            created_at: t,
            now: t,
            accepted_from_domain: 0,
            pending_from_domain: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_spelling_is_the_serde_name() {
        fn check<T: Serialize + fmt::Display>(values: &[T]) {
            for v in values {
                let json = serde_json::to_string(v).expect("serialises");
                assert_eq!(json, format!("\"{v}\""));
            }
        }
        use Verdict::*;
        check(&[Permit, Forbid, NoMatch, Error]);
        check(&[Action::Receive, Action::Reject, Action::None]);
        use Outcome::*;
        check(&[Applied, NotPending, Failed, Skipped, Unknown]);
    }
}
