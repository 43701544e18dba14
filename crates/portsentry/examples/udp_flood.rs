//! Benchmark helper, not a test (see BENCHMARKS.md, `bench/drop-cost.sh`): sends small
//! UDP datagrams from `--src` to `--dst` as fast as one thread can (one `sendto` per
//! packet) until `--count` packets or `--max-secs` seconds, whichever comes first, and
//! prints the rate. Over a veth pair the receiving namespace processes each packet in
//! the sender's own softirq, so the sender's rate includes the receiver's drop cost.
//!
//! Network safety: both addresses must be in 198.18.0.0/15, and it runs only inside the
//! bench namespace it is told: `ip netns exec NS udp_flood --netns NS …`.
//!
//! Usage: udp_flood --netns NS --src 198.18.3.2 --dst 198.18.3.1:9 --count 200000 --max-secs 5
//! Output: `FLOOD sent=<n> errors=<n> secs=<s> pps=<n> ns_per_pkt=<n> utime_s=<s> stime_s=<s>`

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    require_bench_netns(&args, "udp_flood");
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let src: Ipv4Addr = get("--src").expect("--src").parse().expect("src");
    let dst: SocketAddrV4 = get("--dst").expect("--dst").parse().expect("dst ip:port");
    let count: u64 = get("--count").map_or(200_000, |c| c.parse().expect("count"));
    let max = Duration::from_secs_f64(get("--max-secs").map_or(5.0, |s| s.parse().expect("secs")));
    let bench_net = |a: &Ipv4Addr| a.octets()[0] == 198 && (a.octets()[1] & 0xfe) == 18;
    assert!(
        bench_net(&src) && bench_net(dst.ip()),
        "addresses must be in 198.18.0.0/15"
    );

    let sock = UdpSocket::bind(SocketAddrV4::new(src, 0)).expect("bind src");
    let payload = [0x5au8; 18];
    let mut sent = 0u64;
    let mut errors = 0u64;
    let t = Instant::now();
    'outer: while sent < count {
        for _ in 0..64 {
            match sock.send_to(&payload, dst) {
                Ok(_) => sent += 1,
                Err(_) => errors += 1,
            }
            if sent >= count {
                break 'outer;
            }
        }
        if t.elapsed() >= max {
            break;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    // SAFETY: getrusage fills the struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    println!(
        "FLOOD sent={} errors={} secs={:.4} pps={:.0} ns_per_pkt={:.0} utime_s={:.3} stime_s={:.3}",
        sent,
        errors,
        secs,
        sent as f64 / secs,
        secs * 1e9 / sent.max(1) as f64,
        tv(ru.ru_utime),
        tv(ru.ru_stime)
    );
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
