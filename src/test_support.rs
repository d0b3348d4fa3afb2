//! Helpers that the unit tests of several modules share.

use crate::audit::AuditWriter;
use crate::config::AuditPath;
use crate::engine::{Engine, EngineOptions};
use crate::metrics::Metrics;
use crate::policy::Policies;
use chrono::TimeZone;
use std::sync::{Arc, Mutex};

/// The fixed instant that clock-dependent unit tests (IAM tokens, fetched keys) are
/// written against: their expiry times are relative to it.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc
        .with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
        .single()
        .expect("valid date")
}

/// An engine over `policies` on the system clock, auditing to `audit.jsonl` in the
/// returned directory (keep it for as long as the engine runs).
pub fn engine(policies: Policies, opts: EngineOptions) -> (Engine, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = AuditWriter::open(
        AuditPath::File(dir.path().join("audit.jsonl")),
        false,
        crate::clock::system(),
    )
    .expect("audit");
    let engine = Engine::new(
        Arc::new(policies),
        Arc::new(Mutex::new(writer)),
        Metrics::new(),
        crate::clock::system(),
        opts,
    );
    (engine, dir)
}
