//! The text of every line the daemon logs: `attackalert:` lines (what a probe was,
//! what was done to its source), lines about one ban (made, ended, lifted), and the
//! `adminalert:` lines of the daemon's own life (start, modes, protected set, our table,
//! errors, stop). One place, because admins `grep` these lines and fail2ban's stock
//! filter parses them: the wording of PortSentry 1.2 is kept exactly where 1.2 had a
//! line (COMPAT.md), and ours follow its shape.
//!
//! Each function returns the line; the caller logs it. Nothing here does I/O.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use portsentry_engine::engine::Exempt;
use portsentry_engine::{Evidence, Probe, Proto};

/// A source as 1.2 prints it: `name/address` (the name is the address itself unless
/// RESOLVE_HOST found one).
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    pub name: &'a str,
    pub ip: IpAddr,
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.name, self.ip)
    }
}

/// `" (N more hits not logged)"`, or nothing when none were damped.
fn more(suppressed: u32) -> String {
    if suppressed > 0 {
        format!(" ({suppressed} more hits not logged)")
    } else {
        String::new()
    }
}

/// The 1.2 alert for one probe, and after it the class of its evidence:
/// `TCP SYN/Normal scan from host: h/a to TCP port: 22 (unverified)`. The class is a
/// trailing token so that 1.2's wording up to the port is unchanged (`grep
/// attackalert`, and patterns such as `to TCP port: [0-9]+` still match). For a
/// completed handshake 1.2's classic line, [`connect`].
pub fn scan(host: Host<'_>, probe: &Probe) -> String {
    if probe.kind == portsentry_engine::ProbeKind::Connect {
        return connect(host, probe);
    }
    format!(
        "attackalert: {} from host: {host} to {} port: {} ({})",
        probe.kind,
        probe.proto(),
        probe.dport,
        probe.evidence()
    )
}

/// 1.2's line of its classic modes, with the class of the evidence after it as in
/// [`scan`]: `-tcp` (a completed handshake: `Connect from host: h/a to TCP port: 1080
/// (verified)`) and `-udp` (a datagram to a bound port, for which 1.2 said "Connect"
/// too; unverified).
pub fn connect(host: Host<'_>, probe: &Probe) -> String {
    format!(
        "attackalert: Connect from host: {host} to {} port: {} ({})",
        probe.proto(),
        probe.dport,
        probe.evidence()
    )
}

/// A single packet in the name of a known peer (a source with a real connection to
/// this host): possibly forged to get the peer banned, so not acted on.
pub fn possibly_forged(host: Host<'_>, probe: &Probe, suppressed: u32) -> String {
    format!(
        "attackalert: Possibly forged {} in the name of known peer: {host} to {} port: {} ({}; a host with a real connection to us, not banned){}",
        probe.kind,
        probe.proto(),
        probe.dport,
        probe.evidence(),
        more(suppressed)
    )
}

/// The policy of the probe's evidence class says not to ban (`ban = false`).
pub fn not_banned_by_policy(ip: IpAddr, evidence: Evidence) -> String {
    let table = match evidence {
        Evidence::Verified => "[bans]".to_string(),
        other => format!("[bans.{other}]"),
    };
    format!("attackalert: Host {ip} not banned: {evidence} evidence, and {table} ban = false")
}

/// 1.2's line for an IPv4 header with options.
pub fn ip_options(host: Host<'_>, probe: &Probe) -> String {
    format!(
        "attackalert: Packet from host: {host} to {} port: {} has IP options set (detection avoidance technique).",
        probe.proto(),
        probe.dport
    )
}

/// Hits damped before a new alert line.
pub fn hits_not_logged(host: Host<'_>, count: u32) -> String {
    format!("attackalert: {count} more hits from host: {host} were not logged")
}

/// Hits damped during a minute that ended (or before a ban), with the last port.
pub fn hits_not_logged_last(host: Host<'_>, count: u32, proto: Proto, port: u16) -> String {
    format!(
        "attackalert: {count} more hits from host: {host} were not logged (the last to {proto} port: {port})"
    )
}

/// 1.2's line for a probe from a source already blocked.
pub fn already_blocked(host: Host<'_>, suppressed: u32) -> String {
    format!(
        "attackalert: Host: {host} is already blocked Ignoring{}",
        more(suppressed)
    )
}

/// 1.2's classic-mode line for a source already blocked (the address only, and a
/// period, unlike the stealth modes' line).
pub fn already_blocked_classic(host: Host<'_>, suppressed: u32) -> String {
    format!(
        "attackalert: Host: {} is already blocked. Ignoring{}",
        host.ip,
        more(suppressed)
    )
}

/// A probe from the ignore list or the protected set (1.2 said nothing), with the real
/// reason: an address the admin listed, or one the daemon protects on its own.
pub fn ignored(host: Host<'_>, probe: &Probe, suppressed: u32, why: Exempt) -> String {
    let reason = match why {
        Exempt::IgnoreList => "in ignore file",
        Exempt::Protected => {
            "protected: this host's own address, gateway, resolver or [protect] extra"
        }
    };
    format!(
        "attackalert: Ignored host: {host} sent {} to {} port: {} ({reason}, not blocked){}",
        probe.kind,
        probe.proto(),
        probe.dport,
        more(suppressed)
    )
}

