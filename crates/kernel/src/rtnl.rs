//! NETLINK_ROUTE reading: this host's addresses and the next hops of its default
//! routes (dumps of `RTM_GETADDR` and `RTM_GETROUTE`), and [`ChangeWatcher`], which
//! listens to the rtnetlink multicast groups so that the caller knows when to read them
//! again. No policy: what is protected is decided by the daemon.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN,
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteVia};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

/// Every address configured on this host (all interfaces, IPv4 and IPv6, link-local
/// included, and the peer of a point-to-point address); unsorted, may repeat.
pub fn local_addresses() -> io::Result<Vec<IpAddr>> {
    RouteDumper::open()?.local_addresses()
}

/// The next hops of the default routes of every routing table, IPv4 and IPv6; unsorted,
/// may repeat.
pub fn default_gateways() -> io::Result<Vec<IpAddr>> {
    RouteDumper::open()?.default_gateways()
}

/// The address of this host in an `RTM_NEWADDR` message and, for a point-to-point
/// address, its peer. For IPv4 `IFA_LOCAL` is our address and `IFA_ADDRESS` the peer (or
/// the same); for IPv6 `IFA_ADDRESS` is ours unless `IFA_LOCAL` is present.
fn addresses_of(msg: &AddressMessage, out: &mut Vec<IpAddr>) {
    if !matches!(
        msg.header.family,
        AddressFamily::Inet | AddressFamily::Inet6
    ) {
        return;
    }
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) | AddressAttribute::Address(ip) => out.push(*ip),
            _ => {}
        }
    }
}

/// The next hops of a default route (`dst_len` 0): `RTA_GATEWAY`, `RTA_VIA` and the
/// gateways of `RTA_MULTIPATH` next hops.
fn gateways_of(msg: &RouteMessage, out: &mut Vec<IpAddr>) {
    if !matches!(
        msg.header.address_family,
        AddressFamily::Inet | AddressFamily::Inet6
    ) || msg.header.destination_prefix_length != 0
    {
        return;
    }
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::MultiPath(hops) => {
                for hop in hops {
                    for attr in &hop.attributes {
                        push_gateway(attr, out);
                    }
                }
            }
            other => push_gateway(other, out),
        }
    }
}

fn push_gateway(attr: &RouteAttribute, out: &mut Vec<IpAddr>) {
    match attr {
        RouteAttribute::Gateway(RouteAddress::Inet(ip))
        | RouteAttribute::Via(RouteVia::Inet(ip)) => out.push(IpAddr::V4(*ip)),
        RouteAttribute::Gateway(RouteAddress::Inet6(ip))
        | RouteAttribute::Via(RouteVia::Inet6(ip)) => out.push(IpAddr::V6(*ip)),
        _ => {}
    }
}

/// How long one receive of a dump reply may wait for the kernel.
const DUMP_RECV_TIMEOUT_SECS: libc::time_t = 5;
/// How often a dump that the kernel marks as interrupted (`NLM_F_DUMP_INTR`: the tables
/// changed while it ran) is started again before its last result is used as it is.
const DUMP_ATTEMPTS: usize = 4;
/// Upper bound of datagrams in one dump reply (each holds many messages).
const DUMP_MAX_DATAGRAMS: usize = 1 << 20;
const RECV_BUF_LEN: usize = 64 * 1024;

/// A synchronous rtnetlink socket for dump requests.
struct RouteDumper {
    sock: Socket,
    port: u32,
    seq: u32,
    buf: Vec<u8>,
}

