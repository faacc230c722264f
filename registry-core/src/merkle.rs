//! RFC 6962 / RFC 9162 Merkle tree hashing and proofs.
//!
//! The log's entries are the leaves of one Merkle tree. This module holds the pure tree
//! arithmetic that the server, the client and offline verifiers share:
//!
//! - leaf and interior node hashing with the RFC 6962 domain-separation prefixes;
//! - [`Frontier`], the right edge of the tree, which turns appends into the few new
//!   *perfect* subtree hashes a store must keep;
//! - proof generation over any [`NodeSource`] that can return perfect subtree hashes, so a store
//!   answers any proof for any tree size with O(log n) reads;
//! - inclusion and consistency proof verification exactly as RFC 9162 §2.1.3.2 and §2.1.4.2
//!   specify, with the edge cases of the transparency-dev conformance vectors (a consistency proof
//!   from size 0 is rejected, equal sizes need an empty proof, an index at or past the size is
//!   rejected).

use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf, an interior node or a root.
pub type Hash = [u8; 32];

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// The RFC 6962 leaf hash `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(data);
    h.finalize().into()
}

/// The RFC 6962 interior node hash `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Why a proof was refused, or could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// The leaf index asked for.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// The sizes of a consistency proof are not `0 < from <= to`.
    #[error("consistency proof sizes must satisfy 0 < from <= to, got from {from} to {to}")]
    BadSizes {
        /// The smaller size.
        from: u64,
        /// The larger size.
        to: u64,
    },
    /// The proof has more or fewer nodes than the sizes call for.
    #[error("proof has the wrong number of nodes")]
    WrongLength,
    /// A proof node or hash is not 32 bytes long.
    #[error("a hash is {0} bytes long, not 32")]
    BadHashLength(usize),
    /// The proof does not lead to the expected root.
    #[error("proof does not match the root hash")]
    RootMismatch,
    /// The node source could not provide a node.
    #[error("node source failed: {0}")]
    Source(String),
}

/// Converts wire-format hashes (byte vectors) into fixed hashes, refusing any of the wrong length.
pub fn hashes_from_slices<T: AsRef<[u8]>>(items: &[T]) -> Result<Vec<Hash>, ProofError> {
    items.iter().map(|b| hash_from_slice(b.as_ref())).collect()
}

/// Converts one wire-format hash, refusing the wrong length.
pub fn hash_from_slice(b: &[u8]) -> Result<Hash, ProofError> {
    b.try_into().map_err(|_| ProofError::BadHashLength(b.len()))
}

