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

use super::answers::{self, About};
use super::gauges::Gauges;
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
    /// What the fleet link read from the stream (`fleet`).
    Fleet(crate::fleet::Batch),
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
    /// The fleet link, when `[fleet]` is on: where this node's bans are published.
    pub fleet: Option<crate::fleet::Fleet>,
    /// What `status --json` reports of the daemon's setup.
    pub about: About,
    pub gauges: std::sync::Arc<Gauges>,
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
            // Counted out when handled, so a status request sees the rest of its batch
            // as still waiting.
            self.gauges.to_reporter.taken();
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
                ToReporter::Fleet(batch) => self.fleet_batch(batch, log),
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
                if matches!(outcome, Outcome::Blocked { .. }) {
                    self.publish_ban(&probe, log);
                }
                self.send_feedback(Feedback::Outcome(ip, probe.proto(), outcome));
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

    fn send_feedback(&self, feedback: Feedback) {
        if self.feedback.send(feedback).is_ok() {
            self.gauges.feedback.sent();
        }
    }

    /// Carry out one request from the control socket; the reply line for the client.
    fn control_request(&mut self, request: control::Request, log: &Logger) -> String {
        use control::Request;
        let running = clock::instant().duration_since(self.started);
        let uptime = humantime::format_duration(Duration::from_secs(running.as_secs()));
        match request {
            Request::StatusJson => {
                let book = self.responder.bans_mut().book();
                let mut view =
                    answers::status(&self.about, book, &self.gauges, running, clock::unix_now());
                view.fleet = self.fleet.as_ref().map(|f| f.view());
                return serde_json::to_string(&view)
                    .unwrap_or_else(|e| control::protocol::json_error(&e.to_string()));
            }
            Request::Explain { ip } => {
                let book = self.responder.bans_mut().book();
                let view = answers::bans_of(ip, book, clock::unix_now());
                return serde_json::to_string(&view)
                    .unwrap_or_else(|e| control::protocol::json_error(&e.to_string()));
            }
            _ => {}
        }
        self.responder.sync_protected();
        if let Request::Unban { net } = request {
            return self.unban(net, log);
        }
        if let Request::UnbanOrigin { node } = request {
            return self.unban_origin(&node, log);
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
                "ok: portsentry {} running for {uptime}; {} bans in force{}",
                env!("CARGO_PKG_VERSION"),
                kernel.active_count(clock::unix_now()),
                self.fleet
                    .as_ref()
                    .map(|f| format!("; {}", f.status()))
                    .unwrap_or_default()
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
                    // A --force ban over this host's own protected set stays here.
                    if done.overrode.is_none()
                        && let Some(fleet) = &self.fleet
                    {
                        let msg = crate::fleet::message::Message {
                            evidence: portsentry_engine::Evidence::Manual,
                            scan: "banned by the administrator".into(),
                            ends: done.ban.expires_at,
                            offences,
                            ..fleet.message(crate::fleet::message::Kind::Ban, net)
                        };
                        fleet.publish(msg, log);
                    }
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
            Request::Unban { .. }
            | Request::UnbanOrigin { .. }
            | Request::StatusJson
            | Request::Explain { .. } => unreachable!("handled above"),
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
                self.send_feedback(Feedback::Forget(ban.key));
                // The fleet lifts its copies of the ban too (each node lifts only bans
                // it received, never its own detections).
                if let Some(fleet) = &self.fleet {
                    fleet.publish(
                        fleet.message(crate::fleet::message::Kind::Unban, ban.key),
                        log,
                    );
                }
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
                self.send_feedback(Feedback::Forget(net));
                alerts::unban_legacy_only_reply(net, &undone)
            }
        }
    }

    /// Publish the ban just made on `probe`: a ban (verified evidence) or a report
    /// (unverified: applied elsewhere only by k of n).
    fn publish_ban(&mut self, probe: &Probe, log: &Logger) {
        use crate::fleet::message::{Kind, Message};
        let Some(fleet) = &self.fleet else { return };
        let kernel = self.responder.bans_mut();
        let now = clock::unix_now();
        let evidence = probe.evidence();
        let key = kernel.policies().for_evidence(evidence).ban_key(probe.src);
        let Some(ban) = kernel.book().in_force(key, now).cloned() else {
            return;
        };
        let kind = match ban.evidence {
            portsentry_engine::Evidence::Unverified => Kind::Report,
            _ => Kind::Ban,
        };
        let msg = Message {
            evidence: ban.evidence,
            scan: format!("{} to {} port {}", probe.kind, probe.proto(), probe.dport),
            ports: probe.dport.to_string(),
            ends: ban.expires_at,
            offences: ban.offences,
            ..fleet.message(kind, ban.key)
        };
        // A queue full of bans is counted and said once; never waited for.
        fleet.publish(msg, log);
    }

    /// `portsentry unban --origin NODE`: lift every ban NODE injected here, and
    /// publish the revocation so every node does the same.
    fn unban_origin(&mut self, node: &str, log: &Logger) -> String {
        let Some(fleet) = &self.fleet else {
            return "error: the fleet is off here ([fleet] url is not set)".into();
        };
        let msg = crate::fleet::message::Message {
            subject: node.to_string(),
            ..fleet.message(
                crate::fleet::message::Kind::Revoke,
                IpNet::from(std::net::IpAddr::from([0u8, 0, 0, 0])),
            )
        };
        fleet.publish(msg, log);
        let me = fleet.node().to_string();
        let n = self.lift_origin(node, log);
        log.log(&crate::fleet::lines::revoked(node, &me, n));
        format!(
            "ok: {n} bans from fleet node {node} lifted here; the revocation is published to the fleet"
        )
    }

    /// Lift every ban in force whose origin is `node`; how many.
    fn lift_origin(&mut self, node: &str, log: &Logger) -> usize {
        let now = clock::unix_now();
        let keys: Vec<IpNet> = self
            .responder
            .bans_mut()
            .book()
            .active(now)
            .filter(|b| crate::fleet::message::origin_of(&b.reason) == Some(node))
            .map(|b| b.key)
            .collect();
        let mut n = 0;
        for key in keys {
            match self.responder.bans_mut().unban(now, key) {
                Ok(Some(_)) => {
                    n += 1;
                    self.send_feedback(Feedback::Forget(key));
                }
                Ok(None) => {}
                Err(e) => log.log(&alerts::error("cannot lift a fleet ban", &e)),
            }
        }
        n
    }

    /// Apply what the fleet link read: through the lifecycle, as every ban, after
    /// this node's own checks (protected set, known peers). Nothing received is
    /// published again.
    fn fleet_batch(&mut self, batch: crate::fleet::Batch, log: &Logger) {
        use crate::bans::BanError;
        use crate::fleet::{Inbound, lines, message};
        use std::sync::atomic::Ordering;
        let Some(stats) = self.fleet.as_ref().map(|f| std::sync::Arc::clone(&f.stats)) else {
            return;
        };
        self.responder.sync_protected();
        let now = clock::unix_now();
        // This host's clients (known peers), read once per batch (one nft run).
        let wants_peers = batch.items.iter().any(|i| matches!(i, Inbound::Ban { .. }));
        let peers: std::collections::HashSet<std::net::IpAddr> = match &self.known_peers {
            Some(nft) if wants_peers => nft.known_peers().unwrap_or_default().into_iter().collect(),
            _ => Default::default(),
        };
        for item in batch.items {
            match item {
                Inbound::Ban {
                    msg,
                    duration,
                    quorum,
                } => {
                    let net = msg.net;
                    let origin = match &quorum {
                        Some(_) => "quorum",
                        None => msg.origin.as_str(),
                    };
                    // A client of this host (a known peer) is never banned on another
                    // node's word.
                    if let Some(ip) = host_of(net)
                        && peers.contains(&ip)
                    {
                        stats.refused.fetch_add(1, Ordering::Relaxed);
                        log.log(&lines::refused(
                            net,
                            origin,
                            &alerts::known_peer_refused(ip),
                        ));
                        continue;
                    }
                    let reason = match &quorum {
                        Some(nodes) => message::reason(
                            "quorum",
                            &format!("{} (reported by {})", msg.scan, nodes.join(",")),
                        ),
                        None => message::reason(&msg.origin, &msg.scan),
                    };
                    let kernel = self.responder.bans_mut();
                    match kernel.fleet_ban(now, net, duration, msg.evidence, &reason) {
                        Ok(Some(ban)) => {
                            stats.applied.fetch_add(1, Ordering::Relaxed);
                            let secs = ban.expires_at.map_or(0, |t| t.saturating_sub(now));
                            match &quorum {
                                Some(nodes) => log.log(&lines::quorum_applied(net, nodes, secs)),
                                None => log.log(&lines::applied(
                                    net,
                                    origin,
                                    secs,
                                    msg.evidence.as_str(),
                                )),
                            }
                        }
                        Ok(None) => {}
                        Err(BanError::NotAllowed(why)) => {
                            stats.refused.fetch_add(1, Ordering::Relaxed);
                            log.log(&lines::refused(net, origin, &why.to_string()));
                        }
                        Err(e) => log.log(&lines::not_applied(net, origin, &format!("{e:#}"))),
                    }
                }
                Inbound::Unban { net, origin } => {
                    let kernel = self.responder.bans_mut();
                    let received = kernel
                        .book()
                        .in_force(net, now)
                        .is_some_and(|b| message::origin_of(&b.reason).is_some());
                    if received && let Ok(Some(ban)) = kernel.unban(now, net) {
                        log.log(&lines::unbanned(ban.key, &origin));
                        self.send_feedback(Feedback::Forget(ban.key));
                    }
                }
                Inbound::Revoke { subject, origin } => {
                    let n = self.lift_origin(&subject, log);
                    log.log(&lines::revoked(&subject, &origin, n));
                }
            }
        }
        self.state.set_fleet_id(Some(batch.last_id));
        self.responder.bans_mut().touch();
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
            fleet: None,
            about: About::default(),
            gauges: Default::default(),
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

    /// The engine's response to `probe`, as the capture thread queues it.
    fn respond(probe: Probe) -> ToReporter {
        ToReporter::Action(Action::Respond { probe }, Millis(0))
    }

    /// The native bans of a batch run before its lines, but never across a control
    /// request: ban, unban, ban again in one batch leaves the source banned, as it
    /// would one message at a time.
    #[test]
    fn bans_first_but_in_order_around_a_control_request() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Captured::new(dir.path());
        let (mut reporter, feedback) = reporter(dir.path());
        let respond = || respond(probe());
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
        let respond = respond(probe());
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
            fleet: None,
            about: About::default(),
            gauges: Default::default(),
        };
        let respond = respond(probe());
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

    mod fleet {
        use super::*;
        use crate::fleet::message::{Kind, Message, origin_of};
        use crate::fleet::{Batch, Fleet, Inbound};
        use portsentry_engine::{Evidence, ProbeKind};

        fn received(origin: &str, net: &str, secs: u64) -> Message {
            Message {
                kind: Kind::Ban,
                origin: origin.into(),
                net: net.parse().unwrap(),
                evidence: Evidence::Verified,
                scan: "TCP connect to TCP port 23".into(),
                ports: "23".into(),
                sent: now(),
                ends: Some(now() + secs),
                offences: 1,
                subject: String::new(),
            }
        }

        fn batch(items: Vec<Inbound>) -> ToReporter {
            ToReporter::Fleet(Batch {
                items,
                last_id: "1700000000000-1".into(),
            })
        }

        fn with_fleet(dir: &std::path::Path) -> (Reporter, Receiver<Message>, Receiver<Feedback>) {
            let (mut r, feedback) = reporter(dir);
            let (fleet, published) = Fleet::detached("node-b");
            r.fleet = Some(fleet);
            (r, published, feedback)
        }

        /// A verified ban is published as a ban, an unverified one as a report (for k
        /// of n), with what the issue lists.
        #[test]
        fn local_bans_are_published_verified_as_bans_unverified_as_reports() {
            let dir = tempfile::tempdir().unwrap();
            let cap = Captured::new(dir.path());
            let (mut r, published, _fb) = with_fleet(dir.path());
            r.handle_batch(vec![respond(probe())], &cap.log);
            let report = published.try_recv().unwrap();
            assert_eq!(
                (report.kind, report.evidence, report.origin.as_str()),
                (Kind::Report, Evidence::Unverified, "node-b")
            );
            assert_eq!(report.net.to_string(), format!("{SCANNER}/32"));
            assert_eq!((report.ports.as_str(), report.offences), ("111", 1));
            assert!(report.ends.is_some_and(|t| t > now()));
            let mut p = probe();
            p.src = "198.18.0.3".parse().unwrap();
            p.kind = ProbeKind::Connect;
            r.handle_batch(vec![respond(p)], &cap.log);
            let ban = published.try_recv().unwrap();
            assert_eq!((ban.kind, ban.evidence), (Kind::Ban, Evidence::Verified));
            assert!(published.try_recv().is_err());
        }

        /// A received ban goes into the book with its origin, capped as judged, and is
        /// never published again; the stream ID is kept for the state file.
        #[test]
        fn a_received_ban_is_applied_with_its_origin_and_not_republished() {
            let dir = tempfile::tempdir().unwrap();
            let cap = Captured::new(dir.path());
            let (mut r, published, _fb) = with_fleet(dir.path());
            let msg = received("node-a", "198.18.0.7/32", 3600);
            let item = Inbound::Ban {
                msg,
                duration: Duration::from_secs(600),
                quorum: None,
            };
            r.handle_batch(vec![batch(vec![item])], &cap.log);
            let book = r.responder.bans_mut().book();
            let ban = book
                .in_force("198.18.0.7/32".parse().unwrap(), now())
                .unwrap();
            assert_eq!(origin_of(&ban.reason), Some("node-a"));
            assert!(ban.expires_at.is_some_and(|t| t <= now() + 601));
            assert_eq!(ban.evidence, Evidence::Verified);
            assert!(
                published.try_recv().is_err(),
                "a received ban was published"
            );
            assert_eq!(r.state.fleet_id().as_deref(), Some("1700000000000-1"));
            assert!(cap.lines().iter().any(|l| l.contains(
                "fleet: 198.18.0.7/32 banned for 600s on the word of node node-a (verified)"
            )));
        }

        /// A received unban lifts only a ban that came from the fleet; a revoke lifts
        /// everything its subject injected; `unban --origin` does it here and publishes
        /// the revocation.
        #[test]
        fn unban_and_revoke_lift_only_fleet_bans_of_their_origin() {
            let dir = tempfile::tempdir().unwrap();
            let cap = Captured::new(dir.path());
            let (mut r, published, _fb) = with_fleet(dir.path());
            // A local ban of SCANNER, and fleet bans from node-a and node-c.
            r.handle_batch(vec![respond(probe())], &cap.log);
            let _ = published.try_recv();
            let ban = |origin: &str, net: &str| Inbound::Ban {
                msg: received(origin, net, 3600),
                duration: Duration::from_secs(3600),
                quorum: None,
            };
            r.handle_batch(
                vec![batch(vec![
                    ban("node-a", "198.18.0.7/32"),
                    ban("node-a", "198.18.0.8/32"),
                    ban("node-c", "198.18.0.9/32"),
                ])],
                &cap.log,
            );
            let active = |r: &mut Reporter| r.responder.bans_mut().active_count(now());
            assert_eq!(active(&mut r), 4);
            let scanner: IpNet = format!("{SCANNER}/32").parse().unwrap();
            let unban = |net: IpNet| Inbound::Unban {
                net,
                origin: "node-c".into(),
            };
            // Not a fleet ban: kept.
            r.handle_batch(vec![batch(vec![unban(scanner)])], &cap.log);
            assert_eq!(active(&mut r), 4);
            r.handle_batch(
                vec![batch(vec![unban("198.18.0.9/32".parse().unwrap())])],
                &cap.log,
            );
            assert_eq!(active(&mut r), 3);
            // unban --origin node-a: both of its bans, the revocation published.
            let (reply, answer) = mpsc::channel();
            let pending = control::Pending {
                request: control::Request::UnbanOrigin {
                    node: "node-a".into(),
                },
                reply,
            };
            r.handle_batch(vec![ToReporter::Control(pending)], &cap.log);
            assert_eq!(
                answer.recv().unwrap(),
                "ok: 2 bans from fleet node node-a lifted here; the revocation is published to the fleet"
            );
            assert_eq!(active(&mut r), 1);
            let revoke = published.try_recv().unwrap();
            assert_eq!(
                (revoke.kind, revoke.subject.as_str()),
                (Kind::Revoke, "node-a")
            );
            assert!(published.try_recv().is_err());
        }
    }
}
