//! Acceptance tests for issue 8 item 3 (the classic `-tcp`/`-udp` modes as PortSentry
//! 1.2 runs them) and issue 7 item 1 (handshake trap ports: verified evidence): the
//! daemon binds real sockets in a defender namespace, and real nmap, nc and sockets in
//! attacker namespaces connect to them.
//!
//! What a user would check: nmap sees the trap ports open, the alert has 1.2's
//! `Connect from host:` wording, the attacker is banned (kernel set, KILL_* lines,
//! history and blocked files, an open service no longer reachable), nc receives
//! PORT_BANNER, a port another program holds is skipped with a warning, and a UDP
//! datagram gets a banner only with `[listen] udp_banner = true`.
//!
//! Every test builds its own lab (namespaces, 198.18.0.0/15 addresses, no default
//! route) and its own daemon.

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use common::checks::{self, BlockExpect, QUIET, REACT, alert_prefix, nmap};
use common::kernel;
use common::lab::Host;
use common::{Conf, Daemon, Netns, OPEN, TcpServer, UdpServer, can_connect};

/// The classic TCP mode's trap ports in these tests: a range (1.2 had none) and a
/// single port.
const TCP_RANGE: &str = "2000-2009,31337";
/// Inside TCP_RANGE, held by another program in the defender.
const TCP_TAKEN: u16 = 2005;
const UDP_RANGE: &str = "5000-5004,31335";
const UDP_TAKEN: u16 = 5003;
const BANNER: &str = "** pst go away **";

fn nft(conf: Conf) -> Conf {
    conf.toml("[firewall]\nbackend = \"nftables\"")
}

/// The ports nmap's normal output reports in `state` ("2000/tcp open  cisco-sccp").
fn nmap_ports(out: &str, proto: &str, state: &str) -> Vec<u16> {
    out.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (port, st) = (words.next()?, words.next()?);
            let port = port.strip_suffix(&format!("/{proto}"))?.parse().ok()?;
            (st == state).then_some(port)
        })
        .collect()
}

/// What `nc` prints for a TCP connection to `addr:port` (it sends nothing; stdin is
/// empty). Bounded by nc's own `-w 3` and the command's time limit.
fn nc_tcp(from: &Host, addr: IpAddr, port: u16) -> String {
    let (a, p) = (addr.to_string(), port.to_string());
    from.ns
        .exec(&["nc", "-w", "3", &a, &p], Duration::from_secs(10))
        .stdout
}

/// Sends one datagram from `from` to `addr:port` with `nc -u`, and returns what came
/// back within 2 s (nothing: an empty string).
fn nc_udp(from: &Host, addr: IpAddr, port: u16) -> String {
    let script = format!("printf 'probe\\n' | nc -u -w 2 {addr} {port}");
    from.ns
        .exec(&["sh", "-c", &script], Duration::from_secs(10))
        .stdout
}

/// The reply to one datagram sent from a socket of ours, within `wait`.
fn udp_reply(ns: &Netns, addr: IpAddr, port: u16, wait: Duration) -> Option<Vec<u8>> {
    ns.run_in(move || {
        let s = UdpSocket::bind("0.0.0.0:0").ok()?;
        s.set_read_timeout(Some(wait)).ok()?;
        s.send_to(b"probe", SocketAddr::new(addr, port)).ok()?;
        let mut buf = [0u8; 256];
        let (n, _) = s.recv_from(&mut buf).ok()?;
        Some(buf[..n].to_vec())
    })
}

fn start(def: &Host, conf: &Conf, modes: &[&str]) -> Daemon {
    Daemon::ready(&def.ns, conf, modes)
}

