//! Forged-source flood for the benchmarks (`bench/`): run under `ip netns exec` in a
//! test namespace. Sources and target must lie in the test ranges (checked).
//!
//! `flood TARGET SOURCE_PREFIX RATE SECONDS PORTS [udp]`, e.g.
//! `flood 198.18.0.1 198.18.128.0/17 50000 10 1-1023`; prints what was sent as
//! `sent=N refused=N seconds=S`.

use std::time::Duration;

use portsentry_kernel::flood::Flood;

fn ports(spec: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<u16>().unwrap()..=b.parse::<u16>().unwrap()),
            None => out.push(part.parse().unwrap()),
        }
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        eprintln!("usage: flood TARGET SOURCE_PREFIX RATE SECONDS PORTS [udp]");
        std::process::exit(2);
    }
    let flood = Flood {
        target: args[0].parse().expect("TARGET"),
        sources: args[1].parse().expect("SOURCE_PREFIX"),
        rate: args[2].parse().expect("RATE"),
        duration: Duration::from_secs_f64(args[3].parse().expect("SECONDS")),
        dports: ports(&args[4]),
        udp: args.get(5).is_some_and(|a| a == "udp"),
        seed: u64::from(std::process::id()),
    };
    let sent = flood.run().expect("send");
    println!(
        "sent={} refused={} seconds={:.2}",
        sent.packets,
        sent.refused,
        sent.elapsed.as_secs_f64()
    );
}
