//! The gateway, `/mcp/{slug}`: a key reaches its tenant's own MCP server
//! through Cola and gets exactly what its grant there allows.
//!
//! Every request passes the same gate as `/mcp`, then: the server the slug
//! names for the key's tenant, the key's grant on it (an unknown slug and an
//! ungranted server are the same 404), a place among the tenant's requests
//! in flight, one strictly parsed JSON-RPC message with the stateless era's
//! headers checked against it, the policy's verdict
//! (`cola_application::authorise_gateway_message`), and only then the
//! upstream, which gets the message Cola authorised re-serialised under an
//! id of Cola's own, the server's own headers and the MCP ones, and nothing
//! else of the client's.

mod exchange;
mod relay;
mod session;
mod strict;

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::middleware::from_fn;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use cola_application::{
    KeyAdmission, McpPrincipal, ServerDirectory, ServerLookupError, TenantInflight, ToolCatalogue,
    VerifiedKeyCache,
};
use cola_domain::Surface;
use cola_infrastructure::{IdentityKeys, UpstreamClient};
use serde_json::Value;

pub use session::{Binding, Sessions};

use self::exchange::Exchange;
use crate::mcp::gate;
use crate::mcp::handler::{Reply, read_json_body, read_parsed};
use crate::mcp::protocol;
use crate::metrics::Metrics;
use crate::routes::method_not_allowed;

/// Application code of the gateway's "not found" (outside the ranges the
/// JSON-RPC and MCP specifications reserve).
const NOT_FOUND: i64 = -31004;

/// What the gateway needs. Everything is shared by every worker but the
/// upstream client, of which each worker has its own (see
/// [`Gateway::for_worker`]).
#[derive(Debug, Clone)]
pub struct Gateway {
    pub directory: Arc<ServerDirectory>,
    pub client: UpstreamClient,
    pub catalogue: Arc<ToolCatalogue>,
    pub sessions: Sessions,
    pub metrics: Arc<Metrics>,
    /// Announces keys that changed: a stream ends with its key's admission.
    pub keys: Arc<VerifiedKeyCache>,
    /// Tells whether an announced change changed a stream's key.
    pub admission: Arc<KeyAdmission>,
    /// Signs `X-Cola-Identity` for servers with `forward_identity`.
    pub identity: Arc<IdentityKeys>,
    /// `COLA_PUBLIC_URL`: the assertions' issuer and audiences' base.
    pub public_url: String,
    /// Each tenant's requests in flight on this instance.
    pub inflight: Arc<TenantInflight>,
}

impl Gateway {
    /// This gateway for one more worker: the same state, and an upstream
    /// client whose pooled connections live on that worker's runtime (see
    /// [`UpstreamClient::sibling`]). Should a client not be built, the
    /// worker shares this one, which works, one thread hop slower.
    #[must_use]
    pub fn for_worker(&self) -> Self {
        let client = self.client.sibling().unwrap_or_else(|error| {
            tracing::warn!(error = %error, "a worker's upstream client was not built; it shares another's");
            self.client.clone()
        });
        Self {
            client,
            ..self.clone()
        }
    }
}

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/mcp/{slug}")
            .wrap(from_fn(gate::authenticate_every_method))
            .route(web::post().to(post))
            .route(web::get().to(get))
            .route(web::delete().to(delete))
            .default_service(web::to(method_not_allowed("POST, GET, DELETE"))),
    );
}

/// An unknown session, or one of another key or server: all alike.
fn session_not_found() -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        &Value::Null,
        NOT_FOUND,
        "Session not found",
        None,
    )
}

/// An unknown slug, a verify-only server and an ungranted one: all alike.
fn server_not_reachable() -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        &Value::Null,
        NOT_FOUND,
        "no MCP server of that name is reachable with this key",
        None,
    )
}

