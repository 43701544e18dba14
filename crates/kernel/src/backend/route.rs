//! Bans as host routes that lead nowhere, written over `NETLINK_ROUTE` (no process
//! forked):
//! ```text
//! RTM_NEWROUTE  NLM_F_CREATE|NLM_F_EXCL|NLM_F_ACK
//!   rtmsg { family AF_INET|AF_INET6, dst_len 32|128, table RT_TABLE_MAIN,
//!           protocol ROUTE_PROTOCOL (94), scope universe, type blackhole|unreachable|prohibit }
//!   RTA_DST addr, RTA_PRIORITY 1 (IPv6 only)
//! RTM_DELROUTE  NLM_F_ACK   rtmsg { same family/dst_len/table, protocol 94, scope nowhere,
//!                                   type unspec }, RTA_DST addr
//! RTM_GETROUTE  NLM_F_DUMP  per family; kept: protocol 94, main table, host length
//! ```
//! Ownership: the routing protocol number [`ROUTE_PROTOCOL`] marks our routes. The
//! kernel only matches a delete against routes of the protocol given in it, so a delete
//! from here can never take away someone else's route, and `list`/`teardown` see only
//! host routes of our protocol in the main table.
//!
//! Precedence: a /32 or /128 is the most specific route there is; among routes for the
//! same host the lowest metric wins, so ours take the lowest the kernel allows: 0 for
//! IPv4 (the default) and 1 for IPv6 (0 means "default metric", 1024). A foreign route
//! for the same host *at that metric* makes the kernel answer `EEXIST`; then
//! [`BackendError::ForeignRoute`] is returned and the foreign route is left as it is.
//!
//! Effect and limits: the attacker's packets still arrive, but nothing is sent back to
//! it (a TCP handshake never completes, a UDP service's answer is dropped). The routes
//! do not expire; the daemon removes them. Policy routing rules that select another
//! table before `main` for the attacker would bypass them.
//!
//! The socket ([`crate::rtnl`]'s client) is opened in [`RouteBackend::new`], so the
//! backend acts on the network namespace of the thread that created it.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use ipnet::IpNet;

use super::{BackendError, BanBackend, Held, ban_target, held_unknown, host_key};
use crate::rtnl::Rtnl;

/// The routing protocol number (`rtm_protocol`) that marks our routes: 94 = 0x5e.
///
/// The kernel interprets only values up to `RTPROT_STATIC` (4); the rest identify the
/// daemon that installed a route. 94 is assigned neither in `linux/rtnetlink.h` (the
/// list ends at 192 `eigrp`, with 5–7, 19–41, 43–98, 100–185 unused) nor in iproute2's
/// `rt_protos` (Debian 12); `ip route show proto 94` lists our bans.
pub const ROUTE_PROTOCOL: u8 = 0x5e;

/// The IPv6 metric of our routes: the lowest the kernel accepts (0 becomes 1024).
const IPV6_METRIC: u32 = 1;

/// How many copies of our route for one address `remove` deletes at most (the kernel
/// holds at most one per metric; only ours at one metric are created).
const MAX_ROUTE_COPIES: usize = 16;

/// What the kernel does with a packet to a banned host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteKind {
    /// Drop silently (`blackhole`); a local sender gets `EINVAL`. The default: the
    /// scanner learns nothing and no ICMP goes out.
    #[default]
    Blackhole,
    /// Drop; a local sender gets `EHOSTUNREACH`, a forwarded packet an ICMP host
    /// unreachable (`unreachable`, what 1.2's `route add -host $TARGET$ reject` did).
    Unreachable,
    /// Drop; a local sender gets `EACCES`, a forwarded packet an ICMP administratively
    /// prohibited (`prohibit`).
    Prohibit,
}

impl RouteKind {
    fn route_type(self) -> RouteType {
        match self {
            RouteKind::Blackhole => RouteType::BlackHole,
            RouteKind::Unreachable => RouteType::Unreachable,
            RouteKind::Prohibit => RouteType::Prohibit,
        }
    }
}

