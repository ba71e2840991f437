//! Code safety: this crate will own the first gate for generated Python — parsing with
//! rustpython-parser, the import allow-list, bandit-compatible and sandbox-escape rules, and the
//! verdict the step pipeline acts on.
//!
//! It is empty until the code-safety issue lands; no generated code is executed or written to
//! the workspace before then, so no unchecked code can reach a user's files.
