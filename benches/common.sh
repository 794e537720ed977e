# Sourced by the benchmark scripts (benches/*.sh): the helpers they share.

log() { echo "== $*" >&2; }

# The release binary, unless the caller said not to build (BUILD=0).
build_release() {
    if [ "${BUILD:-1}" = 1 ]; then
        log "building cola-api (release)"
        cargo build --release -p cola-api
    fi
}

# wrk, from Debian's packages when it is missing and this is root.
ensure_wrk() {
    command -v wrk >/dev/null && return 0
    log "installing wrk"
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq wrk >/dev/null
    fi
    command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
}
