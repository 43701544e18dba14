//! The legacy responses of PortSentry 1.2, run for one source when the engine asks:
//! BLOCK_TCP/BLOCK_UDP 0/1/2, KILL_HOSTS_DENY, KILL_ROUTE, KILL_RUN_CMD (first or last),
//! and the blocked/history records that follow a successful response.
//!
//! Rules that differ from 1.2 on purpose (COMPAT.md):
//! - "has been blocked" is logged only when the command exited 0 (1.2 only checked
//!   that the shell could be started); a failure is logged as a failure and the host
//!   is not recorded as blocked, so it is tried again later.
//! - Commands get a time limit, so a hung KILL_ROUTE cannot wedge the responder.
//! - Macro values are produced by us (an IP address, a port number, a mode name), so the
//!   `/bin/sh -c` that 1.2 configs rely on (`&&`, pipes) cannot be injected into.

use std::net::IpAddr;
use std::time::Duration;

use portsentry_engine::engine::Outcome;
use portsentry_engine::{Probe, Proto};

use crate::alerts::{self, Host, Undo};
use crate::bans::{Admission, BanError, BanLifecycle};
use crate::clock;
use crate::config::BlockMode;
use crate::defaults;
use crate::logger::Logger;
use crate::protect::Latest;
use crate::records::{self, HostsDenyResult, RecordFile};
use crate::settings::ResponsePlan;
use crate::undo;
use portsentry_kernel::process::{COMMAND_TIME_LIMIT, ProcessError, Run};

/// Runs responses and writes the records that follow them. Owned by the reporter thread.
pub struct Responder {
    tcp: Option<ModeResponse>,
    udp: Option<ModeResponse>,
    history: RecordFile,
    /// The ban book and its kernel side: nftables sets, a fallback backend, or (with
    /// `backend = "none"`) only a record of what the KILL_* commands did.
    bans: BanLifecycle,
    /// Protected sets the capture thread re-read, for [`Self::sync_protected`].
    protected_in: Latest,
    /// PortSentry 2.x's scan line and history format (a 2.x command line).
    log_2x: bool,
    /// The ban set is full and that was logged; bans not made since.
    set_full: Option<u64>,
    /// The KILL_* runs of the current minute ([`defaults::KILL_RUNS_PER_MINUTE`]).
    kill_window: KillWindow,
}

/// Counts KILL_* runs per minute; past the limit responses are skipped and counted.
#[derive(Debug)]
struct KillWindow {
    start: std::time::Instant,
    runs: u32,
    skipped: u64,
}

impl KillWindow {
    /// A new minute: say what the last one skipped, and start counting again.
    fn tick(&mut self, log: &Logger) {
        let now = clock::instant();
        if now.duration_since(self.start) < Duration::from_secs(60) {
            return;
        }
        if self.skipped > 0 {
            log.log(&alerts::kill_runs_skipped(
                self.skipped,
                defaults::KILL_RUNS_PER_MINUTE,
            ));
        }
        *self = KillWindow {
            start: now,
            runs: 0,
            skipped: 0,
        };
    }

    /// May the KILL_* chain run once more this minute? Counts a skip when not.
    fn allow(&mut self, log: &Logger) -> bool {
        self.tick(log);
        if self.runs < defaults::KILL_RUNS_PER_MINUTE {
            self.runs += 1;
            true
        } else {
            self.skipped += 1;
            false
        }
    }
}

/// One running mode's response: its 1.2 plan and its blocked file.
pub struct ModeResponse {
    pub plan: ResponsePlan,
    pub blocked: RecordFile,
}

impl NativeBan {
    /// Whether a native ban was made (or confirmed).
    pub fn banned(&self) -> bool {
        matches!(self.outcome, Some(Outcome::Blocked { .. }))
    }
}

/// What [`Responder::ban_natively`] did: the outcome when the kernel holds the ban, and
/// the line to log about it.
#[derive(Debug, Default)]
pub struct NativeBan {
    outcome: Option<Outcome>,
    line: Option<String>,
    /// No ban may be made (the evidence class's policy says `ban = false`, or the
    /// budget of new unverified bans is spent): the probe was alerted, and nothing of
    /// the 1.2 chain runs (KILL_* run only when a ban is made), nor is it recorded.
    alert_only: bool,
}

/// One step of the 1.2 action chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    HostsDeny,
    Route,
    RunCmd,
}

impl Responder {
    pub fn new(
        tcp: Option<ModeResponse>,
        udp: Option<ModeResponse>,
        history: RecordFile,
        bans: BanLifecycle,
    ) -> Self {
        Responder {
            tcp,
            udp,
            history,
            bans,
            protected_in: Latest::default(),
            log_2x: false,
            set_full: None,
            kill_window: KillWindow {
                start: clock::instant(),
                runs: 0,
                skipped: 0,
            },
        }
    }

