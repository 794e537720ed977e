//! An identity provider's signing keys (docs/operations.md, "Pointing
//! Cola at Keycloak or any OIDC provider"): the JWKS at
//! `COLA_JWT_JWKS_URL`, or the one `COLA_OIDC_ISSUER`'s discovery document
//! names. Fetched at start and kept fresh in the background; a token naming
//! a `kid` the set does not hold triggers one refetch, at most once per
//! [`REFETCH_INTERVAL`], so a provider that rotates its keys is followed at
//! once while a stream of made-up `kid`s costs it one request per interval.
//!
//! Each key's algorithm is the key's own: RS256 (or the RSA algorithm its
//! `alg` names) for RSA, ES256 for P-256, ES384 for P-384, EdDSA for
//! Ed25519. Symmetric (`oct`) keys and encryption keys are never used, so no
//! token is ever checked with an HMAC.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cola_application::{DocumentFetchError, KeySetFetcher, MAX_PROVIDER_DOCUMENT_BYTES};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::sync::{Mutex, watch};

use crate::config::{JwksSource, is_safe_provider_url};

/// The least time between two fetches asked for by unknown `kid`s.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// How often the set is refreshed in the background once it was fetched,
/// so a key the provider withdrew stops being accepted.
const REFRESH_INTERVAL: Duration = Duration::from_secs(600);
/// The longest wait between two attempts while the provider is unreachable.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// Why the keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot fetch {url}")]
    Unreachable {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} answered more than {MAX_PROVIDER_DOCUMENT_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url} is not a valid {what}")]
    Malformed {
        url: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the discovery document at {url} {problem}")]
    Discovery { url: String, problem: String },
    #[error("{url} holds no signing key Cola can use (RSA, EC P-256/P-384 or Ed25519)")]
    NoUsableKey { url: String },
}

/// One usable public key of the provider.
#[derive(Clone)]
pub struct ProviderKey {
    pub kid: Option<String>,
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

impl std::fmt::Debug for ProviderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct FetchState {
    /// The last fetch an unknown `kid` asked for; the scheduled fetches
    /// (at start, every [`REFRESH_INTERVAL`]) do not count against it.
    last_refetch: Option<Instant>,
    /// The JWKS URL, once known (discovery is done once).
    jwks_url: Option<url::Url>,
}

/// The provider's keys, shared by every request.
#[derive(Debug)]
pub struct ProviderKeys {
    source: JwksSource,
    /// The HTTP side, in the infrastructure: this module only reads what it
    /// fetches.
    fetcher: Arc<dyn KeySetFetcher>,
    keys: RwLock<Arc<Vec<ProviderKey>>>,
    fetch: Mutex<FetchState>,
}

#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: Option<String>,
    jwks_uri: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}

impl ProviderKeys {
    #[must_use]
    pub fn new(source: JwksSource, fetcher: Arc<dyn KeySetFetcher>) -> Self {
        Self {
            source,
            fetcher,
            keys: RwLock::new(Arc::new(Vec::new())),
            fetch: Mutex::new(FetchState::default()),
        }
    }

    /// The URL that identifies the provider where a token has no `iss`.
    #[must_use]
    pub fn source_url(&self) -> &str {
        match &self.source {
            JwksSource::Url(url) | JwksSource::Discovery(url) => url.as_str(),
        }
    }

    /// The keys held now.
    #[must_use]
    pub fn current(&self) -> Arc<Vec<ProviderKey>> {
        self.keys.read().map_or_else(
            |poisoned| Arc::clone(&poisoned.into_inner()),
            |keys| Arc::clone(&keys),
        )
    }

    /// Fetches the set now, whatever the interval; the keys found.
    pub async fn refresh(&self) -> Result<Arc<Vec<ProviderKey>>, JwksError> {
        let mut state = self.fetch.lock().await;
        self.fetch_locked(&mut state).await
    }

