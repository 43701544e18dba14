//! Running `ipset`, `iptables` and `ip6tables`: an argument list (no shell), `LC_ALL=C`
//! so that messages can be recognised, stdin fed and stdout/stderr drained on threads of
//! their own (a large `ipset list` cannot fill the pipe and stall the tool), and a time
//! limit after which the tool is killed.

use std::io::{self, Read, Write};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use wait_timeout::ChildExt;

/// How long one tool run may take before it is killed. `iptables` waits up to
/// [`XTABLES_LOCK_WAIT`] seconds for the xtables lock, well within this.
pub const COMMAND_TIME_LIMIT: Duration = Duration::from_secs(30);

/// Seconds `iptables -w` waits for another program's xtables lock (iptables-legacy; the
/// nft variant accepts and ignores it).
pub(super) const XTABLES_LOCK_WAIT: &str = "10";

/// A tool run that failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run `{command}`: {source}")]
    Io {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        /// `exit status N` or `killed by signal N`.
        status: String,
        /// What the tool wrote to stderr, trimmed.
        stderr: String,
    },
    #[error("`{command}` did not finish within {} s and was killed", limit.as_secs())]
    TimedOut { command: String, limit: Duration },
    #[error("`{command}` wrote output that cannot be read: {detail}")]
    BadOutput { command: String, detail: String },
}

/// What a finished tool run gave.
pub(super) struct Output {
    pub command: String,
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The run as a [`CommandError::Failed`].
    pub fn failure(self) -> CommandError {
        CommandError::Failed {
            command: self.command,
            status: match self.code {
                Some(code) => format!("exit status {code}"),
                None => "killed by a signal".to_string(),
            },
            stderr: self.stderr.trim().to_string(),
        }
    }

    /// stdout when the tool exited 0, else the failure.
    pub fn ok(self) -> Result<String, CommandError> {
        if self.success() {
            Ok(self.stdout)
        } else {
            Err(self.failure())
        }
    }
}

/// The command line for messages: the arguments are fixed words and formatted
/// addresses, so joining them with spaces is unambiguous.
pub(super) fn display(program: &str, args: &[&str]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Runs `program args` from the calling thread (so in its network namespace), feeding
/// `stdin` if given. `Err` only when it could not be run or timed out; a non-zero exit
/// is an `Ok` [`Output`] for the caller to judge.
pub(super) fn run(
    program: &str,
    args: &[&str],
    stdin: Option<Vec<u8>>,
) -> Result<Output, CommandError> {
    let command = display(program, args);
    let io_err = |source| CommandError::Io {
        command: command.clone(),
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err)?;

    let writer = match (stdin, child.stdin.take()) {
        (Some(bytes), Some(mut pipe)) => Some(thread::spawn(move || pipe.write_all(&bytes))),
        _ => None,
    };
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);

    let status = match child.wait_timeout(COMMAND_TIME_LIMIT) {
        Ok(Some(status)) => status,
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            // The reader threads end when the pipes close; they are not waited for.
            return Err(CommandError::TimedOut {
                command,
                limit: COMMAND_TIME_LIMIT,
            });
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io_err(e));
        }
    };
    let collect = |h: Option<thread::JoinHandle<io::Result<Vec<u8>>>>| -> io::Result<String> {
        let bytes = match h {
            Some(h) => h
                .join()
                .map_err(|_| io::Error::other("pipe reader panicked"))??,
            None => Vec::new(),
        };
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    let stdout = collect(stdout).map_err(io_err)?;
    let stderr = collect(stderr).map_err(io_err)?;
    if let Some(w) = writer {
        let written = w
            .join()
            .map_err(|_| io_err(io::Error::other("stdin writer panicked")))?;
        // A tool that exits early on bad input closes stdin (EPIPE): its exit status
        // and stderr say why, so only a successful run with unwritten input is odd.
        if let Err(e) = written
            && status.success()
        {
            return Err(io_err(e));
        }
    }
    Ok(Output {
        command,
        code: status.code(),
        stdout,
        stderr,
    })
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<io::Result<Vec<u8>>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        pipe.read_to_end(&mut buf)?;
        Ok(buf)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_exit_status_are_reported() {
        let out = run("sh", &["-c", "echo out; echo err >&2; exit 3"], None).unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout, "out\n");
        let e = out.failure().to_string();
        assert_eq!(
            e,
            "`sh -c echo out; echo err >&2; exit 3` failed (exit status 3): err"
        );
    }

    #[test]
    fn stdin_is_fed_and_large_output_does_not_stall() {
        let input = "x".repeat(1 << 20);
        let out = run("cat", &[], Some(input.clone().into_bytes())).unwrap();
        assert!(out.success());
        assert_eq!(out.stdout.len(), input.len());
        let out = run("sh", &["-c", "head -c 3000000 /dev/zero"], None).unwrap();
        assert_eq!(out.ok().unwrap().len(), 3_000_000);
    }

    #[test]
    fn missing_program_is_an_io_error_naming_it() {
        match run("/nonexistent/portsentry-tool", &["a"], None) {
            Err(CommandError::Io { command, .. }) => {
                assert_eq!(command, "/nonexistent/portsentry-tool a")
            }
            other => panic!("{:?}", other.map(|o| o.code)),
        }
    }
}
