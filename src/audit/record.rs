//! The three record kinds of the audit log (decision, outcome, checkpoint), their exact
//! line format (README "Audit log") and the strict parser `audit verify` uses.
//!
//! A line is rendered by serde_json from a struct whose fields are declared in the order
//! the format prescribes, so every string (descriptions included) is a JSON string with
//! control characters, quotes and backslashes escaped: no content can break a line.
//! Parsing is the reverse plus one check that makes the format exact: the parsed record
//! is rendered again and must give back the same bytes, which rejects reordered fields,
//! extra whitespace, duplicate keys and any escaping the writer would not produce.

use crate::clock;
use crate::decision::{Action, Outcome, Subject, Verdict};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// The `prev` of the first line of a new chain: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The longest line the writer produces and the verifier accepts (64 MiB). It bounds the
/// memory `audit verify` needs for a damaged file without newlines.
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// One decision (README "Audit log", `kind: "decision"`), written before any action is sent.
/// (No `deny_unknown_fields`, which serde does not support beside `flatten`: the parser
/// checks the exact field list itself.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// Fresh UUID v7 that the outcome record refers back to.
    pub decision_id: String,
    /// The connection, verbatim (its fields stand in the line in their order).
    #[serde(flatten)]
    pub subject: Subject,
    /// The verdict.
    pub verdict: Verdict,
    /// The action the verdict maps to.
    pub action: Action,
    /// Ids of the determining policies.
    pub policies: Vec<String>,
    /// `@reason` texts of the determining policies.
    pub reasons: Vec<String>,
    /// Evaluation and validation errors.
    pub errors: Vec<String>,
    /// `sha256:…` version of the loaded policy set.
    pub policy_version: String,
    /// True when the decision was made with `--dry-run` (no action is sent).
    pub dry_run: bool,
}

/// How a sent action ended (README "Audit log", `kind: "outcome"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeRecord {
    /// The `decision_id` of the decision record this action followed.
    pub decision_id: String,
    /// VPC endpoint id.
    pub endpoint_id: String,
    /// The action that was sent.
    pub action: Action,
    /// How it ended.
    pub outcome: Outcome,
    /// The connection status afterwards, when known.
    pub status_after: Option<String>,
    /// HTTP status of the last attempt, when one was answered.
    pub http_status: Option<u16>,
    /// The API's `error_code`, when it sent one.
    pub error_code: Option<String>,
    /// The API's `error_msg` or the transport error.
    pub error_message: Option<String>,
    /// Number of attempts made.
    pub attempts: u32,
}

/// Returns a fresh decision id (UUID v7, time-ordered).
pub fn new_decision_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A signed checkpoint (`kind: "checkpoint"`): how many lines the chain had before it and
/// the hash of the last of them, signed with the audit signing key, so that a holder of
/// the public key can tell that nothing up to here was changed, removed or inserted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRecord {
    /// Lines of the chain before this one.
    pub records: u64,
    /// Hex SHA-256 of the previous line: always equal to the line's `prev`.
    pub head: String,
    /// First 16 hex digits of the SHA-256 of the raw 32-byte Ed25519 public key.
    pub key_id: String,
    /// Base64 (standard, padded) Ed25519 signature over
    /// [`crate::audit::checkpoint_message`] of `records`, `head` and the line's `ts`.
    pub signature: String,
}

/// Any kind of record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditRecord {
    /// A `kind: "decision"` line.
    Decision(DecisionRecord),
    /// A `kind: "outcome"` line.
    Outcome(OutcomeRecord),
    /// A `kind: "checkpoint"` line.
    Checkpoint(CheckpointRecord),
}

/// One parsed line: the record plus the two fields the writer adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditLine {
    /// When the line was written (RFC 3339 UTC with milliseconds).
    pub ts: String,
    /// The record.
    pub record: AuditRecord,
    /// Hex SHA-256 of the previous line.
    pub prev: String,
}

/// Why a line is not a valid audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidLine(pub String);

impl fmt::Display for InvalidLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidLine {}

