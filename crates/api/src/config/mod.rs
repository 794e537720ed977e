//! Configuration from the environment (CONTRACT §3). Every variable is
//! checked at start-up; each bad one is reported by name.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cola_domain::AllowedNetworks;
use cola_infrastructure::{IdentityKey, SecretsKey, previous_public_jwk};
use ipnet::IpNet;
use jsonwebtoken::jwk::Jwk;

use crate::rest::secret_scanning::SecretScanningKeys;

pub const DEFAULT_DATABASE_URL: &str = "sqlite://cola.db?mode=rwc";
const MIN_JWT_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A secret that never prints itself.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    #[must_use]
    pub fn new(value: String) -> Self {
        Self(value)
    }

    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone)]
pub enum JwtKey {
    /// HS256.
    Secret(Secret),
    /// RS256, ES256 or ES384 (by the key), from a PEM public key.
    PublicKeyFile(PathBuf),
    /// An identity provider's published keys; the algorithm is each key's.
    Jwks(JwksSource),
}

/// Where an identity provider's signing keys are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// `COLA_JWT_JWKS_URL`: the JWKS document itself.
    Url(url::Url),
    /// `COLA_OIDC_ISSUER`: its `/.well-known/openid-configuration` names
    /// the JWKS (`jwks_uri`).
    Discovery(url::Url),
}

/// Where a provider's token carries the tenant and the role (JWKS mode only;
/// the static modes read `tenant_id` and `role` as CONTRACT §4 has them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimNames {
    /// A claim name, or a dotted path into nested objects
    /// (`realm_access.roles`).
    pub tenant: String,
    pub role: String,
    /// Role values that make the caller an admin; any other is a member.
    pub admin_roles: Vec<String>,
}

impl Default for ClaimNames {
    fn default() -> Self {
        Self {
            tenant: "tenant_id".into(),
            role: "role".into(),
            admin_roles: vec!["admin".into()],
        }
    }
}

#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub key: JwtKey,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub claims: ClaimNames,
}

/// The console's OpenID Connect client (`COLA_OIDC_CLIENT_ID` and
/// `COLA_OIDC_CLIENT_SECRET`, with `COLA_OIDC_ISSUER`).
#[derive(Debug, Clone)]
pub struct OidcClientSettings {
    pub issuer: url::Url,
    pub client_id: String,
    /// Also keys the console's session cookies, so every instance that
    /// shares the client shares the sessions.
    pub client_secret: Secret,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: Secret,
    pub listen: SocketAddr,
    /// `None`: no JWT is configured and the management API refuses everyone.
    pub jwt: Option<JwtSettings>,
    /// `COLA_PUBLIC_URL` without a trailing slash; `None`: `http://` and the
    /// address actually bound.
    pub public_url: Option<String>,
    /// `None`: the console cannot sign anyone in through a provider.
    pub oidc_client: Option<OidcClientSettings>,
    pub allowed_origins: Vec<String>,
    pub trusted_proxies: Vec<IpNet>,
    pub default_key_ttl_days: u32,
    pub max_key_ttl_days: u32,
    pub max_active_keys_per_user: u32,
    pub usage_flush_interval: Duration,
    pub auth_cache_ttl: Duration,
    pub auth_failure_limit: u32,
    /// GitHub's secret-scanning public keys; `None`: that route answers 404.
    pub secret_scanning_keys: Option<SecretScanningKeys>,
    /// Seals upstream servers' headers at rest; `None`: servers cannot
    /// hold headers.
    pub secrets_key: Option<SecretsKey>,
    /// Networks upstream URLs may resolve into although not public.
    pub gateway_allowed_networks: AllowedNetworks,
    /// Gateway requests of one tenant in flight on this instance at most.
    pub gateway_max_inflight_per_tenant: usize,
    /// Signs identity assertions; `None`: a key of this process alone.
    pub identity_key: Option<Arc<IdentityKey>>,
    /// Still published in the JWKS, for a rotation.
    pub identity_previous_key: Option<Jwk>,
    pub log_format: LogFormat,
    pub log_filter: String,
    /// `--dev` (not an environment variable): the console signs in as the
    /// demo admin without a provider.
    pub dev: bool,
}

/// Every bad variable, with what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<(&'static str, String)>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (name, message)) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "invalid configuration: {name}: {message}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<(&'static str, String)>,
}

