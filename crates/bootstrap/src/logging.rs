//! Tracing set-up, once per process: human or JSON lines on standard error, an optional rotating
//! JSON file, and OpenTelemetry traces when `telemetry.otlp_endpoint` is set.

use aetherflow_orchestrator::settings::{LogFormat, LogRotation, LogSettings, TelemetrySettings};
use std::io::IsTerminal;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::BootstrapError;

/// The WebAssembly compiler's crates log every instruction they compile at `trace`: gigabytes
/// for CPython. They stay at `warn` unless `log.level` names them itself.
const QUIET_BY_DEFAULT: &[&str] = &["cranelift", "wasmtime", "regalloc2", "wasmparser", "wit_"];

/// The filter for `level`, with the compiler's crates kept quiet unless named.
fn filter_directives(level: &str) -> String {
    let mut directives: Vec<String> = QUIET_BY_DEFAULT
        .iter()
        .filter(|target| !level.contains(*target))
        .map(|target| format!("{target}=warn"))
        .collect();
    directives.push(level.to_owned());
    directives.join(",")
}

/// Keeps the log file writer and the trace exporter alive; dropping it flushes both.
#[must_use = "hold the guard until the process exits, or logs and traces are lost"]
pub struct LogGuard {
    _file: Option<WorkerGuard>,
    tracer: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogGuard")
            .field("file", &self._file.is_some())
            .field("traces", &self.tracer.is_some())
            .finish()
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("telemetry: the last spans were not exported: {e}");
        }
    }
}

/// Installs the global subscriber for `service` (its `service.name` in traces); keep the guard
/// alive until exit so the file and the last spans are flushed.
pub fn init(
    settings: &LogSettings,
    telemetry: &TelemetrySettings,
    service: &str,
) -> Result<LogGuard, BootstrapError> {
    let filter = EnvFilter::try_new(filter_directives(&settings.level)).map_err(|e| {
        BootstrapError::Logging(format!(
            "`log.level` = `{}` is not a valid filter ({e}); use e.g. warn, info, debug",
            settings.level
        ))
    })?;
    let stderr = match settings.format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let (file, guard) = match &settings.dir {
        Some(dir) => {
            let rotation = match settings.rotation {
                LogRotation::Hourly => Rotation::HOURLY,
                LogRotation::Daily => Rotation::DAILY,
                LogRotation::Never => Rotation::NEVER,
            };
            let appender = Builder::new()
                .rotation(rotation)
                .filename_prefix("aetherflow")
                .filename_suffix("log")
                .build(dir)
                .map_err(|e| {
                    BootstrapError::Logging(format!(
                        "cannot open a log file in {} (`log.dir`): {e}",
                        dir.display()
                    ))
                })?;
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = tracing_subscriber::fmt::layer()
                .json()
                .with_ansi(false)
                .with_writer(writer);
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    let tracer = crate::telemetry::provider(telemetry, service)?;
    let traces = tracer.as_ref().map(crate::telemetry::layer);
    // The level filter applies to the log outputs only; traces have their own (see telemetry).
    tracing_subscriber::registry()
        .with(traces)
        .with(stderr.and_then(file).with_filter(filter))
        .try_init()
        .map_err(|e| BootstrapError::Logging(format!("cannot install the logger: {e}")))?;
    Ok(LogGuard {
        _file: guard,
        tracer,
    })
}

#[cfg(test)]
mod quiet_tests {
    use super::*;

    #[test]
    fn the_compiler_stays_quiet_at_trace_unless_named() {
        let d = filter_directives("trace");
        assert!(d.starts_with("cranelift=warn,wasmtime=warn"), "{d}");
        assert!(d.ends_with(",trace"));
        let d = filter_directives("info,wasmtime=debug");
        assert!(!d.contains("wasmtime=warn"), "{d}");
        assert!(EnvFilter::try_new(filter_directives("debug")).is_ok());
    }
}
