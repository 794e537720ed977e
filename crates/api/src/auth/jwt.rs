//! Management-API authentication: a JWT from the tenant's identity provider,
//! verified with a pinned algorithm (a static secret or public key) or with
//! the provider's published keys (JWKS, the algorithm being each key's), and
//! turned into a `Principal`, which the `Caller` extractor (`caller.rs`)
//! hands to the management routes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Duration, Utc};
use cola_application::{KeySetFetcher, Principal, Role};
use cola_domain::{ApiKeySecret, TenantId, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::auth::jwks::ProviderKeys;
use crate::config::{ClaimNames, JwtKey, JwtSettings};

/// Seconds of clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 5;

/// The claims Cola reads. `exp`, `iss` and `aud` are checked by
/// `jsonwebtoken` as RFC 7519 has them (a NumericDate, fractions allowed; an
/// audience string or array) and are not read again here, so an identity
/// provider's own shapes (Keycloak and Auth0 issue `aud` arrays) pass.
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    role: Option<String>,
}

/// The claims `mint_token` signs.
#[derive(Debug, Serialize)]
struct MintedClaims {
    sub: String,
    tenant_id: String,
    role: &'static str,
    exp: i64,
    iat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
}

pub struct JwtVerifier {
    keys: VerificationKeys,
    /// `exp`, `iss` and `aud` as configured; the algorithm is set per token
    /// in the provider mode.
    validation: Validation,
}

enum VerificationKeys {
    /// One key, one algorithm (`COLA_JWT_SECRET`, `COLA_JWT_PUBLIC_KEY_FILE`);
    /// the claims are read as docs/decisions.md, "Management JWT", names them.
    Pinned(DecodingKey),
    /// The provider's JWKS; the claims are read where `ClaimNames` says, and
    /// non-UUID ids are mapped (see [`mapped_id`]).
    Provider {
        keys: Arc<ProviderKeys>,
        claims: ClaimNames,
    },
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.keys {
            VerificationKeys::Pinned(_) => "pinned",
            VerificationKeys::Provider { .. } => "provider JWKS",
        };
        f.debug_struct("JwtVerifier")
            .field("mode", &mode)
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Builds the verifier; a PEM that is neither an RSA nor an EC public key
    /// (on P-256 or P-384) is a configuration error. `fetcher` gives what
    /// fetches the provider's keys; it is called in the provider mode only,
    /// so a pinned key builds no HTTP client.
    pub fn new<E: From<JwtKeyError>>(
        settings: &JwtSettings,
        fetcher: impl FnOnce() -> Result<Arc<dyn KeySetFetcher>, E>,
    ) -> Result<Self, E> {
        let (key, algorithm) = match &settings.key {
            JwtKey::Jwks(source) => {
                let keys = ProviderKeys::new(source.clone(), fetcher()?);
                return Ok(Self::with_provider(Arc::new(keys), settings));
            }
            JwtKey::Secret(secret) => (
                DecodingKey::from_secret(secret.expose().as_bytes()),
                Algorithm::HS256,
            ),
            JwtKey::PublicKeyFile(path) => public_key(path)?,
        };
        // Exactly one algorithm: a token signed otherwise (`none` included)
        // is refused before its claims are read.
        Ok(Self {
            keys: VerificationKeys::Pinned(key),
            validation: validation(algorithm, settings),
        })
    }

    /// A verifier against the provider's keys `keys`.
    #[must_use]
    pub fn with_provider(keys: Arc<ProviderKeys>, settings: &JwtSettings) -> Self {
        Self {
            keys: VerificationKeys::Provider {
                keys,
                claims: settings.claims.clone(),
            },
            // The algorithm is replaced by the key's for every token.
            validation: validation(Algorithm::RS256, settings),
        }
    }

