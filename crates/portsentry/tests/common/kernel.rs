//! Helpers for the kernel fast path tests: what our nftables table holds in the
//! defender's namespace (read with `nft -j`, as an admin would), the `portsentry`
//! client subcommands run there, and nmap output parsed into port states and the
//! order in which nmap sent its probes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use super::Netns;
use super::daemon::Conf;
use super::{Output, wait_until};

/// The daemon's default table (`inet portsentry`).
pub const TABLE: &str = "portsentry";

/// One element of a ban set as `nft -j list set` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elem {
    pub addr: IpAddr,
    /// The element's timeout in seconds; the set's default when nft does not print
    /// one (nft omits it when it equals the set's timeout). None = no timeout.
    pub timeout: Option<u64>,
    /// Seconds left before the kernel drops the element (as nft rounds them).
    pub expires: Option<u64>,
}

/// A conf for the kernel tests: the harness's 1.2-style conf (advanced TCP and UDP
/// below 1024, SCAN_TRIGGER=0, BLOCK_TCP/UDP=1, KILL_HOSTS_DENY into a temp file)
/// without KILL_ROUTE, so that the only thing that can block a host is the nftables
/// ban: an iptables DROP left by the legacy command would hide an expired or
/// flushed ban.
pub fn kernel_conf() -> Conf {
    Conf::new().unset("KILL_ROUTE")
}

/// Name of the ban set for an address family.
pub fn ban_set(v6: bool) -> &'static str {
    if v6 { "banned6" } else { "banned4" }
}

/// Elements of `set` in our table in `ns`; None when the table or set does not exist
/// (or nft fails: its output is in the panic message of the callers that need it).
pub fn set_elems(ns: &Netns, set: &str) -> Option<Vec<Elem>> {
    let out = ns.exec(
        &["nft", "-j", "list", "set", "inet", TABLE, set],
        Duration::from_secs(10),
    );
    if !out.success() {
        return None;
    }
    Some(parse_set_json(&out.stdout))
}

/// Parses `nft -j list set` output into elements. Elements can be bare strings
/// (no timeout flag) or `{"elem": {"val": ..., "timeout": s, "expires": s}}`.
pub fn parse_set_json(text: &str) -> Vec<Elem> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let Some(items) = v.get("nftables").and_then(|n| n.as_array()) else {
        return out;
    };
    for item in items {
        let Some(set) = item.get("set") else { continue };
        let default_timeout = set.get("timeout").and_then(|t| t.as_u64());
        let Some(elems) = set.get("elem").and_then(|e| e.as_array()) else {
            continue;
        };
        for e in elems {
            let (val, timeout, expires) = match e.get("elem") {
                Some(obj) => (
                    obj.get("val").and_then(|v| v.as_str()),
                    obj.get("timeout")
                        .and_then(|t| t.as_u64())
                        .or(default_timeout),
                    obj.get("expires").and_then(|t| t.as_u64()),
                ),
                None => (e.as_str(), default_timeout, None),
            };
            if let Some(addr) = val.and_then(|s| s.parse::<IpAddr>().ok()) {
                out.push(Elem {
                    addr,
                    timeout,
                    expires,
                });
            }
        }
    }
    out
}

/// The ban of `ip` in the defender's kernel set, if any.
pub fn ban_of(ns: &Netns, ip: IpAddr) -> Option<Elem> {
    set_elems(ns, ban_set(ip.is_ipv6()))?
        .into_iter()
        .find(|e| e.addr == ip)
}

/// Waits (bounded) until `ip` is in the ban set; returns its element.
pub fn wait_banned(ns: &Netns, ip: IpAddr, timeout: Duration) -> Option<Elem> {
    let mut found = None;
    wait_until(timeout, Duration::from_millis(50), || {
        found = ban_of(ns, ip);
        found.is_some()
    });
    found
}

/// Waits (bounded) until `ip` is no longer in the ban set.
pub fn wait_unbanned(ns: &Netns, ip: IpAddr, timeout: Duration) -> bool {
    wait_until(timeout, Duration::from_millis(100), || {
        ban_of(ns, ip).is_none()
    })
}

/// `nft list set inet portsentry <set>` text, for failure messages.
pub fn set_text(ns: &Netns, set: &str) -> String {
    let out = ns.exec(
        &["nft", "list", "set", "inet", TABLE, set],
        Duration::from_secs(10),
    );
    format!("{}{}", out.stdout, out.stderr)
}

/// `nft list tables` in `ns`.
pub fn tables(ns: &Netns) -> String {
    ns.exec_ok(&["nft", "list", "tables"], Duration::from_secs(10))
        .stdout
}

/// True if `nft list tables` shows `table inet portsentry`.
pub fn table_exists(ns: &Netns) -> bool {
    tables(ns)
        .lines()
        .any(|l| l.trim() == format!("table inet {TABLE}"))
}

/// `nft list chain inet portsentry input` (empty if it does not exist).
pub fn input_chain(ns: &Netns) -> String {
    ns.exec(
        &["nft", "list", "chain", "inet", TABLE, "input"],
        Duration::from_secs(10),
    )
    .stdout
}

