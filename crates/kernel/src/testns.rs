//! Test support: network namespaces for tests (test builds and the `testns` feature).
//! One harness serves the kernel crate's unit tests and the daemon's system tests:
//!
//! - [`in_private_netns`]: the test body runs on a thread of its own inside a private,
//!   unnamed namespace ([`Netns`]), for tests that talk netlink from the test process.
//! - [`NamedNetns`]: a namespace made with `ip netns add` under a unique name
//!   (`pst-<pid>-<n>-<role>`), for tests that run programs (the daemon, scanners,
//!   servers) in several namespaces joined by veth pairs. [`Peer`] is one of them joined
//!   to a private namespace.
//!
//! Safety invariants (TESTING.md, network safety; every test relies on them):
//!
//! 1. Firewall, route and link changes happen only in namespaces the test creates.
//!    [`in_private_netns`] runs the body on a thread of its own that first calls
//!    `unshare(CLONE_NEWNET)`. That moves only this thread: sockets it opens (netlink
//!    included) and processes it spawns live in the new namespace. The namespace dies
//!    with the thread, with its nft tables, routes and links, also when the body panics.
//! 2. Before the body runs, the thread's namespace must differ from the one it had
//!    before `unshare`, from the main thread's (`/proc/self/ns/net`) and from PID 1's
//!    when that one is readable. It is not readable everywhere (ptrace rules in
//!    containers), so the first two comparisons are the proof. A spawned child
//!    (`readlink /proc/self/ns/net`) must report the thread's namespace.
//! 3. Each command run through [`Netns`] checks twice before it starts. In the parent,
//!    the thread must still be in its namespace. In the child, between fork and exec,
//!    `stat` of `/proc/self/ns/net` must give the namespace's inode. If it does not, the
//!    exec is refused and the test panics. Every command is bounded in time
//!    ([`COMMAND_TIMEOUT`]) and killed after it.
//! 4. A [`NamedNetns`] is new: right after `ip netns add`, its namespace (the nsfs inode
//!    of `/run/netns/NAME`) must differ from the test process's, from the creating
//!    thread's and, when readable, from PID 1's. It gets `lo` up and nothing else: links
//!    only as veth pairs made inside test namespaces (`ip -n`, so nothing is ever made
//!    in the root namespace), addresses only from 198.18.0.0/15 and fd00:5e17::/64
//!    (asserted before they are added), never a default route or an uplink. Dropping
//!    it, also while a test unwinds, kills the processes left in it (SIGTERM, then
//!    SIGKILL, in bounded rounds) and deletes it; its veth ends go with it. The first
//!    one a test process creates deletes the namespaces with our prefix whose creator
//!    (the pid in the name) is dead, and only those. Its commands run with a time
//!    limit, after which their whole process group is killed.
//! 5. A [`Peer`] is a [`NamedNetns`] joined to the test's private namespace by a veth
//!    pair. A process in it must see a namespace that is neither the test's nor the
//!    original one (invariant 2). It is deleted on drop.
//! 6. Without root, the test says `*** skipped: needs root (NAME) ***` on the process's
//!    real stderr, which libtest does not capture. It never passes silently.

use std::ffi::{CStr, CString};
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{self, Child, Command, ExitStatus, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use wait_timeout::ChildExt;

/// The longest a command may run before it is killed and the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// The errno the pre-exec hook returns when the child is not in the test namespace.
/// exec itself never returns EXDEV, so spawn errors with it come from the hook.
const NOT_IN_NETNS: i32 = libc::EXDEV;

const THREAD_NS: &CStr = c"/proc/thread-self/ns/net";
const MAIN_NS: &CStr = c"/proc/self/ns/net";
const INIT_NS: &CStr = c"/proc/1/ns/net";

/// Writes `msg` to the process's stderr, framed so that it stands out. It bypasses
/// libtest's output capture, so it shows even for a passing test.
pub fn loud(msg: &str) {
    let _ = writeln!(io::stderr().lock(), "\n*** {msg} ***\n");
}

/// A network namespace: its link text (`net:[…]`) and its nsfs device and inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NsId {
    link: PathBuf,
    dev: libc::dev_t,
    ino: libc::ino_t,
}

