//! Parsing of one captured IP packet (IPv4 or IPv6, starting at the IP header: the
//! sensor's AF_PACKET socket is SOCK_DGRAM, so there is no link header) into a small
//! validated [`Segment`]. This is the only place in the engine that touches raw bytes.
//!
//! etherparse is the view layer for the IP header(s) and the IPv6 extension headers
//! (hop-by-hop, routing, destination options, fragment, and AH on either family); the
//! few transport fields we need are read here behind a single length gate.
//!
//! Invariants:
//! - Never panics, on any input; every rejection is a [`ParseError`] the daemon counts.
//! - Only the IP header(s) and the start of the transport header must be present: TCP up
//!   to and including the flags byte (14 bytes), UDP its whole 8-byte header. The capture
//!   may be cut short (the sensor keeps only the first bytes of each packet), so the
//!   payload is never required.
//! - A header that needs bytes beyond the packet's own announced length (IPv4 total
//!   length, IPv6 payload length) is [`ParseError::Malformed`]: no capture length could
//!   make it valid. A header that fits the announced length but not the captured bytes is
//!   [`ParseError::Truncated`]. So every strict prefix of a valid packet that stops inside
//!   its headers is `Truncated`, never `Malformed`.
//! - Bytes past the announced length (Ethernet padding) are ignored.
//! - Checksums are not verified: the TCP/UDP checksum covers a payload we may not have,
//!   and on outbound segments it is filled in by the NIC after capture.

use std::fmt;
use std::net::IpAddr;

use etherparse::err::{LenError, ip_auth, ipv4, ipv6};
use etherparse::{
    IpAuthHeaderSlice, IpNumber, Ipv4HeaderSlice, Ipv6FragmentHeaderSlice, Ipv6HeaderSlice,
    Ipv6RawExtHeaderSlice,
};

use crate::probe::TcpFlags;

/// Bytes of the TCP header we read: ports, sequence and acknowledgement numbers, data
/// offset and flags. Window, checksum, urgent pointer and options are never used.
const TCP_NEEDED: usize = 14;
/// A TCP header cannot be shorter than this (data offset 5).
const TCP_MIN_HEADER: usize = 20;
/// The UDP header is small enough to require whole, which lets us check its length field.
const UDP_HEADER: usize = 8;
/// Fixed IPv6 header length; its payload length counts everything after it.
const IPV6_HEADER: usize = 40;

/// Transport part of a [`Segment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp { flags: TcpFlags },
    Udp,
}

/// One TCP segment or UDP datagram as seen on the wire, validated but not yet classified
/// (direction and meaning are the classifier's business).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub l4: L4,
    /// IPv4 header carried options (IHL > 5). Always false for IPv6.
    pub ip_options: bool,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
}

/// Why a packet was dropped. Each variant is a counter in [`ParseStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Captured bytes end before the headers the packet announces.
    Truncated,
    /// A fragment with a non-zero offset: it carries no transport header.
    NonFirstFragment,
    /// A valid IP packet carrying something other than TCP or UDP (ICMP, ESP, …).
    NotTcpOrUdp,
    /// Cannot be a real packet: bad IP version, impossible lengths, port 0, …
    Malformed,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Truncated => "truncated packet",
            ParseError::NonFirstFragment => "non-first fragment",
            ParseError::NotTcpOrUdp => "neither TCP nor UDP",
            ParseError::Malformed => "malformed packet",
        })
    }
}

impl std::error::Error for ParseError {}

/// Counters of parse outcomes, so the daemon can report what it dropped and why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseStats {
    pub parsed: u64,
    pub truncated: u64,
    pub fragments: u64,
    pub not_tcp_udp: u64,
    pub malformed: u64,
}

