//! Runs submitted over HTTP, executed in the background by a bounded pool of workers: each is
//! recorded in the store when submitted, updated after every workflow pass, and its progress
//! events are appended to the store (so a client can resume them) and broadcast live. A full
//! queue refuses new runs (503 with `Retry-After`) instead of growing without bound.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aetherflow_domain::Money;
use aetherflow_domain::plan::ValidPlan;
use aetherflow_domain::run::{Mode, RunStatus, Workflow};
use aetherflow_orchestrator::review::ReviewOptions;
use aetherflow_orchestrator::workspace::{ContextLimits, Workspace};
use aetherflow_orchestrator::{
    EventSink, Orchestrator, ProviderSet, Resilience, RunOptions, WorkflowRun,
};
use aetherflow_resilience::budget::Scope;
use chrono::Utc;
use tokio::sync::{Semaphore, broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::ApiError;
use crate::store::{RunRecord, RunState, Store};

/// What runs are made with: shared by every job.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The providers (or the offline mock).
    pub providers: ProviderSet,
    /// Retries, breakers, budgets, fallbacks, ledger, cache.
    pub resilience: Resilience,
    /// The base options (mode, apply, sandbox, review, run folders) a request adjusts.
    pub options: RunOptions,
    /// Who double-checks in the PROTO and PROD workflows.
    pub reviewer: ReviewOptions,
    /// Context-file limits.
    pub limits: ContextLimits,
    /// Folders runs may work in (canonical); a request names one of them or a folder inside.
    pub workspace_roots: Vec<PathBuf>,
    /// Cap on each API key's spend per UTC day.
    pub key_day_cap: Option<Money>,
    /// The gateway's configured routing groups (`aetherflow/<name>` → targets).
    pub gateway_groups: std::collections::BTreeMap<String, Vec<String>>,
}

/// A run request, checked.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The plan.
    pub plan: Arc<ValidPlan>,
    /// The workflow.
    pub workflow: Workflow,
    /// The mode, when the request sets one.
    pub mode: Option<Mode>,
    /// The workspace: a configured root, or a folder inside one (relative to the first root).
    pub workspace: Option<String>,
    /// A cap on this run's spend.
    pub budget: Option<Money>,
    /// Print nothing to the workspace: diffs only.
    pub dry_run: bool,
    /// The submitting key.
    pub key_id: Option<String>,
}

struct Live {
    cancel: CancellationToken,
    state: watch::Sender<RunState>,
    events: broadcast::Sender<(u64, String)>,
}

