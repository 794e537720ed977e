//! Micro-benchmark of the hot path of key verification: `authenticate` for a
//! key already in the verified-key cache (parse + checksum, HMAC fingerprint,
//! cache lookup, expiry and allow-list re-check, usage counted in memory).
//!
//! The ports are minimal in-bench fakes; the fake repository counts lookups so
//! the bench can prove that every measured call was a cache hit.
//!
//! `cargo bench -p cola-application`
#![allow(clippy::unwrap_used, missing_docs, missing_debug_implementations)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cola_application::{
    AccessChange, ApiKeyRepository, AttemptLimiter, AuthPath, CacheInvalidation, Clock, HashError,
    HeadersWrite, KeyAdmission, KeyAuthenticator, KeyListFilter, Offboarded, PresentedKeys,
    RecordedEvent, RepositoryError, SecretHash, SecretHasher, ServerDirectory, ServerRepository,
    ServerTokens, StoredCredential, StoredServer, SystemClock, TokenDigest, UsageBatch,
    UsageRecorder, VerifiedKeyCache, follow_access_changes,
};
use cola_domain::{
    ApiKeyId, ApiKeyPermissions, ApiKeySecret, DomainEvent, IpWhitelist, KeyName, KeyPrefix,
    KeyUsage, McpApiKey, NewKey, RegisteredServer, ServerEvent, ServerId, ServerSlug, TenantId,
    UserId,
};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::rngs::OsRng;
use uuid::Uuid;

/// No servers: the bench's caches of servers stay empty.
struct NoServers;

#[async_trait]
impl ServerRepository for NoServers {
    async fn insert(
        &self,
        _: &RegisteredServer,
        _: Option<&[u8]>,
        _: &ServerEvent,
        _: u32,
    ) -> Result<(), RepositoryError> {
        Ok(())
    }
    async fn count(&self, _: TenantId) -> Result<u64, RepositoryError> {
        Ok(0)
    }
    async fn find(
        &self,
        _: TenantId,
        _: ServerId,
    ) -> Result<Option<StoredServer>, RepositoryError> {
        Ok(None)
    }
    async fn find_by_slug(
        &self,
        _: TenantId,
        _: &ServerSlug,
    ) -> Result<Option<StoredServer>, RepositoryError> {
        Ok(None)
    }
    async fn find_slugs(
        &self,
        _: TenantId,
        _: &[ServerSlug],
    ) -> Result<Vec<RegisteredServer>, RepositoryError> {
        Ok(Vec::new())
    }
    async fn list(
        &self,
        _: TenantId,
        _: Option<ServerId>,
        _: u64,
    ) -> Result<Vec<RegisteredServer>, RepositoryError> {
        Ok(Vec::new())
    }
    async fn update(
        &self,
        _: &RegisteredServer,
        _: HeadersWrite<'_>,
        _: &ServerEvent,
    ) -> Result<bool, RepositoryError> {
        Ok(false)
    }
    async fn delete(
        &self,
        _: &RegisteredServer,
        _: &ServerEvent,
    ) -> Result<Option<Vec<KeyPrefix>>, RepositoryError> {
        Ok(None)
    }
    async fn count_with_headers(&self) -> Result<u64, RepositoryError> {
        Ok(0)
    }
    async fn store_token(
        &self,
        _: &RegisteredServer,
        _: &TokenDigest,
        _: &ServerEvent,
    ) -> Result<bool, RepositoryError> {
        Ok(false)
    }
    async fn find_by_token(
        &self,
        _: &TokenDigest,
    ) -> Result<Option<RegisteredServer>, RepositoryError> {
        Ok(None)
    }
}

/// Holds one key; `find_credential` is the only lookup the hot path could make.
struct FakeRepository {
    key: McpApiKey,
    hash: SecretHash,
    lookups: AtomicU64,
}

#[async_trait]
impl ApiKeyRepository for FakeRepository {
    async fn insert(
        &self,
        _: &McpApiKey,
        _: &SecretHash,
        _: &DomainEvent,
        _: u32,
    ) -> Result<(), RepositoryError> {
        Ok(())
    }

    async fn find(&self, _: TenantId, _: ApiKeyId) -> Result<Option<McpApiKey>, RepositoryError> {
        Ok(None)
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
        _: TenantId,
        _: UserId,
        _: DateTime<Utc>,
    ) -> Result<u64, RepositoryError> {
        Ok(0)
    }

