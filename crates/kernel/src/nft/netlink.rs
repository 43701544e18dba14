//! Ban set elements over `NETLINK_NETFILTER`, without forking `nft`: the user-space
//! decision path adds a ban with one `sendmsg` of one nf_tables batch and reads the
//! kernel's ACK; the `Ok` means the element is in the set.
//!
//! Batch layout (constants from `linux/netfilter/nfnetlink.h` and `nf_tables.h`, the
//! message bodies built with `netlink-packet-netfilter`):
//! ```text
//! NFNL_MSG_BATCH_BEGIN  (type 0x10, nfgenmsg family AF_UNSPEC, res_id NFNL_SUBSYS_NFTABLES=10)
//! NFT_MSG_DESTROYSETELEM (type 10<<8|30, family NFPROTO_INET, NLM_F_ACK)   ┐ one pair per
//! NFT_MSG_NEWSETELEM     (type 10<<8|12, family NFPROTO_INET, NLM_F_CREATE|NLM_F_ACK) ┘ chunk
//!   NFTA_SET_ELEM_LIST_TABLE    "portsentry"
//!   NFTA_SET_ELEM_LIST_SET      "banned4" | "banned6"
//!   NFTA_SET_ELEM_LIST_ELEMENTS (nested)
//!     NFTA_LIST_ELEM (nested), one per address
//!       NFTA_SET_ELEM_KEY (nested) → NFTA_DATA_VALUE = 4 or 16 address bytes
//!       NFTA_SET_ELEM_TIMEOUT = be64 milliseconds (NEWSETELEM only; 0 = permanent)
//! NFNL_MSG_BATCH_END    (type 0x11, like BEGIN)
//! ```
//! Invariants:
//! - a batch is one transaction: either every element of it is in place or none
//!   changed (`add_many` beyond a few MiB uses several batches);
//! - `add` *sets* the element's timeout, it does not merely ensure membership. Before
//!   6.12 the kernel ignores a re-add of an existing element; 6.12+ updates the
//!   timeout of an element that has one (seen on 6.18), but cannot give one to an
//!   element created permanent (element extensions cannot be reallocated). So an
//!   existing element is destroyed and re-added in the same batch; the commit is
//!   atomic, so the packet path never sees it missing;
//! - a permanent element is a NEWSETELEM with `NFTA_SET_ELEM_TIMEOUT = 0`: the kernel
//!   then gives it no timeout extension, so it never expires although the set has a
//!   default timeout (an element *without* the attribute gets the set default). On
//!   6.12+ the kernel also accepts `U64_MAX` ("never", `NFT_NEVER_EXPIRES`), older
//!   kernels answer ERANGE; 0 works on every kernel since sets got timeouts. nft 1.0.6
//!   has no syntax for either (`timeout never` came with nft 1.1.1) and lists such an
//!   element without `timeout`/`expires`;
//! - every message carries `NLM_F_ACK`; nfnetlink processes the batch synchronously
//!   in `sendmsg` and queues one `nlmsgerr` per message (errors are never lost: a
//!   failing message gets one with or without the flag); an error on BATCH_BEGIN
//!   (e.g. EPERM) is the only answer to the whole batch.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use netlink_packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
    NLMSG_ERROR, NLMSG_OVERRUN, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, DataAttribute, ListAttribute, NfTablesMessage, RuleAttribute,
    RuleMessage, SetAttribute, SetElementAttribute, SetElementList, SetElementMessage, SetMessage,
    TableAttribute, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::protocols::NETLINK_NETFILTER;

use super::KernelBan;
use super::ruleset::{SET_BANNED4, SET_BANNED6, SET_KNOWNPEER4, SET_KNOWNPEER6, valid_table_name};
use crate::netlink::{Message, Messages, NlSocket, attributes};

// linux/netfilter/nfnetlink.h
const NFNL_SUBSYS_NFTABLES: u16 = 10;
// linux/netfilter/nf_tables.h, enum nf_tables_msg_types
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_NEWSETELEM: u16 = 12; // DELSETELEM = 14: built through the crate's enum
const NFT_MSG_DESTROYSETELEM: u16 = 30; // Linux 6.3+: like DELSETELEM, no ENOENT
/// `NFT_NEVER_EXPIRES` (6.12+): what the kernel reports as the timeout of an element
/// that never expires in a set whose timeout is 0.
const NFT_NEVER_EXPIRES: u64 = u64::MAX;
// nf_tables.h attribute numbers used when reading replies
const NFTA_SET_TIMEOUT: u16 = 11;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_DATA_VALUE: u16 = 1;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWOBJ: u16 = 18;
const NFTA_OBJ_TABLE: u16 = 1;
const NFTA_OBJ_NAME: u16 = 2;
const NFTA_OBJ_TYPE: u16 = 3;
const NFTA_OBJ_DATA: u16 = 4;
/// Stateful object types (`NFT_OBJECT_*`).
pub const NFT_OBJECT_COUNTER: u32 = 1;
pub const NFT_OBJECT_LIMIT: u32 = 4;
const NFTA_LIMIT_RATE: u16 = 1;
const NFTA_LIMIT_UNIT: u16 = 2;
const NFTA_LIMIT_BURST: u16 = 3;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFT_MSG_NEWRULE: u16 = 6;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_DESC_SIZE: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
/// Single-element lookups per `sendmsg`: each answer (element + ACK, ~1.5 KiB of
/// receive buffer with the kernel's overhead) is queued before sendmsg returns.
const LOOKUPS_PER_SEND: usize = 256;
/// The marker of a dump we stop reading on purpose.
const DUMP_LIMIT: &str = "element limit reached";
// linux/netlink.h, enum nlmsgerr_attrs (extended ACK)
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Elements per message: NFTA_SET_ELEM_LIST_ELEMENTS is one attribute and an
/// attribute length is 16 bits. An IPv6 element with timeout is 40 bytes.
const ELEMS_PER_MSG: usize = 1024;
/// Upper bound of one batch (one `sendmsg`); larger restores use several batches.
const MAX_BATCH: usize = 4 << 20;
/// The protocol's name in error messages.
const PROTO: &str = "nftables";
/// How long we wait for the kernel's answer before calling the state unknown.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest timeout the kernel accepts (ms below `U64_MAX / NSEC_PER_MSEC`).
pub const MAX_TIMEOUT_MS: u64 = u64::MAX / 1_000_000 - 1;

