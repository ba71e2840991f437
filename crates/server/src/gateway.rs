//! The OpenAI-compatible gateway: `POST /v1/chat/completions` and `GET /v1/models`, so any
//! OpenAI SDK gets AetherFlow's routing, fallbacks, retries, breakers, budgets, key pools and
//! response cache behind one URL.
//!
//! Model names: `provider/model` (`deepseek/deepseek-chat`), a configured provider's model
//! name alone, or a routing group `aetherflow/fast` / `aetherflow/build` (the fallback chains
//! of that mode). Requests are translated to the provider-neutral [`ChatRequest`]; each adapter
//! then sends only what its provider accepts. Errors answer in OpenAI's shape.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use aetherflow_domain::Money;
use aetherflow_domain::plan::StepType;
use aetherflow_domain::run::{Attempt, FailureKind, Mode};
use aetherflow_orchestrator::call::{CallFailure, CallOptions, complete, stream};
use aetherflow_orchestrator::{ProviderSet, Target};
use aetherflow_provider::{
    ChatRequest, FinishReason, Image, JsonSchema, Message, Role, StreamEvent, Tool, ToolCall,
    ToolChoice,
};
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::KeyScope;
use crate::app::AppState;
use crate::auth::Caller;

/// The routing groups: `aetherflow/<name>` and the mode whose fallback chains they follow.
pub const GROUPS: [(&str, Mode); 3] = [
    ("fast", Mode::Fast),
    ("build", Mode::Build),
    ("double-check", Mode::DoubleCheck),
];

/// Most messages one request may carry.
pub const MAX_MESSAGES: usize = 2_048;

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct GatewayError {
    status: u16,
    kind: &'static str,
    code: &'static str,
    message: String,
    param: Option<&'static str>,
    retry_after: Option<u64>,
}

impl GatewayError {
    fn new(
        status: u16,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        GatewayError {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        GatewayError {
            param: Some(param),
            ..Self::new(400, "invalid_request_error", "invalid_request", message)
        }
    }

    /// What a failed call becomes: its kind and the last provider error decide the status.
    fn from_failure(failure: &CallFailure) -> Self {
        if failure.kind == FailureKind::BudgetExceeded {
            return Self::new(
                402,
                "insufficient_quota",
                "budget_exceeded",
                format!("a spending cap would be passed: {failure}"),
            );
        }
        let last = failure
            .attempts
            .iter()
            .rev()
            .find_map(|a| a.error.as_ref())
            .map(|e| e.kind.as_str());
        let message = format!("no provider answered: {failure}");
        match last {
            Some("context_length_exceeded") => GatewayError {
                param: Some("messages"),
                ..Self::new(
                    400,
                    "invalid_request_error",
                    "context_length_exceeded",
                    message,
                )
            },
            Some("invalid_request") => {
                Self::new(400, "invalid_request_error", "invalid_request", message)
            }
            Some("content_filtered") => {
                Self::new(400, "invalid_request_error", "content_filter", message)
            }
            Some("model_not_found") => {
                Self::new(404, "invalid_request_error", "model_not_found", message)
            }
            Some("rate_limited") => GatewayError {
                retry_after: Some(1),
                ..Self::new(429, "rate_limit_error", "upstream_rate_limited", message)
            },
            Some("timeout") => Self::new(504, "api_error", "upstream_timeout", message),
            // Nothing was sent: every target was skipped (open breakers, windows too small).
            None if failure.message.contains("too small") => GatewayError {
                param: Some("messages"),
                ..Self::new(
                    400,
                    "invalid_request_error",
                    "context_length_exceeded",
                    message,
                )
            },
            None => GatewayError {
                retry_after: Some(5),
                ..Self::new(503, "api_error", "unavailable", message)
            },
            Some(_) => Self::new(502, "api_error", "upstream_error", message),
        }
    }

    fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl ResponseError for GatewayError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code()).json(self.body());
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl From<crate::error::ApiError> for GatewayError {
    fn from(e: crate::error::ApiError) -> Self {
        let (kind, code) = match e.status {
            401 => ("invalid_request_error", "invalid_api_key"),
            403 => ("permission_error", "forbidden"),
            429 => ("rate_limit_error", "rate_limit_exceeded"),
            503 => ("api_error", "unavailable"),
            _ => ("invalid_request_error", e.code),
        };
        GatewayError {
            status: e.status,
            kind,
            code,
            message: e.message,
            param: None,
            retry_after: e.retry_after,
        }
    }
}

/// `POST /v1/chat/completions`, as OpenAI defines it (the fields AetherFlow reads).
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    model: String,
    messages: Vec<InMessage>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    tools: Option<Vec<InTool>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
struct InMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<InToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    image_url: Option<ImageUrl>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ImageUrl {
    Object { url: String },
    Plain(String),
}

#[derive(Debug, Deserialize)]
struct InToolCall {
    id: String,
    #[serde(default)]
    function: Option<InFunctionCall>,
}

#[derive(Debug, Deserialize)]
struct InFunctionCall {
    name: String,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Debug, Deserialize)]
