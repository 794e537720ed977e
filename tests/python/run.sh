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

if [[ "${COLA_E2E_BUILD:-0}" == "1" ]]; then
    (cd "$repo" && cargo build -p cola-api)
fi
# shellcheck source=../venv.sh
source "$repo/tests/venv.sh"

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
