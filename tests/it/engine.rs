//! One poll cycle end to end: the real client (AK/SK-signed HTTP) against the simulator on
//! loopback, real Cedar, a real audit file.

use crate::support::{EngineRig, PROJECT, RigSpec, engine_rig, target_config, within};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use vpcep_approver::audit::{AuditWriter, verify_files};
use vpcep_approver::cloud::auth::Credentials;
use vpcep_approver::cloud::client::CloudClient;
use vpcep_approver::config::AuditPath;
use vpcep_approver::engine::{Engine, EngineOptions};
use vpcep_approver::metrics::Metrics;
use vpcep_approver::policy::Policies;
use vpcep_approver::sim::{DEFAULT_AK, DEFAULT_SK, Faults, Operation, ScriptedFault, SimConfig};
use vpcep_approver::stop::Stop;

/// The client's `[poll]`: two retries, a 5 s timeout (no rate limit: the test default).
const POLL: &str = "max_retries = 2\nrequest_timeout = \"5s\"\nmax_in_flight = 8\n";

/// The sample seed (`demo::sample_seed`) on the simulator, the example policies, an
/// fsynced audit log (at `audit`, else the rig's own file); no-match leaves pending.
async fn rig(dry_run: bool, audit: Option<AuditPath>) -> EngineRig {
    let sim = SimConfig {
        seed: vpcep_approver::demo::sample_seed(chrono::Utc::now()),
        project_id: Some(PROJECT.into()),
        ..SimConfig::default()
    };
    let spec = RigSpec {
        dry_run,
        poll: POLL.into(),
        audit,
        fsync: true,
        ..RigSpec::default()
    };
    engine_rig(sim, spec).await
}

#[tokio::test]
async fn every_pending_connection_is_decided_and_audited_before_its_action() {
    let r = rig(false, None).await;
    let report = r.cycle().await;
    assert!(report.fully_ok(), "{report:?}");
    // The sample: partner with ticket, EMEA partner, blocked, stranger, hostile description,
    // stale request, missing account; internal build agents, partner over quota; last, the
    // service with approval off is never touched.
    for (endpoint, status) in [
        ("705290f3-0d00-41f2-aedc-71f09844e879", "accepted"),
        ("1d4e5f60-7a8b-4c9d-8e0f-1a2b3c4d5e6f", "accepted"),
        ("2e5f6071-8b9c-4dae-9f10-2b3c4d5e6f70", "rejected"),
        ("3f607182-9cad-4ebf-a021-3c4d5e6f7081", "pendingAcceptance"),
        ("40718293-adbe-4fc0-b132-4d5e6f708192", "rejected"),
        ("518293a4-becf-40d1-8243-5e6f708192a3", "rejected"),
        ("6293a4b5-cfd0-41e2-9354-6f708192a3b4", "pendingAcceptance"),
        ("8a1f0c52-6d0e-4c21-9b7a-1e2f3a4b5c6d", "accepted"),
        ("9b2e1d63-7e1f-4d32-8c6b-2f3a4b5c6d7e", "rejected"),
        ("73a4b5c6-d0e1-42f3-a465-708192a3b4c5", "pendingAcceptance"),
    ] {
        assert_eq!(r.status(endpoint), status, "{endpoint}");
    }

    let actions = r.sim.actions();
    assert_eq!(actions.len(), 7, "{actions:?}");
    let lines = r.audit_lines();
    // Write-ahead: each action's decision record precedes its outcome record, one each.
    for a in &actions {
        let ep = a.endpoint_id.as_deref().expect("endpoint");
        // The positions of this endpoint's records of `kind`.
        let at = |kind: &str| -> Vec<usize> {
            lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l["kind"] == kind && l["endpoint_id"] == ep)
                .map(|(i, _)| i)
                .collect()
        };
        let (decisions, outcomes) = (at("decision"), at("outcome"));
        assert_eq!((decisions.len(), outcomes.len()), (1, 1), "{ep}");
        assert!(decisions[0] < outcomes[0]);
        assert_eq!(lines[outcomes[0]]["outcome"], "applied");
        assert_eq!(
            lines[decisions[0]]["decision_id"],
            lines[outcomes[0]]["decision_id"]
        );
    }
    let verdicts: Vec<&str> = lines
        .iter()
        .filter(|l| l["kind"] == "decision")
        .map(|l| l["verdict"].as_str().unwrap_or_default())
        .collect();
    for v in ["permit", "forbid", "no-match", "error"] {
        assert!(verdicts.contains(&v), "no {v} in {verdicts:?}");
    }
    let hostile = lines
        .iter()
        .find(|l| l["endpoint_id"] == "40718293-adbe-4fc0-b132-4d5e6f708192")
        .expect("hostile record");
    assert_eq!(
        hostile["description"],
        "CHG-42 <script>alert(1)</script>\n\"quoted\""
    );
    assert_eq!(hostile["marker_id"], 16777515);
    let big = lines
        .iter()
        .find(|l| l["endpoint_id"] == "2e5f6071-8b9c-4dae-9f10-2b3c4d5e6f70")
        .expect("blocked record");
    assert_eq!(big["marker_id"].as_i64(), Some(422_321_321_312_321_321));
    let report =
        verify_files(std::slice::from_ref(&r.audit), &mut std::io::sink()).expect("verify");
    assert!(report.first_bad.is_none(), "{:?}", report.first_bad);
}

