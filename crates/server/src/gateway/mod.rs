//! The OpenAI-compatible gateway: `POST /v1/chat/completions` and `GET /v1/models`, so any
//! OpenAI SDK gets AetherFlow's routing, fallbacks, retries, breakers, budgets, key pools and
//! response cache behind one URL.
//!
//! Model names: `provider/model` (`deepseek/deepseek-chat`), a configured provider's model
//! name alone, or a routing group `aetherflow/fast` / `aetherflow/build` (the fallback chains
//! of that mode). Requests are translated to the provider-neutral [`ChatRequest`]; each adapter
//! then sends only what its provider accepts. Errors answer in OpenAI's shape.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use aetherflow_domain::Money;
use aetherflow_domain::plan::StepType;
use aetherflow_domain::run::{Attempt, Mode};
use aetherflow_orchestrator::call::{CallOptions, complete, stream};
use aetherflow_orchestrator::{ProviderSet, Target};
use aetherflow_provider::{ChatRequest, FinishReason, StreamEvent, ToolCall};
use futures::StreamExt as _;
use serde_json::{Map, Value, json};

use crate::KeyScope;
use crate::app::AppState;
use crate::auth::Caller;

mod error;
mod translate;

pub use error::GatewayError;
pub use translate::{CompletionRequest, MAX_MESSAGES, Translated, translate};

/// The routing groups: `aetherflow/<name>` and the mode whose fallback chains they follow.
pub const GROUPS: [(&str, Mode); 3] = [
    ("fast", Mode::Fast),
    ("build", Mode::Build),
    ("double-check", Mode::DoubleCheck),
];

/// The runner (providers, resilience), or 503 saying why there is none.
fn jobs_of(state: &AppState) -> Result<&crate::jobs::Jobs, GatewayError> {
    state.jobs.as_ref().map_err(|why| {
        GatewayError::new(
            503,
            "api_error",
            "unavailable",
            format!("the gateway is unavailable: {why}"),
        )
    })
}

/// The targets of a configured routing group, in order: each entry is a provider (its
/// configured model) or `provider/model` (a model the provider knows the price of). Entries
/// naming a provider that is not configured here are skipped, as in fallback chains.
pub fn group_targets(providers: &ProviderSet, entries: &[String]) -> Vec<Target> {
    entries
        .iter()
        .filter_map(|e| {
            let (name, model) = match e.split_once('/') {
                Some((p, m)) => (p, Some(m)),
                None => (e.as_str(), None),
            };
            let mut entry = providers.entry(name)?.clone();
            if let Some(m) = model {
                if m.is_empty() || (m != entry.model && entry.provider.price(m).is_none()) {
                    return None;
                }
                entry.model = m.to_owned();
            }
            Some(Target {
                name: aetherflow_orchestrator::routing::canonical_provider_name(name),
                entry,
            })
        })
        .collect()
}

/// The targets a model name routes to: a configured group, a built-in group, `provider/model`,
/// or a configured model's bare name.
pub fn resolve(
    providers: &ProviderSet,
    policy: &aetherflow_resilience::fallback::FallbackPolicy,
    groups: &std::collections::BTreeMap<String, Vec<String>>,
    model: &str,
    estimated_tokens: impl FnOnce() -> u64,
) -> Result<Vec<Target>, GatewayError> {
    let not_found = || GatewayError {
        param: Some("model"),
        ..GatewayError::new(
            404,
            "invalid_request_error",
            "model_not_found",
            format!(
                "the model `{model}` does not exist here; GET /v1/models lists the models and groups"
            ),
        )
    };
    if let Some((prefix, rest)) = model.split_once('/') {
        if prefix == "aetherflow" {
            if let Some(entries) = groups.get(rest) {
                let targets = group_targets(providers, entries);
                return if targets.is_empty() {
                    Err(GatewayError {
                        param: Some("model"),
                        ..GatewayError::new(
                            503,
                            "api_error",
                            "group_unavailable",
                            format!(
                                "the routing group `{model}` names no provider configured here ({}); configure one of them or change gateway.groups.{rest}",
                                entries.join(", ")
                            ),
                        )
                    })
                } else {
                    Ok(targets)
                };
            }
            let mode = GROUPS
                .iter()
                .find(|(name, _)| *name == rest)
                .map(|(_, m)| *m)
                .ok_or_else(not_found)?;
            let targets =
                providers.chain_for(mode, StepType::CodeGeneration, estimated_tokens(), policy);
            return if targets.is_empty() {
                Err(not_found())
            } else {
                Ok(targets)
            };
        }
        if let Some(entry) = providers.entry(prefix) {
            // A model the provider knows (priced, or its configured one); never one it would
            // refuse or one whose cost cannot be counted.
            if rest.is_empty() || (rest != entry.model && entry.provider.price(rest).is_none()) {
                return Err(not_found());
            }
            let mut entry = entry.clone();
            entry.model = rest.to_owned();
            return Ok(vec![Target {
                name: aetherflow_orchestrator::routing::canonical_provider_name(prefix),
                entry,
            }]);
        }
        return Err(not_found());
    }
    providers
        .entries()
        .find(|(_, e)| e.model == model)
        .map(|(name, e)| {
            vec![Target {
                name: name.to_owned(),
                entry: e.clone(),
            }]
        })
        .ok_or_else(not_found)
}

