//! Bans: ban time, escalation and offence counts per [`BanPolicy`](portsentry_engine::bans::BanPolicy) of each evidence class, written to the
//! kernel through one [`BanBackend`] (our nftables sets, or ipset, iptables, blackhole
//! routes on hosts without nftables) and kept in the state file so they survive
//! restarts and `kill -9`.
//!
//! Two parts, the shape of "two cores, one driver" (STYLE.md):
//! - [`BanLifecycle`] (`lifecycle.rs`) decides, sans-IO: every method takes `now`; it
//!   is tested with an in-memory backend under a simulated clock (`tests.rs`);
//! - [`StateFile`] and [`start`] are the thin shell the reporter thread drives: they
//!   read the clock ([`crate::clock`]), load and save the state file
//!   ([`crate::store`]) and hand values to the lifecycle.
//!
//! Owned by the reporter thread. The state file is rewritten at most once per
//! [`SAVE_INTERVAL`] while bans change (and at stop); what a crash loses in between is
//! recovered at start from the kernel itself, which keeps (and, for nftables and
//! ipset, expires) bans on its own.

mod budget;
pub mod guard;
mod lifecycle;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use portsentry_engine::bans::{Ban, BanBook, BanPolicies};
use portsentry_engine::ignore::IgnoreSet;
use portsentry_kernel::backend::BanBackend;

pub use budget::BanBudget;
pub use lifecycle::{
    Admission, BanError, BanLifecycle, Banned, ManualBan, Restored, by_administrator,
    reason_is_manual,
};

use crate::clock::{self, Now};
use crate::store;

/// Longest time a changed book waits before it is saved.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// Past this many records a save (the whole file, fsync'd) is spaced out to
/// [`SAVE_INTERVAL_LARGE`]: under a flood of bans the kernel keeps them anyway, and
/// what a crash loses in between is adopted back from the kernel at start.
pub const LARGE_BOOK: usize = 10_000;
pub const SAVE_INTERVAL_LARGE: Duration = Duration::from_secs(10);
/// Records the book keeps (live bans and remembered offenders): about 600 bytes each in
/// memory with their indexes (~40 MiB when full, measured by the `book_memory` example)
/// and ~170 bytes each in the state file. The kernel sets hold up to
/// [`portsentry_kernel::nft::DEFAULT_SET_SIZE`] bans per family regardless; past this
/// bound the book forgets offence history first, then the bans ending soonest (their
/// kernel elements still expire on their own).
pub const BOOK_CAPACITY: usize = 65_536;

/// Loading or saving the state file failed, or the start's reconciliation did.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "{error}\n(the state file holds the bans in force; to start without them, move it aside: mv {path} {path}.broken)"
    )]
    Load {
        path: PathBuf,
        error: store::StoreError,
    },
    #[error("cannot save {path}: {error}")]
    Save {
        path: PathBuf,
        error: store::StoreError,
    },
    #[error(transparent)]
    Bans(#[from] BanError),
}

/// The state file that keeps the book across restarts.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    /// The last fleet stream ID read: loaded with the book, saved with it.
    fleet_id: std::cell::RefCell<Option<String>>,
}

impl StateFile {
    pub fn new(path: PathBuf) -> Self {
        StateFile {
            path,
            fleet_id: std::cell::RefCell::new(None),
        }
    }

    /// The last fleet stream ID, as loaded or last set.
    pub fn fleet_id(&self) -> Option<String> {
        self.fleet_id.borrow().clone()
    }

    /// Keep `id` as the last fleet stream ID read (written with the next save).
    pub fn set_fleet_id(&self, id: Option<String>) {
        *self.fleet_id.borrow_mut() = id;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The book as saved (bounded by [`BOOK_CAPACITY`]), how many of its bans ended by
    /// `now` (Unix seconds), and the records a file over the capacity lost.
    pub fn load(&self, now: u64) -> Result<(BanBook, usize, Vec<Ban>), StateError> {
        let loaded = store::load(&self.path, now).map_err(|error| StateError::Load {
            path: self.path.clone(),
            error,
        })?;
        let expired = loaded.expired;
        self.set_fleet_id(loaded.fleet_last_id.clone());
        let (book, dropped) = loaded.into_book_reporting(BOOK_CAPACITY);
        Ok((book, expired, dropped))
    }

    /// Write the book now.
    pub fn save(&self, bans: &mut BanLifecycle, now: Now) -> Result<(), StateError> {
        let fleet_id = self.fleet_id();
        store::save_with_fleet(&self.path, bans.book(), now.unix, fleet_id.as_deref()).map_err(
            |error| StateError::Save {
                path: self.path.clone(),
                error,
            },
        )?;
        bans.saved(now.mono);
        Ok(())
    }

    /// Save when [`BanLifecycle::save_due`] says so (or `force` and changed). Returns
    /// an error text to log; never fails the caller.
    pub fn save_if_due(&self, bans: &mut BanLifecycle, now: Now, force: bool) -> Option<String> {
        if !bans.save_due(now.mono, force) {
            return None;
        }
        let err = self.save(bans, now).err()?;
        // Tried: the next try waits the save interval too (a full disk must not be
        // retried, and logged, every reporter tick).
        bans.save_failed(now.mono);
        Some(format!("{err:#}"))
    }
}

/// Load the book from `state`, reconcile it with `backend` (`None`: only record what
/// the legacy KILL_* commands do) and the `protected` set, and save the result: the
/// daemon's start.
pub fn start(
    state: &StateFile,
    policies: BanPolicies,
    backend: Option<Box<dyn BanBackend>>,
    protected: IgnoreSet,
) -> Result<(BanLifecycle, Restored), StateError> {
    let now = clock::now();
    let (book, expired, over_capacity) = state.load(now.unix)?;
    let (mut bans, mut restored) =
        BanLifecycle::start(book, expired, policies, backend, protected, now.unix)?;
    restored.over_capacity = over_capacity;
    state.save(&mut bans, now)?;
    Ok((bans, restored))
}

/// Human form of a ban length for tables ("1h", "2h", "permanent").
pub fn describe(timeout: Option<Duration>) -> String {
    match timeout {
        None => "permanent".into(),
        Some(d) => humantime::format_duration(d).to_string(),
    }
}
