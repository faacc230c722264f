//! The state a [`super::Machine`] sees inside one group commit (and a catch-up's writes until
//! it writes them out).
//!
//! Projection writes of the batch so far sit in an overlay on top of the store, so each command
//! is checked against the state after every earlier entry, committed or not, while nothing
//! reaches the store until the whole batch is written atomically.

use std::collections::BTreeMap;

use crate::store::{Keyspace, Kv, LogStore, ProjectionWrite, Record, StoreError};

/// Reads through a batch's pending projection writes to the store; collects new writes.
pub struct View<'a> {
    store: &'a dyn LogStore,
    overlay: BTreeMap<(Keyspace, Vec<u8>), Option<Vec<u8>>>,
}

impl<'a> View<'a> {
    /// An empty overlay over `store`.
    pub fn new(store: &'a dyn LogStore) -> Self {
        Self { store, overlay: BTreeMap::new() }
    }

    /// The current value of a projection record.
    pub fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.overlay.get(&(keyspace, key.to_vec())) {
            Some(v) => Ok(v.clone()),
            None => self.store.get(keyspace, key),
        }
    }

    /// All current records whose key starts with `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
    ) -> Result<Vec<Record>, StoreError> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> =
            self.store.scan_prefix(keyspace, prefix)?.into_iter().collect();
        for ((_, k), v) in self
            .overlay
            .range((keyspace, prefix.to_vec())..)
            .take_while(|((ks, k), _)| *ks == keyspace && k.starts_with(prefix))
        {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().collect())
    }

    /// Sets a record.
    pub fn put(&mut self, keyspace: Keyspace, key: Vec<u8>, value: Vec<u8>) {
        self.overlay.insert((keyspace, key), Some(value));
    }

    /// Deletes a record.
    pub fn delete(&mut self, keyspace: Keyspace, key: Vec<u8>) {
        self.overlay.insert((keyspace, key), None);
    }

    /// Number of distinct records written or deleted so far (a catch-up writes out by it).
    #[allow(clippy::len_without_is_empty)] // nothing asks whether a view is empty
    pub fn len(&self) -> usize {
        self.overlay.len()
    }

    /// The writes to commit.
    pub fn into_writes(self) -> Vec<ProjectionWrite> {
        self.into_writes_iter().collect()
    }

    /// The writes to commit, in key order, without collecting them (a catch-up holds millions).
    pub fn into_writes_iter(self) -> impl Iterator<Item = ProjectionWrite> + use<'a> {
        self.overlay.into_iter().map(|((keyspace, key), value)| ProjectionWrite {
            keyspace,
            key,
            value,
        })
    }
}

impl Kv for View<'_> {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        View::get(self, keyspace, key)
    }
    fn scan_prefix(&self, keyspace: Keyspace, prefix: &[u8]) -> Result<Vec<Record>, StoreError> {
        View::scan_prefix(self, keyspace, prefix)
    }
}
