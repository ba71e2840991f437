//! `POST /execute`: the original tool's endpoint, kept for its clients — its request
//! (`plan_path` | `plan_json`, `workflow`, `context`) and response (`success`, `task_id`,
//! `results`, `metrics`, `output_dir`, `message`) — behind the same keys, scopes, limits and
//! workspace fence as `/v1/runs`. The original wrote wherever the request pointed; here the plan
//! file, the workspace and `output_dir` must all lie inside `server.workspace_roots`.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use aetherflow_domain::plan::PlanFormat;
use aetherflow_domain::run::{Mode, Workflow};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::KeyScope;
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::jobs::Submission;
use crate::store::{RunRecord, RunState};

/// The original request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ExecuteRequest {
    /// A plan file inside the workspace roots.
    #[serde(default)]
    pub plan_path: Option<String>,
    /// The plan itself, as an object or as JSON text.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub plan_json: Option<Value>,
    /// `direct`, `proto` or `prod` (any case).
    #[serde(default)]
    pub workflow: Option<String>,
    /// Options: `output_dir` or `workspace` (a folder inside the roots), `mode`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub context: serde_json::Map<String, Value>,
    /// Where the files go (a folder inside the roots); `context.output_dir` means the same.
    #[serde(default)]
    pub output_dir: Option<String>,
}

/// Largest plan file read.
const MAX_PLAN_BYTES: u64 = 1 << 20;

/// The original tool's endpoint: run a plan and answer in its response shape.
#[utoipa::path(post, path = "/execute", tag = "compatibility", request_body = ExecuteRequest,
    responses((status = 200, description = "`{success, task_id, run_id, results, metrics, output_dir, message}`"),
              (status = 202, description = "Still running after server.max_wait_secs"),
              (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn execute(
    caller: Caller,
    state: web::Data<AppState>,
    body: web::Json<ExecuteRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(KeyScope::RunsWrite)?;
    let jobs = state
        .jobs
        .as_ref()
        .map_err(|why| ApiError::busy(format!("runs are unavailable: {why}"), 60))?;
    let request = body.into_inner();
    let text = match (&request.plan_path, &request.plan_json) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(ApiError::bad_request(
                "send exactly one of plan_path (a file inside the workspace) or plan_json",
            ));
        }
        (Some(path), None) => {
            let file = jobs.file_inside_roots(path)?;
            let mut text = String::new();
            std::fs::File::open(&file)
                .and_then(|f| f.take(MAX_PLAN_BYTES + 1).read_to_string(&mut text))
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "plan_path `{path}` is not a readable UTF-8 file"
                    ))
                })?;
            if text.len() as u64 > MAX_PLAN_BYTES {
                return Err(ApiError::bad_request(format!(
                    "plan_path `{path}` is larger than {MAX_PLAN_BYTES} bytes"
                )));
            }
            (text, PlanFormat::from_path(&file))
        }
        (None, Some(Value::String(text))) => (text.clone(), PlanFormat::Json),
        (None, Some(value)) => (value.to_string(), PlanFormat::Json),
    };
    let plan = crate::app::checked_plan(&text.0, text.1)?;
    let workflow = match request.workflow.as_deref().map(str::trim) {
        None | Some("") => Workflow::Direct,
        Some(w) => w.parse::<Workflow>().map_err(ApiError::bad_request)?,
    };
    let text_of = |key: &str| {
        request
            .context
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let mode = text_of("mode")
        .map(|m| m.parse::<Mode>())
        .transpose()
        .map_err(ApiError::bad_request)?;
    let workspace = request
        .output_dir
        .clone()
        .or_else(|| text_of("output_dir"))
        .or_else(|| text_of("workspace"));
    let workspace_dir = jobs.workspace(workspace.as_deref())?;
    let record = jobs
        .submit(Submission {
            plan: Arc::new(plan),
            workflow,
            mode,
            workspace: workspace.clone(),
            budget: None,
            dry_run: false,
            key_id: Some(caller.key_id.clone()),
        })
        .await?;
    let _ = state
        .store
        .audit(Some(&caller.key_id), "execute", &record.id)
        .await;
    if let Some(mut sub) = jobs.subscribe(&record.id) {
        let _ = tokio::time::timeout(
            Duration::from_secs(state.max_wait_secs),
            sub.state.wait_for(|s| s.is_final()),
        )
        .await;
    }
    let run = state.store.run(&record.id).await?.unwrap_or(record);
    let output_dir = jobs.relative_to_roots(&workspace_dir);
    let body = response(&run, &output_dir);
    Ok(if run.status.is_final() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::Accepted().json(body)
    })
}

/// The original response shape, filled from the run.
fn response(run: &RunRecord, output_dir: &str) -> Value {
    let mut results = Vec::new();
    let (mut steps, mut succeeded, mut failed, mut cost, mut tokens, mut duration) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0f64);
    // The pass that applied files is the one whose steps describe the result: the last
    // generating pass (a double-check only judges).
    let result_pass = run
        .reports
        .iter()
        .rev()
        .find(|r| r["workflow"]["phase"] != "double-check")
        .or(run.reports.last());
    for report in &run.reports {
        cost += report["totals"]["cost"].as_u64().unwrap_or(0);
        let usage = &report["totals"]["usage"];
        tokens += usage["input_tokens"].as_u64().unwrap_or(0)
            + usage["output_tokens"].as_u64().unwrap_or(0);
        duration += report["duration_ms"].as_f64().unwrap_or(0.0);
    }
    if let Some(report) = result_pass {
        for step in report["steps"].as_array().into_iter().flatten() {
            steps += 1;
            match step["status"].as_str() {
                Some("succeeded") => succeeded += 1,
                Some("failed") => failed += 1,
                _ => {}
            }
            results.push(json!({
                "step_id": step["id"],
                "status": step["status"],
                "success": step["status"] == "succeeded",
                "provider": step["provider"],
                "model": step["model"],
                "files": step["files"].as_array().map(|f| f.iter().map(|x| x["path"].clone()).collect::<Vec<_>>()).unwrap_or_default(),
                "cost_usd": step["cost"].as_u64().unwrap_or(0) as f64 / 1e6,
                "error": step["reason"],
            }));
        }
    }
    let success = run.status == RunState::Succeeded;
    let message = match run.status {
        RunState::Succeeded => format!("{succeeded} of {steps} steps succeeded"),
        RunState::Queued | RunState::Running => format!(
            "still running; follow it at /v1/runs/{} (or its /events)",
            run.id
        ),
        _ => run.error.clone().unwrap_or_else(|| {
            format!(
                "{} of {steps} steps failed; see /v1/runs/{}",
                failed, run.id
            )
        }),
    };
    json!({
        "success": success,
        "task_id": run.task_id,
        "run_id": run.id,
        "status": run.status,
        "results": results,
        "metrics": {
            "steps": steps,
            "succeeded": succeeded,
            "failed": failed,
            "passes": run.reports.len(),
            "tokens": tokens,
            "cost_usd": cost as f64 / 1e6,
            "duration_ms": duration,
        },
        "output_dir": output_dir,
        "message": message,
    })
}
