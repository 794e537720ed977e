//! Who Cola's own MCP server is: its name, capabilities and instructions.
//! The wire itself (eras, messages, errors) is `cola_protocol`'s.

use serde::Serialize;
use serde_json::{Value, json};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_typed_server_meta_matches_the_meta_key_and_server_info() {
        // `ServerMeta` names its key in a serde attribute; it must be the
        // same key and value the JSON results get.
        let meta = serde_json::to_value(ServerMeta::default()).expect("serialises");
        assert_eq!(
            meta,
            json!({ cola_protocol::era::META_SERVER_INFO: server_info() })
        );
    }
}
