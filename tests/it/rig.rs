//! The real binary as processes, started one way for every test that needs one: the
//! `simulate` process, and a daemon (a config in the test's directory, the process killed
//! on drop, also when it never comes up, the wait for its listener, its signals, its exit
//! code and its log). Each test says only what differs from the defaults.

use crate::cli::{BIN, repo, write_config};
use crate::support::{Daemon, free_port, http, metric, wait_for};
use serde_json::Value;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vpcep_approver::sim::Seed;

/// The static keys `simulate` is started with, and a daemon signs with by default.
pub const AK: &str = "CLIAK";
pub const SK: &str = "CLISECRET";

/// How long a daemon may take to answer its first probe.
const UP_WITHIN: Duration = Duration::from_secs(30);

/// The binary (behind `wrapper`, e.g. `prlimit … --`, when not empty) with none of the
/// caller's config path, cloud credentials, notify socket or log filter in its
/// environment.
pub fn clean_command(wrapper: &[&str]) -> Command {
    let mut c = match wrapper.split_first() {
        Some((prog, args)) => {
            let mut c = Command::new(prog);
            c.args(args).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    for var in [
        "VPCEP_APPROVER_CONFIG",
        "HUAWEICLOUD_SDK_AK",
        "HUAWEICLOUD_SDK_SK",
        "HUAWEICLOUD_SDK_SECURITY_TOKEN",
        "HC_CONTAINER_CREDENTIALS_FULL_URI",
        "HC_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "NOTIFY_SOCKET",
        "RUST_LOG",
    ] {
        c.env_remove(var);
    }
    c
}

/// `audit verify` over `files`: whether it passed, and its stdout.
pub fn verify(files: &[&Path]) -> (bool, String) {
    let o = clean_command(&[])
        .args(["audit", "verify"])
        .args(files)
        .output()
        .expect("verify runs");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

/// Writes `seed` as `dir/seed.json` for `simulate --seed`.
pub fn write_seed(dir: &Path, seed: &Seed) -> PathBuf {
    let p = dir.join("seed.json");
    std::fs::write(&p, serde_json::to_string(seed).expect("seed json")).expect("seed");
    p
}

/// A `simulate` child process, killed on drop.
pub struct SimProcess {
    child: std::process::Child,
    pub url: String,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `simulate` on a free loopback port with the keys [`AK`]/[`SK`] and `extra`
/// flags; returns once it has printed its address.
pub fn start_simulate(extra: &[&str]) -> SimProcess {
    let mut child = Command::new(BIN)
        .args([
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--ak",
            AK,
            "--sk",
            SK,
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("simulate starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut reader = BufReader::new(stdout);
    while Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).expect("read") == 0 {
            break;
        }
        if let Some(url) = line.trim().strip_prefix("listening on ") {
            return SimProcess {
                child,
                url: url.to_owned(),
            };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("simulate did not print its address");
}

/// `simulate` with the shipped `examples/seed.json`.
pub fn simulate_example() -> SimProcess {
    start_simulate(&["--seed", repo("examples/seed.json").to_str().expect("utf8")])
}

impl SimProcess {
    /// `GET /_sim/state`.
    pub fn state(&self) -> Value {
        let (code, body) = http("GET", &format!("{}/_sim/state", self.url), "");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("state json")
    }

    /// `POST` of `body` to the simulator's control route `path`; asserts `want`.
    pub fn post(&self, path: &str, body: &str, want: u16) {
        let (code, answer) = http("POST", &format!("{}{path}", self.url), body);
        assert_eq!(code, want, "{path}: {answer}");
    }

    /// A pending connection arriving now (`POST /_sim/connections`).
    pub fn add_connection(&self, service: &str, id: &str, domain: &str, description: &str) {
        let body = serde_json::json!({
            "service_id": service, "id": id, "domain_id": domain, "description": description,
        });
        self.post("/_sim/connections", &body.to_string(), 201);
    }

    /// A connection's status now ("" when there is none).
    pub fn status_of(&self, id: &str) -> String {
        status_in(&self.state(), id)
    }
}

/// A connection's status in a `/_sim/state` snapshot ("" when there is none).
pub fn status_in(state: &Value, id: &str) -> String {
    state["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["connections"].as_array().into_iter().flatten())
        .find(|c| c["id"] == id)
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// A daemon to start: by default `run` against the simulator at `sim_url` with the
/// shipped policies, the keys [`AK`]/[`SK`], polling every second without jitter, the
/// audit log at `dir/audit.jsonl`, an HTTP listener on a free port, stderr discarded.
pub struct DaemonRig {
    dir: PathBuf,
    sim_url: String,
    policies: PathBuf,
    poll: String,
    audit: PathBuf,
    audit_extra: String,
    listen: bool,
    tail: String,
    config: Option<PathBuf>,
    port: u16,
    args: Vec<String>,
    wrapper: Vec<String>,
    envs: Vec<(OsString, Option<OsString>)>,
    stderr_log: bool,
}

impl DaemonRig {
    pub fn new(dir: &Path, sim_url: &str) -> DaemonRig {
        DaemonRig {
            dir: dir.to_owned(),
            sim_url: sim_url.to_owned(),
            policies: repo("policies"),
            poll: "interval = \"1s\"\njitter = \"0s\"\n".to_owned(),
            audit: dir.join("audit.jsonl"),
            audit_extra: String::new(),
            listen: true,
            tail: String::new(),
            config: None,
            port: free_port(),
            args: vec!["run".to_owned()],
            wrapper: Vec::new(),
            envs: vec![
                ("HUAWEICLOUD_SDK_AK".into(), Some(AK.into())),
                ("HUAWEICLOUD_SDK_SK".into(), Some(SK.into())),
            ],
            stderr_log: false,
        }
    }

    /// A config the test wrote itself (listening on [`port`](Self::port), if at all), in
    /// place of the rig's.
    pub fn config_file(mut self, cfg: &Path) -> Self {
        self.config = Some(cfg.to_owned());
        self
    }

    /// The free port the listener will be on.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn policies(mut self, dir: &Path) -> Self {
        self.policies = dir.to_owned();
        self
    }

    /// The `[poll]` lines, in place of the default interval and jitter.
    pub fn poll(mut self, lines: &str) -> Self {
        self.poll = lines.to_owned();
        self
    }

    /// `[poll]` lines after the default interval and jitter.
    pub fn poll_more(mut self, lines: &str) -> Self {
        self.poll.push_str(lines);
        self
    }

    pub fn audit(mut self, path: &Path) -> Self {
        self.audit = path.to_owned();
        self
    }

    /// Lines in `[audit]` after the path.
    pub fn audit_extra(mut self, lines: &str) -> Self {
        self.audit_extra = lines.to_owned();
        self
    }

    /// No `[http]` section.
    pub fn no_listener(mut self) -> Self {
        self.listen = false;
        self
    }

    /// TOML appended after the rest (e.g. a `[log]` section).
    pub fn tail(mut self, toml: &str) -> Self {
        self.tail = toml.to_owned();
        self
    }

    /// `run --once`.
    pub fn once(mut self) -> Self {
        self.args.push("--once".to_owned());
        self
    }

    /// Started through `wrapper` (e.g. `prlimit … --`), the binary its last argument.
    pub fn wrapper(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(|&s| s.to_owned()).collect();
        self
    }

    /// One more variable set (or, with the key's value changed, replaced).
    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.envs.retain(|(k, _)| k != key);
        self.envs.push((key.into(), Some(value.into())));
        self
    }

    /// A variable kept out of its environment.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.envs.retain(|(k, _)| k != key);
        self.envs.push((key.into(), None));
        self
    }

    /// No keys in its environment (the config says where they come from).
    pub fn without_keys(self) -> Self {
        self.env_remove("HUAWEICLOUD_SDK_AK")
            .env_remove("HUAWEICLOUD_SDK_SK")
    }

    /// Its stderr in `dir/stderr.log` ([`Running::log`]).
    pub fn stderr_log(mut self) -> Self {
        self.stderr_log = true;
        self
    }

    /// Writes the config (unless the test gave its own); its path.
    pub fn write_config(&self) -> PathBuf {
        if let Some(cfg) = &self.config {
            return cfg.clone();
        }
        let sim = &self.sim_url;
        let mut toml = format!(
            "vpcep_endpoint = \"{sim}\"\niam_endpoint = \"{sim}\"\n[poll]\n{}[audit]\npath = {:?}\n{}\n",
            self.poll,
            self.audit.display().to_string(),
            self.audit_extra,
        );
        if self.listen {
            toml.push_str(&format!("[http]\nlisten = \"127.0.0.1:{}\"\n", self.port));
        }
        toml.push_str(&self.tail);
        write_config(&self.dir, &self.policies, &toml)
    }

    /// Writes the config and starts the process; does not wait for anything.
    pub fn spawn(self) -> Running {
        let cfg = self.write_config();
        let wrapper: Vec<&str> = self.wrapper.iter().map(String::as_str).collect();
        let mut cmd = clean_command(&wrapper);
        cmd.arg("-c")
            .arg(&cfg)
            .args(&self.args)
            .stdout(Stdio::null());
        for (k, v) in &self.envs {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let log = self.dir.join("stderr.log");
        if self.stderr_log {
            cmd.stderr(std::fs::File::create(&log).expect("log"));
        } else {
            cmd.stderr(Stdio::null());
        }
        let child = cmd.spawn().expect("daemon starts");
        Running {
            daemon: Daemon { child },
            base: format!("http://127.0.0.1:{}", self.port),
            cfg,
            log,
        }
    }

    /// [`spawn`](Self::spawn), then waits until `GET path` answers 200.
    pub fn serving(self, path: &str) -> Running {
        let d = self.spawn();
        d.wait_ok(path, UP_WITHIN);
        d
    }
}

/// A started daemon (killed on drop).
pub struct Running {
    pub daemon: Daemon,
    /// `http://127.0.0.1:<port>` of its listener.
    pub base: String,
    /// Its config file.
    pub cfg: PathBuf,
    log: PathBuf,
}

impl Running {
    /// `GET path` on its listener: (status, body); status 0 when nothing answers.
    pub fn get(&self, path: &str) -> (u16, String) {
        http("GET", &format!("{}{path}", self.base), "")
    }

    /// The sum of the `/metrics` lines that start with `prefix`.
    pub fn metric(&self, prefix: &str) -> f64 {
        metric(&self.get("/metrics").1, prefix)
    }

    /// Waits until `GET path` answers 200.
    pub fn wait_ok(&self, path: &str, within: Duration) {
        wait_for(path, within, || self.get(path).0 == 200);
    }

    pub fn signal(&self, sig: &str) {
        self.daemon.signal(sig);
    }

    pub fn pid(&self) -> u32 {
        self.daemon.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.daemon.child.try_wait().expect("wait").is_none()
    }

    /// Waits for the process to exit (at most `within`, else fails with its log); its
    /// exit code.
    pub fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.daemon.child.try_wait().expect("wait") {
                return s.code();
            }
            assert!(
                Instant::now() < deadline,
                "did not exit within {within:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then its exit code (within 15 s).
    pub fn stop(&mut self) -> Option<i32> {
        self.signal("-TERM");
        self.exit_code(Duration::from_secs(15))
    }

    /// What it wrote to `stderr.log` so far (with [`DaemonRig::stderr_log`]).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
