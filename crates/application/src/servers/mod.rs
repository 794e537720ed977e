//! The server registry (docs/gateway.md): `ServerService`, one method per
//! management use case, each taking the acting principal first; and
//! `ServerDirectory`, the gateway's lookup of a server by slug.
//!
//! Changes are admin-only, reads are open to every role of the tenant, and
//! another tenant's server is a 404 like one that does not exist. An
//! upstream URL is attacker input: its host must be public (or in the
//! operator's allowed networks) as written and, for a host name, in every
//! address it resolves to now. The gateway checks again at connect time.

mod directory;
mod dto;

use std::sync::Arc;

use cola_domain::{
    AllowedNetworks, EventKind, NewServer, RegisteredServer, ServerChanges, ServerId, ServerToken,
    TenantId, UpstreamHeaders, UpstreamHost, UpstreamUrl,
};
use rand::rngs::OsRng;
use tracing::instrument;
use uuid::Uuid;

pub use directory::{RESOLUTION_TTL, ResolvedServer, ServerDirectory, ServerLookupError};
pub use dto::{
    CreateServerRequest, ListServersQuery, MintedTokenView, ServerPage, ServerView,
    UpdateServerRequest,
};

use crate::error::{AppError, FieldErrors};
use crate::invalidation::{CacheInvalidation, CommittedChange};
use crate::ports::{
    Clock, CredentialSealer, HeadersWrite, HostResolver, RepositoryError, ResolveError, SealError,
    ServerRepository, TokenDigest,
};
use crate::principal::{Principal, Role};

/// The most servers one tenant may register (decision 129): each is state
/// every instance caches and a target the gateway holds connections to, so
/// one tenant cannot take an instance's memory or connections from others.
pub const MAX_SERVERS_PER_TENANT: u32 = 100;

pub struct ServerService {
    repository: Arc<dyn ServerRepository>,
    resolver: Arc<dyn HostResolver>,
    /// `None` without `COLA_SECRETS_KEY`: servers cannot hold headers.
    sealer: Option<Arc<dyn CredentialSealer>>,
    clock: Arc<dyn Clock>,
    allowed: AllowedNetworks,
    /// Told of every committed change, so the caches follow it.
    invalidation: Arc<CacheInvalidation>,
}

impl std::fmt::Debug for ServerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerService")
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

/// Everything `ServerService` works with.
pub struct ServerServiceParts {
    pub repository: Arc<dyn ServerRepository>,
    pub resolver: Arc<dyn HostResolver>,
    pub sealer: Option<Arc<dyn CredentialSealer>>,
    pub clock: Arc<dyn Clock>,
    pub allowed: AllowedNetworks,
    pub invalidation: Arc<CacheInvalidation>,
}

impl std::fmt::Debug for ServerServiceParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerServiceParts").finish_non_exhaustive()
    }
}

impl ServerService {
    #[must_use]
    pub fn new(parts: ServerServiceParts) -> Self {
        Self {
            repository: parts.repository,
            resolver: parts.resolver,
            sealer: parts.sealer,
            clock: parts.clock,
            allowed: parts.allowed,
            invalidation: parts.invalidation,
        }
    }

    #[instrument(name = "create server", skip_all, fields(tenant = %actor.tenant_id, user = %actor.user_id))]
    pub async fn create(
        &self,
        actor: Principal,
        request: CreateServerRequest,
    ) -> Result<ServerView, AppError> {
        require_admin(actor)?;
        let command = request
            .into_command(&self.allowed)
            .map_err(AppError::Invalid)?;
        let max = MAX_SERVERS_PER_TENANT;
        // Refused before any work (resolving the host, sealing): a create
        // bound to fail at the cap costs one count. `insert` still enforces
        // the cap against concurrent creates.
        if self.repository.count(actor.tenant_id).await? >= u64::from(max) {
            return Err(AppError::ServerLimitReached { max });
        }
        if let Some(url) = &command.url {
            self.check_resolved_addresses(url).await?;
        }
        let id = ServerId::from_uuid(Uuid::now_v7());
        let sealed = self.seal(actor.tenant_id, id, &command.headers)?;
        let (server, event) = RegisteredServer::register(
            NewServer {
                id,
                tenant_id: actor.tenant_id,
                slug: command.slug,
                name: command.name,
                url: command.url,
                header_names: command.headers.names(),
                forward_identity: command.forward_identity,
                timeout: command.timeout,
            },
            actor.user_id,
            self.clock.now(),
        );
        match self
            .repository
            .insert(&server, sealed.as_deref(), &event, max)
            .await
        {
            Err(RepositoryError::CapReached) => return Err(AppError::ServerLimitReached { max }),
            written => written?,
        }
        self.invalidation.apply(&event);
        tracing::info!(server_id = %server.id(), slug = %server.slug(), "server registered");
        Ok(ServerView::of(&server))
    }

