//! The running daemon, split by stage. Data flows one way through them:
//!
//! ```text
//!  startup ──▶ source ──Probe──▶ capture (Engine) ──Action──▶ reporter ──▶ respond
//!   (table,     (NFLOG |          (main thread)                (thread)     (native ban,
//!    backend,    AF_PACKET)             ▲                         │          KILL_*,
//!    restore)                           └──────── Outcome ────────┘          records)
//! ```
//! - [`startup`]: where bans go, the protected set, our nftables table and its NFLOG
//!   group, bans restored from the state file;
//! - [`source`]: probe sources behind one trait: our nftables traps (NFLOG) where
//!   `nft` works, else the packet socket with a BPF filter;
//! - [`listener`]: the probe source of bound sockets (classic `-tcp`/`-udp`, handshake
//!   trap ports), read in the same loop as the other;
//! - [`capture`]: the main thread's loop around the engine;
//! - [`known_peers`]: the packet path's known peers, from the socket table;
//! - [`reporter`]: the thread that owns the bans, logs, responds and saves;
//! - [`respond`]: one response: native ban, then 1.2's chain and records;
//! - [`unbanned`]: probes the kernel dropped without a ban (known peers, past the ban
//!   budget, full set) and their damped lines;
//! - [`signals`]: the handlers' flags, the mask across a reload's exec, reload settling;
//! - [`gauges`]: the depths of the queues between the threads;
//! - [`answers`]: the reporter's parts of the control socket's JSON answers.
//!
//! With `[fleet]`, the fleet link (`crate::fleet`, two threads of its own) is one more
//! producer and consumer of the reporter: the reporter publishes through a bounded
//! queue, the link hands it what it read as `ToReporter::Fleet`.
//!
//! This module wires them together and owns the process-level choices: what a stop
//! means, and the re-execution that a SIGHUP reload is.

pub mod answers;
pub mod capture;
pub mod gauges;
pub mod known_peers;
pub mod listener;
pub mod reporter;
pub mod respond;
pub mod signals;
pub mod source;
pub mod startup;
pub mod unbanned;

use std::io;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use anyhow::{Context, Result};
use portsentry_engine::Proto;
use portsentry_engine::engine::Engine;
use portsentry_engine::ignore::IgnoreSet;
use portsentry_kernel::packet::PacketSensor;
use portsentry_kernel::sock_diag::PortUsage;

use crate::alerts;
use crate::bans::StateFile;
use crate::clock;
use crate::control;
use crate::logger::Logger;
use crate::records::RecordFile;
use crate::resolve::Resolver;
use crate::settings::Settings;
use capture::{Capture, Links};
use listener::ListenerSource;
use reporter::{Feedback, Reporter, ToReporter};
use respond::{ModeResponse, Responder};
use source::{Combined, NflogSource, PacketSource, ProbeSource};
use startup::Chosen;

/// Actions waiting for the reporter. Deep enough for a burst of alerts from many
/// sources while a slow KILL_ROUTE runs; beyond that alerts are dropped, not queued.
const ACTION_QUEUE: usize = 4096;

/// Control-socket questions for the capture thread waiting for its next turn; more are
/// refused (the asking worker reports the engine's part as unknown).
const CAPTURE_QUERIES: usize = 32;

/// History lines `portsentry explain` shows of one address.
const EXPLAIN_HISTORY_LINES: usize = 10;

