//! The MCP methods Cola serves, for both eras. Each method that names a
//! tool or a resource goes to `McpService`, which checks the key's scope and
//! acts as the key's owner; this module only speaks the protocol.

use std::sync::Arc;

use cola_application::{AppError, McpPrincipal, McpService, ReadResourceError, UnknownTool};
use serde_json::{Map, Value, json};

use cola_protocol::era::{
    LATEST_LEGACY_VERSION, LEGACY_VERSIONS, META_SERVER_INFO, MODERN_VERSION, RESULT_COMPLETE,
};
use cola_protocol::{Era, RpcError};

use crate::mcp::protocol;
use crate::mcp::tools::{self, ToolResult};

#[derive(Debug)]
pub struct Call<'a> {
    pub era: Era,
    pub method: &'a str,
    pub params: &'a Value,
    pub principal: &'a McpPrincipal,
}

/// A successful result: a JSON tree, or a tool's result, which is written
/// straight from its parts (the hot path: `tools/call`).
#[derive(Debug)]
pub enum Payload {
    Json(Value),
    Tool(ToolResult),
}

impl serde::Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Json(value) => value.serialize(serializer),
            Self::Tool(result) => result.serialize(serializer),
        }
    }
}

#[derive(Debug)]
pub enum Outcome {
    Result(Payload),
    Error(RpcError),
}

impl Outcome {
    fn json(value: Value) -> Self {
        Self::Result(Payload::Json(value))
    }
}

#[derive(Debug)]
pub struct McpServer {
    service: Arc<McpService>,
}

impl McpServer {
    #[must_use]
    pub fn new(service: Arc<McpService>) -> Self {
        Self { service }
    }

    pub async fn dispatch(&self, call: Call<'_>) -> Outcome {
        let era = call.era;
        let outcome = match (era, call.method) {
            (Era::Handshake, "initialize") => Outcome::json(initialize(call.params)),
            (Era::Handshake, "ping") => Outcome::json(json!({})),
            (_, "server/discover") => Outcome::json(discover()),
            (_, "tools/list") => {
                let visible: Vec<Value> = self
                    .service
                    .tools(call.principal)
                    .into_iter()
                    .map(tools::definition)
                    .collect();
                Outcome::json(json!({ "tools": visible }))
            }
            (_, "tools/call") => self.call_tool(&call).await,
            (_, "resources/list") => self.list_resources(call.principal).await,
            (_, "resources/read") => self.read_resource(&call).await,
            (_, "resources/templates/list") => Outcome::json(json!({ "resourceTemplates": [] })),
            (_, method) => Outcome::Error(RpcError::method_not_found(method, era)),
        };
        match (era, outcome) {
            (Era::Stateless, Outcome::Result(Payload::Json(result))) => {
                Outcome::json(stateless_result(call.method, result))
            }
            (Era::Stateless, Outcome::Result(Payload::Tool(result))) => {
                Outcome::Result(Payload::Tool(result.stateless()))
            }
            (_, outcome) => outcome,
        }
    }

    async fn call_tool(&self, call: &Call<'_>) -> Outcome {
        let Some(name) = call.params.get("name").and_then(Value::as_str) else {
            return Outcome::Error(RpcError::invalid_params("params.name is required"));
        };
        let no_arguments = Map::new();
        let arguments = match call.params.get("arguments") {
            None | Some(Value::Null) => &no_arguments,
            Some(Value::Object(arguments)) => arguments,
            Some(_) => {
                return Outcome::Error(RpcError::invalid_params(
                    "params.arguments must be an object",
                ));
            }
        };
        // A tool the key may not use answers exactly as one that does not
        // exist, and runs nothing.
        match self
            .service
            .call_tool(call.principal, name, arguments)
            .await
        {
            Ok(outcome) => Outcome::Result(Payload::Tool(ToolResult::of(outcome))),
            Err(UnknownTool) => Outcome::Error(RpcError::unknown_tool(name)),
        }
    }

    async fn list_resources(&self, principal: &McpPrincipal) -> Outcome {
        match self.service.resources(principal).await {
            Ok(listed) => {
                let resources: Vec<Value> = listed
                    .iter()
                    .map(|resource| {
                        let key = &resource.key;
                        json!({
                            "uri": resource.uri,
                            "name": key.name,
                            "description": format!("{} key {} ({})", key.status.as_str(), key.key_prefix, key.name),
                            "mimeType": "application/json",
                        })
                    })
                    .collect();
                Outcome::json(json!({ "resources": resources }))
            }
            Err(error) => internal(&error),
        }
    }

    async fn read_resource(&self, call: &Call<'_>) -> Outcome {
        let Some(uri) = call.params.get("uri").and_then(Value::as_str) else {
            return Outcome::Error(RpcError::invalid_params("params.uri is required"));
        };
        match self.service.read_resource(call.principal, uri).await {
            Ok(key) => Outcome::json(json!({
                "contents": [{
                    "uri": uri,
                    "mimeType": "application/json",
                    "text": serde_json::to_string(&key).unwrap_or_default(),
                }]
            })),
            Err(ReadResourceError::NotFound) => {
                Outcome::Error(RpcError::resource_not_found(uri, call.era))
            }
            Err(ReadResourceError::Failed(error)) => internal(&error),
        }
    }
}

fn internal(error: &AppError) -> Outcome {
    match error {
        AppError::Unavailable(_) => {
            tracing::warn!(error = %cola_application::error_chain(error), "database unavailable");
        }
        other => tracing::error!(error = %cola_application::error_chain(other), "mcp call failed"),
    }
    Outcome::Error(RpcError::internal())
}

fn initialize(params: &Value) -> Value {
    let requested = params.get("protocolVersion").and_then(Value::as_str);
    let version = requested
        .filter(|version| LEGACY_VERSIONS.contains(version))
        .unwrap_or(LATEST_LEGACY_VERSION);
    json!({
        "protocolVersion": version,
        "capabilities": protocol::capabilities(),
        "serverInfo": protocol::server_info(),
        "instructions": protocol::INSTRUCTIONS,
    })
}

fn discover() -> Value {
    json!({
        "supportedVersions": [MODERN_VERSION],
        "capabilities": protocol::capabilities(),
        "serverInfo": protocol::server_info(),
        "instructions": protocol::INSTRUCTIONS,
    })
}

/// Adds what every 2026-07-28 result carries, and the cache fields of the
/// cacheable ones. Per-key answers are never shared between keys, and a
/// permission change applies at once, so they are private and not reused.
fn stateless_result(method: &str, mut result: Value) -> Value {
    if let Value::Object(fields) = &mut result {
        fields.insert("resultType".into(), json!(RESULT_COMPLETE));
        let meta = fields.entry("_meta").or_insert_with(|| json!({}));
        if let Value::Object(meta) = meta {
            meta.insert(META_SERVER_INFO.into(), protocol::server_info());
        }
        if matches!(
            method,
            "server/discover"
                | "tools/list"
                | "resources/list"
                | "resources/read"
                | "resources/templates/list"
        ) {
            fields.insert("ttlMs".into(), json!(0));
            fields.insert("cacheScope".into(), json!("private"));
        }
    }
    result
}
