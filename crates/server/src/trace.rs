//! The HTTP side of tracing (on when `telemetry.otlp_endpoint` is set): one span per request,
//! continuing the caller's W3C trace (`traceparent`), named by the matched route pattern — never
//! the raw path — with the method and the status. Handlers' spans (a run, a gateway call and
//! its provider attempts) are its children.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Reads W3C trace-context headers from an actix request.
struct Headers<'a>(&'a actix_web::http::header::HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Middleware: the request's span.
pub async fn middleware(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    // The pattern comes from the application's resource map (known before routing), so the span
    // is named when it starts; an unknown path is "unmatched", never the raw path.
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let span = tracing::debug_span!(
        "http.request",
        otel.name = %format_args!("{} {route}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(request.headers())));
    // Without the OpenTelemetry layer there is nothing to attach to; that is fine.
    let _ = span.set_parent(parent);
    let result = next.call(request).instrument(span.clone()).await;
    let status = match &result {
        Ok(response) => response.status().as_u16(),
        Err(e) => e.as_response_error().status_code().as_u16(),
    };
    span.record("http.response.status_code", i64::from(status));
    result
}

/// The current span's W3C trace context (`traceparent`, `tracestate`), to carry in a message
/// (a queued job); empty without the OpenTelemetry layer or outside a trace.
pub fn current_context() -> std::collections::HashMap<String, String> {
    let mut carrier = std::collections::HashMap::new();
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut carrier));
    carrier
}

/// Makes `span` continue the trace of `carrier` (from [`current_context`] in another process).
pub fn continue_trace(span: &tracing::Span, carrier: &std::collections::HashMap<String, String>) {
    if carrier.is_empty() {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(carrier));
    let _ = span.set_parent(parent);
}
