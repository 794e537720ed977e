//! `ServerDirectory`: what the gateway asks on every request — which server
//! does this slug name for this key's tenant, and how is it reached? Answers
//! are cached per instance, headers decrypted once, for at most
//! [`RESOLUTION_TTL`]; a change made on this instance forgets its entry at
//! once, and one made elsewhere is seen when the entry expires.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cola_domain::{ServerId, ServerSlug, TenantId, UpstreamSecret, UpstreamUrl};
use thiserror::Error;

use crate::ports::{CredentialSealer, RepositoryError, SealError, ServerRepository, StoredServer};

/// How long a resolution is served from memory. Well inside the 2 s within
/// which a change or deletion must reach every instance (docs/gateway.md).
pub const RESOLUTION_TTL: Duration = Duration::from_secs(1);
const MAX_RESOLUTIONS: u64 = 100_000;

/// What the gateway needs to reach one server: resolved for the key's tenant by slug.
#[derive(Debug)]
pub struct ResolvedServer {
    pub id: ServerId,
    pub tenant_id: TenantId,
    pub slug: String,
    /// `None` = verify-only: the gateway answers 404.
    pub url: Option<UpstreamUrl>,
    /// Decrypted; each value redacts itself in `Debug`.
    pub headers: Vec<(String, UpstreamSecret)>,
    pub forward_identity: bool,
    pub timeout: Duration,
}

/// Why a slug could not be resolved. Either way the gateway refuses the
/// request (fails closed); neither carries anything of the server's
/// configuration.
#[derive(Debug, Error)]
pub enum ServerLookupError {
    /// The database is unreachable: retryable, a 503.
    #[error("the server registry is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The stored server cannot be used: its headers do not open (copied
    /// from another server, tampered with, sealed under another key, or no
    /// `COLA_SECRETS_KEY`), or its row breaks the domain's rules. A 502.
    #[error("the registered server is corrupt")]
    Corrupt(#[source] Box<dyn std::error::Error + Send + Sync>),
}

type Resolution = Option<Arc<ResolvedServer>>;

pub struct ServerDirectory {
    repository: Arc<dyn ServerRepository>,
    sealer: Option<Arc<dyn CredentialSealer>>,
    resolutions: moka::sync::Cache<(TenantId, String), Resolution>,
    /// Bumped by every `forget`; a lookup that started before a bump does
    /// not cache what it read, which may predate the change.
    generation: AtomicU64,
}

impl std::fmt::Debug for ServerDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerDirectory")
            .field("cached", &self.resolutions.entry_count())
            .finish_non_exhaustive()
    }
}

impl ServerDirectory {
    #[must_use]
    pub fn new(
        repository: Arc<dyn ServerRepository>,
        sealer: Option<Arc<dyn CredentialSealer>>,
    ) -> Self {
        Self::with_ttl(repository, sealer, RESOLUTION_TTL)
    }

    #[must_use]
    pub fn with_ttl(
        repository: Arc<dyn ServerRepository>,
        sealer: Option<Arc<dyn CredentialSealer>>,
        ttl: Duration,
    ) -> Self {
        Self {
            repository,
            sealer,
            resolutions: moka::sync::Cache::builder()
                .max_capacity(MAX_RESOLUTIONS)
                .time_to_live(ttl)
                .build(),
            generation: AtomicU64::new(0),
        }
    }

    /// The tenant's server with this slug, `None` when there is none (an
    /// unknown or malformed slug). Unknown slugs are cached too, so probing
    /// costs no database work.
    pub async fn resolve(
        &self,
        tenant: TenantId,
        slug: &str,
    ) -> Result<Option<Arc<ResolvedServer>>, ServerLookupError> {
        let Ok(parsed) = ServerSlug::parse(slug) else {
            return Ok(None);
        };
        let key = (tenant, slug.to_owned());
        if let Some(cached) = self.resolutions.get(&key) {
            return Ok(cached);
        }
        let started = self.generation.load(Ordering::Acquire);
        let stored = self
            .repository
            .find_by_slug(tenant, &parsed)
            .await
            .map_err(lookup_error)?;
        let resolution = stored.map(|stored| self.open(stored)).transpose()?;
        if self.generation.load(Ordering::Acquire) == started {
            self.resolutions.insert(key, resolution.clone());
        }
        Ok(resolution)
    }

    /// Forgets the slug's resolution on this instance, after a change to
    /// the server or its deletion (see [`crate::CacheInvalidation`]).
    pub(crate) fn forget(&self, tenant: TenantId, slug: &ServerSlug) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.resolutions
            .invalidate(&(tenant, slug.as_str().to_owned()));
    }

    fn open(&self, stored: StoredServer) -> Result<Arc<ResolvedServer>, ServerLookupError> {
        let server = stored.server;
        let headers = match (stored.sealed_headers, &self.sealer) {
            (None, _) => Vec::new(),
            (Some(_), None) => {
                return Err(ServerLookupError::Corrupt(
                    "the server has sealed headers and COLA_SECRETS_KEY is not set".into(),
                ));
            }
            (Some(sealed), Some(sealer)) => sealer
                .open_headers(server.tenant_id(), server.id(), &sealed)
                .map_err(|error| match error {
                    SealError::Corrupt | SealError::Failed(_) => {
                        ServerLookupError::Corrupt(Box::new(error))
                    }
                })?
                .pairs()
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), value.clone()))
                .collect(),
        };
        Ok(Arc::new(ResolvedServer {
            id: server.id(),
            tenant_id: server.tenant_id(),
            slug: server.slug().as_str().to_owned(),
            url: server.url().cloned(),
            headers,
            forward_identity: server.forward_identity(),
            timeout: server.timeout().duration(),
        }))
    }
}

