//! The production [`LogStore`] on sled 0.34.7.
//!
//! sled's own durability needs help (docs/DESIGN.md §5; the notes in ARCHITECTURE.md):
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
//! Everything lives in one sled tree, each kind of record under its own key prefix, so that a
//! [`WriteBatch`] is one `sled::Batch`: atomic, recovered all-or-nothing and in commit order,
//! without the cost of a multi-tree transaction (which re-reads every key it writes).
//!
//! Record layout. sled pays several microseconds per key written, so the log costs as few keys
//! as possible: an entry's record also carries the Merkle nodes its append completed (node
//! `(level, index)` is completed by the entry at position `((index + 1) << level) - 1`, so a node
//! is still one read away), and request IDs are the only other key per entry.
//!
//! ```text
//! e position (u64 BE)     -> n (u8), n × (level (u8), hash (32)), entry bytes
//! s position (u64 BE)     -> 16 entries from there, sealed (see [`super::sealed`]; older layout)
//! r request ID (16)       -> position (u64 BE), content digest (32)   (keyspace REQUESTS)
//! m name                  -> value     (m sealed.groups: what the group file holds, see [`group_file`])
//! p keyspace 0x00 key     -> value        (projections)
//! ```
//!
//! Entries the background check has verified are sealed ([`LogStore::seal`]): each aligned run
//! of [`GROUP`] `e` records becomes one sealed group, appended to a flat file beside sled's
//! ([`group_file`]), made durable there, and only then removed from sled, in one batch with the
//! count of groups the file holds (`m sealed.groups`). A reader asks the file, then sled, then
//! the file again ([`SledStore::find`]), so it finds an entry whenever it looks. A group keeps
//! only the nodes that reach beyond it; a node inside it is computed from its entries when
//! read. Groups sealed by earlier versions into sled itself (`s` records) are read where they
//! are and moved into the file when sealing reaches them.
//!
//! In production the projections and the request index live in memory over this store
//! ([`super::layered`]) and the `p` and `r` records stay empty; a data directory from before
//! keeps its old ones until a replay from entry 0 or a rebuild drops them.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use registry_core::merkle::{Hash, completing_position};
use uuid::Uuid;

use self::group_file::{Committed, GroupFile};
use super::sealed::{self, GROUP, Group, Nodes, Sealer};
use super::{
    Keyspace, LogStore, Record, RequestRecord, StoreError, Visitor, WriteBatch, decode_request,
    encode_request, position_key,
};

/// Groups sealed per sled batch: a batch holds sled's write lock while it applies, so it
/// stays small next to the writer's.
const SEAL_BATCH: u64 = 64;

pub mod group_file;
mod live;

pub use live::LiveBytes;

/// The meta record that says how much of the group file is sealed.
const SEALED_GROUPS: &[u8] = b"sealed.groups";

/// The one tree.
const TREE: &str = "registry/v1";
const ENTRY: u8 = b'e';
const SEALED: u8 = b's';
const REQUEST: u8 = b'r';
const META: u8 = b'm';
const PROJECTION: u8 = b'p';

fn prefixed(tag: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(tag);
    k.extend_from_slice(key);
    k
}

fn entry_key(position: u64) -> [u8; 9] {
    tagged_position(ENTRY, position)
}

/// The key of the sealed group that holds `position`.
fn sealed_key(position: u64) -> [u8; 9] {
    tagged_position(SEALED, position - position % GROUP)
}

fn tagged_position(tag: u8, position: u64) -> [u8; 9] {
    let mut k = [tag; 9];
    k[1..].copy_from_slice(&position_key(position));
    k
}

/// The prefix of a projection keyspace's records.
fn keyspace_prefix(keyspace: Keyspace) -> Vec<u8> {
    // The request index is the REQUESTS keyspace, whichever way it is written.
    if keyspace == super::REQUESTS {
        return vec![REQUEST];
    }
    let mut k = Vec::with_capacity(2 + keyspace.0.len());
    k.push(PROJECTION);
    k.extend_from_slice(keyspace.0.as_bytes());
    k.push(0);
    k
}

fn projection_key(keyspace: Keyspace, key: &[u8]) -> Vec<u8> {
    let mut k = keyspace_prefix(keyspace);
    k.extend_from_slice(key);
    k
}

fn position_of(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .get(1..)
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt("entry key is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(bytes))
}

/// An entry record: the nodes its append completed, then the entry.
fn encode_record(nodes: &[(u32, Hash)], entry: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + nodes.len() * 33 + entry.len());
    sealed::put_nodes(&mut v, nodes);
    v.extend_from_slice(entry);
    v
}

