//! The gateway, `/mcp/{slug}` (CONTRACT §8): a key reaches its tenant's own
//! MCP server through Cola and gets exactly what its grant there allows.
//!
//! Every request passes the same gate as `/mcp`, then: the server the slug
//! names for the key's tenant, the key's grant on it (an unknown slug and an
//! ungranted server are the same 404), one strictly parsed JSON-RPC message
//! with the stateless era's headers checked against it, the policy's verdict
//! (`cola_application::authorise_gateway_message`), and only then the
//! upstream, which gets the message Cola authorised re-serialised, the
//! server's own headers and the MCP ones, and nothing else of the client's.

mod relay;
mod session;
mod strict;

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::middleware::from_fn;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use bytes::Bytes;
use cola_application::{
    Hidden, ListKind, McpPrincipal, ResolvedServer, ServerDirectory, ServerLookupError,
    ToolCatalogue, ToolLookup, Verdict, VerifiedKeyCache, authorise_gateway_message,
};
use cola_domain::{Surface, UpstreamUrl};
use cola_infrastructure::{
    ASSERTION_LIFETIME_SECS, IdentityClaims, IdentityKeys, UpstreamClient, UpstreamError,
    UpstreamRequest, UpstreamResponse,
};
use serde_json::{Value, json};

pub use session::{Binding, Sessions};

use crate::mcp::gate;
use crate::mcp::handler::{Message, Reply, read_json_body, read_parsed};
use crate::mcp::protocol::{self, Era};
use crate::metrics::Metrics;
use crate::routes::method_not_allowed;

/// The largest JSON answer from an upstream Cola reads (a list it filters).
const MAX_UPSTREAM_JSON_BYTES: usize = 8 * 1024 * 1024;
/// Pages of `tools/list` read when Cola asks an upstream for its catalogue.
const MAX_CATALOGUE_PAGES: usize = 10;
const SESSION_HEADER: &str = "mcp-session-id";
const IDENTITY_HEADER: &str = "x-cola-identity";
const LAST_EVENT_ID: &str = "last-event-id";
const EVENT_STREAM: &str = "text/event-stream";
const DEFAULT_ACCEPT: &str = "application/json, text/event-stream";

/// Application codes of the gateway's own refusals (outside the ranges the
/// JSON-RPC and MCP specifications reserve).
const NOT_FOUND: i64 = -31004;
const UPSTREAM_FAILED: i64 = -31502;
const UPSTREAM_TIMEOUT: i64 = -31504;

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
    /// Signs `X-Cola-Identity` for servers with `forward_identity`.
    pub identity: Arc<IdentityKeys>,
    /// `COLA_PUBLIC_URL`: the assertions' issuer and audiences' base.
    pub public_url: String,
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

/// Why a request did not reach the upstream.
#[derive(Debug)]
enum SendFailure {
    Upstream(UpstreamError),
    /// The identity assertion could not be made: nothing is sent.
    Identity,
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

/// One gateway request under way: who, to which server, since when.
struct Exchange<'a> {
    gateway: &'a Gateway,
    principal: McpPrincipal,
    server: Arc<ResolvedServer>,
    binding: Binding,
    started: Instant,
    method: String,
}

