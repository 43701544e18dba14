//! RESOLVE_HOST: reverse DNS names for log lines and records, off the capture path.
//! A lookup gets a short time limit and a bounded number of lookups run at once, so a
//! dead resolver delays nothing by more than the limit; names are cached.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// Longest wait for one reverse lookup before the address is used instead.
const LOOKUP_TIME_LIMIT: Duration = Duration::from_secs(2);
/// Lookups allowed to hang at once; past that, addresses are used unresolved.
const MAX_LOOKUPS_IN_FLIGHT: usize = 8;
const CACHE_CAPACITY: usize = 1024;

pub struct Resolver {
    enabled: bool,
    cache: HashMap<IpAddr, String>,
    in_flight: Arc<AtomicUsize>,
}

impl Resolver {
    pub fn new(enabled: bool) -> Self {
        Resolver {
            enabled,
            cache: HashMap::new(),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The name to print for `ip`: its reverse DNS name when RESOLVE_HOST=1 and one is
    /// found in time, else the address itself (as 1.2 does).
    pub fn name(&mut self, ip: IpAddr) -> String {
        if !self.enabled {
            return ip.to_string();
        }
        if let Some(name) = self.cache.get(&ip) {
            return name.clone();
        }
        if self.in_flight.load(Ordering::Relaxed) >= MAX_LOOKUPS_IN_FLIGHT {
            return ip.to_string();
        }
        let (tx, rx) = mpsc::channel();
        let in_flight = Arc::clone(&self.in_flight);
        in_flight.fetch_add(1, Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name("resolve".into())
            .spawn(move || {
                let name = dns_lookup::lookup_addr(&ip).ok();
                in_flight.fetch_sub(1, Ordering::Relaxed);
                let _ = tx.send(name);
            });
        if spawned.is_err() {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return ip.to_string();
        }
        let name = match rx.recv_timeout(LOOKUP_TIME_LIMIT) {
            Ok(Some(name)) if !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic()) => {
                name
            }
            _ => ip.to_string(),
        };
        if self.cache.len() >= CACHE_CAPACITY {
            self.cache.clear();
        }
        self.cache.insert(ip, name.clone());
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_resolver_prints_the_address() {
        let mut r = Resolver::new(false);
        assert_eq!(r.name("198.18.0.2".parse().unwrap()), "198.18.0.2");
        assert_eq!(r.name("fd00:5e17::2".parse().unwrap()), "fd00:5e17::2");
    }
}