/// A ban the kernel acknowledged, with the class of the evidence behind it.
pub fn kernel_ban(
    ip: IpAddr,
    place: &str,
    length: Option<Duration>,
    offences: u32,
    evidence: Evidence,
) -> String {
    format!(
        "attackalert: Host {ip} has been banned in the kernel ({place}) {}, offence {offences}, {evidence} evidence {}",
        for_how_long(length),
        lift_hint(ip)
    )
}

/// The tail of a ban's line: the command that lifts it.
fn lift_hint(ip: IpAddr) -> String {
    format!("(lift it with: portsentry unban {ip})")
}

/// After the KILL_* commands blocked a host with no ban backend: it is recorded (1.2 had
/// no way to lift it), and this is how to.
pub fn legacy_ban_recorded(ip: IpAddr) -> String {
    format!(
        "attackalert: Host {ip} is recorded as blocked by the KILL_* commands {}",
        lift_hint(ip)
    )
}

pub fn kernel_ban_failed(ip: IpAddr, error: &dyn fmt::Display) -> String {
    format!("attackalert: ERROR: kernel ban failed for host {ip}: {error:#}")
}

/// 1.2's line for BLOCK_x=0.
pub fn response_ignored(proto: Proto) -> String {
    format!("attackalert: Ignoring {proto} response per configuration file setting.")
}

pub fn run_cmd_missing(proto: Proto, ip: IpAddr) -> String {
    format!("attackalert: BLOCK_{proto}=2 but KILL_RUN_CMD is not set: nothing run for host {ip}.")
}

pub fn no_block_action(proto: Proto, ip: IpAddr) -> String {
    format!(
        "attackalert: BLOCK_{proto}=1 but no KILL_ROUTE, KILL_HOSTS_DENY or KILL_RUN_CMD is set: host {ip} is not blocked."
    )
}

/// 1.2's line when a block action failed.
pub fn could_not_block(host: Host<'_>) -> String {
    format!("attackalert: ERROR: Could not block host {host}!!")
}

pub fn hosts_deny_added(ip: IpAddr, line: &str) -> String {
    format!("attackalert: Host {ip} has been blocked via wrappers with string: \"{line}\"")
}

pub fn hosts_deny_present(ip: IpAddr) -> String {
    format!("attackalert: Host {ip} already in hosts.deny file, skipping.")
}

pub fn hosts_deny_failed(ip: IpAddr, error: &dyn fmt::Display) -> String {
    format!("attackalert: ERROR: KILL_HOSTS_DENY failed for host {ip}: {error}")
}

pub fn route_added(ip: IpAddr, command: &str) -> String {
    format!(
        "attackalert: Host {ip} has been blocked via dropped route using command: \"{command}\""
    )
}

pub fn command_run(ip: IpAddr, command: &str) -> String {
    format!("attackalert: External command run for host: {ip} using command: \"{command}\"")
}

/// `key` is `KILL_ROUTE` or `KILL_RUN_CMD`.
pub fn command_failed(key: &str, ip: IpAddr, why: &dyn fmt::Display, command: &str) -> String {
    format!("attackalert: ERROR: {key} command failed for host {ip} ({why}): \"{command}\"")
}

pub fn manual_ban(
    net: IpNet,
    length: Option<Duration>,
    offences: u32,
    overrode: Option<IpNet>,
) -> String {
    format!(
        "attackalert: Host {net} has been banned by the administrator {}, offence {offences}{}",
        for_how_long(length),
        overrode.map(forced_over).unwrap_or_default()
    )
}

/// The tail of a `--force` ban's lines: exactly what it overrode.
pub fn forced_over(protected: IpNet) -> String {
    format!(
        "; --force overrode the protected set ({protected} is protected: this host's addresses, its gateways and resolvers, the ignore list)"
    )
}

/// Bans of the state file (or the kernel) that may not be bans: one line for them all.
pub fn saved_bans_refused(refused: &[crate::bans::guard::Refusal]) -> String {
    const SHOWN: usize = 5;
    let mut why: Vec<String> = refused.iter().take(SHOWN).map(|r| r.to_string()).collect();
    if refused.len() > SHOWN {
        why.push(format!("and {} more", refused.len() - SHOWN));
    }
    format!(
        "adminalert: WARNING: {} saved bans not put back (and removed from the kernel): {}",
        refused.len(),
        why.join("; ")
    )
}

/// A state file holding more records than the book keeps: one line, the lost ones
/// named (oldest offence first).
pub fn state_over_capacity(
    state_file: &std::path::Path,
    dropped: &[portsentry_engine::bans::Ban],
    capacity: usize,
) -> String {
    const SHOWN: usize = 10;
    let mut keys: Vec<String> = dropped
        .iter()
        .take(SHOWN)
        .map(|b| b.key.to_string())
        .collect();
    if dropped.len() > SHOWN {
        keys.push(format!("and {} more", dropped.len() - SHOWN));
    }
    format!(
        "adminalert: WARNING: {} holds more records than the ban book keeps ({capacity}): {} dropped, oldest offences first: {}",
        state_file.display(),
        dropped.len(),
        keys.join(", ")
    )
}

