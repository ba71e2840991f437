//! The built-in offline provider: deterministic answers in the real output format, configurable
//! latency, and scripted replies or failures per step, read from YAML.
//!
//! A script looks like this (every key optional):
//!
//! ```yaml
//! latency_ms: 20            # added to every call
//! steps:
//!   step_1:                 # a step id; "*" applies to steps not listed
//!     - error: rate_limited # first call fails …
//!       retry_after_ms: 500
//!       times: 2            # … twice
//!     - text: |             # third call answers this
//!         ```python path=app.py
//!         print("hi")
//!         ```
//! ```
//!
//! When a step's scripted replies are used up, the mock answers with its generated default.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aetherflow_domain::plan::{StepBehaviour, StepType};
use aetherflow_domain::{Price, Usage};
use async_trait::async_trait;
use serde::Deserialize;

use crate::Provider;
use crate::error::{ProviderError, TimeoutPhase};
use crate::types::{
    ChatRequest, ChatResponse, ChatStream, FinishReason, StepHint, StreamEvent, ToolCall,
    ToolChoice,
};

/// The provider name the mock answers to.
pub const MOCK_PROVIDER: &str = "mock";
/// The model name the mock reports when none is asked for.
pub const MOCK_MODEL: &str = "mock-1";

/// Error kinds a script can ask for, one per [`ProviderError`] variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScriptedErrorKind {
    /// [`ProviderError::Auth`]
    Auth,
    /// [`ProviderError::InsufficientBalance`]
    InsufficientBalance,
    /// [`ProviderError::RateLimited`]
    RateLimited,
    /// [`ProviderError::ContextLengthExceeded`]
    ContextLengthExceeded,
    /// [`ProviderError::ContentFiltered`]
    ContentFiltered,
    /// [`ProviderError::ModelNotFound`]
    ModelNotFound,
    /// [`ProviderError::InvalidRequest`]
    InvalidRequest,
    /// [`ProviderError::Server`]
    Server,
    /// [`ProviderError::Timeout`]
    Timeout,
    /// [`ProviderError::Transport`]
    Transport,
    /// [`ProviderError::Decode`]
    Decode,
}

/// One scripted reply: a text, or an error, used `times` times.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedReply {
    /// The answer text (used as is).
    #[serde(default)]
    pub text: Option<String>,
    /// Fail with this kind of error instead of answering.
    #[serde(default)]
    pub error: Option<ScriptedErrorKind>,
    /// The error's message.
    #[serde(default)]
    pub message: Option<String>,
    /// For `rate_limited`: the wait the "provider" asks for.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
    /// Extra latency for this reply.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// How many consecutive calls this reply serves (default 1).
    #[serde(default)]
    pub times: Option<u32>,
}

/// A whole mock script.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockScript {
    /// Latency added to every call.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Replies per step id, in call order; `"*"` serves steps not listed.
    #[serde(default)]
    pub steps: BTreeMap<String, Vec<ScriptedReply>>,
}

/// A script that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MockScriptError {
    /// The file could not be read.
    #[error("cannot read mock script {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML is malformed or has unknown keys.
    #[error(
        "mock script {origin}: {message} (keys: latency_ms, steps.<step id>[].text|error|message|retry_after_ms|latency_ms|times)"
    )]
    Invalid {
        /// File name or `<inline>`.
        origin: String,
        /// The parser's message, with line and column.
        message: String,
    },
}

impl MockScript {
    /// Reads a script from YAML text.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, MockScriptError> {
        let script: MockScript =
            serde_norway::from_str(text).map_err(|e| MockScriptError::Invalid {
                origin: origin.to_owned(),
                message: e.to_string(),
            })?;
        for (step, replies) in &script.steps {
            for (i, r) in replies.iter().enumerate() {
                if r.text.is_some() == r.error.is_some() {
                    return Err(MockScriptError::Invalid {
                        origin: origin.to_owned(),
                        message: format!(
                            "steps.{step}[{i}] must have exactly one of `text` or `error`"
                        ),
                    });
                }
            }
        }
        Ok(script)
    }

    /// Reads a script from a YAML file.
    pub fn from_file(path: &Path) -> Result<Self, MockScriptError> {
        let text = std::fs::read_to_string(path).map_err(|source| MockScriptError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }
}