impl Reader<'_> {
    /// The variable's value; an empty value counts as unset.
    fn text(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|value| !value.trim().is_empty())
    }

    fn number(&mut self, name: &'static str, default: u64, range: (u64, u64)) -> u64 {
        match self.text(name) {
            None => default,
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(value) if (range.0..=range.1).contains(&value) => value,
                _ => {
                    self.errors.push((
                        name,
                        format!("must be a whole number from {} to {}", range.0, range.1),
                    ));
                    default
                }
            },
        }
    }

    /// An identity provider's URL: `https://`, or `http://` to a loopback
    /// host only (a JWKS fetched in the clear could be swapped for an
    /// attacker's keys).
    fn provider_url(&mut self, name: &'static str) -> Option<url::Url> {
        let raw = self.text(name)?;
        match url::Url::parse(raw.trim()) {
            Ok(url) if is_safe_provider_url(&url) => Some(url),
            Ok(_) => {
                self.errors.push((
                    name,
                    "must be an https:// URL (http:// only to localhost, 127.0.0.1 or ::1)".into(),
                ));
                None
            }
            Err(error) => {
                self.errors.push((name, format!("is not a URL: {error}")));
                None
            }
        }
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.text(name)
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A PEM file's text; the error names the path, never the contents.
fn read_pem(path: &str) -> Result<zeroize::Zeroizing<String>, String> {
    std::fs::read_to_string(path)
        .map(zeroize::Zeroizing::new)
        .map_err(|error| format!("cannot read {path}: {error}"))
}

fn as_u32(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

impl Settings {
    /// With `--dev`, why `COLA_LISTEN` is refused: dev mode signs anyone
    /// who reaches it in as the demo admin, so it listens on a loopback
    /// address only. `None` when the address is fine (or not in `--dev`).
    #[must_use]
    pub fn dev_listen_refusal(&self) -> Option<String> {
        (self.dev && !self.listen.ip().to_canonical().is_loopback()).then(|| {
            format!(
                "invalid configuration: COLA_LISTEN: --dev listens on a loopback address only \
                 (127.0.0.1 or [::1]), not {}; its console signs anyone who reaches it in as \
                 the demo admin. Serve without --dev to listen elsewhere.",
                self.listen
            )
        })
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigErrors> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, reporting every bad variable.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut read = Reader {
            lookup,
            errors: Vec::new(),
        };

        let database_url = read
            .text("COLA_DATABASE_URL")
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            read.errors.push((
                "COLA_DATABASE_URL",
                "must start with sqlite:, postgres:// or postgresql://".into(),
            ));
        }

        let listen = match read.text("COLA_LISTEN") {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(raw) => raw.trim().parse().unwrap_or_else(|_| {
                read.errors.push((
                    "COLA_LISTEN",
                    "must be an address and port, such as 127.0.0.1:8080 or [::]:8080".into(),
                ));
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }),
        };

        let secret = read.text("COLA_JWT_SECRET");
        let public_key = read.text("COLA_JWT_PUBLIC_KEY_FILE");
        let jwks_url = read.provider_url("COLA_JWT_JWKS_URL");
        let oidc_issuer = read.provider_url("COLA_OIDC_ISSUER");
        let jwks = jwks_url
            .clone()
            .map(JwksSource::Url)
            .or_else(|| oidc_issuer.clone().map(JwksSource::Discovery));
        let chosen = [
            secret.is_some(),
            public_key.is_some(),
            jwks_url.is_some() || oidc_issuer.is_some(),
        ];
        let key = if chosen.iter().filter(|set| **set).count() > 1 {
            read.errors.push((
                if secret.is_some() {
                    "COLA_JWT_SECRET"
                } else {
                    "COLA_JWT_PUBLIC_KEY_FILE"
                },
                "set only one of COLA_JWT_SECRET, COLA_JWT_PUBLIC_KEY_FILE and \
                 COLA_JWT_JWKS_URL/COLA_OIDC_ISSUER"
                    .into(),
            ));
            None
        } else {
            match (secret, public_key, jwks) {
                (Some(secret), _, _) if secret.len() < MIN_JWT_SECRET_BYTES => {
                    read.errors.push((
                        "COLA_JWT_SECRET",
                        format!("must be at least {MIN_JWT_SECRET_BYTES} bytes long"),
                    ));
                    None
                }
                (Some(secret), _, _) => Some(JwtKey::Secret(Secret::new(secret))),
                (None, Some(path), _) => {
                    let path = PathBuf::from(path);
                    if path.is_file() {
                        Some(JwtKey::PublicKeyFile(path))
                    } else {
                        read.errors.push((
                            "COLA_JWT_PUBLIC_KEY_FILE",
                            format!("no readable file at {}", path.display()),
                        ));
                        None
                    }
                }
                (None, None, Some(source)) => Some(JwtKey::Jwks(source)),
                (None, None, None) => None,
            }
        };
        let claims = ClaimNames {
            tenant: read.text("COLA_JWT_TENANT_CLAIM").map_or_else(
                || ClaimNames::default().tenant,
                |name| name.trim().to_owned(),
            ),
            role: read
                .text("COLA_JWT_ROLE_CLAIM")
                .map_or_else(|| ClaimNames::default().role, |name| name.trim().to_owned()),
            admin_roles: match read.list("COLA_JWT_ADMIN_ROLES") {
                roles if roles.is_empty() => ClaimNames::default().admin_roles,
                roles => roles,
            },
        };
        // The provider's tokens name it as their issuer; checking it is the
        // default once the issuer is known.
        // As written: `iss` is compared as a string, and a URL parser would
        // add or drop a trailing slash.
        let issuer = read.text("COLA_JWT_ISSUER").or_else(|| {
            oidc_issuer
                .is_some()
                .then(|| read.text("COLA_OIDC_ISSUER"))
                .flatten()
                .map(|raw| raw.trim().to_owned())
        });
        let jwt = key.map(|key| JwtSettings {
            key,
            issuer,
            audience: read.text("COLA_JWT_AUDIENCE"),
            claims,
        });

        let public_url = read.text("COLA_PUBLIC_URL").and_then(|raw| {
            let raw = raw.trim().trim_end_matches('/').to_owned();
            match url::Url::parse(&raw) {
                Ok(url)
                    if matches!(url.scheme(), "http" | "https")
                        && url.host().is_some()
                        && url.username().is_empty()
                        && url.password().is_none()
                        && url.query().is_none()
                        && url.fragment().is_none() =>
                {
                    Some(raw)
                }
                _ => {
                    read.errors.push((
                        "COLA_PUBLIC_URL",
                        "must be an http:// or https:// URL without user, query or fragment, \
                         such as https://cola.example.com"
                            .into(),
                    ));
                    None
                }
            }
        });

        let client_id = read.text("COLA_OIDC_CLIENT_ID");
        let client_secret = read.text("COLA_OIDC_CLIENT_SECRET");
        let oidc_client = match (client_id, client_secret, &oidc_issuer) {
            (None, None, _) => None,
            (Some(_), _, None) | (None, Some(_), None) => {
                read.errors.push((
                    "COLA_OIDC_ISSUER",
                    "is required with COLA_OIDC_CLIENT_ID: the console discovers where to \
                     sign in from it"
                        .into(),
                ));
                None
            }
            (None, Some(_), Some(_)) => {
                read.errors.push((
                    "COLA_OIDC_CLIENT_ID",
                    "is required with COLA_OIDC_CLIENT_SECRET".into(),
                ));
                None
            }
            (Some(_), None, Some(_)) => {
                read.errors.push((
                    "COLA_OIDC_CLIENT_SECRET",
                    "is required with COLA_OIDC_CLIENT_ID: the console is a confidential \
                     client, and the secret also keys its session cookies"
                        .into(),
                ));
                None
            }
            (Some(_), Some(secret), Some(_)) if secret.len() < MIN_JWT_SECRET_BYTES => {
                read.errors.push((
                    "COLA_OIDC_CLIENT_SECRET",
                    format!(
                        "must be at least {MIN_JWT_SECRET_BYTES} bytes long: it keys the \
                         console's session cookies"
                    ),
                ));
                None
            }
            (Some(client_id), Some(secret), Some(issuer)) => Some(OidcClientSettings {
                issuer: issuer.clone(),
                client_id: client_id.trim().to_owned(),
                client_secret: Secret::new(secret),
            }),
        };

        let mut allowed_origins = Vec::new();
        for origin in read.list("COLA_ALLOWED_ORIGINS") {
            match normalise_origin(&origin) {
                Some(origin) => allowed_origins.push(origin),
                None => read.errors.push((
                    "COLA_ALLOWED_ORIGINS",
                    format!("`{origin}` is not an origin of the form scheme://host[:port]"),
                )),
            }
        }

        let mut trusted_proxies = Vec::new();
        for entry in read.list("COLA_TRUSTED_PROXIES") {
            match entry
                .parse::<IpNet>()
                .ok()
                .or_else(|| entry.parse::<std::net::IpAddr>().ok().map(IpNet::from))
            {
                Some(net) => trusted_proxies.push(net.trunc()),
                None => read.errors.push((
                    "COLA_TRUSTED_PROXIES",
                    format!("`{entry}` is not an IP address or CIDR"),
                )),
            }
        }

        let default_key_ttl_days =
            as_u32(read.number("COLA_DEFAULT_KEY_TTL_DAYS", 90, (1, 36_500)));
        let max_key_ttl_days = as_u32(read.number("COLA_MAX_KEY_TTL_DAYS", 365, (1, 36_500)));
        if default_key_ttl_days > max_key_ttl_days {
            read.errors.push((
                "COLA_DEFAULT_KEY_TTL_DAYS",
                format!("must not exceed COLA_MAX_KEY_TTL_DAYS ({max_key_ttl_days})"),
            ));
        }
        let max_active_keys_per_user =
            as_u32(read.number("COLA_MAX_ACTIVE_KEYS_PER_USER", 25, (1, 100_000)));
        let usage_flush_interval = Duration::from_millis(read.number(
            "COLA_USAGE_FLUSH_INTERVAL_MS",
            5000,
            (10, 3_600_000),
        ));
        let auth_cache_ttl =
            Duration::from_secs(read.number("COLA_AUTH_CACHE_TTL_SECS", 30, (0, 3600)));
        let auth_failure_limit = as_u32(read.number("COLA_AUTH_FAILURE_LIMIT", 20, (20, 99)));
        let gateway_max_inflight_per_tenant =
            usize::try_from(read.number("COLA_GATEWAY_MAX_INFLIGHT_PER_TENANT", 64, (1, 100_000)))
                .unwrap_or(64);

        let secret_scanning_keys = read
            .text("COLA_SECRET_SCANNING_KEYS_FILE")
            .and_then(|path| {
                SecretScanningKeys::load(&PathBuf::from(path.trim()))
                    .map_err(|error| read.errors.push(("COLA_SECRET_SCANNING_KEYS_FILE", error)))
                    .ok()
            });
        let secrets_key = read.text("COLA_SECRETS_KEY").and_then(|raw| {
            SecretsKey::parse_base64(&raw)
                .map_err(|e| read.errors.push(("COLA_SECRETS_KEY", e.to_string())))
                .ok()
        });
        let identity_key = read.text("COLA_IDENTITY_KEY_FILE").and_then(|path| {
            read_pem(path.trim())
                .and_then(|pem| IdentityKey::from_pem(&pem).map_err(|e| e.to_string()))
                .map(Arc::new)
                .map_err(|error| read.errors.push(("COLA_IDENTITY_KEY_FILE", error)))
                .ok()
        });
        let identity_previous_key = read
            .text("COLA_IDENTITY_PREVIOUS_KEY_FILE")
            .and_then(|path| {
                read_pem(path.trim())
                    .and_then(|pem| {
                        previous_public_jwk(&pem).map_err(|_| {
                            "is not a PEM key of Ed25519 or P-256 (private, or `PUBLIC KEY`)"
                                .to_owned()
                        })
                    })
                    .map_err(|error| read.errors.push(("COLA_IDENTITY_PREVIOUS_KEY_FILE", error)))
                    .ok()
            });
        let gateway_allowed_networks = AllowedNetworks::parse(
            &read.list("COLA_GATEWAY_ALLOWED_NETWORKS"),
        )
        .unwrap_or_else(|e| {
            read.errors
                .push(("COLA_GATEWAY_ALLOWED_NETWORKS", e.to_string()));
            AllowedNetworks::default()
        });

        let log_format = match read.text("COLA_LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(_) => {
                read.errors
                    .push(("COLA_LOG_FORMAT", "must be `pretty` or `json`".into()));
                LogFormat::Pretty
            }
        };
        let log_filter = read.text("RUST_LOG").unwrap_or_else(|| "info".to_owned());
        if tracing_subscriber::EnvFilter::try_new(&log_filter).is_err() {
            read.errors
                .push(("RUST_LOG", "is not a valid tracing filter".into()));
        }

        if !read.errors.is_empty() {
            return Err(ConfigErrors(read.errors));
        }
        Ok(Self {
            database_url: Secret::new(database_url),
            listen,
            jwt,
            public_url,
            oidc_client,
            allowed_origins,
            trusted_proxies,
            default_key_ttl_days,
            max_key_ttl_days,
            max_active_keys_per_user,
            usage_flush_interval,
            auth_cache_ttl,
            auth_failure_limit,
            secret_scanning_keys,
            secrets_key,
            gateway_allowed_networks,
            gateway_max_inflight_per_tenant,
            identity_key,
            identity_previous_key,
            log_format,
            log_filter,
            dev: false,
        })
    }

    /// The effective settings, one per line, secrets masked.
    #[must_use]
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let jwt = match &self.jwt {
            None => "unset (management API disabled)".to_owned(),
            Some(JwtSettings {
                key: JwtKey::Secret(_),
                ..
            }) => "HS256 secret (set, masked)".to_owned(),
            Some(JwtSettings {
                key: JwtKey::PublicKeyFile(path),
                ..
            }) => format!("public key file {}", path.display()),
            Some(JwtSettings {
                key: JwtKey::Jwks(JwksSource::Url(url)),
                ..
            }) => format!("JWKS at {url}"),
            Some(JwtSettings {
                key: JwtKey::Jwks(JwksSource::Discovery(issuer)),
                ..
            }) => format!("JWKS discovered from the issuer {issuer}"),
        };
        let claims = self
            .jwt
            .as_ref()
            .map(|j| j.claims.clone())
            .unwrap_or_default();
        let issuer = self.jwt.as_ref().and_then(|j| j.issuer.clone());
        let audience = self.jwt.as_ref().and_then(|j| j.audience.clone());
        vec![
            ("COLA_DATABASE_URL", mask_url(self.database_url.expose())),
            ("COLA_LISTEN", self.listen.to_string()),
            ("JWT", jwt),
            ("COLA_JWT_ISSUER", issuer.unwrap_or_else(|| "unset".into())),
            (
                "COLA_JWT_AUDIENCE",
                audience.unwrap_or_else(|| "unset".into()),
            ),
            ("COLA_JWT_TENANT_CLAIM", claims.tenant),
            ("COLA_JWT_ROLE_CLAIM", claims.role),
            ("COLA_JWT_ADMIN_ROLES", claims.admin_roles.join(",")),
            (
                "COLA_PUBLIC_URL",
                self.public_url
                    .as_ref()
                    .map_or_else(|| format!("http://{} (default)", self.listen), Clone::clone),
            ),
            (
                "COLA_OIDC_CLIENT_ID",
                self.oidc_client
                    .as_ref()
                    .map_or_else(|| "unset".into(), |c| c.client_id.clone()),
            ),
            (
                "COLA_OIDC_CLIENT_SECRET",
                if self.oidc_client.is_some() {
                    "set (masked)".into()
                } else {
                    "unset".into()
                },
            ),
            ("COLA_ALLOWED_ORIGINS", self.allowed_origins.join(",")),
            (
                "COLA_TRUSTED_PROXIES",
                self.trusted_proxies
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "COLA_DEFAULT_KEY_TTL_DAYS",
                self.default_key_ttl_days.to_string(),
            ),
            ("COLA_MAX_KEY_TTL_DAYS", self.max_key_ttl_days.to_string()),
            (
                "COLA_MAX_ACTIVE_KEYS_PER_USER",
                self.max_active_keys_per_user.to_string(),
            ),
            (
                "COLA_USAGE_FLUSH_INTERVAL_MS",
                self.usage_flush_interval.as_millis().to_string(),
            ),
            (
                "COLA_AUTH_CACHE_TTL_SECS",
                self.auth_cache_ttl.as_secs().to_string(),
            ),
            (
                "COLA_AUTH_FAILURE_LIMIT",
                self.auth_failure_limit.to_string(),
            ),
            (
                "COLA_SECRET_SCANNING_KEYS_FILE",
                self.secret_scanning_keys.as_ref().map_or_else(
                    || "unset (POST /api/secret-scanning/github answers 404)".to_owned(),
                    |keys| format!("{} public key(s)", keys.len()),
                ),
            ),
            (
                "COLA_SECRETS_KEY",
                if self.secrets_key.is_some() {
                    "set (masked)".to_owned()
                } else {
                    "unset (servers cannot hold headers)".to_owned()
                },
            ),
            (
                "COLA_GATEWAY_ALLOWED_NETWORKS",
                self.gateway_allowed_networks
                    .networks()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "COLA_GATEWAY_MAX_INFLIGHT_PER_TENANT",
                self.gateway_max_inflight_per_tenant.to_string(),
            ),
            (
                "COLA_IDENTITY_KEY_FILE",
                self.identity_key.as_ref().map_or_else(
                    || "unset (identity assertions signed by a key of this process)".to_owned(),
                    |key| format!("{} key, kid {}", key.algorithm(), key.kid()),
                ),
            ),
            (
                "COLA_IDENTITY_PREVIOUS_KEY_FILE",
                self.identity_previous_key.as_ref().map_or_else(
                    || "unset".to_owned(),
                    |jwk| {
                        format!(
                            "published, kid {}",
                            jwk.common.key_id.as_deref().unwrap_or("-")
                        )
                    },
                ),
            ),
            (
                "COLA_LOG_FORMAT",
                match self.log_format {
                    LogFormat::Pretty => "pretty".into(),
                    LogFormat::Json => "json".into(),
                },
            ),
            ("RUST_LOG", self.log_filter.clone()),
        ]
    }
}

