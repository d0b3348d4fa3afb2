//! One poll cycle (SPEC §4): for each target and service, list the pending connections,
//! count accepted ones per account, decide each pending connection, write the decision
//! records durably, and only then send the actions and record their outcomes.
//!
//! The engine owns no sockets or timers of its own: it drives the cloud client, the
//! policy set and the audit writer it is given, so tests step it with [`Engine::run_cycle`].

use crate::audit::{AuditWriter, DecisionRecord, OutcomeRecord};
use crate::clock::SharedClock;
use crate::cloud::client::{Cloud, TargetClient};
use crate::cloud::error::{ApiError, ApiErrorKind};
use crate::cloud::types::{EndpointService, WireConnection, status};
use crate::decision::{Action, ConnectionFacts, Decision, OnNoMatch, Outcome, Verdict};
use crate::metrics::Metrics;
use crate::policy::Policies;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

/// What the engine needs besides the cloud client.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Decide and audit, never send an action.
    pub dry_run: bool,
    /// What a `no-match` verdict does.
    pub on_no_match: OnNoMatch,
    /// Keep a row per decision in the cycle report (demo, `run --once`).
    pub collect_rows: bool,
    /// Actions sent concurrently within one service (the client bounds the total).
    pub max_in_flight: usize,
}

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
    /// Rows when `collect_rows` is set.
    pub rows: Vec<Row>,
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
    /// Whether every target listed everything and no action failed.
    pub fn fully_ok(&self) -> bool {
        self.targets.iter().all(|t| t.ok() && t.failed == 0)
    }
}

/// The decision state shared across cycles.
pub struct Engine {
    policies: RwLock<Arc<Policies>>,
    audit: Arc<Mutex<AuditWriter>>,
    metrics: Metrics,
    clock: SharedClock,
    opts: EngineOptions,
    audit_ok: AtomicBool,
    /// Connections recorded with no action, per (target, service): endpoint id → policy
    /// version, so a connection left pending is recorded once per version, not per cycle.
    recorded: Mutex<HashMap<(String, String), HashMap<String, String>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// An endpoint service to process.
#[derive(Debug, Clone)]
struct ServiceRef {
    id: String,
    name: String,
}

/// Why a service's cycle failed.
#[derive(Debug, thiserror::Error)]
enum ServiceError {
    #[error("listing {what} connections of service {service}: {source}")]
    List {
        what: &'static str,
        service: String,
        #[source]
        source: ApiError,
    },
    #[error("service {service}: listing is not usable: {message}")]
    Malformed { service: String, message: String },
    #[error("service {service}: audit log write failed, no action sent: {message}")]
    Audit { service: String, message: String },
}

struct Pending {
    conn: WireConnection,
    facts: Option<ConnectionFacts>,
    decision: Decision,
    decision_id: String,
}

impl Engine {
    /// A new engine with a loaded policy set and an open audit writer.
    pub fn new(
        policies: Arc<Policies>,
        audit: Arc<Mutex<AuditWriter>>,
        metrics: Metrics,
        clock: SharedClock,
        opts: EngineOptions,
    ) -> Engine {
        metrics.policy_version(policies.version());
        Engine {
            policies: RwLock::new(policies),
            audit,
            metrics,
            clock,
            opts,
            audit_ok: AtomicBool::new(true),
            recorded: Mutex::new(HashMap::new()),
        }
    }

