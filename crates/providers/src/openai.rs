//! The OpenAI chat-completions wire format, parameterised by a [`Dialect`]: DeepSeek, Groq,
//! Mistral/Codestral, Kimi and local OpenAI-compatible servers all speak it, each with its own
//! field names, usage placement and errors.

use std::sync::Arc;

use aetherflow_domain::{Price, Usage};
use aetherflow_provider::{
    ChatRequest, ChatResponse, ChatStream, FinishReason, Provider, ProviderError, Role,
    StreamEvent, ToolCall, ToolChoice,
};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::errors::{Flavor, classify};
use crate::prices::PriceTable;
use crate::wire::{ChunkFold, Transport, fold_stream};

/// What differs between OpenAI-style providers.
#[derive(Debug, Clone)]
pub struct Dialect {
    /// Error conventions.
    pub flavor: Flavor,
    /// Path of the chat endpoint below the base URL.
    pub chat_path: &'static str,
    /// Name of the output-limit field (`max_tokens` or `max_completion_tokens`).
    pub max_tokens_field: &'static str,
    /// Name of the seed field, or `None` when the provider has none (never sent then).
    pub seed_field: Option<&'static str>,
    /// Whether to ask for usage in streams with `stream_options.include_usage` (Mistral
    /// rejects the field; DeepSeek and Kimi send usage anyway).
    pub stream_usage_option: bool,
    /// Whether earlier assistant reasoning goes back as `reasoning_content`.
    pub reasoning_field: Option<&'static str>,
    /// Whether user turns may carry images (as `image_url` parts with `data:` URLs); a request
    /// with images to a provider that reads none is refused before it is sent.
    pub images: bool,
    /// Whether `response_format` may be `json_schema`; otherwise a schema becomes
    /// `json_object` with the schema stated in the system prompt.
    pub json_schema: bool,
    /// Whether functions may carry `strict` (DeepSeek takes it only on its beta URL).
    pub strict_tools: bool,
    /// Whether `tool_choice` may be `required` (Kimi refuses it; it is sent as `auto`).
    pub tool_choice_required: bool,
    /// Whether a model missing from the price table is free (local servers) rather than
    /// unknown.
    pub free_when_unpriced: bool,
}

/// An adapter for one OpenAI-style provider.
#[derive(Debug, Clone)]
pub struct OpenAiStyle {
    name: &'static str,
    dialect: Dialect,
    transport: Arc<Transport>,
    prices: Arc<PriceTable>,
}

impl OpenAiStyle {
    /// An adapter named `name` speaking `dialect` over `transport`.
    pub fn new(
        name: &'static str,
        dialect: Dialect,
        transport: Transport,
        prices: Arc<PriceTable>,
    ) -> Self {
        OpenAiStyle {
            name,
            dialect,
            transport: Arc::new(transport),
            prices,
        }
    }

    /// The connection, for requests outside chat (Codestral's FIM).
    pub(crate) fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The request body for `request`.
    pub fn body(&self, request: &ChatRequest, stream: bool) -> Value {
        build_body(&self.dialect, request, stream)
    }

    async fn send(
        &self,
        request: &ChatRequest,
        stream: bool,
        started: Instant,
    ) -> Result<(reqwest::Response, Option<aetherflow_provider::ApiKey>), ProviderError> {
        if !self.dialect.images && request.image_count() > 0 {
            return Err(ProviderError::InvalidRequest {
                message: format!(
                    "{} reads no images; send images to a vision model (gemini, kimi, groq or an OpenAI-compatible server)",
                    self.name
                ),
            });
        }
        let body = self.body(request, stream);
        tracing::debug!(provider = self.name, model = %request.model, stream, "sending chat request");
        let flavor = self.dialect.flavor;
        self.transport
            .post_classified(self.dialect.chat_path, &body, started, |failure| {
                classify(flavor, &request.model, failure)
            })
            .await
    }
}

/// An adapter for a keyed OpenAI-style provider: `config`'s base URL (or `default_base`), its
/// key pool (required) and its price table.
pub fn keyed_adapter(
    name: &'static str,
    default_base: &str,
    dialect: Dialect,
    config: crate::config::AdapterConfig,
) -> Result<OpenAiStyle, crate::http::ConfigError> {
    let prices = config.price_table();
    let keys = config.keys.ok_or(crate::http::ConfigError::NoKey {
        provider: name.into(),
    })?;
    let transport = Transport::new(
        name,
        config.base_url.as_deref().unwrap_or(default_base),
        config.timeouts,
        Some(keys),
        crate::wire::AuthStyle::Bearer,
    )?;
    Ok(OpenAiStyle::new(name, dialect, transport, prices))
}

