//! The pure rules of a cycle (docs/design.md, "The life of a connection"): what a listing
//! must look like to be used, counting per account, the facts of one connection, the
//! record of a decision, and how an action ended. No I/O: the engine feeds it what it
//! listed and sends what it returns.

use crate::audit::DecisionRecord;
use crate::cloud::types::{WireConnection, status};
use crate::config::Target;
use crate::decision::{Action, ConnectionFacts, Decision, Outcome, Subject, Verdict};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// An endpoint service to process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    /// Service id.
    pub id: String,
    /// Service name (empty when unknown).
    pub name: String,
}

impl ServiceRef {
    /// The name for reports: the service name, or the id when there is none.
    pub fn label(&self) -> &str {
        if self.name.is_empty() {
            &self.id
        } else {
            &self.name
        }
    }
}

/// The connections of a pending listing that really are pending (the filter is the
/// server's), once each, or why the listing cannot be used: a connection without an id,
/// or one endpoint listed twice with different contents. An identical repeat counts once.
pub fn pending_of(listed: Vec<WireConnection>) -> Result<Vec<WireConnection>, String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut pending: Vec<WireConnection> = Vec::with_capacity(listed.len());
    for c in listed {
        if c.status.as_deref() != Some(status::PENDING) {
            continue;
        }
        let id = c.id.clone().unwrap_or_default();
        if id.is_empty() {
            return Err("a pending connection has no id".into());
        }
        match seen.get(&id) {
            Some(&i) if pending[i].same_decision_fields(&c) => {}
            Some(_) => {
                return Err(format!(
                    "endpoint {id} is listed twice with different contents"
                ));
            }
            None => {
                seen.insert(id, pending.len());
                pending.push(c);
            }
        }
    }
    Ok(pending)
}

/// Puts pending connections in the order they are decided: oldest first (`created_at`,
/// then `id`); a connection whose `created_at` does not parse comes last (it is decided
/// `error` anyway).
pub fn in_decision_order(pending: &mut [WireConnection]) {
    pending.sort_by_cached_key(|c| {
        let t = c
            .created_at
            .as_deref()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc));
        (t.is_none(), t, c.id.clone())
    });
}

/// The counts an account's connection is decided with, kept while a service's pending
/// connections are decided in order: the account's `accepted` and `creating` connections
/// plus those decided `permit` before this one (so a quota holds within a burst), and
/// its pending ones.
#[derive(Debug, Default)]
pub struct Counts {
    accepted: HashMap<String, i64>,
    pending: HashMap<String, i64>,
}

impl Counts {
    /// Counts from the listings: `pending`, and the accepted and creating connections;
    /// one listed as both (it moved between the two listings) counts once.
    pub fn new(pending: &[WireConnection], accepted_or_creating: &[WireConnection]) -> Counts {
        let mut c = Counts::default();
        let mut seen = std::collections::HashSet::new();
        for conn in accepted_or_creating {
            if matches!(
                conn.status.as_deref(),
                Some(status::ACCEPTED | status::CREATING)
            ) && conn.id.as_deref().is_none_or(|id| seen.insert(id))
                && let Some(d) = conn.domain_id.as_deref()
            {
                *c.accepted.entry(d.to_owned()).or_default() += 1;
            }
        }
        for conn in pending {
            if let Some(d) = conn.domain_id.as_deref() {
                *c.pending.entry(d.to_owned()).or_default() += 1;
            }
        }
        c
    }

    /// `accepted_from_domain` for the next connection of `domain`.
    pub fn accepted(&self, domain: &str) -> i64 {
        self.accepted.get(domain).copied().unwrap_or(0)
    }

    /// `pending_from_domain` for a connection of `domain`.
    pub fn pending(&self, domain: &str) -> i64 {
        self.pending.get(domain).copied().unwrap_or(0)
    }

    /// Records a decision: a `permit` counts as accepted for the connections after it,
    /// whether or not its action is sent or succeeds in this cycle.
    pub fn decided(&mut self, domain: &str, verdict: Verdict) {
        if verdict == Verdict::Permit {
            *self.accepted.entry(domain.to_owned()).or_default() += 1;
        }
    }
}

/// What a connection is decided on: the target, the service, the connection's own fields
/// and the counts of its account; an error names the field the API left out or garbled.
pub fn facts(
    target: &Target,
    svc: &ServiceRef,
    c: &WireConnection,
    now: DateTime<Utc>,
    counts: &Counts,
) -> Result<ConnectionFacts, String> {
    let domain_id = c
        .domain_id
        .clone()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| "connection has no domain_id".to_owned())?;
    let raw = c
        .created_at
        .as_deref()
        .ok_or_else(|| "connection has no created_at".to_owned())?;
    let created_at = DateTime::parse_from_rfc3339(raw)
        .map_err(|_| format!("connection created_at {raw:?} is not an RFC 3339 time"))?
        .with_timezone(&Utc);
    Ok(ConnectionFacts {
        subject: Subject {
            domain_id: domain_id.clone(),
            ..Subject::listed(target, svc, c)
        },
        region: target.region.clone(),
        accepted_from_domain: counts.accepted(&domain_id),
        pending_from_domain: counts.pending(&domain_id),
        created_at,
        now,
    })
}

