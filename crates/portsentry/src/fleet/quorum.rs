//! The fleet's decisions, pure (no clock: `now` is an argument): what a received
//! message does here. k-of-n counting of unverified reports, the per-origin rate
//! limit, the ban-time cap and expiry.

use std::collections::HashMap;
use std::time::Duration;

use ipnet::IpNet;

use super::message::{Kind, Message};

/// Most networks with reports pending; past it new ones are not counted (a forged
/// flood of reports cannot grow the table).
const MAX_PENDING: usize = 65_536;
/// Most origins with a rate bucket.
const MAX_ORIGINS: usize = 4096;
/// A rate-limited origin is logged at most once in this long.
const LIMIT_LOG_EVERY_MS: u64 = 60_000;

/// k-of-n: unverified reports of one network by distinct nodes within a window.
#[derive(Debug)]
pub struct Quorum {
    k: usize,
    window: u64,
    pending: HashMap<IpNet, Vec<(String, u64)>>,
}

impl Quorum {
    pub fn new(k: u32, window: Duration) -> Quorum {
        Quorum {
            k: k.max(1) as usize,
            window: window.as_secs(),
            pending: HashMap::new(),
        }
    }

    /// `node` reported `net` at `at` (the report's own time, Unix seconds; `now`: the
    /// reader's). Returns the distinct nodes when this report is the k-th within the
    /// window (once: the count starts over after it).
    pub fn report(&mut self, now: u64, at: u64, net: IpNet, node: &str) -> Option<Vec<String>> {
        let oldest = now.saturating_sub(self.window);
        if at < oldest {
            return None;
        }
        if !self.pending.contains_key(&net) && self.pending.len() >= MAX_PENDING {
            self.pending
                .retain(|_, v| v.iter().any(|(_, t)| *t >= oldest));
            if self.pending.len() >= MAX_PENDING {
                return None;
            }
        }
        let nodes = self.pending.entry(net).or_default();
        nodes.retain(|(n, t)| *t >= oldest && n != node);
        nodes.push((node.to_string(), at));
        if nodes.len() < self.k {
            return None;
        }
        let mut names: Vec<String> = self
            .pending
            .remove(&net)
            .unwrap_or_default()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        names.sort();
        Some(names)
    }
}

/// Token bucket per origin.
#[derive(Debug)]
pub struct RateLimit {
    rate: u32,
    burst: u32,
    buckets: HashMap<String, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens, in thousandths.
    milli: u64,
    at_ms: u64,
    logged_ms: Option<u64>,
}

/// What the rate limit says of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    Allowed,
    /// Over the limit; `log`: the first such message of this origin in a minute.
    Limited {
        log: bool,
    },
}

impl RateLimit {
    pub fn new(rate: u32, burst: u32) -> RateLimit {
        RateLimit {
            rate: rate.max(1),
            burst: burst.max(1),
            buckets: HashMap::new(),
        }
    }

    /// One message from `origin` at `now_ms` (a monotonic reading).
    pub fn check(&mut self, now_ms: u64, origin: &str) -> Rate {
        let full = u64::from(self.burst) * 1000;
        if !self.buckets.contains_key(origin) && self.buckets.len() >= MAX_ORIGINS {
            // Forget the origins whose buckets are full again: they are idle.
            let rate = u64::from(self.rate);
            self.buckets
                .retain(|_, b| b.milli + now_ms.saturating_sub(b.at_ms) * rate < full);
            if self.buckets.len() >= MAX_ORIGINS {
                return Rate::Limited { log: false };
            }
        }
        let b = self.buckets.entry(origin.to_string()).or_insert(Bucket {
            milli: full,
            at_ms: now_ms,
            logged_ms: None,
        });
        let refill = now_ms.saturating_sub(b.at_ms) * u64::from(self.rate);
        b.milli = (b.milli + refill).min(full);
        b.at_ms = now_ms;
        if b.milli >= 1000 {
            b.milli -= 1000;
            return Rate::Allowed;
        }
        let log = b
            .logged_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= LIMIT_LOG_EVERY_MS);
        if log {
            b.logged_ms = Some(now_ms);
        }
        Rate::Limited { log }
    }
}

/// What to do here with one verified (MAC-checked) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Our own message coming back: never applied (nor published again).
    Own,
    /// Its ban ended before we read it.
    Expired,
    /// Ban `net` for `duration` (`max_ban_time` at most; a permanent ban is capped too).
    Ban {
        net: IpNet,
        duration: Duration,
    },
    /// A report, counted; `Some` when it completed a quorum: ban with these nodes.
    Counted(Option<Vec<String>>),
    Unban(IpNet),
    /// Lift everything this node injected.
    Revoke(String),
}

