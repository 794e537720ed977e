//! Management-API authentication: a JWT from the tenant's identity provider,
//! verified with a pinned algorithm, turned into a `Principal` by the
//! `Caller` extractor.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use chrono::{Duration, Utc};
use cola_application::{Principal, Role};
use cola_domain::{ApiKeySecret, TenantId, UserId};
use futures_util::future::{Ready, ready};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::client_ip::ClientIpResolver;
use crate::config::{JwtKey, JwtSettings};
use crate::problem::Problem;
use crate::rate_limit::FailureLimiter;

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
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Builds the verifier; a PEM that is neither an RSA nor an EC public key
    /// (on P-256 or P-384) is a configuration error.
    pub fn new(settings: &JwtSettings) -> Result<Self, String> {
        let (key, algorithm) = match &settings.key {
            JwtKey::Secret(secret) => (
                DecodingKey::from_secret(secret.expose().as_bytes()),
                Algorithm::HS256,
            ),
            JwtKey::PublicKeyFile(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    format!(
                        "COLA_JWT_PUBLIC_KEY_FILE: cannot read {}: {e}",
                        path.display()
                    )
                })?;
                if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                    (key, Algorithm::RS256)
                } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                    let algorithm = ec_algorithm(&key).ok_or_else(|| {
                        format!(
                            "COLA_JWT_PUBLIC_KEY_FILE: {} is an EC key on a curve other than \
                             P-256 (ES256) or P-384 (ES384), the two supported",
                            path.display()
                        )
                    })?;
                    (key, algorithm)
                } else {
                    return Err(format!(
                        "COLA_JWT_PUBLIC_KEY_FILE: {} is not an RSA or EC public key in PEM form",
                        path.display()
                    ));
                }
            }
        };
        // Exactly one algorithm: a token signed otherwise (`none` included)
        // is refused before its claims are read.
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
        Ok(Self { key, validation })
    }

    /// The principal a token names, or why it is refused (for the log only;
    /// the client hears a plain 401).
    pub fn verify(&self, token: &str) -> Result<Principal, TokenRefusal> {
        if ApiKeySecret::looks_like_key(token) {
            return Err(TokenRefusal::ApiKey);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(TokenRefusal::Invalid)?;
        let claims = data.claims;
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
}

/// What the `Caller` extractor needs, shared through app data.
#[derive(Debug, Clone)]
pub struct ManagementAuth {
    /// `None` when no JWT setting is configured: every request is refused.
    pub verifier: Option<Arc<JwtVerifier>>,
    pub limiter: Arc<FailureLimiter>,
    pub client_ip: ClientIpResolver,
}

/// The authenticated tenant user of a management request.
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub Principal);

fn bearer(request: &HttpRequest) -> Option<&str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

impl Caller {
    fn authenticate(request: &HttpRequest) -> Result<Self, Problem> {
        let Some(auth) = request.app_data::<web::Data<ManagementAuth>>() else {
            return Err(Problem::internal());
        };
        let client: Option<IpAddr> = auth.client_ip.of_request(request);
        if let Some(client) = client
            && let Err(wait) = auth.limiter.check(client)
        {
            return Err(Problem::too_many_requests(wait));
        }
        let outcome = match (&auth.verifier, bearer(request)) {
            (None, _) => Err(TokenRefusal::NotConfigured),
            (_, None) => Err(TokenRefusal::Missing),
            (Some(verifier), Some(token)) => verifier.verify(token),
        };
        outcome.map(Caller).map_err(|refusal| {
            tracing::info!(reason = %cola_application::error_chain(&refusal), "management request refused");
            // Failures are numbered atomically: one past the limit is
            // answered 429 even if it passed the check above concurrently.
            match client.map(|client| auth.limiter.record_failure(client)) {
                Some(Err(wait)) => Problem::too_many_requests(wait),
                _ => Problem::unauthorized("a valid management JWT is required"),
            }
        })
    }
}

impl FromRequest for Caller {
    type Error = Problem;
    type Future = Ready<Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Self::authenticate(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use serde_json::json;
    use uuid::Uuid;

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
        JwtVerifier::new(&JwtSettings {
            key: JwtKey::Secret(Secret::new(SECRET.into())),
            issuer: issuer.map(str::to_owned),
            audience: None,
        })
        .expect("verifier")
    }

    fn ids() -> (TenantId, UserId) {
        (
            TenantId::from_uuid(Uuid::from_u128(1)),
            UserId::from_uuid(Uuid::from_u128(2)),
        )
    }

    #[test]
    fn a_minted_token_verifies_to_its_principal() {
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
        let principal = verifier(None).verify(&token).expect("valid");
        assert_eq!(
            principal,
            Principal {
                tenant_id: tenant,
                user_id: user,
                role: Role::Admin
            }
        );
    }