/// `stat` of a namespace file: its device and inode. Async-signal-safe (no
/// allocation), so the pre-exec hook can use it.
fn stat_ns(path: &CStr) -> io::Result<(libc::dev_t, libc::ino_t)> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `path` is NUL-terminated and `st` is a buffer the size of a `stat`.
    if unsafe { libc::stat(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: stat succeeded, so it filled the buffer.
    let st = unsafe { st.assume_init() };
    Ok((st.st_dev, st.st_ino))
}

fn ns_of(path: &CStr) -> io::Result<NsId> {
    let link = std::fs::read_link(path.to_str().expect("an ASCII path"))?;
    let (dev, ino) = stat_ns(path)?;
    Ok(NsId { link, dev, ino })
}

/// The pre-exec hook: fails with [`NOT_IN_NETNS`] unless the process (in the child,
/// the forked thread is its only one) is in the namespace `dev`/`ino`.
fn in_netns(
    dev: libc::dev_t,
    ino: libc::ino_t,
) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
    move || match stat_ns(MAIN_NS) {
        Ok(id) if id == (dev, ino) => Ok(()),
        Ok(_) => Err(io::Error::from_raw_os_error(NOT_IN_NETNS)),
        Err(e) => Err(e),
    }
}

/// Proof that the current thread is in a network namespace of its own. The body of
/// [`in_private_netns`] receives it; commands run through it. It cannot leave the
/// thread (it is neither `Send` nor `Sync`).
pub struct Netns {
    name: String,
    ours: NsId,
    /// The thread's namespace before `unshare`.
    original: NsId,
    /// The main thread's namespace, which the test process's other threads share.
    main: NsId,
    _this_thread_only: PhantomData<*const ()>,
}

/// Why [`Netns::exec`] did not give an output.
enum ExecError {
    /// The program could not be started (not installed, for instance).
    Spawn(io::Error),
    /// A namespace check failed: nothing ran.
    Refused(String),
    /// It ran past its time limit (or could not be waited for) and was killed.
    TimedOut,
}

