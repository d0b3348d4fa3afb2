//! Logs to stderr that no API answer can forge (README "Configuration", `[log]`).
//!
//! The level is validated before anything is logged: `[log] level` by the config
//! validator, `RUST_LOG` by [`init`]. A value that is not a level or a list of
//! `target=level` directives is an error, because the filter library takes a bare word
//! such as `loud` for a target name and silences everything else, errors included.
//!
//! The formatter is our own layer, not the library's, because every value in a line may
//! come from the API (ids, names, descriptions, error messages):
//! - text: every value, the event message too, is written escaped: quoted when it holds
//!   a space or a character that could be taken for syntax, control characters and the
//!   Unicode line, paragraph and direction controls as `\u{..}`. So no value can end a
//!   line, start a forged one or send an escape sequence to a terminal.
//! - JSON: one object per line; numbers as numbers, bools as bools, [`List`] values as
//!   arrays, strings escaped the same way; the Rust module path under `module`, so the
//!   product's own fields (e.g. `target_name`) never clash with it.
//!
//! The level syntax is checked in [`crate::log_filter`], below the config that uses it.
//!
//! Each value is capped at [`MAX_VALUE_BYTES`], so a huge API answer cannot make a huge
//! line. The audit log is not written through here (it has its own writer).

use crate::config::{LogConfig, LogFormat};
pub use crate::log_filter::{LEVELS, parse_filter};
use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

/// The longest value written; the rest is cut at a character boundary and its length
/// noted (`…[+N bytes]`).
pub const MAX_VALUE_BYTES: usize = 16 * 1024;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// `RUST_LOG` is not a level or a filter.
    #[error("RUST_LOG: {message}")]
    RustLog {
        /// What is wrong, with the value.
        message: String,
    },
    /// The configured level is not a level or a filter.
    #[error("log.level: {message}")]
    Level {
        /// What is wrong, with the value.
        message: String,
    },
}

/// Installs the process-wide logger: stderr, in `cfg.format`, at `RUST_LOG` when it is
/// set and not empty, else at `cfg.level`. An invalid value of either is an error naming
/// it (exit 78 at start). A second call keeps the first logger.
pub fn init(cfg: &LogConfig) -> Result<(), LogError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            parse_filter(&v).map_err(|message| LogError::RustLog { message })?
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(LogError::RustLog {
                message: "not valid UTF-8".into(),
            });
        }
        _ => crate::log_filter::parse_config_level(&cfg.level)
            .map_err(|message| LogError::Level { message })?,
    };
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(Lines::new(cfg.format, Stderr));
    // Already set (a test or a command that initialised before): keep that one.
    let _ = tracing::subscriber::set_global_default(subscriber);
    Ok(())
}

/// A list of values to log as one field: `policies = %logging::List(&d.policies)`. The
/// JSON format writes it as an array of strings, the text format as `[a,b]` with each
/// item escaped. Formatted anywhere else, it is a JSON array.
pub struct List<'a, T>(pub &'a [T]);

thread_local! {
    /// The items of the [`List`] formatted last on this thread: how the visitor tells a
    /// list from a string that only looks like one (no string can set this).
    static LIST_ITEMS: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

impl<T: fmt::Display> List<'_, T> {
    fn items(&self) -> Vec<String> {
        self.0.iter().map(|i| cap(&i.to_string())).collect()
    }
}

impl<T: fmt::Display> fmt::Display for List<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items = self.items();
        f.write_str(&json_array(&items))?;
        LIST_ITEMS.with(|l| *l.borrow_mut() = Some(items));
        Ok(())
    }
}

impl<T: fmt::Display> fmt::Debug for List<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One recorded value, with its type kept for the JSON format.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    F64(f64),
    Bool(bool),
    List(Vec<String>),
}

/// The fields of a span or an event, in the order they were first recorded.
#[derive(Debug, Default)]
struct Fields {
    message: Option<String>,
    values: Vec<(&'static str, Value)>,
}

impl Fields {
    fn put(&mut self, name: &'static str, v: Value) {
        match self.values.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = v,
            None => self.values.push((name, v)),
        }
    }
}

/// Collects values; `message` is kept apart when `events` is set.
struct Collect<'a> {
    fields: &'a mut Fields,
    event: bool,
}

