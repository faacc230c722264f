//! The production store: the log in an inner store (sled), the projections in memory.
//!
//! Writing each projection record into sled cost more than everything else a registration
//! does (sled pays several microseconds per random key, and a registration touches about six),
//! and rebuilding them from the log spent most of its time there too. The projections are
//! derived from the log anyway, so here they live in memory, in three sorted layers:
//!
//! ```text
//! active   every write since the last cut (a BTreeMap; deletions as tombstones)
//! frozen   the writes of a cut whose snapshot is being written (read-only, shared)
//! base     the last snapshot (super::snapshot), as read at start or written since
//! ```
//!
//! A read looks in that order. When the active layer has grown to a quarter of the base (at
//! least the configured minimum), the writer's `write` freezes it (a pointer swap) at the log
//! size S the projections exactly reflect (never while the writer holds records back,
//! [`WriteBatch::held_back`]: the store asks for them first, [`LogStore::projections_wanted`]),
//! and a background thread merges frozen and base into a new snapshot, waits until the
//! writer's own syncs have made the log durable up to S (it never syncs itself, so a failed
//! fsync is only ever seen by the writer, which then stops),
//! installs the file and swaps it in as the base. A clean stop writes one more
//! ([`LogStore::persist_projections`]). At start the base is the snapshot on disk if it belongs
//! to this log; its size is what [`LogStore::projected_size`] reports, and the machine replays
//! the log after it before the writer starts (`Machine::open`). A lost or damaged snapshot only
//! makes that replay longer: the log is the only source of truth. A snapshot that the log does
//! not continue (ahead of it, or cut after an entry the log no longer has) is a refusal to
//! start: it is evidence that the log lost entries it had made durable.
//!
//! The request index is kept here too, in [`super::REQUESTS`]: it is derived from the log like
//! the projections (a replay and a rebuild write it again), and as a random-key sled tree it
//! cost the writer more than any other part of its sled write.
//!
//! A batch is written in two steps ([`LogStore::stage`]): its projections and request IDs go
//! into the active layer at once, where the writer reads them back; its entries, nodes and
//! metadata go to the inner store when the syncer applies them, before its sync. A failed
//! apply marks the store failed, since the layers are then ahead of the log. How reads merge
//! the layers is in `read.rs`.
//!
//! Every batch with entries must say the log size its projections then reach
//! ([`WriteBatch::projected_size`]) and continue exactly where they are, so nothing can ever be
//! appended on top of projections that lag behind the log.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use registry_core::merkle::{self, Hash};
use uuid::Uuid;

use super::snapshot::Snapshot;
use super::{Keyspace, LogStore, Record, RequestRecord, StoreError, Visitor, WriteBatch};
use cut::Backoff;

/// Fewest records the active layer holds before a cut (the default of `snapshot_min_records`).
pub const MIN_CUT: usize = 100_000;

/// Records a projection walk copies per read lock, so a long walk never holds the writer up.
const WALK_CHUNK: usize = 4_096;

/// Chunks a walk reads between two hand-backs of the base's pages (see [`Snapshot::release`]).
const RELEASE_EVERY: usize = 64;

type Layer = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

#[derive(Debug)]
struct Layers {
    active: Layer,
    frozen: Option<Arc<Layer>>,
    base: Arc<Snapshot>,
    /// The log size the layers reflect; `None` while they are being rebuilt.
    projected: Option<u64>,
    /// The last batch that set `projected` came from a writer holding records back
    /// ([`WriteBatch::held_back`]): the layers are not whole at that size, and nothing may be
    /// frozen until a batch that carries them, whichever thread writes in between.
    held_back: bool,
    /// When the base was put in use: with its size, how fast the log has grown since.
    based_at: std::time::Instant,
}

impl Layers {
    /// Puts `snapshot` in use as the base.
    fn set_base(&mut self, snapshot: Snapshot) {
        self.base = Arc::new(snapshot);
        self.based_at = std::time::Instant::now();
    }

