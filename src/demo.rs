//! `demo`: the whole product on one machine with no config. Starts the simulator on a free
//! loopback port with sample services and pending connections, runs one real cycle (signed
//! HTTP, Cedar, the audit log) with the embedded example policies, prints what was
//! decided, and verifies the audit chain.

use crate::audit::AuditWriter;
use crate::cloud::auth::Credentials;
use crate::cloud::client::CloudClient;
use crate::config::{
    AuditConfig, AuditPath, Auth, Config, LogConfig, PolicyConfig, Poll, SecretSource, Target,
};
use crate::engine::{Engine, EngineOptions, Row};
use crate::exit::{CmdResult, Failure};
use crate::metrics::Metrics;
use crate::policy::Policies;
use crate::sim::{Seed, SimConfig, Simulator};
use anyhow::{Context, anyhow};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The demo project (also an account in the example entities: our own organisation).
pub const PROJECT_ID: &str = "0605767a3300d5762fb7c0186d8bfc2b";
const PAYMENTS: &str = "4189d3c2-8882-4871-a3c2-d380272eed88";
const INTERNAL: &str = "7f3b9c1e-5d2a-4e8b-9a6c-0b1d2e3f4a5b";
const PUBLIC_DOCS: &str = "2c4e6a80-1b3d-4f5a-8c7e-9d0f1a2b3c4d";
const PARTNER: &str = "6e9dfd51d1124e8d8498dce894923a0d";
const PARTNER_EMEA: &str = "c2a4e8f01b3d4f6a8c0e2b4d6f8a0c1e";
const BLOCKED: &str = "9d8c7b6a5f4e4d3c2b1a0f9e8d7c6b5a";
const STRANGER: &str = "1f2e3d4c5b6a49788796a5b4c3d2e1f0";

/// The sample services and connections: one of each verdict, a quota and an age rule, a
/// hostile description, and a service without approval that must be left alone.
pub fn sample_seed(now: chrono::DateTime<chrono::Utc>) -> Seed {
    let ts = |days: i64| {
        crate::clock::format_secs(now - chrono::Duration::days(days) - chrono::Duration::minutes(5))
    };
    let conn = |id: &str, domain: &str, desc: &str, marker: i64, age_days: i64| {
        serde_json::json!({"id": id, "domain_id": domain, "description": desc,
                           "marker_id": marker, "created_at": ts(age_days)})
    };
    let mut internal = vec![
        conn(
            "8a1f0c52-6d0e-4c21-9b7a-1e2f3a4b5c6d",
            PROJECT_ID,
            "build agents",
            16777511,
            0,
        ),
        conn(
            "9b2e1d63-7e1f-4d32-8c6b-2f3a4b5c6d7e",
            PARTNER,
            "CHG-3000 sixth link",
            16777512,
            0,
        ),
    ];
    for i in 0..5 {
        let mut c = conn(
            &format!("0c3d2e74-8f20-4e43-9d5c-3a4b5c6d7e{i:02}"),
            PARTNER,
            "CHG-1000 earlier link",
            16777400 + i,
            30,
        );
        c["status"] = "accepted".into();
        internal.push(c);
    }
    let seed = serde_json::json!({"services": [
        {"id": PAYMENTS, "service_name": "cn-north-4.payments.4189d3c2", "connections": [
            conn("705290f3-0d00-41f2-aedc-71f09844e879", PARTNER, "CHG-1234 payments link", 16777510, 0),
            conn("1d4e5f60-7a8b-4c9d-8e0f-1a2b3c4d5e6f", PARTNER_EMEA, "CHG-5678 EMEA settlement", 16777513, 1),
            conn("2e5f6071-8b9c-4dae-9f10-2b3c4d5e6f70", BLOCKED, "CHG-9999 totally legit", 422321321312321321, 0),
            conn("3f607182-9cad-4ebf-a021-3c4d5e6f7081", STRANGER, "hello, please accept", 16777514, 0),
            conn("40718293-adbe-4fc0-b132-4d5e6f708192", PARTNER, "CHG-42 <script>alert(1)</script>\n\"quoted\"", 16777515, 0),
            conn("518293a4-becf-40d1-8243-5e6f708192a3", PARTNER, "CHG-2000 forgotten request", 16777516, 10),
            conn("6293a4b5-cfd0-41e2-9354-6f708192a3b4", "", "account id missing in the API answer", 16777517, 0),
        ]},
        {"id": INTERNAL, "service_name": "cn-north-4.internal-tools.7f3b9c1e", "connections": internal},
        {"id": PUBLIC_DOCS, "service_name": "cn-north-4.public-docs.2c4e6a80", "approval_enabled": false,
         "connections": [conn("73a4b5c6-d0e1-42f3-a465-708192a3b4c5", STRANGER, "approval is off here", 16777518, 0)]}
    ]});
    Seed::from_json(&seed.to_string()).unwrap_or_default()
}

