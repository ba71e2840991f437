//! Normalised request, response and streaming types shared by every adapter.

use std::fmt;
use std::pin::Pin;

use aetherflow_domain::Usage;
use futures::{Stream, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::error::ProviderError;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The person (or orchestrator) asking.
    User,
    /// The model's earlier answers (and the tools it called).
    Assistant,
    /// A tool's result, answering one of the model's calls.
    Tool,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
    /// The model's reasoning on an earlier assistant turn, passed back where a provider needs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// Images that go with a user turn (vision), sent before its text. Providers that read no
    /// images refuse such a request before any call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
    /// The functions an assistant turn called.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// On a tool turn: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// On a tool turn: the function's name, when the client gave it (Gemini needs it; it is
    /// otherwise found from the call's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A function the model called.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id (the provider's, or one AetherFlow made for providers without ids).
    pub id: String,
    /// The function's name.
    pub name: String,
    /// Its arguments: a JSON object, as text.
    pub arguments: String,
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its parameters, as a JSON Schema object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
    /// Whether the arguments must follow the schema exactly, where the provider can enforce it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// Whether and which tools the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool.
    None,
    /// At least one tool.
    Required,
    /// This function.
    Function(String),
}

/// An answer that must be JSON following a schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSchema {
    /// The schema's name.
    pub name: String,
    /// The JSON Schema.
    pub schema: serde_json::Value,
    /// Whether the provider must follow it exactly, where it can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// An image in a request.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Its media type, e.g. `image/png` or `image/jpeg`.
    pub mime_type: String,
    /// Its bytes, base64-encoded (standard alphabet, padded), as every wire format carries them.
    pub base64: String,
}

impl Image {
    /// Prompt tokens one image is estimated at before a call (window checks): Gemini counts 258
    /// per 768-pixel tile and OpenAI-style vision models 85 plus 170 per 512-pixel tile, so about
    /// a thousand covers a typical screenshot.
    pub const ESTIMATED_TOKENS: u64 = 1_100;
    /// Prompt tokens budget reservations allow per image: more than any listed provider bills
    /// for an image of up to 4096 × 4096 pixels (Gemini: 36 tiles × 258; OpenAI-style: 85 +
    /// 64 × 170 at most), so a reservation is never smaller than the bill.
    pub const RESERVED_TOKENS: u64 = 12_000;

    /// An image of `mime_type` from its raw bytes.
    pub fn from_bytes(mime_type: impl Into<String>, bytes: &[u8]) -> Self {
        use base64::Engine as _;
        Image {
            mime_type: mime_type.into(),
            base64: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// The image as a `data:` URL (OpenAI-style `image_url` parts).
    pub fn data_url(&self) -> String {
        format!("data:{};base64,{}", self.mime_type, self.base64)
    }
}

impl fmt::Debug for Image {
    // Megabytes of base64 have no place in logs or panics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("mime_type", &self.mime_type)
            .field("base64_len", &self.base64.len())
            .finish()
    }
}

impl Message {
    /// A user turn.
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: content.into(),
            reasoning: None,
            images: Vec::new(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }

    /// A user turn showing `images` before its text.
    pub fn user_with_images(content: impl Into<String>, images: Vec<Image>) -> Self {
        Message {
            images,
            ..Message::user(content)
        }
    }

