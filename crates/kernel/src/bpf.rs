//! The classic BPF program attached to the packet socket, so that the kernel drops
//! everything that cannot be a probe before it is copied to user space.
//!
//! It runs on packets as a SOCK_DGRAM packet socket sees them: starting at the IPv4 or
//! IPv6 header, with the link-level protocol and packet type available as ancillary
//! loads. It passes (up to [`SNAPLEN`] bytes of):
//! - inbound TCP segments to a port up to `max_port` that have no ACK flag (SYN, FIN,
//!   NULL, XMAS and odd mixes; established traffic always carries ACK), and inbound
//!   FIN+ACK (a possible Maimon probe, also one per normal connection close);
//! - outbound TCP segments from a port up to `max_port` with RST set and ACK clear:
//!   the kernel's answer to an ACK-bearing segment that matched no socket, which is how
//!   ACK/Window and Maimon probes are seen without copying every ACK to user space;
//! - inbound UDP datagrams to a port up to `max_port`;
//! - outbound UDP datagrams from a port up to `max_port`: this host's own flows (a client
//!   on a low port, or a local service answering), remembered by the classifier so that
//!   a reply arriving after the client closed its socket is not taken for a probe. With
//!   the advanced modes (`max_port` below 1024) the host's ordinary clients, on
//!   ephemeral ports, cost nothing; a stealth list reaching into the ephemeral range
//!   (1.2's default UDP list goes up to 54321) copies their datagrams both ways;
//! - IPv4 non-first fragments and IPv6 packets with extension headers, which the
//!   user-space parser walks and counts (rare on real networks).
//!
//! "Inbound" means addressed to this host (PACKET_HOST): broadcast and multicast are
//! not probes of this host and are trivially spoofed. The loopback interface is skipped.

/// Bytes copied to user space per packet: enough for IPv4 with options plus a TCP
/// header with options (60 + 60), or an IPv6 header with a few extension headers.
pub const SNAPLEN: u32 = 256;

// Instruction classes and fields from linux/filter.h (stable ABI).
const BPF_LD: u16 = 0x00;
const BPF_LDX: u16 = 0x01;
const BPF_ALU: u16 = 0x04;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_W: u16 = 0x00;
const BPF_H: u16 = 0x08;
const BPF_B: u16 = 0x10;
const BPF_IMM: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_IND: u16 = 0x40;
const BPF_MSH: u16 = 0xa0;
const BPF_AND: u16 = 0x50;
const BPF_JEQ: u16 = 0x10;
const BPF_JGT: u16 = 0x20;
const BPF_JSET: u16 = 0x40;
const BPF_K: u16 = 0x00;

const SKF_AD_OFF: u32 = (-0x1000i32) as u32;
const SKF_AD_PROTOCOL: u32 = 0;
const SKF_AD_PKTTYPE: u32 = 4;
const SKF_AD_IFINDEX: u32 = 8;

const PACKET_HOST: u32 = 0;
const PACKET_OUTGOING: u32 = 4;
const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86dd;

const TCP_FIN: u32 = 0x01;
const TCP_RST: u32 = 0x04;
const TCP_ACK: u32 = 0x10;

/// One classic BPF instruction, laid out as `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// A jump target, by label name.
type Label = &'static str;

enum Item {
    Stmt(u16, u32),
    Jump(u16, u32, Label, Label),
    Mark(Label),
}

/// A tiny assembler: forward jumps to named labels, resolved in one pass.
struct Asm(Vec<Item>);

impl Asm {
    fn stmt(&mut self, code: u16, k: u32) {
        self.0.push(Item::Stmt(code, k));
    }
    fn jump(&mut self, code: u16, k: u32, jt: Label, jf: Label) {
        self.0.push(Item::Jump(code, k, jt, jf));
    }
    fn mark(&mut self, label: Label) {
        self.0.push(Item::Mark(label));
    }
    /// Fall through on the "next" pseudo-label.
    fn assemble(self) -> Vec<SockFilter> {
        let mut positions = std::collections::HashMap::new();
        let mut index = 0usize;
        for item in &self.0 {
            match item {
                Item::Mark(l) => {
                    positions.insert(*l, index);
                }
                _ => index += 1,
            }
        }
        let mut out = Vec::with_capacity(index);
        for item in &self.0 {
            match *item {
                Item::Mark(_) => {}
                Item::Stmt(code, k) => out.push(SockFilter {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                }),
                Item::Jump(code, k, jt, jf) => {
                    let here = out.len();
                    let offset = |label: Label| -> u8 {
                        if label == "next" {
                            return 0;
                        }
                        let target = positions[label];
                        assert!(target > here, "backward jump to {label}");
                        u8::try_from(target - here - 1).expect("jump too far")
                    };
                    out.push(SockFilter {
                        code,
                        jt: offset(jt),
                        jf: offset(jf),
                        k,
                    });
                }
            }
        }
        out
    }
}

