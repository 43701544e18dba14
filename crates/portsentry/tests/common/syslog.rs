//! A syslog daemon of the test's own: a datagram socket in a temp dir that a reader
//! thread drains at once (as rsyslog does), so the daemon's non-blocking syslog writes
//! are never dropped for a full queue. Given to the daemon with `--syslog-socket`, or
//! bind-mounted over /dev/log inside a private mount namespace.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub struct Syslog {
    pub path: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Syslog {
    /// Binds `dir/syslog.sock` and starts draining it.
    pub fn start(dir: &Path) -> Syslog {
        let path = dir.join("syslog.sock");
        let sock = UnixDatagram::bind(&path).expect("bind the test syslog socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (lines, stop) = (lines.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = sock.recv(&mut buf) {
                        let mut l = lines.lock().unwrap();
                        if l.len() < 200_000 {
                            l.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                        }
                    }
                }
            })
        };
        Syslog {
            path,
            lines,
            stop,
            reader: Some(reader),
        }
    }

    /// Every line received so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Whether a received line satisfies `pred`.
    pub fn any(&self, pred: impl Fn(&str) -> bool) -> bool {
        self.lines.lock().unwrap().iter().any(|l| pred(l))
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}