/// The decision line's fields, in order (README "Audit log").
const DECISION_FIELDS: &[&str] = &[
    "ts",
    "kind",
    "decision_id",
    "target",
    "project_id",
    "service_id",
    "service_name",
    "endpoint_id",
    "domain_id",
    "description",
    "marker_id",
    "created_at",
    "verdict",
    "action",
    "policies",
    "reasons",
    "errors",
    "policy_version",
    "dry_run",
    "prev",
];

/// The outcome line's fields, in order (README "Audit log").
const OUTCOME_FIELDS: &[&str] = &[
    "ts",
    "kind",
    "decision_id",
    "endpoint_id",
    "action",
    "outcome",
    "status_after",
    "http_status",
    "error_code",
    "error_message",
    "attempts",
    "prev",
];

/// The checkpoint line's fields, in order.
const CHECKPOINT_FIELDS: &[&str] = &[
    "ts",
    "kind",
    "records",
    "head",
    "key_id",
    "signature",
    "prev",
];

/// The on-disk shape: `ts` and `kind` first, the record's fields, `prev` last.
#[derive(Serialize)]
struct Line<'a, R> {
    ts: &'a str,
    kind: &'static str,
    #[serde(flatten)]
    record: &'a R,
    prev: &'a str,
}

/// A record kind: the `kind` value of its lines and their fields, in order.
pub(crate) trait Kind: Serialize + serde::de::DeserializeOwned {
    /// The line's `kind`.
    const KIND: &'static str;
    /// Every field of the line, `ts` first and `prev` last (README "Audit log").
    const FIELDS: &'static [&'static str];
}

impl Kind for DecisionRecord {
    const KIND: &'static str = "decision";
    const FIELDS: &'static [&'static str] = DECISION_FIELDS;
}

impl Kind for OutcomeRecord {
    const KIND: &'static str = "outcome";
    const FIELDS: &'static [&'static str] = OUTCOME_FIELDS;
}

impl Kind for CheckpointRecord {
    const KIND: &'static str = "checkpoint";
    const FIELDS: &'static [&'static str] = CHECKPOINT_FIELDS;
}

/// Renders a line of any kind (without the newline).
pub(crate) fn render<R: Kind>(ts: &str, rec: &R, prev: &str) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Line {
        ts,
        kind: R::KIND,
        record: rec,
        prev,
    })
}

/// Lowercase hex SHA-256 of a line's bytes (without its newline): the next line's `prev`.
pub fn line_hash(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// Formats the `ts` of a line written now.
pub(crate) fn timestamp(clock: &dyn clock::Clock) -> String {
    clock::format_millis(clock.now())
}

/// Parses one line (without its newline) strictly: it must be exactly a decision, outcome
/// or checkpoint record as the writer renders it, no field missing, none added, none
/// moved. A checkpoint's `head` must equal its `prev`, its `key_id` be 16 lowercase hex
/// digits and its `signature` the canonical base64 of 64 bytes (whether the signature is
/// valid is for [`crate::audit::VerifyingKey`] to say).
pub fn parse_line(line: &[u8]) -> Result<AuditLine, InvalidLine> {
    let bad = |m: String| InvalidLine(m);
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let serde_json::Value::Object(mut map) = value else {
        return Err(bad("not a JSON object".to_owned()));
    };
    let kind = match map.get("kind") {
        Some(serde_json::Value::String(k)) => k.clone(),
        Some(_) => return Err(bad("field `kind` is not a string".to_owned())),
        None => return Err(bad("missing field `kind`".to_owned())),
    };
    let fields = match kind.as_str() {
        DecisionRecord::KIND => DecisionRecord::FIELDS,
        OutcomeRecord::KIND => OutcomeRecord::FIELDS,
        CheckpointRecord::KIND => CheckpointRecord::FIELDS,
        other => {
            return Err(bad(format!(
                "unknown kind {other:?} (expected \"decision\", \"outcome\" or \"checkpoint\")"
            )));
        }
    };
    if let Some(missing) = fields.iter().find(|f| !map.contains_key(**f)) {
        return Err(bad(format!("{kind} record: missing field `{missing}`")));
    }
    if let Some(extra) = map.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(bad(format!("{kind} record: unknown field `{extra}`")));
    }
    let mut take_str = |name: &str| match map.remove(name) {
        Some(serde_json::Value::String(s)) => Ok(s),
        _ => Err(bad(format!(
            "{kind} record: field `{name}` is not a string"
        ))),
    };
    let ts = take_str("ts")?;
    let prev = take_str("prev")?;
    map.remove("kind");
    check_ts(&ts).map_err(|m| bad(format!("{kind} record: {m}")))?;
    if !is_hash(&prev) {
        return Err(bad(format!(
            "{kind} record: field `prev` is not 64 lowercase hex digits"
        )));
    }
    let rest = serde_json::Value::Object(map);
    let (record, rendered) = match kind.as_str() {
        "decision" => {
            let (rec, rendered) = reparse::<DecisionRecord>(rest, &ts, &prev)?;
            (AuditRecord::Decision(rec), rendered)
        }
        "outcome" => {
            let (rec, rendered) = reparse::<OutcomeRecord>(rest, &ts, &prev)?;
            (AuditRecord::Outcome(rec), rendered)
        }
        _ => {
            let (rec, rendered) = reparse::<CheckpointRecord>(rest, &ts, &prev)?;
            check_checkpoint(&rec, &prev).map_err(|m| bad(format!("checkpoint record: {m}")))?;
            (AuditRecord::Checkpoint(rec), rendered)
        }
    };
    let rendered = rendered.map_err(|e| bad(format!("{kind} record cannot be rendered: {e}")))?;
    if rendered != line {
        return Err(bad(format!(
            "{kind} record is not in the exact written form (fields reordered or duplicated, \
             extra whitespace, or different escaping)"
        )));
    }
    Ok(AuditLine { ts, record, prev })
}

