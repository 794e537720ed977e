//! The gateway's HTTP surface, `/mcp/{slug}`: it parses the request,
//! calls the gateway use case (`cola_application::GatewayService`) and
//! renders what it answers. Every request passes the same gate as `/mcp`
//! first; what a key may reach and see, and every word to the upstream, is
//! the use case's.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::middleware::from_fn;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use cola_application::{
    ClientHeaders, Closed, GatewayReply, GatewayService, McpPrincipal, Relayed,
};
use cola_infrastructure::UpstreamClient;
use cola_protocol::era::{
    HEADER_METHOD, HEADER_NAME, HEADER_PARAM_PREFIX, HEADER_PROTOCOL_VERSION, HEADER_SESSION_ID,
};
use cola_protocol::{RpcError, read_parsed, strict};
use futures_util::StreamExt;

use crate::foundations::routing::method_not_allowed;
use crate::mcp::gate;
use crate::mcp::handler::{HeaderText, Reply, read_json_body};
use crate::observability::metrics::Metrics;

const EVENT_STREAM: &str = "text/event-stream";

/// What the gateway's routes need: the use case, an upstream client to make
/// each worker's own from, and the metrics.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub service: GatewayService,
    pub client: UpstreamClient,
    pub metrics: Arc<Metrics>,
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
            service: self.service.for_worker(Arc::new(client.clone())),
            client,
            metrics: Arc::clone(&self.metrics),
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

/// The client's MCP headers, all the use case may look at.
fn client_headers(headers: &HeaderMap) -> ClientHeaders {
    let bytes = |name: &str| headers.get(name).map(|value| value.as_bytes().to_vec());
    ClientHeaders {
        accept: bytes(header::ACCEPT.as_str()),
        protocol_version: bytes(HEADER_PROTOCOL_VERSION),
        mcp_method: bytes(HEADER_METHOD),
        mcp_name: bytes(HEADER_NAME),
        session_id: bytes(HEADER_SESSION_ID),
        last_event_id: bytes("last-event-id"),
        params: headers
            .iter()
            .filter(|(name, _)| name.as_str().starts_with(HEADER_PARAM_PREFIX))
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect(),
    }
}

/// One gateway request's log line and metrics, from admission to answer.
struct Logged<'a> {
    gateway: &'a Gateway,
    principal: &'a McpPrincipal,
    slug: &'a str,
    started: Instant,
}

impl Logged<'_> {
    /// The one log line and the metrics of a gateway request. Never a
    /// header value, a URL or a body: the slug names the server.
    fn finish(
        &self,
        method: &str,
        outcome: &str,
        upstream_status: Option<u16>,
        response: HttpResponse,
    ) -> HttpResponse {
        let key = self.principal.key();
        tracing::info!(
            key_prefix = %key.prefix,
            tenant = %key.tenant_id,
            slug = %printable(self.slug),
            method,
            outcome,
            upstream_status = upstream_status.map_or_else(|| "-".to_owned(), |status| status.to_string()),
            status = response.status().as_u16(),
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            "gateway request"
        );
        self.gateway.metrics.gateway_request(outcome, self.started);
        response
    }

    fn closed(&self, method: &str, closed: Closed) -> HttpResponse {
        let response = refusal(closed.error, closed.retry_after);
        self.finish(method, closed.outcome, None, response)
    }

    fn relayed(&self, method: &str, relayed: Relayed) -> HttpResponse {
        let response = render(relayed.reply);
        self.finish(method, relayed.outcome, relayed.upstream_status, response)
    }
}

/// A slug as it may appear in a log line.
fn printable(slug: &str) -> String {
    slug.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}

