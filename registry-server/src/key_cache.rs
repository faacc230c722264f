//! The key projections held in memory: every key record and every identifier index group,
//! decoded once and shared, so lookups and the writer's rule checks never decode them again.
//!
//! The store's projection records stay the source; this is a complete copy of two of them (`keys` and
//! `index`), filled by a background walk after start-up ([`KeyCache::fill`]) and kept current by
//! the writer, which puts every new record here as it writes it. Until the walk is done a miss
//! falls back to the store; afterwards a miss means "no such record".
//!
//! Why that is safe with no locks between the two fillers: only the writer changes these
//! projections, and it puts each record here *before* writing it to the store, always from a
//! complete source. The walk only ever inserts where nothing is yet (`or_insert`), so whatever
//! it read, older or not, never replaces what the writer put. Records are immutable once put;
//! a new version replaces the `Arc`. Like the store, the cache may hold records of entries that
//! are not yet durable: every reader filters by its basis (records carry their positions).
//!
//! A reader looks at the "complete" flag *before* it looks for the record. The other order
//! would let the fill insert the record and set the flag between a reader's miss and its look
//! at the flag, and the reader would take a record that exists for one that does not (for the
//! writer: a duplicate key accepted, an index group rewritten without its members). The flag is
//! set with release ordering after the last insert of the fill, so a reader that saw it set
//! sees every record the fill inserted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dashmap::DashMap;
use registry_proto::lifecycle::{IndexGroup, KeyRecord};

use crate::store::StoreError;

/// foldhash, not std's SipHash: batch lookups hash two keys per question. It is seeded per
/// process like std's, so keys chosen by a client still cannot be aimed at one bucket.
type Hasher = foldhash::fast::RandomState;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: DashMap<Box<str>, Arc<KeyRecord>, Hasher>,
    /// Keyed by the index prefix (kind tag then value) the store uses.
    index: DashMap<Box<[u8]>, IndexGroup, Hasher>,
    complete: AtomicBool,
}

impl KeyCache {
    /// An empty cache that still has to be filled from the store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether every record in the store is here too.
    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    /// Key records held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key record is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// A key record; `load` reads the store while the cache is still being filled.
    pub fn key(
        &self,
        fingerprint: &str,
        load: impl FnOnce() -> Result<Option<KeyRecord>, StoreError>,
    ) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        // The flag first (see the module documentation).
        let complete = self.is_complete();
        if let Some(r) = self.keys.get(fingerprint) {
            return Ok(Some(r.value().clone()));
        }
        if complete {
            return Ok(None);
        }
        Ok(load()?.map(|r| self.keep_key(r)))
    }

    /// An index group; `load` reads the store while the cache is still being filled.
    pub fn group(
        &self,
        prefix: &[u8],
        load: impl FnOnce() -> Result<Vec<(String, u64)>, StoreError>,
    ) -> Result<IndexGroup, StoreError> {
        let complete = self.is_complete();
        if let Some(g) = self.index.get(prefix) {
            return Ok(g.value().clone());
        }
        if complete {
            return Ok(Arc::new([]));
        }
        let loaded = load()?;
        if loaded.is_empty() {
            return Ok(Arc::new([]));
        }
        Ok(self.keep_group(prefix, to_group(loaded)))
    }

    /// The writer's new version of a key record.
    pub fn put_key(&self, record: KeyRecord) {
        self.keys.insert(record.fingerprint().into(), Arc::new(record));
    }

    /// The writer's new version of an index group.
    pub fn put_group(&self, prefix: &[u8], group: IndexGroup) {
        self.index.insert(prefix.into(), group);
    }

    /// Keeps a record read from the store unless the writer put a newer one first.
    fn keep_key(&self, record: KeyRecord) -> Arc<KeyRecord> {
        self.keys.entry(record.fingerprint().into()).or_insert_with(|| Arc::new(record)).clone()
    }

    fn keep_group(&self, prefix: &[u8], group: IndexGroup) -> IndexGroup {
        self.index.entry(prefix.into()).or_insert(group).clone()
    }

    /// Reads both projections from the store (through `keys` and `index`, each a walk over one
    /// projection in key order) and marks the cache complete.
    pub fn fill(
        &self,
        keys: impl FnOnce(&mut dyn FnMut(KeyRecord)) -> Result<(), StoreError>,
        index: impl FnOnce(&mut dyn FnMut(&[u8], &str, u64)) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        keys(&mut |record| {
            self.keep_key(record);
        })?;
        // Index records arrive grouped (prefix, then fingerprint, in key order).
        let mut prefix: Vec<u8> = Vec::new();
        let mut members: Vec<(String, u64)> = Vec::new();
        index(&mut |p, fingerprint, position| {
            if p != prefix.as_slice() {
                if !members.is_empty() {
                    self.keep_group(&prefix, to_group(std::mem::take(&mut members)));
                }
                prefix = p.to_vec();
            }
            members.push((fingerprint.to_string(), position));
        })?;
        if !members.is_empty() {
            self.keep_group(&prefix, to_group(members));
        }
        self.complete.store(true, Ordering::Release);
        Ok(())
    }
}

