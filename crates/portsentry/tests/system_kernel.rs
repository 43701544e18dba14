//! Acceptance tests for "Bans in the kernel on the first probe": the daemon's
//! nftables table (`inet portsentry`) in the defender's namespace bans a scanner on
//! its very first probe to a watched port, so nmap learns (almost) nothing; the ban is
//! an element with a kernel timeout that survives a stop and a `kill -9`, escalates
//! for repeat offenders, is never given to protected (decoy) sources, and
//! `portsentry flush --all` lifts it.
//!
//! Every test builds its own lab (namespaces joined by a bridge in its own
//! namespace, 198.18.0.0/15 and fd00:5e17::/64 addresses, no default route used for
//! routing) and its own daemon, so they run in parallel. The conf is the harness's
//! 1.2-style one (advanced TCP/UDP below 1024, SCAN_TRIGGER=0, BLOCK_TCP/UDP=1)
//! without KILL_ROUTE: the nftables ban is the only thing that can block a host here.

mod common;

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::checks::{QUIET, REACT, alert_prefix, attack_lines_for, hosts_deny_has, nmap};
use common::daemon::ports_after;
use common::kernel::{self, ban_line, ban_of, parse_nmap, wait_banned, wait_unbanned};
use common::net::connect_many;
use common::{Conf, Daemon, Host, Lab, Netns, TcpServer, can_connect, wait_until};

/// Open TCP service on a watched port (below ADVANCED_PORTS_TCP=1024).
const HTTP: u16 = 80;
/// Open TCP service above the watched range.
const ALT: u16 = 8080;
const SERVICES: [u16; 2] = [HTTP, ALT];
/// The harness conf's ADVANCED_PORTS_* and ADVANCED_EXCLUDE_*.
const ADVANCED_BELOW: u16 = 1024;
const TCP_EXCLUDED: [u16; 2] = [113, 139];
const UDP_EXCLUDED: [u16; 4] = [520, 138, 137, 67];
const MODES: &[&str] = &["-atcp", "-audp"];

fn kernel_test_or_skip(test: &str) -> bool {
    common::root_or_skip(test, &["nmap", "nft"])
}

/// A TCP port the daemon traps in the kernel (no service on it in these labs).
fn tcp_trapped(p: u16, services: &[u16]) -> bool {
    p != 0 && p < ADVANCED_BELOW && !TCP_EXCLUDED.contains(&p) && !services.contains(&p)
}

/// A UDP port the daemon traps in the kernel (the labs run no UDP service).
fn udp_trapped(p: u16) -> bool {
    p != 0 && p < ADVANCED_BELOW && !UDP_EXCLUDED.contains(&p)
}

/// How a TCP connection attempt ended.
#[derive(Debug, PartialEq, Eq)]
enum Connect {
    Ok,
    Refused,
    /// Timed out or another error (dropped by a ban).
    Failed(String),
}

fn connect(from: &Netns, addr: IpAddr, port: u16, timeout: Duration) -> Connect {
    from.run_in(
        move || match TcpStream::connect_timeout(&SocketAddr::new(addr, port), timeout) {
            Ok(_) => Connect::Ok,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Connect::Refused,
            Err(e) => Connect::Failed(e.to_string()),
        },
    )
}

/// A client in its own namespace that connects to the defender's services over and
/// over (reading the banner each time) until stopped. Bounded: at most 3000 rounds
/// and 150 s.
struct Benign {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<(u32, Vec<String>)>>,
}

