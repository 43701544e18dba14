//! Bans as members of two ipset `hash:ip` sets with kernel timeouts, matched by one rule
//! per family at the top of `INPUT`:
//! ```text
//! ipset create portsentry4 hash:ip family inet  timeout 0 maxelem 1048576 -exist
//! ipset create portsentry6 hash:ip family inet6 timeout 0 maxelem 1048576 -exist
//! iptables  -I INPUT -m set --match-set portsentry4 src -j DROP   (after -C said absent)
//! ip6tables -I INPUT -m set --match-set portsentry6 src -j DROP
//! ipset add portsentry4 ADDR timeout SECS -exist
//! ```
//! Timeouts, checked against ipset 7.17 on Linux 6.18:
//! - the sets are created with `timeout 0`: every member can carry a timeout, and the
//!   default (a member added without one) is 0, which ipset treats as *permanent*;
//! - a ban with a timeout is added with `timeout SECS`, rounded *up* to whole seconds
//!   and at least 1 (0 would make it permanent); ipset accepts at most
//!   [`IPSET_MAX_TIMEOUT`] seconds (about 24.8 days): longer bans are clamped to that
//!   and end early in the kernel — the daemon's book still knows the real end and puts
//!   the ban back at its next start (restore re-adds live bans missing from the kernel);
//! - a permanent ban is added with `timeout 0`;
//! - `-exist` makes a re-add *set* the member's timeout (permanent → timed and back
//!   included), so `add` always leaves exactly the requested timeout.
//!
//! The kernel expires members by itself, also while the daemon is down, so
//! [`BanBackend::expires_by_itself`] is true. Each ban forks one `ipset` (acceptable for
//! a fallback: bans are rare events and nftables is the fast path); [`BanBackend::add_many`]
//! puts many bans back with one `ipset restore`.
//!
//! Ours are exactly the two sets and the two rules naming them. `teardown` deletes the
//! rules first (the kernel refuses to destroy a set a rule refers to), then the sets.

use std::net::IpAddr;
use std::time::Duration;

use super::command::{self, CommandError};
use super::iptables::{CHAIN, rule_exists, xtables};
use ipnet::IpNet;

use super::{BackendError, BanBackend, Expiry, Held, ban_target, host_key};
use crate::process::Finished;

/// The set of banned IPv4 sources.
pub const SET4: &str = "portsentry4";
/// The set of banned IPv6 sources.
pub const SET6: &str = "portsentry6";
/// Members per set; the same bound as the nftables sets' default.
pub const SET_MAXELEM: u32 = 1 << 20;
/// The longest timeout ipset accepts, in seconds (`UINT_MAX / 1000`, ~24.8 days).
pub const IPSET_MAX_TIMEOUT: u64 = 2_147_483;

/// How many copies of our set rule `teardown` deletes at most per family (a bound for
/// the loop; `prepare` inserts only one).
const MAX_RULE_COPIES: usize = 64;

const IPSET: &str = "ipset";

/// Bans in ipset sets; see the module documentation.
#[derive(Debug, Default)]
pub struct IpsetBackend {
    _private: (),
}

fn set_of(addr: IpAddr) -> &'static str {
    if addr.is_ipv6() { SET6 } else { SET4 }
}

fn family_of(set: &'static str) -> &'static str {
    if set == SET6 { "inet6" } else { "inet" }
}

/// The rule that drops members of `set`, as given to `-I`, `-C` and `-D`.
fn set_rule(set: &'static str) -> [&'static str; 7] {
    ["-m", "set", "--match-set", set, "src", "-j", "DROP"]
}

/// The `timeout` value for a ban: 0 (permanent) for `None`, else whole seconds rounded
/// up, at least 1, at most [`IPSET_MAX_TIMEOUT`].
fn ipset_timeout(timeout: Option<Duration>) -> u64 {
    match timeout {
        None => 0,
        Some(d) => {
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            secs.clamp(1, IPSET_MAX_TIMEOUT)
        }
    }
}

/// Members of `set` in `ipset list SET -output save` text, with their remaining time
/// (`None`: permanent).
fn parse_save(set: &str, text: &str) -> Result<Vec<(IpAddr, Option<Duration>)>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("add") || words.next() != Some(set) {
            continue;
        }
        let word = words.next().unwrap_or("");
        let addr: IpAddr = word
            .parse()
            .map_err(|_| format!("not an address: {line:?}"))?;
        let mut timeout = None;
        while let Some(w) = words.next() {
            if w == "timeout" {
                let secs: u64 = words
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("bad timeout: {line:?}"))?;
                timeout = (secs > 0).then(|| Duration::from_secs(secs));
            }
        }
        out.push((addr, timeout));
    }
    Ok(out)
}

