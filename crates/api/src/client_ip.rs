//! The client's address: the TCP peer, or — only when the peer is a trusted
//! proxy — the nearest untrusted address in `X-Forwarded-For`.

use std::net::IpAddr;

use actix_web::HttpRequest;
use actix_web::dev::ServiceRequest;
use actix_web::http::header::HeaderMap;
use ipnet::IpNet;

#[derive(Debug, Clone, Default)]
pub struct ClientIpResolver {
    trusted: Vec<IpNet>,
}

impl ClientIpResolver {
    #[must_use]
    pub fn new(trusted: Vec<IpNet>) -> Self {
        Self { trusted }
    }

    fn is_trusted(&self, addr: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&addr))
    }

    /// Walks `X-Forwarded-For` from the right, past trusted hops. A header
    /// from an untrusted peer is ignored whole, so it cannot be spoofed; an
    /// unparsable entry ends the walk at the last hop that was trusted.
    #[must_use]
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.is_trusted(client) {
            return client;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.iter().rev() {
            let Ok(addr) = hop.parse::<IpAddr>() else {
                return client;
            };
            client = addr.to_canonical();
            if !self.is_trusted(client) {
                return client;
            }
        }
        client
    }

    #[must_use]
    pub fn of_request(&self, request: &HttpRequest) -> Option<IpAddr> {
        request
            .peer_addr()
            .map(|peer| self.resolve(peer.ip(), request.headers()))
    }

    #[must_use]
    pub fn of_service_request(&self, request: &ServiceRequest) -> Option<IpAddr> {
        request
            .peer_addr()
            .map(|peer| self.resolve(peer.ip(), request.headers()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in xff {
            map.append(
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_str(value).expect("header"),
            );
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn resolver() -> ClientIpResolver {
        ClientIpResolver::new(vec!["10.0.0.0/8".parse().expect("cidr")])
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let client = resolver().resolve(ip("203.0.113.5"), &headers(&["1.2.3.4"]));
        assert_eq!(client, ip("203.0.113.5"));
    }

    #[test]
    fn a_trusted_proxy_forwards_the_nearest_untrusted_hop() {
        let client = resolver().resolve(
            ip("10.0.0.1"),
            &headers(&["6.6.6.6, 198.51.100.7", "10.0.0.2"]),
        );
        assert_eq!(client, ip("198.51.100.7"));
    }

    #[test]
    fn a_garbage_hop_stops_at_the_last_trusted_address() {
        let client = resolver().resolve(ip("10.0.0.1"), &headers(&["6.6.6.6, nonsense"]));
        assert_eq!(client, ip("10.0.0.1"));
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        assert_eq!(
            resolver().resolve(ip("10.0.0.1"), &headers(&[])),
            ip("10.0.0.1")
        );
    }
}
