//! Start-up: everything that happens once before the capture loop runs, in order —
//! where bans go (nftables or a fallback backend), the protected set, our nftables table
//! and its NFLOG group, the bans restored from the state file, and the announcements
//! 1.2 admins expect in syslog. Each step fails with the reason, before anything later
//! is installed.

use std::io;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ipnet::IpNet;
use portsentry_engine::Proto;
use portsentry_engine::ignore::IgnoreSet;
use portsentry_engine::ports::Watch;
use portsentry_kernel::backend::{self, BanBackend};
use portsentry_kernel::nflog::NflogReader;
use portsentry_kernel::nft::{self, Nft, TrapSpec};
use portsentry_kernel::sock_diag::PortUsage;

use crate::alerts;
use crate::bans::{self, BanBudget, BanLifecycle, Restored, StateFile};
use crate::config::{Backend, BlockMode, ModeKind};
use crate::defaults;
use crate::logger::Logger;
use crate::protect::{self, ProtectedSources};
use crate::settings::Settings;

/// Where bans go.
pub enum Chosen {
    Nftables,
    Fallback(Box<dyn BanBackend>),
    /// Only the legacy KILL_* commands act.
    LegacyOnly,
}

/// The nftables side, when active.
pub struct NativeFirewall {
    pub nft: Nft,
    /// What was applied, to re-apply it if someone removes our table.
    pub spec: TrapSpec,
}

/// Decide where bans go, from `[firewall] backend` and what this host has.
pub fn choose_backend(settings: &Settings, log: &Logger) -> Result<Chosen> {
    let prepared = |mut b: Box<dyn BanBackend>| -> Result<Box<dyn BanBackend>> {
        b.prepare()
            .with_context(|| format!("cannot set up the {} ban backend", b.name()))?;
        Ok(b)
    };
    match settings.firewall.backend {
        Backend::None => Ok(Chosen::LegacyOnly),
        Backend::Nftables => {
            if !Nft::available() {
                bail!(
                    "firewall.backend is \"nftables\" but nft is missing or the kernel refuses it"
                );
            }
            Ok(Chosen::Nftables)
        }
        Backend::Ipset => Ok(Chosen::Fallback(prepared(Box::new(
            backend::IpsetBackend::new(),
        ))?)),
        Backend::Iptables => Ok(Chosen::Fallback(prepared(Box::new(
            backend::IptablesBackend::new(),
        ))?)),
        Backend::Route => Ok(Chosen::Fallback(prepared(Box::new(
            backend::RouteBackend::new(backend::RouteKind::default())?,
        ))?)),
        Backend::Auto => {
            if Nft::available() {
                return Ok(Chosen::Nftables);
            }
            // Without nftables: the first fallback that can be set up.
            for candidate in backend::candidates() {
                let name = candidate.name();
                match prepared(candidate) {
                    Ok(b) => {
                        log.log(&alerts::fallback_chosen(name));
                        return Ok(Chosen::Fallback(b));
                    }
                    Err(e) => log.log(&alerts::warning(&e)),
                }
            }
            log.log(alerts::NO_BACKEND);
            Ok(Chosen::LegacyOnly)
        }
    }
}

/// What the protected set is made of, from the settings.
pub fn protect_sources(settings: &Settings) -> ProtectedSources {
    ProtectedSources {
        resolv_conf: settings.protect.resolv_conf.clone(),
        extra: settings
            .ignore
            .iter()
            .chain(settings.protect.extra.iter().copied())
            .collect(),
    }
}

/// The protected networks now: the kernel's addresses and gateways, the resolvers and
/// the ignore list (only the ignore list when `[protect] enabled = false`).
pub fn gather_protected(settings: &Settings, sources: &ProtectedSources) -> Result<Vec<IpNet>> {
    if settings.protect.enabled {
        protect::gather(sources).context("cannot read this host's addresses and routes")
    } else {
        Ok(sources.extra.clone())
    }
}

/// The protected networks as the engine's set (`Engine::set_protected`).
pub fn ignore_set(nets: &[IpNet]) -> IgnoreSet {
    let mut set = IgnoreSet::new();
    for net in nets {
        set.insert(*net);
    }
    set
}