/// Verifies an RFC 9162 §2.1.3.2 inclusion proof of `leaf` at `index` in the tree of `size`
/// leaves whose root is `root`. Hashes are taken in wire form: any of the wrong length fails.
pub fn verify_inclusion<P: AsRef<[u8]>>(
    index: u64,
    size: u64,
    leaf: &[u8],
    proof: &[P],
    root: &[u8],
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let proof = hashes_from_slices(proof)?;
    let mut f_n = index;
    let mut s_n = size - 1;
    let mut r = hash_from_slice(leaf)?;
    for p in &proof {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if r[..] != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies an RFC 9162 §2.1.4.2 consistency proof that the tree of `from` leaves with root
/// `from_root` is a prefix of the tree of `to` leaves with root `to_root`. Hashes are taken in
/// wire form; for equal sizes the roots are compared as given (as the reference implementation
/// does), otherwise any hash of the wrong length fails.
pub fn verify_consistency<P: AsRef<[u8]>>(
    from: u64,
    to: u64,
    from_root: &[u8],
    to_root: &[u8],
    proof: &[P],
) -> Result<(), ProofError> {
    if from == 0 || from > to {
        return Err(ProofError::BadSizes { from, to });
    }
    if from == to {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        if from_root != to_root {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    let from_root = hash_from_slice(from_root)?;
    let to_root = hash_from_slice(to_root)?;
    let proof = hashes_from_slices(proof)?;
    // When `from` is a power of two its root is itself a node of the larger tree and is left
    // out of the proof; put it back in front.
    let mut nodes: Vec<&Hash> = Vec::with_capacity(proof.len() + 1);
    if from.is_power_of_two() {
        nodes.push(&from_root);
    }
    nodes.extend(proof.iter());
    let Some((first, rest)) = nodes.split_first() else {
        return Err(ProofError::WrongLength);
    };
    let mut f_n = from - 1;
    let mut s_n = to - 1;
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut f_r = **first;
    let mut s_r = **first;
    for c in rest {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if f_r != from_root || s_r != to_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Anything that can return the hash of a *perfect* subtree: the `2^level` leaves starting at
/// leaf `index << level`. A store keeps exactly these nodes, so every proof needs O(log n) reads.
pub trait NodeSource {
    /// The hash of the perfect subtree at (`level`, `index`), which must lie inside the tree.
    fn perfect_node(&self, level: u32, index: u64) -> Result<Hash, ProofError>;
}

/// The largest power of two strictly smaller than `n` (`n >= 2`): the RFC 6962 split point.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The root of the leaves `lo..hi`, folded from stored perfect subtrees. `lo` must be aligned
/// the way every RFC 6962 recursion aligns it (a multiple of the left part's size).
pub fn subtree_root<S: NodeSource + ?Sized>(src: &S, lo: u64, hi: u64) -> Result<Hash, ProofError> {
    let n = hi - lo;
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() && lo.is_multiple_of(n) {
        return src.perfect_node(n.trailing_zeros(), lo / n);
    }
    let k = split_point(n);
    let left = subtree_root(src, lo, lo + k)?;
    let right = subtree_root(src, lo + k, hi)?;
    Ok(node_hash(&left, &right))
}

/// The root hash of the tree of `size` leaves.
pub fn root<S: NodeSource + ?Sized>(src: &S, size: u64) -> Result<Hash, ProofError> {
    subtree_root(src, 0, size)
}

/// The RFC 9162 §2.1.3.1 inclusion proof (audit path, leaf first) for leaf `index` in the tree
/// of `size` leaves.
pub fn inclusion_proof<S: NodeSource + ?Sized>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut proof = Vec::new();
    path(src, index, 0, size, &mut proof)?;
    Ok(proof)
}

fn path<S: NodeSource + ?Sized>(
    src: &S,
    m: u64,
    lo: u64,
    hi: u64,
    out: &mut Vec<Hash>,
) -> Result<(), ProofError> {
    let n = hi - lo;
    if n <= 1 {
        return Ok(());
    }
    let k = split_point(n);
    if m < lo + k {
        path(src, m, lo, lo + k, out)?;
        out.push(subtree_root(src, lo + k, hi)?);
    } else {
        path(src, m, lo + k, hi, out)?;
        out.push(subtree_root(src, lo, lo + k)?);
    }
    Ok(())
}

/// The RFC 9162 §2.1.4.1 consistency proof from the tree of `from` leaves to the tree of `to`.
pub fn consistency_proof<S: NodeSource + ?Sized>(
    src: &S,
    from: u64,
    to: u64,
) -> Result<Vec<Hash>, ProofError> {
    if from == 0 || from > to {
        return Err(ProofError::BadSizes { from, to });
    }
    let mut proof = Vec::new();
    subproof(src, from, 0, to, true, &mut proof)?;
    Ok(proof)
}

fn subproof<S: NodeSource + ?Sized>(
    src: &S,
    m: u64,
    lo: u64,
    hi: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) -> Result<(), ProofError> {
    let n = hi - lo;
    if m == n {
        if !complete {
            out.push(subtree_root(src, lo, hi)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(src, m, lo, lo + k, complete, out)?;
        out.push(subtree_root(src, lo + k, hi)?);
    } else {
        subproof(src, m - k, lo + k, hi, false, out)?;
        out.push(subtree_root(src, lo, lo + k)?);
    }
    Ok(())
}

/// The position of the leaf whose append completes the perfect node (`level`, `index`): the
/// last leaf under it. `None` when that position does not fit in a `u64`.
pub fn completing_position(level: u32, index: u64) -> Option<u64> {
    let width = 1u64.checked_shl(level)?;
    index.checked_mul(width)?.checked_add(width - 1)
}

/// A perfect subtree hash that an append completed and a store must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerfectNode {
    /// Height: 0 for a leaf.
    pub level: u32,
    /// Index among the subtrees of that height.
    pub index: u64,
    /// The subtree's hash.
    pub hash: Hash,
}

/// The right edge of a tree: the roots of its maximal perfect subtrees, largest first. Appending
/// a leaf merges equal-height subtrees and reports every completed node; the root folds the
/// edge from the right. This is all the tree state a writer needs in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// One hash per set bit of `size`, from the most significant bit down.
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the frontier of the tree of `size` leaves from stored perfect nodes
    /// (one read per set bit of `size`).
    pub fn load<S: NodeSource + ?Sized>(src: &S, size: u64) -> Result<Self, ProofError> {
        let mut nodes = Vec::new();
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            if size & (1u64 << level) != 0 {
                nodes.push(src.perfect_node(level, start >> level)?);
                start += 1u64 << level;
            }
        }
        Ok(Self { size, nodes })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf and returns the perfect nodes it completed: the leaf itself at level 0,
    /// then one node per level that became full.
    pub fn push(&mut self, leaf: Hash) -> Vec<PerfectNode> {
        let mut completed = vec![PerfectNode { level: 0, index: self.size, hash: leaf }];
        let mut hash = leaf;
        let mut level = 0u32;
        let mut index = self.size;
        // Each trailing one bit of the old size is a same-height subtree to merge with.
        while (self.size >> level) & 1 == 1 {
            let left = self.nodes.pop().expect("frontier holds one node per set bit of size");
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            completed.push(PerfectNode { level, index, hash });
        }
        self.nodes.push(hash);
        self.size += 1;
        completed
    }

    /// The root hash of the tree.
    pub fn root(&self) -> Hash {
        let mut iter = self.nodes.iter().rev();
        let Some(last) = iter.next() else {
            return empty_root();
        };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// An in-memory tree over a list of leaf hashes. It computes every node from the leaves, so it
/// serves as the obviously-correct reference in tests and for small offline checks.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    leaves: Vec<Hash>,
}

impl MemoryTree {
    /// A tree over these leaf hashes.
    pub fn new(leaves: Vec<Hash>) -> Self {
        Self { leaves }
    }

    /// Adds a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        self.leaves.push(leaf);
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.leaves.len() as u64
    }

    /// The RFC 6962 MTH of `leaves[lo..hi]`, computed directly from the definition.
    pub fn mth(&self, lo: u64, hi: u64) -> Hash {
        let n = hi - lo;
        match n {
            0 => empty_root(),
            1 => self.leaves[lo as usize],
            _ => {
                let k = split_point(n);
                node_hash(&self.mth(lo, lo + k), &self.mth(lo + k, hi))
            }
        }
    }
}

impl NodeSource for MemoryTree {
    fn perfect_node(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        let lo = index << level;
        let hi = lo + (1u64 << level);
        if hi > self.size() {
            return Err(ProofError::Source(format!("node ({level}, {index}) is outside the tree")));
        }
        Ok(self.mth(lo, hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_an_append_completes_names_that_append_as_its_completing_position() {
        let mut frontier = Frontier::new();
        for position in 0..5000u64 {
            for node in frontier.push(leaf_hash(&position.to_be_bytes())) {
                assert_eq!(completing_position(node.level, node.index), Some(position));
            }
        }
        assert_eq!(completing_position(63, 1), Some(u64::MAX));
        assert_eq!(completing_position(63, 2), None, "3 · 2^63 − 1 does not fit");
        assert_eq!(completing_position(1, u64::MAX / 2 + 1), None);
        assert_eq!(completing_position(64, 0), None);
    }
    use proptest::prelude::*;

    fn leaves(n: u64) -> MemoryTree {
        MemoryTree::new((0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect())
    }

    #[test]
    fn the_empty_tree_has_the_sha256_of_nothing_as_root() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Frontier::new().root(), empty_root());
    }

    #[test]
    fn the_frontier_root_equals_the_tree_definition_at_every_size() {
        let tree = leaves(70);
        let mut frontier = Frontier::new();
        for i in 0..70u64 {
            frontier.push(leaf_hash(&i.to_be_bytes()));
            assert_eq!(frontier.root(), tree.mth(0, i + 1), "size {}", i + 1);
        }
    }

    #[test]
    fn the_frontier_reports_exactly_the_completed_perfect_nodes() {
        let tree = leaves(16);
        let mut frontier = Frontier::new();
        let mut all = Vec::new();
        for i in 0..16u64 {
            all.extend(frontier.push(leaf_hash(&i.to_be_bytes())));
        }
        // A tree of 16 leaves has 16 + 8 + 4 + 2 + 1 perfect nodes.
        assert_eq!(all.len(), 31);
        for node in all {
            assert_eq!(node.hash, tree.perfect_node(node.level, node.index).unwrap());
        }
    }

    #[test]
    fn a_loaded_frontier_continues_like_the_original() {
        let tree = leaves(37);
        let loaded = Frontier::load(&tree, 37).unwrap();
        let mut built = Frontier::new();
        for i in 0..37u64 {
            built.push(leaf_hash(&i.to_be_bytes()));
        }
        assert_eq!(loaded, built);
    }

    proptest! {
        #[test]
        fn generated_proofs_verify_and_fail_when_anything_changes(
            size in 1u64..300, a in any::<u64>(), b in any::<u64>()
        ) {
            let tree = leaves(size);
            let index = a % size;
            let root = tree.mth(0, size);
            let proof = inclusion_proof(&tree, index, size).unwrap();
            let leaf = tree.perfect_node(0, index).unwrap();
            prop_assert_eq!(verify_inclusion(index, size, &leaf, &proof, &root), Ok(()));
            let mut bad_root = root;
            bad_root[0] ^= 1;
            prop_assert!(verify_inclusion(index, size, &leaf, &proof, &bad_root).is_err());
            if size > 1 {
                let other = (index + 1) % size;
                prop_assert!(verify_inclusion(other, size, &leaf, &proof, &root).is_err());
            }

            let from = 1 + b % size;
            let from_root = tree.mth(0, from);
            let cproof = consistency_proof(&tree, from, size).unwrap();
            prop_assert_eq!(verify_consistency(from, size, &from_root, &root, &cproof), Ok(()));
            prop_assert!(verify_consistency(from, size, &from_root, &bad_root, &cproof).is_err());
            if from < size {
                prop_assert!(verify_consistency(from + 1, size, &from_root, &root, &cproof).is_err());
            }
        }
    }
}