impl fmt::Display for RouteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RouteKind::Blackhole => "blackhole",
            RouteKind::Unreachable => "unreachable",
            RouteKind::Prohibit => "prohibit",
        })
    }
}

/// Bans as host routes; see the module documentation.
pub struct RouteBackend {
    kind: RouteKind,
    rtnl: Rtnl,
}

impl fmt::Debug for RouteBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteBackend")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl RouteBackend {
    /// Opens the rtnetlink socket (in the calling thread's network namespace).
    pub fn new(kind: RouteKind) -> Result<Self, BackendError> {
        Ok(RouteBackend {
            kind,
            rtnl: Rtnl::open().map_err(BackendError::OpenNetlink)?,
        })
    }

    pub fn kind(&self) -> RouteKind {
        self.kind
    }

    /// Our host routes of one family.
    fn ours(&mut self, family: AddressFamily) -> io::Result<Vec<IpAddr>> {
        let routes = self.rtnl.routes(family)?;
        Ok(routes.iter().filter_map(our_host_route).collect())
    }

    fn delete_one(&mut self, addr: IpAddr) -> io::Result<bool> {
        let mut msg = route_message(addr);
        msg.header.scope = RouteScope::NoWhere;
        msg.header.kind = RouteType::Unspec;
        match self
            .rtnl
            .request(RouteNetlinkMessage::DelRoute(msg), NLM_F_ACK)
        {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The parts of a request for `addr` shared by add and delete.
fn route_message(addr: IpAddr) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.header.destination_prefix_length = host_len(addr);
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::from(ROUTE_PROTOCOL);
    msg.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(addr)));
    msg
}

fn host_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// The destination of `route` if it is one of ours: our protocol, the main table, a
/// host route without source prefix, a type that drops.
fn our_host_route(route: &RouteMessage) -> Option<IpAddr> {
    let h = &route.header;
    if u8::from(h.protocol) != ROUTE_PROTOCOL
        || h.source_prefix_length != 0
        || !matches!(
            h.kind,
            RouteType::BlackHole | RouteType::Unreachable | RouteType::Prohibit
        )
    {
        return None;
    }
    let mut table = u32::from(h.table);
    let mut dst = None;
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = Some(IpAddr::V4(*a)),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => dst = Some(IpAddr::V6(*a)),
            _ => {}
        }
    }
    let dst = dst?;
    let family_ok = match dst {
        IpAddr::V4(_) => h.address_family == AddressFamily::Inet,
        IpAddr::V6(_) => h.address_family == AddressFamily::Inet6,
    };
    (family_ok
        && table == u32::from(RouteHeader::RT_TABLE_MAIN)
        && h.destination_prefix_length == host_len(dst))
    .then_some(dst)
}

