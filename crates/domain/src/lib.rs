//! Cola's domain model: the `McpApiKey` and `RegisteredServer` aggregates,
//! the value objects that make an invalid key or server unrepresentable, and
//! the events their changes produce.
//!
//! Pure by design: no I/O, no async, no clock reads (callers pass `now`), no
//! randomness except through a generator the caller hands in.

mod address;
mod events;
mod expiry;
mod ids;
mod ip_whitelist;
mod key;
mod name;
mod permissions;
mod rate_limit;
mod report;
mod scope;
mod secret;
mod server;
mod server_token;
mod status;

pub use address::{AllowedNetworks, AllowedNetworksError, is_public_address};
pub use events::{DomainEvent, EventKind};
pub use expiry::{ExpiryError, ExpiryPolicy, ExpiryRequest, InvalidPolicy};
pub use ids::{ApiKeyId, ServerId, TenantId, UserId};
pub use ip_whitelist::{
    IpWhitelist, IpWhitelistError, MAX_IP_WHITELIST_ENTRIES, RESERVED_PREFIX, UNREADABLE_CLIENT,
    is_reserved,
};
pub use key::{KeyError, KeyUsage, McpApiKey, NewKey, Revocation, Rotation, Successor};
pub use name::{KeyDescription, KeyName, NameError};
pub use permissions::{
    ApiKeyPermissions, MAX_ALLOWED_ENTRIES, NamePattern, PermissionsChange, PermissionsError,
    ResourcePattern, ServerGrant, is_plain_uri,
};
pub use rate_limit::{MAX_RATE_LIMIT_PER_SECS, MAX_RATE_LIMIT_REQUESTS, RateLimit, RateLimitError};
pub use report::{LeakReport, MAX_REPORT_SOURCE_CHARS, MAX_REPORT_URL_CHARS, ReportError};
pub use scope::{Surface, SurfaceScope};
pub use secret::{ApiKeySecret, KEY_LENGTH, KEY_PREFIX_LENGTH, KeyFormatError, KeyPrefix};
pub use server::{
    DEFAULT_TIMEOUT_SECS, HeaderError, HeaderName, MAX_HEADER_VALUE_BYTES, MAX_TIMEOUT_SECS,
    MAX_UPSTREAM_HEADERS, NewServer, RegisteredServer, ServerChanges, ServerEvent, ServerEventKind,
    ServerSlug, ServerTimeout, SlugError, TimeoutError, UpstreamHeaders, UpstreamHost,
    UpstreamSecret, UpstreamUrl, UrlError,
};
pub use server_token::{ServerToken, ServerTokenFormatError};
pub use status::{ApiKeyStatus, EffectiveStatus};
