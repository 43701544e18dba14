//! Serving the control socket to many clients at once, without an async runtime.
//!
//! One thread polls the listening socket and every connection that has not sent its
//! request line yet (non-blocking, at most [`MAX_CLIENTS`]); a connection that sends
//! nothing within [`LINE_TIMEOUT`] is told so and closed, without delaying anyone else.
//! A complete line goes to a small fixed pool of [`WORKERS`] threads, which wait for
//! the daemon's answer (at most [`ANSWER_TIMEOUT`]) and write it back. So an idle
//! client costs one slot of the poll set and nothing more.
//!
//! When every slot is taken, the oldest connection makes room for the new one if it
//! has been silent for [`EVICT_AFTER`] (a client that means to ask sends its line at
//! once), so a pile of idle connections cannot lock out `portsentry status`; if even
//! the oldest is younger, the new client is refused with one error line at once. A
//! non-root client, or one whose line arrives while every worker is busy and the work
//! queue is full, gets one error line at once too.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::answer;
use super::protocol::MAX_REQUEST;
use super::{Routes, peer_uid};
use crate::clock;

/// Connections held at once while they send their request line. Every client is root
/// (the socket is 0600 and the peer's uid is checked), so this bounds a broken script
/// or monitor, not an attacker; 256 descriptors are well within the daemon's limit.
pub const MAX_CLIENTS: usize = 256;
/// How long a client may take to send its request line after connecting.
pub const LINE_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long the oldest connection must have been silent to be closed for a new one
/// when every slot is taken.
pub const EVICT_AFTER: Duration = Duration::from_millis(250);
/// Threads answering complete requests; each waits at most [`ANSWER_TIMEOUT`].
pub const WORKERS: usize = 4;
/// Complete requests waiting for a worker; beyond it the client is told to retry.
const WORK_QUEUE: usize = 64;
/// How long a worker waits for the reporter thread to carry out a request.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a reply may take to write (the client reads one line).
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Connections accepted per poll turn, so reading the others is never starved.
const ACCEPTS_PER_TURN: usize = 64;

/// The bounds of the poll loop (the constants above; tests use small ones).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_clients: usize,
    pub line_timeout: Duration,
    pub evict_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: MAX_CLIENTS,
            line_timeout: LINE_TIMEOUT,
            evict_after: EVICT_AFTER,
        }
    }
}

/// One connection still sending its request line.
struct Client {
    stream: UnixStream,
    line: Vec<u8>,
    accepted: Instant,
    deadline: Instant,
}

type Job = (UnixStream, String);

/// Serve `listener` on a poll thread and [`WORKERS`] worker threads.
pub fn spawn(listener: UnixListener, routes: Routes, limits: Limits) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let routes = Arc::new(routes);
    let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job>(WORK_QUEUE);
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    for n in 0..WORKERS {
        let (routes, jobs) = (Arc::clone(&routes), Arc::clone(&jobs_rx));
        std::thread::Builder::new()
            .name(format!("control-{n}"))
            .spawn(move || work(&routes, &jobs))?;
    }
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || poll_loop(&listener, &jobs_tx, limits))?;
    Ok(())
}

fn work(routes: &Routes, jobs: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, never while answering.
        let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok((mut stream, line)) = job else { return };
        let reply = answer::answer(routes, &line);
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let _ = writeln!(stream, "{}", reply.trim_end());
    }
}

/// A refused connection kept open a moment after its error line: closing a unix
/// socket whose peer's request is still unread resets it (ECONNRESET), and the client
/// would lose the line that says why. It is closed when the client hangs up, or after
/// [`LINGER`].
struct Lingering {
    stream: UnixStream,
    until: Instant,
}

/// How long a refused connection waits for its client to hang up.
const LINGER: Duration = Duration::from_millis(500);
/// Refused connections lingering at once; beyond, they are closed at once.
const LINGER_MAX: usize = 64;

