//! Sealed groups: how the sled store keeps entries that have been checked and never change.
//!
//! An append writes one record per entry: few bytes to write, and what sled recovers after a
//! crash. Once the background check has verified a stretch of the log against its hash chain
//! and Merkle nodes, [`super::sled::SledStore`] replaces each run of [`GROUP`] such records by
//! one sealed record: their Merkle nodes as they were, then their entries compressed together
//! with zstd. Neighbouring entries repeat one another (operator, identifiers, the field layout,
//! a key in hex beside its DER), so a group takes well under half the bytes, and a read of an
//! old entry decompresses a few kilobytes.
//!
//! A group keeps only the Merkle nodes that reach beyond it (format 2). The nodes inside it
//! (its sixteen leaves and the levels above them, up to the group's own root) are a function of
//! its entries, so they are computed again when read, and stored nodes were a sixth of the
//! live data. The sealer checks every node it drops against the entries before it drops it.
//! Groups sealed by format 1 kept every node and are read as they are.
//!
//! What this promises: the bytes that come out are exactly the entry bytes that went in (every
//! hash is over the entries, never over the stored form, so proofs and checks do not change);
//! damage at rest is an error, never different bytes (zstd's frame checksum, the stored
//! lengths); a node read from a group is the one the log's entries define.

use registry_core::merkle::{self, Hash};

use super::StoreError;

/// Entries per sealed group. Measured on a bench fleet: 16 neighbours compress nearly as well
/// as 512 (2.39 against 2.52 with deflate), and a read of one old entry stays cheap.
pub const GROUP: u64 = 16;

/// The stored form's version: zstd over the entries, the nodes that reach beyond the group in
/// the clear.
const FORMAT: u8 = 2;

/// Format 1 kept every node of its entries in the clear.
const FORMAT_ALL_NODES: u8 = 1;

/// The levels of the tree inside a group (16 = 2⁴): nodes below this level are computed from
/// the entries in format 2. The group's own root (level 4) reaches no further than the group
/// either, but it is kept: one node per group, and the stored anchor a check of the group
/// can start from.
const INNER_LEVELS: u32 = GROUP.trailing_zeros();

/// zstd's default level: fast enough that sealing costs a few percent of a core at the
/// registry's highest write rate.
const LEVEL: i32 = 3;

/// The Merkle nodes stored with an entry: (level, hash).
pub type Nodes = Vec<(u32, Hash)>;

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("sealed group {what}"))
}

/// Appends one entry's nodes: their count, then (level, hash) each.
pub fn put_nodes(out: &mut Vec<u8>, nodes: &[(u32, Hash)]) {
    out.push(nodes.len() as u8);
    for (level, hash) in nodes {
        out.push(*level as u8);
        out.extend_from_slice(hash);
    }
}

/// Reads one entry's nodes from the front of `bytes`; returns them and what follows.
pub fn take_nodes(bytes: &[u8]) -> Result<(Nodes, &[u8]), StoreError> {
    let truncated = || StoreError::Corrupt("stored Merkle nodes are truncated".into());
    let (&n, mut rest) = bytes.split_first().ok_or_else(truncated)?;
    let mut nodes = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let (node, after) = rest.split_at_checked(33).ok_or_else(truncated)?;
        nodes.push((u32::from(node[0]), super::decode_hash(&node[1..])?));
        rest = after;
    }
    Ok((nodes, rest))
}

/// Seals groups, keeping one zstd context for all of them: a context costs more to set up than
/// a group costs to compress.
pub struct Sealer {
    compressor: zstd::bulk::Compressor<'static>,
}

impl Sealer {
    /// A sealer at [`LEVEL`], with zstd's frame checksum.
    pub fn new() -> Result<Self, StoreError> {
        let mut compressor = zstd::bulk::Compressor::new(LEVEL)?;
        compressor.include_checksum(true)?;
        Ok(Self { compressor })
    }

