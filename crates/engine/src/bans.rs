//! Ban lifecycle: how long a ban lasts (escalation for repeat offenders, a cap,
//! permanent bans on purpose), which network a ban covers (prefix grouping), and the
//! [`BanBook`] that holds every ban and the offence history behind it.
//!
//! Each ban carries the [`Evidence`] behind it, and the policy is chosen by that class
//! ([`BanPolicies`]): a single packet proves nothing about its source address, so an
//! unverified ban is provisional (short, capped low, escalated only by offences spread
//! over time); a completed handshake (verified) gets the full policy.
//!
//! Time here is wall-clock unix seconds (`u64`), passed in by the caller: bans must
//! survive a reboot, and a monotonic clock restarts at boot. A clock that steps back is
//! tolerated (elapsed times saturate at zero), never a panic.
//!
//! Invariants of the book:
//! - keys are canonical: host bits cleared, IPv4-mapped IPv6 stored as IPv4;
//! - a record is in exactly one state: *banned until t* (in the expiry index),
//!   *permanently banned*, or *history* (its ban was lifted or handed out by
//!   [`BanBook::take_expired`]; only the offence count and times remain useful);
//! - the number of records never exceeds the capacity, except when every record is a
//!   permanent ban (permanent bans are deliberate and never evicted);
//! - every ban that leaves the book while a backend may still hold it (expiry, eviction)
//!   is handed out exactly once by [`BanBook::take_expired`], so routes and iptables rules,
//!   which do not expire by themselves, are always removed.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::ignore::canonical_net;
use crate::probe::Evidence;

/// How bans are sized and grouped. Every default is the conservative choice, with its
/// reason beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanPolicy {
    /// Ban length for a first offence. Default 1 h: long enough to make a scan useless,
    /// short enough that a spoofed or mistaken ban heals by itself.
    pub ban_time: Duration,
    /// Each repeat offence multiplies the ban length by this. Default 2; 1 (or 0) means no
    /// escalation.
    pub escalation_factor: u32,
    /// Cap on an escalated ban. Default 7 days: a scanner that keeps coming back stays out
    /// for a week at a time, yet every automatic ban still ends.
    pub max_ban_time: Duration,
    /// From this offence number on (1-based), bans are permanent. Default `None`: sources
    /// can be spoofed, so nothing is banned forever unless the admin asks for it.
    pub permanent_after: Option<u32>,
    /// A ban on an IPv4 address covers the `/group_v4` around it. Default 32 (the address
    /// only); values above 32 are treated as 32.
    pub group_v4: u8,
    /// A ban on an IPv6 address covers the `/group_v6` around it. Default 128; /64 is the
    /// usual choice, since one host commonly owns a whole /64. Values above 128 are 128.
    pub group_v6: u8,
    /// An offender with no offence for this long starts again at offence 1. Default 30 days.
    pub forget_offences_after: Duration,
    /// An offence less than this after the previous *counted* offence of the same
    /// network does not count again: it bans (at the length of the offence count it
    /// has), but does not escalate. Default 0 (every offence counts): a verified source
    /// is the real one, each of its offences is its own.
    pub offence_gap: Duration,
    /// Whether this class of evidence bans at all. Default true; false: the probe is
    /// detected and alerted, nobody is banned and no KILL_* command runs.
    pub ban: bool,
}

impl Default for BanPolicy {
    /// The full policy, for verified evidence (a completed handshake).
    fn default() -> Self {
        BanPolicy {
            ban_time: Duration::from_secs(3600),
            escalation_factor: 2,
            max_ban_time: Duration::from_secs(7 * 24 * 3600),
            permanent_after: None,
            group_v4: 32,
            group_v6: 128,
            forget_offences_after: Duration::from_secs(30 * 24 * 3600),
            offence_gap: Duration::ZERO,
            ban: true,
        }
    }
}

/// One [`BanPolicy`] per class of [`Evidence`], chosen by the class of each offence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanPolicies {
    /// Single packets (SYN, FIN, NULL, XMAS, ACK/Window, Maimon, UDP), which anyone can
    /// forge with any source: [`BanPolicy::provisional`]. The kernel fast path's first-
    /// probe bans are of this class, so its set timeout is this policy's `ban_time`.
    pub unverified: BanPolicy,
    /// A completed handshake: the full [`BanPolicy::default`].
    pub verified: BanPolicy,
    /// `portsentry ban`: only `ban_time` (the length when no `--time` is given) and
    /// `forget_offences_after` are used; the administrator chooses the rest.
    pub manual: BanPolicy,
}

impl Default for BanPolicies {
    fn default() -> Self {
        BanPolicies {
            unverified: BanPolicy::provisional(),
            verified: BanPolicy::default(),
            manual: BanPolicy::default(),
        }
    }
}

impl BanPolicies {
    /// The policy for an offence of this class.
    pub fn for_evidence(&self, evidence: Evidence) -> &BanPolicy {
        match evidence {
            Evidence::Unverified => &self.unverified,
            Evidence::Verified => &self.verified,
            Evidence::Manual => &self.manual,
        }
    }
}

