//! The text of our nftables table, as one `nft -f -` transaction. Pure: no I/O.
//!
//! Invariants of the generated transaction:
//! - it only ever names `inet <table>`; nothing else in the ruleset is touched;
//! - it never flushes or deletes a set, so bans (and the protected list) survive a
//!   re-apply: `add table` / `add set` / `add chain` are idempotent for an unchanged
//!   definition, and only our three chains are flushed and refilled;
//! - a protected source is never dropped nor banned, only logged (`observe`);
//! - a packet owned by a local socket (listener, own connection, TIME_WAIT) is never a
//!   probe (`socket transparent 0 return`), so ports in use are excluded live;
//! - a known peer (see below) is never banned by a trap: its probe is dropped and
//!   logged (prefix [`PREFIX_PEER`]) at a damped rate;
//! - with a ban budget, the trap rules of every protocol and family share one token
//!   bucket (the named limit [`LIMIT_BUDGET`]): past it a probe is dropped, counted
//!   ([`COUNTER_OVER_BUDGET`]) and sampled to NFLOG ([`PREFIX_OVER_BUDGET`]), and nobody
//!   is banned. Existing bans are never pushed out: a full set makes the `add` fail,
//!   which is counted ([`COUNTER_SET_FULL`]) and sampled ([`PREFIX_SET_FULL`]);
//! - with early drop, banned sources are dropped in prerouting at raw priority (before
//!   routing and connection tracking), protected sources exempt first, as in `input`.
//!
//! # Known peers, without conntrack
//!
//! A known peer is an address that recently exchanged data with this host over TCP, or
//! answered one of this host's own UDP flows. It is learned in the kernel, so the trap
//! honours it on the very first forged packet:
//!
//! - output hook: a TCP segment this host sends with ACK, without SYN or RST, *and
//!   carrying payload* (`@th,96,8 . ip length` against the header length the data
//!   offset gives) comes from an established socket, so its destination completed a
//!   handshake with us: inbound connections to services and the host's own outbound
//!   connections alike. `update @knownpeer4 { ip daddr }` restarts its time.
//! - input hook: a UDP datagram without a local socket that matches a flow this host
//!   opened (`udpflows4/6`) makes its source a known peer.
//!
//! What a forger can do about it, and why the rules are shaped so:
//! - *Make an address it does not hold a known peer.* It must make this host send data
//!   (or a UDP flow) to that address. A SYN+ACK (answer to a forged SYN) and RSTs
//!   (answers to probes) are excluded by the flags. A bare ACK is *not* enough: a
//!   forged SYN to an open port followed by a forged out-of-window segment makes the
//!   kernel's request socket answer with a pure ACK to the forged address (measured on
//!   6.18: the address landed in a set fed by "ACK without SYN/RST"); TIME_WAIT and
//!   challenge ACKs are pure ACKs too. Only an established socket sends payload, and
//!   establishing needs the host's initial sequence number (or a SYN cookie), which a
//!   blind forger does not see. UDP: the flow must be one this host sent from a
//!   watched port (the `udpflows` rule) and the reply must find no local socket; the
//!   forger needs the remote address, both ports and the moment, and only makes a host
//!   this host chose to talk to a known peer.
//! - *Become a known peer itself* (to scan unbanned from that address): it can, by
//!   talking to an open service first. The trap then only logs it as possibly forged;
//!   verified evidence (a completed handshake to a trap) still bans it.
//! - *Fill the known-peer set* (so that new real peers are not learned): every entry
//!   costs a completed TCP connection from an address the attacker really holds; the
//!   set is bounded, and a full set only means new peers fall back to the ban budget.
//! - A peer that never receives payload from us (a client that only uploads, a FIN-only
//!   exchange) is not learned; the budget still limits what forged probes can ban.

use std::fmt::Write as _;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use portsentry_engine::TcpFlags;
use portsentry_engine::classify::TRAP_REJECTS;

/// NFLOG prefix of a packet whose source the kernel has just banned.
pub const PREFIX_BANNED: &str = "portsentry ban ";
/// NFLOG prefix of a trap hit that the kernel only logged: a protected source, a
/// protocol without kernel bans, or a ban set that is full.
pub const PREFIX_OBSERVED: &str = "portsentry log ";

/// NFLOG prefix of a trap hit from a known peer: dropped, nobody banned.
pub const PREFIX_PEER: &str = "portsentry peer ";
/// NFLOG prefix of a trap hit past the ban budget: dropped, nobody banned.
pub const PREFIX_OVER_BUDGET: &str = "portsentry over ";
/// NFLOG prefix of a trap hit whose ban the full ban set refused: dropped, not banned.
pub const PREFIX_SET_FULL: &str = "portsentry full ";

/// Default name of our table (`inet portsentry`).
pub const DEFAULT_TABLE: &str = "portsentry";
/// Default capacity of each ban set. nft's own default (65535) is too small for a
/// host under a distributed scan; an IPv4 element costs the kernel ~100 bytes.
pub const DEFAULT_SET_SIZE: u32 = 1_048_576;
/// Default hook priority: before the usual filter chains (priority 0), so a banned
/// source is dropped before any accept of the host's own rules.
pub const DEFAULT_PRIORITY: i32 = -10;

