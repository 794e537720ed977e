//! Identity assertions (docs/verify.md): the short-lived JWT in
//! `X-Cola-Identity` that tells a server behind the gateway which user and
//! key a request comes from, and the public keys (JWKS) it is checked with.
//!
//! The signing key is parsed once, at start-up; each assertion costs one
//! JSON serialisation and one signature (Ed25519 or ECDSA P-256), so it can
//! be made per request. The JWT is assembled here rather than by
//! `jsonwebtoken::encode`, which would parse the key from DER again on
//! every call; `jsonwebtoken`'s JWK types and RFC 7638 thumbprint give the
//! published keys and their `kid`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, JwkSet, KeyAlgorithm, OctetKeyPairParameters, OctetKeyPairType,
    PublicKeyUse, ThumbprintHash,
};
use p256::ecdsa::signature::Signer as _;
use rand::TryRngCore;
use rand::rngs::OsRng;
use serde::Serialize;
use zeroize::Zeroizing;

/// How long an assertion is valid: the contract's upper bound.
pub use cola_application::ASSERTION_LIFETIME_SECS;

#[derive(Debug, thiserror::Error)]
pub enum IdentityKeyError {
    #[error(
        "is not a PEM private key of Ed25519 or P-256 (PKCS#8 `PRIVATE KEY`, or SEC1 `EC PRIVATE KEY`)"
    )]
    Unsupported,
    #[error("no randomness for a new key")]
    Randomness(#[source] rand::rand_core::OsError),
    #[error("the key cannot be written as PEM")]
    Encoding,
}

#[derive(Debug, thiserror::Error)]
#[error("the identity assertion could not be signed")]
pub struct SigningError(#[source] Box<dyn std::error::Error + Send + Sync>);

enum SigningKey {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

/// A private key that signs assertions, with its public JWK.
pub struct IdentityKey {
    signing: SigningKey,
    jwk: Jwk,
    /// `base64url({"alg","typ","kid"})`, the same for every assertion.
    encoded_header: String,
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityKey")
            .field("kid", &self.kid())
            .field("alg", &self.algorithm())
            .finish_non_exhaustive()
    }
}

impl IdentityKey {
    /// A key from PEM: PKCS#8 Ed25519 or P-256, or SEC1 P-256.
    pub fn from_pem(pem: &str) -> Result<Self, IdentityKeyError> {
        if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            return Ok(Self::new(SigningKey::Ed25519(key)));
        }
        if let Ok(key) = p256::SecretKey::from_pkcs8_pem(pem) {
            return Ok(Self::new(SigningKey::P256(key.into())));
        }
        if let Ok(key) = p256::SecretKey::from_sec1_pem(pem) {
            return Ok(Self::new(SigningKey::P256(key.into())));
        }
        Err(IdentityKeyError::Unsupported)
    }

    /// A new Ed25519 key from the OS generator.
    pub fn generate() -> Result<Self, IdentityKeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        OsRng
            .try_fill_bytes(seed.as_mut())
            .map_err(IdentityKeyError::Randomness)?;
        Ok(Self::new(SigningKey::Ed25519(
            ed25519_dalek::SigningKey::from_bytes(&seed),
        )))
    }

    /// The private key as PKCS#8 PEM, for `--dev` to keep.
    pub fn to_pem(&self) -> Result<Zeroizing<String>, IdentityKeyError> {
        use p256::pkcs8::EncodePrivateKey as _;
        let pem = match &self.signing {
            SigningKey::Ed25519(key) => key.to_pkcs8_pem(Default::default()),
            SigningKey::P256(key) => p256::SecretKey::from(key).to_pkcs8_pem(Default::default()),
        };
        pem.map(|pem| Zeroizing::new(pem.as_str().to_owned()))
            .map_err(|_| IdentityKeyError::Encoding)
    }

    fn new(signing: SigningKey) -> Self {
        let jwk = match &signing {
            SigningKey::Ed25519(key) => {
                okp_jwk(URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()))
            }
            SigningKey::P256(key) => ec_jwk(key.verifying_key()),
        };
        let jwk = with_kid(jwk);
        let header = serde_json::json!({
            "alg": algorithm_name(&signing),
            "typ": "JWT",
            "kid": jwk.common.key_id,
        });
        Self {
            encoded_header: URL_SAFE_NO_PAD.encode(header.to_string()),
            signing,
            jwk,
        }
    }

    /// The key's id: its RFC 7638 SHA-256 thumbprint.
    #[must_use]
    pub fn kid(&self) -> &str {
        self.jwk.common.key_id.as_deref().unwrap_or_default()
    }

    /// `EdDSA` or `ES256`.
    #[must_use]
    pub fn algorithm(&self) -> &'static str {
        algorithm_name(&self.signing)
    }

    /// The public key as published.
    #[must_use]
    pub fn public_jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// `claims` as a signed compact JWT.
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, SigningError> {
        let payload = serde_json::to_vec(claims).map_err(|error| SigningError(Box::new(error)))?;
        let mut jwt =
            String::with_capacity(self.encoded_header.len() + payload.len() * 4 / 3 + 100);
        jwt.push_str(&self.encoded_header);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut jwt);
        let signature = match &self.signing {
            SigningKey::Ed25519(key) => {
                use ed25519_dalek::Signer as _;
                key.sign(jwt.as_bytes()).to_bytes().to_vec()
            }
            SigningKey::P256(key) => {
                let signature: p256::ecdsa::Signature = key.sign(jwt.as_bytes());
                signature.to_bytes().to_vec()
            }
        };
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut jwt);
        Ok(jwt)
    }
}

