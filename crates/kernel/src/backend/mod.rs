//! Ban backends: bans that can be listed, lifted and (where the kernel can) expired,
//! behind one trait, [`BanBackend`].
//!
//! [`NftablesBackend`] writes our nftables table's ban sets (host bans over netlink,
//! network bans through `nft`); it is the daemon's choice wherever nftables works. For
//! hosts without nftables, three fallbacks, in the order [`detect`] prefers them:
//! 1. [`IpsetBackend`]: two `hash:ip` sets with kernel timeouts (`portsentry4`,
//!    `portsentry6`) and one `iptables`/`ip6tables` rule each that drops their members.
//!    The kernel expires bans by itself, also while the daemon is down; one rule, a hash
//!    lookup per packet. Forks `ipset` per ban (a fallback; nftables is the fast path).
//! 2. [`IptablesBackend`]: one `-s ADDR -j DROP` rule per address in `INPUT`, marked with
//!    the comment `portsentry`. Drops the attacker's packets before any socket sees them,
//!    but the rules are a linear list and the daemon must remove them at expiry.
//! 3. [`RouteBackend`]: blackhole host routes over `NETLINK_ROUTE`, no tool, no process
//!    forked. Works on every Linux host, but only stops *replies*: the attacker's packets
//!    still arrive (a UDP datagram still reaches a listening socket), TCP handshakes fail.
//!    The daemon removes the routes at expiry.
//!
//! Invariants shared by all backends:
//! - only what the backend itself installed is ever listed, changed or removed: our sets
//!   and the rules naming them, rules carrying our exact shape and comment, routes with
//!   our routing protocol number ([`ROUTE_PROTOCOL`]);
//! - `add` returns `Ok` only after the kernel (or the tool on its behalf) accepted the
//!   ban; `add` of an address already banned is not an error;
//! - addresses are canonical (an IPv4-mapped IPv6 address is banned as IPv4);
//! - commands are argument lists (never a shell) with only fixed names and formatted
//!   addresses in them, run with `LC_ALL=C` and a time limit ([`COMMAND_TIME_LIMIT`]).
//!
//! Every backend acts on the network namespace of the thread that created it (the route
//! backend's socket) or that calls it (processes are spawned from the calling thread).

mod command;
mod ipset;
mod iptables;
mod nftables;
mod route;

#[cfg(test)]
mod kernel_tests;

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::nft::NftError;

pub use command::{COMMAND_TIME_LIMIT, CommandError};
pub use ipset::{IPSET_MAX_TIMEOUT, IpsetBackend, SET_MAXELEM, SET4, SET6};
pub use iptables::{IptablesBackend, RULE_COMMENT};
pub use nftables::{NftablesBackend, set_of};
pub use route::{ROUTE_PROTOCOL, RouteBackend, RouteKind};

/// Where bans are kept in the kernel: our nftables sets ([`NftablesBackend`]), or on
/// hosts without nftables ipset, iptables or blackhole routes. Mechanism only: how long
/// a ban lasts, whom to ban and what to log are the caller's.
///
/// Keys are networks; a host is its `/32` or `/128`. A backend that does not
/// [`holds_networks`](Self::holds_networks) refuses a shorter prefix with
/// [`BackendError::NetworkUnsupported`].
///
/// Implementations are `Send` so that the daemon can build one at start and hand it to
/// the thread that bans.
pub trait BanBackend: Send {
    /// `"nftables"`, `"route"`, `"ipset"` or `"iptables"`.
    fn name(&self) -> &'static str;

    /// Where a ban on `key` lives, for the caller's messages ("nftables set banned4",
    /// "ipset"). The default is [`name`](Self::name).
    fn place(&self, key: IpNet) -> String {
        let _ = key;
        self.name().to_string()
    }

    /// Install whatever one-time state the backend needs (ipset sets + the one iptables
    /// rule that matches them; nothing for routes, iptables and nftables, whose table
    /// the caller applies). Idempotent.
    fn prepare(&mut self) -> Result<(), BackendError>;