/// Names inside our table, shared with the netlink writer and the verifier.
pub const SET_BANNED4: &str = "banned4";
pub const SET_BANNED6: &str = "banned6";
/// Network bans (prefix grouping, manual bans of a range): interval sets written only
/// by user space, so they have no default timeout: an element without one is permanent.
pub const SET_BANNEDNET4: &str = "bannednet4";
pub const SET_BANNEDNET6: &str = "bannednet6";
pub const SET_PROTECTED4: &str = "protected4";
pub const SET_PROTECTED6: &str = "protected6";
/// Known peers (see the module doc): never banned by a trap.
pub const SET_KNOWNPEER4: &str = "knownpeer4";
pub const SET_KNOWNPEER6: &str = "knownpeer6";
/// The shared budget of new kernel bans (a named limit object).
pub const LIMIT_BUDGET: &str = "ban_budget";
/// Named counters: trap hits past the budget, bans a full set refused, probes from
/// known peers. The daemon reads the first to report how many probes went unbanned.
pub const COUNTER_OVER_BUDGET: &str = "over_budget";
pub const COUNTER_SET_FULL: &str = "set_full";
pub const COUNTER_KNOWN_PEER: &str = "known_peer";
pub const CHAIN_INPUT: &str = "input";
/// Prerouting chain at raw priority that drops banned sources early (`early_drop`).
pub const CHAIN_EARLY: &str = "early";
/// Priority of [`CHAIN_EARLY`]: raw (-300), before conntrack (-200) and routing.
pub const EARLY_PRIORITY: i32 = -300;
/// Where a banning trap hit goes: known peer, budget, ban.
pub const CHAIN_TRAP: &str = "trap";
/// The ban itself, and the full-set fallback.
pub const CHAIN_BAN: &str = "ban";
/// Past the budget: count, sample, drop.
pub const CHAIN_OVER_BUDGET: &str = "over_budget";
/// A known peer's probe on a banning trap: count, sample, drop.
pub const CHAIN_PEER: &str = "peer";
/// A known peer's probe on a log-only trap: count, sample, let it pass.
pub const CHAIN_PEER_LOG: &str = "peer_log";
/// NFLOG samples per second of each unbanned kind (peer, over budget); the counters
/// hold the exact numbers. 10/s keeps a flood's log traffic to the daemon small.
const SAMPLE_RATE: &str = "limit rate 10/second burst 10 packets";
/// Full-set samples: one a second is enough to say it once.
const FULL_SAMPLE_RATE: &str = "limit rate 1/second burst 1 packets";
pub const CHAIN_OBSERVE: &str = "observe";
/// Output hook chain that remembers this host's own UDP flows from watched ports.
pub const CHAIN_OUTPUT: &str = "output";
/// This host's recent UDP flows (remote address . remote port . local port): a reply
/// that arrives after the local socket closed is not a probe. Kept by the kernel for
/// [`UDP_FLOW_WINDOW`], without conntrack (no per-flow cost for all other traffic).
pub const SET_UDPFLOWS4: &str = "udpflows4";
pub const SET_UDPFLOWS6: &str = "udpflows6";
/// How long a reply to our own UDP datagram is accepted: the packet-socket
/// classifier's window (conntrack's timeout for an unanswered UDP flow), so both probe
/// sources draw the same line.
pub const UDP_FLOW_WINDOW: Duration = portsentry_engine::classify::UDP_REPLY_WINDOW;
/// Most remembered UDP flows per family.
const UDP_FLOW_SET_SIZE: u32 = 65_536;

/// What the kernel fast path traps and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrapSpec {
    /// Table name inside the `inet` family (`portsentry`; tests use their own).
    pub table: String,
    /// Watched TCP port ranges (inclusive); `None` (or empty) = no TCP traps.
    pub tcp_ports: Option<Vec<(u16, u16)>>,
    /// Watched UDP port ranges (inclusive); `None` (or empty) = no UDP traps.
    pub udp_ports: Option<Vec<(u16, u16)>>,
    /// `true`: a TCP trap hit adds the source to the ban set, logs and drops;
    /// `false`: it only logs and the packet continues.
    pub ban_tcp: bool,
    /// Same for UDP.
    pub ban_udp: bool,
    /// Default element timeout of the ban sets: what a kernel-added ban lasts.
    /// Rendered with millisecond precision; below 1 ms it is raised to 1 ms, because
    /// a zero set timeout would make every kernel-added ban permanent.
    pub ban_timeout: Duration,
    /// NFLOG group the trap rules log to.
    pub nflog_group: u16,
    /// Maximum elements per ban set.
    pub set_size: u32,
    /// Priority of the input hook.
    pub priority: i32,
    /// How long an address stays a known peer after its last data exchange; `None`:
    /// no known peers (every trap hit may ban).
    pub known_peer_time: Option<Duration>,
    /// Maximum elements per known-peer set.
    pub known_peer_size: u32,
    /// New kernel bans per second the trap rules may make, shared by TCP/UDP and both
    /// families; `None`: no budget.
    pub ban_budget: Option<BanBudget>,
    /// Drop banned sources in prerouting at raw priority ([`CHAIN_EARLY`]) instead of
    /// in the input hook.
    pub early_drop: bool,
    /// Interfaces whose packets are trapped (PortSentry 2.x's `-i`); empty: all. Bans
    /// and protected sources apply on every interface regardless. Each name must pass
    /// [`valid_interface_name`].
    pub interfaces: Vec<String>,
}

/// A token bucket of new kernel bans: `rate` per second, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanBudget {
    pub rate: u32,
    pub burst: u32,
}

/// Default size of each known-peer set: a day of distinct peers of a busy host, at
/// ~100 bytes of kernel memory each; a full set only stops learning new peers.
pub const DEFAULT_KNOWN_PEER_SIZE: u32 = 262_144;

/// Whether `name` is a Linux interface name we put into nft syntax (quoted): 1 to 15
/// characters of letters, digits, `.`, `_` and `-`.
pub fn valid_interface_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Whether `name` is safe to put into nft syntax unquoted: a letter, then letters,
/// digits and `_`, at most 64 characters. (nft accepts more; we need no more.)
pub fn valid_table_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

/// Sorted, merged port ranges: overlapping and adjacent ranges become one, a reversed
/// range is read as its two ends. nft rejects overlapping elements in an interval set.
pub fn normalize_ports(ranges: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut v: Vec<(u16, u16)> = ranges.iter().map(|&(a, b)| (a.min(b), a.max(b))).collect();
    v.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// Protected networks as the fewest CIDRs per family: duplicates, overlaps and
/// mergeable neighbours folded (host bits dropped), as an interval set needs.
pub fn merge_nets(nets: &[IpNet]) -> (Vec<Ipv4Net>, Vec<Ipv6Net>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for net in IpNet::aggregate(&nets.to_vec()) {
        match net {
            IpNet::V4(n) => v4.push(n),
            IpNet::V6(n) => v6.push(n),
        }
    }
    (v4, v6)
}

/// A duration in nft's syntax, millisecond precision, at least `1ms`.
pub fn nft_duration(d: Duration) -> String {
    // nft 1.0.6 refuses a number of more than 8 digits in one unit ("value too large"
    // for `100000000s`), but takes the same time split into units (`1157d9h46m40s`).
    const MAX_IN_ONE_UNIT: u128 = 99_999_999;
    let ms = d.as_millis().max(1);
    if ms <= MAX_IN_ONE_UNIT {
        return if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            format!("{ms}ms")
        };
    }
    let (secs, ms) = (ms / 1000, ms % 1000);
    if secs <= MAX_IN_ONE_UNIT && ms == 0 {
        return format!("{secs}s");
    }
    let (days, secs) = (secs / 86_400, secs % 86_400);
    let mut out = format!("{days}d{secs}s");
    if ms > 0 {
        out.push_str(&format!("{ms}ms"));
    }
    out
}

