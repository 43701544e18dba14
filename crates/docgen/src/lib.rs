//! The man pages and shell completions of portsentry, generated from the definitions
//! the binary itself uses, so `--help`, the man pages and the completions cannot
//! drift apart:
//! - `portsentry(8)`: `doc/src/portsentry.8.in` (the hand-written text) with its `@@`
//!   lines expanded from the clap definition (`portsentry::cli::Cli`): the title and
//!   version, the synopsis of every command, every command's usage, help and options,
//!   the OPTIONS section; and short summaries of the two configuration files;
//! - `portsentry.conf(5)`: `doc/src/portsentry.conf.5.in` with the key table of the
//!   1.2/2.x reader (`portsentry::config::legacy_keys`);
//! - `portsentry.toml(5)`: `doc/src/portsentry.toml.5.in` with every table and key of
//!   `dist/portsentry.toml` (the example with every default; the tests check that it
//!   parses to the built-in defaults and names every key the reader accepts);
//! - bash, zsh and fish completions (clap_complete).
//!
//! `render_all` is pure but for reading the sources; the binary writes its result, and
//! the test `generated_files_are_current` fails when a committed file differs.

mod roff;
mod toml_doc;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory};
use clap_complete::Shell;

pub use toml_doc::{TomlDoc, TomlKey, TomlTable};

use roff::{esc, esc_text};

/// Every generated file: its path relative to the workspace root, and its content.
pub type Outputs = Vec<(PathBuf, Vec<u8>)>;

/// Man pages and completions, relative to the workspace root.
pub const MAN8: &str = "doc/portsentry.8";
pub const CONF5: &str = "doc/portsentry.conf.5";
pub const TOML5: &str = "doc/portsentry.toml.5";
pub const TOML_EXAMPLE: &str = "dist/portsentry.toml";
pub const COMPLETIONS: [(Shell, &str); 3] = [
    (Shell::Bash, "dist/completions/portsentry.bash"),
    (Shell::Zsh, "dist/completions/_portsentry"),
    (Shell::Fish, "dist/completions/portsentry.fish"),
];

/// The workspace root, where the sources and the generated files are.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(root: &Path, rel: &str) -> Result<String, String> {
    std::fs::read_to_string(root.join(rel)).map_err(|e| format!("{rel}: {e}"))
}

/// Everything generated from the sources under `root`.
pub fn render_all(root: &Path) -> Result<Outputs, String> {
    let toml =
        TomlDoc::parse(&read(root, TOML_EXAMPLE)?).map_err(|e| format!("{TOML_EXAMPLE}: {e}"))?;
    let mut out: Outputs = vec![
        (
            MAN8.into(),
            man8(&read(root, "doc/src/portsentry.8.in")?, &toml)?.into_bytes(),
        ),
        (
            CONF5.into(),
            conf5(&read(root, "doc/src/portsentry.conf.5.in")?)?.into_bytes(),
        ),
        (
            TOML5.into(),
            toml5(&read(root, "doc/src/portsentry.toml.5.in")?, &toml)?.into_bytes(),
        ),
    ];
    for (shell, path) in COMPLETIONS {
        let mut cmd = portsentry::cli::Cli::command();
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, "portsentry", &mut buf);
        out.push((path.into(), buf));
    }
    Ok(out)
}

fn version() -> String {
    format!("portsentry {}", env!("CARGO_PKG_VERSION"))
}

/// `.TH` of a section-5 page (the section-8 one is clap_mangen's).
fn title5(name: &str) -> String {
    format!(
        ".TH {} 5 \"\" \"{}\" \"File Formats\"\n",
        name.to_uppercase(),
        version()
    )
}