    /// Write the record lines queued by the responses of a batch: one write and one
    /// fdatasync per file (the lines' format unchanged). The reporter calls it after
    /// each batch, before a reopen and at stop.
    pub fn flush_records(&mut self, log: &Logger) {
        let files = std::iter::once(&mut self.history).chain(
            [self.tcp.as_mut(), self.udp.as_mut()]
                .into_iter()
                .flatten()
                .map(|m| &mut m.blocked),
        );
        for file in files {
            if let Err(e) = file.flush() {
                log.log(&alerts::failure(&e));
            }
        }
    }

    /// Once a minute: how many KILL_* responses the limit skipped in the minute past.
    pub fn kill_limit_tick(&mut self, log: &Logger) {
        self.kill_window.tick(log);
    }

    /// Write PortSentry 2.x's scan line and history format instead of 1.2's.
    pub fn set_log_2x(&mut self, on: bool) {
        self.log_2x = on;
    }

    /// Whether 2.x's lines are written (the reporter writes the lines of hits that get no
    /// response the same way).
    pub fn log_2x(&self) -> bool {
        self.log_2x
    }

    /// The handle the capture thread publishes each refreshed protected set on.
    pub fn protected_updates(&self) -> Latest {
        self.protected_in.clone()
    }

    /// Hand the newest published protected set (if one came) to the ban lifecycle.
    pub fn sync_protected(&mut self) {
        if let Some(set) = self.protected_in.take() {
            self.bans.set_protected(set);
        }
    }

    /// SIGUSR1 (logrotate): reopen the history file and the blocked files. The blocked
    /// files are emptied only at start, as in 1.2 (they list one run's blocks); they
    /// are reopened too, never truncated, so a rotation of them is followed as well.
    /// A file that cannot be reopened keeps its old descriptor and is logged.
    pub fn reopen_records(&mut self, log: &Logger) {
        let files = std::iter::once(&mut self.history).chain(
            [self.tcp.as_mut(), self.udp.as_mut()]
                .into_iter()
                .flatten()
                .map(|m| &mut m.blocked),
        );
        let (mut count, mut new) = (0, 0);
        for file in files {
            count += 1;
            match file.reopen() {
                Ok(created) => new += usize::from(created),
                Err(e) => log.log(&alerts::error("cannot reopen a record file", &e)),
            }
        }
        log.log(&alerts::records_reopened(count, new));
    }

    /// The ban lifecycle, for the control socket, periodic saves and expiry.
    pub fn bans_mut(&mut self) -> &mut BanLifecycle {
        &mut self.bans
    }

    /// Phase one of a response, before any name lookup: whether the probe's evidence
    /// may ban at all now ([`BanLifecycle::admit`]: its class's policy, the budget of
    /// new unverified bans), then the native ban of its source, when this mode blocks
    /// and the book has a kernel side. Its log line is returned with it, to be logged
    /// in order by [`Self::finish`].
    pub fn ban_natively(&mut self, probe: &Probe) -> NativeBan {
        let wants_block = self
            .mode(probe.proto())
            .is_some_and(|m| m.plan.block == BlockMode::Block);
        if !wants_block {
            return NativeBan::default();
        }
        let target = probe.src;
        let evidence = probe.evidence();
        let now = clock::now();
        match self
            .bans
            .admit(now.unix, now.mono, target, evidence, probe.kernel_banned())
        {
            Admission::Ban => {}
            Admission::NotByPolicy => {
                return NativeBan {
                    outcome: Some(Outcome::Reported),
                    line: Some(alerts::not_banned_by_policy(target, evidence)),
                    alert_only: true,
                };
            }
            // Counted for the summary line; no line per probe under a flood. Tried
            // again after the engine's back-off, when the budget may have refilled.
            Admission::OverBudget => {
                return NativeBan {
                    outcome: Some(Outcome::Failed),
                    line: None,
                    alert_only: true,
                };
            }
        }
        if !self.bans.is_native() {
            return NativeBan::default();
        }
        let reason = format!("{} to {} port {}", probe.kind, probe.proto(), probe.dport);
        match self
            .bans
            .ban(now.unix, target, evidence, probe.kernel_banned(), &reason)
        {
            Ok(banned) => {
                crate::metrics::get().ban(
                    banned.ban.evidence,
                    self.bans.backend_name().unwrap_or("native"),
                );
                let mut line = alerts::kernel_ban(
                    target,
                    &banned.place,
                    banned.timeout,
                    banned.ban.offences,
                    banned.ban.evidence,
                );
                if banned.written
                    && let Some(skipped) = self.set_full.take()
                {
                    line = format!("{}\n{line}", alerts::ban_set_has_room(skipped));
                }
                NativeBan {
                    outcome: Some(Outcome::Blocked {
                        length: banned.timeout,
                    }),
                    line: Some(line),
                    alert_only: false,
                }
            }
            // One line when the set fills, then only a count: a flood of forged
            // sources must not become a flood of lines. No ban was made, so nothing
            // of the 1.2 chain runs and nothing is recorded.
            Err(BanError::SetFull(why)) => {
                let line = match &mut self.set_full {
                    Some(skipped) => {
                        *skipped += 1;
                        None
                    }
                    None => {
                        self.set_full = Some(1);
                        Some(alerts::ban_set_full(target, &why))
                    }
                };
                NativeBan {
                    outcome: Some(Outcome::Failed),
                    line,
                    alert_only: true,
                }
            }
            Err(e) => NativeBan {
                outcome: {
                    crate::metrics::get().command_failed("backend");
                    None
                },
                line: Some(alerts::kernel_ban_failed(target, &e)),
                alert_only: false,
            },
        }
    }

