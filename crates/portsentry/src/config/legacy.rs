//! `portsentry.conf` in the syntax of PortSentry 1.2 and 2.x: `KEY="value"` lines.
//!
//! Owns [`LegacyConfig`] (the validated values), the key table `KEYS` (each key's name,
//! doc and validating setter side by side) and the line parser. Where 1.2 and 2.x
//! disagree we take the rule that never misparses silently (see COMPAT.md), and where
//! 1.2 started on a file we start on it too, with 1.2's reading and a warning at
//! file:line that says what 1.2 did and what was probably meant:
//! - spaces/tabs around `=` are fine (both); `#` comments may be indented (1.2);
//! - the first occurrence of a key wins, as in 1.2, with a warning naming both lines;
//! - unknown keys are a warning (1.2 ignored them, 2.x refused to start); keys match
//!   exactly, never by prefix (2.x took `BLOCK=` as BLOCK_TCP);
//! - a known key without a quoted value is skipped, as 1.2 skipped it (later lines of
//!   the key included), with a warning; a value without its closing `"` runs to the end
//!   of the line and one with a non-printable character stops there, as in 1.2;
//! - an empty value is "unset", as in 1.2, with a warning (2.x refused to start);
//! - numbers are read with C's `atoi`, as 1.2 reads them ("1-100" is 1, "21,22" is 21,
//!   junk is 0), always with a warning saying so; out of range values are clamped, never
//!   wrapped (2.x stored 70000 as 4464); a bad entry of a port list is read as 1.2's
//!   atoi reads it when that is a port, and skipped otherwise;
//! - refused: a KILL_ROUTE or KILL_HOSTS_DENY without `$TARGET$` (1.2 ran it and logged
//!   the host "blocked" although nothing named it), and a relative HOSTS_DENY_FILE (our
//!   key, no 1.2 reading);
//! - a UTF-8 byte-order mark at the start is skipped with a warning (1.2 lost the key of
//!   line 1 to it), and a file that sets no key at all (empty, comments only, binary
//!   junk) is accepted, as 1.2 accepted it, with a warning that says so.

use std::path::{Path, PathBuf};

use portsentry_engine::ports::PortSet;

use super::Diagnostic;

/// Where 1.2 appends `KILL_HOSTS_DENY` lines (compile-time `WRAPPER_HOSTS_DENY`); used when
/// HOSTS_DENY_FILE is not set.
pub const WRAPPER_HOSTS_DENY: &str = crate::defaults::HOSTS_DENY_FILE;

/// What `BLOCK_TCP` / `BLOCK_UDP` ask for on an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlockMode {
    /// `0`: log only.
    #[default]
    LogOnly,
    /// `1`: run the blocking actions (native ban, KILL_HOSTS_DENY, KILL_ROUTE, KILL_RUN_CMD).
    Block,
    /// `2`: run KILL_RUN_CMD only.
    RunCmdOnly,
}

/// Validated values from a 1.2 or 2.x `portsentry.conf`.
///
/// A key absent from the file (or set to `""`) keeps its [`Default`] value, which is the
/// 1.2 built-in fallback. Whether a mode can run without a key (e.g. `-stcp` without
/// TCP_PORTS) is for the caller to decide: the reader does not know the mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyConfig {
    pub tcp_ports: Option<PortSet>,
    pub udp_ports: Option<PortSet>,
    /// `-atcp` watches ports 1..N-1. 0..=65536 (0 and 1 watch nothing, as in 1.2).
    pub advanced_ports_tcp: u32,
    /// `-audp` watches ports 1..N-1. 0..=65536.
    pub advanced_ports_udp: u32,
    pub advanced_exclude_tcp: PortSet,
    pub advanced_exclude_udp: PortSet,
    pub ignore_file: Option<PathBuf>,
    pub history_file: Option<PathBuf>,
    pub blocked_file: Option<PathBuf>,
    pub resolve_host: bool,
    pub block_tcp: BlockMode,
    pub block_udp: BlockMode,
    /// Contains `$TARGET$` (checked).
    pub kill_route: Option<String>,
    /// Contains `$TARGET$` (checked).
    pub kill_hosts_deny: Option<String>,
    pub kill_run_cmd: Option<String>,
    pub kill_run_cmd_first: bool,
    /// 0..=10000.
    pub scan_trigger: u32,
    pub port_banner: Option<String>,
    /// Our extension key HOSTS_DENY_FILE; `None` means [`WRAPPER_HOSTS_DENY`].
    pub hosts_deny_file: Option<PathBuf>,
}

impl Default for LegacyConfig {
    /// The 1.2 built-in fallbacks: nothing watched by the listed modes, advanced modes
    /// below 1024 with no exclusions, log only, trigger 0, no files, no commands.
    fn default() -> Self {
        LegacyConfig {
            tcp_ports: None,
            udp_ports: None,
            advanced_ports_tcp: 1024,
            advanced_ports_udp: 1024,
            advanced_exclude_tcp: PortSet::new(),
            advanced_exclude_udp: PortSet::new(),
            ignore_file: None,
            history_file: None,
            blocked_file: None,
            resolve_host: false,
            block_tcp: BlockMode::LogOnly,
            block_udp: BlockMode::LogOnly,
            kill_route: None,
            kill_hosts_deny: None,
            kill_run_cmd: None,
            kill_run_cmd_first: false,
            scan_trigger: 0,
            port_banner: None,
            hosts_deny_file: None,
        }
    }
}

impl LegacyConfig {
    /// The hosts.deny file KILL_HOSTS_DENY writes to.
    pub fn hosts_deny_path(&self) -> &Path {
        self.hosts_deny_file
            .as_deref()
            .unwrap_or(Path::new(WRAPPER_HOSTS_DENY))
    }
}

/// A setter validates a non-empty value and stores it; it may push warnings.
type Setter = fn(&mut LegacyConfig, &str, &mut Vec<String>) -> Result<(), String>;

/// One configuration key: its name, what it means, and how its value is validated.
struct Key {
    name: &'static str,
    doc: &'static str,
    set: Setter,
}

