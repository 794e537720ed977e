//! The repositories (keys, servers and console sessions) against real
//! databases: every scenario runs on a fresh SQLite file and on a fresh
//! PostgreSQL database.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use cola_application::{
    AccessChange, ApiKeyRepository, Clock, ConsoleSession, ConsoleSessionId,
    ConsoleSessionRepository, Cursor, KeyListFilter, RepositoryError, SecretHasher, SystemClock,
    UsageBatch, UsageDelta,
};
use cola_domain::{
    ApiKeyId, ApiKeyPermissions, ApiKeySecret, EffectiveStatus, EventKind, IpWhitelist, KeyName,
    McpApiKey, NewKey, TenantId, UserId,
};
use cola_e2e::PostgresDatabase;
use cola_infrastructure::{
    Argon2Hasher, Database, DatabaseKind, HasherSettings, SeaOrmApiKeyRepository,
    SeaOrmConsoleSessionRepository, SeaOrmServerRepository, Sealer, SecretsKey,
};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use uuid::Uuid;

struct Fixture {
    repository: Arc<SeaOrmApiKeyRepository>,
    servers: SeaOrmServerRepository,
    sessions: SeaOrmConsoleSessionRepository,
    /// The same database, for its kind.
    database: Database,
    /// A connection of the test's own to the same database, for rows a test
    /// writes behind the repository's back.
    raw: sea_orm::DatabaseConnection,
    hasher: Argon2Hasher,
    // Kept alive for the test's duration; dropped (and deleted) after it.
    _postgres: Option<PostgresDatabase>,
    _dir: Option<TempDir>,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn sqlite() -> Fixture {
    let dir = std::env::temp_dir().join(format!("cola-repo-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/cola.db?mode=rwc", dir.display());
    let database = Database::connect(&url).await.unwrap();
    fixture(database, &url, None, Some(TempDir(dir))).await
}

async fn postgres() -> Fixture {
    let created = PostgresDatabase::create().await;
    let database = Database::connect(&created.url).await.unwrap();
    let url = created.url.clone();
    fixture(database, &url, Some(created), None).await
}

async fn fixture(
    database: Database,
    url: &str,
    postgres: Option<PostgresDatabase>,
    dir: Option<TempDir>,
) -> Fixture {
    let applied = database.migrate().await.unwrap();
    let status = database.migration_status().await.unwrap();
    assert_eq!(
        applied.len(),
        status.len(),
        "a fresh database gets every migration"
    );
    assert_eq!(
        applied,
        status.iter().map(|m| m.name.clone()).collect::<Vec<_>>()
    );
    // Migrating twice is harmless (every instance migrates at start) and
    // applies nothing.
    assert!(database.migrate().await.unwrap().is_empty());
    Fixture {
        repository: Arc::new(SeaOrmApiKeyRepository::new(database.clone())),
        servers: SeaOrmServerRepository::new(database.clone()),
        sessions: SeaOrmConsoleSessionRepository::new(database.clone()),
        database,
        raw: sea_orm::Database::connect(url).await.unwrap(),
        hasher: Argon2Hasher::new(HasherSettings {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            concurrent: 2,
            queue: 64,
        })
        .unwrap(),
        _postgres: postgres,
        _dir: dir,
    }
}

fn now() -> DateTime<Utc> {
    SystemClock.now()
}

fn new_key(
    tenant: TenantId,
    owner: UserId,
    name: &str,
    expires_at: DateTime<Utc>,
) -> (McpApiKey, cola_domain::DomainEvent, ApiKeySecret) {
    let Ok(secret) = ApiKeySecret::generate(&mut test_rng());
    let (key, event) = McpApiKey::issue(
        NewKey {
            id: ApiKeyId::from_uuid(Uuid::now_v7()),
            tenant_id: tenant,
            owner,
            name: KeyName::parse(name).unwrap(),
            description: None,
            prefix: secret.prefix(),
            permissions: ApiKeyPermissions::new(
                true,
                true,
                Some(vec!["whoami".into()]),
                Some(vec!["cola://keys/*".into()]),
            )
            .unwrap(),
            ip_whitelist: IpWhitelist::parse(&["10.0.0.0/8", "2001:db8::1"]).unwrap(),
            rate_limit: None,
            expires_at,
        },
        now(),
    );
    (key, event, secret)
}

/// A generator for test keys (the domain takes any CSPRNG).
fn test_rng() -> rand::rngs::StdRng {
    rand::SeedableRng::from_os_rng()
}

fn tenant() -> (TenantId, UserId) {
    (
        TenantId::from_uuid(Uuid::new_v4()),
        UserId::from_uuid(Uuid::new_v4()),
    )
}

fn filter(
    owner: Option<UserId>,
    status: Option<EffectiveStatus>,
    after: Option<Cursor>,
    limit: u64,
) -> KeyListFilter {
    KeyListFilter {
        owner,
        status,
        after,
        limit,
        now: now(),
    }
}

macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::sqlite().await).await; })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::postgres().await).await; })*
        }
    };
}

on_both_databases!(
    a_stored_key_reads_back_equal_and_only_in_its_tenant,
    listing_filters_by_owner_status_and_cursor,
    the_cap_refuses_and_stores_nothing,
    a_taken_prefix_is_reported,
    a_change_applies_only_to_an_active_key_with_its_event,
    the_credential_lookup_finds_the_hash_by_prefix,
    concurrent_usage_batches_add_up_exactly,
    one_usage_batch_updates_each_key_in_its_own_tenant_only,
    the_same_usage_batch_applied_twice_counts_once,
    the_same_usage_batch_applied_concurrently_counts_once,
    old_usage_batch_ids_are_pruned_and_recent_ones_kept,
    active_keys_are_counted_per_owner_in_their_tenant_only,
    changes_made_from_one_stale_read_keep_each_others_fields,
    the_change_feed_keeps_a_change_from_a_writer_whose_clock_lags,
    the_change_feed_drops_what_the_database_recorded_over_ten_seconds_ago,
    a_rotation_writes_both_keys_and_both_events_or_nothing,
    a_rotated_key_no_longer_counts_against_the_cap,
    offboarding_revokes_every_active_key_of_the_owner_alone,
    a_rate_limit_reads_back_and_changes_with_the_permissions,
    a_registered_server_reads_back_equal_and_only_in_its_tenant,
    a_slug_is_unique_in_its_tenant_only,
    the_server_cap_refuses_the_server_beyond_it_and_stores_nothing,
    concurrent_server_creates_never_exceed_the_cap,
    the_stored_row_holds_no_header_value_in_clear,
    a_server_update_writes_what_changed_with_its_event,
    deleting_a_server_removes_it_and_every_grant_on_it_in_one_go,
    a_minted_token_finds_its_server_until_replaced,
    a_console_session_reads_back_and_ends_only_in_its_tenant,
    offboarding_ends_the_users_console_sessions_and_no_one_elses,
    a_sign_in_forgets_the_expired_sessions_of_its_tenant_alone,
);

/// Stores a new key of `owner`; returns it.
async fn insert(f: &Fixture, tenant: TenantId, owner: UserId, name: &str) -> McpApiKey {
    let (key, event, secret) = new_key(tenant, owner, name, now() + Duration::days(1));
    f.repository
        .insert(&key, &f.hasher.hash(&secret).await.unwrap(), &event, 10)
        .await
        .unwrap();
    key
}

