//! The production [`LogStore`] on sled 0.34.7.
//!
//! sled's own durability needs help (DESIGN.md §5; the notes in ARCHITECTURE.md):
//!
//! - `flush()` writes the log with `sync_file_range`, which neither persists the file's size nor
//!   flushes the disk's cache, so [`SledStore::sync`] fsyncs the `db` file after every flush;
//! - values too big for a segment go to `blobs/<lsn>` files that sled never fsyncs, so every new
//!   blob file and the `blobs/` directory are fsynced too;
//! - a crash while sled writes a snapshot on open can leave `snap.*.generating`, which sled 0.34.7
//!   then mistakes for the newest snapshot; such a file was never complete, so it is removed
//!   before opening;
//! - the background flusher is switched off: the writer decides when data goes to disk.
//!
//! Every [`WriteBatch`] is one sled transaction over the trees it touches, which sled recovers
//! all-or-nothing and in commit order.
//!
//! Record layout. sled pays several microseconds per key written, so the log costs as few keys
//! as possible: an entry's record also carries the Merkle nodes its append completed (node
//! `(level, index)` is completed by the entry at position `((index + 1) << level) - 1`, so a node
//! is still one read away), and request IDs are the only other key per entry. Clients that use
//! time-ordered UUIDv7 request IDs make those inserts sequential too.
//!
//! ```text
//! log/entries   position (u64 BE) -> n (u8), n × (level (u8), hash (32)), entry bytes
//! log/requests  request ID (16)   -> position (u64 BE), content digest (32)
//! log/meta      name              -> value
//! projection/*  key               -> value
//! ```

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use registry_proto::merkle::Hash;
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use uuid::Uuid;

use super::{
    Keyspace, LogStore, Record, RequestRecord, StoreError, WriteBatch, decode_hash, decode_request,
    encode_request, position_key,
};

const ENTRIES: &str = "log/entries";
const REQUESTS: &str = "log/requests";
const META: &str = "log/meta";

/// The position whose append completes perfect node (`level`, `index`).
fn completing_position(level: u32, index: u64) -> Option<u64> {
    index.checked_add(1)?.checked_shl(level)?.checked_sub(1)
}

/// An entry record: the nodes its append completed, then the entry.
fn encode_record(nodes: &[(u32, Hash)], entry: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + nodes.len() * 33 + entry.len());
    v.push(nodes.len() as u8);
    for (level, hash) in nodes {
        v.push(*level as u8);
        v.extend_from_slice(hash);
    }
    v.extend_from_slice(entry);
    v
}

/// Splits an entry record into its nodes and the entry bytes.
/// The perfect nodes stored with an entry: (level, hash).
type Nodes = Vec<(u32, Hash)>;

fn decode_record(record: &[u8]) -> Result<(Nodes, &[u8]), StoreError> {
    let corrupt = || StoreError::Corrupt("entry record is truncated".into());
    let (&n, mut rest) = record.split_first().ok_or_else(corrupt)?;
    let mut nodes = Vec::with_capacity(n as usize);
    for _ in 0..n {
        if rest.len() < 33 {
            return Err(corrupt());
        }
        nodes.push((u32::from(rest[0]), decode_hash(&rest[1..33])?));
        rest = &rest[33..];
    }
    Ok((nodes, rest))
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Corruption { .. } => StoreError::Corrupt(e.to_string()),
            other => StoreError::Io(other.to_string()),
        }
    }
}

/// Settings for the sled database.
#[derive(Debug, Clone)]
pub struct SledOptions {
    /// Page cache size in bytes.
    pub cache_capacity: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self { cache_capacity: 512 * 1024 * 1024 }
    }
}