/// Build the filter for ports `1..=max_port`, skipping interface `loopback_ifindex`.
pub fn probe_filter(max_port: u16, loopback_ifindex: u32) -> Vec<SockFilter> {
    let max = u32::from(max_port);
    let mut a = Asm(Vec::new());
    let ld_anc = BPF_LD | BPF_W | BPF_ABS;

    a.stmt(ld_anc, SKF_AD_OFF + SKF_AD_IFINDEX);
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, loopback_ifindex, "drop", "next");
    a.stmt(ld_anc, SKF_AD_OFF + SKF_AD_PROTOCOL);
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, "v4", "next");
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IPV6, "v6", "drop");

    // IPv4: protocol, then non-first fragments go to user space to be counted.
    a.mark("v4");
    a.stmt(BPF_LD | BPF_B | BPF_ABS, 9);
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, 6, "v4l4", "next");
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, 17, "v4l4", "drop");
    a.mark("v4l4");
    a.stmt(BPF_LD | BPF_H | BPF_ABS, 6);
    a.jump(BPF_JMP | BPF_JSET | BPF_K, 0x1fff, "pass", "next");
    a.stmt(BPF_LDX | BPF_B | BPF_MSH, 0); // X = 4 * IHL
    a.stmt(BPF_LD | BPF_B | BPF_ABS, 9);
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, 6, "tcp", "udp");

    // IPv6: TCP or UDP right after the fixed header; extension headers to user space.
    a.mark("v6");
    a.stmt(BPF_LD | BPF_B | BPF_ABS, 6);
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, 6, "v6tcp", "next");
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, 17, "v6udp", "next");
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, 58, "drop", "next"); // ICMPv6
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, 59, "drop", "v6ext"); // no next header
    a.mark("v6ext");
    a.stmt(ld_anc, SKF_AD_OFF + SKF_AD_PKTTYPE);
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, PACKET_OUTGOING, "drop", "pass");
    a.mark("v6tcp");
    a.stmt(BPF_LDX | BPF_W | BPF_IMM, 40);
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, 6, "tcp", "tcp"); // unconditional forward jump
    a.mark("v6udp");
    a.stmt(BPF_LDX | BPF_W | BPF_IMM, 40);
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, 17, "udp", "udp");

    // TCP, X = offset of the TCP header.
    a.mark("tcp");
    a.stmt(ld_anc, SKF_AD_OFF + SKF_AD_PKTTYPE);
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, PACKET_OUTGOING, "tcpout", "next");
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, PACKET_HOST, "next", "drop");
    a.stmt(BPF_LD | BPF_H | BPF_IND, 2); // destination port
    a.jump(BPF_JMP | BPF_JGT | BPF_K, max, "drop", "next");
    a.stmt(BPF_LD | BPF_B | BPF_IND, 13); // flags
    a.jump(BPF_JMP | BPF_JSET | BPF_K, TCP_ACK, "next", "pass");
    a.jump(BPF_JMP | BPF_JSET | BPF_K, TCP_FIN, "pass", "drop");
    a.mark("tcpout");
    a.stmt(BPF_LD | BPF_H | BPF_IND, 0); // source port
    a.jump(BPF_JMP | BPF_JGT | BPF_K, max, "drop", "next");
    a.stmt(BPF_LD | BPF_B | BPF_IND, 13);
    a.stmt(BPF_ALU | BPF_AND | BPF_K, TCP_RST | TCP_ACK);
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, TCP_RST, "pass", "drop");

    // UDP, X = offset of the UDP header: inbound by destination port, outbound (our own
    // flows, so that their replies are known) by source port.
    a.mark("udp");
    a.stmt(ld_anc, SKF_AD_OFF + SKF_AD_PKTTYPE);
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, PACKET_OUTGOING, "udpout", "next");
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, PACKET_HOST, "next", "drop");
    a.stmt(BPF_LD | BPF_H | BPF_IND, 2); // destination port
    a.jump(BPF_JMP | BPF_JGT | BPF_K, max, "drop", "pass");
    a.mark("udpout");
    a.stmt(BPF_LD | BPF_H | BPF_IND, 0); // source port
    a.jump(BPF_JMP | BPF_JGT | BPF_K, max, "drop", "pass");

    a.mark("pass");
    a.stmt(BPF_RET | BPF_K, SNAPLEN);
    a.mark("drop");
    a.stmt(BPF_RET | BPF_K, 0);
    a.assemble()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_fits_the_classic_bpf_limits_and_ends_in_returns() {
        let prog = probe_filter(1023, 1);
        assert!(prog.len() < 4096);
        assert_eq!(
            prog[prog.len() - 1],
            SockFilter {
                code: BPF_RET | BPF_K,
                jt: 0,
                jf: 0,
                k: 0
            }
        );
        assert_eq!(prog[prog.len() - 2].k, SNAPLEN);
        // Every jump lands inside the program.
        for (i, insn) in prog.iter().enumerate() {
            if insn.code & 0x07 == BPF_JMP {
                assert!(i + 1 + usize::from(insn.jt) < prog.len());
                assert!(i + 1 + usize::from(insn.jf) < prog.len());
            }
        }
    }

    /// Packet type values as the kernel reports them (linux/if_packet.h).
    const PACKET_BROADCAST: u32 = 1;
    const PACKET_OTHERHOST: u32 = 3;
    const LO: u32 = 1;
    const ETH0: u32 = 2;

    /// A classic BPF interpreter for the instructions `probe_filter` emits, with the
    /// kernel's semantics: an out-of-bounds load ends the program with 0 (drop).
    fn run(prog: &[SockFilter], pkt: &[u8], protocol: u32, pkttype: u32, ifindex: u32) -> u32 {
        let load = |off: u32, size: usize| -> Option<u32> {
            if off >= SKF_AD_OFF {
                return match off - SKF_AD_OFF {
                    SKF_AD_PROTOCOL => Some(protocol),
                    SKF_AD_PKTTYPE => Some(pkttype),
                    SKF_AD_IFINDEX => Some(ifindex),
                    other => panic!("ancillary load {other} not modelled"),
                };
            }
            let off = usize::try_from(off).ok()?;
            let bytes = pkt.get(off..off.checked_add(size)?)?;
            Some(bytes.iter().fold(0u32, |acc, b| acc << 8 | u32::from(*b)))
        };
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        loop {
            let i = prog[pc];
            pc += 1;
            let size = |code: u16| match code & 0x18 {
                BPF_W => 4,
                BPF_H => 2,
                BPF_B => 1,
                _ => unreachable!(),
            };
            match i.code {
                c if c == BPF_LD | BPF_W | BPF_ABS
                    || c == BPF_LD | BPF_H | BPF_ABS
                    || c == BPF_LD | BPF_B | BPF_ABS =>
                {
                    let Some(v) = load(i.k, size(c)) else {
                        return 0;
                    };
                    a = v;
                }
                c if c == BPF_LD | BPF_H | BPF_IND || c == BPF_LD | BPF_B | BPF_IND => {
                    let Some(v) = load(x.wrapping_add(i.k), size(c)) else {
                        return 0;
                    };
                    a = v;
                }
                c if c == BPF_LDX | BPF_B | BPF_MSH => {
                    let Some(v) = load(i.k, 1) else { return 0 };
                    x = 4 * (v & 0x0f);
                }
                c if c == BPF_LDX | BPF_W | BPF_IMM => x = i.k,
                c if c == BPF_ALU | BPF_AND | BPF_K => a &= i.k,
                c if c & 0x07 == BPF_JMP => {
                    let taken = match c & 0xf0 {
                        BPF_JEQ => a == i.k,
                        BPF_JGT => a > i.k,
                        BPF_JSET => a & i.k != 0,
                        other => panic!("jump {other:#x} not modelled"),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                c if c == BPF_RET | BPF_K => return i.k,
                other => panic!("instruction {other:#x} not modelled"),
            }
        }
    }

    /// IPv4 header (with `options` words of IP options) + 20 bytes of transport header.
    fn v4(proto: u8, sport: u16, dport: u16, tcp_flags: u8, options: usize) -> Vec<u8> {
        let ihl = 5 + options;
        let mut p = vec![0u8; ihl * 4 + 20];
        p[0] = 0x40 | u8::try_from(ihl).unwrap();
        let total = u16::try_from(p.len()).unwrap();
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&[198, 18, 0, 2]);
        p[16..20].copy_from_slice(&[198, 18, 0, 1]);
        let t = ihl * 4;
        p[t..t + 2].copy_from_slice(&sport.to_be_bytes());
        p[t + 2..t + 4].copy_from_slice(&dport.to_be_bytes());
        p[t + 13] = tcp_flags;
        p
    }

    /// IPv6 header + 20 bytes of transport header.
    fn v6(next: u8, sport: u16, dport: u16, tcp_flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 60];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&20u16.to_be_bytes());
        p[6] = next;
        p[7] = 64;
        p[40..42].copy_from_slice(&sport.to_be_bytes());
        p[42..44].copy_from_slice(&dport.to_be_bytes());
        p[53] = tcp_flags;
        p
    }

    const TCP: u8 = 6;
    const UDP: u8 = 17;
    const SYN: u8 = 0x02;
    const FIN_ACK: u8 = 0x11;
    const RST: u8 = 0x04;
    const RST_ACK: u8 = 0x14;
    const ACK: u8 = 0x10;

    #[test]
    fn filter_passes_probes_and_our_own_low_port_udp_only() {
        let prog = probe_filter(1023, LO);
        let v4p = |pkt: &[u8], pkttype: u32| run(&prog, pkt, ETH_P_IP, pkttype, ETH0) != 0;
        let v6p = |pkt: &[u8], pkttype: u32| run(&prog, pkt, ETH_P_IPV6, pkttype, ETH0) != 0;
        let (inb, out) = (PACKET_HOST, PACKET_OUTGOING);

        // UDP in: to a watched port only, and only when addressed to this host.
        assert!(v4p(&v4(UDP, 40000, 161, 0, 0), inb));
        assert!(v4p(&v4(UDP, 40000, 1023, 0, 0), inb));
        assert!(!v4p(&v4(UDP, 40000, 1024, 0, 0), inb));
        assert!(!v4p(&v4(UDP, 68, 67, 0, 0), PACKET_BROADCAST));
        assert!(!v4p(&v4(UDP, 40000, 161, 0, 0), PACKET_OTHERHOST));
        assert!(v4p(&v4(UDP, 40000, 161, 0, 2), inb), "IPv4 options");
        assert!(v6p(&v6(UDP, 40000, 161, 0), inb));
        assert!(!v6p(&v6(UDP, 40000, 5353, 0), inb));

        // UDP out: from a port up to max_port (our low-port flows), never from an
        // ephemeral port, whatever the destination.
        assert!(v4p(&v4(UDP, 700, 53, 0, 0), out));
        assert!(v4p(&v4(UDP, 1023, 53, 0, 0), out));
        assert!(!v4p(&v4(UDP, 1024, 53, 0, 0), out));
        assert!(!v4p(&v4(UDP, 40000, 53, 0, 0), out));
        assert!(v4p(&v4(UDP, 123, 40000, 0, 1), out), "IPv4 options");
        assert!(v6p(&v6(UDP, 701, 53, 0), out));
        assert!(!v6p(&v6(UDP, 50000, 53, 0), out));
        // Loopback is skipped both ways.
        assert_eq!(run(&prog, &v4(UDP, 700, 53, 0, 0), ETH_P_IP, out, LO), 0);
        assert_eq!(run(&prog, &v4(UDP, 53, 700, 0, 0), ETH_P_IP, inb, LO), 0);

        // TCP in: no ACK, or FIN+ACK, to a watched port.
        assert!(v4p(&v4(TCP, 40000, 22, SYN, 0), inb));
        assert!(v4p(&v4(TCP, 40000, 22, FIN_ACK, 0), inb));
        assert!(!v4p(&v4(TCP, 40000, 22, ACK, 0), inb));
        assert!(!v4p(&v4(TCP, 40000, 8080, SYN, 0), inb));
        assert!(v6p(&v6(TCP, 40000, 22, 0), inb));
        // TCP out: bare RSTs from a watched port only; our own low-port TCP is not copied.
        assert!(v4p(&v4(TCP, 22, 40000, RST, 0), out));
        assert!(!v4p(&v4(TCP, 22, 40000, RST_ACK, 0), out));
        assert!(!v4p(&v4(TCP, 600, 80, SYN, 0), out));
        assert!(!v4p(&v4(TCP, 8080, 40000, RST, 0), out));
        assert!(v6p(&v6(TCP, 22, 40000, RST), out));

        // IPv4 non-first fragments go to user space to be counted.
        let mut frag = v4(UDP, 0, 0, 0, 0);
        frag[6..8].copy_from_slice(&0x0010u16.to_be_bytes());
        assert!(v4p(&frag, inb));
        // Other protocols never.
        assert!(!v4p(&v4(1, 0, 0, 0, 0), inb));
        assert!(!v6p(&v6(58, 0, 0, 0), inb));
        assert_eq!(run(&prog, &[0u8; 40], 0x0806, inb, ETH0), 0);
        // A packet cut short inside the transport header is dropped, not misread.
        assert!(!v4p(&v4(UDP, 700, 53, 0, 0)[..21], out));
        // The pass verdict copies SNAPLEN bytes.
        assert_eq!(
            run(&prog, &v4(UDP, 700, 53, 0, 0), ETH_P_IP, out, ETH0),
            SNAPLEN
        );
    }

    #[test]
    fn port_limit_is_compiled_in() {
        let prog = probe_filter(666, 1);
        assert!(
            prog.iter()
                .any(|i| i.code == BPF_JMP | BPF_JGT | BPF_K && i.k == 666)
        );
    }
}
