//! The two probe sources a scenario runs on (test names end in `_nft` / `_packet`),
//! and [`both_paths!`](crate::common::both_paths), which makes one test for each.

use std::net::IpAddr;

use super::checks::{self, REACT};
use super::{Conf, Daemon, Host, kernel};

/// Which probe source the daemon runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Our nftables table: traps, NFLOG, bans in the kernel set.
    Nft,
    /// The packet-socket sensor; bans only through the KILL_* commands.
    Packet,
}

impl Path {
    /// `conf` set up for this path. nftables is asked for explicitly, so a host where
    /// it does not work fails the `_nft` tests instead of quietly testing the other path.
    pub fn conf(self, conf: Conf) -> Conf {
        match self {
            Path::Nft => conf.toml("[firewall]\nbackend = \"nftables\""),
            Path::Packet => conf.packet_socket_only(),
        }
    }

    /// Starts the daemon in `def` with advanced TCP and UDP modes and checks that it
    /// really runs on this path ([`Path::check_active`]).
    pub fn start(self, def: &Host, conf: &Conf) -> Daemon {
        let d = Daemon::ready(&def.ns, conf, &["-atcp", "-audp"]);
        self.check_active(&d, def);
        d
    }

    /// The started daemon really runs on this path: its start lines, and whether our
    /// table exists in the defender's namespace.
    pub fn check_active(self, d: &Daemon, def: &Host) {
        let trapped = d.has_line("ports trapped in the kernel");
        let table = kernel::table_exists(&def.ns);
        match self {
            Path::Nft => d.check(
                trapped && table,
                format!("not on the nftables path (trap line: {trapped}, table: {table})"),
            ),
            Path::Packet => d.check(
                !trapped && !table && d.has_line("adminalert: Advanced mode will monitor first"),
                format!("not on the packet-socket path (trap line: {trapped}, table: {table})"),
            ),
        }
    }

    /// What this path adds to the legacy effects of a block: on nftables the exact ban
    /// line (once) and `ip` in the kernel's ban set; on the packet socket neither.
    pub fn check_banned(self, d: &Daemon, def: &Host, ip: IpAddr) {
        let line = kernel::ban_line(ip, "10m", 1);
        match self {
            Path::Nft => {
                d.check(d.wait_for_line(&line, REACT), format!("no line {line:?}"));
                let n = d
                    .lines_with(&format!("attackalert: Host {ip} has been banned"))
                    .len();
                d.check(n == 1, format!("{n} kernel ban lines for {ip}, expected 1"));
                d.check(
                    kernel::wait_banned(&def.ns, ip, REACT).is_some(),
                    format!(
                        "{ip} not in the kernel ban set:\n{}",
                        kernel::set_text(&def.ns, kernel::ban_set(ip.is_ipv6()))
                    ),
                );
            }
            Path::Packet => self.check_not_banned(d, def, ip),
        }
    }

    /// No kernel ban of `ip`: no ban line, not in the set (on nftables), no table (on
    /// the packet socket).
    pub fn check_not_banned(self, d: &Daemon, def: &Host, ip: IpAddr) {
        let lines: Vec<String> = d
            .lines_with("has been banned in the kernel")
            .into_iter()
            .filter(|l| checks::mentions(l, &ip.to_string()))
            .collect();
        d.check(
            lines.is_empty(),
            format!("kernel ban lines for {ip}: {lines:?}"),
        );
        match self {
            Path::Nft => d.check(
                kernel::ban_of(&def.ns, ip).is_none(),
                format!(
                    "{ip} is in the kernel ban set:\n{}",
                    kernel::set_text(&def.ns, kernel::ban_set(ip.is_ipv6()))
                ),
            ),
            Path::Packet => d.check(
                !kernel::table_exists(&def.ns),
                "the packet-socket path created an nftables table",
            ),
        }
    }
}

/// `both_paths!(BODY => NFT_TEST, PACKET_TEST)`: `#[test] fn NFT_TEST` calling
/// `BODY("NFT_TEST", Path::Nft)` and `#[test] fn PACKET_TEST` calling
/// `BODY("PACKET_TEST", Path::Packet)`. BODY is a function (or an expression giving
/// one) of the test name (`&'static str`) and the path. Attributes (such as
/// `#[ignore]`) may precede each name.
#[allow(unused_macros)] // not every test file has tests on both paths
macro_rules! both_paths {
    ($body:expr => $(#[$na:meta])* $nft:ident, $(#[$pa:meta])* $packet:ident $(,)?) => {
        #[test]
        $(#[$na])*
        fn $nft() {
            ($body)(stringify!($nft), $crate::common::Path::Nft);
        }

        #[test]
        $(#[$pa])*
        fn $packet() {
            ($body)(stringify!($packet), $crate::common::Path::Packet);
        }
    };
}
pub(crate) use both_paths;