/// Every key we know: the 1.2 keys (all of which 2.x kept or dropped, never renamed) plus
/// our HOSTS_DENY_FILE.
const KEYS: &[Key] = &[
    Key {
        name: "TCP_PORTS",
        doc: "TCP ports for -tcp and -stcp: comma list with optional a-b ranges.",
        set: |c, v, w| {
            c.tcp_ports = Some(ports(v, true, w));
            Ok(())
        },
    },
    Key {
        name: "UDP_PORTS",
        doc: "UDP ports for -udp and -sudp: comma list with optional a-b ranges.",
        set: |c, v, w| {
            c.udp_ports = Some(ports(v, true, w));
            Ok(())
        },
    },
    Key {
        name: "ADVANCED_PORTS_TCP",
        doc: "-atcp watches every TCP port below this number (up to 65536; default 1024).",
        set: |c, v, w| {
            c.advanced_ports_tcp = advanced_ports(v, "TCP_PORTS with -stcp", w);
            Ok(())
        },
    },
    Key {
        name: "ADVANCED_PORTS_UDP",
        doc: "-audp watches every UDP port below this number (up to 65536; default 1024).",
        set: |c, v, w| {
            c.advanced_ports_udp = advanced_ports(v, "UDP_PORTS with -sudp", w);
            Ok(())
        },
    },
    Key {
        name: "ADVANCED_EXCLUDE_TCP",
        doc: "TCP ports -atcp never alarms on (besides listening services).",
        set: |c, v, w| {
            c.advanced_exclude_tcp = ports(v, false, w);
            Ok(())
        },
    },
    Key {
        name: "ADVANCED_EXCLUDE_UDP",
        doc: "UDP ports -audp never alarms on (besides listening services).",
        set: |c, v, w| {
            c.advanced_exclude_udp = ports(v, false, w);
            Ok(())
        },
    },
    Key {
        name: "IGNORE_FILE",
        doc: "Path of the never-block list (addresses and networks, one per line).",
        set: |c, v, w| {
            c.ignore_file = Some(path_1_2(v, w));
            Ok(())
        },
    },
    Key {
        name: "HISTORY_FILE",
        doc: "Path of the append-only history of acted-on hosts (1.2 line format).",
        set: |c, v, w| {
            c.history_file = Some(path_1_2(v, w));
            Ok(())
        },
    },
    Key {
        name: "BLOCKED_FILE",
        doc: "Path of the 1.2 per-session blocked list (`.<mode>` is appended).",
        set: |c, v, w| {
            c.blocked_file = Some(path_1_2(v, w));
            Ok(())
        },
    },
    Key {
        name: "RESOLVE_HOST",
        doc: "1 looks up host names for logs and files; 0 does not (default).",
        set: |c, v, w| {
            c.resolve_host = flag(v, w);
            Ok(())
        },
    },
    Key {
        name: "BLOCK_TCP",
        doc: "On a TCP alarm: 0 log only (default), 1 block, 2 run KILL_RUN_CMD only.",
        set: |c, v, w| {
            c.block_tcp = block(v, w);
            Ok(())
        },
    },
    Key {
        name: "BLOCK_UDP",
        doc: "On a UDP alarm: 0 log only (default), 1 block, 2 run KILL_RUN_CMD only.",
        set: |c, v, w| {
            c.block_udp = block(v, w);
            Ok(())
        },
    },
    Key {
        name: "KILL_ROUTE",
        doc: "Command that blocks a host; must contain $TARGET$ ($PORT$, $MODE$ optional).",
        set: |c, v, w| {
            c.kill_route = Some(command(v, true, w)?);
            Ok(())
        },
    },
    Key {
        name: "KILL_HOSTS_DENY",
        doc: "Line appended to hosts.deny; must contain $TARGET$.",
        set: |c, v, w| {
            c.kill_hosts_deny = Some(command(v, true, w)?);
            Ok(())
        },
    },
    Key {
        name: "KILL_RUN_CMD",
        doc: "Command run on an alarm; $TARGET$, $PORT$ and $MODE$ are optional.",
        set: |c, v, w| {
            c.kill_run_cmd = Some(command(v, false, w)?);
            Ok(())
        },
    },
    Key {
        name: "KILL_RUN_CMD_FIRST",
        doc: "1 runs KILL_RUN_CMD before the blocks, 0 after them (default).",
        set: |c, v, w| {
            c.kill_run_cmd_first = flag(v, w);
            Ok(())
        },
    },
    Key {
        name: "SCAN_TRIGGER",
        doc: "Hits from one host allowed before the alarm (0-10000; 0 reacts at once).",
        set: |c, v, w| {
            c.scan_trigger = scan_trigger(v, w);
            Ok(())
        },
    },
    Key {
        name: "PORT_BANNER",
        doc: "Text sent to a client that connects in -tcp/-udp mode.",
        set: |c, v, _| {
            c.port_banner = Some(v.to_string());
            Ok(())
        },
    },
    Key {
        name: "HOSTS_DENY_FILE",
        doc: "Where KILL_HOSTS_DENY writes (extension; default /etc/hosts.deny).",
        set: |c, v, _| {
            c.hosts_deny_file = Some(path(v)?);
            Ok(())
        },
    },
];

/// Every known key with its one-line doc (the tests check the man page against it).
pub fn legacy_keys() -> impl Iterator<Item = (&'static str, &'static str)> {
    KEYS.iter().map(|k| (k.name, k.doc))
}

/// C's `atoi`, which 1.2 applies to every number: leading white space, an optional sign,
/// then the leading digits; 0 when there are none. Saturates where C's overflows.
fn atoi(v: &str) -> i64 {
    let s = v.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '\u{b}');
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let n = s.bytes().take_while(u8::is_ascii_digit).fold(0i64, |n, d| {
        n.saturating_mul(10).saturating_add(i64::from(d - b'0'))
    });
    if negative { -n } else { n }
}

/// Whether a value is a plain number, which needs no word about how it was read.
fn is_plain_number(v: &str) -> bool {
    let v = v.trim();
    !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())
}

/// A port list: comma tokens, each a port or an `a-b` range (2.x). A bad token is read
/// as 1.2's `atoi` reads it when that names a port ("5-3" is 5, "80x" is 80) and skipped
/// otherwise (port 0, beyond 65535: never wrapped), with a warning for each; empty
/// entries are skipped as 1.2's `strtok` skipped them. `listed` lists (TCP_PORTS,
/// UDP_PORTS) warn beyond 1.2's 64 entries.
fn ports(v: &str, listed: bool, warnings: &mut Vec<String>) -> PortSet {
    const MAXSOCKS: usize = 64;
    let mut set = PortSet::new();
    let mut entries = 0;
    for raw in v.split(',') {
        let token = raw.trim_matches(is_blank);
        if token.is_empty() {
            warnings.push("an empty entry is skipped, as PortSentry 1.2 skips it".into());
            continue;
        }
        entries += 1;
        match PortSet::parse_list(token) {
            Ok(one) => one.ranges().for_each(|(lo, hi)| set.insert_range(lo, hi)),
            Err(_) => {
                let n = atoi(token);
                if (1..=65535).contains(&n) {
                    set.insert(n as u16);
                    let hint = if token.contains('-') {
                        "; a range is written low-high"
                    } else {
                        ""
                    };
                    warnings.push(format!(
                        "entry `{token}` read as port {n}, as PortSentry 1.2 does (it reads \
                         the leading digits{hint})"
                    ));
                } else if n > 65535 {
                    warnings.push(format!(
                        "entry `{token}` skipped: ports end at 65535 (PortSentry 1.2 read it \
                         as {n}, which its -tcp mode wrapped to port {})",
                        n % 65536
                    ));
                } else {
                    warnings.push(format!(
                        "entry `{token}` skipped: PortSentry 1.2 read it as port {n}, which \
                         watches nothing"
                    ));
                }
            }
        }
    }
    if listed && entries > MAXSOCKS {
        warnings.push(format!(
            "PortSentry 1.2 watched only the first {MAXSOCKS} entries of this list; all \
             {entries} are watched here"
        ));
    }
    set
}

/// ADVANCED_PORTS_x, read with `atoi` as 1.2 does and clamped to 0..=65536 (every port
/// is below 65536; nothing is below 0 or 1). `list_hint` says how to watch a list.
fn advanced_ports(v: &str, list_hint: &str, warnings: &mut Vec<String>) -> u32 {
    let n = atoi(v);
    let read = n.clamp(0, 65536) as u32;
    if is_plain_number(v) && (1..=65536).contains(&n) {
        return read;
    }
    let consequence = if n > 65536 {
        Some("every port is below it, so every port is watched")
    } else if n <= 1 {
        Some("no port is below it, so this mode watches no port")
    } else {
        None
    };
    let hint = if v.contains(',') {
        format!(
            "this key is the highest port watched, not a list (use {list_hint} to watch a list)"
        )
    } else if v.trim_start().get(1..).is_some_and(|t| t.contains('-')) {
        format!(
            "this key is the highest port watched, not a range (use {list_hint} to watch a range)"
        )
    } else if n > 65536 {
        "65536 says the same".to_string()
    } else if consequence.is_some() {
        "1024, the default, watches the privileged ports".to_string()
    } else {
        "it reads only the leading digits, and ports below that number are watched".to_string()
    };
    let why = match consequence {
        Some(c) => format!("{c}; {hint}"),
        None => hint,
    };
    warnings.push(format!("read as {n}, as PortSentry 1.2 does: {why}"));
    read
}