/// The decision for a connection whose facts could not be built: `error`, no action.
pub fn error_decision(why: String) -> Decision {
    Decision {
        verdict: Verdict::Error,
        action: Action::None,
        policies: vec![],
        reasons: vec![],
        errors: vec![why],
    }
}

/// Whether a decision is recorded: every decision whose action is sent, and one left
/// pending (or any decision of a dry run) the first time under a policy version.
pub fn should_record(d: &Decision, dry_run: bool, first_time_under_version: bool) -> bool {
    sends(d, dry_run) || first_time_under_version
}

/// Whether a decision's action is sent.
pub fn sends(d: &Decision, dry_run: bool) -> bool {
    d.action != Action::None && !dry_run
}

impl Subject {
    /// A listed connection of `svc` on `target`, verbatim.
    pub fn listed(target: &Target, svc: &ServiceRef, c: &WireConnection) -> Subject {
        Subject {
            target: target.name.clone(),
            project_id: target.project_id.clone(),
            service_id: svc.id.clone(),
            service_name: svc.name.clone(),
            endpoint_id: c.id.clone().unwrap_or_default(),
            domain_id: c.domain_id.clone().unwrap_or_default(),
            description: c.description.clone().unwrap_or_default(),
            marker_id: c.marker_id.unwrap_or(0),
            created_at: c.created_at.clone().unwrap_or_default(),
        }
    }
}

/// The one way a decision record is built (the engine and `eval --json`).
pub fn decision_record(
    decision_id: String,
    subject: Subject,
    d: &Decision,
    policy_version: &str,
    dry_run: bool,
) -> DecisionRecord {
    DecisionRecord {
        decision_id,
        subject,
        verdict: d.verdict,
        action: d.action,
        policies: d.policies.clone(),
        reasons: d.reasons.clone(),
        errors: d.errors.clone(),
        policy_version: policy_version.to_owned(),
        dry_run,
    }
}

/// What is known of a connection after its action: the status the API reported (in the
/// answer or read back), that it is gone, or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed<'a> {
    /// The connection has this status.
    Status(&'a str),
    /// The API does not know the endpoint any more.
    Deleted,
    /// Nothing could be learned.
    Unknown,
}

/// The status an action produces is `applied` (`accepted` or `creating` for `receive`,
/// `rejected` for `reject`); still pending is `failed`; anything else means someone else
/// decided (`not-pending`); not knowing is `failed`.
pub fn classify_outcome(action: Action, observed: Observed<'_>) -> Outcome {
    match observed {
        Observed::Status(s) if produces(action, s) => Outcome::Applied,
        Observed::Status(status::PENDING) => Outcome::Failed,
        Observed::Status(_) | Observed::Deleted => Outcome::NotPending,
        Observed::Unknown => Outcome::Failed,
    }
}

