//! What `/healthz` and `/readyz` report (README "Health, metrics and alerts"): whether the poll loop is alive and
//! whether every target is being served. The daemon feeds it; the HTTP surface reads it.

use crate::cloud::{Cloud, TargetApi};
use crate::engine::{CycleReport, Engine};
use crate::metrics::Metrics;
use std::sync::atomic::{AtomicI64, Ordering};
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
    started: Instant,
    /// Last time the poll loop went round (seconds since `started`).
    heartbeat: AtomicI64,
    /// Per target: when its last cycle succeeded.
    last_ok: Mutex<Vec<Option<Instant>>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("targets", &self.names)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl Health {
    /// Health over `engine` and `cloud`, polled every `interval`.
    pub fn new(engine: Arc<Engine>, cloud: Arc<dyn TargetStatus>, interval: Duration) -> Health {
        let names = cloud.names();
        let n = names.len();
        Health {
            engine,
            cloud,
            names,
            interval,
            started: Instant::now(),
            heartbeat: AtomicI64::new(0),
            last_ok: Mutex::new(vec![None; n]),
        }
    }

    /// The poll loop is alive.
    pub fn beat(&self) {
        let secs = self.started.elapsed().as_secs() as i64;
        self.heartbeat.store(secs, Ordering::Relaxed);
    }

    /// `Ok` while the poll loop is alive (it beats every [`heartbeat_period`]).
    pub fn alive(&self) -> Result<(), String> {
        let age = self.started.elapsed().as_secs() as i64 - self.heartbeat.load(Ordering::Relaxed);
        let limit = liveness_limit(self.interval).as_secs() as i64;
        if age <= limit {
            Ok(())
        } else {
            Err(format!("poll loop has not run for {age}s"))
        }
    }

    /// `Ok` when policies are loaded, the audit log is writable and every target's last
    /// cycle succeeded within three intervals; else the reasons.
    pub fn ready(&self) -> Result<(), String> {
        let mut why = Vec::new();
        if let Err(e) = self.alive() {
            why.push(e);
        }
        if !self.engine.audit_ok() {
            why.push("the last audit write failed".to_owned());
        } else if let Err(e) = self
            .engine
            .audit()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check_writable()
        {
            why.push(format!("audit log not writable: {e}"));
        }
        let last = self.last_ok.lock().unwrap_or_else(|p| p.into_inner());
        for (i, (name, ok)) in self.names.iter().zip(last.iter()).enumerate() {
            match ok {
                None => why.push(format!("target {name}: no successful cycle yet")),
                Some(t) if t.elapsed() > 3 * self.interval => why.push(format!(
                    "target {name}: last successful cycle {}s ago",
                    t.elapsed().as_secs()
                )),
                Some(_) => {}
            }
            if let Some(r) = self.cloud.unready_reason(i) {
                why.push(format!("target {name}: {r}"));
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

    /// Records the result of a cycle.
    pub fn record(&self, report: &CycleReport) {
        let mut last = self.last_ok.lock().unwrap_or_else(|p| p.into_inner());
        for (i, t) in report.targets.iter().enumerate() {
            if t.ok()
                && let Some(slot) = last.get_mut(i)
            {
                *slot = Some(Instant::now());
            }
        }
    }
}

/// How long the poll loop may go without a heartbeat before `/healthz` fails.
pub fn liveness_limit(interval: Duration) -> Duration {
    Duration::from_secs(60).saturating_add(interval.saturating_mul(2))
}

/// How often the poll loop beats: half the systemd watchdog when there is one (systemd
/// asks for a ping within it), else a quarter of the liveness limit. Every beat is a
/// wake-up of an otherwise idle process, so it is no more frequent than it must be.
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