/// A writer for the ban sets of one `inet` table, holding a `NETLINK_NETFILTER`
/// socket. Not shared between threads; each call waits for the kernel's answer.
pub struct BanSetWriter {
    sock: NlSocket,
    table: String,
    /// Whether the kernel knows NFT_MSG_DESTROYSETELEM; learned on first use.
    destroy: Option<bool>,
    /// Largest batch that fits the socket's send buffer.
    max_batch: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    /// NEWSETELEM; `excl` makes an existing element an EEXIST error.
    Add { excl: bool },
    /// DELSETELEM: ENOENT if absent.
    Delete,
    /// DESTROYSETELEM: no error if absent (6.3+).
    Destroy,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Add { .. } => "add",
            Op::Delete => "delete",
            Op::Destroy => "destroy",
        }
    }
}

/// One message of a batch, for the error report.
struct Sent {
    seq: u32,
    op: Op,
    set: &'static str,
    first: IpAddr,
    count: usize,
}

/// A kernel NACK of one message.
struct Nack {
    errno: i32,
    /// The refused message; `None`: the whole batch (BATCH_BEGIN).
    seq: Option<u32>,
    op: Option<Op>,
    detail: String,
}

/// Why a batch failed: the kernel refused a message, or the socket failed (then the
/// outcome is unknown).
enum BatchError {
    Nack {
        errno: i32,
        op: Option<Op>,
        err: io::Error,
    },
    Io(io::Error),
}

impl BatchError {
    fn errno(&self) -> Option<i32> {
        match self {
            BatchError::Nack { errno, .. } => Some(*errno),
            BatchError::Io(_) => None,
        }
    }

    fn into_io(self) -> io::Error {
        match self {
            BatchError::Nack { err, .. } | BatchError::Io(err) => err,
        }
    }
}

fn key_bytes(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Milliseconds for NFTA_SET_ELEM_TIMEOUT: `None` → 0 (permanent); a timeout is
/// rounded up so that a sub-millisecond one does not become 0, and capped at the
/// kernel's maximum.
fn timeout_ms(timeout: Option<Duration>) -> u64 {
    match timeout {
        None => 0,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000).max(1);
            u64::try_from(ms).unwrap_or(u64::MAX).min(MAX_TIMEOUT_MS)
        }
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn nl_header(flags: u16, seq: u32) -> NetlinkHeader {
    let mut h = NetlinkHeader::default();
    h.flags = NLM_F_REQUEST | flags;
    h.sequence_number = seq;
    h
}

fn push(out: &mut Vec<u8>, mut msg: NetlinkMessage<NetfilterMessage>, type_override: Option<u16>) {
    msg.finalize();
    if let Some(t) = type_override {
        msg.header.message_type = t;
    }
    let start = out.len();
    out.resize(start + msg.buffer_len(), 0);
    msg.serialize(&mut out[start..]);
}

fn control(msg: ControlMessage, seq: u32) -> NetlinkMessage<NetfilterMessage> {
    let header = NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES);
    NetlinkMessage::new(
        nl_header(0, seq),
        NetlinkPayload::InnerMessage(NetfilterMessage::new(header, msg)),
    )
}

fn elem_message(
    op: Op,
    table: &str,
    set: &str,
    elems: &[(IpAddr, Option<Duration>)],
    seq: u32,
) -> (NetlinkMessage<NetfilterMessage>, Option<u16>) {
    let list = elems
        .iter()
        .map(|(addr, timeout)| {
            let mut attrs = vec![SetElementAttribute::Key(DataAttribute::Value(key_bytes(
                addr,
            )))];
            if let Op::Add { .. } = op {
                attrs.push(SetElementAttribute::Timeout(timeout_ms(*timeout)));
            }
            ListAttribute::Element(attrs)
        })
        .collect();
    let body = SetElementMessage {
        attributes: vec![
            SetElementList::Table(table.to_string()),
            SetElementList::Set(set.to_string()),
            SetElementList::Elements(list),
        ],
    };
    let (inner, flags, type_override) = match op {
        Op::Add { excl } => (
            NfTablesMessage::NewSetElement(body),
            NLM_F_CREATE | NLM_F_ACK | if excl { NLM_F_EXCL } else { 0 },
            None,
        ),
        Op::Delete => (NfTablesMessage::DeleteSetElement(body), NLM_F_ACK, None),
        // Same body as DELSETELEM; the crate has no name for this type yet.
        Op::Destroy => (
            NfTablesMessage::DeleteSetElement(body),
            NLM_F_ACK,
            Some(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_DESTROYSETELEM),
        ),
    };
    let header = NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0);
    let msg = NetlinkMessage::new(
        nl_header(flags, seq),
        NetlinkPayload::InnerMessage(NetfilterMessage::new(header, inner)),
    );
    (msg, type_override)
}

/// The message of an extended ACK, if the kernel sent one.
fn extack_message(flags: u16, after_header: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let (_, text) = attributes(after_header).find(|&(kind, _)| kind == NLMSGERR_ATTR_MSG)?;
    let text = text.split(|&b| b == 0).next().unwrap_or_default();
    Some(String::from_utf8_lossy(text).into_owned())
}

