//! The client's address: the TCP peer, or — only when the peer is a trusted
//! proxy — the nearest untrusted address in `X-Forwarded-For`.
//!
//! A forwarded hop that cannot be read (not ASCII, not an address) makes the
//! client [`ClientAddress::Unreadable`], never the proxy: the proxy's own
//! address is often on a key's allow-list, and the proxy's failure budget is
//! shared by every client behind it.

use std::net::{IpAddr, SocketAddr};

use actix_web::HttpRequest;
use actix_web::dev::ServiceRequest;
use actix_web::http::header::HeaderMap;
use cola_domain::UNREADABLE_CLIENT;
use ipnet::IpNet;

/// Where a request comes from, as far as it can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddress {
    /// The peer, or the nearest untrusted hop a trusted proxy forwarded.
    Known(IpAddr),
    /// A trusted proxy forwarded a hop that is not an address. Who the
    /// client is cannot be told; it passes no allow-list.
    Unreadable,
}

impl ClientAddress {
    /// The address that allow-lists are checked against and failures are
    /// counted by. `Unreadable` becomes [`UNREADABLE_CLIENT`] (`100::`, in
    /// the IPv6 discard prefix): `IpWhitelist::allows` refuses it on every
    /// non-empty list, and the failure limiter counts it in a bucket of its
    /// own, apart from the proxy and from every real client.
    #[must_use]
    pub fn for_checks(self) -> IpAddr {
        match self {
            Self::Known(addr) => addr,
            Self::Unreadable => UNREADABLE_CLIENT,
        }
    }
}

impl std::fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Known(addr) => addr.fmt(f),
            Self::Unreadable => f.write_str("unreadable"),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ClientIpResolver {
    trusted: Vec<IpNet>,
}

/// One `X-Forwarded-For` hop: a bare address, as nginx and Envoy write it,
/// or an address with a port (`192.0.2.1:4711`, `[2001:db8::1]:4711`), as
/// some load balancers do. Anything else, non-ASCII bytes included, is
/// `None`.
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(hop.trim_ascii()).ok()?;
    text.parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|socket| socket.ip()))
        .ok()
        .map(|addr| addr.to_canonical())
}

impl ClientIpResolver {
    #[must_use]
    pub fn new(trusted: Vec<IpNet>) -> Self {
        Self { trusted }
    }

