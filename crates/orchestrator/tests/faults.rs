//! Fault injection: the orchestrator with real adapters against local servers that misbehave
//! the way providers do. Every run ends — succeeded through a retry, a key or a fallback, or
//! failed with a precise reason — and nothing hangs.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aetherflow_domain::Money;
use aetherflow_domain::plan::{PlanFormat, ValidPlan, load_plan};
use aetherflow_domain::run::{RunReport, StepStatus};
use aetherflow_orchestrator::workspace::{ContextLimits, Workspace};
use aetherflow_orchestrator::{
    EventSink, Orchestrator, ProviderEntry, ProviderSet, Resilience, RunOptions,
};
use aetherflow_provider::{ApiKey, Provider};
use aetherflow_providers::config::AdapterConfig;
use aetherflow_providers::http::Timeouts;
use aetherflow_providers::keys::KeyPool;
use aetherflow_providers::{deepseek, gemini};
use aetherflow_resilience::breaker::{BreakerPolicy, Breakers};
use aetherflow_resilience::retry::RetryPolicy;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{header, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

const OK: &str = r#"{"model":"deepseek-v4-flash","choices":[{"index":0,"message":{"role":"assistant","content":"Analysis: fine"},"finish_reason":"stop"}],"usage":{"prompt_tokens":100,"completion_tokens":50,"total_tokens":150}}"#;

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_millis(500),
        first_token: Duration::from_secs(2),
        total: Duration::from_secs(3),
    }
}

fn keys(provider: &str, secrets: &[&str]) -> Arc<KeyPool> {
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

fn deepseek_at(base: &str, secrets: &[&str]) -> Arc<dyn Provider> {
    Arc::new(
        deepseek::adapter(AdapterConfig {
            base_url: Some(base.to_owned()),
            timeouts: timeouts(),
            keys: Some(keys("deepseek", secrets)),
            prices: None,
        })
        .expect("adapter"),
    )
}

fn only(provider: Arc<dyn Provider>, name: &str, model: &str) -> ProviderSet {
    ProviderSet::new(
        name,
        ProviderEntry {
            provider,
            model: model.into(),
        },
    )
}

fn quick_retries() -> Resilience {
    Resilience {
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            deadline: Duration::from_secs(10),
        },
        ..Resilience::default()
    }
}

fn plan(steps: usize) -> Arc<ValidPlan> {
    let steps: Vec<String> = (0..steps)
        .map(|i| {
            let deps = if i == 0 { String::new() } else { format!("\"s{}\"", i - 1) };
            format!(r#"{{"id":"s{i}","description":"analyse part {i}","type":"analysis","dependencies":[{deps}]}}"#)
        })
        .collect();
    let text = format!(
        r#"{{"task_id":"faults","description":"d","steps":[{}]}}"#,
        steps.join(",")
    );
    Arc::new(load_plan(&text, PlanFormat::Json).expect("plan"))
}

async fn run(
    set: ProviderSet,
    resilience: Resilience,
    plan: Arc<ValidPlan>,
    budget: Option<Money>,
) -> RunReport {
    let dir = tempfile::tempdir().expect("dir");
    let ws = Workspace::open(dir.path(), ContextLimits::default()).expect("workspace");
    let orchestrator = Orchestrator::new(set, ws).with_resilience(resilience);
    let options = RunOptions {
        concurrency: NonZeroUsize::new(1).expect("non-zero"),
        budget,
        max_output_tokens: Some(1_000),
        ..RunOptions::default()
    };
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        orchestrator.run(plan, &options, EventSink::none(), CancellationToken::new()),
    )
    .await
    .expect("the run ends: nothing hangs")
    .expect("run");
    outcome.report
}

#[tokio::test]
async fn a_500_then_success_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_raw(
            r#"{"error":{"message":"Server Error"}}"#,
            "application/json",
        ))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(OK, "application/json"))
        .mount(&server)
        .await;
    let report = run(
        only(
            deepseek_at(&server.uri(), &["sk-1-00000000"]),
            "deepseek",
            "deepseek-v4-flash",
        ),
        quick_retries(),
        plan(1),
        None,
    )
    .await;
    let s = &report.steps[0];
    assert_eq!(s.status, StepStatus::Succeeded);
    assert_eq!(s.attempts.len(), 2);
    assert_eq!(
        s.attempts[0].error.as_ref().map(|e| e.kind.as_str()),
        Some("server")
    );
}

