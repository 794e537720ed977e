#!/usr/bin/env bash
# Gateway benchmark of cola-api (issue 13). Builds the release binary, starts
# it on a fresh SQLite file on 127.0.0.1 next to a real upstream MCP server
# (tests/python/upstream_server.py: the official Python SDK's server, run
# with --json --stateless, so that every answer is one JSON body and no
# session is kept), registers the upstream, creates a key granted on it, and
# in one run measures with wrk on loopback:
#   (a) tools/call `search` and tools/list straight at the upstream and
#       through Cola's /mcp/{slug}: requests/s, p50/p99, and the p50 Cola
#       adds, at -c CONNECTIONS and on one connection (the added latency
#       without queueing);
#   (b) tools/call whoami and tools/list at Cola's own /mcp, for reference;
#   (c) Cola's CPU per request in each run (utime + stime from
#       /proc/<pid>/stat, before and after, divided by the requests), and
#       the upstream's;
#   (e) the same in front of a fast upstream: a second cola-api process,
#       whose own /mcp is registered as server `fast` (tools/call whoami and
#       tools/list, straight at it and through the gateway); the two
#       processes' CPU is counted apart, so Cola's figure is the gateway's
#       own;
#   (d) Cola's resident memory over long SSE streams: --streams calls at once
#       of a tool streaming progress for --stream-seconds (a second upstream,
#       answering with SSE), VmRSS sampled before, at the start, every
#       second, at the end and after (benches/gateway_stream.py).
# Every answer wrk gets is checked (benches/gateway_wrk.lua): a JSON-RPC
# error or a failed tool call counts as an error. Prints a summary table.
# Everything it starts is stopped on exit; the run after the build is bounded
# by --max-runtime.
#
# One upstream process uses at most one core: with --upstreams N, N
# processes share the upstream's port (SO_REUSEPORT). The summary says when
# the upstream, not Cola, set the pace. With --era legacy the SDK's
# stateless handshake-era answers take ~44 ms each on one connection, direct
# as well as through Cola (the upstream's own stall): those one-connection
# figures say nothing about Cola. The SSE streams of (d) are 2026-07-28
# whatever --era says.
#
# Usage: benches/gateway.sh [-t THREADS] [-c CONNECTIONS] [-d DURATION]
#                           [--era modern|legacy] [--upstreams N]
#                           [--streams N] [--stream-seconds N]
#                           [--max-runtime SECONDS] [--bin PATH] [--no-build]
# Env: COLA_BIN (the binary to run instead of target/release/cola-api; like
#      --bin, it skips the build), COLA_USAGE_FLUSH_INTERVAL_MS (default 5000).
# The summary says whether the binary is a release build (no debug info).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

THREADS=2
CONNECTIONS=32
DURATION=10s
ERA=modern
UPSTREAMS=1
STREAMS=20
STREAM_SECONDS=30
MAX_RUNTIME=900
BIN=${COLA_BIN:-$REPO/target/release/cola-api}
BUILD=1
[ -n "${COLA_BIN:-}" ] && BUILD=0
ARGS=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        -t) THREADS=$2; shift ;;
        -c) CONNECTIONS=$2; shift ;;
        -d) DURATION=$2; shift ;;
        -t*) THREADS=${1#-t} ;;
        -c*) CONNECTIONS=${1#-c} ;;
        -d*) DURATION=${1#-d} ;;
        --era) ERA=$2; shift ;;
        --upstreams) UPSTREAMS=$2; shift ;;
        --streams) STREAMS=$2; shift ;;
        --stream-seconds) STREAM_SECONDS=$2; shift ;;
        --max-runtime) MAX_RUNTIME=$2; shift ;;
        --bin) BIN=$2; BUILD=0; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,39p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
case "$ERA" in modern|legacy) ;; *) echo "--era must be modern or legacy" >&2; exit 2 ;; esac
FLUSH_MS=${COLA_USAGE_FLUSH_INTERVAL_MS:-5000}
# shellcheck source=common.sh
source "$REPO/benches/common.sh"