    fn is_trusted(&self, addr: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&addr))
    }

    /// Walks `X-Forwarded-For` from the right, past trusted hops, to the
    /// first untrusted one. A header from an untrusted peer is ignored whole,
    /// so it cannot be spoofed. The header's raw bytes are split, so a hop
    /// that is not valid text spoils only itself: hops to its right (those
    /// the trusted proxies appended) are still read, and only when the walk
    /// reaches it is the client `Unreadable`.
    #[must_use]
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> ClientAddress {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return ClientAddress::Known(peer);
        }
        // Header lines in order, each split on commas: together, the hops
        // from the farthest to the nearest.
        let hops: Vec<&[u8]> = headers
            .get_all("x-forwarded-for")
            .flat_map(|value| value.as_bytes().split(|byte| *byte == b','))
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(addr) = parse_hop(hop) else {
                return ClientAddress::Unreadable;
            };
            client = addr;
            if !self.is_trusted(client) {
                break;
            }
        }
        ClientAddress::Known(client)
    }

    /// The client of `request` as [`ClientAddress::for_checks`] gives it;
    /// `None` only when actix knows no peer (never on a TCP listener).
    #[must_use]
    pub fn of_request(&self, request: &HttpRequest) -> Option<IpAddr> {
        request
            .peer_addr()
            .map(|peer| self.resolve(peer.ip(), request.headers()).for_checks())
    }

    /// As [`ClientIpResolver::of_request`], for middleware.
    #[must_use]
    pub fn of_service_request(&self, request: &ServiceRequest) -> Option<IpAddr> {
        request
            .peer_addr()
            .map(|peer| self.resolve(peer.ip(), request.headers()).for_checks())
    }

    /// The client of `request` with an unreadable address told apart, for
    /// the log.
    #[must_use]
    pub fn address_of(&self, request: &ServiceRequest) -> Option<ClientAddress> {
        request
            .peer_addr()
            .map(|peer| self.resolve(peer.ip(), request.headers()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};
    use cola_domain::IpWhitelist;

    fn headers_raw(xff: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in xff {
            map.append(
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_bytes(value).expect("header"),
            );
        }
        map
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let raw: Vec<&[u8]> = xff.iter().map(|value| value.as_bytes()).collect();
        headers_raw(&raw)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn known(s: &str) -> ClientAddress {
        ClientAddress::Known(ip(s))
    }

    fn resolver() -> ClientIpResolver {
        ClientIpResolver::new(vec!["10.0.0.0/8".parse().expect("cidr")])
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let client = resolver().resolve(ip("203.0.113.5"), &headers(&["1.2.3.4"]));
        assert_eq!(client, known("203.0.113.5"));
        let client = resolver().resolve(ip("203.0.113.5"), &headers_raw(&[b"evil\xff"]));
        assert_eq!(client, known("203.0.113.5"));
    }

    #[test]
    fn a_trusted_proxy_forwards_the_nearest_untrusted_hop() {
        let client = resolver().resolve(
            ip("10.0.0.1"),
            &headers(&["6.6.6.6, 198.51.100.7", "10.0.0.2"]),
        );
        assert_eq!(client, known("198.51.100.7"));
    }

    #[test]
    fn a_garbage_hop_reached_by_the_walk_makes_the_client_unreadable() {
        let client = resolver().resolve(ip("10.0.0.1"), &headers(&["6.6.6.6, nonsense"]));
        assert_eq!(client, ClientAddress::Unreadable);
        let client = resolver().resolve(ip("10.0.0.1"), &headers(&["198.51.100.7, , 10.0.0.2"]));
        assert_eq!(client, ClientAddress::Unreadable);
    }

    #[test]
    fn a_non_ascii_hop_makes_the_client_unreadable_not_the_proxy() {
        // What nginx's `$proxy_add_x_forwarded_for` makes of a client that
        // sent `X-Forwarded-For: evil\xff` from a trusted network: the walk
        // reaches the client's own junk past the trusted hop.
        let client = resolver().resolve(ip("10.0.0.1"), &headers_raw(&[b"evil\xff, 10.0.0.9"]));
        assert_eq!(client, ClientAddress::Unreadable);
        assert_ne!(client.for_checks(), ip("10.0.0.1"));
        assert_ne!(client.for_checks(), ip("10.0.0.9"));
    }

    #[test]
    fn junk_left_of_the_client_is_never_read() {
        // The proxy appended the real client; what that client claimed
        // before it does not matter.
        let client = resolver().resolve(ip("10.0.0.1"), &headers_raw(&[b"evil\xff, 198.51.100.7"]));
        assert_eq!(client, known("198.51.100.7"));
        let client = resolver().resolve(
            ip("10.0.0.1"),
            &headers_raw(&[b"evil\xff", b"198.51.100.7, 10.0.0.2"]),
        );
        assert_eq!(client, known("198.51.100.7"));
    }

    #[test]
    fn hops_with_ports_and_mapped_addresses_are_read() {
        let client = resolver().resolve(ip("10.0.0.1"), &headers(&["[2001:db8::7]:4711"]));
        assert_eq!(client, known("2001:db8::7"));
        let client = resolver().resolve(ip("10.0.0.1"), &headers(&["198.51.100.7:80"]));
        assert_eq!(client, known("198.51.100.7"));
        // A mapped hop is the IPv4 address, and is trusted as such.
        let client = resolver().resolve(ip("10.0.0.1"), &headers(&["6.6.6.6, ::ffff:10.1.1.1"]));
        assert_eq!(client, known("6.6.6.6"));
    }

    #[test]
    fn only_trusted_hops_forward_the_farthest_one() {
        let client = resolver().resolve(ip("10.0.0.1"), &headers(&["10.0.0.3, 10.0.0.2"]));
        assert_eq!(client, known("10.0.0.3"));
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        assert_eq!(
            resolver().resolve(ip("10.0.0.1"), &headers(&[])),
            known("10.0.0.1")
        );
    }

    #[test]
    fn an_unreadable_client_passes_no_allow_list_that_holds_the_proxy() {
        let checked = ClientAddress::Unreadable.for_checks();
        for entries in [vec!["10.0.0.0/8"], vec!["0.0.0.0/0", "::/0"]] {
            let list = IpWhitelist::parse(&entries).expect("valid");
            assert!(list.allows(ip("10.0.0.1")), "{entries:?}");
            assert!(!list.allows(checked), "{entries:?}");
        }
    }
}
