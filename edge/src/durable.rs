//! Small state files that must survive a power cut whole or not at all.
//!
//! [`write_atomic`] writes a sibling temporary file, syncs it, renames it over
//! the target and syncs the directory: a reader sees the old content or the
//! new, never a torn mix. [`set_aside`] moves a damaged file out of the way
//! (keeping it for inspection) so that the node can start on a fresh one.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Replace `path` with `bytes`, atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // The rename is durable once the directory is.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Move a damaged `path` aside as `<name>.damaged-<unix seconds>` and return
/// the new name; the caller starts on a fresh file.
pub fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let mut to = path.with_file_name(format!("{name}.damaged-{secs}"));
    let mut n = 1;
    while to.exists() {
        to = path.with_file_name(format!("{name}.damaged-{secs}-{n}"));
        n += 1;
    }
    std::fs::rename(path, &to)?;
    Ok(to)
}

/// How a state file of earlier runs was found at start, judged by a marker
/// file beside it (`<name>.present`, written once the file was opened).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// First start, or the file is there with content.
    Fine,
    /// The marker says earlier runs had it, but it is gone.
    Missing,
    /// The marker says earlier runs had it, but it is empty (0 bytes).
    Empty,
}

impl Found {
    /// Check `path` against its marker.
    pub fn check(path: &Path) -> Found {
        if !marker(path).exists() {
            return Found::Fine;
        }
        match std::fs::metadata(path) {
            Err(_) => Found::Missing,
            Ok(m) if m.len() == 0 => Found::Empty,
            Ok(_) => Found::Fine,
        }
    }

    /// Words for the log.
    pub fn describe(self) -> &'static str {
        match self {
            Found::Fine => "fine",
            Found::Missing => "missing",
            Found::Empty => "empty (0 bytes)",
        }
    }
}

fn marker(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    path.with_file_name(format!("{name}.present"))
}

/// Note that `path` exists (for [`Found::check`] at the next start).
pub fn mark_present(path: &Path) -> std::io::Result<()> {
    let m = marker(path);
    if m.exists() {
        return Ok(());
    }
    write_atomic(
        &m,
        b"this file says that the state file beside it existed; do not delete\n",
    )
}

/// True when `e` (or its text, for libraries that flatten errors) says the
/// disk is full.
pub fn is_disk_full(text: &str) -> bool {
    text.contains("No space left") || text.contains("os error 28") || text.contains("StorageFull")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_set_aside_keeps_the_old_file() {
        let dir = std::env::temp_dir().join(format!("triad-durable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(!dir.join(".state.json.tmp").exists());
        let aside = set_aside(&p).unwrap();
        assert!(!p.exists());
        assert_eq!(std::fs::read(&aside).unwrap(), b"two");
        assert!(
            aside
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("state.json.damaged-")
        );
    }
}
