//! Memory of a full ban book: offences from 1,000,000 distinct addresses into a book of
//! 65,536 records, draining ended bans as the daemon does; prints the process's resident memory before and after. A benchmark:
//! `cargo run --release -p portsentry-engine --example book_memory`.

use std::net::{IpAddr, Ipv4Addr};

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use portsentry_engine::bans::{BanBook, BanPolicy};

/// Counts live heap bytes, so the figure is the book's real size, not the allocator's
/// resident memory (which keeps freed pages).
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let before = rss_kib();
    let live_before = LIVE.load(Ordering::Relaxed);
    let policy = BanPolicy::default();
    let mut book = BanBook::new(65_536);
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    for i in 0..n {
        let ip = IpAddr::V4(Ipv4Addr::from(0xC612_0000u32.wrapping_add(i)));
        // The daemon's reporter drains ended (and evicted) bans at least every 500 ms.
        if i % 10_000 == 0 {
            book.take_expired(1_800_000_000 + u64::from(i / 1000));
        }
        book.offend(
            &policy,
            ip,
            1_800_000_000 + u64::from(i / 1000),
            portsentry_engine::Evidence::Unverified,
            "TCP SYN/Normal scan to TCP port 23",
        );
    }
    let after = rss_kib();
    let live = LIVE.load(Ordering::Relaxed) - live_before;
    println!(
        "{n} offences, {} records: live heap {} KiB ({} bytes per record); resident memory {} KiB -> {} KiB",
        book.len(),
        live / 1024,
        live / book.len().max(1),
        before,
        after,
    );
}
