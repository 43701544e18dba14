//! The process's signals: SIGTERM/SIGINT stop, SIGHUP reloads, SIGUSR1 reopens the
//! record files (logrotate's `postrotate`). A handler only sets a flag; the capture
//! loop reads the flags, and files are touched only by the reporter thread.
//!
//! Invariant: from the first handler installed to the last exec of a reload, none of
//! these signals can meet its default action (terminate). A reload re-executes the
//! binary, and `execve` resets handled signals to their default; so [`block_for_exec`]
//! blocks them just before the exec, the new image installs its handlers
//! ([`install`]) and only then unblocks them. We block rather than ignore: the signal
//! mask and pending signals survive `execve`, so a SIGHUP sent during the window stays
//! pending and is delivered once the handler exists, while an ignored one would be lost
//! (and a TERM sent during a reload must still stop the daemon).
//!
//! Two more holes of the same window are closed: the threads the daemon spawns start
//! with these signals blocked ([`mask_for_spawning`]), so once the main thread has
//! blocked them for the exec no other thread can take one and lose it with the old
//! image (programs we run get an empty mask again: `kernel::process`); and a SIGTERM
//! taken after the capture loop ended is sent again, blocked, by [`exec_hook`], so the
//! new image stops as soon as it has started.
//!
//! Reloads coalesce twice: the kernel keeps at most one pending SIGHUP, and the capture
//! loop waits for [`RELOAD_SETTLE`] without a new SIGHUP before reloading ([`Settle`]),
//! so a burst gives one reload. SIGHUPs delivered before the new image reads its
//! configuration are covered by that reading, so [`install`] forgets them.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use libc::c_int;

/// Every signal we handle; blocked across the re-exec of a reload.
pub const HANDLED: [c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1];

/// Quiet time after the last SIGHUP before the reload: a burst (a script, a loop of
/// `systemctl reload`) gives one reload, and an admin waits a quarter of a second.
pub const RELOAD_SETTLE: Duration = Duration::from_millis(250);
/// Longest delay of a reload under a SIGHUP stream that never pauses: the reload is
/// postponed by at most this much, never forever.
pub const RELOAD_SETTLE_MAX: Duration = Duration::from_secs(2);

/// What the handlers set.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// SIGTERM, SIGINT.
    pub shutdown: Arc<AtomicBool>,
    /// SIGHUP.
    pub reload: Arc<AtomicBool>,
    /// SIGUSR1.
    pub reopen: Arc<AtomicBool>,
}

/// Install the handlers, then unblock the signals (a reload's [`block_for_exec`] left
/// them blocked; pending ones are delivered now, to the handlers). Call before reading
/// the configuration and opening the record files: a SIGHUP or SIGUSR1 that arrived
/// before this point is answered by that reading, so it is forgotten here. A SIGTERM
/// is kept: the daemon starts and then stops cleanly.
pub fn install() -> io::Result<Flags> {
    let flags = Flags::default();
    let pairs = [
        (libc::SIGTERM, &flags.shutdown),
        (libc::SIGINT, &flags.shutdown),
        (libc::SIGHUP, &flags.reload),
        (libc::SIGUSR1, &flags.reopen),
    ];
    for (signal, flag) in pairs {
        signal_hook::flag::register(signal, Arc::clone(flag))?;
    }
    unblock()?;
    flags.reload.store(false, Ordering::SeqCst);
    flags.reopen.store(false, Ordering::SeqCst);
    Ok(flags)
}

/// Block every handled signal in the calling thread, for the exec of a reload: the
/// mask survives `execve`, and [`install`] in the new image unblocks them.
/// Async-signal-safe (only `sigemptyset`, `sigaddset`, `pthread_sigmask`).
pub fn block_for_exec() -> io::Result<()> {
    set_mask(libc::SIG_BLOCK)
}

/// The hook run just before the exec of a reload: block the handled signals and, if a
/// stop was asked for after the capture loop ended (its flag dies with this image),
/// send SIGTERM again: blocked, it stays pending across the exec and the new image
/// stops cleanly as soon as it has started. Async-signal-safe.
pub fn exec_hook(shutdown: Arc<AtomicBool>) -> impl FnMut() -> io::Result<()> + Send + Sync {
    move || {
        block_for_exec()?;
        if shutdown.load(Ordering::SeqCst) {
            // SAFETY: kill(2) on our own pid; every thread blocks SIGTERM now (the
            // others since they were spawned, see `MaskForSpawning`).
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        }
        Ok(())
    }
}