    /// Can it hold network bans (prefix grouping, manual network bans), or single
    /// addresses only?
    fn holds_networks(&self) -> bool {
        false
    }

    /// Ban `key` (timeout `None` = permanent). `Ok` only when the kernel accepted it.
    /// Backends that do not expire bans by themselves ignore the timeout.
    fn add(&mut self, key: IpNet, timeout: Option<Duration>) -> Result<(), BackendError>;

    /// Ban many, e.g. to put saved bans back at start. The default adds them one by one
    /// and stops at the first error; a backend may do it in one batch.
    fn add_many(&mut self, bans: &[(IpNet, Option<Duration>)]) -> Result<(), BackendError> {
        for &(key, timeout) in bans {
            self.add(key, timeout)?;
        }
        Ok(())
    }

    /// Lift a ban; `Ok(false)` if it was not there.
    fn remove(&mut self, key: IpNet) -> Result<bool, BackendError>;

    /// The bans this backend holds now, each once, with what the kernel knows of their
    /// end (for restore/adopt at start and for `list`).
    fn list(&mut self) -> Result<Vec<Held>, BackendError>;

    /// Which of `keys` the backend holds now, with what it knows of their end; keys it
    /// does not hold are left out. For the start's reconciliation of a bounded book
    /// with sets that may be far larger. The default filters [`list`](Self::list); a
    /// backend whose listing grows with its size (nftables) looks the keys up.
    fn holds(&mut self, keys: &[IpNet]) -> Result<Vec<Held>, BackendError> {
        let wanted: std::collections::HashSet<IpNet> = keys.iter().copied().collect();
        Ok(self
            .list()?
            .into_iter()
            .filter(|h| wanted.contains(&h.key))
            .collect())
    }

    /// At most `limit` of the bans held (which ones, when there are more, is the
    /// backend's choice), and whether it holds more. The default truncates
    /// [`list`](Self::list); nftables stops reading the kernel at the limit.
    fn list_at_most(&mut self, limit: usize) -> Result<(Vec<Held>, bool), BackendError> {
        let mut held = self.list()?;
        let more = held.len() > limit;
        held.truncate(limit);
        Ok((held, more))
    }

    /// The longest ban timeout the kernel can hold (`None`: no limit, as for backends
    /// that keep no timeout at all). A longer ban must be refused (or made permanent) by
    /// the caller: the backend would cut it short.
    fn max_timeout(&self) -> Option<Duration> {
        None
    }

    /// Does the backend expire bans by itself (nftables, ipset: yes; routes,
    /// iptables: no — the caller must [`remove`](Self::remove) them at expiry)?
    fn expires_by_itself(&self) -> bool;

    /// Remove everything this backend installed (uninstall / flush --all). Idempotent.
    fn teardown(&mut self) -> Result<(), BackendError>;
}

/// One ban a backend holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub key: IpNet,
    pub expiry: Expiry,
}

/// What a backend knows about the end of a ban it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The backend keeps no timeout (an iptables rule, a route).
    Unknown,
    /// It never expires.
    Permanent,
    /// It ends in `left`. `timeout` is the length it was added with, when the kernel
    /// keeps that too (nftables; ipset only reports the time left).
    In {
        left: Duration,
        timeout: Option<Duration>,
    },
}

impl Expiry {
    /// From a kernel element's time left (`None`: never expires).
    pub fn from_left(left: Option<Duration>, timeout: Option<Duration>) -> Self {
        match left {
            None => Expiry::Permanent,
            Some(left) => Expiry::In { left, timeout },
        }
    }

    /// Time left when known; `None` for permanent and unknown.
    pub fn left(self) -> Option<Duration> {
        match self {
            Expiry::In { left, .. } => Some(left),
            Expiry::Unknown | Expiry::Permanent => None,
        }
    }
}

/// The address of a single-host key (`/32`, `/128`); `None` for a network.
pub fn host_of(key: IpNet) -> Option<IpAddr> {
    (key.prefix_len() == key.max_prefix_len()).then(|| key.addr())
}

