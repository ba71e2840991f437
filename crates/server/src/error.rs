//! Every error answers as JSON, `{"error": {"code", "message"}}`, with the right status; a
//! message says what to fix and never carries a secret or a server path.

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// An API error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// A stable machine-readable code (`unauthorized`, `forbidden`, `not_found`, …).
    pub code: &'static str,
    /// What happened and how to fix it.
    pub message: String,
    /// Seconds to wait before trying again (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400: the request is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    /// 401: no key, or not a valid one.
    pub fn unauthorized() -> Self {
        Self::new(
            401,
            "unauthorized",
            "send a valid API key as `Authorization: Bearer afk_…` (create one with `aetherflow-api keys create`)",
        )
    }

    /// 403: the key lacks a scope.
    pub fn forbidden(scope: crate::KeyScope) -> Self {
        Self::new(
            403,
            "forbidden",
            format!("this API key lacks the `{scope}` scope"),
        )
    }

    /// 404.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(404, "not_found", what)
    }

    /// 409: the resource is not in a state that allows this.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "conflict", message)
    }

    /// 422: the plan (or another document) is invalid.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(422, "invalid", message)
    }

    /// 503 with `Retry-After`: too busy right now.
    pub fn busy(message: impl Into<String>, retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(503, "busy", message)
        }
    }

    /// 500: logged in full, answered without details.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(
            500,
            "internal",
            "the server failed; the error is in its log",
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code()).json(json!({
            "error": {"code": self.code, "message": self.message}
        }));
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<crate::StoreError> for ApiError {
    fn from(e: crate::StoreError) -> Self {
        ApiError::internal(e)
    }
}
