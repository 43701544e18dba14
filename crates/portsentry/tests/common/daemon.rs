//! The daemon under test: its configuration in a temp dir and a guard around the
//! running process.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wait_timeout::ChildExt;

use super::Netns;
use super::{kill_group, wait_until};

/// A PortSentry 1.2 `portsentry.conf` plus the files it points at, all in a temp
/// dir. Defaults: advanced ports below 1024 watched, nothing excluded but the 1.2
/// defaults, SCAN_TRIGGER=0, RESOLVE_HOST=0, blocking on, KILL_ROUTE = our
/// `block.sh` (iptables/ip6tables DROP inside the daemon's namespace),
/// KILL_HOSTS_DENY="ALL: $TARGET$" into a temp hosts.deny.
pub struct Conf {
    pub dir: tempfile::TempDir,
    keys: BTreeMap<String, String>,
    ignore: Vec<String>,
    /// Extra portsentry.toml text (sections other than [state], which is always set
    /// to a file in the temp dir so a test never writes /var/lib/portsentry).
    toml: String,
}

impl Conf {
    pub fn new() -> Conf {
        let dir = tempfile::Builder::new()
            .prefix("pst-systest-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path().to_path_buf();
        let p = |n: &str| d.join(n).display().to_string();
        let mut keys = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            keys.insert(k.to_string(), v);
        };
        set("TCP_PORTS", "1,11,15,79,111,119,143,540,635,1080,1524,2000,5742,6667,12345,12346,20034,27665,31337,32771,32772,32773,32774,40421,49724,54320".into());
        set("UDP_PORTS", "1,7,9,69,161,162,513,635,640,641,700,37444,34555,31335,32770,32771,32772,32773,32774,31337,54321".into());
        set("ADVANCED_PORTS_TCP", "1024".into());
        set("ADVANCED_PORTS_UDP", "1024".into());
        set("ADVANCED_EXCLUDE_TCP", "113,139".into());
        set("ADVANCED_EXCLUDE_UDP", "520,138,137,67".into());
        set("IGNORE_FILE", p("portsentry.ignore"));
        set("HISTORY_FILE", p("portsentry.history"));
        set("BLOCKED_FILE", p("portsentry.blocked"));
        set("HOSTS_DENY_FILE", p("hosts.deny"));
        set("RESOLVE_HOST", "0".into());
        set("BLOCK_TCP", "1".into());
        set("BLOCK_UDP", "1".into());
        set(
            "KILL_ROUTE",
            format!("/bin/sh {} $TARGET$", super::script("block.sh")),
        );
        set("KILL_HOSTS_DENY", "ALL: $TARGET$".into());
        set("SCAN_TRIGGER", "0".into());
        Conf {
            dir,
            keys,
            ignore: vec!["127.0.0.1/32".into(), "0.0.0.0".into(), "::1".into()],
            toml: String::new(),
        }
    }

    /// The default conf without KILL_ROUTE and KILL_HOSTS_DENY: only the daemon's own
    /// ban (in the kernel) blocks, so a DROP rule left by `block.sh` cannot hide a ban
    /// that was lost, lifted or never made.
    pub fn bans_only() -> Conf {
        Conf::new().unset("KILL_ROUTE").unset("KILL_HOSTS_DENY")
    }

    /// Appends raw portsentry.toml text (e.g. "[bans]\ntime = \"5s\"\n").
    pub fn toml(mut self, text: &str) -> Self {
        self.toml.push_str(text);
        self.toml.push('\n');
        self
    }

    /// No native nftables bans: the packet-socket sensor and the KILL_* commands only,
    /// as on a host without nftables.
    pub fn packet_socket_only(self) -> Self {
        self.toml("[firewall]\nbackend = \"none\"")
    }

    pub fn settings_path(&self) -> PathBuf {
        self.path("portsentry.toml")
    }

    /// The daemon's control socket (in the temp dir, never /run).
    pub fn control_path(&self) -> PathBuf {
        self.path("portsentry.sock")
    }

    pub fn state_path(&self) -> PathBuf {
        self.path("state.json")
    }

