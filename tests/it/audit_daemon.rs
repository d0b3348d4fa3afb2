//! The audit trail under a running daemon (README "Audit log"): a deleted file is
//! recreated at its path and the chain goes on; a reopen that fails (a directory in
//! place of the rotated file) keeps the daemon up, unready with the OS error, sending
//! nothing, until the path works again; a bad path at start does the same instead of a
//! restart loop; a full disk in the middle of a batch leaves no decision without its one
//! outcome and records nothing twice.

use crate::cli::{BIN, repo, start_simulate, write_config};
use crate::support::{Daemon, free_port, http, metric, wait_for};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const SVC: &str = "4189d3c2-8882-4871-a3c2-d380272eed88";
const PARTNER: &str = "6e9dfd51d1124e8d8498dce894923a0d";

/// Starts `run` with an HTTP listener and the audit log at `audit`, through `wrapper`
/// (e.g. `unshare` for a private tmpfs); returns the daemon and its base URL.
fn daemon(dir: &Path, sim_url: &str, audit: &Path, wrapper: &[&str]) -> (Daemon, String) {
    daemon_with(dir, sim_url, audit, wrapper, "1s", "")
}

/// [`daemon`] polling every `interval`, with `audit_extra` lines in `[audit]`.
fn daemon_with(
    dir: &Path,
    sim_url: &str,
    audit: &Path,
    wrapper: &[&str],
    interval: &str,
    audit_extra: &str,
) -> (Daemon, String) {
    let port = free_port();
    let cfg = write_config(
        dir,
        &repo("policies"),
        &format!(
            "vpcep_endpoint = \"{sim_url}\"\niam_endpoint = \"{sim_url}\"\n[poll]\ninterval = \"{interval}\"\njitter = \"0s\"\nmax_requests_per_second = 0\n[audit]\npath = {:?}\n{audit_extra}\n[http]\nlisten = \"127.0.0.1:{port}\"\n[log]\nlevel = \"info,vpcep_approver::daemon=debug\"\n",
            audit.display().to_string()
        ),
    );
    let mut cmd = match wrapper.split_first() {
        Some((prog, args)) => {
            let mut c = Command::new(prog);
            c.args(args).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    let child = cmd
        .args(["-c", cfg.to_str().expect("utf8"), "run"])
        .env("HUAWEICLOUD_SDK_AK", "CLIAK")
        .env("HUAWEICLOUD_SDK_SK", "CLISECRET")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).expect("log"))
        .spawn()
        .expect("daemon starts");
    Daemon::serving(child, port, "/healthz")
}

