//! Plans: the original `plan.json` format (also YAML), parsing with positions, and validation.

mod error;
mod model;
mod parse;
mod validate;

pub use error::{PlanError, PlanIssue, PlanWarning};
pub use model::{
    Patch, PatchPosition, Plan, PlanReview, Step, StepBehaviour, StepContext, StepType,
};
pub use parse::{PlanFormat, parse_plan};
pub use validate::{MAX_ESTIMATED_TOKENS, ValidPlan, relative_path_problem};

/// Parses and validates plan text in one call; warnings from both stages are kept.
pub fn load_plan(text: &str, format: PlanFormat) -> Result<ValidPlan, PlanError> {
    let (plan, warnings) = parse_plan(text, format)?;
    Ok(plan.validate()?.with_warnings(warnings))
}
