//! The ban lifecycle under a simulated clock (plain numbers) with an in-memory backend
//! whose abilities (networks, expiry by itself, known remaining time) and failures are
//! switched per test. Runs as a normal user: no kernel, no file, no clock.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ipnet::IpNet;
use portsentry_engine::bans::{Ban, BanBook, BanPolicies, BanPolicy};
use portsentry_engine::ignore::IgnoreSet;
use portsentry_engine::{Evidence, Millis};
use portsentry_kernel::backend::{BackendError, BanBackend, Expiry, Held, host_of};

use super::guard::Refusal;
use super::{Admission, BanBudget, BanError, BanLifecycle, LARGE_BOOK, Restored};

/// What the fake kernel holds and how it behaves.
#[derive(Debug, Default)]
struct FakeKernel {
    elements: BTreeMap<IpNet, Expiry>,
    holds_networks: bool,
    expires_by_itself: bool,
    fail_add: bool,
    fail_remove: bool,
    max_timeout: Option<Duration>,
    /// Like a set's `size`: past it an add of a new element is ENFILE.
    capacity: Option<usize>,
    /// Every call of `add` (successful or not).
    add_calls: usize,
    adds: Vec<(IpNet, Option<Duration>)>,
    removes: Vec<IpNet>,
}

/// A handle on a shared [`FakeKernel`]: one goes into the lifecycle, the test keeps one.
#[derive(Debug, Clone, Default)]
struct Fake(Arc<Mutex<FakeKernel>>);

impl Fake {
    /// Like nftables: networks, expiry by itself, time known.
    fn nftables_like() -> Self {
        let f = Fake::default();
        f.k().holds_networks = true;
        f.k().expires_by_itself = true;
        f
    }

    /// Like ipset: hosts only, expiry by itself, time known.
    fn ipset_like() -> Self {
        let f = Fake::default();
        f.k().expires_by_itself = true;
        f
    }

    /// Like iptables or routes: hosts only, no timeouts.
    fn route_like() -> Self {
        Fake::default()
    }

    fn k(&self) -> MutexGuard<'_, FakeKernel> {
        self.0.lock().unwrap()
    }

    fn boxed(&self) -> Option<Box<dyn BanBackend>> {
        Some(Box::new(self.clone()))
    }

    fn holds(&self, key: &str) -> Option<Expiry> {
        self.k().elements.get(&net(key)).copied()
    }

    fn take_adds(&self) -> Vec<(IpNet, Option<Duration>)> {
        std::mem::take(&mut self.k().adds)
    }
}

impl BanBackend for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn prepare(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    fn holds_networks(&self) -> bool {
        self.k().holds_networks
    }

    fn add(&mut self, key: IpNet, timeout: Option<Duration>) -> Result<(), BackendError> {
        let mut k = self.k();
        k.add_calls += 1;
        if k.fail_add {
            return Err(BackendError::InvalidAddress(key.addr()));
        }
        if k.capacity.is_some_and(|c| k.elements.len() >= c) && !k.elements.contains_key(&key) {
            return Err(BackendError::AddElement {
                addr: key.addr(),
                source: std::io::Error::from_raw_os_error(libc::ENFILE),
            });
        }
        if !k.holds_networks && host_of(key).is_none() {
            return Err(BackendError::NetworkUnsupported(key));
        }
        let expiry = match (k.expires_by_itself, timeout) {
            (false, _) => Expiry::Unknown,
            (true, None) => Expiry::Permanent,
            (true, Some(t)) => Expiry::In {
                left: t,
                timeout: Some(t),
            },
        };
        k.elements.insert(key, expiry);
        k.adds.push((key, timeout));
        Ok(())
    }

    fn remove(&mut self, key: IpNet) -> Result<bool, BackendError> {
        let mut k = self.k();
        if k.fail_remove {
            return Err(BackendError::InvalidAddress(key.addr()));
        }
        k.removes.push(key);
        Ok(k.elements.remove(&key).is_some())
    }

    fn list(&mut self) -> Result<Vec<Held>, BackendError> {
        Ok(self
            .k()
            .elements
            .iter()
            .map(|(&key, &expiry)| Held { key, expiry })
            .collect())
    }

    fn expires_by_itself(&self) -> bool {
        self.k().expires_by_itself
    }

    fn max_timeout(&self) -> Option<Duration> {
        self.k().max_timeout
    }

    fn teardown(&mut self) -> Result<(), BackendError> {
        self.k().elements.clear();
        Ok(())
    }
}

const HOUR: u64 = 3600;
const T0: u64 = 1_800_000_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    match s.parse() {
        Ok(n) => n,
        Err(_) => IpNet::from(ip(s)),
    }
}

fn secs(s: u64) -> Option<Duration> {
    Some(Duration::from_secs(s))
}

fn policy() -> BanPolicy {
    BanPolicy {
        ban_time: Duration::from_secs(HOUR),
        escalation_factor: 2,
        max_ban_time: Duration::from_secs(7 * 24 * HOUR),
        permanent_after: Some(3),
        ..BanPolicy::default()
    }
}

fn grouped() -> BanPolicy {
    BanPolicy {
        group_v4: 24,
        group_v6: 64,
        ..policy()
    }
}

/// The same policy for every class: the tests written before evidence classes.
fn same(policy: BanPolicy) -> BanPolicies {
    BanPolicies {
        unverified: policy.clone(),
        verified: policy.clone(),
        manual: policy,
    }
}

fn start_with(fake: &Fake, book: BanBook, policy: BanPolicy, now: u64) -> (BanLifecycle, Restored) {
    BanLifecycle::start(book, 0, same(policy), fake.boxed(), IgnoreSet::new(), now).unwrap()
}

