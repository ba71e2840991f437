//! Codestral against a local server that is as strict as Mistral: any field Mistral does not
//! define gets 422 `extra_forbidden` (spec §4, checklist 5).

mod common;

use aetherflow_provider::{FinishReason, Provider, StreamEvent};
use aetherflow_providers::codestral::{self, FimRequest};
use common::*;
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const KEY: &str = "cs-test-0000000000";

/// Answers like Mistral: 422 with `message` as an object for any unknown body field.
struct StrictMistral {
    allowed: &'static [&'static str],
    ok: ResponseTemplate,
}

impl Respond for StrictMistral {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let extra: Vec<&String> = body
            .as_object()
            .map(|o| {
                o.keys()
                    .filter(|k| !self.allowed.contains(&k.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        match extra.first() {
            Some(field) => ResponseTemplate::new(422).set_body_raw(
                format!(r#"{{"object":"error","message":{{"detail":[{{"type":"extra_forbidden","loc":["body","{field}"],"msg":"Extra inputs are not permitted","input":1}}]}},"type":"invalid_request_error","param":null,"code":null}}"#),
                "application/json",
            ),
            None => self.ok.clone(),
        }
    }
}

const CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "stream",
    "stop",
    "random_seed",
    "metadata",
    "response_format",
    "tools",
    "tool_choice",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "prediction",
    "parallel_tool_calls",
    "reasoning_effort",
    "prompt_mode",
    "guardrails",
    "prompt_cache_key",
    "safe_prompt",
];
const FIM_FIELDS: &[&str] = &[
    "model",
    "prompt",
    "suffix",
    "temperature",
    "top_p",
    "max_tokens",
    "min_tokens",
    "stream",
    "stop",
    "random_seed",
    "metadata",
    "prompt_cache_key",
];

const ANSWER: &str = r#"{"id":"5d8c2b7e41f94a0c9e3f6a1b2c7d8e90","object":"chat.completion","model":"codestral-2508","usage":{"prompt_tokens":21,"completion_tokens":8,"total_tokens":29},"created":1763990900,"choices":[{"index":0,"message":{"role":"assistant","content":"return n % 2 == 0","tool_calls":null,"prefix":false},"finish_reason":"stop"}]}"#;

#[tokio::test]
async fn chat_sends_only_fields_mistral_accepts() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(StrictMistral {
            allowed: CHAT_FIELDS,
            ok: ResponseTemplate::new(200).set_body_raw(ANSWER, "application/json"),
        })
        .mount(&server)
        .await;
    let adapter =
        codestral::adapter(config(&server, "/v1", pool("codestral", &[KEY]))).expect("adapter");
    let mut req = request("codestral-latest");
    req.json_mode = true;
    let r = adapter
        .chat(&req)
        .await
        .expect("no 422: every field we send is one Mistral defines");
    assert_eq!(r.text, "return n % 2 == 0");
    let sent = sent_body(&server).await;
    assert_eq!(sent["random_seed"], 7);
    assert_eq!(sent["max_tokens"], 64);
}

#[tokio::test]
async fn streaming_chat_has_no_stream_options_and_reads_the_last_chunk() {
    let server = MockServer::start().await;
    let chunks = [
        r#"{"id":"9e1a","object":"chat.completion.chunk","created":1763990960,"model":"codestral-latest","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
        r#"{"id":"9e1a","object":"chat.completion.chunk","created":1763990960,"model":"codestral-latest","choices":[{"index":0,"delta":{"content":"fn double(x: i32) -> i32"},"finish_reason":null}]}"#,
        r#"{"id":"9e1a","object":"chat.completion.chunk","created":1763990960,"model":"codestral-latest","choices":[{"index":0,"delta":{"content":" { x * 2 }"},"finish_reason":"stop"}],"usage":{"prompt_tokens":22,"total_tokens":33,"completion_tokens":11}}"#,
        "[DONE]",
    ];
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(StrictMistral {
            allowed: CHAT_FIELDS,
            ok: ResponseTemplate::new(200).set_body_raw(sse(&chunks, "\n\n"), "text/event-stream"),
        })
        .mount(&server)
        .await;
    let adapter =
        codestral::adapter(config(&server, "/v1", pool("codestral", &[KEY]))).expect("adapter");
    let all = events(
        adapter
            .chat_stream(&request("codestral-latest"))
            .await
            .expect("stream"),
    )
    .await;
    let text: String = all
        .iter()
        .filter_map(|e| match e {
            Ok(StreamEvent::Text(t)) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "fn double(x: i32) -> i32 { x * 2 }", "{all:?}");
    assert!(
        all.iter()
            .any(|e| matches!(e, Ok(StreamEvent::Usage(u)) if u.output_tokens == 11))
    );
}

#[tokio::test]
async fn fim_is_a_first_class_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/fim/completions"))
        .respond_with(StrictMistral {
            allowed: FIM_FIELDS,
            ok: ResponseTemplate::new(200).set_body_raw(ANSWER, "application/json"),
        })
        .mount(&server)
        .await;
    let adapter =
        codestral::adapter(config(&server, "/v1", pool("codestral", &[KEY]))).expect("adapter");
    let r = adapter
        .fim(&FimRequest {
            model: "codestral-latest".into(),
            prompt: "def is_even(n: int) -> bool:\n    ".into(),
            suffix: Some("\n\nprint(is_even(4))".into()),
            max_output_tokens: Some(64),
            min_tokens: Some(1),
            temperature: Some(0.0),
            stop: vec!["\n\n".into()],
            seed: Some(42),
        })
        .await
        .expect("fim answer");
    assert_eq!(r.text, "return n % 2 == 0");
    assert_eq!(r.usage.input_tokens, 21);
    let sent = sent_body(&server).await;
    assert_eq!(sent["suffix"], "\n\nprint(is_even(4))");
    assert!(sent.get("messages").is_none());
}

#[tokio::test]
async fn the_strict_mock_catches_a_forbidden_field() {
    // The mock itself must fail loudly, or the tests above prove nothing.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(StrictMistral {
            allowed: &["model", "messages"],
            ok: ResponseTemplate::new(200).set_body_raw(ANSWER, "application/json"),
        })
        .mount(&server)
        .await;
    let adapter =
        codestral::adapter(config(&server, "/v1", pool("codestral", &[KEY]))).expect("adapter");
    let err = adapter
        .chat(&request("codestral-latest"))
        .await
        .expect_err("422");
    assert_eq!(err.kind(), "invalid_request");
    assert!(
        err.to_string()
            .contains("Extra inputs are not permitted (extra_forbidden)"),
        "{err}"
    );
}

