//! The policy directory (README "Policies"): loading and validating `*.cedar`, `schema.cedarschema`
//! and `entities.json` into an immutable [`Policies`] set, turning [`ConnectionFacts`] into
//! a Cedar request, mapping Cedar's answer to a [`Decision`], and running policy test
//! cases (§5.5). No I/O happens after loading; [`Policies::decide`] is pure.
//!
//! Loading rules:
//! - every `*.cedar` file, in file-name order; templates are not supported;
//! - policy id: the `@id("…")` annotation, else `<file name>#<n>` with `n` counting the
//!   policies of that file from 0; ids are unique across all files;
//! - with `schema.cedarschema`, every policy must pass strict validation, requests are
//!   validated, `entities.json` must conform, and the schema must accept the request
//!   this module builds (so a schema that drifted from §5.2 fails at load, not per call);
//! - `entities.json` (optional) supplies groups: the parents of accounts and services.
//!   Service entries there contribute parents only; the service's attributes always come
//!   from the connection facts, so they may be left out of `entities.json` even when the
//!   schema requires them;
//! - any problem fails the whole load, and [`PolicyError`] lists all of them.
//!
//! Decisions: `@reason("…")` of each determining policy is returned in
//! [`Decision::reasons`], index for index with [`Decision::policies`]; a policy without
//! `@reason` contributes an empty string so the two lists always line up.

mod error;
mod request;
mod testcases;

use error::chain;
pub use error::{PolicyError, PolicyProblem};
pub use testcases::{TestFileError, TestSummary, default_test_files, run_tests};

use crate::decision::{Action, ConnectionFacts, Decision, OnNoMatch, Verdict};
use cedar_policy::{
    Authorizer, Entities, PolicyId, PolicySet, Response, Schema, ValidationMode, Validator,
};
use request::{EntityIndex, RequestModel};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

/// File name of the optional schema.
pub const SCHEMA_FILE: &str = "schema.cedarschema";
/// File name of the optional entities (groups of accounts and services).
pub const ENTITIES_FILE: &str = "entities.json";
/// Extension of policy files.
pub const POLICY_EXTENSION: &str = "cedar";

/// The shipped `policies/` files, compiled into the binary for `demo`.
const EMBEDDED: &[(&str, &[u8])] = &[
    ("age.cedar", include_bytes!("../../policies/age.cedar")),
    ("allow.cedar", include_bytes!("../../policies/allow.cedar")),
    (
        "entities.json",
        include_bytes!("../../policies/entities.json"),
    ),
    (
        "forbid.cedar",
        include_bytes!("../../policies/forbid.cedar"),
    ),
    ("quota.cedar", include_bytes!("../../policies/quota.cedar")),
    (
        "schema.cedarschema",
        include_bytes!("../../policies/schema.cedarschema"),
    ),
];

/// An immutable, validated policy set with its schema and entities. `Send + Sync`;
/// share it in an `Arc` and swap the `Arc` on reload.
#[derive(Debug)]
pub struct Policies {
    set: PolicySet,
    schema: Option<Schema>,
    index: EntityIndex,
    model: RequestModel,
    authorizer: Authorizer,
    ids: Vec<String>,
    /// policy id → `@reason` text (looking annotations up in Cedar re-parses the key).
    reasons: HashMap<String, String>,
    version: String,
}

/// What a file in the policy directory is for, decided by its name.
enum Role {
    Policy,
    Schema,
    Entities,
}

fn role(name: &str) -> Option<Role> {
    if name == SCHEMA_FILE {
        Some(Role::Schema)
    } else if name == ENTITIES_FILE {
        Some(Role::Entities)
    } else if Path::new(name)
        .extension()
        .is_some_and(|e| e == POLICY_EXTENSION)
    {
        Some(Role::Policy)
    } else {
        None
    }
}

