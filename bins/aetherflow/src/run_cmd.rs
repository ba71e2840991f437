//! `aetherflow run`: builds the orchestrator from settings and flags, runs the plan with
//! progress output, and turns the outcome into an exit code.

use std::io::IsTerminal;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aetherflow_domain::Money;
use aetherflow_domain::run::{Mode, Phase, RunStatus, Workflow};
use aetherflow_orchestrator::apply::ApplyMode;
use aetherflow_orchestrator::review::ReviewOptions;
use aetherflow_orchestrator::settings::{ProviderKeys, Settings};
use aetherflow_orchestrator::setup;
use aetherflow_orchestrator::workspace::Workspace;
use aetherflow_orchestrator::{
    EventSink, Orchestrator, RunOptions, WorkflowOutcome, WorkflowRun, mock_provider_set,
};
use aetherflow_provider::mock::{MockProvider, MockScript};
use aetherflow_resilience::ledger::CostLedger;

/// The cost ledger's file name inside the output folder.
pub const LEDGER_FILE: &str = "ledger.jsonl";
use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::render::{Output, render_events, summary};
use crate::{ModeArg, RunArgs, WorkflowArg};
use aetherflow_bootstrap::Environment;

pub fn run(
    args: RunArgs,
    settings: Settings,
    environment: &Environment,
) -> anyhow::Result<ExitCode> {
    let plan_path = args
        .plan
        .as_deref()
        .context("a plan file is needed: aetherflow run PLAN")?;
    let plan = Arc::new(crate::plan_cmd::read_plan(plan_path)?);
    let concurrency = args.concurrency.unwrap_or(settings.run.concurrency);
    let concurrency = NonZeroUsize::new(concurrency)
        .filter(|n| n.get() <= 1024)
        .context("--concurrency must be between 1 and 1024")?;
    let mode = match args.mode {
        Some(ModeArg::Fast) => Mode::Fast,
        Some(ModeArg::Build) => Mode::Build,
        Some(ModeArg::DoubleCheck) => Mode::DoubleCheck,
        None => settings.run.mode,
    };
    let workflow = match args.workflow {
        Some(WorkflowArg::Direct) => Workflow::Direct,
        Some(WorkflowArg::Proto) => Workflow::Proto,
        Some(WorkflowArg::Prod) => Workflow::Prod,
        None => settings.run.workflow,
    };

    let mut reloader = None;
    let providers = if args.offline {
        let script = match args.mock_script.as_ref().or(settings.mock.script.as_ref()) {
            Some(path) => MockScript::from_file(path)?,
            None => MockScript::default(),
        };
        let latency =
            Duration::from_millis(args.mock_latency_ms.unwrap_or(settings.mock.latency_ms));
        mock_provider_set(MockProvider::new(script, latency))
    } else {
        if args.mock_script.is_some() || args.mock_latency_ms.is_some() {
            anyhow::bail!("--mock-script and --mock-latency-ms only apply with --offline");
        }
        let keys = environment.keys()?;
        let configured =
            setup::configured_providers_priced(&settings.providers, &keys, &settings.prices)?;
        reloader = Some(setup::KeyReloader::new(&configured, &keys));
        match setup::provider_set_from(&settings.providers, &configured)? {
            Some(set) => set,
            None => anyhow::bail!(ProviderKeys::missing_help()),
        }
    };

    let budget = match args.budget.as_ref().or(settings.run.budget_usd.as_ref()) {
        Some(text) => Some(Money::parse_usd(text).context("--budget")?),
        None => None,
    };
    let out_dir = args.out.unwrap_or_else(|| settings.run.out_dir.clone());
    let ledger = CostLedger::open(&out_dir.join(LEDGER_FILE))?;
    // Runs wait on providers, not on the CPU: one thread schedules steps with the least
    // overhead (see the orchestrator benchmark); blocking file work goes to tokio's pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // With redis.url set, the CLI's calls count against the same shared caps as the API's (the
    // connection belongs to the run's runtime).
    let shared = {
        let _entered = runtime.enter();
        setup::shared_state(&settings)?
    };
    let budgets = setup::budgets(&settings, &out_dir.join(LEDGER_FILE), shared.as_ref())?;
    let workspace = Workspace::open(&args.workspace, settings.context.limits())?;
    let orchestrator = Orchestrator::new(providers, workspace).with_resilience(setup::resilience(
        &settings,
        budgets,
        Some(Arc::new(ledger)),
        !args.no_cache,
        shared.as_ref(),
    ));
    let reviewer = ReviewOptions {
        provider: settings.review.provider.clone(),
        fail_open: settings.review.fail_open,
    };
    let sandbox = if args.no_verify {
        None
    } else {
        let sandbox = aetherflow_sandbox::Sandbox::new(settings.sandbox.config(&environment.vars))
            .context("the sandbox that checks generated Python before it is applied (or pass --no-verify to skip those checks)")?;
        Some((sandbox, settings.sandbox.limits()))
    };
    let options = RunOptions {
        mode,
        concurrency,
        out_dir: Some(out_dir),
        max_output_tokens: Some(settings.run.max_output_tokens),
        budget,
        apply: if args.no_apply {
            None
        } else if args.dry_run {
            Some(ApplyMode::DryRun)
        } else {
            Some(ApplyMode::Write)
        },
        sandbox,
        // DOUBLE-CHECK is build mode plus the second model's review.
        review: (args.review || settings.review.enabled || mode == Mode::DoubleCheck)
            .then(|| reviewer.clone()),
        ..RunOptions::default()
    };
    let mut passes = WorkflowRun::new(workflow, options, reviewer);
    let output = if args.json {
        Output::Json
    } else if std::io::stderr().is_terminal() {
        Output::Bars
    } else {
        Output::Lines
    };

    let outcome = runtime.block_on(async {
        let cancel = CancellationToken::new();
        // Installed before the run starts, so an early Ctrl-C already cancels cleanly.
        let mut interrupts = Interrupts::install()?;
        // Keys in files rotate without a restart: on SIGHUP, and when a file changes.
        let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel();
        if let Some(reloader) = reloader.filter(|r| !r.is_empty()) {
            tokio::spawn(reloader.watch(Duration::from_secs(5), reload_rx));
            #[cfg(unix)]
            if let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        if reload_tx.send(()).is_err() {
                            break;
                        }
                    }
                });
            }
        }
        let on_signal = cancel.clone();
        tokio::spawn(async move {
            if interrupts.next().await {
                eprintln!("cancelling: finishing the report (Ctrl-C again to quit at once)");
                on_signal.cancel();
                if interrupts.next().await {
                    std::process::exit(130);
                }
            }
        });
        // Each pass of the workflow is a run of its own, rendered and summarised on its own.
        while let Some((phase, options)) = passes.next_pass() {
            if let (Some(stage), false) = (&options.stage, args.json) {
                eprintln!(
                    "== {} workflow, pass {}/{}: {phase}",
                    stage.workflow, stage.number, stage.of
                );
            }
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let renderer = tokio::spawn(render_events(rx, output, plan.steps().len()));
            let outcome = orchestrator
                .run(
                    Arc::clone(&plan),
                    &options,
                    EventSink::new(tx),
                    cancel.clone(),
                )
                .await;
            let _ = renderer.await;
            let outcome = outcome?;
            summary(&outcome, output)?;
            // A dry run shows what it would change (the diffs are also kept in the run folder).
            if args.dry_run
                && !args.json
                && let Some(dir) = &outcome.run_dir
            {
                for step in &outcome.report.steps {
                    if let Ok(diff) = std::fs::read_to_string(dir.join(format!("{}.diff", step.id)))
                    {
                        print!("{diff}");
                    }
                }
            }
            passes.record(outcome);
        }
        anyhow::Ok(passes.finish())
    })?;

    if workflow != Workflow::Direct {
        workflow_summary(&outcome, output)?;
    }
    Ok(match outcome.status() {
        RunStatus::Succeeded => ExitCode::SUCCESS,
        RunStatus::Failed | RunStatus::Cancelled => ExitCode::from(1),
    })
}

