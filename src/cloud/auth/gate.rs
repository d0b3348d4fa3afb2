//! The authentication gate of one credential key (docs/design.md, "No key lockout").
//!
//! Five failed AK/SK signatures in a row lock an access key for five minutes, and IAM
//! locks users after failed logins. So the gate belongs to the key, shared by every
//! target that uses it, and:
//! - the first request with a key (at start, and after a backoff) goes alone: it is the
//!   probe, the others wait for its answer;
//! - after an authentication failure nothing new is sent with the key for
//!   [`BACKOFF_MIN`], doubling up to [`BACKOFF_MAX`]; requests already on the wire
//!   finish;
//! - any answer that is not an authentication failure opens the gate.

use super::super::error::{ApiError, ApiErrorKind};
use chrono::{DateTime, Utc};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// First authentication backoff.
pub const BACKOFF_MIN: Duration = Duration::from_secs(5 * 60);
/// Longest authentication backoff.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60 * 60);

/// The gate of one credential key.
#[derive(Debug)]
pub struct Gate {
    state: Mutex<State>,
    /// Wakes the requests waiting for a probe's answer.
    changed: Notify,
}

#[derive(Debug)]
struct State {
    /// An answer that was not an authentication failure came with this key.
    open: bool,
    /// A request is probing the key (the first one, or the first after a backoff).
    probing: bool,
    /// Until when nothing is sent (monotonic, and wall clock for messages).
    until: Option<(Instant, DateTime<Utc>)>,
    /// The next backoff length.
    next: Duration,
    /// The last authentication failure, until the key works again.
    failed: Option<String>,
    /// Counts the backoffs started: an answer to a request admitted before the latest
    /// one says nothing about the key now (it was signed before the failure).
    epoch: u64,
}

/// Held by the request that probes the key; lets the next one try when dropped.
#[derive(Debug)]
pub struct Probe<'a> {
    gate: Option<&'a Gate>,
    epoch: u64,
}

