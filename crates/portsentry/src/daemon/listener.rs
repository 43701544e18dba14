//! The listener probe source: sockets bound on the ports of the classic modes (`-tcp`
//! on TCP_PORTS, `-udp` on UDP_PORTS, as PortSentry 1.2 ran them, with ranges and no
//! 64-port cap) and on the handshake trap ports (`[listen] handshake_ports`) beside a
//! stealth or advanced TCP mode.
//!
//! - TCP: a completed handshake, taken from the accept queue, is a
//!   [`ProbeKind::Connect`] probe: the only verified evidence (the source answered our
//!   SYN+ACK, so its address is not forged). PORT_BANNER is written to the connection,
//!   which is then closed, as 1.2 did (not to a source of the ignore list, as 1.2;
//!   unlike 1.2 it is also written below SCAN_TRIGGER, since the engine decides later).
//! - UDP: a datagram is a [`ProbeKind::Udp`] probe. PORT_BANNER answers it only with
//!   `[listen] udp_banner = true`, and then at most `UDP_BANNERS_PER_SECOND` a second:
//!   the sender can be forged, so a reply may go to a victim.
//!
//! Ports another program holds are warned about once at start and skipped, as 1.2 did.
//! The open-file limit is raised for one socket per port. Each loop turn takes at most
//! [`PACKETS_PER_TURN`] connections and datagrams in all, and at most
//! [`PER_SOCKET_PER_TURN`] from one socket, so one busy port cannot starve the others
//! nor the loop's housekeeping; what is left waits in the kernel's bounded queues.
//!
//! With nftables, a packet to one of these ports is owned by our socket, so the trap
//! rules let it through (`socket transparent 0 return`) and the handshake can complete;
//! the ban then comes from the daemon (one netlink batch), and afterwards our table drops
//! the source before any socket sees it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use portsentry_engine::ports::PortSet;
use portsentry_engine::{Millis, Probe, ProbeKind, Proto, Verdict};
use portsentry_kernel::listen::{self, ListenerId, Listeners};

use super::source::{PACKETS_PER_TURN, ProbeSource, SourceStats};
use crate::alerts;
use crate::defaults;
use crate::logger::Logger;
use crate::settings::{ListenPlan, ModeKind, Settings};

/// Connections or datagrams taken from one socket per loop turn.
pub const PER_SOCKET_PER_TURN: usize = 16;
/// Sockets with work looked at per loop turn (the rest are reported again next turn).
const READY_PER_TURN: usize = 64;
/// A port list longer than this is announced in one line, not one line per port
/// (1.2 never listened on more than 64 ports, so its admins never saw more lines).
const PORT_LINES: usize = 64;
/// Bind failures logged one line each; the rest are counted in one line.
const BIND_FAILURE_LINES: usize = 64;
/// A failing socket is reported at most this often.
const ERROR_LINE_INTERVAL: Duration = Duration::from_secs(60);

/// Sockets on trap ports that accept connections or datagrams.
pub struct ListenerSource {
    listeners: Listeners,
    /// PORT_BANNER's bytes; empty: none.
    banner: Vec<u8>,
    udp_banner: bool,
    log: Arc<Logger>,
    ready: Vec<ListenerId>,
    /// The second (of `now`) whose UDP banner budget is being spent, and how much of it.
    banner_second: u64,
    banners_sent: u32,
    last_error_line: Option<Millis>,
}

