//! Debian's `/etc/default/portsentry`: the shell file that picks the TCP and UDP modes
//! (`TCP_MODE="atcp"`, `UDP_MODE="audp"`) the init script passed as `-$TCP_MODE`.
//!
//! Owns [`DebianDefaults`], its reader, and [`ModeKind`], the mode a flag names (one
//! kind for both protocols: `atcp` is `ModeKind::Advanced` with `Proto::Tcp`).
//!
//! The file is sourced by a shell, so we read it as one: plain `NAME=value` assignments with optional `"…"` or `'…'` quoting and an
//! optional `export`, `#` comments, and the last assignment wins. Lines that are not an
//! assignment of TCP_MODE or UDP_MODE are other shell content and are left alone. What a
//! shell would read differently from what the admin wrote (`TCP_MODE = atcp`, which runs
//! a command named TCP_MODE) or an empty or unknown mode is an error, not a guess.

use std::path::Path;

use portsentry_engine::Proto;

use super::Diagnostic;

/// A detection mode, as PortSentry's flags name it together with the protocol: `tcp`,
/// `stcp`, `atcp` for TCP and `udp`, `sudp`, `audp` for UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeKind {
    /// `tcp`/`udp`: bind the listed ports, a full connect (a datagram) is a hit.
    Classic,
    /// `stcp`/`sudp`: watch the listed ports for any probe.
    Stealth,
    /// `atcp`/`audp`: watch every port below ADVANCED_PORTS_x that nothing listens on.
    Advanced,
}

impl ModeKind {
    pub const ALL: [ModeKind; 3] = [ModeKind::Classic, ModeKind::Stealth, ModeKind::Advanced];

    /// The flag without its dash: "tcp", "stcp", "atcp", "udp", "sudp", "audp".
    pub fn flag(self, proto: Proto) -> &'static str {
        match (self, proto) {
            (ModeKind::Classic, Proto::Tcp) => "tcp",
            (ModeKind::Stealth, Proto::Tcp) => "stcp",
            (ModeKind::Advanced, Proto::Tcp) => "atcp",
            (ModeKind::Classic, Proto::Udp) => "udp",
            (ModeKind::Stealth, Proto::Udp) => "sudp",
            (ModeKind::Advanced, Proto::Udp) => "audp",
        }
    }

    /// The `proto` mode a flag (without its dash) names; exact and lower-case, as 1.2
    /// compared it.
    pub fn from_flag(proto: Proto, s: &str) -> Option<Self> {
        ModeKind::ALL.into_iter().find(|m| m.flag(proto) == s)
    }
}

/// The modes `/etc/default/portsentry` selects; `None` where the file does not set one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DebianDefaults {
    pub tcp_mode: Option<ModeKind>,
    pub udp_mode: Option<ModeKind>,
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Parses the text of `/etc/default/portsentry`; `file` only labels diagnostics. Every
/// error is collected.
///
/// Returns `(result, warnings)`, as `parse_legacy`: the only warning is for a UTF-8
/// byte-order mark at the start, which is skipped (a shell would not have set a mode on
/// line 1).
pub fn parse_debian_defaults(
    text: &str,
    file: &Path,
) -> (Result<DebianDefaults, Vec<Diagnostic>>, Vec<Diagnostic>) {
    let mut warnings = Vec::new();
    let text = super::skip_bom(
        text,
        file,
        "a shell sourcing the file, as Debian's init script does, would not have set a \
         mode on this line",
        Some(&mut warnings),
    );
    (parse_lines(text, file), warnings)
}