/// The table to install: traps for the modes that run, banning in the kernel on the
/// first probe only when SCAN_TRIGGER is 0, the mode blocks and unverified evidence
/// bans at all (a first-probe ban is unverified: one packet), otherwise the daemon
/// decides and the traps only log. The set's timeout is the unverified first-offence
/// length, the length of every ban the kernel makes on its own.
pub fn trap_spec(settings: &Settings) -> TrapSpec {
    let fw = &settings.firewall;
    let unverified = &settings.ban_policies.unverified;
    let fast = fw.fast_path && settings.engine.scan_trigger == 0 && unverified.ban;
    let bans = |proto| {
        fast && settings
            .mode(proto)
            .is_some_and(|m| m.plan.block == BlockMode::Block)
    };
    // A classic mode has no traps: its ports are its own sockets' (which the traps
    // would let through anyway), and it alarms only on what they receive.
    let trapped = |mode: &Option<crate::settings::ModeSettings>| {
        mode.as_ref()
            .filter(|m| m.kind != ModeKind::Classic)
            .map(|m| m.watch.port_ranges())
    };
    TrapSpec {
        table: fw.table.clone(),
        tcp_ports: trapped(&settings.tcp),
        udp_ports: trapped(&settings.udp),
        ban_tcp: bans(Proto::Tcp),
        ban_udp: bans(Proto::Udp),
        ban_timeout: unverified.ban_time,
        nflog_group: fw.nflog_group,
        set_size: fw.set_size,
        priority: fw.priority,
        known_peer_time: (!fw.known_peer_time.is_zero()).then_some(fw.known_peer_time),
        known_peer_size: defaults::KNOWN_PEER_SET_SIZE,
        ban_budget: (fw.ban_budget > 0).then_some(nft::BanBudget {
            rate: fw.ban_budget,
            burst: fw.ban_budget_burst,
        }),
        early_drop: fw.early_drop,
        interfaces: settings.interfaces.clone(),
    }
}

/// Bind the NFLOG group. Right after a reload the previous process's binding may take a
/// moment to be released by the kernel (it is freed after an RCU grace period), so a
/// busy group is retried for up to 2 s.
fn open_nflog(group: u16) -> Result<NflogReader> {
    let mut tries = 0;
    loop {
        match NflogReader::open(group) {
            Ok(reader) => return Ok(reader),
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy && tries < 40 => {
                tries += 1;
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read NFLOG group {group}"));
            }
        }
    }
}

/// Install the table, restore bans, open the NFLOG group (`None` when no mode has
/// traps: classic modes only, whose hits come from their own sockets).
pub fn start_nftables(
    settings: &Settings,
    log: &Logger,
    protected: &[IpNet],
) -> Result<(Option<NflogReader>, BanLifecycle, NativeFirewall)> {
    let fw = &settings.firewall;
    // The group is bound before the traps exist, so no trapped packet goes unread.
    let reader = match settings.packet_modes().next() {
        Some(_) => Some(open_nflog(fw.nflog_group)?),
        None => None,
    };
    let nft = Nft::new(&fw.table)?;
    let spec = trap_spec(settings);
    // A smaller size limit applies to new bans only: the kernel keeps the elements a
    // set already holds beyond it until they expire. Say so, once.
    let sizes_before = portsentry_kernel::nft::BanSetWriter::open(&fw.table)
        .and_then(|mut w| w.read_table())
        .map(|l| l.sets)
        .unwrap_or_default();
    for set in sizes_before
        .iter()
        .filter(|s| s.name == "banned4" || s.name == "banned6")
    {
        if let Some(old) = set.size.filter(|&old| old > spec.set_size) {
            log.log(&alerts::set_size_lowered(&set.name, old, spec.set_size));
        }
    }
    let applied = nft
        .apply(&spec)
        .with_context(|| format!("cannot install table inet {}", fw.table))?;
    nft.set_protected(protected)
        .context("cannot load the protected set")?;
    if let nft::Applied::Rebuilt { bans, protected } = applied {
        log.log(&alerts::table_rebuilt(&fw.table, bans, protected));
    }
    for mode in settings.packet_modes() {
        let ports: usize = mode
            .watch
            .port_ranges()
            .iter()
            .map(|(lo, hi)| usize::from(hi - lo) + 1)
            .sum();
        let banning = match mode.proto {
            Proto::Tcp => spec.ban_tcp,
            Proto::Udp => spec.ban_udp,
        };
        log.log(&alerts::mode_trapped(mode.name, mode.proto, ports, banning));
    }
    if spec.ban_tcp || spec.ban_udp {
        log.log(&alerts::ban_budget_at_start(
            fw.ban_budget,
            fw.ban_budget_burst,
        ));
    }
    let backend = backend::NftablesBackend::open(&fw.table)?;
    let (mut kernel, restored) = bans::start(
        &StateFile::new(settings.state_file.clone()),
        settings.ban_policies.clone(),
        Some(Box::new(backend)),
        ignore_set(protected),
    )?;
    kernel.set_budget(ban_budget(settings));
    log_restored(log, settings, "nftables", restored);
    let mut kernel = kernel;
    if spec.known_peer_time.is_some() {
        drop_known_peer_bans(log, &nft, &mut kernel);
    }
    Ok((reader, kernel, NativeFirewall { nft, spec }))
}

