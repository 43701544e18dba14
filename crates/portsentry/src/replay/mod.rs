//! `portsentry replay FILE`: the real engine and ban policy run over a capture, with
//! the capture's own time stamps, and a report per source of what the daemon would
//! have logged and done, and why. Nothing is banned, run or written: the kernel's
//! part (our nftables table: traps, ban sets, known peers, budget) is the pure model
//! of [`table`], and the bans go into that model through the real
//! [`BanLifecycle`](crate::bans::BanLifecycle).
//!
//! One pass learns this host's addresses in the capture and the ports it had sockets
//! on (what it answered from), the second replays: capture frame → [`capture`] →
//! `wire::parse_ip` → [`table`] (the rules the live kernel applies first) →
//! `Engine::handle_probe` → actions → the same admission, ban and log-line functions
//! the reporter uses → outcome back to the engine at once (the live reporter answers
//! within milliseconds).

pub mod capture;
pub mod report;
pub mod table;

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use portsentry_engine::bans::BanBook;
use portsentry_engine::engine::{Action, Engine, Outcome};
use portsentry_engine::ignore::IgnoreSet;
use portsentry_engine::wire::{self, Segment};
use portsentry_engine::{Millis, Probe, Verdict};

use crate::alerts::{self, Host};
use crate::bans::{Admission, BOOK_CAPACITY, BanBudget, BanError, BanLifecycle};
use crate::config::BlockMode;
use crate::daemon::reporter::action_probe;
use crate::daemon::respond::expand_macros;
use crate::daemon::startup;
use crate::daemon::unbanned::{Notice, Unbanned};
use crate::defaults;
use crate::settings::Settings;
pub use report::{Report, SourceReport};
use table::{ModelBackend, PortsInUse, Seen, SharedSets, TableModel};

/// What to replay, and as which host.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// This host's addresses in the capture; empty: this host's own addresses now
    /// (those that appear in the capture).
    pub local: Vec<IpAddr>,
}

/// Replay the capture at `path` under `settings`.
pub fn run(settings: &Settings, path: &Path, options: &Options) -> Result<Report> {
    // Pass 1: which addresses are this host's, and which ports it had sockets on (what
    // the candidates, this host's addresses or `--local`, sent from).
    let given = !options.local.is_empty();
    let candidates: HashSet<IpAddr> = if given {
        options.local.iter().map(|a| a.to_canonical()).collect()
    } else {
        portsentry_kernel::rtnl::local_addresses()
            .context("cannot read this host's addresses (give them with --local)")?
            .into_iter()
            .map(|a| a.to_canonical())
            .collect()
    };
    let mut seen_local: HashSet<IpAddr> = HashSet::new();
    let mut in_use = PortsInUse::default();
    let mut first_time = None;
    capture::for_each_frame(path, |frame| {
        if let Some(Ok(seg)) = frame.ip.map(wire::parse_ip) {
            first_time.get_or_insert(frame.time);
            for addr in [seg.src, seg.dst].map(|a| a.to_canonical()) {
                if candidates.contains(&addr) {
                    seen_local.insert(addr);
                }
            }
            if candidates.contains(&seg.src.to_canonical()) {
                in_use.learn(&seg);
            }
        }
    })
    .with_context(|| format!("cannot read the capture {}", path.display()))?;
    let local = if given { candidates } else { seen_local };
    if local.is_empty() && first_time.is_some() {
        bail!(
            "none of this host's addresses is in the capture: say which are the captured host's with --local ADDR"
        );
    }

    // The protected set as the daemon builds it here, with the captured host's own.
    let mut protected = startup::gather_protected(settings, &startup::protect_sources(settings))
        .context("cannot gather the protected set")?;
    protected.extend(local.iter().map(|a| ipnet::IpNet::from(*a)));
    let protected_set = startup::ignore_set(&protected);

    let start_unix = first_time.map_or(0, |t| t.as_secs());
    let spec = startup::trap_spec(settings);
    let sets = SharedSets::new(spec.set_size as usize);
    let mut replay = Replay {
        settings,
        report: Report::new(path, &local, &spec, &in_use),
        table: TableModel::new(spec.clone(), protected_set.clone(), in_use, sets.clone()),
        sets: sets.clone(),
        engine: {
            let ignore = match settings.ignore_file {
                Some(_) => settings.ignore.clone(),
                None => IgnoreSet::new(),
            };
            let mut e = Engine::new(settings.engine.clone(), ignore);
            e.set_protected(protected_set.clone());
            e
        },
        bans: {
            let (mut bans, _) = BanLifecycle::start(
                BanBook::new(BOOK_CAPACITY),
                0,
                settings.ban_policies.clone(),
                Some(Box::new(ModelBackend(sets))),
                protected_set,
                start_unix,
            )?;
            bans.set_budget(BanBudget::new(
                settings.firewall.ban_budget,
                settings.firewall.ban_budget_burst,
            ));
            bans
        },
        unbanned: Unbanned::new(
            defaults::UNBANNED_REPORT_INTERVAL,
            defaults::UNBANNED_TRACKED_SOURCES,
        ),
        epoch: first_time.unwrap_or_default(),
        last: Duration::ZERO,
        set_full_said: false,
    };
    replay.report.start_time = first_time.map(|t| t.as_millis() as u64);
    // Pass 2: the replay.
    capture::for_each_frame(path, |frame| replay.frame(frame))
        .with_context(|| format!("cannot read the capture {}", path.display()))?;
    replay.finish();
    Ok(replay.report)
}

