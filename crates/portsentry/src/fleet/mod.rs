//! The fleet link: bans shared with other nodes through a Redis (or Valkey) stream.
//!
//! One more producer and consumer of the reporter, one way each:
//! ```text
//!  reporter ──Message──▶ [bounded queue] ──▶ publisher thread ──XADD──▶ stream
//!  stream ──XREAD──▶ reader thread (MAC, rate limit, k of n: `quorum`) ──Batch──▶ reporter
//! ```
//! The reporter applies what it receives through the same `BanLifecycle` as every
//! ban (guard, book, kernel set, state file, expiry) and never publishes a received
//! ban again. Redis being slow or down never blocks the reporter: publishing is a
//! `try_send` (a full queue is counted), the threads reconnect with back-off, and the
//! link logs one line per change of state (connected, lost, back), not per retry.
//!
//! - [`message`] (pure): the entry's fields, their canonical encoding and MAC;
//! - [`quorum`] (pure): k of n, the per-origin rate limit, the ban-time cap;
//! - [`secrets`]: the key and password files (root only);
//! - [`lines`]: the text of the link's log lines.

pub mod lines;
pub mod message;
pub mod quorum;
pub mod secrets;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ipnet::IpNet;
use redis::IntoConnectionInfo;

use crate::clock;
use crate::config::{FleetSettings, valid_node_name};
use crate::logger::Logger;
use message::{DecodeError, Kind, Message};
use quorum::{Quorum, Rate, RateLimit, Verdict, judge};

/// Messages waiting to be published. A ban made while Redis is down waits here and is
/// published when the link is back; past this, bans are still made but not shared.
const OUTBOX: usize = 4096;
/// Entries read per XREAD, and messages sent per pipeline.
const BATCH: usize = 512;
/// How long one XREAD waits for new entries (the reader's tick).
const BLOCK_MS: u64 = 1000;
/// Connect, read and write time limits on the Redis socket.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Back-off between reconnection attempts: doubled from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A rejected entry is logged at most once in this long (the rest are counted).
const REJECT_LOG_EVERY: Duration = Duration::from_secs(60);
/// Most seconds between a message's signed send time and its stream ID's time (the
/// Redis server's clock). The publisher signs each message as it sends it, so a
/// genuine entry is within clock skew; an old signed entry added again by someone
/// without the key (a replay) is not.
const MAX_SKEW_SECS: u64 = 120;

/// What the reader hands the reporter: what to apply, and how far it has read.
#[derive(Debug)]
pub struct Batch {
    pub items: Vec<Inbound>,
    /// The last stream ID read (kept in the state file once applied).
    pub last_id: String,
}

/// One thing to do here, decided by the reader (MAC checked, rate-limited, judged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Ban `msg.net` for `duration` (already capped). `quorum`: the nodes whose
    /// unverified reports together made it.
    Ban {
        msg: Message,
        duration: Duration,
        quorum: Option<Vec<String>>,
    },
    /// Lift the fleet ban on `net` (an administrator lifted it on `origin`).
    Unban { net: IpNet, origin: String },
    /// Lift every ban `subject` injected (asked by `origin`).
    Revoke { subject: String, origin: String },
}

/// Counters and state of the link, shared by its threads and read by `status`.
#[derive(Debug, Default)]
pub struct Stats {
    pub connected: AtomicBool,
    pub published: AtomicU64,
    pub received: AtomicU64,
    pub applied: AtomicU64,
    pub rejected: AtomicU64,
    pub refused: AtomicU64,
    pub rate_limited: AtomicU64,
    pub expired: AtomicU64,
    /// Bans not shared because the queue was full.
    pub dropped: AtomicU64,
    /// Milliseconds between the last entry's stream time and when it was read.
    pub lag_ms: AtomicU64,
    pub last_id: Mutex<String>,
}

/// The reporter's handle on the link.
pub struct Fleet {
    node: String,
    url: String,
    outbox: SyncSender<Message>,
    full_logged: AtomicBool,
    pub stats: Arc<Stats>,
}

