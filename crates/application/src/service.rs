//! `ApiKeyService`: the key-management use cases, one method each, each
//! taking the acting principal first.

use std::sync::Arc;

use cola_domain::{
    ApiKeyId, ApiKeySecret, EventKind, ExpiryPolicy, KeyError, McpApiKey, NewKey, Successor,
    TenantId, UserId,
};
use rand::rngs::OsRng;
use tracing::instrument;
use uuid::Uuid;

use crate::dto::{
    CreateKeyRequest, CreatedKeyView, EventView, KeyPage, KeyView, KnownServers, ListKeysQuery,
    OffboardView, RotateKeyRequest, UpdateMetadataRequest, UpdatePermissionsRequest, encode_cursor,
};
use crate::error::{AppError, FieldErrors};
use crate::invalidation::{CacheInvalidation, CommittedChange};
use crate::ports::{
    ApiKeyRepository, Clock, Cursor, KeyListFilter, RepositoryError, SecretHasher, ServerRepository,
};
use crate::principal::Principal;

/// How many times a create retries when a freshly generated prefix collides
/// (≈71 random bits: practically never).
const PREFIX_ATTEMPTS: usize = 3;

/// What a leak report found. Only the log and the secret-scanning answer
/// tell these apart; the public report answers every one alike.
#[derive(Debug, Clone, Copy)]
pub struct KeyPolicy {
    pub expiry: ExpiryPolicy,
    pub max_active_keys_per_user: u32,
}

pub struct ApiKeyService {
    repository: Arc<dyn ApiKeyRepository>,
    /// To check the servers a key's grants name.
    servers: Arc<dyn ServerRepository>,
    hasher: Arc<dyn SecretHasher>,
    clock: Arc<dyn Clock>,
    /// Told of every committed change, so the caches follow it.
    invalidation: Arc<CacheInvalidation>,
    policy: KeyPolicy,
}