/// The nftables ban of `ip`: the kernel line and the element in the set of our table
/// (`portsentry`; a UDP-only daemon has its own, `portsentry_udp`).
fn check_kernel_ban_in(d: &Daemon, def: &Host, table: &str, ip: IpAddr) {
    let line = format!("attackalert: Host {ip} has been banned in the kernel");
    d.check(d.wait_for_line(&line, REACT), format!("no line {line:?}"));
    let set = kernel::ban_set(ip.is_ipv6());
    let list = || {
        def.ns
            .exec(
                &["nft", "list", "set", "inet", table, set],
                Duration::from_secs(10),
            )
            .stdout
    };
    d.check(
        common::wait_until(REACT, Duration::from_millis(100), || {
            list().contains(&ip.to_string())
        }),
        format!("{ip} not in inet {table} {set}:\n{}", list()),
    );
}

fn check_kernel_ban(d: &Daemon, def: &Host, ip: IpAddr) {
    check_kernel_ban_in(d, def, kernel::TABLE, ip);
}

/// The table of a UDP-only daemon.
const UDP_TABLE: &str = "portsentry_udp";

/// Issue 8: `-tcp` with a port range in a 1.2 config, on nftables. nc receives
/// PORT_BANNER; the connect is alerted with 1.2's wording and banned (kernel and
/// KILL_*); an ignored host's nmap -sT sees every trap port open; another attacker's
/// nmap -sT sees trap ports open and is banned too; the port another program holds is
/// skipped with a warning.
#[test]
fn issue_8_classic_tcp_listens_alerts_connect_bans_and_sends_the_banner_nft() {
    let Some(lab) = common::lab_or_skip(
        "issue_8_classic_tcp_listens_alerts_connect_bans_and_sends_the_banner_nft",
        common::SCAN_TOOLS,
        &["attacker", "scanner", "admin", "six"],
    ) else {
        return;
    };
    let def = &lab.defender;
    let (atk, scanner, admin) = (lab.peer("attacker"), lab.peer("scanner"), lab.peer("admin"));
    let _taken = TcpServer::start(&def.ns, TCP_TAKEN);
    let conf = nft(Conf::new())
        .set("TCP_PORTS", TCP_RANGE)
        .set("PORT_BANNER", BANNER)
        .ignore(&admin.v4.to_string());
    let mut d = start(def, &conf, &["-tcp"]);

    // Start-up: 1.2's lines, the port in use skipped, no traps in the kernel.
    for port in [2000, 2009, 31337] {
        let line = format!("adminalert: Going into listen mode on TCP port: {port}");
        d.check(d.has_line(&line), format!("no line {line:?}"));
    }
    let taken = format!(
        "adminalert: ERROR: could not bind TCP socket: {TCP_TAKEN}. Attempting to continue (port {TCP_TAKEN} in use by another program: not watched)"
    );
    d.check(d.has_line(&taken), format!("no line {taken:?}"));
    d.check(
        !d.has_line("ports trapped in the kernel") && !d.has_line("runs as stealth"),
        "-tcp ran as a stealth mode",
    );
    d.check(
        kernel::table_exists(&def.ns),
        "no nftables table for the bans",
    );

    // An ignored host sees every trap port open (and is not banned), and gets no
    // banner, as in 1.2.
    let got = nc_tcp(admin, def.addr(false), 2000);
    d.check(got.is_empty(), format!("an ignored host got {got:?}"));
    let out = nmap(admin, &["-sT", "-p", "2000-2009,31337"], def.addr(false));
    let open = nmap_ports(&out.stdout, "tcp", "open");
    let want: Vec<u16> = (2000..=2009).chain([31337]).collect();
    d.check(
        open == want,
        format!("nmap -sT from an ignored host saw open {open:?}, want {want:?}:\n{out}"),
    );
    let ignored = format!(
        "attackalert: Ignored host: {0}/{0} sent TCP Connect to TCP port: ",
        admin.v4
    );
    d.check(
        d.wait_for_line(&ignored, REACT),
        format!("no line {ignored:?}"),
    );
    checks::assert_not_blocked(&d, &conf, def, admin, false, OPEN);

    // nc gets the banner; its connect is alerted as 1.2 did and banned.
    d.check(
        can_connect(&atk.ns, def.addr(false), OPEN, Duration::from_secs(2)),
        "before the connect the attacker must reach the open service",
    );
    let got = nc_tcp(atk, def.addr(false), 2001);
    d.check(
        got == BANNER,
        format!("nc received {got:?}, want {BANNER:?}"),
    );
    let ip = atk.addr(false);
    let exp = BlockExpect {
        kind: "Connect",
        proto: "TCP",
        mode: "tcp",
        ports: &[2001],
    };
    checks::assert_blocked(&d, &conf, def, atk, false, OPEN, &exp);
    check_kernel_ban(&d, def, ip);
    let connect = format!("attackalert: Connect from host: {ip}/{ip} to TCP port: 2001 (verified)");
    d.check(d.has_line(&connect), format!("no line {connect:?}"));
    let full = kernel::ban_line_as(ip, "1h", 1, "verified");
    d.check(d.wait_for_line(&full, REACT), format!("no line {full:?}"));
    d.check(
        !d.has_line(&alert_prefix("TCP SYN/Normal scan", ip, "TCP")),
        "a connect was logged as a SYN scan",
    );

    // IPv6 on the same sockets (dual-stack).
    let six = lab.peer("six");
    let ip6 = six.addr(true);
    let got = nc_tcp(six, def.addr(true), 2003);
    d.check(got == BANNER, format!("nc over IPv6 received {got:?}"));
    let line = format!("attackalert: Connect from host: {ip6}/{ip6} to TCP port: 2003");
    d.check(d.wait_for_line(&line, REACT), format!("no line {line:?}"));
    check_kernel_ban(&d, def, ip6);

    // A full connect scan: nmap sees trap ports open before the ban lands, then
    // nothing; the scanner is banned.
    let sip = scanner.addr(false);
    let out = nmap(
        scanner,
        &["-sT", "-p", "2000-2004,2006-2009"],
        def.addr(false),
    );
    let open = nmap_ports(&out.stdout, "tcp", "open");
    d.check(
        !open.is_empty() && open.iter().all(|p| (2000..=2009).contains(p)),
        format!("nmap -sT saw no trap port open (or others): {open:?}\n{out}"),
    );
    let prefix = alert_prefix("Connect", sip, "TCP");
    d.check(
        d.wait_for_line(&prefix, REACT),
        format!("no line {prefix:?}"),
    );
    check_kernel_ban(&d, def, sip);
    d.check(
        !can_connect(&scanner.ns, def.addr(false), OPEN, Duration::from_secs(2)),
        "the scanner can still reach the open service",
    );
    d.stop();
}