/// Read and drop what the client sent; false when it hung up (or failed).
fn drain(stream: &mut UnixStream) -> bool {
    let mut buf = [0u8; 1024];
    for _ in 0..16 {
        match stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// One best-effort error line to a client we are done with (its send buffer is empty,
/// so a short line never blocks), then the end of our side; it lingers (above).
fn refuse(closing: &mut VecDeque<Lingering>, mut stream: UnixStream, message: &str, now: Instant) {
    let _ = stream.set_nonblocking(true);
    let _ = writeln!(stream, "error: {message}");
    let _ = stream.shutdown(std::net::Shutdown::Write);
    if drain(&mut stream) && closing.len() < LINGER_MAX {
        closing.push_back(Lingering {
            stream,
            until: now + LINGER,
        });
    }
}

fn poll_loop(listener: &UnixListener, jobs: &mpsc::SyncSender<Job>, limits: Limits) {
    // In the order accepted: the front is the oldest.
    let mut clients: VecDeque<Client> = VecDeque::new();
    let mut closing: VecDeque<Lingering> = VecDeque::new();
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(limits.max_clients + LINGER_MAX + 1);
    loop {
        let now = clock::instant();
        let wait = clients
            .iter()
            .map(|c| c.deadline)
            .chain(closing.iter().map(|l| l.until))
            .map(|t| t.saturating_duration_since(now))
            .min()
            .map_or(-1, |d| d.as_millis().min(i32::MAX as u128) as i32 + 1);
        fds.clear();
        fds.push(pollfd(listener.as_raw_fd()));
        fds.extend(clients.iter().map(|c| pollfd(c.stream.as_raw_fd())));
        fds.extend(closing.iter().map(|l| pollfd(l.stream.as_raw_fd())));
        // SAFETY: `fds` is a valid, initialised array of `fds.len()` pollfd structs.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                // Nothing sensible to do but wait a little and try again.
                std::thread::sleep(Duration::from_millis(50));
            }
            continue;
        }
        let now = clock::instant();
        // Lingering first (their indices follow the clients'), then clients (their
        // indices match `fds[1..]`), then new connections.
        let lingering = &fds[1 + clients.len()..];
        let mut still = VecDeque::with_capacity(closing.len());
        for (mut l, fd) in closing.drain(..).zip(lingering) {
            if (fd.revents == 0 || drain(&mut l.stream)) && now < l.until {
                still.push_back(l);
            }
        }
        closing = still;
        let mut kept = VecDeque::with_capacity(clients.len());
        for (client, fd) in clients.drain(..).zip(&fds[1..]) {
            let ready = fd.revents != 0;
            match step(client, ready, now, limits.line_timeout) {
                Step::Wait(client) => kept.push_back(client),
                Step::Line(stream, line) => match jobs.try_send((stream, line)) {
                    Ok(()) => {}
                    Err(mpsc::TrySendError::Full((stream, _)))
                    | Err(mpsc::TrySendError::Disconnected((stream, _))) => refuse(
                        &mut closing,
                        stream,
                        "the daemon is busy with other control requests; try again",
                        now,
                    ),
                },
                Step::Refuse(stream, message) => refuse(&mut closing, stream, &message, now),
                Step::Done => {}
            }
        }
        clients = kept;
        if fds[0].revents != 0 {
            accept(listener, &mut clients, &mut closing, now, limits);
        }
    }
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

enum Step {
    Wait(Client),
    Line(UnixStream, String),
    Refuse(UnixStream, String),
    Done,
}

/// Read what a ready client sent; its line when complete, or its end.
fn step(mut client: Client, ready: bool, now: Instant, line_timeout: Duration) -> Step {
    if ready {
        let mut buf = [0u8; 1024];
        loop {
            match client.stream.read(&mut buf) {
                // The client closed (or half-closed) its end: what it sent is its line.
                Ok(0) if client.line.is_empty() => return Step::Done,
                Ok(0) => return line_of(client),
                Ok(n) => {
                    client.line.extend_from_slice(&buf[..n]);
                    if client.line.contains(&b'\n') {
                        return line_of(client);
                    }
                    if client.line.len() > MAX_REQUEST {
                        return Step::Refuse(client.stream, "request line too long".into());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Done,
            }
        }
    }
    if now >= client.deadline {
        return Step::Refuse(
            client.stream,
            format!(
                "no request line within {} ms; closing",
                line_timeout.as_millis()
            ),
        );
    }
    Step::Wait(client)
}

fn line_of(client: Client) -> Step {
    let end = client
        .line
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(client.line.len());
    let line = String::from_utf8_lossy(&client.line[..end]).into_owned();
    Step::Line(client.stream, line)
}

fn accept(
    listener: &UnixListener,
    clients: &mut VecDeque<Client>,
    closing: &mut VecDeque<Lingering>,
    now: Instant,
    limits: Limits,
) {
    for _ in 0..ACCEPTS_PER_TURN {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // WouldBlock: no more waiting; anything else (EMFILE...): try next turn.
            Err(_) => return,
        };
        if !matches!(peer_uid(&stream), Ok(0)) {
            refuse(closing, stream, "only root may control portsentry", now);
            continue;
        }
        if clients.len() >= limits.max_clients {
            let oldest_silent = clients
                .front()
                .is_some_and(|c| now.saturating_duration_since(c.accepted) >= limits.evict_after);
            if !oldest_silent {
                let message = format!(
                    "too many clients on the control socket (at most {} at once); try again",
                    limits.max_clients
                );
                refuse(closing, stream, &message, now);
                continue;
            }
            if let Some(old) = clients.pop_front() {
                refuse(
                    closing,
                    old.stream,
                    "closed to make room for another client: too many idle connections",
                    now,
                );
            }
        }
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        clients.push_back(Client {
            stream,
            line: Vec::new(),
            accepted: now,
            deadline: now + limits.line_timeout,
        });
    }
}