/// Whether a failed ipset run said that the set does not exist.
fn no_such_set(out: &Finished) -> bool {
    out.stderr
        .contains("set with the given name does not exist")
}

impl IpsetBackend {
    pub fn new() -> Self {
        IpsetBackend::default()
    }

    /// Whether the `ipset` tool runs and the kernel answers it (`ipset list -n`, which
    /// loads the `ip_set` module when needed).
    pub fn available() -> bool {
        command::run(IPSET, &["list", "-n"], None).is_ok_and(|o| o.success())
    }

    /// Our sets that exist now.
    fn existing_sets(&self) -> Result<Vec<&'static str>, BackendError> {
        let names = command::run(IPSET, &["list", "-n"], None)
            .and_then(command::ok)
            .map_err(BackendError::ListSets)?;
        Ok([SET4, SET6]
            .into_iter()
            .filter(|set| names.lines().any(|l| l.trim() == *set))
            .collect())
    }

    /// Members of one set with their remaining time (`None`: permanent); empty when the
    /// set does not exist.
    fn members(&self, set: &'static str) -> Result<Vec<(IpAddr, Option<Duration>)>, BackendError> {
        let out = command::run(IPSET, &["list", set, "-output", "save"], None)
            .map_err(|source| BackendError::ListSet { set, source })?;
        if !out.success() {
            if no_such_set(&out) {
                return Ok(Vec::new());
            }
            return Err(BackendError::ListSet {
                set,
                source: command::failure(out),
            });
        }
        parse_save(set, &out.stdout).map_err(|detail| BackendError::ListSet {
            set,
            source: CommandError::BadOutput {
                command: out.command,
                detail,
            },
        })
    }

    /// Every ban with its remaining time in the kernel (`None`: permanent), IPv4 first.
    pub fn entries(&mut self) -> Result<Vec<(IpAddr, Option<Duration>)>, BackendError> {
        let mut all = self.members(SET4)?;
        all.extend(self.members(SET6)?);
        Ok(all)
    }
}