fn algorithm_name(key: &SigningKey) -> &'static str {
    match key {
        SigningKey::Ed25519(_) => "EdDSA",
        SigningKey::P256(_) => "ES256",
    }
}

fn okp_jwk(x: String) -> Jwk {
    Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::EdDSA),
            ..CommonParameters::default()
        },
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x,
        }),
    }
}

fn ec_jwk(key: &p256::ecdsa::VerifyingKey) -> Jwk {
    let point = key.to_encoded_point(false);
    let coordinate = |bytes: Option<&p256::FieldBytes>| {
        bytes
            .map(|bytes| URL_SAFE_NO_PAD.encode(bytes))
            .unwrap_or_default()
    };
    Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::ES256),
            ..CommonParameters::default()
        },
        algorithm: AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
            key_type: EllipticCurveKeyType::EC,
            curve: EllipticCurve::P256,
            x: coordinate(point.x()),
            y: coordinate(point.y()),
        }),
    }
}

fn with_kid(mut jwk: Jwk) -> Jwk {
    jwk.common.key_id = Some(jwk.thumbprint(ThumbprintHash::SHA256));
    jwk
}

/// A public key that is still published (the previous signing key, during
/// a rotation): a private key PEM as for the current key, or the public
/// key alone (`PUBLIC KEY`, SPKI).
pub fn previous_public_jwk(pem: &str) -> Result<Jwk, IdentityKeyError> {
    if let Ok(key) = IdentityKey::from_pem(pem) {
        return Ok(key.jwk);
    }
    if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
        return Ok(with_kid(okp_jwk(URL_SAFE_NO_PAD.encode(key.as_bytes()))));
    }
    if let Ok(key) =
        <p256::ecdsa::VerifyingKey as p256::pkcs8::DecodePublicKey>::from_public_key_pem(pem)
    {
        return Ok(with_kid(ec_jwk(&key)));
    }
    Err(IdentityKeyError::Unsupported)
}

pub use cola_application::IdentityClaims;

/// The signing key and what `/.well-known/jwks.json` publishes.
#[derive(Debug)]
pub struct IdentityKeys {
    current: std::sync::Arc<IdentityKey>,
    published: JwkSet,
}

impl IdentityKeys {
    /// `previous`, when given, is published after the current key (unless
    /// it is the same key).
    #[must_use]
    pub fn new(current: std::sync::Arc<IdentityKey>, previous: Option<Jwk>) -> Self {
        let mut keys = vec![current.jwk.clone()];
        if let Some(previous) = previous
            && previous.common.key_id != current.jwk.common.key_id
        {
            keys.push(previous);
        }
        Self {
            current,
            published: JwkSet { keys },
        }
    }

    #[must_use]
    pub fn current(&self) -> &IdentityKey {
        &self.current
    }

    #[must_use]
    pub fn jwks(&self) -> &JwkSet {
        &self.published
    }
}

