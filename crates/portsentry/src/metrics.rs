//! The daemon's Prometheus metrics: one process-wide registry of counters, gauges and
//! a histogram (prometheus-client), updated by the capture and reporter threads and
//! encoded by the metrics endpoint ([`crate::metrics_http`]).
//!
//! Counting is always on (an atomic add per event: a probe, an alert, a ban); only
//! the endpoint that serves them is optional. A labelled family takes an uncontended
//! read lock to find its counter, which is as cheap as the atomic; label values are
//! `&'static str`, so the capture path never allocates for a metric. What is read
//! from elsewhere (RSS and CPU from `/proc/self/stat`) is read when scraped, by the
//! endpoint's thread.
//!
//! Every name starts with `portsentry_`; README ("Metrics") and portsentry(8)
//! (METRICS) list them.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use portsentry_engine::{Evidence, Probe, ProbeKind, Proto};
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FleetLabels {
    pub event: &'static str,
}

/// The fleet link's counters as `portsentry_fleet_bans_total{event}`, in the order of
/// [`fleet_counts`].
const FLEET_EVENTS: [&str; 8] = [
    "received",
    "applied",
    "published",
    "rejected",
    "refused",
    "rate_limited",
    "expired",
    "not_shared",
];

/// The link's counters now, in [`FLEET_EVENTS`]' order.
fn fleet_counts(s: &crate::fleet::Stats) -> [u64; 8] {
    use std::sync::atomic::Ordering::Relaxed;
    [
        s.received.load(Relaxed),
        s.applied.load(Relaxed),
        s.published.load(Relaxed),
        s.rejected.load(Relaxed),
        s.refused.load(Relaxed),
        s.rate_limited.load(Relaxed),
        s.expired.load(Relaxed),
        s.dropped.load(Relaxed),
    ]
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub kind: &'static str,
    pub proto: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub proto: &'static str,
    pub evidence: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BanLabels {
    pub evidence: &'static str,
    pub backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FamilyLabels {
    pub family: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub command: &'static str,
}

/// Every metric of the daemon.
pub struct Metrics {
    registry: Registry,
    pub probes: Family<ProbeLabels, Counter>,
    pub alerts: Family<AlertLabels, Counter>,
    pub bans: Family<BanLabels, Counter>,
    pub bans_in_force: Gauge,
    pub ban_set_elements: Family<FamilyLabels, Gauge>,
    pub ban_set_size: Gauge,
    pub kernel_drops: Counter,
    pub reporter_queue: Gauge,
    pub command_failures: Family<CommandLabels, Counter>,
    pub ban_latency: Histogram,
    pub resident_memory: Gauge,
    pub cpu_seconds: Gauge<f64, AtomicU64>,
    pub start_time: Gauge,
    /// The fleet link (`[fleet]`), read when scraped: its counters, whether it is
    /// connected, and its lag.
    fleet: OnceLock<std::sync::Arc<crate::fleet::Stats>>,
    fleet_bans: Family<FleetLabels, Counter>,
    /// What `fleet_bans` was last brought up to (the link's counters only grow).
    fleet_seen: std::sync::Mutex<[u64; 8]>,
    fleet_connected: Gauge,
    fleet_lag: Gauge,
}

/// The process's metrics (made on first use).
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("portsentry"),
            probes: Family::default(),
            alerts: Family::default(),
            bans: Family::default(),
            bans_in_force: Gauge::default(),
            ban_set_elements: Family::default(),
            ban_set_size: Gauge::default(),
            kernel_drops: Counter::default(),
            reporter_queue: Gauge::default(),
            command_failures: Family::default(),
            // 1 ms to ~16 s: a ban is made in well under 1 ms on the fast path and in a
            // few ms when the daemon decides; seconds mean a stalled reporter.
            ban_latency: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            resident_memory: Gauge::default(),
            cpu_seconds: Gauge::default(),
            start_time: Gauge::default(),
            fleet: OnceLock::new(),
            fleet_bans: Family::default(),
            fleet_seen: std::sync::Mutex::new([0; 8]),
            fleet_connected: Gauge::default(),
            fleet_lag: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register(
            "probes",
            "Probes seen (packets or connections to a watched port), by scan kind and protocol",
            m.probes.clone(),
        );
        r.register(
            "alerts",
            "Probes the engine alerted (an attackalert line), by protocol and evidence class",
            m.alerts.clone(),
        );
        r.register(
            "bans",
            "Bans made, by evidence class and backend (kill_commands: the KILL_* commands)",
            m.bans.clone(),
        );
        r.register(
            "bans_in_force",
            "Bans in force now (the ban book)",
            m.bans_in_force.clone(),
        );
        r.register(
            "ban_set_elements",
            "Native bans in force per address family (elements of the kernel ban set)",
            m.ban_set_elements.clone(),
        );
        r.register(
            "ban_set_size",
            "Capacity of each kernel ban set ([firewall] set_size)",
            m.ban_set_size.clone(),
        );
        r.register(
            "kernel_drops",
            "Packets the kernel dropped because the daemon did not read them fast enough (NFLOG overruns, packet socket drops)",
            m.kernel_drops.clone(),
        );
        r.register(
            "reporter_queue_depth",
            "Engine actions queued for the reporter thread",
            m.reporter_queue.clone(),
        );
        r.register(
            "command_failures",
            "Failed responses: KILL_HOSTS_DENY, KILL_ROUTE, KILL_RUN_CMD, or the ban backend",
            m.command_failures.clone(),
        );
        r.register(
            "ban_latency_seconds",
            "From reading the probe that decided a ban to the ban being written or confirmed by the backend",
            m.ban_latency.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory of the daemon (/proc/self/stat)",
            m.resident_memory.clone(),
        );
        r.register(
            "process_cpu_seconds",
            "User and system CPU time of the daemon (/proc/self/stat)",
            m.cpu_seconds.clone(),
        );
        r.register(
            "process_start_time_seconds",
            "When the daemon started, Unix seconds",
            m.start_time.clone(),
        );
        r.register(
            "fleet_bans",
            "Fleet link: bans received, applied, published, rejected (bad signature or replayed), refused (protected, known peer), rate_limited, expired, not_shared (queue full)",
            m.fleet_bans.clone(),
        );
        r.register(
            "fleet_connected",
            "Fleet link: 1 while connected to the Redis server (0 also when [fleet] is off)",
            m.fleet_connected.clone(),
        );
        r.register(
            "fleet_lag_milliseconds",
            "Fleet link: between the last stream entry's time and its reading",
            m.fleet_lag.clone(),
        );
        m.start_time.set(crate::clock::unix_now() as i64);
        // Series that exist from the start at 0, so that a rate over the first event
        // is not lost and a dashboard shows 0 rather than "no data".
        for (kind, proto) in [
            ("syn", "tcp"),
            ("fin", "tcp"),
            ("null", "tcp"),
            ("xmas", "tcp"),
            ("ack", "tcp"),
            ("maimon", "tcp"),
            ("other", "tcp"),
            ("connect", "tcp"),
            ("udp", "udp"),
        ] {
            let _ = m.probes.get_or_create(&ProbeLabels { kind, proto });
        }
        for proto in ["tcp", "udp"] {
            for evidence in ["unverified", "verified"] {
                let _ = m.alerts.get_or_create(&AlertLabels { proto, evidence });
            }
        }
        for family in ["ipv4", "ipv6"] {
            let _ = m.ban_set_elements.get_or_create(&FamilyLabels { family });
        }
        for command in ["KILL_HOSTS_DENY", "KILL_ROUTE", "KILL_RUN_CMD", "backend"] {
            let _ = m.command_failures.get_or_create(&CommandLabels { command });
        }
        m
    }

    /// One probe read from a source.
    pub fn probe(&self, probe: &Probe) {
        self.probes
            .get_or_create(&ProbeLabels {
                kind: kind_label(probe.kind),
                proto: proto_label(probe.proto()),
            })
            .inc();
    }

    pub fn alert(&self, probe: &Probe) {
        self.alerts
            .get_or_create(&AlertLabels {
                proto: proto_label(probe.proto()),
                evidence: evidence_label(probe.evidence()),
            })
            .inc();
    }

    pub fn ban(&self, evidence: Evidence, backend: &'static str) {
        self.bans
            .get_or_create(&BanLabels {
                evidence: evidence_label(evidence),
                backend,
            })
            .inc();
    }

    pub fn command_failed(&self, command: &'static str) {
        self.command_failures
            .get_or_create(&CommandLabels { command })
            .inc();
    }

    /// Read the fleet link's counters when scraped (called once, when the link starts).
    pub fn watch_fleet(&self, stats: std::sync::Arc<crate::fleet::Stats>) {
        let _ = self.fleet.set(stats);
        for event in FLEET_EVENTS {
            let _ = self.fleet_bans.get_or_create(&FleetLabels { event });
        }
    }

    /// Bring the fleet series up to the link's counters.
    fn read_fleet(&self) {
        let Some(stats) = self.fleet.get() else {
            return;
        };
        use std::sync::atomic::Ordering::Relaxed;
        let now = fleet_counts(stats);
        let mut seen = self.fleet_seen.lock().unwrap_or_else(|p| p.into_inner());
        for ((event, now), seen) in FLEET_EVENTS.iter().zip(now).zip(seen.iter_mut()) {
            if now > *seen {
                self.fleet_bans
                    .get_or_create(&FleetLabels { event })
                    .inc_by(now - *seen);
                *seen = now;
            }
        }
        self.fleet_connected
            .set(i64::from(stats.connected.load(Relaxed)));
        self.fleet_lag
            .set(i64::try_from(stats.lag_ms.load(Relaxed)).unwrap_or(i64::MAX));
    }

    /// The text exposition (OpenMetrics text, which Prometheus reads), after reading
    /// the process's own RSS and CPU and the fleet link's counters.
    pub fn encode(&self) -> String {
        if let Some((rss, cpu)) = read_proc_self() {
            self.resident_memory.set(rss as i64);
            self.cpu_seconds.set(cpu);
        }
        self.read_fleet();
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// RSS in bytes and CPU seconds (user + system) from `/proc/self/stat`.
fn read_proc_self() -> Option<(u64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields counted from 3 (state): utime is field 14, stime 15, rss 24.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    let rss_pages: u64 = fields.get(24 - 3)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let (tick, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let tick = if tick > 0 { tick as f64 } else { 100.0 };
    let page = if page > 0 { page as u64 } else { 4096 };
    Some((rss_pages * page, (utime + stime) as f64 / tick))
}

pub fn kind_label(kind: ProbeKind) -> &'static str {
    match kind {
        ProbeKind::Syn => "syn",
        ProbeKind::Fin => "fin",
        ProbeKind::Null => "null",
        ProbeKind::Xmas => "xmas",
        ProbeKind::AckWindow => "ack",
        ProbeKind::Maimon => "maimon",
        ProbeKind::Other(_) => "other",
        ProbeKind::Udp => "udp",
        ProbeKind::Connect => "connect",
    }
}

pub fn proto_label(proto: Proto) -> &'static str {
    match proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}

pub fn evidence_label(evidence: Evidence) -> &'static str {
    match evidence {
        Evidence::Unverified => "unverified",
        Evidence::Verified => "verified",
        Evidence::Manual => "manual",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_self_is_read() {
        let (rss, cpu) = read_proc_self().expect("/proc/self/stat");
        assert!(rss > 1024 * 1024, "{rss}");
        assert!(cpu >= 0.0);
    }

    #[test]
    fn names_have_the_prefix_and_help() {
        let m = Metrics::new();
        m.ban(Evidence::Unverified, "nftables");
        let text = m.encode();
        assert!(
            text.contains("portsentry_bans_total{evidence=\"unverified\",backend=\"nftables\"} 1"),
            "{text}"
        );
        assert!(text.contains("# HELP portsentry_bans_in_force"), "{text}");
        assert!(text.contains("portsentry_process_resident_memory_bytes "));
        assert!(text.ends_with("# EOF\n"));
    }

    /// dist/portsentry-grafana.json queries only names the daemon exports.
    #[test]
    fn the_grafana_dashboard_uses_our_names() {
        let dashboard = include_str!("../../../dist/portsentry-grafana.json");
        let m = Metrics::new();
        // The one family whose labels come only with the first ban (the backend).
        m.ban(Evidence::Unverified, "nftables");
        let text = m.encode();
        let re = regex::Regex::new(r"portsentry_[a-z_]+").unwrap();
        let mut seen = 0;
        for m in re.find_iter(dashboard) {
            let name = m.as_str();
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            // Labelled families appear once used; their TYPE line is always there.
            let family = base.strip_suffix("_total").unwrap_or(base);
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "dashboard uses {name}, not exported:\n{text}"
            );
            seen += 1;
        }
        assert!(seen > 10, "{seen} names in the dashboard");
    }
}
