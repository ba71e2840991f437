//! Runs: the execution mode, each step's outcome and every provider attempt, and the report
//! written at the end of a run (`report.json`, schema in `docs/report-schema.md`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{RunId, StepId, TaskId};
use crate::money::Money;
use crate::plan::{PlanWarning, StepType};
use crate::usage::Usage;

/// The version of the `report.json` schema this crate writes.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// How hard AetherFlow works on each step: the original's three execution modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Cheapest, quickest models; no review.
    Fast,
    /// Balanced models for production code (the default).
    #[default]
    Build,
    /// Build, then a second model checks the result.
    DoubleCheck,
}

impl Mode {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fast => "fast",
            Mode::Build => "build",
            Mode::DoubleCheck => "double-check",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "fast" | "proto" | "quick" => Ok(Mode::Fast),
            "build" | "prod" => Ok(Mode::Build),
            "double-check" | "doublecheck" => Ok(Mode::DoubleCheck),
            _ => Err(format!(
                "unknown mode `{s}`: use fast, build or double-check"
            )),
        }
    }
}

/// How a plan is carried through: the original's three workflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workflow {
    /// One run in the chosen mode (the default).
    #[default]
    Direct,
    /// A fast run that applies its files, then a double-check review of what it applied.
    Proto,
    /// A fast draft, a build-mode refinement given the draft, then a double-check review.
    Prod,
}

impl Workflow {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Workflow::Direct => "direct",
            Workflow::Proto => "proto",
            Workflow::Prod => "prod",
        }
    }

    /// The passes this workflow makes, in order.
    pub fn phases(self) -> &'static [Phase] {
        match self {
            Workflow::Direct => &[Phase::Run],
            Workflow::Proto => &[Phase::Run, Phase::DoubleCheck],
            Workflow::Prod => &[Phase::Draft, Phase::Refine, Phase::DoubleCheck],
        }
    }
}

impl fmt::Display for Workflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Workflow {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "direct" => Ok(Workflow::Direct),
            "proto" | "prototype" => Ok(Workflow::Proto),
            "prod" | "production" => Ok(Workflow::Prod),
            _ => Err(format!("unknown workflow `{s}`: use direct, proto or prod")),
        }
    }
}

/// One pass of a workflow; each pass is a run with its own folder and report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Generate, check and apply every step.
    Run,
    /// Generate a fast first draft of every step; nothing is applied.
    Draft,
    /// Generate again in build mode with the draft as context, check and apply.
    Refine,
    /// A second model reviews the files the previous pass produced; nothing is generated.
    DoubleCheck,
}

impl Phase {
    /// The name used in reports and progress output.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Run => "run",
            Phase::Draft => "draft",
            Phase::Refine => "refine",
            Phase::DoubleCheck => "double-check",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a run stands in its workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowStage {
    /// The workflow.
    pub workflow: Workflow,
    /// This run's pass.
    pub phase: Phase,
    /// 1-based position of the pass.
    pub number: u32,
    /// Passes in the workflow.
    pub of: u32,
    /// The run of the pass before, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_run: Option<RunId>,
}

/// How bad a reviewer's issue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IssueSeverity {
    /// Worth knowing.
    Low,
    /// Should be fixed.
    Medium,
    /// Must be fixed.
    High,
}

/// One problem a reviewer found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewIssue {
    /// How bad.
    pub severity: IssueSeverity,
    /// What and how to fix it.
    pub message: String,
    /// The line, when it points at one.
    #[serde(default)]
    pub line: Option<u32>,
}

/// A reviewer's verdict, in the strict shape reviewers must answer in:
/// `{"approve": bool, "issues": [{"severity", "message", "line"}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewVerdict {
    /// Whether the files may be used.
    pub approve: bool,
    /// What it found.
    pub issues: Vec<ReviewIssue>,
}

impl ReviewVerdict {
    /// The feedback for the model when the review rejects.
    pub fn feedback(&self) -> String {
        let mut lines = vec!["the gate-keeper review rejected it:".to_owned()];
        for issue in &self.issues {
            let at = issue
                .line
                .map(|l| format!(" line {l}:"))
                .unwrap_or_default();
            lines.push(format!("- [{:?}]{at} {}", issue.severity, issue.message));
        }
        if self.issues.is_empty() {
            lines.push("- (no reason given)".to_owned());
        }
        lines.join("\n")
    }
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Waiting for its dependencies or a free slot.
    Pending,
    /// A provider call is in flight.
    Running,
    /// Finished with a usable output.
    Succeeded,
    /// Every attempt failed.
    Failed,
    /// Not run because a dependency did not succeed.
    Skipped,
    /// Stopped or never started because the run was cancelled.
    Cancelled,
}

