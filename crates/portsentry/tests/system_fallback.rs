//! Hosts without nftables: bans go to a fallback backend (ipset with kernel timeouts,
//! one iptables rule per address, or blackhole routes), probes are read from the packet
//! socket, and bans still expire: by the kernel (ipset) or removed by the daemon
//! (iptables, routes).

mod common;

use std::time::Duration;

use common::checks::{REACT, alert_prefix, nmap};
use common::{Conf, OPEN, can_connect};

fn fallback_bans_and_expires(backend: &str, test: &str) {
    let tools = ["nmap", "iptables", "ip6tables", "ipset"];
    let Some(lab) = common::lab_or_skip(test, &tools, &["attacker", "client"]) else {
        return;
    };
    let (def, atk, client) = (&lab.defender, lab.peer("attacker"), lab.peer("client"));
    let conf = Conf::bans_only().toml(&format!(
        "[firewall]\nbackend = \"{backend}\"\n\n[bans.unverified]\ntime = \"4s\"\nescalation = 1\n"
    ));
    let d = lab.daemon(&conf, &["-atcp", "-audp"]);
    let t = Duration::from_secs(2);
    for v6 in [false, true] {
        let ip = atk.addr(v6);
        let target = def.addr(v6);
        d.check(
            can_connect(&atk.ns, target, OPEN, t),
            "attacker must connect before",
        );
        let mut args = vec!["-sS", "-p", "21-25"];
        if v6 {
            args.insert(0, "-6");
        }
        nmap(atk, &args, target);
        d.check(
            d.wait_for_line(&alert_prefix("TCP SYN/Normal scan", ip, "TCP"), REACT),
            format!("no alert for {ip}"),
        );
        let banned =
            format!("attackalert: Host {ip} has been banned in the kernel ({backend}) for 4s");
        d.check(
            d.wait_for_line(&banned, REACT),
            format!("no line {banned:?}"),
        );
        d.check(
            !can_connect(&atk.ns, target, OPEN, t),
            format!("{ip} still connects"),
        );
        d.check(
            can_connect(&client.ns, def.addr(v6), OPEN, t),
            "an innocent client was shut out",
        );
        // The ban ends by itself (ipset) or is removed by the daemon.
        d.check(
            common::wait_until(Duration::from_secs(20), Duration::from_millis(250), || {
                can_connect(&atk.ns, target, OPEN, Duration::from_secs(1))
            }),
            format!("{backend} ban on {ip} did not end"),
        );
    }
    d.check(
        d.wait_for_line("adminalert: ban on ", REACT),
        "no line about the ended ban",
    );
}

#[test]
fn fallback_ipset_bans_and_expires() {
    fallback_bans_and_expires("ipset", "fallback_ipset_bans_and_expires");
}

#[test]
fn fallback_iptables_bans_and_expires() {
    fallback_bans_and_expires("iptables", "fallback_iptables_bans_and_expires");
}

#[test]
fn fallback_route_bans_and_expires() {
    fallback_bans_and_expires("route", "fallback_route_bans_and_expires");
}

/// `portsentry flush --all` also lifts the bans of a fallback backend (here one iptables
/// rule per address, which nothing else would remove while the daemon is stopped).
#[test]
fn flush_all_lifts_fallback_bans() {
    let test = "flush_all_lifts_fallback_bans";
    let tools = ["nmap", "iptables", "ip6tables"];
    let Some(lab) = common::lab_or_skip(test, &tools, &["attacker"]) else {
        return;
    };
    let (def, atk) = (&lab.defender, lab.peer("attacker"));
    let conf = Conf::bans_only().toml("[firewall]\nbackend = \"iptables\"\n");
    let mut d = lab.daemon(&conf, &["-atcp"]);
    let t = Duration::from_secs(2);
    let ip = atk.addr(false);
    nmap(atk, &["-sS", "-p", "21-23"], def.addr(false));
    d.check(
        d.wait_for_line(
            &format!("attackalert: Host {ip} has been banned in the kernel (iptables) for 10m"),
            REACT,
        ),
        "no iptables ban",
    );
    d.stop();
    d.check(
        !can_connect(&atk.ns, def.addr(false), OPEN, t),
        "the ban did not outlive the daemon",
    );
    let bin = env!("CARGO_BIN_EXE_portsentry");
    let settings = conf.settings_path().display().to_string();
    let out = def.ns.exec(
        &[bin, "--settings", &settings, "flush", "--all"],
        Duration::from_secs(30),
    );
    d.check(out.success(), format!("flush --all: {out}"));
    let rules = def.ns.exec(&["iptables", "-S", "INPUT"], t).stdout;
    d.check(
        !rules.contains("portsentry"),
        format!("our iptables rule is left:\n{rules}"),
    );
    d.check(
        can_connect(&atk.ns, def.addr(false), OPEN, t),
        "flush --all did not lift the ban",
    );
}
