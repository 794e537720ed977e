//! One gateway request under way: the route a key's request takes to its
//! tenant's server, the message Cola authorised sent to the upstream under
//! an id of Cola's own, and the upstream's answer relayed as the key may see
//! it. HTTP stays in the api crate: it gives the client's MCP headers and
//! renders what this returns.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use cola_domain::Surface;
use cola_protocol::era::{
    HEADER_METHOD, HEADER_NAME, HEADER_PARAM_PREFIX, HEADER_PROTOCOL_VERSION, HEADER_SESSION_ID,
};
use cola_protocol::sse::event_data_of;
use cola_protocol::{Era, Message, Notification, RawMessage, Request, RpcError};
use futures_util::Stream;
use serde_json::{Value, json};

use super::answer::{Expected, MAX_LIST_ANSWER_BYTES, UpstreamId};
use super::catalogue::CataloguePage;
use super::headers::mirrored_param_allowed;
use super::inflight::InflightSlot;
use super::ports::{
    Binding, HandleKind, IdentityClaims, ReadBodyError, Upstream, UpstreamAnswer, UpstreamCall,
    UpstreamFailure, UpstreamHeader, UpstreamMethod,
};
use super::relay::{self, Lens, Lifetime, Listening, Shown};
use super::service::Shared;
use super::{Hidden, ToolLookup, Verdict, authorise};
use crate::principal::McpPrincipal;
use crate::servers::ResolvedServer;

/// The largest JSON answer from an upstream Cola reads (a list is refused
/// past [`MAX_LIST_ANSWER_BYTES`]).
const MAX_UPSTREAM_JSON_BYTES: usize = 8 * 1024 * 1024;
/// Pages of `tools/list` read when Cola asks an upstream for its catalogue.
const MAX_CATALOGUE_PAGES: usize = 10;
const IDENTITY_HEADER: &str = "x-cola-identity";
const LAST_EVENT_ID: &str = "last-event-id";
const EVENT_STREAM: &str = "text/event-stream";
const DEFAULT_ACCEPT: &[u8] = b"application/json, text/event-stream";
/// How long an identity assertion is valid.
pub const ASSERTION_LIFETIME_SECS: i64 = 60;

/// The client's MCP headers, as the api read them: everything of the
/// client's request the gateway may look at. Nothing else of it reaches the
/// upstream.
#[derive(Debug, Clone, Default)]
pub struct ClientHeaders {
    pub accept: Option<Vec<u8>>,
    pub protocol_version: Option<Vec<u8>>,
    pub mcp_method: Option<Vec<u8>>,
    pub mcp_name: Option<Vec<u8>>,
    /// `Mcp-Session-Id`, as sent.
    pub session_id: Option<Vec<u8>>,
    pub last_event_id: Option<Vec<u8>>,
    /// `Mcp-Param-{Name}` headers: the lowercase name and the value.
    pub params: Vec<(String, Vec<u8>)>,
}

impl ClientHeaders {
    /// The era of a request without a body (GET, DELETE), by its header.
    #[must_use]
    pub fn era(&self) -> Era {
        let version = self
            .protocol_version
            .as_deref()
            .and_then(|value| std::str::from_utf8(value).ok());
        Era::of_header(version)
    }
}

/// A stream of SSE bytes, relayed as they come.
pub type EventStream = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// What the client gets.
pub enum Reply {
    /// A refusal of Cola's own; `retry_after` seconds when it says so.
    Refused {
        error: RpcError,
        retry_after: Option<u64>,
    },
    /// The status alone (an acknowledgement, a `405` …).
    Status {
        status: u16,
        session_id: Option<String>,
    },
    Json {
        status: u16,
        session_id: Option<String>,
        body: Vec<u8>,
    },
    Stream {
        status: u16,
        session_id: Option<String>,
        events: EventStream,
    },
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused { error, .. } => f.debug_tuple("Refused").field(error).finish(),
            Self::Status { status, .. } => f.debug_tuple("Status").field(status).finish(),
            Self::Json { status, .. } => f.debug_tuple("Json").field(status).finish(),
            Self::Stream { status, .. } => f.debug_tuple("Stream").field(status).finish(),
        }
    }
}