/// Expand the `@@` lines of `template`; `expand` gets the directive and its argument
/// and the hand-written lines up to `@@END` (only `@@COMMAND` takes a body).
fn expand(
    template: &str,
    mut expand: impl FnMut(&str, &str, &[&str]) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::new();
    let lines: Vec<&str> = template.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let Some(directive) = line.strip_prefix("@@") else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let (name, arg) = directive.split_once(' ').unwrap_or((directive, ""));
        let mut body = Vec::new();
        if name == "COMMAND" {
            while i < lines.len() && lines[i] != "@@END" {
                body.push(lines[i]);
                i += 1;
            }
            if i == lines.len() {
                return Err(format!("@@COMMAND {arg} has no @@END"));
            }
            i += 1;
        }
        out.push_str(&expand(name, arg, &body)?);
    }
    Ok(out)
}

fn subcommands(cmd: &Command) -> impl Iterator<Item = &Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set())
}

fn shown_args(cmd: &Command) -> impl Iterator<Item = &clap::Arg> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set() && a.get_id() != "help" && a.get_id() != "version")
}

fn value_name(a: &clap::Arg) -> String {
    a.get_value_names()
        .and_then(|v| v.first())
        .map(|v| v.to_string())
        .unwrap_or_else(|| a.get_id().as_str().to_uppercase())
}

fn takes_value(a: &clap::Arg) -> bool {
    a.get_action().takes_values()
}

/// `\fBportsentry ban\fR \fITARGET\fR [\fB\-\-time\fR \fITIME\fR] ...`
fn usage(sub: &Command) -> String {
    let mut s = format!("\\fBportsentry {}\\fR", esc(sub.get_name()));
    for a in shown_args(sub) {
        if a.is_positional() {
            let v = format!("\\fI{}\\fR", esc(&value_name(a)));
            if a.is_required_set() {
                s += &format!(" {v}");
            } else {
                s += &format!(" [{v}]");
            }
        } else {
            let flag = match (a.get_long(), a.get_short()) {
                (Some(l), _) => format!("\\-\\-{}", esc(l)),
                (None, Some(c)) => format!("\\-{}", esc(&c.to_string())),
                (None, None) => continue,
            };
            if takes_value(a) {
                s += &format!(" [\\fB{flag}\\fR \\fI{}\\fR]", esc(&value_name(a)));
            } else {
                s += &format!(" [\\fB{flag}\\fR]");
            }
        }
    }
    s
}

