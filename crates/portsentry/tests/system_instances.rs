//! Issue 8, item 1: several daemons on one host, as Debian's init script starts them
//! (`portsentry -tcp` and `portsentry -udp` with the same files). Both run, each
//! alerts and bans on its own protocol, the client commands see both, and stopping
//! one leaves the other's traps in place.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::checks::{REACT, alert_prefix, nmap};
use common::kernel::client;
use common::{Conf, Daemon, Lab, Netns, root_or_skip, wait_until};

/// Elements of a ban set of `table` in `ns`, as text ("" when it does not exist).
fn set_of(ns: &Netns, table: &str, set: &str) -> String {
    ns.exec(
        &["nft", "list", "set", "inet", table, set],
        Duration::from_secs(10),
    )
    .stdout
}

fn chain_of(ns: &Netns, table: &str) -> String {
    ns.exec(
        &["nft", "list", "chain", "inet", table, "input"],
        Duration::from_secs(10),
    )
    .stdout
}

fn banned_in(ns: &Netns, table: &str, ip: IpAddr) -> bool {
    wait_until(REACT, Duration::from_millis(100), || {
        set_of(ns, table, "banned4").contains(&ip.to_string())
    })
}

#[test]
fn issue_8_a_tcp_and_a_udp_daemon_share_the_host() {
    let test = "issue_8_a_tcp_and_a_udp_daemon_share_the_host";
    if !root_or_skip(test, &["nmap", "nft"]) {
        return;
    }
    let lab = Lab::builder().peer("tcpscan").peer("udpscan").build();
    let def = &lab.defender;
    let conf = Conf::bans_only()
        .set("TCP_PORTS", "1,11,15,79,111")
        .set("UDP_PORTS", "7,9,69,161");
    let tcp = Daemon::ready(&def.ns, &conf, &["-stcp"]);
    let mut udp = Daemon::ready(&def.ns, &conf, &["-sudp"]);
    let alive = udp.is_running();
    udp.check(alive, "the UDP daemon did not stay up beside the TCP one");
    let tables = def.ns.exec_ok(&["nft", "list", "tables"], REACT).stdout;
    assert!(
        tables.contains("table inet portsentry\n") && tables.contains("table inet portsentry_udp"),
        "one table per daemon expected:\n{tables}"
    );

    let (t_scan, u_scan) = (lab.peer("tcpscan"), lab.peer("udpscan"));
    let (t_ip, u_ip) = (t_scan.addr(false), u_scan.addr(false));
    let target = def.addr(false);
    nmap(t_scan, &["-sS", "-p", "1-120"], target);
    tcp.check(
        tcp.wait_for_line(&alert_prefix("TCP SYN/Normal scan", t_ip, "TCP"), REACT),
        "TCP scan not alerted by the TCP daemon",
    );
    tcp.check(
        banned_in(&def.ns, "portsentry", t_ip),
        "TCP scanner not banned",
    );
    nmap(u_scan, &["-sU", "-p", "7,9,69,161"], target);
    udp.check(
        udp.wait_for_line(&alert_prefix("UDP scan", u_ip, "UDP"), REACT),
        "UDP scan not alerted by the UDP daemon",
    );
    udp.check(
        banned_in(&def.ns, "portsentry_udp", u_ip),
        "UDP scanner not banned",
    );

    // The client commands see both daemons.
    let status = client(&def.ns, &conf, &["status"]);
    assert!(status.success(), "{status}");
    assert_eq!(status.stdout.matches("ok").count(), 2, "{status}");
    let listed = client(&def.ns, &conf, &["list"]);
    assert!(
        listed.stdout.contains(&t_ip.to_string()) && listed.stdout.contains(&u_ip.to_string()),
        "list does not show both daemons' bans:\n{listed}"
    );
    let unban = client(&def.ns, &conf, &["unban", &u_ip.to_string()]);
    assert!(unban.success(), "{unban}");
    assert!(
        wait_until(REACT, Duration::from_millis(100), || {
            !set_of(&def.ns, "portsentry_udp", "banned4").contains(&u_ip.to_string())
        }),
        "unban did not reach the UDP daemon"
    );

    // Stopping the UDP daemon removes only its traps.
    udp.stop();
    let udp_chain = chain_of(&def.ns, "portsentry_udp");
    // The traps are the rules matching watched ports (they jump to the trap chains).
    assert!(
        !udp_chain.contains("udp dport"),
        "UDP traps left after its stop:\n{udp_chain}"
    );
    let tcp_chain = chain_of(&def.ns, "portsentry");
    tcp.check(
        tcp_chain.contains("tcp dport"),
        format!("the TCP daemon's traps went with the UDP daemon:\n{tcp_chain}"),
    );
    drop(tcp);
}
