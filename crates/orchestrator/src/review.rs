//! The gate-keeper: a second model reviews a step's checked files against the step's
//! description and validation criteria and answers in a fixed JSON shape,
//! `{"approve": bool, "issues": [{"severity", "message", "line"}]}`, validated strictly. The
//! original judged validation by keywords ("invalid" contains "valid"); here anything but a
//! well-formed verdict is "no verdict", which fails closed unless the run says otherwise.

use aetherflow_domain::plan::Step;
pub use aetherflow_domain::run::{IssueSeverity, ReviewIssue as Issue, ReviewVerdict};

use crate::extract::ExtractedFile;

/// The reviewer's instructions.
pub const REVIEW_SYSTEM: &str = "You are a strict senior code reviewer acting as a gate-keeper. \
Review the files against the task and its validation criteria: correctness, missing requirements, \
security problems, and code that cannot work. Answer with ONLY a JSON object, no prose and no code \
fence, of exactly this shape: {\"approve\": true or false, \"issues\": [{\"severity\": \"low\" | \
\"medium\" | \"high\", \"message\": \"what is wrong and how to fix it\", \"line\": 12 or null}]}. \
Set approve to false only for problems that must be fixed before the code is used.";

/// Whether and how steps are reviewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewOptions {
    /// The reviewer provider, tried first (then the default provider).
    pub provider: String,
    /// Accept code when the review gives no verdict (unavailable, unparseable, timed out).
    pub fail_open: bool,
}

impl Default for ReviewOptions {
    /// Kimi reviews (the original's gate-keeper), and no verdict means no code.
    fn default() -> Self {
        ReviewOptions {
            provider: "kimi".to_owned(),
            fail_open: false,
        }
    }
}

/// Parses a verdict: the JSON object alone, or alone inside one ```json fence. Anything else
/// (prose around it, missing or extra fields, wrong types) is an error.
pub fn parse_verdict(text: &str) -> Result<ReviewVerdict, String> {
    let trimmed = text.trim();
    let body = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.strip_suffix("```"))
        .map_or(trimmed, str::trim);
    serde_json::from_str(body).map_err(|e| {
        let shown: String = trimmed.chars().take(200).collect();
        format!("the review is not a verdict ({e}): {shown:?}")
    })
}

/// The reviewer's user message: the task, its criteria, and the files.
pub fn review_prompt(step: &Step, files: &[ExtractedFile]) -> String {
    let mut out = format!("## Task\n\n{}\n\n", step.description.trim());
    if !step.validation_criteria.is_empty() {
        out.push_str("## Validation criteria\n\n");
        for c in &step.validation_criteria {
            out.push_str(&format!("- {c}\n"));
        }
        out.push('\n');
    }
    out.push_str("## Files\n\n");
    for f in files {
        let fence = if f.content.contains("```") {
            "````"
        } else {
            "```"
        };
        out.push_str(&format!(
            "{fence} path={}\n{}{fence}\n\n",
            f.path, f.content
        ));
    }
    out.push_str("Answer with the JSON verdict only.");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_verdict_parses_bare_or_fenced() {
        let v = parse_verdict(r#"{"approve": true, "issues": []}"#).unwrap();
        assert!(v.approve);
        let v = parse_verdict(
            "```json\n{\"approve\": false, \"issues\": [{\"severity\": \"high\", \"message\": \"no KeyError\", \"line\": 3}]}\n```",
        )
        .unwrap();
        assert!(!v.approve);
        assert_eq!(v.issues[0].line, Some(3));
        assert!(
            v.feedback().contains("[High] line 3: no KeyError"),
            "{}",
            v.feedback()
        );
    }

    #[test]
    fn keyword_answers_and_loose_shapes_are_not_verdicts() {
        for text in [
            "Looks valid to me!",
            "The code is invalid.",
            r#"Sure: {"approve": true, "issues": []}"#,
            r#"{"approve": "yes", "issues": []}"#,
            r#"{"approve": true}"#,
            r#"{"approve": true, "issues": [], "score": 9}"#,
            r#"{"approve": false, "issues": [{"severity": "fatal", "message": "x"}]}"#,
        ] {
            assert!(parse_verdict(text).is_err(), "{text:?} accepted");
        }
    }
}