/// While alive, the calling thread blocks the handled signals, so that threads spawned
/// meanwhile (reporter, control, name lookups) start with them blocked: a signal is
/// then always taken by the main thread, and one sent after [`exec_hook`] blocked them
/// there stays pending across the exec instead of running a handler elsewhere whose
/// flag the exec would lose.
#[must_use]
pub struct MaskForSpawning(());

pub fn mask_for_spawning() -> io::Result<MaskForSpawning> {
    block_for_exec()?;
    Ok(MaskForSpawning(()))
}

impl Drop for MaskForSpawning {
    fn drop(&mut self) {
        let _ = unblock();
    }
}

/// Unblock them again (the exec of a reload failed and this image goes on to exit).
pub fn unblock() -> io::Result<()> {
    set_mask(libc::SIG_UNBLOCK)
}

fn set_mask(how: c_int) -> io::Result<()> {
    // SAFETY: a zeroed sigset_t is valid storage for sigemptyset, which initialises it;
    // the pointers are to locals that outlive the calls.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in HANDLED {
            libc::sigaddset(&mut set, signal);
        }
        match libc::pthread_sigmask(how, &set, std::ptr::null_mut()) {
            0 => Ok(()),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// When a requested reload is due: [`RELOAD_SETTLE`] after the last request, at most
/// [`RELOAD_SETTLE_MAX`] after the first. Pure: the caller passes the time.
#[derive(Debug, Default, Clone, Copy)]
pub struct Settle {
    /// First and last request of the burst not yet acted on.
    pending: Option<(Instant, Instant)>,
}

impl Settle {
    /// A SIGHUP was seen at `now`.
    pub fn request(&mut self, now: Instant) {
        self.pending = Some(match self.pending {
            Some((first, _)) => (first, now),
            None => (now, now),
        });
    }

    /// True (once per burst) when the reload should run now.
    pub fn take_due(&mut self, now: Instant) -> bool {
        if self.until_due(now) == Some(Duration::ZERO) {
            self.pending = None;
            return true;
        }
        false
    }

    /// How long until the reload is due (None when none is requested), to bound the
    /// loop's sleep.
    pub fn until_due(&self, now: Instant) -> Option<Duration> {
        let (first, last) = self.pending?;
        let due = (last + RELOAD_SETTLE).min(first + RELOAD_SETTLE_MAX);
        Some(due.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn nothing_requested_is_never_due() {
        let mut s = Settle::default();
        let t = Instant::now();
        assert_eq!(s.until_due(t), None);
        assert!(!s.take_due(t + RELOAD_SETTLE_MAX));
    }

    #[test]
    fn issue_8_a_burst_of_100_hups_1ms_apart_is_one_reload() {
        let mut s = Settle::default();
        let t0 = Instant::now();
        let mut reloads = 0;
        // The loop checks after every signal and then every 10 ms for a second.
        for i in 0..100 {
            s.request(t0 + i * MS);
            reloads += usize::from(s.take_due(t0 + i * MS));
        }
        for i in 0..100 {
            reloads += usize::from(s.take_due(t0 + 100 * MS + i * 10 * MS));
        }
        assert_eq!(reloads, 1);
        assert_eq!(s.until_due(t0 + 2 * RELOAD_SETTLE_MAX), None);
    }

    #[test]
    fn the_reload_comes_after_the_quiet_time() {
        let mut s = Settle::default();
        let t0 = Instant::now();
        s.request(t0);
        s.request(t0 + 100 * MS);
        assert_eq!(s.until_due(t0 + 100 * MS), Some(RELOAD_SETTLE));
        assert!(!s.take_due(t0 + 100 * MS + RELOAD_SETTLE - MS));
        assert!(s.take_due(t0 + 100 * MS + RELOAD_SETTLE));
        assert!(!s.take_due(t0 + 100 * MS + RELOAD_SETTLE));
    }

    #[test]
    fn a_stream_that_never_pauses_still_reloads_after_the_maximum() {
        let mut s = Settle::default();
        let t0 = Instant::now();
        let mut at = None;
        for i in 0..3000u32 {
            let now = t0 + i * MS;
            s.request(now);
            if s.take_due(now) {
                at = Some(now - t0);
                break;
            }
        }
        assert_eq!(at, Some(RELOAD_SETTLE_MAX));
    }

    #[test]
    fn two_hups_apart_are_two_reloads() {
        let mut s = Settle::default();
        let t0 = Instant::now();
        s.request(t0);
        assert!(s.take_due(t0 + RELOAD_SETTLE));
        let t1 = t0 + 10 * RELOAD_SETTLE;
        s.request(t1);
        assert!(s.take_due(t1 + RELOAD_SETTLE));
    }
}
