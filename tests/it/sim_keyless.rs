//! The simulator's credential routes over real HTTP (README "Simulator"): the ECS metadata
//! service in its three modes, CCE pod identity with token rotation and every body
//! spelling, IAM agencies, and temporary keys refused without their signed security
//! token, after their expiry, or on another account's project.

use crate::cli::start_simulate;
use crate::sim::{Api, Got, KEYS, assert_gateway_401, conn_path, sim_and_api};
use crate::support::{self, PROJECT, Signed, seed_many, send, within};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::time::Duration;
use vpcep_approver::sim::{
    DEFAULT_AGENCY_DOMAIN_ID, DEFAULT_AGENCY_DOMAIN_NAME, DEFAULT_AGENCY_NAME,
    DEFAULT_AGENCY_PROJECT_ID, DEFAULT_AK, DEFAULT_POD_IDENTITY_PATH, DEFAULT_POD_TOKEN,
    MetadataMode, NO_AGENCY_TEXT, Operation, PodBody, ScriptedFault, SimAgency, SimConfig,
    Simulator,
};

const SVC: &str = "4189d3c2-8882-4871-a3c2-d380272eed88";
const SECURITYTOKENS: &str = "/v3.0/OS-CREDENTIAL/securitytokens";

/// Temporary keys as a credential route gave them.
#[derive(Debug, Clone)]
struct Temp {
    access: String,
    secret: String,
    token: String,
    expires_at: String,
}

impl Temp {
    /// From `v[object]`, its fields spelt `[access, secret, token, expiry]`.
    fn from_fields(v: &Value, object: &str, names: [&str; 4]) -> Temp {
        let c = &v[object];
        let s = |k: &str| {
            c[k].as_str()
                .unwrap_or_else(|| panic!("{k} in {v}"))
                .to_owned()
        };
        let [access, secret, token, expires_at] = names.map(s);
        Temp {
            access,
            secret,
            token,
            expires_at,
        }
    }

    /// From `{"credential":{…}}`.
    fn from_credential(v: &Value) -> Temp {
        let names = ["access", "secret", "securitytoken", "expires_at"];
        Temp::from_fields(v, "credential", names)
    }

    fn keys(&self) -> (&str, &str) {
        (&self.access, &self.secret)
    }

    fn expires(&self) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&self.expires_at)
            .expect("rfc3339")
            .with_timezone(&Utc)
    }
}

/// `2026-05-10T18:42:00.000000Z`: microseconds and `Z`, nothing else.
fn assert_micros_z(t: &str) {
    // `d` stands for any digit; every other byte must be itself.
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd.ddddddZ";
    let fits = t.len() == SHAPE.len()
        && t.bytes().zip(SHAPE).all(|(b, &want)| match want {
            b'd' => b.is_ascii_digit(),
            _ => b == want,
        });
    assert!(fits, "not YYYY-MM-DDTHH:MM:SS.ffffffZ: {t}");
}

/// `expires_at` is `lifetime` from now, to within a few seconds.
fn assert_lifetime(t: &Temp, lifetime: Duration) {
    assert_micros_z(&t.expires_at);
    let left = (t.expires() - Utc::now()).to_std().unwrap_or_default();
    assert!(
        left <= lifetime && left + Duration::from_secs(5) >= lifetime,
        "{} is not {lifetime:?} from now",
        t.expires_at
    );
}

async fn sim(cfg: SimConfig) -> (Simulator, Api) {
    sim_and_api(SimConfig {
        seed: seed_many(SVC, 2),
        ..cfg
    })
    .await
}

async fn metadata_token(api: &Api, ttl: &str) -> Got {
    api.raw(
        "PUT",
        "/meta-data/latest/api/token",
        &[("X-Metadata-Token-Ttl-Seconds", ttl)],
        "",
    )
    .await
}

async fn securitykey(api: &Api, session: Option<&str>) -> Got {
    let headers: Vec<(&str, &str)> = session
        .map(|t| ("X-Metadata-Token", t))
        .into_iter()
        .collect();
    api.raw("GET", "/openstack/latest/securitykey", &headers, "")
        .await
}

/// Temporary keys from the metadata service, the way the SDK gets them.
async fn metadata_keys(api: &Api) -> Temp {
    let session = metadata_token(api, "21600").await;
    assert_eq!(session.status, 200, "{}", session.text);
    let got = securitykey(api, Some(&session.text)).await;
    assert_eq!(got.status, 200, "{}", got.text);
    Temp::from_credential(&got.json)
}

async fn pod(api: &Api, path: &str, token: Option<&str>, body: &str) -> Got {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(t) = token {
        headers.push(("Authorization", t));
    }
    api.raw("POST", path, &headers, body).await
}

/// `POST {}` to the default pod identity path with `token`.
async fn pod_default(api: &Api, token: &str) -> Got {
    pod(api, DEFAULT_POD_IDENTITY_PATH, Some(token), "{}").await
}

