//! Running a plan as a DAG: ready steps run concurrently up to a bound, each gets its
//! successful dependencies' outputs, and a step whose dependency did not succeed is skipped.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use aetherflow_domain::plan::{StepBehaviour, ValidPlan};
use aetherflow_domain::run::{
    Attempt, AttemptError, Mode, REPORT_SCHEMA_VERSION, RunReport, StepReport, StepStatus,
};
use aetherflow_domain::{Money, RunId};
use aetherflow_provider::{ChatRequest, FinishReason, Message, StepHint};
use chrono::Utc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::RunError;
use crate::apply::{Action, ApplyMode, Change, apply};
use crate::cache::ResponseCache;
use crate::events::{EventSink, RunEvent};
use crate::extract::{ExtractedFile, extract_files};
use crate::output::RunDir;
use crate::prompt::{PromptInput, system_prompt, user_prompt};
use crate::review::{REVIEW_SYSTEM, ReviewOptions, parse_verdict, review_prompt};
use crate::routing::{ProviderSet, Target};
use crate::rules::{StepRules, step_rules};
use crate::workspace::Workspace;
use aetherflow_code_safety::{Policy, scan_source};
use aetherflow_domain::StepId;
use aetherflow_domain::run::{FailureKind, FileChange, WorkflowStage};
use aetherflow_provider::FallbackClass;
use aetherflow_resilience::alerts::{UsageAlert, UsageMonitor};
use aetherflow_resilience::breaker::Breakers;
use aetherflow_resilience::budget::{Budgets, Scope, worst_case_cost};
use aetherflow_resilience::fallback::FallbackPolicy;
use aetherflow_resilience::ledger::CostLedger;
use aetherflow_resilience::retry::{RetryDecision, RetryPolicy};

/// How a run is carried out.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Execution mode, recorded in the report (routing by mode arrives with resilience).
    pub mode: Mode,
    /// Most steps in flight at once.
    pub concurrency: NonZeroUsize,
    /// Where run folders go (`<out>/<task_id>/<run_id>/`); `None` writes nothing.
    pub out_dir: Option<PathBuf>,
    /// Upper bound on each answer's tokens.
    pub max_output_tokens: Option<u32>,
    /// Hard cap on this run's spend; a call whose worst case could pass it is not sent.
    pub budget: Option<Money>,
    /// Whether and how generated files reach the workspace (`None`: never; the answers stay
    /// in the run folder). Applying needs a run folder (`out_dir`) for backups and rollback.
    pub apply: Option<ApplyMode>,
    /// Answers a step may have rejected (bad file blocks, blocked code) before it fails; each
    /// rejection goes back to the model as feedback.
    pub max_repairs: u32,
    /// The code-safety policy every generated Python file must pass.
    pub safety: Arc<Policy>,
    /// The sandbox that runs generated tests and import checks before anything is applied, with
    /// its per-run limits (`None`: no sandbox verification).
    pub sandbox: Option<(aetherflow_sandbox::Sandbox, aetherflow_sandbox::Limits)>,
    /// The gate-keeper review by a second model (`None`: no review).
    pub review: Option<ReviewOptions>,
    /// What the run does with each step: generate it, refine an earlier draft, or double-check
    /// files an earlier run produced.
    pub pass: Pass,
    /// The workflow pass this run is, recorded in its report (`None`: a direct run).
    pub stage: Option<WorkflowStage>,
    /// Budget scopes this run's calls also count against (an API key's day, say), besides
    /// the run, the day and the month; their caps are set on the shared `Budgets`.
    pub extra_scopes: Vec<Scope>,
    /// Steps an earlier attempt at this run finished: restored as they ended, not run again
    /// (their spend counts against `budget`).
    pub resume: crate::journal::Finished,
    /// Where each step is recorded as it finishes (`None`: nowhere).
    pub journal: Option<Arc<dyn crate::journal::StepJournal>>,
}

/// What a run does with each step.
#[derive(Debug, Clone, Default)]
pub enum Pass {
    /// Generate, check and apply (the default).
    #[default]
    Generate,
    /// Generate a first draft of each step and keep the answer as it is: no extraction, checks
    /// or apply (the PROD workflow's draft, read by its refinement).
    Draft,
    /// As `Generate`, with an earlier run's answer for the step in the prompt as a draft to
    /// improve.
    Refine(Arc<HashMap<StepId, Arc<str>>>),
    /// A reviewer (the run's `review` options) judges the files an earlier run produced for each
    /// step; nothing is generated or applied. Steps absent from the map (they did not succeed)
    /// are skipped; steps mapped to no files succeed with nothing to check.
    DoubleCheck(Arc<HashMap<StepId, Vec<ExtractedFile>>>),
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            mode: Mode::default(),
            concurrency: NonZeroUsize::new(4).unwrap_or(NonZeroUsize::MIN),
            out_dir: None,
            max_output_tokens: Some(8192),
            budget: None,
            apply: None,
            max_repairs: 2,
            safety: Arc::new(Policy::default()),
            sandbox: None,
            review: None,
            pass: Pass::Generate,
            stage: None,
            extra_scopes: Vec::new(),
            resume: crate::journal::Finished::default(),
            journal: None,
        }
    }
}

/// What a finished (or cancelled) run leaves behind.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The report, also written as `report.json` when there is a run folder.
    pub report: RunReport,
    /// The run folder, when one was written.
    pub run_dir: Option<PathBuf>,
    /// Each step's output text, by step index (`None` when it produced none).
    pub outputs: Vec<Option<Arc<str>>>,
    /// Each step's checked files, by step index: what was applied (or, in a dry run or review,
    /// would have been). Empty for steps that produced no files.
    pub files: Vec<Vec<ExtractedFile>>,
}

/// Runs plans against a set of providers inside one workspace.
#[derive(Debug, Clone)]
pub struct Orchestrator {
    providers: ProviderSet,
    workspace: Arc<Workspace>,
    resilience: Resilience,
}

struct Shared {
    plan: Arc<ValidPlan>,
    workspace: Arc<Workspace>,
    max_output_tokens: Option<u32>,
    retry: RetryPolicy,
    breakers: Arc<Breakers>,
    budgets: Budgets,
    scopes: Vec<Scope>,
    cache: Option<ResponseCache>,
    events: EventSink,
    provider_limits: ProviderLimits,
    monitor: Option<Arc<UsageMonitor>>,
    run_dir: Option<PathBuf>,
    apply: Option<ApplyMode>,
    max_repairs: u32,
    sandbox: Option<(aetherflow_sandbox::Sandbox, aetherflow_sandbox::Limits)>,
    providers: ProviderSet,
    fallback: FallbackPolicy,
    mode: Mode,
    /// Each step's rules (policy, review, sandbox) and its reviewers, by step index.
    rules: Vec<(StepRules, Vec<Target>)>,
    pass: Pass,
    /// One apply at a time: the run's change manifest is read and rewritten by each.
    apply_lock: tokio::sync::Mutex<()>,
    /// Where each step's checked answer is recorded before it is applied.
    journal: Option<Arc<dyn crate::journal::StepJournal>>,
}

impl Shared {
    fn calls(&self) -> CallEnv<'_> {
        CallEnv {
            retry: &self.retry,
            breakers: &self.breakers,
            budgets: &self.budgets,
            scopes: &self.scopes,
            cache: self.cache.as_ref(),
            provider_limits: &self.provider_limits,
            monitor: self.monitor.as_deref(),
            events: &self.events,
            accept_truncated: false,
        }
    }
}

