//! Shared helpers of the bench binaries: command-line options, the release binary, the
//! simulator as a separate process (so the daemon is measured, not the simulator), a
//! generated config, and measurements of a child process (wall time, CPU time and peak RSS
//! from GNU `time`; RSS, CPU ticks and open descriptors from `/proc` while it runs).
//!
//! Every bench measures the real `vpcep-approver` binary (`target/release/vpcep-approver`,
//! built with `cargo build --release` when missing, or `$VPCEP_APPROVER_BIN`).

#![allow(dead_code)] // each bench uses a different subset

use anyhow::{Context as _, bail};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vpcep_approver::sim::{Seed, SeedConnection, SeedService, SimSnapshot};

/// Access key the simulator child accepts and the daemon signs with.
pub const AK: &str = "BENCHACCESSKEY0000001";
/// Secret key of [`AK`].
pub const SK: &str = "BENCHSECRETKEY0123456789abcdefghij";
/// Project of the generated config (also an `internal` account of the shipped entities).
pub const PROJECT: &str = "0605767a3300d5762fb7c0186d8bfc2b";

/// Account ids of the shipped `policies/entities.json`.
pub const INTERNAL: &str = "0605767a3300d5762fb7c0186d8bfc2b";
/// On the block list of the shipped policies.
pub const BLOCKED: &str = "9d8c7b6a5f4e4d3c2b1a0f9e8d7c6b5a";

/// `--key value` options; anything else (cargo adds `--bench`) is ignored.
#[derive(Debug, Clone)]
pub struct Opts(Vec<String>);

impl Opts {
    /// The process arguments.
    pub fn from_env() -> Opts {
        Opts(std::env::args().skip(1).collect())
    }

    fn raw(&self, key: &str) -> Option<&str> {
        let flag = format!("--{key}");
        let mut it = self.0.iter();
        while let Some(a) = it.next() {
            if *a == flag {
                return it.next().map(String::as_str);
            }
            if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
                return Some(v);
            }
        }
        None
    }

    /// A number option.
    pub fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> anyhow::Result<T> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| anyhow::anyhow!("--{key} {v:?} is not a number")),
        }
    }

    /// A humantime duration option (`20ms`, `10m`).
    pub fn dur(&self, key: &str, default: &str) -> anyhow::Result<Duration> {
        let v = self.raw(key).unwrap_or(default);
        humantime::parse_duration(v).with_context(|| format!("--{key} {v:?}"))
    }

    /// A string option.
    pub fn str(&self, key: &str, default: &str) -> String {
        self.raw(key).unwrap_or(default).to_owned()
    }
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The release binary: `$VPCEP_APPROVER_BIN`, else `<target dir>/release/vpcep-approver`,
/// built with `cargo build --release` first when it does not exist.
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("VPCEP_APPROVER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let bin = target.join("release").join("vpcep-approver");
    if !bin.exists() {
        eprintln!("building {} (cargo build --release)", bin.display());
        let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--bin", "vpcep-approver"])
            .current_dir(repo())
            .status()
            .context("running cargo build --release")?;
        if !st.success() || !bin.exists() {
            bail!("cargo build --release failed ({st})");
        }
    }
    Ok(bin)
}

/// `services` services with `pending` pending connections spread evenly, created now:
/// every 4th from an internal account (accepted), every 4th from a blocked one (rejected),
/// the rest from unknown accounts (rejected with `on_no_match = "reject"`). Every
/// connection leads to an action.
pub fn drain_seed(services: usize, pending: usize) -> Seed {
    let services = services.max(1);
    let mut out: Vec<SeedService> = (0..services)
        .map(|s| {
            SeedService::named(
                format!("5e000000-0000-4000-8000-{s:012}"),
                format!("cn-north-4.bench-{s}.5e000000"),
                Vec::new(),
            )
        })
        .collect();
    for i in 0..pending {
        let domain = match i % 4 {
            0 => INTERNAL.to_owned(),
            1 => BLOCKED.to_owned(),
            _ => format!("{:032x}", 0xbe_0000_u64 + i as u64),
        };
        out[i % services].connections.push(SeedConnection {
            id: Some(format!("e0000000-0000-4000-8000-{i:012}")),
            domain_id: Some(domain),
            description: Some(format!("CHG-{i} bench connection")),
            marker_id: Some(1_000_000 + i as i64),
            ..SeedConnection::default()
        });
    }
    Seed { services: out }
}

