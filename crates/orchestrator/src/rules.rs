//! Each step's own rules: its code-safety policy, whether the gate-keeper reviews it (and who,
//! failing open or closed), and whether the sandbox checks it. The run sets the defaults, the
//! plan's `safety` and `review` change them for all its steps, and a step's `context.safety`,
//! `context.review` and `context.verify` change them for that step alone.
//!
//! ```json
//! { "task_id": "t", "description": "d",
//!   "safety": {"imports": {"allow": ["requests"]}},
//!   "review": {"enabled": true, "provider": "deepseek", "fail_open": false},
//!   "steps": [{"id": "s", "description": "…", "type": "code_generation",
//!              "context": {"files": ["a.py"], "verify": false, "review": false,
//!                          "safety": {"disable_rules": ["B101"]}}}] }
//! ```
//!
//! Everything is checked before the run makes any call: a bad rule id, an invalid import
//! pattern or an unknown key is an error naming where it is.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use aetherflow_code_safety::{Policy, PolicyOverrides};
use aetherflow_domain::plan::{Plan, PlanReview};

use crate::review::ReviewOptions;

/// One step's effective rules.
#[derive(Debug, Clone)]
pub struct StepRules {
    /// The code-safety policy its Python files must pass.
    pub policy: Arc<Policy>,
    /// The gate-keeper for it, if it is reviewed.
    pub review: Option<ReviewOptions>,
    /// Whether the sandbox checks its files (when the run has a sandbox).
    pub verify: bool,
}

/// A plan's `safety` or `review` settings are wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct RulesError {
    /// Where in the plan (`safety`, `steps[2] (api).context.safety`).
    pub location: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// The rules of every step of `plan`, in plan order. `review` is the run's gate-keeper (`None`:
/// the run does not review); with `force_review` every step is reviewed whatever the plan says
/// (the double-check pass of a workflow).
pub fn step_rules(
    plan: &Plan,
    policy: &Arc<Policy>,
    review: Option<&ReviewOptions>,
    force_review: bool,
) -> Result<Vec<StepRules>, RulesError> {
    let plan_policy = match &plan.safety {
        Some(value) => Arc::new(layer(policy, value, "safety")?),
        None => Arc::clone(policy),
    };
    let plan_review = plan.review.clone().unwrap_or_default();
    let base = review.cloned();
    let merged = |r: ReviewOptions| with_plan(r, &plan_review);
    let plan_default = match plan_review.enabled {
        Some(true) => Some(base.clone().unwrap_or_default()),
        Some(false) => None,
        None => base.clone(),
    };
    plan.steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let at = format!("steps[{i}] ({}).context.safety", step.id);
            let policy = match &step.context.safety {
                Some(value) => Arc::new(layer(&plan_policy, value, &at)?),
                None => Arc::clone(&plan_policy),
            };
            let review = if force_review {
                Some(base.clone().unwrap_or_default())
            } else {
                match step.context.review {
                    Some(false) => None,
                    Some(true) => Some(plan_default.clone().or(base.clone()).unwrap_or_default()),
                    None => plan_default.clone(),
                }
            }
            .map(merged);
            Ok(StepRules {
                policy,
                review,
                verify: step.context.verify != Some(false),
            })
        })
        .collect()
}

/// The project's own top-level Python modules and packages: `*.py` files and folders holding
/// Python at the workspace root, and the first component of every `.py` path the plan names (the
/// second too under `src/`). Generated code may import these; the code-safety policy never lets
/// one shadow a standard-library module (see `Policy::allowing_local_modules`).
pub fn local_modules(root: &Path, plan: &Plan) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut add_path = |path: &str| {
        let mut parts = path.split('/').filter(|p| !p.is_empty() && *p != ".");
        let (Some(first), rest) = (parts.next(), parts.next()) else {
            return;
        };
        match rest {
            None => {
                if let Some(stem) = first.strip_suffix(".py") {
                    names.insert(stem.to_owned());
                }
            }
            Some(second) => {
                names.insert(first.to_owned());
                if first == "src" {
                    names.insert(second.trim_end_matches(".py").to_owned());
                }
            }
        }
    };
    for step in &plan.steps {
        for f in step.context.files.iter().chain(&step.context.input_files) {
            if f.ends_with(".py") {
                add_path(f);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_file() {
                if let Some(stem) = name.strip_suffix(".py") {
                    names.insert(stem.to_owned());
                }
            } else if kind.is_dir() && holds_python(&entry.path()) {
                names.insert(name);
            }
        }
    }
    names
}

fn holds_python(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".py"))
    })
}

fn with_plan(mut review: ReviewOptions, plan: &PlanReview) -> ReviewOptions {
    if let Some(provider) = &plan.provider {
        review.provider.clone_from(provider);
    }
    if let Some(fail_open) = plan.fail_open {
        review.fail_open = fail_open;
    }
    review
}

