//! The systemd journal's native protocol: one datagram per entry to
//! `/run/systemd/journal/socket`, made of `KEY=VALUE\n` fields; a value holding a
//! newline is sent as `KEY\n`, its length as a little-endian u64, the bytes and `\n`.
//! An entry too big for a datagram goes in a sealed memfd whose descriptor is sent
//! instead (SCM_RIGHTS), as systemd's own `sd_journal_send` does.
//!
//! Like syslog, it never blocks or fails the caller: the socket is non-blocking, and
//! an entry it cannot take is reported to the logger, which then writes the line the
//! way it would without a journal.
//!
//! `PORTSENTRY_JOURNAL_SOCKET` (test/advanced) names another socket; setting it also
//! turns the journal on without `$JOURNAL_STREAM`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// The journal's socket for native entries.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// Environment variable that names another socket (tests, containers).
pub const SOCKET_ENV: &str = "PORTSENTRY_JOURNAL_SOCKET";

/// The socket to log to, when the journal is to be used: `$PORTSENTRY_JOURNAL_SOCKET`,
/// or the standard socket when `$JOURNAL_STREAM` says systemd connected our stderr to
/// the journal (we run as a service).
pub fn socket_from_env() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(SOCKET_ENV) {
        return Some(PathBuf::from(p));
    }
    stderr_is_journal().then(|| PathBuf::from(JOURNAL_SOCKET))
}

/// `$JOURNAL_STREAM` is `DEVICE:INODE` of the stream systemd gave us; it is ours only
/// if stderr is still that stream (a child started from a service, e.g. a test run,
/// inherits the variable with other stdio), as systemd.exec(5) says to check.
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat on fd 2 into a zeroed stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    st.st_dev == dev && st.st_ino == ino
}

/// A connection to the journal's socket.
pub struct Journal {
    path: PathBuf,
    socket: Option<UnixDatagram>,
}

impl Journal {
    pub fn new(path: &Path) -> Self {
        Journal {
            path: path.to_path_buf(),
            socket: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Send one entry of `fields`; Err when the journal did not take it.
    pub fn send(&mut self, fields: &[(&str, &str)]) -> io::Result<()> {
        let entry = encode(fields);
        // Two tries: the cached socket may point at a journald that restarted.
        let mut last = io::Error::other("not sent");
        for _ in 0..2 {
            if self.socket.is_none() {
                let s = UnixDatagram::unbound()?;
                s.set_nonblocking(true)?;
                self.socket = Some(s);
            }
            let Some(s) = &self.socket else { break };
            match s.send_to(&entry, &self.path) {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    return send_memfd(s, &self.path, &entry);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                Err(e) => {
                    last = e;
                    self.socket = None;
                }
            }
        }
        Err(last)
    }
}

/// The native encoding of one entry.
pub fn encode(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    for (key, value) in fields {
        out.extend_from_slice(key.as_bytes());
        if value.contains('\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        } else {
            out.push(b'=');
            out.extend_from_slice(value.as_bytes());
        }
        out.push(b'\n');
    }
    out
}

/// Decode one native entry (both forms); None if it is malformed. For tests and
/// tools that stand in for the journal.
pub fn decode(mut data: &[u8]) -> Option<Vec<(String, String)>> {
    let mut fields = Vec::new();
    while !data.is_empty() {
        let nl = data.iter().position(|&b| b == b'\n')?;
        let line = &data[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            fields.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            ));
            data = &data[nl + 1..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &data[nl + 1..];
            let len = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?) as usize;
            let value = rest.get(8..8 + len)?;
            if rest.get(8 + len) != Some(&b'\n') {
                return None;
            }
            fields.push((key, String::from_utf8_lossy(value).into_owned()));
            data = &rest[8 + len + 1..];
        }
    }
    Some(fields)
}

