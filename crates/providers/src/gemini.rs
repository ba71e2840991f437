//! Google Gemini (Generative Language API): `:generateContent` and
//! `:streamGenerateContent?alt=sse`, the key in the `x-goog-api-key` header (never in the URL),
//! `systemInstruction`, CRLF-framed SSE without `[DONE]`, cumulative usage counted once,
//! thoughts excluded from the text but billed as output, and HTTP-200 safety blocks.

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

use crate::config::AdapterConfig;
use crate::errors::{Flavor, classify};
use crate::http::ConfigError;
use crate::prices::PriceTable;
use crate::wire::{AuthStyle, ChunkFold, Transport, fold_stream};

/// The provider name.
pub const NAME: &str = "gemini";
/// The public API, version `v1beta`.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";
/// The model used when none is configured.
pub const DEFAULT_MODEL: &str = "gemini-2.5-flash";

/// The Gemini adapter.
#[derive(Debug, Clone)]
pub struct Gemini {
    transport: Arc<Transport>,
    prices: Arc<PriceTable>,
}

/// A Gemini adapter.
pub fn adapter(config: AdapterConfig) -> Result<Gemini, ConfigError> {
    let prices = config.price_table();
    let transport = Transport::new(
        NAME,
        config.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL),
        config.timeouts,
        Some(config.keys.ok_or(ConfigError::NoKey {
            provider: NAME.into(),
        })?),
        AuthStyle::GoogApiKey,
    )?;
    Ok(Gemini {
        transport: Arc::new(transport),
        prices,
    })
}

/// The model as a URL path segment; anything that could change the path is refused.
fn model_path(model: &str) -> Result<String, ProviderError> {
    let name = model.strip_prefix("models/").unwrap_or(model);
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(ProviderError::InvalidRequest {
            message: format!("`{model}` is not a Gemini model name"),
        });
    }
    Ok(format!("/models/{name}"))
}

/// The `GenerateContentRequest` body.
pub fn body(request: &ChatRequest) -> Value {
    let mut contents: Vec<Value> = Vec::with_capacity(request.messages.len());
    for (i, m) in request.messages.iter().enumerate() {
        match m.role {
            Role::User | Role::Assistant => {
                let mut parts: Vec<Value> = m
                    .images
                    .iter()
                    .map(|i| json!({"inlineData": {"mimeType": i.mime_type, "data": i.base64}}))
                    .collect();
                if !m.content.is_empty() || (m.tool_calls.is_empty() && parts.is_empty()) {
                    parts.push(json!({"text": m.content}));
                }
                for call in &m.tool_calls {
                    let mut part = json!({"functionCall": {"name": call.name, "args": arguments_object(&call.arguments)}});
                    if let Some(sig) = signature_of(&call.id) {
                        part["thoughtSignature"] = json!(sig);
                    }
                    parts.push(part);
                }
                let role = if m.role == Role::User {
                    "user"
                } else {
                    "model"
                };
                contents.push(json!({"role": role, "parts": parts}));
            }
            // Tool results go back in a user turn as functionResponse parts; consecutive results
            // share one turn, answering the calls of the model turn before them.
            Role::Tool => {
                let name = m
                    .name
                    .clone()
                    .or_else(|| called_name(&request.messages[..i], m.tool_call_id.as_deref()))
                    .unwrap_or_else(|| "tool".to_owned());
                let response = match serde_json::from_str::<Value>(&m.content) {
                    Ok(Value::Object(o)) => Value::Object(o),
                    Ok(other) => json!({"content": other}),
                    Err(_) => json!({"content": m.content}),
                };
                let part = json!({"functionResponse": {"name": name, "response": response}});
                let previous_is_results = i > 0 && request.messages[i - 1].role == Role::Tool;
                match contents.last_mut() {
                    Some(last) if previous_is_results => {
                        if let Some(parts) = last["parts"].as_array_mut() {
                            parts.push(part);
                        }
                    }
                    _ => contents.push(json!({"role": "user", "parts": [part]})),
                }
            }
        }
    }
    let mut body = Map::new();
    if let Some(system) = &request.system {
        body.insert(
            "systemInstruction".into(),
            json!({"parts": [{"text": system}]}),
        );
    }
    body.insert("contents".into(), Value::Array(contents));
    if !request.tools.is_empty() {
        let declarations: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                let mut d = Map::new();
                d.insert("name".into(), Value::from(t.name.clone()));
                if let Some(desc) = &t.description {
                    d.insert("description".into(), Value::from(desc.clone()));
                }
                if let Some(p) = &t.parameters {
                    d.insert("parameters".into(), gemini_schema(p));
                }
                Value::Object(d)
            })
            .collect();
        body.insert(
            "tools".into(),
            json!([{"functionDeclarations": declarations}]),
        );
        if let Some(choice) = &request.tool_choice {
            let config = match choice {
                ToolChoice::Auto => json!({"mode": "AUTO"}),
                ToolChoice::None => json!({"mode": "NONE"}),
                ToolChoice::Required => json!({"mode": "ANY"}),
                ToolChoice::Function(name) => {
                    json!({"mode": "ANY", "allowedFunctionNames": [name]})
                }
            };
            body.insert(
                "toolConfig".into(),
                json!({"functionCallingConfig": config}),
            );
        }
    }
    let mut config = Map::new();
    if let Some(t) = request.temperature {
        config.insert("temperature".into(), Value::from(t));
    }
    if let Some(p) = request.top_p {
        config.insert("topP".into(), Value::from(p));
    }
    if let Some(max) = request.max_output_tokens {
        config.insert("maxOutputTokens".into(), Value::from(max));
    }
    if !request.stop.is_empty() {
        config.insert("stopSequences".into(), Value::from(request.stop.clone()));
    }
    if let Some(seed) = request.seed {
        config.insert("seed".into(), Value::from(seed));
    }
    if request.json_mode || request.json_schema.is_some() {
        config.insert("responseMimeType".into(), Value::from("application/json"));
    }
    if let Some(schema) = &request.json_schema {
        config.insert("responseJsonSchema".into(), schema.schema.clone());
    }
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    Value::Object(body)
}

