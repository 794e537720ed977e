//! Cola's own MCP surface as use cases: the built-in tools and the key
//! resources. Each one asks the admitted key's scope (`SurfaceScope`) before
//! it does anything, so what a key sees listed is exactly what it may call
//! or read, and a caller that forgets to filter cannot widen access: the
//! only way to a key's owner's data from MCP is through here.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use cola_domain::{
    ApiKeyId, ApiKeyPermissions, KeyPrefix, Surface, SurfaceScope, TenantId, UserId,
};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::dto::{KeyPage, KeyView, ListKeysQuery};
use crate::error::AppError;
use crate::principal::McpPrincipal;
use crate::service::ApiKeyService;

/// The URI of a key resource is this prefix and the key's id.
pub const KEY_URI_PREFIX: &str = "cola://keys/";
/// Keys shown as resources: the owner's keys, newest first, at most this many.
const MAX_LISTED_RESOURCES: u64 = 100;

/// Cola's built-in tools, in the order `tools/list` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinTool {
    WhoAmI,
    ListApiKeys,
    RevokeApiKey,
}

impl BuiltinTool {
    pub const ALL: [Self; 3] = [Self::WhoAmI, Self::ListApiKeys, Self::RevokeApiKey];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::WhoAmI => "whoami",
            Self::ListApiKeys => "list_api_keys",
            Self::RevokeApiKey => "revoke_api_key",
        }
    }

    /// The tool's `readOnlyHint`: a read-only tool needs `read`, any other
    /// `write`.
    #[must_use]
    pub fn read_only(self) -> bool {
        match self {
            Self::WhoAmI | Self::ListApiKeys => true,
            Self::RevokeApiKey => false,
        }
    }

    fn find(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|tool| tool.name() == name)
    }
}

/// What `whoami` answers: the acting identity and what the key may do.
#[derive(Debug, Serialize)]
pub struct WhoAmIView {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub key_id: ApiKeyId,
    pub key_prefix: KeyPrefix,
    pub permissions: ApiKeyPermissions,
    pub expires_at: DateTime<Utc>,
}

/// What `revoke_api_key` answers.
#[derive(Debug, Serialize)]
pub struct RevokedView {
    pub id: ApiKeyId,
    pub revoked: bool,
}

/// A tool's result.
#[derive(Debug)]
pub enum ToolOutput {
    WhoAmI(WhoAmIView),
    Keys(KeyPage),
    Revoked(RevokedView),
}

/// A tool that ran and failed, with a message its caller (a model) can read
/// and act on. It reveals nothing a REST caller would not learn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolFailure(pub String);

/// A tool the key may not use, answered exactly as one that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownTool;

/// A resource listed for a key.
#[derive(Debug, Clone)]
pub struct KeyResource {
    pub uri: String,
    pub key: KeyView,
}

/// Why a resource cannot be read.
#[derive(Debug)]
pub enum ReadResourceError {
    /// Unknown, not the owner's, or one the key may not read: all alike.
    NotFound,
    Failed(AppError),
}

#[derive(Debug)]
pub struct McpService {
    keys: Arc<ApiKeyService>,
}

/// The key's scope on Cola's own endpoint.
fn scope(key: &McpPrincipal) -> Option<SurfaceScope<'_>> {
    key.key().permissions.scope_on(Surface::Cola)
}

impl McpService {
    #[must_use]
    pub fn new(keys: Arc<ApiKeyService>) -> Self {
        Self { keys }
    }

    /// The built-in tools `key` may use, in a stable order.
    #[must_use]
    pub fn tools(&self, key: &McpPrincipal) -> Vec<BuiltinTool> {
        visible_tools(key)
    }

    /// Runs the tool `name` as the key's owner, if the key may use it.
    pub async fn call_tool(
        &self,
        key: &McpPrincipal,
        name: &str,
        arguments: &Map<String, Value>,
    ) -> Result<Result<ToolOutput, ToolFailure>, UnknownTool> {
        let tool = authorised_tool(key, name).ok_or(UnknownTool)?;
        Ok(match tool {
            BuiltinTool::WhoAmI => Ok(ToolOutput::WhoAmI(who_am_i(key))),
            BuiltinTool::ListApiKeys => self.list_keys(key, arguments).await,
            BuiltinTool::RevokeApiKey => self.revoke_key(key, arguments).await,
        })
    }

    /// The owner's keys as resources, those the key may read.
    pub async fn resources(&self, key: &McpPrincipal) -> Result<Vec<KeyResource>, AppError> {
        let Some(scope) = scope(key) else {
            return Ok(Vec::new());
        };
        let query = ListKeysQuery {
            limit: Some(MAX_LISTED_RESOURCES.to_string()),
            ..ListKeysQuery::default()
        };
        let page = self.keys.list(key.as_owner(), query).await?;
        Ok(page
            .items
            .into_iter()
            .map(|view| KeyResource {
                uri: format!("{KEY_URI_PREFIX}{}", view.id),
                key: view,
            })
            .filter(|resource| scope.may_read_resource(&resource.uri))
            .collect())
    }

    /// The key a `cola://keys/{id}` URI names, if the key may read it.
    pub async fn read_resource(
        &self,
        key: &McpPrincipal,
        uri: &str,
    ) -> Result<KeyView, ReadResourceError> {
        if !scope(key).is_some_and(|scope| scope.may_read_resource(uri)) {
            return Err(ReadResourceError::NotFound);
        }
        let id = uri
            .strip_prefix(KEY_URI_PREFIX)
            .and_then(|id| id.parse::<ApiKeyId>().ok())
            .ok_or(ReadResourceError::NotFound)?;
        match self.keys.get(key.as_owner(), id).await {
            Ok(view) => Ok(view),
            Err(AppError::NotFound) => Err(ReadResourceError::NotFound),
            Err(error) => Err(ReadResourceError::Failed(error)),
        }
    }