struct InTool {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    function: InFunction,
}

#[derive(Debug, Deserialize)]
struct InFunction {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

/// The text of a message's content; images go to `images` (only `data:` URLs: the gateway
/// never fetches a URL a client names).
fn content_text(content: Option<Content>, images: &mut Vec<Image>) -> Result<String, GatewayError> {
    match content {
        None => Ok(String::new()),
        Some(Content::Text(t)) => Ok(t),
        Some(Content::Parts(parts)) => {
            let mut text = String::new();
            for part in parts {
                match part.kind.as_str() {
                    "text" | "input_text" => {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(part.text.as_deref().unwrap_or_default());
                    }
                    "image_url" => {
                        let url = match part.image_url {
                            Some(ImageUrl::Object { url }) | Some(ImageUrl::Plain(url)) => url,
                            None => {
                                return Err(GatewayError::invalid(
                                    "messages",
                                    "an image_url part has no url",
                                ));
                            }
                        };
                        images.push(data_url_image(&url)?);
                    }
                    other => {
                        return Err(GatewayError::invalid(
                            "messages",
                            format!(
                                "content parts of type `{other}` are not supported; send text and image_url parts"
                            ),
                        ));
                    }
                }
            }
            Ok(text)
        }
    }
}

/// An image from a `data:image/…;base64,…` URL.
fn data_url_image(url: &str) -> Result<Image, GatewayError> {
    let refuse = || {
        GatewayError::invalid(
            "messages",
            "image_url must be a data:image/png|jpeg|webp|gif;base64,… URL; the gateway does not fetch remote images",
        )
    };
    let rest = url.strip_prefix("data:").ok_or_else(refuse)?;
    let (meta, data) = rest.split_once(',').ok_or_else(refuse)?;
    let mime = meta.strip_suffix(";base64").ok_or_else(refuse)?;
    if !matches!(
        mime,
        "image/png" | "image/jpeg" | "image/webp" | "image/gif"
    ) {
        return Err(refuse());
    }
    use base64::Engine as _;
    if base64::engine::general_purpose::STANDARD
        .decode(data)
        .is_err()
    {
        return Err(GatewayError::invalid(
            "messages",
            "an image's base64 data does not decode",
        ));
    }
    Ok(Image {
        mime_type: mime.to_owned(),
        base64: data.to_owned(),
    })
}

/// Translates the OpenAI request into AetherFlow's provider-neutral request.
pub fn translate(body: CompletionRequest) -> Result<(ChatRequest, bool, bool), GatewayError> {
    if body.messages.is_empty() {
        return Err(GatewayError::invalid(
            "messages",
            "messages is empty: send at least one",
        ));
    }
    if body.messages.len() > MAX_MESSAGES {
        return Err(GatewayError::invalid(
            "messages",
            format!("more than {MAX_MESSAGES} messages"),
        ));
    }
    if body.n.is_some_and(|n| n != 1) {
        return Err(GatewayError::invalid("n", "only n = 1 is supported"));
    }
    if let Some(t) = body.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(GatewayError::invalid(
            "temperature",
            "temperature must be between 0 and 2",
        ));
    }
    if let Some(p) = body.top_p
        && !(0.0..=1.0).contains(&p)
    {
        return Err(GatewayError::invalid(
            "top_p",
            "top_p must be between 0 and 1",
        ));
    }
    let mut system: Vec<String> = Vec::new();
    let mut messages = Vec::with_capacity(body.messages.len());
    for m in body.messages {
        let mut images = Vec::new();
        let text = content_text(m.content, &mut images)?;
        match m.role.as_str() {
            "system" | "developer" => system.push(text),
            "user" => messages.push(Message::user_with_images(text, images)),
            "assistant" => {
                let mut msg = Message::assistant(text);
                msg.reasoning = m.reasoning_content;
                msg.tool_calls = m
                    .tool_calls
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|c| {
                        let f = c.function?;
                        Some(ToolCall {
                            id: c.id,
                            name: f.name,
                            arguments: f.arguments.unwrap_or_else(|| "{}".to_owned()),
                        })
                    })
                    .collect();
                messages.push(msg);
            }
            "tool" => {
                let mut msg = Message::user(text);
                msg.role = Role::Tool;
                msg.tool_call_id = m.tool_call_id;
                msg.name = m.name;
                if msg.tool_call_id.is_none() {
                    return Err(GatewayError::invalid(
                        "messages",
                        "a tool message needs tool_call_id",
                    ));
                }
                messages.push(msg);
            }
            other => {
                return Err(GatewayError::invalid(
                    "messages",
                    format!("role `{other}`: use system, developer, user, assistant or tool"),
                ));
            }
        }
    }
    if messages.is_empty() {
        return Err(GatewayError::invalid(
            "messages",
            "only system messages: add a user message",
        ));
    }
    let (json_mode, json_schema) = match &body.response_format {
        None => (false, None),
        Some(f) => match f.get("type").and_then(Value::as_str) {
            Some("text") => (false, None),
            Some("json_object") => (true, None),
            Some("json_schema") => {
                let spec = &f["json_schema"];
                let schema = spec.get("schema").cloned().ok_or_else(|| {
                    GatewayError::invalid("response_format", "json_schema needs a `schema`")
                })?;
                (
                    true,
                    Some(JsonSchema {
                        name: spec
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("answer")
                            .to_owned(),
                        schema,
                        strict: spec.get("strict").and_then(Value::as_bool),
                    }),
                )
            }
            _ => {
                return Err(GatewayError::invalid(
                    "response_format",
                    "response_format.type must be text, json_object or json_schema",
                ));
            }
        },
    };
    let tools: Vec<Tool> = body
        .tools
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            if t.kind.as_deref().is_some_and(|k| k != "function") {
                return Err(GatewayError::invalid(
                    "tools",
                    "only tools of type `function` are supported",
                ));
            }
            Ok(Tool {
                name: t.function.name,
                description: t.function.description,
                parameters: t.function.parameters,
                strict: t.function.strict,
            })
        })
        .collect::<Result<_, _>>()?;
    let tool_choice = match &body.tool_choice {
        None => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" | "any" => ToolChoice::Required,
            _ => {
                return Err(GatewayError::invalid(
                    "tool_choice",
                    "tool_choice must be auto, none, required or a function",
                ));
            }
        }),
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) if tools.iter().any(|t| t.name == name) => {
                Some(ToolChoice::Function(name.to_owned()))
            }
            _ => {
                return Err(GatewayError::invalid(
                    "tool_choice",
                    "tool_choice names a function that is not in tools",
                ));
            }
        },
    };
    let deterministic = body.temperature == Some(0.0) || body.seed.is_some();
    let request = ChatRequest {
        model: String::new(),
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages,
        max_output_tokens: body.max_completion_tokens.or(body.max_tokens),
        temperature: body.temperature,
        top_p: body.top_p,
        stop: match body.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        },
        json_mode,
        json_schema,
        seed: body.seed.and_then(|s| u64::try_from(s).ok()),
        tools,
        tool_choice,
        step: None,
    };
    let include_usage = body.stream_options.is_some_and(|o| o.include_usage);
    Ok((request, deterministic, include_usage))
}

