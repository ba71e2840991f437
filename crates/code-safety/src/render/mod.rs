//! Reports for people and tools: plain text, bandit-compatible JSON and SARIF 2.1.0.

mod bandit_json;
mod sarif;
mod text;

pub use bandit_json::bandit_json;
pub use sarif::sarif;
pub use text::text;