/// A blocking HTTP client (reqwest on a runtime of its own).
pub struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    /// Each request may take `timeout`. With `reuse` false every request opens a connection
    /// of its own, as a fresh client (a probe) would.
    pub fn new(timeout: Duration, reuse: bool) -> anyhow::Result<Http> {
        vpcep_approver::cloud::init_tls();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut builder = reqwest::Client::builder().timeout(timeout);
        if !reuse {
            builder = builder.pool_max_idle_per_host(0);
        }
        Ok(Http {
            rt,
            client: builder.build()?,
        })
    }

    /// `GET url`: the status and the body, whatever the status.
    pub fn get(&self, url: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        self.rt.block_on(async {
            let r = self.client.get(url).send().await?;
            let status = r.status().as_u16();
            Ok((status, r.bytes().await?.to_vec()))
        })
    }

    /// `POST url` with a JSON body; the status must be 2xx.
    pub fn post_json(&self, url: &str, body: &serde_json::Value) -> anyhow::Result<()> {
        self.rt.block_on(async {
            self.client
                .post(url)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(body)?)
                .send()
                .await?
                .error_for_status()?;
            Ok(())
        })
    }
}

/// The simulator as a child process (`vpcep-approver simulate`), killed on drop.
pub struct SimProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    http: Http,
    _dir: tempfile::TempDir,
}

impl SimProcess {
    /// Writes the seed to a file and starts `simulate --listen 127.0.0.1:0 --seed FILE
    /// --latency L --fault-rate F --ak AK --sk SK`; waits for `listening on`.
    pub fn start(
        bin: &Path,
        seed: &Seed,
        latency: Duration,
        fault_rate: f64,
    ) -> anyhow::Result<SimProcess> {
        let dir = tempfile::tempdir().context("tempdir")?;
        let seed_path = dir.path().join("seed.json");
        std::fs::write(&seed_path, serde_json::to_vec(seed)?).context("writing the seed")?;
        let mut child = Command::new(bin)
            .arg("simulate")
            .args(["--listen", "127.0.0.1:0", "--seed"])
            .arg(&seed_path)
            .args([
                "--latency",
                &humantime::format_duration(latency).to_string(),
            ])
            .args(["--fault-rate", &fault_rate.to_string()])
            .args(["--ak", AK, "--sk", SK])
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the simulator")?;
        let stdout = child.stdout.take().context("simulator stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the simulator's first line")?;
        let Some(url) = line.trim().strip_prefix("listening on ").map(str::to_owned) else {
            let _ = child.kill();
            bail!("simulator did not start: {line:?}");
        };
        Ok(SimProcess {
            child,
            url,
            http: Http::new(Duration::from_secs(60), true)?,
            _dir: dir,
        })
    }

