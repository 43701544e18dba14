//! Known peers of the packet-socket path (no nftables): the remote ends of this
//! host's TCP connections that completed a handshake, as the kernel's socket table
//! (sock_diag) lists them, remembered for `[firewall] known_peer_time` after they were
//! last seen. A probe from one is marked `Verdict::KnownPeer` by the probe source and
//! so is never banned (issue 7). Pure: time comes in as `now`, the addresses from the
//! caller's sock_diag reading.
//!
//! Invariants: at most `capacity` addresses; a full table learns no new address until
//! old ones expire (nothing a flood sends can fill it: only completed handshakes are
//! listed); a connection shorter than the reading interval can be missed, so this is
//! weaker than the nftables path, which learns on the packet.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use portsentry_engine::Millis;

#[derive(Debug)]
pub struct KnownPeers {
    time: Duration,
    capacity: usize,
    /// Each peer with when it was last seen connected.
    seen: HashMap<IpAddr, Millis>,
    last_reading: Option<Millis>,
}

/// How often the socket table is read for peers, at most.
pub const READ_INTERVAL: Duration = Duration::from_secs(1);

impl KnownPeers {
    pub fn new(time: Duration, capacity: usize) -> Self {
        KnownPeers {
            time,
            capacity,
            seen: HashMap::new(),
            last_reading: None,
        }
    }

    /// Whether the socket table should be read again at `now`.
    pub fn reading_due(&self, now: Millis) -> bool {
        self.last_reading
            .is_none_or(|last| now.since(last) >= READ_INTERVAL)
    }

    /// The addresses connected at `now` (one reading of the socket table).
    pub fn saw(&mut self, now: Millis, peers: impl IntoIterator<Item = IpAddr>) {
        self.last_reading = Some(now);
        for ip in peers {
            let ip = canonical(ip);
            if !self.seen.contains_key(&ip) && self.seen.len() >= self.capacity {
                let time = self.time;
                self.seen.retain(|_, last| now.since(*last) < time);
                if self.seen.len() >= self.capacity {
                    continue;
                }
            }
            self.seen.insert(ip, now);
        }
    }

    /// Whether `ip` was seen connected within the known-peer time before `now`.
    pub fn contains(&self, now: Millis, ip: IpAddr) -> bool {
        self.seen
            .get(&canonical(ip))
            .is_some_and(|last| now.since(*last) < self.time)
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// IPv4-mapped IPv6 as IPv4, as the probes carry it.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn at(secs: u64) -> Millis {
        Millis(5_000 + secs * 1000)
    }

    #[test]
    fn a_peer_is_known_for_the_time_after_it_was_last_seen() {
        let mut k = KnownPeers::new(Duration::from_secs(100), 10);
        assert!(k.reading_due(at(0)));
        k.saw(at(0), [ip("198.18.0.2"), ip("::ffff:198.18.0.3")]);
        assert!(!k.reading_due(at(0)));
        assert!(k.reading_due(at(1)));
        assert!(k.contains(at(99), ip("198.18.0.2")));
        assert!(
            k.contains(at(50), ip("198.18.0.3")),
            "mapped address folded"
        );
        assert!(!k.contains(at(100), ip("198.18.0.2")));
        assert!(!k.contains(at(1), ip("198.18.0.4")));
        // Seen again: the time starts over.
        k.saw(at(90), [ip("198.18.0.2")]);
        assert!(k.contains(at(189), ip("198.18.0.2")));
    }

    #[test]
    fn a_full_table_learns_nothing_new_until_old_peers_expire() {
        let mut k = KnownPeers::new(Duration::from_secs(10), 2);
        k.saw(
            at(0),
            [ip("198.18.0.2"), ip("198.18.0.3"), ip("198.18.0.4")],
        );
        assert_eq!(k.len(), 2);
        assert!(!k.contains(at(1), ip("198.18.0.4")));
        k.saw(at(20), [ip("198.18.0.4")]);
        assert!(k.contains(at(21), ip("198.18.0.4")));
        assert_eq!(k.len(), 1);
    }
}
