//! The ban lifecycle as a sans-IO core: it owns the [`BanBook`], the [`BanPolicy`] and
//! the [`BanBackend`] the bans go to, and decides how long a ban lasts, what it covers,
//! whether the kernel's own element is already right, what to put back and what to
//! remove. Time is an argument of every method (`now`: Unix seconds, because ban ends
//! survive reboots; `mono`: a monotonic reading, only for the save schedule). It never
//! reads a clock, a file or a socket itself: the backend is handed in, and the caller
//! loads the book before [`BanLifecycle::start`] and saves it when
//! [`BanLifecycle::save_due`] says so.
//!
//! Invariants:
//! - a ban is reported as in force only after the backend acknowledged it, and the book
//!   holds as in force only what the backend took (a refused add leaves the ban that
//!   was in force before, or none);
//! - the administrator's bans and every ban read back at start pass [`guard::check`]
//!   against the protected set the daemon last handed in ([`BanLifecycle::set_protected`]);
//!   those that fail are not put back, and their kernel elements are removed;
//! - at start, live bans missing from the kernel go back in one batch with their
//!   remaining time, elements the kernel holds that the book lacks are adopted (with
//!   their real remaining time when the backend knows it) as far as the book has room,
//!   expired bans are not re-added: no unban-and-reban storm. The work is bounded by
//!   the book, not by the kernel sets (the book's bans are looked up, the listing
//!   stops at the book's room): a million kernel elements cost no more than 65,536;
//! - a backend that holds single addresses only gets the offending address for a
//!   grouped (network) ban, and loses it again when that ban ends;
//! - backends that cannot expire bans (iptables, routes) get each ban removed when the
//!   book says it ended (expiry, or dropped from a full book);
//! - the policy of each offence is chosen by its [`Evidence`] ([`BanPolicies`]); a new
//!   unverified ban that the daemon (not the kernel) decides takes one token of the
//!   [`BanBudget`]; past it, nothing is banned and the refusal is counted
//!   ([`BanLifecycle::take_over_budget`]).

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use portsentry_engine::bans::{Ban, BanBook, BanPolicies};
use portsentry_engine::ignore::IgnoreSet;
use portsentry_engine::{Evidence, Millis};
use portsentry_kernel::backend::{BackendError, BanBackend, Expiry, host_of};

use super::budget::BanBudget;
use super::guard::{self, Refusal};
use super::{LARGE_BOOK, SAVE_INTERVAL, SAVE_INTERVAL_LARGE};

/// The reason of every `portsentry ban` (with a `--force` note after it).
const MANUAL_REASON: &str = "banned by the administrator";

/// Is `ban` an administrator's (`portsentry ban`), for which no KILL_* command ran?
pub fn by_administrator(ban: &Ban) -> bool {
    ban.evidence == Evidence::Manual || reason_is_manual(&ban.reason)
}

/// Does this reason mark a ban as the administrator's? (How a state file written before
/// bans carried their evidence tells a manual ban.)
pub fn reason_is_manual(reason: &str) -> bool {
    reason.starts_with(MANUAL_REASON)
}

/// Whether a probe's source may be banned now ([`BanLifecycle::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Ban it ([`BanLifecycle::ban`]).
    Ban,
    /// The policy of its evidence class says not to ban (`ban = false`): alert only.
    NotByPolicy,
    /// A new unverified ban past the budget: alert only, counted.
    OverBudget,
}

/// Most distinct sources remembered per over-budget count; past it each refusal counts
/// as a new source (the count is an upper bound), so a forged flood cannot grow it.
const OVER_BUDGET_SOURCES: usize = 65_536;

