#!/usr/bin/env bash
# Runs the console's browser tests against the real `cola-api` binary, in
# Debian's chromium driven by Playwright.
#
#   tests/console/run.sh [pytest args…]
#
# Uses <repo>/.venv (created if missing), the binary at $COLA_BIN (default
# <repo>/target/debug/cola-api) and the browser at $CHROMIUM (default
# /usr/bin/chromium; `apt-get install chromium`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$CHROMIUM" && "$CHROMIUM" == /usr/bin/chromium ]] && command -v apt-get >/dev/null; then
    # The README's test command brings what the suites need: Debian's
    # chromium, as root or through sudo.
    echo "installing chromium (apt-get) for the console's browser tests" >&2
    sudo=""
    [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null && sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
if [[ ! -x "$CHROMIUM" ]]; then
    echo "$CHROMIUM not found; install it (apt-get install -y chromium) or set CHROMIUM" >&2
    exit 2
fi
# Playwright must not try to download browsers of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
# shellcheck source=../venv.sh
source "$repo/tests/venv.sh"

cd "$here"
set +e
"$venv/bin/python" -m pytest "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
    echo "run.sh: no tests were collected" >&2
    exit 1
fi
exit $status
