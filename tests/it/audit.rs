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
use vpcep_approver::decision::{Action, Outcome, Verdict};

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

fn decision(description: &str) -> DecisionRecord {
    DecisionRecord {
        decision_id: new_decision_id(),
        target: "cn-north-4".to_owned(),
        project_id: "0605767a3300d5762fb7c0186d8bfc2b".to_owned(),
        service_id: "4189d3c2-8882-4871-a3c2-d380272eed88".to_owned(),
        service_name: "cn-north-4.payments.4189d3c2".to_owned(),
        endpoint_id: "705290f3-1111-2222-3333-444455556666".to_owned(),
        domain_id: "6e9dfd51d1124e8d8498dce894923a0d".to_owned(),
        description: description.to_owned(),
        marker_id: 16_777_510,
        created_at: "2026-11-27T09:35:47Z".to_owned(),
        verdict: Verdict::Permit,
        action: Action::Receive,
        policies: vec!["allow-partners".to_owned()],
        reasons: vec!["partner account with a change ticket".to_owned()],
        errors: vec![],
        policy_version: format!("sha256:{}", "ab".repeat(32)),
        dry_run: false,
    }
}

fn outcome(d: &DecisionRecord) -> OutcomeRecord {
    OutcomeRecord {
        decision_id: d.decision_id.clone(),
        endpoint_id: d.endpoint_id.clone(),
        action: d.action,
        outcome: Outcome::Applied,
        status_after: Some("accepted".to_owned()),
        http_status: Some(200),
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
            w.append_outcome(&outcome(&d)).expect("append outcome");
        }
    }
    w.sync().expect("sync");
}

fn verify(paths: &[PathBuf]) -> (VerifyReport, String) {
    let mut out = Vec::new();
    let report = verify_files(paths, &mut out).expect("files readable");
    (report, String::from_utf8(out).expect("utf-8 output"))
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

#[test]
fn hostile_descriptions_round_trip_and_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
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
    let mut w = open(&path, true);
    let mut written = Vec::new();
    for h in &hostile {
        let mut d = decision(h);
        d.reasons = vec![h.clone()];
        d.errors = vec![h.clone()];
        w.append_decision(&d).expect("append");
        let mut o = outcome(&d);
        o.error_message = Some(h.clone());
        o.error_code = None;
        o.status_after = None;
        o.http_status = None;
        w.append_outcome(&o).expect("append");
        written.push(AuditRecord::Decision(d));
        written.push(AuditRecord::Outcome(o));
    }
    w.sync().expect("sync");

    let lines = lines(&path);
    assert_eq!(
        lines.len(),
        written.len(),
        "no content may add or break a line"
    );
    for (line, expected) in lines.iter().zip(&written) {
        assert_eq!(&parse_line(line).expect("valid record").record, expected);
    }
    let (report, out) = verify(std::slice::from_ref(&path));
    assert!(report.is_ok(), "{out}");
    assert_eq!(report.records, written.len() as u64);
    assert_eq!(report.last_hash, w.last_hash());
}

#[test]
fn outcome_nulls_are_written_as_json_null() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let mut w = open(&path, false);
    let d = decision("x");
    let mut o = outcome(&d);
    o.outcome = Outcome::Failed;
    o.status_after = None;
    o.http_status = None;
    w.append_outcome(&o).expect("append");
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(
        text.starts_with("{\"ts\":\"2026-11-27T12:00:00.000Z\",\"kind\":\"outcome\","),
        "{text}"
    );
    assert!(text.contains(
        "\"outcome\":\"failed\",\"status_after\":null,\"http_status\":null,\"error_code\":null,\
         \"error_message\":null,\"attempts\":1,\"prev\":\"0000000000000000000000000000000000000000000000000000000000000000\"}\n"
    ), "{text}");
}

#[test]
fn summary_names_records_files_and_last_hash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let mut w = open(&path, false);
    write_records(&mut w, 5);
    let (report, out) = verify(std::slice::from_ref(&path));
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
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, b"").expect("write");
    let (report, out) = verify(std::slice::from_ref(&path));
    assert!(report.is_ok(), "{out}");
    assert_eq!(report.last_hash, GENESIS_HASH);
}

#[test]
fn chain_continues_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let mut w = open(&path, true);
    write_records(&mut w, 3);
    let before = w.last_hash().to_owned();
    w.reopen().expect("reopen");
    assert_eq!(w.last_hash(), before);
    write_records(&mut w, 3);
    let (report, out) = verify(std::slice::from_ref(&path));
    assert!(report.is_ok(), "{out}");
    assert_eq!(report.records, 6);
}

