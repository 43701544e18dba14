//! The files PortSentry users and their tools read: the history file (append-only,
//! never truncated, one 1.2-format line per acted-on host — fail2ban's stock
//! `portsentry` filter anchors on its `Host: <HOST>` and on the `/<HOST> Port: N TCP
//! Blocked` end; the evidence class, `[unverified]`, sits before `Host:` so that both
//! still match), the per-mode blocked file, and
//! `/etc/hosts.deny` (deduplicated, replaced atomically so TCP wrappers never read a
//! half-written file).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Local, TimeZone};
use portsentry_engine::{Evidence, Proto};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot replace {path}: {source}")]
    Replace { path: PathBuf, source: io::Error },
}

/// One `... [class] Host: name/ip Port: N PROTO Blocked` line: the 1.2 format
/// (Y2K-fixed) with the evidence class in brackets before `Host:`:
/// `942286729 - 11/10/1999 20:18:49 [unverified] Host: 192.168.2.12/192.168.2.12 Port: 111 TCP Blocked`.
/// Everything from `Host:` to the end is 1.2's, so fail2ban's filters (anchored on
/// `Host: <HOST>`, or on `/<HOST> Port: N TCP Blocked$`) match unchanged, and one that
/// should act on proven scanners only can add `ignoreregex = \[unverified\]`.
pub fn blocked_line<Tz: TimeZone>(
    when: &DateTime<Tz>,
    resolved: &str,
    ip: IpAddr,
    port: u16,
    proto: Proto,
    evidence: Evidence,
) -> String
where
    Tz::Offset: std::fmt::Display,
{
    format!(
        "{} - {} [{}] Host: {}/{} Port: {} {} Blocked\n",
        when.timestamp(),
        when.format("%m/%d/%Y %H:%M:%S"),
        evidence,
        resolved,
        ip,
        port,
        proto
    )
}

/// An append-only record file (history or blocked). Each line is written with one
/// `write` on an O_APPEND descriptor and flushed to disk, so a crash loses nothing that
/// was reported as written and concurrent writers never interleave within a line.
pub struct RecordFile {
    path: PathBuf,
    file: File,
    /// Lines [`queue`](Self::queue)d and not yet written by [`flush`](Self::flush).
    pending: String,
}

impl RecordFile {
    /// Open for appending, creating the file (mode 0600) and its parent directory.
    /// `truncate` empties it first: 1.2 does that for the per-session blocked file,
    /// never for history.
    pub fn open(path: &Path, truncate: bool) -> Result<Self, RecordError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|source| RecordError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let mut options = OpenOptions::new();
        options.create(true).mode(0o600);
        if truncate {
            options.write(true).truncate(true);
        } else {
            options.append(true);
        }
        let file = options.open(path).map_err(|source| RecordError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        if truncate {
            // Re-open in append mode so every later write lands at the end.
            drop(file);
            return Self::open(path, false);
        }
        Ok(RecordFile {
            path: path.to_path_buf(),
            file,
            pending: String::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Open the path again, for logrotate: after `mv history history.1` the lines go to
    /// a new `history`, created with the mode, owner and group of the file we had open
    /// (logrotate's `nocreate`); a file already at the path (logrotate's `create`) is
    /// appended to as it is. Never truncates. On failure the old descriptor is kept, so
    /// no line is lost. True when a new file was created.
    pub fn reopen(&mut self) -> Result<bool, RecordError> {
        use std::os::unix::fs::MetadataExt;
        let open_err = |source| RecordError::Open {
            path: self.path.clone(),
            source,
        };
        let old = self.file.metadata().map_err(open_err)?;
        let mode = old.mode() & 0o7777;
        let created = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(mode)
            .open(&self.path);
        let (file, created) = match created {
            Ok(file) => {
                // The umask may have narrowed the mode; the owner is best effort (only
                // root may give a file away).
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(open_err)?;
                let _ = std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid()));
                (file, true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&self.path)
                    .map_err(open_err)?;
                (file, false)
            }
            Err(e) => return Err(open_err(e)),
        };
        self.file = file;
        Ok(created)
    }

    /// Queue `line` for the next [`flush`](Self::flush): a burst of bans is one write
    /// and one fdatasync, not one each.
    pub fn queue(&mut self, line: &str) {
        self.pending.push_str(line);
    }

    /// Write the queued lines in one write and one fdatasync. On an error they are
    /// dropped (the error says so), so a full disk does not grow memory.
    pub fn flush(&mut self) -> Result<(), RecordError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let lines = std::mem::take(&mut self.pending);
        self.append(&lines)
    }