/// Rotates `key` in the domain with `grace`: the rotated copy, the rotation
/// and the successor's hash.
async fn rotated(
    f: &Fixture,
    key: &McpApiKey,
    grace: Duration,
) -> (
    McpApiKey,
    cola_domain::Rotation,
    cola_application::SecretHash,
) {
    let Ok(secret) = ApiKeySecret::generate(&mut test_rng());
    let mut old = key.clone();
    let rotation = old
        .rotate(
            cola_domain::Successor {
                id: ApiKeyId::from_uuid(Uuid::now_v7()),
                prefix: secret.prefix(),
                expires_at: now() + Duration::days(30),
            },
            grace,
            key.owner(),
            now(),
        )
        .unwrap();
    let hash = f.hasher.hash(&secret).await.unwrap();
    (old, rotation, hash)
}

async fn a_rotation_writes_both_keys_and_both_events_or_nothing(f: Fixture) {
    let (tenant, owner) = tenant();
    let key = insert(&f, tenant, owner, "rotating").await;
    let (old, rotation, hash) = rotated(&f, &key, Duration::seconds(60)).await;
    // A second rotation from the same stale read loses, writing nothing.
    let (stale_old, stale_rotation, stale_hash) = rotated(&f, &key, Duration::zero()).await;
    f.repository
        .rotate(&old, &rotation, &hash, 10)
        .await
        .unwrap();
    let lost = f
        .repository
        .rotate(&stale_old, &stale_rotation, &stale_hash, 10)
        .await;
    assert!(matches!(lost, Err(RepositoryError::KeyChanged)), "{lost:?}");
    assert!(
        f.repository
            .find(tenant, stale_rotation.successor.id())
            .await
            .unwrap()
            .is_none()
    );

    let stored = f.repository.find(tenant, key.id()).await.unwrap().unwrap();
    assert_eq!(stored.expires_at(), old.expires_at());
    assert_eq!(stored.replaced_by(), Some(rotation.successor.id()));
    let new = f
        .repository
        .find(tenant, rotation.successor.id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(new.name(), key.name());
    assert_eq!(new.permissions(), key.permissions());
    assert_eq!(new.replaced_by(), None);
    let kinds = |events: Vec<cola_application::RecordedEvent>| -> Vec<EventKind> {
        events.iter().map(|e| e.kind).collect()
    };
    assert_eq!(
        kinds(f.repository.events(tenant, key.id()).await.unwrap()),
        [EventKind::ApiKeyCreated, EventKind::ApiKeyRotated]
    );
    assert_eq!(
        kinds(f.repository.events(tenant, new.id()).await.unwrap()),
        [EventKind::ApiKeyCreated]
    );
    // The rotation reaches the other instances' caches.
    let feed = f.repository.recent_access_changes().await.unwrap();
    assert!(feed.iter().any(|change| change.key_id == key.id()));

    // A revoked key is not rotated by a stale read either.
    let other = insert(&f, tenant, owner, "revoked").await;
    let (stale, stale_rotation, stale_hash) = rotated(&f, &other, Duration::zero()).await;
    let mut revoking = other.clone();
    let event = revoking.revoke(owner, now()).unwrap();
    assert!(f.repository.apply_change(&revoking, &event).await.unwrap());
    let lost = f
        .repository
        .rotate(&stale, &stale_rotation, &stale_hash, 10)
        .await;
    assert!(matches!(lost, Err(RepositoryError::KeyChanged)), "{lost:?}");
}

async fn a_rotated_key_no_longer_counts_against_the_cap(f: Fixture) {
    let (tenant, owner) = tenant();
    let first = insert(&f, tenant, owner, "one").await;
    insert(&f, tenant, owner, "two").await;
    assert_eq!(
        f.repository
            .count_active(tenant, owner, now())
            .await
            .unwrap(),
        2
    );
    // At a cap of 2, the successor takes the rotated key's slot.
    let (old, rotation, hash) = rotated(&f, &first, Duration::hours(1)).await;
    f.repository
        .rotate(&old, &rotation, &hash, 2)
        .await
        .unwrap();
    assert_eq!(
        f.repository
            .count_active(tenant, owner, now())
            .await
            .unwrap(),
        2
    );
    let (key, event, secret) = new_key(tenant, owner, "three", now() + Duration::days(1));
    let refused = f
        .repository
        .insert(&key, &f.hasher.hash(&secret).await.unwrap(), &event, 2)
        .await;
    assert!(
        matches!(refused, Err(RepositoryError::CapReached)),
        "{refused:?}"
    );
}

async fn offboarding_revokes_every_active_key_of_the_owner_alone(f: Fixture) {
    let (tenant, owner) = tenant();
    let admin = UserId::from_uuid(Uuid::new_v4());
    let colleague = UserId::from_uuid(Uuid::new_v4());
    let keys = [
        insert(&f, tenant, owner, "a").await,
        insert(&f, tenant, owner, "b").await,
    ];
    let mut revoked_before = insert(&f, tenant, owner, "c").await;
    let event = revoked_before.revoke(owner, now()).unwrap();
    assert!(
        f.repository
            .apply_change(&revoked_before, &event)
            .await
            .unwrap()
    );
    let theirs = insert(&f, tenant, colleague, "theirs").await;
    // The same user id in another tenant is another user.
    let elsewhere = insert(&f, TenantId::from_uuid(Uuid::new_v4()), owner, "elsewhere").await;

    let revoked = f
        .repository
        .offboard(tenant, owner, admin, now())
        .await
        .unwrap()
        .revoked;
    let mut ids: Vec<ApiKeyId> = revoked.iter().map(McpApiKey::id).collect();
    ids.sort();
    let mut expected: Vec<ApiKeyId> = keys.iter().map(McpApiKey::id).collect();
    expected.sort();
    assert_eq!(ids, expected);
    for key in &keys {
        let stored = f.repository.find(tenant, key.id()).await.unwrap().unwrap();
        assert_eq!(stored.status_at(now()), EffectiveStatus::Revoked);
        assert_eq!(stored.revocation().unwrap().by, admin);
        let events = f.repository.events(tenant, key.id()).await.unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].kind, EventKind::ApiKeyRevoked);
        assert_eq!(events[1].actor_user_id, admin);
    }
    // Revoked before: no second event.
    assert_eq!(
        f.repository
            .events(tenant, revoked_before.id())
            .await
            .unwrap()
            .len(),
        2
    );
    let theirs = f
        .repository
        .find(tenant, theirs.id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(theirs.status_at(now()), EffectiveStatus::Active);
    let elsewhere = f
        .repository
        .find(elsewhere.tenant_id(), elsewhere.id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(elsewhere.status_at(now()), EffectiveStatus::Active);
    assert!(
        f.repository
            .offboard(tenant, owner, admin, now())
            .await
            .unwrap()
            .revoked
            .is_empty()
    );
}

async fn a_rate_limit_reads_back_and_changes_with_the_permissions(f: Fixture) {
    let (tenant, owner) = tenant();
    let key = insert(&f, tenant, owner, "limited").await;
    assert_eq!(key.rate_limit(), None);
    let limit = cola_domain::RateLimit::new(1_000_000, 86_400).unwrap();
    let mut changed = key.clone();
    let event = changed
        .change_access(None, None, Some(Some(limit)), owner, now())
        .unwrap()
        .unwrap();
    assert!(f.repository.apply_change(&changed, &event).await.unwrap());
    let stored = f.repository.find(tenant, key.id()).await.unwrap().unwrap();
    assert_eq!(stored.rate_limit(), Some(limit));
    assert_eq!(
        stored.permissions(),
        key.permissions(),
        "only the limit changed"
    );
    let credential = f
        .repository
        .find_credential(key.prefix())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(credential.key.rate_limit(), Some(limit));
    let mut lifted = stored.clone();
    let event = lifted
        .change_access(None, None, Some(None), owner, now())
        .unwrap()
        .unwrap();
    assert!(f.repository.apply_change(&lifted, &event).await.unwrap());
    let stored = f.repository.find(tenant, key.id()).await.unwrap().unwrap();
    assert_eq!(stored.rate_limit(), None);
}

async fn a_stored_key_reads_back_equal_and_only_in_its_tenant(f: Fixture) {
    let (tenant, owner) = tenant();
    let (key, event, secret) = new_key(tenant, owner, "stored", now() + Duration::days(1));
    let hash = f.hasher.hash(&secret).await.unwrap();
    f.repository.insert(&key, &hash, &event, 10).await.unwrap();

    let found = f.repository.find(tenant, key.id()).await.unwrap().unwrap();
    assert_eq!(found.name(), key.name());
    assert_eq!(found.prefix(), key.prefix());
    assert_eq!(found.permissions(), key.permissions());
    assert_eq!(found.ip_whitelist(), key.ip_whitelist());
    assert_eq!(found.created_at(), key.created_at());
    assert_eq!(found.expires_at(), key.expires_at());
    assert_eq!(found.owner(), owner);

    let other = TenantId::from_uuid(Uuid::new_v4());
    assert!(f.repository.find(other, key.id()).await.unwrap().is_none());
    assert!(
        f.repository
            .list(other, &filter(None, None, None, 10))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        f.repository
            .events(other, key.id())
            .await
            .unwrap()
            .is_empty()
    );
    f.repository.ping().await.unwrap();
}

async fn listing_filters_by_owner_status_and_cursor(f: Fixture) {
    let (tenant, alice) = tenant();
    let bob = UserId::from_uuid(Uuid::new_v4());
    let mut ids = Vec::new();
    for (owner, name) in [(alice, "a1"), (bob, "b1"), (alice, "a2"), (alice, "a3")] {
        let (key, event, secret) = new_key(tenant, owner, name, now() + Duration::days(1));
        f.repository
            .insert(&key, &f.hasher.hash(&secret).await.unwrap(), &event, 10)
            .await
            .unwrap();
        ids.push(key);
    }
    let names = |keys: Vec<McpApiKey>| {
        keys.iter()
            .map(|k| k.name().as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            f.repository
                .list(tenant, &filter(None, None, None, 10))
                .await
                .unwrap()
        ),
        ["a3", "a2", "b1", "a1"]
    );
    assert_eq!(
        names(
            f.repository
                .list(tenant, &filter(Some(alice), None, None, 10))
                .await
                .unwrap()
        ),
        ["a3", "a2", "a1"]
    );
    let first = f
        .repository
        .list(tenant, &filter(Some(alice), None, None, 2))
        .await
        .unwrap();
    let cursor = Cursor(first.last().unwrap().id());
    assert_eq!(
        names(
            f.repository
                .list(tenant, &filter(Some(alice), None, Some(cursor), 2))
                .await
                .unwrap()
        ),
        ["a1"]
    );

    let mut revoked = ids[2].clone();
    let event = revoked.revoke(alice, now()).unwrap();
    assert!(f.repository.apply_change(&revoked, &event).await.unwrap());
    assert_eq!(
        names(
            f.repository
                .list(
                    tenant,
                    &filter(None, Some(EffectiveStatus::Revoked), None, 10)
                )
                .await
                .unwrap()
        ),
        ["a2"]
    );
    assert_eq!(
        names(
            f.repository
                .list(
                    tenant,
                    &filter(None, Some(EffectiveStatus::Active), None, 10)
                )
                .await
                .unwrap()
        ),
        ["a3", "b1", "a1"]
    );
    let later = KeyListFilter {
        now: now() + Duration::days(2),
        ..filter(None, Some(EffectiveStatus::Expired), None, 10)
    };
    assert_eq!(
        names(f.repository.list(tenant, &later).await.unwrap()),
        ["a3", "b1", "a1"]
    );
}

async fn the_cap_refuses_and_stores_nothing(f: Fixture) {
    let (tenant, owner) = tenant();
    for name in ["one", "two"] {
        let (key, event, secret) = new_key(tenant, owner, name, now() + Duration::days(1));
        f.repository
            .insert(&key, &f.hasher.hash(&secret).await.unwrap(), &event, 2)
            .await
            .unwrap();
    }
    let (key, event, secret) = new_key(tenant, owner, "three", now() + Duration::days(1));
    let refused = f
        .repository
        .insert(&key, &f.hasher.hash(&secret).await.unwrap(), &event, 2)
        .await;
    assert!(
        matches!(refused, Err(RepositoryError::CapReached)),
        "{refused:?}"
    );
    assert!(f.repository.find(tenant, key.id()).await.unwrap().is_none());
    assert!(
        f.repository
            .events(tenant, key.id())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        f.repository
            .find_credential(key.prefix())
            .await
            .unwrap()
            .is_none()
    );
}

async fn a_taken_prefix_is_reported(f: Fixture) {
    let (tenant, owner) = tenant();
    let (key, event, secret) = new_key(tenant, owner, "first", now() + Duration::days(1));
    let hash = f.hasher.hash(&secret).await.unwrap();
    f.repository.insert(&key, &hash, &event, 10).await.unwrap();
    // Same prefix, different id.
    let (twin, twin_event) = McpApiKey::issue(
        NewKey {
            id: ApiKeyId::from_uuid(Uuid::now_v7()),
            tenant_id: tenant,
            owner,
            name: KeyName::parse("twin").unwrap(),
            description: None,
            prefix: key.prefix().clone(),
            permissions: ApiKeyPermissions::default(),
            ip_whitelist: IpWhitelist::default(),
            rate_limit: None,
            expires_at: now() + Duration::days(1),
        },
        now(),
    );
    let refused = f.repository.insert(&twin, &hash, &twin_event, 10).await;
    assert!(
        matches!(refused, Err(RepositoryError::PrefixTaken)),
        "{refused:?}"
    );
    assert!(
        f.repository
            .find(tenant, twin.id())
            .await
            .unwrap()
            .is_none()
    );
}

async fn a_change_applies_only_to_an_active_key_with_its_event(f: Fixture) {
    let (tenant, owner) = tenant();
    let (key, event, secret) = new_key(tenant, owner, "changing", now() + Duration::days(1));
    f.repository
        .insert(&key, &f.hasher.hash(&secret).await.unwrap(), &event, 10)
        .await
        .unwrap();

    // Two copies loaded before either change: one renames, one revokes.
    let (mut renaming, mut revoking) = (key.clone(), key.clone());
    let revoked = revoking.revoke(owner, now()).unwrap();
    assert!(
        f.repository
            .apply_change(&revoking, &revoked)
            .await
            .unwrap()
    );
    let rename = renaming
        .update_metadata(Some(KeyName::parse("renamed").unwrap()), None, owner, now())
        .unwrap()
        .unwrap();
    // The stale copy must not resurrect or rename the revoked key.
    assert!(!f.repository.apply_change(&renaming, &rename).await.unwrap());

    let stored = f.repository.find(tenant, key.id()).await.unwrap().unwrap();
    assert_eq!(stored.status_at(now()), EffectiveStatus::Revoked);
    assert_eq!(stored.name().as_str(), "changing");
    let kinds: Vec<EventKind> = f
        .repository
        .events(tenant, key.id())
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, [EventKind::ApiKeyCreated, EventKind::ApiKeyRevoked]);
}

