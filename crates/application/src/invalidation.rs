//! `CacheInvalidation`: the one component that keeps this instance's caches
//! true to committed changes — the verified-key cache, the gateway's server
//! directory and the verify API's server-token lookups. A service hands it
//! each event right after the change commits; the change-feed follower
//! hands it the changes other instances made. Which event makes what stale
//! is decided here, by kind, with no catch-all: a new kind of event does not
//! compile until it is classified, and no service evicts anything itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use cola_domain::{
    DomainEvent, EventKind, KeyPrefix, ServerEvent, ServerEventKind, ServerSlug, TenantId,
};

use crate::auth::{FEED_INTERVAL, VerifiedKeyCache};
use crate::ports::{AccessChange, ApiKeyRepository};
use crate::servers::ServerDirectory;
use crate::verify::ServerTokens;

/// How long an event id read from the feed is remembered: longer than the
/// repository's look-back window, so no event evicts twice.
const SEEN_EVENTS_KEPT: std::time::Duration = std::time::Duration::from_secs(30);

/// A committed change, as the caches need to know it: what happened, and to
/// which key or server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommittedChange<'a> {
    Key {
        kind: EventKind,
        prefix: &'a KeyPrefix,
    },
    Server {
        kind: ServerEventKind,
        tenant: TenantId,
        slug: &'a ServerSlug,
    },
}

impl<'a> From<&'a DomainEvent> for CommittedChange<'a> {
    fn from(event: &'a DomainEvent) -> Self {
        Self::Key {
            kind: event.kind,
            prefix: &event.key_prefix,
        }
    }
}

impl<'a> From<&'a ServerEvent> for CommittedChange<'a> {
    fn from(event: &'a ServerEvent) -> Self {
        Self::Server {
            kind: event.kind,
            tenant: event.tenant_id,
            slug: &event.slug,
        }
    }
}

impl<'a> From<&'a AccessChange> for CommittedChange<'a> {
    fn from(change: &'a AccessChange) -> Self {
        Self::Key {
            kind: change.kind,
            prefix: &change.key_prefix,
        }
    }
}

/// What one change makes stale.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Stale<'a> {
    /// A key whose admission may be remembered as it was.
    key: Option<&'a KeyPrefix>,
    /// A slug whose resolution (or "no such server") may be remembered.
    slug: Option<(TenantId, &'a ServerSlug)>,
    /// Token → server lookups: a token may name another server now, or none.
    tokens: bool,
}

impl<'a> Stale<'a> {
    fn of(change: CommittedChange<'a>) -> Self {
        match change {
            CommittedChange::Key { kind, prefix } => match kind {
                // A new key's prefix was never admitted nor cached as
                // refused: a secret cannot be presented before it exists.
                EventKind::ApiKeyCreated => Self::default(),
                // Name and description: nothing an admission holds.
                EventKind::ApiKeyMetadataUpdated => Self::default(),
                // What the key may do, from where, how often; that it may do
                // nothing; and, for a rotation, how long the old key lives.
                EventKind::ApiKeyPermissionsUpdated
                | EventKind::ApiKeyRevoked
                | EventKind::ApiKeyRotated => Self {
                    key: Some(prefix),
                    ..Self::default()
                },
            },
            CommittedChange::Server { kind, tenant, slug } => match kind {
                // The slug may be remembered as "no such server"; a change
                // of URL, headers or identity forwarding is read again.
                ServerEventKind::Created | ServerEventKind::Updated => Self {
                    slug: Some((tenant, slug)),
                    ..Self::default()
                },
                // The slug names nothing now, and neither does its token.
                // The keys that lost a grant on it come as events of their
                // own (`api_key.permissions_updated`).
                ServerEventKind::Deleted => Self {
                    slug: Some((tenant, slug)),
                    tokens: true,
                    key: None,
                },
                // The earlier token names nothing now. Lookups are cached
                // by the token's digest, which the event does not name (it
                // must never hold the token), so all of them go.
                ServerEventKind::TokenMinted => Self {
                    tokens: true,
                    ..Self::default()
                },
            },
        }
    }
}

/// The caches of one instance, kept true to committed changes.
pub struct CacheInvalidation {
    keys: Arc<VerifiedKeyCache>,
    directory: Arc<ServerDirectory>,
    tokens: Arc<ServerTokens>,
}

impl std::fmt::Debug for CacheInvalidation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheInvalidation").finish_non_exhaustive()
    }
}

impl CacheInvalidation {
    #[must_use]
    pub fn new(
        keys: Arc<VerifiedKeyCache>,
        directory: Arc<ServerDirectory>,
        tokens: Arc<ServerTokens>,
    ) -> Self {
        Self {
            keys,
            directory,
            tokens,
        }
    }

