//! The management-auth section: how the REST API verifies a JWT — one of
//! `COLA_JWT_SECRET`, `COLA_JWT_PUBLIC_KEY_FILE`, or a provider's keys
//! (`COLA_JWT_JWKS_URL`, or those `COLA_OIDC_ISSUER` publishes) — what it
//! checks (`COLA_JWT_ISSUER`, `COLA_JWT_AUDIENCE`) and where a provider's
//! token carries the tenant and role (`COLA_JWT_*_CLAIM`, `COLA_JWT_ADMIN_ROLES`).

use std::path::PathBuf;

use super::reader::{Reader, or_unset};
use super::{MIN_SECRET_BYTES, Secret};

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
/// the static modes read `tenant_id` and `role` as docs/decisions.md, "Management JWT", has them).
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

/// The three ways to configure a key, as read; at most one may be set.
struct KeyChoice {
    secret: Option<String>,
    public_key: Option<String>,
    jwks_url: Option<url::Url>,
    /// `COLA_OIDC_ISSUER`, shared with the console's section.
    oidc_issuer: Option<url::Url>,
}

/// The JWT settings, `None` when no key is configured (the management API
/// then refuses everyone). `oidc_issuer` is `COLA_OIDC_ISSUER`, read once
/// by the caller since the console's client uses it too.
pub(super) fn read(read: &mut Reader<'_>, oidc_issuer: Option<&url::Url>) -> Option<JwtSettings> {
    let choice = KeyChoice {
        secret: read.text("COLA_JWT_SECRET"),
        public_key: read.text("COLA_JWT_PUBLIC_KEY_FILE"),
        jwks_url: read.provider_url("COLA_JWT_JWKS_URL"),
        oidc_issuer: oidc_issuer.cloned(),
    };
    let key = jwt_key(read, choice);
    let claims = claim_names(read);
    // The provider's tokens name it as their issuer; checking it is the
    // default once the issuer is known. As written: `iss` is compared as a
    // string, and a URL parser would add or drop a trailing slash.
    let issuer = read.text("COLA_JWT_ISSUER").or_else(|| {
        oidc_issuer
            .and_then(|_| read.text("COLA_OIDC_ISSUER"))
            .map(|raw| raw.trim().to_owned())
    });
    key.map(|key| JwtSettings {
        key,
        issuer,
        audience: read.text("COLA_JWT_AUDIENCE"),
        claims,
    })
}

/// The one key configured, or `None`; more than one is an error.
fn jwt_key(read: &mut Reader<'_>, choice: KeyChoice) -> Option<JwtKey> {
    let provider = choice.jwks_url.is_some() || choice.oidc_issuer.is_some();
    let chosen = [
        choice.secret.is_some(),
        choice.public_key.is_some(),
        provider,
    ];
    if chosen.iter().filter(|set| **set).count() > 1 {
        read.fail(
            if choice.secret.is_some() {
                "COLA_JWT_SECRET"
            } else {
                "COLA_JWT_PUBLIC_KEY_FILE"
            },
            "set only one of COLA_JWT_SECRET, COLA_JWT_PUBLIC_KEY_FILE and \
             COLA_JWT_JWKS_URL/COLA_OIDC_ISSUER",
        );
        return None;
    }
    if let Some(secret) = choice.secret {
        if secret.len() < MIN_SECRET_BYTES {
            read.fail(
                "COLA_JWT_SECRET",
                format!("must be at least {MIN_SECRET_BYTES} bytes long"),
            );
            return None;
        }
        return Some(JwtKey::Secret(Secret::new(secret)));
    }
    if let Some(path) = choice.public_key {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Some(JwtKey::PublicKeyFile(path));
        }
        read.fail(
            "COLA_JWT_PUBLIC_KEY_FILE",
            format!("no readable file at {}", path.display()),
        );
        return None;
    }
    let source = choice
        .jwks_url
        .map(JwksSource::Url)
        .or_else(|| choice.oidc_issuer.map(JwksSource::Discovery));
    source.map(JwtKey::Jwks)
}

fn claim_names(read: &Reader<'_>) -> ClaimNames {
    let defaults = ClaimNames::default();
    ClaimNames {
        tenant: read
            .text("COLA_JWT_TENANT_CLAIM")
            .map_or(defaults.tenant, |name| name.trim().to_owned()),
        role: read
            .text("COLA_JWT_ROLE_CLAIM")
            .map_or(defaults.role, |name| name.trim().to_owned()),
        admin_roles: match read.list("COLA_JWT_ADMIN_ROLES") {
            roles if roles.is_empty() => defaults.admin_roles,
            roles => roles,
        },
    }
}

/// The section as `check-config` prints it, the secret masked.
pub(super) fn describe(jwt: Option<&JwtSettings>) -> Vec<(&'static str, String)> {
    let key = match jwt.map(|jwt| &jwt.key) {
        None => "unset (management API disabled)".to_owned(),
        Some(JwtKey::Secret(_)) => "HS256 secret (set, masked)".to_owned(),
        Some(JwtKey::PublicKeyFile(path)) => format!("public key file {}", path.display()),
        Some(JwtKey::Jwks(JwksSource::Url(url))) => format!("JWKS at {url}"),
        Some(JwtKey::Jwks(JwksSource::Discovery(issuer))) => {
            format!("JWKS discovered from the issuer {issuer}")
        }
    };
    let claims = jwt.map(|j| j.claims.clone()).unwrap_or_default();
    vec![
        ("JWT", key),
        (
            "COLA_JWT_ISSUER",
            or_unset(jwt.and_then(|j| j.issuer.clone())),
        ),
        (
            "COLA_JWT_AUDIENCE",
            or_unset(jwt.and_then(|j| j.audience.clone())),
        ),
        ("COLA_JWT_TENANT_CLAIM", claims.tenant),
        ("COLA_JWT_ROLE_CLAIM", claims.role),
        ("COLA_JWT_ADMIN_ROLES", claims.admin_roles.join(",")),
    ]
}
