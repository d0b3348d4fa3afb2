//! Fault injection: a random fault rate (429 with `Retry-After`, 500, 503), a fixed
//! latency per request, the VPCEP error-body shape, and a script of exact next answers
//! per operation for deterministic tests ("the next `list_connections` answers 200 with
//! body `garbage`", "the next 3 requests answer 429").
//!
//! Faults apply to the API routes only (never to `/_sim/`), after authentication: an
//! unauthenticated request gets its 401 and does not use up a scripted answer. Random
//! faults apply to the `/v1` VPCEP routes only; a script entry may target the IAM routes
//! and the credential routes (metadata, pod identity) too.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::time::Duration;

/// The API operations, as used in scripts and request counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Matches every operation (script entries only).
    Any,
    /// `GET /v1/{project}/vpc-endpoint-services`.
    ListServices,
    /// `GET /v1/{project}/vpc-endpoint-services/{id}`.
    ShowService,
    /// `GET …/{service}/connections`.
    ListConnections,
    /// `POST …/{service}/connections/action`.
    Action,
    /// `POST /v3/auth/tokens`.
    Token,
    /// `PUT /meta-data/latest/api/token` (ECS metadata session token).
    MetadataToken,
    /// `GET /openstack/latest/securitykey` (ECS metadata temporary keys).
    #[serde(rename = "metadata_securitykey")]
    MetadataSecurityKey,
    /// `POST` on the pod-identity path (CCE pod identity temporary keys).
    PodIdentity,
    /// `POST /v3.0/OS-CREDENTIAL/securitytokens` (agency temporary keys).
    #[serde(rename = "securitytokens")]
    SecurityTokens,
}

impl Operation {
    /// The snake_case name (request counters in the snapshot).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Any => "any",
            Operation::ListServices => "list_services",
            Operation::ShowService => "show_service",
            Operation::ListConnections => "list_connections",
            Operation::Action => "action",
            Operation::Token => "token",
            Operation::MetadataToken => "metadata_token",
            Operation::MetadataSecurityKey => "metadata_securitykey",
            Operation::PodIdentity => "pod_identity",
            Operation::SecurityTokens => "securitytokens",
        }
    }

    /// Every concrete operation.
    pub const ALL: [Operation; 9] = [
        Operation::ListServices,
        Operation::ShowService,
        Operation::ListConnections,
        Operation::Action,
        Operation::Token,
        Operation::MetadataToken,
        Operation::MetadataSecurityKey,
        Operation::PodIdentity,
        Operation::SecurityTokens,
    ];

    /// The `/v1` VPCEP operations (the ones random faults hit).
    pub fn is_vpcep(self) -> bool {
        matches!(
            self,
            Operation::ListServices
                | Operation::ShowService
                | Operation::ListConnections
                | Operation::Action
        )
    }
}

/// The body shape of VPCEP (`EndPoint.*`) errors. Gateway errors always use the gateway
/// shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorShape {
    /// `{"error_code":…,"error_msg":…}`.
    #[default]
    Flat,
    /// `{"error":{"code":…,"message":…}}`.
    Nested,
    /// Flat or nested, chosen at random per response.
    Random,
}

impl ErrorShape {
    /// Resolves `Random` to one of the two concrete shapes.
    pub fn resolve(self) -> ErrorShape {
        match self {
            ErrorShape::Random if rand::random_bool(0.5) => ErrorShape::Nested,
            ErrorShape::Random => ErrorShape::Flat,
            s => s,
        }
    }
}

/// One scripted answer. With neither `body` nor `error_code`, the body is the documented
/// error for `status` (429 → `APIGW.0308`, 500/503 → `EndPoint.0001`, 400 →
/// `EndPoint.0002`, 401 → `APIGW.0301`, 404 → `EndPoint.0005`), or empty for a 2xx.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedFault {
    /// Which operation it answers; default `any`.
    #[serde(default = "any")]
    pub op: Operation,
    /// HTTP status to answer.
    pub status: u16,
    /// Raw body, sent verbatim with `Content-Type: application/json` (e.g. `garbage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Error code for a generated error body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Error message for a generated error body; default a generic text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_msg: Option<String>,
    /// Shape of a generated VPCEP error body; default the current [`Faults::error_shape`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<ErrorShape>,
    /// How many matching requests it answers; default 1.
    #[serde(default = "one")]
    pub times: u32,
    /// Process the request for real first (state changes, the action is recorded with its
    /// real effect), then answer this instead: "applied, but the answer was lost".
    #[serde(default)]
    pub apply: bool,
    /// `Retry-After` for this answer; default the configured one on 429s, none otherwise.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_after: Option<Duration>,
    /// Extra wait before answering (client timeouts).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub delay: Option<Duration>,
    /// Only requests whose query has all these parameters with these values (e.g.
    /// `{"status":"accepted"}` for the accepted listing, `{"offset":"1000"}` for a second
    /// page); default any.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// Only actions on this endpoint (the body's `endpoints[0]`); default any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

