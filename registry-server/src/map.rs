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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use registry_core::event::Identifier;
use registry_core::map::{self, Bucket, MapTree};
use registry_core::merkle::Hash;

use crate::log::View;
use crate::store::{Keyspace, LogStore, StoreError};

/// Bucket records.
pub const MAP: Keyspace = Keyspace("map");

/// A stored bucket record's leaves: the inverse of [`encode`], read directly for the same
/// reason (at ten million keys, decoding every bucket through serde took 6 s of a start).
pub fn decode_bucket(record: &[u8]) -> Result<Bucket, &'static str> {
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
    let count = varint(&mut bytes)?;
    // Each leaf takes at least 33 bytes: a damaged count cannot reserve more than the record.
    let mut leaves = Vec::with_capacity((count as usize).min(bytes.len() / 33));
    for _ in 0..count {
        let (key, rest) = bytes.split_first_chunk::<32>().ok_or("the record ends inside a key")?;
        bytes = rest;
        leaves.push((*key, varint(&mut bytes)?));
    }
    if !bytes.is_empty() {
        return Err("bytes after the last leaf");
    }
    Ok(leaves)
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

/// Every bucket, decoded: the writer's (and a catch-up's) copy of the `latest` projection,
/// including changes not yet written. Each bucket is an `Arc` so that readers and a
/// publication can hold a batch's version of it while the writer goes on: the writer copies a
/// shared bucket on its first change, and only then.
#[derive(Debug)]
pub struct MapBuckets {
    leaves: Vec<Arc<Bucket>>,
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
            leaves: std::iter::repeat_n(Arc::new(Bucket::new()), map::BUCKETS).collect(),
            changed: BTreeSet::new(),
            unwritten: BTreeSet::new(),
        }
    }

    /// Every bucket record of `store`.
    pub fn load(store: &dyn LogStore) -> Result<Self, StoreError> {
        let mut buckets = Self::empty();
        // A walk, not a scan: at a million keys the records are over 100 MB.
        store.for_each(MAP, &mut |k, v| {
            let index: [u8; 2] =
                k.try_into().map_err(|_| StoreError::Corrupt("map key is not 2 bytes".into()))?;
            let index = u16::from_be_bytes(index);
            buckets.leaves[usize::from(index)] = Arc::new(
                decode_bucket(v)
                    .map_err(|e| StoreError::Corrupt(format!("map bucket {index}: {e}")))?,
            );
            Ok(())
        })?;
        Ok(buckets)
    }

    /// The latest position recorded for an identifier.
    pub fn latest(&self, identifier: &Identifier) -> Option<u64> {
        latest_in(&self.leaves, identifier)
    }

    /// Records `position` as the latest entry of `identifier`.
    pub fn set_latest(&mut self, identifier: &Identifier, position: u64) {
        let key = map::key(identifier);
        let index = map::bucket_of(&key);
        let slot = &mut self.leaves[usize::from(index)];
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
    }

    /// The buckets changed since the last call, as they are now.
    fn take_changed(&mut self) -> Vec<(u16, Arc<Bucket>)> {
        std::mem::take(&mut self.changed)
            .into_iter()
            .map(|index| (index, self.leaves[usize::from(index)].clone()))
            .collect()
    }

    /// Writes the record of every bucket changed since the last call into `view`.
    pub fn write_unwritten(&mut self, view: &mut View<'_>) {
        for index in std::mem::take(&mut self.unwritten) {
            view.put(MAP, index.to_be_bytes().to_vec(), encode(&self.leaves[usize::from(index)]));
        }
    }

    /// Whether some bucket changed since its record was last written.
    pub fn has_unwritten(&self) -> bool {
        !self.unwritten.is_empty()
    }

    /// The hash of bucket `index` as it holds now.
    fn hash(&self, index: u16) -> Hash {
        map::bucket_hash(index, &self.leaves[usize::from(index)])
    }

    /// The buckets holding exactly `latest` (a rebuild's result, written whole through
    /// [`MapBuckets::into_records`]): each bucket sorted once instead of one insertion per
    /// update.
    pub fn from_latest(latest: impl IntoIterator<Item = (Identifier, u64)>) -> Self {
        let mut leaves = vec![Bucket::new(); map::BUCKETS];
        for (identifier, position) in latest {
            let key = map::key(&identifier);
            leaves[usize::from(map::bucket_of(&key))].push((key, position));
        }
        let mut buckets = Self::empty();
        for (slot, mut bucket) in buckets.leaves.iter_mut().zip(leaves) {
            if !bucket.is_empty() {
                bucket.sort_unstable_by_key(|leaf| leaf.0);
                *slot = Arc::new(bucket);
            }
        }
        buckets
    }

    /// The records of the buckets that hold something, in key order, as
    /// [`MapBuckets::write_unwritten`] writes them.
    pub fn into_records(self) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> {
        (0..=u16::MAX)
            .zip(self.leaves)
            .filter(|(_, leaves)| !leaves.is_empty())
            .map(|(index, leaves)| (index.to_be_bytes().to_vec(), encode(&leaves)))
    }

    /// The tree over every bucket's hash, the buckets hashed on every core (at ten million
    /// keys they hold over a gigabyte, hashed at every start).
    pub fn tree(&self) -> MapTree {
        let indices: Vec<u16> = (0..=u16::MAX).collect();
        let hashes = crate::cores::map_in_order(&indices, |&i| {
            map::bucket_hash(i, &self.leaves[usize::from(i)])
        });
        MapTree::from_bucket_hashes(|i| hashes[usize::from(i)])
    }
}

