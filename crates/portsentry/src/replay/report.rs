//! What a replay found, per source and in all, as text for the terminal and as JSON
//! (`--json`; the field names are documented in portsentry(8) and kept stable).
//! Bounded: at most [`MAX_SOURCES`] sources are described one by one (a forged flood
//! has millions), and at most [`MAX_LINES`] log lines per source are kept.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use portsentry_engine::bans::BanBook;
use portsentry_engine::engine::Exempt;
use portsentry_engine::{Evidence, Probe, Proto, Verdict};
use portsentry_kernel::nft::TrapSpec;
use serde::Serialize;

use super::table::PortsInUse;
use crate::bans::Banned;

/// Sources described one by one; the rest are only counted.
pub const MAX_SOURCES: usize = 65_536;
/// Log lines kept per source (the rest are counted).
pub const MAX_LINES: usize = 100;
/// Commands kept per source.
const MAX_COMMANDS: usize = 10;

#[derive(Debug, Serialize)]
pub struct Report {
    pub file: String,
    /// Every block that was a packet, and those that were not IPv4/IPv6 TCP or UDP.
    pub packets: u64,
    pub not_ip: u64,
    /// Packets neither from nor to this host.
    pub not_ours: u64,
    #[serde(serialize_with = "sorted")]
    pub local: HashSet<IpAddr>,
    pub start_time: Option<u64>,
    pub end_time: u64,
    pub model: Model,
    pub sources: BTreeMap<IpAddr, SourceReport>,
    pub sources_not_detailed: u64,
    /// Lines about no single source (summaries, a full set).
    pub lines: Vec<LineAt>,
    /// Ban set elements in force at the last packet.
    pub bans_in_force: usize,
    pub known_peers: usize,
}

