//! The process's state: the application's services wired to the
//! infrastructure's adapters, then what the routes share. Built in two
//! steps because the public URL (the address bound, by default) is known
//! only between them.

use std::sync::Arc;

use actix_web::web;
use cola_application::{
    ApiKeyRepository, ApiKeyService, AttemptLimiter, CacheInvalidation, Clock,
    ConsoleSessionService, CredentialSealer, GatewayParts, GatewayService, Handles, KeyAdmission,
    KeyAuthenticator, KeyPolicy, KeyReports, KeySetFetcher, KeyVerifier, McpService, PresentedKeys,
    ProviderSignIn, SecretHasher, ServerDirectory, ServerRepository, ServerService,
    ServerServiceParts, ServerTokens, SystemClock, TenantInflight, UsageRecorder, VerifiedKeyCache,
    WriteLimiter,
};
use cola_domain::ExpiryPolicy;
use cola_infrastructure::{
    Argon2Hasher, Database, HasherSettings, HttpKeySetFetcher, IdentityKey, IdentityKeys,
    OidcClientSettings, OidcSignIn, SeaOrmApiKeyRepository, SeaOrmServerRepository, Sealer,
    SecretsKey, SystemHostResolver, UpstreamClient,
};
use zeroize::Zeroizing;

use super::StartupError;
use crate::auth::{JwtVerifier, ManagementAuth};
use crate::config::Settings;
use crate::console::Console;
use crate::foundations::client_ip::ClientIpResolver;
use crate::gateway::Gateway;
use crate::mcp::{McpGate, McpServer};
use crate::observability::metrics::Metrics;
use crate::rest::secret_scanning::SecretScanningKeys;
use crate::rest::verify::VerifyApi;

/// The services and adapters, before the address is bound.
pub(super) struct Services {
    pub repository: Arc<dyn ApiKeyRepository>,
    pub clock: Arc<dyn Clock>,
    pub cache: Arc<VerifiedKeyCache>,
    pub usage: Arc<UsageRecorder>,
    pub keys: Arc<ApiKeyService>,
    pub tokens: Arc<ServerTokens>,
    pub servers: Arc<ServerService>,
    pub directory: Arc<ServerDirectory>,
    /// Every committed change, here or (through the change feed) on
    /// another instance, reaches the caches through this one component.
    pub invalidation: Arc<CacheInvalidation>,
    /// Under `COLA_SECRETS_KEY`: upstream headers, and the gateway's
    /// session ids.
    pub sealer: Option<Arc<Sealer>>,
    /// Every attempt to present a credential, on every surface, is charged
    /// to this one limiter.
    pub attempts: Arc<AttemptLimiter>,
    pub reports: Arc<KeyReports>,
    pub admission: Arc<KeyAdmission>,
    pub verifier: Option<Arc<JwtVerifier>>,
    pub metrics: Arc<Metrics>,
}

/// The key-side adapters every service is built on.
struct Adapters {
    repository: Arc<dyn ApiKeyRepository>,
    server_repository: Arc<dyn ServerRepository>,
    hasher: Arc<dyn SecretHasher>,
    clock: Arc<dyn Clock>,
    cache: Arc<VerifiedKeyCache>,
    usage: Arc<UsageRecorder>,
}

impl Adapters {
    fn new(settings: &Settings, database: &Database) -> Result<Self, StartupError> {
        Ok(Self {
            repository: Arc::new(SeaOrmApiKeyRepository::new(database.clone())),
            server_repository: Arc::new(SeaOrmServerRepository::new(database.clone())),
            hasher: Arc::new(
                Argon2Hasher::new(HasherSettings::default()).map_err(StartupError::Hasher)?,
            ),
            clock: Arc::new(SystemClock),
            cache: Arc::new(
                VerifiedKeyCache::new(settings.keys.auth_cache_ttl)
                    .map_err(StartupError::Randomness)?,
            ),
            usage: Arc::new(UsageRecorder::new()),
        })
    }
}

impl Services {
    pub(super) async fn build(
        settings: &Settings,
        database: &Database,
    ) -> Result<Self, StartupError> {
        let adapters = Adapters::new(settings, database)?;
        let sealer = sealer(settings, adapters.server_repository.as_ref()).await?;
        let credentials = sealer.clone().map(|s| s as Arc<dyn CredentialSealer>);
        let directory = Arc::new(ServerDirectory::new(
            Arc::clone(&adapters.server_repository),
            credentials.clone(),
        ));
        let tokens = Arc::new(ServerTokens::new(Arc::clone(&adapters.server_repository)));
        let invalidation = Arc::new(CacheInvalidation::new(
            Arc::clone(&adapters.cache),
            Arc::clone(&directory),
            Arc::clone(&tokens),
        ));
        let keys = Arc::new(ApiKeyService::new(
            Arc::clone(&adapters.repository),
            Arc::clone(&adapters.server_repository),
            Arc::clone(&adapters.hasher),
            Arc::clone(&adapters.clock),
            Arc::clone(&invalidation),
            key_policy(settings)?,
        ));
        let servers = Arc::new(ServerService::new(ServerServiceParts {
            repository: Arc::clone(&adapters.server_repository),
            resolver: Arc::new(SystemHostResolver),
            sealer: credentials,
            clock: Arc::clone(&adapters.clock),
            allowed: settings.gateway.allowed_networks.clone(),
            invalidation: Arc::clone(&invalidation),
        }));
        let attempts = Arc::new(AttemptLimiter::new(settings.keys.auth_failure_limit));
        let (reports, admission) = key_admission(&adapters, &attempts, &invalidation);
        let metrics = metrics(&adapters, &attempts, database)?;
        Ok(Self {
            verifier: verifier(settings)?,
            repository: adapters.repository,
            clock: adapters.clock,
            cache: adapters.cache,
            usage: adapters.usage,
            keys,
            tokens,
            servers,
            directory,
            invalidation,
            sealer,
            attempts,
            reports,
            admission,
            metrics,
        })
    }
}

