//! Snapshot files: every projection record at one log size, sorted, in one checksummed file.
//!
//! A snapshot is what makes in-memory projections durable without writing each record to the
//! storage engine (see [`super::layered`]): written sequentially in the background, read whole
//! at start, then the log after its size is replayed. It binds itself to the log it was cut
//! from (the leaf hash of its last entry), so a snapshot from another log or another branch of
//! history is never used, and it carries a SHA-256 of everything it holds, so a damaged file is
//! refused instead of answering wrongly. Either way the registry falls back to the log, which
//! is the only source of truth: a snapshot only saves time.
//!
//! ```text
//! header   magic "KRSNAP01", log size (u64 BE), leaf hash of entry size-1 (32; zeros if 0),
//!          record count (u64 BE)
//! records  count × (key length (u32 BE), value length (u32 BE), key, value), keys ascending
//! offsets  count × offset of the record from the start of the file (u64 BE)
//! trailer  SHA-256 of the SHA-256 of each 16 MiB piece of everything before it, in order
//! ```
//!
//! The checksum is a hash of piece hashes so that the pieces hash on every core at once: at a
//! million keys a snapshot is close to 1 GB, and a start reads and checks all of it.
//!
//! Keys are the projection keys prefixed by their keyspace name and a zero byte, so one sorted
//! run holds every keyspace in the order [`super::Keyspace`] sorts.

use std::path::Path;

use registry_core::merkle::Hash;
use sha2::{Digest, Sha256};

use super::StoreError;

const MAGIC: &[u8; 8] = b"KRSNAP02";
const PIECE: usize = 16 << 20;
const HEADER: usize = 8 + 8 + 32 + 8;
const TRAILER: usize = 32;

/// Sorted projection records in one buffer: the layout of a snapshot file, in memory.
#[derive(Debug)]
pub struct Snapshot {
    bytes: Vec<u8>,
    size: u64,
    last_leaf: Hash,
    /// Start of each record; validated at construction, so reads index without checks.
    offsets: Vec<usize>,
}

impl Snapshot {
    /// No records, at log size 0.
    pub fn empty() -> Self {
        Self { bytes: Vec::new(), size: 0, last_leaf: [0; 32], offsets: Vec::new() }
    }

