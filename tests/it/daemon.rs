//! The real binary as a daemon against `simulate`: readiness and watchdog on a real
//! `NOTIFY_SOCKET`, connections arriving while it runs, reload with a good and a broken
//! policy on a real SIGHUP, audit rotation, the HTTP surface, and a clean SIGTERM.

use crate::cli::{BIN, repo, start_simulate, write_config};
use crate::support::{Daemon, copy_dir, expect_notify, free_port, http, metric, wait_for};
use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn daemon_notifies_reloads_rotates_and_stops_cleanly() {
    let sim = start_simulate(&["--seed", repo("examples/seed.json").to_str().expect("utf8")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = dir.path().join("policies");
    copy_dir(&repo("policies"), &policies);
    let audit = dir.path().join("audit.jsonl");
    let port = free_port();
    let cfg = write_config(
        dir.path(),
        &policies,
        &format!(
            "vpcep_endpoint = \"{0}\"\niam_endpoint = \"{0}\"\n[poll]\ninterval = \"1s\"\njitter = \"0s\"\n[audit]\npath = {1:?}\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            sim.url,
            audit.display().to_string()
        ),
    );
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let d = Daemon {
        child: Command::new(BIN)
            .args(["-c", cfg.to_str().expect("utf8"), "run"])
            .env("HUAWEICLOUD_SDK_AK", "CLIAK")
            .env("HUAWEICLOUD_SDK_SK", "CLISECRET")
            .env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "1000000")
            .env_remove("WATCHDOG_PID")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("daemon starts"),
    };
    expect_notify(&sock, "READY=1", Duration::from_secs(20));
    expect_notify(&sock, "WATCHDOG=1", Duration::from_secs(5));
    let base = format!("http://127.0.0.1:{port}");
    wait_for("healthz", Duration::from_secs(10), || {
        http("GET", &format!("{base}/healthz"), "").0 == 200
    });
    wait_for("readyz", Duration::from_secs(20), || {
        http("GET", &format!("{base}/readyz"), "").0 == 200
    });
    // The image's HEALTHCHECK: the binary probes its own listener from the config.
    let o = Command::new(BIN)
        .args(["-c", cfg.to_str().expect("utf8"), "healthcheck"])
        .output()
        .expect("healthcheck runs");
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let (_, m) = http("GET", &format!("{base}/metrics"), "");
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
    let (st, _) = http(
        "POST",
        &format!("{}/_sim/connections", sim.url),
        r#"{"service_id":"4189d3c2-8882-4871-a3c2-d380272eed88","id":"aaaaaaaa-0000-4000-8000-000000000001","domain_id":"6e9dfd51d1124e8d8498dce894923a0d","description":"CHG-777 arrived later"}"#,
    );
    assert_eq!(st, 201);
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
    let (_, m) = http("GET", &format!("{base}/metrics"), "");
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
        || {
            let (_, m) = http("GET", &format!("{base}/metrics"), "");
            metric(
                &m,
                "vpcep_approver_policy_reloads_total{result=\"failure\"}",
            ) == 1.0
        },
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
    let (_, before) = http("GET", &format!("{base}/metrics"), "");
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
    let (_, after) = http("GET", &format!("{base}/metrics"), "");
    let version = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("vpcep_approver_policy_info{"))
            .map(str::to_owned)
    };
    assert_ne!(
        version(&before),
        version(&after),
        "policy version did not change"
    );
    let o = Command::new(BIN)
        .args([
            "audit",
            "verify",
            rotated.to_str().expect("utf8"),
            audit.to_str().expect("utf8"),
        ])
        .output()
        .expect("verify runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));

    // SIGTERM: STOPPING=1 and exit 0.
    let mut d = d;
    d.signal("-TERM");
    expect_notify(&sock, "STOPPING=1", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = d.child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "daemon did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn bad_keys_keep_the_daemon_up_and_unready() {
    let sim = start_simulate(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg = write_config(
        dir.path(),
        &repo("policies"),
        &format!(
            "vpcep_endpoint = \"{0}\"\niam_endpoint = \"{0}\"\n[poll]\ninterval = \"1s\"\njitter = \"0s\"\n[audit]\npath = {1:?}\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            sim.url,
            dir.path().join("audit.jsonl").display().to_string()
        ),
    );
    let mut d = Daemon {
        child: Command::new(BIN)
            .args(["-c", cfg.to_str().expect("utf8"), "run"])
            .env("HUAWEICLOUD_SDK_AK", "CLIAK")
            .env("HUAWEICLOUD_SDK_SK", "NOT-THE-SECRET")
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("daemon starts"),
    };
    let base = format!("http://127.0.0.1:{port}");
    wait_for("healthz", Duration::from_secs(10), || {
        http("GET", &format!("{base}/healthz"), "").0 == 200
    });
    std::thread::sleep(Duration::from_secs(3));
    let (code, why) = http("GET", &format!("{base}/readyz"), "");
    assert_eq!(code, 503, "{why}");
    assert!(why.contains("target"), "{why}");
    assert!(
        d.child.try_wait().expect("wait").is_none(),
        "daemon exited on a cloud error"
    );
    // Five bad signatures lock a key: only one signed attempt in these seconds.
    let (_, state) = http("GET", &format!("{}/_sim/state", sim.url), "");
    let v: serde_json::Value = serde_json::from_str(&state).expect("state");
    assert_eq!(v["requests"]["list_services"].as_u64(), Some(1), "{state}");
    d.signal("-TERM");
    let mut err = String::new();
    let status = d.child.wait().expect("wait");
    if let Some(mut e) = d.child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert_eq!(status.code(), Some(0), "{err}");
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
    let mut children = Vec::new();
    let mut audits = Vec::new();
    for n in 0..2 {
        let d = dir.path().join(format!("instance{n}"));
        std::fs::create_dir(&d).expect("mkdir");
        let audit = d.join("audit.jsonl");
        let cfg = write_config(
            &d,
            &repo("policies"),
            &format!(
                "vpcep_endpoint = \"{0}\"\niam_endpoint = \"{0}\"\n[poll]\nmax_requests_per_second = 0\nmax_in_flight = 16\n[audit]\npath = {1:?}\n",
                sim.url,
                audit.display().to_string()
            ),
        );
        audits.push(audit);
        children.push(
            Command::new(BIN)
                .args(["-c", cfg.to_str().expect("utf8"), "run", "--once"])
                .env("HUAWEICLOUD_SDK_AK", "CLIAK")
                .env("HUAWEICLOUD_SDK_SK", "CLISECRET")
                .env_remove("NOTIFY_SOCKET")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("instance starts"),
        );
    }
    for c in children {
        let o = c.wait_with_output().expect("wait");
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let (_, state) = http("GET", &format!("{}/_sim/state", sim.url), "");
    let v: serde_json::Value = serde_json::from_str(&state).expect("state");
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
    for audit in &audits {
        let log = std::fs::read_to_string(audit).expect("audit");
        assert!(
            !log.contains("\"outcome\":\"failed\""),
            "a race ended failed"
        );
        let o = Command::new(BIN)
            .args(["audit", "verify", audit.to_str().expect("utf8")])
            .output()
            .expect("verify");
        assert!(o.status.success());
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
    let sim = start_simulate(&["--seed", repo("examples/seed.json").to_str().expect("utf8")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).expect("mkdir");
    configmap(&policies, "..2026_11_27_12_00_00.1", &[]);
    let port = free_port();
    let cfg = write_config(
        dir.path(),
        &policies,
        &format!(
            "vpcep_endpoint = \"{0}\"\niam_endpoint = \"{0}\"\n[poll]\ninterval = \"1s\"\njitter = \"0s\"\n[audit]\npath = {1:?}\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            sim.url,
            dir.path().join("audit.jsonl").display().to_string()
        ),
    );
    let mut d = Daemon {
        child: Command::new(BIN)
            .args(["-c", cfg.to_str().expect("utf8"), "run"])
            .env("HUAWEICLOUD_SDK_AK", "CLIAK")
            .env("HUAWEICLOUD_SDK_SK", "CLISECRET")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("daemon starts"),
    };
    let base = format!("http://127.0.0.1:{port}");
    let version = || {
        let (_, m) = http("GET", &format!("{base}/metrics"), "");
        m.lines()
            .find(|l| l.starts_with("vpcep_approver_policy_info{"))
            .map(str::to_owned)
    };
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
        let (_, m) = http("GET", &format!("{base}/metrics"), "");
        metric(
            &m,
            "vpcep_approver_policy_reloads_total{result=\"failure\"}",
        ) >= 1.0
    });
    assert_eq!(version(), now);
    assert!(now.is_some());
    d.signal("-TERM");
    assert_eq!(d.child.wait().expect("wait").code(), Some(0));
}

/// A daemon that watches `policies`, polls every second and serves `/metrics`; its
/// config and audit log in `dir`.
fn watching_daemon(dir: &Path, policies: &Path, sim_url: &str) -> (Daemon, String) {
    let port = free_port();
    let cfg = write_config(
        dir,
        policies,
        &format!(
            "vpcep_endpoint = \"{sim_url}\"\niam_endpoint = \"{sim_url}\"\n[poll]\ninterval = \"1s\"\njitter = \"0s\"\n[audit]\npath = {:?}\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            dir.join("audit.jsonl").display().to_string()
        ),
    );
    let child = Command::new(BIN)
        .args(["-c", cfg.to_str().expect("utf8"), "run"])
        .env("HUAWEICLOUD_SDK_AK", "CLIAK")
        .env("HUAWEICLOUD_SDK_SK", "CLISECRET")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon starts");
    Daemon::serving(child, port, "/metrics")
}

#[test]
fn two_daemons_watching_one_policy_directory_do_not_reload_each_other() {
    // Each reload reads every policy file; a watch that took those reads for changes
    // made two daemons on one directory reload each other every two seconds, each
    // reload an extra cycle (and a checkpoint when signing).
    let sim = start_simulate(&["--seed", repo("examples/seed.json").to_str().expect("utf8")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = dir.path().join("policies");
    copy_dir(&repo("policies"), &policies);
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a_dir).expect("mkdir");
    std::fs::create_dir(&b_dir).expect("mkdir");
    let (a, a_url) = watching_daemon(&a_dir, &policies, &sim.url);
    let (b, b_url) = watching_daemon(&b_dir, &policies, &sim.url);
    // `check` reads the directory too.
    let o = crate::cli::run(
        &[
            "-c",
            a_dir.join("config.toml").to_str().expect("utf8"),
            "check",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0));
    std::thread::sleep(Duration::from_secs(6));
    let reloads = |base: &str| {
        let (_, m) = http("GET", &format!("{base}/metrics"), "");
        metric(&m, "vpcep_approver_policy_reloads_total")
    };
    assert_eq!(reloads(&a_url), 0.0, "daemon a reloaded");
    assert_eq!(reloads(&b_url), 0.0, "daemon b reloaded");
    // A real change still reloads both.
    std::fs::write(
        policies.join("zz-late.cedar"),
        "@id(\"zz-late\")\nforbid (principal, action, resource) when { context.description == \"never\" };\n",
    )
    .expect("write");
    wait_for("both reloaded", Duration::from_secs(10), || {
        reloads(&a_url) == 1.0 && reloads(&b_url) == 1.0
    });
    drop((a, b));
}
