//! MCP and JSON-RPC wire constants and message shapes, in one place so the
//! next protocol version is one file to change.

use serde::Serialize;
use serde_json::{Value, json};

/// Versions of the handshake era (`initialize` first).
pub const LEGACY_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];
/// The newest handshake-era version, offered when a client asks for one we
/// do not know.
pub const LATEST_LEGACY_VERSION: &str = "2025-11-25";
/// The stateless era: every request carries its version in `_meta`.
pub const MODERN_VERSION: &str = "2026-07-28";

pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

pub const HEADER_PROTOCOL_VERSION: &str = "mcp-protocol-version";
pub const HEADER_METHOD: &str = "mcp-method";
pub const HEADER_NAME: &str = "mcp-name";

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// Handshake era only: a resource that does not exist.
pub const RESOURCE_NOT_FOUND: i64 = -32002;
pub const HEADER_MISMATCH: i64 = -32020;
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
/// Application codes for the HTTP-level refusals (outside the range the
/// JSON-RPC and MCP specifications reserve).
pub const UNAUTHORIZED: i64 = -31001;
pub const FORBIDDEN: i64 = -31003;
pub const RATE_LIMITED: i64 = -31029;
pub const UNAVAILABLE: i64 = -31503;

/// Which era a request belongs to, decided by its metadata alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    Handshake,
    Stateless,
}

/// The error code of an unknown resource (or one the key may not read):
/// `-32002` in the handshake era, invalid params in 2026-07-28.
#[must_use]
pub fn resource_not_found_code(era: Era) -> i64 {
    match era {
        Era::Handshake => RESOURCE_NOT_FOUND,
        Era::Stateless => INVALID_PARAMS,
    }
}

/// `resultType` of a result that is the whole answer (2026-07-28).
pub const RESULT_COMPLETE: &str = "complete";

/// Who answers: `serverInfo` in handshake results, `_meta` in stateless ones.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ServerInfo {
    name: &'static str,
    title: &'static str,
    version: &'static str,
}

pub const SERVER_INFO: ServerInfo = ServerInfo {
    name: "cola",
    title: "Cola API keys",
    version: env!("CARGO_PKG_VERSION"),
};

/// The `_meta` every 2026-07-28 result carries.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ServerMeta {
    #[serde(rename = "io.modelcontextprotocol/serverInfo")]
    server_info: ServerInfo,
}

impl Default for ServerMeta {
    fn default() -> Self {
        Self {
            server_info: SERVER_INFO,
        }
    }
}

#[must_use]
pub fn server_info() -> Value {
    json!(SERVER_INFO)
}

#[must_use]
pub fn capabilities() -> Value {
    // No `listChanged`/`subscribe`: there is no stream to announce them on.
    json!({ "tools": {}, "resources": {} })
}

pub const INSTRUCTIONS: &str = "Cola manages the API key this connection uses. \
    `whoami` shows the key and what it may do; `list_api_keys` lists the owner's keys; \
    `revoke_api_key` revokes one of them. Each key is also a resource at cola://keys/{id}.";

/// A JSON-RPC error object.
#[must_use]
pub fn error_object(code: i64, message: &str, data: Option<Value>) -> Value {
    let mut error = json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data;
    }
    error
}

/// A complete JSON-RPC error response.
#[must_use]
pub fn error_response(id: &Value, code: i64, message: &str, data: Option<Value>) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": error_object(code, message, data) })
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

/// Decodes an `Mcp-Name` value: leading/trailing whitespace is ignored and
/// `=?base64?…?=` carries a value that is not header-safe.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_typed_server_meta_matches_the_meta_key_and_server_info() {
        // `ServerMeta` names its key in a serde attribute; it must be the
        // same key and value the JSON results get.
        let meta = serde_json::to_value(ServerMeta::default()).expect("serialises");
        assert_eq!(meta, json!({ META_SERVER_INFO: server_info() }));
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