impl Exchange<'_> {
    /// The one log line and the metrics of a gateway request. Never a
    /// header value, a URL or a body: the slug names the server.
    fn finish(
        &self,
        outcome: &str,
        upstream_status: Option<u16>,
        response: HttpResponse,
    ) -> HttpResponse {
        let key = self.principal.key();
        tracing::info!(
            key_prefix = %key.prefix,
            tenant = %key.tenant_id,
            slug = %self.server.slug,
            method = %self.method,
            outcome,
            upstream_status = upstream_status.map_or_else(|| "-".to_owned(), |status| status.to_string()),
            status = response.status().as_u16(),
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            "gateway request"
        );
        self.gateway.metrics.gateway_request(outcome, self.started);
        response
    }

    /// A refusal of the gateway's own, as a JSON-RPC error.
    fn refuse(&self, outcome: &str, reply: Reply) -> HttpResponse {
        self.finish(outcome, None, reply.into_response())
    }

    /// The upstream failed: 502 or 504 naming the server by its slug and
    /// nothing of its URL, headers or answer.
    fn upstream_failed(&self, failure: &SendFailure, status: Option<u16>) -> HttpResponse {
        let slug = &self.server.slug;
        let error = match failure {
            SendFailure::Upstream(error) => error,
            SendFailure::Identity => {
                // Never forwarded without the identity the server expects.
                return self.finish(
                    "identity_unavailable",
                    status,
                    Reply::error(
                        StatusCode::BAD_GATEWAY,
                        &Value::Null,
                        UPSTREAM_FAILED,
                        &format!("the request to the MCP server `{slug}` could not be signed"),
                        Some(json!({ "server": slug })),
                    )
                    .into_response(),
                );
            }
        };
        let (http, code, message, outcome) = match error {
            UpstreamError::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                UPSTREAM_TIMEOUT,
                format!("the MCP server `{slug}` did not answer in time"),
                "upstream_timeout",
            ),
            UpstreamError::AddressRefused => (
                StatusCode::BAD_GATEWAY,
                UPSTREAM_FAILED,
                format!("the MCP server `{slug}` is at an address Cola may not reach"),
                "upstream_address_refused",
            ),
            UpstreamError::Unreachable(_) | UpstreamError::Invalid(_) => (
                StatusCode::BAD_GATEWAY,
                UPSTREAM_FAILED,
                format!("the MCP server `{slug}` could not be reached"),
                "upstream_unreachable",
            ),
        };
        tracing::warn!(
            slug = %slug,
            error = %cola_application::error_chain(error),
            "an upstream request failed"
        );
        self.finish(
            outcome,
            status,
            Reply::error(
                http,
                &Value::Null,
                code,
                &message,
                Some(json!({ "server": slug })),
            )
            .into_response(),
        )
    }

    /// A call that needs the upstream's tool catalogue when it cannot be
    /// read: the call cannot be decided, so it is not forwarded (fails
    /// closed), and the client is told the server is unreachable rather
    /// than that the tool does not exist.
    fn catalogue_unavailable(&self, id: &Value) -> HttpResponse {
        let slug = &self.server.slug;
        self.finish(
            "catalogue_unavailable",
            None,
            Reply::error(
                StatusCode::BAD_GATEWAY,
                id,
                UPSTREAM_FAILED,
                &format!("the MCP server `{slug}` could not be reached"),
                Some(json!({ "server": slug })),
            )
            .into_response(),
        )
    }

    /// The upstream answered, but not in a way the client may see.
    fn upstream_refused(&self, outcome: &str, message: &str, status: u16) -> HttpResponse {
        let slug = &self.server.slug;
        self.finish(
            outcome,
            Some(status),
            Reply::error(
                StatusCode::BAD_GATEWAY,
                &Value::Null,
                UPSTREAM_FAILED,
                &format!("the MCP server `{slug}` {message}"),
                Some(json!({ "server": slug })),
            )
            .into_response(),
        )
    }

    fn lens(&self, list: Option<(ListKind, Value)>) -> relay::Lens {
        relay::Lens {
            principal: self.principal.clone(),
            server: self.server.id,
            list,
            catalogue: Arc::clone(&self.gateway.catalogue),
        }
    }

    /// The headers of a request to the upstream: the server's own, then the
    /// MCP ones Cola chose to pass. Nothing else of the client's.
    fn upstream_headers(
        &self,
        client: &HeaderMap,
        era: Option<Era>,
        upstream_session: Option<&str>,
    ) -> reqwest::header::HeaderMap {
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &self.server.headers {
            if let (Ok(name), Ok(mut value)) = (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                reqwest::header::HeaderValue::from_str(value.expose()),
            ) {
                value.set_sensitive(true);
                headers.insert(name, value);
            }
        }
        let accept = client
            .get(header::ACCEPT)
            .map_or(DEFAULT_ACCEPT.as_bytes(), HeaderValue::as_bytes);
        insert(&mut headers, "accept", accept);
        insert(&mut headers, "content-type", b"application/json");
        if let Some(version) = client.get(protocol::HEADER_PROTOCOL_VERSION) {
            insert(
                &mut headers,
                protocol::HEADER_PROTOCOL_VERSION,
                version.as_bytes(),
            );
        }
        // The stateless era's mirrored headers were checked against the
        // body; a handshake-era request's were not, so they are not passed.
        if era == Some(Era::Stateless) {
            for (name, value) in client {
                let name = name.as_str();
                if name == protocol::HEADER_METHOD
                    || name == protocol::HEADER_NAME
                    || name.starts_with("mcp-param-")
                {
                    insert(&mut headers, name, value.as_bytes());
                }
            }
        }
        if let Some(session) = upstream_session {
            insert(&mut headers, SESSION_HEADER, session.as_bytes());
        }
        headers
    }

    async fn send(
        &self,
        method: reqwest::Method,
        mut headers: reqwest::header::HeaderMap,
        body: Option<Vec<u8>>,
    ) -> Result<UpstreamResponse, SendFailure> {
        let Some(url) = self.server.url.as_ref().map(UpstreamUrl::as_url) else {
            return Err(SendFailure::Upstream(UpstreamError::AddressRefused));
        };
        if self.server.forward_identity {
            let assertion = self.identity_assertion()?;
            headers.insert(IDENTITY_HEADER, assertion);
        }
        self.gateway
            .client
            .send(UpstreamRequest {
                method,
                url,
                headers,
                body,
                timeout: self.server.timeout,
            })
            .await
            .map_err(SendFailure::Upstream)
    }

    /// `X-Cola-Identity` for this request: who is calling, signed for this
    /// server alone, valid for a minute, with an id of its own.
    fn identity_assertion(&self) -> Result<reqwest::header::HeaderValue, SendFailure> {
        let key = self.principal.key();
        let now = chrono::Utc::now().timestamp();
        let audience = format!("{}/mcp/{}", self.gateway.public_url, self.server.slug);
        let claims = IdentityClaims {
            iss: &self.gateway.public_url,
            aud: &audience,
            sub: key.owner.as_uuid(),
            tenant_id: key.tenant_id.as_uuid(),
            key_id: key.key_id.as_uuid(),
            key_prefix: key.prefix.as_str(),
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
            jti: uuid::Uuid::new_v4(),
        };
        let signed = self
            .gateway
            .identity
            .current()
            .sign(&claims)
            .map_err(|error| {
                tracing::error!(error = %cola_application::error_chain(&error), "identity assertion not signed");
                SendFailure::Identity
            })?;
        let mut value =
            reqwest::header::HeaderValue::from_str(&signed).map_err(|_| SendFailure::Identity)?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// The upstream's session id in the client's `Mcp-Session-Id`: `Ok(None)`
    /// without one, `Err` when it is not a session of this key and server.
    fn upstream_session(
        &self,
        client: &HeaderMap,
    ) -> Result<Option<zeroize::Zeroizing<String>>, ()> {
        let Some(presented) = client.get(SESSION_HEADER) else {
            return Ok(None);
        };
        presented
            .to_str()
            .ok()
            .and_then(|presented| self.gateway.sessions.open(&self.binding, presented))
            .map(Some)
            .ok_or(())
    }

    /// The answer to a session that does not open: 404, so that the client
    /// starts a new one (and learns nothing of why).
    fn unknown_session(&self) -> HttpResponse {
        self.refuse("unknown_session", session_not_found())
    }

    /// The upstream's answer as the client gets it.
    async fn relay(
        &self,
        response: UpstreamResponse,
        list: Option<(ListKind, Value)>,
        had_session: bool,
    ) -> HttpResponse {
        let status = response.status;
        match status {
            401 | 403 => {
                return self.upstream_refused(
                    "upstream_refused_credential",
                    "refused Cola's credential",
                    status,
                );
            }
            300..=399 => {
                return self.upstream_refused(
                    "upstream_redirect",
                    "answered with a redirect",
                    status,
                );
            }
            404 if had_session => return self.unknown_session_from_upstream(status),
            500..=599 => {
                return self.upstream_refused("upstream_error", "failed to answer", status);
            }
            _ => {}
        }
        let Ok(http) = StatusCode::from_u16(status) else {
            return self.upstream_refused("upstream_error", "gave an unreadable answer", status);
        };
        let mut builder = HttpResponse::build(http);
        if let Some(upstream_session) = response.headers.get(SESSION_HEADER) {
            let sealed = upstream_session
                .to_str()
                .ok()
                .and_then(|id| self.gateway.sessions.seal(&self.binding, id));
            let Some(sealed) = sealed else {
                return self.upstream_refused(
                    "upstream_error",
                    "gave an unusable session id",
                    status,
                );
            };
            builder.insert_header((SESSION_HEADER, sealed));
        }
        let content_type = response
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| {
                value
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        if content_type == EVENT_STREAM && http.is_success() {
            let lens = self.lens(list);
            let lifetime = relay::Lifetime::of(
                &lens,
                self.gateway.keys.watch_changes(),
                self.method == "GET",
            );
            let stream = relay::sse(response.into_stream(), lens, lifetime);
            let answer = builder
                .content_type(EVENT_STREAM)
                .insert_header((header::CACHE_CONTROL, "no-cache"))
                .insert_header(("x-accel-buffering", "no"))
                .streaming(stream);
            return self.finish("relayed_stream", Some(status), answer);
        }
        if content_type == "application/json" || content_type.ends_with("+json") {
            let body = match response.read_to_limit(MAX_UPSTREAM_JSON_BYTES).await {
                Ok(body) => body,
                Err(cola_infrastructure::ReadBodyError::TooLarge) => {
                    return self.upstream_refused(
                        "upstream_too_large",
                        "answered with more than Cola relays",
                        status,
                    );
                }
                Err(cola_infrastructure::ReadBodyError::Upstream(error)) => {
                    return self.upstream_failed(&SendFailure::Upstream(error), Some(status));
                }
            };
            // An acknowledgement (202) may say JSON and carry nothing.
            if body.is_empty() {
                return self.finish("relayed", Some(status), builder.finish());
            }
            let Some(shown) = self.lens(list).json_body(body) else {
                return self.upstream_refused(
                    "upstream_error",
                    "gave an unreadable answer",
                    status,
                );
            };
            return self.finish(
                "relayed",
                Some(status),
                builder.content_type("application/json").body(shown),
            );
        }
        // No body Cola can vouch for (a 202, a 405 without JSON …): the
        // status alone.
        self.finish("relayed", Some(status), builder.finish())
    }

    fn unknown_session_from_upstream(&self, status: u16) -> HttpResponse {
        self.finish(
            "upstream_session_gone",
            Some(status),
            session_not_found().into_response(),
        )
    }

    /// Asks the upstream for its tools (every page), for a decision that
    /// needs a tool's `readOnlyHint`, in the client's own era and session.
    /// Returns whether the catalogue was brought up to date.
    async fn fetch_catalogue(
        &self,
        client: &HeaderMap,
        era: Era,
        meta: Option<&Value>,
        upstream_session: Option<&str>,
    ) -> bool {
        let mut tools = Vec::new();
        let mut cursor: Option<Value> = None;
        for _ in 0..MAX_CATALOGUE_PAGES {
            let mut params = serde_json::Map::new();
            if let Some(meta) = meta {
                params.insert("_meta".to_owned(), meta.clone());
            }
            if let Some(cursor) = cursor.take() {
                params.insert("cursor".to_owned(), cursor);
            }
            let id = Value::from(format!("cola-catalogue-{}", uuid::Uuid::new_v4()));
            let message =
                json!({ "jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params });
            let mut headers = self.upstream_headers(&HeaderMap::new(), None, upstream_session);
            if let Some(version) = client.get(protocol::HEADER_PROTOCOL_VERSION) {
                insert(
                    &mut headers,
                    protocol::HEADER_PROTOCOL_VERSION,
                    version.as_bytes(),
                );
            }
            insert(&mut headers, "accept", DEFAULT_ACCEPT.as_bytes());
            if era == Era::Stateless {
                insert(&mut headers, protocol::HEADER_METHOD, b"tools/list");
            }
            let Ok(body) = serde_json::to_vec(&message) else {
                return false;
            };
            let Ok(response) = self.send(reqwest::Method::POST, headers, Some(body)).await else {
                return false;
            };
            if !(200..300).contains(&response.status) {
                return false;
            }
            let is_stream = response
                .headers
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.starts_with(EVENT_STREAM));
            let Ok(body) = response.read_to_limit(MAX_UPSTREAM_JSON_BYTES).await else {
                return false;
            };
            let messages = if is_stream {
                relay::messages_of(Bytes::from(body)).await
            } else {
                serde_json::from_slice(&body).into_iter().collect()
            };
            let Some(result) = messages
                .into_iter()
                .find(|message| message.get("id") == Some(&id))
                .and_then(|mut message| message.get_mut("result").map(Value::take))
            else {
                return false;
            };
            if let Some(page) = result.get("tools").and_then(Value::as_array) {
                tools.extend(page.iter().cloned());
            }
            match result.get("nextCursor") {
                Some(next @ Value::String(_)) => cursor = Some(next.clone()),
                _ => {
                    self.gateway
                        .catalogue
                        .record(self.server.id.as_uuid(), &tools);
                    return true;
                }
            }
        }
        false
    }
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

fn insert(headers: &mut reqwest::header::HeaderMap, name: &str, value: &[u8]) {
    if let (Ok(name), Ok(value)) = (
        reqwest::header::HeaderName::from_bytes(name.as_bytes()),
        reqwest::header::HeaderValue::from_bytes(value),
    ) {
        headers.insert(name, value);
    }
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
    let resolved = gateway.directory.resolve(key.tenant_id, slug).await;
    let unknown = || {
        gateway.metrics.gateway_request("unknown_server", started);
        tracing::info!(
            key_prefix = %key.prefix,
            tenant = %key.tenant_id,
            slug = %printable(slug),
            outcome = "unknown_server",
            "gateway request"
        );
        server_not_reachable().into_response()
    };
    let server = match resolved {
        Ok(Some(server)) => server,
        Ok(None) => return Err(unknown()),
        Err(error) => {
            let unavailable = matches!(error, ServerLookupError::Unavailable(_));
            tracing::warn!(error = %cola_application::error_chain(&error), "a gateway server lookup failed");
            gateway.metrics.gateway_request("lookup_failed", started);
            let (status, code, message) = if unavailable {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    protocol::UNAVAILABLE,
                    "the server registry is unavailable; try again shortly",
                )
            } else {
                (
                    StatusCode::BAD_GATEWAY,
                    UPSTREAM_FAILED,
                    "the MCP server cannot be used right now",
                )
            };
            return Err(Reply::error(status, &Value::Null, code, message, None).into_response());
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
        return Err(unknown());
    }
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
    })
}

/// A slug as it may appear in a log line.
fn printable(slug: &str) -> String {
    slug.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}

/// The refusal of a hidden item: exactly the error its absence gets.
fn hidden(era: Era, id: &Value, item: &Hidden) -> Reply {
    match item {
        Hidden::Tool(name) => Reply::error(
            StatusCode::OK,
            id,
            protocol::INVALID_PARAMS,
            &format!("Unknown tool: {name}"),
            None,
        ),
        Hidden::Prompt(name) => Reply::error(
            StatusCode::OK,
            id,
            protocol::INVALID_PARAMS,
            &format!("Unknown prompt: {name}"),
            None,
        ),
        Hidden::Resource(uri) => Reply::error(
            StatusCode::OK,
            id,
            protocol::resource_not_found_code(era),
            "Resource not found",
            Some(json!({ "uri": uri })),
        ),
    }
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
    forward_message(exchange, request.headers(), message).await
}

async fn forward_message(
    mut exchange: Exchange<'_>,
    client: &HeaderMap,
    message: Message,
) -> HttpResponse {
    let (era, forwarded, list) = match message {
        Message::Request(request) => {
            exchange.method.clone_from(&request.method);
            let era = request.era;
            let upstream_session = match exchange.upstream_session(client) {
                Ok(session) if era == Era::Handshake => session,
                // The stateless era has no sessions: a session id is ignored.
                Ok(_) => None,
                Err(()) if era == Era::Stateless => None,
                Err(()) => return exchange.unknown_session(),
            };
            let lookup = |name: &str| {
                exchange
                    .gateway
                    .catalogue
                    .lookup(exchange.server.id.as_uuid(), name)
            };
            let decide = |lookup: &dyn Fn(&str) -> ToolLookup| {
                exchange
                    .principal
                    .key()
                    .permissions
                    .scope_on(Surface::Server(exchange.server.id))
                    .map(|scope| {
                        authorise_gateway_message(&scope, &request.method, &request.params, lookup)
                    })
            };
            let catalogue = &exchange.gateway.catalogue;
            let server = exchange.server.id.as_uuid();
            let fetch = || {
                exchange.fetch_catalogue(
                    client,
                    era,
                    request.params.get("_meta"),
                    upstream_session.as_deref().map(String::as_str),
                )
            };
            let mut verdict = decide(&lookup);
            if verdict == Some(Verdict::NeedsCatalogue) {
                // One fetch at a time per server: the calls that arrive
                // meanwhile wait for it and decide on what it found.
                let mut turn = catalogue.fetch_turn(server).await;
                verdict = decide(&lookup);
                if verdict == Some(Verdict::NeedsCatalogue) {
                    let fetched = turn.claim() && fetch().await;
                    if !fetched {
                        tracing::info!(slug = %exchange.server.slug, "the upstream's tool catalogue cannot be read; a call that needs it is refused");
                        return exchange.catalogue_unavailable(&request.id);
                    }
                    verdict = decide(&lookup);
                }
            } else if request.method == "tools/call"
                && catalogue.refresh_due(server)
                && let Some(mut turn) = catalogue.try_fetch_turn(server)
                && turn.claim()
            {
                // Ahead of its expiry, by this one call; the others go on
                // deciding with the catalogue they have.
                fetch().await;
                verdict = decide(&lookup);
            }
            let list = match verdict {
                Some(Verdict::Forward) => None,
                Some(Verdict::ForwardAndFilter(kind)) => Some((kind, request.id.clone())),
                Some(Verdict::Refuse(item)) => {
                    return exchange.refuse("hidden", hidden(era, &request.id, &item));
                }
                // Still unknown after asking: the decision cannot be made,
                // so the call is refused as a tool the key cannot see.
                Some(Verdict::NeedsCatalogue) => {
                    let name = request
                        .params
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    return exchange.refuse(
                        "hidden",
                        hidden(era, &request.id, &Hidden::Tool(name.to_owned())),
                    );
                }
                Some(Verdict::Invalid(message)) => {
                    return exchange.refuse(
                        "bad_request",
                        Reply::error(
                            StatusCode::OK,
                            &request.id,
                            protocol::INVALID_PARAMS,
                            message,
                            None,
                        ),
                    );
                }
                Some(Verdict::UnknownMethod) => {
                    let status = if era == Era::Stateless {
                        StatusCode::NOT_FOUND
                    } else {
                        StatusCode::OK
                    };
                    return exchange.refuse(
                        "unknown_method",
                        Reply::error(
                            status,
                            &request.id,
                            protocol::METHOD_NOT_FOUND,
                            &format!("Method not found: {}", request.method),
                            None,
                        ),
                    );
                }
                // The grant went away since the exchange opened.
                None => {
                    return exchange.refuse("unknown_server", server_not_reachable());
                }
            };
            let body = json!({
                "jsonrpc": "2.0",
                "id": request.id,
                "method": request.method,
                "params": request.params,
            });
            (Some(era), (body, upstream_session), list)
        }
        Message::Notification(notification) => {
            exchange.method.clone_from(&notification.method);
            // Only the protocol's own notifications are passed on; anything
            // else is acknowledged and dropped, as `/mcp` does.
            if !notification.method.starts_with("notifications/") {
                return exchange.finish("dropped", None, Reply::accepted().into_response());
            }
            let era = notification.era;
            let upstream_session = match exchange.upstream_session(client) {
                Ok(session) if era == Era::Handshake => session,
                Ok(_) | Err(()) if era == Era::Stateless => None,
                _ => return exchange.unknown_session(),
            };
            let body = json!({
                "jsonrpc": "2.0",
                "method": notification.method,
                "params": notification.params,
            });
            (Some(era), (body, upstream_session), None)
        }
        Message::Response(response) => {
            "response".clone_into(&mut exchange.method);
            // Answers to a server's requests exist only within a
            // handshake-era session.
            let upstream_session = match exchange.upstream_session(client) {
                Ok(session) => session,
                Err(()) => return exchange.unknown_session(),
            };
            (None, (response, upstream_session), None)
        }
    };
    let (body, upstream_session) = forwarded;
    let Ok(body) = serde_json::to_vec(&body) else {
        return exchange.refuse(
            "bad_request",
            Reply::error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                protocol::INVALID_REQUEST,
                "the message cannot be forwarded",
                None,
            ),
        );
    };
    let headers =
        exchange.upstream_headers(client, era, upstream_session.as_deref().map(String::as_str));
    match exchange
        .send(reqwest::Method::POST, headers, Some(body))
        .await
    {
        Ok(response) => {
            exchange
                .relay(response, list, upstream_session.is_some())
                .await
        }
        Err(error) => exchange.upstream_failed(&error, None),
    }
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
    let upstream_session = match exchange.upstream_session(client) {
        Ok(session) => session,
        Err(()) => return exchange.unknown_session(),
    };
    let mut headers = exchange.upstream_headers(
        client,
        Some(Era::Handshake),
        upstream_session.as_deref().map(String::as_str),
    );
    headers.remove(reqwest::header::CONTENT_TYPE);
    if method == reqwest::Method::GET {
        insert(&mut headers, "accept", EVENT_STREAM.as_bytes());
        // A resumption point belongs to its session's stream: passed only
        // within a session, to that session's upstream.
        if upstream_session.is_some()
            && let Some(last) = client.get(LAST_EVENT_ID)
        {
            insert(&mut headers, LAST_EVENT_ID, last.as_bytes());
        }
    }
    match exchange.send(method, headers, None).await {
        Ok(response) => {
            exchange
                .relay(response, None, upstream_session.is_some())
                .await
        }
        Err(error) => exchange.upstream_failed(&error, None),
    }
}
