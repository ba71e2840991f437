//! `aetherflow-api`: AetherFlow over HTTP.
//!
//! This first version serves liveness (`/health`) and readiness (`/ready`) probes and plan
//! validation, sharing the plan rules with the CLI. Runs, authentication, rate limits, CORS and
//! the OpenAI-compatible endpoint are the API issues' work; until then the server binds to
//! loopback by default. `aetherflow-api healthcheck` probes a running server (the container
//! image's `HEALTHCHECK`, which has no curl or shell).

use std::net::TcpListener;
use std::path::PathBuf;

use actix_web::http::header::ContentType;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use aetherflow_domain::plan::{PlanFormat, load_plan};
use anyhow::Context;
use clap::Parser;
use serde_json::json;

/// Serve AetherFlow over HTTP.
#[derive(Debug, Parser)]
#[command(name = "aetherflow-api", version, about)]
struct Args {
    /// Configuration file (default: ./aetherflow.toml when present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides server.bind); port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    bind: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Probe a running server's /health and exit 0 when it answers 200 (for container health
    /// checks: no curl needed).
    Healthcheck {
        /// The server's base URL (default: loopback at server.bind's port).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
}

/// What `/ready` checks, computed at start-up (the sandbox runtime's hashes, the configured
/// providers) and re-checked cheaply per request (the runtime files still exist).
#[derive(Debug, Clone)]
struct Readiness {
    providers: usize,
    sandbox_runtime: std::path::PathBuf,
    sandbox_error: Option<String>,
}

impl Readiness {
    fn check(&self) -> (bool, serde_json::Value) {
        let runtime_present = self.sandbox_error.is_none()
            && [
                aetherflow_sandbox::runtime::PYTHON_WASM,
                aetherflow_sandbox::runtime::STDLIB_ZIP,
            ]
            .iter()
            .all(|f| self.sandbox_runtime.join(f).is_file());
        let providers_ok = self.providers > 0;
        let ready = runtime_present && providers_ok;
        let mut checks = json!({
            "sandbox_runtime": if runtime_present { "ok" } else { "missing" },
            "providers": if providers_ok { "ok" } else { "none configured" },
        });
        if !ready {
            let mut fixes = Vec::new();
            if !runtime_present {
                fixes.push("install the sandbox runtime: python3 scripts/fetch-sandbox-runtime.py (or set AETHERFLOW_SANDBOX_RUNTIME)");
            }
            if !providers_ok {
                fixes.push("configure at least one provider key (e.g. DEEPSEEK_API_KEY or DEEPSEEK_API_KEY_FILE) or providers.openai_compatible.base_url");
            }
            checks["fix"] = json!(fixes);
        }
        (ready, checks)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let environment = aetherflow_bootstrap::Environment::load(args.config.as_deref())?;
    let settings = environment.settings.clone();
    let bind = args.bind.clone().unwrap_or(settings.server.bind.clone());
    if let Some(Command::Healthcheck { url, timeout_ms }) = &args.command {
        return healthcheck(url.as_deref(), &bind, *timeout_ms);
    }
    let _log_guard = aetherflow_bootstrap::logging::init(&settings.log)?;
    let providers = aetherflow_orchestrator::setup::configured_providers_priced(
        &settings.providers,
        &environment.keys()?,
        &settings.prices,
    )?
    .len();
    let sandbox_config = settings.sandbox.config(&environment.vars);
    let sandbox_error = aetherflow_sandbox::RuntimeFiles::verify(&sandbox_config.runtime_dir)
        .err()
        .map(|e| e.to_string());
    if let Some(e) = &sandbox_error {
        tracing::warn!(error = %e, "the sandbox runtime is not usable: /ready answers 503");
    }
    let readiness = Readiness {
        providers,
        sandbox_runtime: sandbox_config.runtime_dir,
        sandbox_error,
    };
    let listener = TcpListener::bind(&bind)
        .with_context(|| format!("cannot listen on {bind} (server.bind / --bind)"))?;
    let address = listener.local_addr()?;
    let max_body = settings.server.max_body_bytes;

    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::PayloadConfig::new(max_body))
                .app_data(web::Data::new(readiness.clone()))
                .route("/health", web::get().to(health))
                .route("/healthz", web::get().to(health))
                .route("/ready", web::get().to(ready))
                .route("/v1/plans/validate", web::post().to(validate_plan))
        })
        .listen(listener)?
        .run();
        // The first line on stdout is the address, so tools and tests can find a port-0 server.
        println!("listening on http://{address}");
        tracing::info!(%address, "aetherflow-api listening");
        server.await
    })?;
    Ok(())
}

/// Liveness: the process serves HTTP. Reveals nothing else.
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Readiness: able to take work (sandbox runtime present, a provider configured); 503 with
/// what to fix otherwise.
async fn ready(readiness: web::Data<Readiness>) -> HttpResponse {
    let (ok, checks) = readiness.check();
    let body = json!({ "ready": ok, "checks": checks });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// The loopback URL of a server bound to `bind` (`0.0.0.0:8080` → `http://127.0.0.1:8080`).
fn local_url(bind: &str) -> anyhow::Result<String> {
    let addr: std::net::SocketAddr = bind
        .parse()
        .with_context(|| format!("server.bind `{bind}` is not an address such as 0.0.0.0:8080"))?;
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    Ok(format!("http://{host}:{}", addr.port()))
}

fn healthcheck(url: Option<&str>, bind: &str, timeout_ms: u64) -> anyhow::Result<()> {
    let base = match url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => local_url(bind)?,
    };
    let target = format!("{base}/health");
    let status = actix_web::rt::System::new().block_on(async {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_millis(timeout_ms))
            .build()?
            .get(&target)
            .send()
            .await
            .map(|r| r.status())
    });
    match status {
        Ok(s) if s.is_success() => {
            println!("healthy: {target} answered {s}");
            Ok(())
        }
        Ok(s) => anyhow::bail!("unhealthy: {target} answered {s}"),
        Err(e) => anyhow::bail!("unhealthy: {target}: {e}"),
    }
}

/// Validates a plan sent as JSON, or as YAML with a YAML content type.
async fn validate_plan(request: HttpRequest, body: web::Bytes) -> HttpResponse {
    let content_type = request
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let format = if content_type.contains("yaml") {
        PlanFormat::Yaml
    } else if content_type.starts_with("application/json") || content_type.is_empty() {
        PlanFormat::Json
    } else {
        return HttpResponse::UnsupportedMediaType().json(json!({
            "error": format!("content type `{content_type}` is not a plan: send application/json or application/yaml"),
        }));
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return HttpResponse::BadRequest()
            .json(json!({"valid": false, "error": "the body is not UTF-8 text"}));
    };
    match load_plan(text, format) {
        Ok(plan) => HttpResponse::Ok().content_type(ContentType::json()).json(json!({
            "valid": true,
            "task_id": plan.plan().task_id,
            "steps": plan.steps().len(),
            "levels": plan.levels().iter().map(|l| l.iter().map(|&i| plan.steps()[i].id.as_str()).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "warnings": plan.warnings(),
        })),
        Err(e) => HttpResponse::UnprocessableEntity().json(json!({
            "valid": false,
            "error": e.to_string(),
            "position": e.position().map(|(line, column)| json!({"line": line, "column": column})),
        })),
    }
}
