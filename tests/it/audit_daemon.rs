//! The audit trail under a running daemon (README "Audit log"): a deleted file is
//! recreated at its path and the chain goes on; a reopen that fails (a directory in
//! place of the rotated file) keeps the daemon up, unready with the OS error, sending
//! nothing, until the path works again; a bad path at start does the same instead of a
//! restart loop; a full disk in the middle of a batch leaves no decision without its one
//! outcome and records nothing twice.

use crate::cli::BIN;
use crate::rig::{
    DaemonRig, Running, SimProcess, simulate_example, start_simulate, verify, write_seed,
};
use crate::support::{seed_conn, seed_of, wait_for};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SVC: &str = "4189d3c2-8882-4871-a3c2-d380272eed88";
const PARTNER: &str = "6e9dfd51d1124e8d8498dce894923a0d";

/// `run` with an HTTP listener, polling every `interval`, no rate limit, the audit log at
/// `audit` and the daemon's debug lines in `dir/stderr.log`.
fn rig(dir: &Path, sim_url: &str, audit: &Path, interval: &str) -> DaemonRig {
    DaemonRig::new(dir, sim_url)
        .poll(&format!(
            "interval = \"{interval}\"\njitter = \"0s\"\nmax_requests_per_second = 0\n"
        ))
        .audit(audit)
        .tail("[log]\nlevel = \"info,vpcep_approver::daemon=debug\"\n")
        .stderr_log()
}

/// [`rig`] polling every second, once `/healthz` answers.
fn daemon(dir: &Path, sim_url: &str, audit: &Path) -> Running {
    rig(dir, sim_url, audit, "1s").serving("/healthz")
}

