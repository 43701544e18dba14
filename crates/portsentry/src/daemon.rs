//! The running daemon: the capture thread (sensor → parse → classify → watch → in-use
//! check → engine) and the reporter thread (log lines, responses, records).
//!
//! ```text
//!  capture thread                                  reporter thread
//!  PacketSensor ─bytes─▶ wire::parse_ip ─▶ Classifier ─Probe─▶ Watch? in use?
//!        ▲                                                  │
//!        │                                          Engine::handle_probe
//!        │ outcomes (mpsc) ◀── Responder ◀── actions (bounded sync_channel)
//! ```
//! The capture thread never blocks on the reporter: when the action queue is full an
//! alert is dropped and counted, and a dropped response is reported to the engine as
//! failed so that it is retried after the back-off.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use portsentry_engine::classify::Classifier;
use portsentry_engine::engine::{Action, Engine, Outcome};
use portsentry_engine::ports::Watch;
use portsentry_engine::wire::{self, ParseStats};
use portsentry_engine::{Millis, Probe, Proto};

use crate::logger::Logger;
use crate::records::RecordFile;
use crate::resolve::Resolver;
use crate::respond::Responder;
use crate::sensor::PacketSensor;
use crate::settings::Settings;
use crate::sockets::PortUsage;

/// Actions waiting for the reporter. Deep enough for a burst of alerts from many
/// sources while a slow KILL_ROUTE runs; beyond that alerts are dropped, not queued.
const ACTION_QUEUE: usize = 4096;
/// Packets read per turn of the capture loop before housekeeping runs.
const PACKETS_PER_TURN: usize = 256;
/// Longest sleep of the capture loop, so shutdown and outcomes are seen promptly.
const MAX_WAIT: Duration = Duration::from_millis(200);

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

struct ProbeReport {
    probe: Probe,
    action: Action,
}

/// Run until `shutdown` is set. Returns after both threads ended.
pub fn run(settings: Settings, log: Arc<Logger>, shutdown: Arc<AtomicBool>) -> Result<()> {
    log.log(&format!(
        "adminalert: PortSentry {} is starting (config: {}).",
        env!("CARGO_PKG_VERSION"),
        settings.config_source
    ));
    for notice in &settings.notices {
        log.log(notice);
    }

    let mut usage = PortUsage::new().context("cannot open the sock_diag netlink socket")?;
    announce_modes(&settings, &log, &mut usage);

    // Files first, so a bad path stops startup before the sensor is up.
    let history = RecordFile::open(&settings.history_file, false)
        .with_context(|| "HISTORY_FILE".to_string())?;
    let open_blocked = |proto| -> Result<Option<RecordFile>> {
        settings
            .mode(proto)
            .map(|m| RecordFile::open(&m.blocked_file, true).context("BLOCKED_FILE"))
            .transpose()
    };
    let responder = Responder::new(
        settings.tcp.as_ref().map(|m| m.plan.clone()),
        settings.udp.as_ref().map(|m| m.plan.clone()),
        open_blocked(Proto::Tcp)?,
        open_blocked(Proto::Udp)?,
        Some(history),
    );

    let max_port = settings.max_watched_port();
    let mut sensor = PacketSensor::open(max_port)
        .context("cannot open the packet socket (AF_PACKET needs root or CAP_NET_RAW)")?;

    let (action_tx, action_rx) = mpsc::sync_channel::<ProbeReport>(ACTION_QUEUE);
    let (outcome_tx, outcome_rx) = mpsc::channel::<(IpAddr, Proto, Outcome)>();
    let reporter = {
        let log = Arc::clone(&log);
        let resolver = Resolver::new(settings.resolve_host);
        thread::Builder::new()
            .name("reporter".into())
            .spawn(move || report_loop(action_rx, outcome_tx, responder, resolver, &log))
            .context("cannot start the reporter thread")?
    };

    log.log("adminalert: PortSentry is now active and listening.");
    let result = capture_loop(
        &settings,
        &log,
        &shutdown,
        &mut sensor,
        &mut usage,
        action_tx,
        outcome_rx,
    );
    // The action sender is dropped by capture_loop; the reporter drains and ends.
    let _ = reporter.join();
    log.log("adminalert: PortSentry is shutting down");
    result
}

