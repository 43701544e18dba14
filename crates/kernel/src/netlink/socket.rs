//! [`NlSocket`]: one netlink socket of one protocol, with the exchanges every client of
//! this crate makes: send a request, receive whole datagrams, wait for an ACK, run a
//! dump to its `NLMSG_DONE` (optionally again while the kernel marks it interrupted).
//!
//! Requests are built by the packet crates (`netlink-packet-route`, `-sock-diag`,
//! `-netfilter`); replies are walked in place with [`Messages`] and handed to the
//! caller as [`Message`]s, so that each client parses only what it keeps.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP,
    NLMSG_OVERRUN, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_sys::{Socket, SocketAddr};

use super::fd;
use super::message::{Message, Messages};

/// Initial receive buffer; [`NlSocket::recv_datagram`] grows it to fit a datagram.
const RECV_BUF_LEN: usize = 64 * 1024;
/// How often a dump the kernel marks as interrupted (`NLM_F_DUMP_INTR`: the tables
/// changed while it ran) is started again before its last result is used as it is.
const DUMP_ATTEMPTS: usize = 4;
/// Upper bound of datagrams read for one answer (a dump's datagrams hold many messages
/// each), so a kernel that never ends an answer cannot hold the caller forever.
const MAX_DATAGRAMS: usize = 1 << 20;

/// A netlink socket of one protocol, named in every error it returns.
pub(crate) struct NlSocket {
    sock: Socket,
    /// The protocol's name for messages: `rtnetlink`, `sock_diag`, `nftables`, `NFLOG`.
    proto: &'static str,
    /// Our port id: the kernel addresses its answers to it.
    port: u32,
    seq: u32,
    /// Receive buffer, reused and grown to fit.
    buf: Vec<u8>,
    /// Send buffer for [`Self::send_request`], reused.
    out: Vec<u8>,
}

