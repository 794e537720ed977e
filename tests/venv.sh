# Sourced by the Python-driven suites (tests/python, tests/schemathesis):
# checks the binary under test and prepares <repo>/.venv with the calling
# suite's requirements. Expects `here` (the suite's directory) and `repo`.
venv="$repo/.venv"
export COLA_BIN="${COLA_BIN:-$repo/target/debug/cola-api}"
if [[ ! -x "$COLA_BIN" ]]; then
    echo "$COLA_BIN not found; run \`cargo build -p cola-api\` (or set COLA_BIN)" >&2
    exit 2
fi
if [[ ! -x "$venv/bin/python" ]]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
