//! Groq against a local server speaking its wire format (spec §3, checklist 4).

mod common;

use std::time::Duration;

use aetherflow_provider::{Provider, StreamEvent};
use aetherflow_providers::groq;
use common::*;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "gsk_test0000000000";

fn limits(t: ResponseTemplate) -> ResponseTemplate {
    t.insert_header("x-ratelimit-limit-requests", "14400")
        .insert_header("x-ratelimit-limit-tokens", "18000")
        .insert_header("x-ratelimit-remaining-requests", "14370")
        .insert_header("x-ratelimit-remaining-tokens", "17997")
        .insert_header("x-ratelimit-reset-requests", "2m59.56s")
        .insert_header("x-ratelimit-reset-tokens", "7.66s")
        .insert_header("x-request-id", "req_01kmzq8x3bfe2t9v0wq7c5d1ha")
}

#[tokio::test]
async fn uses_the_openai_path_and_max_completion_tokens() {
    let server = MockServer::start().await;
    let body = r#"{"id":"chatcmpl-3e9b","object":"chat.completion","created":1763990700,"model":"llama-3.3-70b-versatile","choices":[{"index":0,"message":{"role":"assistant","content":"Tokyo"},"logprobs":null,"finish_reason":"stop"}],"usage":{"queue_time":0.04,"prompt_tokens":45,"prompt_time":0.0027,"completion_tokens":3,"completion_time":0.0045,"total_tokens":48,"total_time":0.0072},"usage_breakdown":null,"system_fingerprint":"fp_4e5a1f2b9c","x_groq":{"id":"req_01","seed":1234},"service_tier":"on_demand"}"#;
    Mock::given(method("POST"))
        .and(path("/openai/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(limits(
            ResponseTemplate::new(200).set_body_raw(body, "application/json"),
        ))
        .mount(&server)
        .await;
    let adapter = groq::adapter(config(&server, "", pool("groq", &[KEY]))).expect("adapter");
    let r = adapter
        .chat(&request("llama-3.3-70b-versatile"))
        .await
        .expect("answer");
    assert_eq!(r.text, "Tokyo");
    assert_eq!(r.usage.total_tokens(), 48);
    let sent = sent_body(&server).await;
    assert_eq!(sent["max_completion_tokens"], 64);
    assert!(sent.get("max_tokens").is_none());
    assert_eq!(sent["seed"], 7);
}

#[tokio::test]
async fn stream_usage_is_counted_once_despite_x_groq_and_the_extra_chunk() {
    let server = MockServer::start().await;
    let chunks = [
        r#"{"id":"chatcmpl-8a","object":"chat.completion.chunk","model":"llama-3.3-70b-versatile","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"x_groq":{"id":"req_01","seed":998877}}"#,
        r#"{"id":"chatcmpl-8a","object":"chat.completion.chunk","model":"llama-3.3-70b-versatile","choices":[{"index":0,"delta":{"content":"Tokyo"},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-8a","object":"chat.completion.chunk","model":"llama-3.3-70b-versatile","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"x_groq":{"id":"req_01","usage":{"queue_time":0.03,"prompt_tokens":45,"completion_tokens":2,"total_tokens":47}},"usage":{"queue_time":0.03,"prompt_tokens":45,"completion_tokens":2,"total_tokens":47}}"#,
        r#"{"id":"chatcmpl-8a","object":"chat.completion.chunk","model":"llama-3.3-70b-versatile","choices":[],"usage":{"queue_time":0.03,"prompt_tokens":45,"completion_tokens":2,"total_tokens":47},"service_tier":"on_demand"}"#,
        "[DONE]",
    ];
    Mock::given(method("POST"))
        .and(path("/openai/v1/chat/completions"))
        .respond_with(limits(
            ResponseTemplate::new(200).set_body_raw(sse(&chunks, "\n\n"), "text/event-stream"),
        ))
        .mount(&server)
        .await;
    let adapter = groq::adapter(config(&server, "", pool("groq", &[KEY]))).expect("adapter");
    let all = events(
        adapter
            .chat_stream(&request("llama-3.3-70b-versatile"))
            .await
            .expect("stream"),
    )
    .await;
    let usages: Vec<_> = all
        .iter()
        .filter_map(|e| match e {
            Ok(StreamEvent::Usage(u)) => Some(*u),
            _ => None,
        })
        .collect();
    assert_eq!(usages.len(), 1, "{all:?}");
    assert_eq!(usages[0].total_tokens(), 47);
    let sent = sent_body(&server).await;
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn rate_limits_honour_retry_after_and_rest_the_key() {
    let server = MockServer::start().await;
    let body = r#"{"error":{"message":"Rate limit reached for model `llama-3.3-70b-versatile` in organization `org_01` service tier `on_demand` on tokens per minute (TPM): Limit 12000, Used 10250, Requested 3900. Please try again in 16.24s.","type":"tokens","code":"rate_limit_exceeded"}}"#;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .set_body_raw(body, "application/json")
                .insert_header("retry-after", "17")
                .insert_header("x-ratelimit-remaining-tokens", "0")
                .insert_header("x-ratelimit-reset-tokens", "16.24s"),
        )
        .mount(&server)
        .await;
    let keys = pool("groq", &[KEY]);
    let adapter = groq::adapter(config(&server, "", keys.clone())).expect("adapter");
    let err = adapter
        .chat(&request("llama-3.3-70b-versatile"))
        .await
        .expect_err("429");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(17)));
    assert!(err.is_retryable());
    let status = keys.status();
    assert!(
        status[0]
            .resting_for
            .is_some_and(|d| d > Duration::from_secs(15)),
        "{status:?}"
    );
    // The only key rests: the next call fails fast without reaching the server.
    let again = adapter
        .chat(&request("llama-3.3-70b-versatile"))
        .await
        .expect_err("resting");
    assert_eq!(again.kind(), "rate_limited");
    assert_eq!(
        server.received_requests().await.expect("recording").len(),
        1
    );
}

