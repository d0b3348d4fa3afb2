//! Keyless credentials under the real binary and the `simulate` process (README
//! "Credentials"): the ECS metadata service (with and without session tokens), CCE pod
//! identity, an agency target beside a base-account target, temporary keys in `*_file`
//! secrets rotated mid-run, and the errors when no credentials can be had. Lifetimes are
//! seconds, so every run refreshes several times; the simulator counts every refusal of a
//! temporary key, and none may occur. No secret or security token reaches the log, the
//! audit log or `/metrics`.

use crate::cli::{BIN, start_simulate};
use crate::support::{Daemon, PROJECT, copy_dir, free_port, http, simple_policies, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vpcep_approver::sim::{
    DEFAULT_AGENCY_DOMAIN_ID, DEFAULT_AGENCY_DOMAIN_NAME, DEFAULT_AGENCY_NAME,
    DEFAULT_AGENCY_PROJECT_ID, DEFAULT_POD_IDENTITY_PATH, DEFAULT_POD_TOKEN,
};

const PARTNER: &str = "6e9dfd51d1124e8d8498dce894923a0d";
const SVC_BASE: &str = "4189d3c2-8882-4871-a3c2-d380272eed88";
const SVC_AGENCY: &str = "b3f5a0e2-1c4d-4e6f-9a8b-7c6d5e4f3a2b";
/// The simulator's static keys (`start_simulate`).
const AK: &str = "CLIAK";
const SK: &str = "CLISECRET";

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
fn simulator(dir: &Path, lifetime: &str, extra: &[&str]) -> crate::cli::SimProcess {
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

fn command(cfg: &Path, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("-c")
        .arg(cfg)
        .args(args)
        .env_remove("HUAWEICLOUD_SDK_AK")
        .env_remove("HUAWEICLOUD_SDK_SK")
        .env_remove("HUAWEICLOUD_SDK_SECURITY_TOKEN")
        .env_remove("HC_CONTAINER_CREDENTIALS_FULL_URI")
        .env_remove("HC_CONTAINER_AUTHORIZATION_TOKEN_FILE")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RUST_LOG");
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

/// `run` with its stderr in `dir/stderr.log`; waits for `/healthz`.
fn daemon(dir: &Path, cfg: &Path, port: u16, envs: &[(&str, &str)]) -> (Daemon, String) {
    let child = command(cfg, &["run"], envs)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).expect("log"))
        .spawn()
        .expect("daemon starts");
    Daemon::serving(child, port, "/healthz")
}

/// `[auth]` for the metadata service of the simulator at `sim`.
fn metadata(sim: &str) -> String {
    format!("method = \"metadata\"\nmetadata_endpoint = \"{sim}\"")
}

/// A daemon with [`config`] on a free port, started by [`daemon`].
fn start(
    dir: &Path,
    sim: &str,
    auth: &str,
    targets: &[&str],
    envs: &[(&str, &str)],
) -> (Daemon, String) {
    let port = free_port();
    let cfg = config(dir, sim, auth, targets, port);
    daemon(dir, &cfg, port, envs)
}

fn state(sim: &str) -> Value {
    let (code, body) = http("GET", &format!("{sim}/_sim/state"), "");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("state json")
}

fn status_of(state: &Value, id: &str) -> String {
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

/// Runs until the simulator has issued at least `n` keys from `source` (so the daemon
/// refreshed `n - 1` times), at most `within`.
fn until_issued(sim: &str, source: &str, n: u64, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = state(sim);
        if issued(&s, source) >= n || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// No secret in the daemon's log, its audit log or its metrics: neither the given
/// strings nor anything shaped like a simulator security token (1,536 URL-safe base64
/// characters; nothing else the daemon writes has runs that long).
fn assert_no_secrets(dir: &Path, base: Option<&str>, secrets: &[&str]) {
    let mut texts = vec![
        (
            "stderr",
            std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default(),
        ),
        (
            "audit",
            std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default(),
        ),
    ];
    if let Some(base) = base {
        texts.push(("metrics", http("GET", &format!("{base}/metrics"), "").1));
    }
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
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = simulator(dir.path(), "6s", flags);
    let (d, base) = start(
        dir.path(),
        &sim.url,
        &metadata(&sim.url),
        &[&base_target()],
        &[],
    );
    // 6 s keys are refreshed with 2 s left: a fourth key after about 12 s.
    let s = until_issued(&sim.url, "metadata", 4, Duration::from_secs(40));
    assert!(issued(&s, "metadata") >= 4, "{}", log(dir.path()));
    assert_eq!(
        status_of(&s, "705290f3-0d00-41f2-aedc-71f09844e879"),
        "accepted"
    );
    assert_served_by_temporary_keys(&s, dir.path());
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
    let text = log(dir.path());
    assert!(
        text.contains("obtained temporary credentials"),
        "the log says where the keys came from:\n{text}"
    );
    assert_no_secrets(dir.path(), Some(&base), &[]);
    drop(d);
}

#[test]
fn metadata_keys_are_refreshed_before_they_expire_and_never_refused() {
    metadata_refreshes_are_never_refused(&[]);
}

#[test]
fn metadata_without_session_tokens_goes_on_without_one() {
    metadata_refreshes_are_never_refused(&["--metadata-mode", "token_unsupported"]);
}

#[test]
fn pod_identity_keys_are_refreshed_and_a_rotated_token_file_is_read_on_the_next_fetch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = simulator(
        dir.path(),
        "6s",
        &["--pod-identity-body", "credentials_camel_case"],
    );
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{DEFAULT_POD_TOKEN}\n")).expect("token");
    let uri = format!("{}{DEFAULT_POD_IDENTITY_PATH}", sim.url);
    let envs = [
        ("HC_CONTAINER_CREDENTIALS_FULL_URI", uri.as_str()),
        (
            "HC_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.to_str().expect("utf8"),
        ),
    ];
    let (d, base) = start(
        dir.path(),
        &sim.url,
        "method = \"pod-identity\"",
        &[&base_target()],
        &envs,
    );
    let s = until_issued(&sim.url, "pod_identity", 2, Duration::from_secs(30));
    assert!(issued(&s, "pod_identity") >= 2, "{}", log(dir.path()));

    // The kubelet rotates the projected token: the file first, then the old one stops
    // working. The next fetch reads the new file.
    let rotated = "sim-pod-identity-token-rotated";
    let tmp = dir.path().join("token.new");
    std::fs::write(&tmp, rotated).expect("token");
    std::fs::rename(&tmp, &token_file).expect("rename");
    let (code, body) = http(
        "POST",
        &format!("{}/_sim/keyless", sim.url),
        &format!(r#"{{"pod_identity":{{"token":"{rotated}"}}}}"#),
    );
    assert_eq!(code, 200, "{body}");
    let before = issued(&state(&sim.url), "pod_identity");
    let s = until_issued(
        &sim.url,
        "pod_identity",
        before + 2,
        Duration::from_secs(30),
    );
    assert!(
        issued(&s, "pod_identity") >= before + 2,
        "no key after the token rotation:\n{}",
        log(dir.path())
    );
    assert_served_by_temporary_keys(&s, dir.path());
    assert_no_secrets(dir.path(), Some(&base), &[DEFAULT_POD_TOKEN, rotated]);
    drop(d);
}

#[test]
fn an_agency_target_beside_a_base_target_uses_the_agency_keys_for_its_account_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = simulator(dir.path(), "6s", &[]);
    let (d, base) = start(
        dir.path(),
        &sim.url,
        "method = \"aksk\"",
        &[&base_target(), &agency_target()],
        &[("HUAWEICLOUD_SDK_AK", AK), ("HUAWEICLOUD_SDK_SK", SK)],
    );
    let s = until_issued(&sim.url, "agency", 3, Duration::from_secs(40));
    assert!(issued(&s, "agency") >= 3, "{}", log(dir.path()));
    assert_eq!(refusals(&s), "", "log:\n{}", log(dir.path()));
    for id in [
        "705290f3-0d00-41f2-aedc-71f09844e879",
        "e8d7c6b5-a4f3-4e2d-9c1b-0a9f8e7d6c5b",
    ] {
        assert_eq!(status_of(&s, id), "accepted", "{id}:\n{}", log(dir.path()));
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
    assert_no_secrets(dir.path(), Some(&base), &[SK]);
    drop(d);
}

#[test]
fn an_agency_on_top_of_metadata_keys_refreshes_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = simulator(dir.path(), "6s", &[]);
    let (d, base) = start(
        dir.path(),
        &sim.url,
        &metadata(&sim.url),
        &[&base_target(), &agency_target()],
        &[],
    );
    let s = until_issued(&sim.url, "agency", 3, Duration::from_secs(40));
    assert!(issued(&s, "agency") >= 3, "{}", log(dir.path()));
    assert!(issued(&s, "metadata") >= 3, "{}", log(dir.path()));
    assert_served_by_temporary_keys(&s, dir.path());
    assert_eq!(
        status_of(&s, "e8d7c6b5-a4f3-4e2d-9c1b-0a9f8e7d6c5b"),
        "accepted"
    );
    assert_no_secrets(dir.path(), Some(&base), &[]);
    drop(d);
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
    let dir = tempfile::tempdir().expect("tempdir");
    // 12 s keys, a new set every 5 s: each set must be in use before its predecessor
    // expires, and no request may carry an expired or mismatched token.
    let sim = simulator(dir.path(), "12s", &["--metadata-mode", "token_unsupported"]);
    let keys_dir = dir.path().join("keys");
    std::fs::create_dir(&keys_dir).expect("mkdir");
    let mut all = vec![fetch_temp_keys(&sim.url)];
    write_key_files(&keys_dir, &all[0]);
    let (d, base) = start(
        dir.path(),
        &sim.url,
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
        let k = fetch_temp_keys(&sim.url);
        write_key_files(&keys_dir, &k);
        all.push(k);
        // A new pending connection each round, so actions are signed by each set too.
        let (code, body) = http(
            "POST",
            &format!("{}/_sim/connections", sim.url),
            &format!(
                r#"{{"service_id":"{SVC_BASE}","id":"00000000-0000-4000-8000-00000000000{round}","domain_id":"{PARTNER}","description":"CHG-77 round {round}"}}"#
            ),
        );
        assert_eq!(code, 201, "{body}");
    }
    // The last set is taken within about two seconds; wait until a request used it.
    let last = all.last().expect("keys").access.clone();
    wait_for(
        "a request signed by the last key set",
        Duration::from_secs(10),
        || signed(&state(&sim.url)).iter().any(|r| r.0 == last),
    );
    std::thread::sleep(Duration::from_secs(2));
    let s = state(&sim.url);
    assert_eq!(refusals(&s), "", "log:\n{}", log(dir.path()));
    let used: std::collections::BTreeSet<_> = signed(&s).into_iter().map(|r| r.0).collect();
    for (i, k) in all.iter().enumerate() {
        assert!(
            used.contains(&k.access),
            "key set {i} was never used: {used:?}"
        );
    }
    for round in 1..=3 {
        let id = format!("00000000-0000-4000-8000-00000000000{round}");
        assert_eq!(status_of(&s, &id), "accepted", "{id}:\n{}", log(dir.path()));
    }
    let mut secrets: Vec<&str> = Vec::new();
    for k in &all {
        secrets.push(&k.secret);
        secrets.push(&k.token);
    }
    assert_no_secrets(dir.path(), Some(&base), &secrets);
    drop(d);
}

#[test]
fn no_agency_on_the_instance_fails_run_once_naming_the_url_and_the_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = simulator(dir.path(), "1h", &["--metadata-mode", "no_agency"]);
    let cfg = config(
        dir.path(),
        &sim.url,
        &metadata(&sim.url),
        &[&base_target()],
        free_port(),
    );
    let o = command(&cfg, &["run", "--once"], &[])
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no agency attached to this instance"), "{err}");
    assert!(
        err.contains(&format!("{}/openstack/latest/securitykey", sim.url)),
        "the URL is named: {err}"
    );
    // Nothing was decided on no credentials.
    let s = state(&sim.url);
    assert_eq!(s["actions"].as_array().map_or(0, Vec::len), 0, "{s}");
}

#[test]
fn no_agency_keeps_the_daemon_up_and_unready_saying_why_until_one_is_attached() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = simulator(dir.path(), "1h", &["--metadata-mode", "no_agency"]);
    let (d, base) = start(
        dir.path(),
        &sim.url,
        &metadata(&sim.url),
        &[&base_target()],
        &[],
    );
    wait_for(
        "the no-agency reason in /readyz",
        Duration::from_secs(15),
        || {
            let (code, body) = http("GET", &format!("{base}/readyz"), "");
            code == 503 && body.contains("no agency attached to this instance")
        },
    );
    assert_eq!(
        status_of(&state(&sim.url), "705290f3-0d00-41f2-aedc-71f09844e879"),
        "pendingAcceptance"
    );
    // An operator attaches the agency: the daemon gets keys (after its backoff) and works.
    let (code, body) = http(
        "POST",
        &format!("{}/_sim/keyless", sim.url),
        r#"{"metadata":{"mode":"normal"}}"#,
    );
    assert_eq!(code, 200, "{body}");
    wait_for("the connection accepted", Duration::from_secs(30), || {
        status_of(&state(&sim.url), "705290f3-0d00-41f2-aedc-71f09844e879") == "accepted"
    });
    wait_for("ready", Duration::from_secs(15), || {
        http("GET", &format!("{base}/readyz"), "").0 == 200
    });
    assert_no_secrets(dir.path(), Some(&base), &[]);
    drop(d);
}

#[test]
fn pod_identity_without_its_variables_is_a_config_error_naming_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        "http://127.0.0.1:9",
        "method = \"pod-identity\"",
        &[&base_target()],
        free_port(),
    );
    let o = command(&cfg, &["run", "--once"], &[])
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(78), "{err}");
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
    let o = command(&cfg, &["check"], &[]).output().expect("runs");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("auth: metadata"), "{out}");
    assert!(out.contains("http://127.0.0.1:9"), "{out}");
    assert!(
        out.contains("target base credentials: the [auth] identity"),
        "{out}"
    );
    assert!(out.contains("target partner-account credentials:"), "{out}");
    assert!(out.contains(DEFAULT_AGENCY_NAME), "{out}");
    assert!(out.contains(DEFAULT_AGENCY_DOMAIN_ID), "{out}");
}
