//! The one pure step from [`Sources`] to [`Settings`]: parse each text with its
//! `config::parse_*` function, merge (flags over Debian's mode file over the built-in
//! modes; the legacy config or the embedded defaults; portsentry.toml or its defaults)
//! and derive everything the daemon reads. No file system access: the tests drive it
//! from string literals.
//!
//! The first problem stops validation, in a fixed order: the legacy config, Debian's
//! mode file, portsentry.toml, the port lists the modes need, the ignore file. Each
//! parser reports every problem of its own file with file:line.

use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use portsentry_engine::Proto;
use portsentry_engine::engine::EngineConfig;
use portsentry_engine::ignore::IgnoreSet;
use portsentry_engine::ports::Watch;

use super::sources::{Content, FileText, Flags, Sources, TomlSource};
use super::{ListenPlan, ModeSettings, NativeSettings, ResponsePlan, Settings};
use crate::config::{self, BlockMode, LegacyConfig, ModeKind, TomlSettings};
use crate::defaults;

/// Without a mode flag or a Debian mode file: advanced stealth TCP and UDP, which watch
/// every unused port below 1024 and need no port list.
const DEFAULT_TCP_MODE: ModeKind = ModeKind::Advanced;
const DEFAULT_UDP_MODE: ModeKind = ModeKind::Advanced;

/// Where the legacy values came from, for the startup log and the messages.
const EMBEDDED_SOURCE: &str = "built-in defaults (no config file)";
const TOML_DEFAULTS_SOURCE: &str = "built-in defaults";

/// Validate every source and derive the settings; see the module doc.
pub fn validate(sources: &Sources) -> Result<Settings> {
    if let Some(bad) = sources
        .flags
        .interfaces
        .iter()
        .find(|i| !portsentry_kernel::nft::valid_interface_name(i))
    {
        bail!("-i {bad:?}: not an interface name (1 to 15 letters, digits, '.', '_' or '-')");
    }
    let mut notices = Vec::new();
    let (legacy, config_source) = legacy_config(sources, &mut notices)?;
    let config_2x = config_in_2x_style(sources.config.as_ref());
    let (tcp_kind, udp_kind, run_as_2x) = select_modes(
        &sources.flags,
        sources.debian_defaults.as_ref(),
        config_2x,
        &mut notices,
    )?;
    let native = native_settings(&sources.toml)?;

    let hosts_deny_file = sources
        .flags
        .hosts_deny
        .clone()
        .or_else(|| legacy.hosts_deny_file.clone())
        .unwrap_or_else(|| PathBuf::from(defaults::HOSTS_DENY_FILE));
    let blocked_base = legacy
        .blocked_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(defaults::BLOCKED_FILE));
    let history_file = legacy
        .history_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(defaults::HISTORY_FILE));
    let mode = |proto, kind| {
        mode_settings(
            proto,
            kind,
            &legacy,
            &config_source,
            &hosts_deny_file,
            &blocked_base,
        )
    };
    let tcp = tcp_kind.map(|k| mode(Proto::Tcp, k)).transpose()?;
    let udp = udp_kind.map(|k| mode(Proto::Udp, k)).transpose()?;

    let (ignore, ignore_file) = ignore_list(
        legacy.ignore_file.as_deref(),
        sources.config.is_some(),
        &sources.ignore_files,
        &mut notices,
    )?;

    let listen = listen_plan(
        tcp.as_ref(),
        udp.as_ref(),
        &native,
        legacy.port_banner.as_deref(),
        &mut notices,
    )?;

    // Debian's init script runs `-tcp` and `-udp` as two processes: the UDP-only one
    // takes names of its own (settings::instance).
    let native = if tcp.is_none() && udp.is_some() {
        super::instance::udp_instance(&native)
    } else {
        native
    };
    let NativeSettings {
        firewall,
        ban_policies,
        protect,
        state_file,
        control_socket,
        listen: _,
        fleet,
        metrics_listen,
        log_format,
        source: toml_source,
    } = native;
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
        log_2x: sources.flags.style_2x || run_as_2x,
        interfaces: sources.flags.interfaces.clone(),
        config_source,
        firewall,
        ban_policies,
        protect,
        state_file,
        control_socket,
        toml_source,
        notices,
        listen,
        fleet,
        metrics_listen,
        log_format,
    })
}

