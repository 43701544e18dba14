//! Acceptance tests for issue 10, "Share bans across a fleet through Redis Streams".
//!
//! Several defender namespaces (each a real daemon with nftables), one namespace running
//! a real `redis-server` (started here on a 198.18.x address with a temp dir, never the
//! host's service), and scanner namespaces, all on the lab's bridge:
//! - a verified ban on A (a completed handshake on a trap port) reaches B and C, and the
//!   scanner then cannot connect to B's open service;
//! - `nmap -sS` against A alone (unverified) and forged SYNs against A are not applied
//!   on B or C; a sweep of A, B and C is (k of n, k = 3), also on D, never scanned;
//! - `unban --origin A` on B lifts A's bans on B and C;
//! - Redis stopped: A still bans; restarted: B catches up, an expired ban is skipped; a
//!   restarted B reads on from the stream ID in its state file;
//! - a wrong MAC (and a replayed old entry), a ban of B's gateway or own address, and a
//!   flood of 10,000 bans from one origin are rejected, refused and rate-limited, one
//!   log line each;
//! - over TLS with an ACL user, bans spread; a password file others can read stops the
//!   daemon at start.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::checks::{QUIET, REACT, nmap};
use common::kernel::{ban_of, client, set_elems, wait_banned, wait_unbanned};
use common::{Conf, Daemon, Host, Lab, Netns, Proc, TcpServer, can_connect, wait_until};
use portsentry::fleet::message::{Kind, Message};
use portsentry_engine::Evidence;

const KEY: &str = "fleet-test-key-0123456789abcdef";
const HANDSHAKE: u16 = 2323;
const MODES: &[&str] = &["-atcp"];
const REDIS_PORT: u16 = 6379;
const STREAM: &str = "portsentry:bans";

fn fleet_test_or_skip(test: &str) -> bool {
    common::root_or_skip(test, &["nmap", "nft", "redis-server", "hping3"])
}

/// A redis-server of our own inside `host`'s namespace (temp dir, no persistence).
struct Redis {
    proc: Option<Proc>,
    dir: tempfile::TempDir,
    addr: Ipv4Addr,
    /// Arguments after the common ones (TLS, ACL users).
    extra: Vec<String>,
    scheme: &'static str,
}

impl Redis {
    fn start(host: &Host) -> Redis {
        Redis::start_with(host, |_| (Vec::new(), "redis"))
    }

    /// With arguments of its own, made from the server's temp dir; and its URL scheme.
    fn start_with(
        host: &Host,
        extra: impl FnOnce(&std::path::Path) -> (Vec<String>, &'static str),
    ) -> Redis {
        let dir = tempfile::Builder::new()
            .prefix("pst-redis-")
            .tempdir()
            .unwrap();
        let (extra, scheme) = extra(dir.path());
        let mut r = Redis {
            proc: None,
            dir,
            addr: host.v4,
            extra,
            scheme,
        };
        r.up(&host.ns);
        r
    }

    fn up(&mut self, ns: &Netns) {
        let addr = self.addr.to_string();
        let port = REDIS_PORT.to_string();
        let dir = self.dir.path().display().to_string();
        let tls = self.scheme == "rediss";
        let mut argv: Vec<&str> = vec![
            "redis-server",
            if tls { "--tls-port" } else { "--port" },
            &port,
            "--bind",
            &addr,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir,
            "--protected-mode",
            "no",
        ];
        if tls {
            argv.extend(["--port", "0"]);
        }
        argv.extend(self.extra.iter().map(String::as_str));
        self.proc = Some(ns.spawn(&argv));
        let ip = IpAddr::V4(self.addr);
        assert!(
            wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
                can_connect(ns, ip, REDIS_PORT, Duration::from_millis(300))
            }),
            "redis-server did not start on {addr}:{port}"
        );
    }

    fn down(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
    }

    fn url(&self) -> String {
        format!("{}://{}:{REDIS_PORT}/", self.scheme, self.addr)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.down();
    }
}

