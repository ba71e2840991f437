//! Retries that honour the provider: exponential backoff with full jitter, never shorter than
//! the provider's own wait (`Retry-After`, Groq's resets, Gemini's `retryDelay`), bounded by a
//! number of attempts and a deadline, and never for errors that cannot succeed.

use std::time::Duration;

use aetherflow_provider::ProviderError;
use serde::Deserialize;

/// How often and how patiently one model is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Calls to the same model, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Backoff base: attempt n waits up to `base × 2^(n-1)`.
    #[serde(with = "millis", rename = "base_delay_ms")]
    pub base_delay: Duration,
    /// Upper bound of one backoff wait (the provider's own wait may be longer).
    #[serde(with = "millis", rename = "max_delay_ms")]
    pub max_delay: Duration,
    /// Time budget for all attempts of one step on one model; a wait that would pass it is
    /// not taken, so the step can fall back instead.
    #[serde(with = "millis", rename = "deadline_ms")]
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            deadline: Duration::from_secs(300),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Wait this long, then call the same model again.
    RetryAfter(Duration),
    /// Stop retrying this model (the error cannot succeed here, or the attempts or the deadline
    /// are used up): fall back or fail.
    GiveUp,
}

impl RetryPolicy {
    /// The decision after attempt number `attempt` (1-based) failed with `error`, `elapsed`
    /// after the first attempt started. `jitter` is a number in `[0, 1)`.
    pub fn decide(
        &self,
        attempt: u32,
        error: &ProviderError,
        elapsed: Duration,
        jitter: f64,
    ) -> RetryDecision {
        if !error.is_retryable() || attempt >= self.max_attempts {
            return RetryDecision::GiveUp;
        }
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.max_delay);
        // Full jitter (AWS architecture blog): uniform in [0, exp].
        let backoff = exp.mul_f64(jitter.clamp(0.0, 1.0));
        let wait = match error.retry_after() {
            Some(hint) => hint.max(backoff),
            None => backoff,
        };
        if elapsed.saturating_add(wait) >= self.deadline {
            return RetryDecision::GiveUp;
        }
        RetryDecision::RetryAfter(wait)
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aetherflow_provider::TimeoutPhase;
    use proptest::prelude::*;

    fn server() -> ProviderError {
        ProviderError::Server {
            status: Some(503),
            message: String::new(),
        }
    }

    #[test]
    fn errors_that_cannot_succeed_are_never_retried() {
        let policy = RetryPolicy::default();
        for e in [
            ProviderError::Auth {
                message: String::new(),
            },
            ProviderError::InvalidRequest {
                message: String::new(),
            },
            ProviderError::ContextLengthExceeded {
                limit: None,
                message: String::new(),
            },
            ProviderError::ContentFiltered {
                message: String::new(),
            },
        ] {
            assert_eq!(
                policy.decide(1, &e, Duration::ZERO, 0.5),
                RetryDecision::GiveUp,
                "{e}"
            );
        }
    }

    #[test]
    fn the_providers_wait_is_a_floor() {
        let policy = RetryPolicy::default();
        let limited = ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(17)),
            message: String::new(),
        };
        assert_eq!(
            policy.decide(1, &limited, Duration::ZERO, 0.0),
            RetryDecision::RetryAfter(Duration::from_secs(17))
        );
    }

    #[test]
    fn attempts_and_deadline_bound_retries() {
        let policy = RetryPolicy {
            max_attempts: 3,
            deadline: Duration::from_secs(10),
            ..RetryPolicy::default()
        };
        assert!(matches!(
            policy.decide(2, &server(), Duration::ZERO, 0.5),
            RetryDecision::RetryAfter(_)
        ));
        assert_eq!(
            policy.decide(3, &server(), Duration::ZERO, 0.5),
            RetryDecision::GiveUp
        );
        let far = ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(60)),
            message: String::new(),
        };
        assert_eq!(
            policy.decide(1, &far, Duration::ZERO, 0.5),
            RetryDecision::GiveUp
        );
        let timeout = ProviderError::Timeout {
            phase: TimeoutPhase::Total,
            after: Duration::from_secs(1),
        };
        assert_eq!(
            policy.decide(1, &timeout, Duration::from_secs(10), 0.0),
            RetryDecision::GiveUp
        );
    }

    proptest! {
        #[test]
        fn backoff_stays_within_the_exponential_envelope(attempt in 1u32..10, jitter in 0.0f64..1.0) {
            let policy = RetryPolicy { max_attempts: 20, deadline: Duration::from_secs(3600), ..RetryPolicy::default() };
            match policy.decide(attempt, &server(), Duration::ZERO, jitter) {
                RetryDecision::RetryAfter(d) => {
                    let cap = policy.base_delay.saturating_mul(2u32.pow(attempt - 1)).min(policy.max_delay);
                    prop_assert!(d <= cap);
                }
                RetryDecision::GiveUp => prop_assert!(false, "retryable error within bounds"),
            }
        }
    }
}