/// Builds the JSON body: only fields this dialect accepts, under the names it expects.
pub fn build_body(dialect: &Dialect, request: &ChatRequest, stream: bool) -> Value {
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    let schema_note = request
        .json_schema
        .as_ref()
        .filter(|_| !dialect.json_schema)
        .map(|s| {
            format!(
                "Answer with one JSON object (json) that follows this JSON Schema, named `{}`:\n{}",
                s.name, s.schema
            )
        });
    let system = match (&request.system, schema_note) {
        (Some(system), Some(note)) => Some(format!("{system}\n\n{note}")),
        (Some(system), None) => Some(system.clone()),
        (None, note) => note,
    };
    if let Some(system) = system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for m in &request.messages {
        let mut msg = Map::new();
        msg.insert(
            "role".into(),
            Value::from(match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
            }),
        );
        if m.images.is_empty() {
            // An assistant turn that only calls tools has no content (null, not "").
            if m.role == Role::Assistant && m.content.is_empty() && !m.tool_calls.is_empty() {
                msg.insert("content".into(), Value::Null);
            } else {
                msg.insert("content".into(), Value::from(m.content.clone()));
            }
        } else {
            let mut parts: Vec<Value> = m
                .images
                .iter()
                .map(|i| json!({"type": "image_url", "image_url": {"url": i.data_url()}}))
                .collect();
            parts.push(json!({"type": "text", "text": m.content}));
            msg.insert("content".into(), Value::Array(parts));
        }
        if !m.tool_calls.is_empty() {
            let calls: Vec<Value> = m
                .tool_calls
                .iter()
                .map(|c| {
                    json!({"id": c.id, "type": "function",
                           "function": {"name": c.name, "arguments": c.arguments}})
                })
                .collect();
            msg.insert("tool_calls".into(), Value::Array(calls));
        }
        if let (Role::Tool, Some(id)) = (m.role, &m.tool_call_id) {
            msg.insert("tool_call_id".into(), Value::from(id.clone()));
        }
        if let (Role::Assistant, Some(field), Some(reasoning)) =
            (m.role, dialect.reasoning_field, &m.reasoning)
        {
            msg.insert(field.into(), Value::from(reasoning.clone()));
        }
        messages.push(Value::Object(msg));
    }
    let mut body = Map::new();
    body.insert("model".into(), Value::from(request.model.clone()));
    body.insert("messages".into(), Value::Array(messages));
    if let Some(max) = request.max_output_tokens {
        body.insert(dialect.max_tokens_field.into(), Value::from(max));
    }
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), Value::from(t));
    }
    if let Some(p) = request.top_p {
        body.insert("top_p".into(), Value::from(p));
    }
    if !request.stop.is_empty() {
        body.insert("stop".into(), Value::from(request.stop.clone()));
    }
    if let (Some(seed), Some(field)) = (request.seed, dialect.seed_field) {
        body.insert(field.into(), Value::from(seed));
    }
    match &request.json_schema {
        Some(schema) if dialect.json_schema => {
            let mut spec = json!({"name": schema.name, "schema": schema.schema});
            if let Some(strict) = schema.strict {
                spec["strict"] = Value::from(strict);
            }
            body.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": spec}),
            );
        }
        Some(_) => {
            body.insert("response_format".into(), json!({"type": "json_object"}));
        }
        None if request.json_mode => {
            body.insert("response_format".into(), json!({"type": "json_object"}));
        }
        None => {}
    }
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                let mut function = Map::new();
                function.insert("name".into(), Value::from(t.name.clone()));
                if let Some(d) = &t.description {
                    function.insert("description".into(), Value::from(d.clone()));
                }
                function.insert(
                    "parameters".into(),
                    t.parameters
                        .clone()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                );
                if let (true, Some(strict)) = (dialect.strict_tools, t.strict) {
                    function.insert("strict".into(), Value::from(strict));
                }
                json!({"type": "function", "function": function})
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = &request.tool_choice {
            let value = match choice {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::None => json!("none"),
                ToolChoice::Required if dialect.tool_choice_required => json!("required"),
                ToolChoice::Required => json!("auto"),
                ToolChoice::Function(name) => {
                    json!({"type": "function", "function": {"name": name}})
                }
            };
            body.insert("tool_choice".into(), value);
        }
    }
    body.insert("stream".into(), Value::from(stream));
    if stream && dialect.stream_usage_option {
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Value::Object(body)
}

