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
//! What this promises: the bytes that come out are exactly the entry bytes that went in (every
//! hash is over the entries, never over the stored form, so proofs and checks do not change);
//! damage at rest is an error, never different bytes (zstd's frame checksum, the stored
//! lengths); the nodes are read without decompressing anything.

use registry_core::merkle::Hash;

use super::StoreError;

/// Entries per sealed group. Measured on a bench fleet: 16 neighbours compress nearly as well
/// as 512 (2.39 against 2.52 with deflate), and a read of one old entry stays cheap.
pub const GROUP: u64 = 16;

/// The stored form's version: zstd over the entries, nodes in the clear.
const FORMAT: u8 = 1;

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

    /// Seals consecutive entries with their nodes:
    /// `format (1) | count (1) | count × nodes | raw length (u32 LE) | zstd frame`, where the
    /// frame holds `count × (length (u32 LE), entry bytes)`.
    pub fn seal(&mut self, records: &[(Nodes, &[u8])]) -> Result<Vec<u8>, StoreError> {
        let count = u8::try_from(records.len()).map_err(|_| corrupt("is too large to seal"))?;
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
            put_nodes(&mut out, nodes);
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

thread_local! {
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
        if *format != FORMAT {
            return Err(corrupt(&format!("has format {format}, which this version does not read")));
        }
        let mut after = rest;
        for _ in 0..*count {
            after = skip_nodes(after)?;
        }
        let nodes = &rest[..rest.len() - after.len()];
        let (len, frame) = after.split_at_checked(4).ok_or_else(|| corrupt("is truncated"))?;
        let raw_len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        Ok(Self { count: *count as usize, nodes, raw_len, frame })
    }

    /// How many entries the group holds.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The nodes stored with the group's `i`-th entry.
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

    fn records() -> Vec<(Nodes, Vec<u8>)> {
        (0..GROUP as u8)
            .map(|i| {
                let nodes = (0..i % 3).map(|l| (u32::from(l), [i ^ l; 32])).collect();
                let entry =
                    format!("entry {i}: DE*BEN*E{i} operator DE*BEN").repeat(i as usize + 1);
                (nodes, entry.into_bytes())
            })
            .collect()
    }

    fn sealed() -> Vec<u8> {
        let records = records();
        let borrowed: Vec<_> = records.iter().map(|(n, e)| (n.clone(), e.as_slice())).collect();
        Sealer::new().unwrap().seal(&borrowed).unwrap()
    }

    #[test]
    fn a_sealed_group_gives_back_its_entries_and_nodes_byte_for_byte() {
        let bytes = sealed();
        let group = Group::parse(&bytes).unwrap();
        assert_eq!(group.count(), GROUP as usize);
        let entries = group.entries().unwrap();
        for (i, (nodes, entry)) in records().into_iter().enumerate() {
            assert_eq!(entries[i], entry);
            assert_eq!(group.nodes(i).unwrap(), nodes);
            assert_eq!(group.entry(i).unwrap().unwrap(), entries[i]);
        }
        assert!(group.compressed_len() < group.raw_len() / 2, "repetitive entries compress");
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