/// A record of kind `R` from a line's fields (without `ts`, `kind` and `prev`), and the
/// line as the writer would render it.
fn reparse<R: Kind>(
    rest: serde_json::Value,
    ts: &str,
    prev: &str,
) -> Result<(R, Result<Vec<u8>, serde_json::Error>), InvalidLine> {
    let rec: R = serde_json::from_value(rest)
        .map_err(|e| InvalidLine(format!("{} record: {e}", R::KIND)))?;
    let rendered = render(ts, &rec, prev);
    Ok((rec, rendered))
}

/// The shape rules of a checkpoint beyond its field types.
fn check_checkpoint(rec: &CheckpointRecord, prev: &str) -> Result<(), String> {
    use base64::Engine as _;
    if rec.head != prev {
        return Err("field `head` is not the line's `prev`".to_owned());
    }
    if rec.key_id.len() != 16
        || !rec
            .key_id
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err("field `key_id` is not 16 lowercase hex digits".to_owned());
    }
    let canonical = base64::engine::general_purpose::STANDARD
        .decode(&rec.signature)
        .ok()
        .filter(|sig| sig.len() == 64)
        .is_some_and(|sig| base64::engine::general_purpose::STANDARD.encode(sig) == rec.signature);
    if !canonical {
        return Err("field `signature` is not the base64 of a 64-byte signature".to_owned());
    }
    Ok(())
}

/// Checks that `ts` is what [`clock::format_millis`] produces.
fn check_ts(ts: &str) -> Result<(), String> {
    let parsed = chrono::DateTime::parse_from_rfc3339(ts)
        .map_err(|e| format!("field `ts` is not an RFC 3339 timestamp: {e}"))?;
    if clock::format_millis(parsed.with_timezone(&chrono::Utc)) != ts {
        return Err("field `ts` is not UTC with milliseconds and `Z`".to_owned());
    }
    Ok(())
}

