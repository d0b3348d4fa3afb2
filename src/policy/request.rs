//! Building the Cedar request for one connection (README "Policies") from typed values only:
//! entity ids, strings and datetimes are constructed, never spliced into Cedar source,
//! so a description can hold any text at all.
//!
//! Exactness and speed: a request is answered as Cedar answers it over the whole of
//! `entities.json` plus the principal and resource built from the connection. Cedar
//! reads an entity's data only to test membership (`in`, through the ancestors) or to
//! read its attributes and tags; an entity whose data a policy can reach is therefore the
//! principal, the action, an entity named literally in a policy, or one reached from
//! those through attribute and tag values, recursively. [`EntityIndex`] computes that
//! closure once, at load, per listed account, plus one shared part (the action and the
//! policies' literals); every entity in it lists all of its ancestors as parents, so no
//! group needs to be present for membership. A request's entity set is built from those
//! few entities, so no decision copies the whole store, and the answer is the same.

use crate::decision::ConnectionFacts;
use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression,
    Schema,
};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Mutex;

/// Entity type of consumer accounts.
pub(crate) const ACCOUNT_TYPE: &str = "Vpcep::Account";
/// Entity type of endpoint services.
pub(crate) const SERVICE_TYPE: &str = "Vpcep::EndpointService";
/// Entity type of actions.
const ACTION_TYPE: &str = "Vpcep::Action";
/// The only action.
const ACTION_ID: &str = "connect";
/// Attributes of the resource, all strings, all from the facts.
const SERVICE_ATTRS: [&str; 4] = ["name", "project_id", "region", "target"];

/// Most datetime expressions kept in one generation; it is emptied when it grows past
/// this (only when nothing rotates the cache, e.g. a long `eval` session).
const DATETIME_CACHE_LIMIT: usize = 4096;

/// Datetime expressions by Unix second, in two generations: the ones used since the last
/// [`DatetimeCache::rotate`] and the ones used in the span before it. Rotating once per
/// poll cycle keeps what recurs (the `created_at` of a connection that stays pending, and
/// `now`) and drops the rest, so memory follows the pending backlog instead of growing
/// with every connection ever seen.
#[derive(Debug, Default)]
struct DatetimeCache {
    current: HashMap<i64, RestrictedExpression>,
    previous: HashMap<i64, RestrictedExpression>,
}

impl DatetimeCache {
    fn get(&mut self, key: i64) -> Option<RestrictedExpression> {
        if let Some(e) = self.current.get(&key) {
            return Some(e.clone());
        }
        let e = self.previous.remove(&key)?;
        self.insert(key, e.clone());
        Some(e)
    }

    fn insert(&mut self, key: i64, expr: RestrictedExpression) {
        if self.current.len() >= DATETIME_CACHE_LIMIT {
            self.current.clear();
        }
        self.current.insert(key, expr);
    }

