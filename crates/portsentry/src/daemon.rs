//! The running daemon: the capture thread (probe source → engine) and the reporter
//! thread (log lines, bans, legacy responses, records).
//!
//! Two probe sources, chosen at start:
//! - **nftables** (default where `nft` works): our table's trap rules see every probe
//!   in the kernel, ban on the very packet when the fast path is on, and log it to an
//!   NFLOG group; the daemon reads that group. The kernel's `socket` check already
//!   excluded ports in use and our own connections.
//! - **packet socket** (no nftables, or another `backend`): AF_PACKET with a BPF
//!   filter, the classifier (ACK/Maimon from our RSTs), and a live sock_diag check of
//!   ports in use. Bans then go to a fallback backend (ipset, iptables, routes), or
//!   with `backend = "none"` are only what the legacy KILL_* commands do.
//!
//! ```text
//!  capture thread                                         reporter thread
//!  NFLOG | AF_PACKET ─▶ parse ─▶ classify ─Probe─▶ Engine ─actions─▶ Responder
//!                                                   ▲                 (nft set, KILL_*,
//!                                                   └────outcomes──── history, blocked)
//! ```
//! The capture thread never blocks on the reporter: when the action queue is full an
//! alert is dropped and counted, and a dropped response is reported to the engine as
//! failed so that it is retried after the back-off.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ipnet::IpNet;
use portsentry_engine::classify::{self, Classifier};
use portsentry_engine::engine::{Action, Engine, Outcome};
use portsentry_engine::ignore::IgnoreSet;
use portsentry_engine::ports::{PortSet, Watch};
use portsentry_engine::wire::{self, ParseStats};
use portsentry_engine::{Millis, Probe, Proto};

use crate::config::{Backend, BlockMode};
use crate::control;
use crate::kernel_bans::{KernelBans, Restored};
use crate::logger::Logger;
use crate::protect::{self, ProtectedSources};
use crate::records::RecordFile;
use crate::resolve::Resolver;
use crate::respond::Responder;
use crate::settings::Settings;
use portsentry_kernel::backend::{self, BanBackend};
use portsentry_kernel::nflog::NflogReader;
use portsentry_kernel::nft::{self, Nft, TrapSpec};
use portsentry_kernel::packet::PacketSensor;
use portsentry_kernel::rtnl::ChangeWatcher;
use portsentry_kernel::sock_diag::PortUsage;

/// Actions waiting for the reporter. Deep enough for a burst of alerts from many
/// sources while a slow KILL_ROUTE runs; beyond that alerts are dropped, not queued.
const ACTION_QUEUE: usize = 4096;
/// Packets read per turn of the capture loop before housekeeping runs.
const PACKETS_PER_TURN: usize = 256;
/// Longest sleep of the capture loop, so shutdown and outcomes are seen promptly.
const MAX_WAIT: Duration = Duration::from_millis(200);
/// Protected addresses are re-read at most this often when the host's addresses or
/// routes change (a flapping link must not fork `nft` in a loop).
const PROTECT_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(2);
/// Sources the kernel banned recently, remembered so that the response knows the
/// element is already in the set. Cleared when it grows past this.
const KERNEL_BANNED_MEMORY: usize = 65_536;

/// Monotonic time that keeps counting through suspend (CLOCK_BOOTTIME).
pub fn boottime_now() -> Millis {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    Millis(secs * 1000 + nanos / 1_000_000)
}

/// What the capture and control threads send the reporter.
enum ToReporter {
    Probe(ProbeReport),
    Control(control::Pending),
    /// Our table was re-created empty: put the bans in force back into it.
    Restore,
    /// The capture thread ended: finish and save.
    Stop,
}

/// What the reporter tells the capture thread (the engine's owner).
enum Feedback {
    Outcome(IpAddr, Proto, Outcome),
    /// An administrator lifted the ban on this network: judge its sources anew.
    Forget(IpNet),
}

struct ProbeReport {
    probe: Probe,
    action: Action,
    /// The kernel's trap rule already put the source in the ban set.
    kernel_banned: bool,
}

/// Where probes come from.
enum ProbeSource {
    Nflog(NflogReader),
    Packet(Box<PacketSource>),
}

/// The packet-socket path's parts (boxed: much larger than an NFLOG reader).
struct PacketSource {
    sensor: PacketSensor,
    classifier: Classifier,
    usage: PortUsage,
}

/// The nftables side, when active.
struct NativeFirewall {
    nft: Nft,
    /// What was applied, to re-apply it if someone removes our table.
    spec: TrapSpec,
}

