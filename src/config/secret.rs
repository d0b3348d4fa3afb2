//! Where secrets come from ([`SecretSource`]): an environment variable or a file whose
//! path may hold `${VAR}` references (README "Configuration"). Holds names only; the value
//! is read when [`SecretSource::load`] is called, by `run`, never by `check`, `eval` or
//! `test`.

use super::ConfigError;
use secrecy::SecretString;
use std::fmt;
use std::path::PathBuf;

/// Where a secret comes from. Holds only names, never the value.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A file; the path may hold `${VAR}` references, expanded when the secret is read.
    /// Relative results resolve against `base`.
    File {
        /// The configured value, before expansion.
        template: String,
        /// The config file's directory.
        base: PathBuf,
    },
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(v) => write!(f, "env:{v}"),
            SecretSource::File { template, .. } => write!(f, "file:{template}"),
        }
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(v) => write!(f, "environment variable {v}"),
            SecretSource::File { template, .. } => write!(f, "file {template}"),
        }
    }
}

impl SecretSource {
    /// Reads the secret; a missing or empty one is an error naming the variable or file.
    pub fn load(&self) -> Result<SecretString, ConfigError> {
        self.load_optional()?.ok_or_else(|| match self {
            SecretSource::Env(v) => ConfigError::Secret {
                source_name: format!("environment variable {v}"),
                message: "not set".into(),
            },
            SecretSource::File { template, .. } => ConfigError::Secret {
                source_name: format!("file {template}"),
                message: "empty".into(),
            },
        })
    }

    /// Reads the secret; an unset environment variable is `None`, a file must exist.
    pub fn load_optional(&self) -> Result<Option<SecretString>, ConfigError> {
        match self {
            SecretSource::Env(var) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(Some(SecretString::from(v.trim().to_owned()))),
                Ok(_) => Ok(None),
                Err(std::env::VarError::NotPresent) => Ok(None),
                Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::Secret {
                    source_name: format!("environment variable {var}"),
                    message: "not valid UTF-8".into(),
                }),
            },
            SecretSource::File { .. } => {
                let path = self.file_path()?.unwrap_or_default();
                let named = |message: String| ConfigError::Secret {
                    source_name: format!("file {}", path.display()),
                    message,
                };
                let bytes = std::fs::read(&path).map_err(|e| named(e.to_string()))?;
                let text = String::from_utf8(bytes).map_err(|_| named("not valid UTF-8".into()))?;
                let v = text.trim();
                if v.is_empty() {
                    Ok(None)
                } else {
                    Ok(Some(SecretString::from(v.to_owned())))
                }
            }
        }
    }

    /// For a file source, the path after `${VAR}` expansion; `None` for the environment.
    pub fn file_path(&self) -> Result<Option<PathBuf>, ConfigError> {
        match self {
            SecretSource::Env(_) => Ok(None),
            SecretSource::File { template, base } => {
                let expanded = expand_vars(template, |v| std::env::var(v).ok()).map_err(|m| {
                    ConfigError::Secret {
                        source_name: format!("file {template}"),
                        message: m,
                    }
                })?;
                Ok(Some(base.join(expanded)))
            }
        }
    }
}

/// Expands `${VAR}` references. Unset variables and unclosed `${` are errors.
pub fn expand_vars(s: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid variable name {name:?} in {s:?}"));
        }
        let val = lookup(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
        out.push_str(&val);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