impl ListenerSource {
    /// Bind every port of the plan that is free, with 1.2's start-up lines; `None` when
    /// the plan has no port. A classic mode of which not one port could be bound stops
    /// start-up, as in 1.2.
    pub fn open(settings: &Settings, log: &Arc<Logger>) -> Result<Option<ListenerSource>> {
        let plan = &settings.listen;
        if plan.is_empty() {
            return Ok(None);
        }
        let mut listeners =
            Listeners::new().context("cannot create the epoll set for the listening sockets")?;
        let room = socket_room(plan, log);
        let mut failures = 0usize;
        let mut opened = 0usize;
        let wanted = plan.tcp.len() + plan.udp.len();
        let mut limit_hit = false;
        // One warning, at the first port that does not fit.
        let mut out_of_descriptors = |proto, port| {
            if !limit_hit {
                limit_hit = true;
                log.log(&alerts::open_file_limit(
                    room_hard(),
                    wanted,
                    Some((proto, port)),
                ));
            }
        };
        for (proto, ports) in [(Proto::Tcp, &plan.tcp), (Proto::Udp, &plan.udp)] {
            if ports.is_empty() {
                continue;
            }
            announce(log, proto, ports, &plan.handshake);
            let classic = settings
                .mode(proto)
                .is_some_and(|m| m.kind == ModeKind::Classic);
            let mut bound_here = 0usize;
            for port in ports.iter() {
                if opened >= room.unwrap_or(usize::MAX) {
                    out_of_descriptors(proto, port);
                    break;
                }
                match listeners.bind(proto, port, defaults::LISTEN_BACKLOG) {
                    Ok(_) => {
                        opened += 1;
                        bound_here += 1;
                    }
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                        out_of_descriptors(proto, port);
                        break;
                    }
                    Err(e) => {
                        failures += 1;
                        if failures <= BIND_FAILURE_LINES {
                            let in_use = e.kind() == io::ErrorKind::AddrInUse;
                            log.log(&alerts::bind_failed(proto, port, in_use, &e));
                        }
                    }
                }
            }
            if classic && bound_here == 0 {
                log.log(&alerts::bind_none(proto));
                bail!(
                    "could not bind any {proto} socket for -{}",
                    proto_flag(proto)
                );
            }
        }
        if failures > BIND_FAILURE_LINES {
            log.log(&alerts::bind_failed_more(failures - BIND_FAILURE_LINES));
        }
        if listeners.is_empty() {
            return Ok(None);
        }
        Ok(Some(ListenerSource {
            listeners,
            banner: plan.banner.clone().unwrap_or_default().into_bytes(),
            udp_banner: plan.udp_banner,
            log: Arc::clone(log),
            ready: Vec::with_capacity(READY_PER_TURN),
            banner_second: 0,
            banners_sent: 0,
            last_error_line: None,
        }))
    }

    /// Whether one more UDP banner may go out in the second of `now`.
    fn take_udp_banner(&mut self, now: Millis) -> bool {
        let second = now.0 / 1000;
        if second != self.banner_second {
            self.banner_second = second;
            self.banners_sent = 0;
        }
        if self.banners_sent >= defaults::UDP_BANNERS_PER_SECOND {
            return false;
        }
        self.banners_sent += 1;
        true
    }

    /// Report a failing socket, at most once per [`ERROR_LINE_INTERVAL`].
    fn error(&mut self, now: Millis, proto: Proto, port: u16, e: &io::Error) {
        if self
            .last_error_line
            .is_some_and(|at| now.since(at) < ERROR_LINE_INTERVAL)
        {
            return;
        }
        self.last_error_line = Some(now);
        self.log.log(&alerts::listen_error(proto, port, e));
    }
}

fn proto_flag(proto: Proto) -> &'static str {
    ModeKind::Classic.flag(proto)
}

/// The hard open-file limit now, for the warning.
fn room_hard() -> u64 {
    listen::raise_open_files(0).map(|l| l.hard).unwrap_or(0)
}

/// How many sockets may be opened: the open-file limit, raised as needed, less what
/// the rest of the daemon keeps. `None`: the limit could not be read (no cap; a bind
/// that runs out of descriptors still stops the binding with the warning).
fn socket_room(plan: &ListenPlan, log: &Logger) -> Option<usize> {
    let wanted = (plan.tcp.len() + plan.udp.len()) as u64;
    match listen::raise_open_files(wanted + defaults::LISTEN_FD_RESERVE) {
        Ok(limit) => {
            let room = limit.soft.saturating_sub(defaults::LISTEN_FD_RESERVE);
            Some(usize::try_from(room).unwrap_or(usize::MAX))
        }
        Err(e) => {
            log.log(&alerts::error(
                "cannot read or raise the open-file limit",
                &e,
            ));
            None
        }
    }
}

/// 1.2's "Going into listen mode" lines (one summary line for a long list), and a
/// line for each handshake trap port.
fn announce(log: &Logger, proto: Proto, ports: &PortSet, handshake: &PortSet) {
    let classic: PortSet = ports.iter().filter(|p| !handshake.contains(*p)).collect();
    if classic.len() > PORT_LINES {
        log.log(&alerts::listen_mode_summary(proto, classic.len(), &classic));
    } else {
        for port in classic.iter() {
            log.log(&alerts::listen_mode(proto, port));
        }
    }
    if proto == Proto::Tcp {
        for port in handshake.iter().take(PORT_LINES) {
            log.log(&alerts::handshake_trap(port));
        }
    }
}

