//! Decisions on complete, true facts (docs/design.md, "Invariants" 1): a policy directory
//! loads completely or not at all, a listing is complete or unused, each request is
//! answered as Cedar answers it over the whole entity store, and quotas hold within a
//! burst of connections.

use crate::cases::schema_with;
use crate::cli::{BIN, repo};
use crate::support::{EngineRig, RigSpec, engine_rig, seed_conn, seed_of};
use std::path::Path;
use std::process::Command;
use vpcep_approver::decision::{ConnectionFacts, OnNoMatch, Verdict};
use vpcep_approver::policy::Policies;
use vpcep_approver::sim::{Operation, ScriptedFault, SimConfig};

const SVC: &str = "4189d3c2-8882-4871-a3c2-d380272eed88";
const PARTNER: &str = "6e9dfd51d1124e8d8498dce894923a0d";
const BLOCKED: &str = "9d8c7b6a5f4e4d3c2b1a0f9e8d7c6b5a";

/// A copy of the shipped policy directory (files only).
fn shipped_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for e in std::fs::read_dir(repo("policies")).expect("policies") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_file() {
            std::fs::copy(e.path(), dir.path().join(e.file_name())).expect("copy");
        }
    }
    dir
}

fn load_err(dir: &Path) -> String {
    Policies::load(dir)
        .map(|p| {
            format!(
                "loaded {} policies: {:?}",
                p.policy_ids().len(),
                p.policy_ids()
            )
        })
        .expect_err("must not load")
        .to_string()
}

/// `check` on a config whose policy dir is `dir`: (exit code, stderr).
fn check(dir: &Path) -> (Option<i32>, String) {
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    let cfg = crate::cli::write_config(cfg_dir.path(), dir, "");
    let o = Command::new(BIN)
        .args(["-c", cfg.to_str().expect("utf8"), "check"])
        .env_remove("RUST_LOG")
        .output()
        .expect("check runs");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_dangling_forbid_link_fails_the_load_and_check_naming_it() {
    let dir = shipped_copy();
    let forbid = dir.path().join("forbid.cedar");
    std::fs::remove_file(&forbid).expect("rm");
    std::os::unix::fs::symlink(dir.path().join("..gone/forbid.cedar"), &forbid).expect("link");
    let e = load_err(dir.path());
    assert!(e.contains("forbid.cedar"), "{e}");
    let (code, err) = check(dir.path());
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("forbid.cedar"), "{err}");
}

#[test]
fn a_directory_a_fifo_an_empty_file_or_a_comment_only_file_named_cedar_fail_the_load() {
    for (what, make) in [
        (
            "directory",
            Box::new(|p: &Path| std::fs::create_dir(p).expect("mkdir")) as Box<dyn Fn(&Path)>,
        ),
        (
            "fifo",
            Box::new(|p: &Path| {
                let ok = Command::new("mkfifo")
                    .arg(p)
                    .status()
                    .expect("mkfifo")
                    .success();
                assert!(ok, "mkfifo");
            }),
        ),
        (
            "empty",
            Box::new(|p: &Path| std::fs::write(p, "").expect("write")),
        ),
        (
            "comments only",
            Box::new(|p: &Path| {
                std::fs::write(p, "// forbid (principal, action, resource);\n\n").expect("write")
            }),
        ),
    ] {
        let dir = shipped_copy();
        make(&dir.path().join("zz-half.cedar"));
        let e = load_err(dir.path());
        assert!(e.contains("zz-half.cedar"), "{what}: {e}");
    }
}

#[test]
fn a_policy_file_name_that_is_not_utf8_fails_the_load() {
    use std::os::unix::ffi::OsStrExt;
    let dir = shipped_copy();
    let name = std::ffi::OsStr::from_bytes(b"forbid-\xff.cedar");
    std::fs::write(
        dir.path().join(name),
        "forbid (principal, action, resource);",
    )
    .expect("write");
    let e = load_err(dir.path());
    assert!(e.contains("UTF-8"), "{e}");
}

