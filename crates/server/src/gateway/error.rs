//! The gateway's errors, in OpenAI's shape, and what a failed call becomes.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use aetherflow_domain::run::FailureKind;
use aetherflow_orchestrator::call::CallFailure;
use serde_json::{Value, json};

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct GatewayError {
    pub(crate) status: u16,
    pub(crate) kind: &'static str,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) param: Option<&'static str>,
    pub(crate) retry_after: Option<u64>,
}

impl GatewayError {
    pub(crate) fn new(
        status: u16,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        GatewayError {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    pub(crate) fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        GatewayError {
            param: Some(param),
            ..Self::new(400, "invalid_request_error", "invalid_request", message)
        }
    }

    /// What a failed call becomes: its kind and the last provider error decide the status.
    pub(crate) fn from_failure(failure: &CallFailure) -> Self {
        if failure.store_unavailable {
            return GatewayError {
                retry_after: Some(5),
                ..Self::new(
                    503,
                    "server_error",
                    "budget_store_unavailable",
                    format!("nothing was sent: {failure}"),
                )
            };
        }
        if failure.kind == FailureKind::BudgetExceeded {
            return Self::new(
                402,
                "insufficient_quota",
                "budget_exceeded",
                format!("a spending cap would be passed: {failure}"),
            );
        }
        let last = failure
            .attempts
            .iter()
            .rev()
            .find_map(|a| a.error.as_ref())
            .map(|e| e.kind.as_str());
        let message = format!("no provider answered: {failure}");
        let context_length = |message| GatewayError {
            param: Some("messages"),
            ..Self::new(
                400,
                "invalid_request_error",
                "context_length_exceeded",
                message,
            )
        };
        match last {
            Some("context_length_exceeded") => context_length(message),
            Some("invalid_request") => {
                Self::new(400, "invalid_request_error", "invalid_request", message)
            }
            Some("content_filtered") => {
                Self::new(400, "invalid_request_error", "content_filter", message)
            }
            Some("model_not_found") => {
                Self::new(404, "invalid_request_error", "model_not_found", message)
            }
            Some("rate_limited") => GatewayError {
                retry_after: Some(1),
                ..Self::new(429, "rate_limit_error", "upstream_rate_limited", message)
            },
            Some("timeout") => Self::new(504, "api_error", "upstream_timeout", message),
            // Nothing was sent: the request fits no model's window.
            None if failure.too_large => context_length(message),
            None => GatewayError {
                retry_after: Some(5),
                ..Self::new(503, "api_error", "unavailable", message)
            },
            Some(_) => Self::new(502, "api_error", "upstream_error", message),
        }
    }

    fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl ResponseError for GatewayError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code()).json(self.body());
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl From<crate::error::ApiError> for GatewayError {
    fn from(e: crate::error::ApiError) -> Self {
        let (kind, code) = match e.status {
            401 => ("invalid_request_error", "invalid_api_key"),
            403 => ("permission_error", "forbidden"),
            429 => ("rate_limit_error", "rate_limit_exceeded"),
            503 => ("api_error", "unavailable"),
            _ => ("invalid_request_error", e.code),
        };
        GatewayError {
            status: e.status,
            kind,
            code,
            message: e.message,
            param: None,
            retry_after: e.retry_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aetherflow_domain::Money;
    use aetherflow_domain::run::Attempt;
    use std::time::Duration;

    #[test]
    fn failures_map_to_openai_statuses() {
        let failure = |kind: FailureKind, last: Option<&str>, message: &str| CallFailure {
            kind,
            message: message.into(),
            attempts: last
                .map(|k| {
                    vec![Attempt {
                        provider: "p".into(),
                        model: "m".into(),
                        key_id: None,
                        started_at: chrono::Utc::now(),
                        latency: Duration::ZERO,
                        usage: Default::default(),
                        cost: Money::ZERO,
                        error: Some(aetherflow_domain::run::AttemptError {
                            kind: k.into(),
                            retryable: false,
                            message: "x".into(),
                        }),
                        cached: false,
                    }]
                })
                .unwrap_or_default(),
            cost: Money::ZERO,
            too_large: false,
            store_unavailable: false,
        };
        let status = |f: CallFailure| GatewayError::from_failure(&f).status;
        let too_large = CallFailure {
            too_large: true,
            ..failure(FailureKind::ProviderError, None, "windows too small")
        };
        assert_eq!(
            GatewayError::from_failure(&too_large).code,
            "context_length_exceeded"
        );
        assert_eq!(
            status(failure(FailureKind::BudgetExceeded, None, "budget")),
            402
        );
        assert_eq!(
            status(failure(
                FailureKind::ProviderError,
                Some("context_length_exceeded"),
                "x"
            )),
            400
        );
        assert_eq!(
            status(failure(
                FailureKind::ProviderError,
                Some("rate_limited"),
                "x"
            )),
            429
        );
        assert_eq!(
            status(failure(FailureKind::ProviderError, Some("timeout"), "x")),
            504
        );
        assert_eq!(
            status(failure(FailureKind::ProviderError, Some("server"), "x")),
            502
        );
        assert_eq!(
            status(failure(FailureKind::ProviderError, None, "circuit open")),
            503
        );
    }
}