/// A call's arguments as the object Gemini wants (`{}` when they are not a JSON object).
fn arguments_object(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(o)) => Value::Object(o),
        _ => json!({}),
    }
}

/// The name of the function an earlier model turn called with `id`.
fn called_name(earlier: &[aetherflow_provider::Message], id: Option<&str>) -> Option<String> {
    let id = id?;
    earlier
        .iter()
        .rev()
        .flat_map(|m| m.tool_calls.iter())
        .find(|c| c.id == id)
        .map(|c| c.name.clone())
}

/// A JSON Schema reduced to the OpenAPI subset `functionDeclarations.parameters` accepts:
/// unknown keywords (`additionalProperties`, `$schema`, `strict`, …) are dropped, and a type
/// list with `null` becomes `nullable`.
pub fn gemini_schema(schema: &Value) -> Value {
    const KEEP: &[&str] = &[
        "type",
        "format",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "minimum",
        "maximum",
        "title",
        "default",
        "required",
        "propertyOrdering",
    ];
    let Value::Object(o) = schema else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (k, v) in o {
        match k.as_str() {
            "properties" => {
                if let Value::Object(props) = v {
                    let props: Map<String, Value> = props
                        .iter()
                        .map(|(name, s)| (name.clone(), gemini_schema(s)))
                        .collect();
                    out.insert(k.clone(), Value::Object(props));
                }
            }
            "items" => {
                out.insert(k.clone(), gemini_schema(v));
            }
            "anyOf" => {
                if let Value::Array(a) = v {
                    out.insert(
                        k.clone(),
                        Value::Array(a.iter().map(gemini_schema).collect()),
                    );
                }
            }
            "type" => {
                if let Value::Array(types) = v {
                    let non_null: Vec<&Value> = types.iter().filter(|t| *t != "null").collect();
                    if non_null.len() < types.len() {
                        out.insert("nullable".into(), Value::Bool(true));
                    }
                    if let Some(first) = non_null.first() {
                        out.insert("type".into(), (*first).clone());
                    }
                } else {
                    out.insert(k.clone(), v.clone());
                }
            }
            _ if KEEP.contains(&k.as_str()) => {
                out.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
    Value::Object(out)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default, alias = "prompt_feedback")]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default, alias = "usage_metadata")]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default, alias = "model_version")]
    model_version: Option<String>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default, alias = "block_reason")]
    block_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default, alias = "finish_reason")]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: bool,
    #[serde(default, alias = "function_call")]
    function_call: Option<Value>,
    #[serde(default, alias = "thought_signature")]
    thought_signature: Option<String>,
}

