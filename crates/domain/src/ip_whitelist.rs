//! The addresses a key may be used from: normalised CIDRs, empty = anywhere.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};
use serde::Serialize;
use thiserror::Error;

/// Longest allowed IP allow-list.
pub const MAX_IP_WHITELIST_ENTRIES: usize = 50;

/// `100::`, the client address of a request whose forwarded address could
/// not be read. It lies in `100::/64`, the IPv6 discard-only prefix (RFC
/// 6666): no host is ever numbered from it, so no real client has it, and
/// [`IpWhitelist::allows`] refuses every address in it whatever the list
/// says — an unreadable address can only pass a key that has no allow-list.
pub const UNREADABLE_CLIENT: IpAddr = IpAddr::V6(Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0));

/// The prefix [`UNREADABLE_CLIENT`] lies in, reserved from every allow-list.
pub const RESERVED_PREFIX: Ipv6Net =
    Ipv6Net::new_assert(Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64);

/// Whether `addr` lies in [`RESERVED_PREFIX`].
#[must_use]
pub fn is_reserved(addr: IpAddr) -> bool {
    matches!(addr.to_canonical(), IpAddr::V6(v6) if RESERVED_PREFIX.contains(&v6))
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IpWhitelistError {
    #[error("at most {MAX_IP_WHITELIST_ENTRIES} entries are allowed")]
    TooManyEntries,
    #[error("entry {index} is not an IP address or CIDR")]
    InvalidEntry { index: usize },
    #[error(
        "entry {index} lies in 100::/64, the discard prefix that stands for an unreadable forwarded address; it can match no client"
    )]
    ReservedEntry { index: usize },
}

/// A list of networks. A bare address is stored as a `/32` or `/128`; host
/// bits below the prefix are cleared (`10.1.2.3/8` → `10.0.0.0/8`);
/// duplicates are dropped, first occurrence kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct IpWhitelist(Vec<IpNet>);

impl IpWhitelist {
    /// Reads a list as stored. An entry inside [`RESERVED_PREFIX`] is kept
    /// (a key stored before the prefix was reserved stays readable) and
    /// matches no one; new lists go through [`IpWhitelist::parse_new`].
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, IpWhitelistError> {
        if entries.len() > MAX_IP_WHITELIST_ENTRIES {
            return Err(IpWhitelistError::TooManyEntries);
        }
        let mut networks = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let net =
                parse_entry(entry.as_ref()).ok_or(IpWhitelistError::InvalidEntry { index })?;
            if !networks.contains(&net) {
                networks.push(net);
            }
        }
        Ok(Self(networks))
    }

    /// Reads a list a user gives: as [`IpWhitelist::parse`], and an entry
    /// inside [`RESERVED_PREFIX`] is refused, since it could only ever match
    /// the stand-in for an unreadable address, which `allows` never admits.
    /// A wider entry that contains the prefix (`::/0`) is fine: it matches
    /// every other address in it.
    pub fn parse_new<S: AsRef<str>>(entries: &[S]) -> Result<Self, IpWhitelistError> {
        let list = Self::parse(entries)?;
        // `parse` drops duplicates, so the index is looked up in the input.
        for (index, entry) in entries.iter().enumerate() {
            if let Some(IpNet::V6(net)) = parse_entry(entry.as_ref())
                && RESERVED_PREFIX.contains(&net)
            {
                return Err(IpWhitelistError::ReservedEntry { index });
            }
        }
        Ok(list)
    }

    /// Whether `addr` may use the key. IPv4-mapped IPv6 addresses (as a
    /// dual-stack listener reports IPv4 peers) are checked as IPv4. An
    /// address in [`RESERVED_PREFIX`] passes only an empty list.
    #[must_use]
    pub fn allows(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        if self.0.is_empty() {
            return true;
        }
        !is_reserved(addr) && self.0.iter().any(|net| net.contains(&addr))
    }

    #[must_use]
    pub fn networks(&self) -> &[IpNet] {
        &self.0
    }

    /// The normalised entries as text, as the API returns them.
    #[must_use]
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

fn parse_entry(entry: &str) -> Option<IpNet> {
    let entry = entry.trim();
    let net = match entry.parse::<IpNet>() {
        Ok(net) => net.trunc(),
        Err(_) => IpNet::from(entry.parse::<IpAddr>().ok()?),
    };
    Some(as_ipv4_if_mapped(net))
}

