//! Acceptance tests for "Detect and block a port scan end to end", policy side:
//! benign traffic is left alone, ignored sources are logged but not blocked,
//! SCAN_TRIGGER delays the reaction, a failing KILL_ROUTE is reported as a
//! failure, and the history file survives restarts.
//!
//! Every scenario runs once per probe source (test names end in `_nft` / `_packet`):
//! the nftables traps (NFLOG, ban in the kernel on the first probe unless
//! SCAN_TRIGGER asks the daemon to count) and the packet-socket sensor of hosts
//! without nftables (`[firewall] backend = "none"`: only the KILL_* commands block).

mod common;

use std::net::{IpAddr, UdpSocket};
use std::sync::mpsc;
use std::time::Duration;

use common::checks::{self, BlockExpect, QUIET, REACT, alert_prefix, hping_syn, nmap};
use common::{
    Conf, Daemon, HistoryLine, Host, Lab, Netns, OPEN, Path, TcpServer, UdpServer, both_paths,
    can_connect, net,
};

const SYN: &str = "TCP SYN/Normal scan";

/// Benign traffic: 200 connections to an open service on a watched port, and the
/// defender's own outgoing TCP and UDP from low source ports with the replies
/// coming back, raise no alert and no ban. A scan at the end proves the daemon was
/// watching all along.
fn benign_traffic_is_not_flagged(test: &str, path: Path) {
    let peers = ["client", "server", "attacker"];
    let Some(lab) = common::lab_or_skip(test, common::SCAN_TOOLS, &peers) else {
        return;
    };
    let def = &lab.defender;
    let (client, server, atk) = (lab.peer("client"), lab.peer("server"), lab.peer("attacker"));
    // Port 80 is below ADVANCED_PORTS_TCP, but it has a listener: not a trap.
    let web = TcpServer::start(&def.ns, 80);
    let _peer_web = TcpServer::start(&server.ns, 80);
    let _peer_dns = UdpServer::start(&server.ns, 53);
    // A UDP service on a watched port, running before the daemon starts.
    let dns = UdpServer::start(&def.ns, 53);
    let conf = path.conf(Conf::new());
    let d = path.start(def, &conf);

    let t = Duration::from_secs(2);
    let n4 = net::connect_many(&client.ns, def.addr(false), 80, 150, t);
    let n6 = net::connect_many(&client.ns, def.addr(true), 80, 50, t);
    d.check(
        n4 == 150 && n6 == 50,
        format!("only {n4}/150 v4 and {n6}/50 v6 connections to port 80 worked"),
    );
    d.check(web.accepted() >= 200, "server did not see 200 connections");

    // Services on watched ports that start after the daemon (live tracking of
    // ports in use): TCP 443 and UDP 69, used once they have been up a moment.
    let late_tcp = TcpServer::start(&def.ns, 443);
    let late_udp = UdpServer::start(&def.ns, 69);
    std::thread::sleep(Duration::from_millis(1500));
    for v6 in [false, true] {
        let n = net::connect_many(&client.ns, def.addr(v6), 443, 5, t);
        d.check(n == 5, format!("{n}/5 connections to the late TCP service"));
        for port in [53, 69] {
            for _ in 0..5 {
                let ok = net::udp_roundtrip(&client.ns, def.addr(v6), port, t);
                d.check(ok, format!("no reply from the defender's UDP port {port}"));
            }
        }
    }
    d.check(
        dns.received() >= 10 && late_udp.received() >= 10 && late_tcp.accepted() >= 10,
        "the defender's services did not see the client's traffic",
    );

    // The defender's own outgoing connections from low source ports: TCP with nc
    // -p, UDP from a socket bound long before (an NTP-style client on 123) and from
    // one bound just before the query (a fresh low port), the peer answering each.
    for (v6, tport, long_port, fresh_port) in
        [(false, "600", 123u16, 700u16), (true, "601", 124, 701)]
    {
        let dst = server.addr(v6).to_string();
        let out = def.ns.exec(
            &["nc", "-n", "-w", "3", "-p", tport, &dst, "80"],
            Duration::from_secs(10),
        );
        d.check(
            out.stdout.contains("pst-ok"),
            format!("defender's nc -p {tport} {dst} 80 got no banner:\n{out}"),
        );
        for (lport, settle) in [
            (long_port, Duration::from_millis(1500)),
            (fresh_port, Duration::ZERO),
        ] {
            let linger = Duration::from_millis(1000);
            let ok = udp_from_port(&def.ns, lport, server.addr(v6), 53, settle, linger);
            d.check(
                ok,
                format!("defender's UDP from port {lport} to {dst}:53 got no reply"),
            );
        }
    }

    std::thread::sleep(QUIET);
    let alerts = d.lines_with("attackalert:");
    d.check(
        alerts.is_empty(),
        format!("benign traffic raised alerts: {alerts:?}"),
    );
    for h in [client, server] {
        for v6 in [false, true] {
            checks::assert_not_blocked(&d, &conf, def, h, v6, OPEN);
            path.check_not_banned(&d, def, h.addr(v6));
        }
    }

    // Positive control: the daemon is watching.
    nmap(atk, &["-sS", "-p", "23"], def.addr(false));
    let prefix = alert_prefix(SYN, atk.addr(false), "TCP");
    d.check(
        d.wait_for_line(&prefix, REACT),
        "control scan was not detected",
    );
    path.check_banned(&d, def, atk.addr(false));
}