/// What a provider call needs from its surroundings: retries, breakers, the budgets and the
/// scopes it is charged to, the response cache, concurrency limits, the usage monitor, and
/// where its events go. A plan step and a one-off request (`crate::call`) share it.
pub(crate) struct CallEnv<'a> {
    pub(crate) retry: &'a RetryPolicy,
    pub(crate) breakers: &'a Breakers,
    pub(crate) budgets: &'a Budgets,
    pub(crate) scopes: &'a [Scope],
    pub(crate) cache: Option<&'a ResponseCache>,
    pub(crate) provider_limits: &'a ProviderLimits,
    pub(crate) monitor: Option<&'a UsageMonitor>,
    pub(crate) events: &'a EventSink,
    /// Whether an answer cut at the output limit is still an answer (a gateway client set the
    /// limit) rather than a failed step.
    pub(crate) accept_truncated: bool,
}

/// Output tokens assumed for the worst case when a request sets no limit.
const DEFAULT_WORST_CASE_OUTPUT: u32 = 32_768;

/// Retries, breakers and budgets shared by every run of an orchestrator.
#[derive(Debug, Clone, Default)]
pub struct Resilience {
    /// When to call the same model again.
    pub retry: RetryPolicy,
    /// Breakers per (provider, model), shared across runs.
    pub breakers: Arc<Breakers>,
    /// Caps and spend, shared across runs.
    pub budgets: Budgets,
    /// Which providers a step tries, in order.
    pub fallback: FallbackPolicy,
    /// Where every call's cost is appended, if anywhere.
    pub ledger: Option<Arc<CostLedger>>,
    /// Answers already given, if caching is on.
    pub cache: Option<ResponseCache>,
    /// Most calls in flight per provider, across runs (providers not listed are unlimited).
    pub provider_limits: ProviderLimits,
    /// Spend and error-rate spike detection, if on.
    pub monitor: Option<Arc<UsageMonitor>>,
}

/// Per-provider concurrency limits, so AetherFlow slows itself down before a provider answers
/// 429 (DeepSeek, for one, caps concurrent requests per account).
#[derive(Debug, Clone, Default)]
pub struct ProviderLimits {
    slots: std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>,
}

impl ProviderLimits {
    /// Allows at most `max` calls at once to `provider` (`0` means no limit).
    pub fn with(mut self, provider: &str, max: usize) -> Self {
        if max > 0 {
            self.slots.insert(
                crate::routing::canonical_provider_name(provider),
                Arc::new(tokio::sync::Semaphore::new(max)),
            );
        }
        self
    }

    async fn enter(&self, provider: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let slots = self.slots.get(provider)?;
        Arc::clone(slots).acquire_owned().await.ok()
    }
}

struct Execution {
    index: usize,
    report: StepReport,
    output: Option<Arc<str>>,
    files: Vec<ExtractedFile>,
}

impl Execution {
    /// A step that ended with no output text and no files.
    fn bare(index: usize, report: StepReport) -> Self {
        Execution {
            index,
            report,
            output: None,
            files: Vec::new(),
        }
    }
}

impl Orchestrator {
    /// An orchestrator using `providers`, reading context from `workspace`.
    pub fn new(providers: ProviderSet, workspace: Workspace) -> Self {
        Orchestrator {
            providers,
            workspace: Arc::new(workspace),
            resilience: Resilience::default(),
        }
    }

    /// Uses these retries, breakers and budgets (shared with other orchestrators that hold
    /// clones of them).
    pub fn with_resilience(mut self, resilience: Resilience) -> Self {
        self.resilience = resilience;
        self
    }

    /// The retries, breakers and budgets in use.
    pub fn resilience(&self) -> &Resilience {
        &self.resilience
    }

    /// The providers this orchestrator routes to.
    pub fn providers(&self) -> &ProviderSet {
        &self.providers
    }

