//! The state file: every ban and the offence history behind it, kept across restarts,
//! reboots and `kill -9`.
//!
//! Format: one pretty-printed JSON object, readable and editable with `jq`:
//! ```json
//! { "format": "portsentry-state", "version": 1, "saved_at": 1700000000,
//!   "settled_through": 1700000000,
//!   "bans": [ { "key": "198.18.0.2/32", "offences": 2, "banned_at": 1700000000,
//!               "expires_at": 1700007200, "last_offence": 1700000000,
//!               "reason": "TCP SYN/Normal scan to TCP port 23",
//!               "evidence": "unverified" } ] }
//! ```
//! `evidence` is the ban's class (`unverified`, `verified`, `manual`). It was added
//! within version 1 (an additive field: an older portsentry reading the file ignores
//! it); a record without it, written before bans carried their class, is `manual` when
//! its reason is that of `portsentry ban`, else `unverified` (every automatic ban of
//! those versions came from a single packet).
//! `fleet_last_id` (also additive, present only with `[fleet]`) is the ID of the last
//! fleet stream entry this node has read, so that after a restart it reads on from
//! there (`XREAD`); a file without it loads as before.
//! `expires_at` is `null` for a permanent ban; a record whose `expires_at` has passed is
//! offence history (it still counts towards escalation). `settled_through` is
//! [`BanBook::settled_through`]: bans that ended after it were perhaps not yet removed
//! from the firewall when the file was written, so after loading they are handed out
//! once more by [`BanBook::take_expired`].
//!
//! Invariants: the file at the path is always a complete state, old or new — a save
//! writes a temporary file in the same directory (mode 0600), fsyncs it, renames it over
//! the target and fsyncs the directory. A file this code cannot read with certainty
//! (corrupt, unknown version) is an error, never an empty state: the daemon refuses to
//! start rather than silently forget bans.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use portsentry_engine::Evidence;
use portsentry_engine::bans::{Ban, BanBook};
use serde::{Deserialize, Serialize};

/// The `format` value that marks our file.
pub const FORMAT: &str = "portsentry-state";
/// The version this code writes and reads.
pub const VERSION: u64 = 1;

/// Where the daemon keeps its state unless configured otherwise.
pub fn default_path() -> &'static Path {
    Path::new(crate::defaults::STATE_FILE)
}

/// A failed save or load, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot create temporary file {path}: {source}")]
    CreateTemp { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot flush {path} to disk: {source}")]
    Sync { path: PathBuf, source: io::Error },
    #[error("cannot rename {temp} over {path}: {source}")]
    Replace {
        path: PathBuf,
        temp: PathBuf,
        source: io::Error,
    },
    #[error("cannot flush directory {path} to disk: {source}")]
    SyncDir { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}:{line}:{column}: corrupt state file: {source}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        source: serde_json::Error,
    },
    #[error("{path}: not a portsentry state file (\"format\" is {found:?}, expected \"{FORMAT}\")")]
    Format {
        path: PathBuf,
        found: Option<String>,
    },
    #[error(
        "{path}: unsupported state file version {}, this portsentry reads version {VERSION}",
        version.map_or("(missing)".to_string(), |v| v.to_string())
    )]
    Version { path: PathBuf, version: Option<u64> },
    #[error("{path}: ban #{index}: bad key {key:?}: {source}")]
    BadKey {
        path: PathBuf,
        index: usize,
        key: String,
        source: ipnet::AddrParseError,
    },
    #[error(
        "{path}: ban #{index}: unknown evidence {word:?} (expected \"unverified\", \"verified\" or \"manual\")"
    )]
    BadEvidence {
        path: PathBuf,
        index: usize,
        word: String,
    },
    #[error("cannot encode the state for {path}: {source}")]
    Encode {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// What [`load`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedState {
    /// When the file was written; `None` when there was no file.
    pub saved_at: Option<u64>,
    /// The saved [`BanBook::settled_through`].
    pub settled_through: u64,
    /// Every record: active bans and offender history, in file order.
    pub records: Vec<Ban>,
    /// Records with a ban still in force at load time (these go back into the firewall
    /// with their remaining time).
    pub active: usize,
    /// Bans that ended between the save and load time: not restored as bans; after
    /// [`into_book`](Self::into_book) the first `take_expired` hands them out once so
    /// leftovers in non-expiring backends (routes, iptables) are removed.
    pub expired: usize,
    /// The last fleet stream entry read (see the module doc).
    pub fleet_last_id: Option<String>,
}