    /// The provider's keys, in the provider mode.
    #[must_use]
    pub fn provider_keys(&self) -> Option<&Arc<ProviderKeys>> {
        match &self.keys {
            VerificationKeys::Provider { keys, .. } => Some(keys),
            VerificationKeys::Pinned(_) => None,
        }
    }

    /// The principal a token names, or why it is refused (for the log only;
    /// the client hears a plain 401).
    pub async fn verify(&self, token: &str) -> Result<Principal, TokenRefusal> {
        self.verify_for(token, None).await
    }

    /// As [`Self::verify`], with the audience `audience` required instead of
    /// the configured one: an ID token is addressed to the console's client.
    pub async fn verify_for(
        &self,
        token: &str,
        audience: Option<&str>,
    ) -> Result<Principal, TokenRefusal> {
        if ApiKeySecret::looks_like_key(token) {
            return Err(TokenRefusal::ApiKey);
        }
        let mut validation = self.validation.clone();
        if let Some(audience) = audience {
            validation.set_audience(&[audience]);
            validation.validate_aud = true;
            validation.required_spec_claims.insert("aud".into());
        }
        match &self.keys {
            VerificationKeys::Pinned(key) => {
                let data = jsonwebtoken::decode::<Claims>(token, key, &validation)
                    .map_err(TokenRefusal::Invalid)?;
                pinned_principal(data.claims)
            }
            VerificationKeys::Provider { keys, claims } => {
                let header = jsonwebtoken::decode_header(token).map_err(TokenRefusal::Invalid)?;
                if matches!(
                    header.alg,
                    Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
                ) {
                    return Err(TokenRefusal::Algorithm(header.alg));
                }
                let key = keys
                    .key_for(header.kid.as_deref())
                    .await
                    .ok_or(TokenRefusal::UnknownKey(header.kid.clone()))?;
                if header.alg != key.algorithm {
                    return Err(TokenRefusal::Algorithm(header.alg));
                }
                validation.algorithms = vec![key.algorithm];
                let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
                    .map_err(TokenRefusal::Invalid)?;
                provider_principal(&data.claims, claims, keys.source_url())
            }
        }
    }
}

/// Why the configured public key (`COLA_JWT_PUBLIC_KEY_FILE`) cannot be
/// used; the message names the variable, never the file's contents.
#[derive(Debug, thiserror::Error)]
pub enum JwtKeyError {
    #[error("COLA_JWT_PUBLIC_KEY_FILE: cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "COLA_JWT_PUBLIC_KEY_FILE: {} is an EC key on a curve other than P-256 (ES256) or \
         P-384 (ES384), the two supported",
        path.display()
    )]
    UnsupportedCurve { path: PathBuf },
    #[error(
        "COLA_JWT_PUBLIC_KEY_FILE: {} is not an RSA or EC public key in PEM form",
        path.display()
    )]
    NotAPublicKey { path: PathBuf },
}

/// The PEM public key at `path` and the one algorithm it verifies: RS256
/// for RSA, ES256 or ES384 by the EC key's curve.
fn public_key(path: &Path) -> Result<(DecodingKey, Algorithm), JwtKeyError> {
    let pem = std::fs::read(path).map_err(|source| JwtKeyError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, Algorithm::RS256));
    }
    let Ok(key) = DecodingKey::from_ec_pem(&pem) else {
        return Err(JwtKeyError::NotAPublicKey {
            path: path.to_owned(),
        });
    };
    let algorithm = ec_algorithm(&key).ok_or_else(|| JwtKeyError::UnsupportedCurve {
        path: path.to_owned(),
    })?;
    Ok((key, algorithm))
}

/// What every token is checked for, whatever its key: `exp` (with
/// [`LEEWAY_SECS`]), and `iss` and `aud` when configured.
fn validation(algorithm: Algorithm, settings: &JwtSettings) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = LEEWAY_SECS;
    validation.set_required_spec_claims(&["exp"]);
    match &settings.issuer {
        Some(issuer) => {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        None => validation.iss = None,
    }
    match &settings.audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            validation.required_spec_claims.insert("aud".into());
        }
        None => validation.validate_aud = false,
    }
    validation
}