    /// Runs `plan` to the end, or until `cancel` fires; either way the report is complete and,
    /// with an output folder, written.
    pub async fn run(
        &self,
        plan: Arc<ValidPlan>,
        options: &RunOptions,
        events: EventSink,
        cancel: CancellationToken,
    ) -> Result<RunOutcome, RunError> {
        // Every step's rules are checked before anything is written or sent.
        // Generated code may import the project's own modules.
        let safety = Arc::new(
            options.safety.allowing_local_modules(
                crate::rules::local_modules(self.workspace.root(), plan.plan())
                    .iter()
                    .map(String::as_str),
            ),
        );
        let rules: Vec<(StepRules, Vec<Target>)> = step_rules(
            plan.plan(),
            &safety,
            options.review.as_ref(),
            matches!(options.pass, Pass::DoubleCheck(_)),
        )?
        .into_iter()
        .map(|r| {
            let reviewers = r
                .review
                .as_ref()
                .map(|o| self.providers.reviewers(&o.provider))
                .unwrap_or_default();
            (r, reviewers)
        })
        .collect();
        let run_id = RunId::new();
        let started_at = Utc::now();
        let clock = Instant::now();
        let steps = plan.steps();
        let n = steps.len();

        let run_dir = match &options.out_dir {
            Some(out) => Some(RunDir::create(out, &plan.plan().task_id, run_id).await?),
            None => None,
        };

        // The trace of the run: steps and provider attempts are its children. Ids, counts and
        // names only — never prompts or answers.
        let run_span = tracing::debug_span!(
            "run",
            otel.name = "run",
            run.id = %run_id,
            run.task_id = %plan.plan().task_id,
            run.steps = i64::try_from(n).unwrap_or(i64::MAX),
            run.mode = %options.mode,
        );
        tracing::info!(
            %run_id,
            task_id = %plan.plan().task_id,
            steps = n,
            mode = %options.mode,
            concurrency = options.concurrency.get(),
            offline = self.providers.is_offline(),
            "run started"
        );
        events.emit(RunEvent::RunStarted {
            run_id,
            task_id: plan.plan().task_id.clone(),
            steps: n,
            mode: options.mode,
        });

        let run_scope = Scope::Run(run_id.to_string());
        let today = started_at.format("%Y-%m-%d").to_string();
        let month = started_at.format("%Y-%m").to_string();
        if let Some(cap) = options.budget {
            // Steps restored from an earlier attempt already spent part of the cap.
            let restored: u64 = options
                .resume
                .values()
                .filter(|s| s.is_final())
                .map(|s| s.report.cost.as_micros())
                .sum();
            self.resilience.budgets.set_cap(
                run_scope.clone(),
                Some(Money::from_micros(cap.as_micros().saturating_sub(restored))),
            );
        }
        let shared = Arc::new(Shared {
            plan: Arc::clone(&plan),
            workspace: Arc::clone(&self.workspace),
            max_output_tokens: options.max_output_tokens,
            retry: self.resilience.retry,
            breakers: Arc::clone(&self.resilience.breakers),
            budgets: self.resilience.budgets.clone(),
            scopes: [run_scope, Scope::Day(today), Scope::Month(month)]
                .into_iter()
                .chain(options.extra_scopes.iter().cloned())
                .collect(),
            cache: self.resilience.cache.clone(),
            events: events.clone(),
            provider_limits: self.resilience.provider_limits.clone(),
            monitor: self.resilience.monitor.clone(),
            run_dir: run_dir.as_ref().map(|d| d.path().to_path_buf()),
            apply: options.apply,
            max_repairs: options.max_repairs,
            sandbox: options.sandbox.clone(),
            providers: self.providers.clone(),
            fallback: self.resilience.fallback.clone(),
            mode: options.mode,
            rules,
            pass: options.pass.clone(),
            apply_lock: tokio::sync::Mutex::new(()),
            journal: options.journal.clone(),
        });
        let mut reports: Vec<StepReport> = steps
            .iter()
            .map(|s| StepReport::pending(s.id.clone(), s.step_type))
            .collect();
        let mut outputs: Vec<Option<Arc<str>>> = vec![None; n];
        let mut files: Vec<Vec<ExtractedFile>> = vec![Vec::new(); n];
        let double_check = matches!(options.pass, Pass::DoubleCheck(_));
        let mut waiting_on: Vec<usize> = (0..n).map(|i| plan.dependencies_of(i).len()).collect();
        let mut ready: VecDeque<usize> = (0..n).filter(|&i| waiting_on[i] == 0).collect();
        let mut running: JoinSet<Execution> = JoinSet::new();
        let mut running_index: HashMap<tokio::task::Id, usize> = HashMap::new();
        let mut cancelled = false;
        let limit = options.concurrency.get();
        // The files each step writes: two steps that write the same file never run at once,
        // even when the graph would allow it (the later one waits its turn, in plan order).
        let writes: Vec<Vec<&str>> = steps
            .iter()
            .map(|s| {
                if s.step_type.behaviour() == StepBehaviour::Analyse {
                    return Vec::new();
                }
                let patched = s
                    .context
                    .patch
                    .iter()
                    .chain(&s.context.patches)
                    .filter_map(|p| p.target_file.as_deref());
                s.context
                    .files
                    .iter()
                    .map(String::as_str)
                    .chain(patched)
                    .collect()
            })
            .collect();
        let mut deferred: Vec<usize> = Vec::new();

        loop {
            while !cancelled && running.len() < limit {
                let Some(i) = ready.pop_front() else { break };
                if running_index
                    .values()
                    .any(|&j| writes[j].iter().any(|f| writes[i].contains(f)))
                {
                    deferred.push(i);
                    continue;
                }
                // Finished by an earlier attempt at this run: taken as it ended.
                if let Some(done) = options.resume.get(&steps[i].id).filter(|d| d.is_final()) {
                    tracing::info!(step = %reports[i].id, status = ?done.report.status, "step restored from an earlier attempt");
                    reports[i] = done.report.clone();
                    outputs[i] = done.output.as_deref().map(Arc::from);
                    files[i] = done.files.clone();
                    if let (Some(dir), Some(text)) = (&run_dir, &outputs[i]) {
                        match dir.write_step_output(&reports[i].id, text).await {
                            Ok(name) => reports[i].output_file = Some(name),
                            Err(e) => {
                                tracing::warn!(step = %reports[i].id, error = %e, "could not write step output")
                            }
                        }
                    }
                    events.emit(RunEvent::StepRestored {
                        step_id: reports[i].id.clone(),
                        status: reports[i].status,
                    });
                    release(&plan, i, &mut waiting_on, &mut ready);
                    continue;
                }
                // Checked and being applied when an earlier attempt stopped: apply the same
                // files again (unchanged ones are left alone), ask for nothing.
                if let Some(prepared) = options
                    .resume
                    .get(&steps[i].id)
                    .filter(|p| p.is_prepared())
                    .cloned()
                {
                    tracing::info!(step = %reports[i].id, "applying a step's checked answer from an earlier attempt");
                    reports[i].status = StepStatus::Running;
                    let handle = running.spawn(reapply(Arc::clone(&shared), i, prepared));
                    running_index.insert(handle.id(), i);
                    continue;
                }
                // A double-check reviews each step's files on their own: order does not matter.
                if let Some(reason) = blocked_by(&plan, &reports, i).filter(|_| !double_check) {
                    tracing::info!(step = %reports[i].id, %reason, "step skipped");
                    reports[i].status = StepStatus::Skipped;
                    reports[i].reason = Some(reason.clone());
                    events.emit(RunEvent::StepSkipped {
                        step_id: reports[i].id.clone(),
                        reason,
                    });
                    release(&plan, i, &mut waiting_on, &mut ready);
                    continue;
                }
                let chain = if double_check {
                    Ok(shared.rules[i].1.clone())
                } else {
                    self.providers.chain(
                        &steps[i],
                        options.mode,
                        steps[i].estimated_tokens.unwrap_or(0),
                        &self.resilience.fallback,
                    )
                };
                let targets = match chain {
                    Ok(t) if !t.is_empty() => t,
                    Ok(_) => {
                        let reason = "no configured provider can take this step".to_owned();
                        finish(&mut reports[i], StepStatus::Failed, reason, &events);
                        release(&plan, i, &mut waiting_on, &mut ready);
                        continue;
                    }
                    Err(reason) => {
                        finish(&mut reports[i], StepStatus::Failed, reason, &events);
                        release(&plan, i, &mut waiting_on, &mut ready);
                        continue;
                    }
                };
                let target = &targets[0];
                tracing::debug!(step = %reports[i].id, provider = %target.name, model = %target.entry.model, "step started");
                events.emit(RunEvent::StepStarted {
                    step_id: reports[i].id.clone(),
                    provider: target.name.clone(),
                    model: target.entry.model.clone(),
                });
                reports[i].status = StepStatus::Running;
                let deps: Vec<(String, Arc<str>)> = plan
                    .dependencies_of(i)
                    .iter()
                    .filter_map(|&d| {
                        outputs[d]
                            .as_ref()
                            .map(|o| (steps[d].id.to_string(), Arc::clone(o)))
                    })
                    .collect();
                let step_span = tracing::debug_span!(
                    parent: &run_span,
                    "step",
                    otel.name = %format_args!("step {}", steps[i].id),
                    step.id = %steps[i].id,
                    step.kind = ?steps[i].step_type,
                );
                let handle = running
                    .spawn(execute(Arc::clone(&shared), i, targets, deps).instrument(step_span));
                running_index.insert(handle.id(), i);
            }
            for i in deferred.drain(..).rev() {
                ready.push_front(i);
            }

            if running.is_empty() {
                break;
            }

            tokio::select! {
                biased;
                () = cancel.cancelled(), if !cancelled => {
                    cancelled = true;
                    running.abort_all();
                }
                joined = running.join_next_with_id() => {
                    let Some(joined) = joined else { continue };
                    let (index, execution) = match joined {
                        Ok((id, execution)) => {
                            running_index.remove(&id);
                            (execution.index, Some(execution))
                        }
                        Err(e) => (running_index.remove(&e.id()).unwrap_or(usize::MAX), None),
                    };
                    if index == usize::MAX {
                        continue;
                    }
                    match execution {
                        Some(Execution { report, output, files: checked, .. }) => {
                            reports[index] = report;
                            files[index] = checked;
                            // Recorded first (its files are applied by now), before anything
                            // that depends on it starts.
                            if let Some(journal) = &options.journal {
                                let finished = crate::journal::FinishedStep {
                                    report: reports[index].clone(),
                                    output: output.as_deref().map(str::to_owned),
                                    files: files[index].clone(),
                                };
                                if finished.is_final()
                                    && let Err(e) = journal.record(&finished).await
                                {
                                    tracing::warn!(step = %reports[index].id, error = %e, "step completion not recorded: a resumed run would run it again");
                                }
                            }
                            if let (Some(dir), Some(text)) = (&run_dir, &output) {
                                match dir.write_step_output(&reports[index].id, text).await {
                                    Ok(name) => reports[index].output_file = Some(name),
                                    Err(e) => tracing::warn!(step = %reports[index].id, error = %e, "could not write step output"),
                                }
                            }
                            outputs[index] = output;
                            if let Some(ledger) = &self.resilience.ledger {
                                record_costs(ledger, run_id, &plan.plan().task_id, &reports[index]).await;
                            }
                            let r = &reports[index];
                            tracing::info!(
                                step = %r.id,
                                status = ?r.status,
                                provider = r.provider.as_deref().unwrap_or("-"),
                                model = r.model.as_deref().unwrap_or("-"),
                                input_tokens = r.usage.input_tokens,
                                output_tokens = r.usage.output_tokens,
                                cost_micros = r.cost.as_micros(),
                                duration_ms = r.duration.as_millis() as u64,
                                reason = r.reason.as_deref().unwrap_or(""),
                                "step finished"
                            );
                            events.emit(RunEvent::StepFinished {
                                step_id: reports[index].id.clone(),
                                status: reports[index].status,
                                usage: reports[index].usage,
                                cost: reports[index].cost,
                                duration: reports[index].duration,
                                reason: reports[index].reason.clone(),
                            });

                        }
                        None if cancelled => finish(
                            &mut reports[index],
                            StepStatus::Cancelled,
                            "cancelled while running".into(),
                            &events,
                        ),
                        None => finish(
                            &mut reports[index],
                            StepStatus::Failed,
                            "the step's task stopped unexpectedly (a bug: please report it)".into(),
                            &events,
                        ),
                    }
                    release(&plan, index, &mut waiting_on, &mut ready);
                }
            }
        }

        for r in &mut reports {
            if !r.status.is_final() {
                r.status = StepStatus::Cancelled;
                r.reason = Some("the run was cancelled before this step started".into());
            }
        }
        // The run's own budget account is done with (its spend is in the report and ledger).
        self.resilience
            .budgets
            .forget(&Scope::Run(run_id.to_string()));
        let (totals, status) = RunReport::summarise(&reports, cancelled);
        let report = RunReport {
            schema_version: REPORT_SCHEMA_VERSION,
            run_id,
            task_id: plan.plan().task_id.clone(),
            description: plan.plan().description.clone(),
            mode: options.mode,
            status,
            started_at,
            finished_at: Utc::now(),
            duration: clock.elapsed(),
            steps: reports,
            totals: totals.clone(),
            warnings: plan.warnings().to_vec(),
            metadata: plan.plan().metadata.clone().into_iter().collect(),
            plan_extra: plan.plan().extra.clone().into_iter().collect(),
            breakers: self
                .resilience
                .breakers
                .status()
                .into_iter()
                .map(|b| aetherflow_domain::run::BreakerSnapshot {
                    provider: b.provider,
                    model: b.model,
                    state: match b.state {
                        aetherflow_resilience::breaker::BreakerState::Closed => "closed",
                        aetherflow_resilience::breaker::BreakerState::Open => "open",
                        aetherflow_resilience::breaker::BreakerState::HalfOpen => "half_open",
                    }
                    .to_owned(),
                    calls: b.calls,
                    failures: b.failures,
                })
                .collect(),
            workflow: options.stage.clone(),
        };
        if let Some(dir) = &run_dir {
            dir.write_report(&report).await?;
            let (path, plan_ref, report_ref) =
                (dir.path().to_path_buf(), Arc::clone(&plan), report.clone());
            match tokio::task::spawn_blocking(move || {
                crate::survey::write(&path, &plan_ref, &report_ref)
            })
            .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "could not write the error survey"),
                Err(e) => tracing::warn!(error = %e, "writing the error survey stopped"),
            }
        }
        tracing::info!(
            %run_id,
            status = ?status,
            succeeded = totals.succeeded,
            failed = totals.failed,
            skipped = totals.skipped,
            cancelled = totals.cancelled,
            cost_micros = totals.cost.as_micros(),
            duration_ms = report.duration.as_millis() as u64,
            "run finished"
        );
        events.emit(RunEvent::RunFinished {
            run_id,
            status,
            totals,
        });
        Ok(RunOutcome {
            report,
            run_dir: run_dir.map(RunDir::into_path),
            outputs,
            files,
        })
    }
}

