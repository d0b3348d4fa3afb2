//! The Prometheus metrics (README "Health, metrics and alerts"), in one registry shared by
//! the engine, the client and the HTTP surface. Counters only go up from events that also
//! reach the audit log or the logs, so they can be reconciled with them. [`Metrics::preset`]
//! puts every counter whose labels are known in advance at 0 from the start, so an alert
//! on the first failure after a restart has a series to fire on.

use crate::decision::{Action, Outcome, Verdict};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    target: String,
    verdict: String,
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    target: String,
    action: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    target: String,
    operation: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CycleLabels {
    target: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

type HistogramFamily = Family<OperationLabels, Histogram, fn() -> Histogram>;
type SecondsFamily = Family<TargetLabels, Gauge<f64, AtomicU64>>;

/// The results a poll cycle or a policy reload is counted under.
const RESULTS: [&str; 2] = ["success", "failure"];
/// The actions that are sent, and so have outcomes.
const SENT_ACTIONS: [Action; 2] = [Action::Receive, Action::Reject];
/// The verdict and action pairs a decision can have (`no-match` goes either way, by
/// `on_no_match`).
const DECISIONS: [(Verdict, Action); 5] = [
    (Verdict::Permit, Action::Receive),
    (Verdict::Forbid, Action::Reject),
    (Verdict::NoMatch, Action::None),
    (Verdict::NoMatch, Action::Reject),
    (Verdict::Error, Action::None),
];
/// Every outcome of a sent action.
const OUTCOMES: [Outcome; 5] = [
    Outcome::Applied,
    Outcome::NotPending,
    Outcome::Failed,
    Outcome::Skipped,
    Outcome::Unknown,
];

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

/// All metrics of the daemon. Cheap to clone (shared handles).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    decisions: Family<DecisionLabels, Counter>,
    actions: Family<ActionLabels, Counter>,
    api_requests: Family<ApiLabels, Counter>,
    api_duration: HistogramFamily,
    cycles: Family<CycleLabels, Counter>,
    last_success: SecondsFamily,
    cycle_duration: SecondsFamily,
    pending: Family<TargetLabels, Gauge>,
    oldest_pending_age: SecondsFamily,
    reloads: Family<ResultLabels, Counter>,
    policy_info: Family<VersionLabels, Gauge>,
    policy_version: Arc<Mutex<Option<String>>>,
    audit_failures: Counter,
    audit_records: Counter,
    http_refused: Counter,
    progress: crate::progress::Progress,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            decisions: Family::default(),
            actions: Family::default(),
            api_requests: Family::default(),
            api_duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            cycles: Family::default(),
            last_success: Family::default(),
            cycle_duration: Family::default(),
            pending: Family::default(),
            oldest_pending_age: Family::default(),
            reloads: Family::default(),
            policy_info: Family::default(),
            policy_version: Arc::new(Mutex::new(None)),
            audit_failures: Counter::default(),
            audit_records: Counter::default(),
            http_refused: Counter::default(),
            progress: crate::progress::Progress::default(),
        };
        r.register(
            "vpcep_approver_decisions",
            "Decisions by target, verdict and action",
            m.decisions.clone(),
        );
        r.register(
            "vpcep_approver_actions",
            "Actions sent by target, action and outcome",
            m.actions.clone(),
        );
        r.register(
            "vpcep_approver_api_requests",
            "API requests by target, operation and HTTP status or error class",
            m.api_requests.clone(),
        );
        r.register_with_unit(
            "vpcep_approver_api_request_duration",
            "API request duration by operation",
            Unit::Seconds,
            m.api_duration.clone(),
        );
        r.register(
            "vpcep_approver_poll_cycles",
            "Poll cycles by target and result",
            m.cycles.clone(),
        );
        r.register(
            "vpcep_approver_last_successful_cycle_timestamp_seconds",
            "Unix time of the last successful cycle per target",
            m.last_success.clone(),
        );
        r.register_with_unit(
            "vpcep_approver_cycle_duration",
            "Duration of the last finished cycle per target",
            Unit::Seconds,
            m.cycle_duration.clone(),
        );
        r.register(
            "vpcep_approver_pending_connections",
            "Pending connections seen in the last cycle per target",
            m.pending.clone(),
        );
        r.register_with_unit(
            "vpcep_approver_oldest_pending_age",
            "Age of the oldest connection still pending after the last cycle per target; 0 when none",
            Unit::Seconds,
            m.oldest_pending_age.clone(),
        );
        r.register(
            "vpcep_approver_policy_reloads",
            "Policy reloads by result",
            m.reloads.clone(),
        );
        r.register(
            "vpcep_approver_policy_info",
            "The loaded policy version",
            m.policy_info.clone(),
        );
        r.register(
            "vpcep_approver_audit_write_failures",
            "Failed audit writes",
            m.audit_failures.clone(),
        );
        r.register(
            "vpcep_approver_audit_records",
            "Lines in the audit chain (the running count the checkpoints sign)",
            m.audit_records.clone(),
        );
        r.register(
            "vpcep_approver_http_connections_refused",
            "HTTP connections closed because max_connections were open",
            m.http_refused.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            ..m
        }
    }

    /// The progress signal (`/healthz`, the watchdog): cycles, API answers and audit
    /// writes beat it.
    pub fn progress(&self) -> &crate::progress::Progress {
        &self.progress
    }

    /// Puts every counter family whose labels are known in advance at 0, for each of
    /// `targets` (the configured target names): `policy_reloads_total{result}`,
    /// `poll_cycles_total{target,result}`, `decisions_total{target,verdict,action}` for
    /// every pair a decision can have and `actions_total{target,action,outcome}` for every
    /// sent action and outcome. The label-free counters are at 0 from [`Metrics::new`] on.
    /// Call it once at start; calling it again changes no value.
    pub fn preset<S: AsRef<str>>(&self, targets: &[S]) {
        // `get_or_create` makes the series; the guard it returns is not needed.
        for result in RESULTS {
            let _ = self.reloads.get_or_create(&ResultLabels {
                result: result.into(),
            });
        }
        for target in targets {
            let target = target.as_ref();
            for result in RESULTS {
                let _ = self.cycles.get_or_create(&CycleLabels {
                    target: target.into(),
                    result: result.into(),
                });
            }
            for (verdict, action) in DECISIONS {
                let _ = self.decisions.get_or_create(&DecisionLabels {
                    target: target.into(),
                    verdict: verdict.as_str().into(),
                    action: action.as_str().into(),
                });
            }
            for action in SENT_ACTIONS {
                for outcome in OUTCOMES {
                    let _ = self.actions.get_or_create(&ActionLabels {
                        target: target.into(),
                        action: action.as_str().into(),
                        outcome: outcome.as_str().into(),
                    });
                }
            }
        }
    }

    /// Counts one decision.
    pub fn decision(&self, target: &str, verdict: &str, action: &str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                target: target.into(),
                verdict: verdict.into(),
                action: action.into(),
            })
            .inc();
    }

    /// Counts one action outcome.
    pub fn action(&self, target: &str, action: &str, outcome: &str) {
        self.actions
            .get_or_create(&ActionLabels {
                target: target.into(),
                action: action.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Counts one API request and observes its duration. `code` is the HTTP status, or
    /// `timeout`/`connect`/`error` when there was none.
    pub fn api_request(&self, target: &str, operation: &str, code: &str, seconds: f64) {
        self.api_requests
            .get_or_create(&ApiLabels {
                target: target.into(),
                operation: operation.into(),
                code: code.into(),
            })
            .inc();
        self.api_duration
            .get_or_create(&OperationLabels {
                operation: operation.into(),
            })
            .observe(seconds);
    }

    /// Counts a finished cycle of one target; on success records its time.
    pub fn cycle(&self, target: &str, ok: bool, unix_seconds: f64) {
        self.cycles
            .get_or_create(&CycleLabels {
                target: target.into(),
                result: if ok { "success" } else { "failure" }.into(),
            })
            .inc();
        if ok {
            self.last_success
                .get_or_create(&TargetLabels {
                    target: target.into(),
                })
                .set(unix_seconds);
        }
    }

    /// Sets how long the last finished cycle of a target took.
    pub fn cycle_duration(&self, target: &str, seconds: f64) {
        self.cycle_duration
            .get_or_create(&TargetLabels {
                target: target.into(),
            })
            .set(seconds);
    }

    /// Sets the age of the oldest connection still pending after a target's last cycle,
    /// whatever its verdict; 0 when none is pending.
    pub fn oldest_pending_age(&self, target: &str, seconds: f64) {
        self.oldest_pending_age
            .get_or_create(&TargetLabels {
                target: target.into(),
            })
            .set(seconds);
    }

    /// Sets the number of pending connections seen for a target.
    pub fn pending(&self, target: &str, n: i64) {
        self.pending
            .get_or_create(&TargetLabels {
                target: target.into(),
            })
            .set(n);
    }

    /// Counts a policy reload and, on success, switches `policy_info` to the new version.
    pub fn policy_reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&ResultLabels {
                result: if ok { "success" } else { "failure" }.into(),
            })
            .inc();
    }

    /// Marks `version` as the loaded policy version.
    pub fn policy_version(&self, version: &str) {
        let mut cur = self
            .policy_version
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(old) = cur.take() {
            self.policy_info.remove(&VersionLabels { version: old });
        }
        self.policy_info
            .get_or_create(&VersionLabels {
                version: version.into(),
            })
            .set(1);
        *cur = Some(version.to_owned());
    }

    /// Counts a failed audit write.
    pub fn audit_write_failure(&self) {
        self.audit_failures.inc();
    }

    /// Sets `audit_records_total` from the audit writer's running count of lines in the
    /// chain. It stays a counter: a count lower than one already set is ignored.
    pub fn audit_records(&self, total: u64) {
        self.audit_records
            .inner()
            .fetch_max(total, Ordering::Relaxed);
    }

    /// Counts an HTTP connection closed because `max_connections` were open.
    pub fn http_connection_refused(&self) {
        self.http_refused.inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_metric_is_exposed() {
        let m = Metrics::new();
        m.decision("t", "permit", "receive");
        m.action("t", "receive", "applied");
        m.api_request("t", "list_connections", "200", 0.01);
        m.cycle("t", true, 1.0);
        m.pending("t", 3);
        m.policy_reload(true);
        m.policy_version("sha256:aa");
        m.policy_version("sha256:bb");
        m.audit_write_failure();
        m.cycle_duration("t", 2.5);
        m.oldest_pending_age("t", 90.0);
        m.audit_records(7);
        m.http_connection_refused();
        let text = m.encode();
        for name in [
            "vpcep_approver_decisions_total{target=\"t\",verdict=\"permit\",action=\"receive\"} 1",
            "vpcep_approver_actions_total{target=\"t\",action=\"receive\",outcome=\"applied\"} 1",
            "vpcep_approver_api_requests_total{target=\"t\",operation=\"list_connections\",code=\"200\"} 1",
            "vpcep_approver_api_request_duration_seconds_bucket",
            "vpcep_approver_poll_cycles_total{target=\"t\",result=\"success\"} 1",
            "vpcep_approver_last_successful_cycle_timestamp_seconds{target=\"t\"} 1",
            "vpcep_approver_pending_connections{target=\"t\"} 3",
            "vpcep_approver_policy_reloads_total{result=\"success\"} 1",
            "vpcep_approver_policy_info{version=\"sha256:bb\"} 1",
            "vpcep_approver_audit_write_failures_total 1",
            "vpcep_approver_cycle_duration_seconds{target=\"t\"} 2.5",
            "vpcep_approver_oldest_pending_age_seconds{target=\"t\"} 90.0",
            "vpcep_approver_audit_records_total 7",
            "vpcep_approver_http_connections_refused_total 1",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        assert!(!text.contains("sha256:aa"), "{text}");
    }

    #[test]
    fn preset_puts_every_known_counter_at_zero() {
        let m = Metrics::new();
        m.preset(&["t1", "t2"]);
        let text = m.encode();
        let mut want = vec![
            "vpcep_approver_policy_reloads_total{result=\"success\"} 0".to_owned(),
            "vpcep_approver_policy_reloads_total{result=\"failure\"} 0".to_owned(),
            "vpcep_approver_audit_write_failures_total 0".to_owned(),
            "vpcep_approver_audit_records_total 0".to_owned(),
            "vpcep_approver_http_connections_refused_total 0".to_owned(),
        ];
        for t in ["t1", "t2"] {
            for r in ["success", "failure"] {
                want.push(format!(
                    "vpcep_approver_poll_cycles_total{{target=\"{t}\",result=\"{r}\"}} 0"
                ));
            }
            for a in ["receive", "reject"] {
                for o in ["applied", "not-pending", "failed", "skipped", "unknown"] {
                    want.push(format!(
                        "vpcep_approver_actions_total{{target=\"{t}\",action=\"{a}\",outcome=\"{o}\"}} 0"
                    ));
                }
            }
            for (v, a) in [
                ("permit", "receive"),
                ("forbid", "reject"),
                ("no-match", "none"),
                ("no-match", "reject"),
                ("error", "none"),
            ] {
                want.push(format!(
                    "vpcep_approver_decisions_total{{target=\"{t}\",verdict=\"{v}\",action=\"{a}\"}} 0"
                ));
            }
        }
        for line in &want {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        // Presetting again, after counting, changes nothing.
        m.policy_reload(false);
        m.preset(&["t1", "t2"]);
        assert!(
            m.encode()
                .contains("vpcep_approver_policy_reloads_total{result=\"failure\"} 1")
        );
        // Nothing that is not a counter with known labels is invented.
        assert!(
            !text.contains("vpcep_approver_pending_connections{"),
            "{text}"
        );
        assert!(
            !text.contains("vpcep_approver_api_requests_total{"),
            "{text}"
        );
    }

    #[test]
    fn audit_records_stays_a_counter() {
        let m = Metrics::new();
        m.audit_records(10);
        m.audit_records(4);
        assert!(m.encode().contains("vpcep_approver_audit_records_total 10"));
        m.audit_records(12);
        assert!(m.encode().contains("vpcep_approver_audit_records_total 12"));
    }
}
