//! The backends against the real kernel, `ipset` and `iptables`. Network safety
//! (TESTING.md): each test runs in a private network namespace of its own
//! ([`crate::testns`], which checks the move before any firewall or route call and runs
//! every command with the namespace asserted). Traffic only flows over a veth pair to a
//! second namespace the test creates and deletes ([`Peer`]), with 198.18.0.0/15 and
//! fd00:5e17::/64 addresses. Not root: `skipped: needs root` on stderr, loudly. `ipset`
//! missing: the ipset tests fail when `CI` is set and say `skipped` loudly otherwise.

use std::collections::HashSet;
use std::net::{IpAddr, TcpListener};
use std::time::{Duration, Instant};

use super::*;
use crate::testns::{self, Netns, Peer, in_private_netns as in_netns};

/// Whether `ipset` is installed; under CI (env `CI` set) its absence fails the test.
/// Called inside the test namespace (`ipset --version` asks the kernel too).
fn ipset_installed(ns: &Netns, test: &str) -> bool {
    if ns.try_run(&["ipset", "--version"]) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "ipset is not installed but CI is set: .ci/run must `apt-get install -y ipset` ({test})"
    );
    testns::loud(&format!(
        "skipped: ipset is not installed ({test}); `apt-get install -y ipset` to run it"
    ));
    false
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A host key, as the backends take them.
fn key(s: &str) -> IpNet {
    IpNet::from(ip(s))
}

/// The addresses of listed host bans, in listing order.
fn addrs(held: Vec<Held>) -> Vec<IpAddr> {
    held.into_iter()
        .map(|h| host_of(h.key).expect("a host ban"))
        .collect()
}

fn sorted(mut v: Vec<IpAddr>) -> Vec<IpAddr> {
    v.sort();
    v
}

/// The common life of a backend: prepare twice, add v4 (timed) and v6 (permanent),
/// re-add, list, remove true then false, add again, teardown twice, nothing left.
fn lifecycle(b: &mut dyn BanBackend) {
    let (v4, v6) = (key("198.18.0.2"), key("fd00:5e17::2"));
    b.prepare().unwrap();
    b.prepare().unwrap();
    assert!(b.list().unwrap().is_empty(), "{} starts empty", b.name());

    b.add(v4, Some(Duration::from_secs(600))).unwrap();
    b.add(v6, None).unwrap();
    b.add(v4, Some(Duration::from_secs(600))).unwrap(); // already there: fine
    // What the kernel says of the end: the time left where it keeps timeouts.
    for held in b.list().unwrap() {
        let want_known = b.expires_by_itself();
        match held.expiry {
            Expiry::Unknown => assert!(!want_known, "{}: {held:?}", b.name()),
            Expiry::Permanent => assert!(want_known && held.key == v6, "{held:?}"),
            Expiry::In { left, timeout } => {
                assert!(want_known && held.key == v4, "{held:?}");
                assert!(
                    left <= Duration::from_secs(600) && left >= Duration::from_secs(590),
                    "{left:?}"
                );
                assert_eq!(
                    timeout,
                    None,
                    "{}: ipset reports only the time left",
                    b.name()
                );
            }
        }
    }
    assert!(!b.holds_networks());
    assert!(matches!(
        b.add("198.18.0.0/24".parse().unwrap(), None),
        Err(BackendError::NetworkUnsupported(_))
    ));
    b.add(key("::ffff:198.18.0.2"), None).unwrap(); // the same host, mapped
    assert_eq!(sorted(addrs(b.list().unwrap())), vec![v4.addr(), v6.addr()]);

    assert!(b.remove(v4).unwrap());
    assert!(!b.remove(v4).unwrap());
    assert_eq!(addrs(b.list().unwrap()), vec![v6.addr()]);
    assert!(b.remove(v6).unwrap());
    assert!(!b.remove(v6).unwrap());
    assert!(b.list().unwrap().is_empty());
    assert!(matches!(
        b.add(key("0.0.0.0"), None),
        Err(BackendError::InvalidAddress(_))
    ));

    b.add(v4, None).unwrap();
    b.add(v6, Some(Duration::from_secs(60))).unwrap();
    b.add_many(&[(key("198.18.0.3"), None), (key("fd00:5e17::3"), None)])
        .unwrap();
    assert_eq!(b.list().unwrap().len(), 4);
    b.teardown().unwrap();
    assert!(b.list().unwrap().is_empty(), "{} left bans", b.name());
    b.teardown().unwrap();
}

// ---------------------------------------------------------------- route

