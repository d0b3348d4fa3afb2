//! The audit log through its public API on real files: hostile content, continuation
//! across reopen, restart and rotation, and `verify_files` finding each kind of tampering
//! at the right line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use vpcep_approver::audit::{
    AuditPath, AuditRecord, AuditWriter, DecisionRecord, GENESIS_HASH, OutcomeRecord, SigningKey,
    VerifyOptions, VerifyReport, VerifyingKey, error_chain, line_hash, new_decision_id, parse_line,
    verify_files, verify_files_with,
};
use vpcep_approver::clock::{Clock, SharedClock};
use vpcep_approver::decision::{Action, ConnectionFacts, Decision, Outcome, Verdict};
use vpcep_approver::engine::plan::decision_record;

/// A clock that moves one millisecond forward on every reading.
#[derive(Debug)]
struct StepClock(AtomicI64);

impl Clock for StepClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        let ms = self.0.fetch_add(1, Ordering::SeqCst);
        chrono::DateTime::from_timestamp_millis(1_795_780_800_000 + ms).expect("in range")
    }
}

fn clock() -> SharedClock {
    Arc::new(StepClock(AtomicI64::new(0)))
}

/// A permit of the shipped examples' connection with `description`, built the way the
/// engine builds its records.
fn decision(description: &str) -> DecisionRecord {
    let facts = ConnectionFacts::example("6e9dfd51d1124e8d8498dce894923a0d", description);
    let permit = Decision {
        verdict: Verdict::Permit,
        action: Action::Receive,
        policies: vec!["allow-partners".to_owned()],
        reasons: vec!["partner account with a change ticket".to_owned()],
        errors: vec![],
    };
    let policy_version = format!("sha256:{}", "ab".repeat(32));
    decision_record(
        new_decision_id(),
        facts.subject,
        &permit,
        &policy_version,
        false,
    )
}

/// The outcome of `d` after one attempt: `outcome`, with the status and HTTP status the
/// API answered (`None`: no answer).
fn outcome(d: &DecisionRecord, outcome: Outcome, answer: Option<(&str, u16)>) -> OutcomeRecord {
    OutcomeRecord {
        decision_id: d.decision_id.clone(),
        endpoint_id: d.subject.endpoint_id.clone(),
        action: d.action,
        outcome,
        status_after: answer.map(|(status, _)| status.to_owned()),
        http_status: answer.map(|(_, http)| http),
        error_code: None,
        error_message: None,
        attempts: 1,
    }
}

fn open(path: &Path, fsync: bool) -> AuditWriter {
    AuditWriter::open(AuditPath::File(path.to_owned()), fsync, clock()).expect("open audit log")
}

/// Writes `n` records (decisions and outcomes alternating) and syncs.
fn write_records(w: &mut AuditWriter, n: usize) {
    for i in 0..n {
        let d = decision(&format!("CHG-{i}"));
        if i % 2 == 0 {
            w.append_decision(&d).expect("append decision");
        } else {
            let applied = outcome(&d, Outcome::Applied, Some(("accepted", 200)));
            w.append_outcome(&applied).expect("append outcome");
        }
    }
    w.sync().expect("sync");
}

fn verify(paths: &[PathBuf]) -> (VerifyReport, String) {
    let mut out = Vec::new();
    let report = verify_files(paths, &mut out).expect("files readable");
    (report, String::from_utf8(out).expect("utf-8 output"))
}

fn verify_with(paths: &[PathBuf], opts: &VerifyOptions) -> (VerifyReport, String) {
    let mut out = Vec::new();
    let report = verify_files_with(paths, opts, &mut out).expect("files readable");
    (report, String::from_utf8(out).expect("utf-8 output"))
}

/// Asserts that `paths` verify as one intact chain of `records` records.
fn assert_intact(paths: &[PathBuf], records: u64) -> VerifyReport {
    let (report, out) = verify(paths);
    assert!(report.is_ok(), "{out}");
    assert_eq!(report.records, records, "{out}");
    report
}

/// Asserts that `text` contains `needle`, showing `text` when it does not.
fn assert_contains(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} not in: {text}");
}

fn lines(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).expect("read audit log");
    let mut lines: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    if lines.last().is_some_and(Vec::is_empty) {
        lines.pop();
    }
    lines
}

fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    let mut data = Vec::new();
    for l in lines {
        data.extend_from_slice(l);
        data.push(b'\n');
    }
    std::fs::write(path, data).expect("write audit log");
}

/// Replaces a line by what `edit` makes of its text.
fn edit_text(line: &mut Vec<u8>, edit: impl FnOnce(&str) -> String) {
    let text = String::from_utf8(line.clone()).expect("utf-8");
    *line = edit(&text).into_bytes();
}

/// Cuts the last `bytes` bytes off the file, as a crash in the middle of a write does.
fn cut_tail(path: &Path, bytes: u64) {
    let len = std::fs::metadata(path).expect("metadata").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len - bytes))
        .expect("truncate");
}

/// Asserts that `out` is one line per `(line, reason)` problem, each printed as
/// `<p>:<line>: <reason>…`, then `summary`.
fn assert_problems(out: &str, p: &str, problems: &[(u64, &str)], summary: &str) {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), problems.len() + 1, "{out}");
    for (got, (line, reason)) in lines.iter().zip(problems) {
        assert!(got.starts_with(&format!("{p}:{line}: {reason}")), "{out}");
    }
    assert_eq!(lines.last().copied(), Some(summary), "{out}");
}

/// Asserts that verification reports exactly one problem, at `line` of `path` with a
/// reason containing `needle`, printed as `<path>:<line>: <reason>`, and that the last
/// line is the problem count.
fn assert_bad(paths: &[PathBuf], path: &Path, line: u64, needle: &str) {
    assert_bad_n(paths, path, line, needle, 1);
}

/// As [`assert_bad`], for `problems` problems of which the first is the one given.
fn assert_bad_n(paths: &[PathBuf], path: &Path, line: u64, needle: &str, problems: u64) {
    let (report, out) = verify(paths);
    let bad = report
        .first_bad
        .as_ref()
        .expect("tampering must be detected");
    assert_eq!((bad.path.as_path(), bad.line), (path, line), "{out}");
    assert!(
        bad.reason.contains(needle),
        "reason {:?} lacks {needle:?}",
        bad.reason
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(format!("{}:{}: {}", path.display(), line, bad.reason).as_str())
    );
    assert_eq!(report.problems, problems, "{out}");
    assert_eq!(
        lines.last().copied(),
        Some(format!("{problems} problems in {} records", report.records).as_str()),
        "{out}"
    );
    assert_eq!(lines.len() as u64, problems + 1, "{out}");
}

/// A temporary directory with the audit log `audit.jsonl` in it.
struct Log {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl Log {
    fn new() -> Log {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        Log { dir, path }
    }

