//! The Prometheus metrics (README "Health, metrics and alerts"), in one registry shared by the engine, the client and
//! the HTTP surface. Counters only go up from events that also reach the audit log or
//! the logs, so they can be reconciled with them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
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
    last_success: Family<TargetLabels, Gauge<f64, AtomicU64>>,
    pending: Family<TargetLabels, Gauge>,
    reloads: Family<ResultLabels, Counter>,
    policy_info: Family<VersionLabels, Gauge>,
    policy_version: Arc<Mutex<Option<String>>>,
    audit_failures: Counter,
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
            pending: Family::default(),
            reloads: Family::default(),
            policy_info: Family::default(),
            policy_version: Arc::new(Mutex::new(None)),
            audit_failures: Counter::default(),
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
            prometheus_client::registry::Unit::Seconds,
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
        r.register(
            "vpcep_approver_pending_connections",
            "Pending connections seen in the last cycle per target",
            m.pending.clone(),
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
        Metrics {
            registry: Arc::new(r),
            ..m
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
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        assert!(!text.contains("sha256:aa"), "{text}");
    }
}
