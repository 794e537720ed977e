//! `Application`: wires the layers together and runs the HTTP server. The
//! same path serves `main` and the end-to-end tests.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use cola_application::{
    KeySetFetcher, ProviderSignIn,
    ApiKeyRepository, ApiKeyService, AttemptLimiter, Clock, ConsoleSessionService,
    CredentialSealer, GatewayParts, GatewayService, Handles, KeyAdmission, KeyAuthenticator,
    KeyPolicy, KeyReports, KeyVerifier, McpService, PresentedKeys, SecretHasher, ServerDirectory,
    ServerRepository, ServerService, ServerServiceParts, ServerTokens, SystemClock, TenantInflight,
    UsageRecorder, VerifiedKeyCache, follow_access_changes,
};
use cola_domain::ExpiryPolicy;
use cola_infrastructure::{
    HttpKeySetFetcher, OidcClientSettings, OidcSignIn,
    Argon2Hasher, Database, HasherSettings, IdentityKey, IdentityKeys, SeaOrmApiKeyRepository,
    SeaOrmConsoleSessionRepository, SeaOrmServerRepository, Sealer, SecretsKey, SystemHostResolver,
    UpstreamClient,
};
use thiserror::Error;
use tokio::sync::watch;
use zeroize::Zeroizing;
use tracing_actix_web::TracingLogger;

use crate::foundations::client_ip::ClientIpResolver;
use crate::config::Settings;
use crate::gateway::Gateway;
use crate::foundations::json::MAX_BODY_BYTES;
use crate::auth::{JwtVerifier, ManagementAuth};
use crate::mcp::{self, McpGate, McpServer};
use crate::observability::metrics::Metrics;
use crate::foundations::routing::{get_only, not_found};
use crate::rest;
use crate::rest::verify::VerifyApi;
use crate::observability::telemetry::RequestSpan;
use crate::write_limit::WriteLimiter;

