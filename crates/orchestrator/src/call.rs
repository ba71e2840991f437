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
use tracing::Instrument;

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
    /// Whether an answer cut at the output limit is returned as it is (the caller set the
    /// limit) instead of counting as a failure.
    pub accept_truncated: bool,
}

impl CallOptions {
    /// The budget scopes a call made now is charged to: today, this month, and the extras.
    fn scopes(&self) -> Vec<Scope> {
        let now = Utc::now();
        [
            Scope::Day(now.format("%Y-%m-%d").to_string()),
            Scope::Month(now.format("%Y-%m").to_string()),
        ]
        .into_iter()
        .chain(self.extra_scopes.iter().cloned())
        .collect()
    }
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
    /// Nothing was sent: the request is larger than the context window of every model that
    /// could take it.
    pub too_large: bool,
    /// Nothing was sent: the shared budget store (Redis) did not answer, and budgets fail
    /// closed.
    pub store_unavailable: bool,
}

/// Sends `request` to `targets` in turn (each with retries, inside its breaker and the budget)
/// until one answers; every attempt is appended to the cost ledger.
pub async fn complete(
    resilience: &Resilience,
    targets: &[Target],
    mut request: ChatRequest,
    options: &CallOptions,
) -> Result<CallOutcome, CallFailure> {
    let scopes = options.scopes();
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
        accept_truncated: options.accept_truncated,
    };
    let result = generate(&env, targets, &mut request, options.cacheable, &mut report).await;
    if let Some(ledger) = &resilience.ledger {
        // The answer does not wait for the disk: the ledger's own thread appends it.
        ledger.append_later(records(label, options.caller.as_deref(), &report.attempts));
    }
    match result {
        Ok(response) => Ok(CallOutcome {
            response,
            provider: report.provider.unwrap_or_default(),
            attempts: report.attempts,
            usage: report.usage,
            cost: report.cost,
        }),
        Err(no) => Err(CallFailure {
            kind: no.kind,
            message: no.reason,
            attempts: report.attempts,
            cost: report.cost,
            too_large: no.too_large,
            store_unavailable: no.store_unavailable,
        }),
    }
}

/// A stream that started: its provider, model and events. The events end with usage and the
/// finish reason; when the stream ends (or is dropped), its cost is charged to the budgets and
/// the ledger, and the breaker learns how it went.
pub struct CallStream {
    /// The provider answering.
    pub provider: String,
    /// The model answering.
    pub model: String,
    /// Calls that failed before this one started.
    pub failed_attempts: Vec<Attempt>,
    /// The events.
    pub events: aetherflow_provider::ChatStream,
}

impl std::fmt::Debug for CallStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallStream")
            .field("provider", &self.provider)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

