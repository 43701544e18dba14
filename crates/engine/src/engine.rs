//! The decision core: per-source state, PortSentry's SCAN_TRIGGER, the ignore list,
//! "already blocked", and damping of our own output. Sans-IO: probes and outcomes come in
//! with the current time, actions are pulled out with [`Engine::poll_action`].
//!
//! Invariants:
//! - The ignore list and the protected set are checked before any state for a source
//!   exists, so an exempt address never occupies a slot and is never acted on; the
//!   [`Action::Ignored`] line says which of the two exempted it (the ignore list first).
//! - State is keyed by (source address, protocol), like PortSentry 1.2 whose TCP and UDP
//!   modes ran as separate processes with separate counters and blocked files.
//! - Memory is bounded: at most `capacity` sources are tracked; when full, the source
//!   that was created first is evicted (oldest-first, as scanlogd does). Blocked
//!   sources live in the same table, so a flood of spoofed sources can evict a blocked
//!   one: its ban stays in the firewall, only our "already blocked" memory goes, and a
//!   later hit from it runs the response again (the same as a 1.2 restart).
//! - A source never has two responses in flight: while one runs, further hits are
//!   counted and reported in one damped line.
//! - A single packet (unverified evidence) from a known peer, a source that recently
//!   completed a real connection with this host ([`Verdict::KnownPeer`]), never leads to
//!   a response: someone may be forging it to get the peer banned. It is reported in
//!   one damped [`Action::PossiblyForged`] line per source, and takes no state slot.
//!   Probes the kernel dropped without a ban for lack of budget or room
//!   ([`Verdict::OverBudget`], [`Verdict::SetFull`]) get no response either: they are
//!   only counted (the daemon reports them in its summary).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use crate::ignore::IgnoreSet;
use crate::probe::{Evidence, Probe, Proto, Verdict};
use crate::time::Millis;

/// Tunables of the engine. Every value is documented with its reason in one place.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// PortSentry's SCAN_TRIGGER: hits 1..=N from a source are grace hits and stay
    /// silent; hit N+1 raises the alert and runs the response. 0 acts on the first hit.
    pub scan_trigger: u32,
    /// Most (source, protocol) pairs tracked at once. 65,536 entries cost a few MiB; a
    /// scan from more distinct sources than that is a spoofed flood, and oldest-first
    /// eviction keeps the newest sources, which are the ones still sending.
    pub capacity: usize,
    /// A source's grace-hit count is forgotten after this long without a hit, so a
    /// stray packet today and another next week do not add up to a scan.
    pub forget_after: Duration,
    /// At most one line per source and kind of event per this period for repeated
    /// events (already blocked, ignored, hits while a response runs); the next line
    /// says how many were suppressed. Bounds log volume under a 65,535-port scan.
    pub log_damping: Duration,
    /// After a response failed, wait this long before running it again for the same
    /// source, so a broken KILL_ROUTE is not forked once per probe.
    pub retry_after_failure: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            scan_trigger: 0,
            capacity: 65_536,
            forget_after: Duration::from_secs(3600),
            log_damping: Duration::from_secs(60),
            retry_after_failure: Duration::from_secs(30),
        }
    }
}

/// What the engine asks the daemon to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A probe crossed the trigger: log the attack (`attackalert: ... from host: ...`).
    /// `suppressed` counts earlier hits of this source that were not logged by damping.
    Alert { probe: Probe, suppressed: u32 },
    /// Run the configured response (BLOCK_x, KILL_*) against `probe.src`, then report
    /// back through [`Engine::handle_outcome`].
    Respond { probe: Probe },
    /// A hit from a source that is already blocked.
    AlreadyBlocked { probe: Probe, suppressed: u32 },
    /// A hit from a source on the ignore list or in the protected set; it is never
    /// acted on. `why` says which (the ignore list when both hold it).
    Ignored {
        probe: Probe,
        suppressed: u32,
        why: Exempt,
    },
    /// The damping period of a source ended with hits that were not logged: `count`
    /// of them, the last being `probe`. Without this line a fast scan would show only
    /// its first probe.
    Suppressed { probe: Probe, count: u32 },
    /// A single packet (unverified evidence) claiming to come from a known peer (a
    /// source with a real connection to this host, [`Verdict::KnownPeer`]): possibly
    /// forged to get the peer banned, so nothing is done to it. One line per source per
    /// damping period; `suppressed` counts the ones not logged before it.
    PossiblyForged { probe: Probe, suppressed: u32 },
}

/// Why a source is never acted on: the two sets the engine checks first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exempt {
    /// The admin's ignore list (IGNORE_FILE), given to [`Engine::new`].
    IgnoreList,
    /// The protected set (this host's addresses, gateways, resolvers and any extra
    /// networks the daemon protects), given to [`Engine::set_protected`].
    Protected,
}

/// How a response ended, as the responder observed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every configured block action succeeded: the source is blocked for `length`
    /// from the `now` of [`Engine::handle_outcome`], or for good when None. The engine
    /// keeps its own monotonic deadline; the caller's clocks are not converted.
    Blocked { length: Option<Duration> },
    /// The configuration says not to block (BLOCK_x=0, or only a command ran): the
    /// source was reported but is not blocked.
    Reported,
    /// A block action failed; the response may be retried later.
    Failed,
}

/// Counters for metrics and the shutdown summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub probes: u64,
    pub grace_hits: u64,
    pub alerts: u64,
    pub responses: u64,
    pub ignored: u64,
    pub already_blocked: u64,
    pub suppressed_lines: u64,
    pub evictions: u64,
    /// Unverified probes from known peers, not acted on ([`Action::PossiblyForged`]).
    pub possibly_forged: u64,
    /// Probes the kernel dropped without a ban (over its budget, or the set full):
    /// no response.
    pub not_banned_by_kernel: u64,
}