/// A defender's conf: kernel bans only, a handshake trap port, the fleet on.
fn node_conf(name: &str, redis: &Redis, extra: &str) -> Conf {
    let conf = Conf::bans_only();
    let key = conf.path("fleet.key");
    std::fs::write(&key, format!("{KEY}\n")).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    conf.toml(&format!(
        "[listen]\nhandshake_ports = [{HANDSHAKE}]\n\n[fleet]\nurl = \"{}\"\nkey_file = \"{}\"\nnode = \"{name}\"\nquorum = 3\n\n{extra}",
        redis.url(),
        key.display()
    ))
}

fn start(host: &Host, conf: &Conf) -> Daemon {
    let d = Daemon::ready(&host.ns, conf, MODES);
    let connected = "fleet: connected to ";
    d.check(
        d.wait_for_line(connected, REACT),
        format!("no line {connected:?}"),
    );
    d
}

fn v4(h: &Host) -> IpAddr {
    IpAddr::V4(h.v4)
}

/// A completed handshake on A's trap port: verified evidence.
fn handshake(from: &Host, to: &Host) {
    let _ = can_connect(&from.ns, v4(to), HANDSHAKE, Duration::from_secs(2));
}

/// `portsentry status` of a node.
fn status(host: &Host, conf: &Conf) -> String {
    client(&host.ns, conf, &["status"]).stdout
}

/// The "received N" count of a node's fleet status line.
fn received(host: &Host, conf: &Conf) -> u64 {
    let s = status(host, conf);
    s.split("received ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no received count in status: {s}"))
}