/// What the listener source binds and answers: TCP_PORTS in `-tcp` and UDP_PORTS in
/// `-udp` (ranges, no 64-port cap), `[listen] handshake_ports` beside any TCP mode, and
/// PORT_BANNER. Notices say where PORT_BANNER or the handshake ports do not apply.
fn listen_plan(
    tcp: Option<&ModeSettings>,
    udp: Option<&ModeSettings>,
    native: &NativeSettings,
    banner: Option<&str>,
    notices: &mut Vec<String>,
) -> Result<ListenPlan> {
    let classic_ports = |mode: Option<&ModeSettings>| match mode {
        Some(ModeSettings {
            kind: ModeKind::Classic,
            watch: Watch::Listed(ports),
            ..
        }) => ports.clone(),
        _ => portsentry_engine::ports::PortSet::new(),
    };
    let mut plan = ListenPlan {
        tcp: classic_ports(tcp),
        udp: classic_ports(udp),
        udp_banner: native.listen.udp_banner,
        ..ListenPlan::default()
    };
    let handshake = native
        .listen
        .handshake_set()
        .map_err(|e| anyhow!("{}: {e}", native.source))?;
    if !handshake.is_empty() {
        if tcp.is_some() {
            for port in handshake.iter() {
                if !plan.tcp.contains(port) {
                    plan.handshake.insert(port);
                    plan.tcp.insert(port);
                }
            }
        } else {
            notices.push(format!(
                "adminalert: WARNING: [listen] handshake_ports ({handshake}) are not opened: no TCP mode runs in this process"
            ));
        }
    }
    if let Some(text) = banner {
        let mut end = text.len().min(defaults::PORT_BANNER_MAX_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        if end < text.len() {
            notices.push(format!(
                "adminalert: WARNING: PORT_BANNER is longer than {} bytes; only its first {end} bytes are sent, as PortSentry 1.2 did",
                defaults::PORT_BANNER_MAX_BYTES
            ));
        }
        plan.banner = Some(text[..end].to_string());
        if plan.tcp.is_empty() && plan.udp.is_empty() {
            notices.push(
                "adminalert: PORT_BANNER is set but only applies to ports that accept connections (the classic -tcp/-udp modes and [listen] handshake_ports); it is not sent".to_string(),
            );
        } else if !plan.udp.is_empty() && !plan.udp_banner {
            notices.push(
                "adminalert: PORT_BANNER is not sent in reply to UDP datagrams: a UDP source address can be forged, so the reply could go to a victim (set [listen] udp_banner = true to send it, as PortSentry 1.2 did)".to_string(),
            );
        }
    }
    Ok(plan)
}

/// The values of portsentry.toml (or its defaults), derived: what the daemon and the
/// client commands share. `--settings FILE` must exist; the default file may not.
pub fn native_settings(toml: &TomlSource) -> Result<NativeSettings> {
    let file = &toml.file;
    let (t, source) = match &file.content {
        Content::Text(text) => (
            config::parse_toml_settings(text, &file.path)?,
            file.path.display().to_string(),
        ),
        Content::Absent(_) if toml.explicit => {
            bail!("settings file {} does not exist", file.path.display())
        }
        Content::Absent(_) => (TomlSettings::default(), TOML_DEFAULTS_SOURCE.to_string()),
        Content::Unreadable(e) => {
            return Err(copy(e)).with_context(|| format!("cannot read {}", file.path.display()));
        }
    };
    Ok(NativeSettings {
        ban_policies: t.bans.policies(),
        firewall: t.firewall,
        protect: t.protect,
        state_file: t.state.file,
        control_socket: t.control.socket,
        listen: t.listen,
        fleet: t.fleet,
        metrics_listen: t.metrics.address().map_err(|m| anyhow::anyhow!(m))?,
        log_format: t.logging.format,
        source,
    })
}

/// The legacy config from its file, or the embedded defaults; its warnings become
/// notices.
fn legacy_config(sources: &Sources, notices: &mut Vec<String>) -> Result<(LegacyConfig, String)> {
    let Some(file) = &sources.config else {
        return Ok((
            embedded_defaults(&sources.ignore_files),
            EMBEDDED_SOURCE.to_string(),
        ));
    };
    let text = match &file.content {
        Content::Text(text) => text,
        Content::Absent(e) | Content::Unreadable(e) => {
            return Err(copy(e))
                .with_context(|| format!("cannot read config file {}", file.path.display()));
        }
    };
    let (result, warnings) = config::parse_legacy(text, &file.path);
    let legacy = result.map_err(|errors| anyhow!(config::join(&errors)))?;
    notices.extend(warnings.iter().map(|w| format!("adminalert: WARNING: {w}")));
    Ok((legacy, file.path.display().to_string()))
}

/// The no-config defaults: 1.2's built-in fallbacks, Debian's file locations, the
/// Debian ignore file when it exists, and blocking on (through the native ban when
/// available; no KILL_* command is set).
fn embedded_defaults(ignore_files: &[FileText]) -> LegacyConfig {
    let debian_ignore = Path::new(defaults::IGNORE_FILE);
    let has_ignore = find(ignore_files, debian_ignore).is_some_and(|f| !f.is_absent());
    LegacyConfig {
        block_tcp: BlockMode::Block,
        block_udp: BlockMode::Block,
        advanced_exclude_tcp: defaults::advanced_exclude_tcp(),
        advanced_exclude_udp: defaults::advanced_exclude_udp(),
        history_file: Some(PathBuf::from(defaults::HISTORY_FILE)),
        blocked_file: Some(PathBuf::from(defaults::BLOCKED_FILE)),
        ignore_file: has_ignore.then(|| debian_ignore.to_path_buf()),
        ..LegacyConfig::default()
    }
}

/// Modes from the flags; without flags, from Debian's mode file; else the built-in
/// modes.
/// A config only PortSentry 2.x would have written: no 1.2 ADVANCED_* key (2.x refuses
/// them) and a port range in TCP_PORTS or UDP_PORTS (1.2 read `512-515` as 512).
/// Returns the line of the first range.
pub fn config_in_2x_style(config: Option<&FileText>) -> Option<usize> {
    let text = config?.as_text()?;
    let lines = || {
        text.lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_start()))
            .filter(|(_, l)| !l.starts_with('#'))
    };
    if lines().any(|(_, l)| l.starts_with("ADVANCED_")) {
        return None;
    }
    lines()
        .filter(|(_, l)| l.starts_with("TCP_PORTS") || l.starts_with("UDP_PORTS"))
        .find(|(_, l)| {
            let b = l.as_bytes();
            b.windows(3)
                .any(|w| w[0].is_ascii_digit() && w[1] == b'-' && w[2].is_ascii_digit())
        })
        .map(|(n, _)| n)
}

