//! `/etc/portsentry/portsentry.toml`: the settings PortSentry never had (the kernel
//! fast path, ban lifecycle, protected set, state file), beside the unchanged legacy
//! `portsentry.conf`. Every key is optional and has the default documented here; an
//! unknown key or a bad value is an error with file:line, never ignored. The default
//! values themselves live in `defaults` and, for `[bans]`, in the engine's
//! `BanPolicy::default`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Diagnostic;
use portsentry_engine::bans::{BanPolicies, BanPolicy};
use serde::Deserialize;

use crate::defaults;

/// Default location; read when it exists and no `--settings` is given.
pub const DEFAULT_SETTINGS_FILE: &str = defaults::SETTINGS_FILE;

/// Which firewall carries the bans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// nftables when the `nft` tool and the kernel answer, else the first of ipset,
    /// iptables, blackhole routes that works.
    #[default]
    Auto,
    Nftables,
    /// ipset sets with kernel timeouts and one iptables/ip6tables rule (no nftables).
    Ipset,
    /// One iptables/ip6tables DROP rule per banned address; the daemon expires them.
    Iptables,
    /// Blackhole host routes (replies to the scanner go nowhere); the daemon expires them.
    Route,
    /// No native bans: only the legacy KILL_* commands act (PortSentry 1.2 behaviour).
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FirewallSettings {
    pub backend: Backend,
    /// Ban in the kernel on the very packet that hits a trap (nftables, SCAN_TRIGGER=0).
    /// Off: the daemon decides every ban (still added to the nftables set).
    pub fast_path: bool,
    /// Name of our `inet` table. Only this table is ever created or removed.
    pub table: String,
    /// NFLOG group the trap rules log to.
    pub nflog_group: u16,
    /// Hook priority of our input chain; below 0 runs before the usual filter chains.
    pub priority: i32,
    /// Most bans per address family in the kernel set.
    pub set_size: u32,
    /// New unverified bans per second, one budget for both places that ban on the
    /// first probe: the kernel's trap rules (shared by TCP, UDP, IPv4 and IPv6: past it
    /// a trap drops the probe and bans nobody) and the bans the daemon decides itself
    /// (SCAN_TRIGGER > 0, the packet-socket path, fast_path off: past it, probes are
    /// alerted, not banned). 0 = no budget.
    pub ban_budget: u32,
    /// How many of those bans may come at once.
    pub ban_budget_burst: u32,
    /// How long an address that exchanged data with this host stays a known peer,
    /// never banned on unverified evidence. 0 = no known peers.
    #[serde(with = "humantime_serde_compat")]
    pub known_peer_time: Duration,
    /// Drop banned sources in prerouting at raw priority, before routing and
    /// connection tracking, instead of in the input hook.
    pub early_drop: bool,
}

impl Default for FirewallSettings {
    fn default() -> Self {
        FirewallSettings {
            backend: Backend::Auto,
            fast_path: defaults::FAST_PATH,
            table: defaults::FIREWALL_TABLE.into(),
            nflog_group: defaults::NFLOG_GROUP,
            priority: defaults::CHAIN_PRIORITY,
            set_size: defaults::BAN_SET_SIZE,
            ban_budget: defaults::BAN_BUDGET,
            ban_budget_burst: defaults::BAN_BUDGET_BURST,
            known_peer_time: defaults::KNOWN_PEER_TIME,
            early_drop: defaults::EARLY_DROP,
        }
    }
}

/// `[bans]`: the full policy, for verified evidence (a completed handshake), the
/// grouping of every class, and the `[bans.unverified]` and `[bans.manual]` tables.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BanSettings {
    /// First ban of a source.
    #[serde(with = "humantime_serde_compat")]
    pub time: Duration,
    /// Each repeat offence multiplies the ban time by this (1 = no escalation).
    pub escalation: u32,
    /// Longest escalated ban.
    #[serde(with = "humantime_serde_compat")]
    pub max_time: Duration,
    /// From this offence on, bans are permanent (0 = never).
    pub permanent_after: u32,
    /// Ban the whole /N around an IPv4 scanner (32 = just the address). Every class.
    pub group_v4: u8,
    /// Ban the whole /N around an IPv6 scanner (64 is common; 128 = just the address).
    /// Every class.
    pub group_v6: u8,
    /// An offender quiet for this long starts again at its first offence.
    #[serde(with = "humantime_serde_compat")]
    pub forget_offences_after: Duration,
    /// An offence less than this after the previous counted one does not escalate.
    #[serde(with = "humantime_serde_compat")]
    pub offence_gap: Duration,
    /// false: verified evidence is alerted, never banned.
    pub ban: bool,
    /// `[bans.unverified]`: single packets (SYN, FIN, NULL, XMAS, ACK, Maimon, UDP).
    pub unverified: ClassBanSettings,
    /// `[bans.manual]`: `portsentry ban`.
    pub manual: ManualBanSettings,
}

