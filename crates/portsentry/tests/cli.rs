//! The binary's command line as an admin meets it: config errors with file:line and
//! exit status 3, `--check-config` showing the effective modes (from flags or from
//! Debian's /etc/default/portsentry), and a man page that documents every option.
//! These run unprivileged: `--check-config` never opens a socket.

use std::path::Path;
use std::process::Command;

fn portsentry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portsentry"))
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn base_conf(dir: &Path, extra: &str) -> std::path::PathBuf {
    let ignore = write(dir, "portsentry.ignore", "127.0.0.1/32\n0.0.0.0\n");
    write(
        dir,
        "portsentry.conf",
        &format!(
            "TCP_PORTS=\"1,11,15,79,111\"\nUDP_PORTS=\"1,7,9,69\"\nIGNORE_FILE=\"{}\"\nHISTORY_FILE=\"{}/h\"\nBLOCKED_FILE=\"{}/b\"\n{extra}",
            ignore.display(),
            dir.display(),
            dir.display()
        ),
    )
}

#[test]
fn bad_values_are_reported_with_file_and_line_and_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let conf = base_conf(dir.path(), "BLOCK_TCP=\"7\"\nSCAN_TRIGGER=\"70000\"\n");
    let out = portsentry()
        .arg("-atcp")
        .arg("-c")
        .arg(&conf)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = conf.display().to_string();
    assert!(err.contains(&format!("{file}:6: BLOCK_TCP=\"7\"")), "{err}");
    assert!(
        err.contains(&format!("{file}:7: SCAN_TRIGGER=\"70000\"")),
        "{err}"
    );
}

#[test]
fn bad_ignore_entry_is_reported_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let conf = base_conf(dir.path(), "");
    write(dir.path(), "portsentry.ignore", "127.0.0.1\n198.18.0.300\n");
    let out = portsentry()
        .arg("-c")
        .arg(&conf)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("portsentry.ignore:2:"), "{err}");
}

#[test]
fn missing_explicit_config_is_an_error() {
    let out = portsentry()
        .args([
            "-atcp",
            "-c",
            "/nonexistent/portsentry.conf",
            "--check-config",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/portsentry.conf"));
}

#[test]
fn legacy_mode_flags_select_modes_and_can_be_combined() {
    let dir = tempfile::tempdir().unwrap();
    let conf = base_conf(dir.path(), "");
    let out = portsentry()
        .args(["-stcp", "-audp", "-c"])
        .arg(&conf)
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mode stcp: ports 1,11,15,79,111"), "{text}");
    assert!(text.contains("mode audp: ports below 1024"), "{text}");
    let blocked = format!("blocked file {}/b.stcp", dir.path().display());
    assert!(text.contains(&blocked), "{text}");
}

#[test]
fn two_tcp_modes_are_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let conf = base_conf(dir.path(), "");
    let out = portsentry()
        .args(["-stcp", "-atcp", "-c"])
        .arg(&conf)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn without_mode_flags_modes_come_from_debian_defaults_file() {
    let dir = tempfile::tempdir().unwrap();
    let conf = base_conf(dir.path(), "");
    let defaults = write(
        dir.path(),
        "default-portsentry",
        "# Debian\nTCP_MODE=\"atcp\"\nUDP_MODE=\"sudp\"\n",
    );
    let out = portsentry()
        .arg("-c")
        .arg(&conf)
        .arg("--defaults-file")
        .arg(&defaults)
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mode atcp:"), "{text}");
    assert!(text.contains("mode sudp: ports 1,7,9,69"), "{text}");
}

#[test]
fn without_mode_flags_or_defaults_file_runs_advanced_tcp_and_udp() {
    let dir = tempfile::tempdir().unwrap();
    let conf = base_conf(dir.path(), "");
    let out = portsentry()
        .arg("-c")
        .arg(&conf)
        .arg("--defaults-file")
        .arg(dir.path().join("absent"))
        .arg("--check-config")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("mode atcp:") && text.contains("mode audp:"),
        "{text}"
    );
}

#[test]
fn unmodified_debian_config_is_accepted() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/portsentry-debian.conf");
    let out = portsentry()
        .arg("-atcp")
        .arg("-c")
        .arg(&fixture)
        .arg("--check-config")
        .output()
        .unwrap();
    // The Debian file points IGNORE_FILE at /etc/portsentry/portsentry.ignore, which a
    // test machine may lack; everything else must be accepted.
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        assert!(
            err.contains("IGNORE_FILE") && !err.contains(".conf:"),
            "{err}"
        );
    }
}