fn refusal(error: RpcError, retry_after: Option<u64>) -> HttpResponse {
    let mut response = Reply::from(error).into_response();
    if let Some(seconds) = retry_after
        && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// What the use case answered, as HTTP.
fn render(reply: GatewayReply) -> HttpResponse {
    let build = |status: u16, session_id: Option<String>| {
        let mut builder =
            HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY));
        if let Some(session_id) = session_id {
            builder.insert_header((HEADER_SESSION_ID, session_id));
        }
        builder
    };
    match reply {
        GatewayReply::Refused { error, retry_after } => refusal(error, retry_after),
        GatewayReply::Status { status, session_id } => build(status, session_id).finish(),
        GatewayReply::Json {
            status,
            session_id,
            body,
        } => build(status, session_id)
            .content_type("application/json")
            .body(body),
        GatewayReply::Stream {
            status,
            session_id,
            events,
        } => build(status, session_id)
            .content_type(EVENT_STREAM)
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .insert_header(("x-accel-buffering", "no"))
            .streaming(events.map(Ok::<_, Infallible>)),
    }
}

/// The principal the gate admitted; without one the request was not
/// admitted, whatever routed it here.
fn admitted(request: &HttpRequest) -> Option<McpPrincipal> {
    request.extensions().get::<McpPrincipal>().cloned()
}

pub async fn post(
    request: HttpRequest,
    payload: web::Payload,
    slug: web::Path<String>,
    gateway: web::Data<Gateway>,
) -> HttpResponse {
    let Some(principal) = admitted(&request) else {
        return HttpResponse::Unauthorized().finish();
    };
    let logged = Logged {
        gateway: &gateway,
        principal: &principal,
        slug: &slug,
        started: Instant::now(),
    };
    let route = match gateway.service.open(principal.clone(), &slug).await {
        Ok(route) => route,
        Err(closed) => return logged.closed("-", closed),
    };
    let mut payload = payload.into_inner();
    let body = match read_json_body(&request, &mut payload).await {
        Ok(body) => body,
        Err(reply) => return logged.finish("-", "bad_request", None, reply.into_response()),
    };
    let parsed = match strict::parse(&body) {
        Ok(parsed) => parsed,
        Err(error) => {
            let detail = (!error.is_syntax() && !error.is_eof()).then(|| error.to_string());
            return logged.closed("-", bad_request(RpcError::parse_error(detail)));
        }
    };
    let message = match read_parsed(&HeaderText(request.headers()), parsed) {
        Ok(message) => message,
        Err(error) => return logged.closed("-", bad_request(error)),
    };
    let client = client_headers(request.headers());
    let (method, relayed) = route.forward(&client, message).await;
    logged.relayed(&method, relayed)
}

fn bad_request(error: RpcError) -> Closed {
    Closed {
        outcome: "bad_request",
        error,
        retry_after: None,
    }
}

/// GET: a handshake-era session's stream of server messages. The
/// stateless era has none (405).
pub async fn get(
    request: HttpRequest,
    slug: web::Path<String>,
    gateway: web::Data<Gateway>,
) -> HttpResponse {
    session_request(request, slug, gateway, true).await
}

/// DELETE: ends a handshake-era session at the upstream.
pub async fn delete(
    request: HttpRequest,
    slug: web::Path<String>,
    gateway: web::Data<Gateway>,
) -> HttpResponse {
    session_request(request, slug, gateway, false).await
}

async fn session_request(
    request: HttpRequest,
    slug: web::Path<String>,
    gateway: web::Data<Gateway>,
    get: bool,
) -> HttpResponse {
    let Some(principal) = admitted(&request) else {
        return HttpResponse::Unauthorized().finish();
    };
    let method = if get { "GET" } else { "DELETE" };
    let logged = Logged {
        gateway: &gateway,
        principal: &principal,
        slug: &slug,
        started: Instant::now(),
    };
    let route = match gateway.service.open(principal.clone(), &slug).await {
        Ok(route) => route,
        Err(closed) => return logged.closed(method, closed),
    };
    let client = client_headers(request.headers());
    if !client.era().has_sessions() {
        let mut response = method_not_allowed("POST")(request.clone()).into_inner();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return logged.finish(method, "method_not_allowed", None, response);
    }
    let relayed = route.session_request(&client, get).await;
    logged.relayed(method, relayed)
}