impl StepStatus {
    /// True once the step will not change again.
    pub fn is_final(self) -> bool {
        !matches!(self, StepStatus::Pending | StepStatus::Running)
    }
}

/// Whole run outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every step succeeded.
    Succeeded,
    /// At least one step failed or was skipped.
    Failed,
    /// The run was cancelled before it finished.
    Cancelled,
}

/// One call to one provider for one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// Provider name (`deepseek`, `mock`, …).
    pub provider: String,
    /// Model that was asked.
    pub model: String,
    /// Which key of the provider's pool was used (an id, never the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// When the call started.
    pub started_at: DateTime<Utc>,
    /// How long it took, until the last byte or the error.
    #[serde(with = "duration_ms", rename = "latency_ms")]
    pub latency: Duration,
    /// Tokens the call consumed (zero when it failed before any).
    pub usage: Usage,
    /// What those tokens cost.
    pub cost: Money,
    /// `None` when the call succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<AttemptError>,
    /// True when the answer came from the response cache (no provider call, no cost).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
}

/// Why an attempt failed, in the terms retries and fallbacks use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    /// The error kind (`rate_limited`, `auth`, `timeout`, …).
    pub kind: String,
    /// Whether trying the same model again could succeed.
    pub retryable: bool,
    /// A description safe to show (never contains a key).
    pub message: String,
}

/// The outcome of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// The step's id.
    pub id: StepId,
    /// The step's type, by its canonical name (synonyms such as `review` are normalised).
    pub step_type: StepType,
    /// Where it ended.
    pub status: StepStatus,
    /// Why it failed, was skipped or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The provider whose answer was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The model whose answer was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Why the model stopped (`stop`, `max_tokens`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Every provider call made for this step, in order.
    pub attempts: Vec<Attempt>,
    /// Tokens consumed over all attempts.
    pub usage: Usage,
    /// What all attempts cost.
    pub cost: Money,
    /// When the step started (absent if it never ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// Time from start to finish, including retries.
    #[serde(with = "duration_ms", rename = "duration_ms")]
    pub duration: Duration,
    /// File inside the run folder holding the step's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_file: Option<String>,
    /// Why earlier answers were rejected (extraction, safety gate), one entry per repair asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<String>,
    /// Workspace files the step wrote.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileChange>,
    /// What kind of failure ended it, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureKind>,
    /// The last review verdict on its files (gate-keeper or double-check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<ReviewVerdict>,
}

impl StepReport {
    /// A report for a step that has not run.
    pub fn pending(id: StepId, step_type: StepType) -> Self {
        StepReport {
            id,
            step_type,
            status: StepStatus::Pending,
            reason: None,
            provider: None,
            model: None,
            finish_reason: None,
            attempts: Vec::new(),
            usage: Usage::default(),
            cost: Money::ZERO,
            started_at: None,
            duration: Duration::ZERO,
            output_file: None,
            rejected: Vec::new(),
            files: Vec::new(),
            failure: None,
            verdict: None,
        }
    }
}

/// What kind of failure ended a step: decided where it happened, never read back from text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Its context files could not be read.
    Context,
    /// No provider gave a usable answer (after retries and fallbacks).
    ProviderError,
    /// A budget cap refused the call.
    BudgetExceeded,
    /// Every answer was rejected (file blocks, safety gate, sandbox checks, review).
    ValidationFailed,
    /// The gate-keeper review gave no verdict and the run fails closed.
    ReviewFailed,
    /// The checked files could not be written.
    ApplyFailed,
}

impl FailureKind {
    /// The snake_case name used in reports and the error survey.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Context => "context",
            FailureKind::ProviderError => "provider_error",
            FailureKind::BudgetExceeded => "budget_exceeded",
            FailureKind::ValidationFailed => "validation_failed",
            FailureKind::ReviewFailed => "review_failed",
            FailureKind::ApplyFailed => "apply_failed",
        }
    }
}

/// A workspace file a step wrote (or, in a dry run or review, would write).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    /// Workspace-relative path.
    pub path: String,
    /// `created`, `modified` or `unchanged`.
    pub action: String,
}

/// Counts and sums over a run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RunTotals {
    /// Steps that succeeded.
    pub succeeded: usize,
    /// Steps that failed.
    pub failed: usize,
    /// Steps skipped because a dependency did not succeed.
    pub skipped: usize,
    /// Steps cancelled.
    pub cancelled: usize,
    /// Provider calls made.
    pub attempts: usize,
    /// Tokens over all steps.
    pub usage: Usage,
    /// Cost over all steps.
    pub cost: Money,
}

