//! Hostile inputs: API bodies that are huge, deeply nested, wrongly typed, not UTF-8,
//! truncated or one page of 10,000 connections; consumer descriptions of megabytes full of
//! control characters, quotes, newlines, JSON and Cedar syntax; arbitrary config values.
//! Against the real client and engine on the simulator's scripted answers, a raw TCP server
//! where the simulator cannot misbehave enough (invalid UTF-8, lying `Content-Length`,
//! endless chunked bodies), and the real binary. Whatever comes in: no crash, bounded
//! memory (the client's body cap), a clear error, nothing decided from partial data, and
//! every audit line one valid JSON line of an intact chain.

use crate::cases::{SVC, pending, sim_with};
use crate::cli::BIN;
use crate::support::{EngineRig, PROJECT, RigSpec, engine_rig, seed_many, target_config, within};
use proptest::prelude::*;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use vpcep_approver::audit::verify_files;
use vpcep_approver::cloud::MAX_BODY_BYTES;
use vpcep_approver::cloud::auth::Credentials;
use vpcep_approver::cloud::client::{CloudClient, TargetClient};
use vpcep_approver::cloud::error::{ApiError, ApiErrorKind};
use vpcep_approver::config::{Config, ConfigError};
use vpcep_approver::decision::OnNoMatch;
use vpcep_approver::metrics::Metrics;
use vpcep_approver::sim::{
    DEFAULT_AK, DEFAULT_SK, Operation, ScriptedFault, Seed, SeedConnection, SeedService, SimConfig,
    Simulator,
};
use vpcep_approver::stop::Stop;

fn cloud_for(url: &str, poll: &str) -> (CloudClient, TargetClient) {
    vpcep_approver::cloud::init_tls();
    let cloud = CloudClient::new(
        &target_config(url, poll),
        Credentials::aksk(DEFAULT_AK, DEFAULT_SK, None),
        Metrics::new(),
    )
    .expect("cloud builds");
    let t = cloud.targets()[0].clone();
    (cloud, t)
}

/// A real cloud client, an engine with the example policies (no-match rejects) and an
/// audit file.
async fn rig(seed: Seed, dry_run: bool) -> EngineRig {
    let spec = RigSpec {
        dry_run,
        on_no_match: OnNoMatch::Reject,
        ..RigSpec::default()
    };
    engine_rig(
        SimConfig {
            seed,
            ..SimConfig::default()
        },
        spec,
    )
    .await
}

/// Every audit line as [`crate::support::audit_lines`] reads them (one JSON object each,
/// the chain verified), and the verifier counts each one as a record.
fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    let lines = crate::support::audit_lines(path);
    if !lines.is_empty() {
        let report = verify_files(&[path.to_owned()], &mut std::io::sink()).expect("verify runs");
        assert_eq!(report.records, lines.len() as u64);
    }
    lines
}

// ---------------------------------------------------------------------------------------
// Malformed API bodies through the real client and the simulator's script.

