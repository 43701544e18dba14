//! The client side of the control socket: send one request, read the one reply line,
//! and say what went wrong in words an administrator can act on (never a bare
//! "Resource temporarily unavailable (os error 11)").

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::protocol::Request;
use super::server::ANSWER_TIMEOUT;

/// How long the client waits for the reply: longer than the daemon waits for its
/// reporter thread, so the daemon's own, more precise, error line arrives first.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(ANSWER_TIMEOUT.as_secs() + 1);

/// Why a request got no reply.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("no daemon is listening on {} (is portsentry running?)", path.display())]
    NotRunning { path: PathBuf },
    #[error("only root may control portsentry ({}: permission denied)", path.display())]
    NotRoot { path: PathBuf },
    #[error(
        "the daemon's control socket {} has too many clients waiting; try again",
        path.display()
    )]
    Busy { path: PathBuf },
    #[error("the daemon did not answer within {} s", CLIENT_TIMEOUT.as_secs())]
    Timeout,
    #[error("the daemon closed the connection without answering")]
    NoAnswer,
    #[error("cannot talk to the daemon at {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl AskError {
    fn of_connect(path: &Path, e: io::Error) -> AskError {
        let path = path.to_path_buf();
        match e.raw_os_error() {
            Some(libc::ENOENT | libc::ECONNREFUSED | libc::ENOTDIR) => {
                AskError::NotRunning { path }
            }
            Some(libc::EACCES | libc::EPERM) => AskError::NotRoot { path },
            Some(libc::EAGAIN) => AskError::Busy { path },
            _ => AskError::Io { path, source: e },
        }
    }

    fn of_exchange(path: &Path, e: io::Error) -> AskError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => AskError::Timeout,
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => AskError::NoAnswer,
            _ => AskError::Io {
                path: path.to_path_buf(),
                source: e,
            },
        }
    }
}

/// Send one request, return the daemon's reply line.
pub fn ask(path: &Path, request: &Request) -> Result<String, AskError> {
    let mut stream = UnixStream::connect(path).map_err(|e| AskError::of_connect(path, e))?;
    let exchange = |e| AskError::of_exchange(path, e);
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .map_err(exchange)?;
    stream
        .set_write_timeout(Some(CLIENT_TIMEOUT))
        .map_err(exchange)?;
    stream
        .write_all(request.to_line().as_bytes())
        .map_err(exchange)?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(exchange)?;
    if reply.is_empty() {
        return Err(AskError::NoAnswer);
    }
    Ok(reply.trim_end().to_string())
}
