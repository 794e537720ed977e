//! How the built-in tools look on the wire: their definitions for
//! `tools/list` and their results for `tools/call`. What a key may use, and
//! what a tool does, are the application's (`cola_application::McpService`).

use cola_application::{BuiltinTool, ToolFailure, ToolOutput};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::mcp::protocol;

/// A tool's title, description, input schema and output schema.
type Look = (&'static str, &'static str, Value, Value);

/// How `tools/list` presents a built-in tool. Which tools a key sees is the
/// application's decision (`McpService::tools`); this only renders them.
pub fn definition(tool: BuiltinTool) -> Value {
    let read_only = tool.read_only();
    let (title, description, input, output) = match tool {
        BuiltinTool::WhoAmI => who_am_i(),
        BuiltinTool::ListApiKeys => list_api_keys(),
        BuiltinTool::RevokeApiKey => revoke_api_key(),
    };
    json!({
        "name": tool.name(),
        "title": title,
        "description": description,
        "inputSchema": input,
        "outputSchema": output,
        "annotations": {
            "title": title,
            "readOnlyHint": read_only,
            "destructiveHint": !read_only,
            "idempotentHint": true,
            "openWorldHint": false
        }
    })
}

/// `whoami`: no input; the principal, its key and what the key may do.
fn who_am_i() -> Look {
    (
        "Who am I",
        "Shows the tenant, user and API key this connection acts as, with the key's permissions and expiry.",
        json!({ "type": "object", "properties": {}, "additionalProperties": false }),
        json!({
            "type": "object",
            "properties": {
                "tenant_id": { "type": "string" },
                "user_id": { "type": "string" },
                "key_id": { "type": "string" },
                "key_prefix": { "type": "string" },
                "permissions": { "type": "object" },
                "expires_at": { "type": "string" }
            },
            "required": ["tenant_id", "user_id", "key_id", "key_prefix", "permissions", "expires_at"]
        }),
    )
}

/// `list_api_keys`: a filter and a page; the keys, newest first.
fn list_api_keys() -> Look {
    (
        "List API keys",
        "Lists the API keys of this key's owner, newest first (no secrets). Optional filter by status and paging by cursor.",
        json!({
            "type": "object",
            "properties": {
                "status": { "type": "string", "enum": ["active", "revoked", "expired"] },
                "limit": { "type": "integer", "minimum": 1, "maximum": 100 },
                "cursor": { "type": "string" }
            },
            "additionalProperties": false
        }),
        json!({
            "type": "object",
            "properties": {
                "items": { "type": "array", "items": { "type": "object" } },
                "next_cursor": { "type": ["string", "null"] }
            },
            "required": ["items"]
        }),
    )
}

/// `revoke_api_key`: a key id; whether it is revoked.
fn revoke_api_key() -> Look {
    (
        "Revoke an API key",
        "Revokes one of this key's owner's API keys by id. Revocation is immediate and final; revoking a revoked key changes nothing.",
        json!({
            "type": "object",
            "properties": { "id": { "type": "string", "format": "uuid", "description": "The key's id" } },
            "required": ["id"],
            "additionalProperties": false
        }),
        json!({
            "type": "object",
            "properties": { "id": { "type": "string" }, "revoked": { "type": "boolean" } },
            "required": ["id", "revoked"]
        }),
    )
}

/// A `tools/call` result. Structured output is serialised once: the same
/// JSON text is the text content (for clients that read only that) and,
/// embedded as-is, the `structuredContent`. A failure is the message, with
/// `isError: true`.
#[derive(Debug)]
pub struct ToolResult {
    outcome: Result<Box<RawValue>, String>,
    /// Whether to add what every 2026-07-28 result carries.
    stateless: bool,
}

impl ToolResult {
    #[must_use]
    pub fn stateless(self) -> Self {
        Self {
            stateless: true,
            ..self
        }
    }
}

impl Serialize for ToolResult {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Text<'a> {
            r#type: &'static str,
            text: &'a str,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            content: [Text<'a>; 1],
            #[serde(skip_serializing_if = "Option::is_none")]
            structured_content: Option<&'a RawValue>,
            is_error: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            result_type: Option<&'static str>,
            #[serde(rename = "_meta", skip_serializing_if = "Option::is_none")]
            meta: Option<protocol::ServerMeta>,
        }
        let (text, structured_content, is_error) = match &self.outcome {
            Ok(raw) => (raw.get(), Some(&**raw), false),
            Err(message) => (message.as_str(), None, true),
        };
        Wire {
            content: [Text {
                r#type: "text",
                text,
            }],
            structured_content,
            is_error,
            result_type: self
                .stateless
                .then_some(cola_protocol::era::RESULT_COMPLETE),
            meta: self.stateless.then(protocol::ServerMeta::default),
        }
        .serialize(serializer)
    }
}

fn structured<T: Serialize>(value: &T) -> Result<Box<RawValue>, String> {
    serde_json::value::to_raw_value(value).map_err(|_| "the operation failed".to_owned())
}

impl ToolResult {
    /// A tool's output, or its failure as an `isError` result a model can
    /// read and correct itself from.
    #[must_use]
    pub fn of(outcome: Result<ToolOutput, ToolFailure>) -> Self {
        let outcome = match outcome {
            Ok(ToolOutput::WhoAmI(view)) => structured(&view),
            Ok(ToolOutput::Keys(page)) => structured(&page),
            Ok(ToolOutput::Revoked(view)) => structured(&view),
            Err(ToolFailure(message)) => Err(message),
        };
        Self {
            outcome,
            stateless: false,
        }
    }
}