#[test]
fn a_configmap_volume_loads_as_the_files_it_shows() {
    // What kubelet makes of a ConfigMap: a timestamped directory, `..data` pointing at
    // it, and one link per key through `..data`.
    let plain = shipped_copy();
    let cm = tempfile::tempdir().expect("tempdir");
    let stamp = cm.path().join("..2026_11_27_12_00_00.123456789");
    std::fs::create_dir(&stamp).expect("mkdir");
    for e in std::fs::read_dir(plain.path()).expect("dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), stamp.join(e.file_name())).expect("copy");
        std::os::unix::fs::symlink(
            Path::new("..data").join(e.file_name()),
            cm.path().join(e.file_name()),
        )
        .expect("link");
    }
    std::os::unix::fs::symlink(stamp.file_name().expect("name"), cm.path().join("..data"))
        .expect("link");
    let a = Policies::load(plain.path()).expect("plain");
    let b = Policies::load(cm.path()).unwrap_or_else(|e| panic!("configmap layout: {e}"));
    assert_eq!(a.version(), b.version());
    assert_eq!(a.policy_ids(), b.policy_ids());
}

/// Six accepted connections of the partner and a seventh pending: the shipped quota
/// (five accepted per account) rejects it.
fn over_quota() -> SimConfig {
    SimConfig {
        seed: seed_of(
            SVC,
            (0..6)
                .map(|i| seed_conn(&format!("acc{i}"), PARTNER, "CHG-1 old", "accepted", i))
                .chain([seed_conn(
                    "new",
                    PARTNER,
                    "CHG-7 seventh link",
                    "pendingAcceptance",
                    100,
                )])
                .collect(),
        ),
        ..SimConfig::default()
    }
}

async fn rig_with_script(faults: Vec<ScriptedFault>) -> EngineRig {
    let r = engine_rig(over_quota(), RigSpec::default()).await;
    r.sim
        .set_faults(vpcep_approver::sim::Faults::script(faults));
    r
}

#[tokio::test]
async fn an_empty_page_before_total_count_fails_the_service_and_decides_nothing() {
    // The accepted listing claims six connections but gives none: the quota must not be
    // bypassed on a partial view.
    let r = rig_with_script(vec![
        ScriptedFault::new(Operation::ListConnections, 200)
            .when_query("status", "accepted")
            .with_body(r#"{"connections":[],"total_count":6}"#),
    ])
    .await;
    let report = r.cycle().await;
    assert!(!report.fully_ok(), "{report:?}");
    let failures = report.targets[0].failures.join("; ");
    assert!(failures.contains(SVC), "{failures}");
    assert_eq!(r.status("new"), "pendingAcceptance");
    assert!(
        r.sim.state().actions.is_empty(),
        "no action on a partial view"
    );
    // With the real listing the quota holds.
    let report = r.cycle().await;
    assert!(report.fully_ok(), "{report:?}");
    assert_eq!(r.status("new"), "rejected");
}

#[tokio::test]
async fn a_short_page_before_total_count_fails_the_service() {
    let r = rig_with_script(vec![
        ScriptedFault::new(Operation::ListConnections, 200)
            .when_query("status", "accepted")
            .with_body(
                r#"{"connections":[{"id":"acc0","domain_id":"6e9dfd51d1124e8d8498dce894923a0d","status":"accepted","created_at":"2026-11-01T00:00:00Z"}],"total_count":6}"#,
            ),
    ])
    .await;
    let report = r.cycle().await;
    assert!(!report.fully_ok(), "{report:?}");
    assert!(r.sim.state().actions.is_empty());
}

#[tokio::test]
async fn one_endpoint_listed_twice_with_different_contents_fails_the_listing() {
    // Once as a partner, once as a blocked account: which copy is true is unknown.
    let page = format!(
        r#"{{"connections":[
            {{"id":"new","domain_id":"{PARTNER}","description":"CHG-7","status":"pendingAcceptance","created_at":"2026-11-01T00:01:40Z","marker_id":1}},
            {{"id":"new","domain_id":"{BLOCKED}","description":"CHG-7","status":"pendingAcceptance","created_at":"2026-11-01T00:01:40Z","marker_id":1}}
        ],"total_count":2}}"#
    );
    let r = rig_with_script(vec![
        ScriptedFault::new(Operation::ListConnections, 200)
            .when_query("status", "pendingAcceptance")
            .with_body(page),
    ])
    .await;
    let report = r.cycle().await;
    let failures = report.targets[0].failures.join("; ");
    assert!(failures.contains("new"), "{report:?}");
    assert!(r.sim.state().actions.is_empty());
    assert!(
        r.audit_lines().is_empty(),
        "nothing of a conflicting listing is decided"
    );
}