    /// The policy set in force.
    pub fn policies(&self) -> Arc<Policies> {
        self.policies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Swaps in a new policy set (after a successful reload). Pending connections are
    /// re-decided and re-recorded under the new version on the next cycle.
    pub fn set_policies(&self, p: Arc<Policies>) {
        self.metrics.policy_version(p.version());
        *self.policies.write().unwrap_or_else(|p| p.into_inner()) = p;
    }

    /// The shared audit writer (the daemon reopens it on SIGHUP).
    pub fn audit(&self) -> &Arc<Mutex<AuditWriter>> {
        &self.audit
    }

    /// Whether the last audit write succeeded.
    pub fn audit_ok(&self) -> bool {
        self.audit_ok.load(Ordering::Relaxed)
    }

    /// The metrics the engine counts into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Runs one cycle over every target, targets concurrently. Stops starting new work
    /// when `shutdown` is cancelled; actions already sent finish and are recorded.
    pub async fn run_cycle(&self, cloud: &Cloud, shutdown: &CancellationToken) -> CycleReport {
        self.policies().new_cycle();
        let futs = cloud.targets().iter().map(|tc| {
            let span = info_span!("target", target = %tc.target().name);
            self.run_target(tc, shutdown).instrument(span)
        });
        CycleReport {
            targets: futures_util::future::join_all(futs).await,
        }
    }

    /// Runs one cycle over one target.
    pub async fn run_target(
        &self,
        tc: &TargetClient,
        shutdown: &CancellationToken,
    ) -> TargetReport {
        let target = tc.target();
        let mut report = TargetReport {
            target: target.name.clone(),
            ..TargetReport::default()
        };
        let services = match self.services(tc).await {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "listing endpoint services failed");
                report.failures.push(e);
                self.finish_target(&report);
                return report;
            }
        };
        let results = futures_util::stream::iter(services.into_iter().map(|svc| {
            let span = info_span!("service", service_id = %svc.id);
            self.run_service(tc, svc, shutdown).instrument(span)
        }))
        // As many services at once as requests may be in flight: the client's semaphore
        // bounds the requests anyway, and with fewer, services of equal size finish in
        // lockstep and the next ones' listings run while no action is in flight.
        .buffer_unordered(self.opts.max_in_flight.max(4))
        .collect::<Vec<_>>()
        .await;
        for r in results {
            match r {
                Ok(s) => {
                    report.services_ok += 1;
                    report.pending += s.pending;
                    report.decisions += s.decisions;
                    report.applied += s.applied;
                    report.not_pending += s.not_pending;
                    report.failed += s.failed;
                    report.rows.extend(s.rows);
                }
                Err(e) => {
                    error!(error = %e, "service cycle failed");
                    report.failures.push(e.to_string());
                }
            }
        }
        self.finish_target(&report);
        report
    }

    fn finish_target(&self, report: &TargetReport) {
        let now = self.clock.now();
        let secs = now.timestamp() as f64 + f64::from(now.timestamp_subsec_millis()) / 1000.0;
        self.metrics.cycle(&report.target, report.ok(), secs);
        self.metrics.pending(&report.target, report.pending as i64);
        info!(
            services_ok = report.services_ok,
            failures = report.failures.len(),
            pending = report.pending,
            decisions = report.decisions,
            applied = report.applied,
            not_pending = report.not_pending,
            failed = report.failed,
            "target cycle finished"
        );
    }

    /// The services to process: the configured list (names looked up), or every available
    /// service with approval enabled.
    async fn services(&self, tc: &TargetClient) -> Result<Vec<ServiceRef>, String> {
        let target = tc.target();
        let all = tc
            .list_services()
            .await
            .map_err(|e| format!("listing endpoint services of target {}: {e}", target.name))?;
        let name_of = |s: &EndpointService| s.service_name.clone().unwrap_or_default();
        match &target.services {
            Some(ids) => {
                let mut out = Vec::with_capacity(ids.len());
                let mut missing = Vec::new();
                for id in ids {
                    match all.iter().find(|s| s.id.as_deref() == Some(id.as_str())) {
                        Some(s) => out.push(ServiceRef {
                            id: id.clone(),
                            name: name_of(s),
                        }),
                        None => missing.push(id.clone()),
                    }
                }
                if !missing.is_empty() {
                    warn!(missing = ?missing, "configured services not found in the project");
                }
                Ok(out)
            }
            None => Ok(all
                .iter()
                .filter(|s| {
                    s.approval_enabled == Some(true)
                        && s.status.as_deref() == Some(status::AVAILABLE)
                })
                .filter_map(|s| {
                    s.id.clone().filter(|i| !i.is_empty()).map(|id| ServiceRef {
                        id,
                        name: name_of(s),
                    })
                })
                .collect()),
        }
    }

