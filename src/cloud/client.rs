//! The VPCEP operations (README "How a cycle works"): list services, list connections,
//! read one connection back, accept or reject one endpoint.
//!
//! One [`CloudClient`] serves every target. Its transport holds the credentials, ONE rate
//! limiter and ONE in-flight semaphore over every request of every target (IAM token
//! requests included), and the metrics; each [`TargetClient`] adds the target's endpoints,
//! its HTTP client (one per distinct `ca_file`) and its authentication gate.

use super::auth::Credentials;
use super::error::{ApiError, ApiErrorKind, CloudError};
use super::signer;
use super::transport::{self, Call, Endpoint, Guard, Reply, Transport, Via, decode, malformed};
use super::types::{
    ActionRequest, ActionResponse, ConnectionList, EndpointService, ServiceList, WireConnection,
};
use super::{ActResponse, Cloud, TargetApi};
use crate::config::{Config, Target};
use crate::decision::Action;
use crate::metrics::Metrics;
use crate::stop::Stop;
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Operation name of `GET …/vpc-endpoint-services`.
pub const OP_LIST_SERVICES: &str = "list_services";
/// Operation name of `GET …/connections?status=`.
pub const OP_LIST_CONNECTIONS: &str = "list_connections";
/// Operation name of `GET …/connections?id=`.
pub const OP_GET_CONNECTION: &str = "get_connection";
/// Operation name of `POST …/connections/action`.
pub const OP_ACTION: &str = "action";

/// Page size of list calls: the documented maximum.
pub const PAGE_LIMIT: u64 = 1000;
/// Most pages one list call reads (a million items) before it calls the answer malformed:
/// a server whose `total_count` keeps growing must not keep a cycle busy forever.
pub const MAX_PAGES: u32 = 1000;

/// The client for all targets.
pub struct CloudClient {
    targets: Vec<TargetClient>,
    transport: Arc<Transport>,
}

impl fmt::Debug for CloudClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudClient")
            .field("targets", &self.targets)
            .field("auth", &self.transport.creds.method())
            .finish()
    }
}

impl CloudClient {
    /// Builds the clients for every target of `cfg` (same order). Reads each `ca_file`.
    pub fn new(
        cfg: &Config,
        creds: Credentials,
        metrics: Metrics,
    ) -> Result<CloudClient, CloudError> {
        CloudClient::with_stop(cfg, creds, metrics, Stop::new())
    }

    /// The same, with requests that stop with `stop`: none starts once it begins, those
    /// on the wire are given up when it is final.
    pub fn with_stop(
        cfg: &Config,
        creds: Credentials,
        metrics: Metrics,
        stop: Stop,
    ) -> Result<CloudClient, CloudError> {
        transport::init_tls();
        let transport = Arc::new(Transport::new(&cfg.poll, creds, metrics, stop));
        let mut clients: HashMap<(Option<PathBuf>, bool), reqwest::Client> = HashMap::new();
        let mut targets = Vec::with_capacity(cfg.targets.len());
        for t in &cfg.targets {
            let key = (t.ca_file.clone(), transport::uses_tls(t));
            let http = match clients.get(&key) {
                Some(c) => c.clone(),
                None => {
                    let c = transport::build_http(t, cfg.poll.request_timeout)?;
                    clients.insert(key, c.clone());
                    c
                }
            };
            for url in [&t.vpcep_endpoint, &t.iam_endpoint] {
                let u = Url::parse(url).map_err(|e| CloudError::Url {
                    target: t.name.clone(),
                    url: url.clone(),
                    message: e.to_string(),
                })?;
                if u.host_str().is_none() {
                    return Err(CloudError::Url {
                        target: t.name.clone(),
                        url: url.clone(),
                        message: "no host".into(),
                    });
                }
            }
            targets.push(TargetClient {
                inner: Arc::new(TargetInner {
                    target: t.clone(),
                    vpcep_base: t.vpcep_endpoint.trim_end_matches('/').to_owned(),
                    iam_base: t.iam_endpoint.trim_end_matches('/').to_owned(),
                    http,
                    transport: transport.clone(),
                }),
            });
        }
        Ok(CloudClient { targets, transport })
    }

