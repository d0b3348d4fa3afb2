//! The appending side of the audit log: one `write` per line, the hash chain, group
//! fsync, and reopening for logrotate.
//!
//! # Continuing an existing file
//! Opening a path that already holds lines continues the chain from its last line: the
//! tail is found by reading backwards from the end in fixed-size chunks and the last line
//! is hashed while streaming forward, so a multi-gigabyte file costs a few reads.
//!
//! Damage at the end of the file is never repaired by deleting anything, because the
//! audit log is evidence and only `audit verify` should judge it:
//! - A *torn* last line (no trailing newline, e.g. a crash in the middle of a write) is
//!   terminated with a newline and the chain continues from the hash of its bytes. If the
//!   bytes happen to be a complete record, nothing is lost and the file still verifies;
//!   otherwise `audit verify` reports that line as the first bad one.
//! - A last line that is not a valid record is kept, and the chain continues from its
//!   hash, exactly as for a good line, so the chain never forks silently; `audit verify`
//!   reports it.
//!
//! Both cases are logged as warnings naming the path.
//!
//! # Failed writes
//! When a write fails part-way (disk full), the writer truncates the file back to its
//! length before that write: the caller was told the record was not written, and its
//! partial bytes are not a record. Whatever happens, the next append first reopens the
//! path and re-reads its tail, so the chain continues from what is really on disk.

use super::record::{
    DecisionRecord, GENESIS_HASH, MAX_LINE_BYTES, OutcomeRecord, line_hash, parse_line,
    render_decision, render_outcome, timestamp,
};
use super::{AuditError, error_chain};
use crate::clock::SharedClock;
use crate::config::AuditPath;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Size of the chunks used to find and hash the last line of an existing file.
const TAIL_CHUNK: usize = 64 * 1024;

/// Appends hash-chained records to the audit log (README "Audit log").
///
/// Each append is one `write` of the whole line and its newline, so the line reaches the
/// OS before the call returns; [`AuditWriter::sync`] makes the lines written so far
/// durable (write-ahead: the engine appends a batch of decisions, syncs once, and only
/// then sends the actions).
#[derive(Debug)]
pub struct AuditWriter {
    sink: Sink,
    fsync: bool,
    clock: SharedClock,
    /// Hash of the last line in the chain: the next line's `prev`.
    last_hash: String,
    /// Lines were written since the last successful fsync.
    unsynced: bool,
    /// The last write or fsync failed; the next append re-reads the file's tail first.
    failed: Option<String>,
    /// How many times `failed` was set: a sync that began before a later failure must
    /// not clear it.
    failures: u64,
}

/// A sync handed out by [`AuditWriter::begin_sync`].
#[derive(Debug)]
pub struct PendingSync {
    file: File,
    path: String,
    epoch: u64,
}

impl PendingSync {
    /// What to hand back to [`AuditWriter::sync_done`] with the result.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// `fdatasync`: blocks until every line appended before `begin_sync` is on disk.
    pub fn wait(self) -> Result<(), AuditError> {
        self.file.sync_data().map_err(|source| AuditError::Sync {
            path: self.path,
            source: source.into(),
        })
    }
}

#[derive(Debug)]
enum Sink {
    Stdout(io::Stdout),
    File { path: PathBuf, file: File },
}

impl AuditWriter {
    /// Opens the audit log. An existing file is continued from its last line (see the
    /// module docs for a torn or invalid last line); a new file starts a chain with 64
    /// zeros. With `fsync`, the directory of a newly created file is synced too, so the
    /// file itself survives a crash.
    pub fn open(target: AuditPath, fsync: bool, clock: SharedClock) -> Result<Self, AuditError> {
        let sink = match target {
            AuditPath::Stdout => {
                return Ok(Self {
                    sink: Sink::Stdout(io::stdout()),
                    fsync,
                    clock,
                    last_hash: GENESIS_HASH.to_owned(),
                    unsynced: false,
                    failed: None,
                    failures: 0,
                });
            }
            AuditPath::File(path) => path,
        };
        let (file, last_hash) = attach(&sink, fsync, GENESIS_HASH)?;
        Ok(Self {
            sink: Sink::File { path: sink, file },
            fsync,
            clock,
            last_hash,
            unsynced: false,
            failed: None,
            failures: 0,
        })
    }

