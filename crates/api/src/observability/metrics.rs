//! Prometheus metrics at `/metrics`. Labels carry routes, outcomes and
//! paths — never key material, tenant or user ids.

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use cola_application::{AttemptLimiter, UsageRecorder, VerifiedKeyCache};
use cola_infrastructure::Database;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Verification latency buckets: from a cache hit (microseconds) to a queued
/// argon2 run (hundreds of milliseconds).
const VERIFICATION_BUCKETS: [f64; 12] = [
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    mcp_auth: IntCounterVec,
    verification: HistogramVec,
    usage_pending: IntGauge,
    cache_entries: IntGauge,
    verifications_in_progress: IntGauge,
    attempts_in_flight: IntGauge,
    pool: IntGaugeVec,
    gateway_requests: IntCounterVec,
    gateway_duration: prometheus::Histogram,
    verify_answers: IntCounterVec,
    sources: Sources,
}

/// What the gauges are read from at scrape time.
struct Sources {
    usage: Arc<UsageRecorder>,
    cache: Arc<VerifiedKeyCache>,
    attempts: Arc<AttemptLimiter>,
    database: Database,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// A metric family's name and help text.
type Family = (&'static str, &'static str);

const HTTP_REQUESTS: Family = (
    "cola_http_requests_total",
    "HTTP requests by route, method and status",
);
const HTTP_DURATION: Family = (
    "cola_http_request_duration_seconds",
    "HTTP request latency by route",
);
const MCP_AUTH: Family = (
    "cola_mcp_auth_total",
    "MCP authentication decisions by outcome",
);
const VERIFICATION: Family = (
    "cola_key_verification_seconds",
    "Time to admit a key: hot = verified-key cache, cold = database and argon2",
);
const USAGE_PENDING: Family = (
    "cola_usage_pending_increments",
    "Admitted uses counted in memory and not yet written",
);
const CACHE_ENTRIES: Family = ("cola_auth_cache_entries", "Keys in the verified-key cache");
const VERIFICATIONS_IN_PROGRESS: Family = (
    "cola_key_verifications_in_progress",
    "Key verifications (database and argon2) under way; concurrent ones of one key count once",
);
const ATTEMPTS_IN_FLIGHT: Family = (
    "cola_auth_attempts_in_flight",
    "Credential checks paid for by a caller not yet authenticated (argon2 on a presented key) and under way",
);
const POOL: Family = (
    "cola_db_pool_connections",
    "Database pool connections by state",
);
// No tenant, server or key labels on the gateway's metrics: their number is
// unbounded, and which tenant uses which server is not the scraper's
// business.
const GATEWAY_REQUESTS: Family = (
    "cola_gateway_requests_total",
    "Requests through the gateway (/mcp/{slug}) by outcome",
);
const GATEWAY_DURATION: Family = (
    "cola_gateway_request_duration_seconds",
    "Time from an admitted gateway request to the upstream's answer starting",
);
const VERIFY_ANSWERS: Family = (
    "cola_verify_answers_total",
    "Answers of POST /api/mcp/verify by code (VALID, NOT_FOUND, ..., \
     RATE_LIMITED, BAD_TOKEN, UNAVAILABLE)",
);

/// `metric`, registered in `registry`.
fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> Result<M, prometheus::Error> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn counter(
    registry: &Registry,
    (name, help): Family,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    registered(registry, IntCounterVec::new(Opts::new(name, help), labels)?)
}

fn gauge(registry: &Registry, (name, help): Family) -> Result<IntGauge, prometheus::Error> {
    registered(registry, IntGauge::new(name, help)?)
}

fn histogram(
    registry: &Registry,
    (name, help): Family,
    buckets: Option<&[f64]>,
    labels: &[&str],
) -> Result<HistogramVec, prometheus::Error> {
    let mut options = HistogramOpts::new(name, help);
    if let Some(buckets) = buckets {
        options = options.buckets(buckets.to_vec());
    }
    registered(registry, HistogramVec::new(options, labels)?)
}

impl Metrics {
    pub fn new(
        usage: Arc<UsageRecorder>,
        cache: Arc<VerifiedKeyCache>,
        attempts: Arc<AttemptLimiter>,
        database: Database,
    ) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let r = &registry;
        let (name, help) = GATEWAY_DURATION;
        let gateway_duration = prometheus::Histogram::with_opts(HistogramOpts::new(name, help))?;
        Ok(Self {
            http_requests: counter(r, HTTP_REQUESTS, &["route", "method", "status"])?,
            http_duration: histogram(r, HTTP_DURATION, None, &["route"])?,
            mcp_auth: counter(r, MCP_AUTH, &["outcome"])?,
            verification: histogram(r, VERIFICATION, Some(&VERIFICATION_BUCKETS), &["path"])?,
            usage_pending: gauge(r, USAGE_PENDING)?,
            cache_entries: gauge(r, CACHE_ENTRIES)?,
            verifications_in_progress: gauge(r, VERIFICATIONS_IN_PROGRESS)?,
            attempts_in_flight: gauge(r, ATTEMPTS_IN_FLIGHT)?,
            pool: registered(r, IntGaugeVec::new(Opts::new(POOL.0, POOL.1), &["state"])?)?,
            gateway_requests: counter(r, GATEWAY_REQUESTS, &["outcome"])?,
            gateway_duration: registered(r, gateway_duration)?,
            verify_answers: counter(r, VERIFY_ANSWERS, &["code"])?,
            registry,
            sources: Sources {
                usage,
                cache,
                attempts,
                database,
            },
        })
    }

