//! The bans we hold in the kernel, and their book: ban time, escalation and offence
//! counts per [`BanPolicy`], written to the kernel (our nftables sets over netlink, or a
//! fallback backend — ipset, iptables, blackhole routes — on hosts without nftables) and
//! kept in the state file so they survive restarts and `kill -9`.
//!
//! Owned by the reporter thread. Invariants:
//! - a ban is logged as in force only after the kernel acknowledged it;
//! - the state file is rewritten at most once per [`SAVE_INTERVAL`] while bans change
//!   (and at stop); what a crash loses in between is recovered at start from the kernel
//!   itself, which keeps (and, for nftables and ipset, expires) bans on its own;
//! - at start, live bans missing from the kernel go back in one batch with their
//!   remaining time, bans the kernel holds that the book lacks are adopted, expired bans
//!   are not re-added: no unban-and-reban storm;
//! - backends that cannot expire bans (iptables, routes) get each ban removed when the
//!   book says it ended.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ipnet::IpNet;
use portsentry_engine::bans::{Ban, BanBook, BanPolicy};

use crate::clock::unix_now;
use crate::store;
use portsentry_kernel::backend::BanBackend;
use portsentry_kernel::nft::{BanSetWriter, Nft};

/// Longest time a changed book waits before it is saved.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// Past this many records a save (the whole file, fsync'd) is spaced out to
/// [`SAVE_INTERVAL_LARGE`]: under a flood of bans the kernel keeps them anyway, and
/// what a crash loses in between is adopted back from the kernel at start.
const LARGE_BOOK: usize = 10_000;
const SAVE_INTERVAL_LARGE: Duration = Duration::from_secs(10);
/// Records the book keeps (live bans and remembered offenders): about 600 bytes each in
/// memory with their indexes (~40 MiB when full, measured by the `book_memory` example)
/// and ~170 bytes each in the state file. The kernel sets hold up to
/// [`portsentry_kernel::nft::DEFAULT_SET_SIZE`] bans per family regardless; past this bound the book
/// forgets offence history first, then the bans ending soonest (their kernel elements
/// still expire on their own).
pub const BOOK_CAPACITY: usize = 65_536;

/// Summary of a start-up restore, for the log.
#[derive(Debug, Default, Clone, Copy)]
pub struct Restored {
    pub put_back: usize,
    pub already_in_kernel: usize,
    pub adopted_from_kernel: usize,
    pub expired_dropped: usize,
}

/// Where bans go in the kernel.
pub enum BanTarget {
    /// Our nftables table: host sets over netlink, network sets through `nft`.
    Nftables { writer: BanSetWriter, nft: Nft },
    /// ipset, iptables or blackhole routes (hosts only).
    Fallback(Box<dyn BanBackend>),
    /// No ban backend: the book only records what the legacy KILL_* commands did, so
    /// that `portsentry list` shows it (1.2 bans are permanent: it never lifts them).
    RecordOnly,
}

/// One ban the kernel holds: address, and time left when known (`None`: permanent or
/// unknown, see `expiry_known`).
struct Held {
    key: IpNet,
    expires: Option<Duration>,
    timeout: Option<Duration>,
    expiry_known: bool,
}

impl BanTarget {
    /// Where a ban on `key` lives, for log lines.
    fn place(&self, key: IpNet) -> String {
        let host = host_of(key).is_some();
        match (self, key) {
            (BanTarget::Nftables { .. }, IpNet::V4(_)) if host => "nftables set banned4".into(),
            (BanTarget::Nftables { .. }, IpNet::V6(_)) if host => "nftables set banned6".into(),
            (BanTarget::Nftables { .. }, IpNet::V4(_)) => format!("nftables set bannednet4: {key}"),
            (BanTarget::Nftables { .. }, IpNet::V6(_)) => format!("nftables set bannednet6: {key}"),
            (BanTarget::Fallback(b), _) => b.name().to_string(),
            (BanTarget::RecordOnly, _) => "KILL_* commands".into(),
        }
    }

    /// Put a ban into the kernel. Fallback backends hold single addresses only: a
    /// network ban (prefix grouping) falls back to the offending address itself.
    fn add(&mut self, key: IpNet, ip: IpAddr, timeout: Option<Duration>) -> Result<()> {
        match self {
            BanTarget::Nftables { writer, nft } => match host_of(key) {
                Some(addr) => writer
                    .add(addr, timeout)
                    .context("the kernel refused the ban"),
                None => Ok(nft.add_net_bans(&[(key, timeout)])?),
            },
            BanTarget::Fallback(b) => Ok(b.add(host_of(key).unwrap_or(ip), timeout)?),
            BanTarget::RecordOnly => Ok(()),
        }
    }