#[test]
fn chain_continues_across_process_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let mut last = GENESIS_HASH.to_owned();
    for _ in 0..3 {
        let mut w = open(&path, false);
        assert_eq!(
            w.last_hash(),
            last,
            "a restart continues from the last line"
        );
        write_records(&mut w, 4);
        last = w.last_hash().to_owned();
    }
    let lines = lines(&path);
    assert_eq!(line_hash(lines.last().expect("lines")), last);
    let (report, out) = verify(std::slice::from_ref(&path));
    assert!(report.is_ok(), "{out}");
    assert_eq!(report.records, 12);
}

#[test]
fn restart_continues_after_a_multi_megabyte_last_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let mut w = open(&path, false);
    write_records(&mut w, 2);
    w.append_decision(&decision(&"\u{1}y".repeat(700_000)))
        .expect("append");
    let last = w.last_hash().to_owned();
    drop(w);
    let mut w = open(&path, false);
    assert_eq!(w.last_hash(), last);
    write_records(&mut w, 1);
    let (report, out) = verify(std::slice::from_ref(&path));
    assert!(report.is_ok(), "{out}");
}

#[test]
fn rotation_continues_the_chain_into_the_new_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let rotated = dir.path().join("audit.jsonl.1");
    let mut w = open(&path, true);
    write_records(&mut w, 3);
    std::fs::rename(&path, &rotated).expect("rotate");
    w.reopen().expect("reopen after rotation");
    assert!(path.exists(), "reopen creates the new file");
    write_records(&mut w, 2);

    let (report, out) = verify(&[rotated.clone(), path.clone()]);
    assert!(report.is_ok(), "{out}");
    assert_eq!((report.records, report.files), (5, 2));
    assert_eq!(report.last_hash, w.last_hash());

    // On its own the new file does not start a chain.
    assert_bad(
        std::slice::from_ref(&path),
        &path,
        1,
        "verified together with the files before it",
    );
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
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let mut w = open(&path, false);
    write_records(&mut w, 2);
    w.reopen().expect("reopen");
    w.reopen().expect("reopen again");
    write_records(&mut w, 2);
    let (report, out) = verify(std::slice::from_ref(&path));
    assert!(report.is_ok(), "{out}");
    assert_eq!(report.records, 4);
}

/// A file of six valid records to tamper with.
fn six_records(dir: &Path) -> (PathBuf, Vec<Vec<u8>>) {
    let path = dir.join("audit.jsonl");
    let mut w = open(&path, false);
    write_records(&mut w, 6);
    let lines = lines(&path);
    assert_eq!(lines.len(), 6);
    (path, lines)
}

#[test]
fn edited_byte_that_keeps_valid_json_is_found_at_the_next_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, mut lines) = six_records(dir.path());
    let text = String::from_utf8(lines[2].clone()).expect("utf-8");
    lines[2] = text.replace("CHG-2", "CHG-3").into_bytes();
    write_lines(&path, &lines);
    let expected = format!("previous line ({}:3)", path.display());
    assert_bad(std::slice::from_ref(&path), &path, 4, &expected);
}

#[test]
fn edited_byte_that_breaks_the_record_is_found_at_that_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, mut lines) = six_records(dir.path());
    lines[3][0] = b'[';
    write_lines(&path, &lines);
    assert_bad(std::slice::from_ref(&path), &path, 4, "not valid JSON");
}

#[test]
fn edited_verdict_in_the_last_line_is_found_when_it_is_no_longer_a_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, mut lines) = six_records(dir.path());
    let text = String::from_utf8(lines[5].clone()).expect("utf-8");
    lines[5] = text.replace("\"applied\"", "\"applied \"").into_bytes();
    write_lines(&path, &lines);
    assert_bad(std::slice::from_ref(&path), &path, 6, "unknown variant");
}

#[test]
fn deleted_line_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, mut lines) = six_records(dir.path());
    lines.remove(2);
    write_lines(&path, &lines);
    assert_bad(std::slice::from_ref(&path), &path, 3, "previous line");
}

#[test]
fn deleted_first_line_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, mut lines) = six_records(dir.path());
    lines.remove(0);
    write_lines(&path, &lines);
    assert_bad(
        std::slice::from_ref(&path),
        &path,
        1,
        "not the start of a chain",
    );
}

#[test]
fn inserted_copy_of_a_line_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, mut lines) = six_records(dir.path());
    let copy = lines[1].clone();
    lines.insert(2, copy);
    write_lines(&path, &lines);
    assert_bad(std::slice::from_ref(&path), &path, 3, "previous line");
}

#[test]
fn swapped_lines_are_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, mut lines) = six_records(dir.path());
    lines.swap(2, 3);
    write_lines(&path, &lines);
    // Lines 3 and 4 each follow the wrong line, and line 5 follows line 3 instead of 4.
    assert_bad_n(std::slice::from_ref(&path), &path, 3, "reordered", 3);
}

