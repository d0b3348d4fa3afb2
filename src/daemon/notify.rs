//! Telling the service manager how the daemon is doing (README "Run it under systemd"):
//! `READY=1`, `RELOADING=1`, `STOPPING=1`, `WATCHDOG=1` through `$NOTIFY_SOCKET`, or into
//! a list in tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::warn;

/// One state the daemon announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Policies loaded, the first cycle started; or a reload finished.
    Ready,
    /// A reload started.
    Reloading,
    /// Shutting down.
    Stopping,
    /// The poll loop is making progress.
    Watchdog,
}

/// Where notifications go.
#[derive(Debug, Clone)]
pub enum Notifier {
    /// `$NOTIFY_SOCKET` when it is set, else nowhere.
    Systemd,
    /// A list (tests), as if systemd's watchdog asked for a ping every period.
    Record(Arc<Mutex<Vec<State>>>, Option<Duration>),
}

impl Notifier {
    /// Sends one state.
    pub fn send(&self, state: State) {
        match self {
            Notifier::Systemd => {
                if std::env::var_os("NOTIFY_SOCKET").is_none() {
                    return;
                }
                use sd_notify::NotifyState as N;
                let result = match state {
                    State::Ready => sd_notify::notify(&[N::Ready]),
                    State::Stopping => sd_notify::notify(&[N::Stopping]),
                    State::Watchdog => sd_notify::notify(&[N::Watchdog]),
                    // systemd 253+ wants the monotonic time with RELOADING=1.
                    State::Reloading => match N::monotonic_usec_now() {
                        Ok(m) => sd_notify::notify(&[N::Reloading, m]),
                        Err(_) => sd_notify::notify(&[N::Reloading]),
                    },
                };
                if let Err(e) = result {
                    warn!(error = %e, "sd_notify failed");
                }
            }
            Notifier::Record(list, _) => list.lock().unwrap_or_else(|p| p.into_inner()).push(state),
        }
    }

    /// The systemd watchdog period to ping at (half of `WatchdogSec`), when it is on.
    pub fn watchdog(&self) -> Option<Duration> {
        match self {
            Notifier::Systemd => {
                sd_notify::watchdog_enabled().map(|d| (d / 2).max(Duration::from_millis(100)))
            }
            Notifier::Record(_, period) => *period,
        }
    }
}