    /// An assistant turn.
    pub fn assistant(content: impl Into<String>) -> Self {
        Message {
            role: Role::Assistant,
            content: content.into(),
            reasoning: None,
            images: Vec::new(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }
}

/// What the orchestrator knows about the step a request serves. Adapters ignore it except for
/// tracing; the offline mock uses it to answer in the right shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepHint {
    /// The step's id.
    pub step_id: String,
    /// The step's type name (`code_generation`, `analysis`, …).
    pub step_type: String,
    /// The step's description, first line only.
    pub summary: String,
    /// Files the answer must contain, one fenced block each.
    pub files: Vec<String>,
    /// The output language, when the plan gave one.
    pub language: Option<String>,
}

/// A chat completion request in one shape for every provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The provider's model name (`deepseek-chat`, `gemini-2.5-flash`, …).
    pub model: String,
    /// The system instruction, sent the way each provider expects it.
    pub system: Option<String>,
    /// The conversation, oldest first.
    pub messages: Vec<Message>,
    /// Upper bound on generated tokens.
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Sequences that end the answer.
    pub stop: Vec<String>,
    /// Ask for a JSON object as the whole answer.
    pub json_mode: bool,
    /// Sampling seed, where the provider supports one.
    pub seed: Option<u64>,
    /// The step this request serves, if any.
    pub step: Option<StepHint>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Functions the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    /// Whether and which tools it must call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// The answer must be JSON following this schema (implies `json_mode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<JsonSchema>,
}

impl ChatRequest {
    /// How many images the request carries.
    pub fn image_count(&self) -> usize {
        self.messages.iter().map(|m| m.images.len()).sum()
    }

    /// A bound on the prompt's tokens that no tokenizer can exceed: one per byte of text (no
    /// token is shorter than a byte) plus [`Image::RESERVED_TOKENS`] per image. Budget
    /// reservations use it, so spend never passes a cap because of an estimate.
    pub fn prompt_token_bound(&self) -> u64 {
        let text = self.system.as_deref().map_or(0, str::len)
            + self
                .messages
                .iter()
                .map(|m| {
                    m.content.len()
                        + m.tool_calls
                            .iter()
                            .map(|c| c.name.len() + c.arguments.len())
                            .sum::<usize>()
                })
                .sum::<usize>()
            + self.schema_text_len();
        text as u64 + self.image_count() as u64 * Image::RESERVED_TOKENS
    }

    /// Bytes of the tool declarations and the answer schema, which providers put in the prompt.
    pub fn schema_text_len(&self) -> usize {
        let tools: usize = self
            .tools
            .iter()
            .map(|t| {
                t.name.len()
                    + t.description.as_deref().map_or(0, str::len)
                    + t.parameters.as_ref().map_or(0, |p| p.to_string().len())
            })
            .sum();
        tools
            + self
                .json_schema
                .as_ref()
                .map_or(0, |s| s.schema.to_string().len())
    }
}

/// Why the model stopped, normalised (see the providers spec, section 6).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The answer is complete.
    Stop,
    /// The output token limit cut the answer.
    MaxTokens,
    /// The context window cut the answer.
    ContextLimit,
    /// The model asked for a tool call.
    ToolCalls,
    /// The provider stopped the answer for policy reasons.
    ContentFilter,
    /// A transient provider-side failure ended the answer.
    ProviderError,
    /// A reason this version does not know, kept verbatim.
    Other(String),
}

impl fmt::Display for FinishReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FinishReason::Stop => f.write_str("stop"),
            FinishReason::MaxTokens => f.write_str("max_tokens"),
            FinishReason::ContextLimit => f.write_str("context_limit"),
            FinishReason::ToolCalls => f.write_str("tool_calls"),
            FinishReason::ContentFilter => f.write_str("content_filter"),
            FinishReason::ProviderError => f.write_str("provider_error"),
            FinishReason::Other(s) => f.write_str(s),
        }
    }
}

/// A complete answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The model that actually answered (providers may resolve aliases).
    pub model: String,
    /// The answer text, reasoning excluded.
    pub text: String,
    /// Hidden reasoning text, when the provider returned it.
    pub reasoning: Option<String>,
    /// Why the model stopped.
    pub finish_reason: FinishReason,
    /// Tokens consumed.
    pub usage: Usage,
    /// Which key of the provider's pool was used (its id, never the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The functions the model called.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

/// One piece of a streamed answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StreamEvent {
    /// More answer text.
    Text(String),
    /// More reasoning text.
    Reasoning(String),
    /// Usage so far (adapters send the final, de-duplicated total once).
    Usage(Usage),
    /// The model stopped; the stream ends after this.
    Finish(FinishReason),
    /// Part of a function call: the first part of call `index` carries its id and name, later
    /// parts more of its arguments.
    ToolCall {
        /// Which call of the answer (0, 1, …).
        index: u32,
        /// The call's id (first part only).
        id: Option<String>,
        /// The function's name (first part only).
        name: Option<String>,
        /// More of the arguments' JSON text.
        arguments: String,
    },
}