/// `GET /v1/models`: the configured providers' models and the routing groups.
#[utoipa::path(get, path = "/v1/models", tag = "gateway",
    responses((status = 200, description = "`{object: \"list\", data: [{id, object: \"model\", created, owned_by}]}`")),
    security(("bearer" = [])))]
pub async fn models(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    caller.require(KeyScope::Chat)?;
    let jobs = jobs_of(&state)?;
    let mut data: Vec<Value> = jobs
        .engine()
        .providers
        .entries()
        .map(|(name, e)| json!({"id": format!("{name}/{}", e.model), "object": "model", "created": 0, "owned_by": name}))
        .collect();
    let configured = &jobs.engine().gateway_groups;
    let builtin = GROUPS
        .iter()
        .map(|(g, _)| *g)
        .filter(|g| !configured.contains_key(*g));
    for group in configured.keys().map(String::as_str).chain(builtin) {
        data.push(json!({"id": format!("aetherflow/{group}"), "object": "model", "created": 0, "owned_by": "aetherflow"}));
    }
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": data})))
}

fn finish_name(reason: &FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop | FinishReason::ProviderError | FinishReason::Other(_) => "stop",
        FinishReason::MaxTokens | FinishReason::ContextLimit => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

fn usage_json(u: &aetherflow_domain::Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    })
}

fn tool_calls_json(calls: &[ToolCall]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect(),
    )
}

/// Whether the client asked not to be served from the cache.
fn cache_opt_out(request: &HttpRequest) -> bool {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    header("x-aetherflow-cache")
        .is_some_and(|v| matches!(v.as_str(), "off" | "no" | "bypass" | "false"))
        || header("cache-control").is_some_and(|v| v.contains("no-cache") || v.contains("no-store"))
}

/// Counts the attempts in the metrics, with the model label only from the configured set.
fn record_metrics(state: &AppState, providers: &ProviderSet, attempts: &[Attempt]) {
    let Some(metrics) = state.metrics.as_ref() else {
        return;
    };
    for a in attempts {
        let outcome = match (&a.error, a.cached) {
            (Some(_), _) => "error",
            (None, true) => "cached",
            (None, false) => "ok",
        };
        metrics.record_attempt(
            &a.provider,
            metric_model(providers, &a.provider, &a.model),
            outcome,
            a.usage.input_tokens,
            a.usage.output_tokens,
            a.cost.as_micros(),
        );
    }
}

/// The metrics label for `model`: the provider's configured model, or `other` (labels never
/// take client strings).
fn metric_model<'a>(providers: &ProviderSet, provider: &str, model: &'a str) -> &'a str {
    if providers.entry(provider).is_some_and(|e| e.model == model) {
        model
    } else {
        "other"
    }
}

/// `POST /v1/chat/completions`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "gateway",
    request_body(content = Object, description = "An OpenAI chat completion request"),
    responses(
        (status = 200, description = "An OpenAI chat completion, or `text/event-stream` chunks ending with `data: [DONE]`; headers `X-AetherFlow-Provider`, `-Model`, `-Attempts`, `-Cost-Micros`, `-Cache`"),
        (status = 400, description = "OpenAI error shape"), (status = 401), (status = 402), (status = 403),
        (status = 404), (status = 429), (status = 502), (status = 503), (status = 504)),
    security(("bearer" = [])))]