    /// One client per configured target, in configuration order.
    pub fn targets(&self) -> &[TargetClient] {
        &self.targets
    }

    /// Lowers the response size cap (tests of `TooLarge`).
    #[doc(hidden)]
    pub fn set_max_body_bytes(&self, n: usize) {
        self.transport.set_max_body_bytes(n);
    }
}

impl Cloud for CloudClient {
    type Target = TargetClient;

    fn targets(&self) -> &[TargetClient] {
        &self.targets
    }
}

/// The client of one target. Cheap to clone.
#[derive(Clone)]
pub struct TargetClient {
    inner: Arc<TargetInner>,
}

impl fmt::Debug for TargetClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetClient")
            .field("target", &self.inner.target.name)
            .field("vpcep_endpoint", &self.inner.vpcep_base)
            .finish()
    }
}

struct TargetInner {
    target: Target,
    vpcep_base: String,
    iam_base: String,
    http: reqwest::Client,
    transport: Arc<Transport>,
}

/// One page of a list call, in whichever list shape.
trait Page: DeserializeOwned {
    type Item;
    /// The documented key of the list, for messages.
    const WHAT: &'static str;
    /// The items and `total_count`, when both are present.
    fn parts(self) -> Option<(Vec<Self::Item>, u64)>;
    /// The item's id (`None` or empty: not usable).
    fn id(item: &Self::Item) -> Option<&str>;
    /// Whether two copies of one id say the same in every field a decision uses.
    fn same(a: &Self::Item, b: &Self::Item) -> bool;
}

/// `Page` for a list type whose items sit in `$field`; `$same` compares two copies.
macro_rules! page {
    ($list:ty, $item:ty, $field:ident, $same:path) => {
        impl Page for $list {
            type Item = $item;
            const WHAT: &'static str = stringify!($field);
            fn parts(self) -> Option<(Vec<$item>, u64)> {
                Some((self.$field?, self.total_count?))
            }
            fn id(item: &$item) -> Option<&str> {
                item.id.as_deref()
            }
            fn same(a: &$item, b: &$item) -> bool {
                $same(a, b)
            }
        }
    };
}

page!(
    ServiceList,
    EndpointService,
    endpoint_services,
    EndpointService::same_decision_fields
);
page!(
    ConnectionList,
    WireConnection,
    connections,
    WireConnection::same_decision_fields
);

impl TargetClient {
    /// The configured target.
    pub fn target(&self) -> &Target {
        &self.inner.target
    }

    fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            target: &self.inner.target,
            http: &self.inner.http,
            vpcep_base: &self.inner.vpcep_base,
            iam_base: &self.inner.iam_base,
        }
    }

    async fn execute(&self, call: &Call<'_>, guard: Guard<'_>) -> Result<Reply, ApiError> {
        self.inner
            .transport
            .execute(&self.endpoint(), call, guard)
            .await
    }

    /// Every item of a list call (`limit=1000`, paged by `offset` until `total_count`),
    /// complete or an error: never partial data. A page without its list or
    /// `total_count`, an item without an id, a body that is not the documented JSON, an
    /// empty or short page before `total_count`, or one id listed twice with different
    /// contents fails the whole call. An identical repeat (pages can shift while they are
    /// read) is kept once.
    async fn list_all<P: Page>(
        &self,
        op: &'static str,
        path: String,
        extra: &[(&str, &str)],
    ) -> Result<Vec<P::Item>, ApiError> {
        let mut out: Vec<P::Item> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut offset = 0u64;
        for _ in 0..MAX_PAGES {
            let mut query = vec![
                ("limit".to_owned(), PAGE_LIMIT.to_string()),
                ("offset".to_owned(), offset.to_string()),
            ];
            query.extend(
                extra
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            );
            let reply = self
                .execute(
                    &Call {
                        op,
                        method: Method::GET,
                        via: Via::Target,
                        path: path.clone(),
                        query,
                        body: b"",
                    },
                    &|| None,
                )
                .await?;
            let page: P = decode(op, &reply)?;
            let Some((items, total)) = page.parts() else {
                let what = format!("missing {} or total_count", P::WHAT);
                return Err(malformed(op, &reply, &what));
            };
            let n = items.len() as u64;
            if offset + n < total && n < PAGE_LIMIT {
                let what = format!(
                    "incomplete listing: the page at offset {offset} has {n} of {} items \
                     before total_count {total}",
                    PAGE_LIMIT.min(total - offset)
                );
                return Err(malformed(op, &reply, &what));
            }
            for item in items {
                let Some(id) = P::id(&item).filter(|i| !i.is_empty()) else {
                    let what = format!("an item of {} has no id", P::WHAT);
                    return Err(malformed(op, &reply, &what));
                };
                match index.get(id) {
                    Some(&i) if P::same(&out[i], &item) => {}
                    Some(_) => {
                        let what = format!(
                            "{id} is listed twice with different contents: which one is \
                             true is unknown"
                        );
                        return Err(malformed(op, &reply, &what));
                    }
                    None => {
                        index.insert(id.to_owned(), out.len());
                        out.push(item);
                    }
                }
            }
            offset += n;
            if offset >= total {
                return Ok(out);
            }
        }
        Err(ApiError::new(
            op,
            format!("{}{path}", self.inner.vpcep_base),
            ApiErrorKind::Malformed,
        )
        .with_message(format!(
            "more than {MAX_PAGES} pages: total_count keeps growing"
        )))
    }

    fn services_path(&self) -> String {
        format!(
            "/v1/{}/vpc-endpoint-services",
            signer::encode(&self.inner.target.project_id)
        )
    }

    fn connections_path(&self, service_id: &str) -> String {
        format!(
            "{}/{}/connections",
            self.services_path(),
            signer::encode(service_id)
        )
    }
}

impl TargetApi for TargetClient {
    fn target(&self) -> &Target {
        &self.inner.target
    }

    /// Every endpoint service of the project. Filtering by `approval_enabled`/`status`
    /// is the caller's business.
    async fn list_services(&self) -> Result<Vec<EndpointService>, ApiError> {
        self.list_all::<ServiceList>(OP_LIST_SERVICES, self.services_path(), &[])
            .await
    }

    /// Every connection of a service with `status` (empty: any status), oldest first,
    /// so that connections created while the pages are read are appended at the end.
    async fn list_connections(
        &self,
        service_id: &str,
        status: &str,
    ) -> Result<Vec<WireConnection>, ApiError> {
        let filter: &[(&str, &str)] = if status.is_empty() {
            &[("sort_dir", "asc")]
        } else {
            &[("sort_dir", "asc"), ("status", status)]
        };
        self.list_all::<ConnectionList>(
            OP_LIST_CONNECTIONS,
            self.connections_path(service_id),
            filter,
        )
        .await
    }

    /// Reads one connection back by endpoint id (`GET …/connections?id=`). `None` when the
    /// API does not know it (empty list, or 404 as the terraform provider treats it).
    async fn get_connection(
        &self,
        service_id: &str,
        endpoint_id: &str,
    ) -> Result<Option<WireConnection>, ApiError> {
        let call = Call {
            op: OP_GET_CONNECTION,
            method: Method::GET,
            via: Via::Target,
            path: self.connections_path(service_id),
            query: vec![("id".into(), endpoint_id.to_owned())],
            body: b"",
        };
        let reply = match self.execute(&call, &|| None).await {
            Ok(r) => r,
            Err(e) if e.http_status == Some(404) => return Ok(None),
            Err(e) => return Err(e),
        };
        let list: ConnectionList = decode(OP_GET_CONNECTION, &reply)?;
        let Some(items) = list.connections else {
            return Err(malformed(OP_GET_CONNECTION, &reply, "missing connections"));
        };
        Ok(items
            .into_iter()
            .find(|c| c.id.as_deref() == Some(endpoint_id)))
    }