fn start(fake: &Fake, policy: BanPolicy) -> BanLifecycle {
    start_with(fake, BanBook::new(1000), policy, T0).0
}

fn saved_ban(key: &str, offences: u32, banned_at: u64, expires_at: Option<u64>) -> Ban {
    Ban {
        key: net(key),
        offences,
        banned_at,
        expires_at,
        last_offence: banned_at,
        reason: "saved".into(),
        evidence: Evidence::Unverified,
    }
}

fn record(bans: &BanLifecycle, key: &str) -> Ban {
    bans.book()
        .records()
        .find(|b| b.key == net(key))
        .cloned()
        .unwrap_or_else(|| panic!("no record for {key}"))
}

#[test]
fn first_ban_writes_the_first_offence_length() {
    let fake = Fake::nftables_like();
    let mut bans = start(&fake, policy());
    assert!(bans.is_native());
    let b = bans
        .ban(T0, ip("198.18.0.2"), Evidence::Verified, false, "SYN scan")
        .unwrap();
    assert_eq!((b.ban.offences, b.timeout), (1, secs(HOUR)));
    assert_eq!(b.ban.key, net("198.18.0.2/32"));
    assert_eq!(b.ban.expires_at, Some(T0 + HOUR));
    assert_eq!(b.place, "fake");
    assert!(b.written);
    assert_eq!(fake.take_adds(), vec![(net("198.18.0.2/32"), secs(HOUR))]);
    assert_eq!(bans.active_count(T0), 1);
    assert_eq!(bans.active_count(T0 + HOUR), 0);
}

#[test]
fn repeat_offences_escalate_then_become_permanent() {
    let fake = Fake::nftables_like();
    let mut bans = start(&fake, policy());
    let src = ip("198.18.0.2");
    bans.ban(T0, src, Evidence::Verified, false, "1").unwrap();
    // Again after the first ban ended: the second offence lasts twice as long.
    let t1 = T0 + HOUR + 10;
    let b = bans.ban(t1, src, Evidence::Verified, false, "2").unwrap();
    assert_eq!((b.ban.offences, b.timeout), (2, secs(2 * HOUR)));
    // The third offence (permanent_after = 3) is permanent, in the book and the kernel.
    let t2 = t1 + 2 * HOUR + 10;
    let b = bans.ban(t2, src, Evidence::Verified, false, "3").unwrap();
    assert_eq!(
        (b.ban.offences, b.timeout, b.ban.expires_at),
        (3, None, None)
    );
    assert_eq!(fake.holds("198.18.0.2"), Some(Expiry::Permanent));
    assert_eq!(bans.active_count(t2 + 365 * 24 * HOUR), 1);
}

#[test]
fn grouping_bans_the_v4_24_and_the_v6_64_on_a_network_backend() {
    let fake = Fake::nftables_like();
    let mut bans = start(&fake, grouped());
    let b4 = bans
        .ban(T0, ip("198.18.0.7"), Evidence::Verified, false, "scan")
        .unwrap();
    let b6 = bans
        .ban(T0, ip("fd00:5e17::7"), Evidence::Verified, false, "scan")
        .unwrap();
    assert_eq!(b4.ban.key, net("198.18.0.0/24"));
    assert_eq!(b6.ban.key, net("fd00:5e17::/64"));
    assert_eq!(
        fake.take_adds(),
        vec![
            (net("198.18.0.0/24"), secs(HOUR)),
            (net("fd00:5e17::/64"), secs(HOUR))
        ]
    );
    // A neighbour is covered: its offence is the network's second.
    let b = bans
        .ban(T0 + 5, ip("198.18.0.8"), Evidence::Verified, false, "scan")
        .unwrap();
    assert_eq!((b.ban.key, b.ban.offences), (net("198.18.0.0/24"), 2));
}

#[test]
fn grouping_falls_back_to_the_address_on_a_host_only_backend_and_lifts_it_at_expiry() {
    let fake = Fake::route_like();
    let mut bans = start(&fake, grouped());
    let b = bans
        .ban(T0, ip("198.18.0.7"), Evidence::Verified, false, "scan")
        .unwrap();
    assert_eq!(
        b.ban.key,
        net("198.18.0.0/24"),
        "the book keeps the network"
    );
    assert_eq!(fake.take_adds(), vec![(net("198.18.0.7/32"), secs(HOUR))]);
    // A foreign element outside the network stays; the address goes at expiry.
    fake.k()
        .elements
        .insert(net("198.18.1.1/32"), Expiry::Unknown);
    assert!(bans.take_expired(T0 + HOUR - 1).is_empty());
    let ended = bans.take_expired(T0 + HOUR);
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].1, None);
    assert_eq!(fake.holds("198.18.0.7"), None);
    assert_eq!(fake.holds("198.18.1.1"), Some(Expiry::Unknown));
}

#[test]
fn start_puts_back_live_bans_with_their_remaining_time_and_never_expired_ones() {
    let fake = Fake::nftables_like();
    fake.k().elements.insert(
        net("198.18.0.3/32"),
        Expiry::In {
            left: Duration::from_secs(50),
            timeout: secs(HOUR),
        },
    );
    let mut book = BanBook::new(1000);
    book.set_settled_through(T0 - 2 * HOUR);
    book.restore(saved_ban("198.18.0.2/32", 1, T0 - 100, Some(T0 + 500)));
    book.restore(saved_ban("198.18.0.3/32", 1, T0 - HOUR + 50, Some(T0 + 50)));
    book.restore(saved_ban("198.18.1.0/24", 2, T0 - 10, None));
    // Ended while the daemon was down, and long-settled history.
    book.restore(saved_ban("198.18.0.4/32", 1, T0 - HOUR - 9, Some(T0 - 9)));
    book.restore(saved_ban(
        "198.18.0.5/32",
        1,
        T0 - 5 * HOUR,
        Some(T0 - 4 * HOUR),
    ));
    let (mut bans, restored) = start_with(&fake, book, policy(), T0);
    assert_eq!(
        restored,
        Restored {
            put_back: 2,
            already_in_kernel: 1,
            ..Restored::default()
        }
    );
    let mut adds = fake.take_adds();
    adds.sort();
    assert_eq!(
        adds,
        vec![
            (net("198.18.0.2/32"), secs(500)),
            (net("198.18.1.0/24"), None)
        ]
    );
    assert_eq!(fake.holds("198.18.0.4"), None);
    // The ban that ended while down is handed out once; nftables expires by itself.
    let ended = bans.take_expired(T0);
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].0.key, net("198.18.0.4/32"));
    assert!(fake.k().removes.is_empty());
}