/// After the passes of a PROTO or PROD workflow: each pass, the double-check verdicts, the total.
fn workflow_summary(outcome: &WorkflowOutcome, output: Output) -> anyhow::Result<()> {
    let status = outcome.status();
    if output == Output::Json {
        let line = serde_json::json!({
            "event": "workflow",
            "workflow": outcome.workflow,
            "status": status,
            "cost_usd": outcome.cost().to_string(),
            "runs": outcome.runs.iter().map(|r| serde_json::json!({
                "run_id": r.report.run_id,
                "phase": r.report.workflow.as_ref().map(|s| s.phase),
                "status": r.report.status,
                "run_dir": r.run_dir.as_ref().map(|p| p.display().to_string()),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string(&line)?);
        return Ok(());
    }
    println!("{} workflow:", outcome.workflow);
    for run in &outcome.runs {
        let phase = run
            .report
            .workflow
            .as_ref()
            .map_or("run", |s| s.phase.as_str());
        println!(
            "  {phase:<13} run {} · {:?} · {}",
            run.report.run_id, run.report.status, run.report.totals.cost
        );
    }
    if let Some(check) = outcome.runs.last().filter(|r| {
        r.report
            .workflow
            .as_ref()
            .is_some_and(|s| s.phase == Phase::DoubleCheck)
    }) {
        for step in &check.report.steps {
            let Some(verdict) = &step.verdict else {
                continue;
            };
            let word = if verdict.approve {
                "approved"
            } else {
                "rejected"
            };
            println!("  {} {word}", step.id);
            for issue in &verdict.issues {
                let at = issue
                    .line
                    .map(|l| format!(" line {l}:"))
                    .unwrap_or_default();
                println!("    - [{:?}]{at} {}", issue.severity, issue.message);
            }
        }
    } else if status != RunStatus::Cancelled {
        println!("  no double-check: no step produced files to check");
    }
    println!("{status:?} · {} in all", outcome.cost());
    Ok(())
}

/// Ctrl-C (SIGINT) notifications, registered as soon as this is created.
struct Interrupts {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn install() -> anyhow::Result<Self> {
        Ok(Interrupts {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .context("cannot listen for Ctrl-C")?,
        })
    }

    /// Waits for the next Ctrl-C; false if no more can arrive.
    async fn next(&mut self) -> bool {
        #[cfg(unix)]
        {
            self.signal.recv().await.is_some()
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.is_ok()
        }
    }
}

/// `aetherflow run rollback RUN_ID`: restores exactly what that run changed in the workspace.
pub fn rollback(
    run_id: &str,
    out: Option<&std::path::Path>,
    settings: &Settings,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let out_dir = out.map_or_else(
        || settings.run.out_dir.clone(),
        std::path::Path::to_path_buf,
    );
    let run_dir = find_run_dir(&out_dir, run_id)?;
    let manifest: aetherflow_orchestrator::apply::Manifest = serde_json::from_slice(
        &std::fs::read(run_dir.join(aetherflow_orchestrator::apply::MANIFEST)).with_context(
            || {
                format!(
                    "run {run_id} changed no workspace files (no {} in {})",
                    aetherflow_orchestrator::apply::MANIFEST,
                    run_dir.display()
                )
            },
        )?,
    )
    .with_context(|| format!("reading the change manifest of run {run_id}"))?;
    let workspace = Workspace::open(&manifest.workspace, settings.context.limits())?;
    let report = aetherflow_orchestrator::apply::rollback(&workspace, &run_dir)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for path in &report.restored {
            println!("restored  {path}");
        }
        for path in &report.removed {
            println!("removed   {path}");
        }
        for (path, why) in &report.conflicts {
            println!("kept      {path} ({why})");
        }
    }
    Ok(if report.conflicts.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}

/// `<out>/<task_id>/<run_id>/` for a run id, whatever its task.
fn find_run_dir(out: &std::path::Path, run_id: &str) -> anyhow::Result<std::path::PathBuf> {
    if run_id.is_empty() || run_id.contains(['/', '\\']) || run_id.starts_with('.') {
        anyhow::bail!("`{run_id}` is not a run id (see the run_id in a report.json)");
    }
    let tasks = std::fs::read_dir(out)
        .with_context(|| format!("reading the output folder {}", out.display()))?;
    for task in tasks.flatten() {
        let candidate = task.path().join(run_id);
        if candidate.is_dir() {
            return Ok(candidate);
        }
    }
    anyhow::bail!(
        "no run {run_id} under {} (pass the folder the run wrote to with --out)",
        out.display()
    )
}
