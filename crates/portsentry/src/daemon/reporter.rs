//! The reporter thread: owner of the bans. It takes the engine's actions from the
//! capture thread and the control socket's requests, logs the alert lines, runs the
//! responses (native ban, then the 1.2 chain and records), reports each outcome back
//! to the engine, expires bans and saves the state file.
//!
//! Names (RESOLVE_HOST, up to 2 s a lookup) are looked up only after the bans: the
//! reporter takes what is queued as one batch, makes the native bans of the batch
//! first, then writes the lines in their order with names.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use portsentry_engine::engine::{Action, Outcome};
use portsentry_engine::{Millis, Probe, Proto};
use portsentry_kernel::backend::host_of;

use super::respond::{NativeBan, Responder};
use crate::alerts::{self, Host, Undo};
use crate::bans::StateFile;
use crate::clock;
use crate::control;
use crate::event::Event;
use crate::logger::Logger;
use crate::metrics;
use crate::resolve::Resolver;

/// How often the reporter wakes without work, to save the state file and note expiry.
const REPORTER_TICK: Duration = Duration::from_millis(500);
/// Messages taken as one batch (bans first, then names and lines).
const BATCH: usize = 256;
/// Ended bans logged one line each; more than this (a flood ending) is one summary.
const MAX_ENDED_LINES: usize = 10;

/// What the capture and control threads send the reporter.
pub enum ToReporter {
    /// One engine action, with the probe it is about, and when the capture thread
    /// read the probe that decided it (CLOCK_BOOTTIME), for the ban latency metric.
    Action(Action, Millis),
    Control(control::Pending),
    /// Our table was re-created empty: put the bans in force back into it.
    Restore,
    /// SIGUSR1: reopen the record files (they were rotated).
    Reopen,
    /// The capture thread ended: finish and save.
    Stop,
}

/// What the reporter tells the capture thread (the engine's owner).
pub enum Feedback {
    Outcome(std::net::IpAddr, Proto, Outcome),
    /// An administrator lifted the ban on this network: judge its sources anew.
    Forget(IpNet),
}

/// The reporter's parts.
pub struct Reporter {
    pub responder: Responder,
    /// Where the book is saved (the lifecycle itself never touches a file).
    pub state: StateFile,
    pub resolver: Resolver,
    pub feedback: mpsc::Sender<Feedback>,
    pub started: Instant,
    /// Our table when it learns known peers: `portsentry ban` of one is refused.
    pub known_peers: Option<portsentry_kernel::nft::Nft>,
    /// The last state-file save error logged (each distinct one is logged once).
    pub save_error: Option<String>,
}

impl Reporter {
    /// Run until the capture thread says stop (or every sender is gone).
    pub fn run(mut self, inbox: Receiver<ToReporter>, log: &Logger) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            match inbox.recv_timeout(REPORTER_TICK) {
                Ok(first) => batch.push(first),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < BATCH {
                match inbox.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let stop = self.handle_batch(std::mem::take(&mut batch), log);
            // The batch's history and blocked lines: one write + fdatasync per file.
            self.responder.flush_records(log);
            self.housekeeping(log, false);
            if stop {
                break;
            }
        }
        self.housekeeping(log, true);
    }

    /// Handle one batch; true when it held `Stop` (what came before it is handled).
    fn handle_batch(&mut self, batch: Vec<ToReporter>, log: &Logger) -> bool {
        // Bans first: no name lookup may delay one. Only up to the first message that
        // is not an engine action (a control request, a restore): an `unban` must still
        // come after the bans queued before it and before the ones queued after it.
        let mut natives: Vec<Option<NativeBan>> = Vec::with_capacity(batch.len());
        let m = metrics::get();
        for message in &batch {
            match message {
                ToReporter::Action(Action::Respond { probe }, read_at) => {
                    natives.push(Some(self.ban_natively(probe, *read_at)));
                }
                ToReporter::Action(..) => natives.push(None),
                _ => break,
            }
        }
        let actions = batch
            .iter()
            .filter(|m| matches!(m, ToReporter::Action(..)))
            .count();
        m.reporter_queue.dec_by(actions as i64);
        natives.resize_with(batch.len(), || None);
        for (message, native) in batch.into_iter().zip(natives.iter_mut()) {
            match message {
                ToReporter::Action(action, read_at) => {
                    self.report(action, read_at, native.take(), log)
                }
                ToReporter::Control(pending) => {
                    let reply = self.control_request(pending.request, log);
                    let _ = pending.reply.send(reply);
                }
                ToReporter::Restore => {
                    let bans = self.responder.bans_mut();
                    match bans.put_back_missing(clock::unix_now()) {
                        Ok(n) => log.log(&alerts::bans_put_back(n)),
                        Err(e) => log.log(&alerts::error("cannot put the bans back", &e)),
                    }
                }
                ToReporter::Reopen => {
                    // Lines queued so far belong to the old files.
                    self.responder.flush_records(log);
                    self.responder.reopen_records(log);
                }
                ToReporter::Stop => return true,
            }
        }
        false
    }

