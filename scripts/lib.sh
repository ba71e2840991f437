# Shared by the scripts: checks for what the build needs and says how to get it.

require_toolchain() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo not found: install Rust (https://rustup.rs) with 'rustup default stable'" >&2
        exit 2
    fi
    if ! command -v cc >/dev/null 2>&1; then
        echo "a C compiler is needed for some dependencies: apt-get install -y build-essential" >&2
        exit 2
    fi
}

# The sandbox's CPython-for-WASI runtime (python-3.11.1.wasm, python311.zip), fetched once and
# verified by SHA-256 into $AETHERFLOW_SANDBOX_RUNTIME (default ~/.cache/aetherflow/sandbox-runtime).
require_sandbox_runtime() {
    local python
    python=$(command -v python3 || command -v python || true)
    if [ -z "$python" ]; then
        echo "python3 is needed once, to fetch the sandbox runtime: apt-get install -y python3" >&2
        exit 2
    fi
    "$python" scripts/fetch-sandbox-runtime.py >&2
}
