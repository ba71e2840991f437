//! Keys never leak: every adapter runs its success, error and streaming paths with a canary key
//! while all tracing output is captured at TRACE; the canary must appear nowhere.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use aetherflow_provider::{Provider, collect_stream};
use aetherflow_providers::{codestral, deepseek, gemini, groq, kimi, openai_compatible};
use common::*;
use tracing_subscriber::fmt::MakeWriter;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

const CANARY: &str = "sk-CANARY-7f3e9a1b2c4d5e6f";

const OPENAI_OK: &str = r#"{"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
const OPENAI_STREAM: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n";
const GEMINI_OK: &str = r#"{"candidates":[{"content":{"parts":[{"text":"ok"}],"role":"model"},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":1}}"#;
// Error bodies that echo the key, as some providers do.
fn echo_error() -> String {
    format!(
        r#"{{"error":{{"message":"Incorrect API key provided: {CANARY}","type":"invalid_authentication_error"}}}}"#
    )
}

#[tokio::test(flavor = "current_thread")]
async fn canary_keys_appear_nowhere() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut seen: Vec<String> = Vec::new();
    let cases: Vec<(&str, &str, &str, &str, &str)> = vec![
        (
            "deepseek",
            "",
            "deepseek-v4-flash",
            OPENAI_OK,
            OPENAI_STREAM,
        ),
        (
            "groq",
            "",
            "llama-3.3-70b-versatile",
            OPENAI_OK,
            OPENAI_STREAM,
        ),
        ("kimi", "/v1", "kimi-k2.6", OPENAI_OK, OPENAI_STREAM),
        (
            "codestral",
            "/v1",
            "codestral-latest",
            OPENAI_OK,
            OPENAI_STREAM,
        ),
        (
            "openai-compatible",
            "/v1",
            "llama3.2",
            OPENAI_OK,
            OPENAI_STREAM,
        ),
        (
            "gemini",
            "/v1beta",
            "gemini-2.5-flash",
            GEMINI_OK,
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"ok\"}]},\"finishReason\":\"STOP\"}]}\r\n\r\n",
        ),
    ];
    for (name, base_path, model, ok, stream) in cases {
        for (status, body, content_type, streaming) in [
            (200u16, ok.to_owned(), "application/json", false),
            (200, stream.to_owned(), "text/event-stream", true),
            (401, echo_error(), "application/json", false),
            (400, echo_error(), "application/json", false),
            (429, echo_error(), "application/json", true),
        ] {
            let server = MockServer::start().await;
            Mock::given(method("POST"))
                .respond_with(ResponseTemplate::new(status).set_body_raw(body, content_type))
                .mount(&server)
                .await;
            let cfg = config(&server, base_path, pool(name, &[CANARY]));
            // Debug of every adapter type (it holds the config and the key pool).
            let adapter: Box<dyn Provider> = match name {
                "deepseek" => boxed(deepseek::adapter(cfg).expect("adapter"), &mut seen),
                "groq" => boxed(groq::adapter(cfg).expect("adapter"), &mut seen),
                "kimi" => boxed(kimi::adapter(cfg).expect("adapter"), &mut seen),
                "codestral" => boxed(codestral::adapter(cfg).expect("adapter"), &mut seen),
                "openai-compatible" => {
                    boxed(openai_compatible::adapter(cfg).expect("adapter"), &mut seen)
                }
                _ => boxed(gemini::adapter(cfg).expect("adapter"), &mut seen),
            };
            let req = request(model);
            let outcome = if streaming {
                match adapter.chat_stream(&req).await {
                    Ok(s) => collect_stream(model, s).await,
                    Err(e) => Err(e),
                }
            } else {
                adapter.chat(&req).await
            };
            match outcome {
                Ok(r) => seen.push(format!("{r:?}")),
                Err(e) => {
                    seen.push(e.to_string());
                    seen.push(format!("{e:?}"));
                }
            }
            // The request really carried the key, so not finding it later means something.
            let sent = &server.received_requests().await.expect("recording")[0];
            let carried = sent
                .headers
                .values()
                .any(|v| v.to_str().unwrap_or_default().contains(CANARY));
            assert!(carried, "{name}: the key was not sent at all");
        }
    }
    let keys = pool("deepseek", &[CANARY]);
    seen.push(format!("{keys:?}"));
    seen.push(format!("{:?}", keys.status()));
    seen.push(format!(
        "{:?}",
        config(&MockServer::start().await, "", keys)
    ));

    let logs = String::from_utf8_lossy(&capture.0.lock().expect("lock")).into_owned();
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "capture is working: {} bytes",
        logs.len()
    );
    assert!(!logs.contains(CANARY), "the key leaked into logs");
    assert!(
        !logs.contains("CANARY-7f3e"),
        "part of the key leaked into logs"
    );
    for s in &seen {
        assert!(!s.contains("CANARY-7f3e"), "the key leaked: {s}");
    }
}

fn boxed<P: Provider + std::fmt::Debug + 'static>(
    adapter: P,
    seen: &mut Vec<String>,
) -> Box<dyn Provider> {
    seen.push(format!("{adapter:?}"));
    Box::new(adapter)
}
