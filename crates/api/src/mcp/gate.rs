//! The gate in front of `/mcp` and the gateway's `/mcp/{slug}`: Origin check, failure rate limit, then key
//! authentication. Only an admitted request reaches the MCP handler, carrying
//! its `McpPrincipal`; anything unexpected fails closed.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::Poll;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::{ConnectionType, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, web};
use cola_application::{AuthFailure, AuthPath, KeyAuthenticator, McpPrincipal};
use cola_domain::KeyPrefix;

use crate::client_ip::ClientIpResolver;
use crate::key_rate_limit::KeyRateLimiter;
use crate::mcp::protocol;
use crate::metrics::Metrics;
use crate::rate_limit::FailureLimiter;

#[derive(Debug)]
pub struct McpGate {
    pub authenticator: Arc<KeyAuthenticator>,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<FailureLimiter>,
    /// Each key's own rate limit, taken on every admitted request.
    pub key_limiter: Arc<KeyRateLimiter>,
    pub client_ip: ClientIpResolver,
    /// Normalised `scheme://host[:port]` origins allowed to call `/mcp`.
    pub allowed_origins: Vec<String>,
}

/// `Authorization: Bearer cola_…` or `X-API-Key: cola_…` (an `Authorization`
/// header of another scheme, such as a proxy's `Basic`, is passed over).
fn credential(headers: &HeaderMap) -> Option<&str> {
    crate::bearer::bearer(headers).or_else(|| {
        headers
            .get("x-api-key")
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
    })
}

/// The prefix of a presented credential, for the log line of a request
/// refused before its key is verified (the only parse such a request gets).
/// The prefix is public; it is logged only when the credential is a
/// well-formed key, so junk (which might be some other secret pasted by
/// mistake) never reaches the log.
fn logged_prefix(presented: Option<&str>) -> Option<String> {
    presented
        .and_then(|text| cola_domain::ApiKeySecret::parse(text).ok())
        .map(|secret| secret.prefix().to_string())
}

fn origin_allowed(gate: &McpGate, origin: &HeaderValue) -> bool {
    origin
        .to_str()
        .ok()
        .and_then(crate::config::normalise_origin)
        .is_some_and(|origin| gate.allowed_origins.contains(&origin))
}

/// A refusal: a JSON-RPC error body (which MCP clients surface as-is) with
/// the status the situation calls for. The connection is closed after it,
/// whichever refusal and however fast: the request's body is never read, and
/// a refused client gets no connection to send its next attempt on.
fn refusal(status: StatusCode, code: i64, message: &str) -> HttpResponse {
    let mut response = HttpResponse::build(status)
        .content_type("application/json")
        .body(protocol::error_response(&serde_json::Value::Null, code, message, None).to_string());
    response
        .head_mut()
        .set_connection_type(ConnectionType::Close);
    response
}

/// The one answer for every bad credential, byte for byte, so a caller
/// cannot tell a malformed key from an unknown, wrong, revoked or expired one.
fn invalid_credential() -> HttpResponse {
    let mut response = refusal(
        StatusCode::UNAUTHORIZED,
        protocol::UNAUTHORIZED,
        "a valid Cola API key is required",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"cola\", error=\"invalid_token\""),
    );
    response
}

fn too_many_failures(seconds: u64) -> HttpResponse {
    retry_later(
        StatusCode::TOO_MANY_REQUESTS,
        protocol::RATE_LIMITED,
        "too many failed attempts from this address",
        seconds,
    )
}

fn retry_later(status: StatusCode, code: i64, message: &str, seconds: u64) -> HttpResponse {
    let mut response = refusal(status, code, message);
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The gate of `/mcp`, which serves POST only: other methods get their 405
/// without presenting a key.
pub async fn authenticate<B: MessageBody + 'static>(
    request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    if request.method() != Method::POST {
        return next
            .call(request)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    admit(request, next).await
}

/// The gate of the gateway (`/mcp/{slug}`), where GET and DELETE reach an
/// upstream session too: every method presents a key.
pub async fn authenticate_every_method<B: MessageBody + 'static>(
    request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    admit(request, next).await
}