# ---- build and tools (unbounded: cargo, pip), then re-run under a time limit ----
if [ -z "${COLA_BENCH_BOUNDED:-}" ]; then
    build_release
    [ -x "$BIN" ] || { echo "$BIN not found (build it, or pass --bin PATH)" >&2; exit 1; }
    ensure_wrk
    # The upstream is the Python test server: <repo>/.venv with the
    # requirements of tests/python, as tests/python/run.sh prepares it.
    log "preparing $REPO/.venv"
    (
        here="$REPO/tests/python" repo="$REPO" COLA_BIN="$BIN"
        # shellcheck source=../tests/venv.sh
        source "$REPO/tests/venv.sh"
    )
    exec env COLA_BENCH_BOUNDED=1 COLA_BIN="$BIN" timeout --signal=TERM --kill-after=20 "$MAX_RUNTIME" \
        "$0" "${ARGS[@]}" --no-build
fi

PY="$REPO/.venv/bin/python"
WORK=$(mktemp -d /tmp/cola-gateway-bench.XXXXXX)
SERVER_PID=""
UPSTREAM_PIDS=()
SSE_PID=""
FAST_PID=""
stop() { # pid
    kill -TERM "$1" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}
cleanup() {
    set +e
    [ -n "$SERVER_PID" ] && stop "$SERVER_PID"
    for pid in "${UPSTREAM_PIDS[@]}"; do stop "$pid"; done
    [ -n "$SSE_PID" ] && stop "$SSE_PID"
    [ -n "$FAST_PID" ] && stop "$FAST_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "interrupted (time limit?)" >&2; exit 124' TERM INT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { # url pid what
    for _ in $(seq 300); do
        curl -fsS --max-time 1 "$1" >/dev/null 2>&1 && return 0
        kill -0 "$2" 2>/dev/null || { echo "$3 exited:" >&2; cat "$WORK"/*.log >&2; exit 1; }
        sleep 0.1
    done
    echo "$3 did not answer at $1" >&2
    exit 1
}

# ---- the upstreams ----
UP_PORT=$(free_port)
SSE_PORT=$(free_port)
REUSE=()
[ "$UPSTREAMS" -gt 1 ] && REUSE=(--reuse-port)
log "starting $UPSTREAMS upstream process(es) (--json --stateless) on 127.0.0.1:$UP_PORT"
for i in $(seq "$UPSTREAMS"); do
    "$PY" "$REPO/tests/python/upstream_server.py" "$UP_PORT" --json --stateless --no-record "${REUSE[@]}" \
        >"$WORK/upstream.$i.log" 2>&1 &
    UPSTREAM_PIDS+=("$!")
done
"$PY" "$REPO/tests/python/upstream_server.py" "$SSE_PORT" --stateless --no-record >"$WORK/upstream-sse.log" 2>&1 &
SSE_PID=$!
for pid in "${UPSTREAM_PIDS[@]}"; do wait_http "http://127.0.0.1:$UP_PORT/record" "$pid" "the upstream"; done
wait_http "http://127.0.0.1:$SSE_PORT/record" "$SSE_PID" "the SSE upstream"
UPSTREAM="http://127.0.0.1:$UP_PORT/mcp"

# ---- Cola ----
PORT=$(free_port)
export COLA_LISTEN="127.0.0.1:$PORT" COLA_DATABASE_URL="sqlite://$WORK/cola.db?mode=rwc" RUST_LOG=warn \
    COLA_JWT_SECRET="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" \
    COLA_SECRETS_KEY="$(head -c32 /dev/urandom | base64)" \
    COLA_GATEWAY_ALLOWED_NETWORKS=127.0.0.0/8 COLA_USAGE_FLUSH_INTERVAL_MS="$FLUSH_MS"
BASE="http://127.0.0.1:$PORT"
log "starting $BIN on $COLA_LISTEN (SQLite)"
"$BIN" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
wait_http "$BASE/health" "$SERVER_PID" "cola-api"

TENANT=$(python3 -c 'import uuid; print(uuid.uuid4())')
USER_ID=$(python3 -c 'import uuid; print(uuid.uuid4())')
TOKEN=$("$BIN" dev-token --tenant "$TENANT" --user "$USER_ID" --role admin | tail -1)
api() { # method path body
    curl -fsS --max-time 10 -X "$1" "$BASE$2" -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' -d "$3"
}
api POST /api/mcp/servers "{\"slug\":\"bench\",\"name\":\"bench upstream\",\"url\":\"$UPSTREAM\"}" >/dev/null
api POST /api/mcp/servers \
    "{\"slug\":\"bench-sse\",\"name\":\"bench SSE upstream\",\"url\":\"http://127.0.0.1:$SSE_PORT/mcp\"}" >/dev/null
ALL='{"allowed_tools":null,"allowed_resources":null,"allowed_prompts":null}'
KEY=$(api POST /api/mcp/keys \
    "{\"name\":\"gateway bench\",\"permissions\":{\"read\":true,\"write\":false,\"servers\":{\"bench\":$ALL,\"bench-sse\":$ALL}}}" |
    jq -r .key)
export COLA_BENCH_KEY=$KEY
GATEWAY="$BASE/mcp/bench"

# ---- one request as wrk sends it, to check each target answers for real ----
request() { # url method tool args
    local meta='' params headers=()
    if [ "$ERA" = modern ]; then
        meta='"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"curl","version":"0"}}'
        headers=(-H 'MCP-Protocol-Version: 2026-07-28' -H "Mcp-Method: $2")
        [ "$2" = tools/call ] && headers+=(-H "Mcp-Name: $3")
    else
        headers=(-H 'MCP-Protocol-Version: 2025-11-25')
    fi
    if [ "$2" = tools/call ]; then params="{\"name\":\"$3\",\"arguments\":$4${meta:+,$meta}}"
    else params="{$meta}"; fi
    curl -sS --max-time 10 -X POST "$1" -H "Authorization: Bearer $KEY" \
        -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' "${headers[@]}" \
        -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$2\",\"params\":$params}"
}
expect() { # what pattern answer
    grep -q "$2" <<<"$3" || { echo "$1 did not answer as expected: $3" >&2; exit 1; }
}
QUERY='{"query":"cola"}'
expect "upstream tools/call" 'results for cola' "$(request "$UPSTREAM" tools/call search "$QUERY")"
expect "gateway tools/call" 'results for cola' "$(request "$GATEWAY" tools/call search "$QUERY")"
expect "upstream tools/list" '"stream_slowly"' "$(request "$UPSTREAM" tools/list)"
expect "gateway tools/list" '"stream_slowly"' "$(request "$GATEWAY" tools/list)"
expect "/mcp tools/call whoami" "${KEY:0:17}" "$(request "$BASE/mcp" tools/call whoami '{}')"
expect "/mcp tools/list" '"whoami"' "$(request "$BASE/mcp" tools/list)"

# ---- helpers ----
declare -A R
CLK_TCK=$(getconf CLK_TCK)
ticks() { # pids… : CPU time (user + system) used so far, in clock ticks
    local pid sum=0
    for pid in "$@"; do sum=$((sum + $(awk '{ print $14 + $15 }' "/proc/$pid/stat"))); done
    echo "$sum"
}
ms() { awk -v us="$1" 'BEGIN { printf "%.3f", us / 1000 }'; }
per_request() { awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { printf "%.1f", (n > 0 ? t / hz * 1e6 / n : 0) }'; }
MEASURED=() # the upstream process(es) whose CPU run_wrk counts
run_wrk() { # label url connections threads method tool args
    local out c0 c1 u0 u1 field
    [ ${#MEASURED[@]} -gt 0 ] || MEASURED=("${UPSTREAM_PIDS[@]}")
    c0=$(ticks "$SERVER_PID")
    u0=$(ticks "${MEASURED[@]}")
    out=$(WRK_METHOD=$5 WRK_TOOL=${6:-} WRK_ARGS=${7:-} WRK_ERA=$ERA \
        wrk -t"$4" -c"$3" -d"$DURATION" --timeout 5s -s "$REPO/benches/gateway_wrk.lua" "$2" | grep '^RESULT')
    c1=$(ticks "$SERVER_PID")
    u1=$(ticks "${MEASURED[@]}")
    for field in $out; do
        [ "$field" = RESULT ] && continue
        R[$1.${field%%=*}]=${field#*=}
    done
    R[$1.conns]=$3
    R[$1.cola_us]=$(per_request $((c1 - c0)) "${R[$1.requests]}")
    R[$1.up_us]=$(per_request $((u1 - u0)) "${R[$1.requests]}")
    # How many cores the upstream kept busy: 1.0 is all one process can do.
    R[$1.up_cores]=$(awk -v t=$((u1 - u0)) -v hz="$CLK_TCK" -v s="${R[$1.seconds]}" 'BEGIN { printf "%.2f", t / hz / s }')
    R[$1.errors_all]=$((R[$1.errors] + R[$1.rpc_errors]))
    printf '%-34s c=%-4s %9s req/s  p50 %8s ms  p99 %8s ms  errors %s (rpc %s)  Cola CPU %7s us/req  upstream CPU %7s us/req (%s cores)\n' \
        "$1" "$3" "${R[$1.rps]}" "$(ms "${R[$1.p50_us]}")" "$(ms "${R[$1.p99_us]}")" "${R[$1.errors]}" \
        "${R[$1.rpc_errors]}" "${R[$1.cola_us]}" "${R[$1.up_us]}" "${R[$1.up_cores]}"
}

# The release profile carries no debug info; the dev profile does.
if readelf -S "$BIN" 2>/dev/null | grep -q '\.debug_info'; then BUILD_KIND=debug
elif command -v readelf >/dev/null; then BUILD_KIND=release
else BUILD_KIND=unknown; fi
echo "# cola-api gateway benchmark: wrk -t$THREADS -c$CONNECTIONS -d$DURATION, era $ERA, $UPSTREAMS upstream process(es)"
echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "# binary: $BIN ($BUILD_KIND build)"
[ "$BUILD_KIND" = release ] || echo "# !! not a release build: the figures say nothing about production speed"
echo "# upstream: tests/python/upstream_server.py --json --stateless (Python MCP SDK $("$PY" -c 'import importlib.metadata as m; print(m.version("mcp"))'), uvicorn)"

echo
echo "## (a) + (c) straight at the upstream and through Cola /mcp/bench"
for what in call list; do
    if [ "$what" = call ]; then set -- tools/call search "$QUERY"; else set -- tools/list; fi
    run_wrk "upstream.$what" "$UPSTREAM" "$CONNECTIONS" "$THREADS" "$@"
    run_wrk "gateway.$what" "$GATEWAY" "$CONNECTIONS" "$THREADS" "$@"
    run_wrk "upstream.$what.1" "$UPSTREAM" 1 1 "$@"
    run_wrk "gateway.$what.1" "$GATEWAY" 1 1 "$@"
done
echo
echo "## (b) Cola's own /mcp, for reference"
run_wrk "mcp.call" "$BASE/mcp" "$CONNECTIONS" "$THREADS" tools/call whoami '{}'
run_wrk "mcp.list" "$BASE/mcp" "$CONNECTIONS" "$THREADS" tools/list
run_wrk "mcp.call.1" "$BASE/mcp" 1 1 tools/call whoami '{}'
run_wrk "mcp.list.1" "$BASE/mcp" 1 1 tools/list

echo
echo "## (e) a fast upstream: a second cola-api process, its /mcp registered as server \`fast\`"
# Its own SQLite file and port, the same JWT secret (so the bench token
# manages it too); the upstream credential is a key of that instance.
FAST_PORT=$(free_port)
FAST_BASE="http://127.0.0.1:$FAST_PORT"
COLA_LISTEN="127.0.0.1:$FAST_PORT" COLA_DATABASE_URL="sqlite://$WORK/fast.db?mode=rwc" COLA_PUBLIC_URL="$FAST_BASE" \
    "$BIN" >"$WORK/fast.log" 2>&1 &
FAST_PID=$!
wait_http "$FAST_BASE/health" "$FAST_PID" "the fast upstream (cola-api)"
UP_KEY=$(curl -fsS --max-time 10 -X POST "$FAST_BASE/api/mcp/keys" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d '{"name":"gateway bench, upstream credential"}' | jq -r .key)
api POST /api/mcp/servers \
    "{\"slug\":\"fast\",\"name\":\"a fast upstream\",\"url\":\"$FAST_BASE/mcp\",\"headers\":{\"Authorization\":\"Bearer $UP_KEY\"}}" >/dev/null
FAST_KEY=$(api POST /api/mcp/keys \
    "{\"name\":\"gateway bench, fast\",\"permissions\":{\"read\":true,\"write\":false,\"servers\":{\"fast\":$ALL}}}" |
    jq -r .key)
# Through the gateway, whoami answers as the upstream credential's key.
expect "gateway tools/call whoami (fast)" "${UP_KEY:0:17}" "$(KEY=$FAST_KEY request "$BASE/mcp/fast" tools/call whoami '{}')"
MEASURED=("$FAST_PID")
for what in call list; do
    if [ "$what" = call ]; then set -- tools/call whoami '{}'; else set -- tools/list; fi
    COLA_BENCH_KEY=$UP_KEY run_wrk "fast.direct.$what" "$FAST_BASE/mcp" "$CONNECTIONS" "$THREADS" "$@"
    COLA_BENCH_KEY=$FAST_KEY run_wrk "fast.gateway.$what" "$BASE/mcp/fast" "$CONNECTIONS" "$THREADS" "$@"
    COLA_BENCH_KEY=$UP_KEY run_wrk "fast.direct.$what.1" "$FAST_BASE/mcp" 1 1 "$@"
    COLA_BENCH_KEY=$FAST_KEY run_wrk "fast.gateway.$what.1" "$BASE/mcp/fast" 1 1 "$@"
done
MEASURED=()

echo
echo "## (d) Cola's RSS over $STREAMS SSE stream(s) of ${STREAM_SECONDS}s through /mcp/bench-sse"
# One list first, so that the streams start on a known tool catalogue (the
# first calls would otherwise wait for its fetch).
expect "gateway tools/list (SSE upstream)" '"stream_slowly"' "$(request "$BASE/mcp/bench-sse" tools/list)"
STREAM_OUT=$("$PY" "$REPO/benches/gateway_stream.py" --url "$BASE/mcp/bench-sse" --key "$KEY" --pid "$SERVER_PID" \
    --seconds "$STREAM_SECONDS" --streams "$STREAMS")
echo "$STREAM_OUT"
STREAM_RESULT=$(grep '^RESULT' <<<"$STREAM_OUT")
for field in $STREAM_RESULT; do
    [ "$field" = RESULT ] && continue
    R[stream.${field%%=*}]=${field#*=}
done

# ---- summary ----
mib() { awk -v kib="$1" 'BEGIN { printf "%.1f", kib / 1024 }'; }
sub_ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.3f", (a - b) / 1000 }'; }
echo
echo "## summary"
[ "$BUILD_KIND" = release ] || echo "!! figures from a $BUILD_KIND build ($BIN): not representative of a release build"
printf '%-38s %5s %10s %9s %9s %7s %10s %10s\n' target conns 'req/s' 'p50 ms' 'p99 ms' errors 'Cola us' 'upstr. us'
row() { # label title
    printf '%-38s %5s %10s %9s %9s %7s %10s %10s\n' "$2" "${R[$1.conns]}" "${R[$1.rps]}" "$(ms "${R[$1.p50_us]}")" \
        "$(ms "${R[$1.p99_us]}")" "${R[$1.errors_all]}" "${R[$1.cola_us]}" "${R[$1.up_us]}"
}
pairs() { # direct-label gateway-label direct-title gateway-title tool: the rows of one upstream
    local what title suffix
    for what in call list; do
        if [ "$what" = call ]; then title="tools/call $5"; else title="tools/list"; fi
        for suffix in "" .1; do
            row "$1.$what$suffix" "$3 $title"
            row "$2.$what$suffix" "$4 $title"
        done
    done
}
pairs upstream gateway "upstream direct  " "Cola /mcp/bench  " search
row mcp.call "Cola /mcp          tools/call whoami"
row mcp.call.1 "Cola /mcp          tools/call whoami"
row mcp.list "Cola /mcp          tools/list"
row mcp.list.1 "Cola /mcp          tools/list"
pairs fast.direct fast.gateway "fast upstream    " "Cola /mcp/fast   " whoami
echo "(Cola us / upstr. us: CPU time per request of Cola's process and of the upstream's)"
for what in call list; do
    echo "fast upstream, tools/$what: through the gateway / direct req/s" \
        "$(awk -v a="${R[fast.gateway.$what.rps]}" -v b="${R[fast.direct.$what.rps]}" 'BEGIN { printf "%.2f", a / b }') at $CONNECTIONS connections," \
        "$(awk -v a="${R[fast.gateway.$what.1.rps]}" -v b="${R[fast.direct.$what.1.rps]}" 'BEGIN { printf "%.2f", a / b }') on 1;" \
        "added p50 $(sub_ms "${R[fast.gateway.$what.1.p50_us]}" "${R[fast.direct.$what.1.p50_us]}") ms on 1 connection;" \
        "the gateway's own CPU per request ${R[fast.gateway.$what.cola_us]} us ($CONNECTIONS conns), ${R[fast.gateway.$what.1.cola_us]} us (1 conn);" \
        "the upstream's ${R[fast.direct.$what.up_us]} us direct, ${R[fast.gateway.$what.up_us]} us through Cola"
done
echo
for what in call list; do
    echo "added p50 by Cola, tools/$what: $(sub_ms "${R[gateway.$what.1.p50_us]}" "${R[upstream.$what.1.p50_us]}") ms on 1 connection," \
        "$(sub_ms "${R[gateway.$what.p50_us]}" "${R[upstream.$what.p50_us]}") ms at $CONNECTIONS connections;" \
        "Cola CPU per gateway request ${R[gateway.$what.cola_us]} us ($CONNECTIONS conns), ${R[gateway.$what.1.cola_us]} us (1 conn)"
done
for what in call list; do
    bound=$(awk -v c="${R[upstream.$what.up_cores]}" -v n="$UPSTREAMS" 'BEGIN { print (c >= 0.85 * n ? "yes" : "no") }')
    echo "upstream busy at $CONNECTIONS connections, tools/$what direct: ${R[upstream.$what.up_cores]} cores of $UPSTREAMS process(es)" \
        "-> the upstream sets the pace: $bound (through Cola: ${R[gateway.$what.up_cores]} cores)"
done
echo "SSE: ${R[stream.streams]} stream(s) x ${STREAM_SECONDS}s (${R[stream.events]} progress events, longest gap ${R[stream.max_gap_ms]} ms):" \
    "Cola RSS before $(mib "${R[stream.rss_before_kib]}") MiB, start $(mib "${R[stream.rss_start_kib]}") MiB," \
    "end $(mib "${R[stream.rss_end_kib]}") MiB ($(awk -v a="${R[stream.rss_end_kib]}" -v b="${R[stream.rss_start_kib]}" 'BEGIN { printf "%+d", a - b }') KiB over the streams)," \
    "after $(mib "${R[stream.rss_after_kib]}") MiB, peak $(mib "${R[stream.rss_peak_kib]}") MiB;" \
    "per open stream $(awk -v a="${R[stream.rss_start_kib]}" -v b="${R[stream.rss_before_kib]}" -v n="${R[stream.streams]}" 'BEGIN { printf "%.1f", (a - b) / n }') KiB"
if grep -qiE 'error|panic' "$WORK/server.log"; then
    echo
    echo "server log (errors):"
    grep -iE 'error|panic' "$WORK/server.log" | head -20
fi
