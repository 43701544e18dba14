//! Acceptance of "Blocking that forged packets cannot turn into a weapon" under a
//! forged-source flood: the daemon with its default settings and the harness's 1.2
//! conf (KILL_ROUTE, KILL_HOSTS_DENY, SCAN_TRIGGER=0, BLOCK_TCP/UDP=1) is flooded with
//! TCP SYNs to its trap ports from tens of thousands of forged sources; it must ban at
//! most its budget, keep its log short, stay alive with bounded memory, keep serving a
//! real client, and still catch a real scanner right after.
//!
//! Network safety (TESTING.md): the flood comes from our own sender
//! (`portsentry_kernel::flood`), which refuses sources outside the test ranges; here
//! they are 198.19.128.0/17 and fd00:5e17:0:0:8000::/65, inside 198.18.0.0/15 and
//! fd00:5e17::/64, sent from a lab namespace to the lab's defender only. The defender
//! has no route back to them, so nothing it answers leaves its namespace.

mod common;

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use portsentry_kernel::flood::Flood;

use common::checks::{REACT, alert_prefix, nmap};
use common::kernel::{self, ban_of, set_elems};
use common::{Conf, Daemon, Lab, OPEN, root_or_skip};

const FORGED_V4: &str = "198.19.128.0/17";
const FORGED_V6: &str = "fd00:5e17:0:0:8000::/65";
const MODES: &[&str] = &["-atcp", "-audp"];

fn forged(net: &str, ip: IpAddr) -> bool {
    net.parse::<IpNet>().unwrap().contains(&ip)
}

/// The trap ports of the harness conf (advanced below 1024, minus the excluded ports).
fn trap_ports() -> Vec<u16> {
    (1..1024).filter(|p| ![113, 139].contains(p)).collect()
}

/// A lab with a flooder, a benign client and a scanner, whose defender serves
/// [`OPEN`] and accepts forged sources on its interface (rp_filter off: the forged
/// prefixes have no route in the defender, and a reverse-path check would drop them
/// before any firewall hook, which is not what a real host behind a router sees).
fn flood_lab(test: &str) -> Option<Lab> {
    if !root_or_skip(test, &["nmap", "nft"]) {
        return None;
    }
    let lab = Lab::builder()
        .peer("flooder")
        .peer("client")
        .peer("scanner")
        .open_service()
        .build();
    for k in ["all", "default", "eth0"] {
        lab.defender
            .ns
            .sysctl(&format!("net.ipv4.conf.{k}.rp_filter=0"));
    }
    Some(lab)
}

/// Peak resident memory of a process in KiB (`VmHWM`).
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Process CPU time (user + system) in seconds, from `/proc/PID/stat`.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the comm: state is 0, utime is 11, stime is 12.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// The most new kernel bans a flood of `secs` may cause with the default budget: the
/// budget's burst plus its rate for every second (rounded up, plus one second of
/// slack for the time the flood takes to start and end). Read from the daemon's own
/// start line, so the test follows the default when it changes.
fn budget_bound(d: &Daemon, secs: u64) -> u64 {
    let line = d
        .lines_with("ban budget:")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no 'ban budget:' line at start\n{}", d.dump()));
    // "... ban budget: R new bans/s, burst B ..."
    let num_after = |key: &str| -> u64 {
        let rest = line
            .split(key)
            .nth(1)
            .unwrap_or_else(|| panic!("{key} in {line}"));
        rest.trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("number after {key} in {line}"))
    };
    let rate = num_after("ban budget:");
    let burst = num_after("burst");
    burst + rate * (secs + 1)
}

