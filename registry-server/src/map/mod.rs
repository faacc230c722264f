//! The verifiable map (`registry_core::map`) as the server keeps it: every bucket decoded in
//! memory, the tree of bucket hashes beside it, and the bucket records as its durable copy.
//!
//! The buckets are also the `latest` projection (the lifecycle state's "latest entry per
//! identifier"). The writer reads and changes them through its [`MapBuckets`] (a registration
//! touches up to four buckets, and reading and decoding them from the store was a fifth of its
//! time) and, once per batch, re-hashes the changed ones in its own copy of the tree, whose root
//! goes into the head checkpoint's extension line. When the batch is durable the changed tree
//! nodes and buckets are published to the [`SharedMap`], stamped with the log size they belong
//! to: lookups and proof builders read the map there, tree and buckets under one lock, never
//! from the store.
//!
//! The store's bucket records are written only when the store is about to make its
//! projections durable (a snapshot cut, a clean stop), not at every batch (see
//! [`MapWriter`]). They hold nothing but the leaves, so a rebuild reproduces them exactly.
//!
//! ```text
//! map       bucket (u16 BE) -> leaves (sorted by key)
//! ```
//!
//! Bucket hashes are not stored: at start the tree is rebuilt from the buckets, which costs one
//! pass over them and saves a second key per bucket.
//!
//! A start only hashes the bucket records: decoding every bucket before serving took 2.3-4.8 s
//! of a ten-million-key start (1.1 GB of leaves in fresh memory). Until the writer first
//! changes a bucket, the map holds the hash it had when loaded and reads its record from the
//! store when asked (a proof, a history), checking the record against that hash. The store's
//! record of an unchanged bucket is the one loaded, because only the writer writes bucket
//! records, and only of buckets it has changed; a reader that finds the record changed (the
//! writer wrote a newer version before the reader's publication caught up) asks again. Once
//! the server runs, a thread of its own decodes the buckets the load only hashed
//! ([`MapBuckets::decode_in_background`]) for the writer to take: reading each from the store
//! at its first change cost the first registrations after a start a fifth of their time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use registry_core::event::Identifier;
use registry_core::map::{self, Bucket, MapTree};
use registry_core::merkle::Hash;

use crate::log::View;
use crate::store::{Keyspace, LogStore, StoreError};

mod background;
mod record;

use background::{Decoded, StoredHashes, decode_stored};
use record::{LOAD_CHUNK_BYTES, LoadChunk, encode};
pub use record::{decode_bucket, record_hash, records_of};

/// Bucket records.
pub const MAP: Keyspace = Keyspace("map");

/// A bucket as the map holds it.
#[derive(Debug, Clone)]
enum Slot {
    /// Decoded: changed by the writer since the load, or a bucket of a new log.
    Held(Arc<Bucket>),
    /// Unchanged since the load: its record in the store, which had this hash then.
    Stored(Hash),
}

impl Slot {
    fn hash(&self, index: u16) -> Hash {
        match self {
            Slot::Held(leaves) => map::bucket_hash(index, leaves),
            Slot::Stored(hash) => *hash,
        }
    }

    /// The leaves, read from `source` if need be; `None` if the stored record has changed
    /// since the slot was taken.
    fn leaves(&self, index: u16, source: &Source) -> Result<Option<Arc<Bucket>>, StoreError> {
        match self {
            Slot::Held(leaves) => Ok(Some(leaves.clone())),
            Slot::Stored(hash) => Ok(source.read(index, hash)?.map(Arc::new)),
        }
    }
}

/// The store stored buckets are read from (none for a map that was never loaded).
#[derive(Clone, Default)]
struct Source(Option<Arc<dyn LogStore>>);

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Source(store)" } else { "Source(none)" })
    }
}

impl Source {
    /// Bucket `index` as its record holds it, if that record still has `hash`.
    fn read(&self, index: u16, hash: &Hash) -> Result<Option<Bucket>, StoreError> {
        let store = self.0.as_ref().ok_or_else(|| {
            StoreError::Corrupt(format!("map bucket {index} is stored, but in no store"))
        })?;
        let Some(record) = store.get(MAP, &index.to_be_bytes())? else { return Ok(None) };
        let leaves = decode_bucket(&record)
            .map_err(|e| StoreError::Corrupt(format!("map bucket {index}: {e}")))?;
        Ok((map::bucket_hash(index, &leaves) == *hash).then_some(leaves))
    }
}

