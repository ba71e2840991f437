#!/usr/bin/env bash
# Quick start, part 1: build AetherFlow and run the example plan end to end, offline, with the
# built-in mock provider (no keys, no network). Safe to run again: it rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_toolchain
require_sandbox_runtime

# The run writes the generated files into its workspace: use a fresh copy of the example's, so
# the repository's stays as it is (and you can look at, or roll back, what the run changed).
out="${AETHERFLOW_OUT:-runs}"
workspace="$out/todo-api-example-workspace"
rm -rf "$workspace"
mkdir -p "$out"
cp -R examples/todo-api/workspace "$workspace"
echo "workspace: $workspace" >&2

cargo run --locked --quiet -p aetherflow -- \
    run examples/todo-api/plan.json \
    --offline \
    --workspace "$workspace" \
    --out "$out" \
    "$@"
