//! Acceptance tests for `portsentry replay` (issue 9, item 5): a capture made in a test
//! (tcpdump on the defender's interface while the real daemon runs) of `nmap -sS`,
//! `nmap -sU`, a benign client that also sends one stray SYN, and an `nmap -D` decoy
//! scan, replayed through the same settings, gives the decisions the daemon made
//! live: the same ban lines, scan alerts and "possibly forged" lines, the same banned
//! sources with the same evidence as the history file, and nothing for the client.
//! A truncated or corrupt capture is refused with where it stopped, and no panic.
//!
//! Real daemon, nftables, nmap, hping3 and tcpdump in the lab's namespaces (TESTING.md).

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use common::checks::{REACT, nmap};
use common::kernel::{self, wait_banned};
use common::{Conf, Daemon, HistoryLine, Lab, OPEN, can_connect, wait_until};

const MODES: &[&str] = &["-atcp", "-audp"];

/// The lines a replay must reproduce: scan alerts, ban lines, "possibly forged".
fn decision(line: &str) -> bool {
    line.contains(" scan from host: ")
        || line.contains("has been banned")
        || line.contains("Possibly forged")
        || line.contains("possibly forged")
}

fn replay_json(def_ns: &common::Netns, conf: &Conf, file: &str) -> serde_json::Value {
    let out = kernel::client(
        def_ns,
        conf,
        &["--atcp", "--audp", "replay", file, "--json"],
    );
    assert!(
        out.success(),
        "replay failed: {}\n{}",
        out.stderr,
        out.stdout
    );
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("replay --json is not JSON ({e}):\n{}", out.stdout))
}