/// The targets a model name routes to.
pub fn resolve(
    providers: &ProviderSet,
    policy: &aetherflow_resilience::fallback::FallbackPolicy,
    model: &str,
    estimated_tokens: impl FnOnce() -> u64,
) -> Result<Vec<Target>, GatewayError> {
    let not_found = || GatewayError {
        param: Some("model"),
        ..GatewayError::new(
            404,
            "invalid_request_error",
            "model_not_found",
            format!(
                "the model `{model}` does not exist here; GET /v1/models lists the models and groups"
            ),
        )
    };
    if let Some((prefix, rest)) = model.split_once('/') {
        if prefix == "aetherflow" {
            let mode = GROUPS
                .iter()
                .find(|(name, _)| *name == rest)
                .map(|(_, m)| *m)
                .ok_or_else(not_found)?;
            let targets =
                providers.chain_for(mode, StepType::CodeGeneration, estimated_tokens(), policy);
            return if targets.is_empty() {
                Err(not_found())
            } else {
                Ok(targets)
            };
        }
        if let Some(entry) = providers.entry(prefix) {
            // A model the provider knows (priced, or its configured one); never one it would
            // refuse or one whose cost cannot be counted.
            if rest.is_empty() || (rest != entry.model && entry.provider.price(rest).is_none()) {
                return Err(not_found());
            }
            let mut entry = entry.clone();
            entry.model = rest.to_owned();
            return Ok(vec![Target {
                name: aetherflow_orchestrator::routing::canonical_provider_name(prefix),
                entry,
            }]);
        }
        return Err(not_found());
    }
    providers
        .entries()
        .find(|(_, e)| e.model == model)
        .map(|(name, e)| {
            vec![Target {
                name: name.to_owned(),
                entry: e.clone(),
            }]
        })
        .ok_or_else(not_found)
}