/// The rule bodies of our chains, in order. The verifier counts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub input: Vec<String>,
    pub observe: Vec<String>,
    pub output: Vec<String>,
    /// `Some` when the early drop chain is wanted.
    pub early: Option<Vec<String>>,
    pub trap: Vec<String>,
    pub ban: Vec<String>,
    pub over_budget: Vec<String>,
    pub peer: Vec<String>,
    pub peer_log: Vec<String>,
}

impl Plan {
    /// Every chain of the table with its rules (the early chain only when wanted).
    pub fn chains(&self) -> Vec<(&'static str, &[String])> {
        let mut out: Vec<(&'static str, &[String])> = vec![
            (CHAIN_INPUT, &self.input),
            (CHAIN_OBSERVE, &self.observe),
            (CHAIN_OUTPUT, &self.output),
            (CHAIN_TRAP, &self.trap),
            (CHAIN_BAN, &self.ban),
            (CHAIN_OVER_BUDGET, &self.over_budget),
            (CHAIN_PEER, &self.peer),
            (CHAIN_PEER_LOG, &self.peer_log),
        ];
        if let Some(early) = &self.early {
            out.push((CHAIN_EARLY, early));
        }
        out
    }
}

/// Names of the chains that are not base chains (flushed and refilled like the rest).
const REGULAR_CHAINS: [&str; 6] = [
    CHAIN_OBSERVE,
    CHAIN_TRAP,
    CHAIN_BAN,
    CHAIN_OVER_BUDGET,
    CHAIN_PEER,
    CHAIN_PEER_LOG,
];

/// The rules dropping banned sources (hosts and networks, both families).
fn banned_drops() -> Vec<String> {
    vec![
        format!("ip saddr @{SET_BANNED4} drop"),
        format!("ip6 saddr @{SET_BANNED6} drop"),
        format!("ip saddr @{SET_BANNEDNET4} drop"),
        format!("ip6 saddr @{SET_BANNEDNET6} drop"),
    ]
}

/// `@th,96,8 . ip length` elements (IPv4, `v4`) or `@th,96,8 . ip6 length` elements:
/// the TCP byte holding the data offset (upper nibble; the lowest bit is the AE flag)
/// with the lengths that leave at least one byte of payload after the headers. nft
/// 1.0.6 mangles a concatenation of the 4-bit `tcp doff` field, so the raw byte is used.
fn payload_lengths(v4: bool) -> String {
    let ip_header = if v4 { 20 } else { 0 };
    let mut items = Vec::new();
    for doff in 5u32..=15 {
        for ae in 0..=1u32 {
            items.push(format!(
                "0x{:02x} . {}-65535",
                (doff << 4) | ae,
                ip_header + 4 * doff + 1
            ));
        }
    }
    format!("{{ {} }}", items.join(", "))
}

fn port_set(ranges: &[(u16, u16)]) -> String {
    let items: Vec<String> = ranges
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect();
    format!("{{ {} }}", items.join(", "))
}

/// The trap matches: `(match text, ban?)` for TCP then UDP.
fn trap_matches(spec: &TrapSpec) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    if let Some(ports) = spec
        .tcp_ports
        .as_deref()
        .map(normalize_ports)
        .filter(|p| !p.is_empty())
    {
        // The engine's trap rule (no RST, no SYN+ACK backscatter), as nft matches.
        let mut rule = format!("tcp dport {}", port_set(&ports));
        for (mask, value) in TRAP_REJECTS {
            rule.push_str(&format!(
                " tcp flags & {} != {}",
                tcp_flags(mask, true),
                tcp_flags(value, false)
            ));
        }
        out.push((rule, spec.ban_tcp));
    }
    if let Some(ports) = spec
        .udp_ports
        .as_deref()
        .map(normalize_ports)
        .filter(|p| !p.is_empty())
    {
        out.push((format!("udp dport {}", port_set(&ports)), spec.ban_udp));
    }
    out
}

/// TCP flag bits in nft syntax: `rst`, `syn | ack` (in parentheses when `grouped` and
/// more than one).
fn tcp_flags(bits: u8, grouped: bool) -> String {
    const NAMES: [(u8, &str); 6] = [
        (TcpFlags::FIN, "fin"),
        (TcpFlags::SYN, "syn"),
        (TcpFlags::RST, "rst"),
        (TcpFlags::PSH, "psh"),
        (TcpFlags::ACK, "ack"),
        (TcpFlags::URG, "urg"),
    ];
    let names: Vec<&str> = NAMES
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    let joined = names.join(" | ");
    if grouped && names.len() > 1 {
        format!("({joined})")
    } else {
        joined
    }
}

fn log(prefix: &str, group: u16) -> String {
    format!("log prefix \"{prefix}\" group {group}")
}

