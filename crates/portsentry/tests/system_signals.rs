//! Issue 8: signals never kill the daemon. A burst of SIGHUPs coalesces into one
//! reload (same PID, traps and bans kept), and SIGUSR1 reopens the history file after
//! logrotate moved it away.

mod common;

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::checks::{QUIET, REACT, alert_prefix, nmap};
use common::daemon::wait_file_line;
use common::kernel::{ban_of, table_text, wait_banned};
use common::{Conf, Daemon, HistoryLine, OPEN, can_connect};

const SYN: &str = "TCP SYN/Normal scan";

fn count(d: &Daemon, needle: &str) -> usize {
    d.lines_with(needle).len()
}

/// The history lines of `path` about `ip`.
fn history_of(path: &std::path::Path, ip: IpAddr) -> Vec<HistoryLine> {
    HistoryLine::parse_all(&Conf::read(path))
        .into_iter()
        .filter(|l| l.ip == ip.to_string())
        .collect()
}

#[test]
fn issue_8_a_burst_of_100_sighups_is_one_reload_and_never_kills() {
    let test = "issue_8_a_burst_of_100_sighups_is_one_reload_and_never_kills";
    let Some(lab) = common::lab_or_skip(test, common::SCAN_TOOLS, &["first", "second"]) else {
        return;
    };
    let (def, first, second) = (&lab.defender, lab.peer("first"), lab.peer("second"));
    let conf = Conf::bans_only().set("TCP_PORTS", "23");
    let mut d = lab.daemon(&conf, &["-stcp"]);
    let pid = d.pid();
    let ip1 = first.addr(false);
    nmap(first, &["-sS", "-p", "23"], def.addr(false));
    d.check(
        wait_banned(&def.ns, ip1, REACT).is_some(),
        "the first source was not banned",
    );

    for _ in 0..100 {
        d.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(1));
    }
    // Back when every "restarting" line has its "active" line, and no more come.
    let settled = |lines: &[String]| {
        let restarts = lines
            .iter()
            .filter(|l| l.contains("PortSentry is restarting"))
            .count();
        let active = lines
            .iter()
            .filter(|l| l.contains("PortSentry is now active and listening."))
            .count();
        restarts >= 1 && active == restarts + 1
    };
    d.check(
        d.wait_for(REACT, settled),
        "the daemon did not come back after the burst",
    );
    std::thread::sleep(QUIET);
    let running = d.is_running();
    d.check(running, "a burst of SIGHUPs killed the daemon");
    d.check(d.pid() == pid, "the pid changed");
    d.check(
        d.wait_for(REACT, settled),
        "a reload was still under way after the quiet time",
    );
    let reloads = count(&d, "PortSentry is restarting");
    eprintln!("{test}: 100 SIGHUPs 1 ms apart gave {reloads} reload(s)");
    d.check(
        (1..=3).contains(&reloads),
        format!("{reloads} reloads for one burst"),
    );

    // Traps and bans are intact: the old ban holds, and a new scanner is banned.
    d.check(
        table_text(&def.ns).contains("portsentry ban"),
        "trap rules missing after the burst",
    );
    d.check(
        ban_of(&def.ns, ip1).is_some(),
        "the ban was lost in the burst",
    );
    d.check(
        !can_connect(&first.ns, def.addr(false), OPEN, Duration::from_secs(2)),
        "the banned source can connect after the burst",
    );
    let ip2 = second.addr(false);
    nmap(second, &["-sS", "-p", "23"], def.addr(false));
    d.check(
        d.wait_for_line(&alert_prefix(SYN, ip2, "TCP"), REACT),
        "no alert after the burst",
    );
    d.check(
        wait_banned(&def.ns, ip2, REACT).is_some(),
        "a new scanner was not banned after the burst",
    );
}

