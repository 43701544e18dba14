//! Turns parsed [`Segment`]s into [`Probe`]s. The sensor hands us inbound segments and
//! the host's own outbound traffic of interest; this module owns the rules that say which
//! of them is a probe, and two small tables of recent traffic: inbound FIN+ACKs waiting
//! for the RST the kernel sends back, and the host's own outgoing UDP flows.
//!
//! Why outbound RSTs: an ACK-bearing probe (nmap -sA/-sW, or -sM's FIN+ACK) looks exactly
//! like established traffic, so it cannot be judged on its own. But when it matches no
//! socket the kernel answers with a bare RST (RFC 793: seq = SEG.ACK, ACK flag clear),
//! and that reply is the evidence. Replies to SYN/FIN/NULL/XMAS on closed ports carry
//! RST+ACK instead, and those probes were already reported on the way in.
//!
//! Why outbound UDP: a UDP datagram to a port with no socket looks like a UDP probe, but
//! it may be the answer to a datagram this host sent from that port (a DNS or NTP client
//! on a low port) that came after the client closed its socket. PortSentry 1.2's
//! "advanced logic" ignored replies to the host's own connections; we do the same by
//! remembering each outbound flow (remote, remote port, local port) for
//! [`UDP_REPLY_WINDOW`]: an inbound datagram on a remembered flow is a reply, not a probe.
//!
//! Invariants:
//! - RST segments are never probes; inbound ACK-bearing segments are never probes by
//!   themselves; outbound TCP is a probe only as a bare RST; outbound UDP never is.
//! - An inbound UDP datagram is a probe unless this host sent a datagram on the same
//!   (remote, remote port, local port) within [`UDP_REPLY_WINDOW`] before it. Only our
//!   own datagrams open or refresh a flow, so a scanner cannot keep one alive, and a
//!   flow exempts exactly one local port from one remote port.
//! - Each table (`Recent`) holds at most `capacity` entries; an entry counts only within
//!   its window. When full, expired entries go first, then the oldest. Its insertion-order
//!   queue holds at most `2 * capacity` records. Both are reserved up front, so a warm
//!   classifier does not allocate per call (the hash table may grow once under heavy
//!   churn, then stays put).
//! - Losing a FIN+ACK entry (evicted, expired) only downgrades a Maimon probe to
//!   AckWindow; it never hides a probe. Losing a UDP flow entry only makes a late reply
//!   count as a probe again (the 1.2 behaviour when no socket holds the port); it never
//!   hides a probe either.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Duration;

use crate::probe::{Probe, ProbeKind, TcpFlags};
use crate::time::Millis;
use crate::wire::{L4, Segment};

/// How long an inbound FIN+ACK may wait for our RST and still be called a Maimon probe.
/// The kernel answers within microseconds; 2 s leaves room for a stalled capture loop
/// while keeping a legitimate late FIN+ACK from long ago out of the pairing.
pub const MAIMON_WINDOW: Duration = Duration::from_secs(2);

/// How long after this host's last datagram on a UDP flow an inbound datagram on it still
/// counts as a reply. 30 s is conntrack's timeout for a UDP flow that has seen no reply
/// (`nf_conntrack_udp_timeout`): a reply later than that would not pass a stateful
/// firewall either, and real clients (DNS, NTP, RPC) give up well before.
pub const UDP_REPLY_WINDOW: Duration = Duration::from_secs(30);

/// The six classic flag bits. ECE/CWR are left out of classification, as PortSentry 1.2
/// did: an ECN-setup SYN is still a SYN.
const CLASSIC_FLAGS: u8 = 0x3f;

/// Which way a segment crossed the host's interfaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Sent to this host.
    Inbound,
    /// Sent by this host.
    Outbound,
}

/// A flow as seen from this host: (remote address, remote port, local port). An inbound
/// FIN+ACK is remembered under the triple that our RST carries as (destination,
/// destination port, source port); an outbound UDP datagram under the triple its reply
/// carries as (source, source port, destination port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    remote: IpAddr,
    remote_port: u16,
    local_port: u16,
}

impl FlowKey {
    /// The flow of a segment sent to this host.
    fn of_inbound(seg: &Segment) -> Self {
        FlowKey {
            remote: seg.src,
            remote_port: seg.sport,
            local_port: seg.dport,
        }
    }

    /// The flow of a segment sent by this host.
    fn of_outbound(seg: &Segment) -> Self {
        FlowKey {
            remote: seg.dst,
            remote_port: seg.dport,
            local_port: seg.sport,
        }
    }
}

/// What an inbound FIN+ACK leaves for the report of a Maimon probe.
#[derive(Clone, Copy, Debug)]
struct FinAck {
    ttl: u8,
    ip_options: bool,
}

#[derive(Clone, Copy, Debug)]
struct Slot<V> {
    seen: Millis,
    /// Matches the entry to its live record in `Recent::order`.
    seq: u64,
    value: V,
}

/// A bounded table of keys seen recently: an entry counts only within `window` of its
/// last insertion, and at most `capacity` entries are held (expired ones are dropped
/// first, then the oldest). Memory is reserved up front.
#[derive(Debug)]
struct Recent<K, V> {
    window: Duration,
    capacity: usize,
    map: HashMap<K, Slot<V>>,
    /// Insertion order of `map`, oldest first. A record is live iff `map` holds its key
    /// with the same `seq`; records left behind by a removal or refresh are skipped when
    /// met and swept out when the queue reaches `2 * capacity`.
    order: VecDeque<(K, u64)>,
    next_seq: u64,
}