/// Joins a tool call's id and the `thoughtSignature` Gemini gave with it. Gemini 3 needs the
/// signature back, unchanged, with the call in the next request; OpenAI-style clients only echo
/// the call's id, so the signature rides inside it and no state is kept between requests.
const SIGNATURE_MARK: &str = "~ts~";

fn id_with_signature(id: String, signature: Option<String>) -> String {
    match signature {
        Some(sig) if !sig.is_empty() => format!("{id}{SIGNATURE_MARK}{sig}"),
        _ => id,
    }
}

/// The signature carried in a tool call's id, if any.
fn signature_of(id: &str) -> Option<&str> {
    id.split_once(SIGNATURE_MARK)
        .map(|(_, sig)| sig)
        .filter(|s| !s.is_empty())
}

#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default, alias = "prompt_token_count")]
    prompt_token_count: u64,
    #[serde(default, alias = "candidates_token_count")]
    candidates_token_count: u64,
    #[serde(default, alias = "thoughts_token_count")]
    thoughts_token_count: u64,
    #[serde(default, alias = "cached_content_token_count")]
    cached_content_token_count: u64,
}

impl UsageMetadata {
    fn normalise(self) -> Usage {
        Usage {
            input_tokens: self.prompt_token_count,
            cached_input_tokens: self.cached_content_token_count.min(self.prompt_token_count),
            // Thoughts are billed as output but not counted in candidates.
            output_tokens: self.candidates_token_count + self.thoughts_token_count,
            reasoning_tokens: self.thoughts_token_count,
        }
    }
}

/// Maps Gemini's `finishReason` (spec §6).
pub fn finish_reason(raw: &str) -> FinishReason {
    match raw {
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::MaxTokens,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => FinishReason::ContentFilter,
        "OTHER" | "MALFORMED_FUNCTION_CALL" | "UNEXPECTED_TOOL_CALL" | "TOO_MANY_TOOL_CALLS" => {
            FinishReason::ProviderError
        }
        other => FinishReason::Other(other.to_owned()),
    }
}

fn decode(data: &[u8]) -> Result<Response, ProviderError> {
    serde_json::from_slice(data).map_err(|e| ProviderError::Decode {
        message: format!("Gemini response: {e}"),
    })
}

fn check(response: &Response) -> Result<(), ProviderError> {
    if let Some(error) = &response.error {
        return Err(ProviderError::Server {
            status: error.get("code").and_then(Value::as_u64).map(|c| c as u16),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the stream reported an error")
                .to_owned(),
        });
    }
    if let Some(reason) = response
        .prompt_feedback
        .as_ref()
        .and_then(|f| f.block_reason.as_deref())
    {
        return Err(ProviderError::ContentFiltered {
            message: format!("Gemini blocked the prompt (blockReason {reason})"),
        });
    }
    Ok(())
}

fn finish_error(finish: &FinishReason, raw: &str) -> Option<ProviderError> {
    match finish {
        FinishReason::ContentFilter => Some(ProviderError::ContentFiltered {
            message: format!("Gemini stopped the answer (finishReason {raw})"),
        }),
        FinishReason::ProviderError => Some(ProviderError::Server {
            status: None,
            message: format!("Gemini could not finish the answer (finishReason {raw})"),
        }),
        _ => None,
    }
}

/// A function call in an answer: its id (when Gemini gave one), name, arguments (JSON text) and
/// thought signature (when Gemini gave one).
type Called = (Option<String>, String, String, Option<String>);

/// Text and reasoning of a candidate's parts, and the functions it called.
fn split_parts(parts: Vec<Part>) -> (String, String, Vec<Called>) {
    let mut text = String::new();
    let mut thoughts = String::new();
    let mut called = Vec::new();
    for p in parts {
        if let Some(call) = p.function_call {
            called.push((
                call.get("id").and_then(Value::as_str).map(str::to_owned),
                call.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                call.get("args")
                    .map_or_else(|| "{}".to_owned(), Value::to_string),
                p.thought_signature.clone(),
            ));
        }
        if let Some(t) = p.text {
            if p.thought {
                thoughts.push_str(&t);
            } else {
                text.push_str(&t);
            }
        }
    }
    (text, thoughts, called)
}