/// What `portsentry unban` did about one legacy 1.2 response for the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    /// This KILL_HOSTS_DENY line was removed from hosts.deny.
    HostsDenyRemoved(String),
    /// KILL_ROUTE's inverse ran and succeeded: this command.
    RouteRemoved(String),
    /// `what` (KILL_HOSTS_DENY or KILL_ROUTE) could not be undone: `why`.
    Failed { what: &'static str, why: String },
    /// KILL_ROUTE is not a command of a shape whose inverse is known.
    RouteUnknown,
    /// KILL_HOSTS_DENY names $PORT$, so which line it wrote is not known.
    HostsDenyPort,
    /// KILL_RUN_CMD ran (it has no inverse).
    RunCmd,
}

impl Undo {
    /// Did this lift something?
    pub fn lifted(&self) -> bool {
        matches!(self, Undo::HostsDenyRemoved(_) | Undo::RouteRemoved(_))
    }
}

impl fmt::Display for Undo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Undo::HostsDenyRemoved(line) => write!(f, "removed the hosts.deny line \"{line}\""),
            Undo::RouteRemoved(command) => write!(f, "undid KILL_ROUTE with \"{command}\""),
            Undo::Failed { what, why } => write!(f, "could not undo {what}: {why}"),
            Undo::RouteUnknown => f.write_str(
                "KILL_ROUTE is not a command portsentry knows how to reverse: what it added is still there",
            ),
            Undo::HostsDenyPort => f.write_str(
                "KILL_HOSTS_DENY names $PORT$, so its hosts.deny line is not known and was left",
            ),
            Undo::RunCmd => f.write_str("KILL_RUN_CMD ran for this host and cannot be undone"),
        }
    }
}

/// `; ` and each undo, or nothing.
fn undo_tail(undone: &[Undo]) -> String {
    undone.iter().map(|u| format!("; {u}")).collect()
}

/// The log line of `portsentry unban`: the ban lifted, and what was done about the
/// legacy responses for the address.
pub fn manual_unban(net: IpNet, undone: &[Undo]) -> String {
    format!(
        "adminalert: ban on {net} lifted by the administrator{}",
        undo_tail(undone)
    )
}

/// The reply to `portsentry unban`.
pub fn unban_reply(net: IpNet, undone: &[Undo]) -> String {
    format!("ok: ban on {net} lifted{}", undo_tail(undone))
}

/// No ban was in force, but the legacy responses for the address were undone.
pub fn unban_legacy_only_reply(net: IpNet, undone: &[Undo]) -> String {
    format!("ok: no ban in force on {net}{}", undo_tail(undone))
}

/// The log line of [`unban_legacy_only_reply`].
pub fn legacy_unban(net: IpNet, undone: &[Undo]) -> String {
    format!(
        "adminalert: no ban in force on {net}, KILL_* responses undone by the administrator{}",
        undo_tail(undone)
    )
}

pub fn ban_ended(key: IpNet, offences: u32) -> String {
    format!("adminalert: ban on {key} ended (offence {offences})")
}

pub fn bans_ended(count: usize) -> String {
    format!("adminalert: {count} bans ended")
}

pub fn ban_not_removed(key: IpNet, error: &str) -> String {
    format!("adminalert: ERROR: ban on {key} ended but could not be removed: {error}")
}

/// Bans a full book forgot early; `expire_in_kernel`: their elements still time out.
pub fn book_full(dropped: usize, expire_in_kernel: bool) -> String {
    format!(
        "adminalert: WARNING: ban book full: {dropped} bans forgotten early (most recent offences kept){}",
        if expire_in_kernel {
            "; their kernel elements still expire on time"
        } else {
            "; they were lifted"
        }
    )
}

/// SIGUSR1: the record files were opened again (`new` of them created afresh).
pub fn records_reopened(files: usize, new: usize) -> String {
    format!("adminalert: record files reopened on SIGUSR1 ({files} files, {new} created anew)")
}

pub fn bans_put_back(count: usize) -> String {
    format!("adminalert: {count} bans in force put back into the kernel")
}

// ---- the daemon's own life: start, modes, protected set, table, stop ----

pub const ACTIVE: &str = "adminalert: PortSentry is now active and listening.";
pub const SHUTTING_DOWN: &str = "adminalert: PortSentry is shutting down";
pub const RESTARTING: &str = "adminalert: PortSentry is restarting to load the new configuration (traps and bans stay in place)";
pub const NO_BACKEND: &str =
    "adminalert: no ban backend works here: only the KILL_* commands block";
pub const ADVANCED_EXCLUDE_NONE: &str = "adminalert: Advanced mode will manually exclude no ports";

/// `what` failed because of `error` (its whole cause chain).
pub fn error(what: &str, error: &dyn fmt::Display) -> String {
    format!("adminalert: ERROR: {what}: {error:#}")
}

/// A failure whose error text names the operation itself.
pub fn failure(error: &dyn fmt::Display) -> String {
    format!("adminalert: ERROR: {error:#}")
}

/// 2.x's `-i` names an interface this host does not have (yet): it is watched once it
/// appears, as nftables' `iifname` matches by name.
pub fn interfaces_absent(names: &[String]) -> String {
    format!(
        "adminalert: WARNING: no interface {} here now; its probes are watched once it appears",
        names.join(", ")
    )
}
/// What 2.x's -L and -S do not change here, and why (one line each when given).
pub fn flags_2x_notes(disable_local_check: bool, disable_service_check: bool) -> Vec<String> {
    let mut out = Vec::new();
    if disable_local_check {
        out.push(
            "adminalert: WARNING: -L (--disable-local-check) accepted, but this host's own addresses stay protected: a ban on them would cut the host off"
                .to_string(),
        );
    }
    if disable_service_check {
        out.push(
            "adminalert: WARNING: -S (--disable-service-check) accepted, but a port where a service listens is never a trap: it would ban the service's clients"
                .to_string(),
        );
    }
    out
}

