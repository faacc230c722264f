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
use std::sync::{Arc, Mutex, RwLock, Weak};

use registry_core::event::Identifier;
use registry_core::map::{self, Bucket, MapTree};
use registry_core::merkle::Hash;
use sha2::{Digest, Sha256};

use crate::log::View;
use crate::store::{Keyspace, LogStore, StoreError};

/// Bucket records.
pub const MAP: Keyspace = Keyspace("map");

/// A stored bucket record's leaves: the inverse of [`encode`], read directly for the same
/// reason (at ten million keys, decoding every bucket through serde took 6 s of a start).
pub fn decode_bucket(record: &[u8]) -> Result<Bucket, &'static str> {
    let mut leaves = Vec::new();
    for_each_leaf(
        record,
        &mut leaves,
        // Exactly full (see `growth`); each leaf takes at least 33 bytes, so a damaged count
        // cannot reserve more than the record.
        |leaves, count| leaves.reserve_exact((count as usize).min(record.len() / 33)),
        |leaves, key, position| leaves.push((*key, position)),
    )?;
    Ok(leaves)
}

/// The hash of bucket `index` from its record, without decoding it into memory: equal to
/// [`map::bucket_hash`] of [`decode_bucket`]'s leaves.
pub fn record_hash(index: u16, record: &[u8]) -> Result<Hash, &'static str> {
    let mut h = Sha256::new();
    h.update([0x02]);
    h.update(index.to_be_bytes());
    for_each_leaf(
        record,
        &mut h,
        |_, _| {},
        |h, key, position| {
            h.update(key);
            h.update(position.to_be_bytes());
        },
    )?;
    Ok(h.finalize().into())
}

/// Calls `count` with the number of leaves a bucket record says it holds, then `leaf` with
/// each, in order; an error for a damaged record.
fn for_each_leaf<S>(
    record: &[u8],
    state: &mut S,
    count: impl FnOnce(&mut S, u64),
    mut leaf: impl FnMut(&mut S, &Hash, u64),
) -> Result<(), &'static str> {
    fn varint(bytes: &mut &[u8]) -> Result<u64, &'static str> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = bytes.split_first().ok_or("the record ends inside a number")?;
            *bytes = rest;
            if shift == 63 && b > 1 {
                return Err("a number overflows 64 bits");
            }
            n |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(n);
            }
        }
        Err("a number overflows 64 bits")
    }
    let mut bytes = record;
    let leaves = varint(&mut bytes)?;
    count(state, leaves);
    for _ in 0..leaves {
        let (key, rest) = bytes.split_first_chunk::<32>().ok_or("the record ends inside a key")?;
        bytes = rest;
        leaf(state, key, varint(&mut bytes)?);
    }
    if !bytes.is_empty() {
        return Err("bytes after the last leaf");
    }
    Ok(())
}

/// A bucket record: postcard's encoding of the leaves (the count as a varint, then each key's 32
/// bytes and its position as a varint), written out directly. Through serde every key byte was
/// a call of its own, a tenth of the writer's time at a million keys; the bytes are the same
/// (a test holds them to postcard's), so records written before and after read alike.
fn encode(leaves: &Bucket) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut n: u64) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    let mut out = Vec::with_capacity(10 + leaves.len() * 42);
    varint(&mut out, leaves.len() as u64);
    for (key, position) in leaves {
        out.extend_from_slice(key);
        varint(&mut out, *position);
    }
    out
}

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