both_paths!(
    benign_traffic_is_not_flagged =>
    benign_traffic_is_not_flagged_nft,
    benign_traffic_is_not_flagged_packet
);

/// Binds local UDP port `lport` in `ns`, waits `settle`, sends one datagram to
/// `dst:port`, waits for the echo, and keeps the socket open `linger` afterwards
/// (as `nc -u -w 1` does).
fn udp_from_port(
    ns: &common::Netns,
    lport: u16,
    dst: IpAddr,
    port: u16,
    settle: Duration,
    linger: Duration,
) -> bool {
    ns.run_in(move || {
        let bind = if dst.is_ipv6() { "::" } else { "0.0.0.0" };
        let Ok(s) = std::net::UdpSocket::bind((bind, lport)) else {
            return false;
        };
        std::thread::sleep(settle);
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.send_to(b"query", (dst, port)).is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        let ok = s.recv_from(&mut buf).is_ok();
        std::thread::sleep(linger);
        ok
    })
}

/// Stricter than 1.2 (whose advanced UDP mode checks the port with bind() when the
/// packet is processed, and so flags this too): the defender sends from a low UDP
/// port and closes the socket as soon as the answer is read. The answer is a reply
/// to our own outgoing datagram, not a probe, even though no socket holds the port
/// any more when the packet-socket path looks it up (the nftables path checks the
/// socket in the kernel as the packet arrives, while it is still open). A datagram
/// from another source port of the same peer is still a probe.
fn benign_udp_reply_to_closed_socket_not_flagged(test: &str, path: Path) {
    let Some(lab) = common::lab_or_skip(test, common::SCAN_TOOLS, &["server"]) else {
        return;
    };
    let (def, server) = (&lab.defender, lab.peer("server"));
    let _peer_dns = UdpServer::start(&server.ns, 53);
    let conf = path.conf(Conf::new());
    let d = path.start(def, &conf);
    for (v6, lport) in [(false, 700u16), (true, 701u16)] {
        let ok = udp_from_port(
            &def.ns,
            lport,
            server.addr(v6),
            53,
            Duration::ZERO,
            Duration::ZERO,
        );
        d.check(ok, format!("no UDP reply to port {lport}"));
    }
    std::thread::sleep(QUIET);
    let alerts = d.lines_with("attackalert:");
    d.check(
        alerts.is_empty(),
        format!("replies to our own datagrams raised alerts: {alerts:?}"),
    );
    for v6 in [false, true] {
        checks::assert_not_blocked(&d, &conf, def, server, v6, OPEN);
        path.check_not_banned(&d, def, server.addr(v6));
    }
    unsolicited_datagram_is_a_probe(&d, def, server, 700);
}