/// How the kernel side was modelled.
#[derive(Debug, Serialize)]
pub struct Model {
    /// The trap bans on the first probe (SCAN_TRIGGER 0, BLOCK_x 1, fast path on).
    pub fast_path_tcp: bool,
    pub fast_path_udp: bool,
    /// New bans a second the kernel allows, and its burst (`None`: no budget).
    pub ban_budget: Option<(u32, u32)>,
    pub set_size: u32,
    pub known_peers: bool,
    /// Ports this host answered from in the capture (taken as having a socket).
    pub tcp_ports_in_use: BTreeSet<u16>,
    pub udp_ports_in_use: BTreeSet<u16>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LineAt {
    /// Capture time, Unix milliseconds.
    pub time: u64,
    pub line: String,
}

/// One ban the replay made.
#[derive(Debug, Clone, Serialize)]
pub struct BanEvent {
    pub time: u64,
    pub key: String,
    /// Seconds; `None`: permanent.
    pub length: Option<u64>,
    pub offence: u32,
    pub evidence: String,
    /// "kernel" (the trap banned on this very probe) or "daemon".
    pub by: &'static str,
    pub reason: String,
}

/// The ban in force at the end of the capture.
#[derive(Debug, Clone, Serialize)]
pub struct BanAtEnd {
    pub key: String,
    /// Unix seconds; `None`: permanent.
    pub expires: Option<u64>,
    pub offences: u32,
    pub evidence: String,
    pub reason: String,
}

#[derive(Debug, Default, Serialize)]
pub struct SourceReport {
    /// Probes the daemon would have been told of (logged by the kernel rules).
    pub probes: u64,
    /// Per scan kind ("SYN/Normal", "UDP", ...).
    pub kinds: BTreeMap<String, u64>,
    pub tcp_ports: BTreeSet<u16>,
    pub udp_ports: BTreeSet<u16>,
    pub first_probe: Option<u64>,
    pub last_probe: Option<u64>,
    /// The strongest evidence among its probes: "verified" (a completed handshake) or
    /// "unverified" (single packets, which anyone can forge).
    pub evidence: Option<String>,
    /// Probes by what the kernel rules did with them.
    pub kernel_banned: u64,
    pub known_peer: u64,
    pub over_budget: u64,
    pub set_full: u64,
    pub observed: u64,
    /// Which probe (1-based) raised the alert: SCAN_TRIGGER + 1 on the same source.
    pub alerted_at_probe: Option<u64>,
    pub alert_time: Option<u64>,
    pub bans: Vec<BanEvent>,
    pub ban_at_end: Option<BanAtEnd>,
    /// Packets dropped by its ban, and by a trap over its sample limit.
    pub dropped_banned: u64,
    pub dropped_unlogged: u64,
    /// Responses refused by the daemon's own budget of new unverified bans.
    pub over_budget_user: u64,
    /// Why it was never acted on, when it was not.
    pub protected_by: Option<String>,
    /// The 1.2 commands (KILL_*) that would have run, expanded.
    pub would_run: Vec<String>,
    pub lines: Vec<LineAt>,
    pub lines_not_kept: u64,
}

fn sorted<S: serde::Serializer>(set: &HashSet<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
    let v: BTreeSet<&IpAddr> = set.iter().collect();
    serde::Serialize::serialize(&v, s)
}

/// What exempted a source, in words.
pub fn exempt_words(why: Exempt) -> String {
    match why {
        Exempt::IgnoreList => "the ignore list (IGNORE_FILE)".into(),
        Exempt::Protected => {
            "the protected set (this host's addresses, gateways, resolvers, [protect] networks)"
                .into()
        }
    }
}

impl Report {
    pub fn new(path: &Path, local: &HashSet<IpAddr>, spec: &TrapSpec, in_use: &PortsInUse) -> Self {
        Report {
            file: path.display().to_string(),
            packets: 0,
            not_ip: 0,
            not_ours: 0,
            local: local.clone(),
            start_time: None,
            end_time: 0,
            model: Model {
                fast_path_tcp: spec.ban_tcp,
                fast_path_udp: spec.ban_udp,
                ban_budget: spec.ban_budget.map(|b| (b.rate, b.burst)),
                set_size: spec.set_size,
                known_peers: spec.known_peer_time.is_some(),
                tcp_ports_in_use: in_use.tcp.iter().copied().collect(),
                udp_ports_in_use: in_use.udp.iter().copied().collect(),
            },
            sources: BTreeMap::new(),
            sources_not_detailed: 0,
            lines: Vec::new(),
            bans_in_force: 0,
            known_peers: 0,
        }
    }

    /// The record of `ip`; past [`MAX_SOURCES`], a scratch record that is not kept.
    pub fn source(&mut self, ip: IpAddr) -> &mut SourceReport {
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&ip) {
            self.sources_not_detailed += 1;
            // The unspecified address is never a probe's source: a scratch slot.
            let scratch = self.sources.entry(IpAddr::from([0u8; 4])).or_default();
            *scratch = SourceReport::default();
            return scratch;
        }
        self.sources.entry(ip).or_default()
    }

    pub fn global_line(&mut self, time: u64, line: String) {
        if self.lines.len() < MAX_LINES * 10 {
            self.lines.push(LineAt { time, line });
        }
    }

    /// At the end: the bans in force, from the book; the scratch record goes.
    pub fn settle(&mut self, book: &BanBook, now: u64) {
        self.sources.remove(&IpAddr::from([0u8; 4]));
        for ban in book.active(now) {
            let Some(ip) = portsentry_kernel::backend::host_of(ban.key) else {
                continue;
            };
            if let Some(source) = self.sources.get_mut(&ip) {
                source.ban_at_end = Some(BanAtEnd {
                    key: ban.key.to_string(),
                    expires: ban.expires_at,
                    offences: ban.offences,
                    evidence: ban.evidence.as_str().to_string(),
                    reason: ban.reason.clone(),
                });
            }
        }
    }

