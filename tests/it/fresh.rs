//! Acting only on what is still true (docs/design.md, "Invariants" 2–4): an action goes
//! out only on facts listed within `max_decision_age` and under the policies in force;
//! an answer counts as applied only when it shows the new status; failing actions wait
//! before they are sent again; an access key gets at most one failed signature per
//! backoff; and every decided action has exactly one outcome, `skipped` when it was never
//! sent.

use crate::support::{
    EngineRig, PROJECT, RigSpec, engine_rig, seed_conn, seed_of, simple_policies, target_config,
    within,
};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vpcep_approver::audit::AuditWriter;
use vpcep_approver::cloud::TargetApi;
use vpcep_approver::cloud::auth::Credentials;
use vpcep_approver::cloud::client::CloudClient;
use vpcep_approver::config::{AuditPath, Config};
use vpcep_approver::engine::{CycleReport, Engine, EngineOptions};
use vpcep_approver::metrics::Metrics;
use vpcep_approver::policy::Policies;
use vpcep_approver::sim::{
    DEFAULT_AK, DEFAULT_SK, Faults, Operation, ScriptedFault, SimConfig, Simulator,
};
use vpcep_approver::stop::Stop;

const SVC: &str = "4189d3c2-8882-4871-a3c2-d380272eed88";
const PARTNER: &str = "6e9dfd51d1124e8d8498dce894923a0d";
const BLOCKED: &str = "9d8c7b6a5f4e4d3c2b1a0f9e8d7c6b5a";

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:02}")).collect()
}

/// `n` pending connections of `domain`, oldest first (decided in that order).
fn pending(prefix: &str, domain: &str, n: usize) -> SimConfig {
    SimConfig {
        seed: seed_of(
            SVC,
            ids(prefix, n)
                .iter()
                .enumerate()
                .map(|(i, id)| seed_conn(id, domain, "CHG-1", "pendingAcceptance", i as i64))
                .collect(),
        ),
        ..SimConfig::default()
    }
}

/// No retries: an action that fails is not sent again within its cycle.
const NO_RETRIES: &str = "max_retries = 0\n";

/// The rig on `sim` under the simple policies (`support::simple_policies`), with `poll`
/// and [`NO_RETRIES`].
async fn rig(sim: SimConfig, poll: &str) -> EngineRig {
    let policies = simple_policies("");
    engine_rig(
        sim,
        RigSpec {
            policies: Some(Policies::load(policies.path()).expect("policies")),
            poll: format!("{NO_RETRIES}{poll}"),
            ..RigSpec::default()
        },
    )
    .await
}

fn with_latency(r: &EngineRig, ms: u64) {
    r.sim.set_faults(Faults {
        latency: Duration::from_millis(ms),
        ..Faults::default()
    });
}

fn time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("rfc3339")
        .with_timezone(&Utc)
}

/// Actions the simulator received per endpoint: (arrival, action), oldest first. The
/// recorded time is when the simulated latency ended.
fn actions_by_endpoint(
    sim: &Simulator,
    latency: Duration,
) -> HashMap<String, Vec<(DateTime<Utc>, String)>> {
    let mut by: HashMap<String, Vec<(DateTime<Utc>, String)>> = HashMap::new();
    for a in sim.actions() {
        let at = time(&a.time) - chrono::Duration::from_std(latency).expect("small");
        by.entry(a.endpoint_id.unwrap_or_default())
            .or_default()
            .push((at, a.action.unwrap_or_default()));
    }
    by
}

const SLOW: &str = "max_in_flight = 1\nmax_decision_age = \"1s\"\n";

/// A slow drain (100 ms a request, one at a time, [`SLOW`]) of 20 pending connections
/// `{prefix}00`… of `domain` under the simple policies; 350 ms in, an operator sets the
/// ones from `from` on to `status`. Returns the rig, the cycle's report and when the
/// operator was done.
async fn operator_mid_drain(
    prefix: &str,
    domain: &str,
    from: usize,
    status: &str,
) -> (EngineRig, CycleReport, DateTime<Utc>) {
    let r = rig(pending(prefix, domain, 20), SLOW).await;
    with_latency(&r, 100);
    let operator = async {
        tokio::time::sleep(Duration::from_millis(350)).await;
        for id in &ids(prefix, 20)[from..] {
            assert!(r.sim.set_status(id, status));
        }
        Utc::now()
    };
    let (report, at) = within(async { tokio::join!(r.cycle(), operator) }).await;
    (r, report, at)
}

