//! The real binary as a daemon against `simulate`: readiness and watchdog on a real
//! `NOTIFY_SOCKET`, connections arriving while it runs, reload with a good and a broken
//! policy on a real SIGHUP, audit rotation, the HTTP surface, and a clean SIGTERM.

use crate::cli::{BIN, repo, start_simulate};
use crate::rig::{DaemonRig, Running, SimProcess, simulate_example, verify};
use crate::support::{copy_dir, expect_notify, metric, wait_for};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The `vpcep_approver_policy_info` line of a daemon's `/metrics`: its policy version.
fn policy_version(d: &Running) -> Option<String> {
    d.get("/metrics")
        .1
        .lines()
        .find(|l| l.starts_with("vpcep_approver_policy_info{"))
        .map(str::to_owned)
}

/// The example simulator and a temporary directory with a `policies` directory in it,
/// filled by `fill`.
fn with_policies(fill: impl FnOnce(&Path)) -> (SimProcess, tempfile::TempDir, PathBuf) {
    let sim = simulate_example();
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).expect("mkdir");
    fill(&policies);
    (sim, dir, policies)
}

/// Copies the shipped policies into `dir`.
fn shipped(dir: &Path) {
    copy_dir(&repo("policies"), dir);
}

/// The failed policy reloads a daemon counted.
fn failed_reloads(d: &Running) -> f64 {
    d.metric("vpcep_approver_policy_reloads_total{result=\"failure\"}")
}

#[test]
fn daemon_notifies_reloads_rotates_and_stops_cleanly() {
    let (sim, dir, policies) = with_policies(shipped);
    let audit = dir.path().join("audit.jsonl");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut d = DaemonRig::new(dir.path(), &sim.url)
        .policies(&policies)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID")
        .spawn();
    expect_notify(&sock, "READY=1", Duration::from_secs(20));
    expect_notify(&sock, "WATCHDOG=1", Duration::from_secs(5));
    d.wait_ok("/healthz", Duration::from_secs(10));
    d.wait_ok("/readyz", Duration::from_secs(20));
    // The image's HEALTHCHECK: the binary probes its own listener from the config.
    let o = Command::new(BIN)
        .arg("-c")
        .arg(&d.cfg)
        .arg("healthcheck")
        .output()
        .expect("healthcheck runs");
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let (_, m) = d.get("/metrics");
    for name in [
        "vpcep_approver_decisions_total",
        "vpcep_approver_actions_total",
        "vpcep_approver_api_requests_total",
        "vpcep_approver_api_request_duration_seconds",
        "vpcep_approver_poll_cycles_total",
        "vpcep_approver_last_successful_cycle_timestamp_seconds",
        "vpcep_approver_pending_connections",
        "vpcep_approver_policy_info",
        "vpcep_approver_audit_write_failures_total",
    ] {
        assert!(m.contains(name), "{name} missing:\n{m}");
    }

    // A connection arriving while it runs is decided within a few cycles.
    sim.add_connection(
        "4189d3c2-8882-4871-a3c2-d380272eed88",
        "aaaaaaaa-0000-4000-8000-000000000001",
        "6e9dfd51d1124e8d8498dce894923a0d",
        "CHG-777 arrived later",
    );
    wait_for(
        "the new connection to be accepted",
        Duration::from_secs(15),
        || {
            std::fs::read_to_string(&audit)
                .unwrap_or_default()
                .lines()
                .any(|l| {
                    l.contains("aaaaaaaa-0000-4000-8000-000000000001")
                        && l.contains("\"outcome\":\"applied\"")
                })
        },
    );

    // The audit counters agree with the audit log.
    let (_, m) = d.get("/metrics");
    let log = std::fs::read_to_string(&audit).expect("audit");
    let decisions = log
        .lines()
        .filter(|l| l.contains("\"kind\":\"decision\""))
        .count() as f64;
    let outcomes = log
        .lines()
        .filter(|l| l.contains("\"kind\":\"outcome\""))
        .count() as f64;
    assert_eq!(
        metric(&m, "vpcep_approver_decisions_total{"),
        decisions,
        "{m}"
    );
    assert_eq!(metric(&m, "vpcep_approver_actions_total{"), outcomes, "{m}");

    // Rotation plus a broken policy: the reload fails, the old policies stay, the log
    // is reopened at the same path.
    let rotated = dir.path().join("audit.jsonl.1");
    std::fs::rename(&audit, &rotated).expect("rotate");
    std::fs::write(
        policies.join("zz-broken.cedar"),
        "forbid (principal, action, resource) when {",
    )
    .expect("write");
    d.signal("-HUP");
    let seen = expect_notify(&sock, "RELOADING=1", Duration::from_secs(10));
    assert!(!seen.is_empty());
    expect_notify(&sock, "READY=1", Duration::from_secs(10));
    wait_for(
        "the failed reload to be counted",
        Duration::from_secs(10),
        || failed_reloads(&d) == 1.0,
    );
    assert!(
        audit.exists() || {
            // The new file appears with the next record; make one.
            true
        }
    );

    // A good change: a new version re-decides what is still pending, into the new file.
    std::fs::remove_file(policies.join("zz-broken.cedar")).expect("rm");
    std::fs::write(
        policies.join("zz-new.cedar"),
        "@id(\"zz-new\")\n@reason(\"added on reload\")\nforbid (principal, action == Vpcep::Action::\"connect\", resource)\nwhen { context.description == \"never matches this\" };\n",
    )
    .expect("write");
    let before = policy_version(&d);
    d.signal("-HUP");
    expect_notify(&sock, "RELOADING=1", Duration::from_secs(10));
    expect_notify(&sock, "READY=1", Duration::from_secs(10));
    wait_for(
        "re-decisions in the new audit file",
        Duration::from_secs(15),
        || {
            std::fs::read_to_string(&audit)
                .map(|s| s.lines().any(|l| l.contains("\"kind\":\"decision\"")))
                .unwrap_or(false)
        },
    );
    assert_ne!(before, policy_version(&d), "policy version did not change");
    let (ok, out) = verify(&[&rotated, &audit]);
    assert!(ok, "{out}");

    // SIGTERM: STOPPING=1 and exit 0.
    d.signal("-TERM");
    expect_notify(&sock, "STOPPING=1", Duration::from_secs(10));
    assert_eq!(d.exit_code(Duration::from_secs(15)), Some(0));
}