/// How often the capture thread checks that our table is still there (an `nft flush
/// ruleset` by another tool, e.g. a firewall reload, removes it).
const TABLE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Counters of the capture thread, logged at stop.
#[derive(Default)]
struct CaptureStats {
    parse: ParseStats,
    in_use_skipped: u64,
    usage_errors: u64,
    dropped_actions: u64,
}

/// Set in the environment of a re-executed daemon (SIGHUP reload): do not detach again.
pub const REEXEC_ENV: &str = "PORTSENTRY_REEXEC";

/// Why the daemon stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM/SIGINT: traps removed, bans left to expire in the kernel.
    Shutdown,
    /// SIGHUP with a valid new configuration: the caller re-executes the binary, which
    /// re-applies the table in place (the traps stay armed meanwhile; bans are kept).
    Reload,
}

/// Replace this process with a fresh copy of the binary and the same arguments
/// (same PID and stdio). Returns only on failure.
pub fn reexec() -> io::Error {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()
        .ok()
        .filter(|p| p.exists())
        .or_else(|| std::env::args_os().next().map(std::path::PathBuf::from))
        .unwrap_or_else(|| "portsentry".into());
    std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(REEXEC_ENV, "1")
        .exec()
}

/// Run until `shutdown` is set, or `reload` is set and `validate` accepts the new
/// configuration (a config with errors is reported and the daemon keeps running).
/// Returns after both threads ended.
pub fn run(
    settings: Settings,
    log: Arc<Logger>,
    shutdown: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    validate: &dyn Fn() -> Result<()>,
) -> Result<Stop> {
    log.log(&format!(
        "adminalert: PortSentry {} is starting (config: {}; settings: {}).",
        env!("CARGO_PKG_VERSION"),
        settings.config_source,
        settings.toml_source
    ));
    for notice in &settings.notices {
        log.log(notice);
    }
    let chosen = choose_backend(&settings, &log)?;

    // Files first, so a bad path stops startup before anything is installed.
    let history = RecordFile::open(&settings.history_file, false).context("HISTORY_FILE")?;
    let open_blocked = |proto| -> Result<Option<RecordFile>> {
        settings
            .mode(proto)
            .map(|m| RecordFile::open(&m.blocked_file, true).context("BLOCKED_FILE"))
            .transpose()
    };
    let tcp_blocked = open_blocked(Proto::Tcp)?;
    let udp_blocked = open_blocked(Proto::Udp)?;

    let protect_sources = ProtectedSources {
        resolv_conf: settings.protect.resolv_conf.clone(),
        extra: settings
            .ignore
            .iter()
            .chain(settings.protect.extra.iter().copied())
            .collect(),
    };
    let protected = gather_protected(&settings, &protect_sources)?;
    log.log(&format!(
        "adminalert: {} protected networks (ignore list{}) are never blocked",
        protected.len(),
        if settings.protect.enabled {
            ", local addresses, default gateways, resolvers"
        } else {
            ""
        }
    ));

    let (source, kernel, firewall) = if let Chosen::Nftables = chosen {
        let (reader, kernel, firewall) = start_nftables(&settings, &log, &protected)?;
        (ProbeSource::Nflog(reader), Some(kernel), Some(firewall))
    } else {
        let kernel = match chosen {
            Chosen::Fallback(backend) => {
                let name = backend.name();
                let (kernel, restored) = KernelBans::start_fallback(
                    backend,
                    settings.ban_policy.clone(),
                    settings.state_file.clone(),
                )?;
                log_restored(&log, &settings, name, restored);
                Some(kernel)
            }
            _ => {
                let (kernel, restored) = KernelBans::start_record_only(
                    settings.ban_policy.clone(),
                    settings.state_file.clone(),
                )?;
                log_restored(&log, &settings, "KILL_* commands only", restored);
                Some(kernel)
            }
        };
        let mut usage = PortUsage::new().context("cannot open the sock_diag netlink socket")?;
        announce_modes(&settings, &log, Some(&mut usage));
        let sensor = PacketSensor::open(settings.max_watched_port())
            .context("cannot open the packet socket (AF_PACKET needs root or CAP_NET_RAW)")?;
        let source = ProbeSource::Packet(Box::new(PacketSource {
            sensor,
            classifier: Classifier::new(Classifier::DEFAULT_PENDING_CAPACITY),
            usage,
        }));
        (source, kernel, None)
    };

    let responder = Responder::new(
        settings.tcp.as_ref().map(|m| m.plan.clone()),
        settings.udp.as_ref().map(|m| m.plan.clone()),
        tcp_blocked,
        udp_blocked,
        Some(history),
        kernel,
    );
    let (action_tx, action_rx) = mpsc::sync_channel::<ToReporter>(ACTION_QUEUE);
    let (outcome_tx, outcome_rx) = mpsc::channel::<Feedback>();
    let reporter = {
        let log = Arc::clone(&log);
        let resolver = Resolver::new(settings.resolve_host);
        thread::Builder::new()
            .name("reporter".into())
            .spawn(move || report_loop(action_rx, outcome_tx, responder, resolver, &log))
            .context("cannot start the reporter thread")?
    };
    let control_path = settings.control_socket.clone();
    {
        let tx = action_tx.clone();
        control::serve(&control_path, move |pending| {
            tx.send(ToReporter::Control(pending)).is_ok()
        })
        .with_context(|| format!("cannot open the control socket {}", control_path.display()))?;
    }

    log.log("adminalert: PortSentry is now active and listening.");
    crate::notify::notify("READY=1");
    let mut capture = Capture {
        settings: &settings,
        log: &log,
        source,
        firewall: firewall.as_ref(),
        protect_sources,
        engine: Engine::new(settings.engine.clone(), ignore_set(&protected)),
        stats: CaptureStats::default(),
        kernel_banned: HashMap::new(),
        probes: Vec::with_capacity(PACKETS_PER_TURN),
    };
    let result = capture.run(&shutdown, &reload, validate, action_tx, outcome_rx);
    drop(capture);
    // run() sent Stop; the reporter drains what came before and ends.
    let _ = reporter.join();
    let _ = std::fs::remove_file(&control_path);
    crate::notify::notify(match result {
        Ok(Stop::Reload) => "RELOADING=1",
        _ => "STOPPING=1",
    });
    if let Ok(Stop::Reload) = result {
        log.log("adminalert: PortSentry is restarting to load the new configuration (traps and bans stay in place)");
        return result;
    }
    if let Some(fw) = &firewall {
        if !fw.nft.exists().unwrap_or(true) {
            log.log(&format!(
                "adminalert: table inet {} is gone (portsentry flush --all?): nothing to remove",
                fw.nft.table()
            ));
        } else {
            match fw.nft.remove_traps() {
            Ok(()) => log.log(&format!(
                "adminalert: trap rules removed from table inet {}; bans stay in the kernel until they expire",
                fw.nft.table()
            )),
            Err(e) => log.log(&format!("adminalert: ERROR: cannot remove the trap rules: {e}")),
            }
        }
    }
    log.log("adminalert: PortSentry is shutting down");
    result
}