#[tokio::test]
async fn an_operators_rejections_during_a_long_drain_are_not_overridden() {
    let (r, report, at) = operator_mid_drain("p", PARTNER, 16, "rejected").await;
    let rejected = &ids("p", 20)[16..];
    for id in rejected {
        assert_eq!(r.status(id), "rejected", "{id} was flipped: {report:?}");
    }
    let by = actions_by_endpoint(&r.sim, Duration::from_millis(100));
    for id in rejected {
        for (t, action) in by.get(id).into_iter().flatten() {
            assert!(
                *t <= at + chrono::Duration::seconds(1),
                "{action} sent to {id} at {t}, more than max_decision_age after the operator's {at}"
            );
        }
    }
    // The rest was accepted.
    for id in &ids("p", 16) {
        assert_eq!(r.status(id), "accepted");
    }
}

#[tokio::test]
async fn connections_accepted_by_someone_else_mid_run_are_not_torn_down() {
    let (r, _, _) = operator_mid_drain("b", BLOCKED, 15, "accepted").await;
    for id in &ids("b", 20)[15..] {
        assert_eq!(r.status(id), "accepted", "{id} was torn down");
    }
    // The ones nobody touched were rejected as the policies say.
    for id in &ids("b", 20)[..15] {
        assert_eq!(r.status(id), "rejected", "{id}");
    }
}

#[tokio::test]
async fn two_instances_under_a_rolling_update_never_act_on_views_older_than_max_decision_age() {
    // Instance A accepts partners (the simple policies); instance B already has the new
    // policies, which reject them. B starts later and sends slower, as a second replica
    // under its own rate limit would.
    let new = simple_policies(
        r#"@id("emergency") forbid (principal in Vpcep::AccountGroup::"partners", action, resource);"#,
    );
    let a = rig(pending("p", PARTNER, 30), SLOW).await;
    with_latency(&a, 100);
    let cfg = target_config(
        &a.sim.base_url(),
        &format!("{NO_RETRIES}{SLOW}max_requests_per_second = 4\n"),
    );
    let b_cloud = CloudClient::new(
        &cfg,
        Credentials::aksk(DEFAULT_AK, DEFAULT_SK, None),
        Metrics::new(),
    )
    .expect("cloud");
    let b_audit = a.dir.path().join("b.jsonl");
    let b = Engine::new(
        Arc::new(Policies::load(new.path()).expect("policies")),
        Arc::new(Mutex::new(
            AuditWriter::open(
                AuditPath::File(b_audit),
                false,
                vpcep_approver::clock::system(),
            )
            .expect("audit"),
        )),
        Metrics::new(),
        vpcep_approver::clock::system(),
        EngineOptions::from_config(&cfg, false),
    );
    let stop = Stop::new();
    let later = async {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        b.run_cycle(&b_cloud, &stop).await
    };
    within(async { tokio::join!(a.cycle(), later) }).await;
    let by = actions_by_endpoint(&a.sim, Duration::from_millis(100));
    // Both acted: A's receives and B's rejects reached the API.
    for kind in ["receive", "reject"] {
        assert!(
            by.values().flatten().any(|(_, act)| act == kind),
            "no {kind} was sent: {by:?}"
        );
    }
    for (id, list) in &by {
        if let [(t1, a1), (t2, a2), ..] = list.as_slice() {
            let gap = (*t2 - *t1).to_std().unwrap_or_default();
            assert!(
                gap <= Duration::from_millis(1300),
                "{id}: {a1} at {t1} then {a2} at {t2}: the second acted on a view older than max_decision_age"
            );
        }
    }
}

#[tokio::test]
async fn an_answer_that_does_not_show_the_new_status_is_read_back() {
    for body in [
        "",
        "{}",
        r#"{"connections":[{"id":"someone-else","status":"accepted"}]}"#,
    ] {
        let r = rig(pending("p", PARTNER, 1), "").await;
        r.sim.set_faults(Faults::script(vec![
            ScriptedFault::new(Operation::Action, 200).with_body(body),
        ]));
        let report = r.cycle().await;
        assert_eq!(r.status("p00"), "pendingAcceptance");
        let outcome = r
            .audit_lines()
            .into_iter()
            .find(|l| l["kind"] == "outcome")
            .expect("an outcome");
        assert_eq!(outcome["outcome"], "failed", "{body:?}: {outcome}");
        assert_eq!(outcome["status_after"], "pendingAcceptance", "{body:?}");
        assert_eq!(report.targets[0].applied, 0, "{body:?}");
    }
}