fn any() -> Operation {
    Operation::Any
}

fn one() -> u32 {
    1
}

impl ScriptedFault {
    /// Answers the next `op` request with `status` and the default body for it.
    pub fn new(op: Operation, status: u16) -> Self {
        ScriptedFault {
            op,
            status,
            body: None,
            error_code: None,
            error_msg: None,
            shape: None,
            times: 1,
            apply: false,
            retry_after: None,
            delay: None,
            query: BTreeMap::new(),
            endpoint: None,
        }
    }

    /// Answers only actions on `endpoint_id`.
    pub fn for_endpoint(mut self, endpoint_id: &str) -> Self {
        self.endpoint = Some(endpoint_id.to_owned());
        self
    }

    /// Answers only requests whose query has `key=value`.
    pub fn when_query(mut self, key: &str, value: &str) -> Self {
        self.query.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sends this raw body.
    pub fn with_body(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Generates an error body with this code and message.
    pub fn with_error(mut self, code: impl Into<String>, msg: impl Into<String>) -> Self {
        self.error_code = Some(code.into());
        self.error_msg = Some(msg.into());
        self
    }

    /// Uses this VPCEP error shape.
    pub fn with_shape(mut self, shape: ErrorShape) -> Self {
        self.shape = Some(shape);
        self
    }

    /// Answers the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.times = n;
        self
    }

    /// Processes the request for real before answering with this fault.
    pub fn applied(mut self) -> Self {
        self.apply = true;
        self
    }

    /// Sets `Retry-After`.
    pub fn with_retry_after(mut self, d: Duration) -> Self {
        self.retry_after = Some(d);
        self
    }

    /// Waits this long before answering.
    pub fn with_delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }

    fn matches(&self, op: Operation, query: &[(String, String)], endpoint: Option<&str>) -> bool {
        (self.op == Operation::Any || self.op == op)
            && self.endpoint.as_deref().is_none_or(|e| Some(e) == endpoint)
            && self
                .query
                .iter()
                .all(|(k, v)| query.iter().any(|(qk, qv)| qk == k && qv == v))
    }
}

/// All fault settings; `set_faults` and `POST /_sim/faults` replace them as a whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Probability (0–1) that a `/v1` request gets a random 429, 500 or 503.
    pub fault_rate: f64,
    /// Sleep before answering each API request.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// Shape of VPCEP error bodies.
    pub error_shape: ErrorShape,
    /// Scripted answers, consumed in order by the first matching request.
    pub script: Vec<ScriptedFault>,
}

impl Faults {
    /// Only a script, no random faults or latency.
    pub fn script(script: Vec<ScriptedFault>) -> Self {
        Faults {
            script,
            ..Faults::default()
        }
    }
}

/// The live fault state: settings plus the remaining script.
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    pub fault_rate: f64,
    pub latency: Duration,
    pub error_shape: ErrorShape,
    pub script: VecDeque<ScriptedFault>,
}

/// What the fault layer decided for one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Injected {
    /// A scripted answer.
    Scripted(ScriptedFault),
    /// A random answer with this status (429, 500 or 503).
    Random(u16),
}

impl FaultState {
    pub fn new(f: Faults) -> Self {
        let mut s = FaultState::default();
        s.set(f);
        s
    }