    /// The native ban of `probe`, timed from `read_at` for the latency histogram when
    /// one was made.
    fn ban_natively(&mut self, probe: &Probe, read_at: Millis) -> NativeBan {
        let native = self.responder.ban_natively(probe);
        if native.banned() {
            let ms = clock::boottime_now().0.saturating_sub(read_at.0);
            metrics::get().ban_latency.observe(ms as f64 / 1000.0);
        }
        native
    }

    /// The lines of one engine action and, for a response, the rest of it.
    fn report(&mut self, action: Action, read_at: Millis, native: Option<NativeBan>, log: &Logger) {
        let probe: Probe = *action_probe(&action);
        let ip = probe.src;
        let name = self.resolver.name(ip);
        let host = Host { name: &name, ip };
        if matches!(action, Action::Alert { .. }) {
            metrics::get().alert(&probe);
        }
        match action {
            Action::Alert { .. } if self.responder.log_2x() => {
                // 2.x writes one line per hit, after the response (Respond follows).
            }
            Action::AlreadyBlocked { suppressed, .. } if self.responder.log_2x() => {
                log.log(&alerts::already_blocked(host, suppressed));
                log.log(&alerts::scan_2x(&alerts::Scan2x {
                    host,
                    probe: &probe,
                    ignored: Some(false),
                    triggered: Some(true),
                    noblock: Some(false),
                    blocked: Some(true),
                }));
            }
            Action::Ignored { .. } if self.responder.log_2x() => {
                log.log(&alerts::scan_2x(&alerts::Scan2x {
                    host,
                    probe: &probe,
                    ignored: Some(true),
                    triggered: None,
                    noblock: None,
                    blocked: None,
                }));
            }
            Action::Alert { suppressed, .. } => {
                if suppressed > 0 {
                    log.log(&alerts::hits_not_logged(host, suppressed));
                }
                // 1.2's classic -udp mode said "Connect" of a datagram too.
                let line = if self.responder.classic(probe.proto()) {
                    alerts::connect(host, &probe)
                } else {
                    alerts::scan(host, &probe)
                };
                log.event(&Event::probe(&line, &probe, "alert"));
                if probe.ip_options {
                    log.log(&alerts::ip_options(host, &probe));
                }
            }
            Action::Respond { .. } => {
                // Banned in the first pass, or now when it came after a control request.
                let native = native.unwrap_or_else(|| self.ban_natively(&probe, read_at));
                let outcome = self.responder.finish(log, &probe, native, &name);
                let _ = self
                    .feedback
                    .send(Feedback::Outcome(ip, probe.proto(), outcome));
            }
            Action::Suppressed { count, .. } => {
                log.log(&alerts::hits_not_logged_last(
                    host,
                    count,
                    probe.proto(),
                    probe.dport,
                ));
            }
            Action::AlreadyBlocked { suppressed, .. } => {
                let line = if self.responder.classic(probe.proto()) {
                    alerts::already_blocked_classic(host, suppressed)
                } else {
                    alerts::already_blocked(host, suppressed)
                };
                log.event(&Event::probe(&line, &probe, "already_blocked"));
            }
            Action::Ignored {
                suppressed, why, ..
            } => {
                let line = alerts::ignored(host, &probe, suppressed, why);
                log.event(&Event::probe(&line, &probe, "ignored"));
            }
            Action::PossiblyForged { suppressed, .. } => {
                let line = alerts::possibly_forged(host, &probe, suppressed);
                log.event(&Event::probe(&line, &probe, "possibly_forged"));
            }
        }
    }

