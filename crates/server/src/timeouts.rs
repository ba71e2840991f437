//! A deadline on every request: a handler that has not answered within
//! `server.request_timeout_secs` is stopped and the client gets a JSON 503. Routes that wait on
//! a model have deadlines of their own and are exempt: `POST /v1/runs?wait=` and `/execute` (at
//! most `server.max_wait_secs`), design uploads (the form's read deadline, then the providers'
//! call deadlines), chat completions (the providers' deadlines), and event streams (whose answer starts at once and lasts as long as the run).

use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;

use crate::error::ApiError;

/// The deadline of ordinary requests.
#[derive(Debug, Clone, Copy)]
pub struct RequestDeadline(pub Duration);

/// Whether a request waits on a model or a run, under a deadline of its own.
pub fn has_own_deadline(method: &Method, path: &str, query: &str) -> bool {
    let post = method == Method::POST;
    (post && path == "/v1/runs" && query.split('&').any(|p| p.starts_with("wait=")))
        || (post && path == "/execute")
        || (post && path.ends_with("/studio/designer/upload"))
        || (post && path == "/v1/chat/completions")
        || (method == Method::GET && path.starts_with("/v1/runs/") && path.ends_with("/events"))
}

/// Middleware: 503 `timeout` when a handler runs past the deadline.
pub async fn middleware(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let deadline = request
        .app_data::<actix_web::web::Data<RequestDeadline>>()
        .map(|d| d.0)
        .filter(|_| !has_own_deadline(request.method(), request.path(), request.query_string()));
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
                "the request was not answered within {} s (server.request_timeout_secs); try again",
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
    fn only_waiting_routes_have_their_own_deadline() {
        assert!(has_own_deadline(&Method::POST, "/v1/runs", "wait=30"));
        assert!(has_own_deadline(&Method::POST, "/v1/runs", "x=1&wait=30"));
        assert!(!has_own_deadline(&Method::POST, "/v1/runs", ""));
        assert!(!has_own_deadline(&Method::POST, "/v1/runs", "nowait=1"));
        assert!(has_own_deadline(&Method::POST, "/execute", ""));
        assert!(has_own_deadline(
            &Method::POST,
            "/studio/designer/upload",
            ""
        ));
        assert!(has_own_deadline(
            &Method::POST,
            "/v1/studio/designer/upload",
            ""
        ));
        assert!(has_own_deadline(&Method::GET, "/v1/runs/abc/events", ""));
        assert!(!has_own_deadline(&Method::GET, "/v1/runs/abc", ""));
        assert!(!has_own_deadline(&Method::POST, "/v1/scan", ""));
    }
}