/// Issue 8: `-tcp` on a host without nftables (packet path off: only the KILL_*
/// commands block, as 1.2 did): the same connect alert and 1.2's responses.
#[test]
fn issue_8_classic_tcp_without_nftables_blocks_through_kill_commands() {
    let Some(lab) = common::lab_or_skip(
        "issue_8_classic_tcp_without_nftables_blocks_through_kill_commands",
        common::SCAN_TOOLS,
        &["attacker"],
    ) else {
        return;
    };
    let (def, atk) = (&lab.defender, lab.peer("attacker"));
    let conf = Conf::new()
        .packet_socket_only()
        .set("TCP_PORTS", TCP_RANGE)
        .set("PORT_BANNER", BANNER);
    let mut d = start(def, &conf, &["-tcp"]);
    d.check(!kernel::table_exists(&def.ns), "backend none made a table");
    let got = nc_tcp(atk, def.addr(false), 31337);
    d.check(
        got == BANNER,
        format!("nc received {got:?}, want {BANNER:?}"),
    );
    let exp = BlockExpect {
        kind: "Connect",
        proto: "TCP",
        mode: "tcp",
        ports: &[31337],
    };
    checks::assert_blocked(&d, &conf, def, atk, false, OPEN, &exp);
    d.stop();
}

/// Issue 8: `-udp`: a datagram is alerted with 1.2's line and banned, and no banner
/// goes back; the port another program holds is skipped (and its program keeps its
/// datagrams).
#[test]
fn issue_8_classic_udp_alerts_a_datagram_and_sends_no_banner_by_default_nft() {
    let Some(lab) = common::lab_or_skip(
        "issue_8_classic_udp_alerts_a_datagram_and_sends_no_banner_by_default_nft",
        common::SCAN_TOOLS,
        &["attacker", "client"],
    ) else {
        return;
    };
    let def = &lab.defender;
    let (atk, client) = (lab.peer("attacker"), lab.peer("client"));
    let taken = UdpServer::start(&def.ns, UDP_TAKEN);
    let conf = nft(Conf::new())
        .set("UDP_PORTS", UDP_RANGE)
        .set("PORT_BANNER", BANNER);
    let mut d = start(def, &conf, &["-udp"]);
    d.check(
        d.has_line("adminalert: Going into listen mode on UDP port: 5000"),
        "no listen line for UDP port 5000",
    );
    d.check(
        d.has_line(&format!(
            "could not bind UDP socket: {UDP_TAKEN}. Attempting to continue (port {UDP_TAKEN} in use by another program: not watched)"
        )),
        "no warning for the UDP port in use",
    );
    d.check(
        d.has_line("PORT_BANNER is not sent in reply to UDP datagrams"),
        "no notice that the UDP banner is off",
    );
    // The other program's port is still its own: its client gets its answer.
    d.check(
        common::net::udp_roundtrip(&client.ns, def.addr(false), UDP_TAKEN, REACT),
        "the UDP service on the port in use no longer answers",
    );
    d.check(taken.received() >= 1, "the UDP service got nothing");

    let ip = atk.addr(false);
    let reply = nc_udp(atk, def.addr(false), 5001);
    d.check(
        reply.is_empty(),
        format!("a banner came back without opt-in: {reply:?}"),
    );
    let line = format!("attackalert: Connect from host: {ip}/{ip} to UDP port: 5001 (unverified)");
    d.check(d.wait_for_line(&line, REACT), format!("no line {line:?}"));
    check_kernel_ban_in(&d, def, UDP_TABLE, ip);
    d.check(
        !can_connect(&atk.ns, def.addr(false), OPEN, Duration::from_secs(2)),
        "the attacker can still reach the open service",
    );
    let blocked = Conf::read(&conf.blocked_path("udp"));
    d.check(
        blocked.contains(&format!("Host: {ip}/{ip} Port: 5001 UDP Blocked")),
        format!("blocked file .udp lacks the 1.2 line:\n{blocked}"),
    );
    // The client was never alerted on.
    d.check(
        checks::attack_lines_for(&d, client.addr(false)).is_empty(),
        "the UDP service's client was alerted on",
    );
    d.stop();
}

