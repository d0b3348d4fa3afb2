//! `audit verify`: streams one or more files, a line at a time, checking that every line
//! is exactly a record and that each `prev` is the hash of the line before it, across the
//! files in the order given; with a public key, also every checkpoint's signature.
//!
//! Every problem is reported (`file:line: what is wrong`) and checking goes on after it.
//! After a bad line the chain re-synchronises on that line's own hash, so one bad line
//! gives one report, not one for every line after it:
//! - a line that is not a record (not JSON, a torn line, a changed field) is reported
//!   once; the `prev` of the line after it is not held against it;
//! - a `prev` that does not match is reported at that line, and the next line is checked
//!   against this line's hash;
//! - a line whose `prev` is 64 zeros after other lines is reported as a chain restart.
//!
//! What the chain can show: an edited line, deleted, inserted or reordered lines, a torn
//! line, garbage. What no hash chain can show on its own: lines cut off at a line boundary
//! at the very end, or a consistent rewrite of the whole file by someone with write
//! access. Signed checkpoints close the second gap up to the last checkpoint: with
//! `--key`, a checkpoint whose signature does not verify, or whose record count does not
//! match the lines before it, is a problem; the records after the last checkpoint are
//! reported as an unsigned tail (information, not a problem). For the end of the file,
//! compare the record count with `vpcep_approver_audit_records_total` or a last hash kept
//! elsewhere.

use super::AuditError;
use super::key::VerifyingKey;
use super::record::{AuditRecord, GENESIS_HASH, MAX_LINE_BYTES, line_hash, parse_line};
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// The file it is in.
    pub path: PathBuf,
    /// Its line number within that file, from 1.
    pub line: u64,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.reason)
    }
}

/// What to verify beyond the chain itself.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The `prev` the first line must carry instead of 64 zeros (`--from`): the hash of
    /// the last line of the files rotated away before the first one given.
    pub from: Option<String>,
    /// The public key every checkpoint's signature must verify with (`--key`).
    pub key: Option<VerifyingKey>,
}

/// The result of [`verify_files_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Lines read, good or bad.
    pub records: u64,
    /// Files read.
    pub files: usize,
    /// Problems reported.
    pub problems: u64,
    /// The first problem, if any.
    pub first_bad: Option<BadLine>,
    /// Hash of the last line read (64 zeros, or the `--from` hash, if there was none).
    pub last_hash: String,
    /// Checkpoint records seen.
    pub checkpoints: u64,
    /// Checkpoints whose signature verified with the key.
    pub signed: u64,
    /// With a key: the lines after the last checkpoint whose signature verified (all of
    /// them when none did).
    pub unsigned_tail: Option<u64>,
}

impl VerifyReport {
    /// True when there was no problem.
    pub fn is_ok(&self) -> bool {
        self.problems == 0
    }
}

/// [`verify_files_with`] without `--from` or a key.
pub fn verify_files(paths: &[PathBuf], out: &mut dyn Write) -> Result<VerifyReport, AuditError> {
    verify_files_with(paths, &VerifyOptions::default(), out)
}

/// Verifies `paths` as one chain, in the given order: the first line of the first file
/// must start a chain (64-zero `prev`, or `opts.from`), every later line must carry the
/// hash of the line before it, continuing from one file into the next. Writes one line to
/// `out` per problem (`<path>:<line>: <reason>`), with a key one line about the unsigned
/// tail, and last a summary: `ok: N records in M files, chain intact, last <hash>` (with
/// a key or checkpoints, more after it) or `N problems in N records`. Memory stays
/// bounded by the longest line ([`MAX_LINE_BYTES`]). I/O errors (a file that cannot be
/// opened or read, or `out`) are errors; problems in the files are in the report.
pub fn verify_files_with(
    paths: &[PathBuf],
    opts: &VerifyOptions,
    out: &mut dyn Write,
) -> Result<VerifyReport, AuditError> {
    let mut v = Verifier {
        opts,
        out,
        report: VerifyReport {
            records: 0,
            files: 0,
            problems: 0,
            first_bad: None,
            last_hash: opts.from.clone().unwrap_or_else(|| GENESIS_HASH.to_owned()),
            checkpoints: 0,
            signed: 0,
            unsigned_tail: None,
        },
        started: false,
        after_bad: false,
        previous: None,
        count: None,
        last_signed: None,
        since_signed: 0,
    };
    for path in paths {
        v.file(path)?;
    }
    v.finish()
}