impl ParseStats {
    /// Count one result of [`parse_ip`].
    pub fn record(&mut self, r: &Result<Segment, ParseError>) {
        let counter = match r {
            Ok(_) => &mut self.parsed,
            Err(ParseError::Truncated) => &mut self.truncated,
            Err(ParseError::NonFirstFragment) => &mut self.fragments,
            Err(ParseError::NotTcpOrUdp) => &mut self.not_tcp_udp,
            Err(ParseError::Malformed) => &mut self.malformed,
        };
        *counter = counter.saturating_add(1);
    }
}

/// The IP layer once validated. Offsets are from the start of the packet.
struct Network {
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    ip_options: bool,
    /// Protocol of the transport header, after any extension headers.
    proto: IpNumber,
    /// Where the transport header starts.
    l4_start: usize,
    /// Where the packet says it ends (IPv4 total length, 40 + IPv6 payload length).
    end: usize,
}

/// Parse one IP packet (no link header) into a [`Segment`].
pub fn parse_ip(packet: &[u8]) -> Result<Segment, ParseError> {
    let net = match packet.first().map(|b| b >> 4) {
        None => return Err(ParseError::Truncated),
        Some(4) => network_v4(packet)?,
        Some(6) => network_v6(packet)?,
        Some(_) => return Err(ParseError::Malformed),
    };
    transport(packet, &net)
}

/// Blame for a header that needs the packet to reach offset `need`: past the announced
/// end it can never be valid; within it, the capture was cut short.
fn short(need: usize, end: usize) -> ParseError {
    if need > end {
        ParseError::Malformed
    } else {
        ParseError::Truncated
    }
}

/// Absolute end offset that a length error (relative to `base`) asked for.
fn needed(base: usize, e: &LenError) -> usize {
    base.saturating_add(e.layer_start_offset)
        .saturating_add(e.required_len)
}

fn network_v4(packet: &[u8]) -> Result<Network, ParseError> {
    let hdr = Ipv4HeaderSlice::from_slice(packet).map_err(|e| match e {
        // Total length sits in bytes 2..4; if we have it, an IHL that exceeds it is
        // impossible rather than merely cut off.
        ipv4::HeaderSliceError::Len(l) => match packet.get(2..4) {
            Some(&[hi, lo]) => short(needed(0, &l), usize::from(u16::from_be_bytes([hi, lo]))),
            _ => ParseError::Truncated,
        },
        ipv4::HeaderSliceError::Content(_) => ParseError::Malformed,
    })?;
    let header_len = hdr.slice().len();
    let end = usize::from(hdr.total_len());
    if end < header_len {
        return Err(ParseError::Malformed);
    }
    if hdr.fragments_offset().value() != 0 {
        return Err(ParseError::NonFirstFragment);
    }

    let mut proto = hdr.protocol();
    let mut l4_start = header_len;
    // IPv6 walks AH as part of its extension chain; do the same for IPv4 so that an
    // AH-protected probe is seen on either family.
    if proto == IpNumber::AUTHENTICATION_HEADER {
        let (next, len) = auth_header(packet, l4_start, end)?;
        proto = next;
        l4_start += len;
    }

    Ok(Network {
        src: hdr.source_addr().into(),
        dst: hdr.destination_addr().into(),
        ttl: hdr.ttl(),
        ip_options: header_len > 20,
        proto,
        l4_start,
        end,
    })
}