/// See the module documentation.
pub struct SledStore {
    dir: PathBuf,
    db: sled::Db,
    entries: sled::Tree,
    requests: sled::Tree,
    meta: sled::Tree,
    projections: Mutex<HashMap<Keyspace, sled::Tree>>,
    /// Our own handle on sled's data file, only for fsync (fsync acts on the inode).
    db_file: File,
    synced_blobs: Mutex<HashSet<OsString>>,
    syncs: AtomicU64,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").field("dir", &self.dir).finish()
    }
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes snapshot files that sled was still generating when the process died: they were never
/// renamed into place, so they hold nothing committed, but sled 0.34.7 would pick them up.
fn remove_torn_snapshots(dir: &Path) -> std::io::Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %entry.path().display(), "removing torn sled snapshot");
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, options: &SledOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        remove_torn_snapshots(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_capacity)
            .flush_every_ms(None)
            .open()?;
        let db_file = File::open(dir.join("db"))?;
        // Open may have created or renamed files; make those directory entries durable once.
        fsync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync_dir(parent)?;
        }
        let blobs = dir.join("blobs");
        let synced_blobs = if blobs.is_dir() {
            for entry in std::fs::read_dir(&blobs)? {
                File::open(entry?.path())?.sync_all()?;
            }
            fsync_dir(&blobs)?;
            std::fs::read_dir(&blobs)?.filter_map(|e| e.ok().map(|e| e.file_name())).collect()
        } else {
            HashSet::new()
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            entries: db.open_tree(ENTRIES)?,
            requests: db.open_tree(REQUESTS)?,
            meta: db.open_tree(META)?,
            db,
            projections: Mutex::new(HashMap::new()),
            db_file,
            synced_blobs: Mutex::new(synced_blobs),
            syncs: AtomicU64::new(0),
        })
    }

    /// How many times [`LogStore::sync`] completed.
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    fn projection(&self, keyspace: Keyspace) -> Result<sled::Tree, StoreError> {
        let mut trees = self
            .projections
            .lock()
            .map_err(|_| StoreError::Io("projection tree cache lock poisoned".into()))?;
        if let Some(t) = trees.get(&keyspace) {
            return Ok(t.clone());
        }
        let tree = self.db.open_tree(format!("projection/{}", keyspace.0))?;
        trees.insert(keyspace, tree.clone());
        Ok(tree)
    }

    /// fsyncs blob files created since the last sync, and their directory.
    fn sync_blobs(&self) -> Result<(), StoreError> {
        let blobs = self.dir.join("blobs");
        if !blobs.is_dir() {
            return Ok(());
        }
        let mut synced = self
            .synced_blobs
            .lock()
            .map_err(|_| StoreError::Io("blob set lock poisoned".into()))?;
        let mut present = HashSet::new();
        let mut new_files = false;
        for entry in std::fs::read_dir(&blobs)? {
            let entry = entry?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                match File::open(entry.path()) {
                    Ok(f) => f.sync_all()?,
                    // sled deletes blobs it no longer needs; one may vanish under us.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                }
                new_files = true;
            }
            present.insert(name);
        }
        if new_files {
            fsync_dir(&blobs)?;
        }
        *synced = present;
        Ok(())
    }
}

