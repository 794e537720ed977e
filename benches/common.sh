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

# nginx (Debian's nginx-light) for the plain proxy_pass hop; NGINX_BIN is set.
ensure_nginx() {
    NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
    [ -x "$NGINX_BIN" ] && return 0
    log "installing nginx"
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null
    fi
    [ -x "$NGINX_BIN" ] || { echo "nginx is required (apt-get install nginx-light)" >&2; exit 1; }
}
