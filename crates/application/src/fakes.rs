//! In-memory fakes of the ports, for unit tests of the application's own
//! logic. Repository behaviour itself is tested against real SQLite and
//! PostgreSQL in the infrastructure crate, never against these.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cola_domain::{
    ApiKeyId, ApiKeyPermissions, DomainEvent, EffectiveStatus, IpWhitelist, KeyName, KeyPrefix,
    KeyUsage, McpApiKey, NewKey, NewServer, RegisteredServer, Rotation, ServerEvent, ServerId,
    ServerSlug, ServerTimeout, TenantId, UserId,
};
use std::sync::Arc;

use uuid::Uuid;

use crate::auth::VerifiedKeyCache;
use crate::invalidation::CacheInvalidation;
use crate::servers::ServerDirectory;
use crate::verify::ServerTokens;

use crate::ports::{
    AccessChange, ApiKeyRepository, HeadersWrite, KeyListFilter, Offboarded, RecordedEvent,
    RepositoryError, SecretHash, ServerRepository, StoredCredential, StoredServer, TokenDigest,
    UsageBatch,
};

/// Keys by prefix; revocation edits the stored copy, as a write would.
#[derive(Default)]
pub(crate) struct MemoryRepository {
    keys: Mutex<HashMap<KeyPrefix, McpApiKey>>,
    /// Every usage batch applied, in order; each id at most once, as the
    /// port promises.
    pub(crate) usage_batches: Mutex<Vec<UsageBatch>>,
    /// The id of every usage write attempted, in order.
    pub(crate) usage_attempts: Mutex<Vec<Uuid>>,
    /// How many of the next usage writes fail (the database is away).
    pub(crate) failing_usage_writes: Mutex<u32>,
    /// How many of the next usage writes commit and then fail: the
    /// acknowledgement is lost, the write is not.
    pub(crate) lost_acknowledgements: Mutex<u32>,
    /// While held (by a test), usage writes wait before applying.
    pub(crate) usage_gate: tokio::sync::Mutex<()>,
    /// How many keys were inserted through the port.
    pub(crate) inserts: Mutex<usize>,
}

/// An active key of `owner` in `tenant`, expiring in 30 days.
pub(crate) fn active_key(tenant: TenantId, owner: UserId, prefix: KeyPrefix) -> McpApiKey {
    let now = Utc::now();
    McpApiKey::restore(
        NewKey {
            id: ApiKeyId::from_uuid(Uuid::now_v7()),
            tenant_id: tenant,
            owner,
            name: KeyName::parse("test").expect("name"),
            description: None,
            prefix,
            permissions: ApiKeyPermissions::default(),
            ip_whitelist: IpWhitelist::default(),
            rate_limit: None,
            expires_at: now + chrono::Duration::days(30),
        },
        now,
        None,
        KeyUsage::default(),
    )
}

/// A verify-only server of `tenant` with this slug.
pub(crate) fn registered_server(tenant: TenantId, slug: &str) -> RegisteredServer {
    RegisteredServer::register(
        NewServer {
            id: ServerId::from_uuid(Uuid::now_v7()),
            tenant_id: tenant,
            slug: ServerSlug::parse(slug).expect("slug"),
            name: KeyName::parse(slug).expect("name"),
            url: None,
            header_names: Vec::new(),
            forward_identity: false,
            timeout: ServerTimeout::default(),
        },
        UserId::from_uuid(Uuid::now_v7()),
        Utc::now(),
    )
    .0
}

impl MemoryRepository {
    /// The uses of `key` applied so far, over every batch.
    pub(crate) fn usage_of(&self, key: ApiKeyId) -> u64 {
        self.usage_batches
            .lock()
            .expect("batches")
            .iter()
            .flat_map(|batch| &batch.deltas)
            .filter(|delta| delta.key_id == key)
            .map(|delta| delta.count)
            .sum()
    }

    pub(crate) fn add(&self, key: McpApiKey) {
        self.keys
            .lock()
            .expect("keys")
            .insert(key.prefix().clone(), key);
    }

    pub(crate) fn revoke(&self, prefix: &KeyPrefix) {
        let mut keys = self.keys.lock().expect("keys");
        let key = keys.get_mut(prefix).expect("stored key");
        let _ = key.revoke(key.owner(), Utc::now());
    }
}

