//! One poll cycle (docs/design.md, "The life of a connection"): for each target and
//! service, list the pending connections, count accepted and creating ones per account,
//! decide each pending connection, write the decision records durably, and only then send
//! the actions and record their outcomes.
//!
//! An action is sent only while its decision is fresh: its facts were listed at most
//! `max_decision_age` ago and the policies that decided it are still in force. So a long
//! backlog is worked in batches of what can be sent within that age, each batch listed
//! and decided again; a decision that went stale is recorded `skipped` and its connection
//! decided again on fresh facts.
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
use crate::config::Config;
use crate::decision::Subject;
use crate::decision::{Action, Decision, OnNoMatch, Outcome};
use crate::metrics::Metrics;
use crate::policy::Policies;
use crate::stop::Stop;
use futures_util::StreamExt;
use plan::{Observed, ServiceRef};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info, info_span, warn};

/// Longest wait before a connection whose action failed is sent again.
pub const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(60 * 60);

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
    /// An action is sent only on facts listed at most this long ago.
    pub max_decision_age: Duration,
    /// How long a connection whose action failed waits before it is sent again (doubling
    /// per consecutive failure up to [`MAX_FAILURE_BACKOFF`]).
    pub retry_failed_after: Duration,
    /// The client's rate limit (0: none), to size batches.
    pub max_requests_per_second: u32,
}

impl Default for EngineOptions {
    fn default() -> Self {
        let poll = crate::config::Poll::default();
        EngineOptions {
            dry_run: false,
            on_no_match: OnNoMatch::LeavePending,
            collect_rows: false,
            max_in_flight: poll.max_in_flight,
            max_decision_age: poll.max_decision_age,
            retry_failed_after: poll.interval,
            max_requests_per_second: poll.max_requests_per_second,
        }
    }
}

impl EngineOptions {
    /// The options a config gives.
    pub fn from_config(cfg: &Config, dry_run: bool) -> EngineOptions {
        EngineOptions {
            dry_run,
            on_no_match: cfg.policy.on_no_match,
            collect_rows: false,
            max_in_flight: cfg.poll.max_in_flight,
            max_decision_age: cfg.poll.max_decision_age,
            retry_failed_after: cfg.poll.interval,
            max_requests_per_second: cfg.poll.max_requests_per_second,
        }
    }
}

/// A connection of one service of one target.
type ConnKey = (String, String, String);

