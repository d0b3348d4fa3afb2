//! vpcep-approver: approves or rejects Huawei Cloud VPC endpoint connections by Cedar
//! policy and writes a hash-chained audit record for every decision.
//!
//! Modules, one concern each:
//! - [`cli`]: the command-line interface (clap definitions).
//! - [`commands`]: one function per subcommand, returning an exit code.
//! - [`config`]: TOML configuration validated into a typed [`config::Config`]; secrets.
//! - [`decision`]: verdicts, actions, outcomes and the facts a decision looks at.
//! - [`policy`]: loading the policy directory, building Cedar requests, verdicts, tests.
//! - [`audit`]: the JSON Lines audit writer (hash chain, fsync, reopen) and its verifier.
//! - [`cloud`]: AK/SK signing, IAM tokens, the VPCEP client, retries and rate limits.
//! - [`engine`]: one poll cycle: list, decide, record, act, record.
//! - [`daemon`]: the long-running loop, signals, reload, shutdown, systemd notify.
//! - [`health`]: what `/healthz` and `/readyz` report.
//! - [`http`]: `/healthz`, `/readyz` and `/metrics`.
//! - [`healthcheck`]: the `healthcheck` probe for container `HEALTHCHECK`s.
//! - [`exit`]: exit codes and the error a command ends with.
//! - [`metrics`]: the Prometheus registry.
//! - [`logging`]: validated log levels and a log format no API answer can forge.
//! - [`mem`]: returning freed heap to the operating system between cycles.
//! - [`progress`]: when the daemon last made progress (`/healthz`, the watchdog).
//! - [`sim`]: the built-in VPCEP and IAM simulator used by `simulate`, `demo` and tests
//!   (cargo feature `sim`, on by default).
//! - [`demo`]: the self-contained demonstration (feature `sim`).
//! - [`clock`]: wall-clock time behind a trait.
//! - [`stop`]: the two-step stop signal (no new requests; give up those on the wire).

pub mod audit;
pub mod cli;
pub mod clock;
pub mod cloud;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod decision;
#[cfg(feature = "sim")]
pub mod demo;
pub mod engine;
pub mod exit;
pub mod health;
pub mod healthcheck;
pub mod http;
pub mod log_filter;
pub mod logging;
pub mod mem;
pub mod metrics;
pub mod policy;
pub mod progress;
#[cfg(feature = "sim")]
pub mod sim;
pub mod stop;
#[cfg(test)]
mod test_support;
