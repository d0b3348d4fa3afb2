//! The real binary's logs: a typo in `[log] level` or `RUST_LOG` is exit 78 naming it, and
//! an API answer with newlines, escape sequences and NUL in a `domain_id` neither forges a
//! line nor reaches the terminal raw, in the text and the JSON format.

use crate::cli::{BIN, repo, run, start_simulate, write_config};
use std::process::Command;

#[test]
fn level_and_rust_log_typos_exit_78_naming_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &repo("policies"), "[log]\nlevel = \"loud\"\n");
    let o = run(&["-c", cfg.to_str().expect("utf8"), "check"], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(78), "{err}");
    assert!(
        err.contains("config.toml: log.level: \"loud\" is not a level"),
        "{err}"
    );

    let cfg = write_config(dir.path(), &repo("policies"), "");
    let c = cfg.to_str().expect("utf8");
    for bad in ["loud", "vpcep_approver=loud", "info,[", "warning"] {
        let o = run(&["-c", c, "run", "--once"], &[("RUST_LOG", bad)]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(78), "RUST_LOG={bad}: {err}");
        assert!(err.contains("RUST_LOG: "), "RUST_LOG={bad}: {err}");
    }
    // A valid filter passes logging; the run then stops at the missing secret.
    let o = run(
        &["-c", c, "run", "--once"],
        &[("RUST_LOG", "info,vpcep_approver=debug,hyper=warn")],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(78), "{err}");
    assert!(
        !err.contains("RUST_LOG") && err.contains("HUAWEICLOUD_SDK_AK"),
        "{err}"
    );
}

const HOSTILE: &str =
    "6e9d\n2026-01-01T00:00:00.000000Z  INFO vpcep_approver::engine: forged\u{1b}[2J\u{0}\u{9b}31m";

/// `run --once --dry-run` against a simulator whose one pending connection has a hostile
/// `domain_id`; returns stderr.
fn logs_of_a_hostile_answer(format: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = serde_json::json!({"services": [{
        "id": "4189d3c2-8882-4871-a3c2-d380272eed88",
        "service_name": "cn-north-4.payments.4189d3c2",
        "connections": [{"id": "705290f3-0000-4000-8000-000000000001", "domain_id": HOSTILE,
                          "description": "CHG-1 \"}\n{\"level\":\"ERROR\"}"}]
    }]});
    let seed_path = dir.path().join("seed.json");
    std::fs::write(&seed_path, seed.to_string()).expect("seed");
    let sim = start_simulate(&["--seed", seed_path.to_str().expect("utf8")]);
    let cfg = write_config(
        dir.path(),
        &repo("policies"),
        &format!(
            "vpcep_endpoint = \"{0}\"\niam_endpoint = \"{0}\"\n[audit]\npath = {1:?}\n[log]\nformat = \"{format}\"\n",
            sim.url,
            dir.path().join("audit.jsonl").display().to_string()
        ),
    );
    let o = Command::new(BIN)
        .args([
            "-c",
            cfg.to_str().expect("utf8"),
            "run",
            "--once",
            "--dry-run",
        ])
        .env("HUAWEICLOUD_SDK_AK", "CLIAK")
        .env("HUAWEICLOUD_SDK_SK", "CLISECRET")
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("runs");
    let err = String::from_utf8(o.stderr).expect("logs are UTF-8");
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("CLISECRET"), "{err}");
    for c in err.chars().filter(|&c| c != '\n') {
        assert!(!c.is_control(), "raw {c:?} in the log:\n{err}");
    }
    err
}

#[test]
fn a_hostile_domain_id_cannot_forge_a_text_line() {
    let err = logs_of_a_hostile_answer("text");
    let lines: Vec<&str> = err.lines().collect();
    assert!(!lines.is_empty());
    for l in &lines {
        // Every line is one of ours: it starts with its own timestamp and level.
        assert!(
            l.len() > 30 && l.as_bytes()[4] == b'-' && l.as_bytes()[10] == b'T',
            "{l}"
        );
        assert!(!l.starts_with("2026-01-01T00:00:00.000000Z"), "forged: {l}");
    }
    let decision = lines
        .iter()
        .find(|l| l.contains(" decision "))
        .expect("a decision line");
    assert!(
        decision.contains(
            "domain_id=\"6e9d\\u{a}2026-01-01T00:00:00.000000Z  INFO vpcep_approver::engine: forged\\u{1b}[2J\\u{0}\\u{9b}31m\""
        ),
        "{decision}"
    );
}

#[test]
fn a_hostile_domain_id_stays_one_json_value() {
    let err = logs_of_a_hostile_answer("json");
    let mut decisions = 0;
    for l in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object ({e}): {l}"));
        let module = v["module"].as_str().expect("module");
        assert!(module.starts_with("vpcep_approver"), "{l}");
        // The Rust module path is never under "target".
        assert!(
            !v["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("vpcep_approver")),
            "{l}"
        );
        if v["message"] == "decision" {
            decisions += 1;
            assert_eq!(v["domain_id"], HOSTILE, "{l}");
            assert_eq!(v["dry_run"], true, "{l}");
        }
    }
    assert_eq!(decisions, 1, "{err}");
}
