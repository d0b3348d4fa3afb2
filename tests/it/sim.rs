//! The simulator over real HTTP: paging, filters, every documented error code, signature
//! and token checks, faults, admin routes and seed defaults.

use crate::support::{
    self, PROJECT, Signed, example_seed, http_client, seed_many, send, spawn_sim, within,
};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;
use vpcep_approver::sim::{
    DEFAULT_AK, DEFAULT_DOMAIN, DEFAULT_PASSWORD, DEFAULT_SK, DEFAULT_USER, ErrorShape, Faults,
    Operation, ScriptedFault, Seed, SeedConnection, SimConfig, Simulator,
};

const SVC: &str = "4189d3c2-8882-4871-a3c2-d380272eed88";
pub(crate) const KEYS: (&str, &str) = (DEFAULT_AK, DEFAULT_SK);

/// What came back: status, headers, body text and its JSON if any.
#[derive(Debug)]
pub(crate) struct Got {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Got {
    pub async fn from(resp: reqwest::Response) -> Got {
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        let text = within(resp.text()).await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Got {
            status,
            headers,
            text,
            json,
        }
    }

    /// A header's value, when it came and is text (`x-request-id`, `retry-after`,
    /// `x-subject-token`, `content-type`).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error code in any of the three documented shapes.
    pub fn code(&self) -> &str {
        self.json["error_code"]
            .as_str()
            .or(self.json["error"]["code"].as_str())
            .unwrap_or("")
    }

    fn ids(&self) -> Vec<String> {
        self.json["connections"]
            .as_array()
            .expect("connections array")
            .iter()
            .map(|c| c["id"].as_str().expect("id").to_owned())
            .collect()
    }
}

/// The gateway's own 401 (`APIGW.0301`), in its shape: a `request_id` in the body too.
pub(crate) fn assert_gateway_401(got: &Got, what: &str) {
    assert_eq!(
        (got.status, got.code()),
        (401, "APIGW.0301"),
        "{what}: {}",
        got.text
    );
    assert!(
        got.json["request_id"].is_string(),
        "{what}: gateway shape: {}",
        got.text
    );
}

/// A signing client for one simulator.
pub(crate) struct Api {
    pub client: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(sim: &Simulator) -> Api {
        Api {
            client: http_client(),
            base: sim.base_url(),
        }
    }

    pub async fn signed(&self, s: Signed, method: &str, body: &[u8]) -> Got {
        Got::from(send(&self.client, method, &s.url, &s.headers, body.to_vec()).await).await
    }