    /// How fast the log grew (entries a second) since the base was put in use.
    fn growth(&self) -> f64 {
        let size = self.base.size();
        let grown = self.projected.unwrap_or(size).saturating_sub(size) as f64;
        grown / self.based_at.elapsed().as_secs_f64().max(0.001)
    }
}

/// What the store's own syncs achieved, for cuts waiting on them.
#[derive(Debug, Default)]
struct Durability {
    /// Log size after the last write.
    written: u64,
    /// Log size after the last batch staged (at least `written`).
    staged: u64,
    /// Log size the last completed sync covered (0 until the first: what a start finds on disk
    /// may still sit in the page cache of a process that was killed).
    synced: u64,
    /// A sync failed: nothing more becomes durable.
    failed: bool,
    /// The store is being dropped: a waiting cut gives up.
    closing: bool,
}

struct Shared {
    inner: Arc<dyn LogStore>,
    path: PathBuf,
    layers: RwLock<Layers>,
    durability: Mutex<Durability>,
    /// Notified whenever `durability` moves: a cut waits on it for what it covers to be
    /// written, then synced.
    moved: Condvar,
    /// The background cut, if one was started: joined before the next and at the end.
    cutting: Mutex<Option<std::thread::JoinHandle<()>>>,
    min_cut: usize,
    /// After a failed cut, no new one starts before this: a snapshot that cannot be written
    /// (a full disk) is retried after 1 s, 2 s, 4 s, ... up to [`MAX_BACKOFF`], not at every
    /// write, where each try would fill the disk again with a temporary file.
    backoff: Mutex<Backoff>,
    /// How long the last snapshot took to cut, in microseconds (0: none cut since the start).
    last_cut_micros: std::sync::atomic::AtomicU64,
    /// The growth (entries a second) above which cuts are spaced out as for a copy (a replica
    /// catching up), if they are: see [`Shared::cut_due`].
    pace_copies: Option<f64>,
}

/// See the module documentation.
pub struct LayeredStore {
    shared: Arc<Shared>,
}

fn poisoned() -> StoreError {
    StoreError::Io("projection layers lock poisoned".into())
}

/// Where a keyspace's key lives in the sorted layers.
fn full_key(keyspace: Keyspace, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(keyspace.0.len() + 1 + key.len());
    k.extend_from_slice(keyspace.0.as_bytes());
    k.push(0);
    k.extend_from_slice(key);
    k
}

impl LayeredStore {
    /// Opens the projections over `inner` from the snapshot at `path`, when there is one that
    /// belongs to `inner`'s log; a new cut starts once `min_cut` records changed (or a quarter
    /// of the snapshot's, if more).
    pub fn open(inner: Arc<dyn LogStore>, path: &Path, min_cut: usize) -> Result<Self, StoreError> {
        Self::with_snapshot(inner, path, Snapshot::read(path), min_cut)
    }