/// Orders members as the store does (by fingerprint), so answers do not depend on where a
/// group came from.
fn to_group(mut members: Vec<(String, u64)>) -> IndexGroup {
    members.sort_unstable();
    members.into()
}

/// A group with one more member, kept in fingerprint order.
pub fn with_member(group: &[(String, u64)], fingerprint: &str, position: u64) -> IndexGroup {
    let mut members = group.to_vec();
    let at = members.partition_point(|(f, _)| f.as_str() < fingerprint);
    members.insert(at, (fingerprint.into(), position));
    members.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry_proto::event::Registration;
    use registry_proto::ids::{EvseId, OperatorId};
    use registry_proto::lifecycle::{KeyChange, KeyEvent, Stamp};
    use registry_proto::meter_key::Curve;

    fn record(fingerprint: &str, events: u64) -> KeyRecord {
        let at = |position| Stamp { position, recorded_at: chrono::DateTime::UNIX_EPOCH };
        let registration = Registration {
            fingerprint: fingerprint.into(),
            curve: Curve::Secp256r1,
            public_key: vec![1, 2, 3],
            submitted_public_key: "010203".into(),
            operator_id: OperatorId::parse("DE*ABC").unwrap(),
            evse_ids: vec![EvseId::parse("DE*ABC*E1").unwrap()],
            meter_serial: Some("S1".into()),
            gateway_serial: None,
            manufacturer: "M".into(),
            model: "X".into(),
            effective_at: chrono::DateTime::UNIX_EPOCH,
            predecessor: None,
            sample_signed_meter_value: None,
        };
        let mut r = KeyRecord::new(registration, at(0));
        for p in 1..events {
            r.history.push(KeyEvent {
                at: at(p),
                change: KeyChange::Confirmed { published_in_tree_size: p },
            });
        }
        r
    }

    fn no_store<T>() -> Result<T, StoreError> {
        panic!("a complete cache must not read the store")
    }

    #[test]
    fn a_stale_fill_never_replaces_what_the_writer_put() {
        let cache = KeyCache::new();
        cache.put_key(record("aa", 2));
        cache.put_group(b"e1\0", Arc::new([("aa".into(), 0), ("bb".into(), 7)]));
        // The walk read the store before the writer's batch reached it.
        cache
            .fill(
                |keep| {
                    keep(record("aa", 1));
                    keep(record("cc", 1));
                    Ok(())
                },
                |keep| {
                    keep(b"e1\0", "aa", 0);
                    keep(b"e2\0", "cc", 3);
                    Ok(())
                },
            )
            .unwrap();
        assert!(cache.is_complete());
        assert_eq!(cache.key("aa", no_store).unwrap().unwrap().history.len(), 2);
        assert_eq!(cache.key("cc", no_store).unwrap().unwrap().history.len(), 1);
        let e1: Vec<_> = cache.group(b"e1\0", no_store).unwrap().iter().cloned().collect();
        assert_eq!(e1, vec![("aa".into(), 0), ("bb".into(), 7)]);
        let e2: Vec<_> = cache.group(b"e2\0", no_store).unwrap().iter().cloned().collect();
        assert_eq!(e2, vec![("cc".into(), 3)]);
    }

    #[test]
    fn before_the_fill_a_miss_reads_the_store_and_keeps_what_it_read() {
        let cache = KeyCache::new();
        let mut reads = 0;
        let mut load = || {
            reads += 1;
            Ok(Some(record("aa", 1)))
        };
        assert!(cache.key("aa", &mut load).unwrap().is_some());
        assert!(cache.key("aa", &mut load).unwrap().is_some());
        assert_eq!(reads, 1, "the second read is served from memory");
        // Nothing is remembered for what the store does not have: it may appear later.
        assert!(cache.key("bb", || Ok(None)).unwrap().is_none());
        assert!(cache.key("bb", || Ok(Some(record("bb", 1)))).unwrap().is_some());
        assert!(cache.group(b"e9\0", || Ok(vec![])).unwrap().is_empty());
        let g = cache.group(b"e9\0", || Ok(vec![("bb".into(), 4), ("aa".into(), 2)])).unwrap();
        assert_eq!(&g[..], &[("aa".into(), 2), ("bb".into(), 4)], "in fingerprint order");
    }

    #[test]
    fn after_the_fill_a_miss_is_an_answer() {
        let cache = KeyCache::new();
        cache.fill(|_| Ok(()), |_| Ok(())).unwrap();
        assert!(cache.key("aa", no_store).unwrap().is_none());
        assert!(cache.group(b"e1\0", no_store).unwrap().is_empty());
    }

    #[test]
    fn a_failed_fill_leaves_the_cache_incomplete() {
        let cache = KeyCache::new();
        let failed = cache.fill(|_| Err(StoreError::Io("disk".into())), |_| Ok(()));
        assert!(failed.is_err());
        assert!(!cache.is_complete());
        assert!(cache.key("aa", || Ok(Some(record("aa", 1)))).unwrap().is_some());
    }

    #[test]
    fn a_new_member_keeps_the_group_in_fingerprint_order() {
        let g = with_member(&[("aa".into(), 1), ("cc".into(), 2)], "bb", 9);
        assert_eq!(&g[..], &[("aa".into(), 1), ("bb".into(), 9), ("cc".into(), 2)]);
    }
}
