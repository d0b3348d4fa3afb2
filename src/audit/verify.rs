//! `audit verify`: streams one or more files, a line at a time, checking that every line
//! is exactly a decision or outcome record and that each `prev` is the hash of the line
//! before it, across the files in the order given.
//!
//! What the chain can show: an edited line (it fails to parse, or the next line's `prev`
//! no longer matches), deleted, inserted or reordered lines, a torn last line, garbage.
//! What no hash chain can show on its own: lines cut off at a line boundary at the very
//! end, or an in-place rewrite of the last line. For those, keep the printed last hash
//! somewhere else and compare.

use super::AuditError;
use super::record::{GENESIS_HASH, MAX_LINE_BYTES, line_hash, parse_line};
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// The first line that failed verification.
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

/// The result of [`verify_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Valid records seen (all of them when the chain is intact).
    pub records: u64,
    /// Files read (up to and including the one with the bad line).
    pub files: usize,
    /// The first bad line, if any.
    pub first_bad: Option<BadLine>,
    /// Hash of the last valid line (64 zeros if there was none).
    pub last_hash: String,
}

impl VerifyReport {
    /// True when every line was valid and the chain unbroken.
    pub fn is_ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// Where the last valid line was, for messages about the one after it.
struct Previous<'a> {
    path: &'a Path,
    line: u64,
}

/// Verifies `paths` as one chain, in the given order: the first line of the first file
/// must start a chain (64-zero `prev`), every later line must carry the hash of the line
/// before it, continuing from one file into the next. Writes one line to `out`: the first
/// bad line as `<path>:<line>: <reason>`, or `ok: N records in M files, chain intact,
/// last <hash>`. I/O errors (a file that cannot be opened or read) are errors; a broken
/// chain is a report with `first_bad` set.
pub fn verify_files(paths: &[PathBuf], out: &mut dyn Write) -> Result<VerifyReport, AuditError> {
    let mut report = VerifyReport {
        records: 0,
        files: 0,
        first_bad: None,
        last_hash: GENESIS_HASH.to_owned(),
    };
    let mut previous: Option<Previous<'_>> = None;
    'files: for path in paths {
        let name = || path.display().to_string();
        let file = File::open(path).map_err(|source| AuditError::Open {
            path: name(),
            source: source.into(),
        })?;
        report.files += 1;
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        loop {
            buf.clear();
            // At most one byte over the limit, so a file without newlines cannot make
            // this read unbounded.
            let limit = u64::try_from(MAX_LINE_BYTES)
                .unwrap_or(u64::MAX)
                .saturating_add(1);
            let n = (&mut reader)
                .take(limit)
                .read_until(b'\n', &mut buf)
                .map_err(|source| AuditError::Read {
                    path: name(),
                    source: source.into(),
                })?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let terminated = buf.last() == Some(&b'\n');
            if terminated {
                buf.pop();
            }
            if let Err(reason) = check_line(&buf, terminated, &report.last_hash, &previous) {
                report.first_bad = Some(BadLine {
                    path: path.clone(),
                    line: line_no,
                    reason,
                });
                break 'files;
            }
            report.last_hash = line_hash(&buf);
            report.records += 1;
            previous = Some(Previous {
                path,
                line: line_no,
            });
        }
    }
    let summary = match &report.first_bad {
        Some(bad) => bad.to_string(),
        None => format!(
            "ok: {} records in {} files, chain intact, last {}",
            report.records, report.files, report.last_hash
        ),
    };
    writeln!(out, "{summary}").map_err(|source| AuditError::Report {
        source: source.into(),
    })?;
    Ok(report)
}

/// Checks one line (without its newline) against the expected `prev`.
fn check_line(
    line: &[u8],
    terminated: bool,
    expected_prev: &str,
    previous: &Option<Previous<'_>>,
) -> Result<(), String> {
    if line.len() > MAX_LINE_BYTES {
        return Err(format!(
            "line is longer than the {MAX_LINE_BYTES}-byte limit (not an audit record)"
        ));
    }
    if !terminated {
        return Err(
            "torn last line: no trailing newline (an interrupted write or a truncated file)"
                .to_owned(),
        );
    }
    let parsed = parse_line(line).map_err(|e| e.0)?;
    if parsed.prev == expected_prev {
        return Ok(());
    }
    Err(match previous {
        None => "prev is not 64 zeros, so this is not the start of a chain: a rotated file \
                 must be verified together with the files before it, in order"
            .to_owned(),
        Some(_) if parsed.prev == GENESIS_HASH => {
            "prev is 64 zeros: a new chain starts here instead of continuing the previous \
             line (lines or a file before it are missing, or the log was restarted)"
                .to_owned()
        }
        Some(p) => format!(
            "prev does not match the hash of the previous line ({}:{}): that line was \
             changed, or lines were inserted, deleted or reordered, or a file is missing \
             or out of order",
            p.path.display(),
            p.line
        ),
    })
}