/// How long in-flight requests may run after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Attempts at the final usage flush, and the wait before the second; each
/// later wait doubles. A flush fails when the database is briefly away (a
/// failover, a restarting pooler): retrying at once would fail the same way.
const FINAL_FLUSH_ATTEMPTS: u32 = 3;
const FINAL_FLUSH_BACKOFF: Duration = Duration::from_millis(250);

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
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        // Checked again here, for whoever builds the application without
        // the command line.
        if let Some(refusal) = settings.dev_listen_refusal() {
            return Err(StartupError::Config(refusal));
        }
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
        let server_repository: Arc<dyn ServerRepository> =
            Arc::new(SeaOrmServerRepository::new(database.clone()));
        // One sealer under COLA_SECRETS_KEY: upstream headers here, and
        // whatever else must be sealed (the gateway's session ids).
        let sealer = settings
            .secrets_key
            .as_ref()
            .map(|key| Arc::new(Sealer::new(key)));
        let credentials = sealer
            .clone()
            .map(|sealer| sealer as Arc<dyn CredentialSealer>);
        if credentials.is_none() {
            let sealed = server_repository
                .count_with_headers()
                .await
                .map_err(|e| StartupError::Config(cola_application::error_chain(&e)))?;
            if sealed > 0 {
                return Err(StartupError::Config(format!(
                    "invalid configuration: COLA_SECRETS_KEY: required: {sealed} registered \
                     server(s) hold encrypted upstream headers"
                )));
            }
        }
        let directory = Arc::new(ServerDirectory::new(
            Arc::clone(&server_repository),
            credentials.clone(),
        ));
        let keys = Arc::new(ApiKeyService::new(
            Arc::clone(&repository),
            Arc::clone(&server_repository),
            Arc::clone(&hasher),
            Arc::clone(&clock),
            Arc::clone(&cache),
            policy,
        ));
        let tokens = Arc::new(ServerTokens::new(Arc::clone(&server_repository)));
        let servers = web::Data::new(ServerService::new(ServerServiceParts {
            repository: server_repository,
            resolver: Arc::new(SystemHostResolver),
            sealer: credentials,
            clock: Arc::clone(&clock),
            allowed: settings.gateway_allowed_networks.clone(),
            directory: Arc::clone(&directory),
            keys: Arc::clone(&cache),
            tokens: Arc::clone(&tokens),
        }));
        // Every attempt to present a credential, on every surface, is
        // charged to one limiter.
        let attempts = Arc::new(AttemptLimiter::new(settings.auth_failure_limit));
        let presented = PresentedKeys::new(Arc::clone(&repository), hasher);
        let reports = web::Data::new(KeyReports::new(
            Arc::clone(&repository),
            presented.clone(),
            Arc::clone(&clock),
            Arc::clone(&cache),
            Arc::clone(&attempts),
        ));
        let admission = Arc::new(KeyAdmission::new(Arc::new(KeyAuthenticator::new(
            presented,
            Arc::clone(&clock),
            Arc::clone(&cache),
            Arc::clone(&usage),
            Arc::clone(&attempts),
        ))));

        let key_sets: Arc<dyn KeySetFetcher> = Arc::new(
            HttpKeySetFetcher::new()
                .map_err(|e| StartupError::Config(cola_application::error_chain(&e)))?,
        );
        let verifier = settings
            .jwt
            .as_ref()
            .map(|jwt| JwtVerifier::new(jwt, &key_sets))
            .transpose()
            .map_err(StartupError::Config)?
            .map(Arc::new);
        if verifier.is_none() && !settings.dev {
            tracing::warn!(
                "no COLA_JWT_SECRET or COLA_JWT_PUBLIC_KEY_FILE: the management API refuses every \
                 request. For a local demo run `cola-api --dev`; otherwise set COLA_JWT_SECRET \
                 (at least 32 bytes) and mint a token with `cola-api dev-token`."
            );
        }
        let client_ip = ClientIpResolver::new(settings.trusted_proxies.clone());
        // For the request span's `http.client_ip`.
        let resolver = web::Data::new(client_ip.clone());
        let write_limiter = web::Data::new(WriteLimiter::new());
        let metrics = web::Data::new(
            Metrics::new(
                Arc::clone(&usage),
                Arc::clone(&cache),
                Arc::clone(&attempts),
                database.clone(),
            )
            .map_err(|e| StartupError::Config(format!("metrics: {e}")))?,
        );
        let verify = web::Data::new(VerifyApi {
            tokens,
            verifier: KeyVerifier::new(Arc::clone(&admission), settings.auth_cache_ttl),
        });
        let gate = web::Data::new(McpGate {
            admission: Arc::clone(&admission),
            metrics: metrics.clone().into_inner(),
            client_ip: client_ip.clone(),
            allowed_origins: settings.allowed_origins.clone(),
        });
        let secret_scanning = settings.secret_scanning_keys.clone().map(web::Data::new);
        let mcp_server =
            web::Data::new(McpServer::new(Arc::new(McpService::new(Arc::clone(&keys)))));
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
        let public_url = settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{address}"));
        let identity = Arc::new(identity_keys(&settings)?);
        let gateway = build_gateway(
            &settings,
            directory,
            sealer,
            metrics.clone().into_inner(),
            GatewayIdentity {
                keys: Arc::clone(&identity),
                public_url: public_url.clone(),
            },
            Arc::clone(&cache),
            Arc::clone(&admission),
        )?;
        let identity = web::Data::from(identity);
        let console_sessions = Arc::new(ConsoleSessionService::new(
            Arc::new(SeaOrmConsoleSessionRepository::new(database.clone())),
            Arc::clone(&clock),
            settings.dev,
        ));
        let console = crate::console::build(
            &settings,
            verifier.clone(),
            &public_url,
            console_sessions,
            provider_sign_in(&settings, &public_url)?,
        );
        let management = web::Data::new(ManagementAuth {
            verifier: verifier.clone(),
            sessions: console.sessions.clone(),
            limiter: attempts,
            client_ip: client_ip.clone(),
        });
        let console = web::Data::new(console);
        let server = HttpServer::new(move || {
            let mut app = App::new();
            if let Some(keys) = &secret_scanning {
                app = app.app_data(keys.clone());
            }
            app.wrap(from_fn(crate::observability::metrics::record))
                .wrap(from_fn(crate::observability::telemetry::echo_request_id))
                .wrap(TracingLogger::<RequestSpan>::new())
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                .app_data(resolver.clone())
                .app_data(write_limiter.clone())
                .app_data(keys.clone())
                .app_data(reports.clone())
                .app_data(servers.clone())
                .app_data(web::Data::new(gateway.for_worker()))
                .app_data(verify.clone())
                .app_data(identity.clone())
                .app_data(management.clone())
                .app_data(gate.clone())
                .app_data(mcp_server.clone())
                .app_data(metrics.clone())
                .app_data(console.clone())
                // Routes are tried in this order, so the busiest come first,
                // before the key routes whose `{id}` patterns need a regex.
                .configure(mcp::configure)
                .configure(crate::gateway::configure)
                .service(get_only("/health", rest::health::health))
                .service(get_only("/ready", rest::health::ready))
                .service(get_only("/metrics", crate::observability::metrics::scrape))
                .service(get_only(
                    "/api/openapi.json",
                    crate::rest::openapi::document,
                ))
                // Before the key routes: `/api/mcp/keys/report` would
                // otherwise be taken for a key id.
                .configure(rest::report::configure)
                .configure(rest::keys::configure)
                .configure(crate::console::configure)
                .configure(rest::users::configure)
                .configure(rest::servers::configure)
                .configure(rest::verify::configure)
                .default_service(web::to(not_found))
        })
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
        if let Some(keys) = verifier.as_ref().and_then(|v| v.provider_keys()) {
            // Fetched in the background: the service starts (and `/mcp`
            // works) while the provider is unreachable; management JWTs are
            // refused until its keys arrive.
            tokio::spawn(Arc::clone(keys).keep_fresh(stopped.clone()));
        }
        tokio::spawn(follow_access_changes(
            Arc::clone(&repository),
            cache,
            stopped,
        ));

        Ok(Self {
            server,
            address,
            public_url,
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
        tokio::spawn(stop_on_signal(signals, self.server.handle()));
        tracing::info!(address = %self.address, "cola-api listening");
        let served = self.server.await;
        tracing::info!("shutting down: flushing usage counts");
        let _ = self.stop_flusher.send(true);
        let _ = self.flusher.await;
        let (usage, repository) = (&self.usage, self.repository.as_ref());
        let _ = retry_with_backoff(
            FINAL_FLUSH_ATTEMPTS,
            FINAL_FLUSH_BACKOFF,
            tokio::time::sleep,
            |attempt| async move {
                let flushed = usage.flush(repository).await;
                if let Err(error) = &flushed {
                    tracing::error!(error = %cola_application::error_chain(error), attempt, pending = usage.pending(), "final usage flush failed");
                }
                flushed
            },
        )
        .await;
        self.database.close().await;
        tracing::info!("stopped");
        served
    }
}

