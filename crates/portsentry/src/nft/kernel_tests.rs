//! Tests against the real kernel and `nft`. Network safety (TESTING.md): each test
//! runs on a thread of its own that first moves into a fresh network namespace
//! (`unshare(CLONE_NEWNET)` affects only that thread; sockets it opens and processes
//! it spawns live in the new namespace) and asserts that its namespace differs from
//! PID 1's before any firewall call. Traffic only flows over a veth pair to a second
//! namespace the test creates and deletes (Drop guard), with 198.18.0.0/15 and
//! fd00:5e17::/64 addresses. Not root: `skipped: needs root` on stderr.

use std::io;
use std::net::{IpAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;

/// Runs `body` on a new thread inside a new network namespace.
fn in_netns(test: &str, body: impl FnOnce() + Send + 'static) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root ({test})");
        return;
    }
    let test = test.to_string();
    let handle = std::thread::spawn(move || {
        let netns = || std::fs::read_link("/proc/thread-self/ns/net").expect("own netns");
        let before = netns();
        // SAFETY: unshare(CLONE_NEWNET) changes only the calling thread's namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            eprintln!(
                "skipped: needs root (unshare: {}) ({test})",
                io::Error::last_os_error()
            );
            return;
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
        // PID 1's namespace may be unreadable (ptrace rules in containers); the
        // comparisons above already prove we left the namespace we started in.
        if let Ok(init) = std::fs::read_link("/proc/1/ns/net") {
            assert_ne!(
                own, init,
                "refusing to touch the firewall of PID 1's namespace"
            );
        }
        sh(&["ip", "link", "set", "lo", "up"]);
        assert!(
            Nft::available(),
            "nft must be installed and answer in a test namespace"
        );
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
        .output()
        .expect(args[0]);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that may fail; returns whether it succeeded.
fn try_sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn spec(table: &str) -> TrapSpec {
    TrapSpec {
        table: table.into(),
        tcp_ports: Some(vec![(1, 112), (114, 138), (140, 1023)]),
        udp_ports: Some(vec![(1, 1023)]),
        ban_tcp: true,
        ban_udp: true,
        ban_timeout: Duration::from_secs(3600),
        nflog_group: 17,
        set_size: DEFAULT_SET_SIZE,
        priority: DEFAULT_PRIORITY,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn find(bans: &[KernelBan], addr: &str) -> Option<KernelBan> {
    bans.iter().find(|b| b.addr == ip(addr)).cloned()
}

fn chain_text(table: &str, chain: &str) -> String {
    sh(&["nft", "list", "chain", "inet", table, chain])
}

#[test]
fn apply_is_idempotent_and_keeps_bans() {
    in_netns("apply_is_idempotent_and_keeps_bans", || {
        let nft = Nft::new("pst").unwrap();
        let s = spec("pst");
        assert!(!nft.exists().unwrap());
        assert_eq!(nft.apply(&s).unwrap(), Applied::InPlace);
        nft.verify(&s).unwrap();
        let mut w = BanSetWriter::open("pst").unwrap();
        w.add(ip("198.18.0.9"), Some(Duration::from_secs(600)))
            .unwrap();
        w.add(ip("fd00:5e17::9"), None).unwrap();
        nft.set_protected(&["198.18.7.0/24".parse().unwrap()])
            .unwrap();

        assert_eq!(nft.apply(&s).unwrap(), Applied::InPlace);
        nft.verify(&s).unwrap();
        let bans = nft.list_bans().unwrap();
        assert_eq!(bans.len(), 2, "{bans:?}");
        assert!(find(&bans, "198.18.0.9").unwrap().expires.unwrap() > Duration::from_secs(590));
        assert_eq!(find(&bans, "fd00:5e17::9").unwrap().expires, None);
        assert!(sh(&["nft", "list", "set", "inet", "pst", "protected4"]).contains("198.18.7.0/24"));
        // Rules were replaced, not appended.
        let input = chain_text("pst", "input");
        assert_eq!(input.matches("add @banned4").count(), 2, "{input}");
        // A changed timeout/size: updated in place on kernels that can, rebuilt
        // otherwise; the bans stay either way.
        let mut bigger = s.clone();
        bigger.ban_timeout = Duration::from_secs(7200);
        bigger.set_size = 2_000_000;
        let applied = nft.apply(&bigger).unwrap();
        eprintln!("timeout/size change: {applied:?}");
        nft.verify(&bigger).unwrap();
        assert_eq!(nft.list_bans().unwrap().len(), 2);
    });
}

#[test]
fn a_new_priority_rebuilds_the_table_and_carries_bans_over() {
    in_netns(
        "a_new_priority_rebuilds_the_table_and_carries_bans_over",
        || {
            let nft = Nft::new("pst").unwrap();
            let s = spec("pst");
            nft.apply(&s).unwrap();
            let mut w = BanSetWriter::open("pst").unwrap();
            w.add(ip("198.18.0.1"), Some(Duration::from_secs(100)))
                .unwrap();
            w.add(ip("198.18.0.2"), None).unwrap();
            w.add(ip("fd00:5e17::3"), Some(Duration::from_secs(50)))
                .unwrap();
            nft.set_protected(&[
                "198.18.8.0/24".parse().unwrap(),
                "fd00:5e17:1::/64".parse().unwrap(),
            ])
            .unwrap();
            // The kernel cannot move an existing base chain to another priority.
            let mut moved = s.clone();
            moved.priority = -20;
            assert_eq!(
                nft.apply(&moved).unwrap(),
                Applied::Rebuilt {
                    bans: 3,
                    protected: 2
                }
            );
            nft.verify(&moved).unwrap();
            let bans = nft.list_bans().unwrap();
            assert_eq!(bans.len(), 3, "{bans:?}");
            let b = find(&bans, "198.18.0.1").unwrap();
            assert!(
                b.expires.unwrap() <= Duration::from_secs(100)
                    && b.expires.unwrap() > Duration::from_secs(90)
            );
            let b = find(&bans, "198.18.0.2").unwrap();
            assert_eq!(
                (b.timeout, b.expires),
                (None, None),
                "permanent stays permanent"
            );
            assert!(
                find(&bans, "fd00:5e17::3").unwrap().expires.unwrap() <= Duration::from_secs(50)
            );
            assert!(
                sh(&["nft", "list", "set", "inet", "pst", "protected6"])
                    .contains("fd00:5e17:1::/64")
            );
            assert!(chain_text("pst", "input").contains("hook input priority -20;"));
        },
    );
}

#[test]
fn remove_deletes_only_our_table() {
    in_netns("remove_deletes_only_our_table", || {
        sh(&["nft", "add", "table", "inet", "someone_else"]);
        let nft = Nft::new("pst").unwrap();
        nft.apply(&spec("pst")).unwrap();
        assert!(nft.exists().unwrap());
        nft.remove().unwrap();
        assert!(!nft.exists().unwrap());
        nft.remove().unwrap();
        assert!(sh(&["nft", "list", "tables"]).contains("table inet someone_else"));
        nft.remove_traps().unwrap();
    });
}

#[test]
fn remove_traps_keeps_bans_and_their_drop_rules() {
    in_netns("remove_traps_keeps_bans_and_their_drop_rules", || {
        let nft = Nft::new("pst").unwrap();
        let s = spec("pst");
        nft.apply(&s).unwrap();
        BanSetWriter::open("pst")
            .unwrap()
            .add(ip("198.18.0.5"), Some(Duration::from_secs(60)))
            .unwrap();
        nft.remove_traps().unwrap();
        let input = chain_text("pst", "input");
        assert!(!input.contains("dport"), "{input}");
        assert!(input.contains("ip saddr @banned4 drop"), "{input}");
        assert!(input.contains("ip6 saddr @banned6 drop"), "{input}");
        assert!(!chain_text("pst", "observe").contains("log"));
        assert_eq!(nft.list_bans().unwrap().len(), 1);
        assert!(nft.verify(&s).is_err(), "traps are gone");
        // Starting again restores the traps, the ban is still there.
        nft.apply(&s).unwrap();
        assert_eq!(nft.list_bans().unwrap().len(), 1);
    });
}

#[test]
fn set_protected_merges_and_replaces() {
    in_netns("set_protected_merges_and_replaces", || {
        let nft = Nft::new("pst").unwrap();
        nft.apply(&spec("pst")).unwrap();
        let nets: Vec<ipnet::IpNet> = [
            "198.18.0.0/16",
            "198.18.3.0/24",
            "198.18.3.0/24",
            "198.19.1.0/24",
            "198.19.2.0/23",
            "203.0.113.5/32",
            "fd00:5e17::/64",
            "fd00:5e17::1/128",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        nft.set_protected(&nets).unwrap();
        let p4 = sh(&["nft", "list", "set", "inet", "pst", "protected4"]);
        assert!(p4.contains("198.18.0.0/16"), "{p4}");
        assert!(p4.contains("198.19.1.0/24"), "{p4}");
        assert!(p4.contains("198.19.2.0/23"), "{p4}");
        assert!(p4.contains("203.0.113.5"), "{p4}");
        assert!(!p4.contains("198.18.3.0"), "{p4}");
        let p6 = sh(&["nft", "list", "set", "inet", "pst", "protected6"]);
        assert!(p6.contains("fd00:5e17::/64"), "{p6}");
        nft.set_protected(&["198.51.100.0/24".parse().unwrap()])
            .unwrap();
        let p4 = sh(&["nft", "list", "set", "inet", "pst", "protected4"]);
        assert!(
            p4.contains("198.51.100.0/24") && !p4.contains("198.18.0.0"),
            "{p4}"
        );
        assert!(!sh(&["nft", "list", "set", "inet", "pst", "protected6"]).contains("fd00"));
        nft.set_protected(&[]).unwrap();
        assert!(!sh(&["nft", "list", "set", "inet", "pst", "protected4"]).contains("elements"));
    });
}

#[test]
fn writer_adds_replaces_and_deletes() {
    in_netns("writer_adds_replaces_and_deletes", || {
        let nft = Nft::new("pst").unwrap();
        nft.apply(&spec("pst")).unwrap();
        let mut w = BanSetWriter::open("pst").unwrap();
        let three = Some(Duration::from_secs(3));
        w.add(ip("198.18.0.1"), three).unwrap();
        w.add(ip("fd00:5e17::1"), three).unwrap();
        let bans = nft.list_bans().unwrap();
        for a in ["198.18.0.1", "fd00:5e17::1"] {
            let b = find(&bans, a).unwrap();
            assert_eq!(b.timeout, three, "{b:?}");
            assert!(b.expires.unwrap() <= Duration::from_secs(3), "{b:?}");
        }
        // nft sees the same.
        assert!(
            sh(&["nft", "list", "set", "inet", "pst", "banned4"])
                .contains("198.18.0.1 timeout 3s expires")
        );

        // Re-adding sets the timeout (longer and shorter), and permanent works both ways.
        w.add(ip("198.18.0.1"), Some(Duration::from_secs(1000)))
            .unwrap();
        let b = find(&nft.list_bans().unwrap(), "198.18.0.1").unwrap();
        assert!(b.expires.unwrap() > Duration::from_secs(990), "{b:?}");
        w.add(ip("198.18.0.1"), None).unwrap();
        let b = find(&nft.list_bans().unwrap(), "198.18.0.1").unwrap();
        assert_eq!((b.timeout, b.expires), (None, None));
        assert!(
            sh(&["nft", "list", "set", "inet", "pst", "banned4"])
                .contains("elements = { 198.18.0.1 }")
        );
        w.add(ip("198.18.0.1"), Some(Duration::from_secs(20)))
            .unwrap();
        let b = find(&nft.list_bans().unwrap(), "198.18.0.1").unwrap();
        assert!(b.expires.unwrap() <= Duration::from_secs(20), "{b:?}");

        assert!(w.delete(ip("198.18.0.1")).unwrap());
        assert!(!w.delete(ip("198.18.0.1")).unwrap());
        assert!(w.delete(ip("fd00:5e17::1")).unwrap());
        assert!(nft.list_bans().unwrap().is_empty());

        // Same through the path for kernels without DESTROYSETELEM (< 6.3).
        w.force_no_destroy();
        w.add(ip("198.18.0.2"), Some(Duration::from_secs(5)))
            .unwrap();
        w.add(ip("198.18.0.2"), None).unwrap();
        let b = find(&nft.list_bans().unwrap(), "198.18.0.2").unwrap();
        assert_eq!((b.timeout, b.expires), (None, None));
        w.add(ip("198.18.0.2"), Some(Duration::from_secs(7)))
            .unwrap();
        let b = find(&nft.list_bans().unwrap(), "198.18.0.2").unwrap();
        assert_eq!(b.timeout, Some(Duration::from_secs(7)));

        // A ban expires in the kernel.
        w.add(ip("198.18.0.3"), Some(Duration::from_millis(300)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(1200));
        assert!(find(&nft.list_bans().unwrap(), "198.18.0.3").is_none());
    });
}

#[test]
fn permanent_bans_outlive_the_set_timeout() {
    in_netns("permanent_bans_outlive_the_set_timeout", || {
        let nft = Nft::new("pst").unwrap();
        let mut s = spec("pst");
        s.ban_timeout = Duration::from_secs(1);
        nft.apply(&s).unwrap();
        let mut w = BanSetWriter::open("pst").unwrap();
        w.add(ip("198.18.0.1"), None).unwrap();
        w.add(ip("fd00:5e17::1"), None).unwrap();
        // Added by nft without a timeout: the set default (1 s) applies.
        sh(&[
            "nft",
            "add",
            "element",
            "inet",
            "pst",
            "banned4",
            "{ 198.18.0.2 }",
        ]);
        std::thread::sleep(Duration::from_millis(2500));
        let bans = nft.list_bans().unwrap();
        assert_eq!(bans.len(), 2, "{bans:?}");
        for b in &bans {
            assert_eq!((b.timeout, b.expires), (None, None), "{b:?}");
        }
    });
}

#[test]
fn writer_errors_name_the_kernel_errno() {
    in_netns("writer_errors_name_the_kernel_errno", || {
        let mut w = BanSetWriter::open("absent").unwrap();
        let e = w.add(ip("198.18.0.1"), None).unwrap_err();
        assert_eq!(kernel_errno(&e), Some(libc::ENOENT), "{e}");
        assert!(e.to_string().contains("inet absent banned4"), "{e}");
        let nft = Nft::new("absent").unwrap();
        assert!(matches!(nft.list_bans(), Err(NftError::ListBans { .. })));
    });
}

#[test]
fn add_many_restores_ten_thousand_bans_in_one_call() {
    in_netns("add_many_restores_ten_thousand_bans_in_one_call", || {
        let nft = Nft::new("pst").unwrap();
        nft.apply(&spec("pst")).unwrap();
        let mut bans = Vec::new();
        for i in 0..5000u32 {
            let v4 = std::net::Ipv4Addr::from(0xc612_0000 + i); // 198.18.x.y
            bans.push((
                IpAddr::V4(v4),
                Some(Duration::from_secs(600 + u64::from(i % 7))),
            ));
            let v6 = std::net::Ipv6Addr::from(
                0xfd00_5e17_0000_0000_0000_0000_0000_0000u128 + u128::from(i),
            );
            bans.push((
                IpAddr::V6(v6),
                if i % 100 == 0 {
                    None
                } else {
                    Some(Duration::from_secs(900))
                },
            ));
        }
        let mut w = BanSetWriter::open("pst").unwrap();
        w.add_many(&bans).unwrap();
        let listed = nft.list_bans().unwrap();
        assert_eq!(listed.len(), 10_000);
        assert_eq!(listed.iter().filter(|b| b.expires.is_none()).count(), 50);
        // Again (all exist): replaced, not duplicated.
        w.add_many(&bans).unwrap();
        assert_eq!(nft.list_bans().unwrap().len(), 10_000);

        // A set that is too small takes nothing: the batch is one transaction.
        let small = Nft::new("small").unwrap();
        let mut s = spec("small");
        s.set_size = 100;
        small.apply(&s).unwrap();
        let mut w = BanSetWriter::open("small").unwrap();
        let e = w.add_many(&bans[..300]).unwrap_err();
        eprintln!("over the set size: {e}");
        assert!(small.list_bans().unwrap().is_empty());
        w.add_many(&bans[..100]).unwrap();
        assert_eq!(small.list_bans().unwrap().len(), 100);
    });
}

/// A second namespace joined to the test's by a veth pair; deleted on drop.
struct Peer {
    name: String,
}

impl Peer {
    fn new() -> Peer {
        let name = format!("psnft{}x{}", std::process::id(), rand_suffix());
        sh(&["ip", "netns", "add", &name]);
        let peer = Peer { name };
        sh(&[
            "ip", "link", "add", "vps0", "type", "veth", "peer", "name", "vps1", "netns",
            &peer.name,
        ]);
        sh(&["ip", "addr", "add", "198.18.0.1/24", "dev", "vps0"]);
        sh(&[
            "ip",
            "-6",
            "addr",
            "add",
            "fd00:5e17::1/64",
            "dev",
            "vps0",
            "nodad",
        ]);
        sh(&["ip", "link", "set", "vps0", "up"]);
        let n = peer.name.as_str();
        for a in [
            "198.18.0.2/24",
            "198.18.0.3/24",
            "198.18.0.4/24",
            "198.18.0.5/24",
            "198.18.0.6/24",
        ] {
            sh(&["ip", "-n", n, "addr", "add", a, "dev", "vps1"]);
        }
        sh(&[
            "ip",
            "-n",
            n,
            "-6",
            "addr",
            "add",
            "fd00:5e17::2/64",
            "dev",
            "vps1",
            "nodad",
        ]);
        sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", n, "link", "set", "vps1", "up"]);
        peer
    }

    /// Runs `args` in the peer namespace; whether it succeeded.
    fn run(&self, args: &[&str]) -> bool {
        let mut all = vec!["ip", "netns", "exec", self.name.as_str()];
        all.extend_from_slice(args);
        try_sh(&all)
    }

    /// TCP connect from `src` to `dst:port`, 1 s timeout.
    fn connect(&self, src: &str, dst: &str, port: u16) -> bool {
        self.run(&["nc", "-z", "-w1", "-s", src, dst, &port.to_string()])
    }

    fn udp(&self, src: &str, dst: &str, port: u16) {
        let cmd = format!("echo probe | nc -u -w1 -s {src} {dst} {port}");
        self.run(&["sh", "-c", &cmd]);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = try_sh(&["ip", "netns", "del", &self.name]);
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

#[test]
fn a_probe_to_a_trap_is_banned_by_the_kernel() {
    in_netns("a_probe_to_a_trap_is_banned_by_the_kernel", || {
        let peer = Peer::new();
        let nft = Nft::new("pst").unwrap();
        nft.apply(&spec("pst")).unwrap();
        nft.set_protected(&["198.18.0.4/32".parse().unwrap()])
            .unwrap();
        // Services on watched ports are not traps: the socket rule returns first.
        let _l4 = TcpListener::bind("198.18.0.1:80").unwrap();
        let _l6 = TcpListener::bind("[fd00:5e17::1]:80").unwrap();
        assert!(peer.connect("198.18.0.2", "198.18.0.1", 80));
        assert!(peer.connect("fd00:5e17::2", "fd00:5e17::1", 80));
        assert!(nft.list_bans().unwrap().is_empty());

        // A SYN to a closed watched port: banned on that packet, then dropped.
        assert!(!peer.connect("198.18.0.2", "198.18.0.1", 81));
        let bans = nft.list_bans().unwrap();
        let b = find(&bans, "198.18.0.2").expect("peer banned");
        assert_eq!(b.timeout, Some(Duration::from_secs(3600)));
        assert!(
            !peer.connect("198.18.0.2", "198.18.0.1", 80),
            "banned source reaches a service"
        );
        assert!(
            peer.connect("198.18.0.3", "198.18.0.1", 80),
            "another source is unaffected"
        );

        // IPv6 goes to banned6.
        assert!(!peer.connect("fd00:5e17::2", "fd00:5e17::1", 443));
        assert!(find(&nft.list_bans().unwrap(), "fd00:5e17::2").is_some());

        // UDP to a watched port without a socket.
        peer.udp("198.18.0.3", "198.18.0.1", 161);
        assert!(find(&nft.list_bans().unwrap(), "198.18.0.3").is_some());

        // A protected source is only logged: not banned, the service still answers.
        assert!(!peer.connect("198.18.0.4", "198.18.0.1", 81));
        assert!(find(&nft.list_bans().unwrap(), "198.18.0.4").is_none());
        assert!(peer.connect("198.18.0.4", "198.18.0.1", 80));

        // Backscatter (SYN+ACK) and RSTs never ban; a FIN probe does.
        if Command::new("hping3").arg("--version").output().is_ok() {
            let hping = |flags: &str| {
                peer.run(&[
                    "hping3",
                    "-q",
                    "-c",
                    "1",
                    flags,
                    "-a",
                    "198.18.0.5",
                    "-p",
                    "82",
                    "198.18.0.1",
                ])
            };
            hping("-SA");
            hping("-R");
            assert!(
                find(&nft.list_bans().unwrap(), "198.18.0.5").is_none(),
                "SYN+ACK or RST banned"
            );
            hping("-F");
            assert!(
                find(&nft.list_bans().unwrap(), "198.18.0.5").is_some(),
                "FIN probe not banned"
            );
        } else {
            eprintln!("skipped part: hping3 missing (SYN+ACK/RST/FIN checks)");
        }

        // Stopped daemon: no new bans, old ones still drop.
        nft.remove_traps().unwrap();
        assert!(!peer.connect("198.18.0.2", "198.18.0.1", 80));
        let before = nft.list_bans().unwrap().len();
        assert!(
            !peer.connect("198.18.0.6", "198.18.0.1", 84),
            "closed port answers RST"
        );
        assert!(find(&nft.list_bans().unwrap(), "198.18.0.6").is_none());
        assert_eq!(nft.list_bans().unwrap().len(), before);
    });
}
