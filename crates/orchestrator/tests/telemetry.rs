//! A run is one OpenTelemetry trace: the run span, a span per step under it, a span per provider
//! attempt under its step, with provider, model, outcome, tokens and cost as attributes — and
//! never the prompt, the answer or a key.

use std::sync::Arc;
use std::time::Duration;

use aetherflow_domain::plan::{PlanFormat, load_plan};
use aetherflow_domain::run::RunStatus;
use aetherflow_orchestrator::workspace::{ContextLimits, Workspace};
use aetherflow_orchestrator::{EventSink, Orchestrator, RunOptions, mock_provider_set};
use aetherflow_provider::mock::{MockProvider, MockScript};
use opentelemetry::Value;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;

const SECRET_PROMPT: &str = "PROMPT-TEXT-7f3a";
const SECRET_ANSWER: &str = "ANSWER-TEXT-91bc";

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

#[tokio::test]
async fn a_run_is_one_trace_of_steps_and_attempts_without_prompts_or_answers() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let plan = Arc::new(
        load_plan(
            &format!(
                r#"{{"task_id":"traced","description":"d","steps":[
                {{"id":"a","description":"{SECRET_PROMPT} one","type":"analysis"}},
                {{"id":"b","description":"{SECRET_PROMPT} two","type":"analysis","dependencies":["a"]}}]}}"#
            ),
            PlanFormat::Json,
        )
        .expect("plan"),
    );
    let script = format!("steps:\n  \"*\":\n    - text: \"{SECRET_ANSWER}\"\n      times: 2\n");
    let mock = MockProvider::new(
        MockScript::from_yaml(&script, "<test>").expect("script"),
        Duration::ZERO,
    );
    let dir = tempfile::tempdir().expect("dir");
    let ws = Workspace::open(dir.path(), ContextLimits::default()).expect("workspace");
    let orchestrator = Orchestrator::new(mock_provider_set(mock), ws);
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let outcome = orchestrator
        .run(
            plan,
            &RunOptions::default(),
            EventSink::new(tx),
            CancellationToken::new(),
        )
        .await
        .expect("run");
    assert_eq!(outcome.report.status, RunStatus::Succeeded);
    provider.force_flush().expect("flush");

    let spans = exporter.get_finished_spans().expect("spans");
    let run = spans.iter().find(|s| s.name == "run").expect("a run span");
    assert_eq!(
        attr(run, "run.id").map(Value::as_str).as_deref(),
        Some(outcome.report.run_id.to_string().as_str())
    );
    let trace = run.span_context.trace_id();
    let steps: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name.starts_with("step "))
        .collect();
    assert_eq!(steps.len(), 2, "{spans:#?}");
    for step in &steps {
        assert_eq!(step.parent_span_id, run.span_context.span_id());
        assert_eq!(step.span_context.trace_id(), trace);
    }
    let attempts: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name.starts_with("chat "))
        .collect();
    assert_eq!(attempts.len(), 2, "one provider call per step");
    let reported = &outcome.report.steps[0].attempts[0];
    for a in &attempts {
        assert!(
            steps
                .iter()
                .any(|s| s.span_context.span_id() == a.parent_span_id),
            "an attempt's parent is its step"
        );
        assert_eq!(a.span_context.trace_id(), trace);
        assert_eq!(
            attr(a, "gen_ai.system").map(Value::as_str).as_deref(),
            Some(reported.provider.as_str())
        );
        assert_eq!(attr(a, "outcome").map(Value::as_str).as_deref(), Some("ok"));
        assert!(
            matches!(attr(a, "gen_ai.usage.input_tokens"), Some(Value::I64(n)) if *n > 0),
            "{a:#?}"
        );
        assert!(attr(a, "cost_micros").is_some());
    }
    for span in &spans {
        for kv in &span.attributes {
            let v = kv.value.as_str();
            assert!(
                !v.contains(SECRET_PROMPT) && !v.contains(SECRET_ANSWER),
                "span {} carries content in {}: {v}",
                span.name,
                kv.key
            );
        }
    }
}