#[tokio::test]
async fn hostile_wrongly_typed_and_nested_bodies_are_malformed_errors() {
    let sim = sim_with(3, |_| {}).await;
    let (_c, t) = cloud_for(&sim.base_url(), "max_retries = 2\n");
    let deep_array = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!(
        "{{\"connections\":[{{\"id\":\"x\",\"description\":{}1{}}}],\"total_count\":1}}",
        "{\"a\":".repeat(50_000),
        "}".repeat(50_000)
    );
    let unclosed = "[".repeat(1_000_000);
    let bodies: Vec<String> = vec![
        deep_array,
        deep_object,
        unclosed,
        r#"{"connections":[],"total_count":"0"}"#.into(),
        r#"{"connections":[],"total_count":-1}"#.into(),
        r#"{"connections":[],"total_count":1.5}"#.into(),
        r#"{"connections":{},"total_count":0}"#.into(),
        r#"{"connections":[{"id":5}],"total_count":1}"#.into(),
        r#"{"connections":[{"id":"a","domain_id":["x"]}],"total_count":1}"#.into(),
        r#"{"connections":[{"id":"a","marker_id":18446744073709551616}],"total_count":1}"#.into(),
        r#"{"connections":[{"id":"a","marker_id":1.5}],"total_count":1}"#.into(),
        r#"{"connections":[{"id":"a","created_at":20260101}],"total_count":1}"#.into(),
        r#"{"connections":[{"id":"a","description":{"$ne":""}}],"total_count":1}"#.into(),
        r#"{"connections":[{"id":"a","status":true}],"total_count":1}"#.into(),
        r#"{"connections":[null],"total_count":1}"#.into(),
        r#"{"connections":[{"id":""}],"total_count":1}"#.into(),
        r#"{"connections":[],"total_count":0} trailing"#.into(),
        "\u{feff}{\"connections\":[],\"total_count\":0}".into(),
        "{\"connections\":[],\"total_count\":0,\"x\":\"\u{0}\"".into(),
    ];
    for body in &bodies {
        sim.push_fault(ScriptedFault::new(Operation::ListConnections, 200).with_body(body.clone()));
        let e = pending(&t).await.expect_err("a hostile body is an error");
        let shown = body.chars().take(60).collect::<String>();
        assert_eq!(e.kind, ApiErrorKind::Malformed, "{shown}: {e}");
        assert_eq!(e.attempts, 1, "{shown}: malformed answers are not retried");
        let msg = e.to_string();
        assert!(
            msg.contains("/connections"),
            "{shown}: names the URL: {msg}"
        );
        assert!(
            msg.len() < 4096,
            "{shown}: the message stays short: {}",
            msg.len()
        );
    }
    // The client still works afterwards.
    let ok = pending(&t).await.expect("normal listing");
    assert_eq!(ok.len(), 3);
}

#[tokio::test]
async fn hostile_body_over_the_cap_is_refused_without_retry() {
    let sim = sim_with(1, |_| {}).await;
    let (_c, t) = cloud_for(&sim.base_url(), "max_retries = 3\n");
    // A syntactically plausible page just over the real cap (32 MiB).
    let filler = "x".repeat(MAX_BODY_BYTES);
    let body = format!(
        "{{\"connections\":[{{\"id\":\"a\",\"description\":\"{filler}\"}}],\"total_count\":1}}"
    );
    sim.push_fault(ScriptedFault::new(Operation::ListConnections, 200).with_body(body));
    let e = pending(&t).await.expect_err("too large");
    assert_eq!(e.kind, ApiErrorKind::TooLarge, "{e}");
    assert_eq!(e.attempts, 1);
    assert!(e.to_string().contains("bytes"), "{e}");
}

#[tokio::test]
async fn hostile_single_page_of_10000_connections_is_read_whole() {
    let sim = sim_with(1, |_| {}).await;
    let (_c, t) = cloud_for(&sim.base_url(), "max_retries = 0\n");
    let conns: Vec<serde_json::Value> = (0..10_000)
        .map(|i| {
            serde_json::json!({"id": format!("p{i:05}"), "domain_id": "d", "marker_id": i,
                "status": "pendingAcceptance", "created_at": "2026-01-01T00:00:00Z",
                "description": "CHG-1 \"x\"\n"})
        })
        .collect();
    let body = serde_json::json!({"connections": conns, "total_count": 10_000}).to_string();
    sim.push_fault(ScriptedFault::new(Operation::ListConnections, 200).with_body(body));
    let got = pending(&t).await.expect("one big page");
    assert_eq!(got.len(), 10_000);
    assert_eq!(
        state_list_requests(&sim),
        1,
        "total_count reached: no second page"
    );
}

fn state_list_requests(sim: &Simulator) -> u64 {
    sim.state().request_count(Operation::ListConnections)
}

// ---------------------------------------------------------------------------------------
// A raw server for what the simulator cannot send: invalid UTF-8, a Content-Length longer
// than the body, an endless chunked body.