/// The address of `key` for a backend that holds single addresses only.
fn host_key(key: IpNet) -> Result<IpAddr, BackendError> {
    host_of(key).ok_or(BackendError::NetworkUnsupported(key))
}

/// [`Held`] elements of a host-only backend that keeps no timeouts.
fn held_unknown(addrs: Vec<IpAddr>) -> Vec<Held> {
    addrs
        .into_iter()
        .map(|a| Held {
            key: IpNet::from(a),
            expiry: Expiry::Unknown,
        })
        .collect()
}

/// The backends this host supports, best first (empty when none answers).
///
/// Preference, and why:
/// 1. ipset — when `ipset` answers a kernel query (`ipset list -n`: tool present and
///    the `ip_set` module loads) and `iptables` and `ip6tables` answer too (the set
///    needs one rule each). Bans expire in the kernel even if the daemon dies, and the
///    per-packet cost does not grow with the number of bans.
/// 2. iptables — when `iptables -S INPUT` and `ip6tables -S INPUT` answer. Drops the
///    attacker's packets, but one rule per ban and the daemon must expire them.
/// 3. route — when a `NETLINK_ROUTE` socket opens (every Linux host). Only stops
///    replies to the banned host.
///
/// Detection only reads: it creates no set, rule or route. The kernel's `xt_set` match
/// is only proven by [`BanBackend::prepare`]; a caller that sees `prepare` fail may fall
/// back to the next backend.
pub fn candidates() -> Vec<Box<dyn BanBackend>> {
    let mut found: Vec<Box<dyn BanBackend>> = Vec::new();
    let iptables = IptablesBackend::available();
    if iptables && IpsetBackend::available() {
        found.push(Box::new(IpsetBackend::new()));
    }
    if iptables {
        found.push(Box::new(IptablesBackend::new()));
    }
    if let Ok(route) = RouteBackend::new(RouteKind::default()) {
        found.push(Box::new(route));
    }
    found
}

/// The best backend this host supports (the first of [`candidates`]).
pub fn detect() -> Option<Box<dyn BanBackend>> {
    candidates().into_iter().next()
}