    /// `GET /_sim/state`.
    pub fn state(&self) -> anyhow::Result<SimSnapshot> {
        let (status, body) = self.http.get(&format!("{}/_sim/state", self.url))?;
        if !(200..300).contains(&status) {
            bail!("GET /_sim/state answered {status}");
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// `POST /_sim/<path>` with a JSON body; the status must be 2xx.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<()> {
        self.http
            .post_json(&format!("{}/_sim/{path}", self.url), body)
    }

    /// The child's pid (its own resource use is not what a bench reports).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `config.toml` in `dir`: one target on `url`, the shipped policies with
/// `on_no_match = "reject"`, the audit log at `dir/audit.jsonl` (fsync on), `poll` lines
/// as given.
pub fn write_config(dir: &Path, url: &str, poll: &str, log_level: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("config.toml");
    let policies = repo().join("policies");
    let text = format!(
        "[[target]]\nname = \"bench\"\nregion = \"cn-north-4\"\nproject_id = \"{PROJECT}\"\n\
         vpcep_endpoint = \"{url}\"\niam_endpoint = \"{url}\"\n\n\
         [auth]\nmethod = \"aksk\"\n\n[poll]\n{poll}\n\n\
         [policy]\ndir = {policies:?}\non_no_match = \"reject\"\n\n\
         [audit]\npath = \"audit.jsonl\"\nfsync = true\n\n\
         [log]\nformat = \"text\"\nlevel = \"{log_level}\"\n",
        policies = policies.display().to_string()
    );
    std::fs::write(&path, text).context("writing the bench config")?;
    Ok(path)
}

/// The simulator (seeded with `seed`) and a config for it (`poll` lines as given, log level
/// `info`) in a scratch directory: what every bench that runs the daemon starts with.
pub struct Rig {
    pub sim: SimProcess,
    pub dir: tempfile::TempDir,
    /// `dir/config.toml`.
    pub cfg: PathBuf,
}

impl Rig {
    pub fn start(
        bin: &Path,
        seed: &Seed,
        latency: Duration,
        fault_rate: f64,
        poll: &str,
    ) -> anyhow::Result<Rig> {
        let sim = SimProcess::start(bin, seed, latency, fault_rate)?;
        let dir = tempfile::tempdir()?;
        let cfg = write_config(dir.path(), &sim.url, poll, "info")?;
        Ok(Rig { sim, dir, cfg })
    }

    /// `dir/daemon.log`, where the daemon's stdout and stderr go.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// Runs `run --once` on the config under [`run_measured`], its output in [`Rig::log`].
    pub fn run_once(&self, bin: &Path) -> anyhow::Result<Usage> {
        run_measured(
            &daemon_command(bin, &self.cfg, &["run", "--once"]),
            &self.log(),
        )
    }

    /// Starts the daemon (`run`) on the config, its output in [`Rig::log`].
    pub fn spawn_daemon(&self, bin: &Path) -> anyhow::Result<Child> {
        let log = std::fs::File::create(self.log())?;
        daemon_command(bin, &self.cfg, &["run"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the daemon")
    }
}

/// A command for the daemon with the bench credentials and a clean environment.
pub fn daemon_command(bin: &Path, config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.arg("-c")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("VPCEP_APPROVER_CONFIG")
        .env("HUAWEICLOUD_SDK_AK", AK)
        .env("HUAWEICLOUD_SDK_SK", SK)
        .env_remove("HUAWEICLOUD_SDK_SECURITY_TOKEN")
        .stdin(Stdio::null());
    c
}

/// What a finished child used.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Wall time from spawn to exit.
    pub wall: Duration,
    /// User + system CPU time.
    pub cpu: Duration,
    /// Peak resident set size, KiB.
    pub max_rss_kib: u64,
}

/// Runs `cmd` under GNU `time` (`/usr/bin/time`, which reads the child's `rusage` from
/// `wait4`) and returns its usage. The child's stdout/stderr go to `log`.
pub fn run_measured(cmd: &Command, log: &Path) -> anyhow::Result<Usage> {
    let time = Path::new("/usr/bin/time");
    if !time.exists() {
        bail!("/usr/bin/time (GNU time) is needed to read the child's rusage");
    }
    let out_file = log.with_extension("time");
    let mut c = Command::new(time);
    c.args(["-f", "%e %U %S %M %x", "-o"])
        .arg(&out_file)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let logf = std::fs::File::create(log).context("creating the child log")?;
    c.stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf);
    let started = Instant::now();
    let st = c
        .status()
        .context("running the daemon under /usr/bin/time")?;
    let wall = started.elapsed();
    let text = std::fs::read_to_string(&out_file).context("reading the time output")?;
    // GNU time prints "Command exited with non-zero status N" first when it failed.
    let last = text.lines().last().unwrap_or_default();
    let f: Vec<&str> = last.split_whitespace().collect();
    if f.len() != 5 {
        bail!("unexpected /usr/bin/time output {text:?}");
    }
    let secs = |s: &str| s.parse::<f64>().map(Duration::from_secs_f64);
    Ok(Usage {
        code: st.code(),
        wall,
        cpu: secs(f[1])? + secs(f[2])?,
        max_rss_kib: f[3].parse()?,
    })
}

/// One `/proc` sample of a running process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it was taken.
    pub at: Instant,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Peak resident set size so far, KiB.
    pub hwm_kib: u64,
    /// User + system CPU, clock ticks.
    pub cpu_ticks: u64,
    /// Open file descriptors.
    pub fds: usize,
}

/// Samples `/proc/<pid>`.
pub fn sample(pid: u32) -> anyhow::Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at "state" (field 3);
    // utime and stime are fields 14 and 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc/pid/stat")?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| -> u64 { f.get(i - 3).and_then(|v| v.parse().ok()).unwrap_or(0) };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok(Sample {
        at: Instant::now(),
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
        cpu_ticks: tick(14) + tick(15),
        fds,
    })
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 when unknown), asked once.
pub fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// `/proc` samples of one process over a period, oldest first; never empty.
pub struct Watch(Vec<Sample>);

