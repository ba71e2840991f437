//! `aetherflow costs`: totals from the cost ledger.

use std::process::ExitCode;

use aetherflow_orchestrator::settings::Settings;
use aetherflow_resilience::ledger::{GroupBy, read_ledger, summarise};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::run_cmd::LEDGER_FILE;
use crate::{CostsArgs, GroupArg};

pub fn costs(args: &CostsArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| settings.run.out_dir.clone());
    let path = out.join(LEDGER_FILE);
    let since = match &args.since {
        Some(day) => Some(crate::parse_since(day)?),
        None => None,
    };
    let group = match args.by {
        GroupArg::Provider => GroupBy::Provider,
        GroupArg::Model => GroupBy::Model,
        GroupArg::Day => GroupBy::Day,
        GroupArg::Plan => GroupBy::Plan,
    };
    let (records, unreadable) = read_ledger(&path)?;
    if unreadable > 0 {
        eprintln!(
            "warning: {unreadable} unreadable line(s) in {} were skipped (a crash can tear the last line)",
            path.display()
        );
    }
    let totals = summarise(&records, group, since);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&totals)?);
        return Ok(ExitCode::SUCCESS);
    }
    if totals.is_empty() {
        println!("no recorded calls in {}", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "group",
        "calls",
        "failed",
        "input tokens",
        "output tokens",
        "cost",
    ]);
    let mut all = aetherflow_domain::Money::ZERO;
    for (key, t) in &totals {
        all += t.cost;
        table.add_row([
            key.clone(),
            t.calls.to_string(),
            t.failed.to_string(),
            t.usage.input_tokens.to_string(),
            t.usage.output_tokens.to_string(),
            t.cost.to_string(),
        ]);
    }
    println!("{table}");
    println!("total {all} ({})", path.display());
    Ok(ExitCode::SUCCESS)
}
