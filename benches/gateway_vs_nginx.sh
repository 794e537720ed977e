#!/usr/bin/env bash
# The gateway's hop against the floor: Debian's nginx as a plain reverse
# proxy that checks nothing (proxy_pass, a keep-alive pool to the upstream,
# buffering off), side by side with Cola's /mcp/{slug}, in one run, against
# the same two upstreams:
#   fast        a second cola-api process; its own /mcp is the upstream
#               (2026-07-28, stateless, JSON answers): tools/call whoami and
#               tools/list;
#   everything  the reference server, @modelcontextprotocol/server-everything
#               (Node, streamableHttp: handshake era, one session, SSE
#               answers): tools/call echo and tools/list.
# For each upstream and call: straight at the upstream, through nginx and
# through Cola, with wrk at -c CONNECTIONS and on one connection. Reported:
# requests/s, p50/p99, Cola's and nginx's throughput ratio, the p50 each hop
# adds over direct, and the CPU per request of Cola, of nginx (master and
# workers) and of the upstream, from /proc/<pid>/stat before and after each
# run. Then, for the /mcp-against-/health ratio, Cola's own /health and /mcp
# whoami with their CPU per request.
#
# Every answer is checked by benches/gateway_wrk.lua (a JSON-RPC error or a
# failed tool call counts as an error). Everything it starts is stopped on
# exit. wrk, nginx, the upstreams and Cola share the machine's cores: compare
# within one run only.
#
# Usage: benches/gateway_vs_nginx.sh [-t THREADS] [-c CONNECTIONS] [-d DURATION]
#                                    [--rounds N] [--bin PATH] [--no-build]
# Env: COLA_BIN (the binary to run instead of target/release/cola-api).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

THREADS=2
CONNECTIONS=32
DURATION=10s
ROUNDS=1
MAX_RUNTIME=1800
BIN=${COLA_BIN:-$REPO/target/release/cola-api}
BUILD=1
[ -n "${COLA_BIN:-}" ] && BUILD=0
ARGS=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        -t) THREADS=$2; shift ;;
        -c) CONNECTIONS=$2; shift ;;
        -d) DURATION=$2; shift ;;
        --rounds) ROUNDS=$2; shift ;;
        --max-runtime) MAX_RUNTIME=$2; shift ;;
        --bin) BIN=$2; BUILD=0; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
# shellcheck source=common.sh
source "$REPO/benches/common.sh"
EVERYTHING_JS="$REPO/tests/typescript/node_modules/@modelcontextprotocol/server-everything/dist/index.js"

# ---- build and tools (unbounded), then re-run under a time limit ----
if [ -z "${COLA_BENCH_BOUNDED:-}" ]; then
    build_release
    [ -x "$BIN" ] || { echo "$BIN not found (build it, or pass --bin PATH)" >&2; exit 1; }
    ensure_wrk
    ensure_nginx
    if [ ! -f "$EVERYTHING_JS" ]; then
        log "installing the TypeScript suite's packages (server-everything)"
        (cd "$REPO/tests/typescript" && npm ci --no-audit --no-fund >/dev/null)
    fi
    exec env COLA_BENCH_BOUNDED=1 COLA_BIN="$BIN" timeout --signal=TERM --kill-after=20 "$MAX_RUNTIME" \
        "$0" "${ARGS[@]}" --no-build
fi

ensure_nginx
WORK=$(mktemp -d /tmp/cola-nginx-bench.XXXXXX)
PIDS=()
NGINX_PID=""
stop() { # pid
    kill -TERM "$1" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}
