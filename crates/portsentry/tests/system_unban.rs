//! Issue 8: `portsentry unban` undoes the ban a PortSentry 1.2 config made. After a
//! scan banned the attacker through the kernel, KILL_ROUTE (`route add -host $TARGET$
//! reject`) and KILL_HOSTS_DENY, one `portsentry unban ADDR` leaves no kernel ban, no
//! reject route in the defender's namespace and no hosts.deny line, and the attacker
//! connects again.

mod common;

use std::time::Duration;

use common::checks::{REACT, hosts_deny_has, nmap};
use common::kernel::{client, wait_banned, wait_unbanned};
use common::{Conf, OPEN, can_connect};

/// The routes of the defender's namespace that name `ip`.
fn routes_to(ns: &common::Netns, ip: std::net::IpAddr) -> Vec<String> {
    let out = ns.exec(
        &["ip", "route", "show", "table", "all"],
        Duration::from_secs(5),
    );
    let ip = ip.to_string();
    out.stdout
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .any(|w| w == ip || w == format!("{ip}/32"))
        })
        .map(String::from)
        .collect()
}

#[test]
fn issue_8_unban_lifts_the_kernel_ban_the_kill_route_and_the_hosts_deny_line() {
    let test = "issue_8_unban_lifts_the_kernel_ban_the_kill_route_and_the_hosts_deny_line";
    let Some(lab) = common::lab_or_skip(test, &["nmap", "nc", "nft", "route"], &["attacker"])
    else {
        return;
    };
    let (def, atk) = (&lab.defender, lab.peer("attacker"));
    // Debian's portsentry.conf spells it /sbin/route; merged-/usr hosts have both.
    let route = if std::path::Path::new("/sbin/route").exists() {
        "/sbin/route"
    } else {
        "route"
    };
    let conf = Conf::new()
        .set("KILL_ROUTE", &format!("{route} add -host $TARGET$ reject"))
        .set("KILL_HOSTS_DENY", "ALL: $TARGET$ : DENY");
    let d = lab.daemon(&conf, &["-atcp", "-audp"]);
    let t = Duration::from_secs(3);
    let ip = atk.addr(false);
    // Not the service: a client that got its data is a known peer, never banned.
    assert!(common::can_reach(&atk.ns, def.addr(false), t));

    nmap(atk, &["-sS", "-p", "1,11,15"], def.addr(false));
    d.check(
        d.wait_for_line(
            &format!("attackalert: Host {ip} has been blocked via dropped route"),
            REACT,
        ),
        "KILL_ROUTE did not run",
    );
    d.check(
        d.has_line(&format!("(lift it with: portsentry unban {ip})")),
        "the ban line does not name the unban command",
    );
    d.check(wait_banned(&def.ns, ip, REACT).is_some(), "no kernel ban");
    d.check(
        !routes_to(&def.ns, ip).is_empty(),
        "KILL_ROUTE added no route",
    );
    d.check(hosts_deny_has_line(&conf, ip), "no hosts.deny line");
    d.check(
        !can_connect(&atk.ns, def.addr(false), OPEN, t),
        "the banned attacker still connects",
    );

    let out = client(&def.ns, &conf, &["unban", &ip.to_string()]);
    d.check(
        out.success()
            && out
                .stdout
                .starts_with(&format!("ok: ban on {ip}/32 lifted"))
            && out
                .stdout
                .contains(&format!("removed the hosts.deny line \"ALL: {ip} : DENY\""))
            && out.stdout.contains(&format!(
                "undid KILL_ROUTE with \"{route} del -host {ip} reject\""
            )),
        format!("unban: {out:?}"),
    );
    d.check(
        d.wait_for_line(
            &format!("adminalert: ban on {ip}/32 lifted by the administrator; removed"),
            t,
        ),
        "no unban line saying what was lifted",
    );
    d.check(
        wait_unbanned(&def.ns, ip, t),
        "the kernel ban is still there",
    );
    let left = routes_to(&def.ns, ip);
    d.check(left.is_empty(), format!("routes left: {left:?}"));
    d.check(
        !hosts_deny_has_line(&conf, ip),
        format!(
            "hosts.deny line left: {:?}",
            Conf::read(&conf.hosts_deny_path())
        ),
    );
    d.check(
        common::wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
            can_connect(&atk.ns, def.addr(false), OPEN, Duration::from_secs(2))
        }),
        "the unbanned attacker cannot connect",
    );
    // Nothing is left to lift.
    let out = client(&def.ns, &conf, &["unban", &ip.to_string()]);
    d.check(
        !out.success() && out.stdout.contains("error: no ban covers"),
        format!("second unban: {out:?}"),
    );
}

/// `ALL: $TARGET$ : DENY` as written (or `hosts_deny_has`'s own forms).
fn hosts_deny_has_line(conf: &Conf, ip: std::net::IpAddr) -> bool {
    hosts_deny_has(conf, ip)
        || Conf::read(&conf.hosts_deny_path())
            .lines()
            .any(|l| l.trim() == format!("ALL: {ip} : DENY"))
}