/// The metrics, which read the usage recorder, the key cache, the attempt
/// limiter and the pool for their gauges.
fn metrics(
    adapters: &Adapters,
    attempts: &Arc<AttemptLimiter>,
    database: &Database,
) -> Result<Arc<Metrics>, StartupError> {
    let metrics = Metrics::new(
        Arc::clone(&adapters.usage),
        Arc::clone(&adapters.cache),
        Arc::clone(attempts),
        database.clone(),
    )
    .map_err(StartupError::Metrics)?;
    Ok(Arc::new(metrics))
}

fn key_policy(settings: &Settings) -> Result<KeyPolicy, StartupError> {
    Ok(KeyPolicy {
        expiry: ExpiryPolicy::new(
            settings.keys.default_key_ttl_days,
            settings.keys.max_key_ttl_days,
        )
        .map_err(StartupError::KeyPolicy)?,
        max_active_keys_per_user: settings.keys.max_active_keys_per_user,
    })
}

/// The sealer under `COLA_SECRETS_KEY`. Without it, servers that already
/// hold sealed headers could not be reached: that is refused at start.
async fn sealer(
    settings: &Settings,
    servers: &dyn ServerRepository,
) -> Result<Option<Arc<Sealer>>, StartupError> {
    if let Some(key) = &settings.gateway.secrets_key {
        return Ok(Some(Arc::new(Sealer::new(key))));
    }
    let sealed = servers
        .count_with_headers()
        .await
        .map_err(StartupError::Repository)?;
    if sealed > 0 {
        return Err(StartupError::SecretsKeyRequired { sealed });
    }
    Ok(None)
}

/// The key reports and the one admission step, sharing the key lookup.
fn key_admission(
    adapters: &Adapters,
    attempts: &Arc<AttemptLimiter>,
    invalidation: &Arc<CacheInvalidation>,
) -> (Arc<KeyReports>, Arc<KeyAdmission>) {
    let presented = PresentedKeys::new(
        Arc::clone(&adapters.repository),
        Arc::clone(&adapters.hasher),
    );
    let reports = Arc::new(KeyReports::new(
        Arc::clone(&adapters.repository),
        presented.clone(),
        Arc::clone(&adapters.clock),
        Arc::clone(invalidation),
        Arc::clone(attempts),
    ));
    let admission = Arc::new(KeyAdmission::new(Arc::new(KeyAuthenticator::new(
        presented,
        Arc::clone(&adapters.clock),
        Arc::clone(&adapters.cache),
        Arc::clone(&adapters.usage),
        Arc::clone(attempts),
    ))));
    (reports, admission)
}

/// The management JWT verifier, if a key is configured; the provider's
/// documents are fetched by the infrastructure's client, built only when a
/// provider is configured.
fn verifier(settings: &Settings) -> Result<Option<Arc<JwtVerifier>>, StartupError> {
    let Some(jwt) = &settings.jwt else {
        if !settings.dev {
            tracing::warn!(
                "no COLA_JWT_SECRET or COLA_JWT_PUBLIC_KEY_FILE: the management API refuses every \
                 request. For a local demo run `cola-api --dev`; otherwise set COLA_JWT_SECRET \
                 (at least 32 bytes) and mint a token with `cola-api dev-token`."
            );
        }
        return Ok(None);
    };
    let verifier = JwtVerifier::new(jwt, || {
        let fetcher = HttpKeySetFetcher::new().map_err(StartupError::ProviderClient)?;
        Ok::<Arc<dyn KeySetFetcher>, StartupError>(Arc::new(fetcher))
    })?;
    Ok(Some(Arc::new(verifier)))
}

/// What the routes share, as app data. Cloned into every worker.
#[derive(Clone)]
pub(super) struct Shared {
    pub keys: web::Data<ApiKeyService>,
    pub reports: web::Data<KeyReports>,
    pub servers: web::Data<ServerService>,
    pub gateway: Arc<Gateway>,
    pub verify: web::Data<VerifyApi>,
    pub identity: web::Data<IdentityKeys>,
    pub management: web::Data<ManagementAuth>,
    pub gate: web::Data<McpGate>,
    pub mcp_server: web::Data<McpServer>,
    pub metrics: web::Data<Metrics>,
    pub console: web::Data<Console>,
    /// For the request span's `http.client_ip`.
    pub resolver: web::Data<ClientIpResolver>,
    pub write_limiter: web::Data<WriteLimiter>,
    pub secret_scanning: Option<web::Data<SecretScanningKeys>>,
}