impl BanSetWriter {
    /// Opens a `NETLINK_NETFILTER` socket for the ban sets of `inet <table>`. Needs
    /// CAP_NET_ADMIN to write (the kernel answers EPERM otherwise, on first use).
    pub fn open(table: &str) -> io::Result<Self> {
        if !valid_table_name(table) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid nftables table name {table:?}"),
            ));
        }
        let (sock, max_batch) = Self::open_socket()?;
        Ok(BanSetWriter {
            sock,
            table: table.to_string(),
            destroy: None,
            max_batch,
        })
    }

    /// A fresh socket and the largest batch it can send.
    fn open_socket() -> io::Result<(NlSocket, usize)> {
        let mut sock = NlSocket::open(NETLINK_NETFILTER, PROTO)?;
        // Errors echo only the header (not our 100 kB message), plus the kernel's text.
        let _ = sock.socket().set_cap_ack(true);
        let _ = sock.socket().set_ext_ack(true);
        // One ACK per message of a large restore must not overflow the receive buffer.
        sock.set_recv_buffer(1 << 20);
        let max_batch = Self::grow_send_buffer(&sock);
        sock.set_recv_timeout(REPLY_TIMEOUT)?;
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        sock.set_seq(seq);
        Ok((sock, max_batch))
    }

    /// A batch is one `sendmsg`, bounded by the socket's send buffer; raise it to
    /// [`MAX_BATCH`] (SO_SNDBUFFORCE needs CAP_NET_ADMIN, which writing needs anyway;
    /// SO_SNDBUF is capped by net.core.wmem_max). Returns the usable batch size.
    fn grow_send_buffer(sock: &NlSocket) -> usize {
        // netlink_sendmsg refuses a message longer than sk_sndbuf - 32.
        sock.force_send_buffer(MAX_BATCH)
            .saturating_sub(1024)
            .clamp(64 << 10, MAX_BATCH)
    }

    fn next_seq(&mut self) -> u32 {
        self.sock.next_seq()
    }

    /// Tests the path for kernels before 6.3 on a newer one.
    #[cfg(test)]
    pub(super) fn force_no_destroy(&mut self) {
        self.destroy = Some(false);
    }

    /// The table this writer targets.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Puts `addr` into `banned4`/`banned6` with exactly `timeout` from now (`None` =
    /// permanent), replacing any element already there, and waits for the kernel's
    /// ACK: `Ok` means the element is in the set.
    pub fn add(&mut self, addr: IpAddr, timeout: Option<Duration>) -> io::Result<()> {
        self.add_many(&[(addr, timeout)])
    }

    /// Same for many elements: one transaction per batch. A batch holds up to a few
    /// MiB (tens of thousands of elements); a larger restore is split, and each part
    /// is all-or-nothing. A later duplicate of an address wins.
    pub fn add_many(&mut self, bans: &[(IpAddr, Option<Duration>)]) -> io::Result<()> {
        let mut seen = std::collections::HashSet::new();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for ban in bans.iter().rev() {
            if seen.insert(ban.0) {
                if ban.0.is_ipv4() {
                    v4.push(*ban)
                } else {
                    v6.push(*ban)
                }
            }
        }
        if v4.is_empty() && v6.is_empty() {
            return Ok(());
        }
        v4.reverse();
        v6.reverse();
        if self.destroy != Some(false) {
            match self.batches(&v4, &v6, &[Op::Destroy, Op::Add { excl: false }]) {
                Ok(()) => {
                    self.destroy = Some(true);
                    return Ok(());
                }
                // A kernel before 6.3 does not know the message type (EINVAL or
                // EOPNOTSUPP on it); anything else is a real error.
                Err(BatchError::Nack {
                    errno,
                    op: Some(Op::Destroy),
                    err,
                }) if self.destroy.is_none() => {
                    if errno != libc::EINVAL && errno != libc::EOPNOTSUPP {
                        return Err(err);
                    }
                }
                Err(e) => return Err(e.into_io()),
            }
            let result = self.add_without_destroy(&v4, &v6);
            if result.is_ok() {
                self.destroy = Some(false);
            }
            return result;
        }
        self.add_without_destroy(&v4, &v6)
    }

    /// Kernels without DESTROYSETELEM: a single address is added exclusively, and on
    /// EEXIST deleted and re-added in one batch (so its timeout is set, not kept);
    /// several addresses are added in one go, where an existing element keeps its
    /// current timeout (documented limit of old kernels).
    fn add_without_destroy(
        &mut self,
        v4: &[(IpAddr, Option<Duration>)],
        v6: &[(IpAddr, Option<Duration>)],
    ) -> io::Result<()> {
        if v4.len() + v6.len() != 1 {
            return self
                .batches(v4, v6, &[Op::Add { excl: false }])
                .map_err(BatchError::into_io);
        }
        // Bounded: the element may expire or be re-added by the kernel in between.
        let mut last = None;
        for _ in 0..3 {
            match self.batches(v4, v6, &[Op::Add { excl: true }]) {
                Ok(()) => return Ok(()),
                Err(e) if e.errno() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e.into_io()),
            }
            match self.batches(v4, v6, &[Op::Delete, Op::Add { excl: false }]) {
                Ok(()) => return Ok(()),
                Err(e) if e.errno() == Some(libc::ENOENT) => last = Some(e.into_io()),
                Err(e) => return Err(e.into_io()),
            }
        }
        Err(last.unwrap_or_else(|| bad("nftables: element kept changing")))
    }

    /// Removes `addr` from its ban set. `Ok(true)`: it was there and is gone;
    /// `Ok(false)`: it was not in the set (ENOENT, e.g. already expired).
    pub fn delete(&mut self, addr: IpAddr) -> io::Result<bool> {
        let (e4, e6): (Vec<_>, Vec<_>) = if addr.is_ipv4() {
            (vec![(addr, None)], vec![])
        } else {
            (vec![], vec![(addr, None)])
        };
        match self.batches(&e4, &e6, &[Op::Delete]) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e.into_io()),
        }
    }

    /// Sends the elements in as few batches as fit; each chunk of elements gets all
    /// `ops` in order inside the same batch (so a destroy never lands without its add).
    fn batches(
        &mut self,
        v4: &[(IpAddr, Option<Duration>)],
        v6: &[(IpAddr, Option<Duration>)],
        ops: &[Op],
    ) -> Result<(), BatchError> {
        let mut buf = Vec::new();
        let mut sent = Vec::new();
        let chunks = v4
            .chunks(ELEMS_PER_MSG)
            .map(|c| (SET_BANNED4, c))
            .chain(v6.chunks(ELEMS_PER_MSG).map(|c| (SET_BANNED6, c)));
        for (set, chunk) in chunks {
            let mut group = Vec::new();
            let mut group_sent = Vec::new();
            for &op in ops {
                let seq = self.next_seq();
                let (msg, ty) = elem_message(op, &self.table, set, chunk, seq);
                push(&mut group, msg, ty);
                group_sent.push(Sent {
                    seq,
                    op,
                    set,
                    first: chunk[0].0,
                    count: chunk.len(),
                });
            }
            if !buf.is_empty() && buf.len() + group.len() + 64 > self.max_batch {
                self.send_batch(&buf, &mut sent)?;
                buf.clear();
            }
            buf.extend_from_slice(&group);
            sent.extend(group_sent);
        }
        if !buf.is_empty() {
            self.send_batch(&buf, &mut sent)?;
        }
        Ok(())
    }

    /// Wraps `body` in BEGIN/END, sends it in one `sendmsg` and collects one ACK per
    /// message in `sent` (cleared afterwards). The first NACK is the error.
    fn send_batch(&mut self, body: &[u8], sent: &mut Vec<Sent>) -> Result<(), BatchError> {
        let begin_seq = self.next_seq();
        let end_seq = self.next_seq();
        let mut out = Vec::with_capacity(body.len() + 40);
        push(
            &mut out,
            control(ControlMessage::BatchBegin, begin_seq),
            None,
        );
        out.extend_from_slice(body);
        push(&mut out, control(ControlMessage::BatchEnd, end_seq), None);
        let result = self.send_all(&out).map_err(BatchError::Io).and_then(|()| {
            match self.collect_acks(begin_seq, sent).map_err(BatchError::Io)? {
                None => Ok(()),
                Some(n) => Err(BatchError::Nack {
                    errno: n.errno,
                    op: n.op,
                    err: self.nack_error(&n, sent),
                }),
            }
        });
        sent.clear();
        result
    }

    fn nack_error(&self, n: &Nack, sent: &[Sent]) -> io::Error {
        let what = sent
            .iter()
            .find(|s| Some(s.seq) == n.seq)
            .map(|s| {
                let more = if s.count > 1 {
                    format!(" and {} more", s.count - 1)
                } else {
                    String::new()
                };
                format!(
                    "{} {}{more} in inet {} {}",
                    s.op.name(),
                    s.first,
                    self.table,
                    s.set
                )
            })
            .unwrap_or_else(|| format!("batch for inet {}", self.table));
        let detail = if n.detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", n.detail)
        };
        kernel_error(
            n.errno,
            format!("nftables: {what}: {}{detail}", errno_text(n.errno)),
        )
    }

    fn send_all(&self, out: &[u8]) -> io::Result<()> {
        self.sock.send(out)
    }

    /// Reads until every message in `sent` is answered, or BATCH_BEGIN is refused.
    /// Returns the first NACK. Answers of other sequence numbers (an earlier timed
    /// out request) are skipped.
    fn collect_acks(&mut self, begin_seq: u32, sent: &[Sent]) -> io::Result<Option<Nack>> {
        let mut pending: std::collections::HashSet<u32> = sent.iter().map(|s| s.seq).collect();
        let mut first: Option<Nack> = None;
        while !pending.is_empty() {
            // Everything is queued before sendmsg returns; once a NACK is known, do
            // not wait for ACKs the kernel may skip in an aborted batch.
            let flags = if first.is_some() {
                libc::MSG_DONTWAIT
            } else {
                0
            };
            let datagram = match self.sock.recv_datagram(flags) {
                Ok(d) => d,
                Err(e) if first.is_some() && e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(state_unknown(e)),
            };
            for msg in Messages::new(datagram, PROTO) {
                let msg = msg?;
                if msg.kind == NLMSG_OVERRUN {
                    return Err(bad("nftables: netlink overrun"));
                }
                if msg.kind != NLMSG_ERROR {
                    continue;
                }
                let (errno, orig_seq, nack) = read_ack(&msg)?;
                if orig_seq == begin_seq && errno != 0 {
                    return Ok(Some(Nack {
                        seq: None,
                        op: None,
                        ..nack
                    }));
                }
                if pending.remove(&orig_seq) && errno != 0 && first.is_none() {
                    first = Some(Nack {
                        seq: Some(orig_seq),
                        op: sent.iter().find(|s| s.seq == orig_seq).map(|s| s.op),
                        ..nack
                    });
                }
            }
        }
        Ok(first)
    }

    /// The elements of both ban sets with their timeout and remaining time, read
    /// with a netlink dump (millisecond precision). An element that carries no timeout
    /// of its own but expires has the set's default timeout.
    ///
    /// The kernel's set dump is quadratic in the set's size (each round of the dump
    /// walks the hash table again from the start and skips what it sent before): a
    /// million elements cost it 80–120 s. Use [`list_at_most`](Self::list_at_most) or
    /// [`lookup`](Self::lookup) where the set can be large.
    pub fn list(&mut self) -> io::Result<Vec<KernelBan>> {
        Ok(self.list_at_most(usize::MAX)?.0)
    }

    /// At most `limit` elements of the two ban sets (`banned4` first; which ones of a
    /// larger set is the kernel's hash order), and whether the sets hold more. The dump
    /// is abandoned at the limit, so its cost stays that of the first `limit`
    /// elements (65,536 of a million: ~0.3 s instead of ~100 s).
    pub fn list_at_most(&mut self, limit: usize) -> io::Result<(Vec<KernelBan>, bool)> {
        let mut out = Vec::new();
        let mut more = false;
        for set in [SET_BANNED4, SET_BANNED6] {
            let default = self.set_timeout(set)?;
            if out.len() >= limit {
                // Only whether the set is empty is still needed: one element.
                let mut probe = Vec::new();
                more |= self.dump_elements(set, default, 1, &mut probe)? || !probe.is_empty();
                break;
            }
            more |= self.dump_elements(set, default, limit, &mut out)?;
            if more {
                break;
            }
        }
        Ok((out, more))
    }

    /// The elements among `addrs` that the ban sets hold, each with its timeout and
    /// time left; absent addresses are left out. One `GETSETELEM` per address,
    /// pipelined (no dump: the cost is that of `addrs`, whatever the sets' size).
    pub fn lookup(&mut self, addrs: &[IpAddr]) -> io::Result<Vec<KernelBan>> {
        self.lookup_in(addrs, [SET_BANNED4, SET_BANNED6])
    }

    /// The elements among `addrs` that the known-peer sets hold (as [`Self::lookup`]:
    /// one request per address, never a listing of the set).
    pub fn lookup_known_peers(&mut self, addrs: &[IpAddr]) -> io::Result<Vec<KernelBan>> {
        self.lookup_in(addrs, [SET_KNOWNPEER4, SET_KNOWNPEER6])
    }

    /// [`Self::lookup`] in the sets `[v4, v6]` of our table.
    fn lookup_in(&mut self, addrs: &[IpAddr], sets: [&str; 2]) -> io::Result<Vec<KernelBan>> {
        let default4 = self.set_timeout(sets[0])?;
        let default6 = self.set_timeout(sets[1])?;
        let mut out = Vec::new();
        // Every request gets an answer (the element and an ACK, or an error) queued on
        // our socket during sendmsg; a chunk's answers must fit the receive buffer.
        for chunk in addrs.chunks(LOOKUPS_PER_SEND) {
            let mut buf = Vec::new();
            let mut pending = std::collections::HashMap::new();
            for addr in chunk {
                let seq = self.next_seq();
                let set = if addr.is_ipv4() { sets[0] } else { sets[1] };
                let body = SetElementMessage {
                    attributes: vec![
                        SetElementList::Table(self.table.clone()),
                        SetElementList::Set(set.to_string()),
                        SetElementList::Elements(vec![ListAttribute::Element(vec![
                            SetElementAttribute::Key(DataAttribute::Value(key_bytes(addr))),
                        ])]),
                    ],
                };
                let msg = NetlinkMessage::new(
                    nl_header(NLM_F_ACK, seq),
                    NetlinkPayload::InnerMessage(nft_message(NfTablesMessage::GetSetElement(body))),
                );
                push(&mut buf, msg, None);
                pending.insert(seq, if addr.is_ipv4() { default4 } else { default6 });
            }
            self.sock.send(&buf)?;
            while !pending.is_empty() {
                let datagram = self.sock.recv_datagram(0).map_err(state_unknown)?;
                for msg in Messages::new(datagram, PROTO) {
                    let msg = msg?;
                    if msg.kind == NLMSG_OVERRUN {
                        return Err(bad("nftables: netlink overrun"));
                    }
                    if msg.kind == NLMSG_ERROR {
                        let (errno, orig_seq, _) = read_ack(&msg)?;
                        if pending.remove(&orig_seq).is_some()
                            && errno != 0
                            && errno != libc::ENOENT
                        {
                            return Err(self.reading_error(io::Error::from_raw_os_error(errno)));
                        }
                        continue;
                    }
                    let Some(&default) = pending.get(&msg.seq) else {
                        continue;
                    };
                    if msg.kind == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM {
                        elements_of(&msg, default, usize::MAX, &mut out)?;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Whether `inet <table>` exists: one `GETTABLE` (no fork of `nft`, whose
    /// `list tables` reads every set element, minutes with a million bans).
    pub fn table_exists(&mut self) -> io::Result<bool> {
        let body = TableMessage {
            attributes: vec![TableAttribute::Name(self.table.clone())],
        };
        match self
            .sock
            .request(nft_message(NfTablesMessage::GetTable(body)), 0, |_| Ok(()))
        {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(self.reading_error(e)),
        }
    }

    /// Our table's sets, chains and rules as the kernel holds them, without any set
    /// element: three dumps whose size does not grow with the bans.
    pub fn read_table(&mut self) -> io::Result<TableListing> {
        let table = self.table.clone();
        let ours = |m: &Message<'_>, attr: u16| {
            attributes(after_nfgenmsg(m)).any(|(k, v)| k == attr && cstr(v) == table.as_str())
        };
        let mut listing = TableListing::default();
        let sets = nft_message(NfTablesMessage::GetSet(SetMessage {
            attributes: vec![SetAttribute::Table(self.table.clone())],
        }));
        self.sock
            .dump_once(sets, |m| {
                if m.kind == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSET && ours(m, NFTA_SET_TABLE) {
                    listing.sets.push(set_info(after_nfgenmsg(m)));
                }
                Ok(())
            })
            .map_err(|e| self.reading_error(e))?;
        let chains = nft_message(NfTablesMessage::GetChain(ChainMessage {
            attributes: vec![ChainAttribute::Table(self.table.clone())],
        }));
        self.sock
            .dump_once(chains, |m| {
                if m.kind == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWCHAIN
                    && ours(m, NFTA_CHAIN_TABLE)
                {
                    listing.chains.push(chain_info(after_nfgenmsg(m)));
                }
                Ok(())
            })
            .map_err(|e| self.reading_error(e))?;
        let rules = nft_message(NfTablesMessage::GetRule(RuleMessage {
            attributes: vec![RuleAttribute::Table(self.table.clone())],
        }));
        self.sock
            .dump_once(rules, |m| {
                if m.kind == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWRULE && ours(m, NFTA_RULE_TABLE)
                {
                    let chain = attributes(after_nfgenmsg(m))
                        .find(|&(k, _)| k == NFTA_RULE_CHAIN)
                        .map(|(_, v)| cstr(v).to_string())
                        .unwrap_or_default();
                    listing.rule_chains.push(chain);
                }
                Ok(())
            })
            .map_err(|e| self.reading_error(e))?;
        listing.objects = self.read_objects()?;
        Ok(listing)
    }

    /// Our table's named stateful objects (counters with their packets, limits), over
    /// netlink: `nft list counter` reads every set element first (minutes with a
    /// million bans), which stalled the capture loop at start.
    pub fn read_objects(&mut self) -> io::Result<Vec<ObjInfo>> {
        let table = self.table.clone();
        let mut name = table.clone().into_bytes();
        name.push(0);
        // The crate has no typed object message: raw attributes.
        let request = nft_message(NfTablesMessage::GetObject(vec![DefaultNla::new(
            NFTA_OBJ_TABLE,
            name,
        )]));
        let mut out = Vec::new();
        self.sock
            .dump_once(request, |m| {
                let ours = attributes(after_nfgenmsg(m))
                    .any(|(k, v)| k == NFTA_OBJ_TABLE && cstr(v) == table.as_str());
                if m.kind == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWOBJ && ours {
                    out.push(obj_info(after_nfgenmsg(m)));
                }
                Ok(())
            })
            .map_err(|e| self.reading_error(e))?;
        Ok(out)
    }

    /// NFTA_SET_TIMEOUT of one of our sets (ms; 0 = none).
    fn set_timeout(&mut self, set: &str) -> io::Result<u64> {
        let body = SetMessage {
            attributes: vec![
                SetAttribute::Table(self.table.clone()),
                SetAttribute::Name(set.to_string()),
            ],
        };
        let mut timeout = 0;
        self.sock
            .request(nft_message(NfTablesMessage::GetSet(body)), 0, |m| {
                if m.kind == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSET {
                    for (kind, value) in attributes(after_nfgenmsg(m)) {
                        if kind == NFTA_SET_TIMEOUT {
                            timeout = be64(value).unwrap_or(0);
                        }
                    }
                }
                Ok(())
            })
            .map_err(|e| self.reading_error(e))?;
        Ok(timeout)
    }

    /// Dumps the elements of `set` into `out` until it holds `limit`; `Ok(true)` when
    /// the dump was abandoned there (the set holds more). An abandoned dump leaves its
    /// rest on the socket, so the socket is replaced by a fresh one.
    fn dump_elements(
        &mut self,
        set: &'static str,
        default_ms: u64,
        limit: usize,
        out: &mut Vec<KernelBan>,
    ) -> io::Result<bool> {
        let body = SetElementMessage {
            attributes: vec![
                SetElementList::Table(self.table.clone()),
                SetElementList::Set(set.to_string()),
            ],
        };
        // Parsed by hand: the crate's list parser formats the whole remaining buffer
        // for every element (quadratic: seconds for a few thousand elements).
        let request = nft_message(NfTablesMessage::GetSetElement(body));
        let mut full = false;
        let result = self.sock.dump_once(request, |m| {
            if m.kind != NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM {
                return Ok(());
            }
            if !elements_of(m, default_ms, limit, out)? {
                full = true;
                return Err(io::Error::other(DUMP_LIMIT));
            }
            Ok(())
        });
        // No retry when interrupted: nf_tables does not mark set element dumps.
        match result {
            Ok(_) => Ok(false),
            Err(_) if full => {
                self.sock = Self::open_socket()?.0;
                Ok(true)
            }
            Err(e) => Err(self.reading_error(e)),
        }
    }

    /// A failed read of our table as an error naming it (a kernel errno in nf_tables
    /// words, see [`kernel_errno`]).
    fn reading_error(&self, e: io::Error) -> io::Error {
        match e.raw_os_error() {
            Some(errno) => kernel_error(
                errno,
                format!(
                    "nftables: reading inet {}: {}",
                    self.table,
                    errno_text(errno)
                ),
            ),
            None => e,
        }
    }
}

/// Pushes the elements of one NEWSETELEM message into `out` while it holds fewer than
/// `limit`; `Ok(false)` when the limit cut the message short.
fn elements_of(
    m: &Message<'_>,
    default_ms: u64,
    limit: usize,
    out: &mut Vec<KernelBan>,
) -> io::Result<bool> {
    for (kind, list) in attributes(after_nfgenmsg(m)) {
        if kind != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for (kind, elem) in attributes(list) {
            if kind == NFTA_LIST_ELEM {
                if out.len() >= limit {
                    return Ok(false);
                }
                out.push(ban_of(elem, default_ms)?);
            }
        }
    }
    Ok(true)
}

/// A NUL-terminated netlink string attribute.
fn cstr(v: &[u8]) -> &str {
    let v = v.split(|&b| b == 0).next().unwrap_or_default();
    std::str::from_utf8(v).unwrap_or_default()
}

fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

/// One set of our table as the kernel describes it (no elements).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetInfo {
    pub name: String,
    /// nft's datatype number of the key (7 = ipv4_addr, 8 = ipv6_addr; concatenations
    /// combine several).
    pub key_type: u32,
    /// `NFT_SET_*` flags (interval 0x4, timeout 0x10, dynamic/eval 0x20, ...).
    pub flags: u32,
    /// Default element timeout in milliseconds (0: none).
    pub timeout_ms: u64,
    /// The size limit (`size N`); `None`: none given.
    pub size: Option<u32>,
}

/// One chain of our table; `hook` is `None` for a regular (non-base) chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainInfo {
    pub name: String,
    pub kind: Option<String>,
    /// `(hook number, priority)`: NF_INET_LOCAL_IN = 1, NF_INET_LOCAL_OUT = 3.
    pub hook: Option<(u32, i32)>,
    /// NF_ACCEPT = 1, NF_DROP = 0.
    pub policy: Option<u32>,
}

/// Our table's definition as [`BanSetWriter::read_table`] reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableListing {
    pub sets: Vec<SetInfo>,
    pub chains: Vec<ChainInfo>,
    /// The chain of each rule, in the kernel's order.
    pub rule_chains: Vec<String>,
    /// Named stateful objects (counters, limits).
    pub objects: Vec<ObjInfo>,
}

/// One named stateful object of our table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjInfo {
    pub name: String,
    /// `NFT_OBJECT_COUNTER`, `NFT_OBJECT_LIMIT`, ...
    pub kind: u32,
    /// A limit's rate, unit (seconds) and burst.
    pub limit: Option<(u64, u64, u32)>,
    /// A counter's packets.
    pub packets: Option<u64>,
}

