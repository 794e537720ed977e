//! The console's sign-in with the identity provider of `COLA_OIDC_ISSUER`:
//! OpenID Connect authorization code with PKCE, Cola being the confidential
//! client (a backend-for-frontend: the browser never holds a provider token). It
//! implements the application's [`ProviderSignIn`] port; the api's console
//! only redirects, seals the pending sign-in and maps the ID token.
//!
//! The provider's metadata (its discovery document and the keys it names)
//! is fetched once and kept: a sign-in page does not fetch it. It is fetched
//! again when it is [`METADATA_TTL`] old, or when an ID token names a key
//! it does not hold — never more often than once per
//! [`METADATA_REFETCH_INTERVAL`], whatever asks, so a provider that fails
//! is not asked again by every sign-in page (the metadata held is used
//! meanwhile, stale or not). What the callback needs — `state`, `nonce` and
//! the PKCE verifier — travels in a short-lived signed cookie, so any
//! instance can finish a sign-in another began.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cola_application::{
    PendingSignIn, ProviderSignIn, SIGN_IN_TTL, SignInError, SignInStart, SignedIn,
};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreIdTokenClaims, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, SignatureVerificationError, TokenResponse,
};
use zeroize::Zeroizing;

/// The console's OpenID Connect client, as configured.
pub struct OidcClientSettings {
    /// `COLA_OIDC_ISSUER`.
    pub issuer: url::Url,
    pub client_id: String,
    pub client_secret: Zeroizing<String>,
    /// Where the provider sends the browser back: `<public URL>/console/callback`.
    pub redirect_url: String,
}

impl std::fmt::Debug for OidcClientSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClientSettings")
            .field("issuer", &self.issuer.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("redirect_url", &self.redirect_url)
            .finish()
    }
}

/// The HTTP client could not be built (no TLS roots, for one).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client")]
pub struct OidcClientError(#[source] reqwest::Error);

/// How long the provider's metadata is used before a sign-in fetches it
/// again (as long as the REST API keeps its keys, decision 85).
pub const METADATA_TTL: Duration = Duration::from_secs(600);
/// The least time between two fetches of the provider's metadata, whether
/// its age, an unknown key or a failed fetch asks (as decision 86's).
pub const METADATA_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// A client built from discovered metadata: it has the authorization
/// endpoint, and the token and user-info endpoints if the metadata names them.
type ProviderClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// [`ProviderSignIn`] with the `openidconnect` crate over HTTP.
#[derive(Debug)]
pub struct OidcSignIn {
    settings: OidcClientSettings,
    http: reqwest::Client,
    metadata: FetchedOnce<CoreProviderMetadata>,
}

/// Whether a value held may be used as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refresh {
    /// Unless it is older than the TTL.
    IfStale,
    /// No: it lacks something (an ID token names a key it does not hold).
    Now,
}

/// Why there is no value to use.
#[derive(Debug, thiserror::Error)]
enum Unfetched<E: std::error::Error + 'static> {
    #[error(transparent)]
    Failed(E),
    #[error("the last attempt was less than {}s ago and failed", METADATA_REFETCH_INTERVAL.as_secs())]
    TooSoon,
}

#[derive(Debug)]
struct Held<T> {
    value: Arc<T>,
    fetched_at: Instant,
}

#[derive(Debug)]
struct FetchState<T> {
    held: Option<Held<T>>,
    last_attempt: Option<Instant>,
}

/// A document fetched once and kept, refetched by the rules of the module
/// documentation. Concurrent callers that need a fetch wait for one.
#[derive(Debug)]
struct FetchedOnce<T> {
    state: tokio::sync::Mutex<FetchState<T>>,
}

impl<T> FetchedOnce<T> {
    fn new() -> Self {
        Self {
            state: tokio::sync::Mutex::new(FetchState {
                held: None,
                last_attempt: None,
            }),
        }
    }

