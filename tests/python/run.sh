#!/usr/bin/env bash
# Runs the Python end-to-end tests of the MCP endpoint against the real
# `cola-api` binary.
#
#   tests/python/run.sh [pytest args…]
#
# Uses <repo>/.venv (created if missing) and the binary at $COLA_BIN
# (default <repo>/target/debug/cola-api; build it with `cargo build -p cola-api`).
# Set COLA_E2E_BUILD=1 to build it first.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/.venv"
python="${PYTHON:-python3}"

if [[ "${COLA_E2E_BUILD:-0}" == "1" ]]; then
    (cd "$repo" && cargo build -p cola-api)
fi
export COLA_BIN="${COLA_BIN:-$repo/target/debug/cola-api}"
if [[ ! -x "$COLA_BIN" ]]; then
    echo "run.sh: $COLA_BIN not found; run \`cargo build -p cola-api\` (or set COLA_BIN)" >&2
    exit 2
fi

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"

cd "$here"
set +e
"$venv/bin/python" -m pytest "$@"
status=$?
set -e
# pytest exits 5 when no tests were collected: that is a failure here.
if [[ $status -eq 5 ]]; then
    echo "run.sh: no tests were collected" >&2
    exit 1
fi
exit $status