/// Where bans go.
enum Chosen {
    Nftables,
    Fallback(Box<dyn BanBackend>),
    /// Only the legacy KILL_* commands act.
    LegacyOnly,
}

/// Decide where bans go, from `[firewall] backend` and what this host has.
fn choose_backend(settings: &Settings, log: &Logger) -> Result<Chosen> {
    let prepared = |mut b: Box<dyn BanBackend>| -> Result<Box<dyn BanBackend>> {
        b.prepare()
            .with_context(|| format!("cannot set up the {} ban backend", b.name()))?;
        Ok(b)
    };
    match settings.firewall.backend {
        Backend::None => Ok(Chosen::LegacyOnly),
        Backend::Nftables => {
            if !Nft::available() {
                bail!(
                    "firewall.backend is \"nftables\" but nft is missing or the kernel refuses it"
                );
            }
            Ok(Chosen::Nftables)
        }
        Backend::Ipset => Ok(Chosen::Fallback(prepared(Box::new(
            backend::IpsetBackend::new(),
        ))?)),
        Backend::Iptables => Ok(Chosen::Fallback(prepared(Box::new(
            backend::IptablesBackend::new(),
        ))?)),
        Backend::Route => Ok(Chosen::Fallback(prepared(Box::new(
            backend::RouteBackend::new(backend::RouteKind::default())?,
        ))?)),
        Backend::Auto => {
            if Nft::available() {
                return Ok(Chosen::Nftables);
            }
            // Without nftables: the first fallback that can be set up.
            for candidate in backend::candidates() {
                let name = candidate.name();
                match prepared(candidate) {
                    Ok(b) => {
                        log.log(&format!(
                            "adminalert: nftables not available: bans go to {name}; probes are read from the packet socket"
                        ));
                        return Ok(Chosen::Fallback(b));
                    }
                    Err(e) => log.log(&format!("adminalert: WARNING: {e:#}")),
                }
            }
            log.log("adminalert: no ban backend works here: only the KILL_* commands block");
            Ok(Chosen::LegacyOnly)
        }
    }
}