    /// Carry out one request from the control socket; the reply line for the client.
    fn control_request(&mut self, request: control::Request, log: &Logger) -> String {
        use control::Request;
        let uptime = humantime::format_duration(Duration::from_secs(
            clock::instant().duration_since(self.started).as_secs(),
        ));
        self.responder.sync_protected();
        if let Request::Unban { net } = request {
            return self.unban(net, log);
        }
        // A known peer is not banned on the administrator's word alone either (it may
        // be forged evidence that brought the address up); --force overrides.
        let mut over_peer = None;
        if let Request::Ban { net, force, .. } = &request
            && let (Some(nft), Some(ip)) = (&self.known_peers, host_of(*net))
            && nft.is_known_peer(ip).unwrap_or(false)
        {
            if !*force {
                return format!("error: {}", alerts::known_peer_refused(ip));
            }
            over_peer = Some(ip);
        }
        let kernel = self.responder.bans_mut();
        if !kernel.is_native() {
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
                kernel.active_count(clock::unix_now())
            ),
            Request::Ban {
                net,
                duration,
                force,
            } => match kernel.manual_ban(clock::unix_now(), net, duration, force) {
                Ok(done) => {
                    let (net, offences) = (done.ban.key, done.ban.offences);
                    metrics::get().ban(
                        portsentry_engine::Evidence::Manual,
                        kernel.backend_name().unwrap_or("native"),
                    );
                    let line = alerts::manual_ban(net, duration, offences, done.overrode);
                    let mut event = Event::text(&line);
                    event.fields.push(("SRC_IP", src_field(net)));
                    event.fields.push(("EVIDENCE", "manual".into()));
                    event.fields.push(("ACTION", "ban".into()));
                    log.event(&event.ban_until(clock::unix_now(), duration));
                    format!(
                        "ok: {net} banned {} (offence {offences}){}{}",
                        alerts::for_how_long(duration),
                        done.overrode.map(alerts::forced_over).unwrap_or_default(),
                        over_peer
                            .map(alerts::forced_over_known_peer)
                            .unwrap_or_default()
                    )
                }
                Err(e) => format!("error: {e:#}"),
            },
            Request::Unban { .. } => unreachable!("handled above"),
        }
    }

    /// `portsentry unban NET`: lift the ban (kernel and book; with no ban backend, the
    /// book's record of a KILL_* block), then undo what the 1.2 responses added for the
    /// address ([`Responder::undo_legacy`]). With no ban in force, the 1.2 responses are
    /// still undone, since they outlive our ban (1.2 never lifted them); the reply is
    /// an error only when there was nothing at all to lift.
    fn unban(&mut self, net: IpNet, log: &Logger) -> String {
        let lifted = match self.responder.bans_mut().unban(clock::unix_now(), net) {
            Ok(lifted) => lifted,
            Err(e) => return format!("error: {e:#}"),
        };
        // The KILL_* commands ran for single addresses: the ban's, or the one named.
        let host = lifted
            .as_ref()
            .and_then(|ban| host_of(ban.key))
            .or_else(|| host_of(net));
        match lifted {
            Some(ban) => {
                let undone = host
                    .map(|ip| {
                        self.responder
                            .undo_legacy(ip, !crate::bans::by_administrator(&ban))
                    })
                    .unwrap_or_default();
                log.event(&unban_event(
                    &alerts::manual_unban(ban.key, &undone),
                    ban.key,
                ));
                let _ = self.feedback.send(Feedback::Forget(ban.key));
                alerts::unban_reply(ban.key, &undone)
            }
            None => {
                let undone = host
                    .map(|ip| self.responder.undo_legacy(ip, true))
                    .unwrap_or_default();
                // Nothing was there: a failed inverse only means no route was left.
                if !undone.iter().any(Undo::lifted) {
                    return format!("error: no ban covers {net}");
                }
                let undone: Vec<Undo> = undone.into_iter().filter(Undo::lifted).collect();
                log.event(&unban_event(&alerts::legacy_unban(net, &undone), net));
                let _ = self.feedback.send(Feedback::Forget(net));
                alerts::unban_legacy_only_reply(net, &undone)
            }
        }
    }

    /// Ended bans (logged, removed where the backend does not expire them), and the
    /// state file saved when due (or `force`, at stop).
    fn housekeeping(&mut self, log: &Logger, force_save: bool) {
        let kernel = self.responder.bans_mut();
        let clocks = clock::now();
        let now = clocks.unix;
        let ended = kernel.take_expired(now);
        // A ban the full book had to drop is not over: it still runs out in the kernel.
        let (expired, dropped): (Vec<_>, Vec<_>) = ended
            .into_iter()
            .partition(|(ban, _)| ban.expires_at.is_some_and(|t| t <= now));
        if !dropped.is_empty() {
            log.log(&alerts::book_full(
                dropped.len(),
                kernel.expires_by_itself(),
            ));
        }
        if expired.len() > MAX_ENDED_LINES {
            log.log(&alerts::bans_ended(expired.len()));
        }
        for (ban, err) in expired.iter().chain(dropped.iter()) {
            match err {
                None if expired.len() <= MAX_ENDED_LINES
                    && ban.expires_at.is_some_and(|t| t <= now) =>
                {
                    let line = alerts::ban_ended(ban.key, ban.offences);
                    let mut event = Event::text(&line);
                    event.fields.push(("SRC_IP", src_field(ban.key)));
                    event.fields.push(("ACTION", "ban_ended".into()));
                    log.event(&event);
                }
                None => {}
                Some(e) => log.log(&alerts::ban_not_removed(ban.key, e)),
            }
        }
        publish_ban_gauges(kernel, now);
        let saving = kernel.save_due(clocks.mono, force_save);
        match self.state.save_if_due(kernel, clocks, force_save) {
            // Each distinct error once (a full disk fails the same way every try).
            Some(err) if self.save_error.as_deref() != Some(err.as_str()) => {
                log.log(&alerts::failure(&err));
                self.save_error = Some(err);
            }
            Some(_) => {}
            None if saving && self.save_error.take().is_some() => {
                log.log(&alerts::state_saved_again(self.state.path()));
            }
            None => {}
        }
        self.responder.kill_limit_tick(log);
    }
}

