//! Running an external program: the one place that spawns `nft`, `ipset`, `iptables`
//! and the KILL_* commands of 1.2 configs.
//!
//! Owns, so that every caller gets the same guarantees:
//! - an argument list, never a shell (a caller that wants one passes `/bin/sh -c`);
//! - optional input on stdin and extra environment variables (`LC_ALL=C`);
//! - a time limit, after which the program is killed and the run is
//!   [`ProcessError::TimedOut`]; only the program is signalled, not its process group
//!   (none of the callers ever did), so children it started in the background live on;
//! - stdout and stderr captured, stdin fed, each on a thread of its own, so a big
//!   transaction or listing cannot deadlock on a full pipe;
//! - no waiting for pipes that outlive the program: a background child of the program
//!   (`cmd &` in a KILL_* shell line) may keep stderr open for as long as it runs, so
//!   once the program has exited the pipes are read only for what is already queued in
//!   them (everything the program itself wrote) and then let go;
//! - the failure texts: `exit status N` or `killed by a signal`, with the first line of
//!   stderr ([`Finished::reason`]);
//! - an empty signal mask in the program, whatever the mask of the calling thread (the
//!   daemon's threads block its handled signals, and a mask is inherited across exec):
//!   a KILL_* command or `nft` can always be stopped with SIGTERM.
//!
//! How the threads learn that the program has exited: they wait in `poll` on their pipe
//! and on a private wake pipe whose write end is closed once the program was reaped.

use std::fs::File;
use std::io::{self, PipeReader, Read as _, Write as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

use wait_timeout::ChildExt as _;

/// How long one run of a tool (`ipset`, `iptables`) or of a KILL_* command may take
/// before it is killed and counted as failed. `iptables` waits up to 10 s for the
/// xtables lock (`-w`), well within this.
pub const COMMAND_TIME_LIMIT: Duration = Duration::from_secs(30);

/// A run that did not produce an exit status to judge.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` did not finish within {limit:?} and was killed")]
    TimedOut { command: String, limit: Duration },
    /// Waiting for the program, or moving its input or output, failed.
    #[error("running `{command}` failed: {source}")]
    Io {
        command: String,
        #[source]
        source: io::Error,
    },
}

/// A program that ran to its end (whatever its exit status).
#[derive(Debug)]
pub struct Finished {
    /// The command line, for messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Exit code; `None` when killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// `exit status N` or `killed by a signal`.
    pub fn status_text(&self) -> String {
        status_text(self.code())
    }

    /// The first line of stderr, trimmed; `None` when that is empty.
    pub fn first_stderr_line(&self) -> Option<&str> {
        self.stderr
            .lines()
            .next()
            .map(str::trim)
            .filter(|l| !l.is_empty())
    }

    /// `exit status 3: <first stderr line>`, or just the status when stderr was empty.
    pub fn reason(&self) -> String {
        match self.first_stderr_line() {
            Some(first) => format!("{}: {first}", self.status_text()),
            None => self.status_text(),
        }
    }
}

/// `exit status N` for an exit code, `killed by a signal` for none.
pub fn status_text(code: Option<i32>) -> String {
    match code {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_string(),
    }
}

/// One run of a program; build it, then [`Run::run`].
#[derive(Debug, Clone)]
pub struct Run<'a> {
    program: &'a str,
    args: &'a [&'a str],
    limit: Duration,
    env: Vec<(&'a str, &'a str)>,
    stdin: Option<&'a [u8]>,
    capture_stdout: bool,
    keep: usize,
}

