//! Bound TCP and UDP sockets on trap ports, behind one epoll set: the plumbing of the
//! classic `-tcp`/`-udp` modes and of the handshake trap ports. No policy: which ports
//! to bind, what a connection or datagram means, and what to answer are the daemon's.
//!
//! Invariants:
//! - every socket is non-blocking and close-on-exec, so a reload's `execve` closes them
//!   and no call here can stall the capture loop;
//! - one socket per port serves IPv4 and IPv6 (`[::]` with `IPV6_V6ONLY` off), or IPv4
//!   only when this host has no IPv6; peers are reported as plain IPv4, never as
//!   IPv4-mapped IPv6;
//! - `SO_REUSEADDR` is set on TCP only: there it lets a restart bind again over its own
//!   TIME_WAIT connections while a port another program listens on still fails with
//!   `EADDRINUSE`; on UDP it would let us share (and steal datagrams of) a port another
//!   program bound with it, so it is never set there; `SO_REUSEPORT` never is;
//! - the epoll set is level-triggered: a socket not drained in one turn is reported
//!   again in the next, so callers can bound their work per turn;
//! - one spare descriptor is held in reserve: when `accept` fails for lack of
//!   descriptors it is closed so the connection can still be taken (and its peer
//!   reported), then opened again; without it a full queue would stay readable and
//!   the loop would spin on it.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use portsentry_engine::Proto;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netlink::{self, wait_readable};

/// Index of a bound socket in its [`Listeners`].
pub type ListenerId = usize;

struct Bound {
    socket: Socket,
    proto: Proto,
    port: u16,
}

/// A completed TCP handshake, taken from the accept queue.
pub struct Accepted {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    socket: Socket,
}

impl Accepted {
    /// Write `bytes` without waiting (whatever fits in the socket buffer) and close,
    /// after discarding what the peer already sent: closing with unread data would make
    /// the kernel answer with a reset and drop the bytes just written.
    pub fn reply_and_close(self, bytes: &[u8]) {
        if !bytes.is_empty() {
            let _ = self
                .socket
                .send_with_flags(bytes, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
        }
        let mut sink = [MaybeUninit::<u8>::uninit(); 1024];
        let _ = self.socket.recv_with_flags(&mut sink, libc::MSG_DONTWAIT);
        // Dropping the socket closes it: FIN after the banner.
    }
}

/// One datagram's sender and size (its contents are not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    pub peer: SocketAddr,
    pub len: usize,
}

/// Bound trap sockets and the epoll set that watches them all.
pub struct Listeners {
    epoll: OwnedFd,
    bound: Vec<Bound>,
    /// Given up when `accept` runs out of descriptors (see the module doc).
    spare: Option<std::fs::File>,
    /// Whether `socket(AF_INET6)` works here; false: IPv4 sockets only.
    ipv6: bool,
}