/// `[bans.unverified]`: the keys of `[bans]` that are chosen per class (grouping is
/// shared); defaults from the engine's [`BanPolicy::provisional`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassBanSettings {
    #[serde(with = "humantime_serde_compat")]
    pub time: Duration,
    pub escalation: u32,
    #[serde(with = "humantime_serde_compat")]
    pub max_time: Duration,
    pub permanent_after: u32,
    #[serde(with = "humantime_serde_compat")]
    pub forget_offences_after: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub offence_gap: Duration,
    pub ban: bool,
}

/// `[bans.manual]`: the administrator chooses each ban's length (`--time`,
/// `--permanent`); only the length when none is given is set here.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManualBanSettings {
    /// `portsentry ban` without `--time`.
    #[serde(with = "humantime_serde_compat")]
    pub time: Duration,
}

impl Default for BanSettings {
    /// The engine's [`BanPolicies::default`], where each number's reason is documented.
    fn default() -> Self {
        let p = BanPolicies::default();
        let v = &p.verified;
        BanSettings {
            time: v.ban_time,
            escalation: v.escalation_factor,
            max_time: v.max_ban_time,
            permanent_after: v.permanent_after.unwrap_or(0),
            group_v4: v.group_v4,
            group_v6: v.group_v6,
            forget_offences_after: v.forget_offences_after,
            offence_gap: v.offence_gap,
            ban: v.ban,
            unverified: ClassBanSettings::from(&p.unverified),
            manual: ManualBanSettings {
                time: p.manual.ban_time,
            },
        }
    }
}

impl Default for ClassBanSettings {
    fn default() -> Self {
        ClassBanSettings::from(&BanPolicy::provisional())
    }
}

impl Default for ManualBanSettings {
    fn default() -> Self {
        ManualBanSettings {
            time: BanPolicies::default().manual.ban_time,
        }
    }
}

impl From<&BanPolicy> for ClassBanSettings {
    fn from(p: &BanPolicy) -> Self {
        ClassBanSettings {
            time: p.ban_time,
            escalation: p.escalation_factor,
            max_time: p.max_ban_time,
            permanent_after: p.permanent_after.unwrap_or(0),
            forget_offences_after: p.forget_offences_after,
            offence_gap: p.offence_gap,
            ban: p.ban,
        }
    }
}

impl ClassBanSettings {
    /// This class's policy, with the grouping of `[bans]`.
    fn policy(&self, group_v4: u8, group_v6: u8) -> BanPolicy {
        BanPolicy {
            ban_time: self.time,
            escalation_factor: self.escalation,
            max_ban_time: self.max_time,
            permanent_after: (self.permanent_after > 0).then_some(self.permanent_after),
            group_v4,
            group_v6,
            forget_offences_after: self.forget_offences_after,
            offence_gap: self.offence_gap,
            ban: self.ban,
        }
    }

    fn validate(&self, table: &str) -> std::result::Result<(), String> {
        if self.time.is_zero() {
            return Err(format!("{table}.time must be longer than 0"));
        }
        if self.max_time < self.time {
            return Err(format!("{table}.max_time must be at least {table}.time"));
        }
        if self.escalation == 0 {
            return Err(format!("{table}.escalation must be 1 or more"));
        }
        Ok(())
    }
}

impl BanSettings {
    /// `[bans]`'s own keys, as the verified class.
    fn verified(&self) -> ClassBanSettings {
        ClassBanSettings {
            time: self.time,
            escalation: self.escalation,
            max_time: self.max_time,
            permanent_after: self.permanent_after,
            forget_offences_after: self.forget_offences_after,
            offence_gap: self.offence_gap,
            ban: self.ban,
        }
    }

    /// The policy of each evidence class (`permanent_after = 0` is never).
    pub fn policies(&self) -> BanPolicies {
        let (g4, g6) = (self.group_v4, self.group_v6);
        BanPolicies {
            unverified: self.unverified.policy(g4, g6),
            verified: self.verified().policy(g4, g6),
            manual: BanPolicy {
                ban_time: self.manual.time,
                ..self.verified().policy(g4, g6)
            },
        }
    }