    fn add_many(&mut self, bans: &[(IpNet, Option<Duration>)]) -> Result<()> {
        match self {
            BanTarget::Nftables { writer, nft } => {
                let hosts: Vec<(IpAddr, Option<Duration>)> = bans
                    .iter()
                    .filter_map(|(k, t)| host_of(*k).map(|a| (a, *t)))
                    .collect();
                let nets: Vec<(IpNet, Option<Duration>)> = bans
                    .iter()
                    .filter(|(k, _)| host_of(*k).is_none())
                    .copied()
                    .collect();
                if !hosts.is_empty() {
                    writer
                        .add_many(&hosts)
                        .context("cannot put the saved bans back into the kernel set")?;
                }
                nft.add_net_bans(&nets)
                    .context("cannot put the saved network bans back into the kernel")?;
                Ok(())
            }
            BanTarget::Fallback(b) => {
                let hosts: Vec<(IpAddr, Option<Duration>)> = bans
                    .iter()
                    .filter_map(|(k, t)| host_of(*k).map(|a| (a, *t)))
                    .collect();
                Ok(b.add_many(&hosts)?)
            }
            BanTarget::RecordOnly => Ok(()),
        }
    }

    /// Lift the ban on `key`; false if the kernel did not hold it.
    fn remove(&mut self, key: IpNet) -> Result<bool> {
        match (self, host_of(key)) {
            (BanTarget::Nftables { writer, .. }, Some(addr)) => writer
                .delete(addr)
                .context("cannot delete the kernel element"),
            (BanTarget::Nftables { nft, .. }, None) => {
                nft.remove_net_bans(&[key])?;
                Ok(true)
            }
            (BanTarget::Fallback(b), Some(addr)) => Ok(b.remove(addr)?),
            (BanTarget::Fallback(_), None) | (BanTarget::RecordOnly, _) => Ok(false),
        }
    }

    /// Everything the kernel holds for us now.
    fn held(&mut self) -> Result<Vec<Held>> {
        match self {
            BanTarget::Nftables { writer, nft } => {
                let mut held: Vec<Held> = writer
                    .list()
                    .context("cannot read the kernel ban sets")?
                    .into_iter()
                    .map(|k| Held {
                        key: IpNet::from(k.addr),
                        expires: k.expires,
                        timeout: k.timeout,
                        expiry_known: true,
                    })
                    .collect();
                held.extend(nft.list_net_bans()?.into_iter().map(|key| Held {
                    key,
                    expires: None,
                    timeout: None,
                    expiry_known: false,
                }));
                Ok(held)
            }
            BanTarget::Fallback(b) => Ok(b
                .list()?
                .into_iter()
                .map(|addr| Held {
                    key: IpNet::from(addr),
                    expires: None,
                    timeout: None,
                    expiry_known: false,
                })
                .collect()),
            BanTarget::RecordOnly => Ok(Vec::new()),
        }
    }

    /// Can it hold network bans (prefix grouping, manual network bans)?
    fn holds_networks(&self) -> bool {
        matches!(self, BanTarget::Nftables { .. })
    }

    fn expires_by_itself(&self) -> bool {
        match self {
            BanTarget::Nftables { .. } | BanTarget::RecordOnly => true,
            BanTarget::Fallback(b) => b.expires_by_itself(),
        }
    }
}

pub struct KernelBans {
    target: BanTarget,
    book: BanBook,
    policy: BanPolicy,
    state_file: PathBuf,
    dirty: bool,
    last_save: Instant,
}

/// The result of banning one source.
pub struct Banned {
    pub ban: Ban,
    /// The ban's length in the kernel (None = permanent).
    pub timeout: Option<Duration>,
    /// Where it lives ("nftables set banned4", "ipset", ...).
    pub place: String,
}

impl KernelBans {
    /// Bans in our nftables table `table`.
    pub fn start_nftables(
        table: &str,
        policy: BanPolicy,
        state_file: PathBuf,
    ) -> Result<(Self, Restored)> {
        let writer =
            BanSetWriter::open(table).context("cannot open the nf_tables netlink socket")?;
        let target = BanTarget::Nftables {
            writer,
            nft: Nft::new(table)?,
        };
        Self::start(target, policy, state_file)
    }

    /// Bans through a fallback backend (already prepared).
    pub fn start_fallback(
        backend: Box<dyn BanBackend>,
        policy: BanPolicy,
        state_file: PathBuf,
    ) -> Result<(Self, Restored)> {
        Self::start(BanTarget::Fallback(backend), policy, state_file)
    }