    /// Whether `proto` runs a classic mode (1.2's classic wording of its lines).
    pub fn classic(&self, proto: Proto) -> bool {
        self.mode(proto).is_some_and(|m| m.plan.classic())
    }

    fn mode(&self, proto: Proto) -> Option<&ModeResponse> {
        match proto {
            Proto::Tcp => self.tcp.as_ref(),
            Proto::Udp => self.udp.as_ref(),
        }
    }

    /// Phase two: the 1.2 response chain against `probe.src` and its records, after
    /// [`Self::ban_natively`] (whose line is logged first) and the name lookup
    /// (`resolved`: the name for log lines and records).
    pub fn finish(
        &mut self,
        log: &Logger,
        probe: &Probe,
        native: NativeBan,
        resolved: &str,
    ) -> Outcome {
        let outcome = self.finish_chain(log, probe, native, resolved);
        if self.log_2x {
            // 2.x writes its scan line after the actions, with what they did, and the
            // same line, timed, to the history file.
            let noblock = self
                .mode(probe.proto())
                .is_some_and(|m| m.plan.block == BlockMode::LogOnly);
            let line = alerts::scan_2x(&alerts::Scan2x {
                host: Host {
                    name: resolved,
                    ip: probe.src,
                },
                probe,
                ignored: Some(false),
                triggered: Some(true),
                noblock: Some(noblock),
                blocked: Some(!noblock && matches!(outcome, Outcome::Blocked { .. })),
            });
            log.log(&line);
            self.history.queue(&records::history_line_2x_now(&line));
        }
        outcome
    }

    fn finish_chain(
        &mut self,
        log: &Logger,
        probe: &Probe,
        native: NativeBan,
        resolved: &str,
    ) -> Outcome {
        if let Some(lines) = &native.line {
            // The ban's fields on each of its lines (journal, JSON stderr).
            let action = match native.outcome {
                Some(Outcome::Blocked { .. }) => "ban",
                Some(Outcome::Failed) | None => "ban_failed",
                Some(_) => "not_banned",
            };
            for line in lines.split('\n') {
                let event = crate::event::Event::probe(line, probe, action);
                let event = match native.outcome {
                    Some(Outcome::Blocked { length }) => event.ban_until(clock::unix_now(), length),
                    _ => event,
                };
                log.event(&event);
            }
        }
        if native.alert_only {
            return native.outcome.unwrap_or(Outcome::Reported);
        }
        let native = native.outcome;
        let proto = probe.proto();
        // Field borrows, not `self.mode()`: the chain below also records into the book.
        let mode = match proto {
            Proto::Tcp => self.tcp.as_mut(),
            Proto::Udp => self.udp.as_mut(),
        };
        let Some(mode) = mode else {
            return Outcome::Reported;
        };
        let plan = &mode.plan;
        let target = probe.src;
        let host = Host {
            name: resolved,
            ip: target,
        };
        let (outcome, ok) = match plan.block {
            BlockMode::LogOnly => {
                log.log(&alerts::response_ignored(proto));
                (Outcome::Reported, true)
            }
            BlockMode::RunCmdOnly => match &plan.kill_run_cmd {
                Some(_) => {
                    let ok = run_step(log, plan, Step::RunCmd, target, probe.dport);
                    (
                        if ok {
                            Outcome::Blocked { length: None }
                        } else {
                            Outcome::Failed
                        },
                        ok,
                    )
                }
                None => {
                    log.log(&alerts::run_cmd_missing(proto, target));
                    (Outcome::Reported, true)
                }
            },
            BlockMode::Block => {
                let order: [Step; 3] = if plan.kill_run_cmd_first {
                    [Step::RunCmd, Step::HostsDeny, Step::Route]
                } else {
                    [Step::HostsDeny, Step::Route, Step::RunCmd]
                };
                let mut ran_any = false;
                let mut all_ok = true;
                let any_configured = plan.kill_hosts_deny.is_some()
                    || plan.kill_route.is_some()
                    || plan.kill_run_cmd.is_some();
                // Field borrow (`mode` holds another): the minute's KILL_* budget.
                let allowed = !any_configured || self.kill_window.allow(log);
                for step in order.into_iter().filter(|_| allowed) {
                    let configured = match step {
                        Step::HostsDeny => plan.kill_hosts_deny.is_some(),
                        Step::Route => plan.kill_route.is_some(),
                        Step::RunCmd => plan.kill_run_cmd.is_some(),
                    };
                    if configured {
                        ran_any = true;
                        // 1.2 runs every configured step even after one failed.
                        all_ok &= run_step(log, plan, step, target, probe.dport);
                    }
                }
                if let Some(native) = native {
                    if !all_ok {
                        // 1.2's chain failed (and says so), but the kernel ban holds.
                        log.log(&alerts::could_not_block(host));
                    }
                    (native, true)
                } else if !ran_any && self.bans.is_native() {
                    // The nftables ban was the only action, and it failed.
                    (Outcome::Failed, false)
                } else if !ran_any {
                    log.log(&alerts::no_block_action(proto, target));
                    (Outcome::Reported, true)
                } else if all_ok {
                    self.bans.record_legacy(
                        clock::unix_now(),
                        target,
                        probe.evidence(),
                        &format!(
                            "KILL_* commands after {} to {proto} port {}",
                            probe.kind, probe.dport
                        ),
                    );
                    crate::metrics::get().ban(probe.evidence(), "kill_commands");
                    log.log(&alerts::legacy_ban_recorded(target));
                    (Outcome::Blocked { length: None }, true)
                } else {
                    (Outcome::Failed, false)
                }
            }
        };
        if !ok {
            log.log(&alerts::could_not_block(host));
            return outcome;
        }
        // Like 1.2, an acted-on host is written to the blocked and history files, also
        // with BLOCK_x=0: fail2ban setups depend on that history line. (2.x's history
        // line is written by `finish`; its blocked file is a binary cache of its own,
        // which is not written.)
        if self.log_2x {
            return outcome;
        }
        let line =
            records::blocked_line_now(resolved, target, probe.dport, proto, probe.evidence());
        for file in [&mut mode.blocked, &mut self.history] {
            file.queue(&line);
        }
        outcome
    }
}