/// The most SCAN_TRIGGER we count; 1.2's state engine held only 50 hits.
const MAX_SCAN_TRIGGER: i64 = 10000;

/// SCAN_TRIGGER, read with `atoi` as 1.2 does; below 0 is 0 (1.2 reacted at the first
/// hit), above [`MAX_SCAN_TRIGGER`] is clamped (never wrapped, as 2.x wrapped it).
fn scan_trigger(v: &str, warnings: &mut Vec<String>) -> u32 {
    let n = atoi(v);
    let read = n.clamp(0, MAX_SCAN_TRIGGER) as u32;
    if is_plain_number(v) && n <= MAX_SCAN_TRIGGER {
        return read;
    }
    let allowed = match read {
        0 => "the alarm comes at the first hit".to_string(),
        1 => "1 hit is allowed before the alarm".to_string(),
        n => format!("{n} hits are allowed before the alarm"),
    };
    let why = if n > MAX_SCAN_TRIGGER {
        format!(
            "its state engine holds 50 hits, so it never counted that far; taken here as \
             {MAX_SCAN_TRIGGER}, the most counted (never wrapped, as 2.x wrapped 70000 to 4464)"
        )
    } else if n < 0 {
        "a trigger below 0 reacts at the first hit, as 0 does".to_string()
    } else if v.trim_start().get(1..).is_some_and(|t| t.contains('-')) {
        format!("this key is one hit count, not a range ({allowed})")
    } else {
        format!("it reads only the leading digits ({allowed})")
    };
    warnings.push(format!("read as {n}, as PortSentry 1.2 does: {why}"));
    read
}

/// RESOLVE_HOST and KILL_RUN_CMD_FIRST: `atoi`, and anything but 0 is on, as in 1.2.
fn flag(v: &str, warnings: &mut Vec<String>) -> bool {
    let n = atoi(v);
    if !matches!(v.trim(), "0" | "1") {
        let (read, meant) = if n == 0 {
            ("off", "write 1 to turn it on")
        } else {
            ("on", "write 1 for on, 0 for off")
        };
        warnings.push(format!(
            "read as {n}, as PortSentry 1.2 does, which is {read} ({meant})"
        ));
    }
    n != 0
}

/// BLOCK_TCP / BLOCK_UDP: `atoi`, then 1 blocks, 2 runs KILL_RUN_CMD only and any other
/// number only logs, as in 1.2.
fn block(v: &str, warnings: &mut Vec<String>) -> BlockMode {
    let n = atoi(v);
    let (mode, what) = match n {
        1 => (BlockMode::Block, "block"),
        2 => (BlockMode::RunCmdOnly, "run KILL_RUN_CMD only"),
        _ => (BlockMode::LogOnly, "log only"),
    };
    if !matches!(v.trim(), "0" | "1" | "2") {
        warnings.push(format!(
            "read as {n}, as PortSentry 1.2 does, which means {what} (0 log only, 1 block, \
             2 run KILL_RUN_CMD only)"
        ));
    }
    mode
}

/// An absolute path (our HOSTS_DENY_FILE): there is no 1.2 reading to follow.
fn path(v: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(v.trim());
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(
            "must be an absolute path (HOSTS_DENY_FILE is ours: PortSentry 1.2 had no such key)"
                .into(),
        )
    }
}

/// A 1.2 file path. 1.2 opened its files after becoming a daemon, from `/`, and so do
/// we: a relative path is read from `/`, with a warning, since it rarely means that.
fn path_1_2(v: &str, warnings: &mut Vec<String>) -> PathBuf {
    let p = PathBuf::from(v.trim());
    if p.is_absolute() {
        return p;
    }
    let read = Path::new("/").join(&p);
    warnings.push(format!(
        "read as {}, as PortSentry 1.2 does (it opens its files from /, not from the \
         config's directory): write the full path meant",
        read.display()
    ));
    read
}

/// Macros the responders substitute.
const MACROS: &[&str] = &["$TARGET$", "$PORT$", "$MODE$"];

/// A command or hosts.deny template. Unknown `$NAME$` macros are passed through verbatim
/// (as 1.2 does) but warned about, since a typo such as `$TAGRET$` would block nothing.
fn command(v: &str, needs_target: bool, warnings: &mut Vec<String>) -> Result<String, String> {
    let v = v.trim();
    if needs_target && !v.contains("$TARGET$") {
        return Err(
            "must contain $TARGET$ (the address to block); refused although \
                    PortSentry 1.2 ran it: the command names no host, yet 1.2 logged each \
                    host as blocked"
                .into(),
        );
    }
    let mut rest = v;
    while let Some(start) = rest.find('$') {
        let after = &rest[start + 1..];
        let Some(len) = after.find('$') else { break };
        let name = &after[..len];
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
            let mac = &rest[start..start + len + 2];
            if !MACROS.contains(&mac) {
                warnings.push(format!(
                    "unknown macro {mac} is left as is (known: $TARGET$, $PORT$, $MODE$)"
                ));
            }
            rest = &after[len + 1..];
        } else {
            // The closing `$` may open the next macro.
            rest = &after[len..];
        }
    }
    Ok(v.to_string())
}

