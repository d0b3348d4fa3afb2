//! The long-running daemon (docs/design.md, "Architecture"): the poll loop with interval
//! and jitter, reload by parse-then-swap, audit reopening, graceful shutdown, systemd
//! notifications and the watchdog, and the HTTP surface.
//!
//! [`run`] builds the real parts from the config; [`Daemon::poll_loop`] is the loop over
//! any [`Cloud`], driven by the shutdown token and the [`Control`] messages its caller
//! hands in ([`signals::forward`] maps signals to them), so tests drive it under paused
//! time.

pub mod notify;
pub mod signals;
pub mod watch;

use crate::audit::AuditWriter;
use crate::cloud::Cloud;
use crate::cloud::auth::Credentials;
use crate::cloud::client::CloudClient;
use crate::config::{Config, HttpConfig};
use crate::engine::{CycleReport, Engine, EngineOptions};
use crate::exit::{CmdResult, EXIT_FAILURE, Failure};
use crate::health::{Health, heartbeat_period};
use crate::metrics::Metrics;
use crate::policy::Policies;
use crate::stop::Stop;
use anyhow::{Context, anyhow};
use notify::{Notifier, State};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

/// How `run` was asked to behave.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// One cycle, then exit.
    pub once: bool,
    /// Never send an action.
    pub dry_run: bool,
}

/// What the daemon is told from outside (signals, tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Reload the policies and reopen the audit log (SIGHUP).
    Reload,
    /// The policy directory changed: reload the policies (the `[policy] watch`).
    PoliciesChanged,
    /// Stop (SIGTERM, SIGINT); a second one ends the wait for in-flight actions.
    Shutdown,
}

/// How long in-flight work may take after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The wait before the next cycle: the interval plus a random share of the jitter.
pub fn next_wait(interval: Duration, jitter: Duration, rng: &mut impl rand::Rng) -> Duration {
    if jitter.is_zero() {
        return interval;
    }
    interval + Duration::from_millis(rng.random_range(0..=jitter.as_millis() as u64))
}

/// Runs the daemon (or one cycle with `once`) until `shutdown` is cancelled or a
/// [`Control::Shutdown`] arrives. Returns the exit code.
pub async fn run(
    cfg: Config,
    opts: RunOptions,
    shutdown: CancellationToken,
    control: UnboundedReceiver<Control>,
) -> CmdResult {
    crate::cloud::init_tls();
    let policies = Policies::load(&cfg.policy.dir).map_err(|e| {
        Failure::config(anyhow!(e).context(format!(
            "loading policies from {}",
            cfg.policy.dir.display()
        )))
    })?;
    let creds = Credentials::load(&cfg.auth).map_err(Failure::config)?;
    if creds.is_temporary()
        && let Some((i, t)) = cfg.targets.iter().enumerate().find(|(_, t)| {
            t.agency
                .as_ref()
                .is_some_and(|a| a.duration > crate::config::Agency::MAX_DURATION_TEMPORARY)
        })
    {
        return Err(Failure::config(anyhow!(
            "invalid config file {}: target[{i}].agency_duration: at most 1h: target {} is reached with temporary keys ({} is set)",
            cfg.path.display(),
            t.name,
            crate::config::SECURITY_TOKEN_ENV
        )));
    }
    let clock = crate::clock::system();
    let writer = AuditWriter::open(cfg.audit.path.clone(), cfg.audit.fsync, clock.clone())
        .map_err(|e| Failure::runtime(anyhow!(e).context("opening the audit log")))?;
    let signing_key =
        match &cfg.audit.signing_key_file {
            Some(src) => Some(crate::audit::SigningKey::load(src).map_err(|e| {
                Failure::config(anyhow!(e).context("loading audit.signing_key_file"))
            })?),
            None => None,
        };
    let metrics = Metrics::new();
    let names: Vec<&str> = cfg.targets.iter().map(|t| t.name.as_str()).collect();
    metrics.preset(&names);
    metrics.audit_records(writer.records());
    let stop = Stop::on(shutdown);
    let cloud = Arc::new(
        CloudClient::with_stop(&cfg, creds, metrics.clone(), stop.clone())
            .map_err(|e| Failure::config(anyhow!(e).context("setting up the cloud client")))?,
    );
    let engine = Arc::new(Engine::new(
        Arc::new(policies),
        Arc::new(Mutex::new(writer)),
        metrics,
        clock,
        EngineOptions::from_config(&cfg, opts.dry_run),
    ));
    info!(
        targets = cfg.targets.len(),
        policy_version = %engine.policies().version(),
        dry_run = opts.dry_run,
        "vpcep-approver starting"
    );
    let health = Arc::new(Health::new(
        engine.clone(),
        cloud.clone(),
        cfg.poll.interval,
    ));
    let daemon = Daemon {
        engine: engine.clone(),
        cloud,
        health: health.clone(),
        policy_dir: cfg.policy.dir.clone(),
        interval: cfg.poll.interval,
        jitter: cfg.poll.jitter,
        notifier: Notifier::Systemd,
        stopping_sent: Default::default(),
        checkpoints: signing_key.map(|key| (key, cfg.audit.checkpoint_interval)),
        warned_long_cycle: Default::default(),
        rate: cfg.poll.max_requests_per_second,
    };
    let mut control = Controls::new(control);
    if cfg.policy.watch && !opts.once {
        match watch::PolicyWatch::new(&cfg.policy.dir, watch::QUIET) {
            Ok(w) => control.watch(w),
            Err(e) => warn!(error = %e, "the policy directory is not watched; reload with SIGHUP"),
        }
    }
    let code = if opts.once {
        let mut checkpoint_at = daemon.next_checkpoint();
        let code = match daemon
            .cycle(1, &stop, &mut control, None, &mut checkpoint_at)
            .await
        {
            Some(report) => once_exit_code(&report, stop.stopping()),
            None => EXIT_FAILURE,
        };
        daemon.checkpoint("run --once ends").await;
        code
    } else {
        if let Some(h) = cfg.http {
            spawn_http(h, health, stop.token().clone())
                .await
                .map_err(Failure::runtime)?;
        }
        let unknown = daemon.poll_loop(&stop, &mut control).await;
        daemon.checkpoint("shutdown").await;
        if unknown > 0 {
            warn!(
                unknown,
                "actions were left without an answer at the shutdown deadline"
            );
            EXIT_FAILURE
        } else {
            0
        }
    };
    if let Err(e) = engine
        .audit()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .sync()
    {
        error!(error = %e, "final audit sync failed");
    }
    info!("vpcep-approver stopped");
    Ok(code)
}

