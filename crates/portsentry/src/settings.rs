//! Everything the daemon needs to run, merged from the command line, the legacy
//! `portsentry.conf`, Debian's `/etc/default/portsentry`, and the embedded defaults, and
//! validated before anything starts. A bad value stops startup with file:line; nothing
//! here guesses.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use portsentry_engine::Proto;
use portsentry_engine::engine::EngineConfig;
use portsentry_engine::ignore::IgnoreSet;
use portsentry_engine::ports::{PortSet, Watch};

use crate::cli::{Cli, DEFAULT_CONFIG};
use crate::config::{self, BlockMode, LegacyConfig, TcpMode, TomlSettings, UdpMode};
use crate::daemon::respond::ResponsePlan;

/// Embedded defaults used when no config file exists (the quick start): advanced
/// stealth TCP and UDP, blocking through the native ban, records under Debian's paths.
pub const DEFAULT_HISTORY_FILE: &str = "/var/lib/portsentry/portsentry.history";
pub const DEFAULT_BLOCKED_FILE: &str = "/var/lib/portsentry/portsentry.blocked";
pub const DEFAULT_IGNORE_FILE: &str = "/etc/portsentry/portsentry.ignore";
pub const DEFAULT_HOSTS_DENY: &str = "/etc/hosts.deny";

/// One protocol's detection mode.
#[derive(Debug, Clone)]
pub struct ModeSettings {
    /// 1.2 mode name: "stcp", "atcp", "sudp", "audp".
    pub name: &'static str,
    pub proto: Proto,
    pub watch: Watch,
    pub plan: ResponsePlan,
    /// Blocked-file path for this mode (BLOCKED_FILE + "." + mode).
    pub blocked_file: PathBuf,
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
    /// portsentry.toml: firewall backend, ban lifecycle, protected set, state file.
    pub toml: TomlSettings,
    /// Where the TOML settings came from ("built-in defaults" when no file).
    pub toml_source: String,
    /// Lines to log at startup (warnings about the config, mode substitutions).
    pub notices: Vec<String>,
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
                crate::config::BlockMode::LogOnly => "log only",
                crate::config::BlockMode::Block => "block",
                crate::config::BlockMode::RunCmdOnly => "run KILL_RUN_CMD only",
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
        let fw = &self.toml.firewall;
        lines.push(format!(
            "firewall: backend {:?}, fast path {}, table inet {}, NFLOG group {} (settings: {})",
            fw.backend,
            if fw.fast_path { "on" } else { "off" },
            fw.table,
            fw.nflog_group,
            self.toml_source
        ));
        let b = &self.toml.bans;
        lines.push(format!(
            "bans: {} first, x{} per repeat offence up to {}{}, state file {}",
            humantime::format_duration(b.time),
            b.escalation,
            humantime::format_duration(b.max_time),
            if b.permanent_after > 0 {
                format!(", permanent from offence {}", b.permanent_after)
            } else {
                String::new()
            },
            self.toml.state.file.display()
        ));
        lines
    }

    /// The ban lifecycle policy from the `[bans]` settings.
    pub fn ban_policy(&self) -> portsentry_engine::bans::BanPolicy {
        let b = &self.toml.bans;
        portsentry_engine::bans::BanPolicy {
            ban_time: b.time,
            escalation_factor: b.escalation,
            max_ban_time: b.max_time,
            permanent_after: (b.permanent_after > 0).then_some(b.permanent_after),
            group_v4: b.group_v4,
            group_v6: b.group_v6,
            forget_offences_after: b.forget_offences_after,
        }
    }

    pub fn mode(&self, proto: Proto) -> Option<&ModeSettings> {
        match proto {
            Proto::Tcp => self.tcp.as_ref(),
            Proto::Udp => self.udp.as_ref(),
        }
    }
}

