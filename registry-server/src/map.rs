//! The verifiable map (`registry_core::map`) as the server keeps it: bucket records on disk,
//! the tree of bucket hashes in memory, and for the writer every bucket decoded in memory.
//!
//! The bucket records are also the `latest` projection (the lifecycle state's "latest entry per
//! identifier"). The writer reads and changes them through its [`MapBuckets`], which holds every
//! bucket decoded (a registration touches up to four buckets, and reading and decoding them from
//! sled was a fifth of the writer's time); once per batch it writes the buckets the batch changed
//! into the batch, in the same atomic write as the entries, and re-hashes them in its own copy
//! of the tree, whose root goes into the head checkpoint's extension line. When the batch is
//! durable the changed tree nodes are published to the [`SharedMap`] that proof builders read,
//! stamped with the log size they belong to. A reader snapshots the tree at size H, then reads
//! bucket records from disk; a bucket whose leaves no longer hash to the snapshot's bucket hash
//! was rewritten by a newer batch, and the reader retries. The records hold nothing but the
//! leaves, so a rebuild reproduces them exactly.
//!
//! ```text
//! map       bucket (u16 BE) -> leaves (sorted by key)
//! ```
//!
//! Bucket hashes are not stored: at start the tree is rebuilt from the buckets, which costs one
//! pass over them and saves a second key written per bucket in every group commit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

use registry_core::event::Identifier;
use registry_core::map::{self, Bucket, MapTree};
use registry_core::merkle::Hash;

use crate::log::View;
use crate::store::{Keyspace, Kv, LogStore, StoreError};

/// Bucket records.
pub const MAP: Keyspace = Keyspace("map");

/// Reads a bucket's leaves (empty if never written).
pub fn read_bucket<K: Kv + ?Sized>(kv: &K, index: u16) -> Result<Bucket, StoreError> {
    match kv.get(MAP, &index.to_be_bytes())? {
        Some(b) => {
            decode_bucket(&b).map_err(|e| StoreError::Corrupt(format!("map bucket {index}: {e}")))
        }
        None => Ok(Bucket::default()),
    }
}

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

/// The latest position recorded for an identifier.
pub fn latest<K: Kv + ?Sized>(kv: &K, identifier: &Identifier) -> Result<Option<u64>, StoreError> {
    let key = map::key(identifier);
    let leaves = read_bucket(kv, map::bucket_of(&key))?;
    Ok(leaves.binary_search_by(|(k, _)| k.cmp(&key)).ok().map(|i| leaves[i].1))
}

/// Every bucket, decoded: the writer's (and a catch-up's) copy of the `latest` projection,
/// including changes not yet written.
#[derive(Debug)]
pub struct MapBuckets {
    leaves: Vec<Bucket>,
    dirty: BTreeSet<u16>,
}

impl MapBuckets {
    /// No identifier recorded yet (a new log).
    pub fn empty() -> Self {
        Self { leaves: vec![Bucket::new(); map::BUCKETS], dirty: BTreeSet::new() }
    }

    /// Every bucket record of `store`.
    pub fn load(store: &dyn LogStore) -> Result<Self, StoreError> {
        let mut buckets = Self::empty();
        // A walk, not a scan: at a million keys the records are over 100 MB.
        store.for_each(MAP, &mut |k, v| {
            let index: [u8; 2] =
                k.try_into().map_err(|_| StoreError::Corrupt("map key is not 2 bytes".into()))?;
            let index = u16::from_be_bytes(index);
            buckets.leaves[usize::from(index)] = decode_bucket(v)
                .map_err(|e| StoreError::Corrupt(format!("map bucket {index}: {e}")))?;
            Ok(())
        })?;
        Ok(buckets)
    }

    /// The latest position recorded for an identifier.
    pub fn latest(&self, identifier: &Identifier) -> Option<u64> {
        let key = map::key(identifier);
        let leaves = &self.leaves[usize::from(map::bucket_of(&key))];
        leaves.binary_search_by(|(k, _)| k.cmp(&key)).ok().map(|i| leaves[i].1)
    }

