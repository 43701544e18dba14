//! The committed man pages and completions are what the generator makes from today's
//! clap definitions, key tables and example settings; the example settings are the
//! real defaults and name every key; every page formats without a warning.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use portsentry_docgen::{TomlDoc, render_all, workspace_root};

#[test]
fn generated_files_are_current() {
    let root = workspace_root();
    let outputs = render_all(&root).expect("render");
    let mut stale = Vec::new();
    for (rel, content) in &outputs {
        let committed = std::fs::read(root.join(rel)).unwrap_or_default();
        if committed != *content {
            stale.push(rel.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "{stale:?} differ from what the clap definitions and key tables give: \
         run `cargo run -p portsentry-docgen` and commit the result"
    );
    assert_eq!(outputs.len(), 6);
}

fn example() -> (String, TomlDoc) {
    let text =
        std::fs::read_to_string(workspace_root().join(portsentry_docgen::TOML_EXAMPLE)).unwrap();
    let doc = TomlDoc::parse(&text).unwrap();
    (text, doc)
}

#[test]
fn the_example_settings_are_the_built_in_defaults() {
    let (text, _) = example();
    let parsed = portsentry::config::parse_toml_settings(&text, Path::new("portsentry.toml"))
        .unwrap_or_else(|d| panic!("dist/portsentry.toml does not load: {d}"));
    assert_eq!(
        parsed,
        portsentry::config::TomlSettings::default(),
        "a value in dist/portsentry.toml (and so in portsentry.toml(5)) is not the default"
    );
}

/// The fields the reader accepts in `table` (dotted; "" for the top level), from the
/// error serde gives for an unknown one: "unknown field `x`, expected one of `a`, `b`".
fn accepted_fields(table: &str) -> BTreeSet<String> {
    let text = if table.is_empty() {
        "zz_not_a_key = 1\n".to_string()
    } else {
        format!("[{table}]\nzz_not_a_key = 1\n")
    };
    let err = toml::from_str::<portsentry::config::TomlSettings>(&text)
        .expect_err("an unknown key must be refused")
        .message()
        .to_string();
    let expected = err
        .split_once("expected")
        .unwrap_or_else(|| panic!("no field list in: {err}"))
        .1;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn the_example_names_every_key_the_reader_accepts() {
    let (_, doc) = example();
    let mut checked = 0;
    let mut pending = vec![String::new()];
    while let Some(table) = pending.pop() {
        let accepted = accepted_fields(&table);
        let prefix = if table.is_empty() {
            String::new()
        } else {
            format!("{table}.")
        };
        let keys: BTreeSet<String> = doc
            .table(&table)
            .map(|t| t.keys.iter().map(|k| k.name.clone()).collect())
            .unwrap_or_default();
        let subtables: BTreeSet<String> = doc
            .tables
            .iter()
            .filter_map(|t| t.name.strip_prefix(&prefix))
            .filter(|rest| !rest.is_empty() && !rest.contains('.'))
            .map(str::to_string)
            .collect();
        let documented: BTreeSet<String> = keys.union(&subtables).cloned().collect();
        assert_eq!(
            documented, accepted,
            "[{table}]: keys of dist/portsentry.toml (left) and of the reader (right) differ"
        );
        checked += keys.len();
        pending.extend(subtables.iter().map(|s| format!("{prefix}{s}")));
    }
    assert!(checked >= 30, "only {checked} keys checked");
}

#[test]
fn every_man_page_formats_without_warnings() {
    let root = workspace_root();
    for page in [
        portsentry_docgen::MAN8,
        portsentry_docgen::CONF5,
        portsentry_docgen::TOML5,
    ] {
        let path = root.join(page);
        let Ok(out) = Command::new("groff")
            .args(["-ww", "-man", "-z", "-t"])
            .arg(&path)
            .output()
        else {
            eprintln!("skipped: groff not installed ({page}; .ci/run installs man-db)");
            if std::env::var_os("CI").is_some() {
                panic!("groff missing under CI");
            }
            return;
        };
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "groff -ww on {page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&path)
            .env("MANWIDTH", "80")
            .output()
            .expect("man");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "man --warnings -l {page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("NAME") && text.len() > 2000,
            "{page} renders empty"
        );
    }
}

/// The completions complete: a command from its prefix, and an option of a command,
/// in the real shells (bash always; zsh and fish where installed, else a loud skip).
#[test]
fn completions_complete_commands_and_options() {
    let root = workspace_root();
    let bash = root.join("dist/completions/portsentry.bash");
    let script = format!(
        "source {}; COMP_WORDS=(portsentry fl); COMP_CWORD=1; _portsentry portsentry fl portsentry; \
         echo \"${{COMPREPLY[@]}}\"; COMP_WORDS=(portsentry ban 198.18.0.2 --pe); COMP_CWORD=3; \
         _portsentry portsentry --pe ban; echo \"${{COMPREPLY[@]}}\"",
        bash.display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "flush\n--permanent\n",
        "bash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fish = root.join("dist/completions/portsentry.fish");
    match Command::new("fish")
        .arg("-c")
        .arg(format!(
            "source {}; complete -C 'portsentry fl'; complete -C 'portsentry --che'",
            fish.display()
        ))
        .output()
    {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.lines().any(|l| l.starts_with("flush\t"))
                    && text.lines().any(|l| l.starts_with("--check-config\t")),
                "fish: {text}"
            );
        }
        Err(_) => {
            eprintln!("skipped: fish not installed (completions_complete_commands_and_options)")
        }
    }
    match Command::new("zsh")
        .arg("-n")
        .arg(root.join("dist/completions/_portsentry"))
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "zsh -n: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => {
            eprintln!("skipped: zsh not installed (completions_complete_commands_and_options)")
        }
    }
}
