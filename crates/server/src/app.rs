//! The actix-web application: routes, body limits, security headers, and the run endpoints.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::DefaultHeaders;
use actix_web::{HttpResponse, web};
use aetherflow_domain::Money;
use aetherflow_domain::plan::{PlanFormat, load_plan};
use aetherflow_domain::run::{Mode, Workflow};
use serde::Deserialize;
use serde_json::json;

use crate::KeyScope;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::jobs::{Jobs, Submission};
use crate::store::{RunFilter, RunRecord, RunState, Store};

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// The background runner, or why runs are refused (no provider, no sandbox runtime).
    pub jobs: Result<Jobs, String>,
    /// The longest `?wait=` honoured, in seconds.
    pub max_wait_secs: u64,
    /// Where calls outside runs (the gateway) are counted.
    pub metrics: Option<crate::metrics::Metrics>,
}

/// Headers on every response: no sniffing, no framing, no caching of API answers.
pub fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .add((header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .add((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .add((
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
}

/// Registers the API routes (everything but the probes) on `cfg`.
pub fn configure(state: AppState, max_body: usize) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let json_config = web::JsonConfig::default()
            .limit(max_body)
            .error_handler(|e, _| {
                let status = match &e {
                    actix_web::error::JsonPayloadError::Overflow { .. }
                    | actix_web::error::JsonPayloadError::OverflowKnownLength { .. } => 413,
                    actix_web::error::JsonPayloadError::ContentType => 415,
                    _ => 400,
                };
                ApiError {
                    status,
                    code: if status == 413 {
                        "too_large"
                    } else {
                        "bad_request"
                    },
                    message: format!("the JSON body was refused: {e}"),
                    retry_after: None,
                }
                .into()
            });
        cfg.app_data(web::Data::new(Arc::clone(&state.store)))
            .app_data(web::Data::new(state))
            .app_data(json_config)
            .route("/v1/scan", web::post().to(scan))
            .route("/metrics", web::get().to(metrics))
            .route("/openapi.json", web::get().to(crate::openapi::document))
            .route("/execute", web::post().to(crate::execute::execute))
            .route(
                "/v1/chat/completions",
                web::post().to(crate::gateway::chat_completions),
            )
            .route("/v1/models", web::get().to(crate::gateway::models))
            .route(
                "/v1/studio/designer/upload",
                web::post().to(crate::upload::designer_upload),
            )
            // The original tool's path.
            .route(
                "/studio/designer/upload",
                web::post().to(crate::upload::designer_upload),
            )
            .service(
                web::scope("/v1/runs")
                    .route(
                        "",
                        web::post()
                            .guard(actix_web::guard::fn_guard(|ctx| {
                                ctx.head()
                                    .headers()
                                    .get(header::CONTENT_TYPE)
                                    .and_then(|v| v.to_str().ok())
                                    .is_some_and(|v| {
                                        v.trim_start()
                                            .to_ascii_lowercase()
                                            .starts_with("multipart/form-data")
                                    })
                            }))
                            .to(submit_run_form),
                    )
                    .route("", web::post().to(submit_run))
                    .route("", web::get().to(list_runs))
                    .route("/{id}", web::get().to(get_run))
                    .route("/{id}/cancel", web::post().to(cancel_run))
                    .route("/{id}/events", web::get().to(run_events)),
            );
    }
}

/// `POST /v1/runs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The plan, in the original `plan.json` shape.
    #[schema(value_type = Object)]
    pub plan: serde_json::Value,
    /// `direct` (default), `proto` or `prod`.
    #[serde(default)]
    pub workflow: Option<String>,
    /// `fast`, `build` or `double-check` (default: the server's run.mode).
    #[serde(default)]
    pub mode: Option<String>,
    /// A folder inside the server's workspace roots (default: the first root).
    #[serde(default)]
    pub workspace: Option<String>,
    /// A cap on this run's spend in US dollars, e.g. "0.50".
    #[serde(default)]
    pub budget_usd: Option<String>,
    /// Show diffs instead of writing files.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    wait: Option<u64>,
}

pub(crate) fn run_json(run: &RunRecord) -> serde_json::Value {
    let mut value = serde_json::to_value(run).unwrap_or_else(|_| json!({}));
    value["links"] = json!({
        "self": format!("/v1/runs/{}", run.id),
        "events": format!("/v1/runs/{}/events", run.id),
        "cancel": format!("/v1/runs/{}/cancel", run.id),
    });
    value
}

/// Submit a plan run.
#[utoipa::path(post, path = "/v1/runs", tag = "runs", request_body = RunRequest,
    params(("wait" = Option<u64>, Query, description = "Seconds to wait for the run to end")),
    responses(
        (status = 202, description = "Accepted: the run is queued", body = RunRecord),
        (status = 200, description = "The run ended within `wait`", body = RunRecord),
        (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody),
        (status = 403, body = crate::openapi::ErrorBody), (status = 422, body = crate::openapi::ErrorBody),
        (status = 429, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn submit_run(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<WaitQuery>,
    body: web::Json<RunRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(KeyScope::RunsWrite)?;
    let request = body.into_inner();
    let text = serde_json::to_string(&request.plan).map_err(ApiError::internal)?;
    let plan = checked_plan(&text, PlanFormat::Json)?;
    submit(caller, state, query, request, plan).await
}

/// `POST /v1/runs` with a `multipart/form-data` body: the plan as a file part named `plan`
/// (`.json`, or `.yaml`/`.yml` by its name), and the options of the JSON body as text parts
/// (`workflow`, `mode`, `workspace`, `budget_usd`, `dry_run`).
async fn submit_run_form(
    caller: Caller,
    state: web::Data<AppState>,
    limits: web::Data<FormLimits>,
    query: web::Query<WaitQuery>,
    http: actix_web::HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(KeyScope::RunsWrite)?;
    let parts = crate::form::read(&http, payload, limits.max_bytes, limits.read_timeout).await?;
    let mut request = RunRequest {
        plan: serde_json::Value::Null,
        workflow: None,
        mode: None,
        workspace: None,
        budget_usd: None,
        dry_run: false,
    };
    let mut plan_part = None;
    for part in parts {
        match part.name.as_str() {
            "plan" if plan_part.is_none() => plan_part = Some(part),
            "workflow" => request.workflow = Some(part.text()?.trim().to_owned()),
            "mode" => request.mode = Some(part.text()?.trim().to_owned()),
            "workspace" => request.workspace = Some(part.text()?.trim().to_owned()),
            "budget_usd" => request.budget_usd = Some(part.text()?.trim().to_owned()),
            "dry_run" => {
                request.dry_run = match part.text()?.trim() {
                    "true" | "1" | "on" | "yes" => true,
                    "false" | "0" | "off" | "no" | "" => false,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "dry_run `{other}`: use true or false"
                        )));
                    }
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unexpected form field `{other}`: send `plan` (a file) and optionally workflow, mode, workspace, budget_usd, dry_run"
                )));
            }
        }
    }
    let plan_part = plan_part.ok_or_else(|| {
        ApiError::bad_request("no `plan` field: send the plan file in a form field named `plan`")
    })?;
    let format = plan_part
        .filename
        .as_deref()
        .map_or(PlanFormat::Json, |name| {
            PlanFormat::from_path(std::path::Path::new(name))
        });
    let plan = checked_plan(plan_part.text()?, format)?;
    submit(caller, state, query, request, plan).await
}

