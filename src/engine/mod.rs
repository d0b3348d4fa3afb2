//! One poll cycle (docs/design.md, "The life of a connection"): for each target and
//! service, list the pending connections, count accepted ones per account, decide each
//! pending connection, write the decision records durably, and only then send the
//! actions and record their outcomes.
//!
//! The engine owns no sockets or timers of its own: it drives the cloud it is given
//! (through the [`Cloud`] trait), the policy set and the audit writer, so tests step it
//! with [`Engine::run_cycle`]. The rules themselves are pure functions in [`plan`].

pub mod plan;
mod report;

pub use report::{CycleReport, Row, TargetReport};

use crate::audit::{AuditWriter, OutcomeRecord};
use crate::clock::SharedClock;
use crate::cloud::error::{ApiError, ApiErrorKind};
use crate::cloud::types::{EndpointService, WireConnection, status};
use crate::cloud::{Cloud, TargetApi};
use crate::decision::{Decision, OnNoMatch, Outcome};
use crate::metrics::Metrics;
use crate::policy::Policies;
use futures_util::StreamExt;
use plan::{Observed, ServiceRef, Subject};
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

/// One pending connection and what was decided about it.
struct Planned {
    conn: WireConnection,
    decision: Decision,
    decision_id: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
    pub async fn run_cycle<C: Cloud>(
        &self,
        cloud: &C,
        shutdown: &CancellationToken,
    ) -> CycleReport {
        self.policies().new_cycle();
        let futs = cloud.targets().iter().map(|tc| {
            let span = info_span!("target", target_name = %tc.target().name);
            self.run_target(tc, shutdown).instrument(span)
        });
        CycleReport {
            targets: futures_util::future::join_all(futs).await,
        }
    }

