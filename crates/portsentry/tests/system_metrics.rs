//! Acceptance tests for issue 9, items 3 and 4: the Prometheus endpoint and the
//! structured logs.
//!
//! - metrics: a real daemon in the lab's defender namespace with `[metrics] listen`,
//!   scraped from inside that namespace; a benign client moves no counter, one
//!   `nmap -sS` of one trap port moves the probe, alert and ban counters by one, bans in
//!   force is 1, the latency histogram has one observation; POST and other paths are
//!   refused; without `[metrics]` nothing listens;
//! - journal: the same daemon logs through a stand-in journal socket (a unix datagram
//!   socket in a temp dir, `PORTSENTRY_JOURNAL_SOCKET`), whose entries are parsed in
//!   the native protocol: the alert and the ban carry their fields;
//! - `[logging] format = "json"`: stderr lines are JSON objects with the same fields.
//!
//! Real daemon, real nftables and real nmap in namespaces (TESTING.md).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::checks::{REACT, nmap};
use common::kernel::{self, wait_banned};
use common::{Conf, Daemon, Lab, Netns, OPEN, wait_until};
use portsentry::journal;

const MODES: &[&str] = &["-atcp", "-audp"];
const PORT: u16 = 9512;
/// A trap port (below ADVANCED_PORTS_TCP, not excluded).
const TRAP: &str = "22";

fn or_skip(test: &str) -> bool {
    common::root_or_skip(test, &["nmap", "nft"])
}

/// One HTTP exchange with the endpoint from inside `ns`: the whole answer.
fn http(ns: &Netns, request: String) -> String {
    ns.run_in(move || {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), PORT);
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = s.write_all(request.as_bytes());
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
}

/// Samples of a scrape: `name{labels}` → value.
fn scrape(ns: &Netns) -> BTreeMap<String, f64> {
    let text = http(ns, get("/metrics"));
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "scrape: {text:?}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn value(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

/// The sum of every sample whose name starts with `prefix` (all label sets).
fn sum(m: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

/// The fields of one journal entry, in order.
type Entry = Vec<(String, String)>;

/// A stand-in journal: a datagram socket whose entries a thread decodes.
struct JournalStandIn {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    entries: Arc<Mutex<Vec<Entry>>>,
}

impl JournalStandIn {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.socket");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let entries = Arc::new(Mutex::new(Vec::new()));
        let e = Arc::clone(&entries);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 17];
            // Ends when the test is over (the only other owner of `e` is gone).
            while Arc::strong_count(&e) > 1 {
                if let Ok(n) = socket.recv(&mut buf) {
                    let fields = journal::decode(&buf[..n]).expect("a malformed journal entry");
                    e.lock().unwrap().push(fields);
                }
            }
        });
        JournalStandIn {
            _dir: dir,
            path,
            entries,
        }
    }

    /// The first entry whose MESSAGE contains `needle`, as a map.
    fn find(&self, needle: &str) -> Option<BTreeMap<String, String>> {
        self.entries
            .lock()
            .unwrap()
            .iter()
            .find(|f| f.iter().any(|(k, v)| k == "MESSAGE" && v.contains(needle)))
            .map(|f| f.iter().cloned().collect())
    }
}

