//! Reading a capture file for `portsentry replay`: pcap (micro- or nanosecond) and
//! pcapng, through the pure-Rust `pcap-parser` streaming reader (constant memory,
//! however large the file). Each packet comes out as its capture time and its IP
//! bytes: the link layers tcpdump writes on Linux (Ethernet with VLAN tags, Linux
//! cooked v1 and v2 from `-i any`, raw IP, BSD loopback) are taken off here.
//!
//! A file that ends inside a block, or holds a block that does not parse, is an error
//! that says at which byte and after how many packets: a replay of half a capture
//! would silently report a different day than the one captured.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use pcap_parser::pcapng::Block;
use pcap_parser::{Linktype, PcapBlockOwned, PcapError};

/// Read buffer: larger than any block tcpdump writes (snaplen 262,144 plus headers).
const BUFFER: usize = 1 << 20;

/// Why the capture cannot be read on.
#[derive(Debug)]
pub struct CaptureError {
    /// Byte offset in the file where reading stopped.
    pub offset: u64,
    /// Packets read before it.
    pub packets: u64,
    pub what: String,
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at byte {} (after {} packets): {}",
            self.offset, self.packets, self.what
        )
    }
}

impl std::error::Error for CaptureError {}

/// One captured packet: when, and its IP header onwards (`None`: a link layer or
/// protocol that carries no IP, counted by the caller).
pub struct Frame<'a> {
    /// Capture time, since the Unix epoch.
    pub time: Duration,
    pub ip: Option<&'a [u8]>,
}

/// A pcapng interface: its link type and time resolution (units per second).
#[derive(Clone, Copy)]
struct Interface {
    linktype: Linktype,
    units_per_second: u64,
    offset_seconds: i64,
}

