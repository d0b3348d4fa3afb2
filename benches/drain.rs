//! Drain benchmark (issue 5, item 1): N pending connections over several services, API
//! latency L, `max_in_flight` C. The simulator runs as its own process; the daemon runs
//! `run --once` as a child under GNU `time`, so wall time, CPU time and peak RSS are the
//! daemon's alone. The latency limit is (requests the simulator received) × L / C.
//!
//! ```sh
//! cargo bench --bench drain -- --pending 2000 --services 10 --latency 20ms --in-flight 16 --large 10000
//! ```
//! `--large 0` skips the 10,000-connection memory run.
//!
//! `--python PY` also runs `benches/python/baseline.py` (the official Python SDK with a
//! thread pool of the same size, cedarpy on the same policies) on a fresh simulator with the
//! same seed, checks that it decided every connection the same way, and compares wall time,
//! CPU time and peak RSS. `benches/python/run.sh` makes the venv and runs this.

mod common;

use anyhow::{Context as _, bail};
use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

struct Run {
    pending: usize,
    requests: u64,
    limit: Duration,
    usage: Usage,
    verified: bool,
    /// Endpoint id -> final status in the simulator.
    statuses: BTreeMap<String, String>,
}

fn statuses(state: &vpcep_approver::sim::SimSnapshot) -> BTreeMap<String, String> {
    state
        .services
        .iter()
        .flat_map(|s| &s.connections)
        .map(|c| (c.id.clone(), c.status.clone()))
        .collect()
}

/// One drain's workload: N pending over S services, latency L, C in flight.
#[derive(Clone, Copy)]
struct Shape {
    pending: usize,
    services: usize,
    latency: Duration,
    in_flight: usize,
}

impl Shape {
    fn seed(&self) -> vpcep_approver::sim::Seed {
        drain_seed(self.services, self.pending)
    }

    /// The latency limit for `requests` requests: requests × L / C.
    fn limit(&self, requests: u64) -> Duration {
        self.latency
            .mul_f64(requests as f64 / self.in_flight as f64)
    }
}

