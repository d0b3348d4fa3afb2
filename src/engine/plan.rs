//! The pure rules of a cycle (docs/design.md, "The life of a connection"): what a listing
//! must look like to be used, counting per account, the facts of one connection, the
//! record of a decision, and how an action ended. No I/O: the engine feeds it what it
//! listed and sends what it returns.

use crate::audit::DecisionRecord;
use crate::cloud::types::{WireConnection, status};
use crate::config::Target;
use crate::decision::{Action, ConnectionFacts, Decision, Outcome, Verdict};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};

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
/// server's), or why the listing cannot be used: a connection without an id, or one
/// endpoint listed twice.
pub fn pending_of(listed: Vec<WireConnection>) -> Result<Vec<WireConnection>, String> {
    let mut seen = HashSet::new();
    let mut pending = Vec::with_capacity(listed.len());
    for c in listed {
        if c.status.as_deref() != Some(status::PENDING) {
            continue;
        }
        let id = c.id.as_deref().unwrap_or_default();
        if id.is_empty() {
            return Err("a pending connection has no id".into());
        }
        if !seen.insert(id.to_owned()) {
            return Err(format!("endpoint {id} is listed twice"));
        }
        pending.push(c);
    }
    Ok(pending)
}

/// Connections per consumer account among `conns` whose status is `status`.
pub fn count_by_domain<'a>(
    conns: impl IntoIterator<Item = &'a WireConnection>,
    status: &str,
) -> HashMap<String, i64> {
    let mut by: HashMap<String, i64> = HashMap::new();
    for c in conns {
        if c.status.as_deref() == Some(status)
            && let Some(d) = c.domain_id.as_deref()
        {
            *by.entry(d.to_owned()).or_default() += 1;
        }
    }
    by
}

/// What a connection is decided on: the target, the service, the connection's own fields
/// and the counts of its account; an error names the field the API left out or garbled.
pub fn facts(
    target: &Target,
    svc: &ServiceRef,
    c: &WireConnection,
    now: DateTime<Utc>,
    accepted_by: &HashMap<String, i64>,
    pending_by: &HashMap<String, i64>,
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
        target: target.name.clone(),
        region: target.region.clone(),
        project_id: target.project_id.clone(),
        service_id: svc.id.clone(),
        service_name: svc.name.clone(),
        endpoint_id: c.id.clone().unwrap_or_default(),
        accepted_from_domain: accepted_by.get(&domain_id).copied().unwrap_or(0),
        pending_from_domain: pending_by.get(&domain_id).copied().unwrap_or(0),
        domain_id,
        description: c.description.clone().unwrap_or_default(),
        marker_id: c.marker_id.unwrap_or(0),
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

/// What the record of a decision says about its connection, as the API or the command
/// line gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// Target label.
    pub target: String,
    /// Project id of the target.
    pub project_id: String,
    /// Endpoint service id.
    pub service_id: String,
    /// Endpoint service name.
    pub service_name: String,
    /// VPC endpoint id.
    pub endpoint_id: String,
    /// Consumer account (empty when the API left it out).
    pub domain_id: String,
    /// Description as given.
    pub description: String,
    /// Marker id.
    pub marker_id: i64,
    /// `created_at` as the API wrote it.
    pub created_at: String,
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

    /// A hypothetical connection (`eval`).
    pub fn of_facts(f: &ConnectionFacts) -> Subject {
        Subject {
            target: f.target.clone(),
            project_id: f.project_id.clone(),
            service_id: f.service_id.clone(),
            service_name: f.service_name.clone(),
            endpoint_id: f.endpoint_id.clone(),
            domain_id: f.domain_id.clone(),
            description: f.description.clone(),
            marker_id: f.marker_id,
            created_at: crate::clock::format_secs(f.created_at),
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
        target: subject.target,
        project_id: subject.project_id,
        service_id: subject.service_id,
        service_name: subject.service_name,
        endpoint_id: subject.endpoint_id,
        domain_id: subject.domain_id,
        description: subject.description,
        marker_id: subject.marker_id,
        created_at: subject.created_at,
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
        let table = [
            (Receive, Status("accepted"), Applied),
            (Receive, Status("creating"), Applied),
            (Receive, Status("pendingAcceptance"), Failed),
            (Receive, Status("rejected"), NotPending),
            (Receive, Status("failed"), NotPending),
            (Receive, Status("deleting"), NotPending),
            (Receive, Deleted, NotPending),
            (Receive, Unknown, Failed),
            (Reject, Status("rejected"), Applied),
            (Reject, Status("pendingAcceptance"), Failed),
            (Reject, Status("accepted"), NotPending),
            (Reject, Status("creating"), NotPending),
            (Reject, Deleted, NotPending),
            (Reject, Unknown, Failed),
        ];
        for (action, observed, want) in table {
            assert_eq!(
                classify_outcome(action, observed),
                want,
                "{action} {observed:?}"
            );
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
        let e = pending_of(vec![
            conn("a", "d1", "pendingAcceptance"),
            conn("a", "d1", "pendingAcceptance"),
        ])
        .expect_err("twice");
        assert!(e.contains("endpoint a is listed twice"), "{e}");
        let e = pending_of(vec![conn("", "d1", "pendingAcceptance")]).expect_err("no id");
        assert!(e.contains("no id"), "{e}");
    }

    #[test]
    fn counts_are_per_domain_and_status() {
        let all = [
            conn("a", "d1", "accepted"),
            conn("b", "d1", "accepted"),
            conn("c", "d2", "accepted"),
            conn("d", "d2", "pendingAcceptance"),
        ];
        let by = count_by_domain(&all, "accepted");
        assert_eq!(by.get("d1"), Some(&2));
        assert_eq!(by.get("d2"), Some(&1));
    }

    #[test]
    fn facts_name_the_missing_field() {
        let t = Target::new("t", "cn-north-4", "p");
        let svc = ServiceRef {
            id: "s".into(),
            name: String::new(),
        };
        let now = Utc::now();
        let none = HashMap::new();
        let mut c = conn("a", "", "pendingAcceptance");
        let e = facts(&t, &svc, &c, now, &none, &none).expect_err("no domain");
        assert!(e.contains("domain_id"), "{e}");
        c.domain_id = Some("d1".into());
        c.created_at = Some("yesterday".into());
        let e = facts(&t, &svc, &c, now, &none, &none).expect_err("bad time");
        assert!(e.contains("yesterday"), "{e}");
        c.created_at = None;
        assert!(facts(&t, &svc, &c, now, &none, &none).is_err());
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
}
