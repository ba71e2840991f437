//! The orchestrator against the built-in mock provider: scheduling, skipping, context, events,
//! cancellation and the run folder.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aetherflow_domain::Price;
use aetherflow_domain::plan::{PlanFormat, ValidPlan, load_plan};
use aetherflow_domain::run::{RunStatus, StepStatus};
use aetherflow_orchestrator::workspace::{ContextLimits, Workspace};
use aetherflow_orchestrator::{
    EventSink, Orchestrator, ProviderEntry, ProviderSet, RunEvent, RunOptions, mock_provider_set,
};
use aetherflow_provider::mock::{MockProvider, MockScript};
use aetherflow_provider::{ChatRequest, ChatResponse, ChatStream, Provider, ProviderError};
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

fn plan(json: &str) -> Arc<ValidPlan> {
    Arc::new(load_plan(json, PlanFormat::Json).expect("valid test plan"))
}

fn chain_with_side_branch() -> Arc<ValidPlan> {
    plan(
        r#"{"task_id":"t","description":"Project","steps":[
        {"id":"a","description":"first","type":"code_generation","context":{"files":["a.py"]}},
        {"id":"b","description":"second","type":"code_generation","dependencies":["a"],"context":{"files":["b.py"]}},
        {"id":"c","description":"third","type":"analysis","dependencies":["b"]},
        {"id":"side","description":"independent","type":"analysis"}],
        "success_criteria":["all green"]}"#,
    )
}

fn workspace() -> (tempfile::TempDir, Workspace) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ws = Workspace::open(dir.path(), ContextLimits::default()).expect("workspace");
    (dir, ws)
}

fn scripted(yaml: &str) -> MockProvider {
    MockProvider::new(
        MockScript::from_yaml(yaml, "<test>").expect("valid script"),
        Duration::ZERO,
    )
}

/// Wraps the mock to see what the orchestrator sends and how many calls overlap.
#[derive(Default)]
struct Recording {
    inner: MockProvider,
    requests: Mutex<Vec<ChatRequest>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

#[async_trait]
impl Provider for Recording {
    fn name(&self) -> &str {
        "recording"
    }
    fn price(&self, _model: &str) -> Option<Price> {
        Some(Price {
            input_per_mtok: aetherflow_domain::Money::from_micros(1_000_000),
            cached_input_per_mtok: aetherflow_domain::Money::ZERO,
            output_per_mtok: aetherflow_domain::Money::from_micros(2_000_000),
        })
    }
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.requests.lock().expect("lock").push(request.clone());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answer = self.inner.chat(request).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        answer
    }
    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, ProviderError> {
        self.inner.chat_stream(request).await
    }
}

fn recording_set(provider: Arc<Recording>) -> ProviderSet {
    ProviderSet::new(
        "recording",
        ProviderEntry {
            provider,
            model: "rec-1".into(),
        },
    )
}

async fn run(
    orchestrator: &Orchestrator,
    plan: Arc<ValidPlan>,
    options: &RunOptions,
) -> (aetherflow_orchestrator::RunOutcome, Vec<RunEvent>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let outcome = orchestrator
        .run(plan, options, EventSink::new(tx), CancellationToken::new())
        .await
        .expect("run completes");
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (outcome, events)
}

#[tokio::test]
async fn skipped_when_dependency_failed() {
    let (_d, ws) = workspace();
    let mock = scripted("steps:\n  a:\n    - error: auth\n      message: bad key\n");
    let orchestrator = Orchestrator::new(mock_provider_set(mock), ws);
    let (outcome, events) = run(
        &orchestrator,
        chain_with_side_branch(),
        &RunOptions::default(),
    )
    .await;
    let steps = &outcome.report.steps;
    assert_eq!(steps[0].status, StepStatus::Failed);
    assert!(
        steps[0]
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("bad key")
    );
    assert_eq!(
        steps[0].attempts[0].error.as_ref().map(|e| e.kind.as_str()),
        Some("auth")
    );
    assert_eq!(steps[1].status, StepStatus::Skipped);
    assert_eq!(steps[1].reason.as_deref(), Some("dependency `a` failed"));
    assert_eq!(steps[2].status, StepStatus::Skipped);
    assert_eq!(
        steps[2].reason.as_deref(),
        Some("dependency `b` was skipped")
    );
    assert!(
        steps[1].attempts.is_empty(),
        "a skipped step must not call a provider"
    );
    assert_eq!(steps[3].status, StepStatus::Succeeded);
    assert_eq!(outcome.report.status, RunStatus::Failed);
    assert_eq!(outcome.report.totals.skipped, 2);
    let skipped: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, RunEvent::StepSkipped { .. }))
        .collect();
    assert_eq!(skipped.len(), 2);
}