    /// No ban backend: only record what the legacy commands did.
    pub fn start_record_only(policy: BanPolicy, state_file: PathBuf) -> Result<(Self, Restored)> {
        Self::start(BanTarget::RecordOnly, policy, state_file)
    }

    /// Does this put bans into the kernel itself (as opposed to only recording)?
    pub fn is_native(&self) -> bool {
        !matches!(self.target, BanTarget::RecordOnly)
    }

    /// Record a ban that a legacy KILL_ROUTE / KILL_RUN_CMD made (permanent: 1.2 has no
    /// command to lift it), so that it is listed and counts as an offence.
    pub fn record_legacy(&mut self, ip: IpAddr, reason: &str) {
        let now = unix_now();
        self.book
            .ban(&self.policy, IpNet::from(ip), now, None, reason);
        self.dirty = true;
    }

    /// Load the book from the state file and reconcile it with the kernel.
    fn start(
        mut target: BanTarget,
        policy: BanPolicy,
        state_file: PathBuf,
    ) -> Result<(Self, Restored)> {
        let now = unix_now();
        let loaded = store::load(&state_file, now).map_err(|e| {
            anyhow::anyhow!(
                "{e}\n(the state file holds the bans in force; to start without them, move it aside: mv {0} {0}.broken)",
                state_file.display()
            )
        })?;
        let mut restored = Restored {
            expired_dropped: loaded.expired,
            ..Restored::default()
        };
        let mut book = loaded.into_book(BOOK_CAPACITY);
        let held = target.held()?;
        let held_keys: HashSet<IpNet> = held.iter().map(|h| h.key).collect();

        restored.already_in_kernel = book
            .active(now)
            .filter(|b| held_keys.contains(&b.key))
            .count();
        let to_add = missing(&book, &target, &held_keys, now);
        target.add_many(&to_add)?;
        restored.put_back = to_add.len();

        // Bans the kernel holds that the book lacks: added by the kernel's own trap
        // rules while we were not reading (kill -9), or left by an earlier run. Adopt
        // them so they are listed, expire and escalate.
        for h in held {
            if book.is_banned(h.key.addr(), now) {
                continue;
            }
            let expires_at = if h.expiry_known {
                h.expires.map(|e| now + e.as_secs().max(1))
            } else {
                // Unknown length (iptables rule, route): give it a first-offence ban.
                policy.duration_for(1).map(|d| now + d.as_secs())
            };
            let banned_at = match (h.timeout, h.expires) {
                (Some(t), Some(e)) => now.saturating_sub(t.saturating_sub(e).as_secs()),
                _ => now,
            };
            book.restore(Ban {
                key: h.key,
                offences: 1,
                banned_at,
                expires_at,
                last_offence: banned_at,
                reason: "found in the kernel at start".into(),
            });
            restored.adopted_from_kernel += 1;
        }
        let mut bans = KernelBans {
            target,
            book,
            policy,
            state_file,
            dirty: true,
            last_save: Instant::now(),
        };
        bans.save(now)?;
        Ok((bans, restored))
    }

    /// Record an offence by `ip` and make the kernel hold the resulting ban.
    /// `kernel_banned`: an nftables trap rule already added `ip` with the set's default
    /// timeout.
    pub fn ban(&mut self, ip: IpAddr, kernel_banned: bool, reason: &str) -> Result<Banned> {
        let now = unix_now();
        let ban = self.book.offend(&self.policy, ip, now, reason);
        let timeout = remaining(&ban, now);
        // The kernel's own element already has the right timeout only on a first
        // offence of a single address; escalated, permanent and grouped bans are written.
        let kernel_is_right = kernel_banned
            && host_of(ban.key).is_some()
            && timeout == Some(self.policy.ban_time)
            && matches!(self.target, BanTarget::Nftables { .. });
        if !kernel_is_right {
            self.target.add(ban.key, ip, timeout)?;
        }
        self.dirty = true;
        Ok(Banned {
            place: self.target.place(ban.key),
            ban,
            timeout,
        })
    }

    /// An administrator's ban of a host or network (`None` = permanent). It counts as
    /// an offence, like 1.2's history, so a later scan escalates from it.
    pub fn manual_ban(&mut self, net: IpNet, duration: Option<Duration>) -> Result<Ban> {
        if host_of(net).is_none() && !self.target.holds_networks() {
            anyhow::bail!("network bans need the nftables backend; ban single addresses");
        }
        let now = unix_now();
        let ban = self.book.ban(
            &self.policy,
            net,
            now,
            duration,
            "banned by the administrator",
        );
        self.target.add(ban.key, net.addr(), remaining(&ban, now))?;
        self.dirty = true;
        Ok(ban)
    }