/// The offline provider. Same input, same answer; safe to share between tasks.
#[derive(Debug, Default)]
pub struct MockProvider {
    script: MockScript,
    latency: Duration,
    served: Mutex<HashMap<String, u32>>,
    calls: AtomicU64,
    price: Option<Price>,
}

impl MockProvider {
    /// A mock that follows `script` and waits `latency` (plus the script's own) per call.
    pub fn new(script: MockScript, latency: Duration) -> Self {
        MockProvider {
            script,
            latency,
            served: Mutex::new(HashMap::new()),
            calls: AtomicU64::new(0),
            price: None,
        }
    }

    /// Charges `price` for its (estimated) tokens instead of nothing: for tests of budgets and
    /// cost accounting.
    pub fn with_price(mut self, price: Price) -> Self {
        self.price = Some(price);
        self
    }

    /// How many calls the mock has answered or failed.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// The scripted reply for this call, if any, advancing the step's cursor.
    fn next_scripted(&self, step_id: &str) -> Option<ScriptedReply> {
        let key = if self.script.steps.contains_key(step_id) {
            step_id
        } else if self.script.steps.contains_key("*") {
            "*"
        } else {
            return None;
        };
        let replies = &self.script.steps[key];
        let mut served = self
            .served
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = served.entry(step_id.to_owned()).or_insert(0);
        let mut index = *n;
        *n += 1;
        for reply in replies {
            let times = reply.times.unwrap_or(1);
            if index < times {
                return Some(reply.clone());
            }
            index -= times;
        }
        None
    }

    async fn respond(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let hint = request.step.clone().unwrap_or_default();
        let scripted = self.next_scripted(&hint.step_id);
        let extra = scripted
            .as_ref()
            .and_then(|r| r.latency_ms)
            .or(self.script.latency_ms)
            .map(Duration::from_millis)
            .unwrap_or_default();
        let wait = self.latency + extra;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let text = match scripted {
            Some(ScriptedReply {
                error: Some(kind), ..
            }) => return Err(scripted_error(kind, scripted.as_ref(), &request.model)),
            Some(ScriptedReply {
                text: Some(text), ..
            }) => text,
            _ if request.step.is_none() && (request.json_mode || request.json_schema.is_some()) => {
                "{\"offline\": true, \"answer\": \"The AetherFlow mock provider answers offline.\"}"
                    .to_owned()
            }
            _ => default_answer(&hint),
        };
        // With tools on offer and no tool result yet, the mock calls one (the one named by
        // `tool_choice`, else the first) with empty arguments; after a result, it answers.
        let called = match (&request.tool_choice, request.tools.first()) {
            (Some(ToolChoice::None), _) | (_, None) => None,
            _ if request
                .messages
                .last()
                .is_some_and(|m| m.role == crate::Role::Tool) =>
            {
                None
            }
            (Some(ToolChoice::Function(name)), _) => Some(name.clone()),
            (_, Some(first)) => Some(first.name.clone()),
        };
        let (text, tool_calls, finish_reason) = match called {
            Some(name) => (
                String::new(),
                vec![ToolCall {
                    id: format!("call_mock_{}", self.calls.load(Ordering::Relaxed)),
                    name,
                    arguments: "{}".to_owned(),
                }],
                FinishReason::ToolCalls,
            ),
            None => (text, Vec::new(), FinishReason::Stop),
        };
        let prompt_chars: usize = request.system.as_deref().map_or(0, str::len)
            + request
                .messages
                .iter()
                .map(|m| m.content.len())
                .sum::<usize>();
        Ok(ChatResponse {
            key_id: None,
            model: if request.model.is_empty() {
                MOCK_MODEL.to_owned()
            } else {
                request.model.clone()
            },
            usage: Usage {
                input_tokens: estimate_tokens(prompt_chars),
                output_tokens: estimate_tokens(text.len()),
                ..Usage::default()
            },
            text,
            reasoning: None,
            finish_reason,
            tool_calls,
        })
    }
}

