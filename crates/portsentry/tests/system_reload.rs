//! SIGHUP reloads the configuration without losing bans: the daemon checks the new
//! files first (a broken config is reported and the old one keeps running), then
//! re-executes itself, which re-applies the nftables table in place.

mod common;

use std::time::Duration;

use common::checks::{REACT, alert_prefix, nmap};
use common::{Conf, OPEN, can_connect};

const SYN: &str = "TCP SYN/Normal scan";

#[test]
fn sighup_applies_a_new_port_list_and_keeps_bans() {
    let test = "sighup_applies_a_new_port_list_and_keeps_bans";
    let Some(lab) = common::lab_or_skip(test, common::SCAN_TOOLS, &["first", "second"]) else {
        return;
    };
    let (def, first, second) = (&lab.defender, lab.peer("first"), lab.peer("second"));
    let conf = Conf::bans_only().set("TCP_PORTS", "23");
    let mut d = lab.daemon(&conf, &["-stcp"]);
    let t = Duration::from_secs(3);

    // Before the reload only 23 is a trap: a probe of 666 does nothing.
    nmap(second, &["-sS", "-p", "666"], def.addr(false));
    // The first source is banned through 23.
    nmap(first, &["-sS", "-p", "23"], def.addr(false));
    let ip1 = first.addr(false);
    d.check(
        d.wait_for_line(&alert_prefix(SYN, ip1, "TCP"), REACT),
        "no alert for 23",
    );
    // (Not the service: a client that got its data is a known peer, not banned by
    // the trap later on.)
    d.check(
        common::can_reach(&second.ns, def.addr(false), t),
        "a probe of an unlisted port banned the second source",
    );

    // A broken config is refused and the daemon keeps running. (A KILL_ROUTE that
    // names no host has no 1.2 reading we accept; a bad port entry no longer stops
    // startup, since 1.2 read it too.)
    std::fs::write(
        conf.conf_path(),
        "TCP_PORTS=\"23\"\nKILL_ROUTE=\"/sbin/route add -host reject\"\n",
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    d.check(
        d.wait_for_line("adminalert: ERROR: reload refused", REACT),
        "no 'reload refused' line for a broken config",
    );
    let running = d.is_running();
    d.check(running, "daemon died on a broken reload");

    // A valid new config with 666 added: written the way the harness writes it.
    let conf = conf.set("TCP_PORTS", "23,666");
    conf.write();
    d.signal(libc::SIGHUP);
    d.check(
        d.wait_for(REACT, |lines| {
            lines
                .iter()
                .filter(|l| l.contains("adminalert: PortSentry is now active and listening."))
                .count()
                >= 2
        }),
        "the daemon did not come back after the reload",
    );
    d.check(
        d.has_line("adminalert: PortSentry is restarting to load the new configuration"),
        "no reload line",
    );
    d.check(
        !can_connect(&first.ns, def.addr(false), OPEN, t),
        "the ban made before the reload was lost",
    );
    nmap(second, &["-sS", "-p", "666"], def.addr(false));
    let ip2 = second.addr(false);
    d.check(
        d.wait_for_line(&alert_prefix(SYN, ip2, "TCP"), REACT),
        "666 is not a trap after the reload",
    );
    d.check(
        !can_connect(&second.ns, def.addr(false), OPEN, t),
        "second source not banned after the reload",
    );
}

/// Another tool's `nft flush ruleset` (a firewall reload) removes our table: the daemon
/// notices within seconds, installs it again, and puts the bans in force back.
#[test]
fn table_removed_by_another_tool_is_reinstalled_with_its_bans() {
    let test = "table_removed_by_another_tool_is_reinstalled_with_its_bans";
    let Some(lab) = common::lab_or_skip(test, common::SCAN_TOOLS, &["attacker"]) else {
        return;
    };
    let (def, atk) = (&lab.defender, lab.peer("attacker"));
    let conf = Conf::bans_only();
    let d = lab.daemon(&conf, &["-atcp", "-audp"]);
    let t = Duration::from_secs(2);
    let ip = atk.addr(false);
    nmap(atk, &["-sS", "-p", "21-23"], def.addr(false));
    d.check(
        d.wait_for_line(&alert_prefix(SYN, ip, "TCP"), REACT),
        "no alert",
    );
    d.check(
        !can_connect(&atk.ns, def.addr(false), OPEN, t),
        "not banned",
    );
    // Saved within a second; then someone flushes the whole ruleset.
    std::thread::sleep(Duration::from_millis(1500));
    def.ns.exec_ok(&["nft", "flush", "ruleset"], t);
    d.check(
        d.wait_for_line("was removed by something else", Duration::from_secs(20)),
        "the daemon did not notice its table was gone",
    );
    d.check(
        d.wait_for_line("bans in force put back into the kernel", REACT),
        "no line about the bans put back",
    );
    d.check(
        common::wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
            !can_connect(&atk.ns, def.addr(false), OPEN, Duration::from_secs(1))
        }),
        "the ban was not put back",
    );
    // And the traps work again: a new scanner is banned.
    d.check(
        def.ns
            .exec(&["nft", "list", "table", "inet", "portsentry"], t)
            .stdout
            .contains("portsentry ban"),
        "trap rules missing after the re-install",
    );
}