    /// Appends a decision record (one write of the line and its newline).
    pub fn append_decision(&mut self, rec: &DecisionRecord) -> Result<(), AuditError> {
        self.append_with(|ts, prev| render_decision(ts, rec, prev))
    }

    /// Appends an outcome record (one write of the line and its newline).
    pub fn append_outcome(&mut self, rec: &OutcomeRecord) -> Result<(), AuditError> {
        self.append_with(|ts, prev| render_outcome(ts, rec, prev))
    }

    /// Makes every line appended so far durable: `fdatasync` when the writer was opened
    /// with `fsync = true` and lines were written since the last sync; otherwise nothing
    /// (stdout is only flushed).
    pub fn sync(&mut self) -> Result<(), AuditError> {
        let result = match &mut self.sink {
            Sink::Stdout(out) => out.flush().map_err(|source| AuditError::Write {
                path: "stdout".to_owned(),
                source: source.into(),
            }),
            Sink::File { .. } if !self.fsync || !self.unsynced => Ok(()),
            Sink::File { path, file } => file.sync_data().map_err(|source| AuditError::Sync {
                path: path.display().to_string(),
                source: source.into(),
            }),
        };
        match &result {
            Ok(()) => {
                self.unsynced = false;
                if self.fsync {
                    self.failed = None;
                }
            }
            Err(e) => self.fail(e),
        }
        result
    }

    /// The first half of a sync that does not hold the writer while the disk works: flushes
    /// stdout, or hands out a duplicate of the file handle whose `fdatasync` makes every
    /// line appended before this call durable. `None` when fsync is off. It is handed out
    /// even when another sync is under way, because that one may have started before this
    /// caller's lines were written. Run [`PendingSync::wait`] off the async threads and
    /// report the result with [`AuditWriter::sync_done`]; other tasks keep appending
    /// meanwhile.
    pub fn begin_sync(&mut self) -> Result<Option<PendingSync>, AuditError> {
        match &mut self.sink {
            Sink::Stdout(_) => self.sync().map(|()| None),
            Sink::File { .. } if !self.fsync => Ok(None),
            Sink::File { path, file } => {
                let shown = path.display().to_string();
                let dup = file.try_clone().map_err(|source| AuditError::Sync {
                    path: shown.clone(),
                    source: source.into(),
                })?;
                Ok(Some(PendingSync {
                    file: dup,
                    path: shown,
                    epoch: self.failures,
                }))
            }
        }
    }

    /// Records how a [`PendingSync`] ended (`epoch` from [`PendingSync::epoch`]): a
    /// failure means the lines are not known to be durable and the log is not writable
    /// until a later sync succeeds. A success clears only failures from before the sync
    /// began: a write that failed meanwhile stays failed (and the next append re-reads
    /// the file's tail).
    pub fn sync_done(&mut self, epoch: u64, result: &Result<(), AuditError>) {
        match result {
            Ok(()) if self.failures == epoch => self.failed = None,
            Ok(()) => {}
            Err(e) => {
                self.unsynced = true;
                self.fail(e);
            }
        }
    }

    fn fail(&mut self, e: &AuditError) {
        self.failed = Some(error_chain(e));
        self.failures += 1;
    }

    /// Reopens the path (SIGHUP after logrotate moved the file away). If the path now
    /// holds lines, the chain continues from its last line; if it is new or empty, the
    /// chain continues from the last line this writer wrote, so `audit verify old new`
    /// checks across the rotation. A no-op for stdout.
    pub fn reopen(&mut self) -> Result<(), AuditError> {
        let Sink::File { path, file } = &mut self.sink else {
            return Ok(());
        };
        let (new_file, hash) = attach(path, self.fsync, &self.last_hash)?;
        if hash != self.last_hash {
            tracing::warn!(
                path = %path.display(),
                "the audit log's last line is not the last line this writer wrote (a failed \
                 write left a partial line, or another process wrote); continuing the chain \
                 from the file's last line"
            );
        }
        *file = new_file;
        self.last_hash = hash;
        Ok(())
    }