    /// Sets KEY="value".
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.keys.insert(key.to_string(), value.to_string());
        self
    }

    /// Removes a key (the daemon's default applies).
    pub fn unset(mut self, key: &str) -> Self {
        self.keys.remove(key);
        self
    }

    /// Adds a line to the ignore file.
    pub fn ignore(mut self, entry: &str) -> Self {
        self.ignore.push(entry.to_string());
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.keys.get(key).map(String::as_str)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn conf_path(&self) -> PathBuf {
        self.path("portsentry.conf")
    }

    pub fn history_path(&self) -> PathBuf {
        PathBuf::from(self.get("HISTORY_FILE").expect("HISTORY_FILE set"))
    }

    /// BLOCKED_FILE + "." + mode (e.g. "atcp").
    pub fn blocked_path(&self, mode: &str) -> PathBuf {
        PathBuf::from(format!(
            "{}.{mode}",
            self.get("BLOCKED_FILE").expect("BLOCKED_FILE set")
        ))
    }

    pub fn hosts_deny_path(&self) -> PathBuf {
        PathBuf::from(self.get("HOSTS_DENY_FILE").expect("HOSTS_DENY_FILE set"))
    }

    /// Writes the conf and the ignore file; returns the conf path.
    pub fn write(&self) -> PathBuf {
        let mut text = String::from("# written by the portsentry system tests\n");
        for (k, v) in &self.keys {
            text.push_str(&format!("{k}=\"{v}\"\n"));
        }
        std::fs::write(self.conf_path(), text).expect("write conf");
        let toml = format!(
            "{}\n[state]\nfile = \"{}\"\n\n[control]\nsocket = \"{}\"\n",
            self.toml,
            self.state_path().display(),
            self.control_path().display()
        );
        std::fs::write(self.settings_path(), toml).expect("write settings");
        if let Some(ig) = self.get("IGNORE_FILE") {
            let mut t = String::new();
            for l in &self.ignore {
                t.push_str(l);
                t.push('\n');
            }
            std::fs::write(ig, t).expect("write ignore file");
        }
        self.conf_path()
    }

    /// Contents of a file the daemon writes ("" if it does not exist).
    pub fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }
}

impl Default for Conf {
    fn default() -> Self {
        Self::new()
    }
}

/// The portsentry daemon running in a namespace. Its stdout and stderr lines are
/// collected; `Drop` sends SIGTERM, waits (bounded), then SIGKILLs, and prints the
/// collected lines if the test is panicking.
pub struct Daemon {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
    pub label: String,
    exit: Option<ExitStatus>,
    /// Set once the lines were printed in a panic message (no second copy on drop).
    dumped: std::cell::Cell<bool>,
}

/// Message part of a daemon line: what follows "portsentry[pid]: ".
pub fn message(line: &str) -> &str {
    match line.find("]: ") {
        Some(i) => &line[i + 3..],
        None => line,
    }
}

impl Daemon {
    /// Starts `portsentry <mode flags...> -c CONF --foreground` in `ns`.
    pub fn start(ns: &Netns, conf: &Conf, modes: &[&str]) -> Daemon {
        Self::start_wrapped(ns, &[], conf, modes)
    }

    /// [`Daemon::start`] under `wrapper` (e.g. `prlimit --nofile=1024:1024`), which must
    /// exec the binary (so the PID is the daemon's).
    pub fn start_wrapped(ns: &Netns, wrapper: &[&str], conf: &Conf, modes: &[&str]) -> Daemon {
        let conf_path = conf.write();
        let mut args: Vec<String> = modes.iter().map(|s| s.to_string()).collect();
        args.push("-c".into());
        args.push(conf_path.display().to_string());
        args.push("--foreground".into());
        args.push("--no-syslog".into());
        args.push("--settings".into());
        args.push(conf.settings_path().display().to_string());
        Self::start_argv(ns, wrapper, &args)
    }

    /// [`Daemon::start`], then [`Daemon::wait_ready`].
    pub fn ready(ns: &Netns, conf: &Conf, modes: &[&str]) -> Daemon {
        let mut d = Daemon::start(ns, conf, modes);
        d.wait_ready();
        d
    }

    /// Starts the daemon in `ns` with `flags` (a 2.x command line, say) followed by
    /// `-c conf_path --settings <conf's settings>`.
    pub fn start_flags(ns: &Netns, conf: &Conf, conf_path: &Path, flags: &[&str]) -> Daemon {
        let mut args: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        args.extend([
            "-c".to_string(),
            conf_path.display().to_string(),
            "--settings".to_string(),
            conf.settings_path().display().to_string(),
        ]);
        Self::start_args(ns, &args)
    }

    /// Starts the daemon in `ns` with exactly these arguments.
    pub fn start_args(ns: &Netns, args: &[String]) -> Daemon {
        Self::start_argv(ns, &[], args)
    }