async fn the_credential_lookup_finds_the_hash_by_prefix(f: Fixture) {
    let (tenant, owner) = tenant();
    let (key, event, secret) = new_key(tenant, owner, "credential", now() + Duration::days(1));
    f.repository
        .insert(&key, &f.hasher.hash(&secret).await.unwrap(), &event, 10)
        .await
        .unwrap();
    let stored = f
        .repository
        .find_credential(key.prefix())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.key.id(), key.id());
    assert_eq!(stored.key.tenant_id(), tenant);
    assert!(f.hasher.verify(&secret, &stored.hash).await.unwrap());
    let Ok(other) = ApiKeySecret::generate(&mut test_rng());
    assert!(
        f.repository
            .find_credential(&other.prefix())
            .await
            .unwrap()
            .is_none()
    );
}

async fn concurrent_usage_batches_add_up_exactly(f: Fixture) {
    let (tenant, owner) = tenant();
    let (key, event, secret) = new_key(tenant, owner, "used", now() + Duration::days(1));
    f.repository
        .insert(&key, &f.hasher.hash(&secret).await.unwrap(), &event, 10)
        .await
        .unwrap();
    let base = now();
    // Eight writers (as from several instances), each adding 1..=8 uses.
    let writers = (1..=8u64).map(|n| {
        let repository = Arc::clone(&f.repository);
        let delta = UsageDelta {
            tenant_id: tenant,
            key_id: key.id(),
            count: n,
            last_used_at: base + Duration::seconds(i64::try_from(n).unwrap()),
        };
        tokio::spawn(async move { repository.add_usage(&batch(vec![delta])).await })
    });
    for result in futures_util::future::join_all(writers).await {
        result.unwrap().unwrap();
    }
    let stored = f.repository.find(tenant, key.id()).await.unwrap().unwrap();
    assert_eq!(stored.usage().count, 36);
    assert_eq!(
        stored.usage().last_used_at,
        Some(base + Duration::seconds(8))
    );
    // An older timestamp never moves last_used_at back.
    let stale = UsageDelta {
        tenant_id: tenant,
        key_id: key.id(),
        count: 1,
        last_used_at: base,
    };
    f.repository.add_usage(&batch(vec![stale])).await.unwrap();
    let stored = f.repository.find(tenant, key.id()).await.unwrap().unwrap();
    assert_eq!(
        (stored.usage().count, stored.usage().last_used_at),
        (37, Some(base + Duration::seconds(8)))
    );
}

