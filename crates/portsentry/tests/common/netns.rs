//! A network namespace owned by the test, deleted on drop.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use wait_timeout::ChildExt;

use super::{Output, kill_group, kill_pid, run_argv, run_timeout};

static COUNTER: AtomicU32 = AtomicU32::new(0);
static REAP: Once = Once::new();

/// Prefix of every namespace this harness creates: `pst-<pid>-<n>-<role>`.
pub const PREFIX: &str = "pst-";

/// A network namespace created for a test. `Drop` kills the processes left in it and
/// deletes it (its veth ends and bridge go with it).
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a uniquely named namespace with `lo` up. `role` is a short label
    /// that shows up in the name for debugging (e.g. "def", "atk").
    pub fn new(role: &str) -> Netns {
        REAP.call_once(reap_stale);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let role: String = role
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(8)
            .collect();
        let name = format!("{PREFIX}{}-{n}-{role}", std::process::id());
        let out = run_argv(&["ip", "netns", "add", &name], Duration::from_secs(10));
        assert!(out.success(), "ip netns add {name} failed:\n{out}");
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Command` that runs `argv` inside this namespace (`ip netns exec NAME ...`).
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(argv);
        cmd
    }

    /// Runs `argv` inside the namespace, waiting at most `timeout`.
    pub fn exec(&self, argv: &[&str], timeout: Duration) -> Output {
        run_timeout(self.command(argv), timeout)
    }

    /// Runs `argv` inside the namespace and panics (with its output) if it fails.
    pub fn exec_ok(&self, argv: &[&str], timeout: Duration) -> Output {
        let out = self.exec(argv, timeout);
        assert!(
            out.success(),
            "in netns {}: {argv:?} failed:\n{out}",
            self.name
        );
        out
    }

    /// `ip -n NAME <args>`; panics on failure.
    pub fn ip(&self, args: &[&str]) {
        let mut argv = vec!["ip", "-n", &self.name];
        argv.extend_from_slice(args);
        let out = run_argv(&argv, Duration::from_secs(10));
        assert!(out.success(), "{argv:?} failed:\n{out}");
    }

    /// `sysctl -qw key=value` inside the namespace; panics on failure.
    pub fn sysctl(&self, kv: &str) {
        self.exec_ok(&["sysctl", "-qw", kv], Duration::from_secs(10));
    }

    /// Starts `argv` in the background inside the namespace, in its own process
    /// group, with output discarded. The returned guard kills it on drop.
    pub fn spawn(&self, argv: &[&str]) -> Proc {
        let mut cmd = self.command(argv);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {argv:?} in {}: {e}", self.name));
        Proc {
            child: Some(child),
            desc: format!("{argv:?} in {}", self.name),
        }
    }

    /// Runs `f` on a new thread whose network namespace is this one (setns), and
    /// returns its result. Sockets made there belong to this namespace, so a test
    /// can run a server or a client in Rust without spawning a process.
    pub fn run_in<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// Spawns a thread living in this namespace (see `run_in`).
    pub fn thread<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> std::thread::JoinHandle<R> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
    }

    /// Pids of the processes whose network namespace is this one.
    pub fn pids(&self) -> Vec<i32> {
        pids_of(&self.name)
    }

    /// `iptables -S <chain>` (or ip6tables) inside the namespace.
    pub fn iptables_s(&self, v6: bool, chain: &str) -> String {
        let tool = if v6 { "ip6tables" } else { "iptables" };
        self.exec_ok(&[tool, "-w", "5", "-S", chain], Duration::from_secs(15))
            .stdout
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        destroy(&self.name);
    }
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns(2) on a valid fd of a network namespace file; it only changes
    // the calling thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

fn pids_of(name: &str) -> Vec<i32> {
    let out = run_argv(&["ip", "netns", "pids", name], Duration::from_secs(10));
    out.stdout
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&p: &i32| p != std::process::id() as i32)
        .collect()
}

/// Kills what runs in namespace `name` and deletes it. Bounded retries.
fn destroy(name: &str) {
    for round in 0..5 {
        let pids = pids_of(name);
        for &p in &pids {
            kill_pid(
                p,
                if round == 0 {
                    libc::SIGTERM
                } else {
                    libc::SIGKILL
                },
            );
        }
        if !pids.is_empty() {
            std::thread::sleep(Duration::from_millis(if round == 0 { 300 } else { 100 }));
            if !pids_of(name).is_empty() {
                continue;
            }
        }
        let out = run_argv(&["ip", "netns", "del", name], Duration::from_secs(10));
        if out.success() || !std::path::Path::new(&format!("/run/netns/{name}")).exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("warning: could not delete netns {name}");
}

/// Deletes namespaces left by earlier test processes of this harness that died
/// without cleaning up (their pid, in the name, no longer exists). Only names with
/// our prefix and a dead creator are touched.
fn reap_stale() {
    let out = run_argv(&["ip", "netns", "list"], Duration::from_secs(10));
    for line in out.stdout.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("note: removing stale test namespace {name}");
            destroy(name);
        }
    }
}

/// A background process started by `Netns::spawn`; killed (with its process group)
/// on drop.
pub struct Proc {
    child: Option<Child>,
    desc: String,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGTERM, bounded wait, then SIGKILL, for the whole process group.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id() as i32;
            kill_group(pid, libc::SIGTERM);
            if !matches!(c.wait_timeout(Duration::from_secs(3)), Ok(Some(_))) {
                kill_group(pid, libc::SIGKILL);
                let _ = c.kill();
                let _ = c.wait();
            }
            kill_group(pid, libc::SIGKILL);
        }
    }

    pub fn desc(&self) -> &str {
        &self.desc
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}