/// Why a character may not appear in a value, if it may not.
fn bad_char(c: char) -> Option<String> {
    if c == '\u{FFFD}' {
        Some("contains bytes that are not valid UTF-8".into())
    } else if c.is_control() {
        Some(format!(
            "contains the non-printable character U+{:04X}",
            u32::from(c)
        ))
    } else {
        None
    }
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Parses the text of a `portsentry.conf`; `file` is only used to label diagnostics.
///
/// Returns `(result, warnings)`: the validated config or every error found, and the
/// warnings, which are produced either way (unknown keys, duplicates, empty values…).
/// See the module doc for the syntax rules.
pub fn parse_legacy(
    text: &str,
    file: &Path,
) -> (Result<LegacyConfig, Vec<Diagnostic>>, Vec<Diagnostic>) {
    let mut cfg = LegacyConfig::default();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    // Line of each key's first occurrence, indexed like KEYS.
    let mut first_line = [0usize; KEYS.len()];
    let text = super::skip_bom(
        text,
        file,
        "PortSentry 1.2 would have ignored the key on this line",
        Some(&mut warnings),
    );

    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let mut error = |msg: String| errors.push(Diagnostic::new(file, line_no, msg));
        let mut warn = |msg: String| warnings.push(Diagnostic::new(file, line_no, msg));

        let line = raw.trim_matches(|c| is_blank(c) || c == '\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key_len = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(line.len());
        let (key, rest) = line.split_at(key_len);
        let Some(k) = KEYS.iter().position(|k| k.name == key) else {
            warn(unknown_key(key));
            continue;
        };
        let spec = &KEYS[k];
        let value_part = match rest.trim_start_matches(is_blank).strip_prefix('=') {
            Some(v) => v,
            // 1.2 matched a key followed by `=` or a space, then took the first `"`.
            None if rest.starts_with(' ') && rest.contains('"') => {
                warn(format!(
                    "no `=` after {key}; read as {key}=\"value\", as PortSentry 1.2 does"
                ));
                rest
            }
            None => {
                warn(format!(
                    "no `=` after {key}, ignored as PortSentry 1.2 ignores it: write \
                     {key}=\"value\""
                ));
                continue;
            }
        };
        if first_line[k] != 0 {
            warn(format!(
                "{key} is set again here; the first setting, on line {}, is used \
                 (PortSentry 1.2 rule; 2.x used the last)",
                first_line[k]
            ));
            continue;
        }
        first_line[k] = line_no;

        let Some(open) = value_part.find('"') else {
            warn(format!(
                "the value of {key} is not in double quotes; skipped, as PortSentry 1.2 \
                 skips it (with any later {key} line), so {key} is unset: write \
                 {key}=\"value\""
            ));
            continue;
        };
        let before = value_part[..open].trim_matches(is_blank);
        if !before.is_empty() {
            warn(format!(
                "text before the opening quote of {key} is ignored, as PortSentry 1.2 \
                 ignores it: `{before}`"
            ));
        }
        let quoted = &value_part[open + 1..];
        let (value, after) = match quoted.split_once('"') {
            Some(split) => split,
            None => {
                warn(format!(
                    "the value of {key} has no closing `\"`; read to the end of the line, \
                     as PortSentry 1.2 does"
                ));
                (quoted.trim_end_matches(is_blank), "")
            }
        };
        let after = after.trim_start_matches(is_blank);
        if !after.is_empty() && !after.starts_with('#') {
            warn(format!(
                "text after the closing quote of {key} is ignored: `{after}`"
            ));
        }
        let mut value = value;
        if let Some((at, why)) = value
            .char_indices()
            .find_map(|(i, c)| Some((i, bad_char(c)?)))
        {
            value = &value[..at];
            warn(format!(
                "the value of {key} {why}; read up to it, as PortSentry 1.2 does: \
                 {key}=\"{value}\""
            ));
        }
        if value.trim().is_empty() {
            warn(format!("{key} is empty and is treated as unset"));
            continue;
        }
        let mut notes = Vec::new();
        match (spec.set)(&mut cfg, value, &mut notes) {
            Ok(()) => notes.into_iter().for_each(|n| {
                let sep = if n.starts_with("read as") { " " } else { ": " };
                warn(format!("{key}=\"{value}\"{sep}{n}"))
            }),
            Err(reason) => error(format!("{key}=\"{value}\": {reason}")),
        }
    }

    // A setting that can do nothing is legal but almost certainly not what was meant.
    for (name, mode) in [("BLOCK_TCP", cfg.block_tcp), ("BLOCK_UDP", cfg.block_udp)] {
        if mode == BlockMode::RunCmdOnly && cfg.kill_run_cmd.is_none() {
            let line = KEYS
                .iter()
                .position(|k| k.name == name)
                .map_or(0, |k| first_line[k]);
            warnings.push(Diagnostic::new(
                file,
                line,
                format!(
                    "{name}=\"2\" runs only KILL_RUN_CMD, which is not set: \
                     alarms will only be logged"
                ),
            ));
        }
    }

    // 1.2 ran on its fallbacks without a word; a file of no keys is usually the wrong
    // file (or an empty one), so say what runs. Whether a mode can run without its port
    // list is still for the caller to decide.
    if errors.is_empty() && first_line.iter().all(|&line| line == 0) {
        warnings.push(Diagnostic::new(
            file,
            0,
            "sets no key; running on built-in defaults (PortSentry 1.2's fallback for every \
             key: BLOCK_TCP and BLOCK_UDP are 0, so alarms are only logged)",
        ));
    }

    let result = if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    };
    (result, warnings)
}

/// The warning for a line whose key we do not know, with a hint when it looks like a
/// known key written in the wrong case or cut short (2.x matched keys by prefix).
fn unknown_key(key: &str) -> String {
    if key.is_empty() {
        return "not a KEY=\"value\" line; ignored".into();
    }
    if let Some(k) = KEYS.iter().find(|k| k.name.eq_ignore_ascii_case(key)) {
        return format!(
            "unknown key {key}, ignored (keys are case-sensitive: did you mean {}?)",
            k.name
        );
    }
    let prefixed: Vec<&str> = KEYS
        .iter()
        .map(|k| k.name)
        .filter(|n| {
            n.strip_prefix(key)
                .is_some_and(|tail| tail.starts_with('_'))
        })
        .collect();
    if !prefixed.is_empty() {
        return format!(
            "unknown key {key}, ignored (keys must be written in full: did you mean {}?)",
            prefixed.join(" or ")
        );
    }
    format!("unknown key {key}, ignored")
}

#[cfg(test)]
mod tests {
    use super::super::tests::TempFile;
    use super::*;

    const F: &str = "portsentry.conf";

    fn parse(text: &str) -> (Result<LegacyConfig, Vec<Diagnostic>>, Vec<Diagnostic>) {
        parse_legacy(text, Path::new(F))
    }

    /// Parses text that must be valid; returns the config and the warnings as strings.
    fn ok(text: &str) -> (LegacyConfig, Vec<String>) {
        let (res, warnings) = parse(text);
        let cfg = res.unwrap_or_else(|e| panic!("unexpected errors: {e:#?}"));
        (cfg, warnings.iter().map(ToString::to_string).collect())
    }