/// Issue 8: with `[listen] udp_banner = true` the datagram's sender gets PORT_BANNER,
/// as 1.2 sent it.
#[test]
fn issue_8_classic_udp_sends_the_banner_when_opted_in_nft() {
    let Some(lab) = common::lab_or_skip(
        "issue_8_classic_udp_sends_the_banner_when_opted_in_nft",
        common::SCAN_TOOLS,
        &["attacker"],
    ) else {
        return;
    };
    let (def, atk) = (&lab.defender, lab.peer("attacker"));
    let conf = nft(Conf::new())
        .set("UDP_PORTS", UDP_RANGE)
        .set("PORT_BANNER", BANNER)
        .toml("[listen]\nudp_banner = true");
    let mut d = start(def, &conf, &["-udp"]);
    let reply = udp_reply(&atk.ns, def.addr(false), 31335, REACT);
    d.check(
        reply.as_deref() == Some(BANNER.as_bytes()),
        format!(
            "reply {:?}, want the banner",
            reply.map(|r| String::from_utf8_lossy(&r).into_owned())
        ),
    );
    let ip = atk.addr(false);
    let line = format!("attackalert: Connect from host: {ip}/{ip} to UDP port: 31335");
    d.check(d.wait_for_line(&line, REACT), format!("no line {line:?}"));
    check_kernel_ban_in(&d, def, UDP_TABLE, ip);
    d.stop();
}