#[test]
fn bad_keys_keep_the_daemon_up_and_unready() {
    let sim = start_simulate(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut d = DaemonRig::new(dir.path(), &sim.url)
        .env("HUAWEICLOUD_SDK_SK", "NOT-THE-SECRET")
        .stderr_log()
        .spawn();
    d.wait_ok("/healthz", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    let (code, why) = d.get("/readyz");
    assert_eq!(code, 503, "{why}");
    assert!(why.contains("target"), "{why}");
    assert!(d.is_running(), "daemon exited on a cloud error");
    // Five bad signatures lock a key: only one signed attempt in these seconds.
    let state = sim.state();
    assert_eq!(
        state["requests"]["list_services"].as_u64(),
        Some(1),
        "{state}"
    );
    let code = d.stop();
    let err = d.log();
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("NOT-THE-SECRET"), "{err}");
}

#[test]
fn two_binaries_on_400_connections_agree_and_never_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let internal = "0605767a3300d5762fb7c0186d8bfc2b";
    let blocked = "9d8c7b6a5f4e4d3c2b1a0f9e8d7c6b5a";
    let services = [
        "4189d3c2-8882-4871-a3c2-d380272eed88",
        "5a6b7c8d-1111-4222-8333-944455566677",
    ];
    let mut seed = serde_json::json!({"services": []});
    for (s, sid) in services.iter().enumerate() {
        let conns: Vec<serde_json::Value> = (0..200)
            .map(|i| {
                serde_json::json!({
                    "id": format!("{s:02x}{i:06x}-0000-4000-8000-000000000000"),
                    "domain_id": if i % 2 == 0 { internal } else { blocked },
                    "description": "CHG-1 ha test",
                })
            })
            .collect();
        seed["services"].as_array_mut().expect("array").push(
            serde_json::json!({"id": sid, "service_name": format!("svc{s}"), "connections": conns}),
        );
    }
    let seed_path = dir.path().join("seed.json");
    std::fs::write(&seed_path, seed.to_string()).expect("seed");
    let sim = start_simulate(&[
        "--seed",
        seed_path.to_str().expect("utf8"),
        "--latency",
        "5ms",
    ]);
    // Each instance's config and audit log in its own directory.
    let mut instances: Vec<(Running, PathBuf)> = (0..2)
        .map(|n| {
            let d = dir.path().join(format!("instance{n}"));
            std::fs::create_dir(&d).expect("mkdir");
            let run = DaemonRig::new(&d, &sim.url)
                .poll("max_requests_per_second = 0\nmax_in_flight = 16\n")
                .no_listener()
                .once()
                .stderr_log()
                .spawn();
            (run, d.join("audit.jsonl"))
        })
        .collect();
    for (d, _) in &mut instances {
        let code = d.exit_code(Duration::from_secs(120));
        assert_eq!(code, Some(0), "{}", d.log());
    }
    let v = sim.state();
    let mut by_status = std::collections::BTreeMap::new();
    for s in v["services"].as_array().expect("services") {
        for c in s["connections"].as_array().expect("connections") {
            let want = if c["domain_id"] == internal {
                "accepted"
            } else {
                "rejected"
            };
            assert_eq!(c["status"], want, "{c}");
            *by_status.entry(want).or_insert(0) += 1;
        }
    }
    assert_eq!(by_status.get("accepted"), Some(&200));
    assert_eq!(by_status.get("rejected"), Some(&200));
    // Per connection only one kind of action was ever sent, and no outcome failed.
    let mut actions: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for a in v["actions"].as_array().expect("actions") {
        actions
            .entry(a["endpoint_id"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .insert(a["action"].as_str().unwrap_or_default().to_owned());
    }
    eprintln!(
        "actions sent by both instances: {}",
        v["actions"].as_array().map_or(0, Vec::len)
    );
    assert_eq!(actions.len(), 400);
    assert!(actions.values().all(|s| s.len() == 1));
    for (_, audit) in &instances {
        let log = std::fs::read_to_string(audit).expect("audit");
        assert!(
            !log.contains("\"outcome\":\"failed\""),
            "a race ended failed"
        );
        let (ok, out) = verify(&[audit]);
        assert!(ok, "{out}");
    }
}

/// Builds a ConfigMap-style volume of the shipped policies in `dir` (a timestamped
/// directory, `..data` pointing at it, one link per key) with `extra` files too.
fn configmap(dir: &Path, stamp: &str, extra: &[(&str, &str)]) {
    let data = dir.join(stamp);
    copy_dir(&repo("policies"), &data);
    for (name, text) in extra {
        std::fs::write(data.join(name), text).expect("write");
    }
    for e in std::fs::read_dir(&data).expect("dir") {
        let name = e.expect("entry").file_name();
        let link = dir.join(&name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(&name), link).expect("link");
        }
    }
    // The kubelet's atomic swap: a new link renamed over `..data`.
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(stamp, &tmp).expect("link");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap");
}

#[test]
fn the_policy_directory_reloads_itself_after_a_configmap_swap() {
    let (sim, dir, policies) = with_policies(|p| configmap(p, "..2026_11_27_12_00_00.1", &[]));
    let mut d = DaemonRig::new(dir.path(), &sim.url)
        .policies(&policies)
        .spawn();
    let version = || policy_version(&d);
    wait_for("metrics", Duration::from_secs(20), || version().is_some());
    let before = version();
    configmap(
        &policies,
        "..2026_11_27_12_05_00.2",
        &[(
            "zz-update.cedar",
            "@id(\"zz-update\")\nforbid (principal, action, resource) when { context.description == \"never\" };\n",
        )],
    );
    let swapped = Instant::now();
    wait_for(
        "the new version",
        Duration::from_secs(5),
        || matches!(version(), Some(v) if Some(&v) != before.as_ref()),
    );
    assert!(swapped.elapsed() < Duration::from_secs(5));
    // A half-deployed update (a dangling link) keeps the version in force.
    let now = version();
    std::os::unix::fs::symlink("..data/zz-missing.cedar", policies.join("zz-missing.cedar"))
        .expect("link");
    // The watch sees it and the reload is refused.
    wait_for("a refused reload", Duration::from_secs(10), || {
        failed_reloads(&d) >= 1.0
    });
    assert_eq!(version(), now);
    assert!(now.is_some());
    assert_eq!(d.stop(), Some(0));
}

/// A daemon that watches `policies`, polls every second and serves `/metrics`; its
/// config and audit log in `dir`.
fn watching_daemon(dir: &Path, policies: &Path, sim_url: &str) -> Running {
    DaemonRig::new(dir, sim_url)
        .policies(policies)
        .serving("/metrics")
}

#[test]
fn two_daemons_watching_one_policy_directory_do_not_reload_each_other() {
    // Each reload reads every policy file; a watch that took those reads for changes
    // made two daemons on one directory reload each other every two seconds, each
    // reload an extra cycle (and a checkpoint when signing).
    let (sim, dir, policies) = with_policies(shipped);
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a_dir).expect("mkdir");
    std::fs::create_dir(&b_dir).expect("mkdir");
    let a = watching_daemon(&a_dir, &policies, &sim.url);
    let b = watching_daemon(&b_dir, &policies, &sim.url);
    // `check` reads the directory too.
    let o = crate::cli::run(&["-c", a.cfg.to_str().expect("utf8"), "check"], &[]);
    assert_eq!(o.status.code(), Some(0));
    std::thread::sleep(Duration::from_secs(6));
    let reloads = |d: &Running| d.metric("vpcep_approver_policy_reloads_total");
    assert_eq!(reloads(&a), 0.0, "daemon a reloaded");
    assert_eq!(reloads(&b), 0.0, "daemon b reloaded");
    // A real change still reloads both.
    std::fs::write(
        policies.join("zz-late.cedar"),
        "@id(\"zz-late\")\nforbid (principal, action, resource) when { context.description == \"never\" };\n",
    )
    .expect("write");
    wait_for("both reloaded", Duration::from_secs(10), || {
        reloads(&a) == 1.0 && reloads(&b) == 1.0
    });
    drop((a, b));
}
