//! Reading an OpenAI chat-completion request into AetherFlow's provider-neutral
//! [`ChatRequest`].

use aetherflow_provider::{
    ChatRequest, Image, JsonSchema, Message, Role, Tool, ToolCall, ToolChoice,
};
use serde::Deserialize;
use serde_json::Value;

use super::error::GatewayError;

/// Most messages one request may carry.
pub const MAX_MESSAGES: usize = 2_048;

/// `POST /v1/chat/completions`, as OpenAI defines it (the fields AetherFlow reads).
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub(crate) model: String,
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
    pub(crate) stream: bool,
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

/// A translated request and what the gateway needs to know about it.
#[derive(Debug)]
pub struct Translated {
    /// The provider-neutral request.
    pub request: ChatRequest,
    /// Temperature 0 or a seed: the answer may come from the cache.
    pub deterministic: bool,
    /// A stream should end with a usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
}

/// Translates the OpenAI request into AetherFlow's provider-neutral request.
pub fn translate(body: CompletionRequest) -> Result<Translated, GatewayError> {
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
    Ok(Translated {
        request,
        deterministic,
        include_usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> CompletionRequest {
        serde_json::from_value(v).expect("request")
    }

    #[test]
    fn requests_translate_roles_tools_and_formats() {
        let Translated {
            request: r,
            deterministic,
            include_usage: usage,
        } = translate(parse(json!({
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
}
