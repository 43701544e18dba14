//! One `iptables`/`ip6tables` DROP rule per banned address at the top of `INPUT`:
//! `-I INPUT -s ADDR -j DROP -m comment --comment portsentry`.
//!
//! Ours are exactly the rules that `iptables -S INPUT` prints as
//! `-A INPUT -s ADDR/32 -m comment --comment portsentry -j DROP` (`/128` for IPv6):
//! a rule with another comment, another target or any further match is someone else's
//! and is never listed or deleted. The rules do not expire: the daemon calls `remove`.
//! Each ban costs one rule that every packet walks, so this suits a few hundred bans,
//! not a flood; [`super::IpsetBackend`] is preferred where ipset works.

use std::net::IpAddr;
use std::time::Duration;

use super::command::{self, CommandError, XTABLES_LOCK_WAIT};
use ipnet::IpNet;

use super::{BackendError, BanBackend, Held, ban_target, held_unknown, host_key};
use crate::process::Finished;

/// The comment that marks our rules.
pub const RULE_COMMENT: &str = "portsentry";

/// The chain our rules (and the ipset backend's rule) go into.
pub(super) const CHAIN: &str = "INPUT";

/// The tool for an address family.
pub(super) fn tool(v6: bool) -> &'static str {
    if v6 { "ip6tables" } else { "iptables" }
}

/// Runs `iptables`/`ip6tables -w SECS args`.
pub(super) fn xtables(v6: bool, args: &[&str]) -> Result<Finished, CommandError> {
    let mut all = vec!["-w", XTABLES_LOCK_WAIT];
    all.extend_from_slice(args);
    command::run(tool(v6), &all, None)
}

/// Whether the rule `spec` (without the chain) is in `INPUT`: `-C` exits 0 when it is, 1
/// when it is not; anything else (2: bad parameters, e.g. an unknown set) is an error.
pub(super) fn rule_exists(v6: bool, spec: &[&str]) -> Result<bool, CommandError> {
    let mut args = vec!["-C", CHAIN];
    args.extend_from_slice(spec);
    let out = xtables(v6, &args)?;
    match out.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(command::failure(out)),
    }
}

/// Bans by one DROP rule per address; see the module documentation.
#[derive(Debug, Default)]
pub struct IptablesBackend {
    _private: (),
}

impl IptablesBackend {
    pub fn new() -> Self {
        IptablesBackend::default()
    }

    /// Whether `iptables -S INPUT` and `ip6tables -S INPUT` both answer.
    pub fn available() -> bool {
        [false, true]
            .into_iter()
            .all(|v6| xtables(v6, &["-S", CHAIN]).is_ok_and(|o| o.success()))
    }

    /// Our rules in one family, one entry per rule (duplicates repeat).
    fn rules(&self, v6: bool) -> Result<Vec<IpAddr>, BackendError> {
        let text = xtables(v6, &["-S", CHAIN])
            .and_then(command::ok)
            .map_err(BackendError::ListRules)?;
        Ok(parse_our_rules(&text))
    }

    fn delete(&self, addr: IpAddr) -> Result<(), BackendError> {
        let a = addr.to_string();
        let mut args = vec!["-D", CHAIN];
        args.extend_from_slice(&rule_spec(&a));
        xtables(addr.is_ipv6(), &args)
            .and_then(command::ok)
            .map(drop)
            .map_err(|source| BackendError::DeleteRule { addr, source })
    }
}

/// The rule for `addr` as given to `-I`, `-C` and `-D`.
fn rule_spec(addr: &str) -> [&str; 8] {
    [
        "-s",
        addr,
        "-j",
        "DROP",
        "-m",
        "comment",
        "--comment",
        RULE_COMMENT,
    ]
}

/// The addresses of our rules in `iptables -S INPUT` output, in rule order, one per rule.
fn parse_our_rules(text: &str) -> Vec<IpAddr> {
    text.lines().filter_map(parse_our_rule).collect()
}