    /// Lift the ban covering `net` (exact, or the most specific one containing it).
    /// Returns the lifted ban; the kernel's copy is removed.
    pub fn unban(&mut self, net: IpNet) -> Result<Option<Ban>> {
        let now = unix_now();
        let Some(ban) = self.book.unban(net, now) else {
            // Not in the book; it may still be something the kernel added by itself.
            if self.target.remove(net)? {
                return Ok(Some(Ban {
                    key: net,
                    offences: 0,
                    banned_at: now,
                    expires_at: Some(now),
                    last_offence: now,
                    reason: "kernel element".into(),
                }));
            }
            return Ok(None);
        };
        self.target.remove(ban.key)?;
        self.dirty = true;
        Ok(Some(ban))
    }

    /// Put every ban in force that the kernel lacks back into it (after our table was
    /// re-created). Returns how many were put back.
    pub fn put_back_missing(&mut self) -> Result<usize> {
        let now = unix_now();
        let held: HashSet<IpNet> = self.target.held()?.into_iter().map(|h| h.key).collect();
        let to_add = missing(&self.book, &self.target, &held, now);
        self.target.add_many(&to_add)?;
        Ok(to_add.len())
    }

    /// Save when the book changed and the last save is old enough (or `force`).
    /// Returns an error message to log, never fails the caller.
    pub fn maybe_save(&mut self, force: bool) -> Option<String> {
        let interval = if self.book.len() > LARGE_BOOK {
            SAVE_INTERVAL_LARGE
        } else {
            SAVE_INTERVAL
        };
        if !self.dirty || (!force && self.last_save.elapsed() < interval) {
            return None;
        }
        self.save(unix_now()).err().map(|e| format!("{e:#}"))
    }

    /// Bans that ran out by `now` since the last call, and bans a full book dropped
    /// early (the caller tells them apart with the same `now`). The kernel already
    /// dropped expired nftables and ipset bans; iptables rules and routes are removed
    /// here. Returns each ended ban with an error text if its removal failed.
    pub fn take_expired(&mut self, now: u64) -> Vec<(Ban, Option<String>)> {
        let expired = self.book.take_expired(now);
        if expired.is_empty() {
            return Vec::new();
        }
        self.dirty = true;
        let remove = !self.target.expires_by_itself();
        expired
            .into_iter()
            .map(|ban| {
                let err = if remove {
                    self.target.remove(ban.key).err().map(|e| format!("{e:#}"))
                } else {
                    None
                };
                (ban, err)
            })
            .collect()
    }

    /// Does the kernel end bans by itself (nftables, ipset), or does the daemon remove
    /// them (iptables, routes)?
    pub fn expires_by_itself(&self) -> bool {
        self.target.expires_by_itself()
    }

    pub fn active_count(&self) -> usize {
        self.book.active(unix_now()).count()
    }

    fn save(&mut self, now: u64) -> Result<()> {
        store::save(&self.state_file, &self.book, now)
            .with_context(|| format!("cannot save {}", self.state_file.display()))?;
        self.dirty = false;
        self.last_save = Instant::now();
        Ok(())
    }
}

/// Bans in force that the kernel does not hold (`held`) and `target` can hold, with
/// their remaining time.
fn missing(
    book: &BanBook,
    target: &BanTarget,
    held: &HashSet<IpNet>,
    now: u64,
) -> Vec<(IpNet, Option<Duration>)> {
    book.active(now)
        .filter(|b| !held.contains(&b.key) && (target.holds_networks() || host_of(b.key).is_some()))
        .map(|b| (b.key, remaining(b, now)))
        .collect()
}

/// The address of a single-host key.
fn host_of(key: IpNet) -> Option<IpAddr> {
    (key.prefix_len() == key.max_prefix_len()).then(|| key.addr())
}

/// Time left on `ban` at `now`; None = permanent. At least one second, so an element
/// about to expire is not written as permanent by accident.
fn remaining(ban: &Ban, now: u64) -> Option<Duration> {
    ban.expires_at
        .map(|at| Duration::from_secs(at.saturating_sub(now).max(1)))
}

/// Human form of a ban length for log lines: "for 1h", "for 2h", "permanently".
pub fn for_how_long(timeout: Option<Duration>) -> String {
    match timeout {
        None => "permanently".into(),
        Some(d) => format!("for {}", humantime::format_duration(d)),
    }
}

/// Human form of a ban length for tables ("1h", "2h", "permanent").
pub fn describe(timeout: Option<Duration>) -> String {
    match timeout {
        None => "permanent".into(),
        Some(d) => humantime::format_duration(d).to_string(),
    }
}