    /// Records `position` as the latest entry of `identifier`.
    pub fn set_latest(&mut self, identifier: &Identifier, position: u64) {
        let key = map::key(identifier);
        let index = map::bucket_of(&key);
        let leaves = &mut self.leaves[usize::from(index)];
        match leaves.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => leaves[i].1 = position,
            Err(i) => {
                // Loaded buckets are exactly full: the first insertion into each would double
                // it, and a few thousand registrations touch every bucket (at a million keys,
                // 120 MB for a handful of new leaves). A sixteenth more at a time instead.
                if leaves.len() == leaves.capacity() {
                    leaves.reserve_exact(leaves.len() / 16 + 1);
                }
                leaves.insert(i, (key, position));
            }
        }
        self.dirty.insert(index);
    }

    /// Writes every bucket changed since the last call into `view` and returns their indices.
    pub fn write_changed(&mut self, view: &mut View<'_>) -> Vec<u16> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .inspect(|&index| {
                let leaves = &self.leaves[usize::from(index)];
                view.put(MAP, index.to_be_bytes().to_vec(), encode(leaves));
            })
            .collect()
    }

    /// The hash of bucket `index` as it holds now.
    fn hash(&self, index: u16) -> Hash {
        map::bucket_hash(index, &self.leaves[usize::from(index)])
    }

    /// The buckets holding exactly `latest` (a rebuild's result): each bucket sorted once
    /// instead of one insertion per update.
    pub fn from_latest(latest: impl IntoIterator<Item = (Identifier, u64)>) -> Self {
        let mut buckets = Self::empty();
        for (identifier, position) in latest {
            let key = map::key(&identifier);
            let index = map::bucket_of(&key);
            buckets.leaves[usize::from(index)].push((key, position));
            buckets.dirty.insert(index);
        }
        for leaves in &mut buckets.leaves {
            leaves.sort_unstable_by_key(|leaf| leaf.0);
        }
        buckets
    }

    /// The records of the buckets that hold something, in key order, as
    /// [`MapBuckets::write_changed`] writes them.
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

/// The tree as of the durable head, shared between the writer (which publishes) and proof
/// builders (which read).
#[derive(Debug, Default)]
pub struct SharedMap {
    published: RwLock<(u64, MapTree)>,
}

impl SharedMap {
    /// Paths for `buckets` in the published tree, or `None` if it is not at `version`.
    pub fn snapshot(&self, version: u64, buckets: &[u16]) -> Option<Snapshot> {
        let guard = self.published.read().ok()?;
        let (v, tree) = &*guard;
        if *v != version {
            return None;
        }
        Some(Snapshot {
            version,
            root: tree.root(),
            paths: buckets.iter().map(|b| (*b, (tree.bucket(*b), tree.siblings(*b)))).collect(),
        })
    }

    fn replace(&self, version: u64, tree: MapTree) {
        if let Ok(mut g) = self.published.write() {
            *g = (version, tree);
        }
    }

    fn update(&self, version: u64, nodes: &[(usize, Hash)]) {
        if let Ok(mut g) = self.published.write() {
            g.1.set_nodes(nodes);
            g.0 = version;
        }
    }
}

/// The writer's side of the map: every bucket, its own tree, and the tree nodes changed since
/// the last publication.
#[derive(Debug)]
pub struct MapWriter {
    shared: std::sync::Arc<SharedMap>,
    tree: MapTree,
    buckets: MapBuckets,
    changed: Vec<(usize, Hash)>,
    /// Buckets written since the tree last took their hashes (batches that needed no root).
    stale: BTreeSet<u16>,
}

impl MapWriter {
    /// A writer publishing to `shared`.
    pub fn new(shared: std::sync::Arc<SharedMap>) -> Self {
        Self {
            shared,
            tree: MapTree::default(),
            buckets: MapBuckets::empty(),
            changed: Vec::new(),
            stale: BTreeSet::new(),
        }
    }

    /// Starts from `buckets` (loaded, and brought up to the log by a replay) at log `size`:
    /// builds the tree and shows it to readers.
    pub fn open(&mut self, buckets: MapBuckets, size: u64) {
        self.buckets = buckets;
        self.tree = self.buckets.tree();
        self.changed.clear();
        self.stale.clear();
        self.shared.replace(size, self.tree.clone());
    }

