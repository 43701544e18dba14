//! A forged-source probe sender for tests and benchmarks (feature `testns`): TCP SYNs
//! (or UDP datagrams) with source addresses drawn from a given prefix, at a paced rate,
//! for a bounded time, through a raw socket of the calling thread's network namespace.
//!
//! Why our own and not `hping3 --rand-source`: hping3 forges *any* IPv4 address, and
//! TESTING.md allows forged sources only inside the test ranges. This sender refuses a
//! source prefix or a target outside [`TEST_NETS`](crate::testns::TEST_NETS) before it
//! opens a socket, and every loop is bounded by the duration and the packet count.
//!
//! Run it only on a thread that has entered a test namespace
//! (`NamedNetns::run_in`/`thread`), or through the `flood` example under
//! `ip netns exec`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::testns::assert_test_addr;

/// What to send.
#[derive(Debug, Clone)]
pub struct Flood {
    /// Where the probes go (a test address of the defender).
    pub target: IpAddr,
    /// The prefix forged sources are drawn from (same family as `target`).
    pub sources: IpNet,
    /// Destination ports, cycled through.
    pub dports: Vec<u16>,
    /// UDP datagrams instead of TCP SYNs.
    pub udp: bool,
    /// Packets per second (paced in 1 ms steps).
    pub rate: u32,
    /// How long to send.
    pub duration: Duration,
    /// Seed of the source-address sequence (the same seed gives the same sources).
    pub seed: u64,
}

/// What was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Packets the kernel accepted for sending.
    pub packets: u64,
    /// Sends the kernel refused (e.g. ENOBUFS under a full queue).
    pub refused: u64,
    /// Time spent sending.
    pub elapsed: Duration,
}