/// Issue 7 item 1: a handshake trap port beside `-atcp` with the kernel fast path.
/// nmap -sS finds it open (its SYN passed our traps, since our socket owns the port)
/// and, with no handshake, is not banned: the trade-off of a port that answers. nmap
/// -sT completes the handshake: a Connect alert (verified evidence) and a ban.
#[test]
fn issue_7_handshake_trap_port_gives_a_verified_ban_in_atcp_nft() {
    let Some(lab) = common::lab_or_skip(
        "issue_7_handshake_trap_port_gives_a_verified_ban_in_atcp_nft",
        common::SCAN_TOOLS,
        &["attacker", "prober"],
    ) else {
        return;
    };
    let def = &lab.defender;
    let (atk, prober) = (lab.peer("attacker"), lab.peer("prober"));
    let conf = nft(Conf::bans_only()).toml("[listen]\nhandshake_ports = [23]");
    let mut d = start(def, &conf, &["-atcp"]);
    d.check(
        d.has_line("adminalert: Handshake trap on TCP port: 23"),
        "no handshake trap line",
    );
    d.check(
        d.has_line("ports trapped in the kernel (ban on the first probe)"),
        "not on the fast path",
    );

    let pip = prober.addr(false);
    let out = nmap(prober, &["-sS", "-p", "23"], def.addr(false));
    d.check(
        nmap_ports(&out.stdout, "tcp", "open") == [23],
        format!("nmap -sS did not see the handshake port open:\n{out}"),
    );
    std::thread::sleep(QUIET);
    d.check(
        checks::attack_lines_for(&d, pip).is_empty() && kernel::ban_of(&def.ns, pip).is_none(),
        "a SYN scan of the handshake port alone was alerted or banned",
    );
    // The same prober's SYN to another trap port is still banned on the first packet.
    let out = nmap(prober, &["-sS", "-p", "22"], def.addr(false));
    d.check(
        nmap_ports(&out.stdout, "tcp", "open").is_empty(),
        format!("a trapped port looked open:\n{out}"),
    );
    check_kernel_ban(&d, def, pip);

    let ip = atk.addr(false);
    d.check(
        can_connect(&atk.ns, def.addr(false), OPEN, Duration::from_secs(2)),
        "before the connect the attacker must reach the open service",
    );
    let out = nmap(atk, &["-sT", "-p", "23"], def.addr(false));
    d.check(
        nmap_ports(&out.stdout, "tcp", "open") == [23],
        format!("nmap -sT did not complete the handshake:\n{out}"),
    );
    let line = format!("attackalert: Connect from host: {ip}/{ip} to TCP port: 23 (verified)");
    d.check(d.wait_for_line(&line, REACT), format!("no line {line:?}"));
    check_kernel_ban(&d, def, ip);
    // Verified evidence: the full policy ([bans]: 1h), not the provisional one the
    // prober's SYN got ([bans.unverified]: 10m).
    let full = kernel::ban_line_as(ip, "1h", 1, "verified");
    d.check(d.wait_for_line(&full, REACT), format!("no line {full:?}"));
    let provisional = kernel::ban_line_as(pip, "10m", 1, "unverified");
    d.check(d.has_line(&provisional), format!("no line {provisional:?}"));
    d.check(
        !can_connect(&atk.ns, def.addr(false), OPEN, Duration::from_secs(2)),
        "the attacker can still reach the open service",
    );
    let hist = Conf::read(&conf.history_path());
    d.check(
        hist.contains(&format!("[verified] Host: {ip}/{ip} Port: 23 TCP Blocked")),
        format!("history lacks the verified 1.2 line for the connect:\n{hist}"),
    );
    d.stop();
}

