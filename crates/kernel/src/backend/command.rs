//! Running `ipset`, `iptables` and `ip6tables`: an argument list (no shell), `LC_ALL=C`
//! so that messages can be recognised, stdin fed and stdout/stderr drained on threads of
//! their own (a large `ipset list` cannot fill the pipe and stall the tool), and a time
//! limit after which the tool is killed. The running itself is [`crate::process`]; this
//! module adds the locale, the limit and the errors the fallback backends report.

use std::io;
use std::time::Duration;

use crate::process::{Finished, ProcessError, Run};

pub use crate::process::COMMAND_TIME_LIMIT;

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

/// `finished` as a [`CommandError::Failed`].
pub(super) fn failure(finished: Finished) -> CommandError {
    CommandError::Failed {
        status: finished.status_text(),
        stderr: finished.stderr.trim().to_string(),
        command: finished.command,
    }
}

/// stdout when the tool exited 0, else the failure.
pub(super) fn ok(finished: Finished) -> Result<String, CommandError> {
    if finished.success() {
        Ok(finished.stdout)
    } else {
        Err(failure(finished))
    }
}

/// Runs `program args` from the calling thread (so in its network namespace), feeding
/// `stdin` if given. `Err` only when it could not be run or timed out; a non-zero exit
/// is an `Ok` [`Finished`] for the caller to judge.
pub(super) fn run(
    program: &str,
    args: &[&str],
    stdin: Option<Vec<u8>>,
) -> Result<Finished, CommandError> {
    let mut run = Run::new(program, args, COMMAND_TIME_LIMIT).env("LC_ALL", "C");
    if let Some(bytes) = &stdin {
        run = run.stdin(bytes);
    }
    run.run().map_err(|e| match e {
        ProcessError::Spawn { command, source } | ProcessError::Io { command, source } => {
            CommandError::Io { command, source }
        }
        ProcessError::TimedOut { command, limit } => CommandError::TimedOut { command, limit },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_exit_status_are_reported() {
        let out = run("sh", &["-c", "echo out; echo err >&2; exit 3"], None).unwrap();
        assert_eq!(out.code(), Some(3));
        assert_eq!(out.stdout, "out\n");
        let e = failure(out).to_string();
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
        assert_eq!(ok(out).unwrap().len(), 3_000_000);
    }

    #[test]
    fn missing_program_is_an_io_error_naming_it() {
        match run("/nonexistent/portsentry-tool", &["a"], None) {
            Err(CommandError::Io { command, .. }) => {
                assert_eq!(command, "/nonexistent/portsentry-tool a")
            }
            other => panic!("{:?}", other.map(|o| o.code())),
        }
    }
}
