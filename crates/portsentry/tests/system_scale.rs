//! Issue 7 items 4 and 7 (a million bans, full sets): with 1,000,000 elements in the
//! kernel's ban set the daemon starts, traps, bans and alerts a scanner and stops,
//! keeping the bans; a ban set filled to its `set_size` by forged sources keeps its
//! size, says so in one line, and a new scanner is still alerted.
//!
//! Network safety (TESTING.md): the lab's namespaces only; the million elements are put
//! into the defender's set with `nft -f` (addresses of fd00:5e17::/64 that no lab host
//! has), not sent as packets; forged sources (`hping3 -a`, one fixed address per call,
//! bounded loop) are addresses of the lab's own 198.18.N.0/24. Speed figures are in
//! BENCHMARKS.md ("A million bans"); the bounds here are generous.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::kernel;
use common::lab::OPEN as ALT;
use common::{Daemon, can_connect, wait_until};

const MODES: &[&str] = &["-atcp", "-audp"];
const ACTIVE: &str = "adminalert: PortSentry is now active and listening.";

/// `add element` lines for `n` IPv6 bans fd00:5e17::1:X:Y (the sixth group is 1: no
/// lab host has such an address), 10,000 a line.
fn fill_text(n: u32) -> String {
    let mut text = String::with_capacity(n as usize * 22);
    let mut i = 0;
    while i < n {
        let k = (n - i).min(10_000);
        let items: Vec<String> = (i..i + k)
            .map(|j| format!("fd00:5e17::1:{:x}:{:x}", j >> 16, j & 0xffff))
            .collect();
        text.push_str(&format!(
            "add element inet portsentry banned6 {{ {} }}\n",
            items.join(", ")
        ));
        i += k;
    }
    text
}

#[test]
fn scale_million_bans_start_scan_stop() {
    let Some(lab) = common::lab_or_skip(
        "scale_million_bans_start_scan_stop",
        &["nft", "nmap"],
        &["attacker"],
    ) else {
        return;
    };
    let def = &lab.defender;
    let atk = lab.peer("attacker");
    let conf = kernel::kernel_conf();
    // A first run creates the table; its clean stop leaves the sets.
    let mut d = Daemon::start(&def.ns, &conf, MODES);
    d.wait_ready();
    d.stop();
    let fill = conf.path("fill.nft");
    std::fs::write(&fill, fill_text(1_000_000)).expect("write fill file");
    def.ns.exec_ok(
        &["nft", "-f", fill.to_str().unwrap()],
        Duration::from_secs(120),
    );

    let started = Instant::now();
    let d = Daemon::start(&def.ns, &conf, MODES);
    d.check(
        d.wait_for_line(ACTIVE, Duration::from_secs(60)),
        "not active within 60 s with a million bans in the kernel",
    );
    eprintln!("active {:?} after start", started.elapsed());
    d.check(
        d.has_line("hold more bans than the ban book keeps (65536)"),
        "the bans beyond the book's capacity are not mentioned",
    );
    d.check(
        !d.has_line("nftables not available"),
        "fell back from nftables",
    );
    let target = def.addr(false);
    let ip = atk.addr(false);
    // Reachable before the scan, without exchanging data (a host that got data from
    // a service is a known peer, whose probes are never banned).
    d.check(
        common::can_reach(&atk.ns, target, Duration::from_secs(2)),
        "before the scan the attacker must reach the defender",
    );
    let probed = Instant::now();
    let _ = can_connect(&atk.ns, target, 23, Duration::from_millis(300));
    d.check(
        d.wait_for_line(
            &format!("from host: {ip}/{ip} to TCP port: 23"),
            Duration::from_secs(60),
        ),
        "the scanner was not alerted",
    );
    eprintln!("alerted {:?} after the probe", probed.elapsed());
    d.check(
        wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
            !can_connect(&atk.ns, target, ALT, Duration::from_millis(500))
        }),
        "the scanner is not banned",
    );
    let mut d = d;
    let stop = Instant::now();
    let status = d.stop();
    eprintln!("stopped {:?} after TERM", stop.elapsed());
    d.check(
        status.is_some_and(|s| s.success()),
        format!("daemon exit on SIGTERM with a million bans: {status:?}"),
    );
    d.check(
        !can_connect(&atk.ns, target, ALT, Duration::from_secs(1)),
        "the ban did not outlive the stop",
    );
}

#[test]
fn scale_full_set_logged_once_new_scanner_alerted() {
    let Some(lab) = common::lab_or_skip(
        "scale_full_set_logged_once_new_scanner_alerted",
        &["nft", "hping3"],
        &["attacker"],
    ) else {
        return;
    };
    let def = &lab.defender;
    let atk = lab.peer("attacker");
    // No ban budget, so the forged sources fill the set (with the default budget of
    // one new ban a second they would not).
    let conf = kernel::kernel_conf().toml("[firewall]\nset_size = 64\nban_budget = 0");
    let mut d = Daemon::start(&def.ns, &conf, MODES);
    d.wait_ready();
    let target = def.addr(false).to_string();
    // 100 forged sources of the lab's own subnet, one SYN each: 64 fill the set.
    for h in 100..200u8 {
        let src = lab.v4(h).to_string();
        atk.ns.exec(
            &[
                "hping3", "-S", "-p", "23", "-c", "1", "-q", "-a", &src, &target,
            ],
            Duration::from_secs(2),
        );
    }
    d.check(
        d.wait_for_line("is full", Duration::from_secs(10)),
        "no line says the set is full",
    );
    let set = def
        .ns
        .exec_ok(
            &["nft", "list", "set", "inet", "portsentry", "banned4"],
            Duration::from_secs(10),
        )
        .stdout;
    let held = (100..200u8)
        .filter(|h| {
            let a = lab.v4(*h).to_string();
            set.split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .any(|w| w == a)
        })
        .count();
    d.check(
        held == 64,
        format!("set_size = 64 but banned4 holds {held}:\n{set}"),
    );
    // A real scanner after the flood: alerted within a generous bound.
    let ip: IpAddr = atk.addr(false);
    atk.ns.exec(
        &["hping3", "-S", "-p", "25", "-c", "1", "-q", &target],
        Duration::from_secs(2),
    );
    d.check(
        d.wait_for_line(
            &format!("from host: {ip}/{ip} to TCP port: 25"),
            Duration::from_secs(5),
        ),
        "a new scanner after the set filled was not alerted",
    );
    d.check(
        d.lines_with("is full").len() == 1,
        format!(
            "the full set is logged more than once: {:?}",
            d.lines_with("is full")
        ),
    );
    let status = d.stop();
    d.check(
        status.is_some_and(|s| s.success()),
        format!("exit: {status:?}"),
    );
}
