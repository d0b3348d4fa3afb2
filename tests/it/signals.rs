//! The real binary under real signals (README "Reload, rotation and shutdown"): a reload
//! is in force within a second also in the middle of a long drain; a stop starts nothing
//! new, lets requests on the wire finish and records every outcome, also for `run
//! --once`; a stop during a long `Retry-After` wait ends at once; a second stop ends the
//! wait for the wire, with `unknown` outcomes and exit 1.

use crate::rig::{DaemonRig, Running, SimProcess, start_simulate, write_seed};
use crate::support::{seed_conn, seed_of, simple_policies, wait_for};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SVC: &str = "4189d3c2-8882-4871-a3c2-d380272eed88";
const PARTNER: &str = "6e9dfd51d1124e8d8498dce894923a0d";

/// `simulate` with `n` pending partner connections, created a second apart, and `extra`
/// flags; the seed's directory lives as long as the guard.
fn simulate(n: usize, extra: &[&str]) -> (SimProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let conns = (0..n)
        .map(|i| {
            seed_conn(
                &format!("p{i:03}"),
                PARTNER,
                "CHG-1",
                "pendingAcceptance",
                i as i64,
            )
        })
        .collect();
    let seed = write_seed(dir.path(), &seed_of(SVC, conns));
    let mut args = vec!["--seed", seed.to_str().expect("utf8")];
    args.extend_from_slice(extra);
    (start_simulate(&args), dir)
}

/// A daemon under test and the simulator it works against.
struct Run {
    daemon: Running,
    sim: SimProcess,
    audit: PathBuf,
    _dirs: [tempfile::TempDir; 2],
    policies: tempfile::TempDir,
}

/// Starts `run` (or `run --once`) against `sim` (from [`simulate`]) with `poll` lines.
fn start((sim, seed_dir): (SimProcess, tempfile::TempDir), poll: &str, once: bool) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = simple_policies("");
    let rig = DaemonRig::new(dir.path(), &sim.url)
        .policies(policies.path())
        .poll_more(poll)
        .no_listener()
        .stderr_log();
    let daemon = if once { rig.once() } else { rig }.spawn();
    Run {
        daemon,
        sim,
        audit: dir.path().join("audit.jsonl"),
        _dirs: [dir, seed_dir],
        policies,
    }
}

impl Run {
    /// SIGTERM; the exit code, which must come within `limit`.
    fn term_exits_within(&mut self, limit: Duration) -> Option<i32> {
        let t = Instant::now();
        self.daemon.signal("-TERM");
        let code = self.daemon.exit_code(Duration::from_secs(5));
        assert!(t.elapsed() < limit, "took {:?}", t.elapsed());
        code
    }

    /// Waits until at least `n` action requests reached the simulator.
    fn wait_for_actions(&self, what: &str, n: u64) {
        wait_for(what, Duration::from_secs(20), || {
            action_requests(&self.sim) >= n
        });
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

fn time(s: &serde_json::Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s.as_str().expect("time"))
        .expect("rfc3339")
        .with_timezone(&Utc)
}

/// Arrival times of the action requests the simulator received.
fn action_arrivals(sim: &SimProcess) -> Vec<DateTime<Utc>> {
    sim.state()["signed"]
        .as_array()
        .expect("signed")
        .iter()
        .filter(|r| r["operation"] == "action")
        .map(|r| time(&r["time"]))
        .collect()
}

fn action_requests(sim: &SimProcess) -> u64 {
    sim.state()["requests"]["action"].as_u64().unwrap_or(0)
}

fn set_faults(sim: &SimProcess, faults: serde_json::Value) {
    sim.post("/_sim/faults", &faults.to_string(), 200);
}

#[test]
fn a_reload_mid_drain_is_in_force_within_a_second() {
    let mut run = start(
        simulate(80, &["--latency", "20ms"]),
        "max_requests_per_second = 5\nmax_in_flight = 2\n",
        false,
    );
    run.wait_for_actions("a few actions", 5);
    std::fs::write(
        run.policies.path().join("zz-emergency.cedar"),
        "@id(\"emergency\")\nforbid (principal in Vpcep::AccountGroup::\"partners\", action, resource);\n",
    )
    .expect("write");
    let hup = Utc::now();
    run.daemon.signal("-HUP");
    std::thread::sleep(Duration::from_secs(6));
    let actions = run.sim.state()["actions"]
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
    assert_eq!(run.daemon.stop(), Some(0));
    let outcomes = run.one_outcome_each();
    assert!(
        outcomes.iter().any(|o| o == "skipped"),
        "superseded decisions are skipped: {outcomes:?}"
    );
}

/// SIGTERM while actions are on the wire: nothing starts later than 0.5 s after it, what
/// is on the wire finishes and gets its outcome, the rest is skipped, exit 0.
fn stop_while_actions_are_on_the_wire(once: bool) {
    let mut run = start(
        simulate(40, &["--latency", "500ms"]),
        "max_requests_per_second = 0\nmax_in_flight = 4\nmax_decision_age = \"60s\"\nrequest_timeout = \"5s\"\n",
        once,
    );
    run.wait_for_actions("actions on the wire", 4);
    let term = Utc::now();
    run.daemon.signal("-TERM");
    assert_eq!(run.daemon.exit_code(Duration::from_secs(12)), Some(0));
    let late: Vec<_> = action_arrivals(&run.sim)
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
    let sim = simulate(3, &[]);
    set_faults(
        &sim.0,
        serde_json::json!({"script": [{"op": "list_services", "status": 429, "retry_after": "60s", "times": 10}]}),
    );
    let mut run = start(sim, "max_retries = 4\n", false);
    wait_for("the throttled listing", Duration::from_secs(20), || {
        run.sim.state()["requests"]["list_services"].as_u64() >= Some(1)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(run.term_exits_within(Duration::from_secs(2)), Some(0));
}

#[test]
fn a_second_stop_ends_the_wait_with_unknown_outcomes_and_exit_1() {
    let sim = simulate(8, &[]);
    // Every action takes half a minute to answer.
    set_faults(
        &sim.0,
        serde_json::json!({"script": [{"op": "action", "status": 200, "delay": "30s", "apply": true, "times": 100}]}),
    );
    let mut run = start(
        sim,
        "max_requests_per_second = 0\nmax_in_flight = 4\nrequest_timeout = \"60s\"\n",
        false,
    );
    run.wait_for_actions("actions on the wire", 4);
    run.daemon.signal("-TERM");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(run.term_exits_within(Duration::from_secs(3)), Some(1));
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