/// What `status --json` says of the daemon's setup.
fn about(
    settings: &Settings,
    backend: String,
    firewall: Option<&startup::NativeFirewall>,
) -> answers::About {
    use crate::config::BlockMode;
    use control::views::{FastPathView, ModeView};
    let modes = [&settings.tcp, &settings.udp]
        .into_iter()
        .flatten()
        .map(|m| ModeView {
            name: m.name.to_string(),
            proto: m.proto.as_str().to_lowercase(),
            response: match m.plan.block {
                BlockMode::LogOnly => "log_only",
                BlockMode::Block => "block",
                BlockMode::RunCmdOnly => "run_cmd_only",
            }
            .to_string(),
        })
        .collect();
    answers::About {
        modes,
        backend,
        table: firewall.map(|fw| fw.nft.table().to_string()),
        fast_path: firewall.map_or(FastPathView::default(), |fw| FastPathView {
            tcp: fw.spec.ban_tcp,
            udp: fw.spec.ban_udp,
        }),
        reporter_capacity: ACTION_QUEUE as u64,
    }
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
/// (same PID and stdio). Returns only on failure. The handled signals are blocked
/// across the exec (see [`signals`]): a SIGHUP arriving before the new image has its
/// handlers stays pending instead of killing the process.
pub fn reexec(flags: &signals::Flags) -> io::Error {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()
        .ok()
        .filter(|p| p.exists())
        .or_else(|| std::env::args_os().next().map(std::path::PathBuf::from))
        .unwrap_or_else(|| "portsentry".into());
    let mut command = std::process::Command::new(exe);
    command
        .args(std::env::args_os().skip(1))
        .env(REEXEC_ENV, "1");
    // Blocked in the hook, the last step before execvp, so nothing std does to the
    // signal state on the way can undo it.
    // SAFETY: the hook only changes the signal mask and sends a signal
    // (async-signal-safe calls).
    unsafe {
        command.pre_exec(signals::exec_hook(Arc::clone(&flags.shutdown)));
    }
    let err = command.exec();
    // The exec failed: this image keeps running only to log and exit, with signals
    // acting again.
    let _ = signals::unblock();
    err
}

/// Run until `flags.shutdown` is set, or `flags.reload` is set and `validate` accepts
/// the new configuration (a config with errors is reported and the daemon keeps
/// running); `flags.reopen` has the reporter reopen the record files. Returns after
/// both threads ended.
pub fn run(
    settings: Settings,
    log: Arc<Logger>,
    flags: &signals::Flags,
    validate: &dyn Fn() -> Result<()>,
) -> Result<Stop> {
    log.log(&alerts::starting(
        &settings.config_source,
        &settings.toml_source,
    ));
    for notice in &settings.notices {
        log.log(notice);
    }
    let chosen = startup::choose_backend(&settings, &log)?;
    let absent = portsentry_kernel::packet::absent_interfaces(&settings.interfaces);
    if !absent.is_empty() {
        log.log(&alerts::interfaces_absent(&absent));
    }
    let backend_name = match &chosen {
        Chosen::Nftables => "nftables".to_string(),
        Chosen::Fallback(b) => b.name().to_string(),
        Chosen::LegacyOnly => "none".to_string(),
    };

    // Files first, so a bad path stops startup before anything is installed.
    let history = RecordFile::open(&settings.history_file, false).context("HISTORY_FILE")?;
    // The fleet's key and password files too: one readable by others stops the start.
    let fleet_config = crate::fleet::Config::load(&settings.fleet)?;
    let mode_response = |proto| -> Result<Option<ModeResponse>> {
        settings
            .mode(proto)
            .map(|m| {
                Ok(ModeResponse {
                    plan: m.plan.clone(),
                    blocked: RecordFile::open(&m.blocked_file, true).context("BLOCKED_FILE")?,
                })
            })
            .transpose()
    };
    let tcp_response = mode_response(Proto::Tcp)?;
    let udp_response = mode_response(Proto::Udp)?;

    let protect_sources = startup::protect_sources(&settings);
    let protected = startup::gather_protected(&settings, &protect_sources)?;
    log.log(&alerts::protected_at_start(
        protected.len(),
        settings.protect.enabled,
    ));

    let mut sources: Vec<Box<dyn ProbeSource>> = Vec::new();
    let (kernel, firewall) = if let Chosen::Nftables = chosen {
        let (reader, kernel, firewall) = startup::start_nftables(&settings, &log, &protected)?;
        if let Some(reader) = reader {
            sources.push(Box::new(NflogSource::new(reader)));
        }
        (kernel, Some(firewall))
    } else {
        let kernel = startup::start_without_nftables(&settings, &log, chosen, &protected)?;
        // Only for the modes that read packets: a classic mode has its own sockets.
        if settings.packet_modes().next().is_some() {
            let mut usage = PortUsage::new().context("cannot open the sock_diag netlink socket")?;
            startup::announce_modes(&settings, &log, &mut usage);
            let mut sensor = PacketSensor::open(settings.max_watched_port())
                .context("cannot open the packet socket (AF_PACKET needs root or CAP_NET_RAW)")?;
            sensor.only_interfaces(&settings.interfaces);
            let fw = &settings.firewall;
            let known = (!fw.known_peer_time.is_zero()).then(|| {
                known_peers::KnownPeers::new(
                    fw.known_peer_time,
                    crate::defaults::KNOWN_PEER_SET_SIZE as usize,
                )
            });
            sources.push(Box::new(PacketSource::new(sensor, usage, known)));
        }
        (kernel, None)
    };
    // After the traps and bans are in place, so a connect is banned at once.
    if let Some(listening) = ListenerSource::open(&settings, &log)? {
        sources.push(Box::new(listening));
    }
    let source = Combined::of(sources).context("no mode has anything to watch")?;

    let mut responder = Responder::new(tcp_response, udp_response, history, kernel);
    responder.set_log_2x(settings.log_2x);
    let protected_out = responder.protected_updates();
    // The threads start with the handled signals blocked: only this one takes them.
    let spawn_mask = signals::mask_for_spawning().context("cannot set the signal mask")?;
    crate::metrics::get()
        .ban_set_size
        .set(i64::from(settings.firewall.set_size));
    if let Some(addr) = settings.metrics_listen {
        let bound = crate::metrics_http::serve(addr)
            .with_context(|| format!("cannot serve metrics on {addr} ([metrics] listen)"))?;
        log.log(&alerts::metrics_served(bound));
    }
    let (action_tx, action_rx) = mpsc::sync_channel::<ToReporter>(ACTION_QUEUE);
    let (feedback_tx, feedback_rx) = mpsc::channel::<Feedback>();
    // Where the state file says this node stopped reading the stream.
    let fleet_last_id = fleet_config.as_ref().and_then(|_| {
        crate::store::load(&settings.state_file, clock::unix_now())
            .ok()
            .and_then(|l| l.fleet_last_id)
    });
    let (fleet, fleet_publisher) = match fleet_config {
        Some(config) => {
            let tx = action_tx.clone();
            let (fleet, publisher) = crate::fleet::start(
                config,
                fleet_last_id.clone(),
                move |batch| tx.send(ToReporter::Fleet(batch)).is_ok(),
                Arc::clone(&log),
            )?;
            crate::metrics::get().watch_fleet(Arc::clone(&fleet.stats));
            (Some(fleet), Some(publisher))
        }
        None => (None, None),
    };
    let (query_tx, query_rx) = mpsc::sync_channel::<control::CaptureQuery>(CAPTURE_QUERIES);
    let gauges = Arc::new(gauges::Gauges::default());
    let about = about(&settings, backend_name, firewall.as_ref());
    let reporter = {
        let log = Arc::clone(&log);
        let state = StateFile::new(settings.state_file.clone());
        state.set_fleet_id(fleet_last_id);
        let reporter = Reporter {
            responder,
            state,
            resolver: Resolver::new(settings.resolve_host),
            feedback: feedback_tx,
            started: clock::instant(),
            known_peers: firewall
                .as_ref()
                .filter(|fw| fw.spec.known_peer_time.is_some())
                .map(|fw| fw.nft.clone()),
            save_error: None,
            fleet,
            about,
            gauges: Arc::clone(&gauges),
        };
        thread::Builder::new()
            .name("reporter".into())
            .spawn(move || reporter.run(action_rx, &log))
            .context("cannot start the reporter thread")?
    };
    let control_path = settings.control_socket.clone();
    {
        let tx = action_tx.clone();
        let sent = Arc::clone(&gauges);
        // The ignore list only when there is a file: without one it is the loopback
        // ranges, which are this host's own (reported as such).
        let ignore: Vec<ipnet::IpNet> = match settings.ignore_file {
            Some(_) => settings.ignore.iter().collect(),
            None => Vec::new(),
        };
        let extra = settings.protect.extra.clone();
        let (resolv_conf, enabled) = (
            settings.protect.resolv_conf.clone(),
            settings.protect.enabled,
        );
        let peers = firewall
            .as_ref()
            .filter(|fw| fw.spec.known_peer_time.is_some())
            .map(|fw| fw.nft.clone());
        let history_file = settings.history_file.clone();
        let routes = control::Routes {
            history: Box::new(move |ip| {
                crate::history::read_about(&history_file, ip, EXPLAIN_HISTORY_LINES)
                    .map_err(|e| format!("{}: {e}", history_file.display()))
            }),
            known_peer: Box::new(move |ip| peers.as_ref().and_then(|n| n.is_known_peer(ip).ok())),
            // A blocking send, as before: the reporter drains its queue, and the
            // worker that waits here is one of a few, never the capture thread.
            reporter: Box::new(move |pending| {
                let ok = tx.send(ToReporter::Control(pending)).is_ok();
                if ok {
                    sent.to_reporter.sent();
                }
                ok
            }),
            capture: Box::new(move |query| query_tx.try_send(query).is_ok()),
            protection: Box::new(move |ip| {
                crate::protect::why(ip, &resolv_conf, enabled, &ignore, &extra)
                    .map(|found| {
                        found
                            .into_iter()
                            .map(|(by, network)| control::views::ProtectionView {
                                by: by.to_string(),
                                network,
                            })
                            .collect()
                    })
                    .map_err(|e| e.to_string())
            }),
        };
        control::serve(&control_path, routes).with_context(|| {
            format!("cannot open the control socket {}", control_path.display())
        })?;
    }
    drop(spawn_mask);

    log.log(alerts::ACTIVE);
    crate::notify::notify("READY=1");
    crate::detach::ready();
    // The ignore list and the protected set (which holds it too) stay apart in the
    // engine, so that its line says which of them exempted a source. Without an ignore
    // file the list is only the loopback ranges, which are this host's own: protected.
    let ignore_list = match settings.ignore_file {
        Some(_) => settings.ignore.clone(),
        None => IgnoreSet::new(),
    };
    let mut engine = Engine::new(settings.engine.clone(), ignore_list);
    engine.set_protected(startup::ignore_set(&protected));
    let mut capture = Capture::new(
        &settings,
        &log,
        source,
        firewall.as_ref(),
        protect_sources,
        protected_out,
        engine,
    );
    let links = Links {
        actions: action_tx,
        feedback: feedback_rx,
        queries: query_rx,
        gauges,
    };
    let result = capture.run(flags, validate, links);
    drop(capture);
    // run() sent Stop; the reporter drains what came before and ends.
    let _ = reporter.join();
    // Bans of the last moments still reach the fleet (bounded: Redis may be down).
    if let Some(p) = fleet_publisher {
        p.finish(std::time::Duration::from_secs(2));
    }
    let _ = std::fs::remove_file(&control_path);
    crate::notify::notify(match result {
        Ok(Stop::Reload) => "RELOADING=1",
        _ => "STOPPING=1",
    });
    if let Ok(Stop::Reload) = result {
        log.log(alerts::RESTARTING);
        return result;
    }
    if let Some(fw) = &firewall {
        if !fw.nft.exists().unwrap_or(true) {
            log.log(&alerts::table_gone_at_stop(fw.nft.table()));
        } else {
            match fw.nft.remove_traps() {
                Ok(()) => log.log(&alerts::traps_removed(fw.nft.table())),
                Err(e) => log.log(&alerts::error("cannot remove the trap rules", &e)),
            }
        }
    }
    log.log(alerts::SHUTTING_DOWN);
    result
}