impl BanBackend for IpsetBackend {
    fn name(&self) -> &'static str {
        "ipset"
    }

    fn prepare(&mut self) -> Result<(), BackendError> {
        for set in [SET4, SET6] {
            let maxelem = SET_MAXELEM.to_string();
            let args = [
                "create",
                set,
                "hash:ip",
                "family",
                family_of(set),
                "timeout",
                "0",
                "maxelem",
                &maxelem,
                "-exist",
            ];
            command::run(IPSET, &args, None)
                .and_then(command::ok)
                .map_err(|source| BackendError::CreateSet { set, source })?;
            let v6 = set == SET6;
            let spec = set_rule(set);
            let insert_err = |source| BackendError::InsertSetRule { set, source };
            if !rule_exists(v6, &spec).map_err(insert_err)? {
                let mut args = vec!["-I", CHAIN];
                args.extend_from_slice(&spec);
                xtables(v6, &args)
                    .and_then(command::ok)
                    .map_err(insert_err)?;
            }
        }
        Ok(())
    }

    fn add(&mut self, key: IpNet, timeout: Option<Duration>) -> Result<(), BackendError> {
        let addr = ban_target(host_key(key)?)?;
        let set = set_of(addr);
        let a = addr.to_string();
        let t = ipset_timeout(timeout).to_string();
        command::run(IPSET, &["add", set, &a, "timeout", &t, "-exist"], None)
            .and_then(command::ok)
            .map(drop)
            .map_err(|source| BackendError::AddToSet { set, addr, source })
    }

    /// One `ipset restore -exist` for all of them: either the tool applies every line or
    /// it stops at the first bad one and says which.
    fn add_many(&mut self, bans: &[(IpNet, Option<Duration>)]) -> Result<(), BackendError> {
        if bans.is_empty() {
            return Ok(());
        }
        let mut script = String::with_capacity(bans.len() * 48);
        for &(key, timeout) in bans {
            let addr = ban_target(host_key(key)?)?;
            script.push_str(&format!(
                "add {} {} timeout {}\n",
                set_of(addr),
                addr,
                ipset_timeout(timeout)
            ));
        }
        command::run(IPSET, &["restore", "-exist"], Some(script.into_bytes()))
            .and_then(command::ok)
            .map(drop)
            .map_err(|source| BackendError::RestoreSets {
                count: bans.len(),
                source,
            })
    }

    fn remove(&mut self, key: IpNet) -> Result<bool, BackendError> {
        let addr = ban_target(host_key(key)?)?;
        let set = set_of(addr);
        let a = addr.to_string();
        let out = command::run(IPSET, &["del", set, &a], None)
            .map_err(|source| BackendError::DeleteFromSet { set, addr, source })?;
        if out.success() {
            return Ok(true);
        }
        // ipset's messages are not translated; LC_ALL=C anyway.
        if out.stderr.contains("it's not added") || no_such_set(&out) {
            return Ok(false);
        }
        Err(BackendError::DeleteFromSet {
            set,
            addr,
            source: command::failure(out),
        })
    }

    /// Each member with the time left that `ipset list -output save` prints
    /// (`timeout N`; 0 = permanent). ipset does not report the length a member was
    /// added with.
    fn list(&mut self) -> Result<Vec<Held>, BackendError> {
        Ok(self
            .entries()?
            .into_iter()
            .map(|(a, left)| Held {
                key: IpNet::from(a),
                expiry: Expiry::from_left(left, None),
            })
            .collect())
    }

    fn max_timeout(&self) -> Option<Duration> {
        Some(Duration::from_secs(IPSET_MAX_TIMEOUT))
    }

    fn expires_by_itself(&self) -> bool {
        true
    }

    fn teardown(&mut self) -> Result<(), BackendError> {
        // A rule can only name an existing set, so a missing set has no rule to delete.
        for set in self.existing_sets()? {
            let v6 = set == SET6;
            let spec = set_rule(set);
            let delete_err = |source| BackendError::DeleteSetRule { set, source };
            for _ in 0..MAX_RULE_COPIES {
                if !rule_exists(v6, &spec).map_err(delete_err)? {
                    break;
                }
                let mut args = vec!["-D", CHAIN];
                args.extend_from_slice(&spec);
                xtables(v6, &args)
                    .and_then(command::ok)
                    .map_err(delete_err)?;
            }
            command::run(IPSET, &["destroy", set], None)
                .and_then(command::ok)
                .map_err(|source| BackendError::DestroySet { set, source })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_and_zero_means_permanent() {
        assert_eq!(ipset_timeout(None), 0);
        assert_eq!(ipset_timeout(Some(Duration::ZERO)), 1);
        assert_eq!(ipset_timeout(Some(Duration::from_millis(1))), 1);
        assert_eq!(ipset_timeout(Some(Duration::from_millis(1001))), 2);
        assert_eq!(ipset_timeout(Some(Duration::from_secs(3600))), 3600);
        assert_eq!(
            ipset_timeout(Some(Duration::from_secs(IPSET_MAX_TIMEOUT))),
            IPSET_MAX_TIMEOUT
        );
        assert_eq!(
            ipset_timeout(Some(Duration::from_secs(u64::MAX))),
            IPSET_MAX_TIMEOUT
        );
    }

    #[test]
    fn save_output_is_parsed_for_our_set_only() {
        let text = "\
create portsentry4 hash:ip family inet hashsize 1024 maxelem 1048576 timeout 0 bucketsize 12 initval 0xea35967d
add portsentry4 198.18.0.6 timeout 29
add portsentry4 198.18.0.5 timeout 0
add portsentry44 198.18.0.7 timeout 5
add other 198.18.0.8
";
        let got = parse_save(SET4, text).unwrap();
        assert_eq!(
            got,
            vec![
                ("198.18.0.6".parse().unwrap(), Some(Duration::from_secs(29))),
                ("198.18.0.5".parse().unwrap(), None),
            ]
        );
        let v6 = parse_save(SET6, "add portsentry6 fd00:5e17::2 timeout 99\n").unwrap();
        assert_eq!(
            v6,
            vec![(
                "fd00:5e17::2".parse().unwrap(),
                Some(Duration::from_secs(99))
            )]
        );
        assert!(parse_save(SET4, "add portsentry4 nonsense timeout 1\n").is_err());
        assert!(parse_save(SET4, "add portsentry4 198.18.0.1 timeout x\n").is_err());
    }

    #[test]
    fn set_rule_is_the_documented_rule() {
        assert_eq!(
            set_rule(SET4).join(" "),
            "-m set --match-set portsentry4 src -j DROP"
        );
        assert_eq!(family_of(SET6), "inet6");
        assert_eq!(set_of("fd00:5e17::2".parse().unwrap()), SET6);
    }
}