/// SIGHUPs that never pause for longer than the settle time force a reload after at
/// most 2 s, so the later ones land in the re-exec window, before the new image has its
/// handlers: they must wait, blocked, and never meet the default action.
#[test]
fn issue_8_sighups_during_the_reexec_window_never_kill() {
    let test = "issue_8_sighups_during_the_reexec_window_never_kill";
    let Some(lab) = common::lab_or_skip(test, common::SCAN_TOOLS, &["first"]) else {
        return;
    };
    let (def, first) = (&lab.defender, lab.peer("first"));
    let conf = Conf::bans_only().set("TCP_PORTS", "23");
    let mut d = lab.daemon(&conf, &["-stcp"]);
    let pid = d.pid();
    let ip1 = first.addr(false);
    nmap(first, &["-sS", "-p", "23"], def.addr(false));
    d.check(
        wait_banned(&def.ns, ip1, REACT).is_some(),
        "the source was not banned",
    );
    // 4 s of SIGHUPs 1 ms apart (bounded count), checking that the daemon lives.
    let start = std::time::Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_secs(4) && sent < 10_000 {
        d.signal(libc::SIGHUP);
        sent += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    let alive = d.wait_for(REACT, |lines| {
        let restarts = lines
            .iter()
            .filter(|l| l.contains("PortSentry is restarting"))
            .count();
        let active = lines
            .iter()
            .filter(|l| l.contains("PortSentry is now active and listening."))
            .count();
        restarts >= 2 && active == restarts + 1
    });
    std::thread::sleep(QUIET);
    let running = d.is_running();
    d.check(running, format!("{sent} SIGHUPs killed the daemon"));
    d.check(alive, "the daemon did not come back after the stream");
    d.check(d.pid() == pid, "the pid changed");
    let reloads = count(&d, "PortSentry is restarting");
    eprintln!("{test}: {sent} SIGHUPs over 4 s gave {reloads} reloads");
    d.check(
        ban_of(&def.ns, ip1).is_some() && table_text(&def.ns).contains("portsentry ban"),
        "traps or ban lost in the stream",
    );
}

/// A SIGTERM sent while a reload is under way (the old image ending, the exec, the new
/// image starting) is never lost: the daemon stops cleanly, exit status 0.
#[test]
fn issue_8_sigterm_during_a_reload_stops_cleanly() {
    let test = "issue_8_sigterm_during_a_reload_stops_cleanly";
    let Some(lab) = common::lab_or_skip(test, common::SCAN_TOOLS, &[]) else {
        return;
    };
    let conf = Conf::bans_only().set("TCP_PORTS", "23");
    // The reload starts 250 ms after the SIGHUP (the settle time): SIGTERMs from just
    // before that to well after it land in each part of the reload.
    for delay_ms in (230..=330).step_by(4) {
        let mut d = lab.daemon(&conf, &["-stcp"]);
        d.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let status = d.stop();
        d.check(
            status.is_some_and(|s| s.success()),
            format!("SIGTERM {delay_ms} ms after the SIGHUP: exit {status:?}"),
        );
        d.check(
            d.has_line("adminalert: PortSentry is shutting down"),
            format!("SIGTERM {delay_ms} ms after the SIGHUP: no clean stop"),
        );
    }
}

#[test]
fn issue_8_sigusr1_reopens_the_history_file_after_a_rotation() {
    let test = "issue_8_sigusr1_reopens_the_history_file_after_a_rotation";
    let Some(lab) = common::lab_or_skip(test, common::SCAN_TOOLS, &["first", "second"]) else {
        return;
    };
    let (def, first, second) = (&lab.defender, lab.peer("first"), lab.peer("second"));
    let conf = Conf::bans_only().set("TCP_PORTS", "23");
    let mut d = lab.daemon(&conf, &["-stcp"]);
    let pid = d.pid();
    let history = conf.history_path();
    let rotated = history.with_file_name("portsentry.history.1");
    let (ip1, ip2) = (first.addr(false), second.addr(false));

    nmap(first, &["-sS", "-p", "23"], def.addr(false));
    d.check(
        wait_file_line(&history, REACT, |l| l.contains(&format!("/{ip1} "))),
        "no history line for the first source",
    );
    std::fs::set_permissions(&history, std::fs::Permissions::from_mode(0o640)).unwrap();

    // logrotate without `create`: mv, then the postrotate signal.
    std::fs::rename(&history, &rotated).unwrap();
    let before = std::fs::read_to_string(&rotated).unwrap();
    d.signal(libc::SIGUSR1);
    d.check(
        d.wait_for_line("record files reopened on SIGUSR1", REACT),
        "no line about the reopened files",
    );
    let running = d.is_running();
    d.check(running, "SIGUSR1 killed the daemon");
    d.check(d.pid() == pid, "the pid changed");
    d.check(history.exists(), "no new history file after SIGUSR1");

    nmap(second, &["-sS", "-p", "23"], def.addr(false));
    d.check(
        wait_file_line(&history, REACT, |l| l.contains(&format!("/{ip2} "))),
        "the new ban's line is not in the new history file",
    );
    let new = history_of(&history, ip2);
    d.check(
        new.len() == 1 && new[0].port == 23 && new[0].proto == "TCP",
        format!("new history: {:?}", Conf::read(&history)),
    );
    d.check(
        history_of(&history, ip1).is_empty(),
        "the old line was written again to the new file",
    );
    d.check(
        std::fs::read_to_string(&rotated).unwrap() == before,
        "the rotated file changed after SIGUSR1",
    );
    d.check(
        history_of(&rotated, ip1).len() == 1,
        "the rotated file lost its line",
    );
    let mode = std::fs::metadata(&history).unwrap().permissions().mode() & 0o7777;
    d.check(mode == 0o640, format!("new history mode {mode:o}, not 640"));
}
