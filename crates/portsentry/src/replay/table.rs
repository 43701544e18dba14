//! A model of our nftables table for `portsentry replay`, pure: the same rule order
//! as `kernel::nft::ruleset` renders it, applied to captured segments with the
//! capture's own time. It decides, per inbound segment, what the live kernel would
//! have done before the daemon saw anything: drop it for a ban, let a local socket
//! have it, log it as a probe, or ban its source on it (the fast path), with the
//! known-peer, budget and set-size rules on the way.
//!
//! What a capture cannot show, and how it is stood in for:
//! - *Local sockets.* A TCP port is taken as listening when this host answered a SYN
//!   from it (SYN+ACK) anywhere in the capture, a UDP port as bound when this host
//!   sent from it; a connection this host opened owns its flow from its first segment.
//!   A port that never answered is closed, as it was to every probe the capture holds.
//! - *The budget's and the samples' token buckets* run on capture time, as the kernel's
//!   run on its clock.
//! - Interfaces (2.x `-i`) and loopback are not told apart: a capture is of the
//!   interfaces the admin chose.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ipnet::IpNet;
use portsentry_engine::classify::{classify_trapped, is_trap_probe};
use portsentry_engine::ignore::IgnoreSet;
use portsentry_engine::wire::{L4, Segment};
use portsentry_engine::{Millis, Probe, Proto, TcpFlags, Verdict};
use portsentry_kernel::backend::{BackendError, BanBackend, Expiry, Held};
use portsentry_kernel::nft::TrapSpec;

use crate::bans::BanBudget;

/// Most flows opened by this host remembered at once (oldest dropped first).
const FLOWS: usize = 65_536;
/// The NFLOG samples of the peer and over-budget rules: `limit rate 10/second burst 10`.
const SAMPLE_RATE: u32 = 10;
/// The set-full sample: `limit rate 1/second burst 1`.
const FULL_SAMPLE_RATE: u32 = 1;

/// The ban sets' elements (`banned4/6` and `bannednet4/6`), written by the trap rule
/// and by the daemon's ban lifecycle through [`ModelBackend`]. Times are capture
/// milliseconds since the epoch.
#[derive(Debug, Default)]
pub struct BanSets {
    now_ms: u64,
    size: usize,
    hosts: HashMap<IpAddr, Option<u64>>,
    nets: Vec<(IpNet, Option<u64>)>,
}

impl BanSets {
    fn live(until: Option<u64>, now: u64) -> bool {
        until.is_none_or(|u| u > now)
    }

    /// Whether `ip` is in a ban set now.
    pub fn holds(&self, ip: IpAddr) -> bool {
        let now = self.now_ms;
        self.hosts.get(&ip).is_some_and(|u| Self::live(*u, now))
            || self
                .nets
                .iter()
                .any(|(net, u)| net.contains(&ip) && Self::live(*u, now))
    }

    /// Add a host element as the kernel does: an existing element keeps its time (the
    /// trap's `add` does not refresh it), a full set refuses.
    fn add_host(&mut self, ip: IpAddr, until: Option<u64>) -> bool {
        let now = self.now_ms;
        self.hosts.retain(|_, u| Self::live(*u, now));
        if self.hosts.contains_key(&ip) {
            return true;
        }
        if self.hosts.len() >= self.size {
            return false;
        }
        self.hosts.insert(ip, until);
        true
    }

    /// Elements in force.
    pub fn in_force(&self) -> usize {
        let now = self.now_ms;
        self.hosts.values().filter(|u| Self::live(**u, now)).count()
            + self
                .nets
                .iter()
                .filter(|(_, u)| Self::live(*u, now))
                .count()
    }
}

/// The sets, shared by the table model and the backend the ban lifecycle writes to.
#[derive(Debug, Clone, Default)]
pub struct SharedSets(Arc<Mutex<BanSets>>);

impl SharedSets {
    pub fn new(size: usize) -> Self {
        SharedSets(Arc::new(Mutex::new(BanSets {
            size,
            ..BanSets::default()
        })))
    }

    pub fn lock(&self) -> MutexGuard<'_, BanSets> {
        // A panic elsewhere in the replay ends it; the data cannot be half-written.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_now(&self, now_ms: u64) {
        self.lock().now_ms = now_ms;
    }
}

/// The ban lifecycle's backend in a replay: the modelled nftables sets.
pub struct ModelBackend(pub SharedSets);