/// `run --once`: 0 when every target listed everything and no action failed or was left
/// without an answer; else each failure on stderr and 1. Stopped by a signal, only actions
/// that failed or got no answer count (what the stop kept from starting does not).
fn once_exit_code(report: &CycleReport, stopped: bool) -> u8 {
    let failed: usize = report.targets.iter().map(|t| t.failed).sum();
    if report.fully_ok() || (stopped && failed == 0 && report.unknown() == 0) {
        return 0;
    }
    for t in &report.targets {
        for f in &t.failures {
            eprintln!("vpcep-approver: target {}: {f}", t.target);
        }
        if t.failed > 0 {
            eprintln!(
                "vpcep-approver: target {}: {} action(s) failed",
                t.target, t.failed
            );
        }
        if t.unknown > 0 {
            eprintln!(
                "vpcep-approver: target {}: {} action(s) got no answer before the shutdown deadline",
                t.target, t.unknown
            );
        }
    }
    EXIT_FAILURE
}

/// What the daemon is told: the control channel (once its sender is gone it never
/// yields again) and, with `[policy] watch`, the policy directory's changes.
pub struct Controls {
    rx: UnboundedReceiver<Control>,
    open: bool,
    watch: Option<watch::PolicyWatch>,
}

impl Controls {
    /// Wraps the receiving end.
    pub fn new(rx: UnboundedReceiver<Control>) -> Controls {
        Controls {
            rx,
            open: true,
            watch: None,
        }
    }

    /// Also yields [`Control::PoliciesChanged`] when `w` sees a change.
    pub fn watch(&mut self, w: watch::PolicyWatch) {
        self.watch = Some(w);
    }