    /// The full (verified) policy alone.
    pub fn policy(&self) -> BanPolicy {
        self.policies().verified
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtectSettings {
    /// Never ban this host's own addresses, its default gateways and its resolvers.
    pub enabled: bool,
    /// Where the resolvers are read from.
    pub resolv_conf: PathBuf,
    /// More networks never to ban (besides IGNORE_FILE).
    pub extra: Vec<ipnet::IpNet>,
}

impl Default for ProtectSettings {
    fn default() -> Self {
        ProtectSettings {
            enabled: defaults::PROTECT,
            resolv_conf: PathBuf::from(defaults::RESOLV_CONF),
            extra: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateSettings {
    /// Bans, their expiry and offence counts, kept across restarts and crashes.
    pub file: PathBuf,
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            file: PathBuf::from(defaults::STATE_FILE),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSettings {
    /// Root-only unix socket on which `portsentry ban/unban/status` reach the daemon.
    pub socket: PathBuf,
}

impl Default for ControlSettings {
    fn default() -> Self {
        ControlSettings {
            socket: PathBuf::from(defaults::CONTROL_SOCKET),
        }
    }
}

/// `[listen]`: ports on which the daemon really listens, beside what the modes do.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenSettings {
    /// Handshake trap ports: TCP ports on which the daemon listens and accepts in the
    /// stealth and advanced modes too, so that a connect there is verified evidence (the
    /// source completed a handshake). Ports (`23`) or ranges (`"2000-2010"`). Such a port
    /// answers, so it looks open to a scanner. Default: none.
    pub handshake_ports: Vec<PortItem>,
    /// Send PORT_BANNER in reply to a datagram in the classic `-udp` mode, as 1.2 did.
    /// Off by default: a UDP source can be forged, so the reply can go to a victim.
    pub udp_banner: bool,
}

impl Default for ListenSettings {
    fn default() -> Self {
        ListenSettings {
            handshake_ports: Vec::new(),
            udp_banner: defaults::UDP_BANNER,
        }
    }
}

/// One entry of a port list: a port, or a range `"LO-HI"` (a single port as a string
/// is taken too).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PortItem {
    Port(u16),
    Text(String),
}

impl ListenSettings {
    /// The handshake ports as a set; an entry that is no port or range is the error.
    pub fn handshake_set(&self) -> Result<portsentry_engine::ports::PortSet, String> {
        let mut set = portsentry_engine::ports::PortSet::new();
        for item in &self.handshake_ports {
            match item {
                PortItem::Port(0) => {
                    return Err("listen.handshake_ports: port 0 is not a port".into());
                }
                PortItem::Port(p) => set.insert(*p),
                PortItem::Text(t) => {
                    let one = portsentry_engine::ports::PortSet::parse_list(t.trim())
                        .ok()
                        .filter(|_| !t.contains(','))
                        .ok_or_else(|| {
                            format!(
                                "listen.handshake_ports: `{t}` is not a port or a range like \"2000-2010\""
                            )
                        })?;
                    for p in one.iter() {
                        set.insert(p);
                    }
                }
            }
        }
        Ok(set)
    }
}

/// The whole TOML file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TomlSettings {
    pub firewall: FirewallSettings,
    pub bans: BanSettings,
    pub protect: ProtectSettings,
    pub state: StateSettings,
    pub control: ControlSettings,
    pub listen: ListenSettings,
    pub fleet: super::fleet::FleetSettings,
    pub metrics: super::MetricsSettings,
    pub logging: super::LoggingSettings,
}

impl TomlSettings {
    fn validate(&self) -> std::result::Result<(), String> {
        self.metrics.address()?;
        let b = &self.bans;
        b.verified().validate("bans")?;
        b.unverified.validate("bans.unverified")?;
        if b.manual.time.is_zero() {
            return Err("bans.manual.time must be longer than 0".into());
        }
        if !(8..=32).contains(&b.group_v4) {
            return Err("bans.group_v4 must be from 8 to 32".into());
        }
        if !(16..=128).contains(&b.group_v6) {
            return Err("bans.group_v6 must be from 16 to 128".into());
        }
        let table = &self.firewall.table;
        if table.is_empty()
            || table.len() > 32
            || !table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "firewall.table `{table}`: use 1-32 letters, digits, '_' or '-'"
            ));
        }
        if self.firewall.set_size == 0 {
            return Err("firewall.set_size must be more than 0".into());
        }
        self.listen.handshake_set()?;
        self.fleet.validate()?;
        let fw = &self.firewall;
        if fw.ban_budget > defaults::MAX_BAN_BUDGET {
            return Err(format!(
                "firewall.ban_budget must be at most {} new bans per second (0 = no budget)",
                defaults::MAX_BAN_BUDGET
            ));
        }
        if fw.ban_budget > 0 && !(1..=defaults::MAX_BAN_BUDGET).contains(&fw.ban_budget_burst) {
            return Err(format!(
                "firewall.ban_budget_burst must be from 1 to {}",
                defaults::MAX_BAN_BUDGET
            ));
        }
        if fw.known_peer_time > defaults::MAX_KNOWN_PEER_TIME {
            return Err(format!(
                "firewall.known_peer_time must be at most {}s (0 = no known peers)",
                defaults::MAX_KNOWN_PEER_TIME.as_secs()
            ));
        }
        Ok(())
    }
}

