//! The transport every adapter shares: pick a key, send with deadlines, map HTTP failures to
//! typed errors, and turn an SSE body into events with first-token and stall timeouts.

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use aetherflow_provider::{
    ApiKey, ChatResponse, ChatStream, ProviderError, StreamEvent, TimeoutPhase,
};
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use reqwest::header::HeaderMap;
use tokio::time::Instant;
use url::Url;

use crate::http::{self, ConfigError, Timeouts};
use crate::keys::{KeyPool, redact};

/// Turns `data:` payloads of one provider's stream into events.
pub trait ChunkFold: Send + 'static {
    /// The events of one payload.
    fn push(&mut self, data: &str) -> Result<Vec<StreamEvent>, ProviderError>;
    /// The closing events once the stream ended (usage once, then the finish reason).
    fn finish(self) -> Result<Vec<StreamEvent>, ProviderError>;
}

/// The event stream of a 2xx streaming response: payloads folded by `folder`, the first error
/// ends the stream, and the key pool learns how the call ended.
pub fn fold_stream<F: ChunkFold>(
    transport: Arc<Transport>,
    response: reqwest::Response,
    key: Option<ApiKey>,
    started: Instant,
    mut folder: F,
) -> ChatStream {
    let mut data = transport.sse_data(response, started);
    Box::pin(async_stream::stream! {
        let mut failed = None;
        while let Some(item) = data.next().await {
            match item.and_then(|d| folder.push(&d)) {
                Ok(events) => {
                    for e in events {
                        yield Ok(e);
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let closing = match failed {
            Some(e) => Err(e),
            None => folder.finish(),
        };
        transport.report(&key, closing.as_ref().map(|_| ()));
        match closing {
            Ok(events) => {
                for e in events {
                    yield Ok(e);
                }
            }
            Err(e) => yield Err(e),
        }
    })
}

/// How the key is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStyle {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// `x-goog-api-key: <key>` (Gemini; never a `?key=` query parameter).
    GoogApiKey,
}

/// An HTTP failure, read: status, headers and body text.
#[derive(Debug, Clone)]
pub struct HttpFailure {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body, bounded and with the key redacted.
    pub body: String,
}

/// The parts of a provider connection every adapter needs.
#[derive(Debug)]
pub struct Transport {
    /// Provider name, for messages and logs.
    pub provider: String,
    /// Base URL (validated).
    pub base: Url,
    /// Deadlines.
    pub timeouts: Timeouts,
    /// The pooled client.
    pub client: reqwest::Client,
    /// Keys, or none for a keyless local server.
    pub keys: Option<Arc<KeyPool>>,
    /// How keys are sent.
    pub auth: AuthStyle,
}

/// A sent request's answer, or the failure to read.
pub enum Sent {
    /// 2xx: the response and the key used.
    Ok(reqwest::Response, Option<ApiKey>),
    /// Non-2xx, read.
    Failed(HttpFailure, Option<ApiKey>),
}

impl Transport {
    /// A transport with a fresh client.
    pub fn new(
        provider: &str,
        base_url: &str,
        timeouts: Timeouts,
        keys: Option<Arc<KeyPool>>,
        auth: AuthStyle,
    ) -> Result<Self, ConfigError> {
        Ok(Transport {
            provider: provider.to_owned(),
            base: http::base_url(base_url)?,
            client: http::client(provider, &timeouts)?,
            timeouts,
            keys,
            auth,
        })
    }

    /// Sends a JSON body to `path`, waiting at most the first-token deadline for the response
    /// head.
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
        started: Instant,
    ) -> Result<Sent, ProviderError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ProviderError::InvalidRequest {
            message: format!("the request could not be encoded: {e}"),
        })?;
        // About four bytes a token: enough to keep a per-minute token budget.
        let tokens = u32::try_from(bytes.len() / 4).unwrap_or(u32::MAX);
        let key = match &self.keys {
            Some(pool) => Some(pool.acquire_paced(self.remaining(started), tokens).await?),
            None => None,
        };
        let mut request = self
            .client
            .post(http::endpoint(&self.base, path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bytes)
            .timeout(self.timeouts.total);
        if let Some(key) = &key {
            request = match self.auth {
                AuthStyle::Bearer => request.bearer_auth(key.expose()),
                AuthStyle::GoogApiKey => request.header("x-goog-api-key", key.expose()),
            };
        }
        let wait = self.timeouts.first_token.min(self.remaining(started));
        let response = match tokio::time::timeout(wait, request.send()).await {
            Err(_) => {
                return Err(self.timed_out(started));
            }
            Ok(Err(e)) => return Err(http::transport_error(e, &self.timeouts)),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(Sent::Ok(response, key));
        }
        let headers = response.headers().clone();
        let mut body = http::error_body(response).await;
        if let Some(k) = &key {
            body = redact(&body, k.expose());
        }
        Ok(Sent::Failed(
            HttpFailure {
                status: status.as_u16(),
                headers,
                body,
            },
            key,
        ))
    }

    /// Sends like [`Transport::post`] and classifies a refusal with `classify`. A key refused
    /// for auth or balance is quarantined and the request goes out again on the next key, as
    /// long as one is left; a success whose rate-limit headers say the budget is spent rests
    /// its key until the reset.
    pub async fn post_classified(
        &self,
        path: &str,
        body: &serde_json::Value,
        started: Instant,
        classify: impl Fn(&HttpFailure) -> ProviderError,
    ) -> Result<(reqwest::Response, Option<ApiKey>), ProviderError> {
        let tries = self.keys.as_ref().map_or(1, |p| p.ids().len().max(1));
        let mut last = None;
        for _ in 0..tries {
            match self.post(path, body, started).await? {
                Sent::Ok(response, key) => {
                    if let (Some(wait), Some(k), Some(pool)) = (
                        crate::errors::exhausted_until_reset(response.headers()),
                        &key,
                        &self.keys,
                    ) {
                        pool.rest(k.id(), wait);
                    }
                    return Ok((response, key));
                }
                Sent::Failed(failure, key) => {
                    let error = classify(&failure);
                    tracing::debug!(provider = %self.provider, status = failure.status, kind = error.kind(), key = key.as_ref().map(|k| k.id()), "provider refused the request");
                    self.report(&key, Err(&error));
                    let key_problem = matches!(
                        error,
                        ProviderError::Auth { .. } | ProviderError::InsufficientBalance { .. }
                    );
                    if !key_problem || self.keys.is_none() {
                        return Err(error);
                    }
                    last = Some(error);
                }
            }
        }
        Err(last.unwrap_or_else(|| ProviderError::Auth {
            message: format!("no usable key for {}", self.provider),
        }))
    }

    /// Reads a whole 2xx body within the total deadline.
    pub async fn read_body(
        &self,
        response: reqwest::Response,
        started: Instant,
    ) -> Result<bytes::Bytes, ProviderError> {
        match tokio::time::timeout(self.remaining(started), response.bytes()).await {
            Err(_) => Err(ProviderError::Timeout {
                phase: TimeoutPhase::Total,
                after: self.timeouts.total,
            }),
            Ok(Err(e)) => Err(http::transport_error(e, &self.timeouts)),
            Ok(Ok(b)) => Ok(b),
        }
    }

    /// Reads a 2xx body, parses it with `parse`, tells the key pool how the call ended, and
    /// stamps the answer with the id of the key that earned it.
    pub async fn finish_answer(
        &self,
        response: reqwest::Response,
        key: Option<ApiKey>,
        started: Instant,
        parse: impl FnOnce(&[u8]) -> Result<ChatResponse, ProviderError>,
    ) -> Result<ChatResponse, ProviderError> {
        let result = match self.read_body(response, started).await {
            Ok(body) => parse(&body),
            Err(e) => Err(e),
        };
        self.report(&key, result.as_ref().map(|_| ()));
        result.map(|mut answer| {
            answer.key_id = key.map(|k| k.id().to_owned());
            answer
        })
    }

    /// Tells the key pool how the call ended.
    pub fn report(&self, key: &Option<ApiKey>, outcome: Result<(), &ProviderError>) {
        if let (Some(pool), Some(key)) = (&self.keys, key) {
            pool.report(key.id(), outcome);
        }
    }

    fn remaining(&self, started: Instant) -> std::time::Duration {
        self.timeouts.total.saturating_sub(started.elapsed())
    }

    fn timed_out(&self, started: Instant) -> ProviderError {
        if self.remaining(started).is_zero() {
            ProviderError::Timeout {
                phase: TimeoutPhase::Total,
                after: self.timeouts.total,
            }
        } else {
            ProviderError::Timeout {
                phase: TimeoutPhase::FirstToken,
                after: self.timeouts.first_token,
            }
        }
    }

    /// The data payloads of an SSE body (comments and keep-alives skipped), each within the
    /// stall deadline and all within the total deadline.
    pub fn sse_data(
        &self,
        response: reqwest::Response,
        started: Instant,
    ) -> Pin<Box<dyn Stream<Item = Result<String, ProviderError>> + Send>> {
        let timeouts = self.timeouts;
        let mut events = response.bytes_stream().eventsource();
        Box::pin(async_stream::stream! {
            loop {
                let remaining = timeouts.total.saturating_sub(started.elapsed());
                let wait = timeouts.first_token.min(remaining);
                match tokio::time::timeout(wait, events.next()).await {
                    Err(_) => {
                        let phase = if remaining <= timeouts.first_token { TimeoutPhase::Total } else { TimeoutPhase::FirstToken };
                        let after = if phase == TimeoutPhase::Total { timeouts.total } else { timeouts.first_token };
                        yield Err(ProviderError::Timeout { phase, after });
                        break;
                    }
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        yield Err(ProviderError::Transport { message: format!("the event stream broke: {e}") });
                        break;
                    }
                    Ok(Some(Ok(event))) => {
                        if event.data.is_empty() {
                            continue;
                        }
                        yield Ok(event.data);
                    }
                }
            }
        })
    }

    /// The current time for `Retry-After` dates.
    pub fn now() -> SystemTime {
        SystemTime::now()
    }
}