#[tokio::test]
async fn a_connection_left_pending_is_recorded_once_per_policy_version() {
    let r = rig(false, None).await;
    r.cycle().await;
    let first = r.audit_lines().len();
    let report = r.cycle().await;
    assert!(report.fully_ok());
    assert_eq!(
        r.audit_lines().len(),
        first,
        "second cycle re-recorded pending connections"
    );
    assert_eq!(r.sim.actions().len(), 7, "no action is sent twice");
    // A new policy version re-decides and re-records what is still pending.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/policies/permit-all");
    if dir.is_dir() {
        r.engine
            .set_policies(Arc::new(Policies::load(&dir).expect("fixture policies")));
        r.cycle().await;
        assert!(r.audit_lines().len() > first);
    }
}

#[tokio::test]
async fn dry_run_decides_and_audits_but_never_acts() {
    let r = rig(true, None).await;
    let report = r.cycle().await;
    assert!(report.fully_ok(), "{report:?}");
    assert!(r.sim.actions().is_empty());
    let lines = r.audit_lines();
    assert_eq!(lines.len(), 9, "one decision per pending connection");
    assert!(
        lines
            .iter()
            .all(|l| l["kind"] == "decision" && l["dry_run"] == true)
    );
    r.cycle().await;
    assert_eq!(r.audit_lines().len(), 9, "dry run records each once");
}

#[tokio::test]
async fn audit_failure_blocks_every_action() {
    let r = rig(false, Some(AuditPath::File(PathBuf::from("/dev/full")))).await;
    let report = r.cycle().await;
    assert!(!report.fully_ok());
    assert!(
        r.sim.actions().is_empty(),
        "an action was sent without its audit record"
    );
    assert!(!r.engine.audit_ok());
    assert!(
        report.targets[0]
            .failures
            .iter()
            .any(|f| f.contains("audit")),
        "{report:?}"
    );
}

#[tokio::test]
async fn garbage_listing_decides_nothing_for_that_service_only() {
    let r = rig(false, None).await;
    r.sim.set_faults(Faults::script(vec![
        ScriptedFault::new(Operation::ListConnections, 200)
            .with_body("{\"connections\": [{\"id\": \"x\""),
    ]));
    let report = r.cycle().await;
    let t = &report.targets[0];
    assert_eq!(t.failures.len(), 1, "{t:?}");
    assert!(t.failures[0].contains("connections"), "{:?}", t.failures);
    // The other service went ahead.
    assert!(t.services_ok >= 1);
    let acted: Vec<String> = r
        .sim
        .actions()
        .iter()
        .filter_map(|a| a.service_id.clone().into())
        .collect();
    let services: std::collections::BTreeSet<&String> = acted.iter().collect();
    assert_eq!(services.len(), 1, "only one service acted: {services:?}");
}

