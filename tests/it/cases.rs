//! Helpers shared by the tests of the client on the simulator (`client`, `hostile`): one
//! service of seeded pending connections, and its listing within [`WAIT`](crate::support::WAIT).

use crate::support::{seed_many, spawn_sim, within};
use vpcep_approver::cloud::client::TargetClient;
use vpcep_approver::cloud::error::ApiError;
use vpcep_approver::cloud::types::WireConnection;
use vpcep_approver::sim::{SimConfig, Simulator};

/// The one service the seeds of [`sim_with`] hold.
pub const SVC: &str = "4189d3c2-8882-4871-a3c2-d380272eed88";

/// The simulator with `n` pending connections of [`SVC`] (`seed_many`), `tweak`ed first.
pub async fn sim_with(n: usize, tweak: impl FnOnce(&mut SimConfig)) -> Simulator {
    let mut cfg = SimConfig {
        seed: seed_many(SVC, n),
        ..SimConfig::default()
    };
    tweak(&mut cfg);
    spawn_sim(cfg).await
}

/// The pending connections of [`SVC`] as `t` lists them.
pub async fn pending(t: &TargetClient) -> Result<Vec<WireConnection>, ApiError> {
    within(t.list_connections(SVC, "pendingAcceptance")).await
}
