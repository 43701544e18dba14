//! Probes the kernel dropped without banning anyone, and the few lines said about them.
//! Pure: time comes in as `now`; the capture loop feeds it and logs what it returns.
//!
//! Two kinds arrive (the probe's [`Verdict`], from the trap rule's NFLOG prefix; a
//! known peer's probe goes to the engine, which logs it as possibly forged):
//! - a probe past the kernel's ban budget (likely a forged flood): no line each; one
//!   summary per interval with how many and from how many sources;
//! - a probe whose ban a full ban set refused: one line when the set is found full,
//!   and again only after it was quiet for an interval (no longer full) and fills again.
//!
//! None of them reaches the engine, so none can turn into a user-space ban either.
//! Invariants: the set of sources holds at most `capacity` addresses, whatever
//! a flood of forged sources sends; every decision is a function of the inputs.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use portsentry_engine::{Millis, Probe, Verdict};

/// What to say now about one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The ban set of this family is full (`true`: IPv4).
    SetFull { v4: bool },
}

/// Probes past the budget since the last summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    /// Samples the kernel sent (it sends at most a few a second; its counter has all).
    pub samples: u64,
    /// Distinct sources among the samples (at most `capacity`).
    pub sources: usize,
}

#[derive(Debug)]
pub struct Unbanned {
    interval: Duration,
    capacity: usize,
    over_samples: u64,
    over_sources: HashSet<IpAddr>,
    /// When the current summary period began (the first sample after a quiet one).
    over_since: Option<Millis>,
    /// Per family (v4, v6): the last full-set sample, while the set counts as full.
    full_seen: [Option<Millis>; 2],
}

impl Unbanned {
    pub fn new(interval: Duration, capacity: usize) -> Self {
        Unbanned {
            interval,
            capacity,
            over_samples: 0,
            over_sources: HashSet::new(),
            over_since: None,
            full_seen: [None, None],
        }
    }

    /// Whether `probe` is one of ours: a probe the kernel dropped without a ban.
    pub fn takes(probe: &Probe) -> bool {
        matches!(probe.verdict, Verdict::OverBudget | Verdict::SetFull)
    }

    /// Takes such a probe; returns what to log now, if anything.
    pub fn record(&mut self, now: Millis, probe: &Probe) -> Option<Notice> {
        match probe.verdict {
            Verdict::OverBudget => {
                self.over_since.get_or_insert(now);
                self.over_samples += 1;
                if self.over_sources.len() < self.capacity {
                    self.over_sources.insert(probe.src);
                }
                None
            }
            Verdict::SetFull => {
                let v4 = probe.src.is_ipv4();
                let slot = &mut self.full_seen[usize::from(!v4)];
                // Quiet for an interval: it had room again, so this is a new filling.
                let new = slot.is_none_or(|last| now.since(last) >= self.interval);
                *slot = Some(now);
                new.then_some(Notice::SetFull { v4 })
            }
            Verdict::Observed | Verdict::KernelBanned | Verdict::KnownPeer => None,
        }
    }

    /// When [`take_summary`](Self::take_summary) next has something to give.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.over_since.map(|since| since + self.interval)
    }

    /// The probes past the budget of the period that began an interval ago, if any.
    pub fn take_summary(&mut self, now: Millis) -> Option<OverBudget> {
        let since = self.over_since?;
        if now.since(since) < self.interval {
            return None;
        }
        let summary = OverBudget {
            samples: self.over_samples,
            sources: self.over_sources.len(),
        };
        self.over_since = None;
        self.over_samples = 0;
        self.over_sources.clear();
        Some(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portsentry_engine::ProbeKind;

    const MIN: Duration = Duration::from_secs(60);

    fn probe(src: &str, verdict: Verdict) -> Probe {
        Probe {
            src: src.parse().unwrap(),
            dst: "198.18.0.1".parse().unwrap(),
            sport: 40000,
            dport: 23,
            kind: ProbeKind::Syn,
            ip_options: false,
            ttl: 64,
            verdict,
        }
    }

    fn at(secs: u64) -> Millis {
        Millis(1_000_000 + secs * 1000)
    }

    #[test]
    fn known_peers_are_not_ours() {
        // They go to the engine, which says "possibly forged".
        assert!(!Unbanned::takes(&probe("198.18.0.2", Verdict::KnownPeer)));
        assert!(Unbanned::takes(&probe("198.18.0.2", Verdict::OverBudget)));
        assert!(!Unbanned::takes(&probe("198.18.0.2", Verdict::Observed)));
    }

    #[test]
    fn over_budget_is_one_summary_an_interval() {
        let mut u = Unbanned::new(MIN, 3);
        assert_eq!(u.poll_timeout(), None);
        assert_eq!(u.take_summary(at(100)), None);
        for i in 0..10u64 {
            let p = probe(&format!("198.18.1.{}", i % 5), Verdict::OverBudget);
            assert_eq!(u.record(at(i), &p), None);
        }
        assert_eq!(u.poll_timeout(), Some(at(60)));
        assert_eq!(u.take_summary(at(59)), None);
        assert_eq!(
            u.take_summary(at(60)),
            Some(OverBudget {
                samples: 10,
                sources: 3
            })
        );
        assert_eq!(u.take_summary(at(200)), None);
        assert_eq!(u.poll_timeout(), None);
    }

    #[test]
    fn a_full_set_is_said_once_until_it_had_room_again() {
        let mut u = Unbanned::new(MIN, 3);
        let p4 = probe("198.18.1.1", Verdict::SetFull);
        let p6 = probe("fd00:5e17::9", Verdict::SetFull);
        assert_eq!(u.record(at(0), &p4), Some(Notice::SetFull { v4: true }));
        for s in 1..100 {
            assert_eq!(u.record(at(s), &p4), None);
        }
        assert_eq!(u.record(at(5), &p6), Some(Notice::SetFull { v4: false }));
        // Quiet for a minute (room again), then full again: said again.
        assert_eq!(u.record(at(160), &p4), Some(Notice::SetFull { v4: true }));
    }
}