    /// [`LayeredStore::open`] with the snapshot file already read (a start reads it while the
    /// inner store opens).
    pub fn with_snapshot(
        inner: Arc<dyn LogStore>,
        path: &Path,
        read: Result<Option<Snapshot>, StoreError>,
        min_cut: usize,
    ) -> Result<Self, StoreError> {
        // A temporary file a killed cut left behind holds nothing anyone needs.
        crate::files::remove_leftover(path)?;
        let _ = std::fs::remove_file(path.with_extension("tmp")); // the name before 2026-12-05
        let size = inner.size()?;
        let base = match read {
            // A snapshot cut from this log's durable entries that the log no longer matches
            // means the log lost or changed entries it had made durable: that is never a
            // warning (see `crate::log::witness`).
            Ok(Some(snapshot)) => match belongs(inner.as_ref(), &snapshot, size)? {
                Ok(()) => snapshot,
                Err(why) => {
                    return Err(StoreError::Corrupt(format!(
                        "the projection snapshot {} was cut from durable entries the log no \
                         longer holds: {why}. {}",
                        path.display(),
                        crate::store::RECOVER
                    )));
                }
            },
            Ok(None) => Snapshot::empty(),
            Err(StoreError::Corrupt(why)) => {
                tracing::warn!(path = %path.display(), why, "the projection snapshot is damaged; replaying the whole log");
                Snapshot::empty()
            }
            Err(e) => return Err(e),
        };
        tracing::info!(
            size = base.size(),
            records = base.len(),
            bytes = base.encoded_len(),
            "projection snapshot in use"
        );
        let projected = Some(base.size());
        Ok(Self {
            shared: Arc::new(Shared {
                inner,
                path: path.to_path_buf(),
                layers: RwLock::new(Layers {
                    active: Layer::new(),
                    frozen: None,
                    base: Arc::new(base),
                    projected,
                    held_back: false,
                    based_at: std::time::Instant::now(),
                }),
                durability: Mutex::new(Durability {
                    written: size,
                    staged: size,
                    ..Default::default()
                }),
                moved: Condvar::new(),
                cutting: Mutex::new(None),
                min_cut: min_cut.max(1),
                backoff: Mutex::new(Backoff::default()),
                last_cut_micros: Default::default(),
                pace_copies: None,
            }),
        })
    }

    /// Spaces cuts out while the log grows faster than `above` entries a second (a replica
    /// catching up: [`super::COPYING_RATE`]), see [`Shared::cut_due`]. Only right after
    /// opening, before the store is shared.
    pub fn pacing_copies(mut self, above: f64) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.pace_copies = Some(above);
        }
        self
    }

    /// The log size of the snapshot in use (tests, benchmarks).
    pub fn snapshot_size(&self) -> Result<u64, StoreError> {
        Ok(self.shared.layers.read().map_err(|_| poisoned())?.base.size())
    }

    /// Waits for a cut in progress to finish.
    pub fn wait_for_cut(&self) -> Result<(), StoreError> {
        self.shared.join_cut()
    }
}

impl Drop for LayeredStore {
    /// A cut still running holds the inner store open (sled stays locked) and could install
    /// its file after a reopened store wrote a newer one, so it is stopped and joined here.
    fn drop(&mut self) {
        if let Ok(mut d) = self.shared.durability.lock() {
            d.closing = true;
        }
        self.shared.moved.notify_all();
        if let Err(e) = self.shared.join_cut() {
            tracing::error!(error = %e, "stopping the projection snapshot thread");
        }
    }
}

/// Whether `snapshot` was cut from this log: not beyond its end, and its last entry is ours.
fn belongs(
    inner: &dyn LogStore,
    snapshot: &Snapshot,
    size: u64,
) -> Result<Result<(), String>, StoreError> {
    if snapshot.size() > size {
        return Ok(Err(format!("it is at log size {} but the log has {size}", snapshot.size())));
    }
    if leaf_at(inner, snapshot.size())? != snapshot.last_leaf() {
        return Ok(Err(format!(
            "entry {} differs from the one it was cut after",
            snapshot.size().saturating_sub(1)
        )));
    }
    Ok(Ok(()))
}

/// Leaf hash of entry `size - 1` (zeros for an empty log).
pub fn leaf_at(inner: &dyn LogStore, size: u64) -> Result<Hash, StoreError> {
    if size == 0 {
        return Ok([0; 32]);
    }
    let entry = inner
        .entry(size - 1)?
        .ok_or_else(|| StoreError::Corrupt(format!("entry {} is missing", size - 1)))?;
    Ok(merkle::leaf_hash(&entry))
}

