//! Engine throughput under a spoofed-source flood: every probe comes from a new
//! address, so the state table fills to capacity and evicts oldest-first on every probe.
//! Prints probes per second and the table size. A benchmark, not a test: run with
//! `cargo run --release -p portsentry-engine --example engine_flood [PROBES]`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use portsentry_engine::engine::{Engine, EngineConfig};
use portsentry_engine::ignore::IgnoreSet;
use portsentry_engine::{Millis, Probe, ProbeKind};

fn main() {
    let probes: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000_000);
    for (label, spread) in [
        ("spoofed flood (every source new)", u32::MAX),
        ("scan from 16 sources", 16),
    ] {
        let mut engine = Engine::new(
            EngineConfig {
                scan_trigger: 3,
                ..EngineConfig::default()
            },
            IgnoreSet::new(),
        );
        let dst = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        let mut actions = 0u64;
        let start = Instant::now();
        for i in 0..probes {
            let src_n = if spread == u32::MAX { i } else { i % spread };
            let probe = Probe {
                src: IpAddr::V4(Ipv4Addr::from(0xC612_0000u32.wrapping_add(src_n))),
                dst,
                sport: 40000,
                dport: (i % 1023 + 1) as u16,
                kind: ProbeKind::Syn,
                ip_options: false,
                ttl: 64,
                verdict: portsentry_engine::Verdict::Observed,
            };
            // One probe per microsecond of engine time.
            let now = Millis(u64::from(i) / 1000);
            engine.handle_probe(now, probe);
            if engine.poll_timeout().is_some_and(|t| t <= now) {
                engine.handle_timeout(now);
            }
            while engine.poll_action().is_some() {
                actions += 1;
            }
        }
        let elapsed = start.elapsed();
        println!(
            "{label}: {probes} probes in {:.3} s = {:.2} M probes/s ({:.0} ns/probe); {} sources tracked, {} evictions, {actions} actions",
            elapsed.as_secs_f64(),
            f64::from(probes) / elapsed.as_secs_f64() / 1e6,
            elapsed.as_nanos() as f64 / f64::from(probes),
            engine.tracked_sources(),
            engine.stats().evictions,
        );
        let _ = Duration::ZERO;
    }
}
