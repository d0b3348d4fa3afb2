//! Helpers shared by several test files: for the client on the simulator (`client`,
//! `hostile`) one service of seeded pending connections and its listing within
//! [`WAIT`](crate::support::WAIT); for generated policy directories (`facts`, `slicing`) the
//! request model's schema around their own principals.

use crate::support::{seed_many, spawn_sim, within};
use vpcep_approver::cloud::TargetApi;
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

/// The services and the `connect` action of the request model, as in
/// `policies/schema.cedarschema` (README "Policies").
const SERVICES_AND_CONNECT: &str = r#"  entity ServiceGroup in [ServiceGroup];
  entity EndpointService in [ServiceGroup] {
    name: String, project_id: String, region: String, target: String,
  };
  action connect appliesTo {
    principal: [Account],
    resource: [EndpointService],
    context: {
      endpoint_id: String, description: String, marker_id: Long,
      created_at: datetime, now: datetime,
      accepted_from_domain: Long, pending_from_domain: Long,
    },
  };
"#;

/// A schema of the request model whose accounts (and what they refer to) are declared by
/// `principals`, lines of Cedar schema inside `namespace Vpcep`.
pub fn schema_with(principals: &str) -> String {
    format!("namespace Vpcep {{\n{principals}{SERVICES_AND_CONNECT}}}\n")
}