/// The configuration was refused at start (also printed on the terminal): one syslog
/// line, every problem of it joined with "; ".
pub fn config_failure(problems: &str) -> String {
    let joined: Vec<&str> = problems
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    format!(
        "adminalert: ERROR: configuration error, not starting: {}",
        joined.join("; ")
    )
}

/// A problem that does not stop the daemon; `problem` says it all.
pub fn warning(problem: &dyn fmt::Display) -> String {
    format!("adminalert: WARNING: {problem:#}")
}

pub fn starting(config_source: &str, toml_source: &str) -> String {
    format!(
        "adminalert: PortSentry {} is starting (config: {config_source}; settings: {toml_source}).",
        env!("CARGO_PKG_VERSION")
    )
}

/// `full`: the protected set holds more than the ignore list.
pub fn protected_at_start(count: usize, full: bool) -> String {
    format!(
        "adminalert: {count} protected networks (ignore list{}) are never blocked",
        if full {
            ", local addresses, default gateways, resolvers"
        } else {
            ""
        }
    )
}

pub fn protected_refreshed(why: &str, count: usize) -> String {
    format!("adminalert: {why}: {count} protected networks")
}

pub fn no_change_watcher(error: &dyn fmt::Display) -> String {
    format!(
        "adminalert: WARNING: cannot watch address and route changes ({error}); the protected set is read only at start"
    )
}

pub fn reload_refused(error: &dyn fmt::Display) -> String {
    format!(
        "adminalert: ERROR: reload refused, the configuration has errors; still running with the old one:\n{error:#}"
    )
}

/// The metrics endpoint is up (`[metrics] listen`).
pub fn metrics_served(addr: std::net::SocketAddr) -> String {
    format!("adminalert: metrics served on http://{addr}/metrics")
}

pub fn fallback_chosen(backend: &str) -> String {
    format!(
        "adminalert: nftables not available: bans go to {backend}; probes are read from the packet socket"
    )
}

pub fn table_rebuilt(table: &str, bans: usize, protected: usize) -> String {
    format!(
        "adminalert: table inet {table} rebuilt for a changed definition; {bans} host bans and {protected} protected entries carried over (network bans are put back from the state file)"
    )
}

pub fn table_reinstalled(table: &str) -> String {
    format!(
        "adminalert: WARNING: table inet {table} was removed by something else (nft flush ruleset?); installed it again and putting the bans in force back"
    )
}

pub fn table_gone_at_stop(table: &str) -> String {
    format!("adminalert: table inet {table} is gone (portsentry flush --all?): nothing to remove")
}

pub fn traps_removed(table: &str) -> String {
    format!(
        "adminalert: trap rules removed from table inet {table}; bans stay in the kernel until they expire"
    )
}

/// At start, when the traps ban: how many new bans a second they may make.
pub fn ban_budget_at_start(per_second: u32, burst: u32) -> String {
    if per_second == 0 {
        "adminalert: ban budget: none ([firewall] ban_budget = 0: every trap hit may ban)"
            .to_string()
    } else {
        format!(
            "adminalert: ban budget: {per_second} new bans/s, burst {burst} (past it, probes are dropped without a ban; [firewall] ban_budget)"
        )
    }
}

/// One mode on the nftables path; `banning`: the traps ban on the first probe.
pub fn mode_trapped(mode: &str, proto: Proto, ports: usize, banning: bool) -> String {
    format!(
        "adminalert: {mode} mode: {ports} {proto} ports trapped in the kernel ({}); ports with a local socket are excluded live",
        if banning {
            "ban on the first probe"
        } else {
            "log only; the daemon decides"
        }
    )
}

pub fn bans_restored(
    state_file: &std::path::Path,
    backend: &str,
    put_back: usize,
    already_in_kernel: usize,
    adopted: usize,
    expired: usize,
) -> String {
    format!(
        "adminalert: bans restored from {} ({backend}): {put_back} put back, {already_in_kernel} still in the kernel, {adopted} found only in the kernel, {expired} expired",
        state_file.display()
    )
}

/// The ban set is full: said once when it fills (the bans not made meanwhile are
/// counted in [`ban_set_has_room`]). The kernel keeps dropping the probes of every
/// source, banned or not.
pub fn ban_set_full(ip: IpAddr, why: &dyn fmt::Display) -> String {
    format!(
        "adminalert: WARNING: the ban set is full: {ip} and further new sources are not banned until bans expire (their probes are still dropped and logged); {why}"
    )
}

/// The first ban written after the set was full.
pub fn ban_set_has_room(skipped: u64) -> String {
    format!(
        "adminalert: the ban set has room again; {skipped} bans were not made while it was full"
    )
}

/// `[firewall] set_size` is below the size the existing set had.
pub fn set_size_lowered(set: &str, old: u32, new: u32) -> String {
    format!(
        "adminalert: set {set} had a size limit of {old}, now {new}: the bans it holds beyond {new} stay until they expire, and no new ban is added while it holds {new} or more"
    )
}

