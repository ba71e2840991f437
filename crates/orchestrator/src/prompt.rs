//! Prompt assembly, following the original tool: a static system instruction per step type, and
//! a user message with the language, the task, requirements, project context, dependency
//! outputs, read-only inputs and the current content of the files to change.

use std::fmt::Write as _;

use aetherflow_domain::plan::{Patch, PatchPosition, Plan, Step, StepBehaviour};
use serde_json::Value;

use crate::workspace::ContextFile;

/// The system instruction for a kind of step.
pub fn system_prompt(behaviour: StepBehaviour) -> &'static str {
    match behaviour {
        StepBehaviour::Generate => {
            "You are an expert software engineer. Write complete, working, idiomatic code for \
             the task. Answer with exactly one fenced code block per target file, and name the \
             file in the block's info string, for example ```python path=src/app.py. Give each \
             file's full content. Do not add files that were not asked for."
        }
        StepBehaviour::Refactor => {
            "You are an expert software engineer refactoring existing code. Keep every behaviour \
             the task does not ask you to change. Answer with exactly one fenced code block per \
             target file, naming the file in the info string (```python path=src/app.py), each \
             holding the file's complete new content."
        }
        StepBehaviour::Analyse => {
            "You are a senior engineer reviewing code and designs. Answer in markdown with the \
             sections Summary, Findings and Recommendations. Be specific: cite files, functions \
             and lines. Do not rewrite files."
        }
        StepBehaviour::Patch => {
            "You are an expert software engineer making a surgical change. Answer with exactly \
             one fenced code block per target file, naming the file in the info string \
             (```python path=src/app.py), holding only the text to insert or the replacement for \
             the marked region. Never repeat code outside that region."
        }
    }
}

/// Everything a step's prompt is built from.
pub struct PromptInput<'a> {
    /// The plan (for its description).
    pub plan: &'a Plan,
    /// The step.
    pub step: &'a Step,
    /// Outputs of the step's successful dependencies, as (step id, text).
    pub dependency_outputs: &'a [(&'a str, &'a str)],
    /// The step's read-only inputs.
    pub inputs: &'a [ContextFile],
    /// The current content of the files the step changes (those that exist).
    pub targets: &'a [ContextFile],
    /// A first answer to this step from a faster model, to check and improve (the PROD
    /// workflow's refinement pass).
    pub draft: Option<&'a str>,
}

/// The user message for a step.
pub fn user_prompt(input: &PromptInput<'_>) -> String {
    let step = input.step;
    let ctx = &step.context;
    let mut out = String::with_capacity(1024);
    if let Some(lang) = &ctx.language {
        let _ = writeln!(out, "Language: {lang}");
    }
    if let Some(fw) = &ctx.framework {
        let _ = writeln!(out, "Framework: {fw}");
    }
    if !out.is_empty() {
        out.push('\n');
    }
    let _ = write!(out, "## Task\n\n{}\n", step.description.trim());

    if !step.validation_criteria.is_empty() {
        out.push_str("\n## Requirements\n\n");
        for c in &step.validation_criteria {
            let _ = writeln!(out, "- {c}");
        }
    }

    let project = input.plan.description.trim();
    if !project.is_empty() {
        let _ = write!(out, "\n## Project context\n\n{project}\n");
    }

    if !ctx.extra.is_empty() {
        out.push_str("\n## Additional context\n\n");
        for (key, value) in &ctx.extra {
            match value {
                Value::String(s) => {
                    let _ = writeln!(out, "- {key}: {s}");
                }
                other => {
                    let _ = writeln!(out, "- {key}: {other}");
                }
            }
        }
    }

    let patches: Vec<&Patch> = step.patches().collect();
    if !patches.is_empty() {
        out.push_str("\n## Where to change\n\n");
        for p in patches {
            describe_patch(&mut out, p);
        }
    }

    for (id, text) in input.dependency_outputs {
        let _ = write!(out, "\n## Output of step {id}\n\n{}\n", text.trim_end());
    }

    for file in input.inputs {
        let _ = write!(
            out,
            "\n## Input file (read only): {}\n\n{}",
            file.path,
            fenced(&file.path, &file.content)
        );
    }
    for file in input.targets {
        let _ = write!(
            out,
            "\n## Current content of {}\n\n{}",
            file.path,
            fenced(&file.path, &file.content)
        );
    }

    if let Some(draft) = input.draft {
        let _ = write!(
            out,
            "\n## Draft to improve\n\nA faster model wrote this first answer. Check it against the task and \
             the requirements: fix what is wrong, complete what is missing, keep what is right. Answer in \
             full, in the format below, not as a list of changes.\n\n{}\n",
            draft.trim_end()
        );
    }

    match step.step_type.behaviour() {
        StepBehaviour::Analyse => {
            out.push_str(
                "\n## Answer\n\nA markdown report (Summary, Findings, Recommendations).\n",
            );
        }
        _ if ctx.files.is_empty() => {
            out.push_str("\n## Answer\n\nOne fenced code block.\n");
        }
        _ => {
            out.push_str("\n## Answer\n\nOne fenced code block for each of these files, in this order, each naming its path in the info string:\n");
            for f in &ctx.files {
                let _ = writeln!(out, "- {f}");
            }
        }
    }
    out
}