fn gather_protected(settings: &Settings, sources: &ProtectedSources) -> Result<Vec<IpNet>> {
    if settings.protect.enabled {
        protect::gather(sources).context("cannot read this host's addresses and routes")
    } else {
        Ok(sources.extra.clone())
    }
}

fn ignore_set(nets: &[IpNet]) -> IgnoreSet {
    let mut set = IgnoreSet::new();
    for net in nets {
        set.insert(*net);
    }
    set
}

/// Ports a mode watches, as inclusive ranges for the kernel's interval set.
fn port_ranges(watch: &Watch) -> Vec<(u16, u16)> {
    let set: PortSet = match watch {
        Watch::Listed(ports) => ports.clone(),
        Watch::Advanced { below, exclude } => (1..=u16::MAX)
            .take_while(|p| u32::from(*p) < *below)
            .filter(|p| !exclude.contains(*p))
            .collect(),
    };
    set.ranges().collect()
}

fn trap_spec(settings: &Settings) -> TrapSpec {
    let fw = &settings.firewall;
    let fast = fw.fast_path && settings.engine.scan_trigger == 0;
    let bans = |proto| {
        fast && settings
            .mode(proto)
            .is_some_and(|m| m.plan.block == BlockMode::Block)
    };
    TrapSpec {
        table: fw.table.clone(),
        tcp_ports: settings.tcp.as_ref().map(|m| port_ranges(&m.watch)),
        udp_ports: settings.udp.as_ref().map(|m| port_ranges(&m.watch)),
        ban_tcp: bans(Proto::Tcp),
        ban_udp: bans(Proto::Udp),
        ban_timeout: settings.ban_policy.ban_time,
        nflog_group: fw.nflog_group,
        set_size: fw.set_size,
        priority: fw.priority,
    }
}

/// Bind the NFLOG group. Right after a reload the previous process's binding may take a
/// moment to be released by the kernel (it is freed after an RCU grace period), so a
/// busy group is retried for up to 2 s.
fn open_nflog(group: u16) -> Result<NflogReader> {
    let mut tries = 0;
    loop {
        match NflogReader::open(group) {
            Ok(reader) => return Ok(reader),
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy && tries < 40 => {
                tries += 1;
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read NFLOG group {group}"));
            }
        }
    }
}

/// Install the table, restore bans, open the NFLOG group.
fn start_nftables(
    settings: &Settings,
    log: &Logger,
    protected: &[IpNet],
) -> Result<(NflogReader, KernelBans, NativeFirewall)> {
    let fw = &settings.firewall;
    // The group is bound before the traps exist, so no trapped packet goes unread.
    let reader = open_nflog(fw.nflog_group)?;
    let nft = Nft::new(&fw.table)?;
    let spec = trap_spec(settings);
    let applied = nft
        .apply(&spec)
        .with_context(|| format!("cannot install table inet {}", fw.table))?;
    nft.set_protected(protected)
        .context("cannot load the protected set")?;
    if let nft::Applied::Rebuilt { bans, protected } = applied {
        log.log(&format!(
            "adminalert: table inet {} rebuilt for a changed definition; {bans} host bans and {protected} protected entries carried over (network bans are put back from the state file)",
            fw.table
        ));
    }
    for mode in [&settings.tcp, &settings.udp].into_iter().flatten() {
        let ranges = port_ranges(&mode.watch);
        let ports: usize = ranges.iter().map(|(lo, hi)| usize::from(hi - lo) + 1).sum();
        let banning = match mode.proto {
            Proto::Tcp => spec.ban_tcp,
            Proto::Udp => spec.ban_udp,
        };
        log.log(&format!(
            "adminalert: {} mode: {ports} {} ports trapped in the kernel ({}); ports with a local socket are excluded live",
            mode.name,
            mode.proto,
            if banning {
                "ban on the first probe"
            } else {
                "log only; the daemon decides"
            }
        ));
    }
    let (kernel, restored) = KernelBans::start_nftables(
        &fw.table,
        settings.ban_policy.clone(),
        settings.state_file.clone(),
    )?;
    log_restored(log, settings, "nftables", restored);
    Ok((reader, kernel, NativeFirewall { nft, spec }))
}

fn log_restored(log: &Logger, settings: &Settings, backend: &str, restored: Restored) {
    log.log(&format!(
        "adminalert: bans restored from {} ({backend}): {} put back, {} still in the kernel, {} found only in the kernel, {} expired",
        settings.state_file.display(),
        restored.put_back,
        restored.already_in_kernel,
        restored.adopted_from_kernel,
        restored.expired_dropped
    ));
}