    /// Seals one aligned group of [`GROUP`] consecutive entries with their nodes:
    /// `format (1) | count (1) | count × nodes | raw length (u32 LE) | zstd frame`, where the
    /// frame holds `count × (length (u32 LE), entry bytes)` and each entry keeps only its nodes
    /// at [`INNER_LEVELS`] and above. The nodes below are checked against the entries first: a
    /// stored node that disagrees is an error, and nothing is sealed.
    pub fn seal(&mut self, records: &[(Nodes, &[u8])]) -> Result<Vec<u8>, StoreError> {
        if records.len() as u64 != GROUP {
            return Err(corrupt(&format!("of {} entries cannot be sealed", records.len())));
        }
        let count = records.len() as u8;
        let leaves: Vec<Hash> = records.iter().map(|(_, e)| merkle::leaf_hash(e)).collect();
        for (i, (nodes, _)) in records.iter().enumerate() {
            for (level, hash) in nodes.iter().filter(|(l, _)| *l < INNER_LEVELS) {
                if inner_node(&leaves, i, *level) != Some(*hash) {
                    return Err(corrupt(&format!(
                        "entry {i}'s stored node at level {level} does not match its entries"
                    )));
                }
            }
        }
        let mut raw = Vec::with_capacity(records.iter().map(|(_, e)| 4 + e.len()).sum());
        for (_, entry) in records {
            let len =
                u32::try_from(entry.len()).map_err(|_| corrupt("holds an oversized entry"))?;
            raw.extend_from_slice(&len.to_le_bytes());
            raw.extend_from_slice(entry);
        }
        let raw_len = u32::try_from(raw.len()).map_err(|_| corrupt("is too large to seal"))?;
        let frame = self.compressor.compress(&raw)?;
        let mut out = Vec::with_capacity(2 + records.len() * 67 + 4 + frame.len());
        out.push(FORMAT);
        out.push(count);
        for (nodes, _) in records {
            let outer: Nodes = nodes.iter().filter(|(l, _)| *l >= INNER_LEVELS).copied().collect();
            put_nodes(&mut out, &outer);
        }
        out.extend_from_slice(&raw_len.to_le_bytes());
        out.extend_from_slice(&frame);
        Ok(out)
    }
}

/// A sealed group as stored, parsed only as far as where its frame starts: nodes and entries
/// are read when asked for, and parsing allocates nothing (a read of one old entry parses
/// its whole group).
pub struct Group<'a> {
    format: u8,
    count: usize,
    /// The nodes of every entry, one after another, as [`put_nodes`] wrote them.
    nodes: &'a [u8],
    raw_len: usize,
    frame: &'a [u8],
}

/// Skips one entry's nodes at the front of `bytes`; returns what follows.
fn skip_nodes(bytes: &[u8]) -> Result<&[u8], StoreError> {
    let (&n, rest) = bytes.split_first().ok_or_else(|| corrupt("is truncated"))?;
    rest.get(33 * n as usize..).ok_or_else(|| corrupt("is truncated"))
}

/// The node at `level` that the `i`-th of `leaves` completes: the root of the `2^level`
/// leaves ending with it, if it completes one.
fn inner_node(leaves: &[Hash], i: usize, level: u32) -> Option<Hash> {
    let width = 1usize << level;
    if !(i + 1).is_multiple_of(width) || i >= leaves.len() {
        return None;
    }
    let mut row = leaves[i + 1 - width..=i].to_vec();
    while row.len() > 1 {
        row = row.chunks_exact(2).map(|pair| merkle::node_hash(&pair[0], &pair[1])).collect();
    }
    row.pop()
}

