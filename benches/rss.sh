#!/usr/bin/env bash
# Resident memory of cola-api under bursts of failed key verifications.
# Starts the release binary on a fresh SQLite file (default) or PostgreSQL
# database, prints VmRSS from /proc/<pid>/status before the first burst and
# after each burst of N failed verifications (benches/rss_burst.py: valid
# checksums, unknown prefixes, C connections at once), and VmHWM (the peak)
# at the end. Every burst must answer 401 to every request; a 429 or 503
# would mean requests that did no argon2 work.
#
# Usage: benches/rss.sh [--postgres] [-n REQUESTS] [-c CONNECTIONS] [--bursts N]
#                       [--bin PATH] [--no-build]
# Env: COLA_BENCH_PG_BASE (default postgres://postgres@127.0.0.1:5432).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

BACKEND=sqlite
REQUESTS=1000
CONNECTIONS=16
BURSTS=2
BIN="$REPO/target/release/cola-api"
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --postgres) BACKEND=postgres ;;
        --sqlite) BACKEND=sqlite ;;
        -n) REQUESTS=$2; shift ;;
        -c) CONNECTIONS=$2; shift ;;
        --bursts) BURSTS=$2; shift ;;
        --bin) BIN=$2; BUILD=0; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
PG_BASE=${COLA_BENCH_PG_BASE:-postgres://postgres@127.0.0.1:5432}
# shellcheck source=common.sh
source "$REPO/benches/common.sh"

build_release

WORK=$(mktemp -d /tmp/cola-rss.XXXXXX)
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

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if [ "$BACKEND" = postgres ]; then
    DB_NAME="cola_rss_$$_$RANDOM"
    psql "$PG_BASE/postgres" -qc "CREATE DATABASE \"$DB_NAME\"" >/dev/null
    DB_URL="$PG_BASE/$DB_NAME"
else
    DB_URL="sqlite://$WORK/cola.db?mode=rwc"
fi
# 127.0.0.1 is trusted as a proxy so that each request can name its own
# client address: the failure limiter counts per address.
export COLA_LISTEN="127.0.0.1:$PORT" COLA_DATABASE_URL="$DB_URL" RUST_LOG=warn \
    COLA_JWT_SECRET="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" \
    COLA_TRUSTED_PROXIES=127.0.0.1/32

log "starting $BIN on $COLA_LISTEN ($BACKEND)"
"$BIN" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 300); do
    curl -fsS --max-time 1 "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.1
done
curl -fsS --max-time 2 "http://127.0.0.1:$PORT/health" >/dev/null

status() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$SERVER_PID/status"; }
mib() { awk -v kib="$1" 'BEGIN { printf "%.1f MiB", kib / 1024 }'; }

echo "# cola-api RSS under failed verifications: $BACKEND, $BURSTS burst(s) of $REQUESTS from $CONNECTIONS connections"
echo "# machine: $(nproc) cores; binary: $BIN"
echo "VmRSS before:        $(mib "$(status VmRSS)") (threads: $(status Threads))"
for burst in $(seq "$BURSTS"); do
    RESULT=$(python3 "$REPO/benches/rss_burst.py" --port "$PORT" --requests "$REQUESTS" \
        --connections "$CONNECTIONS" --offset $(((burst - 1) * REQUESTS)))
    echo "VmRSS after burst $burst: $(mib "$(status VmRSS)") (threads: $(status Threads)) -- $RESULT"
    grep -q "s401=$REQUESTS\$" <<<"$RESULT" || echo "   (not every request was a 401: see the counts)"
done
echo "VmHWM (peak):        $(mib "$(status VmHWM)")"
