//! A request is answered as Cedar answers it with the whole entity store (README
//! "Policies"): generated worlds of groups, organisations with entity-typed attributes and
//! parents, accounts that are listed or not, and policies that reach entities through
//! membership, attributes and literals; the daemon's decision is compared with Cedar's
//! `is_authorized` over every entity of the world.

#![allow(clippy::unwrap_used)]

use crate::cases::schema_with;
use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityUid, PolicyId,
    PolicySet, Request, RestrictedExpression, Schema,
};
use proptest::prelude::*;
use std::collections::{BTreeSet, HashSet};
use std::str::FromStr;
use vpcep_approver::decision::{ConnectionFacts, OnNoMatch, Verdict};
use vpcep_approver::policy::Policies;

/// The request model with org groups, orgs (a `tier`, a `partner` org) and accounts (an
/// `org`, a `level`).
fn schema() -> String {
    schema_with(
        r#"  entity OrgGroup in [OrgGroup];
  entity Org in [OrgGroup] { tier?: String, partner?: Org };
  entity AccountGroup in [AccountGroup];
  entity Account in [AccountGroup] { org?: Org, level?: Long };
"#,
    )
}

/// One generated world.
#[derive(Debug, Clone)]
struct World {
    /// Parents (indices of earlier groups) of each account group.
    account_groups: Vec<Vec<usize>>,
    /// Parents of each org group.
    org_groups: Vec<Vec<usize>>,
    /// Each org: parents (org groups), `tier`, `partner` (an org index, possibly absent).
    orgs: Vec<(Vec<usize>, Option<bool>, Option<usize>)>,
    /// The principal: listed or not, its groups, its `org` (an index, possibly absent).
    principal: Option<(Vec<usize>, Option<usize>)>,
    /// Service groups' parents and the service's groups, or the service unlisted.
    service_groups: Vec<Vec<usize>>,
    service: Option<Vec<usize>>,
    /// Policies as (template, parameter).
    policies: Vec<(u8, usize)>,
    accepted: i64,
}

fn uid(t: &str, id: &str) -> serde_json::Value {
    serde_json::json!({"type": format!("Vpcep::{t}"), "id": id})
}

/// `Vpcep::{t}::"{prefix}{i}"` for each `i` of `ids`.
fn uids(t: &str, prefix: &str, ids: &[usize]) -> Vec<serde_json::Value> {
    ids.iter()
        .map(|i| uid(t, &format!("{prefix}{i}")))
        .collect()
}

/// An entity-typed attribute value: org `o{k}`.
fn org_ref(k: usize) -> serde_json::Value {
    serde_json::json!({"__entity": uid("Org", &format!("o{k}"))})
}

/// One entity of the entities file.
fn entity(
    uid: serde_json::Value,
    attrs: serde_json::Map<String, serde_json::Value>,
    parents: Vec<serde_json::Value>,
) -> serde_json::Value {
    serde_json::json!({"uid": uid, "attrs": attrs, "parents": parents})
}

/// Groups `{prefix}0`, `{prefix}1`… of type `t`, each with its parents of the same type.
fn group_entities<'a>(
    t: &'a str,
    prefix: &'a str,
    parents: &'a [Vec<usize>],
) -> impl Iterator<Item = serde_json::Value> + 'a {
    parents.iter().enumerate().map(move |(i, p)| {
        entity(
            uid(t, &format!("{prefix}{i}")),
            Default::default(),
            uids(t, prefix, p),
        )
    })
}

fn subset(n: usize) -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::btree_set(0..n.max(1), 0..=n.min(3))
        .prop_map(move |s: BTreeSet<usize>| s.into_iter().filter(|&i| i < n).collect())
}

/// Parents for `n` groups: each a few of the groups before it.
fn groups(n: usize) -> Vec<BoxedStrategy<Vec<usize>>> {
    (0..n).map(|i| subset(i).boxed()).collect()
}