    async fn run_service(
        &self,
        tc: &TargetClient,
        svc: ServiceRef,
        shutdown: &CancellationToken,
    ) -> Result<TargetReport, ServiceError> {
        let mut rep = TargetReport::default();
        if shutdown.is_cancelled() {
            return Ok(rep);
        }
        let target = tc.target();
        let listed = tc
            .list_connections(&svc.id, status::PENDING)
            .await
            .map_err(|source| ServiceError::List {
                what: "pending",
                service: svc.id.clone(),
                source,
            })?;
        // The filter is the server's; keep only what really is pending, and refuse a
        // listing whose entries cannot be acted on.
        let mut seen = HashSet::new();
        let mut pending = Vec::with_capacity(listed.len());
        for c in listed {
            if c.status.as_deref() != Some(status::PENDING) {
                continue;
            }
            let id = c.id.clone().unwrap_or_default();
            if id.is_empty() {
                return Err(ServiceError::Malformed {
                    service: svc.id.clone(),
                    message: "a pending connection has no id".into(),
                });
            }
            if !seen.insert(id.clone()) {
                return Err(ServiceError::Malformed {
                    service: svc.id.clone(),
                    message: format!("endpoint {id} is listed twice"),
                });
            }
            pending.push(c);
        }
        rep.pending = pending.len();
        self.prune_recorded(&target.name, &svc.id, &seen);
        if pending.is_empty() {
            rep.services_ok = 1;
            return Ok(rep);
        }
        let accepted = tc
            .list_connections(&svc.id, status::ACCEPTED)
            .await
            .map_err(|source| ServiceError::List {
                what: "accepted",
                service: svc.id.clone(),
                source,
            })?;
        let mut accepted_by: HashMap<&str, i64> = HashMap::new();
        for c in &accepted {
            if c.status.as_deref() == Some(status::ACCEPTED)
                && let Some(d) = c.domain_id.as_deref()
            {
                *accepted_by.entry(d).or_default() += 1;
            }
        }
        let mut pending_by: HashMap<String, i64> = HashMap::new();
        for c in &pending {
            if let Some(d) = c.domain_id.as_deref() {
                *pending_by.entry(d.to_owned()).or_default() += 1;
            }
        }

        // Decide every pending connection with one policy set and one `now`.
        let policies = self.policies();
        let version = policies.version().to_owned();
        let now = self.clock.now();
        let mut decided = Vec::with_capacity(pending.len());
        for conn in pending {
            let (facts, decision) =
                match self.facts(tc, &svc, &conn, now, &accepted_by, &pending_by) {
                    Ok(f) => {
                        let d = policies.decide(&f, self.opts.on_no_match);
                        (Some(f), d)
                    }
                    Err(why) => (
                        None,
                        Decision {
                            verdict: Verdict::Error,
                            action: Action::None,
                            policies: vec![],
                            reasons: vec![],
                            errors: vec![why],
                        },
                    ),
                };
            decided.push(Pending {
                conn,
                facts,
                decision,
                decision_id: uuid::Uuid::now_v7().to_string(),
            });
        }
        drop(accepted);

        // Record: every decision that leads to an action, and each one left pending once per
        // policy version. In a dry run nothing is sent, so everything is "left pending".
        let to_record: Vec<Pending> = decided
            .into_iter()
            .filter(|p| {
                let acts = p.decision.action != Action::None && !self.opts.dry_run;
                acts || self.first_record(
                    &target.name,
                    &svc.id,
                    p.conn.id.as_deref().unwrap_or_default(),
                    &version,
                )
            })
            .collect();
        let mut recorded = Vec::with_capacity(to_record.len());
        let audit_result = {
            let mut w = self.audit.lock().unwrap_or_else(|p| p.into_inner());
            let mut res = Ok(());
            for p in to_record {
                let rec = self.decision_record(tc, &svc, &p, &version);
                if let Err(e) = w.append_decision(&rec) {
                    res = Err(e.to_string());
                    break;
                }
                // Counted as soon as the line is in the log, so the counter matches the
                // log even when the following fsync fails.
                self.metrics.decision(
                    &target.name,
                    p.decision.verdict.as_str(),
                    p.decision.action.as_str(),
                );
                // The facts were only needed for the decision and its record; dropping
                // them here keeps a large backlog's memory down while it is acted on.
                recorded.push(Pending { facts: None, ..p });
            }
            res
        };
        // Write-ahead: the decision records are on disk before any action is sent. The
        // fsync runs without holding the writer, so other services keep recording outcomes.
        let audit_result = match audit_result {
            Ok(()) => self.sync_audit().await,
            Err(e) => Err(e),
        };
        if let Err(message) = audit_result {
            self.audit_ok.store(false, Ordering::Relaxed);
            self.metrics.audit_write_failure();
            // Forget what was "recorded" so it is recorded again once the log works.
            self.forget_recorded(&target.name, &svc.id);
            return Err(ServiceError::Audit {
                service: svc.id.clone(),
                message,
            });
        }
        self.audit_ok.store(true, Ordering::Relaxed);
        rep.decisions = recorded.len();
        for p in &recorded {
            let d = &p.decision;
            info!(
                endpoint_id = %p.conn.id.as_deref().unwrap_or_default(),
                domain_id = %p.conn.domain_id.as_deref().unwrap_or_default(),
                verdict = %d.verdict,
                action = %d.action,
                policies = ?d.policies,
                errors = ?d.errors,
                dry_run = self.opts.dry_run,
                "decision"
            );
        }

        // Act, now that every decision record is durable.
        let act_on: Vec<&Pending> = recorded
            .iter()
            .filter(|p| p.decision.action != Action::None && !self.opts.dry_run)
            .collect();
        let outcomes: Vec<(usize, Outcome)> = if shutdown.is_cancelled() && !act_on.is_empty() {
            // Stopping: decisions are recorded, but no new action starts.
            vec![]
        } else {
            let svc = &svc;
            futures_util::stream::iter(
                act_on
                    .iter()
                    .enumerate()
                    .map(|(i, p)| async move { (i, self.act(tc, svc, p).await) }),
            )
            .buffer_unordered(self.opts.max_in_flight.max(1))
            .collect()
            .await
        };
        let mut outcome_of: HashMap<usize, Outcome> = HashMap::new();
        for (i, o) in outcomes {
            match o {
                Outcome::Applied => rep.applied += 1,
                Outcome::NotPending => rep.not_pending += 1,
                Outcome::Failed => rep.failed += 1,
                // Not produced yet: the freshness and shutdown rules come next.
                Outcome::Skipped | Outcome::Unknown => rep.failed += 1,
            }
            outcome_of.insert(i, o);
        }
        if let Err(e) = self.sync_audit().await {
            self.audit_ok.store(false, Ordering::Relaxed);
            self.metrics.audit_write_failure();
            error!(error = %e, "audit sync of outcome records failed");
        }
        if self.opts.collect_rows {
            let mut acted = 0usize;
            for p in recorded {
                let outcome = if p.decision.action != Action::None && !self.opts.dry_run {
                    let o = outcome_of.get(&acted).copied();
                    acted += 1;
                    o
                } else {
                    None
                };
                rep.rows.push(Row {
                    target: target.name.clone(),
                    service: if svc.name.is_empty() {
                        svc.id.clone()
                    } else {
                        svc.name.clone()
                    },
                    endpoint_id: p.conn.id.clone().unwrap_or_default(),
                    domain_id: p.conn.domain_id.clone().unwrap_or_default(),
                    description: p.conn.description.clone().unwrap_or_default(),
                    decision: p.decision,
                    outcome,
                });
            }
        }
        rep.services_ok = 1;
        Ok(rep)
    }