/// Issue 9 item 3 and 4 acceptance: counters move by the right amounts during a real
/// scan, the endpoint refuses everything but `GET /metrics`, and the alert and the ban
/// reach the (stand-in) journal with their fields.
#[test]
fn issue9_metrics_count_one_scan_and_the_journal_gets_its_fields() {
    let test = "issue9_metrics_count_one_scan_and_the_journal_gets_its_fields";
    if !or_skip(test) {
        return;
    }
    let lab = Lab::builder()
        .peer("attacker")
        .peer("client")
        .open_service()
        .build();
    let (def, atk, cli) = (&lab.defender, lab.peer("attacker"), lab.peer("client"));
    let conf = kernel::kernel_conf().toml(&format!("[metrics]\nlisten = \"127.0.0.1:{PORT}\""));
    let stand_in = JournalStandIn::new();
    let env = format!("{}={}", journal::SOCKET_ENV, stand_in.path.display());
    let mut d = Daemon::start_wrapped(&def.ns, &["env", &env], &conf, MODES);
    // Under a journal, the lines go there and not to stderr as well.
    let ready = wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
        stand_in
            .find("adminalert: PortSentry is now active and listening.")
            .is_some()
    });
    d.check(ready, "the journal never got the ready line");
    d.check(
        stand_in
            .find(&format!(
                "metrics served on http://127.0.0.1:{PORT}/metrics"
            ))
            .is_some(),
        "no line saying where the metrics are served",
    );
    let target = def.addr(false);
    let ip = atk.addr(false);

    // Refusals.
    let post = http(
        &def.ns,
        "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n".into(),
    );
    d.check(post.starts_with("HTTP/1.1 405 "), format!("POST: {post:?}"));
    let other = http(&def.ns, get("/other"));
    d.check(
        other.starts_with("HTTP/1.1 404 "),
        format!("GET /other: {other:?}"),
    );
    let root = http(&def.ns, get("/"));
    d.check(
        root.starts_with("HTTP/1.1 404 "),
        format!("GET /: {root:?}"),
    );

    // A benign client of the open service moves nothing.
    let before = scrape(&def.ns);
    d.check(
        value(&before, "portsentry_bans_in_force") == 0.0,
        format!("bans in force before any scan: {before:?}"),
    );
    let served = common::net::connect_many(&cli.ns, target, OPEN, 3, Duration::from_secs(5));
    d.check(
        served == 3,
        format!("client reached the service {served}/3 times"),
    );
    std::thread::sleep(common::checks::QUIET);
    let after = scrape(&def.ns);
    for name in [
        "portsentry_probes_total",
        "portsentry_alerts_total",
        "portsentry_bans_total",
    ] {
        d.check(
            sum(&before, name) == sum(&after, name),
            format!(
                "{name} moved for a benign client: {} -> {}",
                sum(&before, name),
                sum(&after, name)
            ),
        );
    }

    // One SYN scan of one trap port.
    nmap(atk, &["-sS", "-p", TRAP], target);
    d.check(
        wait_banned(&def.ns, ip, REACT).is_some(),
        format!("{ip} was not banned"),
    );
    let mut m = BTreeMap::new();
    let settled = wait_until(REACT, Duration::from_millis(250), || {
        m = scrape(&def.ns);
        value(&m, "portsentry_bans_in_force") == 1.0
            && value(&m, "portsentry_ban_latency_seconds_count") == 1.0
    });
    d.check(settled, format!("bans in force / latency never 1: {m:#?}"));
    let alert_text = format!(
        "attackalert: TCP SYN/Normal scan from host: {ip}/{ip} to TCP port: {TRAP} (unverified)"
    );
    let expect = [
        (
            "portsentry_probes_total{kind=\"syn\",proto=\"tcp\"}",
            value(
                &after,
                "portsentry_probes_total{kind=\"syn\",proto=\"tcp\"}",
            ) + 1.0,
        ),
        (
            "portsentry_alerts_total{proto=\"tcp\",evidence=\"unverified\"}",
            1.0,
        ),
        (
            "portsentry_bans_total{evidence=\"unverified\",backend=\"nftables\"}",
            1.0,
        ),
        ("portsentry_bans_in_force", 1.0),
        ("portsentry_ban_set_elements{family=\"ipv4\"}", 1.0),
        ("portsentry_ban_set_elements{family=\"ipv6\"}", 0.0),
        ("portsentry_ban_latency_seconds_count", 1.0),
        ("portsentry_command_failures_total", 0.0),
        ("portsentry_reporter_queue_depth", 0.0),
    ];
    for (key, want) in expect {
        let got = if key.contains('{') {
            value(&m, key)
        } else {
            sum(&m, key)
        };
        d.check(got == want, format!("{key} = {got}, expected {want}"));
    }
    d.check(
        sum(&m, "portsentry_alerts_total") == 1.0 && sum(&m, "portsentry_bans_total") == 1.0,
        format!("other alert/ban counters moved: {m:#?}"),
    );
    d.check(
        value(&m, "portsentry_ban_set_size") > 0.0
            && value(&m, "portsentry_process_resident_memory_bytes") > 1e6
            && m.contains_key("portsentry_process_cpu_seconds"),
        format!("set size / RSS / CPU missing: {m:#?}"),
    );

    // The journal: the alert and the ban, with their fields, once each.
    let mut alert = None;
    let mut ban = None;
    wait_until(REACT, Duration::from_millis(100), || {
        alert = stand_in.find(&format!("TCP SYN/Normal scan from host: {ip}/{ip}"));
        ban = stand_in.find(&format!("Host {ip} has been banned in the kernel"));
        alert.is_some() && ban.is_some()
    });
    let fields_ok = |e: &Option<BTreeMap<String, String>>, action: &str| {
        e.as_ref().is_some_and(|e| {
            let f = |k: &str| e.get(k).map(String::as_str);
            f("SRC_IP") == Some(ip.to_string().as_str())
                && f("DST_PORT") == Some(TRAP)
                && f("PROTO") == Some("tcp")
                && f("SCAN_KIND") == Some("syn")
                && f("EVIDENCE") == Some("unverified")
                && f("ACTION") == Some(action)
                && f("SYSLOG_IDENTIFIER") == Some("portsentry")
                && f("PRIORITY") == Some("5")
                && f("SYSLOG_FACILITY") == Some("3")
                && f("SYSLOG_PID") == Some(d.pid().to_string().as_str())
        })
    };
    d.check(
        fields_ok(&alert, "alert"),
        format!("alert entry: {alert:?}"),
    );
    d.check(fields_ok(&ban, "ban"), format!("ban entry: {ban:?}"));
    let until = ban.as_ref().and_then(|b| b.get("BAN_UNTIL").cloned());
    d.check(
        until.as_deref().is_some_and(|u| {
            chrono::DateTime::parse_from_rfc3339(u).is_ok_and(|t| {
                let left = t.timestamp() - chrono::Utc::now().timestamp();
                (560..=600).contains(&left)
            })
        }),
        format!("BAN_UNTIL {until:?} is not about 10 minutes from now"),
    );
    // MESSAGE is the exact 1.2 line, once; the journal took it, so stderr (which is
    // the journal too under systemd) did not repeat it.
    d.check(
        alert.as_ref().and_then(|a| a.get("MESSAGE")) == Some(&alert_text),
        format!("the journal's MESSAGE is not {alert_text:?}: {alert:?}"),
    );
    let copies = stand_in
        .entries
        .lock()
        .unwrap()
        .iter()
        .filter(|f| f.iter().any(|(k, v)| k == "MESSAGE" && *v == alert_text))
        .count();
    d.check(
        copies == 1,
        format!("{copies} journal entries of the alert"),
    );
    d.check(
        d.lines_with("attackalert:").is_empty(),
        format!("stderr repeated the journal's lines: {:?}", d.lines()),
    );

    // `portsentry unban`: its line has the address (not `/32`) and ACTION=unban, and
    // bans in force goes back to 0.
    let out = kernel::client(&def.ns, &conf, &["unban", &ip.to_string()]);
    d.check(out.success(), format!("unban: {out}"));
    let mut lifted = None;
    wait_until(REACT, Duration::from_millis(100), || {
        lifted = stand_in.find(&format!("{ip}/32"));
        lifted.is_some()
    });
    d.check(
        lifted.as_ref().is_some_and(|e| {
            e.get("ACTION").map(String::as_str) == Some("unban")
                && e.get("SRC_IP") == Some(&ip.to_string())
        }),
        format!("unban entry: {lifted:?}"),
    );
    let gone = wait_until(REACT, Duration::from_millis(250), || {
        value(&scrape(&def.ns), "portsentry_bans_in_force") == 0.0
    });
    d.check(gone, "bans in force did not go back to 0 after the unban");
    d.stop();
}