/// Serves every connection with `response` (then closes, or keeps sending `forever` chunks
/// when set). Returns the base URL.
async fn raw_server(response: Vec<u8>, forever: Option<Vec<u8>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let response = response.clone();
            let forever = forever.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                if sock.write_all(&response).await.is_err() {
                    return;
                }
                if let Some(chunk) = forever {
                    while sock.write_all(&chunk).await.is_ok() {}
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

fn http_response(headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r =
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{headers}\r\n").into_bytes();
    r.extend_from_slice(body);
    r
}

/// `body` behind a `Content-Length` of `length`, then the connection closes.
fn closing_response(length: usize, body: &[u8]) -> Vec<u8> {
    http_response(
        &format!("Content-Length: {length}\r\nConnection: close\r\n"),
        body,
    )
}

/// Lists through the real client (`poll` lines) from a [`raw_server`] sending `response`
/// (and `forever`): the listing must fail (`expect_err(what)`); returns its error.
async fn raw_listing_error(
    response: Vec<u8>,
    forever: Option<Vec<u8>>,
    poll: &str,
    what: &str,
) -> ApiError {
    let url = raw_server(response, forever).await;
    let (_c, t) = cloud_for(&url, poll);
    pending(&t).await.expect_err(what)
}

#[tokio::test]
async fn hostile_body_that_is_not_utf8_is_malformed() {
    let mut body = br#"{"connections":[{"id":"a","description":""#.to_vec();
    body.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28, 0xed, 0xa0, 0x80]);
    body.extend_from_slice(br#""}],"total_count":1}"#);
    let response = closing_response(body.len(), &body);
    let e = raw_listing_error(response, None, "max_retries = 0\n", "not UTF-8").await;
    assert_eq!(e.kind, ApiErrorKind::Malformed, "{e}");
    assert!(e.to_string().contains("UTF-8"), "{e}");
}

#[tokio::test]
async fn hostile_truncated_body_is_an_error_not_partial_data() {
    let body = br#"{"connections":[{"id":"a","status":"pendingAcceptance"}],"total_count":1}"#;
    // Claims twice its length, then the connection closes.
    let response = closing_response(body.len() * 2, body);
    let e = raw_listing_error(response, None, "max_retries = 1\n", "truncated").await;
    assert_ne!(e.kind, ApiErrorKind::Malformed, "a transport failure: {e}");
    assert!(e.to_string().contains("/connections"), "{e}");
}

#[tokio::test]
async fn hostile_endless_chunked_body_stops_at_the_cap() {
    // No Content-Length: the cap must hold while reading, and memory stays bounded.
    let chunk_data = vec![b' '; 1 << 20];
    let mut chunk = format!("{:x}\r\n", chunk_data.len()).into_bytes();
    chunk.extend_from_slice(&chunk_data);
    chunk.extend_from_slice(b"\r\n");
    let e = raw_listing_error(
        http_response("Transfer-Encoding: chunked\r\n", b""),
        Some(chunk),
        "max_retries = 0\nrequest_timeout = \"30s\"\n",
        "endless",
    )
    .await;
    assert_eq!(e.kind, ApiErrorKind::TooLarge, "{e}");
}

// ---------------------------------------------------------------------------------------
// The engine: nothing decided from partial data; hostile descriptions stay data.

#[tokio::test]
async fn hostile_bad_second_page_decides_nothing() {
    let r = rig(seed_many(SVC, 5), false).await;
    // A full first page, so the listing goes on to the bad second one.
    let ids: Vec<serde_json::Value> = (0..1000)
        .map(|i| {
            serde_json::json!({"id": format!("e{i:05}"), "domain_id": "d0", "marker_id": 1,
                "status": "pendingAcceptance", "created_at": "2026-01-01T00:00:00Z"})
        })
        .collect();
    for bad in [
        "{\"connections\":[{\"id\":",
        "\u{0}",
        "{\"connections\":[]}",
    ] {
        r.sim.push_fault(
            ScriptedFault::new(Operation::ListConnections, 200).with_body(
                serde_json::json!({"connections": ids, "total_count": 1005}).to_string(),
            ),
        );
        r.sim
            .push_fault(ScriptedFault::new(Operation::ListConnections, 200).with_body(bad));
        let report = r.cycle().await;
        assert!(!report.fully_ok(), "{bad:?}: {report:?}");
        let failure = report.targets[0].failures.join("; ");
        assert!(
            failure.contains(SVC),
            "{bad:?}: names the service: {failure}"
        );
        assert_eq!(report.targets[0].decisions, 0, "{bad:?}");
        assert!(
            audit_lines(&r.audit).is_empty(),
            "{bad:?}: nothing recorded"
        );
        assert!(r.sim.actions().is_empty(), "{bad:?}: nothing sent");
    }
}

fn hostile_descriptions() -> Vec<String> {
    let controls: String = (0u32..0x20)
        .chain([0x7f, 0x85, 0x2028, 0x2029, 0x202e, 0xfeff])
        .filter_map(char::from_u32)
        .collect();
    vec![
        controls.clone(),
        "\"},{\"kind\":\"outcome\",\"outcome\":\"applied\"}\n{\"prev\":\"".into(),
        "line1\nline2\r\n\"quoted\" \\ back\\slash \u{0}nul".into(),
        "\" && true || \"\" == \"".into(),
        "permit(principal, action, resource); // CHG-1 */ /*".into(),
        "CHG-1 ${jndi:ldap://x} {{template}} <script>alert(1)</script>".into(),
        "\u{1F600}\u{0301}\u{200d}\u{fffd}".repeat(1000),
        // Megabytes: 3 MiB of mixed hostile text.
        format!(
            "CHG-9 {}",
            format!("{controls}\"\\\n{{}}[]").repeat(3 << 20 >> 6)
        ),
    ]
}

#[tokio::test]
async fn hostile_descriptions_are_recorded_verbatim_on_one_line_each() {
    let descs = hostile_descriptions();
    let internal = "0605767a3300d5762fb7c0186d8bfc2b"; // allow-internal in the examples
    let seed = Seed {
        services: vec![SeedService::named(
            SVC,
            "cn-north-4.hostile.x",
            descs
                .iter()
                .enumerate()
                .map(|(i, d)| SeedConnection {
                    id: Some(format!("h{i:03}")),
                    domain_id: Some(if i % 2 == 0 {
                        internal.into()
                    } else {
                        "d1".into()
                    }),
                    description: Some(d.clone()),
                    ..SeedConnection::default()
                })
                .collect(),
        )],
    };
    let r = rig(seed, false).await;
    let report = r.cycle().await;
    assert!(report.fully_ok(), "{report:?}");
    assert_eq!(report.targets[0].decisions, descs.len());
    let lines = audit_lines(&r.audit);
    let decisions: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["kind"] == "decision").collect();
    assert_eq!(decisions.len(), descs.len());
    for d in &decisions {
        let i: usize = d["endpoint_id"].as_str().expect("id")[1..]
            .parse()
            .expect("index");
        assert_eq!(
            d["description"].as_str(),
            Some(descs[i].as_str()),
            "description {i} round-trips"
        );
        // Descriptions are data: never an evaluation error, never an injected verdict.
        assert_ne!(d["verdict"], "error", "{i}: {d}");
    }
    // Every sent action has its outcome; nothing was left half-recorded.
    let outcomes = lines.iter().filter(|l| l["kind"] == "outcome").count();
    assert_eq!(outcomes, r.sim.actions().len());
    assert_eq!(
        outcomes,
        descs.len(),
        "on_no_match = reject: every one acted on"
    );
}

