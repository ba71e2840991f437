//! Shared helpers for the adapter tests: key pools, requests, and reading what was sent.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use aetherflow_provider::{ApiKey, ChatRequest, ChatStream, Message, StreamEvent};
use aetherflow_providers::config::AdapterConfig;
use aetherflow_providers::http::Timeouts;
use aetherflow_providers::keys::KeyPool;
use futures::StreamExt;
use secrecy::SecretString;
use wiremock::MockServer;

pub fn pool(provider: &str, secrets: &[&str]) -> Arc<KeyPool> {
    let keys = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            ApiKey::new(
                format!("{provider}#{}", i + 1),
                SecretString::from((*s).to_owned()),
            )
        })
        .collect();
    Arc::new(KeyPool::new(provider, keys).expect("pool"))
}

pub fn config(server: &MockServer, base_path: &str, keys: Arc<KeyPool>) -> AdapterConfig {
    AdapterConfig {
        base_url: Some(format!("{}{base_path}", server.uri())),
        timeouts: Timeouts {
            connect: Duration::from_secs(2),
            first_token: Duration::from_secs(2),
            total: Duration::from_secs(5),
        },
        keys: Some(keys),
        prices: None,
    }
}

pub fn request(model: &str) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        system: Some("You answer tersely.".into()),
        messages: vec![Message::user("Capital of Japan?")],
        max_output_tokens: Some(64),
        temperature: Some(0.2),
        stop: vec!["\n\n\n".into()],
        seed: Some(7),
        ..ChatRequest::default()
    }
}

/// The JSON body of the only request the server received.
pub async fn sent_body(server: &MockServer) -> serde_json::Value {
    let requests = server.received_requests().await.expect("recording on");
    assert_eq!(
        requests.len(),
        1,
        "expected one request, got {}",
        requests.len()
    );
    serde_json::from_slice(&requests[0].body).expect("JSON body")
}

/// Collects a stream into its events.
pub async fn events(
    mut stream: ChatStream,
) -> Vec<Result<StreamEvent, aetherflow_provider::ProviderError>> {
    let mut out = Vec::new();
    while let Some(e) = stream.next().await {
        out.push(e);
    }
    out
}

/// Joins SSE events with the given separator.
pub fn sse(events: &[&str], separator: &str) -> String {
    events
        .iter()
        .map(|e| format!("data: {e}{separator}"))
        .collect()
}
