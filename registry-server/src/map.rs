//! The verifiable map (`registry_proto::map`) as the server keeps it: bucket records on disk,
//! the tree of bucket hashes in memory.
//!
//! The bucket records are also the `latest` projection (the lifecycle state's "latest entry per
//! identifier"): `apply` updates them through the batch view like any other projection, in the
//! same atomic write as the entries. Once per batch the writer re-hashes the buckets the batch
//! touched; its own copy of the tree gives the root for the head checkpoint's extension line. When the batch is durable the changed bucket hashes are published
//! to the [`SharedMap`] that proof builders read, stamped with the log size they belong to. A
//! reader snapshots the tree at size H, then reads bucket records from disk; a bucket whose
//! leaves no longer hash to the snapshot's bucket hash was rewritten by a newer batch, and the
//! reader retries. The records hold nothing but the leaves, so a rebuild reproduces them exactly.
//!
//! ```text
//! map       bucket (u16 BE) -> leaves (sorted by key)
//! ```
//!
//! Bucket hashes are not stored: at start the tree is rebuilt from the buckets, which costs one
//! pass over them and saves a second key written per bucket in every group commit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

use registry_proto::event::Identifier;
use registry_proto::map::{self, Bucket, MapTree};
use registry_proto::merkle::Hash;

use crate::log::View;
use crate::projection::Kv;
use crate::store::{Keyspace, LogStore, StoreError};

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

/// A stored bucket record's leaves.
pub fn decode_bucket(record: &[u8]) -> Result<Bucket, postcard::Error> {
    postcard::from_bytes(record)
}

fn encode(leaves: &Bucket) -> Vec<u8> {
    postcard::to_stdvec(leaves).expect("buckets always serialize")
}

/// The latest position recorded for an identifier.
pub fn latest<K: Kv + ?Sized>(kv: &K, identifier: &Identifier) -> Result<Option<u64>, StoreError> {
    let key = map::key(identifier);
    let leaves = read_bucket(kv, map::bucket_of(&key))?;
    Ok(leaves.binary_search_by(|(k, _)| k.cmp(&key)).ok().map(|i| leaves[i].1))
}

/// Records `position` as the latest entry of `identifier`.
pub fn set_latest(
    view: &mut View<'_>,
    identifier: &Identifier,
    position: u64,
) -> Result<(), StoreError> {
    let key = map::key(identifier);
    let index = map::bucket_of(&key);
    let mut leaves = read_bucket(view, index)?;
    match leaves.binary_search_by(|(k, _)| k.cmp(&key)) {
        Ok(i) => leaves[i].1 = position,
        Err(i) => leaves.insert(i, (key, position)),
    }
    view.put(MAP, index.to_be_bytes().to_vec(), encode(&leaves));
    Ok(())
}

/// Rebuilds the tree from the stored buckets.
pub fn load_tree(store: &dyn LogStore) -> Result<MapTree, StoreError> {
    // A walk, not a scan: at a million keys the buckets are over 100 MB, and start-up needs
    // only their hashes.
    let mut hashes: BTreeMap<u16, Hash> = BTreeMap::new();
    store.for_each(MAP, &mut |k, v| {
        let index: [u8; 2] =
            k.try_into().map_err(|_| StoreError::Corrupt("map key is not 2 bytes".into()))?;
        let index = u16::from_be_bytes(index);
        let leaves = decode_bucket(v)
            .map_err(|e| StoreError::Corrupt(format!("map bucket {index}: {e}")))?;
        hashes.insert(index, map::bucket_hash(index, &leaves));
        Ok(())
    })?;
    Ok(MapTree::from_bucket_hashes(|i| {
        hashes.get(&i).copied().unwrap_or_else(|| map::bucket_hash(i, &[]))
    }))
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

    fn update(&self, version: u64, changes: &[(u16, Hash)]) {
        if let Ok(mut g) = self.published.write() {
            for (b, h) in changes {
                g.1.set_bucket(*b, *h);
            }
            g.0 = version;
        }
    }
}

/// The writer's side of the map: its own tree and the batch's pending updates.
#[derive(Debug)]
pub struct MapWriter {
    shared: std::sync::Arc<SharedMap>,
    tree: MapTree,
    touched: BTreeSet<u16>,
    changed: Vec<(u16, Hash)>,
}

impl MapWriter {
    /// A writer publishing to `shared`.
    pub fn new(shared: std::sync::Arc<SharedMap>) -> Self {
        Self { shared, tree: MapTree::default(), touched: BTreeSet::new(), changed: Vec::new() }
    }

    /// Loads the tree at start.
    pub fn open(&mut self, store: &dyn LogStore, size: u64) -> Result<(), StoreError> {
        self.tree = load_tree(store)?;
        self.shared.replace(size, self.tree.clone());
        Ok(())
    }

    /// Notes that the batch changed `identifier`'s latest entry (see [`set_latest`]).
    pub fn touch(&mut self, identifier: &Identifier) {
        self.touched.insert(map::bucket_of(&map::key(identifier)));
    }

    /// Re-hashes the buckets the batch touched and updates the writer's tree.
    pub fn finish_batch(&mut self, view: &View<'_>) -> Result<(), StoreError> {
        for index in std::mem::take(&mut self.touched) {
            let hash = map::bucket_hash(index, &read_bucket(view, index)?);
            self.tree.set_bucket(index, hash);
            self.changed.push((index, hash));
        }
        Ok(())
    }

    /// Publishes the batch's bucket hashes for readers.
    pub fn batch_durable(&mut self, size: u64) {
        self.shared.update(size, &std::mem::take(&mut self.changed));
    }

    /// The root of the writer's tree (for the next head checkpoint).
    pub fn root(&self) -> Hash {
        self.tree.root()
    }
}
