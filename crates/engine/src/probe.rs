//! The validated value every sensor produces and the engine consumes: one probe
//! against one local port, already classified. Nothing downstream sees raw bytes.

use std::fmt;
use std::net::IpAddr;

/// Transport protocol of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// Upper-case name as PortSentry writes it in logs and files ("TCP", "UDP").
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// TCP flag bits as they sit in byte 13 of the TCP header (plus the ECN bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;

    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
    fn bit(self, bit: u8) -> u8 {
        u8::from(self.has(bit))
    }
}

/// What kind of probe a packet is, named after the scan that sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// SYN alone: `nmap -sS`, and the first segment of `-sT`.
    Syn,
    /// FIN alone: `nmap -sF`.
    Fin,
    /// No flags: `nmap -sN`.
    Null,
    /// FIN+PSH+URG: `nmap -sX`.
    Xmas,
    /// ACK alone to a port with no connection: `nmap -sA` and `-sW` (the same probe).
    AckWindow,
    /// FIN+ACK to a port with no connection: `nmap -sM`.
    Maimon,
    /// Any other flag mix without an established context.
    Other(TcpFlags),
    /// A UDP datagram.
    Udp,
    /// A completed TCP handshake on a trap port that accepts connections (classic
    /// `-tcp` mode, or a `handshake_ports` trap): PortSentry 1.2's "Connect from host".
    /// The only kind whose source address is proven: it answered our SYN+ACK.
    Connect,
}

impl ProbeKind {
    /// Protocol this kind of probe travels on.
    pub fn proto(self) -> Proto {
        match self {
            ProbeKind::Udp => Proto::Udp,
            _ => Proto::Tcp,
        }
    }
}

/// The scan label used in `attackalert:` lines. The first four are PortSentry 1.2's
/// exact wording (without 1.2's stray leading space before "TCP NULL scan"); ACK/Window
/// and Maimon are ours, since 1.2 never saw those probes.
impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeKind::Syn => f.write_str("TCP SYN/Normal scan"),
            ProbeKind::Fin => f.write_str("TCP FIN scan"),
            ProbeKind::Null => f.write_str("TCP NULL scan"),
            ProbeKind::Xmas => f.write_str("TCP XMAS scan"),
            ProbeKind::AckWindow => f.write_str("TCP ACK/Window scan"),
            ProbeKind::Maimon => f.write_str("TCP Maimon (FIN/ACK) scan"),
            ProbeKind::Udp => f.write_str("UDP scan"),
            ProbeKind::Connect => f.write_str("TCP Connect"),
            ProbeKind::Other(flags) => write!(
                f,
                "Unknown Type: TCP Packet Flags: SYN: {} FIN: {} ACK: {} PSH: {} URG: {} RST: {}",
                flags.bit(TcpFlags::SYN),
                flags.bit(TcpFlags::FIN),
                flags.bit(TcpFlags::ACK),
                flags.bit(TcpFlags::PSH),
                flags.bit(TcpFlags::URG),
                flags.bit(TcpFlags::RST),
            ),
        }
    }
}

/// How strong the evidence against a source is: what every alert, history entry, ban
/// and `portsentry list` row names, and what the ban policy is chosen by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Evidence {
    /// One packet (SYN, FIN, NULL, XMAS, ACK/Window, Maimon, UDP): anyone can send it
    /// with any source address, so a ban on it is provisional.
    #[default]
    Unverified,
    /// The source completed a TCP handshake with us (a connect to a trap port that
    /// accepts connections): it cannot be forged blind.
    Verified,
    /// The administrator's own `portsentry ban`.
    Manual,
}

impl Evidence {
    /// The word used in logs, files and `portsentry list`.
    pub fn as_str(self) -> &'static str {
        match self {
            Evidence::Unverified => "unverified",
            Evidence::Verified => "verified",
            Evidence::Manual => "manual",
        }
    }

    /// Reads [`as_str`](Self::as_str)'s words back.
    pub fn from_word(word: &str) -> Option<Evidence> {
        match word {
            "unverified" => Some(Evidence::Unverified),
            "verified" => Some(Evidence::Verified),
            "manual" => Some(Evidence::Manual),
            _ => None,
        }
    }
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the probe source already knows about this packet, before the engine sees it.
/// Set by the source (from the NFLOG prefix of the kernel rule that logged it, or the
/// packet path's own checks), never by the engine, which passes it on untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Verdict {
    /// Nothing: the kernel only logged the packet (or there is no kernel fast path).
    #[default]
    Observed,
    /// The kernel's trap rule put the source into a ban set on this packet.
    KernelBanned,
    /// The source recently completed a real connection with this host (a known peer):
    /// the trap dropped the probe and banned nobody; unverified evidence from it is
    /// possibly forged.
    KnownPeer,
    /// The kernel's budget of new bans per second was spent: the trap dropped the probe
    /// and banned nobody (likely a forged flood).
    OverBudget,
    /// The ban set is full: the trap dropped the probe and could not ban.
    SetFull,
}

/// One classified probe: `src` touched local port `dport` on `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Probe {
    /// The remote address that sent the probe (the scanner, or who it claims to be).
    pub src: IpAddr,
    /// The local address that was probed.
    pub dst: IpAddr,
    /// The remote port the probe came from.
    pub sport: u16,
    /// The local port that was probed.
    pub dport: u16,
    pub kind: ProbeKind,
    /// IPv4 header carried options (IHL > 5): a detection-avoidance sign that 1.2 reports.
    pub ip_options: bool,
    /// TTL (IPv4) or hop limit (IPv6) as received.
    pub ttl: u8,
    /// Set by the probe source, never by the engine (see [`Verdict`]). The engine
    /// passes it on untouched in [`Action::Respond`](crate::engine::Action::Respond), so
    /// the response knows, for example, that the kernel element exists without a side
    /// table.
    pub verdict: Verdict,
}

impl Probe {
    pub fn proto(&self) -> Proto {
        self.kind.proto()
    }

    /// Whether the kernel's trap rule already banned the source on this packet.
    pub fn kernel_banned(&self) -> bool {
        self.verdict == Verdict::KernelBanned
    }

    /// How strong this probe is as evidence: only a completed handshake is verified.
    pub fn evidence(&self) -> Evidence {
        match self.kind {
            ProbeKind::Connect => Evidence::Verified,
            _ => Evidence::Unverified,
        }
    }
}