/// Limits on multipart forms that are not uploads of designs.
#[derive(Debug, Clone)]
pub struct FormLimits {
    /// Largest form, in bytes.
    pub max_bytes: usize,
    /// How long the client has to send it.
    pub read_timeout: Duration,
}

async fn submit(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<WaitQuery>,
    request: RunRequest,
    plan: aetherflow_domain::plan::ValidPlan,
) -> Result<HttpResponse, ApiError> {
    let workflow = match request.workflow.as_deref() {
        Some(w) => w.parse::<Workflow>().map_err(ApiError::bad_request)?,
        None => Workflow::Direct,
    };
    let mode = request
        .mode
        .as_deref()
        .map(str::parse::<Mode>)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let budget = request
        .budget_usd
        .as_deref()
        .map(Money::parse_usd)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("budget_usd: {e}")))?;
    let jobs = state
        .jobs
        .as_ref()
        .map_err(|why| ApiError::busy(format!("runs are unavailable: {why}"), 60))?;
    let record = jobs
        .submit(Submission {
            plan: Arc::new(plan),
            workflow,
            mode,
            workspace: request.workspace,
            budget,
            dry_run: request.dry_run,
            key_id: Some(caller.key_id.clone()),
        })
        .await?;
    let _ = state
        .store
        .audit(Some(&caller.key_id), "run.submit", &record.id)
        .await;
    let location = format!("/v1/runs/{}", record.id);
    if let Some(secs) = query.wait.filter(|s| *s > 0) {
        let secs = secs.min(state.max_wait_secs);
        if let Some(mut sub) = jobs.subscribe(&record.id) {
            let _ = tokio::time::timeout(
                Duration::from_secs(secs),
                sub.state.wait_for(|s| s.is_final()),
            )
            .await;
        } else {
            // Queued for a worker: its end shows in the shared store.
            let store = Arc::clone(&state.store);
            let id = record.id.clone();
            let _ = tokio::time::timeout(Duration::from_secs(secs), async move {
                loop {
                    if matches!(store.run(&id).await, Ok(Some(r)) if r.status.is_final()) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await;
        }
        if let Some(done) = state
            .store
            .run(&record.id)
            .await?
            .filter(|r| r.status.is_final())
        {
            return Ok(HttpResponse::Ok()
                .insert_header((header::LOCATION, location))
                .json(run_json(&done)));
        }
    }
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, location))
        .json(run_json(&record)))
}