/// The open-file limits of the daemon's process (`Max open files` of /proc/PID/limits):
/// (soft, hard).
fn open_files_limit(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default()
        .to_string();
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
    )
}

/// Issue 8: no 64-port cap. 3000 trap ports with a soft open-file limit of 1024 and a
/// higher hard limit (as systemd gives services: 1024 and 524288): the daemon raises
/// the soft limit, binds them all, and an ignored host's nmap -sT sees all 3000 open.
#[test]
fn issue_8_classic_tcp_binds_thousands_of_ports_and_raises_the_open_file_limit() {
    let Some(lab) = common::lab_or_skip(
        "issue_8_classic_tcp_binds_thousands_of_ports_and_raises_the_open_file_limit",
        &["nmap", "prlimit"],
        &["admin"],
    ) else {
        return;
    };
    let (def, admin) = (&lab.defender, lab.peer("admin"));
    let conf = nft(Conf::bans_only())
        .set("TCP_PORTS", "20000-22999")
        .ignore(&admin.v4.to_string());
    let mut d = Daemon::start_wrapped(
        &def.ns,
        &["prlimit", "--nofile=1024:8192"],
        &conf,
        &["-tcp"],
    );
    d.wait_ready();
    d.check(
        d.has_line("adminalert: Going into listen mode on 3000 TCP ports: 20000-22999"),
        "no summary listen line",
    );
    let (soft, _) = open_files_limit(d.pid());
    d.check(soft >= 3000, format!("open-file limit {soft} not raised"));
    d.check(
        d.lines_with("open-file limit").is_empty(),
        "a limit warning although the hard limit allows every socket",
    );
    let out = nmap(admin, &["-sT", "-p", "20000-22999"], def.addr(false));
    let open = nmap_ports(&out.stdout, "tcp", "open");
    d.check(
        open.len() == 3000,
        format!(
            "nmap -sT did not see the 3000 ports open ({} listed):\n{}",
            open.len(),
            out.stdout
        ),
    );
    d.check(
        d.has_line("sent TCP Connect to TCP port: "),
        "no Ignored line for the scan",
    );
    d.stop();
}

/// Issue 8: a hard open-file limit the daemon may not raise (no CAP_SYS_RESOURCE): one
/// warning names the first port not watched; the ports that fit are watched.
#[test]
fn issue_8_classic_tcp_open_file_hard_limit_too_low_warns_once() {
    let Some(lab) = common::lab_or_skip(
        "issue_8_classic_tcp_open_file_hard_limit_too_low_warns_once",
        &["prlimit", "setpriv", "nc"],
        &["attacker"],
    ) else {
        return;
    };
    let (def, atk) = (&lab.defender, lab.peer("attacker"));
    let conf = nft(Conf::bans_only())
        .set("TCP_PORTS", "20000-20999")
        .set("PORT_BANNER", BANNER);
    let mut d = Daemon::start_wrapped(
        &def.ns,
        &[
            "prlimit",
            "--nofile=400:400",
            "setpriv",
            "--inh-caps=-sys_resource",
            "--bounding-set=-sys_resource",
        ],
        &conf,
        &["-tcp"],
    );
    d.wait_ready();
    let warnings = d.lines_with("adminalert: WARNING: the open-file limit (RLIMIT_NOFILE, hard limit 400) is too low for 1000 listening sockets: TCP ports from ");
    d.check(
        warnings.len() == 1,
        format!("want one limit warning, got {warnings:?}"),
    );
    let first: u16 = warnings[0]
        .split("TCP ports from ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    d.check(
        (20001..20999).contains(&first),
        format!("first unwatched port {first} not inside the range"),
    );
    let (_, hard) = open_files_limit(d.pid());
    d.check(hard == 400, format!("hard limit changed to {hard}"));
    // The last port is not bound: refused at once, no alert.
    d.check(
        nc_tcp(atk, def.addr(false), 20999).is_empty(),
        "a port beyond the limit answered",
    );
    // The first port is watched.
    let got = nc_tcp(atk, def.addr(false), 20000);
    d.check(got == BANNER, format!("nc received {got:?}"));
    let ip = atk.addr(false);
    let line = format!("attackalert: Connect from host: {ip}/{ip} to TCP port: 20000");
    d.check(d.wait_for_line(&line, REACT), format!("no line {line:?}"));
    d.stop();
}

