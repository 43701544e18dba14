//! Self-tests of the system-test harness (namespaces, lab, services); they do not
//! need the daemon.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{Lab, Netns, TcpServer, UdpServer, can_connect, net};

#[test]
fn harness_netns_is_removed_on_drop() {
    if !common::root_or_skip("harness_netns_is_removed_on_drop", &[]) {
        return;
    }
    let (name, pid, mut stray) = {
        let ns = Netns::new("tmp");
        let mut p = ns.spawn(&["sleep", "30"]);
        assert!(p.is_running());
        // A second, unguarded process in the namespace: Drop must kill it too.
        let stray = ns
            .command(&["sleep", "30"])
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("spawn sleep");
        assert!(
            common::wait_until(Duration::from_secs(5), Duration::from_millis(20), || ns
                .pids()
                .len()
                >= 2),
            "expected 2 processes in {}: {:?}",
            ns.name(),
            ns.pids()
        );
        (ns.name().to_string(), p.pid(), stray)
        // p dropped, then ns dropped
    };
    let listed = common::run_argv(&["ip", "netns", "list"], Duration::from_secs(5)).stdout;
    assert!(
        !listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&name)),
        "{name} still listed:\n{listed}"
    );
    assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .map(|c| !c.contains("sleep"))
                .unwrap_or(true),
        "process {pid} survived"
    );
    // The namespace guard killed the stray process; reap it (returns at once).
    let status = stray.wait().expect("wait for the stray process");
    assert!(!status.success(), "stray process was not killed: {status}");
}

#[test]
fn harness_lab_ping_v4_v6_and_isolation() {
    if !common::root_or_skip("harness_lab_ping_v4_v6_and_isolation", &["nmap"]) {
        return;
    }
    let names;
    {
        let lab = Lab::builder().peer("a").peer_at("b", 130).build();
        let a = lab.peer("a");
        let b = lab.peer("b");
        assert_eq!(b.host_id, 130);
        // Addresses inside the test ranges.
        for h in [&lab.defender, a, b] {
            let o = h.v4.octets();
            assert!(o[0] == 198 && (o[1] == 18 || o[1] == 19), "{}", h.v4);
            let s = h.v6.segments();
            assert!(s[..4] == [0xfd00, 0x5e17, 0, 0], "{}", h.v6);
        }
        let t = Duration::from_secs(10);
        for (from, to) in [
            (&lab.defender, a),
            (a, &lab.defender),
            (a, b),
            (b, &lab.defender),
        ] {
            for v6 in [false, true] {
                let dst = to.addr(v6).to_string();
                let fam = if v6 { "-6" } else { "-4" };
                let out = icmp_echo(&from.ns, fam, &dst, t);
                assert!(
                    out.success(),
                    "ping {dst} from {} failed:\n{out}",
                    from.role
                );
            }
        }
        // No default route anywhere, and only the lab's own subnets.
        for h in [&lab.defender, a, b] {
            for fam in ["-4", "-6"] {
                let r =
                    h.ns.exec_ok(&["ip", fam, "route", "show", "default"], t)
                        .stdout;
                assert!(r.trim().is_empty(), "default route in {}: {r}", h.ns.name());
            }
        }
        // The root namespace's addresses are not reachable from the lab.
        let out = a.ns.exec(&["ip", "-4", "route", "get", "1.1.1.1"], t);
        assert!(!out.success(), "lab has a route out:\n{out}");
        names = [&lab.defender, a, b]
            .iter()
            .map(|h| h.ns.name().to_string())
            .chain([lab.switch().name().to_string()])
            .collect::<Vec<_>>();
    }
    let listed = common::run_argv(&["ip", "netns", "list"], Duration::from_secs(5)).stdout;
    for n in &names {
        assert!(!listed.contains(n.as_str()), "{n} leaked:\n{listed}");
    }
}

/// One ICMP echo: `ping` (iputils) when installed, else nmap's ICMP echo ping.
fn icmp_echo(ns: &Netns, fam: &str, dst: &str, t: Duration) -> common::Output {
    if common::tool_exists("ping") {
        return ns.exec(&["ping", fam, "-c", "1", "-W", "3", "-n", dst], t);
    }
    let mut argv = vec!["nmap", "-sn", "-PE", "-n", "--max-retries", "2"];
    if fam == "-6" {
        argv.push("-6");
    }
    argv.push(dst);
    let mut out = ns.exec(&argv, t);
    if !out.stdout.contains("Host is up") {
        out.status = None; // make it a failure
    }
    out
}

