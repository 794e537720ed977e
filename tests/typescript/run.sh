#!/usr/bin/env bash
# Runs the TypeScript SDK client tests of the MCP endpoint against the real
# `cola-api` binary at $COLA_BIN (default <repo>/target/debug/cola-api).
# Needs Node.js 20+ and npm; installs the locked dependencies first.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export COLA_BIN="${COLA_BIN:-$repo/target/debug/cola-api}"
if [[ ! -x "$COLA_BIN" ]]; then
    echo "$COLA_BIN not found; run \`cargo build -p cola-api\` (or set COLA_BIN)" >&2
    exit 2
fi
# The verifier example (examples/typescript-verifier) has its own locked
# dependencies; verifier.test.mjs runs it as its own process.
(cd "$repo/examples/typescript-verifier" && npm ci --no-audit --no-fund --loglevel=error)
cd "$here"
npm ci --no-audit --no-fund --loglevel=error
node --test
