//! The capture loop (the main thread): probe source → engine → actions to the
//! reporter, outcomes back into the engine. Between turns it keeps the protected set
//! current (address and route changes) and re-installs our table if another tool
//! removed it.
//!
//! It never blocks on the reporter: when the action queue is full an alert is dropped
//! and counted, and a dropped response is reported to the engine as failed, so that it
//! is retried after the back-off.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;

use anyhow::{Context, Result};
use portsentry_engine::engine::{Action, Engine, Outcome};
use portsentry_engine::{Millis, Probe};
use portsentry_kernel::rtnl::ChangeWatcher;

use super::Stop;
use super::gauges::Gauges;
use super::reporter::{Feedback, ToReporter, action_probe};
use super::signals::{Flags, Settle};
use super::source::{PACKETS_PER_TURN, ProbeSource, SourceStats};
use super::startup::{self, NativeFirewall};
use super::unbanned::{Notice, Unbanned};
use crate::alerts;
use crate::clock::{self, boottime_now};
use crate::control;
use crate::defaults;
use crate::logger::Logger;
use crate::protect::{Latest, ProtectedSources};
use crate::settings::Settings;

/// Longest sleep of the capture loop, so shutdown and outcomes are seen promptly.
const MAX_WAIT: Duration = Duration::from_millis(200);
/// Protected addresses are re-read at most this often when the host's addresses or
/// routes change (a flapping link must not fork `nft` in a loop).
const PROTECT_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(2);
/// How often the loop checks that our table is still there (an `nft flush ruleset` by
/// another tool, e.g. a firewall reload, removes it).
const TABLE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Control-socket questions answered per turn; the rest wait for the next turn.
const QUERIES_PER_TURN: usize = 16;

/// The channels to and from the reporter, and the control socket's questions.
pub struct Links {
    pub actions: SyncSender<ToReporter>,
    pub feedback: Receiver<Feedback>,
    pub queries: Receiver<control::CaptureQuery>,
    pub gauges: Arc<Gauges>,
}

pub struct Capture<'a> {
    pub settings: &'a Settings,
    pub log: &'a Logger,
    pub source: Box<dyn ProbeSource>,
    pub firewall: Option<&'a NativeFirewall>,
    pub protect_sources: ProtectedSources,
    /// Where each refreshed protected set goes for the reporter's ban checks.
    pub protected_out: Latest,
    pub engine: Engine,
    pub stats: SourceStats,
    /// Actions the full queue made us drop.
    pub dropped_actions: u64,
    /// Probes of one turn.
    pub probes: Vec<Probe>,
    /// Probes the kernel dropped without a ban; never handed to the engine.
    pub unbanned: Unbanned,
    /// The kernel's over-budget counter when last read (`None`: not read yet).
    over_counter: Option<u64>,
}

impl<'a> Capture<'a> {
    pub fn new(
        settings: &'a Settings,
        log: &'a Logger,
        source: Box<dyn ProbeSource>,
        firewall: Option<&'a NativeFirewall>,
        protect_sources: ProtectedSources,
        protected_out: Latest,
        engine: Engine,
    ) -> Self {
        Capture {
            settings,
            log,
            source,
            firewall,
            protect_sources,
            protected_out,
            engine,
            stats: SourceStats::default(),
            dropped_actions: 0,
            probes: Vec::with_capacity(PACKETS_PER_TURN),
            unbanned: Unbanned::new(
                defaults::UNBANNED_REPORT_INTERVAL,
                defaults::UNBANNED_TRACKED_SOURCES,
            ),
            over_counter: None,
        }
    }

