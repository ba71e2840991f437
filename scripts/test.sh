#!/usr/bin/env bash
# Quick start, part 2: the whole test suite (unit, integration, end-to-end, and the original
# tool's 144 real plans when ../shared/corpus is present). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_toolchain
require_sandbox_runtime

if [ -z "${AETHERFLOW_CORPUS_DIR:-}" ] && [ -d ../shared/corpus/original-plans ]; then
    AETHERFLOW_CORPUS_DIR="$(cd ../shared/corpus/original-plans && pwd)"
    export AETHERFLOW_CORPUS_DIR
fi
if [ -n "${AETHERFLOW_CORPUS_DIR:-}" ]; then
    echo "checking the plan corpus in $AETHERFLOW_CORPUS_DIR"
else
    echo "plan corpus not found (../shared/corpus/original-plans): the corpus test checks nothing"
fi

if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis-server not found: the shared-state tests (Redis) are skipped; apt-get install -y redis-server to run them"
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v pg_config >/dev/null 2>&1; then
    echo "PostgreSQL not found: the PostgreSQL store tests are skipped; apt-get install -y postgresql to run them"
fi

cargo test --workspace --locked "$@"
