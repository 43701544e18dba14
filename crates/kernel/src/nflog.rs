//! The kernel fast path's report channel: reading an NFLOG (`nfnetlink_log`) group.
//!
//! The nftables trap rules ban in the kernel and log the trapped packet with
//! `log prefix "portsentry ban " group N` (banned) or `log prefix "portsentry log " group N`
//! (logged only). [`NflogReader`] binds group N on a `NETLINK_NETFILTER` socket and hands each
//! logged packet to the caller as an [`NflogPacket`] that borrows the receive buffer: the
//! prefix, the packet bytes from the network (IP) header on, the family from the `nfgenmsg`
//! (`AF_INET`/`AF_INET6`; an `inet` table logs both into the same group) and the input
//! interface index.
//!
//! # Configuration sent at [`NflogReader::open`]
//! One `NFULNL_MSG_CONFIG` request (built with `netlink-packet-netfilter`), `nfgen_family`
//! `AF_UNSPEC`, `res_id` = group, flags `NLM_F_REQUEST | NLM_F_ACK`, attributes in this order:
//! - `NFULA_CFG_CMD` = `NFULNL_CFG_CMD_BIND`;
//! - `NFULA_CFG_MODE` = `NFULNL_COPY_PACKET`, copy range [`COPY_RANGE`] (256 bytes: the IP and
//!   transport headers are all the daemon reads);
//! - `NFULA_CFG_QTHRESH` = [`QUEUE_THRESHOLD`] (1): the kernel flushes every logged packet to
//!   us at once, as its own datagram. The alternative, `NFULA_CFG_TIMEOUT` 0, would batch the
//!   packets of one jiffy (1–4 ms late, fewer syscalls under a flood); promptness wins here, and
//!   a trap hit is rare outside a flood, which the kernel has already dropped and banned anyway.
//!   With a threshold of 1 the flush timer is never armed, so no timeout is sent;
//! - `NFULA_CFG_FLAGS` = `NFULNL_CFG_F_SEQ`: every packet carries the group's sequence number,
//!   which makes [`NflogReader::overruns`] count lost packets exactly instead of guessing.
//!
//! The kernel applies all of it in one call, so there is no window with the defaults
//! (copy 64 KiB, batch 100, 1 s timer). The ACK is awaited and checked. The obsolete-looking
//! `NFULNL_CFG_CMD_PF_UNBIND`/`PF_BIND` pair of old libnetfilter_log examples is *not* sent: on
//! current kernels `PF_BIND` makes nfnetlink_log the namespace's default logger for plain `log`
//! rules (a global side effect), and nftables' `log group N` reaches nfnetlink_log without it.
//!
//! Only one socket may bind a group (per network namespace). The kernel answers a second bind
//! with `EPERM` (another socket owns it) or `EBUSY`; [`NflogReader::open`] turns both into
//! [`io::ErrorKind::ResourceBusy`] naming the group, unless the caller lacks `CAP_NET_ADMIN`
//! (then [`io::ErrorKind::PermissionDenied`]). Closing the socket releases the group.
//!
//! Incoming messages are parsed in place over one reused 128 KiB receive buffer (no allocation
//! per packet; `netlink-packet-netfilter`'s own packet types copy the payload and prefix).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{ErrorBuffer, NLMSG_ERROR};
use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nflog::{
    ConfigCmd, ConfigFlags, ConfigMode, ConfigNla, config_request,
};
use netlink_sys::protocols::NETLINK_NETFILTER;

use crate::netlink::{Messages, NlSocket, attributes, wait_readable};

/// Bytes of each logged packet copied to us, from the network header on.
pub const COPY_RANGE: u32 = 256;
/// `NFULA_CFG_QTHRESH`: flush each logged packet immediately.
pub const QUEUE_THRESHOLD: u32 = 1;
/// Socket receive buffer asked for (`SO_RCVBUFFORCE`, else `SO_RCVBUF` capped by `rmem_max`).
pub const RCVBUF_BYTES: usize = 4 << 20;

/// One datagram never exceeds this: a single message with the largest copy range the
/// kernel allows (64 KiB) or a batch of at most `nlbufsiz` (default one page, 128 KiB max).
const RECV_BUF_BYTES: usize = 128 << 10;
/// Upper bound of datagrams read by one [`NflogReader::drain`], so a flood cannot starve the
/// caller's loop; the rest stays queued for the next call.
const MAX_DATAGRAMS_PER_DRAIN: usize = 4096;
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
const CONFIG_SEQ: u32 = 1;