/// Parses and validates a plan, and checks its own safety and review settings; 422 with the
/// problem otherwise.
pub(crate) fn checked_plan(
    text: &str,
    format: PlanFormat,
) -> Result<aetherflow_domain::plan::ValidPlan, ApiError> {
    let plan = load_plan(text, format).map_err(|e| ApiError::invalid(format!("plan: {e}")))?;
    aetherflow_orchestrator::rules::step_rules(
        plan.plan(),
        &Arc::new(aetherflow_code_safety::Policy::default()),
        None,
        false,
    )
    .map_err(|e| ApiError::invalid(format!("plan: {e}")))?;
    Ok(plan)
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
    before: Option<String>,
}

/// List runs, newest first (only the caller's own unless it is an admin key).
#[utoipa::path(get, path = "/v1/runs", tag = "runs",
    params(("status" = Option<String>, Query, description = "queued, running, succeeded, failed, cancelled or interrupted"),
           ("limit" = Option<usize>, Query, description = "1 to 100, default 20"),
           ("before" = Option<String>, Query, description = "The `next` cursor of the page before")),
    responses((status = 200, description = "`{runs: [...], next}`"), (status = 401, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn list_runs(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(KeyScope::RunsRead)?;
    let status = match query.status.as_deref() {
        Some(s) => Some(RunState::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "status `{s}`: use queued, running, succeeded, failed, cancelled or interrupted"
            ))
        })?),
        None => None,
    };
    let limit = query.limit.unwrap_or(20).clamp(1, 100);
    let runs = state
        .store
        .list_runs(&RunFilter {
            status,
            key_id: (!caller.is_admin()).then(|| caller.key_id.clone()),
            before: query.before.clone(),
            limit,
        })
        .await?;
    let next = (runs.len() == limit)
        .then(|| runs.last().map(|r| r.id.clone()))
        .flatten();
    let summaries: Vec<serde_json::Value> = runs
        .iter()
        .map(|r| {
            json!({"id": r.id, "task_id": r.task_id, "status": r.status, "workflow": r.workflow,
                   "mode": r.mode, "created_at": r.created_at, "finished_at": r.finished_at})
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"runs": summaries, "next": next})))
}