#[tokio::test]
async fn hostile_page_of_10000_connections_is_decided_whole() {
    // Dry run: every one of the 10,000 is decided and recorded from one page.
    let r = rig(seed_many(SVC, 1), true).await;
    let conns: Vec<serde_json::Value> = (0..10_000)
        .map(|i| {
            serde_json::json!({"id": format!("p{i:05}"), "domain_id": format!("d{}", i % 97),
                "marker_id": i, "status": "pendingAcceptance",
                "created_at": "2026-01-01T00:00:00Z", "description": "CHG-1"})
        })
        .collect();
    r.sim.push_fault(
        ScriptedFault::new(Operation::ListConnections, 200).with_body(
            serde_json::json!({"connections": conns, "total_count": 10_000}).to_string(),
        ),
    );
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        r.engine.run_cycle(&r.cloud, &Stop::new()),
    )
    .await
    .expect("a big page is decided in bounded time");
    assert!(report.fully_ok(), "{report:?}");
    assert_eq!(report.targets[0].pending, 10_000);
    assert_eq!(audit_lines(&r.audit).len(), 10_000);
}

// ---------------------------------------------------------------------------------------
// The real binary: a hostile listing is exit 1 with a clear message, nothing recorded.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_listing_fails_run_once_clearly() {
    let sim = sim_with(3, |_| {}).await;
    sim.push_fault(
        ScriptedFault::new(Operation::ListConnections, 200).with_body(
            "{\"connections\":[{\"id\":\"e00000\",\"domain_id\":{}}],\"total_count\":3}",
        ),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.toml");
    let url = sim.base_url();
    std::fs::write(
        &cfg,
        format!(
            "[[target]]\nname = \"sim\"\nregion = \"cn-north-4\"\nproject_id = \"{PROJECT}\"\n\
             vpcep_endpoint = \"{url}\"\niam_endpoint = \"{url}\"\n\
             [poll]\nmax_retries = 0\n[policy]\ndir = {:?}\non_no_match = \"reject\"\n\
             [audit]\npath = \"audit.jsonl\"\n",
            crate::cli::repo("policies").display().to_string()
        ),
    )
    .expect("config");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .arg("-c")
            .arg(&cfg)
            .args(["run", "--once"])
            .env_remove("RUST_LOG")
            .env("HUAWEICLOUD_SDK_AK", DEFAULT_AK)
            .env("HUAWEICLOUD_SDK_SK", DEFAULT_SK)
            .output()
            .expect("binary runs")
    });
    let out = within(out).await.expect("joined");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(SVC), "names the service: {err}");
    assert!(err.contains("documented JSON"), "says what is wrong: {err}");
    assert!(sim.actions().is_empty(), "nothing sent");
    assert!(audit_lines(&dir.path().join("audit.jsonl")).is_empty());
}