/// Every bucket: the writer's (and a catch-up's) copy of the `latest` projection, including
/// changes not yet written. Each decoded bucket is an `Arc` so that readers and a publication
/// can hold a batch's version of it while the writer goes on: the writer copies a shared
/// bucket on its first change, and only then.
#[derive(Debug)]
pub struct MapBuckets {
    slots: Vec<Slot>,
    source: Source,
    /// Stored buckets decoded in the background, for the writer to take.
    decoded: Arc<Decoded>,
    /// Changed since the last [`MapBuckets::take_changed`] (the writer's batch).
    changed: BTreeSet<u16>,
    /// Changed since their records were last written ([`MapBuckets::write_unwritten`]).
    unwritten: BTreeSet<u16>,
}

impl MapBuckets {
    /// No identifier recorded yet (a new log).
    pub fn empty() -> Self {
        Self {
            // One empty bucket shared by all: the first change to each copies it.
            slots: std::iter::repeat_n(Slot::Held(Arc::new(Bucket::new())), map::BUCKETS).collect(),
            source: Source::default(),
            decoded: Arc::default(),
            changed: BTreeSet::new(),
            unwritten: BTreeSet::new(),
        }
    }

    /// The buckets of `store`'s records, each left in the store with its hash.
    pub fn load(store: &Arc<dyn LogStore>) -> Result<Self, StoreError> {
        let mut buckets = Self::empty();
        buckets.source = Source(Some(store.clone()));
        let mut chunk = LoadChunk::default();
        // A walk, not a scan: at a million keys the records are over 100 MB.
        store.for_each(MAP, &mut |k, v| {
            let index: [u8; 2] =
                k.try_into().map_err(|_| StoreError::Corrupt("map key is not 2 bytes".into()))?;
            chunk.push(u16::from_be_bytes(index), v);
            if chunk.bytes.len() >= LOAD_CHUNK_BYTES {
                chunk.hash_into(&mut buckets.slots)?;
            }
            Ok(())
        })?;
        chunk.hash_into(&mut buckets.slots)?;
        Ok(buckets)
    }

    /// The latest position recorded for an identifier.
    pub fn latest(&self, identifier: &Identifier) -> Result<Option<u64>, StoreError> {
        let key = map::key(identifier);
        let index = map::bucket_of(&key);
        if let Slot::Stored(_) = self.slots[usize::from(index)]
            && let Some(found) = self.decoded.with(index, |leaves| position_in(leaves, &key))
        {
            return Ok(found);
        }
        let leaves = self.slots[usize::from(index)]
            .leaves(index, &self.source)?
            .ok_or_else(|| changed_under_the_writer(index))?;
        Ok(position_in(&leaves, &key))
    }

    /// Records `position` as the latest entry of `identifier`.
    pub fn set_latest(&mut self, identifier: &Identifier, position: u64) -> Result<(), StoreError> {
        let key = map::key(identifier);
        let index = map::bucket_of(&key);
        let slot = &mut self.slots[usize::from(index)];
        if let Slot::Stored(hash) = slot {
            let leaves = match self.decoded.take(index) {
                Some(leaves) => leaves,
                None => {
                    self.source.read(index, hash)?.ok_or_else(|| changed_under_the_writer(index))?
                }
            };
            *slot = Slot::Held(Arc::new(leaves));
        }
        let Slot::Held(slot) = slot else {
            return Err(changed_under_the_writer(index));
        };
        let found = slot.binary_search_by(|(k, _)| k.cmp(&key));
        if Arc::get_mut(slot).is_none() {
            // Readers or a publication hold this version: the writer's own copy, with room for
            // the new leaf.
            let room = if found.is_err() { growth(slot.len()) } else { 0 };
            let mut copy = Vec::with_capacity(slot.len() + room);
            copy.extend_from_slice(slot);
            *slot = Arc::new(copy);
        }
        let leaves = Arc::make_mut(slot);
        match found {
            Ok(i) => leaves[i].1 = position,
            Err(i) => {
                if leaves.len() == leaves.capacity() {
                    leaves.reserve_exact(growth(leaves.len()));
                }
                leaves.insert(i, (key, position));
            }
        }
        self.changed.insert(index);
        self.unwritten.insert(index);
        Ok(())
    }

