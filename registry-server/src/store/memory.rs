//! An in-memory [`LogStore`] that models durability.
//!
//! It keeps two states: what readers see (everything written) and what would survive a crash
//! (everything written before the last [`LogStore::sync`]). [`MemoryStore::crash`] returns a
//! store over the durable state only, so tests can show that nothing acknowledged is ever lost
//! and that unsynced writes may be. It also counts syncs, which lets tests check that the writer
//! syncs once per group commit and never acknowledges before.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use registry_core::merkle::Hash;
use uuid::Uuid;

use super::{Keyspace, LogStore, Record, RequestRecord, StoreError, Visitor, WriteBatch};

#[derive(Debug, Clone, Default)]
struct State {
    entries: BTreeMap<u64, Vec<u8>>,
    nodes: HashMap<(u32, u64), Hash>,
    meta: HashMap<String, Vec<u8>>,
    projections: BTreeMap<(Keyspace, Vec<u8>), Vec<u8>>,
}

impl State {
    fn apply(&mut self, batch: &WriteBatch) {
        for (pos, bytes) in &batch.entries {
            self.entries.insert(*pos, bytes.clone());
        }
        for n in &batch.nodes {
            self.nodes.insert((n.level, n.index), n.hash);
        }
        for (k, v) in &batch.meta {
            self.meta.insert((*k).to_string(), v.clone());
        }
        // Request IDs are records of the REQUESTS keyspace, as in every store.
        let requests = batch.requests.iter().map(|(id, r)| super::request_write(id, r));
        for w in batch.projections.iter().cloned().chain(requests) {
            let key = (w.keyspace, w.key.clone());
            match w.value {
                Some(v) => self.projections.insert(key, v),
                None => self.projections.remove(&key),
            };
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    live: RwLock<State>,
    durable: Mutex<State>,
    unsynced: Mutex<Vec<WriteBatch>>,
    syncs: AtomicU64,
    writes: AtomicU64,
}

/// See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

fn poisoned() -> StoreError {
    StoreError::Io("memory store lock poisoned".into())
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new handle over the same data, as after a clean shutdown and restart.
    pub fn reopen(&self) -> Self {
        self.clone()
    }

    /// A store over only what was synced, as after a crash and restart.
    pub fn crash(&self) -> Self {
        let durable = self.shared.durable.lock().map(|d| d.clone()).unwrap_or_default();
        Self {
            shared: Arc::new(Shared {
                live: RwLock::new(durable.clone()),
                durable: Mutex::new(durable),
                ..Default::default()
            }),
        }
    }

    /// How many times [`LogStore::sync`] was called.
    pub fn sync_count(&self) -> u64 {
        self.shared.syncs.load(Ordering::SeqCst)
    }

    /// Number of entries that would survive a crash now.
    pub fn durable_size(&self) -> u64 {
        self.shared
            .durable
            .lock()
            .map(|d| d.entries.last_key_value().map_or(0, |(k, _)| k + 1))
            .unwrap_or(0)
    }

    /// How many batches [`LogStore::write`] applied.
    pub fn write_count(&self) -> u64 {
        self.shared.writes.load(Ordering::SeqCst)
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T, StoreError> {
        self.shared.live.read().map(|s| f(&s)).map_err(|_| poisoned())
    }
}

impl LogStore for MemoryStore {
    fn size(&self) -> Result<u64, StoreError> {
        self.read(|s| s.entries.last_key_value().map_or(0, |(k, _)| k + 1))
    }

    fn entry(&self, position: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|s| s.entries.get(&position).cloned())
    }

    fn entries(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.read(|s| s.entries.range(start..end).map(|(k, v)| (*k, v.clone())).collect())
    }

    fn node(&self, level: u32, index: u64) -> Result<Option<Hash>, StoreError> {
        self.read(|s| s.nodes.get(&(level, index)).copied())
    }

    fn request(&self, id: &Uuid) -> Result<Option<RequestRecord>, StoreError> {
        self.get(super::REQUESTS, id.as_bytes())?.map(|v| super::decode_request(&v)).transpose()
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|s| s.meta.get(key).cloned())
    }

    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|s| s.projections.get(&(keyspace, key.to_vec())).cloned())
    }

    fn scan_prefix(&self, keyspace: Keyspace, prefix: &[u8]) -> Result<Vec<Record>, StoreError> {
        self.read(|s| {
            s.projections
                .range((keyspace, prefix.to_vec())..)
                .take_while(|((ks, k), _)| *ks == keyspace && k.starts_with(prefix))
                .map(|((_, k), v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    fn for_each(&self, keyspace: Keyspace, visit: &mut Visitor<'_>) -> Result<(), StoreError> {
        // A copy, so `visit` may take as long as it likes without holding the lock.
        for (k, v) in self.scan_prefix(keyspace, b"")? {
            visit(&k, &v)?;
        }
        Ok(())
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut live = self.shared.live.write().map_err(|_| poisoned())?;
        live.apply(&batch);
        self.shared.unsynced.lock().map_err(|_| poisoned())?.push(batch);
        self.shared.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        let batches = std::mem::take(&mut *self.shared.unsynced.lock().map_err(|_| poisoned())?);
        let mut durable = self.shared.durable.lock().map_err(|_| poisoned())?;
        for b in &batches {
            durable.apply(b);
        }
        self.shared.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn clear_projections(&self, keyspaces: &[Keyspace]) -> Result<(), StoreError> {
        let mut live = self.shared.live.write().map_err(|_| poisoned())?;
        live.projections.retain(|(ks, _), _| !keyspaces.contains(ks));
        // A rebuild is followed by a sync, which must make the clearing durable too.
        let mut durable = self.shared.durable.lock().map_err(|_| poisoned())?;
        durable.projections.retain(|(ks, _), _| !keyspaces.contains(ks));
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    #[test]
    fn the_memory_store_passes_the_conformance_suite() {
        conformance::run_all(&mut conformance::MemoryFactory::default());
    }

    #[test]
    fn a_crash_loses_exactly_the_unsynced_writes() {
        let store = MemoryStore::new();
        let batch =
            |pos: u64| WriteBatch { entries: vec![(pos, vec![pos as u8])], ..Default::default() };
        store.write(batch(0)).unwrap();
        store.sync().unwrap();
        store.write(batch(1)).unwrap();
        assert_eq!(store.size().unwrap(), 2);
        let after = store.crash();
        assert_eq!(after.size().unwrap(), 1);
        assert_eq!(after.entry(0).unwrap(), Some(vec![0]));
    }
}
