//! The metrics endpoint: `GET /metrics` over plain HTTP/1.x on the `[metrics] listen`
//! address, served by threads of its own so that a slow or hostile scraper can never
//! hold up capture (which only adds to atomics, see [`crate::metrics`]).
//!
//! A minimal std `TcpListener` server rather than an HTTP crate: it answers one
//! request per connection and nothing but `GET /metrics`, so a crate's router,
//! keep-alive and chunked bodies would be code to trust without use. Bounds: at most
//! [`MAX_CLIENTS`] connections at once (more get 503 and are closed), a request head
//! of at most [`MAX_REQUEST`] bytes (431), [`IO_TIMEOUT`] to send all of it (408) and
//! to take the answer. Anything but GET is 405, any other path 404.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// Connections served at once; a Prometheus server scrapes with one.
pub const MAX_CLIENTS: usize = 4;
/// Longest request head (request line and headers).
pub const MAX_REQUEST: usize = 8192;
/// Time a client has to send its request, and to take the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// Bind `addr` and serve it from a thread until the process ends.
pub fn serve(addr: SocketAddr) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let active = Arc::new(AtomicUsize::new(0));
    thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else {
                    // Out of descriptors, say: do not spin on the error.
                    thread::sleep(Duration::from_millis(100));
                    continue;
                };
                if active.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                    active.fetch_sub(1, Ordering::AcqRel);
                    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
                    let _ = respond(&mut stream, "503 Service Unavailable", "", "busy\n");
                    continue;
                }
                let mine = Arc::clone(&active);
                let spawned =
                    thread::Builder::new()
                        .name("metrics-client".into())
                        .spawn(move || {
                            let _ = handle(stream);
                            mine.fetch_sub(1, Ordering::AcqRel);
                        });
                if spawned.is_err() {
                    // The closure (and its decrement) was dropped with the error.
                    active.fetch_sub(1, Ordering::AcqRel);
                }
            }
        })?;
    Ok(bound)
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    MethodNotAllowed,
    NotFound,
    Bad,
}

fn route(head: &str) -> Route {
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Route::Bad;
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Route::Bad;
    }
    // A query string is allowed (`/metrics?x`), as Prometheus may add params.
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics,
        (_, "/metrics") => Route::MethodNotAllowed,
        _ => Route::NotFound,
    }
}

fn handle(mut stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    // The whole head within IO_TIMEOUT, not each read: a client trickling a byte at a
    // time must not hold a slot for long.
    let start = crate::clock::instant();
    let head_len = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        let left = IO_TIMEOUT.saturating_sub(start.elapsed());
        if left.is_zero() {
            return respond(&mut stream, "408 Request Timeout", "", "too slow\n");
        }
        stream.set_read_timeout(Some(left))?;
        if buf.len() >= MAX_REQUEST {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "",
                "request too large\n",
            );
        }
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            // The time is up: answered at the top of the loop.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_len]);
    match route(&head) {
        Route::Metrics => {
            let body = crate::metrics::get().encode();
            respond(
                &mut stream,
                "200 OK",
                "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n",
                &body,
            )
        }
        Route::MethodNotAllowed => respond(
            &mut stream,
            "405 Method Not Allowed",
            "Allow: GET\r\n",
            "only GET\n",
        ),
        Route::NotFound => respond(&mut stream, "404 Not Found", "", "only /metrics\n"),
        Route::Bad => respond(&mut stream, "400 Bad Request", "", "bad request\n"),
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n"))
}

fn respond(stream: &mut TcpStream, status: &str, headers: &str, body: &str) -> io::Result<()> {
    let text = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(text.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("GET /metrics HTTP/1.1\r\n"), Route::Metrics);
        assert_eq!(route("GET /metrics?a=b HTTP/1.0\r\n"), Route::Metrics);
        assert_eq!(route("POST /metrics HTTP/1.1\r\n"), Route::MethodNotAllowed);
        assert_eq!(route("HEAD /metrics HTTP/1.1\r\n"), Route::MethodNotAllowed);
        assert_eq!(route("GET /other HTTP/1.1\r\n"), Route::NotFound);
        assert_eq!(route("GET /metrics/x HTTP/1.1\r\n"), Route::NotFound);
        assert_eq!(route("GET /metrics\r\n"), Route::Bad);
        assert_eq!(route("hello"), Route::Bad);
    }

    fn ask(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn serves_metrics_and_refuses_the_rest() {
        let addr = serve("127.0.0.1:0".parse().unwrap()).unwrap();
        let ok = ask(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("portsentry_bans_in_force"), "{ok}");
        let post = ask(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        let other = ask(addr, b"GET /other HTTP/1.1\r\n\r\n");
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        let big = vec![b'a'; MAX_REQUEST + 10];
        let big = ask(addr, &big);
        assert!(big.starts_with("HTTP/1.1 431"), "{big}");
        // A client that sends part of a head and stops: 408 after IO_TIMEOUT, and
        // meanwhile others are served.
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET /met").unwrap();
        let ok = ask(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        slow.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut out = String::new();
        let _ = slow.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    }
}
