//! Soak (issue 5, item 6): the daemon (`run`, its own process) against the simulator (its
//! own process) for N minutes with random 429/500/503 faults, scripted hostile answers
//! every 30 s (garbage and truncated bodies, answers slower than the request timeout,
//! applied actions whose answer is lost, throttling) and new connections arriving every
//! second through `POST /_sim/connections`. Afterwards the faults stop and the daemon gets
//! time to catch up; then it must have decided every connection, the audit chain must be
//! intact, and neither RSS nor open file descriptors may have grown.
//!
//! ```sh
//! cargo bench --bench soak -- --minutes 10 --services 10 --fault-rate 0.1 --interval 5s
//! ```

mod common;

use anyhow::{Context as _, bail};
use common::*;
use serde_json::json;
use std::collections::HashSet;
use std::time::{Duration, Instant};

fn faults(rate: f64, latency: Duration, round: u64) -> serde_json::Value {
    let lat = humantime::format_duration(latency).to_string();
    let mut script = vec![
        json!({"op": "list_connections", "status": 200, "body": "garbage"}),
        json!({"op": "list_connections", "status": 200,
               "body": "{\"connections\":[{\"id\":\"x\",\"status\":\"pendingAcc"}),
        json!({"op": "action", "status": 500, "apply": true}),
        json!({"op": "action", "status": 400, "error_code": "EndPoint.0022",
               "error_msg": "throttled"}),
        json!({"op": "list_services", "status": 503, "times": 2}),
    ];
    // Every other round, one answer slower than the request timeout.
    if round % 2 == 1 {
        script.push(json!({"op": "any", "status": 200, "body": "{}", "delay": "3s"}));
    }
    json!({"fault_rate": rate, "latency": lat, "error_shape": "random", "script": script})
}

fn main() -> anyhow::Result<()> {
    let o = Opts::from_env();
    let minutes: f64 = o.num("minutes", 10.0)?;
    let services: usize = o.num("services", 10)?;
    let rate: f64 = o.num("fault-rate", 0.1)?;
    let interval = o.str("interval", "5s");
    let latency = o.dur("latency", "20ms")?;
    let every = o.dur("sample", "10s")?;
    let bin = binary()?;
    println!("machine: {}", machine());

    let poll = format!(
        "interval = \"{interval}\"\njitter = \"1s\"\nrequest_timeout = \"2s\"\nmax_in_flight = 8\n\
         max_requests_per_second = 50\nmax_retries = 4"
    );
    let rig = Rig::start(&bin, &drain_seed(services, 50), latency, rate, &poll)?;
    let sim = &rig.sim;
    let mut child = rig.spawn_daemon(&bin)?;
    let pid = child.id();

    let started = Instant::now();
    let end = started + Duration::from_secs_f64(minutes * 60.0);
    let mut samples = Vec::new();
    let mut next_sample = started + Duration::from_secs(15);
    let mut next_faults = started;
    let mut round = 0u64;
    let mut added = 0usize;
    while Instant::now() < end {
        if let Some(st) = child.try_wait()? {
            bail!("the daemon exited during the soak: {st}");
        }
        let now = Instant::now();
        if now >= next_faults {
            sim.post("faults", &faults(rate, latency, round))?;
            round += 1;
            next_faults = now + Duration::from_secs(30);
        }
        if now >= next_sample {
            samples.push(sample(pid)?);
            next_sample = now + every;
        }
        // 1–3 new connections per second on a random service.
        let n = rand::random_range(1..=3usize);
        let svc = rand::random_range(0..services);
        let conns: Vec<serde_json::Value> = (0..n)
            .map(|k| {
                let i = 1_000_000 + added + k;
                let domain = match i % 4 {
                    0 => INTERNAL.to_owned(),
                    1 => BLOCKED.to_owned(),
                    _ => format!("{:032x}", 0x50a_0000_u64 + i as u64),
                };
                json!({"domain_id": domain, "description": format!("CHG-{i} soak \"quoted\"\nline")})
            })
            .collect();
        sim.post(
            "connections",
            &json!({"service_id": format!("5e000000-0000-4000-8000-{svc:012}"), "connections": conns}),
        )?;
        added += n;
        std::thread::sleep(Duration::from_secs(1));
    }

    // Catch up without faults: every connection must end up decided.
    sim.post(
        "faults",
        &json!({"latency": humantime::format_duration(latency).to_string()}),
    )?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let state = loop {
        let s = sim.state()?;
        if still_pending(&s) == 0 || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let final_sample = sample(pid)?;
    let code = terminate(&mut child, Duration::from_secs(20))?;

    let total: usize = state.services.iter().map(|s| s.connections.len()).sum();
    let pending = still_pending(&state);
    let audit = rig.dir.path().join("audit.jsonl");
    let (chain_ok, verify_out) = audit_verify(&bin, &audit)?;
    let text = std::fs::read_to_string(&audit).context("reading the audit log")?;
    let mut decided = HashSet::new();
    let mut lines = 0usize;
    for l in text.lines() {
        lines += 1;
        let v: serde_json::Value = serde_json::from_str(l).context("audit line is JSON")?;
        if v["kind"] == "decision"
            && let Some(e) = v["endpoint_id"].as_str()
        {
            decided.insert(e.to_owned());
        }
    }
    let undecided = state
        .services
        .iter()
        .flat_map(|s| &s.connections)
        .filter(|c| !decided.contains(&c.id))
        .count();

    // Growth: the first two minutes after warm-up against the last two minutes.
    let window = Duration::from_secs(120);
    let (early_rss, late_rss) = early_and_late(&samples, window, |s| s.rss_kib);
    let (early_fds, late_fds) = early_and_late(&samples, window, |s| s.fds as u64);
    let actions = state.actions.len();
    let failed_http = state
        .actions
        .iter()
        .filter(|a| a.http_status >= 400)
        .count();
    println!(
        "soak {:.1} min, {services} services, fault rate {rate}, {round} scripted rounds: \
         {total} connections ({added} arrived), {pending} still pending, {undecided} without a \
         decision record; {actions} actions received ({failed_http} answered with an error); \
         {lines} audit lines, chain {}; RSS first 2 min {} / last 2 min {} (peak {}); \
         fds first 2 min {early_fds} / last 2 min {late_fds}; exit {code:?} on SIGTERM",
        minutes,
        if chain_ok { "intact" } else { "BROKEN" },
        mib(early_rss),
        mib(late_rss),
        mib(final_sample.hwm_kib),
    );
    let checks = [
        ("every connection decided", pending == 0 && undecided == 0),
        ("audit chain intact", chain_ok),
        (
            "RSS did not grow (+256 KiB noise)",
            late_rss <= early_rss + 256,
        ),
        ("open fds did not grow", late_fds <= early_fds),
        ("clean exit on SIGTERM", code == Some(0)),
    ];
    let ok = report_checks(&checks);
    if !chain_ok {
        println!("{verify_out}");
    }
    if !ok {
        bail!("a soak check failed (logs in {})", rig.dir.keep().display());
    }
    Ok(())
}
