//! One JSON-RPC message of MCP over HTTP, read once: the envelope checked
//! (JSON, one object, `jsonrpc: "2.0"`, a method, object params, an id of
//! the right type), its era decided by its metadata, and in the stateless
//! era the headers that must repeat the body checked against it. Pure (no
//! I/O, no state), so it is fuzzed on its own.

use serde::Serialize;
use serde_json::Value;

use crate::era::{
    Era, HEADER_METHOD, HEADER_NAME, HEADER_PROTOCOL_VERSION, LEGACY_VERSIONS,
    META_CLIENT_CAPABILITIES, META_PROTOCOL_VERSION, MODERN_VERSION,
};
use crate::error::RpcError;

/// The headers of the HTTP request a message came in, by lowercase name.
pub trait Headers {
    /// The value of `name` when it is present and text.
    fn text(&self, name: &str) -> Option<&str>;
}

impl<S: std::hash::BuildHasher> Headers for std::collections::HashMap<&str, String, S> {
    fn text(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// A request that passed every check of the envelope, ready to dispatch.
#[derive(Debug, Clone)]
pub struct Request {
    pub era: Era,
    /// A string or an integer.
    pub id: Value,
    pub method: String,
    /// Always an object.
    pub params: Value,
}

/// A notification that passed every check of the envelope.
#[derive(Debug, Clone)]
pub struct Notification {
    pub era: Era,
    pub method: String,
    /// Always an object.
    pub params: Value,
}

/// What a well-formed message is.
#[derive(Debug, Clone)]
pub enum Message {
    Request(Request),
    /// Acknowledged with 202 and nothing else at `/mcp`; passed on by the
    /// gateway.
    Notification(Notification),
    /// A response from the client (to a server's request), whole.
    Response(Value),
}

/// Reads one JSON-RPC message from `body`.
///
/// # Errors
/// The refusal to send: a JSON-RPC error with status 400.
pub fn read_message(headers: &dyn Headers, body: &[u8]) -> Result<Message, RpcError> {
    let Ok(message) = serde_json::from_slice::<Value>(body) else {
        return Err(RpcError::parse_error(None));
    };
    read_parsed(headers, message)
}

/// [`read_message`] of a message already parsed (the gateway parses more
/// strictly first).
///
/// # Errors
/// As [`read_message`].
pub fn read_parsed(headers: &dyn Headers, message: Value) -> Result<Message, RpcError> {
    let Value::Object(mut message) = message else {
        let text = if message.is_array() {
            "batches are not supported; send one message per request"
        } else {
            "a message is a JSON object"
        };
        return Err(RpcError::invalid_request(text));
    };
    // Taken out, not copied: the message is not needed whole again.
    let id = message.remove("id");
    let params = message.remove("params");
    // Errors echo the id only when it is one a request may have: a float
    // would not survive the round trip exactly (found by fuzzing), and any
    // other type is not an id at all.
    let id_for_errors = id.clone().filter(is_valid_id).unwrap_or(Value::Null);
    let refuse = |error: RpcError| Err(error.answering(&id_for_errors));
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return refuse(RpcError::invalid_request("jsonrpc must be \"2.0\""));
    }
    let Some(Value::String(method)) = message.remove("method") else {
        // A response from the client: nothing to answer.
        if let Some(id) = id
            && (message.contains_key("result") || message.contains_key("error"))
        {
            message.insert("id".to_owned(), id);
            return Ok(Message::Response(Value::Object(message)));
        }
        return refuse(RpcError::invalid_request("a request needs a method"));
    };
    let params = match params {
        None | Some(Value::Null) => Value::Object(serde_json::Map::new()),
        Some(params @ Value::Object(_)) => params,
        Some(_) => return refuse(RpcError::invalid_request("params must be an object")),
    };

    let meta_version = params
        .get("_meta")
        .and_then(|meta| meta.get(META_PROTOCOL_VERSION))
        .and_then(Value::as_str);
    let header_version = headers.text(HEADER_PROTOCOL_VERSION).map(str::trim);
    let era = Era::of(meta_version, header_version);

    if era == Era::Handshake
        && let Some(version) = header_version
        && !LEGACY_VERSIONS.contains(&version)
    {
        return refuse(RpcError::unsupported_legacy_version(version));
    }
    if era == Era::Stateless
        && let Err(error) = check_stateless(headers, &method, &params, meta_version, header_version)
    {
        return refuse(error);
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
        return Err(RpcError::invalid_request(
            "id must be a string or an integer",
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
#[must_use]
pub fn is_valid_id(id: &Value) -> bool {
    id.is_string() || id.is_i64() || id.is_u64()
}

/// The stateless era's rules: the version in `_meta` matches the header and
/// is one we speak; `Mcp-Method` (and `Mcp-Name` where it applies)
/// repeat the body; the client's capabilities are declared.
fn check_stateless(
    headers: &dyn Headers,
    method: &str,
    params: &Value,
    meta_version: Option<&str>,
    header_version: Option<&str>,
) -> Result<(), RpcError> {
    let Some(version) = meta_version else {
        return Err(RpcError::missing_meta(META_PROTOCOL_VERSION));
    };
    let mismatch = || {
        Err(RpcError::header_mismatch(
            "MCP-Protocol-Version header does not match _meta",
        ))
    };
    // A header that names another version than `_meta` is a mismatch
    // whatever either version is: the request contradicts itself, so which
    // version it "requested" has no answer. The conformance suite holds
    // servers to this (check `sep-2575-http-server-header-mismatch-400`).
    if header_version.is_some_and(|header| header != version) {
        return mismatch();
    }
    if version != MODERN_VERSION {
        return Err(RpcError::unsupported_version(version));
    }
    // A request without the header does not contradict itself, so an
    // unknown `_meta` version was refused above with the supported list,
    // the answer such a client can act on; the missing header comes second.
    if header_version.is_none() {
        return mismatch();
    }
    let method_header = headers.text(HEADER_METHOD).and_then(decode_header_value);
    if method_header.as_deref() != Some(method) {
        return Err(RpcError::header_mismatch(
            "Mcp-Method header does not match the method",
        ));
    }
    if let Some(field) = named_field(method) {
        let expected = params.get(field).and_then(Value::as_str);
        let given = headers.text(HEADER_NAME).and_then(decode_header_value);
        if expected.is_none() || given.as_deref() != expected {
            return Err(RpcError::header_mismatch(format!(
                "Mcp-Name header does not match params.{field}"
            )));
        }
    }
    let declared = params
        .get("_meta")
        .and_then(|meta| meta.get(META_CLIENT_CAPABILITIES))
        .is_some_and(Value::is_object);
    if !declared {
        return Err(RpcError::missing_meta(META_CLIENT_CAPABILITIES));
    }
    Ok(())
}

/// The field `Mcp-Name` repeats for `method`, if any.
#[must_use]
pub fn named_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// Decodes an `Mcp-Name` (or `Mcp-Param-*`) value: leading and trailing
/// whitespace is ignored, and `=?base64?…?=` carries a value that is not
/// header-safe.
#[must_use]
pub fn decode_header_value(raw: &str) -> Option<String> {
    use base64::Engine;
    let trimmed = raw.trim_matches([' ', '\t']);
    match trimmed
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok()),
        None => Some(trimmed.to_owned()),
    }
}

/// A JSON-RPC success response around any serialisable result.
#[derive(Debug, Serialize)]
pub struct ResultResponse<'a, T> {
    jsonrpc: &'static str,
    id: &'a Value,
    result: &'a T,
}

#[must_use]
pub fn result_response<'a, T: Serialize>(id: &'a Value, result: &'a T) -> ResultResponse<'a, T> {
    ResultResponse {
        jsonrpc: "2.0",
        id,
        result,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::era::{META_CLIENT_CAPABILITIES, META_PROTOCOL_VERSION, MODERN_VERSION};
    use crate::error::{HEADER_MISMATCH, UNSUPPORTED_PROTOCOL_VERSION};

    /// Checks what every refusal must be: a 4xx carrying one JSON-RPC error
    /// object whose id is null or the message's own (string or integer) id.
    fn assert_well_formed_refusal(reply: &RpcError, sent: Option<&Value>) {
        assert!((400..500).contains(&reply.status), "{:?}", reply.status);
        let body: Value = serde_json::from_slice(&reply.to_body()).expect("a JSON body");
        assert_eq!(body["jsonrpc"], "2.0");
        assert!(body["error"]["code"].is_i64());
        assert!(body["error"]["message"].is_string());
        let id = &body["id"];
        assert!(
            id.is_null() || sent == Some(id),
            "refusal id {id} for message id {sent:?}"
        );
    }

    fn headers(pairs: &[(&'static str, String)]) -> HashMap<&'static str, String> {
        pairs.iter().cloned().collect()
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
    fn discover(meta_version: &str, header_version: Option<&str>) -> Result<Message, RpcError> {
        let mut pairs = vec![("mcp-method", "server/discover".to_owned())];
        if let Some(version) = header_version {
            pairs.push(("mcp-protocol-version", version.to_owned()));
        }
        let body = json!({
            "jsonrpc": "2.0",
            "id": 7,
            "method": "server/discover",
            "params": { "_meta": {
                META_PROTOCOL_VERSION: meta_version,
                META_CLIENT_CAPABILITIES: {},
            } },
        });
        read_message(&headers(&pairs), &body.to_string().into_bytes())
    }

    /// The status and the JSON-RPC error of a refusal.
    fn refusal(read: Result<Message, RpcError>) -> (u16, Value) {
        let Err(reply) = read else {
            panic!("expected a refusal, got {read:?}");
        };
        assert_well_formed_refusal(&reply, Some(&json!(7)));
        let body: Value = serde_json::from_slice(&reply.to_body()).expect("a JSON body");
        (reply.status, body["error"].clone())
    }

    #[test]
    fn a_version_header_unlike_an_unsupported_meta_version_is_a_header_mismatch() {
        let (status, error) = refusal(discover("v999.0.0", Some(MODERN_VERSION)));
        assert_eq!(status, 400);
        assert_eq!(error["code"], HEADER_MISMATCH);
        // The same with the roles swapped: the header names the unknown one.
        let (status, error) = refusal(discover(MODERN_VERSION, Some("v999.0.0")));
        assert_eq!(status, 400);
        assert_eq!(error["code"], HEADER_MISMATCH);
    }

    #[test]
    fn an_unsupported_version_the_header_repeats_is_unsupported_with_the_supported_list() {
        let (status, error) = refusal(discover("v999.0.0", Some("v999.0.0")));
        assert_eq!(status, 400);
        assert_eq!(error["code"], UNSUPPORTED_PROTOCOL_VERSION);
        assert_eq!(error["data"]["supported"], json!([MODERN_VERSION]));
        assert_eq!(error["data"]["requested"], "v999.0.0");
    }

    #[test]
    fn an_unsupported_meta_version_without_a_header_is_unsupported() {
        let (_, error) = refusal(discover("1900-01-01", None));
        assert_eq!(error["code"], UNSUPPORTED_PROTOCOL_VERSION);
        // A supported one without the header is the header's fault.
        let (_, error) = refusal(discover(MODERN_VERSION, None));
        assert_eq!(error["code"], HEADER_MISMATCH);
    }

    #[test]
    fn matching_supported_versions_are_read() {
        let read = discover(MODERN_VERSION, Some(MODERN_VERSION));
        let Ok(Message::Request(request)) = read else {
            panic!("expected a request, got {read:?}");
        };
        assert_eq!(request.era, Era::Stateless);
        assert_eq!(request.method, "server/discover");
    }

    proptest! {
        #[test]
        fn a_version_header_unlike_meta_is_always_a_header_mismatch(
            meta_version in prop_oneof![Just(MODERN_VERSION.to_owned()), "[0-9a-z.-]{0,12}"],
            header_version in prop_oneof![Just(MODERN_VERSION.to_owned()), "[0-9a-z.-]{0,12}"],
        ) {
            prop_assume!(meta_version != header_version);
            let (status, error) = refusal(discover(&meta_version, Some(&header_version)));
            prop_assert_eq!(status, 400);
            prop_assert_eq!(&error["code"], &json!(HEADER_MISMATCH));
        }

        #[test]
        fn any_bytes_are_refused_or_read_never_a_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
            match read_message(&HashMap::<&str, String>::new(), &body) {
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

    #[test]
    fn a_plain_header_value_is_trimmed() {
        assert_eq!(decode_header_value("  whoami\t").as_deref(), Some("whoami"));
    }

    #[test]
    fn a_base64_header_value_is_decoded() {
        assert_eq!(
            decode_header_value("=?base64?Y29sYTovL2tleXMvw6k=?=").as_deref(),
            Some("cola://keys/é")
        );
        assert_eq!(decode_header_value("=?base64?!!!?="), None);
    }
}
