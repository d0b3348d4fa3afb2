//! What `/healthz` and `/readyz` report (README "Health, metrics and alerts"): whether the poll loop is alive and
//! whether every target is being served. The daemon feeds it; the HTTP surface reads it.

use crate::cloud::{Cloud, TargetApi};
use crate::engine::{CycleReport, Engine};
use crate::metrics::Metrics;
use crate::progress::Progress;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The targets as readiness sees them: their names and why one cannot work now.
pub trait TargetStatus: Send + Sync {
    /// Target names, in configuration order.
    fn names(&self) -> Vec<String>;
    /// Why target `i` cannot work right now, if it cannot.
    fn unready_reason(&self, i: usize) -> Option<String>;
}

impl<C: Cloud> TargetStatus for C {
    fn names(&self) -> Vec<String> {
        self.targets()
            .iter()
            .map(|t| t.target().name.clone())
            .collect()
    }

    fn unready_reason(&self, i: usize) -> Option<String> {
        self.targets().get(i)?.unready_reason()
    }
}

/// What the HTTP surface reports on.
pub struct Health {
    engine: Arc<Engine>,
    cloud: Arc<dyn TargetStatus>,
    names: Vec<String>,
    interval: Duration,
    progress: Progress,
    /// Per target, in configuration order.
    targets: Mutex<Vec<TargetHealth>>,
}

/// What readiness remembers of one target's cycles.
#[derive(Debug, Clone, Default)]
struct TargetHealth {
    /// When its last successful cycle ended.
    last_ok: Option<Instant>,
    /// How long its last cycle took.
    last_duration: Duration,
    /// Why its last cycle failed, when it did.
    last_failure: Option<String>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("targets", &self.names)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// Longest failure cause quoted in `/readyz`, in characters.
const MAX_CAUSE: usize = 300;

impl Health {
    /// Health over `engine` and `cloud`, polled every `interval`.
    pub fn new(engine: Arc<Engine>, cloud: Arc<dyn TargetStatus>, interval: Duration) -> Health {
        let names = cloud.names();
        let n = names.len();
        let progress = engine.metrics().progress().clone();
        progress.beat();
        Health {
            engine,
            cloud,
            names,
            interval,
            progress,
            targets: Mutex::new(vec![TargetHealth::default(); n]),
        }
    }

    /// `Ok` while the daemon makes progress: a cycle finished, an API answer arrived or
    /// an audit record was written within the liveness limit (`2 × interval + 60 s`).
    pub fn alive(&self) -> Result<(), String> {
        let since = self.progress.since();
        let limit = liveness_limit(self.interval);
        if since <= limit {
            Ok(())
        } else {
            Err(format!(
                "no progress for {}s (no cycle finished, no API answer, no audit write; the limit is {}s)",
                since.as_secs(),
                limit.as_secs()
            ))
        }
    }

    /// `Ok` when the daemon makes progress, the audit log is writable, no key is in its
    /// backoff and every target's last cycle succeeded within `max(3 × interval, 2 × its
    /// last cycle's duration)`; else each reason once, with its cause.
    pub fn ready(&self) -> Result<(), String> {
        let mut why: Vec<String> = Vec::new();
        let mut add = |r: String| {
            if !why.contains(&r) {
                why.push(r);
            }
        };
        if let Err(e) = self.alive() {
            add(e);
        }
        let writable = self
            .engine
            .audit()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check_writable();
        match writable {
            Err(e) => add(format!("audit log: {}", crate::audit::error_chain(&e))),
            Ok(()) if !self.engine.audit_ok() => add("the last audit write failed".to_owned()),
            Ok(()) => {}
        }
        let targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        for (i, (name, t)) in self.names.iter().zip(targets.iter()).enumerate() {
            let cause = t
                .last_failure
                .as_ref()
                .map(|f| format!(" (last cycle: {f})"))
                .unwrap_or_default();
            let window = (3 * self.interval).max(2 * t.last_duration);
            match t.last_ok {
                None => add(format!("target {name}: no successful cycle yet{cause}")),
                Some(at) if at.elapsed() > window => add(format!(
                    "target {name}: last successful cycle {}s ago{cause}",
                    at.elapsed().as_secs()
                )),
                Some(_) => {}
            }
            if let Some(r) = self.cloud.unready_reason(i) {
                add(format!("target {name}: {r}"));
            }
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join("; "))
        }
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        self.engine.metrics()
    }

    /// Records the result of a cycle: progress, and per target its success, duration and
    /// cause of failure.
    pub fn record(&self, report: &CycleReport) {
        self.progress.beat();
        // Targets run together and the next cycle starts when the slowest ends: each
        // target's next success is as far off as the whole cycle, not its own part.
        let cycle = report.duration();
        let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        for (slot, t) in targets.iter_mut().zip(report.targets.iter()) {
            slot.last_duration = cycle;
            if t.ok() {
                slot.last_ok = Some(Instant::now());
                slot.last_failure = None;
            } else {
                let first = t.failures.first().map(String::as_str).unwrap_or("failed");
                let mut cause: String = first.chars().take(MAX_CAUSE).collect();
                if first.chars().count() > MAX_CAUSE {
                    cause.push('…');
                }
                slot.last_failure = Some(cause);
            }
        }
    }
}

/// How long the daemon may go without progress before `/healthz` fails.
pub fn liveness_limit(interval: Duration) -> Duration {
    Duration::from_secs(60).saturating_add(interval.saturating_mul(2))
}

/// How often the poll loop looks at the progress (and pings the systemd watchdog while
/// there is some): half the watchdog when there is one, else a quarter of the liveness
/// limit. Every tick is a wake-up of an otherwise idle process, so it is no more frequent
/// than it must be.
pub fn heartbeat_period(interval: Duration, watchdog: Option<Duration>) -> Duration {
    let quarter = liveness_limit(interval) / 4;
    watchdog.map_or(quarter, |w| w.min(quarter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_beats_four_times_per_liveness_limit_or_at_the_watchdog() {
        let s = Duration::from_secs;
        assert_eq!(liveness_limit(s(30)), s(120));
        assert_eq!(heartbeat_period(s(30), None), s(30));
        assert_eq!(heartbeat_period(s(1), None), Duration::from_millis(15_500));
        // systemd's WatchdogSec=60s: ping every 30 s; a shorter watchdog wins.
        assert_eq!(heartbeat_period(s(300), Some(s(30))), s(30));
        assert_eq!(heartbeat_period(s(30), Some(s(2))), s(2));
        assert_eq!(heartbeat_period(s(30), Some(s(90))), s(30));
    }
}
