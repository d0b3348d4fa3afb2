//! The audit log through its public API on real files: hostile content, continuation
//! across reopen, restart and rotation, and `verify_files` finding each kind of tampering
//! at the right line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use vpcep_approver::audit::{
    AuditPath, AuditRecord, AuditWriter, DecisionRecord, GENESIS_HASH, OutcomeRecord, SigningKey,
    VerifyReport, error_chain, line_hash, new_decision_id, parse_line, verify_files,
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

/// Asserts that verification fails first at `line` of `path` with a reason containing
/// `needle`, and that the printed line is `<path>:<line>: <reason>`.
fn assert_bad(paths: &[PathBuf], path: &Path, line: u64, needle: &str) {
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
    assert_eq!(
        out,
        format!("{}:{}: {}\n", path.display(), line, bad.reason)
    );
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
    // In the wrong order the second file does not continue the first.
    assert_bad(
        &[path.clone(), rotated.clone()],
        &path,
        1,
        "verified together",
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
    assert_bad(std::slice::from_ref(&path), &path, 3, "reordered");
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
    // ... and verify points at the damage.
    assert_bad(std::slice::from_ref(&path), &path, 6, "not valid JSON");
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