/// `GET /v1/models`: the configured providers' models and the routing groups.
#[utoipa::path(get, path = "/v1/models", tag = "gateway",
    responses((status = 200, description = "`{object: \"list\", data: [{id, object: \"model\", created, owned_by}]}`")),
    security(("bearer" = [])))]
pub async fn models(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    caller.require(KeyScope::Chat)?;
    let jobs = state.jobs.as_ref().map_err(|why| {
        GatewayError::new(
            503,
            "api_error",
            "unavailable",
            format!("the gateway is unavailable: {why}"),
        )
    })?;
    let mut data: Vec<Value> = jobs
        .engine()
        .providers
        .entries()
        .map(|(name, e)| json!({"id": format!("{name}/{}", e.model), "object": "model", "created": 0, "owned_by": name}))
        .collect();
    for (group, _) in GROUPS {
        data.push(json!({"id": format!("aetherflow/{group}"), "object": "model", "created": 0, "owned_by": "aetherflow"}));
    }
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": data})))
}

fn finish_name(reason: &FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop | FinishReason::ProviderError | FinishReason::Other(_) => "stop",
        FinishReason::MaxTokens | FinishReason::ContextLimit => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

fn usage_json(u: &aetherflow_domain::Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    })
}

fn tool_calls_json(calls: &[ToolCall]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect(),
    )
}

/// Whether the client asked not to be served from the cache.
fn cache_opt_out(request: &HttpRequest) -> bool {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    header("x-aetherflow-cache")
        .is_some_and(|v| matches!(v.as_str(), "off" | "no" | "bypass" | "false"))
        || header("cache-control").is_some_and(|v| v.contains("no-cache") || v.contains("no-store"))
}