/// Issue 8: a SIGHUP reload re-executes the daemon, which binds the classic ports
/// again (over its own TIME_WAIT connections) and keeps answering.
#[test]
fn issue_8_classic_tcp_listens_again_after_a_reload() {
    let Some(lab) = common::lab_or_skip(
        "issue_8_classic_tcp_listens_again_after_a_reload",
        &["nc"],
        &["first", "second"],
    ) else {
        return;
    };
    let def = &lab.defender;
    let (first, second) = (lab.peer("first"), lab.peer("second"));
    let conf = nft(Conf::bans_only())
        .set("TCP_PORTS", TCP_RANGE)
        .set("PORT_BANNER", BANNER);
    let mut d = start(def, &conf, &["-tcp"]);
    let got = nc_tcp(first, def.addr(false), 2000);
    d.check(got == BANNER, format!("nc received {got:?}"));
    check_kernel_ban(&d, def, first.addr(false));
    d.signal(libc::SIGHUP);
    let active = "adminalert: PortSentry is now active and listening.";
    d.check(
        d.wait_for(Duration::from_secs(20), |lines| {
            lines.iter().filter(|l| l.contains(active)).count() >= 2
        }),
        "no second start after SIGHUP",
    );
    d.check(
        d.lines_with("could not bind TCP socket").is_empty(),
        "a port could not be bound again after the reload",
    );
    let got = nc_tcp(second, def.addr(false), 2000);
    d.check(
        got == BANNER,
        format!("after the reload nc received {got:?}"),
    );
    let ip = second.addr(false);
    let line = format!("attackalert: Connect from host: {ip}/{ip} to TCP port: 2000");
    d.check(d.wait_for_line(&line, REACT), format!("no line {line:?}"));
    d.stop();
}

/// Issue 7 item 1 on a host without nftables: the packet socket watches -atcp, the
/// handshake port's SYN is skipped there (our socket owns the port), and the connect
/// is alerted and blocked through the KILL_* commands.
#[test]
fn issue_7_handshake_trap_port_without_nftables_blocks_through_kill_commands() {
    let Some(lab) = common::lab_or_skip(
        "issue_7_handshake_trap_port_without_nftables_blocks_through_kill_commands",
        common::SCAN_TOOLS,
        &["attacker"],
    ) else {
        return;
    };
    let (def, atk) = (&lab.defender, lab.peer("attacker"));
    let conf = Conf::new()
        .packet_socket_only()
        .toml("[listen]\nhandshake_ports = [23]");
    let mut d = start(def, &conf, &["-atcp"]);
    d.check(
        d.has_line("adminalert: Advanced mode will monitor first 1024 ports")
            && d.has_line("adminalert: Handshake trap on TCP port: 23"),
        "not -atcp on the packet socket with a handshake trap",
    );
    let out = nmap(atk, &["-sT", "-p", "23"], def.addr(false));
    d.check(
        nmap_ports(&out.stdout, "tcp", "open") == [23],
        format!("nmap -sT did not see the handshake port open:\n{out}"),
    );
    let exp = BlockExpect {
        kind: "Connect",
        proto: "TCP",
        mode: "atcp",
        ports: &[23],
    };
    checks::assert_blocked(&d, &conf, def, atk, false, OPEN, &exp);
    let ip = atk.addr(false);
    d.check(
        !d.has_line(&alert_prefix("TCP SYN/Normal scan", ip, "TCP")),
        "the handshake port's SYN was alerted by the packet socket too",
    );
    d.stop();
}