/// Whether `status` is what `action` makes of a pending connection.
pub fn produces(action: Action, status: &str) -> bool {
    match action {
        Action::Receive => status == status::ACCEPTED || status == status::CREATING,
        Action::Reject => status == status::REJECTED,
        Action::None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_outcome_table() {
        use Action::{Receive, Reject};
        use Observed::{Deleted, Status, Unknown};
        use Outcome::{Applied, Failed, NotPending};
        // What the connection is found to be after the action, and what that makes of a
        // receive and of a reject.
        let table = [
            (Status("accepted"), Applied, NotPending),
            (Status("creating"), Applied, NotPending),
            (Status("pendingAcceptance"), Failed, Failed),
            (Status("rejected"), NotPending, Applied),
            (Status("failed"), NotPending, NotPending),
            (Status("deleting"), NotPending, NotPending),
            (Deleted, NotPending, NotPending),
            (Unknown, Failed, Failed),
        ];
        for (observed, after_receive, after_reject) in table {
            for (action, want) in [(Receive, after_receive), (Reject, after_reject)] {
                assert_eq!(
                    classify_outcome(action, observed),
                    want,
                    "{action} {observed:?}"
                );
            }
        }
    }

    fn conn(id: &str, domain: &str, st: &str) -> WireConnection {
        WireConnection {
            id: Some(id.into()),
            domain_id: Some(domain.into()),
            status: Some(st.into()),
            created_at: Some("2026-11-27T09:35:47Z".into()),
            ..WireConnection::default()
        }
    }

    #[test]
    fn a_pending_listing_keeps_the_pending_and_refuses_what_cannot_be_acted_on() {
        let ok = pending_of(vec![
            conn("a", "d1", "pendingAcceptance"),
            conn("b", "d1", "accepted"),
        ])
        .expect("usable");
        assert_eq!(ok.len(), 1);
        let once = pending_of(vec![
            conn("a", "d1", "pendingAcceptance"),
            conn("a", "d1", "pendingAcceptance"),
        ])
        .expect("an identical repeat counts once");
        assert_eq!(once.len(), 1);
        let e = pending_of(vec![
            conn("a", "d1", "pendingAcceptance"),
            conn("a", "d2", "pendingAcceptance"),
        ])
        .expect_err("twice, differently");
        assert!(
            e.contains("endpoint a is listed twice with different contents"),
            "{e}"
        );
        let e = pending_of(vec![conn("", "d1", "pendingAcceptance")]).expect_err("no id");
        assert!(e.contains("no id"), "{e}");
    }

    #[test]
    fn counts_take_accepted_creating_and_earlier_permits() {
        let counted = [
            conn("a", "d1", "accepted"),
            conn("b", "d1", "creating"),
            conn("c", "d2", "accepted"),
            conn("x", "d2", "rejected"),
        ];
        let pending = [
            conn("p", "d1", "pendingAcceptance"),
            conn("q", "d1", "pendingAcceptance"),
        ];
        let mut c = Counts::new(&pending, &counted);
        assert_eq!((c.accepted("d1"), c.pending("d1")), (2, 2));
        assert_eq!((c.accepted("d2"), c.pending("d2")), (1, 0));
        c.decided("d1", Verdict::Forbid);
        assert_eq!(c.accepted("d1"), 2);
        c.decided("d1", Verdict::Permit);
        assert_eq!(c.accepted("d1"), 3);
        assert_eq!(c.accepted("d3"), 0);
    }

    #[test]
    fn decisions_go_oldest_first_then_by_id() {
        let mut v = vec![
            conn("c", "d", "pendingAcceptance"),
            conn("b", "d", "pendingAcceptance"),
            conn("a", "d", "pendingAcceptance"),
        ];
        v[0].created_at = Some("2026-11-27T09:00:00Z".into());
        v[1].created_at = Some("garbage".into());
        v[2].created_at = Some("2026-11-27T10:00:00Z".into());
        v.push(conn("0", "d", "pendingAcceptance"));
        v[3].created_at = Some("2026-11-27T09:00:00Z".into());
        in_decision_order(&mut v);
        let ids: Vec<&str> = v.iter().filter_map(|c| c.id.as_deref()).collect();
        assert_eq!(ids, ["0", "c", "a", "b"]);
    }

    #[test]
    fn facts_name_the_missing_field() {
        let t = Target::new("t", "cn-north-4", "p");
        let svc = ServiceRef {
            id: "s".into(),
            name: String::new(),
        };
        let now = Utc::now();
        let none = Counts::default();
        let mut c = conn("a", "", "pendingAcceptance");
        let e = facts(&t, &svc, &c, now, &none).expect_err("no domain");
        assert!(e.contains("domain_id"), "{e}");
        c.domain_id = Some("d1".into());
        c.created_at = Some("yesterday".into());
        let e = facts(&t, &svc, &c, now, &none).expect_err("bad time");
        assert!(e.contains("yesterday"), "{e}");
        c.created_at = None;
        assert!(facts(&t, &svc, &c, now, &none).is_err());
        assert_eq!(svc.label(), "s");
    }

    #[test]
    fn only_sent_decisions_are_recorded_every_time() {
        let permit = Decision {
            verdict: Verdict::Permit,
            action: Action::Receive,
            policies: vec![],
            reasons: vec![],
            errors: vec![],
        };
        let none = error_decision("x".into());
        assert!(should_record(&permit, false, false));
        assert!(!should_record(&permit, true, false));
        assert!(should_record(&permit, true, true));
        assert!(!should_record(&none, false, false));
        assert!(should_record(&none, false, true));
    }

    #[test]
    fn a_connection_listed_as_creating_and_as_accepted_counts_once() {
        let conn = |id: &str, status: &str| WireConnection {
            id: Some(id.into()),
            domain_id: Some("d".into()),
            status: Some(status.into()),
            ..WireConnection::default()
        };
        let c = Counts::new(
            &[],
            &[
                conn("moved", status::CREATING),
                conn("moved", status::ACCEPTED),
                conn("other", status::ACCEPTED),
            ],
        );
        assert_eq!(c.accepted("d"), 2);
    }
}
