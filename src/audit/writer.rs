//! The appending side of the audit log: the one writer of a file, one `write` per line,
//! the hash chain and its record count, group fsync, and following the configured path
//! (README "Audit log").
//!
//! # One writer
//! While it has a file open the writer holds an exclusive `flock` on it. Opening a file
//! another process holds is [`AuditError::Locked`], so a second daemon (or a `run --once`
//! beside the service) stops before it decides anything. Across a reopen the new file is
//! locked before the old one is released.
//!
//! # Records only at the configured path
//! [`AuditWriter::ensure_open`], called before each batch of records, compares the device
//! and inode the path names with the open file's (one `stat`): a deleted, replaced or
//! rotated file is noticed and the path is opened again, the chain (and count) continuing
//! from the last line this writer wrote when the file at the path is new or empty. When
//! the path cannot be opened (a directory in its place, a missing parent, no space, no
//! file descriptors, ...) the writer is *not open*: it holds no file, every append fails
//! with that OS error, [`AuditWriter::check_writable`] reports it, and the next
//! `ensure_open` tries again. It never goes on writing into a file the path no longer
//! names. [`AuditWriter::open`] itself ends in that state for any such error, so the
//! daemon can stay up and unready; only a lock conflict is an error of `open`.
//!
//! # Continuing an existing file
//! Opening a path that already holds lines continues the chain from its last line: the
//! tail is found by reading backwards from the end in fixed-size chunks, and the record
//! count by reading backwards to the last checkpoint (every line is read only when there
//! is no checkpoint).
//!
//! Damage at the end of the file is never repaired by deleting anything, because the
//! audit log is evidence and only `audit verify` should judge it:
//! - A *torn* last line (no trailing newline, e.g. a crash in the middle of a write) is
//!   terminated with a newline and the chain continues from the hash of its bytes. If the
//!   bytes happen to be a complete record, nothing is lost and the file still verifies;
//!   otherwise `audit verify` reports that line as a torn line.
//! - A last line that is not a valid record is kept, and the chain continues from its
//!   hash, exactly as for a good line, so the chain never forks silently; `audit verify`
//!   reports it.
//!
//! Both cases are logged as warnings naming the path.
//!
//! # Failed writes
//! When a write fails part-way (disk full), the writer truncates the file back to its
//! length before that write: the caller was told the record was not written, and its
//! partial bytes are not a record. If even that fails, the next append first terminates
//! the partial bytes with a newline and continues the chain from them (as for a torn
//! line), so no record is ever glued onto half a line.

use super::record::{
    CheckpointRecord, DecisionRecord, GENESIS_HASH, MAX_LINE_BYTES, OutcomeRecord, line_hash,
    render, timestamp,
};
use super::tail::{count_chain, read_at, scan_tail};
use super::{AuditError, OsError, SigningKey, error_chain};
use crate::clock::SharedClock;
use crate::config::AuditPath;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// Lines in the chain so far: the next checkpoint's `records`.
    records: u64,
    /// Lines were written since the last successful fsync.
    unsynced: bool,
    /// The last write or fsync failed and none has succeeded since.
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
    File { path: PathBuf, state: FileState },
}

#[derive(Debug)]
enum FileState {
    /// The file the path named when it was opened, locked.
    Open(OpenFile),
    /// No file: the error of the last attempt to open the path.
    NotOpen(AuditError),
}

impl FileState {
    /// The open file, or the error that keeps it closed.
    fn open(&mut self) -> Result<&mut OpenFile, AuditError> {
        match self {
            FileState::Open(open) => Ok(open),
            FileState::NotOpen(e) => Err(e.clone()),
        }
    }
}

/// A failed write or flush of stdout.
fn stdout_error(source: io::Error) -> AuditError {
    AuditError::Write {
        path: "stdout".to_owned(),
        source: source.into(),
    }
}

#[derive(Debug)]
struct OpenFile {
    file: File,
    /// Device and inode, to tell whether the path still names this file.
    id: FileId,
    /// A failed write left bytes after this offset that could not be truncated away.
    partial_from: Option<u64>,
}

