//! The text of our nftables table, as one `nft -f -` transaction. Pure: no I/O.
//!
//! Invariants of the generated transaction:
//! - it only ever names `inet <table>`; nothing else in the ruleset is touched;
//! - it never flushes or deletes a set, so bans (and the protected list) survive a
//!   re-apply: `add table` / `add set` / `add chain` are idempotent for an unchanged
//!   definition, and only our three chains are flushed and refilled;
//! - a protected source is never dropped nor banned, only logged (`observe`);
//! - a packet owned by a local socket (listener, own connection, TIME_WAIT) is never a
//!   probe (`socket transparent 0 return`), so ports in use are excluded live.

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
pub const CHAIN_INPUT: &str = "input";
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

/// The rule bodies of our three chains, in order. The verifier counts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub input: Vec<String>,
    pub observe: Vec<String>,
    pub output: Vec<String>,
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
    let mut input = vec![
        "iif \"lo\" return".to_string(),
        format!("ip saddr @{SET_PROTECTED4} goto {CHAIN_OBSERVE}"),
        format!("ip6 saddr @{SET_PROTECTED6} goto {CHAIN_OBSERVE}"),
        format!("ip saddr @{SET_BANNED4} drop"),
        format!("ip6 saddr @{SET_BANNED6} drop"),
        format!("ip saddr @{SET_BANNEDNET4} drop"),
        format!("ip6 saddr @{SET_BANNEDNET6} drop"),
        "meta l4proto { tcp, udp } socket transparent 0 return".to_string(),
    ];
    let mut output = Vec::new();
    if let Some(ports) = spec
        .udp_ports
        .as_deref()
        .map(normalize_ports)
        .filter(|p| !p.is_empty())
    {
        let ports = port_set(&ports);
        input.push(format!(
            "meta nfproto ipv4 ip saddr . udp sport . udp dport @{SET_UDPFLOWS4} return"
        ));
        input.push(format!(
            "meta nfproto ipv6 ip6 saddr . udp sport . udp dport @{SET_UDPFLOWS6} return"
        ));
        output.push("oif \"lo\" return".to_string());
        output.push(format!(
            "meta nfproto ipv4 udp sport {ports} update @{SET_UDPFLOWS4} {{ ip daddr . udp dport . udp sport }}"
        ));
        output.push(format!(
            "meta nfproto ipv6 udp sport {ports} update @{SET_UDPFLOWS6} {{ ip6 daddr . udp dport . udp sport }}"
        ));
    }
    let mut observe = vec!["meta l4proto { tcp, udp } socket transparent 0 return".to_string()];
    for (m, ban) in trap_matches(spec) {
        if ban {
            input.push(format!(
                "meta nfproto ipv4 {m} add @{SET_BANNED4} {{ ip saddr }} {} drop",
                log(PREFIX_BANNED, g)
            ));
            input.push(format!(
                "meta nfproto ipv6 {m} add @{SET_BANNED6} {{ ip6 saddr }} {} drop",
                log(PREFIX_BANNED, g)
            ));
            // Reached only when the `add` above failed (the set is full: the dynset
            // expression then breaks the rule): user space still hears of the probe.
            input.push(format!("{m} {} drop", log(PREFIX_OBSERVED, g)));
        } else {
            input.push(format!("{m} {}", log(PREFIX_OBSERVED, g)));
        }
        observe.push(format!("{m} {}", log(PREFIX_OBSERVED, g)));
    }
    Plan {
        input,
        observe,
        output,
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
    let _ = writeln!(
        out,
        "add chain inet {t} {CHAIN_INPUT} {{ type filter hook input priority {}; policy accept; }}",
        spec.priority
    );
    let _ = writeln!(out, "add chain inet {t} {CHAIN_OBSERVE}");
    let _ = writeln!(
        out,
        "add chain inet {t} {CHAIN_OUTPUT} {{ type filter hook output priority {}; policy accept; }}",
        spec.priority
    );
}

/// The whole transaction for `nft -f -`. `spec.table` must satisfy
/// [`valid_table_name`] (checked by [`super::Nft::new`]).
pub fn render_ruleset(spec: &TrapSpec) -> String {
    let t = &spec.table;
    let mut out = String::from("# portsentry kernel fast path; generated, do not edit\n");
    render_skeleton(spec, &mut out);
    let _ = writeln!(out, "flush chain inet {t} {CHAIN_INPUT}");
    let _ = writeln!(out, "flush chain inet {t} {CHAIN_OBSERVE}");
    let _ = writeln!(out, "flush chain inet {t} {CHAIN_OUTPUT}");
    let plan = plan(spec);
    for rule in &plan.input {
        let _ = writeln!(out, "add rule inet {t} {CHAIN_INPUT} {rule}");
    }
    for rule in &plan.observe {
        let _ = writeln!(out, "add rule inet {t} {CHAIN_OBSERVE} {rule}");
    }
    for rule in &plan.output {
        let _ = writeln!(out, "add rule inet {t} {CHAIN_OUTPUT} {rule}");
    }
    out
}

