#!/usr/bin/env bash
# Load benchmark of aetherflow-api on this machine: GET /health, POST /v1/scan with a 100-line
# file, and POST /v1/runs (mock provider) — requests/s and latency percentiles from wrk, and the
# server's resident memory idle and after the load. Needs wrk (Debian: apt-get install wrk) and
# a release build (it builds one). Usage: scripts/bench-api.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_toolchain
require_sandbox_runtime
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 2; }

secs="${1:-10}"
conns="${2:-32}"
cargo build --release --locked -p aetherflow-api
bin="$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)/aetherflow-api"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/ws"
export AETHERFLOW_SERVER__OFFLINE=true AETHERFLOW_SERVER__WORKSPACE_ROOTS=ws \
    AETHERFLOW_SERVER__RATE_PER_MINUTE=100000000 AETHERFLOW_SERVER__IP_RATE_PER_MINUTE=100000000 \
    AETHERFLOW_SERVER__QUEUE=4096 AETHERFLOW_LOG__LEVEL=error
key="$(cd "$work" && "$bin" keys create --name bench --scopes admin 2>/dev/null)"
(cd "$work" && exec "$bin" --bind 127.0.0.1:0 > "$work/out" 2>"$work/err") &
pid=$!
for _ in $(seq 100); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.1; done
base="$(sed -n 's/^listening on //p' "$work/out")"
rss() { awk '/^VmRSS/ {print $2 " kB"}' "/proc/$pid/status"; }
hwm() { awk '/^VmHWM/ {print $2 " kB"}' "/proc/$pid/status"; }
echo "server $base (pid $pid), idle RSS $(rss)"

python3 - "$work/scan.json" "$work/run.json" <<'PY'
import json, sys
lines = ["import json", "", ""]
for i in range(24):
    lines += [f"def f{i}(x: int) -> str:", f"    y = x * {i} + 1", "    return json.dumps({'v': y})", ""]
code = "\n".join(lines[:100]) + "\n"
json.dump({"files": [{"path": "gen.py", "content": code}]}, open(sys.argv[1], "w"))
plan = {"task_id": "bench", "description": "d",
        "steps": [{"id": "look", "description": "Look", "type": "analysis"}]}
json.dump({"plan": plan, "dry_run": True}, open(sys.argv[2], "w"))
PY
cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
local f = io.open(os.getenv("BODY_FILE"), "r")
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KEY")
-- Counts answers by status, so accepted work and refusals (503 when the queue is full) are
-- reported apart.
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; busy = 0; other = 0 end
function response(status, headers, body)
    if status < 300 then ok = ok + 1 elseif status == 503 then busy = busy + 1 else other = other + 1 end
end
function done(summary, latency, requests)
    local a, b, c = 0, 0, 0
    for _, t in ipairs(threads) do a = a + t:get("ok"); b = b + t:get("busy"); c = c + t:get("other") end
    local secs = summary.duration / 1e6
    io.write(string.format("  answered 2xx %d (%.0f/s), 503 queue full %d (%.0f/s), other %d\n",
        a, a / secs, b, b / secs, c))
end
LUA

run() {
    echo "== $1"
    shift
    wrk -t2 -c"$conns" -d"${secs}s" --latency "$@" | grep -E "Requests/sec|Latency|50%|99%|Non-2xx|Socket errors|answered"
}
run "GET /health" "$base/health"
KEY="$key" BODY_FILE="$work/scan.json" run "POST /v1/scan (100 lines)" -s "$work/post.lua" "$base/v1/scan"
KEY="$key" BODY_FILE="$work/run.json" run "POST /v1/runs (mock provider, 1 step)" -s "$work/post.lua" "$base/v1/runs"
echo "RSS after load $(rss), peak $(hwm)"
