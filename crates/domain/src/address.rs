//! Which network addresses an upstream MCP server may live at. Tenant admins
//! choose upstream URLs, so an address is attacker input: Cola must not be
//! talked into dialling its own host, the private network it runs in, or a
//! cloud metadata service. One pure function answers "is this address on
//! the public internet?"; registration and the gateway's connect-time check
//! both ask it, so the two can never disagree.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use thiserror::Error;

/// Whether `addr` is a globally routable unicast address: not loopback,
/// private, link-local (cloud metadata `169.254.169.254` included), CGNAT,
/// unique-local, unspecified, multicast, broadcast, documentation,
/// benchmarking or reserved. IPv6 forms that carry an IPv4 address — mapped
/// (`::ffff:a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`) — are
/// judged by the IPv4 address they carry; the deprecated IPv4-compatible
/// form (`::a.b.c.d`) and every other IPv6 address outside `2000::/3`, the
/// only block global unicast is assigned from, are refused.
#[must_use]
pub fn is_public_address(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(addr: Ipv4Addr) -> bool {
    let [a, b, c, _] = addr.octets();
    let refused = a == 0 // "this network", 0.0.0.0 included
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 169 && b == 254) // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224; // multicast, reserved, broadcast
    !refused
}

fn is_public_v6(addr: Ipv6Addr) -> bool {
    let segments = addr.segments();
    let embedded_v4 = |high: u16, low: u16| {
        let [h1, h2] = high.to_be_bytes();
        let [l1, l2] = low.to_be_bytes();
        Ipv4Addr::new(h1, h2, l1, l2)
    };
    // IPv4-mapped ::ffff:0:0/96: the socket dials the IPv4 address.
    if let Some(v4) = addr.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // NAT64 64:ff9b::/96: a translator dials the IPv4 address.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(embedded_v4(segments[6], segments[7]));
    }
    // 6to4 2002:V4ADDR::/48: a relay reaches the IPv4 address.
    if segments[0] == 0x2002 {
        return is_public_v4(embedded_v4(segments[1], segments[2]));
    }
    let global_unicast = (segments[0] & 0xe000) == 0x2000; // 2000::/3
    // 2001::/23 (IETF assignments, Teredo) and 2001:db8::/32 (documentation).
    let special = (segments[0] == 0x2001 && (segments[1] < 0x200 || segments[1] == 0x0db8))
        || (segments[0] & 0xfff0) == 0x3ff0; // 3fff::/20 documentation
    global_unicast && !special
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("`{entry}` is not a CIDR or IP address")]
pub struct AllowedNetworksError {
    pub entry: String,
}

/// The operator's exceptions (`COLA_GATEWAY_ALLOWED_NETWORKS`): networks an
/// upstream may be reached in although they are not public, such as a
/// private network where the tenant's MCP servers run. Empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedNetworks(Vec<IpNet>);

