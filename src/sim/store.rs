//! The simulator's data: services and their connections, the query semantics of the
//! list routes, and the action state machine. No I/O; the server holds it behind a lock.
//!
//! Scale: each service keeps its connections in one `Vec`, sorted by creation time (ties
//! in insertion order), with an id index. A list request walks that `Vec` once, counts the
//! matches for `total_count` and clones only the requested page, so 10,000+ connections
//! and hundreds of concurrent reads stay cheap.
//!
//! Action transitions. The real behaviour off the happy path is not documented; the
//! simulator takes the worst case a daemon must survive (docs/design.md, "The API as the
//! daemon uses it"): an action on a connection someone else decided changes it, so acting
//! on a stale view visibly flips connections, and only the same action again is refused:
//!
//! | status | `receive` | `reject` |
//! |---|---|---|
//! | `pendingAcceptance` | `accepted` | `rejected` |
//! | `accepted` | 400 `EndPoint.2014` | `rejected` |
//! | `rejected` | `accepted` | 400 `EndPoint.2014` |
//! | `creating` | 400 `EndPoint.2019` | 400 `EndPoint.2019` |
//! | `deleting` | 400 `EndPoint.2018` | 400 `EndPoint.2018` |
//! | `failed` | 400 `EndPoint.1004` | 400 `EndPoint.1004` |

use super::SimError;
use super::api::{self, ApiError};
use super::seed::{Seed, SeedConnection};
use crate::clock::format_secs;
use crate::cloud::types::{ConnectionList, EndpointService, ServiceList, WireConnection, status};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Connection statuses the API documents.
pub(crate) const CONNECTION_STATUSES: [&str; 6] = [
    status::PENDING,
    "creating",
    status::ACCEPTED,
    status::REJECTED,
    "failed",
    "deleting",
];
/// Service statuses the API documents.
pub(crate) const SERVICE_STATUSES: [&str; 4] =
    ["creating", status::AVAILABLE, "failed", "deleting"];
/// Largest page.
const MAX_LIMIT: i64 = 1000;
/// Page size when `limit` is absent.
const DEFAULT_LIMIT: usize = 10;

/// A connection as the simulator holds it.
#[derive(Debug, Clone)]
struct ConnRec {
    id: String,
    domain_id: String,
    description: String,
    marker_id: i64,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl ConnRec {
    fn wire(&self) -> WireConnection {
        WireConnection {
            id: Some(self.id.clone()),
            marker_id: Some(self.marker_id),
            created_at: Some(format_secs(self.created_at)),
            updated_at: Some(format_secs(self.updated_at)),
            domain_id: Some(self.domain_id.clone()),
            status: Some(self.status.clone()),
            description: Some(self.description.clone()),
            error: None,
        }
    }

    fn snap(&self) -> SnapConnection {
        SnapConnection {
            id: self.id.clone(),
            domain_id: self.domain_id.clone(),
            description: self.description.clone(),
            marker_id: self.marker_id,
            status: self.status.clone(),
            created_at: format_secs(self.created_at),
            updated_at: format_secs(self.updated_at),
        }
    }
}

/// A service as the simulator holds it.
#[derive(Debug, Clone)]
struct ServiceRec {
    id: String,
    service_name: String,
    approval_enabled: bool,
    status: String,
    server_type: String,
    service_type: String,
    /// Only this project sees it; `None`: every project.
    project_id: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// Sorted by `created_at`, ties in insertion order.
    conns: Vec<ConnRec>,
    /// Endpoint id → index in `conns`.
    by_id: HashMap<String, usize>,
}

impl ServiceRec {
    /// Whether `project` sees this service.
    fn in_project(&self, project: &str) -> bool {
        self.project_id.as_deref().is_none_or(|p| p == project)
    }

    fn wire(&self, project_id: &str) -> EndpointService {
        let connection_count = self
            .conns
            .iter()
            .filter(|c| c.status == status::ACCEPTED || c.status == "creating")
            .count();
        EndpointService {
            id: Some(self.id.clone()),
            service_name: Some(self.service_name.clone()),
            approval_enabled: Some(self.approval_enabled),
            status: Some(self.status.clone()),
            server_type: Some(self.server_type.clone()),
            service_type: Some(self.service_type.clone()),
            project_id: Some(project_id.to_owned()),
            created_at: Some(format_secs(self.created_at)),
            updated_at: Some(format_secs(self.updated_at)),
            connection_count: i64::try_from(connection_count).ok(),
        }
    }

