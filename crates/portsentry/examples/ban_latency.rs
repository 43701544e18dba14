//! Benchmark, not a test (see BENCHMARKS.md, `bench/ban-latency.sh`): how long from a
//! decision in user space until the kernel has ACKed the ban element, for
//! `BanSetWriter::add` (one netlink batch on an open socket) against what a
//! shell-based responder does per ban (fork+exec `nft add element …`, the same through
//! `/bin/sh -c` as system() runs it, and PortSentry 1.2's KILL_ROUTE style
//! `iptables -I INPUT -s ADDR -j DROP` through `/bin/sh -c`).
//!
//! Network safety (shared/design/TESTING.md): the first thing `main` does is
//! `unshare(CLONE_NEWNET)`; it asserts the namespace changed (and differs from PID 1's)
//! before touching any firewall. No packet is sent; the namespace dies with the
//! process. Addresses are from 198.18.0.0/15.
//!
//! Usage: ban_latency [--netlink N] [--fork N] [--preload N]
//! Output: one `RESULT <name> n=<n> median_us=<..> p99_us=<..> mean_us=<..> min_us=<..> max_us=<..>` line per method.

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portsentry_kernel::nft::{BanSetWriter, Nft, TrapSpec};

const TABLE: &str = "portsentry";
const HOUR: Duration = Duration::from_secs(3600);

fn netns_of(path: &str) -> Option<std::path::PathBuf> {
    std::fs::read_link(path).ok()
}

/// Into a fresh network namespace, or exit. Must run before any other thread exists.
fn enter_private_netns() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("ban_latency: needs root (CAP_NET_ADMIN in a new network namespace)");
        std::process::exit(2);
    }
    let before = netns_of("/proc/thread-self/ns/net").expect("read own netns");
    // SAFETY: unshare(CLONE_NEWNET) only changes the calling thread's namespace; this
    // process has no other thread yet, and every thread/child made later inherits it.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!(
            "ban_latency: unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(2);
    }
    let after = netns_of("/proc/thread-self/ns/net").expect("read own netns");
    assert_ne!(
        before, after,
        "unshare did not give us a new network namespace"
    );
    if let Some(init) = netns_of("/proc/1/ns/net") {
        assert_ne!(after, init, "refusing to touch PID 1's network namespace");
    }
    eprintln!("ban_latency: private network namespace {}", after.display());
}

/// `base + i`, which must stay inside 198.18.0.0/15 (the benchmarking range).
fn v4(base: u32, i: u32) -> Ipv4Addr {
    let a = Ipv4Addr::from(base + i);
    let o = a.octets();
    assert!(
        o[0] == 198 && (o[1] & 0xfe) == 18,
        "{a} is outside 198.18.0.0/15"
    );
    a
}

fn base(a: [u8; 4]) -> u32 {
    u32::from(Ipv4Addr::from(a))
}

struct Stats {
    name: String,
    us: Vec<f64>,
}

impl Stats {
    fn new(name: &str) -> Self {
        Stats {
            name: name.to_string(),
            us: Vec::new(),
        }
    }
    fn push(&mut self, d: Duration) {
        self.us.push(d.as_secs_f64() * 1e6);
    }
    fn report(&mut self) {
        let v = &mut self.us;
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let n = v.len();
        let pct = |p: f64| v[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        let mean = v.iter().sum::<f64>() / n as f64;
        println!(
            "RESULT {} n={} median_us={:.1} p99_us={:.1} mean_us={:.1} min_us={:.1} max_us={:.1}",
            self.name,
            n,
            median,
            pct(0.99),
            mean,
            v[0],
            v[n - 1]
        );
    }
}

fn arg(args: &[String], name: &str, default: u32) -> u32 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("number"))
        .unwrap_or(default)
}

fn run_ok(cmd: &mut Command) {
    let st = cmd.stdout(Stdio::null()).status().expect("spawn");
    assert!(st.success(), "{cmd:?} failed: {st}");
}

