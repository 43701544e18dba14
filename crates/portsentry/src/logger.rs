//! Where our log lines go: syslog (`/dev/log`, ident `portsentry`, facility daemon,
//! level notice, as PortSentry 1.2 wrote them) and, in the foreground, stderr.
//!
//! Lines are the 1.2 `adminalert:` / `attackalert:` texts; this module only adds the
//! transport framing. Logging never fails the caller: a missing or restarting syslog
//! daemon costs a single warning on stderr, and the socket is re-tried on later lines.
//!
//! Under systemd (`$JOURNAL_STREAM`, or a socket named by `$PORTSENTRY_JOURNAL_SOCKET`)
//! each line goes to the journal through its native protocol ([`crate::journal`]) with
//! the fields of its [`Event`] (SRC_IP, DST_PORT, PROTO, SCAN_KIND, EVIDENCE, ACTION,
//! BAN_UNTIL) besides MESSAGE, SYSLOG_IDENTIFIER=portsentry, SYSLOG_PID, PRIORITY and
//! SYSLOG_FACILITY. So that each event is in the journal once:
//! - stderr is not written for a line the journal took (the unit's stderr is the
//!   journal too); a line it refused is written there as before;
//! - syslog (`/dev/log`) is skipped while the journal takes lines when `/dev/log` is
//!   journald's own socket (`/run/systemd/journal/dev-log`), since journald would store
//!   the line a second time. journald forwards native entries to the syslog daemon
//!   (ForwardToSyslog, or rsyslog's imjournal) as `portsentry[PID]: MESSAGE`, so
//!   /var/log/syslog still gets the 1.2 line. A `/dev/log` that is a syslog daemon's
//!   own socket keeps getting every line, framed exactly as before.
//!
//! `[logging] format = "json"` makes stderr one JSON object per line: `time`,
//! `message` and the event's fields in lower case (`src_ip`, `dst_port`, ...).

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How long the first line that finds syslog's queue full waits for room.
const CONGESTION_WAIT: std::time::Duration = std::time::Duration::from_millis(50);
use crate::event::Event;
use crate::journal::Journal;

/// RFC 3164 priority: facility daemon (3) * 8 + severity notice (5).
const PRIORITY_DAEMON_NOTICE: u8 = 29;

pub struct Logger {
    syslog: Option<Mutex<SyslogSink>>,
    to_stderr: bool,
    /// PortSentry 2.x's `-l stdout`: each message alone on a line of stdout.
    to_stdout: bool,
    /// stderr is connected to the systemd journal ($JOURNAL_STREAM names it).
    journal: bool,
    pid: u32,
    /// The journal's native socket (under systemd, or named by the environment).
    native: Option<Mutex<Journal>>,
    /// Skip syslog while the journal takes lines: `/dev/log` is journald's.
    syslog_is_journal: bool,
    /// stderr lines as JSON objects (`[logging] format = "json"`).
    json: bool,
}

/// `[logging] format`: how stderr lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `TIME portsentry[PID]: MESSAGE` (the message alone under systemd).
    #[default]
    Text,
    /// One JSON object per line: `time`, `message` and the line's fields.
    Json,
}

struct SyslogSink {
    path: PathBuf,
    socket: Option<UnixDatagram>,
    warned: bool,
    /// Lines the syslog socket refused because its queue was full, since the last
    /// line it took (said in one line once it takes lines again).
    dropped: u64,
}

impl Logger {
    /// `syslog_path` None disables syslog (used by tests and `check-config`).
    pub fn new(syslog_path: Option<&Path>, to_stderr: bool) -> Self {
        Logger {
            syslog: syslog_path.map(|p| {
                Mutex::new(SyslogSink {
                    path: p.to_path_buf(),
                    socket: None,
                    warned: false,
                    dropped: 0,
                })
            }),
            to_stderr,
            to_stdout: false,
            journal: crate::journal::stderr_is_journal(),
            pid: std::process::id(),
            native: None,
            syslog_is_journal: false,
            json: false,
        }
    }

    /// The stderr format, and the journal when the environment says we run under it
    /// ([`crate::journal::socket_from_env`]).
    pub fn with_format(mut self, format: LogFormat) -> Self {
        self.json = format == LogFormat::Json;
        if let Some(path) = crate::journal::socket_from_env() {
            self.syslog_is_journal = self.syslog.as_ref().is_some_and(|s| {
                let sink = s.lock().unwrap_or_else(|e| e.into_inner());
                std::fs::canonicalize(&sink.path)
                    .is_ok_and(|p| p.starts_with("/run/systemd/journal"))
            });
            self.native = Some(Mutex::new(Journal::new(&path)));
        }
        self
    }

    /// PortSentry 2.x's `-l stdout`: every message on its own line of stdout, without
    /// a time or name (as 2.x prints them), and to syslog only if `syslog_path` is given.
    pub fn stdout(syslog_path: Option<&Path>) -> Self {
        Logger {
            to_stdout: true,
            ..Logger::new(syslog_path, false)
        }
    }

    /// Log one line (e.g. `attackalert: ...`).
    pub fn log(&self, message: &str) {
        self.event(&Event::text(message));
    }