fn describe_patch(out: &mut String, p: &Patch) {
    let target = p
        .target_file
        .as_deref()
        .map(|t| format!(" in {t}"))
        .unwrap_or_default();
    let what = match p.position {
        PatchPosition::Before => "Insert before",
        PatchPosition::After => "Insert after",
        PatchPosition::Replace => "Replace",
        PatchPosition::Append => "Append at the end",
        PatchPosition::Prepend => "Insert at the start",
    };
    let _ = write!(out, "- {what}{target}");
    if let Some(d) = &p.description {
        let _ = write!(out, " ({d})");
    }
    out.push('\n');
    if let Some(m) = &p.marker {
        let _ = writeln!(out, "  marker:\n{}", indent(m));
    }
    if let (Some(s), Some(e)) = (&p.marker_start, &p.marker_end) {
        let _ = writeln!(
            out,
            "  the region from:\n{}\n  through:\n{}",
            indent(s),
            indent(e)
        );
    } else if p.position == PatchPosition::Replace && p.marker.is_none() {
        out.push_str("  the whole file\n");
    }
    if let Some(line) = p.line {
        let _ = writeln!(out, "  at line {line}");
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A fence long enough that no backtick run inside the content can close it.
fn fenced(path: &str, content: &str) -> String {
    let longest = content.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    let ext = path.rsplit('.').next().unwrap_or("");
    let nl = if content.ends_with('\n') { "" } else { "\n" };
    format!("{fence}{ext}\n{content}{nl}{fence}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use aetherflow_domain::plan::{PlanFormat, parse_plan};

    fn plan() -> Plan {
        let text = r##"{"task_id":"t","description":"A todo app","steps":[
          {"id":"s1","description":"Add the API","type":"code_generation",
           "validation_criteria":["GET /todos returns JSON"],
           "context":{"language":"python","framework":"fastapi","files":["api.py"],
                      "input_files":["spec.md"],"instructions":"keep it small"}},
          {"id":"s2","description":"Patch it","type":"patch","dependencies":["s1"],
           "context":{"files":["api.py"],"patch":{"position":"after","marker":"# routes"}}}]}"##;
        parse_plan(text, PlanFormat::Json).expect("parses").0
    }

    #[test]
    fn prompt_has_the_original_sections_in_order() {
        let plan = plan();
        let inputs = [ContextFile {
            path: "spec.md".into(),
            content: "# Spec".into(),
        }];
        let targets = [ContextFile {
            path: "api.py".into(),
            content: "x = 1\n".into(),
        }];
        let p = user_prompt(&PromptInput {
            plan: &plan,
            step: &plan.steps[0],
            dependency_outputs: &[],
            inputs: &inputs,
            targets: &targets,
            draft: None,
        });
        let order = [
            "Language: python",
            "Framework: fastapi",
            "## Task\n\nAdd the API",
            "## Requirements\n\n- GET /todos returns JSON",
            "## Project context\n\nA todo app",
            "- instructions: keep it small",
            "## Input file (read only): spec.md",
            "## Current content of api.py",
            "- api.py",
        ];
        let mut at = 0;
        for part in order {
            let found = p[at..]
                .find(part)
                .unwrap_or_else(|| panic!("missing or out of order: {part}\n{p}"));
            at += found;
        }
    }

    #[test]
    fn dependency_outputs_and_patch_anchors_are_included() {
        let plan = plan();
        let p = user_prompt(&PromptInput {
            plan: &plan,
            step: &plan.steps[1],
            dependency_outputs: &[("s1", "def api(): ...")],
            inputs: &[],
            targets: &[],
            draft: None,
        });
        assert!(p.contains("## Output of step s1\n\ndef api(): ..."), "{p}");
        assert!(p.contains("- Insert after\n  marker:\n    # routes"), "{p}");
        assert!(!p.contains("## Draft to improve"), "{p}");
    }

    #[test]
    fn a_refinement_carries_the_draft_before_the_answer_format() {
        let plan = plan();
        let p = user_prompt(&PromptInput {
            plan: &plan,
            step: &plan.steps[0],
            dependency_outputs: &[],
            inputs: &[],
            targets: &[],
            draft: Some("```python path=api.py\ndef todos(): return []\n```\n"),
        });
        let draft = p.find("## Draft to improve").expect("draft section");
        let code = p.find("def todos(): return []").expect("draft text");
        let answer = p.find("## Answer").expect("answer section");
        assert!(draft < code && code < answer, "{p}");
    }

    #[test]
    fn fences_survive_backticks_in_files() {
        let f = fenced("README.md", "```rust\nfn x() {}\n```\n");
        assert!(f.starts_with("````md\n"), "{f}");
        assert!(f.ends_with("````\n"));
    }
}