/// What the engine holds about one (source, protocol), for an administrator's
/// question ([`Engine::source_view`]); a copy, the engine is not changed by asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceView {
    pub proto: Proto,
    /// Hits counted toward SCAN_TRIGGER.
    pub hits: u32,
    pub last_hit: Millis,
    /// The local port of the latest hit.
    pub last_port: u16,
    pub state: SourceStatus,
}

/// Where a source stands with the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceStatus {
    /// Counting hits (below the trigger, or a ban that ran out).
    Watching,
    /// A response was asked for and has not been reported back yet.
    Responding,
    /// Blocked until then (`None`: for good).
    Blocked { until: Option<Millis> },
    /// The response only reported it (no block configured).
    Reported,
    /// The response failed at this time; it is retried after the back-off.
    Failed { at: Millis },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Counting grace hits, or triggered with no response run yet.
    Watching,
    /// A response is running, asked for at `since`.
    Pending {
        since: Millis,
    },
    Blocked {
        until: Option<Millis>,
    },
    Reported,
    Failed {
        at: Millis,
    },
}

impl Status {
    fn is_blocked(self) -> bool {
        matches!(self, Status::Blocked { .. })
    }
}

#[derive(Debug, Clone)]
struct SourceState {
    /// Creation order, to tell a live entry from a stale eviction-queue record.
    generation: u64,
    hits: u32,
    last_hit: Millis,
    /// The local port of the latest hit (for `portsentry explain`).
    last_port: u16,
    status: Status,
    damper: Damper,
}

/// Rate limit for repeated lines about one source.
#[derive(Debug, Clone, Copy, Default)]
struct Damper {
    last_emitted: Option<Millis>,
    suppressed: u32,
    /// The most recent suppressed probe, for the summary line when the period ends.
    last_suppressed: Option<Probe>,
}

impl Damper {
    /// Returns `Some(suppressed_before)` when a line may be emitted now; otherwise the
    /// probe is counted (and remembered for the summary).
    fn admit(&mut self, now: Millis, period: Duration, probe: Probe) -> Option<u32> {
        match self.last_emitted {
            Some(t) if now.since(t) < period => {
                self.suppressed = self.suppressed.saturating_add(1);
                self.last_suppressed = Some(probe);
                None
            }
            _ => Some(self.restart(now)),
        }
    }

    /// A line about the source is written at `now`: a new period starts, and the count
    /// of hits suppressed before it is returned (for that line to carry).
    fn restart(&mut self, now: Millis) -> u32 {
        self.last_emitted = Some(now);
        self.last_suppressed = None;
        std::mem::take(&mut self.suppressed)
    }

    /// Take the summary of the suppressed hits (the last one and their count), if any;
    /// the next hit then starts a new period at once.
    fn flush(&mut self) -> Option<(Probe, u32)> {
        let probe = self.last_suppressed.take()?;
        self.last_emitted = None;
        Some((probe, std::mem::take(&mut self.suppressed)))
    }

    /// When the suppressed hits are due to be summarised, if any are waiting.
    fn flush_due(&self, period: Duration) -> Option<Millis> {
        match (self.suppressed, self.last_emitted) {
            (0, _) | (_, None) => None,
            (_, Some(t)) => Some(t + period),
        }
    }
}

type Key = (IpAddr, Proto);

/// The sans-IO decision engine.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    ignore: IgnoreSet,
    protected: IgnoreSet,
    sources: HashMap<Key, SourceState>,
    /// Keys in creation order, for oldest-first eviction; records whose generation no
    /// longer matches the live entry are stale and skipped.
    order: VecDeque<(Key, u64)>,
    next_generation: u64,
    /// Damping for ignored sources, kept apart so they never take a state slot.
    ignored_log: HashMap<IpAddr, Damper>,
    /// Damping for possibly forged probes from known peers, kept apart the same way.
    forged_log: HashMap<IpAddr, Damper>,
    actions: VecDeque<Action>,
    stats: EngineStats,
    /// Cached [`Engine::poll_timeout`]: exact after a sweep or an outcome, lowered when
    /// a source is created, possibly early otherwise.
    next_deadline: Option<Millis>,
}