#[test]
fn issue9_replay_of_a_capture_makes_the_decisions_the_daemon_made_live() {
    let test = "issue9_replay_of_a_capture_makes_the_decisions_the_daemon_made_live";
    if !common::root_or_skip(test, &["nmap", "nft", "tcpdump", "hping3"]) {
        return;
    }
    let lab = Lab::builder()
        .peer("scanner")
        .peer("udpscanner")
        .peer("client")
        .peer("decoyer")
        .open_service()
        .build();
    let def = &lab.defender;
    let target = def.addr(false);
    // A budget with room for every ban of this test, so that the comparison does not
    // hang on which microsecond a token came back (the budget itself is replayed and
    // unit-tested).
    let conf = kernel::kernel_conf().toml("[firewall]\nban_budget = 10\nban_budget_burst = 20\n");
    let capture = conf.path("capture.pcap").display().to_string();
    let mut tcpdump = def.ns.spawn(&[
        "tcpdump",
        "-i",
        "eth0",
        "-n",
        "-U",
        "-s",
        "256",
        "-w",
        &capture,
        "tcp or udp",
    ]);
    assert!(
        wait_until(REACT, Duration::from_millis(50), || {
            std::fs::metadata(&capture).is_ok_and(|m| m.len() >= 24)
        }),
        "tcpdump did not start writing {capture}"
    );
    // tcpdump has opened the socket once the header is written; a little more for the
    // filter to be attached.
    std::thread::sleep(Duration::from_millis(300));
    let mut d = Daemon::start(&def.ns, &conf, MODES);
    d.wait_ready();

    let (scanner, udpscanner, client, decoyer) = (
        lab.peer("scanner"),
        lab.peer("udpscanner"),
        lab.peer("client"),
        lab.peer("decoyer"),
    );
    // The benign client: a real connection with data from the defender (a known peer),
    // then one stray SYN to a trap port (what a forger in its name would send).
    assert!(
        can_connect(&client.ns, target, OPEN, Duration::from_secs(3)),
        "client cannot reach the open service"
    );
    assert!(
        wait_until(REACT, Duration::from_millis(100), || {
            !kernel::set_elems(&def.ns, "knownpeer4")
                .unwrap_or_default()
                .is_empty()
        }),
        "the client did not become a known peer"
    );
    client.ns.exec(
        &["hping3", "-S", "-p", "111", "-c", "1", &target.to_string()],
        Duration::from_secs(10),
    );
    nmap(scanner, &["-sS", "-p", "1-100"], target);
    nmap(udpscanner, &["-sU", "-p", "1-20"], target);
    let decoys: [IpAddr; 2] = [lab.v4(201).into(), lab.v4(202).into()];
    let list = format!("{},{},ME", decoys[0], decoys[1]);
    nmap(decoyer, &["-sS", "-D", &list, "-p", "20-25"], target);
    let banned_live = [
        scanner.addr(false),
        udpscanner.addr(false),
        decoyer.addr(false),
    ];
    for ip in banned_live.iter().chain(decoys.iter()) {
        d.check(
            wait_banned(&def.ns, *ip, REACT).is_some(),
            format!("live: {ip} was not banned"),
        );
    }
    d.check(
        d.wait_for(REACT, |lines| {
            lines.iter().any(|l| l.contains("ossibly forged"))
        }),
        "live: no possibly-forged line for the client's stray SYN",
    );
    // Let the last lines and the history be written, then stop the capture.
    std::thread::sleep(Duration::from_millis(500));
    tcpdump.stop();
    let live_lines: BTreeSet<String> = d
        .lines()
        .iter()
        .map(|l| common::daemon::message(l).to_string())
        .filter(|l| decision(l))
        .collect();
    let history = HistoryLine::parse_all(&Conf::read(&conf.history_path()));
    drop(d);

    let report = replay_json(&def.ns, &conf, &capture);
    let sources = report["sources"].as_object().expect("sources");
    let replay_lines: BTreeSet<String> = sources
        .values()
        .flat_map(|s| s["lines"].as_array().cloned().unwrap_or_default())
        .filter_map(|l| l["line"].as_str().map(str::to_string))
        .filter(|l| decision(l))
        .collect();
    assert_eq!(
        replay_lines, live_lines,
        "the replay's decisions differ from the live run's\nreport:\n{report:#}"
    );
    // The banned sources and their evidence, against the history file.
    let live_banned: BTreeSet<(String, String)> = history
        .iter()
        .map(|h| (h.ip.clone(), h.evidence.clone().unwrap_or_default()))
        .collect();
    let replay_banned: BTreeSet<(String, String)> = sources
        .iter()
        .flat_map(|(ip, s)| {
            s["bans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |b| (ip.clone(), b["evidence"].as_str().unwrap_or("").to_string()))
        })
        .collect();
    assert_eq!(
        replay_banned, live_banned,
        "banned sources differ\n{report:#}"
    );
    for ip in banned_live.iter().chain(decoys.iter()) {
        assert!(
            replay_banned.iter().any(|(a, _)| *a == ip.to_string()),
            "{ip} not banned in the replay"
        );
    }
    // The client: a known peer, never banned, and said why.
    let c = &sources[&client.addr(false).to_string()];
    assert!(c["bans"].as_array().is_some_and(|b| b.is_empty()), "{c:#}");
    assert_eq!(c["known_peer"], 1, "{c:#}");
    assert!(
        c["protected_by"]
            .as_str()
            .is_some_and(|w| w.contains("known peer")),
        "{c:#}"
    );
    // The scanner: banned by the kernel on its first probe, the rest dropped by its ban.
    let s = &sources[&scanner.addr(false).to_string()];
    assert_eq!(s["kernel_banned"], 1, "{s:#}");
    assert_eq!(s["alerted_at_probe"], 1, "{s:#}");
    assert!(s["dropped_banned"].as_u64().unwrap_or(0) > 50, "{s:#}");

    // The text report says the same in words.
    let out = kernel::client(&def.ns, &conf, &["--atcp", "--audp", "replay", &capture]);
    assert!(out.success(), "{}", out.stderr);
    eprintln!("{}", out.stdout);
    for ip in banned_live.iter().chain(decoys.iter()) {
        assert!(
            out.stdout.contains(&format!("{ip}: ")),
            "text report lacks {ip}:\n{}",
            out.stdout
        );
    }
    assert!(out.stdout.contains("banned at "), "{}", out.stdout);

    // A capture cut short: refused with where it stopped, exit 4, no panic.
    let bytes = std::fs::read(&capture).expect("capture");
    let cut = conf.path("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() - 7]).expect("write cut capture");
    let out = kernel::client(&def.ns, &conf, &["replay", &cut.display().to_string()]);
    assert_eq!(out.code(), Some(4), "{}", out.stderr);
    assert!(
        out.stderr.contains("truncated") && out.stderr.contains("at byte"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

/// Not a capture, or a capture whose record header lies about its length: exit 4 with
/// the byte where reading stopped; never a panic. Needs no root: nothing is captured.
#[test]
fn issue9_replay_refuses_a_corrupt_capture_and_says_where() {
    let conf = Conf::new();
    conf.write();
    let bin = env!("CARGO_BIN_EXE_portsentry");
    let run = |file: &std::path::Path| {
        std::process::Command::new(bin)
            .args(["-c", &conf.conf_path().display().to_string()])
            .args(["--settings", &conf.settings_path().display().to_string()])
            .args([
                "replay",
                &file.display().to_string(),
                "--local",
                "198.18.0.1",
            ])
            .output()
            .expect("run portsentry replay")
    };
    let text = conf.path("notes.txt");
    std::fs::write(&text, "this is not a capture\n").unwrap();
    let out = run(&text);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("not a pcap or pcapng"), "{stderr}");

    // A pcap header, then a record that claims 4 GiB.
    let mut bad = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
    bad.extend_from_slice(&2u16.to_le_bytes());
    bad.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, 65535, 1, 1, 0, u32::MAX, u32::MAX] {
        bad.extend_from_slice(&v.to_le_bytes());
    }
    bad.extend_from_slice(&[0u8; 64]);
    let corrupt = conf.path("corrupt.pcap");
    std::fs::write(&corrupt, &bad).unwrap();
    let out = run(&corrupt);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("at byte 24"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let missing = conf.path("missing.pcap");
    let out = run(&missing);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
}
