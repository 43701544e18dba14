//! Acceptance tests for "Detect and block a port scan end to end": real nmap scans
//! from an attacker namespace against the daemon in a defender namespace, and the
//! effects a user would check (log lines, iptables rule, hosts.deny, history and
//! blocked files, the attacker's connection failing).
//!
//! Every case runs once per probe source (test names end in `_nft` / `_packet`):
//! the nftables traps (NFLOG, ban in the kernel on the first probe) and the
//! packet-socket sensor of hosts without nftables (`[firewall] backend = "none"`:
//! AF_PACKET, BPF, classifier, only the KILL_* commands block).
//!
//! Every test builds its own lab (namespaces, 198.18.0.0/15 and fd00:5e17::/64
//! addresses, no default route) and its own daemon, so they run in parallel.

mod common;

use std::time::Duration;

use common::checks::{self, BlockExpect, QUIET, REACT, alert_prefix, nmap};
use common::daemon::{line_format_ok, ports_after};
use common::kernel;
use common::{Conf, OPEN, Path, both_paths};

/// Watched TCP ports scanned (all below 1024, none excluded or listening). Few, so
/// that each scan is short: on the nftables path every probe after the first is
/// dropped and nmap waits out its retransmission for each of them.
const TCP_WATCHED: &[u16] = &[21, 22, 23, 111, 143];
const TCP_SCAN_PORTS: &str = "21,22,23,111,143,8080";
/// A connect scan (`-sT`) leaves out the open service: a completed connection to it
/// gets its banner (data from us), which makes the scanner a known peer whose single
/// packets are never banned (issue 7), so whether the scan is banned would depend on
/// which port nmap tried first (it failed so under load in CI).
const TCP_CONNECT_SCAN_PORTS: &str = "21,22,23,111,143";
/// Watched UDP ports scanned (none excluded or listening).
const UDP_WATCHED: &[u16] = &[7, 53, 69, 161];
const UDP_SCAN_PORTS: &str = "7,53,69,161";

/// One nmap scan type and what the daemon must report for it.
struct Case {
    test: &'static str,
    path: Path,
    flag: &'static str,
    v6: bool,
    kind: &'static str,
    /// Also configure KILL_RUN_CMD and check it ran.
    run_cmd: bool,
}

fn scan_is_detected_and_blocked(case: Case) {
    let Some(lab) = common::lab_or_skip(case.test, common::SCAN_TOOLS, &["attacker"]) else {
        return;
    };
    let udp = case.flag == "-sU";
    let (def, atk) = (&lab.defender, lab.peer("attacker"));

    let mut conf = case.path.conf(Conf::new());
    let marker = conf.path("run_cmd.out");
    let record = common::script("record.sh");
    if case.run_cmd {
        conf = conf.set(
            "KILL_RUN_CMD",
            &format!("/bin/sh {record} {} $TARGET$ $PORT$", marker.display()),
        );
    }
    let mut d = case.path.start(def, &conf);
    let ready = d.lines_with("adminalert: PortSentry is now active and listening.");
    d.check(
        line_format_ok(&ready[0]),
        format!(
            "line not in the 'TIMESTAMP portsentry[PID]: msg' shape: {:?}",
            ready[0]
        ),
    );

    d.check(
        common::can_reach(&atk.ns, def.addr(case.v6), Duration::from_secs(2)),
        "before the scan the attacker must reach the defender",
    );

    let ports = match (udp, case.flag) {
        (true, _) => UDP_SCAN_PORTS,
        (false, "-sT") => TCP_CONNECT_SCAN_PORTS,
        (false, _) => TCP_SCAN_PORTS,
    };
    let out = nmap(atk, &[case.flag, "-p", ports], def.addr(case.v6));
    let (proto, mode, watched) = if udp {
        ("UDP", "audp", UDP_WATCHED)
    } else {
        ("TCP", "atcp", TCP_WATCHED)
    };
    let exp = BlockExpect {
        kind: case.kind,
        proto,
        mode,
        ports: watched,
    };
    let ip = atk.addr(case.v6);
    if !d.wait_for_line(&alert_prefix(case.kind, ip, proto), REACT) {
        eprintln!("nmap output:\n{out}");
    }
    checks::assert_blocked(&d, &conf, def, atk, case.v6, OPEN, &exp);
    case.path.check_banned(&d, def, ip);

    if case.run_cmd {
        let prefix = alert_prefix(case.kind, ip, proto);
        let port = ports_after(&d.lines(), &prefix)[0];
        let expected_cmd = format!("/bin/sh {record} {} {ip} {port}", marker.display());
        let line = format!(
            "attackalert: External command run for host: {ip} using command: \"{expected_cmd}\""
        );
        d.check(
            d.wait_for_line(&line, REACT),
            format!("no line containing {line:?}"),
        );
        let rec = Conf::read(&marker);
        d.check(
            rec.lines().next() == Some(format!("{ip} {port}").as_str()),
            format!("KILL_RUN_CMD did not run as expected; it recorded {rec:?}"),
        );
    }

    // The scan went on after the block: later hits are damped, not re-acted on.
    let acted = d.lines_with(&format!(
        "attackalert: Host {ip} has been blocked via dropped route"
    ));
    d.check(
        acted.len() == 1,
        format!("KILL_ROUTE reported {} times for one source", acted.len()),
    );

    d.stop();
    d.check(
        d.has_line("adminalert: PortSentry is shutting down"),
        "no shutdown line after SIGTERM",
    );
}

