//! One function per subcommand. Each returns the process exit code, or a [`Failure`]
//! carrying the code (78 for bad configuration or policies, 1 for runtime failures) and
//! an error that names the file, key, policy or URL it is about.

use crate::cli::{AuditCommand, Cli, Command, EvalArgs};
use crate::config::{Config, DEFAULT_PATH, LogConfig};
use crate::decision::{ConnectionFacts, Subject};
use crate::exit::{CmdResult, EXIT_FAILURE, Failure};
use crate::policy::Policies;
use anyhow::{Context, anyhow};
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

/// Runs the parsed command line.
pub fn run(cli: Cli) -> CmdResult {
    let config_path = config_path(cli.config.as_deref());
    match cli.command {
        Command::Check => check(&config_path),
        Command::Eval(args) => eval(&config_path, &args),
        Command::Test { files } => test(&config_path, &files),
        Command::Audit {
            command: AuditCommand::Verify { from, key, files },
        } => audit_verify(&files, from, key.as_deref()),
        Command::Run { once, dry_run } => run_daemon(&config_path, once, dry_run),
        Command::Healthcheck { url } => healthcheck(&config_path, url.as_deref()),
        #[cfg(feature = "sim")]
        Command::Simulate(args) => simulate(args),
        #[cfg(feature = "sim")]
        Command::Demo { policies } => demo(policies),
    }
}

/// `-c`, else `$VPCEP_APPROVER_CONFIG`, else the default path.
pub fn config_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_owned();
    }
    match std::env::var_os("VPCEP_APPROVER_CONFIG") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

/// Sets up logging to stderr (`RUST_LOG` overrides `log.level`). An invalid `RUST_LOG` or
/// level is a configuration error (exit 78) that names it.
pub fn init_logging(log: &LogConfig) -> Result<(), Failure> {
    crate::logging::init(log).map_err(Failure::config)
}

fn load_config(path: &Path) -> Result<Config, Failure> {
    Config::load(path).map_err(Failure::config)
}

fn load_policies(cfg: &Config) -> Result<Policies, Failure> {
    Policies::load(&cfg.policy.dir).map_err(|e| {
        Failure::config(anyhow!(e).context(format!(
            "loading policies from {}",
            cfg.policy.dir.display()
        )))
    })
}

/// Text at `warn`: the logging of `simulate` and `demo`, whose output is their own.
#[cfg(feature = "sim")]
fn quiet_logging() -> LogConfig {
    LogConfig {
        format: crate::config::LogFormat::Text,
        level: "warn".into(),
    }
}

#[cfg(feature = "sim")]
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(Failure::runtime)
}