impl<K: Copy + Eq + Hash, V> Recent<K, V> {
    fn new(window: Duration, capacity: usize) -> Self {
        Recent {
            window,
            capacity,
            map: HashMap::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity.saturating_mul(2)),
            next_seq: 0,
        }
    }

    fn fresh(&self, now: Millis, slot: &Slot<V>) -> bool {
        now.since(slot.seen) <= self.window
    }

    /// Remember `key` as seen at `now` (a refresh if it is already there). A zero
    /// capacity remembers nothing.
    fn insert(&mut self, now: Millis, key: K, value: V) {
        if self.capacity == 0 {
            return;
        }
        self.expire(now);
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = Slot {
            seen: now,
            seq,
            value,
        };
        match self.map.entry(key) {
            // A refresh: the old queue record goes stale.
            Entry::Occupied(mut e) => {
                e.insert(slot);
            }
            Entry::Vacant(e) => {
                e.insert(slot);
                if self.map.len() > self.capacity {
                    self.evict_oldest();
                }
            }
        }
        if self.order.len() >= self.capacity.saturating_mul(2) {
            self.sweep();
        }
        self.order.push_back((key, seq));
    }

    /// Remove `key` and return its value if it is still within the window.
    fn take(&mut self, now: Millis, key: &K) -> Option<V> {
        let slot = self.map.remove(key)?;
        self.fresh(now, &slot).then_some(slot.value)
    }

    /// Whether `key` was seen within the window before `now` (the entry stays).
    fn contains(&self, now: Millis, key: &K) -> bool {
        self.map.get(key).is_some_and(|slot| self.fresh(now, slot))
    }

    /// Drop entries older than the window from the front of the queue.
    fn expire(&mut self, now: Millis) {
        while let Some(&(key, seq)) = self.order.front() {
            match self.map.get(&key) {
                Some(slot) if slot.seq == seq => {
                    if self.fresh(now, slot) {
                        break;
                    }
                    self.map.remove(&key);
                }
                _ => {} // stale record
            }
            self.order.pop_front();
        }
    }

    /// Drop the oldest live entry. The entry just inserted has no queue record yet, so it
    /// is never the one chosen.
    fn evict_oldest(&mut self) {
        while let Some((key, seq)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|slot| slot.seq == seq) {
                self.map.remove(&key);
                return;
            }
        }
    }

    /// Remove stale records, leaving one per live entry (at most `capacity`).
    fn sweep(&mut self) {
        let map = &self.map;
        self.order
            .retain(|(key, seq)| map.get(key).is_some_and(|slot| slot.seq == *seq));
    }
}

/// Stateful classifier: one per sensor loop.
#[derive(Debug)]
pub struct Classifier {
    /// Inbound FIN+ACKs, for pairing with our RST ([`MAIMON_WINDOW`]).
    fin_acks: Recent<FlowKey, FinAck>,
    /// This host's outgoing UDP flows, for recognising replies ([`UDP_REPLY_WINDOW`]).
    udp_flows: Recent<FlowKey, ()>,
}

impl Classifier {
    /// Capacity of each table. For FIN+ACKs: a busy server's connection closes within
    /// [`MAIMON_WINDOW`]. For UDP flows: only datagrams from ports up to the highest
    /// watched port reach us, so clients on low ports and the replies of this host's own
    /// services on watched ports; an entry outlives 4096 later datagrams, far longer than
    /// a reply takes even when a busy service churns the table. About 120 bytes per entry
    /// with its queue records.
    pub const DEFAULT_PENDING_CAPACITY: usize = 4096;

    /// A classifier whose two tables (FIN+ACKs, UDP flows) each hold at most `capacity`
    /// entries. Zero disables both: every bare outbound RST is then reported as
    /// AckWindow and every inbound UDP datagram as a probe.
    pub fn new(capacity: usize) -> Self {
        Classifier {
            fin_acks: Recent::new(MAIMON_WINDOW, capacity),
            udp_flows: Recent::new(UDP_REPLY_WINDOW, capacity),
        }
    }

    /// Classify one segment seen at `now`. Returns the probe it reveals, if any.
    pub fn classify(&mut self, now: Millis, dir: Direction, seg: &Segment) -> Option<Probe> {
        match (dir, seg.l4) {
            (Direction::Inbound, L4::Udp) => {
                let reply = self.udp_flows.contains(now, &FlowKey::of_inbound(seg));
                (!reply).then(|| probe_from(seg, ProbeKind::Udp))
            }
            (Direction::Outbound, L4::Udp) => {
                self.udp_flows.insert(now, FlowKey::of_outbound(seg), ());
                None
            }
            (Direction::Inbound, L4::Tcp { flags }) => self.inbound_tcp(now, seg, flags),
            (Direction::Outbound, L4::Tcp { flags }) => self.outbound_tcp(now, seg, flags),
        }
    }