    /// A log of six valid records to tamper with.
    fn six_records() -> Log {
        let log = Log::new();
        log.written(false, 6);
        assert_eq!(log.lines().len(), 6);
        log
    }

    /// Six valid records whose lines `edit` then changes.
    fn tampered(edit: impl FnOnce(&mut Vec<Vec<u8>>)) -> Log {
        let log = Log::six_records();
        log.edit(edit);
        log
    }

    /// Another path in the directory.
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn open(&self, fsync: bool) -> AuditWriter {
        open(&self.path, fsync)
    }

    /// A writer on the log that has written `n` records.
    fn written(&self, fsync: bool, n: usize) -> AuditWriter {
        let mut w = self.open(fsync);
        write_records(&mut w, n);
        w
    }

    fn lines(&self) -> Vec<Vec<u8>> {
        lines(&self.path)
    }

    /// Rewrites the log's lines as `edit` changes them.
    fn edit(&self, edit: impl FnOnce(&mut Vec<Vec<u8>>)) {
        let mut lines = self.lines();
        edit(&mut lines);
        write_lines(&self.path, &lines);
    }

    /// Renames the log to `audit.jsonl.1`, as logrotate does, and reopens `w` at the
    /// log's path. Returns the rotated file's path.
    fn rotate(&self, w: &mut AuditWriter) -> PathBuf {
        let rotated = self.file("audit.jsonl.1");
        std::fs::rename(&self.path, &rotated).expect("rotate");
        w.reopen().expect("reopen after rotation");
        rotated
    }

    /// Asserts that `w` carries the chain on from `last`, and that with `more` records
    /// written after it the log verifies as `total` records.
    fn assert_carries_on(&self, w: &mut AuditWriter, last: &str, more: usize, total: u64) {
        assert_eq!(w.last_hash(), last, "the chain goes on from the last line");
        write_records(w, more);
        self.assert_intact(total);
    }

    fn paths(&self) -> &[PathBuf] {
        std::slice::from_ref(&self.path)
    }

    fn verify(&self) -> (VerifyReport, String) {
        verify(self.paths())
    }

    /// Asserts that the log on its own is an intact chain of `records` records.
    fn assert_intact(&self, records: u64) -> VerifyReport {
        assert_intact(self.paths(), records)
    }

