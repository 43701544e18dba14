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
//! [`FallbackError::ForeignRoute`] is returned and the foreign route is left as it is.
//!
//! Effect and limits: the attacker's packets still arrive, but nothing is sent back to
//! it (a TCP handshake never completes, a UDP service's answer is dropped). The routes
//! do not expire; the daemon removes them. Policy routing rules that select another
//! table before `main` for the attacker would bypass them.
//!
//! The socket is opened in [`RouteBackend::new`], so the backend acts on the network
//! namespace of the thread that created it.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_DONE,
    NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

use ipnet::IpNet;

use super::{BanBackend, FallbackError, Held, ban_target, held_unknown, host_key};

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
    pub fn new(kind: RouteKind) -> Result<Self, FallbackError> {
        Ok(RouteBackend {
            kind,
            rtnl: Rtnl::open().map_err(FallbackError::OpenNetlink)?,
        })
    }

    pub fn kind(&self) -> RouteKind {
        self.kind
    }

    /// Our host routes of one family.
    fn ours(&mut self, family: AddressFamily) -> io::Result<Vec<IpAddr>> {
        let mut request = RouteMessage::default();
        request.header.address_family = family;
        let mut out = Vec::new();
        for msg in self.rtnl.dump(RouteNetlinkMessage::GetRoute(request))? {
            if let RouteNetlinkMessage::NewRoute(route) = msg
                && let Some(addr) = our_host_route(&route)
            {
                out.push(addr);
            }
        }
        Ok(out)
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
    fn prepare(&mut self) -> Result<(), FallbackError> {
        Ok(())
    }

    /// Adds the route; the timeout is ignored (the daemon removes the route at expiry).
    /// Our route already there (of any kind) is success.
    fn add(&mut self, key: IpNet, _timeout: Option<Duration>) -> Result<(), FallbackError> {
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
                let ours = self
                    .ours(family)
                    .map_err(|source| FallbackError::AddRoute { addr, kind, source })?;
                if ours.contains(&addr) {
                    Ok(())
                } else {
                    Err(FallbackError::ForeignRoute { addr })
                }
            }
            Err(source) => Err(FallbackError::AddRoute { addr, kind, source }),
        }
    }

    fn remove(&mut self, key: IpNet) -> Result<bool, FallbackError> {
        let addr = ban_target(host_key(key)?)?;
        let mut deleted = false;
        for _ in 0..MAX_ROUTE_COPIES {
            match self.delete_one(addr) {
                Ok(true) => deleted = true,
                Ok(false) => break,
                Err(source) => return Err(FallbackError::DeleteRoute { addr, source }),
            }
        }
        Ok(deleted)
    }

    /// Our host routes; a route has no timeout ([`super::Expiry::Unknown`]).
    fn list(&mut self) -> Result<Vec<Held>, FallbackError> {
        let mut all = self
            .ours(AddressFamily::Inet)
            .map_err(FallbackError::ListRoutes)?;
        all.extend(
            self.ours(AddressFamily::Inet6)
                .map_err(FallbackError::ListRoutes)?,
        );
        let mut seen = std::collections::HashSet::new();
        all.retain(|a| seen.insert(*a));
        Ok(held_unknown(all))
    }

    fn expires_by_itself(&self) -> bool {
        false
    }

    fn teardown(&mut self) -> Result<(), FallbackError> {
        for held in self.list()? {
            self.remove(held.key)?;
        }
        Ok(())
    }
}

/// How long one receive may wait for the kernel's answer.
const RECV_TIMEOUT_SECS: libc::time_t = 5;
/// How often a dump the kernel marks as interrupted (tables changed while it ran) is
/// started again before its last result is used.
const DUMP_ATTEMPTS: usize = 4;
/// Upper bound of datagrams in one answer.
const MAX_DATAGRAMS: usize = 1 << 20;
const RECV_BUF_LEN: usize = 64 * 1024;
/// Offset of the error code in an `NLMSG_ERROR` message (after the 16-byte header).
const NLMSG_HDR_LEN: usize = 16;

/// A synchronous rtnetlink socket: requests with ACK, and dumps.
struct Rtnl {
    sock: Socket,
    port: u32,
    seq: u32,
    buf: Vec<u8>,
}

