//! Runs submitted over HTTP, executed in the background by a bounded pool of workers: each is
//! recorded in the store when submitted, updated after every workflow pass, and its progress
//! events are appended to the store (so a client can resume them) and broadcast live. A full
//! queue refuses new runs (503 with `Retry-After`) instead of growing without bound.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aetherflow_domain::Money;
use aetherflow_domain::plan::{Plan, PlanWarning, ValidPlan};
use aetherflow_domain::run::{Mode, RunStatus, Workflow};
use aetherflow_orchestrator::journal::{FinishedStep, StepJournal};
use aetherflow_orchestrator::review::ReviewOptions;
use aetherflow_orchestrator::workspace::{ContextLimits, Workspace};
use aetherflow_orchestrator::{
    EventSink, Orchestrator, ProviderSet, Resilience, RunOptions, WorkflowRun,
};
use aetherflow_redis::events::RedisEvents;
use aetherflow_redis::queue::{Enqueued, RedisQueue};
use aetherflow_resilience::budget::Scope;
use chrono::Utc;
use serde::{Deserialize, Serialize};
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

/// A queued run as it travels to a worker (the payload on the Redis stream).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobMessage {
    /// The format's version.
    pub v: u32,
    /// The run's record in the store.
    pub run_id: String,
    /// The plan, as validated at submission.
    pub plan: Plan,
    /// What validation warned about (the report lists them).
    #[serde(default)]
    pub warnings: Vec<PlanWarning>,
    /// The workflow.
    pub workflow: Workflow,
    /// The mode.
    pub mode: Mode,
    /// The workspace the request named (relative to the first root, or absolute).
    pub workspace: Option<String>,
    /// A cap on the run's spend, in micro-dollars.
    pub budget_micros: Option<u64>,
    /// Diffs only.
    pub dry_run: bool,
    /// The submitting key.
    pub key_id: Option<String>,
    /// The submitting request's W3C trace context (`traceparent`, `tracestate`), so the run's
    /// spans continue its trace.
    #[serde(default)]
    pub trace: HashMap<String, String>,
}

impl JobMessage {
    /// The submission this message carries, its plan validated again.
    pub fn submission(&self) -> Result<Submission, String> {
        let plan = self
            .plan
            .clone()
            .validate()
            .map_err(|e| format!("the queued plan is not valid: {e}"))?
            .with_warnings(self.warnings.clone());
        Ok(Submission {
            plan: Arc::new(plan),
            workflow: self.workflow,
            mode: Some(self.mode),
            workspace: self.workspace.clone(),
            budget: self.budget_micros.map(Money::from_micros),
            dry_run: self.dry_run,
            key_id: self.key_id.clone(),
        })
    }
}

/// How a run taken from the queue ended in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// It ended (or had already ended) with this state, recorded in the store.
    Finished(RunState),
    /// This process stopped it before its end (shutting down, or the job went to another
    /// worker): the steps it finished are recorded, the rest is for whoever takes it next.
    Stopped,
}

/// Records each finished step of one pass of a run in the store.
struct StoreJournal {
    store: Arc<dyn Store>,
    run_id: String,
    pass: u32,
}

impl std::fmt::Debug for StoreJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreJournal")
            .field("run_id", &self.run_id)
            .field("pass", &self.pass)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl StepJournal for StoreJournal {
    async fn record(&self, step: &FinishedStep) -> Result<(), String> {
        let json = serde_json::to_string(step).map_err(|e| e.to_string())?;
        self.store
            .record_step(&self.run_id, self.pass, step.report.id.as_str(), &json)
            .await
            .map_err(|e| e.to_string())
    }

    async fn prepare(&self, step: &FinishedStep) -> Result<(), String> {
        let json = serde_json::to_string(step).map_err(|e| e.to_string())?;
        self.store
            .record_step(
                &self.run_id,
                self.pass,
                &format!("{}{PREPARED}", step.report.id),
                &json,
            )
            .await
            .map_err(|e| e.to_string())
    }
}

/// Marks a journal entry of a step checked and about to be applied (step ids cannot hold `#`).
const PREPARED: &str = "#prepared";

