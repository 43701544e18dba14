//! The bans we hold in the kernel's nftables sets, and their book: ban time, escalation
//! and offence counts per [`BanPolicy`], written to the sets over netlink (no process
//! forked per ban) and kept in the state file so they survive restarts and `kill -9`.
//!
//! Owned by the reporter thread. Invariants:
//! - a ban is logged as in force only after the kernel acknowledged the element;
//! - the state file is rewritten at most once per [`SAVE_INTERVAL`] while bans change
//!   (and at stop); what a crash loses in between is recovered at start from the kernel
//!   set itself, which the kernel keeps and expires on its own;
//! - at start, live bans missing from the set go back in one batch with their remaining
//!   time, elements the kernel added on its own are adopted into the book, expired
//!   bans are not re-added: no unban-and-reban storm.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use ipnet::IpNet;
use portsentry_engine::bans::{Ban, BanBook, BanPolicy};

use crate::nft::{BanSetWriter, Nft};
use crate::store;

/// Longest time a changed book waits before it is saved.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// Records the book keeps (live bans and remembered offenders).
pub const BOOK_CAPACITY: usize = 1 << 20;

/// Seconds since the Unix epoch, for ban expiry that must survive reboots.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Summary of a start-up restore, for the log.
#[derive(Debug, Default, Clone, Copy)]
pub struct Restored {
    pub put_back: usize,
    pub already_in_kernel: usize,
    pub adopted_from_kernel: usize,
    pub expired_dropped: usize,
}

pub struct KernelBans {
    writer: BanSetWriter,
    /// For network bans (prefix grouping), which live in interval sets.
    nft: Nft,
    book: BanBook,
    policy: BanPolicy,
    state_file: PathBuf,
    dirty: bool,
    last_save: Instant,
}

/// The result of banning one source.
pub struct Banned {
    pub ban: Ban,
    /// The element's timeout in the kernel (None = permanent).
    pub timeout: Option<Duration>,
    /// The set that holds it.
    pub set: &'static str,
}

impl KernelBans {
    /// Load the book from the state file and reconcile it with the kernel set.
    pub fn start(table: &str, policy: BanPolicy, state_file: PathBuf) -> Result<(Self, Restored)> {
        let now = unix_now();
        let loaded = store::load(&state_file, now).map_err(|e| {
            anyhow::anyhow!(
                "{e}\n(the state file holds the bans in force; to start without them, move it aside: mv {0} {0}.broken)",
                state_file.display()
            )
        })?;
        let expired_dropped = loaded.expired;
        let mut book = loaded.into_book(BOOK_CAPACITY);
        let mut writer =
            BanSetWriter::open(table).context("cannot open the nf_tables netlink socket")?;
        let in_kernel = writer
            .list()
            .with_context(|| format!("cannot read the ban sets of table inet {table}"))?;
        let kernel_addrs: HashSet<IpAddr> = in_kernel.iter().map(|k| k.addr).collect();

        let mut restored = Restored {
            expired_dropped,
            ..Restored::default()
        };
        let nft = Nft::new(table)?;
        let nets_in_kernel: HashSet<IpNet> = nft.list_net_bans()?.into_iter().collect();
        let mut to_add = Vec::new();
        let mut nets_to_add = Vec::new();
        for ban in book.active(now) {
            let Some(addr) = host_of(ban.key) else {
                if nets_in_kernel.contains(&ban.key) {
                    restored.already_in_kernel += 1;
                } else {
                    nets_to_add.push((ban.key, remaining(ban, now)));
                }
                continue;
            };
            if kernel_addrs.contains(&addr) {
                restored.already_in_kernel += 1;
            } else {
                to_add.push((addr, remaining(ban, now)));
            }
        }
        if !to_add.is_empty() {
            writer
                .add_many(&to_add)
                .context("cannot put the saved bans back into the kernel set")?;
            restored.put_back = to_add.len();
        }
        nft.add_net_bans(&nets_to_add)
            .context("cannot put the saved network bans back into the kernel")?;
        restored.put_back += nets_to_add.len();
        // Elements the kernel added by itself since the last save (the trap rules ban
        // without us), e.g. before a kill -9: adopt them so they are listed and escalate.
        for k in in_kernel {
            if book.is_banned(k.addr, now) {
                continue;
            }
            let key = IpNet::from(k.addr);
            let expires_at = k.expires.map(|e| now + e.as_secs().max(1));
            let banned_at = match (k.timeout, k.expires) {
                (Some(t), Some(e)) => now.saturating_sub(t.saturating_sub(e).as_secs()),
                _ => now,
            };
            book.restore(Ban {
                key,
                offences: 1,
                banned_at,
                expires_at,
                last_offence: banned_at,
                reason: "found in the kernel ban set at start".into(),
            });
            restored.adopted_from_kernel += 1;
        }
        let mut bans = KernelBans {
            writer,
            nft,
            book,
            policy,
            state_file,
            dirty: true,
            last_save: Instant::now(),
        };
        bans.save(now)?;
        Ok((bans, restored))
    }

