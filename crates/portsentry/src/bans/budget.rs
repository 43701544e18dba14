//! The user-space budget of new unverified bans: a token bucket (`per_second` tokens a
//! second, holding at most `burst`), pure, with time passed in. It limits the bans the
//! daemon decides itself (SCAN_TRIGGER > 0, the packet-socket path, `fast_path = false`)
//! the way the kernel's trap rule limits its first-probe bans: a flood of forged
//! sources fills the ban sets and the book at this rate at most, and what it does not
//! ban is counted for the summary line ([`super::BanLifecycle::take_over_budget`]).

use portsentry_engine::Millis;

/// A token bucket over a monotonic clock. `per_second == 0` means no limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanBudget {
    per_second: u32,
    /// Capacity in thousandths of a token (the refill runs in milliseconds).
    capacity_milli: u64,
    tokens_milli: u64,
    last: Option<Millis>,
}

impl BanBudget {
    /// `per_second` new bans a second, up to `burst` at once (a burst of 0 is taken as
    /// one second's worth). Starts full.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let burst = if burst == 0 { per_second.max(1) } else { burst };
        let capacity_milli = u64::from(burst) * 1000;
        BanBudget {
            per_second,
            capacity_milli,
            tokens_milli: capacity_milli,
            last: None,
        }
    }

    /// No limit.
    pub fn unlimited() -> Self {
        BanBudget::new(0, 0)
    }

    /// Take one ban from the budget at `now`; false when it is spent. A clock that
    /// steps back refills nothing (and never panics).
    pub fn take(&mut self, now: Millis) -> bool {
        if self.per_second == 0 {
            return true;
        }
        if let Some(last) = self.last {
            let elapsed = u64::try_from(now.since(last).as_millis()).unwrap_or(u64::MAX);
            let refill = elapsed.saturating_mul(u64::from(self.per_second));
            self.tokens_milli = self
                .tokens_milli
                .saturating_add(refill)
                .min(self.capacity_milli);
        }
        if self.last.is_none_or(|last| now >= last) {
            self.last = Some(now);
        }
        if self.tokens_milli >= 1000 {
            self.tokens_milli -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let mut b = BanBudget::new(10, 50);
        let t = Millis(1_000);
        assert_eq!((0..100).filter(|_| b.take(t)).count(), 50, "the burst");
        assert!(!b.take(t));
        // 100 ms later: one more token (10 a second).
        assert!(b.take(t + std::time::Duration::from_millis(100)));
        assert!(!b.take(t + std::time::Duration::from_millis(100)));
        // A minute idle refills to the burst, not beyond.
        let later = t + std::time::Duration::from_secs(60);
        assert_eq!((0..100).filter(|_| b.take(later)).count(), 50);
    }

    #[test]
    fn zero_is_unlimited_and_a_clock_stepping_back_refills_nothing() {
        let mut u = BanBudget::unlimited();
        assert!((0..100_000).all(|_| u.take(Millis(0))));
        let mut b = BanBudget::new(1, 1);
        assert!(b.take(Millis(10_000)));
        assert!(!b.take(Millis(5_000)));
        assert!(!b.take(Millis(10_500)));
        assert!(b.take(Millis(11_000)));
        // Burst 0 is one second's worth.
        let mut z = BanBudget::new(3, 0);
        assert_eq!((0..10).filter(|_| z.take(Millis(0))).count(), 3);
    }
}