impl<'a> Run<'a> {
    /// `program args…`, killed after `limit`. stdin is `/dev/null` unless [`Run::stdin`].
    pub fn new(program: &'a str, args: &'a [&'a str], limit: Duration) -> Self {
        Run {
            program,
            args,
            limit,
            env: Vec::new(),
            stdin: None,
            capture_stdout: true,
            keep: usize::MAX,
        }
    }

    /// Set an environment variable for the program (the rest is inherited).
    pub fn env(mut self, key: &'a str, value: &'a str) -> Self {
        self.env.push((key, value));
        self
    }

    /// Feed `input` on stdin, then close it.
    pub fn stdin(mut self, input: &'a [u8]) -> Self {
        self.stdin = Some(input);
        self
    }

    /// Send stdout to `/dev/null` instead of capturing it (a background child of the
    /// program can then write to it for as long as it likes).
    pub fn discard_stdout(mut self) -> Self {
        self.capture_stdout = false;
        self
    }

    /// Keep at most `bytes` of stdout and of stderr; the rest is read and dropped, so
    /// a chatty program neither stalls nor fills memory.
    pub fn keep_at_most(mut self, bytes: usize) -> Self {
        self.keep = bytes;
        self
    }

    /// The command line for messages: the arguments are joined with spaces.
    pub fn command_line(&self) -> String {
        let mut s = self.program.to_string();
        for a in self.args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }

    /// Runs the program from the calling thread (so in its network namespace) and
    /// waits for it, at most the time limit. `Ok` whatever the exit status: the caller
    /// judges it. Input the program left unread is an error only when it exited 0 (a
    /// tool that stops early on bad input says why in its status and stderr).
    pub fn run(&self) -> Result<Finished, ProcessError> {
        let command = self.command_line();
        let io_err = |source| ProcessError::Io {
            command: command.clone(),
            source,
        };
        let spawn_err = |source| ProcessError::Spawn {
            command: command.clone(),
            source,
        };
        // Close-on-exec, so the program and its children never hold the write end.
        let (wake, wake_tx) = io::pipe().map_err(spawn_err)?;
        let mut cmd = Command::new(self.program);
        cmd.args(self.args)
            .envs(self.env.iter().copied())
            .stdin(piped_if(self.stdin.is_some()))
            .stdout(piped_if(self.capture_stdout))
            .stderr(Stdio::piped());
        // SAFETY: runs in the forked child before exec; sigemptyset and pthread_sigmask
        // are async-signal-safe, and the set is a local of the child.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                match libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) {
                    0 => Ok(()),
                    e => Err(io::Error::from_raw_os_error(e)),
                }
            });
        }
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();

        let (waited, fed, out, err) = thread::scope(|s| {
            // Dropped on every way out of this closure, unwinding too: the threads
            // below return once it is gone, so the scope never waits for a pipe.
            let wake_tx = wake_tx;
            let wake = &wake;
            let input = self.stdin.unwrap_or_default();
            let keep = self.keep;
            let fed = stdin.map(|p| s.spawn(move || feed(p.into(), input, wake)));
            let out = stdout.map(|p| s.spawn(move || drain(p.into(), keep, wake)));
            let err = stderr.map(|p| s.spawn(move || drain(p.into(), keep, wake)));
            let waited = wait_within(&mut child, self.limit);
            drop(wake_tx);
            let join = |h: Option<thread::ScopedJoinHandle<'_, io::Result<Vec<u8>>>>| {
                h.map_or(Ok(Vec::new()), |h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("pipe thread panicked")))
                })
            };
            let fed = fed.map_or(Ok(()), |h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("stdin thread panicked")))
            });
            (waited, fed, join(out), join(err))
        });

        let status = match waited.map_err(io_err)? {
            Some(status) => status,
            None => {
                return Err(ProcessError::TimedOut {
                    command,
                    limit: self.limit,
                });
            }
        };
        if let Err(e) = fed
            && status.success()
        {
            return Err(io_err(e));
        }
        let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
        Ok(Finished {
            stdout: text(out.map_err(io_err)?),
            stderr: text(err.map_err(io_err)?),
            command,
            status,
        })
    }
}

fn piped_if(piped: bool) -> Stdio {
    if piped { Stdio::piped() } else { Stdio::null() }
}

/// Waits for `child` at most `limit`; `None` when it ran over and was killed. The child
/// is reaped on every path.
fn wait_within(child: &mut Child, limit: Duration) -> io::Result<Option<ExitStatus>> {
    let waited = child.wait_timeout(limit);
    if !matches!(waited, Ok(Some(_))) {
        let _ = child.kill();
        let _ = child.wait();
    }
    waited
}