/// An entry inside `::ffff:0:0/96` (IPv4-mapped IPv6) is stored as the IPv4
/// network it denotes: `allows` checks mapped peers as IPv4, so the entry
/// as written could never match anyone.
fn as_ipv4_if_mapped(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && let Ok(mapped) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(mapped);
    }
    net
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn a_bare_address_becomes_a_host_network() {
        let list = IpWhitelist::parse(&["10.0.0.1", "2001:db8::1"]).expect("valid");
        assert_eq!(list.to_strings(), ["10.0.0.1/32", "2001:db8::1/128"]);
    }

    #[test]
    fn host_bits_are_cleared() {
        let list = IpWhitelist::parse(&["10.1.2.3/8"]).expect("valid");
        assert_eq!(list.to_strings(), ["10.0.0.0/8"]);
    }

    #[test]
    fn an_empty_list_allows_any_address() {
        assert!(IpWhitelist::default().allows(ip("203.0.113.9")));
    }

    #[test]
    fn a_list_allows_only_addresses_inside_it() {
        let list = IpWhitelist::parse(&["10.0.0.0/8"]).expect("valid");
        assert!(list.allows(ip("10.200.0.1")));
        assert!(!list.allows(ip("11.0.0.1")));
        assert!(!list.allows(ip("::1")));
    }

    #[test]
    fn an_ipv4_mapped_entry_is_stored_and_checked_as_ipv4() {
        let list = IpWhitelist::parse(&["::ffff:127.0.0.1", "::ffff:10.0.0.0/104"]).expect("valid");
        assert_eq!(list.to_strings(), ["127.0.0.1/32", "10.0.0.0/8"]);
        assert!(list.allows(ip("127.0.0.1")));
        assert!(list.allows(ip("::ffff:10.9.8.7")));
        assert!(!list.allows(ip("11.0.0.1")));
    }

    #[test]
    fn an_ipv4_mapped_peer_is_checked_as_ipv4() {
        let list = IpWhitelist::parse(&["127.0.0.1"]).expect("valid");
        assert!(list.allows(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn garbage_names_its_index() {
        assert_eq!(
            IpWhitelist::parse(&["10.0.0.1", "nope"]),
            Err(IpWhitelistError::InvalidEntry { index: 1 })
        );
        assert_eq!(
            IpWhitelist::parse(&["10.0.0.0/33"]),
            Err(IpWhitelistError::InvalidEntry { index: 0 })
        );
    }

    #[test]
    fn fifty_entries_are_accepted_and_fifty_one_are_not() {
        let entries: Vec<String> = (0..51).map(|i| format!("10.0.0.{i}")).collect();
        assert!(IpWhitelist::parse(&entries[..50]).is_ok());
        assert_eq!(
            IpWhitelist::parse(&entries),
            Err(IpWhitelistError::TooManyEntries)
        );
    }

    #[test]
    fn the_unreadable_client_passes_no_allow_list() {
        for entries in [
            vec!["::/0"],
            vec!["100::/8", "0.0.0.0/0"],
            vec!["127.0.0.0/8"],
        ] {
            let list = IpWhitelist::parse(&entries).expect("valid");
            assert!(!list.allows(UNREADABLE_CLIENT), "{entries:?}");
            assert!(
                !list.allows("100::ffff:1".parse().expect("ip")),
                "{entries:?}"
            );
        }
        // `::/0` still holds every address outside the reserved prefix.
        let any_v6 = IpWhitelist::parse(&["::/0"]).expect("valid");
        assert!(any_v6.allows("100:0:0:1::1".parse().expect("ip")));
        assert!(any_v6.allows("2001:db8::1".parse().expect("ip")));
        // A key without an allow-list is usable from anywhere, by its
        // owner's choice, including from an address that could not be read.
        assert!(IpWhitelist::default().allows(UNREADABLE_CLIENT));
    }

    #[test]
    fn a_new_entry_inside_the_reserved_prefix_is_refused_by_index() {
        assert_eq!(
            IpWhitelist::parse_new(&["10.0.0.1", "100::1"]),
            Err(IpWhitelistError::ReservedEntry { index: 1 })
        );
        assert_eq!(
            IpWhitelist::parse_new(&["100::/64"]),
            Err(IpWhitelistError::ReservedEntry { index: 0 })
        );
        assert!(IpWhitelist::parse_new(&["::/0", "100::/63"]).is_ok());
        // A stored list keeps reading, and its reserved entry matches no one.
        let stored = IpWhitelist::parse(&["100::1"]).expect("stored lists stay readable");
        assert!(!stored.allows("100::1".parse().expect("ip")));
    }

    proptest! {
        #[test]
        fn normalising_is_idempotent_and_keeps_membership(
            a in any::<u32>(), prefix in 0u8..=32, probe in any::<u32>(),
        ) {
            let raw = format!("{}/{prefix}", Ipv4Addr::from(a));
            let once = IpWhitelist::parse(&[raw.as_str()]).expect("valid");
            let twice = IpWhitelist::parse(&once.to_strings()).expect("valid");
            prop_assert_eq!(&once, &twice);
            let net: IpNet = raw.parse().expect("cidr");
            let probe = IpAddr::V4(Ipv4Addr::from(probe));
            prop_assert_eq!(once.allows(probe), net.contains(&probe));
            prop_assert!(once.allows(IpAddr::V4(Ipv4Addr::from(a))));
        }

        #[test]
        fn ipv6_networks_contain_their_own_addresses(a in any::<u128>(), prefix in 0u8..=128) {
            let raw = format!("{}/{prefix}", Ipv6Addr::from(a));
            let list = IpWhitelist::parse(&[raw.as_str()]).expect("valid");
            let addr = Ipv6Addr::from(a);
            // An IPv4-mapped address is checked as IPv4, which a v6 net cannot hold.
            prop_assume!(addr.to_ipv4_mapped().is_none());
            prop_assume!(!is_reserved(IpAddr::V6(addr)));
            prop_assert!(list.allows(IpAddr::V6(addr)));
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in "\\PC{0,50}") {
            let _ = IpWhitelist::parse(&[text]);
        }
    }
}