struct Replay<'a> {
    settings: &'a Settings,
    report: Report,
    table: TableModel,
    sets: SharedSets,
    engine: Engine,
    bans: BanLifecycle,
    unbanned: Unbanned,
    /// The first packet's time: the monotonic clock's zero.
    epoch: Duration,
    /// The latest packet's time (a capture may step back a little; time never does).
    last: Duration,
    set_full_said: bool,
}

impl Replay<'_> {
    fn frame(&mut self, frame: capture::Frame<'_>) {
        self.report.packets += 1;
        let Some(ip) = frame.ip else {
            self.report.not_ip += 1;
            return;
        };
        let Ok(seg) = wire::parse_ip(ip) else {
            self.report.not_ip += 1;
            return;
        };
        self.last = self.last.max(frame.time);
        let (now_ms, mono) = self.clock();
        self.tick(now_ms, mono);
        let src = seg.src.to_canonical();
        let dst = seg.dst.to_canonical();
        if self.report.local.contains(&src) {
            self.table
                .outbound(now_ms, &seg, table::tcp_payload_len(ip));
            return;
        }
        if !self.report.local.contains(&dst) {
            self.report.not_ours += 1;
            return;
        }
        self.inbound(now_ms, mono, &seg);
    }

    /// Capture time as Unix milliseconds, and as the monotonic clock (from the first
    /// packet, which is never zero: the engine's zero means "never").
    fn clock(&self) -> (u64, Millis) {
        let now_ms = self.last.as_millis() as u64;
        let mono = Millis(self.last.saturating_sub(self.epoch).as_millis() as u64 + 1);
        (now_ms, mono)
    }

    fn tick(&mut self, now_ms: u64, mono: Millis) {
        if self.engine.poll_timeout().is_some_and(|t| t <= mono) {
            self.engine.handle_timeout(mono);
            self.drain(now_ms, mono);
        }
        if let Some(summary) = self.unbanned.take_summary(mono) {
            self.report.global_line(
                now_ms,
                alerts::ban_budget_spent(summary.samples, summary.sources, false),
            );
        }
        for (ban, _) in self.bans.take_expired(now_ms / 1000) {
            let line = alerts::ban_ended(ban.key, ban.offences);
            match portsentry_kernel::backend::host_of(ban.key) {
                Some(ip) => self.report.source(ip).line(now_ms, line),
                None => self.report.global_line(now_ms, line),
            }
        }
    }

    fn inbound(&mut self, now_ms: u64, mono: Millis, seg: &Segment) {
        let seen = self.table.inbound(now_ms, mono, seg);
        let src = seg.src.to_canonical();
        match seen {
            Seen::Passed => {}
            Seen::DroppedBanned => self.report.source(src).dropped_banned += 1,
            Seen::DroppedUnlogged => self.report.source(src).dropped_unlogged += 1,
            Seen::Probe(probe) => {
                self.report.source(src).probe(&probe);
                if Unbanned::takes(&probe) {
                    if let Some(Notice::SetFull { v4 }) = self.unbanned.record(mono, &probe) {
                        let set = if v4 { "banned4" } else { "banned6" };
                        self.report.global_line(
                            now_ms,
                            alerts::kernel_set_full(set, self.settings.firewall.set_size),
                        );
                    }
                    if probe.verdict == Verdict::SetFull {
                        self.engine.handle_probe(mono, probe);
                    }
                } else {
                    self.engine.handle_probe(mono, probe);
                }
                self.drain(now_ms, mono);
            }
        }
    }

    /// Every action the engine has, handled as the reporter does; outcomes go back at
    /// once.
    fn drain(&mut self, now_ms: u64, mono: Millis) {
        while let Some(action) = self.engine.poll_action() {
            let probe = *action_probe(&action);
            let ip = probe.src;
            let name = ip.to_string();
            let host = Host { name: &name, ip };
            let classic = self
                .settings
                .mode(probe.proto())
                .is_some_and(|m| m.plan.classic());
            let mut lines = Vec::new();
            match action {
                Action::Alert { suppressed, .. } => {
                    if suppressed > 0 {
                        lines.push(alerts::hits_not_logged(host, suppressed));
                    }
                    lines.push(if classic {
                        alerts::connect(host, &probe)
                    } else {
                        alerts::scan(host, &probe)
                    });
                    if probe.ip_options {
                        lines.push(alerts::ip_options(host, &probe));
                    }
                    self.report.source(ip).alerted(now_ms);
                }
                Action::Respond { .. } => {
                    let outcome = self.respond(now_ms, mono, &probe, &mut lines);
                    self.engine.handle_outcome(mono, ip, probe.proto(), outcome);
                }
                Action::AlreadyBlocked { suppressed, .. } => lines.push(if classic {
                    alerts::already_blocked_classic(host, suppressed)
                } else {
                    alerts::already_blocked(host, suppressed)
                }),
                Action::Ignored {
                    suppressed, why, ..
                } => {
                    lines.push(alerts::ignored(host, &probe, suppressed, why));
                    self.report.source(ip).protected_by = Some(report::exempt_words(why));
                }
                Action::Suppressed { count, .. } => lines.push(alerts::hits_not_logged_last(
                    host,
                    count,
                    probe.proto(),
                    probe.dport,
                )),
                Action::PossiblyForged { suppressed, .. } => {
                    lines.push(alerts::possibly_forged(host, &probe, suppressed));
                    self.report.source(ip).protected_by = Some(
                        "known peer: it exchanged data with this host, so its single packets may be forged; never banned for them".into(),
                    );
                }
            }
            let source = self.report.source(ip);
            for line in lines {
                source.line(now_ms, line);
            }
        }
    }

    /// The response: the reporter's `ban_natively` and the 1.2 chain, without running
    /// anything. Returns the outcome the engine is told.
    fn respond(
        &mut self,
        now_ms: u64,
        mono: Millis,
        probe: &Probe,
        lines: &mut Vec<String>,
    ) -> Outcome {
        let Some(mode) = self.settings.mode(probe.proto()) else {
            return Outcome::Reported;
        };
        let plan = &mode.plan;
        let ip = probe.src;
        let now = now_ms / 1000;
        let evidence = probe.evidence();
        let mut outcome = Outcome::Reported;
        if plan.block == BlockMode::Block {
            match self
                .bans
                .admit(now, mono, ip, evidence, probe.kernel_banned())
            {
                Admission::Ban => {}
                Admission::NotByPolicy => {
                    lines.push(alerts::not_banned_by_policy(ip, evidence));
                    return Outcome::Reported;
                }
                Admission::OverBudget => {
                    self.report.source(ip).over_budget_user += 1;
                    return Outcome::Failed;
                }
            }
            let reason = format!("{} to {} port {}", probe.kind, probe.proto(), probe.dport);
            match self
                .bans
                .ban(now, ip, evidence, probe.kernel_banned(), &reason)
            {
                Ok(banned) => {
                    lines.push(alerts::kernel_ban(
                        ip,
                        &banned.place,
                        banned.timeout,
                        banned.ban.offences,
                        banned.ban.evidence,
                    ));
                    self.report.source(ip).banned(now_ms, probe, &banned);
                    outcome = Outcome::Blocked {
                        length: banned.timeout,
                    };
                }
                Err(BanError::SetFull(why)) => {
                    if !self.set_full_said {
                        self.set_full_said = true;
                        lines.push(alerts::ban_set_full(ip, &why));
                    }
                    return Outcome::Failed;
                }
                Err(e) => {
                    lines.push(alerts::kernel_ban_failed(ip, &e));
                    return Outcome::Failed;
                }
            }
        } else if plan.block == BlockMode::LogOnly {
            lines.push(alerts::response_ignored(probe.proto()));
            return Outcome::Reported;
        }
        // The 1.2 chain: what would have run, never run.
        let source = self.report.source(ip);
        let commands = [
            ("KILL_HOSTS_DENY", plan.kill_hosts_deny.as_deref(), true),
            ("KILL_ROUTE", plan.kill_route.as_deref(), false),
            ("KILL_RUN_CMD", plan.kill_run_cmd.as_deref(), false),
        ];
        for (key, template, hosts_deny) in commands {
            if let Some(t) = template {
                if plan.block == BlockMode::RunCmdOnly && key != "KILL_RUN_CMD" {
                    continue;
                }
                source.would_run(format!(
                    "{key}: {}",
                    expand_macros(t, ip, probe.dport, &plan.mode, hosts_deny)
                ));
            }
        }
        outcome
    }

    /// The end of the capture: damped lines whose period would have ended, the state
    /// of the bans at the last packet.
    fn finish(&mut self) {
        let (now_ms, mono) = self.clock();
        // Let every damping period end, so that suppressed counts are said.
        let end = Millis(mono.0 + self.settings.engine.log_damping.as_millis() as u64 + 1);
        self.engine.handle_timeout(end);
        self.drain(now_ms, end);
        if let Some(summary) = self.unbanned.take_summary(end) {
            self.report.global_line(
                now_ms,
                alerts::ban_budget_spent(summary.samples, summary.sources, false),
            );
        }
        self.report.bans_in_force = self.sets.lock().in_force();
        self.report.known_peers = self.table.known_peers(now_ms);
        self.report.end_time = now_ms;
        self.report.settle(self.bans.book(), now_ms / 1000);
    }
}
