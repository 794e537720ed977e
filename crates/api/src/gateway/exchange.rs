//! One gateway request under way: the message Cola authorised, sent to the
//! upstream under an id of Cola's own, and the upstream's answer relayed as
//! the key may see it.

use std::sync::Arc;
use std::time::Instant;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use bytes::Bytes;
use cola_application::{
    CataloguePage, Expected, Hidden, InflightSlot, MAX_LIST_ANSWER_BYTES, McpPrincipal,
    ResolvedServer, ToolLookup, UpstreamId, Verdict, authorise_gateway_message,
    mirrored_param_allowed,
};
use cola_domain::{Surface, UpstreamUrl};
use cola_infrastructure::{
    ASSERTION_LIFETIME_SECS, IdentityClaims, ReadBodyError, UpstreamError, UpstreamRequest,
    UpstreamResponse,
};
use serde_json::{Value, json};

use cola_protocol::era::{HEADER_METHOD, HEADER_NAME, HEADER_PROTOCOL_VERSION};
use cola_protocol::{Era, Message, Notification, RawMessage, Request, RpcError};

use super::Gateway;
use super::relay::{self, Lens, Lifetime, Listening, Shown};
use super::session::Binding;
use crate::mcp::handler::Reply;

/// The largest JSON answer from an upstream Cola reads (a list is refused
/// past [`MAX_LIST_ANSWER_BYTES`]).
const MAX_UPSTREAM_JSON_BYTES: usize = 8 * 1024 * 1024;
/// Pages of `tools/list` read when Cola asks an upstream for its catalogue.
const MAX_CATALOGUE_PAGES: usize = 10;
const SESSION_HEADER: &str = "mcp-session-id";
const IDENTITY_HEADER: &str = "x-cola-identity";
const LAST_EVENT_ID: &str = "last-event-id";
const EVENT_STREAM: &str = "text/event-stream";
const DEFAULT_ACCEPT: &str = "application/json, text/event-stream";
const PARAM_HEADER_PREFIX: &str = "mcp-param-";

/// Why a request did not reach the upstream.
#[derive(Debug)]
enum SendFailure {
    Upstream(UpstreamError),
    /// The identity assertion could not be made: nothing is sent.
    Identity,
}

/// How an upstream's answer is to be relayed.
struct Answering {
    expected: Option<Expected>,
    answer_names_ids: bool,
    listening: Listening,
}

impl Answering {
    /// An exchange that expects no answer (a notification, a client's
    /// answer to the server, a session's DELETE).
    fn nothing() -> Self {
        Self {
            expected: None,
            answer_names_ids: false,
            listening: Listening::No,
        }
    }
}

/// One gateway request under way: who, to which server, since when.
pub(super) struct Exchange<'a> {
    pub(super) gateway: &'a Gateway,
    pub(super) principal: McpPrincipal,
    pub(super) server: Arc<ResolvedServer>,
    pub(super) binding: Binding,
    pub(super) started: Instant,
    pub(super) method: String,
    /// The tenant's place in flight, held until the answer is relayed.
    pub(super) slot: Option<InflightSlot>,
}