    async fn list_keys(
        &self,
        key: &McpPrincipal,
        arguments: &Map<String, Value>,
    ) -> Result<ToolOutput, ToolFailure> {
        only_arguments(arguments, &["status", "limit", "cursor"], "list_api_keys")?;
        let query = ListKeysQuery {
            status: text_argument(arguments, "status")?,
            limit: text_argument(arguments, "limit")?,
            cursor: text_argument(arguments, "cursor")?,
        };
        self.keys
            .list(key.as_owner(), query)
            .await
            .map(ToolOutput::Keys)
            .map_err(|error| describe(&error))
    }

    async fn revoke_key(
        &self,
        key: &McpPrincipal,
        arguments: &Map<String, Value>,
    ) -> Result<ToolOutput, ToolFailure> {
        only_arguments(arguments, &["id"], "revoke_api_key")?;
        let Some(raw) = text_argument(arguments, "id")? else {
            return Err(ToolFailure("`id` is required".into()));
        };
        let id: ApiKeyId = raw
            .parse()
            .map_err(|_| ToolFailure("no such key among your keys".into()))?;
        self.keys
            .revoke(key.as_owner(), id)
            .await
            .map_err(|error| describe(&error))?;
        Ok(ToolOutput::Revoked(RevokedView { id, revoked: true }))
    }
}

fn visible_tools(key: &McpPrincipal) -> Vec<BuiltinTool> {
    BuiltinTool::ALL
        .into_iter()
        .filter(|tool| may_use(key, *tool))
        .collect()
}

fn may_use(key: &McpPrincipal, tool: BuiltinTool) -> bool {
    scope(key).is_some_and(|scope| scope.may_use_tool(tool.name(), tool.read_only()))
}

/// The tool `name` names, if it exists and the key may use it.
fn authorised_tool(key: &McpPrincipal, name: &str) -> Option<BuiltinTool> {
    BuiltinTool::find(name).filter(|tool| may_use(key, *tool))
}

fn who_am_i(key: &McpPrincipal) -> WhoAmIView {
    let key = key.key();
    WhoAmIView {
        tenant_id: key.tenant_id,
        user_id: key.owner,
        key_id: key.key_id,
        key_prefix: key.prefix.clone(),
        permissions: key.permissions.clone(),
        expires_at: key.expires_at,
    }
}

fn only_arguments(
    arguments: &Map<String, Value>,
    known: &[&str],
    tool: &str,
) -> Result<(), ToolFailure> {
    match arguments
        .keys()
        .find(|name| !known.contains(&name.as_str()))
    {
        Some(unknown) => Err(ToolFailure(format!(
            "`{unknown}` is not an argument of {tool}"
        ))),
        None => Ok(()),
    }
}

fn text_argument(
    arguments: &Map<String, Value>,
    name: &str,
) -> Result<Option<String>, ToolFailure> {
    match arguments.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(Value::Number(number)) if name == "limit" => Ok(Some(number.to_string())),
        Some(_) => Err(ToolFailure(format!("`{name}` has the wrong type"))),
    }
}

fn describe(error: &AppError) -> ToolFailure {
    ToolFailure(match error {
        AppError::Invalid(errors) => errors
            .fields()
            .iter()
            .map(|(field, messages)| format!("`{field}` {}", messages.join("; ")))
            .collect::<Vec<_>>()
            .join("; "),
        AppError::NotFound => "no such key among your keys".into(),
        AppError::Unavailable(_) => "the key store is unavailable; try again shortly".into(),
        _ => "the operation failed".into(),
    })
}

#[cfg(test)]
mod tests {
    use cola_domain::IpWhitelist;
    use proptest::prelude::*;

    use super::*;
    use crate::principal::AdmittedKey;

    fn principal(permissions: ApiKeyPermissions) -> McpPrincipal {
        McpPrincipal::new(AdmittedKey {
            key_id: ApiKeyId::from_uuid(uuid::Uuid::from_u128(3)),
            tenant_id: TenantId::from_uuid(uuid::Uuid::from_u128(1)),
            owner: UserId::from_uuid(uuid::Uuid::from_u128(2)),
            prefix: KeyPrefix::parse("cola_abcdefghijkl").expect("prefix"),
            permissions,
            ip_whitelist: IpWhitelist::parse::<&str>(&[]).expect("any address"),
            rate_limit: None,
            expires_at: Utc::now(),
        })
    }

    fn names() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("whoami".to_owned()),
            Just("list_api_keys".to_owned()),
            Just("revoke_api_key".to_owned()),
            "[a-z_]{1,12}",
        ]
    }

    proptest! {
        /// For any scope and any name: listed ⇔ callable. Both go through
        /// the same check, and this keeps it so.
        #[test]
        fn a_tool_is_listed_exactly_when_it_may_be_called(
            read in any::<bool>(),
            write in any::<bool>(),
            tools in proptest::option::of(proptest::collection::vec(names(), 0..4)),
            probe in names(),
        ) {
            prop_assume!(read || write);
            let permissions = ApiKeyPermissions::new(read, write, tools, None).expect("valid");
            let key = principal(permissions);
            let listed = visible_tools(&key).iter().any(|tool| tool.name() == probe);
            prop_assert_eq!(listed, authorised_tool(&key, &probe).is_some());
        }
    }
}