impl Collect<'_> {
    fn put(&mut self, field: &Field, v: Value) {
        if self.event && field.name() == "message" {
            self.fields.message = Some(match v {
                Value::Str(s) => s,
                Value::List(items) => json_array(&items),
                other => Scalar(&other).to_string(),
            });
        } else {
            self.fields.put(field.name(), v);
        }
    }
}

/// `Visit` methods that store the value as the `Value` variant of the same type.
macro_rules! record_typed {
    ($($method:ident($ty:ty) => $variant:ident,)+) => {$(
        fn $method(&mut self, field: &Field, value: $ty) {
            self.put(field, Value::$variant(value));
        }
    )+};
}

impl Visit for Collect<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::Str(cap(value)));
    }
    // Numbers and booleans keep their type (for JSON).
    record_typed! {
        record_i64(i64) => I64,
        record_u64(u64) => U64,
        record_i128(i128) => I128,
        record_u128(u128) => U128,
        record_f64(f64) => F64,
        record_bool(bool) => Bool,
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut s = Bounded::default();
        let _ = write!(s, "{value}");
        let mut source = value.source();
        while let Some(e) = source {
            let _ = write!(s, ": {e}");
            source = e.source();
        }
        self.put(field, Value::Str(s.finish()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        LIST_ITEMS.with(|l| l.borrow_mut().take());
        let mut s = Bounded::default();
        let _ = write!(s, "{value:?}");
        let s = s.finish();
        let v = match LIST_ITEMS.with(|l| l.borrow_mut().take()) {
            // The whole value is the list (not a list inside something else).
            Some(items) if json_array(&items) == s => Value::List(items),
            _ => Value::Str(s),
        };
        self.put(field, v);
    }
}

/// A string that keeps at most [`MAX_VALUE_BYTES`] and counts the rest.
#[derive(Default)]
struct Bounded {
    s: String,
    dropped: usize,
}

impl fmt::Write for Bounded {
    fn write_str(&mut self, part: &str) -> fmt::Result {
        if self.dropped > 0 {
            self.dropped += part.len();
            return Ok(());
        }
        let room = MAX_VALUE_BYTES - self.s.len();
        if part.len() <= room {
            self.s.push_str(part);
        } else {
            let cut = floor_char_boundary(part, room);
            self.s.push_str(&part[..cut]);
            self.dropped = part.len() - cut;
        }
        Ok(())
    }
}

impl Bounded {
    fn finish(mut self) -> String {
        if self.dropped > 0 {
            let _ = write!(self.s, "…[+{} bytes]", self.dropped);
        }
        self.s
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn cap(s: &str) -> String {
    let mut b = Bounded::default();
    let _ = b.write_str(s);
    b.finish()
}

/// Characters never written raw in either format: every control character (C0, DEL, C1),
/// the Unicode line and paragraph separators some viewers break lines at, and the
/// direction and zero-width controls that make a terminal show text other than it is.
fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// Text format: a value that needs no quotes is written as it is.
fn text_bare(s: &str) -> bool {
    !s.is_empty()
        && !s.chars().any(|c| {
            must_escape(c)
                || c.is_whitespace()
                || matches!(c, '"' | '\\' | '=' | ',' | '[' | ']' | '{' | '}')
        })
}

/// Text format: `s` bare, or quoted with `"` and `\` backslash-escaped and the
/// characters of [`must_escape`] as `\u{..}`.
fn push_text(out: &mut String, s: &str) {
    if text_bare(s) {
        out.push_str(s);
        return;
    }
    out.push('"');
    push_text_escaped(out, s);
    out.push('"');
}

fn push_text_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if must_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Text format: the message bare unless it holds a quote, a backslash, `=` (which could
/// pass for a field) or a character of [`must_escape`].
fn push_text_message(out: &mut String, m: &str) {
    if m.chars()
        .any(|c| matches!(c, '"' | '\\' | '=') || must_escape(c))
    {
        out.push('"');
        push_text_escaped(out, m);
        out.push('"');
    } else {
        out.push_str(m);
    }
}

fn push_text_value(out: &mut String, v: &Value) {
    match v {
        Value::Str(s) => push_text(out, s),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_text(out, item);
            }
            out.push(']');
        }
        other => {
            let _ = write!(out, "{}", Scalar(other));
        }
    }
}

/// Numbers and bools, as both formats write them (non-finite floats aside).
struct Scalar<'a>(&'a Value);

impl fmt::Display for Scalar<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::I64(n) => write!(f, "{n}"),
            Value::U64(n) => write!(f, "{n}"),
            Value::I128(n) => write!(f, "{n}"),
            Value::U128(n) => write!(f, "{n}"),
            Value::F64(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Str(s) => f.write_str(s),
            Value::List(items) => f.write_str(&json_array(items)),
        }
    }
}

