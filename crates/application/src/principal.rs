//! Who is acting: a tenant user (management API) or an admitted key (MCP).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use cola_domain::{
    ApiKeyId, ApiKeyPermissions, IpWhitelist, KeyPrefix, RateLimit, TenantId, UserId,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Member,
}

/// A tenant user, as their JWT names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub role: Role,
}

impl Principal {
    /// Whether this user may see and manage a key owned by `owner` (of the
    /// same tenant: the repository never returns another tenant's key).
    #[must_use]
    pub fn can_manage(&self, owner: UserId) -> bool {
        self.role == Role::Admin || self.user_id == owner
    }
}

/// An admitted MCP key: everything a request needs to act within it. Cached
/// after verification, so it holds what must be re-checked on every hit
/// (expiry, allow-list) as well.
#[derive(Debug, Clone)]
pub struct McpPrincipal(Arc<AdmittedKey>);

#[derive(Debug, PartialEq, Eq)]
pub struct AdmittedKey {
    pub key_id: ApiKeyId,
    pub tenant_id: TenantId,
    pub owner: UserId,
    pub prefix: KeyPrefix,
    pub permissions: ApiKeyPermissions,
    pub ip_whitelist: IpWhitelist,
    /// The key's own rate limit, enforced on every admitted request.
    pub rate_limit: Option<RateLimit>,
    pub expires_at: DateTime<Utc>,
}

impl McpPrincipal {
    #[must_use]
    pub fn new(key: AdmittedKey) -> Self {
        Self(Arc::new(key))
    }

    #[must_use]
    pub fn key(&self) -> &AdmittedKey {
        &self.0
    }

    /// The key's owner as a member: what an MCP request may do is what its
    /// owner could do through the REST API, never more — and only once the
    /// key's scope allowed it, which is why this is not public: the MCP use
    /// cases (`crate::mcp`) are the one way from a key to its owner's data.
    #[must_use]
    pub(crate) fn as_owner(&self) -> Principal {
        Principal {
            tenant_id: self.0.tenant_id,
            user_id: self.0.owner,
            role: Role::Member,
        }
    }
}