    /// Re-sorts after appending and rebuilds the id index.
    fn reindex(&mut self) {
        self.conns.sort_by_key(|c| c.created_at);
        self.by_id = self
            .conns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.clone(), i))
            .collect();
    }
}

/// One service in a [`SimSnapshot`](super::SimSnapshot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapService {
    /// Service id.
    pub id: String,
    /// Full service name.
    pub service_name: String,
    /// Whether connections need approval.
    pub approval_enabled: bool,
    /// Service status.
    pub status: String,
    /// The one project it belongs to, if the seed gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Its connections, oldest first.
    pub connections: Vec<SnapConnection>,
}

/// One connection in a [`SimSnapshot`](super::SimSnapshot), with its current status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapConnection {
    /// Endpoint id.
    pub id: String,
    /// Consumer account id.
    pub domain_id: String,
    /// Description.
    pub description: String,
    /// Packet id.
    pub marker_id: i64,
    /// Current status.
    pub status: String,
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    pub created_at: String,
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    pub updated_at: String,
}

/// `receive` or `reject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Receive,
    Reject,
}

impl Action {
    /// Exactly the documented lowercase spellings.
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "receive" => Some(Action::Receive),
            "reject" => Some(Action::Reject),
            _ => None,
        }
    }
}

/// Sort order of a list request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sort {
    by_update: bool,
    desc: bool,
}

/// Paging of a list request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Page {
    limit: usize,
    offset: usize,
}

/// First value of a query parameter.
fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn parse_page(q: &[(String, String)]) -> Result<Page, ApiError> {
    let limit = match param(q, "limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => {
                usize::try_from(n).map_err(|_| api::INVALID_LIMIT)?
            }
            _ => return Err(api::INVALID_LIMIT.with_message(format!("Invalid limit: {v:?}."))),
        },
    };
    let offset = match param(q, "offset") {
        None => 0,
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
            _ => return Err(api::INVALID_OFFSET.with_message(format!("Invalid offset: {v:?}."))),
        },
    };
    Ok(Page { limit, offset })
}

/// `sort_key` accepts both documented spellings (`create_at` and the older `created_at`).
fn parse_sort(q: &[(String, String)]) -> Result<Sort, ApiError> {
    let by_update = match param(q, "sort_key") {
        None | Some("create_at" | "created_at") => false,
        Some("update_at" | "updated_at") => true,
        Some(_) => return Err(api::INVALID_SORT_KEY),
    };
    let desc = match param(q, "sort_dir") {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(_) => return Err(api::INVALID_SORT_DIR),
    };
    Ok(Sort { by_update, desc })
}

/// A query parameter, when given and not empty.
fn nonempty<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    param(q, key).filter(|s| !s.is_empty())
}

/// What both listings take: an `id` and a `status` filter, sorting and paging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listing {
    id: Option<String>,
    status: Option<String>,
    sort: Sort,
    page: Page,
}

impl Listing {
    /// A `status` outside `statuses` is `invalid_status` of it.
    fn parse(
        q: &[(String, String)],
        statuses: &[&str],
        invalid_status: impl FnOnce(&str) -> ApiError,
    ) -> Result<Self, ApiError> {
        let status = nonempty(q, "status");
        if let Some(s) = status
            && !statuses.contains(&s)
        {
            return Err(invalid_status(s));
        }
        Ok(Listing {
            id: nonempty(q, "id").map(str::to_owned),
            status: status.map(str::to_owned),
            sort: parse_sort(q)?,
            page: parse_page(q)?,
        })
    }

    /// Whether a record with this id and status passes the filters.
    fn admits(&self, id: &str, status: &str) -> bool {
        self.id.as_deref().is_none_or(|want| want == id)
            && self.status.as_deref().is_none_or(|want| want == status)
    }
}

/// A parsed `GET …/vpc-endpoint-services` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceQuery {
    listing: Listing,
    name: Option<String>,
}

impl ServiceQuery {
    /// Validates the query; unknown parameters (`public_border_group`, `net_type`) are ignored.
    pub fn parse(q: &[(String, String)]) -> Result<Self, ApiError> {
        let listing = Listing::parse(q, &SERVICE_STATUSES, |_| api::INVALID_STATUS)?;
        let name = nonempty(q, "endpoint_service_name");
        if name.is_some_and(|n| n.chars().count() > 128) {
            return Err(api::INVALID_SERVICE_NAME);
        }
        Ok(ServiceQuery {
            listing,
            name: name.map(str::to_lowercase),
        })
    }
}

