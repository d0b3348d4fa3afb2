//! How much the policy layer adds to Cedar. Two benches on the same data (the shipped
//! example policies and schema, and 1,000 generated accounts in 20 groups):
//! `decide` is the whole path from facts to verdict (a connection decided before, as on
//! every cycle while it stays pending), `decide_new_connection` the same for a connection
//! not seen before, and `is_authorized_floor` Cedar's authorizer alone on a request and
//! entity store built beforehand.

use cedar_policy::{Context, Entities, EntityUid, Request, Schema};
use chrono::{TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::Path;
use std::str::FromStr;
use vpcep_approver::decision::{ConnectionFacts, OnNoMatch, Verdict};
use vpcep_approver::policy::Policies;

const SERVICE: &str = "4189d3c2-8882-4871-a3c2-d380272eed88";
const ACCOUNTS: usize = 1_000;
const GROUPS: usize = 20;

fn account_id(i: usize) -> String {
    format!(
        "{:032x}",
        0x6e9d_fd51_d112_4e8d_8498_dce8_9492_0000_u128 + i as u128
    )
}

/// 1,000 accounts in 20 groups; every group is inside `partners`, and one service is
/// partner-facing.
fn entities_json() -> String {
    let uid = |ty: &str, id: &str| serde_json::json!({ "type": ty, "id": id });
    let mut list = vec![
        serde_json::json!({ "uid": uid("Vpcep::AccountGroup", "partners"), "attrs": {}, "parents": [] }),
        serde_json::json!({ "uid": uid("Vpcep::ServiceGroup", "partner-facing"), "attrs": {}, "parents": [] }),
        serde_json::json!({ "uid": uid("Vpcep::EndpointService", SERVICE), "attrs": {},
            "parents": [uid("Vpcep::ServiceGroup", "partner-facing")] }),
    ];
    for g in 0..GROUPS {
        list.push(
            serde_json::json!({ "uid": uid("Vpcep::AccountGroup", &format!("group-{g}")),
            "attrs": {}, "parents": [uid("Vpcep::AccountGroup", "partners")] }),
        );
    }
    for i in 0..ACCOUNTS {
        list.push(
            serde_json::json!({ "uid": uid("Vpcep::Account", &account_id(i)), "attrs": {},
            "parents": [uid("Vpcep::AccountGroup", &format!("group-{}", i % GROUPS))] }),
        );
    }
    serde_json::Value::Array(list).to_string()
}

fn shipped_files() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("policies/ is readable") {
        let entry = entry.expect("policies/ is readable");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".cedar") || name == "schema.cedarschema" {
            files.push((name, std::fs::read(entry.path()).expect("readable file")));
        }
    }
    files
}

fn bench(c: &mut Criterion) {
    let entities = entities_json();
    let mut files = shipped_files();
    files.push(("entities.json".to_owned(), entities.clone().into_bytes()));
    let policies = Policies::from_files(files.clone()).expect("bench policies load");

    let now = Utc
        .with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
        .single()
        .expect("valid time");
    let mut facts = ConnectionFacts::example(
        &account_id(737),
        "CHG-1234 payments link for the settlement batch",
    );
    facts.subject.service_id = SERVICE.into();
    facts.created_at = now - chrono::Duration::hours(3);
    facts.subject.created_at = format!("{}", facts.created_at.format("%Y-%m-%dT%H:%M:%SZ"));
    facts.now = now;
    facts.accepted_from_domain = 1;
    let decision = policies.decide(&facts, OnNoMatch::LeavePending);
    assert_eq!(decision.verdict, Verdict::Permit, "{decision:?}");

    c.bench_function("decide", |b| {
        b.iter(|| policies.decide(black_box(&facts), OnNoMatch::LeavePending))
    });

    // As above, but every connection created a second after the previous one, so the
    // datetime cache misses for `created_at` (as for a newly seen connection); `now` is
    // shared, as within one poll cycle.
    let mut fresh = facts.clone();
    c.bench_function("decide_new_connection", |b| {
        b.iter(|| {
            fresh.created_at += chrono::Duration::seconds(1);
            if fresh.created_at > now {
                fresh.created_at = now - chrono::Duration::days(1);
            }
            policies.decide(black_box(&fresh), OnNoMatch::LeavePending)
        })
    });

    // The floor: the same request, prebuilt, against the whole store prebuilt.
    let schema_src = files
        .iter()
        .find(|(n, _)| n == "schema.cedarschema")
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .expect("schema present");
    let (schema, _) = Schema::from_cedarschema_str(&schema_src).expect("schema parses");
    let mut json: serde_json::Value = serde_json::from_str(&entities).expect("json");
    // The resource carries the attributes `decide` gives it.
    for e in json.as_array_mut().expect("array") {
        if e["uid"]["type"] == "Vpcep::EndpointService" {
            e["attrs"] = serde_json::json!({ "name": "payments", "project_id": facts.subject.project_id,
                "region": facts.region, "target": facts.subject.target });
        }
    }
    let store = Entities::from_json_value(json, Some(&schema)).expect("entities");
    let uid = |s: String| EntityUid::from_str(&s).expect("uid");
    // The context in Cedar's JSON form, as the entities above (datetimes as `__extn`).
    let datetime = |t: chrono::DateTime<Utc>| {
        let arg = t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        serde_json::json!({ "__extn": { "fn": "datetime", "arg": arg } })
    };
    let action = uid("Vpcep::Action::\"connect\"".to_owned());
    let context = Context::from_json_value(
        serde_json::json!({
            "endpoint_id": facts.subject.endpoint_id,
            "description": facts.subject.description,
            "marker_id": facts.subject.marker_id,
            "created_at": datetime(facts.created_at),
            "now": datetime(facts.now),
            "accepted_from_domain": facts.accepted_from_domain,
            "pending_from_domain": facts.pending_from_domain,
        }),
        Some((&schema, &action)),
    )
    .expect("context");
    let request = Request::new(
        uid(format!("Vpcep::Account::\"{}\"", facts.subject.domain_id)),
        action,
        uid(format!("Vpcep::EndpointService::\"{SERVICE}\"")),
        context,
        Some(&schema),
    )
    .expect("request");
    assert_eq!(
        policies.bench_is_authorized(&request, &store),
        cedar_policy::Decision::Allow
    );
    c.bench_function("is_authorized_floor", |b| {
        b.iter(|| policies.bench_is_authorized(black_box(&request), black_box(&store)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