    pub fn set(&mut self, f: Faults) {
        self.fault_rate = if f.fault_rate.is_finite() {
            f.fault_rate.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.latency = f.latency;
        self.error_shape = f.error_shape;
        self.script = f.script.into_iter().filter(|s| s.times > 0).collect();
    }

    pub fn get(&self) -> Faults {
        Faults {
            fault_rate: self.fault_rate,
            latency: self.latency,
            error_shape: self.error_shape,
            script: self.script.iter().cloned().collect(),
        }
    }

    pub fn push(&mut self, f: ScriptedFault) {
        if f.times > 0 {
            self.script.push_back(f);
        }
    }

    /// Takes the answer for one request of `op` (with its query, and the endpoint of an
    /// action), if any: the first matching script entry,
    /// else a random fault with probability `fault_rate` (`/v1` VPCEP operations only).
    pub fn take(
        &mut self,
        op: Operation,
        query: &[(String, String)],
        endpoint: Option<&str>,
    ) -> Option<Injected> {
        if let Some(i) = self
            .script
            .iter()
            .position(|s| s.matches(op, query, endpoint))
        {
            let entry = &mut self.script[i];
            entry.times -= 1;
            let out = entry.clone();
            if entry.times == 0 {
                self.script.remove(i);
            }
            return Some(Injected::Scripted(out));
        }
        if op.is_vpcep() && self.fault_rate > 0.0 && rand::random_bool(self.fault_rate) {
            let status = [429, 500, 503][rand::random_range(0..3usize)];
            return Some(Injected::Random(status));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_condition_picks_the_request_it_answers() {
        let mut s = FaultState::new(Faults::script(vec![
            ScriptedFault::new(Operation::ListConnections, 500).when_query("status", "accepted"),
        ]));
        let pending = [("status".to_owned(), "pendingAcceptance".to_owned())];
        let accepted = [
            ("limit".to_owned(), "1000".to_owned()),
            ("status".to_owned(), "accepted".to_owned()),
        ];
        assert_eq!(s.take(Operation::ListConnections, &pending, None), None);
        assert!(
            s.take(Operation::ListConnections, &accepted, None)
                .is_some()
        );
        assert_eq!(s.take(Operation::ListConnections, &accepted, None), None);
    }

    #[test]
    fn script_is_consumed_in_order_per_operation() {
        let mut s = FaultState::new(Faults::script(vec![
            ScriptedFault::new(Operation::ListConnections, 200).with_body("garbage"),
            ScriptedFault::new(Operation::Any, 429).times(2),
            ScriptedFault::new(Operation::Action, 500),
        ]));
        let Some(Injected::Scripted(f)) = s.take(Operation::Action, &[], None) else {
            panic!("any matches action");
        };
        assert_eq!(f.status, 429);
        let Some(Injected::Scripted(f)) = s.take(Operation::ListConnections, &[], None) else {
            panic!("scripted");
        };
        assert_eq!(f.body.as_deref(), Some("garbage"));
        assert!(
            matches!(s.take(Operation::Token, &[], None), Some(Injected::Scripted(f)) if f.status == 429)
        );
        assert!(
            matches!(s.take(Operation::Action, &[], None), Some(Injected::Scripted(f)) if f.status == 500)
        );
        assert_eq!(s.take(Operation::Action, &[], None), None);
    }

    #[test]
    fn fault_rate_one_always_faults_and_never_the_token_route() {
        let mut s = FaultState::new(Faults {
            fault_rate: 7.0,
            ..Faults::default()
        });
        assert_eq!(s.fault_rate, 1.0);
        for _ in 0..50 {
            assert!(matches!(
                s.take(Operation::ListServices, &[], None),
                Some(Injected::Random(429 | 500 | 503))
            ));
        }
        assert_eq!(s.take(Operation::Token, &[], None), None);
        assert_eq!(s.take(Operation::MetadataSecurityKey, &[], None), None);
        assert_eq!(s.take(Operation::SecurityTokens, &[], None), None);
        s.set(Faults {
            fault_rate: f64::NAN,
            ..Faults::default()
        });
        assert_eq!(s.take(Operation::ListServices, &[], None), None);
    }

    #[test]
    fn faults_json_round_trip() {
        let f: Faults = serde_json::from_str(
            r#"{"fault_rate":0.1,"latency":"50ms","error_shape":"nested",
                "script":[{"op":"list_connections","status":200,"body":"garbage"},
                          {"status":429,"times":3,"retry_after":"2s"}]}"#,
        )
        .expect("parse");
        assert_eq!(f.latency, Duration::from_millis(50));
        assert_eq!(f.script[1].op, Operation::Any);
        let names: Faults = serde_json::from_str(
            r#"{"script":[{"op":"metadata_token","status":500},{"op":"metadata_securitykey","status":500},
                          {"op":"pod_identity","status":500},{"op":"securitytokens","status":500}]}"#,
        )
        .expect("credential operations by their counter names");
        for (f, op) in names.script.iter().zip(&Operation::ALL[5..]) {
            assert_eq!((f.op, f.op.as_str()), (*op, op.as_str()));
        }
        assert_eq!(f.script[1].retry_after, Some(Duration::from_secs(2)));
        let back: Faults =
            serde_json::from_str(&serde_json::to_string(&f).expect("ser")).expect("de");
        assert_eq!(back, f);
        assert!(serde_json::from_str::<Faults>(r#"{"rate":1}"#).is_err());
    }
}