/// Everything a run did: written as `report.json` in the run folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// [`REPORT_SCHEMA_VERSION`] at the time of writing.
    pub schema_version: u32,
    /// This run.
    pub run_id: RunId,
    /// The plan's task.
    pub task_id: TaskId,
    /// The plan's description.
    pub description: String,
    /// Execution mode.
    pub mode: Mode,
    /// Overall outcome.
    pub status: RunStatus,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// When the run ended.
    pub finished_at: DateTime<Utc>,
    /// Wall-clock duration.
    #[serde(with = "duration_ms", rename = "duration_ms")]
    pub duration: Duration,
    /// One entry per step, in plan order.
    pub steps: Vec<StepReport>,
    /// Sums over the steps.
    pub totals: RunTotals,
    /// Plan warnings, so the report says what was ignored.
    pub warnings: Vec<PlanWarning>,
    /// The plan's `metadata`, as given.
    pub metadata: serde_json::Map<String, Value>,
    /// Top-level plan keys outside the format (`success_criteria`, …), kept verbatim.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub plan_extra: serde_json::Map<String, Value>,
    /// Circuit breakers of the providers this run used, as they stood at its end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub breakers: Vec<BreakerSnapshot>,
    /// The workflow pass this run was, when it was one of several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<WorkflowStage>,
}

/// A circuit breaker's state at a point in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerSnapshot {
    /// The provider.
    pub provider: String,
    /// The model.
    pub model: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Calls in the breaker's current window.
    pub calls: usize,
    /// Failures in the breaker's current window.
    pub failures: usize,
}

impl RunReport {
    /// Sums over `steps` and the overall status.
    pub fn summarise(steps: &[StepReport], cancelled: bool) -> (RunTotals, RunStatus) {
        let mut totals = RunTotals::default();
        for s in steps {
            match s.status {
                StepStatus::Succeeded => totals.succeeded += 1,
                StepStatus::Failed => totals.failed += 1,
                StepStatus::Skipped => totals.skipped += 1,
                StepStatus::Cancelled | StepStatus::Pending | StepStatus::Running => {
                    totals.cancelled += 1
                }
            }
            totals.attempts += s.attempts.len();
            totals.usage += s.usage;
            totals.cost += s.cost;
        }
        let status = if cancelled {
            RunStatus::Cancelled
        } else if totals.succeeded == steps.len() {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        };
        (totals, status)
    }
}

/// Serialises a [`Duration`] as a number of milliseconds (fractional).
pub mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes milliseconds with microsecond precision.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((d.as_micros() as f64) / 1000.0)
    }

    /// Reads milliseconds; negative or non-finite values are rejected.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Duration::try_from_secs_f64(ms / 1000.0).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_from_cli_and_original_names() {
        assert_eq!("double-check".parse(), Ok(Mode::DoubleCheck));
        assert_eq!("DOUBLE_CHECK".parse(), Ok(Mode::DoubleCheck));
        assert_eq!("PROD".parse(), Ok(Mode::Build));
        assert_eq!("proto".parse(), Ok(Mode::Fast));
        assert!(
            "turbo"
                .parse::<Mode>()
                .unwrap_err()
                .contains("fast, build or double-check")
        );
    }

    #[test]
    fn a_run_succeeds_only_when_every_step_did() {
        let mut ok = StepReport::pending("a".into(), StepType::Analysis);
        ok.status = StepStatus::Succeeded;
        ok.cost = Money::from_micros(5);
        let mut skipped = ok.clone();
        skipped.status = StepStatus::Skipped;
        let (totals, status) = RunReport::summarise(&[ok.clone(), ok.clone()], false);
        assert_eq!(status, RunStatus::Succeeded);
        assert_eq!(totals.cost, Money::from_micros(10));
        let (totals, status) = RunReport::summarise(&[ok.clone(), skipped], false);
        assert_eq!(status, RunStatus::Failed);
        assert_eq!(totals.skipped, 1);
        assert_eq!(RunReport::summarise(&[ok], true).1, RunStatus::Cancelled);
    }

    #[test]
    fn durations_are_written_in_milliseconds() {
        let mut s = StepReport::pending("a".into(), StepType::Patch);
        s.duration = Duration::from_micros(1500);
        let json = serde_json::to_value(&s).expect("serialises");
        assert_eq!(json["duration_ms"], 1.5);
        assert_eq!(json["step_type"], "patch");
        let back: StepReport = serde_json::from_value(json).expect("reads back");
        assert_eq!(back.duration, Duration::from_micros(1500));
    }
}