#[derive(Debug, Default, Deserialize)]
struct Completion {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    x_groq: Option<XGroq>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct XGroq {
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<WireMessage>,
    #[serde(default)]
    delta: Option<WireMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
    /// Kimi puts stream usage inside the choice.
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Default, Deserialize)]
struct WireToolCall {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunction>,
}

#[derive(Debug, Default, Deserialize)]
struct WireFunction {
    #[serde(default)]
    name: Option<String>,
    /// A JSON string by the spec; some servers send an object.
    #[serde(default)]
    arguments: Option<Value>,
}

fn arguments_text(arguments: Option<Value>) -> String {
    match arguments {
        Some(Value::String(s)) => s,
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct WireMessage {
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    /// Groq's parsed reasoning.
    #[serde(default)]
    reasoning: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
    #[serde(default)]
    completion_tokens_details: Option<Details>,
    /// DeepSeek.
    #[serde(default)]
    prompt_cache_hit_tokens: Option<u64>,
    /// Kimi.
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl WireUsage {
    fn normalise(&self) -> Usage {
        let cached = [
            self.prompt_cache_hit_tokens,
            self.prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens),
            self.cached_tokens,
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0);
        Usage {
            input_tokens: self.prompt_tokens,
            cached_input_tokens: cached.min(self.prompt_tokens),
            output_tokens: self.completion_tokens,
            reasoning_tokens: self
                .completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

/// Maps a wire finish reason (spec §6); unknown values are kept raw.
pub fn finish_reason(raw: &str) -> FinishReason {
    match raw {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::MaxTokens,
        "model_length" => FinishReason::ContextLimit,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        "insufficient_system_resource" | "error" => FinishReason::ProviderError,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// A finish that means the answer is unusable becomes the matching error, so fallbacks act on it.
pub fn finish_error(reason: &FinishReason, raw: &str) -> Option<ProviderError> {
    match reason {
        FinishReason::ProviderError => Some(ProviderError::Server {
            status: None,
            message: format!("the provider stopped generating (`{raw}`); try again"),
        }),
        FinishReason::ContentFilter => Some(ProviderError::ContentFiltered {
            message: format!("the answer was stopped by the provider's content filter (`{raw}`)"),
        }),
        _ => None,
    }
}

/// Parses a non-streaming body (leading keep-alive blank lines are JSON whitespace).
pub fn parse_completion(body: &[u8], requested_model: &str) -> Result<ChatResponse, ProviderError> {
    let completion: Completion =
        serde_json::from_slice(body).map_err(|e| ProviderError::Decode {
            message: format!("chat completion: {e}"),
        })?;
    if let Some(error) = completion.error {
        return Err(ProviderError::Server {
            status: None,
            message: error.to_string(),
        });
    }
    let choice = completion
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| ProviderError::Decode {
            message: "the answer has no choices".into(),
        })?;
    let raw_finish = choice.finish_reason.unwrap_or_else(|| "stop".into());
    let finish = finish_reason(&raw_finish);
    if let Some(error) = finish_error(&finish, &raw_finish) {
        return Err(error);
    }
    let message = choice.message.unwrap_or_default();
    let usage = completion
        .usage
        .or(choice.usage)
        .or(completion.x_groq.and_then(|x| x.usage))
        .map(|u| u.normalise())
        .unwrap_or_default();
    Ok(ChatResponse {
        key_id: None,
        model: completion
            .model
            .unwrap_or_else(|| requested_model.to_owned()),
        text: message.content.unwrap_or_default(),
        reasoning: message.reasoning_content.or(message.reasoning),
        finish_reason: finish,
        usage,
        tool_calls: message
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let function = c.function.unwrap_or_default();
                ToolCall {
                    id: c.id.unwrap_or_else(|| format!("call_{i}")),
                    name: function.name.unwrap_or_default(),
                    arguments: arguments_text(function.arguments),
                }
            })
            .collect(),
    })
}

/// State while folding stream chunks into events.
#[derive(Debug, Default)]
pub struct ChunkFolder {
    usage: Option<Usage>,
    finish: Option<(FinishReason, String)>,
}

impl ChunkFold for ChunkFolder {
    /// The events one `data:` payload yields (`[DONE]` yields none).
    fn push(&mut self, data: &str) -> Result<Vec<StreamEvent>, ProviderError> {
        if data.trim() == "[DONE]" {
            return Ok(Vec::new());
        }
        let chunk: Completion = serde_json::from_str(data).map_err(|e| ProviderError::Decode {
            message: format!("stream chunk: {e}"),
        })?;
        if let Some(error) = chunk.error {
            return Err(ProviderError::Server {
                status: None,
                message: format!("the stream reported an error: {error}"),
            });
        }
        let mut events = Vec::new();
        if let Some(x) = chunk.x_groq {
            if let Some(error) = x.error {
                return Err(ProviderError::Server {
                    status: None,
                    message: format!("the stream stopped early: {error}"),
                });
            }
            if let Some(u) = x.usage {
                self.usage = Some(u.normalise());
            }
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(u.normalise());
        }
        for choice in chunk.choices {
            if let Some(u) = &choice.usage {
                self.usage = Some(u.normalise());
            }
            if let Some(delta) = choice.delta {
                if let Some(r) = delta
                    .reasoning_content
                    .or(delta.reasoning)
                    .filter(|r| !r.is_empty())
                {
                    events.push(StreamEvent::Reasoning(r));
                }
                if let Some(t) = delta.content.filter(|t| !t.is_empty()) {
                    events.push(StreamEvent::Text(t));
                }
                for (i, call) in delta.tool_calls.unwrap_or_default().into_iter().enumerate() {
                    let function = call.function.unwrap_or_default();
                    events.push(StreamEvent::ToolCall {
                        index: call.index.unwrap_or(i as u32),
                        id: call.id,
                        name: function.name,
                        arguments: arguments_text(function.arguments),
                    });
                }
            }
            if let Some(raw) = choice.finish_reason {
                self.finish = Some((finish_reason(&raw), raw));
            }
        }
        Ok(events)
    }

    /// The closing events once the stream ended: usage once, then the finish reason.
    fn finish(self) -> Result<Vec<StreamEvent>, ProviderError> {
        let Some((finish, raw)) = self.finish else {
            return Err(ProviderError::Decode {
                message: "the stream ended without a finish reason".into(),
            });
        };
        if let Some(error) = finish_error(&finish, &raw) {
            return Err(error);
        }
        let mut events = Vec::with_capacity(2);
        if let Some(u) = self.usage {
            events.push(StreamEvent::Usage(u));
        }
        events.push(StreamEvent::Finish(finish));
        Ok(events)
    }
}

#[async_trait]
impl Provider for OpenAiStyle {
    fn name(&self) -> &str {
        self.name
    }

    fn price(&self, model: &str) -> Option<Price> {
        self.prices
            .price(self.name, model)
            .or(self.dialect.free_when_unpriced.then_some(Price::FREE))
    }

    fn context_window(&self, model: &str) -> Option<u64> {
        self.prices.window(self.name, model)
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let started = Instant::now();
        let (response, key) = self.send(request, false, started).await?;
        self.transport
            .finish_answer(response, key, started, |body| {
                parse_completion(body, &request.model)
            })
            .await
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, ProviderError> {
        let started = Instant::now();
        let (response, key) = self.send(request, true, started).await?;
        Ok(fold_stream(
            Arc::clone(&self.transport),
            response,
            key,
            started,
            ChunkFolder::default(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_normalised_from_every_placement() {
        let ds = r#"{"choices":[{"message":{"content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":27,"completion_tokens":9,"total_tokens":36,"prompt_cache_hit_tokens":20,"prompt_cache_miss_tokens":7,"completion_tokens_details":{"reasoning_tokens":7}}}"#;
        let r = parse_completion(ds.as_bytes(), "m").expect("parses");
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 27,
                cached_input_tokens: 20,
                output_tokens: 9,
                reasoning_tokens: 7
            }
        );
        let kimi = r#"{"choices":[{"message":{"content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":30,"completion_tokens":7,"cached_tokens":12,"prompt_tokens_details":{"cached_tokens":0}}}"#;
        assert_eq!(
            parse_completion(kimi.as_bytes(), "m")
                .expect("parses")
                .usage
                .cached_input_tokens,
            12
        );
    }

    #[test]
    fn unknown_finish_reasons_are_kept_raw() {
        let body = r#"{"choices":[{"message":{"content":"x"},"finish_reason":"brand_new"}]}"#;
        let r = parse_completion(body.as_bytes(), "m").expect("parses");
        assert_eq!(r.finish_reason, FinishReason::Other("brand_new".into()));
        assert_eq!(r.model, "m");
    }

    #[test]
    fn malformed_bodies_are_decode_errors_not_panics() {
        for body in ["", "{", "[]", r#"{"choices":[]}"#, r#"{"choices":"x"}"#] {
            let err = parse_completion(body.as_bytes(), "m").expect_err(body);
            assert_eq!(err.kind(), "decode", "{body}");
        }
    }
}