/// Build the settings from the command line.
pub fn from_cli(cli: &Cli) -> Result<Settings> {
    let mut notices = Vec::new();

    let (legacy, config_source) = match &cli.config {
        Some(path) => (load_config(path, &mut notices)?, path.display().to_string()),
        None if Path::new(DEFAULT_CONFIG).exists() => (
            load_config(Path::new(DEFAULT_CONFIG), &mut notices)?,
            DEFAULT_CONFIG.to_string(),
        ),
        None => (
            embedded_defaults(),
            "built-in defaults (no config file)".to_string(),
        ),
    };

    let (tcp_mode, udp_mode) = select_modes(cli, &mut notices)?;

    let (toml, toml_source) = load_toml(cli)?;

    let hosts_deny_file = cli
        .hosts_deny
        .clone()
        .or_else(|| legacy.hosts_deny_file.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_HOSTS_DENY));
    let blocked_base = legacy
        .blocked_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BLOCKED_FILE));
    let history_file = legacy
        .history_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_HISTORY_FILE));

    let plan = |mode: &str, block: BlockMode| ResponsePlan {
        mode: mode.to_string(),
        block,
        kill_route: legacy.kill_route.clone(),
        kill_hosts_deny: legacy.kill_hosts_deny.clone(),
        kill_run_cmd: legacy.kill_run_cmd.clone(),
        kill_run_cmd_first: legacy.kill_run_cmd_first,
        hosts_deny_file: hosts_deny_file.clone(),
    };
    let blocked_for = |mode: &str| {
        let mut p = blocked_base.clone().into_os_string();
        p.push(format!(".{mode}"));
        PathBuf::from(p)
    };

    let tcp = match tcp_mode {
        None => None,
        Some(mode) => {
            let (name, watch) = match mode {
                TcpMode::Classic | TcpMode::Stealth => {
                    let Some(ports) = legacy.tcp_ports.clone() else {
                        bail!(
                            "{config_source}: TCP_PORTS is required for -{}",
                            mode.flag()
                        );
                    };
                    ("stcp", Watch::Listed(ports))
                }
                TcpMode::Advanced => (
                    "atcp",
                    Watch::Advanced {
                        below: legacy.advanced_ports_tcp,
                        exclude: legacy.advanced_exclude_tcp.clone(),
                    },
                ),
            };
            Some(ModeSettings {
                name,
                proto: Proto::Tcp,
                watch,
                plan: plan(name, legacy.block_tcp),
                blocked_file: blocked_for(name),
            })
        }
    };
    let udp = match udp_mode {
        None => None,
        Some(mode) => {
            let (name, watch) = match mode {
                UdpMode::Classic | UdpMode::Stealth => {
                    let Some(ports) = legacy.udp_ports.clone() else {
                        bail!(
                            "{config_source}: UDP_PORTS is required for -{}",
                            mode.flag()
                        );
                    };
                    ("sudp", Watch::Listed(ports))
                }
                UdpMode::Advanced => (
                    "audp",
                    Watch::Advanced {
                        below: legacy.advanced_ports_udp,
                        exclude: legacy.advanced_exclude_udp.clone(),
                    },
                ),
            };
            Some(ModeSettings {
                name,
                proto: Proto::Udp,
                watch,
                plan: plan(name, legacy.block_udp),
                blocked_file: blocked_for(name),
            })
        }
    };

    let (ignore, ignore_file) = match &legacy.ignore_file {
        Some(path) => {
            // Debian generates portsentry.ignore from portsentry.ignore.static plus the
            // host's own addresses (which our protected set covers) in its init script;
            // without that step, read the static part rather than refuse to start.
            let mut static_path = path.clone().into_os_string();
            static_path.push(".static");
            let static_path = PathBuf::from(static_path);
            let path = if !path.exists() && static_path.exists() {
                notices.push(format!(
                    "adminalert: {} does not exist; using {} (this host's own addresses are protected anyway)",
                    path.display(),
                    static_path.display()
                ));
                static_path
            } else {
                path.clone()
            };
            (
                config::load_ignore(&path)
                    .with_context(|| format!("IGNORE_FILE {}", path.display()))?,
                Some(path),
            )
        }
        None => {
            if cli.config.is_some() || Path::new(DEFAULT_CONFIG).exists() {
                notices.push(format!(
                    "adminalert: WARNING: IGNORE_FILE is not set; only the loopback range is ignored (set it to {DEFAULT_IGNORE_FILE} to whitelist hosts)"
                ));
            }
            (loopback_ignore(), None)
        }
    };

    if legacy.port_banner.is_some() {
        notices.push(
            "adminalert: PORT_BANNER is set but only applies to the classic connect modes, which this version runs as stealth modes; it is not sent".to_string(),
        );
    }

    Ok(Settings {
        tcp,
        udp,
        ignore,
        ignore_file,
        engine: EngineConfig {
            scan_trigger: legacy.scan_trigger,
            ..EngineConfig::default()
        },
        history_file,
        resolve_host: legacy.resolve_host,
        config_source,
        toml,
        toml_source,
        notices,
    })
}