    /// Counts one gateway request by how it ended, and how long it took to
    /// the start of the answer.
    pub fn gateway_request(&self, outcome: &str, started: Instant) {
        self.gateway_requests.with_label_values(&[outcome]).inc();
        self.gateway_duration
            .observe(started.elapsed().as_secs_f64());
    }

    /// Counts one answer of the verify API.
    pub fn verify_answer(&self, code: &str) {
        self.verify_answers.with_label_values(&[code]).inc();
    }

    /// Counts one `/mcp` authentication decision.
    pub fn auth_outcome(&self, outcome: &str) {
        self.mcp_auth.with_label_values(&[outcome]).inc();
    }

    /// Records how long admitting a key took, by path (`hot` or `cold`).
    pub fn verification(&self, path: &str, started: Instant) {
        self.verification
            .with_label_values(&[path])
            .observe(started.elapsed().as_secs_f64());
    }

    fn render(&self) -> String {
        let usage = i64::try_from(self.sources.usage.pending()).unwrap_or(i64::MAX);
        self.usage_pending.set(usage);
        self.cache_entries
            .set(i64::try_from(self.sources.cache.len()).unwrap_or(i64::MAX));
        self.verifications_in_progress
            .set(i64::try_from(self.sources.cache.verifications_in_progress()).unwrap_or(i64::MAX));
        self.attempts_in_flight
            .set(i64::try_from(self.sources.attempts.in_flight()).unwrap_or(i64::MAX));
        let (size, idle) = self.sources.database.pool_state();
        self.pool.with_label_values(&["idle"]).set(i64::from(idle));
        self.pool
            .with_label_values(&["in_use"])
            .set(i64::from(size.saturating_sub(idle)));
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "cannot encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// `GET /metrics`.
pub async fn scrape(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics.render())
}

/// The `method` label: one of the methods of RFC 9110 and PATCH, or
/// `other`. A method is any token a client cares to send, and each label
/// value is a series kept for the life of the process, so an open set would
/// let anyone grow `/metrics` and this process's memory without bound.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Counts every request by its route pattern (never the concrete path, which
/// would carry key ids), method and status.
pub async fn record(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = request.app_data::<web::Data<Metrics>>().cloned();
    let method = method_label(request.method());
    let response = next.call(request).await?;
    if let Some(metrics) = metrics {
        let route = response
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        let status = response.status().as_u16().to_string();
        metrics
            .http_requests
            .with_label_values(&[route.as_str(), method, status.as_str()])
            .inc();
        metrics
            .http_duration
            .with_label_values(&[&route])
            .observe(started.elapsed().as_secs_f64());
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_methods_are_their_own_label_and_any_other_is_other() {
        for name in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ] {
            let method = Method::from_bytes(name.as_bytes()).expect("a method");
            assert_eq!(method_label(&method), name);
        }
        for name in ["PROPFIND", "get", "X7QZ", "BREW"] {
            let method = Method::from_bytes(name.as_bytes()).expect("a method");
            assert_eq!(method_label(&method), "other", "{name}");
        }
    }
}