/// JSON string, with `"`, `\` and the characters of [`must_escape`] escaped (JSON itself
/// would let DEL, C1 and the Unicode separators through raw).
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if must_escape(c) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_array(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, item);
    }
    out.push(']');
    out
}

fn push_json_value(out: &mut String, v: &Value) {
    match v {
        Value::Str(s) => push_json_str(out, s),
        Value::List(items) => out.push_str(&json_array(items)),
        Value::F64(n) if !n.is_finite() => push_json_str(out, &n.to_string()),
        other => {
            let _ = write!(out, "{}", Scalar(other));
        }
    }
}

/// Keys of the JSON object that no field may take; a field with one of these names is
/// written as `field.<name>`.
const JSON_RESERVED: [&str; 5] = ["timestamp", "level", "module", "message", "spans"];

/// Where finished lines go: one write per line, so lines never interleave.
trait LineSink: Send + Sync + 'static {
    fn write_line(&self, line: &[u8]);
}

struct Stderr;

impl LineSink for Stderr {
    fn write_line(&self, line: &[u8]) {
        // Nowhere to report a failed write to the log.
        let _ = std::io::stderr().lock().write_all(line);
    }
}

/// The layer that formats and writes every enabled event.
struct Lines<W> {
    format: LogFormat,
    sink: W,
}

impl<W: LineSink> Lines<W> {
    fn new(format: LogFormat, sink: W) -> Self {
        Lines { format, sink }
    }
}