/// The modes, and whether they are PortSentry 2.x's default for a 2.x-style config
/// started without a mode (stealth TCP and UDP, 2.x's log lines).
fn select_modes(
    flags: &Flags,
    debian: Option<&FileText>,
    config_2x: Option<usize>,
    notices: &mut Vec<String>,
) -> Result<(Option<ModeKind>, Option<ModeKind>, bool)> {
    let builtin = || match config_2x {
        Some(_) => (Some(ModeKind::Stealth), Some(ModeKind::Stealth)),
        None => (Some(DEFAULT_TCP_MODE), Some(DEFAULT_UDP_MODE)),
    };
    let mut as_2x = false;
    let (tcp, udp) = match debian {
        _ if flags.has_mode() => (flags.tcp, flags.udp),
        None => {
            as_2x = config_2x.is_some();
            builtin()
        }
        Some(file) => match &file.content {
            Content::Absent(_) => {
                as_2x = config_2x.is_some();
                builtin()
            }
            Content::Unreadable(e) => {
                return Err(copy(e))
                    .with_context(|| format!("cannot read {}", file.path.display()));
            }
            Content::Text(text) => {
                let (result, warnings) = config::parse_debian_defaults(text, &file.path);
                let d = result.map_err(|errors| anyhow!(config::join(&errors)))?;
                notices.extend(warnings.iter().map(|w| format!("adminalert: WARNING: {w}")));
                if d.tcp_mode.is_some() || d.udp_mode.is_some() {
                    notices.push(format!(
                        "adminalert: modes taken from {}",
                        file.path.display()
                    ));
                    (d.tcp_mode, d.udp_mode)
                } else {
                    as_2x = config_2x.is_some();
                    builtin()
                }
            }
        },
    };
    if let Some(line) = config_2x.filter(|_| as_2x) {
        notices.push(format!(
            "adminalert: the configuration is in PortSentry 2.x's style (a port range at line {line}, no ADVANCED_* key) and no mode was given: running as 2.x does (--stealth: stealth TCP and UDP, 2.x's log lines); give a mode flag for 1.2's behaviour"
        ));
    }
    Ok((tcp, udp, as_2x))
}