/// A save of the state file worked again after failing (the failure was logged once).
pub fn state_saved_again(path: &std::path::Path) -> String {
    format!("adminalert: {} saved again", path.display())
}

/// KILL_* responses skipped by the per-minute limit, once a minute.
pub fn kill_runs_skipped(skipped: u64, limit: u32) -> String {
    format!(
        "adminalert: {skipped} KILL_* responses skipped in the last minute (at most {limit} run a minute; the kernel bans are not limited)"
    )
}

/// The kernel sets held more bans at start than the book had room to adopt (said
/// once, at start).
pub fn kernel_bans_unlisted(backend: &str, adopted: usize, capacity: usize) -> String {
    format!(
        "adminalert: the {backend} ban sets hold more bans than the ban book keeps ({capacity}): {adopted} were adopted; the others stay enforced and expire in the kernel, but portsentry list does not show them"
    )
}

/// Leftovers of bans that ended while the daemon was down, removed at start.
pub fn ended_bans_removed(count: usize, backend: &str) -> String {
    format!("adminalert: {count} bans that ended while portsentry was down removed from {backend}")
}

/// 1.2's start-up line for each listed port of a stealth mode.
pub fn stealth_listen(proto: Proto, port: u16) -> String {
    format!("adminalert: Going into stealth listen mode on {proto} port: {port}")
}

/// 1.2's start-up lines of an advanced mode.
pub fn advanced_monitor(below: u32) -> String {
    format!("adminalert: Advanced mode will monitor first {below} ports")
}

pub fn advanced_exclude(port: u16) -> String {
    format!("adminalert: Advanced mode will manually exclude port: {port}")
}

pub fn in_use_ignored(proto: Proto, port: u16) -> String {
    format!(
        "adminalert: Advanced Stealth scan detection mode activated. Ignored {proto} port: {port}"
    )
}

// ---- bound sockets: the classic modes and the handshake trap ports ----

/// 1.2's start-up line for each port of a classic mode.
pub fn listen_mode(proto: Proto, port: u16) -> String {
    format!("adminalert: Going into listen mode on {proto} port: {port}")
}

/// Instead of one [`listen_mode`] line per port, for a long list (1.2 never had more
/// than 64 ports).
pub fn listen_mode_summary(proto: Proto, count: usize, ports: &dyn fmt::Display) -> String {
    format!("adminalert: Going into listen mode on {count} {proto} ports: {ports}")
}

/// A handshake trap port of a stealth or advanced mode.
pub fn handshake_trap(port: u16) -> String {
    format!(
        "adminalert: Handshake trap on TCP port: {port} (it accepts connections, so it looks open to scanners; a connect there is verified evidence)"
    )
}

/// 1.2's line for a port that could not be bound, with the reason.
pub fn bind_failed(proto: Proto, port: u16, in_use: bool, error: &dyn fmt::Display) -> String {
    let why = if in_use {
        format!("port {port} in use by another program: not watched")
    } else {
        format!("{error}: not watched")
    };
    format!(
        "adminalert: ERROR: could not bind {proto} socket: {port}. Attempting to continue ({why})"
    )
}

/// More ports failed to bind than are worth a line each.
pub fn bind_failed_more(count: usize) -> String {
    format!("adminalert: ERROR: {count} more ports could not be bound and are not watched")
}

/// 1.2's line when a classic mode could bind nothing at all.
pub fn bind_none(proto: Proto) -> String {
    format!("adminalert: ERROR: could not bind ANY {proto} sockets. Shutting down.")
}

/// The open-file limit does not allow one socket per port.
pub fn open_file_limit(hard: u64, ports: usize, first_unwatched: Option<(Proto, u16)>) -> String {
    format!(
        "adminalert: WARNING: the open-file limit (RLIMIT_NOFILE, hard limit {hard}) is too low for {ports} listening sockets{}; raise it (LimitNOFILE= in the unit)",
        match first_unwatched {
            Some((proto, port)) => format!(": {proto} ports from {port} on are not watched"),
            None => String::new(),
        }
    )
}

/// A bound socket failed while being read (damped to one line a minute).
pub fn listen_error(proto: Proto, port: u16, error: &dyn fmt::Display) -> String {
    format!("adminalert: ERROR: cannot read the {proto} socket on port {port}: {error}")
}

/// One line a minute while the kernel's ban budget is spent. `probes`: from the
/// kernel's counter when `counted`, else the number of samples it sent; `sources`:
/// distinct sources among the samples.
pub fn ban_budget_spent(probes: u64, sources: usize, counted: bool) -> String {
    let how = if counted {
        "probes counted by the kernel, sources among its samples"
    } else {
        "probes and sources among the kernel's samples"
    };
    format!(
        "adminalert: ban budget spent: {probes} probes from {sources} sources not banned; likely forged ({how})"
    )
}

/// `portsentry ban` of a known peer, refused (the reply after "error: ").
pub fn known_peer_refused(ip: IpAddr) -> String {
    format!(
        "{ip} is a known peer (it exchanged data with this host within [firewall] known_peer_time), so probes in its name may be forged; --force overrides the known peer and the protected set"
    )
}

/// The tail of a forced ban's reply that overrode the known-peer rule.
pub fn forced_over_known_peer(ip: IpAddr) -> String {
    format!("; --force overrode the known peer {ip}")
}