/// The state carried from line to line and file to file.
struct Verifier<'a> {
    opts: &'a VerifyOptions,
    out: &'a mut dyn Write,
    report: VerifyReport,
    /// A line was read: `report.last_hash` is its hash, the next `prev`.
    started: bool,
    /// The previous line was not a record: a `prev` mismatch on this line belongs to
    /// that line's report.
    after_bad: bool,
    /// Where the previous line was, for messages.
    previous: Option<(PathBuf, u64)>,
    /// Lines of the chain before the current line, when known (from the start of a
    /// chain, or from a checkpoint; not after `--from` before the first checkpoint).
    count: Option<u64>,
    /// The last checkpoint whose signature verified.
    last_signed: Option<(PathBuf, u64)>,
    /// Lines after it.
    since_signed: u64,
}

/// One line as read: its bytes (without the newline) unless it was too long to keep.
enum NextLine {
    Eof,
    Line { terminated: bool },
    TooLong { hash: String },
}

impl Verifier<'_> {
    fn file(&mut self, path: &Path) -> Result<(), AuditError> {
        let name = || path.display().to_string();
        let file = File::open(path).map_err(|source| AuditError::Open {
            path: name(),
            source: source.into(),
        })?;
        self.report.files += 1;
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        loop {
            let read = next_line(&mut reader, &mut buf).map_err(|source| AuditError::Read {
                path: name(),
                source: source.into(),
            })?;
            let hash = match &read {
                NextLine::Eof => break,
                NextLine::Line { .. } => line_hash(&buf),
                NextLine::TooLong { hash } => hash.clone(),
            };
            line_no += 1;
            self.line(path, line_no, &buf, &read)?;
            self.report.records += 1;
            self.report.last_hash = hash;
            self.started = true;
            self.previous = Some((path.to_owned(), line_no));
        }
        Ok(())
    }

    /// Checks one line against the chain so far.
    fn line(
        &mut self,
        path: &Path,
        line_no: u64,
        buf: &[u8],
        read: &NextLine,
    ) -> Result<(), AuditError> {
        let mut signed_here = false;
        let bad = match read {
            NextLine::Eof => return Ok(()),
            NextLine::TooLong { .. } => {
                self.problem(
                    path,
                    line_no,
                    format!(
                        "line is longer than the {MAX_LINE_BYTES}-byte limit (not an audit record)"
                    ),
                )?;
                true
            }
            NextLine::Line { terminated: false } => {
                self.problem(
                    path,
                    line_no,
                    "torn last line: no trailing newline (an interrupted write or a truncated \
                     file)"
                        .to_owned(),
                )?;
                true
            }
            NextLine::Line { terminated: true } => match parse_line(buf) {
                Err(e) => {
                    self.problem(path, line_no, not_a_record(buf, &e.0))?;
                    true
                }
                Ok(parsed) => {
                    self.check_prev(path, line_no, &parsed.prev)?;
                    if let AuditRecord::Checkpoint(cp) = &parsed.record {
                        signed_here = self.checkpoint(path, line_no, cp, &parsed.ts)?;
                    }
                    false
                }
            },
        };
        self.after_bad = bad;
        // Saturating: a forged checkpoint may claim u64::MAX records.
        self.count = self.count.map(|c| c.saturating_add(1));
        if signed_here {
            self.last_signed = Some((path.to_owned(), line_no));
            self.since_signed = 0;
        } else {
            self.since_signed += 1;
        }
        Ok(())
    }

    /// The `prev` rules: the start of a chain, a continuation, a restart.
    fn check_prev(&mut self, path: &Path, line_no: u64, prev: &str) -> Result<(), AuditError> {
        if !self.started {
            let reason = match &self.opts.from {
                Some(from) if prev == from => None,
                Some(from) if prev == GENESIS_HASH => Some(format!(
                    "prev is 64 zeros (the start of a chain), not the --from hash {from}"
                )),
                Some(from) => Some(format!(
                    "prev is not the --from hash {from}: the files rotated away before this \
                     one did not end in the line that hash names"
                )),
                None if prev == GENESIS_HASH => None,
                None => Some(
                    "prev is not 64 zeros, so this is not the start of a chain: a rotated file \
                     must be verified together with the files before it, in order, or with \
                     --from and the hash of the last line before it"
                        .to_owned(),
                ),
            };
            self.count = (prev == GENESIS_HASH).then_some(0);
            if let Some(reason) = reason {
                self.problem(path, line_no, reason)?;
            }
            return Ok(());
        }
        if prev == self.report.last_hash {
            return Ok(());
        }
        if prev == GENESIS_HASH {
            self.count = Some(0);
            return self.problem(
                path,
                line_no,
                "prev is 64 zeros: a new chain starts here instead of continuing the previous \
                 line (lines or a file before it are missing, or the log was restarted)"
                    .to_owned(),
            );
        }
        if self.after_bad {
            // Already reported at the bad line; continue from this line's own hash.
            return Ok(());
        }
        let (pp, pl) = self
            .previous
            .clone()
            .unwrap_or_else(|| (path.to_owned(), line_no));
        self.problem(
            path,
            line_no,
            format!(
                "prev does not match the hash of the previous line ({}:{}): that line was \
                 changed, or lines were inserted, deleted or reordered, or a file is missing \
                 or out of order",
                pp.display(),
                pl
            ),
        )
    }

    /// A checkpoint: its count against the lines verified, and with a key its signature.
    /// Returns whether its signature verified.
    fn checkpoint(
        &mut self,
        path: &Path,
        line_no: u64,
        cp: &super::record::CheckpointRecord,
        ts: &str,
    ) -> Result<bool, AuditError> {
        self.report.checkpoints += 1;
        if let Some(counted) = self.count
            && counted != cp.records
        {
            let diff = if counted < cp.records {
                format!("{} missing: records were removed", cp.records - counted)
            } else {
                format!("{} too many: records were inserted", counted - cp.records)
            };
            self.problem(
                path,
                line_no,
                format!(
                    "checkpoint counts {} records before it, but the chain as verified has {} \
                     ({diff})",
                    cp.records, counted
                ),
            )?;
        }
        // From here on, count from what the checkpoint says.
        self.count = Some(cp.records);
        let Some(key) = &self.opts.key else {
            return Ok(false);
        };
        if cp.key_id != key.key_id() {
            self.problem(
                path,
                line_no,
                format!(
                    "checkpoint signed by another key (key_id {}, --key is {})",
                    cp.key_id,
                    key.key_id()
                ),
            )?;
            return Ok(false);
        }
        if !key.verify_checkpoint(cp.records, &cp.head, ts, &cp.signature) {
            self.problem(
                path,
                line_no,
                format!(
                    "checkpoint signature does not verify with key {}: the checkpoint was \
                     changed or forged, so the records before it cannot be trusted",
                    key.key_id()
                ),
            )?;
            return Ok(false);
        }
        self.report.signed += 1;
        Ok(true)
    }

    fn problem(&mut self, path: &Path, line: u64, reason: String) -> Result<(), AuditError> {
        let bad = BadLine {
            path: path.to_owned(),
            line,
            reason,
        };
        writeln!(self.out, "{bad}").map_err(report_err)?;
        self.report.problems += 1;
        if self.report.first_bad.is_none() {
            self.report.first_bad = Some(bad);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<VerifyReport, AuditError> {
        let r = &mut self.report;
        if let Some(key) = &self.opts.key {
            let tail = if self.last_signed.is_some() {
                self.since_signed
            } else {
                r.records
            };
            r.unsigned_tail = Some(tail);
            match &self.last_signed {
                // The file ends with a signed checkpoint: nothing to say.
                Some(_) if tail == 0 => Ok(()),
                Some((p, l)) => writeln!(
                    self.out,
                    "{}:{}: unsigned tail: the {tail} records after this checkpoint are not \
                     covered by a signature (information, not a problem)",
                    p.display(),
                    l
                ),
                None => writeln!(
                    self.out,
                    "unsigned tail: no checkpoint signed by key {}; all {tail} records are \
                     unsigned (information, not a problem)",
                    key.key_id()
                ),
            }
            .map_err(report_err)?;
        }
        let summary = if r.problems > 0 {
            format!("{} problems in {} records", r.problems, r.records)
        } else {
            let mut s = format!(
                "ok: {} records in {} files, chain intact, last {}",
                r.records, r.files, r.last_hash
            );
            match (&self.opts.key, r.unsigned_tail) {
                (Some(key), Some(tail)) => s.push_str(&format!(
                    ", {} checkpoints signed by {}, {tail} unsigned records at the end",
                    r.signed,
                    key.key_id()
                )),
                _ if r.checkpoints > 0 => s.push_str(&format!(
                    ", {} checkpoints (signatures not checked without --key)",
                    r.checkpoints
                )),
                _ => {}
            }
            s
        };
        writeln!(self.out, "{summary}").map_err(report_err)?;
        Ok(self.report)
    }
}

fn report_err(source: std::io::Error) -> AuditError {
    AuditError::Report {
        source: source.into(),
    }
}

/// Reads the next line into `buf` (without its newline). A line longer than
/// [`MAX_LINE_BYTES`] is not kept: it is hashed while it is skipped, so memory stays
/// bounded and the chain can still continue after it.
fn next_line(reader: &mut BufReader<File>, buf: &mut Vec<u8>) -> std::io::Result<NextLine> {
    buf.clear();
    // At most one byte over the limit, so a file without newlines cannot make this read
    // unbounded.
    let limit = u64::try_from(MAX_LINE_BYTES)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let n = (&mut *reader).take(limit).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(NextLine::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(NextLine::Line { terminated: true });
    }
    if buf.len() <= MAX_LINE_BYTES {
        return Ok(NextLine::Line { terminated: false });
    }
    let mut hasher = Sha256::new();
    hasher.update(&buf[..]);
    buf.clear();
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        match memchr::memchr(b'\n', chunk) {
            Some(i) => {
                hasher.update(&chunk[..i]);
                reader.consume(i + 1);
                break;
            }
            None => {
                let len = chunk.len();
                hasher.update(chunk);
                reader.consume(len);
            }
        }
    }
    Ok(NextLine::TooLong {
        hash: hex::encode(hasher.finalize()),
    })
}

