//! `POST /mcp`: reads one JSON-RPC message, decides its era, checks the
//! stateless era's headers and `_meta`, and hands the call to the server.

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use cola_application::McpPrincipal;
use serde_json::{Value, json};

use crate::json::{BodyError, is_json, read_body};
use crate::mcp::protocol::{self, Era};
use crate::mcp::server::{Call, McpServer, Outcome};

/// A JSON-RPC answer (already serialised) and the HTTP status it travels
/// with.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Option<Vec<u8>>,
}

impl Reply {
    pub(crate) fn accepted() -> Self {
        Self {
            status: StatusCode::ACCEPTED,
            body: None,
        }
    }

    fn ok<T: serde::Serialize>(id: &Value, result: &T) -> Self {
        match serde_json::to_vec(&protocol::result_response(id, result)) {
            Ok(body) => Self {
                status: StatusCode::OK,
                body: Some(body),
            },
            Err(error) => {
                tracing::error!(%error, "an MCP result could not be serialised");
                Self::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    id,
                    protocol::INTERNAL_ERROR,
                    "Internal error",
                    None,
                )
            }
        }
    }

    pub(crate) fn error(
        status: StatusCode,
        id: &Value,
        code: i64,
        message: &str,
        data: Option<Value>,
    ) -> Self {
        let response = protocol::error_response(id, code, message, data);
        Self {
            status,
            body: Some(serde_json::to_vec(&response).unwrap_or_default()),
        }
    }

    pub(crate) fn into_response(self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        match self.body {
            Some(body) => response.content_type("application/json").body(body),
            None => response.finish(),
        }
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

pub async fn post(
    request: HttpRequest,
    payload: web::Payload,
    server: web::Data<McpServer>,
) -> HttpResponse {
    // The gate only lets admitted requests through; without a principal the
    // request was not admitted, whatever routed it here.
    let Some(principal) = request.extensions().get::<McpPrincipal>().cloned() else {
        return HttpResponse::Unauthorized().finish();
    };
    let mut payload: Payload = payload.into_inner();
    let body = match read_json_body(&request, &mut payload).await {
        Ok(body) => body,
        Err(reply) => return reply.into_response(),
    };
    handle(&server, &principal, request.headers(), &body)
        .await
        .into_response()
}

/// The body of an MCP POST: JSON, uncompressed, within the size limit; or
/// the JSON-RPC refusal to send (both MCP endpoints answer alike).
pub(crate) async fn read_json_body(
    request: &HttpRequest,
    payload: &mut Payload,
) -> Result<web::Bytes, Reply> {
    if !is_json(request) {
        return Err(Reply::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &Value::Null,
            protocol::INVALID_REQUEST,
            "Content-Type must be application/json",
            None,
        ));
    }
    read_body(request, payload).await.map_err(|error| {
        let status = match error {
            BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Encoded(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyError::Unreadable => StatusCode::BAD_REQUEST,
        };
        Reply::error(
            status,
            &Value::Null,
            protocol::INVALID_REQUEST,
            &error.to_string(),
            None,
        )
    })
}

/// A request that passed every check of the envelope, ready to dispatch.
#[derive(Debug)]
pub struct Request {
    pub era: Era,
    /// A string or an integer.
    pub id: Value,
    pub method: String,
    /// Always an object.
    pub params: Value,
}

/// A notification that passed every check of the envelope.
#[derive(Debug)]
pub struct Notification {
    pub era: Era,
    pub method: String,
    /// Always an object.
    pub params: Value,
}

/// What a well-formed message asks for.
#[derive(Debug)]
pub enum Message {
    Request(Request),
    /// Acknowledged with 202 and nothing else at `/mcp`; passed on by the
    /// gateway.
    Notification(Notification),
    /// A response from the client (to a server's request), whole.
    Response(Value),
}

async fn handle(
    server: &McpServer,
    principal: &McpPrincipal,
    headers: &HeaderMap,
    body: &[u8],
) -> Reply {
    let request = match read_message(headers, body) {
        Ok(Message::Request(request)) => request,
        Ok(Message::Notification(_) | Message::Response(_)) => return Reply::accepted(),
        Err(reply) => return reply,
    };
    let Request {
        era,
        id,
        method,
        params,
    } = request;
    let call = Call {
        era,
        method: &method,
        params: &params,
        principal,
    };
    match server.dispatch(call).await {
        Outcome::Result(result) => Reply::ok(&id, &result),
        Outcome::Error {
            code,
            message,
            data,
        } => {
            let status = match (era, code) {
                (Era::Stateless, protocol::METHOD_NOT_FOUND) => StatusCode::NOT_FOUND,
                _ => StatusCode::OK,
            };
            Reply::error(status, &id, code, &message, data)
        }
    }
}

/// Reads one JSON-RPC message and checks its envelope: JSON, one object,
/// `jsonrpc: "2.0"`, a method, object params, an id of the right type, the
/// era from its metadata and, in the stateless era, the headers that must
/// repeat the body. Pure (no I/O, no state), so it is fuzzed on its own.
///
/// # Errors
/// The reply to send when the message is refused: a JSON-RPC error with
/// status 400.
pub fn read_message(headers: &HeaderMap, body: &[u8]) -> Result<Message, Reply> {
    let Ok(message) = serde_json::from_slice::<Value>(body) else {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            protocol::PARSE_ERROR,
            "Parse error",
            None,
        ));
    };
    read_parsed(headers, message)
}

