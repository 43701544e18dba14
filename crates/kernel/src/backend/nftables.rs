//! Bans in our nftables table, behind the same [`BanBackend`] trait as the fallbacks:
//! - single hosts go into `banned4`/`banned6` over netlink ([`BanSetWriter`]: one
//!   batch, no process forked), the sets the kernel's own trap rules add to;
//! - networks (prefix grouping, manual network bans) go into the interval sets
//!   `bannednet4`/`bannednet6` through `nft` ([`Nft`]): rare, so forking is fine.
//!
//! Every element carries its own kernel timeout, so the kernel expires bans by itself,
//! also while the daemon is down. [`BanBackend::list`] reports each element's time
//! left and its timeout: to the millisecond for hosts (netlink dump), in whole seconds
//! for networks (`nft -j`).
//!
//! The table itself is applied, verified and removed by [`Nft`]; this backend only
//! touches the elements of the four ban sets.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::{BackendError, BanBackend, Expiry, Held, host_of};
use crate::nft::{BanSetWriter, Nft};

/// Bans in our nftables table; see the module documentation.
pub struct NftablesBackend {
    writer: BanSetWriter,
    nft: Nft,
}

impl std::fmt::Debug for NftablesBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NftablesBackend")
            .field("table", &self.nft.table())
            .finish_non_exhaustive()
    }
}

impl NftablesBackend {
    /// Opens the netlink socket for the ban sets of `inet <table>` (in the calling
    /// thread's network namespace). The table need not exist yet.
    pub fn open(table: &str) -> Result<Self, BackendError> {
        let nft = Nft::new(table)?;
        let writer = BanSetWriter::open(table).map_err(BackendError::OpenNftables)?;
        Ok(NftablesBackend { writer, nft })
    }

    pub fn table(&self) -> &str {
        self.nft.table()
    }
}

/// The set that holds a ban of `key`, as ban lines name it ("nftables set banned4").
pub fn set_of(key: IpNet) -> String {
    match (key, host_of(key).is_some()) {
        (IpNet::V4(_), true) => "nftables set banned4".into(),
        (IpNet::V6(_), true) => "nftables set banned6".into(),
        (IpNet::V4(_), false) => format!("nftables set bannednet4: {key}"),
        (IpNet::V6(_), false) => format!("nftables set bannednet6: {key}"),
    }
}

impl BanBackend for NftablesBackend {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn place(&self, key: IpNet) -> String {
        set_of(key)
    }

    /// Nothing: the caller applies the table ([`Nft::apply`]).
    fn prepare(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    fn holds_networks(&self) -> bool {
        true
    }

    fn add(&mut self, key: IpNet, timeout: Option<Duration>) -> Result<(), BackendError> {
        match host_of(key) {
            Some(addr) => self
                .writer
                .add(addr, timeout)
                .map_err(|source| BackendError::AddElement { addr, source }),
            None => Ok(self.nft.add_net_bans(&[(key, timeout)])?),
        }
    }

    /// Hosts in one netlink batch, networks in one `nft` transaction.
    fn add_many(&mut self, bans: &[(IpNet, Option<Duration>)]) -> Result<(), BackendError> {
        let (hosts, nets): (Vec<_>, Vec<_>) = bans.iter().partition(|(k, _)| host_of(*k).is_some());
        let hosts: Vec<(IpAddr, Option<Duration>)> =
            hosts.into_iter().map(|(k, t)| (k.addr(), t)).collect();
        if !hosts.is_empty() {
            self.writer
                .add_many(&hosts)
                .map_err(|source| BackendError::AddElements {
                    count: hosts.len(),
                    source,
                })?;
        }
        Ok(self.nft.add_net_bans(&nets)?)
    }

    /// For a network, `Ok(true)` whether or not it was there (`nft` does not say).
    fn remove(&mut self, key: IpNet) -> Result<bool, BackendError> {
        match host_of(key) {
            Some(addr) => self
                .writer
                .delete(addr)
                .map_err(|source| BackendError::DeleteElement { addr, source }),
            None => {
                self.nft.remove_net_bans(&[key])?;
                Ok(true)
            }
        }
    }

    fn list(&mut self) -> Result<Vec<Held>, BackendError> {
        let mut held: Vec<Held> = self
            .writer
            .list()
            .map_err(BackendError::ListElements)?
            .into_iter()
            .map(|k| Held {
                key: IpNet::from(k.addr),
                expiry: Expiry::from_left(k.expires, k.timeout),
            })
            .collect();
        held.extend(self.nft.list_net_bans()?.into_iter().map(|n| Held {
            key: n.net,
            expiry: Expiry::from_left(n.expires, n.timeout),
        }));
        Ok(held)
    }

    /// Hosts by single-element lookups (the cost of `keys`, not of the sets: a
    /// million elements would take the kernel minutes to dump), networks from the
    /// (small) interval sets.
    fn holds(&mut self, keys: &[IpNet]) -> Result<Vec<Held>, BackendError> {
        let hosts: Vec<IpAddr> = keys.iter().filter_map(|k| host_of(*k)).collect();
        let mut held: Vec<Held> = self
            .writer
            .lookup(&hosts)
            .map_err(BackendError::ListElements)?
            .into_iter()
            .map(|k| Held {
                key: IpNet::from(k.addr),
                expiry: Expiry::from_left(k.expires, k.timeout),
            })
            .collect();
        if keys.iter().any(|k| host_of(*k).is_none()) {
            let nets: std::collections::HashSet<IpNet> = keys.iter().copied().collect();
            held.extend(
                self.nft
                    .list_net_bans()?
                    .into_iter()
                    .filter(|n| nets.contains(&n.net))
                    .map(|n| Held {
                        key: n.net,
                        expiry: Expiry::from_left(n.expires, n.timeout),
                    }),
            );
        }
        Ok(held)
    }

    /// The dump of the host sets stops at `limit` (its cost grows with the square of
    /// what is read); network bans are listed whole (interval sets, written only by
    /// the daemon, small).
    fn list_at_most(&mut self, limit: usize) -> Result<(Vec<Held>, bool), BackendError> {
        let (hosts, more) = self
            .writer
            .list_at_most(limit)
            .map_err(BackendError::ListElements)?;
        let mut held: Vec<Held> = hosts
            .into_iter()
            .map(|k| Held {
                key: IpNet::from(k.addr),
                expiry: Expiry::from_left(k.expires, k.timeout),
            })
            .collect();
        held.extend(self.nft.list_net_bans()?.into_iter().map(|n| Held {
            key: n.net,
            expiry: Expiry::from_left(n.expires, n.timeout),
        }));
        Ok((held, more))
    }

    /// The kernel's limit for an element's timeout (milliseconds whose count of
    /// nanoseconds fits 64 bits, about 584 years); `nft` takes the same limit.
    fn max_timeout(&self) -> Option<Duration> {
        Some(Duration::from_millis(crate::nft::MAX_TIMEOUT_MS))
    }

    fn expires_by_itself(&self) -> bool {
        true
    }

    /// Deletes our whole table (traps and bans).
    fn teardown(&mut self) -> Result<(), BackendError> {
        Ok(self.nft.remove()?)
    }
}