/// The example seed under a [`daemon`] in a new directory, its audit log at
/// `audit.jsonl` there, once the first records are written (and half a second more, so
/// the batch is complete).
fn after_first_records() -> (tempfile::TempDir, SimProcess, Running, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = simulate_example();
    let audit = dir.path().join("audit.jsonl");
    let d = daemon(dir.path(), &sim.url, &audit);
    wait_for("first records", Duration::from_secs(20), || {
        !lines_of(&audit).is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    (dir, sim, d, audit)
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_deleted_audit_file_is_recreated_at_its_path_and_the_chain_goes_on() {
    let (dir, sim, mut d, audit) = after_first_records();
    let saved = dir.path().join("saved.jsonl");
    std::fs::copy(&audit, &saved).expect("copy");
    std::fs::remove_file(&audit).expect("rm");
    let id = "aaaaaaaa-0000-4000-8000-00000000000a";
    sim.add_connection(SVC, id, PARTNER, "CHG-9 later");
    wait_for(
        "the new decision at the path",
        Duration::from_secs(20),
        || {
            lines_of(&audit)
                .iter()
                .any(|l| l.contains(id) && l.contains("\"kind\":\"outcome\""))
        },
    );
    assert_eq!(d.stop(), Some(0));
    let (ok, out) = verify(&[&saved, &audit]);
    assert!(ok, "{out}");
}

#[test]
fn a_failed_reopen_keeps_the_daemon_up_unready_and_silent_until_the_path_works() {
    let (dir, sim, mut d, audit) = after_first_records();
    // logrotate's move, then a directory where the new file should be.
    let rotated = dir.path().join("audit.jsonl.1");
    std::fs::rename(&audit, &rotated).expect("mv");
    std::fs::create_dir(&audit).expect("mkdir");
    d.signal("-HUP");
    let late = "bbbbbbbb-0000-4000-8000-00000000000b";
    sim.add_connection(SVC, late, PARTNER, "CHG-9 later");
    let failures = || d.metric("vpcep_approver_audit_write_failures_total");
    let failures0 = failures();
    wait_for("unready with the cause", Duration::from_secs(10), || {
        let (code, why) = d.get("/readyz");
        code == 503 && why.contains("EISDIR")
    });
    let rotated_len = lines_of(&rotated).len();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        lines_of(&rotated).len(),
        rotated_len,
        "nothing is written into the rotated file"
    );
    assert_eq!(
        sim.status_of(late),
        "pendingAcceptance",
        "no action without the log"
    );
    let failures1 = failures();
    assert!(
        failures1 > failures0,
        "every retry is counted: {failures0} then {failures1}"
    );
    assert!(d.is_running(), "it stays up");
    // The path works again: the chain continues into the new file.
    std::fs::remove_dir(&audit).expect("rmdir");
    wait_for(
        "the late connection decided",
        Duration::from_secs(20),
        || sim.status_of(late) == "accepted",
    );
    d.wait_ok("/readyz", Duration::from_secs(10));
    assert_eq!(d.stop(), Some(0));
    let (ok, out) = verify(&[&rotated, &audit]);
    assert!(ok, "{out}");
}

#[test]
fn a_bad_audit_path_at_start_keeps_the_daemon_up_and_unready_instead_of_exiting() {
    let sim = simulate_example();
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    let audit = logs.join("audit.jsonl");
    let mut d = daemon(dir.path(), &sim.url, &audit);
    wait_for("unready with the cause", Duration::from_secs(10), || {
        let (code, why) = d.get("/readyz");
        code == 503 && why.contains("ENOENT") && why.contains("audit.jsonl")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        sim.state()["actions"].as_array().map(Vec::len),
        Some(0),
        "no action without the log"
    );
    std::fs::create_dir(&logs).expect("mkdir");
    wait_for(
        "records once the path works",
        Duration::from_secs(20),
        || {
            lines_of(&audit)
                .iter()
                .any(|l| l.contains("\"kind\":\"outcome\""))
        },
    );
    assert_eq!(d.stop(), Some(0));
    let (ok, out) = verify(&[&audit]);
    assert!(ok, "{out}");
}

/// A seed with `n` pending partner connections (each accepted) and `strangers` pending
/// connections nobody's policy decides (recorded once, left pending).
fn big_seed(dir: &Path, n: usize, strangers: usize) -> PathBuf {
    let conns = (0..n + strangers)
        .map(|i| {
            // One account each, so the quotas of the shipped policies do not apply.
            let domain = if i < n {
                PARTNER.to_owned()
            } else {
                format!("{i:032x}")
            };
            seed_conn(
                &format!("c{i:04}"),
                &domain,
                "CHG-1 a description long enough to fill the disk sooner",
                "pendingAcceptance",
                i as i64,
            )
        })
        .collect();
    write_seed(dir, &seed_of(SVC, conns))
}

#[test]
fn a_full_disk_mid_batch_leaves_one_outcome_per_decision_and_no_duplicates() {
    // Partners over the shipped per-account quota are rejected, so every one is an action.
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = start_simulate(&[
        "--seed",
        big_seed(dir.path(), 150, 20).to_str().expect("utf8"),
    ]);
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).expect("mkdir");
    let audit = disk.join("audit.jsonl");
    // A private 512 KiB tmpfs, mostly taken by a filler file: full after some records.
    let mount = format!(
        "mount -t tmpfs -o size=512k tmpfs {0} && head -c 450560 /dev/zero > {0}/filler && exec \"$0\" \"$@\"",
        disk.display()
    );
    let probe = Command::new("unshare").args(["-m", "true"]).status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: unshare -m is not available here");
        return;
    }
    let mut d = rig(dir.path(), &sim.url, &audit, "1s")
        .wrapper(&["unshare", "-m", "sh", "-c", &mount])
        .serving("/healthz");
    // The daemon's view of the disk, from outside its mount namespace.
    let inside = |p: &Path| {
        PathBuf::from(format!("/proc/{}/root", d.pid()))
            .join(p.strip_prefix("/").expect("absolute"))
    };
    wait_for("the disk to fill", Duration::from_secs(20), || {
        let (code, why) = d.get("/readyz");
        code == 503 && why.contains("ENOSPC")
    });
    std::thread::sleep(Duration::from_secs(2));
    // Space comes back.
    std::fs::remove_file(inside(&disk.join("filler"))).expect("rm filler");
    wait_for("every partner decided", Duration::from_secs(30), || {
        (0..150).all(|i| sim.status_of(&format!("c{i:04}")) != "pendingAcceptance")
    });
    d.wait_ok("/readyz", Duration::from_secs(20));
    let copy = dir.path().join("audit-copy.jsonl");
    std::fs::copy(inside(&audit), &copy).expect("copy out");
    let _ = d.stop();
    let (ok, out) = verify(&[&copy]);
    assert!(ok, "{out}");
    let lines: Vec<serde_json::Value> = lines_of(&copy)
        .iter()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for l in lines.iter().filter(|l| l["kind"] == "outcome") {
        *outcomes
            .entry(l["decision_id"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    let mut stranger_records: HashMap<String, usize> = HashMap::new();
    let mut seen_ids = std::collections::HashSet::new();
    for l in lines.iter().filter(|l| l["kind"] == "decision") {
        let id = l["decision_id"].as_str().unwrap_or_default();
        assert!(
            seen_ids.insert(id.to_owned()),
            "decision {id} written twice"
        );
        if l["action"] == "none" {
            *stranger_records
                .entry(l["endpoint_id"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        } else {
            assert_eq!(outcomes.get(id), Some(&1), "decision {id}: one outcome");
        }
    }
    assert_eq!(
        outcomes.values().sum::<usize>(),
        lines
            .iter()
            .filter(|l| l["kind"] == "decision" && l["action"] != "none")
            .count(),
        "no outcome without its decision"
    );
    assert_eq!(stranger_records.len(), 20, "every stranger was recorded");
    for (endpoint, n) in stranger_records {
        assert_eq!(n, 1, "{endpoint} left pending is recorded once per version");
    }
}

/// The checkpoint records of an audit file, as parsed JSON.
fn checkpoints(path: &Path) -> Vec<serde_json::Value> {
    lines_of(path)
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "checkpoint")
        .collect()
}

#[test]
fn a_signing_daemon_checkpoints_while_idle_after_a_reload_and_at_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((private, public)) = crate::audit::openssl_keys(dir.path(), "signing") else {
        return;
    };
    let sim = simulate_example();
    let audit = dir.path().join("audit.jsonl");
    // One cycle an hour: every checkpoint after the first cycle is written while idle.
    let mut d = rig(dir.path(), &sim.url, &audit, "1h")
        .audit_extra(&format!(
            "signing_key_file = {:?}\ncheckpoint_interval = \"1s\"",
            private.display().to_string()
        ))
        .serving("/healthz");
    wait_for(
        "three checkpoints while idle",
        Duration::from_secs(20),
        || checkpoints(&audit).len() >= 3,
    );
    assert!(
        d.log().contains("checkpoint written reason=interval"),
        "{}",
        d.log()
    );
    // The metric counts every line of the chain, checkpoints included.
    let count = || d.metric("vpcep_approver_audit_records_total") as usize;
    wait_for(
        "audit_records_total == lines",
        Duration::from_secs(5),
        || {
            let before = lines_of(&audit).len();
            let n = count();
            n == before && lines_of(&audit).len() == before
        },
    );
    d.signal("-HUP");
    wait_for(
        "a checkpoint after the reload",
        Duration::from_secs(10),
        || d.log().contains("checkpoint written reason=reload"),
    );
    assert_eq!(d.stop(), Some(0), "{}", d.log());
    assert!(
        d.log().contains("checkpoint written reason=shutdown"),
        "{}",
        d.log()
    );

    // The last line is the shutdown checkpoint: the whole file is signed.
    let lines = lines_of(&audit);
    let last: serde_json::Value =
        serde_json::from_str(lines.last().expect("a line")).expect("json");
    assert_eq!(last["kind"], "checkpoint", "{last}");
    assert_eq!(
        last["records"].as_u64(),
        Some(lines.len() as u64 - 1),
        "{last}"
    );
    assert!(crate::audit::openssl_verifies(&last, &public, dir.path()));
    let o = Command::new(BIN)
        .args(["audit", "verify", "--key"])
        .arg(&public)
        .arg(&audit)
        .output()
        .expect("verify runs");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(!out.contains("unsigned tail"), "{out}");
    let decided = lines
        .iter()
        .filter(|l| l.contains("\"kind\":\"decision\""))
        .count();
    assert!(decided >= 1, "the cycle was recorded: {lines:?}");
    assert!(
        checkpoints(&audit).len() >= 5,
        "interval x3, reload, shutdown"
    );
}

#[test]
fn an_idle_daemon_is_ready_again_once_its_audit_path_works() {
    // Nothing pending: no decision record will ever be written to prove the log works,
    // so the per-cycle check must.
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = dir.path().join("seed.json");
    std::fs::write(
        &seed,
        format!(r#"{{"services":[{{"id":"{SVC}","service_name":"idle","connections":[]}}]}}"#),
    )
    .expect("seed");
    let sim = start_simulate(&["--seed", seed.to_str().expect("utf8")]);
    let logs = dir.path().join("logs");
    let audit = logs.join("audit.jsonl");
    let mut d = daemon(dir.path(), &sim.url, &audit);
    wait_for("unready with the cause", Duration::from_secs(10), || {
        let (code, why) = d.get("/readyz");
        code == 503 && why.contains("ENOENT")
    });
    std::fs::create_dir(&logs).expect("mkdir");
    wait_for("ready again while idle", Duration::from_secs(10), || {
        d.get("/readyz").0 == 200
    });
    assert_eq!(d.stop(), Some(0));
}
