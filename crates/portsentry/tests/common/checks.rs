//! Scanner runs and the checks a user would make after a scan: the alert line, the
//! firewall rule in the defender's namespace, hosts.deny, history and blocked files,
//! and whether the attacker can still reach an open service.

use std::net::IpAddr;
use std::time::Duration;

use super::daemon::{Conf, Daemon, HistoryLine, ports_after};
use super::lab::Host;
use super::{NMAP_FAST, Output, can_connect, wait_until};

/// How long we wait for the daemon to react to something it should see.
pub const REACT: Duration = Duration::from_secs(10);
/// How long we keep watching to be confident that something did NOT happen.
pub const QUIET: Duration = Duration::from_millis(1500);

/// Runs nmap from `from` against `target` with the fast options plus `args`
/// (`-6` is added for an IPv6 target). Bounded to 120 s.
pub fn nmap(from: &Host, args: &[&str], target: IpAddr) -> Output {
    let t = target.to_string();
    let mut argv = vec!["nmap"];
    if target.is_ipv6() {
        argv.push("-6");
    }
    argv.extend_from_slice(NMAP_FAST);
    argv.extend_from_slice(args);
    argv.push(&t);
    let out = from.ns.exec(&argv, Duration::from_secs(120));
    assert!(!out.timed_out, "nmap {argv:?} timed out:\n{out}");
    assert!(
        out.stdout.contains("Nmap done"),
        "nmap {argv:?} did not finish:\n{out}"
    );
    out
}

/// Sends one TCP SYN with hping3 from `from` to `target:port` (IPv4 only).
pub fn hping_syn(from: &Host, target: IpAddr, port: u16) -> Output {
    let t = target.to_string();
    let p = port.to_string();
    from.ns.exec(
        &["hping3", "-q", "-S", "-c", "1", "-p", &p, &t],
        Duration::from_secs(10),
    )
}

/// "attackalert: <TYPE> from host: <ip>/<ip> to <PROTO> port: " (RESOLVE_HOST=0).
pub fn alert_prefix(kind: &str, ip: IpAddr, proto: &str) -> String {
    format!("attackalert: {kind} from host: {ip}/{ip} to {proto} port: ")
}

/// DROP rule text as `iptables -S INPUT` prints it for our block.sh.
pub fn drop_rule(ip: IpAddr) -> String {
    let plen = if ip.is_ipv6() { 128 } else { 32 };
    format!("-A INPUT -s {ip}/{plen} -j DROP")
}

/// True if the defender's INPUT chain (v4 or v6 per `ip`) has a DROP rule for ip.
pub fn has_drop_rule(defender: &Host, ip: IpAddr) -> bool {
    defender
        .ns
        .iptables_s(ip.is_ipv6(), "INPUT")
        .lines()
        .any(|l| l.trim() == drop_rule(ip))
}

/// Accepted hosts.deny forms for "ALL: $TARGET$": the plain address, or for IPv6
/// also the bracketed form that TCP wrappers understand.
pub fn hosts_deny_has(conf: &Conf, ip: IpAddr) -> bool {
    let text = Conf::read(&conf.hosts_deny_path());
    text.lines().any(|l| {
        let l = l.trim();
        l == format!("ALL: {ip}") || (ip.is_ipv6() && l == format!("ALL: [{ip}]"))
    })
}

/// Lines of the daemon that mention `ip` as a source in an alert or action.
pub fn attack_lines_for(d: &Daemon, ip: IpAddr) -> Vec<String> {
    let s = ip.to_string();
    d.lines()
        .into_iter()
        .filter(|l| l.contains("attackalert:") && mentions(l, &s))
        .collect()
}

/// True if `line` contains `ip` as a whole address (not as the prefix of a longer
/// one such as 198.18.1.2 within 198.18.1.20).
pub fn mentions(line: &str, ip: &str) -> bool {
    let bytes = line.as_bytes();
    let mut from = 0;
    while let Some(i) = line[from..].find(ip) {
        let start = from + i;
        let end = start + ip.len();
        let before_ok = start == 0 || !is_addr_char(bytes[start - 1]);
        let after_ok = end == bytes.len() || !is_addr_char(bytes[end]);
        if before_ok && after_ok {
            return true;
        }
        from = start + 1;
    }
    false
}

fn is_addr_char(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b'.' || b == b':'
}

/// What a blocking scan must have left behind.
pub struct BlockExpect<'a> {
    /// Alert type, e.g. "TCP SYN/Normal scan" or "UDP scan".
    pub kind: &'a str,
    /// "TCP" or "UDP".
    pub proto: &'a str,
    /// Blocked-file suffix: "atcp", "audp", "stcp", "sudp".
    pub mode: &'a str,
    /// The watched ports the scan touched; the reported port must be one of them.
    pub ports: &'a [u16],
}