    async fn recv(&mut self) -> Control {
        let changed = async {
            match self.watch.as_mut() {
                Some(w) => w.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            c = async {
                if self.open
                    && let Some(c) = self.rx.recv().await
                {
                    return c;
                }
                std::future::pending::<Control>().await
            } => c,
            () = changed => Control::PoliciesChanged,
        }
    }
}

/// Binds the HTTP listener and serves `/healthz`, `/readyz` and `/metrics` until
/// `shutdown`.
async fn spawn_http(
    h: HttpConfig,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(h.listen)
        .await
        .with_context(|| format!("http.listen {}", h.listen))?;
    info!(listen = %h.listen, max_connections = h.max_connections, "http listener started");
    let metrics = health.metrics().clone();
    tokio::spawn(crate::http::serve(
        listener,
        crate::http::router(health),
        crate::http::Limits::new(h.max_connections),
        metrics,
        shutdown,
    ));
    Ok(())
}

/// The parts the poll loop drives.
pub struct Daemon<C> {
    /// The decisions.
    pub engine: Arc<Engine>,
    /// The targets.
    pub cloud: Arc<C>,
    /// What the HTTP surface reports.
    pub health: Arc<Health>,
    /// Reloaded on [`Control::Reload`].
    pub policy_dir: PathBuf,
    /// Time between cycles.
    pub interval: Duration,
    /// Random 0..jitter added to each wait.
    pub jitter: Duration,
    /// Where `READY=1` and friends go.
    pub notifier: Notifier,
    /// `STOPPING=1` was sent.
    pub stopping_sent: std::sync::atomic::AtomicBool,
    /// The key that signs checkpoint records, and how often they are written.
    pub checkpoints: Option<(crate::audit::SigningKey, Duration)>,
    /// A cycle longer than the interval was logged (once).
    pub warned_long_cycle: std::sync::atomic::AtomicBool,
    /// The client's rate limit, for that warning.
    pub rate: u32,
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// After the final stop, how long the cycle may take to write the last outcomes.
const FINAL_WAIT: Duration = Duration::from_secs(2);

impl<C: Cloud> Daemon<C> {
    /// Runs one cycle while obeying control messages: a reload is in force at once (the
    /// engine decides again what it had decided under the old policies); the first stop
    /// lets actions on the wire finish for [`SHUTDOWN_GRACE`], a second one (or the end of
    /// the grace) gives them up. `None` when the cycle did not end after that.
    pub async fn cycle(
        &self,
        n: u64,
        stop: &Stop,
        control: &mut Controls,
        mut tick: Option<(&mut tokio::time::Interval, Option<Duration>)>,
        checkpoint_at: &mut Option<Instant>,
    ) -> Option<CycleReport> {
        let cycle = self
            .engine
            .run_cycle(&*self.cloud, stop)
            .instrument(info_span!("cycle", cycle = n));
        tokio::pin!(cycle);
        let mut grace: Option<Instant> = None;
        let mut last: Option<Instant> = None;
        loop {
            tokio::select! {
                r = &mut cycle => return Some(r),
                _ = async {
                    match tick.as_mut() {
                        Some((t, _)) => { t.tick().await; }
                        None => std::future::pending().await,
                    }
                } => {
                    let watchdog = tick.as_ref().and_then(|(_, w)| *w);
                    self.beat(watchdog);
                }
                // A long cycle (a large backlog under a rate limit) gets its checkpoints
                // on time too.
                () = sleep_until_opt(*checkpoint_at), if !stop.stopping() => {
                    self.checkpoint("interval").await;
                    *checkpoint_at = self.next_checkpoint();
                }
                () = stop.begun(), if grace.is_none() => {
                    info!("shutdown requested; no new actions, finishing those on the wire");
                    self.announce_stopping();
                    grace = Some(Instant::now() + SHUTDOWN_GRACE);
                }
                msg = control.recv() => match msg {
                    Control::Shutdown if stop.stopping() => {
                        warn!("second stop signal: not waiting for actions on the wire");
                        stop.abort();
                        last.get_or_insert(Instant::now() + FINAL_WAIT);
                    }
                    Control::Shutdown => stop.begin(),
                    Control::Reload => {
                        self.reload(true);
                        self.checkpoint("reload").await;
                    }
                    Control::PoliciesChanged => {
                        self.reload(false);
                        self.checkpoint("reload").await;
                    }
                },
                () = sleep_until_opt(grace), if last.is_none() => {
                    warn!("actions on the wire did not finish within {}s; giving them up", SHUTDOWN_GRACE.as_secs());
                    stop.abort();
                    last = Some(Instant::now() + FINAL_WAIT);
                }
                () = sleep_until_opt(last) => {
                    error!("the cycle did not end after the final stop; outcomes may be missing");
                    return None;
                }
            }
        }
    }

    /// When the next interval checkpoint is due, counted from now (`None` without a
    /// signing key).
    fn next_checkpoint(&self) -> Option<Instant> {
        self.checkpoints
            .as_ref()
            .map(|(_, every)| Instant::now() + *every)
    }

    /// Appends a signed checkpoint record, when there is a signing key.
    pub async fn checkpoint(&self, why: &str) {
        let Some((key, _)) = &self.checkpoints else {
            return;
        };
        match self.engine.checkpoint(key).await {
            Ok(()) => debug!(reason = why, "checkpoint written"),
            Err(e) => error!(reason = why, error = %e, "writing a checkpoint failed"),
        }
    }

    /// A cycle longer than the interval is logged once, with the requests it took and
    /// the rate limit, so the cause is plain (too many services for the rate).
    fn warn_long_cycle(&self, r: &CycleReport) {
        use std::sync::atomic::Ordering;
        let longest = r.duration();
        if longest <= self.interval || self.warned_long_cycle.swap(true, Ordering::Relaxed) {
            return;
        }
        let requests: u64 = r.targets.iter().map(|t| t.requests).sum();
        warn!(
            cycle_secs = longest.as_secs(),
            interval_secs = self.interval.as_secs(),
            requests,
            max_requests_per_second = self.rate,
            "a cycle took longer than the interval: it needs about {requests} requests at {} requests/s; the next cycle starts when one ends",
            if self.rate == 0 {
                "unlimited".to_owned()
            } else {
                self.rate.to_string()
            }
        );
    }