#[tokio::test]
async fn each_step_receives_its_dependencies_outputs() {
    let (_d, ws) = workspace();
    let recording = Arc::new(Recording {
        inner: scripted(
            "steps:\n  a:\n    - text: \"```python path=a.py\\nA_MARKER = 1\\n```\\n\"\n",
        ),
        ..Recording::default()
    });
    let orchestrator = Orchestrator::new(recording_set(Arc::clone(&recording)), ws);
    let (outcome, _) = run(
        &orchestrator,
        chain_with_side_branch(),
        &RunOptions::default(),
    )
    .await;
    assert_eq!(outcome.report.status, RunStatus::Succeeded);
    let requests = recording.requests.lock().expect("lock");
    let b = requests
        .iter()
        .find(|r| r.step.as_ref().map(|s| s.step_id.as_str()) == Some("b"))
        .expect("b was asked");
    let prompt = &b.messages[0].content;
    assert!(prompt.contains("## Output of step a"), "{prompt}");
    assert!(prompt.contains("A_MARKER = 1"), "{prompt}");
    assert!(prompt.contains("## Project context\n\nProject"), "{prompt}");
    let side = requests
        .iter()
        .find(|r| r.step.as_ref().map(|s| s.step_id.as_str()) == Some("side"))
        .expect("side was asked");
    assert!(!side.messages[0].content.contains("## Output of step"));
    // Cost follows the provider's price: 1 $/M input, 2 $/M output, rounded up per call.
    let s = &outcome.report.steps[0];
    assert_eq!(s.provider.as_deref(), Some("recording"));
    assert_eq!(s.model.as_deref(), Some("rec-1"));
    assert!(s.cost.as_micros() >= s.usage.input_tokens + 2 * s.usage.output_tokens);
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_bounded() {
    let steps: Vec<String> = (0..12)
        .map(|i| format!(r#"{{"id":"s{i}","description":"x","type":"analysis"}}"#))
        .collect();
    let wide = plan(&format!(
        r#"{{"task_id":"wide","description":"d","steps":[{}]}}"#,
        steps.join(",")
    ));
    for limit in [1usize, 3, 5] {
        let (_d, ws) = workspace();
        let recording = Arc::new(Recording::default());
        let orchestrator = Orchestrator::new(recording_set(Arc::clone(&recording)), ws);
        let options = RunOptions {
            concurrency: NonZeroUsize::new(limit).expect("non-zero"),
            ..RunOptions::default()
        };
        let (outcome, _) = run(&orchestrator, Arc::clone(&wide), &options).await;
        assert_eq!(outcome.report.totals.succeeded, 12);
        assert_eq!(recording.max_in_flight.load(Ordering::SeqCst), limit);
    }
}

#[tokio::test(start_paused = true)]
async fn a_provider_concurrency_limit_holds_across_steps() {
    let steps: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"id":"s{i}","description":"x","type":"analysis"}}"#))
        .collect();
    let wide = plan(&format!(
        r#"{{"task_id":"wide","description":"d","steps":[{}]}}"#,
        steps.join(",")
    ));
    let (_d, ws) = workspace();
    let recording = Arc::new(Recording::default());
    let orchestrator = Orchestrator::new(recording_set(Arc::clone(&recording)), ws)
        .with_resilience(aetherflow_orchestrator::Resilience {
            provider_limits: aetherflow_orchestrator::ProviderLimits::default()
                .with("recording", 2),
            ..aetherflow_orchestrator::Resilience::default()
        });
    let options = RunOptions {
        concurrency: NonZeroUsize::new(8).expect("non-zero"),
        ..RunOptions::default()
    };
    let (outcome, _) = run(&orchestrator, wide, &options).await;
    assert_eq!(outcome.report.totals.succeeded, 10);
    assert_eq!(recording.max_in_flight.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_run_folder_holds_the_report_and_each_output() {
    let (_d, ws) = workspace();
    let out = tempfile::tempdir().expect("out dir");
    let orchestrator = Orchestrator::new(mock_provider_set(MockProvider::default()), ws);
    let options = RunOptions {
        out_dir: Some(out.path().to_path_buf()),
        ..RunOptions::default()
    };
    let (outcome, _) = run(&orchestrator, chain_with_side_branch(), &options).await;
    let dir = outcome.run_dir.expect("run folder");
    assert_eq!(dir.parent().expect("task folder"), out.path().join("t"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).expect("report written"))
            .expect("report is JSON");
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["steps"].as_array().map(Vec::len), Some(4));
    assert_eq!(report["steps"][0]["output_file"], "a.md");
    assert_eq!(report["plan_extra"]["success_criteria"][0], "all green");
    let a = std::fs::read_to_string(dir.join("a.md")).expect("output written");
    assert!(a.contains("```python path=a.py"), "{a}");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("list")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
}

#[tokio::test(start_paused = true)]
async fn cancelling_stops_the_run_and_still_reports() {
    let (_d, ws) = workspace();
    let out = tempfile::tempdir().expect("out dir");
    let slow = MockProvider::new(MockScript::default(), Duration::from_secs(10));
    let orchestrator = Orchestrator::new(mock_provider_set(slow), ws);
    let options = RunOptions {
        out_dir: Some(out.path().to_path_buf()),
        concurrency: NonZeroUsize::new(1).expect("non-zero"),
        ..RunOptions::default()
    };
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        trigger.cancel();
    });
    let outcome = orchestrator
        .run(
            chain_with_side_branch(),
            &options,
            EventSink::none(),
            cancel,
        )
        .await
        .expect("run completes");
    assert_eq!(outcome.report.status, RunStatus::Cancelled);
    let statuses: Vec<StepStatus> = outcome.report.steps.iter().map(|s| s.status).collect();
    assert!(
        statuses.iter().all(|s| *s == StepStatus::Cancelled),
        "{statuses:?}"
    );
    assert_eq!(
        outcome.report.steps[0].reason.as_deref(),
        Some("cancelled while running")
    );
    assert!(outcome.report.duration < Duration::from_secs(2));
    assert!(
        outcome
            .run_dir
            .expect("folder")
            .join("report.json")
            .exists()
    );
}

