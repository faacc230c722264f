//! Snapshot files: every projection record at one log size, sorted, in one checksummed file.
//!
//! A snapshot is what makes in-memory projections durable without writing each record to the
//! storage engine (see [`super::layered`]): written sequentially in the background, checked
//! whole at start, then the log after its size is replayed. It binds itself to the log it was
//! cut from (the leaf hash of its last entry), so a snapshot from another log or another branch
//! of history is never used, and it carries a SHA-256 of everything it holds, so a damaged file
//! is refused instead of answering wrongly. Either way the registry falls back to the log, which
//! is the only source of truth: a snapshot only saves time.
//!
//! ```text
//! header   magic "KRSNAP06", log size (u64 BE), leaf hash of entry size-1 (32; zeros if 0),
//!          record count (u64 BE)
//! records  count × (key length, value length (both LEB128 varints), key, value), keys ascending
//! offsets  count × offset of the record from the start of the file (40 bits BE)
//! trailer  BLAKE3 of the BLAKE3 of each 16 MiB piece of everything before it, in order
//! ```
//!
//! The checksum is a hash of piece hashes so that the pieces hash on every core at once: at ten
//! million keys a snapshot is 7 GB, and a start reads and checks all of it before it answers.
//! BLAKE3 rather than SHA-256 because it runs SIMD over its own internal tree (the same 7 GB
//! checked in about half the time on two cores), and the check was most of a large start; it
//! is as strong a checksum. Version 05 files (SHA-256, otherwise the same) are still read, so
//! an upgrade starts from its snapshot; the next cut writes version 06.
//!
//! A snapshot in use is the file itself, mapped into memory, not a copy of it: the key records
//! and indexes it holds are decoded once into the key cache, so a second, undecoded copy on the
//! heap would double what a key costs. Pages a whole walk has read are handed back
//! ([`Snapshot::release`]); the kernel keeps them in its page cache while memory allows, and a
//! later read finds them there or on disk. The file is never written once it has its name (a
//! new snapshot is a new file renamed over it), so the mapped bytes never change under a
//! reader; a cut checks the checksum of the snapshot it copies, so bytes damaged at rest since
//! the start are refused rather than sealed into the next one.
//!
//! Keys are the projection keys prefixed by their keyspace name and a zero byte, so one sorted
//! run holds every keyspace in the order [`super::Keyspace`] sorts.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use registry_core::merkle::Hash;
use sha2::{Digest, Sha256};

use super::StoreError;

/// Version 03: key records keep the submitted key text only when it is not the DER's hex.
/// Version 04: the request index is one of the keyspaces (it was kept beside the log in sled).
/// Version 05: varint lengths and 5-byte offsets (13 bytes less per record, and a million keys
/// hold 5.6 million records).
/// Version 06: the checksum is BLAKE3's (see the module docs).
const MAGIC: &[u8; 8] = b"KRSNAP06";
/// The previous version, read (its checksum is SHA-256's), never written.
const MAGIC_SHA256: &[u8; 8] = b"KRSNAP05";
/// Bytes of an offset in the table: files up to 1 TiB.
const OFFSET: usize = 5;
const PIECE: usize = 16 << 20;
const HEADER: usize = 8 + 8 + 32 + 8;
const TRAILER: usize = 32;

/// The hash a snapshot's checksum is made of, by format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checksum {
    /// Version 05.
    Sha256,
    /// Version 06, the one written.
    Blake3,
}

impl Checksum {
    fn of_magic(magic: &[u8]) -> Option<Self> {
        if magic == MAGIC {
            Some(Checksum::Blake3)
        } else if magic == MAGIC_SHA256 {
            Some(Checksum::Sha256)
        } else {
            None
        }
    }

    fn hash(self, bytes: &[u8]) -> [u8; 32] {
        match self {
            Checksum::Sha256 => Sha256::digest(bytes).into(),
            Checksum::Blake3 => blake3::hash(bytes).into(),
        }
    }