#[async_trait]
impl ApiKeyRepository for MemoryRepository {
    async fn insert(
        &self,
        key: &McpApiKey,
        _: &SecretHash,
        _: &DomainEvent,
        _: u32,
    ) -> Result<(), RepositoryError> {
        *self.inserts.lock().expect("inserts") += 1;
        self.add(key.clone());
        Ok(())
    }
    async fn find(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
    ) -> Result<Option<McpApiKey>, RepositoryError> {
        let keys = self.keys.lock().expect("keys");
        Ok(keys
            .values()
            .find(|key| key.tenant_id() == tenant && key.id() == id)
            .cloned())
    }
    async fn list(
        &self,
        _: TenantId,
        _: &KeyListFilter,
    ) -> Result<Vec<McpApiKey>, RepositoryError> {
        Ok(Vec::new())
    }
    async fn count_active(
        &self,
        tenant: TenantId,
        owner: UserId,
        now: DateTime<Utc>,
    ) -> Result<u64, RepositoryError> {
        let keys = self.keys.lock().expect("keys");
        let active = keys
            .values()
            .filter(|key| key.tenant_id() == tenant && key.owner() == owner)
            .filter(|key| key.status_at(now) == EffectiveStatus::Active)
            .count();
        Ok(u64::try_from(active).unwrap_or(u64::MAX))
    }

    /// Stores the changed key, as a write would.
    async fn apply_change(
        &self,
        key: &McpApiKey,
        _: &DomainEvent,
    ) -> Result<bool, RepositoryError> {
        self.add(key.clone());
        Ok(true)
    }
    async fn rotate(
        &self,
        old: &McpApiKey,
        rotation: &Rotation,
        _: &SecretHash,
        _: u32,
    ) -> Result<(), RepositoryError> {
        *self.inserts.lock().expect("inserts") += 1;
        self.add(old.clone());
        self.add(rotation.successor.clone());
        Ok(())
    }
    async fn offboard(
        &self,
        _: TenantId,
        _: UserId,
        _: UserId,
        _: DateTime<Utc>,
    ) -> Result<Offboarded, RepositoryError> {
        Ok(Offboarded {
            revoked: Vec::new(),
            console_sessions_ended: 0,
        })
    }
    async fn events(
        &self,
        _: TenantId,
        _: ApiKeyId,
    ) -> Result<Vec<RecordedEvent>, RepositoryError> {
        Ok(Vec::new())
    }
    async fn find_credential(
        &self,
        prefix: &KeyPrefix,
    ) -> Result<Option<StoredCredential>, RepositoryError> {
        Ok(self
            .keys
            .lock()
            .expect("keys")
            .get(prefix)
            .map(|key| StoredCredential {
                key: key.clone(),
                hash: SecretHash::new(format!("fake:{}", key.prefix())),
            }))
    }
    async fn recent_access_changes(&self) -> Result<Vec<AccessChange>, RepositoryError> {
        Ok(Vec::new())
    }
    async fn add_usage(&self, batch: &UsageBatch) -> Result<bool, RepositoryError> {
        self.usage_attempts.lock().expect("attempts").push(batch.id);
        drop(self.usage_gate.lock().await);
        {
            let mut failing = self.failing_usage_writes.lock().expect("failing");
            if *failing > 0 {
                *failing -= 1;
                return Err(RepositoryError::Unavailable("the database is away".into()));
            }
        }
        let applied = {
            let mut batches = self.usage_batches.lock().expect("batches");
            let known = batches.iter().any(|held| held.id == batch.id);
            if !known {
                batches.push(batch.clone());
            }
            !known
        };
        let mut lost = self.lost_acknowledgements.lock().expect("lost");
        if *lost > 0 {
            *lost -= 1;
            return Err(RepositoryError::Unavailable(
                "committed, then the connection dropped".into(),
            ));
        }
        Ok(applied)
    }
    async fn ping(&self) -> Result<(), RepositoryError> {
        Ok(())
    }
}

/// Servers in memory; counts slug lookups so cache tests can tell a hit
/// from a load.
#[derive(Default)]
pub(crate) struct MemoryServers {
    pub(crate) servers: Mutex<Vec<StoredServer>>,
    pub(crate) slug_lookups: Mutex<usize>,
    pub(crate) tokens: Mutex<Vec<(TokenDigest, ServerId)>>,
    pub(crate) token_lookups: Mutex<usize>,
    /// How many servers were inserted through the port (refused ones too).
    pub(crate) inserts: Mutex<usize>,
}

impl MemoryServers {
    pub(crate) fn add(&self, server: RegisteredServer) {
        self.servers.lock().expect("servers").push(StoredServer {
            server,
            sealed_headers: None,
        });
    }
}

#[async_trait]
impl ServerRepository for MemoryServers {
    async fn insert(
        &self,
        server: &RegisteredServer,
        sealed_headers: Option<&[u8]>,
        _: &ServerEvent,
        max_servers: u32,
    ) -> Result<(), RepositoryError> {
        *self.inserts.lock().expect("inserts") += 1;
        let mut servers = self.servers.lock().expect("servers");
        let tenant = servers
            .iter()
            .filter(|held| held.server.tenant_id() == server.tenant_id());
        if tenant
            .clone()
            .any(|held| held.server.slug() == server.slug())
        {
            return Err(RepositoryError::SlugTaken);
        }
        if tenant.count() >= usize::try_from(max_servers).unwrap_or(usize::MAX) {
            return Err(RepositoryError::CapReached);
        }
        servers.push(StoredServer {
            server: server.clone(),
            sealed_headers: sealed_headers.map(<[u8]>::to_vec),
        });
        Ok(())
    }

