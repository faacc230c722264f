//! The verifiable map: for every identifier, the position of the latest entry that touched it.
//!
//! Inclusion proofs show that entries exist; they cannot show that no *later* entry changed an
//! answer. Every entry names the previous entry of each identifier it touches (a back-linked
//! chain), and this map commits to the head of every chain, so a client given the map proof for
//! an identifier and the chain back from its head knows it has seen every entry about it.
//!
//! Structure: a *bucketed Merkle map*. An identifier's map key is a SHA-256 of its kind and
//! value; the first 16 bits pick one of 65,536 buckets. A bucket is the sorted list of its
//! (key, position) leaves, hashed as a whole; a binary Merkle tree of height 16 over the bucket
//! hashes gives the root. A proof is the bucket's leaves and the 16 sibling hashes on its path:
//! it shows the identifier's latest position, or that the identifier is absent. (A fixed-depth
//! tree keeps updates to one bucket rewrite plus 16 hashes, which matters on a store that pays per
//! key written; proofs grow with bucket population, about 50 leaves at 3 million identifiers.)
//!
//! Hashes are domain-separated from the log's tree: bucket `SHA-256(0x02 ‖ index ‖ leaves)`,
//! interior `SHA-256(0x03 ‖ left ‖ right)`.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use crate::event::Identifier;
use crate::merkle::Hash;

/// Number of bucket bits: 2^16 buckets.
pub const BUCKET_BITS: u32 = 16;
/// Number of buckets.
pub const BUCKETS: usize = 1 << BUCKET_BITS;

/// The checkpoint extension line that carries the map root: `keyregistry.v1 map <base64 root>`.
pub const EXTENSION_PREFIX: &str = "keyregistry.v1 map ";

/// An identifier's map key.
pub fn key(identifier: &Identifier) -> Hash {
    let mut h = Sha256::new();
    h.update(b"keyregistry.v1 map key\n");
    h.update([identifier.kind.tag()]);
    h.update(identifier.value.as_bytes());
    h.finalize().into()
}

/// The bucket a key falls into.
pub fn bucket_of(key: &Hash) -> u16 {
    u16::from_be_bytes([key[0], key[1]])
}

/// A bucket's contents: leaves sorted by key.
pub type Bucket = Vec<(Hash, u64)>;

/// The hash of a bucket's sorted leaves.
pub fn bucket_hash(index: u16, leaves: &[(Hash, u64)]) -> Hash {
    let mut h = BucketHasher::new(index);
    for (key, position) in leaves {
        h.leaf(key, *position);
    }
    h.finish()
}

/// [`bucket_hash`] fed one leaf at a time, for leaves read from an encoding without being
/// collected first (a server hashes every stored bucket at start).
#[derive(Debug, Clone)]
pub struct BucketHasher(Sha256);

impl BucketHasher {
    /// Starts the hash of bucket `index`.
    pub fn new(index: u16) -> Self {
        let mut h = Sha256::new();
        h.update([0x02]);
        h.update(index.to_be_bytes());
        Self(h)
    }

    /// Adds the next leaf (in key order).
    pub fn leaf(&mut self, key: &Hash, position: u64) {
        self.0.update(key);
        self.0.update(position.to_be_bytes());
    }

    /// The bucket's hash.
    pub fn finish(self) -> Hash {
        self.0.finalize().into()
    }
}

fn interior(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x03]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The checkpoint extension line for a map root.
pub fn extension_line(root: &Hash) -> String {
    format!("{EXTENSION_PREFIX}{}", B64.encode(root))
}

/// The map root carried by a checkpoint's extension lines, if any.
pub fn root_from_extensions(extensions: &[String]) -> Option<Hash> {
    extensions
        .iter()
        .find_map(|l| l.strip_prefix(EXTENSION_PREFIX))
        .and_then(|b| B64.decode(b).ok())
        .and_then(|b| b.try_into().ok())
}

/// The tree over all bucket hashes, in heap order: node 1 is the root, the bucket hashes are
/// nodes `BUCKETS..2*BUCKETS`.
#[derive(Clone)]
pub struct MapTree {
    nodes: Vec<Hash>,
}

impl std::fmt::Debug for MapTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapTree").field("root", &hex::encode(self.root())).finish()
    }
}

impl Default for MapTree {
    fn default() -> Self {
        Self::from_bucket_hashes(|i| bucket_hash(i, &[]))
    }
}

impl MapTree {
    /// A tree whose bucket `i` hashes to `bucket(i)`.
    pub fn from_bucket_hashes(mut bucket: impl FnMut(u16) -> Hash) -> Self {
        let mut nodes = vec![[0u8; 32]; 2 * BUCKETS];
        for i in 0..BUCKETS {
            nodes[BUCKETS + i] = bucket(i as u16);
        }
        for n in (1..BUCKETS).rev() {
            nodes[n] = interior(&nodes[2 * n], &nodes[2 * n + 1]);
        }
        Self { nodes }
    }

