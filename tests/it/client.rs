//! The real VPCEP client against the real simulator on loopback: paging, filters, every
//! retryable failure recovering or giving up, malformed bodies, 401 handling per auth
//! method, actions and the read-back by id.

use crate::cases::{SVC, pending, sim_with};
use crate::support::{PROJECT, WAIT, http_client, target_config, within};
use std::time::{Duration, Instant};
use vpcep_approver::cloud::auth::Credentials;
use vpcep_approver::cloud::client::{CloudClient, TargetClient};
use vpcep_approver::cloud::error::{ApiError, ApiErrorKind};
use vpcep_approver::cloud::{ActResponse, TargetApi};
use vpcep_approver::config::{Config, SecretSource};
use vpcep_approver::decision::Action;
use vpcep_approver::metrics::Metrics;
use vpcep_approver::sim::{
    DEFAULT_AK, DEFAULT_DOMAIN, DEFAULT_PASSWORD, DEFAULT_SK, DEFAULT_USER, ErrorShape, Operation,
    ScriptedFault, Simulator,
};

/// A config for one target on the simulator: `target_config` with `poll`, two retries
/// unless `poll` sets `max_retries`.
fn config(sim: &Simulator, poll: &str) -> Config {
    let mut poll = poll.to_owned();
    if !poll.lines().any(|l| l.starts_with("max_retries")) {
        poll.push_str("max_retries = 2\n");
    }
    target_config(&sim.base_url(), &poll)
}

/// `t` sends `action` on connection `endpoint` of [`SVC`], unguarded.
async fn act(t: &TargetClient, endpoint: &str, action: Action) -> Result<ActResponse, ApiError> {
    within(t.act(SVC, endpoint, action, &|| None)).await
}

fn aksk() -> Credentials {
    Credentials::aksk(DEFAULT_AK, DEFAULT_SK, None)
}

fn password(pw: &str) -> Credentials {
    Credentials::password(DEFAULT_USER, DEFAULT_DOMAIN, pw)
}

fn cloud(sim: &Simulator, poll: &str, creds: Credentials) -> (CloudClient, TargetClient, Metrics) {
    let metrics = Metrics::new();
    let cloud = CloudClient::new(&config(sim, poll), creds, metrics.clone()).expect("cloud builds");
    let t = cloud.targets()[0].clone();
    (cloud, t, metrics)
}

fn count(sim: &Simulator, op: Operation) -> u64 {
    sim.state().request_count(op)
}

#[tokio::test]
async fn client_pages_past_1000_connections_without_duplicates() {
    let sim = sim_with(2500, |_| {}).await;
    let (_c, t, _) = cloud(&sim, "", aksk());
    let got = pending(&t).await.expect("list");
    assert_eq!(got.len(), 2500);
    let mut ids: Vec<_> = got.iter().filter_map(|c| c.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2500);
    assert_eq!(
        count(&sim, Operation::ListConnections),
        3,
        "three pages of 1000"
    );
    assert!(got.iter().any(|c| c.marker_id == Some(1000 + 2499)));
}

#[tokio::test]
async fn client_status_filter_and_services() {
    let sim = sim_with(30, |_| {}).await;
    for i in 0..7 {
        assert!(sim.set_status(&format!("e{i:05}"), "accepted"));
    }
    let (_c, t, _) = cloud(&sim, "", aksk());
    assert_eq!(t.target().name, "sim");
    let pending = pending(&t).await.expect("pending");
    let accepted = within(t.list_connections(SVC, "accepted"))
        .await
        .expect("accepted");
    assert_eq!((pending.len(), accepted.len()), (23, 7));
    assert!(
        accepted
            .iter()
            .all(|c| c.status.as_deref() == Some("accepted"))
    );
    let services = within(t.list_services()).await.expect("services");
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].id.as_deref(), Some(SVC));
    assert_eq!(services[0].approval_enabled, Some(true));
    assert!(t.unready_reason().is_none());
}

