//! Wire types of the VPCEP v1 API (docs/design.md, "The API as the daemon uses it"). Every field is optional, as in the
//! official SDK models, and unknown fields are ignored: the client decides what is
//! required. The simulator serialises the same types, so both ends agree on the shape.

use serde::{Deserialize, Deserializer, Serialize};

/// `GET /v1/{project_id}/vpc-endpoint-services` response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceList {
    /// One page of services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_services: Option<Vec<EndpointService>>,
    /// Matches regardless of paging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_count: Option<u64>,
}

/// One endpoint service (the fields the daemon uses; the rest are ignored).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointService {
    /// Service id (UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Full service name, `region.name.id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// Whether new connections need the owner's approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_enabled: Option<bool>,
    /// `creating`, `available`, `failed` or `deleting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `VM`, `VIP` or `LB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_type: Option<String>,
    /// `interface` or `gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<String>,
    /// Owning project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Last update time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Connections that are `creating` or `accepted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_count: Option<i64>,
}

/// `GET …/{service_id}/connections` response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectionList {
    /// One page of connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<Vec<WireConnection>>,
    /// Matches regardless of paging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_count: Option<u64>,
}

/// One connection (`ConnectionEndpoints` in the SDK).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireConnection {
    /// VPC endpoint id: the value for `endpoints[]` of the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Packet id; may exceed 2^53, so never through a float.
    #[serde(
        default,
        deserialize_with = "lenient_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub marker_id: Option<i64>,
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Consumer account id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_id: Option<String>,
    /// `pendingAcceptance`, `creating`, `accepted`, `rejected`, `failed`, `deleting`, or
    /// anything newer, kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Consumer-controlled description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Present only when `status` is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Vec<ConnectionError>>,
}

impl EndpointService {
    /// Whether two copies of one service agree on every field a decision uses
    /// (`service_name`, `approval_enabled`, `status`).
    pub fn same_decision_fields(&self, other: &EndpointService) -> bool {
        (&self.service_name, self.approval_enabled, &self.status)
            == (&other.service_name, other.approval_enabled, &other.status)
    }
}

impl WireConnection {
    /// Whether two copies of one connection agree on every field a decision uses
    /// (`domain_id`, `description`, `marker_id`, `created_at`, `status`).
    pub fn same_decision_fields(&self, other: &WireConnection) -> bool {
        (
            &self.domain_id,
            &self.description,
            self.marker_id,
            &self.created_at,
            &self.status,
        ) == (
            &other.domain_id,
            &other.description,
            other.marker_id,
            &other.created_at,
            &other.status,
        )
    }
}

/// Error detail of a failed connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectionError {
    /// Error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// `POST …/connections/action` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRequest {
    /// `receive` or `reject`.
    pub action: String,
    /// Exactly one endpoint id.
    pub endpoints: Vec<String>,
}

/// `POST …/connections/action` response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionResponse {
    /// The connection after the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<Vec<WireConnection>>,
}

/// The connection status strings of the API.
pub mod status {
    /// Waiting for the owner's decision.
    pub const PENDING: &str = "pendingAcceptance";
    /// Accepted.
    pub const ACCEPTED: &str = "accepted";
    /// Accepted, being set up.
    pub const CREATING: &str = "creating";
    /// Rejected.
    pub const REJECTED: &str = "rejected";
    /// Service status: usable.
    pub const AVAILABLE: &str = "available";
}

/// Accepts a JSON integer, or a string of decimal digits (some gateways quote numbers).
fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        Int(i64),
        Str(String),
    }
    match Option::<Num>::deserialize(d)? {
        None => Ok(None),
        Some(Num::Int(n)) => Ok(Some(n)),
        Some(Num::Str(s)) => s
            .parse::<i64>()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("marker_id {s:?} is not an integer"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_id_above_2_pow_53_is_exact() {
        let c: WireConnection =
            serde_json::from_str(r#"{"id":"a","marker_id":422321321312321321}"#).expect("parse");
        assert_eq!(c.marker_id, Some(422_321_321_312_321_321));
        let c: WireConnection = serde_json::from_str(r#"{"marker_id":"16777510"}"#).expect("parse");
        assert_eq!(c.marker_id, Some(16_777_510));
        assert!(serde_json::from_str::<WireConnection>(r#"{"marker_id":1.5}"#).is_err());
        assert!(serde_json::from_str::<WireConnection>(r#"{"marker_id":"x"}"#).is_err());
    }

    #[test]
    fn unknown_fields_and_statuses_are_kept_or_ignored() {
        let l: ConnectionList = serde_json::from_str(
            r#"{"connections":[{"id":"e","status":"brandNew","extra":{"x":1}}],"total_count":1}"#,
        )
        .expect("parse");
        let c = &l.connections.expect("connections")[0];
        assert_eq!(c.status.as_deref(), Some("brandNew"));
    }
}
