//! `cargo run -p portsentry-docgen [-- --check]`: write the man pages and completions
//! (see the library), or with `--check` list the files that differ and exit 1.

use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let root = portsentry_docgen::workspace_root();
    let outputs = match portsentry_docgen::render_all(&root) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("portsentry-docgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stale = 0;
    for (rel, content) in outputs {
        let path = root.join(&rel);
        if std::fs::read(&path).ok().as_deref() == Some(&content[..]) {
            continue;
        }
        stale += 1;
        if check {
            eprintln!("{} is not current", rel.display());
            continue;
        }
        if let Some(dir) = path.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            eprintln!("portsentry-docgen: {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
        if let Err(e) = std::fs::write(&path, &content) {
            eprintln!("portsentry-docgen: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", rel.display());
    }
    if check && stale > 0 {
        eprintln!("run: cargo run -p portsentry-docgen");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