#[tokio::test]
async fn client_acts_and_reads_back_by_id() {
    let sim = sim_with(3, |_| {}).await;
    let (_c, t, _) = cloud(&sim, "", aksk());
    let r = act(&t, "e00001", Action::Receive).await.expect("receive");
    assert_eq!(r.http_status, 200);
    assert_eq!(r.attempts, 1);
    let conn = r.connection.expect("connection in the answer");
    assert_eq!(conn.id.as_deref(), Some("e00001"));
    assert_eq!(conn.status.as_deref(), Some("accepted"));
    let r = act(&t, "e00002", Action::Reject).await.expect("reject");
    assert_eq!(
        r.connection.and_then(|c| c.status).as_deref(),
        Some("rejected")
    );

    let actions = sim.actions();
    assert_eq!(actions.len(), 2);
    assert_eq!(actions[0].endpoint_id.as_deref(), Some("e00001"));
    assert_eq!(actions[0].action.as_deref(), Some("receive"));
    assert_eq!(actions[1].action.as_deref(), Some("reject"));

    let back = within(t.get_connection(SVC, "e00001"))
        .await
        .expect("read back");
    assert_eq!(back.and_then(|c| c.status).as_deref(), Some("accepted"));
    assert_eq!(
        within(t.get_connection(SVC, "nope"))
            .await
            .expect("unknown"),
        None
    );

    // Acting again on a decided connection is a 4xx with the API's error code, not retried.
    let e = act(&t, "e00001", Action::Receive)
        .await
        .expect_err("already accepted");
    assert_eq!(e.kind, ApiErrorKind::Client);
    assert!(
        e.http_status.is_some_and(|s| (400..500).contains(&s)),
        "{e}"
    );
    assert!(e.error_code.is_some(), "{e}");
    assert!(e.request_id.is_some(), "{e}");
    assert_eq!(e.attempts, 1);
    assert_eq!(sim.actions().len(), 3);

    let e = act(&t, "e00000", Action::None)
        .await
        .expect_err("none is never sent");
    assert_eq!(e.attempts, 0);
    assert_eq!(sim.actions().len(), 3);
}

#[tokio::test]
async fn client_retries_429_honouring_retry_after() {
    let sim = sim_with(5, |_| {}).await;
    sim.push_fault(
        ScriptedFault::new(Operation::ListConnections, 429)
            .with_retry_after(Duration::from_secs(1))
            .times(2),
    );
    let (_c, t, metrics) = cloud(&sim, "", aksk());
    let start = Instant::now();
    let got = pending(&t).await.expect("recovers");
    assert_eq!(got.len(), 5);
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "waited {:?}",
        start.elapsed()
    );
    assert_eq!(count(&sim, Operation::ListConnections), 3);
    let text = metrics.encode();
    assert!(
        text.lines()
            .any(|l| l.contains("operation=\"list_connections\"")
                && l.contains("code=\"429\"")
                && l.ends_with(" 2")),
        "{text}"
    );
}

#[tokio::test]
async fn client_retries_500_503_and_endpoint_0022() {
    let sim = sim_with(5, |_| {}).await;
    sim.push_fault(ScriptedFault::new(Operation::ListServices, 500));
    sim.push_fault(ScriptedFault::new(Operation::ListServices, 503).with_shape(ErrorShape::Nested));
    let (_c, t, _) = cloud(&sim, "", aksk());
    assert_eq!(within(t.list_services()).await.expect("recovers").len(), 1);
    assert_eq!(count(&sim, Operation::ListServices), 3);

    sim.push_fault(ScriptedFault::new(Operation::Action, 400).with_error(
        "EndPoint.0022",
        "The number of requests exceeded the limit. Please try later.",
    ));
    let r = act(&t, "e00000", Action::Receive).await.expect("recovers");
    assert_eq!(r.attempts, 2);
    assert_eq!(sim.actions().len(), 2);
}