impl BanBackend for ModelBackend {
    fn name(&self) -> &'static str {
        "nftables"
    }
    /// The live backend's words, so that a replayed ban line reads as the live one.
    fn place(&self, key: IpNet) -> String {
        portsentry_kernel::backend::set_of(key)
    }
    fn prepare(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
    fn holds_networks(&self) -> bool {
        true
    }
    fn add(&mut self, key: IpNet, timeout: Option<Duration>) -> Result<(), BackendError> {
        let mut sets = self.0.lock();
        let until = timeout.map(|t| sets.now_ms.saturating_add(t.as_millis() as u64));
        if key.prefix_len() == key.max_prefix_len() {
            // The daemon's own write replaces the element's time (nft: delete + add).
            let now = sets.now_ms;
            sets.hosts.retain(|_, u| BanSets::live(*u, now));
            if !sets.hosts.contains_key(&key.addr()) && sets.hosts.len() >= sets.size {
                return Err(BackendError::AddElement {
                    addr: key.addr(),
                    source: std::io::Error::from_raw_os_error(libc::ENFILE),
                });
            }
            sets.hosts.insert(key.addr(), until);
        } else {
            sets.nets.retain(|(n, _)| *n != key);
            sets.nets.push((key, until));
        }
        Ok(())
    }
    fn remove(&mut self, key: IpNet) -> Result<bool, BackendError> {
        let mut sets = self.0.lock();
        let host = sets.hosts.remove(&key.addr()).is_some();
        let before = sets.nets.len();
        sets.nets.retain(|(n, _)| *n != key);
        Ok(host || sets.nets.len() != before)
    }
    fn list(&mut self) -> Result<Vec<Held>, BackendError> {
        let sets = self.0.lock();
        let now = sets.now_ms;
        let left = |u: Option<u64>| match u {
            None => Expiry::Permanent,
            Some(u) => Expiry::In {
                left: Duration::from_millis(u.saturating_sub(now)),
                timeout: None,
            },
        };
        Ok(sets
            .hosts
            .iter()
            .filter(|(_, u)| BanSets::live(**u, now))
            .map(|(ip, u)| Held {
                key: IpNet::from(*ip),
                expiry: left(*u),
            })
            .chain(sets.nets.iter().map(|(n, u)| Held {
                key: *n,
                expiry: left(*u),
            }))
            .collect())
    }
    fn expires_by_itself(&self) -> bool {
        true
    }
    fn teardown(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// What the table did with one inbound segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not for a watched port, or owned by a local socket: nothing of ours saw it.
    Passed,
    /// Dropped because its source is banned.
    DroppedBanned,
    /// Dropped by a trap without reaching the daemon (a sample limit was spent).
    DroppedUnlogged,
    /// Logged to the daemon as this probe (its verdict says by which rule).
    Probe(Probe),
}

/// Ports this host had sockets on, read off the capture beforehand.
#[derive(Debug, Default, Clone)]
pub struct PortsInUse {
    pub tcp: HashSet<u16>,
    pub udp: HashSet<u16>,
}

impl PortsInUse {
    /// Learn from one outbound segment (this host is `seg.src`).
    pub fn learn(&mut self, seg: &Segment) {
        match seg.l4 {
            L4::Tcp { flags } if flags.has(TcpFlags::SYN) && flags.has(TcpFlags::ACK) => {
                self.tcp.insert(seg.sport);
            }
            L4::Udp => {
                self.udp.insert(seg.sport);
            }
            L4::Tcp { .. } => {}
        }
    }
}

/// Our table, modelled.
pub struct TableModel {
    spec: TrapSpec,
    protected: IgnoreSet,
    in_use: PortsInUse,
    sets: SharedSets,
    /// Flows this host opened (remote, remote port, local port), oldest first out.
    flows: HashSet<(IpAddr, u16, u16)>,
    flow_order: std::collections::VecDeque<(IpAddr, u16, u16)>,
    /// Known peers and when they stop being known (capture ms).
    known: HashMap<IpAddr, u64>,
    budget: Option<BanBudget>,
    peer_samples: BanBudget,
    over_samples: BanBudget,
    full_samples: BanBudget,
}

impl TableModel {
    pub fn new(spec: TrapSpec, protected: IgnoreSet, in_use: PortsInUse, sets: SharedSets) -> Self {
        let budget = spec.ban_budget.map(|b| BanBudget::new(b.rate, b.burst));
        TableModel {
            spec,
            protected,
            in_use,
            sets,
            flows: HashSet::new(),
            flow_order: std::collections::VecDeque::new(),
            known: HashMap::new(),
            budget,
            peer_samples: BanBudget::new(SAMPLE_RATE, SAMPLE_RATE),
            over_samples: BanBudget::new(SAMPLE_RATE, SAMPLE_RATE),
            full_samples: BanBudget::new(FULL_SAMPLE_RATE, FULL_SAMPLE_RATE),
        }
    }

    /// The output hook, for a segment this host sent: known peers (data on an
    /// established socket) and the flows of this host's own connections.
    pub fn outbound(&mut self, now_ms: u64, seg: &Segment, tcp_payload: usize) {
        if let L4::Tcp { flags } = seg.l4 {
            if flags.has(TcpFlags::RST) {
                return;
            }
            let key = (seg.dst, seg.dport, seg.sport);
            if self.flows.insert(key) {
                self.flow_order.push_back(key);
                if self.flow_order.len() > FLOWS
                    && let Some(old) = self.flow_order.pop_front()
                {
                    self.flows.remove(&old);
                }
            }
            let data = flags.has(TcpFlags::ACK) && !flags.has(TcpFlags::SYN) && tcp_payload > 0;
            if let (true, Some(time)) = (data, self.spec.known_peer_time) {
                let full = self.known.len() >= self.spec.known_peer_size as usize
                    && !self.known.contains_key(&seg.dst);
                if full {
                    self.known.retain(|_, until| *until > now_ms);
                }
                if self.known.len() < self.spec.known_peer_size as usize
                    || self.known.contains_key(&seg.dst)
                {
                    self.known
                        .insert(seg.dst, now_ms.saturating_add(time.as_millis() as u64));
                }
            }
        }
    }

    fn owned(&self, seg: &Segment) -> bool {
        match seg.l4 {
            L4::Tcp { .. } => {
                self.in_use.tcp.contains(&seg.dport)
                    || self.flows.contains(&(seg.src, seg.sport, seg.dport))
            }
            L4::Udp => self.in_use.udp.contains(&seg.dport),
        }
    }

    fn watched(&self, seg: &Segment) -> Option<Proto> {
        let within = |ranges: &Option<Vec<(u16, u16)>>| {
            ranges
                .as_ref()
                .is_some_and(|r| r.iter().any(|&(lo, hi)| (lo..=hi).contains(&seg.dport)))
        };
        match seg.l4 {
            L4::Tcp { flags } if is_trap_probe(flags) && within(&self.spec.tcp_ports) => {
                Some(Proto::Tcp)
            }
            L4::Udp if within(&self.spec.udp_ports) => Some(Proto::Udp),
            _ => None,
        }
    }

    /// The input hook, for a segment sent to this host at `now` (capture ms, and the
    /// same as monotonic `mono` for the token buckets).
    pub fn inbound(&mut self, now_ms: u64, mono: Millis, seg: &Segment) -> Seen {
        self.sets.set_now(now_ms);
        if self.protected.contains(seg.src) {
            // `observe`: logged, never dropped nor banned.
            if self.owned(seg) || self.watched(seg).is_none() {
                return Seen::Passed;
            }
            return probe(seg, Verdict::Observed);
        }
        if self.sets.lock().holds(seg.src) {
            return Seen::DroppedBanned;
        }
        if self.owned(seg) {
            return Seen::Passed;
        }
        let Some(proto) = self.watched(seg) else {
            return Seen::Passed;
        };
        let bans = match proto {
            Proto::Tcp => self.spec.ban_tcp,
            Proto::Udp => self.spec.ban_udp,
        };
        let known = self
            .known
            .get(&seg.src)
            .is_some_and(|until| *until > now_ms);
        if known {
            // `peer` (dropped) or `peer_log` (let through): a sample is logged.
            return if self.peer_samples.take(mono) {
                probe(seg, Verdict::KnownPeer)
            } else if bans {
                Seen::DroppedUnlogged
            } else {
                Seen::Passed
            };
        }
        if !bans {
            return probe(seg, Verdict::Observed);
        }
        if let Some(budget) = self.budget.as_mut()
            && !budget.take(mono)
        {
            return if self.over_samples.take(mono) {
                probe(seg, Verdict::OverBudget)
            } else {
                Seen::DroppedUnlogged
            };
        }
        let until = now_ms.saturating_add(self.spec.ban_timeout.as_millis() as u64);
        if self.sets.lock().add_host(seg.src, Some(until)) {
            probe(seg, Verdict::KernelBanned)
        } else if self.full_samples.take(mono) {
            probe(seg, Verdict::SetFull)
        } else {
            Seen::DroppedUnlogged
        }
    }

    /// Known peers now.
    pub fn known_peers(&self, now_ms: u64) -> usize {
        self.known.values().filter(|u| **u > now_ms).count()
    }
}

fn probe(seg: &Segment, verdict: Verdict) -> Seen {
    match classify_trapped(seg) {
        Some(mut p) => {
            p.verdict = verdict;
            Seen::Probe(p)
        }
        None => Seen::Passed,
    }
}

/// The TCP payload length of an IP packet, as the kernel's known-peer rule reads it:
/// IPv4 without options and IPv6 without extension headers only (the rule matches
/// `ip hdrlength 5` and `ip6 nexthdr tcp`); `0` otherwise.
pub fn tcp_payload_len(ip: &[u8]) -> usize {
    let Some(&first) = ip.first() else { return 0 };
    let (header, total) = match first >> 4 {
        4 if first & 0x0f == 5 && ip.len() >= 20 && ip[9] == 6 => {
            (20usize, usize::from(u16::from_be_bytes([ip[2], ip[3]])))
        }
        6 if ip.len() >= 40 && ip[6] == 6 => (
            40usize,
            40 + usize::from(u16::from_be_bytes([ip[4], ip[5]])),
        ),
        _ => return 0,
    };
    let Some(&offset) = ip.get(header + 12) else {
        return 0;
    };
    total.saturating_sub(header + usize::from(offset >> 4) * 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use portsentry_engine::ProbeKind;

    fn spec() -> TrapSpec {
        TrapSpec {
            table: "portsentry".into(),
            tcp_ports: Some(vec![(1, 1023)]),
            udp_ports: Some(vec![(1, 1023)]),
            ban_tcp: true,
            ban_udp: true,
            ban_timeout: Duration::from_secs(600),
            nflog_group: 7,
            set_size: 3,
            priority: -10,
            known_peer_time: Some(Duration::from_secs(86400)),
            known_peer_size: 1000,
            ban_budget: Some(portsentry_kernel::nft::BanBudget { rate: 1, burst: 2 }),
            early_drop: true,
            interfaces: Vec::new(),
        }
    }

    fn seg(src: &str, dport: u16, flags: u8) -> Segment {
        Segment {
            src: src.parse().unwrap(),
            dst: "198.18.0.1".parse().unwrap(),
            sport: 40000,
            dport,
            l4: L4::Tcp {
                flags: TcpFlags(flags),
            },
            ip_options: false,
            ttl: 64,
        }
    }

    fn model(in_use: PortsInUse) -> (TableModel, SharedSets) {
        let sets = SharedSets::new(spec().set_size as usize);
        let mut protected = IgnoreSet::new();
        protected.insert("198.18.0.1/32".parse().unwrap());
        (
            TableModel::new(spec(), protected, in_use, sets.clone()),
            sets,
        )
    }

    fn verdict(seen: Seen) -> Option<Verdict> {
        match seen {
            Seen::Probe(p) => Some(p.verdict),
            _ => None,
        }
    }

    #[test]
    fn first_probe_bans_then_the_source_is_dropped() {
        let (mut m, sets) = model(PortsInUse::default());
        let s = seg("198.18.0.9", 111, TcpFlags::SYN);
        let first = m.inbound(1000, Millis(0), &s);
        assert_eq!(verdict(first), Some(Verdict::KernelBanned));
        assert!(matches!(first, Seen::Probe(p) if p.kind == ProbeKind::Syn));
        assert_eq!(m.inbound(1001, Millis(1), &s), Seen::DroppedBanned);
        // The element ends with the set's timeout.
        assert_eq!(
            verdict(m.inbound(1000 + 600_001, Millis(600_001), &s)),
            Some(Verdict::KernelBanned)
        );
        assert_eq!(sets.lock().in_force(), 1);
    }

    #[test]
    fn open_ports_rsts_and_synacks_are_no_probes() {
        let mut in_use = PortsInUse::default();
        in_use.tcp.insert(22);
        let (mut m, _) = model(in_use);
        assert_eq!(
            m.inbound(0, Millis(0), &seg("198.18.0.9", 22, TcpFlags::SYN)),
            Seen::Passed
        );
        assert_eq!(
            m.inbound(0, Millis(0), &seg("198.18.0.9", 23, TcpFlags::RST)),
            Seen::Passed
        );
        assert_eq!(
            m.inbound(
                0,
                Millis(0),
                &seg("198.18.0.9", 23, TcpFlags::SYN | TcpFlags::ACK)
            ),
            Seen::Passed
        );
        assert_eq!(
            m.inbound(0, Millis(0), &seg("198.18.0.9", 2000, TcpFlags::SYN)),
            Seen::Passed
        );
    }

    #[test]
    fn budget_then_samples_then_silence() {
        let (mut m, _) = model(PortsInUse::default());
        let got: Vec<Option<Verdict>> = (0..15)
            .map(|i| {
                verdict(m.inbound(
                    0,
                    Millis(0),
                    &seg(&format!("198.18.1.{i}"), 111, TcpFlags::SYN),
                ))
            })
            .collect();
        // Burst 2 bans, then 10 samples over budget, then nothing logged.
        assert_eq!(got[..2], [Some(Verdict::KernelBanned); 2]);
        assert_eq!(got[2..12], [Some(Verdict::OverBudget); 10]);
        assert_eq!(got[12..], [None; 3]);
    }

    #[test]
    fn a_full_set_bans_nobody_and_is_sampled() {
        let mut s = spec();
        s.ban_budget = None;
        let sets = SharedSets::new(2);
        let mut m = TableModel::new(s, IgnoreSet::new(), PortsInUse::default(), sets);
        let v: Vec<Option<Verdict>> = (0..4)
            .map(|i| {
                verdict(m.inbound(
                    0,
                    Millis(0),
                    &seg(&format!("198.18.1.{i}"), 111, TcpFlags::SYN),
                ))
            })
            .collect();
        assert_eq!(
            v,
            [
                Some(Verdict::KernelBanned),
                Some(Verdict::KernelBanned),
                Some(Verdict::SetFull),
                None
            ]
        );
    }

    #[test]
    fn data_sent_makes_a_known_peer_whose_probes_are_not_banned() {
        let (mut m, sets) = model(PortsInUse::default());
        let mut out = seg("198.18.0.1", 40000, TcpFlags::ACK | TcpFlags::PSH);
        out.dst = "198.18.0.5".parse().unwrap();
        out.sport = 8080;
        // A pure ACK teaches nothing; data does.
        m.outbound(0, &out, 0);
        assert_eq!(m.known_peers(0), 0);
        m.outbound(0, &out, 10);
        assert_eq!(m.known_peers(0), 1);
        let probe = m.inbound(1, Millis(1), &seg("198.18.0.5", 111, TcpFlags::SYN));
        assert_eq!(verdict(probe), Some(Verdict::KnownPeer));
        assert_eq!(sets.lock().in_force(), 0);
    }

    #[test]
    fn protected_sources_are_only_observed() {
        let (mut m, sets) = model(PortsInUse::default());
        let probe = m.inbound(0, Millis(0), &seg("198.18.0.1", 111, TcpFlags::SYN));
        assert_eq!(verdict(probe), Some(Verdict::Observed));
        assert_eq!(sets.lock().in_force(), 0);
    }

    #[test]
    fn the_payload_length_of_v4_and_v6_segments() {
        let mut v4 = vec![0u8; 20 + 20 + 5];
        v4[0] = 0x45;
        v4[2..4].copy_from_slice(&45u16.to_be_bytes());
        v4[9] = 6;
        v4[32] = 5 << 4;
        assert_eq!(tcp_payload_len(&v4), 5);
        v4[0] = 0x46; // options: the kernel rule does not match
        assert_eq!(tcp_payload_len(&v4), 0);
        let mut v6 = vec![0u8; 40 + 32 + 3];
        v6[0] = 0x60;
        v6[4..6].copy_from_slice(&35u16.to_be_bytes());
        v6[6] = 6;
        v6[52] = 8 << 4;
        assert_eq!(tcp_payload_len(&v6), 3);
        assert_eq!(tcp_payload_len(&[]), 0);
    }
}