/// The report for a terminated line that is not a record: a torn line (the start of a
/// record, cut off: what an interrupted write leaves, terminated when the writer
/// restarted), not JSON, or JSON that is not a record.
fn not_a_record(line: &[u8], reason: &str) -> String {
    if is_torn(line) {
        return "torn line: the start of a record, cut off (an interrupted write: a crash or \
                a full disk); the record it began was not written"
            .to_owned();
    }
    if reason.starts_with("not valid JSON") {
        reason.to_owned()
    } else {
        format!("not a record: {reason}")
    }
}

/// True when `line` is a prefix of a record line: it starts like one and the JSON (and
/// UTF-8) ends early rather than going wrong.
fn is_torn(line: &[u8]) -> bool {
    if !line.starts_with(b"{\"ts\":\"") {
        return false;
    }
    let text = match std::str::from_utf8(line) {
        Ok(_) => line,
        // Cut inside a multi-byte character.
        Err(e) if e.error_len().is_none() => &line[..e.valid_up_to()],
        Err(_) => return false,
    };
    serde_json::from_slice::<serde::de::IgnoredAny>(text).is_err_and(|e| e.is_eof())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_of_a_record_are_torn_and_other_damage_is_not() {
        let line =
            "{\"ts\":\"2026-11-27T12:00:00.123Z\",\"kind\":\"outcome\",\"error_message\":\"é中\"}";
        for cut in 8..line.len() {
            let prefix = &line.as_bytes()[..cut];
            assert!(is_torn(prefix), "{:?}", String::from_utf8_lossy(prefix));
        }
        assert!(!is_torn(line.as_bytes()), "a whole JSON object is not torn");
        assert!(!is_torn(b""));
        assert!(!is_torn(b"garbage"));
        assert!(!is_torn(b"{\"ts\":\"x\"}}"));
        assert!(!is_torn(b"{\"ts\":\"x\",]"));
    }
}
