//! The `cola-api` command line: `serve` (the default), `migrate`,
//! `dev-token` and `check-config`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use chrono::Duration;
use clap::{Args, Parser, Subcommand, ValueEnum};
use cola_application::Role;
use cola_domain::{AllowedNetworks, TenantId, UserId};
use cola_infrastructure::{HttpKeySetFetcher, IdentityKey, SecretsKey};
use uuid::Uuid;

use crate::app::Application;
use crate::auth::jwks::ProviderKeys;
use crate::auth::jwt::mint_token;
use crate::config::{JwksSource, JwtKey, JwtSettings, Secret, Settings};

/// Where `--dev` keeps the JWT secret it generates, so tokens survive restarts.
pub const DEV_SECRET_FILE: &str = ".cola-dev-secret";
/// Where `--dev` keeps the secrets key it generates, so the upstream headers
/// it sealed still open after a restart.
pub const DEV_SECRETS_KEY_FILE: &str = ".cola-dev-secrets-key";
/// Where `--dev` keeps the identity key it generates, so servers that
/// cached its JWKS keep verifying assertions after a restart.
pub const DEV_IDENTITY_KEY_FILE: &str = ".cola-dev-identity-key.pem";
/// The demo tenant and user `--dev` and `dev-token` use by default.
pub const DEMO_TENANT: Uuid = Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_0001);
pub const DEMO_USER: Uuid = Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_0002);

#[derive(Debug, Parser)]
#[command(
    name = "cola-api",
    version,
    about = "Cola: self-hosted API keys for MCP servers",
    long_about = "Cola issues and verifies API keys for MCP clients. Without a subcommand it serves \
                  (configured by COLA_* environment variables; see `cola-api check-config`)."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve(ServeArgs),
    /// Apply database migrations and show their status.
    Migrate,
    /// Print a management JWT signed with the configured secret.
    DevToken(DevTokenArgs),
    /// Validate the environment and print the effective settings (with
    /// --dev, --listen or --port: those `serve` would use with them).
    CheckConfig(ServeArgs),
}

#[derive(Debug, Clone, Args)]
struct ServeArgs {
    /// Local demo: without a JWT setting, generate a secret (kept in
    /// .cola-dev-secret) and print a ready-to-use admin token.
    #[arg(long)]
    dev: bool,
    /// Listen on this address and port, such as 127.0.0.1:8090 (instead of
    /// COLA_LISTEN).
    #[arg(long, value_name = "HOST:PORT", value_parser = crate::config::parse_listen)]
    listen: Option<SocketAddr>,
    /// Listen on this port, on COLA_LISTEN's (or --listen's) address.
    #[arg(long, value_name = "N")]
    port: Option<u16>,
}

impl ServeArgs {
    /// Where to listen: `--listen`, then `--port` on top, else `configured`.
    fn listen(&self, configured: SocketAddr) -> SocketAddr {
        let mut listen = self.listen.unwrap_or(configured);
        if let Some(port) = self.port {
            listen.set_port(port);
        }
        listen
    }
}

/// A tenant or user id, with an error that says what is expected.
fn parse_uuid(raw: &str) -> Result<Uuid, String> {
    Uuid::parse_str(raw.trim())
        .map_err(|_| "must be a UUID, such as 7f0b5c3e-6a44-4f1e-9f61-0a3c1b2d4e5f".to_owned())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoleArg {
    Admin,
    Member,
}

#[derive(Debug, Args)]
struct DevTokenArgs {
    /// Tenant id (UUID) [default: the demo tenant]
    #[arg(long, value_parser = parse_uuid)]
    tenant: Option<Uuid>,
    /// User id (UUID), the token's `sub` [default: the demo user]
    #[arg(long, value_parser = parse_uuid)]
    user: Option<Uuid>,
    #[arg(long, value_enum, default_value = "admin")]
    role: RoleArg,
    /// Hours until the token expires
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(i64).range(1..=8760))]
    ttl_hours: i64,
}

impl Cli {
    /// Runs the chosen command; the process exits with the returned code.
    pub async fn run(self) -> ExitCode {
        match self.command {
            None => serve(self.serve).await,
            Some(Command::Serve(args)) => serve(args).await,
            Some(Command::Migrate) => migrate().await,
            Some(Command::DevToken(args)) => dev_token(&args),
            Some(Command::CheckConfig(args)) => check_config(&args).await,
        }
    }
}

