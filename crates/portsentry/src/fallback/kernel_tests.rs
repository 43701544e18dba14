//! The backends against the real kernel, `ipset` and `iptables`. Network safety
//! (TESTING.md): each test runs on a thread of its own that first moves into a fresh
//! network namespace (`unshare(CLONE_NEWNET)` affects only that thread; netlink sockets
//! it opens and processes it spawns afterwards live in the new namespace) and, before
//! any firewall or route call, asserts that its namespace differs from the one it had
//! and from the process's, and that a spawned child reports the thread's namespace.
//! Traffic only flows over a veth pair to a second namespace the test creates and
//! deletes (Drop guard), with 198.18.0.0/15 and fd00:5e17::/64 addresses.
//! Not root: `skipped: needs root` on stderr. `ipset` missing: the ipset tests fail when
//! `CI` is set and say `skipped` loudly otherwise.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::*;

/// Runs `body` on a new thread inside a new network namespace.
fn in_netns(test: &str, body: impl FnOnce() + Send + 'static) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("\n*** skipped: needs root ({test}) ***\n");
        return;
    }
    let test = test.to_string();
    let handle = std::thread::spawn(move || {
        let netns = || std::fs::read_link("/proc/thread-self/ns/net").expect("own netns");
        let before = netns();
        // SAFETY: unshare(CLONE_NEWNET) changes only the calling thread's namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EPERM) {
                eprintln!("\n*** skipped: needs root (unshare: {e}) ({test}) ***\n");
                return;
            }
            panic!("unshare(CLONE_NEWNET): {e}");
        }
        let own = netns();
        assert_ne!(
            own, before,
            "unshare did not give this thread a new namespace"
        );
        let main = std::fs::read_link("/proc/self/ns/net").expect("main thread netns");
        assert_ne!(
            own, main,
            "refusing to touch the firewall of the test process's namespace"
        );
        // PID 1's namespace may be unreadable here (ptrace rules in containers); the
        // comparisons above already prove that this namespace is a fresh one.
        if let Ok(init) = std::fs::read_link("/proc/1/ns/net") {
            assert_ne!(own, init, "refusing to touch PID 1's namespace");
        }
        let child = sh(&["readlink", "/proc/self/ns/net"]);
        assert_eq!(
            child.trim(),
            own.to_str().expect("netns link is text"),
            "a spawned command is not in the test namespace"
        );
        sh(&["ip", "link", "set", "lo", "up"]);
        body();
    });
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Runs a command that must succeed; returns its stdout.
fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that may fail; whether it succeeded.
fn try_sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `ipset` is installed; under CI (env `CI` set) its absence fails the test.
/// Called inside the test namespace (`ipset --version` asks the kernel too).
fn ipset_installed(test: &str) -> bool {
    if try_sh(&["ipset", "--version"]) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "ipset is not installed but CI is set: .ci/run must `apt-get install -y ipset` ({test})"
    );
    eprintln!(
        "\n*** skipped: ipset is not installed ({test}); `apt-get install -y ipset` to run it ***\n"
    );
    false
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sorted(mut v: Vec<IpAddr>) -> Vec<IpAddr> {
    v.sort();
    v
}

/// The common life of a backend: prepare twice, add v4 (timed) and v6 (permanent),
/// re-add, list, remove true then false, add again, teardown twice, nothing left.
fn lifecycle(b: &mut dyn BanBackend) {
    let (v4, v6) = (ip("198.18.0.2"), ip("fd00:5e17::2"));
    b.prepare().unwrap();
    b.prepare().unwrap();
    assert!(b.list().unwrap().is_empty(), "{} starts empty", b.name());

    b.add(v4, Some(Duration::from_secs(600))).unwrap();
    b.add(v6, None).unwrap();
    b.add(v4, Some(Duration::from_secs(600))).unwrap(); // already there: fine
    b.add(ip("::ffff:198.18.0.2"), None).unwrap(); // the same host, mapped
    assert_eq!(sorted(b.list().unwrap()), vec![v4, v6]);

    assert!(b.remove(v4).unwrap());
    assert!(!b.remove(v4).unwrap());
    assert_eq!(b.list().unwrap(), vec![v6]);
    assert!(b.remove(v6).unwrap());
    assert!(!b.remove(v6).unwrap());
    assert!(b.list().unwrap().is_empty());
    assert!(matches!(
        b.add(ip("0.0.0.0"), None),
        Err(FallbackError::InvalidAddress(_))
    ));

    b.add(v4, None).unwrap();
    b.add(v6, Some(Duration::from_secs(60))).unwrap();
    b.add_many(&[(ip("198.18.0.3"), None), (ip("fd00:5e17::3"), None)])
        .unwrap();
    assert_eq!(b.list().unwrap().len(), 4);
    b.teardown().unwrap();
    assert!(b.list().unwrap().is_empty(), "{} left bans", b.name());
    b.teardown().unwrap();
}

