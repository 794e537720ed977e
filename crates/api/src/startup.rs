//! `Application`: wires the layers together and runs the HTTP server. The
//! same path serves `main` and the end-to-end tests.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use cola_application::{
    ApiKeyRepository, ApiKeyService, Clock, KeyAuthenticator, KeyPolicy, SecretHasher, SystemClock,
    UsageRecorder, VerifiedKeyCache, follow_access_changes,
};
use cola_domain::ExpiryPolicy;
use cola_infrastructure::{Argon2Hasher, Database, HasherSettings, SeaOrmApiKeyRepository};
use thiserror::Error;
use tokio::sync::watch;
use tracing_actix_web::TracingLogger;

use crate::client_ip::ClientIpResolver;
use crate::config::Settings;
use crate::json::MAX_BODY_BYTES;
use crate::jwt::{JwtVerifier, ManagementAuth};
use crate::mcp::{self, McpGate, McpServer};
use crate::metrics::Metrics;
use crate::rate_limit::FailureLimiter;
use crate::routes;
use crate::telemetry::RequestSpan;

/// How long in-flight requests may run after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] cola_infrastructure::DatabaseError),
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub struct Application {
    server: Server,
    address: SocketAddr,
    flusher: tokio::task::JoinHandle<()>,
    stop_flusher: watch::Sender<bool>,
    usage: Arc<UsageRecorder>,
    repository: Arc<dyn ApiKeyRepository>,
    database: Database,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let database = Database::connect(settings.database_url.expose()).await?;
        database.migrate().await?;

        let repository: Arc<dyn ApiKeyRepository> =
            Arc::new(SeaOrmApiKeyRepository::new(database.clone()));
        let hasher: Arc<dyn SecretHasher> = Arc::new(
            Argon2Hasher::new(HasherSettings::default())
                .map_err(|e| StartupError::Config(e.to_string()))?,
        );
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let cache = Arc::new(
            VerifiedKeyCache::new(settings.auth_cache_ttl)
                .map_err(|e| StartupError::Config(format!("no OS randomness: {e}")))?,
        );
        let usage = Arc::new(UsageRecorder::new());
        let policy = KeyPolicy {
            expiry: ExpiryPolicy::new(settings.default_key_ttl_days, settings.max_key_ttl_days)
                .map_err(|e| StartupError::Config(e.to_string()))?,
            max_active_keys_per_user: settings.max_active_keys_per_user,
        };
        let keys = Arc::new(ApiKeyService::new(
            Arc::clone(&repository),
            Arc::clone(&hasher),
            Arc::clone(&clock),
            Arc::clone(&cache),
            policy,
        ));
        let authenticator = Arc::new(KeyAuthenticator::new(
            Arc::clone(&repository),
            hasher,
            Arc::clone(&clock),
            Arc::clone(&cache),
            Arc::clone(&usage),
        ));

        let verifier = settings
            .jwt
            .as_ref()
            .map(JwtVerifier::new)
            .transpose()
            .map_err(StartupError::Config)?
            .map(Arc::new);
        if verifier.is_none() {
            tracing::warn!(
                "no COLA_JWT_SECRET or COLA_JWT_PUBLIC_KEY_FILE: the management API refuses every \
                 request. For a local demo run `cola-api --dev`; otherwise set COLA_JWT_SECRET \
                 (at least 32 bytes) and mint a token with `cola-api dev-token`."
            );
        }
        let client_ip = ClientIpResolver::new(settings.trusted_proxies.clone());
        // For the request span's `http.client_ip`.
        let resolver = web::Data::new(client_ip.clone());
        let limiter = Arc::new(FailureLimiter::new(settings.auth_failure_limit));
        let management = web::Data::new(ManagementAuth {
            verifier,
            limiter: Arc::clone(&limiter),
            client_ip: client_ip.clone(),
        });
        let metrics = web::Data::new(
            Metrics::new(Arc::clone(&usage), Arc::clone(&cache), database.clone())
                .map_err(|e| StartupError::Config(format!("metrics: {e}")))?,
        );
        let gate = web::Data::new(McpGate {
            authenticator,
            metrics: metrics.clone().into_inner(),
            limiter,
            client_ip,
            allowed_origins: settings.allowed_origins.clone(),
        });
        let mcp_server = web::Data::new(McpServer::new(Arc::clone(&keys)));
        let keys = web::Data::from(keys);

        let listener =
            TcpListener::bind(settings.listen).map_err(|source| StartupError::Listen {
                address: settings.listen,
                source,
            })?;
        let address = listener
            .local_addr()
            .map_err(|source| StartupError::Listen {
                address: settings.listen,
                source,
            })?;
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(crate::metrics::record))
                .wrap(from_fn(crate::telemetry::echo_request_id))
                .wrap(TracingLogger::<RequestSpan>::new())
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                .app_data(resolver.clone())
                .app_data(keys.clone())
                .app_data(management.clone())
                .app_data(gate.clone())
                .app_data(mcp_server.clone())
                .app_data(metrics.clone())
                // Routes are tried in this order, so the busiest come first,
                // before the key routes whose `{id}` patterns need a regex.
                .configure(mcp::configure)
                .service(routes::get_only("/health", routes::health::health))
                .service(routes::get_only("/ready", routes::health::ready))
                .service(routes::get_only("/metrics", crate::metrics::scrape))
                .service(routes::get_only(
                    "/api/openapi.json",
                    crate::openapi::document,
                ))
                .configure(routes::keys::configure)
                .default_service(web::to(routes::not_found))
        })
        .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
        .listen(listener)
        .map_err(|source| StartupError::Listen {
            address: settings.listen,
            source,
        })?
        .run();

        let (stop_flusher, stopped) = watch::channel(false);
        let flusher = tokio::spawn(flush_usage_periodically(
            Arc::clone(&usage),
            Arc::clone(&repository),
            settings.usage_flush_interval,
            stopped.clone(),
        ));
        // Other instances' revocations and permission changes reach this
        // instance's cache through the audit trail they are recorded in.
        tokio::spawn(follow_access_changes(
            Arc::clone(&repository),
            cache,
            clock,
            stopped,
        ));

        Ok(Self {
            server,
            address,
            flusher,
            stop_flusher,
            usage,
            repository,
            database,
        })
    }

    #[must_use]
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves until SIGINT or SIGTERM, lets in-flight requests finish, then
    /// writes every pending usage count before returning.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        tracing::info!(address = %self.address, "cola-api listening");
        let served = self.server.await;
        tracing::info!("shutting down: flushing usage counts");
        let _ = self.stop_flusher.send(true);
        let _ = self.flusher.await;
        for attempt in 1..=3 {
            match self.usage.flush(self.repository.as_ref()).await {
                Ok(_) => break,
                Err(error) => {
                    tracing::error!(%error, attempt, pending = self.usage.pending(), "final usage flush failed")
                }
            }
        }
        self.database.close().await;
        tracing::info!("stopped");
        served
    }
}

async fn flush_usage_periodically(
    usage: Arc<UsageRecorder>,
    repository: Arc<dyn ApiKeyRepository>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        if let Err(error) = usage.flush(repository.as_ref()).await {
            tracing::warn!(%error, pending = usage.pending(), "usage flush failed; will retry");
        }
    }
}
