//! Harness for the system tests: a lab of hosts joined by a bridge, small services,
//! and a guard around the portsentry daemon.
//!
//! The namespaces themselves are the kernel crate's test harness
//! (`portsentry_kernel::testns`, feature `testns`), the same one its unit tests use:
//! [`Netns`] is its `NamedNetns`, with the commands, time limits, veth pairs, address
//! checks and cleanup that `testns` documents.
//!
//! Network safety (see shared/design/TESTING.md): every namespace is created through
//! `testns` and deleted by its `Drop` guard; hosts get addresses from 198.18.0.0/15 and
//! fd00:5e17::/64 only (asserted when they are added); no namespace gets a default
//! route or an uplink; nothing is changed in the root namespace (veth pairs are created
//! directly inside the test namespaces with `ip -n`).
#![allow(dead_code, unused_imports)]

pub mod checks;
pub mod daemon;
pub mod kernel;
pub mod lab;
pub mod net;
pub mod probe;
pub mod syslog;

use std::time::{Duration, Instant};

pub use daemon::{Conf, Daemon, HistoryLine};
pub use lab::{Host, Lab, OPEN};
pub use net::{TcpServer, UdpServer, can_connect, can_reach};
pub use portsentry_kernel::testns::{
    NamedNetns as Netns, Output, Proc, kill_group, kill_pid, loud, run_argv, run_timeout,
};
pub use probe::Path;
pub(crate) use probe::both_paths;

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

/// The tools of the usual scanning test (besides `ip`).
pub const SCAN_TOOLS: &[&str] = &["nmap", "iptables", "ip6tables", "nc"];

/// `root_or_skip` for the usual scanning test: ip, nmap, iptables, ip6tables, nc.
pub fn scan_test_or_skip(test: &str) -> bool {
    root_or_skip(test, SCAN_TOOLS)
}

/// The set-up most scenarios share: `None` after a loud skip unless the test may run
/// ([`root_or_skip`] with `tools`), else a lab of the defender and `peers` (by role)
/// whose defender serves TCP on [`OPEN`].
pub fn lab_or_skip(test: &str, tools: &[&str], peers: &[&str]) -> Option<Lab> {
    if !root_or_skip(test, tools) {
        return None;
    }
    let lab = peers
        .iter()
        .fold(Lab::builder(), |b, role| b.peer(role))
        .open_service();
    Some(lab.build())
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

/// Where `.ci/run` unpacks Debian's packages (never installs them): the folder of
/// `package` under `$PORTSENTRY_DEB_ROOT`, else under `target/deb-root` of the repository.
pub fn deb_root(package: &str) -> std::path::PathBuf {
    let base = std::env::var_os("PORTSENTRY_DEB_ROOT").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/deb-root"),
        std::path::PathBuf::from,
    );
    base.join(package)
}