    fn announce_stopping(&self) {
        use std::sync::atomic::Ordering;
        if !self.stopping_sent.swap(true, Ordering::SeqCst) {
            self.notifier.send(State::Stopping);
        }
    }

    /// A tick of the loop: the watchdog is pinged only while the daemon makes progress,
    /// so a hung request or fsync gets it restarted.
    fn beat(&self, watchdog: Option<Duration>) {
        if watchdog.is_some() && self.health.alive().is_ok() {
            self.notifier.send(State::Watchdog);
        }
    }

    /// Cycles until the stop begins (its token, or [`Control::Shutdown`]); see
    /// [`Daemon::cycle`] for what happens then. Heartbeats (and the systemd watchdog) go
    /// out while cycles run and while waiting. Returns how many actions were left without
    /// an answer.
    pub async fn poll_loop(&self, stop: &Stop, control: &mut Controls) -> usize {
        let watchdog = self.notifier.watchdog();
        let mut tick = tokio::time::interval(heartbeat_period(self.interval, watchdog));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unknown = 0;
        let mut cycle_no: u64 = 0;
        let mut next_checkpoint = self.next_checkpoint();
        loop {
            cycle_no += 1;
            if cycle_no == 1 {
                self.notifier.send(State::Ready);
            }
            match self
                .cycle(
                    cycle_no,
                    stop,
                    control,
                    Some((&mut tick, watchdog)),
                    &mut next_checkpoint,
                )
                .await
            {
                Some(r) => {
                    unknown += r.unknown();
                    self.health.record(&r);
                    self.warn_long_cycle(&r);
                }
                None => unknown += 1,
            }
            if let Some(at) = next_checkpoint
                && Instant::now() >= at
                && !stop.stopping()
            {
                self.checkpoint("interval").await;
                next_checkpoint = self.next_checkpoint();
            }
            if stop.stopping() {
                self.announce_stopping();
                break;
            }
            crate::mem::release_free_memory();
            let wait = tokio::time::sleep(next_wait(self.interval, self.jitter, &mut rand::rng()));
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    () = &mut wait => break,
                    // Also while idle: a checkpoint is due every interval.
                    () = sleep_until_opt(next_checkpoint) => {
                        self.checkpoint("interval").await;
                        next_checkpoint = self.next_checkpoint();
                    }
                    msg = control.recv() => match msg {
                        Control::Reload | Control::PoliciesChanged => {
                            self.reload(msg == Control::Reload);
                            self.checkpoint("reload").await;
                            // Re-decide pending connections under the new version now.
                            break;
                        }
                        Control::Shutdown => {
                            stop.begin();
                            break;
                        }
                    },
                    () = stop.begun() => break,
                    _ = tick.tick() => self.beat(watchdog),
                }
            }
            if stop.stopping() {
                self.announce_stopping();
                break;
            }
        }
        unknown
    }

    /// Reloads the policy directory, keeping the old set on any error, and with
    /// `reopen_audit` (SIGHUP, not the directory watch) reopens the audit file. The same
    /// files again change nothing: decisions in flight stay fresh.
    pub fn reload(&self, reopen_audit: bool) {
        self.notifier.send(State::Reloading);
        let engine = &self.engine;
        match Policies::load(&self.policy_dir) {
            Ok(p) => {
                let old = engine.policies().version().to_owned();
                if p.version() == old {
                    info!(version = %old, "policies unchanged");
                } else {
                    info!(old_version = %old, new_version = %p.version(), "policies reloaded");
                    engine.set_policies(Arc::new(p));
                }
                engine.metrics().policy_reload(true);
            }
            Err(e) => {
                for problem in e.to_string().lines() {
                    error!(error = %problem, "policy reload failed; keeping the previous policies");
                }
                engine.metrics().policy_reload(false);
            }
        }
        if reopen_audit
            && let Err(e) = engine
                .audit()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .reopen()
        {
            error!(error = %e, "reopening the audit log failed");
            engine.metrics().audit_write_failure();
        }
        self.notifier.send(State::Ready);
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod wait_tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn wait_is_interval_plus_bounded_jitter() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let i = Duration::from_secs(30);
        let j = Duration::from_secs(3);
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..2000 {
            let w = next_wait(i, j, &mut rng);
            assert!(w >= i && w <= i + j, "{w:?}");
            seen_low |= w < i + Duration::from_millis(300);
            seen_high |= w > i + Duration::from_millis(2700);
        }
        assert!(
            seen_low && seen_high,
            "jitter should spread over the whole range"
        );
        assert_eq!(next_wait(i, Duration::ZERO, &mut rng), i);
    }
}
