//! Which local ports have a service on them, read live from the kernel's socket table.
//!
//! PortSentry's "advanced" modes watch every port below a bound *except* the ones a
//! local service is using: a SYN to a listening sshd is a client, not a probe. That
//! set is not fixed at start-up: a service started after the daemon must not make its
//! clients look like scanners, and a service that stops makes its port watched again.
//!
//! [`PortUsage`] owns one `NETLINK_SOCK_DIAG` socket and, per protocol, a snapshot of
//! the kernel's table as a 65536-bit set of local ports:
//!
//! * TCP: ports with a socket in `LISTEN` state, on any address, IPv4 or IPv6;
//! * UDP: ports with any UDP socket bound to them, in any state, IPv4 or IPv6.
//!
//! # Why sock_diag
//!
//! PortSentry 1.2 found used ports by trying to `bind()` each one: that changes the
//! table it measures, and a real service starting at the same moment can lose its
//! `bind()` to the daemon's probe. An `inet_diag` dump over `NETLINK_SOCK_DIAG` (what
//! `ss` uses) only reads the table, needs no privilege, and answers for all ports in
//! one request per address family.
//!
//! # The cache rule
//!
//! Each protocol's snapshot carries the [`Instant`] taken just before its dump was
//! requested. For `in_use(proto, port, now)`, with `age = now - taken` (zero when `now`
//! is earlier than `taken`, e.g. a packet timestamped before the last read):
//!
//! 1. no snapshot yet, or `age > max_age` → read the table again, answer from it;
//! 2. else `port` is in the snapshot → `true`, no read;
//! 3. else `age > recheck_age` → read the table again (once), answer from it;
//! 4. else → `false`, no read.
//!
//! A port *not* in the snapshot is the attack case, so an answer of "free" is never
//! older than `recheck_age` (default [`DEFAULT_RECHECK_AGE`], 1 ms) unless a read fails;
//! "in use" may be up to `max_age` old (default [`DEFAULT_MAX_AGE`], 5 ms). A sweep of
//! free ports therefore costs at most one dump per `recheck_age`. A read that fails
//! leaves the previous snapshot untouched and returns the error.

use std::io;
use std::time::{Duration, Instant};

use netlink_packet_core::Parseable;
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{
    AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, SOCK_DIAG_BY_FAMILY, TCP_LISTEN,
};
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags,
};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use portsentry_engine::Proto;

use crate::netlink::{Message, NlSocket};

/// Default for how old a snapshot may be before any query re-reads it.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_millis(5);
/// Default for how old a snapshot may be before a query for a port *not* in it re-reads it.
pub const DEFAULT_RECHECK_AGE: Duration = Duration::from_millis(1);

/// A blocked read of a dump reply gives up after this long (the kernel answers at
/// once; this only guards the daemon against a wedged socket).
const RECV_TIMEOUT: Duration = Duration::from_secs(1);

/// Live view of the local ports in use, per protocol. See the module doc for the rule.
pub struct PortUsage {
    /// Its receive buffer is reused for every reply datagram.
    sock: NlSocket,
    /// Filled by a read, swapped into place only when the read succeeded.
    scratch: Box<PortSet>,
    tcp: Snapshot,
    udp: Snapshot,
    max_age: Duration,
    recheck_age: Duration,
}

struct Snapshot {
    ports: Box<PortSet>,
    taken: Option<Instant>,
}

/// One bit per port number.
///
/// Not `portsentry_engine::ports::PortSet`: that one has no `clear`, so emptying the
/// scratch set before every dump would mean a fresh 8 KiB allocation per read, and a
/// read may happen every millisecond under a sweep (the cache rule above); and it
/// drops port 0, which this table may hold. This one is cleared in place.
struct PortSet([u64; 1024]);

impl PortSet {
    fn new() -> Box<Self> {
        Box::new(PortSet([0; 1024]))
    }

    fn clear(&mut self) {
        self.0.fill(0);
    }

    fn insert(&mut self, port: u16) {
        self.0[usize::from(port >> 6)] |= 1 << (port & 63);
    }

    fn contains(&self, port: u16) -> bool {
        self.0[usize::from(port >> 6)] & (1 << (port & 63)) != 0
    }

    fn to_vec(&self) -> Vec<u16> {
        (0..=u16::MAX).filter(|&p| self.contains(p)).collect()
    }
}

