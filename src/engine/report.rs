//! What a cycle did, for logs, `run --once`, `demo` and readiness.

use crate::decision::{Decision, Outcome};

/// One decided connection, for the report of a cycle.
#[derive(Debug, Clone)]
pub struct Row {
    /// Target label.
    pub target: String,
    /// Service name (or id when the name is unknown).
    pub service: String,
    /// Endpoint id.
    pub endpoint_id: String,
    /// Consumer account.
    pub domain_id: String,
    /// Description as given (untrusted).
    pub description: String,
    /// The decision.
    pub decision: Decision,
    /// What happened to the action; `None` when none was sent.
    pub outcome: Option<Outcome>,
}

/// The result of one cycle over one target.
#[derive(Debug, Clone, Default)]
pub struct TargetReport {
    /// Target label.
    pub target: String,
    /// Services processed without a listing or audit failure.
    pub services_ok: usize,
    /// One line per failure (listing, audit), naming the service.
    pub failures: Vec<String>,
    /// Pending connections seen.
    pub pending: usize,
    /// Decision records written.
    pub decisions: usize,
    /// Actions sent, by outcome.
    pub applied: usize,
    /// Actions that found the connection no longer pending.
    pub not_pending: usize,
    /// Actions that failed.
    pub failed: usize,
    /// Decided actions never sent (shutdown, newer facts or policies, key backoff).
    pub skipped: usize,
    /// Actions sent that got no answer before the shutdown deadline.
    pub unknown: usize,
    /// Rows when `collect_rows` is set.
    pub rows: Vec<Row>,
    /// How long the target's cycle took.
    pub duration: std::time::Duration,
    /// The oldest connection still pending after the cycle, whatever its verdict.
    pub oldest_pending: Option<chrono::DateTime<chrono::Utc>>,
    /// Requests the cycle asked for, about (listings by their pages, actions by their
    /// attempts), for the warning when a cycle is longer than the interval.
    pub requests: u64,
}

impl TargetReport {
    /// Whether the target's cycle succeeded: every service listed and audited.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The result of one cycle over all targets.
#[derive(Debug, Clone, Default)]
pub struct CycleReport {
    /// One per target, in config order.
    pub targets: Vec<TargetReport>,
}

impl CycleReport {
    /// Whether every target listed everything and no action failed or was left
    /// without an answer.
    pub fn fully_ok(&self) -> bool {
        self.targets
            .iter()
            .all(|t| t.ok() && t.failed == 0 && t.unknown == 0)
    }

    /// Actions left without an answer at the shutdown deadline, over all targets.
    pub fn unknown(&self) -> usize {
        self.targets.iter().map(|t| t.unknown).sum()
    }

    /// How long the cycle took: targets run together, so its slowest target's time.
    pub fn duration(&self) -> std::time::Duration {
        self.targets
            .iter()
            .map(|t| t.duration)
            .max()
            .unwrap_or_default()
    }
}

impl TargetReport {
    /// Adds one service's figures to the target's.
    pub(crate) fn absorb(&mut self, s: TargetReport) {
        self.services_ok += s.services_ok;
        self.pending += s.pending;
        self.decisions += s.decisions;
        self.applied += s.applied;
        self.not_pending += s.not_pending;
        self.failed += s.failed;
        self.skipped += s.skipped;
        self.unknown += s.unknown;
        self.rows.extend(s.rows);
        self.requests += s.requests;
        self.oldest_pending = match (self.oldest_pending, s.oldest_pending) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Counts one outcome.
    pub(crate) fn count(&mut self, o: Outcome) {
        match o {
            Outcome::Applied => self.applied += 1,
            Outcome::NotPending => self.not_pending += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Skipped => self.skipped += 1,
            Outcome::Unknown => self.unknown += 1,
        }
    }
}