/// True for 64 lowercase hex digits.
pub(crate) fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision() -> DecisionRecord {
        DecisionRecord {
            decision_id: "0193a5c4-0000-7000-8000-000000000001".to_owned(),
            subject: Subject {
                target: "cn-north-4".to_owned(),
                project_id: "0605767a3300d5762fb7c0186d8bfc2b".to_owned(),
                service_id: "4189d3c2-8882-4871-a3c2-d380272eed88".to_owned(),
                service_name: "payments".to_owned(),
                endpoint_id: "705290f3-0000-0000-0000-000000000000".to_owned(),
                domain_id: "6e9dfd51d1124e8d8498dce894923a0d".to_owned(),
                description: "CHG-1234 payments link".to_owned(),
                marker_id: 422_321_321_312_321_321,
                created_at: "2022-04-14T09:35:47Z".to_owned(),
            },
            verdict: Verdict::Permit,
            action: Action::Receive,
            policies: vec!["allow-partners".to_owned()],
            reasons: vec!["partner account with a change ticket".to_owned()],
            errors: vec![],
            policy_version: "sha256:abc".to_owned(),
            dry_run: false,
        }
    }

    fn outcome() -> OutcomeRecord {
        OutcomeRecord {
            decision_id: "0193a5c4-0000-7000-8000-000000000001".to_owned(),
            endpoint_id: "705290f3-0000-0000-0000-000000000000".to_owned(),
            action: Action::Receive,
            outcome: Outcome::Applied,
            status_after: Some("accepted".to_owned()),
            http_status: Some(200),
            error_code: None,
            error_message: None,
            attempts: 1,
        }
    }

    const TS: &str = "2026-11-27T12:00:00.123Z";

    #[test]
    fn decision_line_has_the_exact_spec_shape() {
        let line = render(TS, &decision(), GENESIS_HASH).expect("renders");
        let expected = format!(
            "{{\"ts\":\"{TS}\",\"kind\":\"decision\",\"decision_id\":\"0193a5c4-0000-7000-8000-000000000001\",\
             \"target\":\"cn-north-4\",\"project_id\":\"0605767a3300d5762fb7c0186d8bfc2b\",\
             \"service_id\":\"4189d3c2-8882-4871-a3c2-d380272eed88\",\"service_name\":\"payments\",\
             \"endpoint_id\":\"705290f3-0000-0000-0000-000000000000\",\
             \"domain_id\":\"6e9dfd51d1124e8d8498dce894923a0d\",\"description\":\"CHG-1234 payments link\",\
             \"marker_id\":422321321312321321,\"created_at\":\"2022-04-14T09:35:47Z\",\
             \"verdict\":\"permit\",\"action\":\"receive\",\"policies\":[\"allow-partners\"],\
             \"reasons\":[\"partner account with a change ticket\"],\"errors\":[],\
             \"policy_version\":\"sha256:abc\",\"dry_run\":false,\"prev\":\"{GENESIS_HASH}\"}}"
        );
        assert_eq!(String::from_utf8(line).expect("utf-8"), expected);
    }

    #[test]
    fn outcome_line_has_the_exact_spec_shape_with_nulls() {
        let line = render(TS, &outcome(), GENESIS_HASH).expect("renders");
        let expected = format!(
            "{{\"ts\":\"{TS}\",\"kind\":\"outcome\",\"decision_id\":\"0193a5c4-0000-7000-8000-000000000001\",\
             \"endpoint_id\":\"705290f3-0000-0000-0000-000000000000\",\"action\":\"receive\",\
             \"outcome\":\"applied\",\"status_after\":\"accepted\",\"http_status\":200,\
             \"error_code\":null,\"error_message\":null,\"attempts\":1,\"prev\":\"{GENESIS_HASH}\"}}"
        );
        assert_eq!(String::from_utf8(line).expect("utf-8"), expected);
    }

    #[test]
    fn field_lists_match_the_rendered_order() {
        for (line, fields) in [
            (render(TS, &decision(), GENESIS_HASH), DECISION_FIELDS),
            (render(TS, &outcome(), GENESIS_HASH), OUTCOME_FIELDS),
        ] {
            let text = String::from_utf8(line.expect("renders")).expect("utf-8");
            let mut at = 0;
            for f in fields {
                let pos = text[at..]
                    .find(&format!("\"{f}\":"))
                    .expect("field present")
                    + at;
                at = pos;
            }
        }
    }

    #[test]
    fn parse_round_trips_both_kinds() {
        let line = render(TS, &decision(), GENESIS_HASH).expect("renders");
        let parsed = parse_line(&line).expect("valid");
        assert_eq!(parsed.record, AuditRecord::Decision(decision()));
        assert_eq!(parsed.ts, TS);
        assert_eq!(parsed.prev, GENESIS_HASH);
        let line = render(TS, &outcome(), GENESIS_HASH).expect("renders");
        assert_eq!(
            parse_line(&line).expect("valid").record,
            AuditRecord::Outcome(outcome())
        );
    }

    fn reason(line: &str) -> String {
        parse_line(line.as_bytes()).expect_err("must be rejected").0
    }

    fn valid_outcome() -> String {
        String::from_utf8(render(TS, &outcome(), GENESIS_HASH).expect("renders")).expect("utf-8")
    }

    #[test]
    fn parse_rejects_each_kind_of_deviation() {
        let good = valid_outcome();
        assert!(reason("not json").contains("not valid JSON"));
        assert!(reason("[1]").contains("not a JSON object"));
        assert!(reason("{}").contains("missing field `kind`"));
        assert!(reason(&good.replace("\"outcome\",\"d", "\"other\",\"d")).contains("unknown kind"));
        assert!(reason(&good.replace("\"attempts\":1,", "")).contains("missing field `attempts`"));
        assert!(
            reason(&good.replace("\"error_code\":null,", ""))
                .contains("missing field `error_code`")
        );
        assert!(
            reason(&good.replace("\"attempts\":1,", "\"attempts\":1,\"x\":2,"))
                .contains("unknown field `x`")
        );
        assert!(
            reason(&good.replace("\"attempts\":1", "\"attempts\":-1")).contains("expected u32")
        );
        assert!(
            reason(&good.replace("\"attempts\":1", "\"attempts\":1.0")).contains("outcome record")
        );
        assert!(reason(&good.replace("applied", "maybe")).contains("unknown variant"));
        assert!(reason(&good.replace(TS, "2026-11-27T12:00:00Z")).contains("`ts`"));
        assert!(reason(&good.replace(TS, "2026-11-27T13:00:00.123+01:00")).contains("`ts`"));
        assert!(reason(&good.replace(TS, "yesterday")).contains("`ts`"));
        assert!(reason(&good.replace(GENESIS_HASH, &"A".repeat(64))).contains("`prev`"));
        assert!(
            reason(&good.replace(",\"attempts\"", ", \"attempts\"")).contains("exact written form")
        );
        // Same fields, different order.
        let reordered = good.replace(
            "\"error_code\":null,\"error_message\":null",
            "\"error_message\":null,\"error_code\":null",
        );
        assert!(reason(&reordered).contains("exact written form"));
        // A duplicated key (the last one wins in the parser) is not the written form.
        let dup = good.replace("\"attempts\":1,", "\"attempts\":2,\"attempts\":1,");
        assert!(reason(&dup).contains("exact written form"));
        // Escaping the writer would not produce.
        let escaped = good.replace("accepted", "\\u0061ccepted");
        assert!(reason(&escaped).contains("exact written form"));
    }

    #[test]
    fn hostile_strings_stay_on_one_line_and_round_trip() {
        let hostile = [
            "line\nbreak",
            "cr\rlf\r\n",
            "quote\" brace} \"kind\":\"outcome\"\n{\"ts\":\"x\"}",
            "back\\slash \\n \\u0000",
            "nul \u{0} bell \u{7} esc \u{1b}[31m del \u{7f}",
            "\u{2028}\u{2029}\u{feff}\u{fffe}\u{ffff}\u{10ffff}",
            "emoji 🦀 and combining e\u{301}",
            "",
        ];
        for h in hostile {
            let mut rec = decision();
            rec.subject.description = h.to_owned();
            rec.reasons = vec![h.to_owned()];
            rec.subject.service_name = h.to_owned();
            let line = render(TS, &rec, GENESIS_HASH).expect("renders");
            assert!(!line.contains(&b'\n') && !line.contains(&b'\r'), "{h:?}");
            assert_eq!(
                parse_line(&line).expect("valid").record,
                AuditRecord::Decision(rec)
            );
        }
    }

    fn checkpoint() -> CheckpointRecord {
        CheckpointRecord {
            records: 1234,
            head: "ab".repeat(32),
            key_id: "0123456789abcdef".to_owned(),
            signature: format!("{}==", "A".repeat(86)),
        }
    }

    #[test]
    fn checkpoint_line_has_the_exact_spec_shape() {
        let head = "ab".repeat(32);
        let line = render(TS, &checkpoint(), &head).expect("renders");
        let expected = format!(
            "{{\"ts\":\"{TS}\",\"kind\":\"checkpoint\",\"records\":1234,\"head\":\"{head}\",\
             \"key_id\":\"0123456789abcdef\",\"signature\":\"{}==\",\"prev\":\"{head}\"}}",
            "A".repeat(86)
        );
        assert_eq!(String::from_utf8(line.clone()).expect("utf-8"), expected);
        assert_eq!(
            parse_line(&line).expect("valid").record,
            AuditRecord::Checkpoint(checkpoint())
        );
        let text = String::from_utf8(line).expect("utf-8");
        let mut at = 0;
        for f in CHECKPOINT_FIELDS {
            at += text[at..]
                .find(&format!("\"{f}\":"))
                .expect("field in order");
        }
    }

    #[test]
    fn checkpoint_parse_rejects_each_kind_of_deviation() {
        let head = "ab".repeat(32);
        let good =
            String::from_utf8(render(TS, &checkpoint(), &head).expect("renders")).expect("utf-8");
        parse_line(good.as_bytes()).expect("valid");
        // `head` must be the line's `prev`.
        let other = "cd".repeat(32);
        let moved = good.replacen(
            &format!("\"prev\":\"{head}\""),
            &format!("\"prev\":\"{other}\""),
            1,
        );
        assert!(
            reason(&moved).contains("`head` is not the line's `prev`"),
            "{}",
            reason(&moved)
        );
        assert!(reason(&good.replace("0123456789abcdef", "0123456789ABCDEF")).contains("`key_id`"));
        assert!(reason(&good.replace("0123456789abcdef", "0123")).contains("`key_id`"));
        assert!(reason(&good.replace("AAAA==", "AAA===")).contains("`signature`"));
        assert!(reason(&good.replace("AAAA==", "AA==")).contains("`signature`"));
        assert!(
            reason(&good.replace("\"records\":1234", "\"records\":-1"))
                .contains("checkpoint record")
        );
        assert!(
            reason(&good.replace("\"records\":1234", "\"records\":\"1234\""))
                .contains("checkpoint record")
        );
        assert!(
            reason(&good.replace(",\"key_id\"", ",\"x\":1,\"key_id\""))
                .contains("unknown field `x`")
        );
        assert!(reason(&good.replace("\"records\":1234,", "")).contains("missing field `records`"));
        let reordered = good.replace(
            &format!("\"records\":1234,\"head\":\"{head}\""),
            &format!("\"head\":\"{head}\",\"records\":1234"),
        );
        assert!(reason(&reordered).contains("exact written form"));
    }

    #[test]
    fn line_hash_is_lowercase_hex_sha256() {
        assert_eq!(
            line_hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_hash(&line_hash(b"x")));
        assert!(is_hash(GENESIS_HASH));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_strings_round_trip_on_one_line(
                description in any::<String>(),
                error in any::<String>(),
                marker_id in any::<i64>(),
                message in proptest::option::of(any::<String>()),
                http_status in proptest::option::of(any::<u16>()),
            ) {
                let mut rec = decision();
                rec.subject.description = description;
                rec.errors = vec![error];
                rec.subject.marker_id = marker_id;
                let line = render(TS, &rec, GENESIS_HASH).expect("renders");
                prop_assert!(!line.contains(&b'\n'));
                prop_assert_eq!(parse_line(&line).expect("valid").record, AuditRecord::Decision(rec));
                let mut out = outcome();
                out.error_message = message;
                out.http_status = http_status;
                let line = render(TS, &out, GENESIS_HASH).expect("renders");
                prop_assert!(!line.contains(&b'\n'));
                prop_assert_eq!(parse_line(&line).expect("valid").record, AuditRecord::Outcome(out));
            }
        }
    }
}
