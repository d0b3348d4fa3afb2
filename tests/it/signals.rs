//! The real binary under real signals (README "Reload, rotation and shutdown"): a reload
//! is in force within a second also in the middle of a long drain; a stop starts nothing
//! new, lets requests on the wire finish and records every outcome, also for `run
//! --once`; a stop during a long `Retry-After` wait ends at once; a second stop ends the
//! wait for the wire, with `unknown` outcomes and exit 1.

use crate::cli::{BIN, start_simulate, write_config};
use crate::support::{Daemon, http, simple_policies, wait_for};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SVC: &str = "4189d3c2-8882-4871-a3c2-d380272eed88";
const PARTNER: &str = "6e9dfd51d1124e8d8498dce894923a0d";

/// A seed file with `n` pending partner connections, created a second apart.
fn seed(dir: &Path, n: usize) -> PathBuf {
    let base = Utc::now() - chrono::Duration::hours(1);
    let conns: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "id": format!("p{i:03}"), "domain_id": PARTNER, "description": "CHG-1",
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

struct Run {
    daemon: Daemon,
    audit: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
    policies: tempfile::TempDir,
}

/// Starts `run` (or `run --once`) against `sim_url` with `poll` lines.
fn start(sim_url: &str, poll: &str, once: bool) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = simple_policies("");
    let audit = dir.path().join("audit.jsonl");
    let cfg = write_config(
        dir.path(),
        policies.path(),
        &format!(
            "vpcep_endpoint = \"{sim_url}\"\niam_endpoint = \"{sim_url}\"\n[poll]\ninterval = \"1s\"\njitter = \"0s\"\n{poll}\n[audit]\npath = {:?}\n",
            audit.display().to_string()
        ),
    );
    let log = dir.path().join("stderr.log");
    let mut args = vec!["-c", cfg.to_str().expect("utf8"), "run"];
    if once {
        args.push("--once");
    }
    let child = Command::new(BIN)
        .args(&args)
        .env("HUAWEICLOUD_SDK_AK", "CLIAK")
        .env("HUAWEICLOUD_SDK_SK", "CLISECRET")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("daemon starts");
    Run {
        daemon: Daemon { child },
        audit,
        log,
        _dir: dir,
        policies,
    }
}

impl Run {
    /// Waits for the process to exit (at most `within`); its exit code.
    fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.daemon.child.try_wait().expect("wait") {
                return s.code();
            }
            assert!(
                Instant::now() < deadline,
                "did not exit within {within:?}: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn records(&self) -> Vec<serde_json::Value> {
        crate::support::audit_lines(&self.audit)
    }

    /// Every decision with an action has exactly one outcome; returns the outcomes.
    fn one_outcome_each(&self) -> Vec<String> {
        let lines = self.records();
        let mut outcomes: HashMap<String, Vec<String>> = HashMap::new();
        for l in &lines {
            if l["kind"] == "outcome" {
                outcomes
                    .entry(l["decision_id"].as_str().unwrap_or_default().to_owned())
                    .or_default()
                    .push(l["outcome"].as_str().unwrap_or_default().to_owned());
            }
        }
        let mut all = Vec::new();
        for l in &lines {
            if l["kind"] == "decision" && l["action"] != "none" {
                let id = l["decision_id"].as_str().unwrap_or_default();
                let got = outcomes.get(id).cloned().unwrap_or_default();
                assert_eq!(got.len(), 1, "decision {id}: outcomes {got:?}");
                all.extend(got);
            }
        }
        assert_eq!(
            all.len(),
            outcomes.values().map(Vec::len).sum::<usize>(),
            "no outcome without its decision"
        );
        all
    }
}

fn state(sim_url: &str) -> serde_json::Value {
    let (_, body) = http("GET", &format!("{sim_url}/_sim/state"), "");
    serde_json::from_str(&body).expect("state")
}

fn time(s: &serde_json::Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s.as_str().expect("time"))
        .expect("rfc3339")
        .with_timezone(&Utc)
}

/// Arrival times of the action requests the simulator received.
fn action_arrivals(sim_url: &str) -> Vec<DateTime<Utc>> {
    state(sim_url)["signed"]
        .as_array()
        .expect("signed")
        .iter()
        .filter(|r| r["operation"] == "action")
        .map(|r| time(&r["time"]))
        .collect()
}

fn action_requests(sim_url: &str) -> u64 {
    state(sim_url)["requests"]["action"].as_u64().unwrap_or(0)
}

fn set_faults(sim_url: &str, faults: serde_json::Value) {
    let (code, body) = http(
        "POST",
        &format!("{sim_url}/_sim/faults"),
        &faults.to_string(),
    );
    assert_eq!(code, 200, "{body}");
}