#[test]
fn forged_syn_flood_bans_at_most_the_budget_and_spares_real_clients() {
    let test = "forged_syn_flood_bans_at_most_the_budget_and_spares_real_clients";
    let Some(lab) = flood_lab(test) else { return };
    let def = &lab.defender;
    let target = IpAddr::V4(def.v4);
    let conf = Conf::new();
    let mut d = lab.daemon(&conf, MODES);
    let pid = d.pid();
    let first_flood_line = d.lines().len();
    let cpu_before = cpu_seconds(pid);

    // A benign client keeps using the open service through the flood.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, tried) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let client = {
        let (stop, ok, tried) = (stop.clone(), ok.clone(), tried.clone());
        lab.peer("client").ns.thread(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                tried.fetch_add(1, Ordering::Relaxed);
                let addr = SocketAddr::new(target, OPEN);
                if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok() {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let flood_secs = 10;
    let sent = lab
        .peer("flooder")
        .ns
        .run_in(move || {
            Flood {
                target,
                sources: FORGED_V4.parse().unwrap(),
                dports: trap_ports(),
                udp: false,
                rate: 20_000,
                duration: Duration::from_secs(flood_secs),
                seed: 0x5eed,
            }
            .run()
        })
        .expect("flood");
    let flood_cpu = cpu_seconds(pid) - cpu_before;
    stop.store(true, Ordering::Relaxed);
    client.join().expect("client thread");
    assert!(
        sent.packets >= 20_000 * flood_secs * 9 / 10,
        "the sender fell short of 20,000 packets/s: {sent:?}"
    );

    // The budget held: at most burst + rate × duration new bans among the forged.
    let bound = budget_bound(&d, flood_secs);
    let banned: Vec<_> = set_elems(&def.ns, "banned4")
        .expect("ban set")
        .into_iter()
        .filter(|e| forged(FORGED_V4, e.addr))
        .collect();
    d.check(
        banned.len() as u64 <= bound,
        format!(
            "{} forged sources banned, budget allows {bound}",
            banned.len()
        ),
    );

    // The log stayed short: every line since the flood began, whatever it says.
    std::thread::sleep(Duration::from_secs(3));
    let flood_lines = d.lines().len() - first_flood_line;
    d.check(
        flood_lines <= 100,
        format!("{flood_lines} lines logged for the flood (at most 100)"),
    );

    // The client kept its access.
    let (ok, tried) = (ok.load(Ordering::Relaxed), tried.load(Ordering::Relaxed));
    d.check(
        tried > 50 && u64::from(ok) * 100 >= u64::from(tried) * 99,
        format!("benign client: {ok} of {tried} connections succeeded during the flood"),
    );

    // Alive, with bounded memory.
    let alive = d.is_running();
    d.check(alive, "the daemon died under the flood");
    let rss = peak_rss_kib(pid);
    eprintln!(
        "{test}: sent {} packets in {:.1} s; {} forged bans (bound {bound}); {flood_lines} log lines; \
         client {ok}/{tried}; daemon CPU {flood_cpu:.2} s; peak RSS {rss} KiB",
        sent.packets,
        sent.elapsed.as_secs_f64(),
        banned.len()
    );
    d.check(rss < 256 * 1024, format!("peak RSS {rss} KiB"));

    // A real scan right after the flood is still alerted and banned.
    let scanner = lab.peer("scanner");
    let ip = IpAddr::V4(scanner.v4);
    nmap(scanner, &["-sS", "--top-ports", "1000"], target);
    d.check(
        d.wait_for_line(&alert_prefix("TCP SYN/Normal scan", ip, "TCP"), REACT),
        "the scan after the flood was not alerted",
    );
    d.check(
        ban_of(&def.ns, ip).is_some(),
        "the scanner after the flood was not banned",
    );
    d.stop();
}

#[test]
fn ipv6_flood_until_the_set_is_full_keeps_old_bans_and_the_daemon() {
    let test = "ipv6_flood_until_the_set_is_full_keeps_old_bans_and_the_daemon";
    let Some(lab) = flood_lab(test) else { return };
    let def = &lab.defender;
    let target = IpAddr::V6(def.v6);
    // A small set and a budget far above the flood, so the set fills.
    let size: u32 = 2_000;
    let conf = Conf::new()
        .unset("KILL_ROUTE")
        .toml(&format!("[firewall]\nset_size = {size}\nban_budget = 0\n"));
    let mut d = lab.daemon(&conf, MODES);
    let pid = d.pid();

    // A real scanner banned before the flood.
    let early = lab.peer("scanner");
    let early_ip = IpAddr::V6(early.v6);
    nmap(early, &["-sS", "-p", "1-100"], target);
    d.check(
        kernel::wait_banned(&def.ns, early_ip, REACT).is_some(),
        "the scanner before the flood was not banned",
    );

    let sent = lab
        .peer("flooder")
        .ns
        .run_in(move || {
            Flood {
                target,
                sources: FORGED_V6.parse().unwrap(),
                dports: trap_ports(),
                udp: false,
                rate: 20_000,
                duration: Duration::from_secs(3),
                seed: 0xf00d,
            }
            .run()
        })
        .expect("flood");
    assert!(sent.packets > u64::from(size) * 10, "{sent:?}");

    let elems = set_elems(&def.ns, "banned6").expect("ban set");
    d.check(
        elems.len() <= size as usize,
        format!("banned6 holds {} elements, set_size is {size}", elems.len()),
    );
    d.check(
        elems.len() + 10 >= size as usize,
        format!("the flood did not fill banned6: {} of {size}", elems.len()),
    );
    d.check(
        elems.iter().any(|e| e.addr == early_ip),
        "the ban made before the flood was pushed out",
    );
    let alive = d.is_running();
    d.check(alive, "the daemon died when the set filled");
    d.check(
        d.wait_for(REACT, |l| {
            l.iter().filter(|l| l.contains("is full")).count() == 1
        }),
        "no single 'is full' line",
    );
    eprintln!(
        "{test}: sent {sent:?}; banned6 {}; peak RSS {} KiB",
        elems.len(),
        peak_rss_kib(pid)
    );

    // New probes are still dropped: a new scanner learns nothing, and it is alerted.
    let late = lab.peer("client");
    let late_ip = IpAddr::V6(late.v6);
    let out = nmap(late, &["-sS", "-p", "1-200"], target);
    // Only the ports the conf excludes from the traps (ADVANCED_EXCLUDE_TCP) answer.
    let answered: Vec<u16> = out
        .stdout
        .lines()
        .filter(|l| l.contains("/tcp closed") || l.contains("/tcp open"))
        .filter_map(|l| l.split('/').next()?.parse().ok())
        .collect();
    d.check(
        answered.iter().all(|p| [113, 139].contains(p)),
        format!("trap ports answered the scanner after the flood: {answered:?}\n{out}"),
    );
    d.check(
        d.wait_for_line(&alert_prefix("TCP SYN/Normal scan", late_ip, "TCP"), REACT),
        "the scanner after a set-filling flood was not alerted",
    );
    d.check(
        d.lines_with("is full").len() == 1,
        "the full set was logged more than once",
    );
    d.stop();
}