fn main() {
    enter_private_netns();
    let args: Vec<String> = std::env::args().collect();
    let n_netlink = arg(&args, "--netlink", 2000);
    let n_fork = arg(&args, "--fork", 300);
    let preload = arg(&args, "--preload", 100_000);
    // Address plan inside 198.18.0.0/15: small runs in 198.18.0.0/18 (2,048 addresses
    // each at most), the preload from 198.18.64.0 to at most 198.19.255.255.
    assert!(
        n_netlink <= 2048 && n_fork <= 1024,
        "--netlink <= 2048, --fork <= 1024"
    );
    assert!(preload <= 114_688, "--preload <= 114688");

    let nft = Nft::new(TABLE).expect("table name");
    nft.apply(&TrapSpec {
        table: TABLE.into(),
        tcp_ports: Some(vec![(1, 1023)]),
        udp_ports: Some(vec![(1, 1023)]),
        ban_tcp: true,
        ban_udp: true,
        ban_timeout: HOUR,
        nflog_group: 5817,
        set_size: 1_048_576,
        priority: -10,
        known_peer_time: Some(Duration::from_secs(86_400)),
        known_peer_size: 1000,
        ban_budget: None,
        early_drop: false,
        interfaces: Vec::new(),
    })
    .expect("apply our table in the private namespace");
    let mut w = BanSetWriter::open(TABLE).expect("netlink socket");

    // Warm-up (page faults, first-use probing of DESTROYSETELEM), not measured.
    let warm = base([198, 18, 0, 0]);
    for i in 0..32 {
        w.add(IpAddr::V4(v4(warm, i)), Some(HOUR))
            .expect("warm-up add");
    }

    // 1. netlink, one ban per call, on a set that grows from ~0 to n_netlink.
    let mut s = Stats::new("netlink_add");
    let b = base([198, 18, 8, 0]);
    for i in 0..n_netlink {
        let a = IpAddr::V4(v4(b, i));
        let t = Instant::now();
        w.add(a, Some(HOUR)).expect("add");
        s.push(t.elapsed());
    }
    s.report();

    // 2. fork+exec nft per ban.
    let nft_bin = "/usr/sbin/nft";
    let mut s = Stats::new("fork_nft_add_element");
    let b = base([198, 18, 16, 0]);
    for i in 0..n_fork {
        let el = format!("{{ {} timeout 1h }}", v4(b, i));
        let t = Instant::now();
        run_ok(Command::new(nft_bin).args(["add", "element", "inet", TABLE, "banned4", &el]));
        s.push(t.elapsed());
    }
    s.report();

    // 3. The same through /bin/sh -c, as system() (PortSentry's KILL_ROUTE) runs it.
    let mut s = Stats::new("sh_c_nft_add_element");
    let b = base([198, 18, 20, 0]);
    for i in 0..n_fork {
        let line = format!(
            "{nft_bin} add element inet {TABLE} banned4 {{ {} timeout 1h }}",
            v4(b, i)
        );
        let t = Instant::now();
        run_ok(Command::new("/bin/sh").args(["-c", &line]));
        s.push(t.elapsed());
    }
    s.report();

    // 4. PortSentry 1.2 KILL_ROUTE as Debian users write it: iptables (iptables-nft
    //    here) inserting one rule per ban; the chain grows from 0 to n_fork rules.
    let ipt = if std::path::Path::new("/usr/sbin/iptables").exists() {
        Some("/usr/sbin/iptables")
    } else {
        None
    };
    if let Some(ipt) = ipt {
        let mut s = Stats::new("sh_c_iptables_insert");
        let b = base([198, 18, 24, 0]);
        for i in 0..n_fork {
            let line = format!("{ipt} -I INPUT -s {} -j DROP", v4(b, i));
            let t = Instant::now();
            run_ok(Command::new("/bin/sh").args(["-c", &line]));
            s.push(t.elapsed());
        }
        s.report();
    }

    // 5. Same two main methods on a set that already holds `preload` elements.
    if preload > 0 {
        let b = base([198, 18, 64, 0]);
        let bans: Vec<(IpAddr, Option<Duration>)> = (0..preload)
            .map(|i| (IpAddr::V4(v4(b, i)), Some(HOUR)))
            .collect();
        let t = Instant::now();
        w.add_many(&bans).expect("add_many preload");
        println!(
            "INFO preload add_many n={} took_ms={:.1}",
            preload,
            t.elapsed().as_secs_f64() * 1e3
        );
        let mut s = Stats::new(&format!("netlink_add_after_{preload}"));
        let b = base([198, 18, 32, 0]);
        for i in 0..n_netlink.min(2000) {
            let a = IpAddr::V4(v4(b, i));
            let t = Instant::now();
            w.add(a, Some(HOUR)).expect("add");
            s.push(t.elapsed());
        }
        s.report();
        let mut s = Stats::new(&format!("fork_nft_add_element_after_{preload}"));
        let b = base([198, 18, 40, 0]);
        for i in 0..n_fork.min(200) {
            let el = format!("{{ {} timeout 1h }}", v4(b, i));
            let t = Instant::now();
            run_ok(Command::new(nft_bin).args(["add", "element", "inet", TABLE, "banned4", &el]));
            s.push(t.elapsed());
        }
        s.report();
    }

    // Check that every ban is really in the set.
    let listed = w.list().expect("list bans");
    let expect = 32
        + n_netlink as usize
        + 2 * n_fork as usize
        + if preload > 0 {
            preload as usize + n_netlink.min(2000) as usize + n_fork.min(200) as usize
        } else {
            0
        };
    println!(
        "INFO elements_in_banned_sets={} expected={}",
        listed.len(),
        expect
    );
    assert_eq!(listed.len(), expect, "ban count in the kernel");
}