fn drain(bin: &std::path::Path, shape: Shape) -> anyhow::Result<Run> {
    let in_flight = shape.in_flight;
    let poll = format!(
        "max_in_flight = {in_flight}\nmax_requests_per_second = 0\nrequest_timeout = \"10s\"\nmax_retries = 4"
    );
    let rig = Rig::start(bin, &shape.seed(), shape.latency, 0.0, &poll)?;
    let t0 = chrono::Utc::now().timestamp_millis();
    let usage = rig.run_once(bin)?;
    let t1 = chrono::Utc::now().timestamp_millis();
    let state = rig.sim.state()?;
    let times = action_times_ms(&state)?;
    if let (Some(first), Some(last)) = (times.first(), times.last()) {
        println!(
            "  first action {} ms after spawn, last action {} ms before exit, {} actions",
            first - t0,
            t1 - last,
            times.len()
        );
    }
    let left = still_pending(&state);
    if usage.code != Some(0) || left != 0 {
        let log = std::fs::read_to_string(rig.log()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        bail!(
            "run --once exited {:?} with {left} connections still pending; log tail:\n{}",
            usage.code,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let requests = total_requests(&state);
    let limit = shape.limit(requests);
    let (verified, out) = audit_verify(bin, &rig.dir.path().join("audit.jsonl"))?;
    if !verified {
        bail!("audit verify failed: {out}");
    }
    Ok(Run {
        pending: shape.pending,
        requests,
        limit,
        usage,
        verified,
        statuses: statuses(&state),
    })
}

/// The same drain by `benches/python/baseline.py` under `python`.
fn baseline(bin: &std::path::Path, python: &str, shape: Shape) -> anyhow::Result<Run> {
    let sim = SimProcess::start(bin, &shape.seed(), shape.latency, 0.0)?;
    let dir = tempfile::tempdir()?;
    let script = repo().join("benches").join("python").join("baseline.py");
    let mut cmd = std::process::Command::new(python);
    cmd.arg(&script)
        .args(["--endpoint", &sim.url, "--project-id", PROJECT])
        .arg("--policies")
        .arg(repo().join("policies"))
        .args(["--in-flight", &shape.in_flight.to_string()])
        .arg("--audit")
        .arg(dir.path().join("audit.jsonl"))
        .env("HUAWEICLOUD_SDK_AK", AK)
        .env("HUAWEICLOUD_SDK_SK", SK);
    let log = dir.path().join("baseline.log");
    let usage = run_measured(&cmd, &log)?;
    let state = sim.state()?;
    let left = still_pending(&state);
    if usage.code != Some(0) || left != 0 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        bail!(
            "baseline.py exited {:?} with {left} connections still pending:\n{text}",
            usage.code
        );
    }
    let requests = total_requests(&state);
    Ok(Run {
        pending: shape.pending,
        requests,
        limit: shape.limit(requests),
        usage,
        verified: false,
        statuses: statuses(&state),
    })
}

fn report(r: &Run, latency: Duration, in_flight: usize) {
    let ratio = r.usage.wall.as_secs_f64() / r.limit.as_secs_f64();
    println!(
        "drain {pending} pending, L={lat}, C={in_flight}: {req} requests, limit {limit:.3} s, \
         wall {wall:.3} s ({ratio:.2}x limit), cpu {cpu:.3} s, peak RSS {rss}, audit chain {chain}",
        pending = r.pending,
        lat = humantime::format_duration(latency),
        req = r.requests,
        limit = r.limit.as_secs_f64(),
        wall = r.usage.wall.as_secs_f64(),
        cpu = r.usage.cpu.as_secs_f64(),
        rss = mib(r.usage.max_rss_kib),
        chain = if r.verified { "ok" } else { "BROKEN" },
    );
}

fn main() -> anyhow::Result<()> {
    let o = Opts::from_env();
    let pending: usize = o.num("pending", 2000)?;
    let services: usize = o.num("services", 10)?;
    let latency = o.dur("latency", "20ms")?;
    let in_flight: usize = o.num("in-flight", 16)?;
    let large: usize = o.num("large", 10_000)?;
    let python = o.str("python", "");
    let bin = binary()?;
    println!("machine: {}", machine());
    println!("binary: {}", bin.display());

    let shape = Shape {
        pending,
        services,
        latency,
        in_flight,
    };
    let r = drain(&bin, shape).context("drain run")?;
    report(&r, latency, in_flight);
    let ratio = r.usage.wall.as_secs_f64() / r.limit.as_secs_f64();
    let mut ok = report_targets(&[
        ("wall <= 1.2x limit", ratio <= 1.2),
        ("peak RSS < 20 MiB", r.usage.max_rss_kib < 20 * 1024),
    ]);

    if !python.is_empty() {
        let b = baseline(&bin, &python, shape).context("baseline.py run")?;
        let same = b.statuses == r.statuses;
        let b_ratio = b.usage.wall.as_secs_f64() / b.limit.as_secs_f64();
        println!(
            "baseline.py (official Python SDK + cedarpy, {in_flight} threads): {} requests, \
             limit {:.3} s, wall {:.3} s ({b_ratio:.2}x limit), cpu {:.3} s, peak RSS {}; \
             same final status for every connection: {}",
            b.requests,
            b.limit.as_secs_f64(),
            b.usage.wall.as_secs_f64(),
            b.usage.cpu.as_secs_f64(),
            mib(b.usage.max_rss_kib),
            if same { "yes" } else { "NO" },
        );
        let cpu_x = b.usage.cpu.as_secs_f64() / r.usage.cpu.as_secs_f64().max(1e-3);
        println!(
            "  daemon vs baseline.py: wall {:.2}x faster, CPU {cpu_x:.1}x less, peak RSS {:.1}x less",
            b.usage.wall.as_secs_f64() / r.usage.wall.as_secs_f64(),
            b.usage.max_rss_kib as f64 / r.usage.max_rss_kib.max(1) as f64,
        );
        ok &= report_targets(&[("CPU >= 20x less", cpu_x >= 20.0), ("same decisions", same)]);
    }

    if large > 0 {
        let r = drain(
            &bin,
            Shape {
                pending: large,
                ..shape
            },
        )
        .context("large drain run")?;
        report(&r, latency, in_flight);
        ok &= report_targets(&[("peak RSS <= 30 MiB", r.usage.max_rss_kib <= 30 * 1024)]);
    }
    if !ok {
        bail!("a target was missed");
    }
    Ok(())
}
