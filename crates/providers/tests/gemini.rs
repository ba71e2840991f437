//! Gemini against a local server speaking the Generative Language API (spec §2, checklist 3).

mod common;

use std::time::Duration;

use aetherflow_provider::{FinishReason, Provider, StreamEvent};
use aetherflow_providers::gemini;
use common::*;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "AIzaSy-test-0000";

const OK: &str = r#"{
  "candidates": [
    {
      "content": {"parts": [{"text": "{\"city\": \"Tokyo\"}"}], "role": "model"},
      "finishReason": "STOP",
      "index": 0
    }
  ],
  "usageMetadata": {"promptTokenCount": 24, "candidatesTokenCount": 7, "totalTokenCount": 31},
  "modelVersion": "gemini-2.5-flash",
  "responseId": "kQ8xaYbPLqC2z7IPq7uVwAk"
}"#;

async fn server_with(status: u16, body: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(status)
                .set_body_raw(body.to_owned(), "application/json; charset=UTF-8"),
        )
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn key_goes_in_the_header_never_the_url() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-2.5-flash:generateContent"))
        .and(header("x-goog-api-key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_raw(OK, "application/json"))
        .mount(&server)
        .await;
    let adapter =
        gemini::adapter(config(&server, "/v1beta", pool("gemini", &[KEY]))).expect("adapter");
    let mut req = request("gemini-2.5-flash");
    req.json_mode = true;
    let r = adapter.chat(&req).await.expect("answer");
    assert_eq!(r.text, "{\"city\": \"Tokyo\"}");
    assert_eq!(r.usage.input_tokens, 24);
    let sent = &server.received_requests().await.expect("recording")[0];
    assert!(
        sent.url.query().is_none(),
        "no query string at all: {}",
        sent.url
    );
    assert!(!sent.url.as_str().contains(KEY));
    assert!(sent.headers.get("authorization").is_none());
    let body: serde_json::Value = serde_json::from_slice(&sent.body).expect("json");
    assert_eq!(
        body["systemInstruction"]["parts"][0]["text"],
        "You answer tersely."
    );
    assert_eq!(body["contents"][0]["role"], "user");
    assert_eq!(body["generationConfig"]["maxOutputTokens"], 64);
    assert_eq!(body["generationConfig"]["stopSequences"][0], "\n\n\n");
    assert_eq!(body["generationConfig"]["seed"], 7);
    assert_eq!(
        body["generationConfig"]["responseMimeType"],
        "application/json"
    );
}

#[tokio::test]
async fn streams_with_crlf_and_no_done_counting_usage_once() {
    let server = MockServer::start().await;
    let chunks = [
        r#"{"candidates": [{"content": {"parts": [{"text": "Tokyo is the"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 3,"totalTokenCount": 52,"thoughtsTokenCount": 40},"modelVersion": "gemini-2.5-flash","responseId": "rA8x"}"#,
        r#"{"candidates": [{"content": {"parts": [{"text": " capital of Japan."}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 8,"totalTokenCount": 57,"thoughtsTokenCount": 40},"modelVersion": "gemini-2.5-flash","responseId": "rA8x"}"#,
    ];
    Mock::given(method("POST"))
        .and(path(
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        ))
        .and(query_param("alt", "sse"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(sse(&chunks, "\r\n\r\n"), "text/event-stream"),
        )
        .mount(&server)
        .await;
    let adapter =
        gemini::adapter(config(&server, "/v1beta", pool("gemini", &[KEY]))).expect("adapter");
    let all = events(
        adapter
            .chat_stream(&request("gemini-2.5-flash"))
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
    assert_eq!(text, "Tokyo is the capital of Japan.");
    let usages: Vec<_> = all
        .iter()
        .filter_map(|e| match e {
            Ok(StreamEvent::Usage(u)) => Some(*u),
            _ => None,
        })
        .collect();
    assert_eq!(usages.len(), 1);
    assert_eq!(usages[0].input_tokens, 9);
    assert_eq!(
        usages[0].output_tokens, 48,
        "candidates 8 + thoughts 40, not summed per chunk"
    );
    assert!(matches!(
        all.last(),
        Some(Ok(StreamEvent::Finish(FinishReason::Stop)))
    ));
    let sent = &server.received_requests().await.expect("recording")[0];
    assert_eq!(sent.url.query(), Some("alt=sse"));
}

#[tokio::test]
async fn a_stream_that_closes_without_finish_is_an_error() {
    let server = MockServer::start().await;
    let chunk =
        r#"{"candidates": [{"content": {"parts": [{"text": "Tok"}],"role": "model"},"index": 0}]}"#;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(sse(&[chunk], "\r\n\r\n"), "text/event-stream"),
        )
        .mount(&server)
        .await;
    let adapter =
        gemini::adapter(config(&server, "/v1beta", pool("gemini", &[KEY]))).expect("adapter");
    let all = events(
        adapter
            .chat_stream(&request("gemini-2.5-flash"))
            .await
            .expect("stream"),
    )
    .await;
    assert!(
        matches!(all.last(), Some(Err(e)) if e.kind() == "transport"),
        "{all:?}"
    );
}

#[tokio::test]
async fn safety_blocks_with_http_200_are_content_filtered() {
    let prompt_blocked = r#"{"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}]}, "usageMetadata": {"promptTokenCount": 14, "totalTokenCount": 14}, "modelVersion": "gemini-2.5-flash"}"#;
    let output_blocked = r#"{"candidates": [{"content": {"parts": [], "role": "model"}, "finishReason": "SAFETY", "index": 0, "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}]}], "modelVersion": "gemini-2.5-flash"}"#;
    for body in [prompt_blocked, output_blocked] {
        let server = server_with(200, body).await;
        let adapter =
            gemini::adapter(config(&server, "/v1beta", pool("gemini", &[KEY]))).expect("adapter");
        let err = adapter
            .chat(&request("gemini-2.5-flash"))
            .await
            .expect_err("blocked");
        assert_eq!(err.kind(), "content_filtered", "{body}");
    }
}

#[tokio::test]
async fn errors_follow_gemini_conventions() {
    let bad_key = r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com"}}]}}"#;
    let quota = r#"{"error":{"code":429,"message":"You exceeded your current quota. Please retry in 21.4s.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"21s"}]}}"#;
    let retired = r#"{"error":{"code":404,"message":"models/gemini-2.0-flash is not found for API version v1beta, or is not supported for generateContent.","status":"NOT_FOUND"}}"#;

    let server = server_with(400, bad_key).await;
    let adapter =
        gemini::adapter(config(&server, "/v1beta", pool("gemini", &[KEY]))).expect("adapter");
    assert_eq!(
        adapter
            .chat(&request("gemini-2.5-flash"))
            .await
            .expect_err("bad key")
            .kind(),
        "auth"
    );

    let server = server_with(429, quota).await;
    let adapter =
        gemini::adapter(config(&server, "/v1beta", pool("gemini", &[KEY]))).expect("adapter");
    let err = adapter
        .chat(&request("gemini-2.5-flash"))
        .await
        .expect_err("quota");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(21)));

    let server = server_with(404, retired).await;
    let adapter =
        gemini::adapter(config(&server, "/v1beta", pool("gemini", &[KEY]))).expect("adapter");
    let err = adapter
        .chat(&request("gemini-2.0-flash"))
        .await
        .expect_err("retired");
    assert_eq!(err.kind(), "model_not_found");
    assert!(err.to_string().contains("gemini-2.0-flash"));
}

#[tokio::test]
async fn images_go_as_inline_data_before_the_text() {
    let server = server_with(200, OK).await;
    let adapter =
        gemini::adapter(config(&server, "/v1beta", pool("gemini", &[KEY]))).expect("adapter");
    let mut req = request("gemini-2.5-flash");
    let png = aetherflow_provider::Image::from_bytes("image/png", b"\x89PNG\r\n\x1a\n....");
    req.messages = vec![aetherflow_provider::Message::user_with_images(
        "Describe this design.",
        vec![png.clone()],
    )];
    adapter.chat(&req).await.expect("answer");
    let sent = &server.received_requests().await.expect("recording")[0];
    let body: serde_json::Value = serde_json::from_slice(&sent.body).expect("json");
    let parts = body["contents"][0]["parts"].as_array().expect("parts");
    assert_eq!(parts.len(), 2, "{body}");
    assert_eq!(parts[0]["inlineData"]["mimeType"], "image/png");
    assert_eq!(parts[0]["inlineData"]["data"], png.base64.as_str());
    assert_eq!(parts[1]["text"], "Describe this design.");
}