#[tokio::test]
async fn model_length_and_error_shapes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            ANSWER.replace(
                "\"finish_reason\":\"stop\"",
                "\"finish_reason\":\"model_length\"",
            ),
            "application/json",
        ))
        .mount(&server)
        .await;
    let adapter =
        codestral::adapter(config(&server, "/v1", pool("codestral", &[KEY]))).expect("adapter");
    let r = adapter
        .chat(&request("codestral-latest"))
        .await
        .expect("answer");
    assert_eq!(r.finish_reason, FinishReason::ContextLimit);

    for (status, body, kind) in [
        (401, r#"{"detail":"Unauthorized"}"#, "auth"),
        (
            401,
            r#"{"message":"Unauthorized","request_id":"933f23"}"#,
            "auth",
        ),
        (404, r#"{"detail":"Not Found"}"#, "model_not_found"),
        (
            429,
            r#"{"message":"Requests rate limit exceeded"}"#,
            "rate_limited",
        ),
        (
            500,
            r#"{"object":"error","message":"Internal error","type":"server_error","param":null,"code":null}"#,
            "server",
        ),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_raw(body, "application/json"))
            .mount(&server)
            .await;
        let adapter =
            codestral::adapter(config(&server, "/v1", pool("codestral", &[KEY]))).expect("adapter");
        let err = adapter
            .chat(&request("codestral-latest"))
            .await
            .expect_err("error");
        assert_eq!(err.kind(), kind, "{status} {body}");
    }
}
