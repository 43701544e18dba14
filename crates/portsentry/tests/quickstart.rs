//! Issue 9 item 7: README's quick start, `cargo run --release -- --foreground`, works
//! for root (no sudo on a fresh Debian) and for a sudo user, and `cargo test` is the
//! same for both. Cargo runs every program through `.cargo/root-runner`
//! (`.cargo/config.toml`); this checks the runner's choice for each caller: root runs
//! the daemon directly even where sudo exists, a user goes through sudo when it is
//! installed and runs directly (with a note) when not, and test binaries are never
//! elevated. The user is `nobody` (runuser), the sudo a stand-in on PATH that records
//! its call and runs the command (it cannot elevate: what is checked is the runner's
//! decision, the daemon's own root checks are tested elsewhere).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::loud;

fn runner() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cargo/root-runner")
}

struct Setup {
    _dir: tempfile::TempDir,
    /// PATH with the stand-in sudo first.
    with_sudo: String,
    /// PATH without any sudo.
    without_sudo: String,
    /// Where the stand-in writes its arguments.
    record: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let record = dir.path().join("sudo-called");
    let sudo = bin.join("sudo");
    std::fs::write(
        &sudo,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\n[ \"$1\" = -- ] && shift\nexec \"$@\"\n",
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&sudo, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The machine's own PATH directories, but none that holds a real sudo.
    let system: Vec<&str> = ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .into_iter()
        .filter(|d| !Path::new(d).join("sudo").exists())
        .collect();
    Setup {
        with_sudo: format!("{}:{}", bin.display(), system.join(":")),
        without_sudo: system.join(":"),
        record,
        _dir: dir,
    }
}

/// The runner on `program --version`, as root or as `nobody`, with `path`.
fn run(as_user: bool, path: &str, program: &Path) -> Output {
    let mut cmd = if as_user {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(runner());
        c
    } else {
        Command::new(runner())
    };
    cmd.arg(program)
        .arg("--version")
        .env_clear()
        .env("PATH", path)
        .output()
        .expect("run the runner")
}

fn sudo_calls(s: &Setup) -> String {
    std::fs::read_to_string(&s.record).unwrap_or_default()
}

#[test]
fn issue_9_quick_start_runner_uses_sudo_only_for_the_daemon_and_only_when_needed() {
    let test = "issue_9_quick_start_runner_uses_sudo_only_for_the_daemon_and_only_when_needed";
    if unsafe { libc::geteuid() } != 0 {
        loud(&format!("skipped: needs root (runuser) ({test})"));
        return;
    }
    let daemon = Path::new(env!("CARGO_BIN_EXE_portsentry"));
    let s = setup();
    let version = format!("portsentry {}\n", env!("CARGO_PKG_VERSION"));

    // Root, with a sudo on PATH: runs directly.
    let out = run(false, &s.with_sudo, daemon);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), version);
    assert_eq!(sudo_calls(&s), "", "root went through sudo");

    // A user without sudo: runs directly, says why it may fail.
    let out = run(true, &s.without_sudo, daemon);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), version);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sudo is not installed"),
        "{out:?}"
    );
    assert_eq!(sudo_calls(&s), "");

    // A sudo user: through sudo, with the program and its arguments unchanged.
    let out = run(true, &s.with_sudo, daemon);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), version);
    assert_eq!(
        sudo_calls(&s),
        format!("-- {} --version\n", daemon.display()),
        "the daemon did not go through sudo"
    );

    // A test binary (its name carries a hash) of a sudo user: never through sudo, so
    // `cargo test` stays the user's own run.
    let copy = s._dir.path().join("portsentry-0123456789abcdef");
    std::fs::copy(daemon, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = sudo_calls(&s);
    let out = run(true, &s.with_sudo, &copy);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(sudo_calls(&s), before, "a test binary went through sudo");
}

#[test]
fn cargo_config_runs_programs_through_the_runner() {
    let config = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cargo/config.toml"),
    )
    .unwrap();
    assert!(
        config.contains("runner = \".cargo/root-runner\""),
        ".cargo/config.toml:\n{config}"
    );
    let mode = std::fs::metadata(runner()).unwrap().permissions().mode();
    assert!(mode & 0o111 != 0, "the runner is not executable");
}

/// `cargo run --release -- --foreground` at the workspace root needs exactly one
/// binary among the default members (a second one, like the doc generator, makes
/// cargo refuse with "could not determine which binary to run").
#[test]
fn cargo_run_at_the_root_finds_only_the_daemon() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    let members = manifest["workspace"]
        .get("default-members")
        .and_then(|m| m.as_array())
        .expect("workspace.default-members");
    let mut bins = Vec::new();
    for m in members {
        let dir = root.join(m.as_str().unwrap());
        let crate_toml: toml::Table =
            toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml")).unwrap()).unwrap();
        let name = crate_toml["package"]["name"].as_str().unwrap().to_string();
        match crate_toml.get("bin").and_then(|b| b.as_array()) {
            Some(list) => bins.extend(
                list.iter()
                    .map(|b| b["name"].as_str().unwrap_or(&name).to_string()),
            ),
            None if dir.join("src/main.rs").exists() => bins.push(name),
            None => {}
        }
    }
    assert_eq!(bins, ["portsentry"], "binaries `cargo run` chooses from");
}