fn layer(base: &Policy, value: &serde_json::Value, location: &str) -> Result<Policy, RulesError> {
    let overrides: PolicyOverrides =
        serde_json::from_value(value.clone()).map_err(|e| RulesError {
            location: location.to_owned(),
            message: format!(
                "{e}; expected an object with any of imports {{allow, deny, allow_relative}}, \
                 block, nosec, disable_rules, enable_rules"
            ),
        })?;
    base.layered(&overrides).map_err(|e| RulesError {
        location: location.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aetherflow_code_safety::scan_source;
    use aetherflow_domain::plan::{PlanFormat, load_plan};

    fn plan(json: &str) -> Plan {
        load_plan(json, PlanFormat::Json)
            .expect("plan")
            .plan()
            .clone()
    }

    const STEPS: &str = r#""steps": [
        {"id": "a", "description": "A", "type": "code_generation", "context": {"files": ["a.py"]}},
        {"id": "b", "description": "B", "type": "code_generation",
         "context": {"files": ["b.py"], "verify": false, "review": false,
                     "safety": {"imports": {"deny": ["requests"]}}}},
        {"id": "c", "description": "C", "type": "code_generation",
         "context": {"files": ["c.py"], "review": true}}]"#;

    fn blocks(policy: &Policy, code: &str) -> bool {
        !scan_source("x.py", code, policy).verdict().is_allow()
    }

    #[test]
    fn plan_and_step_layers_apply_in_order() {
        let p = plan(&format!(
            r#"{{"task_id": "t", "description": "d",
                "safety": {{"imports": {{"allow": ["requests"]}}}}, {STEPS}}}"#
        ));
        let rules = step_rules(&p, &Arc::new(Policy::default()), None, false).expect("rules");
        let code = "import requests\n";
        assert!(
            blocks(&Policy::default(), code),
            "the default policy blocks requests"
        );
        assert!(!blocks(&rules[0].policy, code), "the plan allows it");
        assert!(blocks(&rules[1].policy, code), "step b denies it again");
        assert!(rules[0].verify && !rules[1].verify);
    }

    #[test]
    fn review_follows_run_then_plan_then_step() {
        let p = plan(&format!(
            r#"{{"task_id": "t", "description": "d", {STEPS}}}"#
        ));
        let none = step_rules(&p, &Arc::new(Policy::default()), None, false).expect("rules");
        assert!(none[0].review.is_none() && none[1].review.is_none());
        assert_eq!(
            none[2].review.as_ref().map(|r| r.provider.as_str()),
            Some("kimi"),
            "a step can ask for a review the run does not do"
        );

        let p = plan(&format!(
            r#"{{"task_id": "t", "description": "d",
                "review": {{"enabled": true, "provider": "deepseek", "fail_open": true}}, {STEPS}}}"#
        ));
        let run = ReviewOptions::default();
        let rules = step_rules(&p, &Arc::new(Policy::default()), Some(&run), false).expect("r");
        let a = rules[0].review.as_ref().expect("a is reviewed");
        assert_eq!((a.provider.as_str(), a.fail_open), ("deepseek", true));
        assert!(rules[1].review.is_none(), "step b opts out");

        let forced = step_rules(&p, &Arc::new(Policy::default()), Some(&run), true).expect("r");
        assert!(forced.iter().all(|r| r.review.is_some()));
    }

    #[test]
    fn local_modules_come_from_the_workspace_and_the_plan() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir_all(dir.path().join("app")).expect("mkdir");
        std::fs::write(dir.path().join("app/__init__.py"), "").expect("write");
        std::fs::create_dir_all(dir.path().join("docs")).expect("mkdir");
        std::fs::write(dir.path().join("docs/index.md"), "").expect("write");
        std::fs::write(dir.path().join("manage.py"), "").expect("write");
        let p = plan(
            r#"{"task_id": "t", "description": "d", "steps": [
                {"id": "a", "description": "A", "type": "code_generation",
                 "context": {"files": ["tests/test_a.py", "src/pkg/core.py", "util.py", "notes.md"]}}]}"#,
        );
        let names: Vec<String> = local_modules(dir.path(), &p).into_iter().collect();
        assert_eq!(names, ["app", "manage", "pkg", "src", "tests", "util"]);
    }

    #[test]
    fn bad_settings_name_where_they_are() {
        let p = plan(
            r#"{"task_id": "t", "description": "d", "steps": [
                {"id": "a", "description": "A", "type": "code_generation",
                 "context": {"files": ["a.py"], "safety": {"disable_rules": ["B999"]}}}]}"#,
        );
        let err = step_rules(&p, &Arc::new(Policy::default()), None, false).expect_err("bad");
        assert_eq!(err.location, "steps[0] (a).context.safety");
        assert!(err.message.contains("B999"), "{err}");

        let p = plan(
            r#"{"task_id": "t", "description": "d", "safety": {"imports": {"alow": ["x"]}},
                "steps": [{"id": "a", "description": "A", "type": "analysis"}]}"#,
        );
        let err = step_rules(&p, &Arc::new(Policy::default()), None, false).expect_err("bad");
        assert_eq!(err.location, "safety");
        assert!(err.message.contains("alow"), "{err}");
    }
}
