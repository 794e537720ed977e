//! The ports the application needs from the outside world. Infrastructure
//! implements them; tests of the whole stack use the real implementations.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cola_domain::{
    ApiKeyId, ApiKeySecret, DomainEvent, EffectiveStatus, EventKind, KeyPrefix, McpApiKey,
    RegisteredServer, Rotation, ServerEvent, ServerId, ServerSlug, ServerToken, TenantId,
    UpstreamHeaders, UserId,
};
use serde_json::Value;
use thiserror::Error;
use uuid::Uuid;

type Source = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Error)]
pub enum RepositoryError {
    /// The database cannot be reached (or timed out): retryable, a 503.
    #[error("the database is unavailable")]
    Unavailable(#[source] Source),
    /// The owner is at the active-key cap (or the tenant at the server
    /// cap); nothing was written.
    #[error("the cap is reached")]
    CapReached,
    /// Another key already has this prefix; nothing was written.
    #[error("the key prefix is taken")]
    PrefixTaken,
    /// The key changed since it was read (revoked, rotated or expired
    /// meanwhile); nothing was written.
    #[error("the key changed meanwhile")]
    KeyChanged,
    /// Another server of the tenant already has this slug; nothing was written.
    #[error("the server slug is taken")]
    SlugTaken,
    /// A stored row does not satisfy the domain's rules.
    #[error("a stored row is corrupt: {0}")]
    Corrupt(String),
    #[error("unexpected database failure")]
    Unexpected(#[source] Source),
}

/// An argon2id PHC string. Never leaves the database layer but to be verified.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash(String);

impl SecretHash {
    #[must_use]
    pub fn new(phc: String) -> Self {
        Self(phc)
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash([redacted])")
    }
}

/// What key verification needs: the key and its hash.
#[derive(Debug, Clone)]
pub struct StoredCredential {
    pub key: McpApiKey,
    pub hash: SecretHash,
}

/// An audit event as stored.
#[derive(Debug, Clone)]
pub struct RecordedEvent {
    pub id: Uuid,
    pub kind: EventKind,
    pub key_id: ApiKeyId,
    pub tenant_id: TenantId,
    pub actor_user_id: UserId,
    pub occurred_at: DateTime<Utc>,
    pub data: Value,
}

/// Keyset pagination position: the id of the last key of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub ApiKeyId);

#[derive(Debug, Clone)]
pub struct KeyListFilter {
    /// `Some` restricts the list to one owner (a member's view).
    pub owner: Option<UserId>,
    pub status: Option<EffectiveStatus>,
    pub after: Option<Cursor>,
    pub limit: u64,
    /// The instant `expired` is judged against.
    pub now: DateTime<Utc>,
}

/// How far back [`ApiKeyRepository::recent_access_changes`] looks.
pub const ACCESS_CHANGE_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// A revocation or permission change of one key, from the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessChange {
    pub event_id: Uuid,
    /// Which change: revoked, permissions changed, rotated.
    pub kind: EventKind,
    pub key_id: ApiKeyId,
    pub key_prefix: KeyPrefix,
}

/// What an offboarding ended.
#[derive(Debug, Clone)]
pub struct Offboarded {
    /// The keys it revoked (those active until then).
    pub revoked: Vec<McpApiKey>,
    /// How many console sessions it ended.
    pub console_sessions_ended: u64,
}

/// Uses of one key since the last flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageDelta {
    pub tenant_id: TenantId,
    pub key_id: ApiKeyId,
    pub count: u64,
    pub last_used_at: DateTime<Utc>,
}

/// Uses taken from the recorder in one go, under an id of their own
/// (UUIDv7) that the repository records with them: the unit that is applied
/// at most once, and retried as it is until it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageBatch {
    pub id: Uuid,
    pub deltas: Vec<UsageDelta>,
}

/// How long a repository remembers an applied batch's id. Far longer than
/// any retry of one batch: the recorder retries a batch whenever it
/// flushes, so only an instance that cannot reach the database for this
/// long (while others prune) could apply a batch twice.
pub const USAGE_BATCH_RETENTION: chrono::Duration = chrono::Duration::days(1);

