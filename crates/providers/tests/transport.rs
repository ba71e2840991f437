//! Behaviour every adapter shares: keyless local servers, deadlines, redirects, and keys that
//! never leave their header.

mod common;

use std::time::Duration;

use aetherflow_provider::{Provider, TimeoutPhase};
use aetherflow_providers::config::AdapterConfig;
use aetherflow_providers::http::Timeouts;
use aetherflow_providers::{deepseek, openai_compatible};
use common::*;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const OK: &str = r#"{"model":"llama3.2","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;

#[tokio::test]
async fn a_local_server_needs_no_key_and_costs_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(OK, "application/json"))
        .mount(&server)
        .await;
    let adapter = openai_compatible::adapter(AdapterConfig {
        base_url: Some(format!("{}/v1", server.uri())),
        ..AdapterConfig::default()
    })
    .expect("adapter");
    let r = adapter.chat(&request("llama3.2")).await.expect("answer");
    assert_eq!(r.text, "hi");
    assert_eq!(
        r.usage
            .cost(&adapter.price("llama3.2").expect("price"))
            .as_micros(),
        0
    );
    let sent = &server.received_requests().await.expect("recording")[0];
    assert!(sent.headers.get("authorization").is_none());
}

#[test]
fn base_urls_are_checked_when_the_adapter_is_built() {
    let err = openai_compatible::adapter(AdapterConfig {
        base_url: Some("http://192.0.2.10:8000/v1".into()),
        ..AdapterConfig::default()
    })
    .expect_err("plain http to a remote host");
    assert!(
        err.to_string().contains("only allowed for loopback"),
        "{err}"
    );
    let err = openai_compatible::adapter(AdapterConfig::default()).expect_err("no base URL");
    assert!(err.to_string().contains("needs a base URL"), "{err}");
    let err = deepseek::adapter(AdapterConfig::default()).expect_err("no key");
    assert!(err.to_string().contains("no API key configured"), "{err}");
}

#[tokio::test]
async fn a_slow_first_byte_is_a_first_token_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(OK, "application/json")
                .set_delay(Duration::from_millis(800)),
        )
        .mount(&server)
        .await;
    let mut cfg = config(&server, "", pool("deepseek", &["sk-test-0000"]));
    cfg.timeouts = Timeouts {
        connect: Duration::from_secs(1),
        first_token: Duration::from_millis(200),
        total: Duration::from_secs(5),
    };
    let adapter = deepseek::adapter(cfg).expect("adapter");
    let err = adapter
        .chat(&request("deepseek-v4-flash"))
        .await
        .expect_err("too slow");
    assert!(
        matches!(
            err,
            aetherflow_provider::ProviderError::Timeout {
                phase: TimeoutPhase::FirstToken,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn redirects_to_another_host_are_not_followed() {
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(OK, "application/json"))
        .mount(&elsewhere)
        .await;
    let server = MockServer::start().await;
    // Same port numbers differ, and "localhost" vs "127.0.0.1" is another host for the policy.
    let target = elsewhere.uri().replace("127.0.0.1", "localhost");
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("location", format!("{target}/chat/completions").as_str()),
        )
        .mount(&server)
        .await;
    let adapter = deepseek::adapter(config(
        &server,
        "",
        pool("deepseek", &["sk-secret-redirect-1"]),
    ))
    .expect("adapter");
    let err = adapter
        .chat(&request("deepseek-v4-flash"))
        .await
        .expect_err("not followed");
    assert_ne!(err.kind(), "decode", "{err:?}");
    assert!(
        elsewhere
            .received_requests()
            .await
            .expect("recording")
            .is_empty(),
        "the key was sent to another host"
    );
}

/// A server that sends the response head and one event, then goes silent: something wiremock
/// cannot do, so it is written against a raw socket.
async fn stalling_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let mut buf = vec![0u8; 64 * 1024];
        let _ = socket.read(&mut buf).await;
        let first = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Tok\"},\"finish_reason\":null}]}\n\n";
        let head =
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
        let _ = socket.write_all(head.as_bytes()).await;
        let _ = socket.write_all(first.as_bytes()).await;
        let _ = socket.flush().await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    format!("http://{address}")
}

#[tokio::test]
async fn a_stream_that_stalls_is_a_typed_timeout() {
    let base = stalling_server().await;
    let adapter = deepseek::adapter(AdapterConfig {
        base_url: Some(base),
        timeouts: Timeouts {
            connect: Duration::from_secs(1),
            first_token: Duration::from_millis(300),
            total: Duration::from_secs(10),
        },
        keys: Some(pool("deepseek", &["sk-test-0000"])),
        prices: None,
    })
    .expect("adapter");
    let started = std::time::Instant::now();
    let all = events(
        adapter
            .chat_stream(&request("deepseek-v4-flash"))
            .await
            .expect("stream"),
    )
    .await;
    assert!(
        matches!(&all[0], Ok(aetherflow_provider::StreamEvent::Text(t)) if t == "Tok"),
        "{all:?}"
    );
    assert!(
        matches!(
            all.last(),
            Some(Err(aetherflow_provider::ProviderError::Timeout {
                phase: TimeoutPhase::FirstToken,
                ..
            }))
        ),
        "{all:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}