fn check(path: &Path) -> CmdResult {
    let cfg = load_config(path)?;
    let policies = load_policies(&cfg)?;
    for t in &cfg.targets {
        if let Some(ca) = &t.ca_file {
            std::fs::metadata(ca)
                .with_context(|| format!("target {}: ca_file {}", t.name, ca.display()))
                .map_err(Failure::config)?;
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "config {}: ok", cfg.path.display());
    for t in &cfg.targets {
        let services = match &t.services {
            Some(s) => s.join(", "),
            None => "every available service with approval enabled".into(),
        };
        let _ = writeln!(
            out,
            "target {}: region {}, project {}, vpcep {}, iam {}, services: {}",
            t.name, t.region, t.project_id, t.vpcep_endpoint, t.iam_endpoint, services
        );
    }
    let _ = writeln!(
        out,
        "auth: {}: {} (nothing is read or fetched before `run`)",
        cfg.auth.method(),
        cfg.auth.describe()
    );
    for t in &cfg.targets {
        let via = match &t.agency {
            None => "the [auth] identity".to_owned(),
            Some(a) => format!(
                "{a}: temporary keys for {} from {}/v3.0/OS-CREDENTIAL/securitytokens, asked with the [auth] identity and refreshed before they expire",
                humantime::format_duration(a.duration),
                t.iam_endpoint
            ),
        };
        let _ = writeln!(out, "target {} credentials: {via}", t.name);
    }
    let _ = writeln!(
        out,
        "policy dir {}: {} policies{}",
        cfg.policy.dir.display(),
        policies.policy_ids().len(),
        if policies.has_schema() {
            ", strictly validated against schema.cedarschema"
        } else {
            ", no schema"
        }
    );
    for id in policies.policy_ids() {
        let _ = writeln!(out, "  policy {id}");
    }
    let _ = writeln!(out, "policy version: {}", policies.version());
    if let Some(source) = &cfg.audit.signing_key_file {
        let _ = writeln!(out, "{}", check_signing_key(source)?);
    }
    Ok(0)
}

/// `[audit] signing_key_file` must load (README "Audit log"); a path with a `${VAR}` that
/// is not set here (`CREDENTIALS_DIRECTORY` exists only inside the service) is said so,
/// not failed.
fn check_signing_key(source: &crate::config::SecretSource) -> Result<String, Failure> {
    use crate::config::SecretSource;
    if let SecretSource::File { template, .. } = source {
        let unset = std::cell::RefCell::new(Vec::new());
        let _ = crate::config::expand_vars(template, |v| {
            let value = std::env::var(v).ok();
            if value.is_none() {
                unset.borrow_mut().push(v.to_owned());
            }
            value
        });
        if let Some(var) = unset.borrow().first() {
            return Ok(format!(
                "audit signing key {template}: not checked, environment variable {var} is not \
                 set here"
            ));
        }
    }
    let key = crate::audit::SigningKey::load(source)
        .map_err(|e| Failure::config(anyhow!(e).context("[audit] signing_key_file")))?;
    Ok(format!(
        "audit signing key {}: ok, Ed25519, key id {}",
        key.path().display(),
        key.key_id()
    ))
}

fn eval_facts(cfg: &Config, a: &EvalArgs) -> Result<ConnectionFacts, Failure> {
    let target = match &a.target {
        Some(name) => cfg
            .targets
            .iter()
            .find(|t| &t.name == name)
            .ok_or_else(|| {
                Failure::usage(anyhow!(
                    "--target {name:?}: no such target in {}",
                    cfg.path.display()
                ))
            })?,
        None => &cfg.targets[0],
    };
    let now = chrono::Utc::now();
    let created_at = match &a.created_at {
        None => now,
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|e| {
                Failure::usage(anyhow!("--created-at {s:?} is not an RFC 3339 time: {e}"))
            })?
            .with_timezone(&chrono::Utc),
    };
    Ok(ConnectionFacts {
        subject: Subject {
            target: target.name.clone(),
            project_id: target.project_id.clone(),
            service_id: a.service_id.clone(),
            service_name: a.service_name.clone(),
            endpoint_id: a.endpoint_id.clone(),
            domain_id: a.domain_id.clone(),
            description: a.description.clone(),
            marker_id: a.marker_id,
            created_at: crate::clock::format_secs(created_at),
        },
        region: target.region.clone(),
        created_at,
        now,
        accepted_from_domain: a.accepted_from_domain,
        pending_from_domain: a.pending_from_domain,
    })
}

fn eval(path: &Path, a: &EvalArgs) -> CmdResult {
    let cfg = load_config(path)?;
    let policies = load_policies(&cfg)?;
    let facts = eval_facts(&cfg, a)?;
    let d = policies.decide(&facts, cfg.policy.on_no_match);
    let mut out = std::io::stdout().lock();
    if a.json {
        use crate::engine::plan::decision_record;
        let rec = decision_record(
            uuid::Uuid::now_v7().to_string(),
            facts.subject.clone(),
            &d,
            policies.version(),
            true,
        );
        #[derive(serde::Serialize)]
        struct EvalJson<'a> {
            kind: &'static str,
            #[serde(flatten)]
            rec: &'a crate::audit::DecisionRecord,
        }
        let line = serde_json::to_string(&EvalJson {
            kind: "decision",
            rec: &rec,
        })
        .context("encoding the decision")
        .map_err(Failure::runtime)?;
        let _ = writeln!(out, "{line}");
    } else {
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.iter()
                    .map(|s| serde_json::to_string(s).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let _ = writeln!(out, "verdict: {}", d.verdict);
        let _ = writeln!(out, "action: {}", d.action);
        let _ = writeln!(
            out,
            "policies: {}",
            if d.policies.is_empty() {
                "-".into()
            } else {
                d.policies.join(", ")
            }
        );
        let _ = writeln!(out, "reasons: {}", list(&d.reasons));
        let _ = writeln!(out, "errors: {}", list(&d.errors));
    }
    Ok(0)
}

fn test(path: &Path, files: &[PathBuf]) -> CmdResult {
    let cfg = load_config(path)?;
    let policies = load_policies(&cfg)?;
    let files = if files.is_empty() {
        crate::policy::default_test_files(&cfg.policy.dir)
    } else {
        files.to_vec()
    };
    if files.is_empty() {
        return Err(Failure::config(anyhow!(
            "no test files: none given and no *.toml under {}",
            cfg.policy.dir.join("tests").display()
        )));
    }
    let mut out = std::io::stdout().lock();
    let summary = crate::policy::run_tests(
        &policies,
        &files,
        cfg.policy.on_no_match,
        chrono::Utc::now(),
        &mut out,
    )
    .map_err(Failure::config)?;
    Ok(if summary.failed == 0 { 0 } else { EXIT_FAILURE })
}

