//! NETLINK_ROUTE: this host's addresses and the next hops of its default routes (dumps
//! of `RTM_GETADDR` and `RTM_GETROUTE`), and [`ChangeWatcher`], which listens to the
//! rtnetlink multicast groups so that the caller knows when to read them again. No
//! policy: what is protected is decided by the daemon.
//!
//! `Rtnl` is the crate's one synchronous rtnetlink client (over [`crate::netlink`]):
//! these dumps, and the route requests with ACK and route dumps of the route ban
//! backend ([`crate::backend::RouteBackend`]).

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteVia};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;

use crate::netlink::NlSocket;

/// Every address configured on this host (all interfaces, IPv4 and IPv6, link-local
/// included, and the peer of a point-to-point address); unsorted, may repeat.
pub fn local_addresses() -> io::Result<Vec<IpAddr>> {
    Rtnl::open()?.local_addresses()
}

/// The next hops of the default routes of every routing table, IPv4 and IPv6; unsorted,
/// may repeat.
pub fn default_gateways() -> io::Result<Vec<IpAddr>> {
    Rtnl::open()?.default_gateways()
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

/// How long one receive of an answer may wait for the kernel.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// The protocol's name in error messages.
const PROTO: &str = "rtnetlink";

/// The one synchronous `NETLINK_ROUTE` client of this crate: dumps (addresses, routes)
/// and requests with an ACK (the route ban backend's adds and deletes). Acts on the
/// network namespace of the thread that opened it.
pub(crate) struct Rtnl {
    sock: NlSocket,
}

impl Rtnl {
    pub(crate) fn open() -> io::Result<Self> {
        let sock = NlSocket::open(NETLINK_ROUTE, PROTO)?;
        // Errors echo only the header of our request, not all of it.
        sock.socket().set_cap_ack(true)?;
        sock.set_recv_timeout(RECV_TIMEOUT)?;
        Ok(Rtnl { sock })
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
            for route in self.routes(family)? {
                gateways_of(&route, &mut out);
            }
        }
        Ok(out)
    }

    /// Every route of `family`, of every table.
    pub(crate) fn routes(&mut self, family: AddressFamily) -> io::Result<Vec<RouteMessage>> {
        let mut request = RouteMessage::default();
        request.header.address_family = family;
        let msgs = self.dump(RouteNetlinkMessage::GetRoute(request))?;
        Ok(msgs
            .into_iter()
            .filter_map(|msg| match msg {
                RouteNetlinkMessage::NewRoute(route) => Some(route),
                _ => None,
            })
            .collect())
    }

    /// Sends one request with `NLM_F_ACK` (plus `flags`) and waits for its ACK; a NACK is
    /// the kernel's errno.
    pub(crate) fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.sock.request(msg, flags, |_| Ok(()))
    }

    /// Runs one dump request to its end (restarted a bounded number of times while the
    /// kernel says the tables changed under it). A message this crate cannot parse is
    /// skipped, not fatal: the rest of the dump still protects what it names.
    fn dump(&mut self, request: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.sock.dump(
            request,
            |m| match NetlinkMessage::<RouteNetlinkMessage>::deserialize(m.bytes) {
                Ok(NetlinkMessage {
                    payload: NetlinkPayload::InnerMessage(inner),
                    ..
                }) => Some(inner),
                _ => None,
            },
        )
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
/// The watcher only counts notifications, so a truncated one is as good as a whole one.
const WATCH_BUF_LEN: usize = 64 * 1024;

/// Watches for changes of addresses, routes and links: a non-blocking `NETLINK_ROUTE`
/// socket subscribed to `RTMGRP_LINK`, `RTMGRP_IPV4_IFADDR`, `RTMGRP_IPV6_IFADDR`,
/// `RTMGRP_IPV4_ROUTE` and `RTMGRP_IPV6_ROUTE`. The daemon calls [`Self::changed`] from
/// its loop (or polls [`Self::as_raw_fd`] for readability) and reads the addresses and routes again
/// when it returns true.
pub struct ChangeWatcher {
    sock: NlSocket,
    buf: Vec<u8>,
}

impl ChangeWatcher {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        let sock = NlSocket::open_groups(NETLINK_ROUTE, PROTO, WATCH_GROUPS)?;
        sock.socket().set_non_blocking(true)?;
        // Best effort: a smaller buffer only makes an overflow (reported as a change)
        // likelier.
        sock.set_recv_buffer(WATCH_RCVBUF);
        Ok(ChangeWatcher {
            sock,
            buf: vec![0; WATCH_BUF_LEN],
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
                .recv(&mut self.buf, libc::MSG_DONTWAIT | libc::MSG_TRUNC)
            {
                Ok(_) => any = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return any,
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
                .recv(&mut w.buf, libc::MSG_DONTWAIT | libc::MSG_TRUNC)
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
