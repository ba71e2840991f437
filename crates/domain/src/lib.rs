//! AetherFlow's domain: the words every other crate speaks.
//!
//! A [`plan::Plan`] is a task broken into steps with dependencies, read from the original
//! AetherFlow `plan.json` format (or the same structure in YAML) and checked by
//! [`plan::Plan::validate`] into a runnable [`plan::ValidPlan`]. A run of a plan produces a
//! [`run::RunReport`]; what it consumed is [`usage::Usage`], priced in [`money::Money`].
//!
//! This crate does no I/O: it turns text into checked values and back.
//!
//! ```
//! use aetherflow_domain::plan::{load_plan, PlanFormat};
//!
//! let text = r#"{"task_id": "demo", "description": "Say hello",
//!   "steps": [{"id": "step_1", "description": "Write hello.py", "type": "code_generation",
//!              "complexity": 0.1, "estimated_tokens": 200,
//!              "context": {"files": ["hello.py"], "language": "python"}}]}"#;
//! let plan = load_plan(text, PlanFormat::Json).expect("a valid plan");
//! assert_eq!(plan.levels().len(), 1);
//! ```

pub mod ids;
pub mod money;
pub mod plan;
pub mod run;
pub mod usage;

pub use ids::{RunId, StepId, TaskId};
pub use money::{Money, Price};
pub use usage::Usage;
