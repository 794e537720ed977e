//! `IpWhitelist::parse` on arbitrary entries and `IpWhitelist::allows` on
//! arbitrary IPv4 and IPv6 addresses, checked against a reference built on
//! `ipnet`:
//!
//! - an entry (surrounding whitespace ignored) is a CIDR or a bare address;
//!   a bare address is a `/32` or `/128`; an entry inside `::ffff:0:0/96`
//!   (IPv4-mapped IPv6) is the IPv4 network it denotes; at most 50 entries;
//! - the stored networks have their host bits cleared, keep the given order
//!   and hold no duplicates; parsing their text again gives the same list;
//! - an empty list allows every address; otherwise an address is allowed
//!   when a network contains it, an IPv4-mapped IPv6 address
//!   (`::ffff:a.b.c.d`) being checked as the IPv4 address `a.b.c.d`.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use cola_domain::{IpWhitelist, IpWhitelistError};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    entries: Vec<Entry>,
    probes: Vec<Probe>,
}

#[derive(Arbitrary, Debug)]
enum Entry {
    Text(String),
    V4 {
        addr: [u8; 4],
        prefix: Option<u8>,
        padding: Padding,
    },
    V6 {
        addr: [u8; 16],
        prefix: Option<u8>,
        padding: Padding,
    },
    Mapped {
        addr: [u8; 4],
        prefix: Option<u8>,
    },
}

#[derive(Arbitrary, Debug)]
enum Padding {
    None,
    Spaces,
    Tabs,
    Newlines,
}

impl Entry {
    fn text(&self) -> String {
        let with_prefix = |addr: String, prefix: &Option<u8>| match prefix {
            Some(p) => format!("{addr}/{p}"),
            None => addr,
        };
        let pad = |text: String, padding: &Padding| match padding {
            Padding::None => text,
            Padding::Spaces => format!("  {text} "),
            Padding::Tabs => format!("\t{text}\t"),
            Padding::Newlines => format!("\n{text}\r\n"),
        };
        match self {
            Entry::Text(text) => text.clone(),
            Entry::V4 {
                addr,
                prefix,
                padding,
            } => pad(
                with_prefix(Ipv4Addr::from(*addr).to_string(), prefix),
                padding,
            ),
            Entry::V6 {
                addr,
                prefix,
                padding,
            } => pad(
                with_prefix(Ipv6Addr::from(*addr).to_string(), prefix),
                padding,
            ),
            Entry::Mapped { addr, prefix } => {
                with_prefix(Ipv4Addr::from(*addr).to_ipv6_mapped().to_string(), prefix)
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Probe {
    V4([u8; 4]),
    V6([u8; 16]),
    /// `::ffff:a.b.c.d`.
    Mapped([u8; 4]),
    /// An address inside entry `index` (if it parsed): its network with
    /// the given host bits, as IPv4, IPv6, or IPv4-mapped IPv6.
    Inside {
        index: usize,
        host_bits: u128,
        mapped: bool,
    },
}

impl Probe {
    fn address(&self, nets: &[Option<IpNet>]) -> IpAddr {
        match self {
            Probe::V4(a) => IpAddr::V4(Ipv4Addr::from(*a)),
            Probe::V6(a) => IpAddr::V6(Ipv6Addr::from(*a)),
            Probe::Mapped(a) => IpAddr::V6(Ipv4Addr::from(*a).to_ipv6_mapped()),
            Probe::Inside {
                index,
                host_bits,
                mapped,
            } => {
                let net = if nets.is_empty() {
                    None
                } else {
                    nets[index % nets.len()]
                };
                match net {
                    None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    Some(IpNet::V4(net)) => {
                        let host = (*host_bits as u32) & u32::from(net.hostmask());
                        let v4 = Ipv4Addr::from(u32::from(net.network()) | host);
                        if *mapped {
                            IpAddr::V6(v4.to_ipv6_mapped())
                        } else {
                            IpAddr::V4(v4)
                        }
                    }
                    Some(IpNet::V6(net)) => {
                        let host = host_bits & u128::from(net.hostmask());
                        IpAddr::V6(Ipv6Addr::from(u128::from(net.network()) | host))
                    }
                }
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let texts: Vec<String> = input.entries.iter().map(Entry::text).collect();
    let reference: Vec<Option<IpNet>> = texts.iter().map(|t| reference_entry(t)).collect();

    let result = IpWhitelist::parse(&texts);
    let list = match result {
        Err(IpWhitelistError::TooManyEntries) => {
            assert!(texts.len() > 50, "{texts:?}: too many entries");
            return;
        }
        Err(IpWhitelistError::InvalidEntry { index }) => {
            assert!(texts.len() <= 50);
            assert_eq!(
                Some(index),
                reference.iter().position(Option::is_none),
                "{texts:?}: first invalid entry"
            );
            return;
        }
        Ok(list) => list,
    };
    assert!(texts.len() <= 50);
    assert!(
        reference.iter().all(Option::is_some),
        "{texts:?} accepted, reference rejects an entry"
    );
    let nets: Vec<IpNet> = reference.iter().flatten().copied().collect();

    // Normalised: host bits cleared, first occurrence kept, order kept.
    let mut expected: Vec<IpNet> = Vec::new();
    for net in &nets {
        let net = net.trunc();
        if !expected.contains(&net) {
            expected.push(net);
        }
    }
    assert_eq!(list.networks(), expected.as_slice(), "{texts:?}");
    let again = IpWhitelist::parse(&list.to_strings()).expect("normalised text parses");
    assert_eq!(again, list, "{texts:?}: normalising twice");

    for probe in &input.probes {
        let addr = probe.address(&reference);
        let expected = reference_allows(&nets, addr);
        assert_eq!(
            list.allows(addr),
            expected,
            "allows({addr}) with {:?} (from {texts:?})",
            list.to_strings()
        );
        assert_eq!(again.allows(addr), expected);
    }
});

fn reference_entry(text: &str) -> Option<IpNet> {
    let text = text.trim();
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match text.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) => IpNet::new(IpAddr::V4(a), 32).expect("/32"),
            IpAddr::V6(a) => IpNet::new(IpAddr::V6(a), 128).expect("/128"),
        },
    };
    // An entry inside ::ffff:0:0/96 denotes IPv4 networks.
    if let IpNet::V6(v6) = net {
        let s = v6.addr().segments();
        if v6.prefix_len() >= 96 && s[..5] == [0; 5] && s[5] == 0xffff {
            let [.., a, b, c, d] = v6.addr().octets();
            let v4 = IpNet::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), v6.prefix_len() - 96);
            return Some(v4.expect("prefix within 0..=32"));
        }
    }
    Some(net)
}

/// Untruncated networks on purpose: clearing host bits must not change
/// which addresses a network holds.
fn reference_allows(nets: &[IpNet], addr: IpAddr) -> bool {
    let addr = match addr {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if s[..5] == [0; 5] && s[5] == 0xffff {
                let [.., a, b, c, d] = v6.octets();
                IpAddr::V4(Ipv4Addr::new(a, b, c, d))
            } else {
                IpAddr::V6(v6)
            }
        }
        v4 => v4,
    };
    nets.is_empty() || nets.iter().any(|net| net.contains(&addr))
}