fn load_settings() -> Result<Settings, ExitCode> {
    Settings::from_env().map_err(|errors| {
        eprintln!("{errors}");
        ExitCode::from(2)
    })
}

/// The secret `--dev` uses: the configured one, or one generated once and
/// kept in [`DEV_SECRET_FILE`].
fn dev_secret(path: &Path) -> std::io::Result<String> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let existing = existing.trim().to_owned();
        if existing.len() >= 32 {
            return Ok(existing);
        }
    }
    let mut bytes = [0u8; 32];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut bytes)
        .map_err(std::io::Error::other)?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(path, &secret)?;
    Ok(secret)
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

/// The secrets key `--dev` uses when `COLA_SECRETS_KEY` is unset: the one
/// kept in [`DEV_SECRETS_KEY_FILE`], or a new one written there. A file that
/// holds something else is an error, not replaced: headers sealed under the
/// key it held would no longer open.
fn dev_secrets_key(path: &Path) -> Result<SecretsKey, String> {
    match std::fs::read_to_string(path) {
        Ok(existing) => SecretsKey::parse_base64(&existing)
            .map_err(|e| format!("{} holds no secrets key: {e}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let key = SecretsKey::generate().map_err(|e| e.to_string())?;
            write_private(path, &key.to_base64())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(key)
        }
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

/// The identity key `--dev` uses when `COLA_IDENTITY_KEY_FILE` is unset:
/// the one kept in [`DEV_IDENTITY_KEY_FILE`], or a new Ed25519 key written
/// there. A file that holds something else is an error, not replaced.
fn dev_identity_key(path: &Path) -> Result<IdentityKey, String> {
    match std::fs::read_to_string(path) {
        Ok(existing) => IdentityKey::from_pem(&existing)
            .map_err(|e| format!("{} holds no identity key: {e}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let key = IdentityKey::generate().map_err(|e| e.to_string())?;
            let pem = key.to_pem().map_err(|e| e.to_string())?;
            write_private(path, &pem)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(key)
        }
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    let mut settings = match load_settings() {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    crate::observability::telemetry::init(
        &settings.telemetry.log_filter,
        settings.telemetry.log_format,
    );
    settings.server.listen = args.listen(settings.server.listen);
    let dev_secret = if args.dev {
        match prepare_dev(&mut settings) {
            Ok(secret) => Some(secret),
            Err(code) => return code,
        }
    } else {
        None
    };
    let issuer = settings.jwt.as_ref().and_then(|j| j.issuer.clone());
    let audience = settings.jwt.as_ref().and_then(|j| j.audience.clone());
    let application = match Application::build(settings).await {
        Ok(application) => application,
        Err(error) => {
            eprintln!("cola-api cannot start: {error}");
            return ExitCode::from(1);
        }
    };
    if let Some(secret) = dev_secret {
        print_dev_banner(
            application.public_url(),
            &secret,
            issuer.as_deref(),
            audience.as_deref(),
        );
    }
    match application.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cola-api stopped with an error: {error}");
            ExitCode::from(1)
        }
    }
}

/// What `--dev` decides without touching a file: the loopback address it
/// must listen on, the HS256 JWT setting it mints with (no other), and
/// loopback upstreams allowed. `Err`: why it refuses to run. `serve --dev`
/// and `check-config --dev` both apply it.
fn dev_rules(settings: &mut Settings) -> Result<(), String> {
    settings.dev = true;
    if let Some(refusal) = settings.dev_listen_refusal() {
        return Err(refusal);
    }
    if matches!(&settings.jwt, Some(jwt) if !matches!(jwt.key, JwtKey::Secret(_))) {
        return Err(DEV_JWT_CONFLICT.to_owned());
    }
    // A local demo registers servers on the same machine.
    if settings.gateway.allowed_networks.is_empty() {
        settings.gateway.allowed_networks = AllowedNetworks::loopback();
    }
    Ok(())
}

/// `--dev`: its rules ([`dev_rules`]), then the HS256 secret (kept in
/// [`DEV_SECRET_FILE`] unless `COLA_JWT_SECRET` is set) and the secrets and
/// identity keys kept beside it, all checked before anything is written;
/// the secret, to mint the demo token with.
fn prepare_dev(settings: &mut Settings) -> Result<String, ExitCode> {
    dev_rules(settings).map_err(|refusal| {
        eprintln!("{refusal}");
        ExitCode::from(2)
    })?;
    let secret = dev_jwt_secret(settings)?;
    if settings.gateway.secrets_key.is_none() {
        let key = dev_secrets_key(&PathBuf::from(DEV_SECRETS_KEY_FILE)).map_err(dev_failure)?;
        settings.gateway.secrets_key = Some(key);
    }
    if settings.gateway.identity_key.is_none() {
        let key = dev_identity_key(&PathBuf::from(DEV_IDENTITY_KEY_FILE)).map_err(dev_failure)?;
        settings.gateway.identity_key = Some(std::sync::Arc::new(key));
    }
    Ok(secret)
}

fn dev_failure(error: String) -> ExitCode {
    eprintln!("--dev: {error}");
    ExitCode::from(1)
}

const DEV_JWT_CONFLICT: &str = "--dev mints HS256 tokens; it cannot be combined with \
     COLA_JWT_PUBLIC_KEY_FILE, COLA_JWT_JWKS_URL or COLA_OIDC_ISSUER";

/// The HS256 secret `--dev` mints with: `COLA_JWT_SECRET`, or the one kept
/// in [`DEV_SECRET_FILE`], which then becomes the JWT setting ([`dev_rules`]
/// has refused every other JWT setting).
fn dev_jwt_secret(settings: &mut Settings) -> Result<String, ExitCode> {
    match &settings.jwt {
        Some(JwtSettings {
            key: JwtKey::Secret(secret),
            ..
        }) => Ok(secret.expose().to_owned()),
        _ => {
            let secret = dev_secret(&PathBuf::from(DEV_SECRET_FILE)).map_err(|error| {
                eprintln!("--dev: cannot keep a secret in {DEV_SECRET_FILE}: {error}");
                ExitCode::from(1)
            })?;
            settings.jwt = Some(JwtSettings {
                key: JwtKey::Secret(Secret::new(secret.clone())),
                issuer: None,
                audience: None,
                claims: crate::config::ClaimNames::default(),
            });
            Ok(secret)
        }
    }
}

/// What `--dev` prints once serving: where the console is, a demo admin
/// token, and the first request to make with it.
#[allow(clippy::print_stdout)]
fn print_dev_banner(base: &str, secret: &str, issuer: Option<&str>, audience: Option<&str>) {
    let token = match mint_token(
        secret,
        TenantId::from_uuid(DEMO_TENANT),
        UserId::from_uuid(DEMO_USER),
        Role::Admin,
        Duration::hours(24),
        issuer,
        audience,
    ) {
        Ok(token) => token,
        Err(error) => {
            eprintln!("--dev: cannot mint a demo token: {error}");
            return;
        }
    };
    println!(
        "\nCola dev mode: {base}\n\n\
         Open the console (signs you in as the demo admin):\n\n  {base}/console\n\n\
         Demo admin token (tenant {DEMO_TENANT}, user {DEMO_USER}, valid 24 h):\n\n  \
         export TOKEN={token}\n\n\
         Create a key (its secret is shown once):\n\n  \
         curl -s -X POST {base}/api/mcp/keys -H \"Authorization: Bearer $TOKEN\" \
         -H 'Content-Type: application/json' -d '{{\"name\":\"my laptop\"}}'\n\n\
         Then point an MCP client at {base}/mcp with the header \"Authorization: Bearer cola_…\".\n\
         More tokens: cola-api dev-token --role member --user <uuid>\n"
    );
}

#[allow(clippy::print_stdout)]
async fn migrate() -> ExitCode {
    let settings = match load_settings() {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let result = async {
        let database =
            cola_infrastructure::Database::connect(settings.database.url.expose()).await?;
        database.migrate().await?;
        let status = database.migration_status().await?;
        database.close().await;
        Ok::<_, cola_infrastructure::DatabaseError>(status)
    }
    .await;
    match result {
        Ok(status) => {
            for migration in status {
                let state = if migration.applied {
                    "applied"
                } else {
                    "pending"
                };
                println!("{state:8} {}", migration.name);
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cola-api migrate: {error}");
            ExitCode::from(1)
        }
    }
}

#[allow(clippy::print_stdout)]
fn dev_token(args: &DevTokenArgs) -> ExitCode {
    let settings = match load_settings() {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let (secret, issuer, audience) = match &settings.jwt {
        Some(JwtSettings {
            key: JwtKey::Secret(secret),
            issuer,
            audience,
            ..
        }) => (secret.expose().to_owned(), issuer.clone(), audience.clone()),
        Some(_) => {
            eprintln!(
                "dev-token signs with COLA_JWT_SECRET (HS256); with COLA_JWT_PUBLIC_KEY_FILE, tokens come from your identity provider"
            );
            return ExitCode::from(2);
        }
        None => match std::fs::read_to_string(DEV_SECRET_FILE) {
            Ok(secret) if secret.trim().len() >= 32 => (secret.trim().to_owned(), None, None),
            _ => {
                eprintln!(
                    "dev-token needs COLA_JWT_SECRET (at least 32 bytes), or run `cola-api --dev` once in this directory"
                );
                return ExitCode::from(2);
            }
        },
    };
    let role = match args.role {
        RoleArg::Admin => Role::Admin,
        RoleArg::Member => Role::Member,
    };
    match mint_token(
        &secret,
        TenantId::from_uuid(args.tenant.unwrap_or(DEMO_TENANT)),
        UserId::from_uuid(args.user.unwrap_or(DEMO_USER)),
        role,
        Duration::hours(args.ttl_hours),
        issuer.as_deref(),
        audience.as_deref(),
    ) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("dev-token: {error}");
            ExitCode::from(1)
        }
    }
}

#[allow(clippy::print_stdout)]
async fn check_config(args: &ServeArgs) -> ExitCode {
    match Settings::from_env() {
        Ok(mut settings) => {
            settings.server.listen = args.listen(settings.server.listen);
            if args.dev
                && let Err(refusal) = dev_rules(&mut settings)
            {
                eprintln!("{refusal}");
                return ExitCode::from(2);
            }
            for (name, value) in settings.describe() {
                let value = if args.dev {
                    dev_kept(&settings, name).unwrap_or(value)
                } else {
                    value
                };
                println!("{name}={value}");
            }
            match &settings.jwt {
                Some(JwtSettings {
                    key: JwtKey::Jwks(source),
                    ..
                }) => check_provider_keys(source).await,
                _ => ExitCode::SUCCESS,
            }
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(2)
        }
    }
}

/// What `--dev` uses for a setting it fills in from a file of its own.
fn dev_kept(settings: &Settings, name: &str) -> Option<String> {
    let kept = |file: &str, what: &str| {
        if Path::new(file).exists() {
            format!("{what} kept in {file} (--dev)")
        } else {
            format!("{what} made on --dev's first run and kept in {file}")
        }
    };
    match name {
        "JWT" if settings.jwt.is_none() => Some(kept(DEV_SECRET_FILE, "an HS256 secret")),
        "COLA_SECRETS_KEY" if settings.gateway.secrets_key.is_none() => {
            Some(kept(DEV_SECRETS_KEY_FILE, "a secrets key"))
        }
        "COLA_IDENTITY_KEY_FILE" if settings.gateway.identity_key.is_none() => {
            Some(kept(DEV_IDENTITY_KEY_FILE, "an Ed25519 identity key"))
        }
        _ => None,
    }
}

/// Fetches the identity provider's keys once, as serving would, and prints
/// what it found; unreachable or unusable keys are a bad setting.
#[allow(clippy::print_stdout)]
async fn check_provider_keys(source: &JwksSource) -> ExitCode {
    let variable = match source {
        JwksSource::Url(_) => "COLA_JWT_JWKS_URL",
        JwksSource::Discovery(_) => "COLA_OIDC_ISSUER",
    };
    let fetched = match HttpKeySetFetcher::new() {
        Ok(fetcher) => ProviderKeys::new(source.clone(), Arc::new(fetcher))
            .refresh()
            .await
            .map_err(|error| cola_application::error_chain(&error)),
        Err(error) => Err(cola_application::error_chain(&error)),
    };
    match fetched {
        Ok(keys) => {
            let found: Vec<String> = keys
                .iter()
                .map(|key| {
                    format!(
                        "{} ({:?})",
                        key.kid.as_deref().unwrap_or("no kid"),
                        key.algorithm
                    )
                })
                .collect();
            println!("JWKS_KEYS={}", found.join(", "));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("invalid configuration: {variable}: {error}");
            ExitCode::from(2)
        }
    }
}
