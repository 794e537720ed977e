//! The HTTP client the gateway reaches tenants' MCP servers with. Upstream
//! URLs are tenant input, so every connection is checked against the
//! address policy at the moment it is dialled: host names are resolved by
//! this client's own resolver, which drops every address the policy
//! refuses, so a name that resolves to a public address at registration and
//! to an internal one later (DNS rebinding) reaches nothing. Redirects are
//! never followed, and no proxy from the environment is used.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use thiserror::Error;

/// Which addresses an upstream may be dialled at.
pub type AddressPolicy = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// How long connecting to an upstream may take, whatever its timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle pooled connections per upstream host.
const IDLE_PER_HOST: usize = 32;

#[derive(Debug, Error)]
pub enum UpstreamError {
    /// The host resolves to no address the policy allows, or the URL's own
    /// address is refused.
    #[error("the upstream's address is not allowed")]
    AddressRefused,
    /// No connection, or it broke before an answer began.
    #[error("the upstream could not be reached")]
    Unreachable(#[source] reqwest::Error),
    /// No answer began within the server's timeout.
    #[error("the upstream did not answer in time")]
    Timeout,
    /// The request could not be built (a URL or header the client refuses).
    #[error("the upstream request could not be built")]
    Invalid(#[source] reqwest::Error),
}

/// A request to an upstream: everything it carries is chosen by the
/// gateway; nothing of the client's request is copied implicitly.
#[derive(Debug)]
pub struct UpstreamRequest<'a> {
    pub method: reqwest::Method,
    pub url: &'a url::Url,
    pub headers: reqwest::header::HeaderMap,
    pub body: Option<Vec<u8>>,
    /// Until the upstream starts answering.
    pub timeout: Duration,
}

/// An upstream's answer: status and headers, and a body read as it arrives.
pub struct UpstreamResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    response: reqwest::Response,
}