impl Listeners {
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 with a valid flag; the fd is owned below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by the kernel and is owned by nobody else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let ipv6 = Socket::new(Domain::IPV6, Type::DGRAM, None).is_ok();
        Ok(Listeners {
            epoll,
            bound: Vec::new(),
            spare: std::fs::File::open("/dev/null").ok(),
            ipv6,
        })
    }

    /// Number of bound sockets.
    pub fn len(&self) -> usize {
        self.bound.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bound.is_empty()
    }

    /// Bind `proto` port `port` on every local address (TCP: listen with `backlog`).
    /// `ErrorKind::AddrInUse`: another program has the port.
    pub fn bind(&mut self, proto: Proto, port: u16, backlog: i32) -> io::Result<ListenerId> {
        let socket = self.open(proto, port, backlog)?;
        let id = self.bound.len();
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: id as u64,
        };
        // SAFETY: both fds are valid; event is a valid epoll_event.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                socket.as_raw_fd(),
                &mut event,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.bound.push(Bound {
            socket,
            proto,
            port,
        });
        Ok(id)
    }

    fn open(&self, proto: Proto, port: u16, backlog: i32) -> io::Result<Socket> {
        let (ty, protocol) = match proto {
            Proto::Tcp => (Type::STREAM, Protocol::TCP),
            Proto::Udp => (Type::DGRAM, Protocol::UDP),
        };
        let (domain, addr) = if self.ipv6 {
            (
                Domain::IPV6,
                SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0)),
            )
        } else {
            (
                Domain::IPV4,
                SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)),
            )
        };
        let socket = Socket::new(domain, ty, Some(protocol))?;
        socket.set_nonblocking(true)?;
        if self.ipv6 {
            socket.set_only_v6(false)?;
        }
        if proto == Proto::Tcp {
            socket.set_reuse_address(true)?;
        }
        socket.bind(&SockAddr::from(addr))?;
        if proto == Proto::Tcp {
            socket.listen(backlog)?;
        }
        Ok(socket)
    }

    /// The protocol and port of a bound socket.
    pub fn port(&self, id: ListenerId) -> Option<(Proto, u16)> {
        self.bound.get(id).map(|b| (b.proto, b.port))
    }

    /// Wait up to `timeout` until some socket has work.
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        wait_readable(self.epoll.as_fd(), timeout)
    }

    /// The sockets with work now (at most `max`), without waiting.
    pub fn ready(&self, max: usize, out: &mut Vec<ListenerId>) -> io::Result<()> {
        const EMPTY: libc::epoll_event = libc::epoll_event { events: 0, u64: 0 };
        let mut events = [EMPTY; 64];
        let want = max.min(events.len());
        if want == 0 {
            return Ok(());
        }
        // SAFETY: events has room for `want` entries; timeout 0 never blocks.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                want as libc::c_int,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(e);
        }
        out.extend(events[..n as usize].iter().map(|e| e.u64 as ListenerId));
        Ok(())
    }

    /// Take one completed connection from a TCP socket; `None` when its queue is empty.
    /// A connection the peer reset while it waited in the queue is skipped.
    pub fn accept(&mut self, id: ListenerId) -> io::Result<Option<Accepted>> {
        if self.spare.is_none() {
            self.spare = std::fs::File::open("/dev/null").ok();
        }
        let Some(b) = self.bound.get(id).filter(|b| b.proto == Proto::Tcp) else {
            return Ok(None);
        };
        loop {
            match b.socket.accept() {
                Ok((socket, peer)) => {
                    let (Some(peer), Some(local)) = (
                        peer.as_socket(),
                        socket.local_addr().ok().and_then(|a| a.as_socket()),
                    ) else {
                        continue;
                    };
                    return Ok(Some(Accepted {
                        peer: plain(peer),
                        local: plain(local),
                        socket,
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The peer gave up before we took it (ECONNABORTED): nothing to report.
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
                // Out of descriptors: free the spare and take the connection with it.
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
                        && self.spare.take().is_some() =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Take one datagram from a UDP socket (its contents are discarded); `None` when
    /// none is queued.
    pub fn recv(&self, id: ListenerId) -> io::Result<Option<Datagram>> {
        let Some(b) = self.bound.get(id).filter(|b| b.proto == Proto::Udp) else {
            return Ok(None);
        };
        let mut buf = [MaybeUninit::<u8>::uninit(); 64];
        loop {
            match b.socket.recv_from(&mut buf) {
                Ok((len, peer)) => {
                    let Some(peer) = peer.as_socket() else {
                        continue;
                    };
                    return Ok(Some(Datagram {
                        peer: plain(peer),
                        len,
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An ICMP error for an earlier reply of ours: not a datagram.
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Send one datagram from a UDP socket without waiting.
    pub fn send_to(&self, id: ListenerId, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        let Some(b) = self.bound.get(id).filter(|b| b.proto == Proto::Udp) else {
            return Ok(());
        };
        // A dual-stack socket sends to IPv4 peers through their mapped address.
        let to = match (to, self.ipv6) {
            (SocketAddr::V4(v4), true) => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            _ => to,
        };
        b.socket
            .send_to(bytes, &SockAddr::from(to))
            .map(|_| ())
            .or_else(|e| match e.kind() {
                io::ErrorKind::WouldBlock => Ok(()),
                _ => Err(e),
            })
    }
}

impl AsFd for Listeners {
    /// The epoll set: readable when some bound socket has work.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}

/// A socket address with an IPv4-mapped IPv6 address as the IPv4 address it is.
fn plain(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// Wait up to `timeout` until any of `fds` is readable (the capture loop waits on all
/// its probe sources at once). `Ok(false)`: none yet, or a signal came.
pub fn wait_any(fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<bool> {
    netlink::wait_any(fds, timeout)
}

/// What [`raise_open_files`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit now in force.
    pub soft: u64,
    /// The hard limit now in force.
    pub hard: u64,
}

/// Raise `RLIMIT_NOFILE` so that `wanted` descriptors can be open: the soft limit up
/// to `wanted`, and the hard limit too where we may (root with CAP_SYS_RESOURCE). A
/// hard limit we may not raise is kept and the soft limit goes up to it; the result
/// says what is in force. Never lowers a limit.
pub fn raise_open_files(wanted: u64) -> io::Result<OpenFiles> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid rlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // rlim_t is u64 on Linux.
    let (soft, hard): (u64, u64) = (lim.rlim_cur, lim.rlim_max);
    if soft >= wanted {
        return Ok(OpenFiles { soft, hard });
    }
    let set = |soft: u64, hard: u64| {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: lim is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(OpenFiles { soft, hard })
        }
    };
    if hard >= wanted {
        return set(wanted, hard);
    }
    set(wanted, wanted).or_else(|_| set(hard, hard))
}

#[cfg(test)]
mod tests {
    //! Sockets on loopback, each test in a private network namespace of its own
    //! (`testns`): nothing touches the host's own addresses.
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream, UdpSocket};

    use crate::testns;

    /// A free TCP port on loopback, found by binding port 0.
    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn ready_ids(l: &Listeners) -> Vec<ListenerId> {
        assert!(
            l.wait(Duration::from_secs(5)).unwrap(),
            "nothing became ready"
        );
        let mut ids = Vec::new();
        l.ready(16, &mut ids).unwrap();
        ids
    }

    #[test]
    fn tcp_connection_is_accepted_and_gets_the_reply() {
        testns::in_private_netns("tcp_connection_is_accepted_and_gets_the_reply", |_ns| {
            let mut l = Listeners::new().unwrap();
            let port = free_port();
            let id = l.bind(Proto::Tcp, port, 8).unwrap();
            assert_eq!(l.port(id), Some((Proto::Tcp, port)));
            assert!(!l.wait(Duration::from_millis(1)).unwrap());
            let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
            assert_eq!(ready_ids(&l), [id]);
            let conn = l.accept(id).unwrap().expect("a connection");
            assert_eq!(
                conn.peer,
                client.local_addr().unwrap(),
                "peer as plain IPv4"
            );
            assert_eq!(conn.local.port(), port);
            conn.reply_and_close(b"go away");
            let mut got = String::new();
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            client.read_to_string(&mut got).unwrap();
            assert_eq!(got, "go away");
            assert!(l.accept(id).unwrap().is_none(), "queue drained");
        });
    }

    #[test]
    fn reply_arrives_even_when_the_peer_sent_data_first() {
        testns::in_private_netns("reply_arrives_even_when_the_peer_sent_data_first", |_ns| {
            let mut l = Listeners::new().unwrap();
            let port = free_port();
            let id = l.bind(Proto::Tcp, port, 8).unwrap();
            let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
            client.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            ready_ids(&l);
            // Let the request arrive before we accept.
            std::thread::sleep(Duration::from_millis(50));
            l.accept(id).unwrap().unwrap().reply_and_close(b"banner");
            let mut got = String::new();
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            client.read_to_string(&mut got).unwrap();
            assert_eq!(got, "banner");
        });
    }

    #[test]
    fn a_port_another_program_listens_on_is_in_use() {
        testns::in_private_netns("a_port_another_program_listens_on_is_in_use", |_ns| {
            let other = TcpListener::bind("0.0.0.0:0").unwrap();
            let port = other.local_addr().unwrap().port();
            let mut l = Listeners::new().unwrap();
            let err = l.bind(Proto::Tcp, port, 8).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
            assert!(l.is_empty());
            // UDP too, and we never share it (no SO_REUSEADDR on our side).
            let other = UdpSocket::bind("0.0.0.0:0").unwrap();
            let port = other.local_addr().unwrap().port();
            let err = l.bind(Proto::Udp, port, 0).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        });
    }

    #[test]
    fn udp_datagram_is_seen_and_answered() {
        testns::in_private_netns("udp_datagram_is_seen_and_answered", |_ns| {
            let mut l = Listeners::new().unwrap();
            let port = UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let id = l.bind(Proto::Udp, port, 0).unwrap();
            let client = UdpSocket::bind("127.0.0.1:0").unwrap();
            client.send_to(b"hello", ("127.0.0.1", port)).unwrap();
            assert_eq!(ready_ids(&l), [id]);
            let d = l.recv(id).unwrap().expect("a datagram");
            assert_eq!(d.peer, client.local_addr().unwrap());
            assert!(l.recv(id).unwrap().is_none());
            l.send_to(id, d.peer, b"banner").unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut buf = [0u8; 16];
            let (n, _) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"banner");
        });
    }

    #[test]
    fn open_file_limit_is_never_lowered() {
        let now = raise_open_files(0).unwrap();
        assert!(now.soft <= now.hard);
        let again = raise_open_files(now.soft).unwrap();
        assert_eq!(again, now);
    }
}