/// A lifecycle step the backend (or the configuration) refused. Each message names the
/// step and carries the backend's own error text.
#[derive(Debug, thiserror::Error)]
pub enum BanError {
    #[error("cannot read the bans {backend} holds: {error}")]
    List {
        backend: &'static str,
        error: Box<BackendError>,
    },
    #[error("cannot put the saved bans back into the kernel: {0}")]
    PutBack(Box<BackendError>),
    #[error("cannot remove a ban that ended while portsentry was down: {0}")]
    RemoveLeftover(Box<BackendError>),
    #[error("the kernel refused the ban: {0}")]
    Refused(Box<BackendError>),
    /// The ban set is full (its size limit): not written; see
    /// [`BanLifecycle::ban`] for how often the kernel is asked again.
    #[error("{0}")]
    SetFull(String),
    #[error("bans from the command line need a ban backend")]
    NoBackend,
    #[error("network bans need the nftables backend; ban single addresses")]
    NetworksUnsupported,
    #[error("refused: {0}")]
    NotAllowed(#[from] Refusal),
    #[error(
        "refused: a ban of {} is longer than {backend} can hold ({}); use --permanent",
        humantime::format_duration(*asked),
        humantime::format_duration(*max)
    )]
    TooLong {
        asked: Duration,
        max: Duration,
        backend: &'static str,
    },
    #[error(transparent)]
    Backend(Box<BackendError>),
}

// Boxed: a backend error carries paths and tool output, and the happy path should not
// pay for moving it around.
impl From<BackendError> for BanError {
    fn from(e: BackendError) -> Self {
        BanError::Backend(Box::new(e))
    }
}

type Result<T, E = BanError> = std::result::Result<T, E>;

/// Summary of a start-up reconciliation, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Restored {
    pub put_back: usize,
    pub already_in_kernel: usize,
    pub adopted_from_kernel: usize,
    pub expired_dropped: usize,
    /// Leftovers of ended bans removed from a backend that cannot expire them.
    pub ended_removed: usize,
    /// Bans of the state file or the kernel that fail [`guard::check`]: not put back
    /// (kept as offence history), their kernel elements removed.
    pub refused: Vec<Refusal>,
    /// Records of a state file over the book's capacity that were not loaded, oldest
    /// offence first (filled by the loader, [`super::start`]).
    pub over_capacity: Vec<Ban>,
    /// The kernel holds more bans than the book had room to adopt: those stay
    /// enforced and expire in the kernel, but are not listed.
    pub kernel_unlisted: bool,
}

/// The result of an administrator's ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualBan {
    pub ban: Ban,
    /// The protected network `--force` overrode, if it did.
    pub overrode: Option<IpNet>,
}

/// The result of banning one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Banned {
    pub ban: Ban,
    /// The ban's length from now (None = permanent).
    pub timeout: Option<Duration>,
    /// Where it lives ("nftables set banned4", "ipset", ...).
    pub place: String,
    /// Whether the backend was written (false: the kernel's own element was right).
    pub written: bool,
}

/// Bans, their book and their backend; see the module documentation.
pub struct BanLifecycle {
    book: BanBook,
    policies: BanPolicies,
    /// New unverified bans the daemon decides (the kernel has its own).
    budget: BanBudget,
    /// Refused for the budget since the last [`Self::take_over_budget`]: how many, and
    /// from which sources (bounded).
    over_budget: u64,
    over_budget_sources: HashSet<IpAddr>,
    over_budget_extra: u64,
    /// `None`: no ban backend, the book only records what the legacy KILL_* commands
    /// did (1.2 bans are permanent: nothing lifts them).
    backend: Option<Box<dyn BanBackend>>,
    /// What is never banned (see [`guard`]), as the daemon last read it.
    protected: IgnoreSet,
    dirty: bool,
    last_save: Option<Millis>,
    /// When the kernel last said the ban set is full (Unix seconds), and its error:
    /// until [`SET_FULL_RETRY`] later, host bans that need a write fail at once
    /// without asking the kernel, so a flood of new sources costs no syscall each.
    set_full: Option<(u64, String)>,
}

/// How long a full ban set is believed full before the kernel is asked again (an
/// element expiring makes room; bans last at least seconds, so one second is prompt).
pub const SET_FULL_RETRY: u64 = 1;