/// Saved host bans of addresses that are known peers now are not kept: such a ban was
/// unverified evidence against a host that really talks to us (issue 7). They were
/// just put back with the rest, so they are lifted again at once; one line says how
/// many.
fn drop_known_peer_bans(log: &Logger, nft: &Nft, kernel: &mut BanLifecycle) {
    let peers: std::collections::HashSet<IpNet> = match nft.known_peers() {
        Ok(p) => p.into_iter().map(IpNet::from).collect(),
        Err(e) => {
            log.log(&alerts::error("cannot read the known peers", &e));
            return;
        }
    };
    if peers.is_empty() {
        return;
    }
    let now = crate::clock::unix_now();
    let keys: Vec<IpNet> = kernel
        .book()
        .active(now)
        .map(|ban| ban.key)
        .filter(|key| peers.contains(key))
        .collect();
    let mut dropped = 0;
    for key in keys {
        match kernel.unban(now, key) {
            Ok(_) => dropped += 1,
            Err(e) => log.log(&alerts::error("cannot lift the ban of a known peer", &e)),
        }
    }
    if dropped > 0 {
        log.log(&alerts::saved_known_peers_not_restored(dropped));
    }
}

/// Bans through a fallback backend or (no backend) only a record of the KILL_* bans.
pub fn start_without_nftables(
    settings: &Settings,
    log: &Logger,
    chosen: Chosen,
    protected: &[IpNet],
) -> Result<BanLifecycle> {
    let (mut kernel, restored, name) = match chosen {
        Chosen::Fallback(backend) => {
            let name = backend.name();
            let (kernel, restored) = bans::start(
                &StateFile::new(settings.state_file.clone()),
                settings.ban_policies.clone(),
                Some(backend),
                ignore_set(protected),
            )?;
            (kernel, restored, name)
        }
        _ => {
            let (kernel, restored) = bans::start(
                &StateFile::new(settings.state_file.clone()),
                settings.ban_policies.clone(),
                None,
                ignore_set(protected),
            )?;
            (kernel, restored, "KILL_* commands only")
        }
    };
    kernel.set_budget(ban_budget(settings));
    log_restored(log, settings, name, restored);
    Ok(kernel)
}

/// The budget of new unverified bans the daemon decides, from `[firewall]`.
fn ban_budget(settings: &Settings) -> BanBudget {
    BanBudget::new(
        settings.firewall.ban_budget,
        settings.firewall.ban_budget_burst,
    )
}

fn log_restored(log: &Logger, settings: &Settings, backend: &str, restored: Restored) {
    log.log(&alerts::bans_restored(
        &settings.state_file,
        backend,
        restored.put_back,
        restored.already_in_kernel,
        restored.adopted_from_kernel,
        restored.expired_dropped,
    ));
    if restored.kernel_unlisted {
        log.log(&alerts::kernel_bans_unlisted(
            backend,
            restored.adopted_from_kernel,
            crate::bans::BOOK_CAPACITY,
        ));
    }
    if restored.ended_removed > 0 {
        log.log(&alerts::ended_bans_removed(restored.ended_removed, backend));
    }
    if !restored.refused.is_empty() {
        log.log(&alerts::saved_bans_refused(&restored.refused));
    }
    if !restored.over_capacity.is_empty() {
        log.log(&alerts::state_over_capacity(
            &settings.state_file,
            &restored.over_capacity,
            crate::bans::BOOK_CAPACITY,
        ));
    }
}

/// 1.2's start-up lines about the modes (packet path), and the ports found in use now (they are excluded live, at every probe; this list is for the admin).
pub fn announce_modes(settings: &Settings, log: &Logger, usage: &mut PortUsage) {
    for mode in settings.packet_modes() {
        match &mode.watch {
            Watch::Listed(ports) => {
                for port in ports.iter() {
                    log.log(&alerts::stealth_listen(mode.proto, port));
                }
            }
            Watch::Advanced { below, exclude } => {
                log.log(&alerts::advanced_monitor(*below));
                if exclude.is_empty() {
                    log.log(alerts::ADVANCED_EXCLUDE_NONE);
                }
                for port in exclude.iter() {
                    log.log(&alerts::advanced_exclude(port));
                }
            }
        }
    }
    for mode in settings.packet_modes() {
        if let Ok(ports) = usage.listening_ports(mode.proto) {
            for port in ports.into_iter().filter(|p| mode.watch.contains(*p)) {
                log.log(&alerts::in_use_ignored(mode.proto, port));
            }
        }
    }
}