/// `deltas` as a batch of its own (a new id).
fn batch(deltas: Vec<UsageDelta>) -> UsageBatch {
    UsageBatch {
        id: Uuid::now_v7(),
        deltas,
    }
}

/// A stored key and a batch of `uses` of it.
async fn key_and_uses(f: &Fixture, uses: u64) -> (McpApiKey, UsageBatch) {
    let (tenant, owner) = tenant();
    let key = insert(f, tenant, owner, "used").await;
    let delta = UsageDelta {
        tenant_id: tenant,
        key_id: key.id(),
        count: uses,
        last_used_at: now(),
    };
    (key, batch(vec![delta]))
}

async fn usage_count(f: &Fixture, key: &McpApiKey) -> u64 {
    let stored = f.repository.find(key.tenant_id(), key.id()).await.unwrap();
    stored.unwrap().usage().count
}

async fn the_same_usage_batch_applied_twice_counts_once(f: Fixture) {
    let (key, uses) = key_and_uses(&f, 5).await;
    assert!(f.repository.add_usage(&uses).await.unwrap(), "applied");
    // A retry of a write whose acknowledgement was lost.
    assert!(!f.repository.add_usage(&uses).await.unwrap(), "a no-op");
    assert_eq!(usage_count(&f, &key).await, 5);
    // The same uses under a new id are new uses.
    let again = batch(uses.deltas.clone());
    assert!(f.repository.add_usage(&again).await.unwrap());
    assert_eq!(usage_count(&f, &key).await, 10);
}

async fn the_same_usage_batch_applied_concurrently_counts_once(f: Fixture) {
    let (key, uses) = key_and_uses(&f, 3).await;
    let writers = (0..8).map(|_| {
        let (repository, uses) = (Arc::clone(&f.repository), uses.clone());
        tokio::spawn(async move { repository.add_usage(&uses).await })
    });
    let mut applied = 0;
    for result in futures_util::future::join_all(writers).await {
        if result.unwrap().unwrap() {
            applied += 1;
        }
    }
    assert_eq!(applied, 1, "exactly one writer applies the batch");
    assert_eq!(usage_count(&f, &key).await, 3);
}

async fn set_applied_at(f: &Fixture, id: Uuid, at: DateTime<Utc>) {
    let backend = f.raw.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => "UPDATE usage_batches SET applied_at = $1 WHERE id = $2",
        _ => "UPDATE usage_batches SET applied_at = ? WHERE id = ?",
    };
    let result = f
        .raw
        .execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [at.into(), id.into()],
        ))
        .await
        .unwrap();
    assert_eq!(result.rows_affected(), 1);
}

async fn old_usage_batch_ids_are_pruned_and_recent_ones_kept(f: Fixture) {
    let (key, old) = key_and_uses(&f, 1).await;
    let recent = batch(old.deltas.clone());
    // The first batch a repository applies also prunes: nothing to prune yet.
    f.repository.add_usage(&old).await.unwrap();
    f.repository.add_usage(&recent).await.unwrap();
    set_applied_at(&f, old.id, now() - Duration::days(2)).await;
    let cutoff = now() - cola_application::USAGE_BATCH_RETENTION;
    assert_eq!(f.repository.prune_usage_batches(cutoff).await.unwrap(), 1);
    assert_eq!(f.repository.prune_usage_batches(cutoff).await.unwrap(), 0);
    // The recent id is still known; the pruned one is forgotten.
    assert!(!f.repository.add_usage(&recent).await.unwrap());
    assert!(f.repository.add_usage(&old).await.unwrap());
    assert_eq!(usage_count(&f, &key).await, 3);

    // A fresh repository (a restarted instance) prunes with its first batch.
    set_applied_at(&f, old.id, now() - Duration::days(2)).await;
    let restarted = SeaOrmApiKeyRepository::new(f.database.clone());
    let (_, other) = key_and_uses(&f, 1).await;
    assert!(restarted.add_usage(&other).await.unwrap());
    assert!(restarted.add_usage(&old).await.unwrap(), "pruned meanwhile");
}

async fn one_usage_batch_updates_each_key_in_its_own_tenant_only(f: Fixture) {
    let base = now();
    let mut keys = Vec::new();
    for (i, name) in ["first", "second", "third"].into_iter().enumerate() {
        let (tenant, owner) = tenant();
        let (key, event, secret) = new_key(tenant, owner, name, base + Duration::days(1));
        f.repository
            .insert(&key, &f.hasher.hash(&secret).await.unwrap(), &event, 10)
            .await
            .unwrap();
        keys.push((tenant, key, u64::try_from(i).unwrap() + 1));
    }
    let (stranger, _) = tenant();
    let mut deltas: Vec<UsageDelta> = keys
        .iter()
        .map(|(tenant, key, uses)| UsageDelta {
            tenant_id: *tenant,
            key_id: key.id(),
            count: *uses,
            last_used_at: base,
        })
        .collect();
    // A delta naming a key under another tenant touches nothing.
    deltas.push(UsageDelta {
        tenant_id: stranger,
        key_id: keys[0].1.id(),
        count: 100,
        last_used_at: base + Duration::seconds(60),
    });
    f.repository.add_usage(&batch(deltas)).await.unwrap();
    for (tenant, key, uses) in &keys {
        let stored = f.repository.find(*tenant, key.id()).await.unwrap().unwrap();
        assert_eq!(
            (stored.usage().count, stored.usage().last_used_at),
            (*uses, Some(base)),
            "key {}",
            key.name()
        );
    }
}