    /// Accepts (`receive`) or rejects one endpoint. `Action::None` is refused without a
    /// request; `guard` is asked right before each attempt, and a `Some(why)` means the
    /// action is not sent (kind `NotSent`). A non-2xx answer is an error carrying the
    /// status and `error_code`; the caller reads the connection back. The answer's
    /// connection is given only when it names this endpoint.
    async fn act(
        &self,
        service_id: &str,
        endpoint_id: &str,
        action: Action,
        guard: Guard<'_>,
    ) -> Result<ActResponse, ApiError> {
        let path = format!("{}/action", self.connections_path(service_id));
        let refuse = |message: String| {
            ApiError::new(
                OP_ACTION,
                format!("{}{path}", self.inner.vpcep_base),
                ApiErrorKind::Client,
            )
            .with_message(message)
        };
        if action == Action::None {
            return Err(refuse("action none is never sent".into()));
        }
        let body = serde_json::to_vec(&ActionRequest {
            action: action.as_str().to_owned(),
            endpoints: vec![endpoint_id.to_owned()],
        })
        .map_err(|e| refuse(format!("cannot serialise the action body: {e}")))?;
        let reply = self
            .execute(
                &Call {
                    op: OP_ACTION,
                    method: Method::POST,
                    via: Via::Target,
                    path: path.clone(),
                    query: Vec::new(),
                    body: &body,
                },
                guard,
            )
            .await?;
        // An empty or unreadable body says nothing about the endpoint: the caller reads
        // it back.
        let connection = serde_json::from_slice::<ActionResponse>(&reply.body)
            .ok()
            .and_then(|r| r.connections)
            .and_then(|list| {
                list.into_iter()
                    .find(|c| c.id.as_deref() == Some(endpoint_id))
            });
        Ok(ActResponse {
            http_status: reply.status,
            connection,
            attempts: reply.attempts,
        })
    }

