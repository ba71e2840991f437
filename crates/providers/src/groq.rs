//! Groq: OpenAI-style chat under `/openai/v1`, `max_completion_tokens`, `x-ratelimit-*`
//! headers with Go durations, `x_groq` usage, and the extra `choices: []` usage chunk.

use crate::config::AdapterConfig;
use crate::errors::Flavor;
use crate::http::ConfigError;
use crate::openai::{Dialect, OpenAiStyle, keyed_adapter};

/// The provider name.
pub const NAME: &str = "groq";
/// The public API (the chat path adds `/openai/v1`).
pub const DEFAULT_BASE_URL: &str = "https://api.groq.com";
/// The model used when none is configured.
pub const DEFAULT_MODEL: &str = "llama-3.3-70b-versatile";

/// Groq's dialect.
pub fn dialect() -> Dialect {
    Dialect {
        flavor: Flavor::Groq,
        chat_path: "/openai/v1/chat/completions",
        max_tokens_field: "max_completion_tokens",
        seed_field: Some("seed"),
        stream_usage_option: true,
        reasoning_field: None,
        images: true,
        json_schema: true,
        strict_tools: false,
        tool_choice_required: true,
        free_when_unpriced: false,
    }
}

/// A Groq adapter.
pub fn adapter(config: AdapterConfig) -> Result<OpenAiStyle, ConfigError> {
    keyed_adapter(NAME, DEFAULT_BASE_URL, dialect(), config)
}
