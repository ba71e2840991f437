//! Steps recorded as they finish, so a run taken over by another process (a worker killed
//! mid-run, its job reclaimed from the queue) goes on from where it was: a step recorded here
//! is restored as it ended, never sent to a provider or applied to the workspace again.
//!
//! The engine calls [`StepJournal::prepare`] with a step's checked answer and files just before
//! it applies them, and [`StepJournal::record`] once the step has finished, before any step
//! that depends on it starts. A resumed run is given both through [`crate::RunOptions::resume`]:
//! a finished step is restored as it ended; a step that was prepared but not recorded finished
//! (its process died while applying, or just after) has the same files applied again — never a
//! new answer — so its files end up with the content that was checked, exactly once.

use std::collections::HashMap;
use std::sync::Arc;

use aetherflow_domain::StepId;
use aetherflow_domain::run::{StepReport, StepStatus};
use serde::{Deserialize, Serialize};

use crate::extract::ExtractedFile;

/// A step as it ended: its report, its answer and the files it produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinishedStep {
    /// The step's report (attempts, usage, cost, status).
    pub report: StepReport,
    /// The answer text later steps read, when it produced one.
    #[serde(default)]
    pub output: Option<String>,
    /// The checked files it applied (or would have, in a dry run).
    #[serde(default)]
    pub files: Vec<ExtractedFile>,
}

impl FinishedStep {
    /// Whether a step that ended this way is kept when the run is resumed: one that succeeded
    /// or failed. A cancelled step (its process was stopping) runs again.
    pub fn is_final(&self) -> bool {
        matches!(
            self.report.status,
            StepStatus::Succeeded | StepStatus::Failed
        )
    }

    /// Whether this is a prepared step (checked, about to be applied), not a finished one.
    pub fn is_prepared(&self) -> bool {
        self.report.status == StepStatus::Running
    }
}

/// Steps already finished (or prepared), by id: what a resumed run restores instead of running.
pub type Finished = Arc<HashMap<StepId, FinishedStep>>;

/// Where a run records each step as it finishes.
#[async_trait::async_trait]
pub trait StepJournal: Send + Sync + std::fmt::Debug {
    /// Records `step`; an error is logged and the run goes on (the step would then be run again
    /// by a process that resumes this run, and applying the same content twice changes nothing).
    async fn record(&self, step: &FinishedStep) -> Result<(), String>;

    /// Records `step`'s checked answer and files (its report still `running`) just before they
    /// are applied. An error is logged and the run goes on (a resumed run would then ask for a
    /// new answer).
    async fn prepare(&self, step: &FinishedStep) -> Result<(), String> {
        let _ = step;
        Ok(())
    }
}