async fn active_keys_are_counted_per_owner_in_their_tenant_only(f: Fixture) {
    let (other_tenant, _) = tenant();
    let (tenant, alice) = tenant();
    let bob = UserId::from_uuid(Uuid::new_v4());
    let base = now();
    let mut stored = Vec::new();
    for (tenant, owner, name, days) in [
        (tenant, alice, "soon", 1),
        (tenant, alice, "later", 3),
        (tenant, alice, "revoked", 3),
        (tenant, bob, "bob's", 3),
        // The same user id under another tenant is another user.
        (other_tenant, alice, "elsewhere", 3),
    ] {
        let (key, event, secret) = new_key(tenant, owner, name, base + Duration::days(days));
        f.repository
            .insert(&key, &f.hasher.hash(&secret).await.unwrap(), &event, 10)
            .await
            .unwrap();
        stored.push(key);
    }
    let mut revoked = stored[2].clone();
    let event = revoked.revoke(alice, base).unwrap();
    assert!(f.repository.apply_change(&revoked, &event).await.unwrap());

    let count = |tenant, owner, at| {
        let repository = Arc::clone(&f.repository);
        async move { repository.count_active(tenant, owner, at).await.unwrap() }
    };
    assert_eq!(count(tenant, alice, base).await, 2);
    // Once "soon" has expired, only "later" is active.
    assert_eq!(count(tenant, alice, base + Duration::days(2)).await, 1);
    assert_eq!(count(tenant, bob, base).await, 1);
    assert_eq!(count(other_tenant, alice, base).await, 1);
    assert_eq!(count(other_tenant, bob, base).await, 0);
}

async fn changes_made_from_one_stale_read_keep_each_others_fields(f: Fixture) {
    let (tenant, owner) = tenant();
    let (key, event, secret) = new_key(tenant, owner, "shared", now() + Duration::days(1));
    f.repository
        .insert(&key, &f.hasher.hash(&secret).await.unwrap(), &event, 10)
        .await
        .unwrap();

    // Four requests read the key before any of them writes: two change one
    // field each of the permissions, two one field each of the metadata.
    let (mut a, mut b, mut c, mut d) = (key.clone(), key.clone(), key.clone(), key.clone());
    let permissions = ApiKeyPermissions::new(true, false, None, None).unwrap();
    let list = IpWhitelist::parse(&["192.0.2.0/24"]).unwrap();
    let name = KeyName::parse("renamed").unwrap();
    let description = cola_domain::KeyDescription::parse("described").unwrap();
    let changes = [
        a.update_permissions(Some(permissions.clone()), None, owner, now())
            .unwrap()
            .map(|event| (a, event)),
        b.update_permissions(None, Some(list.clone()), owner, now())
            .unwrap()
            .map(|event| (b, event)),
        c.update_metadata(Some(name.clone()), None, owner, now())
            .unwrap()
            .map(|event| (c, event)),
        d.update_metadata(None, Some(Some(description.clone())), owner, now())
            .unwrap()
            .map(|event| (d, event)),
    ];
    for (copy, event) in changes.into_iter().map(Option::unwrap) {
        assert!(f.repository.apply_change(&copy, &event).await.unwrap());
    }

    let stored = f.repository.find(tenant, key.id()).await.unwrap().unwrap();
    assert_eq!(stored.permissions(), &permissions);
    assert_eq!(stored.ip_whitelist(), &list);
    assert_eq!(stored.name(), &name);
    assert_eq!(stored.description(), Some(&description));
    let kinds: Vec<EventKind> = f
        .repository
        .events(tenant, key.id())
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            EventKind::ApiKeyCreated,
            EventKind::ApiKeyPermissionsUpdated,
            EventKind::ApiKeyPermissionsUpdated,
            EventKind::ApiKeyMetadataUpdated,
            EventKind::ApiKeyMetadataUpdated,
        ]
    );
}

async fn stored_key(f: &Fixture, name: &str) -> (TenantId, UserId, McpApiKey) {
    let (tenant, owner) = tenant();
    let (key, event, secret) = new_key(tenant, owner, name, now() + Duration::days(1));
    f.repository
        .insert(&key, &f.hasher.hash(&secret).await.unwrap(), &event, 10)
        .await
        .unwrap();
    (tenant, owner, key)
}

async fn the_change_feed_keeps_a_change_from_a_writer_whose_clock_lags(f: Fixture) {
    let (tenant, owner, key) = stored_key(&f, "lagging").await;
    // The writing instance's clock is a minute behind: the event's
    // `occurred_at`, and its id, carry that instant.
    let lagging = now() - Duration::seconds(60);
    let mut changed = key.clone();
    let change = changed
        .update_permissions(
            None,
            Some(IpWhitelist::parse(&["198.51.100.7"]).unwrap()),
            owner,
            lagging,
        )
        .unwrap()
        .unwrap();
    assert!(f.repository.apply_change(&changed, &change).await.unwrap());
    let mut revoked = changed.clone();
    let revocation = revoked.revoke(owner, lagging).unwrap();
    assert!(
        f.repository
            .apply_change(&revoked, &revocation)
            .await
            .unwrap()
    );

    let recorded: Vec<_> = f
        .repository
        .events(tenant, key.id())
        .await
        .unwrap()
        .into_iter()
        .filter(|event| event.kind != EventKind::ApiKeyCreated)
        .collect();
    assert_eq!(recorded.len(), 2);
    for event in &recorded {
        assert_eq!(event.occurred_at, lagging);
        let (seconds, _) = event.id.get_timestamp().unwrap().to_unix();
        assert_eq!(i64::try_from(seconds).unwrap(), lagging.timestamp());
    }
    let feed = f.repository.recent_access_changes().await.unwrap();
    let mut seen: Vec<AccessChange> = feed
        .into_iter()
        .filter(|change| change.key_id == key.id())
        .collect();
    seen.sort_by_key(|change| change.event_id);
    let mut expected: Vec<AccessChange> = recorded
        .iter()
        .map(|event| AccessChange {
            event_id: event.id,
            kind: event.kind,
            key_id: key.id(),
            key_prefix: key.prefix().clone(),
        })
        .collect();
    expected.sort_by_key(|change| change.event_id);
    assert_eq!(seen, expected);
}

