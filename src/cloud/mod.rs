//! Everything that talks to Huawei Cloud: `SDK-HMAC-SHA256` signing, IAM tokens, the
//! VPCEP client with retries and rate limits, and the wire types.

pub mod auth;
pub mod client;
pub mod error;
pub mod ratelimit;
pub mod retry;
pub mod signer;
pub mod types;
