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
pub use crate::config::{Backend, FirewallSettings, ListenSettings, ModeKind, ProtectSettings};
use portsentry_engine::ports::PortSet;
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

impl ResponsePlan {
    /// Whether the mode is a classic one (`tcp`, `udp`: bound sockets), whose lines
    /// keep 1.2's classic wording.
    pub fn classic(&self) -> bool {
        matches!(self.mode.as_str(), "tcp" | "udp")
    }
}

/// One protocol's detection mode.
#[derive(Debug, Clone)]
pub struct ModeSettings {
    /// 1.2 name of the mode: "tcp", "stcp", "atcp", "udp", "sudp", "audp".
    pub name: &'static str,
    /// Classic (bound sockets: a connect or a datagram is a hit), stealth or advanced.
    pub kind: ModeKind,
    pub proto: Proto,
    pub watch: Watch,
    pub plan: ResponsePlan,
    /// Blocked-file path for this mode (BLOCKED_FILE + "." + mode).
    pub blocked_file: PathBuf,
}

/// What the listener probe source binds: the classic modes' ports and the handshake
/// trap ports, and what it answers.
#[derive(Debug, Clone, Default)]
pub struct ListenPlan {
    /// TCP ports to listen and accept on: TCP_PORTS in `-tcp`, plus `[listen]
    /// handshake_ports` whenever a TCP mode runs.
    pub tcp: PortSet,
    /// UDP ports to bind: UDP_PORTS in `-udp`.
    pub udp: PortSet,
    /// The ports of `tcp` that are handshake traps (of a stealth or advanced mode).
    pub handshake: PortSet,
    /// PORT_BANNER (at most `defaults::PORT_BANNER_MAX_BYTES`), written to every
    /// accepted connection before it is closed.
    pub banner: Option<String>,
    /// `[listen] udp_banner`: PORT_BANNER also answers datagrams of `-udp`.
    pub udp_banner: bool,
}

impl ListenPlan {
    pub fn is_empty(&self) -> bool {
        self.tcp.is_empty() && self.udp.is_empty()
    }
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
    /// `[listen]`: handshake trap ports, UDP banner opt-in.
    pub listen: ListenSettings,
    /// `[fleet]`: sharing bans through a Redis stream (off unless `url` is set).
    pub fleet: crate::config::FleetSettings,
    /// `[metrics] listen`: where the Prometheus endpoint is served (None: off).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `[logging] format`: the stderr format.
    pub log_format: crate::logger::LogFormat,
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
    /// Sockets the daemon binds: classic modes and handshake traps.
    pub listen: ListenPlan,
    /// PortSentry 2.x's log lines (`Scan from: [...]`) and history format, for a 2.x
    /// command line (its fail2ban filter matches only those).
    pub log_2x: bool,
    /// Interfaces whose probes are trapped (2.x's `-i`); empty: every one but loopback.
    pub interfaces: Vec<String>,
    /// `[fleet]` of portsentry.toml.
    pub fleet: crate::config::FleetSettings,
    /// `[metrics] listen`: where the Prometheus endpoint is served (None: off).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `[logging] format`: the stderr format.
    pub log_format: crate::logger::LogFormat,
}

impl Settings {
    /// Highest port any mode watches through packets (not the classic modes, whose
    /// sockets see their own hits), for the kernel filter.
    pub fn max_watched_port(&self) -> u16 {
        self.packet_modes()
            .map(|m| m.watch.max_port())
            .max()
            .unwrap_or(0)
    }

    /// Human-readable summary of the effective settings (for `--check-config`).
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for mode in [&self.tcp, &self.udp].into_iter().flatten() {
            let watch = match &mode.watch {
                Watch::Listed(ports) if mode.kind == ModeKind::Classic => {
                    format!("listening on ports {ports}")
                }
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
        if !self.listen.handshake.is_empty() {
            lines.push(format!(
                "handshake trap ports (listening, verified evidence): {}",
                self.listen.handshake
            ));
        }
        if let Some(banner) = &self.listen.banner {
            lines.push(format!(
                "PORT_BANNER ({} bytes) sent to {}",
                banner.len(),
                match (
                    self.listen.tcp.is_empty(),
                    self.listen.udp.is_empty() || !self.listen.udp_banner
                ) {
                    (true, true) => "nothing (no port accepts connections)",
                    (false, true) => "accepted TCP connections",
                    (true, false) => "UDP datagrams",
                    (false, false) => "accepted TCP connections and UDP datagrams",
                }
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
        let f = &self.fleet;
        if let Some(url) = &f.url {
            lines.push(format!(
                "fleet: {url}, stream {}, node {}, k of n with k = {} within {}, received bans at most {}, {} a second (burst {}) per origin, trimmed after {}",
                f.stream,
                f.node.as_deref().unwrap_or("(the host name)"),
                f.quorum,
                humantime::format_duration(f.quorum_window),
                humantime::format_duration(f.max_ban_time),
                f.rate,
                f.burst,
                humantime::format_duration(f.trim_after),
            ));
        }
        lines.push(match self.metrics_listen {
            Some(addr) => format!("metrics: GET /metrics on {addr}"),
            None => "metrics: off ([metrics] listen)".to_string(),
        });
        lines.push(format!(
            "stderr log format: {}",
            match self.log_format {
                crate::logger::LogFormat::Text => "text",
                crate::logger::LogFormat::Json => "json",
            }
        ));
        lines
    }

    /// The modes that read probes from packets (NFLOG or the packet socket): all but
    /// the classic ones.
    pub fn packet_modes(&self) -> impl Iterator<Item = &ModeSettings> {
        [&self.tcp, &self.udp]
            .into_iter()
            .flatten()
            .filter(|m| m.kind != ModeKind::Classic)
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