/// The tenant has as many gateway requests in flight on this instance as
/// it may: 503, to try again shortly.
fn tenant_busy() -> HttpResponse {
    let mut response = Reply::error(
        StatusCode::SERVICE_UNAVAILABLE,
        &Value::Null,
        protocol::UNAVAILABLE,
        "too many requests of this tenant are under way; try again shortly",
        None,
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The principal the gate admitted, and the server the slug names for its
/// tenant, if the key may reach it; otherwise the answer to send.
async fn open_exchange<'g>(
    request: &HttpRequest,
    gateway: &'g Gateway,
    slug: &str,
    method: String,
) -> Result<Exchange<'g>, HttpResponse> {
    // The gate only lets admitted requests through; without a principal the
    // request was not admitted, whatever routed it here.
    let Some(principal) = request.extensions().get::<McpPrincipal>().cloned() else {
        return Err(HttpResponse::Unauthorized().finish());
    };
    let started = Instant::now();
    let key = principal.key();
    let refused = |outcome: &str, response: HttpResponse| {
        gateway.metrics.gateway_request(outcome, started);
        tracing::info!(
            key_prefix = %key.prefix,
            tenant = %key.tenant_id,
            slug = %printable(slug),
            outcome,
            "gateway request"
        );
        response
    };
    let server = match gateway.directory.resolve(key.tenant_id, slug).await {
        Ok(Some(server)) => server,
        Ok(None) => {
            return Err(refused(
                "unknown_server",
                server_not_reachable().into_response(),
            ));
        }
        Err(error) => {
            let unavailable = matches!(error, ServerLookupError::Unavailable(_));
            tracing::warn!(error = %cola_application::error_chain(&error), "a gateway server lookup failed");
            let (status, code, message) = if unavailable {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    protocol::UNAVAILABLE,
                    "the server registry is unavailable; try again shortly",
                )
            } else {
                (
                    StatusCode::BAD_GATEWAY,
                    relay::UPSTREAM_FAILED,
                    "the MCP server cannot be used right now",
                )
            };
            let reply = Reply::error(status, &Value::Null, code, message, None);
            return Err(refused("lookup_failed", reply.into_response()));
        }
    };
    // A verify-only server has no endpoint, and a server the key holds no
    // grant for is one it cannot see: both as if the slug were unknown.
    if server.url.is_none()
        || key
            .permissions
            .scope_on(Surface::Server(server.id))
            .is_none()
    {
        return Err(refused(
            "unknown_server",
            server_not_reachable().into_response(),
        ));
    }
    let Some(slot) = gateway.inflight.enter(key.tenant_id) else {
        return Err(refused("tenant_busy", tenant_busy()));
    };
    let binding = Binding {
        tenant: key.tenant_id,
        key: key.key_id,
        server: server.id,
    };
    Ok(Exchange {
        gateway,
        principal,
        server,
        binding,
        started,
        method,
        slot: Some(slot),
    })
}

/// A slug as it may appear in a log line.
fn printable(slug: &str) -> String {
    slug.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}

pub async fn post(
    request: HttpRequest,
    payload: web::Payload,
    slug: web::Path<String>,
    gateway: web::Data<Gateway>,
) -> HttpResponse {
    let exchange = match open_exchange(&request, &gateway, &slug, "-".to_owned()).await {
        Ok(exchange) => exchange,
        Err(response) => return response,
    };
    let mut payload = payload.into_inner();
    let body = match read_json_body(&request, &mut payload).await {
        Ok(body) => body,
        Err(reply) => return exchange.refuse("bad_request", reply),
    };
    let parsed = match strict::parse(&body) {
        Ok(parsed) => parsed,
        Err(error) => {
            let message = if error.is_syntax() || error.is_eof() {
                "Parse error".to_owned()
            } else {
                format!("Parse error: {error}")
            };
            return exchange.refuse(
                "bad_request",
                Reply::error(
                    StatusCode::BAD_REQUEST,
                    &Value::Null,
                    protocol::PARSE_ERROR,
                    &message,
                    None,
                ),
            );
        }
    };
    let message = match read_parsed(request.headers(), parsed) {
        Ok(message) => message,
        Err(reply) => return exchange.refuse("bad_request", reply),
    };
    exchange.forward_message(request.headers(), message).await
}

fn is_stateless_request(headers: &HeaderMap) -> bool {
    headers
        .get(protocol::HEADER_PROTOCOL_VERSION)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|version| version.trim() >= protocol::MODERN_VERSION)
}

/// GET: a handshake-era session's stream of server messages. The
/// stateless era has none (405).
pub async fn get(
    request: HttpRequest,
    slug: web::Path<String>,
    gateway: web::Data<Gateway>,
) -> HttpResponse {
    session_request(request, slug, gateway, reqwest::Method::GET).await
}

/// DELETE: ends a handshake-era session at the upstream.
pub async fn delete(
    request: HttpRequest,
    slug: web::Path<String>,
    gateway: web::Data<Gateway>,
) -> HttpResponse {
    session_request(request, slug, gateway, reqwest::Method::DELETE).await
}

async fn session_request(
    request: HttpRequest,
    slug: web::Path<String>,
    gateway: web::Data<Gateway>,
    method: reqwest::Method,
) -> HttpResponse {
    let exchange = match open_exchange(&request, &gateway, &slug, method.as_str().to_owned()).await
    {
        Ok(exchange) => exchange,
        Err(response) => return response,
    };
    let client = request.headers();
    if is_stateless_request(client) {
        let mut response = method_not_allowed("POST")(request.clone()).into_inner();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return exchange.finish("method_not_allowed", None, response);
    }
    exchange.session_request(client, method).await
}