    #[test]
    fn a_refusal_keeps_the_library_s_reason_as_its_cause() {
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
        let refusal = verifier(None).verify(&token).expect_err("expired");
        assert!(matches!(refusal, TokenRefusal::Invalid(_)));
        let logged = cola_application::error_chain(&refusal);
        assert!(logged.starts_with("invalid token: "), "{logged}");
        assert!(logged.to_lowercase().contains("expired"), "{logged}");
    }

    #[test]
    fn an_expired_token_is_refused() {
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
        assert!(verifier(None).verify(&token).is_err());
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
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
        assert!(verifier(None).verify(&token).is_err());
    }

    #[test]
    fn an_unsigned_token_is_refused() {
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
                .is_err()
        );
    }

    #[test]
    fn a_wrong_issuer_is_refused_when_one_is_configured() {
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
        assert!(verifier(Some("idp")).verify(&token).is_err());
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
        assert!(verifier(Some("idp")).verify(&token).is_ok());
    }

    #[test]
    fn an_unknown_role_is_refused() {
        let token = signed(&json!({
            "sub": Uuid::from_u128(2).to_string(),
            "tenant_id": Uuid::from_u128(1).to_string(),
            "role": "owner",
            "exp": Utc::now().timestamp() + 3600,
        }));
        assert!(verifier(None).verify(&token).is_err());
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
        JwtVerifier::new(&JwtSettings {
            key: JwtKey::Secret(Secret::new(SECRET.into())),
            issuer: None,
            audience: audience.map(str::to_owned),
        })
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

    #[test]
    fn an_audience_array_is_accepted_with_no_audience_configured() {
        let token = signed(&claims(Some(json!(["account", "cola"])), in_an_hour()));
        assert!(with_audience(None).verify(&token).is_ok());
        let token = signed(&claims(Some(json!("account")), in_an_hour()));
        assert!(with_audience(None).verify(&token).is_ok());
    }

    #[test]
    fn a_configured_audience_must_be_in_the_string_or_array() {
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
            assert_eq!(cola.verify(&token).is_ok(), accepted, "aud {aud:?}");
        }
    }

    #[test]
    fn a_fractional_exp_is_a_numeric_date_like_any_other() {
        #[allow(clippy::cast_precision_loss)]
        let now = Utc::now().timestamp() as f64;
        let token = signed(&claims(None, json!(now + 3600.5)));
        assert!(verifier(None).verify(&token).is_ok());
        let token = signed(&claims(None, json!(now - 3600.5)));
        assert!(verifier(None).verify(&token).is_err(), "expired");
        for exp in [json!("soon"), json!(-1), json!(null)] {
            let token = signed(&claims(None, exp.clone()));
            assert!(verifier(None).verify(&token).is_err(), "exp {exp}");
        }
        let mut no_exp = claims(None, json!(0));
        no_exp.as_object_mut().expect("object").remove("exp");
        assert!(verifier(None).verify(&signed(&no_exp)).is_err(), "no exp");
    }

    /// A verifier reading `pem` as `COLA_JWT_PUBLIC_KEY_FILE`.
    fn from_public_key(pem: &str) -> Result<JwtVerifier, String> {
        let path = std::env::temp_dir().join(format!("cola-jwt-{}.pem", Uuid::new_v4().simple()));
        std::fs::write(&path, pem).expect("write the key");
        let verifier = JwtVerifier::new(&JwtSettings {
            key: JwtKey::PublicKeyFile(path.clone()),
            issuer: None,
            audience: None,
        });
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

    #[test]
    fn a_p256_key_verifies_es256_tokens() {
        let verifier = from_public_key(P256_PUBLIC).expect("P-256 is supported");
        assert!(
            verifier
                .verify(&ec_signed(Algorithm::ES256, P256_PRIVATE))
                .is_ok()
        );
    }

    #[test]
    fn a_p384_key_verifies_es384_tokens_and_no_es256_ones() {
        let verifier = from_public_key(P384_PUBLIC).expect("P-384 is supported");
        assert!(
            verifier
                .verify(&ec_signed(Algorithm::ES384, P384_PRIVATE))
                .is_ok()
        );
        assert!(
            verifier
                .verify(&ec_signed(Algorithm::ES256, P256_PRIVATE))
                .is_err()
        );
    }

    #[test]
    fn a_key_on_another_curve_is_refused_at_start_up_by_name() {
        let error = from_public_key(P521_PUBLIC).expect_err("P-521 is not supported");
        assert!(error.starts_with("COLA_JWT_PUBLIC_KEY_FILE: "), "{error}");
        assert!(
            error.contains("P-256") && error.contains("P-384"),
            "{error}"
        );
    }
}
