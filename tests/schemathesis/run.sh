#!/usr/bin/env bash
# Fuzzes the management API against its own OpenAPI document with
# schemathesis: no 5xx, and every response's status code, content type,
# headers and body as documented.
#
#   tests/schemathesis/run.sh [extra schemathesis args…]
#
# Uses <repo>/.venv (created if missing) and the binary at $COLA_BIN
# (default <repo>/target/debug/cola-api; build it with `cargo build -p cola-api`).
# The server runs on a free local port with a throw-away SQLite database and
# a random JWT secret; each request is signed for a fresh admin of one tenant
# (hooks.py), so the per-user write limit does not turn the fuzzer's writes
# into 429s.
# Bounded: at most $SCHEMATHESIS_MAX_EXAMPLES (50) cases per operation and
# $SCHEMATHESIS_MAX_TIME (90) seconds in all.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

# shellcheck source=../venv.sh
source "$repo/tests/venv.sh"

work="$(mktemp -d "${TMPDIR:-/tmp}/cola-schemathesis.XXXXXX")"
server=""
cleanup() {
    if [[ -n "$server" ]] && kill -0 "$server" 2>/dev/null; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
export COLA_LISTEN="127.0.0.1:$port"
export COLA_DATABASE_URL="sqlite://$work/cola.db?mode=rwc"
COLA_JWT_SECRET="$("$venv/bin/python" -c 'import secrets; print(secrets.token_hex(32))')"
export COLA_JWT_SECRET
# Let the fuzzer reach the handlers: schemathesis sends many requests without
# or with broken credentials, and creates many keys.
export COLA_AUTH_FAILURE_LIMIT="${COLA_AUTH_FAILURE_LIMIT:-99}"
export COLA_MAX_ACTIVE_KEYS_PER_USER="${COLA_MAX_ACTIVE_KEYS_PER_USER:-100000}"
export COLA_LOG_FORMAT=json
export RUST_LOG="${RUST_LOG:-warn}"

"$COLA_BIN" serve >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
    if curl --silent --fail --output /dev/null "$base/health"; then
        break
    fi
    if ! kill -0 "$server" 2>/dev/null; then
        echo "run.sh: cola-api exited early:" >&2
        cat "$work/server.log" >&2
        exit 1
    fi
    sleep 0.1
done

export SCHEMATHESIS_HOOKS="$here/hooks.py" COLA_SCHEMATHESIS_BASE="$base"

set +e
"$venv/bin/schemathesis" run "$base/api/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}" \
    --max-time "${SCHEMATHESIS_MAX_TIME:-90}" \
    --request-timeout 10 \
    --generation-database none \
    --no-color \
    "$@"
status=$?
set -e
if [[ $status -ne 0 ]]; then
    echo "run.sh: schemathesis failed (exit $status); server log:" >&2
    tail -n 50 "$work/server.log" >&2
fi
exit $status