impl Benign {
    fn start(ns: &Netns, target: IpAddr, ports: &'static [u16]) -> Benign {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = ns.thread(move || {
            let start = Instant::now();
            let (mut ok, mut failures) = (0u32, Vec::new());
            for _ in 0..3000 {
                if s.load(Ordering::SeqCst) || start.elapsed() > Duration::from_secs(150) {
                    break;
                }
                for &port in ports {
                    let t = Duration::from_secs(2);
                    match TcpStream::connect_timeout(&SocketAddr::new(target, port), t) {
                        Ok(mut c) => {
                            let _ = c.set_read_timeout(Some(t));
                            let mut buf = [0u8; 16];
                            match c.read(&mut buf) {
                                Ok(n) if n > 0 => ok += 1,
                                other => failures.push(format!(
                                    "port {port}: no banner ({other:?}) at {:.1}s",
                                    start.elapsed().as_secs_f64()
                                )),
                            }
                        }
                        Err(e) => failures.push(format!(
                            "port {port}: {e} at {:.1}s",
                            start.elapsed().as_secs_f64()
                        )),
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (ok, failures)
        });
        Benign {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the client; returns (successful connections, failures).
    fn finish(mut self) -> (u32, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .map(|h| h.join().expect("benign client thread"))
            .unwrap_or_default()
    }
}

impl Drop for Benign {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Asserts that `ip` is in the kernel ban set within REACT and returns the element.
fn assert_in_set(d: &Daemon, def: &Host, ip: IpAddr) -> kernel::Elem {
    let elem = wait_banned(&def.ns, ip, REACT);
    d.check(
        elem.is_some(),
        format!(
            "{ip} is not in the kernel set {}:\n{}",
            kernel::ban_set(ip.is_ipv6()),
            kernel::set_text(&def.ns, kernel::ban_set(ip.is_ipv6()))
        ),
    );
    elem.expect("checked")
}

fn assert_not_in_set(d: &Daemon, def: &Host, ip: IpAddr) {
    d.check(
        ban_of(&def.ns, ip).is_none(),
        format!(
            "{ip} is in the kernel set {}:\n{}",
            kernel::ban_set(ip.is_ipv6()),
            kernel::set_text(&def.ns, kernel::ban_set(ip.is_ipv6()))
        ),
    );
}

fn wait_line(d: &Daemon, line: &str) {
    d.check(
        d.wait_for_line(line, REACT),
        format!("no line containing {line:?}"),
    );
}

// ---------------------------------------------------------------------------------
// 1. nmap of the top ports learns nothing beyond what was answered before the first
//    trapped probe; the scanner is banned in the kernel; a benign client keeps
//    working throughout.
// ---------------------------------------------------------------------------------

struct ScanCase {
    test: &'static str,
    flag: &'static str,
    v6: bool,
    kind: &'static str,
}

/// Most ports nmap may see answered. The exact claim checked below is stronger:
/// every answered port was probed before the first probe to a trapped port (the
/// kernel bans on that probe, and drops all later ones). How many that are depends
/// on nmap's order: for TCP it moves the ~27 most popular ports (shuffled) to the
/// front, 16 of which are trapped here, so ≥ 10 untrapped ones before the first
/// trapped one has a chance of C(11,10)/C(27,10) ≈ 1e-6; for the 50 UDP top ports
/// (23 trapped, shuffled) it is C(27,10)/C(50,10) ≈ 8e-4, and each closed UDP port
/// also needs an ICMP port unreachable, of which the kernel sends a peer a burst of
/// about six, then one a second (icmp_ratelimit). Measured: 0-3 TCP, 0-5 UDP.
///
/// The prefix check assumes the defender sees the probes in nmap's sending order
/// (one sender, one veth path); it held in every run so far.
const ANSWERED_BOUND: usize = 10;

fn first_probe_bans(case: ScanCase) {
    if !kernel_test_or_skip(case.test) {
        return;
    }
    let udp = case.flag == "-sU";
    let lab = Lab::builder().peer("attacker").peer("benign").build();
    let def = &lab.defender;
    let atk = lab.peer("attacker");
    let ben = lab.peer("benign");
    let _http = TcpServer::start(&def.ns, HTTP);
    let _alt = TcpServer::start(&def.ns, ALT);
    let conf = kernel::kernel_conf();
    let mut d = Daemon::start(&def.ns, &conf, MODES);
    d.wait_ready();
    let target = def.addr(case.v6);
    let ip = atk.addr(case.v6);
    let ben_ip = ben.addr(case.v6);

    d.check(
        kernel::table_exists(&def.ns),
        format!("no table inet portsentry:\n{}", kernel::tables(&def.ns)),
    );
    for port in SERVICES {
        d.check(
            connect_many(&ben.ns, target, port, 3, Duration::from_secs(2)) == 3,
            format!("before the scan the benign client must reach port {port}"),
        );
        d.check(
            can_connect(&atk.ns, target, port, Duration::from_secs(2)),
            format!("before the scan the attacker must reach port {port}"),
        );
    }
    assert_not_in_set(&d, def, ip);

    let benign = Benign::start(&ben.ns, target, &SERVICES);
    let top = if udp { "50" } else { "200" };
    let started = Instant::now();
    let gnmap = conf.path("nmap.gnmap").display().to_string();
    let out = nmap(
        atk,
        &[
            case.flag,
            "--top-ports",
            top,
            // Without a floor nmap slows to ~10 probes/s (~40 s) once a few early
            // answers make it read the drops as congestion; a faster scan only
            // puts more probes in flight, which makes the check sharper.
            "--min-rate",
            "100",
            "--packet-trace",
            "-oG",
            &gnmap,
        ],
        target,
    );
    let scan_time = started.elapsed();
    let (benign_ok, benign_failures) = benign.finish();

    // The ban, in the kernel, and the alert of the right type.
    let proto = if udp { "UDP" } else { "TCP" };
    let trapped = |p: u16| {
        if udp {
            udp_trapped(p)
        } else {
            tcp_trapped(p, &SERVICES)
        }
    };
    let elem = assert_in_set(&d, def, ip);
    let prefix = alert_prefix(case.kind, ip, proto);
    wait_line(&d, &prefix);
    let lines = d.lines();
    let alert_ports = ports_after(&lines, &prefix);
    d.check(
        alert_ports.iter().all(|p| trapped(*p)),
        format!("alert ports {alert_ports:?} are not all trapped ports"),
    );
    let any_alert = format!(" from host: {ip}/{ip} to ");
    for l in lines.iter().filter(|l| l.contains(&any_alert)) {
        d.check(
            l.contains(&prefix),
            format!("alert of another type for {ip}: {l}"),
        );
    }
    wait_line(&d, &ban_line(ip, "10m", 1));
    d.check(
        elem.timeout == Some(600),
        format!("kernel element {elem:?}: timeout is not the provisional 10m"),
    );
    // The legacy KILL_HOSTS_DENY still runs after the kernel ban.
    d.check(
        wait_until(REACT, Duration::from_millis(100), || {
            hosts_deny_has(&conf, ip)
        }),
        format!("hosts.deny has no line for {ip}"),
    );

    // What nmap learned.
    let grepable = Conf::read(std::path::Path::new(&gnmap));
    let report = parse_nmap(&out.stdout, &grepable, target);
    let open = report.ports_in(&["open"]);
    let closed = report.ports_in(&["closed"]);
    let unfiltered = report.ports_in(&["unfiltered"]);
    let answered = report.ports_in(&["open", "closed", "unfiltered"]);
    let first = report.first_trapped(trapped);
    let before = report.sent_before_first(trapped);
    eprintln!(
        "{}: nmap {}{} --top-ports {top}: {} probes sent in {:.1}s; first trapped port {:?} was probe #{:?}; {} probes before it {:?}; nmap saw open {:?}, closed {:?}, unfiltered {:?}; ignored state {:?}; benign client: {benign_ok} connections ok, {} failed",
        case.test,
        if case.v6 { "-6 " } else { "" },
        case.flag,
        report.sent.len(),
        scan_time.as_secs_f64(),
        first.map(|i| report.sent[i]),
        first,
        before.len(),
        before,
        open,
        closed,
        unfiltered,
        report.ignored,
        benign_failures.len(),
    );
    d.check(
        !report.sent.is_empty() && first.is_some(),
        format!("could not read nmap's probes from --packet-trace:\n{out}\n{grepable}"),
    );
    d.check(
        (!udp || open.is_empty()) && open.iter().all(|p| SERVICES.contains(p)),
        format!("nmap saw open ports {open:?} that are no service here:\n{grepable}"),
    );
    let answered_trap: Vec<u16> = answered.iter().copied().filter(|p| trapped(*p)).collect();
    d.check(
        answered_trap.is_empty(),
        format!("nmap got an answer from trapped ports {answered_trap:?}:\n{grepable}\n{out}"),
    );
    let late: Vec<u16> = answered
        .iter()
        .copied()
        .filter(|p| !before.contains(p))
        .collect();
    d.check(
        late.is_empty(),
        format!(
            "nmap got answers for ports {late:?} probed only after the first trapped probe (to port {:?}):\n{grepable}\n{out}",
            first.map(|i| report.sent[i])
        ),
    );
    d.check(
        answered.len() <= ANSWERED_BOUND,
        format!(
            "nmap saw {} ports answered (> {ANSWERED_BOUND}): open {open:?} closed {closed:?} unfiltered {unfiltered:?}",
            answered.len()
        ),
    );

    // The attacker is cut off; the benign client never was.
    for port in SERVICES {
        d.check(
            !can_connect(&atk.ns, target, port, Duration::from_secs(1)),
            format!("the banned attacker can still connect to port {port}"),
        );
    }
    d.check(
        benign_failures.is_empty() && benign_ok >= 2,
        format!("benign client during the scan: {benign_ok} ok, failures: {benign_failures:?}"),
    );
    for port in SERVICES {
        d.check(
            connect_many(&ben.ns, target, port, 3, Duration::from_secs(2)) == 3,
            format!("after the scan the benign client must still reach port {port}"),
        );
    }
    assert_not_in_set(&d, def, ben_ip);
    let ben_lines = attack_lines_for(&d, ben_ip);
    d.check(
        ben_lines.is_empty(),
        format!("alerts about the benign client: {ben_lines:?}"),
    );
    let errors = d.lines_with("ERROR");
    d.check(errors.is_empty(), format!("error lines: {errors:?}"));
}

macro_rules! scan_case {
    ($name:ident, $flag:expr, $v6:expr, $kind:expr) => {
        #[test]
        fn $name() {
            first_probe_bans(ScanCase {
                test: stringify!($name),
                flag: $flag,
                v6: $v6,
                kind: $kind,
            });
        }
    };
}

scan_case!(
    kernel_first_probe_bans_nmap_ss_v4,
    "-sS",
    false,
    "TCP SYN/Normal scan"
);
scan_case!(
    kernel_first_probe_bans_nmap_sa_v4,
    "-sA",
    false,
    "TCP ACK/Window scan"
);
scan_case!(
    kernel_first_probe_bans_nmap_sf_v4,
    "-sF",
    false,
    "TCP FIN scan"
);
scan_case!(kernel_first_probe_bans_nmap_su_v4, "-sU", false, "UDP scan");
scan_case!(
    kernel_first_probe_bans_nmap_ss_v6,
    "-sS",
    true,
    "TCP SYN/Normal scan"
);

// ---------------------------------------------------------------------------------
// 2. A service started after the daemon is not a trap; once stopped, its port is.
// ---------------------------------------------------------------------------------

#[test]
fn kernel_service_started_later_is_not_trapped() {
    const PORT: u16 = 222;
    if !kernel_test_or_skip("kernel_service_started_later_is_not_trapped") {
        return;
    }
    let lab = Lab::builder().peer("client").peer("third").build();
    let def = &lab.defender;
    let client = lab.peer("client");
    let third = lab.peer("third");
    let conf = kernel::kernel_conf();
    let mut d = Daemon::start(&def.ns, &conf, MODES);
    d.wait_ready();
    let target = def.addr(false);

    let srv = TcpServer::start(&def.ns, PORT);
    let n = connect_many(&client.ns, target, PORT, 20, Duration::from_secs(2));
    let n6 = connect_many(&client.ns, def.addr(true), PORT, 5, Duration::from_secs(2));
    std::thread::sleep(QUIET);
    d.check(
        n == 20 && n6 == 5,
        format!("client reached the new service on port {PORT} {n}/20 times (v4), {n6}/5 (v6)"),
    );
    d.check(
        srv.accepted() == 25,
        format!("service accepted {} connections", srv.accepted()),
    );
    assert_not_in_set(&d, def, client.addr(false));
    assert_not_in_set(&d, def, client.addr(true));
    let alerts = d.lines_with("attackalert:");
    d.check(
        alerts.is_empty(),
        format!("alerts while a client used the new service: {alerts:?}"),
    );

    // Stop the service: its port is a trap again, with the same daemon.
    drop(srv);
    let c = connect(&third.ns, target, PORT, Duration::from_secs(1));
    d.check(
        matches!(c, Connect::Failed(_)),
        format!("a connection to the stopped service's port {PORT} ended {c:?}, expected dropped"),
    );
    let ip = third.addr(false);
    assert_in_set(&d, def, ip);
    wait_line(
        &d,
        &format!("{}{PORT}", alert_prefix("TCP SYN/Normal scan", ip, "TCP")),
    );
    wait_line(&d, &ban_line(ip, "10m", 1));
    let running = d.is_running();
    d.check(running, "the daemon exited");
    let starts = d
        .lines_with("PortSentry is now active and listening.")
        .len();
    d.check(starts == 1, format!("daemon started {starts} times"));
    assert_not_in_set(&d, def, client.addr(false));
}

// ---------------------------------------------------------------------------------
// 3. A ban expires in the kernel while the daemon is stopped.
// ---------------------------------------------------------------------------------

#[test]
fn kernel_ban_expires_with_daemon_stopped() {
    if !kernel_test_or_skip("kernel_ban_expires_with_daemon_stopped") {
        return;
    }
    let lab = Lab::builder().peer("attacker").build();
    let def = &lab.defender;
    let atk = lab.peer("attacker");
    let _alt = TcpServer::start(&def.ns, ALT);
    // A single SYN is unverified evidence: its bans follow [bans.unverified].
    let conf = kernel::kernel_conf().toml("[bans.unverified]\ntime = \"4s\"\nescalation = 1");
    let mut d = Daemon::start(&def.ns, &conf, MODES);
    d.wait_ready();
    let target = def.addr(false);
    let ip = atk.addr(false);
    d.check(
        can_connect(&atk.ns, target, ALT, Duration::from_secs(2)),
        "before the scan the attacker must reach the open service",
    );

    // One SYN to a watched port (not a whole nmap run: the 4 s start at this probe).
    let probed_at = Instant::now();
    let c = connect(&atk.ns, target, 23, Duration::from_millis(300));
    d.check(
        matches!(c, Connect::Failed(_)),
        format!("probe to port 23 ended {c:?}"),
    );
    let elem = assert_in_set(&d, def, ip);
    wait_line(&d, &ban_line(ip, "4s", 1));
    let banned_at = probed_at;
    d.check(
        elem.timeout == Some(4),
        format!("kernel element {elem:?}: timeout is not 4s"),
    );

    let status = d.stop();
    d.check(
        status.is_some_and(|s| s.success()),
        format!("daemon exit on SIGTERM: {status:?}"),
    );
    wait_line(
        &d,
        "adminalert: trap rules removed from table inet portsentry; bans stay in the kernel until they expire",
    );
    let chain = kernel::input_chain(&def.ns);
    d.check(
        !chain.contains("add @banned4") && !chain.contains("add @banned6"),
        format!("trap rules left after a clean stop:\n{chain}"),
    );
    let left = ban_of(&def.ns, ip);
    d.check(
        left.is_some(),
        format!(
            "the ban vanished at stop ({:.1}s after it was made)",
            banned_at.elapsed().as_secs_f64()
        ),
    );
    let c = connect(&atk.ns, target, ALT, Duration::from_secs(1));
    d.check(
        matches!(c, Connect::Failed(_)),
        format!("banned attacker's connection with the daemon stopped ended {c:?}"),
    );

    let gone = wait_unbanned(&def.ns, ip, Duration::from_secs(6));
    let waited = banned_at.elapsed();
    d.check(
        gone,
        format!(
            "the 4s ban is still in the kernel {:.1}s later:\n{}",
            waited.as_secs_f64(),
            kernel::set_text(&def.ns, "banned4")
        ),
    );
    eprintln!(
        "kernel_ban_expires_with_daemon_stopped: element {left:?} gone {:.1}s after the probe",
        waited.as_secs_f64()
    );
    d.check(
        can_connect(&atk.ns, target, ALT, Duration::from_secs(2)),
        "after the ban expired the attacker cannot connect to the open service",
    );
    // The trap rules went with the daemon: a watched port just refuses, no new ban.
    let c = connect(&atk.ns, target, 23, Duration::from_secs(2));
    d.check(
        c == Connect::Refused,
        format!("port 23 with the daemon stopped: {c:?}, expected refused"),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_not_in_set(&d, def, ip);
}

// ---------------------------------------------------------------------------------
// 4. A repeat offender's ban escalates.
// ---------------------------------------------------------------------------------

#[test]
fn kernel_repeat_offender_ban_escalates() {
    if !kernel_test_or_skip("kernel_repeat_offender_ban_escalates") {
        return;
    }
    let lab = Lab::builder().peer("attacker").build();
    let def = &lab.defender;
    let atk = lab.peer("attacker");
    // SYN scans are unverified evidence; offence_gap = 0 counts every offence (the
    // provisional default counts one an hour), so the second scan escalates.
    let conf = kernel::kernel_conf()
        .toml("[bans.unverified]\ntime = \"3s\"\nescalation = 2\noffence_gap = 0");
    let mut d = Daemon::start(&def.ns, &conf, MODES);
    d.wait_ready();
    let target = def.addr(false);
    let ip = atk.addr(false);

    nmap(atk, &["-sS", "-p", "21-25"], target);
    let first = assert_in_set(&d, def, ip);
    wait_line(&d, &ban_line(ip, "3s", 1));
    d.check(
        first.timeout == Some(3),
        format!("first kernel element {first:?}: timeout is not 3s"),
    );
    d.check(
        wait_unbanned(&def.ns, ip, Duration::from_secs(6)),
        format!(
            "the 3s ban did not expire:\n{}",
            kernel::set_text(&def.ns, "banned4")
        ),
    );

    nmap(atk, &["-sS", "-p", "21-25"], target);
    let second = assert_in_set(&d, def, ip);
    wait_line(&d, &ban_line(ip, "6s", 2));
    // Read again after the line: the daemon rewrote the kernel's 3s element.
    let second = ban_of(&def.ns, ip).unwrap_or(second);
    eprintln!("kernel_repeat_offender_ban_escalates: first {first:?}, second {second:?}");
    d.check(
        second.timeout == Some(6) && second.expires.is_some_and(|e| e > 3 && e <= 6),
        format!("second kernel element {second:?}: expected timeout 6s, 3 < expires <= 6"),
    );
    let bans = d.lines_with(&format!("attackalert: Host {ip} has been banned"));
    d.check(
        bans.len() == 2,
        format!("expected two ban lines, got {bans:?}"),
    );
}

// ---------------------------------------------------------------------------------
// 5. kill -9 and restart: bans come back with their remaining time, kernel-only
//    ones are adopted, expired ones are not re-added.
// ---------------------------------------------------------------------------------

#[test]
fn kernel_bans_survive_kill_9_and_restart() {
    if !kernel_test_or_skip("kernel_bans_survive_kill_9_and_restart") {
        return;
    }
    let lab = Lab::builder().peer("a").peer("b").peer("d").build();
    let def = &lab.defender;
    let (a, b, dd) = (lab.peer("a"), lab.peer("b"), lab.peer("d"));
    let _alt = TcpServer::start(&def.ns, ALT);
    let conf = kernel::kernel_conf().toml("[bans.unverified]\ntime = \"60s\"");
    let mut d = Daemon::start(&def.ns, &conf, MODES);
    d.wait_ready();
    let target = def.addr(false);
    let (ip_a, ip_b, ip_d) = (a.addr(false), b.addr(false), dd.addr(false));
    // C: never a lab host; only a record in the state file, already expired.
    let ip_c: IpAddr = lab.v4(77).into();

    for h in [a, b] {
        let c = connect(&h.ns, target, 23, Duration::from_secs(1));
        d.check(
            matches!(c, Connect::Failed(_)),
            format!("probe to port 23 ended {c:?}"),
        );
    }
    let banned_at = Instant::now();
    for ip in [ip_a, ip_b] {
        assert_in_set(&d, def, ip);
        wait_line(&d, &ban_line(ip, "1m", 1));
    }
    let state = conf.state_path();
    let saved = wait_until(REACT, Duration::from_millis(100), || {
        let text = Conf::read(&state);
        text.contains(&format!("\"{ip_a}/32\"")) && text.contains(&format!("\"{ip_b}/32\""))
    });
    d.check(
        saved,
        format!("state file lacks the bans:\n{}", Conf::read(&state)),
    );

    // Let some of the 60 s pass, then kill -9.
    let until = banned_at + Duration::from_secs(6);
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    common::kill_pid(d.pid(), libc::SIGKILL);
    d.stop();
    let old_lines = d.lines();
    drop(d);

    // The trap rules are still in the kernel: D's probe bans D with no daemon.
    d_probe_bans_without_daemon(def, dd, target);
    // A's element is lost from the kernel (as after a flush by hand): it must be put
    // back from the state file with its remaining time.
    def.ns.exec_ok(
        &[
            "nft",
            "delete",
            "element",
            "inet",
            kernel::TABLE,
            "banned4",
            &format!("{{ {ip_a} }}"),
        ],
        Duration::from_secs(10),
    );
    // C: an expired ban added to the state file.
    add_expired_record(&state, ip_c);

    let mut d = Daemon::start(&def.ns, &conf, MODES);
    d.wait_ready();
    // "adminalert: bans restored from PATH (nftables): 1 put back, ..." (the exact
    // wording around the counts has changed; the counts are what matters).
    let restored = [
        "1 put back",
        "1 still in the kernel",
        "1 found only in the kernel",
        "1 expired",
    ];
    let got = d.lines_with("restored from");
    d.check(
        got.len() == 1
            && got[0].contains(&state.display().to_string())
            && got[0]
                .rsplit_once(": ")
                .is_some_and(|(_, counts)| counts.split(", ").eq(restored)),
        format!(
            "expected {restored:?}, got {got:?}\nfirst run:\n{}",
            old_lines.join("\n")
        ),
    );
    let elapsed = banned_at.elapsed().as_secs();
    let mut report = Vec::new();
    for ip in [ip_a, ip_b] {
        let e = assert_in_set(&d, def, ip);
        report.push(format!("{ip}: {e:?}"));
        d.check(
            e.expires.is_some_and(|x| (40..=55).contains(&x)),
            format!(
                "ban of {ip} after restart: {e:?}; {elapsed}s after a 60s ban, expected 40..=55s left"
            ),
        );
    }
    let e_d = assert_in_set(&d, def, ip_d);
    report.push(format!("{ip_d}: {e_d:?}"));
    assert_not_in_set(&d, def, ip_c);
    eprintln!(
        "kernel_bans_survive_kill_9_and_restart: {elapsed}s after the bans: {}; log: {got:?}",
        report.join("; ")
    );
    for (h, ip) in [(a, ip_a), (b, ip_b), (dd, ip_d)] {
        d.check(
            !can_connect(&h.ns, target, ALT, Duration::from_secs(1)),
            format!("{ip} can connect after the restart"),
        );
    }

    let out = kernel::client(&def.ns, &conf, &["list"]);
    d.check(out.success(), format!("portsentry list failed:\n{out}"));
    let listed = |ip: IpAddr| {
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&format!("{ip}/32")))
    };
    for ip in [ip_a, ip_b, ip_d] {
        d.check(
            listed(ip),
            format!("portsentry list does not show {ip}:\n{out}"),
        );
    }
    d.check(
        !listed(ip_c),
        format!("portsentry list shows the expired {ip_c}:\n{out}"),
    );
}

/// With the daemon dead, a probe from `h` to a watched port is dropped and `h`
/// lands in the kernel set by the trap rule alone.
fn d_probe_bans_without_daemon(def: &Host, h: &Host, target: IpAddr) {
    let c = connect(&h.ns, target, 23, Duration::from_secs(1));
    assert!(
        matches!(c, Connect::Failed(_)),
        "probe to port 23 with the daemon dead ended {c:?}"
    );
    let ip = h.addr(false);
    assert!(
        wait_banned(&def.ns, ip, REACT).is_some(),
        "after kill -9 the trap rules did not ban {ip}:\n{}\n{}",
        kernel::set_text(&def.ns, "banned4"),
        kernel::input_chain(&def.ns)
    );
}

/// Adds to the state file a ban of `ip` that ended a second ago.
fn add_expired_record(state: &std::path::Path, ip: IpAddr) {
    let text = Conf::read(state);
    let mut v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("state file: {e}\n{text}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let settled = v["settled_through"].as_u64().unwrap_or(0);
    assert!(
        now - 1 > settled,
        "state file settled through {settled}, now {now}: cannot place an expired ban after it"
    );
    v["bans"]
        .as_array_mut()
        .expect("bans array")
        .push(serde_json::json!({
            "key": format!("{ip}/32"),
            "offences": 1,
            "banned_at": now - 61,
            "expires_at": now - 1,
            "last_offence": now - 61,
            "reason": "TCP SYN/Normal scan to TCP port 23 (written by the test)",
        }));
    std::fs::write(state, serde_json::to_string_pretty(&v).expect("json")).expect("write state");
}

// ---------------------------------------------------------------------------------
// 6. Decoys: the real scanner is banned, protected decoys and the gateway are not.
// ---------------------------------------------------------------------------------

#[test]
fn kernel_decoys_never_ban_protected_hosts() {
    if !kernel_test_or_skip("kernel_decoys_never_ban_protected_hosts") {
        return;
    }
    let lab = Lab::builder()
        .peer("attacker")
        .peer("gw")
        .peer("prot")
        .build();
    let def = &lab.defender;
    let atk = lab.peer("attacker");
    let gw = lab.peer("gw");
    let prot = lab.peer("prot");
    let _alt = TcpServer::start(&def.ns, ALT);
    // The "gateway": a default route in table 100 only, which no rule uses, so it
    // routes nothing (TESTING.md: no default routes); portsentry reads the default
    // routes of every table (protect.rs) and so protects its next hop.
    def.ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        &gw.v4.to_string(),
        "dev",
        "eth0",
        "table",
        "100",
    ]);
    let rules = def
        .ns
        .exec_ok(&["ip", "rule", "show"], Duration::from_secs(10))
        .stdout;
    assert!(
        !rules.contains("lookup 100"),
        "a rule uses table 100:\n{rules}"
    );
    let conf = kernel::kernel_conf().toml(&format!("[protect]\nextra = [\"{}/32\"]", prot.v4));
    let mut d = Daemon::start(&def.ns, &conf, MODES);
    d.wait_ready();
    let target = def.addr(false);
    let protected4 = kernel::set_elems(&def.ns, "protected4");
    let ip = atk.addr(false);

    let decoys = format!("{},{},ME", prot.v4, gw.v4);
    let out = nmap(atk, &["-sS", "-D", &decoys, "-p", "20-30,8080"], target);
    assert_in_set(&d, def, ip);
    wait_line(&d, &ban_line(ip, "10m", 1));
    wait_line(&d, &alert_prefix("TCP SYN/Normal scan", ip, "TCP"));
    for (what, h) in [("protected decoy", prot), ("gateway decoy", gw)] {
        let dip = h.addr(false);
        let ignored = format!("attackalert: Ignored host: {dip}/{dip} sent TCP SYN/Normal scan");
        d.check(
            d.wait_for_line(&ignored, REACT),
            format!(
                "no {ignored:?} line for the {what} (did the spoofed probes arrive?); protected4 = {protected4:?}\nnmap:\n{out}"
            ),
        );
        // Not in the ignore file: the line gives the real reason.
        for l in d.lines_with(&ignored) {
            d.check(
                l.contains("(protected: this host's own address, gateway, resolver or [protect] extra, not blocked)"),
                format!("the {what}'s Ignored line does not say it is protected: {l}"),
            );
        }
        assert_not_in_set(&d, def, dip);
        let acted: Vec<String> = attack_lines_for(&d, dip)
            .into_iter()
            .filter(|l| l.contains("has been banned") || l.contains("has been blocked"))
            .collect();
        d.check(
            acted.is_empty(),
            format!("{what} {dip} acted on: {acted:?}"),
        );
        d.check(
            can_connect(&h.ns, target, ALT, Duration::from_secs(2)),
            format!("the {what} {dip} cannot connect to port {ALT}"),
        );
    }
    d.check(
        !can_connect(&atk.ns, target, ALT, Duration::from_secs(1)),
        "the real scanner can still connect",
    );
    let banned = kernel::set_elems(&def.ns, "banned4").unwrap_or_default();
    d.check(
        banned.len() == 1,
        format!("banned4 holds more than the scanner: {banned:?}"),
    );
}

// ---------------------------------------------------------------------------------
// 7. `portsentry flush --all` removes the table and lifts the ban.
// ---------------------------------------------------------------------------------

#[test]
fn kernel_flush_all_removes_table_and_bans() {
    if !kernel_test_or_skip("kernel_flush_all_removes_table_and_bans") {
        return;
    }
    let lab = Lab::builder().peer("attacker").build();
    let def = &lab.defender;
    let atk = lab.peer("attacker");
    let _alt = TcpServer::start(&def.ns, ALT);
    let conf = kernel::kernel_conf();
    let mut d = Daemon::start(&def.ns, &conf, MODES);
    d.wait_ready();
    let target = def.addr(false);
    let ip = atk.addr(false);

    nmap(atk, &["-sS", "-p", "21-25"], target);
    assert_in_set(&d, def, ip);
    wait_line(&d, &ban_line(ip, "10m", 1));
    d.check(
        !can_connect(&atk.ns, target, ALT, Duration::from_secs(1)),
        "banned attacker can connect",
    );
    // The state file is written ~1 s after a change; `list` reads it and the kernel.
    let state = conf.state_path();
    wait_until(REACT, Duration::from_millis(100), || {
        Conf::read(&state).contains(&format!("\"{ip}/32\""))
    });
    let list = kernel::client(&def.ns, &conf, &["list"]);
    let row = list
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&format!("{ip}/32")))
        .map(str::to_string);
    d.check(
        list.success() && row.as_deref().is_some_and(|r| r.contains(" yes ")),
        format!("portsentry list does not show the ban of {ip} in the kernel:\n{list}"),
    );

