//! Issue 8 acceptance: Debian's own init script (`/etc/init.d/portsentry` from the
//! `portsentry` package, unpacked by `.ci/run` with `apt-get download` + `dpkg -x`, never
//! installed) with Debian's unchanged files, run against our binary: `start` starts
//! both modes (`portsentry -tcp`, `portsentry -udp`), a TCP and a UDP scan are both
//! alerted in syslog, `stop` stops both, and a broken configuration makes `start` fail
//! with the reason in syslog.
//!
//! Safety (TESTING.md): the script runs in the lab's defender network namespace and in
//! a private mount and pid namespace of its own (`tests/scripts/initd.sh`): /etc,
//! /usr/sbin and /usr/lib are overlays over the host's read-only files, /var/lib, /run
//! and /dev are private tmpfs, /dev/log is this test's socket. The host's files are
//! never written.

mod common;

use std::path::Path;
use std::time::Duration;

use common::checks::nmap;
use common::syslog::Syslog;
use common::{Lab, daemon_bin, deb_root, loud, root_or_skip, script, wait_until};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn issue_8_debians_init_script_starts_and_stops_both_modes() {
    let test = "issue_8_debians_init_script_starts_and_stops_both_modes";
    if !root_or_skip(
        test,
        &[
            "nmap",
            "nft",
            "unshare",
            "perl",
            "start-stop-daemon",
            "ifconfig",
        ],
    ) {
        return;
    }
    let pkg = deb_root("portsentry");
    if !pkg.join("etc/init.d/portsentry").exists() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "{test}: Debian's portsentry package is not unpacked at {}",
                pkg.display()
            );
        }
        loud(&format!(
            "skipped: Debian's portsentry package not unpacked at {} (.ci/run does it) ({test})",
            pkg.display()
        ));
        return;
    }
    let lab = Lab::builder().peer("scanner").build();
    let def = &lab.defender;
    let work = tempfile::Builder::new()
        .prefix("pst-initd-")
        .tempdir()
        .unwrap();
    let w = work.path();
    let syslog = Syslog::start(w);
    let sock_path = syslog.path.clone();
    let host_mnt = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    let (ws, ps, ss, hs) = (
        w.display().to_string(),
        pkg.display().to_string(),
        sock_path.display().to_string(),
        host_mnt.display().to_string(),
    );
    let sh = script("initd.sh");
    let mut run = def.ns.spawn(&[
        "unshare",
        "-m",
        "-p",
        "-f",
        "--mount-proc",
        "--propagation",
        "private",
        "sh",
        &sh,
        &ws,
        &ps,
        daemon_bin(),
        &ss,
        &hs,
    ]);
    let started = wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        w.join("started").exists()
    });
    let start_out = read(&w.join("start.out"));
    assert!(
        started,
        "the init script did not start: {start_out}\n{:#?}",
        syslog.lines()
    );
    assert!(
        start_out.contains("Starting anti portscan daemon: portsentry in tcp & udp mode."),
        "start said: {start_out}"
    );
    let active = || {
        syslog
            .lines()
            .iter()
            .filter(|l| l.contains("PortSentry is now active and listening"))
            .count()
    };
    wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        active() == 2
    });
    assert_eq!(
        active(),
        2,
        "both daemons must be active:\n{:#?}",
        syslog.lines()
    );

    // A TCP and a UDP scan are both alerted.
    let scanner = lab.peer("scanner");
    let ip = scanner.addr(false).to_string();
    let target = def.addr(false);
    nmap(scanner, &["-sT", "-p", "1,11,15,79,111"], target);
    nmap(scanner, &["-sU", "-p", "1,7,9,69,161"], target);
    let alerted = |l: &[String], proto: &str| {
        l.iter().any(|l| {
            l.contains("attackalert:") && l.contains(&ip) && l.contains(&format!("{proto} port:"))
        })
    };
    wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        let l = syslog.lines();
        alerted(&l, "TCP") && alerted(&l, "UDP")
    });
    let lines = syslog.lines();
    assert!(
        alerted(&lines, "TCP"),
        "no TCP alert in syslog:\n{lines:#?}"
    );
    assert!(
        alerted(&lines, "UDP"),
        "no UDP alert in syslog:\n{lines:#?}"
    );

    // `stop` stops both.
    std::fs::write(w.join("stop"), "").unwrap();
    let done = wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        w.join("done").exists()
    });
    let ps_after = read(&w.join("ps.after"));
    assert!(
        done,
        "the init script did not finish: {}",
        read(&w.join("stop.out"))
    );
    assert!(
        !ps_after.contains("/usr/sbin/portsentry"),
        "daemons left after stop:\n{ps_after}"
    );

    // A broken configuration: the start fails, and syslog says why.
    let broken = read(&w.join("broken.out"));
    assert!(
        syslog.any(|l| l.contains("configuration error, not starting") && l.contains("TCP_PORTS")),
        "no configuration error in syslog (start said: {broken}):\n{:#?}",
        syslog.lines()
    );
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        !run.is_running()
    });
    run.stop();
}