#[test]
fn a_reload_mid_drain_is_in_force_within_a_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = start_simulate(&[
        "--seed",
        seed(dir.path(), 80).to_str().expect("utf8"),
        "--latency",
        "20ms",
    ]);
    let mut run = start(
        &sim.url,
        "max_requests_per_second = 5\nmax_in_flight = 2\n",
        false,
    );
    wait_for("a few actions", Duration::from_secs(20), || {
        action_requests(&sim.url) >= 5
    });
    std::fs::write(
        run.policies.path().join("zz-emergency.cedar"),
        "@id(\"emergency\")\nforbid (principal in Vpcep::AccountGroup::\"partners\", action, resource);\n",
    )
    .expect("write");
    let hup = Utc::now();
    run.daemon.signal("-HUP");
    std::thread::sleep(Duration::from_secs(6));
    let actions = state(&sim.url)["actions"]
        .as_array()
        .expect("actions")
        .clone();
    let late_receives: Vec<_> = actions
        .iter()
        .filter(|a| {
            a["action"] == "receive"
                && time(&a["time"]) > hup + chrono::Duration::milliseconds(1100)
        })
        .collect();
    assert!(
        late_receives.is_empty(),
        "receives the new policies forbid: {late_receives:?}"
    );
    assert!(
        actions.iter().any(|a| a["action"] == "reject"),
        "the new policies are applied to the rest"
    );
    run.daemon.signal("-TERM");
    assert_eq!(run.exit_code(Duration::from_secs(15)), Some(0));
    let outcomes = run.one_outcome_each();
    assert!(
        outcomes.iter().any(|o| o == "skipped"),
        "superseded decisions are skipped: {outcomes:?}"
    );
}

/// SIGTERM while actions are on the wire: nothing starts later than 0.5 s after it, what
/// is on the wire finishes and gets its outcome, the rest is skipped, exit 0.
fn stop_while_actions_are_on_the_wire(once: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = start_simulate(&[
        "--seed",
        seed(dir.path(), 40).to_str().expect("utf8"),
        "--latency",
        "500ms",
    ]);
    let mut run = start(
        &sim.url,
        "max_requests_per_second = 0\nmax_in_flight = 4\nmax_decision_age = \"60s\"\nrequest_timeout = \"5s\"\n",
        once,
    );
    wait_for("actions on the wire", Duration::from_secs(20), || {
        action_requests(&sim.url) >= 4
    });
    let term = Utc::now();
    run.daemon.signal("-TERM");
    assert_eq!(run.exit_code(Duration::from_secs(12)), Some(0));
    let late: Vec<_> = action_arrivals(&sim.url)
        .into_iter()
        .filter(|t| *t > term + chrono::Duration::milliseconds(500))
        .collect();
    assert!(late.is_empty(), "actions started after the stop: {late:?}");
    let outcomes = run.one_outcome_each();
    let applied = outcomes.iter().filter(|o| *o == "applied").count();
    assert!(
        applied >= 4,
        "the actions on the wire finished: {outcomes:?}"
    );
    assert!(
        outcomes.iter().all(|o| o == "applied" || o == "skipped"),
        "{outcomes:?}"
    );
}

#[test]
fn a_stop_starts_nothing_new_and_records_every_outcome() {
    stop_while_actions_are_on_the_wire(false);
}

#[test]
fn run_once_obeys_a_stop_too() {
    stop_while_actions_are_on_the_wire(true);
}

#[test]
fn a_stop_during_a_long_retry_after_wait_ends_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = start_simulate(&["--seed", seed(dir.path(), 3).to_str().expect("utf8")]);
    set_faults(
        &sim.url,
        serde_json::json!({"script": [{"op": "list_services", "status": 429, "retry_after": "60s", "times": 10}]}),
    );
    let mut run = start(&sim.url, "max_retries = 4\n", false);
    wait_for("the throttled listing", Duration::from_secs(20), || {
        state(&sim.url)["requests"]["list_services"].as_u64() >= Some(1)
    });
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    run.daemon.signal("-TERM");
    assert_eq!(run.exit_code(Duration::from_secs(5)), Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn a_second_stop_ends_the_wait_with_unknown_outcomes_and_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = start_simulate(&["--seed", seed(dir.path(), 8).to_str().expect("utf8")]);
    // Every action takes half a minute to answer.
    set_faults(
        &sim.url,
        serde_json::json!({"script": [{"op": "action", "status": 200, "delay": "30s", "apply": true, "times": 100}]}),
    );
    let mut run = start(
        &sim.url,
        "max_requests_per_second = 0\nmax_in_flight = 4\nrequest_timeout = \"60s\"\n",
        false,
    );
    wait_for("actions on the wire", Duration::from_secs(20), || {
        action_requests(&sim.url) >= 4
    });
    run.daemon.signal("-TERM");
    std::thread::sleep(Duration::from_secs(1));
    let t = Instant::now();
    run.daemon.signal("-TERM");
    assert_eq!(run.exit_code(Duration::from_secs(5)), Some(1));
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    let outcomes = run.one_outcome_each();
    assert_eq!(
        outcomes.iter().filter(|o| *o == "unknown").count(),
        4,
        "{outcomes:?}"
    );
    assert!(
        outcomes.iter().all(|o| o == "unknown" || o == "skipped"),
        "{outcomes:?}"
    );
}
