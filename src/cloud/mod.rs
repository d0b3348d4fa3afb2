//! Everything that talks to Huawei Cloud: `SDK-HMAC-SHA256` signing, credentials and IAM
//! tokens, the VPCEP operations with retries and rate limits, and the wire types.
//!
//! The engine sees only the narrow traits at the bottom of this file ([`Cloud`] and
//! [`TargetApi`]); [`client::CloudClient`] is the real implementation, tests run it
//! against the simulator on loopback.
//!
//! - [`client`]: the operations (list services, list connections, read one back, act)
//!   and the one paging loop.
//! - `transport`: sending one request: limits, retries, the body cap.
//! - [`auth`]: credentials, IAM tokens, the authentication backoff.
//! - [`signer`], [`types`], [`error`], [`retry`], [`ratelimit`]: the pieces.

// `ApiError` is the public error type and carries everything a person needs (URL, status,
// code, message, request id); its size is nothing next to an HTTP round trip, and boxing
// it would only make every caller's matching clumsier.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod client;
pub mod error;
#[cfg(test)]
pub(crate) mod fake;
mod fetch;
pub mod ratelimit;
pub mod retry;
pub mod signer;
mod transport;
pub mod types;

pub use transport::{Guard, MAX_BODY_BYTES, OP_IAM_TOKEN, init_tls};

use crate::config::Target;
use crate::decision::Action;
use error::ApiError;
use std::future::Future;
use types::{EndpointService, WireConnection};

/// The answer to a successful action.
#[derive(Debug, Clone, PartialEq)]
pub struct ActResponse {
    /// HTTP status (200).
    pub http_status: u16,
    /// The connection as the API returned it after the action, when it did.
    pub connection: Option<WireConnection>,
    /// HTTP attempts it took.
    pub attempts: u32,
}

/// What the engine needs of one target: four operations and its readiness.
pub trait TargetApi: Send + Sync {
    /// The configured target.
    fn target(&self) -> &Target;

    /// Every endpoint service of the project.
    fn list_services(&self) -> impl Future<Output = Result<Vec<EndpointService>, ApiError>> + Send;

    /// Every connection of a service with `status` (empty: any status), complete or an
    /// error: never part of a listing.
    fn list_connections(
        &self,
        service_id: &str,
        status: &str,
    ) -> impl Future<Output = Result<Vec<WireConnection>, ApiError>> + Send;

    /// One connection read back by endpoint id; `None` when the API does not know it.
    fn get_connection(
        &self,
        service_id: &str,
        endpoint_id: &str,
    ) -> impl Future<Output = Result<Option<WireConnection>, ApiError>> + Send;

    /// Accepts (`receive`) or rejects one endpoint, unless `guard` says otherwise right
    /// before an attempt (then the error is `NotSent`, with the attempts made so far).
    fn act(
        &self,
        service_id: &str,
        endpoint_id: &str,
        action: Action,
        guard: Guard<'_>,
    ) -> impl Future<Output = Result<ActResponse, ApiError>> + Send;

    /// Why this target cannot work right now (an authentication backoff), if it cannot.
    fn unready_reason(&self) -> Option<String>;
}

/// Every target the engine polls, in configuration order.
pub trait Cloud: Send + Sync {
    /// The client of one target.
    type Target: TargetApi;

    /// One per configured target, in order.
    fn targets(&self) -> &[Self::Target];
}
