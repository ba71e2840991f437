//! The plan data model: exactly the original AetherFlow `plan.json` shape, typed.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::ids::{StepId, TaskId};

/// A plan: a task broken into steps with dependencies, as an IDE agent or a person writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Identifies the task; runs are stored under a folder of this name.
    pub task_id: TaskId,
    /// What the whole task is for; given to the model as project context.
    pub description: String,
    /// The steps, in the order the author wrote them.
    pub steps: Vec<Step>,
    /// Free-form metadata (author, dates, mode hints); kept and reported, never interpreted.
    #[serde(default)]
    pub metadata: BTreeMap<String, Value>,
    /// AetherFlow extension: changes to the code-safety policy for every step (import
    /// allow/deny, block levels, rules), in the code-safety crate's `PolicyOverrides` shape; the
    /// orchestrator checks it before any call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety: Option<Value>,
    /// AetherFlow extension: the gate-keeper review for this plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<PlanReview>,
    /// Top-level keys this format does not define (`success_criteria`, `execution_notes`, …),
    /// kept verbatim so nothing the author wrote is lost.
    #[serde(default, flatten, skip_deserializing)]
    pub extra: BTreeMap<String, Value>,
}

/// A plan's own review settings; each field left out keeps the run's setting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanReview {
    /// Review every step that writes files.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The reviewer provider.
    #[serde(default)]
    pub provider: Option<String>,
    /// Accept code when the review gives no verdict (unavailable, unparseable, timed out);
    /// AetherFlow fails closed by default.
    #[serde(default)]
    pub fail_open: Option<bool>,
}

/// One unit of work routed to a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Unique within the plan; other steps name it in `dependencies`.
    pub id: StepId,
    /// What to do, in the author's words; the heart of the prompt.
    pub description: String,
    /// What kind of work this is; decides the system prompt and what the step may produce.
    #[serde(rename = "type")]
    pub step_type: StepType,
    /// How hard the author judged the step, from 0 (trivial) to 1 (hardest).
    #[serde(default)]
    pub complexity: Option<f64>,
    /// The author's estimate of tokens the step needs; routing by size uses it (resilience).
    #[serde(default)]
    pub estimated_tokens: Option<u64>,
    /// Steps whose successful output this one needs first.
    #[serde(default)]
    pub dependencies: Vec<StepId>,
    /// Checks the result must satisfy; sent to the model as requirements.
    #[serde(default)]
    pub validation_criteria: Vec<String>,
    /// Files, language and options for the step.
    #[serde(default)]
    pub context: StepContext,
    /// Step keys this format does not define (`file_to_create`, `content`, …), kept verbatim.
    #[serde(default, flatten, skip_deserializing)]
    pub extra: BTreeMap<String, Value>,
}

/// The `context` object of a step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepContext {
    /// Workspace files this step creates or changes (relative to the workspace root).
    #[serde(default)]
    pub files: Vec<String>,
    /// Workspace files the model reads but must not change.
    #[serde(default)]
    pub input_files: Vec<String>,
    /// Programming language of the output (`python`, `javascript`, …).
    #[serde(default)]
    pub language: Option<String>,
    /// Framework the code targets (`fastapi`, `vanilla`, …).
    #[serde(default)]
    pub framework: Option<String>,
    /// Where a `patch` step inserts or replaces text.
    #[serde(default)]
    pub patch: Option<Patch>,
    /// Several patch locations for one step (used by some real plans).
    #[serde(default)]
    pub patches: Vec<Patch>,
    /// Provider this step must use first (`deepseek`, `gemini`, `codestral`, …).
    #[serde(default)]
    pub provider: Option<String>,
    /// Apply the output to the workspace without asking.
    #[serde(default)]
    pub auto_apply: Option<bool>,
    /// Change only the marked region of existing files.
    #[serde(default)]
    pub surgical_mode: Option<bool>,
    /// Ask the model to reason before writing code.
    #[serde(default)]
    pub pre_reasoning: Option<bool>,
    /// AetherFlow extension: `false` keeps this step's answers out of the response cache.
    #[serde(default)]
    pub cache: Option<bool>,
    /// AetherFlow extension: code-safety policy changes for this step, layered on the plan's.
    #[serde(default)]
    pub safety: Option<Value>,
    /// AetherFlow extension: test files (`unittest` modules in the workspace, or among this
    /// step's own files) the sandbox runs against this step's files before they are applied.
    #[serde(default)]
    pub tests: Vec<String>,
    /// AetherFlow extension: `false` skips the sandbox checks (tests, import) for this step.
    #[serde(default)]
    pub verify: Option<bool>,
    /// AetherFlow extension: `true` has the gate-keeper review this step even when the run does
    /// not review; `false` skips the review for it.
    #[serde(default)]
    pub review: Option<bool>,
    /// Any other context the author supplied (`instructions`, `notes`, …); it is passed to the
    /// model as additional context.
    #[serde(default, flatten, skip_deserializing)]
    pub extra: BTreeMap<String, Value>,
}