fn announce_modes(settings: &Settings, log: &Logger, usage: Option<&mut PortUsage>) {
    for mode in [&settings.tcp, &settings.udp].into_iter().flatten() {
        match &mode.watch {
            Watch::Listed(ports) => {
                for port in ports.iter() {
                    log.log(&format!(
                        "adminalert: Going into stealth listen mode on {} port: {port}",
                        mode.proto
                    ));
                }
            }
            Watch::Advanced { below, exclude } => {
                log.log(&format!(
                    "adminalert: Advanced mode will monitor first {below} ports"
                ));
                if exclude.is_empty() {
                    log.log("adminalert: Advanced mode will manually exclude no ports");
                }
                for port in exclude.iter() {
                    log.log(&format!(
                        "adminalert: Advanced mode will manually exclude port: {port}"
                    ));
                }
            }
        }
    }
    // In-use ports are excluded live, at every probe; this list is for the admin.
    if let Some(usage) = usage {
        for mode in [&settings.tcp, &settings.udp].into_iter().flatten() {
            if let Ok(ports) = usage.listening_ports(mode.proto) {
                for port in ports.into_iter().filter(|p| mode.watch.contains(*p)) {
                    log.log(&format!(
                        "adminalert: Advanced Stealth scan detection mode activated. Ignored {} port: {port}",
                        mode.proto
                    ));
                }
            }
        }
    }
}

struct Capture<'a> {
    settings: &'a Settings,
    log: &'a Logger,
    source: ProbeSource,
    firewall: Option<&'a NativeFirewall>,
    protect_sources: ProtectedSources,
    engine: Engine,
    stats: CaptureStats,
    kernel_banned: HashMap<IpAddr, Millis>,
    /// Probes of one turn: (probe, the kernel already banned its source).
    probes: Vec<(Probe, bool)>,
}

