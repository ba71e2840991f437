//! Steps recorded as they finish, so a run taken over by another process (a worker killed
//! mid-run, its job reclaimed from the queue) goes on from where it was: a step recorded here
//! is restored as it ended, never sent to a provider or applied to the workspace again.
//!
//! The engine calls [`StepJournal::record`] after a step has finished — its files applied, its
//! output written — and before any step that depends on it starts; a resumed run is given what
//! was recorded through [`crate::RunOptions::resume`].

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
}

/// Steps already finished, by id: what a resumed run restores instead of running.
pub type Finished = Arc<HashMap<StepId, FinishedStep>>;

/// Where a run records each step as it finishes.
#[async_trait::async_trait]
pub trait StepJournal: Send + Sync + std::fmt::Debug {
    /// Records `step`; an error is logged and the run goes on (the step would then be run again
    /// by a process that resumes this run, and applying the same content twice changes nothing).
    async fn record(&self, step: &FinishedStep) -> Result<(), String>;
}
