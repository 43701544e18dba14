//! The stealth sensor: one AF_PACKET socket over every interface (also ones that
//! appear after start, since the socket is bound to no interface) with the classic BPF
//! filter from [`crate::bpf`], so that only possible probes are copied to user space.
//!
//! The filter is attached before the socket is bound to a protocol, so not one
//! unfiltered packet is ever queued.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use portsentry_engine::classify::Direction;

use crate::bpf::{self, SockFilter};
use crate::netlink::fd::{force_recv_buffer, setsockopt};
use crate::netlink::wait_readable;

const ETH_P_ALL: u16 = 0x0003;
/// Kernel receive buffer: room for a burst of ~16k filtered packets while the capture
/// thread is busy.
const RECEIVE_BUFFER_BYTES: usize = 4 << 20;

/// A packet handed to the parser: its bytes (from the IP header) and its direction.
pub struct Captured<'a> {
    pub bytes: &'a [u8],
    pub direction: Direction,
}

/// Kernel-side counters of the packet socket (PACKET_STATISTICS).
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketStats {
    pub received: u64,
    pub dropped: u64,
}

pub struct PacketSensor {
    /// Interface names whose packets are read (2.x's `-i`); empty: every one.
    only: Vec<String>,
    /// Whether each interface index seen so far is one of `only`, by name (an interface
    /// that appears later, or is renamed away, is judged when its first packet comes;
    /// bounded by the host's interfaces).
    judged: std::collections::HashMap<i32, bool>,
    fd: OwnedFd,
    buffer: Box<[u8; 2048]>,
}

impl AsFd for PacketSensor {
    /// The packet socket: readable when packets are queued.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl PacketSensor {
    /// Open the sensor for probes to ports `1..=max_port`.
    pub fn open(max_port: u16) -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked before use.
        let raw =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let loopback = loopback_ifindex();
        let program: Vec<SockFilter> = bpf::probe_filter(max_port, loopback);
        let fprog = libc::sock_fprog {
            len: u16::try_from(program.len()).map_err(|_| io::Error::other("filter too long"))?,
            filter: program.as_ptr() as *mut libc::sock_filter,
        };
        setsockopt(fd.as_fd(), libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)?;
        // Refuse to have the filter detached or replaced behind our back.
        setsockopt(
            fd.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_LOCK_FILTER,
            &1 as &libc::c_int,
        )?;
        force_recv_buffer(fd.as_fd(), RECEIVE_BUFFER_BYTES);

        // SAFETY: zeroed sockaddr_ll is a valid "any interface" address.
        let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ALL.to_be();
        addr.sll_ifindex = 0;
        // SAFETY: addr is a valid sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSensor {
            only: Vec::new(),
            judged: std::collections::HashMap::new(),
            fd,
            buffer: Box::new([0u8; 2048]),
        })
    }

    /// Read only the packets of these interfaces (by name, as nftables' `iifname`
    /// matches; 2.x's `-i`); empty: every interface but loopback. A name no interface
    /// has yet is watched once it appears ([`absent_interfaces`] tells which).
    pub fn only_interfaces(&mut self, names: &[String]) {
        self.only = names.to_vec();
        self.judged.clear();
    }

    /// Whether packets of interface `index` are read.
    fn watches(&mut self, index: i32) -> bool {
        if self.only.is_empty() {
            return true;
        }
        if let Some(&yes) = self.judged.get(&index) {
            return yes;
        }
        let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
        // SAFETY: `name` has the IF_NAMESIZE bytes if_indextoname writes at most.
        let found = unsafe { libc::if_indextoname(index as libc::c_uint, name.as_mut_ptr()) };
        let yes = !found.is_null() && {
            // SAFETY: on success if_indextoname wrote a NUL-terminated name.
            let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
            self.only.iter().any(|n| n.as_bytes() == name.to_bytes())
        };
        // An index that has no name now is judged again next time (it may be new).
        if !found.is_null() {
            self.judged.insert(index, yes);
        }
        yes
    }

    /// Wait up to `timeout` for packets to be readable; `Ok(false)`: none yet (the
    /// time ran out, or a signal came: see [`wait_readable`]).
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        wait_readable(self.fd.as_fd(), timeout)
    }

    /// Read one packet without blocking; None when the queue is empty. Packets that are
    /// neither addressed to this host nor sent by it are skipped.
    pub fn recv_next(&mut self) -> io::Result<Option<Captured<'_>>> {
        loop {
            // SAFETY: zeroed sockaddr_ll is valid storage for recvfrom.
            let mut from: libc::sockaddr_ll = unsafe { zeroed() };
            let mut from_len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buffer and address storage are valid for the lengths passed.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    self.buffer.as_mut_ptr().cast(),
                    self.buffer.len(),
                    libc::MSG_DONTWAIT,
                    &mut from as *mut libc::sockaddr_ll as *mut libc::sockaddr,
                    &mut from_len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(None),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            let direction = match from.sll_pkttype {
                libc::PACKET_HOST => Direction::Inbound,
                libc::PACKET_OUTGOING => Direction::Outbound,
                _ => continue,
            };
            if !self.watches(from.sll_ifindex) {
                continue;
            }
            let len = usize::try_from(n).unwrap_or(0).min(self.buffer.len());
            return Ok(Some(Captured {
                bytes: &self.buffer[..len],
                direction,
            }));
        }
    }

    /// Kernel counters since the last call (the kernel resets them on read).
    pub fn take_stats(&self) -> io::Result<SocketStats> {
        // SAFETY: tpacket_stats is plain data.
        let mut stats: libc::tpacket_stats = unsafe { zeroed() };
        let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: valid storage of the given length.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut stats as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SocketStats {
            received: u64::from(stats.tp_packets),
            dropped: u64::from(stats.tp_drops),
        })
    }
}

/// The names among `names` that no interface of this network namespace has now.
pub fn absent_interfaces(names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|n| {
            std::ffi::CString::new(n.as_str())
                // SAFETY: a NUL-terminated string that outlives the call.
                .map(|c| unsafe { libc::if_nametoindex(c.as_ptr()) } == 0)
                .unwrap_or(true)
        })
        .cloned()
        .collect()
}

/// Interface index of `lo` in this network namespace (1 on Linux, but asked, not assumed).
fn loopback_ifindex() -> u32 {
    // SAFETY: a NUL-terminated C string literal.
    let index = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    if index == 0 { 1 } else { index }
}