/// Whether `url` may be fetched for signing keys: over TLS, or in the clear
/// only to this machine; never with credentials in it.
#[must_use]
pub fn is_safe_provider_url(url: &url::Url) -> bool {
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        None => return false,
    };
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
    scheme_ok && url.username().is_empty() && url.password().is_none()
}

/// `scheme://host[:port]`, lower-cased, default ports dropped, as browsers
/// send the `Origin` header.
#[must_use]
pub fn normalise_origin(raw: &str) -> Option<String> {
    let (scheme, rest) = raw.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https") || rest.is_empty() || rest.contains('/') {
        return None;
    }
    let rest = rest.to_ascii_lowercase();
    let host = match (scheme.as_str(), rest.rsplit_once(':')) {
        ("http", Some((host, "80"))) | ("https", Some((host, "443"))) => host.to_owned(),
        _ => rest,
    };
    if host.contains(['?', '#', '@', ' ']) {
        return None;
    }
    Some(format!("{scheme}://{host}"))
}

/// A database URL without its password, wherever it is written: in the
/// user info (`postgres://u:pw@h/db`) or in the query, as libpq also takes it
/// (`postgres://u@h/db?password=pw`, `sslpassword=`). Parameter names are
/// compared decoded, so `pass%77ord` is masked too. A URL that cannot be
/// parsed is not shown at all, since where its password is cannot be told.
fn mask_url(raw: &str) -> String {
    const MASK: &str = "****";
    let Ok(mut url) = url::Url::parse(raw) else {
        let scheme = raw.split_once(':').map_or("", |(scheme, _)| scheme);
        return format!("{scheme}:… (not shown: unparsable)");
    };
    if url.password().is_some() {
        // Only a URL that cannot have a password refuses one.
        let _ = url.set_password(Some(MASK));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let value = if is_secret_parameter(&name) {
                    MASK.to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// Whether a connection parameter holds a secret (`password`,
/// `sslpassword`, and the like).
fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "passwd", "secret", "token"]
        .iter()
        .any(|word| name.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigErrors> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(&move |name| map.get(name).cloned())
    }

    fn names(errors: &ConfigErrors) -> Vec<&'static str> {
        errors.0.iter().map(|(name, _)| *name).collect()
    }

    #[test]
    fn dev_mode_refuses_any_address_but_loopback_by_name() {
        for (listen, refused) in [
            ("127.0.0.1:8080", false),
            ("[::1]:8080", false),
            ("[::ffff:127.0.0.1]:8080", false),
            ("0.0.0.0:8080", true),
            ("[::]:8080", true),
            ("192.0.2.7:8080", true),
        ] {
            let mut s = settings(&[("COLA_LISTEN", listen)]).expect("valid");
            assert_eq!(s.dev_listen_refusal(), None, "not in --dev: {listen}");
            s.dev = true;
            let refusal = s.dev_listen_refusal();
            assert_eq!(refusal.is_some(), refused, "{listen}");
            if let Some(refusal) = refusal {
                assert!(
                    refusal.starts_with("invalid configuration: COLA_LISTEN: "),
                    "{refusal}"
                );
            }
        }
    }

    #[test]
    fn nothing_set_gives_the_documented_defaults() {
        let s = settings(&[]).expect("defaults are valid");
        assert_eq!(s.database_url.expose(), DEFAULT_DATABASE_URL);
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert!(s.jwt.is_none());
        assert_eq!((s.default_key_ttl_days, s.max_key_ttl_days), (90, 365));
        assert_eq!(s.max_active_keys_per_user, 25);
        assert_eq!(s.usage_flush_interval, Duration::from_millis(5000));
        assert_eq!(s.auth_cache_ttl, Duration::from_secs(30));
    }

    #[test]
    fn an_unreadable_or_invalid_secret_scanning_keys_file_is_refused_by_name() {
        let errors = settings(&[("COLA_SECRET_SCANNING_KEYS_FILE", "/nonexistent/keys.json")])
            .expect_err("missing file");
        assert_eq!(names(&errors), ["COLA_SECRET_SCANNING_KEYS_FILE"]);
        let path = std::env::temp_dir().join(format!("cola-keys-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&path, r#"{"public_keys": []}"#).expect("write");
        let errors = settings(&[(
            "COLA_SECRET_SCANNING_KEYS_FILE",
            path.to_str().expect("path"),
        )])
        .expect_err("no keys");
        let _ = std::fs::remove_file(&path);
        assert_eq!(names(&errors), ["COLA_SECRET_SCANNING_KEYS_FILE"]);
    }

    #[test]
    fn a_short_jwt_secret_is_refused_by_name() {
        let errors = settings(&[("COLA_JWT_SECRET", "short")]).expect_err("too short");
        assert_eq!(names(&errors), ["COLA_JWT_SECRET"]);
    }

    #[test]
    fn every_bad_variable_is_named() {
        let errors = settings(&[
            ("COLA_LISTEN", "nowhere"),
            ("COLA_MAX_ACTIVE_KEYS_PER_USER", "lots"),
            ("COLA_LOG_FORMAT", "xml"),
            ("COLA_TRUSTED_PROXIES", "10.0.0.0/8,bogus"),
            ("COLA_ALLOWED_ORIGINS", "not-an-origin"),
            ("COLA_DATABASE_URL", "mysql://x"),
        ])
        .expect_err("invalid");
        assert_eq!(
            names(&errors),
            [
                "COLA_DATABASE_URL",
                "COLA_LISTEN",
                "COLA_ALLOWED_ORIGINS",
                "COLA_TRUSTED_PROXIES",
                "COLA_MAX_ACTIVE_KEYS_PER_USER",
                "COLA_LOG_FORMAT",
            ]
        );
    }

    #[test]
    fn an_unreadable_or_invalid_identity_key_file_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("cola-identity-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a key").expect("write");
        let missing = dir.join("missing.pem");
        let errors = settings(&[
            ("COLA_IDENTITY_KEY_FILE", junk.to_str().expect("utf-8")),
            (
                "COLA_IDENTITY_PREVIOUS_KEY_FILE",
                missing.to_str().expect("utf-8"),
            ),
        ])
        .expect_err("both refused");
        assert_eq!(
            names(&errors),
            ["COLA_IDENTITY_KEY_FILE", "COLA_IDENTITY_PREVIOUS_KEY_FILE"]
        );
        assert!(
            !errors.0[0].1.contains("not a key"),
            "never the file's contents"
        );

        let key = IdentityKey::generate().expect("key");
        let good = dir.join("good.pem");
        std::fs::write(&good, key.to_pem().expect("pem").as_str()).expect("write");
        let s =
            settings(&[("COLA_IDENTITY_KEY_FILE", good.to_str().expect("utf-8"))]).expect("valid");
        assert_eq!(s.identity_key.expect("loaded").kid(), key.kid());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_secrets_key_must_be_the_base64_of_32_bytes() {
        let errors = settings(&[("COLA_SECRETS_KEY", "c2hvcnQ=")]).expect_err("too short");
        assert_eq!(names(&errors), ["COLA_SECRETS_KEY"]);
        let key = SecretsKey::generate().expect("random").to_base64();
        let s = settings(&[("COLA_SECRETS_KEY", &key)]).expect("valid");
        assert!(s.secrets_key.is_some());
        assert!(!format!("{:?} {:?}", s, s.describe()).contains(key.as_str()));
    }

    #[test]
    fn allowed_gateway_networks_are_cidrs_and_named_when_not() {
        let errors = settings(&[("COLA_GATEWAY_ALLOWED_NETWORKS", "10.0.0.0/8,bogus")])
            .expect_err("invalid");
        assert_eq!(names(&errors), ["COLA_GATEWAY_ALLOWED_NETWORKS"]);
        let s =
            settings(&[("COLA_GATEWAY_ALLOWED_NETWORKS", "127.0.0.0/8, ::1/128")]).expect("valid");
        assert_eq!(s.gateway_allowed_networks, AllowedNetworks::loopback());
    }

    #[test]
    fn a_default_ttl_above_the_maximum_is_refused() {
        let errors = settings(&[
            ("COLA_DEFAULT_KEY_TTL_DAYS", "100"),
            ("COLA_MAX_KEY_TTL_DAYS", "30"),
        ])
        .expect_err("invalid");
        assert_eq!(names(&errors), ["COLA_DEFAULT_KEY_TTL_DAYS"]);
    }

    #[test]
    fn origins_are_normalised_as_browsers_send_them() {
        assert_eq!(
            normalise_origin("HTTPS://App.Example.com:443").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            normalise_origin("http://localhost:3000").as_deref(),
            Some("http://localhost:3000")
        );
        assert_eq!(normalise_origin("https://x.com/path"), None);
        assert_eq!(normalise_origin("ftp://x.com"), None);
    }

    #[test]
    fn the_description_masks_secrets() {
        let s = settings(&[
            ("COLA_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("COLA_DATABASE_URL", "postgres://cola:hunter2@db/cola"),
        ])
        .expect("valid");
        let shown = format!("{:?}", s.describe());
        assert!(!shown.contains("0123456789abcdef"));
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("postgres://cola:****@db/cola"));
    }

    #[test]
    fn a_password_in_the_query_string_is_masked() {
        for (url, shown) in [
            (
                "postgres://cola@db/cola?password=hunter2",
                "postgres://cola@db/cola?password=****",
            ),
            (
                "postgres://cola@db/cola?sslmode=require&PassWord=hunter2&sslpassword=hunter2",
                "postgres://cola@db/cola?sslmode=require&PassWord=****&sslpassword=****",
            ),
            (
                "postgresql://cola:hunter2@db:5432/cola?pass%77ord=hunter2",
                "postgresql://cola:****@db:5432/cola?password=****",
            ),
            ("sqlite://cola.db?mode=rwc", "sqlite://cola.db?mode=rwc"),
        ] {
            assert_eq!(mask_url(url), shown, "{url}");
        }
        assert!(!mask_url("postgres://cola:hunter2@[db/cola").contains("hunter2"));
    }

    #[test]
    fn a_provider_url_must_be_https_unless_it_is_this_machine() {
        for url in [
            "https://id.example.com/jwks",
            "http://127.0.0.1:9400/jwks",
            "http://localhost/jwks",
        ] {
            let s = settings(&[("COLA_JWT_JWKS_URL", url)]).expect(url);
            assert!(
                matches!(s.jwt.map(|j| j.key), Some(JwtKey::Jwks(JwksSource::Url(_)))),
                "{url}"
            );
        }
        for url in [
            "http://id.example.com/jwks",
            "https://user:pw@id.example.com/jwks",
            "not a url",
        ] {
            let errors = settings(&[("COLA_JWT_JWKS_URL", url)]).expect_err(url);
            assert_eq!(names(&errors), ["COLA_JWT_JWKS_URL"], "{url}");
        }
    }

    #[test]
    fn a_provider_and_a_static_key_are_not_both_accepted() {
        let errors = settings(&[
            ("COLA_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("COLA_OIDC_ISSUER", "https://id.example.com"),
        ])
        .expect_err("both");
        assert_eq!(names(&errors), ["COLA_JWT_SECRET"]);
    }

    #[test]
    fn the_issuer_is_checked_as_written_and_claim_names_are_read() {
        let s = settings(&[
            ("COLA_OIDC_ISSUER", "https://tenant.auth0.com/"),
            ("COLA_JWT_ROLE_CLAIM", "realm_access.roles"),
            ("COLA_JWT_ADMIN_ROLES", "cola-admin, owner"),
        ])
        .expect("valid");
        let jwt = s.jwt.expect("jwt");
        assert_eq!(jwt.issuer.as_deref(), Some("https://tenant.auth0.com/"));
        assert_eq!(jwt.claims.role, "realm_access.roles");
        assert_eq!(jwt.claims.tenant, "tenant_id");
        assert_eq!(jwt.claims.admin_roles, ["cola-admin", "owner"]);
    }

    #[test]
    fn the_console_client_needs_the_issuer_and_a_long_secret() {
        let errors = settings(&[("COLA_OIDC_CLIENT_ID", "cola")]).expect_err("no issuer");
        assert_eq!(names(&errors), ["COLA_OIDC_ISSUER"]);
        let errors = settings(&[
            ("COLA_OIDC_ISSUER", "https://id.example.com"),
            ("COLA_OIDC_CLIENT_ID", "cola"),
        ])
        .expect_err("no secret");
        assert_eq!(names(&errors), ["COLA_OIDC_CLIENT_SECRET"]);
        let errors = settings(&[
            ("COLA_OIDC_ISSUER", "https://id.example.com"),
            ("COLA_OIDC_CLIENT_ID", "cola"),
            ("COLA_OIDC_CLIENT_SECRET", "short"),
        ])
        .expect_err("short secret");
        assert_eq!(names(&errors), ["COLA_OIDC_CLIENT_SECRET"]);
        let errors = settings(&[("COLA_PUBLIC_URL", "ftp://x")]).expect_err("scheme");
        assert_eq!(names(&errors), ["COLA_PUBLIC_URL"]);
    }
}