/// Bans in force and the native ones per family, for the metrics; at most every
/// [`GAUGE_INTERVAL_MS`] (counting walks the book, which may hold a million bans).
fn publish_ban_gauges(bans: &crate::bans::BanLifecycle, now: u64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let mono = clock::boottime_now().0;
    let last = LAST.load(Ordering::Relaxed);
    if last != 0 && mono.saturating_sub(last) < GAUGE_INTERVAL_MS {
        return;
    }
    LAST.store(mono.max(1), Ordering::Relaxed);
    let (mut total, mut v4, mut v6) = (0i64, 0i64, 0i64);
    for ban in bans.book().active(now) {
        total += 1;
        match ban.key {
            IpNet::V4(_) => v4 += 1,
            IpNet::V6(_) => v6 += 1,
        }
    }
    let m = metrics::get();
    m.bans_in_force.set(total);
    let native = bans.is_native();
    for (family, n) in [("ipv4", v4), ("ipv6", v6)] {
        m.ban_set_elements
            .get_or_create(&metrics::FamilyLabels { family })
            .set(if native { n } else { 0 });
    }
}

/// `SRC_IP` of a ban key: the address of a one-host key (as the alert's field, so one
/// `journalctl SRC_IP=` finds both), else the network.
fn src_field(net: IpNet) -> String {
    host_of(net).map_or_else(|| net.to_string(), |ip| ip.to_string())
}

/// The line of a lifted ban, with its address and `ACTION=unban`.
fn unban_event(line: &str, net: IpNet) -> Event<'_> {
    let mut event = Event::text(line);
    event.fields.push(("SRC_IP", src_field(net)));
    event.fields.push(("ACTION", "unban".into()));
    event
}

/// How often the ban gauges are recounted.
const GAUGE_INTERVAL_MS: u64 = 1000;