#[test]
fn truncation_inside_the_last_line_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = six_records(dir.path());
    let len = std::fs::metadata(&path).expect("metadata").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    file.set_len(len - 20).expect("truncate");
    assert_bad(std::slice::from_ref(&path), &path, 6, "torn last line");
}

#[test]
fn removed_final_newline_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = six_records(dir.path());
    let len = std::fs::metadata(&path).expect("metadata").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    file.set_len(len - 1).expect("truncate");
    assert_bad(std::slice::from_ref(&path), &path, 6, "no trailing newline");
}

#[test]
fn appended_garbage_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, mut lines) = six_records(dir.path());
    lines.push(b"garbage".to_vec());
    write_lines(&path, &lines);
    assert_bad(std::slice::from_ref(&path), &path, 7, "not valid JSON");
}

#[test]
fn appended_blank_line_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, mut lines) = six_records(dir.path());
    lines.push(Vec::new());
    write_lines(&path, &lines);
    assert_bad(std::slice::from_ref(&path), &path, 7, "not valid JSON");
}

#[test]
fn appended_forged_record_with_a_wrong_prev_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, mut lines) = six_records(dir.path());
    let forged = String::from_utf8(lines[1].clone()).expect("utf-8");
    lines.push(forged.into_bytes());
    write_lines(&path, &lines);
    assert_bad(std::slice::from_ref(&path), &path, 7, "previous line");
}

#[test]
fn added_field_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, mut lines) = six_records(dir.path());
    let text = String::from_utf8(lines[0].clone()).expect("utf-8");
    lines[0] = text
        .replacen("{", "{\"approved_by\":\"mallory\",", 1)
        .into_bytes();
    write_lines(&path, &lines);
    assert_bad(
        std::slice::from_ref(&path),
        &path,
        1,
        "unknown field `approved_by`",
    );
}

#[test]
fn restart_after_a_torn_write_keeps_every_byte_and_verify_reports_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = six_records(dir.path());
    let len = std::fs::metadata(&path).expect("metadata").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    file.set_len(len - 30)
        .expect("simulate a crash in the middle of a write");
    drop(file);

    let mut w = open(&path, true);
    write_records(&mut w, 2);
    let lines = lines(&path);
    assert_eq!(lines.len(), 8, "the torn line is kept and terminated");
    // The new lines chain onto the torn one, so the chain does not fork ...
    assert_eq!(
        parse_line(&lines[6]).expect("valid").prev,
        line_hash(&lines[5])
    );
    // ... and verify points at the damage, as a torn line, not as tampering.
    assert_bad(std::slice::from_ref(&path), &path, 6, "torn line");
}

#[test]
fn restart_after_a_garbage_last_line_chains_over_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, mut lines) = six_records(dir.path());
    lines.push(b"not a record".to_vec());
    write_lines(&path, &lines);
    let mut w = open(&path, false);
    assert_eq!(w.last_hash(), line_hash(b"not a record"));
    write_records(&mut w, 1);
    assert_bad(std::slice::from_ref(&path), &path, 7, "not valid JSON");
}

#[cfg(unix)]
#[test]
fn new_file_is_created_with_mode_0640() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let _w = open(&path, true);
    let mode = std::fs::metadata(&path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777;
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
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, b"").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut w = open(&path, false);
    write_records(&mut w, 1);
    let mode = std::fs::metadata(&path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn unopenable_path_leaves_the_writer_not_open_naming_the_path_and_os_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("missing-dir").join("audit.jsonl");
    let mut w = AuditWriter::open(AuditPath::File(path.clone()), true, clock())
        .expect("a bad path is not an error of open");
    assert!(!w.is_open());
    let err = w
        .check_writable()
        .expect_err("parent directory does not exist");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("ENOENT"), "{err}");
    let err = w.append_decision(&decision("x")).expect_err("not open");
    let text = error_chain(&err);
    assert!(
        text.starts_with(&format!("failed to open audit log {}", path.display())),
        "{text}"
    );
    assert!(text.contains("(os error 2, ENOENT)"), "{text}");

    // A directory is not a file either.
    let w = AuditWriter::open(AuditPath::File(dir.path().to_owned()), false, clock())
        .expect("not an error of open");
    let err = w.check_writable().expect_err("a directory");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("EISDIR"), "{err}");
}

#[cfg(unix)]
#[test]
fn read_only_file_is_an_error_naming_the_path() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, b"").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    if std::fs::OpenOptions::new().append(true).open(&path).is_ok() {
        return; // running as root: permissions do not apply
    }
    let w = AuditWriter::open(AuditPath::File(path.clone()), false, clock())
        .expect("not an error of open");
    let err = w.check_writable().expect_err("read-only file");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("EACCES"), "{err}");
}