    /// The value to use at `now`: the one held, or a fresh one from `fetch`.
    async fn get<E, F, Fut>(
        &self,
        now: Instant,
        refresh: Refresh,
        fetch: F,
    ) -> Result<Arc<T>, Unfetched<E>>
    where
        E: std::error::Error + 'static,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let mut state = self.state.lock().await;
        if let Some(held) = &state.held
            && refresh == Refresh::IfStale
            && now.saturating_duration_since(held.fetched_at) < METADATA_TTL
        {
            return Ok(Arc::clone(&held.value));
        }
        let held = state.held.as_ref().map(|held| Arc::clone(&held.value));
        if state
            .last_attempt
            .is_some_and(|last| now.saturating_duration_since(last) < METADATA_REFETCH_INTERVAL)
        {
            return held.ok_or(Unfetched::TooSoon);
        }
        state.last_attempt = Some(now);
        match fetch().await {
            Ok(value) => {
                let value = Arc::new(value);
                state.held = Some(Held {
                    value: Arc::clone(&value),
                    fetched_at: now,
                });
                Ok(value)
            }
            Err(error) => match held {
                Some(held) => {
                    tracing::warn!(
                        error = %cola_application::error_chain(&error),
                        "the identity provider's metadata could not be refreshed; the metadata held is used"
                    );
                    Ok(held)
                }
                None => Err(Unfetched::Failed(error)),
            },
        }
    }
}

impl OidcSignIn {
    /// A sign-in through `settings`' provider.
    pub fn new(settings: OidcClientSettings) -> Result<Self, OidcClientError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            // Following redirects would let the provider's answers lead
            // Cola's requests elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(OidcClientError)?;
        Ok(Self {
            settings,
            http,
            metadata: FetchedOnce::new(),
        })
    }

    /// The provider's metadata and keys: those held, or fetched now.
    async fn metadata(&self, refresh: Refresh) -> Result<Arc<CoreProviderMetadata>, SignInError> {
        let issuer = IssuerUrl::new(
            self.settings
                .issuer
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
        )
        .map_err(|e| SignInError::at("the issuer URL", e))?;
        self.metadata
            .get(Instant::now(), refresh, || {
                CoreProviderMetadata::discover_async(issuer, &self.http)
            })
            .await
            .map_err(|e| SignInError::at("discovery", e))
    }

    fn client(&self, metadata: &CoreProviderMetadata) -> Result<ProviderClient, SignInError> {
        let redirect = RedirectUrl::new(self.settings.redirect_url.clone())
            .map_err(|e| SignInError::at("the redirect URL", e))?;
        Ok(CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(
                self.settings.client_secret.as_str().to_owned(),
            )),
        )
        .set_redirect_uri(redirect))
    }
}

#[async_trait]
impl ProviderSignIn for OidcSignIn {
    fn client_id(&self) -> &str {
        &self.settings.client_id
    }

    /// Where to send the browser, and what the callback will need.
    async fn begin(&self, now: DateTime<Utc>) -> Result<SignInStart, SignInError> {
        let metadata = self.metadata(Refresh::IfStale).await?;
        let client = self.client(&metadata)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        Ok(SignInStart {
            url: url.to_string(),
            pending: PendingSignIn {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                pkce_verifier: verifier.secret().clone(),
                expires_at: now + SIGN_IN_TTL,
            },
        })
    }

    /// Redeems `code` with the PKCE verifier, and verifies the ID token
    /// (signature, issuer, audience, expiry, nonce). A token signed with a
    /// key the metadata held does not know refetches it once (the provider
    /// rotated its keys) and is verified again.
    async fn finish(&self, pending: PendingSignIn, code: String) -> Result<SignedIn, SignInError> {
        let metadata = self.metadata(Refresh::IfStale).await?;
        let client = self.client(&metadata)?;
        let response = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| SignInError::at("the token endpoint", e))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| SignInError::at("the code exchange", e))?;
        let id_token = response
            .id_token()
            .ok_or_else(|| SignInError::at("the token response", "no ID token in it"))?;
        let nonce = Nonce::new(pending.nonce);
        let display_name = match verified_name(&client, id_token, &nonce) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                let refreshed = self.metadata(Refresh::Now).await?;
                verified_name(&self.client(&refreshed)?, id_token, &nonce)
            }
            verified => verified,
        }
        .map_err(|e| SignInError::at("the ID token", e))?;
        Ok(SignedIn {
            id_token: id_token.to_string(),
            display_name,
        })
    }
}