    /// [`assert_bad`] for the log on its own.
    fn assert_bad(&self, line: u64, needle: &str) {
        assert_bad(self.paths(), &self.path, line, needle);
    }
}

#[test]
fn hostile_descriptions_round_trip_and_verify() {
    let log = Log::new();
    let mut hostile: Vec<String> = [
        "plain",
        "",
        "new\nline",
        "\r\n\r\n",
        "\"},{\"kind\":\"outcome\",\"prev\":\"0000\"}\n{\"ts\":\"",
        "\\\\\\\"",
        "\u{0}\u{1}\u{8}\u{c}\u{1b}[2J\u{7f}",
        "\u{2028}\u{2029}\u{85}\u{feff}\u{fffd}\u{ffff}\u{10ffff}",
        "\u{202e}txt.exe",
        "🦀 e\u{301} 中文 عربي",
        "\\ud800 not a surrogate, just text",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    hostile.push("x".repeat(1024 * 1024));
    hostile.push("\n\"\\\u{0}".repeat(300_000));
    let mut w = log.open(true);
    let mut written = Vec::new();
    for h in &hostile {
        let d = DecisionRecord {
            reasons: vec![h.clone()],
            errors: vec![h.clone()],
            ..decision(h)
        };
        w.append_decision(&d).expect("append");
        let o = OutcomeRecord {
            error_message: Some(h.clone()),
            ..outcome(&d, Outcome::Applied, None)
        };
        w.append_outcome(&o).expect("append");
        written.push(AuditRecord::Decision(d));
        written.push(AuditRecord::Outcome(o));
    }
    w.sync().expect("sync");

    let lines = log.lines();
    assert_eq!(
        lines.len(),
        written.len(),
        "no content may add or break a line"
    );
    for (line, expected) in lines.iter().zip(&written) {
        assert_eq!(&parse_line(line).expect("valid record").record, expected);
    }
    let report = log.assert_intact(written.len() as u64);
    assert_eq!(report.last_hash, w.last_hash());
}

#[test]
fn outcome_nulls_are_written_as_json_null() {
    let log = Log::new();
    let mut w = log.open(false);
    let failed = outcome(&decision("x"), Outcome::Failed, None);
    w.append_outcome(&failed).expect("append");
    let text = std::fs::read_to_string(&log.path).expect("read");
    assert!(
        text.starts_with("{\"ts\":\"2026-11-27T12:00:00.000Z\",\"kind\":\"outcome\","),
        "{text}"
    );
    assert_contains(
        &text,
        "\"outcome\":\"failed\",\"status_after\":null,\"http_status\":null,\"error_code\":null,\
         \"error_message\":null,\"attempts\":1,\"prev\":\"0000000000000000000000000000000000000000000000000000000000000000\"}\n",
    );
}

#[test]
fn summary_names_records_files_and_last_hash() {
    let log = Log::new();
    let w = log.written(false, 5);
    let (report, out) = log.verify();
    assert_eq!(
        out,
        format!(
            "ok: 5 records in 1 files, chain intact, last {}\n",
            w.last_hash()
        )
    );
    assert_eq!((report.records, report.files), (5, 1));
}

#[test]
fn empty_file_verifies_with_zero_records() {
    let log = Log::new();
    std::fs::write(&log.path, b"").expect("write");
    assert_eq!(log.assert_intact(0).last_hash, GENESIS_HASH);
}

#[test]
fn chain_continues_across_reopen() {
    let log = Log::new();
    let mut w = log.written(true, 3);
    let before = w.last_hash().to_owned();
    w.reopen().expect("reopen");
    log.assert_carries_on(&mut w, &before, 3, 6);
}

#[test]
fn chain_continues_across_process_restarts() {
    let log = Log::new();
    let mut last = GENESIS_HASH.to_owned();
    for _ in 0..3 {
        let mut w = log.open(false);
        assert_eq!(
            w.last_hash(),
            last,
            "a restart continues from the last line"
        );
        write_records(&mut w, 4);
        last = w.last_hash().to_owned();
    }
    assert_eq!(line_hash(log.lines().last().expect("lines")), last);
    log.assert_intact(12);
}

#[test]
fn restart_continues_after_a_multi_megabyte_last_line() {
    let log = Log::new();
    let mut w = log.written(false, 2);
    w.append_decision(&decision(&"\u{1}y".repeat(700_000)))
        .expect("append");
    let last = w.last_hash().to_owned();
    drop(w);
    log.assert_carries_on(&mut log.open(false), &last, 1, 4);
}

#[test]
fn rotation_continues_the_chain_into_the_new_file() {
    let log = Log::new();
    let mut w = log.written(true, 3);
    let rotated = log.rotate(&mut w);
    let path = log.path.clone();
    assert!(path.exists(), "reopen creates the new file");
    write_records(&mut w, 2);

    let report = assert_intact(&[rotated.clone(), path.clone()], 5);
    assert_eq!(report.files, 2);
    assert_eq!(report.last_hash, w.last_hash());

    // On its own the new file does not start a chain.
    log.assert_bad(1, "verified together with the files before it");
    // In the wrong order the first file does not start a chain and the second restarts.
    assert_bad_n(
        &[path.clone(), rotated.clone()],
        &path,
        1,
        "verified together",
        2,
    );
    // Verifying the first file twice breaks the chain at the start of the second copy.
    assert_bad(
        &[rotated.clone(), rotated.clone()],
        &rotated,
        1,
        "new chain starts here",
    );
}

#[test]
fn reopen_of_an_untouched_path_keeps_one_file() {
    let log = Log::new();
    let mut w = log.written(false, 2);
    w.reopen().expect("reopen");
    w.reopen().expect("reopen again");
    write_records(&mut w, 2);
    log.assert_intact(4);
}

#[test]
fn edited_byte_that_keeps_valid_json_is_found_at_the_next_line() {
    let log = Log::tampered(|l| edit_text(&mut l[2], |t| t.replace("CHG-2", "CHG-3")));
    log.assert_bad(4, &format!("previous line ({}:3)", log.path.display()));
}

#[test]
fn edited_byte_that_breaks_the_record_is_found_at_that_line() {
    Log::tampered(|l| l[3][0] = b'[').assert_bad(4, "not valid JSON");
}

#[test]
fn edited_verdict_in_the_last_line_is_found_when_it_is_no_longer_a_record() {
    let log = Log::tampered(|l| {
        edit_text(&mut l[5], |t| t.replace("\"applied\"", "\"applied \""));
    });
    log.assert_bad(6, "unknown variant");
}

#[test]
fn deleted_line_is_found() {
    Log::tampered(|l| drop(l.remove(2))).assert_bad(3, "previous line");
}

#[test]
fn deleted_first_line_is_found() {
    Log::tampered(|l| drop(l.remove(0))).assert_bad(1, "not the start of a chain");
}

#[test]
fn inserted_copy_of_a_line_is_found() {
    Log::tampered(|l| l.insert(2, l[1].clone())).assert_bad(3, "previous line");
}

#[test]
fn swapped_lines_are_found() {
    let log = Log::tampered(|l| l.swap(2, 3));
    // Lines 3 and 4 each follow the wrong line, and line 5 follows line 3 instead of 4.
    assert_bad_n(log.paths(), &log.path, 3, "reordered", 3);
}

#[test]
fn truncation_inside_the_last_line_is_found() {
    let log = Log::six_records();
    cut_tail(&log.path, 20);
    log.assert_bad(6, "torn last line");
}

#[test]
fn removed_final_newline_is_found() {
    let log = Log::six_records();
    cut_tail(&log.path, 1);
    log.assert_bad(6, "no trailing newline");
}

#[test]
fn appended_garbage_is_found() {
    Log::tampered(|l| l.push(b"garbage".to_vec())).assert_bad(7, "not valid JSON");
}

#[test]
fn appended_blank_line_is_found() {
    Log::tampered(|l| l.push(Vec::new())).assert_bad(7, "not valid JSON");
}

#[test]
fn appended_forged_record_with_a_wrong_prev_is_found() {
    Log::tampered(|l| l.push(l[1].clone())).assert_bad(7, "previous line");
}

#[test]
fn added_field_is_found() {
    let log = Log::tampered(|l| {
        edit_text(&mut l[0], |t| {
            t.replacen("{", "{\"approved_by\":\"mallory\",", 1)
        });
    });
    log.assert_bad(1, "unknown field `approved_by`");
}

#[test]
fn restart_after_a_torn_write_keeps_every_byte_and_verify_reports_it() {
    let log = Log::six_records();
    cut_tail(&log.path, 30);

    let mut w = log.open(true);
    write_records(&mut w, 2);
    let lines = log.lines();
    assert_eq!(lines.len(), 8, "the torn line is kept and terminated");
    // The new lines chain onto the torn one, so the chain does not fork ...
    assert_eq!(
        parse_line(&lines[6]).expect("valid").prev,
        line_hash(&lines[5])
    );
    // ... and verify points at the damage, as a torn line, not as tampering.
    log.assert_bad(6, "torn line");
}

#[test]
fn restart_after_a_garbage_last_line_chains_over_it() {
    let log = Log::tampered(|l| l.push(b"not a record".to_vec()));
    let mut w = log.open(false);
    assert_eq!(w.last_hash(), line_hash(b"not a record"));
    write_records(&mut w, 1);
    log.assert_bad(7, "not valid JSON");
}

/// The permission bits of the file at `path`.
#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// An empty file at `path` with permission bits `mode`.
#[cfg(unix)]
fn empty_file_with_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, b"").expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[cfg(unix)]
#[test]
fn new_file_is_created_with_mode_0640() {
    let log = Log::new();
    let _w = log.open(true);
    let mode = mode(&log.path);
    // The process umask can only take bits away.
    let umask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
        });
    match umask {
        Some(umask) => assert_eq!(mode, 0o640 & !umask, "mode {mode:o} umask {umask:o}"),
        None => assert_eq!(mode & !0o640, 0, "mode {mode:o} wider than 0640"),
    }
}

#[cfg(unix)]
#[test]
fn existing_file_keeps_its_mode() {
    let log = Log::new();
    empty_file_with_mode(&log.path, 0o600);
    log.written(false, 1);
    assert_eq!(mode(&log.path), 0o600);
}

/// Asserts that `w` is not open for the OS error `errno` (number `code`): the readiness
/// check says so, an append fails saying so, and so does another try to open. Returns
/// what the readiness check and the append said.
fn assert_not_open(w: &mut AuditWriter, code: i32, errno: &str) -> (String, String) {
    assert!(!w.is_open());
    let unready = w.check_writable().expect_err("unready").to_string();
    assert_contains(&unready, errno);
    let err = w.append_decision(&decision("x")).expect_err("not open");
    let append = error_chain(&err);
    assert_contains(&append, &format!("(os error {code}, {errno})"));
    assert!(w.ensure_open().is_err(), "tried again, still {errno}");
    (unready, append)
}

#[test]
fn unopenable_path_leaves_the_writer_not_open_naming_the_path_and_os_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("missing-dir").join("audit.jsonl");
    // A bad path is not an error of open.
    let mut w = open(&path, true);
    let (unready, append) = assert_not_open(&mut w, 2, "ENOENT");
    assert_contains(&unready, &path.display().to_string());
    assert!(
        append.starts_with(&format!("failed to open audit log {}", path.display())),
        "{append}"
    );

    // A directory is not a file either.
    let w = open(dir.path(), false);
    let err = w.check_writable().expect_err("a directory").to_string();
    assert_contains(&err, &dir.path().display().to_string());
    assert_contains(&err, "EISDIR");
}