/// Runs `operation` (given the attempt's number, from 1) up to `attempts`
/// times until it succeeds, sleeping `first_wait` after the first failure and
/// twice as long after each later one; the last outcome. `sleep` is
/// `tokio::time::sleep`, or a recorder in tests.
async fn retry_with_backoff<T, E, S, F, Fut>(
    attempts: u32,
    first_wait: Duration,
    sleep: impl Fn(Duration) -> S,
    mut operation: F,
) -> Result<T, E>
where
    S: std::future::Future<Output = ()>,
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut wait = first_wait;
    let mut attempt = 1;
    loop {
        let outcome = operation(attempt).await;
        if outcome.is_ok() || attempt >= attempts {
            return outcome;
        }
        sleep(wait).await;
        wait = wait.saturating_mul(2);
        attempt += 1;
    }
}

/// The stop signals, registered with the OS.
#[cfg(unix)]
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// The first signal's name, and whether it asks for a graceful stop.
    async fn first(&mut self) -> (&'static str, bool) {
        tokio::select! {
            _ = self.interrupt.recv() => ("SIGINT", true),
            _ = self.terminate.recv() => ("SIGTERM", true),
            _ = self.quit.recv() => ("SIGQUIT", false),
        }
    }
}

/// Elsewhere only Ctrl-C can be awaited.
#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    #[allow(clippy::unnecessary_wraps)]
    fn install() -> std::io::Result<Self> {
        Ok(Self)
    }

    async fn first(&mut self) -> (&'static str, bool) {
        let _ = tokio::signal::ctrl_c().await;
        ("Ctrl-C", true)
    }
}

/// Stops the server at the first signal: gracefully on SIGINT (Ctrl-C, and
/// what some supervisors send) as on SIGTERM, so that no admitted request is
/// dropped, and at once on SIGQUIT, for an operator who will not wait.
async fn stop_on_signal(mut signals: Signals, server: ServerHandle) {
    let (name, graceful) = signals.first().await;
    if graceful {
        tracing::info!(
            signal = name,
            grace_secs = SHUTDOWN_GRACE.as_secs(),
            "stopping: finishing in-flight requests"
        );
    } else {
        tracing::warn!(
            signal = name,
            "stopping at once: in-flight requests are dropped"
        );
    }
    server.stop(graceful).await;
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
            tracing::warn!(error = %cola_application::error_chain(&error), pending = usage.pending(), "usage flush failed; will retry");
        }
    }
}

