//! `aetherflow`: run, validate and show AetherFlow plans.
//!
//! Exit codes: 0 every step succeeded (or every plan is valid), 1 some step failed, was
//! skipped or cancelled, 2 invalid input or configuration.

mod costs_cmd;
mod plan_cmd;
mod providers_cmd;
mod render;
mod run_cmd;
mod sandbox_cmd;
mod scan_cmd;
mod survey_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Orchestrates AI coding agents: runs plans of steps against LLM providers, with budgets,
/// safety checks and a sandbox.
#[derive(Debug, Parser)]
#[command(name = "aetherflow", version, about, max_term_width = 100)]
struct Cli {
    /// Configuration file (default: ./aetherflow.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `aetherflow_orchestrator=debug` (overrides log.level).
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    /// Log line format (overrides log.format).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a plan (or `run rollback RUN_ID` to undo a run's workspace changes).
    Run(RunArgs),
    /// Validate or inspect plans without running them.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Inspect and check the configured providers.
    #[command(subcommand)]
    Providers(ProvidersCommand),
    /// Spend recorded in the cost ledger.
    Costs(CostsArgs),
    /// Check Python files with the code-safety gate (imports, bandit rules, sandbox escapes).
    Scan(ScanArgs),
    /// The failures runs recorded (the error survey).
    #[command(subcommand)]
    Survey(SurveyCommand),
    /// Run Python in the WebAssembly sandbox (CPython 3.11 for WASI, no host access).
    #[command(subcommand)]
    Sandbox(SandboxCommand),
}

#[derive(Debug, Subcommand)]
enum SurveyCommand {
    /// List the failures recorded in run folders, oldest first.
    List(SurveyListArgs),
}

#[derive(Debug, Args)]
struct SurveyListArgs {
    /// Only this nature: context, provider_error, budget_exceeded, validation_failed,
    /// review_failed, apply_failed, step_failed.
    #[arg(long)]
    nature: Option<String>,
    /// Only failures from this day on (YYYY-MM-DD, UTC).
    #[arg(long, value_name = "DATE")]
    since: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: SurveyFormat,
    /// The output folder runs wrote to (default: run.out_dir).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SurveyFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum SandboxCommand {
    /// Run a Python file in the sandbox; its output is passed through and its exit code
    /// returned (124 on a timeout, 137 when stopped by another limit).
    Run(SandboxRunArgs),
}

#[derive(Debug, Args)]
struct SandboxRunArgs {
    /// The Python file.
    file: PathBuf,
    /// Wall-clock limit, e.g. 2s or 500ms (default: sandbox.timeout_ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<std::time::Duration>,
    /// Memory cap, e.g. 64MiB (default: sandbox.memory_mib).
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// A file to feed on stdin.
    #[arg(long, value_name = "FILE")]
    stdin: Option<PathBuf>,
    /// Print the outcome as JSON on stdout (output, flags, timings) instead of passing the
    /// output through.
    #[arg(long)]
    json: bool,
    /// Arguments for the script (`sys.argv[1:]`), after `--`.
    #[arg(last = true)]
    args: Vec<String>,
}

/// `--since YYYY-MM-DD`: midnight UTC of that day.
fn parse_since(day: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    use anyhow::Context;
    use chrono::TimeZone;
    let date = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .with_context(|| format!("--since `{day}`: write a date as YYYY-MM-DD"))?;
    let midnight = date.and_hms_opt(0, 0, 0).context("--since: invalid date")?;
    Ok(chrono::Utc.from_utc_datetime(&midnight))
}

fn parse_size(text: &str) -> Result<u64, String> {
    text.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{e} (use a size such as 64MiB or 512MB)"))
}

