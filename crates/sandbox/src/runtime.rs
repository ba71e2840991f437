//! Locating and verifying the CPython-for-WASI runtime files.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::SandboxError;

/// File name of the interpreter module.
pub const PYTHON_WASM: &str = "python-3.11.1.wasm";
/// SHA-256 of [`PYTHON_WASM`] (the VMware Wasm Labs CPython 3.11.1 WASI build).
pub const PYTHON_WASM_SHA256: &str =
    "88b0f02cc42b389ab14e8c1b9a57e7ea5ab75397c0859baf9265c5eac58d3437";
/// File name of the zipped standard library.
pub const STDLIB_ZIP: &str = "python311.zip";
/// SHA-256 of [`STDLIB_ZIP`].
pub const STDLIB_ZIP_SHA256: &str =
    "4593d0c62a1b4cb7de17c591578eb85de3b4037828b18a6764bbd304435da605";

/// What to run to install the runtime, quoted in every error about it.
pub const FIX: &str = "run `python3 scripts/fetch-sandbox-runtime.py` from the AetherFlow source tree \
     (it installs into $AETHERFLOW_SANDBOX_RUNTIME), or point AETHERFLOW_SANDBOX_RUNTIME at a folder \
     holding python-3.11.1.wasm and python311.zip";

/// The runtime folder used when none is configured: `$AETHERFLOW_SANDBOX_RUNTIME`, else
/// `$XDG_CACHE_HOME/aetherflow/sandbox-runtime`, else `~/.cache/aetherflow/sandbox-runtime` —
/// the same rule as the set-up script.
pub fn default_runtime_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AETHERFLOW_SANDBOX_RUNTIME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    cache_home().join("aetherflow").join("sandbox-runtime")
}

/// The folder for compiled modules when none is configured: beside the runtime folder, never
/// inside it (the runtime folder is visible, read-only, to the guest).
pub fn default_compiled_dir(runtime_dir: &Path) -> PathBuf {
    let name = runtime_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sandbox-runtime".to_owned());
    runtime_dir
        .parent()
        .unwrap_or(runtime_dir)
        .join(format!("{name}-compiled"))
}

fn cache_home() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache"))
        .unwrap_or_else(std::env::temp_dir)
}

/// The verified runtime: both files are present and hash to the published values.
#[derive(Debug, Clone)]
pub struct RuntimeFiles {
    /// The folder holding both files.
    pub dir: PathBuf,
    /// The interpreter module's path.
    pub wasm: PathBuf,
    /// The standard library zip's path.
    pub stdlib: PathBuf,
}

impl RuntimeFiles {
    /// Checks that `dir` holds both files with the expected SHA-256.
    pub fn verify(dir: &Path) -> Result<Self, SandboxError> {
        let wasm = dir.join(PYTHON_WASM);
        let stdlib = dir.join(STDLIB_ZIP);
        check(&wasm, PYTHON_WASM_SHA256)?;
        check(&stdlib, STDLIB_ZIP_SHA256)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            wasm,
            stdlib,
        })
    }
}

fn check(path: &Path, expected: &str) -> Result<(), SandboxError> {
    let file = std::fs::File::open(path).map_err(|e| SandboxError::RuntimeMissing {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let actual = sha256_reader(file).map_err(|e| SandboxError::RuntimeMissing {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if actual != expected {
        return Err(SandboxError::RuntimeMismatch {
            path: path.to_path_buf(),
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(())
}

/// Hex SHA-256 of everything `reader` yields.
pub(crate) fn sha256_reader(mut reader: impl Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_runtime_names_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = RuntimeFiles::verify(dir.path()).unwrap_err().to_string();
        assert!(err.contains(PYTHON_WASM), "{err}");
        assert!(err.contains("fetch-sandbox-runtime.py"), "{err}");
    }

    #[test]
    fn wrong_bytes_are_refused_with_both_hashes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PYTHON_WASM), b"not cpython").unwrap();
        let err = RuntimeFiles::verify(dir.path()).unwrap_err();
        assert!(matches!(err, SandboxError::RuntimeMismatch { .. }));
        let msg = err.to_string();
        assert!(msg.contains(PYTHON_WASM_SHA256), "{msg}");
        assert!(msg.contains("fetch-sandbox-runtime.py"), "{msg}");
    }

    #[test]
    fn compiled_dir_is_outside_the_runtime_dir() {
        let c = default_compiled_dir(Path::new("/c/aetherflow/sandbox-runtime"));
        assert_eq!(c, Path::new("/c/aetherflow/sandbox-runtime-compiled"));
    }

    #[test]
    fn sha256_matches_a_known_vector() {
        assert_eq!(
            sha256_reader(&b"abc"[..]).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
