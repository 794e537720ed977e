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

use async_trait::async_trait;
use cola_application::{
    Upstream, UpstreamAnswer, UpstreamCall, UpstreamFailure, UpstreamHeader, UpstreamMethod,
};
use futures_util::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use thiserror::Error;

/// Which addresses an upstream may be dialled at.
pub type AddressPolicy = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// How long connecting to an upstream may take, whatever its timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle pooled connections per upstream host.
const IDLE_PER_HOST: usize = 32;

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
                return Err(Box::new(AddressRefused) as Box<dyn std::error::Error + Send + Sync>);
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
}

/// The resolver's refusal, recognised in reqwest's error chain.
#[derive(Debug, Error)]
#[error("the upstream's address is not allowed")]
struct AddressRefused;

fn method(method: UpstreamMethod) -> reqwest::Method {
    match method {
        UpstreamMethod::Post => reqwest::Method::POST,
        UpstreamMethod::Get => reqwest::Method::GET,
        UpstreamMethod::Delete => reqwest::Method::DELETE,
    }
}

fn headers(headers: Vec<UpstreamHeader>) -> Result<reqwest::header::HeaderMap, UpstreamFailure> {
    let mut map = reqwest::header::HeaderMap::with_capacity(headers.len());
    for header in headers {
        let name = reqwest::header::HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|error| UpstreamFailure::Invalid(Box::new(error)))?;
        let mut value = reqwest::header::HeaderValue::from_bytes(&header.value)
            .map_err(|error| UpstreamFailure::Invalid(Box::new(error)))?;
        value.set_sensitive(header.sensitive);
        map.insert(name, value);
    }
    Ok(map)
}

#[async_trait]
impl Upstream for UpstreamClient {
    async fn send(&self, call: UpstreamCall<'_>) -> Result<UpstreamAnswer, UpstreamFailure> {
        let url = call.url.as_url();
        // An address in the URL itself is dialled without the resolver, so
        // it is checked here, against the same policy.
        let literal = match url.host() {
            Some(url::Host::Ipv4(address)) => Some(IpAddr::V4(address)),
            Some(url::Host::Ipv6(address)) => Some(IpAddr::V6(address)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(UpstreamFailure::AddressRefused),
        };
        if literal.is_some_and(|address| !(self.allowed)(address)) {
            return Err(UpstreamFailure::AddressRefused);
        }
        let mut builder = self
            .client
            .request(method(call.method), url.clone())
            .headers(headers(call.headers)?);
        if let Some(body) = call.body {
            builder = builder.body(body);
        }
        let built = builder
            .build()
            .map_err(|error| UpstreamFailure::Invalid(Box::new(error)))?;
        let mut response =
            match tokio::time::timeout(call.timeout, self.client.execute(built)).await {
                Err(_elapsed) => return Err(UpstreamFailure::Timeout),
                Ok(Err(error)) => return Err(classify(error)),
                Ok(Ok(response)) => response,
            };
        let answer_headers = std::mem::take(response.headers_mut());
        let content_type = answer_headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| {
                value
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let session = answer_headers.get("mcp-session-id");
        Ok(UpstreamAnswer {
            status: response.status().as_u16(),
            content_type,
            has_session_header: session.is_some(),
            session_id: session
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
            body: Box::pin(
                response.bytes_stream().map(|chunk| {
                    chunk.map_err(|error| UpstreamFailure::Unreachable(Box::new(error)))
                }),
            ),
        })
    }
}

/// A connection refused by the address policy surfaces from reqwest as a
/// connect error whose cause chain holds the resolver's refusal.
fn classify(error: reqwest::Error) -> UpstreamFailure {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(current) = cause {
        if current.downcast_ref::<AddressRefused>().is_some() {
            return UpstreamFailure::AddressRefused;
        }
        cause = current.source();
    }
    if error.is_timeout() {
        return UpstreamFailure::Timeout;
    }
    UpstreamFailure::Unreachable(Box::new(error))
}

#[cfg(test)]
mod tests {
    use cola_domain::UpstreamUrl;

    use super::*;

    fn nothing_allowed() -> UpstreamClient {
        UpstreamClient::new(Arc::new(|_| false)).expect("a client")
    }

    fn parsed(url: &str) -> UpstreamUrl {
        UpstreamUrl::restore(url).expect("a URL")
    }

    fn request(url: &UpstreamUrl) -> UpstreamCall<'_> {
        UpstreamCall {
            method: UpstreamMethod::Post,
            url,
            headers: Vec::new(),
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
            matches!(refused, Err(UpstreamFailure::AddressRefused)),
            "{refused:?}"
        );
        let refused = nothing_allowed()
            .send(request(&parsed("http://[::1]:9/mcp")))
            .await;
        assert!(
            matches!(refused, Err(UpstreamFailure::AddressRefused)),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_name_that_resolves_only_to_refused_addresses_is_refused_at_connect_time() {
        let refused = nothing_allowed()
            .send(request(&parsed("http://localhost:9/mcp")))
            .await;
        assert!(
            matches!(refused, Err(UpstreamFailure::AddressRefused)),
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
            matches!(outcome, Err(UpstreamFailure::Unreachable(_))),
            "{outcome:?}"
        );
    }
}
