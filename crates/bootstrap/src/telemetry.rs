//! OpenTelemetry traces, exported over OTLP/HTTP when `telemetry.otlp_endpoint` is set.
//!
//! The `tracing` spans AetherFlow opens (the HTTP request, the run, each step, each provider
//! attempt) are DEBUG-level spans under the `aetherflow*` targets: the OpenTelemetry layer has a
//! filter of its own that takes them, so they cost nothing when telemetry is off and the log
//! level is `info`. Span attributes carry ids, names, counts, money and outcomes — never prompts,
//! answers or keys. The W3C `traceparent` propagator is installed, so a trace continues across
//! processes.
//!
//! Export goes through the workspace's own `reqwest` (blocking, on the batch processor's thread),
//! not a second HTTP stack.

use std::time::Duration;

use aetherflow_orchestrator::settings::{OtlpProtocol, TelemetrySettings};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};

use crate::BootstrapError;

/// Sends OTLP requests with the workspace's `reqwest` (blocking client; the batch processor runs
/// on a thread of its own).
#[derive(Debug, Clone)]
struct BlockingClient(reqwest::blocking::Client);

#[async_trait::async_trait]
impl HttpClient for BlockingClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::blocking::Request::try_from(request)?;
        let response = self.0.execute(request)?;
        let mut out = Response::builder().status(response.status().as_u16());
        for (name, value) in response.headers() {
            out = out.header(name.as_str(), value.as_bytes());
        }
        let body = response.bytes()?;
        Ok(out.body(body)?)
    }
}

/// The tracer provider, when telemetry is on; flushed and shut down by the logging guard.
pub(crate) fn provider(
    settings: &TelemetrySettings,
    service: &str,
) -> Result<Option<SdkTracerProvider>, BootstrapError> {
    let Some(endpoint) = settings
        .otlp_endpoint
        .as_deref()
        .filter(|e| !e.trim().is_empty())
    else {
        return Ok(None);
    };
    let url = traces_url(endpoint)?;
    let timeout = Duration::from_secs(10);
    let client = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| BootstrapError::Logging(format!("telemetry: no HTTP client: {e}")))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(BlockingClient(client))
        .with_endpoint(url.clone())
        .with_protocol(match settings.protocol {
            OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
            OtlpProtocol::HttpJson => Protocol::HttpJson,
        })
        .with_timeout(timeout)
        .build()
        .map_err(|e| {
            BootstrapError::Logging(format!(
                "telemetry.otlp_endpoint ({url}): the exporter cannot be built: {e}"
            ))
        })?;
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_millis(settings.export_interval_ms.max(10)))
                .build(),
        )
        .build();
    let ratio = settings.sample_ratio.clamp(0.0, 1.0);
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(
                    settings
                        .service_name
                        .clone()
                        .unwrap_or_else(|| service.to_owned()),
                )
                .build(),
        )
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    Ok(Some(provider))
}

/// The tracing layer that turns AetherFlow's spans into OpenTelemetry spans.
pub(crate) fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    let tracer = provider.tracer("aetherflow");
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target("aetherflow", tracing::Level::DEBUG),
        )
}

/// `<endpoint>/v1/traces`, checked.
fn traces_url(endpoint: &str) -> Result<String, BootstrapError> {
    let parsed = url::Url::parse(endpoint).map_err(|e| {
        BootstrapError::Logging(format!(
            "telemetry.otlp_endpoint = `{endpoint}` is not a URL ({e}); write it as http://collector:4318"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(BootstrapError::Logging(format!(
            "telemetry.otlp_endpoint = `{endpoint}` must be an http:// or https:// URL (OTLP over HTTP)"
        )));
    }
    let base = endpoint.trim_end_matches('/');
    Ok(if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_once_and_bad_endpoints_are_named() {
        assert_eq!(
            traces_url("http://collector:4318").expect("url"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/v1/traces/").expect("url"),
            "http://collector:4318/v1/traces"
        );
        let err = traces_url("collector:4317")
            .expect_err("no scheme")
            .to_string();
        assert!(err.contains("telemetry.otlp_endpoint"), "{err}");
        let err = traces_url("grpc://collector:4317")
            .expect_err("grpc")
            .to_string();
        assert!(err.contains("OTLP over HTTP"), "{err}");
    }

    #[test]
    fn off_without_an_endpoint() {
        let settings = TelemetrySettings::default();
        assert!(provider(&settings, "test").expect("ok").is_none());
    }
}