    /// The file path, or `None` for stdout.
    pub fn path(&self) -> Option<&Path> {
        match &self.sink {
            Sink::Stdout(_) => None,
            Sink::File { path, .. } => Some(path),
        }
    }

    /// Hex SHA-256 of the last line of the chain (64 zeros before the first line).
    pub fn last_hash(&self) -> &str {
        &self.last_hash
    }

    /// For `/readyz`: fails while the last write or fsync has failed (until an append or
    /// fsync succeeds again), or when the open file can no longer be inspected.
    pub fn check_writable(&self) -> Result<(), AuditError> {
        if let Some(reason) = &self.failed {
            return Err(AuditError::NotWritable {
                path: self.name(),
                reason: reason.clone(),
            });
        }
        if let Sink::File { path, file } = &self.sink {
            file.metadata().map_err(|source| AuditError::Write {
                path: path.display().to_string(),
                source: source.into(),
            })?;
        }
        Ok(())
    }

    /// The name used in messages: the path, or `stdout`.
    fn name(&self) -> String {
        match &self.sink {
            Sink::Stdout(_) => "stdout".to_owned(),
            Sink::File { path, .. } => path.display().to_string(),
        }
    }

    /// Renders the next line with the current time and `prev`, writes it in one call and
    /// advances the chain only when the write succeeded.
    fn append_with(
        &mut self,
        render: impl FnOnce(&str, &str) -> Result<Vec<u8>, serde_json::Error>,
    ) -> Result<(), AuditError> {
        if self.failed.is_some() {
            // The file may hold a partial line that could not be rolled back: re-read the
            // tail so the chain continues from what is on disk.
            self.reopen().inspect_err(|e| self.fail(e))?;
        }
        let ts = timestamp(&*self.clock);
        let mut line = render(&ts, &self.last_hash).map_err(|source| AuditError::Serialize {
            path: self.name(),
            source: source.into(),
        })?;
        if line.len() > MAX_LINE_BYTES {
            return Err(AuditError::TooLarge {
                path: self.name(),
                size: line.len(),
            });
        }
        let hash = line_hash(&line);
        line.push(b'\n');
        match self.write_line(&line) {
            Ok(()) => {
                self.last_hash = hash;
                self.unsynced = true;
                self.failed = None;
                Ok(())
            }
            Err(e) => {
                self.fail(&e);
                Err(e)
            }
        }
    }

    /// One `write_all` of the whole line (a single `write` unless the kernel writes
    /// short); on a file, a failed write is rolled back to the previous length.
    fn write_line(&mut self, line: &[u8]) -> Result<(), AuditError> {
        match &mut self.sink {
            Sink::Stdout(out) => {
                let mut out = out.lock();
                // The only newline is the last byte, so stdout's line buffer passes the
                // whole line to a single write.
                out.write_all(line)
                    .and_then(|()| out.flush())
                    .map_err(|source| AuditError::Write {
                        path: "stdout".to_owned(),
                        source: source.into(),
                    })
            }
            Sink::File { path, file } => {
                let before = file.metadata().map(|m| m.len());
                file.write_all(line).map_err(|source| {
                    if let Ok(len) = before {
                        // Best effort: if this fails too, the next append re-reads the
                        // tail and terminates the partial line instead.
                        let _ = file.set_len(len);
                    }
                    AuditError::Write {
                        path: path.display().to_string(),
                        source: source.into(),
                    }
                })
            }
        }
    }
}

