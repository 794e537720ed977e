//! The system's DNS resolver behind the application's `HostResolver` port:
//! what registration checks an upstream's host name against.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use cola_application::{HostResolver, ResolveError};

/// A lookup that takes longer is a failure: registration must not hang on a
/// tenant's slow or hostile name server.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemHostResolver;

#[async_trait]
impl HostResolver for SystemHostResolver {
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<IpAddr>, ResolveError> {
        let lookup = tokio::net::lookup_host((host, port));
        match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            Err(elapsed) => Err(ResolveError::Failed(Box::new(elapsed))),
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::Other => {
                // getaddrinfo's "no such name" arrives as `Other`.
                tracing::debug!(error = %error, "upstream host does not resolve");
                Err(ResolveError::NotFound)
            }
            Ok(Err(error)) => Err(ResolveError::Failed(Box::new(error))),
            Ok(Ok(addresses)) => {
                let mut found: Vec<IpAddr> = addresses.map(|socket| socket.ip()).collect();
                found.dedup();
                Ok(found)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn localhost_resolves_to_loopback() {
        let found = SystemHostResolver
            .resolve("localhost", 80)
            .await
            .expect("localhost resolves");
        assert!(!found.is_empty());
        assert!(found.iter().all(IpAddr::is_loopback), "{found:?}");
    }

    #[tokio::test]
    async fn a_name_under_invalid_does_not_resolve() {
        assert!(
            SystemHostResolver
                .resolve("no-such-host.invalid", 80)
                .await
                .is_err()
        );
    }
}
