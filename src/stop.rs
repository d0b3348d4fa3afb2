//! Stopping in two steps (docs/design.md, "Shutdown"): first no new request or action
//! starts while those on the wire finish; then, at the deadline or on a second signal,
//! whatever is still on the wire is given up (its outcome is `unknown`).

use tokio_util::sync::CancellationToken;

/// The two stop signals every part that sends requests watches.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    soft: CancellationToken,
    hard: CancellationToken,
}

impl Stop {
    /// Not stopping.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Stops softly when `soft` is cancelled (the caller's shutdown token).
    pub fn on(soft: CancellationToken) -> Stop {
        Stop {
            soft,
            hard: CancellationToken::new(),
        }
    }

    /// No new request or action starts from now on.
    pub fn begin(&self) {
        self.soft.cancel();
    }

    /// Gives up whatever is still on the wire (implies [`Stop::begin`]).
    pub fn abort(&self) {
        self.soft.cancel();
        self.hard.cancel();
    }

    /// Whether stopping has begun.
    pub fn stopping(&self) -> bool {
        self.soft.is_cancelled()
    }

    /// Whether requests on the wire are given up.
    pub fn aborted(&self) -> bool {
        self.hard.is_cancelled()
    }

    /// Resolves when stopping begins.
    pub async fn begun(&self) {
        self.soft.cancelled().await;
    }

    /// Resolves when requests on the wire are given up.
    pub async fn given_up(&self) {
        self.hard.cancelled().await;
    }

    /// The soft token (for listeners that stop with the daemon).
    pub fn token(&self) -> &CancellationToken {
        &self.soft
    }
}