    /// The root.
    pub fn root(&self) -> Hash {
        self.nodes[1]
    }

    /// The hash of bucket `index`.
    pub fn bucket(&self, index: u16) -> Hash {
        self.nodes[BUCKETS + usize::from(index)]
    }

    /// Sets a bucket's hash and recomputes its path.
    pub fn set_bucket(&mut self, index: u16, hash: Hash) {
        let mut n = BUCKETS + usize::from(index);
        self.nodes[n] = hash;
        while n > 1 {
            n /= 2;
            self.nodes[n] = interior(&self.nodes[2 * n], &self.nodes[2 * n + 1]);
        }
    }

    /// Sets many buckets' hashes and recomputes their paths, each shared node once; returns
    /// every node that changed (heap index, hash), so that another copy of the tree can take
    /// them over with [`MapTree::set_nodes`] instead of hashing the paths again.
    pub fn set_buckets(&mut self, buckets: &[(u16, Hash)]) -> Vec<(usize, Hash)> {
        let mut level: Vec<usize> =
            buckets.iter().map(|(i, _)| BUCKETS + usize::from(*i)).collect();
        for (i, h) in buckets {
            self.nodes[BUCKETS + usize::from(*i)] = *h;
        }
        level.sort_unstable();
        level.dedup();
        let mut changed: Vec<(usize, Hash)> = level.iter().map(|n| (*n, self.nodes[*n])).collect();
        while level.first().is_some_and(|n| *n > 1) {
            // Sorted children give sorted parents, so neighbours are the only duplicates.
            level = level.iter().map(|n| n / 2).collect();
            level.dedup();
            for n in &level {
                self.nodes[*n] = interior(&self.nodes[2 * n], &self.nodes[2 * n + 1]);
                changed.push((*n, self.nodes[*n]));
            }
        }
        changed
    }

    /// Takes over nodes that [`MapTree::set_buckets`] computed on another copy of the tree.
    pub fn set_nodes(&mut self, nodes: &[(usize, Hash)]) {
        for (n, h) in nodes {
            if let Some(slot) = self.nodes.get_mut(*n) {
                *slot = *h;
            }
        }
    }

    /// The sibling hashes from bucket `index` up to the root.
    pub fn siblings(&self, index: u16) -> Vec<Hash> {
        let mut n = BUCKETS + usize::from(index);
        let mut out = Vec::with_capacity(BUCKET_BITS as usize);
        while n > 1 {
            out.push(self.nodes[n ^ 1]);
            n /= 2;
        }
        out
    }
}

/// A whole map in memory: buckets and tree. For offline verification and tests; the server keeps
/// buckets on disk and only the tree in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryMap {
    buckets: BTreeMap<u16, BTreeMap<Hash, u64>>,
    tree: Option<MapTree>,
}

impl MemoryMap {
    /// Sets an identifier's latest position.
    pub fn set(&mut self, identifier: &Identifier, position: u64) {
        let k = key(identifier);
        self.buckets.entry(bucket_of(&k)).or_default().insert(k, position);
        self.tree = None;
    }

    /// The root (computed on demand).
    pub fn root(&mut self) -> Hash {
        if self.tree.is_none() {
            let buckets = &self.buckets;
            self.tree = Some(MapTree::from_bucket_hashes(|i| {
                let leaves: Bucket = buckets
                    .get(&i)
                    .map(|b| b.iter().map(|(k, p)| (*k, *p)).collect())
                    .unwrap_or_default();
                bucket_hash(i, &leaves)
            }));
        }
        self.tree.as_ref().map(MapTree::root).expect("just built")
    }

    /// The proof for an identifier.
    pub fn prove(&mut self, identifier: &Identifier) -> MapProof {
        self.root();
        let k = key(identifier);
        let index = bucket_of(&k);
        let leaves = self
            .buckets
            .get(&index)
            .map(|b| b.iter().map(|(k, p)| (*k, *p)).collect())
            .unwrap_or_default();
        let siblings = self.tree.as_ref().map(|t| t.siblings(index)).unwrap_or_default();
        MapProof { leaves, siblings }
    }
}

/// A proof of an identifier's latest position (or absence) under a map root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapProof {
    /// Every leaf of the identifier's bucket, sorted by key.
    pub leaves: Bucket,
    /// Sibling hashes from the bucket up to the root.
    pub siblings: Vec<Hash>,
}

/// A map proof does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// Wrong number of siblings.
    #[error("a map proof has {0} sibling hashes, not 16")]
    Siblings(usize),
    /// Leaves out of order, duplicated, or in another bucket.
    #[error("the bucket's leaves are not sorted, unique and in the identifier's bucket")]
    Leaves,
    /// The proof leads to another root.
    #[error("the map proof does not lead to the committed map root")]
    Root,
}

