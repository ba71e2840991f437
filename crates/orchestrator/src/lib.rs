//! The orchestrator both front doors share: it runs a validated plan as a DAG of steps, routes
//! each step to a provider, assembles prompts from the workspace (never outside it), records
//! every attempt, usage and cost, streams progress events, and writes the run folder.
//!
//! ```
//! use std::sync::Arc;
//! use aetherflow_domain::plan::{load_plan, PlanFormat};
//! use aetherflow_orchestrator::{EventSink, Orchestrator, RunOptions, mock_provider_set};
//! use aetherflow_orchestrator::workspace::{ContextLimits, Workspace};
//! use tokio_util::sync::CancellationToken;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let plan = load_plan(r#"{"task_id": "demo", "description": "d", "steps": [
//!     {"id": "a", "description": "Analyse", "type": "analysis"},
//!     {"id": "b", "description": "Write b.py", "type": "code_generation",
//!      "dependencies": ["a"], "context": {"files": ["b.py"]}}]}"#, PlanFormat::Json).unwrap();
//! let dir = tempfile::tempdir().unwrap();
//! let workspace = Workspace::open(dir.path(), ContextLimits::default()).unwrap();
//! let orchestrator = Orchestrator::new(mock_provider_set(Default::default()), workspace);
//! let outcome = orchestrator
//!     .run(Arc::new(plan), &RunOptions::default(), EventSink::none(), CancellationToken::new())
//!     .await
//!     .unwrap();
//! assert_eq!(outcome.report.totals.succeeded, 2);
//! # });
//! ```

pub mod apply;
pub mod cache;
pub mod call;
mod engine;
mod events;
pub mod extract;
pub mod journal;
mod output;
pub mod patch;
pub mod prompt;
pub mod review;
pub mod routing;
pub mod rules;
pub mod settings;
pub mod setup;
pub mod streaming;
pub mod survey;
pub mod verify;
pub mod webhook;
pub mod workflow;
pub mod workspace;

use std::sync::Arc;

use aetherflow_provider::mock::{MOCK_MODEL, MockProvider};

pub use engine::{Orchestrator, Pass, ProviderLimits, Resilience, RunOptions, RunOutcome};
pub use events::{EventSink, RunEvent};
pub use routing::{ProviderEntry, ProviderSet, Target};
pub use workflow::{WorkflowOutcome, WorkflowRun};

/// A run could not be recorded (step failures are not errors: they are in the report).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The run folder could not be created.
    #[error("cannot create the run folder {path}: {source}; choose another --out folder")]
    OutputDir {
        /// The folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The plan's `safety` or `review` settings are wrong; nothing was sent or written.
    #[error("the plan's settings are invalid: {0}")]
    Rules(#[from] rules::RulesError),
    /// `report.json` could not be written.
    #[error("cannot write the run report {path}: {source}")]
    Report {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The offline provider set: every step answered by `mock`.
pub fn mock_provider_set(mock: MockProvider) -> ProviderSet {
    ProviderSet::offline(ProviderEntry {
        provider: Arc::new(mock),
        model: MOCK_MODEL.to_owned(),
    })
}