/// The gateway's parts: the server directory, a client whose every
/// connection is checked against the operator's address rules, the
/// per-server tool catalogue, and the session sealer. Without
/// `COLA_SECRETS_KEY` session ids are sealed under a key of this process
/// alone: sessions then work on one instance and end with it (warned).
/// The identity assertions' keys: `COLA_IDENTITY_KEY_FILE` (and the
/// previous key, still published), or a key of this process alone (warned:
/// its assertions stop verifying after a restart and differ per instance).
/// The console's sign-in through the provider, when an OIDC client is
/// configured and `--dev` does not sign in as the demo admin instead.
fn provider_sign_in(
    settings: &Settings,
    public_url: &str,
) -> Result<Option<Box<dyn ProviderSignIn>>, StartupError> {
    let Some(client) = settings.oidc_client.as_ref().filter(|_| !settings.dev) else {
        return Ok(None);
    };
    let provider = OidcSignIn::new(OidcClientSettings {
        issuer: client.issuer.clone(),
        client_id: client.client_id.clone(),
        client_secret: Zeroizing::new(client.client_secret.expose().to_owned()),
        redirect_url: format!("{public_url}{}", crate::console::CALLBACK_PATH),
    })
    .map_err(|e| {
        StartupError::Config(format!(
            "COLA_OIDC_ISSUER: {}",
            cola_application::error_chain(&e)
        ))
    })?;
    Ok(Some(Box::new(provider)))
}

fn identity_keys(settings: &Settings) -> Result<IdentityKeys, StartupError> {
    let current = match &settings.identity_key {
        Some(key) => Arc::clone(key),
        None => {
            tracing::warn!(
                "no COLA_IDENTITY_KEY_FILE: identity assertions are signed by a key of this \
                 process, published at /.well-known/jwks.json until it stops"
            );
            Arc::new(
                IdentityKey::generate()
                    .map_err(|e| StartupError::Config(format!("an identity key: {e}")))?,
            )
        }
    };
    Ok(IdentityKeys::new(
        current,
        settings.identity_previous_key.clone(),
    ))
}

/// What the gateway signs identity assertions with, and as whom.
struct GatewayIdentity {
    keys: Arc<IdentityKeys>,
    public_url: String,
}

fn build_gateway(
    settings: &Settings,
    directory: Arc<ServerDirectory>,
    sealer: Option<Arc<Sealer>>,
    metrics: Arc<Metrics>,
    identity: GatewayIdentity,
    keys: Arc<VerifiedKeyCache>,
    admission: Arc<KeyAdmission>,
) -> Result<Gateway, StartupError> {
    let allowed = settings.gateway_allowed_networks.clone();
    let client = UpstreamClient::new(Arc::new(move |address| allowed.permits(address)))
        .map_err(|e| StartupError::Config(format!("the upstream HTTP client: {e}")))?;
    let sealer = match sealer {
        Some(sealer) => (*sealer).clone(),
        None => {
            tracing::warn!(
                "no COLA_SECRETS_KEY: gateway sessions are sealed under a key of this process \
                 and do not survive a restart or reach another instance"
            );
            let key = SecretsKey::generate()
                .map_err(|e| StartupError::Config(format!("a session key: {e}")))?;
            Sealer::new(&key)
        }
    };
    let service = GatewayService::new(GatewayParts {
        directory,
        handles: Handles::new(Arc::new(sealer)),
        inflight: TenantInflight::new(settings.gateway_max_inflight_per_tenant),
        keys,
        admission,
        identity: identity.keys,
        public_url: identity.public_url,
        upstream: Arc::new(client.clone()),
    });
    Ok(Gateway {
        service,
        client,
        metrics,
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// Runs `retry_with_backoff` on an operation that fails `failures` times;
    /// returns the outcome, the attempts made and the waits asked for.
    async fn retried(failures: u32) -> (Result<u32, u32>, u32, Vec<Duration>) {
        let waits = RefCell::new(Vec::new());
        let mut calls = 0;
        let outcome = retry_with_backoff(
            FINAL_FLUSH_ATTEMPTS,
            FINAL_FLUSH_BACKOFF,
            |wait| {
                waits.borrow_mut().push(wait);
                std::future::ready(())
            },
            |attempt| {
                calls += 1;
                std::future::ready(if attempt > failures {
                    Ok(attempt)
                } else {
                    Err(attempt)
                })
            },
        )
        .await;
        (outcome, calls, waits.into_inner())
    }

    #[tokio::test]
    async fn the_final_flush_waits_longer_between_each_attempt() {
        let (ms250, ms500) = (Duration::from_millis(250), Duration::from_millis(500));
        assert_eq!(retried(0).await, (Ok(1), 1, vec![]));
        assert_eq!(retried(1).await, (Ok(2), 2, vec![ms250]));
        assert_eq!(retried(2).await, (Ok(3), 3, vec![ms250, ms500]));
        // No wait after the last attempt: nothing follows it.
        assert_eq!(retried(5).await, (Err(3), 3, vec![ms250, ms500]));
    }
}
