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
    EnvFilter::builder()
        .parse(spec.trim())
        .map_err(|e| format!("{spec:?}: {e}"))
}