/// An entry too big for one datagram: written to a sealed memfd, whose descriptor is
/// sent alone (an empty datagram with SCM_RIGHTS).
fn send_memfd(socket: &UnixDatagram, path: &Path, entry: &[u8]) -> io::Result<()> {
    // SAFETY: a NUL-terminated name and valid flags.
    let fd = unsafe {
        libc::memfd_create(
            c"portsentry-journal".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned here alone.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(memfd);
    io::Write::write_all(&mut file, entry)?;
    // SAFETY: fcntl on our own descriptor.
    if unsafe {
        libc::fcntl(
            file.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    send_fd(socket, path, file.as_raw_fd())
}

fn send_fd(socket: &UnixDatagram, path: &Path, fd: i32) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: zeroed sockaddr_un is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::other("journal socket path too long"));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: zeroed msghdr is valid; every pointer below outlives the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut addr).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control has room for one header with one descriptor (CMSG_SPACE).
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), fd);
    }
    // SAFETY: a valid socket and message.
    let rc = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_round_trip() {
        let fields = [("MESSAGE", "a\nb"), ("SRC_IP", "198.18.0.2"), ("E", "")];
        let data = encode(&fields);
        assert!(data.starts_with(b"MESSAGE\n\x03\0\0\0\0\0\0\0a\nb\nSRC_IP=198.18.0.2\n"));
        let back = decode(&data).unwrap();
        assert_eq!(back[0], ("MESSAGE".into(), "a\nb".into()));
        assert_eq!(back[1], ("SRC_IP".into(), "198.18.0.2".into()));
        assert_eq!(back[2], ("E".into(), "".into()));
        assert!(decode(b"MESSAGE\n\xff\0\0\0\0\0\0\0ab\n").is_none());
    }

    #[test]
    fn entries_reach_a_stand_in_socket_and_big_ones_go_by_memfd() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut j = Journal::new(&path);
        j.send(&[("MESSAGE", "hello"), ("PRIORITY", "5")]).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = server.recv(&mut buf).unwrap();
        let f = decode(&buf[..n]).unwrap();
        assert_eq!(f[0], ("MESSAGE".into(), "hello".into()));
        // Bigger than the socket's largest datagram: EMSGSIZE, then the memfd.
        let big = "x".repeat(300_000);
        j.send(&[("MESSAGE", &big)]).unwrap();
        let (n, fd) = recv_with_fd(&server, &mut buf);
        assert_eq!(n, 0, "the memfd comes in an empty datagram");
        let mut file = std::fs::File::from(fd.expect("a descriptor with the datagram"));
        // journald maps the file from offset 0; the shared offset is past our write.
        io::Seek::seek(&mut file, io::SeekFrom::Start(0)).unwrap();
        let mut data = Vec::new();
        io::Read::read_to_end(&mut file, &mut data).unwrap();
        let f = decode(&data).unwrap();
        assert_eq!(f[0].0, "MESSAGE");
        assert_eq!(f[0].1.len(), 300_000);
        // Sealed, as journald requires: it cannot be written any more.
        // SAFETY: fcntl on a descriptor we own.
        let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
        assert!(seals & libc::F_SEAL_WRITE != 0, "seals {seals:#x}");
    }

    /// One datagram and the descriptor it carries (SCM_RIGHTS), as journald reads them.
    fn recv_with_fd(socket: &UnixDatagram, buf: &mut [u8]) -> (usize, Option<OwnedFd>) {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
        let mut control = vec![0u8; space];
        // SAFETY: zeroed msghdr is valid; the buffers outlive recvmsg.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: a valid socket and message.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
        assert!(n >= 0, "{}", io::Error::last_os_error());
        // SAFETY: the control buffer was filled by recvmsg.
        let fd = unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (!cmsg.is_null() && (*cmsg).cmsg_type == libc::SCM_RIGHTS).then(|| {
                OwnedFd::from_raw_fd(std::ptr::read_unaligned(
                    libc::CMSG_DATA(cmsg).cast::<i32>(),
                ))
            })
        };
        (n as usize, fd)
    }
}
