//! Real Cedar over the shipped and fixture policy sets: a verdict table, hostile
//! descriptions, load errors that name the file and policy, version stability, and the
//! test-case runner.

#![allow(clippy::unwrap_used)]

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use vpcep_approver::decision::{Action, ConnectionFacts, OnNoMatch, Subject, Verdict};
use vpcep_approver::policy::{Policies, TestSummary, default_test_files, run_tests};

const PARTNER: &str = "11111111111111111111111111111111";
const BLOCKED_PARTNER: &str = "22222222222222222222222222222222";
const STRANGER: &str = "44444444444444444444444444444444";
const SHIPPED_PARTNER: &str = "6e9dfd51d1124e8d8498dce894923a0d";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/policies").join(name)
}

fn load_fixture(name: &str) -> Policies {
    Policies::load(&fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn load_error(name: &str) -> String {
    Policies::load(&fixture(name))
        .map(|_| ())
        .expect_err("the fixture must not load")
        .to_string()
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

/// The payments connection of `domain_id` with no description, decided at [`now`]
/// (`ConnectionFacts::example`).
fn facts(domain_id: &str) -> ConnectionFacts {
    ConnectionFacts::example(domain_id, "")
}

/// `f` with its connection changed by `edit`.
fn with_subject(mut f: ConnectionFacts, edit: impl FnOnce(&mut Subject)) -> ConnectionFacts {
    edit(&mut f.subject);
    f
}

/// Asserts that the error text `e` says each of `parts`.
fn assert_says(e: &str, parts: &[&str]) {
    for part in parts {
        assert!(e.contains(part), "no {part:?} in: {e}");
    }
}

/// Copies a directory's files (not subdirectories) into a fresh temporary directory.
fn copy_dir(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_file() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    dir
}

#[test]
fn verdict_table_over_fixtures() {
    let verdicts = load_fixture("verdicts");
    let noschema = load_fixture("noschema");
    assert!(verdicts.has_schema());
    assert!(!noschema.has_schema());
    let overflow = |domain: &str| with_subject(facts(domain), |s| s.marker_id = i64::MAX);

    struct Row {
        name: &'static str,
        policies: &'static Policies,
        facts: ConnectionFacts,
        on_no_match: OnNoMatch,
        verdict: Verdict,
        action: Action,
        determining: &'static [&'static str],
        error_names: Option<&'static str>,
    }
    // Leaked so the table can borrow them for 'static; the process ends soon after.
    let verdicts: &'static Policies = Box::leak(Box::new(verdicts));
    let noschema: &'static Policies = Box::leak(Box::new(noschema));
    let rows = [
        Row {
            name: "permit",
            policies: verdicts,
            facts: facts(PARTNER),
            on_no_match: OnNoMatch::LeavePending,
            verdict: Verdict::Permit,
            action: Action::Receive,
            determining: &["permit-partners"],
            error_names: None,
        },
        Row {
            name: "forbid overrides permit",
            policies: verdicts,
            facts: facts(BLOCKED_PARTNER),
            on_no_match: OnNoMatch::LeavePending,
            verdict: Verdict::Forbid,
            action: Action::Reject,
            determining: &["forbid-blocked"],
            error_names: None,
        },
        Row {
            name: "no match leaves pending",
            policies: verdicts,
            facts: facts(STRANGER),
            on_no_match: OnNoMatch::LeavePending,
            verdict: Verdict::NoMatch,
            action: Action::None,
            determining: &[],
            error_names: None,
        },
        Row {
            name: "no match with on_no_match = reject",
            policies: verdicts,
            facts: facts(STRANGER),
            on_no_match: OnNoMatch::Reject,
            verdict: Verdict::NoMatch,
            action: Action::Reject,
            determining: &[],
            error_names: None,
        },
        Row {
            name: "erroring forbid with a matching permit is an error, not a permit",
            policies: verdicts,
            facts: overflow(PARTNER),
            on_no_match: OnNoMatch::LeavePending,
            verdict: Verdict::Error,
            action: Action::None,
            determining: &["permit-partners"],
            error_names: Some("forbid-overflow-probe"),
        },
        Row {
            name: "error with deny is an error, even with on_no_match = reject",
            policies: verdicts,
            facts: overflow(STRANGER),
            on_no_match: OnNoMatch::Reject,
            verdict: Verdict::Error,
            action: Action::None,
            determining: &[],
            error_names: Some("forbid-overflow-probe"),
        },
        Row {
            name: "error next to a determining forbid is still an error",
            policies: verdicts,
            facts: overflow(BLOCKED_PARTNER),
            on_no_match: OnNoMatch::LeavePending,
            verdict: Verdict::Error,
            action: Action::None,
            determining: &["forbid-blocked"],
            error_names: Some("forbid-overflow-probe"),
        },
        Row {
            name: "missing attribute without a schema is an error with allow",
            policies: noschema,
            facts: facts(STRANGER),
            on_no_match: OnNoMatch::LeavePending,
            verdict: Verdict::Error,
            action: Action::None,
            determining: &["policies.cedar#0"],
            error_names: Some("forbid-owner"),
        },
    ];
    for row in rows {
        let d = row.policies.decide(&row.facts, row.on_no_match);
        assert_eq!(d.verdict, row.verdict, "{}: {d:?}", row.name);
        assert_eq!(d.action, row.action, "{}: {d:?}", row.name);
        assert_eq!(d.policies, row.determining, "{}: {d:?}", row.name);
        assert_eq!(d.reasons.len(), d.policies.len(), "{}: {d:?}", row.name);
        match row.error_names {
            None => assert!(d.errors.is_empty(), "{}: {d:?}", row.name),
            Some(id) => {
                assert_eq!(d.errors.len(), 1, "{}: {d:?}", row.name);
                assert!(d.errors[0].contains(id), "{}: {d:?}", row.name);
            }
        }
    }
}

#[test]
fn reasons_follow_policies_and_unannotated_policies_give_empty_reasons() {
    let d = load_fixture("verdicts").decide(&facts(PARTNER), OnNoMatch::LeavePending);
    assert_eq!(d.reasons, ["partner account"]);
    let d = load_fixture("noschema").decide(
        &with_subject(facts(STRANGER), |s| s.marker_id = 1),
        OnNoMatch::LeavePending,
    );
    assert_eq!(d.policies, ["policies.cedar#0"]);
    assert_eq!(d.reasons, [""]);
}

#[test]
fn shipped_policies_pass_their_own_tests() {
    let dir = root().join("policies");
    let policies = Policies::load(&dir).unwrap();
    assert!(policies.has_schema());
    let files = default_test_files(&dir);
    assert!(!files.is_empty());
    let mut out = Vec::new();
    let summary = run_tests(
        &policies,
        &files,
        OnNoMatch::LeavePending,
        Utc::now(),
        &mut out,
    )
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(summary.failed, 0, "{out}");
    assert!(summary.passed >= 10, "{out}");
}

#[test]
fn shipped_and_embedded_policies_are_the_same_version() {
    let loaded = Policies::load(&root().join("policies")).unwrap();
    let embedded = Policies::embedded_examples().unwrap();
    assert_eq!(loaded.version(), embedded.version());
    assert_eq!(loaded.policy_ids(), embedded.policy_ids());
}

const HOSTILE: &[&str] = &[
    "\"; permit(principal, action, resource); //",
    "\" } permit (principal, action, resource) when { \"",
    "CHG-1\u{0}\u{7}\u{1b}[31m\r\n\ttrailing",
    "CHG-1 \u{202e}reversed\u{202c} \u{feff} 👍 中文",
    "\\\"\\\\\\u0000 CHG-2",
    "*CHG-*",
    "{\"__entity\": {\"type\": \"Vpcep::AccountGroup\", \"id\": \"partners\"}}",
];

#[test]
fn hostile_descriptions_are_plain_text() {
    let policies = Policies::embedded_examples().unwrap();
    for description in HOSTILE {
        // An unknown account: only the description could change anything, and no
        // description may turn into a permit.
        let d = policies.decide(
            &ConnectionFacts::example(STRANGER, description),
            OnNoMatch::LeavePending,
        );
        assert_eq!(d.verdict, Verdict::NoMatch, "{description:?}: {d:?}");
        // A partner with a ticket is judged on the text as text.
        let d = policies.decide(
            &ConnectionFacts::example(SHIPPED_PARTNER, description),
            OnNoMatch::LeavePending,
        );
        assert!(d.errors.is_empty(), "{description:?}: {d:?}");
        assert_eq!(
            d.verdict == Verdict::Permit,
            description.contains("CHG-"),
            "{description:?}: {d:?}"
        );
    }
}

#[test]
fn multi_megabyte_description_is_decided() {
    let policies = Policies::embedded_examples().unwrap();
    let mut description = "x\"\n".repeat(2_000_000);
    description.push_str("CHG-1");
    let d = policies.decide(
        &with_subject(facts(SHIPPED_PARTNER), |s| s.description = description),
        OnNoMatch::LeavePending,
    );
    assert_eq!(d.verdict, Verdict::Permit, "{:?}", d.errors);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_description_never_errors_or_permits_a_stranger(description in any::<String>()) {
        let policies = Policies::embedded_examples().unwrap();
        let d = policies.decide(
            &with_subject(facts(STRANGER), |s| s.description = description),
            OnNoMatch::LeavePending,
        );
        prop_assert!(d.errors.is_empty(), "{:?}", d);
        prop_assert_ne!(d.verdict, Verdict::Permit);
    }
}

#[test]
fn hostile_ids_are_plain_identifiers() {
    let policies = Policies::embedded_examples().unwrap();
    for id in HOSTILE {
        let d = policies.decide(
            &with_subject(facts(id), |s| {
                s.service_id = (*id).to_owned();
                s.endpoint_id = (*id).to_owned();
                s.service_name = (*id).to_owned();
            }),
            OnNoMatch::LeavePending,
        );
        assert!(d.errors.is_empty(), "{id:?}: {d:?}");
        assert_ne!(d.verdict, Verdict::Permit, "{id:?}: {d:?}");
    }
}

#[test]
fn duplicate_ids_are_rejected_naming_both_files() {
    assert_says(
        &load_error("dup-ids"),
        &[
            "dup-ids/b.cedar: policy same-id",
            "duplicate policy id",
            "dup-ids/a.cedar",
        ],
    );
}

#[test]
fn syntax_error_names_the_file() {
    let e = load_error("syntax-error");
    // The file, and the position in it.
    assert_says(
        &e,
        &["syntax-error/broken.cedar: syntax error", "line 2, column "],
    );
    assert!(!e.contains("ok.cedar"), "{e}");
}

#[test]
fn strict_validation_error_names_file_and_policy() {
    let e = load_error("invalid-strict");
    assert_says(
        &e,
        &["invalid-strict/policies.cedar: policy uses-unknown-attribute: fails strict validation"],
    );
    assert!(!e.contains("policy fine"), "{e}");
}

#[test]
fn entities_that_do_not_match_the_schema_are_rejected() {
    assert_says(
        &load_error("bad-entities"),
        &["bad-entities/entities.json: invalid entities"],
    );
}

#[test]
fn malformed_entities_json_is_rejected() {
    let dir = copy_dir(&fixture("verdicts"));
    std::fs::write(dir.path().join("entities.json"), "[ { \"uid\": ").unwrap();
    let e = Policies::load(dir.path()).unwrap_err().to_string();
    assert_says(&e, &["entities.json: invalid JSON"]);
}

#[test]
fn every_problem_is_listed() {
    let dir = copy_dir(&fixture("invalid-strict"));
    std::fs::write(dir.path().join("c.cedar"), "permit (principal").unwrap();
    std::fs::write(
        dir.path().join("d.cedar"),
        "@id(\"fine\") permit (principal, action, resource);",
    )
    .unwrap();
    let e = Policies::load(dir.path()).unwrap_err();
    let text = e.to_string();
    assert_eq!(e.problems().len(), 3, "{text}");
    assert_says(
        &text,
        &[
            "c.cedar: syntax error",
            "policies.cedar: policy fine: duplicate policy id: also defined in",
            "policy uses-unknown-attribute: fails strict",
        ],
    );
    assert_eq!(text.lines().count(), 3, "{text}");
}

#[test]
fn schema_that_drifted_from_the_request_model_is_rejected() {
    let dir = copy_dir(&fixture("bad-entities"));
    std::fs::remove_file(dir.path().join("entities.json")).unwrap();
    let schema = std::fs::read_to_string(dir.path().join("schema.cedarschema")).unwrap();
    std::fs::write(
        dir.path().join("schema.cedarschema"),
        schema.replace("marker_id: Long,", "marker_id: String,"),
    )
    .unwrap();
    let e = Policies::load(dir.path()).unwrap_err().to_string();
    assert_says(
        &e,
        &["schema.cedarschema: schema does not match the request model"],
    );
}

#[test]
fn version_is_stable_and_tracks_content_and_names() {
    let src = fixture("verdicts");
    let a = copy_dir(&src);
    let b = copy_dir(&src);
    let va = Policies::load(a.path()).unwrap().version().to_owned();
    // Same files elsewhere, loaded again: same version.
    assert_eq!(va, Policies::load(b.path()).unwrap().version());
    assert_eq!(va, Policies::load(a.path()).unwrap().version());
    // Files that are not loaded do not count.
    std::fs::write(b.path().join("README.md"), "notes").unwrap();
    assert_eq!(va, Policies::load(b.path()).unwrap().version());
    // One more byte changes it.
    let policy = b.path().join("policies.cedar");
    let mut text = std::fs::read_to_string(&policy).unwrap();
    text.push('\n');
    std::fs::write(&policy, &text).unwrap();
    let vb = Policies::load(b.path()).unwrap().version().to_owned();
    assert_ne!(va, vb);
    // So does a rename with the same content.
    std::fs::rename(&policy, b.path().join("renamed.cedar")).unwrap();
    assert_ne!(vb, Policies::load(b.path()).unwrap().version());
}

#[test]
fn run_tests_reports_known_counts_and_lines() {
    let dir = fixture("verdicts");
    let policies = load_fixture("verdicts");
    let files = default_test_files(&dir);
    assert_eq!(files, [dir.join("tests/mixed.toml")]);
    let mut out = Vec::new();
    let summary = run_tests(&policies, &files, OnNoMatch::LeavePending, now(), &mut out).unwrap();
    assert_eq!(
        summary,
        TestSummary {
            passed: 3,
            failed: 2
        }
    );
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert_eq!(lines[0], "ok partner is accepted");
    assert_eq!(lines[1], "ok blocked partner is rejected");
    assert_eq!(lines[2], "ok stranger stays pending");
    assert!(
        lines[3].starts_with("FAILED wrong expectation for a stranger: expected receive, got none"),
        "{out}"
    );
    assert!(
        lines[4]
            .starts_with("FAILED wrong policy for a partner: expected policies [forbid-blocked]"),
        "{out}"
    );
    assert_eq!(lines[5], "3 passed, 2 failed");
}

#[test]
fn run_tests_rejects_unknown_keys_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.toml");
    std::fs::write(
        &file,
        "[[case]]\nname = \"a\"\ndomain_id = \"x\"\nexpect = \"none\"\nexpect_policy = []\n",
    )
    .unwrap();
    let mut out = Vec::new();
    let e = run_tests(
        &load_fixture("verdicts"),
        &[file],
        OnNoMatch::LeavePending,
        now(),
        &mut out,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("typo.toml") && e.contains("expect_policy"),
        "{e}"
    );
}
