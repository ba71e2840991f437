//! The provider error taxonomy: one enum every adapter maps its wire errors into, so retries and
//! fallbacks decide on types, never on message substrings.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which deadline a timeout hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutPhase {
    /// The TCP/TLS connection was not established in time.
    Connect,
    /// Connected, but no first token (or response head) arrived in time.
    FirstToken,
    /// The whole call took longer than allowed.
    Total,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Connect => "connect",
            TimeoutPhase::FirstToken => "first token",
            TimeoutPhase::Total => "total",
        })
    }
}

/// What kind of fallback an error calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackClass {
    /// Any other provider or model may succeed (rate limit, outage, timeout, bad key …).
    General,
    /// Only a model with a larger context window may succeed.
    ContextWindow,
    /// Only a model with a different content policy may succeed.
    ContentPolicy,
}

/// Why a provider call failed. Messages never contain a key: adapters redact provider echoes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// The key was refused (missing, malformed, revoked).
    #[error("authentication failed: {message}")]
    Auth {
        /// The provider's explanation.
        message: String,
    },
    /// The account has no money or quota left.
    #[error("insufficient balance: {message}")]
    InsufficientBalance {
        /// The provider's explanation.
        message: String,
    },
    /// Too many requests or tokens; `retry_after` is the provider's own hint when it gave one.
    #[error("rate limited{}: {message}", retry_hint(retry_after))]
    RateLimited {
        /// How long the provider asked us to wait.
        retry_after: Option<Duration>,
        /// The provider's explanation.
        message: String,
    },
    /// The prompt plus the requested output does not fit the model's window.
    #[error("context length exceeded{}: {message}", limit.map(|l| format!(" (limit {l} tokens)")).unwrap_or_default())]
    ContextLengthExceeded {
        /// The model's window, when the provider said.
        limit: Option<u64>,
        /// The provider's explanation.
        message: String,
    },
    /// The provider refused the prompt or stopped the answer for policy reasons.
    #[error("content filtered: {message}")]
    ContentFiltered {
        /// The provider's explanation (block reason, safety category).
        message: String,
    },
    /// The model does not exist or was retired.
    #[error("model `{model}` not found or retired: {message}")]
    ModelNotFound {
        /// The model that was asked for.
        model: String,
        /// The provider's explanation.
        message: String,
    },
    /// The request was malformed for this provider (a bug on our side or an unsupported option).
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// The provider's explanation.
        message: String,
    },
    /// The provider is overloaded or failed internally (5xx, `overloaded`, transient finish).
    #[error("provider error{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Server {
        /// HTTP status, when there was one.
        status: Option<u16>,
        /// The provider's explanation.
        message: String,
    },
    /// A deadline passed.
    #[error("timed out waiting for {phase} after {after:?}")]
    Timeout {
        /// Which deadline.
        phase: TimeoutPhase,
        /// The deadline that passed.
        after: Duration,
    },
    /// The connection failed or broke.
    #[error("transport error: {message}")]
    Transport {
        /// What the HTTP client reported.
        message: String,
    },
    /// The provider answered something we could not read.
    #[error("could not decode the provider's answer: {message}")]
    Decode {
        /// What was wrong with it.
        message: String,
    },
}

fn retry_hint(retry_after: &Option<Duration>) -> String {
    retry_after
        .map(|d| format!(" (retry after {:.3}s)", d.as_secs_f64()))
        .unwrap_or_default()
}

impl ProviderError {
    /// A stable snake_case name for the kind, used in reports, metrics and scripts.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Auth { .. } => "auth",
            ProviderError::InsufficientBalance { .. } => "insufficient_balance",
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::ContextLengthExceeded { .. } => "context_length_exceeded",
            ProviderError::ContentFiltered { .. } => "content_filtered",
            ProviderError::ModelNotFound { .. } => "model_not_found",
            ProviderError::InvalidRequest { .. } => "invalid_request",
            ProviderError::Server { .. } => "server",
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::Transport { .. } => "transport",
            ProviderError::Decode { .. } => "decode",
        }
    }

    /// True when asking the same model again, later, can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. }
                | ProviderError::Server { .. }
                | ProviderError::Timeout { .. }
                | ProviderError::Transport { .. }
        )
    }

    /// Which fallback could succeed where this call failed.
    pub fn fallback_class(&self) -> FallbackClass {
        match self {
            ProviderError::ContextLengthExceeded { .. } => FallbackClass::ContextWindow,
            ProviderError::ContentFiltered { .. } => FallbackClass::ContentPolicy,
            _ => FallbackClass::General,
        }
    }

    /// The provider's requested wait before the next call, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_errors_are_retryable() {
        let retryable = [
            ProviderError::RateLimited {
                retry_after: None,
                message: String::new(),
            },
            ProviderError::Server {
                status: Some(503),
                message: String::new(),
            },
            ProviderError::Timeout {
                phase: TimeoutPhase::FirstToken,
                after: Duration::from_secs(1),
            },
            ProviderError::Transport {
                message: String::new(),
            },
        ];
        assert!(retryable.iter().all(ProviderError::is_retryable));
        let final_ = [
            ProviderError::Auth {
                message: String::new(),
            },
            ProviderError::InsufficientBalance {
                message: String::new(),
            },
            ProviderError::ContextLengthExceeded {
                limit: None,
                message: String::new(),
            },
            ProviderError::ContentFiltered {
                message: String::new(),
            },
            ProviderError::InvalidRequest {
                message: String::new(),
            },
            ProviderError::ModelNotFound {
                model: "m".into(),
                message: String::new(),
            },
        ];
        assert!(final_.iter().all(|e| !e.is_retryable()));
    }

    #[test]
    fn fallback_classes_follow_the_error_type() {
        let ctx = ProviderError::ContextLengthExceeded {
            limit: Some(8192),
            message: "too long".into(),
        };
        assert_eq!(ctx.fallback_class(), FallbackClass::ContextWindow);
        assert!(ctx.to_string().contains("limit 8192 tokens"));
        let filtered = ProviderError::ContentFiltered {
            message: "SAFETY".into(),
        };
        assert_eq!(filtered.fallback_class(), FallbackClass::ContentPolicy);
    }

    #[test]
    fn rate_limits_carry_the_providers_wait() {
        let e = ProviderError::RateLimited {
            retry_after: Some(Duration::from_millis(1500)),
            message: "slow down".into(),
        };
        assert_eq!(e.retry_after(), Some(Duration::from_millis(1500)));
        assert_eq!(
            e.to_string(),
            "rate limited (retry after 1.500s): slow down"
        );
        assert_eq!(e.kind(), "rate_limited");
    }
}
