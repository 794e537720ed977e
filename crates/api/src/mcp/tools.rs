//! The built-in tools. What each needs from a key is declared here, and the
//! one check of it (`Tool::allowed`) serves listing and calling alike.

use chrono::{DateTime, Utc};
use cola_application::{ApiKeyService, AppError, ListKeysQuery, McpPrincipal};
use cola_domain::{Access, ApiKeyId, ApiKeyPermissions, KeyPrefix, TenantId, UserId};
use serde::Serialize;

use crate::mcp::protocol;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    WhoAmI,
    ListApiKeys,
    RevokeApiKey,
}

/// In the order `tools/list` shows them.
const ALL: [Tool; 3] = [Tool::WhoAmI, Tool::ListApiKeys, Tool::RevokeApiKey];

impl Tool {
    pub fn find(name: &str) -> Option<Self> {
        ALL.into_iter().find(|tool| tool.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::WhoAmI => "whoami",
            Self::ListApiKeys => "list_api_keys",
            Self::RevokeApiKey => "revoke_api_key",
        }
    }

    fn access(self) -> Access {
        match self {
            Self::WhoAmI | Self::ListApiKeys => Access::Read,
            Self::RevokeApiKey => Access::Write,
        }
    }

    /// Whether the key may see and call this tool: its flags and its tool
    /// allow-list.
    pub fn allowed(self, principal: &McpPrincipal) -> bool {
        principal
            .key()
            .permissions
            .allows_tool(self.name(), self.access())
    }

    fn definition(self) -> Value {
        let read_only = self.access() == Access::Read;
        let (title, description, input, output) = match self {
            Self::WhoAmI => (
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
            ),
            Self::ListApiKeys => (
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
            ),
            Self::RevokeApiKey => (
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
            ),
        };
        json!({
            "name": self.name(),
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

    /// Runs the tool. Failures are results with `isError: true`, so a model
    /// can read them and correct itself.
    pub async fn run(
        self,
        keys: &ApiKeyService,
        principal: &McpPrincipal,
        arguments: &Map<String, Value>,
    ) -> ToolResult {
        let outcome = match self {
            Self::WhoAmI => structured(&WhoAmI::of(principal)),
            Self::ListApiKeys => list(keys, principal, arguments).await,
            Self::RevokeApiKey => revoke(keys, principal, arguments).await,
        };
        ToolResult {
            outcome,
            stateless: false,
        }
    }
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
            result_type: self.stateless.then_some(protocol::RESULT_COMPLETE),
            meta: self.stateless.then(protocol::ServerMeta::default),
        }
        .serialize(serializer)
    }
}

fn structured<T: Serialize>(value: &T) -> Result<Box<RawValue>, String> {
    serde_json::value::to_raw_value(value).map_err(|_| "the operation failed".to_owned())
}

/// The definitions of the tools `principal` may use, in a stable order.
pub fn visible(principal: &McpPrincipal) -> Vec<Value> {
    ALL.into_iter()
        .filter(|tool| tool.allowed(principal))
        .map(Tool::definition)
        .collect()
}

/// What `whoami` answers: the acting identity and what the key may do.
#[derive(Serialize)]
struct WhoAmI<'a> {
    tenant_id: TenantId,
    user_id: UserId,
    key_id: ApiKeyId,
    key_prefix: &'a KeyPrefix,
    permissions: &'a ApiKeyPermissions,
    expires_at: DateTime<Utc>,
}

impl<'a> WhoAmI<'a> {
    fn of(principal: &'a McpPrincipal) -> Self {
        let key = principal.key();
        Self {
            tenant_id: key.tenant_id,
            user_id: key.owner,
            key_id: key.key_id,
            key_prefix: &key.prefix,
            permissions: &key.permissions,
            expires_at: key.expires_at,
        }
    }
}

fn text_argument(arguments: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match arguments.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(Value::Number(number)) if name == "limit" => Ok(Some(number.to_string())),
        Some(_) => Err(format!("`{name}` has the wrong type")),
    }
}

fn describe(error: &AppError) -> String {
    match error {
        AppError::Invalid(errors) => errors
            .fields()
            .iter()
            .map(|(field, messages)| format!("`{field}` {}", messages.join("; ")))
            .collect::<Vec<_>>()
            .join("; "),
        AppError::NotFound => "no such key among your keys".into(),
        AppError::Unavailable(_) => "the key store is unavailable; try again shortly".into(),
        _ => "the operation failed".into(),
    }
}

async fn list(
    keys: &ApiKeyService,
    principal: &McpPrincipal,
    arguments: &Map<String, Value>,
) -> Result<Box<RawValue>, String> {
    if let Some(unknown) = arguments
        .keys()
        .find(|k| !matches!(k.as_str(), "status" | "limit" | "cursor"))
    {
        return Err(format!("`{unknown}` is not an argument of list_api_keys"));
    }
    let query = ListKeysQuery {
        status: text_argument(arguments, "status")?,
        limit: text_argument(arguments, "limit")?,
        cursor: text_argument(arguments, "cursor")?,
    };
    let page = keys
        .list(principal.as_owner(), query)
        .await
        .map_err(|e| describe(&e))?;
    structured(&page)
}

async fn revoke(
    keys: &ApiKeyService,
    principal: &McpPrincipal,
    arguments: &Map<String, Value>,
) -> Result<Box<RawValue>, String> {
    if let Some(unknown) = arguments.keys().find(|k| k.as_str() != "id") {
        return Err(format!("`{unknown}` is not an argument of revoke_api_key"));
    }
    let Some(raw) = text_argument(arguments, "id")? else {
        return Err("`id` is required".into());
    };
    let id: ApiKeyId = raw
        .parse()
        .map_err(|_| "no such key among your keys".to_owned())?;
    keys.revoke(principal.as_owner(), id)
        .await
        .map_err(|e| describe(&e))?;
    structured(&json!({ "id": id, "revoked": true }))
}