impl Fleet {
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A link with no threads, for tests: what it publishes comes out of the receiver.
    #[cfg(test)]
    pub fn detached(node: &str) -> (Fleet, Receiver<Message>) {
        let (tx, rx) = mpsc::sync_channel(OUTBOX);
        let fleet = Fleet {
            node: node.into(),
            url: "redis://198.18.0.9:6379/".into(),
            outbox: tx,
            full_logged: AtomicBool::new(false),
            stats: Arc::new(Stats::default()),
        };
        (fleet, rx)
    }

    /// Queue `msg` for the stream; never blocks. True if queued.
    pub fn publish(&self, msg: Message, log: &Logger) -> bool {
        match self.outbox.try_send(msg) {
            Ok(()) => {
                self.full_logged.store(false, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.full_logged.swap(true, Ordering::Relaxed) {
                    log.log(&lines::queue_full());
                }
                false
            }
        }
    }

    /// A message from this node about `net`, stamped now.
    pub fn message(&self, kind: Kind, net: IpNet) -> Message {
        Message {
            kind,
            origin: self.node.clone(),
            net,
            evidence: portsentry_engine::Evidence::Manual,
            scan: String::new(),
            ports: String::new(),
            sent: clock::unix_now(),
            ends: None,
            offences: 0,
            subject: String::new(),
        }
    }

    /// The `portsentry status` part about the link.
    /// The link for `status --json`.
    pub fn view(&self) -> crate::control::views::FleetView {
        let s = &self.stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let last = s.last_id.lock().map(|g| g.clone()).unwrap_or_default();
        crate::control::views::FleetView {
            url: self.url.clone(),
            node: self.node.clone(),
            connected: s.connected.load(Ordering::Relaxed),
            last_id: (!last.is_empty()).then_some(last),
            lag_ms: n(&s.lag_ms),
            received: n(&s.received),
            applied: n(&s.applied),
            published: n(&s.published),
            rejected: n(&s.rejected),
            refused: n(&s.refused),
            rate_limited: n(&s.rate_limited),
            expired: n(&s.expired),
            not_shared: n(&s.dropped),
        }
    }

    pub fn status(&self) -> String {
        let s = &self.stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let last = s.last_id.lock().map(|g| g.clone()).unwrap_or_default();
        format!(
            "fleet: {} {} as node {}, last ID {}, lag {} ms, received {}, applied {}, published {}, rejected {}, refused {}, rate-limited {}, expired {}, not shared {}",
            if s.connected.load(Ordering::Relaxed) {
                "connected to"
            } else {
                "NOT connected to"
            },
            self.url,
            self.node,
            if last.is_empty() { "-" } else { &last },
            n(&s.lag_ms),
            n(&s.received),
            n(&s.applied),
            n(&s.published),
            n(&s.rejected),
            n(&s.refused),
            n(&s.rate_limited),
            n(&s.expired),
            n(&s.dropped),
        )
    }
}

/// Everything the threads need, read once at start (files checked here: a key file
/// readable by others stops the daemon before anything is installed).
pub struct Config {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub key: Vec<u8>,
    /// `ca_file`'s PEM (TLS: trusted instead of the system's store).
    pub ca: Option<Vec<u8>>,
    pub stream: String,
    pub node: String,
    pub settings: FleetSettings,
}

impl Config {
    pub fn load(settings: &FleetSettings) -> Result<Option<Config>> {
        let Some(url) = settings.url.clone() else {
            return Ok(None);
        };
        let key_file = settings
            .key_file
            .as_ref()
            .context("fleet.key_file is required with fleet.url")?;
        let key = secrets::read_key(key_file)?;
        let password = match &settings.password_file {
            Some(p) => Some(
                String::from_utf8(secrets::read_private(p, "fleet.password_file")?)
                    .context("fleet.password_file: not UTF-8")?,
            ),
            None => None,
        };
        let ca = match &settings.ca_file {
            Some(p) => Some(
                std::fs::read(p)
                    .with_context(|| format!("fleet.ca_file {}: cannot read it", p.display()))?,
            ),
            None => None,
        };
        let node = match &settings.node {
            Some(n) => n.clone(),
            None => host_name()?,
        };
        if !valid_node_name(&node) {
            bail!("the host name `{node}` is no valid fleet node name: set fleet.node");
        }
        Ok(Some(Config {
            url,
            user: settings.user.clone(),
            password,
            key,
            ca,
            stream: settings.stream.clone(),
            node,
            settings: settings.clone(),
        }))
    }