#[test]
fn full_disk_fails_the_append_and_the_readiness_check() {
    let path = PathBuf::from("/dev/full");
    if !path.exists() {
        return;
    }
    let mut w = open(&path, true);
    let err = w.append_decision(&decision("x")).expect_err("ENOSPC");
    assert!(err.to_string().contains("/dev/full"), "{err}");
    assert!(
        error_chain(&err).contains("ENOSPC"),
        "{}",
        error_chain(&err)
    );
    let unready = w.check_writable().expect_err("unready");
    assert!(unready.to_string().contains("ENOSPC"), "{unready}");
}

#[test]
fn fsync_batches_are_durable_and_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let mut w = open(&path, true);
    w.check_writable().expect("writable");
    for batch in 0..3 {
        for i in 0..4 {
            w.append_decision(&decision(&format!("batch {batch} item {i}")))
                .expect("append");
        }
        w.sync().expect("fsync");
        // Every appended line is in the file before the sync returns.
        assert_eq!(lines(&path).len(), (batch + 1) * 4);
    }
    w.sync().expect("sync with nothing new");
    let (report, out) = verify(std::slice::from_ref(&path));
    assert!(report.is_ok(), "{out}");
    assert_eq!(report.records, 12);
}

#[test]
fn verify_of_a_missing_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nope.jsonl");
    let err = verify_files(std::slice::from_ref(&path), &mut Vec::new()).expect_err("missing");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn timestamps_come_from_the_injected_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let mut w = open(&path, false);
    write_records(&mut w, 3);
    let ts: Vec<String> = lines(&path)
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

#[test]
fn a_file_locked_by_another_process_is_refused_without_being_touched() {
    if !have("flock") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let mut w = open(&path, false);
    write_records(&mut w, 2);
    drop(w);
    // A torn last line: a writer that went ahead would terminate it.
    let mut data = std::fs::read(&path).expect("read");
    data.truncate(data.len() - 10);
    std::fs::write(&path, &data).expect("write");

    let holder = LockHolder::spawn(&path);
    let err = AuditWriter::open(AuditPath::File(path.clone()), true, clock())
        .expect_err("another process writes the file");
    assert!(
        matches!(err, vpcep_approver::audit::AuditError::Locked { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("locked by another process"), "{text}");
    assert_eq!(std::fs::read(&path).expect("read"), data, "nothing touched");

    drop(holder);
    let w = open(&path, false);
    assert_eq!(w.records(), 2);
    assert!(std::fs::read(&path).expect("read").ends_with(b"\n"));
}

#[test]
fn the_lock_is_held_while_open_and_follows_the_file_across_a_rotation() {
    if !have("flock") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let rotated = dir.path().join("audit.jsonl.1");
    let mut w = open(&path, false);
    write_records(&mut w, 1);
    assert!(locked_for_others(&path), "held while open");
    std::fs::rename(&path, &rotated).expect("rotate");
    w.reopen().expect("reopen");
    assert!(locked_for_others(&path), "the new file is locked");
    assert!(!locked_for_others(&rotated), "the old one released");
    drop(w);
    assert!(!locked_for_others(&path), "released when closed");
}

#[test]
fn run_once_beside_a_writer_exits_1_naming_the_locked_path_before_deciding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let mut w = open(&path, true);
    write_records(&mut w, 2);
    let before = std::fs::read(&path).expect("read");
    let cfg = crate::cli::write_config(
        dir.path(),
        &crate::cli::repo("policies"),
        &format!(
            "vpcep_endpoint = \"http://127.0.0.1:9\"\niam_endpoint = \"http://127.0.0.1:9\"\n\
             [audit]\npath = {:?}\n",
            path.display().to_string()
        ),
    );
    let o = crate::cli::run(
        &["-c", cfg.to_str().expect("utf-8"), "run", "--once"],
        &[("HUAWEICLOUD_SDK_AK", "ak"), ("HUAWEICLOUD_SDK_SK", "sk")],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("locked by another process"), "{err}");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        before,
        "not one line added"
    );
    drop(w);
}

// ---------------------------------------------------------------------------------------
// Records only at the configured path.

#[test]
fn a_deleted_file_is_noticed_and_recreated_before_the_next_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let saved = dir.path().join("saved.jsonl");
    let mut w = open(&path, true);
    write_records(&mut w, 3);
    w.ensure_open().expect("nothing changed");
    std::fs::copy(&path, &saved).expect("save what will be deleted");
    std::fs::remove_file(&path).expect("rm");

    let err = w.check_writable().expect_err("the path names no file");
    assert!(err.to_string().contains("ENOENT"), "{err}");
    w.ensure_open().expect("recreated");
    assert!(path.exists());
    write_records(&mut w, 2);
    w.check_writable().expect("writable again");
    assert_eq!(lines(&path).len(), 2, "the new records are in the new file");
    assert_eq!(w.records(), 5, "the count goes on");
    let (report, out) = verify(&[saved, path]);
    assert!(report.is_ok(), "{out}");
    assert_eq!(report.records, 5);
}

