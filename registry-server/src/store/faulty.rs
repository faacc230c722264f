//! A store that fails on demand: the N-th write or sync of the store it wraps returns an I/O
//! error or "disk full", once. A real disk cannot be made to fail at a chosen call, so the
//! suite's failure-point tests (and anyone checking how the log behaves when storage fails)
//! wrap a real store in this; everything else passes straight through.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use registry_core::merkle::Hash;
use uuid::Uuid;

use super::{Keyspace, LogStore, Record, RequestRecord, StoreError, Visitor, WriteBatch};

/// Which call fails, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The `n`-th call of [`LogStore::write`] (counting from 1) fails without writing.
    Write {
        /// Which call.
        n: u64,
        /// With "no space left on device" rather than a plain I/O error.
        full: bool,
    },
    /// The `n`-th call of [`LogStore::sync`] fails without syncing.
    Sync {
        /// Which call.
        n: u64,
        /// With "no space left on device" rather than a plain I/O error.
        full: bool,
    },
}

/// See the module documentation.
pub struct FaultyStore {
    inner: Arc<dyn LogStore>,
    fault: Fault,
    writes: AtomicU64,
    syncs: AtomicU64,
}

impl FaultyStore {
    /// `inner`, failing once as `fault` says.
    pub fn new(inner: Arc<dyn LogStore>, fault: Fault) -> Self {
        Self { inner, fault, writes: AtomicU64::new(0), syncs: AtomicU64::new(0) }
    }

    /// Whether the fault has happened yet.
    pub fn has_failed(&self) -> bool {
        match self.fault {
            Fault::Write { n, .. } => self.writes.load(Ordering::SeqCst) >= n,
            Fault::Sync { n, .. } => self.syncs.load(Ordering::SeqCst) >= n,
        }
    }
}

fn injected(full: bool, what: &str) -> StoreError {
    if full {
        StoreError::Full(format!("injected: no space left on device ({what})"))
    } else {
        StoreError::Io(format!("injected: input/output error ({what})"))
    }
}

impl LogStore for FaultyStore {
    fn size(&self) -> Result<u64, StoreError> {
        self.inner.size()
    }
    fn entry(&self, position: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.entry(position)
    }
    fn entries(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.inner.entries(start, end)
    }
    fn node(&self, level: u32, index: u64) -> Result<Option<Hash>, StoreError> {
        self.inner.node(level, index)
    }
    fn seal(&self, up_to: u64) -> Result<u64, StoreError> {
        self.inner.seal(up_to)
    }
    fn request(&self, id: &Uuid) -> Result<Option<RequestRecord>, StoreError> {
        self.inner.request(id)
    }
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.meta(key)
    }
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(keyspace, key)
    }
    fn scan_prefix(&self, keyspace: Keyspace, prefix: &[u8]) -> Result<Vec<Record>, StoreError> {
        self.inner.scan_prefix(keyspace, prefix)
    }
    fn for_each(&self, keyspace: Keyspace, visit: &mut Visitor<'_>) -> Result<(), StoreError> {
        self.inner.for_each(keyspace, visit)
    }
    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let call = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if let Fault::Write { n, full } = self.fault
            && call == n
        {
            return Err(injected(full, "write"));
        }
        self.inner.write(batch)
    }
    fn sync(&self) -> Result<(), StoreError> {
        let call = self.syncs.fetch_add(1, Ordering::SeqCst) + 1;
        if let Fault::Sync { n, full } = self.fault
            && call == n
        {
            return Err(injected(full, "fsync"));
        }
        self.inner.sync()
    }
    fn clear_projections(&self, keyspaces: &[Keyspace]) -> Result<(), StoreError> {
        self.inner.clear_projections(keyspaces)
    }
    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.size_on_disk()
    }
    fn projected_size(&self) -> Result<u64, StoreError> {
        self.inner.projected_size()
    }
    fn persist_projections(&self) -> Result<(), StoreError> {
        self.inner.persist_projections()
    }
    fn projections_wanted(&self) -> bool {
        self.inner.projections_wanted()
    }
    fn last_snapshot_seconds(&self) -> Option<f64> {
        self.inner.last_snapshot_seconds()
    }
}
