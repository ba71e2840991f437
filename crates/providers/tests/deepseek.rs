//! DeepSeek against a local server speaking its wire format (spec §1, checklist items 1–2).

mod common;

use aetherflow_provider::{FinishReason, Message, Provider, StreamEvent, collect_stream};
use aetherflow_providers::deepseek;
use common::*;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const OK: &str = r#"{"id":"0b6c1e84","object":"chat.completion","created":1763990400,"model":"deepseek-v4-flash","choices":[{"index":0,"message":{"role":"assistant","content":"{\"city\": \"Tokyo\"}"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":27,"completion_tokens":7,"total_tokens":34,"prompt_tokens_details":{"cached_tokens":20},"prompt_cache_hit_tokens":20,"prompt_cache_miss_tokens":7},"system_fingerprint":"fp_3b1e0d7a22"}"#;

#[tokio::test]
async fn sends_the_documented_request_and_tolerates_keep_alive_lines() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .and(header("authorization", "Bearer sk-test-0000"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(format!("\n\n\n{OK}"), "application/json"),
        )
        .mount(&server)
        .await;
    let adapter = deepseek::adapter(config(&server, "", pool("deepseek", &["sk-test-0000"])))
        .expect("adapter");
    let mut req = request("deepseek-v4-flash");
    req.json_mode = true;
    let r = adapter.chat(&req).await.expect("answer");
    assert_eq!(r.text, "{\"city\": \"Tokyo\"}");
    assert_eq!(r.usage.input_tokens, 27);
    assert_eq!(r.usage.cached_input_tokens, 20);
    assert_eq!(r.finish_reason, FinishReason::Stop);

    let body = sent_body(&server).await;
    assert_eq!(
        body["messages"][0],
        serde_json::json!({"role":"system","content":"You answer tersely."})
    );
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(body["response_format"]["type"], "json_object");
    assert!(
        body.get("seed").is_none(),
        "DeepSeek has no seed field: {body}"
    );
    assert!(body.get("max_completion_tokens").is_none());
    let cost = r
        .usage
        .cost(&adapter.price("deepseek-v4-flash").expect("price"));
    // 7 uncached × 0.14 + 20 cached × 0.0028 + 7 out × 0.28 per million tokens, rounded up.
    assert_eq!(cost.as_micros(), 3);
}

#[tokio::test]
async fn streams_reasoning_then_content_past_keep_alive_comments() {
    let server = MockServer::start().await;
    let chunks = [
        r#"{"id":"7d","object":"chat.completion.chunk","model":"deepseek-v4-pro","choices":[{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":""},"finish_reason":null}]}"#,
        r#"{"id":"7d","object":"chat.completion.chunk","model":"deepseek-v4-pro","choices":[{"index":0,"delta":{"content":null,"reasoning_content":"The capital is Tokyo."},"finish_reason":null}]}"#,
        r#"{"id":"7d","object":"chat.completion.chunk","model":"deepseek-v4-pro","choices":[{"index":0,"delta":{"content":"Tokyo","reasoning_content":null},"finish_reason":null}]}"#,
        r#"{"id":"7d","object":"chat.completion.chunk","model":"deepseek-v4-pro","choices":[{"index":0,"delta":{"content":"","reasoning_content":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21,"completion_tokens_details":{"reasoning_tokens":7},"prompt_cache_hit_tokens":0,"prompt_cache_miss_tokens":12}}"#,
        "[DONE]",
    ];
    let body = format!(": keep-alive\n\n: keep-alive\n\n{}", sse(&chunks, "\n\n"));
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "text/event-stream"))
        .mount(&server)
        .await;
    let adapter = deepseek::adapter(config(&server, "", pool("deepseek", &["sk-test-0000"])))
        .expect("adapter");
    let stream = adapter
        .chat_stream(&request("deepseek-v4-pro"))
        .await
        .expect("stream");
    let all = events(stream).await;
    assert!(
        matches!(&all[0], Ok(StreamEvent::Reasoning(r)) if r == "The capital is Tokyo."),
        "{all:?}"
    );
    assert!(matches!(&all[1], Ok(StreamEvent::Text(t)) if t == "Tokyo"));
    let usages: Vec<_> = all
        .iter()
        .filter(|e| matches!(e, Ok(StreamEvent::Usage(_))))
        .collect();
    assert_eq!(usages.len(), 1, "usage reported once: {all:?}");
    assert!(matches!(
        all.last(),
        Some(Ok(StreamEvent::Finish(FinishReason::Stop)))
    ));
    let sent = sent_body(&server).await;
    assert_eq!(sent["stream"], true);

    // The same stream, collected, as a caller of chat() would see it.
    let server2 = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            format!(": keep-alive\n\n{}", sse(&chunks, "\n\n")),
            "text/event-stream",
        ))
        .mount(&server2)
        .await;
    let adapter = deepseek::adapter(config(&server2, "", pool("deepseek", &["sk-test-0000"])))
        .expect("adapter");
    let r = collect_stream(
        "deepseek-v4-pro",
        adapter
            .chat_stream(&request("deepseek-v4-pro"))
            .await
            .expect("stream"),
    )
    .await
    .expect("complete");
    assert_eq!(r.text, "Tokyo");
    assert_eq!(r.usage.reasoning_tokens, 7);
}