    fn facts(
        &self,
        tc: &TargetClient,
        svc: &ServiceRef,
        c: &WireConnection,
        now: chrono::DateTime<chrono::Utc>,
        accepted_by: &HashMap<&str, i64>,
        pending_by: &HashMap<String, i64>,
    ) -> Result<ConnectionFacts, String> {
        let target = tc.target();
        let domain_id = c
            .domain_id
            .clone()
            .filter(|d| !d.is_empty())
            .ok_or_else(|| "connection has no domain_id".to_owned())?;
        let raw = c
            .created_at
            .as_deref()
            .ok_or_else(|| "connection has no created_at".to_owned())?;
        let created_at = chrono::DateTime::parse_from_rfc3339(raw)
            .map_err(|_| format!("connection created_at {raw:?} is not an RFC 3339 time"))?
            .with_timezone(&chrono::Utc);
        Ok(ConnectionFacts {
            target: target.name.clone(),
            region: target.region.clone(),
            project_id: target.project_id.clone(),
            service_id: svc.id.clone(),
            service_name: svc.name.clone(),
            endpoint_id: c.id.clone().unwrap_or_default(),
            accepted_from_domain: accepted_by.get(domain_id.as_str()).copied().unwrap_or(0),
            pending_from_domain: pending_by.get(&domain_id).copied().unwrap_or(0),
            domain_id,
            description: c.description.clone().unwrap_or_default(),
            marker_id: c.marker_id.unwrap_or(0),
            created_at,
            now,
        })
    }

