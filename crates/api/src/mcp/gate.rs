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
use cola_application::{Admission, AuthFailure, AuthPath, Denied, KeyAdmission};
use cola_domain::{KeyPrefix, TenantId};

use cola_protocol::RpcError;

use crate::foundations::client_ip::ClientIpResolver;
use crate::observability::metrics::Metrics;

#[derive(Debug)]
pub struct McpGate {
    /// The one admission step of every surface that takes a key.
    pub admission: Arc<KeyAdmission>,
    pub metrics: Arc<Metrics>,
    pub client_ip: ClientIpResolver,
    /// Normalised `scheme://host[:port]` origins allowed to call `/mcp`.
    pub allowed_origins: Vec<String>,
}

/// `Authorization: Bearer cola_…` or `X-API-Key: cola_…` (an `Authorization`
/// header of another scheme, such as a proxy's `Basic`, is passed over).
fn credential(headers: &HeaderMap) -> Option<&str> {
    crate::foundations::bearer::bearer(headers).or_else(|| {
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
fn refusal(error: &RpcError) -> HttpResponse {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status)
        .content_type("application/json")
        .body(error.to_body());
    response
        .head_mut()
        .set_connection_type(ConnectionType::Close);
    response
}

/// The one answer for every bad credential, byte for byte, so a caller
/// cannot tell a malformed key from an unknown, wrong, revoked or expired one.
fn invalid_credential() -> HttpResponse {
    let mut response = refusal(&RpcError::invalid_credential());
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"cola\", error=\"invalid_token\""),
    );
    response
}

/// A refusal to try again after `seconds`.
fn retry_later(error: &RpcError, seconds: u64) -> HttpResponse {
    let mut response = refusal(error);
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
        return refuse(request, refusal(&RpcError::origin_forbidden()));
    }

    let Some(client) = gate.client_ip.of_service_request(&request) else {
        return refuse(request, invalid_credential());
    };
    let presented = credential(request.headers()).map(str::to_owned);
    let Some(outcome) = to_completion(decide(gate.clone(), presented, client)).await else {
        return refuse(request, refused_response(AuthFailure::Unavailable));
    };
    match outcome {
        Ok(admission) => {
            request.extensions_mut().insert(admission.principal);
            next.call(request)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Err(Denied::RateLimited {
            retry_after_secs, ..
        }) => refuse(
            request,
            retry_later(&RpcError::key_rate_limited(), retry_after_secs),
        ),
        Err(Denied::Refused(refused)) => refuse(request, refused_response(refused.reason)),
    }
}

/// Runs `attempt` to its end even if the request is abandoned. It is polled
/// once here, so a cached key is decided at once without a task of its own;
/// a verification that has to wait (database, argon2) is handed to a local
/// task, so a client that resets its connection mid-way still has its
/// attempt decided, logged and measured (it was charged to its address
/// before any work began). `None` only if that task died, which the caller
/// refuses.
async fn to_completion<T: 'static>(attempt: impl Future<Output = T> + 'static) -> Option<T> {
    let mut attempt = Box::pin(attempt);
    match std::future::poll_fn(|cx| Poll::Ready(attempt.as_mut().poll(cx))).await {
        Poll::Ready(decision) => Some(decision),
        Poll::Pending => actix_web::rt::spawn(attempt).await.ok(),
    }
}

/// Admits the presented key and records the decision: one log line and the
/// metrics.
async fn decide(
    gate: web::Data<McpGate>,
    presented: Option<String>,
    client: IpAddr,
) -> Result<Admission, Denied> {
    let started = std::time::Instant::now();
    let outcome = gate.admission.admit(presented.as_deref(), client).await;
    Outcome::of(&outcome).record(&gate, client, presented.as_deref(), started);
    outcome
}

/// The answer to a key the admission refused.
fn refused_response(reason: AuthFailure) -> HttpResponse {
    match reason {
        AuthFailure::TooManyAttempts(wait) => {
            retry_later(&RpcError::too_many_failures(), wait.retry_after_secs)
        }
        AuthFailure::IpDenied => refusal(&RpcError::address_forbidden()),
        AuthFailure::Saturated => retry_later(&RpcError::verification_saturated(), 1),
        AuthFailure::Unavailable => retry_later(&RpcError::verification_unavailable(), 1),
        AuthFailure::Missing
        | AuthFailure::Malformed
        | AuthFailure::Unknown
        | AuthFailure::WrongSecret
        | AuthFailure::Revoked
        | AuthFailure::Expired => invalid_credential(),
    }
}

/// What the log line and the metrics of one admission say.
struct Outcome<'a> {
    label: &'static str,
    prefix: Option<&'a KeyPrefix>,
    tenant: Option<TenantId>,
    /// How the key was decided, when it was.
    path: Option<AuthPath>,
}

impl<'a> Outcome<'a> {
    fn of(outcome: &'a Result<Admission, Denied>) -> Self {
        match outcome {
            Ok(admission) => Self {
                label: "admitted",
                prefix: Some(&admission.principal.key().prefix),
                tenant: Some(admission.principal.key().tenant_id),
                path: Some(admission.path),
            },
            Err(Denied::RateLimited { admission, .. }) => Self {
                label: "key_rate_limited",
                prefix: Some(&admission.principal.key().prefix),
                tenant: Some(admission.principal.key().tenant_id),
                path: Some(admission.path),
            },
            Err(Denied::Refused(refused)) => Self {
                label: refused.reason.as_str(),
                prefix: refused.prefix.as_ref(),
                tenant: refused.tenant,
                path: None,
            },
        }
    }

    /// One log line and the metrics. An admission the cache repeated is
    /// logged at debug, to keep the hot path quiet (every use is still
    /// counted, in metrics and usage); every other decision at info. A
    /// refusal before the key was read names the prefix of a well-formed
    /// credential only, so junk (which might be some other secret pasted
    /// by mistake) never reaches the log.
    fn record(
        &self,
        gate: &McpGate,
        client: IpAddr,
        presented: Option<&str>,
        started: std::time::Instant,
    ) {
        if let Some(path) = self.path {
            let label = if path == AuthPath::Hot { "hot" } else { "cold" };
            gate.metrics.verification(label, started);
        }
        gate.metrics.auth_outcome(self.label);
        let logged;
        let prefix = match self.prefix {
            Some(prefix) => prefix.as_str(),
            None => {
                logged = logged_prefix(presented);
                logged.as_deref().unwrap_or("-")
            }
        };
        let tenant = LoggedTenant(self.tenant);
        let cached = self.path == Some(AuthPath::Hot);
        // A level must be a constant, hence the macro.
        macro_rules! log {
            ($level:ident) => {
                tracing::$level!(
                    %client,
                    key_prefix = prefix,
                    %tenant,
                    outcome = self.label,
                    cached,
                    "mcp authentication"
                )
            };
        }
        if cached && self.label == "admitted" {
            log!(debug);
        } else {
            log!(info);
        }
    }
}

/// The tenant of a log line, `-` when none is known. Written only when the
/// line is: an admission served from the cache is logged at debug, which is
/// usually off, and its tenant is then never formatted.
struct LoggedTenant(Option<TenantId>);

impl std::fmt::Display for LoggedTenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(tenant) => tenant.fmt(f),
            None => f.write_str("-"),
        }
    }
}