/// A pinned-mode token's principal: `sub` and `tenant_id` UUIDs, `role`
/// `admin` or `member` (decision 25).
fn pinned_principal(claims: Claims) -> Result<Principal, TokenRefusal> {
    let user_id: UserId = claims
        .sub
        .as_deref()
        .and_then(|s| s.parse().ok())
        .ok_or(TokenRefusal::Claim("`sub` is missing or not a UUID"))?;
    let tenant_id: TenantId = claims
        .tenant_id
        .as_deref()
        .and_then(|s| s.parse().ok())
        .ok_or(TokenRefusal::Claim("`tenant_id` is missing or not a UUID"))?;
    let role = match claims.role.as_deref() {
        None | Some("member") => Role::Member,
        Some("admin") => Role::Admin,
        Some(_) => return Err(TokenRefusal::Claim("`role` is neither admin nor member")),
    };
    Ok(Principal {
        tenant_id,
        user_id,
        role,
    })
}

/// A provider token's principal (docs/operations.md, "Pointing Cola at Keycloak or
/// any OIDC provider"): `sub` and the tenant claim
/// as ids (mapped when they are not UUIDs), admin when the role claim — a
/// string or an array of strings — holds one of the admin roles, member when
/// it holds none or is missing.
fn provider_principal(
    claims: &Map<String, Value>,
    names: &ClaimNames,
    source_url: &str,
) -> Result<Principal, TokenRefusal> {
    let issuer = claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or(source_url);
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|sub| !sub.is_empty())
        .ok_or(TokenRefusal::Claim("`sub` is missing or not a string"))?;
    let tenant = match claim(claims, &names.tenant) {
        Some(Value::String(tenant)) if !tenant.is_empty() => tenant.clone(),
        Some(Value::Number(tenant)) => tenant.to_string(),
        _ => {
            return Err(TokenRefusal::ProviderClaim(format!(
                "the tenant claim `{}` is missing, empty, or neither a string nor a number",
                names.tenant
            )));
        }
    };
    let is_admin_role = |role: &str| names.admin_roles.iter().any(|admin| admin == role);
    let role = match claim(claims, &names.role) {
        None | Some(Value::Null) => Role::Member,
        Some(Value::String(role)) => {
            if is_admin_role(role) {
                Role::Admin
            } else {
                Role::Member
            }
        }
        Some(Value::Array(roles)) => {
            let mut admin = false;
            for role in roles {
                let role = role.as_str().ok_or_else(|| {
                    TokenRefusal::ProviderClaim(format!(
                        "the role claim `{}` is an array holding something other than strings",
                        names.role
                    ))
                })?;
                admin |= is_admin_role(role);
            }
            if admin { Role::Admin } else { Role::Member }
        }
        Some(_) => {
            return Err(TokenRefusal::ProviderClaim(format!(
                "the role claim `{}` is neither a string nor an array of strings",
                names.role
            )));
        }
    };
    Ok(Principal {
        tenant_id: TenantId::from_uuid(mapped_id(issuer, "tenant", &tenant)),
        user_id: UserId::from_uuid(mapped_id(issuer, "sub", sub)),
        role,
    })
}

/// The claim `name`: a top-level claim of that name, or else the value at
/// that dotted path through nested objects (`realm_access.roles`).
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// Cola's id for a provider's `sub` or tenant value: the value itself when
/// it is a UUID, and otherwise the UUIDv5 of `"<kind>:<value>"` under the
/// namespace UUIDv5(URL, issuer) — stable for ever, distinct per issuer,
/// and computable by an operator (docs/operations.md shows how).
#[must_use]
pub fn mapped_id(issuer: &str, kind: &str, value: &str) -> Uuid {
    if let Ok(id) = Uuid::parse_str(value) {
        return id;
    }
    let namespace = Uuid::new_v5(&Uuid::NAMESPACE_URL, issuer.as_bytes());
    Uuid::new_v5(&namespace, format!("{kind}:{value}").as_bytes())
}