pub(crate) fn plan(spec: &TrapSpec) -> Plan {
    let g = spec.nflog_group;
    let peers = spec.known_peer_time.is_some();
    let mut input = vec![
        "iif \"lo\" return".to_string(),
        format!("ip saddr @{SET_PROTECTED4} goto {CHAIN_OBSERVE}"),
        format!("ip6 saddr @{SET_PROTECTED6} goto {CHAIN_OBSERVE}"),
    ];
    if !spec.early_drop {
        input.extend(banned_drops());
    }
    input.push("meta l4proto { tcp, udp } socket transparent 0 return".to_string());
    let mut output = Vec::new();
    if peers {
        // Data from an established socket (see the module doc): its destination is a
        // known peer. Pure ACKs are left out on purpose.
        output.push(format!(
            "meta nfproto ipv4 ip hdrlength 5 tcp flags & (syn | rst | ack) == ack @th,96,8 . ip length {} update @{SET_KNOWNPEER4} {{ ip daddr }}",
            payload_lengths(true)
        ));
        output.push(format!(
            "meta nfproto ipv6 ip6 nexthdr tcp tcp flags & (syn | rst | ack) == ack @th,96,8 . ip6 length {} update @{SET_KNOWNPEER6} {{ ip6 daddr }}",
            payload_lengths(false)
        ));
    }
    if let Some(ports) = spec
        .udp_ports
        .as_deref()
        .map(normalize_ports)
        .filter(|p| !p.is_empty())
    {
        let ports = port_set(&ports);
        let (learn4, learn6) = if peers {
            (
                format!(" update @{SET_KNOWNPEER4} {{ ip saddr }}"),
                format!(" update @{SET_KNOWNPEER6} {{ ip6 saddr }}"),
            )
        } else {
            (String::new(), String::new())
        };
        input.push(format!(
            "meta nfproto ipv4 ip saddr . udp sport . udp dport @{SET_UDPFLOWS4}{learn4} return"
        ));
        input.push(format!(
            "meta nfproto ipv6 ip6 saddr . udp sport . udp dport @{SET_UDPFLOWS6}{learn6} return"
        ));
        output.push(format!(
            "meta nfproto ipv4 udp sport {ports} update @{SET_UDPFLOWS4} {{ ip daddr . udp dport . udp sport }}"
        ));
        output.push(format!(
            "meta nfproto ipv6 udp sport {ports} update @{SET_UDPFLOWS6} {{ ip6 daddr . udp dport . udp sport }}"
        ));
    }
    if !output.is_empty() {
        output.insert(0, "oif \"lo\" return".to_string());
    }
    let names: Vec<String> = spec
        .interfaces
        .iter()
        .filter(|n| valid_interface_name(n))
        .map(|n| format!("\"{n}\""))
        .collect();
    if !names.is_empty() {
        // 2.x's -i: probes on other interfaces are not trapped (bans still drop there).
        input.push(format!("iifname != {{ {} }} return", names.join(", ")));
    }
    let mut observe = vec!["meta l4proto { tcp, udp } socket transparent 0 return".to_string()];
    for (m, ban) in trap_matches(spec) {
        if ban {
            input.push(format!("{m} goto {CHAIN_TRAP}"));
        } else {
            if peers {
                input.push(format!(
                    "meta nfproto ipv4 {m} ip saddr @{SET_KNOWNPEER4} goto {CHAIN_PEER_LOG}"
                ));
                input.push(format!(
                    "meta nfproto ipv6 {m} ip6 saddr @{SET_KNOWNPEER6} goto {CHAIN_PEER_LOG}"
                ));
            }
            input.push(format!("{m} {}", log(PREFIX_OBSERVED, g)));
        }
        observe.push(format!("{m} {}", log(PREFIX_OBSERVED, g)));
    }
    let mut trap = Vec::new();
    if peers {
        trap.push(format!("ip saddr @{SET_KNOWNPEER4} goto {CHAIN_PEER}"));
        trap.push(format!("ip6 saddr @{SET_KNOWNPEER6} goto {CHAIN_PEER}"));
    }
    if spec.ban_budget.is_some() {
        // One bucket for every trap rule: a token is taken only by a probe that is
        // about to ban (known peers went above, banned sources were dropped before).
        trap.push(format!("limit name \"{LIMIT_BUDGET}\" goto {CHAIN_BAN}"));
        trap.push(format!("goto {CHAIN_OVER_BUDGET}"));
    } else {
        trap.push(format!("goto {CHAIN_BAN}"));
    }
    let ban = vec![
        format!(
            "meta nfproto ipv4 add @{SET_BANNED4} {{ ip saddr }} {} drop",
            log(PREFIX_BANNED, g)
        ),
        format!(
            "meta nfproto ipv6 add @{SET_BANNED6} {{ ip6 saddr }} {} drop",
            log(PREFIX_BANNED, g)
        ),
        // Reached only when the `add` above failed: the set is full (the dynset
        // expression then breaks the rule). Nothing is pushed out.
        format!(
            "counter name \"{COUNTER_SET_FULL}\" {FULL_SAMPLE_RATE} {} drop",
            log(PREFIX_SET_FULL, g)
        ),
        "drop".to_string(),
    ];
    let over_budget = vec![
        format!(
            "counter name \"{COUNTER_OVER_BUDGET}\" {SAMPLE_RATE} {} drop",
            log(PREFIX_OVER_BUDGET, g)
        ),
        "drop".to_string(),
    ];
    let peer = vec![
        format!(
            "counter name \"{COUNTER_KNOWN_PEER}\" {SAMPLE_RATE} {} drop",
            log(PREFIX_PEER, g)
        ),
        "drop".to_string(),
    ];
    // Log-only traps: the probe goes on as other log-only probes do (base policy).
    let peer_log = vec![format!(
        "counter name \"{COUNTER_KNOWN_PEER}\" {SAMPLE_RATE} {}",
        log(PREFIX_PEER, g)
    )];
    let early = spec.early_drop.then(|| {
        // The protected sets first, as in `input`: a protected source is never dropped.
        let mut rules = vec![
            "iif \"lo\" return".to_string(),
            format!("ip saddr @{SET_PROTECTED4} return"),
            format!("ip6 saddr @{SET_PROTECTED6} return"),
        ];
        rules.extend(banned_drops());
        rules
    });
    Plan {
        input,
        observe,
        output,
        early,
        trap,
        ban,
        over_budget,
        peer,
        peer_log,
    }
}