impl BanPolicy {
    /// The provisional policy for unverified evidence, safe to run without tuning when
    /// sources are forged (`nmap -D` decoys, `-sI` zombies, a flood with random
    /// sources):
    /// - 10 min first ban: the scan in progress meets a wall (the kernel drops it from
    ///   the first probe), and an innocent address someone forged is back within
    ///   minutes;
    /// - x2 per counted offence, capped at 1 day: a scanner that really keeps coming
    ///   back is held off for a day at a time, but a forged ban never lasts longer;
    /// - an offence counts only 1 h after the previous counted one: a forger replaying
    ///   probes each time the ban ends escalates at most once an hour;
    /// - never permanent; offences forgotten after 7 days, so forged history heals.
    pub fn provisional() -> Self {
        BanPolicy {
            ban_time: Duration::from_secs(600),
            escalation_factor: 2,
            max_ban_time: Duration::from_secs(24 * 3600),
            permanent_after: None,
            forget_offences_after: Duration::from_secs(7 * 24 * 3600),
            offence_gap: Duration::from_secs(3600),
            ..BanPolicy::default()
        }
    }

    /// Ban length for the `offence`-th offence (1-based; 0 is taken as 1); `None` means
    /// permanent. `ban_time * escalation_factor^(offence-1)`, capped at `max_ban_time`.
    pub fn duration_for(&self, offence: u32) -> Option<Duration> {
        let offence = offence.max(1);
        if self.permanent_after.is_some_and(|p| offence >= p) {
            return None;
        }
        let factor = self.escalation_factor.max(1);
        let mut d = self.ban_time;
        for _ in 1..offence {
            if d >= self.max_ban_time || factor == 1 {
                break;
            }
            d = d.saturating_mul(factor);
        }
        Some(d.min(self.max_ban_time))
    }

    /// The network a ban on `ip` covers: the `/group_v4` or `/group_v6` around it, host
    /// bits cleared. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is treated as IPv4.
    pub fn ban_key(&self, ip: IpAddr) -> IpNet {
        match ip.to_canonical() {
            IpAddr::V4(a) => IpNet::V4(v4_net(a, self.group_v4)),
            IpAddr::V6(a) => IpNet::V6(v6_net(a, self.group_v6)),
        }
    }
}

/// One ban record: the current (or last) ban on a network and its offence history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// The banned network (canonical: host bits cleared, IPv4 never as mapped IPv6).
    pub key: IpNet,
    /// Offences counted so far (reset after `forget_offences_after` without one).
    pub offences: u32,
    /// When the current ban began (unix seconds). An offence during an active ban
    /// extends it and keeps this time.
    pub banned_at: u64,
    /// When the ban ends (unix seconds); `None` = permanent. For a lifted ban, the time it
    /// was lifted.
    pub expires_at: Option<u64>,
    /// Time of the latest offence (unix seconds).
    pub last_offence: u64,
    /// Why, e.g. "TCP SYN/Normal scan to TCP port 23".
    pub reason: String,
    /// The strongest evidence seen while this ban is in force (manual > verified >
    /// unverified); a ban that ended takes the class of the next offence.
    pub evidence: Evidence,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Banned until `ban.expires_at`, listed in `BanBook::expiry`.
    Until(u64),
    Permanent,
    /// No ban the daemon still has to act on; listed in `BanBook::idle`.
    History,
}

#[derive(Debug, Clone)]
struct Entry {
    ban: Ban,
    state: State,
}

impl Entry {
    fn is_active(&self, now: u64) -> bool {
        match self.state {
            State::Until(t) => t > now,
            State::Permanent => true,
            State::History => false,
        }
    }
}

/// All bans and offence history, bounded by a capacity.
///
/// Eviction, when a new network must be recorded and the book is full:
/// 1. the history record (no active ban) with the oldest `last_offence`;
/// 2. if every record holds an active ban, the ban that expires soonest — it is handed
///    out by [`take_expired`](Self::take_expired) so the daemon lifts it everywhere;
/// 3. permanent bans are never evicted: if every record is one, the book grows past its
///    capacity (permanent bans come only from the admin or `permanent_after`, both
///    deliberate, and new bans are rate-limited by the engine).
///
/// Lookups hash the canonical key with std's randomly keyed SipHash, so a spoofer cannot
/// aim collisions; [`is_banned`](Self::is_banned) probes one hash lookup per prefix length
/// in use (usually one or two).
#[derive(Debug, Clone)]
pub struct BanBook {
    capacity: usize,
    records: HashMap<IpNet, Entry>,
    /// Time-limited active bans, by expiry.
    expiry: BTreeSet<(u64, IpNet)>,
    /// History records, by last offence (eviction order).
    idle: BTreeSet<(u64, IpNet)>,
    /// Records per prefix length, to look up the networks that may contain an address.
    prefixes_v4: [u32; 33],
    prefixes_v6: [u32; 129],
    /// Ended bans not yet handed out by `take_expired`.
    ended: Vec<Ban>,
    /// When the oldest entry of `ended` became due.
    ended_due: u64,
    /// Every ban that ended at or before this time was handed out before a restart (see
    /// [`set_settled_through`](Self::set_settled_through)).
    restored_settled: u64,
}

impl BanBook {
    /// An empty book holding at most `capacity` records (active bans and remembered
    /// offenders together; a capacity of 0 is taken as 1). See the type's doc for the
    /// eviction rule.
    pub fn new(capacity: usize) -> Self {
        BanBook {
            capacity: capacity.max(1),
            records: HashMap::new(),
            expiry: BTreeSet::new(),
            idle: BTreeSet::new(),
            prefixes_v4: [0; 33],
            prefixes_v6: [0; 129],
            ended: Vec::new(),
            ended_due: 0,
            restored_settled: 0,
        }
    }

