//! Configuration from the environment (see `docs/operations.md`), one
//! section per subsystem: each section reads its own variables and
//! describes itself for `check-config`. Every variable is checked at
//! start-up, and every bad one is reported by name, all at once: the
//! sections read through one `Reader` that collects the errors.

mod auth;
mod console;
mod database;
mod gateway;
mod keys;
mod reader;
mod server;
mod telemetry;
mod usage;

use std::fmt;

pub use auth::{ClaimNames, JwksSource, JwtKey, JwtSettings};
pub use console::OidcClientSettings;
pub use database::DatabaseSettings;
pub use gateway::GatewaySettings;
pub use keys::KeySettings;
pub use reader::is_safe_provider_url;
pub use server::{ServerSettings, normalise_origin, parse_listen};
pub use telemetry::{LogFormat, TelemetrySettings};
pub use usage::UsageSettings;

use reader::Reader;

/// The least length of a secret that keys something: the JWT secret, the
/// console's OIDC client secret.
const MIN_SECRET_BYTES: usize = 32;

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
pub struct Settings {
    pub database: DatabaseSettings,
    pub server: ServerSettings,
    /// `None`: no JWT is configured and the management API refuses everyone.
    pub jwt: Option<JwtSettings>,
    /// `None`: the console cannot sign anyone in through a provider.
    pub oidc_client: Option<OidcClientSettings>,
    pub keys: KeySettings,
    pub usage: UsageSettings,
    pub gateway: GatewaySettings,
    pub telemetry: TelemetrySettings,
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

impl Settings {
    /// With `--dev`, why `COLA_LISTEN` is refused: dev mode signs anyone
    /// who reaches it in as the demo admin, so it listens on a loopback
    /// address only. `None` when the address is fine (or not in `--dev`).
    #[must_use]
    pub fn dev_listen_refusal(&self) -> Option<String> {
        let listen = self.server.listen;
        (self.dev && !listen.ip().to_canonical().is_loopback()).then(|| {
            format!(
                "invalid configuration: COLA_LISTEN: --dev listens on a loopback address only \
                 (127.0.0.1 or [::1]), not {listen} (from COLA_LISTEN or --listen); its console \
                 signs anyone who reaches it in as the demo admin. Serve without --dev to listen \
                 elsewhere."
            )
        })
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigErrors> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, section by section, reporting every
    /// bad variable of every section.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut read = Reader::new(lookup);
        let database = DatabaseSettings::read(&mut read);
        let server = ServerSettings::read(&mut read);
        // Read once: the JWT section discovers the provider's keys from
        // it, the console's client signs in with it.
        let oidc_issuer = read.provider_url("COLA_OIDC_ISSUER");
        let jwt = auth::read(&mut read, oidc_issuer.as_ref());
        let oidc_client = console::read(&mut read, oidc_issuer.as_ref());
        let settings = Self {
            database,
            server,
            jwt,
            oidc_client,
            keys: KeySettings::read(&mut read),
            usage: UsageSettings::read(&mut read),
            gateway: GatewaySettings::read(&mut read),
            telemetry: TelemetrySettings::read(&mut read),
            dev: false,
        };
        if read.errors.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigErrors(read.errors))
        }
    }

    /// The effective settings, one per line, section by section, secrets
    /// masked.
    #[must_use]
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        [
            self.database.describe(),
            self.server.describe(),
            auth::describe(self.jwt.as_ref()),
            console::describe(self.oidc_client.as_ref()),
            self.keys.describe(),
            self.usage.describe(),
            self.gateway.describe(),
            self.telemetry.describe(),
        ]
        .concat()
    }
}

#[cfg(test)]
mod tests {
    use super::database::{DEFAULT_DATABASE_URL, mask_url};
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    use cola_domain::AllowedNetworks;
    use cola_infrastructure::{IdentityKey, SecretsKey};

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
        assert_eq!(s.database.url.expose(), DEFAULT_DATABASE_URL);
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
        assert!(s.jwt.is_none());
        assert_eq!(
            (s.keys.default_key_ttl_days, s.keys.max_key_ttl_days),
            (90, 365)
        );
        assert_eq!(s.keys.max_active_keys_per_user, 25);
        assert_eq!(s.usage.flush_interval, Duration::from_millis(5000));
        assert_eq!(s.keys.auth_cache_ttl, Duration::from_secs(30));
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
    fn bad_variables_of_different_sections_are_all_named_at_once() {
        let errors = settings(&[
            ("COLA_JWT_SECRET", "short"),
            ("COLA_GATEWAY_MAX_INFLIGHT_PER_TENANT", "0"),
            ("COLA_USAGE_FLUSH_INTERVAL_MS", "1"),
        ])
        .expect_err("invalid");
        assert_eq!(
            names(&errors),
            [
                "COLA_JWT_SECRET",
                "COLA_USAGE_FLUSH_INTERVAL_MS",
                "COLA_GATEWAY_MAX_INFLIGHT_PER_TENANT",
            ]
        );
    }

    #[test]
    fn every_section_is_described() {
        let s = settings(&[]).expect("defaults are valid");
        let described: Vec<&str> = s.describe().into_iter().map(|(name, _)| name).collect();
        for name in [
            "COLA_DATABASE_URL",
            "COLA_LISTEN",
            "JWT",
            "COLA_OIDC_CLIENT_ID",
            "COLA_MAX_ACTIVE_KEYS_PER_USER",
            "COLA_USAGE_FLUSH_INTERVAL_MS",
            "COLA_GATEWAY_ALLOWED_NETWORKS",
            "RUST_LOG",
        ] {
            assert!(described.contains(&name), "{name}");
        }
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
        assert_eq!(s.gateway.identity_key.expect("loaded").kid(), key.kid());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_secrets_key_must_be_the_base64_of_32_bytes() {
        let errors = settings(&[("COLA_SECRETS_KEY", "c2hvcnQ=")]).expect_err("too short");
        assert_eq!(names(&errors), ["COLA_SECRETS_KEY"]);
        let key = SecretsKey::generate().expect("random").to_base64();
        let s = settings(&[("COLA_SECRETS_KEY", &key)]).expect("valid");
        assert!(s.gateway.secrets_key.is_some());
        assert!(!format!("{:?} {:?}", s, s.describe()).contains(key.as_str()));
    }

    #[test]
    fn allowed_gateway_networks_are_cidrs_and_named_when_not() {
        let errors = settings(&[("COLA_GATEWAY_ALLOWED_NETWORKS", "10.0.0.0/8,bogus")])
            .expect_err("invalid");
        assert_eq!(names(&errors), ["COLA_GATEWAY_ALLOWED_NETWORKS"]);
        let s =
            settings(&[("COLA_GATEWAY_ALLOWED_NETWORKS", "127.0.0.0/8, ::1/128")]).expect("valid");
        assert_eq!(s.gateway.allowed_networks, AllowedNetworks::loopback());
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
