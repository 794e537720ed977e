//! The gateway use case: a key reaches its tenant's own MCP server through
//! Cola and gets exactly what its grant there allows. [`GatewayService::open`]
//! takes the route once (slug → server → grant → a place in flight);
//! [`Route::forward`](super::Route::forward) authorises one message (asking
//! the upstream for its tools when the decision needs them), sends what it
//! authorised through the [`Upstream`] port and relays the answer through
//! the key's lens.

use std::sync::Arc;
use std::time::Instant;

use cola_domain::Surface;
use cola_protocol::RpcError;

use super::catalogue::ToolCatalogue;
use super::handles::Handles;
use super::inflight::TenantInflight;
use super::ports::{Binding, IdentityAsserter, Upstream};
use super::route::Route;
use crate::admission::KeyAdmission;
use crate::auth::VerifiedKeyCache;
use crate::principal::McpPrincipal;
use crate::servers::{ServerDirectory, ServerLookupError};

/// What every route of every worker shares.
#[derive(Debug)]
pub struct Shared {
    pub(super) directory: Arc<ServerDirectory>,
    pub(super) catalogue: Arc<ToolCatalogue>,
    pub(super) handles: Handles,
    pub(super) inflight: Arc<TenantInflight>,
    /// Announces keys that changed: a stream ends with its key's admission.
    pub(super) keys: Arc<VerifiedKeyCache>,
    /// Tells whether an announced change changed a stream's key.
    pub(super) admission: Arc<KeyAdmission>,
    pub(super) identity: Arc<dyn IdentityAsserter>,
    /// `COLA_PUBLIC_URL`: the assertions' issuer and audiences' base.
    pub(super) public_url: String,
}

/// The parts of a gateway.
#[derive(Debug)]
pub struct GatewayParts {
    pub directory: Arc<ServerDirectory>,
    pub handles: Handles,
    pub inflight: Arc<TenantInflight>,
    pub keys: Arc<VerifiedKeyCache>,
    pub admission: Arc<KeyAdmission>,
    pub identity: Arc<dyn IdentityAsserter>,
    pub public_url: String,
    pub upstream: Arc<dyn Upstream>,
}

/// Why a route could not be taken: the refusal to send, and the outcome
/// for the log line and the metrics.
#[derive(Debug)]
pub struct Closed {
    pub outcome: &'static str,
    pub error: RpcError,
    /// Seconds to wait before trying again, when the refusal says so.
    pub retry_after: Option<u64>,
}

impl Closed {
    fn new(outcome: &'static str, error: RpcError) -> Self {
        Self {
            outcome,
            error,
            retry_after: None,
        }
    }
}

/// The gateway of one worker: the shared state, and an upstream client of
/// its own (see [`GatewayService::for_worker`]).
#[derive(Debug, Clone)]
pub struct GatewayService {
    shared: Arc<Shared>,
    upstream: Arc<dyn Upstream>,
}

impl GatewayService {
    #[must_use]
    pub fn new(parts: GatewayParts) -> Self {
        Self {
            shared: Arc::new(Shared {
                directory: parts.directory,
                catalogue: Arc::new(ToolCatalogue::new()),
                handles: parts.handles,
                inflight: parts.inflight,
                keys: parts.keys,
                admission: parts.admission,
                identity: parts.identity,
                public_url: parts.public_url,
            }),
            upstream: parts.upstream,
        }
    }

    /// This gateway with another upstream client: each worker gets its own,
    /// whose pooled connections live on that worker's runtime.
    #[must_use]
    pub fn for_worker(&self, upstream: Arc<dyn Upstream>) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            upstream,
        }
    }

    /// The route of `principal`'s request to the server `slug` names in its
    /// tenant: refused as an unknown slug when there is none, when it has no
    /// endpoint (verify-only) or when the key holds no grant on it; refused
    /// for a while when the tenant has as many requests in flight as it may.
    ///
    /// # Errors
    /// The refusal to send.
    pub async fn open(&self, principal: McpPrincipal, slug: &str) -> Result<Route, Closed> {
        let started = Instant::now();
        let key = principal.key();
        let server = match self.shared.directory.resolve(key.tenant_id, slug).await {
            Ok(Some(server)) => server,
            Ok(None) => {
                return Err(Closed::new(
                    "unknown_server",
                    RpcError::server_not_reachable(),
                ));
            }
            Err(error) => {
                tracing::warn!(error = %crate::error::chain(&error), "a gateway server lookup failed");
                let error = match error {
                    ServerLookupError::Unavailable(_) => RpcError::registry_unavailable(),
                    ServerLookupError::Corrupt(_) => RpcError::server_unusable(),
                };
                return Err(Closed::new("lookup_failed", error));
            }
        };
        // A verify-only server has no endpoint, and a server the key holds
        // no grant for is one it cannot see: both as if the slug were unknown.
        if server.url.is_none()
            || key
                .permissions
                .scope_on(Surface::Server(server.id))
                .is_none()
        {
            return Err(Closed::new(
                "unknown_server",
                RpcError::server_not_reachable(),
            ));
        }
        let Some(slot) = self.shared.inflight.enter(key.tenant_id) else {
            return Err(Closed {
                retry_after: Some(1),
                ..Closed::new("tenant_busy", RpcError::tenant_busy())
            });
        };
        let binding = Binding {
            tenant: key.tenant_id,
            key: key.key_id,
            server: server.id,
        };
        Ok(Route {
            shared: Arc::clone(&self.shared),
            upstream: Arc::clone(&self.upstream),
            principal,
            server,
            binding,
            started,
            slot: Some(slot),
        })
    }
}