    fn inbound_tcp(&mut self, now: Millis, seg: &Segment, flags: TcpFlags) -> Option<Probe> {
        let f = flags.0 & CLASSIC_FLAGS;
        if f & TcpFlags::RST != 0 {
            return None;
        }
        if f & TcpFlags::ACK != 0 {
            // Established traffic, or an ACK/Maimon probe: only our reply can tell.
            if f & TcpFlags::FIN != 0 && f & TcpFlags::SYN == 0 {
                let fin_ack = FinAck {
                    ttl: seg.ttl,
                    ip_options: seg.ip_options,
                };
                self.fin_acks.insert(now, FlowKey::of_inbound(seg), fin_ack);
            }
            return None;
        }
        Some(probe_from(seg, kind_of_flags(flags)))
    }

    fn outbound_tcp(&mut self, now: Millis, seg: &Segment, flags: TcpFlags) -> Option<Probe> {
        if !flags.has(TcpFlags::RST) || flags.has(TcpFlags::ACK) {
            return None;
        }
        // Our RST answers an ACK-bearing segment that matched no socket.
        let (kind, ttl, ip_options) = match self.fin_acks.take(now, &FlowKey::of_outbound(seg)) {
            Some(fin_ack) => (ProbeKind::Maimon, fin_ack.ttl, fin_ack.ip_options),
            // The probe itself was not captured (the BPF filter passes no bare ACKs), so
            // its TTL and IP options are unknown.
            None => (ProbeKind::AckWindow, 0, false),
        };
        Some(Probe {
            src: seg.dst,
            dst: seg.src,
            sport: seg.dport,
            dport: seg.sport,
            kind,
            ip_options,
            ttl,
            verdict: crate::probe::Verdict::Observed,
        })
    }
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier::new(Classifier::DEFAULT_PENDING_CAPACITY)
    }
}

/// Classify an inbound segment that the kernel already judged: an nftables trap rule
/// matched it after the `socket` check found no local socket owning it, so an
/// ACK-bearing segment is itself the probe (no reply needs to be watched). RSTs and
/// SYN+ACK (backscatter of someone else's spoofed SYN) are never probes.
pub fn classify_trapped(seg: &Segment) -> Option<Probe> {
    let flags = match seg.l4 {
        L4::Udp => return Some(probe_from(seg, ProbeKind::Udp)),
        L4::Tcp { flags } => flags,
    };
    if !is_trap_probe(flags) {
        return None;
    }
    Some(probe_from(seg, kind_of_flags(flags)))
}

/// The flag tests a trap applies to an unsolicited TCP segment: each `(mask, value)`
/// pair rejects a segment whose `flags & mask == value`. Any RST is a reply, never a
/// probe; SYN+ACK is backscatter of someone else's spoofed SYN. The nftables trap rules
/// are rendered from this table (`tcp flags & MASK != VALUE`), so the kernel and
/// [`classify_trapped`] judge a segment by the same rule.
pub const TRAP_REJECTS: [(u8, u8); 2] = [
    (TcpFlags::RST, TcpFlags::RST),
    (TcpFlags::SYN | TcpFlags::ACK, TcpFlags::SYN | TcpFlags::ACK),
];

/// Whether a trap takes a segment with these flags as a probe ([`TRAP_REJECTS`]).
pub fn is_trap_probe(flags: TcpFlags) -> bool {
    TRAP_REJECTS
        .iter()
        .all(|&(mask, value)| flags.0 & mask != value)
}

/// The scan a segment with these flags (and no established context) belongs to: the
/// one flags → kind table, for the packet-socket classifier and for trapped segments.
/// ACK and FIN+ACK only reach it from a trap (the packet path tells them apart by our
/// RST answer instead).
pub fn kind_of_flags(flags: TcpFlags) -> ProbeKind {
    const FIN: u8 = TcpFlags::FIN;
    const SYN: u8 = TcpFlags::SYN;
    const ACK: u8 = TcpFlags::ACK;
    const FIN_ACK: u8 = TcpFlags::FIN | TcpFlags::ACK;
    const XMAS: u8 = TcpFlags::FIN | TcpFlags::PSH | TcpFlags::URG;
    match flags.0 & CLASSIC_FLAGS {
        SYN => ProbeKind::Syn,
        FIN => ProbeKind::Fin,
        0 => ProbeKind::Null,
        XMAS => ProbeKind::Xmas,
        ACK => ProbeKind::AckWindow,
        FIN_ACK => ProbeKind::Maimon,
        _ => ProbeKind::Other(flags),
    }
}

/// A probe whose fields come straight from an inbound segment.
fn probe_from(seg: &Segment, kind: ProbeKind) -> Probe {
    Probe {
        src: seg.src,
        dst: seg.dst,
        sport: seg.sport,
        dport: seg.dport,
        kind,
        ip_options: seg.ip_options,
        ttl: seg.ttl,
        verdict: crate::probe::Verdict::Observed,
    }
}