// ---------------------------------------------------------------- route

#[test]
fn route_backend_lifecycle_keeps_foreign_routes() {
    in_netns("route_backend_lifecycle_keeps_foreign_routes", || {
        // Foreign routes, some of them close to ours.
        let foreign_v4 = [
            "route add blackhole 198.18.9.9",
            "route add blackhole 198.18.10.0/24 proto 94",
            "route add blackhole 198.18.11.1 proto 94 table 100",
            "route add unreachable 198.18.0.2 metric 5",
        ];
        let foreign_v6 = [
            "-6 route add blackhole fd00:5e17::9:9",
            "-6 route add prohibit fd00:5e17::2 metric 2000",
        ];
        for cmd in foreign_v4.iter().chain(&foreign_v6) {
            sh(&["sh", "-c", &format!("ip {cmd}")]);
        }
        let snapshot = || {
            let v4 = sh(&["ip", "-4", "route", "show", "table", "all"]);
            let v6 = sh(&["ip", "-6", "route", "show", "table", "all"]);
            format!("{v4}{v6}")
        };
        let before = snapshot();

        let mut b = RouteBackend::new(RouteKind::Blackhole).unwrap();
        assert_eq!(b.name(), "route");
        assert!(!b.expires_by_itself());

        // The kernel's own view, through iproute2.
        b.add(ip("198.18.0.2"), None).unwrap();
        b.add(ip("fd00:5e17::2"), None).unwrap();
        let shown = sh(&["ip", "-4", "route", "show", "proto", "94"]);
        assert!(shown.contains("blackhole 198.18.0.2 "), "{shown}");
        let shown = sh(&["ip", "-6", "route", "show", "proto", "94"]);
        assert!(
            shown.contains("blackhole fd00:5e17::2 dev lo metric 1 "),
            "{shown}"
        );
        b.teardown().unwrap();

        lifecycle(&mut b);
        assert_eq!(snapshot(), before, "foreign routes changed");
    });
}

