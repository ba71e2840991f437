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