async fn the_change_feed_drops_what_the_database_recorded_over_ten_seconds_ago(f: Fixture) {
    let (tenant, owner, key) = stored_key(&f, "old news").await;
    // A revocation the database recorded 11 s ago by its own clock, though
    // its id and `occurred_at` say now (a writer whose clock runs ahead).
    let old = Uuid::now_v7();
    let (backend, eleven_seconds_ago) = match f.database.kind() {
        DatabaseKind::Postgres => (
            DbBackend::Postgres,
            "clock_timestamp() - interval '11 seconds'",
        ),
        DatabaseKind::Sqlite => (
            DbBackend::Sqlite,
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-11 seconds')",
        ),
    };
    let placeholders = match backend {
        DbBackend::Postgres => "$1, $2, $3, $4, $5, $6, $7",
        _ => "?, ?, ?, ?, ?, ?, ?",
    };
    f.raw
        .execute_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "INSERT INTO api_key_events \
                 (id, tenant_id, key_id, event_type, actor_user_id, occurred_at, data, recorded_at) \
                 VALUES ({placeholders}, {eleven_seconds_ago})"
            ),
            [
                old.into(),
                tenant.as_uuid().into(),
                key.id().as_uuid().into(),
                EventKind::ApiKeyRevoked.as_str().into(),
                owner.as_uuid().into(),
                now().into(),
                serde_json::json!({ "key_prefix": key.prefix() }).into(),
            ],
        ))
        .await
        .unwrap();
    // A permission change and a rename recorded now: the first is an access
    // change, the second is not.
    let mut changed = key.clone();
    let change = changed
        .update_permissions(Some(ApiKeyPermissions::default()), None, owner, now())
        .unwrap()
        .unwrap();
    assert!(f.repository.apply_change(&changed, &change).await.unwrap());
    let rename = changed
        .update_metadata(Some(KeyName::parse("renamed").unwrap()), None, owner, now())
        .unwrap()
        .unwrap();
    assert!(f.repository.apply_change(&changed, &rename).await.unwrap());

    let recorded = f.repository.events(tenant, key.id()).await.unwrap();
    let fresh = recorded
        .iter()
        .find(|event| event.kind == EventKind::ApiKeyPermissionsUpdated)
        .unwrap();
    let ids: Vec<Uuid> = f
        .repository
        .recent_access_changes()
        .await
        .unwrap()
        .into_iter()
        .filter(|change| change.key_id == key.id())
        .map(|change| change.event_id)
        .collect();
    assert!(recorded.iter().any(|event| event.id == old));
    assert_eq!(ids, [fresh.id]);
}

fn new_server(
    tenant: TenantId,
    slug: &str,
) -> (cola_domain::RegisteredServer, cola_domain::ServerEvent) {
    cola_domain::RegisteredServer::register(
        cola_domain::NewServer {
            id: cola_domain::ServerId::from_uuid(Uuid::now_v7()),
            tenant_id: tenant,
            slug: cola_domain::ServerSlug::parse(slug).unwrap(),
            name: KeyName::parse("GitHub tools").unwrap(),
            url: Some(
                cola_domain::UpstreamUrl::parse(
                    "https://mcp.example.com/mcp",
                    &cola_domain::AllowedNetworks::default(),
                )
                .unwrap(),
            ),
            header_names: vec![cola_domain::HeaderName::parse("Authorization").unwrap()],
            forward_identity: false,
            timeout: cola_domain::ServerTimeout::default(),
        },
        UserId::from_uuid(Uuid::now_v7()),
        now(),
    )
}

/// The event types the audit table holds for `aggregate`, in order.
async fn event_types(f: &Fixture, aggregate: Uuid) -> Vec<String> {
    let backend = f.raw.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "SELECT event_type FROM api_key_events WHERE key_id = $1 ORDER BY id"
        }
        _ => "SELECT event_type FROM api_key_events WHERE key_id = ? ORDER BY id",
    };
    f.raw
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [aggregate.into()],
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<String>("", "event_type").unwrap())
        .collect()
}

async fn a_registered_server_reads_back_equal_and_only_in_its_tenant(f: Fixture) {
    use cola_application::ServerRepository;
    let (tenant, _) = tenant();
    let (server, event) = new_server(tenant, "github");
    f.servers.insert(&server, None, &event, 100).await.unwrap();
    let found = f.servers.find(tenant, server.id()).await.unwrap().unwrap();
    assert_eq!(found.server.slug(), server.slug());
    assert_eq!(found.server.url(), server.url());
    assert_eq!(found.server.header_names(), server.header_names());
    assert_eq!(found.server.created_at(), server.created_at());
    assert!(found.sealed_headers.is_none());
    let by_slug = f.servers.find_by_slug(tenant, server.slug()).await.unwrap();
    assert_eq!(by_slug.map(|s| s.server.id()), Some(server.id()));
    let (other, _) = self::tenant();
    assert!(f.servers.find(other, server.id()).await.unwrap().is_none());
    assert!(
        f.servers
            .find_by_slug(other, server.slug())
            .await
            .unwrap()
            .is_none()
    );
    assert!(f.servers.list(other, None, 10).await.unwrap().is_empty());
    let (second, event) = new_server(tenant, "linear");
    f.servers.insert(&second, None, &event, 100).await.unwrap();
    let listed: Vec<_> = f
        .servers
        .list(tenant, None, 10)
        .await
        .unwrap()
        .iter()
        .map(cola_domain::RegisteredServer::id)
        .collect();
    assert_eq!(listed, [second.id(), server.id()], "newest first");
    let after: Vec<_> = f
        .servers
        .list(tenant, Some(second.id()), 10)
        .await
        .unwrap()
        .iter()
        .map(cola_domain::RegisteredServer::id)
        .collect();
    assert_eq!(after, [server.id()]);
    assert_eq!(
        event_types(&f, server.id().as_uuid()).await,
        ["mcp_server.created"]
    );
}

async fn a_slug_is_unique_in_its_tenant_only(f: Fixture) {
    use cola_application::ServerRepository;
    let (tenant, _) = tenant();
    let (server, event) = new_server(tenant, "github");
    f.servers.insert(&server, None, &event, 100).await.unwrap();
    let (again, event) = new_server(tenant, "github");
    let refused = f.servers.insert(&again, None, &event, 100).await;
    assert!(
        matches!(refused, Err(RepositoryError::SlugTaken)),
        "{refused:?}"
    );
    assert!(event_types(&f, again.id().as_uuid()).await.is_empty());
    let (other, _) = self::tenant();
    let (theirs, event) = new_server(other, "github");
    f.servers.insert(&theirs, None, &event, 100).await.unwrap();
}

async fn the_server_cap_refuses_the_server_beyond_it_and_stores_nothing(f: Fixture) {
    use cola_application::ServerRepository;
    let (tenant, _) = tenant();
    for slug in ["one", "two", "three"] {
        let (server, event) = new_server(tenant, slug);
        f.servers.insert(&server, None, &event, 3).await.unwrap();
    }
    let (fourth, event) = new_server(tenant, "four");
    let refused = f.servers.insert(&fourth, None, &event, 3).await;
    assert!(
        matches!(refused, Err(RepositoryError::CapReached)),
        "{refused:?}"
    );
    assert_eq!(f.servers.count(tenant).await.unwrap(), 3);
    assert!(f.servers.find(tenant, fourth.id()).await.unwrap().is_none());
    assert!(event_types(&f, fourth.id().as_uuid()).await.is_empty());
    // The cap is per tenant.
    let (other, _) = self::tenant();
    let (theirs, event) = new_server(other, "four");
    f.servers.insert(&theirs, None, &event, 3).await.unwrap();
    assert_eq!(f.servers.count(other).await.unwrap(), 1);
}

