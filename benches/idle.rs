//! Idle cost (issue 5, item 3): 100 services with nothing pending, a 30 s interval. The
//! daemon (`run`) is sampled through `/proc/<pid>` every few seconds: CPU (utime + stime)
//! over the run after the first cycle, and RSS, which must stay flat.
//!
//! ```sh
//! cargo bench --bench idle -- --minutes 10 --services 100 --interval 30s
//! cargo bench --bench idle -- --minutes 5 --checkpoint-interval 30s
//! ```
//!
//! With `--checkpoint-interval`, the audit log is signed (a key made by `openssl genpkey`)
//! and a checkpoint is written at that interval, so the cost of checkpoints shows against
//! a run without.

mod common;

use anyhow::{Context as _, bail};
use common::*;
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let o = Opts::from_env();
    let minutes: f64 = o.num("minutes", 10.0)?;
    let services: usize = o.num("services", 100)?;
    let interval = o.str("interval", "30s");
    let latency = o.dur("latency", "20ms")?;
    let every = o.dur("sample", "5s")?;
    let bin = binary()?;
    println!("machine: {}", machine());

    let poll = format!(
        "interval = \"{interval}\"\njitter = \"3s\"\nmax_in_flight = 8\nmax_requests_per_second = 10"
    );
    let rig = Rig::start(&bin, &drain_seed(services, 0), latency, 0.0, &poll)?;
    let checkpoints = o.str("checkpoint-interval", "");
    if !checkpoints.is_empty() {
        let key = rig.dir.path().join("signing.pem");
        let made = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&key)
            .status()
            .context("running openssl genpkey")?;
        if !made.success() {
            bail!("openssl genpkey failed: {made}");
        }
        let text = std::fs::read_to_string(&rig.cfg)?.replace(
            "fsync = true\n",
            &format!(
                "fsync = true\nsigning_key_file = {:?}\ncheckpoint_interval = \"{checkpoints}\"\n",
                key.display().to_string()
            ),
        );
        std::fs::write(&rig.cfg, text)?;
    }
    let mut child = rig.spawn_daemon(&bin)?;

    // Warm-up: the first cycle (1 + 100 listings at 10 requests per second) and its
    // allocations are start-up cost, not idle cost.
    let warm = Duration::from_secs(20).min(Duration::from_secs_f64(minutes * 60.0 / 4.0));
    std::thread::sleep(warm);
    let watch = Watch::run(
        child.id(),
        Duration::from_secs_f64(minutes * 60.0),
        every,
        || still_running(&mut child),
    )?;
    let state = rig.sim.state()?;
    let _ = terminate(&mut child, Duration::from_secs(15));

    let (first, last) = (watch.first(), watch.last());
    let elapsed = watch.secs();
    let cpu_s = watch.cpu_s();
    let pct = watch.core_pct();
    // Flat: compare the first minute after warm-up with the last minute.
    let (early, late) = early_and_late(watch.samples(), Duration::from_secs(60), |s| s.rss_kib);
    let max_rss = watch.max(|s| s.rss_kib);
    let min_rss = watch.min(|s| s.rss_kib);
    let cycles = state.request_count(vpcep_approver::sim::Operation::ListServices);
    let signed = std::fs::read_to_string(rig.dir.path().join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"kind\":\"checkpoint\""))
        .count();
    if !checkpoints.is_empty() {
        println!("checkpoints every {checkpoints}: {signed} written");
    }
    println!(
        "idle {services} services, interval {interval}, {:.1} min measured ({cycles} cycles, {} requests): \
         cpu {cpu_s:.3} s = {pct:.4}% of a core; RSS first minute {} / last minute {} \
         (min {}, max {}, peak {}); fds {} -> {}",
        elapsed / 60.0,
        total_requests(&state),
        mib(early),
        mib(late),
        mib(min_rss),
        mib(max_rss),
        mib(last.hwm_kib),
        first.fds,
        last.fds,
    );
    // Flat: the last minute is no higher than the first one plus allocator noise (256 KiB).
    check_targets(&[
        ("cpu < 0.1% of a core", pct < 0.1),
        (
            "RSS flat (last minute <= first minute + 256 KiB)",
            late <= early + 256,
        ),
    ])
}