/// Appends the step's attempts to the cost ledger; a ledger that cannot be written is logged,
/// never a reason to lose the run.
async fn record_costs(
    ledger: &Arc<CostLedger>,
    run_id: RunId,
    task_id: &aetherflow_domain::TaskId,
    report: &StepReport,
) {
    let records = crate::call::cost_records(
        &run_id.to_string(),
        task_id.as_str(),
        report.id.as_str(),
        &report.attempts,
    );
    if records.is_empty() {
        return;
    }
    let ledger = Arc::clone(ledger);
    let written = tokio::task::spawn_blocking(move || ledger.append(&records)).await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cost ledger not written"),
        Err(e) => tracing::error!(error = %e, "cost ledger task stopped"),
    }
}

/// Why step `i` cannot run, when one of its dependencies did not succeed.
fn blocked_by(plan: &ValidPlan, reports: &[StepReport], i: usize) -> Option<String> {
    plan.dependencies_of(i).iter().find_map(|&d| {
        let dep = &reports[d];
        let how = match dep.status {
            StepStatus::Succeeded => return None,
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "was skipped",
            _ => "did not finish",
        };
        Some(format!("dependency `{}` {how}", dep.id))
    })
}

fn release(plan: &ValidPlan, i: usize, waiting_on: &mut [usize], ready: &mut VecDeque<usize>) {
    for &next in plan.dependents_of(i) {
        waiting_on[next] -= 1;
        if waiting_on[next] == 0 {
            ready.push_back(next);
        }
    }
}

fn finish(report: &mut StepReport, status: StepStatus, reason: String, events: &EventSink) {
    report.status = status;
    report.reason = Some(reason.clone());
    events.emit(RunEvent::StepFinished {
        step_id: report.id.clone(),
        status,
        usage: report.usage,
        cost: report.cost,
        duration: report.duration,
        reason: Some(reason),
    });
}