#[test]
fn route_kind_is_configurable_and_foreign_routes_at_our_metric_are_refused() {
    in_netns(
        "route_kind_is_configurable_and_foreign_routes_at_our_metric_are_refused",
        || {
            let mut unreach = RouteBackend::new(RouteKind::Unreachable).unwrap();
            unreach.add(ip("198.18.0.4"), None).unwrap();
            unreach.add(ip("fd00:5e17::4"), None).unwrap();
            let mut prohibit = RouteBackend::new(RouteKind::Prohibit).unwrap();
            prohibit.add(ip("198.18.0.5"), None).unwrap();
            let shown = sh(&["ip", "route", "show", "proto", "94"]);
            assert!(shown.contains("unreachable 198.18.0.4"), "{shown}");
            assert!(shown.contains("prohibit 198.18.0.5"), "{shown}");
            assert!(
                sh(&["ip", "-6", "route", "show", "proto", "94"])
                    .contains("unreachable fd00:5e17::4")
            );
            // Ours whatever the kind: a re-add with another kind is "already banned",
            // and any of our backends lists and removes them.
            prohibit.add(ip("198.18.0.4"), None).unwrap();
            let mut bh = RouteBackend::new(RouteKind::Blackhole).unwrap();
            assert_eq!(
                sorted(bh.list().unwrap()),
                vec![ip("198.18.0.4"), ip("198.18.0.5"), ip("fd00:5e17::4")]
            );

            // A foreign host route at our metric: refused, left alone.
            sh(&["ip", "route", "add", "unreachable", "198.18.9.20"]);
            sh(&[
                "ip",
                "-6",
                "route",
                "add",
                "blackhole",
                "fd00:5e17::9:20",
                "metric",
                "1",
            ]);
            for addr in ["198.18.9.20", "fd00:5e17::9:20"] {
                match bh.add(ip(addr), None) {
                    Err(FallbackError::ForeignRoute { addr: a }) => assert_eq!(a, ip(addr)),
                    other => panic!("{addr}: {other:?}"),
                }
                assert!(!bh.remove(ip(addr)).unwrap(), "removed a foreign route");
            }
            assert!(sh(&["ip", "route", "show", "198.18.9.20"]).contains("unreachable"));
            assert!(sh(&["ip", "-6", "route", "show", "fd00:5e17::9:20"]).contains("blackhole"));

            bh.teardown().unwrap();
            assert!(
                sh(&["ip", "route", "show", "proto", "94"]).is_empty()
                    && sh(&["ip", "-6", "route", "show", "proto", "94"]).is_empty()
            );
        },
    );
}

// ---------------------------------------------------------------- ipset

fn match_set_rules(v6: bool, set: &str) -> usize {
    let tool = if v6 { "ip6tables" } else { "iptables" };
    let want = format!("-A INPUT -m set --match-set {set} src -j DROP");
    sh(&[tool, "-S", "INPUT"])
        .lines()
        .filter(|l| l.trim() == want)
        .count()
}