    /// The report for the terminal: one paragraph per source that did something.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "replay of {}: {} packets ({} not TCP/UDP over IP, {} not to or from this host), {} to {}",
            self.file,
            self.packets,
            self.not_ip,
            self.not_ours,
            self.start_time.map(time).unwrap_or_else(|| "-".into()),
            time(self.end_time)
        );
        let local: BTreeSet<&IpAddr> = self.local.iter().collect();
        let list = |set: &BTreeSet<u16>| {
            if set.is_empty() {
                "none".to_string()
            } else {
                set.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
            }
        };
        let _ = writeln!(
            out,
            "this host: {}; ports it answered from (taken as in use): tcp {}, udp {}",
            local
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            list(&self.model.tcp_ports_in_use),
            list(&self.model.udp_ports_in_use),
        );
        let m = &self.model;
        let _ = writeln!(
            out,
            "kernel traps: ban on the first probe: tcp {}, udp {}; ban budget {}; set size {}; known peers {}",
            on(m.fast_path_tcp),
            on(m.fast_path_udp),
            m.ban_budget
                .map(|(r, b)| format!("{r}/s burst {b}"))
                .unwrap_or_else(|| "none".into()),
            m.set_size,
            on(m.known_peers)
        );
        let banned = self.sources.values().filter(|s| !s.bans.is_empty()).count();
        let _ = writeln!(
            out,
            "{} sources probed this host, {} banned; {} ban set elements and {} known peers at the end{}",
            self.sources.len(),
            banned,
            self.bans_in_force,
            self.known_peers,
            if self.sources_not_detailed > 0 {
                format!(
                    " ({} more probes of sources past {MAX_SOURCES} not described)",
                    self.sources_not_detailed
                )
            } else {
                String::new()
            }
        );
        for (ip, s) in &self.sources {
            out.push('\n');
            s.write_text(*ip, &mut out);
        }
        if !self.lines.is_empty() {
            out.push_str("\nother lines:\n");
            for l in &self.lines {
                let _ = writeln!(out, "  {} {}", time(l.time), l.line);
            }
        }
        out
    }
}

fn on(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// Capture time (Unix milliseconds) as local time with milliseconds.
fn time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
                .to_string()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// Port numbers as ranges: "1-5,8,10-12".
fn ranges(ports: &BTreeSet<u16>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = ports.iter().copied().peekable();
    while let Some(lo) = it.next() {
        let mut hi = lo;
        while it.peek() == Some(&(hi.wrapping_add(1))) && hi < u16::MAX {
            hi = it.next().unwrap_or(hi);
        }
        out.push(if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        });
    }
    out.join(",")
}

impl SourceReport {
    pub fn probe(&mut self, probe: &Probe) {
        self.probes += 1;
        *self.kinds.entry(probe.kind.to_string()).or_default() += 1;
        match probe.proto() {
            Proto::Tcp => self.tcp_ports.insert(probe.dport),
            Proto::Udp => self.udp_ports.insert(probe.dport),
        };
        match probe.verdict {
            Verdict::KernelBanned => self.kernel_banned += 1,
            Verdict::KnownPeer => self.known_peer += 1,
            Verdict::OverBudget => self.over_budget += 1,
            Verdict::SetFull => self.set_full += 1,
            Verdict::Observed => self.observed += 1,
        }
        let evidence = probe.evidence();
        if self.evidence.is_none() || evidence == Evidence::Verified {
            self.evidence = Some(evidence.as_str().to_string());
        }
    }

    pub fn alerted(&mut self, time: u64) {
        if self.alerted_at_probe.is_none() {
            self.alerted_at_probe = Some(self.probes);
            self.alert_time = Some(time);
        }
    }

    pub fn banned(&mut self, time: u64, probe: &Probe, banned: &Banned) {
        self.bans.push(BanEvent {
            time,
            key: banned.ban.key.to_string(),
            length: banned.timeout.map(|t| t.as_secs()),
            offence: banned.ban.offences,
            evidence: banned.ban.evidence.as_str().to_string(),
            by: if probe.kernel_banned() {
                "kernel"
            } else {
                "daemon"
            },
            reason: banned.ban.reason.clone(),
        });
    }

    pub fn would_run(&mut self, command: String) {
        if self.would_run.len() < MAX_COMMANDS {
            self.would_run.push(command);
        }
    }