impl Capture<'_> {
    fn run(
        &mut self,
        shutdown: &AtomicBool,
        reload: &AtomicBool,
        validate: &dyn Fn() -> Result<()>,
        action_tx: SyncSender<ToReporter>,
        outcome_rx: Receiver<Feedback>,
    ) -> Result<Stop> {
        let mut stop = Stop::Shutdown;
        let mut watcher = match ChangeWatcher::open() {
            Ok(w) => Some(w),
            Err(e) => {
                self.log.log(&format!(
                    "adminalert: WARNING: cannot watch address and route changes ({e}); the protected set is read only at start"
                ));
                None
            }
        };
        let mut protect_pending = false;
        let mut last_protect_refresh = Instant::now();
        let mut last_table_check = Instant::now();

        while !shutdown.load(Ordering::Relaxed) {
            if reload.swap(false, Ordering::Relaxed) {
                match validate() {
                    Ok(()) => {
                        stop = Stop::Reload;
                        break;
                    }
                    Err(e) => self.log.log(&format!(
                        "adminalert: ERROR: reload refused, the configuration has errors; still running with the old one:\n{e:#}"
                    )),
                }
            }
            let now = boottime_now();
            let wait = self
                .engine
                .poll_timeout()
                .map(|t| t.since(now))
                .unwrap_or(MAX_WAIT)
                .min(MAX_WAIT);
            self.wait(wait).context("waiting for packets")?;
            let now = boottime_now();
            self.read_probes(now).context("reading probes")?;
            for (probe, kernel_banned) in std::mem::take(&mut self.probes) {
                if kernel_banned {
                    if self.kernel_banned.len() >= KERNEL_BANNED_MEMORY {
                        self.kernel_banned.clear();
                    }
                    self.kernel_banned.insert(probe.src, now);
                }
                self.engine.handle_probe(now, probe);
            }
            while let Ok(feedback) = outcome_rx.try_recv() {
                match feedback {
                    Feedback::Outcome(src, proto, outcome) => {
                        self.engine
                            .handle_outcome(boottime_now(), src, proto, outcome);
                    }
                    Feedback::Forget(net) => self.engine.forget(net),
                }
            }
            let now = boottime_now();
            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.engine.handle_timeout(now);
            }
            self.dispatch(now, &action_tx);

            if watcher.as_mut().is_some_and(ChangeWatcher::changed) {
                protect_pending = true;
            }
            if protect_pending && last_protect_refresh.elapsed() >= PROTECT_REFRESH_MIN_INTERVAL {
                protect_pending = false;
                last_protect_refresh = Instant::now();
                self.refresh_protected("addresses or routes changed");
            }
            if last_table_check.elapsed() >= TABLE_CHECK_INTERVAL {
                last_table_check = Instant::now();
                self.check_table(&action_tx);
            }
        }
        // Blocking send: the reporter is draining, and must hear that we are done (the
        // control thread holds another sender, so the channel never disconnects).
        let _ = action_tx.send(ToReporter::Stop);
        self.log_stats();
        Ok(stop)
    }

    fn wait(&self, timeout: Duration) -> io::Result<bool> {
        match &self.source {
            ProbeSource::Nflog(reader) => reader.wait(timeout),
            ProbeSource::Packet(p) => p.sensor.wait(timeout),
        }
    }

    /// Read up to one turn's worth of packets into `self.probes`.
    fn read_probes(&mut self, now: Millis) -> io::Result<()> {
        let settings = self.settings;
        let stats = &mut self.stats;
        let probes = &mut self.probes;
        match &mut self.source {
            ProbeSource::Nflog(reader) => {
                reader.drain(|packet| {
                    let parsed = wire::parse_ip(packet.payload);
                    stats.parse.record(&parsed);
                    let Ok(segment) = parsed else { return };
                    let Some(probe) = classify::classify_trapped(&segment) else {
                        return;
                    };
                    // The kernel matched the port already; the mode must exist.
                    if settings.mode(probe.proto()).is_none() {
                        return;
                    }
                    let banned = packet.prefix == nft::PREFIX_BANNED;
                    probes.push((probe, banned));
                })?;
            }
            ProbeSource::Packet(packet) => {
                let PacketSource {
                    sensor,
                    classifier,
                    usage,
                } = &mut **packet;
                for _ in 0..PACKETS_PER_TURN {
                    let Some(captured) = sensor.recv_next()? else {
                        break;
                    };
                    let parsed = wire::parse_ip(captured.bytes);
                    stats.parse.record(&parsed);
                    let Ok(segment) = parsed else { continue };
                    let Some(probe) = classifier.classify(now, captured.direction, &segment) else {
                        continue;
                    };
                    let Some(mode) = settings.mode(probe.proto()) else {
                        continue;
                    };
                    if !mode.watch.contains(probe.dport) {
                        continue;
                    }
                    match usage.in_use(probe.proto(), probe.dport, Instant::now()) {
                        Ok(true) => {
                            stats.in_use_skipped += 1;
                            continue;
                        }
                        Ok(false) => {}
                        Err(_) => {
                            // Without the socket table a service's client cannot be told
                            // from a scanner; staying silent is safer than banning clients.
                            stats.usage_errors += 1;
                            continue;
                        }
                    }
                    probes.push((probe, false));
                }
            }
        }
        Ok(())
    }

    fn dispatch(&mut self, now: Millis, action_tx: &SyncSender<ToReporter>) {
        while let Some(action) = self.engine.poll_action() {
            let probe = match &action {
                Action::Alert { probe, .. }
                | Action::Respond { probe }
                | Action::AlreadyBlocked { probe, .. }
                | Action::Ignored { probe, .. }
                | Action::Suppressed { probe, .. } => *probe,
            };
            let kernel_banned = matches!(action, Action::Respond { .. })
                && self.kernel_banned.remove(&probe.src).is_some();
            let report = ProbeReport {
                probe,
                action,
                kernel_banned,
            };
            match action_tx.try_send(ToReporter::Probe(report)) {
                Ok(()) => {}
                Err(TrySendError::Full(rejected)) | Err(TrySendError::Disconnected(rejected)) => {
                    self.stats.dropped_actions += 1;
                    if let ToReporter::Probe(report) = rejected
                        && matches!(report.action, Action::Respond { .. })
                    {
                        self.engine
                            .handle_outcome(now, probe.src, probe.proto(), Outcome::Failed);
                    }
                }
            }
        }
    }

    /// Re-install our table if something removed it, and have the bans put back.
    fn check_table(&mut self, action_tx: &SyncSender<ToReporter>) {
        let Some(fw) = self.firewall else { return };
        match fw.nft.exists() {
            Ok(true) => {}
            Ok(false) => {
                match fw.nft.apply(&fw.spec) {
                    Ok(_) => {
                        self.log.log(&format!(
                            "adminalert: WARNING: table inet {} was removed by something else (nft flush ruleset?); installed it again and putting the bans in force back",
                            fw.nft.table()
                        ));
                        // The same refresh as on an address change: kernel set and
                        // engine ignore list stay one list.
                        self.refresh_protected("table installed again");
                        let _ = action_tx.send(ToReporter::Restore);
                    }
                    Err(e) => self.log.log(&format!(
                        "adminalert: ERROR: table inet {} was removed and cannot be installed again: {e}",
                        fw.nft.table()
                    )),
                }
            }
            Err(e) => self.log.log(&format!(
                "adminalert: ERROR: cannot check our nftables table: {e}"
            )),
        }
    }

    /// Re-read the protected networks and load them into our table and the engine.
    fn refresh_protected(&mut self, why: &str) {
        let nets = match gather_protected(self.settings, &self.protect_sources) {
            Ok(nets) => nets,
            Err(e) => {
                self.log.log(&format!(
                    "adminalert: ERROR: cannot refresh the protected set: {e:#}"
                ));
                return;
            }
        };
        if let Some(fw) = self.firewall
            && let Err(e) = fw.nft.set_protected(&nets)
        {
            self.log.log(&format!(
                "adminalert: ERROR: cannot update the protected set: {e}"
            ));
            return;
        }
        self.engine.set_ignore(ignore_set(&nets));
        self.log.log(&format!(
            "adminalert: {why}: {} protected networks",
            nets.len()
        ));
    }

    fn log_stats(&self) {
        let e = self.engine.stats();
        let s = &self.stats;
        let overruns = match &self.source {
            ProbeSource::Nflog(reader) => reader.overruns(),
            ProbeSource::Packet(p) => p.sensor.take_stats().map(|k| k.dropped).unwrap_or(0),
        };
        self.log.log(&format!(
            "adminalert: statistics: {} probes judged, {} alerts, {} responses, {} from ignored or protected hosts, {} to ports in use skipped, {} socket-table errors, {} log lines damped, {} actions dropped, {} packets lost by the kernel queue; packets: {} parsed, {} truncated, {} fragments, {} malformed",
            e.probes,
            e.alerts,
            e.responses,
            e.ignored,
            s.in_use_skipped,
            s.usage_errors,
            e.suppressed_lines,
            s.dropped_actions,
            overruns,
            s.parse.parsed,
            s.parse.truncated,
            s.parse.fragments,
            s.parse.malformed,
        ));
    }
}