/// A run the caller may see: its own, or any for an admin key; others are "not found".
async fn visible_run(caller: &Caller, state: &AppState, id: &str) -> Result<RunRecord, ApiError> {
    let not_found = || ApiError::not_found(format!("no run {id}"));
    let run = state.store.run(id).await?.ok_or_else(not_found)?;
    if caller.is_admin() || run.key_id.as_deref() == Some(caller.key_id.as_str()) {
        Ok(run)
    } else {
        Err(not_found())
    }
}

/// One run: status, every pass's report (steps, attempts, costs, files changed).
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, body = RunRecord), (status = 404, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn get_run(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(KeyScope::RunsRead)?;
    let run = visible_run(&caller, &state, &id).await?;
    Ok(HttpResponse::Ok().json(run_json(&run)))
}

/// Cancel a queued or running run.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses((status = 202, description = "Cancelling"), (status = 409, body = crate::openapi::ErrorBody),
               (status = 404, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn cancel_run(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(KeyScope::RunsWrite)?;
    let run = visible_run(&caller, &state, &id).await?;
    let cancelled = match &state.jobs {
        Ok(jobs) if !run.status.is_final() => jobs.cancel_anywhere(&run.id).await,
        _ => false,
    };
    if run.status.is_final() || !cancelled {
        return Err(ApiError::conflict(format!(
            "run {} is {} and cannot be cancelled",
            run.id,
            run.status.as_str()
        )));
    }
    let _ = state
        .store
        .audit(Some(&caller.key_id), "run.cancel", &run.id)
        .await;
    Ok(HttpResponse::Accepted().json(json!({"id": run.id, "status": "cancelling"})))
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    /// Resume after this sequence number (as the `Last-Event-ID` header does).
    after: Option<u64>,
}

/// `GET /v1/runs/{id}/events`: the run's progress as Server-Sent Events, each with its sequence
/// number as `id`, replayed from the store and then live until the run ends; resumable with
/// `Last-Event-ID` (or `?after=`). The stream ends with an `end` event carrying the final status.
/// The run's progress as Server-Sent Events (`id` = sequence number; resume with
/// `Last-Event-ID`); ends with an `end` event.
#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs",
    params(("id" = String, Path, description = "The run's id"),
           ("after" = Option<u64>, Query, description = "Resume after this sequence number")),
    responses((status = 200, description = "text/event-stream", content_type = "text/event-stream")),
    security(("bearer" = [])))]