impl RouteDumper {
    fn open() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        let port = sock.bind_auto()?.port_number();
        sock.connect(&SocketAddr::new(0, 0))?;
        set_recv_timeout(&sock, DUMP_RECV_TIMEOUT_SECS)?;
        Ok(RouteDumper {
            sock,
            port,
            seq: 0,
            buf: vec![0; RECV_BUF_LEN],
        })
    }

    fn local_addresses(&mut self) -> io::Result<Vec<IpAddr>> {
        let mut request = AddressMessage::default();
        request.header.family = AddressFamily::Unspec;
        let mut out = Vec::new();
        for msg in self.dump(RouteNetlinkMessage::GetAddress(request))? {
            if let RouteNetlinkMessage::NewAddress(addr) = msg {
                addresses_of(&addr, &mut out);
            }
        }
        Ok(out)
    }

    fn default_gateways(&mut self) -> io::Result<Vec<IpAddr>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut request = RouteMessage::default();
            request.header.address_family = family;
            for msg in self.dump(RouteNetlinkMessage::GetRoute(request))? {
                if let RouteNetlinkMessage::NewRoute(route) = msg {
                    gateways_of(&route, &mut out);
                }
            }
        }
        Ok(out)
    }

    /// Runs one dump request to its end; restarts it (a bounded number of times) when
    /// the kernel says the tables changed while it ran.
    fn dump(&mut self, request: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut last = Vec::new();
        for _ in 0..DUMP_ATTEMPTS {
            let (items, interrupted) = self.dump_once(request.clone())?;
            if !interrupted {
                return Ok(items);
            }
            last = items;
        }
        // Still changing under us: an inconsistent dump protects more than none.
        Ok(last)
    }

    fn dump_once(
        &mut self,
        request: RouteNetlinkMessage,
    ) -> io::Result<(Vec<RouteNetlinkMessage>, bool)> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(request));
        packet.finalize();
        let mut bytes = vec![0; packet.header.length as usize];
        packet.serialize(&mut bytes);
        self.sock.send(&bytes, 0)?;

        let mut items = Vec::new();
        let mut interrupted = false;
        for _ in 0..DUMP_MAX_DATAGRAMS {
            let len = self.recv_datagram()?;
            let mut data = &self.buf[..len];
            while !data.is_empty() {
                let nl = NetlinkBuffer::new_checked(data).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("rtnetlink: {e}"))
                })?;
                let msg_len = nl.length() as usize;
                let msg_bytes = &data[..msg_len];
                data = &data[msg_len.next_multiple_of(4).min(data.len())..];
                if nl.sequence_number() != seq || nl.port_number() != self.port {
                    continue; // a leftover of an earlier request
                }
                if nl.flags() & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match nl.message_type() {
                    NLMSG_NOOP => {}
                    NLMSG_OVERRUN => {
                        return Err(io::Error::other("rtnetlink: overrun"));
                    }
                    NLMSG_DONE | NLMSG_ERROR => {
                        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(msg_bytes)
                            .map(|m| m.payload)
                        {
                            Ok(NetlinkPayload::Done(done)) if done.code < 0 => {
                                return Err(io::Error::from_raw_os_error(-done.code));
                            }
                            Ok(NetlinkPayload::Error(err)) if err.code.is_some() => {
                                return Err(err.to_io());
                            }
                            Ok(NetlinkPayload::Error(_)) => continue, // an ACK
                            Ok(_) => return Ok((items, interrupted)),
                            // A `NLMSG_DONE` too short to parse still ends the dump.
                            Err(_) if nl.message_type() == NLMSG_DONE => {
                                return Ok((items, interrupted));
                            }
                            Err(e) => {
                                return Err(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    format!("rtnetlink: bad error message: {e}"),
                                ));
                            }
                        }
                    }
                    _ => {
                        // A message this crate cannot parse is skipped, not fatal: the
                        // rest of the dump still protects what it names.
                        if let Ok(NetlinkMessage {
                            payload: NetlinkPayload::InnerMessage(inner),
                            ..
                        }) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(msg_bytes)
                        {
                            items.push(inner);
                        }
                    }
                }
            }
        }
        Err(io::Error::other("rtnetlink: dump did not end"))
    }

    /// Receives one whole datagram into `self.buf` (grown to fit) and returns its length.
    fn recv_datagram(&mut self) -> io::Result<usize> {
        loop {
            let peek = recv_retry(&self.sock, &mut self.buf, libc::MSG_PEEK | libc::MSG_TRUNC)?;
            if peek > self.buf.len() {
                self.buf.resize(peek, 0);
                continue;
            }
            let n = recv_retry(&self.sock, &mut self.buf, libc::MSG_TRUNC)?;
            if n > self.buf.len() {
                return Err(io::Error::other("rtnetlink: datagram truncated"));
            }
            return Ok(n);
        }
    }
}

/// One `recv`, retried on `EINTR`; a receive timeout becomes `TimedOut`. Returns the full
/// datagram length (larger than `buf` when `MSG_TRUNC` and truncated).
fn recv_retry(sock: &Socket, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    loop {
        match sock.recv(&mut &mut buf[..], flags) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "rtnetlink: no reply from the kernel",
                ));
            }
            Err(e) => return Err(e),
        }
    }
}

fn set_recv_timeout(sock: &Socket, secs: libc::time_t) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: secs,
        tv_usec: 0,
    };
    // SAFETY: valid fd, and a pointer/length pair describing a live `timeval`.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The rtnetlink multicast groups whose messages may change the protected set.
const WATCH_GROUPS: u32 = (libc::RTMGRP_LINK
    | libc::RTMGRP_IPV4_IFADDR
    | libc::RTMGRP_IPV6_IFADDR
    | libc::RTMGRP_IPV4_ROUTE
    | libc::RTMGRP_IPV6_ROUTE) as u32;