/// One protocol's mode, the same way for TCP and UDP.
fn mode_settings(
    proto: Proto,
    kind: ModeKind,
    legacy: &LegacyConfig,
    config_source: &str,
    hosts_deny_file: &Path,
    blocked_base: &Path,
) -> Result<ModeSettings> {
    let (ports_key, listed, below, exclude, block) = match proto {
        Proto::Tcp => (
            "TCP_PORTS",
            &legacy.tcp_ports,
            legacy.advanced_ports_tcp,
            &legacy.advanced_exclude_tcp,
            legacy.block_tcp,
        ),
        Proto::Udp => (
            "UDP_PORTS",
            &legacy.udp_ports,
            legacy.advanced_ports_udp,
            &legacy.advanced_exclude_udp,
            legacy.block_udp,
        ),
    };
    let watch = match kind {
        ModeKind::Classic | ModeKind::Stealth => match listed {
            Some(ports) => Watch::Listed(ports.clone()),
            None => bail!(
                "{config_source}: {ports_key} is required for -{}",
                kind.flag(proto)
            ),
        },
        ModeKind::Advanced => Watch::Advanced {
            below,
            exclude: exclude.clone(),
        },
    };
    let name = kind.flag(proto);
    let mut blocked_file = blocked_base.to_path_buf().into_os_string();
    blocked_file.push(format!(".{name}"));
    Ok(ModeSettings {
        name,
        kind,
        proto,
        watch,
        plan: ResponsePlan {
            mode: name.to_string(),
            block,
            kill_route: legacy.kill_route.clone(),
            kill_hosts_deny: legacy.kill_hosts_deny.clone(),
            kill_run_cmd: legacy.kill_run_cmd.clone(),
            kill_run_cmd_first: legacy.kill_run_cmd_first,
            hosts_deny_file: hosts_deny_file.to_path_buf(),
        },
        blocked_file: blocked_file.into(),
    })
}

/// The ignore list and the file it came from. Debian generates portsentry.ignore from
/// portsentry.ignore.static plus the host's own addresses (which our protected set
/// covers) in its init script; without that step the static part is read rather than
/// refusing to start. Without IGNORE_FILE only the loopback ranges are ignored.
fn ignore_list(
    named: Option<&Path>,
    from_config_file: bool,
    files: &[FileText],
    notices: &mut Vec<String>,
) -> Result<(IgnoreSet, Option<PathBuf>)> {
    let Some(named) = named else {
        if from_config_file {
            notices.push(format!(
                "adminalert: WARNING: IGNORE_FILE is not set; only the loopback range is ignored (set it to {} to whitelist hosts)",
                defaults::IGNORE_FILE
            ));
        }
        return Ok((loopback_ignore(), None));
    };
    let absent = |p: &Path| find(files, p).is_none_or(FileText::is_absent);
    let static_path = defaults::ignore_static(named);
    let path = if absent(named) && !absent(&static_path) {
        notices.push(format!(
            "adminalert: {} does not exist; using {} (this host's own addresses are protected anyway)",
            named.display(),
            static_path.display()
        ));
        static_path
    } else {
        named.to_path_buf()
    };
    let set = match find(files, &path).map(|f| &f.content) {
        Some(Content::Text(text)) => {
            let (result, warnings) = config::parse_ignore(text, &path);
            notices.extend(warnings.iter().map(|w| format!("adminalert: WARNING: {w}")));
            result.map_err(|d| anyhow!(config::join(&d)))
        }
        Some(Content::Absent(e) | Content::Unreadable(e)) => {
            Err(copy(e)).with_context(|| format!("cannot read ignore file {}", path.display()))
        }
        None => Err(io::Error::from_raw_os_error(libc::ENOENT))
            .with_context(|| format!("cannot read ignore file {}", path.display())),
    }
    .with_context(|| format!("IGNORE_FILE {}", path.display()))?;
    Ok((set, Some(path)))
}

fn loopback_ignore() -> IgnoreSet {
    let mut set = IgnoreSet::new();
    for net in defaults::LOOPBACK_IGNORE {
        set.insert(net.parse().expect("valid network"));
    }
    set
}

fn find<'a>(files: &'a [FileText], path: &Path) -> Option<&'a FileText> {
    files.iter().find(|f| f.path == path)
}

/// An owned copy of a read error, with the same kind and message, for the error chain
/// (the original stays in the `Sources`).
fn copy(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}