/// One step: gather context, ask the provider once, record the attempt.
async fn execute(
    shared: Arc<Shared>,
    index: usize,
    targets: Vec<Target>,
    deps: Vec<(String, Arc<str>)>,
) -> Execution {
    let plan = shared.plan.plan();
    let step = &plan.steps[index];
    let mut report = StepReport::pending(step.id.clone(), step.step_type);
    report.status = StepStatus::Running;
    report.started_at = Some(Utc::now());
    let clock = Instant::now();

    let fail = |mut report: StepReport, kind: FailureKind, reason: String, clock: Instant| {
        report.status = StepStatus::Failed;
        report.failure = Some(kind);
        report.reason = Some(reason);
        report.duration = clock.elapsed();
        Execution::bare(index, report)
    };
    if let Pass::DoubleCheck(produced) = &shared.pass {
        let skip = |mut report: StepReport, status: StepStatus, reason: &str| {
            report.status = status;
            report.reason = Some(reason.to_owned());
            Execution::bare(index, report)
        };
        return match produced.get(&step.id) {
            None => skip(
                report,
                StepStatus::Skipped,
                "not double-checked: the step did not succeed in the pass before",
            ),
            Some(files) if files.is_empty() => skip(
                report,
                StepStatus::Succeeded,
                "nothing to double-check: the step wrote no files",
            ),
            Some(checked) => {
                let verdict = review_files(&shared, index, checked, &mut report).await;
                if let Some(last) = report.attempts.last() {
                    report.provider = Some(last.provider.clone());
                    report.model = Some(last.model.clone());
                }
                match verdict {
                    Ok(()) => {
                        report.status = StepStatus::Succeeded;
                        report.duration = clock.elapsed();
                        Execution::bare(index, report)
                    }
                    Err(ReviewStop::Rejected(feedback)) => fail(
                        report,
                        FailureKind::ValidationFailed,
                        format!("double-check: {feedback}"),
                        clock,
                    ),
                    Err(ReviewStop::NoVerdict(kind, reason)) => fail(report, kind, reason, clock),
                }
            }
        };
    }

    let behaviour = step.step_type.behaviour();
    let ctx = &step.context;
    // Tests the step names must exist (or be among its own files) before anything is paid for.
    if let Some(missing) = ctx
        .tests
        .iter()
        .find(|t| !ctx.files.contains(t) && !shared.workspace.root().join(t.as_str()).is_file())
    {
        return fail(
            report,
            FailureKind::Context,
            format!(
                "context.tests names {missing}, which is neither in the workspace nor among the \
                 step's files; if an earlier step writes it, list that step in `dependencies`"
            ),
            clock,
        );
    }
    let (inputs, current) = if ctx.files.is_empty() && ctx.input_files.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        // Analysis reads its `files`; other steps read the current content of the files they
        // will change, when those exist. `input_files` must exist.
        let mut input_entries: Vec<(String, bool)> =
            ctx.input_files.iter().map(|p| (p.clone(), true)).collect();
        let mut target_entries: Vec<(String, bool)> = Vec::new();
        for f in &ctx.files {
            if behaviour == StepBehaviour::Analyse {
                input_entries.push((f.clone(), false));
            } else {
                target_entries.push((f.clone(), false));
            }
        }
        let ws = Arc::clone(&shared.workspace);
        let read = tokio::task::spawn_blocking(move || {
            let mut budget = ws.limits().max_total_bytes;
            let inputs = ws.read(&input_entries, &mut budget)?;
            let targets = ws.read(&target_entries, &mut budget)?;
            Ok::<_, crate::workspace::WorkspaceError>((inputs, targets))
        })
        .await;
        match read {
            Ok(Ok(files)) => files,
            Ok(Err(e)) => {
                return fail(report, FailureKind::Context, format!("context: {e}"), clock);
            }
            Err(e) => {
                return fail(
                    report,
                    FailureKind::Context,
                    format!("context: reading files stopped: {e}"),
                    clock,
                );
            }
        }
    };

    let dependency_outputs: Vec<(&str, &str)> = deps
        .iter()
        .map(|(id, text)| (id.as_str(), &**text))
        .collect();
    let draft = match &shared.pass {
        Pass::Refine(drafts) => drafts.get(&step.id).map(|d| &**d),
        _ => None,
    };
    let prompt = user_prompt(&PromptInput {
        plan,
        step,
        dependency_outputs: &dependency_outputs,
        inputs: &inputs,
        targets: &current,
        draft,
    });
    let mut request = ChatRequest {
        model: String::new(),
        system: Some(system_prompt(behaviour).to_owned()),
        messages: vec![Message::user(prompt)],
        max_output_tokens: shared.max_output_tokens,
        step: Some(StepHint {
            step_id: step.id.to_string(),
            step_type: step.step_type.to_string(),
            summary: first_line(&step.description),
            files: ctx.files.clone(),
            language: ctx.language.clone(),
        }),
        ..ChatRequest::default()
    };

    // Without the author's estimate, the step is routed by the size of its real prompt.
    let targets = match step.estimated_tokens {
        Some(_) => targets,
        None => {
            let tokens = aetherflow_provider::tokens::estimate_request(&request);
            match shared
                .providers
                .chain(step, shared.mode, tokens, &shared.fallback)
            {
                Ok(chain) if !chain.is_empty() => chain,
                _ => targets,
            }
        }
    };
    let patches: Vec<&aetherflow_domain::plan::Patch> =
        ctx.patch.iter().chain(ctx.patches.iter()).collect();
    let produces_files = behaviour != StepBehaviour::Analyse
        && (!ctx.files.is_empty() || !patches.is_empty())
        && !matches!(shared.pass, Pass::Draft);
    let mut rejections = 0u32;
    loop {
        // `context.cache: false` keeps this step's answers out of the response cache.
        let cacheable = ctx.cache != Some(false);
        let response = match generate(
            &shared.calls(),
            &targets,
            &mut request,
            cacheable,
            &mut report,
        )
        .await
        {
            Ok(response) => response,
            Err(no) => return fail(report, no.kind, no.reason, clock),
        };
        report.duration = clock.elapsed();
        if !produces_files {
            report.status = StepStatus::Succeeded;
            return Execution {
                index,
                report,
                output: Some(Arc::from(response.text)),
                files: Vec::new(),
            };
        }
        let answer_files = if patches.is_empty() {
            extract_files(&response.text, &ctx.files).map_err(|p| p.feedback())
        } else {
            patch_answer(&shared.workspace, &patches, &ctx.files, &response.text)
        };
        let checked = match answer_files
            .and_then(|files| check_safety(&shared.rules[index].0.policy, files))
        {
            Ok(files) => match shared
                .sandbox
                .as_ref()
                .filter(|_| shared.rules[index].0.verify)
            {
                Some((sandbox, limits)) => {
                    let root = shared.workspace.root().to_path_buf();
                    let context =
                        tokio::task::spawn_blocking(move || crate::verify::workspace_python(&root))
                            .await
                            .unwrap_or_default();
                    crate::verify::verify(sandbox, *limits, context, &files, &ctx.tests)
                        .await
                        .map(|()| files)
                }
                None => Ok(files),
            },
            Err(feedback) => Err(feedback),
        };
        let checked = match checked {
            Ok(files) => match review_files(&shared, index, &files, &mut report).await {
                Ok(()) => Ok(files),
                Err(ReviewStop::Rejected(feedback)) => Err(feedback),
                Err(ReviewStop::NoVerdict(kind, reason)) => {
                    return fail(report, kind, reason, clock);
                }
            },
            Err(feedback) => Err(feedback),
        };
        match checked {
            Ok(files) => {
                // The checked answer is recorded before it touches the workspace: a process
                // that resumes this run applies these same files, never a new answer.
                if let Some(journal) = &shared.journal {
                    report.duration = clock.elapsed();
                    let prepared = crate::journal::FinishedStep {
                        report: report.clone(),
                        output: Some(response.text.clone()),
                        files: files.clone(),
                    };
                    if let Err(e) = journal.prepare(&prepared).await {
                        tracing::warn!(step = %step.id, error = %e, "checked answer not recorded before applying: a resumed run would ask again");
                    }
                }
                if let Err(reason) =
                    apply_files(&shared, &step.id, ctx.auto_apply, &files, &mut report).await
                {
                    return fail(report, FailureKind::ApplyFailed, reason, clock);
                }
                report.status = StepStatus::Succeeded;
                report.duration = clock.elapsed();
                return Execution {
                    index,
                    report,
                    output: Some(Arc::from(response.text)),
                    files,
                };
            }
            Err(feedback) => {
                tracing::info!(step = %step.id, rejections, %feedback, "answer rejected");
                report.rejected.push(feedback.clone());
                if rejections >= shared.max_repairs {
                    return fail(
                        report,
                        FailureKind::ValidationFailed,
                        format!(
                            "answer rejected {} time(s); last: {feedback}",
                            rejections + 1
                        ),
                        clock,
                    );
                }
                rejections += 1;
                request.messages.push(Message::assistant(response.text));
                request.messages.push(Message::user(format!(
                    "Your answer was rejected: {feedback}\n\nSend every file of this step again, corrected, \
                     one fenced code block per file with its path in the info string."
                )));
            }
        }
    }
}