both_paths!(
    benign_udp_reply_to_closed_socket_not_flagged =>
    benign_udp_reply_to_closed_socket_not_flagged_nft,
    benign_udp_reply_to_closed_socket_not_flagged_packet
);

/// A reply that arrives after the defender's client gave up: the defender sends one
/// query from a low UDP port and closes the socket at once; the peer answers only
/// then (a DNS answer after the client's timeout). It is a reply to our own datagram
/// within seconds, not a probe. A datagram from another source port of the same
/// peer is still a probe.
fn benign_udp_late_reply_after_close_not_flagged(test: &str, path: Path) {
    let Some(lab) = common::lab_or_skip(test, common::SCAN_TOOLS, &["server"]) else {
        return;
    };
    let (def, server) = (&lab.defender, lab.peer("server"));
    let conf = path.conf(Conf::new());
    let d = path.start(def, &conf);
    for (v6, lport) in [(false, 702u16), (true, 703u16)] {
        let answered = late_reply(&def.ns, lport, &server.ns, server.addr(v6), 53);
        d.check(
            answered,
            format!("the peer did not answer port {lport} late"),
        );
    }
    std::thread::sleep(QUIET);
    let alerts = d.lines_with("attackalert:");
    d.check(
        alerts.is_empty(),
        format!("late replies to our own datagrams raised alerts: {alerts:?}"),
    );
    for v6 in [false, true] {
        checks::assert_not_blocked(&d, &conf, def, server, v6, OPEN);
        path.check_not_banned(&d, def, server.addr(v6));
    }
    unsolicited_datagram_is_a_probe(&d, def, server, 702);
}

both_paths!(
    benign_udp_late_reply_after_close_not_flagged =>
    benign_udp_late_reply_after_close_not_flagged_nft,
    benign_udp_late_reply_after_close_not_flagged_packet
);