    /// Record an offence by `ip` at `now` (unix seconds), of class `evidence`, and ban
    /// its network per `policy` (the caller's choice for that class, see
    /// [`BanPolicies::for_evidence`]).
    ///
    /// The offence count goes up by one, or restarts at 1 if the previous offence is
    /// `forget_offences_after` old, or stays as it is if the previous counted offence is
    /// less than `offence_gap` ago (`last_offence` then stays too). The ban runs
    /// `duration_for(count)` from `now`; an offence never shortens a ban already in
    /// force (a longer or permanent one is kept). Returns the resulting record. Callers
    /// that do not want an offence during a ban to escalate should check
    /// [`is_banned`](Self::is_banned) first.
    pub fn offend(
        &mut self,
        policy: &BanPolicy,
        ip: IpAddr,
        now: u64,
        evidence: Evidence,
        reason: &str,
    ) -> Ban {
        let key = policy.ban_key(ip);
        let (offences, _) = self.next_offence(policy, key, now);
        let until = policy
            .duration_for(offences)
            .map(|d| now.saturating_add(d.as_secs()));
        self.record(policy, key, now, evidence, reason, until, false)
    }

    /// A ban of an address or network as given (no prefix grouping), of class
    /// `evidence` (the administrator's `portsentry ban` is [`Evidence::Manual`]; a ban
    /// made by a legacy KILL_* command has the class of the probe behind it): for
    /// `duration`, or permanently when `None`. It counts as an offence, and it replaces
    /// the ban in force, even a longer one: the admin's word is final.
    pub fn ban(
        &mut self,
        policy: &BanPolicy,
        ip_or_net: IpNet,
        now: u64,
        duration: Option<Duration>,
        evidence: Evidence,
        reason: &str,
    ) -> Ban {
        let key = canonical_net(ip_or_net);
        let until = duration.map(|d| now.saturating_add(d.as_secs()));
        self.record(policy, key, now, evidence, reason, until, true)
    }

    /// Lift a ban, keeping the offence history. `key` is matched exactly first; if it
    /// has no active ban, the most specific active ban containing it is lifted (so
    /// `unban 198.18.0.7` works when bans are grouped by /24). Returns the lifted ban
    /// (as it was, with its original `expires_at`) if there was one.
    pub fn unban(&mut self, key: IpNet, now: u64) -> Option<Ban> {
        let key = canonical_net(key);
        let found = self
            .covering(key)
            .find(|k| self.records[k].is_active(now))?;
        let entry = self.records.get_mut(&found).expect("key from covering()");
        let lifted = entry.ban.clone();
        if let State::Until(t) = entry.state {
            self.expiry.remove(&(t, found));
        }
        entry.state = State::History;
        entry.ban.expires_at = Some(now);
        self.idle.insert((entry.ban.last_offence, found));
        Some(lifted)
    }

    /// Whether any active ban's network contains `ip` at `now`.
    pub fn is_banned(&self, ip: IpAddr, now: u64) -> bool {
        let host = match ip.to_canonical() {
            IpAddr::V4(a) => IpNet::V4(v4_net(a, 32)),
            IpAddr::V6(a) => IpNet::V6(v6_net(a, 128)),
        };
        self.covering(host).any(|k| self.records[&k].is_active(now))
    }

    /// The ban in force at `now` on exactly `key` (canonical form), if any.
    pub fn in_force(&self, key: IpNet, now: u64) -> Option<&Ban> {
        self.records
            .get(&canonical_net(key))
            .filter(|e| e.is_active(now))
            .map(|e| &e.ban)
    }

    /// The bans in force at `now`: permanent, or expiring after `now`.
    pub fn active(&self, now: u64) -> impl Iterator<Item = &Ban> {
        self.records
            .values()
            .filter(move |e| e.is_active(now))
            .map(|e| &e.ban)
    }

    /// Bans that ended since the last call, each returned once: those that expired at or
    /// before `now`, and active bans evicted for capacity. The daemon removes them from
    /// backends that do not expire by themselves (routes, iptables, hosts.deny). Expired
    /// records stay in the book as offence history. Call it at [`next_expiry`](Self::next_expiry).
    pub fn take_expired(&mut self, now: u64) -> Vec<Ban> {
        self.expire_due(now);
        std::mem::take(&mut self.ended)
    }

    /// When [`take_expired`](Self::take_expired) next has something to return: the
    /// earliest expiry of a time-limited ban, or a time already past when ended bans are
    /// waiting to be taken. `None` when no ban will ever expire.
    pub fn next_expiry(&self) -> Option<u64> {
        let pending = self.expiry.first().map(|&(t, _)| t);
        if self.ended.is_empty() {
            pending
        } else {
            Some(pending.map_or(self.ended_due, |t| t.min(self.ended_due)))
        }
    }

    /// Every record, active bans and offence history, for saving. Unordered.
    pub fn records(&self) -> impl Iterator<Item = &Ban> {
        self.records.values().map(|e| &e.ban)
    }

    /// The time up to which every ended ban has been handed out or lifted, as of `now`:
    /// saved with the records so that [`restore`](Self::restore) after a restart can tell
    /// a ban that ended while the daemon was down (still to hand out) from old history.
    pub fn settled_through(&self, now: u64) -> u64 {
        let mut t = now;
        if let Some(&(first, _)) = self.expiry.first() {
            t = t.min(first.saturating_sub(1));
        }
        for b in &self.ended {
            if let Some(e) = b.expires_at {
                t = t.min(e.saturating_sub(1));
            }
        }
        t
    }