/// Call `each` for every packet of the file at `path`, in file order. Stops at the
/// first error and returns it; otherwise the number of packets.
pub fn for_each_frame(path: &Path, mut each: impl FnMut(Frame<'_>)) -> Result<u64, CaptureError> {
    let file = File::open(path).map_err(|e| CaptureError {
        offset: 0,
        packets: 0,
        what: format!("cannot open {}: {e}", path.display()),
    })?;
    read_frames(file, &mut each)
}

/// The streaming loop over any reader (a file, or bytes in tests).
pub fn read_frames(
    input: impl Read + Send + 'static,
    each: &mut dyn FnMut(Frame<'_>),
) -> Result<u64, CaptureError> {
    let mut packets = 0u64;
    let mut reader = pcap_parser::create_reader(BUFFER, input).map_err(|e| CaptureError {
        offset: 0,
        packets: 0,
        what: describe(&e, "not a pcap or pcapng capture"),
    })?;
    // Legacy pcap: one link type and resolution for the file; pcapng: per interface.
    let mut legacy: Option<Interface> = None;
    let mut interfaces: Vec<Interface> = Vec::new();
    loop {
        let offset = reader.consumed() as u64;
        let fail = |what: String| CaptureError {
            offset,
            packets,
            what,
        };
        match reader.next() {
            Ok((size, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(header) => {
                        legacy = Some(Interface {
                            linktype: header.network,
                            units_per_second: if header.is_nanosecond_precision() {
                                1_000_000_000
                            } else {
                                1_000_000
                            },
                            offset_seconds: 0,
                        });
                    }
                    PcapBlockOwned::Legacy(frame) => {
                        let Some(iface) = legacy else {
                            return Err(fail("a packet before the file header".into()));
                        };
                        let sub = u64::from(frame.ts_usec);
                        let time = Duration::from_secs(u64::from(frame.ts_sec))
                            + Duration::from_nanos(
                                sub.saturating_mul(1_000_000_000) / iface.units_per_second,
                            );
                        packets += 1;
                        each(Frame {
                            time,
                            ip: ip_of(iface.linktype, frame.data),
                        });
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => interfaces.clear(),
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        interfaces.push(Interface {
                            linktype: idb.linktype,
                            units_per_second: idb.ts_resolution().unwrap_or(1_000_000).max(1),
                            offset_seconds: idb.ts_offset(),
                        });
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        let Some(iface) = interfaces.get(epb.if_id as usize).copied() else {
                            return Err(fail(format!(
                                "a packet of interface {} that the file never described",
                                epb.if_id
                            )));
                        };
                        let units = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                        let secs = units / iface.units_per_second;
                        let rest = units % iface.units_per_second;
                        let secs = secs.saturating_add_signed(iface.offset_seconds);
                        let time = Duration::from_secs(secs)
                            + Duration::from_nanos(
                                rest.saturating_mul(1_000_000_000) / iface.units_per_second,
                            );
                        let data = &epb.data[..(epb.caplen as usize).min(epb.data.len())];
                        packets += 1;
                        each(Frame {
                            time,
                            ip: ip_of(iface.linktype, data),
                        });
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(_)) => {
                        // No time stamp: a replay cannot place it. Counted, not used.
                        packets += 1;
                        each(Frame {
                            time: Duration::ZERO,
                            ip: None,
                        });
                    }
                    // Statistics, name resolution, comments, ...: nothing to replay.
                    PcapBlockOwned::NG(_) => {}
                }
                reader.consume(size);
            }
            Err(PcapError::Eof) => return Ok(packets),
            Err(PcapError::Incomplete(_)) => {
                if reader.reader_exhausted() {
                    return Err(fail(
                        "the file ends inside a block: the capture is truncated".into(),
                    ));
                }
                reader
                    .refill()
                    .map_err(|e| fail(describe(&e, "cannot read")))?;
            }
            Err(PcapError::UnexpectedEof) => {
                return Err(fail(
                    "the file ends inside a block: the capture is truncated".into(),
                ));
            }
            Err(e) => return Err(fail(describe(&e, "a block that does not parse"))),
        }
    }
}

fn describe(e: &PcapError<&[u8]>, what: &str) -> String {
    match e {
        PcapError::HeaderNotRecognized => "not a pcap or pcapng capture".into(),
        PcapError::BufferTooSmall => format!("{what}: a block larger than {BUFFER} bytes"),
        PcapError::ReadError => format!("{what}: read error"),
        PcapError::NomError(_, kind) => format!("{what} ({kind:?})"),
        PcapError::OwnedNomError(_, kind) => format!("{what} ({kind:?})"),
        _ => what.to_string(),
    }
}

/// EtherType of IPv4 and IPv6, and of the VLAN tags that may come before them.
const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];

/// The IP packet inside one link-layer frame, if it carries one.
fn ip_of(linktype: Linktype, data: &[u8]) -> Option<&[u8]> {
    let be16 = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]))
    };
    let after_ethertype = |mut at: usize| -> Option<&[u8]> {
        let mut ethertype = be16(at)?;
        // At most two tags (802.1ad then 802.1Q).
        for _ in 0..2 {
            if !ETH_VLAN.contains(&ethertype) {
                break;
            }
            at += 4;
            ethertype = be16(at)?;
        }
        matches!(ethertype, ETH_IPV4 | ETH_IPV6).then(|| data.get(at + 2..))?
    };
    match linktype {
        Linktype::ETHERNET => after_ethertype(12),
        // Linux cooked v1: 16 bytes, protocol at 14.
        Linktype::LINUX_SLL => {
            let proto = be16(14)?;
            matches!(proto, ETH_IPV4 | ETH_IPV6).then(|| data.get(16..))?
        }
        // Linux cooked v2: 20 bytes, protocol at 0.
        Linktype::LINUX_SLL2 => {
            let proto = be16(0)?;
            matches!(proto, ETH_IPV4 | ETH_IPV6).then(|| data.get(20..))?
        }
        Linktype::RAW | Linktype::IPV4 | Linktype::IPV6 => Some(data),
        // DLT_RAW as some systems number it (12, 14).
        Linktype(12) | Linktype(14) => Some(data),
        // BSD loopback: a 4-byte address family in host order, then IP.
        Linktype::NULL | Linktype::LOOP => data.get(4..),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A legacy pcap (little-endian, microseconds, Ethernet) of the given frames.
    fn pcap(frames: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&0i32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&65535u32.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        for (sec, usec, data) in frames {
            out.extend_from_slice(&sec.to_le_bytes());
            out.extend_from_slice(&usec.to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
        out
    }

    fn ethernet(ip: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ETH_IPV4.to_be_bytes());
        f.extend_from_slice(ip);
        f
    }

    type Frames = Vec<(Duration, Option<Vec<u8>>)>;

    fn read(bytes: &[u8]) -> Result<Frames, CaptureError> {
        let mut got = Vec::new();
        read_frames(std::io::Cursor::new(bytes.to_vec()), &mut |f: Frame<'_>| {
            got.push((f.time, f.ip.map(<[u8]>::to_vec)))
        })?;
        Ok(got)
    }

    #[test]
    fn reads_times_and_ip_bytes_of_a_pcap() {
        let file = pcap(&[
            (1_700_000_000, 250_000, ethernet(&[0x45, 1, 2])),
            (1_700_000_001, 0, ethernet(&[0x45, 3])),
        ]);
        let got = read(&file).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, Duration::from_millis(1_700_000_000_250));
        assert_eq!(got[0].1.as_deref(), Some(&[0x45u8, 1, 2][..]));
        assert_eq!(got[1].0, Duration::from_secs(1_700_000_001));
    }

    /// A pcapng section: header, one Ethernet interface (microseconds), the packets.
    fn pcapng(packets: &[(u64, Vec<u8>)]) -> Vec<u8> {
        fn block(kind: u32, body: &[u8]) -> Vec<u8> {
            let mut body = body.to_vec();
            while !body.len().is_multiple_of(4) {
                body.push(0);
            }
            let len = (body.len() + 12) as u32;
            let mut b = kind.to_le_bytes().to_vec();
            b.extend_from_slice(&len.to_le_bytes());
            b.extend_from_slice(&body);
            b.extend_from_slice(&len.to_le_bytes());
            b
        }
        let mut shb = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        let mut out = block(0x0A0D_0D0A, &shb);
        let mut idb = 1u16.to_le_bytes().to_vec();
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&65535u32.to_le_bytes());
        out.extend(block(1, &idb));
        for (micros, data) in packets {
            let mut epb = 0u32.to_le_bytes().to_vec();
            epb.extend_from_slice(&((micros >> 32) as u32).to_le_bytes());
            epb.extend_from_slice(&(*micros as u32).to_le_bytes());
            epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
            epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
            epb.extend_from_slice(data);
            out.extend(block(6, &epb));
        }
        out
    }

    #[test]
    fn reads_times_and_ip_bytes_of_a_pcapng() {
        let file = pcapng(&[(1_700_000_000_500_000, ethernet(&[0x45, 7, 7]))]);
        let got = read(&file).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, Duration::from_millis(1_700_000_000_500));
        assert_eq!(got[0].1.as_deref(), Some(&[0x45u8, 7, 7][..]));
        // Cut inside the packet block: truncated, after 0 packets.
        let err = read(&file[..file.len() - 6]).unwrap_err();
        assert_eq!(err.packets, 0, "{err}");
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn a_truncated_capture_says_where_it_stopped() {
        let file = pcap(&[(1, 0, ethernet(&[0x45; 40])), (2, 0, ethernet(&[0x45; 40]))]);
        let cut = &file[..file.len() - 10];
        let err = read(cut).unwrap_err();
        assert_eq!(err.packets, 1, "{err}");
        assert_eq!(err.offset, 24 + 16 + 54, "{err}");
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn garbage_is_not_a_capture_and_never_panics() {
        assert!(read(b"this is not a capture at all, only text").is_err());
        assert!(read(b"").is_err());
        // Every prefix and a corrupted copy of a real file end in Ok or Err, never a panic.
        let file = pcap(&[(1, 0, ethernet(&[0x45; 40])), (2, 0, ethernet(&[0x45; 8]))]);
        for n in 0..file.len() {
            let _ = read(&file[..n]);
        }
        let mut bad = file.clone();
        // An absurd captured length in the first record header.
        bad[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read(&bad).is_err());
    }

    #[test]
    fn link_layers_of_linux_captures() {
        let ip = [0x45u8, 9];
        let mut vlan = vec![0u8; 12];
        vlan.extend_from_slice(&0x8100u16.to_be_bytes());
        vlan.extend_from_slice(&[0, 5]);
        vlan.extend_from_slice(&ETH_IPV4.to_be_bytes());
        vlan.extend_from_slice(&ip);
        assert_eq!(ip_of(Linktype::ETHERNET, &vlan), Some(&ip[..]));
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&ETH_IPV4.to_be_bytes());
        sll.extend_from_slice(&ip);
        assert_eq!(ip_of(Linktype::LINUX_SLL, &sll), Some(&ip[..]));
        let mut sll2 = ETH_IPV6.to_be_bytes().to_vec();
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.extend_from_slice(&ip);
        assert_eq!(ip_of(Linktype::LINUX_SLL2, &sll2), Some(&ip[..]));
        // ARP carries no IP.
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(ip_of(Linktype::ETHERNET, &arp), None);
        assert_eq!(ip_of(Linktype::ETHERNET, &[1, 2]), None);
    }
}
