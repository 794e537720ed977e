//! Configuration from the environment (CONTRACT §3). Every variable is
//! checked at start-up; each bad one is reported by name.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cola_domain::AllowedNetworks;
use cola_infrastructure::SecretsKey;
use ipnet::IpNet;

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
}

#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub key: JwtKey,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: Secret,
    pub listen: SocketAddr,
    /// `None`: no JWT is configured and the management API refuses everyone.
    pub jwt: Option<JwtSettings>,
    pub allowed_origins: Vec<String>,
    pub trusted_proxies: Vec<IpNet>,
    pub default_key_ttl_days: u32,
    pub max_key_ttl_days: u32,
    pub max_active_keys_per_user: u32,
    pub usage_flush_interval: Duration,
    pub auth_cache_ttl: Duration,
    pub auth_failure_limit: u32,
    /// Seals upstream servers' headers at rest; `None`: servers cannot
    /// hold headers.
    pub secrets_key: Option<SecretsKey>,
    /// Networks upstream URLs may resolve into although not public.
    pub gateway_allowed_networks: AllowedNetworks,
    pub log_format: LogFormat,
    pub log_filter: String,
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

fn as_u32(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

impl Settings {
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
        let key = match (secret, public_key) {
            (Some(_), Some(_)) => {
                read.errors.push((
                    "COLA_JWT_SECRET",
                    "set either COLA_JWT_SECRET or COLA_JWT_PUBLIC_KEY_FILE, not both".into(),
                ));
                None
            }
            (Some(secret), None) if secret.len() < MIN_JWT_SECRET_BYTES => {
                read.errors.push((
                    "COLA_JWT_SECRET",
                    format!("must be at least {MIN_JWT_SECRET_BYTES} bytes long"),
                ));
                None
            }
            (Some(secret), None) => Some(JwtKey::Secret(Secret::new(secret))),
            (None, Some(path)) => {
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
            (None, None) => None,
        };
        let jwt = key.map(|key| JwtSettings {
            key,
            issuer: read.text("COLA_JWT_ISSUER"),
            audience: read.text("COLA_JWT_AUDIENCE"),
        });

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

        let secrets_key = read.text("COLA_SECRETS_KEY").and_then(|raw| {
            SecretsKey::parse_base64(&raw)
                .map_err(|e| read.errors.push(("COLA_SECRETS_KEY", e.to_string())))
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
            allowed_origins,
            trusted_proxies,
            default_key_ttl_days,
            max_key_ttl_days,
            max_active_keys_per_user,
            usage_flush_interval,
            auth_cache_ttl,
            auth_failure_limit,
            secrets_key,
            gateway_allowed_networks,
            log_format,
            log_filter,
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
        };
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
}