    fn rotate(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// Parsed type names and the action uid, made once per policy set, and recently built
/// datetime expressions.
#[derive(Debug)]
pub(crate) struct RequestModel {
    account: EntityTypeName,
    service: EntityTypeName,
    action: EntityUid,
    /// Unix seconds → `datetime("…")`. Building that expression costs Cedar a parse of
    /// the name `datetime` every time, a good part of a whole decision; a connection's
    /// `created_at` recurs every cycle while it is pending and `now` is shared by every
    /// connection of a cycle, so a small cache removes most of that cost.
    datetimes: Mutex<DatetimeCache>,
}

/// What a request needs from `entities.json` about one service: its ancestors, the
/// parents of the resource built from the facts (its attributes come from the facts).
#[derive(Debug, Default)]
struct ServiceEntry {
    parents: HashSet<EntityUid>,
}

/// The entities a request can reach, from `entities.json` (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct EntityIndex {
    /// domain id → the account entity followed by what it reaches through attributes.
    accounts: HashMap<String, Vec<Entity>>,
    /// service id → its ancestors.
    services: HashMap<String, ServiceEntry>,
    /// Reachable by every request: the action (with its groups) and the entities the
    /// policies name, with what those reach.
    shared: Vec<Entity>,
}

/// A time as Cedar's `datetime("…")`, in whole seconds (fractions are dropped). The API
/// reports `created_at` in whole seconds, policies reason in hours and days, and Cedar
/// parses the shorter form noticeably faster.
fn cedar_datetime(t: DateTime<Utc>) -> RestrictedExpression {
    RestrictedExpression::new_datetime(t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// Every entity a policy of `set` names (in its scope or its conditions).
pub(crate) fn literals(set: &cedar_policy::PolicySet) -> Vec<EntityUid> {
    let mut out = Vec::new();
    for p in set.policies() {
        if let Ok(json) = p.to_json() {
            uids_in(&json, &mut out);
        }
    }
    out.sort_by_key(ToString::to_string);
    out.dedup();
    out
}

/// Every entity uid written in `v` (entity references in attribute and tag values, and
/// the `{"type":…,"id":…}` objects of a policy in Cedar's JSON form).
fn uids_in(v: &serde_json::Value, out: &mut Vec<EntityUid>) {
    match v {
        serde_json::Value::Object(map) => {
            if map.len() == 2
                && let (Some(t), Some(id)) = (
                    map.get("type").and_then(serde_json::Value::as_str),
                    map.get("id").and_then(serde_json::Value::as_str),
                )
                && let Ok(ty) = EntityTypeName::from_str(t)
            {
                out.push(EntityUid::from_type_name_and_id(ty, EntityId::new(id)));
                return;
            }
            for x in map.values() {
                uids_in(x, out);
            }
        }
        serde_json::Value::Array(list) => list.iter().for_each(|x| uids_in(x, out)),
        _ => {}
    }
}

impl RequestModel {
    pub(crate) fn new() -> Self {
        RequestModel {
            account: EntityTypeName::from_str(ACCOUNT_TYPE).expect("a valid entity type name"),
            service: EntityTypeName::from_str(SERVICE_TYPE).expect("a valid entity type name"),
            action: EntityUid::from_type_name_and_id(
                EntityTypeName::from_str(ACTION_TYPE).expect("a valid entity type name"),
                EntityId::new(ACTION_ID),
            ),
            datetimes: Mutex::new(DatetimeCache::default()),
        }
    }

    /// Starts a new cache generation (once per poll cycle): datetimes not used since the
    /// previous rotation are dropped.
    pub(crate) fn rotate_cache(&self) {
        if let Ok(mut cache) = self.datetimes.lock() {
            cache.rotate();
        }
    }

    /// Datetime expressions held.
    #[cfg(test)]
    fn cached_datetimes(&self) -> usize {
        self.datetimes.lock().map_or(0, |c| c.len())
    }

    /// `datetime("…")` for `t`, from the cache when it was built before. A poisoned lock
    /// only means no caching.
    fn datetime(&self, t: DateTime<Utc>) -> RestrictedExpression {
        let key = t.timestamp();
        let cached = self.datetimes.lock().ok().and_then(|mut c| c.get(key));
        if let Some(expr) = cached {
            return expr;
        }
        let expr = cedar_datetime(t);
        if let Ok(mut cache) = self.datetimes.lock() {
            cache.insert(key, expr.clone());
        }
        expr
    }

    fn account_uid(&self, domain_id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(self.account.clone(), EntityId::new(domain_id))
    }

    fn service_uid(&self, service_id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(self.service.clone(), EntityId::new(service_id))
    }

    fn context(&self, facts: &ConnectionFacts) -> Result<Context, String> {
        Context::from_pairs([
            (
                "endpoint_id".to_owned(),
                RestrictedExpression::new_string(facts.subject.endpoint_id.clone()),
            ),
            (
                "description".to_owned(),
                RestrictedExpression::new_string(facts.subject.description.clone()),
            ),
            (
                "marker_id".to_owned(),
                RestrictedExpression::new_long(facts.subject.marker_id),
            ),
            ("created_at".to_owned(), self.datetime(facts.created_at)),
            ("now".to_owned(), self.datetime(facts.now)),
            (
                "accepted_from_domain".to_owned(),
                RestrictedExpression::new_long(facts.accepted_from_domain),
            ),
            (
                "pending_from_domain".to_owned(),
                RestrictedExpression::new_long(facts.pending_from_domain),
            ),
        ])
        .map_err(|e| format!("cannot build the request context: {}", super::chain(&e)))
    }

    fn resource(
        &self,
        facts: &ConnectionFacts,
        parents: HashSet<EntityUid>,
    ) -> Result<Entity, String> {
        let values = [
            &facts.subject.service_name,
            &facts.subject.project_id,
            &facts.region,
            &facts.subject.target,
        ];
        let attrs = SERVICE_ATTRS
            .iter()
            .zip(values)
            .map(|(k, v)| ((*k).to_owned(), RestrictedExpression::new_string(v.clone())))
            .collect();
        Entity::new(self.service_uid(&facts.subject.service_id), attrs, parents)
            .map_err(|e| format!("cannot build the resource entity: {e}"))
    }

    /// The request and its entity set for one connection. With a schema the request is
    /// validated against it; any failure is a message for the `errors` of the decision.
    pub(crate) fn request(
        &self,
        facts: &ConnectionFacts,
        index: &EntityIndex,
        schema: Option<&Schema>,
    ) -> Result<(Request, Entities), String> {
        let principal = self.account_uid(&facts.subject.domain_id);
        let resource_uid = self.service_uid(&facts.subject.service_id);
        let service = index.services.get(&facts.subject.service_id);
        let account = index.accounts.get(&facts.subject.domain_id);

        let mut entities = Vec::with_capacity(2 + account.map_or(0, Vec::len) + index.shared.len());
        match account {
            Some(listed) => entities.extend(listed.iter().cloned()),
            None => entities.push(Entity::new_no_attrs(principal.clone(), HashSet::new())),
        }
        let parents = service.map(|s| s.parents.clone()).unwrap_or_default();
        entities.push(self.resource(facts, parents)?);
        entities.extend(index.shared.iter().cloned());
        let entities = small_store(entities)?;

        let context = self.context(facts)?;
        let request = Request::new(
            principal,
            self.action.clone(),
            resource_uid,
            context,
            schema,
        )
        .map_err(|e| format!("request fails schema validation: {}", super::chain(&e)))?;
        Ok((request, entities))
    }

    /// Checks once, at load, that `schema` accepts the request and resource entity this
    /// module builds, so a schema that drifted from the request model (README "Policies") is a load error.
    pub(crate) fn check_schema(&self, schema: &Schema) -> Result<(), String> {
        let sample = ConnectionFacts::example("d", "");
        let mismatch = |e: String| format!("schema does not match the request model: {e}");
        Request::new(
            self.account_uid(&sample.subject.domain_id),
            self.action.clone(),
            self.service_uid(&sample.subject.service_id),
            self.context(&sample).map_err(mismatch)?,
            Some(schema),
        )
        .map_err(|e| mismatch(e.to_string()))?;
        let principal =
            Entity::new_no_attrs(self.account_uid(&sample.subject.domain_id), HashSet::new());
        let resource = self.resource(&sample, HashSet::new()).map_err(mismatch)?;
        Entities::from_entities([principal, resource], Some(schema))
            .map_err(|e| mismatch(e.to_string()))?;
        Ok(())
    }
}

/// Builds a request's entity store; an entity reached both from the principal and from
/// the policies is kept once.
fn small_store(entities: Vec<Entity>) -> Result<Entities, String> {
    // A handful of entities: a quadratic check is cheaper than hashing, and it spares
    // cloning every entity in case Cedar refuses a duplicate.
    let uids: Vec<EntityUid> = entities.iter().map(Entity::uid).collect();
    let duplicated = uids.iter().enumerate().any(|(i, u)| uids[..i].contains(u));
    let built = if duplicated {
        let mut seen = HashSet::new();
        Entities::from_entities(entities.into_iter().filter(|e| seen.insert(e.uid())), None)
    } else {
        Entities::from_entities(entities, None)
    };
    built.map_err(|e| format!("cannot build the request entities: {e}"))
}

impl EntityIndex {
    /// The index without `entities.json`: only the action entities of the schema.
    pub(crate) fn empty(
        schema: Option<&Schema>,
        model: &RequestModel,
        literals: &[EntityUid],
    ) -> Result<Self, String> {
        let store = match schema {
            Some(schema) => schema
                .action_entities()
                .map_err(|e| format!("cannot read the actions of the schema: {e}"))?,
            None => Entities::empty(),
        };
        Self::from_store(&store, model, literals)
    }

    /// Parses `entities.json` (Cedar's JSON entity format), validates it against the
    /// schema when there is one, and indexes it for requests that can reach the entities
    /// in `literals` (those the policies name).
    pub(crate) fn from_json(
        text: &str,
        schema: Option<&Schema>,
        model: &RequestModel,
        literals: &[EntityUid],
    ) -> Result<Self, String> {
        let mut json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        if schema.is_some() {
            fill_service_attrs(&mut json);
        }
        // With a schema, Cedar adds the schema's action entities (and their groups).
        let store = Entities::from_json_value(json, schema)
            .map_err(|e| format!("invalid entities: {}", super::chain(&e)))?;
        Self::from_store(&store, model, literals)
    }

    fn from_store(
        store: &Entities,
        model: &RequestModel,
        literals: &[EntityUid],
    ) -> Result<Self, String> {
        // Every entity with all of its ancestors as parents (the closure over the whole
        // file), and the entities its attribute and tag values refer to.
        let mut flat: HashMap<EntityUid, (Entity, Vec<EntityUid>)> = HashMap::new();
        for entity in store.iter() {
            let uid = entity.uid();
            let mut ancestors: Vec<EntityUid> = store
                .ancestors(&uid)
                .map(|a| a.cloned().collect())
                .unwrap_or_default();
            // Sorted so a request's store is built the same way every time.
            ancestors.sort_by_key(ToString::to_string);
            let json = entity
                .to_json_value()
                .map_err(|e| format!("cannot index entity {uid}: {e}"))?;
            let mut refs = Vec::new();
            for key in ["attrs", "tags"] {
                if let Some(v) = json.get(key) {
                    uids_in(v, &mut refs);
                }
            }
            flat.insert(uid, (flatten(entity, &ancestors)?, refs));
        }
        // What `start` reaches through attribute and tag values, `start` first.
        let reach = |start: &[EntityUid]| -> Vec<Entity> {
            let mut seen: HashSet<EntityUid> = HashSet::new();
            let mut queue: std::collections::VecDeque<EntityUid> = start.iter().cloned().collect();
            let mut out = Vec::new();
            while let Some(uid) = queue.pop_front() {
                if !seen.insert(uid.clone()) {
                    continue;
                }
                if let Some((entity, refs)) = flat.get(&uid) {
                    out.push(entity.clone());
                    queue.extend(refs.iter().cloned());
                }
            }
            out
        };
        let mut index = EntityIndex::default();
        for entity in store.iter() {
            let uid = entity.uid();
            if *uid.type_name() == model.account {
                index.accounts.insert(
                    uid.id().unescaped().to_owned(),
                    reach(std::slice::from_ref(&uid)),
                );
            } else if *uid.type_name() == model.service {
                let parents = flat
                    .get(&uid)
                    .map(|(e, _)| {
                        store
                            .ancestors(&e.uid())
                            .map(|a| a.cloned().collect())
                            .unwrap_or_default()
                    })
                    .unwrap_or_default();
                index
                    .services
                    .insert(uid.id().unescaped().to_owned(), ServiceEntry { parents });
            }
        }
        let mut shared_start = vec![model.action.clone()];
        shared_start.extend(literals.iter().cloned());
        index.shared = reach(&shared_start);
        Ok(index)
    }
}

/// `entity` with `ancestors` as its parents, attributes and tags kept.
fn flatten(entity: &Entity, ancestors: &[EntityUid]) -> Result<Entity, String> {
    let broken = |e: cedar_policy::entities_errors::EntitiesError| {
        format!("cannot index entity {}: {e}", entity.uid())
    };
    let mut json = entity.to_json_value().map_err(broken)?;
    let parents = ancestors
        .iter()
        .map(|a| serde_json::json!({ "type": a.type_name().to_string(), "id": a.id().unescaped() }))
        .collect();
    if let Some(obj) = json.as_object_mut() {
        obj.insert("parents".to_owned(), serde_json::Value::Array(parents));
    }
    Entity::from_json_value(json, None).map_err(broken)
}

/// Service entries in `entities.json` carry groups only; their attributes come from the
/// facts at request time. For schema validation, fill the attributes the schema requires
/// with empty strings where the file leaves them out.
fn fill_service_attrs(json: &mut serde_json::Value) {
    let Some(list) = json.as_array_mut() else {
        return;
    };
    for item in list {
        let Some(obj) = item.as_object_mut() else {
            continue;
        };
        let uid = obj.get("uid");
        let ty = uid
            .and_then(|u| u.get("__entity").unwrap_or(u).get("type"))
            .and_then(serde_json::Value::as_str);
        if ty != Some(SERVICE_TYPE) {
            continue;
        }
        let attrs = obj
            .entry("attrs")
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        if let Some(attrs) = attrs.as_object_mut() {
            for key in SERVICE_ATTRS {
                attrs
                    .entry(key)
                    .or_insert_with(|| serde_json::Value::String(String::new()));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn datetime_format_is_accepted_by_cedar() {
        let t = DateTime::parse_from_rfc3339("2022-04-14T09:35:47.5+02:00")
            .unwrap()
            .with_timezone(&Utc);
        let ctx = Context::from_pairs([("t".to_owned(), cedar_datetime(t))]);
        assert!(ctx.is_ok(), "{ctx:?}");
    }

    #[test]
    fn unlisted_account_and_service_get_bare_entities() {
        let model = RequestModel::new();
        let index = EntityIndex::empty(None, &model, &[]).unwrap();
        let now = Utc::now();
        let mut facts =
            ConnectionFacts::example("dom\"ain\n", "\"; permit(principal, action, resource); //");
        facts.subject.service_id = "svc".into();
        facts.subject.marker_id = i64::MIN;
        (facts.created_at, facts.now) = (now, now);
        facts.accepted_from_domain = i64::MAX;
        facts.pending_from_domain = 0;
        let (_, entities) = model.request(&facts, &index, None).unwrap();
        assert_eq!(entities.len(), 2);
    }

    #[test]
    fn the_datetime_cache_keeps_what_recurs_across_a_rotation_and_drops_the_rest() {
        let model = RequestModel::new();
        let t = |s: i64| DateTime::<Utc>::from_timestamp(1_800_000_000 + s, 0).unwrap();
        for s in 0..100 {
            model.datetime(t(s));
        }
        assert_eq!(model.cached_datetimes(), 100);
        model.rotate_cache();
        // The next cycle uses ten of them again (still pending) and a new `now`.
        for s in 0..10 {
            model.datetime(t(s));
        }
        model.datetime(t(1_000));
        assert_eq!(model.cached_datetimes(), 100 + 1);
        model.rotate_cache();
        assert_eq!(model.cached_datetimes(), 11);
        model.rotate_cache();
        assert_eq!(model.cached_datetimes(), 0);
        // A cached expression is the same datetime.
        let a = model.datetime(t(5));
        let b = model.datetime(t(5));
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_eq!(format!("{a:?}"), format!("{:?}", cedar_datetime(t(5))));
    }

    #[test]
    fn an_entity_reached_twice_is_in_the_store_once_and_unreachable_ones_not_at_all() {
        // The zone is both the account's attribute and named by a policy; the other zone
        // is only an ancestor, which membership answers without its entity.
        let model = RequestModel::new();
        let json = r#"[
          {"uid": {"type": "Vpcep::Zone", "id": "shared"}, "attrs": {"tier": "gold"}, "parents": []},
          {"uid": {"type": "Vpcep::Zone", "id": "other"}, "attrs": {"tier": "lead"}, "parents": []},
          {"uid": {"type": "Vpcep::Account", "id": "a"},
           "attrs": {"zone": {"__entity": {"type": "Vpcep::Zone", "id": "shared"}}},
           "parents": [{"type": "Vpcep::Zone", "id": "other"}]},
          {"uid": {"type": "Vpcep::EndpointService", "id": "svc"}, "attrs": {},
           "parents": [{"type": "Vpcep::Zone", "id": "shared"}]}
        ]"#;
        let zone = EntityUid::from_str(r#"Vpcep::Zone::"shared""#).unwrap();
        let index = EntityIndex::from_json(json, None, &model, &[zone]).unwrap();
        let mut facts = ConnectionFacts::example("a", "");
        facts.subject.service_id = "svc".into();
        let (_, entities) = model.request(&facts, &index, None).unwrap();
        // The account, the service and the shared zone, once.
        assert_eq!(entities.len(), 3);
    }

    #[test]
    fn policy_literals_are_found_in_scopes_and_conditions() {
        let set = cedar_policy::PolicySet::from_str(
            r#"permit (principal in Vpcep::AccountGroup::"g", action in [Vpcep::Action::"connect"], resource)
               when { Vpcep::Org::"o".tier == "gold" };"#,
        )
        .unwrap();
        let found: Vec<String> = literals(&set).iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [
                r#"Vpcep::AccountGroup::"g""#,
                r#"Vpcep::Action::"connect""#,
                r#"Vpcep::Org::"o""#
            ]
        );
    }
}