/// The protocol's name in error messages.
const PROTO: &str = "NFLOG";
const NFGENMSG_LEN: usize = 4;
const MSG_ULOG_PACKET: u16 =
    ((libc::NFNL_SUBSYS_ULOG as u16) << 8) | libc::NFULNL_MSG_PACKET as u16;
const NFULA_IFINDEX_INDEV: u16 = libc::NFULA_IFINDEX_INDEV as u16;
const NFULA_PAYLOAD: u16 = libc::NFULA_PAYLOAD as u16;
const NFULA_PREFIX: u16 = libc::NFULA_PREFIX as u16;
const NFULA_SEQ: u16 = libc::NFULA_SEQ as u16;
const CAP_NET_ADMIN: u32 = 12;

/// One logged packet, borrowing the reader's receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NflogPacket<'a> {
    /// The rule's log prefix without its trailing NUL (`"portsentry ban "`, with the space).
    /// Empty if the rule had none; cut at the first invalid byte if it is not UTF-8.
    pub prefix: &'a str,
    /// The packet from its IP header on, at most [`COPY_RANGE`] bytes. Empty if the kernel
    /// sent no payload.
    pub payload: &'a [u8],
    /// `NFULA_IFINDEX_INDEV`, absent for packets without an input device (output hooks).
    pub ifindex: Option<u32>,
    /// `nfgen_family` of the message: `AF_INET` (2) or `AF_INET6` (10) for `inet`, `ip` and
    /// `ip6` tables (`NFPROTO_IPV4`/`NFPROTO_IPV6` equal the `AF_*` values).
    pub family: u8,
}

/// Lost-packet bookkeeping.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct LossAccount {
    /// Sequence number the next packet should carry (the kernel counts from 0 per group).
    next_seq: u32,
    /// Packets missing between the sequence numbers seen (exact).
    seq_lost: u64,
    /// `ENOBUFS` reports: at least one packet dropped each.
    enobufs: u64,
    /// Datagrams too large for the buffer (cannot happen with our config; counted anyway).
    truncated: u64,
}

impl LossAccount {
    fn saw_seq(&mut self, seq: u32) {
        let gap = seq.wrapping_sub(self.next_seq);
        // Netlink unicast keeps order; a "negative" gap would mean the kernel restarted the
        // count, which we just follow.
        if gap < 1 << 31 {
            self.seq_lost += u64::from(gap);
        }
        self.next_seq = seq.wrapping_add(1);
    }

    fn overruns(&self) -> u64 {
        self.seq_lost.max(self.enobufs + self.truncated)
    }
}

/// A bound NFLOG group. See the module documentation for the protocol details.
pub struct NflogReader {
    sock: NlSocket,
    group: u16,
    buf: Box<[u8]>,
    acct: LossAccount,
}

impl fmt::Debug for NflogReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NflogReader")
            .field("fd", &self.sock.as_raw_fd())
            .field("group", &self.group)
            .field("overruns", &self.overruns())
            .finish_non_exhaustive()
    }
}

enum Recv {
    Data(usize),
    Empty,
}

impl NflogReader {
    /// Bind to NFLOG group `group` (IPv4 and IPv6 alike: the group is family-independent),
    /// copy mode packet with a copy range of [`COPY_RANGE`] bytes, queue threshold 1 (each
    /// packet is flushed at once) and per-packet sequence numbers; the kernel's ACK is checked.
    /// A group bound by another socket gives [`io::ErrorKind::ResourceBusy`].
    pub fn open(group: u16) -> io::Result<Self> {
        Self::open_with_rcvbuf(group, RCVBUF_BYTES)
    }

    fn open_with_rcvbuf(group: u16, rcvbuf: usize) -> io::Result<Self> {
        let sock = NlSocket::open(NETLINK_NETFILTER, PROTO)
            .map_err(|e| context(e, format!("NFLOG group {group}: netfilter netlink socket")))?;
        sock.force_recv_buffer(rcvbuf);
        sock.socket().set_non_blocking(true)?;
        let mut reader = NflogReader {
            sock,
            group,
            buf: vec![0u8; RECV_BUF_BYTES].into_boxed_slice(),
            acct: LossAccount::default(),
        };
        reader.configure()?;
        Ok(reader)
    }