fn obj_info(attrs: &[u8]) -> ObjInfo {
    let mut info = ObjInfo::default();
    let mut data: &[u8] = &[];
    for (kind, v) in attributes(attrs) {
        match kind {
            NFTA_OBJ_NAME => info.name = cstr(v).to_string(),
            NFTA_OBJ_TYPE => info.kind = be32(v).unwrap_or(0),
            NFTA_OBJ_DATA => data = v,
            _ => {}
        }
    }
    if info.kind == NFT_OBJECT_COUNTER {
        info.packets = attributes(data)
            .find(|&(k, _)| k == NFTA_COUNTER_PACKETS)
            .and_then(|(_, v)| be64(v));
    }
    if info.kind == NFT_OBJECT_LIMIT {
        let (mut rate, mut unit, mut burst) = (0, 0, 0);
        for (kind, v) in attributes(data) {
            match kind {
                NFTA_LIMIT_RATE => rate = be64(v).unwrap_or(0),
                NFTA_LIMIT_UNIT => unit = be64(v).unwrap_or(0),
                NFTA_LIMIT_BURST => burst = be32(v).unwrap_or(0),
                _ => {}
            }
        }
        info.limit = Some((rate, unit, burst));
    }
    info
}

fn set_info(attrs: &[u8]) -> SetInfo {
    let mut info = SetInfo::default();
    for (kind, v) in attributes(attrs) {
        match kind {
            NFTA_SET_NAME => info.name = cstr(v).to_string(),
            NFTA_SET_FLAGS => info.flags = be32(v).unwrap_or(0),
            NFTA_SET_KEY_TYPE => info.key_type = be32(v).unwrap_or(0),
            NFTA_SET_TIMEOUT => info.timeout_ms = be64(v).unwrap_or(0),
            NFTA_SET_DESC => {
                info.size = attributes(v)
                    .find(|&(k, _)| k == NFTA_SET_DESC_SIZE)
                    .and_then(|(_, v)| be32(v))
            }
            _ => {}
        }
    }
    info
}

