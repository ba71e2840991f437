//! Progress events of a run, for the CLI's progress bars and the API's server-sent events.

use std::time::Duration;

use aetherflow_domain::run::{Mode, RunStatus, RunTotals, StepStatus};
use aetherflow_domain::{Money, RunId, StepId, TaskId, Usage};
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

/// Something that happened during a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    /// The run began.
    RunStarted {
        /// The run.
        run_id: RunId,
        /// The plan's task.
        task_id: TaskId,
        /// Number of steps.
        steps: usize,
        /// Execution mode.
        mode: Mode,
    },
    /// A step's provider call began.
    StepStarted {
        /// The step.
        step_id: StepId,
        /// Provider asked.
        provider: String,
        /// Model asked.
        model: String,
    },
    /// A step ended (succeeded, failed or cancelled).
    StepFinished {
        /// The step.
        step_id: StepId,
        /// How it ended.
        status: StepStatus,
        /// Tokens it consumed.
        usage: Usage,
        /// What it cost.
        cost: Money,
        /// How long it took.
        #[serde(with = "aetherflow_domain::run::duration_ms", rename = "duration_ms")]
        duration: Duration,
        /// Why it failed or was cancelled.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A step finished in an earlier attempt at this run (by a worker that stopped before the
    /// run ended) and was taken as it was: not sent or applied again.
    StepRestored {
        /// The step.
        step_id: StepId,
        /// How it ended then.
        status: StepStatus,
    },
    /// A step was not run because a dependency did not succeed.
    StepSkipped {
        /// The step.
        step_id: StepId,
        /// Which dependency and why.
        reason: String,
    },
    /// Spend in a budget scope crossed a soft threshold.
    BudgetAlert {
        /// The scope (`run …`, `day …`).
        scope: String,
        /// Percent of the cap crossed.
        threshold: u8,
        /// Spend so far.
        spent: Money,
        /// The cap.
        cap: Money,
    },
    /// A provider's spend or error rate spiked above its baseline.
    UsageAlert {
        /// The provider.
        provider: String,
        /// `spend` or `error_rate`.
        kind: String,
        /// The value in the current window.
        current: f64,
        /// The baseline.
        baseline: f64,
    },
    /// The run ended; the report is written.
    RunFinished {
        /// The run.
        run_id: RunId,
        /// Overall outcome.
        status: RunStatus,
        /// Sums over the steps.
        totals: RunTotals,
    },
}

/// Where events go; sending never blocks and a closed receiver is not an error.
#[derive(Debug, Clone, Default)]
pub struct EventSink(Option<UnboundedSender<RunEvent>>);

impl EventSink {
    /// A sink feeding `sender`.
    pub fn new(sender: UnboundedSender<RunEvent>) -> Self {
        EventSink(Some(sender))
    }

    /// A sink that drops everything.
    pub fn none() -> Self {
        EventSink(None)
    }

    pub(crate) fn emit(&self, event: RunEvent) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(event);
        }
    }
}