impl Responder {
    /// `portsentry unban`: undo what the 1.2 responses of the running modes added for
    /// `ip` where that can be done: the exact KILL_HOSTS_DENY line is removed from
    /// hosts.deny, and a KILL_ROUTE of a recognised shape ([`undo::invert`]) is reversed
    /// through the same runner and time limit. `commands_ran`: false for a ban of the
    /// administrator's, for which no KILL_ROUTE or KILL_RUN_CMD ran (its hosts.deny line,
    /// if any, is still removed). What could not be undone is said too. A step shared by
    /// both modes (the same line, the same command) is done once.
    pub fn undo_legacy(&mut self, ip: IpAddr, commands_ran: bool) -> Vec<Undo> {
        let mut undone: Vec<Undo> = Vec::new();
        // Both modes may share KILL_ROUTE: each inverse runs once.
        let mut inverses_run: Vec<String> = Vec::new();
        let push = |u: Undo, undone: &mut Vec<Undo>| {
            if !undone.contains(&u) {
                undone.push(u);
            }
        };
        for plan in [self.tcp.as_ref(), self.udp.as_ref()]
            .into_iter()
            .flatten()
            .map(|m| &m.plan)
        {
            if plan.block != BlockMode::Block {
                if commands_ran
                    && plan.block == BlockMode::RunCmdOnly
                    && plan.kill_run_cmd.is_some()
                {
                    push(Undo::RunCmd, &mut undone);
                }
                continue;
            }
            if let Some(template) = &plan.kill_hosts_deny {
                if template.contains("$PORT$") {
                    push(Undo::HostsDenyPort, &mut undone);
                } else {
                    let line = expand_macros(template, ip, 0, &plan.mode, true);
                    match records::remove_hosts_deny_line(&plan.hosts_deny_file, &line) {
                        Ok(true) => push(Undo::HostsDenyRemoved(line.trim().into()), &mut undone),
                        Ok(false) => {}
                        Err(e) => push(
                            Undo::Failed {
                                what: "KILL_HOSTS_DENY",
                                why: e.to_string(),
                            },
                            &mut undone,
                        ),
                    }
                }
            }
            if !commands_ran {
                continue;
            }
            if let Some(template) = &plan.kill_route {
                match undo::invert(template) {
                    None => push(Undo::RouteUnknown, &mut undone),
                    Some(inverse) => {
                        let command = expand_macros(&inverse, ip, 0, &plan.mode, false);
                        if !inverses_run.contains(&command) {
                            inverses_run.push(command.clone());
                            push(
                                match run_shell(&command, COMMAND_TIME_LIMIT) {
                                    Ok(()) => Undo::RouteRemoved(command),
                                    Err(why) => Undo::Failed {
                                        what: "KILL_ROUTE",
                                        why: format!("\"{command}\" failed ({why})"),
                                    },
                                },
                                &mut undone,
                            );
                        }
                    }
                }
            }
            if plan.kill_run_cmd.is_some() {
                push(Undo::RunCmd, &mut undone);
            }
        }
        // What could not be undone at all is said last.
        undone.sort_by_key(|u| *u == Undo::RunCmd);
        undone
    }
}

