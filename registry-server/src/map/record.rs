//! Bucket records: their encoding, hashing a record without decoding it, the records of a
//! rebuild, and the chunks a load hashes on every core.

use registry_core::event::Identifier;
use registry_core::map::{self, Bucket};
use registry_core::merkle::Hash;

use super::Slot;
use crate::store::StoreError;

/// Bucket records hashed together at a load, on every core: a few megabytes, copied out of
/// the store's walk into one buffer the chunks reuse.
pub(super) const LOAD_CHUNK_BYTES: usize = 8 << 20;

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
    let mut h = map::BucketHasher::new(index);
    for_each_leaf(record, &mut h, |_, _| {}, |h, key, position| h.leaf(key, position))?;
    Ok(h.finish())
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
pub(super) fn encode(leaves: &Bucket) -> Vec<u8> {
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

/// The bucket records holding exactly `latest` (a rebuild's result), in key order, as
/// [`super::MapBuckets::write_unwritten`] writes them: each bucket sorted once instead of one
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
pub(super) struct LoadChunk {
    pub(super) bytes: Vec<u8>,
    /// Each record's bucket and its range in `bytes`.
    records: Vec<(u16, std::ops::Range<usize>)>,
}

impl LoadChunk {
    pub(super) fn push(&mut self, index: u16, record: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(record);
        self.records.push((index, start..self.bytes.len()));
    }

    /// Hashes the records on every core into their slots, and empties the chunk for reuse.
    pub(super) fn hash_into(&mut self, slots: &mut [Slot]) -> Result<(), StoreError> {
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
