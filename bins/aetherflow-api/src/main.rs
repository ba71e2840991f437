//! `aetherflow-api`: AetherFlow over HTTP.
//!
//! Serves liveness (`/health`) and readiness (`/ready`) probes, plan validation, and plan runs
//! (`/v1/runs`, behind API keys with scopes; see the `aetherflow-server` crate), sharing the
//! orchestrator with the CLI. `aetherflow-api keys create|list|revoke` manages the keys;
//! `aetherflow-api healthcheck` probes a running server (the container image's `HEALTHCHECK`,
//! which has no curl or shell). The OpenAI-compatible endpoint is still to come; the server
//! binds to loopback by default.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;

use aetherflow_server::app::AppState;
use aetherflow_server::jobs::{Engine, Jobs};
use aetherflow_server::{Scopes, SqliteStore, Store};

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
    /// Run queued plan runs (needs redis.url and a store shared with the API replicas): take
    /// jobs from the Redis queue API replicas with `queue.enabled` fill, until SIGTERM. Serves
    /// only /health and /ready on server.bind.
    Worker,
    /// Manage API keys (stored hashed in server.data_dir/aetherflow.db).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Debug, clap::Subcommand)]
enum KeysAction {
    /// Create a key and print it once (it is never shown again).
    Create {
        /// A name for people (who or what uses it).
        #[arg(long)]
        name: String,
        /// Scopes, comma-separated: runs:write, runs:read, scan, chat, designer, admin.
        #[arg(long, value_name = "SCOPES", default_value = "runs:write,runs:read")]
        scopes: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys (ids, names, scopes; never the keys).
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id; running servers refuse it within a second.
    Revoke {
        /// The key's id (the 12 hex digits after `afk_`).
        id: String,
    },
}

/// What `/ready` checks, computed at start-up (the sandbox runtime's hashes, the configured
/// providers) and re-checked cheaply per request (the runtime files still exist, the store
/// answers).
#[derive(Clone)]
struct Readiness {
    providers: usize,
    sandbox_runtime: std::path::PathBuf,
    sandbox_error: Option<String>,
    store: Arc<dyn Store>,
    redis: Option<aetherflow_redis::Shared>,
}

impl Readiness {
    fn check(&self, store_ok: bool, redis: Option<&str>) -> (bool, serde_json::Value) {
        let runtime_present = self.sandbox_error.is_none()
            && [
                aetherflow_sandbox::runtime::PYTHON_WASM,
                aetherflow_sandbox::runtime::STDLIB_ZIP,
            ]
            .iter()
            .all(|f| self.sandbox_runtime.join(f).is_file());
        let providers_ok = self.providers > 0;
        let redis_ok = redis.is_none_or(|r| r == "ok");
        let ready = runtime_present && providers_ok && store_ok && redis_ok;
        let mut checks = json!({
            "store": if store_ok { "ok" } else { "unreachable" },
            "sandbox_runtime": if runtime_present { "ok" } else { "missing" },
            "providers": if providers_ok { "ok" } else { "none configured" },
        });
        if redis.is_some() {
            checks["redis"] = json!(if redis_ok { "ok" } else { "unreachable" });
        }
        if !ready {
            let mut fixes = Vec::new();
            if !runtime_present {
                fixes.push("install the sandbox runtime: python3 scripts/fetch-sandbox-runtime.py (or set AETHERFLOW_SANDBOX_RUNTIME)");
            }
            if !store_ok {
                fixes.push("the database in server.data_dir does not answer: check the folder's space and permissions (details in the server log)");
            }
            if !redis_ok {
                fixes.push("Redis (redis.url) does not answer: budgeted calls are refused until it does; check the server and the URL (details in the server log)");
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
    match &args.command {
        Some(Command::Healthcheck { url, timeout_ms }) => {
            return healthcheck(url.as_deref(), &bind, *timeout_ms);
        }
        Some(Command::Keys { action }) => return keys(action, &settings),
        Some(Command::Worker) | None => {}
    }
    let worker_mode = matches!(args.command, Some(Command::Worker));
    if worker_mode && settings.redis.url.is_none() {
        anyhow::bail!(
            "a worker takes its jobs from Redis: set redis.url (AETHERFLOW_REDIS__URL), the same as the API replicas'"
        );
    }
    let _log_guard = aetherflow_bootstrap::logging::init(
        &settings.log,
        &settings.telemetry,
        if worker_mode {
            "aetherflow-worker"
        } else {
            "aetherflow-api"
        },
    )?;
    let keys = environment.keys()?;
    let configured = aetherflow_orchestrator::setup::configured_providers_priced(
        &settings.providers,
        &keys,
        &settings.prices,
    )?;
    let sandbox_config = settings.sandbox.config(&environment.vars);
    let sandbox_error = aetherflow_sandbox::RuntimeFiles::verify(&sandbox_config.runtime_dir)
        .err()
        .map(|e| e.to_string());
    if let Some(e) = &sandbox_error {
        tracing::warn!(error = %e, "the sandbox runtime is not usable: /ready answers 503 and runs are refused");
    }
    // Work runs on a runtime of its own, so plan runs never hold up the HTTP workers.
    let jobs_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("aetherflow-jobs")
        .enable_all()
        .build()
        .context("cannot start the job runtime")?;
    let store = open_store(&settings, &jobs_runtime)?;
    // Provider keys in files (`*_API_KEY_FILE`) rotate without a restart: re-read when a file
    // changes and on SIGHUP. The handler is installed even with no key file, so a SIGHUP never
    // stops the server.
    {
        let _entered = jobs_runtime.enter();
        let reloader = aetherflow_orchestrator::setup::KeyReloader::new(&configured, &keys);
        let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel();
        if !reloader.is_empty() {
            jobs_runtime.spawn(reloader.watch(std::time::Duration::from_secs(5), reload_rx));
        }
        #[cfg(unix)]
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hup) => {
                jobs_runtime.spawn(async move {
                    while hup.recv().await.is_some() {
                        tracing::info!("SIGHUP: re-reading provider key files");
                        let _ = reload_tx.send(());
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler: key files are re-read only when they change")
            }
        }
    }
    // redis.url: budgets, rate limits and breakers shared with every replica and worker. The
    // connection is made on the job runtime, lazily: the server starts while Redis is down, and
    // /ready says so until it answers.
    let shared = {
        let _entered = jobs_runtime.enter();
        aetherflow_orchestrator::setup::shared_state(&settings)?
    };
    if let Some(shared) = &shared {
        // Provider keys refused or rate limited in one replica are avoided by all, and each
        // key's client-side request and token limits hold across replicas and workers.
        let pools: Vec<_> = configured.iter().filter_map(|c| c.keys.clone()).collect();
        let pacer: Arc<dyn aetherflow_providers::keys::SharedPacer> = Arc::new(
            aetherflow_redis::ratelimit::RedisRateLimiter::new(shared.clone()),
        );
        for pool in &pools {
            pool.pace_with(Arc::clone(&pacer));
        }
        let _entered = jobs_runtime.enter();
        aetherflow_redis::keys::RedisKeyStates::new(shared.clone())
            .spawn_sync(pools, std::time::Duration::from_secs(1));
    }
    if let Some(shared) = &shared {
        match jobs_runtime.block_on(shared.ping()) {
            Ok(()) => tracing::info!(redis = shared.display_url(), "shared state on Redis"),
            Err(e) => {
                tracing::warn!(error = %e, "Redis does not answer yet: budgeted calls are refused and /ready answers 503 until it does")
            }
        }
    }
    // With the queue, unfinished runs are the queue's: a dead worker's job is taken over by
    // another, never marked interrupted.
    let queued = worker_mode || settings.queue.enabled;
    let interrupted = if queued {
        0
    } else {
        jobs_runtime.block_on(store.interrupt_unfinished())?
    };
    if interrupted > 0 {
        tracing::warn!(
            runs = interrupted,
            "runs left unfinished by the previous process are marked interrupted"
        );
    }
    let readiness = Readiness {
        providers: if settings.server.offline {
            1
        } else {
            configured.len()
        },
        sandbox_runtime: sandbox_config.runtime_dir.clone(),
        sandbox_error: sandbox_error.clone(),
        store: Arc::clone(&store),
        redis: shared.clone(),
    };
    let metrics = aetherflow_server::metrics::Metrics::new().context("registering metrics")?;
    // Without a usable runtime the engine (which holds the sandbox) is not built at all: the
    // server still starts, /ready answers 503 with the fix, and runs are refused.
    let engine = match &sandbox_error {
        Some(_) => None,
        None => engine(&settings, &configured, sandbox_config, shared.as_ref())?,
    };
    let jobs = match (&sandbox_error, engine) {
        (Some(e), _) => Err(format!("the sandbox runtime is not usable ({e}); install it with python3 scripts/fetch-sandbox-runtime.py")),
        (None, None) => Err("no provider is configured: set a provider key (e.g. DEEPSEEK_API_KEY) or server.offline = true".to_owned()),
        (None, Some(engine)) => Ok(Jobs::new(
            engine,
            Arc::clone(&store),
            jobs_runtime.handle().clone(),
            settings.server.workers,
            settings.server.queue,
        )
        .with_metrics(metrics.clone())
        .with_signals_from(shared.as_ref())),
    };
    let run_queue = shared.as_ref().filter(|_| queued).map(|shared| {
        aetherflow_redis::queue::RedisQueue::new(
            shared.clone(),
            "runs",
            settings.queue.max_len,
            std::time::Duration::from_secs(settings.queue.visibility_secs),
        )
    });
    if worker_mode {
        let jobs = jobs.map_err(|e| anyhow::anyhow!("this worker cannot run plans: {e}"))?;
        let (Some(queue), Some(shared)) = (run_queue, shared.as_ref()) else {
            anyhow::bail!("this worker cannot take jobs: redis.url is not set");
        };
        return run_worker(
            &settings,
            &bind,
            &jobs_runtime,
            jobs,
            queue,
            aetherflow_redis::signals::RedisSignals::new(shared.clone()),
            readiness,
        );
    }
    let jobs = match (jobs, run_queue) {
        (Ok(jobs), Some(queue)) => {
            let _entered = jobs_runtime.enter();
            if let Err(e) = jobs_runtime.block_on(queue.ensure_group()) {
                tracing::warn!(error = %e, "the run queue is not ready yet (Redis does not answer); submissions get 503 until it does");
            }
            tracing::info!(
                max_len = settings.queue.max_len,
                "runs go to the Redis queue for workers"
            );
            Ok(jobs.with_queue(queue))
        }
        (jobs, _) => jobs,
    };
    let listener = TcpListener::bind(&bind)
        .with_context(|| format!("cannot listen on {bind} (server.bind / --bind)"))?;
    let address = listener.local_addr()?;
    let max_body = settings.server.max_body_bytes;
    let limits = aetherflow_server::limits::RateLimits::new(
        std::num::NonZeroU32::new(settings.server.rate_per_minute)
            .context("server.rate_per_minute must be at least 1")?,
        std::num::NonZeroU32::new(settings.server.ip_rate_per_minute)
            .context("server.ip_rate_per_minute must be at least 1")?,
    );
    let limits = match &shared {
        Some(shared) => limits.with_shared(aetherflow_redis::ratelimit::RedisRateLimiter::new(
            shared.clone(),
        )),
        None => limits,
    };
    if shared.is_some() {
        let l = limits.clone();
        metrics.watch_local_decisions("rate_limit", move || l.local_fallbacks());
        if let Ok(jobs) = &jobs {
            let breakers = Arc::clone(&jobs.engine().resilience.breakers);
            metrics.watch_local_decisions("breaker", move || breakers.local_fallbacks());
        }
        let pools: Vec<_> = configured.iter().filter_map(|c| c.keys.clone()).collect();
        metrics.watch_local_decisions("provider_key_limit", move || {
            pools.iter().map(|p| p.local_fallbacks()).sum()
        });
    }
    {
        let limits = limits.clone();
        jobs_runtime.spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                every.tick().await;
                limits.shrink();
            }
        });
    }
    let cors_origins = settings.server.cors_origins.clone();
    let trusted_hosts =
        aetherflow_server::edge::TrustedHosts(settings.server.allowed_hosts.clone());
    if trusted_hosts.0.is_empty() && !address.ip().is_loopback() {
        tracing::warn!(%address, "server.allowed_hosts is empty: any Host header is answered; list the names clients use");
    }
    let state = AppState {
        store: Arc::clone(&store),
        jobs: jobs.clone(),
        max_wait_secs: settings.server.max_wait_secs,
        metrics: Some(metrics.clone()),
    };
    let request_timeout =
        std::time::Duration::from_secs(settings.server.request_timeout_secs.max(1));
    let http_grace = (settings.server.shutdown_grace_secs / 3).max(1);
    let uploads = aetherflow_server::upload::UploadSettings {
        max_bytes: settings.server.upload_max_bytes,
        dir: settings.server.data_dir.join("uploads"),
        provider: settings.server.designer_provider.clone(),
        read_timeout: request_timeout,
    };
    let form_limits = aetherflow_server::app::FormLimits {
        max_bytes: max_body,
        read_timeout: request_timeout,
    };

    let tracing_on = settings.telemetry.otlp_endpoint.is_some();
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(
                    aetherflow_server::limits::middleware,
                ))
                // Outermost but for the edge checks: a request's span covers its limits,
                // metrics and handler. Off (not even installed) without telemetry.
                .wrap(actix_web::middleware::Condition::new(
                    tracing_on,
                    actix_web::middleware::from_fn(aetherflow_server::trace::middleware),
                ))
                .wrap(actix_web::middleware::from_fn(
                    aetherflow_server::metrics::middleware,
                ))
                .wrap(aetherflow_server::edge::cors(&cors_origins))
                .wrap(actix_web::middleware::from_fn(
                    aetherflow_server::edge::trusted_hosts,
                ))
                .wrap(actix_web::middleware::from_fn(
                    aetherflow_server::timeouts::middleware,
                ))
                .wrap(aetherflow_server::app::security_headers())
                .app_data(web::Data::new(
                    aetherflow_server::timeouts::RequestDeadline {
                        request: request_timeout,
                        max_wait: std::time::Duration::from_secs(settings.server.max_wait_secs),
                    },
                ))
                .app_data(web::Data::new(uploads.clone()))
                .app_data(web::Data::new(form_limits.clone()))
                .app_data(web::Data::new(limits.clone()))
                .app_data(web::Data::new(trusted_hosts.clone()))
                .app_data(web::Data::new(metrics.clone()))
                .app_data(web::PayloadConfig::new(max_body))
                .app_data(web::Data::new(readiness.clone()))
                .route("/health", web::get().to(health))
                .route("/healthz", web::get().to(health))
                .route("/ready", web::get().to(ready))
                .route("/v1/plans/validate", web::post().to(validate_plan))
                .configure(aetherflow_server::app::configure(state.clone(), max_body))
        })
        // server.shutdown_grace_secs is the whole stop: a third for HTTP requests in flight
        // (long polls and event streams are cut then), the rest for running work, then a
        // short cancellation; with the default 30 s the process is gone within 33 s, inside
        // the 35 s (compose) and 40 s (Kubernetes) the deployment files allow.
        .shutdown_timeout(http_grace)
        // A client that does not send its request head in time is dropped (slow-loris).
        .client_request_timeout(request_timeout)
        .client_disconnect_timeout(std::time::Duration::from_secs(5))
        .keep_alive(std::time::Duration::from_secs(75))
        .listen(listener)?
        .run();
        // The first line on stdout is the address, so tools and tests can find a port-0 server.
        println!("listening on http://{address}");
        tracing::info!(%address, "aetherflow-api listening");
        server.await
    })?;
    // Stopped (SIGTERM/SIGINT): running work gets the grace period, then is cancelled; what a
    // run finished is in the store either way.
    if let Ok(jobs) = &jobs {
        let grace = std::time::Duration::from_secs(
            settings
                .server
                .shutdown_grace_secs
                .saturating_sub(http_grace),
        );
        jobs_runtime.block_on(async {
            let deadline = tokio::time::Instant::now() + grace;
            while jobs.live_count() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            if jobs.live_count() > 0 {
                tracing::warn!(
                    runs = jobs.live_count(),
                    "grace period over: cancelling running work"
                );
                jobs.cancel_all();
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
                while jobs.live_count() > 0 && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        });
    }
    Ok(())
}

