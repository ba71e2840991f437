//! The error survey: each failed step of a run leaves a structured entry (JSON, and a short
//! markdown page for people) in the run folder's `survey/`, with an index, `survey/index.json`.
//! `aetherflow survey list` reads them across runs.

use std::path::{Path, PathBuf};

use aetherflow_domain::plan::ValidPlan;
use aetherflow_domain::run::{FailureKind, RunReport, StepStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The survey folder inside a run folder.
pub const SURVEY_DIR: &str = "survey";
/// The index of a run's entries.
pub const INDEX: &str = "index.json";

/// One failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurveyEntry {
    /// `<run_id>/<step_id>`.
    pub id: String,
    /// When the run ended.
    pub at: DateTime<Utc>,
    /// The run.
    pub run_id: String,
    /// The plan's task.
    pub task_id: String,
    /// One line for a list.
    pub title: String,
    /// What kind of failure (`step_failed` when the engine recorded none).
    pub nature: String,
    /// The step.
    pub step: String,
    /// The files the step was to write or read.
    pub files: Vec<String>,
    /// The error as recorded.
    pub raw_error: String,
    /// Why earlier answers were rejected, when they were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<String>,
    /// What to do about it.
    pub suggested_fix: String,
}

fn suggested_fix(kind: Option<FailureKind>) -> &'static str {
    match kind {
        Some(FailureKind::Context) => {
            "Check the step's context.files and input_files: they must exist inside the workspace (no `..`, no absolute paths, no symlinks out) and stay within the [context] size limits."
        }
        Some(FailureKind::ProviderError) => {
            "Check the providers with `aetherflow providers check` and `providers status` (keys, breakers); configure a fallback provider, or raise max_output_tokens if the answer was cut."
        }
        Some(FailureKind::BudgetExceeded) => {
            "A budget cap refused the call: raise --budget or the [budget] caps, lower run.max_output_tokens, or split the plan."
        }
        Some(FailureKind::ValidationFailed) => {
            "Every answer was rejected (see `rejected`): make the step's description and validation criteria more specific, list exactly the files it writes, or split the step."
        }
        Some(FailureKind::ReviewFailed) => {
            "The gate-keeper gave no usable verdict: check the reviewer provider ([review] provider), or set review.fail_open = true to accept unreviewed code."
        }
        Some(FailureKind::ApplyFailed) => {
            "The checked files could not be written: the targets must be regular files (not links or folders) inside the workspace, and the workspace writable."
        }
        None => "See the raw error; rerun with --log-level debug for details.",
    }
}

/// The entries for a finished run's failed steps.
pub fn entries(plan: &ValidPlan, report: &RunReport) -> Vec<SurveyEntry> {
    let steps = &plan.plan().steps;
    report
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.status == StepStatus::Failed)
        .map(|(i, s)| {
            let nature = s.failure.map_or("step_failed", FailureKind::as_str);
            let raw = s.reason.clone().unwrap_or_default();
            let first_line = raw.lines().next().unwrap_or_default();
            let short: String = first_line.chars().take(120).collect();
            let files = steps.get(i).map_or_else(Vec::new, |step| {
                step.context
                    .files
                    .iter()
                    .chain(&step.context.input_files)
                    .cloned()
                    .collect()
            });
            SurveyEntry {
                id: format!("{}/{}", report.run_id, s.id),
                at: report.finished_at,
                run_id: report.run_id.to_string(),
                task_id: report.task_id.to_string(),
                title: format!("step `{}` failed ({nature}): {short}", s.id),
                nature: nature.to_owned(),
                step: s.id.to_string(),
                files,
                raw_error: raw,
                rejected: s.rejected.clone(),
                suggested_fix: suggested_fix(s.failure).to_owned(),
            }
        })
        .collect()
}

fn markdown(e: &SurveyEntry) -> String {
    let mut out = format!(
        "# {}\n\n- run: `{}` ({})\n- nature: `{}`\n- when: {}\n",
        e.title, e.run_id, e.task_id, e.nature, e.at
    );
    if !e.files.is_empty() {
        out.push_str(&format!("- files: {}\n", e.files.join(", ")));
    }
    out.push_str(&format!(
        "\n## Error\n\n```text\n{}\n```\n\n## Suggested fix\n\n{}\n",
        e.raw_error, e.suggested_fix
    ));
    if !e.rejected.is_empty() {
        out.push_str("\n## Rejected answers\n\n");
        for (i, r) in e.rejected.iter().enumerate() {
            out.push_str(&format!("{}. {}\n", i + 1, r.replace('\n', "\n   ")));
        }
    }
    out
}

/// Writes the run's entries under `run_dir/survey/` (nothing when no step failed).
pub fn write(run_dir: &Path, plan: &ValidPlan, report: &RunReport) -> std::io::Result<usize> {
    let entries = entries(plan, report);
    if entries.is_empty() {
        return Ok(0);
    }
    let dir = run_dir.join(SURVEY_DIR);
    std::fs::create_dir_all(&dir)?;
    for e in &entries {
        let json = serde_json::to_vec_pretty(e).map_err(std::io::Error::other)?;
        crate::apply::write_atomic(&dir.join(format!("{}.json", e.step)), &json)?;
        crate::apply::write_atomic(&dir.join(format!("{}.md", e.step)), markdown(e).as_bytes())?;
    }
    let index = serde_json::to_vec_pretty(&entries).map_err(std::io::Error::other)?;
    crate::apply::write_atomic(&dir.join(INDEX), &index)?;
    Ok(entries.len())
}

/// Every survey index under an output folder (`<out>/<task_id>/<run_id>/survey/index.json`).
pub fn indexes(out: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(tasks) = std::fs::read_dir(out) else {
        return found;
    };
    for task in tasks.flatten() {
        let Ok(runs) = std::fs::read_dir(task.path()) else {
            continue;
        };
        for run in runs.flatten() {
            let index = run.path().join(SURVEY_DIR).join(INDEX);
            if index.is_file() {
                found.push(index);
            }
        }
    }
    found.sort();
    found
}

/// All entries under an output folder, oldest first (unreadable indexes are skipped).
pub fn read_all(out: &Path) -> Vec<SurveyEntry> {
    let mut all: Vec<SurveyEntry> = indexes(out)
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|b| serde_json::from_slice::<Vec<SurveyEntry>>(&b).ok())
        .flatten()
        .collect();
    all.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
    all
}