impl Probe<'_> {
    /// The gate's backoff count when the request was admitted.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.gate {
            g.lock().probing = false;
            g.changed.notify_waiters();
        }
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            state: Mutex::new(State {
                open: false,
                probing: false,
                until: None,
                next: BACKOFF_MIN,
                failed: None,
                epoch: 0,
            }),
            changed: Notify::new(),
        }
    }
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The error of a request that may not be sent: the backoff is in effect.
    fn blocked(&self, s: &State, op: &'static str, url: &str, attempts: u32) -> Option<ApiError> {
        let (t, wall) = s.until?;
        if t <= Instant::now() {
            return None;
        }
        let reason = s.failed.as_deref().unwrap_or("authentication failed");
        let msg = format!(
            "{reason}; auth backoff until {}",
            wall.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let mut e = ApiError::new(op, url, ApiErrorKind::AuthBackoff).with_message(msg);
        e.attempts = attempts;
        Some(e)
    }

    /// Waits until a request may go: at once when the key works; as the probe when no
    /// answer has come with it yet (or since its backoff ended) and no other request is
    /// probing; after the probe's answer otherwise. Fails fast while the backoff lasts.
    pub async fn admit(
        &self,
        op: &'static str,
        url: &str,
        attempts: u32,
    ) -> Result<Probe<'_>, ApiError> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut s = self.lock();
                if let Some(e) = self.blocked(&s, op, url, attempts) {
                    return Err(e);
                }
                if s.until.is_some() {
                    // The backoff is over: the next answer decides again.
                    s.until = None;
                    s.open = false;
                }
                if s.open {
                    return Ok(Probe {
                        gate: None,
                        epoch: s.epoch,
                    });
                }
                if !s.probing {
                    s.probing = true;
                    return Ok(Probe {
                        gate: Some(self),
                        epoch: s.epoch,
                    });
                }
            }
            changed.await;
        }
    }

    /// Whether a request admitted at `epoch` may still start after its waits for a permit
    /// or a rate-limit slot: not while a backoff that began meanwhile lasts (the error),
    /// and not once one began and ended meanwhile (`false`: it must be admitted again, so
    /// that the first request after a backoff probes alone).
    pub fn still_open(
        &self,
        epoch: u64,
        op: &'static str,
        url: &str,
        attempts: u32,
    ) -> Result<bool, ApiError> {
        let s = self.lock();
        match self.blocked(&s, op, url, attempts) {
            Some(e) => Err(e),
            None => Ok(s.epoch == epoch),
        }
    }

    /// An authentication failure: starts the backoff unless one is already running.
    /// Returns the backoff started, for its one log line.
    pub fn failed(&self, what: String) -> Option<(Duration, DateTime<Utc>)> {
        let started = {
            let mut s = self.lock();
            s.open = false;
            let now = Instant::now();
            if s.until.is_some_and(|(t, _)| t > now) {
                None // a concurrent request already started it
            } else {
                let d = s.next;
                let wall = Utc::now()
                    + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::hours(1));
                s.until = Some((now + d, wall));
                s.next = (d * 2).min(BACKOFF_MAX);
                s.failed = Some(what);
                s.epoch += 1;
                Some((d, wall))
            }
        };
        self.changed.notify_waiters();
        started
    }

    /// An answer that was not an authentication failure: the key works. Returns whether
    /// it had failed before (for the one log line that says the backoff ended).
    pub fn succeeded(&self) -> bool {
        let was = {
            let mut s = self.lock();
            let was = s.failed.take().is_some();
            s.open = true;
            s.until = None;
            s.next = BACKOFF_MIN;
            was
        };
        self.changed.notify_waiters();
        was
    }

    /// [`Gate::succeeded`] for a request admitted at `epoch`; an answer to a request
    /// admitted before the latest backoff started changes nothing (a late 200 to a
    /// request signed before a revocation must not reopen the gate).
    pub fn succeeded_since(&self, epoch: u64) -> bool {
        if self.lock().epoch != epoch {
            return false;
        }
        self.succeeded()
    }

    /// Why requests with this key cannot work right now, if they cannot.
    pub fn unready_reason(&self) -> Option<String> {
        let s = self.lock();
        let failed = s.failed.as_ref()?;
        Some(match s.until {
            Some((t, wall)) if t > Instant::now() => format!(
                "{failed}; auth backoff in effect until {}",
                wall.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            _ => format!("{failed}; auth backoff over, waiting for a successful request"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A second request, waiting on `g` in a task of its own.
    fn waiter(g: &Arc<Gate>) -> tokio::task::JoinHandle<Result<(), ApiError>> {
        let g = g.clone();
        tokio::spawn(async move { g.admit("op", "u", 0).await.map(|_| ()) })
    }

    #[tokio::test(start_paused = true)]
    async fn paused_time_the_first_request_goes_alone_and_the_others_wait_for_its_answer() {
        let g = Arc::new(Gate::default());
        let probe = g.admit("op", "u", 0).await.expect("the first one probes");
        let waiting = waiter(&g);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished(), "waits while the probe is out");
        g.succeeded();
        drop(probe);
        waiting
            .await
            .expect("task")
            .expect("admitted after a good answer");
        // Open now: everyone passes at once.
        for _ in 0..10 {
            g.admit("op", "u", 0).await.expect("open");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn paused_time_a_failure_blocks_every_waiter_and_the_backoff_doubles_to_an_hour() {
        let g = Arc::new(Gate::default());
        let probe = g.admit("op", "u", 0).await.expect("probe");
        let waiter = waiter(&g);
        tokio::task::yield_now().await;
        assert_eq!(
            g.failed("aksk authentication failed".into())
                .map(|(d, _)| d),
            Some(BACKOFF_MIN)
        );
        drop(probe);
        let e = waiter.await.expect("task").expect_err("blocked");
        assert_eq!(e.kind, ApiErrorKind::AuthBackoff);
        assert!(g.unready_reason().is_some());
        // A second failure within the backoff does not start another.
        assert_eq!(g.failed("again".into()), None);
        let mut expect = BACKOFF_MIN;
        for _ in 0..6 {
            tokio::time::sleep(expect - Duration::from_secs(1)).await;
            assert!(g.admit("op", "u", 0).await.is_err(), "still in backoff");
            tokio::time::sleep(Duration::from_secs(1)).await;
            let probe = g.admit("op", "u", 0).await.expect("one probe after it");
            expect = (expect * 2).min(BACKOFF_MAX);
            assert_eq!(g.failed("still bad".into()).map(|(d, _)| d), Some(expect));
            drop(probe);
        }
        assert_eq!(expect, BACKOFF_MAX);
        // A good answer resets it.
        tokio::time::sleep(BACKOFF_MAX).await;
        let probe = g.admit("op", "u", 0).await.expect("probe");
        assert!(g.succeeded(), "it had failed");
        drop(probe);
        assert!(g.unready_reason().is_none());
        let probe = g.admit("op", "u", 0).await.expect("open");
        assert_eq!(g.failed("bad".into()).map(|(d, _)| d), Some(BACKOFF_MIN));
        drop(probe);
    }

    #[tokio::test(start_paused = true)]
    async fn paused_time_a_request_admitted_before_a_failure_does_not_start_after_it() {
        let g = Gate::default();
        g.succeeded();
        let admitted = g.admit("op", "u", 0).await.expect("open");
        let epoch = admitted.epoch();
        g.failed("revoked".into());
        assert!(g.still_open(epoch, "op", "u", 0).is_err());
        // Still waiting (for a rate slot) when the backoff is over: it must be admitted
        // again, so that the first request after a backoff probes alone.
        tokio::time::advance(BACKOFF_MIN + Duration::from_secs(1)).await;
        assert_eq!(g.still_open(epoch, "op", "u", 0).ok(), Some(false));
        drop(admitted);
        let again = g.admit("op", "u", 0).await.expect("the backoff is over");
        assert_eq!(g.still_open(again.epoch(), "op", "u", 0).ok(), Some(true));
    }

    #[tokio::test(start_paused = true)]
    async fn paused_time_a_late_answer_from_before_the_failure_does_not_reopen_the_gate() {
        let g = Gate::default();
        let probe = g.admit("op", "u", 0).await.expect("probe");
        g.succeeded();
        drop(probe);
        // Signed before the key was revoked; its 200 arrives after another's 401.
        let early = g.admit("op", "u", 0).await.expect("open");
        g.failed("401 for the revoked key".into());
        assert!(!g.succeeded_since(early.epoch()));
        let why = g.unready_reason().expect("still failed");
        assert!(why.contains("backoff in effect"), "{why}");
        assert!(g.admit("op", "u", 0).await.is_err(), "still in backoff");
    }
}
