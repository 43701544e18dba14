//! PortSentry 2.x's `-i IF` on both probe paths: with `-i eth0` (the lab's interface)
//! a scan is seen and banned; with `-i` naming an interface the host does not have, the
//! same scan is neither logged nor banned, and the start says the interface is absent.
//! On nftables the traps carry `iifname`; on the packet socket the sensor reads only
//! the named interfaces' packets.
//!
//! Real daemon, nmap and nftables/AF_PACKET in the lab's namespaces (TESTING.md).

mod common;

use std::time::Duration;

use common::checks::{REACT, nmap};
use common::{Conf, Daemon, Lab, Path, both_paths};

fn start_2x(def: &common::Host, conf: &Conf, interface: &str) -> Daemon {
    let conf_path = conf.write();
    let mut d = Daemon::start_flags(
        &def.ns,
        conf,
        &conf_path,
        &["--stealth", "-i", interface, "-l", "stdout"],
    );
    d.wait_ready();
    d
}

fn only_the_named_interface_is_watched(test: &str, path: Path) {
    if !common::root_or_skip(test, &["nmap", "nft"]) {
        return;
    }
    let lab = Lab::builder().peer("scanner").peer("other").build();
    let def = &lab.defender;
    let target = def.addr(false);

    // An interface this host lacks: nothing is watched.
    let conf = path.conf(Conf::bans_only());
    let d = start_2x(def, &conf, "pst-none0");
    d.check(
        d.has_line("no interface pst-none0 here now"),
        "no line about the absent interface",
    );
    let other = lab.peer("other");
    nmap(other, &["-sS", "-p", "1-40"], target);
    let line = format!("Scan from: [{}]", other.addr(false));
    // nmap has finished; the daemon had a second more to log what it saw.
    std::thread::sleep(Duration::from_secs(1));
    d.check(
        !d.has_line(&line),
        format!("-i pst-none0: a scan over eth0 was logged ({path:?})"),
    );
    if path == Path::Nft {
        d.check(
            common::kernel::ban_of(&def.ns, other.addr(false)).is_none(),
            "-i pst-none0: a scan over eth0 was banned",
        );
    }
    drop(d);

    // The lab's interface: the scan is logged (and banned on nftables).
    let conf = path.conf(Conf::bans_only());
    let d = start_2x(def, &conf, "eth0");
    let scanner = lab.peer("scanner");
    nmap(scanner, &["-sS", "-p", "1-40"], target);
    let line = format!("Scan from: [{}]", scanner.addr(false));
    d.check(
        d.wait_for_line(&line, REACT),
        format!("-i eth0: the scan was not logged ({path:?})"),
    );
    if path == Path::Nft {
        d.check(
            common::kernel::wait_banned(&def.ns, scanner.addr(false), REACT).is_some(),
            "-i eth0: the scanner was not banned",
        );
    }
}

both_paths!(only_the_named_interface_is_watched =>
    interface_flag_limits_the_traps_nft,
    interface_flag_limits_the_sensor_packet,
);
