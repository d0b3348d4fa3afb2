//! Shared helpers for the integration tests: the simulator on a free loopback port, a
//! plain-HTTP client, hand-signed requests, seeds, and a timeout around every wait.

#![allow(dead_code)] // each test file uses a different subset

use std::future::Future;
use std::time::Duration;
use vpcep_approver::cloud::signer;
use vpcep_approver::sim::{Seed, SeedConnection, SeedService, SimConfig, Simulator};

/// Upper bound for any single wait in a test, so a hang fails fast.
pub const WAIT: Duration = Duration::from_secs(20);

/// Project id used by tests that sign requests.
pub const PROJECT: &str = "0605767a3300d5762fb7c0186d8bfc2b";

/// Starts the simulator on `127.0.0.1:0`.
pub async fn spawn_sim(cfg: SimConfig) -> Simulator {
    let addr = "127.0.0.1:0".parse().expect("loopback address");
    within(Simulator::start(addr, cfg))
        .await
        .expect("simulator starts")
}

/// Awaits `f`, failing the test after [`WAIT`].
pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .expect("timed out waiting")
}

/// A reqwest client for plain HTTP to loopback (installs the ring provider reqwest needs).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .expect("reqwest client")
}

/// One service with `n` pending connections created a second apart (oldest first), ids
/// `e00000`…, domains `d0`…`d4` in turn, marker ids `1000 + i`.
pub fn seed_many(service_id: &str, n: usize) -> Seed {
    let base = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    let connections = (0..n)
        .map(|i| SeedConnection {
            id: Some(format!("e{i:05}")),
            domain_id: Some(format!("d{}", i % 5)),
            marker_id: Some(1000 + i as i64),
            created_at: Some(
                (base + chrono::Duration::seconds(i as i64))
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
            ..SeedConnection::default()
        })
        .collect();
    Seed {
        services: vec![SeedService {
            id: Some(service_id.to_owned()),
            service_name: Some(format!("cn-north-4.bulk.{service_id}")),
            connections,
            ..SeedService::default()
        }],
    }
}

/// The sample seed shipped in `examples/seed.json`.
pub fn example_seed() -> Seed {
    Seed::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/seed.json"))
        .expect("examples/seed.json")
}

/// A request to sign by hand (tests of the simulator's own verification).
#[derive(Debug, Clone)]
pub struct Signed {
    /// Full URL to send, with the canonical query string.
    pub url: String,
    /// Headers to send, `Authorization` included.
    pub headers: Vec<(String, String)>,
}

/// Signs `method base_url+path?query` with `body` the way the official SDK does: `Host`,
/// `X-Sdk-Date` (now), `Content-Type: application/json`, `X-Project-Id: project`, plus
/// `extra` headers, all signed.
pub fn sign(
    method: &str,
    base_url: &str,
    path: &str,
    query: &[(&str, &str)],
    body: &[u8],
    (ak, sk): (&str, &str),
    extra: &[(&str, &str)],
) -> Signed {
    let host = base_url
        .strip_prefix("http://")
        .expect("http base url")
        .to_owned();
    let mut headers: Vec<(String, String)> = vec![
        ("Host".into(), host),
        (
            "X-Sdk-Date".into(),
            signer::format_sdk_date(chrono::Utc::now()),
        ),
        ("Content-Type".into(), "application/json".into()),
        ("X-Project-Id".into(), PROJECT.into()),
    ];
    for (k, v) in extra {
        if let Some(h) = headers.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(k)) {
            h.1 = (*v).to_owned();
        } else {
            headers.push(((*k).to_owned(), (*v).to_owned()));
        }
    }
    let q: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let s = signer::sign(
        ak,
        sk.as_bytes(),
        &signer::Request {
            method,
            path,
            query: &q,
            headers: &headers,
            body,
        },
    );
    headers.push(("Authorization".into(), s.authorization));
    let url = if s.query.is_empty() {
        format!("{base_url}{path}")
    } else {
        format!("{base_url}{path}?{}", s.query)
    };
    Signed { url, headers }
}

/// Sends a request with exactly these headers and body.
pub async fn send(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client.request(method, url).body(body);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    within(req.send()).await.expect("request sent")
}