/// The background runner.
#[derive(Clone)]
pub struct Jobs {
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    runtime: tokio::runtime::Handle,
    workers: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    live: Arc<Mutex<HashMap<String, Live>>>,
    metrics: Option<crate::metrics::Metrics>,
    signals: Option<aetherflow_redis::signals::RedisSignals>,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("workers", &self.workers.available_permits())
            .field("waiting", &self.waiting.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn no_roots() -> ApiError {
    ApiError::bad_request(
        "this server has no workspace: set server.workspace_roots in its configuration",
    )
}

/// Live views of one run: its state and its events as they happen.
pub struct Subscription {
    /// The run's state; changes when it starts and ends.
    pub state: watch::Receiver<RunState>,
    /// `(sequence number, event JSON)` as they happen.
    pub events: broadcast::Receiver<(u64, String)>,
}

impl Jobs {
    /// A runner with `workers` runs at once and up to `queue` more waiting, executing on
    /// `runtime` (a multi-threaded runtime of its own, so runs never block HTTP workers).
    pub fn new(
        engine: Engine,
        store: Arc<dyn Store>,
        runtime: tokio::runtime::Handle,
        workers: usize,
        queue: usize,
    ) -> Self {
        Jobs {
            engine: Arc::new(engine),
            store,
            runtime,
            workers: Arc::new(Semaphore::new(workers.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting: queue,
            live: Arc::new(Mutex::new(HashMap::new())),
            metrics: None,
            signals: None,
        }
    }

    /// As [`Jobs::with_signals`] when there is a shared Redis.
    #[must_use]
    pub fn with_signals_from(self, shared: Option<&aetherflow_redis::Shared>) -> Self {
        match shared {
            Some(shared) => {
                self.with_signals(aetherflow_redis::signals::RedisSignals::new(shared.clone()))
            }
            None => self,
        }
    }

    /// Lets cancellations travel between replicas through Redis.
    #[must_use]
    pub fn with_signals(mut self, signals: aetherflow_redis::signals::RedisSignals) -> Self {
        self.signals = Some(signals);
        self
    }

    /// What runs are made with (providers, resilience), for calls outside runs.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// How a call outside runs (`label`: `chat`, `designer`) made for `key` is accounted: to
    /// that key in the ledger, and against its daily cap when one is configured.
    pub async fn call_options(
        &self,
        label: &str,
        key: &str,
    ) -> aetherflow_orchestrator::call::CallOptions {
        let day = match self.engine.key_day_cap {
            Some(cap) => Some(self.key_day_scope(key, cap).await),
            None => None,
        };
        aetherflow_orchestrator::call::CallOptions {
            label: label.to_owned(),
            caller: Some(key.to_owned()),
            extra_scopes: day.into_iter().collect(),
            ..Default::default()
        }
    }

    /// Counts runs, provider attempts, tokens and spend in `metrics`.
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// A file a request names (e.g. `/execute`'s `plan_path`), relative to the first workspace
    /// root or absolute, which must lie inside a root.
    pub fn file_inside_roots(&self, wanted: &str) -> Result<PathBuf, ApiError> {
        self.inside_roots(wanted, false)
    }

    /// `path` shown relative to the workspace root that holds it (never a server path).
    pub fn relative_to_roots(&self, path: &Path) -> String {
        self.engine
            .workspace_roots
            .iter()
            .find_map(|root| path.strip_prefix(root).ok())
            .map(|p| {
                let shown = p.to_string_lossy().into_owned();
                if shown.is_empty() {
                    ".".to_owned()
                } else {
                    shown
                }
            })
            .unwrap_or_else(|| ".".to_owned())
    }

    /// The workspace a request names (default: the first root), inside a configured root.
    pub fn workspace(&self, wanted: Option<&str>) -> Result<PathBuf, ApiError> {
        match wanted {
            Some(wanted) => self.inside_roots(wanted, true),
            None => self
                .engine
                .workspace_roots
                .first()
                .cloned()
                .ok_or_else(no_roots),
        }
    }

    /// `wanted` (relative to the first root, or absolute), resolved through symlinks, when it
    /// is an existing folder (`dir`) or file inside one of the roots.
    fn inside_roots(&self, wanted: &str, dir: bool) -> Result<PathBuf, ApiError> {
        let first = self.engine.workspace_roots.first().ok_or_else(no_roots)?;
        let candidate = Path::new(wanted);
        let joined = if candidate.is_absolute() {
            candidate.to_path_buf()
        } else {
            first.join(candidate)
        };
        let outside = || {
            ApiError::bad_request(format!(
                "`{wanted}` is not a {} inside the server's workspace roots",
                if dir { "folder" } else { "file" }
            ))
        };
        let canonical = std::fs::canonicalize(&joined).map_err(|_| outside())?;
        let right_kind = if dir {
            canonical.is_dir()
        } else {
            canonical.is_file()
        };
        if right_kind
            && self
                .engine
                .workspace_roots
                .iter()
                .any(|root| canonical.starts_with(root))
        {
            Ok(canonical)
        } else {
            Err(outside())
        }
    }

    /// Records the run and queues it; 503 when the queue is full.
    pub async fn submit(&self, submission: Submission) -> Result<RunRecord, ApiError> {
        let workspace_dir = self.workspace(submission.workspace.as_deref())?;
        let workspace = Workspace::open(&workspace_dir, self.engine.limits)
            .map_err(|e| ApiError::bad_request(format!("workspace: {e}")))?;
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::busy(
                format!(
                    "{} runs are already waiting; try again shortly",
                    self.max_waiting
                ),
                5,
            ));
        }
        let mode = submission.mode.unwrap_or(self.engine.options.mode);
        let record = RunRecord {
            id: uuid::Uuid::now_v7().to_string(),
            key_id: submission.key_id.clone(),
            task_id: submission.plan.plan().task_id.to_string(),
            status: RunState::Queued,
            workflow: submission.workflow.as_str().to_owned(),
            mode: mode.as_str().to_owned(),
            created_at: Utc::now(),
            finished_at: None,
            reports: Vec::new(),
            error: None,
        };
        if let Err(e) = self.store.insert_run(&record).await {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(e.into());
        }
        let cancel = CancellationToken::new();
        let (state, _) = watch::channel(RunState::Queued);
        // Small: a reader that falls behind catches up from the store (events are stored
        // first), and every queued run holds one of these.
        let (events, _) = broadcast::channel(64);
        if let Ok(mut live) = self.live.lock() {
            live.insert(
                record.id.clone(),
                Live {
                    cancel: cancel.clone(),
                    state: state.clone(),
                    events: events.clone(),
                },
            );
        }
        if let Some(m) = &self.metrics {
            m.run_started();
        }
        let job = self.clone();
        let run = record.clone();
        // The job continues the submitting request's trace; each workflow pass's engine run is
        // its child.
        let span = tracing::debug_span!(
            "job",
            otel.name = "run job",
            run.id = %record.id,
            run.workflow = ?submission.workflow,
        );
        // With shared signals, a cancellation asked of another replica reaches this run.
        let done = CancellationToken::new();
        if let Some(signals) = self.signals.clone() {
            let (id, cancel, done) = (record.id.clone(), cancel.clone(), done.clone());
            self.runtime.spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
                loop {
                    tokio::select! {
                        () = done.cancelled() => return,
                        _ = every.tick() => {}
                    }
                    if matches!(signals.cancel_requested(&id).await, Ok(true)) {
                        tracing::info!(run = %id, "cancelled through another replica");
                        cancel.cancel();
                        return;
                    }
                }
            });
        }
        self.runtime.spawn(
            async move {
                job.execute(run, submission, mode, workspace, cancel, state, events)
                    .await;
                done.cancel();
            }
            .instrument(span),
        );
        Ok(record)
    }