fn chain_info(attrs: &[u8]) -> ChainInfo {
    let mut info = ChainInfo::default();
    for (kind, v) in attributes(attrs) {
        match kind {
            NFTA_CHAIN_NAME => info.name = cstr(v).to_string(),
            NFTA_CHAIN_TYPE => info.kind = Some(cstr(v).to_string()),
            NFTA_CHAIN_POLICY => info.policy = be32(v),
            NFTA_CHAIN_HOOK => {
                let mut num = None;
                let mut prio = None;
                for (k, v) in attributes(v) {
                    match k {
                        NFTA_HOOK_HOOKNUM => num = be32(v),
                        NFTA_HOOK_PRIORITY => prio = be32(v).map(|p| p as i32),
                        _ => {}
                    }
                }
                info.hook = num.zip(prio);
            }
            _ => {}
        }
    }
    info
}

/// The errno of one `nlmsgerr` of a batch, the sequence number of the message it
/// answers (from the echoed header), and the kernel's extended-ACK text.
fn read_ack(msg: &Message<'_>) -> io::Result<(i32, u32, Nack)> {
    let payload = msg.payload();
    if payload.len() < 4 + 16 {
        return Err(bad("nftables: short netlink error message"));
    }
    let errno = -i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
    let orig = &payload[4..];
    let orig_len = u32::from_ne_bytes([orig[0], orig[1], orig[2], orig[3]]) as usize;
    let orig_seq = u32::from_ne_bytes([orig[8], orig[9], orig[10], orig[11]]);
    // With NETLINK_CAP_ACK only the header is echoed (NLM_F_CAPPED).
    let echoed = if msg.flags & NLM_F_CAPPED != 0 {
        16
    } else {
        orig_len
    };
    let tlvs = orig.get(echoed.next_multiple_of(4)..).unwrap_or_default();
    let nack = Nack {
        errno,
        seq: None,
        op: None,
        detail: extack_message(msg.flags, tlvs).unwrap_or_default(),
    };
    Ok((errno, orig_seq, nack))
}