/// `POST /_sim/keyless`: changes the credential routes at run time.
async fn set_keyless(api: &Api, body: Value) -> Got {
    api.admin("POST", "/_sim/keyless", body).await
}

fn assume_body(agency: &str, domain: (&str, &str), duration: Value) -> Value {
    let mut ar = json!({"agency_name": agency});
    ar[domain.0] = json!(domain.1);
    if !duration.is_null() {
        ar["duration_seconds"] = duration;
    }
    json!({"auth": {"identity": {"methods": ["assume_role"], "assume_role": ar}}})
}

/// The default agency, by its domain name, for `seconds`.
fn default_agency(seconds: u64) -> Value {
    assume_body(
        DEFAULT_AGENCY_NAME,
        ("domain_name", DEFAULT_AGENCY_DOMAIN_NAME),
        json!(seconds),
    )
}

/// `POST /v3.0/OS-CREDENTIAL/securitytokens` signed with `keys` (and their token).
async fn assume_signed(api: &Api, keys: (&str, &str), token: Option<&str>, body: &Value) -> Got {
    let body = body.to_string();
    let extra: Vec<(&str, &str)> = token.map(|t| ("X-Security-Token", t)).into_iter().collect();
    api.signed_as("POST", SECURITYTOKENS, &[], body.as_bytes(), keys, &extra)
        .await
}

/// The temporary keys an assume_role signed with the permanent keys gives.
async fn assumed_keys(api: &Api, body: &Value) -> Temp {
    let got = assume_signed(api, KEYS, None, body).await;
    assert_eq!(got.status, 201, "{}", got.text);
    Temp::from_credential(&got.json)
}

/// `extra` and `X-Project-Id: project`, the headers of a request in `project`.
fn in_project<'a>(project: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut extra = extra.to_vec();
    extra.push(("X-Project-Id", project));
    extra
}

/// `GET /v1/{project}/vpc-endpoint-services/SVC/connections` signed with `keys`, with
/// `X-Project-Id: project` and these extra headers signed.
fn sign_list(api: &Api, project: &str, keys: (&str, &str), extra: &[(&str, &str)]) -> Signed {
    let path = format!("/v1/{project}/vpc-endpoint-services/{SVC}/connections");
    let extra = in_project(project, extra);
    support::sign("GET", &api.base, &path, &[], b"", keys, &extra)
}

async fn list_with(api: &Api, t: &Temp, project: &str) -> Got {
    api.signed(
        sign_list(api, project, t.keys(), &[("X-Security-Token", &t.token)]),
        "GET",
        b"",
    )
    .await
}

#[tokio::test]
async fn metadata_session_then_securitykey_gives_keys_that_sign_requests() {
    let (sim, api) = sim(SimConfig::default()).await;
    let session = metadata_token(&api, "21600").await;
    assert_eq!(session.status, 200, "{}", session.text);
    assert!(
        session
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        session.headers
    );
    assert!(
        session.text.len() >= 32,
        "a session token: {}",
        session.text
    );

    let got = securitykey(&api, Some(&session.text)).await;
    assert_eq!(got.status, 200, "{}", got.text);
    let keys = got.json["credential"]
        .as_object()
        .expect("credential object");
    let mut fields: Vec<&str> = keys.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["access", "expires_at", "secret", "securitytoken"]);
    let t = Temp::from_credential(&got.json);
    assert_lifetime(&t, Duration::from_secs(24 * 3600));
    assert_ne!(t.access, DEFAULT_AK);

    let listed = list_with(&api, &t, PROJECT).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.json["total_count"], 2);

    // The same session gives fresh keys again; both sets work.
    let again = Temp::from_credential(&securitykey(&api, Some(&session.text)).await.json);
    assert_ne!(again.access, t.access);
    assert_eq!(list_with(&api, &again, PROJECT).await.status, 200);

    let state = sim.state();
    assert_eq!(state.request_count(Operation::MetadataToken), 1);
    assert_eq!(state.request_count(Operation::MetadataSecurityKey), 2);
    assert_eq!(state.temporary_keys_issued.metadata, 2);
    assert_eq!(state.security_token_rejections.total(), 0);
    let rec = state.signed.last().expect("signed record");
    assert_eq!(rec.access_key, again.access);
    assert!(rec.temporary && rec.security_token);
    assert_eq!(rec.security_token_valid, Some(true));
    sim.shutdown().await;
}