/// Saved bans of known peers that were not put back at start.
pub fn saved_known_peers_not_restored(count: usize) -> String {
    format!(
        "adminalert: {count} saved bans of known peers not put back (they exchanged data with this host within [firewall] known_peer_time)"
    )
}

/// A ban set refused a new element: it is full. Existing bans stay.
pub fn kernel_set_full(set: &str, size: u32) -> String {
    format!(
        "adminalert: ban set {set} is full ({size} elements): new sources are dropped but not banned"
    )
}

/// What the capture loop counted, for the summary logged at stop.
#[derive(Debug, Clone, Copy, Default)]
pub struct CaptureCounts {
    pub parse: portsentry_engine::wire::ParseStats,
    pub in_use_skipped: u64,
    pub usage_errors: u64,
    pub dropped_actions: u64,
    pub kernel_losses: u64,
}

/// The summary logged at stop.
pub fn statistics(e: &portsentry_engine::engine::EngineStats, c: &CaptureCounts) -> String {
    format!(
        "adminalert: statistics: {} probes judged, {} alerts, {} responses, {} from ignored or protected hosts, {} to ports in use skipped, {} socket-table errors, {} log lines damped, {} actions dropped, {} packets lost by the kernel queue; packets: {} parsed, {} truncated, {} fragments, {} malformed",
        e.probes,
        e.alerts,
        e.responses,
        e.ignored,
        c.in_use_skipped,
        c.usage_errors,
        e.suppressed_lines,
        c.dropped_actions,
        c.kernel_losses,
        c.parse.parsed,
        c.parse.truncated,
        c.parse.fragments,
        c.parse.malformed,
    )
}