/// Opens a stream on the first of `targets` that produces a first event, each inside its
/// breaker and with its worst case reserved in the budgets; a target fails over to the next
/// only before its first event (text already sent cannot be taken back). One attempt per
/// target: a stream is not retried on the same model.
pub async fn stream(
    resilience: &Resilience,
    targets: &[Target],
    request: ChatRequest,
    options: &CallOptions,
) -> Result<CallStream, CallFailure> {
    use futures::StreamExt as _;
    let scopes = options.scopes();
    let label = if options.label.is_empty() {
        "call".to_owned()
    } else {
        options.label.clone()
    };
    let bound = request.prompt_token_bound();
    let needed = aetherflow_provider::tokens::estimate_request(&request)
        + u64::from(request.max_output_tokens.unwrap_or(0));
    let mut failed: Vec<Attempt> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    let mut over_budget = false;
    let mut store_unavailable = false;
    let mut window_skips = 0usize;
    for target in targets {
        let provider = Arc::clone(&target.entry.provider);
        if let Some(w) = provider.context_window(&target.entry.model)
            && w < needed
        {
            reasons.push(format!(
                "{}/{} skipped: its {w}-token window is too small for about {needed} tokens",
                target.name, target.entry.model
            ));
            window_skips += 1;
            continue;
        }
        let price = provider.price(&target.entry.model);
        let reservation = if resilience.budgets.has_caps(&scopes) {
            let Some(price) = price else {
                reasons.push(format!(
                    "a budget is set but the price of {}/{} is unknown, so the call cannot be bounded; configure its price",
                    target.name, target.entry.model
                ));
                continue;
            };
            let worst = aetherflow_resilience::budget::worst_case_cost(
                bound,
                u64::from(request.max_output_tokens.unwrap_or(32_768)),
                &price,
            );
            match resilience.budgets.acquire(&scopes, worst).await {
                Ok(r) => Some(r),
                Err(aetherflow_resilience::budget::BudgetError::Exceeded(e)) => {
                    over_budget = true;
                    reasons.push(e.to_string());
                    continue;
                }
                // Fail closed: without the shared store the call cannot be bounded.
                Err(e @ aetherflow_resilience::budget::BudgetError::Unavailable(_)) => {
                    store_unavailable = true;
                    reasons.push(e.to_string());
                    continue;
                }
            }
        } else {
            None
        };
        let permit = match resilience
            .breakers
            .admit(&target.name, &target.entry.model)
            .await
        {
            Ok(p) => p,
            Err(open) => {
                reasons.push(open.to_string());
                continue;
            }
        };
        let mut req = request.clone();
        req.model.clone_from(&target.entry.model);
        let started_at = Utc::now();
        let clock = std::time::Instant::now();
        let span = crate::engine::attempt_span(&target.name, &target.entry.model, 1);
        let opened = async {
            match provider.chat_stream(&req).await {
                Ok(mut s) => match s.next().await {
                    Some(Ok(first)) => Ok((first, s)),
                    Some(Err(e)) => Err(e),
                    None => Err(aetherflow_provider::ProviderError::Decode {
                        message: "the stream ended without any event".into(),
                    }),
                },
                Err(e) => Err(e),
            }
        }
        .instrument(span.clone())
        .await;
        match opened {
            Ok((first, rest)) => {
                let guard = StreamGuard {
                    resilience: resilience.clone(),
                    permit: Some(permit),
                    reservation,
                    price,
                    attempt: Attempt {
                        provider: target.name.clone(),
                        model: target.entry.model.clone(),
                        key_id: None,
                        started_at,
                        latency: std::time::Duration::ZERO,
                        usage: Usage::default(),
                        cost: Money::ZERO,
                        error: None,
                        cached: false,
                    },
                    clock,
                    label: label.clone(),
                    caller: options.caller.clone(),
                    finished: false,
                    failure: None,
                    span,
                };
                let events = Box::pin(async_stream::stream! {
                    let mut guard = guard;
                    let mut rest = rest;
                    let mut next: Option<Result<aetherflow_provider::StreamEvent, aetherflow_provider::ProviderError>> = Some(Ok(first));
                    while let Some(item) = next.take() {
                        match &item {
                            Ok(aetherflow_provider::StreamEvent::Usage(u)) => guard.attempt.usage = *u,
                            Ok(aetherflow_provider::StreamEvent::Finish(_)) => guard.finished = true,
                            Ok(_) => {}
                            Err(e) => guard.failure = Some(e.clone()),
                        }
                        yield item;
                        next = rest.next().await;
                    }
                });
                return Ok(CallStream {
                    provider: target.name.clone(),
                    model: target.entry.model.clone(),
                    failed_attempts: failed,
                    events,
                });
            }
            Err(error) => {
                span.record("outcome", error.kind());
                resilience.breakers.record(permit, Err(&error));
                drop(reservation);
                tracing::warn!(provider = %target.name, model = %target.entry.model, kind = error.kind(), error = %error, "stream did not start; trying the next provider");
                reasons.push(format!("{error} ({})", target.name));
                failed.push(Attempt {
                    provider: target.name.clone(),
                    model: target.entry.model.clone(),
                    key_id: None,
                    started_at,
                    latency: clock.elapsed(),
                    usage: Usage::default(),
                    cost: Money::ZERO,
                    error: Some(aetherflow_domain::run::AttemptError {
                        kind: error.kind().to_owned(),
                        retryable: error.is_retryable(),
                        message: error.to_string(),
                    }),
                    cached: false,
                });
            }
        }
    }
    if let Some(ledger) = &resilience.ledger {
        ledger.append_later(records(&label, options.caller.as_deref(), &failed));
    }
    if reasons.is_empty() {
        reasons.push("no configured provider can take this request".into());
    }
    Err(CallFailure {
        kind: if over_budget {
            FailureKind::BudgetExceeded
        } else {
            FailureKind::ProviderError
        },
        message: reasons.join("; then "),
        too_large: window_skips > 0 && failed.is_empty(),
        store_unavailable: store_unavailable && !over_budget && failed.is_empty(),
        attempts: failed,
        cost: Money::ZERO,
    })
}

