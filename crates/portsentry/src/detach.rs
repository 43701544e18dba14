//! Going into the background the way init scripts need it: the process the script
//! started stays until the daemon has armed its traps, or has failed, and then exits 0
//! or with the daemon's exit code and its reason on the terminal. `daemon(3)` returns
//! in the parent at once, so a daemon that failed a second later (a busy NFLOG group, a
//! missing kernel module) left `start-stop-daemon` reporting success and nothing
//! protecting the host.
//!
//! The child reports through a pipe: `R` when ready, or `F<code> <reason>` when it
//! gives up; end of file without either means it died. The parent waits at most
//! [`READY_WAIT`]; past it, it says so and exits 0 (the daemon is still starting, and
//! its own log says how that ends).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the starting process waits for the daemon to be armed. Start with a
/// million bans in the kernel takes a few seconds; 90 s is systemd's own start limit.
pub const READY_WAIT: Duration = Duration::from_secs(90);

/// The daemon's end of the pipe, until it has reported.
static REPORT: Mutex<Option<std::fs::File>> = Mutex::new(None);

/// Forks. In the parent this never returns: it waits for the child's report and exits
/// with its outcome. In the child it returns after `setsid`, `chdir /` and stdin,
/// stdout and stderr on /dev/null, with the report pipe kept for [`ready`] and
/// [`failed`]. Call it before any thread exists (fork keeps only the calling thread).
pub fn detach() -> io::Result<()> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors on success; checked.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and ours.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: single-threaded here (documented precondition).
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(read_end);
            // SAFETY: setsid has no preconditions; a new session drops the terminal.
            unsafe { libc::setsid() };
            let _ = std::env::set_current_dir("/");
            quiet_stdio()?;
            *REPORT.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(std::fs::File::from(write_end));
            Ok(())
        }
        _child => {
            drop(write_end);
            let (code, message) = wait_for_report(std::fs::File::from(read_end));
            if let Some(m) = message {
                eprintln!("{m}");
            }
            std::process::exit(code);
        }
    }
}

/// The daemon is armed: the starting process exits 0.
pub fn ready() {
    report(b"R");
}

/// The daemon gives up with `code`: the starting process prints `reason` and exits
/// with the same code.
pub fn failed(code: u8, reason: &str) {
    report(format!("F{code} {reason}").as_bytes());
}

fn report(bytes: &[u8]) {
    if let Some(mut pipe) = REPORT.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let _ = pipe.write_all(bytes);
    }
}

/// What the parent makes of the child's report: exit code and what to print.
fn wait_for_report(mut pipe: std::fs::File) -> (i32, Option<String>) {
    let deadline = Instant::now() + READY_WAIT;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (
                0,
                Some(format!(
                    "portsentry: still starting after {} s; its log says how the start ends",
                    READY_WAIT.as_secs()
                )),
            );
        }
        let mut pfd = libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(1000) as libc::c_int;
        // SAFETY: one live pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n <= 0 {
            continue;
        }
        match pipe.read(&mut buf) {
            Ok(0) => return outcome(&got),
            Ok(k) if got.len() < 64 * 1024 => got.extend_from_slice(&buf[..k]),
            Ok(_) => return outcome(&got),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return outcome(&got),
        }
    }
}

fn outcome(report: &[u8]) -> (i32, Option<String>) {
    let text = String::from_utf8_lossy(report);
    if text.starts_with('R') {
        return (0, None);
    }
    if let Some(rest) = text.strip_prefix('F') {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code = code.parse::<i32>().unwrap_or(1);
        return (code, Some(format!("portsentry: {reason}")));
    }
    (
        4,
        Some("portsentry: the daemon exited before it was ready (see its log)".into()),
    )
}

fn quiet_stdio() -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors; `null` stays open meanwhile.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_reads_ready_failure_and_death() {
        assert_eq!(outcome(b"R"), (0, None));
        assert_eq!(
            outcome(b"F4 cannot read NFLOG group 5817: already bound"),
            (
                4,
                Some("portsentry: cannot read NFLOG group 5817: already bound".into())
            )
        );
        let (code, msg) = outcome(b"");
        assert_eq!(code, 4);
        assert!(msg.unwrap().contains("exited before it was ready"));
    }

    #[test]
    fn a_report_through_a_real_pipe_reaches_the_parent() {
        let mut fds = [0; 2];
        // SAFETY: as in detach().
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: new descriptors, ours.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut w = std::fs::File::from(w);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            w.write_all(b"F3 configuration error").unwrap();
        });
        let got = wait_for_report(std::fs::File::from(r));
        writer.join().unwrap();
        assert_eq!(got, (3, Some("portsentry: configuration error".into())));
    }
}
