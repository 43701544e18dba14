//! The kernel fast path: our own nftables table `inet portsentry` (name configurable)
//! whose trap rules ban a source in the kernel on the very packet that hits a trap.
//!
//! Owns: rendering the table ([`ruleset`]), applying it as one atomic `nft -f -`
//! transaction and verifying it by reading it back ([`Nft`]), and writing ban set
//! elements over netlink without forking ([`BanSetWriter`]).
//!
//! Invariants:
//! - only `inet <table>` is ever created, changed or deleted; nothing else in the
//!   host's ruleset is touched, read-only listings aside;
//! - bans outlive the daemon and a re-apply: applying never flushes the ban sets, and a
//!   clean stop ([`Nft::remove_traps`]) keeps the sets and their drop rules, so bans
//!   keep expiring in the kernel while the daemon is down;
//! - when a changed definition cannot be applied in place (for instance a new hook
//!   priority: the kernel cannot change it on an existing chain, or a set change an
//!   older kernel refuses), [`Nft::apply`] rebuilds the table in one transaction and
//!   carries the host bans over with their remaining time (and the protected list), see
//!   [`Applied::Rebuilt`]; network bans (`bannednet4/6`) are not carried, the daemon puts
//!   them back from its state file right after, and the UDP flow memory starts empty;
//! - `nft` is forked only for rare events (apply, verify, remove, protected list,
//!   network bans); a host ban from the user-space decision path is one netlink batch.

mod netlink;
pub mod ruleset;

use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;

use crate::process::{Finished, ProcessError, Run};
pub use netlink::{
    BanSetWriter, ChainInfo, KernelError, MAX_TIMEOUT_MS, SetInfo, TableListing, kernel_errno,
};
pub use ruleset::{
    BanBudget, COUNTER_KNOWN_PEER, COUNTER_OVER_BUDGET, COUNTER_SET_FULL, DEFAULT_KNOWN_PEER_SIZE,
    DEFAULT_PRIORITY, DEFAULT_SET_SIZE, DEFAULT_TABLE, PREFIX_BANNED, PREFIX_OBSERVED,
    PREFIX_OVER_BUDGET, PREFIX_PEER, PREFIX_SET_FULL, TrapSpec, merge_nets, render_ruleset,
    valid_interface_name, valid_table_name,
};
use ruleset::{
    CHAIN_INPUT, CHAIN_OBSERVE, SET_BANNED4, SET_BANNED6, SET_PROTECTED4, SET_PROTECTED6,
};

/// How long one `nft` run may take (a rebuild with a million bans parses a big file).
const NFT_TIMEOUT: Duration = Duration::from_secs(120);

/// One element of a ban set as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelBan {
    pub addr: IpAddr,
    /// The element's timeout (its own or the set's default); `None` = permanent.
    pub timeout: Option<Duration>,
    /// Time left; `None` = never expires.
    pub expires: Option<Duration>,
}

/// One element of a network ban set (`bannednet4`/`bannednet6`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetBan {
    pub net: ipnet::IpNet,
    /// The element's timeout; `None` = permanent.
    pub timeout: Option<Duration>,
    /// Time left; `None` = never expires.
    pub expires: Option<Duration>,
}

/// The elements of one `nft -j list set` of a network ban set. An element is
/// `{"prefix": {...}}`, or `{"elem": {"val": {"prefix": ...}, "timeout": S, "expires": S}}`
/// when it carries a timeout, or a bare address string.
fn parse_net_bans(objects: &[Value]) -> Vec<NetBan> {
    let secs = |v: &Value| v.as_u64().map(Duration::from_secs);
    objects
        .iter()
        .filter_map(|o| o["set"]["elem"].as_array())
        .flatten()
        .filter_map(|elem| {
            let (val, timeout, expires) = match elem.get("elem") {
                Some(e) => (&e["val"], secs(&e["timeout"]), secs(&e["expires"])),
                None => (elem, None, None),
            };
            let net = if let Some(p) = val.get("prefix") {
                let addr = p["addr"].as_str().unwrap_or_default();
                let len = p["len"].as_u64().unwrap_or(0);
                format!("{addr}/{len}").parse().ok()
            } else {
                val.as_str()
                    .and_then(|a| a.parse::<IpAddr>().ok())
                    .map(ipnet::IpNet::from)
            }?;
            // An element with a timeout but no `expires` is about to go.
            let expires = expires.or(timeout.map(|_| Duration::ZERO));
            Some(NetBan {
                net,
                timeout,
                expires,
            })
        })
        .collect()
}