    pub fn policy(&self) -> &BanPolicy {
        &self.policy
    }

    /// Record an offence by `ip` and make the kernel hold the resulting ban.
    /// `kernel_banned`: the trap rule already added `ip` with the set's default timeout.
    pub fn ban(
        &mut self,
        ip: IpAddr,
        kernel_banned: bool,
        reason: &str,
    ) -> std::io::Result<Banned> {
        let now = unix_now();
        let ban = self.book.offend(&self.policy, ip, now, reason);
        let timeout = remaining(&ban, now);
        // The kernel's own element already has the right timeout only on a first
        // offence; escalated and permanent bans are rewritten.
        let kernel_is_right = kernel_banned && timeout == Some(self.policy.ban_time);
        let set = if host_of(ban.key).is_none() {
            // Prefix grouping: the whole network goes into the interval set.
            self.nft
                .add_net_bans(&[(ban.key, timeout)])
                .map_err(std::io::Error::other)?;
            if ip.is_ipv4() {
                "bannednet4"
            } else {
                "bannednet6"
            }
        } else {
            if !kernel_is_right {
                self.writer.add(ip, timeout)?;
            }
            if ip.is_ipv4() { "banned4" } else { "banned6" }
        };
        self.dirty = true;
        Ok(Banned { ban, timeout, set })
    }

    /// An administrator's ban of a host or network (`None` = permanent). It counts as
    /// an offence, like 1.2's history, so a later scan escalates from it.
    pub fn manual_ban(&mut self, net: IpNet, duration: Option<Duration>) -> Result<Ban> {
        let now = unix_now();
        let ban = self.book.ban(
            &self.policy,
            net,
            now,
            duration,
            "banned by the administrator",
        );
        let timeout = remaining(&ban, now);
        match host_of(ban.key) {
            Some(addr) => self
                .writer
                .add(addr, timeout)
                .context("the kernel refused the ban")?,
            None => self.nft.add_net_bans(&[(ban.key, timeout)])?,
        }
        self.dirty = true;
        Ok(ban)
    }

    /// Lift the ban covering `net` (exact, or the most specific one containing it).
    /// Returns the lifted ban; the kernel element is deleted.
    pub fn unban(&mut self, net: IpNet) -> Result<Option<Ban>> {
        let now = unix_now();
        let Some(ban) = self.book.unban(net, now) else {
            // Not in the book; it may still be an element the kernel added by itself.
            if let Some(addr) = host_of(net)
                && self
                    .writer
                    .delete(addr)
                    .context("cannot delete the kernel element")?
            {
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
        match host_of(ban.key) {
            Some(addr) => {
                self.writer
                    .delete(addr)
                    .context("cannot delete the kernel element")?;
            }
            None => self.nft.remove_net_bans(&[ban.key])?,
        }
        self.dirty = true;
        Ok(Some(ban))
    }

    /// Save when the book changed and the last save is old enough (or `force`).
    /// Returns an error message to log, never fails the caller.
    pub fn maybe_save(&mut self, force: bool) -> Option<String> {
        if !self.dirty || (!force && self.last_save.elapsed() < SAVE_INTERVAL) {
            return None;
        }
        self.save(unix_now()).err().map(|e| format!("{e:#}"))
    }

    /// Bans that ran out since the last call (the kernel already dropped them).
    pub fn take_expired(&mut self) -> Vec<Ban> {
        let expired = self.book.take_expired(unix_now());
        if !expired.is_empty() {
            self.dirty = true;
        }
        expired
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
