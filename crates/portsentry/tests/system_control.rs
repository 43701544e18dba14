//! The CLI talking to the running daemon over its control socket: `status`, a manual
//! `ban` (timed and permanent) that lands in the kernel set and is enforced, and
//! `unban` that lifts it at once; then `list` and `flush --all` without the daemon.

mod common;

use std::time::Duration;

use common::{Conf, OPEN, can_connect};

fn cli(def: &common::Host, conf: &Conf, args: &[&str]) -> common::Output {
    let bin = env!("CARGO_BIN_EXE_portsentry");
    let settings = conf.settings_path().display().to_string();
    let config = conf.conf_path().display().to_string();
    let mut argv = vec![bin, "-c", config.as_str(), "--settings", settings.as_str()];
    argv.extend_from_slice(args);
    def.ns.exec(&argv, Duration::from_secs(20))
}

#[test]
fn ban_unban_status_list_and_flush_from_the_cli() {
    let test = "ban_unban_status_list_and_flush_from_the_cli";
    let Some(lab) = common::lab_or_skip(test, common::SCAN_TOOLS, &["client"]) else {
        return;
    };
    let (def, client) = (&lab.defender, lab.peer("client"));
    let conf = Conf::bans_only();
    let mut d = lab.daemon(&conf, &["-atcp", "-audp"]);
    let t = Duration::from_secs(3);
    let ip = client.addr(false);
    let ip6 = client.addr(true);
    // Not the service: a client that got its data is a known peer, whose ban is
    // refused without --force (issue 7).
    assert!(common::can_reach(&client.ns, def.addr(false), t));

    let out = cli(def, &conf, &["status"]);
    d.check(
        out.stdout.starts_with("ok: portsentry") && out.stdout.contains("0 bans in force"),
        format!("status: {out:?}"),
    );

    let out = cli(def, &conf, &["ban", &ip.to_string(), "--time", "10m"]);
    d.check(out.stdout.starts_with("ok:"), format!("ban: {out:?}"));
    d.check(
        d.wait_for_line(
            &format!("attackalert: Host {ip}/32 has been banned by the administrator for 10m"),
            t,
        ),
        "no ban line in the log",
    );
    d.check(
        !can_connect(&client.ns, def.addr(false), OPEN, t),
        "banned client still connects",
    );
    let out = cli(def, &conf, &["ban", &ip6.to_string(), "--permanent"]);
    d.check(
        out.stdout.starts_with("ok:"),
        format!("permanent ban: {out:?}"),
    );
    d.check(
        !can_connect(&client.ns, def.addr(true), OPEN, t),
        "v6 client still connects",
    );
    let set6 = def
        .ns
        .exec(&["nft", "list", "set", "inet", "portsentry", "banned6"], t)
        .stdout;
    let elem = set6
        .lines()
        .find(|l| l.contains(&ip6.to_string()))
        .unwrap_or_default();
    d.check(
        !elem.contains("expires"),
        format!("a permanent ban must not expire: {set6}"),
    );

    let out = cli(def, &conf, &["status"]);
    d.check(
        out.stdout.contains("2 bans in force"),
        format!("status: {out:?}"),
    );
    let out = cli(def, &conf, &["unban", &ip.to_string()]);
    d.check(
        out.stdout.starts_with("ok: ban on"),
        format!("unban: {out:?}"),
    );
    d.check(
        can_connect(&client.ns, def.addr(false), OPEN, t),
        "unbanned client cannot connect",
    );
    let out = cli(def, &conf, &["unban", &ip.to_string()]);
    d.check(
        !out.success() && out.stdout.contains("error: no ban covers"),
        format!("second unban: {out:?}"),
    );

    // Without the daemon: list shows the saved permanent ban, flush --all removes all.
    d.stop();
    let out = cli(def, &conf, &["list"]);
    d.check(
        out.stdout.contains(&ip6.to_string()) && out.stdout.contains("permanent"),
        format!("list: {out:?}"),
    );
    d.check(
        !can_connect(&client.ns, def.addr(true), OPEN, t),
        "the permanent ban did not outlive the daemon",
    );
    let out = cli(def, &conf, &["flush", "--all"]);
    d.check(out.success(), format!("flush: {out:?}"));
    let tables = def.ns.exec(&["nft", "list", "tables"], t).stdout;
    d.check(
        !tables.contains("portsentry"),
        format!("table left: {tables}"),
    );
    // The ban also dropped the client's neighbour solicitations: give IPv6 neighbour
    // discovery a few seconds to recover (bounded).
    d.check(
        common::wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
            can_connect(&client.ns, def.addr(true), OPEN, Duration::from_secs(2))
        }),
        "flush did not lift the ban",
    );
    let out = cli(def, &conf, &["ban", &ip.to_string()]);
    d.check(
        !out.success() && out.stderr.contains("no daemon is listening on"),
        format!("ban without a daemon: {out:?}"),
    );
}