#[tokio::test]
async fn client_gives_up_after_max_retries() {
    let sim = sim_with(5, |_| {}).await;
    sim.push_fault(ScriptedFault::new(Operation::ListConnections, 500).times(10));
    let (_c, t, _) = cloud(&sim, "", aksk());
    let e = pending(&t).await.expect_err("gives up");
    assert_eq!(e.kind, ApiErrorKind::Server);
    assert_eq!(e.attempts, 3, "max_retries = 2");
    assert_eq!(e.http_status, Some(500));
    assert_eq!(e.error_code.as_deref(), Some("EndPoint.0001"));
    assert!(e.request_id.is_some());
    assert_eq!(e.operation, "list_connections");
    let s = e.to_string();
    assert!(
        s.contains("list_connections")
            && s.contains("http 500")
            && s.contains("EndPoint.0001")
            && s.contains(&sim.base_url()),
        "{s}"
    );
    assert_eq!(count(&sim, Operation::ListConnections), 3);
}

#[tokio::test]
async fn client_garbage_and_truncated_bodies_are_malformed() {
    let sim = sim_with(5, |_| {}).await;
    let (_c, t, _) = cloud(&sim, "", aksk());
    for body in [
        "garbage",
        r#"{"connections":[{"id":"e00000","status":"pendingAc"#,
        r#"{"connections":[]}"#,
        r#"{"total_count":3}"#,
        r#"{"connections":"x","total_count":1}"#,
        r#"{"connections":[{"id":"a","marker_id":"notanumber"}],"total_count":1}"#,
        "null",
        "",
    ] {
        sim.push_fault(ScriptedFault::new(Operation::ListConnections, 200).with_body(body));
        let e = pending(&t).await.expect_err(body);
        assert_eq!(e.kind, ApiErrorKind::Malformed, "{body}: {e}");
        assert_eq!(e.attempts, 1, "malformed answers are not retried");
    }
    // A short first page is an incomplete listing, not the end of it.
    sim.push_fault(
        ScriptedFault::new(Operation::ListConnections, 200)
            .with_body(r#"{"connections":[{"id":"x1"}],"total_count":5}"#),
    );
    let e = pending(&t).await.expect_err("short page");
    assert_eq!(e.kind, ApiErrorKind::Malformed);
    assert!(e.to_string().contains("incomplete listing"), "{e}");
    // A bad second page fails the whole call: never partial data.
    let full: Vec<String> = (0..1000).map(|i| format!(r#"{{"id":"x{i}"}}"#)).collect();
    sim.push_fault(
        ScriptedFault::new(Operation::ListConnections, 200).with_body(format!(
            r#"{{"connections":[{}],"total_count":1005}}"#,
            full.join(",")
        )),
    );
    sim.push_fault(ScriptedFault::new(Operation::ListConnections, 200).with_body("{\"conn"));
    let e = pending(&t).await.expect_err("page 2");
    assert_eq!(e.kind, ApiErrorKind::Malformed);
    assert!(e.url.contains("offset=1000"), "{e}");

    sim.push_fault(ScriptedFault::new(Operation::ListServices, 200).with_body("[]"));
    let e = within(t.list_services()).await.expect_err("services");
    assert_eq!(e.kind, ApiErrorKind::Malformed);
}

#[tokio::test]
async fn client_too_large_body() {
    let sim = sim_with(200, |_| {}).await;
    let (c, t, _) = cloud(&sim, "", aksk());
    c.set_max_body_bytes(4096);
    let e = within(t.list_connections(SVC, ""))
        .await
        .expect_err("too large");
    assert_eq!(e.kind, ApiErrorKind::TooLarge);
    assert_eq!(e.attempts, 1);
}

#[tokio::test]
async fn client_timeouts_are_retried_then_reported() {
    let sim = sim_with(5, |_| {}).await;
    let (_c, t, metrics) = cloud(&sim, "request_timeout = \"300ms\"\n", aksk());
    sim.push_fault(
        ScriptedFault::new(Operation::ListServices, 200)
            .with_body("{}")
            .with_delay(Duration::from_secs(2)),
    );
    assert_eq!(
        within(t.list_services())
            .await
            .expect("second attempt")
            .len(),
        1
    );
    sim.push_fault(
        ScriptedFault::new(Operation::ListServices, 200)
            .with_body("{}")
            .with_delay(Duration::from_secs(2))
            .times(3),
    );
    let e = within(t.list_services()).await.expect_err("times out");
    assert_eq!(e.kind, ApiErrorKind::Timeout);
    assert_eq!(e.attempts, 3);
    assert!(metrics.encode().contains("code=\"timeout\""));
}

#[tokio::test]
async fn client_connection_refused_is_retried_then_reported() {
    let sim = sim_with(1, |_| {}).await;
    let cfg = config(&sim, "");
    sim.shutdown().await;
    let c = CloudClient::new(&cfg, aksk(), Metrics::new()).expect("cloud");
    let e = within(c.targets()[0].list_services())
        .await
        .expect_err("refused");
    assert_eq!(e.kind, ApiErrorKind::Connect, "{e}");
    assert_eq!(e.attempts, 3);
    assert!(e.error_message.is_some());
}

#[tokio::test]
async fn client_aksk_401_backs_off_without_a_burst() {
    let sim = sim_with(5, |_| {}).await;
    let bad = Credentials::aksk(DEFAULT_AK, "WRONGSECRETKEY", None);
    let (_c, t, _) = cloud(&sim, "max_retries = 4\n", bad);
    let e = within(t.list_services()).await.expect_err("bad signature");
    assert_eq!(e.kind, ApiErrorKind::Unauthorized);
    assert_eq!(e.http_status, Some(401));
    assert_eq!(e.attempts, 1, "never retried");
    assert!(
        e.error_code.as_deref().is_some_and(|c| c.contains("0301")),
        "{e}"
    );
    assert!(!e.to_string().contains("WRONGSECRETKEY"));
    for _ in 0..5 {
        let e = pending(&t).await.expect_err("backoff");
        assert_eq!(e.kind, ApiErrorKind::AuthBackoff);
        assert_eq!(e.attempts, 0);
    }
    assert_eq!(
        count(&sim, Operation::ListServices) + count(&sim, Operation::ListConnections),
        1
    );
    let reason = t.unready_reason().expect("unready");
    assert!(
        reason.contains("backoff") && reason.contains("aksk"),
        "{reason}"
    );
    assert!(!reason.contains("WRONGSECRETKEY"));
}

#[tokio::test]
async fn client_security_token_is_signed_and_accepted() {
    let sim = sim_with(2, |_| {}).await;
    let creds = Credentials::aksk(DEFAULT_AK, DEFAULT_SK, Some("TEMPORARYSECURITYTOKEN"));
    let (_c, t, _) = cloud(&sim, "", creds);
    assert_eq!(
        within(t.list_connections(SVC, ""))
            .await
            .expect("signed")
            .len(),
        2
    );
}

#[tokio::test]
async fn client_password_token_is_cached_and_reauthenticated_once() {
    let sim = sim_with(5, |_| {}).await;
    let (_c, t, _) = cloud(&sim, "", password(DEFAULT_PASSWORD));
    within(t.list_services()).await.expect("first");
    pending(&t).await.expect("second");
    assert_eq!(sim.state().tokens_issued, 1, "token cached");

    // The token dies early (e.g. password changed): one re-authentication, one retry.
    sim.expire_tokens();
    within(t.list_services()).await.expect("re-authenticated");
    assert_eq!(sim.state().tokens_issued, 2);

    // A 401 that survives the re-authentication is reported, not retried further.
    sim.push_fault(ScriptedFault::new(Operation::ListServices, 401).times(5));
    let e = within(t.list_services()).await.expect_err("still 401");
    assert_eq!(e.kind, ApiErrorKind::Unauthorized);
    assert_eq!(e.attempts, 2);
    assert_eq!(sim.state().tokens_issued, 3);
    assert!(
        t.unready_reason().is_none(),
        "password 401s from VPCEP do not lock the target"
    );
}

#[tokio::test]
async fn client_password_token_is_refreshed_before_it_expires() {
    let sim = sim_with(5, |c| c.token_lifetime = Duration::from_secs(3)).await;
    let (_c, t, _) = cloud(&sim, "", password(DEFAULT_PASSWORD));
    within(t.list_services()).await.expect("first");
    assert_eq!(sim.state().tokens_issued, 1);
    // Past lifetime − margin (3 s − 0.6 s), before expiry: refreshed proactively.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    within(t.list_services()).await.expect("refreshed");
    assert_eq!(sim.state().tokens_issued, 2);
    assert_eq!(count(&sim, Operation::ListServices), 2, "no 401 on the way");
}

#[tokio::test]
async fn client_wrong_password_backs_off() {
    let sim = sim_with(5, |_| {}).await;
    let (_c, t, _) = cloud(&sim, "", password("not-the-password"));
    let e = within(t.list_services()).await.expect_err("bad password");
    assert_eq!(e.kind, ApiErrorKind::Unauthorized, "{e}");
    assert_eq!(e.operation, "iam_token");
    assert!(e.url.contains("/v3/auth/tokens?nocatalog=true"), "{e}");
    assert!(!e.to_string().contains("not-the-password"));
    let e = within(t.list_services()).await.expect_err("backoff");
    assert_eq!(e.kind, ApiErrorKind::AuthBackoff);
    assert_eq!(count(&sim, Operation::Token), 1, "no login burst");
    assert_eq!(count(&sim, Operation::ListServices), 0);
    assert!(t.unready_reason().is_some());
}

/// A real token from the simulator's IAM route.
async fn sim_token(sim: &Simulator) -> String {
    let body = serde_json::json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": DEFAULT_USER, "password": DEFAULT_PASSWORD, "domain": {"name": DEFAULT_DOMAIN}}}},
        "scope": {"project": {"id": PROJECT}}}});
    let r = within(
        http_client()
            .post(format!("{}/v3/auth/tokens?nocatalog=true", sim.base_url()))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send(),
    )
    .await
    .expect("token request");
    assert_eq!(r.status().as_u16(), 201);
    r.headers()
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .expect("subject token")
        .to_owned()
}

