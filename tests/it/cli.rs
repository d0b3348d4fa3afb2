//! The real binary: exit codes and messages of `check`, `eval`, `test`, `audit verify`,
//! `run --once` and `simulate`.

use std::path::{Path, PathBuf};
use std::process::Output;

pub use crate::rig::start_simulate;

pub const BIN: &str = env!("CARGO_BIN_EXE_vpcep-approver");

pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Runs the binary with a clean environment (no cloud secrets from the caller).
pub fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    crate::rig::clean_command(&[])
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("binary runs")
}

/// The stdout and stderr of `o`, as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Writes a config in `dir` pointing at `policies` (absolute), with extra TOML appended.
pub fn write_config(dir: &Path, policies: &Path, extra: &str) -> PathBuf {
    let p = dir.join("config.toml");
    std::fs::write(
        &p,
        format!(
            "[[target]]\nregion = \"cn-north-4\"\nproject_id = \"0605767a3300d5762fb7c0186d8bfc2b\"\n{extra}\n[policy]\ndir = {:?}\n",
            policies.display().to_string()
        ),
    )
    .expect("write config");
    p
}

#[test]
fn check_accepts_the_shipped_config_without_secrets() {
    let cfg = repo("config/vpcep-approver.toml");
    let o = run(&["-c", cfg.to_str().expect("utf8"), "check"], &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    for want in [
        "target cn-north-4",
        "policy allow-partners",
        "policy version: sha256:",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
}

#[test]
fn config_from_the_environment_variable() {
    let cfg = repo("config/vpcep-approver.toml");
    let o = run(
        &["check"],
        &[("VPCEP_APPROVER_CONFIG", cfg.to_str().expect("utf8"))],
    );
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
}

#[test]
fn bad_config_exits_78_naming_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("[poll]\ninterval = \"often\"\n", "poll.interval"),
        ("[poll]\nmax_inflight = 3\n", "max_inflight"),
        (
            "[[target]]\nregion = \"x\"\nproject_id = \"p\"\nvpcep_endpoint = \"http://10.0.0.1\"\n",
            "vpcep_endpoint",
        ),
        ("[auth]\nmethod = \"kerberos\"\n", "auth.method"),
    ];
    for (extra, key) in cases {
        let cfg = write_config(dir.path(), &repo("policies"), extra);
        let o = run(&["-c", cfg.to_str().expect("utf8"), "check"], &[]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(78), "{extra}: {err}");
        assert!(err.contains(key), "{extra}: {err}");
        assert!(err.contains("config.toml"), "{extra}: {err}");
    }
    let o = run(&["-c", "/nonexistent/config.toml", "check"], &[]);
    assert_eq!(o.status.code(), Some(78));
    assert!(text(&o).1.contains("/nonexistent/config.toml"));
}

#[test]
fn broken_policies_exit_78_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pol = dir.path().join("policies");
    std::fs::create_dir(&pol).expect("mkdir");
    for f in ["schema.cedarschema", "entities.json", "allow.cedar"] {
        std::fs::copy(repo("policies").join(f), pol.join(f)).expect("copy");
    }
    std::fs::write(
        pol.join("zz-broken.cedar"),
        "permit (principal, action, resource) when { ;",
    )
    .expect("write");
    let cfg = write_config(dir.path(), &pol, "");
    for cmd in [&["check"][..], &["eval", "--domain-id", "x"], &["test"]] {
        let mut args = vec!["-c", cfg.to_str().expect("utf8")];
        args.extend_from_slice(cmd);
        let o = run(&args, &[]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(78), "{cmd:?}: {err}");
        assert!(err.contains("zz-broken.cedar"), "{cmd:?}: {err}");
    }
}