    /// Before restoring: the `settled_through` value that was saved with the records.
    pub fn set_settled_through(&mut self, t: u64) {
        self.restored_settled = t;
    }

    /// Put back a record loaded from the store, replacing any record with the same key.
    /// A permanent ban is active; a time-limited one that ended at or before the
    /// [`set_settled_through`](Self::set_settled_through) time is history; any other is a
    /// ban until its `expires_at` — if that has passed (it ended while the daemon was
    /// down), the next [`take_expired`](Self::take_expired) hands it out once, so a
    /// route left behind by a killed daemon is removed. Respects the capacity.
    pub fn restore(&mut self, ban: Ban) {
        let mut ban = ban;
        ban.key = canonical_net(ban.key);
        let key = ban.key;
        if self.records.contains_key(&key) {
            self.remove(key);
        } else {
            self.make_room(None);
        }
        let state = match ban.expires_at {
            None => State::Permanent,
            Some(t) if t <= self.restored_settled => State::History,
            Some(t) => State::Until(t),
        };
        self.insert(Entry { ban, state });
    }

    /// Number of records (active bans and remembered offenders).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the book holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The capacity given to [`new`](Self::new) (at least 1).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The offence number an offence by `key` at `now` would be, and whether it counts
    /// as a new offence (false: within `offence_gap` of the previous counted one).
    fn next_offence(&self, policy: &BanPolicy, key: IpNet, now: u64) -> (u32, bool) {
        match self.records.get(&key) {
            Some(e) if !forgotten(policy, &e.ban, now) => {
                let gap = policy.offence_gap.as_secs();
                if e.ban.offences > 0 && now.saturating_sub(e.ban.last_offence) < gap {
                    (e.ban.offences, false)
                } else {
                    (e.ban.offences.saturating_add(1), true)
                }
            }
            _ => (1, true),
        }
    }

    /// Count an offence by `key` and set its ban to end at `until` (`None` = permanent).
    /// `replace`: the new ban replaces one in force even if that one lasts longer.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        policy: &BanPolicy,
        key: IpNet,
        now: u64,
        evidence: Evidence,
        reason: &str,
        until: Option<u64>,
        replace: bool,
    ) -> Ban {
        // An administrator's ban always counts (the gap is for repeated probes).
        let (offences, counted) = match self.next_offence(policy, key, now) {
            (n, false) if replace => (n.saturating_add(1), true),
            other => other,
        };
        let last_offence = match (counted, self.records.get(&key)) {
            (false, Some(e)) => e.ban.last_offence,
            _ => now,
        };
        let previous = match self.records.contains_key(&key) {
            true => Some(self.remove(key)),
            false => {
                self.make_room(Some(now));
                None
            }
        };
        let (banned_at, expires_at, evidence) = match previous {
            Some(p) if p.is_active(now) && !replace => {
                let expires_at = match (p.state, until) {
                    (State::Until(old), Some(new)) => Some(old.max(new)),
                    _ => None,
                };
                (p.ban.banned_at, expires_at, p.ban.evidence.max(evidence))
            }
            Some(p) if p.is_active(now) => (p.ban.banned_at, until, p.ban.evidence.max(evidence)),
            _ => (now, until, evidence),
        };
        // A replaced ban that was still waiting in `expiry` is simply superseded; one
        // already past its expiry but not handed out stays in the daemon's backends until
        // the new ban is applied over it, which is what the caller does with our result.
        let ban = Ban {
            key,
            offences,
            banned_at,
            expires_at,
            last_offence,
            reason: reason.to_string(),
            evidence,
        };
        let state = match expires_at {
            None => State::Permanent,
            Some(t) => State::Until(t),
        };
        self.insert(Entry {
            ban: ban.clone(),
            state,
        });
        ban
    }

    /// Move bans that expired at or before `now` to history and queue them for
    /// `take_expired`.
    fn expire_due(&mut self, now: u64) {
        while let Some(&(t, key)) = self.expiry.first() {
            if t > now {
                break;
            }
            self.expiry.pop_first();
            let entry = self.records.get_mut(&key).expect("expiry index in sync");
            entry.state = State::History;
            self.idle.insert((entry.ban.last_offence, key));
            let ban = entry.ban.clone();
            self.push_ended(ban, now);
        }
    }

    fn push_ended(&mut self, ban: Ban, due: u64) {
        if self.ended.is_empty() {
            self.ended_due = due;
        }
        self.ended.push(ban);
    }

    /// Evict one record if the book is full (see the type's doc for the order).
    fn make_room(&mut self, now: Option<u64>) {
        if self.records.len() < self.capacity {
            return;
        }
        if let Some(now) = now {
            self.expire_due(now);
        }
        if let Some(&(_, key)) = self.idle.first() {
            self.remove(key);
        } else if let Some(&(t, key)) = self.expiry.first() {
            let entry = self.remove(key);
            self.push_ended(entry.ban, now.unwrap_or(t).min(t));
        }
        // Otherwise every record is a permanent ban: grow past capacity.
    }

    fn insert(&mut self, entry: Entry) {
        let key = entry.ban.key;
        match entry.state {
            State::Until(t) => {
                self.expiry.insert((t, key));
            }
            State::History => {
                self.idle.insert((entry.ban.last_offence, key));
            }
            State::Permanent => {}
        }
        *self.prefix_count(key) += 1;
        self.records.insert(key, entry);
    }

    fn remove(&mut self, key: IpNet) -> Entry {
        let entry = self.records.remove(&key).expect("remove of a present key");
        match entry.state {
            State::Until(t) => {
                self.expiry.remove(&(t, key));
            }
            State::History => {
                self.idle.remove(&(entry.ban.last_offence, key));
            }
            State::Permanent => {}
        }
        *self.prefix_count(key) -= 1;
        entry
    }

    fn prefix_count(&mut self, key: IpNet) -> &mut u32 {
        match key {
            IpNet::V4(n) => &mut self.prefixes_v4[usize::from(n.prefix_len())],
            IpNet::V6(n) => &mut self.prefixes_v6[usize::from(n.prefix_len())],
        }
    }

    /// Keys of the records whose network contains `net`, most specific first.
    fn covering(&self, net: IpNet) -> impl Iterator<Item = IpNet> + '_ {
        let (len, counts): (u8, &[u32]) = match net {
            IpNet::V4(n) => (n.prefix_len(), &self.prefixes_v4),
            IpNet::V6(n) => (n.prefix_len(), &self.prefixes_v6),
        };
        (0..=len)
            .rev()
            .filter(move |&l| counts[usize::from(l)] > 0)
            .map(move |l| match net {
                IpNet::V4(n) => IpNet::V4(v4_net(n.addr(), l)),
                IpNet::V6(n) => IpNet::V6(v6_net(n.addr(), l)),
            })
            .filter(|k| self.records.contains_key(k))
    }
}