/// The probe of one connection or datagram from `peer` to `local`.
fn probe(peer: SocketAddr, local: SocketAddr, kind: ProbeKind) -> Probe {
    Probe {
        src: peer.ip(),
        dst: local.ip(),
        sport: peer.port(),
        dport: local.port(),
        kind,
        // The socket API shows neither: a connect's first segment is the kernel's.
        ip_options: false,
        ttl: 0,
        verdict: Verdict::Observed,
    }
}

/// The local side of a datagram on a socket bound to every address: its port; the
/// address it was sent to is not asked for (nothing downstream reads it).
fn unspecified_for(peer: &SocketAddr, port: u16) -> SocketAddr {
    let ip = match peer.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, port)
}

impl ProbeSource for ListenerSource {
    fn wait(&self, timeout: Duration) -> io::Result<bool> {
        self.listeners.wait(timeout)
    }

    fn read(
        &mut self,
        now: Millis,
        settings: &Settings,
        _stats: &mut SourceStats,
        out: &mut Vec<Probe>,
    ) -> io::Result<()> {
        self.ready.clear();
        self.listeners.ready(READY_PER_TURN, &mut self.ready)?;
        let mut budget = PACKETS_PER_TURN;
        for i in 0..self.ready.len() {
            let id = self.ready[i];
            let Some((proto, port)) = self.listeners.port(id) else {
                continue;
            };
            // Bound only for a running mode; a probe without one has no response plan.
            if settings.mode(proto).is_none() {
                continue;
            }
            for _ in 0..PER_SOCKET_PER_TURN {
                if budget == 0 {
                    return Ok(());
                }
                match proto {
                    Proto::Tcp => match self.listeners.accept(id) {
                        Ok(Some(conn)) => {
                            budget -= 1;
                            out.push(probe(conn.peer, conn.local, ProbeKind::Connect));
                            // 1.2 closed an ignored host's connection without a banner.
                            let banner = if settings.ignore.contains(conn.peer.ip()) {
                                &[][..]
                            } else {
                                &self.banner[..]
                            };
                            conn.reply_and_close(banner);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            self.error(now, proto, port, &e);
                            break;
                        }
                    },
                    Proto::Udp => match self.listeners.recv(id) {
                        Ok(Some(datagram)) => {
                            budget -= 1;
                            let local = unspecified_for(&datagram.peer, port);
                            out.push(probe(datagram.peer, local, ProbeKind::Udp));
                            if self.udp_banner
                                && !self.banner.is_empty()
                                && !settings.ignore.contains(datagram.peer.ip())
                                && self.take_udp_banner(now)
                            {
                                let _ = self.listeners.send_to(id, datagram.peer, &self.banner);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            self.error(now, proto, port, &e);
                            break;
                        }
                    },
                }
            }
        }
        Ok(())
    }

    fn kernel_losses(&self) -> u64 {
        0
    }

    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.listeners.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portsentry_engine::Evidence;

    #[test]
    fn issue_7_a_connect_is_verified_evidence_and_a_datagram_is_not() {
        let peer: SocketAddr = "198.18.0.2:40000".parse().unwrap();
        let local: SocketAddr = "198.18.0.1:1080".parse().unwrap();
        let p = probe(peer, local, ProbeKind::Connect);
        assert_eq!((p.src, p.sport, p.dport), (peer.ip(), 40000, 1080));
        assert_eq!(p.evidence(), Evidence::Verified);
        assert_eq!(p.verdict, Verdict::Observed);
        let d = probe(peer, unspecified_for(&peer, 161), ProbeKind::Udp);
        assert_eq!(d.evidence(), Evidence::Unverified);
        assert_eq!(d.dst, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    }

    #[test]
    fn udp_banners_are_capped_per_second() {
        // No socket is bound: only the epoll set exists.
        let Ok(listeners) = Listeners::new() else {
            return;
        };
        let mut source = ListenerSource {
            listeners,
            banner: b"x".to_vec(),
            udp_banner: true,
            log: Arc::new(Logger::new(None, false)),
            ready: Vec::new(),
            banner_second: 0,
            banners_sent: 0,
            last_error_line: None,
        };
        let cap = defaults::UDP_BANNERS_PER_SECOND as usize;
        let sent = (0..cap * 3)
            .filter(|i| source.take_udp_banner(Millis(5_000 + *i as u64)))
            .count();
        assert_eq!(sent, cap, "one second: the cap");
        assert!(source.take_udp_banner(Millis(6_000)), "a new second");
    }
}