impl Shared {
    /// Everything the routes need from `services`, for a service reached at
    /// `public_url`.
    pub(super) fn new(
        settings: &Settings,
        services: &Services,
        public_url: &str,
        console_sessions: ConsoleSessionService,
    ) -> Result<Self, StartupError> {
        let client_ip = ClientIpResolver::new(settings.server.trusted_proxies.clone());
        let identity = Arc::new(identity_keys(settings)?);
        let gateway = gateway(settings, services, Arc::clone(&identity), public_url)?;
        let console = crate::console::build(
            settings,
            services.verifier.clone(),
            public_url,
            Arc::new(console_sessions),
            provider_sign_in(settings, public_url)?,
        );
        let management = ManagementAuth {
            verifier: services.verifier.clone(),
            sessions: console.sessions.clone(),
            limiter: Arc::clone(&services.attempts),
            client_ip: client_ip.clone(),
            dev: settings.dev,
        };
        Ok(Self {
            keys: web::Data::from(Arc::clone(&services.keys)),
            reports: web::Data::from(Arc::clone(&services.reports)),
            servers: web::Data::from(Arc::clone(&services.servers)),
            gateway: Arc::new(gateway),
            verify: web::Data::new(VerifyApi {
                tokens: Arc::clone(&services.tokens),
                verifier: KeyVerifier::new(
                    Arc::clone(&services.admission),
                    settings.keys.auth_cache_ttl,
                ),
            }),
            identity: web::Data::from(identity),
            management: web::Data::new(management),
            gate: web::Data::new(mcp_gate(settings, services, client_ip.clone())),
            mcp_server: web::Data::new(McpServer::new(Arc::new(McpService::new(Arc::clone(
                &services.keys,
            ))))),
            metrics: web::Data::from(Arc::clone(&services.metrics)),
            console: web::Data::new(console),
            resolver: web::Data::new(client_ip),
            write_limiter: web::Data::new(WriteLimiter::new()),
            secret_scanning: settings
                .keys
                .secret_scanning_keys
                .clone()
                .map(web::Data::new),
        })
    }
}

fn mcp_gate(settings: &Settings, services: &Services, client_ip: ClientIpResolver) -> McpGate {
    McpGate {
        admission: Arc::clone(&services.admission),
        metrics: Arc::clone(&services.metrics),
        client_ip,
        allowed_origins: settings.server.allowed_origins.clone(),
    }
}

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
    .map_err(StartupError::SignInClient)?;
    Ok(Some(Box::new(provider)))
}

/// The identity assertions' keys: `COLA_IDENTITY_KEY_FILE` (and the
/// previous key, still published), or a key of this process alone (warned:
/// its assertions stop verifying after a restart and differ per instance).
fn identity_keys(settings: &Settings) -> Result<IdentityKeys, StartupError> {
    let current = match &settings.gateway.identity_key {
        Some(key) => Arc::clone(key),
        None => {
            tracing::warn!(
                "no COLA_IDENTITY_KEY_FILE: identity assertions are signed by a key of this \
                 process, published at /.well-known/jwks.json until it stops"
            );
            Arc::new(IdentityKey::generate().map_err(StartupError::IdentityKey)?)
        }
    };
    Ok(IdentityKeys::new(
        current,
        settings.gateway.identity_previous_key.clone(),
    ))
}

/// The gateway's parts: the server directory, a client whose every
/// connection is checked against the operator's address rules, the
/// per-server tool catalogue, and the session sealer. Without
/// `COLA_SECRETS_KEY` session ids are sealed under a key of this process
/// alone: sessions then work on one instance and end with it (warned).
fn gateway(
    settings: &Settings,
    services: &Services,
    identity: Arc<IdentityKeys>,
    public_url: &str,
) -> Result<Gateway, StartupError> {
    let allowed = settings.gateway.allowed_networks.clone();
    let client = UpstreamClient::new(Arc::new(move |address| allowed.permits(address)))
        .map_err(|e| StartupError::UpstreamClient(e.into()))?;
    let sealer = match &services.sealer {
        Some(sealer) => (**sealer).clone(),
        None => {
            tracing::warn!(
                "no COLA_SECRETS_KEY: gateway sessions are sealed under a key of this process \
                 and do not survive a restart or reach another instance"
            );
            Sealer::new(&SecretsKey::generate().map_err(StartupError::SessionKey)?)
        }
    };
    let service = GatewayService::new(GatewayParts {
        directory: Arc::clone(&services.directory),
        handles: Handles::new(Arc::new(sealer)),
        inflight: TenantInflight::new(settings.gateway.max_inflight_per_tenant),
        keys: Arc::clone(&services.cache),
        admission: Arc::clone(&services.admission),
        identity,
        public_url: public_url.to_owned(),
        upstream: Arc::new(client.clone()),
    });
    Ok(Gateway {
        service,
        client,
        metrics: Arc::clone(&services.metrics),
    })
}
