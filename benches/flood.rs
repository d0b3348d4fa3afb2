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

use common::*;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One `/healthz` exchange on a connection of its own; its status (0 when it failed) and
/// how long it took.
fn probe(http: &Http, base: &str) -> (u16, Duration) {
    let t = Instant::now();
    let status = http.get(&format!("{base}/healthz")).map_or(0, |(s, _)| s);
    (status, t.elapsed())
}

/// A value of the daemon's `/metrics` (-1 when it cannot be read).
fn metric(http: &Http, base: &str, name: &str) -> f64 {
    let Ok((_, body)) = http.get(&format!("{base}/metrics")) else {
        return -1.0;
    };
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(-1.0)
}

/// Measured over one period: the daemon's `/proc` samples, one a second, each after a
/// `/healthz` probe.
struct Period {
    watch: Watch,
    probe_max: Duration,
    probes_failed: usize,
}

fn measure(pid: u32, http: &Http, base: &str, secs: f64) -> anyhow::Result<Period> {
    let (mut probe_max, mut failed) = (Duration::ZERO, 0);
    let watch = Watch::run(
        pid,
        Duration::from_secs_f64(secs),
        Duration::from_secs(1),
        || {
            let (status, took) = probe(http, base);
            if status != 200 {
                failed += 1;
            }
            probe_max = probe_max.max(took);
            Ok(())
        },
    )?;
    Ok(Period {
        watch,
        probe_max,
        probes_failed: failed,
    })
}

/// Flood socket number `i`, connected and non-blocking: two of every three sent half a
/// request line, the third nothing.
fn held_socket(addr: SocketAddr, i: usize) -> Option<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    if i % 3 != 2 {
        let _ = s.write_all(b"GET /healthz HT");
    }
    let _ = s.set_nonblocking(true);
    Some(s)
}

/// Whether the daemon has not closed a held socket (what it sent is read and dropped).
fn still_open(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

/// Keeps `n` half-sent or silent sockets open until `stop`, every second opening again the
/// ones the daemon closed; counts the ones opened.
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
                if let Some(s) = held_socket(addr, i) {
                    open.push(s);
                    opened.fetch_add(1, Ordering::Relaxed);
                }
            }
            let round = Instant::now();
            while round.elapsed() < Duration::from_secs(1) && !stop.load(Ordering::Relaxed) {
                open.retain_mut(still_open);
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

    let rig = Rig::start(
        &bin,
        &drain_seed(services, 0),
        Duration::from_millis(20),
        0.0,
        "interval = \"30s\"\njitter = \"3s\"\nmax_in_flight = 8\nmax_requests_per_second = 10",
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut text = std::fs::read_to_string(&rig.cfg)?;
    text.push_str(&format!("\n[http]\nlisten = \"127.0.0.1:{port}\"\n"));
    std::fs::write(&rig.cfg, text)?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let base = format!("http://{addr}");
    let http = Http::new(Duration::from_secs(2), false)?;
    let mut child = rig.spawn_daemon(&bin)?;
    let pid = child.id();
    // Warm-up: the first cycle and its allocations.
    std::thread::sleep(Duration::from_secs(5));

    let quiet = measure(pid, &http, &base, secs)?;
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let refused_before = metric(
        &http,
        &base,
        "vpcep_approver_http_connections_refused_total",
    );
    let flooding = flood(addr, sockets, stop.clone(), opened.clone());
    let loud = measure(pid, &http, &base, secs)?;
    stop.store(true, Ordering::Relaxed);
    flooding
        .join()
        .map_err(|_| anyhow::anyhow!("flood thread panicked"))?;
    let refused = metric(
        &http,
        &base,
        "vpcep_approver_http_connections_refused_total",
    ) - refused_before;
    // Once the flood is over, the held connections are closed by the 5 s header limit.
    std::thread::sleep(Duration::from_secs(7));
    let after = sample(pid)?;
    still_running(&mut child)?;
    let _ = terminate(&mut child, Duration::from_secs(15));

    for (name, p) in [("quiet", &quiet), ("flood", &loud)] {
        println!(
            "{name}: {:.1} s, cpu {:.3} s = {:.3}% of a core; RSS max {} (end {}); fds max {}; \
             /healthz slowest {:.1} ms, {} failed",
            p.watch.secs(),
            p.watch.cpu_s(),
            p.watch.core_pct(),
            mib(p.watch.max(|s| s.rss_kib)),
            mib(p.watch.last().rss_kib),
            p.watch.max(|s| s.fds),
            p.probe_max.as_secs_f64() * 1000.0,
            p.probes_failed,
        );
    }
    println!(
        "flood: {sockets} sockets kept open, {} opened in all ({:.0}/s), {refused} closed by the \
         daemon to make room; 7 s after it: RSS {}, fds {}",
        opened.load(Ordering::Relaxed),
        opened.load(Ordering::Relaxed) as f64 / loud.watch.secs(),
        mib(after.rss_kib),
        after.fds,
    );
    let quiet_fds = quiet.watch.max(|s| s.fds);
    check_targets(&[
        (
            "/healthz answers within 1 s during the flood",
            loud.probes_failed == 0 && loud.probe_max < Duration::from_secs(1),
        ),
        (
            "fds at most 64 above quiet, back after the flood",
            loud.watch.max(|s| s.fds) <= quiet_fds + 64 + 4 && after.fds <= quiet_fds + 2,
        ),
    ])
}
