//! Circuit breakers per (provider, model), shared by every run in the process: open after N
//! consecutive provider-side failures or a failure rate over a rolling window, half-open after
//! a cooldown with a limited number of probes, closed again when a probe succeeds.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aetherflow_provider::ProviderError;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// When a breaker opens and how it recovers.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerPolicy {
    /// Consecutive provider-side failures that open the breaker.
    pub consecutive_failures: u32,
    /// Failure rate (0–1) over the window that opens the breaker …
    pub failure_rate: f64,
    /// … once the window holds at least this many calls.
    pub min_calls: u32,
    /// The rolling window, in milliseconds.
    pub window_ms: u64,
    /// How long the breaker stays open before letting probes through, in milliseconds.
    pub cooldown_ms: u64,
    /// Calls allowed through at once while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_calls: 10,
            window_ms: 60_000,
            cooldown_ms: 30_000,
            half_open_probes: 1,
        }
    }
}

/// Whether an error says the provider is unwell (and so counts against its breaker). Our own
/// mistakes (invalid request, context too long), policy blocks and key problems do not.
pub fn counts_as_provider_failure(error: &ProviderError) -> bool {
    matches!(
        error,
        ProviderError::Server { .. }
            | ProviderError::Timeout { .. }
            | ProviderError::Transport { .. }
            | ProviderError::Decode { .. }
    )
}

/// A breaker's state, for `providers status` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused until the cooldown ends.
    Open,
    /// A limited number of probe calls are let through.
    HalfOpen,
}

#[derive(Debug)]
struct Breaker {
    state: BreakerState,
    consecutive: u32,
    /// Calls in the rolling window, in buckets of a twentieth of it: (bucket start, calls,
    /// failures), oldest first, with running totals, so recording a call is O(1) in time and
    /// memory whatever the call rate.
    window: VecDeque<(Instant, u32, u32)>,
    calls: u32,
    failures: u32,
    open_until: Option<Instant>,
    probes_in_flight: u32,
}

impl Breaker {
    fn new() -> Self {
        Breaker {
            state: BreakerState::Closed,
            consecutive: 0,
            window: VecDeque::new(),
            calls: 0,
            failures: 0,
            open_until: None,
            probes_in_flight: 0,
        }
    }

    fn open(&mut self, policy: &BreakerPolicy, now: Instant) {
        self.state = BreakerState::Open;
        self.open_until = Some(now + Duration::from_millis(policy.cooldown_ms));
        self.probes_in_flight = 0;
        self.window.clear();
        self.calls = 0;
        self.failures = 0;
        self.consecutive = 0;
    }
}

/// The breaker refused a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit open for {provider}/{model}: it failed repeatedly; next probe in {retry_in:?}")]
pub struct CircuitOpen {
    /// The provider.
    pub provider: String,
    /// The model.
    pub model: String,
    /// Time until a probe may go through.
    pub retry_in: Duration,
}

/// Permission to make one call; report how it went with [`Breakers::record`].
#[derive(Debug)]
#[must_use = "report the outcome with Breakers::record"]
pub struct Permit {
    key: (String, String),
    probe: bool,
    /// Given by the shared store, so its outcome goes there.
    shared: bool,
}

/// What a shared breaker store says about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The breaker is closed: call.
    Call,
    /// The breaker is half-open and this call is one of its probes.
    Probe,
    /// The breaker is open (or half-open with every probe slot taken) for this long still.
    Open(Duration),
}

/// How a call ended, as a shared breaker store counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The provider answered.
    Success,
    /// A provider-side failure ([`counts_as_provider_failure`]).
    Failure,
    /// Neither (our own mistake, a key problem, a policy block).
    Neutral,
}

/// Breaker state shared by several processes (Redis in `aetherflow-redis`), so a provider that
/// fails for one replica is skipped by all, and half-open probes are limited across all of them.
/// Errors are descriptions of why the store could not be used; the caller then decides with its
/// own in-process breaker.
#[async_trait::async_trait]
pub trait BreakerStore: std::fmt::Debug + Send + Sync {
    /// Asks to call `provider`/`model` now.
    async fn admit(
        &self,
        provider: &str,
        model: &str,
        policy: &BreakerPolicy,
    ) -> Result<Admission, String>;

    /// Reports how an admitted call ended.
    async fn record(
        &self,
        provider: &str,
        model: &str,
        probe: bool,
        outcome: Outcome,
        policy: &BreakerPolicy,
    ) -> Result<(), String>;
}

/// Every breaker of the process, kept here or, with a [`BreakerStore`], shared.
#[derive(Debug, Default)]
pub struct Breakers {
    policy: BreakerPolicy,
    breakers: Mutex<HashMap<(String, String), Breaker>>,
    store: Option<Arc<dyn BreakerStore>>,
    /// Decisions taken locally because the shared store failed.
    local_fallbacks: AtomicU64,
}

/// One breaker's state and counts, for display.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerStatus {
    /// The provider.
    pub provider: String,
    /// The model.
    pub model: String,
    /// The state.
    pub state: BreakerState,
    /// Calls in the current window.
    pub calls: usize,
    /// Failures in the current window.
    pub failures: usize,
}