fn forgotten(policy: &BanPolicy, ban: &Ban, now: u64) -> bool {
    now.saturating_sub(ban.last_offence) >= policy.forget_offences_after.as_secs()
}

fn v4_net(a: Ipv4Addr, len: u8) -> Ipv4Net {
    Ipv4Net::new(a, len.min(32))
        .expect("length clamped")
        .trunc()
}

fn v6_net(a: Ipv6Addr, len: u8) -> Ipv6Net {
    Ipv6Net::new(a, len.min(128))
        .expect("length clamped")
        .trunc()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;
    const DAY: u64 = 24 * H;
    const T0: u64 = 1_700_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn escalation_doubles_then_caps() {
        let p = BanPolicy::default();
        let hours: Vec<_> = (1..=10)
            .map(|n| p.duration_for(n).unwrap().as_secs() / H)
            .collect();
        assert_eq!(hours, [1, 2, 4, 8, 16, 32, 64, 128, 168, 168]);
        assert_eq!(p.duration_for(0), p.duration_for(1));
        assert_eq!(p.duration_for(u32::MAX), Some(p.max_ban_time));
        let flat = BanPolicy {
            escalation_factor: 1,
            ..BanPolicy::default()
        };
        assert_eq!(flat.duration_for(9), Some(Duration::from_secs(H)));
    }

    #[test]
    fn book_escalates_repeat_offender() {
        let p = BanPolicy::default();
        let mut book = BanBook::new(16);
        let a = ip("198.18.0.2");
        let mut now = T0;
        for (n, hours) in [(1, 1), (2, 2), (3, 4)] {
            let b = book.offend(
                &p,
                a,
                now,
                Evidence::Verified,
                "TCP SYN/Normal scan to TCP port 23",
            );
            assert_eq!(b.offences, n);
            assert_eq!(b.expires_at, Some(now + hours * H));
            assert!(book.is_banned(a, now));
            now += hours * H;
            assert!(!book.is_banned(a, now));
        }
    }

    #[test]
    fn offence_never_shortens_a_ban_in_force() {
        let p = BanPolicy::default();
        let mut book = BanBook::new(16);
        let a = ip("198.18.0.2");
        book.ban(
            &p,
            net("198.18.0.2/32"),
            T0,
            None,
            Evidence::Manual,
            "manual",
        );
        let b = book.offend(&p, a, T0 + 10, Evidence::Verified, "scan");
        assert_eq!(b.expires_at, None);
        assert_eq!(b.banned_at, T0);
        assert_eq!(b.offences, 2);
    }

    #[test]
    fn permanent_after() {
        let p = BanPolicy {
            permanent_after: Some(3),
            ..BanPolicy::default()
        };
        assert_eq!(p.duration_for(2), Some(Duration::from_secs(2 * H)));
        assert_eq!(p.duration_for(3), None);
        assert_eq!(p.duration_for(4), None);
        let mut book = BanBook::new(16);
        let a = ip("2001:db8::1");
        let mut now = T0;
        for _ in 0..2 {
            let b = book.offend(&p, a, now, Evidence::Verified, "scan");
            now = b.expires_at.unwrap();
        }
        let b = book.offend(&p, a, now, Evidence::Verified, "scan");
        assert_eq!((b.offences, b.expires_at), (3, None));
        assert!(book.is_banned(a, now + 365 * DAY));
        assert_eq!(book.next_expiry(), None);
        assert!(book.take_expired(u64::MAX).is_empty());
    }

    #[test]
    fn grouping_v4_24_shares_key_and_count() {
        let p = BanPolicy {
            group_v4: 24,
            ..BanPolicy::default()
        };
        assert_eq!(p.ban_key(ip("198.18.7.9")), net("198.18.7.0/24"));
        assert_eq!(p.ban_key(ip("::ffff:198.18.7.9")), net("198.18.7.0/24"));
        let mut book = BanBook::new(16);
        let first = book.offend(&p, ip("198.18.7.9"), T0, Evidence::Verified, "scan");
        let second = book.offend(&p, ip("198.18.7.200"), T0 + 5, Evidence::Verified, "scan");
        assert_eq!(first.key, second.key);
        assert_eq!(second.offences, 2);
        assert_eq!(book.len(), 1);
        assert!(book.is_banned(ip("198.18.7.1"), T0 + 5));
        assert!(book.is_banned(ip("::ffff:198.18.7.1"), T0 + 5));
        assert!(!book.is_banned(ip("198.18.8.1"), T0 + 5));
    }

    #[test]
    fn grouping_v6_64() {
        let p = BanPolicy {
            group_v6: 64,
            ..BanPolicy::default()
        };
        assert_eq!(
            p.ban_key(ip("2001:db8:1:2:aaaa::1")),
            net("2001:db8:1:2::/64")
        );
        let mut book = BanBook::new(16);
        book.offend(&p, ip("2001:db8:1:2::1"), T0, Evidence::Verified, "scan");
        let b = book.offend(
            &p,
            ip("2001:db8:1:2:ffff::9"),
            T0 + 1,
            Evidence::Verified,
            "scan",
        );
        assert_eq!(b.offences, 2);
        assert!(book.is_banned(ip("2001:db8:1:2::abcd"), T0 + 1));
        assert!(!book.is_banned(ip("2001:db8:1:3::1"), T0 + 1));
        // Default: no grouping.
        let d = BanPolicy::default();
        assert_eq!(d.ban_key(ip("2001:db8::7")), net("2001:db8::7/128"));
        assert_eq!(d.ban_key(ip("198.18.0.7")), net("198.18.0.7/32"));
    }

    #[test]
    fn offences_forgotten_after_30_days() {
        let p = BanPolicy::default();
        let mut book = BanBook::new(16);
        let a = ip("198.18.0.2");
        book.offend(&p, a, T0, Evidence::Verified, "scan");
        let b = book.offend(&p, a, T0 + 30 * DAY - 1, Evidence::Verified, "scan");
        assert_eq!(b.offences, 2);
        let b = book.offend(&p, a, b.last_offence + 30 * DAY, Evidence::Verified, "scan");
        assert_eq!(b.offences, 1);
        assert_eq!(b.expires_at, Some(b.last_offence + H));
    }

    #[test]
    fn clock_stepping_back_does_not_panic_or_forget() {
        let p = BanPolicy::default();
        let mut book = BanBook::new(16);
        let a = ip("198.18.0.2");
        book.offend(&p, a, T0, Evidence::Verified, "scan");
        let b = book.offend(&p, a, T0 - 100, Evidence::Verified, "scan");
        assert_eq!(b.offences, 2);
    }

    #[test]
    fn expiry_and_take_expired_once() {
        let p = BanPolicy::default();
        let mut book = BanBook::new(16);
        book.offend(&p, ip("198.18.0.2"), T0, Evidence::Verified, "scan a");
        book.offend(&p, ip("198.18.0.3"), T0 + 10, Evidence::Verified, "scan b");
        assert_eq!(book.next_expiry(), Some(T0 + H));
        assert!(book.take_expired(T0 + H - 1).is_empty());
        let out = book.take_expired(T0 + H);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key, net("198.18.0.2/32"));
        assert!(book.take_expired(T0 + H).is_empty());
        assert!(!book.is_banned(ip("198.18.0.2"), T0 + H));
        assert_eq!(book.active(T0 + H).count(), 1);
        assert_eq!(book.next_expiry(), Some(T0 + 10 + H));
        // History kept: the next offence is the second.
        assert_eq!(book.len(), 2);
        let b = book.offend(
            &p,
            ip("198.18.0.2"),
            T0 + 2 * H,
            Evidence::Verified,
            "again",
        );
        assert_eq!(b.offences, 2);
        assert_eq!(b.banned_at, T0 + 2 * H);
    }

    #[test]
    fn unban_keeps_history_and_is_not_taken_later() {
        let p = BanPolicy {
            group_v4: 24,
            ..BanPolicy::default()
        };
        let mut book = BanBook::new(16);
        book.offend(&p, ip("198.18.0.9"), T0, Evidence::Verified, "scan");
        // A host inside the grouped ban lifts the /24.
        let lifted = book.unban(net("198.18.0.7/32"), T0 + 5).unwrap();
        assert_eq!(lifted.key, net("198.18.0.0/24"));
        assert_eq!(lifted.expires_at, Some(T0 + H));
        assert!(!book.is_banned(ip("198.18.0.9"), T0 + 5));
        assert_eq!(book.unban(net("198.18.0.0/24"), T0 + 6), None);
        assert!(book.take_expired(T0 + 2 * H).is_empty());
        assert_eq!(book.len(), 1);
        assert_eq!(
            book.offend(&p, ip("198.18.0.1"), T0 + 7, Evidence::Verified, "x")
                .offences,
            2
        );
    }

    #[test]
    fn manual_ban_of_network_and_duration() {
        let p = BanPolicy::default();
        let mut book = BanBook::new(16);
        let b = book.ban(
            &p,
            net("203.0.113.77/24"),
            T0,
            Some(Duration::from_secs(60)),
            Evidence::Manual,
            "admin",
        );
        assert_eq!(b.key, net("203.0.113.0/24"));
        assert_eq!((b.offences, b.expires_at), (1, Some(T0 + 60)));
        assert!(book.is_banned(ip("203.0.113.1"), T0 + 59));
        assert!(!book.is_banned(ip("203.0.113.1"), T0 + 60));
        // The admin may shorten a ban in force.
        book.ban(
            &p,
            net("198.18.0.1/32"),
            T0,
            None,
            Evidence::Manual,
            "admin",
        );
        let b = book.ban(
            &p,
            net("::ffff:198.18.0.1/128"),
            T0 + 1,
            Some(Duration::from_secs(5)),
            Evidence::Manual,
            "admin",
        );
        assert_eq!(b.key, net("198.18.0.1/32"));
        assert_eq!(b.expires_at, Some(T0 + 6));
        assert_eq!(book.len(), 2);
    }

    #[test]
    fn capacity_bound_under_a_million_offenders() {
        let p = BanPolicy::default();
        let cap = 10_000;
        let mut book = BanBook::new(cap);
        book.ban(&p, net("192.0.2.1/32"), T0, None, Evidence::Manual, "admin");
        let mut taken = 0usize;
        for i in 0..1_000_000u32 {
            let now = T0 + u64::from(i);
            let a = IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i)));
            book.offend(&p, a, now, Evidence::Verified, "scan");
            assert!(book.len() <= cap);
            if i % 1000 == 0 {
                taken += book.take_expired(now).len();
                assert!(book.ended.is_empty());
            }
            assert!(book.ended.len() <= 1000);
        }
        let now = T0 + 999_999;
        assert_eq!(book.len(), cap);
        assert_eq!(book.records.len(), book.expiry.len() + book.idle.len() + 1);
        // Every ban still in force survived: the newest 3600 offenders and the permanent.
        assert_eq!(book.active(now).count(), 3600 + 1);
        assert!(book.is_banned(ip("192.0.2.1"), now));
        // Nothing was lost: each expired ban was handed out, none evicted while active.
        taken += book.take_expired(now).len();
        assert_eq!(taken, 1_000_000 - 3600);
    }

    #[test]
    fn full_of_active_bans_evicts_soonest_expiry_and_hands_it_out() {
        let p = BanPolicy::default();
        let mut book = BanBook::new(3);
        book.ban(&p, net("192.0.2.1/32"), T0, None, Evidence::Manual, "admin");
        book.ban(
            &p,
            net("192.0.2.2/32"),
            T0,
            Some(Duration::from_secs(50)),
            Evidence::Manual,
            "a",
        );
        book.ban(
            &p,
            net("192.0.2.3/32"),
            T0,
            Some(Duration::from_secs(40)),
            Evidence::Manual,
            "a",
        );
        book.offend(&p, ip("192.0.2.4"), T0 + 1, Evidence::Verified, "scan");
        assert_eq!(book.len(), 3);
        assert!(!book.is_banned(ip("192.0.2.3"), T0 + 1));
        assert!(book.is_banned(ip("192.0.2.1"), T0 + 1));
        assert_eq!(book.next_expiry(), Some(T0 + 1));
        let out = book.take_expired(T0 + 1);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key, net("192.0.2.3/32"));
        // History goes before any active ban.
        book.unban(net("192.0.2.2/32"), T0 + 2);
        book.offend(&p, ip("192.0.2.5"), T0 + 3, Evidence::Verified, "scan");
        assert!(book.is_banned(ip("192.0.2.4"), T0 + 3));
        assert!(book.records().all(|b| b.key != net("192.0.2.2/32")));
        assert!(book.take_expired(T0 + 3).is_empty());
        // Permanent bans are never evicted: a full book of them grows.
        let mut perm = BanBook::new(2);
        for i in 1..=3u8 {
            let n = IpNet::V4(Ipv4Net::new(Ipv4Addr::new(192, 0, 2, i), 32).unwrap());
            perm.ban(&p, n, T0, None, Evidence::Manual, "admin");
        }
        assert_eq!(perm.len(), 3);
    }

    #[test]
    fn restore_and_is_banned() {
        let p = BanPolicy {
            group_v6: 64,
            ..BanPolicy::default()
        };
        let mut book = BanBook::new(16);
        book.offend(&p, ip("2001:db8:5::1"), T0, Evidence::Verified, "scan");
        book.ban(
            &p,
            net("198.18.0.2/32"),
            T0,
            None,
            Evidence::Manual,
            "admin",
        );
        book.offend(&p, ip("198.18.0.3"), T0, Evidence::Verified, "scan");
        book.unban(net("198.18.0.3/32"), T0 + 1);
        book.offend(&p, ip("198.18.0.4"), T0, Evidence::Verified, "scan");
        let settled = book.settled_through(T0 + 2);
        assert_eq!(settled, T0 + 2);
        let saved: Vec<Ban> = book.records().cloned().collect();

        // Restarted after the 198.18.0.4 ban ended while the daemon was down.
        let now = T0 + H + 5;
        let mut again = BanBook::new(16);
        again.set_settled_through(settled);
        for b in saved {
            again.restore(b);
        }
        assert_eq!(again.len(), 4);
        assert!(!again.is_banned(ip("2001:db8:5:0:1::1"), now));
        assert!(again.is_banned(ip("2001:db8:5:0:1::1"), T0 + 10));
        assert!(again.is_banned(ip("198.18.0.2"), now));
        assert!(!again.is_banned(ip("198.18.0.3"), T0 + 10));
        let out: Vec<_> = again.take_expired(now).into_iter().map(|b| b.key).collect();
        assert_eq!(out.len(), 2);
        assert!(out.contains(&net("198.18.0.4/32")));
        assert!(out.contains(&net("2001:db8:5::/64")));
        assert_eq!(
            again
                .offend(&p, ip("198.18.0.3"), now, Evidence::Verified, "x")
                .offences,
            2
        );
    }
}