    /// The buckets changed since the last call, as they are now.
    fn take_changed(&mut self) -> Vec<(u16, Slot)> {
        std::mem::take(&mut self.changed)
            .into_iter()
            .map(|index| (index, self.slots[usize::from(index)].clone()))
            .collect()
    }

    /// Writes the record of every bucket changed since the last call into `view`.
    pub fn write_unwritten(&mut self, view: &mut View<'_>) {
        for index in std::mem::take(&mut self.unwritten) {
            // A changed bucket is held; a stored one's record is already what it holds.
            if let Slot::Held(leaves) = &self.slots[usize::from(index)] {
                view.put(MAP, index.to_be_bytes().to_vec(), encode(leaves));
            }
        }
    }

    /// Whether some bucket changed since its record was last written.
    pub fn has_unwritten(&self) -> bool {
        !self.unwritten.is_empty()
    }

    /// The hash of bucket `index` as it holds now.
    fn hash(&self, index: u16) -> Hash {
        self.slots[usize::from(index)].hash(index)
    }

    /// The leaves of bucket `index`, decoded or not (tests).
    #[cfg(test)]
    fn held_len(&self, index: u16) -> usize {
        self.slots[usize::from(index)].leaves(index, &self.source).unwrap().unwrap().len()
    }

    /// How many buckets are decoded in memory (the others are read from the store when asked).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.slots.iter().filter(|s| matches!(s, Slot::Held(b) if !b.is_empty())).count()
    }

    /// Decodes every stored bucket on a thread of its own, each checked against the hash the
    /// load found (a record the writer has rewritten since is left to the store), for the
    /// writer to take when it first changes it. The thread stops once these buckets are
    /// dropped, and holds the store only while it walks.
    pub fn decode_in_background(&self) {
        let Some((store, hashes)) = self.stored() else { return };
        let decoded = Arc::downgrade(&self.decoded);
        let spawned = std::thread::Builder::new()
            .name("map-decode".into())
            .spawn(move || decode_stored(store.as_ref(), &hashes, &decoded));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no thread to decode the map's buckets; read when changed");
        }
    }

    /// [`MapBuckets::decode_in_background`], on this thread (what `registry-server usage`
    /// measures).
    pub fn decode_now(&self) {
        if let Some((store, hashes)) = self.stored() {
            decode_stored(store.as_ref(), &hashes, &Arc::downgrade(&self.decoded));
        }
    }

    /// The store and the hash of each stored bucket, if any is.
    fn stored(&self) -> Option<StoredHashes> {
        let store = self.source.0.clone()?;
        let hashes: Vec<Option<Hash>> = self
            .slots
            .iter()
            .map(|s| match s {
                Slot::Stored(hash) => Some(*hash),
                Slot::Held(_) => None,
            })
            .collect();
        hashes.iter().any(Option::is_some).then_some((store, hashes))
    }

    /// The tree over every bucket's hash, the decoded buckets hashed on every core (a new
    /// log's, or after a long replay, they may hold over a gigabyte).
    pub fn tree(&self) -> MapTree {
        let indices: Vec<u16> = (0..=u16::MAX).collect();
        let hashes = crate::cores::map_in_order(&indices, |&i| self.hash(i));
        MapTree::from_bucket_hashes(|i| hashes[usize::from(i)])
    }
}

fn changed_under_the_writer(index: u16) -> StoreError {
    StoreError::Corrupt(format!(
        "map bucket {index} changed in the store since it was loaded, and only the writer \
         writes bucket records"
    ))
}

/// Room a full bucket of `len` leaves grows by. Loaded buckets are exactly full, and doubling
/// them would cost, at a million keys, 120 MB for a few thousand registrations: a sixteenth
/// more instead.
fn growth(len: usize) -> usize {
    len / 16 + 1
}