/// Opens (or creates) `path` for appending and returns it with the hash the next line
/// must carry as `prev`: the hash of the file's last line, or `fallback` when the file is
/// new or empty. A torn last line is terminated first.
fn attach(path: &Path, fsync: bool, fallback: &str) -> Result<(File, String), AuditError> {
    let name = || path.display().to_string();
    let (mut file, created) = open_append(path)?;
    if created && fsync {
        sync_parent(path)?;
    }
    let tail = scan_tail(&file).map_err(|source| AuditError::Read {
        path: name(),
        source: source.into(),
    })?;
    let Some(tail) = tail else {
        return Ok((file, fallback.to_owned()));
    };
    if tail.torn {
        tracing::warn!(
            path = %path.display(),
            "audit log ends in a line without a newline (an interrupted write); terminating \
             it and continuing the chain from it, audit verify will report it if it is not \
             a complete record"
        );
        file.write_all(b"\n").map_err(|source| AuditError::Write {
            path: name(),
            source: source.into(),
        })?;
        if fsync {
            file.sync_data().map_err(|source| AuditError::Sync {
                path: name(),
                source: source.into(),
            })?;
        }
    } else if tail.valid == Some(false) {
        tracing::warn!(
            path = %path.display(),
            "the last line of the audit log is not a valid record; continuing the chain from \
             it, audit verify will report it"
        );
    }
    Ok((file, tail.hash))
}

/// Opens `path` for reading and appending, creating it with mode 0640 (less if the umask
/// says so) when missing. Returns whether the file was created.
fn open_append(path: &Path) -> Result<(File, bool), AuditError> {
    let mut create = OpenOptions::new();
    create.read(true).append(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut create, 0o640);
    let result = match create.open(path) {
        Ok(file) => Ok((file, true)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map(|f| (f, false)),
        Err(e) => Err(e),
    };
    result.map_err(|source| AuditError::Open {
        path: path.display().to_string(),
        source: source.into(),
    })
}

/// Fsyncs the directory holding `path`, so that a newly created file's entry is durable.
fn sync_parent(path: &Path) -> Result<(), AuditError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| AuditError::Sync {
            path: dir.display().to_string(),
            source: source.into(),
        })
}

/// What the end of an existing file looks like.
#[derive(Debug)]
struct Tail {
    /// Hash of the last line's bytes (without its newline).
    hash: String,
    /// The file does not end with a newline.
    torn: bool,
    /// Whether the last line parses as a record (`None`: too long to check).
    valid: Option<bool>,
}

/// Finds and hashes the last line of `file` without reading more than that line (plus
/// one chunk). `None` for an empty file.
fn scan_tail(file: &File) -> io::Result<Option<Tail>> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut last = [0u8; 1];
    read_at(file, &mut last, len - 1)?;
    let torn = last[0] != b'\n';
    let end = if torn { len } else { len - 1 };

    // Backwards to the newline before the last line.
    let mut buf = vec![0u8; TAIL_CHUNK];
    let mut start = 0;
    let mut pos = end;
    while pos > 0 {
        let n = chunk_len(pos);
        pos -= n as u64;
        read_at(file, &mut buf[..n], pos)?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            start = pos + i as u64 + 1;
            break;
        }
    }

    // Forwards over the last line, hashing it (and keeping it, if small enough to parse).
    let line_len = end - start;
    let keep = usize::try_from(line_len).is_ok_and(|l| l <= MAX_LINE_BYTES);
    let mut kept = Vec::new();
    let mut hasher = Sha256::new();
    let mut pos = start;
    while pos < end {
        let n = chunk_len(end - pos);
        read_at(file, &mut buf[..n], pos)?;
        hasher.update(&buf[..n]);
        if keep {
            kept.extend_from_slice(&buf[..n]);
        }
        pos += n as u64;
    }
    Ok(Some(Tail {
        hash: hex::encode(hasher.finalize()),
        torn,
        valid: keep.then(|| parse_line(&kept).is_ok()),
    }))
}

/// `min(remaining, TAIL_CHUNK)` as a buffer length.
fn chunk_len(remaining: u64) -> usize {
    usize::try_from(remaining).map_or(TAIL_CHUNK, |r| r.min(TAIL_CHUNK))
}