#[tokio::test]
async fn a_429_with_retry_after_waits_that_long() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .set_body_raw(
                    r#"{"error":{"message":"Rate limit reached"}}"#,
                    "application/json",
                )
                .insert_header("retry-after", "1"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(OK, "application/json"))
        .mount(&server)
        .await;
    let started = Instant::now();
    let report = run(
        only(
            deepseek_at(&server.uri(), &["sk-1-00000000"]),
            "deepseek",
            "deepseek-v4-flash",
        ),
        quick_retries(),
        plan(1),
        None,
    )
    .await;
    assert_eq!(report.steps[0].status, StepStatus::Succeeded);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_gemini_429_waits_for_its_retry_delay() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).set_body_raw(
            r#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"1s"}]}}"#,
            "application/json",
        ))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"candidates":[{"content":{"parts":[{"text":"fine"}],"role":"model"},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":1}}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    let adapter = gemini::adapter(AdapterConfig {
        base_url: Some(format!("{}/v1beta", server.uri())),
        timeouts: timeouts(),
        keys: Some(keys("gemini", &["AIza-test-000000"])),
        prices: None,
    })
    .expect("adapter");
    let started = Instant::now();
    let report = run(
        only(Arc::new(adapter), "gemini", "gemini-2.5-flash"),
        quick_retries(),
        plan(1),
        None,
    )
    .await;
    assert_eq!(report.steps[0].status, StepStatus::Succeeded);
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn a_refused_connection_fails_with_a_transport_reason() {
    // Bind, learn the port, close: nothing listens there any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let report = run(
        only(
            deepseek_at(&format!("http://127.0.0.1:{port}"), &["sk-1-00000000"]),
            "deepseek",
            "deepseek-v4-flash",
        ),
        quick_retries(),
        plan(2),
        None,
    )
    .await;
    let s = &report.steps[0];
    assert_eq!(s.status, StepStatus::Failed);
    assert_eq!(s.attempts.len(), 3, "transport errors are retried");
    assert!(
        s.reason
            .as_deref()
            .unwrap_or_default()
            .contains("transport error"),
        "{:?}",
        s.reason
    );
    assert_eq!(report.steps[1].status, StepStatus::Skipped);
}

#[tokio::test]
async fn an_answer_slower_than_the_deadlines_times_out() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(OK, "application/json")
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    let report = run(
        only(
            deepseek_at(&server.uri(), &["sk-1-00000000"]),
            "deepseek",
            "deepseek-v4-flash",
        ),
        Resilience {
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            ..Resilience::default()
        },
        plan(1),
        None,
    )
    .await;
    let s = &report.steps[0];
    assert_eq!(s.status, StepStatus::Failed);
    assert_eq!(
        s.attempts[0].error.as_ref().map(|e| e.kind.as_str()),
        Some("timeout")
    );
}

#[tokio::test]
async fn a_connection_reset_mid_body_is_a_transport_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = vec![0u8; 64 * 1024];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n{\"model\":")
                .await;
            // Dropping the socket cuts the body short.
        }
    });
    let report = run(
        only(
            deepseek_at(&format!("http://{address}"), &["sk-1-00000000"]),
            "deepseek",
            "deepseek-v4-flash",
        ),
        quick_retries(),
        plan(1),
        None,
    )
    .await;
    let s = &report.steps[0];
    assert_eq!(s.status, StepStatus::Failed);
    assert!(
        s.attempts
            .iter()
            .all(|a| a.error.as_ref().is_some_and(|e| e.kind == "transport")),
        "{:?}",
        s.attempts
    );
}

#[tokio::test]
async fn malformed_json_fails_without_retrying() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw("{\"choices\": [oops", "application/json"),
        )
        .mount(&server)
        .await;
    let report = run(
        only(
            deepseek_at(&server.uri(), &["sk-1-00000000"]),
            "deepseek",
            "deepseek-v4-flash",
        ),
        quick_retries(),
        plan(1),
        None,
    )
    .await;
    let s = &report.steps[0];
    assert_eq!(s.status, StepStatus::Failed);
    assert_eq!(s.attempts.len(), 1);
    assert!(
        s.reason
            .as_deref()
            .unwrap_or_default()
            .contains("could not decode"),
        "{:?}",
        s.reason
    );
}