/// Substitute the 1.2 macros. `$TARGET$` is bracketed for IPv6 in hosts.deny lines,
/// since TCP wrappers only match IPv6 addresses written as `[addr]`.
pub fn expand_macros(
    template: &str,
    target: IpAddr,
    port: u16,
    mode: &str,
    for_hosts_deny: bool,
) -> String {
    let target = match target {
        IpAddr::V6(v6) if for_hosts_deny => format!("[{v6}]"),
        other => other.to_string(),
    };
    template
        .replace("$TARGET$", &target)
        .replace("$PORT$", &port.to_string())
        .replace("$MODE$", mode)
}

fn run_step(log: &Logger, plan: &ResponsePlan, step: Step, target: IpAddr, port: u16) -> bool {
    match step {
        Step::HostsDeny => {
            let Some(template) = &plan.kill_hosts_deny else {
                return true;
            };
            let line = expand_macros(template, target, port, &plan.mode, true);
            match records::add_hosts_deny_line(&plan.hosts_deny_file, &line) {
                Ok(HostsDenyResult::Added) => {
                    log.log(&alerts::hosts_deny_added(target, &line));
                    true
                }
                Ok(HostsDenyResult::AlreadyPresent) => {
                    log.log(&alerts::hosts_deny_present(target));
                    true
                }
                Err(e) => {
                    crate::metrics::get().command_failed("KILL_HOSTS_DENY");
                    log.log(&alerts::hosts_deny_failed(target, &e));
                    false
                }
            }
        }
        Step::Route | Step::RunCmd => {
            let (key, template) = match step {
                Step::Route => ("KILL_ROUTE", &plan.kill_route),
                _ => ("KILL_RUN_CMD", &plan.kill_run_cmd),
            };
            let Some(template) = template else {
                return true;
            };
            let command = expand_macros(template, target, port, &plan.mode, false);
            match run_shell(&command, COMMAND_TIME_LIMIT) {
                Ok(()) => {
                    log.log(&match step {
                        Step::Route => alerts::route_added(target, &command),
                        _ => alerts::command_run(target, &command),
                    });
                    true
                }
                Err(why) => {
                    crate::metrics::get().command_failed(key);
                    log.log(&alerts::command_failed(key, target, &why, &command));
                    false
                }
            }
        }
    }
}

/// Why a KILL_* command did not succeed, in the few words its log line gives.
#[derive(Debug, thiserror::Error)]
pub enum CommandFailed {
    #[error("cannot start /bin/sh: {0}")]
    Start(std::io::Error),
    #[error("killed after {} s time limit", .0.as_secs())]
    TimedOut(Duration),
    #[error("wait failed: {0}")]
    Wait(std::io::Error),
    /// Exit status or signal, and the first line the command wrote to stderr.
    #[error("{0}")]
    Exited(String),
}

/// Run `command` through `/bin/sh -c` (1.2 used `system()`), wait at most `limit`.
/// stdout goes to `/dev/null`; a background child of the command may keep stderr open,
/// and is not waited for.
pub fn run_shell(command: &str, limit: Duration) -> Result<(), CommandFailed> {
    let finished = Run::new("/bin/sh", &["-c", command], limit)
        .discard_stdout()
        .keep_at_most(4096)
        .run()
        .map_err(|e| match e {
            ProcessError::Spawn { source, .. } => CommandFailed::Start(source),
            ProcessError::TimedOut { limit, .. } => CommandFailed::TimedOut(limit),
            ProcessError::Io { source, .. } => CommandFailed::Wait(source),
        })?;
    if finished.success() {
        Ok(())
    } else {
        Err(CommandFailed::Exited(finished.reason()))
    }
}

/// Test parts shared by the responder's and the reporter's tests: a logger whose lines
/// can be read back, an in-memory backend, a responder over temporary files.
#[cfg(test)]
pub(super) mod testing {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::path::Path;

    use ipnet::IpNet;
    use portsentry_engine::ProbeKind;
    use portsentry_engine::bans::{BanBook, BanPolicies, BanPolicy};
    use portsentry_kernel::backend::{BackendError, BanBackend, Expiry, Held};

    /// A logger whose syslog lines the test reads back (a datagram socket in `dir`).
    pub struct Captured {
        pub log: Logger,
        server: UnixDatagram,
    }

