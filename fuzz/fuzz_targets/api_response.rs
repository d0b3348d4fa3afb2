//! Any bytes as an API response body: every wire type the client decodes, and the error
//! body parser. Nothing may panic, whatever the server sends.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vpcep_approver::cloud::error::parse_error_body;
use vpcep_approver::cloud::types::{ActionResponse, ConnectionList, ServiceList};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<ConnectionList>(data);
    let _ = serde_json::from_slice::<ServiceList>(data);
    let _ = serde_json::from_slice::<ActionResponse>(data);
    let _ = parse_error_body(data);
});