/// Rules left while the daemon is stopped: bans keep being enforced (and keep
/// expiring in the kernel), protected sources stay exempt, nothing new is trapped.
pub(crate) fn stopped_rules() -> Vec<String> {
    vec![
        "iif \"lo\" return".to_string(),
        format!("ip saddr @{SET_PROTECTED4} return"),
        format!("ip6 saddr @{SET_PROTECTED6} return"),
        format!("ip saddr @{SET_BANNED4} drop"),
        format!("ip6 saddr @{SET_BANNED6} drop"),
        format!("ip saddr @{SET_BANNEDNET4} drop"),
        format!("ip6 saddr @{SET_BANNEDNET6} drop"),
    ]
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
    let _ = writeln!(out, "flush chain inet {table} {CHAIN_INPUT}");
    let _ = writeln!(out, "flush chain inet {table} {CHAIN_OBSERVE}");
    let _ = writeln!(out, "flush chain inet {table} {CHAIN_OUTPUT}");
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
add chain inet portsentry input { type filter hook input priority -10; policy accept; }
add chain inet portsentry observe
add chain inet portsentry output { type filter hook output priority -10; policy accept; }
flush chain inet portsentry input
flush chain inet portsentry observe
flush chain inet portsentry output
add rule inet portsentry input iif "lo" return
add rule inet portsentry input ip saddr @protected4 goto observe
add rule inet portsentry input ip6 saddr @protected6 goto observe
add rule inet portsentry input ip saddr @banned4 drop
add rule inet portsentry input ip6 saddr @banned6 drop
add rule inet portsentry input ip saddr @bannednet4 drop
add rule inet portsentry input ip6 saddr @bannednet6 drop
add rule inet portsentry input meta l4proto { tcp, udp } socket transparent 0 return
add rule inet portsentry input meta nfproto ipv4 ip saddr . udp sport . udp dport @udpflows4 return
add rule inet portsentry input meta nfproto ipv6 ip6 saddr . udp sport . udp dport @udpflows6 return
add rule inet portsentry input meta nfproto ipv4 tcp dport { 1-112, 114-138, 140-1023 } tcp flags & rst != rst tcp flags & (syn | ack) != syn | ack add @banned4 { ip saddr } log prefix "portsentry ban " group 7 drop
add rule inet portsentry input meta nfproto ipv6 tcp dport { 1-112, 114-138, 140-1023 } tcp flags & rst != rst tcp flags & (syn | ack) != syn | ack add @banned6 { ip6 saddr } log prefix "portsentry ban " group 7 drop
add rule inet portsentry input tcp dport { 1-112, 114-138, 140-1023 } tcp flags & rst != rst tcp flags & (syn | ack) != syn | ack log prefix "portsentry log " group 7 drop
add rule inet portsentry input udp dport { 1-1023 } log prefix "portsentry log " group 7
add rule inet portsentry observe meta l4proto { tcp, udp } socket transparent 0 return
add rule inet portsentry observe tcp dport { 1-112, 114-138, 140-1023 } tcp flags & rst != rst tcp flags & (syn | ack) != syn | ack log prefix "portsentry log " group 7
add rule inet portsentry observe udp dport { 1-1023 } log prefix "portsentry log " group 7
add rule inet portsentry output oif "lo" return
add rule inet portsentry output meta nfproto ipv4 udp sport { 1-1023 } update @udpflows4 { ip daddr . udp dport . udp sport }
add rule inet portsentry output meta nfproto ipv6 udp sport { 1-1023 } update @udpflows6 { ip6 daddr . udp dport . udp sport }
"#;
        assert_eq!(text, expected);
    }

    #[test]
    fn never_deletes_or_flushes_a_set() {
        let text = render_ruleset(&spec());
        for line in text.lines() {
            assert!(!line.starts_with("flush set"), "{line}");
            assert!(!line.starts_with("delete"), "{line}");
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
        // 8 fixed + 2 UDP flow returns + tcp log-only (1) + udp ban (v4, v6, set-full
        // fallback).
        assert_eq!(p.input.len(), 14);
        assert_eq!(
            p.input[10],
            r#"tcp dport { 1-112, 114-138, 140-1023 } tcp flags & rst != rst tcp flags & (syn | ack) != syn | ack log prefix "portsentry log " group 7"#
        );
        assert_eq!(
            p.input[11],
            r#"meta nfproto ipv4 udp dport { 1-1023 } add @banned4 { ip saddr } log prefix "portsentry ban " group 7 drop"#
        );
        assert_eq!(
            p.input[12],
            r#"meta nfproto ipv6 udp dport { 1-1023 } add @banned6 { ip6 saddr } log prefix "portsentry ban " group 7 drop"#
        );
        assert_eq!(p.observe.len(), 3);
        assert!(
            p.observe
                .iter()
                .all(|r| !r.contains("drop") && !r.contains("add @"))
        );
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
}
