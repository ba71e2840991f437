//! What a person (or a program) sees while and after a plan runs.

use std::time::Duration;

use aetherflow_domain::run::StepStatus;
use aetherflow_domain::{Money, Usage};
use aetherflow_orchestrator::{RunEvent, RunOutcome};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc::UnboundedReceiver;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Progress bar on a terminal.
    Bars,
    /// Plain lines on standard error (pipes, CI logs).
    Lines,
    /// JSON events on standard output.
    Json,
}

/// Shows events until the run ends.
pub async fn render_events(mut rx: UnboundedReceiver<RunEvent>, output: Output, steps: usize) {
    let bar = (output == Output::Bars).then(|| {
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{bar:30}] {pos}/{len} steps · {msg} · {elapsed}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut usage = Usage::default();
    let mut cost = Money::ZERO;
    while let Some(event) = rx.recv().await {
        if output == Output::Json {
            if let Ok(line) = serde_json::to_string(&event) {
                println!("{line}");
            }
            continue;
        }
        let line = match &event {
            RunEvent::RunStarted {
                run_id,
                task_id,
                steps,
                mode,
            } => {
                format!("run {run_id}: {task_id}, {steps} steps, mode {mode}")
            }
            RunEvent::StepStarted {
                step_id,
                provider,
                model,
            } => {
                format!("start   {step_id} → {provider}/{model}")
            }
            RunEvent::StepFinished {
                step_id,
                status,
                usage: u,
                cost: c,
                duration,
                reason,
            } => {
                usage += *u;
                cost += *c;
                if let Some(bar) = &bar {
                    bar.inc(1);
                }
                let mut line = format!(
                    "{:<7} {step_id} ({} tokens, {c}, {})",
                    status_word(*status),
                    u.total_tokens(),
                    ms(*duration)
                );
                if let Some(r) = reason {
                    line.push_str(&format!(": {r}"));
                }
                line
            }
            RunEvent::StepRestored { step_id, status } => {
                if let Some(bar) = &bar {
                    bar.inc(1);
                }
                format!(
                    "{:<7} {step_id} (from an earlier attempt)",
                    status_word(*status)
                )
            }
            RunEvent::StepSkipped { step_id, reason } => {
                if let Some(bar) = &bar {
                    bar.inc(1);
                }
                format!("skipped {step_id}: {reason}")
            }
            RunEvent::BudgetAlert {
                scope,
                threshold,
                spent,
                cap,
            } => {
                format!("budget  {scope}: {threshold}% of {cap} spent ({spent})")
            }
            RunEvent::UsageAlert {
                provider,
                kind,
                current,
                baseline,
            } => {
                format!("alert   {provider}: {kind} at {current:.3}, baseline {baseline:.3}")
            }
            RunEvent::RunFinished { status, .. } => format!("run {}", serde_plain(status)),
        };
        match &bar {
            Some(bar) => {
                bar.set_message(format!("{} tokens · {cost}", usage.total_tokens()));
                bar.println(line);
            }
            None => eprintln!("{line}"),
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

/// The closing summary: a table for people, the report for programs.
pub fn summary(outcome: &RunOutcome, output: Output) -> anyhow::Result<()> {
    let report = &outcome.report;
    if output == Output::Json {
        let line = serde_json::json!({
            "event": "report",
            "run_dir": outcome.run_dir.as_ref().map(|p| p.display().to_string()),
            "report": report,
        });
        println!("{}", serde_json::to_string(&line)?);
        return Ok(());
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "step",
        "status",
        "provider/model",
        "tokens",
        "cost",
        "time",
        "note",
    ]);
    for s in &report.steps {
        table.add_row([
            s.id.to_string(),
            status_word(s.status).to_owned(),
            match (&s.provider, &s.model) {
                (Some(p), Some(m)) => format!("{p}/{m}"),
                _ => "-".into(),
            },
            s.usage.total_tokens().to_string(),
            s.cost.to_string(),
            ms(s.duration),
            s.reason.clone().unwrap_or_default(),
        ]);
    }
    println!("{table}");
    let t = &report.totals;
    println!(
        "{}: {} succeeded, {} failed, {} skipped, {} cancelled · {} tokens · {} · {}",
        serde_plain(&report.status),
        t.succeeded,
        t.failed,
        t.skipped,
        t.cancelled,
        t.usage.total_tokens(),
        t.cost,
        ms(report.duration)
    );
    if let Some(dir) = &outcome.run_dir {
        println!("report: {}", dir.join("report.json").display());
    }
    Ok(())
}

fn status_word(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Pending => "pending",
        StepStatus::Running => "running",
        StepStatus::Succeeded => "ok",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
        StepStatus::Cancelled => "cancelled",
    }
}

fn serde_plain<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}