impl Flood {
    /// Sends the flood; returns when `duration` is over. Panics if the target or the
    /// source prefix is outside the test ranges, or the families differ.
    pub fn run(&self) -> io::Result<Sent> {
        assert_test_addr(&self.target.to_string());
        assert_test_addr(&self.sources.network().to_string());
        assert_test_addr(&self.sources.broadcast().to_string());
        assert_eq!(
            self.target.is_ipv4(),
            self.sources.addr().is_ipv4(),
            "target and sources must be of one family"
        );
        assert!(!self.dports.is_empty(), "no destination port");
        let sock = raw_socket(self.target.is_ipv4())?;
        let mut draw = Sources::new(self.sources, self.seed);
        let mut packet = Vec::with_capacity(80);
        let (mut sent, mut refused) = (0u64, 0u64);
        let start = Instant::now();
        let max_packets = u64::from(self.rate).saturating_mul(self.duration.as_secs() + 1);
        let mut i = 0usize;
        while start.elapsed() < self.duration && sent + refused < max_packets {
            let due = (start.elapsed().as_secs_f64() * f64::from(self.rate)) as u64;
            while sent + refused < due.min(max_packets) {
                let src = draw.next_addr();
                let dport = self.dports[i % self.dports.len()];
                i = i.wrapping_add(1);
                let sport = 1024 + (draw.next_u64() % 60_000) as u16;
                build(
                    &mut packet,
                    src,
                    self.target,
                    sport,
                    dport,
                    self.udp,
                    &mut draw,
                );
                match send_to(&sock, &packet, self.target) {
                    Ok(()) => sent += 1,
                    Err(_) => refused += 1,
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Sent {
            packets: sent,
            refused,
            elapsed: start.elapsed(),
        })
    }
}

/// A raw socket that takes whole IP packets (`IPPROTO_RAW`: header included; for IPv6
/// `IPV6_HDRINCL`, Linux 4.5+), so the source address is ours to write.
fn raw_socket(v4: bool) -> io::Result<OwnedFd> {
    let family = if v4 { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new, valid descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    if !v4 {
        const IPV6_HDRINCL: libc::c_int = 36;
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a pointer to a live c_int and its size.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IPV6,
                IPV6_HDRINCL,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(sock)
}

fn send_to(sock: &OwnedFd, packet: &[u8], target: IpAddr) -> io::Result<()> {
    let rc = match SocketAddr::new(target, 0) {
        SocketAddr::V4(a) => {
            let sa = sockaddr_v4(a);
            // SAFETY: the buffer and the sockaddr outlive the call; sizes are theirs.
            unsafe {
                libc::sendto(
                    sock.as_raw_fd(),
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            let sa = sockaddr_v6(a);
            // SAFETY: as above.
            unsafe {
                libc::sendto(
                    sock.as_raw_fd(),
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&sa as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn sockaddr_v4(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn sockaddr_v6(a: SocketAddrV6) -> libc::sockaddr_in6 {
    libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: 0,
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr {
            s6_addr: a.ip().octets(),
        },
        sin6_scope_id: 0,
    }
}

/// Source addresses inside a prefix, each host part at most once per cycle: a
/// full-period linear congruential sequence modulo 2^host_bits (multiplier ≡ 1 mod 4,
/// odd increment), skipping the all-zeros and all-ones host parts. A flood thus
/// touches as many distinct sources as it sends packets, up to the prefix's size.
struct Sources {
    net: IpNet,
    mask: u64,
    host: u64,
    /// A separate xorshift stream for ports, sequence numbers and IP ids.
    noise: u64,
}

impl Sources {
    fn new(net: IpNet, seed: u64) -> Self {
        let host_bits = u32::from(net.max_prefix_len() - net.prefix_len()).min(63);
        Sources {
            net: net.trunc(),
            mask: (1u64 << host_bits) - 1,
            host: seed,
            noise: seed | 1,
        }
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.noise;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.noise = x;
        x
    }

    fn next_addr(&mut self) -> IpAddr {
        const A: u64 = 6_364_136_223_846_793_005;
        const C: u64 = 1_442_695_040_888_963_407;
        // At most two steps: only two host parts are skipped.
        for _ in 0..3 {
            self.host = self.host.wrapping_mul(A).wrapping_add(C) & self.mask;
            if self.mask < 3 || (self.host != 0 && self.host != self.mask) {
                break;
            }
        }
        let host = self.host;
        match self.net.network() {
            IpAddr::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n) | host as u32)),
            IpAddr::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n) | u128::from(host))),
        }
    }
}

/// One whole packet: IP header, then a TCP SYN (20 bytes) or an empty UDP datagram.
fn build(
    out: &mut Vec<u8>,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    udp: bool,
    draw: &mut Sources,
) {
    out.clear();
    let l4 = if udp {
        let mut h = vec![0u8; 8];
        h[0..2].copy_from_slice(&sport.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[4..6].copy_from_slice(&8u16.to_be_bytes());
        h
    } else {
        let mut h = vec![0u8; 20];
        h[0..2].copy_from_slice(&sport.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[4..8].copy_from_slice(&(draw.next_u64() as u32).to_be_bytes());
        h[12] = 5 << 4; // data offset: 5 words
        h[13] = 0x02; // SYN
        h[14..16].copy_from_slice(&1024u16.to_be_bytes());
        h
    };
    let proto: u8 = if udp { 17 } else { 6 };
    let mut l4 = l4;
    let sum = l4_checksum(src, dst, proto, &l4);
    let at = if udp { 6 } else { 16 };
    l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = (20 + l4.len()) as u16;
            let mut h = [0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&total.to_be_bytes());
            h[4..6].copy_from_slice(&(draw.next_u64() as u16).to_be_bytes());
            h[8] = 64;
            h[9] = proto;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let c = fold(sum_words(&h, 0));
            h[10..12].copy_from_slice(&c.to_be_bytes());
            out.extend_from_slice(&h);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut h = [0u8; 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
            h[6] = proto;
            h[7] = 64;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            out.extend_from_slice(&h);
        }
        _ => unreachable!("families checked in Flood::run"),
    }
    out.extend_from_slice(&l4);
}

fn sum_words(bytes: &[u8], mut acc: u32) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The TCP/UDP checksum over the pseudo-header and the segment (checksum field zero).
fn l4_checksum(src: IpAddr, dst: IpAddr, proto: u8, seg: &[u8]) -> u16 {
    let mut acc = 0u32;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum_words(&s.octets(), acc);
            acc = sum_words(&d.octets(), acc);
            acc = acc.wrapping_add(u32::from(proto));
            acc = acc.wrapping_add(seg.len() as u32);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            acc = sum_words(&s.octets(), acc);
            acc = sum_words(&d.octets(), acc);
            acc = acc.wrapping_add(seg.len() as u32);
            acc = acc.wrapping_add(u32::from(proto));
        }
        _ => unreachable!("families checked in Flood::run"),
    }
    let c = fold(sum_words(seg, acc));
    // A UDP checksum of zero means "none"; send 0xffff instead (RFC 768).
    if c == 0 { 0xffff } else { c }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_stay_inside_their_prefix_and_vary() {
        let net: IpNet = "198.18.128.0/17".parse().unwrap();
        let mut s = Sources::new(net, 7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let a = s.next_addr();
            assert!(net.contains(&a), "{a} outside {net}");
            assert_ne!(a, net.network());
            seen.insert(a);
        }
        assert_eq!(seen.len(), 10_000, "every source distinct within a cycle");
        let v6: IpNet = "fd00:5e17::/64".parse().unwrap();
        let mut s = Sources::new(v6, 3);
        for _ in 0..1000 {
            assert!(v6.contains(&s.next_addr()));
        }
    }

    #[test]
    fn the_ipv4_header_checksum_verifies() {
        let mut s = Sources::new("198.18.0.0/16".parse().unwrap(), 1);
        let mut p = Vec::new();
        build(
            &mut p,
            "198.18.1.2".parse().unwrap(),
            "198.19.0.1".parse().unwrap(),
            4000,
            23,
            false,
            &mut s,
        );
        assert_eq!(p.len(), 40);
        // A header with its checksum sums to 0xffff (folds to zero).
        assert_eq!(fold(sum_words(&p[..20], 0)), 0);
        assert_eq!(p[33], 0x02, "SYN flag");
    }

    #[test]
    #[should_panic(expected = "outside the test ranges")]
    fn a_source_prefix_outside_the_test_ranges_is_refused() {
        let f = Flood {
            target: "198.18.0.1".parse().unwrap(),
            sources: "10.0.0.0/8".parse().unwrap(),
            dports: vec![1],
            udp: false,
            rate: 1,
            duration: Duration::from_millis(1),
            seed: 1,
        };
        let _ = f.run();
    }
}

#[cfg(test)]
mod kernel_tests {
    //! The sender against the real kernel, in a private namespace: what it sends
    //! arrives, from the prefix it was given (counted by an nftables rule).
    use super::*;
    use crate::testns;

    fn counted(ns: &testns::Netns, family: &str, net: &str) -> u64 {
        let text = ns.run(&["nft", "list", "chain", "inet", "floodtest", "input"]);
        let line = text
            .lines()
            .find(|l| l.contains(family) && l.contains(net))
            .unwrap_or_else(|| panic!("no counter rule for {net} in\n{text}"));
        let after = line.split("packets ").nth(1).expect("a counter");
        after.split(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn a_flood_arrives_from_its_prefix_on_both_families() {
        testns::in_private_netns("a_flood_arrives_from_its_prefix", |ns| {
            // Our end of a veth pair holds 198.18.0.1 and fd00:5e17::1.
            let _peer = testns::Peer::new(ns, &["198.18.0.2/24"]);
            ns.run_with_input(
                &["nft", "-f", "-"],
                "table inet floodtest {\n chain input { type filter hook input priority 0;\n  \
                 ip saddr 198.18.128.0/17 tcp flags syn counter\n  \
                 ip6 saddr fd00:5e17::/64 udp dport 53 counter\n }\n}\n",
            );
            let v4 = Flood {
                target: "198.18.0.1".parse().unwrap(),
                sources: "198.18.128.0/17".parse().unwrap(),
                dports: vec![23, 79],
                udp: false,
                rate: 5_000,
                duration: Duration::from_millis(400),
                seed: 11,
            }
            .run()
            .unwrap();
            assert!(v4.packets >= 1_000, "{v4:?}");
            assert_eq!(counted(ns, "ip saddr", "198.18.128.0/17"), v4.packets);
            let v6 = Flood {
                target: "fd00:5e17::1".parse().unwrap(),
                sources: "fd00:5e17::/64".parse().unwrap(),
                dports: vec![53],
                udp: true,
                rate: 2_000,
                duration: Duration::from_millis(300),
                seed: 5,
            }
            .run()
            .unwrap();
            assert!(v6.packets >= 300, "{v6:?}");
            assert_eq!(counted(ns, "ip6 saddr", "fd00:5e17::/64"), v6.packets);
        });
    }
}