async fn concurrent_server_creates_never_exceed_the_cap(f: Fixture) {
    use cola_application::ServerRepository;
    let (tenant, _) = tenant();
    let creates = (0..8).map(|n| {
        let servers = f.servers.clone();
        let (server, event) = new_server(tenant, &format!("s{n}"));
        tokio::spawn(async move { servers.insert(&server, None, &event, 3).await })
    });
    let mut created = 0;
    for result in futures_util::future::join_all(creates).await {
        match result.unwrap() {
            Ok(()) => created += 1,
            Err(RepositoryError::CapReached) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(created, 3);
    assert_eq!(f.servers.count(tenant).await.unwrap(), 3);
}

async fn the_stored_row_holds_no_header_value_in_clear(f: Fixture) {
    use cola_application::{CredentialSealer, ServerRepository};
    let (tenant, _) = tenant();
    let (server, event) = new_server(tenant, "github");
    let sealer = Sealer::new(&SecretsKey::generate().unwrap());
    let headers = cola_domain::UpstreamHeaders::parse(vec![(
        "Authorization".into(),
        "Bearer hunter2-upstream".into(),
    )])
    .unwrap();
    let sealed = sealer.seal_headers(tenant, server.id(), &headers).unwrap();
    f.servers
        .insert(&server, Some(&sealed), &event, 100)
        .await
        .unwrap();
    let backend = f.raw.get_database_backend();
    let row = f
        .raw
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT * FROM mcp_servers".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap();
    let stored: Vec<u8> = row.try_get("", "sealed_headers").unwrap();
    assert!(!stored.windows(7).any(|w| w == b"hunter2"));
    let names: serde_json::Value = row.try_get("", "header_names").unwrap();
    assert_eq!(names, serde_json::json!(["Authorization"]));
    let found = f.servers.find(tenant, server.id()).await.unwrap().unwrap();
    let opened = sealer
        .open_headers(
            tenant,
            server.id(),
            found.sealed_headers.as_deref().unwrap(),
        )
        .unwrap();
    assert_eq!(opened, headers);
    assert_eq!(f.servers.count_with_headers().await.unwrap(), 1);
    // The audit trail holds the names only.
    let all_events = f
        .raw
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT CAST(data AS TEXT) AS data FROM api_key_events".to_owned(),
        ))
        .await
        .unwrap();
    for row in all_events {
        let data: String = row.try_get("", "data").unwrap();
        assert!(!data.contains("hunter2"), "{data}");
    }
}

async fn a_server_update_writes_what_changed_with_its_event(f: Fixture) {
    use cola_application::{HeadersWrite, ServerRepository};
    let (tenant, actor) = tenant();
    let (mut server, event) = new_server(tenant, "github");
    f.servers
        .insert(&server, Some(b"old box"), &event, 100)
        .await
        .unwrap();
    let change = server
        .update(
            cola_domain::ServerChanges {
                timeout: cola_domain::ServerTimeout::from_secs(90).ok(),
                header_names: Some(Vec::new()),
                ..Default::default()
            },
            actor,
            now(),
        )
        .unwrap();
    assert!(
        f.servers
            .update(&server, HeadersWrite::Replace(None), &change)
            .await
            .unwrap()
    );
    let found = f.servers.find(tenant, server.id()).await.unwrap().unwrap();
    assert_eq!(found.server.timeout().secs(), 90);
    assert!(found.server.header_names().is_empty());
    assert!(found.sealed_headers.is_none());
    assert_eq!(found.server.name(), server.name());
    // Both events carry the same instant: their order is not the point.
    let mut types = event_types(&f, server.id().as_uuid()).await;
    types.sort();
    assert_eq!(types, ["mcp_server.created", "mcp_server.updated"]);
    // Another tenant's server of the same id cannot be changed.
    let (other, _) = self::tenant();
    let (mut theirs, _) = new_server(other, "github");
    let change = theirs
        .update(
            cola_domain::ServerChanges {
                forward_identity: Some(true),
                ..Default::default()
            },
            actor,
            now(),
        )
        .unwrap();
    assert!(
        !f.servers
            .update(&theirs, HeadersWrite::Keep, &change)
            .await
            .unwrap()
    );
}

async fn deleting_a_server_removes_it_and_every_grant_on_it_in_one_go(f: Fixture) {
    use cola_application::ServerRepository;
    let (tenant, owner) = tenant();
    let (server, event) = new_server(tenant, "github");
    f.servers.insert(&server, None, &event, 100).await.unwrap();
    let grant = cola_domain::ServerGrant::new(
        server.id(),
        server.slug().clone(),
        Some(vec!["search_*".into()]),
        None,
        None,
    )
    .unwrap();
    let (granted, created, _) = new_key(tenant, owner, "granted", now() + Duration::days(1));
    let mut granted_permissions = granted.permissions().clone().with_servers(vec![grant]);
    // Stored as a PATCH would: through the key's own change.
    let mut granted = granted;
    f.repository
        .insert(&granted, &hash(&f).await, &created, 25)
        .await
        .unwrap();
    let change = granted
        .update_permissions(Some(granted_permissions.clone()), None, owner, now())
        .unwrap()
        .unwrap();
    assert!(f.repository.apply_change(&granted, &change).await.unwrap());
    let stored = f
        .repository
        .find(tenant, granted.id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.permissions(), &granted_permissions);
    let (plain, created, _) = new_key(tenant, owner, "plain", now() + Duration::days(1));
    f.repository
        .insert(&plain, &hash(&f).await, &created, 25)
        .await
        .unwrap();

    let deleted = server.delete(owner, now());
    let ungranted = f.servers.delete(&server, &deleted).await.unwrap().unwrap();
    assert_eq!(ungranted, [granted.prefix().clone()]);
    assert!(f.servers.find(tenant, server.id()).await.unwrap().is_none());
    let after = f
        .repository
        .find(tenant, granted.id())
        .await
        .unwrap()
        .unwrap();
    granted_permissions = granted_permissions.without_server(server.id()).unwrap();
    assert_eq!(after.permissions(), &granted_permissions);
    assert!(after.permissions().servers().is_empty());
    let untouched = f
        .repository
        .find(tenant, plain.id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(untouched.permissions(), plain.permissions());
    assert_eq!(
        event_types(&f, server.id().as_uuid()).await,
        ["mcp_server.created", "mcp_server.deleted"]
    );
    let trail: Vec<_> = f
        .repository
        .events(tenant, granted.id())
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        trail,
        [
            EventKind::ApiKeyCreated,
            EventKind::ApiKeyPermissionsUpdated,
            EventKind::ApiKeyPermissionsUpdated
        ]
    );
    // Every instance's key cache hears of it.
    let feed = f.repository.recent_access_changes().await.unwrap();
    assert!(feed.iter().filter(|c| c.key_id == granted.id()).count() >= 2);
    assert!(feed.iter().all(|c| c.key_id != plain.id()));
    // A second delete finds nothing.
    assert!(f.servers.delete(&server, &deleted).await.unwrap().is_none());
}

async fn hash(f: &Fixture) -> cola_application::SecretHash {
    let Ok(secret) = ApiKeySecret::generate(&mut test_rng());
    f.hasher.hash(&secret).await.unwrap()
}

