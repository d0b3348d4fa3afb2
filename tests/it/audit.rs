//! The audit log through its public API on real files: hostile content, continuation
//! across reopen, restart and rotation, and `verify_files` finding each kind of tampering
//! at the right line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use vpcep_approver::audit::{
    AuditPath, AuditRecord, AuditWriter, DecisionRecord, GENESIS_HASH, OutcomeRecord, VerifyReport,
    error_chain, line_hash, new_decision_id, parse_line, verify_files,
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
fn unopenable_path_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("missing-dir").join("audit.jsonl");
    let err = AuditWriter::open(AuditPath::File(path.clone()), true, clock())
        .expect_err("parent directory does not exist");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("failed to open audit log "),
        "{err}"
    );

    // A directory is not a file either.
    let err = AuditWriter::open(AuditPath::File(dir.path().to_owned()), false, clock())
        .expect_err("a directory");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
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
    let err = AuditWriter::open(AuditPath::File(path.clone()), false, clock())
        .expect_err("read-only file");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
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