impl Drop for OpenFile {
    /// Releases the lock as soon as the writer lets go of the file. Closing the handle
    /// alone would not, while a duplicate of it lives on: a pending sync, or a child
    /// process forked by another thread that has not reached `exec` yet.
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

type FileId = (u64, u64);

/// A file opened, locked and inspected by [`attach`].
struct Attached {
    open: OpenFile,
    last_hash: String,
    records: u64,
}

impl AuditWriter {
    /// Opens the audit log. An existing file is continued from its last line (see the
    /// module docs for a torn or invalid last line) and its record count; a new file
    /// starts a chain with 64 zeros. With `fsync`, the directory of a newly created file
    /// is synced too, so the file itself survives a crash.
    ///
    /// Only [`AuditError::Locked`] (another process writes the file) is an error: when the
    /// path cannot be opened for any other reason, the writer is returned *not open* (see
    /// [`AuditWriter::is_open`]) and tries again at each [`AuditWriter::ensure_open`].
    pub fn open(target: AuditPath, fsync: bool, clock: SharedClock) -> Result<Self, AuditError> {
        let path = match target {
            AuditPath::Stdout => {
                return Ok(Self::with_sink(Sink::Stdout(io::stdout()), fsync, clock));
            }
            AuditPath::File(path) => path,
        };
        let (state, last_hash, records) = match attach(&path, fsync, None) {
            Ok(a) => (FileState::Open(a.open), a.last_hash, a.records),
            Err(e @ AuditError::Locked { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!(
                    path = %path.display(),
                    error = %error_chain(&e),
                    "the audit log cannot be opened; no records can be written until it can \
                     (tried again before every batch)"
                );
                (FileState::NotOpen(e), GENESIS_HASH.to_owned(), 0)
            }
        };
        let mut w = Self::with_sink(Sink::File { path, state }, fsync, clock);
        w.last_hash = last_hash;
        w.records = records;
        Ok(w)
    }

    fn with_sink(sink: Sink, fsync: bool, clock: SharedClock) -> Self {
        Self {
            sink,
            fsync,
            clock,
            last_hash: GENESIS_HASH.to_owned(),
            records: 0,
            unsynced: false,
            failed: None,
            failures: 0,
        }
    }

    /// Makes sure records go to the file the path names now; call before each batch of
    /// records. One `stat` when nothing changed. When the path names another file (or
    /// none), or the writer is not open, the path is opened again ([`Self::reopen`]).
    /// `Err` when the writer is not open afterwards: no record can be written, so no
    /// action may be sent. A no-op for stdout.
    pub fn ensure_open(&mut self) -> Result<(), AuditError> {
        let Sink::File { path, state } = &self.sink else {
            return Ok(());
        };
        if let FileState::Open(open) = state {
            match file_id(path) {
                Ok(id) if id == open.id => return Ok(()),
                Ok(_) => tracing::warn!(
                    path = %path.display(),
                    "the audit log path names another file than the one open (replaced or \
                     rotated); opening it, the chain continues"
                ),
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %OsError::from(e),
                    "the audit log path no longer names the open file (deleted?); opening \
                     it again, the chain continues"
                ),
            }
        }
        self.reopen_path()
    }

    /// Reopens the path (SIGHUP, after logrotate moved the file away). If the path still
    /// names the open file, nothing changes. Otherwise the new file is opened and locked,
    /// then the old one is released: if the new file holds lines, the chain continues
    /// from its last line; if it is new or empty, from the last line this writer wrote,
    /// so `audit verify old new` checks across the rotation. When the path cannot be
    /// opened the writer is not open (it never writes on into the old file) and
    /// [`Self::ensure_open`] tries again. A no-op for stdout.
    pub fn reopen(&mut self) -> Result<(), AuditError> {
        self.ensure_open()
    }

