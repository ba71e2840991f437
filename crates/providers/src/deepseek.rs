//! DeepSeek: OpenAI-style chat completions with `reasoning_content`, cache-hit usage, 402 for
//! an empty balance, keep-alive blank lines and `: keep-alive` comments, and the transient
//! `insufficient_system_resource` finish reason.

use crate::config::AdapterConfig;
use crate::errors::Flavor;
use crate::http::ConfigError;
use crate::openai::{Dialect, OpenAiStyle, keyed_adapter};

/// The provider name.
pub const NAME: &str = "deepseek";
/// The public API.
pub const DEFAULT_BASE_URL: &str = "https://api.deepseek.com";
/// The model used when none is configured.
pub const DEFAULT_MODEL: &str = "deepseek-v4-flash";

/// DeepSeek's dialect.
pub fn dialect() -> Dialect {
    Dialect {
        flavor: Flavor::DeepSeek,
        chat_path: "/chat/completions",
        max_tokens_field: "max_tokens",
        seed_field: None,
        stream_usage_option: true,
        reasoning_field: Some("reasoning_content"),
        images: false,
        json_schema: false,
        strict_tools: false,
        tool_choice_required: true,
        free_when_unpriced: false,
    }
}

/// A DeepSeek adapter.
pub fn adapter(config: AdapterConfig) -> Result<OpenAiStyle, ConfigError> {
    keyed_adapter(NAME, DEFAULT_BASE_URL, dialect(), config)
}