#[test]
fn a_replaced_file_is_noticed_and_written_from_then_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let other = dir.path().join("other.jsonl");
    let mut w = open(&path, true);
    write_records(&mut w, 3);
    let mut o = open(&other, false);
    write_records(&mut o, 2);
    drop(o);
    std::fs::rename(&other, &path).expect("replace");

    assert!(
        w.check_writable().is_err(),
        "replaced: not writable until followed"
    );
    w.ensure_open().expect("follows the path");
    write_records(&mut w, 1);
    assert_eq!(
        lines(&path).len(),
        3,
        "the record went to the file at the path"
    );
    assert_eq!(w.records(), 3, "counted as the file at the path counts");
    let (report, out) = verify(std::slice::from_ref(&path));
    assert!(report.is_ok(), "{out}");
}

#[test]
fn a_directory_in_place_of_the_rotated_file_leaves_the_writer_not_open_until_it_goes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let rotated = dir.path().join("audit.jsonl.1");
    let mut w = open(&path, true);
    write_records(&mut w, 3);
    // logrotate gone wrong: `mv audit.jsonl audit.jsonl.1; mkdir audit.jsonl; kill -HUP`.
    std::fs::rename(&path, &rotated).expect("mv");
    std::fs::create_dir(&path).expect("mkdir");
    let err = w.reopen().expect_err("a directory at the path");
    assert!(
        error_chain(&err).contains("EISDIR"),
        "{}",
        error_chain(&err)
    );
    assert!(!w.is_open());
    let unready = w.check_writable().expect_err("unready");
    assert!(unready.to_string().contains("EISDIR"), "{unready}");
    let err = w.append_decision(&decision("x")).expect_err("not open");
    assert!(
        error_chain(&err).contains("(os error 21, EISDIR)"),
        "{}",
        error_chain(&err)
    );
    assert!(w.ensure_open().is_err(), "tried again, still a directory");
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
    let (report, out) = verify(&[rotated, path]);
    assert!(report.is_ok(), "{out}");
    assert_eq!(report.records, 5);
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
    let (report, out) = verify(std::slice::from_ref(&path));
    assert!(report.is_ok(), "{out}");
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
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    if err.contains("mount:") || err.contains("unshare:") {
        eprintln!("skipped: cannot mount a tmpfs here: {err}");
        return;
    }
    assert!(o.status.success(), "{out}{err}");
    let ok = out
        .find("child ok")
        .map(|at| out[at..].lines().next().unwrap_or_default());
    assert!(ok.is_some(), "the child ran the test: {out}{err}");
    eprintln!("{}", ok.unwrap_or_default());
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
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("(os error 28, ENOSPC)"), "{text}");
    let unready = w.check_writable().expect_err("unready");
    assert!(unready.to_string().contains("ENOSPC"), "{unready}");
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
    let (report, out) = verify(std::slice::from_ref(&path));
    assert!(report.is_ok(), "{out}");
    assert_eq!(report.records, written + 1);
    println!("child ok: {written} records before ENOSPC");
}

#[test]
fn no_free_file_descriptors_is_reported_as_emfile_and_recovers() {
    if !have("prlimit") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run_child(
        &["prlimit", "--nofile=64"],
        "child_no_descriptors",
        dir.path(),
    );
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
    let mut w = AuditWriter::open(AuditPath::File(path.clone()), true, clock())
        .expect("no descriptor is not an error of open");
    assert!(!w.is_open());
    let unready = w.check_writable().expect_err("unready");
    assert!(unready.to_string().contains("EMFILE"), "{unready}");
    let err = w.append_decision(&decision("x")).expect_err("not open");
    assert!(
        error_chain(&err).contains("(os error 24, EMFILE)"),
        "{}",
        error_chain(&err)
    );
    assert!(w.ensure_open().is_err());
    fillers.clear();
    w.ensure_open().expect("descriptors again");
    write_records(&mut w, 2);
    let (report, out) = verify(std::slice::from_ref(&path));
    assert!(report.is_ok(), "{out}");
    println!("child ok");
}

// ---------------------------------------------------------------------------------------
// audit verify: every break, --from, torn lines.

