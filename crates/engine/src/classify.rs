//! Turns parsed [`Segment`]s into [`Probe`]s. The sensor hands us inbound segments and
//! the host's own outbound replies; this module owns the rules that say which of them is
//! a probe, and the small table that pairs an inbound FIN+ACK with the RST the kernel
//! sends back.
//!
//! Why outbound RSTs: an ACK-bearing probe (nmap -sA/-sW, or -sM's FIN+ACK) looks exactly
//! like established traffic, so it cannot be judged on its own. But when it matches no
//! socket the kernel answers with a bare RST (RFC 793: seq = SEG.ACK, ACK flag clear),
//! and that reply is the evidence. Replies to SYN/FIN/NULL/XMAS on closed ports carry
//! RST+ACK instead, and those probes were already reported on the way in.
//!
//! Invariants:
//! - RST segments are never probes; inbound ACK-bearing segments are never probes by
//!   themselves; outbound traffic is a probe only as a bare RST.
//! - The FIN+ACK table holds at most `pending_capacity` entries; an entry counts for
//!   pairing only within [`MAIMON_WINDOW`]. When full, expired entries go first, then the
//!   oldest. Its insertion-order queue holds at most `2 * pending_capacity` records. Both
//!   are reserved up front, so a warm classifier does not allocate per call (the hash
//!   table may grow once under heavy churn, then stays put).
//! - Losing an entry (evicted, expired) only downgrades a Maimon probe to AckWindow; it
//!   never hides a probe.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use crate::probe::{Probe, ProbeKind, TcpFlags};
use crate::time::Millis;
use crate::wire::{L4, Segment};

/// How long an inbound FIN+ACK may wait for our RST and still be called a Maimon probe.
/// The kernel answers within microseconds; 2 s leaves room for a stalled capture loop
/// while keeping a legitimate late FIN+ACK from long ago out of the pairing.
pub const MAIMON_WINDOW: Duration = Duration::from_secs(2);

/// The six classic flag bits. ECE/CWR are left out of classification, as PortSentry 1.2
/// did: an ECN-setup SYN is still a SYN.
const CLASSIC_FLAGS: u8 = 0x3f;

/// Which way a segment crossed the host's interfaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Sent to this host.
    Inbound,
    /// Sent by this host (the kernel's own replies).
    Outbound,
}

/// An inbound FIN+ACK is remembered under (remote address, remote port, local port): the
/// same triple that our RST carries as (destination, destination port, source port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PendingKey {
    remote: IpAddr,
    remote_port: u16,
    local_port: u16,
}

#[derive(Clone, Copy, Debug)]
struct FinAck {
    seen: Millis,
    ttl: u8,
    ip_options: bool,
    /// Matches the entry to its live record in `Classifier::order`.
    seq: u64,
}

/// Stateful classifier: one per sensor loop.
#[derive(Debug)]
pub struct Classifier {
    capacity: usize,
    pending: HashMap<PendingKey, FinAck>,
    /// Insertion order of `pending`, oldest first. A record is live iff `pending` holds
    /// its key with the same `seq`; records left behind by a removal or refresh are
    /// skipped when met and swept out when the queue reaches `2 * capacity`.
    order: VecDeque<(PendingKey, u64)>,
    next_seq: u64,
}

impl Classifier {
    /// Enough for a busy server's connection closes within [`MAIMON_WINDOW`]; about 50
    /// bytes per entry.
    pub const DEFAULT_PENDING_CAPACITY: usize = 4096;

    /// A classifier remembering at most `pending_capacity` FIN+ACKs. Zero disables Maimon
    /// pairing: every bare outbound RST is then reported as AckWindow.
    pub fn new(pending_capacity: usize) -> Self {
        Classifier {
            capacity: pending_capacity,
            pending: HashMap::with_capacity(pending_capacity),
            order: VecDeque::with_capacity(pending_capacity.saturating_mul(2)),
            next_seq: 0,
        }
    }

