//! The verifiable map (`registry_proto::map`) as the server keeps it: bucket records on disk,
//! the tree of bucket hashes in memory.
//!
//! The writer updates the buckets an entire group commit touched, once per batch, in the same
//! atomic write as the entries; its own copy of the tree gives the root for the head
//! checkpoint's extension line. When the batch is durable the changed bucket hashes are published
//! to the [`SharedMap`] that proof builders read, stamped with the log size they belong to. A
//! reader snapshots the tree at size H, then reads bucket records from disk; a bucket whose
//! leaves no longer hash to the snapshot's bucket hash was rewritten by a newer batch, and the
//! reader retries. The records hold nothing but the leaves, so a rebuild reproduces them exactly.
//!
//! ```text
//! map       bucket (u16 BE) -> leaves (sorted by key)
//! map_hash  bucket (u16 BE) -> bucket hash (32 bytes), to load the tree at start without the leaves
//! ```

use std::collections::BTreeMap;
use std::sync::RwLock;

use registry_proto::event::{Identifier, IdentifierKind};
use registry_proto::map::{self, Bucket, MapTree};
use registry_proto::merkle::Hash;

use crate::log::View;
use crate::projection::Kv;
use crate::store::{Keyspace, LogStore, StoreError, WriteBatch};

/// Bucket records.
pub const MAP: Keyspace = Keyspace("map");
/// Bucket hashes.
pub const MAP_HASH: Keyspace = Keyspace("map_hash");

/// Reads a bucket's leaves (empty if never written).
pub fn read_bucket<K: Kv + ?Sized>(kv: &K, index: u16) -> Result<Bucket, StoreError> {
    match kv.get(MAP, &index.to_be_bytes())? {
        Some(b) => postcard::from_bytes(&b)
            .map_err(|e| StoreError::Corrupt(format!("map bucket {index}: {e}"))),
        None => Ok(Bucket::default()),
    }
}

fn encode(leaves: &Bucket) -> Vec<u8> {
    postcard::to_stdvec(leaves).expect("buckets always serialize")
}

/// Loads the tree from the stored bucket hashes.
pub fn load_tree(store: &dyn LogStore) -> Result<MapTree, StoreError> {
    let mut hashes: BTreeMap<u16, Hash> = BTreeMap::new();
    for (k, v) in store.scan_prefix(MAP_HASH, b"")? {
        let index: [u8; 2] = k
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Corrupt("map_hash key is not 2 bytes".into()))?;
        let hash: Hash = v
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Corrupt("map_hash value is not 32 bytes".into()))?;
        hashes.insert(u16::from_be_bytes(index), hash);
    }
    Ok(MapTree::from_bucket_hashes(|i| {
        hashes.get(&i).copied().unwrap_or_else(|| map::bucket_hash(i, &[]))
    }))
}

/// Regenerates every bucket from the `latest` projection (after a projection rebuild).
pub fn rebuild(store: &dyn LogStore, latest: Vec<(Identifier, u64)>) -> Result<(), StoreError> {
    let mut buckets: BTreeMap<u16, BTreeMap<Hash, u64>> = BTreeMap::new();
    for (id, position) in latest {
        let k = map::key(&id);
        buckets.entry(map::bucket_of(&k)).or_default().insert(k, position);
    }
    let mut writes = Vec::new();
    for (index, leaves) in buckets {
        let leaves: Bucket = leaves.into_iter().collect();
        let key = index.to_be_bytes().to_vec();
        writes.push(crate::store::ProjectionWrite {
            keyspace: MAP_HASH,
            key: key.clone(),
            value: Some(map::bucket_hash(index, &leaves).to_vec()),
        });
        writes.push(crate::store::ProjectionWrite {
            keyspace: MAP,
            key,
            value: Some(encode(&leaves)),
        });
    }
    store.write(WriteBatch { projections: writes, ..Default::default() })
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
    touched: BTreeMap<Hash, u64>,
    changed: Vec<(u16, Hash)>,
}

impl MapWriter {
    /// A writer publishing to `shared`.
    pub fn new(shared: std::sync::Arc<SharedMap>) -> Self {
        Self { shared, tree: MapTree::default(), touched: BTreeMap::new(), changed: Vec::new() }
    }

    /// Loads the tree at start.
    pub fn open(&mut self, store: &dyn LogStore, size: u64) -> Result<(), StoreError> {
        self.tree = load_tree(store)?;
        self.shared.replace(size, self.tree.clone());
        Ok(())
    }

    /// Records that an entry at `position` touched `identifier`.
    pub fn touch(&mut self, identifier: &Identifier, position: u64) {
        self.touched.insert(map::key(identifier), position);
    }

    /// Rewrites the buckets the batch touched and updates the writer's tree.
    pub fn finish_batch(&mut self, view: &mut View<'_>) -> Result<(), StoreError> {
        let mut by_bucket: BTreeMap<u16, Vec<(Hash, u64)>> = BTreeMap::new();
        for (k, p) in std::mem::take(&mut self.touched) {
            by_bucket.entry(map::bucket_of(&k)).or_default().push((k, p));
        }
        for (index, updates) in by_bucket {
            let mut leaves: BTreeMap<Hash, u64> = read_bucket(view, index)?.into_iter().collect();
            leaves.extend(updates);
            let leaves: Bucket = leaves.into_iter().collect();
            let hash = map::bucket_hash(index, &leaves);
            let key = index.to_be_bytes().to_vec();
            view.put(MAP, key.clone(), encode(&leaves));
            view.put(MAP_HASH, key, hash.to_vec());
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

/// The identifier stored under a `latest` projection key (kind tag, value).
pub fn identifier_from_latest_key(key: &[u8]) -> Result<Identifier, StoreError> {
    let (&tag, value) =
        key.split_first().ok_or_else(|| StoreError::Corrupt("empty latest key".into()))?;
    let kind = IdentifierKind::from_tag(tag)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown identifier tag {tag}")))?;
    let value = String::from_utf8(value.to_vec())
        .map_err(|_| StoreError::Corrupt("latest key is not UTF-8".into()))?;
    Ok(Identifier { kind, value })
}
