//! The JSON-RPC errors Cola answers with, one constructor per refusal: each
//! knows its code, its HTTP status and its words, so a surface says *which*
//! refusal it makes and never assembles one from five arguments.

use serde_json::{Value, json};

use crate::era::Era;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// Handshake era only: a resource that does not exist.
pub const RESOURCE_NOT_FOUND: i64 = -32002;
pub const HEADER_MISMATCH: i64 = -32020;
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
/// Application codes of Cola's HTTP-level refusals (outside the ranges the
/// JSON-RPC and MCP specifications reserve).
pub const UNAUTHORIZED: i64 = -31001;
pub const FORBIDDEN: i64 = -31003;
pub const NOT_FOUND: i64 = -31004;
pub const RATE_LIMITED: i64 = -31029;
pub const UPSTREAM_FAILED: i64 = -31502;
pub const UNAVAILABLE: i64 = -31503;
pub const UPSTREAM_TIMEOUT: i64 = -31504;

/// One JSON-RPC error answer: the error object, the id it answers (null
/// when the request's id is unknown or unfit to echo) and the HTTP status
/// it travels with.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub status: u16,
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
    pub id: Value,
}

impl RpcError {
    fn new(status: u16, code: i64, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            data: None,
            id: Value::Null,
        }
    }

    /// The same error, answering the request `id`.
    #[must_use]
    pub fn answering(mut self, id: &Value) -> Self {
        self.id = id.clone();
        self
    }

    #[must_use]
    fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// The whole JSON-RPC response, serialised.
    #[must_use]
    pub fn to_body(&self) -> Vec<u8> {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(data) = &self.data {
            error["data"] = data.clone();
        }
        let response = json!({ "jsonrpc": "2.0", "id": self.id, "error": error });
        serde_json::to_vec(&response).unwrap_or_default()
    }

    // -- the envelope ------------------------------------------------------

    /// Not JSON, or not one message; `detail` says what, where it helps.
    #[must_use]
    pub fn parse_error(detail: Option<String>) -> Self {
        let message =
            detail.map_or_else(|| "Parse error".to_owned(), |d| format!("Parse error: {d}"));
        Self::new(400, PARSE_ERROR, message)
    }

    /// A message whose envelope breaks JSON-RPC's or MCP's rules.
    #[must_use]
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(400, INVALID_REQUEST, message)
    }

    /// A body that is not `application/json`.
    #[must_use]
    pub fn not_json() -> Self {
        Self::new(
            415,
            INVALID_REQUEST,
            "Content-Type must be application/json",
        )
    }

    /// A body Cola does not read: too large (413), content-encoded (415) or
    /// broken off (400).
    #[must_use]
    pub fn unreadable_body(status: u16, message: impl Into<String>) -> Self {
        Self::new(status, INVALID_REQUEST, message)
    }

    /// A handshake-era `MCP-Protocol-Version` Cola does not speak.
    #[must_use]
    pub fn unsupported_legacy_version(version: &str) -> Self {
        Self::new(
            400,
            INVALID_REQUEST,
            format!("unsupported MCP-Protocol-Version `{version}`"),
        )
        .with_data(json!({ "supported": crate::era::LEGACY_VERSIONS }))
    }

    /// A 2026-07-28 request of a version Cola does not speak.
    #[must_use]
    pub fn unsupported_version(requested: &str) -> Self {
        Self::new(
            400,
            UNSUPPORTED_PROTOCOL_VERSION,
            "Unsupported protocol version",
        )
        .with_data(json!({ "supported": [crate::era::MODERN_VERSION], "requested": requested }))
    }

    /// A 2026-07-28 header that does not repeat the body (checked before
    /// any policy).
    #[must_use]
    pub fn header_mismatch(message: impl Into<String>) -> Self {
        Self::new(400, HEADER_MISMATCH, message)
    }

    /// A required `_meta` member missing from a 2026-07-28 request.
    #[must_use]
    pub fn missing_meta(member: &str) -> Self {
        Self::new(
            400,
            INVALID_PARAMS,
            format!("params._meta[\"{member}\"] is required"),
        )
    }

    // -- in-band answers ---------------------------------------------------

    /// A method the server does not know, answered as its era answers it.
    #[must_use]
    pub fn method_not_found(method: &str, era: Era) -> Self {
        Self::new(
            era.method_not_found_status(),
            METHOD_NOT_FOUND,
            format!("Method not found: {method}"),
        )
    }

    /// Params the method cannot take.
    #[must_use]
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(200, INVALID_PARAMS, message)
    }

    /// A tool that does not exist, or that the key may not use: the same.
    #[must_use]
    pub fn unknown_tool(name: &str) -> Self {
        Self::invalid_params(format!("Unknown tool: {name}"))
    }

    /// A prompt that does not exist, or that the key may not get.
    #[must_use]
    pub fn unknown_prompt(name: &str) -> Self {
        Self::invalid_params(format!("Unknown prompt: {name}"))
    }

    /// A resource that does not exist, or that the key may not read.
    #[must_use]
    pub fn resource_not_found(uri: &str, era: Era) -> Self {
        Self::new(200, era.resource_not_found_code(), "Resource not found")
            .with_data(json!({ "uri": uri }))
    }

    /// A task id that names no task of this caller.
    #[must_use]
    pub fn unknown_task() -> Self {
        Self::invalid_params("Task not found")
    }

    /// Something went wrong on Cola's side; nothing of it is told.
    #[must_use]
    pub fn internal() -> Self {
        Self::new(500, INTERNAL_ERROR, "Internal error")
    }

    // -- admission ---------------------------------------------------------

    /// No key, or one that is not admitted (every reason alike).
    #[must_use]
    pub fn invalid_credential() -> Self {
        Self::new(401, UNAUTHORIZED, "a valid Cola API key is required")
    }

    /// An `Origin` that may not call the endpoint.
    #[must_use]
    pub fn origin_forbidden() -> Self {
        Self::new(403, FORBIDDEN, "this origin may not call the MCP endpoint")
    }

    /// A key used from an address its allow-list does not hold.
    #[must_use]
    pub fn address_forbidden() -> Self {
        Self::new(403, FORBIDDEN, "this key may not be used from this address")
    }

    /// Too many failed attempts from the caller.
    #[must_use]
    pub fn too_many_failures() -> Self {
        Self::new(
            429,
            RATE_LIMITED,
            "too many failed attempts from this address",
        )
    }

    /// A key over its own rate limit.
    #[must_use]
    pub fn key_rate_limited() -> Self {
        Self::new(
            429,
            RATE_LIMITED,
            "this key's rate limit is reached; try again later",
        )
    }

    /// Key verification at capacity.
    #[must_use]
    pub fn verification_saturated() -> Self {
        Self::new(
            503,
            UNAVAILABLE,
            "key verification is at capacity; try again shortly",
        )
    }

    /// A key that cannot be verified now (the database is away).
    #[must_use]
    pub fn verification_unavailable() -> Self {
        Self::new(
            503,
            UNAVAILABLE,
            "the key cannot be verified right now; try again shortly",
        )
    }

    // -- the gateway -------------------------------------------------------

    /// An unknown slug, a verify-only server and an ungranted one: alike.
    #[must_use]
    pub fn server_not_reachable() -> Self {
        Self::new(
            404,
            NOT_FOUND,
            "no MCP server of that name is reachable with this key",
        )
    }

    /// An unknown session, or one of another key or server: alike.
    #[must_use]
    pub fn session_not_found() -> Self {
        Self::new(404, NOT_FOUND, "Session not found")
    }

    /// The server registry (the database) is away.
    #[must_use]
    pub fn registry_unavailable() -> Self {
        Self::new(
            503,
            UNAVAILABLE,
            "the server registry is unavailable; try again shortly",
        )
    }

    /// A registered server that cannot be used (it is corrupt).
    #[must_use]
    pub fn server_unusable() -> Self {
        Self::new(
            502,
            UPSTREAM_FAILED,
            "the MCP server cannot be used right now",
        )
    }

    /// The tenant's requests in flight fill its share of this instance.
    #[must_use]
    pub fn tenant_busy() -> Self {
        Self::new(
            503,
            UNAVAILABLE,
            "too many requests of this tenant are under way; try again shortly",
        )
    }

    /// The upstream `slug` failed as `what` says (502), naming it and
    /// nothing of its URL, headers or answer.
    #[must_use]
    pub fn upstream_failed(slug: &str, what: &str) -> Self {
        Self::new(
            502,
            UPSTREAM_FAILED,
            format!("the MCP server `{slug}` {what}"),
        )
        .with_data(json!({ "server": slug }))
    }

    /// The upstream `slug` did not answer within its timeout (504).
    #[must_use]
    pub fn upstream_timeout(slug: &str) -> Self {
        Self::new(
            504,
            UPSTREAM_TIMEOUT,
            format!("the MCP server `{slug}` did not answer in time"),
        )
        .with_data(json!({ "server": slug }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_one_json_rpc_error_answering_its_id() {
        let error = RpcError::resource_not_found("cola://x", Era::Handshake).answering(&json!(7));
        let body: Value = serde_json::from_slice(&error.to_body()).expect("JSON");
        assert_eq!(
            body,
            json!({ "jsonrpc": "2.0", "id": 7, "error": {
                "code": -32002, "message": "Resource not found", "data": { "uri": "cola://x" } } })
        );
        assert_eq!(error.status, 200);
    }

    #[test]
    fn an_unknown_method_is_a_404_only_in_the_stateless_era() {
        assert_eq!(RpcError::method_not_found("x", Era::Stateless).status, 404);
        assert_eq!(RpcError::method_not_found("x", Era::Handshake).status, 200);
    }
}
