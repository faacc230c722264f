//! The data directory's disk: whether it has room, and the emergency ballast that keeps some.
//!
//! A registry whose disk filled up must still serve reads after a restart, but sled cannot open
//! its database without writing. So the registry keeps a file of zeros in the data directory
//! (`emergency_ballast_mib`); a start that finds no room deletes it and opens read-only. The
//! ballast is never deleted to take more writes: its room is for reads after the disk filled.

use std::io::Write as _;
use std::path::Path;

/// Bytes a start must be able to write to its data directory's file system; with less, the
/// registry starts read-only instead of failing half-way through writes of its own.
const START_UP_SPACE: usize = 1 << 20;

/// The emergency ballast's file name in the data directory (see `emergency_ballast_mib`).
pub const BALLAST_FILE: &str = "emergency-ballast";

/// Decides whether this start is read-only: when the data directory's file system cannot take
/// [`START_UP_SPACE`] bytes besides a whole ballast, the ballast is deleted (sled needs room to
/// open) and the registry serves reads only. Otherwise the ballast is (re)made to its
/// configured size. The ballast's room is never given to writes: a restart on a disk that is
/// still full finds no room for the ballast and stays read-only, until space is freed.
pub fn make_room(data_dir: &Path, ballast_mib: u64) -> std::io::Result<bool> {
    let ballast = data_dir.join(BALLAST_FILE);
    let want = ballast_mib * 1024 * 1024;
    let have = std::fs::metadata(&ballast).map(|m| m.len()).unwrap_or(0);
    let room = space_for(data_dir, START_UP_SPACE)?
        && (have == want || remake(&ballast, ballast_mib)?)
        && space_for(data_dir, START_UP_SPACE)?;
    if room {
        return Ok(false);
    }
    match std::fs::remove_file(&ballast) {
        Ok(()) => {
            tracing::warn!(file = %ballast.display(), "the disk is full: deleted the emergency ballast to start read-only")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(true)
}

/// Writes the ballast anew; `false` when the disk has no room for it (nothing is left then).
fn remake(ballast: &Path, mib: u64) -> std::io::Result<bool> {
    let made = std::fs::File::create(ballast).and_then(|f| {
        let mut w = std::io::BufWriter::new(&f);
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..mib {
            w.write_all(&zeros)?;
        }
        w.flush()?;
        drop(w);
        f.sync_all()
    });
    match made {
        Ok(()) => {
            crate::files::sync_parent(ballast)?;
            Ok(true)
        }
        Err(e) => {
            let _ = std::fs::remove_file(ballast);
            if is_full(&e) { Ok(false) } else { Err(e) }
        }
    }
}

/// Whether the file system of `dir` takes `bytes` more (ENOSPC and EDQUOT say no): a probe file
/// is written, synced and removed.
fn space_for(dir: &Path, bytes: usize) -> std::io::Result<bool> {
    let probe = dir.join(".space-probe");
    let written = std::fs::File::create(&probe)
        .and_then(|mut f| f.write_all(&vec![0u8; bytes]).and_then(|()| f.sync_all()));
    let _ = std::fs::remove_file(&probe);
    match written {
        Ok(()) => Ok(true),
        Err(e) if is_full(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether an I/O error means the file system has no room left (ENOSPC or EDQUOT).
pub fn is_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(28 | 122))
}

/// Free and total bytes of the file system that holds `dir`, for the metrics; `None` where it
/// cannot be asked.
pub fn space(dir: &Path) -> Option<(u64, u64)> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some((s.f_bavail.saturating_mul(s.f_frsize), s.f_blocks.saturating_mul(s.f_frsize)))
}
