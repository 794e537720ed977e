//! `Application`: builds the process (its state, its routes, its
//! background tasks) and runs the HTTP server. The same path serves `main`
//! and the end-to-end tests.

mod routes;
mod state;
mod tasks;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::HttpServer;
use actix_web::dev::Server;
use cola_application::{
    ApiKeyRepository, ConsoleSessionService, UsageRecorder, follow_access_changes,
};
use cola_infrastructure::{Database, SeaOrmConsoleSessionRepository};
use thiserror::Error;
use tokio::sync::watch;

use crate::config::Settings;
use state::{Services, Shared};
use tasks::{SHUTDOWN_GRACE, Signals};

/// Why the process cannot start. Each cause is kept as the source; the
/// message names what was being built, and the setting to look at when
/// there is one.
#[derive(Debug, Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] cola_infrastructure::DatabaseError),
    /// `--dev` asked to listen beyond loopback (the whole message).
    #[error("{0}")]
    DevListen(String),
    #[error(
        "invalid configuration: COLA_SECRETS_KEY: required: {sealed} registered server(s) hold encrypted upstream headers"
    )]
    SecretsKeyRequired { sealed: u64 },
    #[error("cannot count the servers that hold encrypted headers: {0}")]
    Repository(#[source] cola_application::RepositoryError),
    #[error("the password hasher: {0}")]
    Hasher(#[source] cola_application::HashError),
    #[error("no OS randomness: {0}")]
    Randomness(#[source] rand::rand_core::OsError),
    #[error("invalid key lifetimes: {0}")]
    KeyPolicy(#[source] cola_domain::InvalidPolicy),
    #[error("metrics: {0}")]
    Metrics(#[source] prometheus::Error),
    /// The management JWT key (the message names the variable).
    #[error(transparent)]
    JwtKey(#[from] crate::auth::jwt::JwtKeyError),
    #[error("COLA_JWT_JWKS_URL: {0}")]
    ProviderClient(#[source] cola_infrastructure::HttpClientError),
    #[error("COLA_OIDC_ISSUER: {0}")]
    SignInClient(#[source] cola_infrastructure::OidcClientError),
    #[error("an identity key: {0}")]
    IdentityKey(#[source] cola_infrastructure::IdentityKeyError),
    #[error("a session key: {0}")]
    SessionKey(#[source] cola_infrastructure::SecretsKeyError),
    #[error("the upstream HTTP client: {0}")]
    UpstreamClient(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Another process holds the address: the message says how to pick
    /// another, since that is what the operator has to do next.
    #[error(
        "cannot listen on {address}: the address is already in use; choose another port with \
         `--port N`, or another address with `--listen HOST:PORT` or COLA_LISTEN"
    )]
    AddressInUse {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
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
    public_url: String,
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
    /// Connects and migrates the database, builds the services, binds
    /// `COLA_LISTEN`, and starts serving and the background tasks.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        // Checked again here, for whoever builds the application without
        // the command line.
        if let Some(refusal) = settings.dev_listen_refusal() {
            return Err(StartupError::DevListen(refusal));
        }
        let database = Database::connect(settings.database.url.expose()).await?;
        log_migrations(&database.migrate().await?);
        let services = Services::build(&settings, &database).await?;
        let (listener, address) = bind(&settings)?;
        let public_url = settings
            .server
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{address}"));
        let console_sessions = ConsoleSessionService::new(
            Arc::new(SeaOrmConsoleSessionRepository::new(database.clone())),
            Arc::clone(&services.clock),
            settings.dev,
        );
        let shared = Shared::new(&settings, &services, &public_url, console_sessions)?;
        let server = serve(shared, listener).map_err(|source| StartupError::Listen {
            address: settings.server.listen,
            source,
        })?;
        let (stop_flusher, flusher) = start_background(&settings, &services);
        Ok(Self {
            server,
            address,
            public_url,
            flusher,
            stop_flusher,
            usage: services.usage,
            repository: services.repository,
            database,
        })
    }

    /// `COLA_PUBLIC_URL`, or `http://` and the address bound; no trailing
    /// slash.
    #[must_use]
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Serves until SIGINT or SIGTERM, lets in-flight requests finish, then
    /// writes every pending usage count before returning. SIGQUIT stops
    /// without waiting for in-flight requests (they are dropped), and still
    /// writes the counts.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        // Installed before the address is announced, so a signal sent as
        // soon as the service is up is never met by the default action.
        let signals = Signals::install()?;
        tokio::spawn(tasks::stop_on_signal(signals, self.server.handle()));
        tracing::info!(address = %self.address, "cola-api listening");
        let served = self.server.await;
        tracing::info!("shutting down: flushing usage counts");
        let _ = self.stop_flusher.send(true);
        let _ = self.flusher.await;
        tasks::final_flush(&self.usage, self.repository.as_ref()).await;
        self.database.close().await;
        tracing::info!("stopped");
        served
    }
}

/// One line for the schema at start-up (sea-orm's own lines, two per
/// migration, are below the default filter).
fn log_migrations(applied: &[String]) {
    match applied.last() {
        None => tracing::info!("database schema up to date"),
        Some(latest) => tracing::info!(
            applied = applied.len(),
            latest = %latest,
            "database migrated"
        ),
    }
}

/// The listener on `COLA_LISTEN` (or `--listen`/`--port`), and the address
/// it got (port 0 picks one).
fn bind(settings: &Settings) -> Result<(TcpListener, SocketAddr), StartupError> {
    let address = settings.server.listen;
    let listen_error = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            StartupError::AddressInUse { address, source }
        } else {
            StartupError::Listen { address, source }
        }
    };
    let listener = TcpListener::bind(settings.server.listen).map_err(listen_error)?;
    let address = listener.local_addr().map_err(listen_error)?;
    Ok((listener, address))
}

/// The HTTP server on `listener`, each worker with the routes and `shared`.
fn serve(shared: Shared, listener: TcpListener) -> std::io::Result<Server> {
    Ok(HttpServer::new(move || routes::app(shared.clone()))
        .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
        // A client that closes its side of the connection is gone: its
        // response stream, and any upstream request relayed into it, ends
        // at once (in 2026-07-28 closing the stream is how a client
        // cancels), not at the next byte written to it.
        .h1_allow_half_closed(false)
        // Streamed answers are written as they come, in small pieces: with
        // Nagle's algorithm each one after the first waits for the client's
        // (delayed) acknowledgement, up to 40 ms per SSE event.
        .tcp_nodelay(true)
        // actix stops at once, without grace, on SIGINT; signals are handled
        // in `run_until_stopped` instead, where every stop is graceful.
        .disable_signals()
        .listen(listener)?
        .run())
}

/// Starts the usage flusher, the provider-key refresher and the follower
/// of other instances' access changes; the flusher's stop switch and handle.
fn start_background(
    settings: &Settings,
    services: &Services,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop_flusher, stopped) = watch::channel(false);
    let flusher = tokio::spawn(tasks::flush_usage_periodically(
        Arc::clone(&services.usage),
        Arc::clone(&services.repository),
        settings.usage.flush_interval,
        stopped.clone(),
    ));
    if let Some(keys) = services.verifier.as_ref().and_then(|v| v.provider_keys()) {
        // Fetched in the background: the service starts (and `/mcp`
        // works) while the provider is unreachable; management JWTs are
        // refused until its keys arrive.
        tokio::spawn(Arc::clone(keys).keep_fresh(stopped.clone()));
    }
    // Other instances' revocations and permission changes reach this
    // instance's cache through the audit trail they are recorded in.
    tokio::spawn(follow_access_changes(
        Arc::clone(&services.repository),
        Arc::clone(&services.invalidation),
        stopped,
    ));
    (stop_flusher, flusher)
}