#[test]
fn start_adopts_kernel_only_elements_with_their_real_remaining_time() {
    let fake = Fake::nftables_like();
    {
        let mut k = fake.k();
        k.elements.insert(
            net("198.18.0.2/32"),
            Expiry::In {
                left: Duration::from_secs(100),
                timeout: secs(HOUR),
            },
        );
        // ipset knows only the time left.
        k.elements.insert(
            net("198.18.0.3/32"),
            Expiry::In {
                left: Duration::from_secs(200),
                timeout: None,
            },
        );
        k.elements.insert(net("198.18.2.0/24"), Expiry::Permanent);
    }
    let (bans, restored) = start_with(&fake, BanBook::new(1000), policy(), T0);
    assert_eq!(restored.adopted_from_kernel, 3);
    assert_eq!(restored.put_back, 0);
    let a = record(&bans, "198.18.0.2/32");
    assert_eq!(
        (a.banned_at, a.expires_at, a.offences),
        (T0 - (HOUR - 100), Some(T0 + 100), 1)
    );
    let b = record(&bans, "198.18.0.3/32");
    assert_eq!((b.banned_at, b.expires_at), (T0, Some(T0 + 200)));
    assert_eq!(record(&bans, "198.18.2.0/24").expires_at, None);
    assert!(
        fake.take_adds().is_empty(),
        "adopted elements are not rewritten"
    );
}

#[test]
fn start_adopts_elements_of_unknown_time_as_first_offences() {
    let fake = Fake::route_like();
    fake.k()
        .elements
        .insert(net("198.18.0.2/32"), Expiry::Unknown);
    let (mut bans, restored) = start_with(&fake, BanBook::new(1000), policy(), T0);
    assert_eq!(restored.adopted_from_kernel, 1);
    assert_eq!(record(&bans, "198.18.0.2/32").expires_at, Some(T0 + HOUR));
    // The daemon ends it, since routes do not expire.
    assert_eq!(bans.take_expired(T0 + HOUR).len(), 1);
    assert_eq!(fake.holds("198.18.0.2"), None);
}

#[test]
fn restart_never_re_adds_an_expired_ban_and_removes_its_leftover() {
    // A route left behind by a killed daemon, whose ban ended while it was down.
    let fake = Fake::route_like();
    fake.k()
        .elements
        .insert(net("198.18.0.4/32"), Expiry::Unknown);
    let mut book = BanBook::new(1000);
    book.set_settled_through(T0 - 2 * HOUR);
    book.restore(saved_ban("198.18.0.4/32", 1, T0 - HOUR - 9, Some(T0 - 9)));
    let (mut bans, restored) = start_with(&fake, book, policy(), T0);
    assert_eq!(
        restored,
        Restored {
            ended_removed: 1,
            ..Restored::default()
        }
    );
    assert!(fake.take_adds().is_empty());
    assert_eq!(fake.holds("198.18.0.4"), None);
    assert_eq!(bans.active_count(T0), 0);
    // Handed out once; its removal finds nothing and is no error.
    let ended = bans.take_expired(T0);
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].1, None);
}

#[test]
fn a_full_book_drops_the_ban_ending_soonest_and_tells_it_from_an_expired_one() {
    for self_expiring in [false, true] {
        let fake = if self_expiring {
            Fake::ipset_like()
        } else {
            Fake::route_like()
        };
        let (mut bans, _) = start_with(&fake, BanBook::new(2), policy(), T0);
        bans.ban(T0, ip("198.18.0.1"), Evidence::Verified, false, "a")
            .unwrap();
        bans.ban(T0 + 1, ip("198.18.0.2"), Evidence::Verified, false, "b")
            .unwrap();
        bans.ban(T0 + 2, ip("198.18.0.3"), Evidence::Verified, false, "c")
            .unwrap();
        assert_eq!(bans.book().len(), 2, "capacity bound");
        let now = T0 + 3;
        let ended = bans.take_expired(now);
        assert_eq!(ended.len(), 1);
        let (dropped, err) = &ended[0];
        assert_eq!(dropped.key, net("198.18.0.1/32"));
        assert!(
            dropped.expires_at.is_some_and(|t| t > now),
            "dropped early, not expired"
        );
        assert_eq!(*err, None);
        // A backend that expires by itself keeps the element until its own timeout.
        assert_eq!(fake.holds("198.18.0.1").is_some(), self_expiring);
        assert_eq!(bans.expires_by_itself(), self_expiring);
    }
}

#[test]
fn expiry_removes_bans_only_from_backends_that_do_not_expire_them() {
    for (fake, removed) in [(Fake::route_like(), true), (Fake::ipset_like(), false)] {
        let mut bans = start(&fake, policy());
        bans.ban(T0, ip("198.18.0.2"), Evidence::Verified, false, "scan")
            .unwrap();
        bans.ban(T0, ip("fd00:5e17::2"), Evidence::Verified, false, "scan")
            .unwrap();
        let ended = bans.take_expired(T0 + HOUR);
        assert_eq!(ended.len(), 2);
        assert!(ended.iter().all(|(_, e)| e.is_none()));
        assert_eq!(fake.k().removes.len(), if removed { 2 } else { 0 });
        assert!(
            bans.take_expired(T0 + HOUR + 1).is_empty(),
            "handed out once"
        );
    }
}