/// Most datagrams one [`ChangeWatcher::changed`] call reads, so a flood of notifications
/// cannot hold the daemon's loop; what is left is reported by the next call.
const WATCH_MAX_DRAIN: usize = 4096;
/// Receive buffer asked for the watcher socket, so bursts (an interface with many
/// addresses going down) are not lost; a loss is reported as a change anyway.
const WATCH_RCVBUF: usize = 1 << 20;

/// Watches for changes of addresses, routes and links: a non-blocking `NETLINK_ROUTE`
/// socket subscribed to `RTMGRP_LINK`, `RTMGRP_IPV4_IFADDR`, `RTMGRP_IPV6_IFADDR`,
/// `RTMGRP_IPV4_ROUTE` and `RTMGRP_IPV6_ROUTE`. The daemon calls [`Self::changed`] from
/// its loop (or polls [`Self::as_raw_fd`] for readability) and reads the addresses and routes again
/// when it returns true.
pub struct ChangeWatcher {
    sock: Socket,
    buf: Vec<u8>,
}

impl ChangeWatcher {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind(&SocketAddr::new(0, WATCH_GROUPS))?;
        sock.set_non_blocking(true)?;
        // Best effort: a smaller buffer only makes an overflow (reported as a change)
        // likelier.
        let _ = sock.set_rx_buf_sz(WATCH_RCVBUF);
        Ok(ChangeWatcher {
            sock,
            buf: vec![0; RECV_BUF_LEN],
        })
    }

    /// Drains all pending notifications without blocking; true if there was any (or if
    /// some were lost to a full socket buffer, or the socket failed: the caller should
    /// then read the state again).
    pub fn changed(&mut self) -> bool {
        let mut any = false;
        for _ in 0..WATCH_MAX_DRAIN {
            match self
                .sock
                .recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT | libc::MSG_TRUNC)
            {
                Ok(_) => any = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return any,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ENOBUFS: notifications were dropped, so something changed.
                Err(_) => any = true,
            }
        }
        true
    }

    /// The socket, readable when a notification is pending.
    pub fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl AsRawFd for ChangeWatcher {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testns::{Netns, in_private_netns};
    use std::time::{Duration, Instant};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Read-only in the current namespace: dumps addresses and routes, changes nothing.
    #[test]
    fn dumps_in_the_current_namespace_and_watcher_never_blocks() {
        assert!(local_addresses().unwrap().iter().any(IpAddr::is_loopback));
        let _ = default_gateways().unwrap();
        let mut watcher = ChangeWatcher::open().unwrap();
        let _ = watcher.changed(); // must not block
        assert!(watcher.as_raw_fd() >= 0);
    }

    // ---- tests in a network namespace of their own (root only) ----

    fn ipcmd(ns: &Netns, args: &str) {
        let mut argv = vec!["ip"];
        argv.extend(args.split_whitespace());
        ns.run(&argv);
    }

    /// Adds a link that leads nowhere: `dummy`, or `ifb` (an equally dead end) on kernels
    /// built without the dummy driver.
    fn add_dead_end_link(ns: &Netns, name: &str) {
        if !ns.try_run(&["ip", "link", "add", name, "type", "dummy"]) {
            eprintln!("note: no dummy driver here; {name} is an ifb device");
            ipcmd(ns, &format!("link add {name} type ifb"));
        }
    }

    /// d0 (a dummy) with addresses and default routes in several tables.
    fn set_up_dummy(ns: &Netns) {
        add_dead_end_link(ns, "d0");
        for cmd in [
            "link set d0 addrgenmode none",
            "addr add 198.18.7.1/24 dev d0",
            "-6 addr add fd00:5e17::7:1/112 dev d0 nodad",
            "-6 addr add fe80::7:1/64 dev d0 nodad",
            "link set d0 up",
            "route add default via 198.18.7.254 dev d0",
            "-6 route add default via fd00:5e17::7:fe dev d0",
            "route add default via 198.18.7.253 dev d0 table 100",
            "-6 route add default via fd00:5e17::7:fd dev d0 table 1000",
            "route add default table 101 nexthop via 198.18.7.251 dev d0 nexthop via 198.18.7.252 dev d0",
            "-6 route add default table 102 nexthop via fd00:5e17::7:fb dev d0 nexthop via fd00:5e17::7:fc dev d0",
            // Not a default route: its gateway is not protected.
            "route add 198.18.99.0/24 via 198.18.7.250 dev d0",
        ] {
            ipcmd(ns, cmd);
        }
    }

    fn assert_has(got: &[IpAddr], wants: &[&str]) {
        for want in wants {
            assert!(got.contains(&ip(want)), "{want} missing from {got:?}");
        }
    }

    fn assert_lacks(got: &[IpAddr], unwanted: &[&str]) {
        for u in unwanted {
            assert!(!got.contains(&ip(u)), "{u} unexpectedly in {got:?}");
        }
    }

    /// Drains the watcher like `changed()`, describing each notification (for messages).
    fn pending(w: &mut ChangeWatcher) -> Vec<String> {
        let mut seen = Vec::new();
        for _ in 0..WATCH_MAX_DRAIN {
            let n = match w
                .sock
                .recv(&mut &mut w.buf[..], libc::MSG_DONTWAIT | libc::MSG_TRUNC)
            {
                Ok(n) => n.min(w.buf.len()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    seen.push(format!("error {e}"));
                    continue;
                }
            };
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&w.buf[..n]) {
                Ok(m) => seen.push(format!("{:?}", m.payload)),
                Err(e) => seen.push(format!("unparsed ({e})")),
            }
        }
        seen
    }

    /// Waits (at most five seconds) until linkwatch has given `dev` its operational state
    /// after `link set up` (`UNKNOWN` for a dummy or ifb device).
    fn wait_operstate_settled(ns: &Netns, dev: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while ns
            .run(&["ip", "-o", "link", "show", dev])
            .contains("state DOWN")
        {
            assert!(Instant::now() < deadline, "{dev} stays operationally down");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls `changed()` until true, for at most two seconds.
    fn wait_changed(w: &mut ChangeWatcher) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if w.changed() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn addresses_and_gateways_in_private_netns() {
        in_private_netns("rtnl::addresses_and_gateways_in_private_netns", |ns| {
            set_up_dummy(ns);
            let addrs = local_addresses().unwrap();
            // lo's and ours, link-local included
            assert_has(
                &addrs,
                &[
                    "127.0.0.1",
                    "::1",
                    "198.18.7.1",
                    "fd00:5e17::7:1",
                    "fe80::7:1",
                ],
            );
            assert_lacks(&addrs, &["198.18.7.2", "198.18.7.254"]);
            let mut gws = default_gateways().unwrap();
            gws.sort();
            gws.dedup();
            // main, table 100, table 1000, multipath 101/102; not the 198.18.99.0/24 hop
            assert_has(
                &gws,
                &[
                    "198.18.7.254",
                    "fd00:5e17::7:fe",
                    "198.18.7.253",
                    "fd00:5e17::7:fd",
                    "198.18.7.251",
                    "198.18.7.252",
                    "fd00:5e17::7:fb",
                    "fd00:5e17::7:fc",
                ],
            );
            assert_eq!(gws.len(), 8, "{gws:?}");
        });
    }

    #[test]
    fn change_watcher_in_private_netns() {
        in_private_netns("rtnl::change_watcher_in_private_netns", |ns| {
            set_up_dummy(ns);
            wait_operstate_settled(ns, "d0");
            let mut w = ChangeWatcher::open().unwrap();

            // Drain, and let the kernel's late events of the set-up land (linkwatch
            // reports d0's operational state up to a second after `link set up`): wait
            // for a quiet moment. Then: nothing changed, nothing reported.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                std::thread::sleep(Duration::from_millis(300));
                if pending(&mut w).is_empty() || Instant::now() > deadline {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
            let late = pending(&mut w);
            assert!(
                late.is_empty(),
                "change reported while nothing changed: {late:#?}"
            );

            // A new address: reported, and read again.
            ipcmd(ns, "addr add 198.18.7.2/24 dev d0");
            assert!(wait_changed(&mut w), "new address not reported");
            let got = local_addresses().unwrap();
            assert_has(&got, &["198.18.7.1", "198.18.7.2"]);
            assert!(!w.changed(), "drained, yet a change reported");

            // The fd is readable when a notification is pending.
            ipcmd(ns, "-6 route replace default via fd00:5e17::7:ee dev d0");
            let mut pfd = libc::pollfd {
                fd: w.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, 2000) };
            assert_eq!(n, 1, "watcher fd not readable after a route change");
            assert!(w.changed());
            let got = default_gateways().unwrap();
            assert_has(&got, &["fd00:5e17::7:ee"]);
            assert_lacks(&got, &["fd00:5e17::7:fe"]);

            // Removing an address and a link change are reported too.
            ipcmd(ns, "addr del 198.18.7.2/24 dev d0");
            assert!(wait_changed(&mut w), "address removal not reported");
            assert_lacks(&local_addresses().unwrap(), &["198.18.7.2"]);
            add_dead_end_link(ns, "d1");
            assert!(wait_changed(&mut w), "new link not reported");
        });
    }
}