/// A batch whose answer did not come: whether the kernel applied it is unknown.
fn state_unknown(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::TimedOut {
        io::Error::new(e.kind(), format!("{e} (state unknown)"))
    } else {
        e
    }
}

/// An nf_tables request of family `inet`, as the element reads send it.
fn nft_message(msg: NfTablesMessage) -> NetfilterMessage {
    NetfilterMessage::new(NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0), msg)
}

/// The attribute bytes of an nf_tables message (after its `nfgenmsg`).
fn after_nfgenmsg<'a>(m: &Message<'a>) -> &'a [u8] {
    m.payload().get(4..).unwrap_or_default()
}

fn be64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))
}

/// One dumped element (the inside of an NFTA_LIST_ELEM) as a ban.
fn ban_of(elem: &[u8], default_ms: u64) -> io::Result<KernelBan> {
    let mut addr = None;
    let mut timeout = None;
    let mut expires = None;
    for (kind, value) in attributes(elem) {
        match kind {
            NFTA_SET_ELEM_KEY => {
                for (k, v) in attributes(value) {
                    if k == NFTA_DATA_VALUE {
                        addr = match v.len() {
                            4 => <[u8; 4]>::try_from(v)
                                .ok()
                                .map(|b| IpAddr::V4(Ipv4Addr::from(b))),
                            16 => <[u8; 16]>::try_from(v)
                                .ok()
                                .map(|b| IpAddr::V6(Ipv6Addr::from(b))),
                            _ => None,
                        };
                    }
                }
            }
            NFTA_SET_ELEM_TIMEOUT => timeout = be64(value),
            NFTA_SET_ELEM_EXPIRATION => expires = be64(value),
            _ => {}
        }
    }
    let addr = addr.ok_or_else(|| bad("nftables: ban set element without an address key"))?;
    // An element that never expires carries no expiration; its timeout attribute,
    // if any, is 0 (6.18 reports the explicit 0 we wrote) or NFT_NEVER_EXPIRES.
    let timeout = match (expires, timeout) {
        (None, _) => None,
        (Some(_), Some(ms)) if ms != 0 && ms != NFT_NEVER_EXPIRES => Some(ms),
        (Some(_), _) => (default_ms > 0).then_some(default_ms),
    };
    Ok(KernelBan {
        addr,
        timeout: timeout.map(Duration::from_millis),
        expires: expires.map(Duration::from_millis),
    })
}