impl std::fmt::Debug for UpstreamResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamResponse")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl UpstreamResponse {
    /// The body as it arrives.
    pub fn into_stream(
        self,
    ) -> impl Stream<Item = Result<bytes::Bytes, UpstreamError>> + Send + 'static {
        self.response
            .bytes_stream()
            .map(|chunk| chunk.map_err(UpstreamError::Unreachable))
    }

    /// The whole body, refused once it passes `limit` bytes.
    ///
    /// # Errors
    /// [`BodyTooLarge`](ReadBodyError::TooLarge) past the limit, or the
    /// upstream failing mid-body.
    pub async fn read_to_limit(self, limit: usize) -> Result<Vec<u8>, ReadBodyError> {
        let mut body = Vec::new();
        let mut stream = Box::pin(self.into_stream());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(ReadBodyError::Upstream)?;
            if body.len() + chunk.len() > limit {
                return Err(ReadBodyError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[derive(Debug, Error)]
pub enum ReadBodyError {
    #[error("the upstream's answer is larger than allowed")]
    TooLarge,
    #[error("the upstream's answer broke off")]
    Upstream(#[source] UpstreamError),
}

/// Resolves host names and keeps only the addresses the policy allows.
struct GuardedResolver {
    allowed: AddressPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allowed = Arc::clone(&self.allowed);
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let addresses: Vec<SocketAddr> =
                found.filter(|address| allowed(address.ip())).collect();
            if addresses.is_empty() {
                return Err(Box::new(UpstreamError::AddressRefused)
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

/// One client for every upstream: connections are pooled per host.
#[derive(Clone)]
pub struct UpstreamClient {
    client: reqwest::Client,
    allowed: AddressPolicy,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient").finish_non_exhaustive()
    }
}

impl UpstreamClient {
    /// # Errors
    /// When the TLS backend cannot be initialised.
    pub fn new(allowed: AddressPolicy) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                allowed: Arc::clone(&allowed),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self { client, allowed })
    }

    /// A client with the same policy and settings and a connection pool of
    /// its own, for another worker. A pooled connection is driven by a task
    /// on the runtime that opened it, so a client shared between actix's
    /// single-threaded workers hands each request to another worker's
    /// thread and back (two cross-thread wake-ups per request); one client
    /// per worker keeps every request on its own thread.
    ///
    /// # Errors
    /// When the TLS backend cannot be initialised.
    pub fn sibling(&self) -> Result<Self, reqwest::Error> {
        Self::new(Arc::clone(&self.allowed))
    }

    /// Sends `request`; returns once the upstream's status and headers have
    /// arrived (its body then streams).
    ///
    /// # Errors
    /// See [`UpstreamError`].
    pub async fn send(
        &self,
        request: UpstreamRequest<'_>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let url = request.url;
        // An address in the URL itself is dialled without the resolver, so
        // it is checked here, against the same policy.
        let literal = match url.host() {
            Some(url::Host::Ipv4(address)) => Some(IpAddr::V4(address)),
            Some(url::Host::Ipv6(address)) => Some(IpAddr::V6(address)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(UpstreamError::AddressRefused),
        };
        if literal.is_some_and(|address| !(self.allowed)(address)) {
            return Err(UpstreamError::AddressRefused);
        }
        let mut builder = self
            .client
            .request(request.method, url.clone())
            .headers(request.headers);
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let built = builder.build().map_err(UpstreamError::Invalid)?;
        let mut response =
            match tokio::time::timeout(request.timeout, self.client.execute(built)).await {
                Err(_elapsed) => return Err(UpstreamError::Timeout),
                Ok(Err(error)) => return Err(classify(error)),
                Ok(Ok(response)) => response,
            };
        Ok(UpstreamResponse {
            status: response.status().as_u16(),
            // The body streams without them.
            headers: std::mem::take(response.headers_mut()),
            response,
        })
    }
}

/// A connection refused by the address policy surfaces from reqwest as a
/// connect error whose cause chain holds the resolver's refusal.
fn classify(error: reqwest::Error) -> UpstreamError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(current) = cause {
        if matches!(
            current.downcast_ref::<UpstreamError>(),
            Some(UpstreamError::AddressRefused)
        ) {
            return UpstreamError::AddressRefused;
        }
        cause = current.source();
    }
    if error.is_timeout() {
        return UpstreamError::Timeout;
    }
    UpstreamError::Unreachable(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nothing_allowed() -> UpstreamClient {
        UpstreamClient::new(Arc::new(|_| false)).expect("a client")
    }

    fn parsed(url: &str) -> url::Url {
        url::Url::parse(url).expect("a URL")
    }

    fn request(url: &url::Url) -> UpstreamRequest<'_> {
        UpstreamRequest {
            method: reqwest::Method::POST,
            url,
            headers: reqwest::header::HeaderMap::new(),
            body: None,
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn an_address_in_the_url_is_checked_before_dialling() {
        let refused = nothing_allowed()
            .send(request(&parsed("http://127.0.0.1:9/mcp")))
            .await;
        assert!(
            matches!(refused, Err(UpstreamError::AddressRefused)),
            "{refused:?}"
        );
        let refused = nothing_allowed()
            .send(request(&parsed("http://[::1]:9/mcp")))
            .await;
        assert!(
            matches!(refused, Err(UpstreamError::AddressRefused)),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_name_that_resolves_only_to_refused_addresses_is_refused_at_connect_time() {
        let refused = nothing_allowed()
            .send(request(&parsed("http://localhost:9/mcp")))
            .await;
        assert!(
            matches!(refused, Err(UpstreamError::AddressRefused)),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn an_allowed_address_is_dialled() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        let client = UpstreamClient::new(Arc::new(|address: IpAddr| address.is_loopback()))
            .expect("a client");
        let url = parsed(&format!("http://localhost:{port}/mcp"));
        // Nothing listens there any more: the connection is tried and fails,
        // which is not an address refusal.
        let outcome = client.send(request(&url)).await;
        assert!(
            matches!(outcome, Err(UpstreamError::Unreachable(_))),
            "{outcome:?}"
        );
    }
}