#[cfg(unix)]
#[test]
fn read_only_file_is_an_error_naming_the_path() {
    let log = Log::new();
    empty_file_with_mode(&log.path, 0o400);
    if std::fs::OpenOptions::new()
        .append(true)
        .open(&log.path)
        .is_ok()
    {
        return; // running as root: permissions do not apply
    }
    let w = log.open(false);
    let err = w.check_writable().expect_err("read-only file").to_string();
    assert_contains(&err, &log.path.display().to_string());
    assert_contains(&err, "EACCES");
}

#[test]
fn full_disk_fails_the_append_and_the_readiness_check() {
    let path = PathBuf::from("/dev/full");
    if !path.exists() {
        return;
    }
    let mut w = open(&path, true);
    let err = w.append_decision(&decision("x")).expect_err("ENOSPC");
    assert_contains(&err.to_string(), "/dev/full");
    assert_contains(&error_chain(&err), "ENOSPC");
    let unready = w.check_writable().expect_err("unready");
    assert_contains(&unready.to_string(), "ENOSPC");
}

#[test]
fn fsync_batches_are_durable_and_verify() {
    let log = Log::new();
    let mut w = log.open(true);
    w.check_writable().expect("writable");
    for batch in 0..3 {
        for i in 0..4 {
            w.append_decision(&decision(&format!("batch {batch} item {i}")))
                .expect("append");
        }
        w.sync().expect("fsync");
        // Every appended line is in the file before the sync returns.
        assert_eq!(log.lines().len(), (batch + 1) * 4);
    }
    w.sync().expect("sync with nothing new");
    log.assert_intact(12);
}

#[test]
fn verify_of_a_missing_file_is_an_error_naming_it() {
    let log = Log::new();
    let err = verify_files(log.paths(), &mut Vec::new()).expect_err("missing");
    assert_contains(&err.to_string(), &log.path.display().to_string());
}

#[test]
fn timestamps_come_from_the_injected_clock() {
    let log = Log::new();
    log.written(false, 3);
    let ts: Vec<String> = log
        .lines()
        .iter()
        .map(|l| parse_line(l).expect("valid").ts)
        .collect();
    assert_eq!(
        ts,
        [
            "2026-11-27T12:00:00.000Z",
            "2026-11-27T12:00:00.001Z",
            "2026-11-27T12:00:00.002Z"
        ]
    );
}

// ---------------------------------------------------------------------------------------
// One writer: the lock, across processes.

/// Whether a command-line tool is on the PATH (a test that needs it says so and skips).
fn have(tool: &str) -> bool {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("skipped: `{tool}` is not installed");
    }
    found
}

/// Another process holding an exclusive `flock` on a file (util-linux `flock(1)`), until
/// dropped: `flock` runs a shell that waits for its input to close, and holds the lock
/// itself (`--close`: the shell does not inherit it), so closing the input ends both.
struct LockHolder(std::process::Child);