impl BanBackend for RouteBackend {
    fn name(&self) -> &'static str {
        "route"
    }

    /// Nothing to install.
    fn prepare(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Adds the route; the timeout is ignored (the daemon removes the route at expiry).
    /// Our route already there (of any kind) is success.
    fn add(&mut self, key: IpNet, _timeout: Option<Duration>) -> Result<(), BackendError> {
        let addr = ban_target(host_key(key)?)?;
        let kind = self.kind;
        let mut msg = route_message(addr);
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = kind.route_type();
        if addr.is_ipv6() {
            msg.attributes.push(RouteAttribute::Priority(IPV6_METRIC));
        }
        let flags = NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        match self.rtnl.request(RouteNetlinkMessage::NewRoute(msg), flags) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                let family = if addr.is_ipv4() {
                    AddressFamily::Inet
                } else {
                    AddressFamily::Inet6
                };
                let ours = self.ours(family).map_err(|source| BackendError::AddRoute {
                    addr,
                    kind,
                    source,
                })?;
                if ours.contains(&addr) {
                    Ok(())
                } else {
                    Err(BackendError::ForeignRoute { addr })
                }
            }
            Err(source) => Err(BackendError::AddRoute { addr, kind, source }),
        }
    }

    fn remove(&mut self, key: IpNet) -> Result<bool, BackendError> {
        let addr = ban_target(host_key(key)?)?;
        let mut deleted = false;
        for _ in 0..MAX_ROUTE_COPIES {
            match self.delete_one(addr) {
                Ok(true) => deleted = true,
                Ok(false) => break,
                Err(source) => return Err(BackendError::DeleteRoute { addr, source }),
            }
        }
        Ok(deleted)
    }

    /// Our host routes; a route has no timeout ([`super::Expiry::Unknown`]).
    fn list(&mut self) -> Result<Vec<Held>, BackendError> {
        let mut all = self
            .ours(AddressFamily::Inet)
            .map_err(BackendError::ListRoutes)?;
        all.extend(
            self.ours(AddressFamily::Inet6)
                .map_err(BackendError::ListRoutes)?,
        );
        let mut seen = std::collections::HashSet::new();
        all.retain(|a| seen.insert(*a));
        Ok(held_unknown(all))
    }

    fn expires_by_itself(&self) -> bool {
        false
    }

    fn teardown(&mut self) -> Result<(), BackendError> {
        for held in self.list()? {
            self.remove(held.key)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(
        family: AddressFamily,
        dst: &str,
        len: u8,
        proto: u8,
        kind: RouteType,
    ) -> RouteMessage {
        let addr: IpAddr = dst.parse().unwrap();
        let mut m = RouteMessage::default();
        m.header.address_family = family;
        m.header.destination_prefix_length = len;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::from(proto);
        m.header.kind = kind;
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(addr)));
        m
    }

    #[test]
    fn only_our_host_routes_in_main_are_recognised() {
        let v4 = AddressFamily::Inet;
        let v6 = AddressFamily::Inet6;
        let bh = RouteType::BlackHole;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            our_host_route(&route(v4, "198.18.0.2", 32, ROUTE_PROTOCOL, bh)),
            Some(ip("198.18.0.2"))
        );
        assert_eq!(
            our_host_route(&route(
                v6,
                "fd00:5e17::2",
                128,
                ROUTE_PROTOCOL,
                RouteType::Prohibit
            )),
            Some(ip("fd00:5e17::2"))
        );
        assert_eq!(
            our_host_route(&route(
                v4,
                "198.18.0.2",
                32,
                ROUTE_PROTOCOL,
                RouteType::Unreachable
            )),
            Some(ip("198.18.0.2"))
        );
        // Not ours: other protocol, a network, a unicast route, another table.
        assert_eq!(our_host_route(&route(v4, "198.18.0.2", 32, 4, bh)), None);
        assert_eq!(
            our_host_route(&route(v4, "198.18.0.0", 24, ROUTE_PROTOCOL, bh)),
            None
        );
        assert_eq!(
            our_host_route(&route(
                v4,
                "198.18.0.2",
                32,
                ROUTE_PROTOCOL,
                RouteType::Unicast
            )),
            None
        );
        let mut other_table = route(v6, "fd00:5e17::2", 128, ROUTE_PROTOCOL, bh);
        other_table.header.table = 100;
        assert_eq!(our_host_route(&other_table), None);
        let mut big_table = route(v4, "198.18.0.2", 32, ROUTE_PROTOCOL, bh);
        big_table.attributes.push(RouteAttribute::Table(1000));
        assert_eq!(our_host_route(&big_table), None);
        let mut no_dst = route(v4, "198.18.0.2", 32, ROUTE_PROTOCOL, bh);
        no_dst.attributes.clear();
        assert_eq!(our_host_route(&no_dst), None);
    }

    #[test]
    fn protocol_is_not_a_known_one() {
        assert_eq!(
            RouteProtocol::from(ROUTE_PROTOCOL),
            RouteProtocol::Other(ROUTE_PROTOCOL)
        );
        assert_eq!(RouteKind::default().to_string(), "blackhole");
    }

    #[test]
    fn requests_carry_our_marks() {
        let m = route_message("fd00:5e17::2".parse().unwrap());
        assert_eq!(m.header.destination_prefix_length, 128);
        assert_eq!(m.header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(u8::from(m.header.protocol), ROUTE_PROTOCOL);
        assert_eq!(m.header.address_family, AddressFamily::Inet6);
    }
}