impl Netns {
    /// Moves the calling thread into a new network namespace and checks it (invariant 2).
    /// `None` after a loud skip when the kernel refuses (EPERM).
    fn enter(name: &str) -> Option<Netns> {
        let original = ns_of(THREAD_NS).expect("read own netns");
        // SAFETY: unshare with a valid flag; it changes only the calling thread's
        // network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EPERM) {
                loud(&format!(
                    "skipped: needs root ({name}): unshare(CLONE_NEWNET): {e}"
                ));
                return None;
            }
            panic!("unshare(CLONE_NEWNET): {e} ({name})");
        }
        let ours = ns_of(THREAD_NS).expect("read own netns");
        let main = ns_of(MAIN_NS).expect("read the main thread's netns");
        assert_ne!(
            ours, original,
            "unshare did not give this thread a new namespace"
        );
        assert_ne!(
            ours, main,
            "refusing to touch the firewall of the test process's namespace"
        );
        match ns_of(INIT_NS) {
            Ok(init) => assert_ne!(
                ours, init,
                "refusing to touch the firewall of PID 1's namespace"
            ),
            Err(e) => eprintln!(
                "note ({name}): /proc/1/ns/net unreadable ({e}); the thread's namespace \
                 differs from the one it had and from the main thread's"
            ),
        }
        let ns = Netns {
            name: name.to_owned(),
            ours,
            original,
            main,
            _this_thread_only: PhantomData,
        };
        ns.assert_current();
        // Children spawned from this thread must land in the same namespace.
        let child = ns.run(&["readlink", "/proc/self/ns/net"]);
        assert_eq!(
            Path::new(child.trim()),
            ns.ours.link,
            "a spawned command is not in the test namespace"
        );
        Some(ns)
    }

    /// Whether the calling thread is still in this private namespace, which is neither
    /// the original, the main thread's nor (when readable) PID 1's.
    fn check(&self) -> Result<(), String> {
        let now = ns_of(THREAD_NS).map_err(|e| format!("cannot read own netns: {e}"))?;
        if now != self.ours {
            return Err(format!(
                "test thread left its private netns ({:?}, expected {:?})",
                now.link, self.ours.link
            ));
        }
        if now == self.original || now == self.main {
            return Err("test thread is in the test process's netns".into());
        }
        if ns_of(INIT_NS).is_ok_and(|init| init == now) {
            return Err("test thread is in PID 1's netns".into());
        }
        Ok(())
    }

    /// Panics unless the calling thread is still in this private namespace.
    pub fn assert_current(&self) {
        if let Err(e) = self.check() {
            panic!("{e} ({})", self.name);
        }
    }

    /// Runs `argv` in this namespace with `input` on stdin, within [`COMMAND_TIMEOUT`].
    /// Never panics: the drop guards use it too.
    fn exec(&self, argv: &[&str], input: Option<&[u8]>) -> Result<process::Output, ExecError> {
        self.check().map_err(ExecError::Refused)?;
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]);
        // SAFETY: the hook runs in the child between fork and exec. It only calls
        // stat(2), which is async-signal-safe, into a stack buffer and compares
        // integers. It neither allocates nor takes locks.
        unsafe { cmd.pre_exec(in_netns(self.ours.dev, self.ours.ino)) };
        match bounded(cmd, input, COMMAND_TIMEOUT) {
            Ok(Finished {
                status: Some(status),
                stdout,
                stderr,
            }) => Ok(process::Output {
                status,
                stdout,
                stderr,
            }),
            Ok(Finished { status: None, .. }) => Err(ExecError::TimedOut),
            Err(e) if e.raw_os_error() == Some(NOT_IN_NETNS) => Err(ExecError::Refused(format!(
                "{argv:?}: the child is not in the test netns"
            ))),
            Err(e) => Err(ExecError::Spawn(e)),
        }
    }

    /// Runs `argv`: its output, or the error that kept it from starting (a program
    /// that is not installed, for instance). Panics when a namespace check fails or the
    /// command runs past [`COMMAND_TIMEOUT`].
    pub fn output(&self, argv: &[&str], input: Option<&[u8]>) -> io::Result<process::Output> {
        match self.exec(argv, input) {
            Ok(out) => Ok(out),
            Err(ExecError::Spawn(e)) => Err(e),
            Err(ExecError::Refused(why)) => panic!("refusing to run {argv:?}: {why}"),
            Err(ExecError::TimedOut) => panic!("{argv:?} timed out after {COMMAND_TIMEOUT:?}"),
        }
    }

    /// Runs `argv` with `input` on stdin. It must succeed. Returns its stdout.
    pub fn run_with_input(&self, argv: &[&str], input: &str) -> String {
        self.must_run(argv, Some(input))
    }

    /// Runs `argv`. It must succeed. Returns its stdout.
    pub fn run(&self, argv: &[&str]) -> String {
        self.must_run(argv, None)
    }

    fn must_run(&self, argv: &[&str], input: Option<&str>) -> String {
        let out = self
            .output(argv, input.map(str::as_bytes))
            .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
        assert!(
            out.status.success(),
            "{argv:?}: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            input.map(|i| format!("\n{i}")).unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `argv`, which may fail. Returns whether it started and succeeded. Output
    /// is discarded.
    pub fn try_run(&self, argv: &[&str]) -> bool {
        self.output(argv, None).is_ok_and(|o| o.status.success())
    }
}

/// Runs `body` on a new thread inside a new network namespace with `lo` up, after the
/// checks of invariant 2. A panic in `body` fails the calling test. Without root it
/// skips loudly (invariant 5).
pub fn in_private_netns(name: &str, body: impl FnOnce(&Netns) + Send + 'static) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        loud(&format!("skipped: needs root ({name})"));
        return;
    }
    let name = name.to_owned();
    let thread = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let Some(ns) = Netns::enter(&name) else {
                return;
            };
            ns.run(&["ip", "link", "set", "lo", "up"]);
            body(&ns);
        })
        .expect("spawn test thread");
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

