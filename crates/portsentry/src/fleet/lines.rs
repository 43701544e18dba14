//! The text of every line the fleet link logs (one place, as `alerts` for the rest).

use ipnet::IpNet;

pub fn connected(url: &str, node: &str, stream: &str, from: &str) -> String {
    format!("fleet: connected to {url} as node {node} (stream {stream}, reading after {from})")
}

pub fn lost(url: &str, error: &str) -> String {
    format!(
        "fleet: cannot reach {url}: {error}; bans are still made here and queued for the fleet; retrying with back-off"
    )
}

pub fn back(url: &str) -> String {
    format!("fleet: connection to {url} is back")
}

pub fn rejected(id: &str, why: &str) -> String {
    format!(
        "fleet: rejected stream entry {id}: {why} (further rejections are counted, logged at most once a minute)"
    )
}

pub fn rate_limited(origin: &str, rate: u32, burst: u32) -> String {
    format!(
        "fleet: node {origin} sends more than {rate} bans a second (burst {burst}): its bans are dropped (rate-limited) until it slows down"
    )
}

pub fn applied(net: IpNet, origin: &str, secs: u64, evidence: &str) -> String {
    format!("fleet: {net} banned for {secs}s on the word of node {origin} ({evidence})")
}

pub fn quorum_applied(net: IpNet, nodes: &[String], secs: u64) -> String {
    format!(
        "fleet: {net} banned for {secs}s: reported by {} nodes ({}) (unverified, k of n)",
        nodes.len(),
        nodes.join(", ")
    )
}

pub fn refused(net: IpNet, origin: &str, why: &str) -> String {
    format!("fleet: refused the ban of {net} from node {origin}: {why}")
}

pub fn not_applied(net: IpNet, origin: &str, why: &str) -> String {
    format!("fleet: cannot apply the ban of {net} from node {origin}: {why}")
}

pub fn unbanned(net: IpNet, origin: &str) -> String {
    format!("fleet: ban on {net} lifted on the word of node {origin}")
}

pub fn revoked(subject: &str, by: &str, count: usize) -> String {
    format!("fleet: every ban from node {subject} revoked by node {by}: {count} lifted here")
}

pub fn queue_full() -> String {
    "fleet: the queue to the fleet is full: bans are still made here, but some are not shared (counted)".into()
}