/// Parse the text of a settings file; errors carry `file:line:column`.
pub fn parse_toml_settings(text: &str, file: &Path) -> Result<TomlSettings, Diagnostic> {
    // A byte-order mark is allowed at the start of a TOML file and is not part of it.
    let text = super::skip_bom(text, file, "", None);
    let settings: TomlSettings = toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|span| line_col(text, span.start))
            .unwrap_or((0, 0));
        let mut d = Diagnostic::new(file, line, e.message());
        d.column = column;
        d
    })?;
    settings
        .validate()
        .map_err(|m| Diagnostic::new(file, 0, m))?;
    Ok(settings)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

/// Durations as humans write them ("1h", "30m", "7d 12h") or as whole seconds.
pub(super) mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Seconds(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => humantime::parse_duration(&t).map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{t}` is not a duration like \"1h\" or \"30m\": {e}"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TomlSettings, Diagnostic> {
        parse_toml_settings(text, Path::new("/etc/portsentry/portsentry.toml"))
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let s = parse("").unwrap();
        assert_eq!(s, TomlSettings::default());
        assert_eq!(s.bans.time, Duration::from_secs(3600));
        assert!(s.firewall.fast_path && s.protect.enabled);
        assert_eq!(s.firewall.backend, Backend::Auto);
    }

    #[test]
    fn byte_order_mark_is_skipped() {
        let s = parse("\u{FEFF}[bans]\ntime = \"5m\"\n").unwrap();
        assert_eq!(s.bans.time, Duration::from_secs(300));
        // Positions are still those of the file.
        let e = parse("\u{FEFF}[bans]\nbantime = 1\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 1));
    }

    #[test]
    fn ban_defaults_are_the_engine_policy() {
        let b = BanSettings::default();
        assert_eq!(b.policy(), BanPolicy::default());
        assert_eq!(b.policies(), BanPolicies::default());
        assert_eq!(b.time, Duration::from_secs(3600));
        assert_eq!(b.permanent_after, 0);
        assert_eq!(b.unverified.time, Duration::from_secs(600));
        assert_eq!(b.manual.time, Duration::from_secs(3600));
        let p = BanSettings {
            permanent_after: 3,
            ..b
        }
        .policy();
        assert_eq!(p.permanent_after, Some(3));
    }

    #[test]
    fn issue7_per_class_tables() {
        let s = parse(
            "[bans]\ntime = \"2h\"\ngroup_v6 = 64\n\n[bans.unverified]\ntime = \"3s\"\nescalation = 1\noffence_gap = 0\nban = false\n\n[bans.manual]\ntime = \"10m\"\n",
        )
        .unwrap();
        let p = s.bans.policies();
        assert_eq!(p.verified.ban_time, Duration::from_secs(7200));
        assert_eq!(p.unverified.ban_time, Duration::from_secs(3));
        assert_eq!(p.unverified.escalation_factor, 1);
        assert_eq!(p.unverified.offence_gap, Duration::ZERO);
        assert!(!p.unverified.ban && p.verified.ban);
        // Keys not set keep the class's own defaults, not those of [bans]...
        assert_eq!(p.unverified.max_ban_time, Duration::from_secs(24 * 3600));
        // ...except the grouping, which [bans] sets for every class.
        assert_eq!((p.unverified.group_v6, p.manual.group_v6), (64, 64));
        assert_eq!(p.manual.ban_time, Duration::from_secs(600));
    }

    #[test]
    fn issue7_per_class_errors_name_the_table_and_line() {
        let e = parse("[bans.unverified]\ngroup_v4 = 24\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 1), "grouping is [bans]' only: {e}");
        let e = parse("[bans.manual]\nescalation = 2\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = parse("[bans.unverified]\nban = \"no\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = parse("[bans.unverified]\ntime = \"2d\"\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("bans.unverified.max_time must be at least bans.unverified.time"),
            "{e}"
        );
        assert!(parse("[bans.unverified]\nescalation = 0\n").is_err());
        assert!(parse("[bans.manual]\ntime = 0\n").is_err());
        assert!(parse("[firewall]\nban_budget = -1\n").is_err());
        let s = parse("[firewall]\nban_budget = 5\nban_budget_burst = 20\n").unwrap();
        assert_eq!(
            (s.firewall.ban_budget, s.firewall.ban_budget_burst),
            (5, 20)
        );
    }

    #[test]
    fn values_are_read() {
        let s = parse(
            "[firewall]\nbackend = \"nftables\"\nfast_path = false\n\n[bans]\ntime = \"5s\"\nmax_time = 60\nescalation = 3\npermanent_after = 4\ngroup_v6 = 64\n\n[protect]\nextra = [\"198.18.0.0/24\", \"fd00:5e17::/64\"]\n\n[state]\nfile = \"/tmp/x.json\"\n",
        )
        .unwrap();
        assert_eq!(s.firewall.backend, Backend::Nftables);
        assert!(!s.firewall.fast_path);
        assert_eq!(s.bans.time, Duration::from_secs(5));
        assert_eq!(s.bans.max_time, Duration::from_secs(60));
        assert_eq!(s.bans.permanent_after, 4);
        assert_eq!(s.protect.extra.len(), 2);
        assert_eq!(s.state.file, PathBuf::from("/tmp/x.json"));
    }

    #[test]
    fn unknown_key_is_an_error_with_line_and_column() {
        let err = parse("[bans]\ntime = \"1h\"\nbantime = \"2h\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/etc/portsentry/portsentry.toml:3:1:"),
            "{err}"
        );
        assert!(err.contains("bantime"), "{err}");
    }

    #[test]
    fn bad_duration_and_ranges_are_errors() {
        let err = parse("[bans]\ntime = \"an hour\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":2:"), "{err}");
        assert!(parse("[bans]\ngroup_v4 = 4\n").is_err());
        assert!(parse("[bans]\ntime = \"2h\"\nmax_time = \"1h\"\n").is_err());
        assert!(parse("[firewall]\ntable = \"bad name\"\n").is_err());
        assert!(parse("[firewall]\nbackend = \"ipchains\"\n").is_err());
    }

    #[test]
    fn issue_7_handshake_ports_are_ports_and_ranges() {
        let s = parse("[listen]\nhandshake_ports = [23, \"2000-2002\", \"8080\"]\n").unwrap();
        let set = s.listen.handshake_set().unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), [23, 2000, 2001, 2002, 8080]);
        assert!(!s.listen.udp_banner);
        assert!(
            ListenSettings::default()
                .handshake_set()
                .unwrap()
                .is_empty()
        );
        for bad in ["[0]", "[\"a-b\"]", "[\"1,2\"]", "[70000]", "[\"9-3\"]"] {
            let text = format!("[listen]\nhandshake_ports = {bad}\n");
            assert!(parse(&text).is_err(), "{bad} accepted");
        }
        assert!(
            parse("[listen]\nudp_banner = true\n")
                .unwrap()
                .listen
                .udp_banner
        );
    }

    #[test]
    fn budget_known_peers_and_early_drop_are_read_and_checked() {
        let s = parse("").unwrap().firewall;
        assert_eq!(
            (
                s.ban_budget,
                s.ban_budget_burst,
                s.known_peer_time,
                s.early_drop
            ),
            (
                defaults::BAN_BUDGET,
                defaults::BAN_BUDGET_BURST,
                Duration::from_secs(86_400),
                defaults::EARLY_DROP
            )
        );
        let s = parse(
            "[firewall]\nban_budget = 20\nban_budget_burst = 40\nknown_peer_time = \"12h\"\nearly_drop = false\n",
        )
        .unwrap()
        .firewall;
        assert_eq!(
            (
                s.ban_budget,
                s.ban_budget_burst,
                s.known_peer_time,
                s.early_drop
            ),
            (20, 40, Duration::from_secs(43_200), false)
        );
        assert_eq!(
            parse("[firewall]\nban_budget = 0\nban_budget_burst = 0\n")
                .unwrap()
                .firewall
                .ban_budget,
            0
        );
        let e = parse("[firewall]\nban_budget_burst = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("firewall.ban_budget_burst must be from 1"),
            "{e}"
        );
        let e = parse("[firewall]\nban_budget = 2000000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("firewall.ban_budget must be at most"), "{e}");
        let e = parse("[firewall]\n\nknown_peer_time = \"a day\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/etc/portsentry/portsentry.toml:3:"), "{e}");
        let e = parse("[firewall]\nearly_drop = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/etc/portsentry/portsentry.toml:2:"), "{e}");
        assert!(parse("[firewall]\nknown_peer_time = \"400d\"\n").is_err());
    }
}