impl BanLifecycle {
    /// Start from an already loaded `book` and reconcile it with the backend at `now`.
    /// `expired_at_load`: bans the loader found ended (for the summary only).
    /// `protected`: the protected set now. Bans in force that [`guard::check`] refuses
    /// (without force: a forced ban does not outlive the run) are not put back, and
    /// their kernel elements are removed. The book is marked changed: the caller saves it.
    pub fn start(
        book: BanBook,
        expired_at_load: usize,
        policies: BanPolicies,
        mut backend: Option<Box<dyn BanBackend>>,
        protected: IgnoreSet,
        now: u64,
    ) -> Result<(Self, Restored)> {
        let mut book = book;
        let mut restored = Restored {
            expired_dropped: expired_at_load,
            ..Restored::default()
        };
        let mut refused_keys: Vec<(IpNet, Refusal)> = book
            .active(now)
            .filter_map(|ban| {
                guard::check(ban.key, &protected, false)
                    .err()
                    .map(|r| (ban.key, r))
            })
            .collect();
        refused_keys.sort_by_key(|(key, _)| *key);
        let mut refused: HashSet<IpNet> = HashSet::new();
        for (key, why) in refused_keys {
            book.unban(key, now);
            refused.insert(key);
            restored.refused.push(why);
        }
        if let Some(b) = backend.as_deref_mut() {
            // The book's bans in force, looked up (the book is bounded; the kernel sets
            // may hold a million elements, whose full listing costs the kernel minutes).
            let active: Vec<IpNet> = book.active(now).map(|ban| ban.key).collect();
            let held_keys: HashSet<IpNet> = b
                .holds(&active)
                .map_err(|error| BanError::List {
                    backend: b.name(),
                    error: Box::new(error),
                })?
                .into_iter()
                .map(|h| h.key)
                .collect();
            restored.already_in_kernel = held_keys.len();
            let to_add = missing(&book, b, &held_keys, now);
            b.add_many(&to_add)
                .map_err(|e| BanError::PutBack(Box::new(e)))?;
            restored.put_back = to_add.len();

            // Elements the kernel holds that the book lacks: added by the kernel's own
            // trap rules while nobody read them (kill -9), or left by an earlier run.
            // Adopt them so they are listed, expire and escalate — as many as the book
            // has room for besides its bans in force; the rest stay enforced and expire
            // in the kernel, unlisted (said once in the log). A backend that keeps no
            // timeout (iptables, routes) is read whole: its leftovers must go.
            let room = book.capacity().saturating_sub(active.len());
            let (listed, more) = if !b.expires_by_itself() {
                b.list_at_most(usize::MAX)
            } else if room == 0 {
                // A book full of bans in force adopts nothing: no listing at all.
                Ok((Vec::new(), false))
            } else {
                b.list_at_most(room.saturating_add(held_keys.len()))
            }
            .map_err(|error| BanError::List {
                backend: b.name(),
                error: Box::new(error),
            })?;
            let mut held = Vec::with_capacity(listed.len());
            for h in listed {
                match guard::check(h.key, &protected, false) {
                    Ok(_) => held.push(h),
                    Err(why) => {
                        b.remove(h.key)
                            .map_err(|e| BanError::RemoveLeftover(Box::new(e)))?;
                        if refused.insert(h.key) {
                            restored.refused.push(why);
                        }
                    }
                }
            }
            // An element of a backend that keeps no timeout (iptables, routes) whose
            // ban the book says ended is a leftover, not a ban: it is removed, never
            // re-added.
            let recorded: HashSet<IpNet> = book.records().map(|r| r.key).collect();
            for h in held {
                if book.is_banned(h.key.addr(), now) {
                    continue;
                }
                if h.expiry == Expiry::Unknown && recorded.contains(&h.key) {
                    b.remove(h.key)
                        .map_err(|e| BanError::RemoveLeftover(Box::new(e)))?;
                    restored.ended_removed += 1;
                    continue;
                }
                if restored.adopted_from_kernel >= room {
                    restored.kernel_unlisted = true;
                    continue;
                }
                let (banned_at, expires_at) = match h.expiry {
                    Expiry::Permanent => (now, None),
                    Expiry::In { left, timeout } => {
                        let banned_at = timeout.map_or(now, |t| {
                            now.saturating_sub(t.saturating_sub(left).as_secs())
                        });
                        (banned_at, Some(now + left.as_secs().max(1)))
                    }
                    // No timeout kept (iptables rule, route): a first-offence ban of
                    // the class the kernel's own bans are (a single packet).
                    Expiry::Unknown => (
                        now,
                        policies
                            .unverified
                            .duration_for(1)
                            .map(|d| now + d.as_secs()),
                    ),
                };
                book.restore(Ban {
                    key: h.key,
                    offences: 1,
                    banned_at,
                    expires_at,
                    last_offence: banned_at,
                    reason: "found in the kernel at start".into(),
                    // What the trap rule adds on its own is a first-probe ban.
                    evidence: Evidence::Unverified,
                });
                restored.adopted_from_kernel += 1;
            }
            restored.kernel_unlisted |= more;
        }
        let bans = BanLifecycle {
            book,
            policies,
            budget: BanBudget::unlimited(),
            over_budget: 0,
            over_budget_sources: HashSet::new(),
            over_budget_extra: 0,
            backend,
            protected,
            dirty: true,
            last_save: None,
            set_full: None,
        };
        Ok((bans, restored))
    }