impl std::fmt::Debug for ApiKeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyService")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl ApiKeyService {
    #[must_use]
    pub fn new(
        repository: Arc<dyn ApiKeyRepository>,
        servers: Arc<dyn ServerRepository>,
        hasher: Arc<dyn SecretHasher>,
        clock: Arc<dyn Clock>,
        invalidation: Arc<CacheInvalidation>,
        policy: KeyPolicy,
    ) -> Self {
        Self {
            repository,
            servers,
            hasher,
            clock,
            invalidation,
            policy,
        }
    }

    /// Issues a key owned by the caller. The response is the only place the
    /// secret ever appears.
    #[instrument(name = "create key", skip_all, fields(tenant = %actor.tenant_id, user = %actor.user_id))]
    pub async fn create(
        &self,
        actor: Principal,
        request: CreateKeyRequest,
    ) -> Result<CreatedKeyView, AppError> {
        let now = self.clock.now();
        let known = self
            .known_servers(actor.tenant_id, &request.server_slugs())
            .await?;
        let valid = request
            .into_command(&self.policy.expiry, &known, now)
            .map_err(AppError::Invalid)?;
        let expires_at = valid.expires_at;

        let max = self.policy.max_active_keys_per_user;
        // Refused before any argon2 work: a hash costs a core for tens of
        // milliseconds, and creates that were bound to fail at the cap could
        // otherwise take the hashing capacity that key verification needs.
        // `insert` still enforces the cap against concurrent creates.
        let active = self
            .repository
            .count_active(actor.tenant_id, actor.user_id, now)
            .await?;
        if active >= u64::from(max) {
            return Err(AppError::LimitReached { max });
        }

        for _ in 0..PREFIX_ATTEMPTS {
            let secret = generate_secret()?;
            let hash = self.hasher.hash(&secret).await.map_err(hash_error)?;
            let (key, event) = McpApiKey::issue(
                NewKey {
                    id: ApiKeyId::from_uuid(Uuid::now_v7()),
                    tenant_id: actor.tenant_id,
                    owner: actor.user_id,
                    name: valid.name.clone(),
                    description: valid.description.clone(),
                    prefix: secret.prefix(),
                    permissions: valid.permissions.clone(),
                    ip_whitelist: valid.ip_whitelist.clone(),
                    rate_limit: valid.rate_limit,
                    expires_at,
                },
                now,
            );
            match self.repository.insert(&key, &hash, &event, max).await {
                Ok(()) => {
                    self.invalidation.apply(&event);
                    tracing::info!(key_prefix = %key.prefix(), key_id = %key.id(), "key created");
                    return Ok(CreatedKeyView {
                        view: KeyView::of(&key, now),
                        key: secret,
                    });
                }
                Err(RepositoryError::PrefixTaken) => {}
                Err(RepositoryError::CapReached) => return Err(AppError::LimitReached { max }),
                Err(other) => return Err(other.into()),
            }
        }
        Err(AppError::Unexpected(
            "could not generate a unique key prefix".into(),
        ))
    }

    #[instrument(name = "list keys", skip_all, fields(tenant = %actor.tenant_id, user = %actor.user_id))]
    pub async fn list(&self, actor: Principal, query: ListKeysQuery) -> Result<KeyPage, AppError> {
        let valid = query.into_valid().map_err(AppError::Invalid)?;
        let now = self.clock.now();
        let filter = KeyListFilter {
            owner: (actor.role != crate::Role::Admin).then_some(actor.user_id),
            status: valid.status,
            after: valid.after,
            // One extra row tells whether another page exists.
            limit: valid.limit + 1,
            now,
        };
        let mut keys = self.repository.list(actor.tenant_id, &filter).await?;
        let more = keys.len() as u64 > valid.limit;
        keys.truncate(usize::try_from(valid.limit).unwrap_or(usize::MAX));
        let next_cursor = if more {
            keys.last().map(|key| encode_cursor(Cursor(key.id())))
        } else {
            None
        };
        Ok(KeyPage {
            items: keys.iter().map(|key| KeyView::of(key, now)).collect(),
            next_cursor,
        })
    }

    #[instrument(name = "get key", skip_all, fields(tenant = %actor.tenant_id, key_id = %id))]
    pub async fn get(&self, actor: Principal, id: ApiKeyId) -> Result<KeyView, AppError> {
        let key = self.visible_key(actor, id).await?;
        Ok(KeyView::of(&key, self.clock.now()))
    }

    #[instrument(name = "update key metadata", skip_all, fields(tenant = %actor.tenant_id, key_id = %id))]
    pub async fn update_metadata(
        &self,
        actor: Principal,
        id: ApiKeyId,
        request: UpdateMetadataRequest,
    ) -> Result<KeyView, AppError> {
        let (name, description) = request.into_valid().map_err(AppError::Invalid)?;
        let mut key = self.visible_key(actor, id).await?;
        let now = self.clock.now();
        let event = key
            .update_metadata(name, description, actor.user_id, now)
            .map_err(key_error)?;
        self.persist(&key, event).await?;
        Ok(KeyView::of(&key, now))
    }

    /// Changes the permission fields given (the others keep their values),
    /// the allow-list and/or the rate limit. Takes effect on the next MCP
    /// request: this instance's verified-key cache forgets the key before
    /// the call returns.
    #[instrument(name = "update key permissions", skip_all, fields(tenant = %actor.tenant_id, key_id = %id))]
    pub async fn update_permissions(
        &self,
        actor: Principal,
        id: ApiKeyId,
        request: UpdatePermissionsRequest,
    ) -> Result<KeyView, AppError> {
        let known = self
            .known_servers(actor.tenant_id, &request.server_slugs())
            .await?;
        let change = request.into_valid(&known).map_err(AppError::Invalid)?;
        let mut key = self.visible_key(actor, id).await?;
        let now = self.clock.now();
        // Applied to the key as stored: what the PATCH leaves out stays.
        let permissions = change
            .permissions
            .map(|given| key.permissions().amended(given))
            .transpose()
            .map_err(|error| {
                AppError::Invalid(FieldErrors::single("permissions", error.to_string()))
            })?;
        let event = key
            .change_access(
                permissions,
                change.ip_whitelist,
                change.rate_limit,
                actor.user_id,
                now,
            )
            .map_err(key_error)?;
        self.persist(&key, event).await?;
        Ok(KeyView::of(&key, now))
    }

    /// Revokes a key; idempotent. Effective on this instance's next request.
    #[instrument(name = "revoke key", skip_all, fields(tenant = %actor.tenant_id, key_id = %id))]
    pub async fn revoke(&self, actor: Principal, id: ApiKeyId) -> Result<(), AppError> {
        let mut key = self.visible_key(actor, id).await?;
        if let Some(event) = key.revoke(actor.user_id, self.clock.now()) {
            // `false`: revoked concurrently by someone else, which is the
            // outcome asked for.
            self.repository.apply_change(&key, &event).await?;
            tracing::info!(key_prefix = %key.prefix(), "key revoked");
        }
        // Applied whether or not this call revoked it: a key revoked a
        // moment ago on another instance may still be remembered here until
        // the change feed brings that event, and after this answer it must
        // not be admitted here.
        self.invalidation.apply(CommittedChange::Key {
            kind: EventKind::ApiKeyRevoked,
            prefix: key.prefix(),
        });
        Ok(())
    }

    /// Replaces a key by a new one with the same name, description,
    /// permissions, allow-list, rate limit and owner; the old key stays
    /// usable for the grace period (never past its own expiry). One
    /// transaction writes both keys and both events; this instance forgets
    /// the old key before returning, the others within the change feed's
    /// bound. A rotation needs no free slot under the cap: the new key takes
    /// the old one's.
    #[instrument(name = "rotate key", skip_all, fields(tenant = %actor.tenant_id, key_id = %id))]
    pub async fn rotate(
        &self,
        actor: Principal,
        id: ApiKeyId,
        request: RotateKeyRequest,
    ) -> Result<CreatedKeyView, AppError> {
        let now = self.clock.now();
        let command = request
            .into_command(&self.policy.expiry, now)
            .map_err(AppError::Invalid)?;
        let current = self.visible_key(actor, id).await?;
        let max = self.policy.max_active_keys_per_user;
        for _ in 0..PREFIX_ATTEMPTS {
            let secret = generate_secret()?;
            let mut old = current.clone();
            // Decided by the domain before any argon2 work: a key that
            // cannot be rotated costs no hash.
            let rotation = old
                .rotate(
                    Successor {
                        id: ApiKeyId::from_uuid(Uuid::now_v7()),
                        prefix: secret.prefix(),
                        expires_at: command.expires_at,
                    },
                    command.grace,
                    actor.user_id,
                    now,
                )
                .map_err(key_error)?;
            let hash = self.hasher.hash(&secret).await.map_err(hash_error)?;
            match self.repository.rotate(&old, &rotation, &hash, max).await {
                Ok(()) => {
                    self.invalidation.apply(&rotation.rotated);
                    self.invalidation.apply(&rotation.created);
                    let new = &rotation.successor;
                    tracing::info!(
                        key_prefix = %old.prefix(),
                        replaced_by = %new.prefix(),
                        grace_secs = command.grace.num_seconds(),
                        "key rotated"
                    );
                    return Ok(CreatedKeyView {
                        view: KeyView::of(new, now),
                        key: secret,
                    });
                }
                Err(RepositoryError::PrefixTaken) => {}
                Err(RepositoryError::CapReached) => return Err(AppError::LimitReached { max }),
                Err(RepositoryError::KeyChanged) => return Err(AppError::KeyChanged),
                Err(other) => return Err(other.into()),
            }
        }
        Err(AppError::Unexpected(
            "could not generate a unique key prefix".into(),
        ))
    }

    /// Revokes every active key of `user` (an admin: any user of the tenant;
    /// a member: only themself), with one event per key, and ends their
    /// console sessions, all in one transaction. Their OAuth grants (not
    /// built yet) are to end in that transaction too: see
    /// [`ApiKeyRepository::offboard`].
    #[instrument(name = "offboard user", skip_all, fields(tenant = %actor.tenant_id, user = %user))]
    pub async fn offboard(&self, actor: Principal, user: UserId) -> Result<OffboardView, AppError> {
        if !actor.can_manage(user) {
            return Err(AppError::Forbidden);
        }
        let offboarded = self
            .repository
            .offboard(actor.tenant_id, user, actor.user_id, self.clock.now())
            .await?;
        // The repository revoked them with an event each, which this
        // service never held: the change is named by kind instead.
        for key in &offboarded.revoked {
            self.invalidation.apply(CommittedChange::Key {
                kind: EventKind::ApiKeyRevoked,
                prefix: key.prefix(),
            });
        }
        tracing::info!(
            revoked = offboarded.revoked.len(),
            console_sessions_ended = offboarded.console_sessions_ended,
            "user offboarded"
        );
        Ok(OffboardView {
            revoked: u64::try_from(offboarded.revoked.len()).unwrap_or(u64::MAX),
        })
    }

    #[instrument(name = "list key events", skip_all, fields(tenant = %actor.tenant_id, key_id = %id))]
    pub async fn events(&self, actor: Principal, id: ApiKeyId) -> Result<Vec<EventView>, AppError> {
        self.visible_key(actor, id).await?;
        let events = self.repository.events(actor.tenant_id, id).await?;
        Ok(events.into_iter().map(EventView::from).collect())
    }

    /// Whether the database answers (for readiness).
    pub async fn ping(&self) -> Result<(), AppError> {
        self.repository.ping().await.map_err(AppError::from)
    }

    /// The tenant's servers among `slugs`, for validating grants.
    async fn known_servers(
        &self,
        tenant: TenantId,
        slugs: &[cola_domain::ServerSlug],
    ) -> Result<KnownServers, AppError> {
        if slugs.is_empty() {
            return Ok(KnownServers::new());
        }
        let found = self.servers.find_slugs(tenant, slugs).await?;
        Ok(found
            .into_iter()
            .map(|server| {
                let slug = server.slug().clone();
                (slug.as_str().to_owned(), (server.id(), slug))
            })
            .collect())
    }

    /// The key if the actor may see it; otherwise `NotFound`, exactly as for
    /// an id that does not exist.
    async fn visible_key(&self, actor: Principal, id: ApiKeyId) -> Result<McpApiKey, AppError> {
        let tenant: TenantId = actor.tenant_id;
        match self.repository.find(tenant, id).await? {
            Some(key) if actor.can_manage(key.owner()) => Ok(key),
            _ => Err(AppError::NotFound),
        }
    }

    async fn persist(
        &self,
        key: &McpApiKey,
        event: Option<cola_domain::DomainEvent>,
    ) -> Result<(), AppError> {
        let Some(event) = event else {
            return Ok(());
        };
        if self.repository.apply_change(key, &event).await? {
            self.invalidation.apply(&event);
            Ok(())
        } else {
            Err(AppError::KeyRevoked)
        }
    }
}

