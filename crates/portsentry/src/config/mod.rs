//! Readers for the configuration files a PortSentry installation already has:
//! `portsentry.conf` (1.2 and 2.x syntax, [`parse_legacy`]), Debian's
//! `/etc/default/portsentry` ([`parse_debian_defaults`]) and `portsentry.ignore`
//! ([`parse_ignore`], over the engine's [`IgnoreSet::parse`]).
//!
//! Layout follows ripgrep's flags crate: every `parse_*` function is pure over `&str` and
//! tested from string literals, and reports problems as [`Diagnostic`]s (file:line, one
//! small error type); reading the files is `settings::sources`' job. Parsers turn raw text into
//! validated types and collect every problem with file:line, because a security daemon
//! refuses to start on a config error rather than guess what the admin meant.
//!
//! The legacy files are read as bytes and decoded lossily: a Latin-1 comment must not stop
//! the daemon, while a value holding undecodable bytes is still refused by its parser (it
//! sees U+FFFD). portsentry.toml is ours and must be UTF-8, as TOML requires.

mod debian;
mod legacy;
mod toml_file;

use std::fmt;
use std::path::{Path, PathBuf};

use portsentry_engine::ignore::IgnoreSet;

pub use debian::{DebianDefaults, ModeKind, parse_debian_defaults};
pub use legacy::{BlockMode, LegacyConfig, WRAPPER_HOSTS_DENY, legacy_keys, parse_legacy};
pub use toml_file::{
    Backend, BanSettings, ControlSettings, DEFAULT_SETTINGS_FILE, FirewallSettings,
    ProtectSettings, StateSettings, TomlSettings, parse_toml_settings,
};

/// One error or warning about a configuration file, tied to a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as it was named to the parser.
    pub file: PathBuf,
    /// 1-based line number; 0 when the message is about the file as a whole.
    pub line: usize,
    /// 1-based column, where the parser knows it (TOML); 0 otherwise.
    pub column: usize,
    pub message: String,
}

impl Diagnostic {
    pub(crate) fn new(file: &Path, line: usize, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            line,
            column: 0,
            message: message.into(),
        }
    }
}

/// `FILE:LINE: message`, the form editors and `grep -n` users jump to; `FILE: message`
/// when no line applies.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else if self.column > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

impl std::error::Error for Diagnostic {}

/// Joins diagnostics one per line, for one error message.
pub(crate) fn join(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text of a legacy file's bytes, invalid UTF-8 decoded lossily (see the module doc).
pub(crate) fn decode_lossy(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Reads a whole file and decodes it as the settings layer does (for the tests over
/// files, which do not need its bounds).
#[cfg(test)]
pub(crate) fn read_text(path: &Path) -> std::io::Result<String> {
    std::fs::read(path).map(decode_lossy)
}

/// Parses the text of a `portsentry.ignore` file; `path` only labels the messages, one
/// per bad line, as "path:line: reason (`text`)".
pub fn parse_ignore(text: &str, path: &Path) -> Result<IgnoreSet, Vec<Diagnostic>> {
    IgnoreSet::parse(text).map_err(|errors| {
        errors
            .iter()
            .map(|e| Diagnostic::new(path, e.line, format!("{} (`{}`)", e.reason, e.text)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    /// A scratch file under the target-independent temp dir, removed on drop.
    pub(crate) struct TempFile(pub PathBuf);

    impl TempFile {
        pub(crate) fn new(name: &str, contents: &[u8]) -> Self {
            let path = std::env::temp_dir().join(format!(
                "portsentry-config-test-{}-{name}",
                std::process::id()
            ));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn diagnostic_display() {
        let d = Diagnostic::new(Path::new("/etc/portsentry/portsentry.conf"), 61, "boom");
        assert_eq!(d.to_string(), "/etc/portsentry/portsentry.conf:61: boom");
        let d = Diagnostic::new(Path::new("x.conf"), 0, "whole file");
        assert_eq!(d.to_string(), "x.conf: whole file");
        let mut d = Diagnostic::new(Path::new("p.toml"), 3, "bad");
        d.column = 7;
        assert_eq!(d.to_string(), "p.toml:3:7: bad");
    }

    /// What the settings layer does with an ignore file: read lossily, then parse.
    fn load_ignore(path: &Path) -> Result<IgnoreSet, String> {
        let text = read_text(path).map_err(|e| e.to_string())?;
        parse_ignore(&text, path).map_err(|d| join(&d))
    }

    #[test]
    fn ignore_file_with_latin1_comment_is_read() {
        let f = TempFile::new(
            "ignore-ok",
            b"# J\xf6rg's desk\r\n127.0.0.1/32\r\n0.0.0.0\r\n192.0.2.7 # admin",
        );
        let set = load_ignore(&f.0).unwrap();
        assert_eq!(set.len(), 3);
        assert!(set.contains("192.0.2.7".parse::<IpAddr>().unwrap()));
    }

    #[test]
    fn ignore_file_errors_name_every_bad_line_with_path() {
        let f = TempFile::new("ignore-bad", b"127.0.0.1\nlocalhost\n10.0.0.0/33\n");
        let err = load_ignore(&f.0).unwrap_err();
        let p = f.0.display();
        assert_eq!(
            err,
            format!(
                "{p}:2: `localhost` is not an IPv4 or IPv6 address (`localhost`)\n\
                 {p}:3: prefix length `33` is not a number 0-32 (netmask notation such as \
                 255.255.255.0 is not accepted) (`10.0.0.0/33`)"
            )
        );
    }
}
