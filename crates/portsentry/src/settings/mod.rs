//! Everything the daemon needs to run, merged from the command line, the legacy
//! `portsentry.conf`, Debian's `/etc/default/portsentry`, `portsentry.toml`, the ignore
//! file and the embedded defaults, and validated before anything starts. A bad value
//! stops startup with file:line; nothing here guesses.
//!
//! Two steps, as ripgrep's flags (`LowArgs` → `HiArgs`): [`sources::read`] reads every
//! source once into a plain value of texts, and [`validate::validate`], a pure
//! function, turns it into the fully derived [`Settings`]. Every built-in value is in
//! [`defaults`]. Nothing outside `settings` and `config` sees the raw TOML.

pub mod instance;
pub mod sources;
pub mod validate;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use anyhow::Result;
use portsentry_engine::Proto;
use portsentry_engine::bans::BanPolicies;
use portsentry_engine::engine::EngineConfig;
use portsentry_engine::ignore::IgnoreSet;
use portsentry_engine::ports::Watch;

use crate::cli::Cli;
use crate::config::BlockMode;
pub use crate::config::{Backend, FirewallSettings, ModeKind, ProtectSettings};
pub use sources::Sources;
pub use validate::validate;

/// The response settings of one protocol's mode, as read from the config.
#[derive(Debug, Clone)]
pub struct ResponsePlan {
    /// Mode name for `$MODE$` and the blocked-file suffix ("atcp", "sudp", ...).
    pub mode: String,
    pub block: BlockMode,
    pub kill_route: Option<String>,
    pub kill_hosts_deny: Option<String>,
    pub kill_run_cmd: Option<String>,
    pub kill_run_cmd_first: bool,
    pub hosts_deny_file: PathBuf,
}

/// One protocol's detection mode.
#[derive(Debug, Clone)]
pub struct ModeSettings {
    /// 1.2 name of the mode that runs: "stcp", "atcp", "sudp", "audp" (the classic
    /// modes run as the stealth ones).
    pub name: &'static str,
    pub proto: Proto,
    pub watch: Watch,
    pub plan: ResponsePlan,
    /// Blocked-file path for this mode (BLOCKED_FILE + "." + mode).
    pub blocked_file: PathBuf,
}

/// What portsentry.toml decides, derived: the part of the settings the client commands
/// share with the daemon (same socket, table, state file).
#[derive(Debug, Clone)]
pub struct NativeSettings {
    /// `[firewall]`: backend, fast path, our table, NFLOG group, priority, set size.
    pub firewall: FirewallSettings,
    /// `[bans]`, `[bans.unverified]`, `[bans.manual]`: the ban policy of each evidence
    /// class.
    pub ban_policies: BanPolicies,
    /// `[protect]`: whether this host's addresses, gateways and resolvers are protected,
    /// where the resolvers are read from, and extra networks.
    pub protect: ProtectSettings,
    /// `[state] file`.
    pub state_file: PathBuf,
    /// `[control] socket`.
    pub control_socket: PathBuf,
    /// Where these came from: the file, or "built-in defaults".
    pub source: String,
}

#[derive(Debug)]
pub struct Settings {
    pub tcp: Option<ModeSettings>,
    pub udp: Option<ModeSettings>,
    pub ignore: IgnoreSet,
    pub ignore_file: Option<PathBuf>,
    pub engine: EngineConfig,
    pub history_file: PathBuf,
    pub resolve_host: bool,
    /// Where the configuration came from, for the startup log.
    pub config_source: String,
    /// `[firewall]` of portsentry.toml.
    pub firewall: FirewallSettings,
    /// `[bans]` of portsentry.toml (and its per-class tables), as the engine's policies.
    pub ban_policies: BanPolicies,
    /// `[protect]` of portsentry.toml.
    pub protect: ProtectSettings,
    /// `[state] file`: bans and offence counts across restarts.
    pub state_file: PathBuf,
    /// `[control] socket`: where `portsentry ban/unban/status` reach the daemon.
    pub control_socket: PathBuf,
    /// Where the TOML settings came from ("built-in defaults" when no file).
    pub toml_source: String,
    /// Lines to log at startup (warnings about the config, mode substitutions).
    pub notices: Vec<String>,
    /// PortSentry 2.x's log lines (`Scan from: [...]`) and history format, for a 2.x
    /// command line (its fail2ban filter matches only those).
    pub log_2x: bool,
}

impl Settings {
    /// Highest port any mode watches, for the kernel filter.
    pub fn max_watched_port(&self) -> u16 {
        [&self.tcp, &self.udp]
            .into_iter()
            .flatten()
            .map(|m| m.watch.max_port())
            .max()
            .unwrap_or(0)
    }

    /// Human-readable summary of the effective settings (for `--check-config`).
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for mode in [&self.tcp, &self.udp].into_iter().flatten() {
            let watch = match &mode.watch {
                Watch::Listed(ports) => format!("ports {ports}"),
                Watch::Advanced { below, exclude } if exclude.is_empty() => {
                    format!("ports below {below}")
                }
                Watch::Advanced { below, exclude } => {
                    format!("ports below {below} except {exclude}")
                }
            };
            let block = match mode.plan.block {
                BlockMode::LogOnly => "log only",
                BlockMode::Block => "block",
                BlockMode::RunCmdOnly => "run KILL_RUN_CMD only",
            };
            lines.push(format!(
                "mode {}: {watch}, {block}, blocked file {}",
                mode.name,
                mode.blocked_file.display()
            ));
        }
        lines.push(format!("history file: {}", self.history_file.display()));
        lines.push(format!(
            "ignore list: {} entries{}",
            self.ignore.len(),
            self.ignore_file
                .as_ref()
                .map(|p| format!(" from {}", p.display()))
                .unwrap_or_default()
        ));
        lines.push(format!("scan trigger: {}", self.engine.scan_trigger));
        let fw = &self.firewall;
        lines.push(format!(
            "firewall: backend {:?}, fast path {}, table inet {}, NFLOG group {} (settings: {})",
            fw.backend,
            if fw.fast_path { "on" } else { "off" },
            fw.table,
            fw.nflog_group,
            self.toml_source
        ));
        let b = &self.ban_policies.verified;
        lines.push(format!(
            "bans: {} first, x{} per repeat offence up to {}{}, state file {}",
            humantime::format_duration(b.ban_time),
            b.escalation_factor,
            humantime::format_duration(b.max_ban_time),
            match b.permanent_after {
                Some(n) => format!(", permanent from offence {n}"),
                None => String::new(),
            },
            self.state_file.display()
        ));
        let u = &self.ban_policies.unverified;
        lines.push(if u.ban {
            format!(
                "unverified bans (single packets): {} first, x{} per offence at least {} apart, up to {}",
                humantime::format_duration(u.ban_time),
                u.escalation_factor,
                humantime::format_duration(u.offence_gap),
                humantime::format_duration(u.max_ban_time),
            )
        } else {
            "unverified bans (single packets): none, alert only".to_string()
        });
        lines
    }

    pub fn mode(&self, proto: Proto) -> Option<&ModeSettings> {
        match proto {
            Proto::Tcp => self.tcp.as_ref(),
            Proto::Udp => self.udp.as_ref(),
        }
    }
}

/// Build the settings from the command line: read every source, then validate.
pub fn from_cli(cli: &Cli) -> Result<Settings> {
    validate(&sources::read(cli))
}

/// The portsentry.toml settings alone, for the client commands: they must work
/// whatever state the legacy configuration is in, so it is not read.
pub fn native_from_cli(cli: &Cli) -> Result<NativeSettings> {
    validate::native_settings(&sources::read_toml(cli))
}
