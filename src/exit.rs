//! Exit codes (README "Commands") and [`Failure`], the error a command ends with. The
//! bottom of the module graph: every layer may end a command, none needs more than this.

/// Exit code for invalid configuration or policies (EX_CONFIG, so systemd stops
/// restarting).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code for runtime failures.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for usage errors.
pub const EXIT_USAGE: u8 = 2;

/// A command that could not complete: the exit code and an error that names the file,
/// key, policy or URL it is about.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: u8,
    /// What went wrong.
    pub error: anyhow::Error,
}

impl Failure {
    /// Invalid configuration or policies: exit 78.
    pub fn config(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: EXIT_CONFIG,
            error: error.into(),
        }
    }

    /// A runtime failure: exit 1.
    pub fn runtime(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: EXIT_FAILURE,
            error: error.into(),
        }
    }

    /// A usage error: exit 2.
    pub fn usage(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: EXIT_USAGE,
            error: error.into(),
        }
    }
}

/// Result of a command: an exit code.
pub type CmdResult = Result<u8, Failure>;
