//! Depths of the queues between the daemon's threads, for `portsentry status --json`.
//! std's channels do not say how full they are, so each side counts: the sender what
//! it put in, the receiver what it took out; the depth is the difference. Relaxed
//! atomics: a reading is a snapshot that may be a message or two off, never blocks.

use std::sync::atomic::{AtomicU64, Ordering};

/// One queue's two counters.
#[derive(Debug, Default)]
pub struct Depth {
    sent: AtomicU64,
    taken: AtomicU64,
}

impl Depth {
    pub fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn taken(&self) {
        self.taken.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages waiting now.
    pub fn depth(&self) -> u64 {
        // Read `taken` first: a message taken between the two reads then counts as
        // still waiting, never as a negative depth.
        let taken = self.taken.load(Ordering::Relaxed);
        self.sent.load(Ordering::Relaxed).saturating_sub(taken)
    }
}

/// The gauges shared by the capture, reporter and control threads.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Capture and control → reporter (`ToReporter`).
    pub to_reporter: Depth,
    /// Reporter → capture (`Feedback`).
    pub feedback: Depth,
    /// Engine actions dropped because the reporter's queue was full.
    pub dropped_actions: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_is_sent_minus_taken() {
        let d = Depth::default();
        assert_eq!(d.depth(), 0);
        d.sent();
        d.sent();
        d.taken();
        assert_eq!(d.depth(), 1);
        d.taken();
        d.taken();
        assert_eq!(d.depth(), 0, "never negative");
    }
}