/// Where a run picks up: steps finished by an earlier attempt (by pass), and the number of its
/// last stored event.
#[derive(Default)]
struct Resume {
    finished: HashMap<u32, aetherflow_orchestrator::journal::Finished>,
    last_seq: u64,
    journal: bool,
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
    queue: Option<RedisQueue>,
    bus: Option<RedisEvents>,
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
            queue: None,
            bus: None,
        }
    }

    /// Sends submitted runs to `queue` for workers, instead of running them here.
    #[must_use]
    pub fn with_queue(mut self, queue: RedisQueue) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Whether submitted runs go to a queue (and run in workers).
    pub fn queued(&self) -> bool {
        self.queue.is_some()
    }

    /// Publishes the events of the runs executing here on Redis, for followers on other
    /// replicas.
    #[must_use]
    pub fn with_event_bus(mut self, bus: RedisEvents) -> Self {
        self.bus = Some(bus);
        self
    }

    /// The Redis event streams, when there are any.
    pub fn event_bus(&self) -> Option<&RedisEvents> {
        self.bus.as_ref()
    }

    /// The store runs are recorded in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// As [`Jobs::with_signals`] and [`Jobs::with_event_bus`] when there is a shared Redis.
    #[must_use]
    pub fn with_signals_from(self, shared: Option<&aetherflow_redis::Shared>) -> Self {
        match shared {
            Some(shared) => self
                .with_signals(aetherflow_redis::signals::RedisSignals::new(shared.clone()))
                .with_event_bus(RedisEvents::new(shared.clone())),
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

    /// Records the run and queues it (here, or for workers on the Redis queue); 503 with
    /// `Retry-After` when the queue is full.
    pub async fn submit(&self, submission: Submission) -> Result<RunRecord, ApiError> {
        let workspace_dir = self.workspace(submission.workspace.as_deref())?;
        let workspace = Workspace::open(&workspace_dir, self.engine.limits)
            .map_err(|e| ApiError::bad_request(format!("workspace: {e}")))?;
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
        if let Some(queue) = &self.queue {
            return self.enqueue(queue, record, &submission, mode).await;
        }
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
        if let Err(e) = self.store.insert_run(&record).await {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(e.into());
        }
        let (cancel, state, events) = self.go_live(&record.id);
        if let Some(m) = &self.metrics {
            m.run_started();
        }
        let job = self.clone();
        let run = record.clone();
        // The job continues the submitting request's trace; each workflow pass's engine run is
        // its child.
        let span = job_span(&record.id, submission.workflow);
        let done = self.watch_cancel(&record.id, &cancel);
        self.runtime.spawn(
            async move {
                job.execute(
                    run,
                    submission,
                    mode,
                    workspace,
                    cancel,
                    state,
                    events,
                    Resume::default(),
                )
                .await;
                done.cancel();
            }
            .instrument(span),
        );
        Ok(record)
    }

    /// Records the run and puts it on the Redis queue for a worker, carrying the current trace.
    async fn enqueue(
        &self,
        queue: &RedisQueue,
        mut record: RunRecord,
        submission: &Submission,
        mode: Mode,
    ) -> Result<RunRecord, ApiError> {
        let full = || {
            ApiError::busy(
                format!(
                    "{} runs are already queued; try again shortly",
                    queue.max_len()
                ),
                5,
            )
        };
        let unavailable = |e: String| {
            tracing::error!(error = %e, "run not queued: Redis does not answer");
            ApiError::busy(
                "the run queue (Redis) does not answer; try again shortly",
                5,
            )
        };
        // Checked before anything is recorded; the enqueue itself checks again, atomically.
        match queue.len().await {
            Ok(n) if n >= queue.max_len() => return Err(full()),
            Ok(_) => {}
            Err(e) => return Err(unavailable(e)),
        }
        let message = JobMessage {
            v: 1,
            run_id: record.id.clone(),
            plan: submission.plan.plan().clone(),
            warnings: submission.plan.warnings().to_vec(),
            workflow: submission.workflow,
            mode,
            workspace: submission.workspace.clone(),
            budget_micros: submission.budget.map(Money::as_micros),
            dry_run: submission.dry_run,
            key_id: submission.key_id.clone(),
            trace: crate::trace::current_context(),
        };
        let payload = serde_json::to_string(&message).map_err(ApiError::internal)?;
        self.store.insert_run(&record).await?;
        let refused = match queue.enqueue(&payload).await {
            Ok(Enqueued::Accepted(_)) => return Ok(record),
            Ok(Enqueued::Full) => full(),
            Err(e) => unavailable(e),
        };
        // Filled up between the check and the enqueue: the record says so.
        record.status = RunState::Failed;
        record.error = Some("not queued: the run queue was full or unreachable".into());
        record.finished_at = Some(Utc::now());
        self.save(&record).await;
        Err(refused)
    }

    /// Runs a job taken from the queue, picking up where an earlier attempt stopped: steps it
    /// recorded as finished are restored, not run again. Stops early (without recording an end)
    /// when `stop` fires — the worker is shutting down, or the job went to another worker.
    pub async fn run_claimed(
        &self,
        message: &JobMessage,
        stop: CancellationToken,
    ) -> Result<Claimed, String> {
        let Some(mut record) = self
            .store
            .run(&message.run_id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Err(format!("run {} is not in the store", message.run_id));
        };
        if record.status.is_final() && record.status != RunState::Interrupted {
            return Ok(Claimed::Finished(record.status));
        }
        let prepared = message.submission().and_then(|submission| {
            let dir = self
                .workspace(submission.workspace.as_deref())
                .map_err(|e| e.to_string())?;
            let workspace =
                Workspace::open(&dir, self.engine.limits).map_err(|e| format!("workspace: {e}"))?;
            Ok((submission, workspace))
        });
        let (submission, workspace) = match prepared {
            Ok(ready) => ready,
            Err(e) => {
                self.end_unstarted(&mut record, RunState::Failed, Some(e))
                    .await?;
                return Ok(Claimed::Finished(RunState::Failed));
            }
        };
        let mut resume = Resume {
            journal: true,
            last_seq: self
                .store
                .last_event_seq(&record.id)
                .await
                .map_err(|e| e.to_string())?,
            ..Resume::default()
        };
        for (pass, step, json) in self
            .store
            .finished_steps(&record.id)
            .await
            .map_err(|e| e.to_string())?
        {
            match serde_json::from_str::<FinishedStep>(&json) {
                // A finished record wins over the step's prepared one.
                Ok(done) if done.report.id.as_str() == step && done.is_final() => {
                    Arc::make_mut(resume.finished.entry(pass).or_default())
                        .insert(done.report.id.clone(), done);
                }
                Ok(prepared)
                    if prepared.is_prepared()
                        && step.strip_suffix(PREPARED) == Some(prepared.report.id.as_str()) =>
                {
                    Arc::make_mut(resume.finished.entry(pass).or_default())
                        .entry(prepared.report.id.clone())
                        .or_insert(prepared);
                }
                _ => {
                    tracing::warn!(run = %record.id, step, "a recorded step is unreadable: it runs again")
                }
            }
        }
        if !resume.finished.is_empty() {
            tracing::info!(run = %record.id, steps = resume.finished.values().map(|f| f.len()).sum::<usize>(), "resuming a run an earlier worker began");
        }
        // The passes are reported again as they run (restored steps as they ended).
        record.reports.clear();
        record.error = None;
        record.finished_at = None;
        let mode = message.mode;
        let (cancel, state, events) = self.go_live(&record.id);
        let done = self.watch_cancel(&record.id, &cancel);
        // The engine stops on a cancellation (the user's) or a stop (this worker's).
        let halt = CancellationToken::new();
        {
            let (halt, cancel, stop) = (halt.clone(), cancel.clone(), stop.clone());
            self.runtime.spawn(async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = stop.cancelled() => {}
                }
                halt.cancel();
            });
        }
        if let Some(m) = &self.metrics {
            m.run_started();
        }
        record.status = RunState::Running;
        let _ = state.send(RunState::Running);
        self.save(&record).await;
        let status = self
            .run_passes(
                &mut record,
                submission,
                mode,
                workspace,
                &halt,
                &events,
                &resume,
            )
            .await;
        done.cancel();
        halt.cancel();
        if let Ok(mut live) = self.live.lock() {
            live.remove(&record.id);
        }
        if let Some(m) = &self.metrics {
            m.run_finished(if stop.is_cancelled() && !cancel.is_cancelled() {
                "handed_back"
            } else {
                status.as_str()
            });
        }
        if stop.is_cancelled() && !cancel.is_cancelled() {
            // Not this process's to end: whoever takes the job next finishes it.
            let _ = state.send(RunState::Queued);
            return Ok(Claimed::Stopped);
        }
        record.status = status;
        record.finished_at = Some(Utc::now());
        // The job is acknowledged only once this is stored: if it is not, the job is
        // delivered again and the next worker ends the run from the journal.
        self.store_end(&record).await?;
        let _ = state.send(record.status);
        tracing::info!(run = %record.id, status = record.status.as_str(), "queued run finished");
        Ok(Claimed::Finished(record.status))
    }

    /// Ends a queued run that will not run (`status`: cancelled before it started, or failed),
    /// recording `error`.
    pub async fn end_unstarted(
        &self,
        record: &mut RunRecord,
        status: RunState,
        error: Option<String>,
    ) -> Result<(), String> {
        record.status = status;
        record.error = error;
        record.finished_at = Some(Utc::now());
        self.store_end(record).await
    }

    /// Stores an ended run, then tells followers on other replicas; `Err` when it was not
    /// stored (the caller must not acknowledge its job).
    async fn store_end(&self, record: &RunRecord) -> Result<(), String> {
        self.store
            .update_run(record)
            .await
            .map_err(|e| format!("the run's end was not stored: {e}"))?;
        self.publish_end(record).await;
        Ok(())
    }

    /// Marks a run handed back to the queue as waiting again.
    pub async fn requeued(&self, run_id: &str) {
        if let Ok(Some(mut record)) = self.store.run(run_id).await
            && !record.status.is_final()
        {
            record.status = RunState::Queued;
            self.save(&record).await;
        }
    }

    /// Tells followers on other replicas that the run ended.
    async fn publish_end(&self, record: &RunRecord) {
        if let Some(bus) = &self.bus
            && let Err(e) = bus.finish(&record.id, record.status.as_str()).await
        {
            tracing::warn!(run = %record.id, error = %e, "the end of the run not published: followers elsewhere see it within a second");
        }
    }

    /// Registers a run as live here: its cancellation, state and event channels.
    fn go_live(
        &self,
        id: &str,
    ) -> (
        CancellationToken,
        watch::Sender<RunState>,
        broadcast::Sender<(u64, String)>,
    ) {
        let cancel = CancellationToken::new();
        let (state, _) = watch::channel(RunState::Queued);
        // Small: a reader that falls behind catches up from the store (events are stored
        // first), and every queued run holds one of these.
        let (events, _) = broadcast::channel(64);
        if let Ok(mut live) = self.live.lock() {
            live.insert(
                id.to_owned(),
                Live {
                    cancel: cancel.clone(),
                    state: state.clone(),
                    events: events.clone(),
                },
            );
        }
        (cancel, state, events)
    }

    /// With shared signals, a cancellation asked of another replica reaches this run (checked
    /// every second until the returned token is cancelled).
    fn watch_cancel(&self, id: &str, cancel: &CancellationToken) -> CancellationToken {
        let done = CancellationToken::new();
        if let Some(signals) = self.signals.clone() {
            let (id, cancel, done) = (id.to_owned(), cancel.clone(), done.clone());
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
        done
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
        resume: Resume,
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
                .run_passes(
                    &mut record,
                    submission,
                    mode,
                    workspace,
                    &cancel,
                    &events,
                    &resume,
                )
                .await;
        }
        drop(permit);
        record.finished_at = Some(Utc::now());
        self.save(&record).await;
        self.publish_end(&record).await;
        if let Ok(mut live) = self.live.lock() {
            live.remove(&record.id);
        }
        let _ = state.send(record.status);
        if let Some(m) = &self.metrics {
            m.run_finished(record.status.as_str());
        }
        tracing::info!(run = %record.id, status = record.status.as_str(), "API run finished");
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_passes(
        &self,
        record: &mut RunRecord,
        submission: Submission,
        mode: Mode,
        workspace: Workspace,
        cancel: &CancellationToken,
        events: &broadcast::Sender<(u64, String)>,
        resume: &Resume,
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
        let mut seq = resume.last_seq;
        let mut pass = 0u32;
        while let Some((_, mut options)) = passes.next_pass() {
            if let Some(finished) = resume.finished.get(&pass) {
                options.resume = Arc::clone(finished);
            }
            if resume.journal {
                options.journal = Some(Arc::new(StoreJournal {
                    store: Arc::clone(&self.store),
                    run_id: record.id.clone(),
                    pass,
                }));
            }
            pass += 1;
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
                    if let Some(bus) = &self.bus
                        && let Err(e) = bus.publish(&record.id, seq, &json).await
                    {
                        tracing::debug!(run = %record.id, error = %e, "event not published on Redis");
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

/// The span of one run's job, a child of the current span (the submitting request) or of the
/// trace a queued job carries.
pub fn job_span(run_id: &str, workflow: Workflow) -> tracing::Span {
    tracing::debug_span!(
        "job",
        otel.name = "run job",
        run.id = %run_id,
        run.workflow = ?workflow,
    )
}
