#!/usr/bin/env bash
# Load benchmark of cola-api (issue 4). Builds the release binary, starts it on
# a fresh PostgreSQL database (default) or SQLite (--sqlite) on 127.0.0.1,
# creates a key, and in one run measures:
#   (a) GET /health
#   (b) POST /mcp tools/call whoami with a cached key (same wrk settings)
#   (c) the cold path: first use of many distinct keys, against a bare argon2id
#       verification with the same parameters
#   (d) database writes per admitted request during (b)
#   (e) (a), (b) and (f) again with 10,000 more keys in the database
#   (f) POST /api/mcp/verify of the cached key for one tool, by a server token
# and prints requests/s, p50/p99 latency, the authenticated/health ratio and
# writes per admitted request. Everything it starts is stopped on exit; the
# run after the build is bounded by --max-runtime.
#
# Usage: benches/load.sh [--sqlite] [-t THREADS] [-c CONNECTIONS] [-d DURATION]
#                        [--cold-keys N] [--bulk-keys N] [--rounds N]
#                        [--max-runtime SECONDS] [--no-build]
# Env: COLA_BENCH_PG_BASE (default postgres://postgres@127.0.0.1:5432),
#      COLA_USAGE_FLUSH_INTERVAL_MS (default 5000, passed to the server).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

BACKEND=postgres
THREADS=2
CONNECTIONS=32
DURATION=10s
COLD_KEYS=200
BULK_KEYS=10000
ROUNDS=1
MAX_RUNTIME=900
BUILD=1
ARGS=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --sqlite) BACKEND=sqlite ;;
        --postgres) BACKEND=postgres ;;
        -t) THREADS=$2; shift ;;
        -c) CONNECTIONS=$2; shift ;;
        -d) DURATION=$2; shift ;;
        -t*) THREADS=${1#-t} ;;
        -c*) CONNECTIONS=${1#-c} ;;
        -d*) DURATION=${1#-d} ;;
        --cold-keys) COLD_KEYS=$2; shift ;;
        --bulk-keys) BULK_KEYS=$2; shift ;;
        --rounds) ROUNDS=$2; shift ;;
        --max-runtime) MAX_RUNTIME=$2; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