fn parse_lines(text: &str, file: &Path) -> Result<DebianDefaults, Vec<Diagnostic>> {
    let mut out = DebianDefaults::default();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim_matches(|c| is_blank(c) || c == '\r');
        let line = line
            .strip_prefix("export")
            .filter(|rest| rest.starts_with(is_blank))
            .map_or(line, |rest| rest.trim_start_matches(is_blank));
        let name_len = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(line.len());
        let (name, rest) = line.split_at(name_len);
        if name != "TCP_MODE" && name != "UDP_MODE" {
            continue;
        }
        let value = match assigned_value(name, rest) {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(msg) => {
                errors.push(Diagnostic::new(file, line_no, msg));
                continue;
            }
        };
        let (proto, slot) = if name == "TCP_MODE" {
            (Proto::Tcp, &mut out.tcp_mode)
        } else {
            (Proto::Udp, &mut out.udp_mode)
        };
        let mode = ModeKind::from_flag(proto, &value);
        *slot = mode.or(*slot);
        if mode.is_none() {
            let expected = if name == "TCP_MODE" {
                "tcp, stcp or atcp"
            } else {
                "udp, sudp or audp"
            };
            let msg = if value.is_empty() {
                format!("{name} is empty (expected {expected})")
            } else {
                format!("{name}=\"{value}\" is not a mode (expected {expected})")
            };
            errors.push(Diagnostic::new(file, line_no, msg));
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The value assigned by `rest` (the text after the variable name), read as a shell would
/// read one word. `Ok(None)` when the line is not an assignment at all.
fn assigned_value(name: &str, rest: &str) -> Result<Option<String>, String> {
    let Some(word) = rest.strip_prefix('=') else {
        if rest.trim_start_matches(is_blank).starts_with('=') {
            return Err(format!(
                "spaces around `=`: a shell runs this as a command instead of setting {name}; \
                 write {name}=\"value\""
            ));
        }
        return Ok(None);
    };
    if word.starts_with(is_blank) {
        return Err(format!(
            "space after `=`: a shell sets {name} to nothing here; write {name}=\"value\""
        ));
    }
    let (value, after) = match word.chars().next() {
        Some(q @ ('"' | '\'')) => match word[1..].split_once(q) {
            Some((v, after)) => (v, after),
            None => return Err(format!("the value of {name} has no closing `{q}`")),
        },
        _ => word.split_at(word.find(is_blank).unwrap_or(word.len())),
    };
    let after = after.trim_start_matches(is_blank);
    if !after.is_empty() && !after.starts_with('#') {
        return Err(format!(
            "unexpected text after the value of {name}: `{after}` (one word, then an optional \
             # comment)"
        ));
    }
    Ok(Some(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::tests::TempFile;
    use super::*;

    const F: &str = "/etc/default/portsentry";

    fn parse(text: &str) -> Result<DebianDefaults, Vec<String>> {
        let (result, warnings) = parse_debian_defaults(text, Path::new(F));
        assert!(warnings.is_empty(), "{warnings:?}");
        result.map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn byte_order_mark_is_skipped_and_the_mode_on_line_1_kept() {
        let (result, warnings) = parse_debian_defaults(
            "\u{FEFF}TCP_MODE=\"stcp\"\nUDP_MODE=\"sudp\"\n",
            Path::new(F),
        );
        assert_eq!(
            result.unwrap(),
            modes(Some(ModeKind::Stealth), Some(ModeKind::Stealth))
        );
        assert_eq!(
            warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "/etc/default/portsentry:1: the file starts with a UTF-8 byte-order mark; it is \
                 skipped and line 1 is read as written (a shell sourcing the file, as Debian's \
                 init script does, would not have set a mode on this line)"
            ]
        );
    }

    fn modes(tcp: Option<ModeKind>, udp: Option<ModeKind>) -> DebianDefaults {
        DebianDefaults {
            tcp_mode: tcp,
            udp_mode: udp,
        }
    }

    #[test]
    fn flags_round_trip() {
        for proto in [Proto::Tcp, Proto::Udp] {
            for m in ModeKind::ALL {
                assert_eq!(ModeKind::from_flag(proto, m.flag(proto)), Some(m));
            }
        }
        assert_eq!(ModeKind::Advanced.flag(Proto::Tcp), "atcp");
        assert_eq!(ModeKind::Stealth.flag(Proto::Udp), "sudp");
        assert_eq!(ModeKind::from_flag(Proto::Tcp, "udp"), None);
        assert_eq!(ModeKind::from_flag(Proto::Tcp, "ATCP"), None);
        assert_eq!(ModeKind::from_flag(Proto::Udp, "-audp"), None);
    }

    #[test]
    fn as_written_by_postinst() {
        let text = "# /etc/default/portsentry\n#\n# This file is read by \
                    /etc/init.d/portsentry. See the portsentry.8\n# manpage for details.\n#\n\
                    # The options in this file refer to commandline arguments (all in \
                    lowercase)\n# of portsentry. Use only one tcp and udp mode at a time.\n#\n\
                    TCP_MODE=\"tcp\"\nUDP_MODE=\"udp\"\n";
        assert_eq!(
            parse(text).unwrap(),
            modes(Some(ModeKind::Classic), Some(ModeKind::Classic))
        );
    }

    #[test]
    fn quoting_styles_and_layout() {
        assert_eq!(
            parse("TCP_MODE=atcp\r\nUDP_MODE='audp'  # tutorial says so").unwrap(),
            modes(Some(ModeKind::Advanced), Some(ModeKind::Advanced))
        );
        assert_eq!(
            parse("  export TCP_MODE=\"stcp\"\n").unwrap(),
            modes(Some(ModeKind::Stealth), None)
        );
        assert_eq!(parse("").unwrap(), DebianDefaults::default());
    }

    #[test]
    fn last_assignment_wins_like_a_shell() {
        assert_eq!(
            parse("TCP_MODE=\"tcp\"\n#TCP_MODE=\"stcp\"\nTCP_MODE=\"atcp\"\n").unwrap(),
            modes(Some(ModeKind::Advanced), None)
        );
    }

    #[test]
    fn other_shell_content_is_left_alone() {
        let text = "DAEMON_OPTS=\"-v\"\nTCP_MODE_OLD=\"bogus\"\nexportTCP_MODE=x\n\
                    if [ -f /x ]; then\n  :\nfi\nTCP_MODE\nUDP_MODE=\"sudp\"\n";
        assert_eq!(parse(text).unwrap(), modes(None, Some(ModeKind::Stealth)));
    }

    #[test]
    fn empty_and_unknown_modes_are_errors() {
        let text = "TCP_MODE=\"\"\nUDP_MODE=\"udp \"\nTCP_MODE=\"ATCP\"\nUDP_MODE=\"stcp\"\n\
                    TCP_MODE=$MODE\n";
        assert_eq!(
            parse(text).unwrap_err(),
            [
                "/etc/default/portsentry:1: TCP_MODE is empty (expected tcp, stcp or atcp)",
                "/etc/default/portsentry:2: UDP_MODE=\"udp \" is not a mode (expected udp, sudp \
                 or audp)",
                "/etc/default/portsentry:3: TCP_MODE=\"ATCP\" is not a mode (expected tcp, stcp \
                 or atcp)",
                "/etc/default/portsentry:4: UDP_MODE=\"stcp\" is not a mode (expected udp, sudp \
                 or audp)",
                "/etc/default/portsentry:5: TCP_MODE=\"$MODE\" is not a mode (expected tcp, stcp \
                 or atcp)",
            ]
        );
        assert_eq!(parse("UDP_MODE=").unwrap_err().len(), 1);
    }

    #[test]
    fn shell_syntax_errors() {
        let text = "TCP_MODE = \"atcp\"\nUDP_MODE= audp\nTCP_MODE=\"atcp\nUDP_MODE=audp sudp\n\
                    TCP_MODE=\"at\"cp\n";
        assert_eq!(
            parse(text).unwrap_err(),
            [
                "/etc/default/portsentry:1: spaces around `=`: a shell runs this as a command \
                 instead of setting TCP_MODE; write TCP_MODE=\"value\"",
                "/etc/default/portsentry:2: space after `=`: a shell sets UDP_MODE to nothing \
                 here; write UDP_MODE=\"value\"",
                "/etc/default/portsentry:3: the value of TCP_MODE has no closing `\"`",
                "/etc/default/portsentry:4: unexpected text after the value of UDP_MODE: `sudp` \
                 (one word, then an optional # comment)",
                "/etc/default/portsentry:5: unexpected text after the value of TCP_MODE: `cp` \
                 (one word, then an optional # comment)",
            ]
        );
    }

    /// What the settings layer does with the file: read lossily, then parse.
    fn load_debian_defaults(path: &Path) -> Result<DebianDefaults, String> {
        let text = super::super::read_text(path).map_err(|e| e.to_string())?;
        parse_debian_defaults(&text, path)
            .0
            .map_err(|e| super::super::join(&e))
    }

    #[test]
    fn the_file_is_read_and_labelled() {
        let f = TempFile::new("default-ok", b"TCP_MODE=\"atcp\"\nUDP_MODE=\"audp\"\n");
        assert_eq!(
            load_debian_defaults(&f.0).unwrap(),
            modes(Some(ModeKind::Advanced), Some(ModeKind::Advanced))
        );
        let f = TempFile::new("default-bad", b"# ok\nTCP_MODE=\"xtcp\"\n");
        assert_eq!(
            load_debian_defaults(&f.0).unwrap_err(),
            format!(
                "{}:2: TCP_MODE=\"xtcp\" is not a mode (expected tcp, stcp or atcp)",
                f.0.display()
            )
        );
    }
}