pub async fn chat_completions(
    caller: Caller,
    state: web::Data<AppState>,
    http: HttpRequest,
    limits: web::Data<crate::app::FormLimits>,
    payload: web::Payload,
) -> Result<HttpResponse, GatewayError> {
    caller.require(KeyScope::Chat)?;
    // This route waits on providers, so the request deadline does not cover it: the body has
    // a deadline of its own.
    let body = crate::form::read_body(payload, limits.max_bytes, limits.read_timeout).await?;
    let parsed: CompletionRequest = serde_json::from_slice(&body).map_err(|e| {
        GatewayError::invalid(
            "body",
            format!("the body is not a chat completion request: {e}"),
        )
    })?;
    let requested_model = parsed.model.clone();
    let streaming = parsed.stream;
    let translate::Translated {
        request,
        deterministic,
        include_usage,
    } = translate(parsed)?;
    let jobs = jobs_of(&state)?;
    let engine = jobs.engine();
    // Counted only for routing groups, whose chains depend on the size.
    let targets = resolve(
        &engine.providers,
        &engine.resilience.fallback,
        &engine.gateway_groups,
        &requested_model,
        || aetherflow_provider::tokens::estimate_request(&request),
    )?;
    let opted_out = cache_opt_out(&http);
    let options = CallOptions {
        cacheable: deterministic && !opted_out && !streaming,
        accept_truncated: true,
        ..jobs.call_options("chat", &caller.key_id).await
    };
    let id = format!("chatcmpl-{}", uuid::Uuid::now_v7().simple());
    let created = chrono::Utc::now().timestamp();
    if streaming {
        return stream_answer(
            &state,
            caller,
            engine,
            targets,
            request,
            options,
            id,
            created,
            include_usage,
        )
        .await;
    }
    let outcome = complete(&engine.resilience, &targets, request, &options).await;
    let (attempts, cost) = match &outcome {
        Ok(o) => (o.attempts.clone(), o.cost),
        Err(f) => (f.attempts.clone(), f.cost),
    };
    record_metrics(&state, &engine.providers, &attempts);
    record_spend(&state, &caller.key_id, cost).await;
    let outcome = outcome.map_err(|f| GatewayError::from_failure(&f))?;
    let cached = outcome.attempts.last().is_some_and(|a| a.cached);
    let response = &outcome.response;
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert(
        "content".into(),
        if response.text.is_empty() && !response.tool_calls.is_empty() {
            Value::Null
        } else {
            Value::from(response.text.clone())
        },
    );
    if !response.tool_calls.is_empty() {
        message.insert("tool_calls".into(), tool_calls_json(&response.tool_calls));
    }
    if let Some(r) = &response.reasoning {
        message.insert("reasoning_content".into(), Value::from(r.clone()));
    }
    let model = format!("{}/{}", outcome.provider, response.model);
    let body = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_name(&response.finish_reason), "logprobs": null}],
        "usage": usage_json(&response.usage),
    });
    Ok(HttpResponse::Ok()
        .insert_header(("x-aetherflow-provider", outcome.provider.clone()))
        .insert_header(("x-aetherflow-model", response.model.clone()))
        .insert_header(("x-aetherflow-attempts", outcome.attempts.len().to_string()))
        .insert_header((
            "x-aetherflow-cost-micros",
            outcome.cost.as_micros().to_string(),
        ))
        .insert_header((
            "x-aetherflow-cache",
            if opted_out || !deterministic {
                "off"
            } else if cached {
                "hit"
            } else {
                "miss"
            },
        ))
        .json(body))
}

async fn record_spend(state: &AppState, key: &str, cost: Money) {
    if cost.as_micros() > 0
        && let Err(e) = state
            .store
            .record_key_spend(key, "chat", cost.as_micros())
            .await
    {
        tracing::error!(error = %e, "the key's spend was not stored");
    }
}

