//! Small files replaced whole and durably: the projection snapshot and the signed-checkpoint
//! witness.
//!
//! [`replace`] writes a temporary file beside the target, fsyncs it, renames it over the target
//! and fsyncs the directory, so after a crash the target holds either its old bytes or the new
//! ones, never a mix. A failure at any step removes the temporary file: a full disk must not be
//! made fuller by what a failed write left behind.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The temporary file [`replace`] writes before renaming it over `path`.
pub fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `bytes` durably (see the module documentation).
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temporary(path);
    let written = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_parent(path)
}

/// Removes a temporary file a killed process may have left (a start calls this before anything
/// else writes there).
pub fn remove_leftover(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(temporary(path)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// fsyncs the directory holding `path`, so that a rename or removal there survives a crash.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_holds_the_new_bytes_and_no_temporary_file_remains() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("witness");
        replace(&path, b"old").unwrap();
        replace(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(names.len(), 1, "only the file itself: {names:?}");
    }

    #[test]
    fn a_failed_replace_leaves_the_old_file_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("witness");
        replace(&path, b"old").unwrap();
        // A directory where the rename would land makes the last step fail.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"").unwrap();
        assert!(replace(&blocked, b"new").is_err());
        assert!(!temporary(&blocked).exists(), "the temporary file is removed");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
    }
}
