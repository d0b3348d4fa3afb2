//! Cost of the bounded HTTP listener under a flood (issue 14): the daemon (`run`, 10
//! services, nothing pending, `[http]` with the default 64 connections) is sampled through
//! `/proc/<pid>` for a quiet period, then for the same time while 300 loopback sockets that
//! sent half a request line (or nothing) are kept open, the ones the daemon closes opened
//! again every second. Reports CPU and RSS of both periods, open descriptors, what the
//! daemon closed, and how long `/healthz` took meanwhile.
//!
//! ```sh
//! cargo bench --bench flood -- --seconds 30 --sockets 300
//! ```

mod common;

use anyhow::{Context as _, bail};
use common::*;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One `/healthz` exchange; its status and how long it took.
fn probe(addr: SocketAddr) -> (u16, Duration) {
    let t = Instant::now();
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, t.elapsed());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, t.elapsed())
}

fn metric(addr: SocketAddr, name: &str) -> f64 {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return -1.0;
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(-1.0)
}

/// Measured over one period.
struct Period {
    cpu_s: f64,
    secs: f64,
    rss_max_kib: u64,
    rss_end_kib: u64,
    fds_max: usize,
    probe_max: Duration,
    probes_failed: usize,
}

fn measure(pid: u32, addr: SocketAddr, secs: f64, tck: f64) -> anyhow::Result<Period> {
    let first = sample(pid)?;
    let end = first.at + Duration::from_secs_f64(secs);
    let mut last = first;
    let (mut rss_max, mut fds_max) = (first.rss_kib, first.fds);
    let (mut probe_max, mut failed) = (Duration::ZERO, 0);
    while Instant::now() < end {
        std::thread::sleep(
            Duration::from_secs(1).min(end.saturating_duration_since(Instant::now())),
        );
        let (status, took) = probe(addr);
        if status != 200 {
            failed += 1;
        }
        probe_max = probe_max.max(took);
        last = sample(pid)?;
        rss_max = rss_max.max(last.rss_kib);
        fds_max = fds_max.max(last.fds);
    }
    Ok(Period {
        cpu_s: (last.cpu_ticks - first.cpu_ticks) as f64 / tck,
        secs: last.at.duration_since(first.at).as_secs_f64(),
        rss_max_kib: rss_max,
        rss_end_kib: last.rss_kib,
        fds_max,
        probe_max,
        probes_failed: failed,
    })
}

/// Keeps `n` half-sent or silent sockets open until `stop`; counts the ones opened.
fn flood(
    addr: SocketAddr,
    n: usize,
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut open: Vec<TcpStream> = Vec::with_capacity(n);
        while !stop.load(Ordering::Relaxed) {
            for i in open.len()..n {
                let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
                    continue;
                };
                if i % 3 != 2 {
                    let _ = s.write_all(b"GET /healthz HT");
                }
                let _ = s.set_nonblocking(true);
                open.push(s);
                opened.fetch_add(1, Ordering::Relaxed);
            }
            let round = Instant::now();
            while round.elapsed() < Duration::from_secs(1) && !stop.load(Ordering::Relaxed) {
                open.retain_mut(|s| {
                    let mut buf = [0u8; 256];
                    match s.read(&mut buf) {
                        Ok(0) => false,
                        Ok(_) => true,
                        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                    }
                });
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    })
}

fn main() -> anyhow::Result<()> {
    let o = Opts::from_env();
    let secs: f64 = o.num("seconds", 30.0)?;
    let sockets: usize = o.num("sockets", 300)?;
    let services: usize = o.num("services", 10)?;
    let bin = binary()?;
    println!("machine: {}", machine());

    let sim = SimProcess::start(
        &bin,
        &drain_seed(services, 0),
        Duration::from_millis(20),
        0.0,
    )?;
    let dir = tempfile::tempdir()?;
    let cfg = write_config(
        dir.path(),
        &sim.url,
        "interval = \"30s\"\njitter = \"3s\"\nmax_in_flight = 8\nmax_requests_per_second = 10",
        "info",
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut text = std::fs::read_to_string(&cfg)?;
    text.push_str(&format!("\n[http]\nlisten = \"127.0.0.1:{port}\"\n"));
    std::fs::write(&cfg, text)?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let log = std::fs::File::create(dir.path().join("daemon.log"))?;
    let mut child = daemon_command(&bin, &cfg, &["run"])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the daemon")?;
    let pid = child.id();
    let tck = clk_tck();
    // Warm-up: the first cycle and its allocations.
    std::thread::sleep(Duration::from_secs(5));

    let quiet = measure(pid, addr, secs, tck)?;
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let refused_before = metric(addr, "vpcep_approver_http_connections_refused_total");
    let flooding = flood(addr, sockets, stop.clone(), opened.clone());
    let loud = measure(pid, addr, secs, tck)?;
    stop.store(true, Ordering::Relaxed);
    flooding
        .join()
        .map_err(|_| anyhow::anyhow!("flood thread panicked"))?;
    let refused = metric(addr, "vpcep_approver_http_connections_refused_total") - refused_before;
    // Once the flood is over, the held connections are closed by the 5 s header limit.
    std::thread::sleep(Duration::from_secs(7));
    let after = sample(pid)?;
    if let Some(st) = child.try_wait()? {
        bail!("the daemon exited early: {st}");
    }
    let _ = terminate(&mut child, Duration::from_secs(15));

    let pct = |p: &Period| p.cpu_s / p.secs * 100.0;
    for (name, p) in [("quiet", &quiet), ("flood", &loud)] {
        println!(
            "{name}: {:.1} s, cpu {:.3} s = {:.3}% of a core; RSS max {} (end {}); fds max {}; \
             /healthz slowest {:.1} ms, {} failed",
            p.secs,
            p.cpu_s,
            pct(p),
            mib(p.rss_max_kib),
            mib(p.rss_end_kib),
            p.fds_max,
            p.probe_max.as_secs_f64() * 1000.0,
            p.probes_failed,
        );
    }
    println!(
        "flood: {sockets} sockets kept open, {} opened in all ({:.0}/s), {refused} closed by the \
         daemon to make room; 7 s after it: RSS {}, fds {}",
        opened.load(Ordering::Relaxed),
        opened.load(Ordering::Relaxed) as f64 / loud.secs,
        mib(after.rss_kib),
        after.fds,
    );
    let probes_ok = loud.probes_failed == 0 && loud.probe_max < Duration::from_secs(1);
    let fds_ok = loud.fds_max <= quiet.fds_max + 64 + 4 && after.fds <= quiet.fds_max + 2;
    println!(
        "  target /healthz answers within 1 s during the flood: {}",
        if probes_ok { "PASS" } else { "MISS" }
    );
    println!(
        "  target fds at most 64 above quiet, back after the flood: {}",
        if fds_ok { "PASS" } else { "MISS" }
    );
    if !(probes_ok && fds_ok) {
        bail!("a target was missed");
    }
    Ok(())
}