#[tokio::test]
async fn insufficient_system_resource_is_a_retryable_error() {
    let server = MockServer::start().await;
    let body = OK.replace(
        "\"finish_reason\":\"stop\"",
        "\"finish_reason\":\"insufficient_system_resource\"",
    );
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .mount(&server)
        .await;
    let adapter = deepseek::adapter(config(&server, "", pool("deepseek", &["sk-test-0000"])))
        .expect("adapter");
    let err = adapter
        .chat(&request("deepseek-v4-flash"))
        .await
        .expect_err("cut off");
    assert_eq!(err.kind(), "server");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn errors_map_to_the_taxonomy_and_bad_keys_are_quarantined() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer sk-bad-key-000001"))
        .respond_with(ResponseTemplate::new(401).set_body_raw(
            r#"{"error":{"message":"Authentication Fails, Your api key: ****0001 is invalid","type":"authentication_error","param":null,"code":"invalid_request_error"}}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer sk-good-key-00002"))
        .respond_with(ResponseTemplate::new(402).set_body_raw(
            r#"{"error":{"message":"Insufficient Balance","type":"unknown_error","param":null,"code":"invalid_request_error"}}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    let keys = pool("deepseek", &["sk-bad-key-000001", "sk-good-key-00002"]);
    let adapter = deepseek::adapter(config(&server, "", keys.clone())).expect("adapter");
    // Key 1 is refused (401), so the same request goes out again on key 2, which is out of
    // money (402): both end up quarantined and the error says why the last one failed.
    let first = adapter
        .chat(&request("deepseek-v4-flash"))
        .await
        .expect_err("both refused");
    assert_eq!(first.kind(), "insufficient_balance");
    let status = keys.status();
    assert_eq!(status[0].quarantined.as_deref(), Some("auth"));
    assert_eq!(
        status[1].quarantined.as_deref(),
        Some("insufficient_balance")
    );
    // Both keys are now quarantined: no further HTTP call is made.
    let again = adapter
        .chat(&request("deepseek-v4-flash"))
        .await
        .expect_err("no key left");
    assert!(
        again
            .to_string()
            .contains("every key of deepseek was refused"),
        "{again}"
    );
    assert_eq!(
        server.received_requests().await.expect("recording").len(),
        2
    );
}

#[tokio::test]
async fn context_overflow_is_typed_with_its_limit() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_raw(
            r#"{"error":{"message":"This model's maximum context length is 131072 tokens. However, you requested 131134 tokens (122942 in the messages, 8192 in the completion). Please reduce the length of the messages or completion.","type":"invalid_request_error","param":null,"code":"invalid_request_error"}}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    let adapter = deepseek::adapter(config(&server, "", pool("deepseek", &["sk-test-0000"])))
        .expect("adapter");
    let err = adapter
        .chat(&request("deepseek-v4-flash"))
        .await
        .expect_err("overflow");
    assert!(
        matches!(
            err,
            aetherflow_provider::ProviderError::ContextLengthExceeded {
                limit: Some(131_072),
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn reasoning_goes_back_on_later_assistant_turns() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(OK, "application/json"))
        .mount(&server)
        .await;
    let adapter = deepseek::adapter(config(&server, "", pool("deepseek", &["sk-test-0000"])))
        .expect("adapter");
    let mut req = request("deepseek-v4-pro");
    let mut earlier = Message::assistant("Tokyo");
    earlier.reasoning = Some("Japan's capital is Tokyo.".into());
    req.messages.push(earlier);
    req.messages.push(Message::user("And of France?"));
    adapter.chat(&req).await.expect("answer");
    let body = sent_body(&server).await;
    assert_eq!(body["messages"][2]["role"], "assistant");
    assert_eq!(
        body["messages"][2]["reasoning_content"],
        "Japan's capital is Tokyo."
    );
}

#[tokio::test]
async fn a_refused_key_is_replaced_by_the_next_within_the_same_call() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer sk-revoked-0000001"))
        .respond_with(ResponseTemplate::new(401).set_body_raw(
            r#"{"error":{"message":"Authentication Fails (no such user)","type":"authentication_error","param":null,"code":"invalid_request_error"}}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer sk-working-000002"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(OK, "application/json"))
        .mount(&server)
        .await;
    let keys = pool("deepseek", &["sk-revoked-0000001", "sk-working-000002"]);
    let adapter = deepseek::adapter(config(&server, "", keys)).expect("adapter");
    let r = adapter
        .chat(&request("deepseek-v4-flash"))
        .await
        .expect("the second key answers");
    assert_eq!(r.key_id.as_deref(), Some("deepseek#2"));
    let r = adapter
        .chat(&request("deepseek-v4-flash"))
        .await
        .expect("still the second key");
    assert_eq!(r.key_id.as_deref(), Some("deepseek#2"));
    assert_eq!(
        server.received_requests().await.expect("recording").len(),
        3
    );
}

#[tokio::test]
async fn a_request_with_images_is_refused_before_it_is_sent() {
    let server = MockServer::start().await;
    let adapter = deepseek::adapter(config(&server, "", pool("deepseek", &["sk-ds-test-0001"])))
        .expect("adapter");
    let mut req = request("deepseek-chat");
    req.messages = vec![aetherflow_provider::Message::user_with_images(
        "Describe",
        vec![aetherflow_provider::Image::from_bytes("image/png", b"png")],
    )];
    let err = adapter.chat(&req).await.expect_err("no vision");
    assert_eq!(err.kind(), "invalid_request", "{err}");
    assert!(err.to_string().contains("reads no images"), "{err}");
    assert!(
        server
            .received_requests()
            .await
            .expect("recording")
            .is_empty(),
        "nothing was sent"
    );
}