fn set_names() -> HashSet<String> {
    sh(&["ipset", "list", "-n"])
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn ipset_backend_lifecycle_keeps_foreign_sets_and_rules() {
    in_netns(
        "ipset_backend_lifecycle_keeps_foreign_sets_and_rules",
        || {
            if !ipset_installed("ipset_backend_lifecycle_keeps_foreign_sets_and_rules") {
                return;
            }
            assert!(set_names().is_empty(), "a fresh namespace has no sets");
            sh(&["ipset", "create", "other4", "hash:ip"]);
            sh(&["ipset", "add", "other4", "198.18.9.9"]);
            sh(&[
                "iptables",
                "-I",
                "INPUT",
                "-m",
                "set",
                "--match-set",
                "other4",
                "src",
                "-j",
                "DROP",
            ]);
            sh(&["iptables", "-A", "INPUT", "-s", "198.18.9.8", "-j", "DROP"]);
            sh(&[
                "ip6tables",
                "-A",
                "INPUT",
                "-s",
                "fd00:5e17::9:8",
                "-j",
                "DROP",
            ]);
            let rules = || {
                format!(
                    "{}{}",
                    sh(&["iptables", "-S", "INPUT"]),
                    sh(&["ip6tables", "-S", "INPUT"])
                )
            };
            let rules_before = rules();

            let mut b = IpsetBackend::new();
            assert_eq!(b.name(), "ipset");
            assert!(b.expires_by_itself());
            b.prepare().unwrap();
            b.prepare().unwrap();
            assert_eq!(match_set_rules(false, SET4), 1, "{}", rules());
            assert_eq!(match_set_rules(true, SET6), 1, "{}", rules());
            let created = sh(&["ipset", "list", SET4, "-o", "save"]);
            assert!(
                created.contains("family inet ") && created.contains("maxelem 1048576 timeout 0"),
                "{created}"
            );
            let created = sh(&["ipset", "list", SET6, "-o", "save"]);
            assert!(created.contains("family inet6 "), "{created}");

            lifecycle(&mut b);

            assert_eq!(
                set_names(),
                HashSet::from(["other4".to_string()]),
                "teardown left our sets or took a foreign one"
            );
            assert_eq!(rules(), rules_before, "foreign rules changed");
            assert!(sh(&["ipset", "list", "other4"]).contains("198.18.9.9"));
        },
    );
}

#[test]
fn ipset_timeouts_permanent_bans_and_batch_restore() {
    in_netns("ipset_timeouts_permanent_bans_and_batch_restore", || {
        if !ipset_installed("ipset_timeouts_permanent_bans_and_batch_restore") {
            return;
        }
        let mut b = IpsetBackend::new();
        b.prepare().unwrap();
        let timeout_of = |b: &mut IpsetBackend, addr: &str| -> Option<Option<Duration>> {
            b.entries()
                .unwrap()
                .into_iter()
                .find(|(a, _)| *a == ip(addr))
                .map(|(_, t)| t)
        };
        let a = "198.18.0.2";
        b.add(ip(a), Some(Duration::from_secs(600))).unwrap();
        let t = timeout_of(&mut b, a).unwrap().expect("timed");
        assert!(
            t <= Duration::from_secs(600) && t >= Duration::from_secs(590),
            "{t:?}"
        );
        // Re-adds set the timeout: permanent, then timed again, then clamped.
        b.add(ip(a), None).unwrap();
        assert_eq!(timeout_of(&mut b, a), Some(None));
        b.add(ip(a), Some(Duration::from_secs(30))).unwrap();
        let t = timeout_of(&mut b, a).unwrap().expect("timed again");
        assert!(t <= Duration::from_secs(30), "{t:?}");
        b.add(ip(a), Some(Duration::from_secs(100 * 86_400)))
            .unwrap();
        let t = timeout_of(&mut b, a).unwrap().expect("clamped");
        assert!(
            t <= Duration::from_secs(IPSET_MAX_TIMEOUT)
                && t >= Duration::from_secs(IPSET_MAX_TIMEOUT - 10),
            "{t:?}"
        );
        // A zero timeout is the shortest ban, not a permanent one.
        b.add(ip("198.18.0.3"), Some(Duration::ZERO)).unwrap();
        assert_ne!(timeout_of(&mut b, "198.18.0.3"), Some(None));

        // 2000 bans in one `ipset restore`, v4 and v6, timed and permanent.
        let mut many = Vec::new();
        for i in 0..1000u32 {
            let v4 = IpAddr::from([198, 19, (i >> 8) as u8, i as u8]);
            let v6: IpAddr = format!("fd00:5e17::1:{i:x}").parse().unwrap();
            let t = (i % 2 == 0).then(|| Duration::from_secs(3600));
            many.push((v4, t));
            many.push((v6, t));
        }
        b.add_many(&many).unwrap();
        let entries = b.entries().unwrap();
        for (addr, t) in &many {
            let got = entries
                .iter()
                .find(|(a, _)| a == addr)
                .unwrap_or_else(|| panic!("{addr} not restored"));
            assert_eq!(got.1.is_some(), t.is_some(), "{addr}");
        }
        match b.add_many(&[(ip("198.18.0.9"), None), (ip("::"), None)]) {
            Err(FallbackError::InvalidAddress(_)) => {}
            other => panic!("{other:?}"),
        }
        b.teardown().unwrap();
        assert!(set_names().is_empty());
        assert_eq!(match_set_rules(false, SET4), 0);
        assert_eq!(match_set_rules(true, SET6), 0);
        // Listing and removing without the sets: nothing there, not an error.
        assert!(b.list().unwrap().is_empty());
        assert!(!b.remove(ip(a)).unwrap());
    });
}

// ---------------------------------------------------------------- iptables

#[test]
fn iptables_backend_lifecycle_keeps_foreign_rules() {
    in_netns("iptables_backend_lifecycle_keeps_foreign_rules", || {
        for rule in [
            "iptables -I INPUT -s 198.18.0.2 -j DROP",
            "iptables -I INPUT -s 198.18.9.8 -j DROP -m comment --comment other",
            "iptables -I INPUT -s 198.18.9.7 -j ACCEPT -m comment --comment portsentry",
            "iptables -I INPUT -s 198.18.9.0/24 -j DROP -m comment --comment portsentry",
            "ip6tables -I INPUT -s fd00:5e17::2 -p tcp -j DROP -m comment --comment portsentry",
        ] {
            sh(&["sh", "-c", rule]);
        }
        let rules = || {
            format!(
                "{}{}",
                sh(&["iptables", "-S", "INPUT"]),
                sh(&["ip6tables", "-S", "INPUT"])
            )
        };
        let before = rules();
        let mut b = IptablesBackend::new();
        assert_eq!(b.name(), "iptables");
        assert!(!b.expires_by_itself());

        b.add(ip("198.18.0.2"), None).unwrap();
        b.add(ip("198.18.0.2"), None).unwrap();
        let ours = "-A INPUT -s 198.18.0.2/32 -m comment --comment portsentry -j DROP";
        let count = |text: &str| text.lines().filter(|l| l.trim() == ours).count();
        assert_eq!(count(&rules()), 1, "add inserted a duplicate");
        // A duplicate from elsewhere (older run): listed once, removed with the other.
        sh(&[
            "iptables",
            "-I",
            "INPUT",
            "-s",
            "198.18.0.2",
            "-j",
            "DROP",
            "-m",
            "comment",
            "--comment",
            "portsentry",
        ]);
        assert_eq!(b.list().unwrap(), vec![ip("198.18.0.2")]);
        assert!(b.remove(ip("198.18.0.2")).unwrap());
        assert_eq!(count(&rules()), 0);
        assert_eq!(rules(), before);

        lifecycle(&mut b);
        assert_eq!(rules(), before, "foreign rules changed");
    });
}

// ---------------------------------------------------------------- detect

#[test]
fn detect_prefers_ipset_and_changes_nothing() {
    in_netns("detect_prefers_ipset_and_changes_nothing", || {
        let rules = || {
            format!(
                "{}{}",
                sh(&["iptables", "-S", "INPUT"]),
                sh(&["ip6tables", "-S", "INPUT"])
            )
        };
        let before = rules();
        let b = detect().expect("a backend");
        let want = if ipset_installed("detect_prefers_ipset_and_changes_nothing") {
            assert!(set_names().is_empty(), "detect created a set");
            "ipset"
        } else {
            "iptables"
        };
        assert_eq!(b.name(), want);
        assert_eq!(rules(), before, "detect changed the firewall");
        assert!(sh(&["ip", "route", "show", "proto", "94"]).is_empty());
    });
}

// ---------------------------------------------------------------- traffic

/// A second namespace joined to the test's by a veth pair; deleted on drop.
struct Peer {
    name: String,
}

static PEER_SEQ: AtomicU32 = AtomicU32::new(0);

impl Peer {
    /// Us: vfb0 198.18.0.1/24, fd00:5e17::1/64. Peer: vfb1 198.18.0.2 and .3,
    /// fd00:5e17::2 and ::3.
    fn new() -> Peer {
        let name = format!(
            "psfb{}x{}",
            std::process::id(),
            PEER_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &name]);
        let peer = Peer { name };
        let n = peer.name.as_str();
        sh(&[
            "ip", "link", "add", "vfb0", "type", "veth", "peer", "name", "vfb1", "netns", n,
        ]);
        sh(&["ip", "addr", "add", "198.18.0.1/24", "dev", "vfb0"]);
        sh(&[
            "ip",
            "-6",
            "addr",
            "add",
            "fd00:5e17::1/64",
            "dev",
            "vfb0",
            "nodad",
        ]);
        sh(&["ip", "link", "set", "vfb0", "up"]);
        for a in ["198.18.0.2/24", "198.18.0.3/24"] {
            sh(&["ip", "-n", n, "addr", "add", a, "dev", "vfb1"]);
        }
        for a in ["fd00:5e17::2/64", "fd00:5e17::3/64"] {
            sh(&[
                "ip", "-n", n, "-6", "addr", "add", a, "dev", "vfb1", "nodad",
            ]);
        }
        sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", n, "link", "set", "vfb1", "up"]);
        peer
    }

    /// TCP connect from `src` (in the peer) to `dst:port`, 1 s timeout.
    fn connect(&self, src: &str, dst: &str, port: u16) -> bool {
        try_sh(&[
            "ip",
            "netns",
            "exec",
            &self.name,
            "nc",
            "-z",
            "-w1",
            "-s",
            src,
            dst,
            &port.to_string(),
        ])
    }

    /// Like `connect`, but tries up to five times (the link may still be coming up).
    fn connect_eventually(&self, src: &str, dst: &str, port: u16) -> bool {
        (0..5).any(|_| self.connect(src, dst, port))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = try_sh(&["ip", "netns", "del", &self.name]);
    }
}