fn network_v6(packet: &[u8]) -> Result<Network, ParseError> {
    let hdr = Ipv6HeaderSlice::from_slice(packet).map_err(|e| match e {
        ipv6::HeaderSliceError::Len(_) => ParseError::Truncated,
        ipv6::HeaderSliceError::Content(_) => ParseError::Malformed,
    })?;
    // A payload length of 0 means a jumbogram (RFC 2675) or nothing at all; neither can
    // carry a probe, and the transport check below rejects it as too short.
    let end = IPV6_HEADER + usize::from(hdr.payload_length());

    // Walk the extension chain with etherparse's per-header views. (Iterating the
    // `Ipv6ExtensionsSlice` that `from_slice_lax` returns after an error reads past its
    // slice in etherparse 0.21, so we do not use it.) Each step consumes at least 8
    // bytes, so the walk ends. Reading within `end` lets `short` tell whose fault a
    // missing byte is.
    let walkable = packet.get(..end).unwrap_or(packet);
    let mut proto = hdr.next_header();
    let mut at = IPV6_HEADER;
    loop {
        let rest = walkable.get(at..).unwrap_or_default();
        let blame = |l: LenError| short(needed(at, &l), end);
        let (next, len) = match proto {
            // RFC 8200 4.1: hop-by-hop only directly after the IPv6 header.
            IpNumber::IPV6_HEADER_HOP_BY_HOP if at != IPV6_HEADER => {
                return Err(ParseError::Malformed);
            }
            IpNumber::IPV6_HEADER_HOP_BY_HOP
            | IpNumber::IPV6_ROUTE_HEADER
            | IpNumber::IPV6_DESTINATION_OPTIONS => {
                let ext = Ipv6RawExtHeaderSlice::from_slice(rest).map_err(blame)?;
                (ext.next_header(), ext.slice().len())
            }
            IpNumber::IPV6_FRAGMENTATION_HEADER => {
                let frag = Ipv6FragmentHeaderSlice::from_slice(rest).map_err(blame)?;
                // What follows a non-first fragment header is fragment data, not headers.
                if frag.fragment_offset().value() != 0 {
                    return Err(ParseError::NonFirstFragment);
                }
                (frag.next_header(), frag.slice().len())
            }
            IpNumber::AUTHENTICATION_HEADER => auth_header(walkable, at, end)?,
            _ => break,
        };
        proto = next;
        at += len;
    }
    let l4_start = at;

    Ok(Network {
        src: hdr.source_addr().into(),
        dst: hdr.destination_addr().into(),
        ttl: hdr.hop_limit(),
        ip_options: false,
        proto,
        l4_start,
        end,
    })
}

/// An IP authentication header (RFC 4302) at `at`: its next header and length.
fn auth_header(packet: &[u8], at: usize, end: usize) -> Result<(IpNumber, usize), ParseError> {
    let within = packet.get(..end).unwrap_or(packet);
    let rest = within.get(at..).unwrap_or_default();
    let ah = IpAuthHeaderSlice::from_slice(rest).map_err(|e| match e {
        ip_auth::HeaderSliceError::Len(l) => short(needed(at, &l), end),
        ip_auth::HeaderSliceError::Content(_) => ParseError::Malformed,
    })?;
    Ok((ah.next_header(), ah.slice().len()))
}

/// The single length gate for the transport header: the first `N` bytes at `start`.
fn fixed<const N: usize>(packet: &[u8], start: usize, end: usize) -> Result<&[u8; N], ParseError> {
    if start.saturating_add(N) > end {
        return Err(ParseError::Malformed);
    }
    packet
        .get(start..)
        .and_then(|rest| rest.first_chunk::<N>())
        .ok_or(ParseError::Truncated)
}

