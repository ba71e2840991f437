//! Reading provider error bodies (every envelope the spec lists) and classifying them into the
//! typed [`ProviderError`] by status, type and code — message text is consulted only where a
//! provider gives no other signal (context overflow), and then per provider.

use std::time::Duration;

use aetherflow_provider::ProviderError;
use serde_json::Value;

use crate::http::{go_duration, retry_after};
use crate::wire::{HttpFailure, Transport};

/// Which provider's conventions apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// DeepSeek.
    DeepSeek,
    /// Google Gemini.
    Gemini,
    /// Groq.
    Groq,
    /// Mistral / Codestral.
    Mistral,
    /// Moonshot Kimi.
    Kimi,
    /// A generic OpenAI-compatible server.
    OpenAi,
}

/// The useful parts of an error body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorDetails {
    /// Human-readable message.
    pub message: String,
    /// `error.type` (OpenAI style) .
    pub kind: Option<String>,
    /// `error.code` as text.
    pub code: Option<String>,
    /// Gemini's gRPC status (`RESOURCE_EXHAUSTED`, …).
    pub status: Option<String>,
    /// Gemini's `ErrorInfo.reason` (`API_KEY_INVALID`, …).
    pub reason: Option<String>,
    /// Gemini's `RetryInfo.retryDelay`.
    pub retry_delay: Option<Duration>,
}

