//! Sandbox: this crate will own running generated Python inside CPython compiled to WASI,
//! executed by wasmtime with memory, fuel, time and output limits and no host access.
//!
//! It is empty until the sandbox issue lands; nothing executes generated code before then.
