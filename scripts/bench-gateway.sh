#!/usr/bin/env bash
# Overhead of the OpenAI-compatible gateway on this machine. Upstream: a static OpenAI chat
# completion served by nginx on loopback (configured as AetherFlow's openai_compatible provider).
# Load: wrk with a Lua POST script, -c1 then -c16, each for SECONDS after a warm-up, first
# straight at nginx, then through aetherflow-api. Prints requests/s, p50/p90/p99, errors, the
# mean latency added, and the server's RSS idle and after the load.
# Needs nginx and wrk (Debian: apt-get install nginx-light wrk) and builds a release binary.
# Usage: scripts/bench-gateway.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
require_toolchain
require_sandbox_runtime
for tool in nginx wrk; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "$tool is missing: apt-get install nginx-light wrk" >&2; exit 2; }
done
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
secs="${1:-20}"
cargo build --release --locked -p aetherflow-api
bin="$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)/aetherflow-api"
work="$(mktemp -d)"
cleanup() {
    [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# --- upstream: nginx answering every POST with one static completion -----------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nginx_port=$(free_port)
proxy_port=$(free_port)
answer='{"id":"chatcmpl-static","object":"chat.completion","created":1763990400,"model":"local-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}'
mkdir -p "$work/nginx"
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx/error.log;
daemon on;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx;
    fastcgi_temp_path $work/nginx;
    uwsgi_temp_path $work/nginx;
    scgi_temp_path $work/nginx;
    keepalive_requests 1000000;
    upstream static_answer {
        server 127.0.0.1:$nginx_port;
        keepalive 32;
    }
    server {
        listen 127.0.0.1:$nginx_port;
        location /v1/chat/completions {
            default_type application/json;
            return 200 '$answer';
        }
    }
    # The cost of one proxy hop on this machine, for reference: nginx in front of itself.
    server {
        listen 127.0.0.1:$proxy_port;
        location / {
            proxy_pass http://static_answer;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
NGINX
"$nginx_bin" -c "$work/nginx.conf" -p "$work"

# --- AetherFlow in front of it --------------------------------------------------------------
export AETHERFLOW_PROVIDERS__OPENAI_COMPATIBLE__BASE_URL="http://127.0.0.1:$nginx_port/v1" \
    AETHERFLOW_PROVIDERS__OPENAI_COMPATIBLE__MODEL=local-model \
    AETHERFLOW_SERVER__RATE_PER_MINUTE=100000000 AETHERFLOW_SERVER__IP_RATE_PER_MINUTE=100000000 \
    AETHERFLOW_LOG__LEVEL=error AETHERFLOW_CACHE__ENABLED=false
key="$(cd "$work" && "$bin" keys create --name bench --scopes chat 2>/dev/null)"
(cd "$work" && exec "$bin" --bind 127.0.0.1:0 > "$work/out" 2>"$work/err") &
pid=$!
for _ in $(seq 100); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.1; done
base="$(sed -n 's/^listening on //p' "$work/out")"
[ -n "$base" ] || { cat "$work/err" >&2; exit 1; }
rss() { awk '/^VmRSS/ {print $2 " kB"}' "/proc/$pid/status"; }
hwm() { awk '/^VmHWM/ {print $2 " kB"}' "/proc/$pid/status"; }
echo "aetherflow-api $base (pid $pid), idle RSS $(rss); nginx 127.0.0.1:$nginx_port"

cat > "$work/body.json" <<'JSON'
{"model": "openai-compatible/local-model", "messages": [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Say hello."}], "max_tokens": 64}
JSON
cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
local f = io.open(os.getenv("BODY_FILE"), "r")
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
if os.getenv("KEY") ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. os.getenv("KEY")
end
done = function(summary, latency, requests)
    local errors = summary.errors.connect + summary.errors.read + summary.errors.write
        + summary.errors.status + summary.errors.timeout
    io.write(string.format("RESULT rps=%.0f mean_us=%.1f p50_us=%d p90_us=%d p99_us=%d errors=%d\n",
        summary.requests / (summary.duration / 1e6), latency.mean, latency:percentile(50),
        latency:percentile(90), latency:percentile(99), errors))
end
LUA

measure() { # name url key conns
    KEY="$3" BODY_FILE="$work/body.json" wrk -t1 -c"$4" -d2s -s "$work/post.lua" "$2" >/dev/null
    KEY="$3" BODY_FILE="$work/body.json" wrk -t1 -c"$4" -d"${secs}s" -s "$work/post.lua" "$2" \
        | sed -n "s/^RESULT /$1 c=$4 /p"
}
for c in 1 16; do
    direct=$(measure "nginx      " "http://127.0.0.1:$nginx_port/v1/chat/completions" "" "$c")
    proxied=$(measure "nginx proxy" "http://127.0.0.1:$proxy_port/v1/chat/completions" "" "$c")
    # PERF_OUT=FILE profiles the server (perf, cpu-clock samples) during the run through it at
    # PERF_C connections (default 16).
    if [ -n "${PERF_OUT:-}" ] && [ "$c" = "${PERF_C:-16}" ]; then
        perf record -q -e cpu-clock -F 1999 -p "$pid" -o "$PERF_OUT" -- sleep "$((secs + 2))" &
        perf_pid=$!
    fi
    through=$(measure "aetherflow " "$base/v1/chat/completions" "$key" "$c")
    [ -n "${perf_pid:-}" ] && wait "$perf_pid" && unset perf_pid
    echo "$direct"
    echo "$proxied"
    echo "$through"
    d=$(sed -n 's/.*mean_us=\([0-9.]*\).*/\1/p' <<<"$direct")
    t=$(sed -n 's/.*mean_us=\([0-9.]*\).*/\1/p' <<<"$through")
    d99=$(sed -n 's/.*p99_us=\([0-9]*\).*/\1/p' <<<"$direct")
    t99=$(sed -n 's/.*p99_us=\([0-9]*\).*/\1/p' <<<"$through")
    p=$(sed -n 's/.*mean_us=\([0-9.]*\).*/\1/p' <<<"$proxied")
    echo "added at c=$c: mean $(python3 -c "print(round($t - $d, 1))") us, p99 $((t99 - d99)) us (an nginx proxy hop adds $(python3 -c "print(round($p - $d, 1))") us)"
done
echo "aetherflow-api RSS after the load $(rss), peak $(hwm)"