    impl Captured {
        pub fn new(dir: &Path) -> Self {
            let path = dir.join("log.sock");
            let server = UnixDatagram::bind(&path).unwrap();
            server.set_nonblocking(true).unwrap();
            Captured {
                log: Logger::new(Some(&path), false),
                server,
            }
        }

        pub fn lines(&self) -> Vec<String> {
            let mut out = Vec::new();
            let mut buf = [0u8; 2048];
            while let Ok(n) = self.server.recv(&mut buf) {
                let frame = String::from_utf8_lossy(&buf[..n]).into_owned();
                out.push(
                    frame
                        .split_once("]: ")
                        .map(|(_, m)| m.to_string())
                        .unwrap_or(frame),
                );
            }
            out
        }
    }

    /// An in-memory backend that holds single addresses and accepts every ban.
    #[derive(Default)]
    pub struct Memory(Vec<IpNet>);

    impl BanBackend for Memory {
        fn name(&self) -> &'static str {
            "memory"
        }
        fn prepare(&mut self) -> Result<(), BackendError> {
            Ok(())
        }
        fn add(&mut self, key: IpNet, _: Option<Duration>) -> Result<(), BackendError> {
            self.0.push(key);
            Ok(())
        }
        fn remove(&mut self, key: IpNet) -> Result<bool, BackendError> {
            let before = self.0.len();
            self.0.retain(|k| *k != key);
            Ok(self.0.len() != before)
        }
        fn list(&mut self) -> Result<Vec<Held>, BackendError> {
            Ok(self
                .0
                .iter()
                .map(|&key| Held {
                    key,
                    expiry: Expiry::Unknown,
                })
                .collect())
        }
        fn expires_by_itself(&self) -> bool {
            true
        }
        fn teardown(&mut self) -> Result<(), BackendError> {
            self.0.clear();
            Ok(())
        }
    }

    /// The responder reads the wall clock itself (it is the daemon's shell around the
    /// lifecycle), so the test asks the book about now too.
    pub fn now() -> u64 {
        clock::unix_now()
    }
    pub const SCANNER: &str = "198.18.0.2";

    pub fn probe() -> Probe {
        Probe {
            src: SCANNER.parse().unwrap(),
            dst: "198.18.0.1".parse().unwrap(),
            sport: 40000,
            dport: 111,
            kind: ProbeKind::Syn,
            ip_options: false,
            ttl: 64,
            verdict: portsentry_engine::Verdict::Observed,
        }
    }

    pub fn plan(block: BlockMode, kill_route: Option<&str>, dir: &Path) -> ResponsePlan {
        ResponsePlan {
            mode: "atcp".into(),
            block,
            kill_route: kill_route.map(String::from),
            kill_hosts_deny: None,
            kill_run_cmd: None,
            kill_run_cmd_first: false,
            hosts_deny_file: dir.join("hosts.deny"),
        }
    }

    /// A responder for TCP with `plan`, records in `dir`, and `backend` (None: the
    /// legacy commands only), with the full policy for every class.
    pub fn responder(
        plan: ResponsePlan,
        dir: &Path,
        backend: Option<Box<dyn BanBackend>>,
    ) -> Responder {
        let p = BanPolicy::default();
        let policies = BanPolicies {
            unverified: p.clone(),
            verified: p.clone(),
            manual: p,
        };
        responder_with(plan, dir, backend, policies)
    }

    /// [`responder`] with these policies.
    pub fn responder_with(
        plan: ResponsePlan,
        dir: &Path,
        backend: Option<Box<dyn BanBackend>>,
        policies: BanPolicies,
    ) -> Responder {
        let (bans, _) = BanLifecycle::start(
            BanBook::new(64),
            0,
            policies,
            backend,
            portsentry_engine::ignore::IgnoreSet::new(),
            now(),
        )
        .unwrap();
        let tcp = ModeResponse {
            plan,
            blocked: RecordFile::open(&dir.join("blocked.atcp"), true).unwrap(),
        };
        let history = RecordFile::open(&dir.join("history"), false).unwrap();
        Responder::new(Some(tcp), None, history, bans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::path::Path;

    use portsentry_engine::bans::BanPolicy;
    use portsentry_kernel::backend::BanBackend;

    use super::testing::{Captured, Memory, SCANNER, now, plan, probe, responder};

    fn respond(r: &mut Responder, log: &Logger) -> Outcome {
        let p = probe();
        let native = r.ban_natively(&p);
        let outcome = r.finish(log, &p, native, SCANNER);
        r.flush_records(log);
        outcome
    }

    fn history(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("history")).unwrap()
    }

    #[test]
    fn block_0_only_reports_but_writes_the_history_line_like_1_2() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Captured::new(dir.path());
        let mut r = responder(
            plan(BlockMode::LogOnly, Some("true $TARGET$"), dir.path()),
            dir.path(),
            None,
        );
        assert_eq!(respond(&mut r, &cap.log), Outcome::Reported);
        assert_eq!(
            cap.lines(),
            ["attackalert: Ignoring TCP response per configuration file setting."]
        );
        assert!(history(dir.path()).contains("198.18.0.2/198.18.0.2 Port: 111 TCP Blocked"));
    }

    #[test]
    fn a_kill_route_that_works_blocks_for_good_and_is_recorded_as_a_ban() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Captured::new(dir.path());
        let mut r = responder(
            plan(BlockMode::Block, Some("true $TARGET$"), dir.path()),
            dir.path(),
            None,
        );
        assert_eq!(respond(&mut r, &cap.log), Outcome::Blocked { length: None });
        assert_eq!(
            cap.lines(),
            [
                "attackalert: Host 198.18.0.2 has been blocked via dropped route using command: \"true 198.18.0.2\"",
                "attackalert: Host 198.18.0.2 is recorded as blocked by the KILL_* commands (lift it with: portsentry unban 198.18.0.2)"
            ]
        );
        assert_eq!(
            r.bans_mut().active_count(now()),
            1,
            "listed by portsentry list"
        );
        assert!(history(dir.path()).contains("Port: 111 TCP Blocked"));
    }

    #[test]
    fn a_failing_kill_route_is_not_blocked_and_leaves_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Captured::new(dir.path());
        let mut r = responder(
            plan(BlockMode::Block, Some("exit 3 # $TARGET$"), dir.path()),
            dir.path(),
            None,
        );
        assert_eq!(respond(&mut r, &cap.log), Outcome::Failed);
        let lines = cap.lines();
        assert!(
            lines[0].starts_with(
                "attackalert: ERROR: KILL_ROUTE command failed for host 198.18.0.2 (exit status 3)"
            ),
            "{lines:?}"
        );
        assert_eq!(
            lines[1],
            "attackalert: ERROR: Could not block host 198.18.0.2/198.18.0.2!!"
        );
        assert_eq!(
            history(dir.path()),
            "",
            "a failed block is tried again, not recorded"
        );
        assert_eq!(r.bans_mut().active_count(now()), 0);
    }

    #[test]
    fn the_native_ban_holds_when_the_legacy_chain_fails() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Captured::new(dir.path());
        let backend: Box<dyn BanBackend> = Box::new(Memory::default());
        let mut r = responder(
            plan(BlockMode::Block, Some("false $TARGET$"), dir.path()),
            dir.path(),
            Some(backend),
        );
        let length = BanPolicy::default().ban_time;
        assert_eq!(
            respond(&mut r, &cap.log),
            Outcome::Blocked {
                length: Some(length)
            }
        );
        let lines = cap.lines();
        assert_eq!(
            lines[0],
            "attackalert: Host 198.18.0.2 has been banned in the kernel (memory) for 1h, offence 1, unverified evidence (lift it with: portsentry unban 198.18.0.2)"
        );
        assert!(
            lines[1].starts_with("attackalert: ERROR: KILL_ROUTE command failed"),
            "{lines:?}"
        );
        assert_eq!(
            lines[2],
            "attackalert: ERROR: Could not block host 198.18.0.2/198.18.0.2!!"
        );
        assert!(
            history(dir.path()).contains("Port: 111 TCP Blocked"),
            "the host is banned"
        );
        let ip: IpAddr = SCANNER.parse().unwrap();
        assert_eq!(r.bans_mut().active_count(now()), 1, "{ip} in the book");
    }

    #[test]
    fn macros_are_substituted_and_ipv6_bracketed_only_for_hosts_deny() {
        let v6: IpAddr = "fd00:5e17::2".parse().unwrap();
        assert_eq!(
            expand_macros("ALL: $TARGET$ : DENY", v6, 22, "atcp", true),
            "ALL: [fd00:5e17::2] : DENY"
        );
        assert_eq!(
            expand_macros(
                "/sbin/route add -host $TARGET$ reject # $PORT$ $MODE$",
                "198.18.0.2".parse().unwrap(),
                111,
                "audp",
                false
            ),
            "/sbin/route add -host 198.18.0.2 reject # 111 audp"
        );
        assert_eq!(
            expand_macros("x $TARGET$", v6, 1, "atcp", false),
            "x fd00:5e17::2"
        );
    }

    #[test]
    fn shell_result_reflects_exit_status() {
        assert!(run_shell("true && exit 0", Duration::from_secs(5)).is_ok());
        let err = run_shell("echo boom >&2; exit 3", Duration::from_secs(5)).unwrap_err();
        assert_eq!(err.to_string(), "exit status 3: boom");
        // A background child holding stderr open is not waited for.
        let start = std::time::Instant::now();
        let err = run_shell(
            "echo gone >&2; sleep 30 >&2 & exit 3",
            Duration::from_secs(5),
        );
        assert_eq!(err.unwrap_err().to_string(), "exit status 3: gone");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn hung_command_is_killed_at_the_limit() {
        let err = run_shell("sleep 30", Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, CommandFailed::TimedOut(_)), "{err}");
        assert_eq!(err.to_string(), "killed after 0 s time limit");
    }

    /// Issue 8: unban removes the exact hosts.deny line the response wrote (other lines
    /// and the file's mode kept), says that KILL_RUN_CMD cannot be undone, and never
    /// runs anything for a KILL_ROUTE it does not recognise (here a stand-in script that
    /// records its calls). A recognised KILL_ROUTE's inverse is run in a namespace of
    /// its own by the system test `system_unban`, never on this host.
    #[test]
    fn issue_8_unban_undoes_hosts_deny_and_says_what_is_left() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let calls = d.join("calls");
        let script = d.join("route.sh");
        std::fs::write(&script, format!("echo \"$@\" >> {}\n", calls.display())).unwrap();
        let route = format!("/bin/sh {} add -host $TARGET$ reject", script.display());
        let cap = Captured::new(d);
        let mut p = plan(BlockMode::Block, Some(&route), d);
        p.kill_hosts_deny = Some("ALL: $TARGET$ : DENY".into());
        p.kill_run_cmd = Some("true $TARGET$".into());
        std::fs::write(d.join("hosts.deny"), "sshd: 198.18.0.9\n").unwrap();
        std::fs::set_permissions(d.join("hosts.deny"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        let mut r = responder(p, d, Some(Box::new(Memory::default())));
        respond(&mut r, &cap.log);
        let deny = || std::fs::read_to_string(d.join("hosts.deny")).unwrap();
        assert_eq!(deny(), "sshd: 198.18.0.9\nALL: 198.18.0.2 : DENY\n");

        let ip: IpAddr = SCANNER.parse().unwrap();
        assert_eq!(
            r.undo_legacy(ip, true),
            [
                Undo::HostsDenyRemoved("ALL: 198.18.0.2 : DENY".into()),
                Undo::RouteUnknown,
                Undo::RunCmd,
            ]
        );
        assert_eq!(deny(), "sshd: 198.18.0.9\n");
        assert_eq!(
            std::fs::metadata(d.join("hosts.deny"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o640
        );
        assert_eq!(
            std::fs::read_to_string(&calls).unwrap(),
            "add -host 198.18.0.2 reject\n",
            "nothing guessed at is run"
        );
        // An administrator's ban ran no command: nothing is claimed about them.
        assert_eq!(r.undo_legacy(ip, false), []);
    }

    #[test]
    fn issue_8_an_unknown_kill_route_is_said_to_be_left() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = responder(
            plan(BlockMode::Block, Some("true $TARGET$ && true"), dir.path()),
            dir.path(),
            None,
        );
        assert_eq!(
            r.undo_legacy(SCANNER.parse().unwrap(), true),
            [Undo::RouteUnknown]
        );
    }

    /// Issue 7: `ban = false` for a class alerts only: no native ban, no KILL_*
    /// command (they run only when a ban is made), no "Blocked" record (fail2ban would
    /// act on it); and the history line of a ban names its class.
    #[test]
    fn issue7_ban_false_runs_nothing_and_records_nothing() {
        use portsentry_engine::bans::BanPolicies;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cap = Captured::new(d);
        let marker = d.join("ran");
        let route = format!("touch {} # $TARGET$", marker.display());
        let mut policies = BanPolicies::default();
        policies.unverified.ban = false;
        let mut r = super::testing::responder_with(
            plan(BlockMode::Block, Some(&route), d),
            d,
            Some(Box::new(Memory::default())),
            policies,
        );
        assert_eq!(respond(&mut r, &cap.log), Outcome::Reported);
        assert_eq!(
            cap.lines(),
            [
                "attackalert: Host 198.18.0.2 not banned: unverified evidence, and [bans.unverified] ban = false"
            ]
        );
        assert!(!marker.exists(), "KILL_ROUTE must not run");
        assert_eq!(history(d), "");
        assert_eq!(r.bans_mut().active_count(now()), 0);
    }

    #[test]
    fn issue7_the_history_line_names_the_class() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cap = Captured::new(d);
        let mut r = super::testing::responder_with(
            plan(BlockMode::Block, None, d),
            d,
            Some(Box::new(Memory::default())),
            portsentry_engine::bans::BanPolicies::default(),
        );
        assert_eq!(
            respond(&mut r, &cap.log),
            Outcome::Blocked {
                length: Some(Duration::from_secs(600))
            }
        );
        let h = history(d);
        assert!(
            h.contains(" [unverified] Host: 198.18.0.2/198.18.0.2 Port: 111 TCP Blocked\n"),
            "{h}"
        );
        assert_eq!(
            cap.lines(),
            [
                "attackalert: Host 198.18.0.2 has been banned in the kernel (memory) for 10m, offence 1, unverified evidence (lift it with: portsentry unban 198.18.0.2)"
            ]
        );
    }
}