fn add_connection(sim_url: &str, id: &str, domain: &str) {
    let (code, body) = http(
        "POST",
        &format!("{sim_url}/_sim/connections"),
        &format!(
            r#"{{"service_id":"{SVC}","id":"{id}","domain_id":"{domain}","description":"CHG-9 later"}}"#
        ),
    );
    assert_eq!(code, 201, "{body}");
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn status_of(sim_url: &str, id: &str) -> String {
    let (_, body) = http("GET", &format!("{sim_url}/_sim/state"), "");
    let v: serde_json::Value = serde_json::from_str(&body).expect("state");
    v["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["connections"].as_array().into_iter().flatten())
        .find(|c| c["id"] == id)
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn verify(files: &[&Path]) -> (bool, String) {
    let mut args = vec!["audit".to_owned(), "verify".to_owned()];
    args.extend(files.iter().map(|p| p.display().to_string()));
    let o = Command::new(BIN).args(&args).output().expect("verify runs");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
fn a_deleted_audit_file_is_recreated_at_its_path_and_the_chain_goes_on() {
    let sim = start_simulate(&["--seed", repo("examples/seed.json").to_str().expect("utf8")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit.jsonl");
    let (mut d, _base) = daemon(dir.path(), &sim.url, &audit, &[]);
    wait_for("first records", Duration::from_secs(20), || {
        !lines_of(&audit).is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    let saved = dir.path().join("saved.jsonl");
    std::fs::copy(&audit, &saved).expect("copy");
    std::fs::remove_file(&audit).expect("rm");
    add_connection(&sim.url, "aaaaaaaa-0000-4000-8000-00000000000a", PARTNER);
    wait_for(
        "the new decision at the path",
        Duration::from_secs(20),
        || {
            lines_of(&audit).iter().any(|l| {
                l.contains("aaaaaaaa-0000-4000-8000-00000000000a")
                    && l.contains("\"kind\":\"outcome\"")
            })
        },
    );
    d.signal("-TERM");
    assert_eq!(d.child.wait().expect("wait").code(), Some(0));
    let (ok, out) = verify(&[&saved, &audit]);
    assert!(ok, "{out}");
}

#[test]
fn a_failed_reopen_keeps_the_daemon_up_unready_and_silent_until_the_path_works() {
    let sim = start_simulate(&["--seed", repo("examples/seed.json").to_str().expect("utf8")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit.jsonl");
    let (mut d, base) = daemon(dir.path(), &sim.url, &audit, &[]);
    wait_for("first records", Duration::from_secs(20), || {
        !lines_of(&audit).is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    // logrotate's move, then a directory where the new file should be.
    let rotated = dir.path().join("audit.jsonl.1");
    std::fs::rename(&audit, &rotated).expect("mv");
    std::fs::create_dir(&audit).expect("mkdir");
    d.signal("-HUP");
    let late = "bbbbbbbb-0000-4000-8000-00000000000b";
    add_connection(&sim.url, late, PARTNER);
    let (_, m0) = http("GET", &format!("{base}/metrics"), "");
    let failures0 = metric(&m0, "vpcep_approver_audit_write_failures_total");
    wait_for("unready with the cause", Duration::from_secs(10), || {
        let (code, why) = http("GET", &format!("{base}/readyz"), "");
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
        status_of(&sim.url, late),
        "pendingAcceptance",
        "no action without the log"
    );
    let (_, m1) = http("GET", &format!("{base}/metrics"), "");
    assert!(
        metric(&m1, "vpcep_approver_audit_write_failures_total") > failures0,
        "every retry is counted:\n{m1}"
    );
    assert!(d.child.try_wait().expect("wait").is_none(), "it stays up");
    // The path works again: the chain continues into the new file.
    std::fs::remove_dir(&audit).expect("rmdir");
    wait_for(
        "the late connection decided",
        Duration::from_secs(20),
        || status_of(&sim.url, late) == "accepted",
    );
    wait_for("ready again", Duration::from_secs(10), || {
        http("GET", &format!("{base}/readyz"), "").0 == 200
    });
    d.signal("-TERM");
    assert_eq!(d.child.wait().expect("wait").code(), Some(0));
    let (ok, out) = verify(&[&rotated, &audit]);
    assert!(ok, "{out}");
}

#[test]
fn a_bad_audit_path_at_start_keeps_the_daemon_up_and_unready_instead_of_exiting() {
    let sim = start_simulate(&["--seed", repo("examples/seed.json").to_str().expect("utf8")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    let audit = logs.join("audit.jsonl");
    let (mut d, base) = daemon(dir.path(), &sim.url, &audit, &[]);
    wait_for("unready with the cause", Duration::from_secs(10), || {
        let (code, why) = http("GET", &format!("{base}/readyz"), "");
        code == 503 && why.contains("ENOENT") && why.contains("audit.jsonl")
    });
    std::thread::sleep(Duration::from_secs(2));
    let (_, state) = http("GET", &format!("{}/_sim/state", sim.url), "");
    let v: serde_json::Value = serde_json::from_str(&state).expect("state");
    assert_eq!(
        v["actions"].as_array().map(Vec::len),
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
    d.signal("-TERM");
    assert_eq!(d.child.wait().expect("wait").code(), Some(0));
    let (ok, out) = verify(&[&audit]);
    assert!(ok, "{out}");
}

/// A seed with `n` pending partner connections (each accepted) and `strangers` pending
/// connections nobody's policy decides (recorded once, left pending).
fn big_seed(dir: &Path, n: usize, strangers: usize) -> PathBuf {
    let base = chrono::Utc::now() - chrono::Duration::hours(1);
    let conns: Vec<serde_json::Value> = (0..n + strangers)
        .map(|i| {
            serde_json::json!({
                "id": format!("c{i:04}"),
                // One account each, so the quotas of the shipped policies do not apply.
                "domain_id": if i < n { PARTNER.to_owned() } else { format!("{i:032x}") },
                "description": "CHG-1 a description long enough to fill the disk sooner",
                "created_at": (base + chrono::Duration::seconds(i as i64))
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            })
        })
        .collect();
    let seed = serde_json::json!({"services": [
        {"id": SVC, "service_name": "cn-north-4.payments.4189d3c2", "connections": conns}]});
    let p = dir.join("seed.json");
    std::fs::write(&p, seed.to_string()).expect("seed");
    p
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
    let (mut d, base) = daemon(
        dir.path(),
        &sim.url,
        &audit,
        &["unshare", "-m", "sh", "-c", &mount],
    );
    // The daemon's view of the disk, from outside its mount namespace.
    let inside = |p: &Path| {
        PathBuf::from(format!("/proc/{}/root", d.child.id()))
            .join(p.strip_prefix("/").expect("absolute"))
    };
    wait_for("the disk to fill", Duration::from_secs(20), || {
        let (code, why) = http("GET", &format!("{base}/readyz"), "");
        code == 503 && why.contains("ENOSPC")
    });
    std::thread::sleep(Duration::from_secs(2));
    // Space comes back.
    std::fs::remove_file(inside(&disk.join("filler"))).expect("rm filler");
    wait_for("every partner decided", Duration::from_secs(30), || {
        (0..150).all(|i| status_of(&sim.url, &format!("c{i:04}")) != "pendingAcceptance")
    });
    wait_for("ready again", Duration::from_secs(20), || {
        http("GET", &format!("{base}/readyz"), "").0 == 200
    });
    let copy = dir.path().join("audit-copy.jsonl");
    std::fs::copy(inside(&audit), &copy).expect("copy out");
    d.signal("-TERM");
    let _ = d.child.wait();
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
    let sim = start_simulate(&["--seed", repo("examples/seed.json").to_str().expect("utf8")]);
    let audit = dir.path().join("audit.jsonl");
    // One cycle an hour: every checkpoint after the first cycle is written while idle.
    let (d, base) = daemon_with(
        dir.path(),
        &sim.url,
        &audit,
        &[],
        "1h",
        &format!(
            "signing_key_file = {:?}\ncheckpoint_interval = \"1s\"",
            private.display().to_string()
        ),
    );
    wait_for(
        "three checkpoints while idle",
        Duration::from_secs(20),
        || checkpoints(&audit).len() >= 3,
    );
    let log = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(
        log().contains("checkpoint written reason=interval"),
        "{}",
        log()
    );
    // The metric counts every line of the chain, checkpoints included.
    let count = || {
        let (_, m) = http("GET", &format!("{base}/metrics"), "");
        metric(&m, "vpcep_approver_audit_records_total") as usize
    };
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
        || log().contains("checkpoint written reason=reload"),
    );
    d.signal("-TERM");
    let mut d = d;
    assert_eq!(d.child.wait().expect("wait").code(), Some(0), "{}", log());
    assert!(
        log().contains("checkpoint written reason=shutdown"),
        "{}",
        log()
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
    let (mut d, base) = daemon(dir.path(), &sim.url, &audit, &[]);
    wait_for("unready with the cause", Duration::from_secs(10), || {
        let (code, why) = http("GET", &format!("{base}/readyz"), "");
        code == 503 && why.contains("ENOENT")
    });
    std::fs::create_dir(&logs).expect("mkdir");
    wait_for("ready again while idle", Duration::from_secs(10), || {
        http("GET", &format!("{base}/readyz"), "").0 == 200
    });
    d.signal("-TERM");
    assert_eq!(d.child.wait().expect("wait").code(), Some(0));
}
