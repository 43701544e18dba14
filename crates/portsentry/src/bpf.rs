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

    // UDP, X = offset of the UDP header: inbound only.
    a.mark("udp");
    a.stmt(ld_anc, SKF_AD_OFF + SKF_AD_PKTTYPE);
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, PACKET_HOST, "next", "drop");
    a.stmt(BPF_LD | BPF_H | BPF_IND, 2);
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

    #[test]
    fn port_limit_is_compiled_in() {
        let prog = probe_filter(666, 1);
        assert!(
            prog.iter()
                .any(|i| i.code == BPF_JMP | BPF_JGT | BPF_K && i.k == 666)
        );
    }
}
