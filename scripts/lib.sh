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
