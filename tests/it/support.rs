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
        services: vec![SeedService::named(
            service_id,
            format!("cn-north-4.bulk.{service_id}"),
            connections,
        )],
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

/// Partners are accepted, blocked accounts rejected; nothing else (no quotas, no age).
pub fn simple_policies(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["schema.cedarschema", "entities.json"] {
        std::fs::copy(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("policies")
                .join(f),
            dir.path().join(f),
        )
        .expect("copy");
    }
    std::fs::write(
        dir.path().join("policies.cedar"),
        format!(
            r#"@id("allow-partners")
permit (principal in Vpcep::AccountGroup::"partners", action, resource);
@id("forbid-blocked")
forbid (principal in Vpcep::AccountGroup::"blocked", action, resource);
{extra}"#
        ),
    )
    .expect("write");
    dir
}

/// A config for one target (`sim`, project [`PROJECT`]) at `url`; `poll` lines come
/// first, then the test defaults (2 s timeout, no rate limit) for keys they do not set.
pub fn target_config(url: &str, poll: &str) -> vpcep_approver::config::Config {
    let mut poll = poll.to_owned();
    for (key, value) in [
        ("request_timeout", "\"2s\""),
        ("max_requests_per_second", "0"),
    ] {
        if !poll.lines().any(|l| l.starts_with(key)) {
            poll.push_str(&format!("{key} = {value}\n"));
        }
    }
    let text = format!(
        "[[target]]\nname = \"sim\"\nregion = \"cn-north-4\"\nproject_id = \"{PROJECT}\"\n\
         vpcep_endpoint = \"{url}\"\niam_endpoint = \"{url}\"\n[poll]\n{poll}"
    );
    vpcep_approver::config::Config::parse(&text, std::path::Path::new("/nonexistent/config.toml"))
        .expect("test config is valid")
}

/// What an [`EngineRig`] is built with.
pub struct RigSpec {
    /// The policy set (default: the shipped examples).
    pub policies: Option<vpcep_approver::policy::Policies>,
    /// Never send an action.
    pub dry_run: bool,
    /// What `no-match` does.
    pub on_no_match: vpcep_approver::decision::OnNoMatch,
    /// `[poll]` lines of the client's config.
    pub poll: String,
    /// Audit path (default: `audit.jsonl` in the rig's directory).
    pub audit: Option<vpcep_approver::config::AuditPath>,
    /// fsync the audit log.
    pub fsync: bool,
}

impl Default for RigSpec {
    fn default() -> Self {
        RigSpec {
            policies: None,
            dry_run: false,
            on_no_match: vpcep_approver::decision::OnNoMatch::LeavePending,
            poll: "max_retries = 0\nmax_in_flight = 8\n".into(),
            audit: None,
            fsync: false,
        }
    }
}

/// The simulator, the real client (default AK/SK), an engine and an audit file.
pub struct EngineRig {
    pub sim: Simulator,
    pub cloud: vpcep_approver::cloud::client::CloudClient,
    pub engine: vpcep_approver::engine::Engine,
    pub audit: std::path::PathBuf,
    pub dir: tempfile::TempDir,
}

/// Starts the simulator with `sim` and builds the rest by `spec`.
pub async fn engine_rig(sim: SimConfig, spec: RigSpec) -> EngineRig {
    use std::sync::{Arc, Mutex};
    use vpcep_approver::audit::AuditWriter;
    use vpcep_approver::config::AuditPath;
    let sim = spawn_sim(sim).await;
    let cfg = target_config(&sim.base_url(), &spec.poll);
    vpcep_approver::cloud::init_tls();
    let metrics = vpcep_approver::metrics::Metrics::new();
    let cloud = vpcep_approver::cloud::client::CloudClient::new(
        &cfg,
        vpcep_approver::cloud::auth::Credentials::aksk(
            vpcep_approver::sim::DEFAULT_AK,
            vpcep_approver::sim::DEFAULT_SK,
            None,
        ),
        metrics.clone(),
    )
    .expect("cloud builds");
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit.jsonl");
    let writer = AuditWriter::open(
        spec.audit.unwrap_or(AuditPath::File(audit.clone())),
        spec.fsync,
        vpcep_approver::clock::system(),
    )
    .expect("audit");
    let policies = match spec.policies {
        Some(p) => p,
        None => vpcep_approver::policy::Policies::embedded_examples().expect("example policies"),
    };
    let engine = vpcep_approver::engine::Engine::new(
        Arc::new(policies),
        Arc::new(Mutex::new(writer)),
        metrics,
        vpcep_approver::clock::system(),
        vpcep_approver::engine::EngineOptions {
            on_no_match: spec.on_no_match,
            collect_rows: true,
            ..vpcep_approver::engine::EngineOptions::from_config(&cfg, spec.dry_run)
        },
    );
    EngineRig {
        sim,
        cloud,
        engine,
        audit,
        dir,
    }
}

