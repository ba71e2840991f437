//! The compiled-module cache: CPython's 14 MB of wasm takes seconds to compile with Cranelift,
//! so it is compiled once per machine and engine configuration and later loaded by mapping the
//! serialized artifact (about a millisecond).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmtime::{Engine, Module};

use crate::SandboxError;
use crate::runtime::{PYTHON_WASM_SHA256, RuntimeFiles};

/// How the module was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleSource {
    /// Loaded from the compiled-module cache.
    Cache,
    /// Compiled now (and stored in the cache for next time).
    Compiled,
}

/// The cache file for `engine`, in a `modules` folder this crate creates with mode 0700 inside
/// the configured folder (which may be shared or world-writable, as a Kubernetes `emptyDir`
/// is). Keyed by the wasm's hash and wasmtime's own compatibility hash,
/// which covers the wasmtime version and every engine setting that changes generated code (fuel,
/// epochs, optimisation level, target features).
pub(crate) fn cache_path(engine: &Engine, dir: &Path) -> PathBuf {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    dir.join("modules").join(format!(
        "python-3.11.1-{}-{:016x}.cwasm",
        &PYTHON_WASM_SHA256[..16],
        hasher.finish()
    ))
}

/// Loads the interpreter from the cache, or compiles it and fills the cache.
pub(crate) fn load(
    engine: &Engine,
    files: &RuntimeFiles,
    dir: &Path,
) -> Result<(Module, ModuleSource, Duration), SandboxError> {
    let started = Instant::now();
    let path = cache_path(engine, dir);
    if let Some(module) = cached(engine, &path) {
        return Ok((module, ModuleSource::Cache, started.elapsed()));
    }
    // Several processes starting at once (test suites, API replicas on one volume) would each
    // spend seconds compiling: the first takes a lock and compiles, the others wait and load.
    let _lock = lock(&path);
    if let Some(module) = cached(engine, &path) {
        return Ok((module, ModuleSource::Cache, started.elapsed()));
    }
    let module = Module::from_file(engine, &files.wasm).map_err(|e| SandboxError::Engine {
        what: "compiling the CPython module",
        detail: format!("{e:#}"),
    })?;
    if let Err(e) = store(&module, &path) {
        // A read-only cache only costs the next run a compile; say so and go on.
        tracing::warn!(path = %path.display(), error = %e, "could not cache the compiled sandbox module");
    }
    Ok((module, ModuleSource::Compiled, started.elapsed()))
}

fn cached(engine: &Engine, path: &Path) -> Option<Module> {
    if !path.is_file() {
        return None;
    }
    match deserialize(engine, path) {
        Ok(module) => Some(module),
        Err(e) => {
            tracing::warn!(
                path = %path.display(),
                error = %e,
                "compiled sandbox module unusable; compiling again"
            );
            None
        }
    }
}

/// An exclusive lock beside the cache file, released when dropped; `None` (no waiting) when the
/// folder cannot hold one.
fn lock(path: &Path) -> Option<std::fs::File> {
    let dir = path.parent()?;
    create_private_dir(dir).ok()?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".compile.lock"))
        .ok()?;
    file.lock().ok()?;
    Some(file)
}

fn store(module: &Module, path: &Path) -> Result<(), String> {
    let dir = path.parent().ok_or("the cache path has no folder")?;
    create_private_dir(dir).map_err(|e| e.to_string())?;
    let bytes = module.serialize().map_err(|e| format!("{e:#}"))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| e.to_string())?;
    std::io::Write::write_all(&mut tmp, &bytes).map_err(|e| e.to_string())?;
    tmp.as_file().sync_all().map_err(|e| e.to_string())?;
    tmp.persist(path).map_err(|e| e.to_string())?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Whether a cache file may be trusted: a compiled artifact is machine code that wasmtime maps
/// and runs, so one that others could have written is recompiled instead of loaded.
fn trusted(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        for p in [Some(path), path.parent()].into_iter().flatten() {
            let meta = std::fs::metadata(p).map_err(|e| e.to_string())?;
            if meta.mode() & 0o022 != 0 {
                return Err(format!(
                    "{} is writable by other users; not loading machine code from it",
                    p.display()
                ));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> Result<Module, String> {
    trusted(path)?;
    // Read into memory rather than map the file: a mapping turns a file truncated by someone
    // else while we run into SIGBUS; a copy costs a few milliseconds once per process.
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    // SAFETY: `Module::deserialize` requires bytes produced by `Module::serialize` /
    // `Engine::precompile_module` of a compatible wasmtime, because the machine code in them is
    // made executable as is. This file is only ever written by `store` above: whole (temporary
    // file, fsync, rename), into a 0700 folder, under a name that carries the wasm's hash and the
    // engine's compatibility hash; `trusted` refuses files or folders other users can write; and
    // wasmtime itself checks the artifact's header (version, target, engine flags) and fails
    // cleanly on a mismatch or a damaged header, which sends us back to compiling.
    unsafe { Module::deserialize(engine, &bytes) }.map_err(|e| format!("{e:#}"))
}