/// The position of the leaf with `key` in a bucket's sorted leaves.
fn position_in(leaves: &[(Hash, u64)], key: &Hash) -> Option<u64> {
    leaves.binary_search_by(|(k, _)| k.cmp(key)).ok().map(|i| leaves[i].1)
}

/// What a proof builder sees of the published tree.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The log size the tree belongs to.
    pub version: u64,
    /// The map root at that size.
    pub root: Hash,
    /// For each requested bucket: its hash and the sibling path.
    pub paths: BTreeMap<u16, (Hash, Vec<Hash>)>,
}

/// The map as of the durable head, shared between the writer (which publishes) and readers:
/// the tree for proofs, and the buckets themselves, which are the `latest` projection readers
/// see. The store's bucket records are only the map's durable copy (the writer holds them
/// back between snapshot cuts, see [`MapWriter`]); readers read one only for a bucket
/// unchanged since the load, and only if it still has the hash the tree holds for it.
#[derive(Debug, Default)]
pub struct SharedMap {
    published: RwLock<Published>,
}

#[derive(Debug, Default)]
struct Published {
    version: u64,
    tree: MapTree,
    /// Every bucket by index (empty before the writer opens).
    slots: Vec<Slot>,
    source: Source,
}

/// How often a reader asks again for a stored bucket whose record changed before the
/// publication that explains it; a publication follows its batch's sync within milliseconds.
const READ_ATTEMPTS: usize = 200;

impl SharedMap {
    /// Paths for `buckets` in the published tree, or `None` if it is not at `version`.
    pub fn snapshot(&self, version: u64, buckets: &[u16]) -> Option<Snapshot> {
        let guard = self.published.read().ok()?;
        if guard.version != version {
            return None;
        }
        let tree = &guard.tree;
        Some(Snapshot {
            version,
            root: tree.root(),
            paths: buckets.iter().map(|b| (*b, (tree.bucket(*b), tree.siblings(*b)))).collect(),
        })
    }

    /// Bucket `index` as published at log size `version`: `Ok(None)` if the publication is
    /// not at `version` (or has moved on while the bucket was read).
    pub fn bucket(&self, version: u64, index: u16) -> Result<Option<Arc<Bucket>>, StoreError> {
        let (slot, source) = {
            let Ok(guard) = self.published.read() else { return Ok(None) };
            if guard.version != version {
                return Ok(None);
            }
            let Some(slot) = guard.slots.get(usize::from(index)) else {
                return Ok(Some(Arc::default()));
            };
            (slot.clone(), guard.source.clone())
        };
        slot.leaves(index, &source)
    }

