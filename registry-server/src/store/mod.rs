//! The log store: where entries, Merkle nodes, request IDs and projections live.
//!
//! [`LogStore`] is deliberately small and dumb. It stores what the writer hands it and reads it
//! back; it has no opinion about chains, proofs or idempotency (the [`crate::log`] module owns
//! those rules). Two promises matter:
//!
//! - [`LogStore::write`] applies a [`WriteBatch`] atomically: after a crash either all of a
//!   batch is there or none of it, and batches survive in order (a later one never without an
//!   earlier one).
//! - [`LogStore::sync`] returns only when everything written before it is on stable storage.
//!   The writer acknowledges nothing before that returns.
//!
//! Implementations: [`layered::LayeredStore`] (production: the log in a [`sled::SledStore`], the
//! projections in memory, durable as [`snapshot`] files plus the log after them, so for it the
//! second promise covers the log, and [`LogStore::projected_size`] says where projections
//! restart), [`sled::SledStore`] itself and [`memory::MemoryStore`] (tests; it models
//! durability, so unsynced writes are lost on a simulated crash). All pass the same
//! conformance suite.

pub mod ceiling;
pub mod faulty;
pub mod layered;
pub mod memory;
pub mod sealed;
pub mod sled;
pub mod snapshot;

#[cfg(test)]
pub(crate) mod conformance;

use registry_core::merkle::{Hash, PerfectNode};
use uuid::Uuid;

/// A storage failure. Any of these stops the writer: the registry never acknowledges a write
/// after the disk has misbehaved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The operating system or the storage engine reported an error.
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// The file system has no room left. Kept apart from [`StoreError::Io`] because a writer
    /// can be told what to do about it (free space), and because nothing was written past it.
    #[error("the disk is full: {0}")]
    Full(String),
    /// Stored data is not what this version of the registry wrote.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        if crate::disk::is_full(&e) {
            StoreError::Full(e.to_string())
        } else {
            StoreError::Io(e.to_string())
        }
    }
}

/// What the store remembers about a request ID: where its entry is and what it contained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRecord {
    /// Position of the entry the request produced.
    pub position: u64,
    /// SHA-256 of the request's content, to tell a retry from a reuse of the ID.
    pub digest: Hash,
}

/// Where a store that keeps projections (the layered one) keeps the request index: it is
/// derived from the log like every projection, so it lives with them and is made durable by
/// their snapshots, not by one random-key insert into sled per entry.
pub const REQUESTS: Keyspace = Keyspace("requests");

/// The projection record of a request ID, as the writer, a replay and a rebuild write it.
pub fn request_record(id: &Uuid, record: &RequestRecord) -> ProjectionRecord {
    (REQUESTS, id.as_bytes().to_vec(), encode_request(record).to_vec())
}

/// [`request_record`] as a write.
pub fn request_write(id: &Uuid, record: &RequestRecord) -> ProjectionWrite {
    ProjectionWrite::put(request_record(id, record))
}

/// A projection record: key and value.
pub type Record = (Vec<u8>, Vec<u8>);

/// A projection record with its keyspace, as a rebuild produces them.
pub type ProjectionRecord = (Keyspace, Vec<u8>, Vec<u8>);

/// Entries a second above which a replica is taken to be catching up rather than following:
/// more than a primary on this kind of machine appends (about 8,000 a second at its full
/// registration rate), less than a copy (about 20,000). A copy defers what it can do better
/// once caught up (sealing, the background check, frequent snapshots).
pub const COPYING_RATE: f64 = 10_000.0;

/// Most projection writes in one batch of [`write_in_batches`].
pub const LOAD_BATCH: usize = 50_000;

/// What [`LogStore::for_each`] hands each record to: key and value; an error stops the walk.
pub type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError> + 'a;

/// A named group of projection records (one sled tree each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Keyspace(pub &'static str);

/// One projection write: set or delete a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionWrite {
    /// Which projection.
    pub keyspace: Keyspace,
    /// The key.
    pub key: Vec<u8>,
    /// The new value; `None` deletes.
    pub value: Option<Vec<u8>>,
}

impl ProjectionWrite {
    /// Writes `record` (keyspace, key, value).
    pub fn put((keyspace, key, value): ProjectionRecord) -> Self {
        Self { keyspace, key, value: Some(value) }
    }
}