fn parse_our_rule(line: &str) -> Option<IpAddr> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let [
        "-A",
        CHAIN,
        "-s",
        source,
        "-m",
        "comment",
        "--comment",
        comment,
        "-j",
        "DROP",
    ] = words.as_slice()
    else {
        return None;
    };
    if comment.trim_matches('"') != RULE_COMMENT {
        return None;
    }
    let (addr, len) = source.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let host_len = if addr.is_ipv4() { "32" } else { "128" };
    (len == host_len).then_some(addr)
}

impl BanBackend for IptablesBackend {
    fn name(&self) -> &'static str {
        "iptables"
    }

    /// Nothing to install: each ban is a rule of its own.
    fn prepare(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Inserts the rule unless it is already there; the timeout is ignored (the daemon
    /// removes the rule at expiry).
    fn add(&mut self, key: IpNet, _timeout: Option<Duration>) -> Result<(), BackendError> {
        let addr = ban_target(host_key(key)?)?;
        let a = addr.to_string();
        let spec = rule_spec(&a);
        let v6 = addr.is_ipv6();
        let insert_err = |source| BackendError::InsertRule { addr, source };
        if rule_exists(v6, &spec).map_err(insert_err)? {
            return Ok(());
        }
        let mut args = vec!["-I", CHAIN];
        args.extend_from_slice(&spec);
        xtables(v6, &args)
            .and_then(command::ok)
            .map(drop)
            .map_err(insert_err)
    }

    /// Deletes every copy of our rule for `addr` (an older run or a second daemon may
    /// have inserted it twice).
    fn remove(&mut self, key: IpNet) -> Result<bool, BackendError> {
        let addr = ban_target(host_key(key)?)?;
        let copies = self
            .rules(addr.is_ipv6())?
            .into_iter()
            .filter(|&a| a == addr)
            .count();
        for _ in 0..copies {
            self.delete(addr)?;
        }
        Ok(copies > 0)
    }

    /// Our rules' addresses; a rule has no timeout ([`super::Expiry::Unknown`]).
    fn list(&mut self) -> Result<Vec<Held>, BackendError> {
        let mut all = self.rules(false)?;
        all.extend(self.rules(true)?);
        let mut seen = std::collections::HashSet::new();
        all.retain(|a| seen.insert(*a));
        Ok(held_unknown(all))
    }

    fn expires_by_itself(&self) -> bool {
        false
    }

    fn teardown(&mut self) -> Result<(), BackendError> {
        for v6 in [false, true] {
            for addr in self.rules(v6)? {
                self.delete(addr)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rules_of_our_exact_shape_are_ours() {
        let text = "\
-P INPUT ACCEPT
-A INPUT -s 198.18.0.2/32 -m comment --comment portsentry -j DROP
-A INPUT -s 198.18.0.3/32 -m comment --comment \"portsentry\" -j DROP
-A INPUT -s 198.18.0.2/32 -m comment --comment portsentry -j DROP
-A INPUT -s fd00:5e17::2/128 -m comment --comment portsentry -j DROP
-A INPUT -s 198.18.0.0/24 -m comment --comment portsentry -j DROP
-A INPUT -s 198.18.0.4/32 -m comment --comment portsentry -j ACCEPT
-A INPUT -s 198.18.0.5/32 -m comment --comment \"portsentry two\" -j DROP
-A INPUT -s 198.18.0.6/32 -m comment --comment other -j DROP
-A INPUT -s 198.18.0.7/32 -j DROP
-A INPUT -s 198.18.0.8/32 -p tcp -m comment --comment portsentry -j DROP
-A INPUT -i lo -s 198.18.0.9/32 -m comment --comment portsentry -j DROP
-A FORWARD -s 198.18.0.10/32 -m comment --comment portsentry -j DROP
-A INPUT -s fd00:5e17::/64 -m comment --comment portsentry -j DROP
-A INPUT -m set --match-set portsentry4 src -j DROP
";
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            parse_our_rules(text),
            vec![
                ip("198.18.0.2"),
                ip("198.18.0.3"),
                ip("198.18.0.2"),
                ip("fd00:5e17::2"),
            ]
        );
        assert!(parse_our_rules("").is_empty());
    }

    #[test]
    fn rule_spec_is_what_iptables_prints_back() {
        assert_eq!(
            rule_spec("198.18.0.2").join(" "),
            "-s 198.18.0.2 -j DROP -m comment --comment portsentry"
        );
    }
}