impl Shared {
    fn durability(&self) -> Result<std::sync::MutexGuard<'_, Durability>, StoreError> {
        self.durability.lock().map_err(|_| poisoned())
    }

    /// Joins the background cut; one that panicked gives its frozen writes back.
    fn join_cut(&self) -> Result<(), StoreError> {
        let handle = self.cutting.lock().map_err(|_| poisoned())?.take();
        if let Some(h) = handle
            && h.join().is_err()
        {
            tracing::error!("the projection snapshot thread panicked");
            Self::unfreeze(&mut *self.layers.write().map_err(|_| poisoned())?);
        }
        Ok(())
    }

    /// The inner store's sync, recorded for waiting cuts. After one failure none is tried again.
    fn sync(&self) -> Result<(), StoreError> {
        let written = {
            let d = self.durability()?;
            if d.failed {
                return Err(StoreError::Io("an earlier sync failed".into()));
            }
            d.written
        };
        let outcome = self.inner.sync();
        let mut d = self.durability()?;
        match &outcome {
            Ok(()) => d.synced = d.synced.max(written),
            Err(_) => d.failed = true,
        }
        drop(d);
        self.moved.notify_all();
        outcome
    }

    /// Waits until the writer's syncs have made the log durable up to `size`.
    fn wait_synced(&self, size: u64) -> Result<(), StoreError> {
        self.wait_for(size, |d| d.synced)
    }

    /// Waits until `reached` (how far the log is written, or synced) is at least `size`.
    fn wait_for(&self, size: u64, reached: fn(&Durability) -> u64) -> Result<(), StoreError> {
        let mut d = self.durability()?;
        loop {
            if d.failed {
                return Err(StoreError::Io(
                    "a write or sync failed; the snapshot is not installed".into(),
                ));
            }
            if d.closing {
                return Err(StoreError::Io("the store closed before the log was synced".into()));
            }
            if reached(&d) >= size {
                return Ok(());
            }
            d = self.moved.wait(d).map_err(|_| poisoned())?;
        }
    }
}