/// Splits an entry record into its nodes and the entry bytes.
fn decode_record(record: &[u8]) -> Result<(Nodes, &[u8]), StoreError> {
    sealed::take_nodes(record)
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Corruption { .. } => StoreError::Corrupt(e.to_string()),
            sled::Error::Io(io) => io.into(),
            other => StoreError::Io(other.to_string()),
        }
    }
}

/// Settings for the sled database.
#[derive(Debug, Clone)]
pub struct SledOptions {
    /// Page cache size in bytes.
    pub cache_capacity: u64,
    /// How long an open waits for sled's lock on the directory: sled's threads may hold a
    /// database dropped in this process for a while (seconds on a loaded machine).
    pub lock_wait: std::time::Duration,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self { cache_capacity: 512 * 1024 * 1024, lock_wait: std::time::Duration::from_secs(10) }
    }
}

impl SledOptions {
    /// The defaults with a page cache of `mib` MiB (the configuration's `cache_mib`: the
    /// server, `usage`, `restore` and `promote` open the log alike).
    pub fn with_cache_mib(mib: u64) -> Self {
        Self { cache_capacity: mib * 1024 * 1024, ..Self::default() }
    }
}

/// What [`SledStore::find`] found an entry in.
enum Found {
    /// Its own `e` record.
    Record(sled::IVec),
    /// Its sealed group: from the group file, or (copied) one an earlier version sealed into
    /// sled.
    Group(Vec<u8>),
}

/// The index of the entry at `position` in its group.
fn member(position: u64) -> usize {
    (position % GROUP) as usize
}

/// See the module documentation.
pub struct SledStore {
    dir: PathBuf,
    db: sled::Db,
    tree: sled::Tree,
    /// Our own handle on sled's data file, only for fsync (fsync acts on the inode).
    db_file: File,
    /// Blob files fsynced so far, with their length at the time. A sync may run while the
    /// writer is already writing the next batch (see `log::writer`), so a blob can be seen
    /// half-written; sled writes a blob front to back and never again, so a file whose length
    /// has not changed since its fsync has nothing left unsynced.
    synced_blobs: Mutex<HashMap<OsString, u64>>,
    /// Held by `sync` while sled flushes and by `write` while it applies a batch. sled's flush
    /// holds its global lock shared and `apply_batch` needs it exclusive; a batch waiting for
    /// that lock would make every reader queue behind it for the rest of the flush. Waiting here
    /// instead keeps readers out of it; the fsync after the flush still overlaps the next write.
    flushing: Mutex<()>,
    syncs: AtomicU64,
    /// The sealed groups that left sled.
    groups: GroupFile,
    /// One seal at a time: groups are appended to the file in order.
    sealing: Mutex<()>,
    /// Whether sled may still hold groups an earlier version sealed there (`s` records).
    old_groups: AtomicBool,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").field("dir", &self.dir).finish()
    }
}

fn poisoned_gate() -> StoreError {
    StoreError::Io("the flush gate is poisoned (a thread panicked in a write or sync)".into())
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

/// Runs `f`, turning a panic inside sled into an error that names the database and what sled
/// was `doing`. sled 0.34.7 panics on some damaged files instead of returning `Corruption` (for
/// example "tried to serialize Uninitialized" while recovering a flipped bit); the registry
/// must report damage, never crash on it, at a start or while it runs.
fn contained<T>(
    dir: &Path,
    doing: &str,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    CONTAINED.set(true);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINED.set(false);
    outcome.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(StoreError::Corrupt(format!(
            "the database in {} is damaged: expected sled to {doing}, found it failing ({what}). \
             {}",
            dir.display(),
            crate::store::RECOVER
        )))
    })
}

thread_local! {
    static CONTAINED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a panic on this thread happens inside sled where [`SledStore`] turns it into an
/// error: a panic hook then need not report it as a bug.
pub fn panic_is_contained() -> bool {
    CONTAINED.get()
}

/// Whether sled could not lock the directory. sled 0.34 reports it as `ErrorKind::Other` with
/// the OS error in the message (`could not acquire lock on ...: ... WouldBlock ...`), so a
/// retry that looked at the kind alone never retried.
fn is_lock_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock
        || e.to_string().starts_with("could not acquire lock")
}