    #[instrument(name = "list servers", skip_all, fields(tenant = %actor.tenant_id))]
    pub async fn list(
        &self,
        actor: Principal,
        query: ListServersQuery,
    ) -> Result<ServerPage, AppError> {
        let (limit, after) = query.into_valid().map_err(AppError::Invalid)?;
        let mut servers = self
            .repository
            .list(actor.tenant_id, after, limit + 1)
            .await?;
        let more = servers.len() as u64 > limit;
        servers.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_cursor = if more {
            servers.last().map(|server| dto::encode_cursor(server.id()))
        } else {
            None
        };
        Ok(ServerPage {
            items: servers.iter().map(ServerView::of).collect(),
            next_cursor,
        })
    }

    #[instrument(name = "get server", skip_all, fields(tenant = %actor.tenant_id, server_id = %id))]
    pub async fn get(&self, actor: Principal, id: ServerId) -> Result<ServerView, AppError> {
        let server = self.tenant_server(actor.tenant_id, id).await?;
        Ok(ServerView::of(&server))
    }

    #[instrument(name = "update server", skip_all, fields(tenant = %actor.tenant_id, server_id = %id))]
    pub async fn update(
        &self,
        actor: Principal,
        id: ServerId,
        request: UpdateServerRequest,
    ) -> Result<ServerView, AppError> {
        require_admin(actor)?;
        let patch = request
            .into_patch(&self.allowed)
            .map_err(AppError::Invalid)?;
        let mut server = self.tenant_server(actor.tenant_id, id).await?;
        if let Some(Some(url)) = &patch.url {
            self.check_resolved_addresses(url).await?;
        }
        let sealed = match &patch.headers {
            None => None,
            Some(headers) => Some(self.seal(server.tenant_id(), server.id(), headers)?),
        };
        let changes = ServerChanges {
            name: patch.name,
            url: patch.url,
            header_names: patch.headers.as_ref().map(UpstreamHeaders::names),
            forward_identity: patch.forward_identity,
            timeout: patch.timeout,
        };
        let Some(event) = server.update(changes, actor.user_id, self.clock.now()) else {
            return Ok(ServerView::of(&server));
        };
        let headers = match &sealed {
            None => HeadersWrite::Keep,
            Some(sealed) => HeadersWrite::Replace(sealed.as_deref()),
        };
        if !self.repository.update(&server, headers, &event).await? {
            return Err(AppError::NotFound);
        }
        self.invalidation.apply(&event);
        tracing::info!(server_id = %server.id(), slug = %server.slug(), "server updated");
        Ok(ServerView::of(&server))
    }

    /// Deletes the server and every key's grant on it, in one transaction.
    /// Its slug resolves to nothing from this instance's next request; the
    /// keys that lost a grant are verified afresh here at once and on every
    /// other instance through the change feed.
    #[instrument(name = "delete server", skip_all, fields(tenant = %actor.tenant_id, server_id = %id))]
    pub async fn delete(&self, actor: Principal, id: ServerId) -> Result<(), AppError> {
        require_admin(actor)?;
        let server = self.tenant_server(actor.tenant_id, id).await?;
        let event = server.delete(actor.user_id, self.clock.now());
        let Some(ungranted) = self.repository.delete(&server, &event).await? else {
            return Err(AppError::NotFound);
        };
        self.invalidation.apply(&event);
        // The repository recorded each key's loss of its grant as an event
        // of its own, which this service never held: named by kind instead.
        for prefix in &ungranted {
            self.invalidation.apply(CommittedChange::Key {
                kind: EventKind::ApiKeyPermissionsUpdated,
                prefix,
            });
        }
        tracing::info!(server_id = %server.id(), slug = %server.slug(), keys = ungranted.len(), "server deleted");
        Ok(())
    }

    /// Mints the server's verification token, replacing any earlier one:
    /// shown in this answer only, stored as its digest. The previous token
    /// is refused from this instance's next request (others within
    /// [`crate::TOKEN_LOOKUP_TTL`]).
    #[instrument(name = "mint server token", skip_all, fields(tenant = %actor.tenant_id, server_id = %id))]
    pub async fn mint_token(
        &self,
        actor: Principal,
        id: ServerId,
    ) -> Result<MintedTokenView, AppError> {
        require_admin(actor)?;
        let server = self.tenant_server(actor.tenant_id, id).await?;
        let token = ServerToken::generate(&mut OsRng)
            .map_err(|error| AppError::Unexpected(Box::new(error)))?;
        let event = server.mint_token(actor.user_id, self.clock.now());
        if !self
            .repository
            .store_token(&server, &TokenDigest::of(&token), &event)
            .await?
        {
            return Err(AppError::NotFound);
        }
        self.invalidation.apply(&event);
        tracing::info!(server_id = %server.id(), slug = %server.slug(), "server token minted");
        Ok(MintedTokenView {
            token: token.expose().to_owned(),
        })
    }

    /// How many stored servers hold headers this instance cannot open
    /// because it has no secrets key (for the start-up check).
    pub async fn servers_needing_a_secrets_key(&self) -> Result<u64, AppError> {
        if self.sealer.is_some() {
            return Ok(0);
        }
        Ok(self.repository.count_with_headers().await?)
    }