#[tokio::test]
async fn a_race_with_another_decider_ends_not_pending_or_applied_never_failed() {
    let r = rig(false, None).await;
    // Another instance or a person decides first: the action gets an error, the read-back
    // sees the connection is no longer pending.
    r.sim
        .set_status("2e5f6071-8b9c-4dae-9f10-2b3c4d5e6f70", "accepted");
    // "Applied but the answer was lost": the read-back finds the status the action gives.
    r.sim.set_faults(Faults::script(vec![
        ScriptedFault::new(Operation::Action, 500)
            .applied()
            .times(1),
    ]));
    let report = r.cycle().await;
    let t = &report.targets[0];
    assert_eq!(t.failed, 0, "{t:?}");
    let lines = r.audit_lines();
    let outcomes: Vec<&str> = lines
        .iter()
        .filter(|l| l["kind"] == "outcome")
        .map(|l| l["outcome"].as_str().unwrap_or_default())
        .collect();
    assert!(
        outcomes
            .iter()
            .all(|o| *o == "applied" || *o == "not-pending"),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn two_instances_on_the_same_services_never_double_change() {
    let a = rig(false, None).await;
    // A second engine and client against the same simulator, with its own audit log.
    let dir = tempfile::tempdir().expect("tempdir");
    let audit_b = dir.path().join("b.jsonl");
    let cloud_b = CloudClient::new(
        &target_config(&a.sim.base_url(), POLL),
        Credentials::aksk(DEFAULT_AK, DEFAULT_SK, None),
        Metrics::new(),
    )
    .expect("client");
    let engine_b = Engine::new(
        Arc::new(Policies::embedded_examples().expect("policies")),
        Arc::new(Mutex::new(
            AuditWriter::open(
                AuditPath::File(audit_b.clone()),
                false,
                vpcep_approver::clock::system(),
            )
            .expect("audit"),
        )),
        Metrics::new(),
        vpcep_approver::clock::system(),
        // Leave-pending, eight in flight, no rows: as the first instance but for the rows.
        EngineOptions::default(),
    );
    let stop = Stop::new();
    let (ra, rb) = within(async {
        tokio::join!(
            a.engine.run_cycle(&a.cloud, &stop),
            engine_b.run_cycle(&cloud_b, &stop)
        )
    })
    .await;
    for t in ra.targets.iter().chain(rb.targets.iter()) {
        assert!(t.ok(), "{t:?}");
        assert_eq!(t.failed, 0, "{t:?}");
    }
    // Both decided alike: per connection only one kind of action was ever sent, so no
    // connection can flip (accepted then rejected); each ended as the policies say.
    let mut by_endpoint: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for x in a.sim.actions() {
        by_endpoint
            .entry(x.endpoint_id.clone().unwrap_or_default())
            .or_default()
            .insert(x.action.clone().unwrap_or_default());
    }
    assert_eq!(by_endpoint.len(), 7, "{by_endpoint:?}");
    assert!(
        by_endpoint.values().all(|a| a.len() == 1),
        "{by_endpoint:?}"
    );
    for (endpoint, status) in [
        ("705290f3-0d00-41f2-aedc-71f09844e879", "accepted"),
        ("2e5f6071-8b9c-4dae-9f10-2b3c4d5e6f70", "rejected"),
        ("3f607182-9cad-4ebf-a021-3c4d5e6f7081", "pendingAcceptance"),
    ] {
        assert_eq!(a.status(endpoint), status, "{endpoint}");
    }
}
