//! Any OpenAI-compatible server (Ollama, vLLM, llama.cpp server, LM Studio): a base URL and an
//! optional key, so users can run local models. Local models cost nothing.

use crate::config::AdapterConfig;
use crate::errors::Flavor;
use crate::http::ConfigError;
use crate::openai::{Dialect, OpenAiStyle};
use crate::wire::{AuthStyle, Transport};

/// The provider name.
pub const NAME: &str = "openai-compatible";

/// The generic dialect.
pub fn dialect() -> Dialect {
    Dialect {
        flavor: Flavor::OpenAi,
        chat_path: "/chat/completions",
        max_tokens_field: "max_tokens",
        seed_field: Some("seed"),
        stream_usage_option: true,
        reasoning_field: None,
        images: true,
        json_schema: true,
        strict_tools: true,
        tool_choice_required: true,
        free_when_unpriced: true,
    }
}

/// An adapter for the server at `config.base_url` (required, e.g. `http://127.0.0.1:11434/v1`).
pub fn adapter(config: AdapterConfig) -> Result<OpenAiStyle, ConfigError> {
    let prices = config.price_table();
    let base = config.base_url.ok_or_else(|| ConfigError::BaseUrl {
        url: String::new(),
        message: "an OpenAI-compatible provider needs a base URL, e.g. http://127.0.0.1:11434/v1"
            .into(),
    })?;
    let transport = Transport::new(NAME, &base, config.timeouts, config.keys, AuthStyle::Bearer)?;
    Ok(OpenAiStyle::new(NAME, dialect(), transport, prices))
}
