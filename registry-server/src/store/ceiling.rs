//! The storage ceiling: how many durable entries per second this disk gives a bare sled loop
//! (batch insert into one tree, flush, fsync) with nothing of the log around it, the way
//! PostgreSQL ships `pg_test_fsync`. Benchmarks divide the registry's durable append rate by
//! it; `registry-server storage-ceiling` runs it on the disk a deployment will use.

use std::path::Path;
use std::time::{Duration, Instant};

use super::StoreError;

/// What a ceiling run measured.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Ceiling {
    /// Entries made durable per second.
    pub entries_per_sec: f64,
    /// Group commits (insert batch + flush + fsync) per second.
    pub commits_per_sec: f64,
    /// Entries per group commit.
    pub batch: usize,
    /// sled keys written per entry.
    pub keys_per_entry: usize,
    /// Bytes of the entry value (further keys carry 96-byte values, like projection records).
    pub entry_bytes: usize,
}

/// Runs the bare loop in a fresh sled database under `dir` for `duration`: `batch` entries per
/// commit, each one sequential key of `entry_bytes` plus `keys_per_entry - 1` random 32-byte keys
/// (the projection records a registry entry writes), in one `sled::Batch`, then flush + fsync of
/// the data file, exactly as the log's store syncs.
pub fn bare_sled(
    dir: &Path,
    batch: usize,
    keys_per_entry: usize,
    entry_bytes: usize,
    duration: Duration,
) -> Result<Ceiling, StoreError> {
    let db = sled::Config::new().path(dir).flush_every_ms(None).open()?;
    let tree = db.open_tree("ceiling")?;
    let file = std::fs::File::open(dir.join("db"))?;
    let value = vec![0x5au8; entry_bytes];
    let projection = [0xa5u8; 96];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut random_key = move || {
        // SplitMix64: cheap, and random enough to spread keys over the tree as hashes do.
        let mut key = [0u8; 33];
        key[0] = b'p';
        for chunk in key[1..].chunks_mut(8) {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            chunk.copy_from_slice(&(z ^ (z >> 31)).to_be_bytes());
        }
        key
    };
    let started = Instant::now();
    let (mut entries, mut commits) = (0u64, 0u64);
    while started.elapsed() < duration {
        let mut b = sled::Batch::default();
        for _ in 0..batch.max(1) {
            let mut key = [b'e'; 9];
            key[1..].copy_from_slice(&entries.to_be_bytes());
            b.insert(&key[..], value.as_slice());
            for _ in 1..keys_per_entry {
                b.insert(&random_key()[..], &projection[..]);
            }
            entries += 1;
        }
        tree.apply_batch(b)?;
        db.flush()?;
        file.sync_all()?;
        commits += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Ceiling {
        entries_per_sec: entries as f64 / secs,
        commits_per_sec: commits as f64 / secs,
        batch: batch.max(1),
        keys_per_entry,
        entry_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bare_loop_makes_its_entries_durable_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let c = bare_sled(dir.path(), 8, 3, 100, Duration::from_millis(50)).unwrap();
        assert!(c.commits_per_sec > 0.0);
        assert!((c.entries_per_sec / c.commits_per_sec - 8.0).abs() < 1e-9, "{c:?}");
        // What it wrote is there after reopening (sled's threads may hold the dropped
        // database's lock for a moment, which the store's own open waits out).
        let db = crate::store::sled::open_retrying(
            &sled::Config::new().path(dir.path()),
            Duration::from_secs(5),
        )
        .unwrap();
        let tree = db.open_tree("ceiling").unwrap();
        let entries = tree.scan_prefix(b"e").count();
        assert!(entries >= 8 && entries.is_multiple_of(8), "{entries}");
        assert_eq!(tree.len(), entries * 3);
    }
}
