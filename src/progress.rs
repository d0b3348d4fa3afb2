//! The progress signal behind `/healthz` and the systemd watchdog (README "Health,
//! metrics and alerts"): the last time a cycle finished, an API answer arrived or an
//! audit record was written. A loop that only goes round while a request or an fsync
//! hangs makes no progress, so a stuck daemon is reported and restarted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Shared handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    base: Instant,
    /// Milliseconds after `base` of the last progress.
    last: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            inner: Arc::new(Inner {
                base: Instant::now(),
                last: AtomicU64::new(0),
            }),
        }
    }
}

impl Progress {
    /// Progress was made now.
    pub fn beat(&self) {
        let ms = u64::try_from(self.inner.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.inner.last.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long ago progress was last made (since creation when it never was).
    pub fn since(&self) -> Duration {
        let last = Duration::from_millis(self.inner.last.load(Ordering::Relaxed));
        self.inner.base.elapsed().saturating_sub(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paused_time_progress_ages_until_the_next_beat() {
        let p = Progress::default();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(p.since(), Duration::from_secs(5));
        p.beat();
        assert_eq!(p.since(), Duration::ZERO);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(p.clone().since(), Duration::from_secs(2));
    }
}
