//! One request outside any plan — an uploaded design to analyse, a chat completion sent through
//! the API — with the same retries, fallbacks, circuit breakers, budget reservations, response
//! cache and cost ledger as a plan step.

use std::sync::Arc;

use aetherflow_domain::plan::StepType;
use aetherflow_domain::run::{Attempt, FailureKind, StepReport};
use aetherflow_domain::{Money, StepId, Usage};
use aetherflow_provider::{ChatRequest, ChatResponse};
use aetherflow_resilience::budget::Scope;
use aetherflow_resilience::ledger::CostRecord;
use chrono::Utc;

use crate::engine::{CallEnv, Resilience, generate};
use crate::events::EventSink;
use crate::routing::Target;

/// How a one-off call is made and accounted.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// What the call is for (`designer`, `chat`): its name in logs and the cost ledger.
    pub label: String,
    /// Who asked (an API key id, say), recorded in the cost ledger as the task.
    pub caller: Option<String>,
    /// Budget scopes the call counts against besides the current UTC day and month (an API
    /// key's daily cap, say).
    pub extra_scopes: Vec<Scope>,
    /// Whether an answer from the response cache may serve it (deterministic requests only).
    pub cacheable: bool,
}

/// A call that produced an answer.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    /// The answer.
    pub response: ChatResponse,
    /// The provider that gave it.
    pub provider: String,
    /// Every provider call made, failed ones included, in order.
    pub attempts: Vec<Attempt>,
    /// Tokens over all attempts.
    pub usage: Usage,
    /// What all attempts cost.
    pub cost: Money,
}

/// A call that produced no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CallFailure {
    /// Why, as a kind: `BudgetExceeded` when no target fitted the budget, else `ProviderError`.
    pub kind: FailureKind,
    /// What each target said, in order.
    pub message: String,
    /// Every provider call made (their cost is already charged).
    pub attempts: Vec<Attempt>,
    /// What the failed attempts cost.
    pub cost: Money,
}

/// Sends `request` to `targets` in turn (each with retries, inside its breaker and the budget)
/// until one answers; every attempt is appended to the cost ledger.
pub async fn complete(
    resilience: &Resilience,
    targets: &[Target],
    mut request: ChatRequest,
    options: &CallOptions,
) -> Result<CallOutcome, CallFailure> {
    let now = Utc::now();
    let scopes: Vec<Scope> = [
        Scope::Day(now.format("%Y-%m-%d").to_string()),
        Scope::Month(now.format("%Y-%m").to_string()),
    ]
    .into_iter()
    .chain(options.extra_scopes.iter().cloned())
    .collect();
    let label = if options.label.is_empty() {
        "call"
    } else {
        options.label.as_str()
    };
    let mut report = StepReport::pending(StepId::new(label), StepType::Analysis);
    let events = EventSink::none();
    let env = CallEnv {
        retry: &resilience.retry,
        breakers: &resilience.breakers,
        budgets: &resilience.budgets,
        scopes: &scopes,
        cache: resilience.cache.as_ref(),
        provider_limits: &resilience.provider_limits,
        monitor: resilience.monitor.as_deref(),
        events: &events,
    };
    let result = generate(&env, targets, &mut request, options.cacheable, &mut report).await;
    if let Some(ledger) = &resilience.ledger {
        record(ledger, label, options.caller.as_deref(), &report.attempts).await;
    }
    match result {
        Ok(response) => Ok(CallOutcome {
            response,
            provider: report.provider.unwrap_or_default(),
            attempts: report.attempts,
            usage: report.usage,
            cost: report.cost,
        }),
        Err((kind, message)) => Err(CallFailure {
            kind,
            message,
            attempts: report.attempts,
            cost: report.cost,
        }),
    }
}

/// Appends the attempts to the ledger; a ledger that cannot be written is logged, never a
/// reason to lose the answer.
async fn record(
    ledger: &Arc<aetherflow_resilience::ledger::CostLedger>,
    label: &str,
    caller: Option<&str>,
    attempts: &[Attempt],
) {
    let records: Vec<CostRecord> = attempts
        .iter()
        .map(|a| CostRecord {
            at: a.started_at,
            run_id: label.to_owned(),
            task_id: caller.unwrap_or(label).to_owned(),
            step_id: label.to_owned(),
            provider: a.provider.clone(),
            model: a.model.clone(),
            usage: a.usage,
            cost: a.cost,
            outcome: match (&a.error, a.cached) {
                (Some(e), _) => e.kind.clone(),
                (None, true) => "cached".to_owned(),
                (None, false) => "ok".to_owned(),
            },
        })
        .collect();
    if records.is_empty() {
        return;
    }
    let ledger = Arc::clone(ledger);
    match tokio::task::spawn_blocking(move || ledger.append(&records)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cost ledger not written"),
        Err(e) => tracing::error!(error = %e, "cost ledger task stopped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aetherflow_provider::Message;
    use aetherflow_provider::mock::{MockProvider, MockScript};

    fn targets(mock: MockProvider) -> Vec<Target> {
        let targets = crate::mock_provider_set(mock).preferring_targets("anything");
        assert_eq!(targets.len(), 1);
        targets
    }

    fn request() -> ChatRequest {
        ChatRequest {
            model: String::new(),
            messages: vec![Message::user("Describe this design as JSON.")],
            max_output_tokens: Some(200),
            json_mode: true,
            ..ChatRequest::default()
        }
    }

    #[tokio::test]
    async fn a_call_answers_and_records_its_attempt_and_cost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger_path = dir.path().join("ledger.jsonl");
        let resilience = Resilience {
            ledger: Some(Arc::new(
                aetherflow_resilience::ledger::CostLedger::open(&ledger_path).expect("ledger"),
            )),
            ..Resilience::default()
        };
        let options = CallOptions {
            label: "designer".into(),
            caller: Some("key1".into()),
            ..CallOptions::default()
        };
        let outcome = complete(
            &resilience,
            &targets(MockProvider::default()),
            request(),
            &options,
        )
        .await
        .expect("the mock answers");
        assert!(!outcome.response.text.is_empty());
        assert_eq!(outcome.attempts.len(), 1);
        assert!(outcome.attempts[0].error.is_none());
        let ledger = std::fs::read_to_string(&ledger_path).expect("ledger written");
        assert_eq!(ledger.lines().count(), 1, "{ledger}");
        assert!(
            ledger.contains("\"designer\"") && ledger.contains("\"key1\""),
            "{ledger}"
        );
    }

    #[tokio::test]
    async fn a_budget_too_small_for_the_worst_case_refuses_before_any_call() {
        let resilience = Resilience::default();
        let scope = Scope::ApiKey("k".into());
        resilience
            .budgets
            .set_cap(scope.clone(), Some(Money::from_micros(1)));
        let options = CallOptions {
            label: "chat".into(),
            extra_scopes: vec![scope],
            ..CallOptions::default()
        };
        // The mock is free: give it a price so the worst case is above the cap.
        let mock = MockProvider::new(MockScript::default(), std::time::Duration::ZERO).with_price(
            aetherflow_domain::Price {
                input_per_mtok: Money::from_micros(1_000_000),
                cached_input_per_mtok: Money::from_micros(100_000),
                output_per_mtok: Money::from_micros(2_000_000),
            },
        );
        let failure = complete(&resilience, &targets(mock), request(), &options)
            .await
            .expect_err("over budget");
        assert_eq!(failure.kind, FailureKind::BudgetExceeded);
        assert!(failure.attempts.is_empty(), "nothing was sent");
        assert!(failure.message.contains("budget"), "{}", failure.message);
    }
}