impl Policies {
    /// Loads `dir`: every `*.cedar`, plus `schema.cedarschema` and `entities.json` when
    /// present. Other files and subdirectories (such as `tests/`) are ignored, and so is
    /// every entry whose name starts with `.` (a Kubernetes ConfigMap volume's `..data`
    /// links and timestamped directories), so such a volume loads as the files it shows.
    ///
    /// Fails closed: an entry with one of those names that is not a readable regular
    /// file (or a symlink to one) — a dangling link, a directory, a FIFO, an unreadable
    /// file — or a `*.cedar` name that is not UTF-8, is an error naming the entry, and so
    /// is a `*.cedar` file that holds no policy. A half-deployed directory must not go
    /// live with some of its forbids missing. Problems name files as `<dir>/<name>`.
    pub fn load(dir: &Path) -> Result<Policies, PolicyError> {
        let dir_problem = |e: std::io::Error| {
            PolicyProblem::file(
                &dir.display().to_string(),
                format!("cannot read policy directory: {e}"),
            )
        };
        let entries = std::fs::read_dir(dir).map_err(|e| PolicyError::new(vec![dir_problem(e)]))?;
        let mut files = Vec::new();
        let mut problems = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    problems.push(dir_problem(e));
                    continue;
                }
            };
            let raw = entry.file_name();
            let path = entry.path();
            let shown = path.display().to_string();
            let Some(name) = raw.to_str() else {
                let lossy = raw.to_string_lossy();
                if !lossy.starts_with('.') && lossy.ends_with(&format!(".{POLICY_EXTENSION}")) {
                    problems.push(PolicyProblem::file(
                        &shown,
                        "file name is not UTF-8: rename it (it would be a policy file)",
                    ));
                }
                continue;
            };
            if name.starts_with('.') || role(name).is_none() {
                continue;
            }
            match read_regular(&path) {
                Ok(bytes) => files.push((name.to_owned(), bytes)),
                Err(message) => problems.push(PolicyProblem::file(&shown, message)),
            }
        }
        if !problems.is_empty() {
            return Err(PolicyError::new(problems));
        }
        Self::build(files, |name| dir.join(name).display().to_string())
    }

    /// Builds a policy set from `(file name, bytes)` pairs with the same rules as
    /// [`Policies::load`]. Names are bare file names (`allow.cedar`); a name that is
    /// neither `*.cedar`, `schema.cedarschema` nor `entities.json` is an error.
    pub fn from_files(files: Vec<(String, Vec<u8>)>) -> Result<Policies, PolicyError> {
        Self::build(files, str::to_owned)
    }

    /// The example policies shipped in `policies/`, compiled into the binary. Their
    /// version equals that of `Policies::load("policies")` on an unmodified checkout.
    pub fn embedded_examples() -> Result<Policies, PolicyError> {
        Self::from_files(
            EMBEDDED
                .iter()
                .map(|(name, bytes)| ((*name).to_owned(), bytes.to_vec()))
                .collect(),
        )
    }

    fn build(
        mut files: Vec<(String, Vec<u8>)>,
        display: impl Fn(&str) -> String,
    ) -> Result<Policies, PolicyError> {
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let version = version_of(&files);
        let mut problems = Vec::new();

        let mut schema_src = None;
        let mut entities_src = None;
        let mut policy_files = Vec::new();
        for (i, (name, bytes)) in files.iter().enumerate() {
            if i > 0 && files[i - 1].0 == *name {
                problems.push(PolicyProblem::file(&display(name), "file given twice"));
                continue;
            }
            let shown = display(name);
            let text = match std::str::from_utf8(bytes) {
                Ok(text) => text,
                Err(e) => {
                    problems.push(PolicyProblem::file(&shown, format!("not UTF-8: {e}")));
                    continue;
                }
            };
            match role(name) {
                Some(Role::Schema) => schema_src = Some((shown, text)),
                Some(Role::Entities) => entities_src = Some((shown, text)),
                Some(Role::Policy) => policy_files.push((name.as_str(), shown, text)),
                None => problems.push(PolicyProblem::file(
                    &shown,
                    "unexpected file: expected *.cedar, schema.cedarschema or entities.json",
                )),
            }
        }

        let schema =
            schema_src.and_then(|(shown, text)| match Schema::from_cedarschema_str(text) {
                Ok((schema, _warnings)) => Some(schema),
                Err(e) => {
                    problems.push(PolicyProblem::file(
                        &shown,
                        format!("invalid schema: {}", chain(&e)),
                    ));
                    None
                }
            });

        if policy_files.is_empty() {
            problems.push(PolicyProblem::general(
                "no *.cedar policy files: a policy set needs at least one",
            ));
        }
        let mut set = PolicySet::new();
        // policy id → shown file name, for duplicate ids and validation errors
        let mut origin: HashMap<String, String> = HashMap::new();
        let mut ids = Vec::new();
        for (name, shown, text) in &policy_files {
            parse_policy_file(
                name,
                shown,
                text,
                &mut set,
                &mut origin,
                &mut ids,
                &mut problems,
            );
        }

        // Validate whatever parsed, so one run reports syntax and type errors together.
        if let Some(schema) = &schema {
            let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
            for e in result.validation_errors() {
                let id = e.policy_id().to_string();
                let file = origin.get(&id).cloned().unwrap_or_default();
                problems.push(PolicyProblem::policy(
                    &file,
                    &id,
                    format!("fails strict validation: {}", chain(e)),
                ));
            }
        }

        let model = RequestModel::new();
        let literals = request::literals(&set);
        let index = match &entities_src {
            Some((shown, text)) => {
                match EntityIndex::from_json(text, schema.as_ref(), &model, &literals) {
                    Ok(index) => Some(index),
                    Err(message) => {
                        problems.push(PolicyProblem::file(shown, message));
                        None
                    }
                }
            }
            None => match EntityIndex::empty(schema.as_ref(), &model, &literals) {
                Ok(index) => Some(index),
                Err(message) => {
                    problems.push(PolicyProblem::general(message));
                    None
                }
            },
        };
        if let Some(Err(message)) = schema.as_ref().map(|s| model.check_schema(s)) {
            problems.push(PolicyProblem::file(&display(SCHEMA_FILE), message));
        }

        match index {
            Some(index) if problems.is_empty() => {
                ids.sort();
                let reasons = set
                    .policies()
                    .filter_map(|p| Some((p.id().to_string(), p.annotation("reason")?.to_owned())))
                    .collect();
                Ok(Policies {
                    set,
                    schema,
                    index,
                    model,
                    authorizer: Authorizer::new(),
                    ids,
                    reasons,
                    version,
                })
            }
            _ => Err(PolicyError::new(problems)),
        }
    }

    /// `sha256:` + lowercase hex SHA-256 over every loaded file, in file-name order, each
    /// framed as: name length (u64 big-endian), name (UTF-8), content length (u64
    /// big-endian), content. Names are bare file names, so the version does not depend
    /// on where the directory is.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Every policy id, sorted.
    pub fn policy_ids(&self) -> Vec<String> {
        self.ids.clone()
    }

    /// Whether a schema was loaded (and so policies were strictly validated and requests
    /// are validated).
    pub fn has_schema(&self) -> bool {
        self.schema.is_some()
    }

    /// Marks the start of a poll cycle: cached values not used during the previous cycle
    /// are dropped, so memory follows the pending backlog.
    pub fn new_cycle(&self) {
        self.model.rotate_cache();
    }

    /// Decides one connection (README "Policies"). Never fails: anything that goes wrong while
    /// building or evaluating the request is an `error` verdict with action `none`.
    pub fn decide(&self, facts: &ConnectionFacts, on_no_match: OnNoMatch) -> Decision {
        match self.model.request(facts, &self.index, self.schema.as_ref()) {
            Ok((request, entities)) => {
                let response = self
                    .authorizer
                    .is_authorized(&request, &self.set, &entities);
                self.classify(&response, on_no_match)
            }
            Err(message) => Decision {
                verdict: Verdict::Error,
                action: Action::None,
                policies: Vec::new(),
                reasons: Vec::new(),
                errors: vec![message],
            },
        }
    }

    /// Maps Cedar's answer to a verdict. Cedar skips a policy whose evaluation errors and
    /// may still answer Allow (an erroring `forbid` is ignored), so any error at all is
    /// an `error` verdict: fail closed.
    fn classify(&self, response: &Response, on_no_match: OnNoMatch) -> Decision {
        let mut policies: Vec<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        policies.sort();
        let reasons = policies
            .iter()
            .map(|id| self.reasons.get(id).cloned().unwrap_or_default())
            .collect();
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(e) => {
                    format!("policy {}: {}", e.policy_id(), e.inner())
                }
            })
            .collect();
        let (verdict, action) = if !errors.is_empty() {
            (Verdict::Error, Action::None)
        } else if response.decision() == cedar_policy::Decision::Allow {
            (Verdict::Permit, Action::Receive)
        } else if !policies.is_empty() {
            (Verdict::Forbid, Action::Reject)
        } else {
            (Verdict::NoMatch, on_no_match.action())
        };
        Decision {
            verdict,
            action,
            policies,
            reasons,
            errors,
        }
    }

    /// Cedar's authorizer on a prepared request, for the benchmark floor.
    #[doc(hidden)]
    pub fn bench_is_authorized(
        &self,
        request: &cedar_policy::Request,
        entities: &Entities,
    ) -> cedar_policy::Decision {
        self.authorizer
            .is_authorized(request, &self.set, entities)
            .decision()
    }
}