/// Settles a stream when it ends or is dropped: the breaker learns the outcome, the budgets
/// are charged, and the attempt goes to the ledger. A stream dropped before its usage arrived
/// (the client went away) is charged its whole reservation: the provider may bill the full
/// answer, and a cap must never be passed.
struct StreamGuard {
    resilience: Resilience,
    permit: Option<aetherflow_resilience::breaker::Permit>,
    reservation: Option<aetherflow_resilience::budget::Reservation>,
    price: Option<aetherflow_domain::Price>,
    attempt: Attempt,
    clock: std::time::Instant,
    label: String,
    caller: Option<String>,
    finished: bool,
    failure: Option<aetherflow_provider::ProviderError>,
    /// The attempt's span, ended (with its tokens and cost) when the stream is.
    span: tracing::Span,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.attempt.latency = self.clock.elapsed();
        let price = self.price.unwrap_or(aetherflow_domain::Price::FREE);
        let measured = self.attempt.usage.cost(&price);
        let complete = self.finished && self.failure.is_none();
        if let Some(permit) = self.permit.take() {
            let outcome = match &self.failure {
                Some(e) => Err(e),
                None => Ok(()),
            };
            self.resilience.breakers.record(permit, outcome);
        }
        let charged = match self.reservation.take() {
            Some(r) if complete || self.attempt.usage.output_tokens > 0 => {
                r.commit(measured);
                measured
            }
            Some(r) => {
                let whole = r.amount();
                r.commit(whole);
                whole
            }
            None => measured,
        };
        self.attempt.cost = charged;
        if let Some(e) = &self.failure {
            self.attempt.error = Some(aetherflow_domain::run::AttemptError {
                kind: e.kind().to_owned(),
                retryable: e.is_retryable(),
                message: e.to_string(),
            });
        } else if !complete {
            self.attempt.error = Some(aetherflow_domain::run::AttemptError {
                kind: "cancelled".to_owned(),
                retryable: false,
                message: "the client stopped reading the stream".to_owned(),
            });
        }
        crate::engine::record_attempt_span(&self.span, &self.attempt);
        if let Some(monitor) = &self.resilience.monitor {
            let _ = monitor.observe(&self.attempt.provider, charged, self.failure.is_some());
        }
        if let Some(ledger) = &self.resilience.ledger {
            ledger.append_later(records(
                &self.label,
                self.caller.as_deref(),
                std::slice::from_ref(&self.attempt),
            ));
        }
    }
}

/// The ledger's records of `attempts`, made for `run_id` / `task_id` / `step_id`.
pub(crate) fn cost_records(
    run_id: &str,
    task_id: &str,
    step_id: &str,
    attempts: &[Attempt],
) -> Vec<CostRecord> {
    attempts
        .iter()
        .map(|a| CostRecord {
            at: a.started_at,
            run_id: run_id.to_owned(),
            task_id: task_id.to_owned(),
            step_id: step_id.to_owned(),
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
        .collect()
}

/// The ledger's records of a one-off call's attempts: the label as run and step, the caller
/// (or the label) as task.
fn records(label: &str, caller: Option<&str>, attempts: &[Attempt]) -> Vec<CostRecord> {
    cost_records(label, caller.unwrap_or(label), label, attempts)
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
        // The ledger is written in the background, just after the answer.
        let mut ledger = String::new();
        for _ in 0..200 {
            ledger = std::fs::read_to_string(&ledger_path).unwrap_or_default();
            if !ledger.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
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