thread_local! {
    /// The leaf hashes of the last group whose inner nodes this thread computed, with the
    /// group's compressed bytes they came from: a tile or a proof reads several nodes of one
    /// group in a row. Keyed by the bytes themselves, so no two groups (or two stores) are
    /// ever mistaken for one another.
    static LEAVES: std::cell::RefCell<Option<(Vec<u8>, Vec<Hash>)>> =
        const { std::cell::RefCell::new(None) };

    /// One zstd context and one buffer per thread. A context costs more to create than a
    /// group costs to decompress: a rebuild's reading thread spent a fifth of its time
    /// creating and zeroing them, one per group.
    static SCRATCH: std::cell::RefCell<Option<(zstd::bulk::Decompressor<'static>, Vec<u8>)>> =
        const { std::cell::RefCell::new(None) };
}

impl<'a> Group<'a> {
    /// Reads the header and checks that the nodes are whole; the entries stay compressed
    /// until [`Group::each_entry`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self, StoreError> {
        let [format, count, rest @ ..] = bytes else { return Err(corrupt("is truncated")) };
        if *format != FORMAT && *format != FORMAT_ALL_NODES {
            return Err(corrupt(&format!("has format {format}, which this version does not read")));
        }
        let mut after = rest;
        for _ in 0..*count {
            after = skip_nodes(after)?;
        }
        let nodes = &rest[..rest.len() - after.len()];
        let (len, frame) = after.split_at_checked(4).ok_or_else(|| corrupt("is truncated"))?;
        let raw_len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        Ok(Self { format: *format, count: *count as usize, nodes, raw_len, frame })
    }

    /// How many entries the group holds.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The node at `level` completed by the group's `i`-th entry: stored, or computed from the
    /// entries when it lies inside the group. `None` when that entry completes no such node.
    pub fn node(&self, i: usize, level: u32) -> Result<Option<Hash>, StoreError> {
        let stored = self.nodes(i).and_then(|n| n.iter().find(|(l, _)| *l == level).map(|n| n.1));
        if stored.is_some() || self.format == FORMAT_ALL_NODES || level >= INNER_LEVELS {
            return Ok(stored);
        }
        if i >= self.count || !(i + 1).is_multiple_of(1 << level) {
            return Ok(None);
        }
        LEAVES.with_borrow_mut(|cached| {
            if cached.as_ref().is_none_or(|(frame, _)| frame.as_slice() != self.frame) {
                let mut leaves = Vec::with_capacity(self.count);
                self.each_entry(|_, entry| leaves.push(merkle::leaf_hash(entry)))?;
                *cached = Some((self.frame.to_vec(), leaves));
            }
            let leaves = cached.as_ref().map(|(_, l)| l.as_slice()).unwrap_or_default();
            Ok(inner_node(leaves, i, level))
        })
    }

    /// The nodes stored with the group's `i`-th entry (format 2: only those at
    /// [`INNER_LEVELS`] and above).
    pub fn nodes(&self, i: usize) -> Option<Nodes> {
        if i >= self.count {
            return None;
        }
        let mut rest = self.nodes;
        for _ in 0..i {
            rest = skip_nodes(rest).ok()?;
        }
        take_nodes(rest).ok().map(|(nodes, _)| nodes)
    }

    /// Calls `f` with the index and bytes of every entry, in order, after decompressing the
    /// group and checking it against the stored lengths and zstd's checksum. Nothing is
    /// passed to `f` from a group that fails its checks.
    pub fn each_entry(&self, mut f: impl FnMut(usize, &[u8])) -> Result<(), StoreError> {
        SCRATCH.with_borrow_mut(|scratch| {
            let (decompressor, raw) = match scratch {
                Some(s) => s,
                None => scratch.insert((zstd::bulk::Decompressor::new()?, Vec::new())),
            };
            raw.clear();
            raw.reserve(self.raw_len);
            let n = decompressor
                .decompress_to_buffer(self.frame, raw)
                .map_err(|e| corrupt(&format!("does not decompress: {e}")))?;
            if n != self.raw_len || raw.len() != self.raw_len {
                return Err(corrupt("decompresses to another length than it recorded"));
            }
            let mut spans = [(0usize, 0usize); 256];
            let mut at = 0;
            for span in spans.iter_mut().take(self.count) {
                let len = raw.get(at..at + 4).ok_or_else(|| corrupt("is truncated"))?;
                let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                let end = (at + 4).checked_add(len).filter(|&e| e <= raw.len());
                let end = end.ok_or_else(|| corrupt("is truncated"))?;
                *span = (at + 4, end);
                at = end;
            }
            if at != raw.len() {
                return Err(corrupt("holds more than its entries"));
            }
            for (i, &(start, end)) in spans.iter().take(self.count).enumerate() {
                f(i, &raw[start..end]);
            }
            Ok(())
        })
    }

    /// Every entry of the group, in order (see [`Group::each_entry`]).
    pub fn entries(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::with_capacity(self.count);
        self.each_entry(|_, entry| out.push(entry.to_vec()))?;
        Ok(out)
    }

    /// The group's `i`-th entry (see [`Group::each_entry`]).
    pub fn entry(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
        let mut out = None;
        self.each_entry(|j, entry| {
            if j == i {
                out = Some(entry.to_vec());
            }
        })?;
        Ok(out)
    }

    /// Bytes of the compressed entries as stored.
    pub fn compressed_len(&self) -> usize {
        self.frame.len()
    }

    /// Bytes of the entries before compression (with their lengths).
    pub fn raw_len(&self) -> usize {
        self.raw_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962's tree hash of a power-of-two run of leaves, written out here so the nodes a
    /// group computes are checked against something other than itself.
    fn tree_hash(leaves: &[Hash]) -> Hash {
        match leaves {
            [one] => *one,
            _ => {
                let (left, right) = leaves.split_at(leaves.len() / 2);
                merkle::node_hash(&tree_hash(left), &tree_hash(right))
            }
        }
    }

    /// A group's entries, each with the nodes it completes as the log stores them: inside
    /// the group, then (for the last) one reaching beyond it.
    fn records() -> Vec<(Nodes, Vec<u8>)> {
        let entries: Vec<Vec<u8>> = (0..GROUP as usize)
            .map(|i| format!("entry {i}: DE*BEN*E{i} operator DE*BEN").repeat(i + 1).into_bytes())
            .collect();
        let leaves: Vec<Hash> = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
        entries
            .into_iter()
            .enumerate()
            .map(|(i, entry)| {
                let mut nodes: Nodes = (0..=INNER_LEVELS)
                    .filter(|l| (i + 1) % (1 << l) == 0)
                    .map(|l| (l, tree_hash(&leaves[i + 1 - (1 << l)..=i])))
                    .collect();
                if i + 1 == GROUP as usize {
                    nodes.push((5, [0x5a; 32]));
                }
                (nodes, entry)
            })
            .collect()
    }

    fn seal(records: &[(Nodes, Vec<u8>)]) -> Result<Vec<u8>, StoreError> {
        let borrowed: Vec<_> = records.iter().map(|(n, e)| (n.clone(), e.as_slice())).collect();
        Sealer::new()?.seal(&borrowed)
    }

    fn sealed() -> Vec<u8> {
        seal(&records()).unwrap()
    }

    #[test]
    fn a_sealed_group_gives_back_its_entries_and_nodes_byte_for_byte() {
        let bytes = sealed();
        let group = Group::parse(&bytes).unwrap();
        assert_eq!(group.count(), GROUP as usize);
        let entries = group.entries().unwrap();
        for (i, (nodes, entry)) in records().into_iter().enumerate() {
            assert_eq!(entries[i], entry);
            assert_eq!(group.entry(i).unwrap().unwrap(), entries[i]);
            for (level, hash) in &nodes {
                assert_eq!(group.node(i, *level).unwrap(), Some(*hash), "entry {i} level {level}");
            }
            for level in 0..8 {
                let completes = nodes.iter().any(|(l, _)| *l == level);
                assert_eq!(group.node(i, level).unwrap().is_some(), completes, "{i}/{level}");
            }
            let stored = group.nodes(i).unwrap();
            assert!(stored.iter().all(|(l, _)| *l >= INNER_LEVELS), "inner nodes are not stored");
        }
        assert_eq!(
            group.nodes(GROUP as usize - 1).unwrap().len(),
            2,
            "the group's root and one more"
        );
        assert!(group.compressed_len() < group.raw_len() / 2, "repetitive entries compress");
    }

    #[test]
    fn a_stored_node_that_disagrees_with_the_entries_is_never_sealed() {
        let mut damaged = records();
        damaged[3].0[1].1[0] ^= 1;
        let outcome = seal(&damaged);
        assert!(matches!(outcome, Err(StoreError::Corrupt(m)) if m.contains("level 1")));
        let short = &records()[..GROUP as usize - 1];
        assert!(seal(short).is_err(), "only whole groups are sealed");
    }

    #[test]
    fn a_group_sealed_with_every_node_is_still_read() {
        let bytes = sealed();
        let frame_start = bytes.len() - Group::parse(&bytes).unwrap().compressed_len();
        let mut old = vec![FORMAT_ALL_NODES, GROUP as u8];
        for (nodes, _) in records() {
            put_nodes(&mut old, &nodes);
        }
        old.extend_from_slice(&bytes[frame_start - 4..]);
        let group = Group::parse(&old).unwrap();
        assert_eq!(
            group.entries().unwrap(),
            records().into_iter().map(|r| r.1).collect::<Vec<_>>()
        );
        for (i, (nodes, _)) in records().into_iter().enumerate() {
            assert_eq!(group.nodes(i).unwrap(), nodes);
            for (level, hash) in nodes {
                assert_eq!(group.node(i, level).unwrap(), Some(hash));
            }
        }
    }

    #[test]
    fn a_damaged_group_is_an_error_never_other_bytes() {
        let bytes = sealed();
        let frame_start = bytes.len() - Group::parse(&bytes).unwrap().compressed_len();
        for at in [frame_start + 3, frame_start + 20, bytes.len() - 2] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            let outcome = Group::parse(&damaged).and_then(|g| g.entries());
            assert!(matches!(outcome, Err(StoreError::Corrupt(_))), "flip at {at}: {outcome:?}");
            let node = Group::parse(&damaged).and_then(|g| g.node(1, 1));
            assert!(matches!(node, Err(StoreError::Corrupt(_))), "an inner node of it: {node:?}");
        }
        for cut in [1, 5, frame_start, bytes.len() - 1] {
            let outcome = Group::parse(&bytes[..cut]).and_then(|g| g.entries());
            assert!(matches!(outcome, Err(StoreError::Corrupt(_))), "cut at {cut}");
        }
        let mut other_format = bytes.clone();
        other_format[0] = 9;
        assert!(
            matches!(Group::parse(&other_format), Err(StoreError::Corrupt(m)) if m.contains("format 9"))
        );
    }
}