/// [`read_message`] of a message already parsed (the gateway parses more
/// strictly first).
///
/// # Errors
/// As [`read_message`].
pub fn read_parsed(headers: &HeaderMap, message: Value) -> Result<Message, Reply> {
    let Value::Object(mut message) = message else {
        let text = if message.is_array() {
            "batches are not supported; send one message per request"
        } else {
            "a message is a JSON object"
        };
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            protocol::INVALID_REQUEST,
            text,
            None,
        ));
    };
    // Taken out, not copied: the message is not needed whole again.
    let id = message.remove("id");
    let params = message.remove("params");
    // Errors echo the id only when it is one a request may have: a float
    // would not survive the round trip exactly (found by fuzzing), and any
    // other type is not an id at all.
    let id_for_errors = id.clone().filter(is_valid_id).unwrap_or(Value::Null);
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            &id_for_errors,
            protocol::INVALID_REQUEST,
            "jsonrpc must be \"2.0\"",
            None,
        ));
    }
    let Some(Value::String(method)) = message.remove("method") else {
        // A response from the client: nothing to answer.
        if let Some(id) = id
            && (message.contains_key("result") || message.contains_key("error"))
        {
            message.insert("id".to_owned(), id);
            return Ok(Message::Response(Value::Object(message)));
        }
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            &id_for_errors,
            protocol::INVALID_REQUEST,
            "a request needs a method",
            None,
        ));
    };
    let params = match params {
        None | Some(Value::Null) => Value::Object(serde_json::Map::new()),
        Some(params @ Value::Object(_)) => params,
        Some(_) => {
            return Err(Reply::error(
                StatusCode::BAD_REQUEST,
                &id_for_errors,
                protocol::INVALID_REQUEST,
                "params must be an object",
                None,
            ));
        }
    };

    let meta_version = params
        .get("_meta")
        .and_then(|meta| meta.get(protocol::META_PROTOCOL_VERSION))
        .and_then(Value::as_str);
    let header_version = header(headers, protocol::HEADER_PROTOCOL_VERSION).map(str::trim);
    let era = if meta_version.is_some()
        || header_version.is_some_and(|v| v >= protocol::MODERN_VERSION)
    {
        Era::Stateless
    } else {
        Era::Handshake
    };

    if era == Era::Handshake
        && let Some(version) = header_version
        && !protocol::LEGACY_VERSIONS.contains(&version)
    {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            &id_for_errors,
            protocol::INVALID_REQUEST,
            &format!("unsupported MCP-Protocol-Version `{version}`"),
            Some(json!({ "supported": protocol::LEGACY_VERSIONS })),
        ));
    }
    if era == Era::Stateless
        && let Err(reply) = check_stateless(
            headers,
            &method,
            &params,
            meta_version,
            header_version,
            &id_for_errors,
        )
    {
        return Err(reply);
    }

    // A notification (no id) is acknowledged and has no answer.
    let Some(id) = id else {
        return Ok(Message::Notification(Notification {
            era,
            method,
            params,
        }));
    };
    if !is_valid_id(&id) {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            protocol::INVALID_REQUEST,
            "id must be a string or an integer",
            None,
        ));
    }

    Ok(Message::Request(Request {
        era,
        id,
        method,
        params,
    }))
}