/// The decision state shared across cycles.
pub struct Engine {
    policies: RwLock<Arc<Policies>>,
    /// Bumped by every policy swap: a decision made under another one is superseded.
    generation: AtomicU64,
    audit: Arc<Mutex<AuditWriter>>,
    metrics: Metrics,
    clock: SharedClock,
    opts: EngineOptions,
    audit_ok: AtomicBool,
    /// Connections recorded with no action, per (target, service): endpoint id → policy
    /// version, so a connection left pending is recorded once per version, not per cycle.
    recorded: Mutex<HashMap<(String, String), HashMap<String, String>>>,
    /// Connections whose action failed: consecutive failures and when they may be sent
    /// again.
    failed: Mutex<HashMap<ConnKey, (u32, Instant)>>,
    /// Outcome records owed to decision records already in the log (an audit failure
    /// came between them), with their target; written before anything else.
    owed: Mutex<Vec<(String, OutcomeRecord)>>,
    /// Services sending actions right now (a batch's share of the rate).
    acting: AtomicUsize,
    /// How long an action takes, smoothed (seconds, as f64 bits).
    latency: AtomicU64,
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

impl ServiceError {
    /// A listing that was not sent because the key is in its backoff (logged once when
    /// the backoff starts, not on every cycle) or because the daemon is stopping.
    fn is_backoff(&self) -> bool {
        matches!(self, ServiceError::List { source, .. }
            if matches!(source.kind, ApiErrorKind::AuthBackoff | ApiErrorKind::NotSent))
    }
}

/// One pending connection and what was decided about it.
struct Planned {
    conn: WireConnection,
    decision: Decision,
    decision_id: String,
}

/// What a listing of one service gave, for one round of decisions.
struct Listing {
    pending: Vec<WireConnection>,
    counted: Vec<WireConnection>,
    /// When the listing started: the age of its facts.
    at: Instant,
    /// Pages it took (requests).
    pages: u64,
    /// The policy set its decisions are made under, and that set's generation: one
    /// snapshot, so what decides, what the records name and what the send check compares
    /// are the same set (docs/design.md, "The life of a connection").
    policies: Arc<Policies>,
    generation: u64,
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
            generation: AtomicU64::new(0),
            audit,
            metrics,
            clock,
            opts,
            audit_ok: AtomicBool::new(true),
            recorded: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            owed: Mutex::new(Vec::new()),
            acting: AtomicUsize::new(0),
            latency: AtomicU64::new(0.1f64.to_bits()),
        }
    }

    /// The policy set in force.
    pub fn policies(&self) -> Arc<Policies> {
        self.policies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The policy set in force and its generation, read together.
    fn policies_in_force(&self) -> (Arc<Policies>, u64) {
        let slot = self.policies.read().unwrap_or_else(|p| p.into_inner());
        // `set_policies` bumps the generation while it holds the write lock.
        (slot.clone(), self.generation.load(Ordering::SeqCst))
    }

    /// Swaps in a new policy set (after a successful reload). Actions decided under the
    /// old one and not yet sent are not sent; their connections are decided again under
    /// the new one.
    pub fn set_policies(&self, p: Arc<Policies>) {
        self.metrics.policy_version(p.version());
        let mut slot = self.policies.write().unwrap_or_else(|p| p.into_inner());
        *slot = p;
        self.generation.fetch_add(1, Ordering::SeqCst);
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

    /// Runs one cycle over every target, targets concurrently. Once `stop` begins no new
    /// request or action starts; actions already sent finish and are recorded (`unknown`
    /// when the stop is final first); decided actions not sent are recorded `skipped`.
    pub async fn run_cycle<C: Cloud>(&self, cloud: &C, stop: &Stop) -> CycleReport {
        self.policies().new_cycle();
        let was_ok = self.audit_ok();
        if let Err(e) = self.check_audit() {
            if was_ok {
                error!(error = %e, "the audit log cannot be written; no action is sent until it can");
            } else {
                debug!(error = %e, "the audit log still cannot be written");
            }
        }
        let futs = cloud.targets().iter().map(|tc| {
            let span = info_span!("target", target_name = %tc.target().name);
            self.run_target(tc, stop).instrument(span)
        });
        CycleReport {
            targets: futures_util::future::join_all(futs).await,
        }
    }

    /// Runs one cycle over one target.
    pub async fn run_target<T: TargetApi>(&self, tc: &T, stop: &Stop) -> TargetReport {
        let started = Instant::now();
        let mut report = TargetReport {
            target: tc.target().name.clone(),
            requests: 1,
            ..TargetReport::default()
        };
        let services = match self.services(tc).await {
            Ok(s) => s,
            Err((e, backoff)) => {
                if backoff {
                    debug!(error = %e, "listing endpoint services not sent");
                } else {
                    error!(error = %e, "listing endpoint services failed");
                }
                report.failures.push(e);
                report.duration = started.elapsed();
                self.finish_target(&report);
                return report;
            }
        };
        let results = futures_util::stream::iter(services.into_iter().map(|svc| {
            let span = info_span!("service", service_id = %svc.id);
            self.run_service(tc, svc, stop).instrument(span)
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
                    if e.is_backoff() {
                        debug!(error = %e, "service cycle not run");
                    } else {
                        error!(error = %e, "service cycle failed");
                    }
                    report.failures.push(e.to_string());
                }
            }
        }
        report.duration = started.elapsed();
        self.finish_target(&report);
        report
    }

    fn finish_target(&self, report: &TargetReport) {
        let now = self.clock.now();
        let secs = now.timestamp() as f64 + f64::from(now.timestamp_subsec_millis()) / 1000.0;
        self.metrics.cycle(&report.target, report.ok(), secs);
        self.metrics.pending(&report.target, report.pending as i64);
        self.metrics
            .cycle_duration(&report.target, report.duration.as_secs_f64());
        let oldest = report.oldest_pending.map_or(0.0, |t| {
            (now - t).to_std().unwrap_or_default().as_secs_f64()
        });
        self.metrics.oldest_pending_age(&report.target, oldest);
        info!(
            services_ok = report.services_ok,
            failures = report.failures.len(),
            pending = report.pending,
            decisions = report.decisions,
            applied = report.applied,
            not_pending = report.not_pending,
            failed = report.failed,
            skipped = report.skipped,
            unknown = report.unknown,
            "target cycle finished"
        );
    }

    /// The services to process: the configured list (names looked up), or every available
    /// service with approval enabled. The error says whether it was only the key's
    /// backoff.
    async fn services<T: TargetApi>(&self, tc: &T) -> Result<Vec<ServiceRef>, (String, bool)> {
        let target = tc.target();
        let all = tc.list_services().await.map_err(|e| {
            (
                format!("listing endpoint services of target {}: {e}", target.name),
                e.kind == ApiErrorKind::AuthBackoff,
            )
        })?;
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
                    warn!(missing = %crate::logging::List(&missing), "configured services not found in the project");
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

    /// Rounds of list → plan → record → act → record, until nothing fresh is left to
    /// send: each round sends what can be sent while its facts are fresh.
    async fn run_service<T: TargetApi>(
        &self,
        tc: &T,
        svc: ServiceRef,
        stop: &Stop,
    ) -> Result<TargetReport, ServiceError> {
        let mut rep = TargetReport::default();
        let mut first = true;
        loop {
            if stop.stopping() {
                break;
            }
            let Some(listing) = self.list(tc, &svc).await? else {
                if first {
                    rep.services_ok = 1;
                }
                break;
            };
            if first {
                rep.pending = listing.pending.len();
                first = false;
            }
            rep.requests += listing.pages;
            let planned = self.plan(tc, &svc, &listing);
            let ages = created_ats(&planned);
            let (batch, left) = self.batch(tc, &svc, planned, &listing);
            let recorded = self.record(tc, &svc, batch, &listing).await?;
            rep.decisions += recorded.len();
            let outcomes = self.act_all(tc, &svc, &recorded, &listing, stop).await;
            rep.requests += outcomes.len() as u64;
            // What is still pending after this round: all but what an action decided.
            let decided: HashSet<&str> = recorded
                .iter()
                .enumerate()
                .filter(|(i, _)| {
                    matches!(
                        outcomes.get(i),
                        Some((Outcome::Applied | Outcome::NotPending, _))
                    )
                })
                .filter_map(|(_, p)| p.conn.id.as_deref())
                .collect();
            rep.oldest_pending = ages
                .iter()
                .filter(|(id, _)| !decided.contains(id.as_str()))
                .map(|(_, t)| *t)
                .min();
            let stale = outcomes
                .values()
                .filter(|(o, relist)| *o == Outcome::Skipped && *relist)
                .count();
            for (o, _) in outcomes.values() {
                rep.count(*o);
            }
            if self.opts.collect_rows {
                rep.rows
                    .extend(recorded.into_iter().enumerate().map(|(i, p)| Row {
                        target: tc.target().name.clone(),
                        service: svc.label().to_owned(),
                        endpoint_id: p.conn.id.clone().unwrap_or_default(),
                        domain_id: p.conn.domain_id.clone().unwrap_or_default(),
                        description: p.conn.description.clone().unwrap_or_default(),
                        outcome: outcomes.get(&i).map(|(o, _)| *o),
                        decision: p.decision,
                    }));
            }
            // A reload during the listing: what this round decided under the old set
            // (connections left pending included) is decided again under the new one.
            if left == 0
                && stale == 0
                && self.generation.load(Ordering::SeqCst) == listing.generation
            {
                break;
            }
            let sent = outcomes
                .values()
                .filter(|(o, _)| *o != Outcome::Skipped)
                .count();
            if sent == 0 && self.generation.load(Ordering::SeqCst) == listing.generation {
                // No progress: the listing itself takes longer than max_decision_age
                // (or everything waits). The next cycle tries again.
                warn!(
                    left,
                    stale,
                    listing_ms =
                        u64::try_from(listing.at.elapsed().as_millis()).unwrap_or(u64::MAX),
                    max_decision_age_ms =
                        u64::try_from(self.opts.max_decision_age.as_millis()).unwrap_or(u64::MAX),
                    "no action could be sent on fresh facts; the service's listing takes longer than max_decision_age"
                );
                break;
            }
            debug!(left, stale, "listing the service again for fresh facts");
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
    ) -> Result<Option<Listing>, ServiceError> {
        let list_err = |what: &'static str| {
            let service = svc.id.clone();
            move |source| ServiceError::List {
                what,
                service,
                source,
            }
        };
        let at = Instant::now();
        let (policies, generation) = self.policies_in_force();
        let listed = tc
            .list_connections(&svc.id, status::PENDING)
            .await
            .map_err(list_err("pending"))?;
        let mut pending = plan::pending_of(listed).map_err(|message| ServiceError::Malformed {
            service: svc.id.clone(),
            message,
        })?;
        if pending.is_empty() {
            self.prune(&tc.target().name, &svc.id, &HashSet::new());
            return Ok(None);
        }
        // `creating` before `accepted`: a connection that moves from one to the other
        // between the two listings is then in both (counted once), never in neither.
        let mut counted = tc
            .list_connections(&svc.id, status::CREATING)
            .await
            .map_err(list_err("creating"))?;
        counted.extend(
            tc.list_connections(&svc.id, status::ACCEPTED)
                .await
                .map_err(list_err("accepted"))?,
        );
        // One that was decided between the listings is no longer pending.
        let decided: HashSet<&str> = counted.iter().filter_map(|c| c.id.as_deref()).collect();
        pending.retain(|c| !c.id.as_deref().is_some_and(|id| decided.contains(id)));
        let ids: HashSet<String> = pending.iter().filter_map(|c| c.id.clone()).collect();
        self.prune(&tc.target().name, &svc.id, &ids);
        // A listing's pages took about as long as an action will.
        let pages = 3 + pending.len() / 1000 + counted.len() / 1000;
        self.observe_latency(at.elapsed() / pages as u32);
        Ok(Some(Listing {
            pending,
            counted,
            at,
            pages: pages as u64,
            policies,
            generation,
        }))
    }

    /// Decides every pending connection with one policy set and one `now`, oldest first,
    /// each with the counts of its account so far.
    fn plan<T: TargetApi>(&self, tc: &T, svc: &ServiceRef, listing: &Listing) -> Vec<Planned> {
        let mut pending = listing.pending.clone();
        plan::in_decision_order(&mut pending);
        let mut counts = plan::Counts::new(&pending, &listing.counted);
        let policies = &listing.policies;
        let now = self.clock.now();
        pending
            .into_iter()
            .map(|conn| {
                let decision = match plan::facts(tc.target(), svc, &conn, now, &counts) {
                    Ok(f) => {
                        let d = policies.decide(&f, self.opts.on_no_match);
                        counts.decided(&f.subject.domain_id, d.verdict);
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

    /// What this round records: the first actions that can be sent while the listing is
    /// fresh (not those waiting after a failure), and each connection left pending the
    /// first time under the policy version. Returns them and how many actions are left
    /// for a later round.
    fn batch<T: TargetApi>(
        &self,
        tc: &T,
        svc: &ServiceRef,
        planned: Vec<Planned>,
        listing: &Listing,
    ) -> (Vec<Planned>, usize) {
        let target = &tc.target().name;
        let version = listing.policies.version();
        let remaining = self
            .opts
            .max_decision_age
            .saturating_sub(listing.at.elapsed());
        let mut budget = self.budget(remaining);
        let now = Instant::now();
        let mut out = Vec::new();
        let mut left = 0;
        for p in planned {
            let endpoint = p.conn.id.clone().unwrap_or_default();
            if plan::sends(&p.decision, self.opts.dry_run) {
                let waiting = lock(&self.failed)
                    .get(&(target.clone(), svc.id.clone(), endpoint))
                    .is_some_and(|(_, until)| *until > now);
                if waiting {
                    continue;
                }
                if budget == 0 {
                    left += 1;
                    continue;
                }
                budget -= 1;
                out.push(p);
            } else if self.first_record(target, &svc.id, &endpoint, version) {
                out.push(p);
            }
        }
        (out, left)
    }

    /// How many actions one service can send within `remaining`: its share of the rate
    /// limit and of the in-flight requests at the observed latency, with some margin.
    fn budget(&self, remaining: Duration) -> usize {
        if remaining.is_zero() {
            return 0;
        }
        let secs = remaining.as_secs_f64();
        let sharing = (self.acting.load(Ordering::Relaxed) + 1) as f64;
        let latency = f64::from_bits(self.latency.load(Ordering::Relaxed)).max(0.001);
        let by_flight = self.opts.max_in_flight.max(1) as f64 * secs / latency;
        let by_rate = match self.opts.max_requests_per_second {
            0 => f64::INFINITY,
            r => f64::from(r) * secs,
        };
        let n = (by_flight.min(by_rate) * 0.8 / sharing).floor();
        if n >= usize::MAX as f64 {
            usize::MAX
        } else {
            (n as usize).max(1)
        }
    }

    fn observe_latency(&self, d: Duration) {
        let old = f64::from_bits(self.latency.load(Ordering::Relaxed));
        let new = 0.7 * old + 0.3 * d.as_secs_f64();
        self.latency.store(new.to_bits(), Ordering::Relaxed);
    }

    /// Writes the owed outcomes and then this round's decision records, and makes them
    /// durable before any action is sent (write-ahead). Returns the recorded decisions.
    /// If a record cannot be written, the ones written before it get `skipped` outcomes
    /// (now, or before anything else once the log works again), and only the ones not
    /// written are forgotten.
    async fn record<T: TargetApi>(
        &self,
        tc: &T,
        svc: &ServiceRef,
        batch: Vec<Planned>,
        listing: &Listing,
    ) -> Result<Vec<Planned>, ServiceError> {
        let target = tc.target();
        let version = listing.policies.version();
        let audit_err = |message: String| ServiceError::Audit {
            service: svc.id.clone(),
            message,
        };
        let mut recorded = Vec::with_capacity(batch.len());
        let written = {
            let mut w = lock(&self.audit);
            // The records go to the file at the configured path and nowhere else: a
            // deleted or replaced file is reopened here, and one that cannot be opened
            // stops the batch before anything is sent.
            let mut res = w
                .ensure_open()
                .map_err(|e| crate::audit::error_chain(&e))
                .and_then(|()| self.pay_owed(&mut w));
            let mut rest = batch.into_iter();
            if res.is_ok() {
                for p in rest.by_ref() {
                    let rec = plan::decision_record(
                        p.decision_id.clone(),
                        Subject::listed(target, svc, &p.conn),
                        &p.decision,
                        version,
                        self.opts.dry_run,
                    );
                    if let Err(e) = w.append_decision(&rec) {
                        res = Err(crate::audit::error_chain(&e));
                        self.unrecord(&target.name, &svc.id, &p);
                        break;
                    }
                    // Counted as soon as the line is in the log, so the counter matches
                    // the log even when the following fsync fails.
                    self.metrics.decision(
                        &target.name,
                        p.decision.verdict.as_str(),
                        p.decision.action.as_str(),
                    );
                    recorded.push(p);
                }
            }
            for p in rest {
                self.unrecord(&target.name, &svc.id, &p);
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
            // What is in the log has a decision and must get its one outcome.
            for p in recorded
                .iter()
                .filter(|p| plan::sends(&p.decision, self.opts.dry_run))
            {
                self.owe(
                    &target.name,
                    skipped(p, format!("not sent: the audit log failed ({message})")),
                );
            }
            let _ = self.pay_owed(&mut lock(&self.audit));
            return Err(audit_err(message));
        }
        self.audit_ok.store(true, Ordering::Relaxed);
        for p in &recorded {
            let d = &p.decision;
            info!(
                endpoint_id = %p.conn.id.as_deref().unwrap_or_default(),
                domain_id = %p.conn.domain_id.as_deref().unwrap_or_default(),
                verdict = %d.verdict,
                action = %d.action,
                policies = %crate::logging::List(&d.policies),
                errors = %crate::logging::List(&d.errors),
                dry_run = self.opts.dry_run,
                "decision"
            );
        }
        Ok(recorded)
    }

    /// A decision whose record was not written: a connection left pending is recorded
    /// again next time.
    fn unrecord(&self, target: &str, service: &str, p: &Planned) {
        if let Some(per) = lock(&self.recorded).get_mut(&(target.to_owned(), service.to_owned())) {
            per.remove(p.conn.id.as_deref().unwrap_or_default());
        }
    }

    fn owe(&self, target: &str, rec: OutcomeRecord) {
        lock(&self.owed).push((target.to_owned(), rec));
    }

    /// Writes the outcome records owed from earlier audit failures, oldest first.
    fn pay_owed(&self, w: &mut AuditWriter) -> Result<(), String> {
        let mut owed = lock(&self.owed);
        let mut paid = 0;
        let mut result = Ok(());
        for (target, rec) in owed.iter() {
            if let Err(e) = w.append_outcome(rec) {
                result = Err(crate::audit::error_chain(&e));
                break;
            }
            self.metrics
                .action(target, rec.action.as_str(), rec.outcome.as_str());
            paid += 1;
        }
        owed.drain(..paid);
        result
    }

    /// Sends the recorded actions, at most `max_in_flight` at once, each only while its
    /// decision is fresh, and syncs their outcome records. Returns each outcome by index
    /// into `recorded`, and whether it was skipped for facts or policies that changed
    /// (its connection is listed and decided again).
    async fn act_all<T: TargetApi>(
        &self,
        tc: &T,
        svc: &ServiceRef,
        recorded: &[Planned],
        listing: &Listing,
        stop: &Stop,
    ) -> HashMap<usize, (Outcome, bool)> {
        let to_send: Vec<(usize, &Planned)> = recorded
            .iter()
            .enumerate()
            .filter(|(_, p)| plan::sends(&p.decision, self.opts.dry_run))
            .collect();
        if to_send.is_empty() {
            return HashMap::new();
        }
        self.acting.fetch_add(1, Ordering::Relaxed);
        let outcomes: HashMap<usize, (Outcome, bool)> = futures_util::stream::iter(
            to_send
                .into_iter()
                .map(|(i, p)| async move { (i, self.act(tc, svc, p, listing, stop).await) }),
        )
        .buffer_unordered(self.opts.max_in_flight.max(1))
        .collect()
        .await;
        self.acting.fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = self.sync_audit().await {
            self.audit_failed();
            error!(error = %e, "audit sync of outcome records failed");
        }
        outcomes
    }

    /// Why an action decided on `listing` must not be sent now, if it must not.
    fn stale(&self, listing: &Listing, stop: &Stop) -> Option<(String, bool)> {
        if stop.stopping() {
            return Some(("shutting down".into(), false));
        }
        if self.generation.load(Ordering::SeqCst) != listing.generation {
            return Some(("the policies were reloaded since the decision".into(), true));
        }
        let age = listing.at.elapsed();
        if age > self.opts.max_decision_age {
            return Some((
                format!(
                    "decided on facts listed {} ms ago, more than max_decision_age ({} ms)",
                    age.as_millis(),
                    self.opts.max_decision_age.as_millis()
                ),
                true,
            ));
        }
        None
    }

    /// Sends one action while its decision is fresh and records its one outcome. An
    /// answer that does not show the status the action produces, and any error, is read
    /// back: the connection's current status tells whether the action took effect or
    /// someone else decided. Returns the outcome and whether it was skipped for changed
    /// facts or policies.
    async fn act<T: TargetApi>(
        &self,
        tc: &T,
        svc: &ServiceRef,
        p: &Planned,
        listing: &Listing,
        stop: &Stop,
    ) -> (Outcome, bool) {
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
        let relist = std::sync::atomic::AtomicBool::new(false);
        let guard = || {
            let (why, again) = self.stale(listing, stop)?;
            relist.store(again, Ordering::Relaxed);
            Some(why)
        };
        let started = Instant::now();
        let sent = if let Some(why) = guard() {
            // Not started at all (e.g. it waited for a place among the actions in flight).
            Some(Err(ApiError::new(
                "action",
                endpoint_id,
                ApiErrorKind::NotSent,
            )
            .with_message(why)))
        } else {
            tokio::select! {
                biased;
                r = tc.act(&svc.id, endpoint_id, action, &guard) => Some(r),
                () = stop.given_up() => None,
            }
        };
        match sent {
            None => {
                rec.outcome = Outcome::Unknown;
                rec.attempts = 1;
                rec.error_message = Some("no answer before the shutdown deadline".into());
            }
            Some(Ok(resp)) => {
                self.observe_latency(started.elapsed() / resp.attempts.max(1));
                rec.http_status = Some(resp.http_status);
                rec.attempts = resp.attempts;
                match resp.connection.and_then(|c| c.status) {
                    Some(st) if plan::produces(action, &st) => {
                        rec.outcome = Outcome::Applied;
                        rec.status_after = Some(st);
                    }
                    shown => {
                        rec.error_message = Some(match &shown {
                            Some(st) => format!("the answer shows status {st}; read back"),
                            None => "the answer does not show the endpoint; read back".into(),
                        });
                        self.read_back(tc, svc, endpoint_id, action, &mut rec, stop)
                            .await;
                    }
                }
            }
            Some(Err(e)) => {
                rec.http_status = e.http_status;
                rec.error_code = e.error_code.clone();
                rec.error_message = Some(e.to_string());
                rec.attempts = e.attempts;
                let not_sent = e.attempts == 0
                    && matches!(e.kind, ApiErrorKind::NotSent | ApiErrorKind::AuthBackoff);
                if not_sent {
                    rec.outcome = Outcome::Skipped;
                    rec.error_message = Some(format!(
                        "not sent: {}",
                        e.error_message.as_deref().unwrap_or(e.kind.as_str())
                    ));
                } else if e.kind == ApiErrorKind::Aborted {
                    rec.outcome = Outcome::Unknown;
                } else if !matches!(
                    e.kind,
                    ApiErrorKind::Unauthorized | ApiErrorKind::AuthBackoff
                ) {
                    self.read_back(tc, svc, endpoint_id, action, &mut rec, stop)
                        .await;
                }
                if rec.outcome == Outcome::Failed {
                    warn!(
                        endpoint_id,
                        action = %action,
                        http_status = e.http_status,
                        error_code = e.error_code.as_deref(),
                        request_id = e.request_id.as_deref(),
                        error = %e,
                        "action failed"
                    );
                }
            }
        }
        let outcome = rec.outcome;
        self.after_outcome(&tc.target().name, &svc.id, endpoint_id, outcome);
        info!(endpoint_id, action = %action, outcome = %outcome, http_status = rec.http_status, "outcome");
        let written = {
            let mut w = lock(&self.audit);
            let r = w.append_outcome(&rec);
            if r.is_ok() {
                self.metrics
                    .action(&tc.target().name, action.as_str(), outcome.as_str());
                self.metrics.audit_records(w.records());
            }
            r
        };
        if let Err(e) = written {
            self.audit_failed();
            error!(endpoint_id, error = %crate::audit::error_chain(&e), "writing the outcome record failed; it is written when the log works again");
            self.owe(&tc.target().name, rec);
        }
        (
            outcome,
            outcome == Outcome::Skipped && relist.load(Ordering::Relaxed),
        )
    }

    /// Reads a connection back after an unclear answer and classifies the outcome; while
    /// stopping no new request starts, so the outcome is `unknown`.
    async fn read_back<T: TargetApi>(
        &self,
        tc: &T,
        svc: &ServiceRef,
        endpoint_id: &str,
        action: Action,
        rec: &mut OutcomeRecord,
        stop: &Stop,
    ) {
        if stop.stopping() {
            rec.outcome = Outcome::Unknown;
            rec.error_message = Some(format!(
                "{}; not read back: shutting down",
                rec.error_message.as_deref().unwrap_or("sent")
            ));
            return;
        }
        let read = tokio::select! {
            r = tc.get_connection(&svc.id, endpoint_id) => r,
            () = stop.given_up() => {
                rec.outcome = Outcome::Unknown;
                return;
            }
        };
        match read {
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
                rec.outcome = plan::classify_outcome(action, Observed::Unknown);
                warn!(endpoint_id, error = %e2, "reading the connection back failed");
            }
        }
    }

    /// A failed action waits before it is sent again (one retry interval, doubling per
    /// consecutive failure up to an hour); any other outcome ends the wait.
    fn after_outcome(&self, target: &str, service: &str, endpoint: &str, outcome: Outcome) {
        let key = (target.to_owned(), service.to_owned(), endpoint.to_owned());
        let mut failed = lock(&self.failed);
        match outcome {
            Outcome::Failed => {
                let n = failed.get(&key).map_or(0, |(n, _)| *n) + 1;
                let wait = self
                    .opts
                    .retry_failed_after
                    .saturating_mul(1u32.checked_shl(n - 1).unwrap_or(u32::MAX))
                    .min(MAX_FAILURE_BACKOFF);
                failed.insert(key, (n, Instant::now() + wait));
            }
            Outcome::Applied | Outcome::NotPending => {
                failed.remove(&key);
            }
            Outcome::Skipped | Outcome::Unknown => {}
        }
    }

    fn audit_failed(&self) {
        self.audit_ok.store(false, Ordering::Relaxed);
        self.metrics.audit_write_failure();
    }

    /// Lines reached the log and the disk: progress, and the running count.
    fn wrote(&self) {
        self.metrics.progress().beat();
        self.metrics.audit_records(lock(&self.audit).records());
    }

    /// Checks that the audit path still names the open file (reopening it when it was
    /// deleted or replaced, or could not be opened before). Once per cycle, so a broken
    /// log is noticed and retried even when nothing is pending. A failure is counted and
    /// makes the daemon unready; no action is sent until it works.
    pub fn check_audit(&self) -> Result<(), String> {
        let mut w = lock(&self.audit);
        // Outcomes owed since a failure are written as soon as the log works again, also
        // when nothing is pending (they are made durable with the next sync).
        let opened = w
            .ensure_open()
            .map_err(|e| crate::audit::error_chain(&e))
            .and_then(|()| self.pay_owed(&mut w));
        match opened {
            Ok(()) => {
                self.metrics.audit_records(w.records());
                // A log that works again makes the daemon ready again without waiting
                // for a record to write (an idle daemon may have none).
                if w.check_writable().is_ok() {
                    self.audit_ok.store(true, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(e) => {
                drop(w);
                self.audit_failed();
                Err(e)
            }
        }
    }

    /// Appends a signed checkpoint record and makes it durable.
    pub async fn checkpoint(&self, key: &crate::audit::SigningKey) -> Result<(), String> {
        let written = {
            let mut w = lock(&self.audit);
            // The owed outcomes first, so that the checkpoint (also the last one, at
            // shutdown) covers them.
            w.ensure_open()
                .map_err(|e| crate::audit::error_chain(&e))
                .and_then(|()| self.pay_owed(&mut w))
                .and_then(|()| {
                    w.append_checkpoint(key)
                        .map_err(|e| crate::audit::error_chain(&e))
                })
        };
        if let Err(e) = written.and(self.sync_audit().await) {
            self.audit_failed();
            return Err(e);
        }
        Ok(())
    }

    /// Makes every audit line written so far durable, without holding the writer while
    /// the disk works.
    async fn sync_audit(&self) -> Result<(), String> {
        let pending = lock(&self.audit)
            .begin_sync()
            .map_err(|e| crate::audit::error_chain(&e))?;
        let Some(pending) = pending else {
            self.wrote();
            return Ok(());
        };
        let epoch = pending.epoch();
        let result = match tokio::task::spawn_blocking(move || pending.wait()).await {
            Ok(r) => r,
            Err(e) => return Err(format!("audit fsync task failed: {e}")),
        };
        let message = result.as_ref().err().map(|e| crate::audit::error_chain(e));
        lock(&self.audit).sync_done(epoch, &result);
        if message.is_none() {
            self.wrote();
        }
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
    fn prune(&self, target: &str, service: &str, pending: &HashSet<String>) {
        if let Some(per) = lock(&self.recorded).get_mut(&(target.to_owned(), service.to_owned())) {
            per.retain(|k, _| pending.contains(k));
        }
        lock(&self.failed)
            .retain(|(t, s, e), _| t != target || s != service || pending.contains(e));
    }
}

/// Each planned connection's id and creation time (those that parse).
fn created_ats(planned: &[Planned]) -> Vec<(String, chrono::DateTime<chrono::Utc>)> {
    planned
        .iter()
        .filter_map(|p| {
            let t = chrono::DateTime::parse_from_rfc3339(p.conn.created_at.as_deref()?).ok()?;
            Some((p.conn.id.clone()?, t.with_timezone(&chrono::Utc)))
        })
        .collect()
}

/// The outcome of a recorded decision that was never sent.
fn skipped(p: &Planned, why: String) -> OutcomeRecord {
    OutcomeRecord {
        decision_id: p.decision_id.clone(),
        endpoint_id: p.conn.id.clone().unwrap_or_default(),
        action: p.decision.action,
        outcome: Outcome::Skipped,
        status_after: None,
        http_status: None,
        error_code: None,
        error_message: Some(why),
        attempts: 0,
    }
}

#[cfg(test)]
mod tests;