/// How often the reporter wakes without work, to save the state file and note expiry.
const REPORTER_TICK: Duration = Duration::from_millis(500);

fn report_loop(
    actions: Receiver<ToReporter>,
    outcomes: mpsc::Sender<Feedback>,
    mut responder: Responder,
    mut resolver: Resolver,
    log: &Logger,
) {
    let started = Instant::now();
    loop {
        match actions.recv_timeout(REPORTER_TICK) {
            Ok(ToReporter::Probe(report)) => {
                report_one(report, &outcomes, &mut responder, &mut resolver, log);
            }
            Ok(ToReporter::Control(pending)) => {
                let reply =
                    control_request(pending.request, &mut responder, &outcomes, log, started);
                let _ = pending.reply.send(reply);
            }
            Ok(ToReporter::Restore) => {
                if let Some(kernel) = responder.kernel_mut() {
                    match kernel.put_back_missing() {
                        Ok(n) => log.log(&format!(
                            "adminalert: {n} bans in force put back into the kernel"
                        )),
                        Err(e) => log.log(&format!(
                            "adminalert: ERROR: cannot put the bans back: {e:#}"
                        )),
                    }
                }
            }
            Ok(ToReporter::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        housekeeping(&mut responder, log, false);
    }
    housekeeping(&mut responder, log, true);
}

/// Carry out one request from the control socket; the reply line for the client.
fn control_request(
    request: control::Request,
    responder: &mut Responder,
    feedback: &mpsc::Sender<Feedback>,
    log: &Logger,
    started: Instant,
) -> String {
    use control::Request;
    let uptime = humantime::format_duration(Duration::from_secs(started.elapsed().as_secs()));
    let Some(kernel) = responder.kernel_mut().filter(|k| k.is_native()) else {
        return match request {
            Request::Status => format!(
                "ok: portsentry {} running for {uptime}; no ban backend (only the KILL_* commands act)",
                env!("CARGO_PKG_VERSION"),
            ),
            _ => "error: bans from the command line need a ban backend (firewall.backend is none)"
                .into(),
        };
    };
    match request {
        Request::Status => format!(
            "ok: portsentry {} running for {uptime}; {} bans in force",
            env!("CARGO_PKG_VERSION"),
            kernel.active_count()
        ),
        Request::Ban { net, duration } => match kernel.manual_ban(net, duration) {
            Ok(ban) => {
                let length = crate::kernel_bans::for_how_long(duration);
                log.log(&format!(
                    "attackalert: Host {net} has been banned by the administrator {length}, offence {}",
                    ban.offences
                ));
                format!("ok: {net} banned {length} (offence {})", ban.offences)
            }
            Err(e) => format!("error: {e:#}"),
        },
        Request::Unban { net } => match kernel.unban(net) {
            Ok(Some(ban)) => {
                log.log(&format!(
                    "adminalert: ban on {} lifted by the administrator",
                    ban.key
                ));
                let _ = feedback.send(Feedback::Forget(ban.key));
                format!("ok: ban on {} lifted", ban.key)
            }
            Ok(None) => format!("error: no ban covers {net}"),
            Err(e) => format!("error: {e:#}"),
        },
    }
}

fn housekeeping(responder: &mut Responder, log: &Logger, force_save: bool) {
    let Some(kernel) = responder.kernel_mut() else {
        return;
    };
    let now = crate::kernel_bans::unix_now();
    let ended = kernel.take_expired(now);
    // A ban the full book had to drop is not over: it still runs out in the kernel.
    let (expired, dropped): (Vec<_>, Vec<_>) = ended
        .into_iter()
        .partition(|(ban, _)| ban.expires_at.is_some_and(|t| t <= now));
    if !dropped.is_empty() {
        log.log(&format!(
            "adminalert: WARNING: ban book full: {} bans forgotten early (most recent offences kept){}",
            dropped.len(),
            if kernel.expires_by_itself() {
                "; their kernel elements still expire on time"
            } else {
                "; they were lifted"
            }
        ));
    }
    // One line per ended ban, except in bulk (a flood ending): then one summary.
    const MAX_LINES: usize = 10;
    if expired.len() > MAX_LINES {
        log.log(&format!("adminalert: {} bans ended", expired.len()));
    }
    for (ban, err) in expired.iter().chain(dropped.iter()) {
        match err {
            None if expired.len() <= MAX_LINES && ban.expires_at.is_some_and(|t| t <= now) => {
                log.log(&format!(
                    "adminalert: ban on {} ended (offence {})",
                    ban.key, ban.offences
                ));
            }
            None => {}
            Some(e) => log.log(&format!(
                "adminalert: ERROR: ban on {} ended but could not be removed: {e}",
                ban.key
            )),
        }
    }
    if let Some(err) = kernel.maybe_save(force_save) {
        log.log(&format!("adminalert: ERROR: {err}"));
    }
}

fn report_one(
    report: ProbeReport,
    outcomes: &mpsc::Sender<Feedback>,
    responder: &mut Responder,
    resolver: &mut Resolver,
    log: &Logger,
) {
    let ProbeReport {
        probe,
        action,
        kernel_banned,
    } = report;
    let ip = probe.src;
    let name = resolver.name(ip);
    let proto = probe.proto();
    let more = |suppressed: u32| {
        if suppressed > 0 {
            format!(" ({suppressed} more hits not logged)")
        } else {
            String::new()
        }
    };
    match action {
        Action::Alert { suppressed, .. } => {
            if suppressed > 0 {
                log.log(&format!(
                    "attackalert: {suppressed} more hits from host: {name}/{ip} were not logged"
                ));
            }
            log.log(&format!(
                "attackalert: {} from host: {name}/{ip} to {proto} port: {}",
                probe.kind, probe.dport
            ));
            if probe.ip_options {
                log.log(&format!(
                    "attackalert: Packet from host: {name}/{ip} to {proto} port: {} has IP options set (detection avoidance technique).",
                    probe.dport
                ));
            }
        }
        Action::Respond { .. } => {
            let outcome = responder.respond(log, &probe, &name, kernel_banned);
            let _ = outcomes.send(Feedback::Outcome(ip, proto, outcome));
        }
        Action::Suppressed { count, .. } => {
            log.log(&format!(
                "attackalert: {count} more hits from host: {name}/{ip} were not logged (the last to {proto} port: {})",
                probe.dport
            ));
        }
        Action::AlreadyBlocked { suppressed, .. } => {
            log.log(&format!(
                "attackalert: Host: {name}/{ip} is already blocked Ignoring{}",
                more(suppressed)
            ));
        }
        Action::Ignored { suppressed, .. } => {
            log.log(&format!(
                "attackalert: Ignored host: {name}/{ip} sent {} to {proto} port: {} (in ignore file, not blocked){}",
                probe.kind,
                probe.dport,
                more(suppressed)
            ));
        }
    }
}
