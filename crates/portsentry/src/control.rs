//! The control socket: a root-only unix stream socket on which the CLI asks the running
//! daemon to ban, unban, or report its status. One request line per connection, one
//! reply, then the connection closes.
//!
//! Protocol (text, one line each way):
//! - `ban <addr|net> <seconds|permanent> [force]` → `ok: ...` | `error: ...` (`force`:
//!   ban even a protected address; see `bans::guard`)
//! - `unban <addr|net>`
//! - `unban-origin <node>`: lift and revoke every ban that fleet node injected
//! - `status`
//!
//! Only root may talk to it: the socket lives in a 0700 directory, is mode 0600, and the
//! peer's uid is checked with SO_PEERCRED. Requests are handled by the reporter thread,
//! which owns the bans, so they never race with detection's own bans.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use ipnet::IpNet;

/// Longest request line accepted.
const MAX_REQUEST: u64 = 4096;
/// How long a client may take to send its line, and the daemon to answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Ban a host or network; `None` = permanent. `force`: even one in the protected
    /// set.
    Ban {
        net: IpNet,
        duration: Option<Duration>,
        force: bool,
    },
    Unban {
        net: IpNet,
    },
    /// Lift every ban a fleet node injected, on every node (`unban --origin NODE`).
    UnbanOrigin {
        node: String,
    },
    Status,
}

impl Request {
    pub fn parse(line: &str) -> Result<Request, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let net = |w: &str| -> Result<IpNet, String> {
            w.parse::<IpNet>()
                .or_else(|_| w.parse::<std::net::IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| format!("`{w}` is not an address or network"))
        };
        let (words, force) = match words.as_slice() {
            ["ban", _, _, "force"] => (&words[..3], true),
            _ => (&words[..], false),
        };
        match words {
            ["ban", target, "permanent"] => Ok(Request::Ban {
                net: net(target)?,
                duration: None,
                force,
            }),
            ["ban", target, secs] => {
                let secs: u64 = secs
                    .parse()
                    .map_err(|_| format!("`{secs}` is not a number of seconds"))?;
                if secs == 0 {
                    return Err("a ban of 0 seconds bans nothing".into());
                }
                Ok(Request::Ban {
                    net: net(target)?,
                    duration: Some(Duration::from_secs(secs)),
                    force,
                })
            }
            ["unban", target] => Ok(Request::Unban { net: net(target)? }),
            ["unban-origin", node] if crate::config::valid_node_name(node) => {
                Ok(Request::UnbanOrigin {
                    node: node.to_string(),
                })
            }
            ["unban-origin", node] => Err(format!("`{node}` is not a fleet node name")),
            ["status"] => Ok(Request::Status),
            _ => Err(format!("unknown request `{}`", line.trim())),
        }
    }

    /// The line the client sends.
    pub fn to_line(&self) -> String {
        match self {
            Request::Ban {
                net,
                duration,
                force,
            } => format!(
                "ban {net} {}{}\n",
                duration.map_or("permanent".to_string(), |d| d.as_secs().to_string()),
                if *force { " force" } else { "" }
            ),
            Request::Unban { net } => format!("unban {net}\n"),
            Request::UnbanOrigin { node } => format!("unban-origin {node}\n"),
            Request::Status => "status\n".into(),
        }
    }
}

/// A request on its way to the reporter thread, with where to send the reply.
pub struct Pending {
    pub request: Request,
    pub reply: mpsc::Sender<String>,
}

/// Bind the socket (replacing a stale one) and serve it on a thread; each request is
/// forwarded through `forward` and its reply written back.
pub fn serve(
    path: &Path,
    forward: impl Fn(Pending) -> bool + Send + 'static,
) -> io::Result<PathBuf> {
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
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = handle(stream, &forward);
            }
        })?;
    Ok(path.to_path_buf())
}

fn handle(mut stream: UnixStream, forward: &impl Fn(Pending) -> bool) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    if peer_uid(&stream)? != 0 {
        return writeln!(stream, "error: only root may control portsentry");
    }
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
    let reply = match Request::parse(&line) {
        Err(e) => format!("error: {e}"),
        Ok(request) => {
            let (tx, rx) = mpsc::channel();
            if forward(Pending { request, reply: tx }) {
                rx.recv_timeout(IO_TIMEOUT)
                    .unwrap_or_else(|_| "error: the daemon did not answer in time".into())
            } else {
                "error: the daemon is shutting down".into()
            }
        }
    };
    writeln!(stream, "{}", reply.trim_end())
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

/// Client side: send one request, return the daemon's reply line.
pub fn ask(path: &Path, request: &Request) -> io::Result<String> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot reach the daemon at {}: {e} (is portsentry running?)",
                path.display()
            ),
        )
    })?;
    stream.set_read_timeout(Some(IO_TIMEOUT * 2))?;
    stream.write_all(request.to_line().as_bytes())?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply)?;
    Ok(reply.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_round_trip() {
        for line in [
            "ban 198.18.0.2 3600",
            "ban 198.18.0.0/24 permanent",
            "ban fd00:5e17::2 60",
            "ban 198.18.0.1 60 force",
            "ban 198.18.0.1 permanent force",
            "unban 198.18.0.2",
            "status",
        ] {
            let r = Request::parse(line).unwrap();
            assert_eq!(Request::parse(&r.to_line()).unwrap(), r, "{line}");
        }
        assert_eq!(
            Request::parse("ban 198.18.0.77/24 permanent").unwrap(),
            Request::Ban {
                net: "198.18.0.0/24".parse().unwrap(),
                duration: None,
                force: false,
            }
        );
        assert!(Request::parse("ban 198.18.0.2 60 please").is_err());
        assert!(Request::parse("ban 198.18.0.2 0").is_err());
        assert!(Request::parse("ban nonsense 10").is_err());
        assert!(Request::parse("reboot").is_err());
    }

    #[test]
    fn a_request_reaches_the_handler_and_the_reply_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/ps.sock");
        serve(&path, |p: Pending| {
            let _ = p.reply.send(format!("ok: got {:?}", p.request));
            true
        })
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let reply = ask(&path, &Request::Status).unwrap();
        if root {
            assert_eq!(reply, "ok: got Status");
        } else {
            assert_eq!(reply, "error: only root may control portsentry");
        }
        // A second daemon cannot take over a live socket.
        assert!(serve(&path, |_| true).is_err());
    }
}