/// Parses a non-streaming `GenerateContentResponse`.
pub fn parse_response(data: &[u8], requested_model: &str) -> Result<ChatResponse, ProviderError> {
    let response = decode(data)?;
    check(&response)?;
    let usage = response
        .usage_metadata
        .map(UsageMetadata::normalise)
        .unwrap_or_default();
    let candidate =
        response
            .candidates
            .into_iter()
            .next()
            .ok_or_else(|| ProviderError::Decode {
                message: "the answer has no candidates".into(),
            })?;
    let raw = candidate.finish_reason.unwrap_or_else(|| "STOP".into());
    let mut finish = finish_reason(&raw);
    if let Some(e) = finish_error(&finish, &raw) {
        return Err(e);
    }
    let (text, thoughts, called) =
        split_parts(candidate.content.map(|c| c.parts).unwrap_or_default());
    if !called.is_empty() && finish == FinishReason::Stop {
        finish = FinishReason::ToolCalls;
    }
    Ok(ChatResponse {
        key_id: None,
        model: response
            .model_version
            .unwrap_or_else(|| requested_model.to_owned()),
        text,
        reasoning: (!thoughts.is_empty()).then_some(thoughts),
        finish_reason: finish,
        usage,
        tool_calls: called
            .into_iter()
            .enumerate()
            .map(|(i, (id, name, arguments, signature))| ToolCall {
                id: id_with_signature(id.unwrap_or_else(|| format!("call_{i}")), signature),
                name,
                arguments,
            })
            .collect(),
    })
}

/// Folds streamed chunks: deltas out, usage kept from the last chunk (it is cumulative).
#[derive(Debug, Default)]
pub struct ChunkFolder {
    usage: Option<Usage>,
    finish: Option<(FinishReason, String)>,
    called: bool,
    calls: u32,
}

impl ChunkFold for ChunkFolder {
    /// The events of one `data:` payload.
    fn push(&mut self, data: &str) -> Result<Vec<StreamEvent>, ProviderError> {
        let response = decode(data.as_bytes())?;
        check(&response)?;
        if let Some(u) = response.usage_metadata {
            self.usage = Some(u.normalise());
        }
        let mut events = Vec::new();
        if let Some(candidate) = response.candidates.into_iter().next() {
            let (text, thoughts, called) =
                split_parts(candidate.content.map(|c| c.parts).unwrap_or_default());
            self.called |= !called.is_empty();
            if !thoughts.is_empty() {
                events.push(StreamEvent::Reasoning(thoughts));
            }
            if !text.is_empty() {
                events.push(StreamEvent::Text(text));
            }
            // Gemini sends each call whole, in one chunk.
            for (id, name, arguments, signature) in called {
                let index = self.calls;
                self.calls += 1;
                events.push(StreamEvent::ToolCall {
                    index,
                    id: Some(id_with_signature(
                        id.unwrap_or_else(|| format!("call_{index}")),
                        signature,
                    )),
                    name: Some(name),
                    arguments,
                });
            }
            if let Some(raw) = candidate.finish_reason {
                self.finish = Some((finish_reason(&raw), raw));
            }
        }
        Ok(events)
    }

    /// Usage once, then the finish reason; the stream has no `[DONE]`, so a missing finish
    /// reason means the connection closed early.
    fn finish(self) -> Result<Vec<StreamEvent>, ProviderError> {
        let Some((mut finish, raw)) = self.finish else {
            return Err(ProviderError::Transport {
                message: "the Gemini stream closed before a finish reason".into(),
            });
        };
        if let Some(e) = finish_error(&finish, &raw) {
            return Err(e);
        }
        if self.called && finish == FinishReason::Stop {
            finish = FinishReason::ToolCalls;
        }
        let mut events = Vec::with_capacity(2);
        if let Some(u) = self.usage {
            events.push(StreamEvent::Usage(u));
        }
        events.push(StreamEvent::Finish(finish));
        Ok(events)
    }
}

impl Gemini {
    async fn send(
        &self,
        request: &ChatRequest,
        path: String,
        started: Instant,
    ) -> Result<(reqwest::Response, Option<aetherflow_provider::ApiKey>), ProviderError> {
        self.transport
            .post_classified(&path, &body(request), started, |failure| {
                classify(Flavor::Gemini, &request.model, failure)
            })
            .await
    }
}

