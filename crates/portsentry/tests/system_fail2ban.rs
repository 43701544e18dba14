//! Issue 8 acceptance: fail2ban keeps matching. The stock filters are checked with
//! `fail2ban-regex` from Debian's fail2ban package (unpacked by `.ci/run` with
//! `apt-get download` + `dpkg -x`, never installed or run as a service) against the
//! files our daemon really wrote after a real scan: Debian's 1.2 filter
//! (`filter.d/portsentry.conf`) on the 1.2-format history file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::checks::{REACT, nmap};
use common::daemon::wait_file_line;
use common::{Conf, loud};

/// Debian's fail2ban package unpacked by `.ci/run` (`$PORTSENTRY_DEB_ROOT/fail2ban`).
fn fail2ban_root() -> PathBuf {
    common::deb_root("fail2ban")
}

/// `fail2ban-regex LOG FILTER`; returns (matched, missed) from its summary line.
pub fn fail2ban_regex(root: &Path, log: &Path, filter: &Path) -> (u64, u64, String) {
    let out = Command::new("python3")
        .arg(root.join("usr/bin/fail2ban-regex"))
        .arg(log)
        .arg(filter)
        .env("PYTHONPATH", root.join("usr/lib/python3/dist-packages"))
        .output()
        .expect("run fail2ban-regex");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let summary = text
        .lines()
        .find(|l| l.starts_with("Lines:"))
        .unwrap_or_else(|| {
            panic!(
                "no summary from fail2ban-regex:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let num_before = |word: &str| -> u64 {
        summary
            .split(',')
            .find(|p| p.trim().ends_with(word))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no '{word}' in {summary}"))
    };
    (num_before("matched"), num_before("missed"), text)
}

/// The unpacked package, or a loud skip (a failure under CI, which must unpack it).
pub fn fail2ban_or_skip(test: &str) -> Option<PathBuf> {
    let root = fail2ban_root();
    if root.join("usr/bin/fail2ban-regex").exists() {
        return Some(root);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{test}: Debian's fail2ban is not unpacked at {}",
            root.display()
        );
    }
    loud(&format!(
        "skipped: Debian's fail2ban not unpacked at {} (.ci/run does it) ({test})",
        root.display()
    ));
    None
}

#[test]
fn issue_8_debians_fail2ban_filter_matches_our_history_file() {
    let test = "issue_8_debians_fail2ban_filter_matches_our_history_file";
    let Some(root) = fail2ban_or_skip(test) else {
        return;
    };
    let Some(lab) = common::lab_or_skip(test, &["nmap", "nft"], &["v4", "v6"]) else {
        return;
    };
    let conf = Conf::bans_only();
    let d = lab.daemon(&conf, &["-atcp", "-audp"]);
    let target = lab.defender.addr(false);
    nmap(lab.peer("v4"), &["-sS", "-p", "1-50"], target);
    nmap(
        lab.peer("v6"),
        &["-sS", "-p", "1-50"],
        lab.defender.addr(true),
    );
    let history = conf.history_path();
    let v6 = lab.peer("v6").addr(true).to_string();
    d.check(
        wait_file_line(&history, REACT, |l| l.contains(&v6)),
        "no history line for the IPv6 scanner",
    );
    let filter = root.join("etc/fail2ban/filter.d/portsentry.conf");
    let (matched, missed, text) = fail2ban_regex(&root, &history, &filter);
    let lines = Conf::read(&history).lines().count() as u64;
    assert!(lines >= 2, "history:\n{}", Conf::read(&history));
    assert_eq!(
        (matched, missed),
        (lines, 0),
        "Debian's fail2ban filter missed history lines:\n{}\n{text}",
        Conf::read(&history)
    );
}

/// PortSentry 2.x's own fail2ban filter (`fail2ban/portsentry.conf` in its sources),
/// written out as its repository ships it.
const FILTER_2X: &str = "[Definition]\nfailregex = ^[^ ]* Scan from: \\[<HOST>\\]\n";

#[test]
fn issue_8_a_2x_command_line_blocks_and_2x_fail2ban_filter_matches() {
    let test = "issue_8_a_2x_command_line_blocks_and_2x_fail2ban_filter_matches";
    let Some(root) = fail2ban_or_skip(test) else {
        return;
    };
    let Some(lab) = common::lab_or_skip(test, &["nmap", "nft"], &["scanner"]) else {
        return;
    };
    let def = &lab.defender;
    let conf = Conf::bans_only();
    let d = conf.dir.path();
    // A 2.x configuration in 2.x's own syntax (spaces around `=`, ranges), as its
    // examples/portsentry.conf has it.
    let conf_text = format!(
        "TCP_PORTS = \"1,7,9,11,13,15,17,19,20,21,70,79,111,113,119,389,512-515,540,543-544,873,989,990,992,1080\"\n\
         UDP_PORTS = \"7,9,13,19,111,389,513,517-518\"\n\
         IGNORE_FILE = \"{0}/portsentry.ignore\"\n\
         HISTORY_FILE = \"{0}/portsentry.log\"\n\
         BLOCKED_FILE = \"{0}/portsentry.blocked\"\n\
         BLOCK_TCP = \"1\"\nBLOCK_UDP = \"1\"\nSCAN_TRIGGER = \"0\"\n",
        d.display()
    );
    // The harness's files first (settings, ignore file), then the 2.x conf over its
    // 1.2 one.
    let conf_path = conf.write();
    std::fs::write(&conf_path, conf_text).unwrap();
    std::fs::write(d.join("portsentry.ignore"), "127.0.0.1/32\n").unwrap();
    let mut daemon = common::Daemon::start_flags(
        &def.ns,
        &conf,
        &conf_path,
        &["--stealth", "-i", "eth0", "-l", "stdout"],
    );
    daemon.wait_ready();
    // -i eth0: only eth0's probes are trapped (the lab's only interface besides lo).
    let chain = common::kernel::input_chain(&def.ns);
    daemon.check(
        chain.contains("iifname != \"eth0\" return"),
        format!("-i eth0 is not in the traps:\n{chain}"),
    );
    let scanner = lab.peer("scanner");
    let ip = scanner.addr(false);
    nmap(scanner, &["-sS", "-p", "1-120"], def.addr(false));
    let scan_line = format!("Scan from: [{ip}] ({ip}) protocol: [TCP] port: [");
    daemon.check(
        daemon.wait_for_line(&scan_line, REACT),
        "no 2.x scan line on stdout",
    );
    daemon.check(
        common::kernel::wait_banned(&def.ns, ip, REACT).is_some(),
        "the 2.x command line did not block the scanner",
    );
    let history = d.join("portsentry.log");
    daemon.check(
        wait_file_line(&history, REACT, |l| l.contains(&scan_line)),
        "no 2.x history line",
    );
    let filter = d.join("portsentry-2x-filter.conf");
    std::fs::write(&filter, FILTER_2X).unwrap();
    let (matched, missed, text) = fail2ban_regex(&root, &history, &filter);
    let lines = Conf::read(&history).lines().count() as u64;
    assert_eq!(
        (matched, missed),
        (lines, 0),
        "2.x's fail2ban filter on our 2.x history:\n{}\n{text}",
        Conf::read(&history)
    );
    daemon.stop();
}

/// Issue 9: the package's own filter (`dist/fail2ban/portsentry-verified.filter.conf`,
/// installed as `filter.d/portsentry-verified.conf`, a name Debian's fail2ban does not
/// use) matches the history lines of proven scanners only: `[verified]` and
/// `[manual]`, never `[unverified]` (one packet, any source address). The lines are
/// made by the daemon's own formatter, `records::blocked_line`.
#[test]
fn issue_9_package_fail2ban_filter_matches_only_proven_scanners() {
    use portsentry_engine::{Evidence, Proto};
    let test = "issue_9_package_fail2ban_filter_matches_only_proven_scanners";
    let Some(root) = fail2ban_or_skip(test) else {
        return;
    };
    let now = chrono::Local::now();
    let line = |ip: &str, port, proto, evidence| {
        portsentry::records::blocked_line(&now, ip, ip.parse().unwrap(), port, proto, evidence)
    };
    let history: String = [
        line("198.18.0.2", 23, Proto::Tcp, Evidence::Unverified),
        line("198.18.0.3", 2323, Proto::Tcp, Evidence::Verified),
        line("fd00:5e17::4", 0, Proto::Tcp, Evidence::Manual),
        line("198.18.0.5", 161, Proto::Udp, Evidence::Unverified),
        line("fd00:5e17::6", 1080, Proto::Tcp, Evidence::Verified),
    ]
    .concat();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("portsentry.history");
    std::fs::write(&log, &history).unwrap();
    let filter = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../dist/fail2ban/portsentry-verified.filter.conf");
    let (matched, missed, text) = fail2ban_regex(&root, &log, &filter);
    assert_eq!(
        (matched, missed),
        (3, 2),
        "the package's filter on:\n{history}\n{text}"
    );
    // And which: the two it missed are the unverified ones.
    let out = Command::new("python3")
        .arg(root.join("usr/bin/fail2ban-regex"))
        .arg("--print-all-missed")
        .arg(&log)
        .arg(&filter)
        .env("PYTHONPATH", root.join("usr/lib/python3/dist-packages"))
        .output()
        .expect("run fail2ban-regex");
    let text = String::from_utf8_lossy(&out.stdout);
    let missed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" - ") && l.contains(" Host: "))
        .collect();
    assert_eq!(missed.len(), 2, "missed lines:\n{text}");
    assert!(
        missed.iter().all(|l| l.contains("[unverified]")),
        "a proven scanner's line was missed:\n{text}"
    );
}