/// `aetherflow-api worker`: takes jobs from the Redis queue until SIGTERM/SIGINT, serving only
/// /health and /ready; then lets held runs finish within the grace period and hands back the
/// rest.
fn run_worker(
    settings: &aetherflow_orchestrator::settings::Settings,
    bind: &str,
    jobs_runtime: &tokio::runtime::Runtime,
    jobs: Jobs,
    queue: aetherflow_redis::queue::RedisQueue,
    signals: aetherflow_redis::signals::RedisSignals,
    readiness: Readiness,
) -> anyhow::Result<()> {
    let grace = std::time::Duration::from_secs(settings.server.shutdown_grace_secs.max(1));
    let options = aetherflow_server::worker::WorkerOptions::named_uniquely(
        settings.queue.worker_concurrency,
        settings.queue.max_deliveries,
        grace,
    );
    if settings.server.store_url.is_none() {
        tracing::warn!(
            data_dir = %settings.server.data_dir.display(),
            "this worker keeps runs in SQLite in server.data_dir: it finds the API's runs only if the API uses the same file (one host); set server.store_url (PostgreSQL) on the API and every worker"
        );
    }
    let worker = aetherflow_server::worker::Worker::new(jobs, queue, signals, options);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = jobs_runtime.spawn(worker.run(shutdown.clone()));
    let listener = TcpListener::bind(bind)
        .with_context(|| format!("cannot listen on {bind} (server.bind / --bind)"))?;
    let address = listener.local_addr()?;
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(readiness.clone()))
                .route("/health", web::get().to(health))
                .route("/healthz", web::get().to(health))
                .route("/ready", web::get().to(ready))
        })
        .workers(1)
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
        println!("listening on http://{address}");
        tracing::info!(%address, "aetherflow-api worker listening (health and readiness only)");
        server.await
    })?;
    shutdown.cancel();
    jobs_runtime
        .block_on(running)
        .context("the worker stopped unexpectedly")?;
    Ok(())
}