    fn client(&self) -> redis::RedisResult<redis::Client> {
        let info = self.url.as_str().into_connection_info()?;
        let mut redis = info.redis_settings().clone();
        if let Some(u) = &self.user {
            redis = redis.set_username(u);
        }
        if let Some(p) = &self.password {
            redis = redis.set_password(p);
        }
        let info = info.set_redis_settings(redis);
        match &self.ca {
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => redis::Client::open(info),
        }
    }
}

fn host_name() -> Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // or truncates (the last byte stays 0).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        bail!("cannot read the host name: set fleet.node");
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// The link's state, shared by both threads: one log line per change.
struct Link {
    /// 0: never connected, 1: up, 2: down.
    state: AtomicU8,
    url: String,
    stats: Arc<Stats>,
    log: Arc<Logger>,
}

impl Link {
    fn up(&self, first_line: impl FnOnce() -> String) {
        self.stats.connected.store(true, Ordering::Relaxed);
        match self.state.swap(1, Ordering::SeqCst) {
            0 => {
                let line = first_line();
                if !line.is_empty() {
                    self.log.log(&line);
                }
            }
            2 => self.log.log(&lines::back(&self.url)),
            _ => {}
        }
    }

    fn down(&self, error: &dyn std::fmt::Display) {
        self.stats.connected.store(false, Ordering::Relaxed);
        if self.state.swap(2, Ordering::SeqCst) != 2 {
            self.log.log(&lines::lost(&self.url, &error.to_string()));
        }
    }
}

/// Start the link's threads. `last_id`: where the state file says we stopped reading
/// (none: read the whole stream, which trimming keeps to `trim_after`; expired bans are
/// skipped). `deliver` hands a batch to the reporter (false: it is gone).
pub fn start(
    config: Config,
    last_id: Option<String>,
    deliver: impl Fn(Batch) -> bool + Send + 'static,
    log: Arc<Logger>,
) -> Result<(Fleet, Publisher)> {
    let stats = Arc::new(Stats::default());
    let (tx, rx) = mpsc::sync_channel::<Message>(OUTBOX);
    let config = Arc::new(config);
    let link = Arc::new(Link {
        state: AtomicU8::new(0),
        url: config.url.clone(),
        stats: Arc::clone(&stats),
        log: Arc::clone(&log),
    });
    let fleet = Fleet {
        node: config.node.clone(),
        url: config.url.clone(),
        outbox: tx,
        full_logged: AtomicBool::new(false),
        stats: Arc::clone(&stats),
    };
    if let Some(id) = &last_id
        && let Ok(mut g) = stats.last_id.lock()
    {
        *g = id.clone();
    }
    let publishing = {
        let (config, link) = (Arc::clone(&config), Arc::clone(&link));
        thread::Builder::new()
            .name("fleet-publish".into())
            .spawn(move || publisher(&config, &link, rx))
            .context("cannot start the fleet publisher thread")?
    };
    {
        let (config, link) = (Arc::clone(&config), Arc::clone(&link));
        thread::Builder::new()
            .name("fleet-read".into())
            .spawn(move || reader(&config, &link, last_id, &deliver))
            .context("cannot start the fleet reader thread")?;
    }
    Ok((fleet, Publisher(publishing)))
}

/// The publisher thread, to let it send what is queued when the daemon stops.
pub struct Publisher(thread::JoinHandle<()>);

impl Publisher {
    /// Wait (at most `limit`) for the publisher to send what the reporter queued
    /// before it ended (the reporter's `Fleet` must be gone: its end is the signal).
    /// Redis being down costs the wait, never a hang.
    pub fn finish(self, limit: Duration) {
        let start = clock::instant();
        while !self.0.is_finished() && start.elapsed() < limit {
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn connect(config: &Config) -> redis::RedisResult<redis::Connection> {
    let client = config.client()?;
    let con = client.get_connection_with_timeout(IO_TIMEOUT)?;
    con.set_read_timeout(Some(IO_TIMEOUT + Duration::from_millis(BLOCK_MS)))?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(con)
}

fn next_backoff(b: Duration) -> Duration {
    (b * 2).min(BACKOFF_MAX)
}

/// XADD each queued message (a pipeline per batch), trimming entries older than
/// `trim_after` (exact MINID: a few entries at a time, as they age out). A batch that fails is kept and sent again after the
/// reconnect: bans made while Redis was down reach the fleet when it is back.
fn publisher(config: &Config, link: &Link, outbox: Receiver<Message>) {
    let mut con: Option<redis::Connection> = None;
    let mut pending: Vec<Message> = Vec::new();
    let mut backoff = BACKOFF_FIRST;
    let trim_ms = config.settings.trim_after.as_millis() as u64;
    loop {
        if pending.is_empty() {
            match outbox.recv_timeout(Duration::from_secs(1)) {
                Ok(m) => pending.push(m),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        while pending.len() < BATCH {
            match outbox.try_recv() {
                Ok(m) => pending.push(m),
                Err(_) => break,
            }
        }
        let c = match con.as_mut() {
            Some(c) => c,
            None => match connect(config) {
                Ok(c) => {
                    link.up(|| {
                        lines::connected(&config.url, &config.node, &config.stream, "publishing")
                    });
                    con.insert(c)
                }
                Err(e) => {
                    link.down(&e);
                    thread::sleep(backoff);
                    backoff = next_backoff(backoff);
                    continue;
                }
            },
        };
        let minid = format!("{}-0", clock::unix_ms().saturating_sub(trim_ms));
        let mut pipe = redis::pipe();
        // Signed as sent (see MAX_SKEW_SECS): a ban queued while Redis was down too.
        let sent = clock::unix_now();
        for m in &mut pending {
            m.sent = sent;
        }
        for m in &pending {
            let cmd = pipe
                .cmd("XADD")
                .arg(&config.stream)
                .arg("MINID")
                .arg(&minid)
                .arg("*");
            for (k, v) in m.encode(&config.key) {
                cmd.arg(k).arg(v);
            }
            cmd.ignore();
        }
        match pipe.query::<()>(c) {
            Ok(()) => {
                link.up(String::new);
                link.stats
                    .published
                    .fetch_add(pending.len() as u64, Ordering::Relaxed);
                pending.clear();
                backoff = BACKOFF_FIRST;
            }
            Err(e) => {
                con = None;
                link.down(&e);
                thread::sleep(backoff);
                backoff = next_backoff(backoff);
            }
        }
    }
}

/// The reader's own decisions (pure parts in `quorum`), kept across reconnects.
struct ReadState {
    quorum: Quorum,
    rate: RateLimit,
    started: Instant,
    reject_logged: Option<Instant>,
}

/// XREAD from the last ID on, for ever: decode, judge, hand to the reporter.
fn reader(config: &Config, link: &Link, last_id: Option<String>, deliver: &dyn Fn(Batch) -> bool) {
    let s = &config.settings;
    let mut state = ReadState {
        quorum: Quorum::new(s.quorum, s.quorum_window),
        rate: RateLimit::new(s.rate, s.burst),
        started: clock::instant(),
        reject_logged: None,
    };
    let mut last = last_id.unwrap_or_else(|| "0-0".into());
    let mut backoff = BACKOFF_FIRST;
    loop {
        let mut con = match connect(config) {
            Ok(c) => c,
            Err(e) => {
                link.down(&e);
                thread::sleep(backoff);
                backoff = next_backoff(backoff);
                continue;
            }
        };
        link.up(|| lines::connected(&config.url, &config.node, &config.stream, &last));
        backoff = BACKOFF_FIRST;
        loop {
            let reply: redis::RedisResult<Option<redis::streams::StreamReadReply>> =
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(BATCH)
                    .arg("BLOCK")
                    .arg(BLOCK_MS)
                    .arg("STREAMS")
                    .arg(&config.stream)
                    .arg(&last)
                    .query(&mut con);
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    link.down(&e);
                    break;
                }
            };
            link.up(String::new);
            let Some(reply) = reply else {
                // Nothing new within the block time: caught up.
                link.stats.lag_ms.store(0, Ordering::Relaxed);
                continue;
            };
            let mut items = Vec::new();
            for key in reply.keys {
                for entry in key.ids {
                    last = entry.id.clone();
                    if let Some(item) = take(config, link, &mut state, &entry) {
                        items.push(item);
                    }
                }
            }
            let lag = entry_ms(&last).map_or(0, |t| clock::unix_ms().saturating_sub(t));
            link.stats.lag_ms.store(lag, Ordering::Relaxed);
            if let Ok(mut g) = link.stats.last_id.lock() {
                g.clone_from(&last);
            }
            if !deliver(Batch {
                items,
                last_id: last.clone(),
            }) {
                return;
            }
        }
        thread::sleep(backoff);
        backoff = next_backoff(backoff);
    }
}

/// The milliseconds part of a stream ID ("1700000000000-3").
fn entry_ms(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

fn field(entry: &redis::streams::StreamId, name: &str) -> Option<String> {
    match entry.map.get(name)? {
        redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// One entry: checked, rate-limited and judged; what the reporter must do, if
/// anything.
fn take(
    config: &Config,
    link: &Link,
    state: &mut ReadState,
    entry: &redis::streams::StreamId,
) -> Option<Inbound> {
    let stats = &link.stats;
    let decoded = Message::decode(&config.key, |f| field(entry, f)).and_then(|m| {
        let at = entry_ms(&entry.id).map_or(0, |t| t / 1000);
        if at.abs_diff(m.sent) > MAX_SKEW_SECS {
            return Err(DecodeError::Replayed { sent: m.sent, at });
        }
        Ok(m)
    });
    let msg = match decoded {
        Ok(m) => m,
        Err(e) => {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            let now = clock::instant();
            if state
                .reject_logged
                .is_none_or(|t| now.duration_since(t) >= REJECT_LOG_EVERY)
            {
                state.reject_logged = Some(now);
                link.log.log(&lines::rejected(&entry.id, &e.to_string()));
            }
            return None;
        }
    };
    if msg.origin != config.node {
        stats.received.fetch_add(1, Ordering::Relaxed);
        let now_ms = state.started.elapsed().as_millis() as u64;
        if let Rate::Limited { log } = state.rate.check(now_ms, &msg.origin) {
            stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            if log {
                let s = &config.settings;
                link.log
                    .log(&lines::rate_limited(&msg.origin, s.rate, s.burst));
            }
            return None;
        }
    }
    let now = clock::unix_now();
    let max = config.settings.max_ban_time;
    match judge(&msg, now, &config.node, max, &mut state.quorum) {
        Verdict::Own | Verdict::Counted(None) => None,
        Verdict::Expired => {
            stats.expired.fetch_add(1, Ordering::Relaxed);
            None
        }
        Verdict::Ban { duration, .. } => Some(Inbound::Ban {
            msg,
            duration,
            quorum: None,
        }),
        Verdict::Counted(Some(nodes)) => Some(Inbound::Ban {
            duration: quorum::quorum_duration(&msg, now, max),
            msg,
            quorum: Some(nodes),
        }),
        Verdict::Unban(net) => Some(Inbound::Unban {
            net,
            origin: msg.origin,
        }),
        Verdict::Revoke(subject) => Some(Inbound::Revoke {
            subject,
            origin: msg.origin,
        }),
    }
}