#[test]
fn every_break_is_reported_in_one_run_once_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let mut w = open(&path, false);
    write_records(&mut w, 12);
    let mut l = lines(&path);
    // Line 3 no longer JSON.
    l[2][0] = b'[';
    // Line 5 edited but still a record: the break shows at line 6.
    let text = String::from_utf8(l[4].clone()).expect("utf-8");
    l[4] = text.replace("CHG-4", "CHG-5").into_bytes();
    // Line 9 deleted: the line after it (now line 9) does not follow line 8.
    l.remove(8);
    // A torn last line.
    let mut torn = l[10].clone();
    torn.truncate(40);
    l[10] = torn;
    let mut data = Vec::new();
    for (i, line) in l.iter().enumerate() {
        data.extend_from_slice(line);
        if i + 1 < l.len() {
            data.push(b'\n');
        }
    }
    std::fs::write(&path, data).expect("write");

    let (report, out) = verify(std::slice::from_ref(&path));
    assert_problems(
        &out,
        &path.display().to_string(),
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
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = six_records(dir.path());
    let len = std::fs::metadata(&path).expect("metadata").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(len - 100))
        .expect("crash in the middle of a write");
    assert_bad(std::slice::from_ref(&path), &path, 6, "torn last line");
    let mut w = open(&path, true);
    write_records(&mut w, 3);
    // One report, and it says torn, not tampered.
    assert_bad(
        std::slice::from_ref(&path),
        &path,
        6,
        "torn line: the start of a record",
    );
}

#[test]
fn a_chain_restart_in_the_middle_is_reported_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = dir.path().join("a.jsonl");
    let second = dir.path().join("b.jsonl");
    let mut w = open(&first, false);
    write_records(&mut w, 3);
    let mut w = open(&second, false);
    write_records(&mut w, 3);
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

#[test]
fn a_rotated_file_verifies_alone_with_from() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let rotated = dir.path().join("audit.jsonl.1");
    let mut w = open(&path, true);
    write_records(&mut w, 3);
    let handover = w.last_hash().to_owned();
    std::fs::rename(&path, &rotated).expect("rotate");
    w.reopen().expect("reopen");
    write_records(&mut w, 2);
    // logrotate deleted the older file: the new one verifies on its own with --from.
    std::fs::remove_file(&rotated).expect("rm");
    let mut out = Vec::new();
    let opts = VerifyOptions {
        from: Some(handover.clone()),
        key: None,
    };
    let report = verify_files_with(std::slice::from_ref(&path), &opts, &mut out).expect("verify");
    let out = String::from_utf8(out).expect("utf-8");
    assert!(report.is_ok(), "{out}");
    assert!(
        out.starts_with("ok: 2 records in 1 files, chain intact"),
        "{out}"
    );
    // A --from that does not match is a problem, and so is a missing one.
    let opts = VerifyOptions {
        from: Some("ab".repeat(32)),
        key: None,
    };
    let mut out = Vec::new();
    let report = verify_files_with(std::slice::from_ref(&path), &opts, &mut out).expect("verify");
    assert_eq!(report.problems, 1, "{}", String::from_utf8_lossy(&out));
    assert!(String::from_utf8_lossy(&out).contains(":1: prev is not the --from hash"));
    assert_bad(std::slice::from_ref(&path), &path, 1, "--from");
}

#[test]
fn a_line_over_the_limit_is_reported_and_checking_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, mut l) = six_records(dir.path());
    let long = vec![b'x'; vpcep_approver::audit::MAX_LINE_BYTES + 10];
    // The line after it chains from it; the one after that is fine too.
    let next = String::from_utf8(l[3].clone()).expect("utf-8");
    let at = next.len() - 66;
    let next = format!("{}{}\"}}", &next[..at], line_hash(&long));
    let after = String::from_utf8(l[4].clone()).expect("utf-8");
    let after = format!(
        "{}{}\"}}",
        &after[..after.len() - 66],
        line_hash(next.as_bytes())
    );
    l.truncate(3);
    l.push(long);
    l.push(next.into_bytes());
    l.push(after.into_bytes());
    write_lines(&path, &l);
    assert_bad(std::slice::from_ref(&path), &path, 4, "longer than the");
}

#[test]
fn cli_verify_reports_every_problem_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, mut l) = six_records(dir.path());
    l[1] = b"garbage".to_vec();
    l.remove(4);
    write_lines(&path, &l);
    let p = path.to_str().expect("utf-8");
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
    let mut out = Vec::new();
    let report = verify_files_with(paths, &opts, &mut out).expect("verify");
    (report, String::from_utf8(out).expect("utf-8"))
}

/// Records and checkpoints: 10 records, a checkpoint, 10 records, a checkpoint, 3 records.
fn signed_log(dir: &Path, key: &SigningKey) -> PathBuf {
    let path = dir.join("audit.jsonl");
    let mut w = open(&path, true);
    write_records(&mut w, 10);
    w.append_checkpoint(key).expect("checkpoint");
    write_records(&mut w, 10);
    w.append_checkpoint(key).expect("checkpoint");
    write_records(&mut w, 3);
    assert_eq!(w.records(), 25);
    path
}

