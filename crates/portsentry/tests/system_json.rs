//! Issue 9: the control socket of a real daemon in a test namespace serves everyone
//! (100 idle connections do not hold up `status`), and the machine-readable answers
//! (`status --json`, `list --json`, `explain ADDR [--json]`) are parsed back and
//! checked against what the kernel and the daemon's log say: after a real `nmap -sS`
//! scan, the scanner's ban is listed and explained with its evidence; the defender's
//! own address, an ignored address and a resolver are explained as protected.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::checks::{REACT, nmap};
use common::kernel::{self, wait_banned};
use common::{Daemon, Lab, wait_until};
use serde_json::Value;

const MODES: &[&str] = &["-atcp", "-audp"];

fn json(out: &common::Output) -> Value {
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {out:?}"))
}

/// `status` while 100 connections that send nothing are held open on the daemon's
/// control socket: answered (issue 9's acceptance is "within 1 s"; the time is
/// measured and printed, not asserted: machines are shared). Before the fix the
/// daemon served one connection at a time with a 10 s read timeout: `status` waited
/// behind all 100 (up to 1,000 s) and the client gave up with "Resource temporarily
/// unavailable (os error 11)".
#[test]
fn issue_9_status_answers_while_100_idle_clients_hold_the_control_socket() {
    let test = "issue_9_status_answers_while_100_idle_clients_hold_the_control_socket";
    if !common::root_or_skip(test, &["nft"]) {
        return;
    }
    let lab = Lab::builder().build();
    let def = &lab.defender;
    let conf = kernel::kernel_conf();
    let mut d = Daemon::start(&def.ns, &conf, MODES);
    d.wait_ready();
    let socket = conf.control_path();
    let mut times = Vec::new();
    for round in 0..5 {
        let idle: Vec<UnixStream> = (0..100)
            .map(|_| UnixStream::connect(&socket).expect("connect to the control socket"))
            .collect();
        let start = Instant::now();
        let out = kernel::client(&def.ns, &conf, &["status"]);
        let took = start.elapsed();
        d.check(
            out.success() && out.stdout.starts_with("ok: portsentry"),
            format!("round {round}: status with 100 idle clients: {out:?}"),
        );
        // Still open on the daemon's side when status had its answer? (A client is
        // given 1.5 s for its line; counted for the report, not asserted.)
        let open = idle
            .iter()
            .filter(|s| {
                s.set_nonblocking(true).unwrap();
                let mut b = [0u8; 1];
                matches!((&**s).read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            })
            .count();
        eprintln!(
            "round {round}: status answered in {took:?} with 100 idle clients ({open} still open on the daemon's side)"
        );
        times.push(took);
        drop(idle);
    }
    times.sort();
    eprintln!(
        "status with 100 idle control clients: median {:?}, max {:?} (5 runs, including the client's start)",
        times[2], times[4]
    );
    // A client that sends nothing is told why it is closed.
    let mut s = UnixStream::connect(&socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = String::new();
    let _ = s.read_to_string(&mut line);
    d.check(
        line.starts_with("error: no request line within 1500 ms"),
        format!("idle client got {line:?}"),
    );
    let running = d.is_running();
    d.check(running, "the daemon died");
}

/// `status --json`, `list --json` and `explain` after a real SYN scan; `explain` of
/// protected addresses; and `--json` failures.
#[test]
fn issue_9_json_status_list_and_explain_after_a_scan() {
    let test = "issue_9_json_status_list_and_explain_after_a_scan";
    if !common::root_or_skip(test, &["nmap", "nft"]) {
        return;
    }
    let lab = Lab::builder()
        .peer("attacker")
        .peer("friend")
        .peer("resolver")
        .peer("client")
        .build();
    let (def, atk) = (&lab.defender, lab.peer("attacker"));
    let (friend, resolver) = (lab.peer("friend"), lab.peer("resolver"));
    let conf = kernel::kernel_conf().ignore(&friend.addr(false).to_string());
    let resolv_conf = conf.path("resolv.conf");
    std::fs::write(
        &resolv_conf,
        format!("nameserver {}\n", resolver.addr(false)),
    )
    .unwrap();
    let conf = conf.toml(&format!(
        "[protect]\nresolv_conf = \"{}\"",
        resolv_conf.display()
    ));
    let mut d = Daemon::start(&def.ns, &conf, MODES);
    d.wait_ready();
    let ip = atk.addr(false);
    let key = format!("{ip}/32");

    let status = json(&kernel::client(&def.ns, &conf, &["status", "--json"]));
    d.check(
        status["backend"] == "nftables"
            && status["table"] == "portsentry"
            && status["bans_in_force"] == 0
            && status["version"] == env!("CARGO_PKG_VERSION")
            && status["pid"].as_u64() == Some(d.pid() as u64)
            && status["fast_path"]["tcp"] == true
            && status["fast_path"]["udp"] == true
            && status["queues"]["reporter_capacity"] == 4096
            && status["engine"]["scan_trigger"] == 0,
        format!("status --json before the scan: {status:#}"),
    );
    let modes: Vec<&str> = status["modes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str())
        .collect();
    d.check(modes == ["atcp", "audp"], format!("modes: {status:#}"));

    nmap(atk, &["-sS", "-p", "21-25"], def.addr(false));
    d.check(
        wait_banned(&def.ns, ip, REACT).is_some(),
        format!("{ip} not banned in the kernel"),
    );
    d.check(
        d.wait_for_line(&kernel::ban_line(ip, "10m", 1), REACT),
        "no ban line",
    );

    // status: one unverified ban in force, the engine saw the probes.
    let mut status = Value::Null;
    wait_until(REACT, Duration::from_millis(200), || {
        status = json(&kernel::client(&def.ns, &conf, &["status", "--json"]));
        status["bans_in_force"] == 1
    });
    d.check(
        status["bans_in_force"] == 1
            && status["bans_by_evidence"]["unverified"] == 1
            && status["bans_by_evidence"]["verified"] == 0
            && status["bans_by_evidence"]["manual"] == 0
            && status["engine"]["probes"].as_u64() >= Some(1)
            && status["engine"]["responses"].as_u64() >= Some(1)
            && status["queues"]["reporter_depth"].as_u64() < Some(4096)
            && status["uptime_seconds"].as_u64().is_some(),
        format!("status --json after the scan: {status:#}"),
    );

    // list: the state file is saved about a second after the ban.
    let mut row = Value::Null;
    wait_until(REACT, Duration::from_millis(200), || {
        let list = json(&kernel::client(&def.ns, &conf, &["list", "--json"]));
        row = list["bans"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["address"] == key.as_str() && b["in_state_file"] == true)
            .cloned()
            .unwrap_or(Value::Null);
        !row.is_null()
    });
    let left = row["expires_in_seconds"].as_u64();
    d.check(
        row["evidence"] == "unverified"
            && row["in_kernel"] == true
            && row["permanent"] == false
            && row["offences"] == 1
            && row["table"] == "portsentry"
            && left.is_some_and(|s| s > 500 && s <= 600)
            && row["expires_at"].as_u64().is_some(),
        format!("list --json row of {key}: {row:#}"),
    );

    // explain the scanner: its ban, the engine's state, nothing protects it.
    let ex = json(&kernel::client(
        &def.ns,
        &conf,
        &["explain", &ip.to_string(), "--json"],
    ));
    let ban = &ex["bans"][0];
    let engine_tcp = ex["engine"]["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["proto"] == "tcp")
        .cloned()
        .unwrap_or(Value::Null);
    d.check(
        ex["address"] == ip.to_string()
            && ex["protected"].as_array().is_some_and(Vec::is_empty)
            && ex["known_peer"] == false
            && ban["network"] == key.as_str()
            && ban["in_force"] == true
            && ban["evidence"] == "unverified"
            && ban["offences"] == 1
            && ban["reason"].as_str().is_some_and(|r| r.contains("SYN"))
            && ban["expires_in_seconds"]
                .as_u64()
                .is_some_and(|s| s > 500 && s <= 600)
            && ex["history"].as_array().is_some_and(|h| {
                h.iter().any(|l| {
                    l.as_str().is_some_and(|l| {
                        l.contains(&format!("[unverified] Host: {ip}/{ip} Port: "))
                    })
                })
            })
            && engine_tcp["state"] == "blocked"
            && engine_tcp["hits"].as_u64() >= Some(1)
            && (21..=25).contains(&engine_tcp["last_port"].as_u64().unwrap_or(0)),
        format!("explain --json {ip}: {ex:#}"),
    );
    let text = kernel::client(&def.ns, &conf, &["explain", &ip.to_string()]);
    eprintln!(
        "status --json: {status}\nlist --json row: {row}\nexplain --json: {ex}\nexplain:\n{}",
        text.stdout
    );
    d.check(
        text.success()
            && text.stdout.contains(&format!(
                "  ban: {key} BANNED: unverified evidence, offence 1"
            ))
            && text.stdout.contains("  protected: no")
            && text.stdout.contains("  engine tcp: blocked for "),
        format!("explain {ip}: {text:?}"),
    );

    // What protects the defender's own address, an ignored peer and a resolver.
    for (who, by, words) in [
        (def.addr(false), "own_address", "an address of this host"),
        (friend.addr(false), "ignore_list", "ignore list entry"),
        (
            resolver.addr(false),
            "resolver",
            "a DNS resolver of this host",
        ),
    ] {
        let ex = json(&kernel::client(
            &def.ns,
            &conf,
            &["explain", &who.to_string(), "--json"],
        ));
        let found = ex["protected"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["by"] == by && p["network"] == format!("{who}/32"));
        d.check(
            found && ex["bans"].as_array().is_some_and(Vec::is_empty),
            format!("explain --json {who}: {ex:#}"),
        );
        let text = kernel::client(&def.ns, &conf, &["explain", &who.to_string()]);
        d.check(
            text.stdout
                .contains(&format!("  protected: {words} ({who}/32)")),
            format!("explain {who}: {text:?}"),
        );
    }
    let ignored = json(&kernel::client(
        &def.ns,
        &conf,
        &["explain", &friend.addr(false).to_string(), "--json"],
    ));
    d.check(
        ignored["engine"]["exempt"] == "ignore_list",
        format!("the engine's exemption of the ignored peer: {ignored:#}"),
    );

    // A client that used a real service is a known peer, and explain says so.
    let client = lab.peer("client");
    let _http = common::TcpServer::start(&def.ns, 80);
    d.check(
        common::net::connect_many(&client.ns, def.addr(false), 80, 1, Duration::from_secs(2)) == 1,
        "the client must reach the service",
    );
    let ex = json(&kernel::client(
        &def.ns,
        &conf,
        &["explain", &client.addr(false).to_string(), "--json"],
    ));
    d.check(
        ex["known_peer"] == true && ex["bans"].as_array().is_some_and(Vec::is_empty),
        format!("explain --json of a known peer: {ex:#}"),
    );

    // --json failures: one JSON object on stdout, non-zero exit.
    let bad = kernel::client(&def.ns, &conf, &["explain", "not-an-address", "--json"]);
    let v = json(&bad);
    d.check(
        !bad.success()
            && v["error"]
                .as_str()
                .is_some_and(|e| e.contains("not-an-address"))
            && v["exit_status"] == 4,
        format!("explain of a bad address: {bad:?}"),
    );
    d.stop();
    let gone = kernel::client(&def.ns, &conf, &["status", "--json"]);
    let v = json(&gone);
    d.check(
        !gone.success()
            && v["error"].as_str().is_some_and(|e| {
                e.starts_with("no daemon is listening on ")
                    && e.ends_with("(is portsentry running?)")
            }),
        format!("status --json without a daemon: {gone:?}"),
    );
    let gone = kernel::client(&def.ns, &conf, &["status"]);
    d.check(
        !gone.success() && gone.stderr.contains("no daemon is listening on "),
        format!("status without a daemon: {gone:?}"),
    );
    // list works without the daemon, and still shows the ban.
    let list = json(&kernel::client(&def.ns, &conf, &["list", "--json"]));
    d.check(
        list["bans"]
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["address"] == key.as_str())),
        format!("list --json without the daemon: {list:#}"),
    );
}

/// Without nftables bans (`backend = "none"`, the packet socket and the KILL_*
/// commands), `status --json` says so; a client that is not root is told that only
/// root may control portsentry (text and JSON), not a raw "Permission denied".
#[test]
fn issue_9_status_json_without_a_backend_and_the_error_for_non_root() {
    let test = "issue_9_status_json_without_a_backend_and_the_error_for_non_root";
    if !common::root_or_skip(test, &["setpriv"]) {
        return;
    }
    let lab = Lab::builder().build();
    let def = &lab.defender;
    let conf = common::Conf::new().packet_socket_only();
    let mut d = Daemon::start(&def.ns, &conf, MODES);
    d.wait_ready();
    let status = json(&kernel::client(&def.ns, &conf, &["status", "--json"]));
    d.check(
        status["backend"] == "none"
            && status["table"].is_null()
            && status["fast_path"]["tcp"] == false
            && status["fast_path"]["udp"] == false
            && status["bans_in_force"] == 0
            && status["engine"]["tracked_sources"] == 0,
        format!("status --json without a backend: {status:#}"),
    );
    // The temp dir is root's (0700): open it for reading so that the client as
    // nobody gets as far as the socket (0600), which is what is tested here.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(conf.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |args: &[&str]| {
        let conf_path = conf.conf_path().display().to_string();
        let settings = conf.settings_path().display().to_string();
        let mut argv = vec![
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            common::daemon_bin(),
            "-c",
            &conf_path,
            "--settings",
            &settings,
        ];
        argv.extend_from_slice(args);
        def.ns.exec(&argv, Duration::from_secs(20))
    };
    let out = as_nobody(&["status"]);
    d.check(
        !out.success() && out.stderr.contains("only root may control portsentry"),
        format!("status as nobody: {out:?}"),
    );
    let out = as_nobody(&["explain", "198.18.0.9", "--json"]);
    let v = json(&out);
    d.check(
        !out.success()
            && v["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("only root may control portsentry"))
            && v["exit_status"] == 4,
        format!("explain --json as nobody: {out:?}"),
    );
}