/// A parsed `GET …/connections` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnQuery {
    listing: Listing,
    marker_id: Option<i64>,
}

impl ConnQuery {
    /// Validates the query.
    pub fn parse(q: &[(String, String)]) -> Result<Self, ApiError> {
        let listing = Listing::parse(q, &CONNECTION_STATUSES, |s| {
            api::INVALID_STATUS.with_message(format!("Invalid status: {s:?}."))
        })?;
        let marker_id = match nonempty(q, "marker_id") {
            None => None,
            Some(v) => Some(v.trim().parse::<i64>().map_err(|_| api::INVALID_MARKER)?),
        };
        Ok(ConnQuery { listing, marker_id })
    }

    fn matches(&self, c: &ConnRec) -> bool {
        self.listing.admits(&c.id, &c.status) && self.marker_id.is_none_or(|m| m == c.marker_id)
    }
}

/// Services and connections.
#[derive(Debug, Default)]
pub(crate) struct Store {
    services: Vec<ServiceRec>,
    service_idx: HashMap<String, usize>,
    /// Endpoint id → index of its service, over all services.
    endpoint_svc: HashMap<String, usize>,
}

fn parse_time(
    s: Option<&str>,
    what: &str,
    default: DateTime<Utc>,
) -> Result<DateTime<Utc>, String> {
    match s {
        None => Ok(default),
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("{what} {s:?} is not an RFC 3339 time: {e}")),
    }
}

/// A random (version 4) UUID.
fn new_uuid() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
}

fn random_hex32() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A seed's id, or a fresh UUID when it has none.
fn seed_id(given: &Option<String>, what: &str) -> Result<String, String> {
    let id = given.clone().unwrap_or_else(new_uuid);
    if id.is_empty() || id.len() > 64 {
        return Err(format!("{what}.id {id:?} must be 1-64 characters"));
    }
    Ok(id)
}

/// A seed's status, one of `allowed`, or `default` when it has none.
fn seed_status(
    given: &Option<String>,
    default: &str,
    allowed: &[&str],
    what: &str,
) -> Result<String, String> {
    let status = given.clone().unwrap_or_else(|| default.to_owned());
    if !allowed.contains(&status.as_str()) {
        return Err(format!(
            "{what}.status {status:?} is not one of {}",
            allowed.join(", ")
        ));
    }
    Ok(status)
}

fn conn_from_seed(c: &SeedConnection, what: &str, now: DateTime<Utc>) -> Result<ConnRec, String> {
    let status = seed_status(&c.status, status::PENDING, &CONNECTION_STATUSES, what)?;
    let id = seed_id(&c.id, what)?;
    let created_at = parse_time(c.created_at.as_deref(), &format!("{what}.created_at"), now)?;
    let updated_at = parse_time(
        c.updated_at.as_deref(),
        &format!("{what}.updated_at"),
        created_at,
    )?;
    Ok(ConnRec {
        id,
        domain_id: c.domain_id.clone().unwrap_or_else(random_hex32),
        description: c.description.clone().unwrap_or_default(),
        // Random, mostly above 2^53, so a client that goes through f64 is caught.
        marker_id: c
            .marker_id
            .unwrap_or_else(|| rand::random_range(16_777_216..=(i64::MAX >> 1))),
        status,
        created_at,
        updated_at,
    })
}

/// Loading a seed means validating it, which is building a store from it.
impl Seed {
    /// Reads and validates a seed file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Seed, SimError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SimError::ReadSeed {
            path: path.to_owned(),
            source,
        })?;
        let seed: Seed = serde_json::from_str(&text).map_err(|source| SimError::ParseSeed {
            path: path.display().to_string(),
            source,
        })?;
        seed.validate().map_err(|reason| SimError::InvalidSeed {
            origin: path.display().to_string(),
            reason,
        })?;
        Ok(seed)
    }

    /// Parses and validates seed JSON held in memory.
    pub fn from_json(text: &str) -> Result<Seed, SimError> {
        let seed: Seed = serde_json::from_str(text).map_err(|source| SimError::ParseSeed {
            path: "<inline seed>".into(),
            source,
        })?;
        seed.validate().map_err(|reason| SimError::InvalidSeed {
            origin: "<inline seed>".into(),
            reason,
        })?;
        Ok(seed)
    }

    /// Checks what defaults cannot fix: timestamps, statuses and duplicate ids. The
    /// message names the offending element, e.g. `services[0].connections[3].created_at`.
    pub fn validate(&self) -> Result<(), String> {
        Store::from_seed(self, chrono::Utc::now()).map(|_| ())
    }

    /// Number of connections over all services.
    pub fn connection_count(&self) -> usize {
        self.services.iter().map(|s| s.connections.len()).sum()
    }
}

