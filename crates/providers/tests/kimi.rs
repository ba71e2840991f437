//! Kimi against a local server speaking Moonshot's wire format (spec §5, checklist 6).

mod common;

use aetherflow_provider::{Provider, StreamEvent};
use aetherflow_providers::kimi;
use common::*;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "sk-kimi-test-000000";

#[tokio::test]
async fn non_streaming_reads_cached_tokens_at_the_top_level() {
    let server = MockServer::start().await;
    let body = r#"{"id":"chatcmpl-6924","object":"chat.completion","created":1763991000,"model":"kimi-k2.6","choices":[{"index":0,"message":{"role":"assistant","content":"{\"city\": \"Tokyo\"}"},"finish_reason":"stop"}],"usage":{"prompt_tokens":30,"completion_tokens":7,"total_tokens":37,"cached_tokens":16,"prompt_tokens_details":{"cached_tokens":0}},"system_fingerprint":"fpv0_3a9c71d2"}"#;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .mount(&server)
        .await;
    let adapter = kimi::adapter(config(&server, "/v1", pool("kimi", &[KEY]))).expect("adapter");
    let r = adapter.chat(&request("kimi-k2.6")).await.expect("answer");
    assert_eq!(r.usage.cached_input_tokens, 16);
    let sent = sent_body(&server).await;
    assert_eq!(sent["max_completion_tokens"], 64);
    assert!(sent.get("seed").is_none());
}

#[tokio::test]
async fn stream_usage_is_read_inside_the_choice() {
    let server = MockServer::start().await;
    let chunks = [
        r#"{"id":"chatcmpl-6924","object":"chat.completion.chunk","created":1763991060,"model":"kimi-k2.6","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"system_fingerprint":"fpv0_3a9c71d2"}"#,
        r#"{"id":"chatcmpl-6924","object":"chat.completion.chunk","created":1763991060,"model":"kimi-k2.6","choices":[{"index":0,"delta":{"content":"Tokyo"},"finish_reason":null}],"system_fingerprint":"fpv0_3a9c71d2"}"#,
        r#"{"id":"chatcmpl-6924","object":"chat.completion.chunk","created":1763991060,"model":"kimi-k2.6","choices":[{"index":0,"delta":{},"finish_reason":"stop","usage":{"prompt_tokens":18,"completion_tokens":2,"total_tokens":20,"cached_tokens":4}}],"system_fingerprint":"fpv0_3a9c71d2"}"#,
        "[DONE]",
    ];
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(sse(&chunks, "\n\n"), "text/event-stream"),
        )
        .mount(&server)
        .await;
    let adapter = kimi::adapter(config(&server, "/v1", pool("kimi", &[KEY]))).expect("adapter");
    let all = events(
        adapter
            .chat_stream(&request("kimi-k2.6"))
            .await
            .expect("stream"),
    )
    .await;
    let usage = all
        .iter()
        .find_map(|e| match e {
            Ok(StreamEvent::Usage(u)) => Some(*u),
            _ => None,
        })
        .expect("usage from choices[0].usage");
    assert_eq!(
        (
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_input_tokens
        ),
        (18, 2, 4)
    );
    let sent = sent_body(&server).await;
    assert!(sent.get("stream_options").is_none());
}

#[tokio::test]
async fn kimi_errors_are_typed() {
    for (status, body, kind) in [
        (
            403,
            r#"{"error":{"message":"Your account org-test<ak-test> is suspended, please check your plan and billing details","type":"exceeded_current_quota_error"}}"#,
            "insufficient_balance",
        ),
        (
            429,
            r#"{"error":{"message":"The engine is currently overloaded, please try again later","type":"engine_overloaded_error"}}"#,
            "server",
        ),
        (
            400,
            r#"{"error":{"type":"content_filter","message":"The request was rejected because it was considered high risk"}}"#,
            "content_filtered",
        ),
        (
            400,
            r#"{"error":{"type":"invalid_request_error","message":"Your request exceeded model token limit : 262144"}}"#,
            "context_length_exceeded",
        ),
        (
            401,
            r#"{"error":{"type":"invalid_authentication_error","message":"Invalid Authentication"}}"#,
            "auth",
        ),
        (
            404,
            r#"{"error":{"type":"resource_not_found_error","message":"Not found the model kimi-k2-0905-preview or Permission denied"}}"#,
            "model_not_found",
        ),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_raw(body, "application/json"))
            .mount(&server)
            .await;
        let adapter = kimi::adapter(config(&server, "/v1", pool("kimi", &[KEY]))).expect("adapter");
        let err = adapter
            .chat(&request("kimi-k2.6"))
            .await
            .expect_err("error");
        assert_eq!(err.kind(), kind, "{status} {body}");
    }
}

#[tokio::test]
async fn images_go_as_image_url_parts_and_text_stays_a_string_without_them() {
    let server = MockServer::start().await;
    let body = r#"{"id":"chatcmpl-6925","object":"chat.completion","created":1763991000,"model":"kimi-k2.6","choices":[{"index":0,"message":{"role":"assistant","content":"a login form"},"finish_reason":"stop"}],"usage":{"prompt_tokens":300,"completion_tokens":3,"total_tokens":303}}"#;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .mount(&server)
        .await;
    let adapter = kimi::adapter(config(&server, "/v1", pool("kimi", &[KEY]))).expect("adapter");
    let mut req = request("kimi-k2.6");
    let jpeg = aetherflow_provider::Image::from_bytes("image/jpeg", b"\xff\xd8\xff\xe0 jpeg");
    req.messages = vec![
        aetherflow_provider::Message::user_with_images("What is this?", vec![jpeg.clone()]),
        aetherflow_provider::Message::assistant("A form."),
        aetherflow_provider::Message::user("Which fields?"),
    ];
    adapter.chat(&req).await.expect("answer");
    let sent = sent_body(&server).await;
    let first = &sent["messages"][1]["content"];
    assert_eq!(first[0]["type"], "image_url");
    assert_eq!(
        first[0]["image_url"]["url"],
        format!("data:image/jpeg;base64,{}", jpeg.base64)
    );
    assert_eq!(
        first[1],
        serde_json::json!({"type": "text", "text": "What is this?"})
    );
    assert_eq!(sent["messages"][3]["content"], "Which fields?");
}
