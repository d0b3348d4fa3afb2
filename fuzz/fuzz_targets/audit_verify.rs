//! Any bytes as an audit log: `audit verify` (every line parsed, the chain checked) must
//! report or fail cleanly, never panic, and a valid chain must stay valid.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write as _;
use vpcep_approver::audit::record::parse_line;
use vpcep_approver::audit::verify_files;

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
    let _ = std::fs::remove_file(&f.0);
});

/// A fresh file under the temp dir (no extra dependency for one file per input).
fn tempfile_in_tmp() -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    let p = std::env::temp_dir().join(format!("vpcep-fuzz-audit-{}.jsonl", std::process::id()));
    let f = std::fs::File::create(&p)?;
    Ok((p, f))
}
