//! Benchmark helper, not a test (see BENCHMARKS.md, `bench/drop-cost.sh`): creates our
//! nftables table (as the daemon's fast path does) in the *current* network namespace
//! and fills `banned4` with `--count` elements through `BanSetWriter::add_many`: first
//! `--first ADDR` (the source whose packets are then measured), then addresses from
//! 198.18.64.0 upwards (within 198.18.0.0/15).
//!
//! Network safety: run it as `ip netns exec NS ban_fill --netns NS …`; it refuses to run
//! anywhere but in the bench namespace it is told (see `require_bench_netns`).
//!
//! `--early` applies the table with early drop (banned sources dropped in prerouting at
//! raw priority instead of the input hook).
//!
//! Usage: ban_fill --netns NS --first 198.18.3.2 --count 100000 [--early]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use portsentry_kernel::nft::{BanSetWriter, Nft, TrapSpec};

const TABLE: &str = "portsentry";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    require_bench_netns(&args, "ban_fill");
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let first: Ipv4Addr = get("--first").expect("--first ADDR").parse().expect("IPv4");
    let count: u32 = get("--count").map_or(100_000, |c| c.parse().expect("count"));
    let early = args.iter().any(|a| a == "--early");
    let bench_net = |a: Ipv4Addr| a.octets()[0] == 198 && (a.octets()[1] & 0xfe) == 18;
    assert!(bench_net(first), "--first must be in 198.18.0.0/15");

    let hour = Duration::from_secs(3600);
    Nft::new(TABLE)
        .expect("name")
        .apply(&TrapSpec {
            table: TABLE.into(),
            tcp_ports: Some(vec![(1, 1023)]),
            udp_ports: Some(vec![(1, 1023)]),
            ban_tcp: true,
            ban_udp: true,
            ban_timeout: hour,
            nflog_group: 5817,
            set_size: 1_048_576,
            priority: -10,
            known_peer_time: Some(Duration::from_secs(86_400)),
            known_peer_size: portsentry_kernel::nft::DEFAULT_KNOWN_PEER_SIZE,
            ban_budget: None,
            early_drop: early,
            interfaces: Vec::new(),
        })
        .expect("apply table");
    let base = u32::from(Ipv4Addr::new(198, 18, 64, 0));
    let mut bans = vec![(IpAddr::V4(first), Some(hour))];
    bans.extend((0..count.saturating_sub(1)).map(|i| {
        let a = Ipv4Addr::from(base + i);
        assert!(bench_net(a));
        (IpAddr::V4(a), Some(hour))
    }));
    let mut w = BanSetWriter::open(TABLE).expect("netlink");
    let t = Instant::now();
    w.add_many(&bans).expect("add_many");
    let took = t.elapsed();
    let n = w.list().expect("list").len();
    println!(
        "INFO ban_fill add_many n={} took_ms={:.1} in_set={}",
        bans.len(),
        took.as_secs_f64() * 1e3,
        n
    );
    assert_eq!(n, bans.len());
}

/// Network safety: this process must be in the bench namespace `--netns NAME` (a name
/// starting with "psb", as bench/lib.sh makes them), i.e. our netns inode equals that
/// of /run/netns/NAME, and not in PID 1's namespace (when that is readable).
fn require_bench_netns(args: &[String], prog: &str) {
    use std::os::unix::fs::MetadataExt;
    let fail = |why: String| -> ! {
        eprintln!("{prog}: refusing to run: {why}");
        std::process::exit(2);
    };
    let own = std::fs::metadata("/proc/self/ns/net")
        .unwrap_or_else(|e| fail(format!("own netns: {e}")))
        .ino();
    let name = args
        .iter()
        .position(|a| a == "--netns")
        .and_then(|i| args.get(i + 1))
        .unwrap_or_else(|| {
            fail("--netns NAME (the bench namespace this runs in) is required".into())
        });
    if !name.starts_with("psb") || name.contains('/') {
        fail(format!("{name:?} is not a bench namespace name (psb…)"));
    }
    let ns = std::fs::metadata(format!("/run/netns/{name}"))
        .unwrap_or_else(|e| fail(format!("/run/netns/{name}: {e}")))
        .ino();
    if ns != own {
        fail(format!(
            "not running inside namespace {name} (use ip netns exec {name})"
        ));
    }
    if let Ok(init) = std::fs::metadata("/proc/1/ns/net")
        && init.ino() == own
    {
        fail("this is PID 1's network namespace".into());
    }
}