    /// Builds a snapshot of `records` (keys strictly ascending) at log `size`, whose last
    /// entry has leaf hash `last_leaf`.
    pub fn build<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        size: u64,
        last_leaf: Hash,
        records: impl Iterator<Item = (K, V)>,
    ) -> Result<Self, StoreError> {
        Self::build_with_capacity(size, last_leaf, records, 0)
    }

    /// [`Snapshot::build`] into a buffer with room for `capacity` bytes of records and offsets
    /// to start with: at hundreds of megabytes, growing by doubling costs copies and fresh
    /// pages.
    pub fn build_with_capacity<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        size: u64,
        last_leaf: Hash,
        records: impl Iterator<Item = (K, V)>,
        capacity: usize,
    ) -> Result<Self, StoreError> {
        let mut bytes = Vec::with_capacity(capacity + HEADER + TRAILER);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&size.to_be_bytes());
        bytes.extend_from_slice(&last_leaf);
        bytes.extend_from_slice(&[0; 8]); // the count, once known
        let mut offsets = Vec::new();
        // Where the previous key sits in `bytes`: records may be owned and gone by now.
        let mut last: Option<std::ops::Range<usize>> = None;
        for (key, value) in records {
            let (key, value) = (key.as_ref(), value.as_ref());
            if last.is_some_and(|l| &bytes[l] >= key) {
                return Err(StoreError::Corrupt("snapshot records are not in key order".into()));
            }
            let at = bytes.len();
            last = Some(at + 8..at + 8 + key.len());
            offsets.push(at);
            bytes.extend_from_slice(&len32(key.len())?.to_be_bytes());
            bytes.extend_from_slice(&len32(value.len())?.to_be_bytes());
            bytes.extend_from_slice(key);
            bytes.extend_from_slice(value);
        }
        bytes[HEADER - 8..HEADER].copy_from_slice(&(offsets.len() as u64).to_be_bytes());
        for o in &offsets {
            bytes.extend_from_slice(&(*o as u64).to_be_bytes());
        }
        let digest = seal(&bytes);
        bytes.extend_from_slice(&digest);
        Ok(Self { bytes, size, last_leaf, offsets })
    }

    /// Parses and checks a snapshot file's contents: checksum, layout, key order.
    pub fn decode(bytes: Vec<u8>) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::Corrupt(format!("snapshot: {why}"));
        if bytes.len() < HEADER + TRAILER || &bytes[..8] != MAGIC {
            return Err(bad("not a snapshot file (magic or length)"));
        }
        let body = bytes.len() - TRAILER;
        if seal(&bytes[..body])[..] != bytes[body..] {
            return Err(bad("checksum mismatch"));
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let size = u64_at(8);
        let mut last_leaf = [0u8; 32];
        last_leaf.copy_from_slice(&bytes[16..48]);
        let count = usize::try_from(u64_at(48)).map_err(|_| bad("record count"))?;
        let table = count
            .checked_mul(8)
            .and_then(|t| body.checked_sub(t))
            .filter(|start| *start >= HEADER)
            .ok_or_else(|| bad("offset table does not fit"))?;
        let mut offsets = Vec::with_capacity(count);
        let mut next = HEADER;
        for i in 0..count {
            let at = usize::try_from(u64_at(table + i * 8)).map_err(|_| bad("offset"))?;
            if at != next || at.checked_add(8).is_none_or(|end| end > table) {
                return Err(bad("records are not contiguous"));
            }
            let (k, v) = (u32_at(&bytes, at) as usize, u32_at(&bytes, at + 4) as usize);
            next = (at + 8)
                .checked_add(k)
                .and_then(|n| n.checked_add(v))
                .filter(|n| *n <= table)
                .ok_or_else(|| bad("a record runs past the records"))?;
            offsets.push(at);
        }
        if next != table {
            return Err(bad("bytes between the records and the offset table"));
        }
        let snapshot = Self { bytes, size, last_leaf, offsets };
        for i in 1..snapshot.len() {
            if snapshot.key(i - 1) >= snapshot.key(i) {
                return Err(bad("records are not in key order"));
            }
        }
        Ok(snapshot)
    }

    /// Reads and checks the snapshot at `path`; `None` if there is none.
    pub fn read(path: &Path) -> Result<Option<Self>, StoreError> {
        match std::fs::read(path) {
            Ok(bytes) => Self::decode(bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the snapshot to `path` durably ([`crate::files::replace`]): a crash leaves either
    /// the old snapshot or the new one, and a failure leaves no temporary file.
    pub fn write(&self, path: &Path) -> Result<(), StoreError> {
        Ok(crate::files::replace(path, &self.bytes)?)
    }

    /// The log size the records reflect.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Leaf hash of entry `size - 1` (zeros for size 0).
    pub fn last_leaf(&self) -> Hash {
        self.last_leaf
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Bytes of the encoded snapshot (what the file holds).
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    fn key(&self, i: usize) -> &[u8] {
        let at = self.offsets[i];
        let k = u32_at(&self.bytes, at) as usize;
        &self.bytes[at + 8..at + 8 + k]
    }

    /// Record `i`: key and value.
    pub fn record(&self, i: usize) -> (&[u8], &[u8]) {
        let at = self.offsets[i];
        let (k, v) = (u32_at(&self.bytes, at) as usize, u32_at(&self.bytes, at + 4) as usize);
        (&self.bytes[at + 8..at + 8 + k], &self.bytes[at + 8 + k..at + 8 + k + v])
    }

    /// Index of the first record whose key is not below `key`.
    pub fn lower_bound(&self, key: &[u8]) -> usize {
        self.offsets.partition_point(|&at| {
            let k = u32_at(&self.bytes, at) as usize;
            &self.bytes[at + 8..at + 8 + k] < key
        })
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let i = self.lower_bound(key);
        (i < self.len()).then(|| self.record(i)).filter(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Records from the first key not below `from`, in key order.
    pub fn iter_from(&self, from: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
        (self.lower_bound(from)..self.len()).map(|i| self.record(i))
    }
}

/// The checksum of `body`: SHA-256 over the SHA-256 of each [`PIECE`], pieces hashed on up to
/// as many threads as there are cores.
fn seal(body: &[u8]) -> [u8; 32] {
    let pieces: Vec<&[u8]> = body.chunks(PIECE).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
    let per_thread = pieces.len().div_ceil(threads).max(1);
    let hashes: Vec<[u8; 32]> = std::thread::scope(|s| {
        let workers: Vec<_> = pieces
            .chunks(per_thread)
            .map(|group| {
                s.spawn(move || {
                    group.iter().map(|p| <[u8; 32]>::from(Sha256::digest(p))).collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    let mut outer = Sha256::new();
    for h in &hashes {
        outer.update(h);
    }
    outer.finalize().into()
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(b)
}

fn len32(n: usize) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt("a projection record exceeds 4 GiB".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let records: Vec<(Vec<u8>, Vec<u8>)> = (0..500u32)
            .map(|i| (format!("k{i:05}").into_bytes(), i.to_be_bytes().to_vec()))
            .collect();
        Snapshot::build(42, [7; 32], records.iter().map(|(k, v)| (&k[..], &v[..]))).unwrap()
    }

    #[test]
    fn a_snapshot_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.snap");
        sample().write(&path).unwrap();
        let read = Snapshot::read(&path).unwrap().unwrap();
        assert_eq!((read.size(), read.last_leaf(), read.len()), (42, [7; 32], 500));
        assert_eq!(read.get(b"k00123"), Some(&123u32.to_be_bytes()[..]));
        assert_eq!(read.get(b"k00123x"), None);
        assert_eq!(read.get(b"a"), None);
        let from: Vec<_> = read.iter_from(b"k00498").map(|(k, _)| k.to_vec()).collect();
        assert_eq!(from, vec![b"k00498".to_vec(), b"k00499".to_vec()]);
        assert!(Snapshot::read(&dir.path().join("none")).unwrap().is_none());
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let bytes = sample().bytes;
        for at in [0, 9, 20, 50, HEADER + 3, bytes.len() / 2, bytes.len() - 40, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1;
            assert!(Snapshot::decode(damaged).is_err(), "a flipped bit at {at} was accepted");
        }
        assert!(Snapshot::decode(bytes[..bytes.len() - 1].to_vec()).is_err());
        assert!(Snapshot::decode(bytes).is_ok());
    }

    /// `bytes` with its checksum recomputed: only the structural checks can refuse it.
    fn resealed(mut bytes: Vec<u8>) -> Vec<u8> {
        let body = bytes.len() - TRAILER;
        let digest = seal(&bytes[..body]);
        bytes[body..].copy_from_slice(&digest);
        bytes
    }

    #[test]
    fn the_checksum_covers_every_piece_in_order() {
        let body: Vec<u8> = (0..PIECE * 2 + 100).map(|i| (i % 251) as u8).collect();
        let mut outer = Sha256::new();
        for piece in body.chunks(PIECE) {
            outer.update(Sha256::digest(piece));
        }
        assert_eq!(seal(&body), <[u8; 32]>::from(outer.finalize()));
        let mut swapped = body.clone();
        swapped[..PIECE].copy_from_slice(&body[PIECE..2 * PIECE]);
        swapped[PIECE..2 * PIECE].copy_from_slice(&body[..PIECE]);
        assert_ne!(seal(&swapped), seal(&body));
        assert_eq!(seal(&[]), <[u8; 32]>::from(Sha256::digest([0u8; 0].as_slice())));
    }

    #[test]
    fn a_well_sealed_file_with_a_broken_layout_is_refused() {
        let bytes = sample().bytes;
        let table = bytes.len() - TRAILER - 500 * 8;
        let damage: [(&str, usize, u8); 5] = [
            ("record count", HEADER - 1, 1),
            ("first key length", HEADER, 0x10),
            ("a value length", HEADER + 7, 0x7f),
            ("an offset", table + 8 * 3 + 7, 1),
            ("a key, out of order", HEADER + 8 + 5, 0x7f),
        ];
        for (what, at, bits) in damage {
            let mut broken = bytes.clone();
            broken[at] ^= bits;
            assert!(Snapshot::decode(resealed(broken)).is_err(), "{what}: accepted");
        }
        assert!(Snapshot::decode(resealed(bytes)).is_ok());
    }

    #[test]
    fn records_out_of_order_are_refused() {
        let records = [(&b"b"[..], &b""[..]), (&b"a"[..], &b""[..])];
        assert!(Snapshot::build(1, [0; 32], records.into_iter()).is_err());
    }
}