/// The name to show for a verified ID token: its `email`, or its
/// `preferred_username`.
fn verified_name(
    client: &ProviderClient,
    id_token: &CoreIdToken,
    nonce: &Nonce,
) -> Result<Option<String>, ClaimsVerificationError> {
    let claims: &CoreIdTokenClaims = id_token.claims(&client.id_token_verifier(), nonce)?;
    Ok(claims
        .email()
        .map(|email| email.as_str().to_owned())
        .or_else(|| {
            claims
                .preferred_username()
                .map(|name| name.as_str().to_owned())
        }))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the provider is down")]
    struct Down;

    /// Gets from `cache` at `now`, counting fetches in `fetches`; the fetch
    /// yields `answer`.
    async fn get(
        cache: &FetchedOnce<u32>,
        now: Instant,
        refresh: Refresh,
        fetches: &Cell<u32>,
        answer: Result<u32, ()>,
    ) -> Result<u32, ()> {
        cache
            .get(now, refresh, || {
                fetches.set(fetches.get() + 1);
                std::future::ready(answer.map_err(|()| Down))
            })
            .await
            .map(|value| *value)
            .map_err(|_| ())
    }

    #[tokio::test]
    async fn the_metadata_is_fetched_once_and_again_only_when_stale() {
        let (cache, fetches, start) = (FetchedOnce::new(), Cell::new(0), Instant::now());
        for second in 0..100 {
            let now = start + Duration::from_secs(second);
            assert_eq!(
                get(&cache, now, Refresh::IfStale, &fetches, Ok(1)).await,
                Ok(1)
            );
        }
        assert_eq!(fetches.get(), 1);
        let stale = start + METADATA_TTL;
        assert_eq!(
            get(&cache, stale, Refresh::IfStale, &fetches, Ok(2)).await,
            Ok(2)
        );
        assert_eq!(fetches.get(), 2);
    }

    #[tokio::test]
    async fn a_failing_provider_is_asked_at_most_once_per_interval() {
        let (cache, fetches, start) = (FetchedOnce::new(), Cell::new(0), Instant::now());
        for tenth in 0..50 {
            let now = start + Duration::from_millis(100 * tenth);
            assert_eq!(
                get(&cache, now, Refresh::IfStale, &fetches, Err(())).await,
                Err(())
            );
        }
        assert_eq!(fetches.get(), 1, "the first page asked; the others waited");
        let later = start + METADATA_REFETCH_INTERVAL;
        assert_eq!(
            get(&cache, later, Refresh::IfStale, &fetches, Ok(7)).await,
            Ok(7)
        );
        assert_eq!(fetches.get(), 2);
    }

    #[tokio::test]
    async fn stale_metadata_is_used_while_the_provider_fails() {
        let (cache, fetches, start) = (FetchedOnce::new(), Cell::new(0), Instant::now());
        assert_eq!(
            get(&cache, start, Refresh::IfStale, &fetches, Ok(1)).await,
            Ok(1)
        );
        let stale = start + METADATA_TTL;
        assert_eq!(
            get(&cache, stale, Refresh::IfStale, &fetches, Err(())).await,
            Ok(1)
        );
        let soon_after = stale + Duration::from_secs(1);
        assert_eq!(
            get(&cache, soon_after, Refresh::IfStale, &fetches, Err(())).await,
            Ok(1)
        );
        assert_eq!(fetches.get(), 2, "one failed refresh, then the interval");
    }

    #[tokio::test]
    async fn an_unknown_key_refetches_at_most_once_per_interval() {
        let (cache, fetches, start) = (FetchedOnce::new(), Cell::new(0), Instant::now());
        assert_eq!(
            get(&cache, start, Refresh::IfStale, &fetches, Ok(1)).await,
            Ok(1)
        );
        let later = start + METADATA_REFETCH_INTERVAL;
        assert_eq!(
            get(&cache, later, Refresh::Now, &fetches, Ok(2)).await,
            Ok(2)
        );
        let soon_after = later + Duration::from_secs(1);
        assert_eq!(
            get(&cache, soon_after, Refresh::Now, &fetches, Ok(3)).await,
            Ok(2)
        );
        assert_eq!(fetches.get(), 2);
    }
}
