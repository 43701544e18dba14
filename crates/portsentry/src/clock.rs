//! The one place that reads clocks. Everything below the daemon's loops (the engine,
//! the ban lifecycle) takes `now` as an argument.
//!
//! - [`boottime_now`]: monotonic time that keeps counting through suspend
//!   (CLOCK_BOOTTIME), for the engine's decisions;
//! - [`unix_now`]: seconds since the Unix epoch, for ban expiry that must survive
//!   reboots and for files.

use std::time::{SystemTime, UNIX_EPOCH};

use portsentry_engine::Millis;

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