#[test]
fn route_backend_lifecycle_keeps_foreign_routes() {
    in_netns("route_backend_lifecycle_keeps_foreign_routes", |ns| {
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
            ns.run(&["sh", "-c", &format!("ip {cmd}")]);
        }
        let snapshot = || {
            let v4 = ns.run(&["ip", "-4", "route", "show", "table", "all"]);
            let v6 = ns.run(&["ip", "-6", "route", "show", "table", "all"]);
            format!("{v4}{v6}")
        };
        let before = snapshot();

        let mut b = RouteBackend::new(RouteKind::Blackhole).unwrap();
        assert_eq!(b.name(), "route");
        assert!(!b.expires_by_itself());

        // The kernel's own view, through iproute2.
        b.add(key("198.18.0.2"), None).unwrap();
        b.add(key("fd00:5e17::2"), None).unwrap();
        let shown = ns.run(&["ip", "-4", "route", "show", "proto", "94"]);
        assert!(shown.contains("blackhole 198.18.0.2 "), "{shown}");
        let shown = ns.run(&["ip", "-6", "route", "show", "proto", "94"]);
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
        |ns| {
            let mut unreach = RouteBackend::new(RouteKind::Unreachable).unwrap();
            unreach.add(key("198.18.0.4"), None).unwrap();
            unreach.add(key("fd00:5e17::4"), None).unwrap();
            let mut prohibit = RouteBackend::new(RouteKind::Prohibit).unwrap();
            prohibit.add(key("198.18.0.5"), None).unwrap();
            let shown = ns.run(&["ip", "route", "show", "proto", "94"]);
            assert!(shown.contains("unreachable 198.18.0.4"), "{shown}");
            assert!(shown.contains("prohibit 198.18.0.5"), "{shown}");
            assert!(
                ns.run(&["ip", "-6", "route", "show", "proto", "94"])
                    .contains("unreachable fd00:5e17::4")
            );
            // Ours whatever the kind: a re-add with another kind is "already banned",
            // and any of our backends lists and removes them.
            prohibit.add(key("198.18.0.4"), None).unwrap();
            let mut bh = RouteBackend::new(RouteKind::Blackhole).unwrap();
            assert_eq!(
                sorted(addrs(bh.list().unwrap())),
                vec![ip("198.18.0.4"), ip("198.18.0.5"), ip("fd00:5e17::4")]
            );

            // A foreign host route at our metric: refused, left alone.
            ns.run(&["ip", "route", "add", "unreachable", "198.18.9.20"]);
            ns.run(&[
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
                match bh.add(key(addr), None) {
                    Err(BackendError::ForeignRoute { addr: a }) => assert_eq!(a, ip(addr)),
                    other => panic!("{addr}: {other:?}"),
                }
                assert!(!bh.remove(key(addr)).unwrap(), "removed a foreign route");
            }
            assert!(
                ns.run(&["ip", "route", "show", "198.18.9.20"])
                    .contains("unreachable")
            );
            assert!(
                ns.run(&["ip", "-6", "route", "show", "fd00:5e17::9:20"])
                    .contains("blackhole")
            );

            bh.teardown().unwrap();
            assert!(
                ns.run(&["ip", "route", "show", "proto", "94"]).is_empty()
                    && ns
                        .run(&["ip", "-6", "route", "show", "proto", "94"])
                        .is_empty()
            );
        },
    );
}

// ---------------------------------------------------------------- ipset

fn match_set_rules(ns: &Netns, v6: bool, set: &str) -> usize {
    let tool = if v6 { "ip6tables" } else { "iptables" };
    let want = format!("-A INPUT -m set --match-set {set} src -j DROP");
    ns.run(&[tool, "-S", "INPUT"])
        .lines()
        .filter(|l| l.trim() == want)
        .count()
}

/// The INPUT chains of iptables and ip6tables, as `-S` prints them.
fn input_rules(ns: &Netns) -> String {
    format!(
        "{}{}",
        ns.run(&["iptables", "-S", "INPUT"]),
        ns.run(&["ip6tables", "-S", "INPUT"])
    )
}

fn set_names(ns: &Netns) -> HashSet<String> {
    ns.run(&["ipset", "list", "-n"])
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn ipset_backend_lifecycle_keeps_foreign_sets_and_rules() {
    in_netns(
        "ipset_backend_lifecycle_keeps_foreign_sets_and_rules",
        |ns| {
            if !ipset_installed(ns, "ipset_backend_lifecycle_keeps_foreign_sets_and_rules") {
                return;
            }
            assert!(set_names(ns).is_empty(), "a fresh namespace has no sets");
            ns.run(&["ipset", "create", "other4", "hash:ip"]);
            ns.run(&["ipset", "add", "other4", "198.18.9.9"]);
            ns.run(&[
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
            ns.run(&["iptables", "-A", "INPUT", "-s", "198.18.9.8", "-j", "DROP"]);
            ns.run(&[
                "ip6tables",
                "-A",
                "INPUT",
                "-s",
                "fd00:5e17::9:8",
                "-j",
                "DROP",
            ]);
            let rules = || input_rules(ns);
            let rules_before = rules();

            let mut b = IpsetBackend::new();
            assert_eq!(b.name(), "ipset");
            assert!(b.expires_by_itself());
            b.prepare().unwrap();
            b.prepare().unwrap();
            assert_eq!(match_set_rules(ns, false, SET4), 1, "{}", rules());
            assert_eq!(match_set_rules(ns, true, SET6), 1, "{}", rules());
            let created = ns.run(&["ipset", "list", SET4, "-o", "save"]);
            assert!(
                created.contains("family inet ") && created.contains("maxelem 1048576 timeout 0"),
                "{created}"
            );
            let created = ns.run(&["ipset", "list", SET6, "-o", "save"]);
            assert!(created.contains("family inet6 "), "{created}");

            lifecycle(&mut b);

            assert_eq!(
                set_names(ns),
                HashSet::from(["other4".to_string()]),
                "teardown left our sets or took a foreign one"
            );
            assert_eq!(rules(), rules_before, "foreign rules changed");
            assert!(ns.run(&["ipset", "list", "other4"]).contains("198.18.9.9"));
        },
    );
}

#[test]
fn ipset_timeouts_permanent_bans_and_batch_restore() {
    in_netns("ipset_timeouts_permanent_bans_and_batch_restore", |ns| {
        if !ipset_installed(ns, "ipset_timeouts_permanent_bans_and_batch_restore") {
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
        b.add(key(a), Some(Duration::from_secs(600))).unwrap();
        let t = timeout_of(&mut b, a).unwrap().expect("timed");
        assert!(
            t <= Duration::from_secs(600) && t >= Duration::from_secs(590),
            "{t:?}"
        );
        // Re-adds set the timeout: permanent, then timed again, then clamped.
        b.add(key(a), None).unwrap();
        assert_eq!(timeout_of(&mut b, a), Some(None));
        b.add(key(a), Some(Duration::from_secs(30))).unwrap();
        let t = timeout_of(&mut b, a).unwrap().expect("timed again");
        assert!(t <= Duration::from_secs(30), "{t:?}");
        b.add(key(a), Some(Duration::from_secs(100 * 86_400)))
            .unwrap();
        let t = timeout_of(&mut b, a).unwrap().expect("clamped");
        assert!(
            t <= Duration::from_secs(IPSET_MAX_TIMEOUT)
                && t >= Duration::from_secs(IPSET_MAX_TIMEOUT - 10),
            "{t:?}"
        );
        // A zero timeout is the shortest ban, not a permanent one.
        b.add(key("198.18.0.3"), Some(Duration::ZERO)).unwrap();
        assert_ne!(timeout_of(&mut b, "198.18.0.3"), Some(None));

        // 2000 bans in one `ipset restore`, v4 and v6, timed and permanent.
        let mut many = Vec::new();
        for i in 0..1000u32 {
            let v4 = IpAddr::from([198, 19, (i >> 8) as u8, i as u8]);
            let v6: IpAddr = format!("fd00:5e17::1:{i:x}").parse().unwrap();
            let t = (i % 2 == 0).then(|| Duration::from_secs(3600));
            many.push((IpNet::from(v4), t));
            many.push((IpNet::from(v6), t));
        }
        b.add_many(&many).unwrap();
        let entries = b.entries().unwrap();
        for (addr, t) in &many {
            let got = entries
                .iter()
                .find(|(a, _)| *a == addr.addr())
                .unwrap_or_else(|| panic!("{addr} not restored"));
            assert_eq!(got.1.is_some(), t.is_some(), "{addr}");
        }
        match b.add_many(&[(key("198.18.0.9"), None), (key("::"), None)]) {
            Err(BackendError::InvalidAddress(_)) => {}
            other => panic!("{other:?}"),
        }
        b.teardown().unwrap();
        assert!(set_names(ns).is_empty());
        assert_eq!(match_set_rules(ns, false, SET4), 0);
        assert_eq!(match_set_rules(ns, true, SET6), 0);
        // Listing and removing without the sets: nothing there, not an error.
        assert!(b.list().unwrap().is_empty());
        assert!(!b.remove(key(a)).unwrap());
    });
}

// ---------------------------------------------------------------- iptables

#[test]
fn iptables_backend_lifecycle_keeps_foreign_rules() {
    in_netns("iptables_backend_lifecycle_keeps_foreign_rules", |ns| {
        for rule in [
            "iptables -I INPUT -s 198.18.0.2 -j DROP",
            "iptables -I INPUT -s 198.18.9.8 -j DROP -m comment --comment other",
            "iptables -I INPUT -s 198.18.9.7 -j ACCEPT -m comment --comment portsentry",
            "iptables -I INPUT -s 198.18.9.0/24 -j DROP -m comment --comment portsentry",
            "ip6tables -I INPUT -s fd00:5e17::2 -p tcp -j DROP -m comment --comment portsentry",
        ] {
            ns.run(&["sh", "-c", rule]);
        }
        let rules = || input_rules(ns);
        let before = rules();
        let mut b = IptablesBackend::new();
        assert_eq!(b.name(), "iptables");
        assert!(!b.expires_by_itself());

        b.add(key("198.18.0.2"), None).unwrap();
        b.add(key("198.18.0.2"), None).unwrap();
        let ours = "-A INPUT -s 198.18.0.2/32 -m comment --comment portsentry -j DROP";
        let count = |text: &str| text.lines().filter(|l| l.trim() == ours).count();
        assert_eq!(count(&rules()), 1, "add inserted a duplicate");
        // A duplicate from elsewhere (older run): listed once, removed with the other.
        ns.run(&[
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
        assert_eq!(addrs(b.list().unwrap()), vec![ip("198.18.0.2")]);
        assert!(b.remove(key("198.18.0.2")).unwrap());
        assert_eq!(count(&rules()), 0);
        assert_eq!(rules(), before);

        lifecycle(&mut b);
        assert_eq!(rules(), before, "foreign rules changed");
    });
}

// ---------------------------------------------------------------- detect

#[test]
fn detect_prefers_ipset_and_changes_nothing() {
    in_netns("detect_prefers_ipset_and_changes_nothing", |ns| {
        let rules = || input_rules(ns);
        let before = rules();
        let b = detect().expect("a backend");
        let want = if ipset_installed(ns, "detect_prefers_ipset_and_changes_nothing") {
            assert!(set_names(ns).is_empty(), "detect created a set");
            "ipset"
        } else {
            "iptables"
        };
        assert_eq!(b.name(), want);
        assert_eq!(rules(), before, "detect changed the firewall");
        assert!(ns.run(&["ip", "route", "show", "proto", "94"]).is_empty());
    });
}

// ---------------------------------------------------------------- traffic

/// The peer's addresses; ours are 198.18.0.1 and fd00:5e17::1.
const PEER_ADDRS: &[&str] = &[
    "198.18.0.2/24",
    "198.18.0.3/24",
    "fd00:5e17::2/64",
    "fd00:5e17::3/64",
];

/// With `backend` prepared: the peer reaches a service, a ban cuts exactly the banned
/// sources off (v4 and v6), lifting it lets them in again.
fn ban_blocks_connect(ns: &Netns, mut b: Box<dyn BanBackend>) {
    let peer = Peer::new(ns, PEER_ADDRS);
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
        b.add(key(src), Some(Duration::from_secs(600))).unwrap();
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
        assert!(b.remove(key(src)).unwrap());
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
    in_netns("route_ban_stops_tcp_connect_and_remove_lifts_it", |ns| {
        ban_blocks_connect(
            ns,
            Box::new(RouteBackend::new(RouteKind::Blackhole).unwrap()),
        );
    });
}

#[test]
fn iptables_ban_stops_tcp_connect_and_remove_lifts_it() {
    in_netns("iptables_ban_stops_tcp_connect_and_remove_lifts_it", |ns| {
        ban_blocks_connect(ns, Box::new(IptablesBackend::new()));
    });
}

#[test]
fn ipset_ban_stops_tcp_connect_and_expires_by_itself() {
    in_netns("ipset_ban_stops_tcp_connect_and_expires_by_itself", |ns| {
        if !ipset_installed(ns, "ipset_ban_stops_tcp_connect_and_expires_by_itself") {
            return;
        }
        ban_blocks_connect(ns, Box::new(IpsetBackend::new()));

        // The kernel lifts a timed ban without the daemon.
        let peer = Peer::new(ns, PEER_ADDRS);
        let _l4 = TcpListener::bind("198.18.0.1:8081").unwrap();
        let mut b = IpsetBackend::new();
        b.prepare().unwrap();
        assert!(peer.connect_eventually("198.18.0.2", "198.18.0.1", 8081));
        b.add(key("198.18.0.2"), Some(Duration::from_secs(2)))
            .unwrap();
        assert!(!peer.connect("198.18.0.2", "198.18.0.1", 8081));
        let deadline = Instant::now() + Duration::from_secs(10);
        while addrs(b.list().unwrap()).contains(&ip("198.18.0.2")) {
            assert!(Instant::now() < deadline, "the 2 s ban did not expire");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(peer.connect("198.18.0.2", "198.18.0.1", 8081));
        b.teardown().unwrap();
    });
}
