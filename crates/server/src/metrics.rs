//! Prometheus metrics (`GET /metrics`, admin scope). Every label comes from a bounded set —
//! the matched route pattern (never the raw path), the method, the status class, configured
//! provider and model names, run states — never from a user-supplied string.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Reads a counter kept elsewhere (shared-state fallbacks), at scrape time.
type Source = (&'static str, Box<dyn Fn() -> u64 + Send + Sync>);

/// The server's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_seconds: HistogramVec,
    runs: IntCounterVec,
    runs_live: IntGauge,
    attempts: IntCounterVec,
    tokens: IntCounterVec,
    cost: IntCounterVec,
    local_decisions: IntGaugeVec,
    sources: std::sync::Arc<std::sync::Mutex<Vec<Source>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("aetherflow".into()), None)?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status class",
            ),
            &["route", "method", "status"],
        )?;
        let http_seconds = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
            ]),
            &["route"],
        )?;
        let runs = IntCounterVec::new(
            Opts::new("runs_total", "API runs finished, by final state"),
            &["status"],
        )?;
        let runs_live = IntGauge::new("runs_live", "API runs queued or running")?;
        let attempts = IntCounterVec::new(
            Opts::new(
                "provider_attempts_total",
                "Provider calls by provider, model and outcome",
            ),
            &["provider", "model", "outcome"],
        )?;
        let tokens = IntCounterVec::new(
            Opts::new(
                "provider_tokens_total",
                "Tokens by provider, model and direction",
            ),
            &["provider", "model", "direction"],
        )?;
        let cost = IntCounterVec::new(
            Opts::new(
                "provider_cost_microdollars_total",
                "Spend in micro-dollars by provider and model",
            ),
            &["provider", "model"],
        )?;
        let local_decisions = IntGaugeVec::new(
            Opts::new(
                "shared_state_local_decisions_total",
                "Decisions this process took alone because the shared state (Redis) failed, by component",
            ),
            &["component"],
        )?;
        registry.register(Box::new(local_decisions.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_seconds.clone()))?;
        registry.register(Box::new(runs.clone()))?;
        registry.register(Box::new(runs_live.clone()))?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(tokens.clone()))?;
        registry.register(Box::new(cost.clone()))?;
        Ok(Metrics {
            registry,
            http_requests,
            http_seconds,
            runs,
            runs_live,
            attempts,
            tokens,
            cost,
            local_decisions,
            sources: std::sync::Arc::default(),
        })
    }

    /// Exposes `read()` as `shared_state_local_decisions_total{component}` (read when scraped).
    pub fn watch_local_decisions(
        &self,
        component: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        self.sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((component, Box::new(read)));
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        for (component, read) in self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            self.local_decisions
                .with_label_values(&[component])
                .set(i64::try_from(read()).unwrap_or(i64::MAX));
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics not encoded");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// A run was queued.
    pub fn run_started(&self) {
        self.runs_live.inc();
    }

    /// A run ended in `status`.
    pub fn run_finished(&self, status: &'static str) {
        self.runs_live.dec();
        self.runs.with_label_values(&[status]).inc();
    }

    /// Counts the attempts of one pass's report (`report.json` as JSON).
    pub fn record_report(&self, report: &serde_json::Value) {
        for step in report["steps"].as_array().into_iter().flatten() {
            for a in step["attempts"].as_array().into_iter().flatten() {
                let outcome = if a["cached"] == true {
                    "cached"
                } else if a["error"].is_null() {
                    "ok"
                } else {
                    "error"
                };
                let usage = &a["usage"];
                self.record_attempt(
                    a["provider"].as_str().unwrap_or("unknown"),
                    a["model"].as_str().unwrap_or("unknown"),
                    outcome,
                    usage["input_tokens"].as_u64().unwrap_or(0),
                    usage["output_tokens"].as_u64().unwrap_or(0),
                    a["cost"].as_u64().unwrap_or(0),
                );
            }
        }
    }

    /// Counts one provider call: `outcome` is `ok`, `error` or `cached`; labels must come from
    /// bounded sets (configured providers and models), never from a request.
    pub fn record_attempt(
        &self,
        provider: &str,
        model: &str,
        outcome: &str,
        input_tokens: u64,
        output_tokens: u64,
        cost_micros: u64,
    ) {
        self.attempts
            .with_label_values(&[provider, model, outcome])
            .inc();
        self.tokens
            .with_label_values(&[provider, model, "input"])
            .inc_by(input_tokens);
        self.tokens
            .with_label_values(&[provider, model, "output"])
            .inc_by(output_tokens);
        self.cost
            .with_label_values(&[provider, model])
            .inc_by(cost_micros);
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Middleware: counts and times every request by its matched route pattern.
pub async fn middleware(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let metrics = request.app_data::<actix_web::web::Data<Metrics>>().cloned();
    let started = Instant::now();
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "OPTIONS" => "OPTIONS",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        _ => "other",
    };
    let result = next.call(request).await;
    if let Some(metrics) = metrics {
        let (route, status) = match &result {
            Ok(response) => (
                response
                    .request()
                    .match_pattern()
                    .unwrap_or_else(|| "unmatched".to_owned()),
                response.status().as_u16(),
            ),
            Err(e) => (
                "unmatched".to_owned(),
                e.as_response_error().status_code().as_u16(),
            ),
        };
        metrics
            .http_requests
            .with_label_values(&[route.as_str(), method, status_class(status)])
            .inc();
        metrics
            .http_seconds
            .with_label_values(&[route.as_str()])
            .observe(started.elapsed().as_secs_f64());
    }
    result
}