// ---------------------------------------------------------------------------------
// Commands with a time limit
// ---------------------------------------------------------------------------------

/// What [`bounded`] got from a child that started.
struct Finished {
    /// `None` when the child was killed: past its time limit, or not waitable.
    status: Option<ExitStatus>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `cmd` in a process group of its own with `input` on stdin (else /dev/null),
/// waits at most `timeout`, then kills the whole group. Stdout and stderr are read on
/// threads of their own, so that a full pipe cannot stall the child past the limit.
/// The only error is the one that kept the child from starting.
fn bounded(mut cmd: Command, input: Option<&[u8]>, timeout: Duration) -> io::Result<Finished> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut child = cmd.spawn()?;
    let pid = child.id() as i32;
    let stdin = child.stdin.take();
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    Ok(std::thread::scope(|s| {
        s.spawn(move || {
            if let (Some(mut w), Some(data)) = (stdin, input) {
                let _ = w.write_all(data);
            }
        });
        let out = s.spawn(move || {
            let mut v = Vec::new();
            let _ = stdout.read_to_end(&mut v);
            v
        });
        let err = s.spawn(move || {
            let mut v = Vec::new();
            let _ = stderr.read_to_end(&mut v);
            v
        });
        let status = match child.wait_timeout(timeout) {
            Ok(Some(status)) => Some(status),
            Ok(None) | Err(_) => {
                kill_group(pid, libc::SIGKILL);
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        };
        // The group may have left children holding the pipes; make sure they go too.
        kill_group(pid, libc::SIGKILL);
        Finished {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        }
    }))
}

/// Result of a command run with [`run_timeout`].
#[derive(Debug)]
pub struct Output {
    /// `None` when the command did not start or was killed past its time limit.
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

/// Runs `cmd` in its own process group with stdin from /dev/null, waits at most
/// `timeout`, kills the whole group on expiry, and returns its captured output. A
/// command that cannot start gives status `None` and the reason in `stderr`.
pub fn run_timeout(cmd: Command, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    match bounded(cmd, None, timeout) {
        Ok(f) => Output {
            status: f.status,
            stdout: String::from_utf8_lossy(&f.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&f.stderr).into_owned(),
            timed_out: f.status.is_none(),
        },
        Err(e) => Output {
            status: None,
            stdout: String::new(),
            stderr: format!("spawn failed for {desc}: {e}"),
            timed_out: false,
        },
    }
}

/// Runs a command given as argv (in the caller's namespace) with a bounded wait.
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

/// Sends `sig` to one process (never PID 1 or this process).
pub fn kill_pid(pid: i32, sig: i32) {
    if pid > 1 && pid != process::id() as i32 {
        // SAFETY: plain kill(2) on a positive pid.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

// ---------------------------------------------------------------------------------
// Addresses and links
// ---------------------------------------------------------------------------------

/// The only ranges a test address may come from.
pub const TEST_NETS: [&str; 2] = ["198.18.0.0/15", "fd00:5e17::/64"];

/// Panics unless `addr` (CIDR or plain address) lies in [`TEST_NETS`].
pub fn assert_test_addr(addr: &str) {
    let ip: std::net::IpAddr = match addr.parse::<IpNet>() {
        Ok(net) => net.addr(),
        Err(_) => addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}")),
    };
    let inside = TEST_NETS
        .iter()
        .any(|t| t.parse::<IpNet>().expect("a valid range").contains(&ip));
    assert!(inside, "{addr} is outside the test ranges {TEST_NETS:?}");
}

/// `ip [-n NETNS] [-6] addr add ADDR dev DEV [nodad]`, after asserting that ADDR lies
/// in the test ranges.
fn addr_add<'s>(netns: Option<&'s str>, addr: &'s str, dev: &'s str) -> Vec<&'s str> {
    assert_test_addr(addr);
    let mut argv = vec!["ip"];
    if let Some(n) = netns {
        argv.extend(["-n", n]);
    }
    let v6 = addr.contains(':');
    if v6 {
        argv.push("-6");
    }
    argv.extend(["addr", "add", addr, "dev", dev]);
    if v6 {
        argv.push("nodad");
    }
    argv
}

/// `ip [-n NETNS] link add LOCAL type veth peer name REMOTE netns REMOTE_NS`: a veth
/// pair made in `netns` (never the root namespace) whose other end goes straight into
/// the named namespace `remote_ns`.
fn veth_add<'s>(
    netns: Option<&'s str>,
    local: &'s str,
    remote: &'s str,
    remote_ns: &'s str,
) -> Vec<&'s str> {
    let mut argv = vec!["ip"];
    if let Some(n) = netns {
        argv.extend(["-n", n]);
    }
    argv.extend([
        "link", "add", local, "type", "veth", "peer", "name", remote, "netns", remote_ns,
    ]);
    argv
}

