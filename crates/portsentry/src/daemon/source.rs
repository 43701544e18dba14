//! Probe sources: where the capture loop gets its probes. Each source turns kernel
//! bytes into classified, mode-checked [`Probe`]s, so the loop never knows which one
//! it reads; a new source is one more implementation of [`ProbeSource`].
//!
//! - [`NflogSource`]: our nftables trap rules already matched the port, excluded ports
//!   with a local socket, and (on the fast path) banned the source on this packet; the
//!   NFLOG prefix says which, and it travels with the probe (`Probe::verdict`): banned,
//!   only logged, or dropped without a ban (known peer, past the ban budget, full set).
//! - [`PacketSource`]: AF_PACKET with a BPF filter, the engine's classifier (ACK and
//!   Maimon probes recognised by our RST answer), the mode's watch list, a live
//!   sock_diag check of ports in use, and known peers from the same socket table (a
//!   probe from one gets `Verdict::KnownPeer`).
//! - [`ListenerSource`](super::listener::ListenerSource): sockets bound on the classic
//!   modes' ports and the handshake trap ports (completed connections, datagrams).
//! - [`Combined`]: several of them in one loop, waited on with one `poll`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use portsentry_engine::classify::{self, Classifier};
use portsentry_engine::wire::{self, ParseStats};
use portsentry_engine::{Evidence, Millis, Probe, Verdict};
use portsentry_kernel::listen;
use portsentry_kernel::nflog::NflogReader;
use portsentry_kernel::nft;
use portsentry_kernel::packet::PacketSensor;
use portsentry_kernel::sock_diag::PortUsage;

use super::known_peers::KnownPeers;
use crate::clock;
use crate::settings::Settings;

/// Packets read per turn of the capture loop before housekeeping runs.
pub const PACKETS_PER_TURN: usize = 256;

/// Counters of what the sources read and dropped, logged at stop.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub parse: ParseStats,
    /// Packet path: probes to a port with a local socket (a service's clients).
    pub in_use_skipped: u64,
    /// Packet path: the socket table could not be read, so the probe was not judged.
    pub usage_errors: u64,
}

/// Where probes come from.
pub trait ProbeSource {
    /// Wait up to `timeout` for packets; true when some are ready.
    fn wait(&self, timeout: Duration) -> io::Result<bool>;

    /// Read up to one turn's worth of packets (`now`: when they were read) and append
    /// the probes among them, for the modes `settings` runs, to `out`.
    fn read(
        &mut self,
        now: Millis,
        settings: &Settings,
        stats: &mut SourceStats,
        out: &mut Vec<Probe>,
    ) -> io::Result<()>;

    /// Packets the kernel dropped because we did not read them fast enough.
    fn kernel_losses(&self) -> u64;

    /// The descriptor that is readable when [`read`](Self::read) has work, for
    /// [`Combined`] to wait on several sources at once.
    fn wait_fd(&self) -> BorrowedFd<'_>;
}

/// Several sources read in one loop: one `poll` over all their descriptors, then each
/// reads its turn's worth (each is bounded by itself).
pub struct Combined {
    parts: Vec<Box<dyn ProbeSource>>,
}

impl Combined {
    /// One source as it is; several as one. `None` for none.
    pub fn of(mut parts: Vec<Box<dyn ProbeSource>>) -> Option<Box<dyn ProbeSource>> {
        match parts.len() {
            0 => None,
            1 => Some(parts.remove(0)),
            _ => Some(Box::new(Combined { parts })),
        }
    }
}

impl ProbeSource for Combined {
    fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let fds: Vec<BorrowedFd<'_>> = self.parts.iter().map(|p| p.wait_fd()).collect();
        listen::wait_any(&fds, timeout)
    }

    fn read(
        &mut self,
        now: Millis,
        settings: &Settings,
        stats: &mut SourceStats,
        out: &mut Vec<Probe>,
    ) -> io::Result<()> {
        for part in &mut self.parts {
            part.read(now, settings, stats, out)?;
        }
        Ok(())
    }

    fn kernel_losses(&self) -> u64 {
        self.parts.iter().map(|p| p.kernel_losses()).sum()
    }

    fn wait_fd(&self) -> BorrowedFd<'_> {
        // Never nested (`of` builds one level); the first part stands for all.
        self.parts[0].wait_fd()
    }
}

/// Probes trapped by our nftables rules, read from their NFLOG group.
pub struct NflogSource {
    reader: NflogReader,
}

impl NflogSource {
    pub fn new(reader: NflogReader) -> Self {
        NflogSource { reader }
    }
}

impl ProbeSource for NflogSource {
    fn wait(&self, timeout: Duration) -> io::Result<bool> {
        self.reader.wait(timeout)
    }

    fn read(
        &mut self,
        _now: Millis,
        settings: &Settings,
        stats: &mut SourceStats,
        out: &mut Vec<Probe>,
    ) -> io::Result<()> {
        self.reader.drain(|packet| {
            let parsed = wire::parse_ip(packet.payload);
            stats.parse.record(&parsed);
            let Ok(segment) = parsed else { return };
            let Some(mut probe) = classify::classify_trapped(&segment) else {
                return;
            };
            // The kernel matched the port already; the mode must exist.
            if settings.mode(probe.proto()).is_none() {
                return;
            }
            probe.verdict = verdict_of(packet.prefix);
            out.push(probe);
        })?;
        Ok(())
    }