    async fn tenant_server(
        &self,
        tenant: TenantId,
        id: ServerId,
    ) -> Result<RegisteredServer, AppError> {
        self.repository
            .find(tenant, id)
            .await?
            .map(|stored| stored.server)
            .ok_or(AppError::NotFound)
    }

    /// A host name must resolve, and to addresses Cola may dial only: one
    /// private address among public ones is enough to refuse it, since the
    /// gateway could be handed any of them.
    async fn check_resolved_addresses(&self, url: &UpstreamUrl) -> Result<(), AppError> {
        let UpstreamHost::Name(host) = url.host() else {
            return Ok(()); // an address literal was checked when parsed
        };
        let refuse = |message: String| AppError::Invalid(FieldErrors::single("url", message));
        match self.resolver.resolve(&host, url.port()).await {
            Ok(addresses) if addresses.is_empty() => {
                Err(refuse(format!("the host `{host}` does not resolve")))
            }
            Ok(addresses) => match addresses.iter().find(|a| !self.allowed.permits(**a)) {
                Some(address) => Err(refuse(format!(
                    "the host `{host}` resolves to {address}, which is not a public address \
                     and is not in COLA_GATEWAY_ALLOWED_NETWORKS"
                ))),
                None => Ok(()),
            },
            Err(ResolveError::NotFound) => {
                Err(refuse(format!("the host `{host}` does not resolve")))
            }
            Err(error @ ResolveError::Failed(_)) => {
                tracing::warn!(error = %crate::error_chain(&error), "upstream host lookup failed");
                Err(refuse(format!("the host `{host}` could not be resolved")))
            }
        }
    }

    /// The headers sealed for this server, `None` when there are none.
    fn seal(
        &self,
        tenant: TenantId,
        id: ServerId,
        headers: &UpstreamHeaders,
    ) -> Result<Option<Vec<u8>>, AppError> {
        if headers.is_empty() {
            return Ok(None);
        }
        let Some(sealer) = &self.sealer else {
            return Err(AppError::Invalid(FieldErrors::single(
                "headers",
                "this Cola has no COLA_SECRETS_KEY, so it cannot store upstream credentials",
            )));
        };
        sealer
            .seal_headers(tenant, id, headers)
            .map(Some)
            .map_err(|error| match error {
                SealError::Corrupt | SealError::Failed(_) => AppError::Unexpected(Box::new(error)),
            })
    }
}

fn require_admin(actor: Principal) -> Result<(), AppError> {
    if actor.role == Role::Admin {
        Ok(())
    } else {
        Err(AppError::Forbidden)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use cola_domain::UserId;
    use serde_json::json;

    use super::*;
    use crate::fakes::{MemoryServers, registered_server};
    use crate::ports::SystemClock;

    /// Counts lookups; every host resolves to a public address.
    #[derive(Default)]
    struct CountingResolver {
        lookups: AtomicUsize,
    }

    #[async_trait]
    impl HostResolver for CountingResolver {
        async fn resolve(&self, _: &str, _: u16) -> Result<Vec<std::net::IpAddr>, ResolveError> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            Ok(vec![std::net::IpAddr::from([93, 184, 215, 14])])
        }
    }

    fn admin() -> Principal {
        Principal {
            tenant_id: TenantId::from_uuid(Uuid::new_v4()),
            user_id: UserId::from_uuid(Uuid::new_v4()),
            role: Role::Admin,
        }
    }

    /// A service over `servers`, and its resolver.
    fn service(servers: &Arc<MemoryServers>) -> (ServerService, Arc<CountingResolver>) {
        let repository = Arc::clone(servers) as Arc<dyn ServerRepository>;
        let resolver = Arc::new(CountingResolver::default());
        let service = ServerService::new(ServerServiceParts {
            repository: Arc::clone(&repository),
            resolver: Arc::clone(&resolver) as Arc<dyn HostResolver>,
            sealer: None,
            clock: Arc::new(SystemClock),
            allowed: AllowedNetworks::default(),
            invalidation: crate::fakes::invalidation(repository),
        });
        (service, resolver)
    }

    fn request(slug: &str) -> CreateServerRequest {
        serde_json::from_value(
            json!({ "slug": slug, "name": slug, "url": "https://mcp.example.com/mcp" }),
        )
        .expect("shape")
    }

    #[tokio::test]
    async fn a_create_beyond_the_tenants_hundredth_server_is_refused_before_any_work() {
        let actor = admin();
        let servers = Arc::new(MemoryServers::default());
        for n in 0..MAX_SERVERS_PER_TENANT {
            servers.add(registered_server(actor.tenant_id, &format!("s{n}")));
        }
        let (service, resolver) = service(&servers);
        let refused = service.create(actor, request("one-more")).await;
        assert!(
            matches!(refused, Err(AppError::ServerLimitReached { max: 100 })),
            "{refused:?}"
        );
        assert_eq!(resolver.lookups.load(Ordering::SeqCst), 0, "no host lookup");
        assert_eq!(*servers.inserts.lock().expect("inserts"), 0, "no insert");

        // Another tenant has a cap of its own.
        let created = service.create(admin(), request("one-more")).await;
        assert!(created.is_ok(), "{created:?}");
    }
}
