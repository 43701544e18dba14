//! Ban backends for hosts without nftables: bans that can still be listed, lifted and
//! (where the kernel can) expired, behind one trait, [`BanBackend`].
//!
//! Three backends, in the order [`detect`] prefers them:
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
mod route;

#[cfg(test)]
mod kernel_tests;

use std::io;
use std::net::IpAddr;
use std::time::Duration;

pub use command::{COMMAND_TIME_LIMIT, CommandError};
pub use ipset::{IPSET_MAX_TIMEOUT, IpsetBackend, SET_MAXELEM, SET4, SET6};
pub use iptables::{IptablesBackend, RULE_COMMENT};
pub use route::{ROUTE_PROTOCOL, RouteBackend, RouteKind};

/// A way to keep banned sources out without nftables.
///
/// Implementations are `Send` so that the daemon can build one at start and hand it to
/// the thread that bans.
pub trait BanBackend: Send {
    /// `"route"`, `"ipset"` or `"iptables"`.
    fn name(&self) -> &'static str;

    /// Install whatever one-time state the backend needs (ipset sets + the one iptables
    /// rule that matches them; nothing for routes). Idempotent.
    fn prepare(&mut self) -> Result<(), FallbackError>;

    /// Ban `addr` (timeout `None` = permanent). `Ok` only when the kernel accepted it.
    /// Backends that do not expire bans by themselves ignore the timeout.
    fn add(&mut self, addr: IpAddr, timeout: Option<Duration>) -> Result<(), FallbackError>;

    /// Ban many addresses, e.g. to put saved bans back at start. The default adds them
    /// one by one and stops at the first error; a backend may do it in one batch.
    fn add_many(&mut self, bans: &[(IpAddr, Option<Duration>)]) -> Result<(), FallbackError> {
        for &(addr, timeout) in bans {
            self.add(addr, timeout)?;
        }
        Ok(())
    }

    /// Lift a ban; `Ok(false)` if it was not there.
    fn remove(&mut self, addr: IpAddr) -> Result<bool, FallbackError>;

    /// Addresses currently banned by this backend (for restore/adopt at start and for
    /// `list`), each once.
    fn list(&mut self) -> Result<Vec<IpAddr>, FallbackError>;

    /// Does the backend expire bans by itself (ipset with timeout: yes; routes,
    /// iptables: no — the daemon must call [`remove`](Self::remove) at expiry)?
    fn expires_by_itself(&self) -> bool;

    /// Remove everything this backend installed (uninstall / flush --all). Idempotent.
    fn teardown(&mut self) -> Result<(), FallbackError>;
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
pub enum FallbackError {
    #[error("{0} cannot be banned (unspecified or multicast address)")]
    InvalidAddress(IpAddr),

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

/// The canonical form of a ban target; refuses addresses that are never a packet's
/// source (unspecified, multicast, IPv4 broadcast).
fn ban_target(addr: IpAddr) -> Result<IpAddr, FallbackError> {
    let addr = addr.to_canonical();
    let bad = addr.is_unspecified()
        || addr.is_multicast()
        || matches!(addr, IpAddr::V4(v4) if v4.is_broadcast());
    if bad {
        Err(FallbackError::InvalidAddress(addr))
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
                matches!(t(bad), Err(FallbackError::InvalidAddress(_))),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn errors_name_the_operation_and_the_cause() {
        let e = FallbackError::AddToSet {
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
        let e = FallbackError::DeleteRoute {
            addr: "fd00:5e17::2".parse().unwrap(),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert!(e.to_string().contains("fd00:5e17::2"));
        assert!(e.to_string().contains("not permitted"), "{e}");
    }
}