async fn run_events(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<EventsQuery>,
    request: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    caller.require(KeyScope::RunsRead)?;
    let run = visible_run(&caller, &state, &id).await?;
    let header_after = request
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let after = header_after.or(query.after).unwrap_or(0);
    // Subscribe before reading the store, so nothing falls between the two.
    let live = state
        .jobs
        .as_ref()
        .ok()
        .and_then(|jobs| jobs.subscribe(&run.id));
    let store = Arc::clone(&state.store);
    let bus = state
        .jobs
        .as_ref()
        .ok()
        .and_then(|jobs| jobs.event_bus().cloned());
    let run_id = run.id.clone();
    let stream = async_stream::stream! {
        let mut last = after;
        let stored = match store.events_after(&run_id, last).await {
            Ok(events) => events,
            Err(e) => {
                tracing::error!(run = %run_id, error = %e, "events not read");
                Vec::new()
            }
        };
        for (seq, json) in stored {
            last = seq;
            yield Ok::<_, actix_web::Error>(sse(seq, &json));
        }
        if let Some(mut live) = live {
            loop {
                match live.events.recv().await {
                    Ok((seq, json)) if seq > last => {
                        last = seq;
                        yield Ok(sse(seq, &json));
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow a reader: catch up from the store.
                        if let Ok(events) = store.events_after(&run_id, last).await {
                            for (seq, json) in events {
                                last = seq;
                                yield Ok(sse(seq, &json));
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
            if let Ok(events) = store.events_after(&run_id, last).await {
                for (seq, json) in events {
                    yield Ok(sse(seq, &json));
                }
            }
        } else if let Some(bus) = bus {
            // The run executes in another process that publishes its events on Redis: follow
            // them there (within FOLLOW_BUS_EVERY), until its end; check the store now and then,
            // in case the end was not published.
            let mut idle = std::time::Duration::ZERO;
            let mut since_store = std::time::Duration::ZERO;
            'follow: loop {
                match bus.read_after(&run_id, last).await {
                    Ok(published) if !published.is_empty() => {
                        idle = std::time::Duration::ZERO;
                        for item in published {
                            match item {
                                aetherflow_redis::events::Published::Event(seq, json) if seq > last => {
                                    if seq > last + 1 {
                                        // Redis missed some (a failed publish): the store has them.
                                        for (missed, json) in store.events_after(&run_id, last).await.unwrap_or_default() {
                                            if missed >= seq {
                                                break;
                                            }
                                            yield Ok(sse(missed, &json));
                                        }
                                    }
                                    last = seq;
                                    yield Ok(sse(seq, &json));
                                }
                                aetherflow_redis::events::Published::Event(..) => {}
                                aetherflow_redis::events::Published::End(_) => break 'follow,
                            }
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(run = %run_id, error = %e, "events not read from Redis"),
                }
                if since_store >= FOLLOW_EVERY * 2 {
                    since_store = std::time::Duration::ZERO;
                    let finished = matches!(store.run(&run_id).await, Ok(Some(r)) if r.status.is_final());
                    let events = store.events_after(&run_id, last).await.unwrap_or_default();
                    for (seq, json) in events {
                        idle = std::time::Duration::ZERO;
                        last = seq;
                        yield Ok(sse(seq, &json));
                    }
                    if finished || idle >= IDLE_FOLLOW {
                        break;
                    }
                }
                tokio::time::sleep(FOLLOW_BUS_EVERY).await;
                idle += FOLLOW_BUS_EVERY;
                since_store += FOLLOW_BUS_EVERY;
            }
            // Anything stored but not published (Redis missed it).
            for (seq, json) in store.events_after(&run_id, last).await.unwrap_or_default() {
                yield Ok(sse(seq, &json));
            }
        } else {
            // The run is not executing here (another replica or worker has it, sharing this
            // store): follow it through the store until it ends, or until nothing has happened
            // for IDLE_FOLLOW (its owner may be gone).
            let mut idle = std::time::Duration::ZERO;
            loop {
                let finished = matches!(store.run(&run_id).await, Ok(Some(r)) if r.status.is_final());
                let events = store.events_after(&run_id, last).await.unwrap_or_default();
                if events.is_empty() {
                    if finished || idle >= IDLE_FOLLOW {
                        break;
                    }
                } else {
                    idle = std::time::Duration::ZERO;
                }
                for (seq, json) in events {
                    last = seq;
                    yield Ok(sse(seq, &json));
                }
                tokio::time::sleep(FOLLOW_EVERY).await;
                idle += FOLLOW_EVERY;
            }
        }
        let status = match store.run(&run_id).await {
            Ok(Some(r)) => r.status.as_str(),
            _ => "unknown",
        };
        yield Ok(web::Bytes::from(format!(
            "event: end\ndata: {}\n\n",
            json!({"status": status})
        )));
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream))
}

/// How often a run executing elsewhere is read from its Redis event stream.
const FOLLOW_BUS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// How often a run executing elsewhere is read from the store for new events.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// How long a followed run may stay silent before the stream ends (its `end` event then carries
/// the status the store has).
const IDLE_FOLLOW: std::time::Duration = std::time::Duration::from_secs(600);

/// One SSE message: `id`, `event` (the event's own name) and `data`.
fn sse(seq: u64, json: &str) -> web::Bytes {
    let name = serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v["event"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "message".to_owned());
    web::Bytes::from(format!("id: {seq}\nevent: {name}\ndata: {json}\n\n"))
}

/// `POST /v1/scan`: files to check with the code-safety gate.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanRequest {
    /// The files, each `{"path", "content"}`.
    pub files: Vec<ScanFile>,
    /// `json` (bandit-compatible, the default) or `sarif`.
    #[serde(default)]
    pub format: Option<String>,
    /// Changes to the default policy, in the shape of a plan's `safety` (imports, block levels,
    /// rules).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub policy: Option<aetherflow_code_safety::PolicyOverrides>,
}

/// One file to scan.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanFile {
    /// Its name in the report.
    pub path: String,
    /// Its text.
    pub content: String,
}

/// Most files one scan request may carry.
pub const MAX_SCAN_FILES: usize = 200;

/// Check Python files with the code-safety gate; bandit-compatible JSON or SARIF.
#[utoipa::path(post, path = "/v1/scan", tag = "scan", request_body = ScanRequest,
    responses((status = 200, description = "Bandit-compatible JSON or SARIF 2.1.0; `X-AetherFlow-Blocked` counts blocked files"),
              (status = 400, body = crate::openapi::ErrorBody), (status = 403, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
async fn scan(
    caller: Caller,
    state: web::Data<AppState>,
    body: web::Json<ScanRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(KeyScope::Scan)?;
    let request = body.into_inner();
    if request.files.is_empty() || request.files.len() > MAX_SCAN_FILES {
        return Err(ApiError::bad_request(format!(
            "send 1 to {MAX_SCAN_FILES} files as [{{\"path\": \"gen.py\", \"content\": \"...\"}}]"
        )));
    }
    let sarif = match request.format.as_deref().unwrap_or("json") {
        "json" => false,
        "sarif" => true,
        other => {
            return Err(ApiError::bad_request(format!(
                "format `{other}`: use json (bandit-compatible) or sarif"
            )));
        }
    };
    let policy = match &request.policy {
        Some(overrides) => aetherflow_code_safety::Policy::default()
            .layered(overrides)
            .map_err(|e| ApiError::bad_request(format!("policy: {e}")))?,
        None => aetherflow_code_safety::Policy::default(),
    };
    // Parsing and rule checks are CPU work: off the HTTP worker.
    let (rendered, blocked) = web::block(move || {
        let sources: Vec<(&str, &str)> = request
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.content.as_str()))
            .collect();
        let reports = aetherflow_code_safety::scan_sources(&sources, &policy, 1);
        let blocked = reports.iter().filter(|r| !r.verdict().is_allow()).count();
        let rendered = if sarif {
            aetherflow_code_safety::render::sarif(&reports)
        } else {
            aetherflow_code_safety::render::bandit_json(&reports, None)
        };
        (rendered, blocked)
    })
    .await
    .map_err(ApiError::internal)?;
    let _ = state
        .store
        .audit(Some(&caller.key_id), "scan", &format!("{blocked} blocked"))
        .await;
    Ok(HttpResponse::Ok()
        .insert_header(("x-aetherflow-blocked", blocked.to_string()))
        .content_type(if sarif {
            "application/sarif+json"
        } else {
            "application/json"
        })
        .json(rendered))
}

/// `GET /metrics`: Prometheus text format, for keys with the `admin` scope (spend is not public).
/// Prometheus metrics (admin scope).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")),
    security(("bearer" = [])))]
async fn metrics(
    caller: Caller,
    metrics: Option<web::Data<crate::metrics::Metrics>>,
) -> Result<HttpResponse, ApiError> {
    caller.require(KeyScope::Admin)?;
    let metrics = metrics.ok_or_else(|| ApiError::not_found("metrics are not enabled"))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics.render()))
}
