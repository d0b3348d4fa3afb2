//! Rate-limit accuracy (issue 5, item 2): with `max_requests_per_second = 40`, 500 actions
//! take 12.5 s ± 5% and never exceed 40 in any one-second window. The simulator (its own
//! process) timestamps every action it receives; the daemon runs `run --once`.
//!
//! ```sh
//! cargo bench --bench ratelimit -- --actions 500 --rate 40 --in-flight 16 --latency 20ms
//! ```
//! The limiter covers every request (listings too), so the figure also reports the
//! daemon's wall time and the requests it sent.

mod common;

use anyhow::bail;
use common::*;

fn main() -> anyhow::Result<()> {
    let o = Opts::from_env();
    let actions: usize = o.num("actions", 500)?;
    let rate: u32 = o.num("rate", 40)?;
    let in_flight: usize = o.num("in-flight", 16)?;
    let services: usize = o.num("services", 5)?;
    let latency = o.dur("latency", "20ms")?;
    let bin = binary()?;
    println!("machine: {}", machine());

    let poll = format!(
        "max_in_flight = {in_flight}\nmax_requests_per_second = {rate}\nrequest_timeout = \"10s\"\nmax_retries = 4"
    );
    let rig = Rig::start(&bin, &drain_seed(services, actions), latency, 0.0, &poll)?;
    let usage = rig.run_once(&bin)?;
    let state = rig.sim.state()?;
    if usage.code != Some(0) || still_pending(&state) != 0 || state.actions.len() != actions {
        bail!(
            "run --once exited {:?}: {} actions received, {} still pending (log in {})",
            usage.code,
            state.actions.len(),
            still_pending(&state),
            rig.dir.keep().display()
        );
    }
    let times = action_times_ms(&state)?;
    let span_ms = times.last().copied().unwrap_or(0) - times.first().copied().unwrap_or(0);
    let max_1s = max_in_window(&times, 1000);
    let expected = actions as f64 / f64::from(rate);
    let wall = usage.wall.as_secs_f64();
    let dev = (wall - expected) / expected * 100.0;
    println!(
        "rate {rate}/s, {actions} actions ({} requests in all), C={in_flight}, L={}: \
         wall {wall:.3} s (expected {expected:.2} s, {dev:+.1}%), first-to-last action {:.3} s, \
         most actions in any 1 s window {max_1s}, cpu {:.3} s, peak RSS {}",
        total_requests(&state),
        humantime::format_duration(latency),
        span_ms as f64 / 1000.0,
        usage.cpu.as_secs_f64(),
        mib(usage.max_rss_kib),
    );
    check_targets(&[
        (format!("{expected:.2} s ± 5%"), dev.abs() <= 5.0),
        (
            format!("<= {rate} in any 1 s window"),
            max_1s <= rate as usize,
        ),
    ])
}