    pub fn append(&mut self, line: &str) -> Result<(), RecordError> {
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|source| RecordError::Write {
                path: self.path.clone(),
                source,
            })
    }
}

/// Convenience: a blocked line stamped with the local wall clock now.
/// PortSentry 2.x's history line: local ISO-8601 time with milliseconds and a numeric
/// offset, a space, the scan line (`2025-07-01T13:38:18.123+0200 Scan from: [...]`).
pub fn history_line_2x<Tz: TimeZone>(when: &DateTime<Tz>, scan_line: &str) -> String
where
    Tz::Offset: std::fmt::Display,
{
    format!("{} {scan_line}\n", when.format("%Y-%m-%dT%H:%M:%S%.3f%z"))
}

/// [`history_line_2x`] at the current local time.
pub fn history_line_2x_now(scan_line: &str) -> String {
    history_line_2x(&Local::now(), scan_line)
}

pub fn blocked_line_now(
    resolved: &str,
    ip: IpAddr,
    port: u16,
    proto: Proto,
    evidence: Evidence,
) -> String {
    blocked_line(&Local::now(), resolved, ip, port, proto, evidence)
}

/// Result of adding a line to hosts.deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostsDenyResult {
    Added,
    AlreadyPresent,
}

/// Add `line` to the hosts.deny file at `path` unless an identical line is there.
/// The new content is written to a temporary file beside it, flushed, and renamed over
/// the original, keeping its permissions.
pub fn add_hosts_deny_line(path: &Path, line: &str) -> Result<HostsDenyResult, RecordError> {
    let existing = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(RecordError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let wanted = line.trim();
    if existing.lines().any(|l| l.trim() == wanted) {
        return Ok(HostsDenyResult::AlreadyPresent);
    }
    let mut content = existing;
    if !content.is_empty() && !content.ends_with('\n') {
        content.push('\n');
    }
    content.push_str(wanted);
    content.push('\n');
    replace_hosts_deny(path, &content)?;
    Ok(HostsDenyResult::Added)
}

/// Remove every line of the hosts.deny file at `path` that is `line` (ignoring the
/// blanks around it), the way [`add_hosts_deny_line`] adds it: replaced atomically,
/// permissions kept. True when a line was removed; a missing file holds no line.
pub fn remove_hosts_deny_line(path: &Path, line: &str) -> Result<bool, RecordError> {
    let existing = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(RecordError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let wanted = line.trim();
    if !existing.lines().any(|l| l.trim() == wanted) {
        return Ok(false);
    }
    let mut content = String::with_capacity(existing.len());
    for l in existing.lines().filter(|l| l.trim() != wanted) {
        content.push_str(l);
        content.push('\n');
    }
    replace_hosts_deny(path, &content)?;
    Ok(true)
}

/// Write `content` to a temporary file beside `path`, flush it, and rename it over
/// `path` with the old file's permissions (0644 for a new file).
fn replace_hosts_deny(path: &Path, content: &str) -> Result<(), RecordError> {
    let mode = fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "hosts.deny".into());
    let tmp = path.with_file_name(format!(".{file_name}.portsentry.{}", std::process::id()));
    let replace_err = |source| RecordError::Replace {
        path: path.to_path_buf(),
        source,
    };
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Make the rename itself durable.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        replace_err(e)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ps-records-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn blocked_line_matches_the_1_2_example() {
        let tz = FixedOffset::west_opt(8 * 3600).unwrap();
        let when = tz.timestamp_opt(942286729, 0).unwrap();
        let line = blocked_line(
            &when,
            "192.168.2.12",
            "192.168.2.12".parse().unwrap(),
            111,
            Proto::Tcp,
            Evidence::Unverified,
        );
        // Issue 7: 1.2's line with the evidence class before `Host:`.
        assert_eq!(
            line,
            "942286729 - 11/10/1999 18:18:49 [unverified] Host: 192.168.2.12/192.168.2.12 Port: 111 TCP Blocked\n"
        );
    }

    #[test]
    fn fail2ban_stock_filter_shape_matches() {
        // fail2ban's filter.d/portsentry.conf: failregex = /<HOST> Port\: [0-9]+ (TCP|UDP) Blocked$
        let line = blocked_line_now(
            "fd00:5e17::2",
            "fd00:5e17::2".parse().unwrap(),
            53,
            Proto::Udp,
            Evidence::Unverified,
        );
        assert!(
            line.trim_end()
                .ends_with("/fd00:5e17::2 Port: 53 UDP Blocked"),
            "{line}"
        );
    }

    /// Issue 7: the stock fail2ban filters still find the host in the lines we write
    /// now, of every class: Debian's (`failregex = /<HOST> Port\: [0-9]+ (TCP|UDP)
    /// Blocked$`) and the one anchored on `Host: <HOST>`, with fail2ban's `<HOST>`
    /// expanded as it does for an address; and `ignoreregex = \[unverified\]` leaves out
    /// exactly the unverified lines.
    #[test]
    fn issue7_fail2ban_regexes_match_the_lines_with_the_class() {
        // fail2ban's <HOST> for an address (simplified from its `<ADDR>`).
        let host = r"(?P<host>[0-9a-fA-F.:]+)";
        let debian =
            regex::Regex::new(&format!(r"/{host} Port\: [0-9]+ (TCP|UDP) Blocked$")).unwrap();
        let anchored = regex::Regex::new(&format!(r"Host: [^/ ]*/{host} ")).unwrap();
        let ignore = regex::Regex::new(r"\[unverified\]").unwrap();
        let tz = FixedOffset::east_opt(0).unwrap();
        let when = tz.timestamp_opt(1_790_000_000, 0).unwrap();
        for (ip, proto, evidence) in [
            ("198.18.0.2", Proto::Tcp, Evidence::Unverified),
            ("fd00:5e17::2", Proto::Udp, Evidence::Verified),
            ("198.18.0.3", Proto::Tcp, Evidence::Manual),
        ] {
            let line = blocked_line(&when, ip, ip.parse().unwrap(), 111, proto, evidence);
            let line = line.trim_end_matches('\n');
            let got = debian.captures(line).map(|c| c["host"].to_string());
            assert_eq!(got.as_deref(), Some(ip), "{line}");
            let got = anchored.captures(line).map(|c| c["host"].to_string());
            assert_eq!(got.as_deref(), Some(ip), "{line}");
            assert_eq!(
                ignore.is_match(line),
                evidence == Evidence::Unverified,
                "{line}"
            );
        }
    }

    #[test]
    fn history_is_appended_never_truncated_and_blocked_is_truncated() {
        let d = tmpdir("append");
        let h = d.join("sub/portsentry.history");
        RecordFile::open(&h, false)
            .unwrap()
            .append("one\n")
            .unwrap();
        RecordFile::open(&h, false)
            .unwrap()
            .append("two\n")
            .unwrap();
        assert_eq!(fs::read_to_string(&h).unwrap(), "one\ntwo\n");
        let b = d.join("portsentry.blocked.atcp");
        RecordFile::open(&b, false)
            .unwrap()
            .append("old\n")
            .unwrap();
        let mut f = RecordFile::open(&b, true).unwrap();
        f.append("new\n").unwrap();
        f.append("newer\n").unwrap();
        assert_eq!(fs::read_to_string(&b).unwrap(), "new\nnewer\n");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn issue_8_reopen_after_a_rotation_writes_a_new_file_with_the_same_mode() {
        let d = tmpdir("reopen");
        let h = d.join("history");
        let mut f = RecordFile::open(&h, false).unwrap();
        f.append("one\n").unwrap();
        fs::set_permissions(&h, fs::Permissions::from_mode(0o640)).unwrap();
        fs::rename(&h, d.join("history.1")).unwrap();
        f.append("two\n").unwrap();
        assert!(f.reopen().unwrap(), "a new file is created");
        f.append("three\n").unwrap();
        assert_eq!(
            fs::read_to_string(d.join("history.1")).unwrap(),
            "one\ntwo\n"
        );
        assert_eq!(fs::read_to_string(&h).unwrap(), "three\n");
        assert_eq!(
            fs::metadata(&h).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn reopen_without_rotation_or_after_logrotate_create_appends() {
        let d = tmpdir("reopen-same");
        let h = d.join("history");
        let mut f = RecordFile::open(&h, false).unwrap();
        f.append("one\n").unwrap();
        assert!(!f.reopen().unwrap());
        f.append("two\n").unwrap();
        assert_eq!(fs::read_to_string(&h).unwrap(), "one\ntwo\n");
        // logrotate's `create`: the new empty file is there before the signal.
        fs::rename(&h, d.join("history.1")).unwrap();
        fs::write(&h, "").unwrap();
        fs::set_permissions(&h, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(!f.reopen().unwrap());
        f.append("three\n").unwrap();
        assert_eq!(fs::read_to_string(&h).unwrap(), "three\n");
        assert_eq!(
            fs::metadata(&h).unwrap().permissions().mode() & 0o7777,
            0o644,
            "the mode logrotate chose is kept"
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn hosts_deny_is_deduplicated_and_keeps_content_and_mode() {
        let d = tmpdir("deny");
        let p = d.join("hosts.deny");
        fs::write(&p, "# comment\nsshd: 198.18.0.9").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(
            add_hosts_deny_line(&p, "ALL: 198.18.0.2").unwrap(),
            HostsDenyResult::Added
        );
        assert_eq!(
            add_hosts_deny_line(&p, "ALL: 198.18.0.2").unwrap(),
            HostsDenyResult::AlreadyPresent
        );
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "# comment\nsshd: 198.18.0.9\nALL: 198.18.0.2\n"
        );
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(
            fs::read_dir(&d).unwrap().count(),
            1,
            "no temp file left behind"
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn hosts_deny_is_created_when_missing() {
        let d = tmpdir("create");
        let p = d.join("hosts.deny");
        add_hosts_deny_line(&p, "ALL: fd00:5e17::2 : DENY").unwrap();
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "ALL: fd00:5e17::2 : DENY\n"
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn issue_8_hosts_deny_line_is_removed_keeping_the_rest_and_the_mode() {
        let d = tmpdir("undeny");
        let p = d.join("hosts.deny");
        fs::write(
            &p,
            "# comment\nALL: 198.18.0.2\nsshd: 198.18.0.9\n  ALL: 198.18.0.2 \n",
        )
        .unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(remove_hosts_deny_line(&p, "ALL: 198.18.0.2").unwrap());
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "# comment\nsshd: 198.18.0.9\n"
        );
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert!(!remove_hosts_deny_line(&p, "ALL: 198.18.0.2").unwrap());
        assert!(!remove_hosts_deny_line(&d.join("missing"), "ALL: 198.18.0.2").unwrap());
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1, "no temp file left");
        let _ = fs::remove_dir_all(&d);
    }
}