    /// Parses text that must fail; returns the errors as strings.
    fn errs(text: &str) -> Vec<String> {
        match parse(text).0 {
            Ok(cfg) => panic!("expected errors, got {cfg:#?}"),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    fn set(ports: &[u16]) -> PortSet {
        ports.iter().copied().collect()
    }

    fn fixture(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    const TCP_1_2: &[u16] = &[
        1, 11, 15, 79, 111, 119, 143, 540, 635, 1080, 1524, 2000, 5742, 6667, 12345, 12346, 20034,
        27665, 31337, 32771, 32772, 32773, 32774, 40421, 49724, 54320,
    ];
    const UDP_1_2: &[u16] = &[
        1, 7, 9, 69, 161, 162, 513, 635, 640, 641, 700, 37444, 34555, 31335, 32770, 32771, 32772,
        32773, 32774, 31337, 54321,
    ];

    #[test]
    fn defaults_are_the_1_2_fallbacks() {
        let d = LegacyConfig::default();
        assert_eq!(d.advanced_ports_tcp, 1024);
        assert_eq!(d.advanced_ports_udp, 1024);
        assert!(d.advanced_exclude_tcp.is_empty() && d.advanced_exclude_udp.is_empty());
        assert_eq!(d.block_tcp, BlockMode::LogOnly);
        assert_eq!(d.block_udp, BlockMode::LogOnly);
        assert_eq!(d.scan_trigger, 0);
        assert!(!d.resolve_host && !d.kill_run_cmd_first);
        assert!(d.tcp_ports.is_none() && d.ignore_file.is_none() && d.kill_route.is_none());
        assert_eq!(d.hosts_deny_path(), Path::new("/etc/hosts.deny"));
        let (cfg, _) = ok("");
        assert_eq!(cfg, d);
    }

    const NO_KEY: &str = "portsentry.conf: sets no key; running on built-in defaults \
                          (PortSentry 1.2's fallback for every key: BLOCK_TCP and BLOCK_UDP \
                          are 0, so alarms are only logged)";

    #[test]
    fn a_file_that_sets_no_key_warns_at_file_level() {
        for text in ["", "\n\n", "# only\n   # comments\n", "\u{FEFF}"] {
            let (cfg, warnings) = ok(text);
            assert_eq!(cfg, LegacyConfig::default(), "{text:?}");
            assert_eq!(
                warnings.last().map(String::as_str),
                Some(NO_KEY),
                "{text:?}"
            );
        }
        // Binary junk, decoded lossily: every line is an unknown one, and then the file.
        let junk =
            super::super::decode_lossy(b"\x7fELF\x02\x01\x01\0\0\n\xff\xfe=\"\x01\"\n".to_vec());
        let (cfg, warnings) = ok(&junk);
        assert_eq!(cfg, LegacyConfig::default());
        assert_eq!(warnings.len(), 3, "{warnings:#?}");
        assert_eq!(warnings[2], NO_KEY);
        // Unknown keys only: still no key of ours.
        assert_eq!(ok("FOO=\"1\"\n").1.last().unwrap(), NO_KEY);
        // One key is enough; a key given empty was given.
        assert!(ok("SCAN_TRIGGER=\"1\"\n").1.is_empty());
        assert!(!ok("KILL_ROUTE=\"\"\n").1.iter().any(|w| w == NO_KEY));
        // With errors the file is refused anyway, without this warning.
        let (res, warnings) = parse("KILL_ROUTE=\"route\"\n");
        assert!(res.is_err() && warnings.is_empty());
    }

    #[test]
    fn byte_order_mark_is_skipped_and_the_first_key_kept() {
        let (cfg, warnings) = ok("\u{FEFF}BLOCK_TCP=\"1\"\nBLOCK_UDP=\"1\"\n");
        assert_eq!(cfg.block_tcp, BlockMode::Block, "the key on line 1 is read");
        assert_eq!(cfg.block_udp, BlockMode::Block);
        assert_eq!(
            warnings,
            [
                "portsentry.conf:1: the file starts with a UTF-8 byte-order mark; it is skipped \
                 and line 1 is read as written (PortSentry 1.2 would have ignored the key on \
                 this line)"
            ]
        );
        // Line numbers are those of the file.
        let (_, warnings) = ok("\u{FEFF}# c\nFOO=\"1\"\nSCAN_TRIGGER=\"1\"\n");
        assert_eq!(warnings[1], "portsentry.conf:2: unknown key FOO, ignored");
        // A mark anywhere else is not skipped: it is not part of a key.
        let (_, warnings) = ok("SCAN_TRIGGER=\"1\"\n\u{FEFF}BLOCK_TCP=\"1\"\n");
        assert_eq!(
            warnings,
            ["portsentry.conf:2: not a KEY=\"value\" line; ignored"]
        );
    }

    #[test]
    fn upstream_1_2_conf() {
        let (cfg, warnings) = ok(&fixture("portsentry-1.2.conf"));
        assert!(warnings.is_empty(), "{warnings:#?}");
        let psionic = Path::new("/usr/local/psionic/portsentry");
        let expected = LegacyConfig {
            tcp_ports: Some(set(TCP_1_2)),
            udp_ports: Some(set(UDP_1_2)),
            advanced_ports_tcp: 1024,
            advanced_ports_udp: 1024,
            advanced_exclude_tcp: set(&[113, 139]),
            advanced_exclude_udp: set(&[520, 138, 137, 67]),
            ignore_file: Some(psionic.join("portsentry.ignore")),
            history_file: Some(psionic.join("portsentry.history")),
            blocked_file: Some(psionic.join("portsentry.blocked")),
            resolve_host: true,
            block_tcp: BlockMode::Block,
            block_udp: BlockMode::Block,
            kill_route: None,
            kill_hosts_deny: Some("ALL: $TARGET$".into()),
            kill_run_cmd: None,
            kill_run_cmd_first: false,
            scan_trigger: 0,
            port_banner: None,
            hosts_deny_file: None,
        };
        assert_eq!(cfg, expected);
        assert_eq!(cfg.tcp_ports.as_ref().unwrap().len(), 26);
        assert_eq!(cfg.udp_ports.as_ref().unwrap().len(), 21);
    }

    #[test]
    fn debian_conf() {
        let text = fixture("portsentry-debian.conf");
        // 2.x stops at line 61 of this file; it must be ADVANCED_PORTS_TCP, as reported.
        assert!(
            text.lines()
                .nth(60)
                .unwrap()
                .starts_with("ADVANCED_PORTS_TCP=")
        );
        let (cfg, warnings) = ok(&text);
        assert!(warnings.is_empty(), "{warnings:#?}");
        let expected = LegacyConfig {
            tcp_ports: Some(set(TCP_1_2)),
            udp_ports: Some(set(UDP_1_2)),
            advanced_ports_tcp: 1024,
            advanced_ports_udp: 1024,
            advanced_exclude_tcp: set(&[113, 139]),
            advanced_exclude_udp: set(&[520, 138, 137, 67]),
            ignore_file: Some("/etc/portsentry/portsentry.ignore".into()),
            history_file: Some("/var/lib/portsentry/portsentry.history".into()),
            blocked_file: Some("/var/lib/portsentry/portsentry.blocked".into()),
            resolve_host: false,
            block_tcp: BlockMode::LogOnly,
            block_udp: BlockMode::LogOnly,
            kill_route: Some("/sbin/route add -host $TARGET$ reject".into()),
            kill_hosts_deny: Some("ALL: $TARGET$ : DENY".into()),
            kill_run_cmd: None,
            kill_run_cmd_first: false,
            scan_trigger: 0,
            port_banner: None,
            hosts_deny_file: None,
        };
        assert_eq!(cfg, expected);
    }

    #[test]
    fn debian_conf_with_crlf_and_no_final_newline() {
        let text = fixture("portsentry-debian.conf").replace('\n', "\r\n");
        let text = text.trim_end();
        let (cfg, warnings) = ok(text);
        assert!(warnings.is_empty());
        assert_eq!(cfg.kill_hosts_deny.as_deref(), Some("ALL: $TARGET$ : DENY"));
    }

    #[test]
    fn two_x_example_syntax() {
        let (cfg, warnings) = ok(concat!(
            "# 2.x example\n",
            "TCP_PORTS = \"1,7,9,11,13,15,17,19,20,21,70,79,111,113,119,389,512-515,540,",
            "543-544,873,989,990,992,1080\"\n",
            "UDP_PORTS\t=\t\"7,9,13,19,111,389,513,517-518\"\n",
            "IGNORE_FILE = \"/etc/portsentry/portsentry.ignore\"\n",
            "HISTORY_FILE = \"/var/log/portsentry.log\"\n",
            "BLOCKED_FILE = \"/tmp/portsentry.blocked\"\n",
            "KILL_HOSTS_DENY = \"ALL: $TARGET$\"\n",
            "KILL_RUN_CMD = \"/some/path/here/script $TARGET$ $PORT$\"\n",
        ));
        assert!(warnings.is_empty());
        let tcp = cfg.tcp_ports.unwrap();
        assert!(tcp.contains(514) && tcp.contains(544) && !tcp.contains(516));
        assert_eq!(tcp.len(), 28);
        assert_eq!(cfg.udp_ports.unwrap().len(), 9);
        assert_eq!(
            cfg.kill_run_cmd.as_deref(),
            Some("/some/path/here/script $TARGET$ $PORT$")
        );
    }

    #[test]
    fn every_value_kind() {
        let (cfg, warnings) = ok(concat!(
            "ADVANCED_PORTS_TCP=\"65536\"\n",
            "ADVANCED_PORTS_UDP=\"1\"\n",
            "RESOLVE_HOST=\"1\"\n",
            "BLOCK_TCP=\"2\"\n",
            "BLOCK_UDP=\"1\"\n",
            "KILL_RUN_CMD=\"/usr/local/bin/page $TARGET$ $PORT$ $MODE$\"\n",
            "KILL_RUN_CMD_FIRST=\"1\"\n",
            "SCAN_TRIGGER=\"10000\"\n",
            "PORT_BANNER=\"  ** GO AWAY **  \"\n",
            "HOSTS_DENY_FILE=\"/etc/hosts.deny.portsentry\"\n",
        ));
        assert!(warnings.is_empty(), "{warnings:#?}");
        assert_eq!(cfg.advanced_ports_tcp, 65536);
        assert_eq!(cfg.advanced_ports_udp, 1);
        assert!(cfg.resolve_host && cfg.kill_run_cmd_first);
        assert_eq!(cfg.block_tcp, BlockMode::RunCmdOnly);
        assert_eq!(cfg.block_udp, BlockMode::Block);
        assert_eq!(cfg.scan_trigger, 10000);
        // The banner is sent as written, spaces included.
        assert_eq!(cfg.port_banner.as_deref(), Some("  ** GO AWAY **  "));
        assert_eq!(
            cfg.hosts_deny_path(),
            Path::new("/etc/hosts.deny.portsentry")
        );
    }

    #[test]
    fn layout_tolerated() {
        let (cfg, warnings) = ok(concat!(
            "   # indented comment\n",
            "\t\n",
            "  SCAN_TRIGGER \t= \"3\"   # trailing comment\n",
            "BLOCK_TCP=\"1\"# tight comment\n",
            "RESOLVE_HOST = \" 1 \"\r\n",
            "TCP_PORTS=\"1, 2 ,3-4\""
        ));
        assert!(warnings.is_empty(), "{warnings:#?}");
        assert_eq!(cfg.scan_trigger, 3);
        assert_eq!(cfg.block_tcp, BlockMode::Block);
        assert!(cfg.resolve_host);
        assert_eq!(cfg.tcp_ports, Some(set(&[1, 2, 3, 4])));
    }

    #[test]
    fn text_after_closing_quote_is_ignored_with_warning() {
        let (cfg, warnings) = ok("KILL_HOSTS_DENY=\"ALL: $TARGET$\" junk\n");
        assert_eq!(cfg.kill_hosts_deny.as_deref(), Some("ALL: $TARGET$"));
        assert_eq!(
            warnings,
            [
                "portsentry.conf:1: text after the closing quote of KILL_HOSTS_DENY is ignored: `junk`"
            ]
        );
    }

    #[test]
    fn first_occurrence_wins_with_warning() {
        let (cfg, warnings) = ok("BLOCK_TCP=\"1\"\n\nBLOCK_TCP=\"0\"\nBLOCK_TCP=\"bogus\"\n");
        assert_eq!(cfg.block_tcp, BlockMode::Block);
        assert_eq!(
            warnings,
            [
                "portsentry.conf:3: BLOCK_TCP is set again here; the first setting, on line 1, \
                 is used (PortSentry 1.2 rule; 2.x used the last)",
                "portsentry.conf:4: BLOCK_TCP is set again here; the first setting, on line 1, \
                 is used (PortSentry 1.2 rule; 2.x used the last)",
            ]
        );
    }

    #[test]
    fn debian_uncommented_anal_lists_first_wins() {
        // Admins uncomment the "really anal" lists above the default ones; 1.2 used them.
        let (cfg, warnings) = ok(concat!("TCP_PORTS=\"1,7,9\"\n", "TCP_PORTS=\"1,11,15\"\n",));
        assert_eq!(cfg.tcp_ports, Some(set(&[1, 7, 9])));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("portsentry.conf:2: TCP_PORTS is set again"));
    }

    #[test]
    fn empty_value_is_unset_with_warning() {
        let (cfg, warnings) =
            ok("KILL_ROUTE=\"\"\nADVANCED_PORTS_TCP=\"  \"\nKILL_ROUTE=\"x $TARGET$\"\n");
        assert_eq!(cfg.kill_route, None, "first (empty) occurrence wins");
        assert_eq!(cfg.advanced_ports_tcp, 1024);
        assert_eq!(
            warnings,
            [
                "portsentry.conf:1: KILL_ROUTE is empty and is treated as unset",
                "portsentry.conf:2: ADVANCED_PORTS_TCP is empty and is treated as unset",
                "portsentry.conf:3: KILL_ROUTE is set again here; the first setting, on line 1, \
                 is used (PortSentry 1.2 rule; 2.x used the last)",
            ]
        );
    }

    #[test]
    fn unknown_keys_warn_and_never_match_by_prefix() {
        let (cfg, warnings) = ok(concat!(
            "BLOCK=\"1\"\n",
            "KILL=\"/sbin/route add $TARGET$\"\n",
            "block_tcp=\"1\"\n",
            "SYSLOG_FACILITY=\"LOG_DAEMON\"\n",
            "TCP_PORTS_EXTRA=\"1\"\n",
            "\"1,2,3\"\n",
        ));
        assert_eq!(cfg, LegacyConfig::default());
        assert_eq!(
            warnings,
            [
                "portsentry.conf:1: unknown key BLOCK, ignored (keys must be written in full: \
                 did you mean BLOCK_TCP or BLOCK_UDP?)",
                "portsentry.conf:2: unknown key KILL, ignored (keys must be written in full: \
                 did you mean KILL_ROUTE or KILL_HOSTS_DENY or KILL_RUN_CMD or KILL_RUN_CMD_FIRST?)",
                "portsentry.conf:3: unknown key block_tcp, ignored (keys are case-sensitive: \
                 did you mean BLOCK_TCP?)",
                "portsentry.conf:4: unknown key SYSLOG_FACILITY, ignored",
                "portsentry.conf:5: unknown key TCP_PORTS_EXTRA, ignored",
                "portsentry.conf:6: not a KEY=\"value\" line; ignored",
                NO_KEY,
            ]
        );
    }

    #[test]
    fn syntax_1_2_read_is_read_as_1_2_read_it() {
        let (cfg, warnings) = ok(concat!(
            "SCAN_TRIGGER=0\n",
            "TCP_PORTS \"1\"\n",
            "BLOCK_TCP=\"1\n",
            "RESOLVE_HOST='1'\n",
            "UDP_PORTS\t\"7\"\n",
            "SCAN_TRIGGER=\"5\"\n",
            "KILL_HOSTS_DENY= ALL \"ALL: $TARGET$\"\n",
        ));
        assert_eq!(cfg.tcp_ports, Some(set(&[1])), "a space stands for `=`");
        assert_eq!(
            cfg.block_tcp,
            BlockMode::Block,
            "read to the end of the line"
        );
        assert!(!cfg.resolve_host);
        assert_eq!(cfg.udp_ports, None, "a tab after the key: 1.2 saw no key");
        assert_eq!(cfg.scan_trigger, 0, "the unquoted line 1 skipped the key");
        assert_eq!(cfg.kill_hosts_deny.as_deref(), Some("ALL: $TARGET$"));
        assert_eq!(
            warnings,
            [
                "portsentry.conf:1: the value of SCAN_TRIGGER is not in double quotes; \
                 skipped, as PortSentry 1.2 skips it (with any later SCAN_TRIGGER line), so \
                 SCAN_TRIGGER is unset: write SCAN_TRIGGER=\"value\"",
                "portsentry.conf:2: no `=` after TCP_PORTS; read as TCP_PORTS=\"value\", as \
                 PortSentry 1.2 does",
                "portsentry.conf:3: the value of BLOCK_TCP has no closing `\"`; read to the end \
                 of the line, as PortSentry 1.2 does",
                "portsentry.conf:4: the value of RESOLVE_HOST is not in double quotes; \
                 skipped, as PortSentry 1.2 skips it (with any later RESOLVE_HOST line), so \
                 RESOLVE_HOST is unset: write RESOLVE_HOST=\"value\"",
                "portsentry.conf:5: no `=` after UDP_PORTS, ignored as PortSentry 1.2 ignores \
                 it: write UDP_PORTS=\"value\"",
                "portsentry.conf:6: SCAN_TRIGGER is set again here; the first setting, on line \
                 1, is used (PortSentry 1.2 rule; 2.x used the last)",
                "portsentry.conf:7: text before the opening quote of KILL_HOSTS_DENY is \
                 ignored, as PortSentry 1.2 ignores it: `ALL`",
            ]
        );
    }

    #[test]
    fn values_without_a_1_2_reading_are_still_errors() {
        let e = errs(concat!(
            "KILL_ROUTE=\"/sbin/route add -host $TARGET reject\"\n",
            "KILL_HOSTS_DENY=\"ALL: HOST\"\n",
            "HOSTS_DENY_FILE=\"hosts.deny\"\n",
        ));
        assert_eq!(
            e,
            [
                "portsentry.conf:1: KILL_ROUTE=\"/sbin/route add -host $TARGET reject\": must \
                 contain $TARGET$ (the address to block); refused although PortSentry 1.2 ran it: the command names no host, yet 1.2 logged each host as blocked",
                "portsentry.conf:2: KILL_HOSTS_DENY=\"ALL: HOST\": must contain $TARGET$ (the \
                 address to block); refused although PortSentry 1.2 ran it: the command names no host, yet 1.2 logged each host as blocked",
                "portsentry.conf:3: HOSTS_DENY_FILE=\"hosts.deny\": must be an absolute path \
                 (HOSTS_DENY_FILE is ours: PortSentry 1.2 had no such key)",
            ]
        );
    }

    /// Issue 8 item 2: a tutorial's `ADVANCED_PORTS_TCP="21,22,80,443"` starts 1.2.
    #[test]
    fn issue_8_advanced_ports_list_is_read_with_atoi() {
        let (cfg, warnings) = ok("ADVANCED_PORTS_TCP=\"21,22,80,443\"\n");
        assert_eq!(cfg.advanced_ports_tcp, 21);
        assert_eq!(
            warnings,
            [
                "portsentry.conf:1: ADVANCED_PORTS_TCP=\"21,22,80,443\" read as 21, as \
                 PortSentry 1.2 does: this key is the highest port watched, not a list (use \
                 TCP_PORTS with -stcp to watch a list)"
            ]
        );
    }

    #[test]
    fn advanced_ports_out_of_range_are_clamped_never_wrapped() {
        let read = |v: &str| {
            let (cfg, w) = ok(&format!("ADVANCED_PORTS_UDP=\"{v}\"\n"));
            (cfg.advanced_ports_udp, w)
        };
        let (n, w) = read("1-100");
        assert_eq!(n, 1);
        assert_eq!(
            w,
            [
                "portsentry.conf:1: ADVANCED_PORTS_UDP=\"1-100\" read as 1, as PortSentry 1.2 \
                 does: no port is below it, so this mode watches no port; this key is the \
                 highest port watched, not a range (use UDP_PORTS with -sudp to watch a range)"
            ]
        );
        let (n, w) = read("0");
        assert_eq!(n, 0);
        assert!(w[0].ends_with(
            "read as 0, as PortSentry 1.2 does: no port is below it, so this mode watches no \
             port; 1024, the default, watches the privileged ports"
        ));
        let (n, w) = read("70000");
        assert_eq!(n, 65536);
        assert!(w[0].ends_with(
            "read as 70000, as PortSentry 1.2 does: every port is below it, so every port is \
             watched; 65536 says the same"
        ));
        assert_eq!(read("-5").0, 0);
        assert_eq!(read(" 2048abc").0, 2048);
        assert!(read(" 2048abc").1[0].ends_with(
            "read as 2048, as PortSentry 1.2 does: it reads only the leading digits, and ports \
             below that number are watched"
        ));
        assert_eq!(read("65536"), (65536, vec![]));
    }

    #[test]
    fn block_and_flags_are_read_with_atoi() {
        let (cfg, warnings) = ok(concat!(
            "BLOCK_TCP=\"3\"\n",
            "BLOCK_UDP=\"yes\"\n",
            "RESOLVE_HOST=\"2\"\n",
            "KILL_RUN_CMD_FIRST=\"true\"\n",
        ));
        assert_eq!(cfg.block_tcp, BlockMode::LogOnly);
        assert_eq!(cfg.block_udp, BlockMode::LogOnly);
        assert!(cfg.resolve_host && !cfg.kill_run_cmd_first);
        assert_eq!(
            warnings,
            [
                "portsentry.conf:1: BLOCK_TCP=\"3\" read as 3, as PortSentry 1.2 does, which \
                 means log only (0 log only, 1 block, 2 run KILL_RUN_CMD only)",
                "portsentry.conf:2: BLOCK_UDP=\"yes\" read as 0, as PortSentry 1.2 does, which \
                 means log only (0 log only, 1 block, 2 run KILL_RUN_CMD only)",
                "portsentry.conf:3: RESOLVE_HOST=\"2\" read as 2, as PortSentry 1.2 does, which \
                 is on (write 1 for on, 0 for off)",
                "portsentry.conf:4: KILL_RUN_CMD_FIRST=\"true\" read as 0, as PortSentry 1.2 \
                 does, which is off (write 1 to turn it on)",
            ]
        );
        let (cfg, warnings) =
            ok("BLOCK_TCP=\"1 block\"\nBLOCK_UDP=\"2x\"\nKILL_RUN_CMD=\"/bin/true\"\n");
        assert_eq!(cfg.block_tcp, BlockMode::Block);
        assert_eq!(cfg.block_udp, BlockMode::RunCmdOnly);
        assert_eq!(warnings.len(), 2);
    }

    #[test]
    fn bad_port_entries_are_read_as_1_2_reads_them_or_skipped() {
        let (cfg, warnings) = ok(concat!(
            "TCP_PORTS=\"1,abc,3,,5-3,70000,0,80x\"\n",
            "ADVANCED_EXCLUDE_UDP=\"0\"\n",
        ));
        assert_eq!(cfg.tcp_ports, Some(set(&[1, 3, 5, 80])));
        assert!(cfg.advanced_exclude_udp.is_empty());
        let p = "portsentry.conf:1: TCP_PORTS=\"1,abc,3,,5-3,70000,0,80x\": ";
        assert_eq!(
            warnings,
            [
                format!(
                    "{p}entry `abc` skipped: PortSentry 1.2 read it as port 0, which watches nothing"
                ),
                format!("{p}an empty entry is skipped, as PortSentry 1.2 skips it"),
                format!(
                    "{p}entry `5-3` read as port 5, as PortSentry 1.2 does (it reads the \
                     leading digits; a range is written low-high)"
                ),
                format!(
                    "{p}entry `70000` skipped: ports end at 65535 (PortSentry 1.2 read it as \
                     70000, which its -tcp mode wrapped to port 4464)"
                ),
                format!(
                    "{p}entry `0` skipped: PortSentry 1.2 read it as port 0, which watches nothing"
                ),
                format!(
                    "{p}entry `80x` read as port 80, as PortSentry 1.2 does (it reads the leading digits)"
                ),
                "portsentry.conf:2: ADVANCED_EXCLUDE_UDP=\"0\": entry `0` skipped: PortSentry \
                 1.2 read it as port 0, which watches nothing"
                    .to_string(),
            ]
        );
    }

    #[test]
    fn port_lists_beyond_64_entries_warn() {
        let list: Vec<String> = (1..=65).map(|p| p.to_string()).collect();
        let (cfg, warnings) = ok(&format!("UDP_PORTS=\"{}\"\n", list.join(",")));
        assert_eq!(cfg.udp_ports.unwrap().len(), 65);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].ends_with(
            "PortSentry 1.2 watched only the first 64 entries of this list; all 65 are watched here"
        ));
        assert!(
            ok(&format!("ADVANCED_EXCLUDE_TCP=\"{}\"\n", list.join(",")))
                .1
                .is_empty()
        );
    }