impl EngineRig {
    /// One cycle over every target.
    pub async fn cycle(&self) -> vpcep_approver::engine::CycleReport {
        within(
            self.engine
                .run_cycle(&self.cloud, &vpcep_approver::stop::Stop::new()),
        )
        .await
    }

    /// The audit file's records (the chain verified).
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        audit_lines(&self.audit)
    }

    /// A connection's status in the simulator.
    pub fn status(&self, endpoint: &str) -> String {
        self.sim
            .connection(endpoint)
            .expect("connection exists")
            .status
    }
}

/// Every audit line: exactly one JSON object per line, and the chain verifies.
pub fn audit_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<serde_json::Value> = text
        .split_terminator('\n')
        .map(|l| serde_json::from_str(l).expect("every audit line is one JSON value"))
        .collect();
    if !lines.is_empty() {
        let mut out = Vec::new();
        let report =
            vpcep_approver::audit::verify_files(&[path.to_owned()], &mut out).expect("verify runs");
        assert!(report.is_ok(), "{}", String::from_utf8_lossy(&out));
    }
    lines
}

/// A seed connection of `domain` created `offset_secs` after a time an hour ago (so a
/// smaller offset is older).
pub fn seed_conn(
    id: &str,
    domain: &str,
    description: &str,
    status: &str,
    offset_secs: i64,
) -> SeedConnection {
    let base = chrono::Utc::now() - chrono::Duration::hours(1);
    SeedConnection {
        id: Some(id.to_owned()),
        domain_id: Some(domain.to_owned()),
        description: Some(description.to_owned()),
        status: Some(status.to_owned()),
        created_at: Some(
            (base + chrono::Duration::seconds(offset_secs))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
        ..SeedConnection::default()
    }
}

/// A seed of one service `service_id` (name `payments`) with these connections.
pub fn seed_of(service_id: &str, connections: Vec<SeedConnection>) -> Seed {
    Seed {
        services: vec![SeedService::named(
            service_id,
            "cn-north-4.payments.4189d3c2",
            connections,
        )],
    }
}

// ---------------------------------------------------------------------------------------
// The real binary as a daemon.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Instant;

/// A minimal HTTP/1.0 request to loopback; returns (status, body).
pub fn http(method: &str, url: &str, body: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let Ok(mut s) = std::net::TcpStream::connect(host) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    parse_response(&resp)
}

/// The (status, body) of a raw HTTP response; status 0 when there is no status line.
pub fn parse_response(resp: &str) -> (u16, String) {
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub struct Daemon {
    pub child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Takes `child` (killed on drop, also when it never comes up) and waits until `GET
    /// path` on `port` answers 200; returns it and its base URL.
    pub fn serving(child: Child, port: u16, path: &str) -> (Daemon, String) {
        let d = Daemon { child };
        let base = format!("http://127.0.0.1:{port}");
        wait_for(path, Duration::from_secs(20), || {
            http("GET", &format!("{base}{path}"), "").0 == 200
        });
        (d, base)
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig}");
    }
}

/// Waits for a notify message containing `what`; returns every message seen meanwhile.
pub fn expect_notify(sock: &UnixDatagram, what: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = m.lines().any(|l| l == what);
            seen.push(m);
            if hit {
                return seen;
            }
        }
    }
    panic!("no {what} within {within:?}; saw {seen:?}");
}

pub fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

pub fn metric(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