#[async_trait]
impl Provider for Gemini {
    fn name(&self) -> &str {
        NAME
    }

    fn price(&self, model: &str) -> Option<Price> {
        self.prices.price(NAME, model)
    }

    fn context_window(&self, model: &str) -> Option<u64> {
        self.prices.window(NAME, model)
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let started = Instant::now();
        let path = format!("{}:generateContent", model_path(&request.model)?);
        let (response, key) = self.send(request, path, started).await?;
        self.transport
            .finish_answer(response, key, started, |data| {
                parse_response(data, &request.model)
            })
            .await
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, ProviderError> {
        let started = Instant::now();
        let path = format!(
            "{}:streamGenerateContent?alt=sse",
            model_path(&request.model)?
        );
        let (response, key) = self.send(request, path, started).await?;
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
    fn model_names_cannot_change_the_path() {
        assert_eq!(
            model_path("gemini-2.5-flash").ok().as_deref(),
            Some("/models/gemini-2.5-flash")
        );
        assert_eq!(
            model_path("models/gemini-2.5-pro").ok().as_deref(),
            Some("/models/gemini-2.5-pro")
        );
        for bad in ["", "../x", "a/b", "m?key=1", "m:streamGenerateContent"] {
            assert!(model_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn thoughts_are_reasoning_and_billed_as_output() {
        let data = br#"{"candidates":[{"content":{"parts":[{"text":"hmm","thought":true},{"text":"Tokyo"}],"role":"model"},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":11,"candidatesTokenCount":2,"thoughtsTokenCount":24,"totalTokenCount":37},"modelVersion":"gemini-2.5-flash"}"#;
        let r = parse_response(data, "gemini-2.5-flash").expect("parses");
        assert_eq!(r.text, "Tokyo");
        assert_eq!(r.reasoning.as_deref(), Some("hmm"));
        assert_eq!(r.usage.output_tokens, 26);
        assert_eq!(r.usage.reasoning_tokens, 24);
    }

    #[test]
    fn a_thought_signature_rides_in_the_call_id_and_goes_back_unchanged() {
        let data = br#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"CiQB+sig/with=base64"}],"role":"model"},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":3}}"#;
        let r = parse_response(data, "gemini-3-pro-preview").expect("parses");
        let call = &r.tool_calls[0];
        assert_eq!(call.name, "get_weather");
        assert_eq!(signature_of(&call.id), Some("CiQB+sig/with=base64"));
        // The client echoes the call (id included) with the tool's result.
        let request = ChatRequest {
            messages: vec![
                aetherflow_provider::Message::user("weather?"),
                aetherflow_provider::Message {
                    tool_calls: vec![call.clone()],
                    ..aetherflow_provider::Message::assistant("")
                },
                aetherflow_provider::Message {
                    role: aetherflow_provider::Role::Tool,
                    tool_call_id: Some(call.id.clone()),
                    ..aetherflow_provider::Message::user("21 C")
                },
            ],
            ..ChatRequest::default()
        };
        let body = body(&request);
        let model_turn = &body["contents"][1];
        assert_eq!(model_turn["role"], "model");
        let part = model_turn["parts"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p.get("functionCall").is_some()))
            .expect("the call goes back");
        assert_eq!(part["thoughtSignature"], "CiQB+sig/with=base64");
        assert_eq!(part["functionCall"]["name"], "get_weather");
        // The result is matched to the call by name, whatever the id carries.
        assert_eq!(
            body["contents"][2]["parts"][0]["functionResponse"]["name"],
            "get_weather"
        );
        // Calls without a signature keep plain ids and send none.
        let plain = br#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{}}}],"role":"model"},"finishReason":"STOP"}]}"#;
        let r = parse_response(plain, "gemini-2.5-flash").expect("parses");
        assert_eq!(r.tool_calls[0].id, "call_0");
    }

    #[test]
    fn snake_case_responses_are_read_too() {
        let data = br#"{"candidates":[{"content":{"parts":[{"text":"ok"}]},"finish_reason":"STOP"}],"usage_metadata":{"prompt_token_count":3,"candidates_token_count":1}}"#;
        let r = parse_response(data, "m").expect("parses");
        assert_eq!(r.usage.input_tokens, 3);
        assert_eq!(r.finish_reason, FinishReason::Stop);
    }
}
