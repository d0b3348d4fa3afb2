//! The `vpcep-approver` binary: parse the command line, run the command, map the result to
//! an exit code. Everything else lives in the library.

use clap::Parser;
use std::process::ExitCode;
use vpcep_approver::{cli::Cli, commands};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("vpcep-approver: error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}