cleanup() {
    set +e
    [ -n "$NGINX_PID" ] && kill -QUIT "$NGINX_PID" 2>/dev/null
    for pid in "${PIDS[@]}"; do stop "$pid"; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "interrupted (time limit?)" >&2; exit 124' TERM INT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { # url what
    for _ in $(seq 300); do
        curl -sS --max-time 1 -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$2 did not answer at $1" >&2
    cat "$WORK"/*.log >&2
    exit 1
}

# ---- the upstreams ----
JWT_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
FAST_PORT=$(free_port)
FAST="http://127.0.0.1:$FAST_PORT"
log "starting the fast upstream (cola-api) on $FAST"
COLA_LISTEN="127.0.0.1:$FAST_PORT" COLA_DATABASE_URL="sqlite://$WORK/fast.db?mode=rwc" COLA_PUBLIC_URL="$FAST" \
    COLA_JWT_SECRET="$JWT_SECRET" RUST_LOG=warn "$BIN" >"$WORK/fast.log" 2>&1 &
FAST_PID=$!
PIDS+=("$FAST_PID")
EVERYTHING_PORT=$(free_port)
EVERYTHING="http://127.0.0.1:$EVERYTHING_PORT"
log "starting server-everything (streamableHttp) on $EVERYTHING"
PORT=$EVERYTHING_PORT node "$EVERYTHING_JS" streamableHttp >/dev/null 2>"$WORK/everything.log" &
EVERYTHING_PID=$!
PIDS+=("$EVERYTHING_PID")
wait_http "$FAST/health" "the fast upstream"
wait_http "$EVERYTHING/mcp" "server-everything"

# ---- Cola, the gateway ----
COLA_PORT=$(free_port)
COLA="http://127.0.0.1:$COLA_PORT"
log "starting $BIN on $COLA (SQLite)"
COLA_LISTEN="127.0.0.1:$COLA_PORT" COLA_DATABASE_URL="sqlite://$WORK/cola.db?mode=rwc" COLA_PUBLIC_URL="$COLA" \
    COLA_JWT_SECRET="$JWT_SECRET" COLA_SECRETS_KEY="$(head -c32 /dev/urandom | base64)" \
    COLA_GATEWAY_ALLOWED_NETWORKS=127.0.0.0/8 RUST_LOG=warn "$BIN" >"$WORK/cola.log" 2>&1 &
COLA_PID=$!
PIDS+=("$COLA_PID")
wait_http "$COLA/health" "cola-api"

TOKEN=$(COLA_JWT_SECRET="$JWT_SECRET" "$BIN" dev-token --tenant "$(python3 -c 'import uuid; print(uuid.uuid4())')" \
    --user "$(python3 -c 'import uuid; print(uuid.uuid4())')" --role admin | tail -1)
api() { # base method path body
    curl -fsS --max-time 10 -X "$2" "$1$3" -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' -d "$4"
}
UP_KEY=$(api "$FAST" POST /api/mcp/keys '{"name":"the gateway'"'"'s credential"}' | jq -r .key)
api "$COLA" POST /api/mcp/servers \
    "{\"slug\":\"fast\",\"name\":\"fast\",\"url\":\"$FAST/mcp\",\"headers\":{\"Authorization\":\"Bearer $UP_KEY\"}}" >/dev/null
api "$COLA" POST /api/mcp/servers \
    "{\"slug\":\"everything\",\"name\":\"everything\",\"url\":\"$EVERYTHING/mcp\"}" >/dev/null
ALL='{"allowed_tools":null,"allowed_resources":null,"allowed_prompts":null}'
KEY=$(api "$COLA" POST /api/mcp/keys \
    "{\"name\":\"bench\",\"permissions\":{\"read\":true,\"write\":false,\"servers\":{\"fast\":$ALL,\"everything\":$ALL}}}" |
    jq -r .key)

# ---- nginx: proxy_pass and nothing else ----
NGINX_PORT=$(free_port)
NGINX="http://127.0.0.1:$NGINX_PORT"
cat >"$WORK/nginx.conf" <<EOF
daemon off;
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx-body;
    proxy_temp_path $WORK/nginx-proxy;
    upstream fast { server 127.0.0.1:$FAST_PORT; keepalive 64; }
    upstream everything { server 127.0.0.1:$EVERYTHING_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        keepalive_requests 1000000;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_buffering off;
        proxy_request_buffering off;
        location = /fast { proxy_pass http://fast/mcp; }
        location = /everything { proxy_pass http://everything/mcp; }
    }
}
EOF
log "starting nginx on $NGINX"
"$NGINX_BIN" -c "$WORK/nginx.conf" -p "$WORK" >"$WORK/nginx.out" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_http "$NGINX/fast" "nginx"

# ---- one session per path at server-everything (handshake era) ----
LEGACY=2025-11-25
open_session() { # url [key]: prints the Mcp-Session-Id
    local auth=() id
    [ -n "${2:-}" ] && auth=(-H "Authorization: Bearer $2")
    id=$(curl -sS --max-time 10 -D - -o /dev/null -X POST "$1" "${auth[@]}" \
        -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
        -H "MCP-Protocol-Version: $LEGACY" \
        -d "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"$LEGACY\",\"capabilities\":{},\"clientInfo\":{\"name\":\"wrk\",\"version\":\"0\"}}}" |
        tr -d '\r' | awk -F': ' 'tolower($1) == "mcp-session-id" { print $2 }')
    [ -n "$id" ] || { echo "no session from $1" >&2; exit 1; }
    curl -fsS --max-time 10 -o /dev/null -X POST "$1" "${auth[@]}" -H 'Content-Type: application/json' \
        -H 'Accept: application/json, text/event-stream' -H "MCP-Protocol-Version: $LEGACY" \
        -H "Mcp-Session-Id: $id" -d '{"jsonrpc":"2.0","method":"notifications/initialized"}'
    echo "$id"
}
SESSION_DIRECT=$(open_session "$EVERYTHING/mcp")
SESSION_NGINX=$(open_session "$NGINX/everything")
SESSION_COLA=$(open_session "$COLA/mcp/everything" "$KEY")

# ---- measuring ----
declare -A R
CLK_TCK=$(getconf CLK_TCK)
ticks() { # pids… : CPU time (user + system) so far, in clock ticks
    local pid sum=0
    for pid in "$@"; do sum=$((sum + $(awk '{ print $14 + $15 }' "/proc/$pid/stat"))); done
    echo "$sum"
}
nginx_pids() { echo "$NGINX_PID" $(pgrep -P "$NGINX_PID"); }
per_request() { awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { printf "%.1f", (n > 0 ? t / hz * 1e6 / n : 0) }'; }
ms() { awk -v us="$1" 'BEGIN { printf "%.3f", us / 1000 }'; }
# run label url connections era method tool args key session upstream-pid
run() {
    local label=$1 out c0 n0 u0 c1 n1 u1 field
    c0=$(ticks "$COLA_PID"); n0=$(ticks $(nginx_pids)); u0=$(ticks "${10}")
    out=$(WRK_ERA=$4 WRK_METHOD=$5 WRK_TOOL=$6 WRK_ARGS=$7 COLA_BENCH_KEY=$8 WRK_SESSION=$9 \
        wrk -t"$(( $3 < THREADS ? $3 : THREADS ))" -c"$3" -d"$DURATION" --timeout 5s \
        -s "$REPO/benches/gateway_wrk.lua" "$2" | grep '^RESULT')
    c1=$(ticks "$COLA_PID"); n1=$(ticks $(nginx_pids)); u1=$(ticks "${10}")
    for field in $out; do
        [ "$field" = RESULT ] && continue
        R[$label.${field%%=*}]=${field#*=}
    done
    R[$label.cola_us]=$(per_request $((c1 - c0)) "${R[$label.requests]}")
    R[$label.nginx_us]=$(per_request $((n1 - n0)) "${R[$label.requests]}")
    R[$label.up_us]=$(per_request $((u1 - u0)) "${R[$label.requests]}")
    printf '%-30s c=%-3s %9s req/s  p50 %7s ms  p99 %7s ms  errors %s+%s  CPU us/req: Cola %6s nginx %6s upstream %6s\n' \
        "$label" "$3" "${R[$label.rps]}" "$(ms "${R[$label.p50_us]}")" "$(ms "${R[$label.p99_us]}")" \
        "${R[$label.errors]}" "${R[$label.rpc_errors]}" "${R[$label.cola_us]}" "${R[$label.nginx_us]}" "${R[$label.up_us]}"
}
# measure upstream call: direct, nginx and Cola, at -c and on one connection
measure() {
    local up=$1 what=$2 era method tool args direct via_nginx via_cola up_key up_pid s_direct s_nginx s_cola c suffix
    if [ "$what" = call ]; then method=tools/call; else method=tools/list; fi
    if [ "$up" = fast ]; then
        era=modern tool=whoami args='{}' direct="$FAST/mcp" up_key=$UP_KEY up_pid=$FAST_PID
        s_direct="" s_nginx="" s_cola=""
    else
        era=legacy tool=echo args='{"message":"cola"}' direct="$EVERYTHING/mcp" up_key="" up_pid=$EVERYTHING_PID
        s_direct=$SESSION_DIRECT s_nginx=$SESSION_NGINX s_cola=$SESSION_COLA
    fi
    via_nginx="$NGINX/$up" via_cola="$COLA/mcp/$up"
    for c in "$CONNECTIONS" 1; do
        suffix=""; [ "$c" = 1 ] && suffix=.1
        run "$up.$what.direct$suffix" "$direct" "$c" "$era" "$method" "$tool" "$args" "$up_key" "$s_direct" "$up_pid"
        # nginx passes the client's headers on: the client sends the upstream's own credential.
        run "$up.$what.nginx$suffix" "$via_nginx" "$c" "$era" "$method" "$tool" "$args" "$up_key" "$s_nginx" "$up_pid"
        run "$up.$what.cola$suffix" "$via_cola" "$c" "$era" "$method" "$tool" "$args" "$KEY" "$s_cola" "$up_pid"
    done
}

if readelf -S "$BIN" 2>/dev/null | grep -q '\.debug_info'; then BUILD_KIND=debug; else BUILD_KIND=release; fi
echo "# the gateway against nginx: wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS round(s)"
echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "# cola-api: $BIN ($BUILD_KIND build); $("$NGINX_BIN" -v 2>&1); node $(node --version);" \
    "server-everything $(node -p "require('$REPO/tests/typescript/node_modules/@modelcontextprotocol/server-everything/package.json').version")"
[ "$BUILD_KIND" = release ] || echo "# !! not a release build: the figures say nothing about production speed"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
added() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.3f", (a - b) / 1000 }'; }
SUMMARY=()
for round in $(seq "$ROUNDS"); do
    echo
    echo "## round $round"
    for up in fast everything; do
        for what in call list; do
            measure "$up" "$what"
            k="$up.$what"
            SUMMARY+=("$(printf '%-16s %-5s %9s %9s %6s %8s %8s %10s %10s %9s %9s' "$up" "$what" \
                "${R[$k.nginx.rps]}" "${R[$k.cola.rps]}" "$(ratio "${R[$k.cola.rps]}" "${R[$k.nginx.rps]}")" \
                "$(added "${R[$k.nginx.p50_us]}" "${R[$k.direct.p50_us]}")" \
                "$(added "${R[$k.cola.p50_us]}" "${R[$k.direct.p50_us]}")" \
                "$(added "${R[$k.nginx.1.p50_us]}" "${R[$k.direct.1.p50_us]}")" \
                "$(added "${R[$k.cola.1.p50_us]}" "${R[$k.direct.1.p50_us]}")" \
                "${R[$k.nginx.nginx_us]}" "${R[$k.cola.cola_us]}")")
        done
    done
    echo
    echo "## Cola's own /health and /mcp whoami"
    run "health.$round" "$COLA/health" "$CONNECTIONS" modern GET "" "" "" "" "$COLA_PID"
    run "whoami.$round" "$COLA/mcp" "$CONNECTIONS" modern tools/call whoami '{}' "$KEY" "" "$COLA_PID"
    SUMMARY+=("$(printf '/mcp whoami / /health: %s (%s / %s req/s); Cola CPU per request %s us / %s us' \
        "$(ratio "${R[whoami.$round.rps]}" "${R[health.$round.rps]}")" "${R[whoami.$round.rps]}" "${R[health.$round.rps]}" \
        "${R[whoami.$round.cola_us]}" "${R[health.$round.cola_us]}")")
done

echo
echo "## summary (c=$CONNECTIONS unless marked c=1; added p50 is over direct, in ms; CPU in us per request)"
printf '%-16s %-5s %9s %9s %6s %8s %8s %10s %10s %9s %9s\n' upstream call 'nginx/s' 'Cola/s' ratio \
    '+p50 ngx' '+p50 Cola' '+p50 ngx 1' '+p50 Cola 1' 'ngx CPU' 'Cola CPU'
printf '%s\n' "${SUMMARY[@]}"
if grep -qiE 'error|panic' "$WORK/cola.log"; then
    echo
    echo "Cola's log (errors):"
    grep -iE 'error|panic' "$WORK/cola.log" | head -20
fi
