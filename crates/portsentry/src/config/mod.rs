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
mod fleet;
mod legacy;
mod observe;
mod toml_file;

use std::fmt;
use std::path::{Path, PathBuf};

use portsentry_engine::ignore::IgnoreSet;

pub use debian::{DebianDefaults, ModeKind, parse_debian_defaults};
pub use fleet::{FleetSettings, valid_node_name};
pub use legacy::{BlockMode, LegacyConfig, WRAPPER_HOSTS_DENY, legacy_keys, parse_legacy};
pub use observe::{DEFAULT_METRICS_PORT, LoggingSettings, MetricsSettings};
pub use toml_file::{
    Backend, BanSettings, ControlSettings, DEFAULT_SETTINGS_FILE, FirewallSettings, ListenSettings,
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

/// `text` without the UTF-8 byte-order mark some editors put at its start. For the legacy
/// files a warning at line 1 says what we do instead of what the old reader did (`lost`:
/// what happened to line 1 there); `warnings` is `None` for portsentry.toml, where
/// skipping it is the TOML rule.
pub(crate) fn skip_bom<'a>(
    text: &'a str,
    file: &Path,
    lost: &str,
    warnings: Option<&mut Vec<Diagnostic>>,
) -> &'a str {
    let Some(rest) = text.strip_prefix('\u{FEFF}') else {
        return text;
    };
    if let Some(warnings) = warnings {
        warnings.push(Diagnostic::new(
            file,
            1,
            format!(
                "the file starts with a UTF-8 byte-order mark; it is skipped and line 1 is \
                 read as written ({lost})"
            ),
        ));
    }
    rest
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
///
/// Returns `(result, warnings)`, as [`parse_legacy`]: a byte-order mark is skipped with a
/// warning, and an entry that covers a whole address family (`0.0.0.0/0`, `::/0`, any
/// prefix length 0) is kept, as written, with a warning that it turns off all detection
/// for that family.
pub fn parse_ignore(
    text: &str,
    path: &Path,
) -> (Result<IgnoreSet, Vec<Diagnostic>>, Vec<Diagnostic>) {
    let mut warnings = Vec::new();
    let text = skip_bom(
        text,
        path,
        "PortSentry 1.2 would not have read the entry on this line",
        Some(&mut warnings),
    );
    // 1.2 took the leading address of a line and dropped the rest; where that is surely
    // what was meant, read it so too, with a warning.
    let mut read_as_1_2 = false;
    let lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, raw)| {
            let content = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
            match ignore_1_2_reading(content) {
                Some(lead) => {
                    read_as_1_2 = true;
                    warnings.push(Diagnostic::new(
                        path,
                        i + 1,
                        format!(
                            "`{content}` read as {lead}, as PortSentry 1.2 does (it reads the \
                             leading address and ignores the rest of the line; comments \
                             start with `#`)"
                        ),
                    ));
                    lead.to_string()
                }
                None => raw.to_string(),
            }
        })
        .collect();
    let joined = lines.join("\n");
    let text = if read_as_1_2 { joined.as_str() } else { text };
    let entries = match IgnoreSet::parse_entries(text) {
        Ok(entries) => entries,
        Err(errors) => {
            let mut errors: Vec<Diagnostic> = errors
                .iter()
                .map(|e| Diagnostic::new(path, e.line, format!("{} (`{}`)", e.reason, e.text)))
                .collect();
            errors.push(Diagnostic::new(path, 0, IGNORE_REFUSED));
            return (Err(errors), warnings);
        }
    };
    let mut set = IgnoreSet::new();
    for entry in entries {
        if entry.net.prefix_len() == 0 {
            let family = match entry.net {
                ipnet::IpNet::V4(_) => "IPv4",
                ipnet::IpNet::V6(_) => "IPv6",
            };
            warnings.push(Diagnostic::new(
                path,
                entry.line,
                format!(
                    "`{}` covers every {family} address: this turns off all detection for \
                     {family} (no {family} source is ever alarmed on or blocked)",
                    entry.text
                ),
            ));
        }
        set.insert(entry.net);
    }
    (Ok(set), warnings)
}

/// Why an ignore file 1.2 started on is refused: its reading of a bad line lost a host.
const IGNORE_REFUSED: &str = "refused, although PortSentry 1.2 started on it: 1.2 read each \
     line above as no address or as only its first, so a host listed there could be banned; \
     write one address or network per line";