impl Store {
    /// Builds the store from a seed, filling in defaults; errors name the element.
    pub fn from_seed(seed: &Seed, now: DateTime<Utc>) -> Result<Store, String> {
        let mut store = Store::default();
        for (si, seeded) in seed.services.iter().enumerate() {
            let s = &seeded.service;
            let what = format!("services[{si}]");
            let id = seed_id(&s.id, &what)?;
            if store.service_idx.contains_key(&id) {
                return Err(format!("{what}.id {id:?} is a duplicate"));
            }
            let status = seed_status(&s.status, status::AVAILABLE, &SERVICE_STATUSES, &what)?;
            if s.project_id
                .as_ref()
                .is_some_and(|p| p.is_empty() || p.len() > 64)
            {
                return Err(format!("{what}.project_id must be 1-64 characters"));
            }
            let created_at =
                parse_time(s.created_at.as_deref(), &format!("{what}.created_at"), now)?;
            let mut rec = ServiceRec {
                service_name: s
                    .service_name
                    .clone()
                    .unwrap_or_else(|| format!("sim.service-{}.{id}", si + 1)),
                id: id.clone(),
                approval_enabled: s.approval_enabled.unwrap_or(true),
                status,
                server_type: s.server_type.clone().unwrap_or_else(|| "VM".into()),
                service_type: s.service_type.clone().unwrap_or_else(|| "interface".into()),
                project_id: s.project_id.clone(),
                created_at,
                updated_at: created_at,
                conns: Vec::with_capacity(seeded.connections.len()),
                by_id: HashMap::new(),
            };
            let idx = store.services.len();
            for (ci, c) in seeded.connections.iter().enumerate() {
                let c = conn_from_seed(c, &format!("{what}.connections[{ci}]"), now)?;
                if store.endpoint_svc.insert(c.id.clone(), idx).is_some() {
                    return Err(format!(
                        "{what}.connections[{ci}].id {:?} is a duplicate endpoint id",
                        c.id
                    ));
                }
                rec.conns.push(c);
            }
            rec.reindex();
            store.service_idx.insert(id, idx);
            store.services.push(rec);
        }
        Ok(store)
    }

    /// Number of connections over all services.
    pub fn connection_count(&self) -> usize {
        self.endpoint_svc.len()
    }

    /// Adds connections to a service (all or none). Returns them as the API shows them.
    pub fn add_connections(
        &mut self,
        service_id: &str,
        conns: &[SeedConnection],
        now: DateTime<Utc>,
    ) -> Result<Vec<WireConnection>, AddError> {
        let &si = self
            .service_idx
            .get(service_id)
            .ok_or_else(|| AddError::UnknownService(service_id.to_owned()))?;
        let mut seen = HashSet::new();
        let mut recs = Vec::with_capacity(conns.len());
        for (i, c) in conns.iter().enumerate() {
            let rec =
                conn_from_seed(c, &format!("connections[{i}]"), now).map_err(AddError::Invalid)?;
            if self.endpoint_svc.contains_key(&rec.id) || !seen.insert(rec.id.clone()) {
                return Err(AddError::Invalid(format!(
                    "connections[{i}].id {:?} is a duplicate endpoint id",
                    rec.id
                )));
            }
            recs.push(rec);
        }
        let out = recs.iter().map(ConnRec::wire).collect();
        for r in &recs {
            self.endpoint_svc.insert(r.id.clone(), si);
        }
        let svc = &mut self.services[si];
        svc.conns.extend(recs);
        svc.reindex();
        Ok(out)
    }