/// The store: PostgreSQL when `server.store_url` is set (shared by every replica), else SQLite
/// in `server.data_dir`.
fn open_store(
    settings: &aetherflow_orchestrator::settings::Settings,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(url) = &settings.server.store_url {
        let store = runtime
            .block_on(aetherflow_server::pg::PgStore::connect(
                url,
                settings.server.store_max_connections,
            ))
            .context("opening the database at server.store_url")?;
        tracing::info!(
            database = store.display(),
            "keys, runs and events in PostgreSQL"
        );
        return Ok(Arc::new(store));
    }
    let path = settings.server.data_dir.join("aetherflow.db");
    let store = SqliteStore::open(&path).with_context(|| {
        format!(
            "opening the server database {} (server.data_dir)",
            path.display()
        )
    })?;
    Ok(Arc::new(store))
}

/// What runs are made with, or `None` when no provider is configured (and not offline).
fn engine(
    settings: &aetherflow_orchestrator::settings::Settings,
    configured: &[aetherflow_orchestrator::setup::ConfiguredProvider],
    sandbox_config: aetherflow_sandbox::SandboxConfig,
    shared: Option<&aetherflow_redis::Shared>,
) -> anyhow::Result<Option<Engine>> {
    use aetherflow_orchestrator::{RunOptions, setup};
    let providers = if settings.server.offline {
        use aetherflow_provider::mock::{MockProvider, MockScript};
        let script = match &settings.mock.script {
            Some(path) => MockScript::from_file(path)?,
            None => MockScript::default(),
        };
        let latency = std::time::Duration::from_millis(settings.mock.latency_ms);
        aetherflow_orchestrator::mock_provider_set(MockProvider::new(script, latency))
    } else {
        match setup::provider_set_from(&settings.providers, configured)? {
            Some(set) => set,
            None => return Ok(None),
        }
    };
    let data = &settings.server.data_dir;
    std::fs::create_dir_all(data)
        .with_context(|| format!("creating server.data_dir {}", data.display()))?;
    let ledger_path = data.join("ledger.jsonl");
    let ledger = aetherflow_resilience::ledger::CostLedger::open(&ledger_path)?;
    let budgets = setup::budgets(settings, &ledger_path, shared)?;
    let resilience = setup::resilience(settings, budgets, Some(Arc::new(ledger)), true, shared);
    let mut workspace_roots = Vec::new();
    for root in &settings.server.workspace_roots {
        workspace_roots.push(std::fs::canonicalize(root).with_context(|| {
            format!(
                "server.workspace_roots: {} is not an existing folder",
                root.display()
            )
        })?);
    }
    // The runtime files were verified above; the interpreter (about 20 MB) loads on the first
    // run that checks generated code, so an idle server, or one that only serves the gateway,
    // does not hold it.
    let sandbox = aetherflow_sandbox::Sandbox::lazy(sandbox_config);
    let reviewer = aetherflow_orchestrator::review::ReviewOptions {
        provider: settings.review.provider.clone(),
        fail_open: settings.review.fail_open,
    };
    let budget = settings
        .run
        .budget_usd
        .as_deref()
        .map(aetherflow_domain::Money::parse_usd)
        .transpose()
        .context("run.budget_usd")?;
    let options = RunOptions {
        mode: settings.run.mode,
        concurrency: std::num::NonZeroUsize::new(settings.run.concurrency)
            .unwrap_or(std::num::NonZeroUsize::MIN),
        out_dir: Some(data.join("runs")),
        max_output_tokens: Some(settings.run.max_output_tokens),
        budget,
        apply: Some(aetherflow_orchestrator::apply::ApplyMode::Write),
        sandbox: Some((sandbox, settings.sandbox.limits())),
        review: (settings.review.enabled
            || settings.run.mode == aetherflow_domain::run::Mode::DoubleCheck)
            .then(|| reviewer.clone()),
        ..RunOptions::default()
    };
    Ok(Some(Engine {
        providers,
        resilience,
        options,
        reviewer,
        limits: settings.context.limits(),
        workspace_roots,
        key_day_cap: settings
            .server
            .key_day_usd
            .as_deref()
            .map(aetherflow_domain::Money::parse_usd)
            .transpose()
            .context("server.key_day_usd")?,
        gateway_groups: settings.gateway.groups.clone(),
    }))
}