#[cfg(test)]
mod evidence_tests {
    use super::*;

    const H: u64 = 3600;
    const T0: u64 = 1_700_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn issue7_policies_by_class_defaults() {
        let p = BanPolicies::default();
        assert_eq!(p.for_evidence(Evidence::Verified), &BanPolicy::default());
        let u = p.for_evidence(Evidence::Unverified);
        assert_eq!(u, &BanPolicy::provisional());
        assert_eq!(u.ban_time, Duration::from_secs(600));
        assert_eq!(u.max_ban_time, Duration::from_secs(24 * H));
        assert_eq!(u.offence_gap, Duration::from_secs(H));
        assert_eq!(u.permanent_after, None);
        assert!(u.ban && p.verified.ban);
        // The provisional ladder: 10 min, doubling, never above a day.
        let mins: Vec<_> = (1..=10)
            .map(|n| u.duration_for(n).unwrap().as_secs() / 60)
            .collect();
        assert_eq!(mins, [10, 20, 40, 80, 160, 320, 640, 1280, 1440, 1440]);
    }

    /// Decoys (`nmap -D`): probes forged in the name of an address that did not scan
    /// are banned provisionally each time, but a repeat within the gap does not
    /// escalate.
    #[test]
    fn issue7_unverified_offences_within_the_gap_do_not_escalate() {
        let p = BanPolicy::provisional();
        let mut book = BanBook::new(16);
        let a = ip("198.18.0.9");
        let first = book.offend(&p, a, T0, Evidence::Unverified, "decoy scan");
        assert_eq!((first.offences, first.expires_at), (1, Some(T0 + 600)));
        // The ban ended; the forger sends again 20 minutes after the first.
        let again = book.offend(&p, a, T0 + 1200, Evidence::Unverified, "decoy scan");
        assert_eq!(again.offences, 1, "within the gap: not counted");
        assert_eq!(again.expires_at, Some(T0 + 1200 + 600), "same length again");
        assert_eq!(
            again.last_offence, T0,
            "the counted offence stays the reference"
        );
        assert_eq!(again.evidence, Evidence::Unverified);
        // Once an hour past the counted offence, it counts.
        let later = book.offend(&p, a, T0 + H, Evidence::Unverified, "scan");
        assert_eq!(later.offences, 2);
        assert_eq!(later.expires_at, Some(T0 + H + 1200));
        // The full policy counts every offence (no gap).
        let full = BanPolicy::default();
        let b = ip("198.18.0.10");
        book.offend(&full, b, T0, Evidence::Verified, "connect");
        assert_eq!(
            book.offend(&full, b, T0 + 1, Evidence::Verified, "c")
                .offences,
            2
        );
    }

