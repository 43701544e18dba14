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

/// `[firewall] ban_budget`: new unverified bans per second, one budget for the kernel's
/// trap rules (a named limit shared by every trap rule) and for the bans the daemon
/// decides itself (SCAN_TRIGGER > 0, the packet-socket path, fast_path off; past it
/// each probe is alerted but not banned, so a flood cannot fill the ban sets and the
/// book with innocent addresses). Measured (kernel tests and `tests/system_known_peers.rs`, nmap 7.93 `-sS`, `-sA`,
/// `-sU`, `-6 -sS`): a real scan takes exactly one ban — one token — because its
/// first trap probe bans the source and every later probe is dropped by the ban before
/// it reaches a trap. So the budget is the number of *distinct new scanners* per
/// second, and real scanners arriving within the same second are rare, while a forged
/// flood asks for one ban per forged address (thousands per second). One a second
/// (86,400 a day, far above what a host sees from real scanners) caps a forged flood
/// at 60 innocent bans a minute instead of one per forged packet.
pub const BAN_BUDGET: u32 = 1;
/// `[firewall] ban_budget_burst`: a few real scanners at once (a small distributed
/// scan, nmap's decoys) are still banned on their first probe; nft's own default burst.
pub const BAN_BUDGET_BURST: u32 = 5;
/// Highest `ban_budget`/`ban_budget_burst` accepted: beyond this there is no budget to
/// speak of (use 0 for none).
pub const MAX_BAN_BUDGET: u32 = 1_000_000;
/// `[firewall] known_peer_time`: an address that exchanged data with this host in the
/// last day is a known peer; a day covers daily clients (backups, monitoring, users)
/// without keeping every address ever seen.
pub const KNOWN_PEER_TIME: std::time::Duration = std::time::Duration::from_secs(86_400);
/// Longest `known_peer_time` accepted: past a month an address is no longer "recent".
pub const MAX_KNOWN_PEER_TIME: std::time::Duration = std::time::Duration::from_secs(31 * 86_400);
/// Known peers kept per address family (the kernel sets, and the packet path's
/// table): a day of distinct peers of a busy host, ~100 bytes of kernel memory each;
/// when full, new peers are not learned and fall back to the ban budget.
pub const KNOWN_PEER_SET_SIZE: u32 = 262_144;
/// `[firewall] early_drop`: see BENCHMARKS.md part 3 (input hook vs prerouting at raw
/// priority, 100,000 bans).
pub const EARLY_DROP: bool = true;
/// Damping of the lines about probes the kernel dropped without a ban: one line per
/// known peer a minute, and one summary line a minute of probes past the budget.
pub const UNBANNED_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// Known peers remembered for that damping, and distinct sources counted for the
/// summary line: bounded, a flood of forged sources cannot grow them.
pub const UNBANNED_TRACKED_SOURCES: usize = 4096;

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

/// Classic modes and handshake traps: completed connections queued per trap port before
/// the kernel refuses more. A scanner's connects are taken within one loop turn, so a
/// short queue is enough, and it bounds what a flood of handshakes can queue per port.
pub const LISTEN_BACKLOG: i32 = 64;
/// Classic modes and handshake traps: descriptors kept free for everything else the
/// daemon opens (netlink sockets, record files, the control socket, KILL_* pipes) when
/// the open-file limit is raised for one socket per trap port.
pub const LISTEN_FD_RESERVE: u64 = 256;
/// PORT_BANNER is cut to this many bytes, as 1.2 copied it into a 1024-byte buffer
/// (`MAXBUF`, with its terminating NUL).
pub const PORT_BANNER_MAX_BYTES: usize = 1023;
/// `[listen] udp_banner = true`: at most this many banner replies per second in all. A
/// UDP source address can be forged, so each reply may go to a victim; the cap keeps
/// this host from being a reflector at any useful rate.
pub const UDP_BANNERS_PER_SECOND: u32 = 20;
/// `[listen] udp_banner`: off, because a UDP reply to a forgeable source is a
/// reflection vector; 1.2 sent PORT_BANNER to every UDP datagram's sender.
pub const UDP_BANNER: bool = false;
/// Most runs of the KILL_* chain (KILL_HOSTS_DENY, KILL_ROUTE, KILL_RUN_CMD) a minute;
/// responses past it are skipped and counted in one line a minute. Each run forks a
/// shell and usually a firewall tool (a few ms each, and 1.2's `iptables -I` or `route
/// add` templates grow a list the kernel walks per packet), so a flood of forged
/// sources would otherwise cost a core and a rule list of thousands. Ten a second is
/// far above any real scanning (one source per scan) and keeps the cost under ~5% of a
/// core; the kernel ban itself is not limited.
pub const KILL_RUNS_PER_MINUTE: u32 = 600;