#[tokio::test]
async fn an_identical_repeat_from_shifting_pages_counts_once() {
    let one = format!(
        r#"{{"id":"new","domain_id":"{PARTNER}","description":"CHG-7 seventh link","status":"pendingAcceptance","created_at":"2026-11-01T00:01:40Z","marker_id":1}}"#
    );
    let r = rig_with_script(vec![
        ScriptedFault::new(Operation::ListConnections, 200)
            .when_query("status", "pendingAcceptance")
            .with_body(format!(
                r#"{{"connections":[{one},{one}],"total_count":2}}"#
            )),
    ])
    .await;
    let report = r.cycle().await;
    assert!(report.fully_ok(), "{report:?}");
    assert_eq!(report.targets[0].decisions, 1);
}

fn write_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    dir
}

/// Accounts that may belong to an org, orgs with a tier in org groups.
const ORG_PRINCIPALS: &str = r#"  entity OrgGroup;
  entity Org in [OrgGroup] { tier?: String };
  entity AccountGroup in [AccountGroup];
  entity Account in [AccountGroup] { org?: Org };
"#;

fn org_policies() -> tempfile::TempDir {
    let entities = format!(
        r#"[
  {{"uid": {{"type": "Vpcep::OrgGroup", "id": "sanctioned"}}, "attrs": {{}}, "parents": []}},
  {{"uid": {{"type": "Vpcep::Org", "id": "o1"}}, "attrs": {{"tier": "gold"}},
    "parents": [{{"type": "Vpcep::OrgGroup", "id": "sanctioned"}}]}},
  {{"uid": {{"type": "Vpcep::Account", "id": "{BLOCKED}"}},
    "attrs": {{"org": {{"__entity": {{"type": "Vpcep::Org", "id": "o1"}}}}}}, "parents": []}}
]"#
    );
    write_dir(&[
        ("schema.cedarschema", &schema_with(ORG_PRINCIPALS)),
        ("entities.json", &entities),
        (
            "policies.cedar",
            r#"@id("allow-all") permit (principal, action, resource);
@id("forbid-sanctioned")
forbid (principal, action, resource)
when { principal has org && principal.org in Vpcep::OrgGroup::"sanctioned" };
"#,
        ),
    ])
}

#[test]
fn an_entity_reached_only_through_an_attribute_is_in_the_request() {
    let dir = org_policies();
    let p = Policies::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let d = p.decide(
        &ConnectionFacts::example(BLOCKED, ""),
        OnNoMatch::LeavePending,
    );
    assert_eq!(d.verdict, Verdict::Forbid, "{d:?}");
    assert_eq!(d.policies, ["forbid-sanctioned"]);
}

#[tokio::test]
async fn an_account_in_a_sanctioned_organisation_is_rejected() {
    let dir = org_policies();
    let r = engine_rig(
        SimConfig {
            seed: seed_of(
                SVC,
                vec![seed_conn("e1", BLOCKED, "CHG-1", "pendingAcceptance", 0)],
            ),
            ..SimConfig::default()
        },
        RigSpec {
            policies: Some(Policies::load(dir.path()).expect("policies")),
            ..RigSpec::default()
        },
    )
    .await;
    r.cycle().await;
    assert_eq!(r.status("e1"), "rejected");
}