/// The probe an action is about.
pub fn action_probe(action: &Action) -> &Probe {
    match action {
        Action::Alert { probe, .. }
        | Action::Respond { probe }
        | Action::AlreadyBlocked { probe, .. }
        | Action::Ignored { probe, .. }
        | Action::Suppressed { probe, .. }
        | Action::PossiblyForged { probe, .. } => probe,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BlockMode;
    use crate::daemon::respond::testing::{Captured, Memory, SCANNER, now, plan, probe, responder};

    fn reporter(dir: &std::path::Path) -> (Reporter, Receiver<Feedback>) {
        let backend: Box<dyn portsentry_kernel::backend::BanBackend> = Box::new(Memory::default());
        let responder = responder(plan(BlockMode::Block, None, dir), dir, Some(backend));
        let (tx, rx) = mpsc::channel();
        let reporter = Reporter {
            responder,
            state: StateFile::new(dir.join("state.json")),
            resolver: Resolver::new(false),
            feedback: tx,
            started: clock::instant(),
            known_peers: None,
            save_error: None,
        };
        (reporter, rx)
    }

    fn unban(net: &str) -> (ToReporter, Receiver<String>) {
        let (reply, answer) = mpsc::channel();
        let pending = control::Pending {
            request: control::Request::Unban {
                net: net.parse().unwrap(),
            },
            reply,
        };
        (ToReporter::Control(pending), answer)
    }

    /// The native bans of a batch run before its lines, but never across a control
    /// request: ban, unban, ban again in one batch leaves the source banned, as it
    /// would one message at a time.
    #[test]
    fn bans_first_but_in_order_around_a_control_request() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Captured::new(dir.path());
        let (mut reporter, feedback) = reporter(dir.path());
        let respond = || ToReporter::Action(Action::Respond { probe: probe() }, Millis(0));
        let (unban, answer) = unban(&format!("{SCANNER}/32"));
        let stop = reporter.handle_batch(vec![respond(), unban, respond()], &cap.log);
        assert!(!stop);
        assert_eq!(
            answer.recv().unwrap(),
            format!("ok: ban on {SCANNER}/32 lifted")
        );
        assert_eq!(reporter.responder.bans_mut().active_count(now()), 1);
        let outcomes = feedback
            .try_iter()
            .filter(|f| matches!(f, Feedback::Outcome(..)));
        assert_eq!(outcomes.count(), 2);
        let lines = cap.lines();
        let banned = lines.iter().filter(|l| l.contains("banned in the kernel"));
        assert_eq!(banned.count(), 2, "{lines:#?}");
    }

    #[test]
    fn a_batch_ends_at_stop() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Captured::new(dir.path());
        let (mut reporter, _feedback) = reporter(dir.path());
        let respond = ToReporter::Action(Action::Respond { probe: probe() }, Millis(0));
        assert!(reporter.handle_batch(vec![respond, ToReporter::Stop], &cap.log));
        assert_eq!(reporter.responder.bans_mut().active_count(now()), 1);
    }

    /// Issue 8: the unban reply and log line say what was lifted besides the ban; with
    /// no ban in force the hosts.deny line is still removed.
    #[test]
    fn issue_8_unban_removes_the_hosts_deny_line_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cap = Captured::new(d);
        let mut p = plan(BlockMode::Block, None, d);
        p.kill_hosts_deny = Some("ALL: $TARGET$".into());
        p.kill_run_cmd = Some("true".into());
        let backend: Box<dyn portsentry_kernel::backend::BanBackend> = Box::new(Memory::default());
        let (tx, _feedback) = mpsc::channel();
        let mut reporter = Reporter {
            responder: responder(p, d, Some(backend)),
            state: StateFile::new(d.join("state.json")),
            resolver: Resolver::new(false),
            feedback: tx,
            started: clock::instant(),
            known_peers: None,
            save_error: None,
        };
        let respond = ToReporter::Action(Action::Respond { probe: probe() }, Millis(0));
        let host = format!("{SCANNER}/32");
        let (unban1, answer1) = unban(&host);
        let (unban2, answer2) = unban(&host);
        reporter.handle_batch(vec![respond], &cap.log);
        let deny = || std::fs::read_to_string(d.join("hosts.deny")).unwrap();
        assert_eq!(deny(), format!("ALL: {SCANNER}\n"));
        reporter.handle_batch(vec![unban1], &cap.log);
        assert_eq!(
            answer1.recv().unwrap(),
            format!(
                "ok: ban on {SCANNER}/32 lifted; removed the hosts.deny line \"ALL: {SCANNER}\"; KILL_RUN_CMD ran for this host and cannot be undone"
            )
        );
        assert_eq!(deny(), "");
        assert_eq!(reporter.responder.bans_mut().active_count(now()), 0);
        let lines = cap.lines();
        assert!(
            lines.contains(&format!(
                "adminalert: ban on {SCANNER}/32 lifted by the administrator; removed the hosts.deny line \"ALL: {SCANNER}\"; KILL_RUN_CMD ran for this host and cannot be undone"
            )),
            "{lines:#?}"
        );
        // Nothing left to lift: an error, as before.
        reporter.handle_batch(vec![unban2], &cap.log);
        assert_eq!(
            answer2.recv().unwrap(),
            format!("error: no ban covers {SCANNER}/32")
        );
        // A hosts.deny line left after the ban ended is still removed.
        std::fs::write(d.join("hosts.deny"), format!("ALL: {SCANNER}\n")).unwrap();
        let (unban3, answer3) = unban(&host);
        reporter.handle_batch(vec![unban3], &cap.log);
        assert_eq!(
            answer3.recv().unwrap(),
            format!(
                "ok: no ban in force on {SCANNER}/32; removed the hosts.deny line \"ALL: {SCANNER}\""
            )
        );
        assert_eq!(deny(), "");
    }
}