/// Without a ban backend (PortSentry 1.2 behaviour: only KILL_* commands act), the
/// hosts that KILL_ROUTE blocked are still recorded, so `portsentry list` shows them.
#[test]
fn legacy_kill_route_bans_are_listed() {
    let test = "legacy_kill_route_bans_are_listed";
    let Some(lab) = common::lab_or_skip(test, common::SCAN_TOOLS, &["attacker"]) else {
        return;
    };
    let (def, atk) = (&lab.defender, lab.peer("attacker"));
    let conf = Conf::new().unset("KILL_HOSTS_DENY").packet_socket_only();
    let d = lab.daemon(&conf, &["-atcp"]);
    let ip = atk.addr(false);
    common::checks::nmap(atk, &["-sS", "-p", "21-23"], def.addr(false));
    d.check(
        d.wait_for_line(
            &format!("attackalert: Host {ip} has been blocked via dropped route"),
            common::checks::REACT,
        ),
        "KILL_ROUTE did not run",
    );
    // Saved within a second of the ban.
    d.check(
        common::wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
            let out = cli(def, &conf, &["list"]);
            out.stdout.contains(&format!("{ip}/32")) && out.stdout.contains("KILL_* commands")
        }),
        format!(
            "list lacks the KILL_ROUTE ban: {:?}",
            cli(def, &conf, &["list"])
        ),
    );
}

/// Issue 7: the control socket refuses bans that cover everything, this host, or a
/// protected neighbour (here a resolver, protected like a gateway: no test namespace
/// has a default route), with the reason and nothing in the kernel sets; `--force`
/// bans a protected address and says what it overrode.
#[test]
fn issue7_ban_refuses_everything_and_the_protected_set_unless_forced() {
    let test = "issue7_ban_refuses_everything_and_the_protected_set_unless_forced";
    let Some(lab) = common::lab_or_skip(test, common::SCAN_TOOLS, &["client", "resolver"]) else {
        return;
    };
    let (def, client, resolver) = (&lab.defender, lab.peer("client"), lab.peer("resolver"));
    let conf = Conf::bans_only();
    let resolv_conf = conf.path("resolv.conf");
    std::fs::write(&resolv_conf, format!("nameserver {}\n", resolver.v4)).unwrap();
    let conf = conf.toml(&format!(
        "[protect]\nresolv_conf = \"{}\"",
        resolv_conf.display()
    ));
    let d = lab.daemon(&conf, &["-atcp", "-audp"]);
    let t = Duration::from_secs(3);
    let own = def.addr(false).to_string();
    let gw = resolver.addr(false).to_string();

    for (target, reason) in [
        (
            "0.0.0.0/0",
            "error: refused: 0.0.0.0/0 covers too much".to_string(),
        ),
        ("::/0", "error: refused: ::/0 covers too much".to_string()),
        (
            own.as_str(),
            format!("error: refused: {own}/32 is protected ({own}/32 is in the protected set"),
        ),
        (
            gw.as_str(),
            format!("error: refused: {gw}/32 is protected ({gw}/32 is in the protected set"),
        ),
    ] {
        let out = cli(def, &conf, &["ban", target, "--time", "10m"]);
        d.check(
            !out.success() && out.stdout.starts_with(&reason),
            format!("ban {target}: want {reason:?}, got {out:?}"),
        );
    }
    for set in ["banned4", "banned6", "bannednet4", "bannednet6"] {
        let listed = def
            .ns
            .exec(&["nft", "list", "set", "inet", "portsentry", set], t)
            .stdout;
        d.check(
            !listed.contains("elements"),
            format!("a refused ban reached {set}: {listed}"),
        );
    }
    let out = cli(def, &conf, &["status"]);
    d.check(
        out.stdout.contains("0 bans in force"),
        format!("status: {out:?}"),
    );
    d.check(
        can_connect(&client.ns, def.addr(false), OPEN, t)
            && can_connect(&client.ns, def.addr(true), OPEN, t),
        "a refused ban cut the client off",
    );

    let out = cli(def, &conf, &["ban", &gw, "--time", "10m", "--force"]);
    d.check(
        out.success()
            && out
                .stdout
                .starts_with(&format!("ok: {gw}/32 banned for 10m"))
            && out.stdout.contains(&format!(
                "--force overrode the protected set ({gw}/32 is protected"
            )),
        format!("forced ban: {out:?}"),
    );
    let set4 = def
        .ns
        .exec(&["nft", "list", "set", "inet", "portsentry", "banned4"], t)
        .stdout;
    d.check(
        set4.contains(&gw),
        format!("forced ban not in the set: {set4}"),
    );
    d.check(
        d.wait_for_line(
            &format!("has been banned by the administrator for 10m, offence 1; --force overrode the protected set ({gw}/32"),
            t,
        ),
        "no log line naming the override",
    );
    // `--force` never allows a ban of everything.
    let out = cli(def, &conf, &["ban", "0.0.0.0/0", "--force"]);
    d.check(
        !out.success() && out.stdout.contains("no --force allows this"),
        format!("forced ban of everything: {out:?}"),
    );
}