/// The kernel's errno in nf_tables words where the C library's text misleads.
fn errno_text(errno: i32) -> String {
    match errno {
        libc::ENFILE => "the set is full (its size limit is reached)".to_string(),
        libc::ENOENT => "no such table, set or element".to_string(),
        libc::EPERM => "operation not permitted (needs CAP_NET_ADMIN)".to_string(),
        _ => io::Error::from_raw_os_error(errno).to_string(),
    }
}

/// An `io::Error` of the kernel's errno's kind whose message says which element and
/// set failed; [`kernel_errno`] gives the errno back.
fn kernel_error(errno: i32, text: String) -> io::Error {
    let kind = io::Error::from_raw_os_error(errno).kind();
    io::Error::new(kind, KernelError { errno, text })
}

/// The error inside an `io::Error` from this module: the kernel's errno and our text.
#[derive(Debug)]
pub struct KernelError {
    pub errno: i32,
    text: String,
}

impl std::fmt::Display for KernelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for KernelError {}

/// The kernel errno of an error returned by [`BanSetWriter`], if it came from the
/// kernel (`io::Error::raw_os_error` is `None` for errors with a message).
pub fn kernel_errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<KernelError>())
            .map(|k| k.errno)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_in_milliseconds() {
        assert_eq!(timeout_ms(None), 0);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), 1);
        assert_eq!(timeout_ms(Some(Duration::from_nanos(1))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_micros(1500))), 2);
        assert_eq!(timeout_ms(Some(Duration::from_secs(3))), 3000);
        assert_eq!(timeout_ms(Some(Duration::MAX)), MAX_TIMEOUT_MS);
    }

    #[test]
    fn new_element_message_layout() {
        let addr: IpAddr = "198.18.0.1".parse().unwrap();
        let (msg, ty) = elem_message(
            Op::Add { excl: false },
            "pst",
            "banned4",
            &[(addr, Some(Duration::from_secs(3)))],
            7,
        );
        assert_eq!(ty, None);
        let mut out = Vec::new();
        push(&mut out, msg, None);
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &[0x48, 0, 0, 0][..],           // nlmsg_len 72
            &[12, 10],                      // NFT_MSG_NEWSETELEM | NFNL_SUBSYS_NFTABLES << 8
            &(NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK).to_ne_bytes(),
            &7u32.to_ne_bytes(), &[0, 0, 0, 0],
            &[1, 0, 0, 0],                  // nfgenmsg: NFPROTO_INET, v0, res_id 0
            &[8, 0, 1, 0], b"pst\0",        // NFTA_SET_ELEM_LIST_TABLE
            &[12, 0, 2, 0], b"banned4\0",   // NFTA_SET_ELEM_LIST_SET
            &[32, 0, 3, 0x80],              // NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED
            &[28, 0, 1, 0x80],              // NFTA_LIST_ELEM | NLA_F_NESTED
            &[12, 0, 1, 0x80],              // NFTA_SET_ELEM_KEY | NLA_F_NESTED
            &[8, 0, 1, 0], &[198, 18, 0, 1],// NFTA_DATA_VALUE
            &[12, 0, 4, 0], &3000u64.to_be_bytes(), // NFTA_SET_ELEM_TIMEOUT be64 ms
        ].concat();
        assert_eq!(out, expected);
    }

    #[test]
    fn destroy_message_is_delsetelem_body_with_type_30() {
        let addr: IpAddr = "fd00:5e17::1".parse().unwrap();
        let (msg, ty) = elem_message(Op::Destroy, "pst", "banned6", &[(addr, None)], 1);
        let mut out = Vec::new();
        push(&mut out, msg, ty);
        assert_eq!(&out[4..6], &[30, 10]);
        // No timeout attribute on a delete/destroy: key only.
        let len = out.len();
        assert_eq!(&out[len - 16..], &addr_bytes(addr)[..]);
        assert!(!out.windows(4).any(|w| w == [12, 0, 4, 0]));
    }

    fn addr_bytes(a: IpAddr) -> Vec<u8> {
        key_bytes(&a)
    }

    #[test]
    fn batch_control_messages() {
        let mut out = Vec::new();
        push(&mut out, control(ControlMessage::BatchBegin, 5), None);
        assert_eq!(
            out,
            [
                &[20, 0, 0, 0, 0x10, 0, 1, 0][..],
                &5u32.to_ne_bytes(),
                &[0, 0, 0, 0],
                &[0, 0, 0, 10]
            ]
            .concat()
        );
    }

    /// The attributes as the kernel puts them in an NFTA_LIST_ELEM (emitted by the
    /// crate, so our reader is checked against an independent writer).
    fn elem(attrs: &[SetElementAttribute]) -> Vec<u8> {
        use netlink_packet_core::Emitable as _;
        let mut v = vec![0; attrs.buffer_len()];
        attrs.emit(&mut v);
        v
    }

    #[test]
    fn dumped_elements_become_bans() {
        let key = |s: &str| {
            SetElementAttribute::Key(DataAttribute::Value(key_bytes(&s.parse().unwrap())))
        };
        use SetElementAttribute::{Expiration, Timeout};
        // Default timeout: only the expiration is reported.
        let b = ban_of(&elem(&[key("198.18.0.1"), Expiration(2500)]), 3_600_000).unwrap();
        assert_eq!(b.addr, "198.18.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(b.timeout, Some(Duration::from_secs(3600)));
        assert_eq!(b.expires, Some(Duration::from_millis(2500)));
        // Own timeout.
        let b = ban_of(
            &elem(&[key("fd00:5e17::1"), Timeout(3000), Expiration(2900)]),
            3_600_000,
        )
        .unwrap();
        assert_eq!(b.addr, "fd00:5e17::1".parse::<IpAddr>().unwrap());
        assert_eq!(b.timeout, Some(Duration::from_secs(3)));
        assert_eq!(b.expires, Some(Duration::from_millis(2900)));
        // Permanent: no expiration; timeout absent, 0 (what 6.18 reports for our
        // explicit 0) or the 6.12+ never-expires marker.
        for attrs in [
            vec![key("198.18.0.2")],
            vec![key("198.18.0.2"), Timeout(0)],
            vec![key("198.18.0.2"), Timeout(u64::MAX)],
        ] {
            let b = ban_of(&elem(&attrs), 3_600_000).unwrap();
            assert_eq!((b.timeout, b.expires), (None, None), "{attrs:?}");
        }
        assert!(ban_of(&elem(&[Timeout(1)]), 0).is_err());
        // Truncated input ends the walk instead of reading past it.
        let bytes = elem(&[key("198.18.0.1"), Expiration(2500)]);
        assert!(ban_of(&bytes[..bytes.len() - 3], 0).is_ok_and(|b| b.expires.is_none()));
        assert!(ban_of(&bytes[..6], 0).is_err());
    }

    #[test]
    fn extack_text() {
        let mut tlv = vec![14, 0, 1, 0];
        tlv.extend_from_slice(b"no set\0\0");
        tlv.extend_from_slice(&[8, 0, 2, 0, 4, 0, 0, 0]);
        assert_eq!(
            extack_message(NLM_F_ACK_TLVS, &tlv).as_deref(),
            Some("no set")
        );
        assert_eq!(extack_message(0, &tlv), None);
    }
}