// ---------------------------------------------------------------------------------------
// Config parsing: arbitrary TOML values never panic, and every rejection names a key.

/// A valid config as a TOML table, every section present.
fn base_config() -> toml::Table {
    toml::from_str(
        r#"
[[target]]
name = "t"
region = "cn-north-4"
project_id = "0605767a3300d5762fb7c0186d8bfc2b"
vpcep_endpoint = "http://127.0.0.1:1"
iam_endpoint = "http://127.0.0.1:1"
services = ["4189d3c2-8882-4871-a3c2-d380272eed88"]
ca_file = "ca.pem"

[auth]
method = "aksk"
access_key_file = "ak"
secret_key_file = "sk"

[poll]
interval = "30s"
jitter = "3s"
request_timeout = "10s"
max_in_flight = 8
max_requests_per_second = 10
max_retries = 4

[policy]
dir = "policies"
on_no_match = "leave-pending"

[audit]
path = "audit.jsonl"
fsync = true

[http]
listen = "127.0.0.1:9464"

[log]
format = "text"
level = "info"
"#,
    )
    .expect("base config is TOML")
}

/// Every leaf key of [`base_config`] as (section, index in an array of tables, key).
const KEYS: &[(&str, &str)] = &[
    ("target", "name"),
    ("target", "region"),
    ("target", "project_id"),
    ("target", "vpcep_endpoint"),
    ("target", "iam_endpoint"),
    ("target", "services"),
    ("target", "ca_file"),
    ("auth", "method"),
    ("auth", "access_key_file"),
    ("auth", "secret_key_file"),
    ("poll", "interval"),
    ("poll", "jitter"),
    ("poll", "request_timeout"),
    ("poll", "max_in_flight"),
    ("poll", "max_requests_per_second"),
    ("poll", "max_retries"),
    ("policy", "dir"),
    ("policy", "on_no_match"),
    ("audit", "path"),
    ("audit", "fsync"),
    ("http", "listen"),
    ("log", "format"),
    ("log", "level"),
];

