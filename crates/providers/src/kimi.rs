//! Moonshot Kimi: OpenAI-style chat on the international or China platform,
//! `max_completion_tokens`, stream usage inside `choices[0].usage`, `cached_tokens`, 403 for
//! balance and 429 `engine_overloaded_error`.

use aetherflow_domain::Price;

use crate::config::{AdapterConfig, price};
use crate::errors::Flavor;
use crate::http::ConfigError;
use crate::openai::{Dialect, OpenAiStyle};
use crate::wire::{AuthStyle, Transport};

/// The provider name.
pub const NAME: &str = "kimi";
/// The international platform.
pub const DEFAULT_BASE_URL: &str = "https://api.moonshot.ai/v1";
/// The China platform (its keys are separate).
pub const CHINA_BASE_URL: &str = "https://api.moonshot.cn/v1";
/// The model used when none is configured.
pub const DEFAULT_MODEL: &str = "kimi-k2.6";

/// USD per million tokens, spec §5.7 (international platform).
pub fn prices(model: &str) -> Option<Price> {
    match model {
        "kimi-k2.6" => Some(price(950_000, 160_000, 4_000_000)),
        "kimi-k2.5" => Some(price(600_000, 100_000, 3_000_000)),
        "kimi-k2-0905-preview" | "kimi-k2-0711-preview" | "kimi-k2-thinking" => {
            Some(price(600_000, 150_000, 2_500_000))
        }
        "kimi-k2-turbo-preview" | "kimi-k2-thinking-turbo" => {
            Some(price(1_150_000, 1_150_000, 8_000_000))
        }
        "moonshot-v1-8k" => Some(price(200_000, 200_000, 2_000_000)),
        "moonshot-v1-32k" => Some(price(1_000_000, 1_000_000, 3_000_000)),
        "moonshot-v1-128k" => Some(price(2_000_000, 2_000_000, 5_000_000)),
        _ => None,
    }
}

/// Context windows, spec §5.7.
pub fn windows(model: &str) -> Option<u64> {
    match model {
        "kimi-k2.6"
        | "kimi-k2.5"
        | "kimi-k2-0905-preview"
        | "kimi-k2-turbo-preview"
        | "kimi-k2-thinking"
        | "kimi-k2-thinking-turbo" => Some(262_144),
        "kimi-k2-0711-preview" | "moonshot-v1-128k" => Some(131_072),
        "moonshot-v1-32k" => Some(32_768),
        "moonshot-v1-8k" => Some(8_192),
        _ => None,
    }
}

/// Kimi's dialect.
pub fn dialect() -> Dialect {
    Dialect {
        flavor: Flavor::Kimi,
        chat_path: "/chat/completions",
        max_tokens_field: "max_completion_tokens",
        seed_field: None,
        stream_usage_option: false,
        reasoning_field: Some("reasoning_content"),
        prices,
        windows,
    }
}

/// A Kimi adapter.
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