    /// The protected set changed (the daemon re-read addresses, routes, resolvers):
    /// the administrator's next bans are checked against `protected`.
    pub fn set_protected(&mut self, protected: IgnoreSet) {
        self.protected = protected;
    }

    /// Does this put bans into the kernel itself (as opposed to only recording)?
    pub fn is_native(&self) -> bool {
        self.backend.is_some()
    }

    /// The backend's name (`nftables`, `ipset`, ...), for metrics; None without one.
    pub fn backend_name(&self) -> Option<&'static str> {
        self.backend.as_ref().map(|b| b.name())
    }

    /// The budget of new unverified bans the daemon decides (unlimited until set).
    pub fn set_budget(&mut self, budget: BanBudget) {
        self.budget = budget;
    }

    /// The policies by evidence class.
    pub fn policies(&self) -> &BanPolicies {
        &self.policies
    }

    /// May the source of a probe with this `evidence` be banned now? `mono`: the
    /// monotonic clock, for the budget. No, when its class's policy says `ban = false`;
    /// no, when it is a new unverified ban the daemon decides (`kernel_banned` false)
    /// and the budget is spent (counted for [`Self::take_over_budget`]). A source
    /// already banned takes no budget: its ban is not new.
    pub fn admit(
        &mut self,
        now: u64,
        mono: Millis,
        ip: IpAddr,
        evidence: Evidence,
        kernel_banned: bool,
    ) -> Admission {
        if !self.policies.for_evidence(evidence).ban {
            return Admission::NotByPolicy;
        }
        if evidence != Evidence::Unverified || kernel_banned || self.book.is_banned(ip, now) {
            return Admission::Ban;
        }
        if self.budget.take(mono) {
            return Admission::Ban;
        }
        self.over_budget = self.over_budget.saturating_add(1);
        if self.over_budget_sources.len() < OVER_BUDGET_SOURCES {
            self.over_budget_sources.insert(ip.to_canonical());
        } else if !self.over_budget_sources.contains(&ip.to_canonical()) {
            self.over_budget_extra = self.over_budget_extra.saturating_add(1);
        }
        Admission::OverBudget
    }

    /// Ban requests refused for the budget since the last call, and from how many
    /// distinct sources (an upper bound past 65,536 of them); the counts start again.
    /// For the daemon's periodic summary line.
    pub fn take_over_budget(&mut self) -> (u64, u64) {
        let sources = self.over_budget_sources.len() as u64 + self.over_budget_extra;
        let probes = std::mem::take(&mut self.over_budget);
        self.over_budget_sources.clear();
        self.over_budget_extra = 0;
        (probes, sources)
    }

    /// Record a ban that a legacy KILL_ROUTE / KILL_RUN_CMD made (permanent: 1.2 has no
    /// command to lift it), so that it is listed and counts as an offence. `evidence`:
    /// the class of the probe it answered.
    pub fn record_legacy(&mut self, now: u64, ip: IpAddr, evidence: Evidence, reason: &str) {
        let policy = self.policies.for_evidence(evidence);
        self.book
            .ban(policy, IpNet::from(ip), now, None, evidence, reason);
        self.dirty = true;
    }

    /// Record an offence by `ip` at `now`, of class `evidence`, and make the backend
    /// hold the resulting ban: length and escalation per the policy of that class, the
    /// network per its grouping (the address itself on a backend that holds single
    /// addresses only). `kernel_banned`: the kernel's own trap rule already added `ip`
    /// with the set's default timeout (the unverified first-offence length), so a ban
    /// of that length on a single address is not written again; escalated, verified,
    /// permanent and grouped bans are. Call [`Self::admit`] first.
    pub fn ban(
        &mut self,
        now: u64,
        ip: IpAddr,
        evidence: Evidence,
        kernel_banned: bool,
        reason: &str,
    ) -> Result<Banned> {
        let policy = self.policies.for_evidence(evidence);
        let kernel_time = self.policies.unverified.ban_time;
        let before = self.book.in_force(policy.ban_key(ip), now).cloned();
        let ban = self.book.offend(policy, ip, now, evidence, reason);
        self.dirty = true;
        let timeout = remaining(&ban, now);
        let Some(b) = self.backend.as_deref_mut() else {
            return Ok(Banned {
                ban,
                timeout,
                place: "KILL_* commands".into(),
                written: false,
            });
        };
        let target = if b.holds_networks() || host_of(ban.key).is_some() {
            ban.key
        } else {
            IpNet::from(ip.to_canonical())
        };
        let kernel_is_right =
            kernel_banned && host_of(ban.key).is_some() && timeout == Some(kernel_time);
        let believed_full = match &self.set_full {
            Some((at, _)) if now < at.saturating_add(SET_FULL_RETRY) => host_of(target).is_some(),
            _ => false,
        };
        let written = if kernel_is_right {
            Ok(())
        } else if believed_full {
            Err(None)
        } else {
            b.add(target, timeout).map_err(Some)
        };
        match &written {
            Err(Some(e)) if e.is_set_full() => self.set_full = Some((now, e.to_string())),
            Ok(()) if !kernel_is_right => self.set_full = None,
            _ => {}
        }
        if let Err(e) = written {
            // Only what the kernel took is in force: the ban of before (the offence
            // still counts), or the trap rule's own first-offence element, or none.
            let kept = match before {
                Some(before) => Some(Ban {
                    offences: ban.offences,
                    last_offence: now,
                    ..before
                }),
                None if kernel_banned && host_of(ban.key).is_some() => Some(Ban {
                    expires_at: Some(now.saturating_add(kernel_time.as_secs())),
                    evidence: Evidence::Unverified,
                    ..ban.clone()
                }),
                None => None,
            };
            match kept {
                Some(kept) => self.book.restore(kept),
                None => {
                    self.book.unban(ban.key, now);
                }
            }
            return Err(match e {
                Some(e) if !e.is_set_full() => BanError::Refused(Box::new(e)),
                Some(e) => BanError::SetFull(e.to_string()),
                None => BanError::SetFull(
                    self.set_full
                        .as_ref()
                        .map(|(_, t)| t.clone())
                        .unwrap_or_default(),
                ),
            });
        }
        Ok(Banned {
            place: b.place(target),
            ban,
            timeout,
            written: !kernel_is_right,
        })
    }

    /// An administrator's ban of a host or network (`None` = permanent). It counts as
    /// an offence, like 1.2's history, so a later scan escalates from it. Refused when
    /// [`guard::check`] refuses `net` (`force` overrides the protected set only), when
    /// `duration` is longer than the backend can hold, or when the backend refuses it;
    /// a refused ban leaves the book as it was.
    pub fn manual_ban(
        &mut self,
        now: u64,
        net: IpNet,
        duration: Option<Duration>,
        force: bool,
    ) -> Result<ManualBan> {
        let Some(b) = self.backend.as_deref_mut() else {
            return Err(BanError::NoBackend);
        };
        let net = guard::canonical(net);
        let overrode = guard::check(net, &self.protected, force)?;
        if host_of(net).is_none() && !b.holds_networks() {
            return Err(BanError::NetworksUnsupported);
        }
        if let (Some(asked), Some(max)) = (duration, b.max_timeout())
            && asked > max
        {
            return Err(BanError::TooLong {
                asked,
                max,
                backend: b.name(),
            });
        }
        let timeout = duration.map(|d| Duration::from_secs(d.as_secs().max(1)));
        b.add(net, timeout)
            .map_err(|e| BanError::Refused(Box::new(e)))?;
        let reason = match overrode {
            Some(p) => format!("{MANUAL_REASON} (--force over the protected {p})"),
            None => MANUAL_REASON.into(),
        };
        let ban = self.book.ban(
            &self.policies.manual,
            net,
            now,
            timeout,
            Evidence::Manual,
            &reason,
        );
        self.dirty = true;
        Ok(ManualBan { ban, overrode })
    }

    /// A ban received from the fleet (`fleet::`): of `net` for `duration` (already
    /// capped by the caller), with the class and reason it came with. Refused like an
    /// administrator's ban without `--force` ([`guard::check`]: this host's own
    /// addresses, gateways, resolvers, `[protect] extra`). A ban already in force here
    /// that lasts as long or longer is kept (`Ok(None)`): a received ban never shortens
    /// one, nor replaces a stronger local one.
    pub fn fleet_ban(
        &mut self,
        now: u64,
        net: IpNet,
        duration: Duration,
        evidence: Evidence,
        reason: &str,
    ) -> Result<Option<Ban>> {
        let Some(b) = self.backend.as_deref_mut() else {
            return Err(BanError::NoBackend);
        };
        let net = guard::canonical(net);
        guard::check(net, &self.protected, false)?;
        if host_of(net).is_none() && !b.holds_networks() {
            return Err(BanError::NetworksUnsupported);
        }
        let until = now.saturating_add(duration.as_secs().max(1));
        if let Some(held) = self.book.in_force(net, now)
            && held.expires_at.is_none_or(|t| t >= until)
        {
            return Ok(None);
        }
        let duration = match b.max_timeout() {
            Some(max) => duration.min(max),
            None => duration,
        };
        let timeout = Duration::from_secs(duration.as_secs().max(1));
        b.add(net, Some(timeout))
            .map_err(|e| BanError::Refused(Box::new(e)))?;
        let policy = self.policies.for_evidence(evidence).clone();
        let ban = self
            .book
            .ban(&policy, net, now, Some(timeout), evidence, reason);
        self.dirty = true;
        Ok(Some(ban))
    }

    /// Something saved beside the book changed (the fleet stream position): save it
    /// with the next save.
    pub fn touch(&mut self) {
        self.dirty = true;
    }

    /// Lift the ban covering `net` (exact, or the most specific one containing it).
    /// Returns the lifted ban; the kernel's copy is removed. An element only the kernel
    /// holds (not in the book) is removed too and returned as a ban of 0 offences.
    pub fn unban(&mut self, now: u64, net: IpNet) -> Result<Option<Ban>> {
        let Some(ban) = self.book.unban(net, now) else {
            let Some(b) = self.backend.as_deref_mut() else {
                return Ok(None);
            };
            if (b.holds_networks() || host_of(net).is_some()) && b.remove(net)? {
                return Ok(Some(Ban {
                    key: net,
                    offences: 0,
                    banned_at: now,
                    expires_at: Some(now),
                    last_offence: now,
                    reason: "kernel element".into(),
                    evidence: Evidence::Unverified,
                }));
            }
            return Ok(None);
        };
        self.dirty = true;
        if let Some(b) = self.backend.as_deref_mut() {
            lift(b, &self.book, ban.key, now)?;
        }
        Ok(Some(ban))
    }

    /// Put every ban in force that the kernel lacks back into it (after our table was
    /// re-created). Returns how many were put back.
    pub fn put_back_missing(&mut self, now: u64) -> Result<usize> {
        let Some(b) = self.backend.as_deref_mut() else {
            return Ok(0);
        };
        let active: Vec<IpNet> = self.book.active(now).map(|ban| ban.key).collect();
        let held: HashSet<IpNet> = b.holds(&active)?.into_iter().map(|h| h.key).collect();
        let to_add = missing(&self.book, b, &held, now);
        b.add_many(&to_add)?;
        Ok(to_add.len())
    }

    /// Bans that ran out by `now` since the last call, and bans a full book dropped
    /// early (the caller tells them apart with the same `now`: a dropped ban's
    /// `expires_at` is later). Backends that expire bans by themselves keep theirs;
    /// from the others (iptables, routes) each ended ban is removed here. Returns each
    /// ended ban with an error text if its removal failed.
    pub fn take_expired(&mut self, now: u64) -> Vec<(Ban, Option<String>)> {
        let ended = self.book.take_expired(now);
        if ended.is_empty() {
            return Vec::new();
        }
        self.dirty = true;
        let book = &self.book;
        let remover = self
            .backend
            .as_deref_mut()
            .filter(|b| !b.expires_by_itself());
        match remover {
            None => ended.into_iter().map(|ban| (ban, None)).collect(),
            Some(b) => ended
                .into_iter()
                .map(|ban| {
                    let err = lift(b, book, ban.key, now).err().map(|e| format!("{e:#}"));
                    (ban, err)
                })
                .collect(),
        }
    }

    /// Does the kernel end bans by itself (nftables, ipset; and "no backend"), or does
    /// [`take_expired`](Self::take_expired) remove them (iptables, routes)?
    pub fn expires_by_itself(&self) -> bool {
        self.backend.as_ref().is_none_or(|b| b.expires_by_itself())
    }

    /// Bans in force at `now`.
    pub fn active_count(&self, now: u64) -> usize {
        self.book.active(now).count()
    }

    /// The book, for saving and listing.
    pub fn book(&self) -> &BanBook {
        &self.book
    }

    /// Should the book be saved at monotonic time `mono`? Yes when it changed and
    /// [`SAVE_INTERVAL`] passed since the last save ([`SAVE_INTERVAL_LARGE`] past
    /// [`LARGE_BOOK`] records), or at once with `force` (stop). Never when unchanged.
    pub fn save_due(&self, mono: Millis, force: bool) -> bool {
        let interval = if self.book.len() > LARGE_BOOK {
            SAVE_INTERVAL_LARGE
        } else {
            SAVE_INTERVAL
        };
        self.dirty && (force || self.last_save.is_none_or(|t| mono.since(t) >= interval))
    }

    /// The caller tried to save at `mono` and failed: the book stays changed, and the
    /// next try is due an interval later, as after a save.
    pub fn save_failed(&mut self, mono: Millis) {
        self.last_save = Some(mono);
    }

    /// The caller saved the book at `mono`.
    pub fn saved(&mut self, mono: Millis) {
        self.dirty = false;
        self.last_save = Some(mono);
    }
}