/// Bucket records hashed together at a load, on every core: a few megabytes, copied out of
/// the store's walk into one buffer the chunks reuse.
const LOAD_CHUNK_BYTES: usize = 8 << 20;

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
    pub fn held(&self) -> usize {
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

/// The bucket records holding exactly `latest` (a rebuild's result), in key order, as
/// [`MapBuckets::write_unwritten`] writes them: each bucket sorted once instead of one
/// insertion per update.
pub fn records_of(
    latest: impl IntoIterator<Item = (Identifier, u64)>,
) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> {
    let mut leaves = vec![Bucket::new(); map::BUCKETS];
    for (identifier, position) in latest {
        let key = map::key(&identifier);
        leaves[usize::from(map::bucket_of(&key))].push((key, position));
    }
    (0..=u16::MAX).zip(leaves).filter(|(_, leaves)| !leaves.is_empty()).map(
        |(index, mut leaves)| {
            leaves.sort_unstable_by_key(|leaf| leaf.0);
            (index.to_be_bytes().to_vec(), encode(&leaves))
        },
    )
}

/// Bucket records copied out of a load's walk, to be hashed together.
#[derive(Default)]
struct LoadChunk {
    bytes: Vec<u8>,
    /// Each record's bucket and its range in `bytes`.
    records: Vec<(u16, std::ops::Range<usize>)>,
}

impl LoadChunk {
    fn push(&mut self, index: u16, record: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(record);
        self.records.push((index, start..self.bytes.len()));
    }

    /// Hashes the records on every core into their slots, and empties the chunk for reuse.
    fn hash_into(&mut self, slots: &mut [Slot]) -> Result<(), StoreError> {
        let bytes = &self.bytes;
        let hashes = crate::cores::map_in_order(&self.records, |(index, range)| {
            record_hash(*index, &bytes[range.clone()])
                .map_err(|e| StoreError::Corrupt(format!("map bucket {index}: {e}")))
        });
        for ((index, _), hash) in self.records.iter().zip(hashes) {
            slots[usize::from(*index)] = Slot::Stored(hash?);
        }
        self.bytes.clear();
        self.records.clear();
        Ok(())
    }
}

/// A store, and the hash of each bucket stored in it at the load (`None` for held ones).
type StoredHashes = (Arc<dyn LogStore>, Vec<Option<Hash>>);

/// Stored buckets decoded in the background ([`MapBuckets::decode_in_background`]).
#[derive(Debug, Default)]
struct Decoded(Mutex<Vec<Decoding>>);

/// One bucket's place in [`Decoded`].
#[derive(Debug, Clone, Default)]
enum Decoding {
    /// Not decoded yet.
    #[default]
    Pending,
    Ready(Bucket),
    /// The writer has it (taken, or read from the store first): a later decoding is dropped,
    /// not kept beside the writer's copy.
    Taken,
}

impl Decoded {
    fn put(&self, batch: &mut Vec<(u16, Bucket)>) {
        if let Ok(mut decoded) = self.0.lock() {
            if decoded.is_empty() {
                decoded.resize(map::BUCKETS, Decoding::Pending);
            }
            for (index, leaves) in batch.drain(..) {
                let slot = &mut decoded[usize::from(index)];
                if let Decoding::Pending = slot {
                    *slot = Decoding::Ready(leaves);
                }
            }
        }
    }

    /// Bucket `index` if it is decoded; either way it is the writer's from now on.
    fn take(&self, index: u16) -> Option<Bucket> {
        let mut decoded = self.0.lock().ok()?;
        if decoded.is_empty() {
            decoded.resize(map::BUCKETS, Decoding::Pending);
        }
        match std::mem::replace(decoded.get_mut(usize::from(index))?, Decoding::Taken) {
            Decoding::Ready(leaves) => Some(leaves),
            Decoding::Pending | Decoding::Taken => None,
        }
    }

    fn with<R>(&self, index: u16, f: impl FnOnce(&Bucket) -> R) -> Option<R> {
        match self.0.lock().ok()?.get(usize::from(index))? {
            Decoding::Ready(leaves) => Some(f(leaves)),
            Decoding::Pending | Decoding::Taken => None,
        }
    }
}

/// The background decoding: every bucket record of `store` whose slot was stored with the hash
/// in `hashes`, handed to `decoded` a few hundred at a time while it lives.
fn decode_stored(store: &dyn LogStore, hashes: &[Option<Hash>], decoded: &Weak<Decoded>) {
    let started = std::time::Instant::now();
    let mut batch = Vec::new();
    let mut count = 0usize;
    let walked = store.for_each(MAP, &mut |k, v| {
        let index = <[u8; 2]>::try_from(k).map(u16::from_be_bytes).ok();
        let Some((index, hash)) = index.and_then(|i| Some((i, hashes.get(usize::from(i))?))) else {
            return Ok(());
        };
        if let (Some(hash), Ok(leaves)) = (hash, decode_bucket(v))
            && map::bucket_hash(index, &leaves) == *hash
        {
            batch.push((index, leaves));
        }
        if batch.len() >= 256 {
            let Some(decoded) = decoded.upgrade() else { return Err(StoreError::Io(STOP.into())) };
            count += batch.len();
            decoded.put(&mut batch);
        }
        Ok(())
    });
    if let Some(decoded) = decoded.upgrade() {
        count += batch.len();
        decoded.put(&mut batch);
    }
    match walked {
        Ok(()) => tracing::info!(
            buckets = count,
            seconds = started.elapsed().as_secs_f64(),
            "map buckets decoded in the background"
        ),
        Err(StoreError::Io(e)) if e == STOP => {}
        Err(e) => tracing::warn!(error = %e, "decoding the map's buckets in the background"),
    }
}

/// Why [`decode_stored`] ends its walk early: nobody is left to take the buckets.
const STOP: &str = "the map's buckets are no longer in use";

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
mod tests {
    use super::*;

    #[test]
    fn a_new_leaf_grows_a_full_bucket_by_a_little_and_keeps_it_sorted() {
        let mut buckets = MapBuckets::empty();
        // Enough identifiers that one bucket holds a few dozen.
        for n in 0..3_000_000u32 {
            let id = evse(n);
            if map::bucket_of(&map::key(&id)) == 7 {
                buckets.set_latest(&id, u64::from(n)).unwrap();
            }
        }
        let Slot::Held(seven) = &mut buckets.slots[7] else { panic!("a new log's are held") };
        Arc::make_mut(seven).shrink_to_fit(); // as decoded
        let full = seven.len();
        assert!(full > 16, "{full} leaves");
        let extra =
            (3_000_000u32..).map(evse).find(|id| map::bucket_of(&map::key(id)) == 7).unwrap();
        buckets.set_latest(&extra, 1).unwrap();
        let Slot::Held(bucket) = &buckets.slots[7] else { panic!("changed, so held") };
        assert_eq!(bucket.len(), full + 1);
        assert!(bucket.capacity() <= full + full / 16 + 1, "{} for {full}", bucket.capacity());
        assert!(bucket.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
        assert_eq!(buckets.latest(&extra).unwrap(), Some(1));
    }

    fn evse(n: u32) -> Identifier {
        Identifier {
            kind: registry_core::event::IdentifierKind::Evse,
            value: format!("DE*ABC*E{n}"),
        }
    }

    #[test]
    fn a_batch_that_needs_no_root_leaves_the_hashing_to_the_next_that_does() {
        let mut writer = MapWriter::new(Arc::default());
        writer.open(MapBuckets::empty(), 0);
        for batch in 0..3u32 {
            for n in batch * 100..(batch + 1) * 100 {
                writer.buckets().set_latest(&evse(n), u64::from(n)).unwrap();
            }
            writer.finish_batch(false);
            assert_eq!(writer.root(), None, "no root while buckets wait to be hashed");
        }
        assert!(writer.publication(300).nodes.is_empty(), "no tree nodes to show readers yet");
        // A replica's copy of nothing under a checkpoint that signs the root (on reconnecting).
        writer.finish_batch(true);
        let from_scratch = writer.buckets().tree().root();
        assert_eq!(writer.root(), Some(from_scratch), "a batch of nothing hashes what was put off");
        writer.buckets().set_latest(&evse(300), 300).unwrap();
        writer.finish_batch(true);
        let from_scratch = writer.buckets().tree().root();
        assert_eq!(writer.root(), Some(from_scratch), "every bucket hashed, once");
        assert!(!writer.publication(301).nodes.is_empty(), "the changed nodes, for readers");
    }

    #[test]
    fn bucket_records_are_held_back_until_asked_for_and_then_written_once() {
        let store: Arc<dyn LogStore> = Arc::new(crate::store::memory::MemoryStore::new());
        let mut writer = MapWriter::new(Arc::default());
        writer.open(MapBuckets::empty(), 0);
        let mut changed = BTreeSet::new();
        for n in 0..200u32 {
            writer.buckets().set_latest(&evse(n), u64::from(n)).unwrap();
            changed.insert(map::bucket_of(&map::key(&evse(n))));
            if n % 50 == 49 {
                writer.finish_batch(true);
            }
        }
        assert!(writer.holds_back(), "four batches changed buckets, none wrote them");
        let mut view = View::new(store.as_ref());
        writer.write_held_back(&mut view);
        assert_eq!(view.len(), changed.len(), "each changed bucket once, as it is now");
        assert!(!writer.holds_back());
        let mut again = View::new(store.as_ref());
        writer.write_held_back(&mut again);
        assert_eq!(again.len(), 0, "nothing changed since");
        store
            .write(crate::store::WriteBatch {
                projections: view.into_writes(),
                ..Default::default()
            })
            .unwrap();
        let loaded = MapBuckets::load(&store).unwrap();
        assert_eq!(loaded.tree().root(), writer.buckets().tree().root(), "the records are the map");
    }

    /// A store holding the records of identifiers `0..n` at positions `0..n`, and the map they
    /// make, decoded.
    fn stored_map(n: u32) -> (Arc<dyn LogStore>, MapBuckets) {
        let store: Arc<dyn LogStore> = Arc::new(crate::store::memory::MemoryStore::new());
        let mut decoded = MapBuckets::empty();
        for i in 0..n {
            decoded.set_latest(&evse(i), u64::from(i)).unwrap();
        }
        let mut view = View::new(store.as_ref());
        decoded.write_unwritten(&mut view);
        let batch =
            crate::store::WriteBatch { projections: view.into_writes(), ..Default::default() };
        store.write(batch).unwrap();
        (store, decoded)
    }

    #[test]
    fn a_loaded_bucket_stays_in_the_store_until_the_writer_changes_it() {
        let (store, decoded) = stored_map(3_000);
        let mut loaded = MapBuckets::load(&store).unwrap();
        assert!(decoded.held() > 2_000, "{} buckets hold something", decoded.held());
        assert_eq!(loaded.held(), 0, "nothing decoded at the load");
        assert_eq!(loaded.tree().root(), decoded.tree().root(), "hashed from the records");
        for i in [0, 1_234, 2_999] {
            assert_eq!(loaded.latest(&evse(i)).unwrap(), Some(u64::from(i)), "read from the store");
        }
        assert_eq!(loaded.latest(&evse(3_000)).unwrap(), None);
        assert_eq!(loaded.held(), 0, "reading decodes nothing for good");
        loaded.set_latest(&evse(7), 70).unwrap();
        loaded.set_latest(&evse(3_001), 71).unwrap();
        assert!((1..=2).contains(&loaded.held()), "only the changed buckets are decoded");
        assert_eq!(loaded.latest(&evse(7)).unwrap(), Some(70));
        assert_eq!(loaded.latest(&evse(8)).unwrap(), Some(8));
        let mut changed = MapBuckets::empty();
        for i in 0..3_002 {
            let position = match i {
                7 => 70,
                3_000 => continue,
                3_001 => 71,
                i => u64::from(i),
            };
            changed.set_latest(&evse(i), position).unwrap();
        }
        assert_eq!(loaded.tree().root(), changed.tree().root(), "stored and held hash alike");
    }

    #[test]
    fn a_stored_bucket_changed_behind_the_writer_is_refused_not_used() {
        let (store, _) = stored_map(500);
        let loaded = MapBuckets::load(&store).unwrap();
        let index = map::bucket_of(&map::key(&evse(1)));
        let mut other = vec![([0u8; 32], 1u64)];
        other[0].0[0] = 1;
        store
            .write(crate::store::WriteBatch {
                projections: vec![crate::store::ProjectionWrite::put((
                    MAP,
                    index.to_be_bytes().to_vec(),
                    encode(&other),
                ))],
                ..Default::default()
            })
            .unwrap();
        let mut loaded = loaded;
        let error = loaded.set_latest(&evse(1), 9).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
        assert!(loaded.latest(&evse(1)).is_err(), "not answered from a record it cannot trust");
    }

    /// Rewrites bucket `index`'s record in `store` to hold one unrelated leaf.
    fn rewrite_behind(store: &Arc<dyn LogStore>, index: u16) {
        let other: Bucket = vec![([1; 32], 1)];
        let record =
            crate::store::ProjectionWrite::put((MAP, index.to_be_bytes().to_vec(), encode(&other)));
        let batch = crate::store::WriteBatch { projections: vec![record], ..Default::default() };
        store.write(batch).unwrap();
    }

    fn until_decoded(buckets: &MapBuckets, index: u16) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if buckets.decoded.with(index, |_| ()).is_some() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        false
    }

    #[test]
    fn buckets_decoded_in_the_background_spare_the_writer_its_reads_of_the_store() {
        let (store, _) = stored_map(3_000);
        let mut loaded = MapBuckets::load(&store).unwrap();
        let first = map::bucket_of(&map::key(&evse(1)));
        let second = map::bucket_of(&map::key(&evse(2)));
        assert_ne!(first, second);
        // Rewritten before the thread reads it: its hash is not the load's, so it is not used.
        rewrite_behind(&store, second);
        // Read from the store by the writer before the thread got to it: not decoded twice.
        let early = (3..).map(evse).find(|id| {
            let b = map::bucket_of(&map::key(id));
            b != first && b != second
        });
        let early = early.unwrap();
        loaded.set_latest(&early, 3_333).unwrap();
        loaded.decode_in_background();
        assert!(until_decoded(&loaded, first), "decoded within 20 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(loaded.decoded.with(second, |_| ()).is_none(), "a record changed since the load");
        let early_bucket = map::bucket_of(&map::key(&early));
        assert!(loaded.decoded.with(early_bucket, |_| ()).is_none(), "the writer has it already");
        assert_eq!(loaded.latest(&early).unwrap(), Some(3_333));
        // From here the store's record of `first` is wrong too: the writer must not read it.
        rewrite_behind(&store, first);
        assert_eq!(loaded.latest(&evse(1)).unwrap(), Some(1), "answered from the decoded bucket");
        loaded.set_latest(&evse(1), 10).unwrap();
        assert_eq!(loaded.latest(&evse(1)).unwrap(), Some(10));
        assert!(loaded.decoded.with(first, |_| ()).is_none(), "taken, not kept twice");
        assert!(loaded.set_latest(&evse(2), 20).is_err(), "the rewritten record is refused");
    }

    #[test]
    fn the_background_decoding_lets_go_of_the_store() {
        let (store, _) = stored_map(300);
        let loaded = MapBuckets::load(&store).unwrap();
        loaded.decode_in_background();
        drop(loaded);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while Arc::strong_count(&store) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(Arc::strong_count(&store), 1, "the thread let go of the store");
    }

    #[test]
    fn a_reader_waits_for_the_publication_of_a_stored_bucket_the_writer_wrote_out() {
        let (store, _) = stored_map(500);
        let shared = Arc::new(SharedMap::default());
        let mut writer = MapWriter::new(shared.clone());
        writer.open(MapBuckets::load(&store).unwrap(), 500);
        let index = map::bucket_of(&map::key(&evse(1)));
        assert_eq!(
            shared.bucket(500, index).unwrap().unwrap().len(),
            writer.buckets().held_len(index)
        );
        // The writer changes the bucket and writes its record out (a cut) before the batch
        // that changed it is published.
        writer.buckets().set_latest(&evse(1), 501).unwrap();
        writer.finish_batch(true);
        let publication = writer.publication(501);
        let mut view = View::new(store.as_ref());
        writer.write_held_back(&mut view);
        let batch =
            crate::store::WriteBatch { projections: view.into_writes(), ..Default::default() };
        store.write(batch).unwrap();
        assert_eq!(shared.bucket(500, index).unwrap(), None, "the record no longer has its hash");
        let reader = {
            let shared = shared.clone();
            std::thread::spawn(move || shared.latest(&evse(1)).unwrap())
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        publication.publish();
        assert_eq!(reader.join().unwrap(), Some(501), "asked again once published");
        let bucket = shared.bucket(501, index).unwrap().unwrap();
        assert_eq!(
            map::bucket_hash(index, &bucket),
            shared.snapshot(501, &[index]).unwrap().paths[&index].0
        );
    }

    #[test]
    fn readers_see_a_batch_only_once_published_and_never_the_writer_s_later_changes() {
        let shared = Arc::new(SharedMap::default());
        let mut writer = MapWriter::new(shared.clone());
        writer.open(MapBuckets::empty(), 0);
        writer.buckets().set_latest(&evse(1), 10).unwrap();
        writer.finish_batch(true);
        let publication = writer.publication(11);
        assert_eq!(shared.latest(&evse(1)).unwrap(), None, "not durable yet");
        publication.publish();
        assert_eq!(shared.latest(&evse(1)).unwrap(), Some(10));
        // The published bucket is shared with the writer's: its next change copies it.
        writer.buckets().set_latest(&evse(1), 20).unwrap();
        assert_eq!(shared.latest(&evse(1)).unwrap(), Some(10), "the writer's change is its own");
        let index = map::bucket_of(&map::key(&evse(1)));
        let bucket = shared.bucket(11, index).unwrap().unwrap();
        let snapshot = shared.snapshot(11, &[index]).unwrap();
        assert_eq!(
            map::bucket_hash(index, &bucket),
            snapshot.paths[&index].0,
            "tree and bucket agree"
        );
        assert!(shared.bucket(12, index).unwrap().is_none(), "only at the published size");
        writer.finish_batch(true);
        writer.publication(12).publish();
        assert_eq!(shared.latest(&evse(1)).unwrap(), Some(20));
        assert_eq!(shared.snapshot(12, &[]).unwrap().root, writer.root().unwrap());
    }

    #[test]
    fn a_bucket_record_is_exactly_what_postcard_writes() {
        // Positions around every varint length boundary, and buckets of 0 to 300 leaves (the
        // count's own varint grows at 128).
        let positions = [
            0,
            1,
            127,
            128,
            255,
            16_383,
            16_384,
            1 << 21,
            (1 << 28) + 5,
            1 << 35,
            u64::MAX - 1,
            u64::MAX,
        ];
        for n in [0usize, 1, 2, 127, 128, 300] {
            let leaves: Bucket = (0..n)
                .map(|i| {
                    let mut key = [0u8; 32];
                    key[0] = (i % 256) as u8;
                    key[31] = (i / 256) as u8 ^ 0xa5;
                    (key, positions[i % positions.len()].wrapping_add(i as u64 / 12))
                })
                .collect();
            let ours = encode(&leaves);
            assert_eq!(ours, postcard::to_stdvec(&leaves).unwrap(), "{n} leaves");
            assert_eq!(decode_bucket(&ours).unwrap(), leaves);
            assert_eq!(record_hash(n as u16, &ours).unwrap(), map::bucket_hash(n as u16, &leaves));
            assert_eq!(postcard::from_bytes::<Bucket>(&ours).unwrap(), leaves);
        }
    }

    #[test]
    fn a_damaged_bucket_record_is_refused_not_misread() {
        let leaves: Bucket = vec![([7; 32], 300), ([9; 32], u64::MAX)];
        let record = encode(&leaves);
        for cut in 0..record.len() {
            assert!(decode_bucket(&record[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = record.clone();
        longer.push(0);
        assert!(decode_bucket(&longer).is_err(), "a trailing byte");
        // A count far beyond the record, and a position of eleven bytes.
        assert!(decode_bucket(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        let mut overlong = vec![1];
        overlong.extend_from_slice(&[0; 32]);
        overlong.extend_from_slice(&[0xff; 10]);
        overlong.push(0);
        assert!(decode_bucket(&overlong).is_err());
        assert_eq!(decode_bucket(&record).unwrap(), leaves);
    }
}