    /// Run until `shutdown`, or a settled `reload` with a configuration `validate`
    /// accepts; a `reopen` is passed on to the reporter.
    pub fn run(
        &mut self,
        flags: &Flags,
        validate: &dyn Fn() -> Result<()>,
        links: Links,
    ) -> Result<Stop> {
        let (shutdown, reload, reopen) = (&*flags.shutdown, &*flags.reload, &*flags.reopen);
        let mut stop = Stop::Shutdown;
        let mut settle = Settle::default();
        let mut watcher = match ChangeWatcher::open() {
            Ok(w) => Some(w),
            Err(e) => {
                self.log.log(&alerts::no_change_watcher(&e));
                None
            }
        };
        let mut protect_pending = false;
        let mut last_protect_refresh = clock::instant();
        let mut last_table_check = clock::instant();
        // The counter survives a re-apply: what it held before this run is not ours.
        self.over_counter = self.read_over_counter();

        while !shutdown.load(Ordering::Relaxed) {
            let turn = clock::instant();
            if reload.swap(false, Ordering::Relaxed) {
                settle.request(turn);
            }
            if settle.take_due(turn) {
                match validate() {
                    Ok(()) => {
                        stop = Stop::Reload;
                        break;
                    }
                    Err(e) => self.log.log(&alerts::reload_refused(&e)),
                }
            }
            if reopen.swap(false, Ordering::Relaxed) {
                // The reporter owns the files. A full queue: ask again next turn.
                if links.actions.try_send(ToReporter::Reopen).is_err() {
                    reopen.store(true, Ordering::Relaxed);
                } else {
                    links.gauges.to_reporter.sent();
                }
            }
            let now = boottime_now();
            let wait = self
                .engine
                .poll_timeout()
                .map(|t| t.since(now))
                .unwrap_or(MAX_WAIT)
                .min(MAX_WAIT)
                .min(settle.until_due(turn).unwrap_or(MAX_WAIT));
            self.source.wait(wait).context("waiting for packets")?;
            let now = boottime_now();
            self.source
                .read(now, self.settings, &mut self.stats, &mut self.probes)
                .context("reading probes")?;
            let mut probes = std::mem::take(&mut self.probes);
            let metrics = crate::metrics::get();
            for probe in probes.drain(..) {
                metrics.probe(&probe);
                if Unbanned::takes(&probe) {
                    // Past the budget or a full set: dropped by the kernel without a
                    // ban; a summary line at most, never a response (which could ban
                    // in user space). Known peers go to the engine, which says
                    // "possibly forged" and never bans them; so do set-full samples
                    // (at most one a second from the kernel), which it alerts without
                    // a response, so a new scanner is still seen.
                    self.unbanned_probe(now, &probe);
                    if probe.verdict == portsentry_engine::Verdict::SetFull {
                        self.engine.handle_probe(now, probe);
                    }
                } else {
                    self.engine.handle_probe(now, probe);
                }
            }
            self.probes = probes;
            self.report_over_budget(now);
            while let Ok(feedback) = links.feedback.try_recv() {
                links.gauges.feedback.taken();
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
            self.dispatch(now, &links);
            for query in links.queries.try_iter().take(QUERIES_PER_TURN) {
                self.answer(now, query);
            }

            if watcher.as_mut().is_some_and(ChangeWatcher::changed) {
                protect_pending = true;
            }
            // `Instant::elapsed` would read the clock here; clock.rs is the one reader.
            let after = clock::instant();
            if protect_pending
                && after.duration_since(last_protect_refresh) >= PROTECT_REFRESH_MIN_INTERVAL
            {
                protect_pending = false;
                last_protect_refresh = after;
                self.refresh_protected("addresses or routes changed");
            }
            if after.duration_since(last_table_check) >= TABLE_CHECK_INTERVAL {
                last_table_check = after;
                self.publish_kernel_losses();
                self.check_table(&links);
            }
        }
        // Blocking send: the reporter is draining, and must hear that we are done (the
        // control thread holds another sender, so the channel never disconnects).
        if links.actions.send(ToReporter::Stop).is_ok() {
            links.gauges.to_reporter.sent();
        }
        self.log_stats();
        Ok(stop)
    }

    fn unbanned_probe(&mut self, now: Millis, probe: &Probe) {
        match self.unbanned.record(now, probe) {
            Some(Notice::SetFull { v4 }) => {
                let set = if v4 { "banned4" } else { "banned6" };
                self.log.log(&alerts::kernel_set_full(
                    set,
                    self.settings.firewall.set_size,
                ));
            }
            None => {}
        }
    }

    /// The over-budget summary, once a minute while the budget is being spent. The
    /// number of probes comes from the kernel's counter when it can be read (one `nft`
    /// run a minute at most), else from the samples.
    fn report_over_budget(&mut self, now: Millis) {
        let Some(summary) = self.unbanned.take_summary(now) else {
            return;
        };
        let (probes, counted) = match (self.over_counter, self.read_over_counter()) {
            (Some(before), Some(after)) => {
                self.over_counter = Some(after);
                // A smaller value: the table was made anew, the counter started at 0.
                (
                    if after >= before {
                        after - before
                    } else {
                        after
                    },
                    true,
                )
            }
            (_, after) => {
                self.over_counter = after;
                (summary.samples, false)
            }
        };
        self.log.log(&alerts::ban_budget_spent(
            probes.max(summary.samples),
            summary.sources,
            counted,
        ));
    }

    fn read_over_counter(&self) -> Option<u64> {
        let fw = self.firewall?;
        fw.spec.ban_budget?;
        fw.nft
            .counter(portsentry_kernel::nft::COUNTER_OVER_BUDGET)
            .ok()
    }

    /// Answer one question of the control socket from the engine's state (a copy of a
    /// few values; the reply channel never blocks).
    fn answer(&self, now: Millis, query: control::CaptureQuery) {
        use control::CaptureQuery;
        use control::views::{EngineExplainView, EngineSourceView, EngineStatsView};
        use portsentry_engine::engine::{Exempt, SourceStatus};
        let trigger = self.engine.config().scan_trigger;
        match query {
            CaptureQuery::Stats { reply } => {
                let s = self.engine.stats();
                let _ = reply.send(EngineStatsView {
                    scan_trigger: trigger,
                    tracked_sources: self.engine.tracked_sources() as u64,
                    capacity: self.engine.config().capacity as u64,
                    probes: s.probes,
                    grace_hits: s.grace_hits,
                    alerts: s.alerts,
                    responses: s.responses,
                    ignored: s.ignored,
                    already_blocked: s.already_blocked,
                    possibly_forged: s.possibly_forged,
                    not_banned_by_kernel: s.not_banned_by_kernel,
                    suppressed_lines: s.suppressed_lines,
                    evictions: s.evictions,
                    kernel_losses: self.source.kernel_losses(),
                });
            }
            CaptureQuery::Source { ip, reply } => {
                let secs = |d: std::time::Duration| d.as_secs();
                let sources = self
                    .engine
                    .source_view(ip)
                    .into_iter()
                    .map(|v| {
                        let (state, blocked_for) = match v.state {
                            SourceStatus::Watching => ("watching", None),
                            SourceStatus::Responding => ("responding", None),
                            SourceStatus::Blocked { until } => {
                                ("blocked", until.map(|t| secs(t.since(now))))
                            }
                            SourceStatus::Reported => ("reported", None),
                            SourceStatus::Failed { .. } => ("failed", None),
                        };
                        EngineSourceView {
                            proto: v.proto.to_string().to_lowercase(),
                            hits: v.hits,
                            state: state.into(),
                            last_port: v.last_port,
                            last_hit_seconds_ago: secs(now.since(v.last_hit)),
                            blocked_for_seconds: blocked_for,
                        }
                    })
                    .collect();
                let _ = reply.send(EngineExplainView {
                    scan_trigger: trigger,
                    exempt: self.engine.exemption(ip).map(|e| {
                        match e {
                            Exempt::IgnoreList => "ignore_list",
                            Exempt::Protected => "protected",
                        }
                        .into()
                    }),
                    sources,
                });
            }
        }
    }

    /// Hand the engine's actions to the reporter without ever waiting for it.
    fn dispatch(&mut self, now: Millis, links: &Links) {
        while let Some(action) = self.engine.poll_action() {
            match links.actions.try_send(ToReporter::Action(action, now)) {
                Ok(()) => {
                    links.gauges.to_reporter.sent();
                    crate::metrics::get().reporter_queue.inc();
                }
                Err(TrySendError::Full(rejected)) | Err(TrySendError::Disconnected(rejected)) => {
                    self.dropped_actions += 1;
                    links.gauges.dropped_actions.fetch_add(1, Ordering::Relaxed);
                    if let ToReporter::Action(action @ Action::Respond { .. }, _) = rejected {
                        let probe = action_probe(&action);
                        self.engine
                            .handle_outcome(now, probe.src, probe.proto(), Outcome::Failed);
                    }
                }
            }
        }
    }

    /// Re-install our table if something removed it, and have the bans put back.
    fn check_table(&mut self, links: &Links) {
        let Some(fw) = self.firewall else { return };
        match fw.nft.exists() {
            Ok(true) => {}
            Ok(false) => match fw.nft.apply(&fw.spec) {
                Ok(_) => {
                    self.log.log(&alerts::table_reinstalled(fw.nft.table()));
                    // The same refresh as on an address change: the kernel's set and
                    // the engine's protected set stay one list.
                    self.refresh_protected("table installed again");
                    if links.actions.send(ToReporter::Restore).is_ok() {
                        links.gauges.to_reporter.sent();
                    }
                }
                Err(e) => self.log.log(&alerts::error(
                    &format!(
                        "table inet {} was removed and cannot be installed again",
                        fw.nft.table()
                    ),
                    &e,
                )),
            },
            Err(e) => self
                .log
                .log(&alerts::error("cannot check our nftables table", &e)),
        }
    }

    /// Re-read the protected networks and load them into our table and the engine.
    fn refresh_protected(&mut self, why: &str) {
        let nets = match startup::gather_protected(self.settings, &self.protect_sources) {
            Ok(nets) => nets,
            Err(e) => {
                self.log
                    .log(&alerts::error("cannot refresh the protected set", &e));
                return;
            }
        };
        if let Some(fw) = self.firewall
            && let Err(e) = fw.nft.set_protected(&nets)
        {
            self.log
                .log(&alerts::error("cannot update the protected set", &e));
            return;
        }
        let set = startup::ignore_set(&nets);
        self.protected_out.publish(set.clone());
        self.engine.set_protected(set);
        self.log.log(&alerts::protected_refreshed(why, nets.len()));
    }

    /// The sources' kernel losses (cumulative) into the metrics counter.
    fn publish_kernel_losses(&mut self) {
        let total = self.source.kernel_losses();
        let counter = &crate::metrics::get().kernel_drops;
        let seen = counter.get();
        if total > seen {
            counter.inc_by(total - seen);
        }
    }

    fn log_stats(&self) {
        let counts = alerts::CaptureCounts {
            parse: self.stats.parse,
            in_use_skipped: self.stats.in_use_skipped,
            usage_errors: self.stats.usage_errors,
            dropped_actions: self.dropped_actions,
            kernel_losses: self.source.kernel_losses(),
        };
        self.log
            .log(&alerts::statistics(&self.engine.stats(), &counts));
    }
}