#[tokio::test]
async fn metadata_session_tokens_are_checked() {
    let (sim, api) = sim(SimConfig::default()).await;
    for bad in ["", "0", "21601", "-1", "1.5", "six hours"] {
        let got = metadata_token(&api, bad).await;
        assert_eq!(got.status, 400, "TTL {bad:?}: {}", got.text);
    }
    let got = api.raw("PUT", "/meta-data/latest/api/token", &[], "").await;
    assert_eq!(got.status, 400, "no TTL: {}", got.text);

    for session in [None, Some("forged-session-token")] {
        let got = securitykey(&api, session).await;
        assert_eq!(got.status, 401, "{session:?}: {}", got.text);
        assert!(
            !got.text.contains(NO_AGENCY_TEXT),
            "a client renews its session on this 401: {}",
            got.text
        );
    }

    // A session lives its TTL, then is refused.
    let short = metadata_token(&api, "1").await;
    assert_eq!(short.status, 200);
    assert_eq!(securitykey(&api, Some(&short.text)).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(securitykey(&api, Some(&short.text)).await.status, 401);

    // The admin route ends every session at once.
    let long = metadata_token(&api, "21600").await;
    assert_eq!(securitykey(&api, Some(&long.text)).await.status, 200);
    let got = api
        .admin("POST", "/_sim/keyless/expire-sessions", Value::Null)
        .await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert!(got.json["expired"].as_u64() >= Some(1), "{}", got.text);
    assert_eq!(securitykey(&api, Some(&long.text)).await.status, 401);
    let renewed = metadata_token(&api, "21600").await;
    assert_eq!(securitykey(&api, Some(&renewed.text)).await.status, 200);
    assert_eq!(sim.state().temporary_keys_issued.metadata, 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn metadata_token_route_unsupported_answers_each_status_and_the_get_needs_no_token() {
    let (sim, api) = sim(SimConfig::default()).await;
    for status in [404u16, 405, 503] {
        let got = set_keyless(
            &api,
            json!({"metadata": {"mode": "token_unsupported", "token_unsupported_status": status}}),
        )
        .await;
        assert_eq!(got.status, 200, "{}", got.text);
        assert_eq!(got.json["metadata"]["mode"], "token_unsupported");
        assert_eq!(metadata_token(&api, "21600").await.status, status);
        let got = securitykey(&api, None).await;
        assert_eq!(got.status, 200, "{}", got.text);
        let t = Temp::from_credential(&got.json);
        assert_eq!(list_with(&api, &t, PROJECT).await.status, 200);
    }
    let got = set_keyless(&api, json!({"metadata": {"token_unsupported_status": 500}})).await;
    assert_eq!(got.status, 400, "only 404, 405, 503: {}", got.text);
    assert_eq!(sim.keyless().metadata.token_unsupported_status, 503, "kept");
    sim.shutdown().await;
}

#[tokio::test]
async fn metadata_without_an_agency_says_so_or_answers_404() {
    let mut cfg = SimConfig::default();
    cfg.metadata.mode = MetadataMode::NoAgency;
    let (sim, api) = sim(cfg).await;
    let session = metadata_token(&api, "21600").await;
    assert_eq!(session.status, 200, "sessions still work");
    let got = securitykey(&api, Some(&session.text)).await;
    assert_eq!(got.status, 401);
    assert!(got.text.contains(NO_AGENCY_TEXT), "{}", got.text);
    assert!(
        got.text
            .contains("Please configure Cloud Service Agency first")
    );

    let got = set_keyless(&api, json!({"metadata": {"no_agency_status": 404}})).await;
    assert_eq!(got.status, 200, "{}", got.text);
    let got = securitykey(&api, Some(&session.text)).await;
    assert_eq!(got.status, 404, "{}", got.text);
    assert_eq!(sim.state().temporary_keys_issued.metadata, 0);

    let got = set_keyless(&api, json!({"metadata": {"mode": "normal"}})).await;
    assert_eq!(got.status, 200);
    assert_eq!(securitykey(&api, Some(&session.text)).await.status, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn pod_identity_checks_its_token_and_follows_a_rotation() {
    let (sim, api) = sim(SimConfig::default()).await;
    let got = pod_default(&api, DEFAULT_POD_TOKEN).await;
    assert_eq!(got.status, 200, "{}", got.text);
    let t = Temp::from_credential(&got.json);
    assert_lifetime(&t, Duration::from_secs(24 * 3600));
    assert_eq!(list_with(&api, &t, PROJECT).await.status, 200);

    for token in [None, Some("wrong-token"), Some("")] {
        let got = pod(&api, DEFAULT_POD_IDENTITY_PATH, token, "{}").await;
        assert_eq!(got.status, 401, "{token:?}: {}", got.text);
    }
    for body in ["", "[]", "garbage"] {
        let got = pod(
            &api,
            DEFAULT_POD_IDENTITY_PATH,
            Some(DEFAULT_POD_TOKEN),
            body,
        )
        .await;
        assert_eq!(got.status, 400, "{body:?}: {}", got.text);
    }
    let got = api
        .raw(
            "GET",
            DEFAULT_POD_IDENTITY_PATH,
            &[("Authorization", DEFAULT_POD_TOKEN)],
            "",
        )
        .await;
    assert_eq!(got.status, 404, "POST only");

    // The token file is rotated: the old token is refused from now on.
    let got = set_keyless(
        &api,
        json!({"pod_identity": {"token": "rotated-pod-token"}}),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert!(
        !got.text.contains("rotated-pod-token"),
        "the admin view hides the token: {}",
        got.text
    );
    let got = pod_default(&api, DEFAULT_POD_TOKEN).await;
    assert_eq!(got.status, 401);
    let got = pod_default(&api, "rotated-pod-token").await;
    assert_eq!(got.status, 200, "{}", got.text);
    // Keys issued before the rotation stay valid until they expire.
    assert_eq!(list_with(&api, &t, PROJECT).await.status, 200);

    sim.set_pod_token("from-the-handle").expect("valid token");
    assert_eq!(pod_default(&api, "from-the-handle").await.status, 200);
    let state = sim.state();
    assert_eq!(state.request_count(Operation::PodIdentity), 10);
    assert_eq!(state.temporary_keys_issued.pod_identity, 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn pod_identity_answers_in_every_spelling_on_its_configured_path() {
    let mut cfg = SimConfig::default();
    cfg.pod_identity.path = "/v1/credentials".into();
    cfg.pod_identity.token = "pod-token".into();
    cfg.pod_identity.body = PodBody::CredentialsSnakeCase;
    let (sim, api) = sim(cfg).await;
    assert_eq!(
        pod_default(&api, "pod-token").await.status,
        404,
        "not on the default path"
    );
    // Keys in a `credentials` object (not `credential`) with its fields spelt `names`,
    // that sign requests.
    let keys_spelt = async |names: [&str; 4]| {
        let got = pod(&api, "/v1/credentials", Some("pod-token"), "{}").await;
        assert_eq!(got.status, 200, "{}", got.text);
        assert!(got.json.get("credential").is_none(), "{}", got.text);
        let t = Temp::from_fields(&got.json, "credentials", names);
        assert_micros_z(&t.expires_at);
        assert_eq!(list_with(&api, &t, PROJECT).await.status, 200);
    };
    keys_spelt([
        "access_key_id",
        "secret_access_key",
        "security_token",
        "expiration",
    ])
    .await;

    let got = set_keyless(
        &api,
        json!({"pod_identity": {"body": "credentials_camel_case"}}),
    )
    .await;
    assert_eq!(got.json["pod_identity"]["body"], "credentials_camel_case");
    keys_spelt([
        "accessKeyId",
        "secretAccessKey",
        "securityToken",
        "expiration",
    ])
    .await;

    let got = set_keyless(
        &api,
        json!({"pod_identity": {"body": "credential", "path": "/pod/creds"}}),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text);
    let got = pod(&api, "/pod/creds", Some("pod-token"), "{}").await;
    assert_eq!(got.status, 200, "{}", got.text);
    Temp::from_credential(&got.json);
    sim.shutdown().await;
}

#[tokio::test]
async fn agency_keys_come_from_a_signed_assume_role_and_act_only_on_its_projects() {
    let (sim, api) = sim(SimConfig::default()).await;
    let t = assumed_keys(&api, &default_agency(3600)).await;
    assert_lifetime(&t, Duration::from_secs(3600));

    let got = list_with(&api, &t, DEFAULT_AGENCY_PROJECT_ID).await;
    assert_eq!(got.status, 200, "the agency's project: {}", got.text);
    let got = list_with(&api, &t, PROJECT).await;
    assert_eq!(
        (got.status, got.code()),
        (403, "EndPoint.0004"),
        "another project: {}",
        got.text
    );

    // By domain id, without a duration (IAM's default: 15 minutes).
    let body = assume_body(
        DEFAULT_AGENCY_NAME,
        ("domain_id", DEFAULT_AGENCY_DOMAIN_ID),
        Value::Null,
    );
    assert_lifetime(&assumed_keys(&api, &body).await, Duration::from_secs(900));

    // With a password token instead of a signature.
    let got = api.password_token(json!({"id": PROJECT})).await;
    let token = got.header("x-subject-token").expect("token");
    let got = api
        .raw(
            "POST",
            SECURITYTOKENS,
            &[
                ("X-Auth-Token", token),
                ("Content-Type", "application/json;charset=utf8"),
            ],
            &default_agency(900).to_string(),
        )
        .await;
    assert_eq!(got.status, 201, "{}", got.text);
    let state = sim.state();
    assert_eq!(state.request_count(Operation::SecurityTokens), 3);
    assert_eq!(state.temporary_keys_issued.agency, 3);
    let rec = state
        .signed
        .iter()
        .find(|r| r.operation == "securitytokens")
        .expect("the signed assume_role is logged");
    assert_eq!(
        (rec.access_key.as_str(), rec.http_status),
        (DEFAULT_AK, 201)
    );
    assert!(!rec.temporary);
    sim.shutdown().await;
}

#[tokio::test]
async fn assume_role_errors() {
    let (sim, api) = sim(SimConfig::default()).await;
    let name = ("domain_name", DEFAULT_AGENCY_DOMAIN_NAME);
    for (body, status, what) in [
        (
            assume_body("no-such-agency", name, json!(900)),
            403,
            "unknown agency",
        ),
        (
            assume_body(
                DEFAULT_AGENCY_NAME,
                ("domain_name", "other-account"),
                json!(900),
            ),
            403,
            "unknown domain name",
        ),
        (
            assume_body(DEFAULT_AGENCY_NAME, ("domain_id", "0000"), json!(900)),
            403,
            "unknown domain id",
        ),
        (
            assume_body(DEFAULT_AGENCY_NAME, name, json!(899)),
            400,
            "under 900",
        ),
        (
            assume_body(DEFAULT_AGENCY_NAME, name, json!(86_401)),
            400,
            "over 86400",
        ),
        (
            assume_body(DEFAULT_AGENCY_NAME, name, json!("900")),
            400,
            "a string",
        ),
        (
            json!({"auth": {"identity": {"methods": ["password"]}}}),
            400,
            "not assume_role",
        ),
    ] {
        let got = assume_signed(&api, KEYS, None, &body).await;
        assert_eq!(got.status, status, "{what}: {}", got.text);
        assert!(
            got.code().starts_with("IAM."),
            "{what}: IAM-style body: {}",
            got.text
        );
        assert!(got.json["error_msg"].is_string(), "{what}: {}", got.text);
    }
    // 86400 is the most, and the configured lifetime caps it.
    assert_lifetime(
        &assumed_keys(&api, &assume_body(DEFAULT_AGENCY_NAME, name, json!(86_400))).await,
        Duration::from_secs(86_400),
    );

    let ok = assume_body(DEFAULT_AGENCY_NAME, name, json!(900)).to_string();
    let got = api
        .raw(
            "POST",
            SECURITYTOKENS,
            &[("Content-Type", "application/json")],
            &ok,
        )
        .await;
    assert_eq!(
        (got.status, got.code()),
        (401, "APIGW.0301"),
        "no credentials"
    );
    let got = assume_signed(
        &api,
        (DEFAULT_AK, "wrong-secret"),
        None,
        &assume_body(DEFAULT_AGENCY_NAME, name, json!(900)),
    )
    .await;
    assert_eq!(
        (got.status, got.code()),
        (401, "APIGW.0301"),
        "bad signature"
    );
    let got = api
        .raw(
            "POST",
            SECURITYTOKENS,
            &[
                ("X-Auth-Token", "MIIforged"),
                ("Content-Type", "application/json"),
            ],
            &ok,
        )
        .await;
    assert_eq!(got.status, 401, "forged token");
    assert_eq!(sim.state().temporary_keys_issued.agency, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_caller_with_temporary_keys_gets_an_agency_for_at_most_an_hour() {
    let (sim, api) = sim(SimConfig::default()).await;
    let base = metadata_keys(&api).await;
    let body = |d: u64| {
        assume_body(
            DEFAULT_AGENCY_NAME,
            ("domain_id", DEFAULT_AGENCY_DOMAIN_ID),
            json!(d),
        )
    };
    let got = assume_signed(&api, base.keys(), Some(&base.token), &body(3601)).await;
    assert_eq!(got.status, 400, "{}", got.text);
    assert!(
        got.json["error_msg"]
            .as_str()
            .is_some_and(|m| m.contains("3600"))
    );
    let got = assume_signed(&api, base.keys(), Some(&base.token), &body(3600)).await;
    assert_eq!(got.status, 201, "{}", got.text);
    let agency = Temp::from_credential(&got.json);
    assert_eq!(
        list_with(&api, &agency, DEFAULT_AGENCY_PROJECT_ID)
            .await
            .status,
        200
    );

    // Without its security token the temporary base identity is refused.
    let got = assume_signed(&api, base.keys(), None, &body(900)).await;
    assert_eq!(
        (got.status, got.code()),
        (401, "APIGW.0301"),
        "{}",
        got.text
    );
    // That missing token is the only refusal: the signed ones with it were not.
    let r = sim.state().security_token_rejections;
    assert_eq!((r.missing, r.total()), (1, 1), "{r:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn temporary_keys_need_their_own_signed_security_token() {
    let (sim, api) = sim(SimConfig::default()).await;
    let t = metadata_keys(&api).await;
    let other = metadata_keys(&api).await;

    let none = sign_list(&api, PROJECT, t.keys(), &[]);
    let wrong = sign_list(
        &api,
        PROJECT,
        t.keys(),
        &[("X-Security-Token", &other.token)],
    );
    let mut truncated_token = t.token.clone();
    truncated_token.truncate(t.token.len() - 1);
    let truncated = sign_list(
        &api,
        PROJECT,
        t.keys(),
        &[("X-Security-Token", &truncated_token)],
    );
    let mut unsigned = sign_list(&api, PROJECT, t.keys(), &[]);
    unsigned
        .headers
        .push(("X-Security-Token".into(), t.token.clone()));
    for (what, s, message) in [
        ("no token", none, "x-security-token not found"),
        ("another key's token", wrong, "decrypt security token fail"),
        (
            "a truncated token",
            truncated,
            "decrypt security token fail",
        ),
        ("an unsigned token", unsigned, "not signed"),
    ] {
        let got = api.signed(s, "GET", b"").await;
        assert_gateway_401(&got, what);
        assert!(
            got.json["error_msg"]
                .as_str()
                .is_some_and(|m| m.contains(message)),
            "{what}: {}",
            got.text
        );
    }
    // The key and its token together are fine, and so is a permanent key with any token.
    assert_eq!(list_with(&api, &t, PROJECT).await.status, 200);
    let permanent = sign_list(&api, PROJECT, KEYS, &[("X-Security-Token", "anything")]);
    assert_eq!(api.signed(permanent, "GET", b"").await.status, 200);

    let state = sim.state();
    let r = state.security_token_rejections;
    assert_eq!(
        (r.missing, r.mismatched, r.unsigned, r.expired),
        (1, 2, 1, 0),
        "{r:?}"
    );
    let lists: Vec<_> = state
        .signed
        .iter()
        .filter(|r| r.operation == "list_connections")
        .collect();
    let seen: Vec<(bool, bool, Option<bool>, u16)> = lists
        .iter()
        .map(|r| {
            (
                r.temporary,
                r.security_token,
                r.security_token_valid,
                r.http_status,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (true, false, Some(false), 401),
            (true, true, Some(false), 401),
            (true, true, Some(false), 401),
            (true, true, Some(false), 401),
            (true, true, Some(true), 200),
            (false, true, None, 200),
        ]
    );
    // A temporary key with a bad signature: its token is not looked at.
    let bad = sign_list(
        &api,
        PROJECT,
        (&t.access, "wrong-secret"),
        &[("X-Security-Token", &t.token)],
    );
    let got = api.signed(bad, "GET", b"").await;
    assert_eq!((got.status, got.code()), (401, "APIGW.0301"));
    let last = sim.state().signed.last().cloned().expect("record");
    assert_eq!((last.temporary, last.security_token_valid), (true, None));
    sim.shutdown().await;
}

#[tokio::test]
async fn temporary_keys_expire_after_the_configured_lifetime() {
    let (sim, api) = sim(SimConfig {
        credential_lifetime: Duration::from_secs(2),
        ..SimConfig::default()
    })
    .await;
    let meta = metadata_keys(&api).await;
    assert_lifetime(&meta, Duration::from_secs(2));
    let got = pod_default(&api, DEFAULT_POD_TOKEN).await;
    let pod_keys = Temp::from_credential(&got.json);
    assert_lifetime(&pod_keys, Duration::from_secs(2));
    let agency = assumed_keys(&api, &default_agency(3600)).await;
    assert_lifetime(&agency, Duration::from_secs(2));

    for (t, project) in [
        (&meta, PROJECT),
        (&pod_keys, PROJECT),
        (&agency, DEFAULT_AGENCY_PROJECT_ID),
    ] {
        assert_eq!(list_with(&api, t, project).await.status, 200);
    }
    let wait = (agency.expires() - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(100)).await;
    for (t, project) in [
        (&meta, PROJECT),
        (&pod_keys, PROJECT),
        (&agency, DEFAULT_AGENCY_PROJECT_ID),
    ] {
        let got = list_with(&api, t, project).await;
        assert_eq!(
            (got.status, got.code()),
            (401, "APIGW.0301"),
            "{}",
            got.text
        );
        let msg = got.json["error_msg"].as_str().expect("message");
        assert!(
            msg.contains("expires") && msg.contains(&t.expires_at),
            "says the key expired and when: {msg}"
        );
    }
    let state = sim.state();
    assert_eq!(state.security_token_rejections.expired, 3);
    assert_eq!(state.security_token_rejections.total(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn expire_keys_admin_route_ends_every_temporary_key() {
    let (sim, api) = sim(SimConfig::default()).await;
    let t = metadata_keys(&api).await;
    assert_eq!(list_with(&api, &t, PROJECT).await.status, 200);
    let got = api
        .admin("POST", "/_sim/keyless/expire-keys", Value::Null)
        .await;
    assert_eq!((got.status, got.json["expired"].as_u64()), (200, Some(1)));
    assert_eq!(list_with(&api, &t, PROJECT).await.status, 401);
    assert_eq!(sim.state().security_token_rejections.expired, 1);
    // A fresh key works again.
    assert_eq!(
        list_with(&api, &metadata_keys(&api).await, PROJECT)
            .await
            .status,
        200
    );
    assert_eq!(sim.expire_temporary_keys(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_served_project_restriction_still_serves_the_agency_projects() {
    let (sim, api) = sim(SimConfig {
        project_id: Some(PROJECT.into()),
        agencies: vec![
            SimAgency::parse("ops:acme-prod::0a0b0c0d0e0f40a1b2c3d4e5f6a7b8c9").expect("agency"),
        ],
        ..SimConfig::default()
    })
    .await;
    let t = assumed_keys(
        &api,
        &assume_body("ops", ("domain_name", "acme-prod"), json!(900)),
    )
    .await;
    let got = list_with(&api, &t, "0a0b0c0d0e0f40a1b2c3d4e5f6a7b8c9").await;
    assert_eq!(got.status, 200, "{}", got.text);
    let s = sign_list(&api, "another-project", KEYS, &[]);
    let got = api.signed(s, "GET", b"").await;
    assert_eq!((got.status, got.code()), (400, "EndPoint.0014"));
    // The example agency was replaced.
    let got = assume_signed(&api, KEYS, None, &default_agency(900)).await;
    assert_eq!(got.status, 403);
    sim.shutdown().await;
}

#[tokio::test]
async fn agencies_and_lifetime_change_at_run_time() {
    let (sim, api) = sim(SimConfig::default()).await;
    let got = api.admin("GET", "/_sim/keyless", Value::Null).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json["credential_lifetime"], "1day");
    assert_eq!(got.json["metadata"]["mode"], "normal");
    assert_eq!(got.json["pod_identity"]["path"], DEFAULT_POD_IDENTITY_PATH);
    assert_eq!(got.json["agencies"][0]["agency_name"], DEFAULT_AGENCY_NAME);
    assert!(!got.text.contains(DEFAULT_POD_TOKEN), "{}", got.text);

    let got = set_keyless(
        &api,
        json!({"credential_lifetime": "90s",
                   "agencies": [{"agency_name": "audit", "domain_id": "d-1",
                                 "project_ids": ["p-1", "p-2"]}]}),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.json["credential_lifetime"], "1m 30s");
    let t = assumed_keys(
        &api,
        &assume_body("audit", ("domain_id", "d-1"), json!(7200)),
    )
    .await;
    assert_lifetime(&t, Duration::from_secs(90));
    assert_eq!(list_with(&api, &t, "p-2").await.status, 200);
    assert_eq!(list_with(&api, &t, "p-3").await.status, 403);

    for bad in [
        json!({"agencies": [{"agency_name": "x", "project_ids": ["p"]}]}),
        json!({"credential_lifetime": "0s"}),
        json!({"pod_identity": {"path": "no-slash"}}),
        json!({"unknown": 1}),
    ] {
        let got = set_keyless(&api, bad.clone()).await;
        assert_eq!(got.status, 400, "{bad}: {}", got.text);
    }
    assert_eq!(sim.keyless().credential_lifetime, Duration::from_secs(90));
    sim.shutdown().await;
}

#[tokio::test]
async fn scripted_faults_reach_the_credential_routes() {
    let (sim, api) = sim(SimConfig::default()).await;
    sim.push_fault(ScriptedFault::new(Operation::MetadataSecurityKey, 500));
    sim.push_fault(ScriptedFault::new(Operation::PodIdentity, 200).with_body("garbage"));
    sim.push_fault(ScriptedFault::new(Operation::SecurityTokens, 429));
    let session = metadata_token(&api, "60").await;
    assert_eq!(securitykey(&api, Some(&session.text)).await.status, 500);
    assert_eq!(securitykey(&api, Some(&session.text)).await.status, 200);
    let got = pod_default(&api, DEFAULT_POD_TOKEN).await;
    assert_eq!((got.status, got.text.as_str()), (200, "garbage"));
    let body = default_agency(900);
    let got = assume_signed(&api, KEYS, None, &body).await;
    assert_eq!(got.status, 429);
    assert!(got.header("retry-after").is_some());
    assert_eq!(assume_signed(&api, KEYS, None, &body).await.status, 201);
    // An unauthenticated request does not use a scripted answer up.
    sim.push_fault(ScriptedFault::new(Operation::PodIdentity, 503));
    assert_eq!(pod_default(&api, "wrong").await.status, 401);
    assert_eq!(pod_default(&api, DEFAULT_POD_TOKEN).await.status, 503);
    // Random faults stay on the /v1 routes.
    sim.set_faults(vpcep_approver::sim::Faults {
        fault_rate: 1.0,
        ..Default::default()
    });
    for _ in 0..5 {
        assert_eq!(securitykey(&api, Some(&session.text)).await.status, 200);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn simulate_takes_the_credential_flags() {
    let sim = start_simulate(&[
        "--credential-lifetime",
        "30s",
        "--pod-token",
        "cli-pod-token",
        "--pod-identity-body",
        "credentials-snake-case",
        "--metadata-mode",
        "token-unsupported",
        "--metadata-token-status",
        "405",
        "--agency",
        "cross:acme-prod:acme-id:proj-a,proj-b",
    ]);
    let client = support::http_client();
    let call = |method: &str, path: &str, headers: Vec<(String, String)>, body: &str| {
        let url = format!("{}{path}", sim.url);
        let client = client.clone();
        let (method, body) = (method.to_owned(), body.as_bytes().to_vec());
        async move { Got::from(send(&client, &method, &url, &headers, body).await).await }
    };
    let got = call("GET", "/_sim/keyless", vec![], "").await;
    assert_eq!(got.json["credential_lifetime"], "30s", "{}", got.text);
    assert_eq!(got.json["metadata"]["mode"], "token_unsupported");
    assert_eq!(got.json["metadata"]["token_unsupported_status"], 405);
    assert_eq!(got.json["pod_identity"]["body"], "credentials_snake_case");
    assert_eq!(
        got.json["agencies"],
        json!([{"agency_name": "cross", "domain_name": "acme-prod", "domain_id": "acme-id",
                "project_ids": ["proj-a", "proj-b"]}])
    );
    assert!(!got.text.contains("cli-pod-token"));

    let got = call("PUT", "/meta-data/latest/api/token", vec![], "").await;
    assert_eq!(got.status, 405);
    let got = call("GET", "/openstack/latest/securitykey", vec![], "").await;
    assert_eq!(got.status, 200, "{}", got.text);
    let t = Temp::from_credential(&got.json);
    assert_lifetime(&t, Duration::from_secs(30));
    let auth = vec![("Authorization".to_owned(), "cli-pod-token".to_owned())];
    let got = call("POST", DEFAULT_POD_IDENTITY_PATH, auth, "{}").await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert!(got.json["credentials"]["security_token"].is_string());

    // Temporary keys sign requests to the simulator process like any client's.
    let url = sim.url.clone();
    let s = support::sign(
        "GET",
        &url,
        &conn_path(SVC),
        &[],
        b"",
        t.keys(),
        &[("X-Security-Token", &t.token)],
    );
    let got =
        within(async { Got::from(send(&client, "GET", &s.url, &s.headers, vec![]).await).await })
            .await;
    assert_eq!(
        got.status, 404,
        "signed fine; no such service: {}",
        got.text
    );
    assert_eq!(got.code(), "EndPoint.0005");
}

#[tokio::test]
async fn an_agency_account_and_the_base_account_each_see_their_own_services() {
    let seed = vpcep_approver::sim::Seed::from_json(&format!(
        r#"{{"services":[
            {{"id":"base-svc","project_id":"{PROJECT}","connections":[{{"id":"e-base"}}]}},
            {{"id":"agency-svc","project_id":"{DEFAULT_AGENCY_PROJECT_ID}","connections":[{{"id":"e-agency"}}]}}]}}"#
    ))
    .expect("seed");
    let (sim, api) = sim_and_api(SimConfig {
        seed,
        ..SimConfig::default()
    })
    .await;
    let agency = assumed_keys(&api, &default_agency(900)).await;
    let agency_token = [("X-Security-Token", agency.token.as_str())];
    // `GET /v1/{project}/vpc-endpoint-services` lists the services `want`, no others.
    let services_are = async |project: &str, keys, extra: &[(&str, &str)], want: [&str; 1]| {
        let path = format!("/v1/{project}/vpc-endpoint-services");
        let extra = in_project(project, extra);
        let got = api.signed_as("GET", &path, &[], b"", keys, &extra).await;
        let ids: Vec<&str> = got.json["endpoint_services"]
            .as_array()
            .unwrap_or_else(|| panic!("services: {}", got.text))
            .iter()
            .map(|s| s["id"].as_str().expect("id"))
            .collect();
        assert_eq!(ids, want, "{project}: {}", got.text);
    };
    services_are(PROJECT, KEYS, &[], ["base-svc"]).await;
    services_are(
        DEFAULT_AGENCY_PROJECT_ID,
        agency.keys(),
        &agency_token,
        ["agency-svc"],
    )
    .await;

    // `receive` of `endpoint` on `service`, in the agency's project with the agency's keys.
    let receive = async |service: &str, endpoint: &str| {
        let path = format!(
            "/v1/{DEFAULT_AGENCY_PROJECT_ID}/vpc-endpoint-services/{service}/connections/action"
        );
        let body = json!({"action": "receive", "endpoints": [endpoint]}).to_string();
        let extra = in_project(DEFAULT_AGENCY_PROJECT_ID, &agency_token);
        api.signed_as("POST", &path, &[], body.as_bytes(), agency.keys(), &extra)
            .await
    };
    // The base account's service is not reachable through the agency's project.
    let got = receive("base-svc", "e-base").await;
    assert_eq!(
        (got.status, got.code()),
        (404, "EndPoint.0005"),
        "{}",
        got.text
    );
    assert_eq!(
        sim.connection("e-base").map(|c| c.status),
        Some("pendingAcceptance".to_owned())
    );
    let got = receive("agency-svc", "e-agency").await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(
        sim.connection("e-agency").map(|c| c.status),
        Some("accepted".to_owned())
    );
    sim.shutdown().await;
}
