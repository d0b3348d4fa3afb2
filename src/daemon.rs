//! The long-running daemon (SPEC §4, §7, §8): the poll loop with interval and jitter,
//! signals turned into typed messages (reload, shutdown), policy reload by
//! parse-then-swap, audit reopening, graceful shutdown, systemd notifications and the
//! watchdog, and the HTTP surface.

use crate::audit::AuditWriter;
use crate::cloud::auth::Credentials;
use crate::cloud::client::Cloud;
use crate::config::Config;
use crate::engine::{Engine, EngineOptions};
use crate::exit::{CmdResult, Failure};
use crate::health::{Health, heartbeat_period};
use crate::metrics::Metrics;
use crate::policy::Policies;
use anyhow::{Context, anyhow};
use futures_util::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
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

/// How long in-flight work may take after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The wait before the next cycle: the interval plus a random share of the jitter.
pub fn next_wait(interval: Duration, jitter: Duration, rng: &mut impl rand::Rng) -> Duration {
    if jitter.is_zero() {
        return interval;
    }
    interval + Duration::from_millis(rng.random_range(0..=jitter.as_millis() as u64))
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(states)
    {
        warn!(error = %e, "sd_notify failed");
    }
}

/// Runs the daemon (or one cycle with `once`). Returns the exit code.
pub async fn run(cfg: Config, opts: RunOptions) -> CmdResult {
    crate::cloud::client::init_tls();
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
        Cloud::new(&cfg, creds, metrics.clone())
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
    let shutdown = CancellationToken::new();
    if opts.once {
        let report = engine.run_cycle(&cloud, &shutdown).await;
        return Ok(if report.fully_ok() {
            0
        } else {
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
            crate::exit::EXIT_FAILURE
        });
    }

    let health = Arc::new(Health::new(
        engine.clone(),
        cloud.clone(),
        cfg.poll.interval,
    ));
    health.beat();
    if let Some(h) = cfg.http {
        let listener = tokio::net::TcpListener::bind(h.listen)
            .await
            .with_context(|| format!("http.listen {}", h.listen))
            .map_err(Failure::runtime)?;
        info!(listen = %h.listen, "http listener started");
        let app = crate::http::router(health.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = r {
                error!(error = %e, "http listener failed");
            }
        });
    }

    let reload = Arc::new(tokio::sync::Notify::new());
    spawn_signal_task(reload.clone(), shutdown.clone()).map_err(Failure::runtime)?;

    let watchdog = sd_notify::watchdog_enabled().map(|d| (d / 2).max(Duration::from_millis(100)));
    let mut tick = tokio::time::interval(heartbeat_period(cfg.poll.interval, watchdog));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    let mut rng = rand::rng();
    let mut cycle_no: u64 = 0;
    loop {
        cycle_no += 1;
        let cycle = engine
            .run_cycle(&cloud, &shutdown)
            .instrument(info_span!("cycle", cycle = cycle_no));
        tokio::pin!(cycle);
        if first {
            notify(&[sd_notify::NotifyState::Ready]);
            first = false;
        }
        let mut deadline: Option<Instant> = None;
        let report = loop {
            tokio::select! {
                r = &mut cycle => break Some(r),
                _ = tick.tick() => {
                    health.beat();
                    if watchdog.is_some() { notify(&[sd_notify::NotifyState::Watchdog]); }
                }
                _ = shutdown.cancelled(), if deadline.is_none() => {
                    info!("shutdown requested; finishing in-flight actions");
                    notify(&[sd_notify::NotifyState::Stopping]);
                    deadline = Some(Instant::now() + SHUTDOWN_GRACE);
                }
                _ = sleep_until_opt(deadline) => {
                    warn!("in-flight work did not finish within {}s; exiting", SHUTDOWN_GRACE.as_secs());
                    break None;
                }
            }
        };
        if let Some(r) = &report {
            health.record(r);
        }
        if shutdown.is_cancelled() {
            break;
        }
        crate::mem::release_free_memory();
        let wait = tokio::time::sleep(next_wait(cfg.poll.interval, cfg.poll.jitter, &mut rng));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                _ = reload.notified() => {
                    do_reload(&cfg, &engine);
                    // Re-decide pending connections under the new version now.
                    break;
                }
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    health.beat();
                    if watchdog.is_some() { notify(&[sd_notify::NotifyState::Watchdog]); }
                }
            }
        }
        if shutdown.is_cancelled() {
            notify(&[sd_notify::NotifyState::Stopping]);
            break;
        }
    }
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

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// SIGHUP → reload; SIGTERM/SIGINT → shutdown.
fn spawn_signal_task(
    reload: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook_tokio::Signals::new([SIGHUP, SIGINT, SIGTERM])
        .context("installing signal handlers")?;
    tokio::spawn(async move {
        while let Some(sig) = signals.next().await {
            match sig {
                SIGHUP => {
                    info!("SIGHUP: reloading policies and reopening the audit log");
                    reload.notify_one();
                }
                _ => {
                    info!(signal = sig, "stop signal received");
                    shutdown.cancel();
                }
            }
        }
    });
    Ok(())
}

/// Reloads the policy directory (keeping the old set on any error) and reopens the audit
/// file.
pub fn do_reload(cfg: &Config, engine: &Engine) {
    let mono = sd_notify::NotifyState::monotonic_usec_now().ok();
    match mono {
        Some(m) => notify(&[sd_notify::NotifyState::Reloading, m]),
        None => notify(&[sd_notify::NotifyState::Reloading]),
    }
    match Policies::load(&cfg.policy.dir) {
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
    notify(&[sd_notify::NotifyState::Ready]);
}

#[cfg(test)]
mod tests {
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