#[tokio::test]
async fn client_token_method_rereads_its_source_once_on_401() {
    let sim = sim_with(5, |_| {}).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token");
    std::fs::write(&file, sim_token(&sim).await).expect("write token");
    let source = SecretSource::File {
        template: "token".into(),
        base: dir.path().into(),
    };
    let creds = Credentials::token(source.clone(), "MIIstale");
    let (_c, t, _) = cloud(&sim, "", creds);
    let got = pending(&t).await.expect("re-read");
    assert_eq!(got.len(), 5);
    assert_eq!(count(&sim, Operation::ListConnections), 2);

    // Expired and the file still holds the same token: reported after one attempt.
    sim.expire_tokens();
    let e = within(t.list_services()).await.expect_err("expired");
    assert_eq!(e.kind, ApiErrorKind::Unauthorized);
    assert_eq!(e.attempts, 1);

    // The operator drops a fresh token in: the next call picks it up.
    std::fs::write(&file, sim_token(&sim).await).expect("write token");
    assert_eq!(
        within(t.list_services()).await.expect("fresh token").len(),
        1
    );
    assert!(t.unready_reason().is_none());
}

#[tokio::test]
async fn client_rate_limit_spans_all_requests() {
    let sim = sim_with(5, |_| {}).await;
    let (_c, t, _) = cloud(
        &sim,
        "max_requests_per_second = 4\nmax_in_flight = 2\n",
        aksk(),
    );
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..9 {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            t.get_connection(SVC, &format!("e{:05}", i % 5)).await
        }));
    }
    for task in tasks {
        within(task).await.expect("join").expect("get");
    }
    // 9 requests at 4/s: the last cannot go before 2 s.
    let took = start.elapsed();
    assert!(took >= Duration::from_secs(2) && took < WAIT, "{took:?}");
}