/// The algorithm of an EC public key, by its curve: ES256 for P-256, ES384
/// for P-384, `None` for any other curve. `jsonwebtoken` would take a key of
/// any curve and then fail every signature, so the curve is told here, from
/// the key's point, which must lie on it.
fn ec_algorithm(key: &DecodingKey) -> Option<Algorithm> {
    let point = key.as_bytes();
    if p256::PublicKey::from_sec1_bytes(point).is_ok() {
        Some(Algorithm::ES256)
    } else if p384::PublicKey::from_sec1_bytes(point).is_ok() {
        Some(Algorithm::ES384)
    } else {
        None
    }
}

/// Mints an HS256 management token (for `cola-api dev-token` and `--dev`).
pub fn mint_token(
    secret: &str,
    tenant: TenantId,
    user: UserId,
    role: Role,
    valid_for: Duration,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = Utc::now();
    let claims = MintedClaims {
        sub: user.to_string(),
        tenant_id: tenant.to_string(),
        role: match role {
            Role::Admin => "admin",
            Role::Member => "member",
        },
        exp: (now + valid_for).timestamp(),
        iat: now.timestamp(),
        iss: issuer.map(str::to_owned),
        aud: audience.map(str::to_owned),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// Why a management request was refused. Logged with its whole cause chain
/// (an expired token, a bad signature and a wrong algorithm read differently
/// in the log); the client hears one plain 401 for all.
#[derive(Debug, thiserror::Error)]
pub enum TokenRefusal {
    #[error("no JWT verification is configured")]
    NotConfigured,
    #[error("no bearer token")]
    Missing,
    #[error("an API key cannot manage keys")]
    ApiKey,
    #[error("invalid token")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    #[error("{0}")]
    Claim(&'static str),
    #[error("{0}")]
    ProviderClaim(String),
    #[error("the algorithm {0:?} is not the one of the provider's key")]
    Algorithm(Algorithm),
    #[error("no key of the identity provider has the kid {0:?}")]
    UnknownKey(Option<String>),
    #[error("the console session is invalid, expired or ended")]
    Session,
}

impl TokenRefusal {
    /// What the caller is told (RFC 6750 `error_description`, and the
    /// problem's `detail`): why the token was refused, in words an operator
    /// can act on, never which secret or key was tried. Every kind is
    /// listed, so a new one must be described.
    #[must_use]
    pub fn description(&self) -> String {
        match self {
            Self::NotConfigured => {
                "the management API is not configured on this instance (no JWT setting)".to_owned()
            }
            Self::Missing => "a bearer token is required".to_owned(),
            Self::ApiKey => "a cola_ API key cannot manage keys; send a management JWT".to_owned(),
            Self::Invalid(error) => invalid_token_description(error).to_owned(),
            Self::Claim(claim) => format!("token claim: {claim}"),
            Self::ProviderClaim(claim) => format!("token claim: {claim}"),
            Self::Algorithm(_) => "the token's algorithm is not accepted".to_owned(),
            Self::UnknownKey(_) => {
                "no key of the identity provider matches the token's kid".to_owned()
            }
            Self::Session => {
                "the console session is invalid, expired or ended; sign in again".to_owned()
            }
        }
    }

    /// Whether the request carried a token to refuse (RFC 6750 §3.1: a
    /// request with no credential gets no error code).
    #[must_use]
    pub fn presented_a_token(&self) -> bool {
        match self {
            Self::NotConfigured | Self::Missing => false,
            Self::ApiKey
            | Self::Invalid(_)
            | Self::Claim(_)
            | Self::ProviderClaim(_)
            | Self::Algorithm(_)
            | Self::UnknownKey(_)
            | Self::Session => true,
        }
    }
}

/// Why `jsonwebtoken` refused a token, in words.
fn invalid_token_description(error: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not valid yet (nbf)",
        ErrorKind::InvalidSignature => "signature does not verify",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "the token's algorithm is not accepted"
        }
        ErrorKind::InvalidIssuer => "issuer not accepted",
        ErrorKind::InvalidAudience => "audience not accepted",
        ErrorKind::InvalidSubject => "subject not accepted",
        ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => "token claim `exp` is missing",
        ErrorKind::MissingRequiredClaim(_) => "a required token claim is missing",
        _ => "token malformed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use serde_json::json;
    use uuid::Uuid;

    /// These tests pin their keys: no provider is ever asked.
    #[derive(Debug)]
    struct NoProvider;

    #[async_trait::async_trait]
    impl KeySetFetcher for NoProvider {
        async fn fetch(&self, _url: &str) -> Result<Vec<u8>, cola_application::DocumentFetchError> {
            Err(cola_application::DocumentFetchError::Status(404))
        }
    }

    fn no_provider() -> Result<Arc<dyn KeySetFetcher>, JwtKeyError> {
        Ok(Arc::new(NoProvider))
    }

    // Test keys, generated for these tests only with
    // `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` (and
    // P-384, P-521) and `openssl pkey -pubout`.
    const P256_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgsIX2aiarF6xuJQ2I\n\
chIKCy1Bn1iSg7F81i4pCFeWQaehRANCAAR9Jsa1TOp682MKSP0SY9A6SIGugQsv\n\
qGmvNn7bxlzafqO9j00Xj8q4q3kXpQzly+RwYseNpc5rghTmX29Q4mOF\n\
-----END PRIVATE KEY-----\n";
    const P256_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEfSbGtUzqevNjCkj9EmPQOkiBroEL\n\
L6hprzZ+28Zc2n6jvY9NF4/KuKt5F6UM5cvkcGLHjaXOa4IU5l9vUOJjhQ==\n\
-----END PUBLIC KEY-----\n";
    const P384_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDCjaFjM8ny5VoscQUfq\n\
NbrybaZV1Prfw+QX10+j4/PIGXCLEghchnPSCveUaIIm2w2hZANiAAS6sahdRG6G\n\
69sGqf8d7DJ/2QW1NWq+F2iyE7vnviowqgaJGeS68BAbqYR6zGZ9SZhl9rE0VwPB\n\
x1V4vwOqchnJB5VSrOzFg1qYVX4zWZG1yCB4uQ+gCGqSkgqoFKVK/38=\n\
-----END PRIVATE KEY-----\n";
    const P384_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEurGoXURuhuvbBqn/Hewyf9kFtTVqvhdo\n\
shO7574qMKoGiRnkuvAQG6mEesxmfUmYZfaxNFcDwcdVeL8DqnIZyQeVUqzsxYNa\n\
mFV+M1mRtcggeLkPoAhqkpIKqBSlSv9/\n\
-----END PUBLIC KEY-----\n";
    const P521_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MIGbMBAGByqGSM49AgEGBSuBBAAjA4GGAAQAvAXFFCAl2hnkDJBA0hMVxsMDIUqG\n\
7I/mxuwC6ZmLzt0Suum4mYD6pIf2l/awi+tyzgxJigGlE4dbXGBy0hRbY+cBsrwt\n\
tMELi07mnAarEZrcp03qq8kQlxSyEx6wyQh2udNR31uBWqSgl/WaWvCqLZrdEe+W\n\
RteyW2wE94HUnTDRofo=\n\
-----END PUBLIC KEY-----\n";

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn verifier(issuer: Option<&str>) -> JwtVerifier {
        JwtVerifier::new(
            &JwtSettings {
                key: JwtKey::Secret(Secret::new(SECRET.into())),
                issuer: issuer.map(str::to_owned),
                audience: None,
                claims: ClaimNames::default(),
            },
            no_provider,
        )
        .expect("verifier")
    }

    fn ids() -> (TenantId, UserId) {
        (
            TenantId::from_uuid(Uuid::from_u128(1)),
            UserId::from_uuid(Uuid::from_u128(2)),
        )
    }

    #[tokio::test]
    async fn a_minted_token_verifies_to_its_principal() {
        let (tenant, user) = ids();
        let token = mint_token(
            SECRET,
            tenant,
            user,
            Role::Admin,
            Duration::hours(1),
            None,
            None,
        )
        .expect("token");
        let principal = verifier(None).verify(&token).await.expect("valid");
        assert_eq!(
            principal,
            Principal {
                tenant_id: tenant,
                user_id: user,
                role: Role::Admin
            }
        );
    }

    #[tokio::test]
    async fn a_refusal_keeps_the_library_s_reason_as_its_cause() {
        let (tenant, user) = ids();
        let token = mint_token(
            SECRET,
            tenant,
            user,
            Role::Member,
            Duration::hours(-1),
            None,
            None,
        )
        .expect("token");
        let refusal = verifier(None).verify(&token).await.expect_err("expired");
        assert!(matches!(refusal, TokenRefusal::Invalid(_)));
        let logged = cola_application::error_chain(&refusal);
        assert!(logged.starts_with("invalid token: "), "{logged}");
        assert!(logged.to_lowercase().contains("expired"), "{logged}");
    }

    #[tokio::test]
    async fn an_expired_token_is_refused() {
        let (tenant, user) = ids();
        let token = mint_token(
            SECRET,
            tenant,
            user,
            Role::Member,
            Duration::hours(-1),
            None,
            None,
        )
        .expect("token");
        assert!(verifier(None).verify(&token).await.is_err());
    }

    #[tokio::test]
    async fn a_token_signed_with_another_secret_is_refused() {
        let (tenant, user) = ids();
        let token = mint_token(
            &"x".repeat(32),
            tenant,
            user,
            Role::Member,
            Duration::hours(1),
            None,
            None,
        )
        .expect("token");
        assert!(verifier(None).verify(&token).await.is_err());
    }

    #[tokio::test]
    async fn an_unsigned_token_is_refused() {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = engine.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let claims = engine.encode(format!(
            r#"{{"sub":"{}","tenant_id":"{}","exp":{}}}"#,
            Uuid::from_u128(2),
            Uuid::from_u128(1),
            Utc::now().timestamp() + 3600
        ));
        assert!(
            verifier(None)
                .verify(&format!("{header}.{claims}."))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_wrong_issuer_is_refused_when_one_is_configured() {
        let (tenant, user) = ids();
        let token = mint_token(
            SECRET,
            tenant,
            user,
            Role::Member,
            Duration::hours(1),
            Some("other"),
            None,
        )
        .expect("token");
        assert!(verifier(Some("idp")).verify(&token).await.is_err());
        let token = mint_token(
            SECRET,
            tenant,
            user,
            Role::Member,
            Duration::hours(1),
            Some("idp"),
            None,
        )
        .expect("token");
        assert!(verifier(Some("idp")).verify(&token).await.is_ok());
    }

    #[tokio::test]
    async fn an_unknown_role_is_refused() {
        let token = signed(&json!({
            "sub": Uuid::from_u128(2).to_string(),
            "tenant_id": Uuid::from_u128(1).to_string(),
            "role": "owner",
            "exp": Utc::now().timestamp() + 3600,
        }));
        assert!(verifier(None).verify(&token).await.is_err());
    }

    /// `claims` signed with [`SECRET`].
    fn signed(claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("token")
    }

    fn with_audience(audience: Option<&str>) -> JwtVerifier {
        JwtVerifier::new(
            &JwtSettings {
                key: JwtKey::Secret(Secret::new(SECRET.into())),
                issuer: None,
                audience: audience.map(str::to_owned),
                claims: ClaimNames::default(),
            },
            no_provider,
        )
        .expect("verifier")
    }

    /// Valid claims with `aud` and `exp` as given.
    fn claims(aud: Option<serde_json::Value>, exp: serde_json::Value) -> serde_json::Value {
        let mut claims = json!({
            "sub": Uuid::from_u128(2).to_string(),
            "tenant_id": Uuid::from_u128(1).to_string(),
            "exp": exp,
        });
        if let Some(aud) = aud {
            claims["aud"] = aud;
        }
        claims
    }

    fn in_an_hour() -> serde_json::Value {
        json!(Utc::now().timestamp() + 3600)
    }

    #[tokio::test]
    async fn an_audience_array_is_accepted_with_no_audience_configured() {
        let token = signed(&claims(Some(json!(["account", "cola"])), in_an_hour()));
        assert!(with_audience(None).verify(&token).await.is_ok());
        let token = signed(&claims(Some(json!("account")), in_an_hour()));
        assert!(with_audience(None).verify(&token).await.is_ok());
    }

    #[tokio::test]
    async fn a_configured_audience_must_be_in_the_string_or_array() {
        let cola = with_audience(Some("cola"));
        for (aud, accepted) in [
            (Some(json!(["account", "cola"])), true),
            (Some(json!("cola")), true),
            (Some(json!(["account", "billing"])), false),
            (Some(json!("account")), false),
            (Some(json!([])), false),
            (None, false),
        ] {
            let token = signed(&claims(aud.clone(), in_an_hour()));
            assert_eq!(cola.verify(&token).await.is_ok(), accepted, "aud {aud:?}");
        }
    }

    #[tokio::test]
    async fn a_fractional_exp_is_a_numeric_date_like_any_other() {
        #[allow(clippy::cast_precision_loss)]
        let now = Utc::now().timestamp() as f64;
        let token = signed(&claims(None, json!(now + 3600.5)));
        assert!(verifier(None).verify(&token).await.is_ok());
        let token = signed(&claims(None, json!(now - 3600.5)));
        assert!(verifier(None).verify(&token).await.is_err(), "expired");
        for exp in [json!("soon"), json!(-1), json!(null)] {
            let token = signed(&claims(None, exp.clone()));
            assert!(verifier(None).verify(&token).await.is_err(), "exp {exp}");
        }
        let mut no_exp = claims(None, json!(0));
        no_exp.as_object_mut().expect("object").remove("exp");
        assert!(
            verifier(None).verify(&signed(&no_exp)).await.is_err(),
            "no exp"
        );
    }

    /// A verifier reading `pem` as `COLA_JWT_PUBLIC_KEY_FILE`.
    fn from_public_key(pem: &str) -> Result<JwtVerifier, JwtKeyError> {
        let path = std::env::temp_dir().join(format!("cola-jwt-{}.pem", Uuid::new_v4().simple()));
        std::fs::write(&path, pem).expect("write the key");
        let verifier = JwtVerifier::new(
            &JwtSettings {
                key: JwtKey::PublicKeyFile(path.clone()),
                issuer: None,
                audience: None,
                claims: ClaimNames::default(),
            },
            no_provider,
        );
        let _ = std::fs::remove_file(&path);
        verifier
    }

    fn ec_signed(algorithm: Algorithm, private_pem: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(algorithm),
            &claims(None, in_an_hour()),
            &EncodingKey::from_ec_pem(private_pem.as_bytes()).expect("EC private key"),
        )
        .expect("token")
    }

    #[tokio::test]
    async fn a_p256_key_verifies_es256_tokens() {
        let verifier = from_public_key(P256_PUBLIC).expect("P-256 is supported");
        assert!(
            verifier
                .verify(&ec_signed(Algorithm::ES256, P256_PRIVATE))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_p384_key_verifies_es384_tokens_and_no_es256_ones() {
        let verifier = from_public_key(P384_PUBLIC).expect("P-384 is supported");
        assert!(
            verifier
                .verify(&ec_signed(Algorithm::ES384, P384_PRIVATE))
                .await
                .is_ok()
        );
        assert!(
            verifier
                .verify(&ec_signed(Algorithm::ES256, P256_PRIVATE))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_key_on_another_curve_is_refused_at_start_up_by_name() {
        let error = from_public_key(P521_PUBLIC)
            .expect_err("P-521 is not supported")
            .to_string();
        assert!(error.starts_with("COLA_JWT_PUBLIC_KEY_FILE: "), "{error}");
        assert!(
            error.contains("P-256") && error.contains("P-384"),
            "{error}"
        );
    }

    fn provider_claims(value: serde_json::Value) -> Map<String, Value> {
        value.as_object().expect("object").clone()
    }

    fn names(tenant: &str, role: &str, admins: &[&str]) -> ClaimNames {
        ClaimNames {
            tenant: tenant.into(),
            role: role.into(),
            admin_roles: admins.iter().map(|role| (*role).to_owned()).collect(),
        }
    }

    #[test]
    fn a_non_uuid_sub_maps_to_one_uuid_per_issuer_and_a_uuid_stays_itself() {
        let alice = mapped_id("https://id.example.com", "sub", "auth0|alice");
        assert_eq!(
            alice,
            mapped_id("https://id.example.com", "sub", "auth0|alice")
        );
        assert_ne!(
            alice,
            mapped_id("https://other.example.com", "sub", "auth0|alice")
        );
        assert_ne!(
            alice,
            mapped_id("https://id.example.com", "tenant", "auth0|alice")
        );
        assert_eq!(alice.get_version_num(), 5);
        let id = Uuid::from_u128(7);
        assert_eq!(
            mapped_id("https://id.example.com", "sub", &id.to_string()),
            id
        );
    }

    #[test]
    fn the_role_claim_is_a_string_or_an_array_and_admin_if_any_value_is_listed() {
        let names = names("org", "realm_access.roles", &["cola-admin", "owner"]);
        let role = |roles: serde_json::Value| {
            provider_principal(
                &provider_claims(
                    json!({ "sub": "1", "org": "acme", "realm_access": { "roles": roles } }),
                ),
                &names,
                "https://jwks",
            )
            .map(|principal| principal.role)
            .ok()
        };
        assert_eq!(role(json!(["viewer", "owner"])), Some(Role::Admin));
        assert_eq!(role(json!("cola-admin")), Some(Role::Admin));
        assert_eq!(role(json!(["viewer"])), Some(Role::Member));
        assert_eq!(role(json!([])), Some(Role::Member));
        assert_eq!(role(json!(null)), Some(Role::Member));
        assert!(role(json!([1])).is_none());
        assert!(role(json!({ "admin": true })).is_none());
        let no_role = provider_principal(
            &provider_claims(json!({ "sub": "1", "org": "acme" })),
            &names,
            "https://jwks",
        );
        assert_eq!(
            no_role.ok().map(|principal| principal.role),
            Some(Role::Member)
        );
    }

    #[test]
    fn a_missing_or_empty_tenant_claim_is_refused() {
        let names = names("org", "role", &["admin"]);
        for claims in [
            json!({ "sub": "1" }),
            json!({ "sub": "1", "org": "" }),
            json!({ "sub": "1", "org": [] }),
        ] {
            assert!(
                provider_principal(&provider_claims(claims.clone()), &names, "x").is_err(),
                "{claims}"
            );
        }
        let numeric = provider_principal(
            &provider_claims(json!({ "sub": "1", "org": 42 })),
            &names,
            "x",
        )
        .expect("a numeric tenant is its digits");
        assert_eq!(numeric.tenant_id.as_uuid(), mapped_id("x", "tenant", "42"));
    }
}