#[test]
fn a_failed_removal_at_expiry_is_reported_per_ban() {
    let fake = Fake::route_like();
    let mut bans = start(&fake, policy());
    bans.ban(T0, ip("198.18.0.2"), Evidence::Verified, false, "scan")
        .unwrap();
    fake.k().fail_remove = true;
    let ended = bans.take_expired(T0 + HOUR);
    assert_eq!(ended.len(), 1);
    assert!(
        ended[0]
            .1
            .as_deref()
            .is_some_and(|e| e.contains("198.18.0.2")),
        "{ended:?}"
    );
}

#[test]
fn a_refused_ban_is_an_error_but_counts_as_an_offence() {
    let fake = Fake::nftables_like();
    let mut bans = start(&fake, policy());
    fake.k().fail_add = true;
    let e = bans
        .ban(T0, ip("198.18.0.2"), Evidence::Verified, false, "scan")
        .unwrap_err();
    assert!(format!("{e:#}").contains("refused"), "{e:#}");
    assert!(!bans.book().is_banned(ip("198.18.0.2"), T0), "not in force");
    assert_eq!(bans.active_count(T0), 0);
    fake.k().fail_add = false;
    let b = bans
        .ban(
            T0 + HOUR + 1,
            ip("198.18.0.2"),
            Evidence::Verified,
            false,
            "scan",
        )
        .unwrap();
    assert_eq!(b.ban.offences, 2);
}

#[test]
fn the_kernels_own_first_offence_element_is_kept_but_an_escalated_one_rewritten() {
    let fake = Fake::nftables_like();
    let mut bans = start(&fake, policy());
    let src = ip("198.18.0.2");
    let b = bans.ban(T0, src, Evidence::Verified, true, "trap").unwrap();
    assert!(!b.written);
    assert_eq!(b.timeout, secs(HOUR));
    assert_eq!(b.place, "fake");
    assert!(
        fake.take_adds().is_empty(),
        "the trap rule's element is right"
    );
    // Second offence: the kernel added it with the set's default (1 h) again, but the
    // ban is 2 h now.
    let b = bans
        .ban(T0 + HOUR + 1, src, Evidence::Verified, true, "trap")
        .unwrap();
    assert!(b.written);
    assert_eq!(
        fake.take_adds(),
        vec![(net("198.18.0.2/32"), secs(2 * HOUR))]
    );
    // Grouped: the kernel holds the host, the ban is the network's.
    let mut bans = start(&fake, grouped());
    bans.ban(T0, ip("198.18.5.5"), Evidence::Verified, true, "trap")
        .unwrap();
    assert_eq!(fake.take_adds(), vec![(net("198.18.5.0/24"), secs(HOUR))]);
}

#[test]
fn manual_bans_network_ones_refused_on_a_host_only_backend() {
    let fake = Fake::ipset_like();
    let mut bans = start(&fake, policy());
    let e = bans
        .manual_ban(T0, net("198.18.0.0/24"), secs(60), false)
        .unwrap_err();
    assert!(e.to_string().contains("network bans need"), "{e}");
    assert!(fake.take_adds().is_empty());
    assert_eq!(bans.active_count(T0), 0, "nothing recorded");
    let b = bans
        .manual_ban(T0, net("198.18.0.9"), None, false)
        .unwrap()
        .ban;
    assert_eq!((b.offences, b.expires_at), (1, None));
    assert_eq!(fake.take_adds(), vec![(net("198.18.0.9/32"), None)]);

    let fake = Fake::nftables_like();
    let mut bans = start(&fake, policy());
    bans.manual_ban(T0, net("198.18.0.0/24"), secs(60), false)
        .unwrap();
    assert_eq!(fake.take_adds(), vec![(net("198.18.0.0/24"), secs(60))]);
}

#[test]
fn unban_lifts_book_bans_and_elements_only_the_kernel_holds() {
    let fake = Fake::nftables_like();
    let mut bans = start(&fake, grouped());
    bans.ban(T0, ip("198.18.0.7"), Evidence::Verified, false, "scan")
        .unwrap();
    // The most specific ban containing the address.
    let lifted = bans.unban(T0 + 1, net("198.18.0.7")).unwrap().unwrap();
    assert_eq!(lifted.key, net("198.18.0.0/24"));
    assert_eq!(fake.holds("198.18.0.0/24"), None);
    assert_eq!(bans.active_count(T0 + 1), 0);
    // Only in the kernel (a trap rule added it since the last read).
    fake.k()
        .elements
        .insert(net("198.18.3.3/32"), Expiry::Permanent);
    let lifted = bans.unban(T0 + 2, net("198.18.3.3")).unwrap().unwrap();
    assert_eq!((lifted.key, lifted.offences), (net("198.18.3.3/32"), 0));
    assert_eq!(fake.holds("198.18.3.3"), None);
    assert_eq!(bans.unban(T0 + 3, net("198.18.4.4")).unwrap(), None);
    // A host-only backend is not asked to remove a network.
    let fake = Fake::route_like();
    let mut bans = start(&fake, policy());
    assert_eq!(bans.unban(T0, net("198.18.0.0/24")).unwrap(), None);
    assert!(fake.k().removes.is_empty());
}