prop_compose! {
    /// 1–3 account groups, 1–2 org groups, 1–3 orgs, 1–2 service groups; 1–4 policies.
    fn world()(nag in 1usize..4, nog in 1usize..3, norg in 1usize..4, nsg in 1usize..3)(
        account_groups in groups(nag),
        org_groups in groups(nog),
        orgs in proptest::collection::vec(
            (
                subset(nog),
                proptest::option::of(any::<bool>()),
                proptest::option::of(0..norg + 1),
            ),
            norg,
        ),
        principal in proptest::option::of((subset(nag), proptest::option::of(0..norg + 1))),
        service_groups in groups(nsg),
        service in proptest::option::of(subset(nsg)),
        policies in proptest::collection::vec((0u8..9, 0usize..4), 1..5),
        accepted in 0i64..4,
    ) -> World {
        World {
            account_groups,
            org_groups,
            orgs,
            principal,
            service_groups,
            service,
            policies,
            accepted,
        }
    }
}

impl World {
    fn entities_json(&self) -> String {
        let mut out = Vec::new();
        out.extend(group_entities("AccountGroup", "ag", &self.account_groups));
        out.extend(group_entities("OrgGroup", "og", &self.org_groups));
        for (i, (parents, tier, partner)) in self.orgs.iter().enumerate() {
            let mut attrs = serde_json::Map::new();
            if let Some(gold) = tier {
                attrs.insert("tier".into(), (if *gold { "gold" } else { "lead" }).into());
            }
            if let Some(k) = partner {
                attrs.insert("partner".into(), org_ref(*k));
            }
            out.push(entity(
                uid("Org", &format!("o{i}")),
                attrs,
                uids("OrgGroup", "og", parents),
            ));
        }
        if let Some((groups, org)) = &self.principal {
            let mut attrs = serde_json::Map::new();
            if let Some(k) = org {
                attrs.insert("org".into(), org_ref(*k));
            }
            out.push(entity(
                uid("Account", "d0"),
                attrs,
                uids("AccountGroup", "ag", groups),
            ));
        }
        out.extend(group_entities("ServiceGroup", "sg", &self.service_groups));
        if let Some(groups) = &self.service {
            out.push(entity(
                uid("EndpointService", "svc"),
                Default::default(),
                uids("ServiceGroup", "sg", groups),
            ));
        }
        serde_json::Value::Array(out).to_string()
    }

    /// Policy text; every one guarded with `has`, so it passes strict validation too.
    fn policies_text(&self) -> String {
        let mut out = String::new();
        for (n, (t, k)) in self.policies.iter().enumerate() {
            let (effect, rest) = match t {
                0 => ("permit", "(principal, action, resource)".to_owned()),
                1 => ("permit", format!("(principal in Vpcep::AccountGroup::\"ag{k}\", action, resource)")),
                2 => ("forbid", format!("(principal, action, resource) when {{ principal has org && principal.org in Vpcep::OrgGroup::\"og{k}\" }}")),
                3 => ("forbid", "(principal, action, resource) when { principal has org && principal.org has tier && principal.org.tier == \"gold\" }".to_owned()),
                4 => ("permit", format!("(principal, action, resource) when {{ Vpcep::Org::\"o{k}\" has tier && Vpcep::Org::\"o{k}\".tier == \"gold\" }}")),
                5 => ("forbid", format!("(principal, action, resource in Vpcep::ServiceGroup::\"sg{k}\")")),
                6 => ("permit", format!("(principal, action, resource) when {{ principal has org && principal.org has partner && principal.org.partner in Vpcep::OrgGroup::\"og{k}\" }}")),
                7 => ("forbid", format!("(principal, action, resource) when {{ context.accepted_from_domain >= {k} }}")),
                _ => ("permit", format!("(principal, action, resource) when {{ Vpcep::Org::\"o{k}\" in Vpcep::OrgGroup::\"og0\" && resource in Vpcep::ServiceGroup::\"sg0\" }}")),
            };
            out.push_str(&format!("@id(\"p{n}\")\n{effect} {rest};\n"));
        }
        out
    }
}

fn facts(accepted: i64) -> ConnectionFacts {
    let mut f = ConnectionFacts::example("d0", "CHG-1");
    f.subject.service_id = "svc".into();
    f.accepted_from_domain = accepted;
    f
}