#[cfg(test)]
mod trapped_tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn seg(l4: L4) -> Segment {
        Segment {
            src: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
            dst: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            sport: 40000,
            dport: 80,
            l4,
            ip_options: false,
            ttl: 64,
        }
    }

    fn kind(flags: u8) -> Option<ProbeKind> {
        classify_trapped(&seg(L4::Tcp {
            flags: TcpFlags(flags),
        }))
        .map(|p| p.kind)
    }

    #[test]
    fn trap_rule_rejects_rst_and_syn_ack_only() {
        use TcpFlags as F;
        for (flags, probe) in [
            (F::SYN, true),
            (F::FIN, true),
            (0, true),
            (F::ACK, true),
            (F::FIN | F::ACK, true),
            (F::FIN | F::PSH | F::URG, true),
            (F::RST, false),
            (F::RST | F::ACK, false),
            (F::SYN | F::ACK, false),
            (F::SYN | F::ACK | F::PSH, false),
        ] {
            assert_eq!(is_trap_probe(TcpFlags(flags)), probe, "flags {flags:#04x}");
        }
    }

    #[test]
    fn trapped_segments_are_classified_by_their_own_flags() {
        assert_eq!(kind(TcpFlags::SYN), Some(ProbeKind::Syn));
        assert_eq!(kind(TcpFlags::ACK), Some(ProbeKind::AckWindow));
        assert_eq!(kind(TcpFlags::FIN | TcpFlags::ACK), Some(ProbeKind::Maimon));
        assert_eq!(kind(0), Some(ProbeKind::Null));
        assert_eq!(kind(TcpFlags::FIN), Some(ProbeKind::Fin));
        assert_eq!(
            kind(TcpFlags::FIN | TcpFlags::PSH | TcpFlags::URG),
            Some(ProbeKind::Xmas)
        );
        assert_eq!(
            classify_trapped(&seg(L4::Udp)).map(|p| p.kind),
            Some(ProbeKind::Udp)
        );
    }

    #[test]
    fn resets_and_backscatter_are_never_probes() {
        assert_eq!(kind(TcpFlags::RST), None);
        assert_eq!(kind(TcpFlags::RST | TcpFlags::ACK), None);
        assert_eq!(kind(TcpFlags::SYN | TcpFlags::ACK), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const FIN: u8 = TcpFlags::FIN;
    const SYN: u8 = TcpFlags::SYN;
    const RST: u8 = TcpFlags::RST;
    const PSH: u8 = TcpFlags::PSH;
    const ACK: u8 = TcpFlags::ACK;
    const URG: u8 = TcpFlags::URG;
    const ECE: u8 = 0x40;
    const CWR: u8 = 0x80;

    const REMOTE: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const REMOTE6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9));
    const LOCAL6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));

    fn tcp(flags: u8) -> L4 {
        L4::Tcp {
            flags: TcpFlags(flags),
        }
    }

    /// Inbound segment from `REMOTE:40000` to `LOCAL:port`.
    fn inbound(port: u16, l4: L4) -> Segment {
        Segment {
            src: REMOTE,
            dst: LOCAL,
            sport: 40000,
            dport: port,
            l4,
            ip_options: true,
            ttl: 47,
        }
    }

    /// Our reply from `LOCAL:port` to `REMOTE:40000`.
    fn outbound(port: u16, l4: L4) -> Segment {
        Segment {
            src: LOCAL,
            dst: REMOTE,
            sport: port,
            dport: 40000,
            l4,
            ip_options: false,
            ttl: 64,
        }
    }

    fn kind_in(flags: u8) -> Option<ProbeKind> {
        Classifier::default()
            .classify(Millis(0), Direction::Inbound, &inbound(22, tcp(flags)))
            .map(|p| p.kind)
    }

    #[test]
    fn inbound_tcp_without_ack() {
        assert_eq!(kind_in(SYN), Some(ProbeKind::Syn));
        assert_eq!(kind_in(FIN), Some(ProbeKind::Fin));
        assert_eq!(kind_in(0), Some(ProbeKind::Null));
        assert_eq!(kind_in(FIN | PSH | URG), Some(ProbeKind::Xmas));
        assert_eq!(
            kind_in(SYN | FIN),
            Some(ProbeKind::Other(TcpFlags(SYN | FIN)))
        );
        assert_eq!(kind_in(PSH), Some(ProbeKind::Other(TcpFlags(PSH))));
        assert_eq!(
            kind_in(FIN | URG),
            Some(ProbeKind::Other(TcpFlags(FIN | URG)))
        );
    }

    #[test]
    fn ecn_bits_do_not_change_the_kind() {
        assert_eq!(kind_in(SYN | ECE | CWR), Some(ProbeKind::Syn));
        assert_eq!(kind_in(ECE), Some(ProbeKind::Null));
        // ... but an odd mix keeps every bit for the report.
        assert_eq!(
            kind_in(SYN | FIN | ECE),
            Some(ProbeKind::Other(TcpFlags(SYN | FIN | ECE)))
        );
    }

    #[test]
    fn inbound_probe_copies_the_segment() {
        let seg = inbound(22, tcp(SYN));
        let probe = Classifier::default()
            .classify(Millis(5), Direction::Inbound, &seg)
            .unwrap();
        assert_eq!(
            probe,
            Probe {
                src: REMOTE,
                dst: LOCAL,
                sport: 40000,
                dport: 22,
                kind: ProbeKind::Syn,
                ip_options: true,
                ttl: 47,
                verdict: crate::probe::Verdict::Observed,
            }
        );
    }

    #[test]
    fn rsts_are_never_probes() {
        for flags in [RST, RST | ACK, RST | SYN, RST | FIN, RST | FIN | PSH | URG] {
            assert_eq!(kind_in(flags), None, "{flags:#x}");
        }
    }

    #[test]
    fn inbound_ack_bearing_segments_are_not_probes() {
        for flags in [
            ACK,
            SYN | ACK,
            FIN | ACK,
            FIN | PSH | ACK,
            PSH | ACK,
            URG | ACK,
        ] {
            assert_eq!(kind_in(flags), None, "{flags:#x}");
        }
    }

    #[test]
    fn udp_inbound_is_a_probe_outbound_is_not() {
        let mut c = Classifier::default();
        let probe = c
            .classify(Millis(0), Direction::Inbound, &inbound(161, L4::Udp))
            .unwrap();
        assert_eq!(probe.kind, ProbeKind::Udp);
        assert_eq!((probe.src, probe.dport, probe.ttl), (REMOTE, 161, 47));
        assert_eq!(
            c.classify(Millis(0), Direction::Outbound, &outbound(161, L4::Udp)),
            None
        );
    }

    /// Our datagram from `LOCAL:lport` to `REMOTE:40000`, and its answer.
    fn udp_out(lport: u16) -> Segment {
        outbound(lport, L4::Udp)
    }
    fn udp_reply(lport: u16) -> Segment {
        inbound(lport, L4::Udp)
    }

    fn is_probe(c: &mut Classifier, t: u64, seg: &Segment) -> bool {
        c.classify(Millis(t), Direction::Inbound, seg).is_some()
    }

    const W: u64 = 30_000;

    #[test]
    fn udp_reply_window_edges() {
        assert_eq!(UDP_REPLY_WINDOW, Duration::from_millis(W));
        let mut c = Classifier::default();
        assert_eq!(
            c.classify(Millis(1_000), Direction::Outbound, &udp_out(700)),
            None
        );
        // Same instant, within, at the edge: replies. The flow is not used up.
        for t in [1_000, 1_001, 16_000, 1_000 + W] {
            assert!(!is_probe(&mut c, t, &udp_reply(700)), "t={t}");
        }
        // One millisecond past the window: a probe again.
        let p = c
            .classify(Millis(1_001 + W), Direction::Inbound, &udp_reply(700))
            .unwrap();
        assert_eq!(p.kind, ProbeKind::Udp);
        assert_eq!((p.src, p.sport, p.dport), (REMOTE, 40000, 700));
        // A datagram on a port we never sent from was always a probe.
        assert!(is_probe(&mut c, 1_000, &udp_reply(701)));
    }

    #[test]
    fn udp_flow_is_kept_alive_only_by_our_own_datagrams() {
        let mut c = Classifier::default();
        c.classify(Millis(0), Direction::Outbound, &udp_out(123));
        // Inbound datagrams do not refresh the flow: a remote cannot keep it open.
        for t in (0..=W).step_by(5_000) {
            assert!(!is_probe(&mut c, t, &udp_reply(123)), "t={t}");
        }
        assert!(is_probe(&mut c, W + 1, &udp_reply(123)));
        // Our next datagram opens it again, from its own time.
        c.classify(Millis(W + 10), Direction::Outbound, &udp_out(123));
        assert!(!is_probe(&mut c, W + 10, &udp_reply(123)));
        c.classify(Millis(W + 20_000), Direction::Outbound, &udp_out(123));
        assert!(!is_probe(&mut c, 2 * W + 20_000, &udp_reply(123)));
        assert!(is_probe(&mut c, 2 * W + 20_001, &udp_reply(123)));
    }

    #[test]
    fn udp_reply_needs_the_same_flow() {
        let mut c = Classifier::default();
        c.classify(Millis(0), Direction::Outbound, &udp_out(700));
        // Other local port.
        assert!(is_probe(&mut c, 1, &udp_reply(53)));
        // Other remote port.
        let mut seg = udp_reply(700);
        seg.sport = 40001;
        assert!(is_probe(&mut c, 1, &seg));
        // Other remote address.
        let mut seg = udp_reply(700);
        seg.src = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
        assert!(is_probe(&mut c, 1, &seg));
        // The right one is a reply.
        assert!(!is_probe(&mut c, 1, &udp_reply(700)));
        // A TCP segment on the same triple is judged as TCP: the flow does not exempt it.
        let p = c.classify(Millis(1), Direction::Inbound, &inbound(700, tcp(SYN)));
        assert_eq!(p.unwrap().kind, ProbeKind::Syn);
    }

    #[test]
    fn udp_flows_and_fin_acks_do_not_mix() {
        let mut c = Classifier::default();
        // Our UDP datagram does not make a later RST on the same triple a Maimon probe.
        c.classify(Millis(0), Direction::Outbound, &udp_out(8080));
        let p = c.classify(Millis(1), Direction::Outbound, &outbound(8080, tcp(RST)));
        assert_eq!(p.unwrap().kind, ProbeKind::AckWindow);
        // An inbound FIN+ACK does not make a UDP datagram on its triple a reply.
        c.classify(
            Millis(2),
            Direction::Inbound,
            &inbound(9090, tcp(FIN | ACK)),
        );
        assert!(is_probe(&mut c, 3, &udp_reply(9090)));
        assert_eq!(c.fin_acks.map.len(), 1);
        assert_eq!(c.udp_flows.map.len(), 1);
    }

    #[test]
    fn udp_flows_ipv6() {
        let mut c = Classifier::default();
        let query = Segment {
            src: LOCAL6,
            dst: REMOTE6,
            sport: 701,
            dport: 53,
            l4: L4::Udp,
            ip_options: false,
            ttl: 64,
        };
        let answer = Segment {
            src: REMOTE6,
            dst: LOCAL6,
            sport: 53,
            dport: 701,
            l4: L4::Udp,
            ip_options: false,
            ttl: 58,
        };
        assert!(is_probe(&mut c, 0, &answer), "before any query");
        assert_eq!(c.classify(Millis(5), Direction::Outbound, &query), None);
        assert!(!is_probe(&mut c, 6, &answer));
        assert!(!is_probe(&mut c, 5 + W, &answer));
        assert!(is_probe(&mut c, 6 + W, &answer));
        // A v4 datagram with the same ports is another flow.
        c.classify(Millis(10 + W), Direction::Outbound, &query);
        let v4 = Segment {
            src: REMOTE,
            dst: LOCAL,
            ..answer
        };
        assert!(is_probe(&mut c, 11 + W, &v4));
        assert!(!is_probe(&mut c, 11 + W, &answer));
    }

    /// Our `i`-th distinct datagram: local port and remote address vary.
    fn distinct_udp_out(i: u32) -> Segment {
        Segment {
            dst: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i >> 10))),
            sport: 1 + u16::try_from(i & 0x3ff).unwrap(),
            ..udp_out(1)
        }
    }

    fn reply_to(out: &Segment) -> Segment {
        Segment {
            src: out.dst,
            dst: out.src,
            sport: out.dport,
            dport: out.sport,
            l4: L4::Udp,
            ip_options: false,
            ttl: 60,
        }
    }

    #[test]
    fn udp_flow_table_holds_its_bound_under_100k_flows() {
        let cap = Classifier::DEFAULT_PENDING_CAPACITY;
        let n = 100_000u32;
        // All in one instant: eviction holds the bound, the newest `cap` are kept.
        let mut c = Classifier::new(cap);
        for i in 0..n {
            c.classify(Millis(0), Direction::Outbound, &distinct_udp_out(i));
            assert_bounded(&c);
        }
        assert_eq!(c.udp_flows.map.len(), cap);
        let cap32 = u32::try_from(cap).unwrap();
        for (i, probe) in [(n - 1, false), (n - cap32, false), (n - cap32 - 1, true)] {
            let reply = reply_to(&distinct_udp_out(i));
            assert_eq!(is_probe(&mut c, 1, &reply), probe, "flow {i}");
        }
        // One flow per millisecond into a small table (30001 per window): bounded.
        let mut c = Classifier::new(1000);
        for i in 0..n {
            c.classify(
                Millis(u64::from(i)),
                Direction::Outbound,
                &distinct_udp_out(i),
            );
            assert_bounded(&c);
        }
        // The same flow over and over: one entry, the queue does not grow.
        let mut c = Classifier::new(16);
        for t in 0..u64::from(n) {
            c.classify(Millis(t / 10), Direction::Outbound, &udp_out(123));
            assert_bounded(&c);
        }
        assert_eq!(c.udp_flows.map.len(), 1);
        // After a quiet spell the next datagram clears everything stale.
        let mut c = Classifier::new(cap);
        for i in 0..n {
            c.classify(Millis(0), Direction::Outbound, &distinct_udp_out(i));
        }
        c.classify(Millis(1 + W), Direction::Outbound, &udp_out(123));
        assert_eq!(c.udp_flows.map.len(), 1);
        assert_eq!(c.udp_flows.order.len(), 1);
    }

    #[test]
    fn inbound_udp_never_fills_the_flow_table() {
        let mut c = Classifier::new(64);
        for i in 0..100_000u32 {
            let probe = reply_to(&distinct_udp_out(i));
            assert!(is_probe(&mut c, u64::from(i), &probe));
        }
        assert!(c.udp_flows.map.is_empty());
        assert!(c.udp_flows.order.is_empty());
    }

    #[test]
    fn zero_capacity_disables_reply_recognition() {
        let mut c = Classifier::new(0);
        c.classify(Millis(0), Direction::Outbound, &udp_out(700));
        assert!(c.udp_flows.map.is_empty());
        assert!(is_probe(&mut c, 1, &udp_reply(700)));
    }

    #[test]
    fn outbound_tcp_other_than_bare_rst_is_ignored() {
        let mut c = Classifier::default();
        for flags in [SYN, SYN | ACK, ACK, FIN | ACK, RST | ACK, 0] {
            assert_eq!(
                c.classify(Millis(0), Direction::Outbound, &outbound(22, tcp(flags))),
                None,
                "{flags:#x}"
            );
        }
    }

    #[test]
    fn bare_outbound_rst_is_an_ack_window_probe() {
        let mut c = Classifier::default();
        let probe = c
            .classify(Millis(0), Direction::Outbound, &outbound(8080, tcp(RST)))
            .unwrap();
        assert_eq!(
            probe,
            Probe {
                src: REMOTE,
                dst: LOCAL,
                sport: 40000,
                dport: 8080,
                kind: ProbeKind::AckWindow,
                ip_options: false,
                ttl: 0,
                verdict: crate::probe::Verdict::Observed,
            }
        );
    }

    #[test]
    fn maimon_pairs_within_the_window() {
        let mut c = Classifier::default();
        let fin_ack = inbound(8080, tcp(FIN | ACK));
        assert_eq!(
            c.classify(Millis(1_000), Direction::Inbound, &fin_ack),
            None
        );
        let probe = c
            .classify(
                Millis(3_000),
                Direction::Outbound,
                &outbound(8080, tcp(RST)),
            )
            .unwrap();
        assert_eq!(
            probe,
            Probe {
                src: REMOTE,
                dst: LOCAL,
                sport: 40000,
                dport: 8080,
                kind: ProbeKind::Maimon,
                ip_options: true,
                ttl: 47,
                verdict: crate::probe::Verdict::Observed,
            }
        );
        // The entry is used up: a second RST to the same triple is a plain ACK probe.
        let again = c
            .classify(
                Millis(3_001),
                Direction::Outbound,
                &outbound(8080, tcp(RST)),
            )
            .unwrap();
        assert_eq!(again.kind, ProbeKind::AckWindow);
    }

    #[test]
    fn maimon_expires_after_the_window() {
        let mut c = Classifier::default();
        c.classify(
            Millis(1_000),
            Direction::Inbound,
            &inbound(8080, tcp(FIN | ACK)),
        );
        let probe = c
            .classify(
                Millis(3_001),
                Direction::Outbound,
                &outbound(8080, tcp(RST)),
            )
            .unwrap();
        assert_eq!(probe.kind, ProbeKind::AckWindow);
        assert_eq!((probe.ttl, probe.ip_options), (0, false));
        assert!(c.fin_acks.map.is_empty());
    }

    #[test]
    fn maimon_needs_the_same_triple() {
        let mut c = Classifier::default();
        c.classify(
            Millis(0),
            Direction::Inbound,
            &inbound(8080, tcp(FIN | ACK)),
        );
        // Other local port.
        let p = c.classify(Millis(1), Direction::Outbound, &outbound(8081, tcp(RST)));
        assert_eq!(p.unwrap().kind, ProbeKind::AckWindow);
        // Other remote port.
        let mut rst = outbound(8080, tcp(RST));
        rst.dport = 40001;
        let p = c.classify(Millis(1), Direction::Outbound, &rst);
        assert_eq!(p.unwrap().kind, ProbeKind::AckWindow);
        // Other remote address.
        let mut rst = outbound(8080, tcp(RST));
        rst.dst = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
        let p = c.classify(Millis(1), Direction::Outbound, &rst);
        assert_eq!(p.unwrap().kind, ProbeKind::AckWindow);
        // The right one still pairs.
        let p = c.classify(Millis(1), Direction::Outbound, &outbound(8080, tcp(RST)));
        assert_eq!(p.unwrap().kind, ProbeKind::Maimon);
    }

    #[test]
    fn outbound_rst_ack_neither_reports_nor_consumes() {
        let mut c = Classifier::default();
        c.classify(
            Millis(0),
            Direction::Inbound,
            &inbound(8080, tcp(FIN | ACK)),
        );
        assert_eq!(
            c.classify(
                Millis(1),
                Direction::Outbound,
                &outbound(8080, tcp(RST | ACK))
            ),
            None
        );
        let p = c.classify(Millis(2), Direction::Outbound, &outbound(8080, tcp(RST)));
        assert_eq!(p.unwrap().kind, ProbeKind::Maimon);
    }

    #[test]
    fn syn_fin_ack_and_rst_fin_ack_are_not_remembered() {
        let mut c = Classifier::default();
        c.classify(
            Millis(0),
            Direction::Inbound,
            &inbound(8080, tcp(SYN | FIN | ACK)),
        );
        c.classify(
            Millis(0),
            Direction::Inbound,
            &inbound(8080, tcp(RST | FIN | ACK)),
        );
        assert!(c.fin_acks.map.is_empty());
    }

    #[test]
    fn refreshed_entry_pairs_with_its_latest_time() {
        let mut c = Classifier::default();
        c.classify(
            Millis(0),
            Direction::Inbound,
            &inbound(8080, tcp(FIN | ACK)),
        );
        c.classify(
            Millis(1_500),
            Direction::Inbound,
            &inbound(8080, tcp(FIN | ACK)),
        );
        // Another FIN+ACK after the first one's window: expiry must not drop the refresh.
        c.classify(
            Millis(2_500),
            Direction::Inbound,
            &inbound(9090, tcp(FIN | ACK)),
        );
        let p = c.classify(
            Millis(3_000),
            Direction::Outbound,
            &outbound(8080, tcp(RST)),
        );
        assert_eq!(p.unwrap().kind, ProbeKind::Maimon);
    }

    #[test]
    fn ipv6_probes_and_maimon_pairing() {
        let mut c = Classifier::default();
        let syn = Segment {
            src: REMOTE6,
            dst: LOCAL6,
            sport: 50000,
            dport: 22,
            l4: tcp(SYN),
            ip_options: false,
            ttl: 58,
        };
        let p = c.classify(Millis(0), Direction::Inbound, &syn).unwrap();
        assert_eq!((p.src, p.dst, p.kind), (REMOTE6, LOCAL6, ProbeKind::Syn));

        let fin_ack = Segment {
            l4: tcp(FIN | ACK),
            dport: 8443,
            ..syn
        };
        assert_eq!(c.classify(Millis(10), Direction::Inbound, &fin_ack), None);
        let rst = Segment {
            src: LOCAL6,
            dst: REMOTE6,
            sport: 8443,
            dport: 50000,
            l4: tcp(RST),
            ip_options: false,
            ttl: 64,
        };
        let p = c.classify(Millis(20), Direction::Outbound, &rst).unwrap();
        assert_eq!(
            p,
            Probe {
                src: REMOTE6,
                dst: LOCAL6,
                sport: 50000,
                dport: 8443,
                kind: ProbeKind::Maimon,
                ip_options: false,
                ttl: 58,
                verdict: crate::probe::Verdict::Observed,
            }
        );
        // A v4 RST with the same ports does not pair with a v6 FIN+ACK.
        c.classify(Millis(30), Direction::Inbound, &fin_ack);
        let p = c.classify(Millis(31), Direction::Outbound, &outbound(8443, tcp(RST)));
        assert_eq!(p.unwrap().kind, ProbeKind::AckWindow);
    }

    fn assert_table_bounded<K, V>(t: &Recent<K, V>) {
        assert!(t.map.len() <= t.capacity, "{} entries", t.map.len());
        assert!(t.order.len() <= 2 * t.capacity, "{} records", t.order.len());
    }

    fn assert_bounded(c: &Classifier) {
        assert_table_bounded(&c.fin_acks);
        assert_table_bounded(&c.udp_flows);
    }

    /// The `i`-th distinct FIN+ACK: remote address and port vary.
    fn distinct_fin_ack(i: u32) -> Segment {
        Segment {
            src: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i >> 8))),
            sport: 1024 + u16::try_from(i & 0xff).unwrap(),
            ..inbound(8080, tcp(FIN | ACK))
        }
    }

    fn rst_for(fin_ack: &Segment) -> Segment {
        Segment {
            src: fin_ack.dst,
            dst: fin_ack.src,
            sport: fin_ack.dport,
            dport: fin_ack.sport,
            l4: tcp(RST),
            ip_options: false,
            ttl: 64,
        }
    }

    #[test]
    fn capacity_holds_under_a_flood_in_one_instant() {
        let cap = Classifier::DEFAULT_PENDING_CAPACITY;
        let mut c = Classifier::new(cap);
        let n = 100_000u32;
        for i in 0..n {
            c.classify(Millis(0), Direction::Inbound, &distinct_fin_ack(i));
            assert_bounded(&c);
        }
        assert_eq!(c.fin_acks.map.len(), cap);
        // The newest `cap` are kept, the oldest were evicted.
        let newest = rst_for(&distinct_fin_ack(n - 1));
        let oldest_kept = rst_for(&distinct_fin_ack(n - u32::try_from(cap).unwrap()));
        let evicted = rst_for(&distinct_fin_ack(n - u32::try_from(cap).unwrap() - 1));
        for (rst, kind) in [
            (newest, ProbeKind::Maimon),
            (oldest_kept, ProbeKind::Maimon),
            (evicted, ProbeKind::AckWindow),
        ] {
            let p = c.classify(Millis(1), Direction::Outbound, &rst).unwrap();
            assert_eq!(p.kind, kind);
        }
    }

    #[test]
    fn capacity_holds_while_time_moves() {
        let mut c = Classifier::new(1000);
        for i in 0..100_000u32 {
            // One FIN+ACK per millisecond: 2001 within the window, more than capacity.
            c.classify(
                Millis(u64::from(i)),
                Direction::Inbound,
                &distinct_fin_ack(i),
            );
            assert_bounded(&c);
        }
        // Ten per millisecond into a small table: eviction, not expiry, holds the bound.
        let mut c = Classifier::new(64);
        for i in 0..100_000u32 {
            c.classify(
                Millis(u64::from(i / 10)),
                Direction::Inbound,
                &distinct_fin_ack(i),
            );
            assert_bounded(&c);
        }
        // After a quiet spell the next insert clears everything stale.
        c.classify(Millis(1_000_000), Direction::Inbound, &distinct_fin_ack(0));
        assert_eq!(c.fin_acks.map.len(), 1);
        assert_eq!(c.fin_acks.order.len(), 1);
    }

    #[test]
    fn repeated_fin_acks_do_not_grow_the_queue() {
        let mut c = Classifier::new(16);
        let seg = inbound(8080, tcp(FIN | ACK));
        for t in 0..100_000u64 {
            c.classify(Millis(t / 100), Direction::Inbound, &seg);
            assert_bounded(&c);
        }
        assert_eq!(c.fin_acks.map.len(), 1);
    }

    #[test]
    fn pairing_consumes_entries_without_leaking_records() {
        let mut c = Classifier::new(32);
        for i in 0..100_000u32 {
            let fin_ack = distinct_fin_ack(i);
            c.classify(Millis(u64::from(i)), Direction::Inbound, &fin_ack);
            let p = c.classify(
                Millis(u64::from(i)),
                Direction::Outbound,
                &rst_for(&fin_ack),
            );
            assert_eq!(p.unwrap().kind, ProbeKind::Maimon);
            assert_bounded(&c);
        }
        assert!(c.fin_acks.map.is_empty());
    }

    #[test]
    fn zero_capacity_disables_pairing() {
        let mut c = Classifier::new(0);
        c.classify(
            Millis(0),
            Direction::Inbound,
            &inbound(8080, tcp(FIN | ACK)),
        );
        assert!(c.fin_acks.map.is_empty());
        let p = c.classify(Millis(1), Direction::Outbound, &outbound(8080, tcp(RST)));
        assert_eq!(p.unwrap().kind, ProbeKind::AckWindow);
    }
}