#[cfg(unix)]
#[tokio::test]
async fn context_outside_the_workspace_fails_the_step_not_the_run() {
    let (dir, ws) = workspace();
    let secret = tempfile::tempdir().expect("outside");
    std::fs::write(secret.path().join("id_rsa"), "PRIVATE").expect("write");
    std::os::unix::fs::symlink(secret.path().join("id_rsa"), dir.path().join("notes.txt"))
        .expect("symlink");
    let recording = Arc::new(Recording::default());
    let orchestrator = Orchestrator::new(recording_set(Arc::clone(&recording)), ws);
    let p = plan(
        r#"{"task_id":"t","description":"d","steps":[
        {"id":"leak","description":"read","type":"analysis","context":{"input_files":["notes.txt"]}},
        {"id":"ok","description":"fine","type":"analysis"}]}"#,
    );
    let (outcome, _) = run(&orchestrator, p, &RunOptions::default()).await;
    let leak = &outcome.report.steps[0];
    assert_eq!(leak.status, StepStatus::Failed);
    assert!(
        leak.reason
            .as_deref()
            .unwrap_or_default()
            .contains("outside the workspace")
    );
    assert!(leak.attempts.is_empty());
    assert_eq!(outcome.report.steps[1].status, StepStatus::Succeeded);
    let sent = recording.requests.lock().expect("lock");
    assert!(
        sent.iter()
            .all(|r| !r.messages[0].content.contains("PRIVATE"))
    );
}

#[tokio::test]
async fn existing_target_files_and_inputs_reach_the_prompt() {
    let (dir, ws) = workspace();
    std::fs::write(dir.path().join("app.py"), "OLD_CONTENT = True\n").expect("write");
    std::fs::write(dir.path().join("spec.md"), "SPEC_TEXT\n").expect("write");
    let recording = Arc::new(Recording::default());
    let orchestrator = Orchestrator::new(recording_set(Arc::clone(&recording)), ws);
    let p = plan(
        r#"{"task_id":"t","description":"d","steps":[
        {"id":"r","description":"refactor","type":"refactoring",
         "context":{"files":["app.py","new.py"],"input_files":["spec.md"]}}]}"#,
    );
    let (outcome, _) = run(&orchestrator, p, &RunOptions::default()).await;
    assert_eq!(outcome.report.status, RunStatus::Succeeded);
    let sent = recording.requests.lock().expect("lock");
    let prompt = &sent[0].messages[0].content;
    assert!(prompt.contains("## Current content of app.py"), "{prompt}");
    assert!(prompt.contains("OLD_CONTENT = True"));
    assert!(prompt.contains("## Input file (read only): spec.md"));
    assert!(!prompt.contains("## Current content of new.py"));
}

#[tokio::test]
async fn events_frame_the_run_and_every_step() {
    let (_d, ws) = workspace();
    let orchestrator = Orchestrator::new(mock_provider_set(MockProvider::default()), ws);
    let (_, events) = run(
        &orchestrator,
        chain_with_side_branch(),
        &RunOptions::default(),
    )
    .await;
    assert!(matches!(
        events.first(),
        Some(RunEvent::RunStarted { steps: 4, .. })
    ));
    assert!(matches!(
        events.last(),
        Some(RunEvent::RunFinished {
            status: RunStatus::Succeeded,
            ..
        })
    ));
    for id in ["a", "b", "c", "side"] {
        let started = events.iter().position(
            |e| matches!(e, RunEvent::StepStarted { step_id, .. } if step_id.as_str() == id),
        );
        let finished = events.iter().position(
            |e| matches!(e, RunEvent::StepFinished { step_id, .. } if step_id.as_str() == id),
        );
        assert!(
            started.is_some() && started < finished,
            "step {id}: {events:?}"
        );
    }
    let b_start = events.iter().position(
        |e| matches!(e, RunEvent::StepStarted { step_id, .. } if step_id.as_str() == "b"),
    );
    let a_end = events.iter().position(
        |e| matches!(e, RunEvent::StepFinished { step_id, .. } if step_id.as_str() == "a"),
    );
    assert!(a_end < b_start, "b started before a finished");
}

#[tokio::test]
async fn unconfigured_provider_override_fails_that_step_with_the_fix() {
    let (_d, ws) = workspace();
    let recording = Arc::new(Recording::default());
    let orchestrator = Orchestrator::new(recording_set(recording), ws);
    let p = plan(
        r#"{"task_id":"t","description":"d","steps":[
        {"id":"g","description":"x","type":"analysis","context":{"provider":"gemini"}}]}"#,
    );
    let (outcome, _) = run(&orchestrator, p, &RunOptions::default()).await;
    let reason = outcome.report.steps[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains("`gemini` is not configured (configured: recording)"),
        "{reason}"
    );
}

#[tokio::test]
async fn truncated_answers_fail_the_step() {
    struct Truncating;
    #[async_trait]
    impl Provider for Truncating {
        fn name(&self) -> &str {
            "truncating"
        }
        fn price(&self, _: &str) -> Option<Price> {
            Some(Price::FREE)
        }
        async fn chat(&self, r: &ChatRequest) -> Result<ChatResponse, ProviderError> {
            Ok(ChatResponse {
                key_id: None,
                tool_calls: Vec::new(),
                model: r.model.clone(),
                text: "```python path=a.py\ndef half(".into(),
                reasoning: None,
                finish_reason: aetherflow_provider::FinishReason::MaxTokens,
                usage: Default::default(),
            })
        }
        async fn chat_stream(&self, _: &ChatRequest) -> Result<ChatStream, ProviderError> {
            Err(ProviderError::InvalidRequest {
                message: "not used".into(),
            })
        }
    }
    let (_d, ws) = workspace();
    let set = ProviderSet::new(
        "truncating",
        ProviderEntry {
            provider: Arc::new(Truncating),
            model: "t".into(),
        },
    );
    let orchestrator = Orchestrator::new(set, ws);
    let p = plan(
        r#"{"task_id":"t","description":"d","steps":[{"id":"a","description":"x","type":"code_generation","context":{"files":["a.py"]}}]}"#,
    );
    let (outcome, _) = run(&orchestrator, p, &RunOptions::default()).await;
    assert_eq!(outcome.report.steps[0].status, StepStatus::Failed);
    assert!(
        outcome.report.steps[0]
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("output token limit")
    );
    assert!(outcome.outputs[0].is_none());
}