// ---------------------------------------------------------------------------------
// Named namespaces
// ---------------------------------------------------------------------------------

/// Prefix of every namespace [`NamedNetns`] creates: `pst-<pid>-<n>-<role>`.
pub const PREFIX: &str = "pst-";

/// Time limit of the harness's own `ip` commands.
const IP_TIMEOUT: Duration = Duration::from_secs(10);

static NAMED_SEQ: AtomicU32 = AtomicU32::new(0);
static REAP: Once = Once::new();

/// A network namespace made with `ip netns add` for a test (invariant 4). `Drop` kills
/// the processes left in it and deletes it (its veth ends and bridge go with it).
pub struct NamedNetns {
    name: String,
}

impl NamedNetns {
    /// Creates a uniquely named namespace with `lo` up. `role` is a short label that
    /// shows up in the name for debugging (e.g. "def", "atk").
    pub fn new(role: &str) -> NamedNetns {
        REAP.call_once(reap_stale);
        let n = NAMED_SEQ.fetch_add(1, Ordering::SeqCst);
        let role: String = role
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(8)
            .collect();
        let name = format!("{PREFIX}{}-{n}-{role}", process::id());
        let out = run_argv(&["ip", "netns", "add", &name], IP_TIMEOUT);
        assert!(out.success(), "ip netns add {name} failed:\n{out}");
        // From here on, a panic deletes it again.
        let ns = NamedNetns { name };
        ns.assert_new();
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Panics unless the namespace is neither the test process's, the calling
    /// thread's nor (when readable) PID 1's.
    fn assert_new(&self) {
        let path = CString::new(format!("/run/netns/{}", self.name)).expect("no NUL");
        let theirs =
            stat_ns(&path).unwrap_or_else(|e| panic!("stat /run/netns/{}: {e}", self.name));
        for (what, path) in [
            ("the test process's", MAIN_NS),
            ("the creating thread's", THREAD_NS),
        ] {
            let other = stat_ns(path).unwrap_or_else(|e| panic!("stat {path:?}: {e}"));
            assert_ne!(theirs, other, "netns {} is {what} namespace", self.name);
        }
        if let Ok(init) = stat_ns(INIT_NS) {
            assert_ne!(theirs, init, "netns {} is PID 1's namespace", self.name);
        }
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
        must(&argv);
    }

    /// Adds `addr` (CIDR, IPv4 or IPv6) to `dev`, after asserting that it lies in the
    /// test ranges. IPv6 addresses skip duplicate address detection.
    pub fn add_addr(&self, dev: &str, addr: &str) {
        must(&addr_add(Some(&self.name), addr, dev));
    }

    /// Creates a veth pair from `local` in this namespace to `remote` in `other`.
    pub fn veth(&self, local: &str, other: &NamedNetns, remote: &str) {
        must(&veth_add(Some(&self.name), local, remote, &other.name));
    }

    /// `sysctl -qw key=value` inside the namespace; panics on failure.
    pub fn sysctl(&self, kv: &str) {
        self.exec_ok(&["sysctl", "-qw", kv], IP_TIMEOUT);
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
        self.thread(f)
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

impl Drop for NamedNetns {
    fn drop(&mut self) {
        destroy(&self.name);
    }
}

/// Runs `argv` (an `ip -n …` command) with [`IP_TIMEOUT`]; panics on failure.
fn must(argv: &[&str]) {
    let out = run_argv(argv, IP_TIMEOUT);
    assert!(out.success(), "{argv:?} failed:\n{out}");
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns(2) on a valid fd of a network namespace file; it only changes
    // the calling thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", io::Error::last_os_error());
}

fn pids_of(name: &str) -> Vec<i32> {
    let out = run_argv(&["ip", "netns", "pids", name], IP_TIMEOUT);
    out.stdout
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&p: &i32| p != process::id() as i32)
        .collect()
}

/// Kills what runs in namespace `name` and deletes it. Bounded retries.
fn destroy(name: &str) {
    for round in 0..5 {
        let pids = pids_of(name);
        let sig = if round == 0 {
            libc::SIGTERM
        } else {
            libc::SIGKILL
        };
        for &p in &pids {
            kill_pid(p, sig);
        }
        if !pids.is_empty() {
            std::thread::sleep(Duration::from_millis(if round == 0 { 300 } else { 100 }));
            if !pids_of(name).is_empty() {
                continue;
            }
        }
        let out = run_argv(&["ip", "netns", "del", name], IP_TIMEOUT);
        if out.success() || !Path::new(&format!("/run/netns/{name}")).exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    loud(&format!("warning: could not delete netns {name}"));
}

/// Deletes namespaces left by earlier test processes that died without cleaning up
/// (their pid, in the name, no longer exists). Only names with our prefix and a dead
/// creator are touched.
fn reap_stale() {
    let out = run_argv(&["ip", "netns", "list"], IP_TIMEOUT);
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
        if pid != process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("note: removing stale test namespace {name}");
            destroy(name);
        }
    }
}

/// A background process started by [`NamedNetns::spawn`]; killed (with its process
/// group) on drop.
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

// ---------------------------------------------------------------------------------
// A peer of a private namespace
// ---------------------------------------------------------------------------------

/// Our end of a [`Peer`]'s veth pair.
const LOCAL_IF: &str = "vpeer0";
/// The peer's end.
const PEER_IF: &str = "vpeer1";
/// Our addresses on [`LOCAL_IF`].
const LOCAL_ADDRS: [&str; 2] = ["198.18.0.1/24", "fd00:5e17::1/64"];

/// A [`NamedNetns`] joined to the test's private namespace by a veth pair (invariant
/// 5). It is deleted when dropped. Our end is `vpeer0` with 198.18.0.1/24 and
/// fd00:5e17::1/64.
pub struct Peer<'a> {
    ns: &'a Netns,
    named: NamedNetns,
}