PG_BASE=${COLA_BENCH_PG_BASE:-postgres://postgres@127.0.0.1:5432}
FLUSH_MS=${COLA_USAGE_FLUSH_INTERVAL_MS:-5000}
# shellcheck source=common.sh
source "$REPO/benches/common.sh"

# ---- build and tools (unbounded: cargo), then re-run under a time limit ----
if [ -z "${COLA_BENCH_BOUNDED:-}" ]; then
    build_release
    ensure_wrk
    # The yardstick for the cold path: a bare argon2id verify, same crate and
    # version as the server, built in a scratch crate outside the workspace.
    ARGON2_VERSION=$(awk '/^name = "argon2"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
    TOOL_DIR="$REPO/target/bench-tools/argon2-verify"
    mkdir -p "$TOOL_DIR"
    cat >"$TOOL_DIR/Cargo.toml" <<EOF
[package]
name = "argon2-verify"
version = "0.0.0"
edition = "2024"
publish = false

[workspace]

[[bin]]
name = "argon2-verify"
path = "$REPO/benches/argon2_verify.rs"

[dependencies]
argon2 = { version = "=$ARGON2_VERSION", features = ["std"] }

[profile.release]
lto = "thin"
codegen-units = 4
EOF
    log "building argon2-verify (argon2 $ARGON2_VERSION)"
    cargo build --quiet --release --manifest-path "$TOOL_DIR/Cargo.toml" \
        --target-dir "$REPO/target/bench-tools/target"
    exec env COLA_BENCH_BOUNDED=1 timeout --signal=TERM --kill-after=20 "$MAX_RUNTIME" \
        "$0" "${ARGS[@]}" --no-build
fi

BIN="$REPO/target/release/cola-api"
ARGON2_BIN="$REPO/target/bench-tools/target/release/argon2-verify"
WORK=$(mktemp -d /tmp/cola-bench.XXXXXX)
SERVER_PID=""
DB_NAME=""
cleanup() {
    set +e
    if [ -n "$SERVER_PID" ]; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    if [ -n "$DB_NAME" ]; then
        psql "$PG_BASE/postgres" -qc "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)" >/dev/null 2>&1
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "interrupted (time limit?)" >&2; exit 124' TERM INT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if [ "$BACKEND" = postgres ]; then
    DB_NAME="cola_bench_$$_$RANDOM"
    psql "$PG_BASE/postgres" -qc "CREATE DATABASE \"$DB_NAME\"" >/dev/null
    DB_URL="$PG_BASE/$DB_NAME"
else
    DB_URL="sqlite://$WORK/cola.db?mode=rwc"
fi
export COLA_LISTEN="127.0.0.1:$PORT" COLA_DATABASE_URL="$DB_URL" RUST_LOG=warn \
    COLA_JWT_SECRET="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" \
    COLA_MAX_ACTIVE_KEYS_PER_USER=100000 COLA_USAGE_FLUSH_INTERVAL_MS="$FLUSH_MS"
BASE="http://127.0.0.1:$PORT"

sql() {
    if [ "$BACKEND" = postgres ]; then psql "$DB_URL" -qAtX -v ON_ERROR_STOP=1 -c "$1"
    else sqlite3 "$WORK/cola.db" "$1"; fi
}

log "starting cola-api on $COLA_LISTEN ($BACKEND)"
"$BIN" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 300); do
    curl -fsS --max-time 1 "$BASE/health" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.1
done
curl -fsS --max-time 2 "$BASE/health" >/dev/null

TENANT=$(python3 -c 'import uuid; print(uuid.uuid4())')
USER_ID=$(python3 -c 'import uuid; print(uuid.uuid4())')
TOKEN=$("$BIN" dev-token --tenant "$TENANT" --user "$USER_ID" --role admin)
# A verify-only server with a token, granted to the bench key, for (f).
SERVER=$(curl -fsS --max-time 10 -X POST "$BASE/api/mcp/servers" \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"slug":"bench","name":"bench","url":null}')
SERVER_TOKEN=$(curl -fsS --max-time 10 -X POST "$BASE/api/mcp/servers/$(jq -r .id <<<"$SERVER")/token" \
    -H "Authorization: Bearer $TOKEN" | jq -r .token)
CREATED=$(curl -fsS --max-time 10 -X POST "$BASE/api/mcp/keys" \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"name":"bench","permissions":{"servers":{"bench":{"allowed_tools":["search_*"]}}}}')
KEY=$(jq -r .key <<<"$CREATED")
KEY_ID=$(jq -r .id <<<"$CREATED")
export COLA_BENCH_KEY=$KEY COLA_BENCH_SERVER_TOKEN=$SERVER_TOKEN

whoami() {
    curl -sS --max-time 10 -X POST "$BASE/mcp" -H "Authorization: Bearer $KEY" \
        -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
        -H 'mcp-protocol-version: 2025-11-25' \
        -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{}}}'
}
# Warm the cache and check the answer is a real result, not an error.
grep -q "$KEY_ID" <<<"$(whoami)" || { echo "whoami did not answer with the key: $(whoami)" >&2; exit 1; }
VERIFIED=$(curl -sS --max-time 10 -X POST "$BASE/api/mcp/verify" -H "Authorization: Bearer $SERVER_TOKEN" \
    -H 'Content-Type: application/json' -d "{\"key\":\"$KEY\",\"client_ip\":\"203.0.113.7\",\"tool\":\"search_code\"}")
[ "$(jq -r .code <<<"$VERIFIED")" = VALID ] || { echo "verify did not answer VALID: $VERIFIED" >&2; exit 1; }