#[async_trait]
pub trait ApiKeyRepository: Send + Sync + 'static {
    /// Stores a new key and its `created` event in one transaction, unless
    /// the owner would then hold more than `max_active` active keys.
    async fn insert(
        &self,
        key: &McpApiKey,
        hash: &SecretHash,
        event: &DomainEvent,
        max_active: u32,
    ) -> Result<(), RepositoryError>;

    /// How many keys of `owner` are active at `now`. A cheap pre-check
    /// only; `insert` enforces the cap.
    async fn count_active(
        &self,
        tenant: TenantId,
        owner: UserId,
        now: DateTime<Utc>,
    ) -> Result<u64, RepositoryError>;

    async fn find(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
    ) -> Result<Option<McpApiKey>, RepositoryError>;

    /// Newest first.
    async fn list(
        &self,
        tenant: TenantId,
        filter: &KeyListFilter,
    ) -> Result<Vec<McpApiKey>, RepositoryError>;

    /// Writes the change `event` describes (the columns its kind covers) and
    /// the event itself in one transaction, only if the stored key is still
    /// active. Returns whether it was written; `false` means the key was
    /// revoked meanwhile and nothing changed.
    async fn apply_change(
        &self,
        key: &McpApiKey,
        event: &DomainEvent,
    ) -> Result<bool, RepositoryError>;

    /// Rotates `old` (as the domain left it: its expiry pulled in, its
    /// successor named) in one transaction: the old key's new expiry and
    /// successor, the successor's row, and both events — only if the stored
    /// old key is still active and not rotated (`KeyChanged` otherwise), and
    /// unless the owner would then hold more than `max_active` keys that count
    /// against the cap (`CapReached`).
    async fn rotate(
        &self,
        old: &McpApiKey,
        rotation: &Rotation,
        hash: &SecretHash,
        max_active: u32,
    ) -> Result<(), RepositoryError>;

    /// Offboards `owner` in one transaction: revokes every active key of
    /// theirs, one `api_key.revoked` event each (by `actor`), and ends every
    /// open console session of theirs. (Their OAuth grants, not built
    /// yet, are to end here too, in the same transaction, once they exist.)
    async fn offboard(
        &self,
        tenant: TenantId,
        owner: UserId,
        actor: UserId,
        now: DateTime<Utc>,
    ) -> Result<Offboarded, RepositoryError>;

    /// The key's audit trail, oldest first.
    async fn events(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
    ) -> Result<Vec<RecordedEvent>, RepositoryError>;

    /// The one lookup that does not take a tenant: finding which tenant a
    /// presented key belongs to is its purpose. The prefix is globally unique.
    async fn find_credential(
        &self,
        prefix: &KeyPrefix,
    ) -> Result<Option<StoredCredential>, RepositoryError>;

    /// Revocations, permission changes and rotations recorded in the last
    /// [`ACCESS_CHANGE_WINDOW`], by any instance and of any tenant: the feed
    /// that keeps every instance's verified-key cache honest. The window is
    /// measured by the database's clock, against the instant the database
    /// recorded each event, so an instance whose clock is off neither misses
    /// changes nor hides its own. Repeats an event on every read within the
    /// window.
    async fn recent_access_changes(&self) -> Result<Vec<AccessChange>, RepositoryError>;

    /// Applies a batch of usage at most once: in one transaction, records
    /// the batch's id and adds one increment per key (`count = count + n`,
    /// so concurrent writers never lose an increment). A batch whose id is
    /// recorded already changes nothing and is a success (`Ok(false)`): a
    /// retry after a write that committed but whose acknowledgement was
    /// lost counts nothing twice. `Ok(true)`: applied now. Ids are kept for
    /// at least [`USAGE_BATCH_RETENTION`].
    async fn add_usage(&self, batch: &UsageBatch) -> Result<bool, RepositoryError>;

    /// Whether the database answers.
    async fn ping(&self) -> Result<(), RepositoryError>;
}

/// A server as stored: the aggregate and its headers, sealed (`None` when
/// it sends none).
#[derive(Debug, Clone)]
pub struct StoredServer {
    pub server: RegisteredServer,
    pub sealed_headers: Option<Vec<u8>>,
}

/// What an update does to the stored headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadersWrite<'a> {
    Keep,
    /// Replace them whole; `None` removes every header.
    Replace(Option<&'a [u8]>),
}