fn scripted_error(
    kind: ScriptedErrorKind,
    reply: Option<&ScriptedReply>,
    model: &str,
) -> ProviderError {
    let message = reply
        .and_then(|r| r.message.clone())
        .unwrap_or_else(|| "scripted by the mock provider".to_owned());
    match kind {
        ScriptedErrorKind::Auth => ProviderError::Auth { message },
        ScriptedErrorKind::InsufficientBalance => ProviderError::InsufficientBalance { message },
        ScriptedErrorKind::RateLimited => ProviderError::RateLimited {
            retry_after: reply
                .and_then(|r| r.retry_after_ms)
                .map(Duration::from_millis),
            message,
        },
        ScriptedErrorKind::ContextLengthExceeded => ProviderError::ContextLengthExceeded {
            limit: None,
            message,
        },
        ScriptedErrorKind::ContentFiltered => ProviderError::ContentFiltered { message },
        ScriptedErrorKind::ModelNotFound => ProviderError::ModelNotFound {
            model: model.to_owned(),
            message,
        },
        ScriptedErrorKind::InvalidRequest => ProviderError::InvalidRequest { message },
        ScriptedErrorKind::Server => ProviderError::Server {
            status: Some(503),
            message,
        },
        ScriptedErrorKind::Timeout => ProviderError::Timeout {
            phase: TimeoutPhase::Total,
            after: Duration::ZERO,
        },
        ScriptedErrorKind::Transport => ProviderError::Transport { message },
        ScriptedErrorKind::Decode => ProviderError::Decode { message },
    }
}

/// Roughly four characters per token, rounded up: the usual rule of thumb for code and English.
fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

/// The `step_type` of a gate-keeper review request: the mock approves.
pub const REVIEW_STEP_TYPE: &str = "review";

/// The `step_type` of a design analysis (an uploaded mock-up described as JSON): the mock
/// answers with a design object of the documented shape.
pub const DESIGN_STEP_TYPE: &str = "design_analysis";

/// The mock's answer for a step: fenced blocks naming their target file for code steps, a
/// markdown report for analysis, an approving verdict for a review, a design object for a
/// design analysis.
pub fn default_answer(hint: &StepHint) -> String {
    if hint.step_type == REVIEW_STEP_TYPE {
        return "{\"approve\": true, \"issues\": []}".to_owned();
    }
    if hint.step_type == DESIGN_STEP_TYPE {
        return "{\"title\": \"Offline design analysis\", \"layout\": {\"type\": \"single-column\", \"regions\": [\"header\", \"main\", \"footer\"]}, \"components\": [{\"type\": \"heading\", \"label\": null, \"text\": null, \"region\": \"header\"}], \"colors\": [], \"typography\": [], \"notes\": \"Answered offline by the AetherFlow mock provider, which does not look at the image; configure a vision provider (Gemini) for a real analysis.\"}".to_owned();
    }
    let behaviour = StepType::parse(&hint.step_type).map(StepType::behaviour);
    let id = if hint.step_id.is_empty() {
        "request"
    } else {
        hint.step_id.as_str()
    };
    let summary = hint.summary.trim();
    if behaviour == Some(StepBehaviour::Analyse) || (behaviour.is_none() && hint.files.is_empty()) {
        let mut out = format!(
            "# Analysis: {id}\n\n## Summary\n\n{}\n\n## Findings\n\n",
            if summary.is_empty() {
                "Offline analysis by the AetherFlow mock provider."
            } else {
                summary
            }
        );
        if hint.files.is_empty() {
            out.push_str("- No files were given to analyse.\n");
        } else {
            for f in &hint.files {
                out.push_str(&format!(
                    "- `{f}`: reviewed; no blocking issue found offline.\n"
                ));
            }
        }
        out.push_str("\n## Recommendations\n\n- Run this plan with a real provider for a substantive review.\n");
        return out;
    }
    let mut out = String::new();
    let files: Vec<Option<&str>> = if hint.files.is_empty() {
        vec![None]
    } else {
        hint.files.iter().map(|f| Some(f.as_str())).collect()
    };
    for (i, file) in files.into_iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let lang = language_of(file, hint.language.as_deref());
        let header = match file {
            Some(path) => format!("```{lang} path={path}\n"),
            None => format!("```{lang}\n"),
        };
        out.push_str(&header);
        out.push_str(&file_body(lang, id, file, summary));
        out.push_str("```\n");
    }
    out
}