    /// `method path?query` with `body`, signed with `keys` and these `extra` headers.
    pub async fn signed_as(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: &[u8],
        keys: (&str, &str),
        extra: &[(&str, &str)],
    ) -> Got {
        let s = support::sign(method, &self.base, path, query, body, keys, extra);
        self.signed(s, method, body).await
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Got {
        self.signed_as("GET", path, query, b"", KEYS, &[]).await
    }

    async fn connections(&self, query: &[(&str, &str)]) -> Got {
        self.get(&conn_path(SVC), query).await
    }

    /// A page of up to a thousand pending connections of SVC, from `offset`.
    async fn pending_page(&self, offset: usize) -> Got {
        let offset = offset.to_string();
        self.connections(&[
            ("limit", "1000"),
            ("offset", &offset),
            ("status", "pendingAcceptance"),
        ])
        .await
    }

    async fn action(&self, service: &str, body: &str) -> Got {
        let path = format!("{}/action", conn_path(service));
        self.signed_as("POST", &path, &[], body.as_bytes(), KEYS, &[])
            .await
    }

    async fn act(&self, action: &str, endpoint: &str) -> Got {
        self.action(
            SVC,
            &json!({"action": action, "endpoints": [endpoint]}).to_string(),
        )
        .await
    }

    pub async fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Got {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let url = format!("{}{path}", self.base);
        Got::from(
            send(
                &self.client,
                method,
                &url,
                &headers,
                body.as_bytes().to_vec(),
            )
            .await,
        )
        .await
    }

    /// `GET path` with a password token in `X-Auth-Token` instead of a signature.
    async fn get_with_token(&self, path: &str, token: &str) -> Got {
        let headers = [
            ("X-Auth-Token", token),
            ("Content-Type", "application/json"),
        ];
        self.raw("GET", path, &headers, "").await
    }

    pub async fn admin(&self, method: &str, path: &str, body: Value) -> Got {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        self.raw(method, path, &[("Content-Type", "application/json")], &body)
            .await
    }

    pub async fn token(&self, body: Value) -> Got {
        self.raw(
            "POST",
            "/v3/auth/tokens?nocatalog=true",
            &[("Content-Type", "application/json;charset=utf8")],
            &body.to_string(),
        )
        .await
    }

    /// A token for the default user with the right password, scoped to `project`.
    pub async fn password_token(&self, project: Value) -> Got {
        self.token(password_body(DEFAULT_PASSWORD, project)).await
    }
}

pub(crate) fn conn_path(service: &str) -> String {
    format!("/v1/{PROJECT}/vpc-endpoint-services/{service}/connections")
}

pub(crate) fn services_path() -> String {
    format!("/v1/{PROJECT}/vpc-endpoint-services")
}

pub(crate) fn password_body(password: &str, scope: Value) -> Value {
    json!({"auth": {
        "identity": {"methods": ["password"],
                     "password": {"user": {"name": DEFAULT_USER, "password": password,
                                           "domain": {"name": DEFAULT_DOMAIN}}}},
        "scope": {"project": scope}}})
}

/// A simulator on `cfg` and a signing client for it.
pub(crate) async fn sim_and_api(cfg: SimConfig) -> (Simulator, Api) {
    let sim = spawn_sim(cfg).await;
    let api = Api::new(&sim);
    (sim, api)
}

async fn sim_with(seed: Seed) -> (Simulator, Api) {
    sim_and_api(SimConfig {
        seed,
        ..SimConfig::default()
    })
    .await
}

#[tokio::test]
async fn seed_defaults_are_filled_in() {
    let seed = Seed::from_json(&format!(
        r#"{{"services":[{{"id":"{SVC}","connections":[{{}}]}},{{}}]}}"#
    ))
    .expect("seed");
    let (sim, api) = sim_with(seed).await;
    let got = api.get(&services_path(), &[("sort_dir", "asc")]).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.json["total_count"], 2);
    let svc = &got.json["endpoint_services"][0];
    assert_eq!(svc["id"], SVC);
    assert_eq!(svc["status"], "available");
    assert_eq!(svc["approval_enabled"], true);
    assert_eq!(svc["project_id"], PROJECT);
    let other = got.json["endpoint_services"][1]["id"].as_str().expect("id");
    assert_eq!(other.len(), 36, "fresh UUID: {other}");

    let got = api.connections(&[]).await;
    let c = &got.json["connections"][0];
    assert_eq!(c["status"], "pendingAcceptance");
    assert_eq!(c["description"], "");
    assert_eq!(c["id"].as_str().expect("id").len(), 36);
    assert!(c["marker_id"].is_i64());
    assert_eq!(c["domain_id"].as_str().expect("domain").len(), 32);
    let created = c["created_at"].as_str().expect("created_at");
    assert!(created.ends_with('Z') && created.len() == 20, "{created}");
    let age = chrono::Utc::now()
        - chrono::DateTime::parse_from_rfc3339(created)
            .expect("rfc3339")
            .with_timezone(&chrono::Utc);
    assert!(age < chrono::Duration::minutes(1));