fn announce_modes(settings: &Settings, log: &Logger, usage: &mut PortUsage) {
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
        // In-use ports are excluded live, at every probe; this list is for the admin.
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

#[allow(clippy::too_many_arguments)]
fn capture_loop(
    settings: &Settings,
    log: &Logger,
    shutdown: &AtomicBool,
    sensor: &mut PacketSensor,
    usage: &mut PortUsage,
    action_tx: SyncSender<ProbeReport>,
    outcome_rx: Receiver<(IpAddr, Proto, Outcome)>,
) -> Result<()> {
    let mut engine = Engine::new(settings.engine.clone(), settings.ignore.clone());
    let mut classifier = Classifier::new(Classifier::DEFAULT_PENDING_CAPACITY);
    let mut parse_stats = ParseStats::default();
    let mut dropped_actions: u64 = 0;
    let mut in_use_skipped: u64 = 0;
    let mut usage_errors: u64 = 0;

    while !shutdown.load(Ordering::Relaxed) {
        let now = boottime_now();
        let wait = engine
            .poll_timeout()
            .map(|t| t.since(now))
            .unwrap_or(MAX_WAIT)
            .min(MAX_WAIT);
        if !sensor.wait(wait).context("waiting for packets")? {
            // Timed out: fall through to housekeeping.
        }
        let now = boottime_now();
        for _ in 0..PACKETS_PER_TURN {
            let Some(captured) = sensor.recv_next().context("reading the packet socket")? else {
                break;
            };
            let parsed = wire::parse_ip(captured.bytes);
            parse_stats.record(&parsed);
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
                    in_use_skipped += 1;
                    continue;
                }
                Ok(false) => {}
                Err(_) => {
                    // Without the socket table we cannot tell a service's client from a
                    // scanner; staying silent is safer than banning clients.
                    usage_errors += 1;
                    if usage_errors.is_power_of_two() {
                        log.log(&format!(
                            "adminalert: ERROR: cannot read the socket table ({usage_errors} times); probes to port {} not judged",
                            probe.dport
                        ));
                    }
                    continue;
                }
            }
            engine.handle_probe(now, probe);
        }
        while let Ok((src, proto, outcome)) = outcome_rx.try_recv() {
            engine.handle_outcome(boottime_now(), src, proto, outcome);
        }
        let now = boottime_now();
        if engine.poll_timeout().is_some_and(|t| t <= now) {
            engine.handle_timeout(now);
        }
        while let Some(action) = engine.poll_action() {
            let probe = match &action {
                Action::Alert { probe, .. }
                | Action::Respond { probe }
                | Action::AlreadyBlocked { probe, .. }
                | Action::Ignored { probe, .. } => *probe,
            };
            match action_tx.try_send(ProbeReport { probe, action }) {
                Ok(()) => {}
                Err(TrySendError::Full(report)) | Err(TrySendError::Disconnected(report)) => {
                    dropped_actions += 1;
                    if matches!(report.action, Action::Respond { .. }) {
                        engine.handle_outcome(now, probe.src, probe.proto(), Outcome::Failed);
                    }
                }
            }
        }
    }
    drop(action_tx);
    let stats = engine.stats();
    log.log(&format!(
        "adminalert: statistics: {} probes judged, {} alerts, {} responses, {} from ignored hosts, {} to ports in use skipped, {} log lines damped, {} actions dropped; packets: {} parsed, {} truncated, {} fragments, {} malformed",
        stats.probes,
        stats.alerts,
        stats.responses,
        stats.ignored,
        in_use_skipped,
        stats.suppressed_lines,
        dropped_actions,
        parse_stats.parsed,
        parse_stats.truncated,
        parse_stats.fragments,
        parse_stats.malformed,
    ));
    Ok(())
}

fn report_loop(
    actions: Receiver<ProbeReport>,
    outcomes: mpsc::Sender<(IpAddr, Proto, Outcome)>,
    mut responder: Responder,
    mut resolver: Resolver,
    log: &Logger,
) {
    for ProbeReport { probe, action } in actions {
        let ip = probe.src;
        let name = resolver.name(ip);
        let proto = probe.proto();
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
                let outcome = responder.respond(log, &probe, &name);
                let _ = outcomes.send((ip, proto, outcome));
            }
            Action::AlreadyBlocked { suppressed, .. } => {
                let more = if suppressed > 0 {
                    format!(" ({suppressed} more hits not logged)")
                } else {
                    String::new()
                };
                log.log(&format!(
                    "attackalert: Host: {name}/{ip} is already blocked Ignoring{more}"
                ));
            }
            Action::Ignored { suppressed, .. } => {
                let more = if suppressed > 0 {
                    format!(" ({suppressed} more hits not logged)")
                } else {
                    String::new()
                };
                log.log(&format!(
                    "attackalert: Ignored host: {name}/{ip} sent {} to {proto} port: {} (in ignore file, not blocked){more}",
                    probe.kind, probe.dport
                ));
            }
        }
    }
}
