//! The audit log (README "Audit log"): JSON Lines, one decision, outcome or checkpoint
//! record per line, each carrying the SHA-256 of the line before it, so that any edit,
//! deletion, insertion or reordering breaks the chain and `audit verify` finds it; signed
//! checkpoints let a holder of the public key detect even a rewrite of the whole chain.
//!
//! - [`record`]: the record types, their exact line format and the strict parser.
//! - [`writer`]: [`AuditWriter`], the one writer of a file: an exclusive lock, appending
//!   with one write per line, group fsync, continuing an existing file's chain and its
//!   record count, following the configured path (deleted, replaced, rotated files).
//! - [`key`]: the Ed25519 [`SigningKey`] (a secret) and [`VerifyingKey`] of checkpoints.
//! - [`verify`]: [`verify_files`], the streaming checker behind `audit verify`.
//! - [`os_error`]: [`OsError`], an OS error shown with its symbolic name (`ENOSPC`).
//!
//! The audit log is its own writer, not a tracing layer: no log filter can drop it.

pub mod key;
pub mod os_error;
pub mod record;
mod tail;
pub mod verify;
pub mod writer;

pub use crate::config::AuditPath;
pub use key::{KeyError, SigningKey, VerifyingKey, checkpoint_message};
pub use os_error::OsError;
pub use record::{
    AuditLine, AuditRecord, CheckpointRecord, DecisionRecord, GENESIS_HASH, InvalidLine,
    MAX_LINE_BYTES, OutcomeRecord, line_hash, new_decision_id, parse_line,
};
pub use verify::{BadLine, VerifyOptions, VerifyReport, verify_files, verify_files_with};
pub use writer::{AuditWriter, PendingSync};

use std::sync::Arc;

/// Errors of the audit writer and verifier; each names the file (or `stdout`). The OS
/// error behind one is its source, shown with its symbolic name (see [`OsError`]); use
/// [`error_chain`] (or `{:#}` through `anyhow`) to print it with its causes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// Another process holds the lock on the audit file: it writes that file, and a
    /// second writer would fork the chain. The daemon stops before deciding anything.
    #[error(
        "audit log {path} is locked by another process that writes it (only one writer \
         per audit file: another daemon or `run --once` on the same path?)"
    )]
    Locked {
        /// The path.
        path: String,
    },
    /// The audit file could not be opened or created.
    #[error("failed to open audit log {path}")]
    Open {
        /// The path.
        path: String,
        /// The OS error.
        #[source]
        source: OsError,
    },
    /// The exclusive lock could not be taken for another reason than another holder.
    #[error("failed to lock audit log {path}")]
    Lock {
        /// The path.
        path: String,
        /// The OS error.
        #[source]
        source: OsError,
    },
    /// Reading an audit file failed.
    #[error("failed to read audit log {path}")]
    Read {
        /// The path.
        path: String,
        /// The OS error.
        #[source]
        source: OsError,
    },
    /// Writing a record failed; no action may be sent for it.
    #[error("failed to write audit log {path}")]
    Write {
        /// The path, or `stdout`.
        path: String,
        /// The OS error.
        #[source]
        source: OsError,
    },
    /// `fsync` of the file (or of its directory, after creating it) failed.
    #[error("failed to fsync {path}")]
    Sync {
        /// The file or directory.
        path: String,
        /// The OS error.
        #[source]
        source: OsError,
    },
    /// A record could not be rendered as JSON.
    #[error("failed to render an audit record for {path}")]
    Serialize {
        /// The path, or `stdout`.
        path: String,
        /// The serializer's error.
        #[source]
        source: Arc<serde_json::Error>,
    },
    /// A record would exceed [`MAX_LINE_BYTES`], which `audit verify` would reject.
    #[error("audit record for {path} is {size} bytes, over the {MAX_LINE_BYTES}-byte line limit")]
    TooLarge {
        /// The path, or `stdout`.
        path: String,
        /// The rendered line's length.
        size: usize,
    },
    /// The log cannot take records now (`/readyz`): the path could not be opened, the
    /// last write or fsync failed, or the path no longer names the open file.
    #[error("audit log {path} is not writable: {reason}")]
    NotWritable {
        /// The path, or `stdout`.
        path: String,
        /// Why, with the causes (the OS error and its name).
        reason: String,
    },
    /// Writing the verification result to the output failed.
    #[error("failed to write the audit verify result")]
    Report {
        /// The OS error.
        #[source]
        source: OsError,
    },
}

/// The error and its sources on one line (`a: b: c`), for logs and `/readyz`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}
