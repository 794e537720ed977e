//! The HTTP client that fetches the management identity provider's
//! documents (its discovery document and JWKS) for the api's key set.

use std::time::Duration;

use async_trait::async_trait;
use cola_application::{DocumentFetchError, KeySetFetcher, MAX_PROVIDER_DOCUMENT_BYTES};

/// Time allowed for one request to the provider.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// [`KeySetFetcher`] over HTTP.
#[derive(Debug, Clone)]
pub struct HttpKeySetFetcher {
    http: reqwest::Client,
}

/// The HTTP client could not be built (no TLS roots, for one).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client")]
pub struct HttpClientError(#[source] reqwest::Error);

impl HttpKeySetFetcher {
    pub fn new() -> Result<Self, HttpClientError> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            // A redirect could lead off to a URL that would not pass the
            // checks the configured one passed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(HttpClientError)?;
        Ok(Self { http })
    }
}

#[async_trait]
impl KeySetFetcher for HttpKeySetFetcher {
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, DocumentFetchError> {
        let unreachable = |source: reqwest::Error| DocumentFetchError::Unreachable(source.into());
        let response = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(DocumentFetchError::Status(response.status().as_u16()));
        }
        // Refused before reading when the provider says how long it is.
        if response
            .content_length()
            .is_some_and(|length| length > MAX_PROVIDER_DOCUMENT_BYTES as u64)
        {
            return Err(DocumentFetchError::TooLarge);
        }
        let body = response.bytes().await.map_err(unreachable)?;
        if body.len() > MAX_PROVIDER_DOCUMENT_BYTES {
            return Err(DocumentFetchError::TooLarge);
        }
        Ok(body.to_vec())
    }
}