    /// `GET /v1/{project}/vpc-endpoint-services`.
    pub fn list_services(&self, q: &ServiceQuery, project_id: &str) -> ServiceList {
        let mut matched: Vec<&ServiceRec> = self
            .services
            .iter()
            .filter(|s| {
                s.in_project(project_id)
                    && q.listing.admits(&s.id, &s.status)
                    && q.name
                        .as_ref()
                        .is_none_or(|n| s.service_name.to_lowercase().contains(n.as_str()))
            })
            .collect();
        matched.sort_by_key(|s| {
            if q.listing.sort.by_update {
                s.updated_at
            } else {
                s.created_at
            }
        });
        if q.listing.sort.desc {
            matched.reverse();
        }
        let total = matched.len();
        let page = matched
            .into_iter()
            .skip(q.listing.page.offset)
            .take(q.listing.page.limit)
            .map(|s| s.wire(project_id))
            .collect();
        ServiceList {
            endpoint_services: Some(page),
            total_count: Some(total as u64),
        }
    }

    /// `GET /v1/{project}/vpc-endpoint-services/{id}`.
    pub fn show_service(&self, id: &str, project_id: &str) -> Result<EndpointService, ApiError> {
        self.service_idx
            .get(id)
            .map(|&i| &self.services[i])
            .filter(|s| s.in_project(project_id))
            .map(|s| s.wire(project_id))
            .ok_or(api::NOT_FOUND)
    }

    /// 404 `EndPoint.0005` for a service that another project owns (or none has), before
    /// its connections are listed or acted on.
    pub fn check_project(&self, service_id: &str, project_id: &str) -> Result<(), ApiError> {
        match self.service_idx.get(service_id) {
            Some(&i) if self.services[i].in_project(project_id) => Ok(()),
            _ => Err(api::NOT_FOUND),
        }
    }

    /// `GET …/{service}/connections`.
    pub fn list_connections(
        &self,
        service_id: &str,
        q: &ConnQuery,
    ) -> Result<ConnectionList, ApiError> {
        let &si = self.service_idx.get(service_id).ok_or(api::NOT_FOUND)?;
        let svc = &self.services[si];
        let (start, end) = (
            q.listing.page.offset,
            q.listing.page.offset.saturating_add(q.listing.page.limit),
        );
        let mut total = 0usize;
        let mut page = Vec::new();
        if let Some(id) = &q.listing.id {
            // The id filter is the read-back after an action: answer it from the index.
            if let Some(c) = svc
                .by_id
                .get(id)
                .map(|&i| &svc.conns[i])
                .filter(|c| q.matches(c))
            {
                total = 1;
                if start == 0 {
                    page.push(c.wire());
                }
            }
        } else if q.listing.sort.by_update {
            let mut matched: Vec<&ConnRec> = svc.conns.iter().filter(|c| q.matches(c)).collect();
            matched.sort_by_key(|c| c.updated_at);
            if q.listing.sort.desc {
                matched.reverse();
            }
            total = matched.len();
            page = matched
                .into_iter()
                .skip(start)
                .take(q.listing.page.limit)
                .map(ConnRec::wire)
                .collect();
        } else {
            let mut visit = |c: &ConnRec| {
                if q.matches(c) {
                    if (start..end).contains(&total) {
                        page.push(c.wire());
                    }
                    total += 1;
                }
            };
            if q.listing.sort.desc {
                svc.conns.iter().rev().for_each(&mut visit);
            } else {
                svc.conns.iter().for_each(&mut visit);
            }
        }
        Ok(ConnectionList {
            connections: Some(page),
            total_count: Some(total as u64),
        })
    }

    /// `POST …/{service}/connections/action` for one endpoint.
    pub fn act(
        &mut self,
        service_id: &str,
        endpoint_id: &str,
        action: Action,
        now: DateTime<Utc>,
    ) -> Result<WireConnection, ApiError> {
        let &si = self.service_idx.get(service_id).ok_or(api::NOT_FOUND)?;
        if endpoint_id.is_empty() || endpoint_id.len() > 64 {
            return Err(api::INVALID_ENDPOINT_ID);
        }
        if self.services[si].status != status::AVAILABLE {
            return Err(api::SERVICE_UNAVAILABLE);
        }
        let exists_elsewhere = self.endpoint_svc.contains_key(endpoint_id);
        let svc = &mut self.services[si];
        let Some(&ci) = svc.by_id.get(endpoint_id) else {
            return Err(if exists_elsewhere {
                api::NOT_IN_SERVICE
            } else {
                api::ENDPOINT_NOT_FOUND
            });
        };
        let conn = &mut svc.conns[ci];
        let next = match (conn.status.as_str(), action) {
            (status::ACCEPTED, Action::Receive) | (status::REJECTED, Action::Reject) => {
                return Err(api::ALREADY_CONNECTED);
            }
            (status::PENDING | status::ACCEPTED, Action::Reject) => status::REJECTED,
            (status::PENDING | status::REJECTED, Action::Receive) => status::ACCEPTED,
            ("creating", _) => return Err(api::BEING_CREATED),
            ("deleting", _) => return Err(api::BEING_DELETED),
            _ => return Err(api::INVALID_REQUEST),
        };
        conn.status = next.to_owned();
        conn.updated_at = now;
        Ok(conn.wire())
    }