    fn start_argv(ns: &Netns, wrapper: &[&str], args: &[String]) -> Daemon {
        let mut argv = wrapper.to_vec();
        argv.push(super::daemon_bin());
        argv.extend(args.iter().map(String::as_str));
        let mut cmd = ns.command(&argv);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn daemon {argv:?}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for (stream, tag) in [
            (Box::new(out) as Box<dyn std::io::Read + Send>, "out"),
            (Box::new(err), "err"),
        ] {
            let l = lines.clone();
            readers.push(std::thread::spawn(move || {
                let r = BufReader::new(stream);
                for line in r.split(b'\n') {
                    let Ok(line) = line else { break };
                    let s = String::from_utf8_lossy(&line).trim_end().to_string();
                    if tag == "out" && s.is_empty() {
                        continue;
                    }
                    l.lock().unwrap().push(s);
                }
            }));
        }
        Daemon {
            child: Some(child),
            lines,
            readers,
            label: format!("portsentry {}", args.join(" ")),
            exit: None,
            dumped: std::cell::Cell::new(false),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Send `sig` to the daemon (its own pid only); the test fails if kill(2) does.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the daemon's own pid.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({sig}) on the daemon failed");
    }

    /// A copy of all lines captured so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Lines containing `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    pub fn has_line(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Waits (bounded) for a line containing `needle`.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, Duration::from_millis(25), || self.has_line(needle))
    }

    /// Waits (bounded) until `pred` holds for the captured lines.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[String]) -> bool) -> bool {
        wait_until(timeout, Duration::from_millis(25), || {
            pred(&self.lines.lock().unwrap())
        })
    }

    /// Waits for "PortSentry is now active and listening."; panics (with the
    /// daemon's output) if it does not come within 20 s or the daemon exits.
    pub fn wait_ready(&mut self) {
        let ok = wait_until(Duration::from_secs(20), Duration::from_millis(25), || {
            self.has_line("adminalert: PortSentry is now active and listening.")
                || !self.is_running()
        });
        let ready = self.has_line("adminalert: PortSentry is now active and listening.");
        if !ok || !ready {
            panic!(
                "daemon did not become ready (running: {}, exit: {:?})\n{}",
                self.is_running(),
                self.exit,
                self.dump()
            );
        }
    }

    /// True while the daemon process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => match c.try_wait() {
                Ok(None) => true,
                Ok(Some(s)) => {
                    self.exit = Some(s);
                    false
                }
                Err(_) => false,
            },
            None => false,
        }
    }

    /// SIGTERM, wait up to 10 s, then SIGKILL. Returns the exit status (None if it
    /// had to be killed). Idempotent.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Some(mut c) = self.child.take() {
            let pid = c.id() as i32;
            super::kill_pid(pid, libc::SIGTERM);
            match c.wait_timeout(Duration::from_secs(10)) {
                Ok(Some(s)) => self.exit = Some(s),
                _ => {
                    eprintln!("daemon {pid} did not exit on SIGTERM within 10 s; SIGKILL");
                    kill_group(pid, libc::SIGKILL);
                    let _ = c.kill();
                    let _ = c.wait();
                    self.exit = None;
                }
            }
            // Whatever it started (KILL_* commands) goes with it.
            kill_group(pid, libc::SIGKILL);
            // Bounded: a grandchild could still hold the pipes open.
            wait_until(Duration::from_secs(3), Duration::from_millis(10), || {
                self.readers.iter().all(|r| r.is_finished())
            });
            for r in self.readers.drain(..) {
                if r.is_finished() {
                    let _ = r.join();
                }
            }
        }
        self.exit
    }

    /// Asserts `cond`; on failure panics with `msg` and the daemon's output.
    #[track_caller]
    pub fn check(&self, cond: bool, msg: impl AsRef<str>) {
        if !cond {
            panic!("{}\n{}", msg.as_ref(), self.dump());
        }
    }

    /// All captured lines, numbered, for failure messages.
    pub fn dump(&self) -> String {
        self.dumped.set(true);
        let lines = self.lines();
        let mut s = format!(
            "----- {} ({} lines captured) -----\n",
            self.label,
            lines.len()
        );
        for (i, l) in lines.iter().enumerate() {
            s.push_str(&format!("{i:4}: {l}\n"));
        }
        s.push_str("----- end of daemon output -----");
        s
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        let show = std::env::var_os("PST_SHOW_DAEMON").is_some();
        if show || (std::thread::panicking() && !self.dumped.get()) {
            eprintln!("{}", self.dump());
        }
    }
}