#[test]
fn put_back_missing_restores_what_a_table_reinstall_lost() {
    let fake = Fake::nftables_like();
    let mut bans = start(&fake, grouped());
    bans.ban(T0, ip("198.18.0.7"), Evidence::Verified, false, "scan")
        .unwrap();
    bans.manual_ban(T0, net("fd00:5e17::9/128"), None, false)
        .unwrap();
    fake.take_adds();
    assert_eq!(bans.put_back_missing(T0 + 10).unwrap(), 0, "nothing lost");
    fake.k().elements.clear(); // nft flush ruleset; the table came back empty
    assert_eq!(bans.put_back_missing(T0 + 10).unwrap(), 2);
    let mut adds = fake.take_adds();
    adds.sort();
    assert_eq!(
        adds,
        vec![
            (net("198.18.0.0/24"), secs(HOUR - 10)),
            (net("fd00:5e17::9/128"), None)
        ]
    );
}

#[test]
fn the_book_is_saved_at_most_once_a_second_and_every_ten_when_large() {
    let fake = Fake::nftables_like();
    let mut bans = start(&fake, policy());
    let ms = Millis;
    assert!(
        bans.save_due(ms(0), false),
        "a started book is saved at once"
    );
    bans.saved(ms(0));
    assert!(!bans.save_due(ms(5000), false), "unchanged");
    assert!(!bans.save_due(ms(5000), true), "unchanged, even at stop");
    bans.ban(T0, ip("198.18.0.2"), Evidence::Verified, false, "scan")
        .unwrap();
    assert!(!bans.save_due(ms(999), false));
    assert!(bans.save_due(ms(999), true), "stop saves a change at once");
    assert!(bans.save_due(ms(1000), false));
    bans.saved(ms(1000));

    // Past LARGE_BOOK records, every 10 s.
    let mut book = BanBook::new(LARGE_BOOK + 10);
    for i in 0..=LARGE_BOOK as u32 {
        let a = IpAddr::from([198, 19, (i >> 8) as u8, i as u8]);
        let mut b = saved_ban("198.18.0.0/32", 1, T0 - 10 * HOUR, Some(T0 - 9 * HOUR));
        b.key = IpNet::from(a);
        book.restore(b);
    }
    book.set_settled_through(T0);
    let (mut bans, _) = start_with(&Fake::nftables_like(), book, policy(), T0);
    bans.saved(ms(0));
    bans.ban(T0, ip("198.18.0.2"), Evidence::Verified, false, "scan")
        .unwrap();
    assert!(!bans.save_due(ms(9_999), false));
    assert!(bans.save_due(ms(10_000), false));
}

#[test]
fn without_a_backend_only_the_legacy_commands_bans_are_recorded() {
    let (mut bans, restored) = BanLifecycle::start(
        BanBook::new(100),
        3,
        same(policy()),
        None,
        IgnoreSet::new(),
        T0,
    )
    .unwrap();
    assert_eq!(restored.expired_dropped, 3);
    assert!(!bans.is_native());
    assert!(bans.expires_by_itself());
    bans.record_legacy(T0, ip("198.18.0.2"), Evidence::Unverified, "KILL_ROUTE");
    assert_eq!(
        bans.active_count(T0 + 365 * 24 * HOUR),
        1,
        "1.2 bans are permanent"
    );
    assert!(bans.manual_ban(T0, net("198.18.0.3"), None, false).is_err());
    assert_eq!(bans.put_back_missing(T0).unwrap(), 0);
    assert_eq!(bans.unban(T0, net("198.18.0.9")).unwrap(), None);
    assert!(bans.save_due(Millis(0), false));
}

/// This host (198.18.0.1), its gateway (198.18.0.254), an ignored network and an IPv6
/// address of ours, as the daemon hands them in.
fn protected() -> IgnoreSet {
    let mut set = IgnoreSet::new();
    for n in [
        "198.18.0.1/32",
        "198.18.0.254/32",
        "198.19.7.0/24",
        "fd00:5e17::1/128",
    ] {
        set.insert(net(n));
    }
    set
}

fn start_protected(fake: &Fake, book: BanBook) -> (BanLifecycle, Restored) {
    BanLifecycle::start(book, 0, same(policy()), fake.boxed(), protected(), T0).unwrap()
}