/// How one gateway request ended: what the client gets, and for the log
/// line and the metrics, the outcome and the upstream's status.
#[derive(Debug)]
pub struct Relayed {
    pub outcome: &'static str,
    pub upstream_status: Option<u16>,
    pub reply: Reply,
}

impl Relayed {
    fn refused(outcome: &'static str, error: RpcError) -> Self {
        Self {
            outcome,
            upstream_status: None,
            reply: Reply::Refused {
                error,
                retry_after: None,
            },
        }
    }
}

/// Why a request did not reach the upstream.
#[derive(Debug)]
enum SendFailure {
    Upstream(UpstreamFailure),
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

/// A key's way to one of its tenant's servers, for one request.
pub struct Route {
    pub(super) shared: Arc<Shared>,
    pub(super) upstream: Arc<dyn Upstream>,
    pub(super) principal: McpPrincipal,
    pub(super) server: Arc<ResolvedServer>,
    pub(super) binding: Binding,
    pub(super) started: Instant,
    /// The tenant's place in flight, held until the answer is relayed.
    pub(super) slot: Option<InflightSlot>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("slug", &self.server.slug)
            .finish_non_exhaustive()
    }
}

impl Route {
    /// The server's slug, for the log line.
    #[must_use]
    pub fn slug(&self) -> &str {
        &self.server.slug
    }

    /// When the request was admitted to the gateway.
    #[must_use]
    pub fn started(&self) -> Instant {
        self.started
    }

    /// A 502 naming the server by its slug, and nothing of its URL,
    /// headers or answer.
    fn bad_gateway(
        &self,
        outcome: &'static str,
        id: &Value,
        what: &str,
        status: Option<u16>,
    ) -> Relayed {
        Relayed {
            upstream_status: status,
            ..Relayed::refused(
                outcome,
                RpcError::upstream_failed(&self.server.slug, what).answering(id),
            )
        }
    }

    /// An upstream that took longer than `timeout_secs`: 504.
    fn timed_out(&self, status: Option<u16>) -> Relayed {
        Relayed {
            upstream_status: status,
            ..Relayed::refused(
                "upstream_timeout",
                RpcError::upstream_timeout(&self.server.slug),
            )
        }
    }