impl<'a> Peer<'a> {
    /// Creates the peer namespace with `lo` up and `vpeer1` holding `addrs` (CIDR,
    /// IPv4 or IPv6, all inside the test ranges).
    pub fn new(ns: &'a Netns, addrs: &[&str]) -> Peer<'a> {
        // All addresses are checked before anything is made.
        for a in LOCAL_ADDRS.iter().chain(addrs) {
            assert_test_addr(a);
        }
        ns.assert_current();
        let named = NamedNetns::new("peer");
        let peer = Peer { ns, named };
        let n = peer.named.name();
        // A process in it sees a namespace that is not one we started from.
        let theirs = ns.run(&["ip", "netns", "exec", n, "readlink", "/proc/self/ns/net"]);
        let theirs = Path::new(theirs.trim());
        for (what, other) in [
            ("the test's", &ns.ours),
            ("the original", &ns.original),
            ("the main thread's", &ns.main),
        ] {
            assert_ne!(theirs, other.link, "peer {n} is {what} namespace");
        }
        if let Ok(init) = ns_of(INIT_NS) {
            assert_ne!(theirs, init.link, "peer {n} is PID 1's namespace");
        }
        ns.run(&veth_add(None, LOCAL_IF, PEER_IF, n));
        for a in LOCAL_ADDRS {
            ns.run(&addr_add(None, a, LOCAL_IF));
        }
        ns.run(&["ip", "link", "set", LOCAL_IF, "up"]);
        for a in addrs {
            peer.named.add_addr(PEER_IF, a);
        }
        peer.named.ip(&["link", "set", PEER_IF, "up"]);
        peer
    }

    /// Runs `argv` in the peer namespace. Returns whether it succeeded.
    pub fn run(&self, argv: &[&str]) -> bool {
        let mut all = vec!["ip", "netns", "exec", self.named.name()];
        all.extend_from_slice(argv);
        self.ns.try_run(&all)
    }

    /// TCP connect from `src` (in the peer) to `dst:port`, 1 s timeout.
    pub fn connect(&self, src: &str, dst: &str, port: u16) -> bool {
        self.run(&["nc", "-z", "-w1", "-s", src, dst, &port.to_string()])
    }

    /// Like `connect`, but tries up to five times (the link may still be coming up).
    pub fn connect_eventually(&self, src: &str, dst: &str, port: u16) -> bool {
        (0..5).any(|_| self.connect(src, dst, port))
    }

    /// One UDP datagram from `src` (in the peer) to `dst:port`.
    pub fn udp(&self, src: &str, dst: &str, port: u16) {
        let cmd = format!("echo probe | nc -u -w1 -s {src} {dst} {port}");
        self.run(&["sh", "-c", &cmd]);
    }
}

impl Drop for Peer<'_> {
    fn drop(&mut self) {
        // Deleting our end removes both ends at once, so a next peer can reuse the
        // names at once. The namespace itself goes when `named` drops, after this.
        match self.ns.check() {
            Ok(()) => {
                let _ = self.ns.exec(&["ip", "link", "del", LOCAL_IF], None);
            }
            Err(e) => loud(&format!(
                "peer {}: not deleting {LOCAL_IF}: {e}",
                self.named.name()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// The pre-exec hook refuses the exec when the child is in another namespace; no
    /// privileges needed.
    #[test]
    fn the_pre_exec_hook_refuses_a_child_in_another_namespace() {
        let main = ns_of(MAIN_NS).expect("read the main thread's netns");
        let spawn = |ino| {
            let mut cmd = Command::new("true");
            // SAFETY: as in `Netns::exec`: the hook only calls stat(2) and compares.
            unsafe { cmd.pre_exec(in_netns(main.dev, ino)) };
            cmd.status()
        };
        assert!(spawn(main.ino).expect("same namespace").success());
        let err = spawn(main.ino ^ 1).expect_err("the hook must refuse the exec");
        assert_eq!(err.raw_os_error(), Some(NOT_IN_NETNS), "{err}");
    }

    /// A thread that leaves its private namespace cannot run commands through it.
    #[test]
    fn commands_are_refused_after_the_thread_left_its_namespace() {
        in_private_netns(
            "testns::commands_are_refused_after_the_thread_left_its_namespace",
            |ns| {
                assert!(ns.try_run(&["true"]));
                let main = std::fs::File::open("/proc/self/ns/net").expect("open main netns");
                // SAFETY: a valid namespace fd; setns changes only this thread's namespace.
                let rc = unsafe { libc::setns(main.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
                assert!(ns.check().is_err());
                let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    ns.try_run(&["true"]);
                }));
                let msg = refused.expect_err("a command ran outside the private netns");
                let msg = msg
                    .downcast_ref::<String>()
                    .expect("a formatted panic message");
                assert!(msg.contains("left its private netns"), "{msg}");
            },
        );
    }
}