    // With the daemon running, flush refuses (the daemon would re-install its table).
    let refused = kernel::client(&def.ns, &conf, &["flush", "--all"]);
    d.check(
        !refused.success() && refused.stderr.contains("the daemon is running"),
        format!("flush --all under a running daemon was not refused:\n{refused}"),
    );
    d.stop();
    let flush = kernel::client(&def.ns, &conf, &["flush", "--all"]);
    d.check(
        flush.success(),
        format!("portsentry flush --all failed:\n{flush}"),
    );
    let tables = kernel::tables(&def.ns);
    d.check(
        !kernel::table_exists(&def.ns),
        format!("table inet portsentry still there after flush --all:\n{tables}"),
    );
    d.check(
        can_connect(&atk.ns, target, ALT, Duration::from_secs(2)),
        "after flush --all the attacker cannot connect",
    );
    let list = kernel::client(&def.ns, &conf, &["list"]);
    let still = list
        .stdout
        .lines()
        .any(|l| l.split_whitespace().next() == Some(&format!("{ip}/32")));
    d.check(
        list.success() && !still,
        format!("portsentry list after flush --all:\n{list}"),
    );
    eprintln!(
        "kernel_flush_all_removes_table_and_bans: flush said {:?}; tables now {:?}",
        flush.stdout.trim(),
        tables.trim()
    );
    d.stop();
    eprintln!(
        "kernel_flush_all_removes_table_and_bans: daemon lines at stop after the flush: {:?}",
        d.lines_with("trap rules")
    );
}
