//! Prefix grouping of bans (`[bans] group_v4 = 24`, `group_v6 = 64`-style): a scan from
//! one address bans its whole network in the kernel's interval set, so a neighbour in
//! the same network is shut out too, while the defender's own (protected) address and
//! hosts outside the network are not.

mod common;

use std::time::Duration;

use common::checks::{REACT, alert_prefix, nmap};
use common::{Conf, OPEN, can_connect};

#[test]
fn grouped_ban_covers_the_scanners_network() {
    let test = "grouped_ban_covers_the_scanners_network";
    let peers = ["attacker", "neighbour"];
    let Some(lab) = common::lab_or_skip(test, common::SCAN_TOOLS, &peers) else {
        return;
    };
    let (def, atk, neighbour) = (&lab.defender, lab.peer("attacker"), lab.peer("neighbour"));
    // The whole lab is one /24: group by /24 for IPv4 and /112 for IPv6 (the lab's
    // IPv6 subnet), so the neighbour shares the attacker's ban.
    let conf = Conf::bans_only().toml("[bans]\ngroup_v4 = 24\ngroup_v6 = 112\n");
    let d = lab.daemon(&conf, &["-atcp", "-audp"]);
    let t = Duration::from_secs(3);
    assert!(
        can_connect(&neighbour.ns, def.addr(false), OPEN, t),
        "neighbour must work before"
    );
    assert!(
        can_connect(&neighbour.ns, def.addr(true), OPEN, t),
        "neighbour v6 must work before"
    );

    let ip = atk.addr(false);
    nmap(atk, &["-sS", "-p", "21-25"], def.addr(false));
    d.check(
        d.wait_for_line(&alert_prefix("TCP SYN/Normal scan", ip, "TCP"), REACT),
        "no alert",
    );
    let net = lab.subnet_v4();
    let banned_line = format!("(nftables set bannednet4: {net})");
    d.check(
        d.wait_for_line(&banned_line, REACT),
        format!("no line with {banned_line:?}"),
    );
    let listing = def
        .ns
        .exec(
            &["nft", "list", "set", "inet", "portsentry", "bannednet4"],
            t,
        )
        .stdout;
    d.check(
        listing.contains(&net),
        format!("{net} not in bannednet4:\n{listing}"),
    );
    d.check(
        !can_connect(&neighbour.ns, def.addr(false), OPEN, t),
        "neighbour in the banned /24 can still connect over IPv4",
    );
    // IPv6 is grouped separately: nothing banned there yet.
    d.check(
        can_connect(&neighbour.ns, def.addr(true), OPEN, t),
        "IPv6 neighbour was shut out by an IPv4 ban",
    );
    let ip6 = atk.addr(true);
    nmap(atk, &["-6", "-sS", "-p", "21-25"], def.addr(true));
    d.check(
        d.wait_for_line(&alert_prefix("TCP SYN/Normal scan", ip6, "TCP"), REACT),
        "no IPv6 alert",
    );
    d.check(
        d.wait_for_line("(nftables set bannednet6: ", REACT),
        "no IPv6 network ban line",
    );
    d.check(
        !can_connect(&neighbour.ns, def.addr(true), OPEN, t),
        "IPv6 neighbour in the banned network can still connect",
    );
    // The defender itself (protected) still reaches its own service through the veth.
    d.check(
        can_connect(&def.ns, def.addr(false), OPEN, t),
        "the defender lost its own service",
    );
}
