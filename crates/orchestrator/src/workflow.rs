//! Workflows: the original's PROTO and PROD chains of passes over one plan, and the plain
//! direct run. Each pass is an ordinary run (own folder, report, budget share); this module only
//! decides what each pass does and carries results from one to the next.
//!
//! - `direct`: one run in the chosen mode.
//! - `proto`: a FAST run that applies its files, then a DOUBLE-CHECK pass in which a second
//!   model reviews exactly the files the first pass produced, with structured verdicts.
//! - `prod`: a FAST draft (nothing applied), a BUILD refinement that gets each step's draft as
//!   context and applies, then the DOUBLE-CHECK pass.
//!
//! A plan-wide budget covers the whole workflow: each pass gets what the passes before left.
//! Callers drive the passes themselves (so each can be rendered on its own) or call
//! [`Orchestrator::run_workflow`].

use std::collections::HashMap;
use std::sync::Arc;

use aetherflow_domain::StepId;
use aetherflow_domain::plan::ValidPlan;
use aetherflow_domain::run::{Mode, Phase, RunStatus, StepStatus, Workflow, WorkflowStage};
use tokio_util::sync::CancellationToken;

use crate::engine::{Pass, RunOptions, RunOutcome};
use crate::review::ReviewOptions;
use crate::{EventSink, Orchestrator, RunError};

/// A workflow in progress: which pass comes next and with which options.
#[derive(Debug)]
pub struct WorkflowRun {
    workflow: Workflow,
    base: RunOptions,
    reviewer: ReviewOptions,
    done: Vec<RunOutcome>,
}

/// Every pass a workflow made, in order.
#[derive(Debug)]
pub struct WorkflowOutcome {
    /// The workflow.
    pub workflow: Workflow,
    /// One run per pass made (a workflow stops early when a pass is cancelled or leaves nothing
    /// for the next).
    pub runs: Vec<RunOutcome>,
}

impl WorkflowRun {
    /// A workflow over `base` options; `reviewer` judges the double-check pass (PROTO, PROD).
    pub fn new(workflow: Workflow, base: RunOptions, reviewer: ReviewOptions) -> Self {
        WorkflowRun {
            workflow,
            base,
            reviewer,
            done: Vec::new(),
        }
    }

    /// The workflow.
    pub fn workflow(&self) -> Workflow {
        self.workflow
    }

    /// The next pass and its options, or `None` when the workflow is over: every pass made, a
    /// pass cancelled, or nothing left to double-check.
    pub fn next_pass(&self) -> Option<(Phase, RunOptions)> {
        let phases = self.workflow.phases();
        let number = self.done.len();
        let phase = *phases.get(number)?;
        let previous = self.done.last();
        if previous.is_some_and(|p| p.report.status == RunStatus::Cancelled) {
            return None;
        }
        let mut options = self.base.clone();
        options.pass = Pass::Generate;
        if let Some(cap) = self.base.budget {
            let spent = self
                .done
                .iter()
                .map(|r| r.report.totals.cost)
                .sum::<aetherflow_domain::Money>();
            options.budget = Some(cap.saturating_sub(spent));
        }
        if self.workflow != Workflow::Direct {
            options.stage = Some(WorkflowStage {
                workflow: self.workflow,
                phase,
                number: u32::try_from(number + 1).unwrap_or(u32::MAX),
                of: u32::try_from(phases.len()).unwrap_or(u32::MAX),
                previous_run: previous.map(|p| p.report.run_id),
            });
        }
        match phase {
            Phase::Run => {
                if self.workflow == Workflow::Proto {
                    options.mode = Mode::Fast;
                }
            }
            Phase::Draft => {
                // A draft is cheap and only read by the next pass: kept as answered, with no
                // checks, repairs or review, and nothing applied.
                options.pass = Pass::Draft;
                options.mode = Mode::Fast;
                options.apply = None;
                options.sandbox = None;
                options.review = None;
                options.max_repairs = 0;
            }
            Phase::Refine => {
                options.mode = Mode::Build;
                let drafts: HashMap<StepId, Arc<str>> = previous
                    .map(|p| {
                        p.report
                            .steps
                            .iter()
                            .zip(&p.outputs)
                            .filter_map(|(s, o)| o.as_ref().map(|o| (s.id.clone(), Arc::clone(o))))
                            .collect()
                    })
                    .unwrap_or_default();
                options.pass = Pass::Refine(Arc::new(drafts));
            }
            Phase::DoubleCheck => {
                let previous = previous?;
                let produced: HashMap<StepId, Vec<crate::extract::ExtractedFile>> = previous
                    .report
                    .steps
                    .iter()
                    .zip(&previous.files)
                    .filter(|(s, _)| s.status == StepStatus::Succeeded)
                    .map(|(s, f)| (s.id.clone(), f.clone()))
                    .collect();
                if produced.values().all(Vec::is_empty) {
                    return None;
                }
                options.mode = Mode::DoubleCheck;
                options.apply = None;
                options.sandbox = None;
                options.max_repairs = 0;
                options.review = Some(self.reviewer.clone());
                options.pass = Pass::DoubleCheck(Arc::new(produced));
            }
        }
        Some((phase, options))
    }

    /// Records the outcome of the pass [`WorkflowRun::next_pass`] gave.
    pub fn record(&mut self, outcome: RunOutcome) {
        self.done.push(outcome);
    }

    /// The passes made.
    pub fn finish(self) -> WorkflowOutcome {
        WorkflowOutcome {
            workflow: self.workflow,
            runs: self.done,
        }
    }
}