impl LoadedState {
    /// A ban book with these records restored (see [`BanBook::restore`]).
    pub fn into_book(self, capacity: usize) -> BanBook {
        self.into_book_reporting(capacity).0
    }

    /// [`into_book`](Self::into_book), and the records a file holding more than
    /// `capacity` lost (the book evicts offence history with the oldest offence first,
    /// then the bans ending soonest), listed oldest offence first.
    pub fn into_book_reporting(self, capacity: usize) -> (BanBook, Vec<Ban>) {
        let mut book = BanBook::new(capacity);
        book.set_settled_through(self.settled_through);
        let over = self.records.len() > book.capacity();
        let mut given = Vec::new();
        for ban in self.records {
            if over {
                given.push(ban.clone());
            }
            book.restore(ban);
        }
        if !over {
            return (book, Vec::new());
        }
        let kept: std::collections::HashSet<IpNet> = book.records().map(|b| b.key).collect();
        let mut seen = std::collections::HashSet::new();
        // Later records of one key replace earlier ones: the last is the one lost.
        let mut dropped: Vec<Ban> = given
            .into_iter()
            .rev()
            .filter(|b| seen.insert(b.key) && !kept.contains(&b.key))
            .collect();
        dropped.sort_by_key(|b| b.last_offence);
        (book, dropped)
    }
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    format: String,
    version: u64,
    saved_at: u64,
    #[serde(default)]
    settled_through: u64,
    bans: Vec<BanRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fleet_last_id: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct BanRecord {
    key: String,
    offences: u32,
    banned_at: u64,
    expires_at: Option<u64>,
    last_offence: u64,
    reason: String,
    /// Absent in files written before bans carried their class (see the module doc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    evidence: Option<String>,
}

/// Only what decides whether we can read the rest.
#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    version: Option<u64>,
}

/// Write `book` to `path` atomically: at every instant `path` holds either the previous
/// complete state or the new one. The parent directory is created (mode 0700) if missing.
pub fn save(path: &Path, book: &BanBook, now: u64) -> Result<(), StoreError> {
    save_with_fleet(path, book, now, None)
}

/// [`save`], with the last fleet stream ID read (kept in the file when `Some`).
pub fn save_with_fleet(
    path: &Path,
    book: &BanBook,
    now: u64,
    fleet_last_id: Option<&str>,
) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;

    let mut records: Vec<&Ban> = book.records().collect();
    records.sort_by_key(|b| b.key);
    let file = StateFile {
        format: FORMAT.to_string(),
        version: VERSION,
        saved_at: now,
        settled_through: book.settled_through(now),
        bans: records.into_iter().map(to_record).collect(),
        fleet_last_id: fleet_last_id.map(str::to_string),
    };
    let mut bytes = serde_json::to_vec_pretty(&file).map_err(|source| StoreError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');

    let name = path
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(".{name}.tmp"));
    write_synced(&temp, &bytes).inspect_err(|_| {
        let _ = fs::remove_file(&temp);
    })?;
    fs::rename(&temp, path).map_err(|source| {
        let _ = fs::remove_file(&temp);
        StoreError::Replace {
            path: path.to_path_buf(),
            temp: temp.clone(),
            source,
        }
    })?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::SyncDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// Create `temp` afresh (a leftover from a killed save is removed first; `create_new`