    /// Log one line with its fields.
    pub fn event(&self, event: &Event<'_>) {
        let message = event.message;
        let now = chrono::Local::now();
        let journaled = self.native.as_ref().is_some_and(|j| {
            let mut j = j.lock().unwrap_or_else(|e| e.into_inner());
            self.send_native(&mut j, event).is_ok()
        });
        if self.to_stdout {
            let _ = std::io::stdout()
                .lock()
                .write_all(format!("{message}\n").as_bytes());
        }
        if self.to_stderr && !journaled {
            // Under systemd, stderr goes to the journal, which stamps time, name and pid
            // itself.
            let line = if self.json {
                json_line(&now, event)
            } else if self.journal {
                format!("{message}\n")
            } else {
                format!(
                    "{} portsentry[{}]: {}\n",
                    now.format("%Y-%m-%dT%H:%M:%S%.3f%:z"),
                    self.pid,
                    message
                )
            };
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
        if let Some(sink) = self
            .syslog
            .as_ref()
            .filter(|_| !(journaled && self.syslog_is_journal))
        {
            let frame = format!(
                "<{}>{} portsentry[{}]: {}",
                PRIORITY_DAEMON_NOTICE,
                now.format("%b %e %H:%M:%S"),
                self.pid,
                message
            );
            let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
            sink.send(frame.as_bytes(), self.to_stderr);
        }
    }
}

impl Logger {
    fn send_native(&self, journal: &mut Journal, event: &Event<'_>) -> std::io::Result<()> {
        let pid = self.pid.to_string();
        let mut fields: Vec<(&str, &str)> = vec![
            ("MESSAGE", event.message),
            ("PRIORITY", "5"),
            ("SYSLOG_FACILITY", "3"),
            ("SYSLOG_IDENTIFIER", "portsentry"),
            ("SYSLOG_PID", &pid),
        ];
        fields.extend(event.fields.iter().map(|(k, v)| (*k, v.as_str())));
        journal.send(&fields)
    }
}

/// One JSON object: `time`, `message`, then the fields in lower case (`dst_port` as a
/// number).
fn json_line(now: &chrono::DateTime<chrono::Local>, event: &Event<'_>) -> String {
    let mut map = serde_json::Map::new();
    map.insert(
        "time".into(),
        now.format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string().into(),
    );
    map.insert("message".into(), event.message.into());
    for (key, value) in &event.fields {
        let key = key.to_ascii_lowercase();
        let value = match (key.as_str(), value.parse::<u64>()) {
            ("dst_port", Ok(n)) => serde_json::Value::from(n),
            _ => serde_json::Value::from(value.as_str()),
        };
        map.insert(key, value);
    }
    let mut line = serde_json::Value::Object(map).to_string();
    line.push('\n');
    line
}

impl SyslogSink {
    fn send(&mut self, frame: &[u8], stderr_too: bool) {
        // Two tries: the cached socket may point at a syslog daemon that restarted.
        for _ in 0..2 {
            if self.socket.is_none() {
                // Non-blocking: a syslog daemon that stopped reading must never stall
                // detection; what it cannot take is dropped and counted.
                match UnixDatagram::unbound()
                    .and_then(|s| s.connect(&self.path).map(|()| s))
                    .and_then(|s| s.set_nonblocking(true).map(|()| s))
                {
                    Ok(s) => self.socket = Some(s),
                    Err(e) => {
                        if !self.warned {
                            self.warned = true;
                            let _ = writeln!(
                                std::io::stderr(),
                                "portsentry: warning: cannot reach syslog at {}: {e}{}",
                                self.path.display(),
                                if stderr_too {
                                    ""
                                } else {
                                    " (log lines are lost until it is back)"
                                }
                            );
                        }
                        return;
                    }
                }
            }
            if let Some(s) = &self.socket {
                match s.send(frame) {
                    Ok(_) => {
                        if self.dropped > 0 {
                            let note = format!(
                                "<{PRIORITY_DAEMON_NOTICE}>portsentry: adminalert: WARNING: syslog at {} was full; {} lines were dropped",
                                self.path.display(),
                                self.dropped
                            );
                            self.dropped = 0;
                            let _ = s.send(note.as_bytes());
                        }
                        self.warned = false;
                        return;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // The first line that finds the queue full waits a moment for
                        // room (a start's burst of lines against a small queue, a busy
                        // syslog); once lines are being dropped, none waits until one
                        // gets through, so a stuck syslog costs one wait, not one each.
                        if self.dropped == 0
                            && portsentry_kernel::wait_writable(s.as_fd(), CONGESTION_WAIT)
                                .unwrap_or(false)
                            && s.send(frame).is_ok()
                        {
                            return;
                        }
                        self.dropped += 1;
                        return;
                    }
                    Err(_) => {}
                }
                self.socket = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syslog_that_stopped_reading_never_blocks_the_logger() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let logger = Logger::new(Some(&path), false);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            for i in 0..5000 {
                logger.log(&format!("attackalert: line {i}"));
            }
            let _ = done_tx.send(());
            logger
        });
        assert!(
            done_rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .is_ok(),
            "logging blocked on a syslog socket nobody reads"
        );
        let logger = writer.join().unwrap();
        server.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 512];
        let mut got = 0;
        while server.recv(&mut buf).is_ok() {
            got += 1;
        }
        assert!(got > 0 && got < 5000, "{got} lines arrived");
        logger.log("attackalert: after the drain");
        let mut texts = Vec::new();
        while let Ok(n) = server.recv(&mut buf) {
            texts.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert!(
            texts
                .iter()
                .any(|t| t.contains(&format!("{} lines were dropped", 5000 - got))),
            "{texts:?}"
        );
    }

    #[test]
    fn syslog_frame_has_daemon_notice_priority_and_ident() {
        let dir = std::env::temp_dir().join(format!("ps-logger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let logger = Logger::new(Some(&path), false);
        logger.log("attackalert: test line");
        let mut buf = [0u8; 512];
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let n = server.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.starts_with("<29>"), "{text}");
        assert!(
            text.ends_with(&format!(
                "portsentry[{}]: attackalert: test line",
                std::process::id()
            )),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_syslog_socket_does_not_fail() {
        let logger = Logger::new(Some(Path::new("/nonexistent/dev/log")), false);
        logger.log("adminalert: nothing listens");
    }
}
