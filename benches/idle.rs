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
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let o = Opts::from_env();
    let minutes: f64 = o.num("minutes", 10.0)?;
    let services: usize = o.num("services", 100)?;
    let interval = o.str("interval", "30s");
    let latency = o.dur("latency", "20ms")?;
    let every = o.dur("sample", "5s")?;
    let bin = binary()?;
    println!("machine: {}", machine());

    let sim = SimProcess::start(&bin, &drain_seed(services, 0), latency, 0.0)?;
    let dir = tempfile::tempdir()?;
    let poll = format!(
        "interval = \"{interval}\"\njitter = \"3s\"\nmax_in_flight = 8\nmax_requests_per_second = 10"
    );
    let cfg = write_config(dir.path(), &sim.url, &poll, "info")?;
    let checkpoints = o.str("checkpoint-interval", "");
    if !checkpoints.is_empty() {
        let key = dir.path().join("signing.pem");
        let made = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&key)
            .status()
            .context("running openssl genpkey")?;
        if !made.success() {
            bail!("openssl genpkey failed: {made}");
        }
        let text = std::fs::read_to_string(&cfg)?.replace(
            "fsync = true\n",
            &format!(
                "fsync = true\nsigning_key_file = {:?}\ncheckpoint_interval = \"{checkpoints}\"\n",
                key.display().to_string()
            ),
        );
        std::fs::write(&cfg, text)?;
    }
    let log = std::fs::File::create(dir.path().join("daemon.log"))?;
    let mut child = daemon_command(&bin, &cfg, &["run"])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the daemon")?;
    let pid = child.id();
    let tck = clk_tck();

    // Warm-up: the first cycle (1 + 100 listings at 10 requests per second) and its
    // allocations are start-up cost, not idle cost.
    let warm = Duration::from_secs(20).min(Duration::from_secs_f64(minutes * 60.0 / 4.0));
    std::thread::sleep(warm);
    let first = sample(pid)?;
    let end = first.at + Duration::from_secs_f64(minutes * 60.0);
    let mut samples = vec![first];
    while Instant::now() < end {
        std::thread::sleep(every.min(end.saturating_duration_since(Instant::now())));
        if let Some(st) = child.try_wait()? {
            bail!("the daemon exited early: {st}");
        }
        samples.push(sample(pid)?);
    }
    let state = sim.state()?;
    let _ = terminate(&mut child, Duration::from_secs(15));

    let last = samples.last().copied().unwrap_or(first);
    let elapsed = last.at.duration_since(first.at).as_secs_f64();
    let cpu_s = (last.cpu_ticks - first.cpu_ticks) as f64 / tck;
    let pct = cpu_s / elapsed * 100.0;
    // Flat: compare the first minute after warm-up with the last minute.
    let minute = |from_end: bool| -> u64 {
        let edge = if from_end {
            last.at - Duration::from_secs(60).min(last.at - first.at)
        } else {
            first.at + Duration::from_secs(60)
        };
        samples
            .iter()
            .filter(|s| if from_end { s.at >= edge } else { s.at <= edge })
            .map(|s| s.rss_kib)
            .max()
            .unwrap_or(0)
    };
    let (early, late) = (minute(false), minute(true));
    let max_rss = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let min_rss = samples.iter().map(|s| s.rss_kib).min().unwrap_or(0);
    let cycles = state.request_count(vpcep_approver::sim::Operation::ListServices);
    let signed = std::fs::read_to_string(dir.path().join("audit.jsonl"))
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
    let cpu_ok = pct < 0.1;
    // Flat: the last minute is no higher than the first one plus allocator noise (256 KiB).
    let flat = late <= early + 256;
    println!(
        "  target cpu < 0.1% of a core: {}",
        if cpu_ok { "PASS" } else { "MISS" }
    );
    println!(
        "  target RSS flat (last minute <= first minute + 256 KiB): {}",
        if flat { "PASS" } else { "MISS" }
    );
    if !(cpu_ok && flat) {
        bail!("a target was missed");
    }
    Ok(())
}