impl LogStore for SledStore {
    fn size(&self) -> Result<u64, StoreError> {
        match self.entries.last()? {
            None => Ok(0),
            Some((k, _)) => {
                let key: [u8; 8] = k
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("entry key is not 8 bytes".into()))?;
                Ok(u64::from_be_bytes(key) + 1)
            }
        }
    }

    fn entry(&self, position: u64) -> Result<Option<Vec<u8>>, StoreError> {
        match self.entries.get(position_key(position))? {
            None => Ok(None),
            Some(record) => Ok(Some(decode_record(&record)?.1.to_vec())),
        }
    }

    fn entries(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity((end - start).min(4096) as usize);
        for item in self.entries.range(position_key(start)..position_key(end)) {
            let (k, v) = item?;
            let key: [u8; 8] = k
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("entry key is not 8 bytes".into()))?;
            out.push((u64::from_be_bytes(key), decode_record(&v)?.1.to_vec()));
        }
        Ok(out)
    }

    fn node(&self, level: u32, index: u64) -> Result<Option<Hash>, StoreError> {
        let Some(position) = completing_position(level, index) else { return Ok(None) };
        let Some(record) = self.entries.get(position_key(position))? else { return Ok(None) };
        let (nodes, _) = decode_record(&record)?;
        Ok(nodes.into_iter().find(|(l, _)| *l == level).map(|(_, h)| h))
    }

    fn request(&self, id: &Uuid) -> Result<Option<RequestRecord>, StoreError> {
        self.requests.get(id.as_bytes())?.map(|v| decode_request(&v)).transpose()
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.projection(keyspace)?.get(key)?.map(|v| v.to_vec()))
    }

    fn scan_prefix(&self, keyspace: Keyspace, prefix: &[u8]) -> Result<Vec<Record>, StoreError> {
        self.projection(keyspace)?
            .scan_prefix(prefix)
            .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(StoreError::from))
            .collect()
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // One sled::Batch per tree, all applied in a single transaction.
        let mut trees = vec![self.entries.clone(), self.requests.clone(), self.meta.clone()];
        let mut batches: Vec<sled::Batch> = (0..3).map(|_| sled::Batch::default()).collect();
        let mut completed: HashMap<u64, Vec<(u32, Hash)>> = HashMap::new();
        for n in &batch.nodes {
            let position = completing_position(n.level, n.index).ok_or_else(|| {
                StoreError::Corrupt(format!("node ({}, {}) is outside any tree", n.level, n.index))
            })?;
            completed.entry(position).or_default().push((n.level, n.hash));
        }
        for (pos, bytes) in &batch.entries {
            let mut nodes = completed.remove(pos).unwrap_or_default();
            nodes.sort_unstable_by_key(|(level, _)| *level);
            batches[0].insert(&position_key(*pos), encode_record(&nodes, bytes));
        }
        if let Some(pos) = completed.keys().next() {
            return Err(StoreError::Corrupt(format!(
                "Merkle nodes for position {pos} were written without its entry"
            )));
        }
        for (id, r) in &batch.requests {
            batches[1].insert(id.as_bytes(), &encode_request(r)[..]);
        }
        for (k, v) in &batch.meta {
            batches[2].insert(k.as_bytes(), v.as_slice());
        }
        let mut slot: HashMap<Keyspace, usize> = HashMap::new();
        for w in &batch.projections {
            let i = match slot.get(&w.keyspace) {
                Some(i) => *i,
                None => {
                    trees.push(self.projection(w.keyspace)?);
                    batches.push(sled::Batch::default());
                    slot.insert(w.keyspace, trees.len() - 1);
                    trees.len() - 1
                }
            };
            match &w.value {
                Some(v) => batches[i].insert(w.key.as_slice(), v.as_slice()),
                None => batches[i].remove(w.key.as_slice()),
            }
        }
        trees
            .as_slice()
            .transaction(|tx| {
                for (t, b) in tx.iter().zip(&batches) {
                    t.apply_batch(b)?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => StoreError::from(e),
                sled::transaction::TransactionError::Abort(()) => {
                    StoreError::Io("sled transaction aborted".into())
                }
            })
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.db_file.sync_all()?;
        self.sync_blobs()?;
        self.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn clear_projections(&self, keyspaces: &[Keyspace]) -> Result<(), StoreError> {
        for ks in keyspaces {
            self.projection(*ks)?.clear()?;
        }
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    #[test]
    fn the_sled_store_passes_the_conformance_suite() {
        conformance::run_all(&mut conformance::SledFactory::new());
    }

    #[test]
    fn a_torn_snapshot_is_removed_before_opening() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
        let batch = WriteBatch { entries: vec![(0, b"entry".to_vec())], ..Default::default() };
        store.write(batch).unwrap();
        store.sync().unwrap();
        drop(store);
        let torn = dir.path().join("snap.FFFFFFFFFFFFFFFF.generating");
        std::fs::write(&torn, b"half a snapshot").unwrap();
        let store = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
        assert!(!torn.exists());
        assert_eq!(store.entry(0).unwrap(), Some(b"entry".to_vec()));
    }
}