    /// The checksum of the pieces' hashes, in order.
    fn outer(self, pieces: &[[u8; 32]]) -> [u8; 32] {
        match self {
            Checksum::Sha256 => {
                let mut outer = Sha256::new();
                for p in pieces {
                    outer.update(p);
                }
                outer.finalize().into()
            }
            Checksum::Blake3 => {
                let mut outer = blake3::Hasher::new();
                for p in pieces {
                    outer.update(p);
                }
                outer.finalize().into()
            }
        }
    }
}

/// The bytes of a snapshot: built in memory (small ones, tests) or its file, mapped.
enum Bytes {
    Owned(Vec<u8>),
    Mapped(memmap2::Mmap),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            Bytes::Mapped(m) => m,
        }
    }
}

impl Bytes {
    /// Maps `file` (opened by this module, never written once named: see the module docs).
    fn map(file: &File) -> Result<Self, StoreError> {
        // SAFETY: the mapping is read-only and private, and the file behind it is never
        // written, truncated or shortened while mapped: snapshots are written under a
        // temporary name and renamed into place, and a replaced or removed file lives on
        // (unnamed) until its last mapping is gone.
        let map = unsafe { memmap2::MmapOptions::new().map(file) }
            .map_err(|e| StoreError::Io(format!("mapping the projection snapshot: {e}")))?;
        Ok(Bytes::Mapped(map))
    }

    /// Hands the pages of `range` back to the kernel (mapped bytes only; a no-op otherwise).
    fn release(&self, range: std::ops::Range<usize>) {
        let Bytes::Mapped(map) = self else { return };
        let page = rustix::param::page_size();
        // Only whole pages inside the range: a page shared with bytes outside stays.
        let start = range.start.div_ceil(page) * page;
        let end = (range.end.min(map.len()) / page) * page;
        if start >= end {
            return;
        }
        // SAFETY: MADV_DONTNEED on a private, read-only file mapping that was never written
        // (so it holds no copied-on-write pages) drops the pages from this process only; the
        // next read maps the same bytes again from the file, which never changes while mapped
        // (see `Bytes::map`). Readers holding slices of the range therefore see no change.
        let advised = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
        };
        if let Err(e) = advised {
            tracing::debug!(error = %e, "madvise(DONTNEED) on the projection snapshot");
        }
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bytes::Owned(v) => write!(f, "Owned({} bytes)", v.len()),
            Bytes::Mapped(m) => write!(f, "Mapped({} bytes)", m.len()),
        }
    }
}

/// Sorted projection records in the layout of a snapshot file.
#[derive(Debug)]
pub struct Snapshot {
    bytes: Bytes,
    size: u64,
    last_leaf: Hash,
    count: usize,
    /// Where the offset table starts. The layout was validated at construction (or written
    /// here), so reads index without checks.
    table: usize,
    /// How its checksum was made (its format version).
    checksum: Checksum,
}

/// Writes the snapshot format to any seekable sink, hashing it piece by piece as it goes, so a
/// snapshot of any size streams to its file without being held in memory.
struct Encoder<W> {
    out: W,
    written: usize,
    /// Piece 0 holds the header, whose record count is only known at the end: it is kept
    /// until then (at most [`PIECE`] bytes) and hashed last.
    first: Vec<u8>,
    piece: blake3::Hasher,
    piece_len: usize,
    pieces: Vec<[u8; 32]>,
    offsets: Vec<u64>,
    last_key: Option<Vec<u8>>,
}