/// A step description's first line: the summary providers and the mock see.
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

enum ReviewStop {
    /// The reviewer rejected the files: feedback for a repair.
    Rejected(String),
    /// No usable verdict, and the run fails closed: the step's failure reason.
    NoVerdict(FailureKind, String),
}

/// Asks the gate-keeper for a verdict on step `index`'s files, when the step is reviewed.
async fn review_files(
    shared: &Arc<Shared>,
    index: usize,
    files: &[ExtractedFile],
    report: &mut StepReport,
) -> Result<(), ReviewStop> {
    let step = &shared.plan.plan().steps[index];
    let (rules, reviewers) = &shared.rules[index];
    let Some(options) = &rules.review else {
        return Ok(());
    };
    let verdict = if reviewers.is_empty() {
        Err((
            FailureKind::ReviewFailed,
            format!(
                "no reviewer: neither {} nor the default provider is configured",
                options.provider
            ),
        ))
    } else {
        let mut request = ChatRequest {
            system: Some(REVIEW_SYSTEM.to_owned()),
            messages: vec![Message::user(review_prompt(step, files))],
            max_output_tokens: Some(2048),
            step: Some(StepHint {
                step_id: format!("{}.review", step.id),
                step_type: aetherflow_provider::mock::REVIEW_STEP_TYPE.to_owned(),
                summary: first_line(&step.description),
                files: Vec::new(),
                language: None,
            }),
            ..ChatRequest::default()
        };
        // The review's attempts and cost are the step's; its provider is not the author.
        let author = (
            report.provider.take(),
            report.model.take(),
            report.finish_reason.take(),
        );
        let answer = generate(&shared.calls(), reviewers, &mut request, false, report).await;
        (report.provider, report.model, report.finish_reason) = author;
        // A review the budget cannot pay for is a budget failure; anything else is no verdict.
        answer
            .map_err(|no| match no.kind {
                FailureKind::BudgetExceeded => (no.kind, no.reason),
                _ => (FailureKind::ReviewFailed, no.reason),
            })
            .and_then(|response| {
                parse_verdict(&response.text).map_err(|e| (FailureKind::ReviewFailed, e))
            })
    };
    if let Ok(v) = &verdict {
        report.verdict = Some(v.clone());
    }
    match verdict {
        Ok(v) if v.approve => Ok(()),
        Ok(v) => Err(ReviewStop::Rejected(v.feedback())),
        Err((_, reason)) if options.fail_open => {
            tracing::warn!(step = %step.id, %reason, "no review verdict; accepted (review.fail_open)");
            Ok(())
        }
        Err((kind, reason)) => Err(ReviewStop::NoVerdict(
            kind,
            format!(
                "the gate-keeper review gave no verdict, so the step fails closed: {reason} \
                 (set review.fail_open = true to accept unreviewed code)"
            ),
        )),
    }
}

/// A patch step's new file contents: each patch's fragment (the plan's `replacement`, else the
/// answer's fenced blocks in order, one per patch) applied to the current file. `Err` is
/// feedback for the model.
fn patch_answer(
    workspace: &Workspace,
    patches: &[&aetherflow_domain::plan::Patch],
    files: &[String],
    text: &str,
) -> Result<Vec<ExtractedFile>, String> {
    let needed = patches.iter().filter(|p| p.replacement.is_none()).count();
    let blocks = crate::extract::fenced_block_texts(text);
    if blocks.len() < needed {
        return Err(format!(
            "this step patches existing code: answer with {needed} fenced code block(s), each holding only the fragment to insert, in the order of the patches (got {})",
            blocks.len()
        ));
    }
    let mut blocks = blocks.into_iter();
    let mut out: Vec<ExtractedFile> = Vec::new();
    for patch in patches {
        let target = match (&patch.target_file, files) {
            (Some(t), _) => t.clone(),
            (None, [only]) => only.clone(),
            _ => {
                return Err(
                    "the plan's patch names no target_file and the step lists several files".into(),
                );
            }
        };
        let current = match out.iter().find(|f| f.path == target) {
            Some(f) => f.content.clone(),
            None => {
                let location = workspace
                    .resolve(&target)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("{target}: the file to patch does not exist"))?;
                std::fs::read_to_string(&location).map_err(|e| format!("{target}: {e}"))?
            }
        };
        let fragment = match &patch.replacement {
            Some(r) => r.clone(),
            None => blocks.next().unwrap_or_default(),
        };
        let patched = crate::patch::apply_patch(&current, patch, &fragment)
            .map_err(|e| format!("{target}: {e}"))?;
        match out.iter_mut().find(|f| f.path == target) {
            Some(f) => f.content = patched,
            None => out.push(ExtractedFile {
                path: target,
                content: patched,
            }),
        }
    }
    Ok(out)
}

/// Every Python file must be allowed by the safety policy. `Err` is feedback for the model.
fn check_safety(policy: &Policy, files: Vec<ExtractedFile>) -> Result<Vec<ExtractedFile>, String> {
    let blocked: Vec<String> = files
        .iter()
        .filter(|f| f.path.ends_with(".py"))
        .filter_map(|f| {
            let report = scan_source(&f.path, &f.content, policy);
            let verdict = report.verdict();
            (!verdict.is_allow()).then(|| verdict.feedback(&f.path))
        })
        .collect();
    if blocked.is_empty() {
        Ok(files)
    } else {
        Err(format!(
            "the code-safety gate blocked it:\n{}",
            blocked.join("\n")
        ))
    }
}

/// Writes a step's checked files into the workspace (or beside it, or as diffs), recording
/// them in the report. `Err` is the step's failure reason.
/// A step an earlier attempt checked but did not record finished: its files applied again.
async fn reapply(
    shared: Arc<Shared>,
    index: usize,
    prepared: crate::journal::FinishedStep,
) -> Execution {
    let step = &shared.plan.plan().steps[index];
    let mut report = prepared.report;
    let applied = apply_files(
        &shared,
        &step.id,
        step.context.auto_apply,
        &prepared.files,
        &mut report,
    )
    .await;
    match applied {
        Ok(()) => report.status = StepStatus::Succeeded,
        Err(reason) => {
            report.status = StepStatus::Failed;
            report.failure = Some(FailureKind::ApplyFailed);
            report.reason = Some(reason);
        }
    }
    Execution {
        index,
        report,
        output: prepared.output.map(Arc::from),
        files: prepared.files,
    }
}