/// One scan case (nmap `flag`, over IPv6 or not, the `kind` the daemon must report,
/// KILL_RUN_CMD or not) as a body for [`both_paths!`].
fn scan(
    flag: &'static str,
    v6: bool,
    kind: &'static str,
    run_cmd: bool,
) -> impl Fn(&'static str, Path) {
    move |test, path| {
        scan_is_detected_and_blocked(Case {
            test,
            path,
            flag,
            v6,
            kind,
            run_cmd,
        })
    }
}

both_paths!(
    scan("-sS", false, "TCP SYN/Normal scan", true) =>
    detect_block_nmap_ss_v4_nft,
    detect_block_nmap_ss_v4_packet
);
both_paths!(
    scan("-sT", false, "TCP SYN/Normal scan", false) =>
    detect_block_nmap_st_v4_nft,
    detect_block_nmap_st_v4_packet
);
both_paths!(
    scan("-sF", false, "TCP FIN scan", false) =>
    detect_block_nmap_sf_v4_nft,
    detect_block_nmap_sf_v4_packet
);
both_paths!(
    scan("-sN", false, "TCP NULL scan", false) =>
    detect_block_nmap_sn_v4_nft,
    detect_block_nmap_sn_v4_packet
);
both_paths!(
    scan("-sX", false, "TCP XMAS scan", false) =>
    detect_block_nmap_sx_v4_nft,
    detect_block_nmap_sx_v4_packet
);
both_paths!(
    scan("-sA", false, "TCP ACK/Window scan", false) =>
    detect_block_nmap_sa_v4_nft,
    detect_block_nmap_sa_v4_packet
);
both_paths!(
    scan("-sW", false, "TCP ACK/Window scan", false) =>
    detect_block_nmap_sw_v4_nft,
    detect_block_nmap_sw_v4_packet
);
both_paths!(
    scan("-sM", false, "TCP Maimon (FIN/ACK) scan", false) =>
    detect_block_nmap_sm_v4_nft,
    detect_block_nmap_sm_v4_packet
);
both_paths!(
    scan("-sU", false, "UDP scan", false) =>
    detect_block_nmap_su_v4_nft,
    detect_block_nmap_su_v4_packet
);
both_paths!(
    scan("-sS", true, "TCP SYN/Normal scan", true) =>
    detect_block_nmap_ss_v6_nft,
    detect_block_nmap_ss_v6_packet
);
both_paths!(
    scan("-sU", true, "UDP scan", false) =>
    detect_block_nmap_su_v6_nft,
    detect_block_nmap_su_v6_packet
);