    let (example, _) = sim_with(example_seed()).await;
    let state = example.state();
    assert!(state.services.iter().any(|s| !s.approval_enabled));
    assert_eq!(
        state
            .connection("705290f3-0d00-41f2-aedc-71f09844e879")
            .map(|c| c.marker_id),
        Some(422_321_321_312_321_321)
    );
    sim.shutdown().await;
    example.shutdown().await;
}

#[tokio::test]
async fn paging_with_total_count_over_a_thousand_connections() {
    let (sim, api) = sim_with(seed_many(SVC, 2345)).await;
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let got = api.pending_page(offset).await;
        assert_eq!(got.status, 200, "{}", got.text);
        assert_eq!(got.json["total_count"], 2345);
        let ids = got.ids();
        if ids.is_empty() {
            break;
        }
        offset += ids.len();
        seen.extend(ids);
    }
    assert_eq!(seen.len(), 2345);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 2345);
    assert_eq!(seen[0], "e02344", "newest first by default");
    assert_eq!(seen[2344], "e00000");

    let got = api.connections(&[]).await;
    assert_eq!(got.ids().len(), 10, "default limit");
    let got = api
        .connections(&[("sort_dir", "asc"), ("limit", "2"), ("offset", "3")])
        .await;
    assert_eq!(got.ids(), ["e00003", "e00004"]);
    let got = api
        .connections(&[
            ("sort_key", "create_at"),
            ("sort_dir", "desc"),
            ("limit", "1"),
        ])
        .await;
    assert_eq!(got.ids(), ["e02344"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn filters_by_id_status_marker_and_service_name() {
    let (sim, api) = sim_with(seed_many(SVC, 30)).await;
    assert!(sim.set_status("e00003", "accepted"));
    assert!(sim.set_status("e00004", "accepted"));

    let got = api.connections(&[("status", "accepted")]).await;
    assert_eq!(got.json["total_count"], 2);
    assert_eq!(got.ids(), ["e00004", "e00003"]);
    let got = api.connections(&[("id", "e00007")]).await;
    assert_eq!(got.ids(), ["e00007"]);
    assert_eq!(got.json["connections"][0]["marker_id"], 1007);
    let got = api.connections(&[("marker_id", "1012")]).await;
    assert_eq!(got.ids(), ["e00012"]);
    let got = api.connections(&[("id", "nope")]).await;
    assert_eq!(
        (got.json["total_count"].as_u64(), got.ids().len()),
        (Some(0), 0)
    );

    let got = api
        .get(&services_path(), &[("endpoint_service_name", "BULK")])
        .await;
    assert_eq!(got.json["total_count"], 1);
    assert_eq!(got.json["endpoint_services"][0]["connection_count"], 2);
    let got = api
        .get(&services_path(), &[("endpoint_service_name", "other")])
        .await;
    assert_eq!(got.json["total_count"], 0);
    let got = api
        .get(&services_path(), &[("id", SVC), ("status", "available")])
        .await;
    assert_eq!(got.json["total_count"], 1);
    let got = api.get(&format!("{}/{SVC}", services_path()), &[]).await;
    assert_eq!((got.status, got.json["id"].as_str()), (200, Some(SVC)));
    sim.shutdown().await;
}

#[tokio::test]
async fn query_errors_have_documented_codes() {
    let (sim, api) = sim_with(seed_many(SVC, 3)).await;
    for (query, code) in [
        (("limit", "0"), "EndPoint.0006"),
        (("limit", "1001"), "EndPoint.0006"),
        (("limit", "ten"), "EndPoint.0006"),
        (("offset", "-1"), "EndPoint.0010"),
        (("status", "pending"), "EndPoint.0019"),
        (("sort_key", "name"), "EndPoint.0017"),
        (("sort_dir", "sideways"), "EndPoint.0018"),
        (("marker_id", "x"), "EndPoint.0021"),
    ] {
        let got = api.connections(&[query]).await;
        assert_eq!(
            (got.status, got.code()),
            (400, code),
            "{query:?}: {}",
            got.text
        );
        assert!(got.json["error_msg"].is_string());
    }
    let got = api.get(&services_path(), &[("limit", "5000")]).await;
    assert_eq!((got.status, got.code()), (400, "EndPoint.0006"));
    let got = api.get(&conn_path("no-such-service"), &[]).await;
    assert_eq!((got.status, got.code()), (404, "EndPoint.0005"));
    let got = api.get(&format!("{}/nope", services_path()), &[]).await;
    assert_eq!((got.status, got.code()), (404, "EndPoint.0005"));
    sim.shutdown().await;
}

#[tokio::test]
async fn actions_follow_the_state_machine_and_are_recorded() {
    let mut seed = seed_many(SVC, 4);
    seed.services
        .push(seed_many("other-svc", 0).services.remove(0));
    seed.services[1].connections.push(SeedConnection {
        id: Some("foreign".into()),
        ..SeedConnection::default()
    });
    let (sim, api) = sim_with(seed).await;

    let got = api.act("receive", "e00000").await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.json["connections"][0]["status"], "accepted");
    assert_eq!(got.json["connections"][0]["id"], "e00000");
    let got = api.act("receive", "e00000").await;
    assert_eq!((got.status, got.code()), (400, "EndPoint.2014"));
    let got = api.act("reject", "e00000").await;
    assert_eq!(got.json["connections"][0]["status"], "rejected");
    let got = api.act("reject", "e00001").await;
    assert_eq!(got.json["connections"][0]["status"], "rejected");

    for (body, status, code) in [
        ("{not json", 400, "EndPoint.0002"),
        (r#"{"endpoints":["e00002"]}"#, 400, "EndPoint.0002"),
        (
            r#"{"action":"accept","endpoints":["e00002"]}"#,
            400,
            "EndPoint.0007",
        ),
        (
            r#"{"action":"receive","endpoints":["e00002","e00003"]}"#,
            400,
            "EndPoint.2031",
        ),
        (
            r#"{"action":"receive","endpoints":[]}"#,
            400,
            "EndPoint.2031",
        ),
        (
            r#"{"action":"receive","endpoints":["foreign"]}"#,
            400,
            "EndPoint.2013",
        ),
        (
            r#"{"action":"receive","endpoints":["ghost"]}"#,
            404,
            "EndPoint.2006",
        ),
    ] {
        let got = api.action(SVC, body).await;
        assert_eq!(
            (got.status, got.code()),
            (status, code),
            "{body}: {}",
            got.text
        );
    }
    let got = api
        .action(
            "no-such-service",
            r#"{"action":"receive","endpoints":["e00002"]}"#,
        )
        .await;
    assert_eq!((got.status, got.code()), (404, "EndPoint.0005"));

    let state = sim.state();
    assert_eq!(
        state.connection("e00002").map(|c| c.status.as_str()),
        Some("pendingAcceptance")
    );
    assert_eq!(state.actions.len(), 12);
    let first = &state.actions[0];
    assert_eq!(
        (
            first.service_id.as_str(),
            first.endpoint_id.as_deref(),
            first.action.as_deref()
        ),
        (SVC, Some("e00000"), Some("receive"))
    );
    assert_eq!(
        (first.http_status, first.status_after.as_deref()),
        (200, Some("accepted"))
    );
    assert_eq!(
        state.actions[1].error_code.as_deref(),
        Some("EndPoint.2014")
    );
    assert_eq!(state.request_count(Operation::Action), 12);
    sim.shutdown().await;
}

#[tokio::test]
async fn answers_the_python_sdk_request_shape() {
    let (sim, api) = sim_with(seed_many(SVC, 2)).await;
    // Spaced JSON, `;charset=utf-8` and a signed User-Agent, as huaweicloudsdkcore sends.
    let body = r#"{"action": "receive", "endpoints": ["e00001"]}"#;
    let path = format!("{}/action", conn_path(SVC));
    let extra = [
        ("Content-Type", "application/json;charset=utf-8"),
        ("User-Agent", "huaweicloud-usdk-python/3.0; test-vector"),
    ];
    let s = support::sign("POST", &api.base, &path, &[], body.as_bytes(), KEYS, &extra);
    let auth = &s.headers.last().expect("authorization").1;
    assert!(auth.contains("SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date"));
    let got = api.signed(s, "POST", body.as_bytes()).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.json["connections"][0]["status"], "accepted");

    // A POST without a JSON content type is a parameter error.
    let text_plain = [("Content-Type", "text/plain")];
    let got = api
        .signed_as("POST", &path, &[], body.as_bytes(), KEYS, &text_plain)
        .await;
    assert_eq!((got.status, got.code()), (400, "EndPoint.0002"));
    sim.shutdown().await;
}

#[tokio::test]
async fn signature_is_rejected_when_any_byte_changes() {
    let (sim, api) = sim_with(seed_many(SVC, 2)).await;
    let path = conn_path(SVC);
    let good = support::sign("GET", &api.base, &path, &[("limit", "5")], b"", KEYS, &[]);
    assert_eq!(api.signed(good.clone(), "GET", b"").await.status, 200);

    let mut tampered_query = good.clone();
    tampered_query.url = tampered_query.url.replace("limit=5", "limit=6");
    let mut tampered_header = good.clone();
    tampered_header.headers[3].1.push('0'); // X-Project-Id
    let mut tampered_sig = good.clone();
    let auth = &mut tampered_sig.headers.last_mut().expect("authorization").1;
    let last = auth.pop().expect("hex digit");
    auth.push(if last == '0' { '1' } else { '0' });
    for (what, s) in [
        ("query", tampered_query),
        ("header", tampered_header),
        ("signature", tampered_sig),
    ] {
        let got = api.signed(s, "GET", b"").await;
        assert_gateway_401(&got, what);
        assert_eq!(got.header("x-request-id"), got.json["request_id"].as_str());
    }

    let body = br#"{"action":"receive","endpoints":["e00000"]}"#;
    let apath = format!("{path}/action");
    let s = support::sign("POST", &api.base, &apath, &[], body, KEYS, &[]);
    let got = api
        .signed(s, "POST", br#"{"action":"receive","endpoints":["e00001"]}"#)
        .await;
    assert_eq!(
        (got.status, got.code()),
        (401, "APIGW.0301"),
        "body changed"
    );
    assert_eq!(
        sim.state()
            .connection("e00001")
            .map(|c| c.status.clone())
            .as_deref(),
        Some("pendingAcceptance")
    );

    let sdk_date_minutes_ago = |minutes| {
        vpcep_approver::cloud::signer::format_sdk_date(
            chrono::Utc::now() - chrono::Duration::minutes(minutes),
        )
    };
    let (old, near) = (sdk_date_minutes_ago(16), sdk_date_minutes_ago(14));
    for (what, keys) in [
        ("unknown AK", ("UNKNOWNAK", DEFAULT_SK)),
        ("wrong SK", (DEFAULT_AK, "wrong-secret")),
    ] {
        let got = api.signed_as("GET", &path, &[], b"", keys, &[]).await;
        assert_eq!((got.status, got.code()), (401, "APIGW.0301"), "{what}");
    }
    // The permanent keys, with one more header signed: the status and code it gets.
    for (what, header, want) in [
        (
            "16 minutes of skew",
            ("X-Sdk-Date", old.as_str()),
            (401, "APIGW.0303"),
        ),
        (
            "14 minutes of skew is fine",
            ("X-Sdk-Date", &near),
            (200, ""),
        ),
        (
            "X-Security-Token accepted",
            ("X-Security-Token", "temporary-token"),
            (200, ""),
        ),
        (
            "another project",
            ("X-Project-Id", "another"),
            (403, "EndPoint.0004"),
        ),
    ] {
        let got = api.signed_as("GET", &path, &[], b"", KEYS, &[header]).await;
        assert_eq!((got.status, got.code()), want, "{what}: {}", got.text);
    }

    let got = api.raw("GET", &path, &[], "").await;
    assert_eq!(
        (got.status, got.code()),
        (401, "APIGW.0301"),
        "no credentials"
    );
    assert_eq!(sim.state().request_count(Operation::ListConnections), 11);
    sim.shutdown().await;
}

#[tokio::test]
async fn tokens_are_issued_used_and_expire() {
    let (sim, api) = sim_with(seed_many(SVC, 3)).await;
    let got = api.password_token(json!({"id": PROJECT})).await;
    assert_eq!(got.status, 201, "{}", got.text);
    let token = got.header("x-subject-token").expect("X-Subject-Token");
    let expires = got.json["token"]["expires_at"]
        .as_str()
        .expect("expires_at");
    assert!(
        expires.ends_with('Z') && expires.len() == 27,
        "micros and Z: {expires}"
    );
    let exp = chrono::DateTime::parse_from_rfc3339(expires).expect("rfc3339");
    let left = exp.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(left > chrono::Duration::hours(23) && left <= chrono::Duration::hours(24));
    assert_eq!(got.json["token"]["project"]["id"], PROJECT);
    assert_eq!(got.json["token"]["methods"], json!(["password"]));
    assert!(got.json["token"]["issued_at"].is_string());
    assert!(got.json["token"].get("catalog").is_none(), "nocatalog");

    let path = conn_path(SVC);
    let got = api.get_with_token(&path, token).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.json["total_count"], 3);

    let got = api.get_with_token(&path, "MIIforged").await;
    assert_eq!((got.status, got.code()), (401, "APIGW.0301"));
    let other = "/v1/another-project/vpc-endpoint-services";
    let got = api.get_with_token(other, token).await;
    assert_eq!((got.status, got.code()), (403, "EndPoint.0004"));

    let got = api
        .token(password_body("wrong", json!({"id": PROJECT})))
        .await;
    assert_eq!(got.status, 401);
    assert!(got.header("x-subject-token").is_none());
    let got = api.token(json!({"auth": {}})).await;
    assert_eq!(got.status, 400);

    // Scope by project name (a region name): the id is stable for the name.
    let a = api.password_token(json!({"name": "cn-north-4"})).await;
    let b = api.password_token(json!({"name": "cn-north-4"})).await;
    assert_eq!(a.status, 201);
    assert_eq!(
        a.json["token"]["project"]["id"],
        b.json["token"]["project"]["id"]
    );
    assert_eq!(a.json["token"]["project"]["name"], "cn-north-4");

    assert_eq!(sim.expire_tokens(), 3);
    let got = api.get_with_token(&path, token).await;
    assert_eq!((got.status, got.code()), (401, "APIGW.0301"), "expired");
    assert_eq!(sim.state().tokens_issued, 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn short_token_lifetime_expires_on_its_own() {
    let (sim, api) = sim_and_api(SimConfig {
        seed: seed_many(SVC, 1),
        token_lifetime: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    let got = api.password_token(json!({"id": PROJECT})).await;
    let token = got.header("x-subject-token").expect("token");
    let path = conn_path(SVC);
    assert_eq!(api.get_with_token(&path, token).await.status, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(api.get_with_token(&path, token).await.status, 401);
    sim.shutdown().await;
}

#[tokio::test]
async fn configured_project_rejects_others() {
    let (sim, api) = sim_and_api(SimConfig {
        seed: seed_many(SVC, 1),
        project_id: Some(PROJECT.into()),
        ..SimConfig::default()
    })
    .await;
    assert_eq!(api.get(&services_path(), &[]).await.status, 200);
    let path = "/v1/another-project/vpc-endpoint-services";
    let another = [("X-Project-Id", "another-project")];
    let got = api.signed_as("GET", path, &[], b"", KEYS, &another).await;
    assert_eq!((got.status, got.code()), (400, "EndPoint.0014"));
    let got = api.password_token(json!({"id": "another-project"})).await;
    assert_eq!(got.status, 401);
    sim.shutdown().await;
}

#[tokio::test]
async fn random_faults_at_rate_one() {
    let (sim, api) = sim_and_api(SimConfig {
        seed: seed_many(SVC, 1),
        fault_rate: 1.0,
        retry_after: Duration::from_secs(3),
        ..SimConfig::default()
    })
    .await;
    let mut seen = HashSet::new();
    for _ in 0..60 {
        let got = api.connections(&[]).await;
        seen.insert(got.status);
        match got.status {
            429 => {
                assert_eq!(got.code(), "APIGW.0308");
                assert_eq!(got.header("retry-after"), Some("3"));
                assert!(got.json["request_id"].is_string());
            }
            500 | 503 => assert_eq!(got.code(), "EndPoint.0001"),
            other => panic!("unexpected status {other}: {}", got.text),
        }
    }
    assert_eq!(seen.len(), 3, "all three kinds: {seen:?}");
    // The token route is exempt from random faults.
    let got = api.password_token(json!({"id": PROJECT})).await;
    assert_eq!(got.status, 201);
    sim.set_faults(Faults::default());
    assert_eq!(api.connections(&[]).await.status, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn scripted_faults_answer_exactly_once_each() {
    let (sim, api) = sim_with(seed_many(SVC, 3)).await;
    sim.set_faults(Faults::script(vec![
        ScriptedFault::new(Operation::ListConnections, 200).with_body("garbage"),
        ScriptedFault::new(Operation::Action, 500),
        ScriptedFault::new(Operation::Action, 504).applied(),
    ]));
    let got = api.connections(&[]).await;
    assert_eq!((got.status, got.text.as_str()), (200, "garbage"));
    assert_eq!(api.connections(&[]).await.json["total_count"], 3);

    // The same action twice: the scripted 500, then the scripted 504.
    for (answer, after, what) in [
        ((500, "EndPoint.0001"), "pendingAcceptance", "not applied"),
        ((504, "EndPoint.0013"), "accepted", "applied, answer lost"),
    ] {
        let got = api.act("receive", "e00000").await;
        assert_eq!((got.status, got.code()), answer, "{what}");
        let status = sim.connection("e00000").map(|c| c.status);
        assert_eq!(status.as_deref(), Some(after), "{what}");
    }
    let actions = sim.actions();
    assert_eq!(actions[1].status_after.as_deref(), Some("accepted"));
    assert_eq!(actions[1].http_status, 504);

    sim.push_fault(
        ScriptedFault::new(Operation::Any, 429)
            .times(3)
            .with_retry_after(Duration::from_millis(1500)),
    );
    for _ in 0..3 {
        let got = api.connections(&[]).await;
        assert_eq!((got.status, got.header("retry-after")), (429, Some("2")));
    }
    assert_eq!(api.connections(&[]).await.status, 200);
    assert!(sim.faults().script.is_empty());

    // Both VPCEP error shapes.
    sim.push_fault(
        ScriptedFault::new(Operation::Action, 400)
            .with_error(
                "EndPoint.0022",
                "The number of requests exceeded the limit. Please try later.",
            )
            .with_shape(ErrorShape::Nested),
    );
    let got = api.act("receive", "e00001").await;
    assert_eq!(got.json["error"]["code"], "EndPoint.0022");
    assert!(got.json["error"]["message"].is_string());
    sim.set_faults(Faults {
        error_shape: ErrorShape::Nested,
        ..Faults::default()
    });
    let got = api.connections(&[("limit", "0")]).await;
    assert_eq!(
        got.json,
        json!({"error": {"code": "EndPoint.0006", "message": "Invalid limit: \"0\"."}})
    );

    // Unauthenticated requests do not use up the script.
    sim.push_fault(ScriptedFault::new(Operation::ListConnections, 503));
    assert_eq!(api.raw("GET", &conn_path(SVC), &[], "").await.status, 401);
    assert_eq!(api.connections(&[]).await.status, 503);
    sim.shutdown().await;
}

#[tokio::test]
async fn latency_and_delay_slow_answers_down() {
    let (sim, api) = sim_with(seed_many(SVC, 1)).await;
    sim.set_faults(Faults {
        latency: Duration::from_millis(150),
        ..Faults::default()
    });
    let t = std::time::Instant::now();
    assert_eq!(api.connections(&[]).await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(150));
    sim.set_faults(Faults::script(vec![
        ScriptedFault::new(Operation::ListConnections, 200)
            .with_delay(Duration::from_millis(200))
            .with_body("{}"),
    ]));
    let t = std::time::Instant::now();
    assert_eq!(api.connections(&[]).await.text, "{}");
    assert!(t.elapsed() >= Duration::from_millis(200));
    sim.shutdown().await;
}

#[tokio::test]
async fn admin_routes() {
    let (sim, api) = sim_with(seed_many(SVC, 1)).await;
    // Posts `body` to an admin route and checks the answer's status.
    let post = async |path: &str, body: Value, status: u16, what: &str| {
        let got = api.admin("POST", path, body).await;
        assert_eq!(got.status, status, "{what}: {}", got.text);
        got
    };
    let add = "/_sim/connections";
    let two = json!({"service_id": SVC, "connections": [
        {"id": "added-1", "domain_id": "dom", "description": "CHG-1"}, {}]});
    let got = post(add, two, 201, "two connections").await;
    assert_eq!(got.json["connections"][0]["status"], "pendingAcceptance");
    assert_eq!(got.json["connections"].as_array().map(Vec::len), Some(2));
    let one = json!({"service_id": SVC, "id": "added-2", "status": "accepted"});
    post(add, one, 201, "one connection").await;
    let nope = json!({"service_id": "nope", "connections": []});
    post(add, nope, 404, "no such service").await;
    let again = json!({"service_id": SVC, "id": "added-1"});
    let got = post(add, again, 400, "duplicate id").await;
    assert!(
        got.json["error"]
            .as_str()
            .is_some_and(|e| e.contains("duplicate"))
    );

    let reject = |id: &str| json!({"endpoint_id": id, "status": "rejected"});
    let got = post("/_sim/status", reject("added-1"), 200, "set status").await;
    assert_eq!(got.json["connection"]["status"], "rejected");
    post("/_sim/status", reject("ghost"), 404, "no such connection").await;

    let faults = json!({"latency": "1ms", "script": [{"op": "list_services", "status": 500}]});
    post("/_sim/faults", faults, 200, "set faults").await;
    let got = api.admin("GET", "/_sim/faults", Value::Null).await;
    assert_eq!(got.json["script"][0]["op"], "list_services");
    assert_eq!(api.get(&services_path(), &[]).await.status, 500);
    post("/_sim/faults", json!({"bogus": 1}), 400, "unknown field").await;

    api.password_token(json!({"id": PROJECT})).await;
    let got = post("/_sim/tokens/expire", Value::Null, 200, "expire tokens").await;
    assert_eq!(got.json["expired"], 1);

    api.act("receive", "e00000").await;
    let got = api.admin("GET", "/_sim/state", Value::Null).await;
    assert_eq!(got.status, 200);
    assert!(
        got.header("x-request-id").is_some(),
        "X-Request-Id on admin answers too"
    );
    let state: vpcep_approver::sim::SimSnapshot =
        serde_json::from_str(&got.text).expect("snapshot");
    assert_eq!(state.services[0].connections.len(), 4);
    assert_eq!(
        state.connection("added-2").map(|c| c.status.as_str()),
        Some("accepted")
    );
    assert_eq!(state.actions.len(), 1);
    assert_eq!(state.actions[0].status_after.as_deref(), Some("accepted"));
    assert_eq!(state.tokens_issued, 1);

    assert_eq!(
        api.admin("GET", "/_sim/nothing", Value::Null).await.status,
        404
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_get_the_gateway_404_and_every_answer_a_request_id() {
    let (sim, api) = sim_with(Seed::default()).await;
    let got = api.raw("GET", "/v2/whatever", &[], "").await;
    assert_eq!((got.status, got.code()), (404, "APIGW.0101"));
    assert!(got.header("x-request-id").is_some_and(|r| r.len() == 32));
    let got = api.raw("DELETE", &services_path(), &[], "").await;
    assert_eq!(got.status, 404);
    let big = "x".repeat(2 << 20);
    let got = api
        .raw(
            "POST",
            &format!("{}/action", conn_path(SVC)),
            &[("Content-Type", "application/json")],
            &big,
        )
        .await;
    assert_eq!(got.status, 413);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_concurrent_requests_over_ten_thousand_connections() {
    let (sim, api) = sim_with(seed_many(SVC, 10_000)).await;
    let api = std::sync::Arc::new(api);
    let mut tasks = Vec::new();
    for i in 0..300 {
        let api = std::sync::Arc::clone(&api);
        tasks.push(tokio::spawn(async move {
            if i % 3 == 0 {
                let id = format!("e{:05}", i * 10);
                api.act(if i % 2 == 0 { "receive" } else { "reject" }, &id)
                    .await
                    .status
            } else {
                let got = api.pending_page(i * 7).await;
                assert!(
                    got.json["total_count"]
                        .as_u64()
                        .is_some_and(|n| n <= 10_000)
                );
                got.status
            }
        }));
    }
    for t in tasks {
        assert_eq!(within(t).await.expect("task"), 200);
    }
    let state = sim.state();
    assert_eq!(state.actions.len(), 100);
    assert_eq!(state.request_count(Operation::ListConnections), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn add_connections_through_the_handle() {
    let (sim, api) = sim_with(seed_many(SVC, 0)).await;
    let added = sim
        .add_connections(
            SVC,
            vec![SeedConnection {
                description: Some("late".into()),
                ..SeedConnection::default()
            }],
        )
        .expect("add");
    let id = added[0].id.clone().expect("id");
    let got = api.connections(&[("id", &id)]).await;
    assert_eq!(got.json["connections"][0]["description"], "late");
    assert!(sim.add_connections("nope", vec![]).is_err());
    assert!(!sim.set_status("ghost", "accepted"));
    sim.shutdown().await;
}
