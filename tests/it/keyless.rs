//! Keyless credentials under the real binary and the `simulate` process (README
//! "Credentials"): the ECS metadata service (with and without session tokens), CCE pod
//! identity, an agency target beside a base-account target, temporary keys in `*_file`
//! secrets rotated mid-run, and the errors when no credentials can be had. Lifetimes are
//! seconds, so every run refreshes several times; the simulator counts every refusal of a
//! temporary key, and none may occur. No secret or security token reaches the log, the
//! audit log or `/metrics`.

use crate::rig::{AK, DaemonRig, Running, SK, SimProcess, start_simulate, status_in};
use crate::support::{PROJECT, copy_dir, free_port, http, simple_policies, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vpcep_approver::sim::{
    DEFAULT_AGENCY_DOMAIN_ID, DEFAULT_AGENCY_DOMAIN_NAME, DEFAULT_AGENCY_NAME,
    DEFAULT_AGENCY_PROJECT_ID, DEFAULT_POD_IDENTITY_PATH, DEFAULT_POD_TOKEN,
};

const PARTNER: &str = "6e9dfd51d1124e8d8498dce894923a0d";
const SVC_BASE: &str = "4189d3c2-8882-4871-a3c2-d380272eed88";
const SVC_AGENCY: &str = "b3f5a0e2-1c4d-4e6f-9a8b-7c6d5e4f3a2b";

/// A seed of two services, one in the base project and one in the agency's, each with one
/// pending partner connection that the test policies accept.
fn seed(dir: &Path) -> PathBuf {
    let service = |id: &str, project: &str, conn: &str| {
        serde_json::json!({
            "id": id,
            "service_name": format!("cn-north-4.svc.{id}"),
            "approval_enabled": true,
            "status": "available",
            "project_id": project,
            "connections": [{
                "id": conn,
                "domain_id": PARTNER,
                "description": "CHG-1234 partner link",
                "status": "pendingAcceptance",
                "created_at": "2026-11-27T09:35:47Z"
            }]
        })
    };
    let p = dir.join("seed.json");
    let v = serde_json::json!({"services": [
        service(SVC_BASE, PROJECT, "705290f3-0d00-41f2-aedc-71f09844e879"),
        service(SVC_AGENCY, DEFAULT_AGENCY_PROJECT_ID, "e8d7c6b5-a4f3-4e2d-9c1b-0a9f8e7d6c5b"),
    ]});
    std::fs::write(&p, v.to_string()).expect("seed");
    p
}

/// A simulator whose temporary keys live `lifetime` seconds, with extra flags.
fn simulator(dir: &Path, lifetime: &str, extra: &[&str]) -> SimProcess {
    let seed = seed(dir);
    let mut args = vec![
        "--seed",
        seed.to_str().expect("utf8"),
        "--credential-lifetime",
        lifetime,
    ];
    args.extend_from_slice(extra);
    start_simulate(&args)
}

/// The config of a daemon polling every second with a 1 s request timeout, `[auth]` as
/// given and the targets as given (TOML of `[[target]]` tables without the endpoints).
fn config(dir: &Path, sim: &str, auth: &str, targets: &[&str], port: u16) -> PathBuf {
    let policies = dir.join("policies");
    let simple = simple_policies("");
    copy_dir(simple.path(), &policies);
    let mut t = String::new();
    for target in targets {
        t.push_str(&format!(
            "[[target]]\nregion = \"cn-north-4\"\nvpcep_endpoint = \"{sim}\"\niam_endpoint = \"{sim}\"\n{target}\n"
        ));
    }
    let p = dir.join("config.toml");
    std::fs::write(
        &p,
        format!(
            "{t}[auth]\n{auth}\n[poll]\ninterval = \"1s\"\njitter = \"0s\"\nrequest_timeout = \"1s\"\nmax_requests_per_second = 0\n[audit]\npath = {:?}\n[http]\nlisten = \"127.0.0.1:{port}\"\n[policy]\ndir = {:?}\n",
            dir.join("audit.jsonl").display().to_string(),
            policies.display().to_string(),
        ),
    )
    .expect("config");
    p
}

fn base_target() -> String {
    format!("name = \"base\"\nproject_id = \"{PROJECT}\"")
}

fn agency_target() -> String {
    format!(
        "name = \"partner-account\"\nproject_id = \"{DEFAULT_AGENCY_PROJECT_ID}\"\nagency_name = \"{DEFAULT_AGENCY_NAME}\"\nagency_domain_name = \"{DEFAULT_AGENCY_DOMAIN_NAME}\"\nagency_duration = \"15m\""
    )
}

/// The binary with `-c cfg` and `args` (and no credentials from the caller): its exit
/// code, stdout and stderr.
fn run(cfg: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["-c", cfg.to_str().expect("utf8")];
    all.extend_from_slice(args);
    let o = crate::cli::run(&all, &[]);
    let (out, err) = crate::cli::text(&o);
    (o.status.code(), out, err)
}

/// `[auth]` for the metadata service of the simulator at `sim`.
fn metadata(sim: &str) -> String {
    format!("method = \"metadata\"\nmetadata_endpoint = \"{sim}\"")
}

/// A test's directory and its simulator, for the daemons it starts.
struct Case {
    dir: tempfile::TempDir,
    sim: SimProcess,
}

impl Case {
    /// A [`simulator`] whose temporary keys live `lifetime`, with `flags`.
    fn new(lifetime: &str, flags: &[&str]) -> Case {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = simulator(dir.path(), lifetime, flags);
        Case { dir, sim }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `run` with [`config`] on a free port, `envs` its only credentials, its stderr in
    /// `stderr.log`; waits for `/healthz`.
    fn start(&self, auth: &str, targets: &[&str], envs: &[(&str, &str)]) -> Running {
        let mut rig = DaemonRig::new(self.path(), &self.sim.url)
            .without_keys()
            .stderr_log();
        let cfg = config(self.path(), &self.sim.url, auth, targets, rig.port());
        rig = rig.config_file(&cfg);
        for (k, v) in envs {
            rig = rig.env(k, v);
        }
        rig.serving("/healthz")
    }

    /// [`start`](Self::start) with `[poll]` changed by `edit` (the config text in, the
    /// text to use out).
    fn start_edited(&self, auth: &str, targets: &[&str], edit: impl Fn(&str) -> String) -> Running {
        let mut rig = DaemonRig::new(self.path(), &self.sim.url)
            .without_keys()
            .stderr_log();
        let cfg = config(self.path(), &self.sim.url, auth, targets, rig.port());
        let text = std::fs::read_to_string(&cfg).expect("config");
        std::fs::write(&cfg, edit(&text)).expect("config");
        rig = rig.config_file(&cfg);
        rig.serving("/healthz")
    }

    /// [`start`](Self::start) on the simulator's metadata service, for the base target.
    fn start_on_metadata(&self) -> Running {
        self.start(&metadata(&self.sim.url), &[&base_target()], &[])
    }

    fn state(&self) -> Value {
        self.sim.state()
    }

    fn log(&self) -> String {
        log(self.path())
    }

    /// Runs until the simulator has issued at least `n` keys from `source` (so the
    /// daemon refreshed `n - 1` times), at most `within`; fails if it did not.
    fn issued_at_least(&self, source: &str, n: u64, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let s = self.state();
            if issued(&s, source) >= n {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "fewer than {n} {source} keys within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// No secret in the log, the audit log or `d`'s metrics ([`assert_no_secrets`]).
    fn assert_no_secrets(&self, d: &Running, secrets: &[&str]) {
        assert_no_secrets(self.path(), &d.base, secrets);
    }
}

fn issued(state: &Value, source: &str) -> u64 {
    state["temporary_keys_issued"][source].as_u64().unwrap_or(0)
}

/// Every refusal of a temporary key and every 401 the simulator answered a signed
/// request, as text for an assertion (empty when there were none).
fn refusals(state: &Value) -> String {
    let mut out = String::new();
    let r = &state["security_token_rejections"];
    for k in ["missing", "unsigned", "mismatched", "expired"] {
        if r[k].as_u64().unwrap_or(0) > 0 {
            out.push_str(&format!("security token {k}: {}; ", r[k]));
        }
    }
    for s in state["signed"].as_array().into_iter().flatten() {
        if s["http_status"] == 401 {
            out.push_str(&format!("401 for {s}; "));
        }
    }
    out
}

/// The signed requests: (access key, operation, temporary, with security token, status).
fn signed(state: &Value) -> Vec<(String, String, bool, bool, u64)> {
    state["signed"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["access_key"].as_str().unwrap_or_default().to_owned(),
                s["operation"].as_str().unwrap_or_default().to_owned(),
                s["temporary"].as_bool().unwrap_or(false),
                s["security_token"].as_bool().unwrap_or(false),
                s["http_status"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// No secret in the daemon's log, its audit log or its metrics (at `base`): neither the
/// given strings nor anything shaped like a simulator security token (1,536 URL-safe
/// base64 characters; nothing else the daemon writes has runs that long).
fn assert_no_secrets(dir: &Path, base: &str, secrets: &[&str]) {
    let texts = [
        ("stderr", log(dir)),
        (
            "audit",
            std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default(),
        ),
        ("metrics", http("GET", &format!("{base}/metrics"), "").1),
    ];
    for (name, text) in &texts {
        for s in secrets {
            assert!(
                !text.contains(s),
                "{name} holds a secret ({} chars)",
                s.len()
            );
        }
        let longest = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(
            longest < 200,
            "{name} holds a run of {longest} token characters"
        );
    }
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
}

/// Both pending connections accepted, every signed request by a temporary key carried
/// its security token, nothing was refused.
fn assert_served_by_temporary_keys(s: &Value, dir: &Path) {
    assert_eq!(refusals(s), "", "log:\n{}", log(dir));
    let signed = signed(s);
    assert!(!signed.is_empty(), "no signed request");
    for (ak, op, temporary, token, status) in &signed {
        assert!(
            *temporary && *token && (200..300).contains(status),
            "{op} by {ak}: temporary={temporary} token={token} status={status}"
        );
    }
    assert!(
        signed.iter().any(|r| r.1 == "action"),
        "no action: {signed:?}"
    );
}

/// A daemon on metadata keys that live 6 s, with the simulator's metadata service as
/// `flags` make it: four keys in a row, no refusal, every request signed with a token.
fn metadata_refreshes_are_never_refused(flags: &[&str]) {
    let case = Case::new("6s", flags);
    let d = case.start_on_metadata();
    // 6 s keys are refreshed with 2 s left: a fourth key after about 12 s.
    let s = case.issued_at_least("metadata", 4, Duration::from_secs(40));
    assert_eq!(
        status_in(&s, "705290f3-0d00-41f2-aedc-71f09844e879"),
        "accepted"
    );
    assert_served_by_temporary_keys(&s, case.path());
    assert!(
        s["requests"]["metadata_token"].as_u64().unwrap_or(0) >= 1,
        "the session token was asked for first: {}",
        s["requests"]
    );
    let keys = signed(&s)
        .into_iter()
        .map(|r| r.0)
        .collect::<std::collections::BTreeSet<_>>();
    assert!(keys.len() >= 3, "requests were signed by {keys:?}");
    let text = case.log();
    assert!(
        text.contains("obtained temporary credentials"),
        "the log says where the keys came from:\n{text}"
    );
    case.assert_no_secrets(&d, &[]);
}

#[test]
fn metadata_keys_are_refreshed_before_they_expire_and_never_refused() {
    metadata_refreshes_are_never_refused(&[]);
}

/// Requests that wait in the rate limiter longer than their key has left are signed
/// again with a fresh key, not sent with an expired one: 6 s keys (refreshed with 2 s
/// left) under one request a second, with six services listed at once every cycle, so
/// the last waits about 5 s. (Before, those went out expired: a 401 every cycle.)
#[test]
fn a_key_that_expires_in_the_rate_limiter_queue_is_not_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let services: Vec<Value> = (0..6)
        .map(|i| {
            serde_json::json!({
                "id": format!("5e000000-0000-4000-8000-00000000000{i}"),
                "service_name": format!("cn-north-4.svc-{i}.5e000000"),
                "project_id": PROJECT,
            })
        })
        .collect();
    let seed = dir.path().join("seed.json");
    std::fs::write(
        &seed,
        serde_json::json!({ "services": services }).to_string(),
    )
    .expect("seed");
    let sim = start_simulate(&[
        "--seed",
        seed.to_str().expect("utf8"),
        "--credential-lifetime",
        "6s",
    ]);
    let case = Case { dir, sim };
    let d = case.start_edited(&metadata(&case.sim.url), &[&base_target()], |text| {
        text.replace("max_requests_per_second = 0", "max_requests_per_second = 1")
    });
    let s = case.issued_at_least("metadata", 4, Duration::from_secs(60));
    assert_eq!(refusals(&s), "", "log:\n{}", case.log());
    let signed = signed(&s);
    assert!(
        signed.len() >= 8,
        "listings went on at the rate: {signed:?}"
    );
    assert!(
        signed
            .iter()
            .all(|(_, _, temporary, token, status)| *temporary && *token && *status == 200),
        "{signed:?}"
    );
    case.assert_no_secrets(&d, &[]);
}

#[test]
fn metadata_without_session_tokens_goes_on_without_one() {
    metadata_refreshes_are_never_refused(&["--metadata-mode", "token_unsupported"]);
}

#[test]
fn pod_identity_keys_are_refreshed_and_a_rotated_token_file_is_read_on_the_next_fetch() {
    let case = Case::new("6s", &["--pod-identity-body", "credentials_camel_case"]);
    let token_file = case.path().join("token");
    std::fs::write(&token_file, format!("{DEFAULT_POD_TOKEN}\n")).expect("token");
    let uri = format!("{}{DEFAULT_POD_IDENTITY_PATH}", case.sim.url);
    let envs = [
        ("HC_CONTAINER_CREDENTIALS_FULL_URI", uri.as_str()),
        (
            "HC_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.to_str().expect("utf8"),
        ),
    ];
    let d = case.start("method = \"pod-identity\"", &[&base_target()], &envs);
    case.issued_at_least("pod_identity", 2, Duration::from_secs(30));

    // The kubelet rotates the projected token: the file first, then the old one stops
    // working. The next fetch reads the new file.
    let rotated = "sim-pod-identity-token-rotated";
    let tmp = case.path().join("token.new");
    std::fs::write(&tmp, rotated).expect("token");
    std::fs::rename(&tmp, &token_file).expect("rename");
    case.sim.post(
        "/_sim/keyless",
        &format!(r#"{{"pod_identity":{{"token":"{rotated}"}}}}"#),
        200,
    );
    // Two more keys after the token rotation.
    let before = issued(&case.state(), "pod_identity");
    let s = case.issued_at_least("pod_identity", before + 2, Duration::from_secs(30));
    assert_served_by_temporary_keys(&s, case.path());
    case.assert_no_secrets(&d, &[DEFAULT_POD_TOKEN, rotated]);
}

#[test]
fn an_agency_target_beside_a_base_target_uses_the_agency_keys_for_its_account_only() {
    let case = Case::new("6s", &[]);
    let d = case.start(
        "method = \"aksk\"",
        &[&base_target(), &agency_target()],
        &[("HUAWEICLOUD_SDK_AK", AK), ("HUAWEICLOUD_SDK_SK", SK)],
    );
    let s = case.issued_at_least("agency", 3, Duration::from_secs(40));
    assert_eq!(refusals(&s), "", "log:\n{}", case.log());
    for id in [
        "705290f3-0d00-41f2-aedc-71f09844e879",
        "e8d7c6b5-a4f3-4e2d-9c1b-0a9f8e7d6c5b",
    ] {
        assert_eq!(status_in(&s, id), "accepted", "{id}:\n{}", case.log());
    }
    let signed = signed(&s);
    // The base account's requests and the assume_role calls are signed by the static
    // key; the partner account's by the agency's temporary keys, each with its token.
    let by_static: Vec<_> = signed.iter().filter(|r| r.0 == AK).collect();
    let by_agency: Vec<_> = signed.iter().filter(|r| r.0 != AK).collect();
    assert!(
        by_static.iter().all(|r| !r.2 && (200..300).contains(&r.4)),
        "{by_static:?}"
    );
    assert!(
        by_static.iter().any(|r| r.1 == "securitytokens"),
        "{by_static:?}"
    );
    assert!(by_static.iter().any(|r| r.1 == "action"), "{by_static:?}");
    assert!(
        by_agency
            .iter()
            .all(|r| r.2 && r.3 && (200..300).contains(&r.4)),
        "{by_agency:?}"
    );
    assert!(by_agency.iter().any(|r| r.1 == "action"), "{by_agency:?}");
    assert!(
        by_agency.iter().all(|r| r.1 != "securitytokens"),
        "{by_agency:?}"
    );
    case.assert_no_secrets(&d, &[SK]);
}

#[test]
fn an_agency_on_top_of_metadata_keys_refreshes_both() {
    let case = Case::new("6s", &[]);
    let d = case.start(
        &metadata(&case.sim.url),
        &[&base_target(), &agency_target()],
        &[],
    );
    let s = case.issued_at_least("agency", 3, Duration::from_secs(40));
    assert!(issued(&s, "metadata") >= 3, "{}", case.log());
    assert_served_by_temporary_keys(&s, case.path());
    assert_eq!(
        status_in(&s, "e8d7c6b5-a4f3-4e2d-9c1b-0a9f8e7d6c5b"),
        "accepted"
    );
    case.assert_no_secrets(&d, &[]);
}

/// Temporary keys from the simulator's metadata route, as a rotation job would write them.
struct TempKeys {
    access: String,
    secret: String,
    token: String,
}

fn fetch_temp_keys(sim: &str) -> TempKeys {
    let (code, body) = http("GET", &format!("{sim}/openstack/latest/securitykey"), "");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    let c = &v["credential"];
    let s = |k: &str| c[k].as_str().expect("field").to_owned();
    TempKeys {
        access: s("access"),
        secret: s("secret"),
        token: s("securitytoken"),
    }
}

/// Writes the three files the way a rotation job should: each to a temporary name, then
/// renamed into place.
fn write_key_files(dir: &Path, k: &TempKeys) {
    for (name, value) in [("ak", &k.access), ("sk", &k.secret), ("token", &k.token)] {
        let tmp = dir.join(format!(".{name}.new"));
        std::fs::write(&tmp, value).expect("write");
        std::fs::rename(&tmp, dir.join(name)).expect("rename");
    }
}

#[test]
fn temporary_key_files_rotated_mid_run_are_taken_before_the_old_keys_expire() {
    // 12 s keys, a new set every 5 s: each set must be in use before its predecessor
    // expires, and no request may carry an expired or mismatched token.
    let case = Case::new("12s", &["--metadata-mode", "token_unsupported"]);
    let keys_dir = case.path().join("keys");
    std::fs::create_dir(&keys_dir).expect("mkdir");
    let mut all = vec![fetch_temp_keys(&case.sim.url)];
    write_key_files(&keys_dir, &all[0]);
    let d = case.start(
        &format!(
            "method = \"aksk\"\naccess_key_file = {:?}\nsecret_key_file = {:?}\nsecurity_token_file = {:?}",
            keys_dir.join("ak").display().to_string(),
            keys_dir.join("sk").display().to_string(),
            keys_dir.join("token").display().to_string(),
        ),
        &[&base_target()],
        &[],
    );
    for round in 1..=3 {
        std::thread::sleep(Duration::from_secs(5));
        let k = fetch_temp_keys(&case.sim.url);
        write_key_files(&keys_dir, &k);
        all.push(k);
        // A new pending connection each round, so actions are signed by each set too.
        case.sim.add_connection(
            SVC_BASE,
            &format!("00000000-0000-4000-8000-00000000000{round}"),
            PARTNER,
            &format!("CHG-77 round {round}"),
        );
    }
    // The last set is taken within about two seconds; wait until a request used it.
    let last = all.last().expect("keys").access.clone();
    wait_for(
        "a request signed by the last key set",
        Duration::from_secs(10),
        || signed(&case.state()).iter().any(|r| r.0 == last),
    );
    std::thread::sleep(Duration::from_secs(2));
    let s = case.state();
    assert_eq!(refusals(&s), "", "log:\n{}", case.log());
    let used: std::collections::BTreeSet<_> = signed(&s).into_iter().map(|r| r.0).collect();
    for (i, k) in all.iter().enumerate() {
        assert!(
            used.contains(&k.access),
            "key set {i} was never used: {used:?}"
        );
    }
    for round in 1..=3 {
        let id = format!("00000000-0000-4000-8000-00000000000{round}");
        assert_eq!(status_in(&s, &id), "accepted", "{id}:\n{}", case.log());
    }
    let mut secrets: Vec<&str> = Vec::new();
    for k in &all {
        secrets.push(&k.secret);
        secrets.push(&k.token);
    }
    case.assert_no_secrets(&d, &secrets);
}

/// `run --once` with `auth` for the base target against `sim`: its exit code and stderr.
fn run_once(dir: &Path, sim: &str, auth: &str) -> (Option<i32>, String) {
    let cfg = config(dir, sim, auth, &[&base_target()], free_port());
    let (code, _, err) = run(&cfg, &["run", "--once"]);
    (code, err)
}

#[test]
fn no_agency_on_the_instance_fails_run_once_naming_the_url_and_the_cause() {
    let case = Case::new("1h", &["--metadata-mode", "no_agency"]);
    let sim = &case.sim.url;
    let (code, err) = run_once(case.path(), sim, &metadata(sim));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no agency attached to this instance"), "{err}");
    assert!(
        err.contains(&format!("{sim}/openstack/latest/securitykey")),
        "the URL is named: {err}"
    );
    // Nothing was decided on no credentials.
    let s = case.state();
    assert_eq!(s["actions"].as_array().map_or(0, Vec::len), 0, "{s}");
}

#[test]
fn no_agency_keeps_the_daemon_up_and_unready_saying_why_until_one_is_attached() {
    let case = Case::new("1h", &["--metadata-mode", "no_agency"]);
    let d = case.start_on_metadata();
    wait_for(
        "the no-agency reason in /readyz",
        Duration::from_secs(15),
        || {
            let (code, body) = d.get("/readyz");
            code == 503 && body.contains("no agency attached to this instance")
        },
    );
    let conn = "705290f3-0d00-41f2-aedc-71f09844e879";
    assert_eq!(case.sim.status_of(conn), "pendingAcceptance");
    // An operator attaches the agency: the daemon gets keys (after its backoff) and works.
    case.sim
        .post("/_sim/keyless", r#"{"metadata":{"mode":"normal"}}"#, 200);
    wait_for("the connection accepted", Duration::from_secs(30), || {
        case.sim.status_of(conn) == "accepted"
    });
    d.wait_ok("/readyz", Duration::from_secs(15));
    case.assert_no_secrets(&d, &[]);
}

#[test]
fn pod_identity_without_its_variables_is_a_config_error_naming_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, err) = run_once(
        dir.path(),
        "http://127.0.0.1:9",
        "method = \"pod-identity\"",
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("HC_CONTAINER_CREDENTIALS_FULL_URI"), "{err}");
}

#[test]
fn check_says_where_each_targets_credentials_come_from_without_fetching_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens on the endpoints: check must not try.
    let cfg = config(
        dir.path(),
        "http://127.0.0.1:9",
        "method = \"metadata\"\nmetadata_endpoint = \"http://127.0.0.1:9\"",
        &[
            &base_target(),
            &agency_target().replace(
                &format!("agency_domain_name = \"{DEFAULT_AGENCY_DOMAIN_NAME}\""),
                &format!("agency_domain_id = \"{DEFAULT_AGENCY_DOMAIN_ID}\""),
            ),
        ],
        free_port(),
    );
    let (code, out, err) = run(&cfg, &["check"]);
    assert_eq!(code, Some(0), "{out}{err}");
    for want in [
        "auth: metadata",
        "http://127.0.0.1:9",
        "target base credentials: the [auth] identity",
        "target partner-account credentials:",
        DEFAULT_AGENCY_NAME,
        DEFAULT_AGENCY_DOMAIN_ID,
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
}