impl<W: Write + Seek> Encoder<W> {
    fn new(out: W, size: u64, last_leaf: Hash) -> Result<Self, StoreError> {
        let mut encoder = Self {
            out,
            written: 0,
            // Reserved whole: grown by doubling, it was copied and faulted in again at every
            // step, a quarter of a cut's time. Pages never written are never touched.
            first: Vec::with_capacity(PIECE),
            piece: blake3::Hasher::new(),
            piece_len: 0,
            pieces: Vec::new(),
            offsets: Vec::new(),
            last_key: None,
        };
        encoder.emit(MAGIC)?;
        encoder.emit(&size.to_be_bytes())?;
        encoder.emit(&last_leaf)?;
        encoder.emit(&[0; 8])?; // the count, once known
        Ok(encoder)
    }

    fn emit(&mut self, mut bytes: &[u8]) -> Result<(), StoreError> {
        self.out.write_all(bytes)?;
        if self.written < PIECE {
            let n = bytes.len().min(PIECE - self.written);
            self.first.extend_from_slice(&bytes[..n]);
            self.written += n;
            bytes = &bytes[n..];
        }
        while !bytes.is_empty() {
            let n = bytes.len().min(PIECE - self.piece_len);
            self.piece.update(&bytes[..n]);
            self.piece_len += n;
            self.written += n;
            bytes = &bytes[n..];
            if self.piece_len == PIECE {
                self.pieces.push(self.piece.finalize().into());
                self.piece.reset();
                self.piece_len = 0;
            }
        }
        Ok(())
    }

    fn record(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        if self.last_key.as_deref().is_some_and(|last| last >= key) {
            return Err(StoreError::Corrupt("snapshot records are not in key order".into()));
        }
        self.offsets.push(self.written as u64);
        let mut lengths = [0u8; 10];
        let mut free = &mut lengths[..];
        prost::encoding::encode_varint(len32(key.len())?.into(), &mut free);
        prost::encoding::encode_varint(len32(value.len())?.into(), &mut free);
        let n = 10 - free.len();
        self.emit(&lengths[..n])?;
        self.emit(key)?;
        self.emit(value)?;
        match &mut self.last_key {
            Some(last) => {
                last.clear();
                last.extend_from_slice(key);
            }
            None => self.last_key = Some(key.to_vec()),
        }
        Ok(())
    }

    /// Writes the offset table, the count and the trailer; the layout's count and table start.
    fn finish(mut self) -> Result<(W, usize, usize), StoreError> {
        let count = self.offsets.len();
        let table = self.written;
        for o in std::mem::take(&mut self.offsets) {
            if o >> (8 * OFFSET) != 0 {
                return Err(StoreError::Io("a projection snapshot over 1 TiB".into()));
            }
            self.emit(&o.to_be_bytes()[8 - OFFSET..])?;
        }
        let count_bytes = (count as u64).to_be_bytes();
        self.first[HEADER - 8..HEADER].copy_from_slice(&count_bytes);
        self.out.seek(SeekFrom::Start((HEADER - 8) as u64))?;
        self.out.write_all(&count_bytes)?;
        self.out.seek(SeekFrom::End(0))?;
        let mut pieces = vec![Checksum::Blake3.hash(&self.first)];
        pieces.append(&mut self.pieces);
        if self.piece_len > 0 {
            pieces.push(self.piece.finalize().into());
        }
        self.out.write_all(&Checksum::Blake3.outer(&pieces))?;
        Ok((self.out, count, table))
    }
}

/// A snapshot written under its temporary name and flushed to disk, not yet in place: the
/// writer renames it over the old one only once the log it describes is durable. Dropped
/// without [`Written::install`], it removes its file.
pub struct Written {
    file: File,
    temporary: PathBuf,
    size: u64,
    last_leaf: Hash,
    count: usize,
    table: usize,
    installed: bool,
}

impl Written {
    /// Renames the file over `path` durably (a crash leaves the old snapshot or this one) and
    /// returns it, mapped, as the snapshot in use.
    pub fn install(mut self, path: &Path) -> Result<Snapshot, StoreError> {
        std::fs::rename(&self.temporary, path)?;
        self.installed = true;
        crate::files::sync_parent(path)?;
        Ok(Snapshot {
            bytes: Bytes::map(&self.file)?,
            size: self.size,
            last_leaf: self.last_leaf,
            count: self.count,
            table: self.table,
            checksum: Checksum::Blake3,
        })
    }