fn language_of<'a>(file: Option<&str>, declared: Option<&'a str>) -> &'a str {
    let ext = file
        .and_then(|f| Path::new(f).extension())
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("py") => "python",
        Some("js" | "mjs" | "cjs") => "javascript",
        Some("ts" | "tsx") => "typescript",
        Some("html" | "htm") => "html",
        Some("css") => "css",
        Some("md") => "markdown",
        Some("json") => "json",
        Some("rs") => "rust",
        _ => declared.unwrap_or("text"),
    }
}

fn file_body(lang: &str, id: &str, file: Option<&str>, summary: &str) -> String {
    // Each file names itself, so every file of a step gets its own content.
    let which = file.map_or_else(|| format!("step {id}"), |f| format!("{f}, step {id}"));
    let about = if summary.is_empty() {
        format!("Generated offline by the AetherFlow mock provider for {which}.")
    } else {
        format!("{summary} (mock output for {which})")
    };
    // Strings end up inside code: keep them free of quotes and comment terminators.
    let about = about
        .replace(['"', '\'', '`', '\\'], "")
        .replace("*/", "")
        .replace("-->", "");
    let is_test = file.is_some_and(|f| {
        let name = f.rsplit('/').next().unwrap_or(f);
        name.starts_with("test_") || name.ends_with("_test.py")
    });
    match lang {
        "python" if is_test => format!(
            "\"\"\"{about}\"\"\"\n\nimport unittest\n\n\nclass MockStepTest(unittest.TestCase):\n    def test_step_ran(self):\n        self.assertEqual(\"{id}: ok\", \"{id}\" + \": ok\")\n\n\nif __name__ == \"__main__\":\n    unittest.main()\n"
        ),
        "python" => format!(
            "\"\"\"{about}\"\"\"\n\n\ndef main() -> str:\n    \"\"\"Return a marker showing the step ran.\"\"\"\n    return \"{id}: ok\"\n\n\nif __name__ == \"__main__\":\n    print(main())\n"
        ),
        "javascript" | "typescript" => {
            format!("// {about}\nexport function main() {{\n  return \"{id}: ok\";\n}}\n")
        }
        "html" => format!(
            "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>{id}</title></head>\n<body>\n<!-- {about} -->\n<main id=\"{id}\"></main>\n</body>\n</html>\n"
        ),
        "css" => format!("/* {about} */\n.{id} {{\n  display: block;\n}}\n"),
        "markdown" => format!("# {id}\n\n{about}\n"),
        "json" => format!("{{\"step\": \"{id}\", \"generated_by\": \"aetherflow-mock\"}}\n"),
        "rust" => {
            format!("//! {about}\n\npub fn main() -> &'static str {{\n    \"{id}: ok\"\n}}\n")
        }
        _ => format!("# {about}\n"),
    }
}

#[async_trait]
impl Provider for MockProvider {
    fn name(&self) -> &str {
        MOCK_PROVIDER
    }