/// One parsed line of a 1.2 history or blocked file:
/// `<epoch> - MM/DD/YYYY HH:MM:SS Host: <res>/<ip> Port: <port> <TCP|UDP> Blocked`,
/// and ours, with the evidence class before `Host:` (`... HH:MM:SS [unverified] Host: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryLine {
    pub epoch: u64,
    pub date: String,
    pub time: String,
    pub resolved: String,
    pub ip: String,
    pub port: u16,
    pub proto: String,
    /// `unverified`, `verified` or `manual`; None on a 1.2 line.
    pub evidence: Option<String>,
}

impl HistoryLine {
    /// Parses one line strictly; None if it does not have the 1.2 shape (with or
    /// without our bracketed evidence class).
    pub fn parse(line: &str) -> Option<HistoryLine> {
        let mut w: Vec<&str> = line.split(' ').collect();
        let evidence = match w.get(4) {
            Some(word) if w.len() == 11 => {
                let class = word.strip_prefix('[')?.strip_suffix(']')?;
                if !["unverified", "verified", "manual"].contains(&class) {
                    return None;
                }
                w.remove(4);
                Some(class.to_string())
            }
            _ => None,
        };
        if w.len() != 10 || w[1] != "-" || w[4] != "Host:" || w[6] != "Port:" || w[9] != "Blocked" {
            return None;
        }
        let epoch = w[0].parse().ok()?;
        let date = w[2];
        let d: Vec<&str> = date.split('/').collect();
        let ok_date = d.len() == 3
            && d[0].len() == 2
            && d[1].len() == 2
            && d[2].len() == 4
            && d.iter().all(|x| x.bytes().all(|b| b.is_ascii_digit()));
        let time = w[3];
        let t: Vec<&str> = time.split(':').collect();
        let ok_time = t.len() == 3
            && t.iter()
                .all(|x| x.len() == 2 && x.bytes().all(|b| b.is_ascii_digit()));
        let (resolved, ip) = w[5].split_once('/')?;
        let port = w[7].parse().ok()?;
        if !ok_date || !ok_time || !(w[8] == "TCP" || w[8] == "UDP") {
            return None;
        }
        Some(HistoryLine {
            epoch,
            date: date.to_string(),
            time: time.to_string(),
            resolved: resolved.to_string(),
            ip: ip.to_string(),
            port,
            proto: w[8].to_string(),
            evidence,
        })
    }

    /// All lines of `text` that parse.
    pub fn parse_all(text: &str) -> Vec<HistoryLine> {
        text.lines().filter_map(HistoryLine::parse).collect()
    }
}

/// Checks the daemon's stderr line shape:
/// `2026-11-21T23:59:01.123+00:00 portsentry[1234]: <message>`.
pub fn line_format_ok(line: &str) -> bool {
    let Some((ts, rest)) = line.split_once(' ') else {
        return false;
    };
    let b = ts.as_bytes();
    // YYYY-MM-DDTHH:MM:SS.mmm then +HH:MM / -HH:MM (or Z).
    let ts_ok = b.len() >= 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[20..23].iter().all(u8::is_ascii_digit)
        && (b[23] == b'+' || b[23] == b'-' || b[23] == b'Z');
    let Some(rest) = rest.strip_prefix("portsentry[") else {
        return false;
    };
    let Some((pid, msg)) = rest.split_once("]: ") else {
        return false;
    };
    ts_ok && !pid.is_empty() && pid.bytes().all(|c| c.is_ascii_digit()) && !msg.is_empty()
}

/// The ports P of lines containing `prefix` followed by a port number (e.g. the
/// alert prefix "attackalert: TCP FIN scan from host: 1.2.3.4/1.2.3.4 to TCP port: ").
pub fn ports_after(lines: &[String], prefix: &str) -> Vec<u16> {
    lines
        .iter()
        .filter_map(|l| {
            let i = l.find(prefix)?;
            let tail = &l[i + prefix.len()..];
            let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// Waits (bounded) until `path` has a line for which `pred` holds.
pub fn wait_file_line(path: &Path, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
    wait_until(timeout, Duration::from_millis(50), || {
        std::fs::read_to_string(path)
            .map(|t| t.lines().any(&pred))
            .unwrap_or(false)
    })
}

/// Start time helper for tests that want to report durations.
pub fn since(t: Instant) -> String {
    format!("{:.1}s", t.elapsed().as_secs_f64())
}
