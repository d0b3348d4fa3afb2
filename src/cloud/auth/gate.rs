//! The authentication backoff of one credential (docs/design.md, "No key lockout").
//!
//! Five failed AK/SK signatures in a row lock an access key for five minutes, and IAM
//! locks users after failed logins. So after an authentication failure nothing is sent
//! with that credential for [`BACKOFF_MIN`], doubling up to [`BACKOFF_MAX`]; when the
//! backoff ends exactly one request probes, the others fail fast until it answers.

use super::super::error::{ApiError, ApiErrorKind};
use chrono::{DateTime, Utc};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// First authentication backoff.
pub const BACKOFF_MIN: Duration = Duration::from_secs(5 * 60);
/// Longest authentication backoff.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60 * 60);

/// The backoff state of one credential.
#[derive(Debug)]
pub struct Gate {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Until when nothing is sent (monotonic, and wall clock for messages).
    until: Option<(Instant, DateTime<Utc>)>,
    /// The next backoff length.
    next: Duration,
    /// Set by an authentication failure, cleared by the next success.
    failed: Option<String>,
    /// After a backoff ends, one request probes; the others keep failing fast.
    probe_in_flight: bool,
}

impl Default for State {
    fn default() -> Self {
        State {
            until: None,
            next: BACKOFF_MIN,
            failed: None,
            probe_in_flight: false,
        }
    }
}

/// Clears the probe flag when the probing attempt ends, however it ends.
#[derive(Debug)]
pub struct Probe<'a>(Option<&'a Gate>);

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.0 {
            g.lock().probe_in_flight = false;
        }
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            state: Mutex::new(State::default()),
        }
    }
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets a request through, or fails fast while the backoff lasts (and while another
    /// request probes after it); the error is [`ApiErrorKind::AuthBackoff`] with
    /// `attempts` as given.
    pub fn admit(&self, op: &'static str, url: &str, attempts: u32) -> Result<Probe<'_>, ApiError> {
        let mut s = self.lock();
        let Some(reason) = s.failed.clone() else {
            return Ok(Probe(None));
        };
        let now = Instant::now();
        let blocked = match s.until {
            Some((t, wall)) if t > now => Some(format!(
                "{reason}; auth backoff until {}",
                wall.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )),
            _ if s.probe_in_flight => Some(format!(
                "{reason}; another request is probing the credentials"
            )),
            _ => None,
        };
        if let Some(msg) = blocked {
            let mut e = ApiError::new(op, url, ApiErrorKind::AuthBackoff).with_message(msg);
            e.attempts = attempts;
            return Err(e);
        }
        s.probe_in_flight = true;
        Ok(Probe(Some(self)))
    }

    /// An authentication failure: starts the backoff unless one is already running.
    /// Returns the backoff started, for the log line.
    pub fn failed(&self, what: String) -> Option<(Duration, DateTime<Utc>)> {
        let mut s = self.lock();
        let now = Instant::now();
        if s.until.is_some_and(|(t, _)| t > now) {
            return None; // a concurrent request already started it
        }
        let d = s.next;
        let wall = Utc::now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::hours(1));
        s.until = Some((now + d, wall));
        s.next = (d * 2).min(BACKOFF_MAX);
        s.failed = Some(what);
        Some((d, wall))
    }

    /// A request was answered without an authentication failure: the backoff is over.
    /// Returns whether there was one (for the log line).
    pub fn succeeded(&self) -> bool {
        let mut s = self.lock();
        let was = s.failed.is_some();
        let probing = s.probe_in_flight;
        *s = State::default();
        s.probe_in_flight = probing;
        was
    }

    /// Why requests with this credential cannot work right now, if they cannot.
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
