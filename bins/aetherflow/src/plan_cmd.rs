//! `aetherflow plan validate` and `aetherflow plan show`.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use aetherflow_domain::plan::{PlanFormat, ValidPlan, load_plan};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde_json::json;

/// Plans larger than this are refused before parsing.
const MAX_PLAN_BYTES: u64 = 16 * 1024 * 1024;

/// Reads and validates a plan file; the error names the file and, where it can, the line.
pub fn read_plan(path: &Path) -> anyhow::Result<ValidPlan> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_PLAN_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    if bytes.len() as u64 > MAX_PLAN_BYTES {
        anyhow::bail!("{shown}: larger than {MAX_PLAN_BYTES} bytes; a plan should be far smaller");
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{shown}: not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    let plan = load_plan(&text, PlanFormat::from_path(path))
        .map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    // The plan's own safety and review settings are checked here too, so `plan validate` and
    // `run` both reject a bad rule id or import pattern before anything else happens.
    aetherflow_orchestrator::rules::step_rules(
        plan.plan(),
        &std::sync::Arc::new(aetherflow_code_safety::Policy::default()),
        None,
        false,
    )
    .map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    Ok(plan)
}

pub fn validate(paths: &[std::path::PathBuf], json: bool) -> anyhow::Result<ExitCode> {
    let mut invalid = 0;
    for path in paths {
        let outcome = read_plan(path);
        if json {
            let line = match &outcome {
                Ok(plan) => json!({
                    "file": path.display().to_string(),
                    "valid": true,
                    "steps": plan.steps().len(),
                    "levels": plan.levels().len(),
                    "warnings": plan.warnings(),
                }),
                Err(e) => json!({
                    "file": path.display().to_string(),
                    "valid": false,
                    "error": format!("{e:#}"),
                }),
            };
            println!("{line}");
        } else {
            match &outcome {
                Ok(plan) => {
                    println!(
                        "ok      {}: {} steps in {} levels{}",
                        path.display(),
                        plan.steps().len(),
                        plan.levels().len(),
                        match plan.warnings().len() {
                            0 => String::new(),
                            1 => ", 1 warning".to_owned(),
                            n => format!(", {n} warnings"),
                        }
                    );
                    for w in plan.warnings() {
                        println!("        warning: {w}");
                    }
                }
                Err(e) => println!("invalid {e:#}"),
            }
        }
        if outcome.is_err() {
            invalid += 1;
        }
    }
    if !json {
        println!(
            "{} plan{} checked, {invalid} invalid",
            paths.len(),
            if paths.len() == 1 { "" } else { "s" }
        );
    }
    Ok(if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

pub fn show(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let plan = read_plan(path)?;
    let level_of = plan.level_of_each_step();
    let steps = plan.steps();
    if json {
        let out = json!({
            "task_id": plan.plan().task_id,
            "description": plan.plan().description,
            "levels": plan.levels().iter().map(|l| l.iter().map(|&i| steps[i].id.as_str()).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "steps": steps.iter().enumerate().map(|(i, s)| json!({
                "id": s.id,
                "type": s.step_type,
                "level": level_of[i],
                "dependencies": s.dependencies,
                "files": s.context.files,
                "complexity": s.complexity,
                "estimated_tokens": s.estimated_tokens,
                "provider": s.context.provider,
            })).collect::<Vec<_>>(),
            "warnings": plan.warnings(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} — {}", plan.plan().task_id, plan.plan().description);
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "level",
        "step",
        "type",
        "depends on",
        "files",
        "complexity",
        "est. tokens",
    ]);
    for level in plan.levels() {
        for &i in level {
            let s = &steps[i];
            table.add_row([
                level_of[i].to_string(),
                s.id.to_string(),
                s.step_type.to_string(),
                s.dependencies
                    .iter()
                    .map(|d| d.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                s.context.files.join("\n"),
                s.complexity.map_or("-".into(), |c| format!("{c:.2}")),
                s.estimated_tokens.map_or("-".into(), |t| t.to_string()),
            ]);
        }
    }
    println!("{table}");
    println!(
        "{} steps in {} levels (steps on one level can run at the same time)",
        steps.len(),
        plan.levels().len()
    );
    for w in plan.warnings() {
        println!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}
