//! The one place the daemon reads clocks. Everything below it (the engine, the ban
//! lifecycle) takes time as an argument, so it can be tested under a simulated clock.
//!
//! Two clocks, each for what it is good at:
//! - CLOCK_BOOTTIME ([`boottime_now`]): monotonic and counting suspend time, for
//!   decisions made while the daemon runs (engine deadlines, the save schedule);
//! - wall time ([`unix_now`]): Unix seconds, for ban ends that must survive a reboot
//!   (the state file) and for display.
//!
//! Log and record lines format local wall time themselves (`chrono::Local::now()` in
//! `logger.rs` and `records.rs`); that is display only and decides nothing.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use portsentry_engine::Millis;

/// Both clocks, read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// CLOCK_BOOTTIME, in milliseconds.
    pub mono: Millis,
    /// Seconds since the Unix epoch.
    pub unix: u64,
}

/// Both clocks now.
pub fn now() -> Now {
    Now {
        mono: boottime_now(),
        unix: unix_now(),
    }
}

/// Monotonic time that keeps counting through suspend (CLOCK_BOOTTIME).
pub fn boottime_now() -> Millis {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    Millis(secs * 1000 + nanos / 1_000_000)
}

/// Seconds since the Unix epoch, for ban expiry that must survive reboots.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch: the time part of Redis stream IDs (the fleet's
/// trimming and lag).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `std`'s monotonic clock, for the kernel helpers that take an [`Instant`] (the
/// socket table cache of `sock_diag`) and for short intervals of the capture loop.
pub fn instant() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_move_forward_and_unix_time_is_plausible() {
        let a = now();
        let b = now();
        assert!(b.mono >= a.mono);
        assert!(b.unix >= a.unix);
        // 2020-01-01: a clock before that is broken, not a test host.
        assert!(a.unix > 1_577_836_800, "{}", a.unix);
    }
}