/// Opens `config`'s database, retrying for up to `wait` while its directory is locked: sled's
/// I/O threads may still hold a just-dropped database (and its file lock) for a moment, so a
/// reopen in the same process retries; another process holding the directory still gets the
/// lock error, `wait` later.
pub(crate) fn open_retrying(
    config: &sled::Config,
    wait: std::time::Duration,
) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if is_lock_error(&e) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            opened => return opened,
        }
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. Damage sled finds while it recovers is an error
    /// naming the directory, never a panic.
    pub fn open(dir: &Path, options: &SledOptions) -> Result<Self, StoreError> {
        contained(dir, "recover its files", || Self::open_unguarded(dir, options))
    }

    fn open_unguarded(dir: &Path, options: &SledOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        remove_torn_snapshots(dir)?;
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_capacity)
            .flush_every_ms(None);
        let db = match open_retrying(&config, options.lock_wait) {
            // A flipped bit in sled's `conf` file reads as another version's settings.
            Err(e @ sled::Error::Unsupported(_)) => {
                return Err(StoreError::Corrupt(format!(
                    "the database in {} cannot be opened: sled says {e}; unless this data \
                     directory was written by another version of the registry, its `conf` \
                     file is damaged. {}",
                    dir.display(),
                    crate::store::RECOVER
                )));
            }
            Err(e @ sled::Error::Corruption { .. }) => {
                return Err(StoreError::Corrupt(format!(
                    "the database in {} is damaged: sled found {e}. {}",
                    dir.display(),
                    crate::store::RECOVER
                )));
            }
            opened => opened?,
        };
        let db_file = File::open(dir.join("db"))?;
        // Open may have created or renamed files; make those directory entries durable once.
        fsync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync_dir(parent)?;
        }
        let blobs = dir.join("blobs");
        let mut synced_blobs = HashMap::new();
        if blobs.is_dir() {
            for entry in std::fs::read_dir(&blobs)? {
                let entry = entry?;
                let len = entry.metadata()?.len();
                File::open(entry.path())?.sync_all()?;
                synced_blobs.insert(entry.file_name(), len);
            }
            fsync_dir(&blobs)?;
        }
        let tree = db.open_tree(TREE)?;
        let committed = match tree.get(prefixed(META, SEALED_GROUPS))? {
            Some(v) => Committed::decode(&v)?,
            None => Committed::default(),
        };
        Ok(Self {
            groups: GroupFile::open(dir, committed)?,
            dir: dir.to_path_buf(),
            db,
            db_file,
            synced_blobs: Mutex::new(synced_blobs),
            flushing: Mutex::new(()),
            syncs: AtomicU64::new(0),
            sealing: Mutex::new(()),
            old_groups: AtomicBool::new(tree.scan_prefix([SEALED]).next().is_some()),
            tree,
        })
    }

    /// Seals every whole group of entry records below `up_to` into the group file, in order,
    /// [`SEAL_BATCH`] groups per append and sled batch (the flush gate held only while one
    /// applies). A group an earlier version sealed into sled is moved as it is. Sealing stops
    /// at the first group that is neither (a log with a gap, never written by this store).
    fn seal_below(&self, up_to: u64) -> Result<u64, StoreError> {
        let _one = self.sealing.lock().map_err(|_| poisoned_gate())?;
        let mut sealer = Sealer::new()?;
        let mut sealed = 0;
        loop {
            let first = self.groups.count();
            let mut groups = Vec::new();
            let mut batch = sled::Batch::default();
            let mut rewritten = 0;
            while (groups.len() as u64) < SEAL_BATCH {
                let start = (first + groups.len() as u64) * GROUP;
                let end = start + GROUP;
                if end > up_to {
                    break;
                }
                if let Some(old) = self.old_group(start)? {
                    Group::parse(&old)?;
                    groups.push(old.to_vec());
                    batch.remove(&sealed_key(start));
                    continue;
                }
                let records: Vec<_> =
                    self.tree.range(entry_key(start)..entry_key(end)).collect::<Result<_, _>>()?;
                match records.len() as u64 {
                    0 => break,
                    GROUP => {}
                    n => {
                        return Err(StoreError::Corrupt(format!(
                            "entries {start}..{end} are verified but {n} of them are stored"
                        )));
                    }
                }
                let decoded =
                    records.iter().map(|(_, v)| decode_record(v)).collect::<Result<Vec<_>, _>>()?;
                groups.push(sealer.seal(&decoded)?);
                for (k, _) in records {
                    batch.remove(k);
                }
                rewritten += GROUP;
            }
            if groups.is_empty() {
                return Ok(sealed);
            }
            // Durable in the file and readable there before sled lets go of the records.
            let committed = self.groups.append(first, &groups)?;
            batch.insert(prefixed(META, SEALED_GROUPS), &committed.encode()[..]);
            let applied = {
                let _flush_done = self.flushing.lock().map_err(|_| poisoned_gate())?;
                self.tree.apply_batch(batch)
            };
            if let Err(e) = applied {
                self.groups.retract(first);
                return Err(e.into());
            }
            if self.old_groups.load(Ordering::Acquire)
                && self.tree.scan_prefix([SEALED]).next().is_none()
            {
                // Every old group is in the file now (published before it left sled).
                self.old_groups.store(false, Ordering::Release);
            }
            sealed += rewritten;
        }
    }

    /// Where the entry at `position` is. A seal makes a group readable in the file before it
    /// removes the records from sled, so the file is asked again last: in this order an entry
    /// is found whenever it is looked for, and a sealed one costs no lookup in sled.
    fn find(&self, position: u64) -> Result<Option<Found>, StoreError> {
        let g = position / GROUP;
        if let Some(group) = self.groups.read(g)? {
            return Ok(Some(Found::Group(group)));
        }
        if let Some(record) = self.tree.get(entry_key(position))? {
            return Ok(Some(Found::Record(record)));
        }
        if let Some(group) = self.old_group(position)? {
            return Ok(Some(Found::Group(group.to_vec())));
        }
        Ok(self.groups.read(g)?.map(Found::Group))
    }

    /// The group an earlier version sealed into sled that holds `position`, while any is left.
    fn old_group(&self, position: u64) -> Result<Option<sled::IVec>, StoreError> {
        if !self.old_groups.load(Ordering::Acquire) {
            return Ok(None);
        }
        Ok(self.tree.get(sealed_key(position))?)
    }

    /// How many times [`LogStore::sync`] completed.
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
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
        let mut present = HashMap::new();
        let mut new_files = false;
        for entry in std::fs::read_dir(&blobs)? {
            let entry = entry?;
            let name = entry.file_name();
            // The length before the fsync: whatever is written later makes the file longer.
            let len = match entry.metadata() {
                Ok(m) => m.len(),
                // sled deletes blobs it no longer needs; one may vanish under us.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            if synced.get(&name) != Some(&len) {
                match File::open(entry.path()) {
                    Ok(f) => f.sync_all()?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                }
                new_files |= !synced.contains_key(&name);
            }
            present.insert(name, len);
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
        contained(&self.dir, "read the log", || {
            let appended = match self.tree.scan_prefix([ENTRY]).next_back().transpose()? {
                None => 0,
                Some((k, _)) => position_of(&k)? + 1,
            };
            let sealed = match self.tree.scan_prefix([SEALED]).next_back().transpose()? {
                None => 0,
                Some((k, v)) => position_of(&k)? + Group::parse(&v)?.count() as u64,
            };
            Ok(appended.max(sealed).max(self.groups.count() * GROUP))
        })
    }

    fn entry(&self, position: u64) -> Result<Option<Vec<u8>>, StoreError> {
        contained(&self.dir, "read the log", || match self.find(position)? {
            None => Ok(None),
            Some(Found::Record(record)) => Ok(Some(decode_record(&record)?.1.to_vec())),
            Some(Found::Group(group)) => Group::parse(&group)?.entry(member(position)),
        })
    }

    fn entries(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        contained(&self.dir, "read the log", || {
            let mut out = Vec::with_capacity((end - start).min(4096) as usize);
            for item in self.tree.range(entry_key(start)..entry_key(end)) {
                let (k, v) = item?;
                out.push((position_of(&k)?, decode_record(&v)?.1.to_vec()));
            }
            // Groups after records, and the file's after sled's: an entry sealed (or a group
            // moved) while the records were walked shows up twice (kept once below), never not
            // at all.
            let mut from_groups = Vec::new();
            // The entries of the group that starts at `first` and lie in the range.
            let mut take = |first: u64, group: &[u8]| {
                Group::parse(group)?.each_entry(|i, entry| {
                    let position = first + i as u64;
                    if (start..end).contains(&position) {
                        from_groups.push((position, entry.to_vec()));
                    }
                })
            };
            for item in self.tree.range(sealed_key(start)..tagged_position(SEALED, end)) {
                let (k, v) = item?;
                take(position_of(&k)?, &v)?;
            }
            for g in start / GROUP..((end - 1) / GROUP + 1).min(self.groups.count()) {
                let Some(bytes) = self.groups.read(g)? else { break };
                take(g * GROUP, &bytes)?;
            }
            if !from_groups.is_empty() {
                out.append(&mut from_groups);
                out.sort_by_key(|(position, _)| *position);
                out.dedup_by_key(|(position, _)| *position);
            }
            Ok(out)
        })
    }

    fn node(&self, level: u32, index: u64) -> Result<Option<Hash>, StoreError> {
        let Some(position) = completing_position(level, index) else { return Ok(None) };
        let find = |nodes: &[(u32, Hash)]| nodes.iter().find(|(l, _)| *l == level).map(|(_, h)| *h);
        contained(&self.dir, "read the log", || match self.find(position)? {
            None => Ok(None),
            Some(Found::Record(record)) => Ok(find(&decode_record(&record)?.0)),
            Some(Found::Group(group)) => Group::parse(&group)?.node(member(position), level),
        })
    }

    fn seal(&self, up_to: u64) -> Result<u64, StoreError> {
        contained(&self.dir, "seal verified entries", || self.seal_below(up_to))
    }

    fn request(&self, id: &Uuid) -> Result<Option<RequestRecord>, StoreError> {
        contained(&self.dir, "read the request index", || {
            self.tree.get(prefixed(REQUEST, id.as_bytes()))?.map(|v| decode_request(&v)).transpose()
        })
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        contained(&self.dir, "read its metadata", || {
            Ok(self.tree.get(prefixed(META, key.as_bytes()))?.map(|v| v.to_vec()))
        })
    }

    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(projection_key(keyspace, key))?.map(|v| v.to_vec()))
    }

    fn scan_prefix(&self, keyspace: Keyspace, prefix: &[u8]) -> Result<Vec<Record>, StoreError> {
        let skip = keyspace_prefix(keyspace).len();
        self.tree
            .scan_prefix(projection_key(keyspace, prefix))
            .map(|item| {
                item.map(|(k, v)| (k[skip..].to_vec(), v.to_vec())).map_err(StoreError::from)
            })
            .collect()
    }

    fn for_each(&self, keyspace: Keyspace, visit: &mut Visitor<'_>) -> Result<(), StoreError> {
        let skip = keyspace_prefix(keyspace).len();
        for item in self.tree.scan_prefix(keyspace_prefix(keyspace)) {
            let (k, v) = item?;
            visit(&k[skip..], &v)?;
        }
        Ok(())
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut out = sled::Batch::default();
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
            out.insert(&entry_key(*pos), encode_record(&nodes, bytes));
        }
        if let Some(pos) = completed.keys().next() {
            return Err(StoreError::Corrupt(format!(
                "Merkle nodes for position {pos} were written without its entry"
            )));
        }
        for (id, r) in &batch.requests {
            out.insert(prefixed(REQUEST, id.as_bytes()), &encode_request(r)[..]);
        }
        for (k, v) in &batch.meta {
            out.insert(prefixed(META, k.as_bytes()), v.as_slice());
        }
        for w in batch.projections {
            let key = projection_key(w.keyspace, &w.key);
            match w.value {
                Some(v) => out.insert(key, v),
                None => out.remove(key),
            }
        }
        let _flush_done = self.flushing.lock().map_err(|_| poisoned_gate())?;
        contained(&self.dir, "apply a batch", || Ok(self.tree.apply_batch(out)?))
    }

    fn sync(&self) -> Result<(), StoreError> {
        {
            let _flushing = self.flushing.lock().map_err(|_| poisoned_gate())?;
            contained(&self.dir, "flush its log", || Ok(self.db.flush().map(|_| ())?))?;
        }
        self.db_file.sync_all()?;
        self.sync_blobs()?;
        self.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn clear_projections(&self, keyspaces: &[Keyspace]) -> Result<(), StoreError> {
        for ks in keyspaces {
            // In slices, so that no single batch holds sled's write lock for long.
            let mut keys = self.tree.scan_prefix(keyspace_prefix(*ks)).keys().peekable();
            while keys.peek().is_some() {
                let mut batch = sled::Batch::default();
                for key in keys.by_ref().take(10_000) {
                    batch.remove(key?);
                }
                self.tree.apply_batch(batch)?;
            }
        }
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()? + self.groups.disk_bytes()?)
    }
}

#[cfg(test)]
mod tests;