    /// Runs one cycle over one target.
    pub async fn run_target<T: TargetApi>(
        &self,
        tc: &T,
        shutdown: &CancellationToken,
    ) -> TargetReport {
        let mut report = TargetReport {
            target: tc.target().name.clone(),
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
                Ok(s) => report.absorb(s),
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
    async fn services<T: TargetApi>(&self, tc: &T) -> Result<Vec<ServiceRef>, String> {
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

    /// list → plan → record → act → record.
    async fn run_service<T: TargetApi>(
        &self,
        tc: &T,
        svc: ServiceRef,
        shutdown: &CancellationToken,
    ) -> Result<TargetReport, ServiceError> {
        let mut rep = TargetReport::default();
        if shutdown.is_cancelled() {
            return Ok(rep);
        }
        let Some((pending, counted)) = self.list(tc, &svc, &mut rep).await? else {
            rep.services_ok = 1;
            return Ok(rep);
        };
        let planned = self.plan(tc, &svc, pending, &counted);
        drop(counted);
        let recorded = self.record(tc, &svc, planned).await?;
        rep.decisions = recorded.len();
        let outcomes = self.act_all(tc, &svc, &recorded, shutdown).await;
        for o in outcomes.values() {
            rep.count(*o);
        }
        if self.opts.collect_rows {
            rep.rows = recorded
                .into_iter()
                .enumerate()
                .map(|(i, p)| Row {
                    target: tc.target().name.clone(),
                    service: svc.label().to_owned(),
                    endpoint_id: p.conn.id.clone().unwrap_or_default(),
                    domain_id: p.conn.domain_id.clone().unwrap_or_default(),
                    description: p.conn.description.clone().unwrap_or_default(),
                    outcome: outcomes.get(&i).copied(),
                    decision: p.decision,
                })
                .collect();
        }
        rep.services_ok = 1;
        Ok(rep)
    }

    /// The pending connections of a service and, when there are any, its accepted and
    /// creating ones to count; `None` when nothing is pending.
    async fn list<T: TargetApi>(
        &self,
        tc: &T,
        svc: &ServiceRef,
        rep: &mut TargetReport,
    ) -> Result<Option<(Vec<WireConnection>, Vec<WireConnection>)>, ServiceError> {
        let list_err = |what: &'static str| {
            let service = svc.id.clone();
            move |source| ServiceError::List {
                what,
                service,
                source,
            }
        };
        let listed = tc
            .list_connections(&svc.id, status::PENDING)
            .await
            .map_err(list_err("pending"))?;
        let mut pending = plan::pending_of(listed).map_err(|message| ServiceError::Malformed {
            service: svc.id.clone(),
            message,
        })?;
        if pending.is_empty() {
            self.prune_recorded(&tc.target().name, &svc.id, &HashSet::new());
            return Ok(None);
        }
        let mut counted = tc
            .list_connections(&svc.id, status::ACCEPTED)
            .await
            .map_err(list_err("accepted"))?;
        counted.extend(
            tc.list_connections(&svc.id, status::CREATING)
                .await
                .map_err(list_err("creating"))?,
        );
        // One that was decided between the listings is no longer pending.
        let decided: HashSet<&str> = counted.iter().filter_map(|c| c.id.as_deref()).collect();
        pending.retain(|c| !c.id.as_deref().is_some_and(|id| decided.contains(id)));
        rep.pending = pending.len();
        let ids: HashSet<String> = pending.iter().filter_map(|c| c.id.clone()).collect();
        self.prune_recorded(&tc.target().name, &svc.id, &ids);
        Ok(Some((pending, counted)))
    }

    /// Decides every pending connection with one policy set and one `now`, oldest first,
    /// each with the counts of its account so far.
    fn plan<T: TargetApi>(
        &self,
        tc: &T,
        svc: &ServiceRef,
        mut pending: Vec<WireConnection>,
        counted: &[WireConnection],
    ) -> Vec<Planned> {
        plan::in_decision_order(&mut pending);
        let mut counts = plan::Counts::new(&pending, counted);
        let policies = self.policies();
        let now = self.clock.now();
        pending
            .into_iter()
            .map(|conn| {
                let decision = match plan::facts(tc.target(), svc, &conn, now, &counts) {
                    Ok(f) => {
                        let d = policies.decide(&f, self.opts.on_no_match);
                        counts.decided(&f.domain_id, d.verdict);
                        d
                    }
                    Err(why) => plan::error_decision(why),
                };
                Planned {
                    conn,
                    decision,
                    decision_id: uuid::Uuid::now_v7().to_string(),
                }
            })
            .collect()
    }

    /// Writes the decision records that need writing and makes them durable before any
    /// action is sent (write-ahead). Returns the recorded decisions.
    async fn record<T: TargetApi>(
        &self,
        tc: &T,
        svc: &ServiceRef,
        planned: Vec<Planned>,
    ) -> Result<Vec<Planned>, ServiceError> {
        let target = tc.target();
        let version = self.policies().version().to_owned();
        let to_record: Vec<Planned> = planned
            .into_iter()
            .filter(|p| {
                let first = !plan::sends(&p.decision, self.opts.dry_run)
                    && self.first_record(
                        &target.name,
                        &svc.id,
                        p.conn.id.as_deref().unwrap_or_default(),
                        &version,
                    );
                plan::should_record(&p.decision, self.opts.dry_run, first)
            })
            .collect();
        let mut recorded = Vec::with_capacity(to_record.len());
        let written = {
            let mut w = lock(&self.audit);
            let mut res = Ok(());
            for p in to_record {
                let rec = plan::decision_record(
                    p.decision_id.clone(),
                    Subject::listed(target, svc, &p.conn),
                    &p.decision,
                    &version,
                    self.opts.dry_run,
                );
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
                recorded.push(p);
            }
            res
        };
        // The fsync runs without holding the writer, so other services keep recording.
        let synced = match written {
            Ok(()) => self.sync_audit().await,
            Err(e) => Err(e),
        };
        if let Err(message) = synced {
            self.audit_failed();
            // Forget what was "recorded" so it is recorded again once the log works.
            self.forget_recorded(&target.name, &svc.id);
            return Err(ServiceError::Audit {
                service: svc.id.clone(),
                message,
            });
        }
        self.audit_ok.store(true, Ordering::Relaxed);
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
        Ok(recorded)
    }

    /// Sends the recorded actions, at most `max_in_flight` at once, and syncs their
    /// outcome records. Returns each outcome by index into `recorded`.
    async fn act_all<T: TargetApi>(
        &self,
        tc: &T,
        svc: &ServiceRef,
        recorded: &[Planned],
        shutdown: &CancellationToken,
    ) -> HashMap<usize, Outcome> {
        let to_send: Vec<(usize, &Planned)> = recorded
            .iter()
            .enumerate()
            .filter(|(_, p)| plan::sends(&p.decision, self.opts.dry_run))
            .collect();
        if to_send.is_empty() || shutdown.is_cancelled() {
            // Stopping: decisions are recorded, but no new action starts.
            return HashMap::new();
        }
        let outcomes: HashMap<usize, Outcome> = futures_util::stream::iter(
            to_send
                .into_iter()
                .map(|(i, p)| async move { (i, self.act(tc, svc, p).await) }),
        )
        .buffer_unordered(self.opts.max_in_flight.max(1))
        .collect()
        .await;
        if let Err(e) = self.sync_audit().await {
            self.audit_failed();
            error!(error = %e, "audit sync of outcome records failed");
        }
        outcomes
    }

    /// Sends one action and records its outcome. Any error is read back: the connection's
    /// current status tells whether the action took effect or someone else decided.
    async fn act<T: TargetApi>(&self, tc: &T, svc: &ServiceRef, p: &Planned) -> Outcome {
        let endpoint_id = p.conn.id.as_deref().unwrap_or_default();
        let action = p.decision.action;
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
                    .or_else(|| action.resulting_status().map(str::to_owned))
                    .unwrap_or_default();
                rec.outcome = plan::classify_outcome(action, Observed::Status(&after));
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
                            rec.outcome = plan::classify_outcome(action, Observed::Status(&st));
                            rec.status_after = Some(st);
                        }
                        Ok(None) => {
                            rec.outcome = plan::classify_outcome(action, Observed::Deleted);
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
            .action(&tc.target().name, action.as_str(), outcome.as_str());
        let written = lock(&self.audit).append_outcome(&rec);
        if let Err(e) = written {
            self.audit_failed();
            error!(endpoint_id, error = %e, "writing the outcome record failed");
        }
        outcome
    }

    fn audit_failed(&self) {
        self.audit_ok.store(false, Ordering::Relaxed);
        self.metrics.audit_write_failure();
    }

    /// Makes every audit line written so far durable, without holding the writer while
    /// the disk works.
    async fn sync_audit(&self) -> Result<(), String> {
        let pending = lock(&self.audit).begin_sync().map_err(|e| e.to_string())?;
        let Some(pending) = pending else {
            return Ok(());
        };
        let epoch = pending.epoch();
        let result = match tokio::task::spawn_blocking(move || pending.wait()).await {
            Ok(r) => r,
            Err(e) => return Err(format!("audit fsync task failed: {e}")),
        };
        let message = result.as_ref().err().map(ToString::to_string);
        lock(&self.audit).sync_done(epoch, &result);
        message.map_or(Ok(()), Err)
    }

    /// True the first time a connection is recorded under a policy version.
    fn first_record(&self, target: &str, service: &str, endpoint: &str, version: &str) -> bool {
        let mut m = lock(&self.recorded);
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
        let mut m = lock(&self.recorded);
        if let Some(per) = m.get_mut(&(target.to_owned(), service.to_owned())) {
            per.retain(|k, _| pending.contains(k));
        }
    }

    fn forget_recorded(&self, target: &str, service: &str) {
        lock(&self.recorded).remove(&(target.to_owned(), service.to_owned()));
    }
}