#[test]
fn issue7_manual_bans_covering_everything_or_special_addresses_are_refused_even_forced() {
    let fake = Fake::nftables_like();
    let (mut bans, _) = start_protected(&fake, BanBook::new(100));
    for (target, why) in [
        ("0.0.0.0/0", "covers too much"),
        ("::/0", "covers too much"),
        ("198.0.0.0/7", "covers too much"),
        ("2000::/3", "covers too much"),
        ("fd00::/15", "covers too much"),
        ("::ffff:0.0.0.0/96", "covers too much"),
        ("0.0.0.0", "unspecified"),
        ("0.0.0.0/8", "unspecified"),
        ("::", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.9.9", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::/16", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
    ] {
        for force in [false, true] {
            let e = bans
                .manual_ban(T0, net(target), secs(60), force)
                .unwrap_err();
            assert!(matches!(e, BanError::NotAllowed(_)), "{target}: {e}");
            let text = e.to_string();
            assert!(text.contains(why), "{target}: {text}");
            assert!(text.contains("no --force allows this"), "{target}: {text}");
        }
    }
    assert!(fake.take_adds().is_empty(), "nothing reached the kernel");
    assert_eq!(bans.book().len(), 0, "nothing recorded");
    // The shortest allowed prefixes are bans like any other.
    bans.manual_ban(T0, net("11.0.0.0/8"), secs(60), false)
        .unwrap();
    bans.manual_ban(T0, net("2001::/16"), secs(60), false)
        .unwrap();
    assert_eq!(fake.take_adds().len(), 2);
}

#[test]
fn issue7_manual_bans_of_the_protected_set_are_refused_unless_forced() {
    let fake = Fake::nftables_like();
    let (mut bans, _) = start_protected(&fake, BanBook::new(100));
    for (target, protected) in [
        ("198.18.0.1", "198.18.0.1/32"),      // this host
        ("198.18.0.254", "198.18.0.254/32"),  // its gateway
        ("198.18.0.0/24", "198.18.0.1/32"),   // a network holding this host
        ("198.19.7.7", "198.19.7.0/24"),      // inside the ignore list
        ("198.19.0.0/16", "198.19.7.0/24"),   // around an ignored network
        ("fd00:5e17::1", "fd00:5e17::1/128"), // our IPv6 address
        ("::ffff:198.18.0.1", "198.18.0.1/32"),
    ] {
        let e = bans
            .manual_ban(T0, net(target), secs(60), false)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "refused: {} is protected ({protected} is in the protected set: this host's addresses, its gateways and resolvers, the ignore list); --force overrides the protected set",
                super::guard::canonical(net(target))
            )
        );
    }
    assert!(fake.take_adds().is_empty());
    assert_eq!(bans.active_count(T0), 0);

    let done = bans
        .manual_ban(T0, net("198.18.0.254"), secs(60), true)
        .unwrap();
    assert_eq!(done.overrode, Some(net("198.18.0.254/32")));
    assert!(done.ban.reason.contains("--force"), "{}", done.ban.reason);
    assert_eq!(fake.take_adds(), vec![(net("198.18.0.254/32"), secs(60))]);
    // An address next to the protected ones needs no force.
    let done = bans
        .manual_ban(T0, net("198.18.0.2"), secs(60), false)
        .unwrap();
    assert_eq!(done.overrode, None);

    // The daemon re-read the set: the gateway changed.
    let mut now_protected = IgnoreSet::new();
    now_protected.insert(net("198.18.0.253/32"));
    bans.set_protected(now_protected);
    bans.manual_ban(T0, net("198.18.0.1"), secs(60), false)
        .unwrap();
    assert!(
        bans.manual_ban(T0, net("198.18.0.253"), secs(60), false)
            .is_err()
    );
}

#[test]
fn issue7_manual_bans_longer_than_the_backend_holds_are_refused_with_the_limit() {
    let fake = Fake::ipset_like();
    fake.k().max_timeout = secs(2_147_483);
    let mut bans = start(&fake, policy());
    let e = bans
        .manual_ban(T0, net("198.18.0.2"), secs(2_147_484), false)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "refused: a ban of 24days 20h 31m 24s is longer than fake can hold (24days 20h 31m 23s); use --permanent"
    );
    assert!(fake.take_adds().is_empty());
    assert_eq!(bans.book().len(), 0);
    bans.manual_ban(T0, net("198.18.0.2"), secs(2_147_483), false)
        .unwrap();
    bans.manual_ban(T0, net("198.18.0.3"), None, false).unwrap();
    assert_eq!(fake.take_adds().len(), 2);
}

#[test]
fn issue7_a_failed_add_is_not_in_force() {
    // The administrator's ban: nothing recorded at all.
    let fake = Fake::nftables_like();
    let mut bans = start(&fake, policy());
    fake.k().fail_add = true;
    let e = bans
        .manual_ban(T0, net("198.18.0.0/24"), secs(60), false)
        .unwrap_err();
    assert!(e.to_string().contains("the kernel refused"), "{e}");
    assert_eq!(bans.active_count(T0), 0);
    assert_eq!(bans.book().len(), 0);

    // A detection ban on top of one in force: the one in force stays what it was (the
    // kernel still holds it), the offence counts.
    fake.k().fail_add = false;
    bans.ban(T0, ip("198.18.0.2"), Evidence::Verified, false, "scan")
        .unwrap();
    fake.k().fail_add = true;
    assert!(
        bans.ban(T0 + 10, ip("198.18.0.2"), Evidence::Verified, false, "scan")
            .is_err()
    );
    let b = record(&bans, "198.18.0.2/32");
    assert_eq!((b.offences, b.expires_at), (2, Some(T0 + HOUR)));
    assert_eq!(bans.active_count(T0 + HOUR), 0);

    // The trap rule's own element holds the first-offence length: that is in force,
    // not the escalated ban the kernel refused.
    let fake = Fake::nftables_like();
    let mut bans = start(&fake, policy());
    bans.ban(T0, ip("198.18.0.3"), Evidence::Verified, true, "trap")
        .unwrap();
    fake.k().fail_add = true;
    let t = T0 + HOUR + 1;
    assert!(
        bans.ban(t, ip("198.18.0.3"), Evidence::Verified, true, "trap")
            .is_err()
    );
    let b = record(&bans, "198.18.0.3/32");
    assert_eq!((b.offences, b.expires_at), (2, Some(t + HOUR)));
    assert_eq!(bans.active_count(t), 1);
    // A grouped ban the kernel refused: only history.
    let fake = Fake::nftables_like();
    let mut bans = start(&fake, grouped());
    fake.k().fail_add = true;
    assert!(
        bans.ban(T0, ip("198.18.5.5"), Evidence::Verified, true, "trap")
            .is_err()
    );
    assert_eq!(bans.active_count(T0), 0);
    assert_eq!(record(&bans, "198.18.5.0/24").offences, 1);
}