    /// The upstream failed: 502 or 504.
    fn upstream_failed(&self, failure: &SendFailure, status: Option<u16>) -> Relayed {
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
            error = %crate::error::chain(error),
            "an upstream request failed"
        );
        match error {
            UpstreamFailure::Timeout => self.timed_out(status),
            UpstreamFailure::AddressRefused => self.bad_gateway(
                "upstream_address_refused",
                &Value::Null,
                "is at an address Cola may not reach",
                status,
            ),
            UpstreamFailure::Unreachable(_) | UpstreamFailure::Invalid(_) => self.bad_gateway(
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
        client: &ClientHeaders,
        era: Option<Era>,
        upstream_session: Option<&str>,
    ) -> Vec<UpstreamHeader> {
        let mut headers: Vec<UpstreamHeader> = self
            .server
            .headers
            .iter()
            .map(|(name, value)| UpstreamHeader::sensitive(name, value.expose().as_bytes()))
            .collect();
        let accept = client.accept.as_deref().unwrap_or(DEFAULT_ACCEPT);
        headers.push(UpstreamHeader::new("accept", accept));
        headers.push(UpstreamHeader::new("content-type", b"application/json"));
        if let Some(version) = &client.protocol_version {
            headers.push(UpstreamHeader::new(HEADER_PROTOCOL_VERSION, version));
        }
        // The stateless era's mirrored headers were checked against the
        // body; a handshake-era request's were not, so they are not passed.
        // `Mcp-Param-*` headers are passed by `forward_request` alone,
        // which checks each against the tool's schema and the body.
        if era == Some(Era::Stateless) {
            if let Some(method) = &client.mcp_method {
                headers.push(UpstreamHeader::new(HEADER_METHOD, method));
            }
            if let Some(name) = &client.mcp_name {
                headers.push(UpstreamHeader::new(HEADER_NAME, name));
            }
        }
        if let Some(session) = upstream_session {
            headers.push(UpstreamHeader::sensitive(
                HEADER_SESSION_ID,
                session.as_bytes(),
            ));
        }
        headers
    }

    /// The client's `Mcp-Param-*` headers of a 2026-07-28 `tools/call` that
    /// the tool marks `x-mcp-header` and the body backs, value for value.
    fn mirrored_params(
        &self,
        client: &ClientHeaders,
        request: &Request,
        headers: &mut Vec<UpstreamHeader>,
    ) {
        if request.era != Era::Stateless || request.method != "tools/call" {
            return;
        }
        let Some(name) = request.params.get("name").and_then(Value::as_str) else {
            return;
        };
        let Some(params) = self
            .shared
            .catalogue
            .header_params(self.server.id.as_uuid(), name)
        else {
            return;
        };
        let arguments = request.params.get("arguments").unwrap_or(&Value::Null);
        for (header_name, value) in &client.params {
            let Some(suffix) = header_name.strip_prefix(HEADER_PARAM_PREFIX) else {
                continue;
            };
            if mirrored_param_allowed(&params, arguments, suffix, value) {
                headers.push(UpstreamHeader::new(header_name, value));
            }
        }
    }

    async fn send(
        &self,
        method: UpstreamMethod,
        mut headers: Vec<UpstreamHeader>,
        body: Option<Vec<u8>>,
    ) -> Result<UpstreamAnswer, SendFailure> {
        let Some(url) = self.server.url.as_ref() else {
            return Err(SendFailure::Upstream(UpstreamFailure::AddressRefused));
        };
        if self.server.forward_identity {
            let assertion = self.identity_assertion()?;
            headers.push(UpstreamHeader::sensitive(
                IDENTITY_HEADER,
                assertion.as_bytes(),
            ));
        }
        self.upstream
            .send(UpstreamCall {
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
    fn identity_assertion(&self) -> Result<String, SendFailure> {
        let key = self.principal.key();
        let now = chrono::Utc::now().timestamp();
        let public_url = &self.shared.public_url;
        let audience = format!("{public_url}/mcp/{}", self.server.slug);
        let claims = IdentityClaims {
            iss: public_url,
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
        self.shared.identity.assert_identity(&claims).map_err(|error| {
            tracing::error!(error = %crate::error::chain(&*error), "identity assertion not signed");
            SendFailure::Identity
        })
    }

    /// The upstream's session id in the client's `Mcp-Session-Id`: `Ok(None)`
    /// without one, `Err` when it is not a session of this key and server.
    fn upstream_session(
        &self,
        client: &ClientHeaders,
    ) -> Result<Option<zeroize::Zeroizing<String>>, ()> {
        let Some(presented) = &client.session_id else {
            return Ok(None);
        };
        std::str::from_utf8(presented)
            .ok()
            .and_then(|presented| {
                self.shared
                    .handles
                    .open(HandleKind::Session, &self.binding, presented)
            })
            .map(Some)
            .ok_or(())
    }

    /// The upstream session a message of `era` goes in: none in the
    /// stateless era (a session id is ignored there), `Err` when the one
    /// presented is not this key's on this server.
    fn session_for(
        &self,
        client: &ClientHeaders,
        era: Era,
    ) -> Result<Option<zeroize::Zeroizing<String>>, ()> {
        match (self.upstream_session(client), era.has_sessions()) {
            (Ok(session), true) => Ok(session),
            (_, false) => Ok(None),
            (Err(()), true) => Err(()),
        }
    }

    /// Forwards one message the client sent and relays the answer.
    pub async fn forward(self, client: &ClientHeaders, message: Message) -> (String, Relayed) {
        match message {
            Message::Request(request) => {
                let method = request.method.clone();
                (method, self.forward_request(client, request).await)
            }
            Message::Notification(notification) => {
                let method = notification.method.clone();
                (
                    method,
                    self.forward_notification(client, notification).await,
                )
            }
            Message::Response(response) => {
                // Answers to a server's requests exist only within a
                // handshake-era session, and carry the server's own ids.
                let Ok(upstream_session) = self.upstream_session(client) else {
                    return ("response".to_owned(), unknown_session());
                };
                let session = upstream_session.as_deref().map(String::as_str);
                let headers = self.upstream_headers(client, None, session);
                let relayed = self
                    .post(headers, &response, Answering::nothing(), session.is_some())
                    .await;
                ("response".to_owned(), relayed)
            }
        }
    }

    async fn forward_notification(
        self,
        client: &ClientHeaders,
        notification: Notification,
    ) -> Relayed {
        // Only the protocol's own notifications are passed on; anything
        // else is acknowledged and dropped, as `/mcp` does.
        if !notification.method.starts_with("notifications/") {
            return Relayed {
                outcome: "dropped",
                upstream_status: None,
                reply: Reply::Status {
                    status: 202,
                    session_id: None,
                },
            };
        }
        let era = notification.era;
        let Ok(upstream_session) = self.session_for(client, era) else {
            return unknown_session();
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
        self.post(headers, &body, Answering::nothing(), session.is_some())
            .await
    }

    async fn forward_request(self, client: &ClientHeaders, mut request: Request) -> Relayed {
        let era = request.era;
        let Ok(upstream_session) = self.session_for(client, era) else {
            return unknown_session();
        };
        let session = upstream_session.as_deref().map(String::as_str);
        let verdict = match self.decide(client, &request, session).await {
            Ok(verdict) => verdict,
            Err(relayed) => return relayed,
        };
        let list = match verdict {
            Verdict::Forward => None,
            Verdict::ForwardAndFilter(kind) => Some(kind),
            Verdict::ForwardTask => {
                if self.open_task(&mut request.params).is_none() {
                    let error = RpcError::unknown_task().answering(&request.id);
                    return Relayed::refused("unknown_task", error);
                }
                None
            }
            Verdict::Refuse(item) => {
                return Relayed::refused("hidden", hidden(era, &item).answering(&request.id));
            }
            // Still unknown after asking: the decision cannot be made, so
            // the call is refused as a tool the key cannot see.
            Verdict::NeedsCatalogue => {
                let name = request
                    .params
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let error = RpcError::unknown_tool(name).answering(&request.id);
                return Relayed::refused("hidden", error);
            }
            Verdict::Invalid(message) => {
                let error = RpcError::invalid_params(message).answering(&request.id);
                return Relayed::refused("bad_request", error);
            }
            Verdict::UnknownMethod => {
                let error = RpcError::method_not_found(&request.method, era).answering(&request.id);
                return Relayed::refused("unknown_method", error);
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
        self.post(headers, &body, answering, session.is_some())
            .await
    }

    /// POSTs `body` upstream and relays the answer.
    async fn post(
        mut self,
        headers: Vec<UpstreamHeader>,
        body: &Value,
        answering: Answering,
        had_session: bool,
    ) -> Relayed {
        let Ok(body) = serde_json::to_vec(body) else {
            return Relayed::refused(
                "bad_request",
                RpcError::invalid_request("the message cannot be forwarded"),
            );
        };
        match self.send(UpstreamMethod::Post, headers, Some(body)).await {
            Ok(answer) => self.relay(answer, answering, had_session).await,
            Err(error) => self.upstream_failed(&error, None),
        }
    }

    /// A handshake-era session's GET stream (`get`) or DELETE.
    pub async fn session_request(mut self, client: &ClientHeaders, get: bool) -> Relayed {
        let Ok(upstream_session) = self.upstream_session(client) else {
            return unknown_session();
        };
        let session = upstream_session.as_deref().map(String::as_str);
        let mut headers = self.upstream_headers(client, Some(Era::Handshake), session);
        headers.retain(|header| header.name != "content-type");
        let (method, listening) = if get {
            headers.retain(|header| header.name != "accept");
            headers.push(UpstreamHeader::new("accept", EVENT_STREAM.as_bytes()));
            // A resumption point belongs to its session's stream: passed
            // only within a session, to that session's upstream.
            if session.is_some()
                && let Some(last) = &client.last_event_id
            {
                headers.push(UpstreamHeader::new(LAST_EVENT_ID, last));
            }
            (UpstreamMethod::Get, Listening::Session)
        } else {
            (UpstreamMethod::Delete, Listening::No)
        };
        let answering = Answering {
            listening,
            ..Answering::nothing()
        };
        match self.send(method, headers, None).await {
            Ok(answer) => self.relay(answer, answering, session.is_some()).await,
            Err(error) => self.upstream_failed(&error, None),
        }
    }

    /// Replaces Cola's task id in `params.taskId` with the upstream's, if
    /// it was handed out for this key and server.
    fn open_task(&self, params: &mut Value) -> Option<()> {
        let task = params.get_mut("taskId")?;
        let opened = self
            .shared
            .handles
            .open(HandleKind::Task, &self.binding, task.as_str()?)?;
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
        client: &ClientHeaders,
        request: &Request,
        session: Option<&str>,
    ) -> Result<Verdict, Relayed> {
        let catalogue = &self.shared.catalogue;
        let server = self.server.id.as_uuid();
        let decide = || {
            self.principal
                .key()
                .permissions
                .scope_on(Surface::Server(self.server.id))
                .map(|scope| {
                    authorise(&scope, &request.method, &request.params, |name| {
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
                    && !client.params.is_empty()
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
        // The grant went away since the route opened.
        verdict.ok_or_else(|| Relayed::refused("unknown_server", RpcError::server_not_reachable()))
    }

    /// The upstream's answer as the client gets it.
    async fn relay(
        &mut self,
        answer: UpstreamAnswer,
        answering: Answering,
        had_session: bool,
    ) -> Relayed {
        let status = answer.status;
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
                return Relayed {
                    upstream_status: Some(status),
                    ..Relayed::refused("upstream_session_gone", RpcError::session_not_found())
                };
            }
            500..=599 | 0..=99 | 600.. => {
                return self.bad_gateway(
                    "upstream_error",
                    &Value::Null,
                    "failed to answer",
                    Some(status),
                );
            }
            _ => {}
        }
        let session_id = match (&answer.session_id, answer.has_session_header) {
            (Some(upstream_session), _) => {
                let sealed =
                    self.shared
                        .handles
                        .seal(HandleKind::Session, &self.binding, upstream_session);
                let Some(sealed) = sealed else {
                    return self.bad_gateway(
                        "upstream_error",
                        &Value::Null,
                        "gave an unusable session id",
                        Some(status),
                    );
                };
                Some(sealed)
            }
            (None, true) => {
                return self.bad_gateway(
                    "upstream_error",
                    &Value::Null,
                    "gave an unusable session id",
                    Some(status),
                );
            }
            (None, false) => None,
        };
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
            handles: self.shared.handles.clone(),
            binding: self.binding,
        };
        let success = (200..300).contains(&status);
        if answer.content_type == EVENT_STREAM && success {
            // A listen stream waits by nature: it gives the tenant's place
            // back once it opens. An answer's stream keeps it to its end.
            let slot = match answering.listening {
                Listening::No => self.slot.take(),
                Listening::Session | Listening::Subscription(_) => None,
            };
            let lifetime = Lifetime::of(
                &lens,
                self.shared.keys.watch_changes(),
                Arc::clone(&self.shared.admission),
                answering.listening,
            );
            let events = relay::sse(answer.body, lens, lifetime, slot);
            return Relayed {
                outcome: "relayed_stream",
                upstream_status: Some(status),
                reply: Reply::Stream {
                    status,
                    session_id,
                    events: Box::pin(events),
                },
            };
        }
        let content_type = &answer.content_type;
        if content_type == "application/json" || content_type.ends_with("+json") {
            let limit = if list.is_some() {
                MAX_LIST_ANSWER_BYTES
            } else {
                MAX_UPSTREAM_JSON_BYTES
            };
            // The whole answer within the server's timeout, not only its
            // first bytes: an answer that never finishes is a 504.
            let deadline = tokio::time::Instant::from_std(self.started + self.server.timeout);
            let body = match tokio::time::timeout_at(deadline, answer.read_to_limit(limit)).await {
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
                return Relayed {
                    outcome: "relayed",
                    upstream_status: Some(status),
                    reply: Reply::Status { status, session_id },
                };
            }
            return match lens.json_body(body) {
                Ok(shown) => Relayed {
                    outcome: "relayed",
                    upstream_status: Some(status),
                    reply: Reply::Json {
                        status,
                        session_id,
                        body: shown,
                    },
                },
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
        Relayed {
            outcome: "relayed",
            upstream_status: Some(status),
            reply: Reply::Status { status, session_id },
        }
    }

    /// Asks the upstream for its tools (every page), for a decision that
    /// needs a tool's `readOnlyHint` or its mirrored arguments, in the
    /// client's own era and session. Returns whether the catalogue was
    /// brought up to date. The catalogue is only ever built from these
    /// complete reads of Cola's own.
    async fn fetch_catalogue(
        &self,
        client: &ClientHeaders,
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
            let asking = ClientHeaders {
                protocol_version: client.protocol_version.clone(),
                accept: Some(DEFAULT_ACCEPT.to_vec()),
                mcp_method: (era == Era::Stateless).then(|| b"tools/list".to_vec()),
                ..ClientHeaders::default()
            };
            let mut headers = self.upstream_headers(&asking, None, upstream_session);
            if let Some(method) = &asking.mcp_method {
                headers.push(UpstreamHeader::new(HEADER_METHOD, method));
            }
            let Ok(body) = serde_json::to_vec(&message) else {
                return false;
            };
            let Ok(answer) = self.send(UpstreamMethod::Post, headers, Some(body)).await else {
                return false;
            };
            if !(200..300).contains(&answer.status) {
                return false;
            }
            let is_stream = answer.content_type == EVENT_STREAM;
            let deadline = tokio::time::Instant::from_std(Instant::now() + self.server.timeout);
            let read =
                tokio::time::timeout_at(deadline, answer.read_to_limit(MAX_LIST_ANSWER_BYTES));
            let Ok(Ok(body)) = read.await else {
                return false;
            };
            let messages = if is_stream {
                event_data_of(Bytes::from(body)).await
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
                    self.shared
                        .catalogue
                        .record(self.server.id.as_uuid(), tools);
                    return true;
                }
            }
        }
        false
    }
}

/// The answer to a session that does not open: 404, so that the client
/// starts a new one (and learns nothing of why).
fn unknown_session() -> Relayed {
    Relayed::refused("unknown_session", RpcError::session_not_found())
}

/// The refusal of a hidden item: exactly the error its absence gets.
fn hidden(era: Era, item: &Hidden) -> RpcError {
    match item {
        Hidden::Tool(name) => RpcError::unknown_tool(name),
        Hidden::Prompt(name) => RpcError::unknown_prompt(name),
        Hidden::Resource(uri) => RpcError::resource_not_found(uri, era),
    }
}
