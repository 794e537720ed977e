//! Domain events: what happened to a key, recorded in its audit trail in the
//! same transaction as the change itself.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{ApiKeyId, KeyPrefix, TenantId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    ApiKeyCreated,
    ApiKeyMetadataUpdated,
    ApiKeyPermissionsUpdated,
    ApiKeyRevoked,
    ApiKeyRotated,
}

impl EventKind {
    /// The event's name on the wire and in storage.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKeyCreated => "api_key.created",
            Self::ApiKeyMetadataUpdated => "api_key.metadata_updated",
            Self::ApiKeyPermissionsUpdated => "api_key.permissions_updated",
            Self::ApiKeyRevoked => "api_key.revoked",
            Self::ApiKeyRotated => "api_key.rotated",
        }
    }

    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::ApiKeyCreated,
            Self::ApiKeyMetadataUpdated,
            Self::ApiKeyPermissionsUpdated,
            Self::ApiKeyRevoked,
            Self::ApiKeyRotated,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == name)
    }
}

/// One change to one key. `data` holds the new values of what changed, never
/// the secret or its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainEvent {
    pub kind: EventKind,
    pub key_id: ApiKeyId,
    pub tenant_id: TenantId,
    /// The key's public prefix: the identity the verified-key cache and the
    /// change feed name a key by, so whoever applies the event to a cache
    /// needs no lookup.
    pub key_prefix: KeyPrefix,
    pub actor_user_id: UserId,
    pub occurred_at: DateTime<Utc>,
    pub data: Value,
}