/// What [`Nft::apply`] had to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Table created, or updated in place (sets and their elements untouched).
    InPlace,
    /// The existing table could not take the new definition in place, so it was
    /// deleted and recreated in one transaction, with `bans` host ban elements and
    /// `protected` protected entries carried over (network bans are restored by the
    /// caller from its state file). Bans the kernel added between our reading and the
    /// transaction (milliseconds) are lost.
    Rebuilt { bans: usize, protected: usize },
}

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("invalid nftables table name {0:?} (a letter, then letters, digits, '_')")]
    InvalidName(String),
    #[error("the ruleset is for table {spec:?}, not {ours:?}")]
    TableMismatch { ours: String, spec: String },
    #[error("cannot run nft ({op}): {source}")]
    Run { op: &'static str, source: io::Error },
    #[error("nft did not finish within {0:?} ({1})")]
    Timeout(Duration, &'static str),
    #[error("applying table inet {table} failed: {stderr}")]
    Apply { table: String, stderr: String },
    #[error("table inet {table} is not as applied: {problem}")]
    Verify { table: String, problem: String },
    #[error("deleting table inet {table} failed: {stderr}")]
    Remove { table: String, stderr: String },
    #[error("removing the traps of table inet {table} failed: {stderr}")]
    RemoveTraps { table: String, stderr: String },
    #[error("setting the protected sets of table inet {table} failed: {stderr}")]
    SetProtected { table: String, stderr: String },
    #[error("listing table inet {table} failed: {stderr}")]
    List { table: String, stderr: String },
    #[error("reading the ban sets of table inet {table} failed: {source}")]
    ListBans { table: String, source: io::Error },
    #[error("writing network bans to table inet {table} failed: {stderr}")]
    NetBans { table: String, stderr: String },
}

fn nft_binary() -> &'static str {
    ["/usr/sbin/nft", "/sbin/nft", "/usr/local/sbin/nft"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nft")
}

/// Runs `nft args…` with `stdin`, bounded by [`NFT_TIMEOUT`]. `Err` only when it could
/// not be run or timed out; a refusal is a [`Finished`] for the caller to judge.
fn run_nft(op: &'static str, args: &[&str], stdin: Option<&str>) -> Result<Finished, NftError> {
    let mut run = Run::new(nft_binary(), args, NFT_TIMEOUT);
    if let Some(text) = stdin {
        run = run.stdin(text.as_bytes());
    }
    run.run().map_err(|e| match e {
        ProcessError::Spawn { source, .. } | ProcessError::Io { source, .. } => {
            NftError::Run { op, source }
        }
        ProcessError::TimedOut { .. } => NftError::Timeout(NFT_TIMEOUT, op),
    })
}

/// Runs `text` as one atomic transaction (`nft -f -`). `Ok(Err(stderr))`: nft refused
/// it (nothing changed), with what it said, trimmed.
fn transact(op: &'static str, text: &str) -> Result<Result<(), String>, NftError> {
    let out = run_nft(op, &["-f", "-"], Some(text))?;
    Ok(if out.success() {
        Ok(())
    } else {
        Err(stderr(&out))
    })
}

fn stderr(out: &Finished) -> String {
    out.stderr.trim().to_string()
}

/// The objects of `nft -j` output (`{"nftables": [ {"table": …}, {"set": …}, … ]}`).
fn json_objects(stdout: &str) -> Result<Vec<Value>, String> {
    let v: Value = serde_json::from_str(stdout).map_err(|e| format!("nft -j output: {e}"))?;
    match v.get("nftables") {
        Some(Value::Array(items)) => Ok(items.clone()),
        _ => Err("nft -j output without an \"nftables\" array".into()),
    }
}

/// Our table through `nft`. Every method names `inet <table>` only.
#[derive(Debug, Clone)]
pub struct Nft {
    table: String,
}

impl Nft {
    pub fn new(table: &str) -> Result<Self, NftError> {
        if !valid_table_name(table) {
            return Err(NftError::InvalidName(table.to_string()));
        }
        Ok(Nft {
            table: table.to_string(),
        })
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Whether the `nft` binary runs (`nft --version`) and the kernel's nf_tables
    /// answers (a netlink query for a table). Not `nft list tables`: nft 1.0.6 reads
    /// every set element for it, minutes with a million bans in our sets.
    pub fn available() -> bool {
        run_nft("version", &["--version"], None).is_ok_and(|o| o.success())
            && BanSetWriter::open(DEFAULT_TABLE).is_ok_and(|mut w| w.table_exists().is_ok())
    }

    /// Whether our table exists: one netlink query, no fork (the capture loop asks
    /// every few seconds, whatever the number of bans).
    pub fn exists(&self) -> Result<bool, NftError> {
        let err = |source| NftError::ListBans {
            table: self.table.clone(),
            source,
        };
        BanSetWriter::open(&self.table)
            .map_err(err)?
            .table_exists()
            .map_err(err)
    }

    /// Applies `spec` as one atomic transaction, then verifies it. Ban elements and
    /// the protected list are kept; if the table cannot take the definition in place
    /// it is rebuilt with them carried over (see [`Applied::Rebuilt`]).
    pub fn apply(&self, spec: &TrapSpec) -> Result<Applied, NftError> {
        if spec.table != self.table {
            return Err(NftError::TableMismatch {
                ours: self.table.clone(),
                spec: spec.table.clone(),
            });
        }
        let text = render_ruleset(spec);
        let Err(refused) = transact("apply", &text)? else {
            self.verify(spec)?;
            return Ok(Applied::InPlace);
        };
        if !self.exists()? {
            return Err(NftError::Apply {
                table: self.table.clone(),
                stderr: refused,
            });
        }
        // The existing table refused the new definition: rebuild it.
        match self.rebuild(&text) {
            Ok(applied) => {
                self.verify(spec)?;
                Ok(applied)
            }
            Err(e) => Err(NftError::Apply {
                table: self.table.clone(),
                stderr: format!("{refused}; rebuilding the table failed too: {e}"),
            }),
        }
    }

    /// `delete table` + the new table + every current ban (its remaining time as
    /// timeout) + the protected entries, in one transaction. nft 1.0.6 cannot write a
    /// permanent element into a set with a default timeout, so permanent bans go in
    /// with the default and are made permanent over netlink right after.
    fn rebuild(&self, ruleset: &str) -> Result<Applied, NftError> {
        let t = &self.table;
        let bans = self.list_bans()?;
        let protected = self.protected_elements()?;
        let mut text = format!("delete table inet {t}\n");
        text.push_str(ruleset);
        let mut count = 0;
        for (set, v4) in [(SET_BANNED4, true), (SET_BANNED6, false)] {
            let items: Vec<String> = bans
                .iter()
                .filter(|b| b.addr.is_ipv4() == v4)
                .map(|b| match b.expires {
                    Some(left) => format!("{} timeout {}", b.addr, ruleset::nft_duration(left)),
                    None => b.addr.to_string(),
                })
                .collect();
            count += items.len();
            for chunk in items.chunks(4096) {
                let _ = writeln!(
                    text,
                    "add element inet {t} {set} {{ {} }}",
                    chunk.join(", ")
                );
            }
        }
        let mut protected_count = 0;
        for (set, items) in [
            (SET_PROTECTED4, &protected.0),
            (SET_PROTECTED6, &protected.1),
        ] {
            protected_count += items.len();
            if !items.is_empty() {
                let _ = writeln!(
                    text,
                    "add element inet {t} {set} {{ {} }}",
                    items.join(", ")
                );
            }
        }
        transact("rebuild", &text)?.map_err(|stderr| NftError::Apply {
            table: t.clone(),
            stderr,
        })?;
        let permanent: Vec<(IpAddr, Option<Duration>)> = bans
            .iter()
            .filter(|b| b.expires.is_none())
            .map(|b| (b.addr, None))
            .collect();
        if !permanent.is_empty() {
            BanSetWriter::open(t)
                .and_then(|mut w| w.add_many(&permanent))
                .map_err(|e| NftError::Apply {
                    table: t.clone(),
                    stderr: format!("making {} bans permanent again: {e}", permanent.len()),
                })?;
        }
        Ok(Applied::Rebuilt {
            bans: count,
            protected: protected_count,
        })
    }

    /// The protected sets' elements in nft syntax (`a`, `a/len`, `a-b`), v4 and v6.
    fn protected_elements(&self) -> Result<(Vec<String>, Vec<String>), NftError> {
        let mut out = (Vec::new(), Vec::new());
        for set in [SET_PROTECTED4, SET_PROTECTED6] {
            let objects = self.list_json("list", &["list", "set", "inet", &self.table, set])?;
            let into = if set == SET_PROTECTED4 {
                &mut out.0
            } else {
                &mut out.1
            };
            for elem in objects
                .iter()
                .filter_map(|o| o.get("set"))
                .filter_map(|s| s.get("elem").and_then(Value::as_array))
                .flatten()
            {
                let text = match elem {
                    Value::String(a) => Some(a.clone()),
                    Value::Object(o) => {
                        if let Some(p) = o.get("prefix") {
                            p.get("addr")
                                .and_then(Value::as_str)
                                .zip(p.get("len").and_then(Value::as_u64))
                                .map(|(a, l)| format!("{a}/{l}"))
                        } else if let Some(Value::Array(r)) = o.get("range") {
                            match (
                                r.first().and_then(Value::as_str),
                                r.get(1).and_then(Value::as_str),
                            ) {
                                (Some(a), Some(b)) => Some(format!("{a}-{b}")),
                                _ => None,
                            }
                        } else {
                            None
                        }
                    }
                    _ => None,
                };
                match text {
                    Some(t) => into.push(t),
                    None => {
                        return Err(NftError::List {
                            table: self.table.clone(),
                            stderr: format!("unexpected element {elem} in set {set}"),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// The objects of `nft -j args…` (`op` names the run in errors).
    fn list_json(&self, op: &'static str, args: &[&str]) -> Result<Vec<Value>, NftError> {
        let mut all = vec!["-j"];
        all.extend_from_slice(args);
        let out = run_nft(op, &all, None)?;
        if !out.success() {
            return Err(NftError::List {
                table: self.table.clone(),
                stderr: stderr(&out),
            });
        }
        json_objects(&out.stdout).map_err(|stderr| NftError::List {
            table: self.table.clone(),
            stderr,
        })
    }

    /// Reads the table back over netlink (sets without their elements, chains, rules:
    /// `nft -t -j list table` would read every element, minutes with a million bans)
    /// and checks the sets (type, flags, timeout, size), the base chain (hook,
    /// priority, policy) and the number of rules of our three chains against `spec`.
    pub fn verify(&self, spec: &TrapSpec) -> Result<(), NftError> {
        let listing = BanSetWriter::open(&self.table)
            .and_then(|mut w| w.read_table())
            .map_err(|source| NftError::ListBans {
                table: self.table.clone(),
                source,
            })?;
        let objects = listing_objects(&listing);
        let problem = |p: String| NftError::Verify {
            table: self.table.clone(),
            problem: p,
        };
        check_table(&objects, spec, &ruleset::plan(spec)).map_err(problem)
    }

    /// Deletes our table (and with it every ban). Ok if it does not exist.
    pub fn remove(&self) -> Result<(), NftError> {
        if !self.exists()? {
            return Ok(());
        }
        let out = run_nft(
            "delete table",
            &["delete", "table", "inet", &self.table],
            None,
        )?;
        if out.success() || !self.exists()? {
            return Ok(());
        }
        Err(NftError::Remove {
            table: self.table.clone(),
            stderr: stderr(&out),
        })
    }

    /// Clean daemon stop: the trap and observe rules go, the ban sets, the protected
    /// sets and the rules dropping banned sources stay, so bans keep being enforced
    /// and expiring while the daemon is stopped. Ok if the table does not exist.
    pub fn remove_traps(&self) -> Result<(), NftError> {
        if !self.exists()? {
            return Ok(());
        }
        let text = ruleset::render_remove_traps(&self.table);
        transact("remove traps", &text)?.map_err(|stderr| NftError::RemoveTraps {
            table: self.table.clone(),
            stderr,
        })
    }

    /// Replaces the content of `protected4`/`protected6` in one transaction.
    /// Duplicates and overlaps are merged first (an interval set refuses overlaps).
    pub fn set_protected(&self, nets: &[ipnet::IpNet]) -> Result<(), NftError> {
        let text = ruleset::render_protected(&self.table, nets);
        transact("set protected", &text)?.map_err(|stderr| NftError::SetProtected {
            table: self.table.clone(),
            stderr,
        })
    }

    /// Add (or replace) network bans in `bannednet4`/`bannednet6`, in one
    /// transaction; `None` = permanent. Used for prefix grouping: rare, so forking
    /// `nft` is fine here.
    pub fn add_net_bans(&self, bans: &[(ipnet::IpNet, Option<Duration>)]) -> Result<(), NftError> {
        if bans.is_empty() {
            return Ok(());
        }
        let text = ruleset::render_net_bans(&self.table, bans);
        transact("add network bans", &text)?.map_err(|stderr| self.net_bans_error(stderr))
    }

    /// Remove network bans (absent ones are not an error).
    pub fn remove_net_bans(&self, nets: &[ipnet::IpNet]) -> Result<(), NftError> {
        if nets.is_empty() {
            return Ok(());
        }
        let text = ruleset::render_net_unbans(&self.table, nets);
        transact("remove network bans", &text)?.map_err(|stderr| self.net_bans_error(stderr))
    }

    fn net_bans_error(&self, stderr: String) -> NftError {
        NftError::NetBans {
            table: self.table.clone(),
            stderr,
        }
    }

    /// The networks in `bannednet4`/`bannednet6`, with their timeout and time left
    /// (whole seconds: `nft -j` rounds).
    pub fn list_net_bans(&self) -> Result<Vec<NetBan>, NftError> {
        let mut nets = Vec::new();
        for set in [ruleset::SET_BANNEDNET4, ruleset::SET_BANNEDNET6] {
            let objects = self.list_json(
                "list network bans",
                &["list", "set", "inet", &self.table, set],
            )?;
            nets.extend(parse_net_bans(&objects));
        }
        Ok(nets)
    }

    /// Whether `addr` is in the known-peer set of its family: one netlink lookup
    /// (`nft get element` would read every element of the table first: minutes with a
    /// million bans, on the thread that answers the control socket). No such set (known
    /// peers off): false.
    pub fn is_known_peer(&self, addr: IpAddr) -> Result<bool, NftError> {
        match BanSetWriter::open(&self.table).and_then(|mut w| w.lookup_known_peers(&[addr])) {
            Ok(found) => Ok(!found.is_empty()),
            Err(e) if kernel_errno(&e) == Some(libc::ENOENT) => Ok(false),
            Err(source) => Err(NftError::ListBans {
                table: self.table.clone(),
                source,
            }),
        }
    }

    /// Every address in the known-peer sets (both families).
    pub fn known_peers(&self) -> Result<Vec<IpAddr>, NftError> {
        let mut out = Vec::new();
        for set in [ruleset::SET_KNOWNPEER4, ruleset::SET_KNOWNPEER6] {
            let objects = self.list_json(
                "list known peers",
                &["list", "set", "inet", &self.table, set],
            )?;
            out.extend(parse_net_bans(&objects).into_iter().map(|n| n.net.addr()));
        }
        Ok(out)
    }

    /// Packets counted so far by the named counter `name` of our table (one of
    /// [`COUNTER_OVER_BUDGET`], [`COUNTER_SET_FULL`], [`COUNTER_KNOWN_PEER`]).
    pub fn counter(&self, name: &str) -> Result<u64, NftError> {
        let objects = BanSetWriter::open(&self.table)
            .and_then(|mut w| w.read_objects())
            .map_err(|source| NftError::ListBans {
                table: self.table.clone(),
                source,
            })?;
        objects
            .iter()
            .find(|o| o.name == name)
            .and_then(|o| o.packets)
            .ok_or_else(|| NftError::List {
                table: self.table.clone(),
                stderr: format!("no counter {name}"),
            })
    }

    /// The elements of `banned4` and `banned6` with their timeout and time left
    /// (millisecond precision, read over netlink: `nft -j` rounds to seconds).
    pub fn list_bans(&self) -> Result<Vec<KernelBan>, NftError> {
        let err = |source| NftError::ListBans {
            table: self.table.clone(),
            source,
        };
        BanSetWriter::open(&self.table)
            .map_err(err)?
            .list()
            .map_err(err)
    }
}

/// A netlink [`TableListing`] as the objects of `nft -t -j list table inet T` (the
/// fields [`check_table`] reads: set type, flags, timeout in whole seconds, size;
/// chain type, hook, prio, policy; each rule's chain).
fn listing_objects(listing: &TableListing) -> Vec<Value> {
    use serde_json::json;
    let mut out = Vec::new();
    for set in &listing.sets {
        let ty = match set.key_type {
            7 => "ipv4_addr".to_string(),
            8 => "ipv6_addr".to_string(),
            n => format!("type {n}"),
        };
        let flags: Vec<&str> = [
            (0x2, "constant"),
            (0x4, "interval"),
            (0x8, "map"),
            (0x10, "timeout"),
            (0x20, "dynamic"),
        ]
        .into_iter()
        .filter(|(bit, _)| set.flags & bit != 0)
        .map(|(_, name)| name)
        .collect();
        let mut v = json!({"name": set.name, "type": ty, "flags": flags});
        if set.timeout_ms > 0 {
            v["timeout"] = json!(set.timeout_ms / 1000);
        }
        if let Some(size) = set.size {
            v["size"] = json!(size);
        }
        out.push(json!({ "set": v }));
    }
    for obj in &listing.objects {
        match (obj.kind, obj.limit) {
            (netlink::NFT_OBJECT_COUNTER, _) => out.push(json!({"counter": {"name": obj.name}})),
            (netlink::NFT_OBJECT_LIMIT, Some((rate, unit, burst))) => {
                let per = match unit {
                    1 => "second",
                    60 => "minute",
                    3600 => "hour",
                    86_400 => "day",
                    _ => "unknown",
                };
                out.push(
                    json!({"limit": {"name": obj.name, "rate": rate, "per": per, "burst": burst}}),
                );
            }
            _ => {}
        }
    }
    for chain in &listing.chains {
        let mut v = json!({"name": chain.name});
        if let Some(kind) = &chain.kind {
            v["type"] = json!(kind);
        }
        if let Some((num, prio)) = chain.hook {
            let hook = [
                "prerouting",
                "input",
                "forward",
                "output",
                "postrouting",
                "ingress",
            ]
            .get(num as usize)
            .copied()
            .unwrap_or("unknown");
            v["hook"] = json!(hook);
            v["prio"] = json!(prio);
        }
        if let Some(policy) = chain.policy {
            v["policy"] = json!(if policy == 1 { "accept" } else { "drop" });
        }
        out.push(json!({ "chain": v }));
    }
    for chain in &listing.rule_chains {
        out.push(json!({"rule": {"chain": chain}}));
    }
    out
}

/// The checks of [`Nft::verify`] on parsed `nft -t -j list table` output.
fn check_table(objects: &[Value], spec: &TrapSpec, plan: &ruleset::Plan) -> Result<(), String> {
    let sets: Vec<&Value> = objects.iter().filter_map(|o| o.get("set")).collect();
    let find_set = |name: &str| {
        sets.iter()
            .find(|s| s.get("name").and_then(Value::as_str) == Some(name))
            .copied()
            .ok_or_else(|| format!("set {name} is missing"))
    };
    let has_flag = |set: &Value, flag: &str| {
        set.get("flags")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|x| x.as_str() == Some(flag)))
    };
    // nft -j gives set timeouts in whole seconds.
    let want_timeout = ruleset::nft_duration(spec.ban_timeout);
    let want_secs = spec.ban_timeout.as_secs();
    for (name, ty) in [(SET_BANNED4, "ipv4_addr"), (SET_BANNED6, "ipv6_addr")] {
        let set = find_set(name)?;
        if set.get("type").and_then(Value::as_str) != Some(ty) {
            return Err(format!("set {name} is not of type {ty}"));
        }
        if !has_flag(set, "timeout") {
            return Err(format!("set {name} lacks the timeout flag"));
        }
        let secs = set.get("timeout").and_then(Value::as_u64).unwrap_or(0);
        if secs != want_secs && !(want_secs == 0 && secs <= 1) {
            return Err(format!(
                "set {name} has timeout {secs}s, expected {want_timeout}"
            ));
        }
        let size = set.get("size").and_then(Value::as_u64);
        if size != Some(u64::from(spec.set_size)) {
            return Err(format!(
                "set {name} has size {size:?}, expected {}",
                spec.set_size
            ));
        }
    }
    for (name, ty) in [(SET_PROTECTED4, "ipv4_addr"), (SET_PROTECTED6, "ipv6_addr")] {
        let set = find_set(name)?;
        if set.get("type").and_then(Value::as_str) != Some(ty) || !has_flag(set, "interval") {
            return Err(format!("set {name} is not an interval set of {ty}"));
        }
    }
    for (name, ty) in [
        (ruleset::SET_BANNEDNET4, "ipv4_addr"),
        (ruleset::SET_BANNEDNET6, "ipv6_addr"),
    ] {
        let set = find_set(name)?;
        if set.get("type").and_then(Value::as_str) != Some(ty)
            || !has_flag(set, "interval")
            || !has_flag(set, "timeout")
        {
            return Err(format!(
                "set {name} is not an interval set of {ty} with timeouts"
            ));
        }
    }
    let peer_secs = spec.known_peer_time.map_or(86_400, |t| t.as_secs());
    for (name, ty) in [
        (ruleset::SET_KNOWNPEER4, "ipv4_addr"),
        (ruleset::SET_KNOWNPEER6, "ipv6_addr"),
    ] {
        let set = find_set(name)?;
        let secs = set.get("timeout").and_then(Value::as_u64).unwrap_or(0);
        if set.get("type").and_then(Value::as_str) != Some(ty)
            || !has_flag(set, "timeout")
            || secs != peer_secs
        {
            return Err(format!(
                "set {name} is not a set of {ty} with timeout {peer_secs}s"
            ));
        }
    }
    let limit = objects
        .iter()
        .filter_map(|o| o.get("limit"))
        .find(|l| l.get("name").and_then(Value::as_str) == Some(ruleset::LIMIT_BUDGET));
    match (spec.ban_budget, limit) {
        (None, None) => {}
        (Some(b), Some(l)) => {
            let rate = l.get("rate").and_then(Value::as_u64);
            let per = l.get("per").and_then(Value::as_str);
            // nft -j leaves out a burst equal to its default (5).
            let burst = l.get("burst").and_then(Value::as_u64).unwrap_or(5);
            if rate != Some(u64::from(b.rate.max(1)))
                || per != Some("second")
                || burst != u64::from(b.burst.max(1))
            {
                return Err(format!(
                    "limit {} is {l}, expected {}/second burst {}",
                    ruleset::LIMIT_BUDGET,
                    b.rate,
                    b.burst
                ));
            }
        }
        (Some(_), None) => return Err(format!("limit {} is missing", ruleset::LIMIT_BUDGET)),
        (None, Some(_)) => {
            return Err(format!(
                "limit {} is there without a ban budget",
                ruleset::LIMIT_BUDGET
            ));
        }
    }
    for name in [
        ruleset::COUNTER_OVER_BUDGET,
        ruleset::COUNTER_SET_FULL,
        ruleset::COUNTER_KNOWN_PEER,
    ] {
        let found = objects
            .iter()
            .filter_map(|o| o.get("counter"))
            .any(|c| c.get("name").and_then(Value::as_str) == Some(name));
        if !found {
            return Err(format!("counter {name} is missing"));
        }
    }
    let chains: Vec<&Value> = objects.iter().filter_map(|o| o.get("chain")).collect();
    let chain = |name: &str| {
        chains
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
            .copied()
            .ok_or_else(|| format!("chain {name} is missing"))
    };
    let input = chain(CHAIN_INPUT)?;
    let field = |c: &Value, k: &str| c.get(k).cloned().unwrap_or(Value::Null);
    if field(input, "hook") != "input"
        || field(input, "type") != "filter"
        || field(input, "prio") != spec.priority
        || field(input, "policy") != "accept"
    {
        return Err(format!(
            "chain {CHAIN_INPUT} is not `type filter hook input priority {}; policy accept`: {input}",
            spec.priority
        ));
    }
    let output = chain(ruleset::CHAIN_OUTPUT)?;
    if field(output, "hook") != "output" {
        return Err(format!(
            "chain {} is not an output hook chain: {output}",
            ruleset::CHAIN_OUTPUT
        ));
    }
    for name in [
        CHAIN_OBSERVE,
        ruleset::CHAIN_TRAP,
        ruleset::CHAIN_BAN,
        ruleset::CHAIN_OVER_BUDGET,
        ruleset::CHAIN_PEER,
        ruleset::CHAIN_PEER_LOG,
    ] {
        if chain(name)?.get("hook").is_some() {
            return Err(format!("chain {name} must not be a base chain"));
        }
    }
    match (spec.early_drop, chain(ruleset::CHAIN_EARLY)) {
        (true, Ok(early)) => {
            if field(early, "hook") != "prerouting"
                || field(early, "prio") != ruleset::EARLY_PRIORITY
                || field(early, "policy") != "accept"
            {
                return Err(format!(
                    "chain {} is not `type filter hook prerouting priority {}; policy accept`: {early}",
                    ruleset::CHAIN_EARLY,
                    ruleset::EARLY_PRIORITY
                ));
            }
        }
        (true, Err(e)) => return Err(e),
        (false, Ok(_)) => {
            return Err(format!(
                "chain {} is there without early drop",
                ruleset::CHAIN_EARLY
            ));
        }
        (false, Err(_)) => {}
    }
    for (name, rules) in plan.chains() {
        let want = rules.len();
        let got = objects
            .iter()
            .filter_map(|o| o.get("rule"))
            .filter(|r| r.get("chain").and_then(Value::as_str) == Some(name))
            .count();
        if got != want {
            return Err(format!("chain {name} has {got} rules, expected {want}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod kernel_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TrapSpec {
        TrapSpec {
            table: "pst".into(),
            tcp_ports: Some(vec![(1, 1023)]),
            udp_ports: None,
            ban_tcp: true,
            ban_udp: true,
            ban_timeout: Duration::from_secs(3600),
            nflog_group: 5,
            set_size: 1000,
            priority: -10,
            known_peer_time: Some(Duration::from_secs(86_400)),
            known_peer_size: 1000,
            ban_budget: None,
            early_drop: false,
            interfaces: Vec::new(),
        }
    }

    /// Trimmed `nft -t -j list table` of nft 1.0.6 (the flag list omits `dynamic`).
    fn listing(prio: i64, input_rules: usize) -> String {
        let mut items = vec![
            r#"{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}"#.to_string(),
            r#"{"table": {"family": "inet", "name": "pst", "handle": 1}}"#.to_string(),
            r#"{"set": {"family": "inet", "name": "banned4", "table": "pst", "type": "ipv4_addr", "handle": 1, "size": 1000, "flags": ["timeout"], "timeout": 3600}}"#.to_string(),
            r#"{"set": {"family": "inet", "name": "banned6", "table": "pst", "type": "ipv6_addr", "handle": 2, "size": 1000, "flags": ["timeout"], "timeout": 3600}}"#.to_string(),
            r#"{"set": {"family": "inet", "name": "bannednet4", "table": "pst", "type": "ipv4_addr", "handle": 7, "size": 1000, "flags": ["interval", "timeout"]}}"#.to_string(),
            r#"{"set": {"family": "inet", "name": "bannednet6", "table": "pst", "type": "ipv6_addr", "handle": 8, "size": 1000, "flags": ["interval", "timeout"]}}"#.to_string(),
            r#"{"set": {"family": "inet", "name": "protected4", "table": "pst", "type": "ipv4_addr", "handle": 3, "flags": ["interval"]}}"#.to_string(),
            r#"{"set": {"family": "inet", "name": "protected6", "table": "pst", "type": "ipv6_addr", "handle": 4, "flags": ["interval"]}}"#.to_string(),
            format!(r#"{{"chain": {{"family": "inet", "table": "pst", "name": "input", "handle": 5, "type": "filter", "hook": "input", "prio": {prio}, "policy": "accept"}}}}"#),
            r#"{"chain": {"family": "inet", "table": "pst", "name": "observe", "handle": 6}}"#.to_string(),
            format!(r#"{{"chain": {{"family": "inet", "table": "pst", "name": "output", "handle": 9, "type": "filter", "hook": "output", "prio": {prio}, "policy": "accept"}}}}"#),
            r#"{"set": {"family": "inet", "name": "knownpeer4", "table": "pst", "type": "ipv4_addr", "handle": 10, "size": 1000, "flags": ["timeout"], "timeout": 86400}}"#.to_string(),
            r#"{"set": {"family": "inet", "name": "knownpeer6", "table": "pst", "type": "ipv6_addr", "handle": 11, "size": 1000, "flags": ["timeout"], "timeout": 86400}}"#.to_string(),
        ];
        for name in ["over_budget", "set_full", "known_peer"] {
            items.push(format!(r#"{{"counter": {{"family": "inet", "name": "{name}", "table": "pst", "handle": 12, "packets": 0, "bytes": 0}}}}"#));
        }
        let plan = ruleset::plan(&spec());
        let mut handle = 100;
        for (chain, rules) in plan.chains() {
            if chain != "input" && chain != "observe" && chain != "output" {
                items.push(format!(r#"{{"chain": {{"family": "inet", "table": "pst", "name": "{chain}", "handle": {handle}}}}}"#));
                handle += 1;
            }
            let n = if chain == "input" {
                input_rules
            } else {
                rules.len()
            };
            for _ in 0..n {
                items.push(format!(r#"{{"rule": {{"family": "inet", "table": "pst", "chain": "{chain}", "handle": {handle}, "expr": []}}}}"#));
                handle += 1;
            }
        }
        format!(r#"{{"nftables": [{}]}}"#, items.join(", "))
    }

    #[test]
    fn verify_accepts_the_listing_of_what_was_applied() {
        let s = spec();
        let plan = ruleset::plan(&s);
        assert_eq!((plan.input.len(), plan.observe.len()), (9, 2));
        let objects = json_objects(&listing(-10, 9)).unwrap();
        check_table(&objects, &s, &plan).unwrap();
        // A budget needs its limit object, early drop its chain.
        let mut other = s.clone();
        other.ban_budget = Some(BanBudget { rate: 2, burst: 5 });
        let e = check_table(&objects, &other, &ruleset::plan(&other)).unwrap_err();
        assert_eq!(e, "limit ban_budget is missing");
        let mut with_limit = objects.clone();
        with_limit.push(
            serde_json::from_str(r#"{"limit": {"family": "inet", "name": "ban_budget", "table": "pst", "rate": 2, "per": "second"}}"#)
                .unwrap(),
        );
        check_table(&with_limit, &other, &ruleset::plan(&s)).unwrap();
        other.ban_budget = Some(BanBudget { rate: 2, burst: 9 });
        let e = check_table(&with_limit, &other, &ruleset::plan(&s)).unwrap_err();
        assert!(e.contains("expected 2/second burst 9"), "{e}");
        let mut early = s.clone();
        early.early_drop = true;
        let e = check_table(&objects, &early, &ruleset::plan(&s)).unwrap_err();
        assert_eq!(e, "chain early is missing");
    }

    #[test]
    fn verify_names_what_differs() {
        let s = spec();
        let plan = ruleset::plan(&s);
        let e = check_table(&json_objects(&listing(0, 9)).unwrap(), &s, &plan).unwrap_err();
        assert!(e.contains("priority -10"), "{e}");
        let e = check_table(&json_objects(&listing(-10, 8)).unwrap(), &s, &plan).unwrap_err();
        assert_eq!(e, "chain input has 8 rules, expected 9");
        let mut other = s.clone();
        other.set_size = 5;
        let e = check_table(&json_objects(&listing(-10, 9)).unwrap(), &other, &plan).unwrap_err();
        assert_eq!(e, "set banned4 has size Some(1000), expected 5");
        other = s.clone();
        other.ban_timeout = Duration::from_secs(60);
        let e = check_table(&json_objects(&listing(-10, 9)).unwrap(), &other, &plan).unwrap_err();
        assert_eq!(e, "set banned4 has timeout 3600s, expected 60s");
        let no_sets = r#"{"nftables": [{"table": {"family": "inet", "name": "pst"}}]}"#;
        let e = check_table(&json_objects(no_sets).unwrap(), &s, &plan).unwrap_err();
        assert_eq!(e, "set banned4 is missing");
        assert!(json_objects("{}").is_err());
        assert!(json_objects("not json").is_err());
    }

    #[test]
    fn network_bans_are_read_with_their_time() {
        let json = json_objects(
            r#"{"nftables": [{"metainfo": {}}, {"set": {"name": "bannednet4", "elem": [
                {"prefix": {"addr": "198.18.1.0", "len": 24}},
                {"elem": {"val": {"prefix": {"addr": "198.18.2.0", "len": 24}}, "timeout": 3600, "expires": 3599}},
                "198.18.3.4",
                {"elem": {"val": "198.18.3.5", "timeout": 60}}
            ]}}]}"#,
        )
        .unwrap();
        let s = Duration::from_secs;
        let net = |t: &str| t.parse::<ipnet::IpNet>().unwrap();
        assert_eq!(
            parse_net_bans(&json),
            vec![
                NetBan {
                    net: net("198.18.1.0/24"),
                    timeout: None,
                    expires: None
                },
                NetBan {
                    net: net("198.18.2.0/24"),
                    timeout: Some(s(3600)),
                    expires: Some(s(3599))
                },
                NetBan {
                    net: net("198.18.3.4/32"),
                    timeout: None,
                    expires: None
                },
                NetBan {
                    net: net("198.18.3.5/32"),
                    timeout: Some(s(60)),
                    expires: Some(Duration::ZERO)
                },
            ]
        );
        assert!(parse_net_bans(&[]).is_empty());
    }

    #[test]
    fn names_are_checked() {
        assert!(matches!(
            Nft::new("bad name"),
            Err(NftError::InvalidName(_))
        ));
        assert!(BanSetWriter::open("x;y").is_err());
        let nft = Nft::new("pst").unwrap();
        let mut s = spec();
        s.table = "other".into();
        assert!(matches!(nft.apply(&s), Err(NftError::TableMismatch { .. })));
    }
}