/// `aetherflow-api keys …`.
fn keys(
    action: &KeysAction,
    settings: &aetherflow_orchestrator::settings::Settings,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let store = open_store(settings, &runtime)?;
    runtime.block_on(async {
        match action {
            KeysAction::Create { name, scopes, json } => {
                let scopes = Scopes::parse_list(scopes).map_err(anyhow::Error::msg)?;
                if scopes.0.is_empty() {
                    anyhow::bail!("--scopes is empty: give at least one of runs:write, runs:read, scan, chat, designer, admin");
                }
                let (info, key) = store.create_key(name, &scopes).await?;
                store.audit(None, "key.create", &info.id).await?;
                if *json {
                    println!("{}", json!({"id": info.id, "name": info.name, "scopes": info.scopes, "key": key}));
                } else {
                    println!("{key}");
                    eprintln!(
                        "key {} ({}) created with scopes {}; it is shown only now: store it as a secret",
                        info.id,
                        info.name,
                        info.scopes.to_list()
                    );
                }
            }
            KeysAction::List { json } => {
                let keys = store.list_keys().await?;
                if *json {
                    println!("{}", serde_json::to_string(&keys)?);
                } else {
                    for k in keys {
                        let state = match k.revoked_at {
                            Some(t) => format!("revoked {}", t.format("%Y-%m-%d %H:%M")),
                            None => "active".to_owned(),
                        };
                        println!("{}  {:<20} {:<32} {state}", k.id, k.name, k.scopes.to_list());
                    }
                }
            }
            KeysAction::Revoke { id } => {
                if !store.revoke_key(id).await? {
                    anyhow::bail!("no active key {id} (see `aetherflow-api keys list`)");
                }
                store.audit(None, "key.revoke", id).await?;
                println!("revoked {id}");
            }
        }
        anyhow::Ok(())
    })
}