fn audit_verify(files: &[PathBuf], from: Option<String>, key: Option<&Path>) -> CmdResult {
    let key = key
        .map(crate::audit::VerifyingKey::from_file)
        .transpose()
        .map_err(Failure::runtime)?;
    let opts = crate::audit::VerifyOptions { from, key };
    let mut out = std::io::stdout().lock();
    let report =
        crate::audit::verify_files_with(files, &opts, &mut out).map_err(Failure::runtime)?;
    Ok(if report.is_ok() { 0 } else { EXIT_FAILURE })
}

fn healthcheck(path: &Path, url: Option<&str>) -> CmdResult {
    use crate::healthcheck::{DEADLINE, parse_url, probe, url_for_listen};
    let url = match url {
        // Every way of not getting a 200 is exit 1 (README "Commands"): a container
        // HEALTHCHECK reads 1 as unhealthy and reserves 2.
        Some(text) => parse_url(text).map_err(|m| Failure::runtime(anyhow!(m)))?,
        None => {
            let cfg = load_config(path).map_err(|f| Failure::runtime(f.error))?;
            let http = cfg.http.ok_or_else(|| {
                Failure::runtime(anyhow!(
                    "{}: no [http] listen, so there is no /healthz to probe (or give --url)",
                    cfg.path.display()
                ))
            })?;
            url_for_listen(http.listen)
        }
    };
    match probe(&url, DEADLINE) {
        Ok(200) => {
            println!("ok: {url} answered 200");
            Ok(0)
        }
        Ok(code) => {
            println!("unhealthy: {url} answered {code}");
            Ok(EXIT_FAILURE)
        }
        Err(e) => Err(Failure::runtime(anyhow!(e))),
    }
}

fn run_daemon(path: &Path, once: bool, dry_run: bool) -> CmdResult {
    let cfg = load_config(path)?;
    init_logging(&cfg.log)?;
    // One thread: the daemon waits on the network almost all the time, and a single
    // thread wakes less (idle CPU) and needs less memory than a work-stealing pool. File
    // syncs run on the blocking pool, so they never stall it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(Failure::runtime)?;
    rt.block_on(async {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        crate::daemon::signals::forward(tx).map_err(Failure::runtime)?;
        let opts = crate::daemon::RunOptions { once, dry_run };
        crate::daemon::run(cfg, opts, CancellationToken::new(), rx).await
    })
}

#[cfg(feature = "sim")]
fn simulate(a: crate::cli::SimulateArgs) -> CmdResult {
    init_logging(&quiet_logging())?;
    if !(0.0..=1.0).contains(&a.fault_rate) {
        return Err(Failure::usage(anyhow!(
            "--fault-rate {} is not between 0 and 1",
            a.fault_rate
        )));
    }
    let mut cfg = crate::sim::SimConfig {
        latency: a.latency,
        fault_rate: a.fault_rate,
        project_id: a.project_id,
        token_lifetime: a.token_lifetime,
        credential_lifetime: a.credential_lifetime,
        metadata: crate::sim::MetadataSettings {
            mode: a.metadata_mode,
            // Both are restricted to valid statuses by clap.
            token_unsupported_status: a.metadata_token_status.parse().unwrap_or(404),
            no_agency_status: a.metadata_no_agency_status.parse().unwrap_or(401),
        },
        ..crate::sim::SimConfig::default()
    };
    cfg.pod_identity.path = a.pod_identity_path;
    cfg.pod_identity.body = a.pod_identity_body;
    if let Some(token) = a.pod_token {
        cfg.pod_identity.token = token;
    }
    if !a.agencies.is_empty() {
        cfg.agencies = a.agencies;
    }
    cfg.keyless()
        .validate()
        .map_err(|e| Failure::usage(anyhow!("invalid simulator settings: {e}")))?;
    if let Some(seed) = &a.seed {
        cfg.seed = crate::sim::Seed::from_file(seed)
            .with_context(|| format!("reading seed file {}", seed.display()))
            .map_err(Failure::config)?;
    }
    if let (Some(ak), Some(sk)) = (a.ak, a.sk) {
        cfg.credentials = vec![(ak, sk)];
    }
    if let (Some(user), Some(password)) = (a.user, a.password) {
        let (domain, name) = user
            .split_once('/')
            .ok_or_else(|| Failure::usage(anyhow!("--user {user:?} must be DOMAIN/USER")))?;
        cfg.users = vec![crate::sim::SimUser {
            domain_name: domain.to_owned(),
            user_name: name.to_owned(),
            password,
        }];
    }
    let rt = runtime()?;
    rt.block_on(crate::sim::run_simulate(a.listen, cfg))
        .map_err(Failure::runtime)?;
    Ok(0)
}

#[cfg(feature = "sim")]
fn demo(policies: Option<PathBuf>) -> CmdResult {
    init_logging(&quiet_logging())?;
    let rt = runtime()?;
    rt.block_on(crate::demo::run(policies.as_deref()))
}
