//! The OpenAI-compatible gateway end to end: the real `aetherflow-api` binary in front of
//! local servers that speak each provider's wire format (DeepSeek, Gemini, Groq, Codestral,
//! Kimi, an OpenAI-compatible server), called by a plain HTTP client and by the official
//! `openai` Python SDK (installed into a venv on first use).

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use support::{Server, create_key, received_spans, runtime_dir, start_in};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The OpenAI SDK version the tests use.
const OPENAI_SDK: &str = "openai==3.57.0";

/// The text of a wire message's content (a string or text parts).
fn text_of(message: &Value) -> String {
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// What a scripted model answers, whatever the wire format.
enum Answer {
    Text(String),
    Call { name: String, arguments: Value },
}

fn decide(
    last_role: &str,
    last_text: &str,
    has_tools: bool,
    wants_json: bool,
    name: &str,
) -> Answer {
    if last_role == "tool" || last_role == "function" {
        Answer::Text("It is 21 °C in Paris.".into())
    } else if has_tools {
        Answer::Call {
            name: "get_weather".into(),
            arguments: json!({"city": "Paris"}),
        }
    } else if wants_json {
        Answer::Text("{\"city\": \"Paris\"}".into())
    } else if last_text.contains("Count") {
        Answer::Text("one, two, three".into())
    } else {
        Answer::Text(format!("Hello from {name}."))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Flavor {
    DeepSeek,
    Groq,
    Codestral,
    Kimi,
    Local,
}

/// An OpenAI-style provider: answers in its flavour's shape (usage placement, strict fields).
struct OpenAiLike {
    flavor: Flavor,
    name: &'static str,
    fail_marker: bool,
}

impl Respond for OpenAiLike {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        if self.flavor == Flavor::Codestral {
            const ALLOWED: &[&str] = &[
                "model",
                "messages",
                "temperature",
                "top_p",
                "max_tokens",
                "stream",
                "stop",
                "random_seed",
                "response_format",
                "tools",
                "tool_choice",
                "presence_penalty",
                "frequency_penalty",
                "n",
                "prediction",
                "parallel_tool_calls",
                "safe_prompt",
                "metadata",
                "prompt_mode",
                "reasoning_effort",
            ];
            if let Some(extra) = body
                .as_object()
                .and_then(|o| o.keys().find(|k| !ALLOWED.contains(&k.as_str())))
            {
                return ResponseTemplate::new(422).set_body_json(json!({"object": "error", "message": {"detail": [{"type": "extra_forbidden", "loc": ["body", extra], "msg": "Extra inputs are not permitted"}]}, "type": "invalid_request_error", "param": null, "code": null}));
            }
        }
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let last = messages.last().cloned().unwrap_or(Value::Null);
        let last_text = text_of(&last);
        if self.fail_marker && last_text.contains("FAIL_FIRST") {
            return ResponseTemplate::new(500).set_body_json(json!({"error": {"message": "internal error", "type": "server_error", "param": null, "code": null}}));
        }
        let answer = decide(
            last["role"].as_str().unwrap_or_default(),
            &last_text,
            body["tools"].is_array(),
            body["response_format"].is_object(),
            self.name,
        );
        let usage = json!({"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26});
        let model = body["model"].clone();
        if body["stream"] == true {
            let mut chunks: Vec<Value> = Vec::new();
            let chunk = |delta: Value, finish: Value| json!({"id": "c1", "object": "chat.completion.chunk", "created": 1763990400, "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            chunks.push(chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            ));
            let finish = match &answer {
                Answer::Text(t) => {
                    for word in t.split_inclusive(' ') {
                        chunks.push(chunk(json!({"content": word}), Value::Null));
                    }
                    "stop"
                }
                Answer::Call { name, arguments } => {
                    let args = arguments.to_string();
                    let (a, b) = args.split_at(args.len() / 2);
                    chunks.push(chunk(json!({"tool_calls": [{"index": 0, "id": "call_w1", "type": "function", "function": {"name": name, "arguments": a}}]}), Value::Null));
                    chunks.push(chunk(
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": b}}]}),
                        Value::Null,
                    ));
                    "tool_calls"
                }
            };
            let mut last_chunk = chunk(json!({}), json!(finish));
            match self.flavor {
                Flavor::Kimi => last_chunk["choices"][0]["usage"] = usage.clone(),
                Flavor::Groq => {
                    last_chunk["x_groq"] = json!({"id": "req_1", "usage": usage});
                }
                _ => last_chunk["usage"] = usage.clone(),
            }
            chunks.push(last_chunk);
            if self.flavor == Flavor::Groq {
                chunks.push(json!({"id": "c1", "object": "chat.completion.chunk", "created": 1763990400, "model": model, "choices": [], "usage": usage}));
            }
            let mut sse: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
            sse.push_str("data: [DONE]\n\n");
            return ResponseTemplate::new(200).set_body_raw(sse, "text/event-stream");
        }
        let message = match answer {
            Answer::Text(t) => json!({"role": "assistant", "content": t}),
            Answer::Call { name, arguments } => {
                json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_w1", "type": "function", "function": {"name": name, "arguments": arguments.to_string()}}]})
            }
        };
        let finish = if message["tool_calls"].is_array() {
            "tool_calls"
        } else {
            "stop"
        };
        let mut reply = json!({"id": "c1", "object": "chat.completion", "created": 1763990400, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage});
        if self.flavor == Flavor::Kimi {
            reply["usage"]["cached_tokens"] = json!(0);
        }
        ResponseTemplate::new(200).set_body_json(reply)
    }
}

/// Gemini's `generateContent` / `streamGenerateContent?alt=sse` (CRLF frames, no `[DONE]`).
struct GeminiLike;

impl Respond for GeminiLike {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let contents = body["contents"].as_array().cloned().unwrap_or_default();
        let last = contents.last().cloned().unwrap_or(Value::Null);
        let parts = last["parts"].as_array().cloned().unwrap_or_default();
        let last_role = if parts.iter().any(|p| p["functionResponse"].is_object()) {
            "tool"
        } else {
            "user"
        };
        let text: String = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        let answer = decide(
            last_role,
            &text,
            body["tools"].is_array(),
            body["generationConfig"]["responseMimeType"] == "application/json",
            "gemini",
        );
        let part = match answer {
            Answer::Text(t) => json!({"text": t}),
            Answer::Call { name, arguments } => {
                json!({"functionCall": {"name": name, "args": arguments}})
            }
        };
        let reply = json!({"candidates": [{"content": {"parts": [part], "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 6, "totalTokenCount": 26}, "modelVersion": "gemini-2.5-flash"});
        if request.url.path().ends_with(":streamGenerateContent") {
            return ResponseTemplate::new(200)
                .set_body_raw(format!("data: {reply}\r\n\r\n"), "text/event-stream");
        }
        ResponseTemplate::new(200).set_body_json(reply)
    }
}

async fn provider_server(responder: impl Respond + 'static) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::method("POST"))
        .respond_with(responder)
        .mount(&server)
        .await;
    server
}

/// Six provider servers and a gateway in front of them.
struct Fleet {
    server: Server,
    key: String,
    _providers: Vec<MockServer>,
    _dir: tempfile::TempDir,
}

async fn fleet(extra: &[(&str, &str)]) -> Fleet {
    let deepseek = provider_server(OpenAiLike {
        flavor: Flavor::DeepSeek,
        name: "deepseek",
        fail_marker: true,
    })
    .await;
    let gemini = provider_server(GeminiLike).await;
    let groq = provider_server(OpenAiLike {
        flavor: Flavor::Groq,
        name: "groq",
        fail_marker: false,
    })
    .await;
    let codestral = provider_server(OpenAiLike {
        flavor: Flavor::Codestral,
        name: "codestral",
        fail_marker: false,
    })
    .await;
    let kimi = provider_server(OpenAiLike {
        flavor: Flavor::Kimi,
        name: "kimi",
        fail_marker: false,
    })
    .await;
    let local = provider_server(OpenAiLike {
        flavor: Flavor::Local,
        name: "local",
        fail_marker: false,
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let key = create_key(dir.path(), "chat");
    let runtime = runtime_dir();
    let urls: Vec<String> = [&deepseek, &gemini, &groq, &codestral, &kimi, &local]
        .iter()
        .map(|s| s.uri())
        .collect();
    let mut env: Vec<(&str, &str)> = vec![
        ("AETHERFLOW_SANDBOX_RUNTIME", runtime.as_str()),
        ("AETHERFLOW_RETRY__MAX_ATTEMPTS", "1"),
        ("DEEPSEEK_API_KEY", "sk-ds-test-0001"),
        ("GEMINI_API_KEY", "AIza-test-0001"),
        ("GROQ_API_KEY", "gsk_test_0001"),
        ("CODESTRAL_API_KEY", "cs-test-0001"),
        ("MOONSHOT_API_KEY", "sk-kimi-test-0001"),
        ("AETHERFLOW_PROVIDERS__DEEPSEEK__BASE_URL", urls[0].as_str()),
        ("AETHERFLOW_PROVIDERS__GEMINI__BASE_URL", urls[1].as_str()),
        ("AETHERFLOW_PROVIDERS__GROQ__BASE_URL", urls[2].as_str()),
        (
            "AETHERFLOW_PROVIDERS__CODESTRAL__BASE_URL",
            urls[3].as_str(),
        ),
        ("AETHERFLOW_PROVIDERS__KIMI__BASE_URL", urls[4].as_str()),
        (
            "AETHERFLOW_PROVIDERS__OPENAI_COMPATIBLE__BASE_URL",
            urls[5].as_str(),
        ),
        ("AETHERFLOW_PROVIDERS__OPENAI_COMPATIBLE__MODEL", "llama3.2"),
    ];
    env.extend_from_slice(extra);
    let server = start_in(dir.path(), &env);
    Fleet {
        server,
        key,
        _providers: vec![deepseek, gemini, groq, codestral, kimi, local],
        _dir: dir,
    }
}

async fn post(fleet: &Fleet, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", fleet.server.base))
        .bearer_auth(&fleet.key)
        .json(&body)
        .send()
        .await
        .expect("request")
}

async fn model_ids(fleet: &Fleet) -> Vec<String> {
    let models: Value = reqwest::Client::new()
        .get(format!("{}/v1/models", fleet.server.base))
        .bearer_auth(&fleet.key)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    models["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn every_provider_answers_plain_streamed_tool_and_schema_requests() {
    let fleet = fleet(&[]).await;
    let ids = model_ids(&fleet).await;
    for expected in [
        "deepseek/",
        "gemini/",
        "groq/",
        "codestral/",
        "kimi/",
        "openai-compatible/",
        "aetherflow/fast",
        "aetherflow/build",
    ] {
        assert!(
            ids.iter().any(|id| id.starts_with(expected)),
            "{expected} in {ids:?}"
        );
    }
    for model in ids.iter().filter(|id| !id.starts_with("aetherflow/")) {
        let provider = model.split('/').next().unwrap_or_default();
        // Plain.
        let r = post(&fleet, json!({"model": model, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}], "max_tokens": 50})).await;
        assert_eq!(r.status(), 200, "{model}");
        assert_eq!(r.headers()["x-aetherflow-provider"], provider, "{model}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["object"], "chat.completion");
        assert!(
            body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Hello from"),
            "{model}: {body}"
        );
        assert_eq!(body["usage"]["prompt_tokens"], 20, "{model}: {body}");
        assert_eq!(body["usage"]["completion_tokens"], 6, "{model}: {body}");
        // Streamed, with usage at the end.
        let r = post(&fleet, json!({"model": model, "messages": [{"role": "user", "content": "Count"}], "stream": true, "stream_options": {"include_usage": true}})).await;
        assert_eq!(r.status(), 200, "{model}");
        let text = r.text().await.expect("body");
        assert!(text.trim_end().ends_with("data: [DONE]"), "{model}: {text}");
        let chunks: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).expect("chunk json"))
            .collect();
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "one, two, three", "{model}: {text}");
        assert!(
            chunks
                .iter()
                .any(|c| c["choices"][0]["finish_reason"] == "stop"),
            "{model}"
        );
        assert_eq!(
            chunks.last().expect("chunks")["usage"]["completion_tokens"],
            6,
            "{model}: {text}"
        );
        // A tool call, then its result.
        let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}}}]);
        let r = post(&fleet, json!({"model": model, "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": tools})).await;
        let body: Value = r.json().await.expect("json");
        assert_eq!(
            body["choices"][0]["finish_reason"], "tool_calls",
            "{model}: {body}"
        );
        let call = body["choices"][0]["message"]["tool_calls"][0].clone();
        assert_eq!(call["function"]["name"], "get_weather");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().expect("args"))
                .expect("json args");
        assert_eq!(args["city"], "Paris", "{model}");
        let r = post(
            &fleet,
            json!({"model": model, "tools": tools, "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "{\"temp_c\": 21}"}]}),
        )
        .await;
        let body: Value = r.json().await.expect("json");
        assert_eq!(
            body["choices"][0]["message"]["content"], "It is 21 °C in Paris.",
            "{model}: {body}"
        );
        // JSON schema output.
        let r = post(&fleet, json!({"model": model, "messages": [{"role": "user", "content": "City as JSON"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": true}}})).await;
        let body: Value = r.json().await.expect("json");
        let parsed: Value = serde_json::from_str(
            body["choices"][0]["message"]["content"]
                .as_str()
                .expect("content"),
        )
        .expect("json answer");
        assert_eq!(parsed["city"], "Paris", "{model}");
    }
}

#[tokio::test]
async fn routing_groups_fail_over_and_errors_take_openais_shape() {
    let fleet = fleet(&[]).await;
    // aetherflow/build starts with DeepSeek, which fails this prompt with a 500: Codestral answers.
    let r = post(&fleet, json!({"model": "aetherflow/build", "messages": [{"role": "user", "content": "FAIL_FIRST then answer"}]})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-aetherflow-attempts"], "2");
    assert_ne!(r.headers()["x-aetherflow-provider"], "deepseek");
    // The same for a stream: the failure comes before the first token, so it fails over.
    let r = post(&fleet, json!({"model": "aetherflow/build", "stream": true, "messages": [{"role": "user", "content": "FAIL_FIRST Count"}]})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-aetherflow-attempts"], "2");
    let provider = r.headers()["x-aetherflow-provider"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_ne!(provider, "deepseek");
    let text = r.text().await.expect("body");
    assert!(
        text.contains("one, ") && text.trim_end().ends_with("data: [DONE]"),
        "{text}"
    );
    // Provider attempts are counted, labelled by configured provider and model only.
    let admin = create_key(fleet._dir.path(), "admin");
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", fleet.server.base))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("aetherflow_provider_attempts_total")
                && l.contains("provider=\"deepseek\"")
                && l.contains("outcome=\"error\"")),
        "{metrics}"
    );
    let answered: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("aetherflow_provider_attempts_total")
                && l.contains(&format!("provider=\"{provider}\""))
                && l.contains("outcome=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        answered, 2.0,
        "the answer and the streamed answer: {metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("aetherflow_http_requests_total")
                && l.contains("route=\"/v1/chat/completions\"")),
        "{metrics}"
    );
    // Unknown model: 404 in OpenAI's shape.
    let r = post(
        &fleet,
        json!({"model": "deepseek/gpt-17", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["param"], "model");
    // A remote image URL is refused (the gateway fetches nothing).
    let r = post(&fleet, json!({"model": "gemini/gemini-2.5-flash", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://169.254.169.254/"}}]}]})).await;
    assert_eq!(r.status(), 400);
    // A bad key: 401, and no provider is called.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", fleet.server.base))
        .bearer_auth("afk_000000000000_nope")
        .json(&json!({"model": "aetherflow/fast", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn deterministic_requests_are_cached_unless_the_client_opts_out() {
    let fleet = fleet(&[]).await;
    let body = json!({"model": "deepseek/deepseek-v4-flash", "temperature": 0, "messages": [{"role": "user", "content": "Say hello"}]});
    let first = post(&fleet, body.clone()).await;
    assert_eq!(first.headers()["x-aetherflow-cache"], "miss");
    let second = post(&fleet, body.clone()).await;
    assert_eq!(second.headers()["x-aetherflow-cache"], "hit");
    assert_eq!(second.headers()["x-aetherflow-cost-micros"], "0");
    let bypass = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", fleet.server.base))
        .bearer_auth(&fleet.key)
        .header("x-aetherflow-cache", "off")
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(bypass.headers()["x-aetherflow-cache"], "off");
    let warm = json!({"model": "deepseek/deepseek-v4-flash", "temperature": 0.7, "messages": [{"role": "user", "content": "Say hello"}]});
    assert_eq!(
        post(&fleet, warm).await.headers()["x-aetherflow-cache"],
        "off"
    );
}

/// A venv with the OpenAI SDK (created once, in the user cache), or a panic saying what is
/// missing.
fn sdk_python() -> PathBuf {
    let venv = std::env::var_os("AETHERFLOW_OPENAI_SDK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir);
            home.join(".cache/aetherflow/openai-sdk-venv")
        });
    let python = venv.join("bin/python");
    let ready = |p: &PathBuf| {
        Command::new(p)
            .args([
                "-c",
                &format!(
                    "import openai, sys; sys.exit(0 if openai.__version__ == '{}' else 1)",
                    &OPENAI_SDK[8..]
                ),
            ])
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready(&python) {
        return python;
    }
    // Two test binaries may race to create it: one at a time.
    let lock = venv.with_extension("lock");
    std::fs::create_dir_all(venv.parent().expect("parent")).expect("cache folder");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .expect("lock file");
    lock_file.lock().expect("lock");
    if !ready(&python) {
        let made = Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .status();
        assert!(
            made.is_ok_and(|s| s.success()),
            "python3 -m venv failed: install python3 with venv (Debian: python3-venv)"
        );
        let pip = Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                OPENAI_SDK,
            ])
            .status();
        assert!(
            pip.is_ok_and(|s| s.success()),
            "pip install {OPENAI_SDK} failed: the SDK test needs PyPI (or set AETHERFLOW_OPENAI_SDK_VENV to a venv that has it)"
        );
    }
    assert!(
        ready(&python),
        "{OPENAI_SDK} is not importable from {}",
        python.display()
    );
    python
}

fn sdk(python: &PathBuf, base: &str, key: &str, model: &str, scenario: &str) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/sdk/openai_client.py");
    let out = Command::new(python)
        .arg(script)
        .args([base, key, model, scenario])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{scenario} on {model}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{scenario}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test]
async fn the_official_openai_sdk_works_against_the_gateway() {
    let python = sdk_python();
    let all = fleet(&[]).await;
    let base = all.server.base.clone();
    let key = all.key.clone();
    let ids = model_ids(&all).await;
    let python_ref = &python;
    for model in ids.iter().filter(|id| !id.starts_with("aetherflow/")) {
        let provider = model.split('/').next().unwrap_or_default();
        let plain = sdk(python_ref, &base, &key, model, "plain");
        assert!(
            plain["content"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Hello from"),
            "{model}: {plain}"
        );
        assert_eq!(plain["provider"], provider);
        assert_eq!(plain["completion_tokens"], 6);
        let stream = sdk(python_ref, &base, &key, model, "stream");
        assert_eq!(stream["content"], "one, two, three", "{model}: {stream}");
        assert_eq!(stream["usage_completion_tokens"], 6, "{model}: {stream}");
        let tools = sdk(python_ref, &base, &key, model, "tools");
        assert_eq!(tools["tool"], "get_weather", "{model}: {tools}");
        assert_eq!(tools["arguments"]["city"], "Paris");
        assert_eq!(
            tools["second_content"], "It is 21 °C in Paris.",
            "{model}: {tools}"
        );
        let schema = sdk(python_ref, &base, &key, model, "schema");
        assert_eq!(schema["parsed"]["city"], "Paris", "{model}: {schema}");
    }
    let failover = sdk(python_ref, &base, &key, "aetherflow/build", "failover");
    assert_eq!(failover["attempts"], "2", "{failover}");
    assert_ne!(failover["provider"], "deepseek");
    let bad = sdk(python_ref, &base, &key, "aetherflow/build", "badkey");
    assert_eq!(bad["status"], 401, "{bad}");
    assert_eq!(bad["error_class"], "AuthenticationError");
    drop(all);

    // A key's rate (3 a minute) runs out: 429 with Retry-After.
    let slow = fleet(&[("AETHERFLOW_SERVER__RATE_PER_MINUTE", "3")]).await;
    let limited = sdk(
        python_ref,
        &slow.server.base,
        &slow.key,
        "aetherflow/build",
        "ratelimit",
    );
    assert_eq!(limited["status"], 429, "{limited}");
    assert!(
        limited["retry_after"]
            .as_str()
            .is_some_and(|s| s.parse::<u64>().is_ok()),
        "{limited}"
    );
    drop(slow);

    // A daily cap smaller than the request's worst case: refused before any call.
    let capped = fleet_with_cap().await;
    let refused = sdk(
        python_ref,
        &capped.server.base,
        &capped.key,
        "deepseek/deepseek-v4-flash",
        "budget",
    );
    assert_eq!(refused["status"], 402, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cap"),
        "{refused}"
    );
}

async fn fleet_with_cap() -> Fleet {
    fleet(&[("AETHERFLOW_SERVER__KEY_DAY_USD", "0.000010")]).await
}

#[tokio::test]
async fn gateway_calls_are_traced_over_otlp_continuing_the_callers_trace() {
    let collector = support::otlp_collector().await;
    let endpoint = collector.uri();
    let fleet = fleet(&[
        ("AETHERFLOW_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
        ("AETHERFLOW_TELEMETRY__PROTOCOL", "http/json"),
        ("AETHERFLOW_TELEMETRY__EXPORT_INTERVAL_MS", "100"),
    ])
    .await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let prompt = "Say hello PROMPT-MARKER-5e2d";
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", fleet.server.base))
        .bearer_auth(&fleet.key)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({"model": "deepseek/deepseek-v4-flash", "messages": [{"role": "user", "content": prompt}], "max_tokens": 50}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let mut found = None;
    for _ in 0..100 {
        let (spans, raw) = received_spans(&collector).await;
        let http = spans
            .iter()
            .find(|s| s.0 == trace_id && s.3 == "POST /v1/chat/completions")
            .cloned();
        let attempt = spans
            .iter()
            .find(|s| s.0 == trace_id && s.3.starts_with("chat deepseek/"))
            .cloned();
        if let (Some(http), Some(attempt)) = (http, attempt) {
            found = Some((http, attempt, raw));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let Some((http, attempt, raw)) = found else {
        let (spans, raw) = received_spans(&collector).await;
        let names: Vec<(&str, &str)> = spans.iter().map(|s| (s.0.as_str(), s.3.as_str())).collect();
        panic!(
            "the request's spans did not reach the collector: got {names:?} from {} bytes",
            raw.len()
        );
    };
    assert_eq!(
        http.2, caller_span,
        "the HTTP span continues the caller's trace"
    );
    assert_eq!(
        attempt.2, http.1,
        "the provider attempt is a child of the request"
    );
    let get = support::span_attr;
    assert_eq!(get(&http, "http.response.status_code"), "200");
    assert_eq!(get(&attempt, "gen_ai.system"), "deepseek");
    assert_eq!(get(&attempt, "outcome"), "ok");
    assert_eq!(get(&attempt, "gen_ai.usage.input_tokens"), "20");
    assert_eq!(get(&attempt, "gen_ai.usage.output_tokens"), "6");
    assert!(!raw.contains("PROMPT-MARKER-5e2d"), "a prompt was exported");
    assert!(!raw.contains("Hello from"), "an answer was exported");
    assert!(!raw.contains(&fleet.key), "an API key was exported");
    assert!(
        !raw.contains("sk-ds-test-0001"),
        "a provider key was exported"
    );
}

#[tokio::test]
async fn configured_routing_groups_route_in_their_order_and_fail_over() {
    let fleet = fleet(&[
        (
            "AETHERFLOW_GATEWAY__GROUPS__CHEAP",
            "deepseek, groq/llama-3.3-70b-versatile",
        ),
        ("AETHERFLOW_GATEWAY__GROUPS__NOWHERE", "nonesuch"),
    ])
    .await;
    let ids = model_ids(&fleet).await;
    for group in ["aetherflow/cheap", "aetherflow/nowhere", "aetherflow/fast"] {
        assert!(ids.iter().any(|id| id == group), "{group} in {ids:?}");
    }
    // The group's first target answers.
    let r = post(&fleet, json!({"model": "aetherflow/cheap", "messages": [{"role": "user", "content": "Say hello"}]})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-aetherflow-provider"], "deepseek");
    // DeepSeek fails this prompt: the group's next target answers, with the model it names.
    let r = post(&fleet, json!({"model": "aetherflow/cheap", "messages": [{"role": "user", "content": "FAIL_FIRST then answer"}]})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-aetherflow-attempts"], "2");
    assert_eq!(r.headers()["x-aetherflow-provider"], "groq");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["model"], "groq/llama-3.3-70b-versatile", "{body}");
    // A group whose providers are not configured here says so.
    let r = post(
        &fleet,
        json!({"model": "aetherflow/nowhere", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "group_unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("gateway.groups.nowhere"),
        "{body}"
    );
}