    async fn apply_change(&self, _: &McpApiKey, _: &DomainEvent) -> Result<bool, RepositoryError> {
        Ok(false)
    }

    async fn rotate(
        &self,
        _: &McpApiKey,
        _: &cola_domain::Rotation,
        _: &SecretHash,
        _: u32,
    ) -> Result<(), RepositoryError> {
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
        self.lookups.fetch_add(1, Ordering::Relaxed);
        Ok((prefix == self.key.prefix()).then(|| StoredCredential {
            key: self.key.clone(),
            hash: self.hash.clone(),
        }))
    }

    async fn recent_access_changes(&self) -> Result<Vec<AccessChange>, RepositoryError> {
        Ok(Vec::new())
    }

    async fn add_usage(&self, _: &UsageBatch) -> Result<bool, RepositoryError> {
        Ok(true)
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        Ok(())
    }
}

/// "Hashes" by prefixing: no argon2 work, only the cache is measured.
struct FakeHasher;

#[async_trait]
impl SecretHasher for FakeHasher {
    async fn hash(&self, secret: &ApiKeySecret) -> Result<SecretHash, HashError> {
        Ok(SecretHash::new(format!("fake${}", secret.expose())))
    }

    async fn verify(&self, secret: &ApiKeySecret, hash: &SecretHash) -> Result<bool, HashError> {
        Ok(hash.as_str() == format!("fake${}", secret.expose()))
    }

    async fn verify_dummy(&self, _: &ApiKeySecret) -> Result<(), HashError> {
        Ok(())
    }
}

fn cache_hit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let secret = ApiKeySecret::generate(&mut OsRng).unwrap();
    let now = clock.now();
    let key = McpApiKey::restore(
        NewKey {
            id: ApiKeyId::from_uuid(Uuid::now_v7()),
            tenant_id: TenantId::from_uuid(Uuid::now_v7()),
            owner: UserId::from_uuid(Uuid::now_v7()),
            name: KeyName::parse("bench").unwrap(),
            description: None,
            prefix: secret.prefix(),
            permissions: ApiKeyPermissions::default(),
            ip_whitelist: IpWhitelist::parse(&["127.0.0.0/8", "10.0.0.0/8"]).unwrap(),
            rate_limit: None,
            expires_at: now + chrono::Duration::days(365),
        },
        now,
        None,
        KeyUsage::default(),
    );
    let hasher = FakeHasher;
    let hash = runtime.block_on(hasher.hash(&secret)).unwrap();
    let repository = Arc::new(FakeRepository {
        key,
        hash,
        lookups: AtomicU64::new(0),
    });
    let cache = Arc::new(VerifiedKeyCache::new(Duration::from_secs(300)).unwrap());
    let admission = KeyAdmission::new(Arc::new(KeyAuthenticator::new(
        PresentedKeys::new(repository.clone(), Arc::new(hasher)),
        clock.clone(),
        cache.clone(),
        Arc::new(UsageRecorder::new()),
        Arc::new(AttemptLimiter::new(20)),
    )));

    // The cache answers only while its change feed is fresh.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let servers: Arc<dyn ServerRepository> = Arc::new(NoServers);
    let invalidation = Arc::new(CacheInvalidation::new(
        cache.clone(),
        Arc::new(ServerDirectory::new(servers.clone(), None)),
        Arc::new(ServerTokens::new(servers)),
    ));
    runtime.spawn(follow_access_changes(
        repository.clone(),
        invalidation,
        stopped,
    ));
    runtime.block_on(async {
        while !cache.is_fresh() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });

    let presented = secret.expose().to_owned();
    let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let first = runtime
        .block_on(admission.admit(Some(&presented), client))
        .unwrap();
    assert_eq!(first.path, AuthPath::Cold);
    let second = runtime
        .block_on(admission.admit(Some(&presented), client))
        .unwrap();
    assert_eq!(second.path, AuthPath::Hot);
    let lookups_before = repository.lookups.load(Ordering::Relaxed);

    c.bench_function("key_authenticator/authenticate_cache_hit", |b| {
        b.to_async(&runtime).iter(|| async {
            admission
                .admit(Some(std::hint::black_box(&presented)), client)
                .await
                .unwrap()
        });
    });

    // Every measured call must have been a hit: no lookup since the warm-up.
    assert_eq!(repository.lookups.load(Ordering::Relaxed), lookups_before);
    stop.send(true).unwrap();
}

criterion_group!(benches, cache_hit);
criterion_main!(benches);