impl cola_application::IdentityAsserter for IdentityKeys {
    fn assert_identity(
        &self,
        claims: &IdentityClaims<'_>,
    ) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        self.current.sign(claims).map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};

    fn claims(jti: uuid::Uuid) -> IdentityClaims<'static> {
        IdentityClaims {
            iss: "https://cola.example.com",
            aud: "https://cola.example.com/mcp/github",
            sub: uuid::Uuid::from_u128(1),
            tenant_id: uuid::Uuid::from_u128(2),
            server_id: uuid::Uuid::from_u128(4),
            key_id: uuid::Uuid::from_u128(3),
            key_prefix: "cola_abcdefghijkl",
            iat: chrono::Utc::now().timestamp(),
            exp: chrono::Utc::now().timestamp() + ASSERTION_LIFETIME_SECS,
            jti,
        }
    }

    /// Checks `jwt` with `jsonwebtoken` against the key as published.
    fn check(jwt: &str, jwk: &Jwk, algorithm: Algorithm) -> serde_json::Value {
        let header = decode_header(jwt).expect("header");
        assert_eq!(header.alg, algorithm);
        assert_eq!(header.kid.as_deref(), jwk.common.key_id.as_deref());
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&["https://cola.example.com"]);
        validation.set_audience(&["https://cola.example.com/mcp/github"]);
        let key = DecodingKey::from_jwk(jwk).expect("decoding key");
        decode::<serde_json::Value>(jwt, &key, &validation)
            .expect("valid")
            .claims
    }

    #[test]
    fn an_ed25519_assertion_verifies_against_its_published_key() {
        let key = IdentityKey::generate().expect("key");
        assert_eq!(key.algorithm(), "EdDSA");
        let jti = uuid::Uuid::new_v4();
        let jwt = key.sign(&claims(jti)).expect("signed");
        let verified = check(&jwt, key.public_jwk(), Algorithm::EdDSA);
        assert_eq!(verified["jti"], jti.to_string());
        assert_eq!(verified["key_prefix"], "cola_abcdefghijkl");
    }

    #[test]
    fn a_p256_assertion_verifies_against_its_published_key() {
        let secret = p256::SecretKey::from_slice(&[7u8; 32]).expect("a scalar below the order");
        let pem = {
            use p256::pkcs8::EncodePrivateKey as _;
            secret.to_pkcs8_pem(Default::default()).expect("pem")
        };
        let key = IdentityKey::from_pem(&pem).expect("P-256 key");
        assert_eq!(key.algorithm(), "ES256");
        let jwt = key.sign(&claims(uuid::Uuid::new_v4())).expect("signed");
        check(&jwt, key.public_jwk(), Algorithm::ES256);
    }

    #[test]
    fn a_tampered_assertion_is_refused() {
        let key = IdentityKey::generate().expect("key");
        let jwt = key.sign(&claims(uuid::Uuid::new_v4())).expect("signed");
        let mut parts: Vec<String> = jwt.split('.').map(str::to_owned).collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).expect("b64")).expect("json");
        payload["sub"] = serde_json::json!(uuid::Uuid::from_u128(9));
        parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
        let forged = parts.join(".");
        let key_for_check = DecodingKey::from_jwk(key.public_jwk()).expect("decoding key");
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&["https://cola.example.com/mcp/github"]);
        assert!(decode::<serde_json::Value>(&forged, &key_for_check, &validation).is_err());
    }

    #[test]
    fn the_kid_is_the_rfc7638_thumbprint_and_survives_a_pem_round_trip() {
        let key = IdentityKey::generate().expect("key");
        let again = IdentityKey::from_pem(&key.to_pem().expect("pem")).expect("parsed");
        assert_eq!(key.kid(), again.kid());
        let AlgorithmParameters::OctetKeyPair(okp) = &key.public_jwk().algorithm else {
            panic!("an Ed25519 key is an OKP JWK");
        };
        use sha2::Digest;
        let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, okp.x);
        let expected = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()));
        assert_eq!(key.kid(), expected);
    }

    #[test]
    fn the_previous_key_is_published_after_the_current_one() {
        let old = IdentityKey::generate().expect("old");
        let new = IdentityKey::generate().expect("new");
        let old_pem = old.to_pem().expect("pem");
        let keys = IdentityKeys::new(
            std::sync::Arc::new(new),
            Some(previous_public_jwk(&old_pem).expect("previous")),
        );
        let kids: Vec<_> = keys
            .jwks()
            .keys
            .iter()
            .map(|jwk| jwk.common.key_id.clone().expect("kid"))
            .collect();
        assert_eq!(
            kids,
            [keys.current().kid().to_owned(), old.kid().to_owned()]
        );
    }

    #[test]
    fn junk_is_not_a_key() {
        assert!(IdentityKey::from_pem("not a key").is_err());
        assert!(
            previous_public_jwk("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
    }
}