/// Stealth mode with a port list: a scan of the neighbouring ports raises
/// nothing; the listed ports alert (and block, into `portsentry.blocked.<mode>`).
///
/// In 1.2 a source is written to the blocked file on its first alert even with
/// BLOCK_TCP=0, so later hits are "already blocked"; each listed port is therefore
/// hit by its own attacker.
struct StealthCase {
    test: &'static str,
    path: Path,
    mode: &'static str,
    nmap_flag: &'static str,
    kind: &'static str,
    proto: &'static str,
    key: &'static str,
    /// (listed port, nmap range around it)
    listed: [(u16, &'static str); 2],
    /// The ranges without the listed ports.
    others: &'static str,
}

fn stealth_alerts_only_listed_ports(c: StealthCase) {
    let Some(lab) = common::lab_or_skip(c.test, common::SCAN_TOOLS, &["a", "b"]) else {
        return;
    };
    let (def, atk) = (&lab.defender, [lab.peer("a"), lab.peer("b")]);
    let list = format!("{},{}", c.listed[0].0, c.listed[1].0);
    let conf = c.path.conf(Conf::new()).set(c.key, &list);
    let flag = format!("-{}", c.mode);
    let d = lab.daemon(&conf, &[&flag]);
    if c.path == Path::Nft {
        c.path.check_active(&d, def);
    } else {
        // Stealth modes announce their port list instead of the advanced range.
        let listening = format!(
            "adminalert: Going into stealth listen mode on {} port: {}",
            c.proto, c.listed[0].0
        );
        d.check(
            d.has_line(&listening) && !kernel::table_exists(&def.ns),
            format!("not on the packet-socket path (no {listening:?} line, or a table)"),
        );
    }

    // Only ports that are not listed: nothing at all.
    nmap(atk[0], &[c.nmap_flag, "-p", c.others], def.addr(false));
    std::thread::sleep(QUIET);
    let lines = d.lines_with("attackalert:");
    d.check(
        lines.is_empty(),
        format!("scan of unlisted ports {} raised: {lines:?}", c.others),
    );
    d.check(
        !checks::has_drop_rule(def, atk[0].addr(false)),
        "DROP rule after a scan of unlisted ports",
    );
    c.path.check_not_banned(&d, def, atk[0].addr(false));

    // Each listed port, from its own attacker, with its neighbours.
    for (a, (port, range)) in atk.iter().zip(c.listed) {
        nmap(a, &[c.nmap_flag, "-p", range], def.addr(false));
        let prefix = alert_prefix(c.kind, a.addr(false), c.proto);
        d.check(
            d.wait_for_line(&prefix, REACT),
            format!("no alert containing {prefix:?}"),
        );
        checks::assert_blocked(
            &d,
            &conf,
            def,
            a,
            false,
            OPEN,
            &BlockExpect {
                kind: c.kind,
                proto: c.proto,
                mode: c.mode,
                ports: &[port],
            },
        );
        c.path.check_banned(&d, def, a.addr(false));
    }
    let mut ports = ports_after(&d.lines(), &format!(" to {} port: ", c.proto));
    ports.sort_unstable();
    ports.dedup();
    let want = vec![c.listed[0].0, c.listed[1].0];
    d.check(
        ports == want,
        format!("alerted ports {ports:?}, expected only {want:?}"),
    );
}

fn stealth_tcp(test: &'static str, path: Path) {
    stealth_alerts_only_listed_ports(StealthCase {
        test,
        path,
        mode: "stcp",
        nmap_flag: "-sS",
        kind: "TCP SYN/Normal scan",
        proto: "TCP",
        key: "TCP_PORTS",
        listed: [(23, "20-26"), (666, "663-669")],
        others: "20-22,24-26,663-665,667-669",
    });
}

fn stealth_udp(test: &'static str, path: Path) {
    stealth_alerts_only_listed_ports(StealthCase {
        test,
        path,
        mode: "sudp",
        nmap_flag: "-sU",
        kind: "UDP scan",
        proto: "UDP",
        key: "UDP_PORTS",
        listed: [(69, "67-71"), (161, "159-163")],
        others: "67-68,70-71,159-160,162-163",
    });
}

both_paths!(
    stealth_tcp =>
    stealth_tcp_alerts_only_listed_ports_nft,
    stealth_tcp_alerts_only_listed_ports_packet
);
both_paths!(
    stealth_udp =>
    stealth_udp_alerts_only_listed_ports_nft,
    stealth_udp_alerts_only_listed_ports_packet
);