#[test]
fn checkpoint_signatures_verify_with_openssl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((private, public)) = openssl_keys(dir.path(), "k") else {
        return;
    };
    let key = SigningKey::from_file(&private).expect("openssl's key loads");
    let path = signed_log(dir.path(), &key);

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
    for line in lines(&path) {
        let parsed = parse_line(&line).expect("valid");
        let AuditRecord::Checkpoint(cp) = parsed.record else {
            continue;
        };
        assert_eq!(cp.key_id, key.key_id());
        assert_eq!(cp.head, parsed.prev);
        let v: serde_json::Value = serde_json::from_slice(&line).expect("json");
        assert!(openssl_verifies(&v, &public, dir.path()));
        // The check means something: another count does not verify.
        let mut other = v.clone();
        other["records"] = serde_json::json!(999);
        assert!(!openssl_verifies(&other, &public, dir.path()));
        checked += 1;
    }
    assert_eq!(checked, 2);

    let (report, out) = verify_with_key(std::slice::from_ref(&path), &public);
    assert!(report.is_ok(), "{out}");
    assert_eq!((report.signed, report.unsigned_tail), (2, Some(3)));
    let last = out.lines().last().expect("summary");
    assert!(
        last.starts_with("ok: 25 records in 1 files, chain intact"),
        "{out}"
    );
    assert!(
        out.contains(":22: unsigned tail: the 3 records after this checkpoint"),
        "{out}"
    );
}

#[test]
fn a_rewritten_chain_passes_plain_verify_but_not_verify_with_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((private, public)) = openssl_keys(dir.path(), "k") else {
        return;
    };
    let key = SigningKey::from_file(&private).expect("key");
    let path = signed_log(dir.path(), &key);
    // An attacker with write access changes a verdict and recomputes every hash.
    let mut l = lines(&path);
    let text = String::from_utf8(l[4].clone()).expect("utf-8");
    l[4] = text
        .replace("CHG-4", "CHG-4 approved by mallory")
        .into_bytes();
    rechain(&mut l);
    write_lines(&path, &l);

    let (report, out) = verify(std::slice::from_ref(&path));
    assert!(report.is_ok(), "plain verify cannot tell: {out}");
    let (report, out) = verify_with_key(std::slice::from_ref(&path), &public);
    assert!(!report.is_ok(), "{out}");
    let p = path.display();
    assert!(
        out.contains(&format!("{p}:11: checkpoint signature does not verify")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{p}:22: checkpoint signature does not verify")),
        "{out}"
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
            public.to_str().expect("utf-8"),
            path.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
}

/// Recomputes every `prev` (and a checkpoint's `head`) as someone rewriting the file would.
fn rechain(lines: &mut [Vec<u8>]) {
    let mut prev = GENESIS_HASH.to_owned();
    for line in lines.iter_mut() {
        let text = String::from_utf8(line.clone()).expect("utf-8");
        let mut text = format!("{}{prev}\"}}", &text[..text.len() - 66]);
        if let Some(at) = text.find("\"head\":\"") {
            let at = at + 8;
            text.replace_range(at..at + 64, &prev);
        }
        prev = line_hash(text.as_bytes());
        *line = text.into_bytes();
    }
}

#[test]
fn removed_records_before_a_checkpoint_are_counted_against_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((private, public)) = openssl_keys(dir.path(), "k") else {
        return;
    };
    let key = SigningKey::from_file(&private).expect("key");
    let path = signed_log(dir.path(), &key);
    let mut l = lines(&path);
    l.drain(14..19);
    write_lines(&path, &l);
    let (report, out) = verify_with_key(std::slice::from_ref(&path), &public);
    let p = path.display();
    assert!(
        out.contains(&format!("{p}:15: prev does not match")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{p}:17: checkpoint counts 21 records before it, but the chain as verified has 16 \
             (5 missing: records were removed)"
        )),
        "{out}"
    );
    assert_eq!(report.problems, 2, "{out}");
    // Rewritten to hide the gap, the count still gives it away, and so does the signature.
    rechain(&mut l);
    write_lines(&path, &l);
    let (report, out) = verify(std::slice::from_ref(&path));
    assert_eq!(report.problems, 1, "{out}");
    assert!(out.contains("5 missing"), "{out}");
    let (report, out) = verify_with_key(std::slice::from_ref(&path), &public);
    assert_eq!(report.problems, 2, "{out}");
    assert!(
        out.contains(":17: checkpoint signature does not verify"),
        "{out}"
    );
}

