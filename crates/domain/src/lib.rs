//! Cola's domain model: the `McpApiKey` aggregate, the value objects that make
//! an invalid key unrepresentable, and the events a key's changes produce.
//!
//! Pure by design: no I/O, no async, no clock reads (callers pass `now`), no
//! randomness except through a generator the caller hands in.

mod events;
mod expiry;
mod ids;
mod ip_whitelist;
mod key;
mod name;
mod permissions;
mod scope;
mod secret;
mod status;

pub use events::{DomainEvent, EventKind};
pub use expiry::{ExpiryError, ExpiryPolicy, ExpiryRequest, InvalidPolicy};
pub use ids::{ApiKeyId, TenantId, UserId};
pub use ip_whitelist::{
    IpWhitelist, IpWhitelistError, MAX_IP_WHITELIST_ENTRIES, RESERVED_PREFIX, UNREADABLE_CLIENT,
    is_reserved,
};
pub use key::{KeyError, KeyUsage, McpApiKey, NewKey, Revocation};
pub use name::{KeyDescription, KeyName, NameError};
pub use permissions::{
    ApiKeyPermissions, MAX_ALLOWED_ENTRIES, PermissionsError, ResourcePattern, ToolName,
};
pub use scope::{Surface, SurfaceScope};
pub use secret::{ApiKeySecret, KEY_LENGTH, KEY_PREFIX_LENGTH, KeyFormatError, KeyPrefix};
pub use status::{ApiKeyStatus, EffectiveStatus};
