//! `aetherflow providers list` and `aetherflow providers check`.

use std::process::ExitCode;
use std::time::Instant;

use aetherflow_bootstrap::Environment;
use aetherflow_orchestrator::settings::{ProviderKeys, Settings};
use aetherflow_orchestrator::setup::{ConfiguredProvider, configured_providers_priced};
use aetherflow_provider::{ChatRequest, Message};
use anyhow::Context;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde_json::json;

fn configured(settings: &Settings, env: &Environment) -> anyhow::Result<Vec<ConfiguredProvider>> {
    Ok(configured_providers_priced(
        &settings.providers,
        &env.keys()?,
        &settings.prices,
    )?)
}

fn price_text(p: &ConfiguredProvider) -> String {
    match p.entry.provider.price(&p.entry.model) {
        Some(price) => format!(
            "in {} · cached {} · out {} per 1M",
            price.input_per_mtok, price.cached_input_per_mtok, price.output_per_mtok
        ),
        None => "unknown model: cost recorded as zero".into(),
    }
}

pub fn list(settings: &Settings, env: &Environment, json: bool) -> anyhow::Result<ExitCode> {
    let providers = configured(settings, env)?;
    if json {
        let out: Vec<_> = providers
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "model": p.entry.model,
                    "base_url": p.base_url,
                    "keys": p.keys.as_ref().map(|k| k.status().iter().map(|s| json!({"id": s.id, "key": s.masked})).collect::<Vec<_>>()).unwrap_or_default(),
                    "price": p.entry.provider.price(&p.entry.model),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    if providers.is_empty() {
        println!("{}", ProviderKeys::missing_help());
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "provider",
        "model",
        "base URL",
        "keys",
        "price (USD)",
    ]);
    for p in &providers {
        let keys = p
            .keys
            .as_ref()
            .map(|k| {
                k.status()
                    .iter()
                    .map(|s| format!("{} {}", s.id, s.masked))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_else(|| "(none)".into());
        table.add_row([
            p.name.clone(),
            p.entry.model.clone(),
            p.base_url.clone(),
            keys,
            price_text(p),
        ]);
    }
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

pub fn check(settings: &Settings, env: &Environment, only: &[String]) -> anyhow::Result<ExitCode> {
    let providers = configured(settings, env)?;
    if providers.is_empty() {
        anyhow::bail!(ProviderKeys::missing_help());
    }
    let wanted: Vec<String> = only
        .iter()
        .map(|n| aetherflow_orchestrator::routing::canonical_provider_name(n))
        .collect();
    for w in &wanted {
        if !providers.iter().any(|p| &p.name == w) {
            anyhow::bail!("provider `{w}` is not configured");
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut failed = 0;
    for p in providers
        .iter()
        .filter(|p| wanted.is_empty() || wanted.contains(&p.name))
    {
        let request = ChatRequest {
            model: p.entry.model.clone(),
            messages: vec![Message::user("Reply with the single word OK.")],
            max_output_tokens: Some(16),
            ..ChatRequest::default()
        };
        let started = Instant::now();
        let outcome = runtime.block_on(p.entry.provider.chat(&request));
        let ms = started.elapsed().as_millis();
        match outcome {
            Ok(r) => println!(
                "ok      {}/{} in {ms} ms ({} tokens)",
                p.name,
                r.model,
                r.usage.total_tokens()
            ),
            Err(e) => {
                failed += 1;
                println!(
                    "failed  {}/{} in {ms} ms: {} [{}]",
                    p.name,
                    p.entry.model,
                    e,
                    e.kind()
                );
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The newest `report.json` under `<out>/<task>/<run>/`, by modification time.
fn latest_report(
    out: &std::path::Path,
) -> Option<(std::path::PathBuf, aetherflow_domain::run::RunReport)> {
    let mut newest: Option<(std::time::SystemTime, std::path::PathBuf)> = None;
    for task in std::fs::read_dir(out).ok()?.flatten() {
        let Ok(runs) = std::fs::read_dir(task.path()) else {
            continue;
        };
        for run in runs.flatten() {
            let path = run.path().join("report.json");
            if let Ok(modified) = std::fs::metadata(&path).and_then(|m| m.modified())
                && newest.as_ref().is_none_or(|(t, _)| modified > *t)
            {
                newest = Some((modified, path));
            }
        }
    }
    let (_, path) = newest?;
    let report = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    Some((path, report))
}

pub fn status(
    settings: &Settings,
    env: &Environment,
    out: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let providers = configured(settings, env)?;
    let out = out.map_or_else(
        || settings.run.out_dir.clone(),
        std::path::Path::to_path_buf,
    );
    let latest = latest_report(&out);
    if json {
        let value = json!({
            "providers": providers.iter().map(|p| json!({
                "name": p.name,
                "model": p.entry.model,
                "keys": p.keys.as_ref().map(|k| k.status().iter().map(|s| json!({"id": s.id, "key": s.masked, "quarantined": s.quarantined})).collect::<Vec<_>>()).unwrap_or_default(),
            })).collect::<Vec<_>>(),
            "breakers": latest.as_ref().map(|(_, r)| r.breakers.clone()).unwrap_or_default(),
            "from_report": latest.as_ref().map(|(p, _)| p.display().to_string()),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    for p in &providers {
        let keys = p.keys.as_ref().map_or(0, |k| k.ids().len());
        println!("{} ({}): {keys} key(s)", p.name, p.entry.model);
    }
    match latest {
        Some((path, report)) if !report.breakers.is_empty() => {
            let mut table = Table::new();
            table
                .load_preset(UTF8_FULL_CONDENSED)
                .set_header(["provider", "model", "breaker", "calls", "failures"]);
            for b in &report.breakers {
                table.add_row([
                    b.provider.clone(),
                    b.model.clone(),
                    b.state.clone(),
                    b.calls.to_string(),
                    b.failures.to_string(),
                ]);
            }
            println!("{table}");
            println!("breakers as the latest run left them ({})", path.display());
        }
        _ => println!("no run in {} has used a provider yet", out.display()),
    }
    Ok(ExitCode::SUCCESS)
}
