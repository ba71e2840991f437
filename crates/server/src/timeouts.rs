//! A deadline on every request: a handler that has not answered within its deadline is
//! stopped and the client gets a JSON 503. Ordinary requests get `server.request_timeout_secs`;
//! requests that wait for a run (`POST /v1/runs?wait=`, `/execute`) get that plus
//! `server.max_wait_secs`. Three kinds are exempt because they bound themselves: design uploads
//! and chat completions read their bodies under the request deadline and then wait on providers
//! (whose own connect, first-token and total deadlines apply), and event streams answer at once
//! and last as long as their run.

use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;

use crate::error::ApiError;

/// The deadlines.
#[derive(Debug, Clone, Copy)]
pub struct RequestDeadline {
    /// Ordinary requests.
    pub request: Duration,
    /// The longest `?wait=` honoured (added for requests that wait for a run).
    pub max_wait: Duration,
}

/// How a request is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The request deadline.
    Request,
    /// The request deadline plus the longest wait.
    Waiting,
    /// Its own deadlines (body read, providers, the run's life).
    Own,
}

/// How the request is bounded, by route.
pub fn bound(method: &Method, path: &str, query: &str) -> Bound {
    let post = method == Method::POST;
    if (post && path == "/v1/runs" && query.split('&').any(|p| p.starts_with("wait=")))
        || (post && path == "/execute")
    {
        Bound::Waiting
    } else if (post
        && (path.ends_with("/studio/designer/upload") || path == "/v1/chat/completions"))
        || (method == Method::GET && path.starts_with("/v1/runs/") && path.ends_with("/events"))
    {
        Bound::Own
    } else {
        Bound::Request
    }
}

/// Middleware: 503 `timeout` when a handler runs past its deadline.
pub async fn middleware(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let deadlines = request
        .app_data::<actix_web::web::Data<RequestDeadline>>()
        .map(|d| *d.get_ref());
    let deadline = deadlines.and_then(|d| {
        match bound(request.method(), request.path(), request.query_string()) {
            Bound::Request => Some(d.request),
            Bound::Waiting => Some(d.request + d.max_wait),
            Bound::Own => None,
        }
    });
    let Some(deadline) = deadline else {
        return next
            .call(request)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    match tokio::time::timeout(deadline, next.call(request)).await {
        Ok(response) => response.map(ServiceResponse::map_into_boxed_body),
        Err(_) => Err(ApiError {
            status: 503,
            code: "timeout",
            message: format!(
                "the request was not answered within {} s (server.request_timeout_secs, plus server.max_wait_secs for a request that waits for a run); try again",
                deadline.as_secs()
            ),
            retry_after: Some(1),
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_that_wait_get_longer_or_their_own_deadlines() {
        use Bound::*;
        assert_eq!(bound(&Method::POST, "/v1/runs", "wait=30"), Waiting);
        assert_eq!(bound(&Method::POST, "/v1/runs", "x=1&wait=30"), Waiting);
        assert_eq!(bound(&Method::POST, "/v1/runs", ""), Request);
        assert_eq!(bound(&Method::POST, "/v1/runs", "nowait=1"), Request);
        assert_eq!(bound(&Method::POST, "/execute", ""), Waiting);
        assert_eq!(bound(&Method::POST, "/studio/designer/upload", ""), Own);
        assert_eq!(bound(&Method::POST, "/v1/studio/designer/upload", ""), Own);
        assert_eq!(bound(&Method::POST, "/v1/chat/completions", ""), Own);
        assert_eq!(bound(&Method::GET, "/v1/runs/abc/events", ""), Own);
        assert_eq!(bound(&Method::GET, "/v1/runs/abc", ""), Request);
        assert_eq!(bound(&Method::POST, "/v1/scan", ""), Request);
    }
}
