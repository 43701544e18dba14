//! The fleet key and the Redis password: files readable by root only. A file that
//! another user could read is refused with its path and mode, and the daemon does not
//! start: a leaked key lets anyone who reaches Redis inject bans.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Shortest fleet key accepted (bytes).
const MIN_KEY: usize = 16;

/// The contents of `path` (without a trailing newline), once its owner and mode show
/// that only root (or this process's user) can read it. `what`: the setting's name.
pub fn read_private(path: &Path, what: &str) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("{what} {}: cannot read it", path.display()))?;
    if !meta.is_file() {
        bail!("{what} {}: not a regular file", path.display());
    }
    let mode = meta.mode() & 0o7777;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if mode & 0o077 != 0 {
        bail!(
            "{what} {}: readable by users other than its owner (mode {mode:04o}); make it readable by root only: chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    if meta.uid() != 0 && meta.uid() != me {
        bail!(
            "{what} {}: owned by uid {}, not root; chown root {}",
            path.display(),
            meta.uid(),
            path.display()
        );
    }
    let mut bytes = std::fs::read(path)
        .with_context(|| format!("{what} {}: cannot read it", path.display()))?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Ok(bytes)
}

/// The fleet key from `path`: at least 16 bytes.
pub fn read_key(path: &Path) -> Result<Vec<u8>> {
    let key = read_private(path, "fleet.key_file")?;
    if key.len() < MIN_KEY {
        bail!(
            "fleet.key_file {}: the key is {} bytes; use at least {MIN_KEY} (e.g. head -c 32 /dev/urandom | base64)",
            path.display(),
            key.len()
        );
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_key_readable_by_others_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.key");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", read_key(&path).unwrap_err());
        assert!(
            e.contains("fleet.key.") || e.contains(&path.display().to_string()),
            "{e}"
        );
        assert!(e.contains("mode 0644"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key(&path).unwrap(), b"0123456789abcdef0123");
        std::fs::write(&path, "short").unwrap();
        assert!(read_key(&path).is_err());
    }
}