    /// The bound group.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// Wait up to `timeout` for data (or a pending overrun report). `Ok(true)` means
    /// [`drain`](Self::drain) has something to do; `Ok(false)` that there is nothing yet
    /// (the time ran out, or a signal came: see [`wait_readable`]).
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        wait_readable(self.sock.as_fd(), timeout)
    }

    /// Read and decode what is queued without blocking, calling `f` for each logged packet;
    /// returns the number of packets. Reads at most 4096 datagrams per call. `ENOBUFS` (the
    /// kernel dropped messages because the socket buffer was full) is counted in
    /// [`overruns`](Self::overruns), not returned. No allocation per packet.
    pub fn drain(&mut self, mut f: impl FnMut(NflogPacket<'_>)) -> io::Result<usize> {
        let mut packets = 0;
        for _ in 0..MAX_DATAGRAMS_PER_DRAIN {
            match recv_datagram(&self.sock, &mut self.buf, &mut self.acct)? {
                Recv::Empty => break,
                Recv::Data(len) => {
                    packets +=
                        decode_datagram(&self.buf[..len], self.group, &mut self.acct, &mut f);
                }
            }
        }
        Ok(packets)
    }

    /// Packets the kernel logged to this group but could not queue to us (socket buffer
    /// full). Exact from the gaps in the per-packet sequence numbers once a later packet has
    /// arrived; until then at least the number of `ENOBUFS` reports, which say only that
    /// *something* was dropped.
    pub fn overruns(&self) -> u64 {
        self.acct.overruns()
    }

    /// The netlink socket, for the caller's own poll/epoll (it is non-blocking).
    pub fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn configure(&mut self) -> io::Result<()> {
        let group = self.group;
        let mut msg = config_request(
            NetfilterProtoFamily::Unspec,
            group,
            vec![
                ConfigCmd::Bind.into(),
                ConfigMode::new_packet(COPY_RANGE).into(),
                ConfigNla::QThresh(QUEUE_THRESHOLD),
                ConfigFlags::SEQ.into(),
            ],
        );
        msg.header.sequence_number = CONFIG_SEQ;
        let len = msg.buffer_len();
        let mut out = vec![0u8; len];
        msg.serialize(&mut out);
        self.sock
            .send(&out)
            .map_err(|e| context(e, format!("NFLOG group {group}: config request")))?;
        let deadline = Instant::now() + ACK_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("NFLOG group {group}: no answer from the kernel to the bind request"),
                ));
            }
            if !self.wait(left)? {
                continue;
            }
            let len = match recv_datagram(&self.sock, &mut self.buf, &mut self.acct)? {
                Recv::Empty => continue,
                Recv::Data(len) => len,
            };
            for m in Messages::new(&self.buf[..len], PROTO).map_while(Result::ok) {
                match m.kind {
                    NLMSG_ERROR if m.seq == CONFIG_SEQ => {
                        let err = ErrorBuffer::new_checked(m.payload()).map_err(|e| {
                            io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("NFLOG group {group}: bad netlink ack: {e}"),
                            )
                        })?;
                        return match err.code() {
                            None => Ok(()),
                            Some(code) => Err(bind_error(group, code.get().saturating_abs())),
                        };
                    }
                    MSG_ULOG_PACKET => {
                        // Logged between the bind and its ACK: nobody to hand it to yet.
                        if let Some((_, seq)) = decode_packet(m.payload(), group) {
                            if let Some(s) = seq {
                                self.acct.saw_seq(s);
                            }
                            self.acct.seq_lost += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

impl AsRawFd for NflogReader {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl AsFd for NflogReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

fn context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn bind_error(group: u16, errno: i32) -> io::Error {
    let os = io::Error::from_raw_os_error(errno);
    let busy = errno == libc::EBUSY || (errno == libc::EPERM && has_cap_net_admin());
    if busy {
        io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!(
                "NFLOG group {group} is already bound by another process (EBUSY; kernel said: \
                 {os}); only one listener per group and network namespace: stop the other \
                 portsentry/ulogd or choose another nflog group"
            ),
        )
    } else if errno == libc::EPERM {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("binding NFLOG group {group} needs CAP_NET_ADMIN: {os}"),
        )
    } else {
        io::Error::new(
            os.kind(),
            format!("NFLOG group {group}: the kernel rejected the bind/config request: {os}"),
        )
    }
}

/// Whether this process holds `CAP_NET_ADMIN` (effective set), to tell "group owned by
/// someone else" from "not allowed" — the kernel answers `EPERM` to both.
fn has_cap_net_admin() -> bool {
    let from_status = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        });
    match from_status {
        Some(caps) => caps & (1 << CAP_NET_ADMIN) != 0,
        // SAFETY: geteuid has no preconditions.
        None => (unsafe { libc::geteuid() }) == 0,
    }
}