/// With `backend` prepared: the peer reaches a service, a ban cuts exactly the banned
/// sources off (v4 and v6), lifting it lets them in again.
fn ban_blocks_connect(mut b: Box<dyn BanBackend>) {
    let peer = Peer::new();
    let _l4 = TcpListener::bind("198.18.0.1:8080").unwrap();
    let _l6 = TcpListener::bind("[fd00:5e17::1]:8080").unwrap();
    b.prepare().unwrap();
    let pairs = [
        ("198.18.0.2", "198.18.0.1", "198.18.0.3"),
        ("fd00:5e17::2", "fd00:5e17::1", "fd00:5e17::3"),
    ];
    for (src, dst, other) in pairs {
        assert!(
            peer.connect_eventually(src, dst, 8080),
            "{src} cannot connect"
        );
        assert!(
            peer.connect_eventually(other, dst, 8080),
            "{other} cannot connect"
        );
    }
    for (src, _, _) in pairs {
        b.add(ip(src), Some(Duration::from_secs(600))).unwrap();
    }
    for (src, dst, other) in pairs {
        assert!(
            !peer.connect(src, dst, 8080),
            "{}: banned {src} still connects",
            b.name()
        );
        assert!(
            peer.connect(other, dst, 8080),
            "{}: unbanned {other} cut off",
            b.name()
        );
    }
    for (src, _, _) in pairs {
        assert!(b.remove(ip(src)).unwrap());
    }
    for (src, dst, _) in pairs {
        assert!(
            peer.connect(src, dst, 8080),
            "{}: {src} still blocked after remove",
            b.name()
        );
    }
    b.teardown().unwrap();
}

