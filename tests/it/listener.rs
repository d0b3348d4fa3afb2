//! The HTTP listener of the real binary under a flood of half-sent and silent connections
//! on loopback (300 kept open, the closed ones opened again every second): probes still
//! answer within a second, a connection that arrives meanwhile is still decided, the
//! daemon's file descriptors stay bounded, what it closes is counted, and every half-sent
//! connection is closed within the 5 s header limit. Once more with the daemon's open files
//! limited to 128 (`prlimit`), as in the sidecar report of issue 14.

use crate::cli::{BIN, repo, start_simulate, write_config};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Sockets in one wave of the flood.
const WAVE: usize = 300;
/// The header limit, plus what a loaded test machine may add before the close is seen.
const CLOSED_WITHIN: Duration = Duration::from_millis(6500);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.0 exchange; (status, body, how long it took). Status 0: no answer.
fn get(addr: SocketAddr, path: &str, limit: Duration) -> (u16, String, Duration) {
    let t = Instant::now();
    let Ok(mut s) = TcpStream::connect_timeout(&addr, limit) else {
        return (0, String::new(), t.elapsed());
    };
    let _ = s.set_read_timeout(Some(limit));
    if write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").is_err() {
        return (0, String::new(), t.elapsed());
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body, t.elapsed())
}