#[test]
fn harness_services_and_connect() {
    if !common::root_or_skip("harness_services_and_connect", &[]) {
        return;
    }
    let lab = Lab::builder().peer("client").build();
    let c = lab.peer("client");
    let srv = TcpServer::start(&lab.defender.ns, 8080);
    let udp = UdpServer::start(&lab.defender.ns, 5353);
    let t = Duration::from_secs(2);
    for v6 in [false, true] {
        let dst = lab.defender.addr(v6);
        assert!(can_connect(&c.ns, dst, 8080, t), "connect {dst}:8080");
        assert!(!can_connect(&c.ns, dst, 8081, t), "closed port {dst}:8081");
        assert!(net::udp_roundtrip(&c.ns, dst, 5353, t), "udp {dst}:5353");
    }
    assert_eq!(
        net::connect_many(&c.ns, lab.defender.addr(false), 8080, 20, t),
        20
    );
    assert!(srv.accepted() >= 22);
    assert!(udp.received() >= 2);
    // The server lives in the defender's namespace only.
    assert!(!can_connect(
        &lab.defender.ns,
        IpAddr::V4(c.v4),
        8080,
        Duration::from_millis(500)
    ));
}

#[test]
fn harness_nmap_sees_open_nc_service() {
    if !common::root_or_skip("harness_nmap_sees_open_nc_service", &["nmap", "nc"]) {
        return;
    }
    let lab = Lab::builder().peer("attacker").build();
    let atk = lab.peer("attacker");
    let _nc = lab.defender.ns.spawn(&["nc", "-lk", "-p", "8080"]);
    let _nc6 = lab.defender.ns.spawn(&["nc", "-6", "-lk", "-p", "8081"]);
    let dst = lab.defender.v4.to_string();
    // Bounded wait for the listener to be there.
    assert!(common::wait_until(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || can_connect(
            &atk.ns,
            lab.defender.addr(false),
            8080,
            Duration::from_secs(1)
        )
    ));
    let mut argv = vec!["nmap"];
    argv.extend_from_slice(common::NMAP_FAST);
    argv.extend_from_slice(&["-sS", "-p", "22,8080", &dst]);
    let out = atk.ns.exec(&argv, Duration::from_secs(90));
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("8080/tcp open"), "{out}");
    assert!(out.stdout.contains("22/tcp   closed"), "{out}");

    let dst6 = lab.defender.v6.to_string();
    let mut argv = vec!["nmap", "-6"];
    argv.extend_from_slice(common::NMAP_FAST);
    argv.extend_from_slice(&["-sS", "-p", "8081", &dst6]);
    let out = atk.ns.exec(&argv, Duration::from_secs(90));
    assert!(out.stdout.contains("8081/tcp open"), "{out}");
}

#[test]
fn harness_block_script_drops_in_namespace_only() {
    if !common::root_or_skip(
        "harness_block_script_drops_in_namespace_only",
        &["iptables", "ip6tables"],
    ) {
        return;
    }
    let lab = Lab::builder().peer("attacker").build();
    let atk = lab.peer("attacker");
    let _srv = TcpServer::start(&lab.defender.ns, 8080);
    let t = Duration::from_secs(2);
    for v6 in [false, true] {
        let a = atk.addr(v6).to_string();
        assert!(can_connect(&atk.ns, lab.defender.addr(v6), 8080, t));
        lab.defender
            .ns
            .exec_ok(&["/bin/sh", &common::script("block.sh"), &a], t * 5);
        let rules = lab.defender.ns.iptables_s(v6, "INPUT");
        let plen = if v6 { 128 } else { 32 };
        assert!(
            rules.contains(&format!("-A INPUT -s {a}/{plen} -j DROP")),
            "{rules}"
        );
        assert!(!can_connect(&atk.ns, lab.defender.addr(v6), 8080, t));
    }
}

#[test]
fn harness_history_line_parser() {
    let l = "942286729 - 11/10/1999 20:18:49 Host: 192.168.2.12/192.168.2.12 Port: 111 TCP Blocked";
    let h = common::HistoryLine::parse(l).expect("parses");
    assert_eq!(h.epoch, 942286729);
    assert_eq!(h.ip, "192.168.2.12");
    assert_eq!(h.port, 111);
    assert_eq!(h.proto, "TCP");
    assert_eq!(h.evidence, None);
    assert!(
        common::HistoryLine::parse("942286729 - 11/10/1999 Host: x/y Port: 1 TCP Blocked")
            .is_none()
    );
    // Ours: the evidence class before `Host:`.
    let l = "942286729 - 11/10/1999 20:18:49 [unverified] Host: 198.18.0.2/198.18.0.2 Port: 111 TCP Blocked";
    let h = common::HistoryLine::parse(l).expect("parses");
    assert_eq!(
        (h.ip.as_str(), h.evidence.as_deref()),
        ("198.18.0.2", Some("unverified"))
    );
    assert!(
        common::HistoryLine::parse(
            "942286729 - 11/10/1999 20:18:49 [proven] Host: x/y Port: 1 TCP Blocked"
        )
        .is_none()
    );
    assert!(common::daemon::line_format_ok(
        "2026-11-21T23:59:01.123+00:00 portsentry[1234]: adminalert: PortSentry is now active and listening."
    ));
    assert!(!common::daemon::line_format_ok("portsentry[1]: x"));
}
