//! The static safety gate for LLM-generated Python.
//!
//! [`scan_source`] parses a file with rustpython-parser (identifiers NFKC-normalised, as
//! CPython does), checks its imports against a layered [`Policy`], runs bandit-compatible rules
//! (same ids, names, severities, confidences and CWE numbers as bandit) and AetherFlow's
//! sandbox-escape rules (`AF...`), and decides a [`Verdict`]. Reports render as text,
//! bandit-compatible JSON or SARIF 2.1.0 ([`render`]); [`deps`] checks generated
//! `requirements.txt` and `pyproject.toml` files.
//!
//! The crate is pure and synchronous: it does no I/O beyond the text callers hand it. It fails
//! closed: a syntax error, an input past the parser's limits (200 nested brackets, 1000
//! chained operators) or an internal failure is a blocking verdict, never a panic. Callers
//! should run [`Policy::validate`] once when they load a policy.
//!
//! ```
//! use aetherflow_code_safety::{Policy, scan_source};
//!
//! let report = scan_source("gen.py", "import json\nprint(json.dumps({'a': 1}))\n", &Policy::default());
//! assert!(report.verdict().is_allow());
//!
//! let report = scan_source("gen.py", "import os\nos.system('rm -rf ' + path)\n", &Policy::default());
//! assert!(!report.verdict().is_allow());
//! println!("{}", report.verdict().feedback("gen.py"));
//! ```

pub mod deps;
pub mod finding;
pub mod policy;
pub mod render;
pub mod rules;
mod scan;
mod source;
pub mod stdlib;

pub use finding::{Confidence, Cwe, Finding, Rule, RuleKind, Severity};
pub use policy::{
    BlockPolicy, ImportDecision, ImportOverrides, ImportPolicy, NosecPolicy, Policy, PolicyError,
    PolicyOverrides,
};
pub use scan::{BlockReason, FileMetrics, ScanReport, Verdict, scan_source, scan_sources};
pub use source::ParseFailure;