async fn admit<B: MessageBody + 'static>(
    request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(gate) = request.app_data::<web::Data<McpGate>>().cloned() else {
        return Ok(request
            .into_response(HttpResponse::InternalServerError().finish())
            .map_into_right_body());
    };
    let refuse = |request: ServiceRequest, response: HttpResponse| {
        Ok(request.into_response(response).map_into_right_body())
    };

    // DNS-rebinding defence: a browser page from an unlisted origin is
    // refused before any key is looked at. No `Origin` (non-browser
    // clients) is fine.
    if let Some(origin) = request.headers().get(header::ORIGIN)
        && !origin_allowed(&gate, origin)
    {
        gate.metrics.auth_outcome("origin_denied");
        return refuse(
            request,
            refusal(
                StatusCode::FORBIDDEN,
                protocol::FORBIDDEN,
                "this origin may not call the MCP endpoint",
            ),
        );
    }

    let Some(client) = gate.client_ip.of_service_request(&request) else {
        return refuse(request, invalid_credential());
    };
    if let Err(wait) = gate.limiter.check(client) {
        tracing::info!(
            %client,
            key_prefix = logged_prefix(credential(request.headers())).as_deref().unwrap_or("-"),
            tenant = "-",
            outcome = "rate_limited",
            "mcp authentication"
        );
        gate.metrics.auth_outcome("rate_limited");
        return refuse(request, too_many_failures(wait));
    }

    let presented = credential(request.headers()).map(str::to_owned);
    let decision = to_completion(decide(gate.clone(), presented, client)).await;
    match decision {
        Some(Decision::Admitted(principal)) => {
            let key = principal.key();
            if let Some(limit) = key.rate_limit
                && let Err(wait) = gate.key_limiter.check(key.key_id, limit)
            {
                tracing::info!(
                    key_prefix = %key.prefix,
                    tenant = %key.tenant_id,
                    %client,
                    outcome = "key_rate_limited",
                    "mcp request refused"
                );
                gate.metrics.auth_outcome("key_rate_limited");
                return refuse(
                    request,
                    retry_later(
                        StatusCode::TOO_MANY_REQUESTS,
                        protocol::RATE_LIMITED,
                        "this key's rate limit is reached; try again later",
                        wait,
                    ),
                );
            }
            request.extensions_mut().insert(principal);
            next.call(request)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Some(Decision::BadCredential) => refuse(request, invalid_credential()),
        Some(Decision::TooMany(wait)) => refuse(request, too_many_failures(wait)),
        Some(Decision::IpDenied) => refuse(
            request,
            refusal(
                StatusCode::FORBIDDEN,
                protocol::FORBIDDEN,
                "this key may not be used from this address",
            ),
        ),
        Some(Decision::Saturated) => refuse(
            request,
            retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                protocol::UNAVAILABLE,
                "key verification is at capacity; try again shortly",
                1,
            ),
        ),
        Some(Decision::Unavailable) | None => refuse(
            request,
            retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                protocol::UNAVAILABLE,
                "the key cannot be verified right now; try again shortly",
                1,
            ),
        ),
    }
}

/// How an authentication attempt ended.
enum Decision {
    Admitted(McpPrincipal),
    BadCredential,
    /// A failure past the address's limit: answered 429 after `.0` seconds.
    TooMany(u64),
    IpDenied,
    Saturated,
    Unavailable,
}

/// Runs `attempt` to its end even if the request is abandoned. It is polled
/// once here, so a cached key is decided at once without a task of its own;
/// a verification that has to wait (database, argon2) is handed to a local
/// task, so a client that resets its connection mid-way still has its
/// attempt counted against its address, logged and measured. `None` only if
/// that task died, which the caller refuses.
async fn to_completion<T: 'static>(attempt: impl Future<Output = T> + 'static) -> Option<T> {
    let mut attempt = Box::pin(attempt);
    match std::future::poll_fn(|cx| Poll::Ready(attempt.as_mut().poll(cx))).await {
        Poll::Ready(decision) => Some(decision),
        Poll::Pending => actix_web::rt::spawn(attempt).await.ok(),
    }
}

/// Verifies the presented key and records the decision: one log line, the
/// metrics, and a failure against the client's address for a bad credential.
async fn decide(gate: web::Data<McpGate>, presented: Option<String>, client: IpAddr) -> Decision {
    let started = std::time::Instant::now();
    let outcome = gate
        .authenticator
        .authenticate_with_path(presented.as_deref(), client)
        .await;
    match outcome {
        Ok((principal, path)) => {
            let path_label = if path == AuthPath::Hot { "hot" } else { "cold" };
            gate.metrics.verification(path_label, started);
            gate.metrics.auth_outcome("admitted");
            let key = principal.key();
            // The decision is made when the key is verified; a cache hit
            // repeats it, so it is logged at debug to keep the hot path
            // quiet (every use is still counted, in metrics and usage).
            // A level must be a constant, hence the macro.
            macro_rules! log_admitted {
                ($level:ident) => {
                    tracing::$level!(
                        key_prefix = %key.prefix,
                        tenant = %key.tenant_id,
                        %client,
                        outcome = "admitted",
                        cached = path == AuthPath::Hot,
                        "mcp authentication"
                    )
                };
            }
            if path == AuthPath::Hot {
                log_admitted!(debug);
            } else {
                log_admitted!(info);
            }
            Decision::Admitted(principal)
        }
        Err(refused) => {
            let failure = refused.reason;
            let decision = match failure {
                AuthFailure::IpDenied => Decision::IpDenied,
                AuthFailure::Saturated => Decision::Saturated,
                AuthFailure::Unavailable => Decision::Unavailable,
                _ => match gate.limiter.record_failure(client) {
                    Ok(()) => Decision::BadCredential,
                    Err(wait) => Decision::TooMany(wait),
                },
            };
            let outcome = match decision {
                Decision::TooMany(_) => "rate_limited",
                _ => failure.as_str(),
            };
            let tenant = refused.tenant.map(|tenant| tenant.to_string());
            tracing::info!(
                %client,
                key_prefix = refused.prefix.as_ref().map_or("-", KeyPrefix::as_str),
                tenant = tenant.as_deref().unwrap_or("-"),
                outcome,
                "mcp authentication"
            );
            gate.metrics.auth_outcome(outcome);
            decision
        }
    }
}