async fn apply_files(
    shared: &Shared,
    step_id: &aetherflow_domain::StepId,
    auto_apply: Option<bool>,
    files: &[ExtractedFile],
    report: &mut StepReport,
) -> Result<(), String> {
    let mode = match (shared.apply, auto_apply) {
        (None, _) => return Ok(()),
        // `auto_apply: false`: written beside the target for review, never over it.
        (Some(ApplyMode::Write), Some(false)) => ApplyMode::Review,
        (Some(mode), _) => mode,
    };
    let Some(run_dir) = shared.run_dir.clone() else {
        return Err(
            "applying files needs a run folder for backups and rollback (set --out)".into(),
        );
    };
    let changes: Vec<Change> = files
        .iter()
        .map(|f| Change {
            path: f.path.clone(),
            content: f.content.clone().into_bytes(),
        })
        .collect();
    let _one_at_a_time = shared.apply_lock.lock().await;
    let ws = Arc::clone(&shared.workspace);
    let dir = run_dir.clone();
    let applied = tokio::task::spawn_blocking(move || apply(&ws, &dir, &changes, mode))
        .await
        .map_err(|e| format!("apply: stopped: {e}"))?
        .map_err(|e| format!("apply: {e}"))?;
    report.files = applied
        .records
        .iter()
        .map(|r| FileChange {
            path: r.path.clone(),
            action: match r.action {
                Action::Created => "created",
                Action::Modified => "modified",
                Action::Unchanged => "unchanged",
            }
            .to_owned(),
        })
        .collect();
    if !applied.diffs.is_empty() {
        let name = format!("{step_id}.diff");
        tokio::fs::write(run_dir.join(&name), applied.diffs.concat())
            .await
            .map_err(|e| format!("writing {name}: {e}"))?;
    }
    Ok(())
}

/// Sends the request down the step's provider chain (retries, fallbacks, window checks) until
/// one answers usably. `Err` is the step's failure reason.
pub(crate) async fn generate(
    env: &CallEnv<'_>,
    targets: &[Target],
    request: &mut ChatRequest,
    cacheable: bool,
    report: &mut StepReport,
) -> Result<aetherflow_provider::ChatResponse, NoAnswer> {
    let prompt_tokens_bound = request.prompt_token_bound();
    // A tokenizer's count of the prompt plus the answer allowance: models whose window is too
    // small are skipped before any call. Counted only when a target has a known window (the
    // tokenizer is not free).
    let needed = std::sync::OnceLock::new();
    let needed_tokens = |r: &ChatRequest| {
        *needed.get_or_init(|| {
            aetherflow_provider::tokens::estimate_request(r)
                + u64::from(r.max_output_tokens.unwrap_or(0))
        })
    };
    let mut reasons: Vec<String> = Vec::new();
    let mut over_budget = false;
    let mut store_unavailable = false;
    let mut window_skips = 0usize;
    let mut min_window: Option<u64> = None;
    for target in targets {
        let window = target.entry.provider.context_window(&target.entry.model);
        if let Some(w) = window
            && (w < needed_tokens(request) || min_window.is_some_and(|m| w <= m))
        {
            reasons.push(format!(
                "{}/{} skipped: its {w}-token window is too small for about {} tokens",
                target.name,
                target.entry.model,
                needed_tokens(request)
            ));
            window_skips += 1;
            continue;
        }
        request.model.clone_from(&target.entry.model);
        match call_with_retries(env, target, request, prompt_tokens_bound, cacheable, report).await
        {
            TargetResult::Answer(response) => {
                report.provider = Some(target.name.clone());
                report.model = Some(response.model.clone());
                report.finish_reason = Some(response.finish_reason.to_string());
                let fallback = match response.finish_reason {
                    // A client that set the limit gets the answer it asked for.
                    FinishReason::MaxTokens if env.accept_truncated => None,
                    FinishReason::MaxTokens => {
                        return Err(NoAnswer {
                            kind: FailureKind::ProviderError,
                            reason: "the answer was cut at the output token limit; raise max_output_tokens or split the step".into(),
                            too_large: false,
                            store_unavailable: false,
                        });
                    }
                    FinishReason::ContextLimit => Some((
                        "the answer was cut at the model's context window",
                        FallbackClass::ContextWindow,
                    )),
                    FinishReason::ContentFilter => Some((
                        "the provider filtered the answer",
                        FallbackClass::ContentPolicy,
                    )),
                    _ if response.text.trim().is_empty() && response.tool_calls.is_empty() => {
                        Some((
                            "the provider returned an empty answer",
                            FallbackClass::General,
                        ))
                    }
                    _ => None,
                };
                match fallback {
                    None => return Ok(response),
                    Some((problem, class)) => {
                        reasons.push(format!("{problem} ({}/{})", target.name, response.model));
                        if class == FallbackClass::ContextWindow {
                            min_window = min_window.max(window);
                        }
                    }
                }
            }
            TargetResult::Fallback { reason, class } => {
                reasons.push(reason);
                if class == FallbackClass::ContextWindow {
                    min_window = min_window.max(window.or(Some(needed_tokens(request))));
                }
            }
            // This model's worst case does not fit the budget; a cheaper one further down the
            // chain may.
            TargetResult::OverBudget(reason) => {
                over_budget = true;
                reasons.push(reason);
            }
            TargetResult::StoreUnavailable(reason) => {
                store_unavailable = true;
                reasons.push(reason);
            }
        }
    }
    if reasons.is_empty() {
        reasons.push("no configured provider can take this step".into());
    }
    let kind = if over_budget {
        FailureKind::BudgetExceeded
    } else {
        FailureKind::ProviderError
    };
    Err(NoAnswer {
        kind,
        reason: reasons.join("; then "),
        too_large: window_skips > 0 && report.attempts.is_empty(),
        store_unavailable: store_unavailable && !over_budget && report.attempts.is_empty(),
    })
}

/// Why [`generate`] produced no answer.
#[derive(Debug)]
pub(crate) struct NoAnswer {
    /// The failure's kind.
    pub(crate) kind: FailureKind,
    /// What each target said, in order.
    pub(crate) reason: String,
    /// Nothing was sent because the request is larger than the windows of the models that
    /// could take it.
    pub(crate) too_large: bool,
    /// Nothing was sent because the shared budget store did not answer.
    pub(crate) store_unavailable: bool,
}

/// Logs an anomaly, sends it as an event, and POSTs it to the webhook when one is set (in the
/// background: an unreachable webhook never slows a run).
fn raise_usage_alert(events: &EventSink, monitor: &UsageMonitor, alert: UsageAlert) {
    tracing::warn!(provider = %alert.provider, kind = ?alert.kind, current = alert.current, baseline = alert.baseline, "usage anomaly");
    let kind = match alert.kind {
        aetherflow_resilience::alerts::AlertKind::Spend => "spend",
        aetherflow_resilience::alerts::AlertKind::ErrorRate => "error_rate",
    };
    events.emit(RunEvent::UsageAlert {
        provider: alert.provider.clone(),
        kind: kind.to_owned(),
        current: alert.current,
        baseline: alert.baseline,
    });
    if let Some(url) = monitor.policy().webhook_url.clone() {
        tokio::spawn(async move {
            if let Err(e) = crate::webhook::post_alert(&url, &alert).await {
                tracing::warn!(error = %e, "alert webhook failed");
            }
        });
    }
}

/// The span of one provider call: provider, model and attempt number now, outcome (`ok` or the
/// error's kind, a bounded set), tokens and cost when it ends. Never the prompt or the answer.
pub(crate) fn attempt_span(provider: &str, model: &str, attempt: u32) -> tracing::Span {
    tracing::debug_span!(
        "provider.attempt",
        otel.name = %format_args!("chat {provider}/{model}"),
        otel.kind = "client",
        gen_ai.system = %provider,
        gen_ai.request.model = %model,
        attempt = i64::from(attempt),
        outcome = tracing::field::Empty,
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        cost_micros = tracing::field::Empty,
        cached = tracing::field::Empty,
    )
}