/// When a source next needs the timer: its suppressed hits are due to be summarised, or
/// its state can be dropped (never while a response runs or a permanent ban holds).
fn deadline(s: &SourceState, forget_after: Duration, damping: Duration) -> Option<Millis> {
    match (drop_at(s, forget_after), s.damper.flush_due(damping)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// When a source's state can be dropped: never while a response runs or a permanent
/// ban holds; else after its ban and `forget_after` of quiet.
fn drop_at(s: &SourceState, forget_after: Duration) -> Option<Millis> {
    match s.status {
        Status::Pending { .. } | Status::Blocked { until: None } => None,
        Status::Blocked { until: Some(until) } => Some(until.max(s.last_hit + forget_after)),
        _ => Some(s.last_hit + forget_after),
    }
}

/// Lower the cached deadline to `due`, if that is earlier.
fn lower(next: &mut Option<Millis>, due: Option<Millis>) {
    if let Some(due) = due {
        *next = Some(next.map_or(due, |d| d.min(due)));
    }
}

impl Engine {
    /// Bound on the ignored-source damping table; past it the table is cleared, which
    /// only costs one extra log line per ignored source.
    const IGNORED_LOG_CAPACITY: usize = 4096;

    pub fn new(config: EngineConfig, ignore: IgnoreSet) -> Self {
        let capacity = config.capacity.max(1);
        Engine {
            config: EngineConfig { capacity, ..config },
            ignore,
            protected: IgnoreSet::new(),
            sources: HashMap::with_capacity(capacity.min(4096)),
            order: VecDeque::new(),
            next_generation: 0,
            ignored_log: HashMap::new(),
            forged_log: HashMap::new(),
            actions: VecDeque::new(),
            stats: EngineStats::default(),
            next_deadline: None,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Number of (source, protocol) pairs currently tracked.
    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }

    /// Replace the protected set: networks never acted on although the admin did not
    /// list them (the daemon's own addresses, gateways, resolvers). It may hold the
    /// ignore list too; a source on the ignore list is still reported as such.
    pub fn set_protected(&mut self, protected: IgnoreSet) {
        self.protected = protected;
    }

    /// Why `src` is exempt, if it is: the ignore list first, then the protected set.
    fn exempt(&self, src: IpAddr) -> Option<Exempt> {
        if self.ignore.contains(src) {
            Some(Exempt::IgnoreList)
        } else if self.protected.contains(src) {
            Some(Exempt::Protected)
        } else {
            None
        }
    }

    /// Why `src` is never acted on, if it is (the ignore list first).
    pub fn exemption(&self, src: IpAddr) -> Option<Exempt> {
        self.exempt(src)
    }

    /// The state held for `src`, per protocol (none when it is not tracked). Two hash
    /// lookups: cheap enough to answer between two turns of the capture loop.
    pub fn source_view(&self, src: IpAddr) -> Vec<SourceView> {
        [Proto::Tcp, Proto::Udp]
            .into_iter()
            .filter_map(|proto| {
                let s = self.sources.get(&(src, proto))?;
                Some(SourceView {
                    proto,
                    hits: s.hits,
                    last_hit: s.last_hit,
                    last_port: s.last_port,
                    state: match s.status {
                        Status::Watching => SourceStatus::Watching,
                        Status::Pending { .. } => SourceStatus::Responding,
                        Status::Blocked { until } => SourceStatus::Blocked { until },
                        Status::Reported => SourceStatus::Reported,
                        Status::Failed { at } => SourceStatus::Failed { at },
                    },
                })
            })
            .collect()
    }

    /// Is this source currently known as blocked for `proto`?
    pub fn is_blocked(&self, src: IpAddr, proto: Proto) -> bool {
        self.sources
            .get(&(src, proto))
            .is_some_and(|s| s.status.is_blocked())
    }

    /// Feed one probe that hit a watched, unused local port.
    pub fn handle_probe(&mut self, now: Millis, probe: Probe) {
        self.stats.probes += 1;
        if let Some(why) = self.exempt(probe.src) {
            self.stats.ignored += 1;
            self.note_ignored(now, probe, why);
            return;
        }
        match probe.verdict {
            Verdict::KnownPeer if probe.evidence() == Evidence::Unverified => {
                self.stats.possibly_forged += 1;
                self.note_possibly_forged(now, probe);
                return;
            }
            Verdict::OverBudget => {
                self.stats.not_banned_by_kernel += 1;
                return;
            }
            Verdict::SetFull => {
                // Detection goes on when the ban set is full: the probe is alerted
                // (damped per source, as possibly-forged lines are), never answered
                // with a response, which could not be written into the set anyway.
                self.stats.not_banned_by_kernel += 1;
                self.note_set_full(now, probe);
                return;
            }
            _ => {}
        }
        let key = (probe.src, probe.proto());
        if !self.sources.contains_key(&key) {
            self.insert_source(key, now);
        }
        let config = &self.config;
        let Some(state) = self.sources.get_mut(&key) else {
            return;
        };
        let config_damping = config.log_damping;
        // A ban that ran out makes the source a new one: it is judged again from zero.
        if let Status::Blocked { until: Some(until) } = state.status
            && now >= until
        {
            state.status = Status::Watching;
            state.hits = 0;
            state.damper = Damper::default();
        }
        // A response is running, was not needed, or failed too recently to retry:
        // the hit is only reported (damped).
        let holding = match state.status {
            Status::Pending { .. } | Status::Reported => true,
            Status::Failed { at } => now.since(at) < config.retry_after_failure,
            Status::Watching | Status::Blocked { .. } => false,
        };
        let blocked = state.status.is_blocked();
        if blocked || holding {
            if blocked {
                self.stats.already_blocked += 1;
            }
            match state.damper.admit(now, config_damping, probe) {
                Some(suppressed) if blocked => self
                    .actions
                    .push_back(Action::AlreadyBlocked { probe, suppressed }),
                Some(suppressed) => {
                    self.stats.alerts += 1;
                    self.actions.push_back(Action::Alert { probe, suppressed });
                }
                None => self.stats.suppressed_lines += 1,
            }
            state.last_hit = now;
            state.last_port = probe.dport;
            lower(
                &mut self.next_deadline,
                state.damper.flush_due(config_damping),
            );
            return;
        }
        if now.since(state.last_hit) >= config.forget_after {
            state.hits = 0;
        }
        state.last_hit = now;
        state.last_port = probe.dport;
        state.hits = state.hits.saturating_add(1);
        if state.hits <= config.scan_trigger {
            self.stats.grace_hits += 1;
            return;
        }
        // Triggered: the alert line is always written for the hit that acts, and it
        // restarts the damping period for later hits of this source.
        let suppressed = state.damper.restart(now);
        state.status = Status::Pending { since: now };
        self.stats.alerts += 1;
        self.stats.responses += 1;
        self.actions.push_back(Action::Alert { probe, suppressed });
        self.actions.push_back(Action::Respond { probe });
    }

    /// Report how a [`Action::Respond`] ended.
    pub fn handle_outcome(&mut self, now: Millis, src: IpAddr, proto: Proto, outcome: Outcome) {
        let key = (src, proto);
        if !self.sources.contains_key(&key) {
            // Evicted while the response ran: remember the result anyway, since a
            // blocked source must read as blocked.
            self.insert_source(key, now);
        }
        if let Some(state) = self.sources.get_mut(&key) {
            // A new status starts a new damping period, so the first "already
            // blocked" line comes at once; the hits suppressed while the response ran
            // are summarised now (on the kernel fast path no further probe may come).
            if let Some((probe, count)) = state.damper.flush() {
                self.actions.push_back(Action::Suppressed { probe, count });
            }
            state.damper.last_emitted = None;
            // The ban was made between the request and now; counting its length from
            // the request ends the engine's "blocked" no later than the kernel's ban,
            // so a probe that gets through after the kernel lifted it is judged anew
            // (a repeat offence), never ignored as "already blocked".
            let banned_at = match state.status {
                Status::Pending { since } => since,
                _ => now,
            };
            state.status = match outcome {
                Outcome::Blocked { length } => Status::Blocked {
                    until: length.map(|d| banned_at + d),
                },
                Outcome::Reported => Status::Reported,
                Outcome::Failed => Status::Failed { at: now },
            };
        }
    }

    /// Forget everything about the sources in `net` (both protocols): after an
    /// administrator lifted their ban, their next probe is judged from zero.
    pub fn forget(&mut self, net: ipnet::IpNet) {
        self.sources.retain(|(src, _), _| !net.contains(src));
    }

    /// Housekeeping: forget idle sources that are not blocked. Spurious calls are
    /// harmless.
    pub fn handle_timeout(&mut self, now: Millis) {
        let damping = self.config.log_damping;
        for state in self.sources.values_mut() {
            if state.damper.flush_due(damping).is_some_and(|t| t <= now)
                && let Some((probe, count)) = state.damper.flush()
            {
                self.actions.push_back(Action::Suppressed { probe, count });
            }
        }
        let forget_after = self.config.forget_after;
        self.sources
            .retain(|_, s| drop_at(s, forget_after).is_none_or(|t| now < t));
        let sources = &self.sources;
        self.order.retain(|(key, generation)| {
            sources
                .get(key)
                .is_some_and(|s| s.generation == *generation)
        });
        self.recompute_deadline();
    }

    /// When [`Engine::handle_timeout`] next has work to do, if ever. O(1): the daemon
    /// asks at every turn of its loop. The answer may be early (a source seen again
    /// since moves its own deadline later), never late; an early wake-up is a harmless
    /// no-op that recomputes it.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.next_deadline
    }

    /// Exact earliest deadline over all sources (O(n); after sweeps and outcomes).
    fn recompute_deadline(&mut self) {
        let forget_after = self.config.forget_after;
        let damping = self.config.log_damping;
        self.next_deadline = self
            .sources
            .values()
            .filter_map(|s| deadline(s, forget_after, damping))
            .min();
    }

    /// Next action for the daemon to carry out, in the order they were decided.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn note_ignored(&mut self, now: Millis, probe: Probe, why: Exempt) {
        let period = self.config.log_damping;
        match damped(&mut self.ignored_log, now, period, probe) {
            Some(suppressed) => self.actions.push_back(Action::Ignored {
                probe,
                suppressed,
                why,
            }),
            None => self.stats.suppressed_lines += 1,
        }
    }

    fn note_possibly_forged(&mut self, now: Millis, probe: Probe) {
        let period = self.config.log_damping;
        match damped(&mut self.forged_log, now, period, probe) {
            Some(suppressed) => self
                .actions
                .push_back(Action::PossiblyForged { probe, suppressed }),
            None => self.stats.suppressed_lines += 1,
        }
    }

    /// A probe the kernel could not ban for a full set: alerted, damped per source in
    /// the same bounded log as the possibly forged ones, with no response.
    fn note_set_full(&mut self, now: Millis, probe: Probe) {
        let period = self.config.log_damping;
        match damped(&mut self.forged_log, now, period, probe) {
            Some(suppressed) => self.actions.push_back(Action::Alert { probe, suppressed }),
            None => self.stats.suppressed_lines += 1,
        }
    }

    fn insert_source(&mut self, key: Key, now: Millis) {
        while self.sources.len() >= self.config.capacity {
            let Some((old_key, generation)) = self.order.pop_front() else {
                break;
            };
            if self
                .sources
                .get(&old_key)
                .is_some_and(|s| s.generation == generation)
            {
                self.sources.remove(&old_key);
                self.stats.evictions += 1;
            }
        }
        // Keep the order queue from growing without bound when entries are removed
        // by handle_timeout rather than by eviction.
        if self.order.len() > self.config.capacity.saturating_mul(2) {
            let sources = &self.sources;
            self.order
                .retain(|(k, g)| sources.get(k).is_some_and(|s| s.generation == *g));
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.sources.insert(
            key,
            SourceState {
                generation,
                hits: 0,
                last_hit: now,
                last_port: 0,
                status: Status::Watching,
                damper: Damper::default(),
            },
        );
        self.order.push_back((key, generation));
        lower(
            &mut self.next_deadline,
            Some(now + self.config.forget_after),
        );
    }
}

/// One line per source per damping `period` from a log of dampers that holds at most
/// [`Engine::IGNORED_LOG_CAPACITY`] sources (emptied when a new one finds it full: a
/// flood of sources then costs lines, never memory). `Some(suppressed)`: say it now,
/// with the count of lines held back before it; `None`: held back.
fn damped(
    log: &mut HashMap<IpAddr, Damper>,
    now: Millis,
    period: Duration,
    probe: Probe,
) -> Option<u32> {
    if log.len() >= Engine::IGNORED_LOG_CAPACITY && !log.contains_key(&probe.src) {
        log.clear();
    }
    log.entry(probe.src).or_default().admit(now, period, probe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{ProbeKind, TcpFlags};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
    }

    fn probe(src: IpAddr, dport: u16, kind: ProbeKind) -> Probe {
        Probe {
            src,
            dst: v4(1),
            sport: 40000,
            dport,
            kind,
            ip_options: false,
            ttl: 64,
            verdict: crate::probe::Verdict::Observed,
        }
    }

    fn syn(src: IpAddr, dport: u16) -> Probe {
        probe(src, dport, ProbeKind::Syn)
    }

    fn drain(engine: &mut Engine) -> Vec<Action> {
        std::iter::from_fn(|| engine.poll_action()).collect()
    }

    fn engine(trigger: u32) -> Engine {
        Engine::new(
            EngineConfig {
                scan_trigger: trigger,
                ..EngineConfig::default()
            },
            IgnoreSet::new(),
        )
    }

    /// Issue 9 (`portsentry explain`): the view follows a source from its grace hits
    /// through the response to the ban, per protocol, and asking changes nothing.
    #[test]
    fn issue_9_source_view_shows_hits_port_and_state() {
        let mut e = engine(1);
        assert!(e.source_view(v4(2)).is_empty());
        e.handle_probe(Millis(5), syn(v4(2), 23));
        let view = e.source_view(v4(2));
        assert_eq!(
            view,
            vec![SourceView {
                proto: Proto::Tcp,
                hits: 1,
                last_hit: Millis(5),
                last_port: 23,
                state: SourceStatus::Watching,
            }]
        );
        e.handle_probe(Millis(9), syn(v4(2), 25));
        assert_eq!(e.source_view(v4(2))[0].state, SourceStatus::Responding);
        assert_eq!(e.source_view(v4(2))[0].last_port, 25);
        e.handle_outcome(
            Millis(10),
            v4(2),
            Proto::Tcp,
            Outcome::Blocked {
                length: Some(Duration::from_secs(60)),
            },
        );
        let view = e.source_view(v4(2));
        assert_eq!(view.len(), 1);
        assert_eq!(view[0].hits, 2);
        // Counted from when the response was asked for (Millis(9)).
        assert_eq!(
            view[0].state,
            SourceStatus::Blocked {
                until: Some(Millis(9) + Duration::from_secs(60))
            }
        );
        assert_eq!(e.source_view(v4(2)), view);
        assert_eq!(e.exemption(v4(2)), None);
    }

    #[test]
    fn trigger_zero_acts_on_first_hit() {
        let mut e = engine(0);
        e.handle_probe(Millis(0), syn(v4(2), 23));
        assert_eq!(
            drain(&mut e),
            vec![
                Action::Alert {
                    probe: syn(v4(2), 23),
                    suppressed: 0
                },
                Action::Respond {
                    probe: syn(v4(2), 23)
                },
            ]
        );
    }

    #[test]
    fn scan_trigger_two_acts_on_third_hit_not_before() {
        let mut e = engine(2);
        e.handle_probe(Millis(0), syn(v4(2), 23));
        e.handle_probe(Millis(10), syn(v4(2), 24));
        assert!(drain(&mut e).is_empty(), "grace hits must stay silent");
        e.handle_probe(Millis(20), syn(v4(2), 25));
        let actions = drain(&mut e);
        assert!(matches!(actions[0], Action::Alert { probe, .. } if probe.dport == 25));
        assert!(matches!(actions[1], Action::Respond { .. }));
        assert_eq!(e.stats().grace_hits, 2);
    }

    #[test]
    fn counts_are_per_source_and_per_protocol() {
        let mut e = engine(1);
        e.handle_probe(Millis(0), syn(v4(2), 23));
        e.handle_probe(Millis(0), syn(v4(3), 23));
        e.handle_probe(Millis(0), probe(v4(2), 53, ProbeKind::Udp));
        assert!(drain(&mut e).is_empty());
        e.handle_probe(Millis(1), syn(v4(2), 24));
        assert_eq!(drain(&mut e).len(), 2);
    }

    #[test]
    fn grace_hits_are_forgotten_after_idle_period() {
        let mut e = engine(1);
        e.handle_probe(Millis(0), syn(v4(2), 23));
        let later = Millis(0) + e.config().forget_after;
        e.handle_probe(later, syn(v4(2), 24));
        assert!(drain(&mut e).is_empty(), "old hit must not count");
        e.handle_probe(later + Duration::from_secs(1), syn(v4(2), 25));
        assert_eq!(drain(&mut e).len(), 2);
    }

    #[test]
    fn ignored_source_is_reported_damped_and_never_acted_on() {
        let mut ignore = IgnoreSet::new();
        ignore.insert("198.18.0.0/30".parse().unwrap());
        ignore.insert("fd00:5e17::7/128".parse().unwrap());
        let mut e = Engine::new(EngineConfig::default(), ignore);
        for port in 1..100 {
            e.handle_probe(Millis(u64::from(port)), syn(v4(2), port));
        }
        let v6: IpAddr = IpAddr::V6("fd00:5e17::7".parse::<Ipv6Addr>().unwrap());
        e.handle_probe(Millis(200), syn(v6, 22));
        let actions = drain(&mut e);
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert!(actions.iter().all(|a| matches!(a, Action::Ignored { .. })));
        assert_eq!(e.tracked_sources(), 0, "ignored sources take no state");
        // After the damping period, one line with the suppressed count.
        e.handle_probe(Millis(61_000), syn(v4(2), 5));
        assert_eq!(
            drain(&mut e),
            vec![Action::Ignored {
                probe: syn(v4(2), 5),
                suppressed: 98,
                why: Exempt::IgnoreList,
            }]
        );
    }

    #[test]
    fn ignored_line_says_whether_ignore_list_or_protected_set() {
        let mut ignore = IgnoreSet::new();
        ignore.insert("198.18.0.2/32".parse().unwrap());
        let mut e = Engine::new(EngineConfig::default(), ignore.clone());
        // The daemon's protected set holds the ignore list as well as its own addresses.
        let mut protected = ignore;
        protected.insert("198.18.0.3/32".parse().unwrap());
        protected.insert("fd00:5e17::1/128".parse().unwrap());
        e.set_protected(protected);
        let v6: IpAddr = IpAddr::V6("fd00:5e17::1".parse::<Ipv6Addr>().unwrap());
        e.handle_probe(Millis(0), syn(v4(2), 22));
        e.handle_probe(Millis(1), syn(v4(3), 22));
        e.handle_probe(Millis(2), syn(v6, 22));
        e.handle_probe(Millis(3), syn(v4(4), 22));
        let why: Vec<_> = drain(&mut e)
            .into_iter()
            .map(|a| match a {
                Action::Ignored { probe, why, .. } => (probe.src, Some(why)),
                other => (action_src(&other), None),
            })
            .collect();
        assert_eq!(
            why,
            [
                (v4(2), Some(Exempt::IgnoreList)),
                (v4(3), Some(Exempt::Protected)),
                (v6, Some(Exempt::Protected)),
                (v4(4), None),
                (v4(4), None),
            ]
        );
        assert_eq!(e.stats().ignored, 3);
        assert_eq!(e.tracked_sources(), 1, "exempt sources take no state");
        // A new protected set replaces the old one; the ignore list stays.
        e.set_protected(IgnoreSet::new());
        e.handle_probe(Millis(70_000), syn(v4(3), 23));
        e.handle_probe(Millis(70_000), syn(v4(2), 23));
        let actions = drain(&mut e);
        assert!(matches!(actions[0], Action::Alert { .. }), "{actions:?}");
        assert!(matches!(
            actions.last(),
            Some(Action::Ignored {
                why: Exempt::IgnoreList,
                ..
            })
        ));
    }

    fn action_src(a: &Action) -> IpAddr {
        match a {
            Action::Alert { probe, .. }
            | Action::Respond { probe }
            | Action::AlreadyBlocked { probe, .. }
            | Action::Ignored { probe, .. }
            | Action::Suppressed { probe, .. }
            | Action::PossiblyForged { probe, .. } => probe.src,
        }
    }

    #[test]
    fn one_response_in_flight_then_already_blocked() {
        let mut e = engine(0);
        e.handle_probe(Millis(0), syn(v4(2), 1));
        assert_eq!(drain(&mut e).len(), 2);
        // More probes while the response runs: no second Respond, damped alerts.
        for port in 2..50 {
            e.handle_probe(Millis(1), syn(v4(2), port));
        }
        assert!(drain(&mut e).is_empty());
        e.handle_outcome(
            Millis(5),
            v4(2),
            Proto::Tcp,
            Outcome::Blocked { length: None },
        );
        assert!(e.is_blocked(v4(2), Proto::Tcp));
        e.handle_probe(Millis(6), syn(v4(2), 60));
        e.handle_probe(Millis(7), syn(v4(2), 61));
        assert_eq!(
            drain(&mut e),
            vec![
                Action::Suppressed {
                    probe: syn(v4(2), 49),
                    count: 48
                },
                Action::AlreadyBlocked {
                    probe: syn(v4(2), 60),
                    suppressed: 0
                }
            ]
        );
    }

    #[test]
    fn failed_response_is_retried_only_after_backoff() {
        let mut e = engine(0);
        e.handle_probe(Millis(0), syn(v4(2), 1));
        drain(&mut e);
        e.handle_outcome(Millis(10), v4(2), Proto::Tcp, Outcome::Failed);
        e.handle_probe(Millis(20), syn(v4(2), 2));
        assert!(
            !drain(&mut e)
                .iter()
                .any(|a| matches!(a, Action::Respond { .. }))
        );
        e.handle_probe(Millis(10) + e.config().retry_after_failure, syn(v4(2), 3));
        assert!(
            drain(&mut e)
                .iter()
                .any(|a| matches!(a, Action::Respond { .. }))
        );
    }

    #[test]
    fn reported_source_is_not_responded_to_again() {
        let mut e = engine(0);
        e.handle_probe(Millis(0), probe(v4(2), 53, ProbeKind::Udp));
        drain(&mut e);
        e.handle_outcome(Millis(1), v4(2), Proto::Udp, Outcome::Reported);
        e.handle_probe(Millis(70_000), probe(v4(2), 54, ProbeKind::Udp));
        assert_eq!(
            drain(&mut e),
            vec![Action::Alert {
                probe: probe(v4(2), 54, ProbeKind::Udp),
                suppressed: 0
            }]
        );
        assert!(!e.is_blocked(v4(2), Proto::Udp));
    }

    #[test]
    fn memory_is_bounded_under_spoofed_flood() {
        let mut e = Engine::new(
            EngineConfig {
                scan_trigger: 3,
                capacity: 1000,
                ..EngineConfig::default()
            },
            IgnoreSet::new(),
        );
        for i in 0..100_000u32 {
            let src = IpAddr::V4(Ipv4Addr::from(0xC612_0000 | i));
            e.handle_probe(Millis(u64::from(i)), syn(src, 23));
            assert!(e.tracked_sources() <= 1000);
        }
        assert_eq!(e.stats().evictions, 99_000);
        assert!(
            drain(&mut e).is_empty(),
            "single hits stay under the trigger"
        );
    }

    #[test]
    fn timeout_forgets_idle_sources_but_keeps_blocked_ones() {
        let mut e = engine(5);
        e.handle_probe(Millis(0), syn(v4(2), 1));
        let mut blocked = engine(0);
        blocked.handle_probe(Millis(0), syn(v4(3), 1));
        blocked.handle_outcome(
            Millis(1),
            v4(3),
            Proto::Tcp,
            Outcome::Blocked { length: None },
        );
        let deadline = e.poll_timeout().expect("idle source has a deadline");
        assert_eq!(deadline, Millis(0) + e.config().forget_after);
        e.handle_timeout(Millis(1)); // spurious: no-op
        assert_eq!(e.tracked_sources(), 1);
        e.handle_timeout(deadline);
        assert_eq!(e.tracked_sources(), 0);
        blocked.handle_timeout(Millis(10_000_000));
        assert!(blocked.is_blocked(v4(3), Proto::Tcp));
        assert_eq!(blocked.poll_timeout(), None);
    }

    /// Regression (found by system_kernel's escalation test when the outcome began to
    /// carry the ban's length): an outcome that reaches the engine late must not make
    /// the engine think the source is blocked after the kernel's ban has ended, or the
    /// repeat offence is ignored as "already blocked" and never escalated.
    #[test]
    fn a_late_outcome_does_not_outlast_the_kernel_ban() {
        let mut e = engine(0);
        e.handle_probe(Millis(1_000), syn(v4(2), 1));
        drain(&mut e);
        let length = Duration::from_secs(3);
        // The reporter banned at once; the outcome came back 200 ms later.
        e.handle_outcome(
            Millis(1_200),
            v4(2),
            Proto::Tcp,
            Outcome::Blocked {
                length: Some(length),
            },
        );
        // The kernel lifted the ban at 4.0 s; a probe at 4.1 s is a repeat offence.
        e.handle_probe(Millis(4_100), syn(v4(2), 2));
        assert!(
            drain(&mut e)
                .iter()
                .any(|a| matches!(a, Action::Respond { .. })),
            "a probe after the ban ended must be judged anew"
        );
    }

    #[test]
    fn expired_ban_makes_the_source_new_again() {
        let mut e = engine(1);
        e.handle_probe(Millis(0), syn(v4(2), 1));
        e.handle_probe(Millis(1), syn(v4(2), 2));
        drain(&mut e);
        let length = Duration::from_secs(3600);
        let until = Millis(2) + length;
        e.handle_outcome(
            Millis(2),
            v4(2),
            Proto::Tcp,
            Outcome::Blocked {
                length: Some(length),
            },
        );
        e.handle_probe(Millis(10), syn(v4(2), 3));
        assert!(matches!(drain(&mut e)[..], [Action::AlreadyBlocked { .. }]));
        // After expiry, the grace hits start again from zero.
        e.handle_probe(until, syn(v4(2), 4));
        assert!(
            drain(&mut e).is_empty(),
            "first hit after expiry is a grace hit"
        );
        assert!(!e.is_blocked(v4(2), Proto::Tcp));
        e.handle_probe(until + Duration::from_secs(1), syn(v4(2), 5));
        assert!(
            drain(&mut e)
                .iter()
                .any(|a| matches!(a, Action::Respond { .. }))
        );
    }

    #[test]
    fn forgotten_source_is_judged_from_zero() {
        let mut e = engine(0);
        e.handle_probe(Millis(0), syn(v4(2), 1));
        drain(&mut e);
        e.handle_outcome(
            Millis(1),
            v4(2),
            Proto::Tcp,
            Outcome::Blocked { length: None },
        );
        e.forget("198.18.0.0/24".parse().unwrap());
        assert!(!e.is_blocked(v4(2), Proto::Tcp));
        e.handle_probe(Millis(2), syn(v4(2), 2));
        assert!(
            drain(&mut e)
                .iter()
                .any(|a| matches!(a, Action::Respond { .. }))
        );
    }

    #[test]
    fn poll_timeout_is_never_late_and_exact_after_a_sweep() {
        let mut e = engine(5);
        e.handle_probe(Millis(0), syn(v4(2), 1));
        e.handle_probe(Millis(1000), syn(v4(3), 1));
        let forget = e.config().forget_after;
        assert_eq!(e.poll_timeout(), Some(Millis(0) + forget));
        // v4(2) is seen again: its deadline moves later; the cached one may be early.
        e.handle_probe(Millis(5000), syn(v4(2), 2));
        let early = e.poll_timeout().unwrap();
        assert!(early <= Millis(1000) + forget);
        // Waking early is a no-op that makes the deadline exact again.
        e.handle_timeout(early);
        assert_eq!(e.tracked_sources(), 2);
        assert_eq!(e.poll_timeout(), Some(Millis(1000) + forget));
        e.handle_timeout(Millis(1000) + forget);
        assert_eq!(e.tracked_sources(), 1);
        assert_eq!(e.poll_timeout(), Some(Millis(5000) + forget));
    }

    #[test]
    fn suppressed_hits_are_summarised_when_the_damping_period_ends() {
        let mut e = engine(0);
        e.handle_probe(Millis(0), syn(v4(2), 1));
        drain(&mut e);
        // The rest of a fast scan arrives while the response runs: not logged one by one.
        for port in 2..=100 {
            e.handle_probe(Millis(u64::from(port)), syn(v4(2), port));
        }
        assert!(drain(&mut e).is_empty());
        let due = e.poll_timeout().expect("a summary is due");
        assert_eq!(due, Millis(0) + e.config().log_damping);
        e.handle_timeout(due);
        assert_eq!(
            drain(&mut e),
            vec![Action::Suppressed {
                probe: syn(v4(2), 100),
                count: 99
            }]
        );
        // Nothing more to say until new hits come.
        e.handle_timeout(due + Duration::from_secs(120));
        assert!(drain(&mut e).is_empty());
    }

    #[test]
    fn retrigger_after_failed_response_does_not_leave_an_empty_summary() {
        let mut e = engine(0);
        e.handle_probe(Millis(0), syn(v4(2), 1));
        drain(&mut e);
        e.handle_outcome(Millis(10), v4(2), Proto::Tcp, Outcome::Failed);
        // Within the back-off: one alert line, then damped hits.
        e.handle_probe(Millis(20), syn(v4(2), 2));
        e.handle_probe(Millis(30), syn(v4(2), 3));
        drain(&mut e);
        // After the back-off the hit acts again and carries the damped count.
        let retry = Millis(10) + e.config().retry_after_failure;
        e.handle_probe(retry, syn(v4(2), 4));
        let actions = drain(&mut e);
        assert_eq!(
            actions[0],
            Action::Alert {
                probe: syn(v4(2), 4),
                suppressed: 1
            }
        );
        e.handle_outcome(retry, v4(2), Proto::Tcp, Outcome::Blocked { length: None });
        e.handle_timeout(retry + Duration::from_secs(3600));
        assert!(
            !drain(&mut e)
                .iter()
                .any(|a| matches!(a, Action::Suppressed { .. })),
            "the count was already carried by the alert"
        );
    }

    #[test]
    fn other_flag_probe_is_handled_like_any_probe() {
        let mut e = engine(0);
        let p = probe(
            v4(9),
            7,
            ProbeKind::Other(TcpFlags(TcpFlags::SYN | TcpFlags::FIN)),
        );
        e.handle_probe(Millis(0), p);
        assert_eq!(
            drain(&mut e)[0],
            Action::Alert {
                probe: p,
                suppressed: 0
            }
        );
    }

    fn with_verdict(mut p: Probe, verdict: crate::probe::Verdict) -> Probe {
        p.verdict = verdict;
        p
    }

    /// Issue 7: a SYN "from" a known peer (forged in its name, or the peer's own stray
    /// packet) is never answered with a ban; one damped line per source and period.
    #[test]
    fn issue7_unverified_probe_from_a_known_peer_is_possibly_forged_never_banned() {
        let mut e = engine(0);
        let peer = v4(7);
        for port in 1..=50u16 {
            e.handle_probe(
                Millis(u64::from(port)),
                with_verdict(syn(peer, port), Verdict::KnownPeer),
            );
        }
        let actions = drain(&mut e);
        assert_eq!(
            actions,
            vec![Action::PossiblyForged {
                probe: with_verdict(syn(peer, 1), Verdict::KnownPeer),
                suppressed: 0
            }]
        );
        assert_eq!(e.tracked_sources(), 0, "no state slot for a known peer");
        assert_eq!(e.stats().possibly_forged, 50);
        assert_eq!(e.stats().responses, 0);
        // Next damping period: one more line, carrying the count not logged.
        let next = Millis(1) + e.config().log_damping;
        e.handle_probe(next, with_verdict(syn(peer, 99), Verdict::KnownPeer));
        assert_eq!(
            drain(&mut e),
            vec![Action::PossiblyForged {
                probe: with_verdict(syn(peer, 99), Verdict::KnownPeer),
                suppressed: 49
            }]
        );
        // A UDP probe is a single packet too.
        e.handle_probe(
            next,
            with_verdict(probe(v4(8), 53, ProbeKind::Udp), Verdict::KnownPeer),
        );
        assert!(matches!(drain(&mut e)[..], [Action::PossiblyForged { .. }]));
    }

    /// A completed handshake is verified whoever it comes from: a known peer that
    /// connects to a trap port is acted on.
    #[test]
    fn issue7_verified_probe_from_a_known_peer_is_acted_on() {
        let mut e = engine(0);
        let p = with_verdict(probe(v4(7), 2323, ProbeKind::Connect), Verdict::KnownPeer);
        e.handle_probe(Millis(0), p);
        assert_eq!(
            drain(&mut e),
            vec![
                Action::Alert {
                    probe: p,
                    suppressed: 0
                },
                Action::Respond { probe: p }
            ]
        );
    }

    /// Probes the kernel dropped without banning (budget spent, set full) are safe to
    /// hand in: counted, no response, no state; set-full ones are alerted, damped.
    #[test]
    fn issue7_over_budget_and_set_full_probes_get_no_response() {
        let mut e = engine(0);
        for i in 0..1000u32 {
            let src = IpAddr::V4(Ipv4Addr::from(0xC612_0000 | i));
            let v = if i % 2 == 0 {
                Verdict::OverBudget
            } else {
                Verdict::SetFull
            };
            e.handle_probe(Millis(u64::from(i)), with_verdict(syn(src, 23), v));
        }
        // Set-full probes are alerted (detection goes on, one line per source per
        // damping period), over-budget ones are only counted; none gets a response.
        let actions = drain(&mut e);
        assert_eq!(actions.len(), 500, "{actions:?}");
        assert!(actions.iter().all(|a| matches!(
            a,
            Action::Alert { probe, .. } if probe.verdict == Verdict::SetFull
        )));
        let again = with_verdict(syn(v4(1), 24), Verdict::SetFull);
        e.handle_probe(Millis(1500), again);
        e.handle_probe(Millis(1600), again);
        assert!(
            drain(&mut e).len() <= 1,
            "set-full lines of one source are damped"
        );
        assert_eq!(e.tracked_sources(), 0);
        assert_eq!(e.stats().not_banned_by_kernel, 1002);
        assert_eq!(e.poll_timeout(), None);
        // The same source's later probe that the kernel did ban is handled as ever.
        let banned = with_verdict(syn(v4(0), 23), Verdict::KernelBanned);
        e.handle_probe(Millis(2000), banned);
        assert!(drain(&mut e).contains(&Action::Respond { probe: banned }));
    }
}