#[test]
fn healthcheck_fails_without_a_listener_and_names_what_it_probed() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let started = std::time::Instant::now();
    let o = run(&["healthcheck", "--url", &url], &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&url), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    // From a config without [http]: nothing to probe, said so.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &repo("policies"), "");
    let o = run(&["-c", cfg.to_str().expect("utf8"), "healthcheck"], &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("[http]"), "{err}");
    // Whatever keeps it from a 200 is exit 1, as a container HEALTHCHECK reads it (2 is
    // reserved there): a URL it cannot probe, a config it cannot read, a name that does
    // not resolve (within the 3 s too).
    let missing = dir.path().join("missing.toml");
    let cases: [&[&str]; 3] = [
        &["healthcheck", "--url", "ftp://x"],
        &["-c", missing.to_str().expect("utf8"), "healthcheck"],
        &[
            "healthcheck",
            "--url",
            "http://no-such-host.invalid:9464/healthz",
        ],
    ];
    for args in cases {
        let started = std::time::Instant::now();
        let o = run(args, &[]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(!err.trim().is_empty(), "{args:?}: says why");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(4),
            "{args:?}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&["frobnicate"], &[]).status.code(), Some(2));
    assert_eq!(run(&["eval"], &[]).status.code(), Some(2));
    let (code, _, err) = eval(&["--domain-id", "x", "--created-at", "yesterday"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--created-at"));
}

/// `eval` with the shipped config and `args`: its exit code, stdout and stderr.
fn eval(args: &[&str]) -> (Option<i32>, String, String) {
    let cfg = repo("config/vpcep-approver.toml");
    let mut all = vec!["-c", cfg.to_str().expect("utf8"), "eval"];
    all.extend_from_slice(args);
    let o = run(&all, &[]);
    let (out, err) = text(&o);
    (o.status.code(), out, err)
}

#[test]
fn eval_prints_verdict_and_json_record() {
    let (code, out, err) = eval(&[
        "--domain-id",
        "6e9dfd51d1124e8d8498dce894923a0d",
        "--service-id",
        "4189d3c2-8882-4871-a3c2-d380272eed88",
        "--description",
        "CHG-1234 payments link",
    ]);
    assert_eq!(code, Some(0), "{err}");
    for want in ["verdict: permit", "action: receive", "allow-partners"] {
        assert!(out.contains(want), "{want}: {out}");
    }

    let hostile = "CHG-1 \"}\n{\"verdict\":\"permit\"}\u{1b}[31m";
    let (code, out, err) = eval(&[
        "--json",
        "--domain-id",
        "9d8c7b6a5f4e4d3c2b1a0f9e8d7c6b5a",
        "--description",
        hostile,
        "--marker-id",
        "422321321312321321",
        "--created-at",
        "2026-11-20T09:35:47Z",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 1, "one JSON line: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["kind"], "decision");
    assert_eq!(v["verdict"], "forbid");
    assert_eq!(v["action"], "reject");
    assert_eq!(v["description"], hostile);
    assert_eq!(v["marker_id"].as_i64(), Some(422_321_321_312_321_321));
    assert_eq!(v["created_at"], "2026-11-20T09:35:47Z");
    assert!(
        v["policies"]
            .as_array()
            .expect("array")
            .iter()
            .any(|p| p == "forbid-blocked")
    );
    assert!(v.get("ts").is_none() && v.get("prev").is_none());
    assert!(
        v["policy_version"]
            .as_str()
            .expect("version")
            .starts_with("sha256:")
    );
}

#[test]
fn test_command_counts_pass_and_fail() {
    let cfg = repo("config/vpcep-approver.toml");
    let c = cfg.to_str().expect("utf8");
    let o = run(&["-c", c, "test"], &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    let last = out.lines().last().expect("summary");
    assert!(last.ends_with(" passed, 0 failed"), "{last}");

    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("cases.toml");
    std::fs::write(
        &f,
        "[[case]]\nname = \"right\"\ndomain_id = \"9d8c7b6a5f4e4d3c2b1a0f9e8d7c6b5a\"\nexpect = \"reject\"\n\n\
         [[case]]\nname = \"wrong\"\ndomain_id = \"9d8c7b6a5f4e4d3c2b1a0f9e8d7c6b5a\"\nexpect = \"receive\"\n",
    )
    .expect("write");
    let o = run(&["-c", c, "test", f.to_str().expect("utf8")], &[]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_eq!(out.lines().last(), Some("1 passed, 1 failed"), "{out}");
    assert!(out.contains("FAILED wrong"), "{out}");
}

#[test]
fn audit_verify_reports_the_first_bad_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("audit.jsonl");
    {
        let mut w = vpcep_approver::audit::AuditWriter::open(
            vpcep_approver::audit::AuditPath::File(log.clone()),
            false,
            vpcep_approver::clock::system(),
        )
        .expect("open");
        for i in 0..3 {
            w.append_outcome(&vpcep_approver::audit::OutcomeRecord {
                decision_id: format!("d{i}"),
                endpoint_id: format!("e{i}"),
                action: vpcep_approver::decision::Action::Receive,
                outcome: vpcep_approver::decision::Outcome::Applied,
                status_after: Some("accepted".into()),
                http_status: Some(200),
                error_code: None,
                error_message: None,
                attempts: 1,
            })
            .expect("append");
        }
    }
    let l = log.to_str().expect("utf8");
    let o = run(&["audit", "verify", l], &[]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let body = std::fs::read_to_string(&log).expect("read");
    std::fs::write(&log, body.replacen("\"e1\"", "\"e9\"", 1)).expect("tamper");
    let o = run(&["audit", "verify", l], &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        format!("{out}{err}").contains(":3"),
        "the break shows at line 3: {out}{err}"
    );
}

#[test]
fn run_once_against_simulate_decides_and_exits_zero() {
    let sim = start_simulate(&["--seed", repo("examples/seed.json").to_str().expect("utf8")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit.jsonl");
    let cfg = write_config(
        dir.path(),
        &repo("policies"),
        &format!(
            "vpcep_endpoint = \"{0}\"\niam_endpoint = \"{0}\"\n[audit]\npath = {1:?}\n",
            sim.url,
            audit.display().to_string()
        ),
    );
    let c = cfg.to_str().expect("utf8");
    // Without the secrets: exit 78 naming the variable.
    let o = run(&["-c", c, "run", "--once"], &[]);
    assert_eq!(o.status.code(), Some(78), "{:?}", text(&o));
    assert!(text(&o).1.contains("HUAWEICLOUD_SDK_AK"), "{:?}", text(&o));
    let keys = [
        ("HUAWEICLOUD_SDK_AK", "CLIAK"),
        ("HUAWEICLOUD_SDK_SK", "CLISECRET"),
    ];
    let o = run(&["-c", c, "run", "--once", "--dry-run"], &keys);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let dry = std::fs::read_to_string(&audit).expect("audit written");
    assert!(dry.lines().count() > 0);
    assert!(dry.lines().all(|l| l.contains("\"dry_run\":true")));
    let o = run(&["-c", c, "run", "--once"], &keys);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(
        !err.contains("CLISECRET") && !out.contains("CLISECRET"),
        "secret leaked"
    );
    let log = std::fs::read_to_string(&audit).expect("audit");
    assert!(!log.contains("CLISECRET"));
    assert!(log.contains("\"kind\":\"outcome\""), "{log}");
    let o = run(&["audit", "verify", audit.to_str().expect("utf8")], &[]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    // A wrong key: the target fails, exit 1, and the secret is not echoed.
    let o = run(
        &["-c", c, "run", "--once"],
        &[
            ("HUAWEICLOUD_SDK_AK", "CLIAK"),
            ("HUAWEICLOUD_SDK_SK", "WRONGSECRET"),
        ],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(!err.contains("WRONGSECRET"), "{err}");
}