/// XADD `fields` to the stream, from the test (a thread in the Redis namespace).
fn inject(redis_ns: &Netns, url: String, entries: Vec<Vec<(&'static str, String)>>) {
    redis_ns.run_in(move || {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut con = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap();
        for chunk in entries.chunks(500) {
            let mut pipe = redis::pipe();
            for fields in chunk {
                let cmd = pipe.cmd("XADD").arg(STREAM).arg("*");
                for (k, v) in fields {
                    cmd.arg(*k).arg(v);
                }
                cmd.ignore();
            }
            pipe.query::<()>(&mut con).unwrap();
        }
    });
}

fn ban_message(origin: &str, net: &str, secs: u64) -> Message {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Message {
        kind: Kind::Ban,
        origin: origin.into(),
        net: net
            .parse::<ipnet::IpNet>()
            .or_else(|_| net.parse::<IpAddr>().map(ipnet::IpNet::from))
            .unwrap(),
        evidence: Evidence::Verified,
        scan: "TCP connect to TCP port 23".into(),
        ports: "23".into(),
        sent: now,
        ends: Some(now + secs),
        offences: 1,
        subject: String::new(),
    }
}

/// Issue 10 acceptance: verified bans spread; one node's unverified or forged evidence
/// does not; k of n does, also on a node never scanned; `unban --origin` revokes.
#[test]
fn issue10_verified_bans_spread_unverified_need_k_of_n_and_unban_origin_revokes() {
    let test = "issue10_verified_bans_spread_unverified_need_k_of_n_and_unban_origin_revokes";
    if !fleet_test_or_skip(test) {
        return;
    }
    let lab = Lab::builder()
        .peer("b")
        .peer("c")
        .peer("d")
        .peer("redis")
        .peer("scan1")
        .peer("scan2")
        .peer("scan3")
        .build();
    let a = &lab.defender;
    let (b, c, d_host) = (lab.peer("b"), lab.peer("c"), lab.peer("d"));
    let (s1, s2, s3) = (lab.peer("scan1"), lab.peer("scan2"), lab.peer("scan3"));
    let redis = Redis::start(lab.peer("redis"));
    let _open_b = TcpServer::start(&b.ns, common::OPEN);
    let confs: Vec<Conf> = ["node-a", "node-b", "node-c", "node-d"]
        .iter()
        .map(|n| {
            // B also serves its metrics, for the fleet series.
            let extra = if *n == "node-b" {
                "[metrics]\nlisten = \"127.0.0.1:9512\"\n"
            } else {
                ""
            };
            node_conf(n, &redis, extra)
        })
        .collect();
    let hosts = [a, b, c, d_host];
    let daemons: Vec<Daemon> = hosts.iter().zip(&confs).map(|(h, c)| start(h, c)).collect();
    let (da, db, dc, dd) = (&daemons[0], &daemons[1], &daemons[2], &daemons[3]);

    // (scan1 does not talk to B before: a host that exchanged data with B is B's known
    // peer, and B refuses another node's ban of it; see the flood test for refusals.)

    // 1. Verified evidence on A: banned on A, then on B and C.
    handshake(s1, a);
    let ip1 = v4(s1);
    da.check(
        wait_banned(&a.ns, ip1, REACT).is_some(),
        "A did not ban scan1",
    );
    for (h, dn) in [(b, db), (c, dc)] {
        dn.check(
            wait_banned(&h.ns, ip1, REACT).is_some(),
            format!("{} did not get A's verified ban of {ip1}", h.role),
        );
        let line = format!("fleet: {ip1}/32 banned for ");
        dn.check(dn.wait_for_line(&line, REACT), format!("no line {line:?}"));
    }
    db.check(
        !can_connect(&s1.ns, v4(b), common::OPEN, Duration::from_secs(2)),
        "scan1 still connects to B's open service after A's verified ban",
    );
    // `list` on B names the origin; `status` shows the link.
    let list = client(&b.ns, &confs[1], &["list"]).stdout;
    db.check(
        list.lines()
            .any(|l| l.starts_with(&format!("{ip1}/32")) && l.contains("from fleet node node-a")),
        format!("B's list does not name node-a as the origin:\n{list}"),
    );
    let st = status(b, &confs[1]);
    db.check(
        st.contains("fleet: connected to redis://")
            && st.contains("as node node-b")
            && !st.contains("last ID -,")
            && st.contains(" lag ")
            && st.contains("applied 1,"),
        format!("status: {st}"),
    );
    // The same in `status --json`.
    let json = client(&b.ns, &confs[1], &["status", "--json"]).stdout;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    let fleet = &v["fleet"];
    db.check(
        fleet["connected"] == true
            && fleet["node"] == "node-b"
            && fleet["applied"] == 1
            && fleet["last_id"].is_string()
            && fleet["url"]
                .as_str()
                .is_some_and(|u| u.starts_with("redis://")),
        format!("status --json fleet: {json}"),
    );
    // And on B's metrics endpoint.
    let metrics = b.ns.run_in(|| {
        use std::io::{Read, Write};
        let mut out = String::new();
        if let Ok(mut s) = std::net::TcpStream::connect("127.0.0.1:9512") {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
            let _ = s.read_to_string(&mut out);
        }
        out
    });
    db.check(
        metrics
            .lines()
            .any(|l| l == "portsentry_fleet_bans_total{event=\"applied\"} 1")
            && metrics.lines().any(|l| l == "portsentry_fleet_connected 1"),
        format!("B's metrics lack the fleet series:\n{metrics}"),
    );

    // 2. nmap -sS against A alone: A bans (unverified) and reports; B and C read the
    // report (their received count goes up) and do not ban.
    let before_b = received(b, &confs[1]);
    let before_c = received(c, &confs[2]);
    nmap(s2, &["-sS", "-p", "21-25"], v4(a));
    let ip2 = v4(s2);
    da.check(
        wait_banned(&a.ns, ip2, REACT).is_some(),
        "A did not ban scan2",
    );
    // Forged SYNs against A from an address of the test range that never scans.
    let forged: IpAddr = IpAddr::V4(lab.v4(200));
    let f = forged.to_string();
    let t = v4(a).to_string();
    s2.ns.exec(
        &["hping3", "-q", "-S", "-c", "3", "-p", "23", "-a", &f, &t],
        Duration::from_secs(10),
    );
    da.check(
        wait_banned(&a.ns, forged, REACT).is_some(),
        "A did not ban the forged source",
    );
    for (h, conf, before, dn) in [(b, &confs[1], before_b, db), (c, &confs[2], before_c, dc)] {
        dn.check(
            wait_until(REACT, Duration::from_millis(100), || {
                received(h, conf) >= before + 2
            }),
            format!("{} did not receive A's two reports", h.role),
        );
    }
    std::thread::sleep(QUIET);
    for (h, dn) in [(b, db), (c, dc)] {
        dn.check(
            ban_of(&h.ns, ip2).is_none(),
            format!("{} banned scan2 on A's word alone", h.role),
        );
        dn.check(
            ban_of(&h.ns, forged).is_none(),
            format!("{} banned the forged source on A's word alone", h.role),
        );
    }

    // 3. A sweep of A, B and C: three nodes report scan3, so D bans it too.
    for h in [a, b, c] {
        nmap(s3, &["-sS", "-p", "21-23"], v4(h));
    }
    let ip3 = v4(s3);
    dd.check(
        wait_banned(&d_host.ns, ip3, REACT).is_some(),
        "D did not apply the k-of-n ban of the sweep",
    );
    let line = format!("fleet: {ip3}/32 banned for ");
    dd.check(
        dd.lines_with(&line)
            .iter()
            .any(|l| l.contains("reported by 3 nodes") && l.contains("node-a, node-b, node-c")),
        format!("D has no k-of-n line for {ip3}"),
    );
    dd.check(
        ban_of(&d_host.ns, ip2).is_none(),
        "D banned scan2 (one report)",
    );

    // 4. unban --origin node-a on B: A's bans lifted on B and on C; A keeps its own.
    let out = client(&b.ns, &confs[1], &["unban", "--origin", "node-a"]);
    db.check(
        out.success() && out.stdout.contains("bans from fleet node node-a lifted"),
        format!("unban --origin: {out}"),
    );
    for (h, dn) in [(b, db), (c, dc)] {
        dn.check(
            wait_unbanned(&h.ns, ip1, REACT),
            format!("{} still bans scan1 after unban --origin node-a", h.role),
        );
    }
    dc.check(
        dc.wait_for_line(
            "fleet: every ban from node node-a revoked by node node-b: 1 lifted here",
            REACT,
        ),
        "no revocation line on C",
    );
    da.check(ban_of(&a.ns, ip1).is_some(), "A lost its own ban of scan1");
    db.check(
        can_connect(&s1.ns, v4(b), common::OPEN, Duration::from_secs(2)),
        "scan1 cannot reach B's open service after the revocation",
    );
    drop(daemons);
}

/// Issue 10 acceptance: Redis stopped, A still bans; restarted, B catches up on what A
/// banned meanwhile, and skips the ban that expired. A restarted B reads on from the
/// stream ID in its state file.
#[test]
fn issue10_redis_down_bans_still_made_and_caught_up_after() {
    let test = "issue10_redis_down_bans_still_made_and_caught_up_after";
    if !fleet_test_or_skip(test) {
        return;
    }
    let lab = Lab::builder()
        .peer("b")
        .peer("redis")
        .peer("scan1")
        .peer("scan2")
        .build();
    let (a, b) = (&lab.defender, lab.peer("b"));
    let (s1, s2) = (lab.peer("scan1"), lab.peer("scan2"));
    let redis_host = lab.peer("redis");
    let mut redis = Redis::start(redis_host);
    let conf_a = node_conf("node-a", &redis, "");
    let conf_b = node_conf("node-b", &redis, "");
    let da = start(a, &conf_a);
    let mut db = start(b, &conf_b);

    redis.down();
    da.check(
        da.wait_for_line("fleet: cannot reach redis://", REACT),
        "A did not log the lost link",
    );
    // A bans locally: a verified ban, and two manual ones, one expiring before Redis
    // is back.
    handshake(s1, a);
    let ip1 = v4(s1);
    da.check(
        wait_banned(&a.ns, ip1, REACT).is_some(),
        "A did not ban with Redis down",
    );
    let short = lab.v4(202).to_string();
    let short = short.as_str();
    let out = client(&a.ns, &conf_a, &["ban", short, "--time", "2s"]);
    da.check(out.success(), format!("ban: {out}"));
    let long = IpAddr::V4(lab.v4(201));
    let out = client(&a.ns, &conf_a, &["ban", &long.to_string(), "--time", "1h"]);
    da.check(out.success(), format!("ban: {out}"));
    std::thread::sleep(Duration::from_secs(3));

    redis.up(&redis_host.ns);
    da.check(
        da.wait_for_line("fleet: connection to redis://", REACT),
        "A did not log the link back",
    );
    for ip in [ip1, long] {
        db.check(
            wait_banned(&b.ns, ip, REACT).is_some(),
            format!("B did not catch up on A's ban of {ip}"),
        );
    }
    std::thread::sleep(QUIET);
    db.check(
        ban_of(&b.ns, short.parse().unwrap()).is_none(),
        "B applied a ban that had expired",
    );
    // One line per change of state, not one per retry.
    for d in [&da, &db] {
        d.check(
            d.lines_with("fleet: cannot reach redis://").len() == 1
                && d.lines_with("fleet: connection to redis://").len() == 1,
            "not exactly one lost and one back line",
        );
    }

    // B stopped; A bans meanwhile; B started again reads on from its saved ID.
    db.check(
        wait_until(REACT, Duration::from_millis(200), || {
            Conf::read(&conf_b.state_path()).contains("\"fleet_last_id\"")
        }),
        "B's state file has no fleet_last_id",
    );
    db.stop();
    let before = db.lines_with("fleet: ").len();
    handshake(s2, a);
    let ip2 = v4(s2);
    da.check(
        wait_banned(&a.ns, ip2, REACT).is_some(),
        "A did not ban scan2",
    );
    std::thread::sleep(Duration::from_millis(500));
    let db2 = start(b, &conf_b);
    db2.check(
        wait_banned(&b.ns, ip2, REACT).is_some(),
        "B did not catch up after its restart",
    );
    db2.check(
        db2.lines_with("fleet: connected to ")
            .iter()
            .any(|l| !l.contains("reading after 0-0")),
        "B did not read on from its saved stream ID",
    );
    // Bans applied before the restart were not applied again (they were restored from
    // the state file, not read from the stream).
    let again = format!("fleet: {ip1}/32 banned for ");
    db2.check(
        db2.lines_with(&again).is_empty(),
        "B applied A's first ban again",
    );
    let _ = before;
}

/// Issue 10 acceptance: a message with a wrong MAC, a ban of B's gateway and of B's own
/// address, and a flood of 10,000 bans from one origin: rejected, refused and
/// rate-limited, each with one log line; none of them reaches B's set (the flood only
/// up to its burst).
#[test]
fn issue10_wrong_mac_gateway_and_flood_are_rejected_refused_and_rate_limited() {
    let test = "issue10_wrong_mac_gateway_and_flood_are_rejected_refused_and_rate_limited";
    if !fleet_test_or_skip(test) {
        return;
    }
    let lab = Lab::builder().peer("redis").build();
    let b = &lab.defender;
    let redis_host = lab.peer("redis");
    let redis = Redis::start(redis_host);
    // The lab has no default route (TESTING.md): B's gateway is given as it would be
    // found, in the protected set ([protect] extra holds what the route table would).
    let gateway = lab.v4(254);
    let conf = node_conf(
        "node-b",
        &redis,
        &format!("[protect]\nextra = [\"{gateway}/32\"]\n"),
    );
    let db = start(b, &conf);

    // Wrong MAC: signed with another key.
    let other = IpAddr::V4(lab.v4(77));
    let forged =
        ban_message("node-a", &other.to_string(), 3600).encode(b"not the fleet key at all");
    // The gateway and B's own address, signed with the fleet key.
    let gw = ban_message("node-a", &gateway.to_string(), 3600).encode(KEY.as_bytes());
    let own = ban_message("node-a", &b.v4.to_string(), 3600).encode(KEY.as_bytes());
    // A valid entry signed an hour ago, added again now (a replay by someone without
    // the key): rejected too, counted, not logged again within the minute.
    let replayed_ip = IpAddr::V4(lab.v4(78));
    let mut old = ban_message("node-a", &replayed_ip.to_string(), 7200);
    old.sent -= 3600;
    let replayed = old.encode(KEY.as_bytes());
    inject(&redis_host.ns, redis.url(), vec![forged, gw, own, replayed]);
    db.check(
        db.wait_for_line("fleet: rejected stream entry ", REACT),
        "no rejection line",
    );
    db.check(
        db.wait_for_line(
            &format!("fleet: refused the ban of {gateway}/32 from node node-a"),
            REACT,
        ),
        "no refusal line for the gateway",
    );
    db.check(
        db.wait_for_line(
            &format!("fleet: refused the ban of {}/32 from node node-a", b.v4),
            REACT,
        ),
        "no refusal line for B's own address",
    );
    for ip in [other, IpAddr::V4(gateway), v4(b), replayed_ip] {
        db.check(ban_of(&b.ns, ip).is_none(), format!("B banned {ip}"));
    }

    // A flood of 10,000 valid bans from one origin.
    // 40 /24s of the test range, none of them the lab's own.
    let lab_net = lab.v4(0).octets();
    let flood_ips: Vec<Ipv4Addr> = (0..60u32)
        .map(|n| [198u8, 18 + (n / 30) as u8, 100 + (n % 30) as u8 * 5])
        .filter(|[_, b, c]| [*b, *c] != [lab_net[1], lab_net[2]])
        .take(40)
        .flat_map(|[a, b, c]| (0..=255u8).map(move |d| Ipv4Addr::new(a, b, c, d)))
        .take(10_000)
        .collect();
    assert_eq!(flood_ips.len(), 10_000);
    let flood: Vec<_> = flood_ips
        .iter()
        .map(|ip| ban_message("node-x", &ip.to_string(), 3600).encode(KEY.as_bytes()))
        .collect();
    inject(&redis_host.ns, redis.url(), flood);
    let limited = "fleet: node node-x sends more than ";
    db.check(db.wait_for_line(limited, REACT), "no rate-limit line");
    // Read to the end (the status line's last ID stops moving), then count.
    let mut last = String::new();
    wait_until(REACT, Duration::from_millis(500), || {
        let s = status(b, &conf);
        let same = s == last;
        last = s;
        same
    });
    let in_set = set_elems(&b.ns, "banned4")
        .unwrap_or_default()
        .into_iter()
        .filter(|e| matches!(e.addr, IpAddr::V4(v) if flood_ips.contains(&v)))
        .count();
    db.check(
        (1..1000).contains(&in_set),
        format!("{in_set} of the flood's 10,000 bans are in B's set (burst 200, 20 a second)"),
    );
    for needle in ["fleet: rejected stream entry ", limited] {
        db.check(
            db.lines_with(needle).len() == 1,
            format!("not exactly one line {needle:?}"),
        );
    }
    let st = status(b, &conf);
    db.check(st.contains("rejected 2,"), format!("status: {st}"));
}

/// TLS (`rediss://` with `ca_file`), an ACL user with its password from a root-only
/// file: a verified ban on A reaches B. A password file readable by others stops the
/// daemon at start, naming the file.
#[test]
fn issue10_tls_and_acl_user_and_a_password_file_readable_by_others_is_refused() {
    let test = "issue10_tls_and_acl_user_and_a_password_file_readable_by_others_is_refused";
    if !fleet_test_or_skip(test) || !common::root_or_skip(test, &["openssl"]) {
        return;
    }
    let lab = Lab::builder().peer("b").peer("redis").peer("scan").build();
    let (a, b, s) = (&lab.defender, lab.peer("b"), lab.peer("scan"));
    let redis_host = lab.peer("redis");
    let ip = redis_host.v4.to_string();
    let redis = Redis::start_with(redis_host, |dir| {
        let d = |n: &str| dir.join(n).display().to_string();
        let ossl = |args: &[&str]| {
            let out = common::run_argv(&[&["openssl"][..], args].concat(), Duration::from_secs(30));
            assert!(out.success(), "openssl {args:?}: {out}");
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let (ca_key, ca_crt) = (d("ca.key"), d("ca.crt"));
        let (key, csr, crt, ext) = (d("server.key"), d("server.csr"), d("server.crt"), d("ext"));
        let ca_args = [
            "-keyout",
            &ca_key,
            "-out",
            &ca_crt,
            "-days",
            "1",
            "-subj",
            "/CN=pst-test-ca",
        ];
        ossl(&[&["req", "-x509"][..], &ec, &ca_args].concat());
        ossl(
            &[
                &["req"][..],
                &ec,
                &["-keyout", &key, "-out", &csr, "-subj", "/CN=pst-redis"],
            ]
            .concat(),
        );
        std::fs::write(&ext, format!("subjectAltName=IP:{ip}\n")).unwrap();
        ossl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "1",
            "-extfile",
            &ext,
        ]);
        let args = [
            "--tls-cert-file",
            &crt,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca_crt,
            "--tls-auth-clients",
            "no",
            "--user",
            "default",
            "off",
            "--user",
            "psfleet",
            "on",
            ">fleet-secret-pw",
            "~*",
            "&*",
            "+@all",
        ];
        (args.iter().map(|s| s.to_string()).collect(), "rediss")
    });
    let ca = redis.dir.path().join("ca.crt");
    // node_conf's text ends inside [fleet] (no extra table): these keys join it.
    let conf_for = |name: &str| {
        let conf = node_conf(name, &redis, "");
        let pw = conf.path("fleet.password");
        std::fs::write(&pw, "fleet-secret-pw\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = format!(
            "user = \"psfleet\"\npassword_file = \"{}\"\nca_file = \"{}\"\n",
            pw.display(),
            ca.display()
        );
        conf.toml(&text)
    };
    let conf_a = conf_for("node-a");
    let conf_b = conf_for("node-b");

    // A password file others can read: the daemon refuses to start and names it.
    let pw_b = conf_b.path("fleet.password");
    std::fs::set_permissions(&pw_b, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bad = Daemon::start(&b.ns, &conf_b, MODES);
    let exited = wait_until(REACT, Duration::from_millis(100), || !bad.is_running());
    let lines = bad.lines().join("\n");
    bad.check(
        exited
            && lines.contains(&format!("fleet.password_file {}", pw_b.display()))
            && lines.contains("mode 0644"),
        format!("the daemon did not refuse a password file of mode 0644:\n{lines}"),
    );
    drop(bad);
    std::fs::set_permissions(&pw_b, std::fs::Permissions::from_mode(0o600)).unwrap();

    let da = start(a, &conf_a);
    let db = start(b, &conf_b);
    db.check(
        db.has_line("fleet: connected to rediss://"),
        "B is not connected over TLS",
    );
    handshake(s, a);
    let ip_s = v4(s);
    da.check(
        wait_banned(&a.ns, ip_s, REACT).is_some(),
        "A did not ban the scanner",
    );
    db.check(
        wait_banned(&b.ns, ip_s, REACT).is_some(),
        "B did not get A's ban over TLS with the ACL user",
    );
    // IPv6 too: a handshake from the scanner's IPv6 address.
    let ip6 = s.addr(true);
    let _ = can_connect(&s.ns, a.addr(true), HANDSHAKE, Duration::from_secs(2));
    da.check(
        wait_banned(&a.ns, ip6, REACT).is_some(),
        "A did not ban the IPv6 scanner",
    );
    db.check(
        wait_banned(&b.ns, ip6, REACT).is_some(),
        format!("B did not get A's ban of {ip6}"),
    );
}

/// Issue 10: the stream stays bounded: each XADD trims entries older than
/// `trim_after` (MINID).
#[test]
fn issue10_the_stream_is_trimmed_by_age() {
    let test = "issue10_the_stream_is_trimmed_by_age";
    if !fleet_test_or_skip(test) {
        return;
    }
    let lab = Lab::builder().peer("redis").build();
    let a = &lab.defender;
    let redis_host = lab.peer("redis");
    let redis = Redis::start(redis_host);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let old_id = format!("{}-0", now_ms - 600_000);
    let addr = redis.addr.to_string();
    let cli = |args: &[&str]| {
        let mut argv = vec!["redis-cli", "-h", &addr];
        argv.extend_from_slice(args);
        redis_host.ns.exec(&argv, Duration::from_secs(10)).stdout
    };
    // An entry ten minutes old (unsigned: A rejects it when it reads it).
    assert_eq!(
        cli(&["XADD", STREAM, &old_id, "kind", "old"]).trim(),
        old_id
    );
    let conf = node_conf("node-a", &redis, "").toml("trim_after = \"1m\"\n");
    let d = start(a, &conf);
    let target = lab.v4(50).to_string();
    let out = client(&a.ns, &conf, &["ban", &target, "--time", "1h"]);
    d.check(out.success(), format!("ban: {out}"));
    d.check(
        wait_until(REACT, Duration::from_millis(100), || {
            cli(&["XLEN", STREAM]).trim() == "1"
        }),
        format!(
            "the stream was not trimmed: {}",
            cli(&["XRANGE", STREAM, "-", "+"])
        ),
    );
    let left = cli(&["XRANGE", STREAM, "-", "+"]);
    d.check(
        !left.contains(&old_id) && left.contains(&target),
        format!("stream after the trim: {left}"),
    );
}

/// Issue 10: a node cut off from Redis (a partition: its packets to and from the
/// server are dropped) misses nothing: once the path is back it reads on from its last ID.
#[test]
fn issue10_a_partitioned_node_reads_what_it_missed() {
    let test = "issue10_a_partitioned_node_reads_what_it_missed";
    if !fleet_test_or_skip(test) {
        return;
    }
    let lab = Lab::builder().peer("b").peer("redis").peer("scan").build();
    let (a, b, s) = (&lab.defender, lab.peer("b"), lab.peer("scan"));
    let redis = Redis::start(lab.peer("redis"));
    let conf_a = node_conf("node-a", &redis, "");
    let conf_b = node_conf("node-b", &redis, "");
    let da = start(a, &conf_a);
    let db = start(b, &conf_b);
    // The partition: a table of the test's own in B's namespace.
    let r = redis.addr.to_string();
    let nft = |script: &str| {
        let out = b.ns.exec(&["nft", script], Duration::from_secs(10));
        assert!(out.success(), "nft {script}: {out}");
    };
    nft(&format!(
        "add table inet fleetcut; add chain inet fleetcut out {{ type filter hook output priority 0; }}; add rule inet fleetcut out ip daddr {r} drop; add chain inet fleetcut in {{ type filter hook input priority -300; }}; add rule inet fleetcut in ip saddr {r} drop"
    ));
    handshake(s, a);
    let ip = v4(s);
    da.check(
        wait_banned(&a.ns, ip, REACT).is_some(),
        "A did not ban the scanner",
    );
    std::thread::sleep(QUIET);
    db.check(
        ban_of(&b.ns, ip).is_none(),
        "B got the ban through the partition",
    );
    nft("delete table inet fleetcut");
    db.check(
        wait_banned(&b.ns, ip, Duration::from_secs(30)).is_some(),
        "B did not read the ban it missed during the partition",
    );
}
