//! The control socket: a root-only unix stream socket on which the CLI asks the running
//! daemon to ban, unban, explain an address or report its status. One request line per
//! connection, one reply, then the connection closes ([`protocol`]).
//!
//! - [`server`]: many clients at once (a poll loop and a small worker pool), short
//!   per-client timeouts, a bound on connections;
//! - [`answer`]: one request routed to the threads that own what it asks about;
//! - [`views`]: the JSON answers, with their stable field names;
//! - [`ask`]: the client side, with errors that say what happened.
//!
//! Only root may talk to it: the socket lives in a 0700 directory, is mode 0600, and the
//! peer's uid is checked with SO_PEERCRED. Requests about bans are handled by the
//! reporter thread, which owns the bans, so they never race with detection's own bans;
//! questions about the engine's state go to the capture thread, which answers on its
//! next turn and is never made to wait.

pub mod answer;
pub mod ask;
pub mod protocol;
pub mod server;
pub mod views;

use std::io;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

pub use ask::{AskError, ask};
pub use protocol::Request;
use views::{EngineExplainView, EngineStatsView, ProtectionView};

/// A request on its way to the reporter thread, with where to send the reply.
pub struct Pending {
    pub request: Request,
    pub reply: mpsc::Sender<String>,
}

/// A question for the capture thread (the engine's owner), answered on its next turn.
pub enum CaptureQuery {
    Stats {
        reply: mpsc::Sender<EngineStatsView>,
    },
    Source {
        ip: IpAddr,
        reply: mpsc::Sender<EngineExplainView>,
    },
}

/// Where the control threads send what they are asked. Each returns false when the
/// thread it reaches is gone or cannot take more; it never waits.
pub struct Routes {
    pub reporter: Box<dyn Fn(Pending) -> bool + Send + Sync>,
    pub capture: Box<dyn Fn(CaptureQuery) -> bool + Send + Sync>,
    /// What protects an address (read on a control thread: it may read the kernel).
    pub protection: Box<dyn Fn(IpAddr) -> Result<Vec<ProtectionView>, String> + Send + Sync>,
    /// Whether the kernel's known-peer set holds an address (`None`: not tracked).
    pub known_peer: Box<dyn Fn(IpAddr) -> Option<bool> + Send + Sync>,
    /// Its latest lines in the history file.
    pub history: Box<dyn Fn(IpAddr) -> Result<Vec<String>, String> + Send + Sync>,
}

impl Routes {
    /// Only a reporter: the engine and the protected set are not asked (tests).
    pub fn reporter_only(reporter: impl Fn(Pending) -> bool + Send + Sync + 'static) -> Routes {
        Routes {
            reporter: Box::new(reporter),
            capture: Box::new(|_| false),
            protection: Box::new(|_| Ok(Vec::new())),
            known_peer: Box::new(|_| None),
            history: Box::new(|_| Ok(Vec::new())),
        }
    }
}

/// Bind the socket (replacing a stale one) and serve it ([`server`]).
pub fn serve(path: &Path, routes: Routes) -> io::Result<PathBuf> {
    serve_with(path, routes, server::Limits::default())
}

/// [`serve`] with other bounds (tests).
pub fn serve_with(path: &Path, routes: Routes, limits: server::Limits) -> io::Result<PathBuf> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        // Only a directory we create is made private; an existing one (say /run, or a
        // directory of the admin's choosing) keeps its mode. The socket itself is 0600
        // and the peer's uid is checked, whatever the directory allows.
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    match UnixStream::connect(path) {
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{} is in use: is another portsentry running?",
                    path.display()
                ),
            ));
        }
        Err(_) => {
            // A stale socket of an earlier run; never remove anything that is not a socket.
            use std::os::unix::fs::FileTypeExt;
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} exists and is not a socket", path.display()),
                    ));
                }
                Err(_) => {}
            }
        }
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    server::spawn(listener, routes, limits)?;
    Ok(path.to_path_buf())
}

fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: valid ucred storage of the length passed.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

#[cfg(test)]
mod tests;