impl LockHolder {
    fn spawn(path: &Path) -> LockHolder {
        use std::io::BufRead;
        let mut child = std::process::Command::new("flock")
            .args(["--exclusive", "--nonblock", "--close"])
            .arg(path)
            .args(["sh", "-c", "echo locked; read _"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("flock runs");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("flock reports");
        assert_eq!(line.trim(), "locked", "flock took the lock");
        LockHolder(child)
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// Whether another process finds the file locked (`flock --nonblock` exits 1).
fn locked_for_others(path: &Path) -> bool {
    let status = std::process::Command::new("flock")
        .args(["--exclusive", "--nonblock"])
        .arg(path)
        .arg("true")
        .status()
        .expect("flock runs");
    match status.code() {
        Some(0) => false,
        Some(1) => true,
        other => panic!("flock exited with {other:?}"),
    }
}

/// Asserts that `said` refuses the log as locked by another process, naming it, and that
/// the file still holds `before` (`untouched`: what that means here).
fn assert_locked_out(said: &str, log: &Log, before: &[u8], untouched: &str) {
    assert_contains(said, &log.path.display().to_string());
    assert_contains(said, "locked by another process");
    assert_eq!(
        std::fs::read(&log.path).expect("read"),
        before,
        "{untouched}"
    );
}

#[test]
fn a_file_locked_by_another_process_is_refused_without_being_touched() {
    if !have("flock") {
        return;
    }
    let log = Log::new();
    drop(log.written(false, 2));
    // A torn last line: a writer that went ahead would terminate it.
    cut_tail(&log.path, 10);
    let data = std::fs::read(&log.path).expect("read");

    let holder = LockHolder::spawn(&log.path);
    let err = AuditWriter::open(AuditPath::File(log.path.clone()), true, clock())
        .expect_err("another process writes the file");
    assert!(
        matches!(err, vpcep_approver::audit::AuditError::Locked { .. }),
        "{err:?}"
    );
    assert_locked_out(&err.to_string(), &log, &data, "nothing touched");

    drop(holder);
    let w = log.open(false);
    assert_eq!(w.records(), 2);
    assert!(std::fs::read(&log.path).expect("read").ends_with(b"\n"));
}

#[test]
fn the_lock_is_held_while_open_and_follows_the_file_across_a_rotation() {
    if !have("flock") {
        return;
    }
    let log = Log::new();
    let mut w = log.written(false, 1);
    assert!(locked_for_others(&log.path), "held while open");
    let rotated = log.rotate(&mut w);
    assert!(locked_for_others(&log.path), "the new file is locked");
    assert!(!locked_for_others(&rotated), "the old one released");
    drop(w);
    assert!(!locked_for_others(&log.path), "released when closed");
}

#[test]
fn run_once_beside_a_writer_exits_1_naming_the_locked_path_before_deciding() {
    let log = Log::new();
    let w = log.written(true, 2);
    let before = std::fs::read(&log.path).expect("read");
    let cfg = crate::cli::write_config(
        log.dir.path(),
        &crate::cli::repo("policies"),
        &format!(
            "vpcep_endpoint = \"http://127.0.0.1:9\"\niam_endpoint = \"http://127.0.0.1:9\"\n\
             [audit]\npath = {:?}\n",
            log.path.display().to_string()
        ),
    );
    let o = crate::cli::run(
        &["-c", cfg.to_str().expect("utf-8"), "run", "--once"],
        &[("HUAWEICLOUD_SDK_AK", "ak"), ("HUAWEICLOUD_SDK_SK", "sk")],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_locked_out(&err, &log, &before, "not one line added");
    drop(w);
}

// ---------------------------------------------------------------------------------------
// Records only at the configured path.

#[test]
fn a_deleted_file_is_noticed_and_recreated_before_the_next_batch() {
    let log = Log::new();
    let (path, saved) = (log.path.clone(), log.file("saved.jsonl"));
    let mut w = log.written(true, 3);
    w.ensure_open().expect("nothing changed");
    std::fs::copy(&path, &saved).expect("save what will be deleted");
    std::fs::remove_file(&path).expect("rm");

    let err = w.check_writable().expect_err("the path names no file");
    assert_contains(&err.to_string(), "ENOENT");
    w.ensure_open().expect("recreated");
    assert!(path.exists());
    write_records(&mut w, 2);
    w.check_writable().expect("writable again");
    assert_eq!(log.lines().len(), 2, "the new records are in the new file");
    assert_eq!(w.records(), 5, "the count goes on");
    assert_intact(&[saved, path], 5);
}

#[test]
fn a_replaced_file_is_noticed_and_written_from_then_on() {
    let log = Log::new();
    let other = log.file("other.jsonl");
    let mut w = log.written(true, 3);
    let mut o = open(&other, false);
    write_records(&mut o, 2);
    drop(o);
    std::fs::rename(&other, &log.path).expect("replace");

    assert!(
        w.check_writable().is_err(),
        "replaced: not writable until followed"
    );
    w.ensure_open().expect("follows the path");
    write_records(&mut w, 1);
    assert_eq!(
        log.lines().len(),
        3,
        "the record went to the file at the path"
    );
    assert_eq!(w.records(), 3, "counted as the file at the path counts");
    log.assert_intact(3);
}

#[test]
fn a_directory_in_place_of_the_rotated_file_leaves_the_writer_not_open_until_it_goes() {
    let log = Log::new();
    let path = log.path.clone();
    let rotated = log.file("audit.jsonl.1");
    let mut w = log.written(true, 3);
    // logrotate gone wrong: `mv audit.jsonl audit.jsonl.1; mkdir audit.jsonl; kill -HUP`.
    std::fs::rename(&path, &rotated).expect("mv");
    std::fs::create_dir(&path).expect("mkdir");
    let err = w.reopen().expect_err("a directory at the path");
    assert_contains(&error_chain(&err), "EISDIR");
    assert_not_open(&mut w, 21, "EISDIR");
    assert_eq!(
        lines(&rotated).len(),
        3,
        "nothing written into the rotated file"
    );

    std::fs::remove_dir(&path).expect("rmdir");
    w.ensure_open().expect("the path works again");
    assert!(w.is_open());
    write_records(&mut w, 2);
    w.check_writable().expect("writable");
    assert_eq!(w.records(), 5);
    assert_intact(&[rotated, path], 5);
}

#[test]
fn a_path_that_cannot_be_opened_at_start_is_retried_by_ensure_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = dir.path().join("not-yet");
    let path = sub.join("audit.jsonl");
    let mut w = open(&path, true);
    assert!(!w.is_open());
    assert!(w.ensure_open().is_err());
    std::fs::create_dir(&sub).expect("mkdir");
    w.ensure_open().expect("opens now");
    write_records(&mut w, 2);
    assert_intact(std::slice::from_ref(&path), 2);
}

// ---------------------------------------------------------------------------------------
// Real OS failures in a child process: a full tmpfs (ENOSPC) and no free descriptors
// (EMFILE). The child is this test binary running one test under `unshare` or `prlimit`.

const CHILD_ENV: &str = "VPCEP_AUDIT_TEST_CHILD_DIR";

/// The directory the parent handed over, when this process is the child running `name`.
fn child_dir(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(CHILD_ENV)?;
    let me = std::thread::current().name().map(str::to_owned);
    (me.as_deref() == Some(&format!("audit::{name}"))).then(|| PathBuf::from(dir))
}

/// Runs test `name` of this binary in a child process behind `wrapper`, with `dir`.
fn run_child(wrapper: &[&str], name: &str, dir: &Path) -> std::process::Output {
    let exe = std::env::current_exe().expect("test binary");
    std::process::Command::new(wrapper[0])
        .args(&wrapper[1..])
        .arg(&exe)
        .args([
            &format!("audit::{name}"),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .output()
        .expect("child runs")
}

/// Asserts that the child behind `o` passed and ran its test, and passes on what it said.
fn assert_child_ok(o: &std::process::Output) {
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}{err}");
    let ok = out
        .find("child ok")
        .map(|at| out[at..].lines().next().unwrap_or_default());
    assert!(ok.is_some(), "the child ran the test: {out}{err}");
    eprintln!("{}", ok.unwrap_or_default());
}

#[test]
fn a_full_disk_rolls_back_the_partial_line_and_recovers_when_space_returns() {
    if !have("unshare") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8");
    let mount = format!("mount -t tmpfs -o size=64k tmpfs '{d}' && exec \"$@\"");
    let o = run_child(
        &["unshare", "-m", "sh", "-c", &mount, "sh"],
        "child_full_tmpfs",
        dir.path(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    if err.contains("mount:") || err.contains("unshare:") {
        eprintln!("skipped: cannot mount a tmpfs here: {err}");
        return;
    }
    assert_child_ok(&o);
}

#[test]
fn child_full_tmpfs() {
    let Some(dir) = child_dir("child_full_tmpfs") else {
        return;
    };
    let ballast = dir.join("ballast");
    std::fs::write(&ballast, vec![0u8; 16 * 1024]).expect("ballast");
    let path = dir.join("audit.jsonl");
    let mut w = open(&path, true);
    let mut written = 0u64;
    let err = loop {
        match w.append_decision(&decision(&"x".repeat(900))) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 10_000, "a 64 KiB tmpfs must fill up");
    };
    let text = error_chain(&err);
    assert_contains(&text, &path.display().to_string());
    assert_contains(&text, "(os error 28, ENOSPC)");
    let unready = w.check_writable().expect_err("unready");
    assert_contains(&unready.to_string(), "ENOSPC");
    // No half line: the failed write was rolled back.
    let data = std::fs::read(&path).expect("read");
    assert_eq!(data.last(), Some(&b'\n'));
    assert_eq!(lines(&path).len() as u64, written);
    assert_eq!(w.records(), written);

    std::fs::remove_file(&ballast).expect("free space");
    w.ensure_open().expect("same file");
    w.append_decision(&decision("after the disk was full"))
        .expect("space again");
    w.sync().expect("fsync");
    w.check_writable().expect("writable again");
    assert_intact(std::slice::from_ref(&path), written + 1);
    println!("child ok: {written} records before ENOSPC");
}

#[test]
fn no_free_file_descriptors_is_reported_as_emfile_and_recovers() {
    if !have("prlimit") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    assert_child_ok(&run_child(
        &["prlimit", "--nofile=64"],
        "child_no_descriptors",
        dir.path(),
    ));
}

#[test]
fn child_no_descriptors() {
    let Some(dir) = child_dir("child_no_descriptors") else {
        return;
    };
    let path = dir.join("audit.jsonl");
    let mut fillers = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => fillers.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(24), "{e}");
                break;
            }
        }
        assert!(fillers.len() < 100_000, "the limit is low");
    }
    // No descriptor is not an error of open.
    let mut w = open(&path, true);
    assert_not_open(&mut w, 24, "EMFILE");
    fillers.clear();
    w.ensure_open().expect("descriptors again");
    write_records(&mut w, 2);
    assert_intact(std::slice::from_ref(&path), 2);
    println!("child ok");
}

// ---------------------------------------------------------------------------------------
// audit verify: every break, --from, torn lines.

#[test]
fn every_break_is_reported_in_one_run_once_each() {
    let log = Log::new();
    log.written(false, 12);
    log.edit(|l| {
        // Line 3 no longer JSON.
        l[2][0] = b'[';
        // Line 5 edited but still a record: the break shows at line 6.
        edit_text(&mut l[4], |t| t.replace("CHG-4", "CHG-5"));
        // Line 9 deleted: the line after it (now line 9) does not follow line 8.
        l.remove(8);
    });
    // A torn last line: line 11 keeps its first 40 bytes and loses its newline.
    let last = log.lines()[10].len() as u64;
    cut_tail(&log.path, last + 1 - 40);

    let (report, out) = log.verify();
    assert_problems(
        &out,
        &log.path.display().to_string(),
        &[
            (3, "not valid JSON"),
            (6, "prev does not match"),
            (9, "prev does not match"),
            (11, "torn last line"),
        ],
        "4 problems in 11 records",
    );
    assert_eq!(report.problems, 4);
    assert_eq!(report.first_bad.expect("bad").line, 3);
}

#[test]
fn a_terminated_torn_line_is_reported_as_torn_and_the_chain_goes_on_from_it() {
    let log = Log::six_records();
    cut_tail(&log.path, 100);
    log.assert_bad(6, "torn last line");
    log.written(true, 3);
    // One report, and it says torn, not tampered.
    log.assert_bad(6, "torn line: the start of a record");
}

#[test]
fn a_chain_restart_in_the_middle_is_reported_once() {
    let log = Log::new();
    let (first, second) = (log.file("a.jsonl"), log.file("b.jsonl"));
    write_records(&mut open(&first, false), 3);
    write_records(&mut open(&second, false), 3);
    let mut both = lines(&first);
    both.extend(lines(&second));
    write_lines(&first, &both);
    assert_bad(
        std::slice::from_ref(&first),
        &first,
        4,
        "a new chain starts here",
    );
}

/// Verify options with `--from` only.
fn from(hash: &str) -> VerifyOptions {
    VerifyOptions {
        from: Some(hash.to_owned()),
        key: None,
    }
}

#[test]
fn a_rotated_file_verifies_alone_with_from() {
    let log = Log::new();
    let mut w = log.written(true, 3);
    let handover = w.last_hash().to_owned();
    let rotated = log.rotate(&mut w);
    write_records(&mut w, 2);
    // logrotate deleted the older file: the new one verifies on its own with --from.
    std::fs::remove_file(&rotated).expect("rm");
    let (report, out) = verify_with(log.paths(), &from(&handover));
    assert!(report.is_ok(), "{out}");
    assert!(
        out.starts_with("ok: 2 records in 1 files, chain intact"),
        "{out}"
    );
    // A --from that does not match is a problem, and so is a missing one.
    let (report, out) = verify_with(log.paths(), &from(&"ab".repeat(32)));
    assert_eq!(report.problems, 1, "{out}");
    assert_contains(&out, ":1: prev is not the --from hash");
    log.assert_bad(1, "--from");
}

#[test]
fn a_line_over_the_limit_is_reported_and_checking_goes_on() {
    let log = Log::six_records();
    let mut l = log.lines();
    let long = vec![b'x'; vpcep_approver::audit::MAX_LINE_BYTES + 10];
    // The line after it chains from it; the one after that is fine too.
    let (mut next, mut after) = (l[3].clone(), l[4].clone());
    edit_text(&mut next, |t| with_prev(t, &line_hash(&long)));
    edit_text(&mut after, |t| with_prev(t, &line_hash(&next)));
    l.truncate(3);
    l.extend([long, next, after]);
    write_lines(&log.path, &l);
    log.assert_bad(4, "longer than the");
}

#[test]
fn cli_verify_reports_every_problem_and_exits_1() {
    let log = Log::tampered(|l| {
        l[1] = b"garbage".to_vec();
        l.remove(4);
    });
    let p = log.path.to_str().expect("utf-8");
    let o = crate::cli::run(&["audit", "verify", p], &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_problems(
        &out,
        p,
        &[(2, "not valid JSON"), (5, "prev does not match")],
        "2 problems in 5 records",
    );
    // A bad --from is a usage error.
    let o = crate::cli::run(&["audit", "verify", "--from", "xyz", p], &[]);
    assert_eq!(o.status.code(), Some(2));
}

// ---------------------------------------------------------------------------------------
// Signed checkpoints.

/// An Ed25519 key pair made by openssl: (private PKCS#8 PEM, public SPKI PEM). `None`
/// (with a note) when openssl is not installed.
pub(crate) fn openssl_keys(dir: &Path, name: &str) -> Option<(PathBuf, PathBuf)> {
    if !have("openssl") {
        return None;
    }
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let ok = |args: &[&str]| {
        let o = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let (pr, pu) = (
        private.to_str().expect("utf-8"),
        public.to_str().expect("utf-8"),
    );
    ok(&["genpkey", "-algorithm", "ed25519", "-out", pr]);
    ok(&["pkey", "-in", pr, "-pubout", "-out", pu]);
    Some((private, public))
}

/// Whether openssl, not this crate, accepts a checkpoint record's signature over its
/// signed text (README "Signed checkpoints") with the public key `public`.
pub(crate) fn openssl_verifies(cp: &serde_json::Value, public: &Path, dir: &Path) -> bool {
    let field = |k: &str| match &cp[k] {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let text = format!(
        "vpcep-approver checkpoint v1\n{}\n{}\n{}\n",
        field("records"),
        field("head"),
        field("ts")
    );
    let (signed, sig) = (dir.join("signed.txt"), dir.join("sig.bin"));
    std::fs::write(&signed, text).expect("write");
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(field("signature"))
        .expect("base64");
    std::fs::write(&sig, bytes).expect("write");
    std::process::Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
        .arg(public)
        .arg("-rawin")
        .arg("-in")
        .arg(&signed)
        .arg("-sigfile")
        .arg(&sig)
        .output()
        .expect("openssl runs")
        .status
        .success()
}

fn verify_with_key(paths: &[PathBuf], public: &Path) -> (VerifyReport, String) {
    let opts = VerifyOptions {
        from: None,
        key: Some(VerifyingKey::from_file(public).expect("public key")),
    };
    verify_with(paths, &opts)
}

/// A log signed with a key pair made by openssl: 10 records, a checkpoint, 10 records, a
/// checkpoint, 3 records.
struct Signed {
    log: Log,
    key: SigningKey,
    public: PathBuf,
}

impl Signed {
    /// `None` (with a note) when openssl is not installed.
    fn new() -> Option<Signed> {
        let log = Log::new();
        let (private, public) = openssl_keys(log.dir.path(), "k")?;
        let key = SigningKey::from_file(&private).expect("openssl's key loads");
        let mut w = log.written(true, 10);
        w.append_checkpoint(&key).expect("checkpoint");
        write_records(&mut w, 10);
        w.append_checkpoint(&key).expect("checkpoint");
        write_records(&mut w, 3);
        assert_eq!(w.records(), 25);
        Some(Signed { log, key, public })
    }

    /// A writer that goes on with the log.
    fn reopened(&self) -> AuditWriter {
        let w = self.log.open(true);
        assert_eq!(w.records(), 25);
        w
    }

    /// Verifies the log alone with the public key.
    fn verify(&self) -> (VerifyReport, String) {
        verify_with_key(self.log.paths(), &self.public)
    }
}

#[test]
fn checkpoint_signatures_verify_with_openssl() {
    let Some(Signed { log, key, public }) = Signed::new() else {
        return;
    };
    let dir = log.dir.path();

    // key_id: the first 16 hex of SHA-256 over the raw public key, from openssl's DER.
    let der = std::process::Command::new("openssl")
        .args(["pkey", "-pubin", "-in"])
        .arg(&public)
        .args(["-outform", "DER"])
        .output()
        .expect("openssl runs")
        .stdout;
    let raw = &der[der.len() - 32..];
    assert_eq!(key.key_id(), &line_hash(raw)[..16]);

    let mut checked = 0;
    for line in log.lines() {
        let parsed = parse_line(&line).expect("valid");
        let AuditRecord::Checkpoint(cp) = parsed.record else {
            continue;
        };
        assert_eq!(cp.key_id, key.key_id());
        assert_eq!(cp.head, parsed.prev);
        let v: serde_json::Value = serde_json::from_slice(&line).expect("json");
        assert!(openssl_verifies(&v, &public, dir));
        // The check means something: another count does not verify.
        let mut other = v.clone();
        other["records"] = serde_json::json!(999);
        assert!(!openssl_verifies(&other, &public, dir));
        checked += 1;
    }
    assert_eq!(checked, 2);

    let (report, out) = verify_with_key(log.paths(), &public);
    assert!(report.is_ok(), "{out}");
    assert_eq!((report.signed, report.unsigned_tail), (2, Some(3)));
    let last = out.lines().last().expect("summary");
    assert!(
        last.starts_with("ok: 25 records in 1 files, chain intact"),
        "{out}"
    );
    assert_contains(
        &out,
        ":22: unsigned tail: the 3 records after this checkpoint",
    );
}

#[test]
fn a_rewritten_chain_passes_plain_verify_but_not_verify_with_the_key() {
    let Some(signed) = Signed::new() else {
        return;
    };
    let log = &signed.log;
    // An attacker with write access changes a verdict and recomputes every hash.
    log.edit(|l| {
        edit_text(&mut l[4], |t| {
            t.replace("CHG-4", "CHG-4 approved by mallory")
        });
        rechain(l);
    });

    let (report, out) = log.verify();
    assert!(report.is_ok(), "plain verify cannot tell: {out}");
    let (report, out) = signed.verify();
    assert!(!report.is_ok(), "{out}");
    let p = log.path.display();
    assert_contains(
        &out,
        &format!("{p}:11: checkpoint signature does not verify"),
    );
    assert_contains(
        &out,
        &format!("{p}:22: checkpoint signature does not verify"),
    );
    assert_eq!(
        out.lines().last(),
        Some("2 problems in 25 records"),
        "{out}"
    );

    // Through the binary: exit 1.
    let o = crate::cli::run(
        &[
            "audit",
            "verify",
            "--key",
            signed.public.to_str().expect("utf-8"),
            log.path.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
}

/// A record line's text with its `prev`, the last field, set to `prev`.
fn with_prev(text: &str, prev: &str) -> String {
    format!("{}{prev}\"}}", &text[..text.len() - 66])
}

/// Recomputes every `prev` (and a checkpoint's `head`) as someone rewriting the file would.
fn rechain(lines: &mut [Vec<u8>]) {
    let mut prev = GENESIS_HASH.to_owned();
    for line in lines.iter_mut() {
        edit_text(line, |t| {
            let mut text = with_prev(t, &prev);
            if let Some(at) = text.find("\"head\":\"") {
                let at = at + 8;
                text.replace_range(at..at + 64, &prev);
            }
            text
        });
        prev = line_hash(line);
    }
}

#[test]
fn removed_records_before_a_checkpoint_are_counted_against_it() {
    let Some(signed) = Signed::new() else {
        return;
    };
    let log = &signed.log;
    log.edit(|l| drop(l.drain(14..19)));
    let (report, out) = signed.verify();
    let p = log.path.display();
    assert_contains(&out, &format!("{p}:15: prev does not match"));
    assert_contains(
        &out,
        &format!(
            "{p}:17: checkpoint counts 21 records before it, but the chain as verified has 16 \
             (5 missing: records were removed)"
        ),
    );
    assert_eq!(report.problems, 2, "{out}");
    // Rewritten to hide the gap, the count still gives it away, and so does the signature.
    log.edit(|l| rechain(l));
    let (report, out) = log.verify();
    assert_eq!(report.problems, 1, "{out}");
    assert_contains(&out, "5 missing");
    let (report, out) = signed.verify();
    assert_eq!(report.problems, 2, "{out}");
    assert_contains(&out, ":17: checkpoint signature does not verify");
}

#[test]
fn a_rotated_signed_file_verifies_alone_with_from_and_the_key() {
    let Some(signed) = Signed::new() else {
        return;
    };
    let (key, path) = (&signed.key, signed.log.path.clone());
    let mut w = signed.reopened();
    let rotated = signed.log.rotate(&mut w);
    let from = w.last_hash().to_owned();
    write_records(&mut w, 4);
    w.append_checkpoint(key).expect("checkpoint");
    write_records(&mut w, 1);
    assert_eq!(w.records(), 31, "the count goes on across the rotation");
    drop(w);
    // A restart counts from the new file's checkpoint, without the rotated file.
    assert_eq!(open(&path, false).records(), 31);

    // The new file alone: --from for its first prev, the checkpoint's count anchors the
    // rest and its signature covers it.
    let opts = VerifyOptions {
        from: Some(from),
        key: Some(VerifyingKey::from_file(&signed.public).expect("public key")),
    };
    let (report, out) = verify_with(signed.log.paths(), &opts);
    assert!(report.is_ok(), "{out}");
    assert_eq!((report.signed, report.unsigned_tail), (1, Some(1)), "{out}");
    // Both files, oldest first.
    let (report, out) = verify_with_key(&[rotated, path], &signed.public);
    assert!(report.is_ok(), "{out}");
    assert_eq!((report.records, report.signed), (31, 3));
}

#[test]
fn a_checkpoint_signed_by_another_key_is_reported_with_its_key_id() {
    let Some(signed) = Signed::new() else {
        return;
    };
    let Some((_, other_public)) = openssl_keys(signed.log.dir.path(), "b") else {
        return;
    };
    let (report, out) = verify_with_key(signed.log.paths(), &other_public);
    assert_eq!(report.problems, 2, "{out}");
    assert_contains(
        &out,
        &format!(
            ":11: checkpoint signed by another key (key_id {}",
            signed.key.key_id()
        ),
    );
    assert_contains(&out, "unsigned tail: no checkpoint signed by key");
}

#[test]
fn a_restart_counts_on_from_the_last_checkpoint() {
    let Some(signed) = Signed::new() else {
        return;
    };
    let mut w = signed.reopened();
    w.append_checkpoint(&signed.key).expect("checkpoint");
    w.sync().expect("sync");
    let last = signed.log.lines().pop().expect("line");
    let AuditRecord::Checkpoint(cp) = parse_line(&last).expect("valid").record else {
        panic!("not a checkpoint");
    };
    assert_eq!(cp.records, 25);
    let (report, out) = signed.verify();
    assert!(report.is_ok(), "{out}");
    assert_eq!(report.unsigned_tail, Some(0));
}

#[test]
fn check_validates_the_signing_key_and_notes_an_unset_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((private, _)) = openssl_keys(dir.path(), "k") else {
        return;
    };
    let key = SigningKey::from_file(&private).expect("key");
    let policies = crate::cli::repo("policies");
    let check = |audit: &str| {
        let cfg = crate::cli::write_config(dir.path(), &policies, audit);
        let o = crate::cli::run(&["-c", cfg.to_str().expect("utf-8"), "check"], &[]);
        (
            o.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let key_file = |path: &Path| {
        format!(
            "[audit]\nsigning_key_file = {:?}\n",
            path.display().to_string()
        )
    };
    let (code, out) = check(&key_file(&private));
    assert_eq!(code, Some(0), "{out}");
    assert_contains(&out, &format!("ok, Ed25519, key id {}", key.key_id()));
    assert!(!out.contains("PRIVATE KEY"), "{out}");

    let (code, out) = check("[audit]\nsigning_key_file = \"${VPCEP_TEST_NO_SUCH_DIR}/k.pem\"\n");
    assert_eq!(code, Some(0), "{out}");
    assert_contains(&out, "VPCEP_TEST_NO_SUCH_DIR is not set");

    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a key").expect("write");
    let (code, out) = check(&key_file(&bad));
    assert_eq!(code, Some(78), "{out}");
    assert_contains(&out, &bad.display().to_string());
}

// ---------------------------------------------------------------------------------------
// Costs (run by hand: `cargo test --release --test it audit::costs -- --ignored --nocapture`).

/// Prints what opening a 1 GiB file, the per-batch path check, the readiness check and a
/// checkpoint cost.
#[test]
#[ignore = "writes a 1 GiB file; run by hand to measure"]
fn costs_of_open_path_check_and_checkpoints() {
    use std::io::Write as _;
    use std::time::Instant;
    let log = Log::new();
    let path = log.path.clone();
    let key = SigningKey::from_pem(
        b"-----BEGIN PRIVATE KEY-----\n\
          MC4CAQAwBQYDK2VwBCIEIOfuF5L+Ypp/P08hT96njXrA/AanlhM0mikUTCxzk/QS\n\
          -----END PRIVATE KEY-----\n",
        Path::new("bench.pem"),
    )
    .expect("key");
    // 1 GiB of decision-sized lines (their content does not matter for the count).
    let mut block = Vec::new();
    let line = {
        let one = log.file("one.jsonl");
        let mut w = open(&one, false);
        w.append_decision(&decision("CHG-1234 payments link"))
            .expect("append");
        lines(&one).remove(0)
    };
    while block.len() < 1 << 20 {
        block.extend_from_slice(&line);
        block.push(b'\n');
    }
    let per_block = block.iter().filter(|&&b| b == b'\n').count() as u64;
    let mut f = std::fs::File::create(&path).expect("create");
    let blocks = (1u64 << 30) / block.len() as u64;
    for _ in 0..blocks {
        f.write_all(&block).expect("write");
    }
    drop(f);
    let size = std::fs::metadata(&path).expect("stat").len();
    let drop_cache = |p: &Path| {
        // GNU dd: drop the file's pages from the page cache.
        let _ = std::process::Command::new("dd")
            .arg(format!("if={}", p.display()))
            .args(["iflag=nocache", "count=0", "status=none"])
            .status();
    };
    let time_open = |label: &str| {
        let t = Instant::now();
        let w = open(&path, false);
        let took = t.elapsed();
        println!(
            "open {label}: {:.3} s for {:.2} GiB, {} records",
            took.as_secs_f64(),
            size as f64 / f64::from(1u32 << 30),
            w.records()
        );
        w
    };
    let w = time_open("without a checkpoint, warm cache");
    assert_eq!(w.records(), blocks * per_block);
    drop(w);
    drop_cache(&path);
    drop(time_open("without a checkpoint, cold cache"));

    let mut w = open(&path, true);
    w.append_checkpoint(&key).expect("checkpoint");
    for _ in 0..10_000 {
        w.append_decision(&decision("after the checkpoint"))
            .expect("append");
    }
    w.sync().expect("sync");
    drop(w);
    drop_cache(&path);
    let w = time_open("with a checkpoint 10000 lines from the end, cold cache");
    assert_eq!(w.records(), blocks * per_block + 1 + 10_000);
    drop(w);

    // Seconds per call of `f`, called `n` times.
    let per_call = |n: u32, f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        t.elapsed().as_secs_f64() / f64::from(n)
    };
    let mut w = open(&path, false);
    let us = 1e6 * per_call(100_000, &mut || w.ensure_open().expect("open"));
    println!("ensure_open: {us:.2} µs per call");
    let us = 1e6 * per_call(100_000, &mut || w.check_writable().expect("writable"));
    println!("check_writable: {us:.2} µs per call");
    let us = 1e6
        * per_call(10_000, &mut || {
            w.append_decision(&decision("x")).expect("append");
        });
    println!("append_decision (no fsync): {us:.2} µs per call");
    let us = 1e6
        * per_call(10_000, &mut || {
            w.append_checkpoint(&key).expect("checkpoint");
        });
    println!("append_checkpoint (no fsync): {us:.2} µs per call");
    drop(w);
    let mut w = open(&path, true);
    let ms = 1e3
        * per_call(200, &mut || {
            w.append_checkpoint(&key).expect("checkpoint");
            w.sync().expect("fsync");
        });
    println!("append_checkpoint + fdatasync: {ms:.2} ms per call");
}