/// Counts the attempts in the metrics, with the model label only from the configured set.
fn record_metrics(state: &AppState, providers: &ProviderSet, attempts: &[Attempt]) {
    let Some(metrics) = state.metrics.as_ref() else {
        return;
    };
    let bounded: Vec<Value> = attempts
        .iter()
        .map(|a| {
            let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
            let known = providers
                .entry(&a.provider)
                .is_some_and(|e| e.model == a.model);
            if !known {
                v["model"] = json!("other");
            }
            v
        })
        .collect();
    metrics.record_report(&json!({"steps": [{"attempts": bounded}]}));
}

/// `POST /v1/chat/completions`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "gateway",
    request_body(content = Object, description = "An OpenAI chat completion request"),
    responses(
        (status = 200, description = "An OpenAI chat completion, or `text/event-stream` chunks ending with `data: [DONE]`; headers `X-AetherFlow-Provider`, `-Model`, `-Attempts`, `-Cost-Micros`, `-Cache`"),
        (status = 400, description = "OpenAI error shape"), (status = 401), (status = 402), (status = 403),
        (status = 404), (status = 429), (status = 502), (status = 503), (status = 504)),
    security(("bearer" = [])))]
pub async fn chat_completions(
    caller: Caller,
    state: web::Data<AppState>,
    http: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, GatewayError> {
    caller.require(KeyScope::Chat)?;
    let parsed: CompletionRequest = serde_json::from_slice(&body).map_err(|e| {
        GatewayError::invalid(
            "body",
            format!("the body is not a chat completion request: {e}"),
        )
    })?;
    let requested_model = parsed.model.clone();
    let streaming = parsed.stream;
    let (request, deterministic, include_usage) = translate(parsed)?;
    let jobs = state.jobs.as_ref().map_err(|why| {
        GatewayError::new(
            503,
            "api_error",
            "unavailable",
            format!("the gateway is unavailable: {why}"),
        )
    })?;
    let engine = jobs.engine();
    // Counted only for routing groups, whose chains depend on the size.
    let targets = resolve(
        &engine.providers,
        &engine.resilience.fallback,
        &requested_model,
        || aetherflow_provider::tokens::estimate_request(&request),
    )?;
    let opted_out = cache_opt_out(&http);
    let options = CallOptions {
        label: "chat".into(),
        caller: Some(caller.key_id.clone()),
        extra_scopes: jobs
            .key_day_scope_for(&caller.key_id)
            .await
            .into_iter()
            .collect(),
        cacheable: deterministic && !opted_out && !streaming,
        accept_truncated: true,
    };
    let id = format!("chatcmpl-{}", uuid::Uuid::now_v7().simple());
    let created = chrono::Utc::now().timestamp();
    if streaming {
        return stream_answer(
            &state,
            caller,
            engine,
            targets,
            request,
            options,
            id,
            created,
            include_usage,
        )
        .await;
    }
    let outcome = complete(&engine.resilience, &targets, request, &options).await;
    let (attempts, cost) = match &outcome {
        Ok(o) => (o.attempts.clone(), o.cost),
        Err(f) => (f.attempts.clone(), f.cost),
    };
    record_metrics(&state, &engine.providers, &attempts);
    record_spend(&state, &caller.key_id, cost).await;
    let outcome = outcome.map_err(|f| GatewayError::from_failure(&f))?;
    let cached = outcome.attempts.last().is_some_and(|a| a.cached);
    let response = &outcome.response;
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert(
        "content".into(),
        if response.text.is_empty() && !response.tool_calls.is_empty() {
            Value::Null
        } else {
            Value::from(response.text.clone())
        },
    );
    if !response.tool_calls.is_empty() {
        message.insert("tool_calls".into(), tool_calls_json(&response.tool_calls));
    }
    if let Some(r) = &response.reasoning {
        message.insert("reasoning_content".into(), Value::from(r.clone()));
    }
    let model = format!("{}/{}", outcome.provider, response.model);
    let body = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_name(&response.finish_reason), "logprobs": null}],
        "usage": usage_json(&response.usage),
    });
    Ok(HttpResponse::Ok()
        .insert_header(("x-aetherflow-provider", outcome.provider.clone()))
        .insert_header(("x-aetherflow-model", response.model.clone()))
        .insert_header(("x-aetherflow-attempts", outcome.attempts.len().to_string()))
        .insert_header((
            "x-aetherflow-cost-micros",
            outcome.cost.as_micros().to_string(),
        ))
        .insert_header((
            "x-aetherflow-cache",
            if opted_out || !deterministic {
                "off"
            } else if cached {
                "hit"
            } else {
                "miss"
            },
        ))
        .json(body))
}

