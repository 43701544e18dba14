//! Test support: run a test body inside a private network namespace (test builds only).
//!
//! Safety invariants (TESTING.md, network safety; every kernel test relies on them):
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
//! 4. A [`Peer`] is a second namespace (`ip netns add`) joined to the test's by a veth
//!    pair. It gets no other link and no default route, and only addresses from
//!    198.18.0.0/15 and fd00:5e17::/64 (asserted). It must be neither the test's nor
//!    the original namespace. It is deleted on drop, also while a test unwinds.
//! 5. Without root, the test says `*** skipped: needs root (NAME) ***` on the process's
//!    real stderr, which libtest does not capture. It never passes silently.

use std::ffi::CStr;
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
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
    TimedOut,
    Wait(io::Error),
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
    fn exec(&self, argv: &[&str], input: Option<&[u8]>) -> Result<Output, ExecError> {
        self.check().map_err(ExecError::Refused)?;
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..])
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the hook runs in the child between fork and exec. It only calls
        // stat(2), which is async-signal-safe, into a stack buffer and compares
        // integers. It neither allocates nor takes locks.
        unsafe { cmd.pre_exec(in_netns(self.ours.dev, self.ours.ino)) };
        let mut child = cmd.spawn().map_err(|e| {
            if e.raw_os_error() == Some(NOT_IN_NETNS) {
                ExecError::Refused(format!("{argv:?}: the child is not in the test netns"))
            } else {
                ExecError::Spawn(e)
            }
        })?;
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        // Feed and read on threads of their own, so that a full pipe cannot stall the
        // child past the timeout.
        std::thread::scope(|s| {
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
            let status = match child.wait_timeout(COMMAND_TIMEOUT) {
                Ok(Some(status)) => status,
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ExecError::TimedOut);
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ExecError::Wait(e));
                }
            };
            Ok(Output {
                status,
                stdout: out.join().expect("stdout reader"),
                stderr: err.join().expect("stderr reader"),
            })
        })
    }

    /// Runs `argv`: its output, or the error that kept it from starting (a program
    /// that is not installed, for instance). Panics when a namespace check fails or the
    /// command runs past [`COMMAND_TIMEOUT`].
    pub fn output(&self, argv: &[&str], input: Option<&[u8]>) -> io::Result<Output> {
        match self.exec(argv, input) {
            Ok(out) => Ok(out),
            Err(ExecError::Spawn(e)) => Err(e),
            Err(ExecError::Refused(why)) => panic!("refusing to run {argv:?}: {why}"),
            Err(ExecError::TimedOut) => panic!("{argv:?} timed out after {COMMAND_TIMEOUT:?}"),
            Err(ExecError::Wait(e)) => panic!("{argv:?}: wait: {e}"),
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

/// Our end of a [`Peer`]'s veth pair.
const LOCAL_IF: &str = "vpeer0";
/// The peer's end.
const PEER_IF: &str = "vpeer1";
/// Our addresses on [`LOCAL_IF`].
const LOCAL_ADDRS: [&str; 2] = ["198.18.0.1/24", "fd00:5e17::1/64"];
/// The only ranges a peer's addresses may come from.
const TEST_NETS: [&str; 2] = ["198.18.0.0/15", "fd00:5e17::/64"];

static PEER_SEQ: AtomicU32 = AtomicU32::new(0);

/// A second namespace joined to the test's by a veth pair (invariant 4). It is deleted
/// when dropped. Our end is `vpeer0` with 198.18.0.1/24 and fd00:5e17::1/64.
pub struct Peer<'a> {
    ns: &'a Netns,
    name: String,
}

impl<'a> Peer<'a> {
    /// Creates the peer namespace with `lo` up and `vpeer1` holding `addrs` (CIDR,
    /// IPv4 or IPv6, all inside the test ranges).
    pub fn new(ns: &'a Netns, addrs: &[&str]) -> Peer<'a> {
        let test_nets: Vec<IpNet> = TEST_NETS.iter().map(|n| n.parse().unwrap()).collect();
        for a in LOCAL_ADDRS.iter().chain(addrs) {
            let net: IpNet = a.parse().unwrap_or_else(|e| panic!("{a}: {e}"));
            assert!(
                test_nets.iter().any(|t| t.contains(&net.addr())),
                "{a} is outside the test ranges {TEST_NETS:?}"
            );
        }
        let name = format!(
            "pstest{}x{}",
            std::process::id(),
            PEER_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        ns.run(&["ip", "netns", "add", &name]);
        let peer = Peer { ns, name };
        let n = peer.name.as_str();
        // `ip netns add` made a new namespace: not ours, not one we started from.
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
        ns.run(&[
            "ip", "link", "add", LOCAL_IF, "type", "veth", "peer", "name", PEER_IF, "netns", n,
        ]);
        for a in LOCAL_ADDRS {
            ns.run(&addr_add(None, a, LOCAL_IF));
        }
        ns.run(&["ip", "link", "set", LOCAL_IF, "up"]);
        for a in addrs {
            ns.run(&addr_add(Some(n), a, PEER_IF));
        }
        ns.run(&["ip", "-n", n, "link", "set", "lo", "up"]);
        ns.run(&["ip", "-n", n, "link", "set", PEER_IF, "up"]);
        peer
    }

    /// Runs `argv` in the peer namespace. Returns whether it succeeded.
    pub fn run(&self, argv: &[&str]) -> bool {
        let mut all = vec!["ip", "netns", "exec", self.name.as_str()];
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

/// `ip [-n NETNS] [-6] addr add ADDR dev DEV [nodad]`.
fn addr_add<'s>(netns: Option<&'s str>, addr: &'s str, dev: &'s str) -> Vec<&'s str> {
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

impl Drop for Peer<'_> {
    fn drop(&mut self) {
        // Deleting our end removes both ends at once, so a next peer can reuse the
        // names at once. The peer's namespace may be freed later, asynchronously.
        match self.ns.check() {
            Ok(()) => {
                let _ = self.ns.exec(&["ip", "link", "del", LOCAL_IF], None);
            }
            Err(e) => loud(&format!("peer {}: not deleting {LOCAL_IF}: {e}", self.name)),
        }
        match self.ns.exec(&["ip", "netns", "del", &self.name], None) {
            Ok(out) if out.status.success() => {}
            Ok(out) => loud(&format!(
                "ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(_) => loud(&format!("ip netns del {}: could not run", self.name)),
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