fn generate_secret() -> Result<ApiKeySecret, AppError> {
    // Straight from the OS CSPRNG; failure to read it fails this request.
    ApiKeySecret::generate(&mut OsRng).map_err(|e| AppError::Unexpected(Box::new(e)))
}

fn key_error(error: KeyError) -> AppError {
    match error {
        KeyError::Revoked => AppError::KeyRevoked,
        KeyError::Expired => AppError::KeyExpired,
        KeyError::AlreadyRotated => AppError::KeyAlreadyRotated,
    }
}

pub(crate) fn hash_error(error: crate::HashError) -> AppError {
    match error {
        // Hashing capacity is shared with key verification: out of it is a
        // retryable 503, like an unavailable database.
        crate::HashError::Saturated => AppError::Unavailable(Box::new(error)),
        crate::HashError::Failed(_) => AppError::Unexpected(Box::new(error)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use cola_domain::UserId;
    use serde_json::json;

    use super::*;
    use crate::fakes::{MemoryRepository, active_key};
    use crate::ports::{HashError, SecretHash, SystemClock};
    use crate::{Role, SecretHasher};

    /// Counts hashes; "hashes" without any argon2 work.
    #[derive(Default)]
    struct CountingHasher {
        hashes: AtomicUsize,
    }

    #[async_trait]
    impl SecretHasher for CountingHasher {
        async fn hash(&self, secret: &ApiKeySecret) -> Result<SecretHash, HashError> {
            self.hashes.fetch_add(1, Ordering::SeqCst);
            Ok(SecretHash::new(format!("fake${}", secret.expose())))
        }

        async fn verify(&self, _: &ApiKeySecret, _: &SecretHash) -> Result<bool, HashError> {
            Ok(false)
        }

        async fn verify_dummy(&self, _: &ApiKeySecret) -> Result<(), HashError> {
            Ok(())
        }
    }

    const CAP: u32 = 3;

    /// A service over an in-memory store where `actor` already has
    /// `active` keys, and another user of the tenant a full set.
    fn service(
        actor: Principal,
        active: u32,
    ) -> (ApiKeyService, Arc<MemoryRepository>, Arc<CountingHasher>) {
        let repository = Arc::new(MemoryRepository::default());
        let mut rng = rand::rngs::OsRng;
        let mut prefix = || {
            ApiKeySecret::generate(&mut rng)
                .expect("OS randomness")
                .prefix()
        };
        for _ in 0..active {
            repository.add(active_key(actor.tenant_id, actor.user_id, prefix()));
        }
        let colleague = UserId::from_uuid(Uuid::new_v4());
        for _ in 0..CAP {
            repository.add(active_key(actor.tenant_id, colleague, prefix()));
        }
        let hasher = Arc::new(CountingHasher::default());
        let service = ApiKeyService::new(
            Arc::clone(&repository) as Arc<dyn ApiKeyRepository>,
            Arc::new(crate::fakes::MemoryServers::default()),
            Arc::clone(&hasher) as Arc<dyn SecretHasher>,
            Arc::new(SystemClock),
            crate::fakes::invalidation(Arc::new(crate::fakes::MemoryServers::default())),
            KeyPolicy {
                expiry: ExpiryPolicy::new(90, 365).expect("policy"),
                max_active_keys_per_user: CAP,
            },
        );
        (service, repository, hasher)
    }

    fn actor() -> Principal {
        Principal {
            tenant_id: TenantId::from_uuid(Uuid::new_v4()),
            user_id: UserId::from_uuid(Uuid::new_v4()),
            role: Role::Member,
        }
    }

    fn request() -> CreateKeyRequest {
        serde_json::from_value(json!({ "name": "over the cap?" })).expect("shape")
    }

    #[tokio::test]
    async fn a_create_at_the_cap_is_refused_before_any_hashing() {
        let actor = actor();
        let (service, repository, hasher) = service(actor, CAP);
        let refused = service.create(actor, request()).await;
        assert!(
            matches!(refused, Err(AppError::LimitReached { max: CAP })),
            "{refused:?}"
        );
        assert_eq!(hasher.hashes.load(Ordering::SeqCst), 0);
        assert_eq!(*repository.inserts.lock().expect("inserts"), 0);
    }

    #[tokio::test]
    async fn a_create_under_the_cap_hashes_once_and_inserts() {
        // Another user of the tenant is at the cap: the count is the actor's.
        let actor = actor();
        let (service, repository, hasher) = service(actor, CAP - 1);
        let created = service.create(actor, request()).await.expect("created");
        assert!(created.key.expose().starts_with("cola_"));
        assert_eq!(hasher.hashes.load(Ordering::SeqCst), 1);
        assert_eq!(*repository.inserts.lock().expect("inserts"), 1);
    }

    /// The key a permissions PATCH starts from: read only, tool `a`,
    /// resources under `r://x/`, and a grant on `github` (the tenant also
    /// has `linear`).
    const STARTING_PERMISSIONS: &str = r#"{ "read": true, "write": false,
        "allowed_tools": ["a"], "allowed_resources": ["r://x/*"],
        "servers": { "github": { "allowed_tools": ["search_*"], "allowed_resources": null, "allowed_prompts": null } } }"#;

    /// Applies a `PATCH …/permissions` with `body` to a fresh key holding
    /// [`STARTING_PERMISSIONS`]; the permissions it then has, as the API
    /// shows them.
    async fn patched(body: serde_json::Value) -> Result<serde_json::Value, AppError> {
        let actor = actor();
        let servers = Arc::new(crate::fakes::MemoryServers::default());
        for slug in ["github", "linear"] {
            servers.add(crate::fakes::registered_server(actor.tenant_id, slug));
        }
        let (service, repository, _) = service(actor, 0);
        let service = ApiKeyService {
            servers: Arc::clone(&servers) as Arc<dyn ServerRepository>,
            ..service
        };
        let starting: serde_json::Value = serde_json::from_str(STARTING_PERMISSIONS).expect("json");
        let created = service
            .create(
                actor,
                serde_json::from_value(json!({ "name": "k", "permissions": starting }))
                    .expect("shape"),
            )
            .await
            .expect("created");
        assert_eq!(
            serde_json::to_value(&created.view.permissions).expect("json"),
            starting
        );
        let request = serde_json::from_value(body).expect("shape");
        let view = service
            .update_permissions(actor, created.view.id, request)
            .await?;
        let stored = repository
            .find(actor.tenant_id, created.view.id)
            .await
            .expect("find")
            .expect("stored");
        assert_eq!(
            stored.permissions(),
            &view.permissions,
            "what is shown is stored"
        );
        Ok(serde_json::to_value(&view.permissions).expect("json"))
    }

    /// [`STARTING_PERMISSIONS`] with `field` set to `value`.
    fn starting_with(field: &str, value: serde_json::Value) -> serde_json::Value {
        let mut permissions: serde_json::Value =
            serde_json::from_str(STARTING_PERMISSIONS).expect("json");
        permissions[field] = value;
        permissions
    }

    fn invalid_fields(result: Result<serde_json::Value, AppError>) -> Vec<String> {
        match result {
            Err(AppError::Invalid(errors)) => errors.fields().keys().cloned().collect(),
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_permissions_patch_that_gives_one_flag_keeps_every_other_field() {
        let kept = patched(json!({ "permissions": { "write": true } }))
            .await
            .expect("patched");
        assert_eq!(kept, starting_with("write", json!(true)));
        let nothing = patched(json!({ "permissions": {} }))
            .await
            .expect("patched");
        assert_eq!(nothing, starting_with("read", json!(true)));
    }

    #[tokio::test]
    async fn read_left_out_is_kept_given_is_set_and_null_is_refused() {
        let kept = patched(json!({ "permissions": { "write": true } }))
            .await
            .expect("kept");
        assert_eq!(kept["read"], true);
        let given = patched(json!({ "permissions": { "read": false, "write": true } }))
            .await
            .expect("given");
        assert_eq!(
            (given["read"].clone(), given["write"].clone()),
            (json!(false), json!(true))
        );
        assert_eq!(
            invalid_fields(patched(json!({ "permissions": { "read": null } })).await),
            ["permissions.read"]
        );
        // The key writes nothing: turning reading off would leave it no access.
        assert_eq!(
            invalid_fields(patched(json!({ "permissions": { "read": false } })).await),
            ["permissions"]
        );
    }

    #[tokio::test]
    async fn write_left_out_is_kept_given_is_set_and_null_is_refused() {
        let kept = patched(json!({ "permissions": { "allowed_tools": ["b"] } }))
            .await
            .expect("kept");
        assert_eq!(kept["write"], false);
        let given = patched(json!({ "permissions": { "write": true } }))
            .await
            .expect("given");
        assert_eq!(given["write"], true);
        assert_eq!(
            invalid_fields(patched(json!({ "permissions": { "write": null } })).await),
            ["permissions.write"]
        );
        assert_eq!(
            invalid_fields(
                patched(json!({ "permissions": { "read": false, "write": false } })).await
            ),
            ["permissions"]
        );
    }

    #[tokio::test]
    async fn allowed_tools_left_out_is_kept_null_means_every_tool_and_given_replaces() {
        let kept = patched(json!({ "permissions": { "write": true } }))
            .await
            .expect("kept");
        assert_eq!(kept["allowed_tools"], json!(["a"]));
        let every = patched(json!({ "permissions": { "allowed_tools": null } }))
            .await
            .expect("null");
        assert_eq!(every, starting_with("allowed_tools", json!(null)));
        let given = patched(json!({ "permissions": { "allowed_tools": ["b", "c"] } }))
            .await
            .expect("given");
        assert_eq!(given, starting_with("allowed_tools", json!(["b", "c"])));
        let none = patched(json!({ "permissions": { "allowed_tools": [] } }))
            .await
            .expect("empty");
        assert_eq!(none["allowed_tools"], json!([]));
        assert_eq!(
            invalid_fields(patched(json!({ "permissions": { "allowed_tools": ["a b"] } })).await),
            ["permissions.allowed_tools"]
        );
    }

    #[tokio::test]
    async fn allowed_resources_left_out_is_kept_null_means_every_resource_and_given_replaces() {
        let kept = patched(json!({ "permissions": { "allowed_tools": ["b"] } }))
            .await
            .expect("kept");
        assert_eq!(kept["allowed_resources"], json!(["r://x/*"]));
        let every = patched(json!({ "permissions": { "allowed_resources": null } }))
            .await
            .expect("null");
        assert_eq!(every, starting_with("allowed_resources", json!(null)));
        let given = patched(json!({ "permissions": { "allowed_resources": ["r://y"] } }))
            .await
            .expect("given");
        assert_eq!(given, starting_with("allowed_resources", json!(["r://y"])));
        assert_eq!(
            invalid_fields(
                patched(json!({ "permissions": { "allowed_resources": ["r://*/x"] } })).await
            ),
            ["permissions.allowed_resources"]
        );
    }

    #[tokio::test]
    async fn servers_left_out_are_kept_and_given_or_null_replace_every_grant() {
        let kept = patched(json!({ "permissions": { "write": true } }))
            .await
            .expect("kept");
        assert_eq!(
            kept["servers"],
            json!({ "github": { "allowed_tools": ["search_*"], "allowed_resources": null, "allowed_prompts": null } })
        );
        let replaced = patched(json!({ "permissions": { "servers": { "linear": {} } } }))
            .await
            .expect("given");
        assert_eq!(
            replaced,
            starting_with(
                "servers",
                json!({ "linear": { "allowed_tools": null, "allowed_resources": null, "allowed_prompts": null } })
            )
        );
        for none in [json!(null), json!({})] {
            let removed = patched(json!({ "permissions": { "servers": none } }))
                .await
                .expect("removed");
            assert_eq!(removed, starting_with("servers", json!({})), "{none}");
        }
        assert_eq!(
            invalid_fields(patched(json!({ "permissions": { "servers": { "nope": {} } } })).await),
            ["permissions.servers.nope"]
        );
    }
}
