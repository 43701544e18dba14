//! The reporter's parts of the control socket's JSON answers: pure functions from the
//! ban book (and what the daemon was started with) to the views of `control::views`.

use std::net::IpAddr;
use std::time::Duration;

use portsentry_engine::Evidence;
use portsentry_engine::bans::{Ban, BanBook};

use super::gauges::Gauges;
use crate::control::views::{
    BanRecordView, BansExplainView, EvidenceCounts, FastPathView, ModeView, QueuesView, StatusView,
};

/// What the daemon was started with: fixed for its lifetime (a reload re-executes).
#[derive(Debug, Clone, Default)]
pub struct About {
    pub modes: Vec<ModeView>,
    pub backend: String,
    pub table: Option<String>,
    pub fast_path: FastPathView,
    pub reporter_capacity: u64,
}

/// The status, without the engine's counters (the capture thread adds them).
pub fn status(
    about: &About,
    book: &BanBook,
    gauges: &Gauges,
    uptime: Duration,
    now: u64,
) -> StatusView {
    let mut by = EvidenceCounts::default();
    for ban in book.active(now) {
        match ban.evidence {
            Evidence::Unverified => by.unverified += 1,
            Evidence::Verified => by.verified += 1,
            Evidence::Manual => by.manual += 1,
        }
    }
    StatusView {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        uptime_seconds: uptime.as_secs(),
        modes: about.modes.clone(),
        backend: about.backend.clone(),
        table: about.table.clone(),
        fast_path: about.fast_path,
        bans_in_force: by.unverified + by.verified + by.manual,
        bans_by_evidence: by,
        book_records: book.len() as u64,
        book_capacity: book.capacity() as u64,
        queues: QueuesView {
            reporter_depth: gauges.to_reporter.depth(),
            reporter_capacity: about.reporter_capacity,
            feedback_depth: gauges.feedback.depth(),
            dropped_actions: gauges
                .dropped_actions
                .load(std::sync::atomic::Ordering::Relaxed),
        },
        engine: None,
        fleet: None,
    }
}

/// One book record as `explain` shows it.
pub fn record(ban: &Ban, book: &BanBook, now: u64) -> BanRecordView {
    let in_force = book.in_force(ban.key, now).is_some();
    BanRecordView {
        network: ban.key,
        in_force,
        offences: ban.offences,
        evidence: ban.evidence.as_str().to_string(),
        reason: ban.reason.clone(),
        banned_at: ban.banned_at,
        last_offence_at: ban.last_offence,
        permanent: ban.expires_at.is_none(),
        expires_at: ban.expires_at,
        expires_in_seconds: ban
            .expires_at
            .filter(|_| in_force)
            .map(|t| t.saturating_sub(now)),
    }
}

/// The book's records of networks that hold `ip`, most specific first.
pub fn bans_of(ip: IpAddr, book: &BanBook, now: u64) -> BansExplainView {
    let mut records: Vec<BanRecordView> = book
        .records()
        .filter(|b| b.key.contains(&ip))
        .map(|b| record(b, book, now))
        .collect();
    records.sort_by_key(|r| std::cmp::Reverse(r.network.prefix_len()));
    BansExplainView { records }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portsentry_engine::bans::BanPolicy;

    #[test]
    fn status_counts_bans_in_force_by_evidence_and_explain_finds_the_record() {
        let mut book = BanBook::new(16);
        let p = BanPolicy::default();
        let now = 1_000_000;
        let a: IpAddr = "198.18.0.2".parse().unwrap();
        let b: IpAddr = "198.18.0.3".parse().unwrap();
        book.offend(
            &p,
            a,
            now,
            Evidence::Unverified,
            "TCP SYN/Normal scan to TCP port 23",
        );
        book.offend(&p, b, now, Evidence::Verified, "TCP connect to TCP port 1");
        let about = About {
            backend: "nftables".into(),
            reporter_capacity: 4096,
            ..About::default()
        };
        let gauges = Gauges::default();
        gauges.to_reporter.sent();
        let s = status(&about, &book, &gauges, Duration::from_secs(61), now + 1);
        assert_eq!(s.bans_in_force, 2);
        assert_eq!(
            s.bans_by_evidence,
            EvidenceCounts {
                unverified: 1,
                verified: 1,
                manual: 0
            }
        );
        assert_eq!((s.uptime_seconds, s.queues.reporter_depth), (61, 1));
        assert_eq!((s.book_records, s.book_capacity), (2, 16));

        let e = bans_of(a, &book, now + 10);
        assert_eq!(e.records.len(), 1);
        let r = &e.records[0];
        assert_eq!(r.network, "198.18.0.2/32".parse::<ipnet::IpNet>().unwrap());
        assert!(r.in_force && !r.permanent);
        assert_eq!(r.evidence, "unverified");
        assert_eq!(r.offences, 1);
        assert_eq!(r.reason, "TCP SYN/Normal scan to TCP port 23");
        assert_eq!(r.expires_in_seconds, r.expires_at.map(|t| t - (now + 10)));
        assert!(
            bans_of("198.18.0.9".parse().unwrap(), &book, now)
                .records
                .is_empty()
        );
    }
}