    fn kernel_losses(&self) -> u64 {
        self.reader.overruns()
    }

    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.reader.as_fd()
    }
}

/// What the kernel did with a trapped packet, from the NFLOG prefix of its rule.
fn verdict_of(prefix: &str) -> Verdict {
    match prefix {
        nft::PREFIX_BANNED => Verdict::KernelBanned,
        nft::PREFIX_PEER => Verdict::KnownPeer,
        nft::PREFIX_OVER_BUDGET => Verdict::OverBudget,
        nft::PREFIX_SET_FULL => Verdict::SetFull,
        _ => Verdict::Observed,
    }
}

/// Probes seen on the packet socket (hosts without nftables).
pub struct PacketSource {
    sensor: PacketSensor,
    classifier: Classifier,
    usage: PortUsage,
    /// Known peers from the socket table (`None`: `known_peer_time` is 0).
    known: Option<KnownPeers>,
    /// Packets the kernel dropped so far ([`ProbeSource::kernel_losses`]).
    lost: std::cell::Cell<u64>,
}

impl PacketSource {
    pub fn new(sensor: PacketSensor, usage: PortUsage, known: Option<KnownPeers>) -> Self {
        PacketSource {
            sensor,
            classifier: Classifier::new(Classifier::DEFAULT_PENDING_CAPACITY),
            usage,
            known,
            lost: std::cell::Cell::new(0),
        }
    }

    /// Read the socket table's connected peers when due (at most once a second, and
    /// at each turn, so that short connections are seen too).
    fn refresh_known(&mut self, now: Millis, stats: &mut SourceStats) {
        let Some(known) = self.known.as_mut() else {
            return;
        };
        if !known.reading_due(now) {
            return;
        }
        match self.usage.connected_peers() {
            Ok(peers) => known.saw(now, peers),
            Err(_) => stats.usage_errors += 1,
        }
    }
}

impl ProbeSource for PacketSource {
    fn wait(&self, timeout: Duration) -> io::Result<bool> {
        self.sensor.wait(timeout)
    }

    fn read(
        &mut self,
        now: Millis,
        settings: &Settings,
        stats: &mut SourceStats,
        out: &mut Vec<Probe>,
    ) -> io::Result<()> {
        self.refresh_known(now, stats);
        for _ in 0..PACKETS_PER_TURN {
            let Some(captured) = self.sensor.recv_next()? else {
                break;
            };
            let parsed = wire::parse_ip(captured.bytes);
            stats.parse.record(&parsed);
            let Ok(segment) = parsed else { continue };
            let Some(mut probe) = self.classifier.classify(now, captured.direction, &segment)
            else {
                continue;
            };
            let Some(mode) = settings.mode(probe.proto()) else {
                continue;
            };
            // A classic mode's hits come from its own sockets.
            if mode.kind == crate::settings::ModeKind::Classic || !mode.watch.contains(probe.dport)
            {
                continue;
            }
            match self
                .usage
                .in_use(probe.proto(), probe.dport, clock::instant())
            {
                Ok(true) => {
                    stats.in_use_skipped += 1;
                    continue;
                }
                Ok(false) => {}
                Err(_) => {
                    // Without the socket table a service's client cannot be told from
                    // a scanner; staying silent is safer than banning clients.
                    stats.usage_errors += 1;
                    continue;
                }
            }
            // A peer that completed a connection with us: possibly forged, never a ban.
            // (A completed handshake is verified evidence and keeps its verdict.)
            if probe.evidence() == Evidence::Unverified
                && self
                    .known
                    .as_ref()
                    .is_some_and(|k| k.contains(now, probe.src))
            {
                probe.verdict = Verdict::KnownPeer;
            }
            out.push(probe);
        }
        Ok(())
    }

    fn kernel_losses(&self) -> u64 {
        // PACKET_STATISTICS resets on each read: kept as a running total, so that the
        // metrics can read it while running and the statistics line at stop still has
        // all of them.
        let new = self.sensor.take_stats().map(|k| k.dropped).unwrap_or(0);
        self.lost.set(self.lost.get() + new);
        self.lost.get()
    }

    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.sensor.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_prefix_has_its_verdict() {
        assert_eq!(verdict_of(nft::PREFIX_BANNED), Verdict::KernelBanned);
        assert_eq!(verdict_of(nft::PREFIX_OBSERVED), Verdict::Observed);
        assert_eq!(verdict_of(nft::PREFIX_PEER), Verdict::KnownPeer);
        assert_eq!(verdict_of(nft::PREFIX_OVER_BUDGET), Verdict::OverBudget);
        assert_eq!(verdict_of(nft::PREFIX_SET_FULL), Verdict::SetFull);
        assert_eq!(verdict_of("something else "), Verdict::Observed);
    }
}