fn transport(packet: &[u8], net: &Network) -> Result<Segment, ParseError> {
    if net.l4_start > net.end {
        // Extension headers ran past the announced payload length.
        return Err(ParseError::Malformed);
    }
    let (sport, dport, l4) = match net.proto {
        IpNumber::TCP => {
            let h = fixed::<TCP_NEEDED>(packet, net.l4_start, net.end)?;
            let header_len = usize::from(h[12] >> 4) * 4;
            if header_len < TCP_MIN_HEADER || net.l4_start + header_len > net.end {
                return Err(ParseError::Malformed);
            }
            let flags = TcpFlags(h[13]);
            (
                u16::from_be_bytes([h[0], h[1]]),
                u16::from_be_bytes([h[2], h[3]]),
                L4::Tcp { flags },
            )
        }
        IpNumber::UDP => {
            let h = fixed::<UDP_HEADER>(packet, net.l4_start, net.end)?;
            let udp_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
            if udp_len < UDP_HEADER || net.l4_start + udp_len > net.end {
                return Err(ParseError::Malformed);
            }
            (
                u16::from_be_bytes([h[0], h[1]]),
                u16::from_be_bytes([h[2], h[3]]),
                L4::Udp,
            )
        }
        _ => return Err(ParseError::NotTcpOrUdp),
    };
    // Port 0 is reserved on both protocols; no stack sends from or to it on purpose.
    if sport == 0 || dport == 0 {
        return Err(ParseError::Malformed);
    }
    Ok(Segment {
        src: net.src,
        dst: net.dst,
        sport,
        dport,
        l4,
        ip_options: net.ip_options,
        ttl: net.ttl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const V4_SRC: [u8; 4] = [192, 0, 2, 1];
    const V4_DST: [u8; 4] = [198, 51, 100, 2];
    const V6_SRC: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const V6_DST: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    const SYN: u8 = TcpFlags::SYN;

    /// A 20-byte TCP header without options.
    fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&sport.to_be_bytes());
        h.extend_from_slice(&dport.to_be_bytes());
        h.extend_from_slice(&0x1122_3344u32.to_be_bytes()); // seq
        h.extend_from_slice(&0u32.to_be_bytes()); // ack
        h.push(5 << 4); // data offset 5
        h.push(flags);
        h.extend_from_slice(&1024u16.to_be_bytes()); // window
        h.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        h
    }

    fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&sport.to_be_bytes());
        h.extend_from_slice(&dport.to_be_bytes());
        h.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(payload);
        h
    }

    /// IPv4 packet; `options` must be a multiple of 4 bytes. `frag` is the raw
    /// flags+offset field (e.g. 0x2000 = MF, offset in 8-byte units in the low 13 bits).
    fn ipv4(proto: u8, options: &[u8], frag: u16, payload: &[u8]) -> Vec<u8> {
        assert_eq!(options.len() % 4, 0);
        let ihl = 5 + options.len() / 4;
        let total = ihl * 4 + payload.len();
        let mut p = vec![0x40 | u8::try_from(ihl).unwrap(), 0];
        p.extend_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
        p.extend_from_slice(&[0xab, 0xcd]); // identification
        p.extend_from_slice(&frag.to_be_bytes());
        p.push(57); // ttl
        p.push(proto);
        p.extend_from_slice(&[0, 0]); // checksum: not verified
        p.extend_from_slice(&V4_SRC);
        p.extend_from_slice(&V4_DST);
        p.extend_from_slice(options);
        p.extend_from_slice(payload);
        p
    }

    /// IPv6 packet; `rest` is the extension chain plus transport header.
    fn ipv6(next: u8, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&u16::try_from(rest.len()).unwrap().to_be_bytes());
        p.push(next);
        p.push(61); // hop limit
        p.extend_from_slice(&V6_SRC);
        p.extend_from_slice(&V6_DST);
        p.extend_from_slice(rest);
        p
    }

    /// An 8-byte hop-by-hop or destination-options header holding one PadN option.
    fn opts_ext(next: u8) -> Vec<u8> {
        vec![next, 0, 1, 4, 0, 0, 0, 0]
    }

    /// IPv6 fragment header; `offset` in 8-byte units.
    fn frag_ext(next: u8, offset: u16, more: bool) -> Vec<u8> {
        let field = (offset << 3) | u16::from(more);
        let mut h = vec![next, 0];
        h.extend_from_slice(&field.to_be_bytes());
        h.extend_from_slice(&0xdead_beefu32.to_be_bytes());
        h
    }

    fn v4_seg(sport: u16, dport: u16, l4: L4, ip_options: bool) -> Segment {
        Segment {
            src: IpAddr::V4(Ipv4Addr::from(V4_SRC)),
            dst: IpAddr::V4(Ipv4Addr::from(V4_DST)),
            sport,
            dport,
            l4,
            ip_options,
            ttl: 57,
        }
    }

    fn v6_seg(sport: u16, dport: u16, l4: L4) -> Segment {
        Segment {
            src: IpAddr::V6(Ipv6Addr::from(V6_SRC)),
            dst: IpAddr::V6(Ipv6Addr::from(V6_DST)),
            sport,
            dport,
            l4,
            ip_options: false,
            ttl: 61,
        }
    }

    fn syn_flags() -> L4 {
        L4::Tcp {
            flags: TcpFlags(SYN),
        }
    }

    fn v4_syn() -> Vec<u8> {
        ipv4(6, &[], 0, &tcp(40000, 22, SYN))
    }

    fn v6_chain_syn() -> Vec<u8> {
        let mut rest = opts_ext(60); // hop-by-hop → destination options
        rest.extend(opts_ext(6)); // destination options → TCP
        rest.extend(tcp(40000, 443, SYN));
        ipv6(0, &rest)
    }

    #[test]
    fn ipv4_syn() {
        assert_eq!(
            parse_ip(&v4_syn()),
            Ok(v4_seg(40000, 22, syn_flags(), false))
        );
    }

    #[test]
    fn ipv4_with_options_sets_flag() {
        // IHL 6: one NOP NOP NOP EOL word.
        let p = ipv4(6, &[1, 1, 1, 0], 0, &tcp(40000, 22, SYN));
        assert_eq!(parse_ip(&p), Ok(v4_seg(40000, 22, syn_flags(), true)));
        // IHL 15, the maximum: 40 bytes of options.
        let p = ipv4(6, &[1; 40], 0, &tcp(40000, 22, SYN));
        assert_eq!(parse_ip(&p), Ok(v4_seg(40000, 22, syn_flags(), true)));
    }

    #[test]
    fn ipv4_udp() {
        let p = ipv4(17, &[], 0, &udp(5353, 161, b"probe"));
        assert_eq!(parse_ip(&p), Ok(v4_seg(5353, 161, L4::Udp, false)));
    }

    #[test]
    fn tcp_flags_byte_is_kept_whole() {
        // ECN-setup SYN: SYN | ECE | CWR; the classifier decides what the bits mean.
        let p = ipv4(6, &[], 0, &tcp(40000, 22, 0xc2));
        let seg = parse_ip(&p).unwrap();
        assert_eq!(
            seg.l4,
            L4::Tcp {
                flags: TcpFlags(0xc2)
            }
        );
    }

    #[test]
    fn ipv4_auth_header_is_walked() {
        // AH with payload-length field 4: (4 + 2) * 4 = 24 bytes, next header TCP.
        let mut rest = vec![6, 4, 0, 0];
        rest.extend_from_slice(&[0; 20]);
        rest.extend(tcp(40000, 22, SYN));
        let p = ipv4(51, &[], 0, &rest);
        assert_eq!(parse_ip(&p), Ok(v4_seg(40000, 22, syn_flags(), false)));
    }

    #[test]
    fn ipv6_tcp() {
        let p = ipv6(6, &tcp(40000, 443, SYN));
        assert_eq!(parse_ip(&p), Ok(v6_seg(40000, 443, syn_flags())));
    }

    #[test]
    fn ipv6_udp() {
        let p = ipv6(17, &udp(40000, 53, b"q"));
        assert_eq!(parse_ip(&p), Ok(v6_seg(40000, 53, L4::Udp)));
    }

    #[test]
    fn ipv6_hop_by_hop_and_destination_options_before_tcp() {
        assert_eq!(
            parse_ip(&v6_chain_syn()),
            Ok(v6_seg(40000, 443, syn_flags()))
        );
    }

    #[test]
    fn ipv6_routing_header_is_walked() {
        // Type 0 routing header with no addresses left: 8 bytes.
        let mut rest = vec![6, 0, 0, 0, 0, 0, 0, 0];
        rest.extend(tcp(40000, 443, SYN));
        assert_eq!(
            parse_ip(&ipv6(43, &rest)),
            Ok(v6_seg(40000, 443, syn_flags()))
        );
    }

    #[test]
    fn ipv6_first_fragment_is_parsed() {
        let mut rest = frag_ext(6, 0, true);
        rest.extend(tcp(40000, 443, SYN));
        assert_eq!(
            parse_ip(&ipv6(44, &rest)),
            Ok(v6_seg(40000, 443, syn_flags()))
        );
    }

    #[test]
    fn ipv6_non_first_fragment() {
        let mut rest = frag_ext(6, 185, false);
        rest.extend_from_slice(&[0xff; 24]);
        assert_eq!(
            parse_ip(&ipv6(44, &rest)),
            Err(ParseError::NonFirstFragment)
        );
        // Even when the fragment's payload, read as headers, would be nonsense.
        let mut rest = opts_ext(44);
        rest.extend(frag_ext(0, 1, true)); // "next header" hop-by-hop: not at start
        rest.extend_from_slice(&[0; 16]);
        assert_eq!(parse_ip(&ipv6(0, &rest)), Err(ParseError::NonFirstFragment));
    }

    #[test]
    fn ipv4_fragments() {
        let payload = tcp(40000, 22, SYN);
        // First fragment (MF set, offset 0) with the whole TCP header: parsed.
        assert_eq!(
            parse_ip(&ipv4(6, &[], 0x2000, &payload)),
            Ok(v4_seg(40000, 22, syn_flags(), false))
        );
        // Offset 1 (8 bytes) and a last fragment far in: no transport header.
        for frag in [0x2001, 0x00b9, 0x1fff] {
            assert_eq!(
                parse_ip(&ipv4(6, &[], frag, &payload)),
                Err(ParseError::NonFirstFragment),
                "{frag:#x}"
            );
        }
        // A first fragment too small to hold the TCP header (RFC 1858 tiny fragment).
        assert_eq!(
            parse_ip(&ipv4(6, &[], 0x2000, &payload[..8])),
            Err(ParseError::Malformed)
        );
    }

    #[test]
    fn not_tcp_or_udp() {
        let icmp_echo = [8, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(
            parse_ip(&ipv4(1, &[], 0, &icmp_echo)),
            Err(ParseError::NotTcpOrUdp)
        );
        let icmp6_echo = [128, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(
            parse_ip(&ipv6(58, &icmp6_echo)),
            Err(ParseError::NotTcpOrUdp)
        );
        // "No next header" after a destination-options header.
        assert_eq!(
            parse_ip(&ipv6(60, &opts_ext(59))),
            Err(ParseError::NotTcpOrUdp)
        );
    }

    #[test]
    fn port_zero_is_malformed() {
        for (s, d) in [(0, 22), (40000, 0), (0, 0)] {
            assert_eq!(
                parse_ip(&ipv4(6, &[], 0, &tcp(s, d, SYN))),
                Err(ParseError::Malformed)
            );
            assert_eq!(
                parse_ip(&ipv4(17, &[], 0, &udp(s, d, b""))),
                Err(ParseError::Malformed)
            );
            assert_eq!(
                parse_ip(&ipv6(6, &tcp(s, d, SYN))),
                Err(ParseError::Malformed)
            );
        }
    }

    #[test]
    fn bad_version_is_malformed() {
        for version in [0u8, 1, 5, 7, 15] {
            let mut p = v4_syn();
            p[0] = (version << 4) | 5;
            assert_eq!(parse_ip(&p), Err(ParseError::Malformed), "{version}");
            assert_eq!(parse_ip(&p[..1]), Err(ParseError::Malformed), "{version}");
        }
    }

    #[test]
    fn impossible_lengths_are_malformed() {
        let set_u16 = |p: &mut Vec<u8>, at: usize, v: u16| {
            p[at..at + 2].copy_from_slice(&v.to_be_bytes());
        };
        // IHL below 5.
        let mut p = v4_syn();
        p[0] = 0x44;
        assert_eq!(parse_ip(&p), Err(ParseError::Malformed));
        // Total length shorter than the IP header.
        let mut p = v4_syn();
        set_u16(&mut p, 2, 19);
        assert_eq!(parse_ip(&p), Err(ParseError::Malformed));
        // IHL 15 but total length 20, captured only 20 bytes: impossible, not truncated.
        let mut p = v4_syn();
        p[0] = 0x4f;
        set_u16(&mut p, 2, 20);
        assert_eq!(parse_ip(&p[..20]), Err(ParseError::Malformed));
        // Total length too short for the TCP bytes we need.
        let mut p = v4_syn();
        set_u16(&mut p, 2, 30);
        assert_eq!(parse_ip(&p), Err(ParseError::Malformed));
        // TCP data offset below 5, and beyond the packet.
        for offset in [0u8, 4, 6, 15] {
            let mut p = v4_syn();
            p[20 + 12] = offset << 4;
            assert_eq!(parse_ip(&p), Err(ParseError::Malformed), "{offset}");
        }
        // UDP length below its own header, and beyond the IP payload.
        for len in [0u16, 7, 100] {
            let mut p = ipv4(17, &[], 0, &udp(5353, 161, b"x"));
            set_u16(&mut p, 20 + 4, len);
            assert_eq!(parse_ip(&p), Err(ParseError::Malformed), "{len}");
        }
        // IPv6 payload length 0 (jumbogram or empty) with TCP next.
        let mut p = ipv6(6, &tcp(40000, 443, SYN));
        set_u16(&mut p, 4, 0);
        assert_eq!(parse_ip(&p), Err(ParseError::Malformed));
        // IPv6 extension chain longer than the payload length.
        let mut p = v6_chain_syn();
        set_u16(&mut p, 4, 12);
        assert_eq!(parse_ip(&p), Err(ParseError::Malformed));
        // Hop-by-hop anywhere but first.
        let mut rest = opts_ext(0);
        rest.extend(opts_ext(6));
        rest.extend(tcp(40000, 443, SYN));
        assert_eq!(parse_ip(&ipv6(60, &rest)), Err(ParseError::Malformed));
        // AH with a zero length field.
        let mut rest = vec![6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        rest.extend(tcp(40000, 22, SYN));
        assert_eq!(
            parse_ip(&ipv4(51, &[], 0, &rest)),
            Err(ParseError::Malformed)
        );
    }

    #[test]
    fn bytes_past_the_announced_length_are_ignored() {
        // Ethernet pads a 40-byte SYN to 46 bytes of payload.
        let mut p = v4_syn();
        p.extend_from_slice(&[0; 6]);
        assert_eq!(parse_ip(&p), Ok(v4_seg(40000, 22, syn_flags(), false)));
    }

    #[test]
    fn payload_is_not_required() {
        let mut seg = tcp(40000, 22, SYN);
        seg.extend_from_slice(&[0x55; 1400]);
        let p = ipv4(6, &[], 0, &seg);
        assert_eq!(
            parse_ip(&p[..256]),
            Ok(v4_seg(40000, 22, syn_flags(), false))
        );
        let p = ipv4(17, &[], 0, &udp(5353, 161, &[0x55; 1400]));
        assert_eq!(parse_ip(&p[..256]), Ok(v4_seg(5353, 161, L4::Udp, false)));
    }

    /// Every prefix of a valid packet: `Truncated` while it stops inside the headers we
    /// need, then the same segment as the whole packet.
    fn check_prefixes(p: &[u8], headers: usize) {
        let whole = parse_ip(p).expect("valid packet");
        for len in 0..p.len() {
            let r = parse_ip(&p[..len]);
            if len < headers {
                assert_eq!(r, Err(ParseError::Truncated), "prefix {len} of {p:02x?}");
            } else {
                assert_eq!(r, Ok(whole), "prefix {len} of {p:02x?}");
            }
        }
    }

    #[test]
    fn truncated_at_every_length() {
        let mut with_payload = tcp(40000, 22, SYN);
        with_payload.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
        check_prefixes(&v4_syn(), 20 + TCP_NEEDED);
        check_prefixes(&ipv4(6, &[], 0, &with_payload), 20 + TCP_NEEDED);
        check_prefixes(&ipv4(6, &[1; 40], 0, &tcp(1, 2, SYN)), 60 + TCP_NEEDED);
        check_prefixes(&ipv4(17, &[], 0, &udp(5353, 161, b"payload")), 20 + 8);
        check_prefixes(&ipv6(6, &tcp(40000, 443, SYN)), 40 + TCP_NEEDED);
        check_prefixes(&ipv6(17, &udp(40000, 53, b"q")), 40 + 8);
        check_prefixes(&v6_chain_syn(), 40 + 16 + TCP_NEEDED);
        let mut rest = frag_ext(6, 0, true);
        rest.extend(tcp(40000, 443, SYN));
        check_prefixes(&ipv6(44, &rest), 40 + 8 + TCP_NEEDED);
        let mut rest = vec![6, 4, 0, 0];
        rest.extend_from_slice(&[0; 20]);
        rest.extend(tcp(40000, 22, SYN));
        check_prefixes(&ipv4(51, &[], 0, &rest), 20 + 24 + TCP_NEEDED);
    }

    #[test]
    fn stats_count_each_outcome() {
        let mut stats = ParseStats::default();
        let mut non_first = frag_ext(6, 3, false);
        non_first.extend_from_slice(&[0; 8]);
        for p in [
            v4_syn(),
            v6_chain_syn(),
            v4_syn()[..30].to_vec(),
            ipv6(44, &non_first),
            ipv4(1, &[], 0, &[8, 0, 0, 0]),
            vec![0x50; 40],
        ] {
            stats.record(&parse_ip(&p));
        }
        assert_eq!(
            stats,
            ParseStats {
                parsed: 2,
                truncated: 1,
                fragments: 1,
                not_tcp_udp: 1,
                malformed: 1,
            }
        );
    }

    /// Small deterministic PRNG so the property test needs no dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut stats = ParseStats::default();
        let mut buf = Vec::with_capacity(256);
        for i in 0..200_000 {
            buf.clear();
            let len = rng.below(200);
            buf.extend((0..len).map(|_| rng.next() as u8));
            // Steer most inputs past the version check so the deeper paths get exercised.
            if let Some(first) = buf.first_mut() {
                match i % 3 {
                    0 => *first = 0x40 | (*first & 0x0f),
                    1 => *first = 0x60 | (*first & 0x0f),
                    _ => {}
                }
            }
            stats.record(&parse_ip(&buf));
        }
        assert_eq!(
            stats.parsed + stats.truncated + stats.fragments + stats.not_tcp_udp + stats.malformed,
            200_000
        );
    }

    #[test]
    fn mutated_valid_packets_never_panic() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let seeds = [
            v4_syn(),
            ipv4(6, &[1, 1, 1, 0], 0, &tcp(40000, 22, SYN)),
            ipv4(17, &[], 0, &udp(5353, 161, b"x")),
            v6_chain_syn(),
            ipv6(44, &[frag_ext(6, 0, true), tcp(1, 2, SYN)].concat()),
        ];
        let mut buf = Vec::new();
        for _ in 0..100_000 {
            buf.clear();
            buf.extend_from_slice(&seeds[rng.below(seeds.len())]);
            for _ in 0..=rng.below(4) {
                let at = rng.below(buf.len());
                buf[at] = rng.next() as u8;
            }
            let cut = rng.below(buf.len() + 1);
            let _ = parse_ip(&buf[..cut]);
            let _ = parse_ip(&buf);
        }
    }
}
