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

#[derive(Debug, Deserialize, Serialize)]
struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    /// is a configuration error.
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
                    (key, Algorithm::ES256)
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
    pub fn verify(&self, token: &str) -> Result<Principal, &'static str> {
        if ApiKeySecret::looks_like_key(token) {
            return Err("an API key cannot manage keys");
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|_| "invalid token")?;
        let claims = data.claims;
        let user_id: UserId = claims
            .sub
            .as_deref()
            .and_then(|s| s.parse().ok())
            .ok_or("`sub` is missing or not a UUID")?;
        let tenant_id: TenantId = claims
            .tenant_id
            .as_deref()
            .and_then(|s| s.parse().ok())
            .ok_or("`tenant_id` is missing or not a UUID")?;
        let role = match claims.role.as_deref() {
            None | Some("member") => Role::Member,
            Some("admin") => Role::Admin,
            Some(_) => return Err("`role` is neither admin nor member"),
        };
        Ok(Principal {
            tenant_id,
            user_id,
            role,
        })
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
    let claims = Claims {
        sub: Some(user.to_string()),
        tenant_id: Some(tenant.to_string()),
        role: Some(match role {
            Role::Admin => "admin".into(),
            Role::Member => "member".into(),
        }),
        exp: (now + valid_for).timestamp(),
        iat: Some(now.timestamp()),
        iss: issuer.map(str::to_owned),
        aud: audience.map(str::to_owned),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
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
            (None, _) => Err("no JWT verification is configured"),
            (_, None) => Err("no bearer token"),
            (Some(verifier), Some(token)) => verifier.verify(token),
        };
        outcome.map(Caller).map_err(|reason| {
            tracing::info!(reason, "management request refused");
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
    use uuid::Uuid;

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
        let claims = Claims {
            sub: Some(Uuid::from_u128(2).to_string()),
            tenant_id: Some(Uuid::from_u128(1).to_string()),
            role: Some("owner".into()),
            exp: Utc::now().timestamp() + 3600,
            iat: None,
            iss: None,
            aud: None,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("token");
        assert!(verifier(None).verify(&token).is_err());
    }
}