    /// The latest position of `identifier` as published (the newest durable batch).
    pub fn latest(&self, identifier: &Identifier) -> Result<Option<u64>, StoreError> {
        let key = map::key(identifier);
        let index = map::bucket_of(&key);
        for _ in 0..READ_ATTEMPTS {
            let (slot, source) = {
                let Ok(guard) = self.published.read() else { return Ok(None) };
                let Some(slot) = guard.slots.get(usize::from(index)) else { return Ok(None) };
                (slot.clone(), guard.source.clone())
            };
            if let Some(leaves) = slot.leaves(index, &source)? {
                return Ok(position_in(&leaves, &key));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Err(StoreError::Io(format!("map bucket {index} kept changing while it was read; retry")))
    }

    fn replace(&self, version: u64, tree: MapTree, slots: Vec<Slot>, source: Source) {
        if let Ok(mut g) = self.published.write() {
            *g = Published { version, tree, slots, source };
        }
    }

    fn update(&self, version: u64, nodes: &[(usize, Hash)], buckets: Vec<(u16, Slot)>) {
        if let Ok(mut g) = self.published.write() {
            g.tree.set_nodes(nodes);
            for (index, bucket) in buckets {
                if let Some(slot) = g.slots.get_mut(usize::from(index)) {
                    *slot = bucket;
                }
            }
            g.version = version;
        }
    }
}

/// The writer's side of the map: every bucket, its own tree, and what changed since the last
/// publication.
///
/// The writer holds the bucket records back from its batches: a bucket is rewritten whole
/// (at a million keys about 1.7 KB) whenever one of its leaves changes, and writing the
/// changed ones at every group commit filled the layered store's active layer with copies of
/// them. Readers read the published buckets instead, and the records are written only when
/// the store is about to cut its projections ([`crate::store::LogStore::projections_wanted`])
/// and at a clean stop; a batch that holds some back says so
/// ([`crate::store::WriteBatch::held_back`]), and no snapshot is cut after it.
#[derive(Debug)]
pub struct MapWriter {
    shared: Arc<SharedMap>,
    tree: MapTree,
    buckets: MapBuckets,
    changed: Vec<(usize, Hash)>,
    /// Bucket versions for readers once the batches finished so far are durable.
    to_publish: BTreeMap<u16, Slot>,
    /// Buckets written since the tree last took their hashes (batches that needed no root).
    stale: BTreeSet<u16>,
}

impl MapWriter {
    /// A writer publishing to `shared`.
    pub fn new(shared: Arc<SharedMap>) -> Self {
        Self {
            shared,
            tree: MapTree::default(),
            buckets: MapBuckets::empty(),
            changed: Vec::new(),
            to_publish: BTreeMap::new(),
            stale: BTreeSet::new(),
        }
    }

    /// Starts from `buckets` (loaded, and brought up to the log by a replay) at log `size`:
    /// builds the tree and shows it to readers. Records the replay left unwritten stay
    /// unwritten.
    pub fn open(&mut self, mut buckets: MapBuckets, size: u64) {
        buckets.changed.clear();
        self.buckets = buckets;
        self.tree = self.buckets.tree();
        self.changed.clear();
        self.to_publish.clear();
        self.stale.clear();
        self.shared.replace(
            size,
            self.tree.clone(),
            self.buckets.slots.clone(),
            self.buckets.source.clone(),
        );
    }

    /// The buckets, for the lifecycle state the writer decides and applies against.
    pub fn buckets(&mut self) -> &mut MapBuckets {
        &mut self.buckets
    }

    /// Takes the buckets the batch changed for readers and, when the batch's head needs the
    /// map root (`rehash`), re-hashes every bucket changed since the tree last did in the
    /// writer's tree. A replica catching up needs no root until the primary's checkpoint
    /// signs one, so each bucket is hashed once however many batches changed it.
    pub fn finish_batch(&mut self, rehash: bool) {
        for (index, bucket) in self.buckets.take_changed() {
            self.stale.insert(index);
            self.to_publish.insert(index, bucket);
        }
        if rehash && !self.stale.is_empty() {
            let stale = std::mem::take(&mut self.stale);
            let hashes: Vec<(u16, Hash)> =
                stale.into_iter().map(|index| (index, self.buckets.hash(index))).collect();
            self.changed.extend(self.tree.set_buckets(&hashes));
        }
    }

    /// Writes the records of every bucket changed since they were last written into `view`.
    pub fn write_held_back(&mut self, view: &mut View<'_>) {
        self.buckets.write_unwritten(view);
    }

    /// Whether some bucket's record is held back.
    pub fn holds_back(&self) -> bool {
        self.buckets.has_unwritten()
    }

    /// What to publish once the batches finished so far are durable: the tree nodes and the
    /// buckets they changed, for readers at log size `size`.
    pub fn publication(&mut self, size: u64) -> Publication {
        Publication {
            shared: self.shared.clone(),
            size,
            nodes: std::mem::take(&mut self.changed),
            buckets: std::mem::take(&mut self.to_publish).into_iter().collect(),
        }
    }

    /// The root of the writer's tree (for the next head checkpoint); `None` while buckets
    /// changed by batches that needed no root are not hashed into it yet.
    pub fn root(&self) -> Option<Hash> {
        self.stale.is_empty().then(|| self.tree.root())
    }
}

/// Changed tree nodes and buckets on their way to readers; [`Publication::publish`] once
/// durable.
#[derive(Debug)]
pub struct Publication {
    shared: Arc<SharedMap>,
    size: u64,
    nodes: Vec<(usize, Hash)>,
    buckets: Vec<(u16, Slot)>,
}

impl Publication {
    /// Shows the nodes and buckets to readers, as the map at the publication's log size.
    pub fn publish(self) {
        self.shared.update(self.size, &self.nodes, self.buckets);
    }
}

#[cfg(test)]
mod tests;
