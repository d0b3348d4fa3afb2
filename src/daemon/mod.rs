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
use anyhow::{Context, anyhow};
use notify::{Notifier, State};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

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
    let clock = crate::clock::system();
    let writer = AuditWriter::open(cfg.audit.path.clone(), cfg.audit.fsync, clock.clone())
        .map_err(|e| Failure::runtime(anyhow!(e).context("opening the audit log")))?;
    let metrics = Metrics::new();
    let cloud = Arc::new(
        CloudClient::new(&cfg, creds, metrics.clone())
            .map_err(|e| Failure::config(anyhow!(e).context("setting up the cloud client")))?,
    );
    let engine = Arc::new(Engine::new(
        Arc::new(policies),
        Arc::new(Mutex::new(writer)),
        metrics,
        clock,
        EngineOptions {
            dry_run: opts.dry_run,
            on_no_match: cfg.policy.on_no_match,
            collect_rows: false,
            max_in_flight: cfg.poll.max_in_flight,
        },
    ));
    info!(
        targets = cfg.targets.len(),
        policy_version = %engine.policies().version(),
        dry_run = opts.dry_run,
        "vpcep-approver starting"
    );
    if opts.once {
        let report = engine.run_cycle(&*cloud, &shutdown).await;
        return Ok(once_exit_code(&report));
    }
    let health = Arc::new(Health::new(
        engine.clone(),
        cloud.clone(),
        cfg.poll.interval,
    ));
    health.beat();
    if let Some(h) = cfg.http {
        spawn_http(h, health.clone(), shutdown.clone())
            .await
            .map_err(Failure::runtime)?;
    }
    let daemon = Daemon {
        engine: engine.clone(),
        cloud,
        health,
        policy_dir: cfg.policy.dir.clone(),
        interval: cfg.poll.interval,
        jitter: cfg.poll.jitter,
        notifier: Notifier::Systemd,
    };
    daemon.poll_loop(shutdown, control).await;
    if let Err(e) = engine
        .audit()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .sync()
    {
        error!(error = %e, "final audit sync failed");
    }
    info!("vpcep-approver stopped");
    Ok(0)
}

/// `run --once`: 0 when every target listed everything and no action failed; else each
/// failure on stderr and 1.
fn once_exit_code(report: &CycleReport) -> u8 {
    if report.fully_ok() {
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
    }
    EXIT_FAILURE
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
    info!(listen = %h.listen, "http listener started");
    let app = crate::http::router(health);
    tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = r {
            error!(error = %e, "http listener failed");
        }
    });
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
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl<C: Cloud> Daemon<C> {
    /// Cycles until `shutdown` is cancelled or [`Control::Shutdown`] arrives; after that,
    /// in-flight actions get [`SHUTDOWN_GRACE`] (a second shutdown ends the wait).
    /// Heartbeats (and the systemd watchdog) go out while cycles run and while waiting.
    pub async fn poll_loop(
        &self,
        shutdown: CancellationToken,
        mut control: UnboundedReceiver<Control>,
    ) {
        let watchdog = self.notifier.watchdog();
        let mut tick = tokio::time::interval(heartbeat_period(self.interval, watchdog));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let beat = |health: &Health| {
            health.beat();
            if watchdog.is_some() {
                self.notifier.send(State::Watchdog);
            }
        };
        let mut open = true;
        let mut reload_due = false;
        let mut cycle_no: u64 = 0;
        loop {
            cycle_no += 1;
            let cycle = self
                .engine
                .run_cycle(&*self.cloud, &shutdown)
                .instrument(info_span!("cycle", cycle = cycle_no));
            tokio::pin!(cycle);
            if cycle_no == 1 {
                self.notifier.send(State::Ready);
            }
            let mut deadline: Option<Instant> = None;
            let report = loop {
                tokio::select! {
                    r = &mut cycle => break Some(r),
                    _ = tick.tick() => beat(&self.health),
                    _ = shutdown.cancelled(), if deadline.is_none() => {
                        info!("shutdown requested; finishing in-flight actions");
                        self.notifier.send(State::Stopping);
                        deadline = Some(Instant::now() + SHUTDOWN_GRACE);
                    }
                    msg = control.recv(), if open => match msg {
                        Some(Control::Shutdown) if deadline.is_some() => {
                            warn!("second stop signal: not waiting for in-flight actions");
                            break None;
                        }
                        Some(Control::Shutdown) => shutdown.cancel(),
                        // Applied when the cycle ends, before the next one starts.
                        Some(Control::Reload) => reload_due = true,
                        None => open = false,
                    },
                    _ = sleep_until_opt(deadline) => {
                        warn!("in-flight work did not finish within {}s; exiting", SHUTDOWN_GRACE.as_secs());
                        break None;
                    }
                }
            };
            if let Some(r) = &report {
                self.health.record(r);
            }
            if shutdown.is_cancelled() {
                break;
            }
            crate::mem::release_free_memory();
            if reload_due {
                reload_due = false;
                self.reload();
                // Re-decide pending connections under the new version now.
                continue;
            }
            let wait = tokio::time::sleep(next_wait(self.interval, self.jitter, &mut rand::rng()));
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    msg = control.recv(), if open => match msg {
                        Some(Control::Reload) => {
                            self.reload();
                            // Re-decide pending connections under the new version now.
                            break;
                        }
                        Some(Control::Shutdown) => {
                            shutdown.cancel();
                            break;
                        }
                        None => open = false,
                    },
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => beat(&self.health),
                }
            }
            if shutdown.is_cancelled() {
                self.notifier.send(State::Stopping);
                break;
            }
        }
    }

    /// Reloads the policy directory (keeping the old set on any error) and reopens the
    /// audit file.
    pub fn reload(&self) {
        self.notifier.send(State::Reloading);
        let engine = &self.engine;
        match Policies::load(&self.policy_dir) {
            Ok(p) => {
                let old = engine.policies().version().to_owned();
                info!(old_version = %old, new_version = %p.version(), "policies reloaded");
                engine.set_policies(Arc::new(p));
                engine.metrics().policy_reload(true);
            }
            Err(e) => {
                for problem in e.to_string().lines() {
                    error!(error = %problem, "policy reload failed; keeping the previous policies");
                }
                engine.metrics().policy_reload(false);
            }
        }
        if let Err(e) = engine
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