    fn decision_record(
        &self,
        tc: &TargetClient,
        svc: &ServiceRef,
        p: &Pending,
        version: &str,
    ) -> DecisionRecord {
        let target = tc.target();
        let c = &p.conn;
        DecisionRecord {
            decision_id: p.decision_id.clone(),
            target: target.name.clone(),
            project_id: target.project_id.clone(),
            service_id: svc.id.clone(),
            service_name: svc.name.clone(),
            endpoint_id: c.id.clone().unwrap_or_default(),
            domain_id: c.domain_id.clone().unwrap_or_default(),
            description: c.description.clone().unwrap_or_default(),
            marker_id: p
                .facts
                .as_ref()
                .map_or(c.marker_id.unwrap_or(0), |f| f.marker_id),
            created_at: c.created_at.clone().unwrap_or_default(),
            verdict: p.decision.verdict,
            action: p.decision.action,
            policies: p.decision.policies.clone(),
            reasons: p.decision.reasons.clone(),
            errors: p.decision.errors.clone(),
            policy_version: version.to_owned(),
            dry_run: self.opts.dry_run,
        }
    }

    /// Sends one action and records its outcome. Any error is read back: the connection's
    /// current status tells whether the action took effect or someone else decided.
    async fn act(&self, tc: &TargetClient, svc: &ServiceRef, p: &Pending) -> Outcome {
        let target = tc.target();
        let endpoint_id = p.conn.id.as_deref().unwrap_or_default();
        let action = p.decision.action;
        let expected = action.resulting_status().unwrap_or_default();
        let mut rec = OutcomeRecord {
            decision_id: p.decision_id.clone(),
            endpoint_id: endpoint_id.to_owned(),
            action,
            outcome: Outcome::Failed,
            status_after: None,
            http_status: None,
            error_code: None,
            error_message: None,
            attempts: 0,
        };
        match tc.act(&svc.id, endpoint_id, action).await {
            Ok(resp) => {
                rec.http_status = Some(resp.http_status);
                rec.attempts = resp.attempts;
                let after = resp
                    .connection
                    .and_then(|c| c.status)
                    .unwrap_or_else(|| expected.to_owned());
                rec.outcome = if after == expected || after == "creating" {
                    Outcome::Applied
                } else if after != status::PENDING {
                    Outcome::NotPending
                } else {
                    Outcome::Failed
                };
                rec.status_after = Some(after);
            }
            Err(e) => {
                rec.http_status = e.http_status;
                rec.error_code = e.error_code.clone();
                rec.error_message = Some(e.to_string());
                rec.attempts = e.attempts;
                let read_back = !matches!(
                    e.kind,
                    ApiErrorKind::Unauthorized | ApiErrorKind::AuthBackoff
                );
                if read_back {
                    match tc.get_connection(&svc.id, endpoint_id).await {
                        Ok(Some(c)) => {
                            let st = c.status.unwrap_or_default();
                            rec.outcome = if st == expected {
                                Outcome::Applied
                            } else if st != status::PENDING {
                                Outcome::NotPending
                            } else {
                                Outcome::Failed
                            };
                            rec.status_after = Some(st);
                        }
                        Ok(None) => {
                            rec.outcome = Outcome::NotPending;
                            rec.status_after = Some("deleted".into());
                        }
                        Err(e2) => {
                            warn!(endpoint_id, error = %e2, "reading the connection back failed");
                        }
                    }
                }
                if rec.outcome == Outcome::Failed {
                    warn!(
                        endpoint_id,
                        action = %action,
                        http_status = ?e.http_status,
                        error_code = ?e.error_code,
                        request_id = ?e.request_id,
                        error = %e,
                        "action failed"
                    );
                }
            }
        }
        let outcome = rec.outcome;
        info!(endpoint_id, action = %action, outcome = %outcome, http_status = ?rec.http_status, "outcome");
        self.metrics
            .action(&target.name, action.as_str(), outcome.as_str());
        let written = self
            .audit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append_outcome(&rec);
        if let Err(e) = written {
            self.audit_ok.store(false, Ordering::Relaxed);
            self.metrics.audit_write_failure();
            error!(endpoint_id, error = %e, "writing the outcome record failed");
        }
        outcome
    }