/// Everything one group commit writes, applied atomically.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    /// New entries, in position order, continuing the log without a gap.
    pub entries: Vec<(u64, Vec<u8>)>,
    /// Perfect Merkle subtree hashes completed by those entries.
    pub nodes: Vec<PerfectNode>,
    /// Request IDs of those entries.
    pub requests: Vec<(Uuid, RequestRecord)>,
    /// Projection updates derived from those entries.
    pub projections: Vec<ProjectionWrite>,
    /// Store metadata (e.g. the verified size).
    pub meta: Vec<(&'static str, Vec<u8>)>,
    /// The log size the projections reflect once this batch is written, when the batch brings
    /// them to a consistent point (the writer's batches and the end of a replay do). A batch
    /// that changes projections without saying so leaves them at no consistent size (a rebuild
    /// in progress). See [`LogStore::projected_size`].
    pub projected_size: Option<u64>,
    /// The writer held projection records back from this batch (the map's buckets, see
    /// `crate::map::MapWriter`): its projections reflect `projected_size` in memory but not in
    /// what it wrote, so a store must not make them durable (cut a snapshot) after it. See
    /// [`LogStore::projections_wanted`].
    pub held_back: bool,
}

impl WriteBatch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
            && self.nodes.is_empty()
            && self.requests.is_empty()
            && self.projections.is_empty()
            && self.meta.is_empty()
    }
}

/// The part of a batch that [`LogStore::stage`] left for [`LogStore::apply_staged`].
#[derive(Debug, Default)]
#[must_use = "a staged batch is not written until it is applied"]
pub struct Staged(pub(crate) Option<WriteBatch>);

