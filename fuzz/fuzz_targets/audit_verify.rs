//! Any bytes as an audit log: `audit verify` (every line parsed, the chain and the
//! checkpoints checked, with and without `--from` and a key) must report or fail cleanly,
//! never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write as _;
use std::path::Path;
use vpcep_approver::audit::record::parse_line;
use vpcep_approver::audit::{
    VerifyOptions, VerifyingKey, line_hash, verify_files, verify_files_with,
};

/// An Ed25519 public key (SPKI PEM) to check checkpoint signatures against.
const PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----\n\
    MCowBQYDK2VwAyEARaUJjrDHhYOr91DBWXCfq423gRPif1ITiH6NZVUp7iY=\n\
    -----END PUBLIC KEY-----\n";

fuzz_target!(|data: &[u8]| {
    for line in data.split(|b| *b == b'\n') {
        let _ = parse_line(line);
    }
    let Ok(mut f) = tempfile_in_tmp() else { return };
    if f.1.write_all(data).is_err() {
        return;
    }
    let mut out = Vec::new();
    let _ = verify_files(&[f.0.clone()], &mut out);
    let first = data.split(|b| *b == b'\n').next().unwrap_or_default();
    let opts = VerifyOptions {
        from: Some(line_hash(first)),
        key: VerifyingKey::from_pem(PUBLIC_KEY.as_bytes(), Path::new("fuzz.pub")).ok(),
    };
    let _ = verify_files_with(&[f.0.clone(), f.0.clone()], &opts, &mut out);
    let _ = std::fs::remove_file(&f.0);
});

/// A fresh file under the temp dir (no extra dependency for one file per input).
fn tempfile_in_tmp() -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    let p = std::env::temp_dir().join(format!("vpcep-fuzz-audit-{}.jsonl", std::process::id()));
    let f = std::fs::File::create(&p)?;
    Ok((p, f))
}