/// Runs `portsentry -c <conf> --settings <conf's toml> <args>` in `ns` (the client
/// subcommands: `list`, `flush --all`). Both options go before the subcommand (the
/// CLI refuses them after it), and `-c` is needed: without it the built-in 1.2
/// defaults point IGNORE_FILE at /etc/portsentry/portsentry.ignore, and a missing
/// file there is a configuration error even for `list`.
pub fn client(ns: &Netns, conf: &Conf, args: &[&str]) -> Output {
    let conf_path = conf.conf_path().display().to_string();
    let settings = conf.settings_path().display().to_string();
    let mut argv = vec![
        super::daemon_bin(),
        "-c",
        &conf_path,
        "--settings",
        &settings,
    ];
    argv.extend_from_slice(args);
    ns.exec(&argv, Duration::from_secs(30))
}

/// "attackalert: Host <ip> has been banned in the kernel (nftables set <set>) for
/// <time>, offence <n>, unverified evidence": the ban of a single-packet probe (SYN,
/// FIN, UDP, ...), the only kind these scans send.
pub fn ban_line(ip: IpAddr, time: &str, offence: u32) -> String {
    ban_line_as(ip, time, offence, "unverified")
}

/// [`ban_line`] for a ban of this evidence class.
pub fn ban_line_as(ip: IpAddr, time: &str, offence: u32, evidence: &str) -> String {
    format!(
        "attackalert: Host {ip} has been banned in the kernel (nftables set {}) for {time}, offence {offence}, {evidence} evidence",
        ban_set(ip.is_ipv6())
    )
}

/// What nmap said about the ports of one target.
#[derive(Debug, Default)]
pub struct NmapReport {
    /// Port → state from the grepable output ("open", "closed", "unfiltered",
    /// "open|filtered", ...). Ports in nmap's "Ignored State" are not listed.
    pub states: BTreeMap<u16, String>,
    /// "Ignored State: filtered (195)" → ("filtered", 195).
    pub ignored: Option<(String, u32)>,
    /// Destination ports of the probes nmap sent to the target, in sending order
    /// (from `--packet-trace` SENT lines; retransmissions included).
    pub sent: Vec<u16>,
}

impl NmapReport {
    /// Ports in one of `states`.
    pub fn ports_in(&self, states: &[&str]) -> Vec<u16> {
        self.states
            .iter()
            .filter(|(_, s)| states.contains(&s.as_str()))
            .map(|(p, _)| *p)
            .collect()
    }

    /// Ports whose probe nmap sent before the first probe to a port for which
    /// `trapped` holds (that first trapped port excluded).
    pub fn sent_before_first(&self, trapped: impl Fn(u16) -> bool) -> Vec<u16> {
        self.sent
            .iter()
            .copied()
            .take_while(|p| !trapped(*p))
            .collect()
    }

    /// Position (0-based) of the first probe to a trapped port.
    pub fn first_trapped(&self, trapped: impl Fn(u16) -> bool) -> Option<usize> {
        self.sent.iter().position(|p| trapped(*p))
    }
}

/// Parses nmap's output when run with `--packet-trace` (its `stdout`) and
/// `-oG FILE` (the file's text, `grepable`) against `target`.
pub fn parse_nmap(stdout: &str, grepable: &str, target: IpAddr) -> NmapReport {
    let mut r = NmapReport::default();
    for line in stdout.lines() {
        // "SENT (0.0602s) TCP 198.18.0.2:45141 > 198.18.0.1:23 S ttl=..." and, for
        // IPv6, "SENT (0.05s) TCP fd00:5e17::2:46340 > fd00:5e17::1:22 S ...".
        if !(line.starts_with("SENT ") && (line.contains(" TCP ") || line.contains(" UDP "))) {
            continue;
        }
        let Some((_, tail)) = line.split_once(" > ") else {
            continue;
        };
        let dst = tail.split_whitespace().next().unwrap_or("");
        let Some((addr, port)) = dst.rsplit_once(':') else {
            continue;
        };
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        if addr.parse::<IpAddr>().ok() == Some(target)
            && let Ok(p) = port.parse()
        {
            r.sent.push(p);
        }
    }
    for line in grepable.lines().filter(|l| l.starts_with("Host: ")) {
        for field in line.split('\t') {
            if let Some(ports) = field.strip_prefix("Ports: ") {
                for entry in ports.split(", ") {
                    let parts: Vec<&str> = entry.trim().split('/').collect();
                    if parts.len() >= 2
                        && let Ok(p) = parts[0].parse()
                    {
                        r.states.insert(p, parts[1].to_string());
                    }
                }
            } else if let Some(ign) = field.strip_prefix("Ignored State: ") {
                // "filtered (195)"
                if let Some((state, n)) = ign.split_once(" (") {
                    let n = n.trim_end_matches(')').parse().unwrap_or(0);
                    r.ignored = Some((state.to_string(), n));
                }
            }
        }
    }
    r
}