impl Breakers {
    /// Breakers following `policy`.
    pub fn new(policy: BreakerPolicy) -> Self {
        Breakers {
            policy,
            breakers: Mutex::new(HashMap::new()),
            store: None,
            local_fallbacks: AtomicU64::new(0),
        }
    }

    /// Keeps breaker state in `store`, shared with every process that uses it.
    #[must_use]
    pub fn with_store(mut self, store: Arc<dyn BreakerStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// How many decisions were taken by this process's own breakers because the shared store
    /// failed (a metric).
    pub fn local_fallbacks(&self) -> u64 {
        self.local_fallbacks.load(Ordering::Relaxed)
    }

    /// Asks to call `provider`/`model` now: through the shared store when there is one (falling
    /// back to this process's breaker, with a warning, when the store fails), else locally.
    pub async fn admit(&self, provider: &str, model: &str) -> Result<Permit, CircuitOpen> {
        let Some(store) = &self.store else {
            return self.acquire(provider, model);
        };
        match store.admit(provider, model, &self.policy).await {
            Ok(Admission::Open(retry_in)) => Err(CircuitOpen {
                provider: provider.to_owned(),
                model: model.to_owned(),
                retry_in,
            }),
            Ok(admission) => Ok(Permit {
                key: (provider.to_owned(), model.to_owned()),
                probe: admission == Admission::Probe,
                shared: true,
            }),
            Err(e) => {
                self.local_fallbacks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(provider, model, error = %e, "shared breaker state unavailable; this process's own breaker decides");
                self.acquire(provider, model)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Breaker>> {
        self.breakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks to call `provider`/`model` now.
    pub fn acquire(&self, provider: &str, model: &str) -> Result<Permit, CircuitOpen> {
        let now = Instant::now();
        let key = (provider.to_owned(), model.to_owned());
        let mut all = self.lock();
        let b = all.entry(key.clone()).or_insert_with(Breaker::new);
        if b.state == BreakerState::Open {
            match b.open_until {
                Some(until) if until > now => {
                    return Err(CircuitOpen {
                        provider: key.0,
                        model: key.1,
                        retry_in: until - now,
                    });
                }
                _ => {
                    b.state = BreakerState::HalfOpen;
                    b.probes_in_flight = 0;
                }
            }
        }
        if b.state == BreakerState::HalfOpen {
            if b.probes_in_flight >= self.policy.half_open_probes {
                return Err(CircuitOpen {
                    provider: key.0,
                    model: key.1,
                    retry_in: Duration::ZERO,
                });
            }
            b.probes_in_flight += 1;
            return Ok(Permit {
                key,
                probe: true,
                shared: false,
            });
        }
        Ok(Permit {
            key,
            probe: false,
            shared: false,
        })
    }

    /// Reports how a permitted call ended. Errors that are not the provider's fault count as
    /// neither success nor failure.
    pub fn record(&self, permit: Permit, outcome: Result<(), &ProviderError>) {
        if permit.shared
            && let Some(store) = &self.store
        {
            let outcome = match outcome {
                Ok(()) => Outcome::Success,
                Err(e) if counts_as_provider_failure(e) => Outcome::Failure,
                Err(_) => Outcome::Neutral,
            };
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let store = Arc::clone(store);
                let policy = self.policy;
                rt.spawn(async move {
                    let (provider, model) = permit.key;
                    if let Err(e) = store
                        .record(&provider, &model, permit.probe, outcome, &policy)
                        .await
                    {
                        tracing::warn!(%provider, %model, error = %e, "call outcome not recorded in the shared breaker state");
                    }
                });
            }
            return;
        }
        let now = Instant::now();
        let policy = self.policy;
        let mut all = self.lock();
        let Some(b) = all.get_mut(&permit.key) else {
            return;
        };
        let failed = match outcome {
            Ok(()) => false,
            Err(e) if counts_as_provider_failure(e) => true,
            Err(_) => {
                if permit.probe {
                    b.probes_in_flight = b.probes_in_flight.saturating_sub(1);
                }
                return;
            }
        };
        if permit.probe {
            b.probes_in_flight = b.probes_in_flight.saturating_sub(1);
            if failed {
                tracing::warn!(provider = %permit.key.0, model = %permit.key.1, "probe failed; circuit open again");
                b.open(&policy, now);
            } else {
                tracing::info!(provider = %permit.key.0, model = %permit.key.1, "probe succeeded; circuit closed");
                *b = Breaker::new();
            }
            return;
        }
        if b.state != BreakerState::Closed {
            // A call that started before the breaker opened: its outcome is stale.
            return;
        }
        let window = Duration::from_millis(policy.window_ms);
        let bucket = (window / 20).max(Duration::from_millis(1));
        match b.window.back_mut() {
            Some((start, calls, failures)) if now.duration_since(*start) < bucket => {
                *calls += 1;
                *failures += u32::from(failed);
            }
            _ => b.window.push_back((now, 1, u32::from(failed))),
        }
        b.calls += 1;
        b.failures += u32::from(failed);
        while let Some(&(start, calls, failures)) = b.window.front() {
            if now.duration_since(start) <= window {
                break;
            }
            b.window.pop_front();
            b.calls -= calls;
            b.failures -= failures;
        }
        b.consecutive = if failed { b.consecutive + 1 } else { 0 };
        let (calls, failures) = (b.calls, b.failures);
        let rate_trips =
            calls >= policy.min_calls && failures as f64 / calls as f64 >= policy.failure_rate;
        if b.consecutive >= policy.consecutive_failures || (failed && rate_trips) {
            tracing::warn!(provider = %permit.key.0, model = %permit.key.1, consecutive = b.consecutive, calls, failures, "circuit opened");
            b.open(&policy, now);
        }
    }

    /// Every breaker that has seen a call.
    pub fn status(&self) -> Vec<BreakerStatus> {
        let now = Instant::now();
        let mut out: Vec<BreakerStatus> = self
            .lock()
            .iter()
            .map(|((provider, model), b)| {
                let state = match (b.state, b.open_until) {
                    (BreakerState::Open, Some(until)) if until <= now => BreakerState::HalfOpen,
                    (s, _) => s,
                };
                BreakerStatus {
                    provider: provider.clone(),
                    model: model.clone(),
                    state,
                    calls: b.calls as usize,
                    failures: b.failures as usize,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.provider, &a.model).cmp(&(&b.provider, &b.model)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail() -> ProviderError {
        ProviderError::Server {
            status: Some(500),
            message: String::new(),
        }
    }

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            consecutive_failures: 3,
            failure_rate: 0.5,
            min_calls: 6,
            window_ms: 10_000,
            cooldown_ms: 5_000,
            half_open_probes: 1,
        }
    }

    fn call(b: &Breakers, outcome: Result<(), &ProviderError>) -> Result<(), CircuitOpen> {
        let permit = b.acquire("p", "m")?;
        b.record(permit, outcome);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_then_recovers_through_a_probe() {
        let b = Breakers::new(policy());
        for _ in 0..3 {
            call(&b, Err(&fail())).expect("closed");
        }
        let open = call(&b, Ok(())).expect_err("open");
        assert_eq!(open.retry_in, Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(5)).await;
        // Half-open: one probe at a time.
        let probe = b.acquire("p", "m").expect("probe allowed");
        assert!(b.acquire("p", "m").is_err(), "second probe refused");
        b.record(probe, Ok(()));
        assert_eq!(b.status()[0].state, BreakerState::Closed);
        call(&b, Ok(())).expect("closed again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens() {
        let b = Breakers::new(policy());
        for _ in 0..3 {
            call(&b, Err(&fail())).expect("closed");
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        call(&b, Err(&fail())).expect("probe");
        assert!(
            call(&b, Ok(())).is_err(),
            "open again after the failed probe"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_failure_rate_over_the_window() {
        let b = Breakers::new(policy());
        for outcome in [true, false, true, false, true, false] {
            let e = fail();
            call(&b, if outcome { Ok(()) } else { Err(&e) }).expect("closed");
        }
        assert!(call(&b, Ok(())).is_err(), "3 of 6 failed: 50% opens it");
    }

    #[tokio::test(start_paused = true)]
    async fn old_calls_leave_the_window() {
        let b = Breakers::new(BreakerPolicy {
            consecutive_failures: 100,
            ..policy()
        });
        for _ in 0..2 {
            call(&b, Err(&fail())).expect("closed");
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        for _ in 0..5 {
            call(&b, Ok(())).expect("closed");
        }
        call(&b, Err(&fail())).expect("1 of 6 in the window: still closed");
        assert_eq!(b.status()[0].calls, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_window_stays_small_and_counts_every_call() {
        let b = Breakers::new(policy());
        for _ in 0..100_000 {
            call(&b, Ok(())).expect("closed");
        }
        assert_eq!(b.status()[0].calls, 100_000);
        {
            let all = b.lock();
            let breaker = all.values().next().expect("one breaker");
            assert_eq!(
                breaker.window.len(),
                1,
                "calls at one instant share a bucket"
            );
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        call(&b, Err(&fail())).expect("closed");
        let status = &b.status()[0];
        assert_eq!(
            (status.calls, status.failures),
            (1, 1),
            "old buckets left the window"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn our_own_errors_do_not_count() {
        let b = Breakers::new(policy());
        for _ in 0..10 {
            let e = ProviderError::InvalidRequest {
                message: String::new(),
            };
            call(&b, Err(&e)).expect("closed");
            let e = ProviderError::Auth {
                message: String::new(),
            };
            call(&b, Err(&e)).expect("closed");
        }
        assert_eq!(b.status()[0].state, BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn breakers_are_per_model() {
        let b = Breakers::new(policy());
        for _ in 0..3 {
            let p = b.acquire("p", "bad").expect("closed");
            b.record(p, Err(&fail()));
        }
        assert!(b.acquire("p", "bad").is_err());
        assert!(b.acquire("p", "good").is_ok());
    }
}
