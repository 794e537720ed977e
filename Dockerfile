# syntax=docker/dockerfile:1
#
# cola-api: build a release binary, run it as a non-root user on slim Debian.
#
#   docker build -t cola-api .
#   docker run -p 127.0.0.1:8080:8080 -e COLA_JWT_SECRET=… -v cola-data:/var/lib/cola cola-api
#
# Without COLA_DATABASE_URL the service keeps a SQLite file in /var/lib/cola;
# mount a volume there to keep it. See docs/operations.md.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the registry and compiled dependencies between builds;
# the binary is copied out because the target directory is not in the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release -p cola-api --locked \
    && cp target/release/cola-api /usr/local/bin/cola-api

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 cola \
    && useradd --system --uid 10001 --gid cola --home-dir /var/lib/cola \
       --no-create-home --shell /usr/sbin/nologin cola \
    && install -d -o cola -g cola -m 0750 /var/lib/cola
COPY --from=builder /usr/local/bin/cola-api /usr/local/bin/cola-api

# Numeric ids, so orchestrators can verify the user is not root.
USER 10001:10001
WORKDIR /var/lib/cola
ENV COLA_LISTEN=0.0.0.0:8080
EXPOSE 8080

# No HEALTHCHECK: the slim image has no HTTP client. Probe GET /health
# (liveness) and GET /ready (readiness) from the orchestrator instead.

# SIGTERM (Docker's default stop signal) starts a graceful stop: 10 s for
# in-flight requests, then a final usage flush. Allow more than 10 s.
ENTRYPOINT ["/usr/local/bin/cola-api"]
CMD ["serve"]