/// never follows a planted symlink), write `bytes`, fsync.
fn write_synced(temp: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let create = |source| StoreError::CreateTemp {
        path: temp.to_path_buf(),
        source,
    };
    match fs::remove_file(temp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(create(e)),
        _ => {}
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .map_err(create)?;
    f.write_all(bytes).map_err(|source| StoreError::Write {
        path: temp.to_path_buf(),
        source,
    })?;
    f.sync_all().map_err(|source| StoreError::Sync {
        path: temp.to_path_buf(),
        source,
    })
}

/// Read the state at `path`. A missing file is an empty state; anything unreadable is
/// an error naming the file (and line:column for bad JSON). `now` only sorts the
/// records into the `active` / `expired` counts.
pub fn load(path: &Path, now: u64) -> Result<LoadedState, StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LoadedState::default()),
        Err(source) => {
            return Err(StoreError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let parse_error = |source: serde_json::Error| StoreError::Parse {
        path: path.to_path_buf(),
        line: source.line(),
        column: source.column(),
        source,
    };
    let header: Header = serde_json::from_slice(&bytes).map_err(parse_error)?;
    if header.format.as_deref() != Some(FORMAT) {
        return Err(StoreError::Format {
            path: path.to_path_buf(),
            found: header.format,
        });
    }
    if header.version != Some(VERSION) {
        return Err(StoreError::Version {
            path: path.to_path_buf(),
            version: header.version,
        });
    }
    let file: StateFile = serde_json::from_slice(&bytes).map_err(parse_error)?;

    let mut state = LoadedState {
        saved_at: Some(file.saved_at),
        settled_through: file.settled_through,
        records: Vec::with_capacity(file.bans.len()),
        active: 0,
        expired: 0,
        fleet_last_id: file.fleet_last_id,
    };
    for (index, r) in file.bans.into_iter().enumerate() {
        let ban = from_record(r).map_err(|bad| match bad {
            BadRecord::Key(key, source) => StoreError::BadKey {
                path: path.to_path_buf(),
                index,
                key,
                source,
            },
            BadRecord::Evidence(word) => StoreError::BadEvidence {
                path: path.to_path_buf(),
                index,
                word,
            },
        })?;
        match ban.expires_at {
            None => state.active += 1,
            Some(t) if t > now => state.active += 1,
            Some(t) if t > file.settled_through => state.expired += 1,
            Some(_) => {}
        }
        state.records.push(ban);
    }
    Ok(state)
}

fn to_record(b: &Ban) -> BanRecord {
    BanRecord {
        key: b.key.to_string(),
        offences: b.offences,
        banned_at: b.banned_at,
        expires_at: b.expires_at,
        last_offence: b.last_offence,
        reason: b.reason.clone(),
        evidence: Some(b.evidence.as_str().to_string()),
    }
}

/// Why a record cannot be read.
enum BadRecord {
    Key(String, ipnet::AddrParseError),
    Evidence(String),
}

/// A key is `addr/bits`; a bare address (as an admin might write with `jq`) is a host.
fn from_record(r: BanRecord) -> Result<Ban, BadRecord> {
    let key = match r.key.parse::<IpNet>() {
        Ok(n) => n,
        Err(e) => match r.key.parse::<std::net::IpAddr>() {
            Ok(a) => IpNet::from(a),
            Err(_) => return Err(BadRecord::Key(r.key, e)),
        },
    };
    let evidence = match r.evidence {
        Some(word) => Evidence::from_word(&word).ok_or(BadRecord::Evidence(word))?,
        None if crate::bans::reason_is_manual(&r.reason) => Evidence::Manual,
        None => Evidence::Unverified,
    };
    Ok(Ban {
        evidence,
        key: key.trunc(),
        offences: r.offences,
        banned_at: r.banned_at,
        expires_at: r.expires_at,
        last_offence: r.last_offence,
        reason: r.reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use portsentry_engine::bans::BanPolicy;
    use std::net::IpAddr;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    const H: u64 = 3600;
    const T0: u64 = 1_700_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sample_book() -> BanBook {
        let p = BanPolicy {
            group_v6: 64,
            ..BanPolicy::default()
        };
        let mut book = BanBook::new(100);
        book.offend(
            &p,
            ip("198.18.0.2"),
            T0,
            Evidence::Unverified,
            "TCP SYN/Normal scan to TCP port 23",
        );
        book.offend(
            &p,
            ip("198.18.0.2"),
            T0 + 10,
            Evidence::Unverified,
            "TCP SYN/Normal scan to TCP port 23",
        );
        book.offend(
            &p,
            ip("2001:db8:1::5"),
            T0,
            Evidence::Unverified,
            "UDP scan to UDP port 161",
        );
        book.ban(
            &p,
            "203.0.113.0/24".parse().unwrap(),
            T0,
            None,
            Evidence::Manual,
            "manual \"quoted\"",
        );
        book.offend(&p, ip("198.18.0.9"), T0, Evidence::Unverified, "old");
        book.unban("198.18.0.9/32".parse().unwrap(), T0 + 20);
        book
    }

    fn sorted(mut v: Vec<Ban>) -> Vec<Ban> {
        v.sort_by_key(|b| b.key);
        v
    }

    #[test]
    fn issue7_a_file_over_the_capacity_says_which_records_it_lost_oldest_offence_first() {
        let rec = |key: &str, last: u64, expires_at: Option<u64>| Ban {
            key: key.parse().unwrap(),
            offences: 1,
            banned_at: last,
            expires_at,
            last_offence: last,
            reason: "saved".into(),
            evidence: Evidence::Unverified,
        };
        let loaded = LoadedState {
            saved_at: Some(T0),
            settled_through: T0,
            records: vec![
                rec("198.18.0.1/32", T0 - 50, Some(T0 - 40)), // history
                rec("198.18.0.2/32", T0 - 90, Some(T0 - 80)), // history, oldest
                rec("198.18.0.3/32", T0 - 10, Some(T0 + 100)),
                rec("198.18.0.4/32", T0 - 5, None),
                rec("198.18.0.5/32", T0 - 1, Some(T0 + 200)),
            ],
            active: 3,
            expired: 0,
            fleet_last_id: None,
        };
        let (book, dropped) = loaded.into_book_reporting(3);
        assert_eq!(book.len(), 3);
        let keys: Vec<String> = dropped.iter().map(|b| b.key.to_string()).collect();
        assert_eq!(keys, ["198.18.0.2/32", "198.18.0.1/32"]);
        // Within the capacity, nothing is reported.
        let loaded = LoadedState {
            saved_at: Some(T0),
            settled_through: T0,
            records: vec![rec("198.18.0.1/32", T0, None)],
            active: 1,
            expired: 0,
            fleet_last_id: None,
        };
        assert!(loaded.into_book_reporting(3).1.is_empty());
    }

    /// The fleet stream position is kept; a file without it (every file written
    /// before `[fleet]`) loads with none, and saving without one leaves it out.
    #[test]
    fn the_fleet_stream_id_is_kept_and_old_files_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let book = sample_book();
        save_with_fleet(&path, &book, T0, Some("1700000000000-3")).unwrap();
        let loaded = load(&path, T0).unwrap();
        assert_eq!(loaded.fleet_last_id.as_deref(), Some("1700000000000-3"));
        save(&path, &book, T0).unwrap();
        assert!(!fs::read_to_string(&path).unwrap().contains("fleet_last_id"));
        assert_eq!(load(&path, T0).unwrap().fleet_last_id, None);
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        let book = sample_book();
        save(&path, &book, T0 + 30).unwrap();

        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"], "no temporary file left behind");

        let json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["format"], "portsentry-state");
        assert_eq!(json["version"], 1);
        assert_eq!(json["saved_at"], T0 + 30);
        assert_eq!(json["bans"][0]["key"], "198.18.0.2/32");
        assert_eq!(json["bans"][0]["offences"], 2);
        assert_eq!(json["bans"][2]["key"], "203.0.113.0/24");
        assert!(json["bans"][2]["expires_at"].is_null());

        let loaded = load(&path, T0 + 30).unwrap();
        assert_eq!(loaded.saved_at, Some(T0 + 30));
        assert_eq!((loaded.active, loaded.expired), (3, 0));
        let want = sorted(book.records().cloned().collect());
        assert_eq!(sorted(loaded.records.clone()), want);

        let mut again = loaded.into_book(100);
        assert_eq!(sorted(again.records().cloned().collect()), want);
        assert!(again.is_banned(ip("198.18.0.2"), T0 + 30));
        assert!(again.is_banned(ip("2001:db8:1::ffff"), T0 + 30));
        assert!(again.is_banned(ip("203.0.113.200"), T0 + 30));
        assert!(!again.is_banned(ip("198.18.0.9"), T0 + 30));
        // The lifted ban is history, not handed out again.
        assert!(again.take_expired(T0 + 30).is_empty());
    }

    #[test]
    fn missing_file_is_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load(&dir.path().join("state.json"), T0).unwrap();
        assert_eq!(loaded, LoadedState::default());
        assert!(loaded.into_book(10).is_empty());
    }

    #[test]
    fn failed_save_leaves_old_file_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        save(&path, &sample_book(), T0).unwrap();
        let before = fs::read(&path).unwrap();

        // The temporary file cannot be created (a non-empty directory holds its name),
        // which fails the save whoever runs the test, root included.
        let blocker = dir.path().join(".state.json.tmp");
        fs::create_dir(&blocker).unwrap();
        fs::write(blocker.join("x"), b"x").unwrap();
        let err = save(&path, &BanBook::new(10), T0 + 1).unwrap_err();
        assert!(matches!(err, StoreError::CreateTemp { .. }), "{err}");
        assert!(err.to_string().contains(".state.json.tmp"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(load(&path, T0).unwrap().records.len(), 4);
    }

    #[test]
    fn save_under_a_file_fails_without_creating_anything() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"keep").unwrap();
        let err = save(&file.join("state.json"), &sample_book(), T0).unwrap_err();
        assert!(matches!(err, StoreError::CreateDir { .. }), "{err}");
        assert_eq!(fs::read(&file).unwrap(), b"keep");
    }

    #[test]
    fn leftover_temp_from_killed_save_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        save(&path, &sample_book(), T0).unwrap();
        // What `kill -9` in the middle of a write leaves: a partial temporary file.
        let temp = dir.path().join(".state.json.tmp");
        fs::write(&temp, b"{ \"format\": \"portsentry-st").unwrap();
        assert_eq!(load(&path, T0).unwrap().records.len(), 4);
        save(&path, &BanBook::new(10), T0 + 1).unwrap();
        assert!(!temp.exists());
        assert!(load(&path, T0 + 1).unwrap().records.is_empty());
    }

    #[test]
    fn expired_bans_dropped_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let p = BanPolicy::default();
        let mut book = BanBook::new(10);
        book.offend(&p, ip("198.18.0.2"), T0, Evidence::Unverified, "scan");
        book.ban(
            &p,
            "198.18.0.3/32".parse().unwrap(),
            T0,
            None,
            Evidence::Manual,
            "manual",
        );
        book.ban(
            &p,
            "198.18.0.4/32".parse().unwrap(),
            T0,
            Some(Duration::from_secs(10 * H)),
            Evidence::Manual,
            "manual",
        );
        save(&path, &book, T0 + 1).unwrap();

        // Down for two hours: the 1 h ban ended meanwhile.
        let now = T0 + 2 * H;
        let loaded = load(&path, now).unwrap();
        assert_eq!((loaded.active, loaded.expired), (2, 1));
        let mut again = loaded.into_book(10);
        assert!(!again.is_banned(ip("198.18.0.2"), now));
        assert!(again.is_banned(ip("198.18.0.3"), now));
        assert!(again.is_banned(ip("198.18.0.4"), now));
        assert_eq!(again.active(now).count(), 2);
        // Handed out once so a leftover route is removed; the record stays as history.
        let out = again.take_expired(now);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key, "198.18.0.2/32".parse::<IpNet>().unwrap());
        assert!(again.take_expired(now).is_empty());
        assert_eq!(
            again
                .offend(&p, ip("198.18.0.2"), now, Evidence::Unverified, "x")
                .offences,
            2
        );

        // Saved again, the ended ban is plain history: neither active nor expired.
        save(&path, &again, now).unwrap();
        let loaded = load(&path, now + 1).unwrap();
        assert_eq!((loaded.active, loaded.expired), (3, 0));
    }

    #[test]
    fn corrupt_file_reports_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(
            &path,
            "{\n  \"format\": \"portsentry-state\",\n  \"version\": 1,\n  \"saved_at\": 12,,\n",
        )
        .unwrap();
        let err = load(&path, T0).unwrap_err();
        let StoreError::Parse { line, column, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!((*line, *column), (4, 18));
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("{}:4:18: ", path.display())),
            "{msg}"
        );

        // Truncated (a file cut short by a full disk, say) is corrupt too, not empty.
        fs::write(&path, "{\n  \"format\": \"portsentry-state\",\n  \"ver").unwrap();
        let err = load(&path, T0).unwrap_err();
        assert!(matches!(err, StoreError::Parse { line: 3, .. }), "{err}");

        // Valid JSON with a wrongly typed field: still file:line:column.
        fs::write(
            &path,
            "{\"format\":\"portsentry-state\",\"version\":1,\"saved_at\":1,\n\"bans\":[{\"key\":\"198.18.0.2/32\",\"offences\":\"two\"}]}",
        )
        .unwrap();
        let err = load(&path, T0).unwrap_err();
        assert!(matches!(err, StoreError::Parse { line: 2, .. }), "{err}");
    }

    #[test]
    fn bad_key_names_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(
            &path,
            r#"{"format":"portsentry-state","version":1,"saved_at":1,"bans":[
              {"key":"198.18.0.2","offences":1,"banned_at":1,"expires_at":null,"last_offence":1,"reason":""},
              {"key":"198.18.0.300/32","offences":1,"banned_at":1,"expires_at":null,"last_offence":1,"reason":""}]}"#,
        )
        .unwrap();
        let err = load(&path, T0).unwrap_err();
        assert!(matches!(err, StoreError::BadKey { index: 1, .. }), "{err}");
        assert!(err.to_string().contains("198.18.0.300/32"), "{err}");
    }

    #[test]
    fn version_mismatch_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(
            &path,
            r#"{"format":"portsentry-state","version":2,"saved_at":1,"bans":[],"new":{}}"#,
        )
        .unwrap();
        let err = load(&path, T0).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Version {
                    version: Some(2),
                    ..
                }
            ),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("version 2"), "{msg}");

        fs::write(&path, r#"{"format":"portsentry-state","bans":[]}"#).unwrap();
        let err = load(&path, T0).unwrap_err();
        assert!(
            matches!(err, StoreError::Version { version: None, .. }),
            "{err}"
        );

        fs::write(&path, r#"{"hello":"world"}"#).unwrap();
        let err = load(&path, T0).unwrap_err();
        assert!(
            matches!(err, StoreError::Format { found: None, .. }),
            "{err}"
        );
    }

    #[test]
    fn issue7_the_evidence_class_is_saved_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let p = BanPolicy::default();
        let mut book = BanBook::new(10);
        book.offend(&p, ip("198.18.0.2"), T0, Evidence::Unverified, "SYN");
        book.offend(&p, ip("198.18.0.3"), T0, Evidence::Verified, "TCP Connect");
        book.ban(
            &p,
            "198.18.0.4/32".parse().unwrap(),
            T0,
            None,
            Evidence::Manual,
            "banned by the administrator",
        );
        save(&path, &book, T0).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        let words: Vec<&str> = json["bans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["evidence"].as_str().unwrap())
            .collect();
        assert_eq!(words, ["unverified", "verified", "manual"]);
        assert_eq!(json["version"], 1, "an additive field: still version 1");
        let loaded = load(&path, T0).unwrap();
        assert_eq!(
            sorted(loaded.records),
            sorted(book.records().cloned().collect())
        );
    }

    /// A file written before bans carried their class: the administrator's bans (by
    /// their reason) are manual, every other one is unverified.
    #[test]
    fn issue7_an_old_file_without_the_class_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(
            &path,
            r#"{"format":"portsentry-state","version":1,"saved_at":1,"bans":[
              {"key":"198.18.0.2/32","offences":1,"banned_at":1,"expires_at":null,"last_offence":1,"reason":"TCP SYN/Normal scan to TCP port 23"},
              {"key":"198.18.0.3/32","offences":1,"banned_at":1,"expires_at":null,"last_offence":1,"reason":"banned by the administrator"},
              {"key":"198.18.0.4/32","offences":1,"banned_at":1,"expires_at":null,"last_offence":1,"reason":"banned by the administrator (--force over the protected 198.18.0.4/32)"},
              {"key":"198.18.0.5/32","offences":1,"banned_at":1,"expires_at":null,"last_offence":1,"reason":"found in the kernel at start"}]}"#,
        )
        .unwrap();
        let classes: Vec<(String, Evidence)> = load(&path, T0)
            .unwrap()
            .records
            .into_iter()
            .map(|b| (b.key.to_string(), b.evidence))
            .collect();
        assert_eq!(
            classes,
            [
                ("198.18.0.2/32".to_string(), Evidence::Unverified),
                ("198.18.0.3/32".to_string(), Evidence::Manual),
                ("198.18.0.4/32".to_string(), Evidence::Manual),
                ("198.18.0.5/32".to_string(), Evidence::Unverified),
            ]
        );
        // A word this code does not know is an error naming the record, never a guess.
        fs::write(
            &path,
            r#"{"format":"portsentry-state","version":1,"saved_at":1,"bans":[
              {"key":"198.18.0.2/32","offences":1,"banned_at":1,"expires_at":null,"last_offence":1,"reason":"","evidence":"proven"}]}"#,
        )
        .unwrap();
        let err = load(&path, T0).unwrap_err();
        assert!(
            matches!(err, StoreError::BadEvidence { index: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("\"proven\""), "{err}");
    }
}