/// Writes `input` to the program's stdin, then closes it. Stops when the program has
/// exited (see [`wait_ready`]) with input left over.
fn feed(pipe: OwnedFd, input: &[u8], wake: &PipeReader) -> io::Result<()> {
    let mut pipe = File::from(pipe);
    set_nonblocking(pipe.as_fd())?;
    let mut rest = input;
    while !rest.is_empty() {
        match pipe.write(rest) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if wait_ready(pipe.as_fd(), libc::POLLOUT, wake.as_fd())? {
                    return Err(io::Error::other(format!(
                        "it exited with {} bytes of its input unread",
                        rest.len()
                    )));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads the program's stdout or stderr until end of file, or, once the program has
/// exited, until what was queued at that moment has been read: whatever comes later is
/// from a background child that still holds the pipe, and is not waited for.
fn drain(pipe: OwnedFd, keep: usize, wake: &PipeReader) -> io::Result<Vec<u8>> {
    let mut pipe = File::from(pipe);
    set_nonblocking(pipe.as_fd())?;
    let mut kept = Vec::new();
    const CHUNK: usize = 64 * 1024;
    let mut buf = vec![0u8; CHUNK];
    let mut read_some = |pipe: &mut File, mut budget: usize| -> io::Result<bool> {
        while budget > 0 {
            let want = buf.len().min(budget);
            match pipe.read(&mut buf[..want]) {
                Ok(0) => return Ok(true),
                Ok(n) => {
                    let room = keep.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                    budget -= n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    };
    // One buffer per round, so that a background child writing without pause cannot
    // keep this loop from seeing the wake-up.
    loop {
        if wait_ready(pipe.as_fd(), libc::POLLIN, wake.as_fd())? {
            let queued = queued_bytes(pipe.as_fd())?;
            read_some(&mut pipe, queued)?;
            return Ok(kept);
        }
        if read_some(&mut pipe, CHUNK)? {
            return Ok(kept);
        }
    }
}

/// Blocks until `fd` is ready for `events` (or hung up) or the write end of `wake` is
/// closed; `true` in the latter case.
fn wait_ready(fd: BorrowedFd<'_>, events: libc::c_short, wake: BorrowedFd<'_>) -> io::Result<bool> {
    let mut fds = [
        libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n >= 0 {
            return Ok(fds[1].revents != 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor we borrow; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How many bytes a pipe holds unread.
fn queued_bytes(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int to the pointer, which points at `n`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    fn sh(script: &str) -> Result<Finished, ProcessError> {
        Run::new("/bin/sh", &["-c", script], LIMIT).run()
    }

    #[test]
    fn the_program_starts_with_no_signal_blocked() {
        // A thread that blocks SIGTERM and SIGHUP, as the daemon's threads do.
        let out = std::thread::spawn(|| {
            // SAFETY: a zeroed sigset_t initialised by sigemptyset; this thread only.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGTERM);
                libc::sigaddset(&mut set, libc::SIGHUP);
                assert_eq!(
                    libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()),
                    0
                );
            }
            Run::new("grep", &["^SigBlk", "/proc/self/status"], LIMIT).run()
        })
        .join()
        .unwrap()
        .unwrap();
        assert!(out.success(), "{out:?}");
        assert_eq!(out.stdout.trim(), "SigBlk:\t0000000000000000");
    }

    #[test]
    fn success_with_stdout_captured() {
        let out = Run::new("/bin/echo", &["hello", "world"], LIMIT)
            .run()
            .unwrap();
        assert!(out.success());
        assert_eq!(out.code(), Some(0));
        assert_eq!(out.stdout, "hello world\n");
        assert_eq!(out.stderr, "");
        assert_eq!(out.command, "/bin/echo hello world");
        assert_eq!(out.reason(), "exit status 0");
    }

    #[test]
    fn failure_reports_exit_status_and_first_stderr_line() {
        let out = sh("echo out; echo '  first  ' >&2; echo second >&2; exit 3").unwrap();
        assert!(!out.success());
        assert_eq!(out.code(), Some(3));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.first_stderr_line(), Some("first"));
        assert_eq!(out.reason(), "exit status 3: first");
        assert_eq!(sh("exit 4").unwrap().reason(), "exit status 4");
        assert_eq!(sh("kill -9 $$").unwrap().reason(), "killed by a signal");
    }

    #[test]
    fn stdin_is_fed_and_env_set() {
        let out = Run::new("/bin/sh", &["-c", "echo \"$GREETING\"; cat"], LIMIT)
            .env("GREETING", "hi")
            .stdin(b"line one\nline two\n")
            .run()
            .unwrap();
        assert!(out.success());
        assert_eq!(out.stdout, "hi\nline one\nline two\n");
    }

    #[test]
    fn time_limit_kills_the_program() {
        let start = Instant::now();
        let e = Run::new("sleep", &["30"], Duration::from_millis(200))
            .run()
            .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(
            matches!(&e, ProcessError::TimedOut { command, limit }
                if command == "sleep 30" && *limit == Duration::from_millis(200)),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "`sleep 30` did not finish within 200ms and was killed"
        );
    }

    #[test]
    fn background_grandchild_holding_stderr_does_not_block() {
        let start = Instant::now();
        let out = sh("echo gone >&2; sleep 30 >&2 & exit 3").unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(out.reason(), "exit status 3: gone");
        // Nor one that writes without pause.
        let start = Instant::now();
        let out = Run::new("/bin/sh", &["-c", "yes >&2 & sleep 0.2; exit 3"], LIMIT)
            .keep_at_most(10)
            .run()
            .unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(out.reason(), "exit status 3: y");
        assert_eq!(out.stderr, "y\ny\ny\ny\ny\n");
        // Nor one holding stdout and stdin (and reading nothing; fd 3 because a
        // background command's own stdin is /dev/null): the input it left unread is
        // reported, since the program exited 0.
        let start = Instant::now();
        let out = Run::new(
            "/bin/sh",
            &["-c", "exec 3<&0; echo out; sleep 30 <&3 & exit 0"],
            LIMIT,
        )
        .stdin(&[b'x'; 1 << 20])
        .run();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(
            matches!(&out, Err(ProcessError::Io { source, .. })
                if source.to_string().contains("bytes of its input unread")),
            "{out:?}"
        );
    }

    #[test]
    fn large_output_and_input_do_not_deadlock() {
        let input = vec![b'x'; 1 << 20];
        let out = Run::new("cat", &[], LIMIT).stdin(&input).run().unwrap();
        assert!(out.success());
        assert_eq!(out.stdout.len(), input.len());
        let out = sh("head -c 1048576 /dev/zero; head -c 1048576 /dev/zero >&2").unwrap();
        assert!(out.success());
        assert_eq!((out.stdout.len(), out.stderr.len()), (1 << 20, 1 << 20));
    }

    #[test]
    fn output_beyond_the_kept_amount_is_dropped_without_stalling() {
        let out = Run::new(
            "/bin/sh",
            &["-c", "head -c 1048576 /dev/zero >&2; exit 1"],
            LIMIT,
        )
        .discard_stdout()
        .keep_at_most(4096)
        .run()
        .unwrap();
        assert_eq!(out.code(), Some(1));
        assert_eq!(out.stderr.len(), 4096);
        assert_eq!(out.stdout, "");
    }

    #[test]
    fn missing_program_is_a_spawn_error_naming_it() {
        let e = Run::new("/nonexistent/portsentry-tool", &["a"], LIMIT)
            .run()
            .unwrap_err();
        assert!(
            matches!(&e, ProcessError::Spawn { command, .. } if command == "/nonexistent/portsentry-tool a"),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("cannot run `/nonexistent/portsentry-tool a`: ")
        );
    }
}