/// Checks everything a user would check after `attacker` scanned the defender and
/// should have been blocked: alert line(s) of the right type and port, the "has been
/// blocked" lines, the DROP rule, hosts.deny, history and blocked files, and that
/// the attacker can no longer reach the open service on `open_port`.
pub fn assert_blocked(
    d: &Daemon,
    conf: &Conf,
    defender: &Host,
    attacker: &Host,
    v6: bool,
    open_port: u16,
    exp: &BlockExpect<'_>,
) {
    let ip = attacker.addr(v6);
    let prefix = alert_prefix(exp.kind, ip, exp.proto);
    d.check(
        d.wait_for_line(&prefix, REACT),
        format!("no alert line containing {prefix:?}"),
    );
    let lines = d.lines();
    let ports = ports_after(&lines, &prefix);
    d.check(
        !ports.is_empty() && ports.iter().all(|p| exp.ports.contains(p)),
        format!(
            "alert ports {ports:?} not all among the watched ports scanned {:?}",
            exp.ports
        ),
    );
    // Every alert about this source has the expected type.
    let other = format!(" from host: {ip}/{ip} to ");
    for l in lines.iter().filter(|l| l.contains(&other)) {
        d.check(
            l.contains(&prefix),
            format!("alert of another type for {ip}: {l}"),
        );
    }

    let route =
        format!("attackalert: Host {ip} has been blocked via dropped route using command: \"");
    d.check(
        d.wait_for_line(&route, REACT),
        format!("no line containing {route:?}"),
    );
    let wrappers = format!("attackalert: Host {ip} has been blocked via wrappers with string: \"");
    d.check(
        d.wait_for_line(&wrappers, REACT),
        format!("no line containing {wrappers:?}"),
    );
    for l in d.lines_with(&route) {
        d.check(
            l.contains("block.sh") && mentions(&l, &ip.to_string()) && l.ends_with('"'),
            format!("KILL_ROUTE line does not show the substituted command: {l}"),
        );
    }

    let rule_ok = wait_until(REACT, Duration::from_millis(100), || {
        has_drop_rule(defender, ip)
    });
    d.check(
        rule_ok,
        format!(
            "no {:?} in the defender's {}:\n{}",
            drop_rule(ip),
            if v6 { "ip6tables" } else { "iptables" },
            defender.ns.iptables_s(v6, "INPUT")
        ),
    );

    d.check(
        wait_until(REACT, Duration::from_millis(100), || {
            hosts_deny_has(conf, ip)
        }),
        format!(
            "hosts.deny {} lacks \"ALL: {ip}\":\n{}",
            conf.hosts_deny_path().display(),
            Conf::read(&conf.hosts_deny_path())
        ),
    );

    let ip_s = ip.to_string();
    for (what, path) in [
        ("history", conf.history_path()),
        ("blocked", conf.blocked_path(exp.mode)),
    ] {
        let found = wait_until(REACT, Duration::from_millis(100), || {
            HistoryLine::parse_all(&Conf::read(&path))
                .iter()
                .any(|h| h.ip == ip_s && h.resolved == ip_s && h.proto == exp.proto)
        });
        let text = Conf::read(&path);
        d.check(
            found,
            format!(
                "{what} file {} has no 1.2 line for {ip} {}:\n{text}",
                path.display(),
                exp.proto
            ),
        );
        for h in HistoryLine::parse_all(&text)
            .iter()
            .filter(|h| h.ip == ip_s)
        {
            d.check(
                exp.ports.contains(&h.port),
                format!(
                    "{what} line port {} not among {:?}: {h:?}",
                    h.port, exp.ports
                ),
            );
        }
        for l in text.lines() {
            d.check(
                HistoryLine::parse(l).is_some(),
                format!("{what} file line not in the 1.2 format: {l:?}"),
            );
        }
    }

    d.check(
        !can_connect(
            &attacker.ns,
            defender.addr(v6),
            open_port,
            Duration::from_secs(2),
        ),
        format!("attacker {ip} can still connect to the open port {open_port}"),
    );
    let errors = d.lines_with("attackalert: ERROR");
    d.check(errors.is_empty(), format!("error lines: {errors:?}"));
}

/// Checks that `host` (v4 or v6 address) was not acted on: no DROP rule, no
/// hosts.deny or history line, no "blocked" line, and it can still connect to
/// `open_port`.
pub fn assert_not_blocked(
    d: &Daemon,
    conf: &Conf,
    defender: &Host,
    host: &Host,
    v6: bool,
    open_port: u16,
) {
    let ip = host.addr(v6);
    let ip_s = ip.to_string();
    d.check(
        !has_drop_rule(defender, ip),
        format!(
            "unexpected DROP rule for {ip}:\n{}",
            defender.ns.iptables_s(v6, "INPUT")
        ),
    );
    d.check(
        !hosts_deny_has(conf, ip),
        format!(
            "unexpected hosts.deny line for {ip}:\n{}",
            Conf::read(&conf.hosts_deny_path())
        ),
    );
    let hist = Conf::read(&conf.history_path());
    d.check(
        !hist.lines().any(|l| mentions(l, &ip_s)),
        format!("unexpected history line for {ip}:\n{hist}"),
    );
    let acted: Vec<String> = attack_lines_for(d, ip)
        .into_iter()
        .filter(|l| {
            l.contains("has been blocked")
                || l.contains("External command run")
                || l.contains("is already blocked")
        })
        .collect();
    d.check(
        acted.is_empty(),
        format!("unexpected action lines for {ip}: {acted:?}"),
    );
    d.check(
        can_connect(
            &host.ns,
            defender.addr(v6),
            open_port,
            Duration::from_secs(2),
        ),
        format!("{ip} cannot connect to the open port {open_port}"),
    );
}
