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

use crate::config::BlockMode;
use crate::daemon::boottime_now;
use crate::kernel_bans::{self, KernelBans};
use crate::logger::Logger;
use crate::records::{self, HostsDenyResult, RecordFile};
use crate::settings::ResponsePlan;
use portsentry_kernel::process::{ProcessError, Run};

/// How long one KILL_* command may run before it is killed and counted as failed.
pub const COMMAND_TIME_LIMIT: Duration = Duration::from_secs(30);

/// Runs responses and writes the records that follow them. Owned by the reporter thread.
pub struct Responder {
    tcp: Option<ResponsePlan>,
    udp: Option<ResponsePlan>,
    tcp_blocked: Option<RecordFile>,
    udp_blocked: Option<RecordFile>,
    history: Option<RecordFile>,
    /// The ban book and its kernel side: nftables sets, a fallback backend, or (with
    /// `backend = "none"`) only a record of what the KILL_* commands did.
    kernel: Option<KernelBans>,
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
        kernel: Option<KernelBans>,
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
    pub fn kernel_mut(&mut self) -> Option<&mut KernelBans> {
        self.kernel.as_mut()
    }

    /// The native ban of the probe's source, when the book has a kernel side; None if
    /// there is none or it failed (the failure is logged).
    fn native_ban(&mut self, log: &Logger, probe: &Probe, kernel_banned: bool) -> Option<Outcome> {
        let kernel = self.kernel.as_mut().filter(|k| k.is_native())?;
        let target = probe.src;
        let reason = format!("{} to {} port {}", probe.kind, probe.proto(), probe.dport);
        match kernel.ban(target, kernel_banned, &reason) {
            Ok(banned) => {
                log.log(&format!(
                    "attackalert: Host {target} has been banned in the kernel ({}) {}, offence {}",
                    banned.place,
                    kernel_bans::for_how_long(banned.timeout),
                    banned.ban.offences
                ));
                Some(Outcome::Blocked {
                    until: banned.timeout.map(|t| boottime_now() + t),
                })
            }
            Err(e) => {
                log.log(&format!(
                    "attackalert: ERROR: kernel ban failed for host {target}: {e:#}"
                ));
                None
            }
        }
    }

    /// Run the configured response against `probe.src` and record it.
    pub fn respond(
        &mut self,
        log: &Logger,
        probe: &Probe,
        resolved: &str,
        kernel_banned: bool,
    ) -> Outcome {
        let proto = probe.proto();
        let wants_block = match proto {
            Proto::Tcp => self.tcp.as_ref(),
            Proto::Udp => self.udp.as_ref(),
        }
        .is_some_and(|p| p.block == BlockMode::Block);
        let native = if wants_block {
            self.native_ban(log, probe, kernel_banned)
        } else {
            None
        };
        let plan = match proto {
            Proto::Tcp => self.tcp.as_ref(),
            Proto::Udp => self.udp.as_ref(),
        };
        let Some(plan) = plan else {
            return Outcome::Reported;
        };
        let target = probe.src;
        let (outcome, ok) = match plan.block {
            BlockMode::LogOnly => {
                log.log(&format!(
                    "attackalert: Ignoring {proto} response per configuration file setting."
                ));
                (Outcome::Reported, true)
            }
            BlockMode::RunCmdOnly => match &plan.kill_run_cmd {
                Some(_) => {
                    let ok = run_step(log, plan, Step::RunCmd, target, probe.dport);
                    (
                        if ok {
                            Outcome::Blocked { until: None }
                        } else {
                            Outcome::Failed
                        },
                        ok,
                    )
                }
                None => {
                    log.log(&format!(
                        "attackalert: BLOCK_{proto}=2 but KILL_RUN_CMD is not set: nothing run for host {target}."
                    ));
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
                        log.log(&format!(
                            "attackalert: ERROR: Could not block host {resolved}/{target}!!"
                        ));
                    }
                    (native, true)
                } else if !ran_any && self.kernel.as_ref().is_some_and(|k| k.is_native()) {
                    // The nftables ban was the only action, and it failed.
                    (Outcome::Failed, false)
                } else if !ran_any {
                    log.log(&format!(
                        "attackalert: BLOCK_{proto}=1 but no KILL_ROUTE, KILL_HOSTS_DENY or KILL_RUN_CMD is set: host {target} is not blocked."
                    ));
                    (Outcome::Reported, true)
                } else if all_ok {
                    if let Some(k) = self.kernel.as_mut() {
                        k.record_legacy(
                            target,
                            &format!(
                                "KILL_* commands after {} to {proto} port {}",
                                probe.kind, probe.dport
                            ),
                        );
                    }
                    (Outcome::Blocked { until: None }, true)
                } else {
                    (Outcome::Failed, false)
                }
            }
        };
        if !ok {
            log.log(&format!(
                "attackalert: ERROR: Could not block host {resolved}/{target}!!"
            ));
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
                log.log(&format!("adminalert: ERROR: {e}"));
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
                    log.log(&format!(
                        "attackalert: Host {target} has been blocked via wrappers with string: \"{line}\""
                    ));
                    true
                }
                Ok(HostsDenyResult::AlreadyPresent) => {
                    log.log(&format!(
                        "attackalert: Host {target} already in hosts.deny file, skipping."
                    ));
                    true
                }
                Err(e) => {
                    log.log(&format!(
                        "attackalert: ERROR: KILL_HOSTS_DENY failed for host {target}: {e}"
                    ));
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
                        Step::Route => format!(
                            "attackalert: Host {target} has been blocked via dropped route using command: \"{command}\""
                        ),
                        _ => format!(
                            "attackalert: External command run for host: {target} using command: \"{command}\""
                        ),
                    });
                    true
                }
                Err(why) => {
                    log.log(&format!(
                        "attackalert: ERROR: {key} command failed for host {target} ({why}): \"{command}\""
                    ));
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
