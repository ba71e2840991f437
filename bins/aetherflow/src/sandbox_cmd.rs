//! `aetherflow sandbox run`: one Python file in the WebAssembly sandbox.

use std::io::Write;
use std::process::ExitCode;

use aetherflow_bootstrap::Environment;
use aetherflow_orchestrator::settings::Settings;
use aetherflow_sandbox::{RunRequest, Sandbox};
use anyhow::Context;

use crate::SandboxRunArgs;

/// Exit code for a run stopped by the wall-clock limit (as `timeout(1)`).
const EXIT_TIMEOUT: u8 = 124;
/// Exit code for a run stopped by another limit or a trap (as a killed process).
const EXIT_STOPPED: u8 = 137;

pub fn run(
    args: &SandboxRunArgs,
    settings: &Settings,
    environment: &Environment,
) -> anyhow::Result<ExitCode> {
    let code = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let stdin = match &args.stdin {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => Vec::new(),
    };
    let mut limits = settings.sandbox.limits();
    if let Some(timeout) = args.timeout {
        limits.timeout = timeout;
    }
    if let Some(memory) = args.memory {
        limits.memory_bytes = memory;
    }
    let sandbox = Sandbox::new(settings.sandbox.config(&environment.vars))?;
    let outcome = sandbox.run_blocking(&RunRequest {
        code,
        argv: args.args.clone(),
        stdin,
        limits,
        ..RunRequest::default()
    })?;

    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        std::io::stdout().write_all(outcome.stdout.as_bytes())?;
        std::io::stderr().write_all(outcome.stderr.as_bytes())?;
        for (cut, name) in [
            (outcome.stdout_truncated, "stdout"),
            (outcome.stderr_truncated, "stderr"),
        ] {
            if cut {
                eprintln!("[sandbox] {name} was cut at {} bytes", limits.output_bytes);
            }
        }
        if let Some(reason) = outcome.failure_summary()
            && outcome.exit_code.is_none()
        {
            eprintln!("[sandbox] {reason} after {:.0?}", outcome.duration);
        }
        if outcome.out_of_memory {
            eprintln!(
                "[sandbox] the memory cap ({} bytes) was reached",
                limits.memory_bytes
            );
        }
    }
    Ok(match outcome.exit_code {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None if outcome.timed_out => ExitCode::from(EXIT_TIMEOUT),
        None => ExitCode::from(EXIT_STOPPED),
    })
}