/// Liveness: the process serves HTTP. Reveals nothing else.
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Readiness: able to take work (sandbox runtime present, a provider configured); 503 with
/// what to fix otherwise.
async fn ready(readiness: web::Data<Readiness>) -> HttpResponse {
    let store_ok = match readiness.store.ping().await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "the store does not answer");
            false
        }
    };
    let redis = match &readiness.redis {
        None => None,
        Some(shared) => Some(match shared.ping().await {
            Ok(()) => "ok",
            Err(e) => {
                tracing::error!(error = %e, "Redis does not answer");
                "unreachable"
            }
        }),
    };
    let (ok, checks) = readiness.check(store_ok, redis);
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
async fn validate_plan(
    _caller: aetherflow_server::auth::Caller,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, aetherflow_server::error::ApiError> {
    use aetherflow_server::error::ApiError;
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
        return Err(ApiError {
            status: 415,
            code: "unsupported_media_type",
            message: format!(
                "content type `{content_type}` is not a plan: send application/json or application/yaml"
            ),
            retry_after: None,
        });
    };
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("the body is not UTF-8 text"))?;
    Ok(match load_plan(text, format) {
        Ok(plan) => HttpResponse::Ok().content_type(ContentType::json()).json(json!({
            "valid": true,
            "task_id": plan.plan().task_id,
            "steps": plan.steps().len(),
            "levels": plan.levels().iter().map(|l| l.iter().map(|&i| plan.steps()[i].id.as_str()).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "warnings": plan.warnings(),
        })),
        // The usual error shape, plus where the problem is.
        Err(e) => HttpResponse::UnprocessableEntity().json(json!({
            "valid": false,
            "error": {"code": "invalid", "message": e.to_string()},
            "position": e.position().map(|(line, column)| json!({"line": line, "column": column})),
        })),
    })
}
