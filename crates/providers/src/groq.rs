//! Groq: OpenAI-style chat under `/openai/v1`, `max_completion_tokens`, `x-ratelimit-*`
//! headers with Go durations, `x_groq` usage, and the extra `choices: []` usage chunk.

use aetherflow_domain::Price;

use crate::config::{AdapterConfig, price};
use crate::errors::Flavor;
use crate::http::ConfigError;
use crate::openai::{Dialect, OpenAiStyle};
use crate::wire::{AuthStyle, Transport};

/// The provider name.
pub const NAME: &str = "groq";
/// The public API (the chat path adds `/openai/v1`).
pub const DEFAULT_BASE_URL: &str = "https://api.groq.com";
/// The model used when none is configured.
pub const DEFAULT_MODEL: &str = "llama-3.3-70b-versatile";

/// USD per million tokens, spec §3.7 (snapshot 2026-04…06).
pub fn prices(model: &str) -> Option<Price> {
    match model {
        "llama-3.3-70b-versatile" => Some(price(590_000, 590_000, 790_000)),
        "llama-3.1-8b-instant" => Some(price(50_000, 50_000, 80_000)),
        "openai/gpt-oss-120b" => Some(price(150_000, 75_000, 600_000)),
        "openai/gpt-oss-20b" => Some(price(75_000, 37_000, 300_000)),
        "meta-llama/llama-4-scout-17b-16e-instruct" => Some(price(110_000, 110_000, 340_000)),
        "qwen/qwen3-32b" => Some(price(290_000, 290_000, 590_000)),
        _ => None,
    }
}

/// Context windows, spec §3.7.
pub fn windows(model: &str) -> Option<u64> {
    match model {
        "llama-3.3-70b-versatile"
        | "llama-3.1-8b-instant"
        | "openai/gpt-oss-120b"
        | "openai/gpt-oss-20b"
        | "meta-llama/llama-4-scout-17b-16e-instruct"
        | "qwen/qwen3-32b" => Some(131_072),
        _ => None,
    }
}

/// Groq's dialect.
pub fn dialect() -> Dialect {
    Dialect {
        flavor: Flavor::Groq,
        chat_path: "/openai/v1/chat/completions",
        max_tokens_field: "max_completion_tokens",
        seed_field: Some("seed"),
        stream_usage_option: true,
        reasoning_field: None,
        prices,
        windows,
    }
}

/// A Groq adapter.
pub fn adapter(config: AdapterConfig) -> Result<OpenAiStyle, ConfigError> {
    let transport = Transport::new(
        NAME,
        config.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL),
        config.timeouts,
        Some(config.keys.ok_or(ConfigError::NoKey {
            provider: NAME.into(),
        })?),
        AuthStyle::Bearer,
    )?;
    Ok(OpenAiStyle::new(NAME, dialect(), transport))
}
