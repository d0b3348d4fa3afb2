//! The seed file (README "Simulator"): endpoint services with their connections nested inside, in
//! the same shape the API returns them. Every field may be omitted and gets a default:
//! service `status` `available`, `approval_enabled` true, connection `status`
//! `pendingAcceptance`, fresh UUIDs, `created_at` now, `description` "", a random
//! `marker_id` and a random `domain_id`.
//!
//! Unknown fields are ignored on purpose, so a service or connection copied from a real
//! API response loads as is.

use serde::{Deserialize, Serialize};

/// The whole seed: services, each with its connections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Seed {
    /// Endpoint services, in the order they were given.
    #[serde(default)]
    pub services: Vec<SeedService>,
}

/// One endpoint service of the seed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeedService {
    /// Service id; default a fresh UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Full name (`region.name.id`); default `sim.service-N.<id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_enabled: Option<bool>,
    /// `creating`, `available` (default), `failed` or `deleting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `VM` (default), `VIP` or `LB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_type: Option<String>,
    /// `interface` (default) or `gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<String>,
    /// The project it belongs to: only that project lists it, shows it, and lists and
    /// acts on its connections (another project gets 404 `EndPoint.0005`). Default: every
    /// project, so one seed serves whatever project id a client uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// RFC 3339; default now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// The service's connections.
    #[serde(default)]
    pub connections: Vec<SeedConnection>,
}

/// One connection of the seed, also the format of `POST /_sim/connections`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeedConnection {
    /// Endpoint id; default a fresh UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Consumer account id; default 32 random hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_id: Option<String>,
    /// Default "".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Packet id; default random (usually above 2^53, to keep clients honest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker_id: Option<i64>,
    /// Default `pendingAcceptance`; one of the six documented statuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// RFC 3339; default now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// RFC 3339; default `created_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

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
