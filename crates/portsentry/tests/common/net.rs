//! Small services and clients that run as threads inside a namespace (setns), so
//! the tests need no extra programs for them.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Netns;

/// A TCP service listening on `[::]:port` (v4 and v6) in a namespace. Each
/// connection gets the banner line "pst-ok\n" and is closed. Stopped on drop.
pub struct TcpServer {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
    pub port: u16,
}

impl TcpServer {
    pub fn start(ns: &Netns, port: u16) -> TcpServer {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let (s, a) = (stop.clone(), accepted.clone());
        let handle = ns.thread(move || {
            let l = match TcpListener::bind(("::", port)) {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            l.set_nonblocking(true).expect("nonblocking listener");
            let _ = tx.send(Ok(()));
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_write_timeout(Some(Duration::from_secs(1)));
                        let _ = c.write_all(b"pst-ok\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            other => panic!("TCP server on port {port} in {}: {other:?}", ns.name()),
        }
        TcpServer {
            stop,
            accepted,
            handle: Some(handle),
            port,
        }
    }

    /// Number of connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A UDP echo service on `[::]:port` in a namespace. Stopped on drop.
pub struct UdpServer {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
    pub port: u16,
}

impl UdpServer {
    pub fn start(ns: &Netns, port: u16) -> UdpServer {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let (s, r) = (stop.clone(), received.clone());
        let handle = ns.thread(move || {
            let sock = match UdpSocket::bind(("::", port)) {
                Ok(x) => x,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("read timeout");
            let _ = tx.send(Ok(()));
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::SeqCst) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    r.fetch_add(1, Ordering::SeqCst);
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            other => panic!("UDP server on port {port} in {}: {other:?}", ns.name()),
        }
        UdpServer {
            stop,
            received,
            handle: Some(handle),
            port,
        }
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// True if a TCP connection from namespace `from` to `addr:port` is established
/// within `timeout` and the server's banner (if it is a `TcpServer`) can be read.
pub fn can_connect(from: &Netns, addr: IpAddr, port: u16, timeout: Duration) -> bool {
    from.run_in(move || TcpStream::connect_timeout(&SocketAddr::new(addr, port), timeout).is_ok())
}

/// A TCP port that nothing listens on and no mode of the harness conf watches.
pub const CLOSED_PORT: u16 = 9998;

/// Whether `from` reaches `addr` at all, without exchanging data with it: a SYN to
/// [`CLOSED_PORT`] is answered with a RST. Use it before a scan instead of a
/// connection to a service: a client that got data from a service is a known peer of
/// the defender, never banned on unverified probes for a day (issue 7).
pub fn can_reach(from: &Netns, addr: IpAddr, timeout: Duration) -> bool {
    from.run_in(move || {
        matches!(
            TcpStream::connect_timeout(&SocketAddr::new(addr, CLOSED_PORT), timeout),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
    })
}

/// Connects `count` times (sequentially) from `from` to `addr:port`, reading the
/// banner each time; returns how many connections succeeded. Bounded by
/// `count` × `timeout`.
pub fn connect_many(from: &Netns, addr: IpAddr, port: u16, count: u32, timeout: Duration) -> u32 {
    from.run_in(move || {
        let mut ok = 0;
        for _ in 0..count {
            if let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::new(addr, port), timeout) {
                let _ = s.set_read_timeout(Some(timeout));
                let mut buf = [0u8; 16];
                if s.read(&mut buf).is_ok_and(|n| n > 0) {
                    ok += 1;
                }
            }
        }
        ok
    })
}

/// Sends one UDP datagram from `from` to `addr:port` and waits for a reply.
pub fn udp_roundtrip(from: &Netns, addr: IpAddr, port: u16, timeout: Duration) -> bool {
    from.run_in(move || {
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0".parse().unwrap()
        } else {
            "0.0.0.0:0".parse().unwrap()
        };
        let Ok(s) = UdpSocket::bind(bind) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(timeout));
        if s.send_to(b"ping", SocketAddr::new(addr, port)).is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        s.recv_from(&mut buf).is_ok()
    })
}