impl MapProof {
    /// Checks the proof for `identifier` against `root` and returns the identifier's latest
    /// position, or `None` if the map has no entry for it.
    pub fn verify(&self, identifier: &Identifier, root: &Hash) -> Result<Option<u64>, MapError> {
        if self.siblings.len() != BUCKET_BITS as usize {
            return Err(MapError::Siblings(self.siblings.len()));
        }
        let k = key(identifier);
        let index = bucket_of(&k);
        let ordered = self.leaves.windows(2).all(|w| w[0].0 < w[1].0);
        if !ordered || self.leaves.iter().any(|(lk, _)| bucket_of(lk) != index) {
            return Err(MapError::Leaves);
        }
        let mut h = bucket_hash(index, &self.leaves);
        let mut n = BUCKETS + usize::from(index);
        for s in &self.siblings {
            h = if n.is_multiple_of(2) { interior(&h, s) } else { interior(s, &h) };
            n /= 2;
        }
        if h != *root {
            return Err(MapError::Root);
        }
        Ok(self.leaves.iter().find(|(lk, _)| *lk == k).map(|(_, p)| *p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::IdentifierKind;

    fn id(v: &str) -> Identifier {
        Identifier { kind: IdentifierKind::Evse, value: v.into() }
    }

    #[test]
    fn a_proof_shows_the_latest_position_or_absence_and_nothing_else() {
        let mut map = MemoryMap::default();
        for i in 0..500u64 {
            map.set(&id(&format!("E{i}")), i);
        }
        map.set(&id("E7"), 900);
        let root = map.root();
        assert_eq!(map.prove(&id("E7")).verify(&id("E7"), &root), Ok(Some(900)));
        assert_eq!(map.prove(&id("E3")).verify(&id("E3"), &root), Ok(Some(3)));
        assert_eq!(map.prove(&id("nope")).verify(&id("nope"), &root), Ok(None));

        // A proof with a leaf changed, dropped, or for another root fails.
        let mut p = map.prove(&id("E7"));
        if let Some(l) = p.leaves.iter_mut().find(|(k, _)| *k == key(&id("E7"))) {
            l.1 = 5;
        }
        assert_eq!(p.verify(&id("E7"), &root), Err(MapError::Root));
        let mut p = map.prove(&id("E7"));
        p.leaves.retain(|(k, _)| *k != key(&id("E7")));
        assert_eq!(
            p.verify(&id("E7"), &root),
            Err(MapError::Root),
            "hiding a leaf changes the bucket hash"
        );
        let mut other = map.clone();
        other.set(&id("E8"), 1000);
        assert!(map.prove(&id("E7")).verify(&id("E7"), &other.root()).is_err());
    }

    #[test]
    fn a_batch_of_bucket_updates_equals_one_by_one_and_copies_to_another_tree() {
        let mut one_by_one = MapTree::default();
        let mut batched = MapTree::default();
        let mut copy = MapTree::default();
        // Neighbours, a repeated bucket (the last hash wins), both ends of the range.
        let indexes = [0u16, 1, 2, 0x0101, 0x0101, 0x8000, 0xfffe, 0xffff, 7];
        let changes: Vec<(u16, Hash)> = indexes
            .iter()
            .enumerate()
            .map(|(n, i)| (*i, bucket_hash(*i, &[([n as u8; 32], n as u64)])))
            .collect();
        for (i, h) in &changes {
            one_by_one.set_bucket(*i, *h);
        }
        // The batch takes each bucket's final hash, as the writer hands them over.
        let finals: BTreeMap<u16, Hash> = changes.iter().copied().collect();
        let finals: Vec<(u16, Hash)> = finals.into_iter().collect();
        let nodes = batched.set_buckets(&finals);
        assert_eq!(batched.root(), one_by_one.root());
        assert_ne!(batched.root(), MapTree::default().root());
        copy.set_nodes(&nodes);
        assert_eq!(copy.root(), one_by_one.root());
        for i in indexes {
            assert_eq!(copy.siblings(i), one_by_one.siblings(i));
        }
        assert!(nodes.iter().any(|(n, _)| *n == 1), "the root is among the changed nodes");
    }

    #[test]
    fn updating_a_bucket_in_place_equals_rebuilding_the_tree() {
        let mut tree = MapTree::default();
        let leaves = vec![([1u8; 32], 5u64)];
        tree.set_bucket(0x0101, bucket_hash(0x0101, &leaves));
        let rebuilt = MapTree::from_bucket_hashes(|i| {
            if i == 0x0101 { bucket_hash(i, &leaves) } else { bucket_hash(i, &[]) }
        });
        assert_eq!(tree.root(), rebuilt.root());
        let line = extension_line(&tree.root());
        assert_eq!(root_from_extensions(&[line]), Some(tree.root()));
    }
}