/// The tenant's registered servers. Every query takes the tenant; every
/// change is written with its event in one transaction.
#[async_trait]
pub trait ServerRepository: Send + Sync + 'static {
    /// Stores a new server and its `created` event; `SlugTaken` when the
    /// tenant already has a server with its slug, `CapReached` (nothing
    /// written) when the tenant would then have more than `max_servers`,
    /// counted so that concurrent inserts cannot pass the cap together.
    async fn insert(
        &self,
        server: &RegisteredServer,
        sealed_headers: Option<&[u8]>,
        event: &ServerEvent,
        max_servers: u32,
    ) -> Result<(), RepositoryError>;

    /// How many servers the tenant has.
    async fn count(&self, tenant: TenantId) -> Result<u64, RepositoryError>;

    async fn find(
        &self,
        tenant: TenantId,
        id: ServerId,
    ) -> Result<Option<StoredServer>, RepositoryError>;

    async fn find_by_slug(
        &self,
        tenant: TenantId,
        slug: &ServerSlug,
    ) -> Result<Option<StoredServer>, RepositoryError>;

    /// The tenant's servers among `slugs` (the ones that exist).
    async fn find_slugs(
        &self,
        tenant: TenantId,
        slugs: &[ServerSlug],
    ) -> Result<Vec<RegisteredServer>, RepositoryError>;

    /// Newest first, after the server `after` (keyset pagination).
    async fn list(
        &self,
        tenant: TenantId,
        after: Option<ServerId>,
        limit: u64,
    ) -> Result<Vec<RegisteredServer>, RepositoryError>;

    /// Writes the columns `event` names (and the headers as `headers`
    /// says) with the event, in one transaction. `false`: the server was
    /// deleted meanwhile and nothing was written.
    async fn update(
        &self,
        server: &RegisteredServer,
        headers: HeadersWrite<'_>,
        event: &ServerEvent,
    ) -> Result<bool, RepositoryError>;

    /// Deletes the server with its `deleted` event and, in the same
    /// transaction, removes every key's grant on it, each with that key's
    /// `api_key.permissions_updated` event (the change feed every
    /// instance's key cache follows). Returns the prefixes of the keys that
    /// lost a grant; `None` when the server was already gone.
    async fn delete(
        &self,
        server: &RegisteredServer,
        event: &ServerEvent,
    ) -> Result<Option<Vec<KeyPrefix>>, RepositoryError>;

    /// How many servers of any tenant hold sealed headers: they cannot be
    /// used without `COLA_SECRETS_KEY`.
    async fn count_with_headers(&self) -> Result<u64, RepositoryError>;

    /// Stores `digest` as the server's verification token, replacing any
    /// earlier one, with its `token_minted` event in one transaction.
    /// `false`: the server was deleted meanwhile and nothing was written.
    async fn store_token(
        &self,
        server: &RegisteredServer,
        digest: &TokenDigest,
        event: &ServerEvent,
    ) -> Result<bool, RepositoryError>;

    /// The server whose verification token has `digest`, in whichever
    /// tenant: the token is what names the calling server (as a key's
    /// prefix names the key).
    async fn find_by_token(
        &self,
        digest: &TokenDigest,
    ) -> Result<Option<RegisteredServer>, RepositoryError>;
}

/// SHA-256 of a server token: what is stored and looked up. A token carries
/// ~178 random bits, so a fast digest is enough (no password-style hashing
/// is needed against guessing) and keeps the verify API's lookup cheap.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    #[must_use]
    pub fn of(token: &ServerToken) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(token.expose().as_bytes()).into())
    }

    /// Lower-case hex, as stored.
    #[must_use]
    pub fn to_hex(&self) -> String {
        use std::fmt::Write;
        self.0
            .iter()
            .fold(String::with_capacity(64), |mut hex, byte| {
                let _ = write!(hex, "{byte:02x}");
                hex
            })
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest([redacted])")
    }
}

#[derive(Debug, Error)]
pub enum ResolveError {
    /// The name has no address.
    #[error("the host name does not resolve")]
    NotFound,
    #[error("the host name could not be resolved")]
    Failed(#[source] Source),
}

/// Turns an upstream's host name into the addresses it would be dialled at.
#[async_trait]
pub trait HostResolver: Send + Sync + 'static {
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<std::net::IpAddr>, ResolveError>;
}

#[derive(Debug, Error)]
pub enum SealError {
    /// Sealed data that does not open under this key for this server: a
    /// row copied from another server, tampered with, or sealed under
    /// another key. Fails closed.
    #[error("sealed data does not open")]
    Corrupt,
    #[error("sealing failed")]
    Failed(#[source] Source),
}

/// Seals a server's upstream headers at rest, bound to the tenant and the
/// server, so sealed headers open only for the server they were sealed for.
pub trait CredentialSealer: Send + Sync + 'static {
    fn seal_headers(
        &self,
        tenant: TenantId,
        server: ServerId,
        headers: &UpstreamHeaders,
    ) -> Result<Vec<u8>, SealError>;

    fn open_headers(
        &self,
        tenant: TenantId,
        server: ServerId,
        sealed: &[u8],
    ) -> Result<UpstreamHeaders, SealError>;
}

#[derive(Debug, Error)]
pub enum HashError {
    /// Every verification slot is busy and the queue is full.
    #[error("key verification capacity is exhausted")]
    Saturated,
    #[error("hashing failed")]
    Failed(#[source] Source),
}

/// Slow, salted hashing of key secrets. Implementations keep the CPU work
/// off the async workers and bounded.
#[async_trait]
pub trait SecretHasher: Send + Sync + 'static {
    async fn hash(&self, secret: &ApiKeySecret) -> Result<SecretHash, HashError>;
    async fn verify(&self, secret: &ApiKeySecret, hash: &SecretHash) -> Result<bool, HashError>;
    /// Spends the same work as a real verification, for unknown prefixes, so
    /// timing does not tell whether a prefix exists.
    async fn verify_dummy(&self, secret: &ApiKeySecret) -> Result<(), HashError>;
}

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock, truncated to microseconds so a stored instant reads back
/// equal on every database.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        let now = Utc::now();
        let micros = now.timestamp_micros();
        DateTime::from_timestamp_micros(micros).unwrap_or(now)
    }
}
