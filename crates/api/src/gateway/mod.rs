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

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::from_fn;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use cola_application::{
    KeyAdmission, McpPrincipal, ServerDirectory, ServerLookupError, TenantInflight, ToolCatalogue,
    VerifiedKeyCache,
};
use cola_domain::Surface;
use cola_infrastructure::{IdentityKeys, UpstreamClient};

pub use session::{Binding, Sessions};

use cola_protocol::era::HEADER_PROTOCOL_VERSION;
use cola_protocol::{Era, Headers, RpcError, read_parsed, strict};

use self::exchange::Exchange;
use crate::mcp::gate;
use crate::mcp::handler::{HeaderText, Reply, read_json_body};
use crate::metrics::Metrics;
use crate::routes::method_not_allowed;

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

/// The tenant has as many gateway requests in flight on this instance as
/// it may: 503, to try again shortly.
fn tenant_busy() -> HttpResponse {
    let mut response = Reply::from(RpcError::tenant_busy()).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// An unknown slug, a verify-only server and an ungranted one: all alike.
fn not_reachable() -> HttpResponse {
    Reply::from(RpcError::server_not_reachable()).into_response()
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
        Ok(None) => return Err(refused("unknown_server", not_reachable())),
        Err(error) => {
            tracing::warn!(error = %cola_application::error_chain(&error), "a gateway server lookup failed");
            let error = match error {
                ServerLookupError::Unavailable(_) => RpcError::registry_unavailable(),
                ServerLookupError::Corrupt(_) => RpcError::server_unusable(),
            };
            return Err(refused("lookup_failed", Reply::from(error).into_response()));
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
        return Err(refused("unknown_server", not_reachable()));
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
            let detail = (!error.is_syntax() && !error.is_eof()).then(|| error.to_string());
            return exchange.refuse("bad_request", RpcError::parse_error(detail));
        }
    };
    let message = match read_parsed(&HeaderText(request.headers()), parsed) {
        Ok(message) => message,
        Err(error) => return exchange.refuse("bad_request", error),
    };
    exchange.forward_message(request.headers(), message).await
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
    let headers = HeaderText(client);
    if !Era::of_header(headers.text(HEADER_PROTOCOL_VERSION)).has_sessions() {
        let mut response = method_not_allowed("POST")(request.clone()).into_inner();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return exchange.finish("method_not_allowed", None, response);
    }
    exchange.session_request(client, method).await
}