fn toml_value() -> impl Strategy<Value = toml::Value> {
    let leaf = prop_oneof![
        any::<String>().prop_map(toml::Value::String),
        "[0-9]{1,4}(ms|s|m|h|d)?|-?[0-9]{1,20}|https?://[a-z0-9.:]{0,20}|[a-z-]{0,12}"
            .prop_map(toml::Value::String),
        any::<i64>().prop_map(toml::Value::Integer),
        (-5i64..70_000).prop_map(toml::Value::Integer),
        any::<f64>().prop_map(toml::Value::Float),
        any::<bool>().prop_map(toml::Value::Boolean),
        Just(toml::Value::Datetime(
            "1979-05-27T07:32:00Z".parse().expect("datetime")
        )),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

fn set_key(cfg: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    let slot = match cfg.get_mut(section) {
        Some(toml::Value::Array(a)) => a.first_mut().and_then(toml::Value::as_table_mut),
        Some(toml::Value::Table(t)) => Some(t),
        _ => None,
    };
    if let Some(t) = slot {
        t.insert(key.to_owned(), value);
    }
}

fn check_rejection(e: &ConfigError, keys: &[&str]) -> Result<(), TestCaseError> {
    let msg = format!("{e}");
    prop_assert!(msg.contains("/cfg/config.toml"), "names the file: {msg}");
    match e {
        ConfigError::Invalid { key, .. } => {
            prop_assert!(!key.is_empty(), "{msg}");
            prop_assert!(msg.contains(key.as_str()), "{msg}");
        }
        _ => prop_assert!(
            keys.iter().any(|k| msg.contains(k)),
            "names one of {keys:?}: {msg}"
        ),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn config_any_value_for_a_known_key_never_panics_and_names_the_key(
        picks in prop::collection::vec((0..KEYS.len(), toml_value()), 1..3)
    ) {
        let mut cfg = base_config();
        let mut keys = Vec::new();
        for (i, v) in picks {
            let (section, key) = KEYS[i];
            set_key(&mut cfg, section, key, v);
            keys.push(key);
        }
        let Ok(text) = toml::to_string(&cfg) else { return Ok(()) };
        if let Err(e) = Config::parse(&text, Path::new("/cfg/config.toml")) {
            // A changed value may make another key wrong (a method that needs other keys):
            // the rejection must name one of the changed keys or another config key.
            keys.extend(KEYS.iter().map(|(_, k)| *k));
            keys.extend(["target", "auth", "poll", "policy", "audit", "http", "log"]);
            check_rejection(&e, &keys)?;
        }
    }

    #[test]
    fn config_unknown_keys_are_rejected_by_name(
        section in prop::sample::select(vec!["", "target", "auth", "poll", "policy", "audit", "http", "log"]),
        key in "zz[a-z_]{1,10}",
        v in toml_value(),
    ) {
        let mut cfg = base_config();
        if section.is_empty() {
            cfg.insert(key.clone(), v);
        } else {
            set_key(&mut cfg, section, &key, v);
        }
        let Ok(text) = toml::to_string(&cfg) else { return Ok(()) };
        let e = Config::parse(&text, Path::new("/cfg/config.toml"))
            .expect_err("unknown keys are errors");
        check_rejection(&e, &[key.as_str()])?;
    }

    #[test]
    fn config_arbitrary_text_never_panics(text in any::<String>()) {
        let _ = Config::parse(&text, Path::new("/cfg/config.toml"));
    }

    #[test]
    fn config_arbitrary_toml_lines_never_panic(
        lines in prop::collection::vec(
            "\\[{1,2}[a-z]{1,8}\\]{1,2}|[a-z_]{1,16} = (\"[^\"\\\\]{0,12}\"|-?[0-9]{1,20}|true|\\[\\]|\\{\\})",
            0..20,
        )
    ) {
        let _ = Config::parse(&lines.join("\n"), Path::new("/cfg/config.toml"));
    }
}