/// Issue 9 item 3 and 4: without `[metrics]` nothing listens on the metrics port, and
/// `[logging] format = "json"` writes each stderr line as a JSON object with the
/// alert's and the ban's fields.
#[test]
fn issue9_no_endpoint_unless_enabled_and_json_stderr_has_the_fields() {
    let test = "issue9_no_endpoint_unless_enabled_and_json_stderr_has_the_fields";
    if !or_skip(test) {
        return;
    }
    let lab = Lab::builder().peer("attacker").build();
    let (def, atk) = (&lab.defender, lab.peer("attacker"));
    let conf = kernel::kernel_conf().toml("[logging]\nformat = \"json\"");
    let mut d = Daemon::ready(&def.ns, &conf, MODES);
    let listening = def
        .ns
        .exec(&["ss", "-Hltn"], Duration::from_secs(10))
        .stdout;
    d.check(
        !listening.contains(&format!(":{PORT} ")),
        format!("something listens on {PORT}: {listening}"),
    );
    d.check(
        http(&def.ns, get("/metrics")).is_empty(),
        "the metrics port answered without [metrics]",
    );
    let ip = atk.addr(false);
    nmap(atk, &["-sS", "-p", TRAP], def.addr(false));
    let objects = |d: &Daemon| -> Vec<serde_json::Value> {
        d.lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let find = |d: &Daemon, action: &str| {
        objects(d)
            .into_iter()
            .find(|o| o["action"] == action && o["src_ip"] == ip.to_string())
    };
    wait_until(REACT, Duration::from_millis(100), || {
        find(&d, "alert").is_some() && find(&d, "ban").is_some()
    });
    let alert = find(&d, "alert");
    let ban = find(&d, "ban");
    for (what, o) in [("alert", &alert), ("ban", &ban)] {
        d.check(
            o.as_ref().is_some_and(|o| {
                o["dst_port"] == 22
                    && o["proto"] == "tcp"
                    && o["scan_kind"] == "syn"
                    && o["evidence"] == "unverified"
                    && o["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("attackalert: "))
                    && o["time"]
                        .as_str()
                        .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
            }),
            format!("{what} object: {o:?}"),
        );
    }
    d.check(
        ban.as_ref().is_some_and(|b| b["ban_until"].is_string()),
        format!("ban object has no ban_until: {ban:?}"),
    );
    // Every line is an object, none is the text format.
    let lines = d.lines();
    let text: Vec<&String> = lines
        .iter()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
        .collect();
    d.check(
        text.is_empty(),
        format!("lines that are not JSON: {text:?}"),
    );
    d.stop();
}

/// Issue 9 item 3: a failing KILL_RUN_CMD (no ban backend, the packet socket) is counted
/// in `portsentry_command_failures_total{command="KILL_RUN_CMD"}`, once per failure
/// line, and counts as no ban.
#[test]
fn issue9_a_failing_kill_command_is_counted_and_is_no_ban() {
    let test = "issue9_a_failing_kill_command_is_counted_and_is_no_ban";
    if !or_skip(test) {
        return;
    }
    let lab = Lab::builder().peer("attacker").build();
    let (def, atk) = (&lab.defender, lab.peer("attacker"));
    let conf = Conf::new()
        .packet_socket_only()
        .unset("KILL_ROUTE")
        .unset("KILL_HOSTS_DENY")
        .set("KILL_RUN_CMD", "/bin/false")
        .toml(&format!("[metrics]\nlisten = \"{PORT}\""));
    let mut d = Daemon::ready(&def.ns, &conf, MODES);
    let ip = atk.addr(false);
    let failed = format!("attackalert: ERROR: KILL_RUN_CMD command failed for host {ip}");
    nmap(atk, &["-sS", "-p", TRAP], def.addr(false));
    d.check(
        d.wait_for_line(&failed, REACT),
        format!("no line {failed:?}"),
    );
    let mut m = BTreeMap::new();
    let counted = wait_until(REACT, Duration::from_millis(200), || {
        m = scrape(&def.ns);
        let lines = d.lines_with(&failed).len() as f64;
        value(
            &m,
            "portsentry_command_failures_total{command=\"KILL_RUN_CMD\"}",
        ) == lines
    });
    d.check(
        counted,
        format!(
            "KILL_RUN_CMD failures counted {:?}, lines {}",
            m.get("portsentry_command_failures_total{command=\"KILL_RUN_CMD\"}"),
            d.lines_with(&failed).len()
        ),
    );
    d.check(
        sum(&m, "portsentry_bans_total") == 0.0 && value(&m, "portsentry_bans_in_force") == 0.0,
        format!("a failed command counted as a ban: {m:#?}"),
    );
    d.check(
        sum(&m, "portsentry_alerts_total") >= 1.0
            && value(&m, "portsentry_probes_total{kind=\"syn\",proto=\"tcp\"}") >= 1.0,
        format!("the probe and alert were not counted: {m:#?}"),
    );
    d.stop();
}