#[test]
fn issue7_start_does_not_put_back_saved_bans_that_may_not_be_bans() {
    let fake = Fake::nftables_like();
    // Left in the kernel by an earlier run that accepted them.
    fake.k().elements.insert(net("::/0"), Expiry::Permanent);
    fake.k()
        .elements
        .insert(net("198.18.0.254/32"), Expiry::Permanent);
    let mut book = BanBook::new(100);
    book.restore(saved_ban("0.0.0.0/0", 1, T0 - 10, None));
    book.restore(saved_ban("::/0", 1, T0 - 10, None));
    book.restore(saved_ban("198.18.0.1/32", 1, T0 - 10, Some(T0 + HOUR)));
    book.restore(saved_ban("198.18.0.9/32", 1, T0 - 10, Some(T0 + HOUR)));
    let (bans, restored) = start_protected(&fake, book);
    assert_eq!(
        restored.refused,
        vec![
            Refusal::TooWide {
                net: net("0.0.0.0/0")
            },
            Refusal::Protected {
                net: net("198.18.0.1/32"),
                protected: net("198.18.0.1/32")
            },
            Refusal::TooWide { net: net("::/0") },
            Refusal::Protected {
                net: net("198.18.0.254/32"),
                protected: net("198.18.0.254/32")
            },
        ]
    );
    assert_eq!(restored.put_back, 1);
    assert_eq!(restored.adopted_from_kernel, 0);
    assert_eq!(fake.take_adds(), vec![(net("198.18.0.9/32"), secs(HOUR))]);
    assert_eq!(fake.holds("::/0"), None, "removed from the kernel");
    assert_eq!(fake.holds("198.18.0.254"), None);
    assert_eq!(bans.active_count(T0), 1);
    // Kept as offence history.
    assert_eq!(record(&bans, "0.0.0.0/0").offences, 1);
}

// ---- issue 7: the policy by evidence class, the budget of new unverified bans ----

fn start_default(fake: &Fake) -> BanLifecycle {
    BanLifecycle::start(
        BanBook::new(1000),
        0,
        BanPolicies::default(),
        fake.boxed(),
        IgnoreSet::new(),
        T0,
    )
    .unwrap()
    .0
}

#[test]
fn issue7_the_policy_is_chosen_by_evidence() {
    let fake = Fake::nftables_like();
    let mut bans = start_default(&fake);
    // A SYN scan: the provisional 10 minutes.
    let u = bans
        .ban(T0, ip("198.18.0.2"), Evidence::Unverified, false, "SYN")
        .unwrap();
    assert_eq!(u.timeout, secs(600));
    assert_eq!(u.ban.evidence, Evidence::Unverified);
    // A connect to a handshake trap: the full hour.
    let v = bans
        .ban(
            T0,
            ip("198.18.0.3"),
            Evidence::Verified,
            false,
            "TCP Connect",
        )
        .unwrap();
    assert_eq!(v.timeout, secs(HOUR));
    assert_eq!(v.ban.evidence, Evidence::Verified);
    // The administrator's ban is manual.
    let m = bans
        .manual_ban(T0, net("198.18.0.4"), secs(60), false)
        .unwrap();
    assert_eq!(m.ban.evidence, Evidence::Manual);
    assert!(super::by_administrator(&m.ban));
    assert_eq!(
        fake.take_adds(),
        [
            (net("198.18.0.2"), secs(600)),
            (net("198.18.0.3"), secs(HOUR)),
            (net("198.18.0.4"), secs(60)),
        ]
    );
}

/// The kernel's first-probe element has the provisional first-offence length: it is
/// right for an unverified first offence and not written again; a decoy scanned again
/// within the gap stays at that length (still right), never escalated.
#[test]
fn issue7_kernel_first_probe_bans_are_unverified_and_not_escalated_within_the_gap() {
    let fake = Fake::nftables_like();
    let mut bans = start_default(&fake);
    let decoy = ip("198.18.0.77");
    let b = bans
        .ban(T0, decoy, Evidence::Unverified, true, "SYN")
        .unwrap();
    assert!(!b.written);
    assert_eq!((b.ban.offences, b.timeout), (1, secs(600)));
    // The ban ended; the second decoy scan 15 minutes later.
    let b = bans
        .ban(T0 + 900, decoy, Evidence::Unverified, true, "SYN")
        .unwrap();
    assert!(!b.written, "the kernel's element is right again");
    assert_eq!((b.ban.offences, b.timeout), (1, secs(600)));
    assert!(fake.take_adds().is_empty());
    // Past the gap it counts: escalated, so the element is rewritten.
    let b = bans
        .ban(T0 + HOUR, decoy, Evidence::Unverified, true, "SYN")
        .unwrap();
    assert!(b.written);
    assert_eq!((b.ban.offences, b.timeout), (2, secs(1200)));
}

#[test]
fn issue7_ban_false_alerts_only() {
    let fake = Fake::nftables_like();
    let mut policies = BanPolicies::default();
    policies.unverified.ban = false;
    let (mut bans, _) = BanLifecycle::start(
        BanBook::new(100),
        0,
        policies,
        fake.boxed(),
        IgnoreSet::new(),
        T0,
    )
    .unwrap();
    let src = ip("198.18.0.2");
    assert_eq!(
        bans.admit(T0, Millis(0), src, Evidence::Unverified, false),
        Admission::NotByPolicy
    );
    assert_eq!(
        bans.admit(T0, Millis(0), src, Evidence::Verified, false),
        Admission::Ban
    );
    assert_eq!(
        bans.take_over_budget(),
        (0, 0),
        "a policy refusal is not the budget"
    );
}

