//! Policy test cases (README "Policies"): TOML files of `[[case]]` tables, each a hypothetical
//! connection and the action expected for it.
//!
//! Keys of a case (unknown keys are errors):
//!
//! | key | default |
//! |---|---|
//! | `name` | required |
//! | `domain_id` | required |
//! | `expect` | required: `"receive"`, `"reject"` or `"none"` |
//! | `expect_policies` | none: each listed id must be among the determining policies |
//! | `description` | `""` |
//! | `service_id` | `00000000-0000-0000-0000-000000000000` (a service no group lists) |
//! | `service_name` | `"test-service"` |
//! | `endpoint_id` | `00000000-0000-0000-0000-000000000001` |
//! | `marker_id` | `0` |
//! | `created_at` | the run's `now` (RFC 3339 string) |
//! | `now` | the time the run was given (RFC 3339 string); pins age rules in tests |
//! | `accepted_from_domain` | `0` |
//! | `pending_from_domain` | `1` (this connection) |
//! | `target` / `region` / `project_id` | `"test"` / `"test-region"` / `"test-project"` |
//!
//! Output: one line per case, `ok <name>` or `FAILED <name>: <what differed>`, then
//! `N passed, N failed` as the last line.

use super::Policies;
use crate::decision::{Action, ConnectionFacts, OnNoMatch, Subject};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Default `service_id` of a case.
pub const DEFAULT_SERVICE_ID: &str = "00000000-0000-0000-0000-000000000000";
/// Default `endpoint_id` of a case.
pub const DEFAULT_ENDPOINT_ID: &str = "00000000-0000-0000-0000-000000000001";

/// Counts of a test run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TestSummary {
    /// Cases whose decision matched.
    pub passed: usize,
    /// Cases whose decision differed.
    pub failed: usize,
}