/// Room a full bucket of `len` leaves grows by. Loaded buckets are exactly full, and doubling
/// them would cost, at a million keys, 120 MB for a few thousand registrations: a sixteenth
/// more instead.
fn growth(len: usize) -> usize {
    len / 16 + 1
}

/// The latest position of `identifier` in `buckets` (every bucket, by index).
fn latest_in(buckets: &[Arc<Bucket>], identifier: &Identifier) -> Option<u64> {
    let key = map::key(identifier);
    let leaves = buckets.get(usize::from(map::bucket_of(&key)))?;
    leaves.binary_search_by(|(k, _)| k.cmp(&key)).ok().map(|i| leaves[i].1)
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
/// back between snapshot cuts, see [`MapWriter`]), so readers never read them.
#[derive(Debug, Default)]
pub struct SharedMap {
    published: RwLock<Published>,
}

#[derive(Debug, Default)]
struct Published {
    version: u64,
    tree: MapTree,
    /// Every bucket by index (empty before the writer opens).
    buckets: Vec<Arc<Bucket>>,
}

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

    /// Bucket `index` as published at log size `version`, or `None` if the publication is
    /// not at `version`.
    pub fn bucket(&self, version: u64, index: u16) -> Option<Arc<Bucket>> {
        let guard = self.published.read().ok()?;
        if guard.version != version {
            return None;
        }
        Some(guard.buckets.get(usize::from(index)).cloned().unwrap_or_default())
    }

    /// The latest position of `identifier` as published (the newest durable batch).
    pub fn latest(&self, identifier: &Identifier) -> Option<u64> {
        latest_in(&self.published.read().ok()?.buckets, identifier)
    }

    fn replace(&self, version: u64, tree: MapTree, buckets: Vec<Arc<Bucket>>) {
        if let Ok(mut g) = self.published.write() {
            *g = Published { version, tree, buckets };
        }
    }

    fn update(&self, version: u64, nodes: &[(usize, Hash)], buckets: Vec<(u16, Arc<Bucket>)>) {
        if let Ok(mut g) = self.published.write() {
            g.tree.set_nodes(nodes);
            for (index, bucket) in buckets {
                if let Some(slot) = g.buckets.get_mut(usize::from(index)) {
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
    to_publish: BTreeMap<u16, Arc<Bucket>>,
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
        self.shared.replace(size, self.tree.clone(), self.buckets.leaves.clone());
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
    buckets: Vec<(u16, Arc<Bucket>)>,
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
                buckets.set_latest(&id, u64::from(n));
            }
        }
        Arc::make_mut(&mut buckets.leaves[7]).shrink_to_fit(); // as loaded
        let full = buckets.leaves[7].len();
        assert!(full > 16, "{full} leaves");
        let extra =
            (3_000_000u32..).map(evse).find(|id| map::bucket_of(&map::key(id)) == 7).unwrap();
        buckets.set_latest(&extra, 1);
        let bucket = &buckets.leaves[7];
        assert_eq!(bucket.len(), full + 1);
        assert!(bucket.capacity() <= full + full / 16 + 1, "{} for {full}", bucket.capacity());
        assert!(bucket.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
        assert_eq!(buckets.latest(&extra), Some(1));
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
                writer.buckets().set_latest(&evse(n), u64::from(n));
            }
            writer.finish_batch(false);
            assert_eq!(writer.root(), None, "no root while buckets wait to be hashed");
        }
        assert!(writer.publication(300).nodes.is_empty(), "no tree nodes to show readers yet");
        // A replica's copy of nothing under a checkpoint that signs the root (on reconnecting).
        writer.finish_batch(true);
        let from_scratch = writer.buckets().tree().root();
        assert_eq!(writer.root(), Some(from_scratch), "a batch of nothing hashes what was put off");
        writer.buckets().set_latest(&evse(300), 300);
        writer.finish_batch(true);
        let from_scratch = writer.buckets().tree().root();
        assert_eq!(writer.root(), Some(from_scratch), "every bucket hashed, once");
        assert!(!writer.publication(301).nodes.is_empty(), "the changed nodes, for readers");
    }

    #[test]
    fn bucket_records_are_held_back_until_asked_for_and_then_written_once() {
        let store = crate::store::memory::MemoryStore::new();
        let mut writer = MapWriter::new(Arc::default());
        writer.open(MapBuckets::empty(), 0);
        let mut changed = BTreeSet::new();
        for n in 0..200u32 {
            writer.buckets().set_latest(&evse(n), u64::from(n));
            changed.insert(map::bucket_of(&map::key(&evse(n))));
            if n % 50 == 49 {
                writer.finish_batch(true);
            }
        }
        assert!(writer.holds_back(), "four batches changed buckets, none wrote them");
        let mut view = View::new(&store);
        writer.write_held_back(&mut view);
        assert_eq!(view.len(), changed.len(), "each changed bucket once, as it is now");
        assert!(!writer.holds_back());
        let mut again = View::new(&store);
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

    #[test]
    fn readers_see_a_batch_only_once_published_and_never_the_writer_s_later_changes() {
        let shared = Arc::new(SharedMap::default());
        let mut writer = MapWriter::new(shared.clone());
        writer.open(MapBuckets::empty(), 0);
        writer.buckets().set_latest(&evse(1), 10);
        writer.finish_batch(true);
        let publication = writer.publication(11);
        assert_eq!(shared.latest(&evse(1)), None, "not durable yet");
        publication.publish();
        assert_eq!(shared.latest(&evse(1)), Some(10));
        // The published bucket is shared with the writer's: its next change copies it.
        writer.buckets().set_latest(&evse(1), 20);
        assert_eq!(shared.latest(&evse(1)), Some(10), "the writer's change is its own");
        let index = map::bucket_of(&map::key(&evse(1)));
        let bucket = shared.bucket(11, index).unwrap();
        let snapshot = shared.snapshot(11, &[index]).unwrap();
        assert_eq!(
            map::bucket_hash(index, &bucket),
            snapshot.paths[&index].0,
            "tree and bucket agree"
        );
        assert!(shared.bucket(12, index).is_none(), "only at the published size");
        writer.finish_batch(true);
        writer.publication(12).publish();
        assert_eq!(shared.latest(&evse(1)), Some(20));
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
