//! The console's sign-in with the identity provider of `COLA_OIDC_ISSUER`:
//! OpenID Connect authorization code with PKCE, Cola being the confidential
//! client (a backend-for-frontend: the browser never holds a provider token).
//!
//! The provider's metadata is discovered for each sign-in (two small
//! requests per sign-in, and a provider's rotated keys are always current).
//! What the callback needs — `state`, `nonce` and the PKCE verifier — travels
//! in a short-lived signed cookie, so any instance can finish a sign-in
//! another began.

use chrono::{DateTime, Utc};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};

use crate::config::OidcClientSettings;

/// How long a sign-in may take at the provider.
pub const SIGN_IN_TTL: chrono::Duration = chrono::Duration::minutes(10);

/// Why a sign-in failed: logged with its cause; the person sees a plain
/// "sign-in failed, try again".
#[derive(Debug, thiserror::Error)]
#[error("console sign-in failed at {step}")]
pub struct SignInError {
    step: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl SignInError {
    fn at(step: &'static str, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            step,
            source: source.into(),
        }
    }
}

/// A sign-in under way: kept in the sign-in cookie until the callback.
#[derive(Debug, Serialize, Deserialize)]
pub struct PendingSignIn {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub expires_at: DateTime<Utc>,
}

/// What a finished sign-in yields: the verified ID token, to be mapped to a
/// principal by the REST API's own verifier, and a name to show.
#[derive(Debug)]
pub struct SignedIn {
    pub id_token: String,
    pub display_name: Option<String>,
}

#[derive(Debug)]
pub struct OidcSignIn {
    settings: OidcClientSettings,
    redirect_url: String,
    http: reqwest::Client,
}

impl OidcSignIn {
    /// A sign-in through `settings`' provider that comes back to
    /// `<public_url>/console/callback`.
    pub fn new(settings: OidcClientSettings, public_url: &str) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            // Following redirects would let the provider's answers lead
            // Cola's requests elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            settings,
            redirect_url: format!("{public_url}/console/callback"),
            http,
        })
    }

    #[must_use]
    pub fn client_id(&self) -> &str {
        &self.settings.client_id
    }

    async fn metadata(&self) -> Result<CoreProviderMetadata, SignInError> {
        let issuer = IssuerUrl::new(
            self.settings
                .issuer
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
        )
        .map_err(|e| SignInError::at("the issuer URL", e))?;
        CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| SignInError::at("discovery", e))
    }

    fn redirect(&self) -> Result<RedirectUrl, SignInError> {
        RedirectUrl::new(self.redirect_url.clone())
            .map_err(|e| SignInError::at("the redirect URL", e))
    }

    /// Where to send the browser, and what the callback will need.
    pub async fn begin(&self, now: DateTime<Utc>) -> Result<(String, PendingSignIn), SignInError> {
        let client = CoreClient::from_provider_metadata(
            self.metadata().await?,
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(
                self.settings.client_secret.expose().to_owned(),
            )),
        )
        .set_redirect_uri(self.redirect()?);
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
        Ok((
            url.to_string(),
            PendingSignIn {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                pkce_verifier: verifier.secret().clone(),
                expires_at: now + SIGN_IN_TTL,
            },
        ))
    }

    /// Redeems `code` with the PKCE verifier, and verifies the ID token
    /// (signature, issuer, audience, expiry, nonce).
    pub async fn finish(
        &self,
        pending: PendingSignIn,
        code: String,
    ) -> Result<SignedIn, SignInError> {
        let client = CoreClient::from_provider_metadata(
            self.metadata().await?,
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(
                self.settings.client_secret.expose().to_owned(),
            )),
        )
        .set_redirect_uri(self.redirect()?);
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
        let claims = id_token
            .claims(&client.id_token_verifier(), &Nonce::new(pending.nonce))
            .map_err(|e| SignInError::at("the ID token", e))?;
        let display_name = claims
            .email()
            .map(|email| email.as_str().to_owned())
            .or_else(|| {
                claims
                    .preferred_username()
                    .map(|name| name.as_str().to_owned())
            });
        Ok(SignedIn {
            id_token: id_token.to_string(),
            display_name,
        })
    }
}