/// One entry of COMMANDS: the usage as the tag, clap's help, the hand-written body,
/// then the command's own arguments.
fn command_entry(sub: &Command, body: &[&str]) -> String {
    let mut s = format!(".TP\n{}\n", usage(sub));
    let about = sub
        .get_long_about()
        .or(sub.get_about())
        .map(|a| a.to_string())
        .unwrap_or_default();
    s += &esc_text(&about);
    for line in body {
        s.push_str(line);
        s.push('\n');
    }
    let args: Vec<_> = shown_args(sub).collect();
    if !args.is_empty() {
        s += ".RS\n";
        for a in args {
            let tag = if a.is_positional() {
                format!("\\fI{}\\fR", esc(&value_name(a)))
            } else {
                let mut t = String::new();
                if let Some(c) = a.get_short() {
                    t += &format!("\\fB\\-{}\\fR, ", esc(&c.to_string()));
                }
                if let Some(l) = a.get_long() {
                    t += &format!("\\fB\\-\\-{}\\fR", esc(l));
                }
                if takes_value(a) {
                    t += &format!(" \\fI{}\\fR", esc(&value_name(a)));
                }
                t
            };
            let help = a
                .get_long_help()
                .or(a.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            s += &format!(".TP\n{tag}\n{}", esc_text(&help));
        }
        s += ".RE\n";
    }
    s
}

/// `portsentry(8)`.
pub fn man8(template: &str, toml: &TomlDoc) -> Result<String, String> {
    let cmd = portsentry::cli::Cli::command();
    // Commands without a hand-written @@COMMAND block (a new one) are still listed,
    // from their clap help alone, by @@OTHER-COMMANDS.
    let mut described = BTreeSet::new();
    expand(template, |name, arg, body| {
        Ok(match name {
            "TITLE" => {
                let mut buf = Vec::new();
                clap_mangen::Man::new(cmd.clone())
                    .title("PORTSENTRY")
                    .section("8")
                    .source(version())
                    .manual("System Administration")
                    .render_title(&mut buf)
                    .map_err(|e| e.to_string())?;
                String::from_utf8(buf).map_err(|e| e.to_string())?
            }
            "SYNOPSIS-COMMANDS" => subcommands(&cmd)
                .map(|s| format!(".br\n{}\n", usage(s)))
                .collect(),
            "COMMAND" => {
                let sub = subcommands(&cmd)
                    .find(|s| s.get_name() == arg)
                    .ok_or_else(|| {
                        format!("@@COMMAND {arg}: portsentry has no such command (cli.rs)")
                    })?;
                described.insert(arg.to_string());
                command_entry(sub, body)
            }
            "OTHER-COMMANDS" => subcommands(&cmd)
                .filter(|s| !described.contains(s.get_name()))
                .map(|s| command_entry(s, &[]))
                .collect(),
            "OPTIONS" => {
                let mut buf = Vec::new();
                clap_mangen::Man::new(cmd.clone())
                    .render_options_section(&mut buf)
                    .map_err(|e| e.to_string())?;
                String::from_utf8(buf).map_err(|e| e.to_string())?
            }
            "CONF-SUMMARY" => {
                let keys: Vec<&str> = portsentry::config::legacy_keys().map(|(k, _)| k).collect();
                format!(
                    ".I portsentry.conf\nholds PortSentry 1.2's\n.B KEY=\"value\"\nlines, read \
                     as 1.2 reads them, with a warning at\n.I file:line\nfor every oddity; \
                     every key and rule is in\n.BR portsentry.conf (5).\nKeys: {}.\n",
                    esc(&keys.join(", "))
                )
            }
            "TOML-SUMMARY" => {
                let mut s = String::from(
                    ".I portsentry.toml\nholds what PortSentry never had; every key is \
                     optional, an unknown key or bad value is an error with\n\
                     .IR file:line:column .\nEach key is described in\n.BR portsentry.toml (5).\n\
                     The defaults:\n.PP\n.nf\n",
                );
                for t in &toml.tables {
                    s += &format!("[{}]\n", esc(&t.name));
                    for k in &t.keys {
                        s += &format!("{} = {}\n", esc(&k.name), esc(&k.value));
                    }
                }
                s + ".fi\n"
            }
            other => return Err(format!("unknown directive @@{other}")),
        })
    })
}

/// `portsentry.conf(5)`.
pub fn conf5(template: &str) -> Result<String, String> {
    expand(template, |name, _, _| {
        Ok(match name {
            "TITLE" => title5("portsentry.conf"),
            "KEYS" => portsentry::config::legacy_keys()
                .map(|(key, doc)| format!(".TP\n.B {}\n{}", esc(key), esc_text(doc)))
                .collect(),
            other => return Err(format!("unknown directive @@{other}")),
        })
    })
}

/// `portsentry.toml(5)`.
pub fn toml5(template: &str, toml: &TomlDoc) -> Result<String, String> {
    expand(template, |name, _, _| {
        Ok(match name {
            "TITLE" => title5("portsentry.toml"),
            "KEYS" => {
                let mut s = String::from(".SH KEYS\n");
                for t in &toml.tables {
                    s += &format!(".SS [{}]\n{}", esc(&t.name), esc_text(&t.doc));
                    for k in &t.keys {
                        s += &format!(
                            ".TP\n\\fB{}\\fR = {}\n{}",
                            esc(&k.name),
                            esc(&k.value),
                            esc_text(&k.doc)
                        );
                    }
                }
                s
            }
            other => return Err(format!("unknown directive @@{other}")),
        })
    })
}