impl Watch {
    /// Samples `pid` now, then every `every` until `period` has passed since; `between` runs
    /// before each later sample (a probe, a check that the process still runs).
    pub fn run(
        pid: u32,
        period: Duration,
        every: Duration,
        mut between: impl FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<Watch> {
        let first = sample(pid)?;
        let end = first.at + period;
        let mut samples = vec![first];
        while Instant::now() < end {
            std::thread::sleep(every.min(end.saturating_duration_since(Instant::now())));
            between()?;
            samples.push(sample(pid)?);
        }
        Ok(Watch(samples))
    }

    pub fn samples(&self) -> &[Sample] {
        &self.0
    }

    pub fn first(&self) -> Sample {
        self.0[0]
    }

    pub fn last(&self) -> Sample {
        self.0[self.0.len() - 1]
    }

    /// Seconds from the first sample to the last.
    pub fn secs(&self) -> f64 {
        self.last().at.duration_since(self.first().at).as_secs_f64()
    }

    /// CPU seconds (user + system) from the first sample to the last.
    pub fn cpu_s(&self) -> f64 {
        (self.last().cpu_ticks - self.first().cpu_ticks) as f64 / clk_tck()
    }

    /// [`Watch::cpu_s`] as a percentage of one core over [`Watch::secs`].
    pub fn core_pct(&self) -> f64 {
        self.cpu_s() / self.secs() * 100.0
    }

    /// The largest of `f` over the samples.
    pub fn max<T: Ord>(&self, f: impl Fn(&Sample) -> T) -> T {
        self.0.iter().map(f).max().expect("a watch has a sample")
    }

    /// The smallest of `f` over the samples.
    pub fn min<T: Ord>(&self, f: impl Fn(&Sample) -> T) -> T {
        self.0.iter().map(f).min().expect("a watch has a sample")
    }
}

/// The largest `f` of the samples within `window` after the first sample, and of those
/// within `window` before the last (growth: the start of a run against its end); 0 for no
/// samples.
pub fn early_and_late(
    samples: &[Sample],
    window: Duration,
    f: impl Fn(&Sample) -> u64,
) -> (u64, u64) {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return (0, 0);
    };
    let max_within = |from: Instant, to: Instant| {
        samples
            .iter()
            .filter(|s| s.at >= from && s.at <= to)
            .map(&f)
            .max()
            .unwrap_or(0)
    };
    (
        max_within(first.at, first.at + window),
        max_within(last.at - window.min(last.at - first.at), last.at),
    )
}

/// Fails when the child has exited.
pub fn still_running(child: &mut Child) -> anyhow::Result<()> {
    if let Some(st) = child.try_wait()? {
        bail!("the daemon exited early: {st}");
    }
    Ok(())
}

/// Sends SIGTERM to a child we started (by its pid) and waits for it.
pub fn terminate(child: &mut Child, wait: Duration) -> anyhow::Result<Option<i32>> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + wait;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(st.code());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the daemon did not stop within {wait:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `vpcep-approver audit verify FILE`: whether the chain is intact, and the output.
pub fn audit_verify(bin: &Path, file: &Path) -> anyhow::Result<(bool, String)> {
    let o = Command::new(bin)
        .args(["audit", "verify"])
        .arg(file)
        .output()
        .context("running audit verify")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok((o.status.success(), text.trim().to_owned()))
}

/// API requests the simulator received, all operations together.
pub fn total_requests(s: &SimSnapshot) -> u64 {
    s.requests.values().sum()
}

/// Connections still pending in the simulator.
pub fn still_pending(s: &SimSnapshot) -> usize {
    s.services
        .iter()
        .flat_map(|x| &x.connections)
        .filter(|c| c.status == "pendingAcceptance")
        .count()
}

/// Milliseconds since the epoch of every action the simulator received, sorted.
pub fn action_times_ms(s: &SimSnapshot) -> anyhow::Result<Vec<i64>> {
    let mut v = s
        .actions
        .iter()
        .map(|a| {
            chrono::DateTime::parse_from_rfc3339(&a.time)
                .map(|t| t.timestamp_millis())
                .with_context(|| format!("action time {:?}", a.time))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    v.sort_unstable();
    Ok(v)
}

/// Most timestamps (sorted, ms) in any half-open window `[t, t + window_ms)`.
pub fn max_in_window(sorted_ms: &[i64], window_ms: i64) -> usize {
    let mut best = 0;
    let mut j = 0;
    for i in 0..sorted_ms.len() {
        while j < sorted_ms.len() && sorted_ms[j] < sorted_ms[i] + window_ms {
            j += 1;
        }
        best = best.max(j - i);
    }
    best
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The machine line of every report: cores and kernel.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    format!("{cores} cores ({cpu}), Linux {kernel}")
}

/// `PASS` or `MISS`.
pub fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

/// Prints `  NAME: PASS` (or `MISS`) for each check; whether all passed.
pub fn report_checks<S: AsRef<str>>(checks: &[(S, bool)]) -> bool {
    for (name, pass) in checks {
        println!("  {}: {}", name.as_ref(), verdict(*pass));
    }
    checks.iter().all(|(_, pass)| *pass)
}

/// Prints `  target NAME: PASS` (or `MISS`) for each target; whether all were met.
pub fn report_targets<S: AsRef<str>>(targets: &[(S, bool)]) -> bool {
    let named: Vec<(String, bool)> = targets
        .iter()
        .map(|(name, pass)| (format!("target {}", name.as_ref()), *pass))
        .collect();
    report_checks(&named)
}

/// [`report_targets`], then an error when one was missed.
pub fn check_targets<S: AsRef<str>>(targets: &[(S, bool)]) -> anyhow::Result<()> {
    if !report_targets(targets) {
        bail!("a target was missed");
    }
    Ok(())
}