/// Cedar over the whole world: every entity of the file but the service, the resource
/// built from the facts (with the file's parents), the principal (bare when unlisted).
fn cedar_verdict(w: &World, schema: Option<&Schema>) -> (Verdict, Vec<String>) {
    let f = facts(w.accepted);
    let json: serde_json::Value = serde_json::from_str(&w.entities_json()).unwrap();
    let service_uid = EntityUid::from_str(r#"Vpcep::EndpointService::"svc""#).unwrap();
    let principal_uid = EntityUid::from_str(r#"Vpcep::Account::"d0""#).unwrap();
    let file = Entities::from_json_value(json, None).unwrap();
    let mut all: Vec<Entity> = file
        .iter()
        .filter(|e| e.uid() != service_uid)
        .cloned()
        .collect();
    let parents: HashSet<EntityUid> = file
        .get(&service_uid)
        .and_then(|e| e.to_json_value().ok())
        .and_then(|v| v.get("parents").cloned())
        .and_then(|p| serde_json::from_value::<Vec<serde_json::Value>>(p).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|p| EntityUid::from_json(serde_json::json!({"__entity": p})).unwrap())
        .collect();
    let attrs = [
        ("name", &f.subject.service_name),
        ("project_id", &f.subject.project_id),
        ("region", &f.region),
        ("target", &f.subject.target),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), RestrictedExpression::new_string(v.clone())))
    .collect();
    all.push(Entity::new(service_uid.clone(), attrs, parents).unwrap());
    if file.get(&principal_uid).is_none() {
        all.push(Entity::new_no_attrs(principal_uid.clone(), HashSet::new()));
    }
    let mut store = Entities::from_entities(all, None).unwrap();
    if let Some(s) = schema {
        store = store
            .add_entities(s.action_entities().unwrap().iter().cloned(), None)
            .unwrap();
    }
    // Built from its JSON form, not as the daemon builds it (src/policy/request.rs).
    let dt = |t: chrono::DateTime<chrono::Utc>| serde_json::json!({"__extn": {"fn": "datetime", "arg": t.format("%Y-%m-%dT%H:%M:%SZ").to_string()}});
    let context = Context::from_json_value(
        serde_json::json!({
            "endpoint_id": f.subject.endpoint_id,
            "description": f.subject.description,
            "marker_id": f.subject.marker_id,
            "created_at": dt(f.created_at),
            "now": dt(f.now),
            "accepted_from_domain": f.accepted_from_domain,
            "pending_from_domain": f.pending_from_domain,
        }),
        None,
    )
    .unwrap();
    let request = Request::new(
        principal_uid,
        EntityUid::from_str(r#"Vpcep::Action::"connect""#).unwrap(),
        service_uid,
        context,
        schema,
    )
    .unwrap();
    let parsed = PolicySet::from_str(&w.policies_text()).unwrap();
    let mut set = PolicySet::new();
    for p in parsed.policies() {
        let id = p.annotation("id").unwrap().to_owned();
        set.add(p.new_id(PolicyId::new(id))).unwrap();
    }
    let r = Authorizer::new().is_authorized(&request, &set, &store);
    let mut policies: Vec<String> = r.diagnostics().reason().map(ToString::to_string).collect();
    policies.sort();
    let verdict = if r.diagnostics().errors().next().is_some() {
        Verdict::Error
    } else if r.decision() == CedarDecision::Allow {
        Verdict::Permit
    } else if !policies.is_empty() {
        Verdict::Forbid
    } else {
        Verdict::NoMatch
    };
    if verdict == Verdict::Error {
        policies.clear();
    }
    (verdict, policies)
}

fn daemon_verdict(w: &World, with_schema: bool) -> (Verdict, Vec<String>) {
    let mut files = vec![
        ("p.cedar".to_owned(), w.policies_text().into_bytes()),
        ("entities.json".to_owned(), w.entities_json().into_bytes()),
    ];
    if with_schema {
        files.push(("schema.cedarschema".to_owned(), schema().into_bytes()));
    }
    let p = Policies::from_files(files).unwrap_or_else(|e| panic!("{e}\n{}", w.policies_text()));
    let d = p.decide(&facts(w.accepted), OnNoMatch::LeavePending);
    let policies = if d.verdict == Verdict::Error {
        Vec::new()
    } else {
        d.policies
    };
    (d.verdict, policies)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn the_daemon_answers_as_cedar_over_the_whole_store(w in world()) {
        prop_assert_eq!(daemon_verdict(&w, false), cedar_verdict(&w, None), "{}\n{}", w.policies_text(), w.entities_json());
        let (schema, _) = Schema::from_cedarschema_str(&schema()).unwrap();
        prop_assert_eq!(daemon_verdict(&w, true), cedar_verdict(&w, Some(&schema)), "{}\n{}", w.policies_text(), w.entities_json());
    }
}