/// The bytes of a regular file (following symlinks, as ConfigMap mounts need), or what is
/// wrong with the entry.
fn read_regular(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| {
        if std::fs::symlink_metadata(path).is_ok() {
            format!("dangling symbolic link: {e}")
        } else {
            format!("cannot read: {e}")
        }
    })?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let what = if ft.is_dir() {
            "a directory"
        } else {
            use std::os::unix::fs::FileTypeExt;
            if ft.is_fifo() {
                "a FIFO"
            } else if ft.is_socket() {
                "a socket"
            } else if ft.is_char_device() || ft.is_block_device() {
                "a device"
            } else {
                "not a regular file"
            }
        };
        return Err(format!("is {what}, not a regular file"));
    }
    std::fs::read(path).map_err(|e| format!("cannot read file: {e}"))
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let upto = &text[..end];
    let line = upto.matches('\n').count() + 1;
    let col = upto.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Parses one policy file into `set`, renaming each policy to its id.
fn parse_policy_file(
    name: &str,
    shown: &str,
    text: &str,
    set: &mut PolicySet,
    origin: &mut HashMap<String, String>,
    ids: &mut Vec<String>,
    problems: &mut Vec<PolicyProblem>,
) {
    let parsed = match PolicySet::from_str(text) {
        Ok(parsed) => parsed,
        Err(e) => {
            // Display shows only the first error; list them all.
            let all: Vec<String> = e
                .iter()
                .map(|e| {
                    use miette::Diagnostic;
                    match e.labels().and_then(|mut l| l.next()) {
                        Some(label) => {
                            let (line, col) = line_col(text, label.offset());
                            format!("line {line}, column {col}: {}", chain(e))
                        }
                        None => chain(e),
                    }
                })
                .collect();
            problems.push(PolicyProblem::file(
                shown,
                format!("syntax error: {}", all.join("; ")),
            ));
            return;
        }
    };
    if parsed.policies().next().is_none() && parsed.templates().next().is_none() {
        problems.push(PolicyProblem::file(
            shown,
            "holds no policy: an empty or half-written file would silently drop its rules",
        ));
        return;
    }
    if parsed.templates().next().is_some() {
        problems.push(PolicyProblem::file(
            shown,
            "templates (policies with ?principal or ?resource) are not supported",
        ));
        return;
    }
    // Cedar names the policies of one parse `policy0`, `policy1`, … in source order.
    let mut in_order: Vec<(usize, &cedar_policy::Policy)> = parsed
        .policies()
        .map(|p| {
            let n = p
                .id()
                .to_string()
                .strip_prefix("policy")
                .and_then(|n| n.parse().ok())
                .unwrap_or(usize::MAX);
            (n, p)
        })
        .collect();
    in_order.sort_by_key(|(n, _)| *n);
    for (n, policy) in in_order {
        let id = match policy.annotation("id") {
            Some("") => {
                problems.push(PolicyProblem::file(
                    shown,
                    format!("policy #{n} has an empty @id"),
                ));
                continue;
            }
            Some(id) => id.to_owned(),
            None => format!("{name}#{n}"),
        };
        if let Some(first) = origin.get(&id) {
            problems.push(PolicyProblem::policy(
                shown,
                &id,
                format!("duplicate policy id: also defined in {first}"),
            ));
            continue;
        }
        if let Err(e) = set.add(policy.new_id(PolicyId::new(&id))) {
            problems.push(PolicyProblem::policy(shown, &id, e.to_string()));
            continue;
        }
        origin.insert(id.clone(), shown.to_owned());
        ids.push(id);
    }
}