/// Where and how a patch step edits a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Patch {
    /// Insert before or after a marker, or replace a marked region.
    pub position: PatchPosition,
    /// The line that anchors a `before` / `after` insertion.
    #[serde(default)]
    pub marker: Option<String>,
    /// First line of the region a `replace` patch swaps out.
    #[serde(default)]
    pub marker_start: Option<String>,
    /// Last line of the region a `replace` patch swaps out.
    #[serde(default)]
    pub marker_end: Option<String>,
    /// A 1-based line number anchoring the patch instead of a marker.
    #[serde(default)]
    pub line: Option<u64>,
    /// When true, applying the patch twice leaves the file as applying it once.
    #[serde(default)]
    pub idempotent: Option<bool>,
    /// The file the patch edits, when the step names several.
    #[serde(default)]
    pub target_file: Option<String>,
    /// Literal replacement text supplied by the plan rather than by a model.
    #[serde(default)]
    pub replacement: Option<String>,
    /// What this patch does, for people.
    #[serde(default)]
    pub description: Option<String>,
    /// Patch keys this format does not define, kept verbatim (and reported as warnings).
    #[serde(default, flatten, skip_deserializing)]
    pub extra: BTreeMap<String, Value>,
}

/// Where a patch goes relative to its anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchPosition {
    /// Insert just before the anchor.
    Before,
    /// Insert just after the anchor.
    After,
    /// Replace the region between `marker_start` and `marker_end` (or the whole target).
    Replace,
    /// Add at the end of the file.
    Append,
    /// Add at the start of the file.
    Prepend,
}

/// The type of a step as written in the plan.
///
/// The four core types come from the original tool; `testing`, `documentation` and
/// `enhancement` appear in real plans and keep their name, but behave as one of the core four
/// (see [`StepType::behaviour`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepType {
    /// Write new code into the step's files.
    CodeGeneration,
    /// Rewrite existing files.
    Refactoring,
    /// Study the inputs and report in markdown; writes no workspace file.
    Analysis,
    /// Edit a marked region of an existing file.
    Patch,
    /// Write tests (behaves as code generation into the test files named).
    Testing,
    /// Write documentation files (behaves as code generation into those files).
    Documentation,
    /// Improve existing code (behaves as refactoring).
    Enhancement,
}

/// What a step does, whatever name its type was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepBehaviour {
    /// Produce the full content of each target file.
    Generate,
    /// Produce the full new content of existing target files.
    Refactor,
    /// Produce a markdown report.
    Analyse,
    /// Produce a fragment to insert at the patch anchor.
    Patch,
}

impl StepType {
    /// Every type with its canonical name, for parsing and for error messages.
    pub const ALL: [(StepType, &'static str); 7] = [
        (StepType::CodeGeneration, "code_generation"),
        (StepType::Refactoring, "refactoring"),
        (StepType::Analysis, "analysis"),
        (StepType::Patch, "patch"),
        (StepType::Testing, "testing"),
        (StepType::Documentation, "documentation"),
        (StepType::Enhancement, "enhancement"),
    ];

    /// The canonical name, as written in plans.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(t, _)| *t == self)
            .map_or("code_generation", |(_, name)| name)
    }

    /// What the step does; the three extra types map onto the core four.
    pub fn behaviour(self) -> StepBehaviour {
        match self {
            StepType::CodeGeneration | StepType::Testing | StepType::Documentation => {
                StepBehaviour::Generate
            }
            StepType::Refactoring | StepType::Enhancement => StepBehaviour::Refactor,
            StepType::Analysis => StepBehaviour::Analyse,
            StepType::Patch => StepBehaviour::Patch,
        }
    }

    /// Reads a type name; case, `-` and a few common synonyms are tolerated.
    pub fn parse(name: &str) -> Option<StepType> {
        let norm = name.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        let found = match norm.as_str() {
            "code_generation" | "codegen" | "generation" | "generate" | "code" => {
                StepType::CodeGeneration
            }
            "refactoring" | "refactor" => StepType::Refactoring,
            "analysis" | "analyse" | "analyze" | "review" => StepType::Analysis,
            "patch" | "patching" => StepType::Patch,
            "testing" | "test" | "tests" => StepType::Testing,
            "documentation" | "docs" | "doc" => StepType::Documentation,
            "enhancement" | "enhance" | "improvement" => StepType::Enhancement,
            _ => return None,
        };
        Some(found)
    }
}

impl fmt::Display for StepType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for StepType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for StepType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        StepType::parse(&name).ok_or_else(|| {
            let known: Vec<&str> = StepType::ALL.iter().map(|(_, n)| *n).collect();
            serde::de::Error::custom(format!(
                "unknown step type `{name}`: use one of {}",
                known.join(", ")
            ))
        })
    }
}

impl Step {
    /// Every patch of the step: `context.patch` first, then `context.patches`.
    pub fn patches(&self) -> impl Iterator<Item = &Patch> {
        self.context.patch.iter().chain(self.context.patches.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_step_types_behave_as_a_core_type() {
        assert_eq!(StepType::Testing.behaviour(), StepBehaviour::Generate);
        assert_eq!(StepType::Documentation.behaviour(), StepBehaviour::Generate);
        assert_eq!(StepType::Enhancement.behaviour(), StepBehaviour::Refactor);
        assert_eq!(StepType::Analysis.behaviour(), StepBehaviour::Analyse);
    }

    #[test]
    fn step_type_names_round_trip_and_tolerate_spelling() {
        for (t, name) in StepType::ALL {
            assert_eq!(StepType::parse(name), Some(t));
            assert_eq!(t.as_str(), name);
        }
        assert_eq!(
            StepType::parse("Code-Generation"),
            Some(StepType::CodeGeneration)
        );
        assert_eq!(StepType::parse("deploy"), None);
    }
}