    /// Opens the path anew, replacing the open file (or the not-open state).
    fn reopen_path(&mut self) -> Result<(), AuditError> {
        let continued = (self.last_hash.clone(), self.records);
        let Sink::File { path, state } = &mut self.sink else {
            return Ok(());
        };
        let result = attach(path, self.fsync, Some(continued));
        let (new_state, outcome) = match result {
            Ok(a) => {
                if a.last_hash != self.last_hash && self.last_hash != GENESIS_HASH {
                    tracing::warn!(
                        path = %path.display(),
                        "the audit log at the path ends in a line this writer did not write \
                         (another file was put there); continuing the chain from its last line"
                    );
                }
                let st = FileState::Open(a.open);
                self.last_hash = a.last_hash;
                self.records = a.records;
                (st, Ok(()))
            }
            Err(e) => {
                // Said once per change, not at every retry.
                let shown = error_chain(&e);
                let same = matches!(state, FileState::NotOpen(prev) if error_chain(prev) == shown);
                if !same {
                    tracing::warn!(
                        path = %path.display(),
                        error = %shown,
                        "the audit log cannot be opened; no records can be written until it can"
                    );
                }
                (FileState::NotOpen(e.clone()), Err(e))
            }
        };
        let old = std::mem::replace(state, new_state);
        if let FileState::Open(old) = old {
            // Lines appended to the old file but not yet synced are made durable before
            // it is let go (a later sync would only reach the new file).
            if self.fsync && self.unsynced {
                let shown = path.display().to_string();
                if let Err(source) = old.file.sync_data() {
                    let e = AuditError::Sync {
                        path: shown,
                        source: source.into(),
                    };
                    self.failed = Some(error_chain(&e));
                    self.failures += 1;
                }
            }
            self.unsynced = false;
            // The new file (if any) is locked already; dropping the old one releases it.
            drop(old);
        }
        if outcome.is_ok() {
            tracing::info!(path = %path.display(), "audit log open");
        }
        outcome
    }

    /// Appends a decision record (one write of the line and its newline).
    pub fn append_decision(&mut self, rec: &DecisionRecord) -> Result<(), AuditError> {
        self.append_with(|ts, prev, _| render(ts, rec, prev))
    }

    /// Appends an outcome record (one write of the line and its newline).
    pub fn append_outcome(&mut self, rec: &OutcomeRecord) -> Result<(), AuditError> {
        self.append_with(|ts, prev, _| render(ts, rec, prev))
    }

    /// Appends a checkpoint record signed with `key`: `records` is [`Self::records`],
    /// `head` the hash of the previous line (64 zeros on a first line). Like any other
    /// line it is durable after the next [`Self::sync`] (or `begin_sync`/`sync_done`), so
    /// call one of them after it as after a batch of decisions.
    pub fn append_checkpoint(&mut self, key: &SigningKey) -> Result<(), AuditError> {
        self.append_with(|ts, prev, records| {
            let rec = CheckpointRecord {
                records,
                head: prev.to_owned(),
                key_id: key.key_id().to_owned(),
                signature: key.sign_checkpoint(records, prev, ts),
            };
            render(ts, &rec, prev)
        })
    }