    /// Bytes of the file.
    pub fn len(&self) -> usize {
        self.table + self.count * OFFSET + TRAILER
    }

    /// True when the file holds no records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Records written.
    pub fn records(&self) -> usize {
        self.count
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        if !self.installed {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

impl Snapshot {
    /// No records, at log size 0.
    pub fn empty() -> Self {
        Self::build(0, [0; 32], std::iter::empty::<(&[u8], &[u8])>())
            .unwrap_or_else(|_| unreachable!("no records cannot be out of order"))
    }

    /// Builds a snapshot of `records` (keys strictly ascending) at log `size`, whose last
    /// entry has leaf hash `last_leaf`, in memory: for small ones (what a rebuild keeps of
    /// other keyspaces, tests). Large ones stream to their file ([`Snapshot::write_new`]).
    pub fn build<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        size: u64,
        last_leaf: Hash,
        records: impl Iterator<Item = (K, V)>,
    ) -> Result<Self, StoreError> {
        let mut encoder = Encoder::new(std::io::Cursor::new(Vec::new()), size, last_leaf)?;
        for (key, value) in records {
            encoder.record(key.as_ref(), value.as_ref())?;
        }
        let (out, count, table) = encoder.finish()?;
        let bytes = Bytes::Owned(out.into_inner());
        Ok(Self { bytes, size, last_leaf, count, table, checksum: Checksum::Blake3 })
    }

    /// Writes a snapshot of `records` (keys strictly ascending) at log `size` beside `path`,
    /// under its temporary name, and flushes it to disk; [`Written::install`] puts it in place.
    /// On any failure no temporary file is left behind.
    pub fn write_new<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        path: &Path,
        size: u64,
        last_leaf: Hash,
        records: impl Iterator<Item = (K, V)>,
    ) -> Result<Written, StoreError> {
        let temporary = crate::files::temporary(path);
        let file =
            File::options().read(true).write(true).create(true).truncate(true).open(&temporary)?;
        // From here on the guard removes the file on every way out but success.
        let mut written =
            Written { file, temporary, size, last_leaf, count: 0, table: 0, installed: false };
        let mut encoder = Encoder::new(
            std::io::BufWriter::with_capacity(1 << 20, &written.file),
            size,
            last_leaf,
        )?;
        for (key, value) in records {
            encoder.record(key.as_ref(), value.as_ref())?;
        }
        let (out, count, table) = encoder.finish()?;
        out.into_inner().map_err(|e| StoreError::Io(e.error().to_string()))?;
        written.file.sync_all()?;
        (written.count, written.table) = (count, table);
        Ok(written)
    }

    /// Parses and checks a snapshot file's contents: checksum, layout, key order.
    #[cfg(test)]
    fn decode(bytes: Vec<u8>) -> Result<Self, StoreError> {
        Self::check(Bytes::Owned(bytes))
    }

    /// Checks `bytes` as a snapshot: checksum, layout, key order. Mapped pages are handed
    /// back as the checks pass them, so checking a large file does not make it resident.
    fn check(bytes: Bytes) -> Result<Self, StoreError> {
        let checksum = bytes.get(..8).and_then(Checksum::of_magic);
        if bytes.len() >= 8 && bytes[..6] == MAGIC[..6] && checksum.is_none() {
            // Its records may be encoded in a way this version no longer reads.
            return Err(corrupt(&format!(
                "written by another version of the registry ({}); the log is replayed instead",
                String::from_utf8_lossy(&bytes[..8])
            )));
        }
        let Some(checksum) = checksum.filter(|_| bytes.len() >= HEADER + TRAILER) else {
            return Err(corrupt("not a snapshot file (magic or length)"));
        };
        if !sealed(&bytes, checksum) {
            return Err(corrupt("checksum mismatch"));
        }
        let body = bytes.len() - TRAILER;
        let size = u64_at(&bytes, 8);
        let mut last_leaf = [0u8; 32];
        last_leaf.copy_from_slice(&bytes[16..48]);
        let count = usize::try_from(u64_at(&bytes, 48)).map_err(|_| corrupt("record count"))?;
        let table = count
            .checked_mul(OFFSET)
            .and_then(|t| body.checked_sub(t))
            .filter(|start| *start >= HEADER)
            .ok_or_else(|| corrupt("offset table does not fit"))?;
        check_layout(&bytes, count, table)?;
        bytes.release(0..bytes.len());
        Ok(Self { bytes, size, last_leaf, count, table, checksum })
    }

    /// Reads and checks the snapshot at `path`; `None` if there is none.
    pub fn read(path: &Path) -> Result<Option<Self>, StoreError> {
        match File::open(path) {
            Ok(file) => Self::check(Bytes::map(&file)?).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks the checksum again: bytes read from the file long after the start (a cut copies
    /// every record) must still be the ones checked then.
    pub fn verify(&self) -> Result<(), StoreError> {
        if !sealed(&self.bytes, self.checksum) {
            return Err(StoreError::Corrupt(
                "the projection snapshot in use changed on disk since it was checked".into(),
            ));
        }
        Ok(())
    }

    /// Hands the pages read so far back to the kernel (a mapped snapshot; see the module docs).
    pub fn release(&self) {
        self.bytes.release(0..self.bytes.len());
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
        self.count
    }

    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of the encoded snapshot (what the file holds).
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    /// Record `i`'s place (the layout was checked whole, so this finds what the check found).
    fn extent(&self, i: usize) -> Extent {
        record_at(&self.bytes, i, self.table).unwrap_or_default()
    }

    fn key(&self, i: usize) -> &[u8] {
        let e = self.extent(i);
        &self.bytes[e.key..e.key_end]
    }

    /// Record `i`: key and value.
    pub fn record(&self, i: usize) -> (&[u8], &[u8]) {
        let e = self.extent(i);
        (&self.bytes[e.key..e.key_end], &self.bytes[e.key_end..e.end])
    }

    /// Index of the first record whose key is not below `key`.
    pub fn lower_bound(&self, key: &[u8]) -> usize {
        let (mut low, mut high) = (0, self.count);
        while low < high {
            let mid = low + (high - low) / 2;
            if self.key(mid) < key {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low
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

/// Checks that the `count` records lie one after another from the header to the offset table
/// at `table`, each as long as its lengths say, with keys strictly ascending: on every core,
/// each taking a run of records (at ten million keys, 30 million records).
fn check_layout(bytes: &Bytes, count: usize, table: usize) -> Result<(), StoreError> {
    let last_end = match count {
        0 => HEADER,
        n => record_at(bytes, n - 1, table)?.end,
    };
    if last_end != table {
        return Err(corrupt("bytes between the records and the offset table"));
    }
    let per = count.div_ceil(crate::cores::count()).max(1);
    let runs: Vec<std::ops::Range<usize>> =
        (0..count).step_by(per).map(|start| start..(start + per).min(count)).collect();
    crate::cores::map_in_order(&runs, |run| check_records(bytes, run.clone(), table))
        .into_iter()
        .collect()
}

/// Where record `i` starts, where its key starts and ends, and where it ends, each checked
/// to lie before `table`.
fn record_at(bytes: &[u8], i: usize, table: usize) -> Result<Extent, StoreError> {
    let at =
        usize::try_from(offset_at(bytes, table + i * OFFSET)).map_err(|_| corrupt("offset"))?;
    if at < HEADER || at >= table {
        return Err(corrupt("records are not contiguous"));
    }
    let past = || corrupt("a record runs past the records");
    let (k, key) = varint_at(bytes, at, table).ok_or_else(past)?;
    let (v, key) = varint_at(bytes, key, table).ok_or_else(past)?;
    let key_end = usize::try_from(k).ok().and_then(|k| key.checked_add(k)).filter(|n| *n <= table);
    let end = key_end.and_then(|n| n.checked_add(usize::try_from(v).ok()?)).filter(|n| *n <= table);
    match (key_end, end) {
        (Some(key_end), Some(end)) => Ok(Extent { at, key, key_end, end }),
        _ => Err(past()),
    }
}

/// A record's place in the file.
#[derive(Clone, Copy, Default)]
struct Extent {
    at: usize,
    key: usize,
    key_end: usize,
    end: usize,
}

/// [`check_layout`] for the records `run`; hands back the pages it has passed.
fn check_records(
    bytes: &Bytes,
    run: std::ops::Range<usize>,
    table: usize,
) -> Result<(), StoreError> {
    let mut previous = match run.start {
        0 => None,
        i => Some(record_at(bytes, i - 1, table)?),
    };
    let mut released = previous.map_or(HEADER, |p| p.at);
    for i in run {
        let this = record_at(bytes, i, table)?;
        let at = this.at;
        match previous {
            None if at != HEADER => return Err(corrupt("records are not contiguous")),
            Some(p) if at != p.end => return Err(corrupt("records are not contiguous")),
            Some(p) if bytes[p.key..p.key_end] >= bytes[this.key..this.key_end] => {
                return Err(corrupt("records are not in key order"));
            }
            _ => {}
        }
        previous = Some(this);
        if at - released >= PIECE {
            bytes.release(released..at);
            released = at;
        }
    }
    Ok(())
}

/// Whether the trailer of `bytes` (at least [`TRAILER`] long) is the checksum of the rest; the
/// pages are handed back as their pieces are hashed.
fn sealed(bytes: &Bytes, checksum: Checksum) -> bool {
    let body = bytes.len() - TRAILER;
    seal(checksum, &bytes[..body], &|piece| bytes.release(piece))[..] == bytes[body..]
}

/// The checksum of `body`: the hash of the hashes of each [`PIECE`], pieces hashed on up to
/// as many threads as there are cores; `done` gets each piece's range once it is hashed.
fn seal(
    checksum: Checksum,
    body: &[u8],
    done: &(dyn Fn(std::ops::Range<usize>) + Sync),
) -> [u8; 32] {
    let pieces: Vec<(usize, &[u8])> =
        body.chunks(PIECE).enumerate().map(|(i, p)| (i * PIECE, p)).collect();
    let hashes = crate::cores::map_in_order(&pieces, |(at, piece)| {
        let hash = checksum.hash(piece);
        done(*at..*at + piece.len());
        hash
    });
    checksum.outer(&hashes)
}

/// A snapshot refused as damaged, for `why`.
fn corrupt(why: &str) -> StoreError {
    StoreError::Corrupt(format!("snapshot: {why}"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(b)
}

/// The [`OFFSET`]-byte big-endian offset at `at`.
fn offset_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b[8 - OFFSET..].copy_from_slice(&bytes[at..at + OFFSET]);
    u64::from_be_bytes(b)
}

/// The varint (protobuf's, as prost writes it) at `at`, which must end before `limit` and fit
/// 32 bits; with where it ends.
fn varint_at(bytes: &[u8], at: usize, limit: usize) -> Option<(u64, usize)> {
    let mut rest = bytes.get(at..limit)?;
    let before = rest.len();
    let n = prost::encoding::decode_varint(&mut rest).ok()?;
    (n <= u64::from(u32::MAX)).then_some((n, at + before - rest.len()))
}

fn len32(n: usize) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt("a projection record exceeds 4 GiB".into()))
}

#[cfg(test)]
mod tests;