/// A failed ban backend operation, with the tool's stderr or the kernel's error.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{0} cannot be banned (unspecified or multicast address)")]
    InvalidAddress(IpAddr),
    #[error("{0} is a network: this backend bans single addresses only")]
    NetworkUnsupported(IpNet),

    // ---- nftables backend ----
    #[error("cannot open the nf_tables netlink socket: {0}")]
    OpenNftables(#[source] io::Error),
    #[error("the kernel refused the ban of {addr}: {source}")]
    AddElement {
        addr: IpAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot put {count} bans into the kernel sets: {source}")]
    AddElements {
        count: usize,
        #[source]
        source: io::Error,
    },
    #[error("cannot delete the kernel element {addr}: {source}")]
    DeleteElement {
        addr: IpAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the kernel ban sets: {0}")]
    ListElements(#[source] io::Error),
    #[error(transparent)]
    Nft(#[from] NftError),

    // ---- route backend ----
    #[error("cannot open a NETLINK_ROUTE socket: {0}")]
    OpenNetlink(#[source] io::Error),
    #[error("the kernel refused the {kind} route for {addr}: {source}")]
    AddRoute {
        addr: IpAddr,
        kind: RouteKind,
        #[source]
        source: io::Error,
    },
    #[error(
        "a route for {addr} that portsentry did not install is in the main table; \
         it is left alone and {addr} is not banned"
    )]
    ForeignRoute { addr: IpAddr },
    #[error("the kernel refused to delete our route for {addr}: {source}")]
    DeleteRoute {
        addr: IpAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot list our routes: {0}")]
    ListRoutes(#[source] io::Error),

    // ---- ipset backend ----
    #[error("cannot create ipset set {set}: {source}")]
    CreateSet {
        set: &'static str,
        #[source]
        source: CommandError,
    },
    #[error("cannot insert the rule that drops members of set {set}: {source}")]
    InsertSetRule {
        set: &'static str,
        #[source]
        source: CommandError,
    },
    #[error("cannot add {addr} to set {set}: {source}")]
    AddToSet {
        set: &'static str,
        addr: IpAddr,
        #[source]
        source: CommandError,
    },
    #[error("cannot restore {count} bans into the ipset sets: {source}")]
    RestoreSets {
        count: usize,
        #[source]
        source: CommandError,
    },
    #[error("cannot delete {addr} from set {set}: {source}")]
    DeleteFromSet {
        set: &'static str,
        addr: IpAddr,
        #[source]
        source: CommandError,
    },
    #[error("cannot list the ipset sets: {0}")]
    ListSets(#[source] CommandError),
    #[error("cannot list set {set}: {source}")]
    ListSet {
        set: &'static str,
        #[source]
        source: CommandError,
    },
    #[error("cannot delete the rule that drops members of set {set}: {source}")]
    DeleteSetRule {
        set: &'static str,
        #[source]
        source: CommandError,
    },
    #[error("cannot destroy set {set}: {source}")]
    DestroySet {
        set: &'static str,
        #[source]
        source: CommandError,
    },

    // ---- iptables backend ----
    #[error("cannot insert the DROP rule for {addr}: {source}")]
    InsertRule {
        addr: IpAddr,
        #[source]
        source: CommandError,
    },
    #[error("cannot delete the DROP rule for {addr}: {source}")]
    DeleteRule {
        addr: IpAddr,
        #[source]
        source: CommandError,
    },
    #[error("cannot list the INPUT chain: {0}")]
    ListRules(#[source] CommandError),
}

impl BackendError {
    /// Did the kernel refuse because the ban set is full (nftables: ENFILE, the set's
    /// `size` reached)? Retrying is pointless until an element expires.
    pub fn is_set_full(&self) -> bool {
        match self {
            BackendError::AddElement { source, .. } | BackendError::AddElements { source, .. } => {
                crate::nft::kernel_errno(source) == Some(libc::ENFILE)
            }
            _ => false,
        }
    }
}

/// The canonical form of a ban target; refuses addresses that are never a packet's
/// source (unspecified, multicast, IPv4 broadcast).
fn ban_target(addr: IpAddr) -> Result<IpAddr, BackendError> {
    let addr = addr.to_canonical();
    let bad = addr.is_unspecified()
        || addr.is_multicast()
        || matches!(addr, IpAddr::V4(v4) if v4.is_broadcast());
    if bad {
        Err(BackendError::InvalidAddress(addr))
    } else {
        Ok(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_targets_are_canonical_and_sources_only() {
        let t = |s: &str| ban_target(s.parse().unwrap());
        assert_eq!(
            t("::ffff:198.18.0.2").unwrap(),
            "198.18.0.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            t("fd00:5e17::2").unwrap(),
            "fd00:5e17::2".parse::<IpAddr>().unwrap()
        );
        for bad in ["0.0.0.0", "::", "224.0.0.1", "ff02::1", "255.255.255.255"] {
            assert!(
                matches!(t(bad), Err(BackendError::InvalidAddress(_))),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn errors_name_the_operation_and_the_cause() {
        let e = BackendError::AddToSet {
            set: SET4,
            addr: "198.18.0.2".parse().unwrap(),
            source: CommandError::Failed {
                command: "ipset add portsentry4 198.18.0.2 timeout 60 -exist".into(),
                status: "exit status 1".into(),
                stderr: "ipset v7.17: The set with the given name does not exist".into(),
            },
        };
        let text = e.to_string();
        assert!(text.starts_with("cannot add 198.18.0.2 to set portsentry4: "));
        assert!(text.contains("exit status 1"), "{text}");
        assert!(text.contains("does not exist"), "{text}");
        let e = BackendError::DeleteRoute {
            addr: "fd00:5e17::2".parse().unwrap(),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert!(e.to_string().contains("fd00:5e17::2"));
        assert!(e.to_string().contains("not permitted"), "{e}");
    }
}