/// Issue 7: a state file holding `0.0.0.0/0`, `::/0` and the defender's own address
/// (written by a version that accepted them) is loaded without them: one log line says
/// how many and why, nothing of them reaches the kernel, the clients still connect, and
/// the one lawful ban of the file is put back.
#[test]
fn issue7_saved_bans_that_may_not_be_bans_are_not_put_back() {
    let test = "issue7_saved_bans_that_may_not_be_bans_are_not_put_back";
    let Some(lab) = common::lab_or_skip(test, common::SCAN_TOOLS, &["client"]) else {
        return;
    };
    let (def, client) = (&lab.defender, lab.peer("client"));
    let conf = Conf::bans_only();
    let own = def.addr(false);
    let lawful = lab.v4(200);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let record = |key: String| {
        format!(
            "{{\"key\":\"{key}\",\"offences\":1,\"banned_at\":{now},\"expires_at\":null,\"last_offence\":{now},\"reason\":\"saved\"}}"
        )
    };
    let records = [
        record("0.0.0.0/0".into()),
        record("::/0".into()),
        record(format!("{own}/32")),
        record(format!("{lawful}/32")),
    ];
    std::fs::write(
        conf.state_path(),
        format!(
            "{{\"format\":\"portsentry-state\",\"version\":1,\"saved_at\":{now},\"settled_through\":{now},\"bans\":[{}]}}",
            records.join(",")
        ),
    )
    .unwrap();
    let d = lab.daemon(&conf, &["-atcp", "-audp"]);
    let t = Duration::from_secs(3);
    d.check(
        d.wait_for_line(
            "adminalert: WARNING: 3 saved bans not put back (and removed from the kernel): 0.0.0.0/0 covers too much",
            t,
        ),
        "no line about the refused saved bans",
    );
    d.check(
        d.has_line(&format!("{own}/32 is protected")) && d.has_line("::/0 covers too much"),
        "the line does not say why",
    );
    let list = |set: &str| {
        def.ns
            .exec(&["nft", "list", "set", "inet", "portsentry", set], t)
            .stdout
    };
    for set in ["banned6", "bannednet4", "bannednet6"] {
        let listed = list(set);
        d.check(
            !listed.contains("elements"),
            format!("a refused saved ban reached {set}: {listed}"),
        );
    }
    let set4 = list("banned4");
    d.check(
        set4.contains(&lawful.to_string()) && !set4.contains(&own.to_string()),
        format!("banned4 should hold only {lawful}: {set4}"),
    );
    d.check(
        can_connect(&client.ns, def.addr(false), OPEN, t)
            && can_connect(&client.ns, def.addr(true), OPEN, t),
        "a refused saved ban cut the client off",
    );
}