#[test]
fn man_page_documents_every_option_of_help() {
    let man = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../doc/portsentry.8"),
    )
    .unwrap();
    let help = portsentry().arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    let mut checked = 0;
    for word in help.split_whitespace() {
        let flag = word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
        if flag.starts_with("--") && flag.len() > 2 && flag != "--help" && flag != "--version" {
            let escaped = flag.replace('-', "\\-");
            assert!(man.contains(&escaped), "man page lacks {flag}");
            checked += 1;
        }
    }
    assert!(checked >= 10, "help parsing found only {checked} options");
    for (key, _) in portsentry::config::legacy_keys() {
        assert!(man.contains(key), "man page lacks the config key {key}");
    }
    for legacy in ["\\-atcp", "\\-audp", "\\-stcp", "\\-sudp"] {
        assert!(man.contains(legacy), "man page lacks {legacy}");
    }
}

#[test]
fn systemd_unit_is_valid_and_uses_existing_options() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/portsentry.service"),
    )
    .unwrap();
    // Every option the unit passes must be one the binary accepts.
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart line");
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    let mut check = args.clone();
    check.push("--help");
    let out = portsentry().args(&check).output().unwrap();
    assert!(
        out.status.success(),
        "options {args:?} refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let Ok(analyze) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!(
            "skipped: systemd-analyze not installed (systemd_unit_is_valid_and_uses_existing_options)"
        );
        return;
    };
    assert!(analyze.status.success());
    let dir = tempfile::tempdir().unwrap();
    let local = unit.replace("/usr/sbin/portsentry", env!("CARGO_BIN_EXE_portsentry"));
    let path = write(dir.path(), "portsentry.service", &local);
    // `verify` runs `man` for Documentation=man:portsentry(8): point it at our own page,
    // so the check holds on a machine without any portsentry package installed.
    let man8 = dir.path().join("man/man8");
    std::fs::create_dir_all(&man8).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../doc/portsentry.8"),
        man8.join("portsentry.8"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("MANPATH", dir.path().join("man"))
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With no configuration file at all (the README's quick start), the daemon runs on its
/// embedded defaults: advanced TCP and UDP with the usual excludes, blocking through the
/// kernel fast path, 1 h bans. Hiding an installed /etc/portsentry needs a private mount
/// namespace, hence root; the host's /etc is never changed.
#[test]
fn embedded_defaults_when_no_config_file_exists() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (embedded_defaults_when_no_config_file_exists)");
        return;
    }
    let script = format!(
        "[ -d /etc/portsentry ] && mount -t tmpfs none /etc/portsentry; exec {} --defaults-file /nonexistent --check-config",
        env!("CARGO_BIN_EXE_portsentry")
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("configuration OK (built-in defaults (no config file))"),
        "{text}"
    );
    assert!(
        text.contains("mode atcp: ports below 1024 except 113,139, block"),
        "{text}"
    );
    assert!(
        text.contains("mode audp: ports below 1024 except 67,137-138,520, block"),
        "{text}"
    );
    assert!(text.contains("fast path on"), "{text}");
    assert!(text.contains("bans: 1h first"), "{text}");
    assert!(!text.contains("WARNING"), "{text}");
}

/// The client commands read only portsentry.toml: a broken or missing legacy config
/// does not stop them (they fail later, at the absent daemon: exit 4), while a missing
/// `--settings` file is a configuration error (exit 3).
#[test]
fn client_commands_do_not_read_the_legacy_config() {
    let dir = tempfile::tempdir().unwrap();
    let conf = base_conf(dir.path(), "BLOCK_TCP=\"7\"\n");
    let socket = dir.path().join("ps.sock");
    let settings = write(
        dir.path(),
        "portsentry.toml",
        &format!("[control]\nsocket = \"{}\"\n", socket.display()),
    );
    let out = portsentry()
        .arg("-c")
        .arg(&conf)
        .arg("--settings")
        .arg(&settings)
        .arg("status")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains(&socket.display().to_string()), "{err}");
    assert!(!err.contains("BLOCK_TCP"), "{err}");

    let missing = dir.path().join("absent.toml");
    let out = portsentry()
        .arg("-c")
        .arg("/nonexistent/portsentry.conf")
        .arg("--settings")
        .arg(&missing)
        .arg("status")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "settings file {} does not exist",
            missing.display()
        )),
        "{err}"
    );
}