/// The table, sets and chains, each `add`ed (idempotent), without any rule.
fn render_skeleton(spec: &TrapSpec, out: &mut String) {
    let t = &spec.table;
    let timeout = nft_duration(spec.ban_timeout);
    let size = spec.set_size;
    let _ = writeln!(out, "add table inet {t}");
    for (name, ty) in [(SET_BANNED4, "ipv4_addr"), (SET_BANNED6, "ipv6_addr")] {
        let _ = writeln!(
            out,
            "add set inet {t} {name} {{ type {ty}; flags dynamic, timeout; timeout {timeout}; size {size}; }}"
        );
    }
    for (name, ty) in [(SET_BANNEDNET4, "ipv4_addr"), (SET_BANNEDNET6, "ipv6_addr")] {
        let _ = writeln!(
            out,
            "add set inet {t} {name} {{ type {ty}; flags interval, timeout; size {size}; }}"
        );
    }
    for (name, ty) in [(SET_PROTECTED4, "ipv4_addr"), (SET_PROTECTED6, "ipv6_addr")] {
        let _ = writeln!(
            out,
            "add set inet {t} {name} {{ type {ty}; flags interval; }}"
        );
    }
    for (name, ty) in [(SET_UDPFLOWS4, "ipv4_addr"), (SET_UDPFLOWS6, "ipv6_addr")] {
        let _ = writeln!(
            out,
            "add set inet {t} {name} {{ type {ty} . inet_service . inet_service; flags dynamic, timeout; timeout {}s; size {UDP_FLOW_SET_SIZE}; }}",
            UDP_FLOW_WINDOW.as_secs()
        );
    }
    let peer_timeout = nft_duration(spec.known_peer_time.unwrap_or(Duration::from_secs(86_400)));
    for (name, ty) in [(SET_KNOWNPEER4, "ipv4_addr"), (SET_KNOWNPEER6, "ipv6_addr")] {
        let _ = writeln!(
            out,
            "add set inet {t} {name} {{ type {ty}; flags dynamic, timeout; timeout {peer_timeout}; size {}; }}",
            spec.known_peer_size
        );
    }
    for name in [COUNTER_OVER_BUDGET, COUNTER_SET_FULL, COUNTER_KNOWN_PEER] {
        let _ = writeln!(out, "add counter inet {t} {name}");
    }
    let _ = writeln!(
        out,
        "add chain inet {t} {CHAIN_INPUT} {{ type filter hook input priority {}; policy accept; }}",
        spec.priority
    );
    for name in REGULAR_CHAINS {
        let _ = writeln!(out, "add chain inet {t} {name}");
    }
    let _ = writeln!(
        out,
        "add chain inet {t} {CHAIN_OUTPUT} {{ type filter hook output priority {}; policy accept; }}",
        spec.priority
    );
    // Added also when not wanted, so that the `delete` in `render_ruleset` finds it.
    let _ = writeln!(out, "{}", early_chain(t));
}

fn early_chain(t: &str) -> String {
    format!(
        "add chain inet {t} {CHAIN_EARLY} {{ type filter hook prerouting priority {EARLY_PRIORITY}; policy accept; }}"
    )
}

/// The budget's limit object, in nft syntax.
fn budget_limit(t: &str, b: BanBudget) -> String {
    // nft takes burst 0 as its default of 5; the settings refuse 0, this keeps 1.
    format!(
        "add limit inet {t} {LIMIT_BUDGET} {{ rate {}/second burst {} packets; }}",
        b.rate.max(1),
        b.burst.max(1)
    )
}

/// The whole transaction for `nft -f -`. `spec.table` must satisfy
/// [`valid_table_name`] (checked by [`super::Nft::new`]).
pub fn render_ruleset(spec: &TrapSpec) -> String {
    let t = &spec.table;
    let mut out = String::from("# portsentry kernel fast path; generated, do not edit\n");
    render_skeleton(spec, &mut out);
    for name in [CHAIN_INPUT, CHAIN_OUTPUT, CHAIN_EARLY]
        .iter()
        .chain(&REGULAR_CHAINS)
    {
        let _ = writeln!(out, "flush chain inet {t} {name}");
    }
    if !spec.early_drop {
        let _ = writeln!(out, "delete chain inet {t} {CHAIN_EARLY}");
    }
    // `add limit` keeps an existing object as it is, whatever its rate: so add (a no-op
    // when present), delete (no rule refers to it after the flushes) and add anew.
    let placeholder = BanBudget { rate: 1, burst: 1 };
    let _ = writeln!(
        out,
        "{}",
        budget_limit(t, spec.ban_budget.unwrap_or(placeholder))
    );
    let _ = writeln!(out, "delete limit inet {t} {LIMIT_BUDGET}");
    if let Some(b) = spec.ban_budget {
        let _ = writeln!(out, "{}", budget_limit(t, b));
    }
    for (chain, rules) in plan(spec).chains() {
        for rule in rules {
            let _ = writeln!(out, "add rule inet {t} {chain} {rule}");
        }
    }
    out
}

/// Rules left while the daemon is stopped: bans keep being enforced (and keep
/// expiring in the kernel), protected sources stay exempt, nothing new is trapped.
/// (The early chain, when there is one, is left as it is: it only drops bans too.)
pub(crate) fn stopped_rules() -> Vec<String> {
    let mut rules = vec![
        "iif \"lo\" return".to_string(),
        format!("ip saddr @{SET_PROTECTED4} return"),
        format!("ip6 saddr @{SET_PROTECTED6} return"),
    ];
    rules.extend(banned_drops());
    rules
}

/// Transaction removing network bans; `add` first so that an absent element is not an
/// error (nft 1.0.6 has no `destroy`).
pub fn render_net_unbans(table: &str, nets: &[IpNet]) -> String {
    let mut out = String::new();
    for net in nets {
        let set = match net {
            IpNet::V4(_) => SET_BANNEDNET4,
            IpNet::V6(_) => SET_BANNEDNET6,
        };
        let net = net.trunc();
        let _ = writeln!(out, "add element inet {table} {set} {{ {net} }}");
        let _ = writeln!(out, "delete element inet {table} {set} {{ {net} }}");
    }
    out
}

/// Transaction adding network bans to the interval sets (`None` = permanent). An
/// existing element is replaced, so a new timeout takes effect.
pub fn render_net_bans(table: &str, bans: &[(IpNet, Option<Duration>)]) -> String {
    let mut out = String::new();
    for (net, timeout) in bans {
        let set = match net {
            IpNet::V4(_) => SET_BANNEDNET4,
            IpNet::V6(_) => SET_BANNEDNET6,
        };
        let net = net.trunc();
        // nft 1.0.6 has no `destroy`: add (a no-op when present), delete, add again, in
        // one transaction, so the new timeout (or none) takes effect atomically.
        let _ = writeln!(out, "add element inet {table} {set} {{ {net} }}");
        let _ = writeln!(out, "delete element inet {table} {set} {{ {net} }}");
        match timeout {
            Some(t) => {
                let _ = writeln!(
                    out,
                    "add element inet {table} {set} {{ {net} timeout {} }}",
                    nft_duration(*t)
                );
            }
            None => {
                let _ = writeln!(out, "add element inet {table} {set} {{ {net} }}");
            }
        }
    }
    out
}