impl PortUsage {
    /// Opens the `NETLINK_SOCK_DIAG` socket, with the default ages
    /// ([`DEFAULT_MAX_AGE`], [`DEFAULT_RECHECK_AGE`]). Reads nothing yet: the first
    /// query for each protocol does.
    pub fn new() -> io::Result<Self> {
        Ok(PortUsage {
            sock: open_socket()?,
            scratch: PortSet::new(),
            tcp: Snapshot {
                ports: PortSet::new(),
                taken: None,
            },
            udp: Snapshot {
                ports: PortSet::new(),
                taken: None,
            },
            max_age: DEFAULT_MAX_AGE,
            recheck_age: DEFAULT_RECHECK_AGE,
        })
    }

    /// Sets the two ages of the cache rule (see the module doc): any answer is re-read
    /// when the snapshot is older than `max_age`; an answer of "not in use" when it is
    /// older than `recheck_age`.
    pub fn with_ages(mut self, max_age: Duration, recheck_age: Duration) -> Self {
        self.max_age = max_age;
        self.recheck_age = recheck_age;
        self
    }

    /// Is `port` in use locally for `proto`? TCP: a socket in `LISTEN` state on that
    /// local port (any address, IPv4 or IPv6). UDP: any UDP socket bound to that local
    /// port (any state, IPv4 or IPv6).
    ///
    /// `now` is the caller's clock (typically when the probe was seen). Answers from the
    /// protocol's snapshot, re-reading the kernel's table when the snapshot is older
    /// than `max_age`, or when `port` is not in it and it is older than `recheck_age`
    /// (the exact rule is in the module doc). Allocates nothing unless a read fails.
    pub fn in_use(&mut self, proto: Proto, port: u16, now: Instant) -> io::Result<bool> {
        let (max_age, recheck_age) = (self.max_age, self.recheck_age);
        let snap = self.snapshot(proto);
        let fresh_enough = match snap.taken {
            None => false,
            Some(taken) => {
                let age = now.saturating_duration_since(taken);
                age <= max_age && (snap.ports.contains(port) || age <= recheck_age)
            }
        };
        if !fresh_enough {
            self.refresh(proto)?;
        }
        Ok(self.snapshot(proto).ports.contains(port))
    }

    /// Reads the table now and returns every port in use for `proto`, ascending (for
    /// start-up logging: "Ignored TCP port: N" lines). Also refreshes the cache.
    pub fn listening_ports(&mut self, proto: Proto) -> io::Result<Vec<u16>> {
        self.refresh(proto)?;
        Ok(self.snapshot(proto).ports.to_vec())
    }

    fn snapshot(&self, proto: Proto) -> &Snapshot {
        match proto {
            Proto::Tcp => &self.tcp,
            Proto::Udp => &self.udp,
        }
    }

    /// Dumps `proto`'s sockets for both address families into `scratch`, then swaps it
    /// in. On failure the old snapshot stays and the socket is replaced, since a dump
    /// abandoned half-way would leave its tail queued (and the kernel refuses a new
    /// dump on a socket with one still running).
    fn refresh(&mut self, proto: Proto) -> io::Result<()> {
        let (protocol, states, want_state) = match proto {
            Proto::Tcp => (IPPROTO_TCP, StateFlags::LISTEN, Some(TCP_LISTEN)),
            Proto::Udp => (IPPROTO_UDP, StateFlags::from_bits_retain(u32::MAX), None),
        };
        let taken = Instant::now();
        self.scratch.clear();
        let mut result = Ok(());
        for family in [AF_INET, AF_INET6] {
            let query = Query {
                family,
                protocol,
                states: states.clone(),
                want_state,
            };
            result = query.run(&mut self.sock, &mut self.scratch);
            if result.is_err() {
                break;
            }
        }
        if let Err(e) = result {
            if let Ok(sock) = open_socket() {
                self.sock = sock;
            }
            return Err(e);
        }
        let snap = match proto {
            Proto::Tcp => &mut self.tcp,
            Proto::Udp => &mut self.udp,
        };
        std::mem::swap(&mut snap.ports, &mut self.scratch);
        snap.taken = Some(taken);
        Ok(())
    }
}