    /// Evicts what `change` made stale: called right after the change
    /// commits (so a request that follows the answer sees it), and for each
    /// change another instance made, as the change feed brings it.
    pub fn apply<'a>(&self, change: impl Into<CommittedChange<'a>>) {
        let stale = Stale::of(change.into());
        if let Some(prefix) = stale.key {
            self.keys.forget_key(prefix);
        }
        if let Some((tenant, slug)) = stale.slug {
            self.directory.forget(tenant, slug);
        }
        if stale.tokens {
            self.tokens.forget_all();
        }
    }
}

/// Follows the audit trail for access changes (revocations, permission and
/// allow-list changes, rotations) made by any instance and applies them to
/// this instance's caches. Runs until `stop` turns true.
pub async fn follow_access_changes(
    repository: Arc<dyn ApiKeyRepository>,
    invalidation: Arc<CacheInvalidation>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // Each read returns the changes of the repository's look-back window, so
    // the same event comes back for a while: each one evicts once.
    let mut seen: HashMap<uuid::Uuid, Instant> = HashMap::new();
    let mut ticker = tokio::time::interval(FEED_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let read_started = Instant::now();
        match repository.recent_access_changes().await {
            Ok(changes) => {
                for change in &changes {
                    if seen.insert(change.event_id, read_started).is_none() {
                        invalidation.apply(change);
                    }
                }
                seen.retain(|_, at| at.elapsed() < SEEN_EVENTS_KEPT);
                invalidation.keys.feed_caught_up(read_started);
            }
            Err(error) => {
                tracing::warn!(error = %crate::error::chain(&error), "cannot read the change feed; cached admissions expire");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Each kind of event against the real caches, over in-memory fakes of
    //! the repositories: what it evicts, and that it evicts nothing else.

    use std::time::Duration;

    use uuid::Uuid;

    use super::*;
    use crate::fakes::{MemoryServers, registered_server};
    use crate::ports::{ServerRepository, TokenDigest};

    struct Caches {
        servers: Arc<MemoryServers>,
        keys: Arc<VerifiedKeyCache>,
        directory: Arc<ServerDirectory>,
        tokens: Arc<ServerTokens>,
        invalidation: CacheInvalidation,
        tenant: TenantId,
        slug: ServerSlug,
        token: cola_domain::ServerToken,
    }

    impl Caches {
        /// One server `gh` with a token, its slug and token looked up once
        /// (so cached).
        async fn new() -> Self {
            let servers = Arc::new(MemoryServers::default());
            let tenant = TenantId::from_uuid(Uuid::now_v7());
            let server = registered_server(tenant, "gh");
            let token =
                cola_domain::ServerToken::generate(&mut rand::rngs::OsRng).expect("OS random");
            servers.add(server.clone());
            let event = server.mint_token(
                cola_domain::UserId::from_uuid(Uuid::nil()),
                chrono::Utc::now(),
            );
            servers
                .store_token(&server, &TokenDigest::of(&token), &event)
                .await
                .expect("token");
            let repository = Arc::clone(&servers) as Arc<dyn ServerRepository>;
            let keys = Arc::new(VerifiedKeyCache::new(Duration::from_secs(30)).expect("OS random"));
            // Long lives: only an eviction, never an expiry, may make a
            // second lookup read the repository again.
            let directory = Arc::new(ServerDirectory::with_ttl(
                Arc::clone(&repository),
                None,
                Duration::from_secs(600),
            ));
            let tokens = Arc::new(ServerTokens::with_ttl(repository, Duration::from_secs(600)));
            let caches = Self {
                invalidation: CacheInvalidation::new(
                    Arc::clone(&keys),
                    Arc::clone(&directory),
                    Arc::clone(&tokens),
                ),
                servers,
                keys,
                directory,
                tokens,
                tenant,
                slug: server.slug().clone(),
                token,
            };
            caches.look_up().await;
            caches
        }

        /// Resolves the slug and the token once each.
        async fn look_up(&self) {
            self.directory
                .resolve(self.tenant, self.slug.as_str())
                .await
                .expect("resolved");
            self.tokens
                .authenticate(Some(self.token.expose()))
                .await
                .expect("token");
        }

        /// (slug lookups, token lookups) the repository has served.
        fn reads(&self) -> (usize, usize) {
            (
                *self.servers.slug_lookups.lock().expect("lookups"),
                *self.servers.token_lookups.lock().expect("lookups"),
            )
        }

        /// Applies `change`, then looks everything up again: which caches
        /// had to read the repository, and whether the key was forgotten.
        async fn evicted_by(&self, change: CommittedChange<'_>, key: &KeyPrefix) -> Evicted {
            let mut forgotten = self.keys.watch_changes();
            let before = self.reads();
            self.invalidation.apply(change);
            self.look_up().await;
            let after = self.reads();
            let key_forgotten =
                tokio::time::timeout(Duration::from_millis(20), forgotten.changed(key))
                    .await
                    .is_ok();
            Evicted {
                key: key_forgotten,
                slug: after.0 > before.0,
                tokens: after.1 > before.1,
            }
        }
    }

    #[derive(Debug, PartialEq, Eq)]
    struct Evicted {
        key: bool,
        slug: bool,
        tokens: bool,
    }

    const NOTHING: Evicted = Evicted {
        key: false,
        slug: false,
        tokens: false,
    };

    fn prefix() -> KeyPrefix {
        cola_domain::ApiKeySecret::generate(&mut rand::rngs::OsRng)
            .expect("OS random")
            .prefix()
    }

    async fn key_event(kind: EventKind) -> Evicted {
        let caches = Caches::new().await;
        let prefix = prefix();
        caches
            .evicted_by(
                CommittedChange::Key {
                    kind,
                    prefix: &prefix,
                },
                &prefix,
            )
            .await
    }

    async fn server_event(kind: ServerEventKind) -> Evicted {
        let caches = Caches::new().await;
        let change = CommittedChange::Server {
            kind,
            tenant: caches.tenant,
            slug: &caches.slug,
        };
        caches.evicted_by(change, &prefix()).await
    }

    #[tokio::test]
    async fn a_revoked_key_is_forgotten_and_nothing_else() {
        let expected = Evicted {
            key: true,
            ..NOTHING
        };
        assert_eq!(key_event(EventKind::ApiKeyRevoked).await, expected);
    }

    #[tokio::test]
    async fn a_key_whose_permissions_changed_is_forgotten_and_nothing_else() {
        let expected = Evicted {
            key: true,
            ..NOTHING
        };
        assert_eq!(
            key_event(EventKind::ApiKeyPermissionsUpdated).await,
            expected
        );
    }

    #[tokio::test]
    async fn a_rotated_key_is_forgotten_and_nothing_else() {
        let expected = Evicted {
            key: true,
            ..NOTHING
        };
        assert_eq!(key_event(EventKind::ApiKeyRotated).await, expected);
    }

    #[tokio::test]
    async fn a_created_key_or_new_metadata_evicts_nothing() {
        assert_eq!(key_event(EventKind::ApiKeyCreated).await, NOTHING);
        assert_eq!(key_event(EventKind::ApiKeyMetadataUpdated).await, NOTHING);
    }

    #[tokio::test]
    async fn a_created_or_changed_server_evicts_its_slug_only() {
        let expected = Evicted {
            slug: true,
            ..NOTHING
        };
        assert_eq!(server_event(ServerEventKind::Created).await, expected);
        assert_eq!(server_event(ServerEventKind::Updated).await, expected);
    }

    #[tokio::test]
    async fn a_deleted_server_evicts_its_slug_and_the_token_lookups() {
        let expected = Evicted {
            slug: true,
            tokens: true,
            key: false,
        };
        assert_eq!(server_event(ServerEventKind::Deleted).await, expected);
    }

    #[tokio::test]
    async fn a_minted_token_evicts_the_token_lookups_only() {
        let expected = Evicted {
            tokens: true,
            ..NOTHING
        };
        assert_eq!(server_event(ServerEventKind::TokenMinted).await, expected);
    }

    #[tokio::test]
    async fn another_servers_change_leaves_this_slug_cached() {
        let caches = Caches::new().await;
        let other = ServerSlug::parse("other").expect("slug");
        let change = CommittedChange::Server {
            kind: ServerEventKind::Updated,
            tenant: caches.tenant,
            slug: &other,
        };
        assert_eq!(caches.evicted_by(change, &prefix()).await, NOTHING);
    }

    #[tokio::test]
    async fn a_change_read_from_the_feed_is_applied_as_its_event() {
        let caches = Caches::new().await;
        let prefix = prefix();
        let change = AccessChange {
            event_id: Uuid::now_v7(),
            kind: EventKind::ApiKeyRevoked,
            key_id: cola_domain::ApiKeyId::from_uuid(Uuid::now_v7()),
            key_prefix: prefix.clone(),
        };
        let evicted = caches.evicted_by((&change).into(), &prefix).await;
        assert_eq!(
            evicted,
            Evicted {
                key: true,
                ..NOTHING
            }
        );
    }
}