    /// Makes every audit line written so far durable, without holding the writer while
    /// the disk works.
    async fn sync_audit(&self) -> Result<(), String> {
        let pending = self
            .audit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .begin_sync()
            .map_err(|e| e.to_string())?;
        let Some(pending) = pending else {
            return Ok(());
        };
        let epoch = pending.epoch();
        let result = match tokio::task::spawn_blocking(move || pending.wait()).await {
            Ok(r) => r,
            Err(e) => return Err(format!("audit fsync task failed: {e}")),
        };
        let message = result.as_ref().err().map(ToString::to_string);
        self.audit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sync_done(epoch, &result);
        message.map_or(Ok(()), Err)
    }

    /// True the first time a connection is recorded under a policy version.
    fn first_record(&self, target: &str, service: &str, endpoint: &str, version: &str) -> bool {
        let mut m = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        let per = m
            .entry((target.to_owned(), service.to_owned()))
            .or_default();
        match per.get(endpoint) {
            Some(v) if v == version => false,
            _ => {
                per.insert(endpoint.to_owned(), version.to_owned());
                true
            }
        }
    }

    /// Drops memory of connections that are no longer pending, so it stays bounded.
    fn prune_recorded(&self, target: &str, service: &str, pending: &HashSet<String>) {
        let mut m = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(per) = m.get_mut(&(target.to_owned(), service.to_owned())) {
            per.retain(|k, _| pending.contains(k));
        }
    }

    fn forget_recorded(&self, target: &str, service: &str) {
        let mut m = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&(target.to_owned(), service.to_owned()));
    }
}