fn post(url: &str, body: &str) -> u16 {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = TcpStream::connect(host).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    resp.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(-1.0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// What the flood saw.
#[derive(Debug, Default)]
struct FloodReport {
    opened: usize,
    /// The longest a flood socket stayed open before the daemon closed it.
    longest: Duration,
    /// Sockets the daemon had not closed within [`CLOSED_WITHIN`] after the flood.
    overdue: usize,
}

/// Keeps [`WAVE`] sockets open against `addr`, two of three having sent half a request
/// line and the third nothing: every second the ones the daemon closed are opened again.
/// After `stop`, waits for the daemon to close the rest.
fn flood(addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<FloodReport> {
    std::thread::spawn(move || {
        let mut report = FloodReport::default();
        let mut open: Vec<(TcpStream, Instant)> = Vec::with_capacity(WAVE);
        let poll = |open: &mut Vec<(TcpStream, Instant)>, report: &mut FloodReport| {
            open.retain_mut(|(s, at)| {
                let mut buf = [0u8; 512];
                let closed = match s.read(&mut buf) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                };
                if closed {
                    report.longest = report.longest.max(at.elapsed());
                }
                !closed
            });
        };
        while !stop.load(Ordering::Relaxed) {
            for i in open.len()..WAVE {
                let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
                    continue;
                };
                if i % 3 != 2 {
                    let _ = s.write_all(b"GET /healthz HT");
                }
                s.set_nonblocking(true).expect("nonblocking");
                open.push((s, Instant::now()));
                report.opened += 1;
            }
            let round = Instant::now();
            while round.elapsed() < Duration::from_secs(1) && !stop.load(Ordering::Relaxed) {
                poll(&mut open, &mut report);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let last = Instant::now();
        while !open.is_empty() && last.elapsed() < CLOSED_WITHIN + Duration::from_secs(1) {
            poll(&mut open, &mut report);
            std::thread::sleep(Duration::from_millis(20));
        }
        report.overdue = open.len();
        report
    })
}

/// Starts the simulator and the daemon (`wrap` runs before the binary, e.g. `prlimit`);
/// waits until it is ready. Returns the simulator, the daemon, its address and the
/// audit path; the temporary directory lives as long as the guard.
fn start(
    wrap: &[&str],
) -> (
    crate::cli::SimProcess,
    Daemon,
    SocketAddr,
    std::path::PathBuf,
    tempfile::TempDir,
) {
    let sim = start_simulate(&["--seed", repo("examples/seed.json").to_str().expect("utf8")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit.jsonl");
    let port = free_port();
    let cfg = write_config(
        dir.path(),
        &repo("policies"),
        &format!(
            "vpcep_endpoint = \"{0}\"\niam_endpoint = \"{0}\"\n[poll]\ninterval = \"1s\"\njitter = \"0s\"\n[audit]\npath = {1:?}\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            sim.url,
            audit.display().to_string()
        ),
    );
    let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log");
    let mut cmd = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    let child = cmd
        .args(["-c", cfg.to_str().expect("utf8"), "run"])
        .env("HUAWEICLOUD_SDK_AK", "CLIAK")
        .env("HUAWEICLOUD_SDK_SK", "CLISECRET")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("daemon starts");
    let daemon = Daemon(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(addr, "/readyz", Duration::from_secs(2)).0 != 200 {
        assert!(Instant::now() < deadline, "daemon never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    (sim, daemon, addr, audit, dir)
}

/// Sets the flag when dropped (also while unwinding).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn flood_run(wrap: &[&str], endpoint_id: &str) {
    let (sim, daemon, addr, audit, dir) = start(wrap);
    let pid = daemon.0.id();
    let fds_before = open_fds(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = flood(addr, stop.clone());
    // A failed assertion below must not leave the flood running against a port that
    // another test may get next.
    let _stop_on_panic = StopOnDrop(stop.clone());
    // Let the first wave fill the limit before anything else.
    std::thread::sleep(Duration::from_millis(300));

    // A connection arrives during the flood.
    let st = post(
        &format!("{}/_sim/connections", sim.url),
        &format!(
            r#"{{"service_id":"4189d3c2-8882-4871-a3c2-d380272eed88","id":"{endpoint_id}","domain_id":"6e9dfd51d1124e8d8498dce894923a0d","description":"CHG-4242 arrived during a flood"}}"#
        ),
    );
    assert_eq!(st, 201);
    let decided = || {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(endpoint_id) && l.contains("\"outcome\":\"applied\""))
    };
    let started = Instant::now();
    let mut probes = 0;
    let mut max_fds = 0;
    let mut slowest = Duration::ZERO;
    // Probe throughout: at least 5 s of flood, and until the connection is decided.
    while started.elapsed() < Duration::from_secs(5) || !decided() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{endpoint_id} was not decided during the flood; daemon log:\n{}",
            std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
        );
        for path in ["/healthz", "/readyz"] {
            let (status, body, took) = get(addr, path, Duration::from_secs(1));
            assert_eq!(
                status, 200,
                "{path} during the flood: {status} {body:?} after {took:?}"
            );
            assert!(took < Duration::from_secs(1), "{path} took {took:?}");
            slowest = slowest.max(took);
            probes += 1;
        }
        max_fds = max_fds.max(open_fds(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, m, _) = get(addr, "/metrics", Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let report = flooding.join().expect("flood thread");
    eprintln!(
        "flood {wrap:?}: {report:?}; {probes} probes, slowest {slowest:?}; daemon fds {fds_before} before, at most {max_fds} during"
    );
    assert_eq!(
        report.overdue, 0,
        "half-sent connections left open past the header limit: {report:?}"
    );
    assert!(
        report.longest <= CLOSED_WITHIN,
        "a half-sent connection stayed open {:?}",
        report.longest
    );
    // At most max_connections (64) of the flood are held, plus the probes' and a
    // connection being closed to make room.
    assert!(
        max_fds <= fds_before + 64 + 6,
        "daemon fds: {fds_before} before, {max_fds} during"
    );
    // Everything beyond the 64 held was closed to make room, and counted.
    let refused = metric(&m, "vpcep_approver_http_connections_refused_total");
    assert!(
        refused >= (report.opened - WAVE) as f64 && refused >= (WAVE - 64) as f64,
        "refused {refused} of {} sockets:\n{m}",
        report.opened
    );
    // And the decision is in the audit log, chain intact.
    drop(daemon);
    let o = Command::new(BIN)
        .args(["audit", "verify", audit.to_str().expect("utf8")])
        .output()
        .expect("verify");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn a_flood_of_half_sent_connections_neither_stalls_probes_nor_decisions() {
    flood_run(&[], "f1000000-0000-4000-8000-000000000001");
}

#[test]
fn the_flood_with_128_open_files_still_decides_and_answers() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("prlimit not installed: skipped");
        return;
    }
    flood_run(
        &["prlimit", "--nofile=128:128", "--"],
        "f1000000-0000-4000-8000-000000000002",
    );
}
