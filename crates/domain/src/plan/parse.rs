//! Reading plan text (JSON or YAML) into a [`Plan`], with errors that point at the line.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::error::{PlanError, PlanWarning};
use super::model::Plan;

/// The text formats a plan can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanFormat {
    /// The original `plan.json` format.
    Json,
    /// The same structure written as YAML.
    Yaml,
}

impl PlanFormat {
    /// Picks the format from a file name: `.yaml` / `.yml` are YAML, anything else is JSON.
    pub fn from_path(path: &Path) -> PlanFormat {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("yaml" | "yml") => PlanFormat::Yaml,
            _ => PlanFormat::Json,
        }
    }

    fn name(self) -> &'static str {
        match self {
            PlanFormat::Json => "JSON",
            PlanFormat::Yaml => "YAML",
        }
    }
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "task_id",
    "description",
    "steps",
    "metadata",
    "safety",
    "review",
];
const REQUIRED_TOP_LEVEL_KEYS: &[&str] = &["task_id", "description", "steps"];
const STEP_KEYS: &[&str] = &[
    "id",
    "description",
    "type",
    "complexity",
    "estimated_tokens",
    "dependencies",
    "validation_criteria",
    "context",
];
const PATCH_KEYS: &[&str] = &[
    "position",
    "marker",
    "marker_start",
    "marker_end",
    "line",
    "idempotent",
    "target_file",
    "replacement",
    "description",
];
const CONTEXT_KEYS: &[&str] = &[
    "files",
    "input_files",
    "language",
    "framework",
    "patch",
    "patches",
    "provider",
    "auto_apply",
    "surgical_mode",
    "pre_reasoning",
    "cache",
    "safety",
    "verify",
    "review",
    "tests",
];

/// Parses plan text. Syntax and type errors carry the line and column; unknown keys are kept
/// in the `extra` maps and returned as warnings. Call [`Plan::validate`] next.
pub fn parse_plan(text: &str, format: PlanFormat) -> Result<(Plan, Vec<PlanWarning>), PlanError> {
    // First pass: an untyped tree, for syntax errors, the shape check and the unknown keys.
    let tree: Value = match format {
        PlanFormat::Json => serde_json::from_str(text).map_err(|e| PlanError::Syntax {
            format: format.name(),
            line: e.line(),
            column: e.column(),
            message: strip_position(&e.to_string()),
        })?,
        PlanFormat::Yaml => serde_norway::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            PlanError::Syntax {
                format: format.name(),
                line,
                column,
                message: strip_position(&e.to_string()),
            }
        })?,
    };
    check_shape(&tree)?;

    // Second pass: the typed model straight from the text, so type errors keep their position.
    let mut plan: Plan = match format {
        PlanFormat::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                PlanError::Type {
                    path,
                    line: inner.line(),
                    column: inner.column(),
                    message: strip_position(&inner.to_string()),
                }
            })?
        }
        PlanFormat::Yaml => {
            let de = serde_norway::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let (line, column) = inner.location().map_or((0, 0), |l| (l.line(), l.column()));
                PlanError::Type {
                    path,
                    line,
                    column,
                    message: strip_position(&inner.to_string()),
                }
            })?
        }
    };

    let mut warnings = Vec::new();
    attach_extras(&tree, &mut plan, &mut warnings);
    Ok((plan, warnings))
}

/// serde's messages end with "at line L column C"; the position is reported separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