    /// The buckets, for the lifecycle state the writer decides and applies against.
    pub fn buckets(&mut self) -> &mut MapBuckets {
        &mut self.buckets
    }

    /// Writes the buckets the batch changed into it and, when the batch's head needs the map
    /// root (`rehash`), re-hashes every bucket changed since the tree last did in the
    /// writer's tree. A replica catching up needs no root until the primary's checkpoint
    /// signs one, so each bucket is hashed once however many batches changed it.
    pub fn finish_batch(&mut self, view: &mut View<'_>, rehash: bool) {
        self.stale.extend(self.buckets.write_changed(view));
        if rehash && !self.stale.is_empty() {
            let stale = std::mem::take(&mut self.stale);
            let hashes: Vec<(u16, Hash)> =
                stale.into_iter().map(|index| (index, self.buckets.hash(index))).collect();
            self.changed.extend(self.tree.set_buckets(&hashes));
        }
    }

    /// What to publish once the batches finished so far are durable: the tree nodes they
    /// changed, for readers at log size `size`.
    pub fn publication(&mut self, size: u64) -> Publication {
        Publication { shared: self.shared.clone(), size, nodes: std::mem::take(&mut self.changed) }
    }

    /// The root of the writer's tree (for the next head checkpoint); `None` while buckets
    /// changed by batches that needed no root are not hashed into it yet.
    pub fn root(&self) -> Option<Hash> {
        self.stale.is_empty().then(|| self.tree.root())
    }
}

/// Changed tree nodes on their way to readers; [`Publication::publish`] once durable.
#[derive(Debug)]
pub struct Publication {
    shared: std::sync::Arc<SharedMap>,
    size: u64,
    nodes: Vec<(usize, Hash)>,
}

impl Publication {
    /// Shows the nodes to proof builders, as the tree at the publication's log size.
    pub fn publish(self) {
        self.shared.update(self.size, &self.nodes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_leaf_grows_a_full_bucket_by_a_little_and_keeps_it_sorted() {
        let mut buckets = MapBuckets::empty();
        let evse = |n: u32| Identifier {
            kind: registry_core::event::IdentifierKind::Evse,
            value: format!("DE*ABC*E{n}"),
        };
        // Enough identifiers that one bucket holds a few dozen.
        for n in 0..3_000_000u32 {
            let id = evse(n);
            if map::bucket_of(&map::key(&id)) == 7 {
                buckets.set_latest(&id, u64::from(n));
            }
        }
        let bucket = &mut buckets.leaves[7];
        bucket.shrink_to_fit(); // as loaded
        let full = bucket.len();
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

    #[test]
    fn a_batch_that_needs_no_root_leaves_the_hashing_to_the_next_that_does() {
        let store = crate::store::memory::MemoryStore::new();
        let mut writer = MapWriter::new(std::sync::Arc::default());
        writer.open(MapBuckets::empty(), 0);
        let evse = |n: u32| Identifier {
            kind: registry_core::event::IdentifierKind::Evse,
            value: format!("DE*ABC*E{n}"),
        };
        for batch in 0..3u32 {
            let ids: Vec<Identifier> = (batch * 100..(batch + 1) * 100).map(evse).collect();
            for (n, id) in (batch * 100..).zip(&ids) {
                writer.buckets().set_latest(id, u64::from(n));
            }
            let mut view = View::new(&store);
            writer.finish_batch(&mut view, false);
            assert_eq!(writer.root(), None, "no root while buckets wait to be hashed");
            let buckets: BTreeSet<u16> =
                ids.iter().map(|id| map::bucket_of(&map::key(id))).collect();
            assert_eq!(view.len(), buckets.len(), "but every changed bucket is written at once");
        }
        assert!(writer.publication(300).nodes.is_empty(), "nothing to show readers yet");
        writer.buckets().set_latest(&evse(300), 300);
        writer.finish_batch(&mut View::new(&store), true);
        let from_scratch = writer.buckets().tree().root();
        assert_eq!(writer.root(), Some(from_scratch), "every bucket hashed, once");
        assert!(!writer.publication(301).nodes.is_empty(), "the changed nodes, for readers");
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