fn lookup_error(error: RepositoryError) -> ServerLookupError {
    match error {
        RepositoryError::Corrupt(_) => ServerLookupError::Corrupt(Box::new(error)),
        other => ServerLookupError::Unavailable(Box::new(other)),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use cola_domain::{
        AllowedNetworks, KeyName, NewServer, RegisteredServer, ServerTimeout, UpstreamUrl, UserId,
    };
    use uuid::Uuid;

    use super::*;
    use crate::fakes::MemoryServers;

    fn server(tenant: TenantId, slug: &str) -> RegisteredServer {
        RegisteredServer::register(
            NewServer {
                id: ServerId::from_uuid(Uuid::now_v7()),
                tenant_id: tenant,
                slug: ServerSlug::parse(slug).expect("slug"),
                name: KeyName::parse("n").expect("name"),
                url: Some(
                    UpstreamUrl::parse("https://mcp.example.com/mcp", &AllowedNetworks::default())
                        .expect("url"),
                ),
                header_names: Vec::new(),
                forward_identity: true,
                timeout: ServerTimeout::default(),
            },
            UserId::from_uuid(Uuid::now_v7()),
            Utc::now(),
        )
        .0
    }

    fn directory(servers: &Arc<MemoryServers>) -> ServerDirectory {
        ServerDirectory::with_ttl(
            Arc::clone(servers) as Arc<dyn ServerRepository>,
            None,
            Duration::from_secs(60),
        )
    }

    fn lookups(servers: &MemoryServers) -> usize {
        *servers.slug_lookups.lock().expect("lookups")
    }

    #[tokio::test]
    async fn a_resolution_is_served_from_memory_after_the_first_lookup() {
        let tenant = TenantId::from_uuid(Uuid::now_v7());
        let servers = Arc::new(MemoryServers::default());
        servers
            .insert(&server(tenant, "gh"), None, &dummy_event(), 100)
            .await
            .expect("insert");
        let directory = directory(&servers);
        let first = directory
            .resolve(tenant, "gh")
            .await
            .expect("ok")
            .expect("found");
        let second = directory
            .resolve(tenant, "gh")
            .await
            .expect("ok")
            .expect("found");
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(lookups(&servers), 1);
        assert!(first.forward_identity);
        assert_eq!(
            first.url.as_ref().map(UpstreamUrl::as_str),
            Some("https://mcp.example.com/mcp")
        );
    }

    #[tokio::test]
    async fn another_tenant_and_a_malformed_slug_resolve_to_nothing() {
        let tenant = TenantId::from_uuid(Uuid::now_v7());
        let servers = Arc::new(MemoryServers::default());
        servers
            .insert(&server(tenant, "gh"), None, &dummy_event(), 100)
            .await
            .expect("insert");
        let directory = directory(&servers);
        let other = TenantId::from_uuid(Uuid::now_v7());
        assert!(directory.resolve(other, "gh").await.expect("ok").is_none());
        assert!(
            directory
                .resolve(tenant, "../gh")
                .await
                .expect("ok")
                .is_none()
        );
    }

    #[tokio::test]
    async fn forgetting_a_slug_makes_the_next_resolution_read_again() {
        let tenant = TenantId::from_uuid(Uuid::now_v7());
        let servers = Arc::new(MemoryServers::default());
        let registered = server(tenant, "gh");
        servers
            .insert(&registered, None, &dummy_event(), 100)
            .await
            .expect("insert");
        let directory = directory(&servers);
        assert!(directory.resolve(tenant, "gh").await.expect("ok").is_some());
        servers
            .delete(&registered, &dummy_event())
            .await
            .expect("delete");
        directory.forget(tenant, registered.slug());
        assert!(directory.resolve(tenant, "gh").await.expect("ok").is_none());
        assert_eq!(lookups(&servers), 2);
    }

    #[tokio::test]
    async fn sealed_headers_without_a_sealer_fail_closed() {
        let tenant = TenantId::from_uuid(Uuid::now_v7());
        let servers = Arc::new(MemoryServers::default());
        servers
            .insert(&server(tenant, "gh"), Some(b"sealed"), &dummy_event(), 100)
            .await
            .expect("insert");
        let refused = directory(&servers).resolve(tenant, "gh").await;
        assert!(
            matches!(refused, Err(ServerLookupError::Corrupt(_))),
            "{refused:?}"
        );
    }

    fn dummy_event() -> cola_domain::ServerEvent {
        cola_domain::ServerEvent {
            kind: cola_domain::ServerEventKind::Created,
            server_id: ServerId::from_uuid(Uuid::nil()),
            tenant_id: TenantId::from_uuid(Uuid::nil()),
            slug: ServerSlug::parse("dummy").expect("slug"),
            actor_user_id: UserId::from_uuid(Uuid::nil()),
            occurred_at: Utc::now(),
            data: serde_json::Value::Null,
        }
    }
}
