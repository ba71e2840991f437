//! Runs generated Python inside WebAssembly: CPython 3.11 compiled to WASI (the VMware Wasm Labs
//! build), executed by wasmtime, with hard limits and no host access.
//!
//! - **Runtime**: `python-3.11.1.wasm` and `python311.zip`, installed by
//!   `scripts/fetch-sandbox-runtime.py` and verified again here (SHA-256) before first use.
//! - **Compiled once**: the module is compiled by Cranelift once per machine and engine
//!   configuration and cached on disk; a process loads it in about a millisecond and links it
//!   once into an `InstancePre` that every run instantiates.
//! - **Limits**: wall clock (epoch interruption, and sleeps cut at the deadline), memory (store
//!   limiter: growth past the cap fails inside the guest as `MemoryError`), optional fuel,
//!   captured output (capped, flagged when cut), scratch folder size and entry count.
//! - **Isolation**: WASI preview 1 has no sockets; the guest gets no environment variables, the
//!   standard library read-only at `/usr/local/lib`, and a fresh scratch folder as its `/`,
//!   deleted after the run. Nothing else of the host is visible.
//!
//! [`Sandbox::run`] is async (tokio's blocking pool, bounded parallelism); [`unittest`] runs a
//! module with its `unittest` tests and reports each test's result.

mod cache;
mod guard;
mod pipe;
pub mod runtime;
mod sandbox;
pub mod unittest;

use std::path::PathBuf;

pub use cache::ModuleSource;
pub use runtime::{RuntimeFiles, default_runtime_dir};
pub use sandbox::{
    InputFile, Limits, LoadReport, MAIN_FILE, RunOutcome, RunRequest, RunTimings, Sandbox,
    SandboxConfig,
};

/// Everything that can keep the sandbox from running code (a limit being hit is not an error:
/// it is part of [`RunOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A runtime file is missing or unreadable.
    #[error("sandbox runtime file {} is missing or unreadable ({reason}); to fix it, {}", path.display(), runtime::FIX)]
    RuntimeMissing {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// A runtime file has the wrong bytes.
    #[error("sandbox runtime file {} has SHA-256 {actual}, expected {expected} (damaged or a different build); to fix it, delete it and {}", path.display(), runtime::FIX)]
    RuntimeMismatch {
        /// The file.
        path: PathBuf,
        /// The published hash.
        expected: String,
        /// What the file hashes to.
        actual: String,
    },
    /// wasmtime refused something.
    #[error("sandbox: {what} failed: {detail}")]
    Engine {
        /// The step that failed.
        what: &'static str,
        /// wasmtime's message.
        detail: String,
    },
    /// A host file operation failed.
    #[error("sandbox: {what}: {source}")]
    Io {
        /// The operation.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The request itself is wrong.
    #[error("sandbox request: {0}")]
    InvalidRequest(String),
}