impl PortUsage {
    /// Remote addresses of this host's TCP connections that completed a handshake
    /// (established, or closing: FIN_WAIT, CLOSE_WAIT, LAST_ACK, CLOSING, TIME_WAIT),
    /// both families, loopback and unspecified left out. A half-open request (SYN_RECV)
    /// is not one: its source may be forged. Known peers of the packet path.
    pub fn connected_peers(&mut self) -> io::Result<Vec<std::net::IpAddr>> {
        let states = StateFlags::ESTABLISHED
            | StateFlags::FIN_WAIT1
            | StateFlags::FIN_WAIT2
            | StateFlags::TIME_WAIT
            | StateFlags::CLOSE_WAIT
            | StateFlags::LAST_ACK
            | StateFlags::CLOSING;
        let mut peers = Vec::new();
        for family in [AF_INET, AF_INET6] {
            let socket_id = if family == AF_INET6 {
                SocketId::new_v6()
            } else {
                SocketId::new_v4()
            };
            let request = SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: states.clone(),
                socket_id,
            });
            let result = self.sock.dump_once(request, |m| {
                if m.kind != SOCK_DIAG_BY_FAMILY {
                    return Err(bad(format!(
                        "sock_diag: unexpected message type {}",
                        m.kind
                    )));
                }
                let h = InetResponseHeader::parse(m.payload()).map_err(bad)?;
                let ip = h.socket_id.destination_address;
                if h.family == family && !ip.is_loopback() && !ip.is_unspecified() {
                    peers.push(ip);
                }
                Ok(())
            });
            if let Err(e) = result {
                if let Ok(sock) = open_socket() {
                    self.sock = sock;
                }
                return Err(e);
            }
        }
        Ok(peers)
    }
}

fn open_socket() -> io::Result<NlSocket> {
    let sock = NlSocket::open(NETLINK_SOCK_DIAG, "sock_diag")?;
    sock.set_recv_timeout(RECV_TIMEOUT)?;
    Ok(sock)
}

/// One `inet_diag_req_v2` dump: one address family, one protocol.
struct Query {
    family: u8,
    protocol: u8,
    states: StateFlags,
    /// Count only sockets in this state (the kernel filters by `states` already; this
    /// is a second check).
    want_state: Option<u8>,
}

impl Query {
    /// Runs the dump to its end, putting the local port of each matching socket into
    /// `into`. Not retried when interrupted: `inet_diag` does not mark its dumps.
    fn run(&self, sock: &mut NlSocket, into: &mut PortSet) -> io::Result<()> {
        let socket_id = if self.family == AF_INET6 {
            SocketId::new_v6()
        } else {
            SocketId::new_v4()
        };
        let request = SockDiagMessage::InetRequest(InetRequest {
            family: self.family,
            protocol: self.protocol,
            extensions: ExtensionFlags::empty(),
            states: self.states.clone(),
            socket_id,
        });
        sock.dump_once(request, |m| self.add_socket(m, into))
            .map(drop)
    }

    /// One message of the dump: a socket of ours is counted, anything else is an error.
    fn add_socket(&self, m: &Message<'_>, into: &mut PortSet) -> io::Result<()> {
        if m.kind != SOCK_DIAG_BY_FAMILY {
            return Err(bad(format!(
                "sock_diag: unexpected message type {}",
                m.kind
            )));
        }
        let h = InetResponseHeader::parse(m.payload()).map_err(bad)?;
        if h.family == self.family && self.want_state.is_none_or(|s| s == h.state) {
            into.insert(h.socket_id.source_port);
        }
        Ok(())
    }
}

