//! Socket-level helpers over a plain descriptor, shared by the netlink sockets and the
//! AF_PACKET sensor ([`crate::packet`]): one typed `setsockopt`/`getsockopt`, the
//! timeouts and buffer sizes we set, and [`wait_readable`], the one poll wait.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// `setsockopt(fd, level, name, value)` with `value`'s size as the option length.
pub(crate) fn setsockopt<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size passed; the fd is borrowed, so open.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An `int` socket option.
fn getsockopt_int(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid storage of the length passed; the fd is borrowed, so open.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `SO_RCVTIMEO`: a blocking receive gives up after `d` with `EAGAIN`.
pub(crate) fn set_recv_timeout(fd: BorrowedFd<'_>, d: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
}

/// Best effort `SO_RCVBUF` (capped by `net.core.rmem_max`): a smaller buffer only makes
/// a loss likelier, which every caller detects.
pub(crate) fn set_recv_buffer(fd: BorrowedFd<'_>, bytes: usize) {
    let _ = setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &int(bytes));
}

/// Best effort `SO_RCVBUFFORCE` (root/CAP_NET_ADMIN, ignores `rmem_max`), else `SO_RCVBUF`.
pub(crate) fn force_recv_buffer(fd: BorrowedFd<'_>, bytes: usize) {
    if setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &int(bytes)).is_err() {
        set_recv_buffer(fd, bytes);
    }
}

/// Best effort `SO_SNDBUFFORCE`, else `SO_SNDBUF` (capped by `net.core.wmem_max`);
/// returns the size the kernel then reports (0 if it cannot be read).
pub(crate) fn force_send_buffer(fd: BorrowedFd<'_>, bytes: usize) -> usize {
    let want = int(bytes);
    if setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &want).is_err() {
        let _ = setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, &want);
    }
    getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF).map_or(0, |got| got.max(0) as usize)
}

fn int(bytes: usize) -> libc::c_int {
    libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX)
}

/// Waits up to `timeout` until `fd` is readable (`POLLIN`, or `POLLERR` for a pending
/// socket error such as `ENOBUFS`: both are work for the reader). `Ok(false)`: nothing
/// yet.
///
/// A signal (`EINTR`) is "nothing yet" too, not retried: every caller is a loop that
/// checks its own flags and deadline between waits, and a signal (SIGTERM, SIGHUP) is
/// exactly when it should look at them at once instead of sleeping out the timeout.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    wait_any(&[fd], timeout)
}

/// Waits up to `timeout` until `fd` has room to send (`POLLOUT`, or `POLLERR`: the
/// next send says what is wrong). `Ok(false)`: no room yet, or a signal came.
pub fn wait_writable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    poll_for(&[fd], libc::POLLOUT, timeout)
}

/// [`wait_readable`] for several descriptors at once: true when any of them is.
pub(crate) fn wait_any(fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<bool> {
    poll_for(fds, libc::POLLIN, timeout)
}

/// One poll(2) of `fds` for `events`, EINTR being "nothing yet".
fn poll_for(fds: &[BorrowedFd<'_>], events: libc::c_short, timeout: Duration) -> io::Result<bool> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        })
        .collect();
    // SAFETY: `pfds` holds `pfds.len()` valid pollfds.
    let rc = unsafe {
        libc::poll(
            pfds.as_mut_ptr(),
            pfds.len() as libc::nfds_t,
            poll_millis(timeout),
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(rc > 0)
}

/// Milliseconds for poll(2), rounded up so a short timeout does not become a busy loop.
fn poll_millis(d: Duration) -> libc::c_int {
    let ms = d.as_nanos().div_ceil(1_000_000);
    libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn poll_timeout_rounds_up() {
        assert_eq!(poll_millis(Duration::ZERO), 0);
        assert_eq!(poll_millis(Duration::from_micros(1)), 1);
        assert_eq!(poll_millis(Duration::from_millis(250)), 250);
        assert_eq!(poll_millis(Duration::from_secs(u64::MAX)), libc::c_int::MAX);
    }

    #[test]
    fn wait_readable_sees_a_queued_datagram() {
        let (a, b) = UnixDatagram::pair().unwrap();
        assert!(!wait_readable(b.as_fd(), Duration::from_millis(1)).unwrap());
        a.send(b"x").unwrap();
        assert!(wait_readable(b.as_fd(), Duration::from_secs(1)).unwrap());
    }
}
