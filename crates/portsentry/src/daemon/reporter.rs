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
use portsentry_engine::{Probe, Proto};

use super::respond::{NativeBan, Responder};
use crate::alerts::{self, Host};
use crate::bans::StateFile;
use crate::clock;
use crate::control;
use crate::logger::Logger;
use crate::resolve::Resolver;

/// How often the reporter wakes without work, to save the state file and note expiry.
const REPORTER_TICK: Duration = Duration::from_millis(500);
/// Messages taken as one batch (bans first, then names and lines).
const BATCH: usize = 256;
/// Ended bans logged one line each; more than this (a flood ending) is one summary.
const MAX_ENDED_LINES: usize = 10;

/// What the capture and control threads send the reporter.
pub enum ToReporter {
    /// One engine action, with the probe it is about.
    Action(Action),
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
        for message in &batch {
            match message {
                ToReporter::Action(Action::Respond { probe }) => {
                    natives.push(Some(self.responder.ban_natively(probe)));
                }
                ToReporter::Action(_) => natives.push(None),
                _ => break,
            }
        }
        natives.resize_with(batch.len(), || None);
        for (message, native) in batch.into_iter().zip(natives.iter_mut()) {
            match message {
                ToReporter::Action(action) => self.report(action, native.take(), log),
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
                ToReporter::Reopen => self.responder.reopen_records(log),
                ToReporter::Stop => return true,
            }
        }
        false
    }

    /// The lines of one engine action and, for a response, the rest of it.
    fn report(&mut self, action: Action, native: Option<NativeBan>, log: &Logger) {
        let probe: Probe = *action_probe(&action);
        let ip = probe.src;
        let name = self.resolver.name(ip);
        let host = Host { name: &name, ip };
        match action {
            Action::Alert { suppressed, .. } => {
                if suppressed > 0 {
                    log.log(&alerts::hits_not_logged(host, suppressed));
                }
                log.log(&alerts::scan(host, &probe));
                if probe.ip_options {
                    log.log(&alerts::ip_options(host, &probe));
                }
            }
            Action::Respond { .. } => {
                // Banned in the first pass, or now when it came after a control request.
                let native = native.unwrap_or_else(|| self.responder.ban_natively(&probe));
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
                log.log(&alerts::already_blocked(host, suppressed));
            }
            Action::Ignored {
                suppressed, why, ..
            } => {
                log.log(&alerts::ignored(host, &probe, suppressed, why));
            }
        }
    }

    /// Carry out one request from the control socket; the reply line for the client.
    fn control_request(&mut self, request: control::Request, log: &Logger) -> String {
        use control::Request;
        let uptime =
            humantime::format_duration(Duration::from_secs(self.started.elapsed().as_secs()));
        self.responder.sync_protected();
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
                    log.log(&alerts::manual_ban(net, duration, offences, done.overrode));
                    format!(
                        "ok: {net} banned {} (offence {offences}){}",
                        alerts::for_how_long(duration),
                        done.overrode.map(alerts::forced_over).unwrap_or_default()
                    )
                }
                Err(e) => format!("error: {e:#}"),
            },
            Request::Unban { net } => match kernel.unban(clock::unix_now(), net) {
                Ok(Some(ban)) => {
                    log.log(&alerts::manual_unban(ban.key));
                    let _ = self.feedback.send(Feedback::Forget(ban.key));
                    format!("ok: ban on {} lifted", ban.key)
                }
                Ok(None) => format!("error: no ban covers {net}"),
                Err(e) => format!("error: {e:#}"),
            },
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
                    log.log(&alerts::ban_ended(ban.key, ban.offences));
                }
                None => {}
                Some(e) => log.log(&alerts::ban_not_removed(ban.key, e)),
            }
        }
        if let Some(err) = self.state.save_if_due(kernel, clocks, force_save) {
            log.log(&alerts::failure(&err));
        }
    }
}

/// The probe an action is about.
pub fn action_probe(action: &Action) -> &Probe {
    match action {
        Action::Alert { probe, .. }
        | Action::Respond { probe }
        | Action::AlreadyBlocked { probe, .. }
        | Action::Ignored { probe, .. }
        | Action::Suppressed { probe, .. } => probe,
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
        let respond = || ToReporter::Action(Action::Respond { probe: probe() });
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
        let respond = ToReporter::Action(Action::Respond { probe: probe() });
        assert!(reporter.handle_batch(vec![respond, ToReporter::Stop], &cap.log));
        assert_eq!(reporter.responder.bans_mut().active_count(now()), 1);
    }
}