/// Partners with a change ticket are accepted, at most three per account and service.
fn quota_policies(limit: i64) -> tempfile::TempDir {
    let schema = std::fs::read_to_string(repo("policies/schema.cedarschema")).expect("schema");
    let entities = std::fs::read_to_string(repo("policies/entities.json")).expect("entities");
    write_dir(&[
        ("schema.cedarschema", &schema),
        ("entities.json", &entities),
        (
            "policies.cedar",
            &format!(
                r#"@id("allow-partners")
permit (principal in Vpcep::AccountGroup::"partners", action, resource)
when {{ context.description like "*CHG-*" }};
@id("quota")
forbid (principal, action, resource) when {{ context.accepted_from_domain >= {limit} }};
"#
            ),
        ),
    ])
}

async fn quota_rig(
    limit: i64,
    conns: Vec<vpcep_approver::sim::SeedConnection>,
    poll: &str,
) -> (EngineRig, tempfile::TempDir) {
    let dir = quota_policies(limit);
    let r = engine_rig(
        SimConfig {
            seed: seed_of(SVC, conns),
            ..SimConfig::default()
        },
        RigSpec {
            policies: Some(Policies::load(dir.path()).expect("policies")),
            poll: poll.to_owned(),
            ..RigSpec::default()
        },
    )
    .await;
    (r, dir)
}

fn statuses(r: &EngineRig, ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| r.status(id)).collect()
}

#[tokio::test]
async fn a_quota_holds_within_a_burst_oldest_first() {
    // Six connections opened at once, listed newest first by the API: the three oldest
    // are accepted, the rest rejected.
    let ids = ["p0", "p1", "p2", "p3", "p4", "p5"];
    let conns = ids
        .iter()
        .enumerate()
        .map(|(i, id)| seed_conn(id, PARTNER, "CHG-9 burst", "pendingAcceptance", i as i64))
        .collect();
    let (r, _dir) = quota_rig(3, conns, "max_retries = 0\n").await;
    r.cycle().await;
    assert_eq!(
        statuses(&r, &ids),
        [
            "accepted", "accepted", "accepted", "rejected", "rejected", "rejected"
        ]
    );
}

#[tokio::test]
async fn accepted_and_creating_connections_count_towards_the_quota() {
    // 2 accepted + 2 creating + 3 pending against a limit of 5: one more is accepted.
    let mut conns = vec![
        seed_conn("a0", PARTNER, "CHG-1", "accepted", 0),
        seed_conn("a1", PARTNER, "CHG-1", "accepted", 1),
        seed_conn("c0", PARTNER, "CHG-1", "creating", 2),
        seed_conn("c1", PARTNER, "CHG-1", "creating", 3),
    ];
    let ids = ["p0", "p1", "p2"];
    for (i, id) in ids.iter().enumerate() {
        conns.push(seed_conn(
            id,
            PARTNER,
            "CHG-9",
            "pendingAcceptance",
            10 + i as i64,
        ));
    }
    let (r, _dir) = quota_rig(5, conns, "max_retries = 0\n").await;
    r.cycle().await;
    assert_eq!(statuses(&r, &ids), ["accepted", "rejected", "rejected"]);
}

#[tokio::test]
async fn a_failed_action_does_not_change_how_the_quota_ends() {
    // Limit 3, four pending. The oldest one's receive fails the first time; it is
    // accepted in the next cycle, and the end state is the one without the failure.
    let ids = ["p0", "p1", "p2", "p3"];
    let conns = ids
        .iter()
        .enumerate()
        .map(|(i, id)| seed_conn(id, PARTNER, "CHG-9", "pendingAcceptance", i as i64))
        .collect();
    // A failed action waits one interval (here 1 s) before it is sent again.
    let (r, _dir) = quota_rig(
        3,
        conns,
        "max_retries = 0\nmax_in_flight = 1\ninterval = \"1s\"\n",
    )
    .await;
    r.sim.set_faults(vpcep_approver::sim::Faults::script(vec![
        ScriptedFault::new(Operation::Action, 403)
            .with_error("EndPoint.0004", "no permission")
            .for_endpoint("p0"),
    ]));
    let first = r.cycle().await;
    assert_eq!(first.targets[0].failed, 1, "{first:?}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    r.cycle().await;
    assert_eq!(
        statuses(&r, &ids),
        ["accepted", "accepted", "accepted", "rejected"]
    );
}