    async fn fetch_locked(
        &self,
        state: &mut FetchState,
    ) -> Result<Arc<Vec<ProviderKey>>, JwksError> {
        let url = match &state.jwks_url {
            Some(url) => url.clone(),
            None => {
                let url = self.jwks_url().await?;
                state.jwks_url = Some(url.clone());
                url
            }
        };
        let body = self.get(&url).await?;
        let set: RawKeySet =
            serde_json::from_slice(&body).map_err(|source| JwksError::Malformed {
                url: url.to_string(),
                what: "JWKS",
                source,
            })?;
        let keys: Vec<ProviderKey> = set.keys.into_iter().filter_map(usable_key).collect();
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey {
                url: url.to_string(),
            });
        }
        let keys = Arc::new(keys);
        match self.keys.write() {
            Ok(mut held) => *held = Arc::clone(&keys),
            Err(poisoned) => *poisoned.into_inner() = Arc::clone(&keys),
        }
        tracing::info!(url = %url, keys = keys.len(), "identity provider keys fetched");
        Ok(keys)
    }

    /// The JWKS URL: the configured one, or the discovered `jwks_uri`.
    async fn jwks_url(&self) -> Result<url::Url, JwksError> {
        let issuer = match &self.source {
            JwksSource::Url(url) => return Ok(url.clone()),
            JwksSource::Discovery(issuer) => issuer,
        };
        let discovery_url = discovery_url(issuer);
        let body = self.get(&discovery_url).await?;
        let document: Discovery =
            serde_json::from_slice(&body).map_err(|source| JwksError::Malformed {
                url: discovery_url.to_string(),
                what: "OpenID Connect discovery document",
                source,
            })?;
        let problem = |problem: String| JwksError::Discovery {
            url: discovery_url.to_string(),
            problem,
        };
        // OpenID Connect Discovery §4.3: the document's issuer is the one
        // asked for, exactly, or its keys are not this issuer's.
        let same_issuer = document.issuer.as_deref().is_some_and(|found| {
            found.trim_end_matches('/') == issuer.as_str().trim_end_matches('/')
        });
        if !same_issuer {
            return Err(problem(format!(
                "names the issuer {:?}, not {issuer}",
                document.issuer.unwrap_or_default()
            )));
        }
        let jwks_uri = document
            .jwks_uri
            .ok_or_else(|| problem("has no jwks_uri".into()))?;
        match url::Url::parse(&jwks_uri) {
            Ok(url) if is_safe_provider_url(&url) => Ok(url),
            _ => Err(problem(format!(
                "names a jwks_uri that is not https:// (or http:// to this machine): {jwks_uri}"
            ))),
        }
    }

    async fn get(&self, url: &url::Url) -> Result<Vec<u8>, JwksError> {
        let url_text = url.to_string();
        self.fetcher
            .fetch(url.as_str())
            .await
            .map_err(|error| match error {
                DocumentFetchError::Unreachable(source) => JwksError::Unreachable {
                    url: url_text,
                    source,
                },
                DocumentFetchError::Status(status) => JwksError::Status {
                    url: url_text,
                    status,
                },
                DocumentFetchError::TooLarge => JwksError::TooLarge { url: url_text },
            })
    }

    /// The key a token's header names: by `kid`, or the only key when the
    /// token has none. A `kid` not held triggers one refetch, unless one was
    /// made within [`REFETCH_INTERVAL`].
    pub async fn key_for(&self, kid: Option<&str>) -> Option<ProviderKey> {
        if let Some(key) = find(&self.current(), kid) {
            return Some(key);
        }
        let mut state = self.fetch.lock().await;
        // Another request may have refetched while this one waited.
        if let Some(key) = find(&self.current(), kid) {
            return Some(key);
        }
        if state
            .last_refetch
            .is_some_and(|last| last.elapsed() < REFETCH_INTERVAL)
        {
            return None;
        }
        state.last_refetch = Some(Instant::now());
        match self.fetch_locked(&mut state).await {
            Ok(keys) => find(&keys, kid),
            Err(error) => {
                tracing::warn!(error = %cola_application::error_chain(&error), "identity provider keys could not be refetched");
                None
            }
        }
    }

    /// Fetches the keys until it succeeds (waiting longer after each
    /// failure, up to [`MAX_RETRY_WAIT`]), then refreshes them every
    /// [`REFRESH_INTERVAL`]; returns when `stop` changes.
    pub async fn keep_fresh(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut retry_wait = Duration::from_secs(1);
        loop {
            let wait = match self.refresh().await {
                Ok(_) => {
                    retry_wait = Duration::from_secs(1);
                    REFRESH_INTERVAL
                }
                Err(error) => {
                    tracing::error!(
                        error = %cola_application::error_chain(&error),
                        retry_in_secs = retry_wait.as_secs(),
                        "identity provider keys unavailable: management JWTs are refused until they are fetched"
                    );
                    let wait = retry_wait;
                    retry_wait = (retry_wait * 2).min(MAX_RETRY_WAIT);
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

/// `<issuer>/.well-known/openid-configuration` (OpenID Connect Discovery
/// §4: appended to the issuer, whose own trailing slash is dropped).
#[must_use]
pub fn discovery_url(issuer: &url::Url) -> url::Url {
    let mut url = issuer.clone();
    let path = format!(
        "{}/.well-known/openid-configuration",
        issuer.path().trim_end_matches('/')
    );
    url.set_path(&path);
    url
}

fn find(keys: &[ProviderKey], kid: Option<&str>) -> Option<ProviderKey> {
    match kid {
        Some(kid) => keys.iter().find(|key| key.kid.as_deref() == Some(kid)),
        None if keys.len() == 1 => keys.first(),
        None => None,
    }
    .cloned()
}

/// A JWKS entry as a verification key with its algorithm, or `None` for an
/// entry Cola does not verify with: an encryption key, a symmetric key, a
/// curve it does not support, an `alg` that does not fit the key's type, or
/// an entry that does not parse (one odd key does not spoil the set).
fn usable_key(entry: serde_json::Value) -> Option<ProviderKey> {
    let jwk: Jwk = serde_json::from_value(entry).ok()?;
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let declared = jwk.common.key_algorithm;
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => match declared {
            None | Some(KeyAlgorithm::RS256) => Algorithm::RS256,
            Some(KeyAlgorithm::RS384) => Algorithm::RS384,
            Some(KeyAlgorithm::RS512) => Algorithm::RS512,
            Some(KeyAlgorithm::PS256) => Algorithm::PS256,
            Some(KeyAlgorithm::PS384) => Algorithm::PS384,
            Some(KeyAlgorithm::PS512) => Algorithm::PS512,
            Some(_) => return None,
        },
        AlgorithmParameters::EllipticCurve(params) => match (&params.curve, declared) {
            (EllipticCurve::P256, None | Some(KeyAlgorithm::ES256)) => Algorithm::ES256,
            (EllipticCurve::P384, None | Some(KeyAlgorithm::ES384)) => Algorithm::ES384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(params) => match (&params.curve, declared) {
            (EllipticCurve::Ed25519, None | Some(KeyAlgorithm::EdDSA)) => Algorithm::EdDSA,
            _ => return None,
        },
        // Never an HMAC: a published key is public, and a token "signed"
        // with it proves nothing.
        AlgorithmParameters::OctetKey(_) => return None,
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(ProviderKey {
        kid: jwk.common.key_id,
        key,
        algorithm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // The public half of the P-256 test key of `jwt.rs`, as a JWK.
    fn p256(kid: &str, alg: Option<&str>, usage: Option<&str>) -> serde_json::Value {
        let mut key = json!({
            "kty": "EC", "crv": "P-256", "kid": kid,
            "x": "fSbGtUzqevNjCkj9EmPQOkiBroELL6hprzZ-28Zc2n4",
            "y": "o72PTRePyrireRelDOXL5HBix42lzmuCFOZfb1DiY4U",
        });
        if let Some(alg) = alg {
            key["alg"] = json!(alg);
        }
        if let Some(usage) = usage {
            key["use"] = json!(usage);
        }
        key
    }

    #[test]
    fn an_ec_key_on_p256_verifies_es256() {
        let key = usable_key(p256("a", None, Some("sig"))).expect("usable");
        assert_eq!(key.algorithm, Algorithm::ES256);
        assert_eq!(key.kid.as_deref(), Some("a"));
    }

    #[test]
    fn a_symmetric_key_is_never_used() {
        let oct =
            json!({ "kty": "oct", "kid": "h", "k": "c2VjcmV0c2VjcmV0c2VjcmV0", "alg": "HS256" });
        assert!(usable_key(oct).is_none());
    }

    #[test]
    fn an_alg_that_does_not_fit_the_key_type_makes_it_unusable() {
        assert!(usable_key(p256("a", Some("HS256"), None)).is_none());
        assert!(usable_key(p256("a", Some("RS256"), None)).is_none());
    }

    #[test]
    fn an_encryption_key_is_not_a_signing_key() {
        assert!(usable_key(p256("a", None, Some("enc"))).is_none());
    }

    #[test]
    fn an_entry_that_does_not_parse_is_skipped() {
        assert!(usable_key(json!({ "kty": "nope" })).is_none());
    }

    #[test]
    fn a_token_without_kid_uses_the_only_key_and_no_other() {
        let one = vec![usable_key(p256("a", None, None)).expect("usable")];
        assert!(find(&one, None).is_some());
        assert!(find(&one, Some("b")).is_none());
        let two = vec![
            one[0].clone(),
            usable_key(p256("b", None, None)).expect("usable"),
        ];
        assert!(find(&two, None).is_none());
        assert_eq!(
            find(&two, Some("b")).and_then(|key| key.kid).as_deref(),
            Some("b")
        );
    }

    #[test]
    fn the_discovery_document_is_under_the_issuer_s_path() {
        for (issuer, expected) in [
            (
                "https://id.example.com",
                "https://id.example.com/.well-known/openid-configuration",
            ),
            (
                "https://kc.example.com/realms/acme/",
                "https://kc.example.com/realms/acme/.well-known/openid-configuration",
            ),
        ] {
            let issuer = url::Url::parse(issuer).expect("url");
            assert_eq!(discovery_url(&issuer).as_str(), expected);
        }
    }
}
