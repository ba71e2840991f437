#!/usr/bin/env bash
# Line coverage of the library crates (crates/*), the figure CI gates at 80 %: cargo-tarpaulin's
# LLVM engine (no llvm-tools needed), with the end-to-end tests' child processes counted (they
# pass LLVM_PROFILE_FILE on). Builds into its own target folder (instrumented code does not mix
# with normal builds): a cold run builds the workspace once more.
#
#   scripts/coverage.sh              # report in target-coverage/coverage/, summary printed
#   COVERAGE_TARGET_DIR=/big/disk scripts/coverage.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_toolchain
require_sandbox_runtime
if ! cargo tarpaulin --version >/dev/null 2>&1; then
    echo "cargo-tarpaulin is needed: cargo install cargo-tarpaulin --version 0.37.5 --locked" >&2
    exit 2
fi
target="${COVERAGE_TARGET_DIR:-target-coverage}"
out="$target/coverage"
mkdir -p "$out"
CARGO_TARGET_DIR="$target" CARGO_INCREMENTAL=0 cargo tarpaulin --workspace --locked \
    --engine llvm --skip-clean --timeout 600 \
    --exclude-files "bins/*" --exclude-files "tests/*" \
    --out Json --out Html --output-dir "$out" "$@"
python3 - "$out/tarpaulin-report.json" <<'PY'
import collections, json, sys
report = json.load(open(sys.argv[1]))
crates = collections.defaultdict(lambda: [0, 0])
for f in report["files"]:
    path = "/".join(f["path"])
    at = path.rfind("/crates/")
    if at < 0:
        continue
    name = path[at + 1:].split("/")[1]
    crates[name][0] += f["covered"]
    crates[name][1] += f["coverable"]
covered = sum(c for c, _ in crates.values())
coverable = sum(n for _, n in crates.values())
for name, (c, n) in sorted(crates.items()):
    print(f"  {name:14s} {c:6d} / {n:6d}  {100 * c / max(n, 1):5.1f} %")
print(f"library crates: {covered} / {coverable} lines = {100 * covered / max(coverable, 1):.1f} %")
PY