impl NlSocket {
    /// A socket of `protocol` bound to a port the kernel picks and connected to the
    /// kernel, in the calling thread's network namespace.
    pub fn open(protocol: isize, proto: &'static str) -> io::Result<Self> {
        let mut sock = Socket::new(protocol)?;
        let port = sock.bind_auto()?.port_number();
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Self::with(sock, proto, port))
    }

    /// A socket of `protocol` subscribed to the multicast `groups` (a listener: it sends
    /// nothing, so its port is left to the kernel and not recorded).
    pub fn open_groups(protocol: isize, proto: &'static str, groups: u32) -> io::Result<Self> {
        let mut sock = Socket::new(protocol)?;
        sock.bind(&SocketAddr::new(0, groups))?;
        Ok(Self::with(sock, proto, 0))
    }

    fn with(sock: Socket, proto: &'static str, port: u32) -> Self {
        NlSocket {
            sock,
            proto,
            port,
            seq: 0,
            buf: vec![0; RECV_BUF_LEN],
            out: Vec::new(),
        }
    }

    /// The socket itself, for the protocol options `netlink-sys` sets (`NETLINK_CAP_ACK`,
    /// `NETLINK_EXT_ACK`, non-blocking mode).
    pub fn socket(&self) -> &Socket {
        &self.sock
    }

    /// `SO_RCVTIMEO`: a blocking receive gives up after `d` with `TimedOut`.
    pub fn set_recv_timeout(&self, d: Duration) -> io::Result<()> {
        fd::set_recv_timeout(self.as_fd(), d)
    }

    /// Best effort `SO_RCVBUF`.
    pub fn set_recv_buffer(&self, bytes: usize) {
        fd::set_recv_buffer(self.as_fd(), bytes);
    }

    /// Best effort `SO_RCVBUFFORCE`, else `SO_RCVBUF`.
    pub fn force_recv_buffer(&self, bytes: usize) {
        fd::force_recv_buffer(self.as_fd(), bytes);
    }

    /// Best effort `SO_SNDBUFFORCE`, else `SO_SNDBUF`; the size then in force.
    pub fn force_send_buffer(&self, bytes: usize) -> usize {
        fd::force_send_buffer(self.as_fd(), bytes)
    }

    /// Makes the next request's sequence numbers start after `seq`.
    pub fn set_seq(&mut self, seq: u32) {
        self.seq = seq;
    }

    /// A fresh sequence number for a request.
    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `bytes` as one datagram, retried on `EINTR`; a short send is an error.
    pub fn send(&self, bytes: &[u8]) -> io::Result<()> {
        loop {
            match self.sock.send(bytes, 0) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::other(format!(
                        "{}: sent {n} of {} bytes",
                        self.proto,
                        bytes.len()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// One `recv` into `buf`, retried on `EINTR`. Returns the datagram's full length
    /// (larger than `buf` when `flags` has `MSG_TRUNC` and it did not fit). A blocking
    /// receive that runs into the receive timeout is `TimedOut`; with `MSG_DONTWAIT` an
    /// empty queue stays `WouldBlock`.
    pub fn recv(&self, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
        loop {
            match self.sock.recv(&mut &mut buf[..], flags) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock && flags & libc::MSG_DONTWAIT == 0 =>
                {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{}: no answer from the kernel", self.proto),
                    ));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Receives one whole datagram into the socket's buffer, grown to fit (peeked with
    /// `MSG_PEEK | MSG_TRUNC` first), and returns it. `flags` may add `MSG_DONTWAIT`.
    pub fn recv_datagram(&mut self, flags: libc::c_int) -> io::Result<&[u8]> {
        let peek = libc::MSG_PEEK | libc::MSG_TRUNC | flags;
        loop {
            let len = self.recv_into_buf(peek)?;
            if len > self.buf.len() {
                self.buf.resize(len, 0);
                continue;
            }
            let n = self.recv_into_buf(libc::MSG_TRUNC | flags)?;
            if n > self.buf.len() {
                return Err(io::Error::other(format!(
                    "{}: datagram truncated",
                    self.proto
                )));
            }
            return Ok(&self.buf[..n]);
        }
    }

    fn recv_into_buf(&mut self, flags: libc::c_int) -> io::Result<usize> {
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.recv(&mut buf, flags);
        self.buf = buf;
        result
    }

    /// Sends `inner` as a request (`NLM_F_REQUEST | flags`) with a fresh sequence
    /// number, which it returns.
    pub fn send_request<I: NetlinkSerializable>(
        &mut self,
        inner: I,
        flags: u16,
    ) -> io::Result<u32> {
        let seq = self.next_seq();
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(inner));
        packet.finalize();
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        out.resize(packet.buffer_len(), 0);
        packet.serialize(&mut out);
        let sent = self.send(&out);
        self.out = out;
        sent.map(|()| seq)
    }

    /// Sends one request with `NLM_F_ACK` and waits for its ACK, handing the messages
    /// that answer it before the ACK (a `GET` without `NLM_F_DUMP`) to `each`. A NACK is
    /// the kernel's errno ([`io::Error::raw_os_error`]).
    pub fn request<I: NetlinkSerializable>(
        &mut self,
        inner: I,
        flags: u16,
        mut each: impl FnMut(&Message<'_>) -> io::Result<()>,
    ) -> io::Result<()> {
        let seq = self.send_request(inner, flags | NLM_F_ACK)?;
        let (port, proto) = (self.port, self.proto);
        for _ in 0..MAX_DATAGRAMS {
            for m in Messages::new(self.recv_datagram(0)?, proto) {
                let m = m?;
                if !m.answers(seq, port) {
                    continue;
                }
                match m.kind {
                    NLMSG_ERROR => return kernel_status(&m, proto),
                    NLMSG_DONE => kernel_status(&m, proto).or_else(short_done_is_ok)?,
                    _ => answer(&m, proto, &mut each)?,
                }
            }
        }
        Err(io::Error::other(format!("{proto}: no acknowledgement")))
    }

    /// Runs one dump (`NLM_F_DUMP`) to its `NLMSG_DONE`, handing each message of it to
    /// `each`; `Ok(true)` when the kernel marked it interrupted (`NLM_F_DUMP_INTR`:
    /// the tables changed while it ran, so it may be inconsistent).
    pub fn dump_once<I: NetlinkSerializable>(
        &mut self,
        inner: I,
        mut each: impl FnMut(&Message<'_>) -> io::Result<()>,
    ) -> io::Result<bool> {
        let seq = self.send_request(inner, NLM_F_DUMP)?;
        let (port, proto) = (self.port, self.proto);
        let mut interrupted = false;
        for _ in 0..MAX_DATAGRAMS {
            for m in Messages::new(self.recv_datagram(0)?, proto) {
                let m = m?;
                if !m.answers(seq, port) {
                    continue;
                }
                interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
                match m.kind {
                    // An ACK: not asked for, harmless.
                    NLMSG_ERROR => kernel_status(&m, proto)?,
                    NLMSG_DONE => {
                        // The payload of DONE is the dump's status (0 or -errno); old
                        // kernels may send it empty.
                        kernel_status(&m, proto).or_else(short_done_is_ok)?;
                        return Ok(interrupted);
                    }
                    _ => answer(&m, proto, &mut each)?,
                }
            }
        }
        Err(io::Error::other(format!("{proto}: dump did not end")))
    }

    /// Runs a dump to a consistent end: started again (at most [`DUMP_ATTEMPTS`] times)
    /// while the kernel marks it interrupted; then the last result is used as it is.
    /// `parse` picks what to keep of each message.
    pub fn dump<I, T>(
        &mut self,
        inner: I,
        mut parse: impl FnMut(&Message<'_>) -> Option<T>,
    ) -> io::Result<Vec<T>>
    where
        I: NetlinkSerializable + Clone,
    {
        let mut last = Vec::new();
        for _ in 0..DUMP_ATTEMPTS {
            let mut items = Vec::new();
            let interrupted = self.dump_once(inner.clone(), |m| {
                items.extend(parse(m));
                Ok(())
            })?;
            if !interrupted {
                return Ok(items);
            }
            last = items;
        }
        // Still changing under us: an inconsistent answer serves better than none.
        Ok(last)
    }
}

/// A data message of an answer; `NLMSG_NOOP` is nothing, `NLMSG_OVERRUN` an error.
fn answer(
    m: &Message<'_>,
    proto: &str,
    each: &mut impl FnMut(&Message<'_>) -> io::Result<()>,
) -> io::Result<()> {
    match m.kind {
        NLMSG_NOOP => Ok(()),
        NLMSG_OVERRUN => Err(io::Error::other(format!("{proto}: netlink overrun"))),
        _ => each(m),
    }
}

/// The status an `NLMSG_ERROR` or `NLMSG_DONE` carries: 0 is `Ok`, -errno the errno.
fn kernel_status(m: &Message<'_>, proto: &str) -> io::Result<()> {
    match m.code() {
        Some(0) => Ok(()),
        Some(code) => Err(io::Error::from_raw_os_error(code.saturating_abs())),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{proto}: short error message"),
        )),
    }
}

/// An `NLMSG_DONE` too short to carry a status still ends the dump.
fn short_done_is_ok(e: io::Error) -> io::Result<()> {
    match e.raw_os_error() {
        Some(_) => Err(e),
        None => Ok(()),
    }
}

impl AsRawFd for NlSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl AsFd for NlSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}
