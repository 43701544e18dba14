//! Harness for the system tests: network namespaces, a lab of hosts joined by a
//! bridge, small services, and a guard around the portsentry daemon.
//!
//! Network safety (see shared/design/TESTING.md): every namespace is created here and
//! deleted by a `Drop` guard; hosts get addresses from 198.18.0.0/15 and
//! fd00:5e17::/64 only; no namespace gets a default route or an uplink; nothing is
//! changed in the root namespace (veth pairs are created directly inside the test
//! namespaces with `ip -n`).
#![allow(dead_code, unused_imports)]

pub mod checks;
pub mod daemon;
pub mod kernel;
pub mod lab;
pub mod net;
pub mod netns;

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use wait_timeout::ChildExt;

pub use daemon::{Conf, Daemon, HistoryLine};
pub use lab::{Host, Lab};
pub use net::{TcpServer, UdpServer, can_connect};
pub use netns::{Netns, Proc};

/// Tools that every system test needs besides the ones it names itself.
const BASE_TOOLS: &[&str] = &["ip"];

/// Returns true when the test may run. When it may not (not root, or a tool is
/// missing), says so loudly on stderr so that a skip is never a silent pass.
///
/// Under CI (`CI` set in the environment) a missing tool is a failure, not a skip:
/// CI runs as root and must install what the tests use.
pub fn root_or_skip(test: &str, tools: &[&str]) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        loud(&format!("skipped: needs root ({test})"));
        return false;
    }
    let missing: Vec<&str> = BASE_TOOLS
        .iter()
        .chain(tools.iter())
        .copied()
        .filter(|t| !tool_exists(t))
        .collect();
    if !missing.is_empty() {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: required tools missing under CI: {missing:?}");
        }
        loud(&format!("skipped: needs tools {missing:?} ({test})"));
        return false;
    }
    true
}

/// Writes straight to the process's stderr, past the test harness's output
/// capture, so that a skip shows even when the test "passes".
pub fn loud(msg: &str) {
    use std::io::Write;
    let bar = "=".repeat(msg.len().min(76));
    let _ = writeln!(std::io::stderr(), "{bar}\n{msg}\n{bar}");
}

/// `root_or_skip` for the usual scanning test: ip, nmap, iptables, ip6tables.
pub fn scan_test_or_skip(test: &str) -> bool {
    root_or_skip(test, &["nmap", "iptables", "ip6tables", "nc"])
}

/// True if `name` is an executable in PATH (or an absolute path that exists).
pub fn tool_exists(name: &str) -> bool {
    if name.contains('/') {
        return std::path::Path::new(name).exists();
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d| d.join(name).is_file())
}

/// Result of a command run with a bounded wait.
#[derive(Debug)]
pub struct Output {
    /// None when the command was killed because it ran past its timeout.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "status: {:?}{}",
            self.status,
            if self.timed_out {
                " (timed out, killed)"
            } else {
                ""
            }
        )?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

/// Runs `cmd` in its own process group, waits at most `timeout`, kills the whole
/// group on expiry, and returns its captured output.
pub fn run_timeout(mut cmd: Command, timeout: Duration) -> Output {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let desc = format!("{cmd:?}");
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Output {
                status: None,
                stdout: String::new(),
                stderr: format!("spawn failed for {desc}: {e}"),
                timed_out: false,
            };
        }
    };
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let pid = child.id() as i32;
    let (status, timed_out) = match child.wait_timeout(timeout) {
        Ok(Some(s)) => (Some(s), false),
        Ok(None) | Err(_) => {
            kill_group(pid, libc::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
            (None, true)
        }
    };
    // The group may have left children holding the pipes; make sure they go too.
    kill_group(pid, libc::SIGKILL);
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    Output {
        status,
        stdout,
        stderr,
        timed_out,
    }
}

/// Runs a command given as argv (no namespace) with a bounded wait.
pub fn run_argv(argv: &[&str], timeout: Duration) -> Output {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    run_timeout(cmd, timeout)
}

/// Sends `sig` to the process group `pgid` (ignores errors: it may be gone).
pub fn kill_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is
        // involved. pgid > 1 so this is never "every process" (-1) or our own group (0).
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Sends `sig` to one process.
pub fn kill_pid(pid: i32, sig: i32) {
    if pid > 1 && pid != std::process::id() as i32 {
        // SAFETY: plain kill(2) on a positive pid.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Polls `cond` every `every` until it is true or `timeout` has passed. Bounded in
/// time and (through the interval) in count.
pub fn wait_until(timeout: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(every.min(timeout.saturating_sub(start.elapsed())));
    }
}

/// Path of a helper script under tests/scripts.
pub fn script(name: &str) -> String {
    format!("{}/tests/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Path of the daemon binary under test.
pub fn daemon_bin() -> &'static str {
    env!("CARGO_BIN_EXE_portsentry")
}

/// Fast, bounded nmap options used by the scan tests.
pub const NMAP_FAST: &[&str] = &[
    "-Pn",
    "-n",
    "-T4",
    "--max-retries",
    "1",
    "--host-timeout",
    "60s",
];