/// Issue 9: the package's jail (`dist/fail2ban/portsentry-verified.jail.conf`), once
/// enabled, loads in Debian's fail2ban with the package's filter: `fail2ban-client
/// --test` on a copy of the unpacked package's configuration (no server is started).
#[test]
fn issue_9_package_fail2ban_jail_loads_with_its_filter() {
    let test = "issue_9_package_fail2ban_jail_loads_with_its_filter";
    let Some(root) = fail2ban_or_skip(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("fail2ban");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(root.join("etc/fail2ban"))
        .arg(&conf)
        .status()
        .unwrap();
    assert!(cp.success());
    // Only our jail: Debian's defaults enable sshd, whose log may not exist here.
    let _ = std::fs::remove_file(conf.join("jail.d/defaults-debian.conf"));
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/fail2ban");
    std::fs::copy(
        dist.join("portsentry-verified.filter.conf"),
        conf.join("filter.d/portsentry-verified.conf"),
    )
    .unwrap();
    let log = dir.path().join("portsentry.history");
    std::fs::write(&log, "").unwrap();
    let jail = std::fs::read_to_string(dist.join("portsentry-verified.jail.conf")).unwrap();
    assert!(
        jail.contains("\nenabled  = false\n"),
        "the jail must ship disabled"
    );
    let jail = jail
        .replace("\nenabled  = false\n", "\nenabled  = true\n")
        .replace(
            "/var/lib/portsentry/portsentry.history",
            log.to_str().unwrap(),
        );
    std::fs::write(conf.join("jail.d/portsentry-verified.conf"), jail).unwrap();
    let client = |arg: &str| {
        Command::new("python3")
            .arg(root.join("usr/bin/fail2ban-client"))
            .arg("-c")
            .arg(&conf)
            .arg(arg)
            .env("PYTHONPATH", root.join("usr/lib/python3/dist-packages"))
            .output()
            .expect("run fail2ban-client")
    };
    let out = client("--test");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("OK: configuration test is successful"),
        "fail2ban-client --test:\n{text}"
    );
    let dump = String::from_utf8_lossy(&client("-d").stdout).into_owned();
    assert!(
        dump.contains("['add', 'portsentry-verified'")
            && dump
                .contains("'portsentry-verified', 'addfailregex', '\\\\[(?:verified|manual)\\\\]"),
        "the jail or its filter is not loaded:\n{dump}"
    );
}