impl LogStore for LayeredStore {
    fn size(&self) -> Result<u64, StoreError> {
        let staged = self.shared.durability()?.staged;
        Ok(self.shared.inner.size()?.max(staged))
    }
    fn entry(&self, position: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.shared.inner.entry(position)
    }
    fn entries(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.shared.inner.entries(start, end)
    }
    fn node(&self, level: u32, index: u64) -> Result<Option<Hash>, StoreError> {
        self.shared.inner.node(level, index)
    }
    fn seal(&self, up_to: u64) -> Result<u64, StoreError> {
        self.shared.inner.seal(up_to)
    }
    fn request(&self, id: &Uuid) -> Result<Option<RequestRecord>, StoreError> {
        self.get(super::REQUESTS, id.as_bytes())?.map(|v| super::decode_request(&v)).transpose()
    }
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.shared.inner.meta(key)
    }

    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = full_key(keyspace, key);
        Ok(self.shared.layers.read().map_err(|_| poisoned())?.get(&key))
    }

    fn scan_prefix(&self, keyspace: Keyspace, prefix: &[u8]) -> Result<Vec<Record>, StoreError> {
        let start = full_key(keyspace, prefix);
        let strip = keyspace.0.len() + 1;
        let layers = self.shared.layers.read().map_err(|_| poisoned())?;
        let records = layers.range(Bound::Included(&start), |k| k.starts_with(&start), usize::MAX);
        drop(layers);
        Ok(records.into_iter().map(|(mut k, v)| (k.split_off(strip), v)).collect())
    }

    fn for_each(&self, keyspace: Keyspace, visit: &mut Visitor<'_>) -> Result<(), StoreError> {
        let start = full_key(keyspace, b"");
        let mut last: Option<Vec<u8>> = None;
        let mut walked = 0;
        loop {
            let chunk = {
                let layers = self.shared.layers.read().map_err(|_| poisoned())?;
                let from = last.as_deref().map_or(Bound::Included(&start[..]), Bound::Excluded);
                layers.range(from, |k| k.starts_with(&start), WALK_CHUNK)
            };
            for (k, v) in &chunk {
                visit(&k[start.len()..], v)?;
            }
            if chunk.len() < WALK_CHUNK {
                // A whole walk (the key cache's fill) has decoded what it read: the base's
                // pages go back to the kernel rather than stay resident beside the copy.
                self.shared.layers.read().map_err(|_| poisoned())?.base.release();
                return Ok(());
            }
            walked += 1;
            if walked % RELEASE_EVERY == 0 {
                self.shared.layers.read().map_err(|_| poisoned())?.base.release();
            }
            last = chunk.into_iter().next_back().map(|(k, _)| k);
        }
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let staged = self.stage(batch)?;
        self.apply_staged(staged)
    }

    /// The projections and request IDs go to the layers now; the entries, nodes and metadata
    /// to the inner store when the syncer applies them, so the writer never waits on sled.
    fn stage(&self, batch: WriteBatch) -> Result<super::Staged, StoreError> {
        let WriteBatch { entries, nodes, requests, projections, meta, projected_size, held_back } =
            batch;
        if let (Some((first, _)), Some((last, _))) = (entries.first(), entries.last()) {
            let projected = self.shared.layers.read().map_err(|_| poisoned())?.projected;
            // Rewriting entries the projections already cover changes no projection (only
            // tests do it, to tamper with the log).
            let rewrite = projected_size.is_none() && projected.is_some_and(|p| *last < p);
            if !rewrite && (projected != Some(*first) || projected_size != Some(last + 1)) {
                return Err(StoreError::Corrupt(format!(
                    "entries {first}..={last} would take the projections from {projected:?} \
                     entries to {projected_size:?}: they must continue the projections exactly"
                )));
            }
        }
        let end = entries.last().map(|(p, _)| p + 1);
        let log_part = WriteBatch { entries, nodes, meta, ..Default::default() };
        if let Some(end) = end {
            let mut d = self.shared.durability()?;
            if d.failed {
                return Err(StoreError::Io("an earlier write or sync failed".into()));
            }
            d.staged = end;
        }
        let cut = {
            let mut layers = self.shared.layers.write().map_err(|_| poisoned())?;
            let changed = !projections.is_empty() || !requests.is_empty();
            let requests = requests.iter().map(|(id, r)| super::request_write(id, r));
            for w in projections.into_iter().chain(requests) {
                layers.active.insert(full_key(w.keyspace, &w.key), w.value);
            }
            match projected_size {
                Some(size) => (layers.projected, layers.held_back) = (Some(size), held_back),
                None if changed => layers.projected = None,
                None => {}
            }
            if self.shared.cut_due(&layers)? { Shared::freeze(&mut layers) } else { None }
        };
        if let Some(size) = cut
            && let Err(e) = self.shared.start_cut(size)
        {
            // The batch is written; only the snapshot waits for the next chance.
            tracing::error!(error = %e, "could not start a projection snapshot");
            Shared::unfreeze(&mut *self.shared.layers.write().map_err(|_| poisoned())?);
        }
        Ok(super::Staged((!log_part.is_empty()).then_some(log_part)))
    }

    /// Only when a cut is due: the writer's next batch then carries what it held back, and
    /// the cut freezes the layers after it.
    fn projections_wanted(&self) -> bool {
        self.shared.layers.read().is_ok_and(|layers| self.shared.cut_due(&layers).unwrap_or(false))
    }

    fn apply_staged(&self, staged: super::Staged) -> Result<(), StoreError> {
        let Some(batch) = staged.0 else { return Ok(()) };
        let end = batch.entries.last().map(|(p, _)| p + 1);
        if let Err(e) = self.shared.inner.write(batch) {
            if end.is_some() {
                // The layers already hold these entries' projections: nothing may become
                // durable (or be cut into a snapshot) after them.
                self.shared.durability()?.failed = true;
                self.shared.moved.notify_all();
            }
            return Err(e);
        }
        if let Some(end) = end {
            self.shared.durability()?.written = end;
            // A cut may be waiting to read the last entry it covers.
            self.shared.moved.notify_all();
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.shared.sync()
    }

    fn clear_projections(&self, keyspaces: &[Keyspace]) -> Result<(), StoreError> {
        self.shared.join_cut()?;
        // The old snapshot must not come back if the rebuild stops before writing a new one.
        remove_durably(&self.shared.path)?;
        let mut layers = self.shared.layers.write().map_err(|_| poisoned())?;
        let dropped = |k: &[u8]| keyspaces.iter().any(|ks| k.starts_with(&full_key(*ks, b"")));
        let kept = layers
            .merged(Bound::Unbounded)
            .filter(|(k, _)| !dropped(k))
            .filter_map(|(k, v)| v.map(|v| (k, v)));
        let base = Snapshot::build(0, [0; 32], kept)?;
        layers.set_base(base);
        layers.active.clear();
        layers.frozen = None;
        layers.projected = None;
        layers.held_back = false;
        drop(layers);
        // Records an older layout kept in the inner store are dropped with them.
        self.shared.inner.clear_projections(keyspaces)
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        let snapshot = match std::fs::metadata(&self.shared.path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        Ok(self.shared.inner.size_on_disk()? + snapshot)
    }

    fn projected_size(&self) -> Result<u64, StoreError> {
        self.shared.layers.read().map_err(|_| poisoned())?.projected.ok_or_else(|| {
            StoreError::Corrupt("the projections are half rebuilt: rebuild them again".into())
        })
    }

    /// A rebuild's records become the base snapshot directly, written before it is swapped in:
    /// through the active layer they would be copied into a tree and then merged into the
    /// same snapshot anyway. Only when the clear kept other keyspaces do they take that way.
    fn load_projections(
        &self,
        records: &mut dyn Iterator<Item = super::ProjectionRecord>,
        size: u64,
    ) -> Result<(), StoreError> {
        self.shared.join_cut()?;
        let empty = {
            let layers = self.shared.layers.read().map_err(|_| poisoned())?;
            layers.active.is_empty() && layers.frozen.is_none() && layers.base.is_empty()
        };
        if !empty {
            return super::write_in_batches(
                self,
                records.map(super::ProjectionWrite::put),
                Some(size),
            );
        }
        let started = std::time::Instant::now();
        let last_leaf = leaf_at(self.shared.inner.as_ref(), size)?;
        let records = records.map(|(keyspace, key, value)| (full_key(keyspace, &key), value));
        let written = Snapshot::write_new(&self.shared.path, size, last_leaf, records)?;
        // As for every cut: the snapshot may only describe entries that survive a crash.
        if self.shared.durability()?.synced < size {
            self.shared.sync()?;
        }
        let snapshot = self.shared.install(written, started)?;
        let mut layers = self.shared.layers.write().map_err(|_| poisoned())?;
        layers.set_base(snapshot);
        (layers.projected, layers.held_back) = (Some(size), false);
        Ok(())
    }

    fn last_snapshot_seconds(&self) -> Option<f64> {
        match self.shared.last_cut_micros.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            micros => Some(micros as f64 / 1e6),
        }
    }

    fn unsnapshotted_records(&self) -> Option<u64> {
        let layers = self.shared.layers.read().ok()?;
        let frozen = layers.frozen.as_ref().map_or(0, |f| f.len());
        Some((layers.active.len() + frozen) as u64)
    }

    fn persist_projections(&self) -> Result<(), StoreError> {
        self.shared.join_cut()?;
        let size = {
            let mut layers = self.shared.layers.write().map_err(|_| poisoned())?;
            if layers.held_back {
                return Err(StoreError::Io(
                    "the writer held projection records back; no snapshot is written (the next \
                     start replays the log after the last one)"
                        .into(),
                ));
            }
            let current = layers.projected == Some(layers.base.size()) && layers.active.is_empty();
            if current { None } else { Shared::freeze(&mut layers) }
        };
        let Some(size) = size else { return Ok(()) };
        // Nothing else writes now (a clean stop, the end of a rebuild): the caller's sync.
        if self.shared.durability()?.synced < size {
            self.shared.sync()?;
        }
        self.shared.cut(size)
    }
}

/// Removes `path` if it exists and makes the removal durable.
fn remove_durably(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(crate::files::sync_parent(path)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

mod cut;
mod read;
#[cfg(test)]
mod tests;