/// Issue 8: Debian's default, `TCP_MODE="tcp"` and `UDP_MODE="udp"`, as its init script
/// starts them: `portsentry -tcp` and `portsentry -udp` side by side with one config.
/// Both listen; each alerts and bans what it sees.
#[test]
fn issue_8_debian_default_tcp_and_udp_daemons_side_by_side() {
    let Some(lab) = common::lab_or_skip(
        "issue_8_debian_default_tcp_and_udp_daemons_side_by_side",
        &["nc", "nft"],
        &["tcpclient", "udpclient"],
    ) else {
        return;
    };
    let def = &lab.defender;
    let (t, u) = (lab.peer("tcpclient"), lab.peer("udpclient"));
    let conf = nft(Conf::bans_only())
        .set("TCP_PORTS", TCP_RANGE)
        .set("UDP_PORTS", UDP_RANGE)
        .set("PORT_BANNER", BANNER);
    let tcp = start(def, &conf, &["-tcp"]);
    let mut udp = start(def, &conf, &["-udp"]);
    let alive = udp.is_running();
    udp.check(alive, "the -udp daemon did not stay up beside -tcp");

    let got = nc_tcp(t, def.addr(false), 2004);
    tcp.check(got == BANNER, format!("nc received {got:?}"));
    let ip = t.addr(false);
    let line = format!("attackalert: Connect from host: {ip}/{ip} to TCP port: 2004");
    tcp.check(tcp.wait_for_line(&line, REACT), format!("no line {line:?}"));
    check_kernel_ban(&tcp, def, ip);

    let ip = u.addr(false);
    let reply = nc_udp(u, def.addr(false), 5000);
    udp.check(
        reply.is_empty(),
        format!("UDP banner without opt-in: {reply:?}"),
    );
    let line = format!("attackalert: Connect from host: {ip}/{ip} to UDP port: 5000");
    udp.check(udp.wait_for_line(&line, REACT), format!("no line {line:?}"));
    check_kernel_ban_in(&udp, def, UDP_TABLE, ip);
    udp.check(
        !tcp.has_line(&line),
        "the -tcp daemon reported the UDP datagram",
    );
}

/// Issue 8: PortSentry 2.x's `--connect` is the classic modes (as `-tcp -udp`): its
/// ports really listen, and a connect gets 2.x's `Scan from:` line with type Connect
/// and a ban.
#[test]
fn issue_8_2x_connect_mode_listens_and_bans_a_connect() {
    let Some(lab) = common::lab_or_skip(
        "issue_8_2x_connect_mode_listens_and_bans_a_connect",
        &["nc", "nft"],
        &["attacker"],
    ) else {
        return;
    };
    let (def, atk) = (&lab.defender, lab.peer("attacker"));
    let conf = Conf::bans_only()
        .set("TCP_PORTS", TCP_RANGE)
        .set("UDP_PORTS", UDP_RANGE);
    let conf_path = conf.write();
    let mut d = Daemon::start_flags(&def.ns, &conf, &conf_path, &["--connect", "-l", "stdout"]);
    d.wait_ready();
    // The TCP side connects (nothing is sent back without PORT_BANNER).
    d.check(
        can_connect(&atk.ns, def.addr(false), 31337, Duration::from_secs(2)),
        "--connect does not listen on TCP_PORTS",
    );
    let ip = atk.addr(false);
    let line = format!("Scan from: [{ip}] ({ip}) protocol: [TCP] port: [31337] type: [Connect]");
    d.check(
        d.wait_for_line(&line, REACT),
        format!("no 2.x line {line:?}"),
    );
    check_kernel_ban(&d, def, ip);
    d.stop();
}
