//! The log level syntax of `[log] level` and `RUST_LOG` (README "Configuration"): checked
//! here, below both the config validator and the logger, so a typo is an error naming the
//! value instead of a filter that silences everything.

use tracing_subscriber::EnvFilter;

/// The level names `[log] level` and `RUST_LOG` accept, alone or after `target=`.
pub const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// Validates a level or filter and builds it. Accepted: a level of [`LEVELS`] (any case),
/// or comma-separated directives that are each a level or `target=level` (e.g.
/// `vpcep_approver=debug,hyper=warn`). The message quotes the value.
pub fn parse_filter(spec: &str) -> Result<EnvFilter, String> {
    let levels = LEVELS.join(", ");
    let is_level = |s: &str| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(s.trim()));
    if spec.trim().is_empty() {
        return Err(format!(
            "{spec:?} is empty: give a level ({levels}) or a filter like \"vpcep_approver=debug,hyper=warn\""
        ));
    }
    for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if is_level(directive) {
            continue;
        }
        // Name the whole value too when the directive is only part of it.
        let within = if directive == spec.trim() {
            String::new()
        } else {
            format!("{spec:?}: ")
        };
        match directive.rsplit_once('=') {
            Some((target, level)) if !target.trim().is_empty() && is_level(level) => {}
            Some((target, level)) if !target.trim().is_empty() => {
                return Err(format!(
                    "{within}{level:?} in {directive:?} is not a level ({levels})"
                ));
            }
            _ => {
                return Err(format!(
                    "{within}{directive:?} is not a level ({levels}) or a target=level directive like \"vpcep_approver=debug\""
                ));
            }
        }
    }
    // Without a bare level the filter library would log nothing outside the named
    // modules, so a mistyped module name would silence everything: `info` stays the
    // level of the rest.
    let has_default = spec.split(',').any(is_level);
    let full = if has_default {
        spec.trim().to_owned()
    } else {
        format!("info,{}", spec.trim())
    };
    EnvFilter::builder()
        .parse(&full)
        .map_err(|e| format!("{spec:?}: {e}"))
}

/// [`parse_filter`] for `[log] level`, which may not be `off`: the config names how much
/// to log, not whether to (`RUST_LOG=off` still can, for a one-off run).
pub fn parse_config_level(spec: &str) -> Result<EnvFilter, String> {
    if spec
        .split(',')
        .any(|d| d.trim().eq_ignore_ascii_case("off"))
    {
        return Err(format!(
            "{spec:?}: `off` would silence every line, errors included; give error, warn, info, debug or trace"
        ));
    }
    parse_filter(spec)
}
