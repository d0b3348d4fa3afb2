//! The seed file (README "Simulator"): endpoint services with their connections nested inside, in
//! the same shape the API returns them (the API's own types). Every field may be omitted
//! and gets a default:
//! - service: `id` a fresh UUID, `service_name` `sim.service-N.<id>`, `approval_enabled`
//!   true, `status` `available` (or `creating`, `failed`, `deleting`), `server_type` `VM`
//!   (or `VIP`, `LB`), `service_type` `interface` (or `gateway`), `created_at` now. With a
//!   `project_id`, only that project lists it, shows it, and lists and acts on its
//!   connections (another project gets 404 `EndPoint.0005`); without one, every project
//!   does, so one seed serves whatever project id a client uses.
//! - connection: `id` a fresh UUID, `domain_id` 32 random hex digits, `description` "",
//!   `marker_id` random (usually above 2^53, to keep clients honest), `status`
//!   `pendingAcceptance` (or one of the other five documented statuses), `created_at` now,
//!   `updated_at` its `created_at`.
//!
//! Unknown fields are ignored on purpose, so a service or connection copied from a real
//! API response loads as is.

use crate::cloud::types::{EndpointService, WireConnection};
use serde::{Deserialize, Serialize};

/// The whole seed: services, each with its connections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Seed {
    /// Endpoint services, in the order they were given.
    #[serde(default)]
    pub services: Vec<SeedService>,
}

/// One endpoint service of the seed: the service as the API lists it, with its
/// connections inside.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeedService {
    /// The service's own fields (defaults as above; `updated_at` and
    /// `connection_count` are the simulator's to keep, so they are ignored).
    #[serde(flatten)]
    pub service: EndpointService,
    /// The service's connections.
    #[serde(default)]
    pub connections: Vec<SeedConnection>,
}

impl SeedService {
    /// A service with this id and name and these connections, every other field defaulted.
    pub fn named(
        id: impl Into<String>,
        service_name: impl Into<String>,
        connections: Vec<SeedConnection>,
    ) -> SeedService {
        SeedService {
            service: EndpointService {
                id: Some(id.into()),
                service_name: Some(service_name.into()),
                ..EndpointService::default()
            },
            connections,
        }
    }
}

/// One connection of the seed, also the format of `POST /_sim/connections`: a connection
/// as the API lists it (defaults as above; `error` is ignored).
pub type SeedConnection = WireConnection;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_parses_and_unknown_fields_are_ignored() {
        let seed = Seed::from_json(
            r#"{"services": [{"id": "4189d3c2", "service_name": "cn-north-4.payments.4189d3c2",
                "approval_enabled": true, "status": "available", "port_id": "x",
                "connections": [{"id": "705290f3", "domain_id": "6e9d", "description": "CHG-1234",
                                 "marker_id": 422321321312321321, "status": "pendingAcceptance",
                                 "created_at": "2026-11-27T09:35:47Z", "vpc_id": "v"}]}]}"#,
        )
        .expect("parse");
        assert_eq!(seed.connection_count(), 1);
        assert_eq!(
            seed.services[0].connections[0].marker_id,
            Some(422_321_321_312_321_321)
        );
    }

    #[test]
    fn bad_seeds_name_the_element() {
        let err =
            Seed::from_json(r#"{"services":[{"connections":[{},{"created_at":"yesterday"}]}]}"#)
                .expect_err("bad date");
        let msg = err.to_string();
        assert!(
            msg.contains("services[0].connections[1].created_at"),
            "{msg}"
        );

        let err = Seed::from_json(r#"{"services":[{"connections":[{"status":"Accepted"}]}]}"#)
            .expect_err("bad status");
        assert!(err.to_string().contains("status"), "{err}");

        let err = Seed::from_json(
            r#"{"services":[{"id":"s1","connections":[{"id":"e"}]},{"id":"s2","connections":[{"id":"e"}]}]}"#,
        )
        .expect_err("duplicate endpoint");
        assert!(err.to_string().contains("duplicate"), "{err}");

        let err = Seed::from_json(r#"{"services":[{"id":"s"},{"id":"s"}]}"#).expect_err("dup");
        assert!(err.to_string().contains("services[1].id"), "{err}");
    }

    #[test]
    fn from_file_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seed.json");
        std::fs::write(&path, "{not json").expect("write");
        let err = Seed::from_file(&path).expect_err("garbage");
        assert!(err.to_string().contains("seed.json"), "{err}");
        let err = Seed::from_file(dir.path().join("missing.json")).expect_err("missing");
        assert!(err.to_string().contains("missing.json"), "{err}");
    }

    #[test]
    fn shipped_example_seed_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/seed.json");
        let seed = Seed::from_file(path).expect("examples/seed.json");
        assert!(seed.services.len() >= 2);
        assert!(seed.connection_count() >= 4);
    }
}