    #[test]
    fn relative_1_2_paths_are_read_from_the_root() {
        let (cfg, warnings) = ok("IGNORE_FILE=\"portsentry.ignore\"\n");
        assert_eq!(
            cfg.ignore_file.as_deref(),
            Some(Path::new("/portsentry.ignore"))
        );
        assert_eq!(
            warnings,
            [
                "portsentry.conf:1: IGNORE_FILE=\"portsentry.ignore\" read as \
                 /portsentry.ignore, as PortSentry 1.2 does (it opens its files from /, not \
                 from the config's directory): write the full path meant"
            ]
        );
    }

    #[test]
    fn scan_trigger_is_read_with_atoi_and_never_wrapped() {
        let read = |v: &str| {
            let (cfg, w) = ok(&format!("SCAN_TRIGGER=\"{v}\"\n"));
            (cfg.scan_trigger, w)
        };
        // 2.x stored 70000 as uint16 4464.
        for (v, n) in [
            ("70000", 10000),
            ("4294967296", 10000),
            ("-1", 0),
            ("+5", 5),
            ("1e3", 1),
            ("0x10", 0),
            ("5 5", 5),
            ("1-100", 1),
        ] {
            let (got, w) = read(v);
            assert_eq!(got, n, "{v}");
            assert_eq!(w.len(), 1, "{v}: {w:?}");
            assert!(w[0].contains("as PortSentry 1.2 does: "), "{v}: {w:?}");
        }
        assert_eq!(
            read("1-100").1,
            [
                "portsentry.conf:1: SCAN_TRIGGER=\"1-100\" read as 1, as PortSentry 1.2 does: \
                 this key is one hit count, not a range (1 hit is allowed before the alarm)"
            ]
        );
        assert_eq!(
            read("70000").1,
            [
                "portsentry.conf:1: SCAN_TRIGGER=\"70000\" read as 70000, as PortSentry 1.2 \
                 does: its state engine holds 50 hits, so it never counted that far; taken here \
                 as 10000, the most counted (never wrapped, as 2.x wrapped 70000 to 4464)"
            ]
        );
        assert_eq!(read("007"), (7, vec![]));
        assert_eq!(read("10000"), (10000, vec![]));
    }