    pub fn line(&mut self, time: u64, line: String) {
        if self.lines.len() < MAX_LINES {
            self.lines.push(LineAt { time, line });
        } else {
            self.lines_not_kept += 1;
        }
    }

    fn write_text(&self, ip: IpAddr, out: &mut String) {
        let kinds: Vec<String> = self.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let mut ports = Vec::new();
        if !self.tcp_ports.is_empty() {
            ports.push(format!("tcp ports {}", ranges(&self.tcp_ports)));
        }
        if !self.udp_ports.is_empty() {
            ports.push(format!("udp ports {}", ranges(&self.udp_ports)));
        }
        let _ = writeln!(
            out,
            "{ip}: {} probe{} ({}) on {}; evidence {}",
            self.probes,
            if self.probes == 1 { "" } else { "s" },
            kinds.join(", "),
            ports.join(" and "),
            self.evidence.as_deref().unwrap_or("-")
        );
        let mut rules = Vec::new();
        for (n, what) in [
            (
                self.kernel_banned,
                "banned by the kernel trap on that very probe",
            ),
            (self.known_peer, "from a known peer (dropped, never banned)"),
            (
                self.over_budget,
                "past the ban budget (dropped, nobody banned)",
            ),
            (self.set_full, "with the ban set full (dropped, not banned)"),
            (self.observed, "logged only (no kernel ban)"),
        ] {
            if n > 0 {
                rules.push(format!("{n} {what}"));
            }
        }
        if !rules.is_empty() {
            let _ = writeln!(out, "  kernel: {}", rules.join("; "));
        }
        if self.dropped_banned + self.dropped_unlogged > 0 {
            let _ = writeln!(
                out,
                "  dropped without a word: {} by its ban, {} past a trap's sample limit",
                self.dropped_banned, self.dropped_unlogged
            );
        }
        if let Some(why) = &self.protected_by {
            let _ = writeln!(out, "  protected: {why}");
        }
        match (self.alerted_at_probe, self.alert_time) {
            (Some(n), Some(t)) => {
                let _ = writeln!(out, "  alerted at {} on probe {n}", time(t));
            }
            _ if self.protected_by.is_none() => {
                let _ = writeln!(out, "  not alerted (below SCAN_TRIGGER, or not acted on)");
            }
            _ => {}
        }
        for b in &self.bans {
            let _ = writeln!(
                out,
                "  banned at {} by the {}: {} for {}, offence {}, {} evidence ({})",
                time(b.time),
                b.by,
                b.key,
                b.length
                    .map(
                        |s| humantime::format_duration(std::time::Duration::from_secs(s))
                            .to_string()
                    )
                    .unwrap_or_else(|| "good".into()),
                b.offence,
                b.evidence,
                b.reason
            );
        }
        if self.over_budget_user > 0 {
            let _ = writeln!(
                out,
                "  not banned {} times: the daemon's budget of new unverified bans was spent",
                self.over_budget_user
            );
        }
        if let Some(end) = &self.ban_at_end {
            let _ = writeln!(
                out,
                "  ban in force at the end: {} until {}",
                end.key,
                end.expires
                    .map(|e| time(e * 1000))
                    .unwrap_or_else(|| "lifted by hand".into())
            );
        }
        for c in &self.would_run {
            let _ = writeln!(out, "  would run {c}");
        }
        if !self.lines.is_empty() {
            let _ = writeln!(out, "  would log:");
            for l in &self.lines {
                let _ = writeln!(out, "    {} {}", time(l.time), l.line);
            }
            if self.lines_not_kept > 0 {
                let _ = writeln!(out, "    ({} more lines)", self.lines_not_kept);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_read_as_ranges() {
        let set: BTreeSet<u16> = [1, 2, 3, 5, 7, 8, 65535].into_iter().collect();
        assert_eq!(ranges(&set), "1-3,5,7-8,65535");
        assert_eq!(ranges(&BTreeSet::new()), "");
    }
}
