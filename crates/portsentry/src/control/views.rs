//! The JSON answers of the control socket and of `portsentry list --json`: the field
//! names are part of the interface (documented in portsentry(8), section JSON OUTPUT),
//! so they only ever gain fields; none is renamed or removed.
//!
//! Times are Unix seconds (`*_at`) or whole seconds from now (`*_in_seconds`,
//! `*_seconds_ago`); `null` means "none" (a permanent ban has no end) or "not known"
//! (the capture thread did not answer in time).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// `portsentry status --json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    pub version: String,
    pub pid: u32,
    pub uptime_seconds: u64,
    /// The detection modes in effect, e.g. `atcp` and `audp`.
    pub modes: Vec<ModeView>,
    /// Where bans go: `nftables`, `ipset`, `iptables`, `route`, or `none` (only the
    /// KILL_* commands act).
    pub backend: String,
    /// Our nftables table (`inet NAME`), when the backend is nftables.
    pub table: Option<String>,
    /// Whether the kernel's trap rule bans on the first packet, per protocol.
    pub fast_path: FastPathView,
    pub bans_in_force: u64,
    pub bans_by_evidence: EvidenceCounts,
    /// Records of the ban book (bans in force and remembered offenders) and its bound.
    pub book_records: u64,
    pub book_capacity: u64,
    pub queues: QueuesView,
    /// The engine's counters, from the capture thread; `null` if it did not answer.
    pub engine: Option<EngineStatsView>,
    /// The fleet link (`[fleet]`); `null` when it is off.
    #[serde(default)]
    pub fleet: Option<FleetView>,
}

/// The fleet link in `status --json`: the counters `portsentry status` prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetView {
    pub url: String,
    pub node: String,
    pub connected: bool,
    /// The last stream entry read (`null` before the first).
    pub last_id: Option<String>,
    /// Between the last entry's stream time and its reading.
    pub lag_ms: u64,
    pub received: u64,
    pub applied: u64,
    pub published: u64,
    /// Bad signature or replayed.
    pub rejected: u64,
    /// Protected address or known peer.
    pub refused: u64,
    pub rate_limited: u64,
    pub expired: u64,
    /// Bans not shared because the publish queue was full.
    pub not_shared: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModeView {
    /// 1.2's flag without the dash: `tcp`, `stcp`, `atcp`, `udp`, `sudp`, `audp`.
    pub name: String,
    /// `tcp` or `udp`.
    pub proto: String,
    /// `block`, `log_only` or `run_cmd_only` (BLOCK_TCP/BLOCK_UDP 1, 0, 2).
    pub response: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FastPathView {
    pub tcp: bool,
    pub udp: bool,
}

/// Bans in force by the class of their evidence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceCounts {
    pub unverified: u64,
    pub verified: u64,
    pub manual: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuesView {
    /// Messages waiting for the reporter thread (engine actions and control requests)
    /// and the queue's bound; actions beyond it are dropped (`dropped_actions`).
    pub reporter_depth: u64,
    pub reporter_capacity: u64,
    /// Outcomes waiting for the capture thread (the engine's owner).
    pub feedback_depth: u64,
    /// Engine actions dropped because the reporter's queue was full, since start.
    pub dropped_actions: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStatsView {
    pub scan_trigger: u32,
    /// (source, protocol) pairs the engine tracks now, and its bound.
    pub tracked_sources: u64,
    pub capacity: u64,
    pub probes: u64,
    pub grace_hits: u64,
    pub alerts: u64,
    pub responses: u64,
    pub ignored: u64,
    pub already_blocked: u64,
    pub possibly_forged: u64,
    pub not_banned_by_kernel: u64,
    pub suppressed_lines: u64,
    pub evictions: u64,
    /// Packets the kernel could not hand to the daemon (NFLOG or packet socket).
    pub kernel_losses: u64,
}

/// One ban of `portsentry list --json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListedBan {
    /// The banned host or network, as CIDR (`198.18.0.2/32`).
    pub address: IpNet,
    /// `unverified`, `verified` or `manual`.
    pub evidence: String,
    pub permanent: bool,
    pub expires_at: Option<u64>,
    pub expires_in_seconds: Option<u64>,
    /// Offence count and reason from the state file; `null` for an element only the
    /// kernel set holds (added by the trap rule since the last save).
    pub offences: Option<u32>,
    pub reason: Option<String>,
    pub in_kernel: bool,
    pub in_state_file: bool,
    /// The nftables table whose daemon owns it (`portsentry`, or the UDP-only
    /// daemon's `portsentry_udp`).
    pub table: String,
}

/// `portsentry list --json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListView {
    pub bans: Vec<ListedBan>,
    /// What could not be read (e.g. the kernel's sets, when nftables is not there).
    pub notes: Vec<String>,
}

/// One record of the ban book: a ban in force, or the last ban of a remembered
/// offender.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BanRecordView {
    pub network: IpNet,
    pub in_force: bool,
    pub offences: u32,
    pub evidence: String,
    pub reason: String,
    pub banned_at: u64,
    pub last_offence_at: u64,
    pub permanent: bool,
    /// When the ban ends, or ended (or was lifted); `null` if permanent.
    pub expires_at: Option<u64>,
    pub expires_in_seconds: Option<u64>,
}

/// What protects an address from bans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectionView {
    /// `ignore_list`, `own_address`, `gateway`, `resolver`, `loopback`, or `extra`
    /// (`[protect] extra` in portsentry.toml).
    pub by: String,
    /// The entry that holds the address.
    pub network: IpNet,
}

/// The engine's state for one (address, protocol).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineSourceView {
    pub proto: String,
    /// Hits counted toward SCAN_TRIGGER (since the last reset).
    pub hits: u32,
    /// `watching` (counting), `responding` (a response runs), `blocked`, `reported`
    /// (the response only logs), `failed` (will be retried).
    pub state: String,
    pub last_port: u16,
    pub last_hit_seconds_ago: u64,
    /// For `blocked`: how much longer the engine treats it as blocked (`null`: for good).
    pub blocked_for_seconds: Option<u64>,
}

/// The engine's view of an address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineExplainView {
    pub scan_trigger: u32,
    /// `ignore_list` or `protected` when the engine never acts on it; else `null`.
    pub exempt: Option<String>,
    pub sources: Vec<EngineSourceView>,
}

/// The reporter's part of an explanation (the bans it owns).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BansExplainView {
    /// Book records of networks that hold the address (the host, a grouped prefix).
    pub records: Vec<BanRecordView>,
}

/// `portsentry explain ADDR --json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExplainView {
    pub address: Option<IpAddr>,
    /// Everything that protects it; empty when nothing does.
    pub protected: Vec<ProtectionView>,
    /// Whether the kernel's known-peer set holds it (`null`: not tracked, e.g. on the
    /// packet-socket path or with known peers off).
    pub known_peer: Option<bool>,
    pub bans: Vec<BanRecordView>,
    /// Its latest lines in HISTORY_FILE (at most 10, oldest first; from the file's last
    /// MiB): every block of it on record, as written when it happened.
    pub history: Vec<String>,
    /// `null` when the capture thread did not answer in time.
    pub engine: Option<EngineExplainView>,
    /// What could not be found out, if anything.
    pub notes: Vec<String>,
}