/// Storage for the log and its projections. See the module documentation for the promises.
pub trait LogStore: Send + Sync + 'static {
    /// Number of entries written (positions `0..size`).
    fn size(&self) -> Result<u64, StoreError>;
    /// The entry at `position`, exactly as written.
    fn entry(&self, position: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// Entries `start..end` in order (fewer if the log is shorter).
    fn entries(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// A perfect Merkle subtree hash.
    fn node(&self, level: u32, index: u64) -> Result<Option<Hash>, StoreError>;
    /// What is recorded for a request ID.
    fn request(&self, id: &Uuid) -> Result<Option<RequestRecord>, StoreError>;
    /// A metadata value.
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// A projection record.
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// All projection records whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, keyspace: Keyspace, prefix: &[u8]) -> Result<Vec<Record>, StoreError>;
    /// Hands every record of a projection to `visit`, in key order, without collecting them
    /// first (a projection can hold millions of records).
    fn for_each(&self, keyspace: Keyspace, visit: &mut Visitor<'_>) -> Result<(), StoreError>;
    /// Applies a batch atomically. Readers may see it at once; it is durable only after
    /// [`LogStore::sync`].
    fn write(&self, batch: WriteBatch) -> Result<(), StoreError>;
    /// Writes `batch` in two steps, so that the slow one can run on the thread that syncs:
    /// now what the writer reads back (projections, request IDs), and later, through
    /// [`LogStore::apply_staged`] before the next [`LogStore::sync`], the rest. Until then the
    /// batch's entries and nodes are not readable; the log's readers never ask for them, since
    /// they read only up to the durable head. By default everything is written now.
    fn stage(&self, batch: WriteBatch) -> Result<Staged, StoreError> {
        self.write(batch)?;
        Ok(Staged::default())
    }
    /// Writes what [`LogStore::stage`] left, in the order the batches were staged.
    fn apply_staged(&self, staged: Staged) -> Result<(), StoreError> {
        match staged.0 {
            Some(batch) => self.write(batch),
            None => Ok(()),
        }
    }
    /// Whether the writer's next batch must carry the projection records it holds back
    /// ([`WriteBatch::held_back`]). A store that makes projections durable with every sync
    /// needs them in every batch (this default); one that makes them durable apart from the
    /// log (by snapshots) only when it is about to, and it makes them durable only after a
    /// batch that holds nothing back.
    fn projections_wanted(&self) -> bool {
        true
    }
    /// Rewrites the entries below `up_to` (which the caller has verified) in a more compact
    /// form, for stores that have one; reads return the same bytes before and after. Returns
    /// how many entries it rewrote. The rewrite becomes durable with the next
    /// [`LogStore::sync`]; lost in a crash, the entries are still there as they were.
    fn seal(&self, up_to: u64) -> Result<u64, StoreError> {
        let _ = up_to;
        Ok(0)
    }
    /// Makes everything written so far durable (for sled: flush, then fsync).
    fn sync(&self) -> Result<(), StoreError>;
    /// Drops every record of the given projections (before a rebuild).
    fn clear_projections(&self, keyspaces: &[Keyspace]) -> Result<(), StoreError>;
    /// Bytes used on disk, if the store knows.
    fn size_on_disk(&self) -> Result<u64, StoreError>;

    /// The log size the projections reflect: the machine replays the entries after it before
    /// the writer starts. Stores that write projections atomically with their entries are
    /// always current; one that makes them durable apart from the log (by snapshots, see
    /// [`layered`]) may be behind after a restart.
    fn projected_size(&self) -> Result<u64, StoreError> {
        self.size()
    }

    /// Fills projections that [`LogStore::clear_projections`] has just emptied with a rebuild's
    /// `records`, ascending by keyspace and then key, which reflect the first `size` entries.
    /// This default writes them in batches ([`write_in_batches`]); a store that keeps
    /// projections in memory can take them in one piece.
    fn load_projections(
        &self,
        records: &mut dyn Iterator<Item = ProjectionRecord>,
        size: u64,
    ) -> Result<(), StoreError> {
        write_in_batches(self, records.map(ProjectionWrite::put), Some(size))
    }

    /// Seconds the last projection snapshot took to cut since the store opened, for stores
    /// that cut them.
    fn last_snapshot_seconds(&self) -> Option<f64> {
        None
    }

    /// Projection records written since the last snapshot and held in memory until the next
    /// one, for stores that cut snapshots (what a write load costs in memory between cuts).
    fn unsnapshotted_records(&self) -> Option<u64> {
        None
    }

    /// Makes the projections durable as they are now, so the next start replays nothing (at a
    /// clean stop and after a rebuild). Stores whose projections are durable with every sync
    /// have nothing to do.
    fn persist_projections(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Projection writes as batches of at most [`LOAD_BATCH`], the last one carrying
/// `projected_size`: how a rebuild's records (by default) and a catch-up's writes reach a
/// store without one batch holding its write lock, or a second copy of everything, for long.
pub(crate) fn write_in_batches(
    store: &(impl LogStore + ?Sized),
    writes: impl Iterator<Item = ProjectionWrite>,
    projected_size: Option<u64>,
) -> Result<(), StoreError> {
    let mut writes = writes.peekable();
    loop {
        let projections: Vec<_> = writes.by_ref().take(LOAD_BATCH).collect();
        let last = writes.peek().is_none();
        let projected_size = if last { projected_size } else { None };
        store.write(WriteBatch { projections, projected_size, ..Default::default() })?;
        if last {
            return Ok(());
        }
    }
}

/// Metadata key holding the checkpoint origin chosen at first start (a replica's: its
/// primary's).
pub(crate) const ORIGIN: &str = "origin";

/// Big-endian key for a position, so keys sort in log order.
pub(crate) fn position_key(position: u64) -> [u8; 8] {
    position.to_be_bytes()
}

/// Stored form of a [`RequestRecord`]: position (8 bytes, big-endian) then digest.
pub(crate) fn encode_request(r: &RequestRecord) -> [u8; 40] {
    let mut v = [0u8; 40];
    v[..8].copy_from_slice(&r.position.to_be_bytes());
    v[8..].copy_from_slice(&r.digest);
    v
}

pub(crate) fn decode_request(v: &[u8]) -> Result<RequestRecord, StoreError> {
    if v.len() != 40 {
        return Err(StoreError::Corrupt(format!("request record is {} bytes, not 40", v.len())));
    }
    let mut pos = [0u8; 8];
    pos.copy_from_slice(&v[..8]);
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&v[8..]);
    Ok(RequestRecord { position: u64::from_be_bytes(pos), digest })
}

pub(crate) fn decode_hash(v: &[u8]) -> Result<Hash, StoreError> {
    v.try_into()
        .map_err(|_| StoreError::Corrupt(format!("stored hash is {} bytes, not 32", v.len())))
}

/// Read access to records, as the projections and the map need it: the store itself, or the
/// writer's batch view (which also sees the batch's own writes).
pub trait Kv {
    /// A record.
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Records by key prefix.
    fn scan_prefix(&self, keyspace: Keyspace, prefix: &[u8]) -> Result<Vec<Record>, StoreError>;
}

impl Kv for dyn LogStore {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        LogStore::get(self, keyspace, key)
    }
    fn scan_prefix(&self, keyspace: Keyspace, prefix: &[u8]) -> Result<Vec<Record>, StoreError> {
        LogStore::scan_prefix(self, keyspace, prefix)
    }
}

/// How to recover from a log that lost what the registry signed (said in every such refusal).
pub const RECOVER: &str = "The data directory is damaged; do not start a registry on it. Restore \
    it from an audit archive (`registry-server restore --from-archive DIR --data-dir NEW \
    --registry-key KEY`, see deploy/README.md, \"Backup and restore\") and keep this one for \
    investigation.";