    /// Makes every line appended so far durable: `fdatasync` when the writer was opened
    /// with `fsync = true` and lines were written since the last sync; otherwise nothing
    /// (stdout is only flushed).
    pub fn sync(&mut self) -> Result<(), AuditError> {
        let result = match &mut self.sink {
            Sink::Stdout(out) => out.flush().map_err(stdout_error),
            Sink::File { .. } if !self.fsync || !self.unsynced => Ok(()),
            Sink::File { path, state } => state.open().and_then(|open| {
                open.file.sync_data().map_err(|source| AuditError::Sync {
                    path: path.display().to_string(),
                    source: source.into(),
                })
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
    /// line appended before this call durable. `None` when fsync is off (or nothing can be
    /// synced: the writer is not open and holds no unsynced lines). It is handed out even
    /// when another sync is under way, because that one may have started before this
    /// caller's lines were written. Run [`PendingSync::wait`] off the async threads and
    /// report the result with [`AuditWriter::sync_done`]; other tasks keep appending
    /// meanwhile.
    pub fn begin_sync(&mut self) -> Result<Option<PendingSync>, AuditError> {
        match &mut self.sink {
            Sink::Stdout(_) => self.sync().map(|()| None),
            Sink::File { .. } if !self.fsync => Ok(None),
            Sink::File {
                state: FileState::NotOpen(e),
                ..
            } => {
                if self.unsynced {
                    Err(e.clone())
                } else {
                    Ok(None)
                }
            }
            Sink::File {
                path,
                state: FileState::Open(open),
            } => {
                let shown = path.display().to_string();
                let dup = open.file.try_clone().map_err(|source| AuditError::Sync {
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
    /// began: a write that failed meanwhile stays failed.
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

    /// The file path, or `None` for stdout.
    pub fn path(&self) -> Option<&Path> {
        match &self.sink {
            Sink::Stdout(_) => None,
            Sink::File { path, .. } => Some(path),
        }
    }

    /// Whether a file is open (always true for stdout). When false, every append fails
    /// and [`Self::ensure_open`] tries the path again.
    pub fn is_open(&self) -> bool {
        !matches!(
            self.sink,
            Sink::File {
                state: FileState::NotOpen(_),
                ..
            }
        )
    }

    /// Hex SHA-256 of the last line of the chain (64 zeros before the first line).
    pub fn last_hash(&self) -> &str {
        &self.last_hash
    }

    /// Lines in the chain so far (`vpcep_approver_audit_records_total`): at start, the
    /// last checkpoint's `records` plus 1 plus the lines after it, else every line of the
    /// file; then one more per line appended, across reopens and rotations.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// For `/readyz`: fails while the writer is not open, while the last write or fsync
    /// has failed (until an append or fsync succeeds again), or when the path no longer
    /// names the open file (until [`Self::ensure_open`] follows it). The reason carries
    /// the OS error and its name. One `stat` and one `fstat`.
    pub fn check_writable(&self) -> Result<(), AuditError> {
        let not_writable = |reason: String| AuditError::NotWritable {
            path: self.name(),
            reason,
        };
        if let Sink::File {
            state: FileState::NotOpen(e),
            ..
        } = &self.sink
        {
            return Err(not_writable(error_chain(e)));
        }
        if let Some(reason) = &self.failed {
            return Err(not_writable(reason.clone()));
        }
        if let Sink::File {
            path,
            state: FileState::Open(open),
        } = &self.sink
        {
            open.file.metadata().map_err(|source| {
                not_writable(error_chain(&AuditError::Write {
                    path: path.display().to_string(),
                    source: source.into(),
                }))
            })?;
            match file_id(path) {
                Ok(id) if id == open.id => {}
                Ok(_) => {
                    return Err(not_writable(
                        "the path names another file than the one open (replaced or \
                         rotated); it is opened before the next records"
                            .to_owned(),
                    ));
                }
                Err(e) => {
                    return Err(not_writable(format!(
                        "the path no longer names the open file: {}",
                        OsError::from(e)
                    )));
                }
            }
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

    /// Renders the next line with the current time, `prev` and the record count, writes
    /// it in one call and advances the chain only when the write succeeded.
    fn append_with(
        &mut self,
        render: impl FnOnce(&str, &str, u64) -> Result<Vec<u8>, serde_json::Error>,
    ) -> Result<(), AuditError> {
        if let Sink::File {
            state: FileState::NotOpen(e),
            ..
        } = &self.sink
        {
            return Err(e.clone());
        }
        self.terminate_partial().inspect_err(|e| self.fail(e))?;
        let ts = timestamp(&*self.clock);
        let mut line =
            render(&ts, &self.last_hash, self.records).map_err(|source| AuditError::Serialize {
                path: self.name(),
                source: Arc::new(source),
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
                self.records += 1;
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

    /// After a failed write whose partial bytes could not be truncated: tries the
    /// truncation again, and if it still fails, terminates those bytes with a newline and
    /// continues the chain from them, so the next line starts on a line of its own.
    fn terminate_partial(&mut self) -> Result<(), AuditError> {
        let Sink::File {
            path,
            state: FileState::Open(open),
        } = &mut self.sink
        else {
            return Ok(());
        };
        let Some(from) = open.partial_from else {
            return Ok(());
        };
        let name = || path.display().to_string();
        let write_err = |source: io::Error| AuditError::Write {
            path: name(),
            source: source.into(),
        };
        let len = open.file.metadata().map_err(write_err)?.len();
        if len == from || (len > from && open.file.set_len(from).is_ok()) {
            open.partial_from = None;
            return Ok(());
        }
        if len < from {
            // Someone truncated the file meanwhile: continue from what is there.
            let (hash, records) = inspect(
                &mut open.file,
                path,
                self.fsync,
                Some((&self.last_hash, self.records)),
            )?;
            self.last_hash = hash;
            self.records = records;
            open.partial_from = None;
            return Ok(());
        }
        let partial_len = usize::try_from(len - from).map_err(|_| {
            write_err(io::Error::new(
                io::ErrorKind::InvalidData,
                "partial line too long",
            ))
        })?;
        let mut partial = vec![0u8; partial_len];
        read_at(&open.file, &mut partial, from).map_err(|source| AuditError::Read {
            path: name(),
            source: source.into(),
        })?;
        if partial.last() == Some(&b'\n') {
            partial.pop();
        } else {
            open.file.write_all(b"\n").map_err(write_err)?;
        }
        tracing::warn!(
            path = %path.display(),
            "a failed write left part of a line that could not be removed; terminating it \
             and continuing the chain from it (audit verify reports it as a torn line)"
        );
        self.last_hash = line_hash(&partial);
        self.records += 1;
        self.unsynced = true;
        open.partial_from = None;
        Ok(())
    }

    /// One `write_all` of the whole line (a single `write` unless the kernel writes
    /// short); on a file, a failed write is truncated back to the previous length.
    fn write_line(&mut self, line: &[u8]) -> Result<(), AuditError> {
        match &mut self.sink {
            Sink::Stdout(out) => {
                let mut out = out.lock();
                // The only newline is the last byte, so stdout's line buffer passes the
                // whole line to a single write.
                out.write_all(line)
                    .and_then(|()| out.flush())
                    .map_err(stdout_error)
            }
            Sink::File { path, state } => {
                let open = state.open()?;
                let write_err = |source: io::Error| AuditError::Write {
                    path: path.display().to_string(),
                    source: source.into(),
                };
                // Without the length there would be no way back from a partial write.
                let before = open.file.metadata().map_err(write_err)?.len();
                open.file.write_all(line).map_err(|source| {
                    if open.file.set_len(before).is_err() {
                        open.partial_from = Some(before);
                    }
                    write_err(source)
                })
            }
        }
    }
}

/// Device and inode of the file `path` names (following symlinks, as `open` does).
#[cfg(unix)]
fn file_id(path: &Path) -> io::Result<FileId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| (m.dev(), m.ino()))
}

#[cfg(unix)]
fn handle_id(file: &File) -> io::Result<FileId> {
    use std::os::unix::fs::MetadataExt;
    file.metadata().map(|m| (m.dev(), m.ino()))
}

/// Opens (or creates) `path` for appending, locks it and returns it with the hash the
/// next line must carry as `prev` and the chain's record count so far. When the file is
/// new or empty, both come from `continued` (this writer's chain) or start a new chain.
/// A torn last line is terminated first.
fn attach(
    path: &Path,
    fsync: bool,
    continued: Option<(String, u64)>,
) -> Result<Attached, AuditError> {
    let name = || path.display().to_string();
    // The path may be renamed between `open` and `flock` (a rotation): the file locked
    // must be the one the path names, so check and try again a few times.
    let mut tries = 0;
    let (mut open, created) = loop {
        tries += 1;
        let (file, created) = open_append(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(AuditError::Locked { path: name() }),
            Err(TryLockError::Error(source)) => {
                return Err(AuditError::Lock {
                    path: name(),
                    source: source.into(),
                });
            }
        }
        // From here on dropping it (on any error) releases the lock.
        let mut open = OpenFile {
            file,
            id: (0, 0),
            partial_from: None,
        };
        open.id = handle_id(&open.file).map_err(|source| AuditError::Read {
            path: name(),
            source: source.into(),
        })?;
        match file_id(path) {
            Ok(now) if now == open.id => break (open, created),
            _ if tries >= 3 => break (open, created),
            _ => continue,
        }
    };
    if created && fsync {
        sync_parent(path)?;
    }
    let prev = continued.as_ref().map(|(h, n)| (h.as_str(), *n));
    let (last_hash, records) = inspect(&mut open.file, path, fsync, prev)?;
    Ok(Attached {
        open,
        last_hash,
        records,
    })
}

/// Reads the end of an open file: terminates a torn last line, and returns the hash of
/// the last line and the chain's record count. An empty file continues `continued` (or
/// starts a chain); a file ending in `continued`'s hash keeps its count; any other is
/// counted by [`count_chain`].
fn inspect(
    file: &mut File,
    path: &Path,
    fsync: bool,
    continued: Option<(&str, u64)>,
) -> Result<(String, u64), AuditError> {
    let name = || path.display().to_string();
    let tail = scan_tail(file).map_err(|source| AuditError::Read {
        path: name(),
        source: source.into(),
    })?;
    let Some(tail) = tail else {
        return Ok(continued.map_or((GENESIS_HASH.to_owned(), 0), |(h, n)| (h.to_owned(), n)));
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
    let records = match continued {
        Some((hash, n)) if hash == tail.hash => n,
        _ => count_chain(file).map_err(|source| AuditError::Read {
            path: name(),
            source: source.into(),
        })?,
    };
    Ok((tail.hash, records))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{AuditRecord, parse_line};
    use crate::audit::{VerifyOptions, verify_files, verify_files_with};
    use crate::clock::FixedClock;
    use crate::decision::{Action, Outcome};

    fn clock() -> SharedClock {
        Arc::new(FixedClock(
            chrono::DateTime::parse_from_rfc3339("2026-11-27T12:00:00.123Z")
                .expect("valid")
                .with_timezone(&chrono::Utc),
        ))
    }

    fn key() -> SigningKey {
        SigningKey::from_pem(
            crate::audit::key::TEST_KEY_PEM.as_bytes(),
            Path::new("test.pem"),
        )
        .expect("valid key")
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

    fn open(path: &Path, fsync: bool) -> AuditWriter {
        AuditWriter::open(AuditPath::File(path.to_owned()), fsync, clock()).expect("open")
    }

    /// A new directory and the path of a log in it, not yet created.
    fn temp_log() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        (dir, path)
    }

    fn append(w: &mut AuditWriter, message: &str) {
        w.append_outcome(&outcome(message)).expect("append");
    }

    /// A writer of `/dev/full`, where every write fails with ENOSPC; `None` where the
    /// device is missing.
    fn dev_full_writer() -> Option<AuditWriter> {
        let path = PathBuf::from("/dev/full");
        if !path.exists() {
            return None;
        }
        Some(AuditWriter::open(AuditPath::File(path), true, clock()).expect("open"))
    }

    /// The checkpoint on `line`, with the line's `prev` and `ts`.
    fn checkpoint_on(line: &[u8]) -> (CheckpointRecord, String, String) {
        let parsed = parse_line(line).expect("valid");
        let AuditRecord::Checkpoint(c) = parsed.record else {
            panic!("not a checkpoint");
        };
        (c, parsed.prev, parsed.ts)
    }

    fn verify_ok(paths: &[PathBuf]) -> crate::audit::VerifyReport {
        let mut out = Vec::new();
        let report = verify_files(paths, &mut out).expect("verify");
        assert!(report.is_ok(), "{}", String::from_utf8_lossy(&out));
        report
    }

    #[test]
    fn chain_links_each_line_to_the_previous_one() {
        let (_dir, path) = temp_log();
        let mut w = open(&path, false);
        assert_eq!(w.last_hash(), GENESIS_HASH);
        assert_eq!(w.path(), Some(path.as_path()));
        assert_eq!(w.records(), 0);
        for i in 0..3 {
            append(&mut w, &format!("try {i}"));
        }
        assert_eq!(w.records(), 3);
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
        let (_dir, path) = temp_log();
        std::fs::write(&path, b"{\"ts\":\"2026-").expect("write");
        let mut w = open(&path, true);
        assert_eq!(w.last_hash(), line_hash(b"{\"ts\":\"2026-"));
        assert_eq!(w.records(), 1, "the torn line is a line of the chain");
        append(&mut w, "after");
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
        let (_dir, path) = temp_log();
        let mut w = open(&path, false);
        append(&mut w, "one");
        drop(w);
        let mut data = std::fs::read(&path).expect("read");
        data.pop();
        std::fs::write(&path, &data).expect("write");
        let mut w = open(&path, false);
        append(&mut w, "two");
        assert_eq!(verify_ok(&[path]).records, 2);
    }

    #[test]
    fn failed_write_is_an_error_naming_the_os_error_and_makes_the_log_unready() {
        let Some(mut w) = dev_full_writer() else {
            return;
        };
        w.check_writable().expect("writable before any failure");
        let err = w.append_outcome(&outcome("x")).expect_err("disk full");
        let text = error_chain(&err);
        assert!(text.contains("/dev/full"), "{text}");
        assert!(text.contains("(os error 28, ENOSPC)"), "{text}");
        assert_eq!(
            w.last_hash(),
            GENESIS_HASH,
            "a failed line does not advance the chain"
        );
        assert_eq!(w.records(), 0);
        let unready = w.check_writable().expect_err("unready after a failure");
        assert!(unready.to_string().contains("/dev/full"), "{unready}");
        assert!(unready.to_string().contains("ENOSPC"), "{unready}");
        // The next attempt fails again rather than pretending.
        assert!(w.append_outcome(&outcome("y")).is_err());
    }

    #[test]
    fn a_sync_begun_before_a_failed_write_does_not_clear_it() {
        let Some(mut w) = dev_full_writer() else {
            return;
        };
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
    fn stdout_target_has_no_path_no_lock_and_starts_at_zeros() {
        let mut w = AuditWriter::open(AuditPath::Stdout, true, clock()).expect("open");
        assert_eq!(w.path(), None);
        assert_eq!(w.last_hash(), GENESIS_HASH);
        assert!(w.is_open());
        w.ensure_open().expect("no-op");
        w.reopen().expect("no-op");
        w.sync().expect("flush");
        w.check_writable().expect("writable");
        // A second writer on stdout is not a conflict.
        AuditWriter::open(AuditPath::Stdout, true, clock()).expect("open again");
    }

    #[test]
    fn a_second_writer_of_the_same_file_is_refused() {
        let (_dir, path) = temp_log();
        let mut first = open(&path, false);
        append(&mut first, "one");
        let err =
            AuditWriter::open(AuditPath::File(path.clone()), false, clock()).expect_err("locked");
        assert!(matches!(err, AuditError::Locked { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("another process"), "{text}");
        // The refused writer touched nothing; once the first is gone the file opens.
        drop(first);
        let w = open(&path, false);
        assert_eq!(w.records(), 1);
    }

    #[test]
    fn checkpoint_records_count_and_head_and_verify_with_the_key() {
        let (_dir, path) = temp_log();
        let k = key();
        let mut w = open(&path, true);
        // A checkpoint on a first line has 64 zeros as head.
        w.append_checkpoint(&k).expect("checkpoint");
        for i in 0..3 {
            append(&mut w, &format!("{i}"));
        }
        let head = w.last_hash().to_owned();
        w.append_checkpoint(&k).expect("checkpoint");
        w.sync().expect("sync");
        assert_eq!(w.records(), 5);
        let lines = lines(&path);
        let (c0, _, _) = checkpoint_on(&lines[0]);
        assert_eq!((c0.records, c0.head.as_str()), (0, GENESIS_HASH));
        let (c, last_prev, last_ts) = checkpoint_on(&lines[4]);
        assert_eq!(c.records, 4);
        assert_eq!(c.head, head);
        assert_eq!(last_prev, head);
        assert_eq!(c.key_id, k.key_id());
        assert!(
            k.verifying_key()
                .verify_checkpoint(4, &head, &last_ts, &c.signature)
        );
        let mut out = Vec::new();
        let opts = VerifyOptions {
            from: None,
            key: Some(k.verifying_key()),
        };
        let report =
            verify_files_with(std::slice::from_ref(&path), &opts, &mut out).expect("verify");
        assert!(report.is_ok(), "{}", String::from_utf8_lossy(&out));
        assert_eq!((report.signed, report.unsigned_tail), (2, Some(0)));
    }

    #[test]
    fn start_counts_from_the_last_checkpoint_or_every_line() {
        let (_dir, path) = temp_log();
        let k = key();
        let mut w = open(&path, false);
        for i in 0..5 {
            append(&mut w, &format!("{i}"));
        }
        drop(w);
        assert_eq!(open(&path, false).records(), 5, "no checkpoint: every line");
        let mut w = open(&path, false);
        w.append_checkpoint(&k).expect("checkpoint");
        append(&mut w, "after");
        drop(w);
        // Prove the count comes from the checkpoint: lines before it no longer matter.
        let mut data = lines(&path);
        data.drain(..3);
        let mut text = Vec::new();
        for l in data {
            text.extend_from_slice(&l);
            text.push(b'\n');
        }
        std::fs::write(&path, text).expect("write");
        let w = open(&path, false);
        assert_eq!(
            w.records(),
            5 + 1 + 1,
            "checkpoint records + itself + the line after"
        );
    }

    /// The writer's file with `partial` appended behind its back, marked as what a
    /// failed write left from `before` on.
    fn leave_partial(w: &mut AuditWriter, path: &Path, partial: &[u8]) {
        let before = std::fs::metadata(path).expect("stat").len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(partial))
            .expect("partial");
        let Sink::File {
            state: FileState::Open(open),
            ..
        } = &mut w.sink
        else {
            panic!("not open");
        };
        open.partial_from = Some(before);
    }

    /// A log with one record, then bytes a failed write left behind; also the hash of
    /// the record.
    fn one_record_then_partial() -> (tempfile::TempDir, PathBuf, AuditWriter, String) {
        let (dir, path) = temp_log();
        let mut w = open(&path, false);
        append(&mut w, "one");
        let one = w.last_hash().to_owned();
        leave_partial(&mut w, &path, b"{\"ts\":\"2026-11-27T12:0");
        (dir, path, w, one)
    }

    #[test]
    fn a_partial_write_is_removed_before_the_next_record() {
        let (_dir, path, mut w, _) = one_record_then_partial();
        append(&mut w, "two");
        assert_eq!(verify_ok(std::slice::from_ref(&path)).records, 2);
        assert_eq!(w.records(), 2);
    }

    #[test]
    fn partial_bytes_that_cannot_be_removed_are_terminated_and_chained_over() {
        let (_dir, path, mut w, _) = one_record_then_partial();
        // An append-only inode refuses the truncation but takes appends.
        let chattr = |flag: &str| {
            std::process::Command::new("chattr")
                .arg(flag)
                .arg(&path)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !chattr("+a") {
            eprintln!("skipped: chattr +a is not available here");
            return;
        }
        let appended = w.append_outcome(&outcome("two"));
        let records = w.records();
        chattr("-a");
        appended.expect("append");
        let lines = lines(&path);
        assert_eq!(lines.len(), 3, "the partial bytes are a line of their own");
        assert_eq!(records, 3);
        assert_eq!(
            parse_line(&lines[2]).expect("valid").prev,
            line_hash(&lines[1]),
            "the chain continues from the partial line"
        );
        let mut out = Vec::new();
        let report = verify_files(std::slice::from_ref(&path), &mut out).expect("verify");
        let out = String::from_utf8(out).expect("utf-8");
        assert_eq!(report.problems, 1, "{out}");
        assert!(out.contains(":2: torn line"), "{out}");
    }

    #[test]
    fn a_file_truncated_behind_the_writer_is_continued_from_what_is_there() {
        let (_dir, path, mut w, one) = one_record_then_partial();
        if let Sink::File {
            state: FileState::Open(open),
            ..
        } = &mut w.sink
        {
            open.partial_from = open.partial_from.map(|p| p + 1000);
        }
        append(&mut w, "two");
        let lines = lines(&path);
        assert_eq!(lines.len(), 3);
        assert_eq!(line_hash(&lines[0]), one);
        assert_eq!(
            parse_line(&lines[2]).expect("valid").prev,
            line_hash(&lines[1])
        );
        assert_eq!(w.records(), 3);
    }
}