/// A test file that cannot be run, naming the file and, where known, the case and key.
#[derive(Debug, thiserror::Error)]
pub enum TestFileError {
    /// The file could not be read.
    #[error("cannot read test file {file}")]
    Read {
        /// The test file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("invalid test file {file}: {message}")]
    Parse {
        /// The test file.
        file: PathBuf,
        /// The TOML error, which names the key and line.
        message: String,
    },
    /// A value inside a case is invalid.
    #[error("invalid test file {file}: case {case:?}: {key}: {message}")]
    Value {
        /// The test file.
        file: PathBuf,
        /// The case name.
        case: String,
        /// The offending key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Writing the report failed.
    #[error("cannot write the test report")]
    Write(#[source] std::io::Error),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    case: Vec<Case>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Receive,
    Reject,
    None,
}

impl Expect {
    fn action(self) -> Action {
        match self {
            Expect::Receive => Action::Receive,
            Expect::Reject => Action::Reject,
            Expect::None => Action::None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    domain_id: String,
    expect: Expect,
    expect_policies: Option<Vec<String>>,
    description: Option<String>,
    service_id: Option<String>,
    service_name: Option<String>,
    endpoint_id: Option<String>,
    marker_id: Option<i64>,
    created_at: Option<String>,
    now: Option<String>,
    accepted_from_domain: Option<i64>,
    pending_from_domain: Option<i64>,
    target: Option<String>,
    region: Option<String>,
    project_id: Option<String>,
}

/// One parsed case, ready to decide.
struct Prepared {
    name: String,
    facts: ConnectionFacts,
    expect: Action,
    expect_policies: Vec<String>,
}

/// Every `*.toml` file under `<dir>/tests/` (subdirectories included), sorted by path.
/// A missing `tests/` directory yields no files.
pub fn default_test_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    collect_toml(&dir.join("tests"), &mut found);
    found.sort();
    found
}

fn collect_toml(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_toml(&path, found);
        } else if path.extension().is_some_and(|e| e == "toml") {
            found.push(path);
        }
    }
}

/// Runs every case of `files` against `policies`, writing one line per case and a
/// summary line to `out`. All files are parsed before any case runs, so a broken file
/// produces no partial report. Failing cases are counted, not errors.
pub fn run_tests(
    policies: &Policies,
    files: &[PathBuf],
    on_no_match: OnNoMatch,
    now: DateTime<Utc>,
    out: &mut dyn std::io::Write,
) -> Result<TestSummary, TestFileError> {
    let mut cases = Vec::new();
    for file in files {
        cases.extend(read_cases(file, now)?);
    }
    let mut summary = TestSummary::default();
    for case in &cases {
        let decision = policies.decide(&case.facts, on_no_match);
        let mut differences = Vec::new();
        if decision.action != case.expect {
            differences.push(format!(
                "expected {}, got {} (verdict {})",
                case.expect, decision.action, decision.verdict
            ));
        }
        let missing: Vec<&str> = case
            .expect_policies
            .iter()
            .filter(|p| !decision.policies.contains(p))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            differences.push(format!(
                "expected policies [{}] among the determining ones",
                missing.join(", ")
            ));
        }
        if differences.is_empty() {
            summary.passed += 1;
            writeln!(out, "ok {}", case.name).map_err(TestFileError::Write)?;
        } else {
            summary.failed += 1;
            if !decision.policies.is_empty() {
                differences.push(format!("policies [{}]", decision.policies.join(", ")));
            }
            if !decision.errors.is_empty() {
                differences.push(format!("errors [{}]", decision.errors.join("; ")));
            }
            writeln!(out, "FAILED {}: {}", case.name, differences.join("; "))
                .map_err(TestFileError::Write)?;
        }
    }
    writeln!(out, "{} passed, {} failed", summary.passed, summary.failed)
        .map_err(TestFileError::Write)?;
    Ok(summary)
}

fn read_cases(file: &Path, run_now: DateTime<Utc>) -> Result<Vec<Prepared>, TestFileError> {
    let text = std::fs::read_to_string(file).map_err(|source| TestFileError::Read {
        file: file.to_owned(),
        source,
    })?;
    let parsed: CaseFile = toml::from_str(&text).map_err(|e| TestFileError::Parse {
        file: file.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    parsed
        .case
        .into_iter()
        .map(|case| prepare(file, case, run_now))
        .collect()
}

fn prepare(file: &Path, case: Case, run_now: DateTime<Utc>) -> Result<Prepared, TestFileError> {
    let time = |key: &'static str, value: &Option<String>, default: DateTime<Utc>| match value {
        None => Ok(default),
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| TestFileError::Value {
                file: file.to_owned(),
                case: case.name.clone(),
                key,
                message: format!("not an RFC 3339 time {s:?}: {e}"),
            }),
    };
    let now = time("now", &case.now, run_now)?;
    let created_at = time("created_at", &case.created_at, now)?;
    let facts = ConnectionFacts {
        subject: Subject {
            target: case.target.unwrap_or_else(|| "test".to_owned()),
            project_id: case.project_id.unwrap_or_else(|| "test-project".to_owned()),
            service_id: case
                .service_id
                .unwrap_or_else(|| DEFAULT_SERVICE_ID.to_owned()),
            service_name: case
                .service_name
                .unwrap_or_else(|| "test-service".to_owned()),
            endpoint_id: case
                .endpoint_id
                .unwrap_or_else(|| DEFAULT_ENDPOINT_ID.to_owned()),
            domain_id: case.domain_id,
            description: case.description.unwrap_or_default(),
            marker_id: case.marker_id.unwrap_or(0),
            created_at: crate::clock::format_secs(created_at),
        },
        region: case.region.unwrap_or_else(|| "test-region".to_owned()),
        created_at,
        now,
        accepted_from_domain: case.accepted_from_domain.unwrap_or(0),
        pending_from_domain: case.pending_from_domain.unwrap_or(1),
    };
    Ok(Prepared {
        name: case.name,
        facts,
        expect: case.expect.action(),
        expect_policies: case.expect_policies.unwrap_or_default(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn policies() -> Policies {
        Policies::from_files(vec![(
            "a.cedar".to_owned(),
            br#"@id("allow-x") permit(principal == Vpcep::Account::"x", action, resource);"#
                .to_vec(),
        )])
        .unwrap()
    }

    fn run(toml: &str) -> (Result<TestSummary, TestFileError>, String) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, toml).unwrap();
        let mut out = Vec::new();
        let r = run_tests(
            &policies(),
            &[file],
            OnNoMatch::LeavePending,
            Utc::now(),
            &mut out,
        );
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn reports_pass_and_fail_lines() {
        let (r, out) = run(r#"
[[case]]
name = "x is accepted"
domain_id = "x"
expect = "receive"
expect_policies = ["allow-x"]

[[case]]
name = "y is wrongly expected"
domain_id = "y"
expect = "receive"
"#);
        assert_eq!(
            r.unwrap(),
            TestSummary {
                passed: 1,
                failed: 1
            }
        );
        assert_eq!(
            out,
            "ok x is accepted\n\
             FAILED y is wrongly expected: expected receive, got none (verdict no-match)\n\
             1 passed, 1 failed\n"
        );
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let (r, out) =
            run("[[case]]\nname = \"a\"\ndomain_id = \"x\"\nexpect = \"none\"\ncolour = 1\n");
        let e = r.unwrap_err().to_string();
        assert!(e.contains("t.toml") && e.contains("colour"), "{e}");
        assert!(out.is_empty());
    }

    #[test]
    fn bad_time_names_case_and_key() {
        let (r, _) = run(
            "[[case]]\nname = \"a\"\ndomain_id = \"x\"\nexpect = \"none\"\ncreated_at = \"yesterday\"\n",
        );
        let e = r.unwrap_err().to_string();
        assert!(e.contains("case \"a\": created_at"), "{e}");
    }

    #[test]
    fn missing_tests_dir_has_no_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(default_test_files(dir.path()).is_empty());
    }
}