/// 1.2's reading of an ignore line we do not take as written, when it is surely what was
/// meant: a valid address (or network) followed by a word that is no address, as in
/// `192.168.1.1 router`. Never when the rest could be a second address or a range
/// (`1.2.3.4 5.6.7.8`, `1.2.3.4,5.6.7.8`, `10.0.0.1-10.0.0.5`): 1.2 dropped those, which
/// would leave a host the admin listed unprotected, so they stay errors.
fn ignore_1_2_reading(content: &str) -> Option<&str> {
    let end = content.find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '/')))?;
    let (lead, rest) = content.split_at(end);
    let word = rest.trim_start();
    if lead.is_empty()
        || !rest.starts_with(char::is_whitespace)
        || word.starts_with(|c: char| c.is_ascii_hexdigit() || c == ':')
    {
        return None;
    }
    IgnoreSet::parse_entries(lead).ok()?;
    Some(lead)
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
        parse_ignore(&text, path).0.map_err(|d| join(&d))
    }

    fn ignore_warnings(text: &str) -> Vec<String> {
        let (set, warnings) = parse_ignore(text, Path::new("portsentry.ignore"));
        set.unwrap();
        warnings.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn ignore_file_byte_order_mark_is_skipped_with_a_notice() {
        let (set, warnings) =
            parse_ignore("\u{FEFF}198.18.0.7\n::1\n", Path::new("portsentry.ignore"));
        let set = set.unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.contains("198.18.0.7".parse::<IpAddr>().unwrap()));
        assert_eq!(
            warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "portsentry.ignore:1: the file starts with a UTF-8 byte-order mark; it is \
                 skipped and line 1 is read as written (PortSentry 1.2 would not have read the \
                 entry on this line)"
            ]
        );
        // Only at the start: elsewhere it is not an address.
        let (set, _) = parse_ignore("127.0.0.1\n\u{FEFF}::1\n", Path::new("x"));
        assert_eq!(set.unwrap_err()[0].line, 2);
    }

    #[test]
    fn ignore_entry_covering_a_whole_family_warns_at_its_line() {
        assert_eq!(
            ignore_warnings("127.0.0.1\n0.0.0.0/0\n# all of v6\n::/0 # everyone\n10.1.2.3/0\n"),
            [
                "portsentry.ignore:2: `0.0.0.0/0` covers every IPv4 address: this turns off all \
                 detection for IPv4 (no IPv4 source is ever alarmed on or blocked)",
                "portsentry.ignore:4: `::/0` covers every IPv6 address: this turns off all \
                 detection for IPv6 (no IPv6 source is ever alarmed on or blocked)",
                "portsentry.ignore:5: `10.1.2.3/0` covers every IPv4 address: this turns off all \
                 detection for IPv4 (no IPv4 source is ever alarmed on or blocked)",
            ]
        );
        // Every IPv4 address written as IPv4-mapped IPv6 is all of IPv4 too.
        assert_eq!(ignore_warnings("::ffff:0.0.0.0/96\n").len(), 1);
        assert!(ignore_warnings("::ffff:0.0.0.0/96\n")[0].contains("every IPv4 address"));
        // Debian's static file (0.0.0.0 is one host, /32) and wide but partial networks
        // are fine.
        assert!(ignore_warnings("127.0.0.1/32\n0.0.0.0\n0.0.0.0/1\n::/1\n").is_empty());
    }

    #[test]
    fn ignore_line_with_a_trailing_word_is_read_as_1_2_read_it() {
        let (set, warnings) = parse_ignore(
            "127.0.0.1\n192.168.1.1 router\nfe80::1\tgw # link\n",
            Path::new("ign"),
        );
        let set = set.unwrap();
        assert!(set.contains("192.168.1.1".parse().unwrap()));
        assert!(set.contains("fe80::1".parse().unwrap()));
        let w: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            w,
            [
                "ign:2: `192.168.1.1 router` read as 192.168.1.1, as PortSentry 1.2 does (it \
                 reads the leading address and ignores the rest of the line; comments start \
                 with `#`)",
                "ign:3: `fe80::1\tgw` read as fe80::1, as PortSentry 1.2 does (it reads the \
                 leading address and ignores the rest of the line; comments start with `#`)",
            ]
        );
        // What 1.2 dropped would leave a listed host unprotected: still errors.
        for line in [
            "1.2.3.4 5.6.7.8",
            "1.2.3.4,5.6.7.8",
            "10.0.0.1-10.0.0.5",
            "localhost",
            "192.168.2.300 x",
            "10.0.0.0/8,foo",
        ] {
            let (res, _) = parse_ignore(&format!("127.0.0.1\n{line}\n"), Path::new("ign"));
            let errors = res.unwrap_err();
            let lines: Vec<usize> = errors.iter().map(|d| d.line).collect();
            assert_eq!(lines, [2, 0], "{line}: the line, then why it is refused");
        }
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
                 255.255.255.0 is not accepted) (`10.0.0.0/33`)\n{p}: {IGNORE_REFUSED}"
            )
        );
    }
}