/// Past the budget, new unverified bans the daemon decides are refused and counted;
/// verified and manual evidence, the kernel's own bans and sources already banned
/// take no budget.
#[test]
fn issue7_the_budget_limits_new_unverified_bans_only() {
    let fake = Fake::nftables_like();
    let mut bans = start_default(&fake);
    bans.set_budget(BanBudget::new(2, 3));
    let t = Millis(5_000);
    let src = |i: u8| ip(&format!("198.18.1.{i}"));
    let mut admitted = Vec::new();
    for i in 1..=10u8 {
        if bans.admit(T0, t, src(i), Evidence::Unverified, false) == Admission::Ban {
            bans.ban(T0, src(i), Evidence::Unverified, false, "SYN")
                .unwrap();
            admitted.push(i);
        }
    }
    assert_eq!(admitted, [1, 2, 3], "the burst");
    // The same refused source again, and one already banned (no budget needed).
    assert_eq!(
        bans.admit(T0, t, src(4), Evidence::Unverified, false),
        Admission::OverBudget
    );
    assert_eq!(
        bans.admit(T0, t, src(1), Evidence::Unverified, false),
        Admission::Ban
    );
    for (evidence, kernel) in [
        (Evidence::Verified, false),
        (Evidence::Manual, false),
        (Evidence::Unverified, true),
    ] {
        assert_eq!(
            bans.admit(T0, t, src(200), evidence, kernel),
            Admission::Ban,
            "{evidence:?} kernel_banned={kernel}"
        );
    }
    assert_eq!(bans.take_over_budget(), (8, 7), "8 refusals from 7 sources");
    assert_eq!(bans.take_over_budget(), (0, 0), "taken once");
    // Half a second later, one more (2 a second).
    assert_eq!(
        bans.admit(
            T0,
            t + Duration::from_millis(500),
            src(9),
            Evidence::Unverified,
            false
        ),
        Admission::Ban
    );
}

/// Issue 7 item 7: a full set is not asked again for every new source of a flood.
#[test]
fn a_full_set_fails_fast_and_is_asked_again_a_second_later() {
    let fake = Fake::nftables_like();
    fake.k().capacity = Some(1);
    let mut bans = start(&fake, policy());
    bans.ban(T0, ip("198.18.0.2"), Evidence::Verified, false, "a")
        .unwrap();
    let e = bans
        .ban(T0, ip("198.18.0.3"), Evidence::Verified, false, "b")
        .unwrap_err();
    assert!(matches!(e, BanError::SetFull(_)), "{e}");
    assert_eq!(fake.k().add_calls, 2);
    for h in 4..100 {
        let e = bans
            .ban(
                T0,
                ip(&format!("198.18.0.{h}")),
                Evidence::Verified,
                false,
                "c",
            )
            .unwrap_err();
        assert!(matches!(e, BanError::SetFull(_)), "{e}");
    }
    assert_eq!(
        fake.k().add_calls,
        2,
        "the kernel was asked again within the second"
    );
    assert_eq!(
        bans.active_count(T0),
        1,
        "only the ban the kernel took is in force"
    );
    // A second later the kernel is asked again; with room the ban is made.
    fake.k().capacity = Some(2);
    bans.ban(T0 + 1, ip("198.18.0.200"), Evidence::Verified, false, "d")
        .unwrap();
    assert_eq!(fake.k().add_calls, 3);
    assert_eq!(bans.active_count(T0 + 1), 2);
}

/// Issue 7 item 7: kernel elements beyond the book's room are left to the kernel, and
/// the summary says so.
#[test]
fn start_adopts_only_what_the_book_has_room_for() {
    let fake = Fake::nftables_like();
    for h in 1..=10 {
        fake.k().elements.insert(
            net(&format!("198.18.0.{h}")),
            Expiry::In {
                left: Duration::from_secs(600),
                timeout: secs(HOUR),
            },
        );
    }
    let mut book = BanBook::new(4);
    book.restore(saved_ban("198.18.0.1", 1, T0 - 10, Some(T0 + HOUR)));
    let (bans, restored) = start_with(&fake, book, policy(), T0);
    assert_eq!(restored.already_in_kernel, 1);
    assert_eq!(restored.adopted_from_kernel, 3);
    assert!(restored.kernel_unlisted);
    assert_eq!(bans.active_count(T0), 4);
    assert_eq!(
        fake.k().elements.len(),
        10,
        "nothing removed from the kernel"
    );
}

/// Issue 10: a ban received from the fleet is refused for this host's protected set
/// (its gateway, its own addresses) and for what no ban may cover; it never shortens a
/// ban in force here; otherwise it is written with its own length and class.
#[test]
fn issue10_fleet_bans_pass_the_guard_and_never_shorten_a_ban() {
    let fake = Fake::nftables_like();
    let (mut bans, _) = start_protected(&fake, BanBook::new(100));
    let hour = Duration::from_secs(3600);
    for target in [
        "198.18.0.254",
        "198.18.0.1",
        "198.19.7.9",
        "0.0.0.0/0",
        "127.0.0.1",
    ] {
        let e = bans
            .fleet_ban(
                T0,
                net(target),
                hour,
                Evidence::Verified,
                "from fleet node a: x",
            )
            .unwrap_err();
        assert!(matches!(e, BanError::NotAllowed(_)), "{target}: {e}");
    }
    assert!(fake.take_adds().is_empty(), "nothing reached the kernel");
    let done = bans
        .fleet_ban(
            T0,
            net("198.18.0.7"),
            hour,
            Evidence::Verified,
            "from fleet node a: x",
        )
        .unwrap()
        .unwrap();
    assert_eq!(done.expires_at, Some(T0 + 3600));
    assert_eq!(done.evidence, Evidence::Verified);
    assert_eq!(fake.take_adds(), vec![(net("198.18.0.7/32"), Some(hour))]);
    // A shorter one later changes nothing; a longer one extends it.
    let shorter = bans
        .fleet_ban(
            T0 + 10,
            net("198.18.0.7"),
            secs(60).unwrap(),
            Evidence::Verified,
            "r",
        )
        .unwrap();
    assert!(shorter.is_none());
    assert!(fake.take_adds().is_empty());
    let longer = bans
        .fleet_ban(
            T0 + 10,
            net("198.18.0.7"),
            2 * hour,
            Evidence::Verified,
            "r",
        )
        .unwrap();
    assert_eq!(longer.and_then(|b| b.expires_at), Some(T0 + 10 + 7200));
}