impl AllowedNetworks {
    /// Parses CIDRs or bare addresses (a bare address is a `/32` or `/128`).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, AllowedNetworksError> {
        let mut networks = Vec::with_capacity(entries.len());
        for entry in entries {
            let entry = entry.as_ref().trim();
            let net = entry
                .parse::<IpNet>()
                .ok()
                .or_else(|| entry.parse::<IpAddr>().ok().map(IpNet::from))
                .ok_or_else(|| AllowedNetworksError {
                    entry: entry.to_owned(),
                })?;
            let net = net.trunc();
            if !networks.contains(&net) {
                networks.push(net);
            }
        }
        Ok(Self(networks))
    }

    /// Loopback only (`127.0.0.0/8`, `::1/128`): what `--dev` allows, so a
    /// local demo can register a server on the same machine.
    #[must_use]
    pub fn loopback() -> Self {
        Self(vec![
            IpNet::from(ipnet::Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8)),
            IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ])
    }

    #[must_use]
    pub fn networks(&self) -> &[IpNet] {
        &self.0
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether Cola may dial `addr`: it is public, or it lies in one of the
    /// allowed networks. An IPv4-mapped address counts as the IPv4 address
    /// it is, since that is what the socket reaches.
    #[must_use]
    pub fn permits(&self, addr: IpAddr) -> bool {
        let canonical = addr.to_canonical();
        is_public_address(addr)
            || self
                .0
                .iter()
                .any(|net| net.contains(&addr) || net.contains(&canonical))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn public(text: &str) -> bool {
        is_public_address(text.parse().expect("an address"))
    }

    #[test]
    fn ordinary_public_addresses_are_public() {
        assert!(public("8.8.8.8"));
        assert!(public("1.1.1.1"));
        assert!(public("2606:4700:4700::1111"));
    }

    #[test]
    fn loopback_is_refused() {
        assert!(!public("127.0.0.1"));
        assert!(!public("127.255.0.9"));
        assert!(!public("::1"));
    }

    #[test]
    fn private_ranges_are_refused() {
        assert!(!public("10.1.2.3"));
        assert!(!public("172.16.0.1"));
        assert!(!public("172.31.255.255"));
        assert!(!public("192.168.1.1"));
        assert!(public("172.32.0.1"));
    }

    #[test]
    fn link_local_and_the_cloud_metadata_address_are_refused() {
        assert!(!public("169.254.169.254"));
        assert!(!public("169.254.0.1"));
        assert!(!public("fe80::1"));
    }

    #[test]
    fn carrier_grade_nat_is_refused() {
        assert!(!public("100.64.0.1"));
        assert!(!public("100.127.255.254"));
        assert!(public("100.128.0.1"));
    }

    #[test]
    fn unique_local_ipv6_is_refused() {
        assert!(!public("fc00::1"));
        assert!(!public("fd12:3456::1"));
    }

    #[test]
    fn unspecified_addresses_are_refused() {
        assert!(!public("0.0.0.0"));
        assert!(!public("::"));
        assert!(!public("0.1.2.3"));
    }

    #[test]
    fn multicast_broadcast_and_reserved_are_refused() {
        assert!(!public("224.0.0.1"));
        assert!(!public("255.255.255.255"));
        assert!(!public("240.0.0.1"));
        assert!(!public("ff02::1"));
    }

    #[test]
    fn documentation_and_benchmarking_ranges_are_refused() {
        assert!(!public("192.0.2.1"));
        assert!(!public("198.51.100.1"));
        assert!(!public("203.0.113.1"));
        assert!(!public("198.18.0.1"));
        assert!(!public("2001:db8::1"));
        assert!(!public("3fff::1"));
    }

    #[test]
    fn ipv4_mapped_forms_are_judged_by_their_ipv4_address() {
        assert!(!public("::ffff:127.0.0.1"));
        assert!(!public("::ffff:169.254.169.254"));
        assert!(!public("::ffff:10.0.0.1"));
        assert!(public("::ffff:8.8.8.8"));
    }

    #[test]
    fn ipv4_compatible_forms_are_refused() {
        assert!(!public("::127.0.0.1"));
        assert!(!public("::8.8.8.8"));
    }

    #[test]
    fn nat64_forms_are_judged_by_their_ipv4_address() {
        assert!(!public("64:ff9b::7f00:1"));
        assert!(!public("64:ff9b::a9fe:a9fe"));
        assert!(public("64:ff9b::808:808"));
        assert!(!public("64:ff9b:1::1"));
    }

    #[test]
    fn six_to_four_forms_are_judged_by_their_ipv4_address() {
        assert!(!public("2002:7f00:1::1"));
        assert!(!public("2002:a00:1::1"));
        assert!(public("2002:808:808::1"));
    }

    #[test]
    fn teredo_and_other_ietf_assignments_are_refused() {
        assert!(!public("2001::1"));
        assert!(!public("2001:1ff::1"));
    }

    #[test]
    fn addresses_outside_global_unicast_are_refused() {
        assert!(!public("100::1"));
        assert!(!public("4000::1"));
        assert!(!public("fec0::1"));
    }

    #[test]
    fn allowed_networks_admit_what_they_contain_and_nothing_else() {
        let allowed = AllowedNetworks::parse(&["127.0.0.0/8", "::1/128"]).expect("valid");
        assert!(allowed.permits("127.0.0.1".parse().expect("addr")));
        assert!(allowed.permits("::1".parse().expect("addr")));
        assert!(allowed.permits("::ffff:127.0.0.1".parse().expect("addr")));
        assert!(!allowed.permits("10.0.0.1".parse().expect("addr")));
        assert!(allowed.permits("8.8.8.8".parse().expect("addr")));
    }

    #[test]
    fn an_allowed_network_that_is_not_a_cidr_is_refused() {
        let error = AllowedNetworks::parse(&["10.0.0.0/8", "nope"]).expect_err("invalid");
        assert_eq!(error.entry, "nope");
    }

    proptest! {
        #[test]
        fn a_mapped_address_is_public_exactly_when_its_ipv4_address_is(bits in any::<u32>()) {
            let v4 = Ipv4Addr::from(bits);
            let mapped = IpAddr::V6(v4.to_ipv6_mapped());
            prop_assert_eq!(is_public_address(mapped), is_public_address(IpAddr::V4(v4)));
        }

        #[test]
        fn nat64_and_6to4_forms_follow_their_ipv4_address(bits in any::<u32>(), tail in any::<u16>()) {
            let v4 = Ipv4Addr::from(bits);
            let [a, b, c, d] = v4.octets();
            let high = u16::from_be_bytes([a, b]);
            let low = u16::from_be_bytes([c, d]);
            let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, high, low);
            let six_to_four = Ipv6Addr::new(0x2002, high, low, 0, 0, 0, 0, tail);
            let expected = is_public_address(IpAddr::V4(v4));
            prop_assert_eq!(is_public_address(IpAddr::V6(nat64)), expected);
            prop_assert_eq!(is_public_address(IpAddr::V6(six_to_four)), expected);
        }

        #[test]
        fn no_private_loopback_or_link_local_address_is_public(bits in any::<u32>()) {
            let v4 = Ipv4Addr::from(bits);
            if v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_multicast()
                || v4.is_broadcast() || v4.is_unspecified() || v4.is_documentation()
            {
                prop_assert!(!is_public_address(IpAddr::V4(v4)));
            }
        }

        #[test]
        fn no_unique_local_or_link_local_ipv6_address_is_public(bits in any::<u128>()) {
            let v6 = Ipv6Addr::from(bits);
            if v6.is_loopback() || v6.is_unspecified() || v6.is_multicast()
                || v6.is_unique_local() || v6.is_unicast_link_local()
            {
                prop_assert!(!is_public_address(IpAddr::V6(v6)));
            }
        }
    }
}