#[tokio::test]
async fn a_request_larger_than_the_minute_budget_is_not_retryable() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(413).set_body_raw(
            r#"{"error":{"message":"Request too large for model `llama-3.1-8b-instant` in organization `org_01` on tokens per minute (TPM): Limit 6000, Requested 15041, please reduce your message size and try again.","type":"tokens","code":"rate_limit_exceeded"}}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    let adapter = groq::adapter(config(&server, "", pool("groq", &[KEY]))).expect("adapter");
    let err = adapter
        .chat(&request("llama-3.1-8b-instant"))
        .await
        .expect_err("413");
    assert!(!err.is_retryable());
    assert_eq!(
        err.fallback_class(),
        aetherflow_provider::FallbackClass::ContextWindow
    );
}

#[tokio::test]
async fn decommissioned_models_are_model_not_found() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_raw(
            r#"{"error":{"message":"The model `moonshotai/kimi-k2-instruct-0905` has been decommissioned and is no longer supported.","type":"invalid_request_error","code":"model_decommissioned"}}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    let adapter = groq::adapter(config(&server, "", pool("groq", &[KEY]))).expect("adapter");
    let err = adapter
        .chat(&request("moonshotai/kimi-k2-instruct-0905"))
        .await
        .expect_err("retired");
    assert_eq!(err.kind(), "model_not_found");
}

#[tokio::test]
async fn a_success_that_spends_the_budget_rests_the_key_until_the_reset() {
    let server = MockServer::start().await;
    let body = r#"{"model":"llama-3.1-8b-instant","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(body, "application/json")
                .insert_header("x-ratelimit-remaining-requests", "0")
                .insert_header("x-ratelimit-reset-requests", "2m59.56s")
                .insert_header("x-ratelimit-remaining-tokens", "5000")
                .insert_header("x-ratelimit-reset-tokens", "7.66s"),
        )
        .mount(&server)
        .await;
    let keys = pool("groq", &[KEY, "gsk_second_key_0002"]);
    let adapter = groq::adapter(config(&server, "", keys.clone())).expect("adapter");
    adapter
        .chat(&request("llama-3.1-8b-instant"))
        .await
        .expect("answer");
    let status = keys.status();
    assert!(
        status[0]
            .resting_for
            .is_some_and(|d| d > Duration::from_secs(170)),
        "{status:?}"
    );
    assert!(status[1].resting_for.is_none());
    // The next call goes out on the other key.
    adapter
        .chat(&request("llama-3.1-8b-instant"))
        .await
        .expect("answer");
    let sent = server.received_requests().await.expect("recording");
    assert_eq!(
        sent[1]
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer gsk_second_key_0002")
    );
}