/// The defender (in `def_ns`) sends one datagram from `lport` to `dst:port` and closes
/// the socket at once; only then does the peer (in `peer_ns`, listening on `port`)
/// answer it. True if the peer got the query and sent its answer.
fn late_reply(def_ns: &Netns, lport: u16, peer_ns: &Netns, dst: IpAddr, port: u16) -> bool {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let peer = peer_ns.thread(move || {
        let Ok(s) = UdpSocket::bind(("::", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = ready_tx.send(());
        let mut buf = [0u8; 64];
        let Ok((_, from)) = s.recv_from(&mut buf) else {
            return false;
        };
        // Bounded: the test sends `go` right after the defender closed its socket.
        go_rx.recv_timeout(Duration::from_secs(10)).is_ok()
            && s.send_to(b"late answer", from).is_ok()
    });
    if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
        return false;
    }
    let sent = def_ns.run_in(move || {
        let bind = if dst.is_ipv6() { "::" } else { "0.0.0.0" };
        UdpSocket::bind((bind, lport)).is_ok_and(|s| s.send_to(b"query", (dst, port)).is_ok())
        // The socket is closed here, before the peer answers.
    });
    let _ = go_tx.send(());
    let answered = peer.join().unwrap_or(false);
    sent && answered
}

/// Positive control for the reply tests: `peer` sends one datagram from a port it
/// never talked to us from (54) to the defender's `lport` (v4); that is a probe.
fn unsolicited_datagram_is_a_probe(d: &Daemon, def: &Host, peer: &Host, lport: u16) {
    let dst = def.addr(false);
    let sent = peer.ns.run_in(move || {
        UdpSocket::bind(("0.0.0.0", 54)).is_ok_and(|s| s.send_to(b"probe", (dst, lport)).is_ok())
    });
    d.check(sent, "could not send the control datagram");
    let alert = format!(
        "{}{lport}",
        alert_prefix("UDP scan", peer.addr(false), "UDP")
    );
    // The peer answered our own flow and used our service before: it is a known peer
    // (issue 7), so its probe is reported as possibly forged and not banned.
    let as_peer = format!(
        "Possibly forged UDP scan in the name of known peer: {0}/{0} to UDP port: {lport}",
        peer.addr(false)
    );
    d.check(
        d.wait_for(REACT, |lines| {
            lines
                .iter()
                .any(|l| l.contains(&alert) || l.contains(&as_peer))
        }),
        format!("control datagram from port 54 was not reported ({alert:?} or {as_peer:?})"),
    );
}

/// Sources in the ignore file, by single address and by CIDR, v4 and v6: the
/// "Ignored host" line is logged (once per source), nothing is blocked. A source
/// that is not ignored is blocked, in the same daemon.
fn ignored_sources_are_logged_not_blocked(test: &str, path: Path) {
    if !common::scan_test_or_skip(test) {
        return;
    }
    let lab = Lab::builder()
        .peer_at("single", 5)
        .peer_at("cidr", 130)
        .peer_at("attacker", 6)
        .open_service()
        .build();
    let def = &lab.defender;
    let (single, cidr, atk) = (lab.peer("single"), lab.peer("cidr"), lab.peer("attacker"));
    let conf = path
        .conf(Conf::new())
        .ignore(&single.v4.to_string())
        .ignore(&format!("{}/25", lab.v4(128)))
        .ignore(&single.v6.to_string())
        .ignore(&format!("{}/121", lab.v6(128)));
    let d = path.start(def, &conf);

    for h in [single, cidr] {
        for v6 in [false, true] {
            nmap(h, &["-sS", "-p", "21,22,23"], def.addr(v6));
        }
    }
    for h in [single, cidr] {
        for v6 in [false, true] {
            let ip = h.addr(v6);
            let needle = format!("attackalert: Ignored host: {ip}/{ip} sent {SYN} to TCP port: ");
            d.check(
                d.wait_for_line(&needle, REACT),
                format!("no line containing {needle:?}"),
            );
            for l in d.lines_with(&needle) {
                d.check(
                    l.ends_with(" (in ignore file, not blocked)"),
                    format!("Ignored line has a different ending: {l}"),
                );
            }
        }
    }
    std::thread::sleep(QUIET);
    for h in [single, cidr] {
        for v6 in [false, true] {
            let ip = h.addr(v6);
            let needle = format!("attackalert: Ignored host: {ip}/{ip} sent ");
            let n = d.lines_with(&needle).len();
            d.check(
                n == 1,
                format!("{n} Ignored lines for {ip} (3 ports scanned), expected 1 (damped)"),
            );
            let alert = alert_prefix(SYN, ip, "TCP");
            d.check(
                !d.has_line(&alert),
                format!("ignored {ip} got a scan alert"),
            );
            checks::assert_not_blocked(&d, &conf, def, h, v6, OPEN);
            path.check_not_banned(&d, def, ip);
        }
    }
    // Positive control: a source not in the ignore file is blocked.
    nmap(atk, &["-sS", "-p", "21,22,23"], def.addr(false));
    checks::assert_blocked(
        &d,
        &conf,
        def,
        atk,
        false,
        OPEN,
        &BlockExpect {
            kind: SYN,
            proto: "TCP",
            mode: "atcp",
            ports: &[21, 22, 23],
        },
    );
    path.check_banned(&d, def, atk.addr(false));
}

both_paths!(
    ignored_sources_are_logged_not_blocked =>
    ignored_sources_are_logged_not_blocked_nft,
    ignored_sources_are_logged_not_blocked_packet
);

/// SCAN_TRIGGER=2 with hping3 SYNs (IPv4): hits 1 and 2 are silent, hit 3 alerts
/// and blocks. On nftables the traps then only log, and the daemon bans at hit 3.
fn scan_trigger_two_v4_hping3(test: &str, path: Path) {
    if !common::root_or_skip(test, &["hping3", "iptables", "nmap"]) {
        return;
    }
    scan_trigger_two(false, path);
}

/// SCAN_TRIGGER=2 over IPv6, one nmap SYN probe per port.
fn scan_trigger_two_v6_nmap(test: &str, path: Path) {
    if !common::scan_test_or_skip(test) {
        return;
    }
    scan_trigger_two(true, path);
}

both_paths!(
    scan_trigger_two_v4_hping3 =>
    scan_trigger_two_v4_hping3_nft,
    scan_trigger_two_v4_hping3_packet
);
both_paths!(
    scan_trigger_two_v6_nmap =>
    scan_trigger_two_v6_nmap_nft,
    scan_trigger_two_v6_nmap_packet
);

fn scan_trigger_two(v6: bool, path: Path) {
    let lab = Lab::builder().peer("attacker").open_service().build();
    let (def, atk) = (&lab.defender, lab.peer("attacker"));
    let conf = path.conf(Conf::new()).set("SCAN_TRIGGER", "2");
    let d = path.start(def, &conf);
    if path == Path::Nft {
        d.check(
            d.has_line("ports trapped in the kernel (log only; the daemon decides)"),
            "with SCAN_TRIGGER=2 the traps must only log",
        );
    }
    let ip = atk.addr(v6);
    let dst = def.addr(v6);
    let hit = |port: u16| {
        if v6 {
            nmap(atk, &["-sS", "-p", &port.to_string()], dst);
        } else {
            let out = hping_syn(atk, dst, port);
            assert!(!out.timed_out, "hping3 timed out:\n{out}");
        }
    };
    for port in [21, 22] {
        hit(port);
    }
    std::thread::sleep(QUIET);
    let lines = checks::attack_lines_for(&d, ip);
    d.check(
        lines.is_empty(),
        format!("after 2 hits with SCAN_TRIGGER=2, expected silence, got: {lines:?}"),
    );
    d.check(
        !checks::has_drop_rule(def, ip),
        "blocked after 2 hits with SCAN_TRIGGER=2",
    );
    d.check(
        // (Not the service: a client that got its data is a known peer.)
        common::can_reach(&atk.ns, dst, Duration::from_secs(2)),
        "attacker lost access after 2 hits",
    );
    path.check_not_banned(&d, def, ip);
    hit(23);
    checks::assert_blocked(
        &d,
        &conf,
        def,
        atk,
        v6,
        OPEN,
        &BlockExpect {
            kind: SYN,
            proto: "TCP",
            mode: "atcp",
            ports: &[23],
        },
    );
    path.check_banned(&d, def, ip);
}

/// A KILL_ROUTE that fails is reported as a failure and never as "blocked"; the
/// history file keeps its earlier lines across restarts. On nftables the kernel ban
/// holds regardless (and the host is recorded as blocked); on the packet socket
/// nothing blocked the host, so it is not recorded and can still connect.
fn failing_kill_route_and_history_kept_across_restart(test: &str, path: Path) {
    let Some(lab) = common::lab_or_skip(test, common::SCAN_TOOLS, &["first", "second"]) else {
        return;
    };
    let (def, first, second) = (&lab.defender, lab.peer("first"), lab.peer("second"));

    let old =
        "942286729 - 11/10/1999 20:18:49 Host: 198.19.255.77/198.19.255.77 Port: 111 TCP Blocked";
    let mut conf = path.conf(Conf::new()).unset("KILL_HOSTS_DENY");
    let marker = conf.path("fail.out");
    std::fs::write(conf.history_path(), format!("{old}\n")).expect("seed history");
    let fail_cmd = format!(
        "/bin/sh {} $TARGET$ {}",
        common::script("fail.sh"),
        marker.display()
    );
    conf = conf.set("KILL_ROUTE", &fail_cmd);

    let ip = first.addr(false);
    {
        let mut d = path.start(def, &conf);
        nmap(first, &["-sS", "-p", "21,22,23"], def.addr(false));
        d.check(
            d.wait_for_line(&alert_prefix(SYN, ip, "TCP"), REACT),
            "no alert for the scan",
        );
        let could_not = format!("attackalert: ERROR: Could not block host {ip}/{ip}!!");
        d.check(
            d.wait_for_line(&could_not, REACT),
            format!("no line containing {could_not:?}"),
        );
        d.check(
            d.lines_with("attackalert: ERROR:")
                .iter()
                .any(|l| l.contains("failed")),
            "no 'attackalert: ERROR: ... failed' line",
        );
        let rec = Conf::read(&marker);
        d.check(
            rec.lines().any(|l| l == ip.to_string()),
            format!("the failing KILL_ROUTE was not run with the target; it recorded {rec:?}"),
        );
        let blocked: Vec<String> = d
            .lines_with("has been blocked")
            .into_iter()
            .filter(|l| checks::mentions(l, &ip.to_string()))
            .collect();
        d.check(
            blocked.is_empty(),
            format!("failure reported as blocked: {blocked:?}"),
        );
        d.check(
            !checks::has_drop_rule(def, ip),
            "a DROP rule appeared though KILL_ROUTE failed",
        );
        let recorded = || {
            HistoryLine::parse_all(&Conf::read(&conf.history_path()))
                .iter()
                .any(|h| h.ip == ip.to_string())
        };
        match path {
            Path::Nft => {
                path.check_banned(&d, def, ip);
                d.check(
                    !can_connect(&first.ns, def.addr(false), OPEN, Duration::from_secs(2)),
                    "the kernel ban does not hold after the failed KILL_ROUTE",
                );
                d.check(
                    common::wait_until(REACT, Duration::from_millis(100), recorded),
                    "no history line for the source banned in the kernel",
                );
            }
            Path::Packet => {
                path.check_not_banned(&d, def, ip);
                d.check(
                    can_connect(&first.ns, def.addr(false), OPEN, Duration::from_secs(2)),
                    "the source lost access though nothing blocked it",
                );
                d.check(
                    !recorded(),
                    "a source that was not blocked is in the history",
                );
            }
        }
        d.stop();
        d.check(
            d.has_line("adminalert: PortSentry is shutting down"),
            "no shutdown line after SIGTERM",
        );
        let hist = Conf::read(&conf.history_path());
        d.check(
            hist.lines().next() == Some(old),
            format!("history lost its first line after the first run:\n{hist}"),
        );
    }

    // Second run, with a working KILL_ROUTE: a new source is blocked and appended.
    conf = conf.set(
        "KILL_ROUTE",
        &format!("/bin/sh {} $TARGET$", common::script("block.sh")),
    );
    let d = path.start(def, &conf);
    let ip2 = second.addr(false);
    nmap(second, &["-sS", "-p", "21,22,23"], def.addr(false));
    let route = format!("attackalert: Host {ip2} has been blocked via dropped route");
    d.check(d.wait_for_line(&route, REACT), format!("no {route:?} line"));
    d.check(
        common::wait_until(REACT, Duration::from_millis(100), || {
            HistoryLine::parse_all(&Conf::read(&conf.history_path()))
                .iter()
                .any(|h| h.ip == ip2.to_string())
        }),
        "no history line for the second source",
    );
    let hist = Conf::read(&conf.history_path());
    d.check(
        hist.lines().next() == Some(old),
        format!("history was truncated across the restart:\n{hist}"),
    );
    d.check(
        checks::has_drop_rule(def, ip2),
        "no DROP rule for the second source",
    );
    d.check(
        !can_connect(&second.ns, def.addr(false), OPEN, Duration::from_secs(2)),
        "second source can still connect",
    );
    path.check_banned(&d, def, ip2);
}

both_paths!(
    failing_kill_route_and_history_kept_across_restart =>
    failing_kill_route_and_history_kept_across_restart_nft,
    failing_kill_route_and_history_kept_across_restart_packet
);
