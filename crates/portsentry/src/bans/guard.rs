//! What a ban may never cover, checked for the administrator's bans (`portsentry ban`)
//! and for bans read back from the state file or found in the kernel at start: the
//! daemon's own bans pass the engine's ignore list (the same protected set) before
//! they exist. Pure functions over values; the protected set is handed in.
//!
//! Three rules, in this order:
//! 1. never a prefix shorter than [`MIN_BAN_PREFIX_V4`] / [`MIN_BAN_PREFIX_V6`] (it
//!    covers everything, or nearly);
//! 2. never an unspecified, loopback, link-local, multicast or broadcast address, nor a
//!    network overlapping those ranges: none is the source of a real scan (loopback
//!    never reaches our rules, link-local covers the IPv6 routers' own addresses);
//! 3. never the protected set (this host's addresses, its gateways and resolvers, the
//!    ignore list), nor a network overlapping it; `force` overrides this rule, and only
//!    this one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use portsentry_engine::ignore::IgnoreSet;

use crate::defaults::{MIN_BAN_PREFIX_V4, MIN_BAN_PREFIX_V6};

/// Why a ban is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "{net} covers too much: bans must be /{MIN_BAN_PREFIX_V4} or longer for IPv4 and /{MIN_BAN_PREFIX_V6} or longer for IPv6 (no --force allows this)"
    )]
    TooWide { net: IpNet },
    #[error("{net} is {what} ({range}), never the source of a scan (no --force allows this)")]
    Special {
        net: IpNet,
        what: &'static str,
        range: IpNet,
    },
    #[error(
        "{net} is protected ({protected} is in the protected set: this host's addresses, its gateways and resolvers, the ignore list); --force overrides the protected set"
    )]
    Protected { net: IpNet, protected: IpNet },
}

/// `net` in the book's form: host bits cleared, IPv4-mapped IPv6 as IPv4 (the engine's
/// own rule, shared with the ignore set and the ban book).
pub fn canonical(net: IpNet) -> IpNet {
    portsentry_engine::ignore::canonical_net(net)
}

/// Check `net` (canonical) against the three rules. `Ok(Some(p))`: allowed only because
/// `force` overrode the protected network `p`.
pub fn check(net: IpNet, protected: &IgnoreSet, force: bool) -> Result<Option<IpNet>, Refusal> {
    let net = canonical(net);
    let min = match net {
        IpNet::V4(_) => MIN_BAN_PREFIX_V4,
        IpNet::V6(_) => MIN_BAN_PREFIX_V6,
    };
    if net.prefix_len() < min {
        return Err(Refusal::TooWide { net });
    }
    if let Some(&(range, what)) = SPECIAL_RANGES.iter().find(|(r, _)| overlaps(*r, net)) {
        return Err(Refusal::Special { net, what, range });
    }
    match protected.iter().find(|p| overlaps(*p, net)) {
        Some(p) if force => Ok(Some(p)),
        Some(protected) => Err(Refusal::Protected { net, protected }),
        None => Ok(None),
    }
}

/// Do two networks share an address? (Prefixes nest: one holds the other.)
fn overlaps(a: IpNet, b: IpNet) -> bool {
    match (a, b) {
        (IpNet::V4(a), IpNet::V4(b)) => a.contains(&b) || b.contains(&a),
        (IpNet::V6(a), IpNet::V6(b)) => a.contains(&b) || b.contains(&a),
        _ => false,
    }
}

/// Ranges no ban may touch, with their name for the refusal.
const SPECIAL_RANGES: [(IpNet, &str); 9] = {
    const fn v4(a: [u8; 4], len: u8) -> IpNet {
        IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])), len)
    }
    const fn v6(first: u16, last: u16, len: u8) -> IpNet {
        IpNet::new_assert(
            IpAddr::V6(Ipv6Addr::new(first, 0, 0, 0, 0, 0, 0, last)),
            len,
        )
    }
    [
        (v4([0, 0, 0, 0], 8), "unspecified"),
        (v4([127, 0, 0, 0], 8), "loopback"),
        (v4([169, 254, 0, 0], 16), "link-local"),
        (v4([224, 0, 0, 0], 4), "multicast"),
        (v4([255, 255, 255, 255], 32), "broadcast"),
        (v6(0, 0, 128), "unspecified"),
        (v6(0, 1, 128), "loopback"),
        (v6(0xfe80, 0, 10), "link-local"),
        (v6(0xff00, 0, 8), "multicast"),
    ]
};