/// Receive one datagram into `buf`. `ENOBUFS` and truncated datagrams are counted and
/// skipped; `EINTR` is retried; `Empty` when nothing is queued.
fn recv_datagram(sock: &NlSocket, buf: &mut [u8], acct: &mut LossAccount) -> io::Result<Recv> {
    loop {
        match sock.recv(buf, libc::MSG_DONTWAIT | libc::MSG_TRUNC) {
            Ok(n) if n > buf.len() => acct.truncated += 1,
            Ok(n) => return Ok(Recv::Data(n)),
            Err(e) => match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(Recv::Empty),
                Some(libc::ENOBUFS) => acct.enobufs += 1,
                _ => return Err(e),
            },
        }
    }
}

/// Decode every packet message of one datagram; returns how many were handed to `f`.
fn decode_datagram(
    data: &[u8],
    group: u16,
    acct: &mut LossAccount,
    f: &mut impl FnMut(NflogPacket<'_>),
) -> usize {
    let mut n = 0;
    // Best effort: a malformed message ends the datagram, the packets before it count.
    for m in Messages::new(data, PROTO).map_while(Result::ok) {
        // NLMSG_DONE ends a batch, NLMSG_ERROR would be a stray ACK, NOOP is nothing.
        if m.kind != MSG_ULOG_PACKET {
            continue;
        }
        if let Some((pkt, seq)) = decode_packet(m.payload(), group) {
            if let Some(s) = seq {
                acct.saw_seq(s);
            }
            f(pkt);
            n += 1;
        }
    }
    n
}

/// One `NFULNL_MSG_PACKET` payload (nfgenmsg + attributes). `None` if it is too short or
/// belongs to another group.
fn decode_packet(msg: &[u8], group: u16) -> Option<(NflogPacket<'_>, Option<u32>)> {
    if msg.len() < NFGENMSG_LEN {
        return None;
    }
    let family = msg[0];
    let res_id = u16::from_be_bytes([msg[2], msg[3]]);
    if res_id != group {
        return None;
    }
    let mut pkt = NflogPacket {
        prefix: "",
        payload: &[],
        ifindex: None,
        family,
    };
    let mut seq = None;
    for (kind, value) in attributes(&msg[NFGENMSG_LEN..]) {
        match kind {
            NFULA_PREFIX => {
                let raw = value.split(|&b| b == 0).next().unwrap_or(&[]);
                pkt.prefix = match std::str::from_utf8(raw) {
                    Ok(s) => s,
                    // The valid part is valid UTF-8 by definition.
                    Err(e) => std::str::from_utf8(&raw[..e.valid_up_to()]).unwrap_or(""),
                };
            }
            NFULA_PAYLOAD => pkt.payload = value,
            NFULA_IFINDEX_INDEV => pkt.ifindex = be32(value),
            NFULA_SEQ => seq = be32(value),
            _ => {}
        }
    }
    Some((pkt, seq))
}

fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{NLA_HDRLEN, push_message};
    use crate::testns::{Netns, in_private_netns};
    use std::net::{TcpStream, UdpSocket};

    // ---- in-place decoding, no privileges needed -------------------------------------------

    fn nla(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
        out.extend_from_slice(&((NLA_HDRLEN + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }

    fn nlmsg(out: &mut Vec<u8>, kind: u16, seq: u32, payload: &[u8]) {
        push_message(out, kind, 0, seq, 0, payload);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }

    fn packet_msg(family: u8, group: u16, prefix: &[u8], payload: &[u8], seq: u32) -> Vec<u8> {
        let mut m = vec![family, 0];
        m.extend_from_slice(&group.to_be_bytes());
        nla(&mut m, libc::NFULA_PACKET_HDR as u16, &[0x08, 0x00, 1, 0]);
        nla(&mut m, NFULA_PREFIX, prefix);
        nla(&mut m, NFULA_IFINDEX_INDEV, &7u32.to_be_bytes());
        nla(&mut m, NFULA_SEQ, &seq.to_be_bytes());
        nla(&mut m, NFULA_PAYLOAD, payload);
        m
    }

    #[test]
    fn decodes_a_multi_message_datagram_in_place_and_counts_sequence_gaps() {
        let mut dgram = Vec::new();
        nlmsg(
            &mut dgram,
            MSG_ULOG_PACKET,
            0,
            &packet_msg(2, 9, b"portsentry ban \0", &[0x45, 1, 2], 0),
        );
        // seq 1 and 2 lost
        nlmsg(
            &mut dgram,
            MSG_ULOG_PACKET,
            0,
            &packet_msg(10, 9, b"portsentry log \0", &[0x60, 0, 0, 0, 9], 3),
        );
        // another group's message is ignored
        nlmsg(
            &mut dgram,
            MSG_ULOG_PACKET,
            0,
            &packet_msg(2, 8, b"x\0", &[0x45], 4),
        );
        nlmsg(&mut dgram, libc::NLMSG_DONE as u16, 0, &[0, 0, 0, 0]);
        let mut acct = LossAccount::default();
        let mut seen = Vec::new();
        let n = decode_datagram(&dgram, 9, &mut acct, &mut |p: NflogPacket<'_>| {
            // zero-copy: the payload points into the datagram
            let range = dgram.as_ptr_range();
            assert!(range.contains(&p.payload.as_ptr()));
            seen.push((p.prefix.to_owned(), p.payload.to_vec(), p.ifindex, p.family));
        });
        assert_eq!(n, 2);
        assert_eq!(
            seen,
            vec![
                ("portsentry ban ".to_owned(), vec![0x45, 1, 2], Some(7), 2),
                (
                    "portsentry log ".to_owned(),
                    vec![0x60, 0, 0, 0, 9],
                    Some(7),
                    10
                ),
            ]
        );
        assert_eq!(acct.seq_lost, 2);
        assert_eq!(acct.overruns(), 2);
        assert_eq!(acct.next_seq, 4);
    }

    #[test]
    fn malformed_input_stops_decoding_without_panicking() {
        let good = packet_msg(2, 1, b"p\0", &[0x45], 0);
        let mut dgram = Vec::new();
        nlmsg(&mut dgram, MSG_ULOG_PACKET, 0, &good);
        let whole = dgram.clone();
        let mut acct = LossAccount::default();
        let count = |d: &[u8], acct: &mut LossAccount| {
            decode_datagram(d, 1, acct, &mut |_: NflogPacket<'_>| {})
        };
        // Every truncation of a valid datagram either decodes nothing or is cut cleanly.
        for cut in 0..whole.len() {
            assert_eq!(count(&whole[..cut], &mut acct), 0, "cut at {cut}");
        }
        assert_eq!(count(&whole, &mut acct), 1);
        // An attribute claiming more bytes than the message has ends the attribute walk.
        let mut bad = good.clone();
        bad[NFGENMSG_LEN..NFGENMSG_LEN + 2].copy_from_slice(&0xfff0u16.to_ne_bytes());
        let mut dgram = Vec::new();
        nlmsg(&mut dgram, MSG_ULOG_PACKET, 0, &bad);
        let mut got = None;
        decode_datagram(&dgram, 1, &mut acct, &mut |p: NflogPacket<'_>| {
            got = Some((p.prefix.len(), p.payload.len()));
        });
        assert_eq!(got, Some((0, 0)));
        // A non-UTF-8 prefix is cut at the first bad byte.
        let mut dgram = Vec::new();
        nlmsg(
            &mut dgram,
            MSG_ULOG_PACKET,
            0,
            &packet_msg(2, 1, b"ok\xffno\0", &[0x45], 1),
        );
        let mut prefix = String::new();
        decode_datagram(&dgram, 1, &mut acct, &mut |p: NflogPacket<'_>| {
            prefix = p.prefix.to_owned()
        });
        assert_eq!(prefix, "ok");
    }

    // ---- against the kernel, inside a private network namespace ----------------------------

    fn nft_apply(ns: &Netns, ruleset: &str) {
        ns.run_with_input(&["nft", "-f", "-"], ruleset);
    }

    /// `counter packets N` of the first counter in the pstest input chain.
    fn nft_counter(ns: &Netns) -> u64 {
        let listing = ns.run(&["nft", "list", "chain", "inet", "pstest", "input"]);
        let at = listing.find("counter packets ").expect("a counter") + "counter packets ".len();
        listing[at..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no packet count in {listing}"))
    }

    fn trap_table(group: u16) -> String {
        format!(
            "table inet pstest {{\n\
             \tchain input {{\n\
             \t\ttype filter hook input priority 0; policy accept;\n\
             \t\ttcp dport 7 log prefix \"portsentry ban \" group {group}\n\
             \t\tudp dport 9 counter log prefix \"portsentry log \" group {group}\n\
             \t}}\n\
             }}\n"
        )
    }

    #[derive(Debug, Clone)]
    struct Seen {
        prefix: String,
        payload: Vec<u8>,
        ifindex: Option<u32>,
        family: u8,
    }

    fn lo_index() -> u32 {
        // SAFETY: a NUL-terminated name.
        let i = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        assert_ne!(i, 0, "no lo");
        i
    }

    #[test]
    fn decodes_trapped_ipv4_tcp_and_ipv6_udp_from_nftables() {
        const GROUP: u16 = 47_101;
        in_private_netns(
            "decodes_trapped_ipv4_tcp_and_ipv6_udp_from_nftables",
            |ns| {
                let mut reader = NflogReader::open(GROUP).expect("open nflog group");
                assert_eq!(reader.group(), GROUP);
                nft_apply(ns, &trap_table(GROUP));
                let lo = lo_index();

                // TCP SYN to 127.0.0.1:7: no listener, refused at once; the SYN is logged.
                let _ = TcpStream::connect_timeout(
                    &"127.0.0.1:7".parse().unwrap(),
                    Duration::from_secs(2),
                );
                let udp = UdpSocket::bind("[::1]:0").expect("bind [::1]");
                udp.send_to(b"probe", "[::1]:9").expect("send to [::1]:9");

                let mut seen: Vec<Seen> = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(5);
                let has = |seen: &[Seen], p: &str| seen.iter().any(|s| s.prefix == p);
                while !(has(&seen, "portsentry ban ") && has(&seen, "portsentry log "))
                    && Instant::now() < deadline
                {
                    if reader.wait(Duration::from_millis(200)).expect("wait") {
                        reader
                            .drain(|p| {
                                seen.push(Seen {
                                    prefix: p.prefix.to_owned(),
                                    payload: p.payload.to_vec(),
                                    ifindex: p.ifindex,
                                    family: p.family,
                                })
                            })
                            .expect("drain");
                    }
                }
                eprintln!("nflog decoded: {seen:?}");
                assert_eq!(reader.overruns(), 0);

                let v4 = seen
                    .iter()
                    .find(|s| s.prefix == "portsentry ban ")
                    .expect("the TCP SYN to 127.0.0.1:7 was logged");
                assert_eq!(v4.family, libc::AF_INET as u8);
                assert_eq!(v4.ifindex, Some(lo));
                let p = &v4.payload;
                assert!(p.len() >= 40 && p.len() <= COPY_RANGE as usize, "{p:?}");
                assert_eq!(p[0], 0x45, "IPv4 header without options");
                assert_eq!(p[9], libc::IPPROTO_TCP as u8);
                assert_eq!(&p[16..20], &[127, 0, 0, 1]);
                let ihl = usize::from(p[0] & 0x0f) * 4;
                assert_eq!(u16::from_be_bytes([p[ihl + 2], p[ihl + 3]]), 7);
                assert_ne!(p[ihl + 13] & 0x02, 0, "SYN flag");

                let v6 = seen
                    .iter()
                    .find(|s| s.prefix == "portsentry log ")
                    .expect("the UDP datagram to [::1]:9 was logged");
                assert_eq!(v6.family, libc::AF_INET6 as u8);
                assert_eq!(v6.ifindex, Some(lo));
                let p = &v6.payload;
                assert_eq!(p.len(), 40 + 8 + 5, "whole datagram (below the copy range)");
                assert_eq!(p[0] >> 4, 6);
                assert_eq!(p[6], libc::IPPROTO_UDP as u8, "next header");
                assert_eq!(&p[24..40], &std::net::Ipv6Addr::LOCALHOST.octets());
                assert_eq!(u16::from_be_bytes([p[42], p[43]]), 9);
                assert_eq!(&p[48..], b"probe");
            },
        );
    }

    #[test]
    fn second_bind_of_a_group_is_busy_and_close_releases_it() {
        const GROUP: u16 = 47_102;
        in_private_netns(
            "second_bind_of_a_group_is_busy_and_close_releases_it",
            |_| {
                let first = NflogReader::open(GROUP).expect("first bind");
                let err = NflogReader::open(GROUP).expect_err("second bind must fail");
                assert_eq!(err.kind(), io::ErrorKind::ResourceBusy, "{err}");
                let msg = err.to_string();
                eprintln!("second bind: {msg}");
                assert!(msg.contains("47102") && msg.contains("EBUSY"), "{msg}");
                drop(first);
                // The kernel frees the group's instance after an RCU grace period, so
                // the rebind may need a moment (bounded: 50 tries, 20 ms apart).
                let rebound = (0..50).any(|_| {
                    let ok = NflogReader::open(GROUP).is_ok();
                    if !ok {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    ok
                });
                assert!(
                    rebound,
                    "group not free again within 1 s of closing the first reader"
                );
            },
        );
    }

    /// Sends `count` UDP datagrams to 127.0.0.1:9 without reading, then drains, then sends a
    /// marker and reads until it arrives so every sequence gap is seen. Returns
    /// (received, overruns, logged by the kernel rule's counter, sent).
    fn flood(ns: &Netns, reader: &mut NflogReader, count: usize) -> (u64, u64, u64, u64) {
        nft_apply(ns, &trap_table(reader.group()));
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut sent = 0u64;
        for _ in 0..count {
            if tx.send_to(b"flood", "127.0.0.1:9").is_ok() {
                sent += 1;
            }
        }
        let mut received = 0u64;
        let mut marker = false;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut marker_sent = false;
        while !marker && Instant::now() < deadline {
            if reader.wait(Duration::from_millis(100)).expect("wait") {
                reader
                    .drain(|p| {
                        received += 1;
                        let ihl = usize::from(p.payload[0] & 0x0f) * 4;
                        if p.payload.get(ihl + 8..) == Some(b"marker") {
                            marker = true;
                        }
                    })
                    .expect("drain never fails on overrun");
            } else if !marker_sent {
                // queue empty: the marker's sequence number reveals any trailing loss
                tx.send_to(b"marker", "127.0.0.1:9").expect("send marker");
                sent += 1;
                marker_sent = true;
            }
        }
        assert!(marker, "marker packet not received within the time limit");
        (received, reader.overruns(), nft_counter(ns), sent)
    }

    #[test]
    fn burst_of_5000_logged_packets_is_received_or_counted() {
        const GROUP: u16 = 47_103;
        in_private_netns(
            "burst_of_5000_logged_packets_is_received_or_counted",
            |ns| {
                let mut reader = NflogReader::open(GROUP).expect("open");
                let (received, overruns, logged, sent) = flood(ns, &mut reader, 5000);
                eprintln!(
                    "nflog burst (4 MiB rcvbuf): sent {sent}, logged {logged}, received {received}, \
                 overruns {overruns}"
                );
                assert!(received > 0);
                assert!(logged <= sent);
                assert_eq!(
                    received + overruns,
                    logged,
                    "every logged packet accounted for"
                );
            },
        );
    }

    #[test]
    fn overruns_are_counted_exactly_with_a_tiny_receive_buffer() {
        const GROUP: u16 = 47_104;
        in_private_netns(
            "overruns_are_counted_exactly_with_a_tiny_receive_buffer",
            |ns| {
                let mut reader = NflogReader::open_with_rcvbuf(GROUP, 16 << 10).expect("open");
                let (received, overruns, logged, sent) = flood(ns, &mut reader, 5000);
                eprintln!(
                    "nflog burst (16 KiB rcvbuf): sent {sent}, logged {logged}, received {received}, \
                 overruns {overruns}, ENOBUFS reports {}",
                    reader.acct.enobufs
                );
                assert!(received > 0);
                assert!(overruns > 0, "a 32 KiB buffer cannot hold 5000 messages");
                assert!(reader.acct.enobufs > 0, "the kernel reported ENOBUFS");
                assert_eq!(
                    received + overruns,
                    logged,
                    "every logged packet accounted for"
                );
            },
        );
    }
}