/// Human form of a ban length for log lines: "for 1h", "for 2h", "permanently".
pub fn for_how_long(length: Option<Duration>) -> String {
    match length {
        None => "permanently".into(),
        Some(d) => format!("for {}", humantime::format_duration(d)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portsentry_engine::ProbeKind;

    fn probe(kind: ProbeKind, dport: u16) -> Probe {
        Probe {
            src: "198.18.0.2".parse().unwrap(),
            dst: "198.18.0.1".parse().unwrap(),
            sport: 40000,
            dport,
            kind,
            ip_options: false,
            ttl: 64,
            verdict: portsentry_engine::Verdict::Observed,
        }
    }

    fn host() -> Host<'static> {
        Host {
            name: "198.18.0.2",
            ip: "198.18.0.2".parse().unwrap(),
        }
    }

    /// The lines fail2ban's portsentry filter and the tutorials' greps read, to the letter.
    #[test]
    fn lines_keep_the_1_2_wording() {
        // Issue 7: the evidence class follows the 1.2 text, which is kept to the port.
        assert_eq!(
            scan(host(), &probe(ProbeKind::Syn, 22)),
            "attackalert: TCP SYN/Normal scan from host: 198.18.0.2/198.18.0.2 to TCP port: 22 (unverified)"
        );
        assert_eq!(
            scan(host(), &probe(ProbeKind::Udp, 53)),
            "attackalert: UDP scan from host: 198.18.0.2/198.18.0.2 to UDP port: 53 (unverified)"
        );
        assert_eq!(
            already_blocked(host(), 0),
            "attackalert: Host: 198.18.0.2/198.18.0.2 is already blocked Ignoring"
        );
        assert_eq!(
            already_blocked(host(), 3),
            "attackalert: Host: 198.18.0.2/198.18.0.2 is already blocked Ignoring (3 more hits not logged)"
        );
        assert_eq!(
            ignored(host(), &probe(ProbeKind::Syn, 23), 0, Exempt::IgnoreList),
            "attackalert: Ignored host: 198.18.0.2/198.18.0.2 sent TCP SYN/Normal scan to TCP port: 23 (in ignore file, not blocked)"
        );
        assert_eq!(
            response_ignored(Proto::Tcp),
            "attackalert: Ignoring TCP response per configuration file setting."
        );
        assert_eq!(
            could_not_block(host()),
            "attackalert: ERROR: Could not block host 198.18.0.2/198.18.0.2!!"
        );
        assert_eq!(
            route_added(host().ip, "/sbin/route add -host 198.18.0.2 reject"),
            "attackalert: Host 198.18.0.2 has been blocked via dropped route using command: \"/sbin/route add -host 198.18.0.2 reject\""
        );
    }

    /// Issue 8: the classic modes' lines as 1.2 logs them.
    #[test]
    fn issue_8_classic_lines_keep_the_1_2_wording() {
        assert_eq!(
            scan(host(), &probe(ProbeKind::Connect, 1080)),
            "attackalert: Connect from host: 198.18.0.2/198.18.0.2 to TCP port: 1080 (verified)"
        );
        assert_eq!(
            connect(host(), &probe(ProbeKind::Udp, 161)),
            "attackalert: Connect from host: 198.18.0.2/198.18.0.2 to UDP port: 161 (unverified)"
        );
        assert_eq!(
            already_blocked_classic(host(), 0),
            "attackalert: Host: 198.18.0.2 is already blocked. Ignoring"
        );
        assert_eq!(
            listen_mode(Proto::Tcp, 1),
            "adminalert: Going into listen mode on TCP port: 1"
        );
        assert_eq!(
            bind_failed(Proto::Tcp, 22, true, &"Address in use"),
            "adminalert: ERROR: could not bind TCP socket: 22. Attempting to continue (port 22 in use by another program: not watched)"
        );
        assert_eq!(
            bind_none(Proto::Udp),
            "adminalert: ERROR: could not bind ANY UDP sockets. Shutting down."
        );
    }

    /// A protected address that is not in the ignore file is not said to be in it.
    #[test]
    fn protected_source_gives_the_real_reason() {
        assert_eq!(
            ignored(host(), &probe(ProbeKind::Udp, 53), 4, Exempt::Protected),
            "attackalert: Ignored host: 198.18.0.2/198.18.0.2 sent UDP scan to UDP port: 53 \
             (protected: this host's own address, gateway, resolver or [protect] extra, not \
             blocked) (4 more hits not logged)"
        );
    }

    #[test]
    fn ban_lengths_read_as_english() {
        assert_eq!(for_how_long(None), "permanently");
        assert_eq!(for_how_long(Some(Duration::from_secs(3600))), "for 1h");
        assert_eq!(
            kernel_ban(
                host().ip,
                "nftables set banned4",
                Some(Duration::from_secs(7200)),
                2,
                Evidence::Verified
            ),
            "attackalert: Host 198.18.0.2 has been banned in the kernel (nftables set banned4) for 2h, offence 2, verified evidence (lift it with: portsentry unban 198.18.0.2)"
        );
    }

    #[test]
    fn issue_8_unban_says_what_was_lifted_and_what_cannot_be_undone() {
        let net: IpNet = "198.18.0.2/32".parse().unwrap();
        let undone = [
            Undo::HostsDenyRemoved("ALL: 198.18.0.2".into()),
            Undo::RouteRemoved("/sbin/route del -host 198.18.0.2 reject".into()),
            Undo::RunCmd,
        ];
        assert_eq!(
            manual_unban(net, &undone),
            "adminalert: ban on 198.18.0.2/32 lifted by the administrator; removed the hosts.deny line \"ALL: 198.18.0.2\"; undid KILL_ROUTE with \"/sbin/route del -host 198.18.0.2 reject\"; KILL_RUN_CMD ran for this host and cannot be undone"
        );
        assert_eq!(
            manual_unban(net, &[]),
            "adminalert: ban on 198.18.0.2/32 lifted by the administrator"
        );
        assert_eq!(
            unban_reply(net, &[Undo::RouteUnknown]),
            "ok: ban on 198.18.0.2/32 lifted; KILL_ROUTE is not a command portsentry knows how to reverse: what it added is still there"
        );
        assert_eq!(
            legacy_ban_recorded(host().ip),
            "attackalert: Host 198.18.0.2 is recorded as blocked by the KILL_* commands (lift it with: portsentry unban 198.18.0.2)"
        );
    }

    #[test]
    fn issue7_refused_and_dropped_saved_bans_are_one_line_each() {
        use crate::bans::guard::Refusal;
        let net = |s: &str| -> IpNet { s.parse().unwrap() };
        let mut refused = vec![
            Refusal::TooWide {
                net: net("0.0.0.0/0"),
            },
            Refusal::Protected {
                net: net("198.18.0.1/32"),
                protected: net("198.18.0.1/32"),
            },
        ];
        assert_eq!(
            saved_bans_refused(&refused),
            "adminalert: WARNING: 2 saved bans not put back (and removed from the kernel): 0.0.0.0/0 covers too much: bans must be /8 or longer for IPv4 and /16 or longer for IPv6 (no --force allows this); 198.18.0.1/32 is protected (198.18.0.1/32 is in the protected set: this host's addresses, its gateways and resolvers, the ignore list); --force overrides the protected set"
        );
        refused.extend((0..6).map(|_| Refusal::TooWide { net: net("::/0") }));
        assert!(saved_bans_refused(&refused).ends_with("; and 3 more"));

        let ban = |key: &str| portsentry_engine::bans::Ban {
            key: net(key),
            offences: 1,
            banned_at: 0,
            expires_at: None,
            last_offence: 0,
            reason: String::new(),
            evidence: Evidence::Unverified,
        };
        assert_eq!(
            state_over_capacity(
                std::path::Path::new("/var/lib/portsentry/state.json"),
                &[ban("198.18.0.2/32"), ban("fd00:5e17::2/128")],
                65_536
            ),
            "adminalert: WARNING: /var/lib/portsentry/state.json holds more records than the ban book keeps (65536): 2 dropped, oldest offences first: 198.18.0.2/32, fd00:5e17::2/128"
        );
        assert_eq!(
            manual_ban(net("198.18.0.1/32"), None, 1, Some(net("198.18.0.1/32"))),
            "attackalert: Host 198.18.0.1/32 has been banned by the administrator permanently, offence 1; --force overrode the protected set (198.18.0.1/32 is protected: this host's addresses, its gateways and resolvers, the ignore list)"
        );
    }

    #[test]
    fn issue7_lines_name_the_evidence() {
        let mut connect = probe(ProbeKind::Connect, 2323);
        assert_eq!(
            scan(host(), &connect),
            // 1.2's classic wording for a completed handshake (issue 8).
            "attackalert: Connect from host: 198.18.0.2/198.18.0.2 to TCP port: 2323 (verified)"
        );
        connect.kind = ProbeKind::Syn;
        assert_eq!(
            possibly_forged(host(), &connect, 7),
            "attackalert: Possibly forged TCP SYN/Normal scan in the name of known peer: 198.18.0.2/198.18.0.2 to TCP port: 2323 (unverified; a host with a real connection to us, not banned) (7 more hits not logged)"
        );
        assert_eq!(
            not_banned_by_policy(host().ip, Evidence::Unverified),
            "attackalert: Host 198.18.0.2 not banned: unverified evidence, and [bans.unverified] ban = false"
        );
        assert_eq!(
            not_banned_by_policy(host().ip, Evidence::Verified),
            "attackalert: Host 198.18.0.2 not banned: verified evidence, and [bans] ban = false"
        );
        assert_eq!(
            kernel_ban(
                host().ip,
                "nftables set banned4",
                Some(Duration::from_secs(600)),
                1,
                Evidence::Unverified
            ),
            "attackalert: Host 198.18.0.2 has been banned in the kernel (nftables set banned4) for 10m, offence 1, unverified evidence (lift it with: portsentry unban 198.18.0.2)"
        );
    }
}

/// The facts of PortSentry 2.x's scan line; `None` is 2.x's "unset" (the decision
/// stopped before that step).
#[derive(Debug, Clone, Copy)]
pub struct Scan2x<'a> {
    pub host: Host<'a>,
    pub probe: &'a Probe,
    /// The source is on the ignore list or protected.
    pub ignored: Option<bool>,
    /// The hit reached SCAN_TRIGGER.
    pub triggered: Option<bool>,
    /// Blocking is off for the protocol (BLOCK_x = 0).
    pub noblock: Option<bool>,
    /// The block succeeded (or the source was already blocked).
    pub blocked: Option<bool>,
}