fn chunk(id: &str, created: i64, model: &str, delta: Value, finish: Option<&str>) -> web::Bytes {
    let body = json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
    });
    web::Bytes::from(format!("data: {body}\n\n"))
}

#[allow(clippy::too_many_arguments)]
async fn stream_answer(
    state: &web::Data<AppState>,
    caller: Caller,
    engine: &crate::jobs::Engine,
    targets: Vec<Target>,
    request: ChatRequest,
    options: CallOptions,
    id: String,
    created: i64,
    include_usage: bool,
) -> Result<HttpResponse, GatewayError> {
    let started = match stream(&engine.resilience, &targets, request, &options).await {
        Ok(s) => s,
        Err(failure) => {
            record_metrics(state, &engine.providers, &failure.attempts);
            return Err(GatewayError::from_failure(&failure));
        }
    };
    record_metrics(state, &engine.providers, &started.failed_attempts);
    let provider = started.provider.clone();
    let model = format!("{}/{}", started.provider, started.model);
    let price = targets
        .iter()
        .find(|t| t.name == started.provider)
        .and_then(|t| t.entry.provider.price(&started.model))
        .unwrap_or(aetherflow_domain::Price::FREE);
    let store = Arc::clone(&state.store);
    let metrics = state.metrics.clone();
    let metric_model =
        metric_model(&engine.providers, &started.provider, &started.model).to_owned();
    let key = caller.key_id.clone();
    let attempts_before = started.failed_attempts.len();
    let provider_label = started.provider.clone();
    let mut events = started.events;
    let body = async_stream::stream! {
        yield Ok::<_, actix_web::Error>(chunk(&id, created, &model, json!({"role": "assistant", "content": ""}), None));
        let mut usage = None;
        let mut open_calls: Vec<u32> = Vec::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(StreamEvent::Text(t)) => yield Ok(chunk(&id, created, &model, json!({"content": t}), None)),
                Ok(StreamEvent::Reasoning(r)) => yield Ok(chunk(&id, created, &model, json!({"reasoning_content": r}), None)),
                Ok(StreamEvent::ToolCall { index, id: call_id, name, arguments }) => {
                    let mut call = json!({"index": index, "function": {"arguments": arguments}});
                    if !open_calls.contains(&index) {
                        open_calls.push(index);
                        call["id"] = json!(call_id.unwrap_or_else(|| format!("call_{index}")));
                        call["type"] = json!("function");
                        call["function"]["name"] = json!(name.unwrap_or_default());
                    }
                    yield Ok(chunk(&id, created, &model, json!({"tool_calls": [call]}), None));
                }
                Ok(StreamEvent::Usage(u)) => usage = Some(u),
                Ok(StreamEvent::Finish(reason)) => {
                    yield Ok(chunk(&id, created, &model, json!({}), Some(finish_name(&reason))));
                }
                Err(e) => {
                    let error = json!({"error": {"message": format!("the provider failed mid-stream: {e}"), "type": "api_error", "param": null, "code": "upstream_error"}});
                    yield Ok(web::Bytes::from(format!("data: {error}\n\n")));
                    break;
                }
            }
        }
        drop(events);
        if let Some(m) = &metrics {
            let u = usage.unwrap_or_default();
            let outcome = if usage.is_some() { "ok" } else { "error" };
            m.record_attempt(&provider_label, &metric_model, outcome, u.input_tokens,
                u.output_tokens, u.cost(&price).as_micros());
        }
        if let Some(u) = usage {
            let cost = u.cost(&price).as_micros();
            if cost > 0 && let Err(e) = store.record_key_spend(&key, "chat", cost).await {
                tracing::error!(error = %e, "the key's spend was not stored");
            }
            if include_usage {
                let body = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [], "usage": usage_json(&u)});
                yield Ok(web::Bytes::from(format!("data: {body}\n\n")));
            }
        }
        yield Ok(web::Bytes::from_static(b"data: [DONE]\n\n"));
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header(("x-accel-buffering", "no"))
        .insert_header(("x-aetherflow-provider", provider))
        .insert_header(("x-aetherflow-model", started.model))
        .insert_header(("x-aetherflow-attempts", (attempts_before + 1).to_string()))
        .insert_header(("x-aetherflow-cache", "off"))
        .streaming(body))
}