/// The policy version over sorted `(name, bytes)`; see [`Policies::version`].
fn version_of(files: &[(String, Vec<u8>)]) -> String {
    let mut hash = Sha256::new();
    for (name, bytes) in files {
        hash.update((name.len() as u64).to_be_bytes());
        hash.update(name.as_bytes());
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    }
    format!("sha256:{}", hex::encode(hash.finalize()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PARTNER: &str = "6e9dfd51d1124e8d8498dce894923a0d";

    fn facts(domain_id: &str, description: &str) -> ConnectionFacts {
        ConnectionFacts::example(domain_id, description)
    }

    fn files(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(n, t)| ((*n).to_owned(), t.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn policies_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Policies>();
    }

    #[test]
    fn embedded_examples_load_with_schema() {
        let p = Policies::embedded_examples().unwrap();
        assert!(p.has_schema());
        assert!(p.policy_ids().contains(&"allow-partners".to_owned()));
        assert!(p.version().starts_with("sha256:"));
        assert_eq!(p.version().len(), "sha256:".len() + 64);
    }

    #[test]
    fn embedded_examples_match_the_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let loaded = Policies::load(&dir).unwrap();
        let embedded = Policies::embedded_examples().unwrap();
        assert_eq!(loaded.version(), embedded.version());
        assert_eq!(loaded.policy_ids(), embedded.policy_ids());
    }

    #[test]
    fn partner_with_ticket_is_permitted_with_reason() {
        let p = Policies::embedded_examples().unwrap();
        let d = p.decide(
            &facts(PARTNER, "CHG-1234 payments"),
            OnNoMatch::LeavePending,
        );
        assert_eq!(d.verdict, Verdict::Permit, "{d:?}");
        assert_eq!(d.action, Action::Receive);
        assert_eq!(d.policies, ["allow-partners"]);
        assert_eq!(
            d.reasons,
            ["partner account with a change ticket in the description"]
        );
    }

    #[test]
    fn unnamed_policies_get_file_and_index_ids() {
        let p = Policies::from_files(files(&[(
            "a.cedar",
            "permit(principal, action, resource);\nforbid(principal, action, resource) when { false };",
        )]))
        .unwrap();
        assert_eq!(p.policy_ids(), ["a.cedar#0", "a.cedar#1"]);
        let d = p.decide(&facts(PARTNER, ""), OnNoMatch::LeavePending);
        assert_eq!(d.policies, ["a.cedar#0"]);
        assert_eq!(d.reasons, [""]);
    }

    #[test]
    fn nested_groups_and_group_attributes_reach_the_request() {
        let entities = r#"[
          {"uid": {"type": "Vpcep::AccountGroup", "id": "top"}, "attrs": {"tier": "gold"}, "parents": []},
          {"uid": {"type": "Vpcep::AccountGroup", "id": "mid"}, "attrs": {}, "parents": [{"type": "Vpcep::AccountGroup", "id": "top"}]},
          {"uid": {"type": "Vpcep::Account", "id": "6e9dfd51d1124e8d8498dce894923a0d"}, "attrs": {},
           "parents": [{"type": "Vpcep::AccountGroup", "id": "mid"}]}
        ]"#;
        let p = Policies::from_files(files(&[
            (
                "a.cedar",
                r#"@id("gold") permit(principal in Vpcep::AccountGroup::"top", action, resource)
                   when { Vpcep::AccountGroup::"top".tier == "gold" };"#,
            ),
            ("entities.json", entities),
        ]))
        .unwrap();
        let d = p.decide(&facts(PARTNER, ""), OnNoMatch::LeavePending);
        assert_eq!(d.verdict, Verdict::Permit, "{d:?}");
    }

    #[test]
    fn version_framing_is_unambiguous() {
        let a = version_of(&[("ab".into(), b"c".to_vec())]);
        let b = version_of(&[("a".into(), b"bc".to_vec())]);
        assert_ne!(a, b);
    }

    #[test]
    fn unexpected_file_name_is_rejected() {
        let e = Policies::from_files(files(&[
            ("a.cedar", "permit(principal, action, resource);"),
            ("notes.txt", "hello"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("notes.txt: unexpected file"), "{e}");
    }

    #[test]
    fn empty_set_is_rejected() {
        let e = Policies::from_files(Vec::new()).unwrap_err();
        assert!(e.to_string().contains("no *.cedar policy files"), "{e}");
    }

    #[test]
    fn templates_are_rejected() {
        let e = Policies::from_files(files(&[(
            "t.cedar",
            "permit(principal == ?principal, action, resource);",
        )]))
        .unwrap_err();
        assert!(e.to_string().contains("t.cedar: templates"), "{e}");
    }
}