/// The decision for `msg` read at `now` (Unix seconds) by node `me`.
pub fn judge(
    msg: &Message,
    now: u64,
    me: &str,
    max_ban_time: Duration,
    quorum: &mut Quorum,
) -> Verdict {
    let live = || msg.ends.is_none_or(|t| t > now);
    let duration = || {
        let left = msg
            .ends
            .map_or(max_ban_time, |t| Duration::from_secs(t.saturating_sub(now)));
        left.min(max_ban_time)
    };
    match msg.kind {
        // Our own reports count towards the quorum like anyone's.
        Kind::Report if !live() => Verdict::Expired,
        Kind::Report => Verdict::Counted(quorum.report(now, msg.sent, msg.net, &msg.origin)),
        _ if msg.origin == me => Verdict::Own,
        Kind::Ban if !live() => Verdict::Expired,
        Kind::Ban => Verdict::Ban {
            net: msg.net,
            duration: duration(),
        },
        Kind::Unban => Verdict::Unban(msg.net),
        Kind::Revoke => Verdict::Revoke(msg.subject.clone()),
    }
}

/// How long a quorum ban lasts: the shortest of the reports' remaining times would
/// need them all kept; the reporting node's own remaining time, capped, is used.
pub fn quorum_duration(msg: &Message, now: u64, max_ban_time: Duration) -> Duration {
    msg.ends
        .map_or(max_ban_time, |t| Duration::from_secs(t.saturating_sub(now)))
        .min(max_ban_time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use portsentry_engine::Evidence;

    fn net() -> IpNet {
        "198.18.0.7/32".parse().unwrap()
    }

    fn msg(kind: Kind, origin: &str, ends: Option<u64>) -> Message {
        Message {
            kind,
            origin: origin.into(),
            net: net(),
            evidence: Evidence::Verified,
            scan: "x".into(),
            ports: "23".into(),
            sent: 1000,
            ends,
            offences: 1,
            subject: String::new(),
        }
    }

    #[test]
    fn k_distinct_nodes_within_the_window() {
        let mut q = Quorum::new(3, Duration::from_secs(600));
        assert_eq!(q.report(1000, 1000, net(), "a"), None);
        // The same node again does not count twice (forged evidence on one node).
        assert_eq!(q.report(1001, 1001, net(), "a"), None);
        assert_eq!(q.report(1002, 1002, net(), "b"), None);
        assert_eq!(
            q.report(1003, 1003, net(), "c"),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        // Counted once: a fourth report starts over.
        assert_eq!(q.report(1004, 1004, net(), "d"), None);
        // Reports older than the window do not count.
        let mut q = Quorum::new(2, Duration::from_secs(10));
        assert_eq!(q.report(1000, 1000, net(), "a"), None);
        assert_eq!(q.report(1020, 1020, net(), "b"), None);
        assert_eq!(
            q.report(1021, 1021, net(), "c"),
            Some(vec!["b".into(), "c".into()])
        );
        // A report read long after it was made (catching up) is too old.
        assert_eq!(q.report(5000, 1000, net(), "a"), None);
    }

    #[test]
    fn the_rate_limit_lets_a_burst_through_then_the_rate_and_logs_once_a_minute() {
        let mut r = RateLimit::new(10, 100);
        let mut allowed = 0;
        let mut logs = 0;
        for _ in 0..10_000 {
            match r.check(0, "a") {
                Rate::Allowed => allowed += 1,
                Rate::Limited { log } => logs += usize::from(log),
            }
        }
        assert_eq!((allowed, logs), (100, 1));
        // Another origin has its own bucket.
        assert_eq!(r.check(0, "b"), Rate::Allowed);
        // One second later: ten more.
        let later: usize = (0..50)
            .filter(|_| r.check(1000, "a") == Rate::Allowed)
            .count();
        assert_eq!(later, 10);
        assert_eq!(r.check(1000, "a"), Rate::Limited { log: false });
        assert_eq!(r.check(61_000, "a"), Rate::Allowed);
    }

    #[test]
    fn judge_caps_skips_own_and_expired() {
        let mut q = Quorum::new(2, Duration::from_secs(600));
        let max = Duration::from_secs(3600);
        assert_eq!(
            judge(&msg(Kind::Ban, "me", Some(2000)), 1000, "me", max, &mut q),
            Verdict::Own
        );
        assert_eq!(
            judge(&msg(Kind::Ban, "a", Some(900)), 1000, "me", max, &mut q),
            Verdict::Expired
        );
        assert_eq!(
            judge(&msg(Kind::Ban, "a", Some(1600)), 1000, "me", max, &mut q),
            Verdict::Ban {
                net: net(),
                duration: Duration::from_secs(600)
            }
        );
        assert_eq!(
            judge(&msg(Kind::Ban, "a", None), 1000, "me", max, &mut q),
            Verdict::Ban {
                net: net(),
                duration: max
            }
        );
        assert_eq!(
            judge(
                &msg(Kind::Ban, "a", Some(1_000_000)),
                1000,
                "me",
                max,
                &mut q
            ),
            Verdict::Ban {
                net: net(),
                duration: max
            }
        );
        // Own reports count.
        assert_eq!(
            judge(
                &msg(Kind::Report, "me", Some(2000)),
                1000,
                "me",
                max,
                &mut q
            ),
            Verdict::Counted(None)
        );
        assert_eq!(
            judge(&msg(Kind::Report, "a", Some(2000)), 1000, "me", max, &mut q),
            Verdict::Counted(Some(vec!["a".into(), "me".into()]))
        );
    }
}
