//! Moonshot Kimi: OpenAI-style chat on the international or China platform,
//! `max_completion_tokens`, stream usage inside `choices[0].usage`, `cached_tokens`, 403 for
//! balance and 429 `engine_overloaded_error`.

use crate::config::AdapterConfig;
use crate::errors::Flavor;
use crate::http::ConfigError;
use crate::openai::{Dialect, OpenAiStyle, keyed_adapter};

/// The provider name.
pub const NAME: &str = "kimi";
/// The international platform.
pub const DEFAULT_BASE_URL: &str = "https://api.moonshot.ai/v1";
/// The China platform (its keys are separate).
pub const CHINA_BASE_URL: &str = "https://api.moonshot.cn/v1";
/// The model used when none is configured.
pub const DEFAULT_MODEL: &str = "kimi-k2.6";

/// Kimi's dialect.
pub fn dialect() -> Dialect {
    Dialect {
        flavor: Flavor::Kimi,
        chat_path: "/chat/completions",
        max_tokens_field: "max_completion_tokens",
        seed_field: None,
        stream_usage_option: false,
        reasoning_field: Some("reasoning_content"),
        images: true,
        json_schema: false,
        strict_tools: false,
        tool_choice_required: false,
        free_when_unpriced: false,
    }
}

/// A Kimi adapter.
pub fn adapter(config: AdapterConfig) -> Result<OpenAiStyle, ConfigError> {
    keyed_adapter(NAME, DEFAULT_BASE_URL, dialect(), config)
}