#[tokio::test]
async fn a_failing_action_waits_before_it_is_sent_and_recorded_again() {
    let r = rig(pending("p", PARTNER, 100), "").await;
    r.sim.set_faults(Faults::script(vec![
        ScriptedFault::new(Operation::Action, 403)
            .with_error("EndPoint.0004", "no permission")
            .times(100_000),
    ]));
    for _ in 0..5 {
        r.cycle().await;
    }
    assert_eq!(
        r.sim.actions().len(),
        100,
        "each sent once within the interval"
    );
    let lines = r.audit_lines();
    assert_eq!(lines.len(), 200, "one decision and one outcome each");
}

#[tokio::test]
async fn actions_not_sent_during_a_key_backoff_are_skipped_not_failed() {
    let r = rig(pending("p", PARTNER, 40), "max_in_flight = 1\n").await;
    r.sim.set_faults(Faults::script(vec![
        ScriptedFault::new(Operation::Action, 401)
            .with_error("APIGW.0301", "verify aksk signature fail"),
    ]));
    let report = r.cycle().await;
    let t = &report.targets[0];
    assert_eq!((t.failed, t.skipped), (1, 39), "{report:?}");
    assert_eq!(r.sim.actions().len(), 1, "one request went out");
    let outcomes: Vec<String> = r
        .audit_lines()
        .into_iter()
        .filter(|l| l["kind"] == "outcome")
        .map(|l| l["outcome"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(outcomes.len(), 40, "exactly one outcome per decision");
    assert_eq!(outcomes.iter().filter(|o| *o == "skipped").count(), 39);
    let m = r.engine.metrics().encode();
    assert!(m.contains("outcome=\"skipped\"} 39"), "{m}");
    assert!(m.contains("outcome=\"failed\"} 1"), "{m}");
}

fn six_targets(url: &str) -> Config {
    let mut text = String::new();
    for i in 0..6 {
        text.push_str(&format!(
            "[[target]]\nname = \"t{i}\"\nregion = \"cn-north-4\"\nproject_id = \"{PROJECT}\"\n\
             vpcep_endpoint = \"{url}\"\niam_endpoint = \"{url}\"\n"
        ));
    }
    text.push_str(
        "[poll]\nmax_retries = 0\nrequest_timeout = \"2s\"\nmax_requests_per_second = 0\n",
    );
    Config::parse(&text, std::path::Path::new("/nonexistent/config.toml")).expect("config")
}

#[tokio::test]
async fn six_targets_with_one_wrong_key_cost_one_failed_signature() {
    let r = engine_rig(pending("p", PARTNER, 3), RigSpec::default()).await;
    let cfg = six_targets(&r.sim.base_url());
    let cloud = CloudClient::new(
        &cfg,
        Credentials::aksk(DEFAULT_AK, "WRONGSECRETKEY", None),
        Metrics::new(),
    )
    .expect("cloud");
    for _ in 0..3 {
        let report = within(r.engine.run_cycle(&cloud, &Stop::new())).await;
        assert!(report.targets.iter().all(|t| !t.ok()));
    }
    assert_eq!(r.sim.state().failed_signatures(DEFAULT_AK), 1);
    // Every target using the key is unready.
    for t in cloud.targets() {
        assert!(t.unready_reason().is_some(), "{}", t.target().name);
    }
}

#[tokio::test]
async fn a_key_revoked_mid_cycle_stops_every_new_request_with_it() {
    let r = rig(pending("p", PARTNER, 40), "max_in_flight = 4\n").await;
    with_latency(&r, 200);
    let revoke = async {
        tokio::time::sleep(Duration::from_millis(900)).await;
        r.sim
            .set_credentials(&[("SOMEOTHERKEY", "SOMEOTHERSECRET")]);
    };
    within(async { tokio::join!(r.cycle(), revoke) }).await;
    let signed: Vec<_> = r
        .sim
        .state()
        .signed
        .into_iter()
        .filter(|s| s.access_key == DEFAULT_AK)
        .collect();
    let failed: Vec<_> = signed.iter().filter(|s| s.http_status == 401).collect();
    assert!(!failed.is_empty(), "the revocation came mid-cycle");
    assert!(
        failed.len() <= 4,
        "only requests already on the wire: {failed:?}"
    );
    let first = time(&failed[0].time) + chrono::Duration::milliseconds(200 + 500);
    assert!(
        signed.iter().all(|s| time(&s.time) <= first),
        "a request started more than 0.5 s after the first 401: {signed:?}"
    );
}