#[test]
fn route_ban_stops_tcp_connect_and_remove_lifts_it() {
    in_netns("route_ban_stops_tcp_connect_and_remove_lifts_it", || {
        ban_blocks_connect(Box::new(RouteBackend::new(RouteKind::Blackhole).unwrap()));
    });
}

#[test]
fn iptables_ban_stops_tcp_connect_and_remove_lifts_it() {
    in_netns("iptables_ban_stops_tcp_connect_and_remove_lifts_it", || {
        ban_blocks_connect(Box::new(IptablesBackend::new()));
    });
}

#[test]
fn ipset_ban_stops_tcp_connect_and_expires_by_itself() {
    in_netns("ipset_ban_stops_tcp_connect_and_expires_by_itself", || {
        if !ipset_installed("ipset_ban_stops_tcp_connect_and_expires_by_itself") {
            return;
        }
        ban_blocks_connect(Box::new(IpsetBackend::new()));

        // The kernel lifts a timed ban without the daemon.
        let peer = Peer::new();
        let _l4 = TcpListener::bind("198.18.0.1:8081").unwrap();
        let mut b = IpsetBackend::new();
        b.prepare().unwrap();
        assert!(peer.connect_eventually("198.18.0.2", "198.18.0.1", 8081));
        b.add(ip("198.18.0.2"), Some(Duration::from_secs(2)))
            .unwrap();
        assert!(!peer.connect("198.18.0.2", "198.18.0.1", 8081));
        let deadline = Instant::now() + Duration::from_secs(10);
        while b.list().unwrap().contains(&ip("198.18.0.2")) {
            assert!(Instant::now() < deadline, "the 2 s ban did not expire");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(peer.connect("198.18.0.2", "198.18.0.1", 8081));
        b.teardown().unwrap();
    });
}