impl<S, W> Layer<S> for Lines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: LineSink,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut Collect {
            fields: &mut fields,
            event: false,
        });
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(fields) = ext.get_mut::<Fields>() {
            values.record(&mut Collect {
                fields,
                event: false,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut Collect {
            fields: &mut fields,
            event: true,
        });
        let meta = event.metadata();
        let module = meta.module_path().unwrap_or(meta.target());
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut out = String::with_capacity(256);
        match self.format {
            LogFormat::Text => {
                let _ = write!(out, "{ts} {:>5} ", meta.level().as_str());
                if let Some(scope) = ctx.event_scope(event) {
                    for span in scope.from_root() {
                        out.push_str(span.name());
                        let ext = span.extensions();
                        if let Some(f) = ext.get::<Fields>().filter(|f| !f.values.is_empty()) {
                            out.push('{');
                            for (i, (k, v)) in f.values.iter().enumerate() {
                                if i > 0 {
                                    out.push(' ');
                                }
                                out.push_str(k);
                                out.push('=');
                                push_text_value(&mut out, v);
                            }
                            out.push('}');
                        }
                        out.push(':');
                    }
                    out.push(' ');
                }
                out.push_str(module);
                out.push(':');
                if let Some(m) = fields.message.as_deref().filter(|m| !m.is_empty()) {
                    out.push(' ');
                    push_text_message(&mut out, m);
                }
                for (k, v) in &fields.values {
                    out.push(' ');
                    out.push_str(k);
                    out.push('=');
                    push_text_value(&mut out, v);
                }
            }
            LogFormat::Json => {
                out.push_str("{\"timestamp\":");
                push_json_str(&mut out, &ts);
                out.push_str(",\"level\":");
                push_json_str(&mut out, meta.level().as_str());
                out.push_str(",\"module\":");
                push_json_str(&mut out, module);
                if let Some(m) = &fields.message {
                    out.push_str(",\"message\":");
                    push_json_str(&mut out, m);
                }
                // Span fields root to leaf, then the event's: a later one with the same
                // name replaces an earlier one, so every key is written once.
                let mut all = Fields::default();
                let mut names = Vec::new();
                if let Some(scope) = ctx.event_scope(event) {
                    for span in scope.from_root() {
                        names.push(span.name().to_owned());
                        if let Some(f) = span.extensions().get::<Fields>() {
                            for (k, v) in &f.values {
                                all.put(k, v.clone());
                            }
                        }
                    }
                }
                for (k, v) in fields.values {
                    all.put(k, v);
                }
                if !names.is_empty() {
                    out.push_str(",\"spans\":");
                    out.push_str(&json_array(&names));
                }
                for (k, v) in &all.values {
                    out.push(',');
                    if JSON_RESERVED.contains(k) {
                        push_json_str(&mut out, &format!("field.{k}"));
                    } else {
                        push_json_str(&mut out, k);
                    }
                    out.push(':');
                    push_json_value(&mut out, v);
                }
                out.push('}');
            }
        }
        out.push('\n');
        self.sink.write_line(out.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts that the log output `out` holds `want`.
    fn assert_has(out: &str, want: &str) {
        assert!(out.contains(want), "no {want:?} in: {out}");
    }
    use proptest::prelude::*;
    use std::sync::{Arc, Mutex};
    use tracing::{info, info_span, warn};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl LineSink for Capture {
        fn write_line(&self, line: &[u8]) {
            self.0.lock().expect("capture").extend_from_slice(line);
        }
    }

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("capture").clone()).expect("utf-8")
        }
    }

    /// Runs `f` with a logger of `format` at `filter`, returning what it wrote.
    fn logged(format: LogFormat, filter: &str, f: impl FnOnce()) -> String {
        let cap = Capture::default();
        let sub = tracing_subscriber::registry()
            .with(parse_filter(filter).expect("filter"))
            .with(Lines::new(format, cap.clone()));
        tracing::subscriber::with_default(sub, f);
        cap.text()
    }

    /// Reads back one text value written by [`push_text`] (test-only inverse).
    fn unescape_text(v: &str) -> String {
        let Some(inner) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
            return v.to_owned();
        };
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('u') => {
                    assert_eq!(chars.next(), Some('{'));
                    let hex: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    let n = u32::from_str_radix(&hex, 16).expect("hex");
                    out.push(char::from_u32(n).expect("char"));
                }
                Some(c) => out.push(c),
                None => panic!("dangling backslash in {v}"),
            }
        }
        out
    }

    fn no_raw_controls(line: &str) -> bool {
        let body = line.strip_suffix('\n').unwrap_or(line);
        !body.chars().any(must_escape)
    }

    #[test]
    fn levels_and_filters_are_accepted() {
        for ok in [
            "error",
            "warn",
            "info",
            "debug",
            "trace",
            "off",
            "INFO",
            " info ",
            "vpcep_approver=debug,hyper=warn",
            "info,vpcep_approver::engine=trace",
            "warn,",
        ] {
            parse_filter(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
    }

    #[test]
    fn typos_and_garbage_are_errors_naming_the_value() {
        for (bad, says) in [
            ("loud", "\"loud\" is not a level"),
            ("warning", "\"warning\" is not a level"),
            ("", "is empty"),
            ("  ", "is empty"),
            (
                "vpcep_approver=loud",
                "\"loud\" in \"vpcep_approver=loud\" is not a level",
            ),
            ("info,hyper", "\"hyper\" is not a level"),
            ("=info", "\"=info\" is not a level"),
            ("info,[", "\"[\" is not a level"),
            ("vpcep_approver[=info", "\"vpcep_approver[=info\""),
        ] {
            let e = parse_filter(bad).expect_err(bad);
            assert!(e.contains(says), "{bad:?}: {e}");
            assert!(
                e.contains("error, warn, info") || e.contains(&format!("{bad:?}")),
                "{e}"
            );
        }
    }

    #[test]
    fn a_typo_in_the_config_is_an_error_of_log_level() {
        let cfg =
            "[[target]]\nregion = \"cn-north-4\"\nproject_id = \"p\"\n[log]\nlevel = \"loud\"\n";
        let e = crate::config::Config::parse(cfg, std::path::Path::new("/etc/x/config.toml"))
            .expect_err("typo")
            .to_string();
        assert!(
            e.starts_with(
                "invalid config file /etc/x/config.toml: log.level: \"loud\" is not a level"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_typo_never_silences_the_log() {
        // The filter library alone turns a bare word into a target and drops the rest.
        assert!(
            tracing_subscriber::EnvFilter::builder()
                .parse("loud")
                .is_ok()
        );
        assert!(parse_filter("loud").is_err());
        assert!(parse_filter("vpcep_approver=loud").is_err());
        // A mistyped module name matches nothing, and everything else still logs at info.
        let out = logged(LogFormat::Text, "vpcep_aprover=debug", || {
            tracing::info!("still here");
            tracing::debug!("not this");
        });
        assert_has(&out, "still here");
        assert!(!out.contains("not this"), "{out}");
        // A bare level is the default for the rest, as given.
        let out = logged(LogFormat::Text, "warn,hyper=debug", || {
            tracing::info!("below warn");
        });
        assert!(!out.contains("below warn"), "{out}");
    }

    #[test]
    fn the_config_level_cannot_turn_the_log_off() {
        for off in ["off", "OFF", "off,vpcep_approver=info"] {
            let e = crate::log_filter::parse_config_level(off).expect_err(off);
            assert!(e.contains("off"), "{off}: {e}");
        }
        for ok in [
            "info",
            "debug",
            "info,vpcep_approver::daemon=debug",
            "warn,hyper=off",
        ] {
            crate::log_filter::parse_config_level(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn text_values_are_escaped_and_quoted_when_needed() {
        let hostile =
            "e1\n2026-01-01T00:00:00Z  INFO forged: x=1\u{1b}[31m\0\u{7f}\u{9b}\u{2028}\u{202e}";
        let out = logged(LogFormat::Text, "info", || {
            info!(
                endpoint_id = %hostile,
                domain_id = "plain-id",
                spaced = "a b",
                empty = "",
                quote = "say \"hi\"\\",
                http_status = 200u16,
                ok = true,
                "decided {}",
                hostile
            );
        });
        assert_eq!(out.matches('\n').count(), 1, "{out}");
        assert!(no_raw_controls(&out), "{out:?}");
        assert_has(&out, " domain_id=plain-id");
        assert_has(&out, " spaced=\"a b\"");
        assert_has(&out, " empty=\"\"");
        assert_has(&out, " quote=\"say \\\"hi\\\"\\\\\"");
        assert_has(&out, " http_status=200 ok=true");
        assert_has(
            &out,
            " endpoint_id=\"e1\\u{a}2026-01-01T00:00:00Z  INFO forged: x=1\\u{1b}[31m\\u{0}\\u{7f}\\u{9b}\\u{2028}\\u{202e}\"",
        );
        // The message is quoted too, since it holds `=` and controls.
        assert_has(&out, ": \"decided e1\\u{a}");
        assert_has(&out, " INFO vpcep_approver::logging::tests: ");
    }

    #[test]
    fn text_spans_and_lists() {
        let out = logged(LogFormat::Text, "info", || {
            let span = info_span!("cycle", cycle = 3u64, target_name = "t 1");
            let _g = span.enter();
            let policies = vec!["allow-partners".to_owned(), "a,b".to_owned()];
            let none: Vec<String> = Vec::new();
            warn!(policies = %List(&policies), errors = %List(&none), "plain message");
        });
        assert_has(
            &out,
            "  WARN cycle{cycle=3 target_name=\"t 1\"}: vpcep_approver::logging::tests: plain message policies=[allow-partners,\"a,b\"] errors=[]",
        );
    }

    #[test]
    fn json_keeps_types_lists_and_the_module_key() {
        let out = logged(LogFormat::Json, "info", || {
            let span = info_span!(
                "target",
                target_name = "cn-north-4",
                service_id = tracing::field::Empty
            );
            let _g = span.enter();
            span.record("service_id", "svc-1");
            let status: Option<u16> = Some(200);
            let missing: Option<u16> = None;
            let policies = vec!["allow-partners".to_owned(), "x\"y".to_owned()];
            info!(
                http_status = status,
                no_status = missing,
                marker_id = -5i64,
                big = u128::MAX,
                ratio = 0.5f64,
                dry_run = false,
                policies = %List(&policies),
                policies_debug = ?List(&policies),
                looks_like_a_list = "[\"a\"]",
                level = "field named level",
                error = %std::io::Error::other("boom"),
                "outcome"
            );
        });
        assert_eq!(out.matches('\n').count(), 1, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("one JSON object");
        assert_eq!(v["message"], "outcome");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["module"], "vpcep_approver::logging::tests");
        assert!(v.get("target").is_none(), "{out}");
        assert_eq!(v["target_name"], "cn-north-4");
        assert_eq!(v["service_id"], "svc-1");
        assert_eq!(v["spans"], serde_json::json!(["target"]));
        assert_eq!(v["http_status"], 200);
        assert!(v.get("no_status").is_none(), "{out}");
        assert_eq!(v["marker_id"], -5);
        assert_eq!(v["ratio"], 0.5);
        assert_eq!(v["dry_run"], false);
        assert_eq!(v["policies"], serde_json::json!(["allow-partners", "x\"y"]));
        assert_eq!(v["policies_debug"], v["policies"]);
        assert_eq!(v["looks_like_a_list"], "[\"a\"]");
        assert_eq!(v["field.level"], "field named level");
        assert_eq!(v["error"], "boom");
        assert_has(&out, &format!("\"big\":{}", u128::MAX));
        assert!(chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().expect("ts")).is_ok());
    }

    #[test]
    fn a_list_inside_another_value_is_a_string() {
        let out = logged(LogFormat::Json, "info", || {
            let items = vec!["a".to_owned()];
            info!(wrapped = ?Some(List(&items)), "x");
        });
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["wrapped"], "Some([\"a\"])");
    }

    #[test]
    fn huge_values_are_cut_at_a_char_boundary() {
        let big = "é".repeat(MAX_VALUE_BYTES);
        let out = logged(LogFormat::Json, "info", || info!(description = %big, "x"));
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        let d = v["description"].as_str().expect("str");
        assert!(d.len() < MAX_VALUE_BYTES + 32, "{}", d.len());
        assert!(
            d.ends_with(&format!("…[+{} bytes]", MAX_VALUE_BYTES)),
            "{}",
            &d[d.len() - 30..]
        );
    }

    #[test]
    fn filter_levels_apply() {
        let out = logged(
            LogFormat::Text,
            "warn,vpcep_approver::logging=debug",
            || {
                tracing::debug!("shown");
                tracing::trace!("hidden");
            },
        );
        assert!(out.contains("shown") && !out.contains("hidden"), "{out}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn no_value_forges_a_line_or_reaches_the_terminal_raw(
            id in any::<String>(),
            msg in any::<String>(),
            items in proptest::collection::vec(any::<String>(), 0..4),
            n in any::<i64>(),
        ) {
            let text = logged(LogFormat::Text, "info", || {
                let span = info_span!("target", target_name = %id);
                let _g = span.enter();
                info!(domain_id = %id, endpoint_id = id.as_str(), policies = %List(&items), n, "{}", msg);
            });
            prop_assert_eq!(text.matches('\n').count(), 1);
            prop_assert!(text.ends_with('\n'));
            prop_assert!(no_raw_controls(&text), "{:?}", text);
            // The value reads back exactly.
            let mut buf = String::new();
            push_text(&mut buf, &id);
            prop_assert!(text.contains(&format!(" domain_id={buf} endpoint_id={buf} ")), "{}", text);
            prop_assert_eq!(unescape_text(&buf), id.clone());

            let json = logged(LogFormat::Json, "info", || {
                let span = info_span!("target", target_name = %id);
                let _g = span.enter();
                info!(domain_id = %id, endpoint_id = id.as_str(), policies = %List(&items), n, "{}", msg);
            });
            prop_assert_eq!(json.matches('\n').count(), 1);
            prop_assert!(no_raw_controls(&json), "{:?}", json);
            let v: serde_json::Value = serde_json::from_str(&json).expect("parses");
            prop_assert_eq!(v["domain_id"].as_str(), Some(id.as_str()));
            prop_assert_eq!(v["endpoint_id"].as_str(), Some(id.as_str()));
            prop_assert_eq!(v["target_name"].as_str(), Some(id.as_str()));
            prop_assert_eq!(v["message"].as_str(), Some(msg.as_str()));
            prop_assert_eq!(v["n"].as_i64(), Some(n));
            prop_assert_eq!(&v["policies"], &serde_json::json!(items));
        }

        #[test]
        fn text_escaping_round_trips(s in any::<String>()) {
            let mut buf = String::new();
            push_text(&mut buf, &s);
            prop_assert!(!buf.chars().any(must_escape));
            prop_assert_eq!(unescape_text(&buf), s);
        }
    }
}