#[tokio::test]
async fn a_401_on_the_first_key_succeeds_on_the_second() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer sk-revoked-00001"))
        .respond_with(ResponseTemplate::new(401).set_body_raw(
            r#"{"error":{"message":"Authentication Fails","type":"authentication_error"}}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(OK, "application/json"))
        .mount(&server)
        .await;
    let report = run(
        only(
            deepseek_at(&server.uri(), &["sk-revoked-00001", "sk-working-00002"]),
            "deepseek",
            "deepseek-v4-flash",
        ),
        quick_retries(),
        plan(2),
        None,
    )
    .await;
    assert!(
        report
            .steps
            .iter()
            .all(|s| s.status == StepStatus::Succeeded)
    );
    assert_eq!(
        report.steps[0].attempts[0].key_id.as_deref(),
        Some("deepseek#2")
    );
}

#[tokio::test]
async fn the_breaker_opens_then_recovers_through_a_half_open_probe() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_raw(
            r#"{"error":{"message":"Server Overloaded"}}"#,
            "application/json",
        ))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(OK, "application/json"))
        .mount(&server)
        .await;
    let resilience = Resilience {
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        breakers: Arc::new(Breakers::new(BreakerPolicy {
            consecutive_failures: 2,
            cooldown_ms: 300,
            ..BreakerPolicy::default()
        })),
        ..Resilience::default()
    };
    let set = only(
        deepseek_at(&server.uri(), &["sk-1-00000000"]),
        "deepseek",
        "deepseek-v4-flash",
    );
    let independent = |n: usize| {
        let steps: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"id":"s{i}","description":"p{i}","type":"analysis"}}"#))
            .collect();
        Arc::new(
            load_plan(
                &format!(
                    r#"{{"task_id":"b","description":"d","steps":[{}]}}"#,
                    steps.join(",")
                ),
                PlanFormat::Json,
            )
            .expect("plan"),
        )
    };
    let first = run(set.clone(), resilience.clone(), independent(3), None).await;
    assert!(first.steps.iter().all(|s| s.status == StepStatus::Failed));
    assert!(
        first.steps[2]
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("circuit open"),
        "{:?}",
        first.steps[2].reason
    );
    assert_eq!(
        server.received_requests().await.expect("recording").len(),
        2,
        "the third call never left"
    );

    tokio::time::sleep(Duration::from_millis(350)).await;
    let second = run(set, resilience.clone(), independent(2), None).await;
    assert!(
        second
            .steps
            .iter()
            .all(|s| s.status == StepStatus::Succeeded),
        "{:?}",
        second.steps
    );
    assert_eq!(
        resilience.breakers.status()[0].state,
        aetherflow_resilience::breaker::BreakerState::Closed
    );
}

#[tokio::test]
async fn budget_exhaustion_mid_plan_fails_the_rest_with_the_reason() {
    let server = MockServer::start().await;
    let pricey = r#"{"model":"deepseek-v4-pro","choices":[{"index":0,"message":{"role":"assistant","content":"Analysis: done"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":1000,"total_tokens":2000}}"#;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(pricey, "application/json"))
        .mount(&server)
        .await;
    // v4-pro: $0.435 in / $0.87 out per million. Each call really costs $0.001305; its worst
    // case (every prompt byte a token, plus 1 000 output tokens) is about $0.0013. A $0.003 cap
    // admits two calls.
    let report = run(
        only(
            deepseek_at(&server.uri(), &["sk-1-00000000"]),
            "deepseek",
            "deepseek-v4-pro",
        ),
        quick_retries(),
        plan(4),
        Some(Money::from_micros(3_000)),
    )
    .await;
    let statuses: Vec<StepStatus> = report.steps.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses[..2],
        [StepStatus::Succeeded, StepStatus::Succeeded],
        "{:?}",
        report.steps
    );
    assert_eq!(statuses[2], StepStatus::Failed);
    assert!(
        report.steps[2]
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("budget for run"),
        "{:?}",
        report.steps[2].reason
    );
    assert_eq!(statuses[3], StepStatus::Skipped);
    assert!(report.totals.cost <= Money::from_micros(3_000));
    assert_eq!(
        server.received_requests().await.expect("recording").len(),
        2
    );
}

#[tokio::test]
async fn a_connect_timeout_is_typed_and_retried() {
    // A listener whose accept queue is full drops new SYNs, so connecting hangs until the
    // connect deadline: a real connect timeout on loopback.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let address = socket.local_addr().expect("addr");
    let _listener = socket.listen(1).expect("listen");
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(address),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let report = run(
        only(
            deepseek_at(&format!("http://{address}"), &["sk-1-00000000"]),
            "deepseek",
            "deepseek-v4-flash",
        ),
        quick_retries(),
        plan(1),
        None,
    )
    .await;
    let s = &report.steps[0];
    assert_eq!(s.status, StepStatus::Failed);
    assert_eq!(s.attempts.len(), 3, "{:?}", s.attempts);
    let kinds: Vec<&str> = s
        .attempts
        .iter()
        .filter_map(|a| a.error.as_ref().map(|e| e.kind.as_str()))
        .collect();
    assert!(kinds.iter().all(|k| *k == "timeout"), "{kinds:?}");
    assert!(
        s.attempts[0]
            .error
            .as_ref()
            .is_some_and(|e| e.message.contains("connect")),
        "{:?}",
        s.attempts[0].error
    );
}