    /// Asks a run to stop wherever it runs: here at once, or, with shared signals (Redis), in the
    /// replica that holds it (within a second). False when it is not live here and there is no
    /// way to reach another replica.
    pub async fn cancel_anywhere(&self, id: &str) -> bool {
        if self.cancel(id) {
            return true;
        }
        match &self.signals {
            Some(signals) => match signals.request_cancel(id).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(run = id, error = %e, "cancellation not passed on");
                    false
                }
            },
            None => false,
        }
    }

    /// Asks a queued or running run to stop; false when it is not live here.
    pub fn cancel(&self, id: &str) -> bool {
        match self
            .live
            .lock()
            .ok()
            .and_then(|l| l.get(id).map(|x| x.cancel.clone()))
        {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Live views of a run still queued or running here.
    pub fn subscribe(&self, id: &str) -> Option<Subscription> {
        let live = self.live.lock().ok()?;
        let l = live.get(id)?;
        Some(Subscription {
            state: l.state.subscribe(),
            events: l.events.subscribe(),
        })
    }

    /// Cancels every live run (shutdown).
    pub fn cancel_all(&self) {
        if let Ok(live) = self.live.lock() {
            for l in live.values() {
                l.cancel.cancel();
            }
        }
    }

    /// Runs still queued or running.
    pub fn live_count(&self) -> usize {
        self.live.lock().map(|l| l.len()).unwrap_or(0)
    }

    #[allow(clippy::too_many_arguments)]
    async fn execute(
        &self,
        mut record: RunRecord,
        submission: Submission,
        mode: Mode,
        workspace: Workspace,
        cancel: CancellationToken,
        state: watch::Sender<RunState>,
        events: broadcast::Sender<(u64, String)>,
    ) {
        let permit = tokio::select! {
            permit = Arc::clone(&self.workers).acquire_owned() => permit.ok(),
            () = cancel.cancelled() => None,
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        if permit.is_none() {
            record.status = RunState::Cancelled;
        } else {
            record.status = RunState::Running;
            let _ = state.send(RunState::Running);
            self.save(&record).await;
            record.status = self
                .run_passes(&mut record, submission, mode, workspace, &cancel, &events)
                .await;
        }
        drop(permit);
        record.finished_at = Some(Utc::now());
        self.save(&record).await;
        if let Ok(mut live) = self.live.lock() {
            live.remove(&record.id);
        }
        let _ = state.send(record.status);
        if let Some(m) = &self.metrics {
            m.run_finished(record.status.as_str());
        }
        tracing::info!(run = %record.id, status = record.status.as_str(), "API run finished");
    }

    async fn run_passes(
        &self,
        record: &mut RunRecord,
        submission: Submission,
        mode: Mode,
        workspace: Workspace,
        cancel: &CancellationToken,
        events: &broadcast::Sender<(u64, String)>,
    ) -> RunState {
        let engine = &self.engine;
        let orchestrator = Orchestrator::new(engine.providers.clone(), workspace)
            .with_resilience(engine.resilience.clone());
        let mut options = engine.options.clone();
        options.mode = mode;
        if submission.budget.is_some() {
            options.budget = submission.budget;
        }
        if submission.dry_run {
            options.apply = Some(aetherflow_orchestrator::apply::ApplyMode::DryRun);
        }
        if let (Some(cap), Some(key)) = (engine.key_day_cap, &submission.key_id) {
            options
                .extra_scopes
                .push(self.key_day_scope(key, cap).await);
        }
        let mut passes = WorkflowRun::new(submission.workflow, options, engine.reviewer.clone());
        let mut seq = 0u64;
        while let Some((_, options)) = passes.next_pass() {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let run = orchestrator.run(
                Arc::clone(&submission.plan),
                &options,
                EventSink::new(tx),
                cancel.clone(),
            );
            let forward = async {
                while let Some(event) = rx.recv().await {
                    seq += 1;
                    let Ok(json) = serde_json::to_string(&event) else {
                        continue;
                    };
                    if let Err(e) = self.store.append_event(&record.id, seq, &json).await {
                        tracing::warn!(run = %record.id, error = %e, "event not stored");
                    }
                    let _ = events.send((seq, json));
                }
            };
            let (outcome, ()) = tokio::join!(run, forward);
            match outcome {
                Ok(outcome) => {
                    let report =
                        serde_json::to_value(&outcome.report).unwrap_or(serde_json::Value::Null);
                    if let Some(m) = &self.metrics {
                        m.record_report(&report);
                    }
                    record.reports.push(report);
                    self.save(record).await;
                    passes.record(outcome);
                }
                Err(e) => {
                    record.error = Some(e.to_string());
                    return RunState::Failed;
                }
            }
        }
        match passes.finish().status() {
            RunStatus::Succeeded => RunState::Succeeded,
            RunStatus::Failed => RunState::Failed,
            RunStatus::Cancelled => RunState::Cancelled,
        }
    }

    /// The budget scope of `key`'s spend today, capped; seeded once from the store, so the cap
    /// holds across restarts.
    async fn key_day_scope(&self, key: &str, cap: Money) -> Scope {
        let now = Utc::now();
        let scope = Scope::ApiKey(format!("{key}@{}", now.format("%Y-%m-%d")));
        let budgets = &self.engine.resilience.budgets;
        if budgets.spend(&scope).cap.is_none() {
            let midnight = now
                .date_naive()
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc())
                .unwrap_or(now);
            match self.store.key_spend_since(key, midnight).await {
                Ok(spent) => budgets.seed(scope.clone(), Money::from_micros(spent)),
                Err(e) => tracing::error!(key, error = %e, "today's spend of the key not read"),
            }
            budgets.set_cap(scope.clone(), Some(cap));
        }
        scope
    }

    async fn save(&self, record: &RunRecord) {
        if let Err(e) = self.store.update_run(record).await {
            tracing::error!(run = %record.id, error = %e, "run state not stored");
        }
    }
}
