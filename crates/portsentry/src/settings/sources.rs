//! The reading layer of the settings: every source is read once, here and nowhere else,
//! into [`Sources`], a plain value of paths and texts that [`validate`](super::validate::validate)
//! turns into [`Settings`](super::Settings) without touching the file system.
//!
//! What is read: the command-line flags that matter; the legacy `portsentry.conf` (`-c`,
//! else the default file when it exists, else none: the embedded defaults); Debian's
//! `/etc/default/portsentry` when no mode flag is given; `portsentry.toml`; and the
//! ignore file the config names, with its `.static` sibling when it is absent. A file
//! that cannot be read is recorded as such, not reported: which problem is reported
//! first is for `validate` to decide, so that the order of the messages does not depend
//! on the order of the reads.
//!
//! Reading is bounded and never blocks: only a regular file is read (a FIFO, a device
//! such as /dev/zero, a directory or a socket is refused with what it is), it is opened
//! non-blocking so a FIFO swapped in after the check cannot hang the open, and at most
//! [`defaults::MAX_FILE_BYTES`] are read; a larger file is refused with its size.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use portsentry_engine::Proto;

use crate::cli::Cli;
use crate::config::{self, ModeKind};
use crate::defaults;

/// What reading a file gave.
#[derive(Debug)]
pub enum Content {
    /// The file is not there (the error is the one reading it gave).
    Absent(io::Error),
    /// The file's text; legacy files are decoded lossily (see `config`).
    Text(String),
    /// The file is there but could not be read.
    Unreadable(io::Error),
}

/// One file and what reading it gave.
#[derive(Debug)]
pub struct FileText {
    pub path: PathBuf,
    pub content: Content,
}

impl FileText {
    /// A file with this text (for callers that have the text already, and for tests).
    pub fn text(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        FileText {
            path: path.into(),
            content: Content::Text(text.into()),
        }
    }

    /// A file that does not exist.
    pub fn absent(path: impl Into<PathBuf>) -> Self {
        FileText {
            path: path.into(),
            content: Content::Absent(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }

    pub fn is_absent(&self) -> bool {
        matches!(self.content, Content::Absent(_))
    }

    /// The text, if the file was read.
    pub fn as_text(&self) -> Option<&str> {
        match &self.content {
            Content::Text(t) => Some(t),
            _ => None,
        }
    }
}

/// The command-line values the settings depend on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// The TCP mode flag given, if any (clap allows at most one per protocol).
    pub tcp: Option<ModeKind>,
    pub udp: Option<ModeKind>,
    /// `--hosts-deny`.
    pub hosts_deny: Option<PathBuf>,
    /// A PortSentry 2.x command line (`Cli::is_2x`): 2.x's log lines and history.
    pub style_2x: bool,
    /// 2.x's `-i`: the interfaces named (ALL, ALL_NLO and any mean every one).
    pub interfaces: Vec<String>,
}

impl Flags {
    pub fn from_cli(cli: &Cli) -> Self {
        let pick = |classic: bool, stealth: bool, advanced: bool| {
            // Clap's argument groups refuse two modes of one protocol (exit 2); were
            // two set anyway, the most thorough would win.
            [
                (advanced, ModeKind::Advanced),
                (stealth, ModeKind::Stealth),
                (classic, ModeKind::Classic),
            ]
            .into_iter()
            .find_map(|(set, kind)| set.then_some(kind))
        };
        // 2.x's --stealth and --connect name both protocols at once.
        Flags {
            tcp: pick(cli.tcp || cli.connect, cli.stcp || cli.stealth, cli.atcp),
            udp: pick(cli.udp || cli.connect, cli.sudp || cli.stealth, cli.audp),
            hosts_deny: cli.hosts_deny.clone(),
            style_2x: cli.is_2x(),
            interfaces: cli
                .interfaces
                .iter()
                .filter(|i| !["ALL", "ALL_NLO", "any"].contains(&i.as_str()))
                .cloned()
                .collect(),
        }
    }

    pub fn has_mode(&self) -> bool {
        self.tcp.is_some() || self.udp.is_some()
    }