fn bad(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream, UdpSocket};

    /// A `now` past `max_age`, so the next query re-reads whatever the snapshot says.
    fn later() -> Instant {
        Instant::now() + DEFAULT_MAX_AGE + Duration::from_millis(10)
    }

    #[test]
    fn tcp_listener_v4_is_in_use_until_dropped() {
        let mut usage = PortUsage::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(usage.in_use(Proto::Tcp, port, Instant::now()).unwrap());
        assert!(usage.listening_ports(Proto::Tcp).unwrap().contains(&port));

        drop(listener);
        // Still in the snapshot, which is not older than max_age yet: cached answer.
        let taken = usage.tcp.taken.unwrap();
        assert!(usage.in_use(Proto::Tcp, port, taken).unwrap());
        // Aged past max_age: re-read, gone.
        assert!(!usage.in_use(Proto::Tcp, port, later()).unwrap());
        assert!(!usage.listening_ports(Proto::Tcp).unwrap().contains(&port));
    }

    #[test]
    fn tcp_listener_v6_is_in_use_until_dropped() {
        let Ok(listener) = TcpListener::bind("[::1]:0") else {
            eprintln!("no IPv6 loopback here; skipping");
            return;
        };
        let mut usage = PortUsage::new().unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(usage.in_use(Proto::Tcp, port, Instant::now()).unwrap());
        drop(listener);
        assert!(!usage.in_use(Proto::Tcp, port, later()).unwrap());
    }

    #[test]
    fn tcp_client_port_is_not_listening() {
        let mut usage = PortUsage::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server_port = listener.local_addr().unwrap().port();
        let client = TcpStream::connect(("127.0.0.1", server_port)).unwrap();
        let (_accepted, _) = listener.accept().unwrap();
        let client_port = client.local_addr().unwrap().port();

        assert!(
            usage
                .in_use(Proto::Tcp, server_port, Instant::now())
                .unwrap()
        );
        assert!(!usage.in_use(Proto::Tcp, client_port, later()).unwrap());
        // A TCP port says nothing about UDP.
        assert!(!usage.in_use(Proto::Udp, server_port, later()).unwrap());
    }

    #[test]
    fn connected_peers_are_the_other_ends_of_tcp_connections() {
        let mut usage = PortUsage::new().unwrap();
        // Loopback connections are left out (a host does not scan itself).
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_accepted, _) = listener.accept().unwrap();
        let peers = usage.connected_peers().unwrap();
        assert!(peers.iter().all(|p| !p.is_loopback()), "{peers:?}");
    }

    #[test]
    fn udp_socket_is_in_use_until_dropped() {
        let mut usage = PortUsage::new().unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        assert!(usage.in_use(Proto::Udp, port, Instant::now()).unwrap());
        assert!(usage.listening_ports(Proto::Udp).unwrap().contains(&port));
        drop(sock);
        assert!(!usage.in_use(Proto::Udp, port, later()).unwrap());

        if let Ok(sock6) = UdpSocket::bind("[::1]:0") {
            let port6 = sock6.local_addr().unwrap().port();
            assert!(usage.in_use(Proto::Udp, port6, later()).unwrap());
            drop(sock6);
            assert!(!usage.in_use(Proto::Udp, port6, later()).unwrap());
        }
    }

    #[test]
    fn unused_port_is_free() {
        let mut usage = PortUsage::new().unwrap();
        // An OS-assigned port that was just released: nobody else holds it.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(!usage.in_use(Proto::Tcp, port, Instant::now()).unwrap());
        assert!(!usage.in_use(Proto::Udp, port, Instant::now()).unwrap());
    }

    #[test]
    fn miss_rechecks_after_recheck_age() {
        let mut usage = PortUsage::new()
            .unwrap()
            .with_ages(Duration::from_secs(3600), Duration::from_millis(1));
        assert!(usage.listening_ports(Proto::Tcp).is_ok());
        let taken = usage.tcp.taken.unwrap();
        // A listener that appears after the snapshot.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Within recheck_age: the snapshot's "free" stands.
        assert!(!usage.in_use(Proto::Tcp, port, taken).unwrap());
        // Past recheck_age (but well within max_age): a miss re-reads once.
        let now = taken + Duration::from_millis(2);
        assert!(usage.in_use(Proto::Tcp, port, now).unwrap());
        assert!(usage.tcp.taken.unwrap() > taken);
    }

    #[test]
    fn multi_part_dump_sees_every_listener() {
        // Enough sockets that the kernel must split the dump over several datagrams.
        let listeners: Vec<TcpListener> = (0..150)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut usage = PortUsage::new().unwrap();
        let ports = usage.listening_ports(Proto::Tcp).unwrap();
        for l in &listeners {
            assert!(ports.contains(&l.local_addr().unwrap().port()));
        }
        // Twice on the same socket: the first dump was fully drained.
        let again = usage.listening_ports(Proto::Tcp).unwrap();
        for l in &listeners {
            assert!(again.contains(&l.local_addr().unwrap().port()));
        }
    }
}