/// Reads exactly `buf.len()` bytes at `offset`, leaving the append position alone.
#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

/// Reads exactly `buf.len()` bytes at `offset`.
#[cfg(not(unix))]
fn read_at(mut file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{AuditRecord, parse_line};
    use crate::clock::FixedClock;
    use crate::decision::{Action, Outcome};
    use std::sync::Arc;

    fn clock() -> SharedClock {
        Arc::new(FixedClock(
            chrono::DateTime::parse_from_rfc3339("2026-11-27T12:00:00.123Z")
                .expect("valid")
                .with_timezone(&chrono::Utc),
        ))
    }

    fn outcome(message: &str) -> OutcomeRecord {
        OutcomeRecord {
            decision_id: "d".to_owned(),
            endpoint_id: "e".to_owned(),
            action: Action::Reject,
            outcome: Outcome::Failed,
            status_after: None,
            http_status: Some(400),
            error_code: Some("EndPoint.0001".to_owned()),
            error_message: Some(message.to_owned()),
            attempts: 3,
        }
    }

    fn lines(path: &Path) -> Vec<Vec<u8>> {
        let data = std::fs::read(path).expect("readable");
        assert_eq!(data.last(), Some(&b'\n'));
        data[..data.len() - 1]
            .split(|&b| b == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    }

    #[test]
    fn tail_of_an_empty_file_is_none() {
        let f = tempfile::tempfile().expect("tempfile");
        assert!(scan_tail(&f).expect("scan").is_none());
    }

    #[test]
    fn tail_finds_the_last_line_across_chunk_boundaries() {
        // Last lines shorter than, equal to and several times longer than a chunk, after
        // lines that are longer than a chunk too.
        for last_len in [
            0,
            1,
            TAIL_CHUNK - 1,
            TAIL_CHUNK,
            TAIL_CHUNK + 1,
            3 * TAIL_CHUNK + 7,
        ] {
            for torn in [false, true] {
                let mut f = tempfile::tempfile().expect("tempfile");
                let first = vec![b'a'; 2 * TAIL_CHUNK + 3];
                let last = vec![b'b'; last_len];
                f.write_all(&first).expect("write");
                f.write_all(b"\n").expect("write");
                f.write_all(&last).expect("write");
                if !torn {
                    f.write_all(b"\n").expect("write");
                }
                let tail = scan_tail(&f).expect("scan").expect("not empty");
                // Nothing after the first line's newline: that line is the last one.
                let expected = if torn && last_len == 0 { &first } else { &last };
                assert_eq!(tail.hash, line_hash(expected), "len {last_len} torn {torn}");
                assert_eq!(tail.torn, torn && last_len > 0, "len {last_len}");
                assert_eq!(tail.valid, Some(false));
            }
        }
    }

    #[test]
    fn tail_of_a_single_line_without_newline() {
        let mut f = tempfile::tempfile().expect("tempfile");
        f.write_all(b"xyz").expect("write");
        let tail = scan_tail(&f).expect("scan").expect("not empty");
        assert!(tail.torn);
        assert_eq!(tail.hash, line_hash(b"xyz"));
    }

    #[test]
    fn chain_links_each_line_to_the_previous_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut w = AuditWriter::open(AuditPath::File(path.clone()), false, clock()).expect("open");
        assert_eq!(w.last_hash(), GENESIS_HASH);
        assert_eq!(w.path(), Some(path.as_path()));
        for i in 0..3 {
            w.append_outcome(&outcome(&format!("try {i}")))
                .expect("append");
        }
        w.sync().expect("sync");
        let lines = lines(&path);
        assert_eq!(lines.len(), 3);
        let mut prev = GENESIS_HASH.to_owned();
        for line in &lines {
            let parsed = parse_line(line).expect("valid");
            assert_eq!(parsed.prev, prev);
            assert_eq!(parsed.ts, "2026-11-27T12:00:00.123Z");
            assert!(matches!(parsed.record, AuditRecord::Outcome(_)));
            prev = line_hash(line);
        }
        assert_eq!(w.last_hash(), prev);
    }

    #[test]
    fn torn_tail_is_terminated_and_chained_over_not_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, b"{\"ts\":\"2026-").expect("write");
        let mut w = AuditWriter::open(AuditPath::File(path.clone()), true, clock()).expect("open");
        assert_eq!(w.last_hash(), line_hash(b"{\"ts\":\"2026-"));
        w.append_outcome(&outcome("after")).expect("append");
        w.sync().expect("sync");
        let lines = lines(&path);
        assert_eq!(lines[0], b"{\"ts\":\"2026-");
        assert_eq!(
            parse_line(&lines[1]).expect("valid").prev,
            line_hash(&lines[0])
        );
    }

    #[test]
    fn complete_record_missing_only_its_newline_is_kept_intact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut w = AuditWriter::open(AuditPath::File(path.clone()), false, clock()).expect("open");
        w.append_outcome(&outcome("one")).expect("append");
        drop(w);
        let mut data = std::fs::read(&path).expect("read");
        data.pop();
        std::fs::write(&path, &data).expect("write");
        let mut w = AuditWriter::open(AuditPath::File(path.clone()), false, clock()).expect("open");
        w.append_outcome(&outcome("two")).expect("append");
        let mut out = Vec::new();
        let report = crate::audit::verify_files(&[path], &mut out).expect("verify");
        assert!(report.is_ok(), "{}", String::from_utf8_lossy(&out));
        assert_eq!(report.records, 2);
    }

    #[test]
    fn failed_write_is_an_error_and_makes_the_log_unready() {
        // Writes to /dev/full fail with ENOSPC.
        let path = PathBuf::from("/dev/full");
        if !path.exists() {
            return;
        }
        let mut w = AuditWriter::open(AuditPath::File(path), true, clock()).expect("open");
        w.check_writable().expect("writable before any failure");
        let err = w.append_outcome(&outcome("x")).expect_err("disk full");
        assert!(err.to_string().contains("/dev/full"), "{err}");
        let text = error_chain(&err);
        assert!(text.contains("(os error 28, ENOSPC)"), "{text}");
        assert_eq!(
            w.last_hash(),
            GENESIS_HASH,
            "a failed line does not advance the chain"
        );
        let unready = w.check_writable().expect_err("unready after a failure");
        assert!(unready.to_string().contains("/dev/full"), "{unready}");
        assert!(unready.to_string().contains("ENOSPC"), "{unready}");
        // The next attempt reopens and fails again rather than pretending.
        assert!(w.append_outcome(&outcome("y")).is_err());
    }

    #[test]
    fn a_sync_begun_before_a_failed_write_does_not_clear_it() {
        let path = PathBuf::from("/dev/full");
        if !path.exists() {
            return;
        }
        let mut w = AuditWriter::open(AuditPath::File(path), true, clock()).expect("open");
        let pending = w.begin_sync().expect("begin").expect("fsync is on");
        let epoch = pending.epoch();
        w.append_outcome(&outcome("x")).expect_err("disk full");
        // The earlier sync succeeding says nothing about the write that failed after it.
        w.sync_done(epoch, &Ok(()));
        assert!(w.check_writable().is_err(), "still unready");
        // A sync begun after the failure does clear a sync failure.
        let later = w.begin_sync().expect("begin").expect("fsync is on").epoch();
        w.sync_done(later, &Ok(()));
        w.check_writable()
            .expect("a later successful sync clears it");
    }

    #[test]
    fn stdout_target_has_no_path_and_starts_at_zeros() {
        let mut w = AuditWriter::open(AuditPath::Stdout, true, clock()).expect("open");
        assert_eq!(w.path(), None);
        assert_eq!(w.last_hash(), GENESIS_HASH);
        w.reopen().expect("no-op");
        w.sync().expect("flush");
        w.check_writable().expect("writable");
    }
}
