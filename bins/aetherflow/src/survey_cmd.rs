//! `aetherflow survey list`: the failures recorded by runs, across an output folder.

use std::process::ExitCode;

use aetherflow_orchestrator::settings::Settings;
use aetherflow_orchestrator::survey::read_all;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::{SurveyFormat, SurveyListArgs};

/// The natures an entry can have.
const NATURES: &[&str] = &[
    "context",
    "provider_error",
    "budget_exceeded",
    "validation_failed",
    "review_failed",
    "apply_failed",
    "step_failed",
];

pub fn list(args: &SurveyListArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    if let Some(nature) = &args.nature
        && !NATURES.contains(&nature.as_str())
    {
        anyhow::bail!("--nature `{nature}` is not one of: {}", NATURES.join(", "));
    }
    let since = match &args.since {
        Some(day) => Some(crate::parse_since(day)?),
        None => None,
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| settings.run.out_dir.clone());
    let entries: Vec<_> = read_all(&out)
        .into_iter()
        .filter(|e| args.nature.as_ref().is_none_or(|n| &e.nature == n))
        .filter(|e| since.is_none_or(|s| e.at >= s))
        .collect();
    match args.format {
        SurveyFormat::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
        SurveyFormat::Table => {
            if entries.is_empty() {
                println!("no failures recorded under {}", out.display());
            } else {
                let mut table = Table::new();
                table
                    .load_preset(UTF8_FULL_CONDENSED)
                    .set_header(["when", "task", "step", "nature", "error", "fix"]);
                for e in &entries {
                    let error: String = e
                        .raw_error
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .chars()
                        .take(80)
                        .collect();
                    table.add_row([
                        e.at.format("%Y-%m-%d %H:%M").to_string(),
                        e.task_id.clone(),
                        e.step.clone(),
                        e.nature.clone(),
                        error,
                        e.suggested_fix.chars().take(80).collect(),
                    ]);
                }
                println!("{table}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