#[test]
fn a_rotated_signed_file_verifies_alone_with_from_and_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((private, public)) = openssl_keys(dir.path(), "k") else {
        return;
    };
    let key = SigningKey::from_file(&private).expect("key");
    let path = signed_log(dir.path(), &key);
    let rotated = dir.path().join("audit.jsonl.1");
    let mut w = open(&path, true);
    assert_eq!(w.records(), 25);
    std::fs::rename(&path, &rotated).expect("rotate");
    w.reopen().expect("reopen");
    let from = w.last_hash().to_owned();
    write_records(&mut w, 4);
    w.append_checkpoint(&key).expect("checkpoint");
    write_records(&mut w, 1);
    assert_eq!(w.records(), 31, "the count goes on across the rotation");
    drop(w);
    // A restart counts from the new file's checkpoint, without the rotated file.
    assert_eq!(open(&path, false).records(), 31);

    // The new file alone: --from for its first prev, the checkpoint's count anchors the
    // rest and its signature covers it.
    let opts = VerifyOptions {
        from: Some(from),
        key: Some(VerifyingKey::from_file(&public).expect("public key")),
    };
    let mut out = Vec::new();
    let report = verify_files_with(std::slice::from_ref(&path), &opts, &mut out).expect("verify");
    let out = String::from_utf8(out).expect("utf-8");
    assert!(report.is_ok(), "{out}");
    assert_eq!((report.signed, report.unsigned_tail), (1, Some(1)), "{out}");
    // Both files, oldest first.
    let (report, out) = verify_with_key(&[rotated, path], &public);
    assert!(report.is_ok(), "{out}");
    assert_eq!((report.records, report.signed), (31, 3));
}

#[test]
fn a_checkpoint_signed_by_another_key_is_reported_with_its_key_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((private, _)) = openssl_keys(dir.path(), "a") else {
        return;
    };
    let Some((_, other_public)) = openssl_keys(dir.path(), "b") else {
        return;
    };
    let key = SigningKey::from_file(&private).expect("key");
    let path = signed_log(dir.path(), &key);
    let (report, out) = verify_with_key(std::slice::from_ref(&path), &other_public);
    assert_eq!(report.problems, 2, "{out}");
    assert!(
        out.contains(&format!(
            ":11: checkpoint signed by another key (key_id {}",
            key.key_id()
        )),
        "{out}"
    );
    assert!(
        out.contains("unsigned tail: no checkpoint signed by key"),
        "{out}"
    );
}

#[test]
fn a_restart_counts_on_from_the_last_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((private, public)) = openssl_keys(dir.path(), "k") else {
        return;
    };
    let key = SigningKey::from_file(&private).expect("key");
    let path = signed_log(dir.path(), &key);
    let mut w = open(&path, true);
    assert_eq!(w.records(), 25);
    w.append_checkpoint(&key).expect("checkpoint");
    w.sync().expect("sync");
    let last = lines(&path).pop().expect("line");
    let AuditRecord::Checkpoint(cp) = parse_line(&last).expect("valid").record else {
        panic!("not a checkpoint");
    };
    assert_eq!(cp.records, 25);
    let (report, out) = verify_with_key(std::slice::from_ref(&path), &public);
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
    let (code, out) = check(&format!(
        "[audit]\nsigning_key_file = {:?}\n",
        private.display().to_string()
    ));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("ok, Ed25519, key id {}", key.key_id())),
        "{out}"
    );
    assert!(!out.contains("PRIVATE KEY"), "{out}");

    let (code, out) = check("[audit]\nsigning_key_file = \"${VPCEP_TEST_NO_SUCH_DIR}/k.pem\"\n");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("VPCEP_TEST_NO_SUCH_DIR is not set"), "{out}");

    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a key").expect("write");
    let (code, out) = check(&format!(
        "[audit]\nsigning_key_file = {:?}\n",
        bad.display().to_string()
    ));
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains(&bad.display().to_string()), "{out}");
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
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
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
        let mut w = open(&dir.path().join("one.jsonl"), false);
        w.append_decision(&decision("CHG-1234 payments link"))
            .expect("append");
        lines(&dir.path().join("one.jsonl")).remove(0)
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

    let mut w = open(&path, false);
    let n = 100_000u32;
    let t = Instant::now();
    for _ in 0..n {
        w.ensure_open().expect("open");
    }
    println!(
        "ensure_open: {:.2} µs per call",
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    );
    let t = Instant::now();
    for _ in 0..n {
        w.check_writable().expect("writable");
    }
    println!(
        "check_writable: {:.2} µs per call",
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    );
    let n = 10_000u32;
    let t = Instant::now();
    for _ in 0..n {
        w.append_decision(&decision("x")).expect("append");
    }
    println!(
        "append_decision (no fsync): {:.2} µs per call",
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    );
    let t = Instant::now();
    for _ in 0..n {
        w.append_checkpoint(&key).expect("checkpoint");
    }
    println!(
        "append_checkpoint (no fsync): {:.2} µs per call",
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    );
    drop(w);
    let mut w = open(&path, true);
    let n = 200u32;
    let t = Instant::now();
    for _ in 0..n {
        w.append_checkpoint(&key).expect("checkpoint");
        w.sync().expect("fsync");
    }
    println!(
        "append_checkpoint + fdatasync: {:.2} ms per call",
        t.elapsed().as_secs_f64() * 1e3 / f64::from(n)
    );
}
