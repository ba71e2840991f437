//! Mistral Codestral: chat on `codestral.mistral.ai` (its own key realm) or `api.mistral.ai`,
//! and fill-in-the-middle as a first-class request. Mistral rejects unknown fields with 422
//! `extra_forbidden`, so only fields it defines are ever sent (`max_tokens`, `random_seed`, no
//! `stream_options`).

use aetherflow_domain::Price;
use aetherflow_provider::{ChatRequest, ChatResponse, ChatStream, Provider, ProviderError};
use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::config::AdapterConfig;
use crate::errors::{Flavor, classify};
use crate::http::ConfigError;
use crate::openai::{Dialect, OpenAiStyle, keyed_adapter, parse_completion};

/// The provider name.
pub const NAME: &str = "codestral";
/// The Codestral domain (subscription keys).
pub const DEFAULT_BASE_URL: &str = "https://codestral.mistral.ai/v1";
/// La Plateforme (pay-as-you-go keys).
pub const PLATFORM_BASE_URL: &str = "https://api.mistral.ai/v1";
/// The model used when none is configured.
pub const DEFAULT_MODEL: &str = "codestral-latest";

/// Mistral's dialect.
pub fn dialect() -> Dialect {
    Dialect {
        flavor: Flavor::Mistral,
        chat_path: "/chat/completions",
        max_tokens_field: "max_tokens",
        seed_field: Some("random_seed"),
        stream_usage_option: false,
        reasoning_field: None,
        images: false,
        json_schema: true,
        strict_tools: false,
        tool_choice_required: true,
        free_when_unpriced: false,
    }
}

/// A fill-in-the-middle request: the model writes what goes between `prompt` and `suffix`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FimRequest {
    /// The model (`codestral-latest`).
    pub model: String,
    /// Code before the gap.
    pub prompt: String,
    /// Code after the gap (empty for plain completion).
    pub suffix: Option<String>,
    /// Upper bound on generated tokens.
    pub max_output_tokens: Option<u32>,
    /// Lower bound on generated tokens.
    pub min_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Sequences that end the answer.
    pub stop: Vec<String>,
    /// Sampling seed (sent as `random_seed`).
    pub seed: Option<u64>,
}

/// The Codestral adapter: chat through the shared OpenAI-style code, plus FIM.
#[derive(Debug, Clone)]
pub struct Codestral {
    chat: OpenAiStyle,
}

/// A Codestral adapter.
pub fn adapter(config: AdapterConfig) -> Result<Codestral, ConfigError> {
    Ok(Codestral {
        chat: keyed_adapter(NAME, DEFAULT_BASE_URL, dialect(), config)?,
    })
}

/// The FIM body: only fields Mistral defines.
pub fn fim_body(request: &FimRequest) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), Value::from(request.model.clone()));
    body.insert("prompt".into(), Value::from(request.prompt.clone()));
    if let Some(suffix) = &request.suffix {
        body.insert("suffix".into(), Value::from(suffix.clone()));
    }
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), Value::from(t));
    }
    if let Some(max) = request.max_output_tokens {
        body.insert("max_tokens".into(), Value::from(max));
    }
    if let Some(min) = request.min_tokens {
        body.insert("min_tokens".into(), Value::from(min));
    }
    if !request.stop.is_empty() {
        body.insert("stop".into(), Value::from(request.stop.clone()));
    }
    if let Some(seed) = request.seed {
        body.insert("random_seed".into(), Value::from(seed));
    }
    body.insert("stream".into(), Value::from(false));
    Value::Object(body)
}

impl Codestral {
    /// Fills the gap between `prompt` and `suffix`; the middle comes back as the answer text.
    pub async fn fim(&self, request: &FimRequest) -> Result<ChatResponse, ProviderError> {
        let started = Instant::now();
        let transport = self.chat.transport();
        let (response, key) = transport
            .post_classified("/fim/completions", &fim_body(request), started, |failure| {
                classify(Flavor::Mistral, &request.model, failure)
            })
            .await?;
        transport
            .finish_answer(response, key, started, |body| {
                parse_completion(body, &request.model)
            })
            .await
    }
}

#[async_trait]
impl Provider for Codestral {
    fn name(&self) -> &str {
        NAME
    }

    fn price(&self, model: &str) -> Option<Price> {
        self.chat.price(model)
    }

    fn context_window(&self, model: &str) -> Option<u64> {
        self.chat.context_window(model)
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        self.chat.chat(request).await
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, ProviderError> {
        self.chat.chat_stream(request).await
    }
}
