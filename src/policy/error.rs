//! Errors of loading a policy directory: every problem found, each naming its file and,
//! where known, the policy id, so one `check` run shows everything that needs fixing.

use std::fmt;

/// One problem found while loading a policy set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    /// The file the problem is in, as shown to people (e.g. `policies/allow.cedar`);
    /// `None` for problems of the set as a whole (e.g. an unreadable directory).
    pub file: Option<String>,
    /// The policy id, when the problem belongs to one policy.
    pub policy_id: Option<String>,
    /// What is wrong, lowercase, without the file and policy id.
    pub message: String,
}

impl PolicyProblem {
    pub(crate) fn file(file: &str, message: impl Into<String>) -> Self {
        PolicyProblem {
            file: Some(file.to_owned()),
            policy_id: None,
            message: message.into(),
        }
    }

    pub(crate) fn policy(file: &str, policy_id: &str, message: impl Into<String>) -> Self {
        PolicyProblem {
            file: Some(file.to_owned()),
            policy_id: Some(policy_id.to_owned()),
            message: message.into(),
        }
    }

    pub(crate) fn general(message: impl Into<String>) -> Self {
        PolicyProblem {
            file: None,
            policy_id: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        if let Some(id) = &self.policy_id {
            write!(f, "policy {id}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A policy set that failed to load. The whole load fails on any problem; `Display`
/// lists every problem, one per line, each as `<file>: [policy <id>: ]<message>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", list(.problems))]
pub struct PolicyError {
    problems: Vec<PolicyProblem>,
}

impl PolicyError {
    pub(crate) fn new(problems: Vec<PolicyProblem>) -> Self {
        PolicyError { problems }
    }

    /// Every problem found, in the order files were read.
    pub fn problems(&self) -> &[PolicyProblem] {
        &self.problems
    }
}

/// An error and its sources joined with `: `, skipping a source whose text the message
/// already contains (Cedar's transparent wrappers repeat their inner message).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

fn list(problems: &[PolicyProblem]) -> String {
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_and_policy_one_per_line() {
        let e = PolicyError::new(vec![
            PolicyProblem::file("policies/a.cedar", "unexpected token"),
            PolicyProblem::policy("policies/b.cedar", "allow-x", "unknown attribute"),
            PolicyProblem::general("no policy files"),
        ]);
        assert_eq!(
            e.to_string(),
            "policies/a.cedar: unexpected token\n\
             policies/b.cedar: policy allow-x: unknown attribute\n\
             no policy files"
        );
    }
}