/// The TOML settings alone (for the client commands).
pub fn toml_from_cli(cli: &Cli) -> Result<TomlSettings> {
    Ok(load_toml(cli)?.0)
}

/// `--settings FILE` (must exist), else the default file when it exists, else the
/// built-in defaults; with where they came from.
fn load_toml(cli: &Cli) -> Result<(TomlSettings, String)> {
    let toml_path = cli
        .settings
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_SETTINGS_FILE));
    Ok(match config::load_toml_settings(&toml_path)? {
        Some(t) => (t, toml_path.display().to_string()),
        None if cli.settings.is_some() => {
            bail!("settings file {} does not exist", toml_path.display())
        }
        None => (TomlSettings::default(), "built-in defaults".to_string()),
    })
}

fn load_config(path: &Path, notices: &mut Vec<String>) -> Result<LegacyConfig> {
    let (legacy, warnings) = config::load_legacy(path)?;
    notices.extend(warnings.iter().map(|w| format!("adminalert: WARNING: {w}")));
    Ok(legacy)
}

/// The no-config defaults: 1.2's built-in fallbacks, Debian's file locations, the
/// Debian ignore file when it exists, and blocking on (through the native nftables ban
/// when available; no KILL_* command is set).
fn embedded_defaults() -> LegacyConfig {
    LegacyConfig {
        block_tcp: BlockMode::Block,
        block_udp: BlockMode::Block,
        // As the upstream and Debian configs ship: ident and NetBIOS for TCP; RIP,
        // NetBIOS and DHCP for UDP, whose broadcasts and replies are not scans.
        advanced_exclude_tcp: PortSet::parse_list("113,139").expect("valid port list"),
        advanced_exclude_udp: PortSet::parse_list("520,138,137,67").expect("valid port list"),
        history_file: Some(PathBuf::from(DEFAULT_HISTORY_FILE)),
        blocked_file: Some(PathBuf::from(DEFAULT_BLOCKED_FILE)),
        ignore_file: Path::new(DEFAULT_IGNORE_FILE)
            .exists()
            .then(|| PathBuf::from(DEFAULT_IGNORE_FILE)),
        ..LegacyConfig::default()
    }
}

fn loopback_ignore() -> IgnoreSet {
    let mut set = IgnoreSet::new();
    set.insert("127.0.0.0/8".parse().expect("valid network"));
    set.insert("::1/128".parse().expect("valid network"));
    set
}

/// Modes from the flags; without flags, from /etc/default/portsentry; else atcp+audp.
fn select_modes(
    cli: &Cli,
    notices: &mut Vec<String>,
) -> Result<(Option<TcpMode>, Option<UdpMode>)> {
    let (tcp, udp) = if cli.has_mode_flag() {
        // At most one per protocol: clap's argument groups refuse more (exit 2).
        let tcp = if cli.atcp {
            Some(TcpMode::Advanced)
        } else if cli.stcp {
            Some(TcpMode::Stealth)
        } else if cli.tcp {
            Some(TcpMode::Classic)
        } else {
            None
        };
        let udp = if cli.audp {
            Some(UdpMode::Advanced)
        } else if cli.sudp {
            Some(UdpMode::Stealth)
        } else if cli.udp {
            Some(UdpMode::Classic)
        } else {
            None
        };
        (tcp, udp)
    } else {
        match config::load_debian_defaults(&cli.defaults_file)? {
            Some(defaults) if defaults.tcp_mode.is_some() || defaults.udp_mode.is_some() => {
                notices.push(format!(
                    "adminalert: modes taken from {}",
                    cli.defaults_file.display()
                ));
                (defaults.tcp_mode, defaults.udp_mode)
            }
            _ => (Some(TcpMode::Advanced), Some(UdpMode::Advanced)),
        }
    };
    if tcp == Some(TcpMode::Classic) {
        notices.push("adminalert: classic -tcp mode runs as stealth mode -stcp on TCP_PORTS (it sees every probe to those ports, not only completed connections)".to_string());
    }
    if udp == Some(UdpMode::Classic) {
        notices.push(
            "adminalert: classic -udp mode runs as stealth mode -sudp on UDP_PORTS".to_string(),
        );
    }
    Ok((tcp, udp))
}