    pub fn mode(&self, proto: Proto) -> Option<ModeKind> {
        match proto {
            Proto::Tcp => self.tcp,
            Proto::Udp => self.udp,
        }
    }
}

/// `portsentry.toml` as read: the file, and whether `--settings` named it (then it must
/// exist).
#[derive(Debug)]
pub struct TomlSource {
    pub file: FileText,
    pub explicit: bool,
}

/// Every source of the settings, read.
#[derive(Debug)]
pub struct Sources {
    pub flags: Flags,
    /// The legacy config; `None` when no `-c` was given and the default file does not
    /// exist, which selects the embedded defaults.
    pub config: Option<FileText>,
    /// Debian's mode file; `None` when a mode flag was given (it is not consulted).
    pub debian_defaults: Option<FileText>,
    pub toml: TomlSource,
    /// The files the config names to be read as ignore lists: IGNORE_FILE (or, with the
    /// embedded defaults, Debian's), and its `.static` sibling when it is absent.
    pub ignore_files: Vec<FileText>,
}

/// When a file counts as absent; each source keeps the rule it always had.
#[derive(Debug, Clone, Copy)]
enum Absence {
    /// Reading it failed with "not found".
    NotFound,
    /// The path does not exist (`Path::exists`).
    NotExists,
    /// Never: the file was asked for by name and must be read.
    Never,
}

/// How the file's bytes become text.
#[derive(Debug, Clone, Copy)]
enum Decode {
    /// Legacy files: invalid UTF-8 is replaced (see `config`).
    Lossy,
    /// portsentry.toml: UTF-8, as TOML requires.
    Utf8,
}

/// Why a file of this kind is not read, unless it is a regular file.
fn not_regular(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("is a directory, not a regular file")
    } else if t.is_fifo() {
        Some(
            "is a FIFO (named pipe), not a regular file; it is not read, as that could wait forever",
        )
    } else if t.is_char_device() {
        Some(
            "is a character device (such as /dev/zero), not a regular file; it is not read, as it may never end",
        )
    } else if t.is_block_device() {
        Some("is a block device, not a regular file")
    } else if t.is_socket() {
        Some("is a socket, not a regular file")
    } else {
        Some("is not a regular file")
    }
}

fn refused(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why.into())
}

fn too_large() -> io::Error {
    refused(format!(
        "is larger than {} MiB, the most read of a configuration or ignore file",
        defaults::MAX_FILE_BYTES >> 20
    ))
}

/// Checks what `meta` describes before any byte is read.
fn check(meta: &Metadata) -> io::Result<()> {
    if let Some(why) = not_regular(meta) {
        return Err(refused(why));
    }
    if meta.len() > defaults::MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(())
}

/// The bytes of a regular file of at most [`defaults::MAX_FILE_BYTES`]. The path is
/// checked first (so a missing file gives the error it always gave, and a FIFO is never
/// opened), then opened with `O_NONBLOCK` (a FIFO put there meanwhile cannot block the
/// open) and checked again as opened; the read stops one byte past the bound.
fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    check(&std::fs::metadata(path)?)?;
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    check(&meta)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(defaults::MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > defaults::MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

fn read_file(path: &Path, decode: Decode, absence: Absence) -> FileText {
    let read = read_bounded(path).and_then(|bytes| match decode {
        Decode::Lossy => Ok(config::decode_lossy(bytes)),
        Decode::Utf8 => String::from_utf8(bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("is not valid UTF-8, as TOML requires ({e})"),
            )
        }),
    });
    let content = match read {
        Ok(text) => Content::Text(text),
        Err(e) => {
            let absent = match absence {
                Absence::NotFound => e.kind() == io::ErrorKind::NotFound,
                Absence::NotExists => !path.exists(),
                Absence::Never => false,
            };
            if absent {
                Content::Absent(e)
            } else {
                Content::Unreadable(e)
            }
        }
    };
    FileText {
        path: path.to_path_buf(),
        content,
    }
}

/// `--settings FILE`, else the default settings file.
pub fn read_toml(cli: &Cli) -> TomlSource {
    let path = cli
        .settings
        .clone()
        .unwrap_or_else(|| PathBuf::from(defaults::SETTINGS_FILE));
    TomlSource {
        file: read_file(&path, Decode::Utf8, Absence::NotFound),
        explicit: cli.settings.is_some(),
    }
}

/// Read every source the command line points at.
pub fn read(cli: &Cli) -> Sources {
    let flags = Flags::from_cli(cli);
    let config = match &cli.config {
        Some(path) => Some(read_file(path, Decode::Lossy, Absence::Never)),
        None => Some(read_file(
            Path::new(defaults::CONFIG_FILE),
            Decode::Lossy,
            Absence::NotExists,
        ))
        .filter(|f| !f.is_absent()),
    };
    let debian_defaults = (!flags.has_mode())
        .then(|| read_file(&cli.defaults_file, Decode::Lossy, Absence::NotFound));
    let toml = read_toml(cli);
    let mut ignore_files = Vec::new();
    if let Some(path) = named_ignore_file(config.as_ref()) {
        let file = read_file(&path, Decode::Lossy, Absence::NotExists);
        if file.is_absent() {
            let fallback = defaults::ignore_static(&path);
            ignore_files.push(read_file(&fallback, Decode::Lossy, Absence::NotExists));
        }
        ignore_files.push(file);
    }
    Sources {
        flags,
        config,
        debian_defaults,
        toml,
        ignore_files,
    }
}

