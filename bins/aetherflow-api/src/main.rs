//! `aetherflow-api`: AetherFlow over HTTP.
//!
//! This first version serves a liveness probe and plan validation, sharing the plan rules with
//! the CLI. Runs, authentication, rate limits, CORS and the OpenAI-compatible endpoint are the
//! API issues' work; until then the server binds to loopback by default.

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
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let environment = aetherflow_bootstrap::Environment::load(args.config.as_deref())?;
    let settings = environment.settings;
    let _log_guard = aetherflow_bootstrap::logging::init(&settings.log)?;
    let bind = args.bind.unwrap_or(settings.server.bind);
    let listener = TcpListener::bind(&bind)
        .with_context(|| format!("cannot listen on {bind} (server.bind / --bind)"))?;
    let address = listener.local_addr()?;
    let max_body = settings.server.max_body_bytes;

    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::PayloadConfig::new(max_body))
                .route("/healthz", web::get().to(health))
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

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
    }))
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