    #[test]
    fn non_printable_characters_end_the_value_as_in_1_2() {
        let (cfg, warnings) = ok("KILL_RUN_CMD=\"/bin/x\t$TARGET$\"\n\
             PORT_BANNER=\"hi\u{1b}[31m\"\n\
             KILL_RUN_CMD_FIRST=\"\u{FFFD}1\"\n");
        assert_eq!(cfg.kill_run_cmd.as_deref(), Some("/bin/x"));
        assert_eq!(cfg.port_banner.as_deref(), Some("hi"));
        assert!(!cfg.kill_run_cmd_first);
        assert_eq!(
            warnings,
            [
                "portsentry.conf:1: the value of KILL_RUN_CMD contains the non-printable \
                 character U+0009; read up to it, as PortSentry 1.2 does: KILL_RUN_CMD=\"/bin/x\"",
                "portsentry.conf:2: the value of PORT_BANNER contains the non-printable \
                 character U+001B; read up to it, as PortSentry 1.2 does: PORT_BANNER=\"hi\"",
                "portsentry.conf:3: the value of KILL_RUN_CMD_FIRST contains bytes that are not \
                 valid UTF-8; read up to it, as PortSentry 1.2 does: KILL_RUN_CMD_FIRST=\"\"",
                "portsentry.conf:3: KILL_RUN_CMD_FIRST is empty and is treated as unset",
            ]
        );
        // What is left may still be refused: no $TARGET$ before the bad byte.
        assert_eq!(
            errs("KILL_ROUTE=\"a\u{FFFD} $TARGET$\"\n"),
            [
                "portsentry.conf:1: KILL_ROUTE=\"a\": must contain $TARGET$ (the address to block); refused although PortSentry 1.2 ran it: the command names no host, yet 1.2 logged each host as blocked"
            ]
        );
        // A lone CR inside the value is not a line ending, but it ends the value.
        assert_eq!(
            ok("PORT_BANNER=\"a\rb\"\n").0.port_banner.as_deref(),
            Some("a")
        );
        // Non-ASCII text is printable.
        assert_eq!(
            ok("PORT_BANNER=\"Zugriff verweigert — geh weg\"")
                .0
                .port_banner
                .as_deref(),
            Some("Zugriff verweigert — geh weg")
        );
    }