impl Rtnl {
    fn open() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        let port = sock.bind_auto()?.port_number();
        sock.connect(&SocketAddr::new(0, 0))?;
        // Errors echo only the header of our request, not all of it.
        sock.set_cap_ack(true)?;
        set_recv_timeout(&sock, RECV_TIMEOUT_SECS)?;
        Ok(Rtnl {
            sock,
            port,
            seq: 0,
            buf: vec![0; RECV_BUF_LEN],
        })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut bytes = vec![0; packet.header.length as usize];
        packet.serialize(&mut bytes);
        let sent = self.sock.send(&bytes, 0)?;
        if sent != bytes.len() {
            return Err(io::Error::other("rtnetlink: short send"));
        }
        Ok(self.seq)
    }

    /// Sends one request with `NLM_F_ACK` and waits for its ACK; a NACK is the
    /// kernel's errno.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        let seq = self.send(msg, flags | NLM_F_ACK)?;
        for _ in 0..MAX_DATAGRAMS {
            let len = self.recv_datagram()?;
            for (kind, _, bytes) in messages(&self.buf[..len], seq, self.port)? {
                if kind == NLMSG_ERROR {
                    return match error_code(bytes)? {
                        0 => Ok(()),
                        code => Err(io::Error::from_raw_os_error(-code)),
                    };
                }
            }
        }
        Err(io::Error::other("rtnetlink: no acknowledgement"))
    }

    /// Runs one dump to its end, started again (a bounded number of times) when the
    /// kernel says the tables changed while it ran.
    fn dump(&mut self, request: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut last = Vec::new();
        for _ in 0..DUMP_ATTEMPTS {
            let (items, interrupted) = self.dump_once(request.clone())?;
            if !interrupted {
                return Ok(items);
            }
            last = items;
        }
        Ok(last)
    }

    fn dump_once(
        &mut self,
        request: RouteNetlinkMessage,
    ) -> io::Result<(Vec<RouteNetlinkMessage>, bool)> {
        let seq = self.send(request, NLM_F_DUMP)?;
        let mut items = Vec::new();
        let mut interrupted = false;
        for _ in 0..MAX_DATAGRAMS {
            let len = self.recv_datagram()?;
            for (kind, nl_flags, bytes) in messages(&self.buf[..len], seq, self.port)? {
                if nl_flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match kind {
                    NLMSG_NOOP => {}
                    NLMSG_OVERRUN => return Err(io::Error::other("rtnetlink: overrun")),
                    NLMSG_ERROR => match error_code(bytes)? {
                        0 => {}
                        code => return Err(io::Error::from_raw_os_error(-code)),
                    },
                    NLMSG_DONE => {
                        // The payload of DONE is the dump's status (0 or -errno).
                        let code = error_code(bytes).unwrap_or(0);
                        if code < 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                        return Ok((items, interrupted));
                    }
                    _ => {
                        // A message this crate cannot parse cannot be recognised as
                        // ours either; it is skipped, not fatal.
                        if let Ok(NetlinkMessage {
                            payload: NetlinkPayload::InnerMessage(inner),
                            ..
                        }) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
                        {
                            items.push(inner);
                        }
                    }
                }
            }
        }
        Err(io::Error::other("rtnetlink: dump did not end"))
    }

    /// Receives one whole datagram into `self.buf` (grown to fit); returns its length.
    fn recv_datagram(&mut self) -> io::Result<usize> {
        loop {
            let peek = recv_retry(&self.sock, &mut self.buf, libc::MSG_PEEK | libc::MSG_TRUNC)?;
            if peek > self.buf.len() {
                self.buf.resize(peek, 0);
                continue;
            }
            return recv_retry(&self.sock, &mut self.buf, 0);
        }
    }
}

/// The messages of one datagram that answer request `seq` of `port`, as (type, flags,
/// bytes); answers to earlier requests (e.g. one that timed out) are skipped.
fn messages(mut data: &[u8], seq: u32, port: u32) -> io::Result<Vec<(u16, u16, &[u8])>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let nl = NetlinkBuffer::new_checked(data)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("rtnetlink: {e}")))?;
        let len = nl.length() as usize;
        let msg = &data[..len];
        data = &data[len.next_multiple_of(4).min(data.len())..];
        if nl.sequence_number() == seq && nl.port_number() == port {
            out.push((nl.message_type(), nl.flags(), msg));
        }
    }
    Ok(out)
}

/// The `error` field of an `NLMSG_ERROR` (0 = ACK, else -errno) or the status of an
/// `NLMSG_DONE`.
fn error_code(msg: &[u8]) -> io::Result<i32> {
    msg.get(NLMSG_HDR_LEN..NLMSG_HDR_LEN + 4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "rtnetlink: short error message"))
}

/// One `recv`, retried on `EINTR`; the receive timeout becomes `TimedOut`.
fn recv_retry(sock: &Socket, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    loop {
        match sock.recv(&mut &mut buf[..], flags) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "rtnetlink: no answer from the kernel",
                ));
            }
            Err(e) => return Err(e),
        }
    }
}

fn set_recv_timeout(sock: &Socket, secs: libc::time_t) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let tv = libc::timeval {
        tv_sec: secs,
        tv_usec: 0,
    };
    // SAFETY: a valid socket fd, and a pointer/length pair describing a live `timeval`.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
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