/// A JSON-RPC id this server accepts: a string or an integer.
fn is_valid_id(id: &Value) -> bool {
    id.is_string() || id.is_i64() || id.is_u64()
}

/// The stateless era's rules: the version in `_meta` matches the header and
/// is one we speak; `Mcp-Method` (and `Mcp-Name` where it applies)
/// repeat the body; the client's capabilities are declared.
fn check_stateless(
    headers: &HeaderMap,
    method: &str,
    params: &Value,
    meta_version: Option<&str>,
    header_version: Option<&str>,
    id: &Value,
) -> Result<(), Reply> {
    let bad = |code: i64, message: &str, data: Option<Value>| {
        Err(Reply::error(
            StatusCode::BAD_REQUEST,
            id,
            code,
            message,
            data,
        ))
    };
    let Some(version) = meta_version else {
        return bad(
            protocol::INVALID_PARAMS,
            &format!(
                "params._meta[\"{}\"] is required",
                protocol::META_PROTOCOL_VERSION
            ),
            None,
        );
    };
    let mismatch = || {
        bad(
            protocol::HEADER_MISMATCH,
            "MCP-Protocol-Version header does not match _meta",
            None,
        )
    };
    // A header that names another version than `_meta` is a mismatch
    // whatever either version is: the request contradicts itself, so which
    // version it "requested" has no answer. The conformance suite holds
    // servers to this (check `sep-2575-http-server-header-mismatch-400`).
    if header_version.is_some_and(|header| header != version) {
        return mismatch();
    }
    if version != protocol::MODERN_VERSION {
        return bad(
            protocol::UNSUPPORTED_PROTOCOL_VERSION,
            "Unsupported protocol version",
            Some(json!({ "supported": [protocol::MODERN_VERSION], "requested": version })),
        );
    }
    // A request without the header does not contradict itself, so an
    // unknown `_meta` version was refused above with the supported list,
    // the answer such a client can act on; the missing header comes second.
    if header_version.is_none() {
        return mismatch();
    }
    let method_header =
        header(headers, protocol::HEADER_METHOD).and_then(protocol::decode_header_value);
    if method_header.as_deref() != Some(method) {
        return bad(
            protocol::HEADER_MISMATCH,
            "Mcp-Method header does not match the method",
            None,
        );
    }
    let named = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    if let Some(field) = named {
        let expected = params.get(field).and_then(Value::as_str);
        let given = header(headers, protocol::HEADER_NAME).and_then(protocol::decode_header_value);
        if expected.is_none() || given.as_deref() != expected {
            return bad(
                protocol::HEADER_MISMATCH,
                &format!("Mcp-Name header does not match params.{field}"),
                None,
            );
        }
    }
    let declared = params
        .get("_meta")
        .and_then(|meta| meta.get(protocol::META_CLIENT_CAPABILITIES))
        .is_some_and(Value::is_object);
    if !declared {
        return bad(
            protocol::INVALID_PARAMS,
            &format!(
                "params._meta[\"{}\"] is required",
                protocol::META_CLIENT_CAPABILITIES
            ),
            None,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// Checks what every refusal must be: a 4xx carrying one JSON-RPC error
    /// object whose id is null or the message's own (string or integer) id.
    fn assert_well_formed_refusal(reply: &Reply, sent: Option<&Value>) {
        assert!(reply.status.is_client_error(), "{:?}", reply.status);
        let body: Value =
            serde_json::from_slice(reply.body.as_deref().expect("a body")).expect("a JSON body");
        assert_eq!(body["jsonrpc"], "2.0");
        assert!(body["error"]["code"].is_i64());
        assert!(body["error"]["message"].is_string());
        let id = &body["id"];
        assert!(
            id.is_null() || sent == Some(id),
            "refusal id {id} for message id {sent:?}"
        );
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let Ok(value) = HeaderValue::from_str(value) {
                map.insert(HeaderName::from_static(name), value);
            }
        }
        map
    }

    /// Loosely shaped messages: the envelope's fields present or not, of
    /// the right type or not, so most inputs get past the JSON parser.
    fn message() -> impl Strategy<Value = Value> {
        let scalar = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            Just(json!(1.111_111_111_111_111_1e23)),
            "[a-z/_0-9.-]{0,12}".prop_map(Value::from),
        ];
        let value = scalar.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::btree_map("[a-z_/.]{1,8}", inner, 0..3)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        });
        let method = prop_oneof![
            Just(json!("tools/call")),
            Just(json!("tools/list")),
            Just(json!("initialize")),
            Just(json!("resources/read")),
            value.clone(),
        ];
        let meta = prop_oneof![
            Just(json!({
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}
            })),
            value.clone(),
        ];
        (
            prop::option::of(prop_oneof![Just(json!("2.0")), value.clone()]),
            prop::option::of(value.clone()),
            prop::option::of(method),
            prop::option::of((prop::option::of(meta), value.clone())),
            prop::option::of(value),
        )
            .prop_map(|(jsonrpc, id, method, params, result)| {
                let mut message = serde_json::Map::new();
                let mut put = |name: &str, field: Option<Value>| {
                    if let Some(field) = field {
                        message.insert(name.to_owned(), field);
                    }
                };
                put("jsonrpc", jsonrpc);
                put("id", id);
                put("method", method);
                put(
                    "params",
                    params.map(|(meta, mut params)| {
                        if let (Some(meta), Value::Object(fields)) = (meta, &mut params) {
                            fields.insert("_meta".into(), meta);
                        }
                        params
                    }),
                );
                put("result", result);
                Value::Object(message)
            })
    }

    /// A well-formed 2026-07-28 `server/discover` whose `_meta` names
    /// `meta_version`, with `Mcp-Method` right and, if given, the version
    /// header.
    fn discover(meta_version: &str, header_version: Option<&str>) -> Result<Message, Reply> {
        let mut pairs = vec![("mcp-method", "server/discover".to_owned())];
        if let Some(version) = header_version {
            pairs.push(("mcp-protocol-version", version.to_owned()));
        }
        let body = json!({
            "jsonrpc": "2.0",
            "id": 7,
            "method": "server/discover",
            "params": { "_meta": {
                protocol::META_PROTOCOL_VERSION: meta_version,
                protocol::META_CLIENT_CAPABILITIES: {},
            } },
        });
        read_message(&headers(&pairs), &body.to_string().into_bytes())
    }

    /// The status and the JSON-RPC error of a refusal.
    fn refusal(read: Result<Message, Reply>) -> (StatusCode, Value) {
        let Err(reply) = read else {
            panic!("expected a refusal, got {read:?}");
        };
        assert_well_formed_refusal(&reply, Some(&json!(7)));
        let body: Value =
            serde_json::from_slice(reply.body.as_deref().expect("a body")).expect("a JSON body");
        (reply.status, body["error"].clone())
    }

    #[test]
    fn a_version_header_unlike_an_unsupported_meta_version_is_a_header_mismatch() {
        let (status, error) = refusal(discover("v999.0.0", Some(protocol::MODERN_VERSION)));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error["code"], protocol::HEADER_MISMATCH);
        // The same with the roles swapped: the header names the unknown one.
        let (status, error) = refusal(discover(protocol::MODERN_VERSION, Some("v999.0.0")));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error["code"], protocol::HEADER_MISMATCH);
    }

    #[test]
    fn an_unsupported_version_the_header_repeats_is_unsupported_with_the_supported_list() {
        let (status, error) = refusal(discover("v999.0.0", Some("v999.0.0")));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error["code"], protocol::UNSUPPORTED_PROTOCOL_VERSION);
        assert_eq!(
            error["data"]["supported"],
            json!([protocol::MODERN_VERSION])
        );
        assert_eq!(error["data"]["requested"], "v999.0.0");
    }

    #[test]
    fn an_unsupported_meta_version_without_a_header_is_unsupported() {
        let (_, error) = refusal(discover("1900-01-01", None));
        assert_eq!(error["code"], protocol::UNSUPPORTED_PROTOCOL_VERSION);
        // A supported one without the header is the header's fault.
        let (_, error) = refusal(discover(protocol::MODERN_VERSION, None));
        assert_eq!(error["code"], protocol::HEADER_MISMATCH);
    }

    #[test]
    fn matching_supported_versions_are_read() {
        let read = discover(protocol::MODERN_VERSION, Some(protocol::MODERN_VERSION));
        let Ok(Message::Request(request)) = read else {
            panic!("expected a request, got {read:?}");
        };
        assert_eq!(request.era, Era::Stateless);
        assert_eq!(request.method, "server/discover");
    }

    proptest! {
        #[test]
        fn a_version_header_unlike_meta_is_always_a_header_mismatch(
            meta_version in prop_oneof![Just(protocol::MODERN_VERSION.to_owned()), "[0-9a-z.-]{0,12}"],
            header_version in prop_oneof![Just(protocol::MODERN_VERSION.to_owned()), "[0-9a-z.-]{0,12}"],
        ) {
            prop_assume!(meta_version != header_version);
            let (status, error) = refusal(discover(&meta_version, Some(&header_version)));
            prop_assert_eq!(status, StatusCode::BAD_REQUEST);
            prop_assert_eq!(&error["code"], &json!(protocol::HEADER_MISMATCH));
        }

        #[test]
        fn any_bytes_are_refused_or_read_never_a_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
            match read_message(&HeaderMap::new(), &body) {
                Ok(Message::Request(request)) => prop_assert!(request.params.is_object()),
                Ok(Message::Notification(_) | Message::Response(_)) => {}
                Err(reply) => assert_well_formed_refusal(&reply, None),
            }
        }

        #[test]
        fn a_message_is_read_only_when_its_envelope_is_right(
            message in message(),
            version in prop::option::of(prop_oneof![
                Just("2025-11-25".to_owned()),
                Just("2026-07-28".to_owned()),
                "[0-9-]{0,10}",
            ]),
            method_header in prop::option::of("[a-z/]{0,12}"),
        ) {
            let mut pairs = Vec::new();
            if let Some(version) = version {
                pairs.push(("mcp-protocol-version", version));
            }
            if let Some(method) = method_header {
                pairs.push(("mcp-method", method));
            }
            let body = serde_json::to_vec(&message).expect("serialises");
            let sent_id = message.get("id").filter(|id| is_valid_id(id));
            match read_message(&headers(&pairs), &body) {
                Ok(Message::Request(request)) => {
                    prop_assert_eq!(message.get("jsonrpc"), Some(&json!("2.0")));
                    prop_assert_eq!(message.get("method").and_then(Value::as_str), Some(request.method.as_str()));
                    prop_assert!(request.id.is_string() || request.id.is_i64() || request.id.is_u64());
                    prop_assert_eq!(Some(&request.id), message.get("id"));
                    prop_assert!(request.params.is_object());
                }
                Ok(Message::Notification(_) | Message::Response(_)) => {
                    prop_assert_eq!(message.get("jsonrpc"), Some(&json!("2.0")));
                    let notification = message.get("method").is_some_and(Value::is_string)
                        && message.get("id").is_none();
                    let response = message.get("method").is_none_or(|m| !m.is_string())
                        && message.get("id").is_some()
                        && message.get("result").is_some();
                    prop_assert!(notification || response, "{message}");
                }
                Err(reply) => assert_well_formed_refusal(&reply, sent_id),
            }
        }
    }
}