    async fn count(&self, tenant: TenantId) -> Result<u64, RepositoryError> {
        let servers = self.servers.lock().expect("servers");
        let count = servers
            .iter()
            .filter(|held| held.server.tenant_id() == tenant)
            .count();
        Ok(u64::try_from(count).unwrap_or(u64::MAX))
    }

    async fn find(
        &self,
        tenant: TenantId,
        id: ServerId,
    ) -> Result<Option<StoredServer>, RepositoryError> {
        let servers = self.servers.lock().expect("servers");
        Ok(servers
            .iter()
            .find(|held| held.server.tenant_id() == tenant && held.server.id() == id)
            .cloned())
    }

    async fn find_by_slug(
        &self,
        tenant: TenantId,
        slug: &ServerSlug,
    ) -> Result<Option<StoredServer>, RepositoryError> {
        *self.slug_lookups.lock().expect("lookups") += 1;
        let servers = self.servers.lock().expect("servers");
        Ok(servers
            .iter()
            .find(|held| held.server.tenant_id() == tenant && held.server.slug() == slug)
            .cloned())
    }

    async fn find_slugs(
        &self,
        tenant: TenantId,
        slugs: &[ServerSlug],
    ) -> Result<Vec<RegisteredServer>, RepositoryError> {
        let servers = self.servers.lock().expect("servers");
        Ok(servers
            .iter()
            .filter(|held| held.server.tenant_id() == tenant && slugs.contains(held.server.slug()))
            .map(|held| held.server.clone())
            .collect())
    }

    async fn list(
        &self,
        tenant: TenantId,
        _: Option<ServerId>,
        _: u64,
    ) -> Result<Vec<RegisteredServer>, RepositoryError> {
        let servers = self.servers.lock().expect("servers");
        Ok(servers
            .iter()
            .filter(|held| held.server.tenant_id() == tenant)
            .map(|held| held.server.clone())
            .collect())
    }

    async fn update(
        &self,
        server: &RegisteredServer,
        headers: HeadersWrite<'_>,
        _: &ServerEvent,
    ) -> Result<bool, RepositoryError> {
        let mut servers = self.servers.lock().expect("servers");
        let Some(held) = servers
            .iter_mut()
            .find(|held| held.server.id() == server.id())
        else {
            return Ok(false);
        };
        held.server = server.clone();
        if let HeadersWrite::Replace(sealed) = headers {
            held.sealed_headers = sealed.map(<[u8]>::to_vec);
        }
        Ok(true)
    }

    async fn delete(
        &self,
        server: &RegisteredServer,
        _: &ServerEvent,
    ) -> Result<Option<Vec<KeyPrefix>>, RepositoryError> {
        let mut servers = self.servers.lock().expect("servers");
        let before = servers.len();
        servers.retain(|held| held.server.id() != server.id());
        Ok((servers.len() < before).then(Vec::new))
    }

    async fn count_with_headers(&self) -> Result<u64, RepositoryError> {
        let servers = self.servers.lock().expect("servers");
        let count = servers
            .iter()
            .filter(|h| h.sealed_headers.is_some())
            .count();
        Ok(u64::try_from(count).unwrap_or(u64::MAX))
    }

    async fn store_token(
        &self,
        server: &RegisteredServer,
        digest: &TokenDigest,
        _: &ServerEvent,
    ) -> Result<bool, RepositoryError> {
        let exists = self
            .servers
            .lock()
            .expect("servers")
            .iter()
            .any(|held| held.server.id() == server.id());
        let mut tokens = self.tokens.lock().expect("tokens");
        tokens.retain(|(_, id)| *id != server.id());
        if exists {
            tokens.push((*digest, server.id()));
        }
        Ok(exists)
    }

    async fn find_by_token(
        &self,
        digest: &TokenDigest,
    ) -> Result<Option<RegisteredServer>, RepositoryError> {
        *self.token_lookups.lock().expect("lookups") += 1;
        let tokens = self.tokens.lock().expect("tokens");
        let Some((_, id)) = tokens.iter().find(|(held, _)| held == digest) else {
            return Ok(None);
        };
        let servers = self.servers.lock().expect("servers");
        Ok(servers
            .iter()
            .find(|held| held.server.id() == *id)
            .map(|held| held.server.clone()))
    }
}

/// The caches of one instance over `servers`, for a service under test.
pub(crate) fn invalidation(servers: Arc<dyn ServerRepository>) -> Arc<CacheInvalidation> {
    Arc::new(CacheInvalidation::new(
        Arc::new(VerifiedKeyCache::new(std::time::Duration::from_secs(30)).expect("OS random")),
        Arc::new(ServerDirectory::new(Arc::clone(&servers), None)),
        Arc::new(ServerTokens::new(servers)),
    ))
}