/// The ignore file the config names: IGNORE_FILE of a config that parses, or Debian's
/// for the embedded defaults. (The config is parsed again, purely, by `validate`.)
fn named_ignore_file(config: Option<&FileText>) -> Option<PathBuf> {
    match config {
        None => Some(PathBuf::from(defaults::IGNORE_FILE)),
        Some(file) => {
            let text = file.as_text()?;
            config::parse_legacy(text, &file.path).0.ok()?.ignore_file
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(crate::cli::normalize_legacy_flags(
            std::iter::once("portsentry")
                .chain(args.iter().copied())
                .map(Into::into),
        ))
        .unwrap()
    }

    fn write(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn flags_pick_one_mode_per_protocol() {
        let f = Flags::from_cli(&cli(&["-tcp", "-audp", "--hosts-deny", "/tmp/hd"]));
        assert_eq!(f.tcp, Some(ModeKind::Classic));
        assert_eq!(f.udp, Some(ModeKind::Advanced));
        assert_eq!(f.hosts_deny, Some(PathBuf::from("/tmp/hd")));
        assert!(f.has_mode());
        let f = Flags::from_cli(&cli(&["-stcp"]));
        assert_eq!((f.tcp, f.udp), (Some(ModeKind::Stealth), None));
        assert!(!Flags::from_cli(&cli(&[])).has_mode());
    }

    #[test]
    fn reads_every_named_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ignore = d.join("portsentry.ignore");
        let conf = write(
            d,
            "portsentry.conf",
            format!("IGNORE_FILE=\"{}\"\n# J\u{f6}rg\n", ignore.display()).as_bytes(),
        );
        write(d, "portsentry.ignore.static", b"127.0.0.1\n");
        let toml = write(d, "portsentry.toml", b"[bans]\ntime = \"5m\"\n");
        let defaults = write(d, "default", b"TCP_MODE=\"atcp\"\n");
        let c = conf.display().to_string();
        let t = toml.display().to_string();
        let f = defaults.display().to_string();
        let s = read(&cli(&["-c", &c, "--settings", &t, "--defaults-file", &f]));
        assert_eq!(s.config.as_ref().unwrap().path, conf);
        assert!(s.config.unwrap().as_text().unwrap().contains("J\u{f6}rg"));
        assert_eq!(
            s.debian_defaults.unwrap().as_text(),
            Some("TCP_MODE=\"atcp\"\n")
        );
        assert!(s.toml.explicit);
        assert_eq!(s.toml.file.as_text(), Some("[bans]\ntime = \"5m\"\n"));
        // IGNORE_FILE is absent, so its .static sibling was read too.
        let paths: Vec<_> = s.ignore_files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(paths, [d.join("portsentry.ignore.static"), ignore.clone()]);
        assert_eq!(s.ignore_files[0].as_text(), Some("127.0.0.1\n"));
        assert!(s.ignore_files[1].is_absent());

        // With a mode flag the Debian file is not read; with the ignore file present,
        // its sibling is not read.
        write(d, "portsentry.ignore", b"10.0.0.1\n");
        let s = read(&cli(&["-atcp", "-c", &c, "--defaults-file", &f]));
        assert!(s.debian_defaults.is_none());
        assert_eq!(s.ignore_files.len(), 1);
        assert_eq!(s.ignore_files[0].as_text(), Some("10.0.0.1\n"));
    }

    #[test]
    fn missing_files_are_recorded_not_reported() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let conf = d.join("nope.conf").display().to_string();
        let toml = d.join("nope.toml").display().to_string();
        let defaults = d.join("nope-default").display().to_string();
        let s = read(&cli(&[
            "-c",
            &conf,
            "--settings",
            &toml,
            "--defaults-file",
            &defaults,
        ]));
        // A config named by -c must be read: its absence is an unreadable file.
        let config = s.config.unwrap();
        assert!(
            matches!(&config.content, Content::Unreadable(e) if e.kind() == io::ErrorKind::NotFound)
        );
        assert!(s.toml.file.is_absent() && s.toml.explicit);
        assert!(s.debian_defaults.unwrap().is_absent());
        assert!(
            s.ignore_files.is_empty(),
            "a config that does not read names none"
        );
    }

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    }

    /// `read` on another thread, bounded in time: a read that blocks fails the test
    /// instead of hanging it.
    fn read_within(args: Vec<String>, secs: u64) -> Sources {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let _ = tx.send(read(&cli(&args)));
        });
        rx.recv_timeout(std::time::Duration::from_secs(secs))
            .expect("reading the sources blocked")
    }

    fn refusal(file: &FileText) -> String {
        match &file.content {
            Content::Unreadable(e) => {
                assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
                e.to_string()
            }
            other => panic!("{}: expected a refusal, got {other:?}", file.path.display()),
        }
    }

    #[test]
    fn dev_zero_a_directory_and_a_socket_are_refused_not_read() {
        let s = read_within(vec!["-c".into(), "/dev/zero".into()], 10);
        let why = refusal(s.config.as_ref().unwrap());
        assert!(why.starts_with("is a character device"), "{why}");
        assert!(s.ignore_files.is_empty());

        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let s = read_within(vec!["-c".into(), d.clone(), "--settings".into(), d], 10);
        for file in [s.config.as_ref().unwrap(), &s.toml.file] {
            assert_eq!(refusal(file), "is a directory, not a regular file");
        }

        let sock = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let s = read_within(vec!["-c".into(), sock.display().to_string()], 10);
        assert_eq!(
            refusal(s.config.as_ref().unwrap()),
            "is a socket, not a regular file"
        );
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let fifo = d.join("fifo");
        mkfifo(&fifo);
        // As the config, as the Debian file, as portsentry.toml.
        let f = fifo.display().to_string();
        let s = read_within(
            vec![
                "-c".into(),
                f.clone(),
                "--defaults-file".into(),
                f.clone(),
                "--settings".into(),
                f,
            ],
            10,
        );
        for file in [
            s.config.as_ref().unwrap(),
            s.debian_defaults.as_ref().unwrap(),
            &s.toml.file,
        ] {
            assert!(refusal(file).starts_with("is a FIFO (named pipe)"));
        }
        // As the ignore file a config names: refused, and being there it is not absent,
        // so its .static sibling is not read instead.
        let conf = write(
            d,
            "portsentry.conf",
            format!("IGNORE_FILE=\"{}\"\n", fifo.display()).as_bytes(),
        );
        write(d, "fifo.static", b"127.0.0.1\n");
        let s = read_within(
            vec!["-atcp".into(), "-c".into(), conf.display().to_string()],
            10,
        );
        assert_eq!(s.ignore_files.len(), 1);
        assert!(refusal(&s.ignore_files[0]).starts_with("is a FIFO"));
    }

    #[test]
    fn files_over_the_bound_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let big = d.join("big.conf");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(defaults::MAX_FILE_BYTES + 1).unwrap();
        let s = read(&cli(&["-atcp", "-c", &big.display().to_string()]));
        assert_eq!(
            refusal(s.config.as_ref().unwrap()),
            "is larger than 1 MiB, the most read of a configuration or ignore file"
        );
        // Exactly the bound is read.
        f.set_len(defaults::MAX_FILE_BYTES).unwrap();
        let s = read(&cli(&["-atcp", "-c", &big.display().to_string()]));
        let text = s.config.as_ref().unwrap().as_text().unwrap();
        assert_eq!(text.len() as u64, defaults::MAX_FILE_BYTES);
    }

    #[test]
    fn bounded_reads_keep_the_missing_file_rules() {
        // The default files that are not there are still absent (not refused), and a
        // dangling symlink is a missing file, as before.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let link = d.join("dangling");
        std::os::unix::fs::symlink(d.join("nowhere"), &link).unwrap();
        let l = link.display().to_string();
        let s = read(&cli(&["--defaults-file", &l, "--settings", &l]));
        assert!(s.debian_defaults.unwrap().is_absent());
        assert!(s.toml.file.is_absent());
        // A symlink to a regular file is read.
        let target = write(d, "real", b"TCP_MODE=\"stcp\"\n");
        let link = d.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let s = read(&cli(&["--defaults-file", &link.display().to_string()]));
        assert_eq!(
            s.debian_defaults.unwrap().as_text(),
            Some("TCP_MODE=\"stcp\"\n")
        );
    }

    #[test]
    fn toml_must_be_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let toml = write(dir.path(), "s.toml", b"# \xff\n");
        let t = toml.display().to_string();
        let s = read_toml(&cli(&["--settings", &t]));
        match &s.file.content {
            Content::Unreadable(e) => assert!(
                e.to_string()
                    .starts_with("is not valid UTF-8, as TOML requires"),
                "{e}"
            ),
            other => panic!("{other:?}"),
        }
    }
}