/// Transaction replacing the traps by [`stopped_rules`]; sets are untouched.
pub(crate) fn render_remove_traps(table: &str) -> String {
    let mut out = String::new();
    // The trap's own chains are flushed too: nothing is learned or sampled while
    // stopped; the sets, counters and the early chain stay.
    // (`add chain` first: a table an older version made may lack the newer chains.)
    for name in REGULAR_CHAINS {
        let _ = writeln!(out, "add chain inet {table} {name}");
    }
    for name in [CHAIN_INPUT, CHAIN_OUTPUT].iter().chain(&REGULAR_CHAINS) {
        let _ = writeln!(out, "flush chain inet {table} {name}");
    }
    for rule in stopped_rules() {
        let _ = writeln!(out, "add rule inet {table} {CHAIN_INPUT} {rule}");
    }
    out
}

/// Transaction replacing the content of both protected sets (merged first).
pub fn render_protected(table: &str, nets: &[IpNet]) -> String {
    let (v4, v6) = merge_nets(nets);
    let mut out = String::new();
    let _ = writeln!(out, "flush set inet {table} {SET_PROTECTED4}");
    let _ = writeln!(out, "flush set inet {table} {SET_PROTECTED6}");
    if !v4.is_empty() {
        let items: Vec<String> = v4.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "add element inet {table} {SET_PROTECTED4} {{ {} }}",
            items.join(", ")
        );
    }
    if !v6.is_empty() {
        let items: Vec<String> = v6.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "add element inet {table} {SET_PROTECTED6} {{ {} }}",
            items.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TrapSpec {
        TrapSpec {
            table: "portsentry".into(),
            tcp_ports: Some(vec![(1, 112), (114, 138), (140, 1023)]),
            udp_ports: Some(vec![(1, 1023)]),
            ban_tcp: true,
            ban_udp: false,
            ban_timeout: Duration::from_secs(3600),
            nflog_group: 7,
            set_size: DEFAULT_SET_SIZE,
            priority: DEFAULT_PRIORITY,
            known_peer_time: Some(Duration::from_secs(86_400)),
            known_peer_size: 1000,
            ban_budget: None,
            early_drop: false,
            interfaces: Vec::new(),
        }
    }

    #[test]
    fn renders_the_full_transaction() {
        let text = render_ruleset(&spec());
        let expected = r#"# portsentry kernel fast path; generated, do not edit
add table inet portsentry
add set inet portsentry banned4 { type ipv4_addr; flags dynamic, timeout; timeout 3600s; size 1048576; }
add set inet portsentry banned6 { type ipv6_addr; flags dynamic, timeout; timeout 3600s; size 1048576; }
add set inet portsentry bannednet4 { type ipv4_addr; flags interval, timeout; size 1048576; }
add set inet portsentry bannednet6 { type ipv6_addr; flags interval, timeout; size 1048576; }
add set inet portsentry protected4 { type ipv4_addr; flags interval; }
add set inet portsentry protected6 { type ipv6_addr; flags interval; }
add set inet portsentry udpflows4 { type ipv4_addr . inet_service . inet_service; flags dynamic, timeout; timeout 30s; size 65536; }
add set inet portsentry udpflows6 { type ipv6_addr . inet_service . inet_service; flags dynamic, timeout; timeout 30s; size 65536; }
add set inet portsentry knownpeer4 { type ipv4_addr; flags dynamic, timeout; timeout 86400s; size 1000; }
add set inet portsentry knownpeer6 { type ipv6_addr; flags dynamic, timeout; timeout 86400s; size 1000; }
add counter inet portsentry over_budget
add counter inet portsentry set_full
add counter inet portsentry known_peer
add chain inet portsentry input { type filter hook input priority -10; policy accept; }
add chain inet portsentry observe
add chain inet portsentry trap
add chain inet portsentry ban
add chain inet portsentry over_budget
add chain inet portsentry peer
add chain inet portsentry peer_log
add chain inet portsentry output { type filter hook output priority -10; policy accept; }
add chain inet portsentry early { type filter hook prerouting priority -300; policy accept; }
flush chain inet portsentry input
flush chain inet portsentry output
flush chain inet portsentry early
flush chain inet portsentry observe
flush chain inet portsentry trap
flush chain inet portsentry ban
flush chain inet portsentry over_budget
flush chain inet portsentry peer
flush chain inet portsentry peer_log
delete chain inet portsentry early
add limit inet portsentry ban_budget { rate 1/second burst 1 packets; }
delete limit inet portsentry ban_budget
add rule inet portsentry input iif "lo" return
add rule inet portsentry input ip saddr @protected4 goto observe
add rule inet portsentry input ip6 saddr @protected6 goto observe
add rule inet portsentry input ip saddr @banned4 drop
add rule inet portsentry input ip6 saddr @banned6 drop
add rule inet portsentry input ip saddr @bannednet4 drop
add rule inet portsentry input ip6 saddr @bannednet6 drop
add rule inet portsentry input meta l4proto { tcp, udp } socket transparent 0 return
add rule inet portsentry input meta nfproto ipv4 ip saddr . udp sport . udp dport @udpflows4 update @knownpeer4 { ip saddr } return
add rule inet portsentry input meta nfproto ipv6 ip6 saddr . udp sport . udp dport @udpflows6 update @knownpeer6 { ip6 saddr } return
add rule inet portsentry input tcp dport { 1-112, 114-138, 140-1023 } tcp flags & rst != rst tcp flags & (syn | ack) != syn | ack goto trap
add rule inet portsentry input meta nfproto ipv4 udp dport { 1-1023 } ip saddr @knownpeer4 goto peer_log
add rule inet portsentry input meta nfproto ipv6 udp dport { 1-1023 } ip6 saddr @knownpeer6 goto peer_log
add rule inet portsentry input udp dport { 1-1023 } log prefix "portsentry log " group 7
add rule inet portsentry observe meta l4proto { tcp, udp } socket transparent 0 return
add rule inet portsentry observe tcp dport { 1-112, 114-138, 140-1023 } tcp flags & rst != rst tcp flags & (syn | ack) != syn | ack log prefix "portsentry log " group 7
add rule inet portsentry observe udp dport { 1-1023 } log prefix "portsentry log " group 7
add rule inet portsentry output oif "lo" return
add rule inet portsentry output meta nfproto ipv4 ip hdrlength 5 tcp flags & (syn | rst | ack) == ack @th,96,8 . ip length { 0x50 . 41-65535, 0x51 . 41-65535, 0x60 . 45-65535, 0x61 . 45-65535, 0x70 . 49-65535, 0x71 . 49-65535, 0x80 . 53-65535, 0x81 . 53-65535, 0x90 . 57-65535, 0x91 . 57-65535, 0xa0 . 61-65535, 0xa1 . 61-65535, 0xb0 . 65-65535, 0xb1 . 65-65535, 0xc0 . 69-65535, 0xc1 . 69-65535, 0xd0 . 73-65535, 0xd1 . 73-65535, 0xe0 . 77-65535, 0xe1 . 77-65535, 0xf0 . 81-65535, 0xf1 . 81-65535 } update @knownpeer4 { ip daddr }
add rule inet portsentry output meta nfproto ipv6 ip6 nexthdr tcp tcp flags & (syn | rst | ack) == ack @th,96,8 . ip6 length { 0x50 . 21-65535, 0x51 . 21-65535, 0x60 . 25-65535, 0x61 . 25-65535, 0x70 . 29-65535, 0x71 . 29-65535, 0x80 . 33-65535, 0x81 . 33-65535, 0x90 . 37-65535, 0x91 . 37-65535, 0xa0 . 41-65535, 0xa1 . 41-65535, 0xb0 . 45-65535, 0xb1 . 45-65535, 0xc0 . 49-65535, 0xc1 . 49-65535, 0xd0 . 53-65535, 0xd1 . 53-65535, 0xe0 . 57-65535, 0xe1 . 57-65535, 0xf0 . 61-65535, 0xf1 . 61-65535 } update @knownpeer6 { ip6 daddr }
add rule inet portsentry output meta nfproto ipv4 udp sport { 1-1023 } update @udpflows4 { ip daddr . udp dport . udp sport }
add rule inet portsentry output meta nfproto ipv6 udp sport { 1-1023 } update @udpflows6 { ip6 daddr . udp dport . udp sport }
add rule inet portsentry trap ip saddr @knownpeer4 goto peer
add rule inet portsentry trap ip6 saddr @knownpeer6 goto peer
add rule inet portsentry trap goto ban
add rule inet portsentry ban meta nfproto ipv4 add @banned4 { ip saddr } log prefix "portsentry ban " group 7 drop
add rule inet portsentry ban meta nfproto ipv6 add @banned6 { ip6 saddr } log prefix "portsentry ban " group 7 drop
add rule inet portsentry ban counter name "set_full" limit rate 1/second burst 1 packets log prefix "portsentry full " group 7 drop
add rule inet portsentry ban drop
add rule inet portsentry over_budget counter name "over_budget" limit rate 10/second burst 10 packets log prefix "portsentry over " group 7 drop
add rule inet portsentry over_budget drop
add rule inet portsentry peer counter name "known_peer" limit rate 10/second burst 10 packets log prefix "portsentry peer " group 7 drop
add rule inet portsentry peer drop
add rule inet portsentry peer_log counter name "known_peer" limit rate 10/second burst 10 packets log prefix "portsentry peer " group 7
"#;
        assert_eq!(text, expected);
    }

    #[test]
    fn never_deletes_or_flushes_a_set() {
        let text = render_ruleset(&spec());
        for line in text.lines() {
            assert!(!line.starts_with("flush set"), "{line}");
            // Only the early chain (when not wanted) and the budget object are deleted.
            assert!(
                !line.starts_with("delete")
                    || line == "delete chain inet portsentry early"
                    || line == "delete limit inet portsentry ban_budget",
                "{line}"
            );
            assert!(!line.starts_with("flush ruleset"), "{line}");
            assert!(!line.starts_with("flush table"), "{line}");
        }
    }

    #[test]
    fn no_ports_means_no_trap_rules() {
        let mut s = spec();
        s.tcp_ports = None;
        s.udp_ports = Some(vec![]);
        let p = plan(&s);
        assert_eq!(p.input.len(), 8);
        assert_eq!(p.observe.len(), 1);
        assert!(!render_ruleset(&s).contains("dport"));
    }

    #[test]
    fn ban_flags_choose_the_rule_shape() {
        let mut s = spec();
        s.ban_tcp = false;
        s.ban_udp = true;
        let p = plan(&s);
        // 8 fixed + 2 UDP flow returns + tcp log-only (2 known-peer gotos, 1 log) +
        // udp ban (1 goto trap).
        assert_eq!(p.input.len(), 14);
        assert_eq!(
            p.input[10],
            r#"meta nfproto ipv4 tcp dport { 1-112, 114-138, 140-1023 } tcp flags & rst != rst tcp flags & (syn | ack) != syn | ack ip saddr @knownpeer4 goto peer_log"#
        );
        assert_eq!(
            p.input[12],
            r#"tcp dport { 1-112, 114-138, 140-1023 } tcp flags & rst != rst tcp flags & (syn | ack) != syn | ack log prefix "portsentry log " group 7"#
        );
        assert_eq!(p.input[13], "udp dport { 1-1023 } goto trap");
        assert_eq!(p.observe.len(), 3);
        assert!(
            p.observe
                .iter()
                .all(|r| !r.contains("drop") && !r.contains("add @"))
        );
    }

    #[test]
    fn the_budget_sits_between_known_peers_and_the_ban() {
        let mut s = spec();
        s.ban_budget = Some(BanBudget { rate: 3, burst: 7 });
        let p = plan(&s);
        assert_eq!(
            p.trap,
            vec![
                "ip saddr @knownpeer4 goto peer",
                "ip6 saddr @knownpeer6 goto peer",
                "limit name \"ban_budget\" goto ban",
                "goto over_budget",
            ]
        );
        assert_eq!(
            p.over_budget[0],
            r#"counter name "over_budget" limit rate 10/second burst 10 packets log prefix "portsentry over " group 7 drop"#
        );
        let text = render_ruleset(&s);
        assert!(text.contains(
            "delete limit inet portsentry ban_budget\nadd limit inet portsentry ban_budget { rate 3/second burst 7 packets; }\n"
        ));
        // Without known peers the trap goes straight to the budget.
        s.known_peer_time = None;
        let p = plan(&s);
        assert_eq!(p.trap.len(), 2);
        assert!(
            p.output.iter().all(|r| !r.contains("knownpeer")),
            "{:?}",
            p.output
        );
        assert!(
            p.input.iter().all(|r| !r.contains("knownpeer")),
            "{:?}",
            p.input
        );
    }

    #[test]
    fn early_drop_moves_the_ban_drops_to_prerouting() {
        let mut s = spec();
        s.early_drop = true;
        let p = plan(&s);
        assert_eq!(
            p.early.as_deref().unwrap(),
            [
                "iif \"lo\" return",
                "ip saddr @protected4 return",
                "ip6 saddr @protected6 return",
                "ip saddr @banned4 drop",
                "ip6 saddr @banned6 drop",
                "ip saddr @bannednet4 drop",
                "ip6 saddr @bannednet6 drop",
            ]
        );
        assert!(
            p.input
                .iter()
                .all(|r| !r.ends_with("drop") || r.contains("dport"))
        );
        assert!(p.input[1].contains("@protected4 goto observe"));
        let text = render_ruleset(&s);
        assert!(text.contains("hook prerouting priority -300;"));
        assert!(!text.contains("delete chain"));
        assert!(text.contains("add rule inet portsentry early ip saddr @banned4 drop"));
    }

    #[test]
    fn ports_are_sorted_and_merged() {
        assert_eq!(
            normalize_ports(&[
                (140, 1023),
                (1, 112),
                (100, 120),
                (1024, 1024),
                (22, 22),
                (2000, 1500)
            ]),
            vec![(1, 120), (140, 1024), (1500, 2000)]
        );
        assert_eq!(
            normalize_ports(&[(65535, 65535), (65534, 65535)]),
            vec![(65534, 65535)]
        );
        assert_eq!(port_set(&[(22, 22), (80, 81)]), "{ 22, 80-81 }");
    }

    #[test]
    fn durations_in_nft_syntax() {
        assert_eq!(nft_duration(Duration::from_secs(3600)), "3600s");
        assert_eq!(nft_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(nft_duration(Duration::ZERO), "1ms");
        // More than 8 digits in one unit is split (nft 1.0.6 refuses `100000000s`).
        assert_eq!(nft_duration(Duration::from_secs(99_999_999)), "99999999s");
        assert_eq!(
            nft_duration(Duration::from_secs(100_000_000)),
            "1157d35200s"
        );
        assert_eq!(
            nft_duration(Duration::from_millis(100_000_000_001)),
            "1157d35200s1ms"
        );
        let mut s = spec();
        s.ban_timeout = Duration::ZERO;
        assert!(render_ruleset(&s).contains("timeout 1ms; size"));
    }

    #[test]
    fn priority_and_size_are_rendered() {
        let mut s = spec();
        s.priority = 5;
        s.set_size = 1000;
        let text = render_ruleset(&s);
        assert!(text.contains("hook input priority 5; policy accept;"));
        assert!(text.contains("timeout 3600s; size 1000; }"));
    }

    #[test]
    fn protected_nets_are_merged_per_family() {
        let nets: Vec<IpNet> = [
            "198.18.0.0/16",
            "198.18.3.0/24",
            "198.18.0.0/16",
            "198.19.0.0/16",
            "203.0.113.7/32",
            "203.0.113.9/24",
            "fd00:5e17::/64",
            "fd00:5e17::1/128",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let text = render_protected("portsentry", &nets);
        assert_eq!(
            text,
            "flush set inet portsentry protected4\n\
             flush set inet portsentry protected6\n\
             add element inet portsentry protected4 { 198.18.0.0/15, 203.0.113.0/24 }\n\
             add element inet portsentry protected6 { fd00:5e17::/64 }\n"
        );
        assert_eq!(
            render_protected("t", &[]),
            "flush set inet t protected4\nflush set inet t protected6\n"
        );
    }

    #[test]
    fn remove_traps_keeps_the_ban_drops() {
        let text = render_remove_traps("portsentry");
        assert!(text.contains("add rule inet portsentry input ip saddr @banned4 drop"));
        assert!(text.contains("add rule inet portsentry input ip6 saddr @banned6 drop"));
        assert!(text.contains("ip saddr @protected4 return"));
        assert!(text.contains("flush chain inet portsentry trap"));
        assert!(
            !text.contains("early"),
            "the early chain only drops: left as it is"
        );
        assert!(!text.contains("dport"));
        assert!(!text.contains("set inet"));
    }

    #[test]
    fn table_names() {
        assert!(valid_table_name("portsentry"));
        assert!(valid_table_name("ps_test_12"));
        assert!(!valid_table_name(""));
        assert!(!valid_table_name("1abc"));
        assert!(!valid_table_name("a b"));
        assert!(!valid_table_name("a;delete table inet filter"));
        assert!(!valid_table_name(&"a".repeat(65)));
    }

    #[test]
    fn named_interfaces_limit_the_traps_not_the_bans() {
        let mut s = spec();
        s.interfaces = vec!["eth0".into(), "wg-0".into(), "bad name".into()];
        let p = plan(&s);
        let at = p
            .input
            .iter()
            .position(|r| r == "iifname != { \"eth0\", \"wg-0\" } return")
            .expect("an iifname rule for the valid names");
        let first_trap = p
            .input
            .iter()
            .position(|r| r.contains("tcp dport"))
            .expect("a trap rule");
        assert!(at < first_trap, "{:?}", p.input);
        assert!(valid_interface_name("enp0s31f6") && !valid_interface_name("a\"b"));
        assert!(!valid_interface_name("") && !valid_interface_name("sixteen-chars-xx"));
        s.interfaces.clear();
        assert!(!plan(&s).input.iter().any(|r| r.contains("iifname")));
    }
}