    /// Why this target cannot work right now (an authentication backoff), if it cannot.
    fn unready_reason(&self) -> Option<String> {
        self.inner
            .transport
            .creds
            .unready_reason(&self.inner.iam_base, self.inner.target.agency.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::auth::Outgoing;
    use crate::config::SecretSource;
    use chrono::Utc;
    use std::path::Path;

    fn cloud(endpoint: &str, creds: Credentials) -> CloudClient {
        let text = format!(
            "[[target]]\nregion = \"cn-north-4\"\nproject_id = \"0605767a3300d5762fb7c0186d8bfc2b\"\nvpcep_endpoint = \"{endpoint}\"\n"
        );
        let cfg = Config::parse(&text, Path::new("/x/config.toml")).expect("valid config");
        CloudClient::new(&cfg, creds, Metrics::new()).expect("cloud")
    }

    fn aksk(token: Option<&str>) -> Credentials {
        Credentials::aksk("AKTESTEXAMPLE", "SKTESTEXAMPLESECRET", token)
    }

    #[test]
    fn aksk_headers_are_signed_over_the_exact_request() {
        let c = cloud("https://vpcep.example.com:8443", aksk(Some("STSTOKEN")));
        let t = &c.targets()[0];
        let body = br#"{"action":"receive","endpoints":["e1"]}"#;
        let query = vec![
            ("status".to_owned(), "a b".to_owned()),
            ("limit".to_owned(), "1000".to_owned()),
        ];
        let canonical = signer::canonical_query(&query);
        assert_eq!(canonical, "limit=1000&status=a%20b");
        let path = t.connections_path("svc 1");
        assert!(path.ends_with("/vpc-endpoint-services/svc%201/connections"));
        let sign = c.transport.creds.static_credential().expect("static keys");
        let h = c
            .transport
            .creds
            .apply(
                &sign,
                &Outgoing {
                    method: "POST",
                    host: "vpcep.example.com:8443",
                    path: &path,
                    query: &query,
                    body,
                    project_id: Some(&t.target().project_id),
                },
            )
            .expect("headers");
        let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(get("host").as_deref(), Some("vpcep.example.com:8443"));
        assert_eq!(
            get("user-agent").as_deref(),
            Some(crate::cloud::auth::USER_AGENT)
        );
        assert_eq!(
            get("x-project-id").as_deref(),
            Some("0605767a3300d5762fb7c0186d8bfc2b")
        );
        assert!(h.get("authorization").is_some_and(|v| v.is_sensitive()));
        assert!(h.get("x-security-token").is_some_and(|v| v.is_sensitive()));
        let auth = get("authorization").expect("authorization");
        assert!(
            auth.contains("SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date;x-security-token"),
            "{auth}"
        );
        let access = signer::verify(
            "POST",
            &path,
            &canonical,
            |n| get(n),
            body,
            Utc::now(),
            chrono::Duration::minutes(15),
            |ak| (ak == "AKTESTEXAMPLE").then(|| b"SKTESTEXAMPLESECRET".to_vec()),
        );
        assert_eq!(access.as_deref(), Ok("AKTESTEXAMPLE"));
        // Any other body fails verification: the hash covers the bytes sent.
        let tampered = signer::verify(
            "POST",
            &path,
            &canonical,
            |n| get(n),
            b"{}",
            Utc::now(),
            chrono::Duration::minutes(15),
            |_| Some(b"SKTESTEXAMPLESECRET".to_vec()),
        );
        assert!(tampered.is_err());
    }

    #[test]
    fn token_header_is_sensitive() {
        let c = cloud(
            "http://127.0.0.1:9",
            Credentials::token(
                SecretSource::Env("VPCEP_TEST_CLIENT_UNSET".into()),
                "MIItoken",
            ),
        );
        let tok = c.transport.creds.static_credential().expect("the token");
        let h = c
            .transport
            .creds
            .apply(
                &tok,
                &Outgoing {
                    method: "GET",
                    host: "127.0.0.1:9",
                    path: "/v1/p/vpc-endpoint-services",
                    query: &[],
                    body: b"",
                    project_id: Some("p"),
                },
            )
            .expect("headers");
        assert!(h.get("x-auth-token").is_some_and(|v| v.is_sensitive()));
        assert!(h.get("authorization").is_none());
        assert!(!format!("{h:?}").contains("MIItoken"));
        assert!(!format!("{c:?}").contains("MIItoken"));
    }

    #[test]
    fn missing_ca_file_is_named() {
        let text = "[[target]]\nregion = \"cn-north-4\"\nproject_id = \"p\"\nca_file = \"/nonexistent/ca.pem\"\n";
        let cfg = Config::parse(text, Path::new("/x/config.toml")).expect("valid config");
        let e = CloudClient::new(&cfg, aksk(None), Metrics::new())
            .expect_err("missing")
            .to_string();
        assert!(
            e.contains("/nonexistent/ca.pem") && e.contains("cn-north-4"),
            "{e}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate").expect("write");
        let text = format!(
            "[[target]]\nregion = \"cn-north-4\"\nproject_id = \"p\"\nca_file = \"{}\"\n",
            p.display()
        );
        let cfg = Config::parse(&text, Path::new("/x/config.toml")).expect("valid config");
        let e = CloudClient::new(&cfg, aksk(None), Metrics::new())
            .expect_err("invalid")
            .to_string();
        assert!(e.contains("ca.pem"), "{e}");
    }

    #[test]
    fn one_http_client_per_ca_file_and_targets_in_order() {
        let text = "[[target]]\nname = \"a\"\nregion = \"cn-north-4\"\nproject_id = \"p\"\n\
                    [[target]]\nname = \"b\"\nregion = \"cn-east-3\"\nproject_id = \"q\"\n";
        let cfg = Config::parse(text, Path::new("/x/config.toml")).expect("valid config");
        let c = CloudClient::new(&cfg, aksk(None), Metrics::new()).expect("cloud");
        let names: Vec<&str> = c
            .targets()
            .iter()
            .map(|t| t.target().name.as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(Arc::ptr_eq(
            &c.targets()[0].inner.transport,
            &c.targets()[1].inner.transport
        ));
    }
}
