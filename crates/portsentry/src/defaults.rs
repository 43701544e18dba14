//! Every built-in value of the settings, in one place, each with its reason (below
//! `config` and `settings`, which both read it; the default modes, which are `config`
//! values, sit in `settings::validate`). The TOML
//! defaults (`config::toml_file`), the embedded quick-start config, the command-line
//! defaults and the protected set all take their values from here; the ban policy's
//! numbers are [`BanPolicy::default`](portsentry_engine::bans::BanPolicy), documented
//! beside the policy in the engine. Two kinds of values live with what they describe
//! instead: 1.2's fallback for a key absent from portsentry.conf (`LegacyConfig::default`,
//! beside the key table) and the engine's own limits (`EngineConfig::default`).

use std::path::Path;

use portsentry_engine::ports::PortSet;

/// The legacy config read when no `-c` is given and the file exists: where Debian's
/// package installs it (and 2.x's compile-time `CONFIG_FILE`).
pub const CONFIG_FILE: &str = "/etc/portsentry/portsentry.conf";
/// Debian's mode selection, read when no mode flag is given (its init script passed
/// `-$TCP_MODE -$UDP_MODE`).
pub const DEBIAN_DEFAULTS_FILE: &str = "/etc/default/portsentry";
/// Our settings file, beside portsentry.conf; read when it exists and no `--settings`
/// is given.
pub const SETTINGS_FILE: &str = "/etc/portsentry/portsentry.toml";
/// The most bytes read of portsentry.conf, /etc/default/portsentry, portsentry.toml or
/// an ignore file: real ones are a few KiB (Debian's portsentry.conf is 11 KiB; an
/// ignore list of every address of a large host a few hundred lines), so 1 MiB is far
/// above any real file, and a wrong path (a log file, a disk image) is refused with its
/// size instead of being held in memory.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// The syslog daemon's socket on every Linux distribution.
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// Debian's record locations, used by the embedded defaults and when a config leaves
/// HISTORY_FILE or BLOCKED_FILE unset, so the files land where Debian's tools look.
pub const HISTORY_FILE: &str = "/var/lib/portsentry/portsentry.history";
pub const BLOCKED_FILE: &str = "/var/lib/portsentry/portsentry.blocked";
/// Debian's ignore file; the embedded defaults use it when it exists.
pub const IGNORE_FILE: &str = "/etc/portsentry/portsentry.ignore";
/// Debian generates IGNORE_FILE from this sibling in its init script; without that
/// step the static part is read instead (see `validate`).
pub const IGNORE_STATIC_SUFFIX: &str = ".static";
/// 1.2's compile-time `WRAPPER_HOSTS_DENY`, where KILL_HOSTS_DENY lines go unless
/// HOSTS_DENY_FILE or `--hosts-deny` says otherwise.
pub const HOSTS_DENY_FILE: &str = "/etc/hosts.deny";

/// Ports the embedded defaults never alarm on in `-atcp`, as the upstream and Debian
/// configs ship: ident (113, answered by many hosts' outgoing mail) and NetBIOS (139).
pub fn advanced_exclude_tcp() -> PortSet {
    PortSet::parse_list("113,139").expect("valid port list")
}

/// Same for `-audp`: RIP (520), NetBIOS (138, 137) and DHCP (67), whose broadcasts and
/// replies are not scans.
pub fn advanced_exclude_udp() -> PortSet {
    PortSet::parse_list("520,138,137,67").expect("valid port list")
}

/// Without an ignore file the loopback ranges are still never alarmed on: a host does
/// not scan itself.
pub const LOOPBACK_IGNORE: [&str; 2] = ["127.0.0.0/8", "::1/128"];

/// `[firewall]`: our own `inet` table, the only one we ever create or remove.
pub const FIREWALL_TABLE: &str = "portsentry";
/// `[firewall]`: a high NFLOG group number, away from the small numbers that other
/// NFLOG users usually take.
pub const NFLOG_GROUP: u16 = 5817;
/// `[firewall]`: below the usual `filter` priority 0, so scanners are trapped and
/// dropped before other rules accept them.
pub const CHAIN_PRIORITY: i32 = -10;
/// `[firewall]`: up to 2^20 bans per address family, far beyond any real scan wave, and
/// still a bounded amount of kernel memory.
pub const BAN_SET_SIZE: u32 = 1 << 20;
/// `[firewall]`: ban in the kernel on the very packet that hits a trap, so a scan ends at
/// its first probe instead of after the daemon's round trip.
pub const FAST_PATH: bool = true;
/// `[firewall] ban_budget`: new unverified bans a second that the daemon decides itself
/// (SCAN_TRIGGER > 0, the packet-socket path, fast_path off). Real scanners arrive a
/// few a minute even on a busy host; a hundred new sources a second is a forged flood,
/// and past this each probe is alerted but not banned, so the flood cannot fill the ban
/// sets and the book with innocent addresses. (The same number is meant to bound the
/// kernel's own first-probe bans where the trap rules carry a budget.)
pub const BAN_BUDGET: u32 = 100;
/// `[firewall] ban_budget_burst`: a real scan wave (one scanner's decoys, a botnet
/// sweeping a subnet) may bring many new sources in one moment; up to this many are
/// banned at once before the per-second budget applies.
pub const BAN_BUDGET_BURST: u32 = 1000;

/// `[protect]`: a daemon that bans forged sources must never cut its host off from its
/// own addresses, gateways and resolvers, so protection is on.
pub const PROTECT: bool = true;
/// `[protect]`: where the resolvers to protect are configured.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// `[state]`: bans and offence counts kept across restarts, beside Debian's records.
pub const STATE_FILE: &str = "/var/lib/portsentry/state.json";
/// `[control]`: under /run, which is cleared at boot, as a stale socket should be.
pub const CONTROL_SOCKET: &str = "/run/portsentry/portsentry.sock";

/// `path` with `.static` appended (Debian's source of the generated ignore file).
pub fn ignore_static(path: &Path) -> std::path::PathBuf {
    let mut p = path.to_path_buf().into_os_string();
    p.push(IGNORE_STATIC_SUFFIX);
    p.into()
}

/// The shortest prefix a ban may have (`portsentry ban`, and bans read back from the
/// state file), IPv4 and IPv6. A shorter one is not a ban of an attacker but of a
/// share of the Internet: `0.0.0.0/0` or `::/0` cut this host off from every client of
/// the family, and no `--force` allows them. IPv4: a /8 is the largest block one holder
/// ever got (the legacy class A allocations); anything shorter spans several holders.
/// IPv6: the largest allocations to one network operator are around /19, and the
/// regional registries get /12s from IANA; a /16 is already more than one operator, so
/// shorter can only be a typo or an attempt to cut IPv6 off.
pub const MIN_BAN_PREFIX_V4: u8 = 8;
pub const MIN_BAN_PREFIX_V6: u8 = 16;

/// Most runs of the KILL_* chain (KILL_HOSTS_DENY, KILL_ROUTE, KILL_RUN_CMD) a minute;
/// responses past it are skipped and counted in one line a minute. Each run forks a
/// shell and usually a firewall tool (a few ms each, and 1.2's `iptables -I` or `route
/// add` templates grow a list the kernel walks per packet), so a flood of forged
/// sources would otherwise cost a core and a rule list of thousands. Ten a second is
/// far above any real scanning (one source per scan) and keeps the cost under ~5% of a
/// core; the kernel ban itself is not limited.
pub const KILL_RUNS_PER_MINUTE: u32 = 600;