impl WorkflowOutcome {
    /// The workflow's outcome: cancelled if a pass was; failed if a pass that counts failed (a
    /// draft's failures do not count: the refinement does the step again); else succeeded.
    pub fn status(&self) -> RunStatus {
        let mut status = RunStatus::Succeeded;
        for (phase, run) in self.workflow.phases().iter().zip(&self.runs) {
            match run.report.status {
                RunStatus::Cancelled => return RunStatus::Cancelled,
                RunStatus::Failed if *phase != Phase::Draft => status = RunStatus::Failed,
                _ => {}
            }
        }
        status
    }

    /// What every pass cost together.
    pub fn cost(&self) -> aetherflow_domain::Money {
        self.runs.iter().map(|r| r.report.totals.cost).sum()
    }
}

impl Orchestrator {
    /// Makes every pass of `workflow`, all reporting to `events`; stops early when a pass is
    /// cancelled (`cancel` fires) or leaves nothing for the next.
    pub async fn run_workflow(
        &self,
        plan: Arc<ValidPlan>,
        mut workflow: WorkflowRun,
        events: EventSink,
        cancel: CancellationToken,
    ) -> Result<WorkflowOutcome, RunError> {
        while let Some((_, options)) = workflow.next_pass() {
            let outcome = self
                .run(Arc::clone(&plan), &options, events.clone(), cancel.clone())
                .await?;
            workflow.record(outcome);
        }
        Ok(workflow.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::ApplyMode;
    use crate::workspace::{ContextLimits, Workspace};
    use crate::{EventSink, mock_provider_set};
    use aetherflow_domain::Money;
    use aetherflow_domain::plan::{PlanFormat, load_plan};

    const PLAN: &str = r#"{"task_id": "wf", "description": "d", "steps": [
        {"id": "a", "description": "Look around", "type": "analysis"},
        {"id": "b", "description": "Write b.py", "type": "code_generation",
         "dependencies": ["a"], "context": {"files": ["b.py"], "language": "python"}}]}"#;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn run(workflow: Workflow, budget: Option<Money>) -> (WorkflowOutcome, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("dir");
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(&ws).expect("mkdir");
        let orchestrator = Orchestrator::new(
            mock_provider_set(Default::default()),
            Workspace::open(&ws, ContextLimits::default()).expect("workspace"),
        );
        let options = RunOptions {
            out_dir: Some(dir.path().join("out")),
            apply: Some(ApplyMode::Write),
            budget,
            ..RunOptions::default()
        };
        let plan = Arc::new(load_plan(PLAN, PlanFormat::Json).expect("plan"));
        let outcome = runtime()
            .block_on(orchestrator.run_workflow(
                plan,
                WorkflowRun::new(workflow, options, ReviewOptions::default()),
                EventSink::none(),
                CancellationToken::new(),
            ))
            .expect("runs");
        (outcome, dir)
    }

    #[test]
    fn each_workflow_makes_its_passes_in_order() {
        let phases = |o: &WorkflowOutcome| -> Vec<Option<Phase>> {
            o.runs
                .iter()
                .map(|r| r.report.workflow.as_ref().map(|s| s.phase))
                .collect()
        };
        let (direct, _d) = run(Workflow::Direct, None);
        assert_eq!(phases(&direct), [None]);
        assert_eq!(direct.status(), RunStatus::Succeeded);

        let (proto, _d) = run(Workflow::Proto, None);
        assert_eq!(phases(&proto), [Some(Phase::Run), Some(Phase::DoubleCheck)]);
        assert_eq!(proto.runs[0].report.mode, Mode::Fast);
        let check = &proto.runs[1].report;
        assert_eq!(
            check.steps[0].status,
            StepStatus::Succeeded,
            "analysis: no files"
        );
        assert!(check.steps[0].attempts.is_empty());
        assert_eq!(check.status, RunStatus::Succeeded);
        assert_eq!(
            check.steps[1].verdict.as_ref().map(|v| v.approve),
            Some(true)
        );

        let (prod, dir) = run(Workflow::Prod, None);
        assert_eq!(
            phases(&prod),
            [
                Some(Phase::Draft),
                Some(Phase::Refine),
                Some(Phase::DoubleCheck)
            ]
        );
        assert!(
            prod.runs[0].files.iter().all(Vec::is_empty),
            "a draft applies nothing"
        );
        assert_eq!(prod.runs[1].files[1][0].path, "b.py");
        assert!(dir.path().join("ws/b.py").is_file());
        assert_eq!(prod.status(), RunStatus::Succeeded);
        assert_eq!(
            prod.cost(),
            prod.runs
                .iter()
                .map(|r| r.report.totals.cost)
                .sum::<Money>()
        );
    }

    #[test]
    fn the_budget_covers_the_whole_workflow() {
        let cap = Money::from_micros(1_000_000);
        let mut passes = WorkflowRun::new(
            Workflow::Prod,
            RunOptions {
                budget: Some(cap),
                ..RunOptions::default()
            },
            ReviewOptions::default(),
        );
        let (phase, first) = passes.next_pass().expect("a first pass");
        assert_eq!((phase, first.budget), (Phase::Draft, Some(cap)));
        let (outcome, _d) = run(Workflow::Direct, Some(cap));
        let mut spent = outcome.runs.into_iter().next().expect("one run");
        spent.report.totals.cost = Money::from_micros(250_000);
        passes.record(spent);
        let (phase, second) = passes.next_pass().expect("a second pass");
        assert_eq!(phase, Phase::Refine);
        assert_eq!(second.budget, Some(Money::from_micros(750_000)));
    }
}