async fn record_spend(state: &AppState, key: &str, cost: Money) {
    if cost.as_micros() > 0
        && let Err(e) = state
            .store
            .record_key_spend(key, "chat", cost.as_micros())
            .await
    {
        tracing::error!(error = %e, "the key's spend was not stored");
    }
}

fn chunk(id: &str, created: i64, model: &str, delta: Value, finish: Option<&str>) -> web::Bytes {
    let body = json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
    });
    web::Bytes::from(format!("data: {body}\n\n"))
}

#[allow(clippy::too_many_arguments)]
async fn stream_answer(
    state: &web::Data<AppState>,
    caller: Caller,
    engine: &crate::jobs::Engine,
    targets: Vec<Target>,
    request: ChatRequest,
    options: CallOptions,
    id: String,
    created: i64,
    include_usage: bool,
) -> Result<HttpResponse, GatewayError> {
    let started = match stream(&engine.resilience, &targets, request, &options).await {
        Ok(s) => s,
        Err(failure) => {
            record_metrics(state, &engine.providers, &failure.attempts);
            return Err(GatewayError::from_failure(&failure));
        }
    };
    record_metrics(state, &engine.providers, &started.failed_attempts);
    let provider = started.provider.clone();
    let model = format!("{}/{}", started.provider, started.model);
    let price = targets
        .iter()
        .find(|t| t.name == started.provider)
        .and_then(|t| t.entry.provider.price(&started.model))
        .unwrap_or(aetherflow_domain::Price::FREE);
    let store = Arc::clone(&state.store);
    let key = caller.key_id.clone();
    let attempts_before = started.failed_attempts.len();
    let mut events = started.events;
    let body = async_stream::stream! {
        yield Ok::<_, actix_web::Error>(chunk(&id, created, &model, json!({"role": "assistant", "content": ""}), None));
        let mut usage = None;
        let mut open_calls: Vec<u32> = Vec::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(StreamEvent::Text(t)) => yield Ok(chunk(&id, created, &model, json!({"content": t}), None)),
                Ok(StreamEvent::Reasoning(r)) => yield Ok(chunk(&id, created, &model, json!({"reasoning_content": r}), None)),
                Ok(StreamEvent::ToolCall { index, id: call_id, name, arguments }) => {
                    let mut call = json!({"index": index, "function": {"arguments": arguments}});
                    if !open_calls.contains(&index) {
                        open_calls.push(index);
                        call["id"] = json!(call_id.unwrap_or_else(|| format!("call_{index}")));
                        call["type"] = json!("function");
                        call["function"]["name"] = json!(name.unwrap_or_default());
                    }
                    yield Ok(chunk(&id, created, &model, json!({"tool_calls": [call]}), None));
                }
                Ok(StreamEvent::Usage(u)) => usage = Some(u),
                Ok(StreamEvent::Finish(reason)) => {
                    yield Ok(chunk(&id, created, &model, json!({}), Some(finish_name(&reason))));
                }
                Err(e) => {
                    let error = json!({"error": {"message": format!("the provider failed mid-stream: {e}"), "type": "api_error", "param": null, "code": "upstream_error"}});
                    yield Ok(web::Bytes::from(format!("data: {error}\n\n")));
                    break;
                }
            }
        }
        drop(events);
        if let Some(u) = usage {
            let cost = u.cost(&price).as_micros();
            if cost > 0 && let Err(e) = store.record_key_spend(&key, "chat", cost).await {
                tracing::error!(error = %e, "the key's spend was not stored");
            }
            if include_usage {
                let body = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [], "usage": usage_json(&u)});
                yield Ok(web::Bytes::from(format!("data: {body}\n\n")));
            }
        }
        yield Ok(web::Bytes::from_static(b"data: [DONE]\n\n"));
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header(("x-accel-buffering", "no"))
        .insert_header(("x-aetherflow-provider", provider))
        .insert_header(("x-aetherflow-model", started.model))
        .insert_header(("x-aetherflow-attempts", (attempts_before + 1).to_string()))
        .insert_header(("x-aetherflow-cache", "off"))
        .streaming(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(v: Value) -> CompletionRequest {
        serde_json::from_value(v).expect("request")
    }

    #[test]
    fn requests_translate_roles_tools_and_formats() {
        let (r, deterministic, usage) = translate(parse(json!({
            "model": "deepseek/deepseek-chat",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": "Use JSON."},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "{\"temp\": 21}"}
            ],
            "max_completion_tokens": 100, "max_tokens": 5, "temperature": 0, "top_p": 0.5,
            "stop": "END", "seed": 7,
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": true}},
            "stream": true, "stream_options": {"include_usage": true}, "user": "ignored"
        })))
        .expect("valid");
        assert!(deterministic && usage);
        assert_eq!(r.system.as_deref(), Some("Be brief.\n\nUse JSON."));
        assert_eq!(r.messages.len(), 3);
        assert_eq!(r.messages[0].images.len(), 1);
        assert_eq!(r.messages[1].tool_calls[0].name, "weather");
        assert_eq!(r.messages[2].role, Role::Tool);
        assert_eq!(r.messages[2].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(r.max_output_tokens, Some(100), "max_completion_tokens wins");
        assert_eq!(r.stop, vec!["END".to_owned()]);
        assert_eq!(r.seed, Some(7));
        assert_eq!(r.tool_choice, Some(ToolChoice::Function("weather".into())));
        assert_eq!(r.json_schema.as_ref().map(|s| s.name.as_str()), Some("w"));
    }

    #[test]
    fn bad_requests_name_the_parameter() {
        let cases = [
            (json!({"model": "m", "messages": []}), "messages"),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}),
                "n",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3}),
                "temperature",
            ),
            (
                json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
                "messages",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest"}}]}]}),
                "messages",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
                "tool_choice",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}}),
                "response_format",
            ),
        ];
        for (body, param) in cases {
            let err = translate(parse(body.clone())).expect_err("invalid");
            assert_eq!(err.status, 400, "{body}");
            assert_eq!(err.param, Some(param), "{body}: {err}");
        }
    }

    #[test]
    fn failures_map_to_openai_statuses() {
        let failure = |kind: FailureKind, last: Option<&str>, message: &str| CallFailure {
            kind,
            message: message.into(),
            attempts: last
                .map(|k| {
                    vec![Attempt {
                        provider: "p".into(),
                        model: "m".into(),
                        key_id: None,
                        started_at: chrono::Utc::now(),
                        latency: Duration::ZERO,
                        usage: Default::default(),
                        cost: Money::ZERO,
                        error: Some(aetherflow_domain::run::AttemptError {
                            kind: k.into(),
                            retryable: false,
                            message: "x".into(),
                        }),
                        cached: false,
                    }]
                })
                .unwrap_or_default(),
            cost: Money::ZERO,
        };
        let status = |f: CallFailure| GatewayError::from_failure(&f).status;
        assert_eq!(
            status(failure(FailureKind::BudgetExceeded, None, "budget")),
            402
        );
        assert_eq!(
            status(failure(
                FailureKind::ProviderError,
                Some("context_length_exceeded"),
                "x"
            )),
            400
        );
        assert_eq!(
            status(failure(
                FailureKind::ProviderError,
                Some("rate_limited"),
                "x"
            )),
            429
        );
        assert_eq!(
            status(failure(FailureKind::ProviderError, Some("timeout"), "x")),
            504
        );
        assert_eq!(
            status(failure(FailureKind::ProviderError, Some("server"), "x")),
            502
        );
        assert_eq!(
            status(failure(FailureKind::ProviderError, None, "circuit open")),
            503
        );
    }
}