    /// Sets a connection's status directly (another instance or a person deciding).
    pub fn set_status(
        &mut self,
        endpoint_id: &str,
        new_status: &str,
        now: DateTime<Utc>,
    ) -> Option<WireConnection> {
        let &si = self.endpoint_svc.get(endpoint_id)?;
        let svc = &mut self.services[si];
        let &ci = svc.by_id.get(endpoint_id)?;
        let conn = &mut svc.conns[ci];
        conn.status = new_status.to_owned();
        conn.updated_at = now;
        Some(conn.wire())
    }

    /// One connection by endpoint id.
    pub fn connection(&self, endpoint_id: &str) -> Option<SnapConnection> {
        let svc = &self.services[*self.endpoint_svc.get(endpoint_id)?];
        svc.by_id.get(endpoint_id).map(|&i| svc.conns[i].snap())
    }

    /// Every service with every connection.
    pub fn snapshot(&self) -> Vec<SnapService> {
        self.services
            .iter()
            .map(|s| SnapService {
                id: s.id.clone(),
                service_name: s.service_name.clone(),
                approval_enabled: s.approval_enabled,
                status: s.status.clone(),
                project_id: s.project_id.clone(),
                connections: s.conns.iter().map(ConnRec::snap).collect(),
            })
            .collect()
    }
}