mod resilience {
    use super::*;
    use aetherflow_domain::{Money, Usage};
    use aetherflow_orchestrator::Resilience;
    use aetherflow_resilience::breaker::{BreakerPolicy, Breakers};
    use aetherflow_resilience::retry::RetryPolicy;

    fn single() -> Arc<ValidPlan> {
        plan(
            r#"{"task_id":"t","description":"d","steps":[{"id":"a","description":"x","type":"analysis"}]}"#,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_then_succeed() {
        let (_d, ws) = workspace();
        let mock = scripted("steps:\n  a:\n    - error: server\n      times: 2\n");
        let orchestrator = Orchestrator::new(mock_provider_set(mock), ws);
        let (outcome, _) = run(&orchestrator, single(), &RunOptions::default()).await;
        let a = &outcome.report.steps[0];
        assert_eq!(a.status, StepStatus::Succeeded, "{a:?}");
        assert_eq!(a.attempts.len(), 3);
        assert_eq!(
            a.attempts[0].error.as_ref().map(|e| e.kind.as_str()),
            Some("server")
        );
        assert!(a.attempts[2].error.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn errors_that_cannot_succeed_are_tried_once() {
        let (_d, ws) = workspace();
        let mock = scripted("steps:\n  a:\n    - error: invalid_request\n      times: 9\n");
        let orchestrator = Orchestrator::new(mock_provider_set(mock), ws);
        let (outcome, _) = run(&orchestrator, single(), &RunOptions::default()).await;
        assert_eq!(outcome.report.steps[0].attempts.len(), 1);
        assert_eq!(outcome.report.steps[0].status, StepStatus::Failed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_waits_at_least_the_providers_hint() {
        let (_d, ws) = workspace();
        let mock =
            scripted("steps:\n  a:\n    - error: rate_limited\n      retry_after_ms: 7000\n");
        let orchestrator = Orchestrator::new(mock_provider_set(mock), ws);
        let start = tokio::time::Instant::now();
        let (outcome, _) = run(&orchestrator, single(), &RunOptions::default()).await;
        assert_eq!(outcome.report.steps[0].status, StepStatus::Succeeded);
        assert!(
            start.elapsed() >= Duration::from_secs(7),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_fails_later_steps_without_calling() {
        let (_d, ws) = workspace();
        let mock = Arc::new(scripted(
            "steps:\n  '*':\n    - error: server\n      times: 100\n",
        ));
        let set = ProviderSet::offline(ProviderEntry {
            provider: Arc::clone(&mock) as Arc<dyn Provider>,
            model: "mock-1".into(),
        });
        let orchestrator = Orchestrator::new(set, ws).with_resilience(Resilience {
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            breakers: Arc::new(Breakers::new(BreakerPolicy {
                consecutive_failures: 2,
                ..BreakerPolicy::default()
            })),
            ..Resilience::default()
        });
        let steps: Vec<String> = (0..4)
            .map(|i| format!(r#"{{"id":"s{i}","description":"x","type":"analysis"}}"#))
            .collect();
        let p = plan(&format!(
            r#"{{"task_id":"t","description":"d","steps":[{}]}}"#,
            steps.join(",")
        ));
        let options = RunOptions {
            concurrency: NonZeroUsize::new(1).expect("non-zero"),
            ..RunOptions::default()
        };
        let (outcome, _) = run(&orchestrator, p, &options).await;
        assert_eq!(
            mock.calls(),
            2,
            "the third and fourth steps never reached the provider"
        );
        let reason = outcome.report.steps[3].reason.clone().unwrap_or_default();
        assert!(reason.contains("circuit open for mock/mock-1"), "{reason}");
    }

    /// A provider that always uses 1 000 input and 5 000 output tokens at $1 / $2 per million.
    struct Priced {
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Provider for Priced {
        fn name(&self) -> &str {
            "priced"
        }
        fn price(&self, _: &str) -> Option<Price> {
            Some(Price {
                input_per_mtok: Money::from_micros(1_000_000),
                cached_input_per_mtok: Money::ZERO,
                output_per_mtok: Money::from_micros(2_000_000),
            })
        }
        async fn chat(&self, r: &ChatRequest) -> Result<ChatResponse, ProviderError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(ChatResponse {
                key_id: None,
                tool_calls: Vec::new(),
                model: r.model.clone(),
                text: "# Analysis\n\nok".into(),
                reasoning: None,
                finish_reason: aetherflow_provider::FinishReason::Stop,
                usage: Usage {
                    input_tokens: 1_000,
                    output_tokens: 5_000,
                    ..Usage::default()
                },
            })
        }
        async fn chat_stream(&self, _: &ChatRequest) -> Result<ChatStream, ProviderError> {
            Err(ProviderError::InvalidRequest {
                message: "not used".into(),
            })
        }
    }

    #[tokio::test]
    async fn budget_exhaustion_stops_calls_before_they_are_sent() {
        let (_d, ws) = workspace();
        let priced = Arc::new(Priced {
            calls: AtomicUsize::new(0),
        });
        let set = ProviderSet::new(
            "priced",
            ProviderEntry {
                provider: Arc::clone(&priced) as Arc<dyn Provider>,
                model: "p-1".into(),
            },
        );
        let orchestrator = Orchestrator::new(set, ws);
        // Each call really costs $0.011; its worst case (every prompt byte a token, plus 8 192
        // output tokens) is about $0.0175. $0.03 admits two calls, then refuses the third.
        let options = RunOptions {
            budget: Some(Money::from_micros(30_000)),
            ..RunOptions::default()
        };
        let (outcome, _) = run(
            &orchestrator,
            chain_with_side_branch(),
            &RunOptions {
                concurrency: NonZeroUsize::new(1).expect("non-zero"),
                ..options
            },
        )
        .await;
        let statuses: Vec<StepStatus> = outcome.report.steps.iter().map(|s| s.status).collect();
        assert_eq!(priced.calls.load(Ordering::SeqCst), 2, "{statuses:?}");
        assert!(outcome.report.totals.cost <= Money::from_micros(30_000));
        assert_eq!(outcome.report.totals.cost, Money::from_micros(22_000));
        let refused: Vec<&str> = outcome
            .report
            .steps
            .iter()
            .filter_map(|s| s.reason.as_deref())
            .filter(|r| r.contains("budget for run"))
            .collect();
        assert!(!refused.is_empty(), "{:?}", outcome.report.steps);
        assert!(refused[0].contains("exceeded"));
        // The finished run's budget account is dropped, so a server does not keep one per run.
        let scope = aetherflow_resilience::budget::Scope::Run(outcome.report.run_id.to_string());
        assert_eq!(orchestrator.resilience().budgets.spend(&scope).cap, None);
    }

    #[tokio::test]
    async fn spend_crossing_soft_thresholds_raises_alert_events() {
        let (_d, ws) = workspace();
        let priced = Arc::new(Priced {
            calls: AtomicUsize::new(0),
        });
        let set = ProviderSet::new(
            "priced",
            ProviderEntry {
                provider: Arc::clone(&priced) as Arc<dyn Provider>,
                model: "p-1".into(),
            },
        );
        let orchestrator = Orchestrator::new(set, ws);
        // $0.011 per call against a $0.04 cap: 27.5 %, 55 % (alert 50), 82.5 % (alert 80); the
        // fourth call's worst case (about $0.0175) no longer fits, so 100 % is never reached.
        let options = RunOptions {
            budget: Some(Money::from_micros(40_000)),
            concurrency: NonZeroUsize::new(1).expect("non-zero"),
            ..RunOptions::default()
        };
        let (_, events) = run(&orchestrator, chain_with_side_branch(), &options).await;
        let alerts: Vec<u8> = events
            .iter()
            .filter_map(|e| match e {
                RunEvent::BudgetAlert { threshold, .. } => Some(*threshold),
                _ => None,
            })
            .collect();
        assert_eq!(alerts, [50, 80], "{events:?}");
    }
}

mod fallback {
    use super::*;
    use aetherflow_orchestrator::Resilience;
    use aetherflow_resilience::retry::RetryPolicy;

    /// A provider with a fixed window that fails with a given error, or answers.
    struct Fixed {
        name: &'static str,
        window: Option<u64>,
        fails_with: Option<ProviderError>,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Provider for Fixed {
        fn name(&self) -> &str {
            self.name
        }
        fn price(&self, _: &str) -> Option<Price> {
            Some(Price::FREE)
        }
        fn context_window(&self, _: &str) -> Option<u64> {
            self.window
        }
        async fn chat(&self, r: &ChatRequest) -> Result<ChatResponse, ProviderError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match &self.fails_with {
                Some(e) => Err(e.clone()),
                None => Ok(ChatResponse {
                    key_id: None,
                    tool_calls: Vec::new(),
                    model: r.model.clone(),
                    text: format!("# Analysis by {}", self.name),
                    reasoning: None,
                    finish_reason: aetherflow_provider::FinishReason::Stop,
                    usage: Default::default(),
                }),
            }
        }
        async fn chat_stream(&self, _: &ChatRequest) -> Result<ChatStream, ProviderError> {
            Err(ProviderError::InvalidRequest {
                message: "not used".into(),
            })
        }
    }

    fn fixed(
        name: &'static str,
        window: Option<u64>,
        fails_with: Option<ProviderError>,
    ) -> Arc<Fixed> {
        Arc::new(Fixed {
            name,
            window,
            fails_with,
            calls: AtomicUsize::new(0),
        })
    }

    fn set(first: &Arc<Fixed>, second: &Arc<Fixed>) -> ProviderSet {
        // Analysis steps try gemini, then deepseek.
        ProviderSet::new(
            "gemini",
            ProviderEntry {
                provider: Arc::clone(first) as Arc<dyn Provider>,
                model: "g".into(),
            },
        )
        .with(
            "deepseek",
            ProviderEntry {
                provider: Arc::clone(second) as Arc<dyn Provider>,
                model: "d".into(),
            },
        )
    }

    fn no_retries() -> Resilience {
        Resilience {
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            ..Resilience::default()
        }
    }

    fn analysis() -> Arc<ValidPlan> {
        plan(
            r#"{"task_id":"t","description":"d","steps":[{"id":"a","description":"x","type":"analysis"}]}"#,
        )
    }

    #[tokio::test]
    async fn a_failing_provider_falls_back_to_the_next() {
        let (_d, ws) = workspace();
        let down = fixed(
            "gemini",
            None,
            Some(ProviderError::Server {
                status: Some(503),
                message: "down".into(),
            }),
        );
        let up = fixed("deepseek", None, None);
        let orchestrator = Orchestrator::new(set(&down, &up), ws).with_resilience(no_retries());
        let (outcome, _) = run(&orchestrator, analysis(), &RunOptions::default()).await;
        let a = &outcome.report.steps[0];
        assert_eq!(a.status, StepStatus::Succeeded, "{a:?}");
        assert_eq!(a.provider.as_deref(), Some("deepseek"));
        let who: Vec<&str> = a.attempts.iter().map(|x| x.provider.as_str()).collect();
        assert_eq!(who, ["gemini", "deepseek"]);
        assert_eq!(
            a.attempts[0].error.as_ref().map(|e| e.kind.as_str()),
            Some("server")
        );
    }

    #[tokio::test]
    async fn a_model_too_small_is_skipped_before_the_call() {
        let (_d, ws) = workspace();
        let tiny = fixed("gemini", Some(100), None);
        let big = fixed("deepseek", Some(1_000_000), None);
        let orchestrator = Orchestrator::new(set(&tiny, &big), ws);
        let (outcome, _) = run(&orchestrator, analysis(), &RunOptions::default()).await;
        assert_eq!(tiny.calls.load(Ordering::SeqCst), 0);
        assert_eq!(
            outcome.report.steps[0].provider.as_deref(),
            Some("deepseek")
        );
    }

    #[tokio::test]
    async fn context_overflow_falls_back_only_to_larger_windows() {
        let (_d, ws) = workspace();
        let overflow = ProviderError::ContextLengthExceeded {
            limit: Some(200_000),
            message: "too long".into(),
        };
        let first = fixed("gemini", Some(200_000), Some(overflow));
        let same_size = fixed("deepseek", Some(200_000), None);
        let orchestrator =
            Orchestrator::new(set(&first, &same_size), ws).with_resilience(no_retries());
        let (outcome, _) = run(&orchestrator, analysis(), &RunOptions::default()).await;
        assert_eq!(
            same_size.calls.load(Ordering::SeqCst),
            0,
            "a window no larger cannot help"
        );
        let reason = outcome.report.steps[0].reason.clone().unwrap_or_default();
        assert!(reason.contains("context length exceeded"), "{reason}");
        assert!(reason.contains("deepseek/d skipped"), "{reason}");
    }

    #[tokio::test]
    async fn when_every_provider_fails_the_reason_names_each() {
        let (_d, ws) = workspace();
        let a = fixed(
            "gemini",
            None,
            Some(ProviderError::Auth {
                message: "bad key".into(),
            }),
        );
        let b = fixed(
            "deepseek",
            None,
            Some(ProviderError::Server {
                status: Some(500),
                message: "boom".into(),
            }),
        );
        let orchestrator = Orchestrator::new(set(&a, &b), ws).with_resilience(no_retries());
        let (outcome, _) = run(&orchestrator, analysis(), &RunOptions::default()).await;
        let reason = outcome.report.steps[0].reason.clone().unwrap_or_default();
        assert!(
            reason.contains("bad key (gemini)")
                && reason.contains("; then ")
                && reason.contains("boom (deepseek)"),
            "{reason}"
        );
    }
}

mod cache {
    use super::*;
    use aetherflow_orchestrator::Resilience;
    use aetherflow_orchestrator::cache::{CacheSettings, ResponseCache};

    fn twins(second_context: &str) -> Arc<ValidPlan> {
        plan(&format!(
            r#"{{"task_id":"t","description":"d","steps":[
            {{"id":"a","description":"same question","type":"analysis"}},
            {{"id":"b","description":"same question","type":"analysis","dependencies":["a"]{second_context}}}]}}"#
        ))
    }

    fn cached(recording: &Arc<Recording>, ws: Workspace) -> Orchestrator {
        Orchestrator::new(recording_set(Arc::clone(recording)), ws).with_resilience(Resilience {
            cache: ResponseCache::new(&CacheSettings::default()),
            ..Resilience::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_request_is_answered_once() {
        let (_d, ws) = workspace();
        let recording = Arc::new(Recording::default());
        let orchestrator = cached(&recording, ws);
        // b depends on a, so b's prompt differs (it includes a's output): run the plan twice.
        let (first, _) = run(&orchestrator, twins(""), &RunOptions::default()).await;
        let (second, _) = run(&orchestrator, twins(""), &RunOptions::default()).await;
        assert_eq!(
            recording.requests.lock().expect("lock").len(),
            2,
            "the second run came from the cache"
        );
        assert!(first.report.steps.iter().all(|s| !s.attempts[0].cached));
        assert!(
            second
                .report
                .steps
                .iter()
                .all(|s| s.attempts[0].cached && s.cost.as_micros() == 0)
        );
        assert_eq!(second.outputs[0], first.outputs[0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_can_opt_out() {
        let (_d, ws) = workspace();
        let recording = Arc::new(Recording::default());
        let orchestrator = cached(&recording, ws);
        let opted_out = twins(r#","context":{"cache":false}"#);
        run(
            &orchestrator,
            Arc::clone(&opted_out),
            &RunOptions::default(),
        )
        .await;
        run(&orchestrator, opted_out, &RunOptions::default()).await;
        // a is cached the second time, b (opted out) is asked both times.
        assert_eq!(recording.requests.lock().expect("lock").len(), 3);
    }
}

mod alerts {
    use super::*;
    use aetherflow_orchestrator::Resilience;
    use aetherflow_resilience::alerts::{AlertPolicy, UsageMonitor};
    use aetherflow_resilience::retry::RetryPolicy;

    fn wide(n: usize) -> Arc<ValidPlan> {
        let steps: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"id":"s{i}","description":"x{i}","type":"analysis"}}"#))
            .collect();
        plan(&format!(
            r#"{{"task_id":"t","description":"d","steps":[{}]}}"#,
            steps.join(",")
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_burst_after_a_quiet_window_raises_a_usage_alert() {
        let monitor = Arc::new(UsageMonitor::new(AlertPolicy {
            window_secs: 60,
            min_calls: 3,
            ..AlertPolicy::default()
        }));
        let resilience = Resilience {
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            monitor: Some(monitor),
            ..Resilience::default()
        };
        let (_d, ws) = workspace();
        let healthy = Orchestrator::new(mock_provider_set(MockProvider::default()), ws)
            .with_resilience(resilience.clone());
        let (_, quiet) = run(&healthy, wide(5), &RunOptions::default()).await;
        assert!(
            !quiet
                .iter()
                .any(|e| matches!(e, RunEvent::UsageAlert { .. }))
        );

        tokio::time::advance(Duration::from_secs(61)).await;
        let (_d2, ws2) = workspace();
        let failing = Orchestrator::new(
            mock_provider_set(scripted(
                "steps:\n  '*':\n    - error: server\n      times: 100\n",
            )),
            ws2,
        )
        .with_resilience(resilience);
        let (_, events) = run(&failing, wide(5), &RunOptions::default()).await;
        let alerts: Vec<&RunEvent> = events
            .iter()
            .filter(|e| matches!(e, RunEvent::UsageAlert { kind, .. } if kind == "error_rate"))
            .collect();
        assert_eq!(alerts.len(), 1, "{events:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn steps_that_write_the_same_file_never_run_at_once() {
    let step = |id: &str, file: &str| {
        format!(
            r#"{{"id":"{id}","description":"x","type":"code_generation","context":{{"files":["{file}"]}}}}"#
        )
    };
    let steps = [
        step("a1", "a.py"),
        step("a2", "a.py"),
        step("b1", "b.py"),
        step("a3", "a.py"),
    ];
    let same_file = plan(&format!(
        r#"{{"task_id":"same","description":"d","steps":[{}]}}"#,
        steps.join(",")
    ));
    let (_d, ws) = workspace();
    let recording = Arc::new(Recording::default());
    let orchestrator = Orchestrator::new(recording_set(Arc::clone(&recording)), ws);
    let options = RunOptions {
        concurrency: NonZeroUsize::new(4).expect("non-zero"),
        ..RunOptions::default()
    };
    let (outcome, events) = run(&orchestrator, same_file, &options).await;
    assert_eq!(outcome.report.totals.succeeded, 4);
    // a.py's three steps took turns; b.py's ran beside them: never more than two at once.
    assert_eq!(recording.max_in_flight.load(Ordering::SeqCst), 2);
    // And in plan order.
    let started: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::StepStarted { step_id, .. } => Some(step_id.to_string()),
            _ => None,
        })
        .filter(|id| id.starts_with('a'))
        .collect();
    assert_eq!(started, ["a1", "a2", "a3"]);
}

/// Keeps what the engine records (finished steps, then prepared ones), as a store would.
#[derive(Debug, Default)]
struct MemoryJournal(
    Mutex<Vec<aetherflow_orchestrator::journal::FinishedStep>>,
    Mutex<Vec<aetherflow_orchestrator::journal::FinishedStep>>,
);

#[async_trait]
impl aetherflow_orchestrator::journal::StepJournal for MemoryJournal {
    async fn record(
        &self,
        step: &aetherflow_orchestrator::journal::FinishedStep,
    ) -> Result<(), String> {
        self.0.lock().expect("lock").push(step.clone());
        Ok(())
    }

    async fn prepare(
        &self,
        step: &aetherflow_orchestrator::journal::FinishedStep,
    ) -> Result<(), String> {
        self.1.lock().expect("lock").push(step.clone());
        Ok(())
    }
}

#[tokio::test]
async fn a_step_checked_but_not_recorded_finished_is_applied_from_its_answer_not_asked_again() {
    let (dir, ws) = workspace();
    let out = tempfile::tempdir().expect("out");
    let recording = Arc::new(Recording::default());
    let orchestrator = Orchestrator::new(recording_set(Arc::clone(&recording)), ws);
    let journal = Arc::new(MemoryJournal::default());
    let options = RunOptions {
        concurrency: NonZeroUsize::MIN,
        out_dir: Some(out.path().to_path_buf()),
        apply: Some(aetherflow_orchestrator::apply::ApplyMode::Write),
        journal: Some(Arc::clone(&journal) as _),
        ..RunOptions::default()
    };
    let (first, _) = run(&orchestrator, chain_with_side_branch(), &options).await;
    assert_eq!(first.report.totals.succeeded, 4);
    let prepared = journal.1.lock().expect("lock").clone();
    let ids: Vec<&str> = prepared.iter().map(|p| p.report.id.as_str()).collect();
    assert_eq!(
        ids,
        ["a", "b"],
        "the steps that write files, before writing them"
    );
    assert!(
        prepared
            .iter()
            .all(|p| p.is_prepared() && p.files.len() == 1)
    );
    // The process died while applying `a`: its file is not there; the journal has the checked
    // answer (marked, to tell it from a new one).
    let mut a = prepared[0].clone();
    a.files[0].content = "PREPARED = 1\n".into();
    std::fs::remove_file(dir.path().join("a.py")).expect("remove");
    let before = recording.requests.lock().expect("lock").len();
    let resumed = RunOptions {
        resume: Arc::new([(a.report.id.clone(), a.clone())].into_iter().collect()),
        journal: Some(Arc::new(MemoryJournal::default()) as _),
        ..options.clone()
    };
    let (second, events) = run(&orchestrator, chain_with_side_branch(), &resumed).await;
    assert_eq!(
        recording.requests.lock().expect("lock").len(),
        before + 3,
        "b, c and side are sent; a is not asked again"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("a.py")).expect("applied"),
        "PREPARED = 1\n",
        "the checked answer is what lands"
    );
    assert_eq!(second.report.steps[0].status, StepStatus::Succeeded);
    assert_eq!(second.report.steps[0].attempts, a.report.attempts);
    assert_eq!(second.report.totals.succeeded, 4);
    assert!(
        events.iter().any(
            |e| matches!(e, RunEvent::StepFinished { step_id, .. } if step_id.as_str() == "a")
        ),
        "a finishes as any step does"
    );
}

#[tokio::test]
async fn a_resumed_run_restores_recorded_steps_and_runs_only_the_rest() {
    let (_d, ws) = workspace();
    let recording = Arc::new(Recording::default());
    let orchestrator = Orchestrator::new(recording_set(Arc::clone(&recording)), ws);
    let journal = Arc::new(MemoryJournal::default());
    let options = RunOptions {
        concurrency: NonZeroUsize::MIN,
        journal: Some(Arc::clone(&journal) as _),
        ..RunOptions::default()
    };
    let (first, _) = run(&orchestrator, chain_with_side_branch(), &options).await;
    assert_eq!(first.report.totals.succeeded, 4);
    let recorded = journal.0.lock().expect("lock").clone();
    assert_eq!(recorded.len(), 4, "every finished step is recorded once");
    let a = recorded
        .iter()
        .find(|s| s.report.id.as_str() == "a")
        .expect("a recorded");
    assert_eq!(a.files.len(), 1, "with the file it produced");
    assert!(a.output.is_some(), "and its answer");

    // A process that died after `a` and `side`: a resumed run sends only `b` and `c`, and `b`
    // still reads `a`'s answer.
    let before = recording.requests.lock().expect("lock").len();
    let resume: std::collections::HashMap<_, _> = recorded
        .iter()
        .filter(|s| ["a", "side"].contains(&s.report.id.as_str()))
        .map(|s| (s.report.id.clone(), s.clone()))
        .collect();
    let resumed = RunOptions {
        resume: Arc::new(resume),
        journal: None,
        ..options.clone()
    };
    let (second, events) = run(&orchestrator, chain_with_side_branch(), &resumed).await;
    let sent = recording.requests.lock().expect("lock")[before..].to_vec();
    assert_eq!(sent.len(), 2, "only b and c are sent again");
    let b_prompt = format!("{:?}", sent[0].messages);
    assert!(
        b_prompt.contains(
            a.output
                .as_deref()
                .expect("output")
                .lines()
                .next()
                .unwrap_or("")
        ),
        "b reads a's restored answer"
    );
    assert_eq!(second.report.steps.len(), 4, "one result per step");
    assert_eq!(second.report.totals.succeeded, 4);
    assert_eq!(
        second.report.steps[0], a.report,
        "a's report is the one it ended with"
    );
    assert_eq!(second.files[0], a.files, "and its files");
    let restored: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::StepRestored { step_id, .. } => Some(step_id.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(restored, ["a", "side"]);
}

#[tokio::test]
async fn a_restored_steps_spend_counts_against_the_run_budget() {
    let (_d, ws) = workspace();
    let recording = Arc::new(Recording::default());
    let orchestrator = Orchestrator::new(recording_set(Arc::clone(&recording)), ws);
    let journal = Arc::new(MemoryJournal::default());
    let options = RunOptions {
        concurrency: NonZeroUsize::MIN,
        journal: Some(Arc::clone(&journal) as _),
        ..RunOptions::default()
    };
    run(&orchestrator, chain_with_side_branch(), &options).await;
    let a = journal
        .0
        .lock()
        .expect("lock")
        .iter()
        .find(|s| s.report.id.as_str() == "a")
        .expect("a recorded")
        .clone();
    // The same $1 cap, `a` restored: when `a` spent nearly all of it, no other call fits (each
    // call's worst case is 8192 output tokens at $2 per million, about $0.016); when `a` was
    // free, the three others are sent.
    let cap = aetherflow_domain::Money::from_micros(1_000_000);
    let resumed = |spent: u64| {
        let mut restored = a.clone();
        restored.report.cost = aetherflow_domain::Money::from_micros(spent);
        RunOptions {
            budget: Some(cap),
            resume: Arc::new(
                [(restored.report.id.clone(), restored)]
                    .into_iter()
                    .collect(),
            ),
            journal: None,
            ..options.clone()
        }
    };
    let sent = |recording: &Recording| recording.requests.lock().expect("lock").len();
    let before = sent(&recording);
    let (spent_most, _) = run(&orchestrator, chain_with_side_branch(), &resumed(995_000)).await;
    assert_eq!(sent(&recording), before, "nothing fits in what is left");
    assert_eq!(spent_most.report.steps[0].status, StepStatus::Succeeded);
    assert_eq!(spent_most.report.steps[1].status, StepStatus::Failed);
    let before = sent(&recording);
    let (spent_none, _) = run(&orchestrator, chain_with_side_branch(), &resumed(0)).await;
    assert_eq!(sent(&recording), before + 3, "b, c and side are sent");
    assert_eq!(spent_none.report.totals.succeeded, 4);
}