#[derive(Debug, Args)]
struct ScanArgs {
    /// Files or folders (folders are searched for .py files).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Report format.
    #[arg(long, value_enum, default_value = "text")]
    format: ScanFormat,
    /// Block on bandit findings of at least this severity (default: the policy's, high).
    #[arg(long, value_enum)]
    fail_on: Option<SeverityArg>,
    /// A policy file (TOML, or YAML with a .yaml/.yml extension).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ScanFormat {
    Text,
    Json,
    Sarif,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SeverityArg {
    Low,
    Medium,
    High,
}

#[derive(Debug, Args)]
struct CostsArgs {
    /// How to group the totals.
    #[arg(long, value_enum, default_value = "provider")]
    by: GroupArg,
    /// Only calls on or after this UTC date (YYYY-MM-DD).
    #[arg(long, value_name = "DATE")]
    since: Option<String>,
    /// The output folder holding ledger.jsonl (default: run.out_dir).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// As JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GroupArg {
    Provider,
    Model,
    Day,
    Plan,
}

#[derive(Debug, Subcommand)]
enum ProvidersCommand {
    /// Configured providers, models, masked keys and prices.
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Key pools and circuit breakers: live keys from configuration, breakers as the latest run
    /// in the output folder left them.
    Status {
        /// The output folder (default: run.out_dir).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// A minimal live call to each configured provider.
    Check {
        /// Only these providers (default: all configured).
        providers: Vec<String>,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct RunArgs {
    #[command(subcommand)]
    action: Option<RunAction>,
    /// The plan file (JSON, or YAML with a .yaml/.yml extension).
    #[arg(required = true)]
    plan: Option<PathBuf>,
    /// Print the changes as unified diffs (also saved as <step>.diff in the run folder) and
    /// write nothing to the workspace.
    #[arg(long, conflicts_with = "no_apply")]
    dry_run: bool,
    /// Leave the workspace alone: answers are only saved in the run folder.
    #[arg(long)]
    no_apply: bool,
    /// Skip the sandbox checks (generated tests run, modules imported) before applying.
    #[arg(long)]
    no_verify: bool,
    /// Have a second model review each step's files before they are applied (review.enabled).
    #[arg(long)]
    review: bool,
    /// Execution mode; double-check also turns on the review (default: run.mode).
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// direct: one run in the mode. proto: a fast run that applies, then a second model
    /// double-checks what it applied. prod: a fast draft, a build-mode refinement given the
    /// draft, then the double-check (default: run.workflow).
    #[arg(long, value_enum)]
    workflow: Option<WorkflowArg>,
    /// The project folder the plan reads and changes.
    #[arg(long, value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
    /// Where run folders are written (default: run.out_dir, `runs`).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Use the built-in mock provider: no keys, no network.
    #[arg(long)]
    offline: bool,
    /// Most steps in flight at once (default: run.concurrency, 4).
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// Machine-readable output: one JSON event per line on stdout, then the report.
    #[arg(long)]
    json: bool,
    /// Hard cap on this run's spend in US dollars, e.g. 0.50 (default: run.budget_usd).
    #[arg(long, value_name = "USD")]
    budget: Option<String>,
    /// Never answer from the response cache.
    #[arg(long)]
    no_cache: bool,
    /// With --offline: a YAML script of mock replies and failures per step.
    #[arg(long, value_name = "FILE")]
    mock_script: Option<PathBuf>,
    /// With --offline: latency added to every mock call, in milliseconds.
    #[arg(long, value_name = "MS")]
    mock_latency_ms: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum RunAction {
    /// Restore exactly what a run changed in its workspace; files edited since are kept.
    Rollback {
        /// The run's id (`run_id` in its report.json).
        run_id: String,
        /// The output folder the run wrote to (default: run.out_dir).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum WorkflowArg {
    Direct,
    Proto,
    Prod,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Fast,
    Build,
    DoubleCheck,
}

#[derive(Debug, Subcommand)]
enum PlanCommand {
    /// Check plans and report every problem with its location.
    Validate {
        /// Plan files.
        #[arg(required = true)]
        plans: Vec<PathBuf>,
        /// One JSON object per plan on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show a plan's steps and dependency levels.
    Show {
        /// The plan file.
        plan: PathBuf,
        /// The same as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let environment = aetherflow_bootstrap::Environment::load(cli.config.as_deref())?;
    let mut settings = environment.settings.clone();
    if let Some(level) = &cli.log_level {
        settings.log.level.clone_from(level);
    }
    if let Some(format) = cli.log_format {
        settings.log.format = match format {
            LogFormatArg::Human => aetherflow_orchestrator::settings::LogFormat::Human,
            LogFormatArg::Json => aetherflow_orchestrator::settings::LogFormat::Json,
        };
    }
    let _log_guard =
        aetherflow_bootstrap::logging::init(&settings.log, &settings.telemetry, "aetherflow")?;
    match cli.command {
        Command::Run(RunArgs {
            action: Some(RunAction::Rollback { run_id, out, json }),
            ..
        }) => run_cmd::rollback(&run_id, out.as_deref(), &settings, json),
        Command::Run(args) => run_cmd::run(args, settings, &environment),
        Command::Plan(PlanCommand::Validate { plans, json }) => plan_cmd::validate(&plans, json),
        Command::Plan(PlanCommand::Show { plan, json }) => plan_cmd::show(&plan, json),
        Command::Providers(ProvidersCommand::List { json }) => {
            providers_cmd::list(&settings, &environment, json)
        }
        Command::Costs(args) => costs_cmd::costs(&args, &settings),
        Command::Scan(args) => scan_cmd::scan(&args),
        Command::Survey(SurveyCommand::List(args)) => survey_cmd::list(&args, &settings),
        Command::Sandbox(SandboxCommand::Run(args)) => {
            sandbox_cmd::run(&args, &settings, &environment)
        }
        Command::Providers(ProvidersCommand::Status { out, json }) => {
            providers_cmd::status(&settings, &environment, out.as_deref(), json)
        }
        Command::Providers(ProvidersCommand::Check { providers }) => {
            providers_cmd::check(&settings, &environment, &providers)
        }
    }
}