async fn a_minted_token_finds_its_server_until_replaced(f: Fixture) {
    use cola_application::{ServerRepository, TokenDigest};
    use cola_domain::ServerToken;
    let token = || ServerToken::generate(&mut rand::rngs::OsRng).unwrap();
    let (tenant, actor) = tenant();
    let (server, event) = new_server(tenant, "github");
    f.servers.insert(&server, None, &event, 100).await.unwrap();
    let (first, second) = (token(), token());
    let minted = server.mint_token(actor, Utc::now());
    assert!(
        f.servers
            .store_token(&server, &TokenDigest::of(&first), &minted)
            .await
            .unwrap()
    );
    let found = f
        .servers
        .find_by_token(&TokenDigest::of(&first))
        .await
        .unwrap();
    assert_eq!(
        found.map(|s| (s.tenant_id(), s.id())),
        Some((tenant, server.id()))
    );

    let again = server.mint_token(actor, Utc::now());
    f.servers
        .store_token(&server, &TokenDigest::of(&second), &again)
        .await
        .unwrap();
    assert!(
        f.servers
            .find_by_token(&TokenDigest::of(&first))
            .await
            .unwrap()
            .is_none(),
        "the replaced token names nothing"
    );
    assert!(
        f.servers
            .find_by_token(&TokenDigest::of(&second))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        event_types(&f, server.id().as_uuid()).await,
        [
            "mcp_server.created",
            "mcp_server.token_minted",
            "mcp_server.token_minted"
        ]
    );

    // A deleted server's token is gone with it; no row stores the token.
    let (gone, event) = new_server(tenant, "linear");
    f.servers.insert(&gone, None, &event, 100).await.unwrap();
    let lost = token();
    let minted = gone.mint_token(actor, Utc::now());
    f.servers
        .store_token(&gone, &TokenDigest::of(&lost), &minted)
        .await
        .unwrap();
    let deleted = gone.delete(actor, Utc::now());
    f.servers.delete(&gone, &deleted).await.unwrap();
    assert!(
        f.servers
            .find_by_token(&TokenDigest::of(&lost))
            .await
            .unwrap()
            .is_none()
    );
    let minted = gone.mint_token(actor, Utc::now());
    assert!(
        !f.servers
            .store_token(&gone, &TokenDigest::of(&lost), &minted)
            .await
            .unwrap(),
        "nothing is stored for a deleted server"
    );
    let rows = f
        .raw
        .query_all_raw(Statement::from_string(
            f.raw.get_database_backend(),
            "SELECT verify_token_digest AS d FROM mcp_servers".to_owned(),
        ))
        .await
        .unwrap();
    for row in rows {
        let digest: Option<String> = row.try_get("", "d").unwrap();
        if let Some(digest) = digest {
            assert!(!digest.contains("colasrv_"), "only digests are stored");
            assert_eq!(digest.len(), 64);
        }
    }
}

/// A new session of `user` in `tenant`, begun at `at`, lasting 8 hours, as
/// stored; and its id.
fn console_session(
    tenant: TenantId,
    user: UserId,
    at: DateTime<Utc>,
    dev: bool,
) -> (ConsoleSessionId, ConsoleSession) {
    let id = ConsoleSessionId::generate().unwrap();
    let session = ConsoleSession {
        digest: id.digest(),
        tenant_id: tenant,
        user_id: user,
        created_at: at,
        expires_at: at + Duration::hours(8),
        ended_at: None,
        dev,
    };
    (id, session)
}

async fn a_console_session_reads_back_and_ends_only_in_its_tenant(f: Fixture) {
    let (tenant, user) = tenant();
    let (id, session) = console_session(tenant, user, now(), true);
    f.sessions.insert(&session).await.unwrap();
    assert_eq!(
        f.sessions.find(tenant, &id.digest()).await.unwrap(),
        Some(session.clone())
    );
    let elsewhere = TenantId::from_uuid(Uuid::new_v4());
    assert_eq!(
        f.sessions.find(elsewhere, &id.digest()).await.unwrap(),
        None
    );
    assert!(
        !f.sessions
            .end(elsewhere, &id.digest(), now())
            .await
            .unwrap()
    );
    assert_eq!(
        f.sessions
            .find(tenant, &id.digest())
            .await
            .unwrap()
            .unwrap()
            .ended_at,
        None,
        "another tenant cannot end it"
    );

    let at = now();
    assert!(f.sessions.end(tenant, &id.digest(), at).await.unwrap());
    assert!(!f.sessions.end(tenant, &id.digest(), now()).await.unwrap());
    let ended = f
        .sessions
        .find(tenant, &id.digest())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.ended_at, Some(at), "the first end is the one kept");

    // The id itself is nowhere in the table.
    let rows = f
        .raw
        .query_all_raw(Statement::from_string(
            f.raw.get_database_backend(),
            "SELECT id_digest FROM console_sessions",
        ))
        .await
        .unwrap();
    let stored: String = rows[0].try_get("", "id_digest").unwrap();
    assert_eq!(stored, id.digest().to_hex());
    assert_ne!(stored, id.expose());
}

async fn offboarding_ends_the_users_console_sessions_and_no_one_elses(f: Fixture) {
    let (tenant, owner) = tenant();
    let admin = UserId::from_uuid(Uuid::new_v4());
    let colleague = UserId::from_uuid(Uuid::new_v4());
    let elsewhere = TenantId::from_uuid(Uuid::new_v4());
    let theirs = [
        console_session(tenant, owner, now(), false),
        console_session(tenant, owner, now(), false),
    ];
    let (signed_out, signed_out_session) = console_session(tenant, owner, now(), false);
    let others = [
        (tenant, console_session(tenant, colleague, now(), false)),
        // The same user id in another tenant is another user.
        (elsewhere, console_session(elsewhere, owner, now(), false)),
    ];
    for (_, session) in theirs.iter().chain(others.iter().map(|(_, pair)| pair)) {
        f.sessions.insert(session).await.unwrap();
    }
    f.sessions.insert(&signed_out_session).await.unwrap();
    let signed_out_at = now();
    assert!(
        f.sessions
            .end(tenant, &signed_out.digest(), signed_out_at)
            .await
            .unwrap()
    );
    let key = insert(&f, tenant, owner, "theirs").await;

    let at = now();
    let offboarded = f
        .repository
        .offboard(tenant, owner, admin, at)
        .await
        .unwrap();
    assert_eq!(offboarded.revoked.len(), 1);
    assert_eq!(offboarded.revoked[0].id(), key.id());
    assert_eq!(offboarded.console_sessions_ended, 2);
    for (id, _) in &theirs {
        let ended = f
            .sessions
            .find(tenant, &id.digest())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ended.ended_at, Some(at));
    }
    let kept = f
        .sessions
        .find(tenant, &signed_out.digest())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        kept.ended_at,
        Some(signed_out_at),
        "ended once, when signed out"
    );
    for (other_tenant, (id, _)) in &others {
        let untouched = f
            .sessions
            .find(*other_tenant, &id.digest())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(untouched.ended_at, None);
    }
}

async fn a_sign_in_forgets_the_expired_sessions_of_its_tenant_alone(f: Fixture) {
    let (tenant, user) = tenant();
    let elsewhere = TenantId::from_uuid(Uuid::new_v4());
    let yesterday = now() - Duration::days(1);
    let (expired, expired_session) = console_session(tenant, user, yesterday, false);
    let (live, live_session) = console_session(tenant, user, now() - Duration::hours(1), false);
    let (foreign, foreign_session) = console_session(elsewhere, user, yesterday, false);
    // Oldest last: a sign-in clears what expired before it began.
    for session in [&live_session, &expired_session, &foreign_session] {
        f.sessions.insert(session).await.unwrap();
    }
    assert!(
        f.sessions
            .find(tenant, &expired.digest())
            .await
            .unwrap()
            .is_some()
    );

    let (_, signing_in) = console_session(tenant, user, now(), false);
    f.sessions.insert(&signing_in).await.unwrap();
    assert_eq!(
        f.sessions.find(tenant, &expired.digest()).await.unwrap(),
        None
    );
    assert!(
        f.sessions
            .find(tenant, &live.digest())
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        f.sessions
            .find(elsewhere, &foreign.digest())
            .await
            .unwrap()
            .is_some(),
        "another tenant's rows are its own sign-ins' to clear"
    );
}