    #[test]
    fn errors_and_warnings_are_all_collected() {
        let (res, warnings) = parse(concat!(
            "FOO=\"1\"\n",
            "KILL_ROUTE=\"route\"\n",
            "KILL_HOSTS_DENY=\"ALL\"\n",
            "KILL_ROUTE=\"x $TARGET$\"\n",
            "SCAN_TRIGGER=\"x\"\n",
        ));
        let lines: Vec<usize> = res.unwrap_err().iter().map(|d| d.line).collect();
        assert_eq!(lines, [2, 3]);
        let wlines: Vec<usize> = warnings.iter().map(|d| d.line).collect();
        assert_eq!(wlines, [1, 4, 5]);
        assert!(warnings.iter().all(|d| d.file == Path::new(F)));
    }

    #[test]
    fn unknown_macros_warn() {
        let (cfg, warnings) = ok(concat!(
            "KILL_ROUTE=\"/sbin/iptables -I INPUT -s $TARGET$ -j DROP && logger $TAGRET$\"\n",
            "KILL_RUN_CMD=\"echo $HOME $TARGET$$PORT$ $MODE$ costs $5 or $$\"\n",
        ));
        assert!(cfg.kill_route.unwrap().contains("&& logger $TAGRET$"));
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        assert!(warnings[0].starts_with("portsentry.conf:1: KILL_ROUTE=\""));
        assert!(
            warnings[0].ends_with(
                "unknown macro $TAGRET$ is left as is (known: $TARGET$, $PORT$, $MODE$)"
            )
        );
    }

    #[test]
    fn block_2_without_run_cmd_warns() {
        let (_, warnings) = ok("\nBLOCK_UDP=\"2\"\n");
        assert_eq!(
            warnings,
            [
                "portsentry.conf:2: BLOCK_UDP=\"2\" runs only KILL_RUN_CMD, which is not set: \
              alarms will only be logged"
            ]
        );
        let (_, warnings) = ok("BLOCK_UDP=\"2\"\nKILL_RUN_CMD=\"/bin/true\"\n");
        assert!(warnings.is_empty());
    }

    #[test]
    fn keys_are_documented_and_unique() {
        let keys: Vec<_> = legacy_keys().collect();
        assert_eq!(keys.len(), 19);
        for (i, (name, doc)) in keys.iter().enumerate() {
            assert!(!doc.is_empty(), "{name}");
            assert!(
                name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{name}"
            );
            assert!(keys[i + 1..].iter().all(|(n, _)| n != name), "{name} twice");
        }
    }

    /// What the settings layer does with a config file: read lossily, then parse.
    fn load_legacy(path: &Path) -> Result<(LegacyConfig, Vec<Diagnostic>), String> {
        let text = super::super::read_text(path).map_err(|e| e.to_string())?;
        match parse_legacy(&text, path) {
            (Ok(cfg), warnings) => Ok((cfg, warnings)),
            (Err(errors), _) => Err(super::super::join(&errors)),
        }
    }

    #[test]
    fn a_config_file_is_read_lossily_and_labelled() {
        let f = TempFile::new(
            "legacy-ok.conf",
            b"# \xe9t\xe9\nBLOCK_TCP=\"1\"\nFOO=\"bar\"\n",
        );
        let (cfg, warnings) = load_legacy(&f.0).unwrap();
        assert_eq!(cfg.block_tcp, BlockMode::Block);
        assert_eq!(
            warnings[0].to_string(),
            format!("{}:3: unknown key FOO, ignored", f.0.display())
        );

        let f = TempFile::new(
            "legacy-bad.conf",
            b"KILL_ROUTE=\"r\"\nKILL_HOSTS_DENY=\"ALL: \xff$TARGET$\"\n",
        );
        let err = load_legacy(&f.0).unwrap_err();
        let p = f.0.display();
        assert_eq!(
            err,
            format!(
                "{p}:1: KILL_ROUTE=\"r\": must contain $TARGET$ (the address to block); refused although PortSentry 1.2 ran it: the command names no host, yet 1.2 logged each host as blocked\n{p}:2: \
                 KILL_HOSTS_DENY=\"ALL: \": must contain $TARGET$ (the address to block); refused although PortSentry 1.2 ran it: the command names no host, yet 1.2 logged each host as blocked"
            )
        );
    }
}
