#!/usr/bin/env bash
# Quick start, part 1: build AetherFlow and run the example plan end to end, offline, with the
# built-in mock provider (no keys, no network). Safe to run again: it rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_toolchain
require_sandbox_runtime

cargo run --locked --quiet -p aetherflow -- \
    run examples/todo-api/plan.json \
    --offline \
    --workspace examples/todo-api/workspace \
    --out "${AETHERFLOW_OUT:-runs}" \
    "$@"
