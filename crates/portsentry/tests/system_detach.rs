//! Issue 8, item 1: a start that fails says why on the terminal and in syslog and exits
//! non-zero *before* the starting process goes away, so init scripts and systemd report
//! it; a start that works exits 0 only once the traps are armed. The daemon is started
//! the way an init script starts it: without `--foreground`, so it detaches.
//!
//! Syslog is a datagram socket of the test's own (`--syslog-socket`), never /dev/log.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::checks::{REACT, alert_prefix, nmap};
use common::kernel::wait_banned;
use common::syslog::Syslog;
use common::{Conf, Lab, Netns, Output, daemon_bin, root_or_skip, wait_until};

/// Runs the daemon detached (`portsentry MODE -c CONF --settings TOML
/// --syslog-socket SOCK`) in `ns`; returns the starting process's outcome and how
/// long it took to return.
fn start_detached(ns: &Netns, conf: &Conf, mode: &str, syslog: &Path) -> (Output, Duration) {
    let conf_path = conf.write();
    let (c, s, l) = (
        conf_path.display().to_string(),
        conf.settings_path().display().to_string(),
        syslog.display().to_string(),
    );
    let t = Instant::now();
    let out = ns.exec(
        &[
            daemon_bin(),
            mode,
            "-c",
            &c,
            "--settings",
            &s,
            "--syslog-socket",
            &l,
        ],
        Duration::from_secs(60),
    );
    (out, t.elapsed())
}

#[test]
fn issue_8_a_detached_start_returns_once_armed_and_a_failed_one_says_why() {
    let test = "issue_8_a_detached_start_returns_once_armed_and_a_failed_one_says_why";
    if !root_or_skip(test, &["nmap", "nft"]) {
        return;
    }
    let lab = Lab::builder().peer("attacker").build();
    let def = &lab.defender;
    let conf = Conf::bans_only();
    let syslog = Syslog::start(conf.dir.path());
    let sock_path = syslog.path.clone();
    let seen = |pred: &dyn Fn(&str) -> bool| {
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            syslog.any(pred)
        })
    };

    // A start that works: exit 0, and by then the traps are armed (a scan right after
    // the starting process returned is banned).
    let (out, took) = start_detached(&def.ns, &conf, "-atcp", &sock_path);
    assert!(out.success(), "detached start failed:\n{out}");
    // The line is logged before the starting process is told; the reader thread may
    // take a moment to pick it up.
    assert!(
        seen(&|l: &str| l.contains("PortSentry is now active and listening")),
        "the starting process returned ({took:?}) before the daemon was active: {:#?}",
        syslog.lines()
    );
    let attacker = lab.peer("attacker");
    let ip = attacker.addr(false);
    nmap(attacker, &["-sS", "-p", "1-50"], def.addr(false));
    assert!(
        wait_banned(&def.ns, ip, REACT).is_some(),
        "the detached daemon did not ban the scan"
    );
    let alert = alert_prefix("TCP SYN/Normal scan", ip, "TCP");
    assert!(
        seen(&|l: &str| l.contains(&alert)),
        "no alert in syslog: {:#?}",
        syslog.lines()
    );

    // A second daemon on the same host cannot have the same NFLOG group: it fails
    // after reading its configuration, and the starting process says why and exits 4.
    let second = Conf::bans_only();
    let (out, _) = start_detached(&def.ns, &second, "-atcp", &sock_path);
    assert_eq!(out.code(), Some(4), "second daemon:\n{out}");
    assert!(
        out.stderr.contains("portsentry: ") && out.stderr.len() > 12,
        "no reason on the terminal:\n{out}"
    );
    assert!(
        seen(&|l: &str| l.contains("adminalert: ERROR")),
        "no reason in syslog: {:#?}",
        syslog.lines()
    );

    // A configuration error: exit 3, the reason on the terminal and in syslog.
    let broken = Conf::bans_only().toml("[firewall]\nno_such_key = 1\n");
    let (out, _) = start_detached(&def.ns, &broken, "-atcp", &sock_path);
    assert_eq!(out.code(), Some(3), "broken configuration:\n{out}");
    assert!(out.stderr.contains("no_such_key"), "{out}");
    assert!(
        seen(
            &|l: &str| l.contains("configuration error, not starting") && l.contains("no_such_key")
        ),
        "the configuration error is not in syslog: {:#?}",
        syslog.lines()
    );
}