    #[test]
    fn issue7_ban_keeps_the_strongest_evidence_while_in_force() {
        let policies = BanPolicies::default();
        let mut book = BanBook::new(16);
        let a = ip("198.18.0.2");
        let u = book.offend(
            &policies.unverified,
            a,
            T0,
            Evidence::Unverified,
            "TCP SYN/Normal scan to TCP port 23",
        );
        assert_eq!(u.evidence, Evidence::Unverified);
        // A connect while the provisional ban holds (seen by a handshake trap) makes it
        // verified and gives it the full length.
        let v = book.offend(&policies.verified, a, T0 + 5, Evidence::Verified, "connect");
        assert_eq!(v.evidence, Evidence::Verified);
        assert_eq!(v.expires_at, Some(T0 + 5 + 2 * H));
        // A later single packet does not weaken it, nor shorten it.
        let w = book.offend(&policies.unverified, a, T0 + 9, Evidence::Unverified, "SYN");
        assert_eq!(w.evidence, Evidence::Verified);
        assert_eq!(w.expires_at, v.expires_at);
        // The administrator's ban is the strongest.
        let m = book.ban(
            &policies.manual,
            IpNet::from(a),
            T0 + 10,
            None,
            Evidence::Manual,
            "banned by the administrator",
        );
        assert_eq!(m.evidence, Evidence::Manual);
        let x = book.offend(&policies.verified, a, T0 + 11, Evidence::Verified, "c");
        assert_eq!(x.evidence, Evidence::Manual);
        // Lifted, the record's next ban takes the class of its own offence.
        book.unban(IpNet::from(a), T0 + 12);
        let y = book.offend(&policies.unverified, a, T0 + 13, Evidence::Unverified, "s");
        assert_eq!(y.evidence, Evidence::Unverified);
    }

    /// An unverified offence on a record that verified offences escalated is still held
    /// to the provisional cap: forged packets never reach beyond it.
    #[test]
    fn issue7_unverified_offence_never_beyond_the_provisional_cap() {
        let policies = BanPolicies::default();
        let mut book = BanBook::new(16);
        let a = ip("198.18.0.3");
        let mut now = T0;
        for _ in 0..8 {
            let b = book.offend(&policies.verified, a, now, Evidence::Verified, "c");
            now = b.expires_at.unwrap();
        }
        now += 2 * H;
        // The full policy would now ban for its 7-day cap; a single packet gets a day.
        assert_eq!(
            policies.verified.duration_for(9),
            Some(Duration::from_secs(168 * H))
        );
        let b = book.offend(&policies.unverified, a, now, Evidence::Unverified, "s");
        assert_eq!(b.offences, 9);
        assert_eq!(b.expires_at, Some(now + 24 * H));
        assert_eq!(b.evidence, Evidence::Unverified);
    }
}