/// Reads any of the envelopes providers use: `{"error":{…}}`, Mistral's `{"object":"error",
/// "message": string-or-object}`, `{"detail": …}`, `{"message": …}`, a one-element array
/// around any of these, or plain text.
pub fn parse_error_body(body: &str) -> ErrorDetails {
    let Ok(mut value) = serde_json::from_str::<Value>(body.trim()) else {
        let text = body.trim();
        return ErrorDetails {
            message: if text.is_empty() {
                "no error body".to_owned()
            } else {
                text.chars().take(500).collect()
            },
            ..ErrorDetails::default()
        };
    };
    if let Value::Array(items) = &value
        && let Some(first) = items.first()
    {
        value = first.clone();
    }
    let inner = value
        .get("error")
        .filter(|e| e.is_object())
        .unwrap_or(&value);
    let message = inner
        .get("message")
        .map(render_message)
        .or_else(|| inner.get("detail").map(render_message))
        .or_else(|| {
            value
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| value.to_string().chars().take(500).collect());
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let mut details = ErrorDetails {
        message,
        kind: text(inner.get("type")),
        code: text(inner.get("code")),
        status: text(inner.get("status")),
        ..ErrorDetails::default()
    };
    if let Some(Value::Array(list)) = inner.get("details") {
        for d in list {
            let ty = d.get("@type").and_then(Value::as_str).unwrap_or_default();
            if ty.ends_with("google.rpc.ErrorInfo") {
                details.reason = text(d.get("reason"));
            } else if ty.ends_with("google.rpc.RetryInfo") {
                details.retry_delay = d
                    .get("retryDelay")
                    .and_then(Value::as_str)
                    .and_then(go_duration);
            }
        }
    }
    details
}

/// Renders a message that may be a string, Mistral's validation object or a FastAPI `detail`
/// list into one line.
fn render_message(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Object(o) if o.contains_key("detail") => render_message(&o["detail"]),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let loc = item
                    .get("loc")
                    .and_then(Value::as_array)
                    .map(|l| {
                        l.iter()
                            .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
                            .collect::<Vec<_>>()
                            .join(".")
                    })
                    .unwrap_or_default();
                let msg = item.get("msg").and_then(Value::as_str).unwrap_or("invalid");
                let ty = item.get("type").and_then(Value::as_str).unwrap_or("");
                format!("{loc}: {msg} ({ty})")
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

/// The first whole number after `marker` in `text`.
fn number_after(text: &str, marker: &str) -> Option<u64> {
    let start = text.find(marker)? + marker.len();
    let digits: String = text[start..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A context-window overflow, recognised per provider, with the limit when stated.
fn context_overflow(flavor: Flavor, d: &ErrorDetails) -> Option<Option<u64>> {
    let m = d.message.as_str();
    let code = d.code.as_deref().unwrap_or_default();
    match flavor {
        Flavor::Groq | Flavor::OpenAi if code == "context_length_exceeded" => {
            Some(number_after(m, "maximum context length is"))
        }
        Flavor::DeepSeek | Flavor::OpenAi if m.contains("maximum context length") => {
            Some(number_after(m, "maximum context length is"))
        }
        Flavor::Kimi
            if m.contains("exceeded model token limit")
                || m.contains("Input token length too long") =>
        {
            Some(number_after(m, "token limit"))
        }
        Flavor::Gemini if m.contains("input token count") && m.contains("exceeds the maximum") => {
            Some(number_after(m, "tokens allowed"))
        }
        Flavor::Mistral
            if m.contains("maximum context length") || m.contains("too large for model") =>
        {
            Some(number_after(m, "with"))
        }
        _ => None,
    }
}

/// The provider's wait hint: `Retry-After`, Gemini's `retryDelay`, or Groq's reset headers.
fn wait_hint(failure: &HttpFailure, d: &ErrorDetails) -> Option<Duration> {
    retry_after(&failure.headers, Transport::now())
        .or(d.retry_delay)
        .or_else(|| exhausted_until_reset(&failure.headers))
}

/// When Groq-style headers say a budget is used up (`x-ratelimit-remaining-tokens: 0` or
/// `…-requests: 0`), how long until it resets (`x-ratelimit-reset-*`, a Go duration); the
/// longer of the two when both are exhausted.
pub fn exhausted_until_reset(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    ["tokens", "requests"]
        .iter()
        .filter(|kind| text(&format!("x-ratelimit-remaining-{kind}")) == Some("0"))
        .filter_map(|kind| text(&format!("x-ratelimit-reset-{kind}")).and_then(go_duration))
        .max()
}

/// Turns a non-2xx answer into a typed error.
pub fn classify(flavor: Flavor, model: &str, failure: &HttpFailure) -> ProviderError {
    let d = parse_error_body(&failure.body);
    let kind = d.kind.as_deref().unwrap_or_default();
    let code = d.code.as_deref().unwrap_or_default();
    let message = d.message.clone();
    let status = failure.status;

    if let Some(limit) = context_overflow(flavor, &d) {
        return ProviderError::ContextLengthExceeded { limit, message };
    }
    match (flavor, status) {
        // Gemini has no 401: a bad key is a 400 with reason API_KEY_INVALID.
        (Flavor::Gemini, 400) if d.reason.as_deref() == Some("API_KEY_INVALID") => {
            ProviderError::Auth { message }
        }
        (Flavor::Gemini, 400) if d.status.as_deref() == Some("FAILED_PRECONDITION") => {
            ProviderError::InsufficientBalance { message }
        }
        (Flavor::Kimi, 400) if kind == "content_filter" => {
            ProviderError::ContentFiltered { message }
        }
        (Flavor::Groq, 400) if code == "model_decommissioned" => ProviderError::ModelNotFound {
            model: model.to_owned(),
            message,
        },
        (Flavor::Mistral, 400) if code == "unknown_model" => ProviderError::ModelNotFound {
            model: model.to_owned(),
            message,
        },
        // DeepSeek gives an unknown model no code of its own, only this message.
        (Flavor::DeepSeek, 400 | 422) if message.contains("Model Not Exist") => {
            ProviderError::ModelNotFound {
                model: model.to_owned(),
                message,
            }
        }
        (Flavor::Kimi, 403) if kind == "exceeded_current_quota_error" => {
            ProviderError::InsufficientBalance { message }
        }
        (Flavor::Kimi, 429) if kind == "exceeded_current_quota_error" => {
            ProviderError::InsufficientBalance { message }
        }
        (Flavor::Kimi, 429) if kind == "engine_overloaded_error" => ProviderError::Server {
            status: Some(status),
            message,
        },
        // One request larger than the whole per-minute budget: waiting cannot help, a model
        // with a larger budget can.
        (Flavor::Groq, 413) => ProviderError::ContextLengthExceeded {
            limit: number_after(&message, "Limit"),
            message,
        },
        (_, 401) => ProviderError::Auth { message },
        (_, 402) => ProviderError::InsufficientBalance { message },
        (_, 403) => ProviderError::Auth { message },
        (_, 404) => ProviderError::ModelNotFound {
            model: model.to_owned(),
            message,
        },
        (_, 408) => ProviderError::Timeout {
            phase: aetherflow_provider::TimeoutPhase::Total,
            after: Duration::ZERO,
        },
        (_, 413 | 400 | 422) => ProviderError::InvalidRequest { message },
        (_, 429) => ProviderError::RateLimited {
            retry_after: wait_hint(failure, &d),
            message,
        },
        (_, s) if s >= 500 || s == 498 || s == 499 => ProviderError::Server {
            status: Some(s),
            message,
        },
        (_, _) => ProviderError::InvalidRequest { message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn failure(status: u16, body: &str) -> HttpFailure {
        HttpFailure {
            status,
            headers: HeaderMap::new(),
            body: body.to_owned(),
        }
    }

    #[test]
    fn every_envelope_yields_a_message() {
        let cases = [
            (
                r#"{"error":{"message":"Insufficient Balance","type":"unknown_error","param":null,"code":"invalid_request_error"}}"#,
                "Insufficient Balance",
            ),
            (
                r#"{"object":"error","message":{"detail":[{"type":"extra_forbidden","loc":["body","max_completion_tokens"],"msg":"Extra inputs are not permitted","input":1}]},"type":"invalid_request_error","param":null,"code":null}"#,
                "body.max_completion_tokens: Extra inputs are not permitted (extra_forbidden)",
            ),
            (r#"{"detail":"Unauthorized"}"#, "Unauthorized"),
            (
                r#"{"message":"Requests rate limit exceeded"}"#,
                "Requests rate limit exceeded",
            ),
            (
                r#"[{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}]"#,
                "quota",
            ),
            ("upstream connect error", "upstream connect error"),
            ("", "no error body"),
        ];
        for (body, message) in cases {
            assert_eq!(parse_error_body(body).message, message, "{body}");
        }
    }

    #[test]
    fn gemini_details_are_read() {
        let d = parse_error_body(
            r#"{"error":{"code":429,"message":"You exceeded your current quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"21s"}]}}"#,
        );
        assert_eq!(d.retry_delay, Some(Duration::from_secs(21)));
        assert_eq!(d.status.as_deref(), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(d.code.as_deref(), Some("429"));
    }

    #[test]
    fn context_overflow_is_recognised_per_provider() {
        let deepseek = failure(
            400,
            r#"{"error":{"message":"This model's maximum context length is 131072 tokens. However, you requested 131134 tokens","type":"invalid_request_error","param":null,"code":"invalid_request_error"}}"#,
        );
        assert_eq!(
            classify(Flavor::DeepSeek, "m", &deepseek),
            ProviderError::ContextLengthExceeded {
                limit: Some(131_072),
                message: parse_error_body(&deepseek.body).message
            }
        );
        let kimi = failure(
            400,
            r#"{"error":{"type":"invalid_request_error","message":"Your request exceeded model token limit : 262144"}}"#,
        );
        assert!(matches!(
            classify(Flavor::Kimi, "m", &kimi),
            ProviderError::ContextLengthExceeded {
                limit: Some(262_144),
                ..
            }
        ));
        let gemini = failure(
            400,
            r#"{"error":{"code":400,"message":"The input token count (1200293) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#,
        );
        assert!(matches!(
            classify(Flavor::Gemini, "m", &gemini),
            ProviderError::ContextLengthExceeded {
                limit: Some(1_048_576),
                ..
            }
        ));
        let groq = failure(
            400,
            r#"{"error":{"message":"Please reduce the length of the messages or completion.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
        );
        assert!(matches!(
            classify(Flavor::Groq, "m", &groq),
            ProviderError::ContextLengthExceeded { .. }
        ));
        // The same words from another provider's generic 400 are not taken as overflow.
        let other = failure(
            400,
            r#"{"error":{"type":"invalid_request_error","message":"Your request exceeded model token limit : 5"}}"#,
        );
        assert_eq!(
            classify(Flavor::Groq, "m", &other).kind(),
            "invalid_request"
        );
    }

    #[test]
    fn groq_rate_limits_use_retry_after_or_reset_headers() {
        let mut f = failure(
            429,
            r#"{"error":{"message":"Rate limit reached","type":"tokens","code":"rate_limit_exceeded"}}"#,
        );
        f.headers.insert(
            "x-ratelimit-remaining-tokens",
            HeaderValue::from_static("0"),
        );
        f.headers.insert(
            "x-ratelimit-reset-tokens",
            HeaderValue::from_static("16.24s"),
        );
        f.headers.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("962"),
        );
        f.headers.insert(
            "x-ratelimit-reset-requests",
            HeaderValue::from_static("54m43.2s"),
        );
        assert_eq!(
            classify(Flavor::Groq, "m", &f).retry_after(),
            Some(Duration::from_millis(16_240))
        );
        f.headers
            .insert("retry-after", HeaderValue::from_static("17"));
        assert_eq!(
            classify(Flavor::Groq, "m", &f).retry_after(),
            Some(Duration::from_secs(17))
        );
    }

    #[test]
    fn statuses_map_to_the_taxonomy() {
        let table: &[(Flavor, u16, &str, &str)] = &[
            (
                Flavor::DeepSeek,
                401,
                r#"{"error":{"message":"Authentication Fails","type":"authentication_error"}}"#,
                "auth",
            ),
            (
                Flavor::DeepSeek,
                402,
                r#"{"error":{"message":"Insufficient Balance"}}"#,
                "insufficient_balance",
            ),
            (
                Flavor::DeepSeek,
                503,
                r#"{"error":{"message":"Server Overloaded"}}"#,
                "server",
            ),
            (
                Flavor::Gemini,
                400,
                r#"{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#,
                "auth",
            ),
            (
                Flavor::Gemini,
                404,
                r#"{"error":{"code":404,"message":"models/gemini-2.0-flash is not found","status":"NOT_FOUND"}}"#,
                "model_not_found",
            ),
            (
                Flavor::Gemini,
                400,
                r#"{"error":{"code":400,"message":"billing","status":"FAILED_PRECONDITION"}}"#,
                "insufficient_balance",
            ),
            (
                Flavor::Groq,
                400,
                r#"{"error":{"message":"decommissioned","type":"invalid_request_error","code":"model_decommissioned"}}"#,
                "model_not_found",
            ),
            (
                Flavor::Groq,
                413,
                r#"{"error":{"message":"Request too large for model. Limit 6000, Requested 15041","type":"tokens","code":"rate_limit_exceeded"}}"#,
                "context_length_exceeded",
            ),
            (
                Flavor::Groq,
                498,
                r#"{"error":{"message":"flex","code":"capacity_exceeded"}}"#,
                "server",
            ),
            (Flavor::Mistral, 401, r#"{"detail":"Unauthorized"}"#, "auth"),
            (
                Flavor::Mistral,
                422,
                r#"{"detail":[{"loc":["body","seed"],"msg":"Extra inputs are not permitted","type":"extra_forbidden"}]}"#,
                "invalid_request",
            ),
            (
                Flavor::Mistral,
                429,
                r#"{"message":"Requests rate limit exceeded"}"#,
                "rate_limited",
            ),
            (
                Flavor::Kimi,
                400,
                r#"{"error":{"type":"content_filter","message":"high risk"}}"#,
                "content_filtered",
            ),
            (
                Flavor::Kimi,
                403,
                r#"{"error":{"type":"exceeded_current_quota_error","message":"suspended"}}"#,
                "insufficient_balance",
            ),
            (
                Flavor::Kimi,
                429,
                r#"{"error":{"type":"engine_overloaded_error","message":"overloaded"}}"#,
                "server",
            ),
            (
                Flavor::Kimi,
                404,
                r#"{"error":{"type":"resource_not_found_error","message":"Not found the model"}}"#,
                "model_not_found",
            ),
        ];
        for (flavor, status, body, kind) in table {
            assert_eq!(
                classify(*flavor, "m", &failure(*status, body)).kind(),
                *kind,
                "{flavor:?} {status} {body}"
            );
        }
        let groq_413 = classify(
            Flavor::Groq,
            "m",
            &failure(
                413,
                r#"{"error":{"message":"Request too large for model. Limit 6000, Requested 15041","code":"rate_limit_exceeded"}}"#,
            ),
        );
        assert!(!groq_413.is_retryable());
        let _ = HeaderMap::new();
    }
}
