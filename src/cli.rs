//! The command-line interface (README "Commands"). Parsing only; [`crate::commands`] runs them.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Approves or rejects Huawei Cloud VPC endpoint connections by Cedar policy.
#[derive(Debug, Parser)]
#[command(name = "vpcep-approver", version, about, propagate_version = true)]
pub struct Cli {
    /// Config file [default: $VPCEP_APPROVER_CONFIG, else /etc/vpcep-approver/config.toml]
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run {
        /// One poll cycle over all targets, then exit.
        #[arg(long)]
        once: bool,
        /// Decide and audit, never send an action.
        #[arg(long)]
        dry_run: bool,
    },
    /// Validate the config and the policy directory without contacting the cloud.
    Check,
    /// Decide one hypothetical connection with the configured policies.
    Eval(EvalArgs),
    /// Run policy test cases (default: every *.toml under <policy dir>/tests/).
    Test {
        /// Test files.
        files: Vec<PathBuf>,
    },
    /// Audit log tools.
    Audit {
        /// The audit subcommand.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// GET the daemon's own /healthz; exit 0 on 200, 1 otherwise, within 3 s.
    Healthcheck {
        /// Full URL of /healthz [default: from `[http] listen` in the config]
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// Serve the built-in VPCEP and IAM simulator until stopped.
    #[cfg(feature = "sim")]
    Simulate(SimulateArgs),
    /// Decide sample connections on an in-process simulator; needs no config.
    #[cfg(feature = "sim")]
    Demo {
        /// Use this policy directory instead of the embedded examples.
        #[arg(long, value_name = "DIR")]
        policies: Option<PathBuf>,
    },
}

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify that every line is a record and the hash chain is unbroken across the
    /// files; report every break and go on. Exit 1 if there is any.
    Verify {
        /// The `prev` the first line must carry instead of 64 zeros: the hash of the last
        /// line of the files rotated away before the first one given.
        #[arg(long, value_name = "HASH", value_parser = parse_hash)]
        from: Option<String>,
        /// Ed25519 public key (SPKI PEM, `openssl pkey -pubout`) every checkpoint's
        /// signature must verify with; the records after the last checkpoint are reported
        /// as an unsigned tail.
        #[arg(long, value_name = "PUBKEY.pem")]
        key: Option<PathBuf>,
        /// Audit files, oldest first.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// A line hash: 64 hex digits (taken in lowercase, as the audit log writes them).
fn parse_hash(s: &str) -> Result<String, String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err("expected 64 hex digits (the `prev` of the first line)".to_owned())
    }
}

/// `eval` flags.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Consumer account (domain) id.
    #[arg(long)]
    pub domain_id: String,
    /// Endpoint description.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Endpoint service id.
    #[arg(long, default_value = "00000000-0000-0000-0000-000000000000")]
    pub service_id: String,
    /// Endpoint service name.
    #[arg(long, default_value = "")]
    pub service_name: String,
    /// VPC endpoint id.
    #[arg(long, default_value = "00000000-0000-0000-0000-000000000000")]
    pub endpoint_id: String,
    /// Marker (packet) id.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub marker_id: i64,
    /// Creation time, RFC 3339 [default: now].
    #[arg(long, value_name = "RFC3339")]
    pub created_at: Option<String>,
    /// Accepted connections of this account on this service.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub accepted_from_domain: i64,
    /// Pending connections of this account on this service, this one included.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub pending_from_domain: i64,
    /// Target whose region, project and name go into the request [default: the first].
    #[arg(long)]
    pub target: Option<String>,
    /// Print a decision record as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `simulate` flags.
#[cfg(feature = "sim")]
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Address to listen on (port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Seed file: services and connections as JSON.
    #[arg(long, value_name = "FILE")]
    pub seed: Option<PathBuf>,
    /// Latency added to every request.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub latency: std::time::Duration,
    /// Share of requests answered 429/500/503 (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Access key the simulator accepts.
    #[arg(long, requires = "sk", env = "VPCEP_SIM_AK")]
    pub ak: Option<String>,
    /// Secret key of --ak.
    #[arg(long, requires = "ak", env = "VPCEP_SIM_SK", hide_env_values = true)]
    pub sk: Option<String>,
    /// IAM user the simulator accepts for password tokens, as DOMAIN/USER.
    #[arg(long, requires = "password", value_name = "DOMAIN/USER")]
    pub user: Option<String>,
    /// Password of --user.
    #[arg(
        long,
        requires = "user",
        env = "VPCEP_SIM_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// Lifetime of issued IAM tokens.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
    pub token_lifetime: std::time::Duration,
    /// Answer only for this project id (and the --agency projects).
    #[arg(long)]
    pub project_id: Option<String>,
    /// Lifetime of the temporary keys of the metadata and pod-identity routes, and the
    /// most an agency's keys get whatever `duration_seconds` asks.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "24h", value_name = "DUR")]
    pub credential_lifetime: std::time::Duration,
    /// ECS metadata service: normal, token-unsupported (the token PUT fails, the
    /// securitykey GET needs no session token) or no-agency (no agency attached).
    #[arg(long, value_parser = parse_metadata_mode, default_value = "normal", value_name = "MODE")]
    pub metadata_mode: crate::sim::MetadataMode,
    /// Status of the token PUT in token-unsupported mode: 404, 405 or 503.
    #[arg(long, value_parser = ["404", "405", "503"], default_value = "404", value_name = "STATUS")]
    pub metadata_token_status: String,
    /// Status of the securitykey GET in no-agency mode: 401 (saying "Please configure
    /// Cloud Service Agency first") or 404.
    #[arg(long, value_parser = ["401", "404"], default_value = "401", value_name = "STATUS")]
    pub metadata_no_agency_status: String,
    /// The CCE pod-identity token accepted in `Authorization` [default: the built-in test
    /// token]
    #[arg(
        long,
        env = "VPCEP_SIM_POD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub pod_token: Option<String>,
    /// Path of the pod-identity route.
    #[arg(long, default_value = crate::sim::DEFAULT_POD_IDENTITY_PATH, value_name = "PATH")]
    pub pod_identity_path: String,
    /// Spelling of the pod-identity answer: credential, credentials-snake-case or
    /// credentials-camel-case.
    #[arg(long, value_parser = parse_pod_body, default_value = "credential", value_name = "STYLE")]
    pub pod_identity_body: crate::sim::PodBody,
    /// An agency assume_role may name, as NAME:DOMAIN_NAME:DOMAIN_ID:PROJECT_ID[,PROJECT_ID…]
    /// (one domain field may be empty); repeat for more. Given, they replace the built-in
    /// example agency.
    #[arg(long = "agency", value_parser = parse_agency, value_name = "SPEC")]
    pub agencies: Vec<crate::sim::SimAgency>,
}

#[cfg(feature = "sim")]
fn parse_metadata_mode(s: &str) -> Result<crate::sim::MetadataMode, String> {
    s.parse()
}

#[cfg(feature = "sim")]
fn parse_pod_body(s: &str) -> Result<crate::sim::PodBody, String> {
    s.parse()
}

#[cfg(feature = "sim")]
fn parse_agency(s: &str) -> Result<crate::sim::SimAgency, String> {
    crate::sim::SimAgency::parse(s)
}
