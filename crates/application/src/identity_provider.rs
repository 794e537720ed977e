//! What Cola needs from the management identity provider, in its own terms:
//! the provider's documents (its OpenID Connect discovery document, its
//! JWKS) fetched over HTTP, and the console's sign-in (authorization URL,
//! code exchange, verified ID token). The infrastructure implements both
//! over HTTP; the api keeps what reads the documents, which is not I/O.

use std::fmt::Debug;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

type Source = Box<dyn std::error::Error + Send + Sync>;

/// A provider document larger than this is refused: a JWKS or a discovery
/// document is a few kilobytes, and the provider's answer is not trusted to
/// be small.
pub const MAX_PROVIDER_DOCUMENT_BYTES: usize = 1024 * 1024;

/// How long a sign-in may take at the provider.
pub const SIGN_IN_TTL: chrono::Duration = chrono::Duration::minutes(10);

/// Fetches the identity provider's documents: a JWKS, a discovery document.
/// Redirects are not followed (they could lead to a URL that would not pass
/// the checks the configured one passed), and an answer larger than
/// [`MAX_PROVIDER_DOCUMENT_BYTES`] is refused.
#[async_trait]
pub trait KeySetFetcher: Send + Sync + Debug {
    /// The body of a successful `GET url` asking for JSON.
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, DocumentFetchError>;
}

/// Why a provider document could not be fetched.
#[derive(Debug, Error)]
pub enum DocumentFetchError {
    #[error("the provider could not be reached")]
    Unreachable(#[source] Source),
    #[error("the provider answered HTTP {0}")]
    Status(u16),
    #[error("the answer is larger than {MAX_PROVIDER_DOCUMENT_BYTES} bytes")]
    TooLarge,
}

/// The console's sign-in with the provider: OpenID Connect authorization
/// code with PKCE, Cola being the confidential client.
#[async_trait]
pub trait ProviderSignIn: Send + Sync + Debug {
    /// The client id Cola signs in as: the ID token's audience.
    fn client_id(&self) -> &str;

    /// Where to send the browser, and what the callback will need.
    async fn begin(&self, now: DateTime<Utc>) -> Result<SignInStart, SignInError>;

    /// Redeems `code` with the sign-in's PKCE verifier and verifies the ID
    /// token (signature, issuer, audience, expiry, nonce).
    async fn finish(&self, pending: PendingSignIn, code: String) -> Result<SignedIn, SignInError>;
}

/// A sign-in begun: the provider's authorization URL and what to keep until
/// the callback.
#[derive(Debug)]
pub struct SignInStart {
    pub url: String,
    pub pending: PendingSignIn,
}

/// A sign-in under way: kept (sealed, by the api) until the callback, so any
/// instance can finish a sign-in another began.
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

/// Why a sign-in failed: logged with its cause; the person sees a plain
/// "sign-in failed, try again".
#[derive(Debug, Error)]
#[error("console sign-in failed at {step}")]
pub struct SignInError {
    step: &'static str,
    #[source]
    source: Source,
}

impl SignInError {
    /// A failure at `step` (named for the log), caused by `source`.
    pub fn at(step: &'static str, source: impl Into<Source>) -> Self {
        Self {
            step,
            source: source.into(),
        }
    }
}