fn check_shape(tree: &Value) -> Result<(), PlanError> {
    let Some(object) = tree.as_object() else {
        return Err(PlanError::NotAPlan {
            reason: format!(
                "the document is {} rather than an object with `task_id`, `description` and `steps`",
                describe(tree)
            ),
        });
    };
    let missing: Vec<&str> = REQUIRED_TOP_LEVEL_KEYS
        .iter()
        .copied()
        .filter(|k| !object.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        let found: Vec<&str> = object.keys().map(String::as_str).collect();
        let hint = if object.contains_key("missions") {
            " It looks like a roadmap of missions; turn each mission into a step (`id`, \
             `description`, `type`, `dependencies`, `context.files`) to run it."
        } else {
            ""
        };
        return Err(PlanError::NotAPlan {
            reason: format!(
                "missing {} (found keys: {}): an AetherFlow plan is an object with `task_id`, \
                 `description` and `steps`.{hint}",
                missing
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if found.is_empty() {
                    "none".to_owned()
                } else {
                    found.join(", ")
                },
            ),
        });
    }
    Ok(())
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn unknown_keys(
    object: &serde_json::Map<String, Value>,
    known: &[&str],
) -> BTreeMap<String, Value> {
    object
        .iter()
        .filter(|(k, _)| !known.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn attach_extras(tree: &Value, plan: &mut Plan, warnings: &mut Vec<PlanWarning>) {
    let Some(top) = tree.as_object() else { return };
    plan.extra = unknown_keys(top, TOP_LEVEL_KEYS);
    for key in plan.extra.keys() {
        warnings.push(PlanWarning {
            location: key.clone(),
            message: format!(
                "`{key}` is not part of the plan format; it is kept in the report but does not \
                 change how the plan runs"
            ),
        });
    }
    let Some(raw_steps) = top.get("steps").and_then(Value::as_array) else {
        return;
    };
    for (index, (step, raw)) in plan.steps.iter_mut().zip(raw_steps).enumerate() {
        let Some(raw) = raw.as_object() else { continue };
        step.extra = unknown_keys(raw, STEP_KEYS);
        for key in step.extra.keys() {
            warnings.push(PlanWarning {
                location: format!("steps[{index}].{key}"),
                message: format!(
                    "step `{}`: `{key}` is not a step field; it is kept but ignored (put \
                     step-specific details under `context` to pass them to the model)",
                    step.id
                ),
            });
        }
        let Some(ctx) = raw.get("context").and_then(Value::as_object) else {
            continue;
        };
        // Extra context keys are an open set by design: they reach the prompt, so no warning.
        step.context.extra = unknown_keys(ctx, CONTEXT_KEYS);
        let raw_patches = ctx
            .get("patch")
            .into_iter()
            .map(|p| ("patch".to_owned(), p))
            .chain(
                ctx.get("patches")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .map(|(k, p)| (format!("patches[{k}]"), p)),
            );
        let typed = step
            .context
            .patch
            .iter_mut()
            .chain(step.context.patches.iter_mut());
        for ((name, raw_patch), patch) in raw_patches.zip(typed) {
            let Some(raw_patch) = raw_patch.as_object() else {
                continue;
            };
            patch.extra = unknown_keys(raw_patch, PATCH_KEYS);
            for key in patch.extra.keys() {
                warnings.push(PlanWarning {
                    location: format!("steps[{index}].context.{name}.{key}"),
                    message: format!(
                        "step `{}`: `{key}` is not a patch field (known: {}); it is kept but \
                         ignored",
                        step.id,
                        PATCH_KEYS.join(", ")
                    ),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::model::StepType;

    const MINIMAL: &str = r#"{
  "task_id": "demo",
  "description": "Demo",
  "steps": [
    {"id": "step_1", "description": "Write it", "type": "code_generation",
     "complexity": 0.3, "estimated_tokens": 500,
     "context": {"files": ["app.py"], "language": "python", "instructions": "be brief"}}
  ],
  "metadata": {"created_at": "2026-01-01"},
  "success_criteria": ["works"]
}"#;

    #[test]
    fn reads_the_original_format_and_keeps_unknown_keys() {
        let (plan, warnings) = parse_plan(MINIMAL, PlanFormat::Json).expect("valid plan");
        assert_eq!(plan.task_id.as_str(), "demo");
        assert_eq!(plan.steps[0].step_type, StepType::CodeGeneration);
        assert!(plan.steps[0].dependencies.is_empty());
        assert!(plan.extra.contains_key("success_criteria"));
        assert_eq!(
            plan.steps[0].context.extra.get("instructions"),
            Some(&Value::String("be brief".into()))
        );
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].location, "success_criteria");
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let text = "{\n  \"task_id\": \"x\",\n  \"steps\": [,]\n}";
        let err = parse_plan(text, PlanFormat::Json).expect_err("bad json");
        match err {
            PlanError::Syntax { line, column, .. } => {
                assert_eq!(line, 3);
                assert_eq!(column, 13);
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn type_errors_name_the_path_and_line() {
        let text = MINIMAL.replace("\"complexity\": 0.3", "\"complexity\": \"high\"");
        let err = parse_plan(&text, PlanFormat::Json).expect_err("bad type");
        match &err {
            PlanError::Type { path, line, .. } => {
                assert_eq!(path, "steps[0].complexity");
                assert_eq!(*line, 6);
            }
            other => panic!("expected a type error, got {other:?}"),
        }
        assert!(err.to_string().contains("steps[0].complexity"), "{err}");
    }

    #[test]
    fn unknown_step_type_lists_the_accepted_ones() {
        let text = MINIMAL.replace("code_generation", "deploy");
        let err = parse_plan(&text, PlanFormat::Json).expect_err("bad type");
        let msg = err.to_string();
        assert!(msg.contains("steps[0].type"), "{msg}");
        assert!(msg.contains("unknown step type `deploy`"), "{msg}");
        assert!(msg.contains("code_generation, refactoring"), "{msg}");
    }

    #[test]
    fn a_roadmap_is_rejected_as_not_a_plan_with_a_hint() {
        let text = r#"{"theme": "x", "missions": [{"id": "R0"}]}"#;
        let msg = parse_plan(text, PlanFormat::Json)
            .expect_err("not a plan")
            .to_string();
        assert!(
            msg.contains("missing `task_id`, `description`, `steps`"),
            "{msg}"
        );
        assert!(msg.contains("roadmap of missions"), "{msg}");
    }

    #[test]
    fn yaml_plans_read_like_json_and_report_positions() {
        let yaml = "task_id: demo\ndescription: Demo\nsteps:\n  - id: a\n    description: Analyse\n    type: analysis\n    complexity: 0.2\n";
        let (plan, _) = parse_plan(yaml, PlanFormat::Yaml).expect("valid yaml");
        assert_eq!(plan.steps[0].step_type, StepType::Analysis);

        let bad = yaml.replace("complexity: 0.2", "complexity: [1]");
        match parse_plan(&bad, PlanFormat::Yaml).expect_err("bad type") {
            PlanError::Type { path, line, .. } => {
                assert_eq!(path, "steps[0].complexity");
                assert_eq!(line, 7);
            }
            other => panic!("expected a type error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_patch_keys_are_kept_and_warned_about() {
        let text = MINIMAL.replace(
            r#""instructions": "be brief""#,
            r#""patch": {"position": "after", "marker": "x", "anchor": "y"}"#,
        );
        let (plan, warnings) = parse_plan(&text, PlanFormat::Json).expect("valid plan");
        let patch = plan.steps[0].context.patch.as_ref().expect("patch");
        assert_eq!(patch.extra.get("anchor"), Some(&Value::String("y".into())));
        assert!(
            warnings
                .iter()
                .any(|w| w.location == "steps[0].context.patch.anchor"),
            "{warnings:?}"
        );
    }

    #[test]
    fn format_follows_the_extension() {
        assert_eq!(PlanFormat::from_path(Path::new("p.YML")), PlanFormat::Yaml);
        assert_eq!(PlanFormat::from_path(Path::new("p.json")), PlanFormat::Json);
    }
}
