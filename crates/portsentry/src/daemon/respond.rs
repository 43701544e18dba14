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

use crate::alerts::{self, Host};
use crate::bans::BanLifecycle;
use crate::clock;
use crate::config::BlockMode;
use crate::logger::Logger;
use crate::records::{self, HostsDenyResult, RecordFile};
use crate::settings::ResponsePlan;
use portsentry_kernel::process::{COMMAND_TIME_LIMIT, ProcessError, Run};

/// Runs responses and writes the records that follow them. Owned by the reporter thread.
pub struct Responder {
    tcp: Option<ResponsePlan>,
    udp: Option<ResponsePlan>,
    tcp_blocked: Option<RecordFile>,
    udp_blocked: Option<RecordFile>,
    history: Option<RecordFile>,
    /// The ban book and its kernel side: nftables sets, a fallback backend, or (with
    /// `backend = "none"`) only a record of what the KILL_* commands did.
    kernel: Option<BanLifecycle>,
}

/// What [`Responder::ban_natively`] did: the outcome when the kernel holds the ban, and
/// the line to log about it.
#[derive(Debug, Default)]
pub struct NativeBan {
    outcome: Option<Outcome>,
    line: Option<String>,
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
        tcp: Option<ResponsePlan>,
        udp: Option<ResponsePlan>,
        tcp_blocked: Option<RecordFile>,
        udp_blocked: Option<RecordFile>,
        history: Option<RecordFile>,
        kernel: Option<BanLifecycle>,
    ) -> Self {
        Responder {
            tcp,
            udp,
            tcp_blocked,
            udp_blocked,
            history,
            kernel,
        }
    }

    /// The native ban book, for periodic saves and expiry.
    pub fn kernel_mut(&mut self) -> Option<&mut BanLifecycle> {
        self.kernel.as_mut()
    }

    /// Phase one of a response, before any name lookup: the native ban of the probe's
    /// source, when this mode blocks and the book has a kernel side. Its log line is
    /// returned with it, to be logged in order by [`Self::finish`].
    pub fn ban_natively(&mut self, probe: &Probe) -> NativeBan {
        let wants_block = self
            .plan(probe.proto())
            .is_some_and(|p| p.block == BlockMode::Block);
        let Some(kernel) = self
            .kernel
            .as_mut()
            .filter(|k| wants_block && k.is_native())
        else {
            return NativeBan::default();
        };
        let target = probe.src;
        let reason = format!("{} to {} port {}", probe.kind, probe.proto(), probe.dport);
        match kernel.ban(clock::unix_now(), target, probe.kernel_banned, &reason) {
            Ok(banned) => NativeBan {
                outcome: Some(Outcome::Blocked {
                    length: banned.timeout,
                }),
                line: Some(alerts::kernel_ban(
                    target,
                    &banned.place,
                    banned.timeout,
                    banned.ban.offences,
                )),
            },
            Err(e) => NativeBan {
                outcome: None,
                line: Some(alerts::kernel_ban_failed(target, &e)),
            },
        }
    }

    fn plan(&self, proto: Proto) -> Option<&ResponsePlan> {
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
        if let Some(line) = &native.line {
            log.log(line);
        }
        let native = native.outcome;
        let proto = probe.proto();
        // Field borrows, not `self.plan()`: the chain below also records into the book.
        let plan = match proto {
            Proto::Tcp => self.tcp.as_ref(),
            Proto::Udp => self.udp.as_ref(),
        };
        let Some(plan) = plan else {
            return Outcome::Reported;
        };
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
                for step in order {
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
                } else if !ran_any && self.kernel.as_ref().is_some_and(|k| k.is_native()) {
                    // The nftables ban was the only action, and it failed.
                    (Outcome::Failed, false)
                } else if !ran_any {
                    log.log(&alerts::no_block_action(proto, target));
                    (Outcome::Reported, true)
                } else if all_ok {
                    if let Some(k) = self.kernel.as_mut() {
                        k.record_legacy(
                            clock::unix_now(),
                            target,
                            &format!(
                                "KILL_* commands after {} to {proto} port {}",
                                probe.kind, probe.dport
                            ),
                        );
                    }
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
        // with BLOCK_x=0: fail2ban setups depend on that history line.
        let line = records::blocked_line_now(resolved, target, probe.dport, proto);
        let blocked = match proto {
            Proto::Tcp => self.tcp_blocked.as_mut(),
            Proto::Udp => self.udp_blocked.as_mut(),
        };
        for file in [blocked, self.history.as_mut()].into_iter().flatten() {
            if let Err(e) = file.append(&line) {
                log.log(&alerts::failure(&e));
            }
        }
        outcome
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
                    log.log(&alerts::command_failed(key, target, &why, &command));
                    false
                }
            }
        }
    }
}

/// Run `command` through `/bin/sh -c` (1.2 used `system()`), wait at most `limit`.
/// Err carries a short reason: exit status, signal, time-out, or spawn error, plus the
/// first line the command wrote to stderr. stdout goes to `/dev/null`; a background
/// child of the command may keep stderr open, and is not waited for.
pub fn run_shell(command: &str, limit: Duration) -> Result<(), String> {
    let finished = Run::new("/bin/sh", &["-c", command], limit)
        .discard_stdout()
        .keep_at_most(4096)
        .run()
        .map_err(|e| match e {
            ProcessError::Spawn { source, .. } => format!("cannot start /bin/sh: {source}"),
            ProcessError::TimedOut { limit, .. } => {
                format!("killed after {} s time limit", limit.as_secs())
            }
            ProcessError::Io { source, .. } => format!("wait failed: {source}"),
        })?;
    if finished.success() {
        Ok(())
    } else {
        Err(finished.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(run_shell("true && exit 0", Duration::from_secs(5)), Ok(()));
        let err = run_shell("echo boom >&2; exit 3", Duration::from_secs(5)).unwrap_err();
        assert_eq!(err, "exit status 3: boom");
        // A background child holding stderr open is not waited for.
        let start = std::time::Instant::now();
        let err = run_shell(
            "echo gone >&2; sleep 30 >&2 & exit 3",
            Duration::from_secs(5),
        );
        assert_eq!(err, Err("exit status 3: gone".to_string()));
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn hung_command_is_killed_at_the_limit() {
        let err = run_shell("sleep 30", Duration::from_millis(200)).unwrap_err();
        assert!(err.contains("time limit"), "{err}");
    }
}