    /// Classify one segment seen at `now`. Returns the probe it reveals, if any.
    pub fn classify(&mut self, now: Millis, dir: Direction, seg: &Segment) -> Option<Probe> {
        match (dir, seg.l4) {
            (Direction::Inbound, L4::Udp) => Some(probe_from(seg, ProbeKind::Udp)),
            (Direction::Outbound, L4::Udp) => None,
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
                let key = PendingKey {
                    remote: seg.src,
                    remote_port: seg.sport,
                    local_port: seg.dport,
                };
                self.remember(now, key, seg.ttl, seg.ip_options);
            }
            return None;
        }
        const FIN: u8 = TcpFlags::FIN;
        const SYN: u8 = TcpFlags::SYN;
        const XMAS: u8 = TcpFlags::FIN | TcpFlags::PSH | TcpFlags::URG;
        let kind = match f {
            SYN => ProbeKind::Syn,
            FIN => ProbeKind::Fin,
            0 => ProbeKind::Null,
            XMAS => ProbeKind::Xmas,
            _ => ProbeKind::Other(flags),
        };
        Some(probe_from(seg, kind))
    }

    fn outbound_tcp(&mut self, now: Millis, seg: &Segment, flags: TcpFlags) -> Option<Probe> {
        if !flags.has(TcpFlags::RST) || flags.has(TcpFlags::ACK) {
            return None;
        }
        // Our RST answers an ACK-bearing segment that matched no socket.
        let key = PendingKey {
            remote: seg.dst,
            remote_port: seg.dport,
            local_port: seg.sport,
        };
        let (kind, ttl, ip_options) = match self.take(now, key) {
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
        })
    }

    fn remember(&mut self, now: Millis, key: PendingKey, ttl: u8, ip_options: bool) {
        if self.capacity == 0 {
            return;
        }
        self.expire(now);
        let seq = self.next_seq;
        self.next_seq += 1;
        let fin_ack = FinAck {
            seen: now,
            ttl,
            ip_options,
            seq,
        };
        match self.pending.entry(key) {
            // A refresh: the old queue record goes stale.
            Entry::Occupied(mut e) => {
                e.insert(fin_ack);
            }
            Entry::Vacant(e) => {
                e.insert(fin_ack);
                if self.pending.len() > self.capacity {
                    self.evict_oldest();
                }
            }
        }
        if self.order.len() >= self.capacity.saturating_mul(2) {
            self.sweep();
        }
        self.order.push_back((key, seq));
    }

    /// Remove and return the FIN+ACK this RST answers, if it is recent enough.
    fn take(&mut self, now: Millis, key: PendingKey) -> Option<FinAck> {
        let fin_ack = self.pending.remove(&key)?;
        (now.since(fin_ack.seen) <= MAIMON_WINDOW).then_some(fin_ack)
    }

    /// Drop entries older than the pairing window from the front of the queue.
    fn expire(&mut self, now: Millis) {
        while let Some(&(key, seq)) = self.order.front() {
            match self.pending.get(&key) {
                Some(e) if e.seq == seq => {
                    if now.since(e.seen) <= MAIMON_WINDOW {
                        break;
                    }
                    self.pending.remove(&key);
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
            if self.pending.get(&key).is_some_and(|e| e.seq == seq) {
                self.pending.remove(&key);
                return;
            }
        }
    }

    /// Remove stale records, leaving one per live entry (at most `capacity`).
    fn sweep(&mut self) {
        let pending = &self.pending;
        self.order
            .retain(|(key, seq)| pending.get(key).is_some_and(|e| e.seq == *seq));
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
    let f = flags.0 & CLASSIC_FLAGS;
    const FIN: u8 = TcpFlags::FIN;
    const SYN: u8 = TcpFlags::SYN;
    const ACK: u8 = TcpFlags::ACK;
    const FIN_ACK: u8 = TcpFlags::FIN | TcpFlags::ACK;
    const XMAS: u8 = TcpFlags::FIN | TcpFlags::PSH | TcpFlags::URG;
    if f & TcpFlags::RST != 0 || f & (SYN | ACK) == SYN | ACK {
        return None;
    }
    let kind = match f {
        SYN => ProbeKind::Syn,
        FIN => ProbeKind::Fin,
        0 => ProbeKind::Null,
        XMAS => ProbeKind::Xmas,
        ACK => ProbeKind::AckWindow,
        FIN_ACK => ProbeKind::Maimon,
        _ => ProbeKind::Other(flags),
    };
    Some(probe_from(seg, kind))
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
        assert!(c.pending.is_empty());
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
        assert!(c.pending.is_empty());
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
            }
        );
        // A v4 RST with the same ports does not pair with a v6 FIN+ACK.
        c.classify(Millis(30), Direction::Inbound, &fin_ack);
        let p = c.classify(Millis(31), Direction::Outbound, &outbound(8443, tcp(RST)));
        assert_eq!(p.unwrap().kind, ProbeKind::AckWindow);
    }

    fn assert_bounded(c: &Classifier) {
        assert!(c.pending.len() <= c.capacity, "{} entries", c.pending.len());
        assert!(c.order.len() <= 2 * c.capacity, "{} records", c.order.len());
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
        assert_eq!(c.pending.len(), cap);
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
        assert_eq!(c.pending.len(), 1);
        assert_eq!(c.order.len(), 1);
    }

    #[test]
    fn repeated_fin_acks_do_not_grow_the_queue() {
        let mut c = Classifier::new(16);
        let seg = inbound(8080, tcp(FIN | ACK));
        for t in 0..100_000u64 {
            c.classify(Millis(t / 100), Direction::Inbound, &seg);
            assert_bounded(&c);
        }
        assert_eq!(c.pending.len(), 1);
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
        assert!(c.pending.is_empty());
    }

    #[test]
    fn zero_capacity_disables_pairing() {
        let mut c = Classifier::new(0);
        c.classify(
            Millis(0),
            Direction::Inbound,
            &inbound(8080, tcp(FIN | ACK)),
        );
        assert!(c.pending.is_empty());
        let p = c.classify(Millis(1), Direction::Outbound, &outbound(8080, tcp(RST)));
        assert_eq!(p.unwrap().kind, ProbeKind::AckWindow);
    }
}