/// Why connections could not be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AddError {
    /// No such service.
    UnknownService(String),
    /// A connection is invalid; the text names it.
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::seed::SeedService;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn store(n: usize) -> Store {
        let conns = (0..n)
            .map(|i| SeedConnection {
                id: Some(format!("e{i:05}")),
                domain_id: Some(format!("d{}", i % 3)),
                marker_id: Some(i as i64),
                status: Some(
                    if i % 2 == 0 {
                        "pendingAcceptance"
                    } else {
                        "accepted"
                    }
                    .into(),
                ),
                created_at: Some(format_secs(
                    t("2026-01-01T00:00:00Z") + chrono::Duration::seconds(i as i64),
                )),
                ..SeedConnection::default()
            })
            .collect();
        let seed = Seed {
            services: vec![
                SeedService::named("s1", "cn-north-4.Payments.s1", conns),
                SeedService {
                    service: EndpointService {
                        id: Some("s2".into()),
                        status: Some("creating".into()),
                        ..EndpointService::default()
                    },
                    connections: vec![SeedConnection {
                        id: Some("other".into()),
                        ..SeedConnection::default()
                    }],
                },
            ],
        };
        Store::from_seed(&seed, t("2026-06-01T00:00:00Z")).expect("seed")
    }

    fn ids(l: &ConnectionList) -> Vec<String> {
        l.connections
            .as_ref()
            .expect("page")
            .iter()
            .map(|c| c.id.clone().expect("id"))
            .collect()
    }

    /// The API error code of a call that must fail.
    fn code_of<T: std::fmt::Debug>(r: Result<T, ApiError>) -> std::borrow::Cow<'static, str> {
        r.expect_err("an error").code
    }

    fn list(s: &Store, pairs: &[(&str, &str)]) -> Result<ConnectionList, ApiError> {
        s.list_connections("s1", &ConnQuery::parse(&q(pairs))?)
    }

    #[test]
    fn defaults_newest_first_ten_per_page() {
        let s = store(25);
        let l = list(&s, &[]).expect("list");
        assert_eq!(l.total_count, Some(25));
        assert_eq!(ids(&l).len(), 10);
        assert_eq!(ids(&l)[0], "e00024");
        let l = list(&s, &[("sort_dir", "asc"), ("limit", "3"), ("offset", "2")]).expect("list");
        assert_eq!(ids(&l), ["e00002", "e00003", "e00004"]);
    }

    #[test]
    fn filters_and_total_count_ignore_paging() {
        let s = store(2500);
        let l = list(
            &s,
            &[
                ("status", "pendingAcceptance"),
                ("limit", "1000"),
                ("offset", "1000"),
            ],
        )
        .expect("list");
        assert_eq!(l.total_count, Some(1250));
        assert_eq!(ids(&l).len(), 250);
        let l = list(&s, &[("marker_id", "7")]).expect("list");
        assert_eq!(ids(&l), ["e00007"]);
        let l = list(&s, &[("id", "e00008"), ("status", "accepted")]).expect("list");
        assert_eq!(l.total_count, Some(0));
        let l = list(&s, &[("id", "e00008")]).expect("list");
        assert_eq!(ids(&l), ["e00008"]);
        let l = list(&s, &[("offset", "5000")]).expect("list");
        assert_eq!((ids(&l).len(), l.total_count), (0, Some(2500)));
    }

    #[test]
    fn query_errors() {
        let s = store(3);
        let code = |pairs: &[(&str, &str)]| list(&s, pairs).expect_err("error").code;
        assert_eq!(code(&[("limit", "0")]), "EndPoint.0006");
        assert_eq!(code(&[("limit", "1001")]), "EndPoint.0006");
        assert_eq!(code(&[("limit", "x")]), "EndPoint.0006");
        assert_eq!(code(&[("offset", "-1")]), "EndPoint.0010");
        assert_eq!(code(&[("status", "pending")]), "EndPoint.0019");
        assert_eq!(code(&[("sort_key", "name")]), "EndPoint.0017");
        assert_eq!(code(&[("sort_dir", "up")]), "EndPoint.0018");
        assert_eq!(code(&[("marker_id", "abc")]), "EndPoint.0021");
        assert!(list(&s, &[("limit", "1000"), ("sort_key", "update_at")]).is_ok());
        let e = s
            .list_connections("nope", &ConnQuery::parse(&[]).expect("q"))
            .expect_err("unknown");
        assert_eq!((e.status.as_u16(), e.code.as_ref()), (404, "EndPoint.0005"));
    }

    #[test]
    fn a_service_with_a_project_is_seen_only_there() {
        let seed = Seed::from_json(
            r#"{"services":[{"id":"base","connections":[{"id":"e1"}]},
                            {"id":"other","project_id":"p-agency","connections":[{"id":"e2"}]}]}"#,
        )
        .expect("seed");
        let mut s = Store::from_seed(&seed, Utc::now()).expect("store");
        let ids = |s: &Store, p: &str| -> Vec<String> {
            s.list_services(&ServiceQuery::parse(&[]).expect("q"), p)
                .endpoint_services
                .unwrap_or_default()
                .into_iter()
                .filter_map(|x| x.id)
                .collect()
        };
        let mut seen = ids(&s, "p-agency");
        seen.sort();
        assert_eq!(
            seen,
            ["base", "other"],
            "a service without a project is everywhere"
        );
        assert_eq!(ids(&s, "p-base"), ["base"]);
        assert_eq!(
            s.show_service("other", "p-base").expect_err("hidden").code,
            "EndPoint.0005"
        );
        assert!(s.show_service("other", "p-agency").is_ok());
        assert_eq!(
            s.check_project("other", "p-base").expect_err("hidden").code,
            "EndPoint.0005"
        );
        assert!(s.check_project("other", "p-agency").is_ok());
        assert!(s.check_project("base", "anything").is_ok());
        assert!(s.check_project("nope", "p-agency").is_err());
        assert_eq!(
            s.snapshot()
                .iter()
                .map(|x| x.project_id.as_deref())
                .collect::<Vec<_>>(),
            [None, Some("p-agency")]
        );
        assert!(s.act("other", "e2", Action::Receive, Utc::now()).is_ok());
        let err = Seed::from_json(r#"{"services":[{"project_id":""}]}"#).expect_err("empty");
        assert!(err.to_string().contains("services[0].project_id"), "{err}");
    }

    #[test]
    fn services_filters_and_count() {
        let s = store(4);
        let all = s.list_services(&ServiceQuery::parse(&[]).expect("q"), "p");
        assert_eq!(all.total_count, Some(2));
        let l = s.list_services(
            &ServiceQuery::parse(&q(&[("endpoint_service_name", "PAYMENTS")])).expect("q"),
            "p",
        );
        let svc = &l.endpoint_services.expect("page")[0];
        assert_eq!(svc.id.as_deref(), Some("s1"));
        assert_eq!(svc.connection_count, Some(2));
        assert_eq!(svc.project_id.as_deref(), Some("p"));
        let l = s.list_services(
            &ServiceQuery::parse(&q(&[("status", "available")])).expect("q"),
            "p",
        );
        assert_eq!(l.total_count, Some(1));
        let l = s.list_services(
            &ServiceQuery::parse(&q(&[("limit", "1"), ("offset", "1")])).expect("q"),
            "p",
        );
        assert_eq!(
            (l.total_count, l.endpoint_services.map(|v| v.len())),
            (Some(2), Some(1))
        );
        assert_eq!(
            code_of(ServiceQuery::parse(&q(&[("status", "x")]))),
            "EndPoint.0019"
        );
        assert_eq!(code_of(s.show_service("zz", "p")), "EndPoint.0005");
    }

    #[test]
    fn action_state_machine() {
        let mut s = store(4);
        let now = t("2026-06-02T00:00:00Z");
        let c = s
            .act("s1", "e00000", Action::Receive, now)
            .expect("receive pending");
        assert_eq!(c.status.as_deref(), Some("accepted"));
        assert_eq!(c.updated_at.as_deref(), Some("2026-06-02T00:00:00Z"));
        let code = |s: &mut Store, e: &str, a| s.act("s1", e, a, now).expect_err("error").code;
        assert_eq!(code(&mut s, "e00000", Action::Receive), "EndPoint.2014");
        let c = s
            .act("s1", "e00000", Action::Reject, now)
            .expect("reject accepted");
        assert_eq!(c.status.as_deref(), Some("rejected"), "disconnects it");
        assert_eq!(code(&mut s, "e00000", Action::Reject), "EndPoint.2014");
        let c = s
            .act("s1", "e00000", Action::Receive, now)
            .expect("receive rejected");
        assert_eq!(c.status.as_deref(), Some("accepted"), "accepts it again");
        assert_eq!(code(&mut s, "other", Action::Receive), "EndPoint.2013");
        let e = s
            .act("s1", "ghost", Action::Receive, now)
            .expect_err("ghost");
        assert_eq!((e.status.as_u16(), e.code.as_ref()), (404, "EndPoint.2006"));
        assert_eq!(code(&mut s, "", Action::Receive), "EndPoint.2017");
        s.set_status("e00002", "creating", now).expect("set");
        assert_eq!(
            s.connection("e00002").map(|c| c.status),
            Some("creating".into())
        );
        assert_eq!(s.connection("ghost"), None);
        assert_eq!(code(&mut s, "e00002", Action::Receive), "EndPoint.2019");
        let service_creating = s.act("s2", "other", Action::Receive, now);
        assert_eq!(code_of(service_creating), "EndPoint.2004");
        let no_such_service = s.act("nope", "x", Action::Receive, now);
        assert_eq!(code_of(no_such_service), "EndPoint.0005");
    }

    #[test]
    fn add_connections_all_or_nothing() {
        let mut s = store(2);
        let now = t("2027-01-01T00:00:00Z");
        let added = s
            .add_connections(
                "s1",
                &[SeedConnection::default(), SeedConnection::default()],
                now,
            )
            .expect("add");
        assert_eq!(added.len(), 2);
        assert_eq!(added[0].status.as_deref(), Some("pendingAcceptance"));
        assert_eq!(added[0].description.as_deref(), Some(""));
        assert_eq!(s.connection_count(), 5);
        let newest = list(&s, &[("limit", "2")]).expect("list");
        assert!(ids(&newest).contains(added[1].id.as_ref().expect("id")));
        let dup = SeedConnection {
            id: Some("e00001".into()),
            ..SeedConnection::default()
        };
        assert!(matches!(
            s.add_connections("s1", &[SeedConnection::default(), dup], now),
            Err(AddError::Invalid(m)) if m.contains("connections[1]")
        ));
        assert_eq!(s.connection_count(), 5);
        assert_eq!(
            s.add_connections("zz", &[], now),
            Err(AddError::UnknownService("zz".into()))
        );
    }
}