/// Bans in force that the kernel does not hold (`held`) and `backend` can hold, with
/// their remaining time.
fn missing(
    book: &BanBook,
    backend: &dyn BanBackend,
    held: &HashSet<IpNet>,
    now: u64,
) -> Vec<(IpNet, Option<Duration>)> {
    let nets = backend.holds_networks();
    book.active(now)
        .filter(|b| !held.contains(&b.key) && (nets || host_of(b.key).is_some()))
        .map(|b| (b.key, remaining(b, now)))
        .collect()
}

/// Remove what `backend` holds for the ended ban on `key`. On a backend that holds
/// single addresses only, a network ban was written as the offending addresses: every
/// element inside `key` that no ban in force still covers goes.
fn lift(backend: &mut dyn BanBackend, book: &BanBook, key: IpNet, now: u64) -> Result<bool> {
    if backend.holds_networks() || host_of(key).is_some() {
        return Ok(backend.remove(key)?);
    }
    let mut any = false;
    for h in backend.list()? {
        if key.contains(&h.key) && !book.is_banned(h.key.addr(), now) {
            any |= backend.remove(h.key)?;
        }
    }
    Ok(any)
}

/// Time left on `ban` at `now`; None = permanent. At least one second, so an element
/// about to expire is not written as permanent by accident.
fn remaining(ban: &Ban, now: u64) -> Option<Duration> {
    ban.expires_at
        .map(|at| Duration::from_secs(at.saturating_sub(now).max(1)))
}
