//! What can be wrong with a plan, said so that the author knows what to change.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a plan cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The text is not well-formed JSON or YAML.
    #[error("{format} syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// `JSON` or `YAML`.
        format: &'static str,
        /// 1-based line (0 when the parser could not tell).
        line: usize,
        /// 1-based column (0 when the parser could not tell).
        column: usize,
        /// The parser's description of the problem.
        message: String,
    },
    /// The document is well-formed but is not a plan at all.
    #[error("not an AetherFlow plan: {reason}")]
    NotAPlan {
        /// What is missing and what was found instead.
        reason: String,
    },
    /// A field has the wrong type or an unknown value.
    #[error("`{path}` at line {line}, column {column}: {message}")]
    Type {
        /// Where in the document, e.g. `steps[2].complexity`.
        path: String,
        /// 1-based line (0 when the parser could not tell).
        line: usize,
        /// 1-based column (0 when the parser could not tell).
        column: usize,
        /// What was expected and what was found.
        message: String,
    },
    /// The plan parses but breaks rules (ids, dependencies, ranges, paths).
    #[error("{}", Issues(issues))]
    Invalid {
        /// Every problem found, in document order.
        issues: Vec<PlanIssue>,
    },
}

impl PlanError {
    /// The 1-based line and column the error points at, when there is one.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            PlanError::Syntax { line, column, .. } | PlanError::Type { line, column, .. }
                if *line > 0 =>
            {
                Some((*line, *column))
            }
            _ => None,
        }
    }
}

/// One rule a plan breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanIssue {
    /// Where: a path such as `steps[1].dependencies[0]`.
    pub location: String,
    /// What is wrong and what to change.
    pub message: String,
}

/// Something in a plan that works but deserves the author's attention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanWarning {
    /// Where: a key or a path such as `steps[0].content`.
    pub location: String,
    /// What was noticed and what it means for the run.
    pub message: String,
}

struct Issues<'a>(&'a [PlanIssue]);

impl fmt::Display for Issues<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} problem{}:", if n == 1 { "" } else { "s" })?;
        for issue in self.0 {
            write!(f, "\n  - {}: {}", issue.location, issue.message)?;
        }
        Ok(())
    }
}

impl fmt::Display for PlanWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}