# ---- helpers ----
declare -A R
CLK_TCK=$(getconf CLK_TCK)
# CPU time (user + system) the server has used so far, in clock ticks.
server_ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"; }
run_wrk() { # label mode path
    local out t0 t1
    t0=$(server_ticks)
    out=$(WRK_MODE=$2 wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 5s \
        -s "$REPO/benches/wrk.lua" "$BASE$3" | grep '^RESULT')
    t1=$(server_ticks)
    local field
    for field in $out; do
        [ "$field" = RESULT ] && continue
        R[$1.${field%%=*}]=${field#*=}
    done
    # Server CPU per request: what the server itself spends, apart from the
    # load generator that shares the machine.
    R[$1.cpu_us]=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="${R[$1.requests]}" \
        'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    printf '%-22s %9s req/s  p50 %7s ms  p99 %7s ms  max %7s ms  requests %8s  server CPU %5s us/req  errors %s\n' \
        "$1" "${R[$1.rps]}" "$(ms "${R[$1.p50_us]}")" "$(ms "${R[$1.p99_us]}")" \
        "$(ms "${R[$1.max_us]}")" "${R[$1.requests]}" "${R[$1.cpu_us]}" "${R[$1.errors]}"
}
ms() { awk -v us="$1" 'BEGIN { printf "%.3f", us / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
median() { tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

hot_usage() { sql "SELECT usage_count FROM api_keys WHERE key_prefix = '${KEY:0:17}'"; }
# Waits until the usage flush has written everything counted so far (the
# key's usage_count stops moving over a whole flush interval).
settle_usage() {
    local last now
    last=$(hot_usage)
    while :; do
        sleep "$(awk -v ms="$FLUSH_MS" 'BEGIN { print ms / 1000 + 0.5 }')"
        now=$(hot_usage)
        [ "$now" = "$last" ] && break
        last=$now
    done
}
# Rows written to all tables and rows updated in api_keys, as PostgreSQL's
# cumulative statistics report them. Backends publish their counts at most
# once a second (and when idle), so read until two reads 1.5 s apart agree.
pg_writes() {
    local q="SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) || ' ' ||
        coalesce(sum(n_tup_upd) FILTER (WHERE relname = 'api_keys'), 0) FROM pg_stat_user_tables"
    local last now
    last=$(sql "$q")
    while :; do
        sleep 1.5
        now=$(sql "$q")
        [ "$now" = "$last" ] && break
        last=$now
    done
    echo "$now"
}

# measure LABEL_SUFFIX: rounds of (a), (b) and (f); fills R and the medians.
measure() {
    local suffix=$1 r health=() mcp=() verify=() health_cpu=() mcp_cpu=() verify_cpu=()
    for r in $(seq "$ROUNDS"); do
        run_wrk "health$suffix#$r" get /health
        run_wrk "mcp$suffix#$r" mcp /mcp
        run_wrk "verify$suffix#$r" verify /api/mcp/verify
        health+=("${R[health$suffix#$r.rps]}")
        mcp+=("${R[mcp$suffix#$r.rps]}")
        verify+=("${R[verify$suffix#$r.rps]}")
        health_cpu+=("${R[health$suffix#$r.cpu_us]}")
        mcp_cpu+=("${R[mcp$suffix#$r.cpu_us]}")
        verify_cpu+=("${R[verify$suffix#$r.cpu_us]}")
        echo "  ratio mcp/health round $r: $(ratio "${R[mcp$suffix#$r.rps]}" "${R[health$suffix#$r.rps]}")" \
            "(server CPU per request, health/mcp: $(ratio "${R[health$suffix#$r.cpu_us]}" "${R[mcp$suffix#$r.cpu_us]}"))"
        echo "  ratio verify/health round $r: $(ratio "${R[verify$suffix#$r.rps]}" "${R[health$suffix#$r.rps]}")" \
            "(server CPU per request, health/verify: $(ratio "${R[health$suffix#$r.cpu_us]}" "${R[verify$suffix#$r.cpu_us]}"))"
    done
    R[health$suffix.rps]=$(echo "${health[*]}" | median)
    R[mcp$suffix.rps]=$(echo "${mcp[*]}" | median)
    R[verify$suffix.rps]=$(echo "${verify[*]}" | median)
    R[health$suffix.cpu_us]=$(echo "${health_cpu[*]}" | median)
    R[mcp$suffix.cpu_us]=$(echo "${mcp_cpu[*]}" | median)
    R[verify$suffix.cpu_us]=$(echo "${verify_cpu[*]}" | median)
}

echo "# cola-api load benchmark: $BACKEND, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, rounds $ROUNDS"
echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"

# ---- (a) + (b), with (d) around them ----
echo
echo "## (a) GET /health, (b) POST /mcp tools/call whoami and (f) POST /api/mcp/verify (cached key)"
if [ "$BACKEND" = postgres ]; then
    settle_usage
    read -r W0_ALL W0_UPD <<<"$(pg_writes)"
fi
U0=$(hot_usage)
measure ""
settle_usage
U1=$(hot_usage)
MCP_REQUESTS=0
# Both /mcp and a VALID verify count one use of the key.
for r in $(seq "$ROUNDS"); do MCP_REQUESTS=$((MCP_REQUESTS + ${R[mcp#$r.requests]} + ${R[verify#$r.requests]})); done

echo
echo "## (d) database writes per admitted request"
echo "admitted (usage_count delta): $((U1 - U0)); wrk completed requests (mcp + verify): $MCP_REQUESTS"
if [ "$BACKEND" = postgres ]; then
    read -r W1_ALL W1_UPD <<<"$(pg_writes)"
    echo "api_keys rows updated: $((W1_UPD - W0_UPD)); rows written, all tables: $((W1_ALL - W0_ALL))"
    echo "writes per admitted request: $(awk -v w=$((W1_ALL - W0_ALL)) -v n=$((U1 - U0)) 'BEGIN { printf "%.6f", w / n }')"
else
    echo "(SQLite: no write statistics; PostgreSQL only)"
fi

# ---- (c) cold path ----
echo
echo "## (c) cold path: first use of $COLD_KEYS distinct keys (sequential, one connection)"
COLD=$(python3 "$REPO/benches/cold.py" --port "$PORT" --token "$TOKEN" --keys "$COLD_KEYS")
echo "$COLD"
ARGON2=$("$ARGON2_BIN" 100)
echo "$ARGON2"
COLD_P50=$(grep '^COLD' <<<"$COLD" | sed 's/.*p50_ms=\([0-9.]*\).*/\1/')
ARGON2_P50=$(sed 's/.*p50_ms=\([0-9.]*\).*/\1/' <<<"$ARGON2")
echo "cold p50 / bare argon2id verify p50: $(ratio "$COLD_P50" "$ARGON2_P50")"

# ---- (e) 10,000 keys ----
if [ "$BULK_KEYS" -gt 0 ]; then
    echo
    echo "## (e) again with $BULK_KEYS more keys in the database"
    # Dummy rows copied from the bench key, each with a fresh id, owner and a
    # prefix no real key has (real prefixes are random base62).
    if [ "$BACKEND" = postgres ]; then
        sql "INSERT INTO api_keys (id, tenant_id, user_id, name, description, key_prefix, key_hash,
                permissions, ip_whitelist, status, usage_count, last_used_at, created_at,
                expires_at, revoked_at, revoked_by)
             SELECT gen_random_uuid(), tenant_id, gen_random_uuid(), 'bulk ' || i, NULL,
                'cola_zz' || lpad(i::text, 10, '0'), key_hash, permissions, ip_whitelist,
                status, 0, NULL, created_at, expires_at, NULL, NULL
             FROM api_keys, generate_series(1, $BULK_KEYS) AS i WHERE id = '$KEY_ID';
             ANALYZE api_keys;"
    else
        ID_TYPE=$(sql "SELECT typeof(id) FROM api_keys LIMIT 1")
        if [ "$ID_TYPE" = blob ]; then NEW_ID="randomblob(16)"
        else NEW_ID="lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-8' || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))"; fi
        TEMPLATE=$(sql "SELECT rowid FROM api_keys WHERE key_prefix = '${KEY:0:17}'")
        sql "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $BULK_KEYS)
             INSERT INTO api_keys (id, tenant_id, user_id, name, description, key_prefix, key_hash,
                permissions, ip_whitelist, status, usage_count, last_used_at, created_at,
                expires_at, revoked_at, revoked_by)
             SELECT $NEW_ID, tenant_id, $NEW_ID, 'bulk ' || i, NULL,
                'cola_zz' || printf('%010d', i), key_hash, permissions, ip_whitelist,
                status, 0, NULL, created_at, expires_at, NULL, NULL
             FROM api_keys, n WHERE api_keys.rowid = $TEMPLATE;
             ANALYZE;"
    fi
    echo "keys in the database: $(sql 'SELECT count(*) FROM api_keys')"
    measure "+bulk"
fi

# ---- summary ----
echo
echo "## summary (medians over $ROUNDS round(s))"
SUMMARY_RATIO=$(ratio "${R[mcp.rps]}" "${R[health.rps]}")
echo "health rps ${R[health.rps]}, mcp whoami rps ${R[mcp.rps]}, ratio $SUMMARY_RATIO (target >= 0.80)"
echo "server CPU per request: health ${R[health.cpu_us]} us, mcp whoami ${R[mcp.cpu_us]} us, ratio $(ratio "${R[health.cpu_us]}" "${R[mcp.cpu_us]}")"
echo "mcp whoami p99 round 1: $(ms "${R[mcp#1.p99_us]}") ms (target < 2 ms)"
echo "verify rps ${R[verify.rps]}, ratio verify/health $(ratio "${R[verify.rps]}" "${R[health.rps]}") (target >= 0.80), p50 round 1 $(ms "${R[verify#1.p50_us]}") ms, p99 round 1 $(ms "${R[verify#1.p99_us]}") ms, server CPU ${R[verify.cpu_us]} us/req"
echo "cold p50 ${COLD_P50} ms vs bare argon2id p50 ${ARGON2_P50} ms: $(ratio "$COLD_P50" "$ARGON2_P50")x (target <= 1.5x)"
if [ "$BULK_KEYS" -gt 0 ]; then
    echo "with $BULK_KEYS keys: health rps ${R[health+bulk.rps]} ($(ratio "${R[health+bulk.rps]}" "${R[health.rps]}")x), mcp rps ${R[mcp+bulk.rps]} ($(ratio "${R[mcp+bulk.rps]}" "${R[mcp.rps]}")x), ratio $(ratio "${R[mcp+bulk.rps]}" "${R[health+bulk.rps]}"), mcp p99 round 1 $(ms "${R[mcp+bulk#1.p99_us]}") ms"
fi
if grep -qiE 'error|panic' "$WORK/server.log"; then
    echo
    echo "server log (errors):"
    grep -iE 'error|panic' "$WORK/server.log" | head -20
fi
