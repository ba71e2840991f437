//! DeepSeek: OpenAI-style chat completions with `reasoning_content`, cache-hit usage, 402 for
//! an empty balance, keep-alive blank lines and `: keep-alive` comments, and the transient
//! `insufficient_system_resource` finish reason.

use aetherflow_domain::Price;

use crate::config::{AdapterConfig, price};
use crate::errors::Flavor;
use crate::http::ConfigError;
use crate::openai::{Dialect, OpenAiStyle};
use crate::wire::{AuthStyle, Transport};

/// The provider name.
pub const NAME: &str = "deepseek";
/// The public API.
pub const DEFAULT_BASE_URL: &str = "https://api.deepseek.com";
/// The model used when none is configured.
pub const DEFAULT_MODEL: &str = "deepseek-v4-flash";

/// USD per million tokens, spec §1.7 (snapshot 2026-07).
pub fn prices(model: &str) -> Option<Price> {
    match model {
        "deepseek-v4-flash" | "deepseek-chat" | "deepseek-reasoner" => {
            Some(price(140_000, 2_800, 280_000))
        }
        "deepseek-v4-pro" => Some(price(435_000, 3_625, 870_000)),
        _ => None,
    }
}

/// Context windows, spec §1.7.
pub fn windows(model: &str) -> Option<u64> {
    match model {
        "deepseek-v4-flash" | "deepseek-v4-pro" | "deepseek-chat" | "deepseek-reasoner" => {
            Some(1_000_000)
        }
        _ => None,
    }
}

/// DeepSeek's dialect.
pub fn dialect() -> Dialect {
    Dialect {
        flavor: Flavor::DeepSeek,
        chat_path: "/chat/completions",
        max_tokens_field: "max_tokens",
        seed_field: None,
        stream_usage_option: true,
        reasoning_field: Some("reasoning_content"),
        prices,
        windows,
    }
}

/// A DeepSeek adapter.
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