/// Writes how an attempt ended onto its span.
pub(crate) fn record_attempt_span(span: &tracing::Span, attempt: &Attempt) {
    span.record(
        "outcome",
        attempt.error.as_ref().map_or("ok", |e| e.kind.as_str()),
    );
    span.record("gen_ai.response.model", attempt.model.as_str());
    // Signed: OpenTelemetry integers are i64 (unsigned ones would be exported as text).
    let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    span.record("gen_ai.usage.input_tokens", int(attempt.usage.input_tokens));
    span.record(
        "gen_ai.usage.output_tokens",
        int(attempt.usage.output_tokens),
    );
    span.record("cost_micros", int(attempt.cost.as_micros()));
    span.record("cached", attempt.cached);
}

/// How trying one target ended.
enum TargetResult {
    /// An answer (its finish reason still to be judged).
    Answer(aetherflow_provider::ChatResponse),
    /// This target failed; another may succeed.
    Fallback {
        reason: String,
        class: FallbackClass,
    },
    /// The budget cannot cover this target's worst case (a cheaper target may fit).
    OverBudget(String),
    /// The shared budget store did not answer: nothing was sent (budgets fail closed).
    StoreUnavailable(String),
}

/// Calls one target, retrying per policy, inside the breaker and the budget; every call is
/// recorded as an attempt in `report`.
async fn call_with_retries(
    shared: &CallEnv<'_>,
    target: &Target,
    request: &ChatRequest,
    prompt_tokens_bound: u64,
    cacheable: bool,
    report: &mut StepReport,
) -> TargetResult {
    let provider = &target.entry.provider;
    let cache_key = match (shared.cache, cacheable) {
        (Some(cache), true) => {
            let key = ResponseCache::key(&target.name, request);
            if let Some(hit) = cache.lookup(&key).await {
                tracing::debug!(step = %report.id, provider = %target.name, "answer from the response cache");
                report.attempts.push(Attempt {
                    provider: target.name.clone(),
                    model: hit.model.clone(),
                    key_id: None,
                    started_at: Utc::now(),
                    latency: std::time::Duration::ZERO,
                    usage: Default::default(),
                    cost: Money::ZERO,
                    error: None,
                    cached: true,
                });
                return TargetResult::Answer((*hit).clone());
            }
            Some(key)
        }
        _ => None,
    };
    let price = provider.price(&target.entry.model);
    if price.is_none() {
        tracing::warn!(provider = %target.name, model = %target.entry.model, "no price known for this model; its cost is recorded as zero");
    }
    let worst_case = price.map(|p| {
        worst_case_cost(
            prompt_tokens_bound,
            u64::from(
                request
                    .max_output_tokens
                    .unwrap_or(DEFAULT_WORST_CASE_OUTPUT),
            ),
            &p,
        )
    });
    let retry_clock = Instant::now();
    let mut attempt_no = 0u32;
    loop {
        attempt_no += 1;
        let reservation = match (worst_case, shared.budgets.has_caps(shared.scopes)) {
            (_, false) => None,
            (Some(amount), true) => match shared.budgets.acquire(shared.scopes, amount).await {
                Ok(r) => Some(r),
                Err(aetherflow_resilience::budget::BudgetError::Exceeded(e)) => {
                    return TargetResult::OverBudget(e.to_string());
                }
                // Fail closed: without the shared store the call cannot be bounded.
                Err(e @ aetherflow_resilience::budget::BudgetError::Unavailable(_)) => {
                    return TargetResult::StoreUnavailable(e.to_string());
                }
            },
            (None, true) => {
                return TargetResult::Fallback {
                    reason: format!(
                        "a budget is set but the price of {}/{} is unknown, so the call cannot be bounded; configure its price",
                        target.name, target.entry.model
                    ),
                    class: FallbackClass::General,
                };
            }
        };
        let permit = match shared
            .breakers
            .admit(&target.name, &target.entry.model)
            .await
        {
            Ok(p) => p,
            Err(open) => {
                return TargetResult::Fallback {
                    reason: open.to_string(),
                    class: FallbackClass::General,
                };
            }
        };
        let slot = shared.provider_limits.enter(&target.name).await;
        let attempt_start = Utc::now();
        let call_clock = Instant::now();
        let span = attempt_span(&target.name, &target.entry.model, attempt_no);
        let result = provider.chat(request).instrument(span.clone()).await;
        let latency = call_clock.elapsed();
        drop(slot);
        shared.breakers.record(permit, result.as_ref().map(|_| ()));
        if let Some(monitor) = &shared.monitor {
            let cost = match &result {
                Ok(r) => r
                    .usage
                    .cost(&price.unwrap_or(aetherflow_domain::Price::FREE)),
                Err(_) => Money::ZERO,
            };
            for alert in monitor.observe(&target.name, cost, result.is_err()) {
                raise_usage_alert(shared.events, monitor, alert);
            }
        }
        let mut attempt = Attempt {
            provider: target.name.clone(),
            model: target.entry.model.clone(),
            key_id: None,
            started_at: attempt_start,
            latency,
            usage: Default::default(),
            cost: Money::ZERO,
            error: None,
            cached: false,
        };
        let error = match result {
            Ok(response) => {
                // Only complete, usable answers are worth giving again.
                if let (Some(cache), Some(key)) = (shared.cache, cache_key)
                    && matches!(
                        response.finish_reason,
                        FinishReason::Stop | FinishReason::ToolCalls
                    )
                    && (!response.text.trim().is_empty() || !response.tool_calls.is_empty())
                {
                    cache.put(key, response.clone());
                }
                let price = provider
                    .price(&response.model)
                    .or(price)
                    .unwrap_or(aetherflow_domain::Price::FREE);
                attempt.model = response.model.clone();
                attempt.key_id.clone_from(&response.key_id);
                attempt.usage = response.usage;
                attempt.cost = response.usage.cost(&price);
                if let Some(r) = reservation {
                    for alert in r.settle(attempt.cost).await {
                        tracing::warn!(scope = %alert.scope, threshold = alert.threshold, spent = %alert.spent, cap = %alert.cap, "budget threshold crossed");
                        shared.events.emit(RunEvent::BudgetAlert {
                            scope: alert.scope.to_string(),
                            threshold: alert.threshold,
                            spent: alert.spent,
                            cap: alert.cap,
                        });
                    }
                }
                record_attempt_span(&span, &attempt);
                report.usage += attempt.usage;
                report.cost += attempt.cost;
                report.attempts.push(attempt);
                return TargetResult::Answer(response);
            }
            Err(error) => error,
        };
        drop(reservation);
        tracing::warn!(
            step = %report.id,
            provider = %target.name,
            model = %target.entry.model,
            attempt = attempt_no,
            kind = error.kind(),
            retryable = error.is_retryable(),
            error = %error,
            "provider call failed"
        );
        attempt.error = Some(AttemptError {
            kind: error.kind().to_owned(),
            retryable: error.is_retryable(),
            message: error.to_string(),
        });
        record_attempt_span(&span, &attempt);
        report.attempts.push(attempt);
        match shared
            .retry
            .decide(attempt_no, &error, retry_clock.elapsed(), fastrand::f64())
        {
            RetryDecision::RetryAfter(wait) => {
                tracing::info!(step = %report.id, wait_ms = wait.as_millis() as u64, "retrying");
                tokio::time::sleep(wait).await;
            }
            RetryDecision::GiveUp => {
                let tries = if attempt_no == 1 {
                    String::new()
                } else {
                    format!(" after {attempt_no} attempts")
                };
                return TargetResult::Fallback {
                    reason: format!("{error} ({}{tries})", target.name),
                    class: error.fallback_class(),
                };
            }
        }
    }
}