/// PortSentry 2.x's line for one hit, as its fail2ban filter (`^[^ ]* Scan from:
/// \[<HOST>\]` on the history file) and its users read it:
/// `Scan from: [ip] (name) protocol: [TCP] port: [23] type: [TCP SYN/Normal scan]
/// IP opts: [not set] ignored: [false] triggered: [true] noblock: [false] blocked: [true]`.
/// The type is `Connect` for a completed handshake and `UDP` for UDP, as in 2.x; TCP
/// labels are ours (2.x has no ACK/Window or Maimon label).
pub fn scan_2x(s: &Scan2x<'_>) -> String {
    fn flag(v: Option<bool>) -> &'static str {
        match v {
            Some(true) => "true",
            Some(false) => "false",
            None => "unset",
        }
    }
    let kind = match s.probe.kind {
        portsentry_engine::ProbeKind::Connect => "Connect".to_string(),
        portsentry_engine::ProbeKind::Udp => "UDP".to_string(),
        k => k.to_string(),
    };
    let opts = match (s.probe.proto(), s.probe.src) {
        (Proto::Tcp | Proto::Udp, IpAddr::V4(_)) if s.probe.ip_options => "set",
        (Proto::Tcp | Proto::Udp, IpAddr::V4(_)) => "not set",
        _ => "unknown",
    };
    format!(
        "Scan from: [{}] ({}) protocol: [{}] port: [{}] type: [{kind}] IP opts: [{opts}] ignored: [{}] triggered: [{}] noblock: [{}] blocked: [{}]",
        s.host.ip,
        s.host.name,
        s.probe.proto(),
        s.probe.dport,
        flag(s.ignored),
        flag(s.triggered),
        flag(s.noblock),
        flag(s.blocked),
    )
}

#[cfg(test)]
mod scan_2x_tests {
    use super::*;
    use portsentry_engine::{ProbeKind, Verdict};

    fn probe(kind: ProbeKind, src: &str) -> Probe {
        Probe {
            src: src.parse().unwrap(),
            dst: "198.18.0.1".parse().unwrap(),
            sport: 40000,
            dport: 23,
            kind,
            ip_options: false,
            ttl: 64,
            verdict: Verdict::Observed,
        }
    }

    #[test]
    fn the_2x_line_has_2x_wording_and_matches_its_fail2ban_filter() {
        let p = probe(ProbeKind::Syn, "198.18.0.2");
        let host = Host {
            name: "198.18.0.2",
            ip: p.src,
        };
        let line = scan_2x(&Scan2x {
            host,
            probe: &p,
            ignored: Some(false),
            triggered: Some(true),
            noblock: Some(false),
            blocked: Some(true),
        });
        assert_eq!(
            line,
            "Scan from: [198.18.0.2] (198.18.0.2) protocol: [TCP] port: [23] type: [TCP SYN/Normal scan] IP opts: [not set] ignored: [false] triggered: [true] noblock: [false] blocked: [true]"
        );
        // 2.x's fail2ban/portsentry.conf on its history line (time, space, scan line).
        let re = regex::Regex::new(r"^[^ ]* Scan from: \[(?P<host>[^\]]+)\]").unwrap();
        let history = format!("2026-12-02T06:00:00.123+0000 {line}");
        assert_eq!(&re.captures(&history).unwrap()["host"], "198.18.0.2");

        let p = probe(ProbeKind::Connect, "fd00:5e17::2");
        let host = Host {
            name: "fd00:5e17::2",
            ip: p.src,
        };
        let line = scan_2x(&Scan2x {
            host,
            probe: &p,
            ignored: Some(true),
            triggered: None,
            noblock: None,
            blocked: None,
        });
        assert!(
            line.contains("type: [Connect] IP opts: [unknown] ignored: [true] triggered: [unset]"),
            "{line}"
        );
    }
}