fn demo_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("vpcep-approver-demo-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn truncate(s: &str, n: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { '␤' } else { c })
        .collect();
    if clean.chars().count() <= n {
        clean
    } else {
        let mut t: String = clean.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<34} {:<12} {:<12} {:<30} {:<9} {:<8} {:<12} POLICIES",
        "SERVICE", "ENDPOINT", "ACCOUNT", "DESCRIPTION", "VERDICT", "ACTION", "OUTCOME"
    );
    for r in rows {
        let policies = if r.decision.policies.is_empty() {
            if r.decision.errors.is_empty() {
                "-".to_owned()
            } else {
                format!("error: {}", r.decision.errors.join("; "))
            }
        } else {
            r.decision.policies.join(", ")
        };
        println!(
            "{:<34} {:<12} {:<12} {:<30} {:<9} {:<8} {:<12} {}",
            truncate(&r.service, 34),
            truncate(&r.endpoint_id, 12),
            truncate(
                if r.domain_id.is_empty() {
                    "(none)"
                } else {
                    &r.domain_id
                },
                12
            ),
            truncate(&r.description, 30),
            r.decision.verdict.as_str(),
            r.decision.action.as_str(),
            r.outcome.map_or("(pending)", |o| o.as_str()),
            policies
        );
    }
}

/// Runs the demo. `policies`: a policy directory instead of the embedded examples.
pub async fn run(policies: Option<&Path>) -> CmdResult {
    crate::cloud::init_tls();
    let policies = match policies {
        Some(dir) => Policies::load(dir).map_err(|e| {
            Failure::config(anyhow!(e).context(format!("loading policies from {}", dir.display())))
        })?,
        None => Policies::embedded_examples().map_err(|e| {
            Failure::config(anyhow!(e).context("loading the embedded example policies"))
        })?,
    };
    let ak = format!("DEMO{}", random_hex(16)).to_uppercase();
    let sk = random_hex(40);
    let sim = Simulator::start(
        "127.0.0.1:0"
            .parse()
            .map_err(|e| Failure::runtime(anyhow!("{e}")))?,
        SimConfig {
            seed: sample_seed(chrono::Utc::now()),
            credentials: vec![(ak.clone(), sk.clone())],
            project_id: Some(PROJECT_ID.to_owned()),
            ..SimConfig::default()
        },
    )
    .await
    .map_err(|e| Failure::runtime(anyhow!(e).context("starting the simulator")))?;
    let dir = demo_dir().map_err(Failure::runtime)?;
    let audit_path = dir.join("audit.jsonl");
    let cfg = Config {
        path: dir.join("demo.toml"),
        targets: vec![Target {
            name: "demo".into(),
            region: "cn-north-4".into(),
            project_id: PROJECT_ID.into(),
            vpcep_endpoint: sim.base_url(),
            iam_endpoint: sim.base_url(),
            services: None,
            ca_file: None,
            agency: None,
        }],
        auth: Auth::AkSk {
            access_key: SecretSource::Env("HUAWEICLOUD_SDK_AK".into()),
            secret_key: SecretSource::Env("HUAWEICLOUD_SDK_SK".into()),
            security_token: SecretSource::Env("HUAWEICLOUD_SDK_SECURITY_TOKEN".into()),
        },
        poll: Poll {
            max_requests_per_second: 0,
            request_timeout: Duration::from_secs(5),
            ..Poll::default()
        },
        policy: PolicyConfig::at(dir.clone()),
        audit: AuditConfig::at(AuditPath::File(audit_path.clone())),
        http: None,
        log: LogConfig::default(),
    };
    let creds = Credentials::aksk(&ak, &sk, None);
    let metrics = Metrics::new();
    let cloud = CloudClient::new(&cfg, creds, metrics.clone())
        .map_err(|e| Failure::runtime(anyhow!(e).context("setting up the client")))?;
    let clock = crate::clock::system();
    let writer = AuditWriter::open(AuditPath::File(audit_path.clone()), true, clock.clone())
        .map_err(|e| Failure::runtime(anyhow!(e)))?;
    let engine = Engine::new(
        Arc::new(policies),
        Arc::new(Mutex::new(writer)),
        metrics,
        clock,
        EngineOptions {
            collect_rows: true,
            ..EngineOptions::from_config(&cfg, false)
        },
    );
    println!(
        "simulated Huawei Cloud VPCEP + IAM at {} (AK/SK-signed requests)",
        sim.base_url()
    );
    println!(
        "policies: embedded examples, version {}",
        engine.policies().version()
    );
    println!();
    let report = engine.run_cycle(&cloud, &crate::stop::Stop::new()).await;
    let mut rows: Vec<Row> = report.targets.iter().flat_map(|t| t.rows.clone()).collect();
    rows.sort_by(|a, b| (&a.service, &a.endpoint_id).cmp(&(&b.service, &b.endpoint_id)));
    print_table(&rows);
    println!();
    for t in &report.targets {
        println!(
            "target {}: {} services checked, {} pending, {} decisions recorded, {} accepted or rejected, {} not pending, {} failed",
            t.target, t.services_ok, t.pending, t.decisions, t.applied, t.not_pending, t.failed
        );
        for f in &t.failures {
            println!("  failure: {f}");
        }
    }
    let state = sim.state();
    println!(
        "the simulator received {} action calls",
        state.actions.len()
    );
    println!("audit log: {}", audit_path.display());
    let mut out = std::io::stdout().lock();
    let verified = crate::audit::verify_files(std::slice::from_ref(&audit_path), &mut out)
        .map_err(|e| Failure::runtime(anyhow!(e)))?;
    drop(out);
    sim.shutdown().await;
    if verified.first_bad.is_some() || !report.fully_ok() {
        return Err(Failure::runtime(anyhow!(
            "the demo cycle did not complete cleanly"
        )));
    }
    Ok(0)
}

fn random_hex(n: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
        .collect()
}