/// A streamed answer.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

/// Folds a stream into a complete answer; a stream that ends without `Finish` is a decode error.
pub async fn collect_stream(
    model: impl Into<String>,
    mut stream: ChatStream,
) -> Result<ChatResponse, ProviderError> {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut usage = Usage::default();
    let mut finish = None;
    let mut calls: Vec<(u32, ToolCall)> = Vec::new();
    while let Some(event) = stream.next().await {
        match event? {
            StreamEvent::Text(t) => text.push_str(&t),
            StreamEvent::Reasoning(r) => reasoning.push_str(&r),
            StreamEvent::Usage(u) => usage = u,
            StreamEvent::Finish(f) => finish = Some(f),
            StreamEvent::ToolCall {
                index,
                id,
                name,
                arguments,
            } => match calls.iter_mut().find(|(i, _)| *i == index) {
                Some((_, call)) => call.arguments.push_str(&arguments),
                None => calls.push((
                    index,
                    ToolCall {
                        id: id.unwrap_or_else(|| format!("call_{index}")),
                        name: name.unwrap_or_default(),
                        arguments,
                    },
                )),
            },
        }
    }
    calls.sort_by_key(|(i, _)| *i);
    let finish_reason = finish.ok_or_else(|| ProviderError::Decode {
        message: "the stream ended before the model said why it stopped".into(),
    })?;
    Ok(ChatResponse {
        key_id: None,
        model: model.into(),
        text,
        reasoning: (!reasoning.is_empty()).then_some(reasoning),
        finish_reason,
        usage,
        tool_calls: calls.into_iter().map(|(_, c)| c).collect(),
    })
}

/// A provider API key with a stable, printable id. The secret itself never appears in `Debug`,
/// `Display`, logs or errors.
#[derive(Clone)]
pub struct ApiKey {
    id: String,
    secret: SecretString,
}

impl ApiKey {
    /// A key and the id it is reported under (e.g. `deepseek#1`, or a name from config).
    pub fn new(id: impl Into<String>, secret: SecretString) -> Self {
        ApiKey {
            id: id.into(),
            secret,
        }
    }

    /// The printable id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret, for building the one request header that needs it.
    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    #[test]
    fn api_keys_never_print_their_secret() {
        let key = ApiKey::new("deepseek#1", SecretString::from("sk-live-123456"));
        let shown = format!("{key:?}");
        assert!(!shown.contains("sk-live"), "{shown}");
        assert!(shown.contains("deepseek#1"));
        assert_eq!(key.expose(), "sk-live-123456");
    }

    #[tokio::test]
    async fn collecting_a_stream_joins_text_and_keeps_the_last_usage() {
        let usage = Usage {
            input_tokens: 5,
            output_tokens: 2,
            ..Usage::default()
        };
        let events = vec![
            Ok(StreamEvent::Reasoning("think".into())),
            Ok(StreamEvent::Text("Hel".into())),
            Ok(StreamEvent::Text("lo".into())),
            Ok(StreamEvent::Usage(usage)),
            Ok(StreamEvent::Finish(FinishReason::Stop)),
        ];
        let r = collect_stream("m", Box::pin(stream::iter(events)))
            .await
            .expect("complete");
        assert_eq!(r.text, "Hello");
        assert_eq!(r.reasoning.as_deref(), Some("think"));
        assert_eq!(r.usage, usage);
    }

    #[tokio::test]
    async fn a_stream_without_finish_is_an_error() {
        let events = vec![Ok(StreamEvent::Text("Hel".into()))];
        let err = collect_stream("m", Box::pin(stream::iter(events)))
            .await
            .expect_err("truncated");
        assert_eq!(err.kind(), "decode");
    }
}