impl Exchange<'_> {
    /// The one log line and the metrics of a gateway request. Never a
    /// header value, a URL or a body: the slug names the server.
    pub(super) fn finish(
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
    pub(super) fn refuse(&self, outcome: &str, refusal: impl Into<Reply>) -> HttpResponse {
        self.finish(outcome, None, refusal.into().into_response())
    }

    /// A 502 naming the server by its slug, and nothing of its URL,
    /// headers or answer.
    fn bad_gateway(
        &self,
        outcome: &str,
        id: &Value,
        what: &str,
        status: Option<u16>,
    ) -> HttpResponse {
        let error = RpcError::upstream_failed(&self.server.slug, what).answering(id);
        self.finish(outcome, status, Reply::from(error).into_response())
    }

    /// An upstream that took longer than `timeout_secs`: 504.
    fn timed_out(&self, status: Option<u16>) -> HttpResponse {
        let error = RpcError::upstream_timeout(&self.server.slug);
        self.finish(
            "upstream_timeout",
            status,
            Reply::from(error).into_response(),
        )
    }

    /// The upstream failed: 502 or 504.
    fn upstream_failed(&self, failure: &SendFailure, status: Option<u16>) -> HttpResponse {
        let error = match failure {
            SendFailure::Upstream(error) => error,
            // Never forwarded without the identity the server expects.
            SendFailure::Identity => {
                return self.bad_gateway(
                    "identity_unavailable",
                    &Value::Null,
                    "cannot be sent a signed request right now",
                    status,
                );
            }
        };
        tracing::warn!(
            slug = %self.server.slug,
            error = %cola_application::error_chain(error),
            "an upstream request failed"
        );
        match error {
            UpstreamError::Timeout => self.timed_out(status),
            UpstreamError::AddressRefused => self.bad_gateway(
                "upstream_address_refused",
                &Value::Null,
                "is at an address Cola may not reach",
                status,
            ),
            UpstreamError::Unreachable(_) | UpstreamError::Invalid(_) => self.bad_gateway(
                "upstream_unreachable",
                &Value::Null,
                "could not be reached",
                status,
            ),
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
        if let Some(version) = client.get(HEADER_PROTOCOL_VERSION) {
            insert(&mut headers, HEADER_PROTOCOL_VERSION, version.as_bytes());
        }
        // The stateless era's mirrored headers were checked against the
        // body; a handshake-era request's were not, so they are not passed.
        // `Mcp-Param-*` headers are passed by `forward_request` alone,
        // which checks each against the tool's schema and the body.
        if era == Some(Era::Stateless) {
            for name in [HEADER_METHOD, HEADER_NAME] {
                if let Some(value) = client.get(name) {
                    insert(&mut headers, name, value.as_bytes());
                }
            }
        }
        if let Some(session) = upstream_session {
            insert(&mut headers, SESSION_HEADER, session.as_bytes());
        }
        headers
    }

    /// The client's `Mcp-Param-*` headers of a 2026-07-28 `tools/call` that
    /// the tool marks `x-mcp-header` and the body backs, value for value.
    fn mirrored_params(
        &self,
        client: &HeaderMap,
        request: &Request,
        headers: &mut reqwest::header::HeaderMap,
    ) {
        if request.era != Era::Stateless || request.method != "tools/call" {
            return;
        }
        let Some(name) = request.params.get("name").and_then(Value::as_str) else {
            return;
        };
        let Some(params) = self
            .gateway
            .catalogue
            .header_params(self.server.id.as_uuid(), name)
        else {
            return;
        };
        let arguments = request.params.get("arguments").unwrap_or(&Value::Null);
        for (header_name, value) in client {
            let Some(suffix) = header_name.as_str().strip_prefix(PARAM_HEADER_PREFIX) else {
                continue;
            };
            if mirrored_param_allowed(&params, arguments, suffix, value.as_bytes()) {
                insert(headers, header_name.as_str(), value.as_bytes());
            }
        }
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
    /// server alone (by its id, as slugs repeat across tenants), valid for a
    /// minute, with an id of its own.
    fn identity_assertion(&self) -> Result<reqwest::header::HeaderValue, SendFailure> {
        let key = self.principal.key();
        let now = chrono::Utc::now().timestamp();
        let audience = format!("{}/mcp/{}", self.gateway.public_url, self.server.slug);
        let claims = IdentityClaims {
            iss: &self.gateway.public_url,
            aud: &audience,
            sub: key.owner.as_uuid(),
            tenant_id: key.tenant_id.as_uuid(),
            server_id: self.server.id.as_uuid(),
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

    /// The upstream session a message of `era` goes in: none in the
    /// stateless era (a session id is ignored there), `Err` when the one
    /// presented is not this key's on this server.
    fn session_for(
        &self,
        client: &HeaderMap,
        era: Era,
    ) -> Result<Option<zeroize::Zeroizing<String>>, ()> {
        match (self.upstream_session(client), era) {
            (Ok(session), Era::Handshake) => Ok(session),
            (_, Era::Stateless) => Ok(None),
            (Err(()), Era::Handshake) => Err(()),
        }
    }

    /// The answer to a session that does not open: 404, so that the client
    /// starts a new one (and learns nothing of why).
    fn unknown_session(&self) -> HttpResponse {
        self.refuse("unknown_session", RpcError::session_not_found())
    }

    /// Forwards one message the client sent and relays the answer.
    pub(super) async fn forward_message(
        mut self,
        client: &HeaderMap,
        message: Message,
    ) -> HttpResponse {
        match message {
            Message::Request(request) => self.forward_request(client, request).await,
            Message::Notification(notification) => {
                self.forward_notification(client, notification).await
            }
            Message::Response(response) => {
                "response".clone_into(&mut self.method);
                // Answers to a server's requests exist only within a
                // handshake-era session, and carry the server's own ids.
                let upstream_session = match self.upstream_session(client) {
                    Ok(session) => session,
                    Err(()) => return self.unknown_session(),
                };
                let session = upstream_session.as_deref().map(String::as_str);
                let headers = self.upstream_headers(client, None, session);
                self.forward(headers, &response, Answering::nothing(), session.is_some())
                    .await
            }
        }
    }

    async fn forward_notification(
        mut self,
        client: &HeaderMap,
        notification: Notification,
    ) -> HttpResponse {
        self.method.clone_from(&notification.method);
        // Only the protocol's own notifications are passed on; anything
        // else is acknowledged and dropped, as `/mcp` does.
        if !notification.method.starts_with("notifications/") {
            return self.finish("dropped", None, Reply::accepted().into_response());
        }
        let era = notification.era;
        let Ok(upstream_session) = self.session_for(client, era) else {
            return self.unknown_session();
        };
        let mut params = notification.params;
        // A cancellation names the client's request, which went upstream
        // under Cola's id.
        if notification.method == "notifications/cancelled"
            && let Some(request_id) = params.get_mut("requestId")
        {
            *request_id = UpstreamId::of_client(request_id).to_value();
        }
        let body = json!({
            "jsonrpc": "2.0",
            "method": notification.method,
            "params": params,
        });
        let session = upstream_session.as_deref().map(String::as_str);
        let headers = self.upstream_headers(client, Some(era), session);
        self.forward(headers, &body, Answering::nothing(), session.is_some())
            .await
    }

    async fn forward_request(mut self, client: &HeaderMap, mut request: Request) -> HttpResponse {
        self.method.clone_from(&request.method);
        let era = request.era;
        let Ok(upstream_session) = self.session_for(client, era) else {
            return self.unknown_session();
        };
        let session = upstream_session.as_deref().map(String::as_str);
        let verdict = match self.decide(client, &request, session).await {
            Ok(verdict) => verdict,
            Err(response) => return response,
        };
        let list = match verdict {
            Verdict::Forward => None,
            Verdict::ForwardAndFilter(kind) => Some(kind),
            Verdict::ForwardTask => {
                if self.open_task(&mut request.params).is_none() {
                    return self.refuse(
                        "unknown_task",
                        RpcError::unknown_task().answering(&request.id),
                    );
                }
                None
            }
            Verdict::Refuse(item) => {
                return self.refuse("hidden", hidden(era, &item).answering(&request.id));
            }
            // Still unknown after asking: the decision cannot be made, so
            // the call is refused as a tool the key cannot see.
            Verdict::NeedsCatalogue => {
                let name = request
                    .params
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                return self.refuse(
                    "hidden",
                    RpcError::unknown_tool(name).answering(&request.id),
                );
            }
            Verdict::Invalid(message) => {
                return self.refuse(
                    "bad_request",
                    RpcError::invalid_params(message).answering(&request.id),
                );
            }
            Verdict::UnknownMethod => {
                let error = RpcError::method_not_found(&request.method, era);
                return self.refuse("unknown_method", error.answering(&request.id));
            }
        };
        let mut headers = self.upstream_headers(client, Some(era), session);
        self.mirrored_params(client, &request, &mut headers);
        let expected = Expected::new(request.id, list);
        let body = json!({
            "jsonrpc": "2.0",
            "id": expected.upstream_id.to_value(),
            "method": request.method,
            "params": request.params,
        });
        let listening = if request.method == "subscriptions/listen" {
            Listening::Subscription(expected.client_id.clone())
        } else {
            Listening::No
        };
        let answering = Answering {
            answer_names_ids: matches!(
                request.method.as_str(),
                "tools/call" | "subscriptions/listen"
            ) || request.method.starts_with("tasks/"),
            expected: Some(expected),
            listening,
        };
        self.forward(headers, &body, answering, session.is_some())
            .await
    }

    /// Sends `body` upstream and relays the answer.
    async fn forward(
        mut self,
        headers: reqwest::header::HeaderMap,
        body: &Value,
        answering: Answering,
        had_session: bool,
    ) -> HttpResponse {
        let Ok(body) = serde_json::to_vec(body) else {
            return self.refuse(
                "bad_request",
                RpcError::invalid_request("the message cannot be forwarded"),
            );
        };
        match self.send(reqwest::Method::POST, headers, Some(body)).await {
            Ok(response) => self.relay(response, answering, had_session).await,
            Err(error) => self.upstream_failed(&error, None),
        }
    }

    /// A handshake-era session's GET stream or DELETE.
    pub(super) async fn session_request(
        mut self,
        client: &HeaderMap,
        method: reqwest::Method,
    ) -> HttpResponse {
        let Ok(upstream_session) = self.upstream_session(client) else {
            return self.unknown_session();
        };
        let session = upstream_session.as_deref().map(String::as_str);
        let mut headers = self.upstream_headers(client, Some(Era::Handshake), session);
        headers.remove(reqwest::header::CONTENT_TYPE);
        let listening = if method == reqwest::Method::GET {
            insert(&mut headers, "accept", EVENT_STREAM.as_bytes());
            // A resumption point belongs to its session's stream: passed
            // only within a session, to that session's upstream.
            if session.is_some()
                && let Some(last) = client.get(LAST_EVENT_ID)
            {
                insert(&mut headers, LAST_EVENT_ID, last.as_bytes());
            }
            Listening::Session
        } else {
            Listening::No
        };
        let answering = Answering {
            listening,
            ..Answering::nothing()
        };
        match self.send(method, headers, None).await {
            Ok(response) => self.relay(response, answering, session.is_some()).await,
            Err(error) => self.upstream_failed(&error, None),
        }
    }

    /// Replaces Cola's task id in `params.taskId` with the upstream's, if
    /// it was handed out for this key and server.
    fn open_task(&self, params: &mut Value) -> Option<()> {
        let task = params.get_mut("taskId")?;
        let opened = self
            .gateway
            .sessions
            .open_task(&self.binding, task.as_str()?)?;
        *task = Value::String(opened.to_string());
        Some(())
    }

    /// The policy's verdict on `request`, after asking the upstream for its
    /// tools when the verdict (or a header to pass) depends on them. `Err`
    /// when the tools cannot be read: the call cannot be decided, so it is
    /// not forwarded (fails closed), and the client is told the server is
    /// unreachable rather than that the tool does not exist.
    async fn decide(
        &self,
        client: &HeaderMap,
        request: &Request,
        session: Option<&str>,
    ) -> Result<Verdict, HttpResponse> {
        let catalogue = &self.gateway.catalogue;
        let server = self.server.id.as_uuid();
        let decide = || {
            self.principal
                .key()
                .permissions
                .scope_on(Surface::Server(self.server.id))
                .map(|scope| {
                    authorise_gateway_message(&scope, &request.method, &request.params, |name| {
                        catalogue.lookup(server, name)
                    })
                })
        };
        // A tool's mirrored headers are passed only as its schema says.
        let tool = request.params.get("name").and_then(Value::as_str);
        let needs_tools = |verdict: &Option<Verdict>| {
            *verdict == Some(Verdict::NeedsCatalogue)
                || (request.era == Era::Stateless
                    && request.method == "tools/call"
                    && has_param_headers(client)
                    && tool
                        .is_some_and(|tool| catalogue.lookup(server, tool) == ToolLookup::Unknown))
        };
        let fetch =
            || self.fetch_catalogue(client, request.era, request.params.get("_meta"), session);
        let mut verdict = decide();
        if needs_tools(&verdict) {
            // One fetch at a time per server: the calls that arrive
            // meanwhile wait for it and decide on what it found.
            let mut turn = catalogue.fetch_turn(server).await;
            verdict = decide();
            if needs_tools(&verdict) {
                let fetched = turn.claim() && fetch().await;
                if !fetched && verdict == Some(Verdict::NeedsCatalogue) {
                    tracing::info!(slug = %self.server.slug, "the upstream's tool catalogue cannot be read; a call that needs it is refused");
                    return Err(self.bad_gateway(
                        "catalogue_unavailable",
                        &request.id,
                        "could not be reached",
                        None,
                    ));
                }
                verdict = decide();
            }
        } else if request.method == "tools/call"
            && catalogue.refresh_due(server)
            && let Some(mut turn) = catalogue.try_fetch_turn(server)
            && turn.claim()
        {
            // Ahead of its expiry, by this one call; the others go on
            // deciding with the catalogue they have.
            fetch().await;
            verdict = decide();
        }
        // The grant went away since the exchange opened.
        verdict.ok_or_else(|| self.refuse("unknown_server", RpcError::server_not_reachable()))
    }

    /// The upstream's answer as the client gets it.
    async fn relay(
        &mut self,
        response: UpstreamResponse,
        answering: Answering,
        had_session: bool,
    ) -> HttpResponse {
        let status = response.status;
        match status {
            401 | 403 => {
                return self.bad_gateway(
                    "upstream_refused_credential",
                    &Value::Null,
                    "refused Cola's credential",
                    Some(status),
                );
            }
            300..=399 => {
                return self.bad_gateway(
                    "upstream_redirect",
                    &Value::Null,
                    "answered with a redirect",
                    Some(status),
                );
            }
            404 if had_session => {
                return self.finish(
                    "upstream_session_gone",
                    Some(status),
                    Reply::from(RpcError::session_not_found()).into_response(),
                );
            }
            500..=599 => {
                return self.bad_gateway(
                    "upstream_error",
                    &Value::Null,
                    "failed to answer",
                    Some(status),
                );
            }
            _ => {}
        }
        let Ok(http) = StatusCode::from_u16(status) else {
            return self.bad_gateway(
                "upstream_error",
                &Value::Null,
                "gave an unreadable answer",
                Some(status),
            );
        };
        let mut builder = HttpResponse::build(http);
        if let Some(upstream_session) = response.headers.get(SESSION_HEADER) {
            let sealed = upstream_session
                .to_str()
                .ok()
                .and_then(|id| self.gateway.sessions.seal(&self.binding, id));
            let Some(sealed) = sealed else {
                return self.bad_gateway(
                    "upstream_error",
                    &Value::Null,
                    "gave an unusable session id",
                    Some(status),
                );
            };
            builder.insert_header((SESSION_HEADER, sealed));
        }
        let content_type = content_type(&response.headers);
        let list = answering
            .expected
            .as_ref()
            .and_then(|expected| expected.list);
        let lens = Lens {
            principal: self.principal.clone(),
            server: self.server.id,
            slug: self.server.slug.clone(),
            expected: answering.expected,
            answer_names_ids: answering.answer_names_ids,
            sessions: self.gateway.sessions.clone(),
            binding: self.binding,
        };
        if content_type == EVENT_STREAM && http.is_success() {
            // A listen stream waits by nature: it gives the tenant's place
            // back once it opens. An answer's stream keeps it to its end.
            let slot = match answering.listening {
                Listening::No => self.slot.take(),
                Listening::Session | Listening::Subscription(_) => None,
            };
            let lifetime = Lifetime::of(
                &lens,
                self.gateway.keys.watch_changes(),
                Arc::clone(&self.gateway.admission),
                answering.listening,
            );
            let stream = relay::sse(response.into_stream(), lens, lifetime, slot);
            let answer = builder
                .content_type(EVENT_STREAM)
                .insert_header((header::CACHE_CONTROL, "no-cache"))
                .insert_header(("x-accel-buffering", "no"))
                .streaming(stream);
            return self.finish("relayed_stream", Some(status), answer);
        }
        if content_type == "application/json" || content_type.ends_with("+json") {
            let limit = if list.is_some() {
                MAX_LIST_ANSWER_BYTES
            } else {
                MAX_UPSTREAM_JSON_BYTES
            };
            // The whole answer within the server's timeout, not only its
            // first bytes: an answer that never finishes is a 504.
            let deadline = tokio::time::Instant::from_std(self.started + self.server.timeout);
            let body = match tokio::time::timeout_at(deadline, response.read_to_limit(limit)).await
            {
                Ok(Ok(body)) => body,
                Ok(Err(ReadBodyError::TooLarge)) => {
                    return self.bad_gateway(
                        "upstream_too_large",
                        &Value::Null,
                        "answered with more than Cola relays",
                        Some(status),
                    );
                }
                Ok(Err(ReadBodyError::Upstream(error))) => {
                    return self.upstream_failed(&SendFailure::Upstream(error), Some(status));
                }
                Err(_elapsed) => return self.timed_out(Some(status)),
            };
            // An acknowledgement (202) may say JSON and carry nothing.
            if body.is_empty() {
                return self.finish("relayed", Some(status), builder.finish());
            }
            return match lens.json_body(body) {
                Ok(shown) => self.finish(
                    "relayed",
                    Some(status),
                    builder.content_type("application/json").body(shown),
                ),
                Err(Shown::TooLarge) => self.bad_gateway(
                    "upstream_too_large",
                    &Value::Null,
                    "answered with more than Cola relays",
                    Some(status),
                ),
                Err(_) => self.bad_gateway(
                    "upstream_unmatched",
                    &Value::Null,
                    "gave an answer that matches no request Cola sent",
                    Some(status),
                ),
            };
        }
        // No body Cola can vouch for (a 202, a 405 without JSON …): the
        // status alone.
        self.finish("relayed", Some(status), builder.finish())
    }

    /// Asks the upstream for its tools (every page), for a decision that
    /// needs a tool's `readOnlyHint` or its mirrored arguments, in the
    /// client's own era and session. Returns whether the catalogue was
    /// brought up to date. The catalogue is only ever built from these
    /// complete reads of Cola's own.
    async fn fetch_catalogue(
        &self,
        client: &HeaderMap,
        era: Era,
        meta: Option<&Value>,
        upstream_session: Option<&str>,
    ) -> bool {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_CATALOGUE_PAGES {
            let mut params = serde_json::Map::new();
            if let Some(meta) = meta {
                params.insert("_meta".to_owned(), meta.clone());
            }
            if let Some(cursor) = cursor.take() {
                params.insert("cursor".to_owned(), Value::String(cursor));
            }
            let id =
                UpstreamId::of_client(&Value::from(format!("catalogue-{}", uuid::Uuid::new_v4())));
            let message = json!({
                "jsonrpc": "2.0", "id": id.to_value(), "method": "tools/list", "params": params,
            });
            let mut headers = self.upstream_headers(&HeaderMap::new(), None, upstream_session);
            if let Some(version) = client.get(HEADER_PROTOCOL_VERSION) {
                insert(&mut headers, HEADER_PROTOCOL_VERSION, version.as_bytes());
            }
            insert(&mut headers, "accept", DEFAULT_ACCEPT.as_bytes());
            if era == Era::Stateless {
                insert(&mut headers, HEADER_METHOD, b"tools/list");
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
            let is_stream = content_type(&response.headers) == EVENT_STREAM;
            let deadline = tokio::time::Instant::from_std(Instant::now() + self.server.timeout);
            let read =
                tokio::time::timeout_at(deadline, response.read_to_limit(MAX_LIST_ANSWER_BYTES));
            let Ok(Ok(body)) = read.await else {
                return false;
            };
            let messages = if is_stream {
                cola_protocol::sse::event_data_of(Bytes::from(body)).await
            } else {
                String::from_utf8(body).into_iter().collect()
            };
            let page = messages.iter().find_map(|text| {
                let message = RawMessage::parse(text)?;
                let answers = message.get("id").is_some_and(|raw| {
                    serde_json::from_str::<String>(raw.get()).is_ok_and(|got| got == id.as_str())
                });
                if !answers || message.has_method() {
                    return None;
                }
                CataloguePage::read(message.get("result")?.get())
            });
            let Some(page) = page else {
                return false;
            };
            tools.extend(page.tools);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => {
                    self.gateway
                        .catalogue
                        .record(self.server.id.as_uuid(), tools);
                    return true;
                }
            }
        }
        false
    }
}

/// The media type of an answer, lowercased, without its parameters.
fn content_type(headers: &reqwest::header::HeaderMap) -> String {
    headers
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
        .unwrap_or_default()
}

fn has_param_headers(client: &HeaderMap) -> bool {
    client
        .keys()
        .any(|name| name.as_str().starts_with(PARAM_HEADER_PREFIX))
}

fn insert(headers: &mut reqwest::header::HeaderMap, name: &str, value: &[u8]) {
    if let (Ok(name), Ok(value)) = (
        reqwest::header::HeaderName::from_bytes(name.as_bytes()),
        reqwest::header::HeaderValue::from_bytes(value),
    ) {
        headers.insert(name, value);
    }
}

/// The refusal of a hidden item: exactly the error its absence gets.
fn hidden(era: Era, item: &Hidden) -> RpcError {
    match item {
        Hidden::Tool(name) => RpcError::unknown_tool(name),
        Hidden::Prompt(name) => RpcError::unknown_prompt(name),
        Hidden::Resource(uri) => RpcError::resource_not_found(uri, era),
    }
}