    fn price(&self, _model: &str) -> Option<Price> {
        Some(self.price.unwrap_or(Price::FREE))
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        self.respond(request).await
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, ProviderError> {
        let response = self.respond(request).await?;
        let mut events: Vec<Result<StreamEvent, ProviderError>> = response
            .text
            .split_inclusive('\n')
            .map(|line| Ok(StreamEvent::Text(line.to_owned())))
            .collect();
        for (index, call) in response.tool_calls.into_iter().enumerate() {
            events.push(Ok(StreamEvent::ToolCall {
                index: index as u32,
                id: Some(call.id),
                name: Some(call.name),
                arguments: call.arguments,
            }));
        }
        events.push(Ok(StreamEvent::Usage(response.usage)));
        events.push(Ok(StreamEvent::Finish(response.finish_reason)));
        Ok(Box::pin(futures::stream::iter(events)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Message, collect_stream};

    fn request(step_id: &str, step_type: &str, files: &[&str]) -> ChatRequest {
        ChatRequest {
            model: MOCK_MODEL.into(),
            messages: vec![Message::user("do it")],
            step: Some(StepHint {
                step_id: step_id.into(),
                step_type: step_type.into(),
                summary: "Build the thing".into(),
                files: files.iter().map(|f| (*f).to_owned()).collect(),
                language: None,
            }),
            ..ChatRequest::default()
        }
    }

    #[tokio::test]
    async fn code_steps_get_one_fenced_block_per_target_file() {
        let mock = MockProvider::default();
        let r = mock
            .chat(&request(
                "s1",
                "code_generation",
                &["src/app.py", "web/app.js"],
            ))
            .await
            .expect("answer");
        assert!(r.text.contains("```python path=src/app.py\n"), "{}", r.text);
        assert!(
            r.text.contains("```javascript path=web/app.js\n"),
            "{}",
            r.text
        );
        assert_eq!(r.text.matches("```").count(), 4);
        assert!(r.usage.output_tokens > 0 && r.usage.input_tokens > 0);
    }

    #[tokio::test]
    async fn analysis_steps_get_a_markdown_report() {
        let mock = MockProvider::default();
        let r = mock
            .chat(&request("s2", "analysis", &["a.py"]))
            .await
            .expect("answer");
        assert!(r.text.starts_with("# Analysis: s2"));
        assert!(r.text.contains("`a.py`"));
        assert!(!r.text.contains("```"));
    }

    #[tokio::test]
    async fn answers_are_deterministic() {
        let a = MockProvider::default();
        let b = MockProvider::default();
        let req = request("s1", "refactoring", &["x.css"]);
        assert_eq!(a.chat(&req).await.ok(), b.chat(&req).await.ok());
    }

    #[tokio::test]
    async fn scripted_failures_come_first_then_the_default_answer() {
        let script = MockScript::from_yaml(
            "steps:\n  s1:\n    - error: rate_limited\n      retry_after_ms: 250\n      times: 2\n    - text: done\n",
            "<test>",
        )
        .expect("valid script");
        let mock = MockProvider::new(script, Duration::ZERO);
        let req = request("s1", "code_generation", &["a.py"]);
        for _ in 0..2 {
            let err = mock.chat(&req).await.expect_err("scripted failure");
            assert_eq!(err.retry_after(), Some(Duration::from_millis(250)));
        }
        assert_eq!(mock.chat(&req).await.expect("third call").text, "done");
        assert!(
            mock.chat(&req)
                .await
                .expect("fourth")
                .text
                .contains("path=a.py")
        );
        // Other steps are untouched by s1's script.
        assert!(mock.chat(&request("s2", "analysis", &[])).await.is_ok());
        assert_eq!(mock.calls(), 5);
    }

    #[tokio::test]
    async fn wildcard_script_serves_unlisted_steps() {
        let script = MockScript::from_yaml("steps:\n  '*':\n    - error: server\n", "<test>")
            .expect("valid script");
        let mock = MockProvider::new(script, Duration::ZERO);
        let err = mock
            .chat(&request("any", "analysis", &[]))
            .await
            .expect_err("wildcard failure");
        assert_eq!(err.kind(), "server");
    }

    #[test]
    fn bad_scripts_are_rejected_with_the_accepted_keys() {
        let err = MockScript::from_yaml("steps:\n  s1:\n    - txt: hi\n", "plan.mock.yaml")
            .expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.contains("plan.mock.yaml"), "{msg}");
        assert!(msg.contains("txt"), "{msg}");
        let err = MockScript::from_yaml("steps:\n  s1:\n    - {}\n", "x").expect_err("empty");
        assert!(err.to_string().contains("exactly one of `text` or `error`"));
    }

    #[tokio::test(start_paused = true)]
    async fn latency_is_applied_per_call() {
        let mock = MockProvider::new(MockScript::default(), Duration::from_millis(300));
        let start = tokio::time::Instant::now();
        mock.chat(&request("s", "analysis", &[]))
            .await
            .expect("answer");
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test]
    async fn streaming_yields_the_same_answer() {
        let mock = MockProvider::default();
        let req = request("s1", "code_generation", &["a.py"]);
        let whole = mock.chat(&req).await.expect("answer");
        let stream = mock.chat_stream(&req).await.expect("stream");
        let collected = collect_stream(MOCK_MODEL, stream).await.expect("complete");
        assert_eq!(collected.text, whole.text);
        assert_eq!(collected.usage, whole.usage);
    }
}
