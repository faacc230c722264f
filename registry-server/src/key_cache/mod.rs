//! The key projections held in memory: every key record and every identifier index group,
//! decoded once and shared, so lookups and the writer's rule checks never decode them again.
//!
//! The store's projection records stay the source; this is a complete copy of two of them (`keys` and
//! `index`) in two parts: what a background walk read after start-up ([`KeyCache::fill`]),
//! packed into a few large arrays ([`packed`]) and read-only once in place, and the writer's
//! changes since the start in maps over it, which it fills as it writes each new record. A
//! read looks in the maps first. Until the walk is done a miss falls back to the store (and
//! what it read is kept in the maps); afterwards a miss in both means "no such record".
//!
//! Why that is safe with no locks between the two fillers: only the writer changes these
//! projections, and it puts each record in the maps *before* writing it to the store, always
//! from a complete source. What a reader kept from the store only ever goes where nothing is
//! yet (`or_insert`), so it never replaces what the writer put; so the maps hold, for each
//! record they have, a version no older than the store's when the walk read it, and they are
//! read before the walk's copy. Records are immutable once put; a new version replaces the
//! `Arc`. Like the store, the cache may hold records of entries that are not yet durable:
//! every reader filters by its basis (records carry their positions).
//!
//! A reader looks at the "complete" flag *before* it looks for the record. The other order
//! would let the fill install its copy and set the flag between a reader's miss and its look
//! at the flag, and the reader would take a record that exists for one that does not (for the
//! writer: a duplicate key accepted, an index group rewritten without its members). The flag is
//! set with release ordering after the walk's copy is in place, so a reader that saw it set
//! sees the copy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use registry_core::lifecycle::{IndexGroup, KeyRecord, records_of};

use crate::store::StoreError;

mod packed;
use packed::Packed;

/// foldhash, not std's SipHash: batch lookups hash two keys per question. It is seeded per
/// process like std's, so keys chosen by a client still cannot be aimed at one bucket.
type Hasher = foldhash::fast::RandomState;

/// A fingerprint as the table's key: its 32 bytes rather than its 64 hex digits on the heap,
/// so that finding a record compares bytes in the table itself (with a million keys, reading
/// the text of each candidate key was a cache miss and a tenth of a batch lookup's time).
type KeyId = [u8; 32];

/// The bytes of a fingerprint written the one way the registry writes them (64 lowercase hex
/// digits); any other text has no record here and is looked up in the store, so the cache
/// answers exactly as the store would.
fn key_id(fingerprint: &str) -> Option<KeyId> {
    registry_core::lifecycle::fingerprint_bytes(fingerprint)
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct KeyCache {
    /// What the fill read, once it is done.
    walked: OnceLock<Packed>,
    /// Records whose fingerprint has a [`key_id`]; those of any other (the registry writes
    /// none) are always read from the store.
    keys: DashMap<KeyId, Arc<KeyRecord>, Hasher>,
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
        match self.walked.get() {
            Some(w) => w.keys_len() + self.keys.iter().filter(|r| !w.has_key(r.key())).count(),
            None => self.keys.len(),
        }
    }

    /// Index groups held (one per EVSE ID, meter serial and gateway serial).
    pub fn groups(&self) -> usize {
        match self.walked.get() {
            Some(w) => w.groups_len() + self.index.iter().filter(|g| !w.has_group(g.key())).count(),
            None => self.index.len(),
        }
    }

    /// True when no key record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A key record; `load` reads the store while the cache is still being filled.
    pub fn key(
        &self,
        fingerprint: &str,
        load: impl FnOnce() -> Result<Option<KeyRecord>, StoreError>,
    ) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        let Some(id) = key_id(fingerprint) else { return Ok(load()?.map(Arc::new)) };
        self.key_by_id(&id, load)
    }

    /// A key record by its fingerprint's bytes; `load` reads the store while the cache is
    /// still being filled.
    pub fn key_by_id(
        &self,
        id: &KeyId,
        load: impl FnOnce() -> Result<Option<KeyRecord>, StoreError>,
    ) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        // The flag first (see the module documentation).
        let complete = self.is_complete();
        if let Some(r) = self.keys.get(id) {
            return Ok(Some(r.value().clone()));
        }
        if complete {
            return Ok(self.walked.get().and_then(|w| w.key(id)).cloned());
        }
        Ok(load()?.map(|r| self.keep_key(r)))
    }

    /// An index group; `load` reads the store while the cache is still being filled.
    pub fn group(
        &self,
        prefix: &[u8],
        load: impl FnOnce() -> Result<Vec<([u8; 32], u64)>, StoreError>,
    ) -> Result<IndexGroup, StoreError> {
        let complete = self.is_complete();
        if let Some(g) = self.index.get(prefix) {
            return Ok(g.value().clone());
        }
        if complete {
            return Ok(self
                .walked
                .get()
                .and_then(|w| w.group(prefix))
                .unwrap_or_else(|| Arc::new([])));
        }
        let loaded = load()?;
        if loaded.is_empty() {
            return Ok(Arc::new([]));
        }
        Ok(self.keep_group(prefix, to_group(loaded)))
    }

    /// The records of a group's members with the positions that indexed them (see
    /// [`registry_core::lifecycle::State::indexed_keys`]). Once the fill is done, a group the
    /// writer has not changed is answered from the packed arrays, which number each member by
    /// its record: one hash per question instead of one per member as well, and no copy of
    /// the group. The writer's newer records still come first, as in [`KeyCache::key_by_id`].
    pub fn indexed_keys(
        &self,
        prefix: &[u8],
        load_group: impl FnOnce() -> Result<Vec<([u8; 32], u64)>, StoreError>,
        load_key: impl Fn(&KeyId) -> Result<Option<KeyRecord>, StoreError>,
    ) -> Result<Vec<(u64, Arc<KeyRecord>)>, StoreError> {
        // The flag first (see the module documentation).
        if self.is_complete()
            && !self.index.contains_key(prefix)
            && let Some(walked) = self.walked.get()
        {
            let newer = |id: &KeyId| self.keys.get(id).map(|r| r.value().clone());
            return Ok(walked.group_keys(prefix, newer));
        }
        let group = self.group(prefix, load_group)?;
        records_of(group.iter().copied(), |id| self.key_by_id(id, || load_key(id)))
    }

    /// The writer's new version of a key record.
    pub fn put_key(&self, record: KeyRecord) {
        if let Some(id) = key_id(record.fingerprint()) {
            self.keys.insert(id, Arc::new(record.pooled()));
        }
    }

    /// The writer's new version of an index group.
    pub fn put_group(&self, prefix: &[u8], group: IndexGroup) {
        self.index.insert(prefix.into(), group);
    }

    /// Keeps a record read from the store unless the writer put a newer one first.
    fn keep_key(&self, record: KeyRecord) -> Arc<KeyRecord> {
        match key_id(record.fingerprint()) {
            Some(id) => self.keys.entry(id).or_insert_with(|| Arc::new(record.pooled())).clone(),
            None => Arc::new(record),
        }
    }

    fn keep_group(&self, prefix: &[u8], group: IndexGroup) -> IndexGroup {
        self.index.entry(prefix.into()).or_insert(group).clone()
    }

    /// Reads both projections from the store (through `keys` and `index`, each a walk over one
    /// projection in key order), puts what they read in place and marks the cache complete.
    pub fn fill(
        &self,
        keys: impl FnOnce(&mut dyn FnMut(KeyRecord)) -> Result<(), StoreError>,
        index: impl FnOnce(&mut dyn FnMut(&[u8], [u8; 32], u64)) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut walked = Packed::default();
        let mut failed = None;
        keys(&mut |record| {
            if let Some(id) = key_id(record.fingerprint())
                && let Err(e) = walked.push_key(id, record)
            {
                failed.get_or_insert(e);
            }
        })?;
        // Index records arrive grouped (prefix, then fingerprint, in key order).
        let mut prefix: Vec<u8> = Vec::new();
        let mut members: Vec<([u8; 32], u64)> = Vec::new();
        let mut flush = |walked: &mut Packed, prefix: &[u8], members: Vec<([u8; 32], u64)>| {
            if let Err(e) = walked.push_group(prefix, members) {
                failed.get_or_insert(e);
            }
        };
        index(&mut |p, fingerprint, position| {
            if p != prefix.as_slice() {
                if !members.is_empty() {
                    flush(&mut walked, &prefix, std::mem::take(&mut members));
                }
                prefix = p.to_vec();
            }
            members.push((fingerprint, position));
        })?;
        if !members.is_empty() {
            flush(&mut walked, &prefix, members);
        }
        if let Some(e) = failed {
            return Err(e);
        }
        walked.shrink();
        self.walked
            .set(walked)
            .map_err(|_| StoreError::Io("the key cache was filled twice".into()))?;
        self.complete.store(true, Ordering::Release);
        Ok(())
    }
}

/// Orders members as the store does (by fingerprint), so answers do not depend on where a
/// group came from.
fn to_group(mut members: Vec<([u8; 32], u64)>) -> IndexGroup {
    members.sort_unstable();
    members.into()
}

/// A group with one more member, kept in fingerprint order.
pub fn with_member(group: &[([u8; 32], u64)], fingerprint: [u8; 32], position: u64) -> IndexGroup {
    let mut members = group.to_vec();
    let at = members.partition_point(|(f, _)| *f < fingerprint);
    members.insert(at, (fingerprint, position));
    members.into()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use registry_core::event::{Registration, SubmittedKey};
    use registry_core::ids::{EvseId, OperatorId};
    use registry_core::lifecycle::{KeyChange, KeyEvent, Stamp};
    use registry_core::meter_key::Curve;

    /// Fingerprints as the registry writes them, in order.
    const AA: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const BB: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const CC: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    /// A fingerprint as an index member.
    fn id(fingerprint: &str) -> [u8; 32] {
        registry_core::lifecycle::fingerprint_bytes(fingerprint).expect("lowercase hex")
    }

    /// A key record registered at position 0 with `events - 1` confirmations after it.
    pub(crate) fn record(fingerprint: &str, events: u64) -> KeyRecord {
        let at = |position| Stamp { position, recorded_at: chrono::DateTime::UNIX_EPOCH };
        let registration = Registration {
            fingerprint: fingerprint.into(),
            curve: Curve::Secp256r1,
            public_key: Box::new([1, 2, 3]),
            submitted_public_key: SubmittedKey::new("010203", &[1, 2, 3]),
            operator_id: OperatorId::parse("DE*ABC").unwrap(),
            evse_ids: Box::new([EvseId::parse("DE*ABC*E1").unwrap()]),
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
            r = r.with_event(KeyEvent {
                at: at(p),
                change: KeyChange::Confirmed { published_in_tree_size: p },
            });
        }
        r
    }

    fn no_store<T>() -> Result<T, StoreError> {
        panic!("a complete cache must not read the store")
    }

    /// Fills `cache` as a walk of the store would find `records` and index `members`
    /// (prefix, fingerprint, position).
    fn fill_with(cache: &KeyCache, records: &[KeyRecord], members: &[(&[u8], &str, u64)]) {
        cache
            .fill(
                |keep| {
                    records.iter().for_each(|r| keep(r.clone()));
                    Ok(())
                },
                |keep| {
                    members
                        .iter()
                        .for_each(|&(prefix, fp, position)| keep(prefix, id(fp), position));
                    Ok(())
                },
            )
            .unwrap();
    }

    #[test]
    fn a_stale_fill_never_replaces_what_the_writer_put() {
        let cache = KeyCache::new();
        cache.put_key(record(AA, 2));
        cache.put_group(b"e1\0", Arc::new([(id(AA), 0), (id(BB), 7)]));
        // The walk read the store before the writer's batch reached it.
        fill_with(&cache, &[record(AA, 1), record(CC, 1)], &[(b"e1\0", AA, 0), (b"e2\0", CC, 3)]);
        assert!(cache.is_complete());
        assert_eq!(cache.key(AA, no_store).unwrap().unwrap().history.len(), 2);
        assert_eq!(cache.key(CC, no_store).unwrap().unwrap().history.len(), 1);
        let e1: Vec<_> = cache.group(b"e1\0", no_store).unwrap().iter().cloned().collect();
        assert_eq!(e1, vec![(id(AA), 0), (id(BB), 7)]);
        let e2: Vec<_> = cache.group(b"e2\0", no_store).unwrap().iter().cloned().collect();
        assert_eq!(e2, vec![(id(CC), 3)]);
    }

    #[test]
    fn before_the_fill_a_miss_reads_the_store_and_keeps_what_it_read() {
        let cache = KeyCache::new();
        let mut reads = 0;
        let mut load = || {
            reads += 1;
            Ok(Some(record(AA, 1)))
        };
        assert!(cache.key(AA, &mut load).unwrap().is_some());
        assert!(cache.key(AA, &mut load).unwrap().is_some());
        assert_eq!(reads, 1, "the second read is served from memory");
        // Nothing is remembered for what the store does not have: it may appear later.
        assert!(cache.key(BB, || Ok(None)).unwrap().is_none());
        assert!(cache.key(BB, || Ok(Some(record(BB, 1)))).unwrap().is_some());
        assert!(cache.group(b"e9\0", || Ok(vec![])).unwrap().is_empty());
        let g = cache.group(b"e9\0", || Ok(vec![(id(BB), 4), (id(AA), 2)])).unwrap();
        assert_eq!(&g[..], &[(id(AA), 2), (id(BB), 4)], "in fingerprint order");
    }

    #[test]
    fn after_the_fill_a_miss_is_an_answer() {
        let cache = KeyCache::new();
        cache.fill(|_| Ok(()), |_| Ok(())).unwrap();
        assert!(cache.key(AA, no_store).unwrap().is_none());
        assert!(cache.group(b"e1\0", no_store).unwrap().is_empty());
    }

    #[test]
    fn a_failed_fill_leaves_the_cache_incomplete() {
        let cache = KeyCache::new();
        let failed = cache.fill(|_| Err(StoreError::Io("disk".into())), |_| Ok(()));
        assert!(failed.is_err());
        assert!(!cache.is_complete());
        assert!(cache.key(AA, || Ok(Some(record(AA, 1)))).unwrap().is_some());
    }

    #[test]
    fn a_fingerprint_not_written_as_the_registry_writes_it_is_read_from_the_store() {
        let cache = KeyCache::new();
        cache.fill(|_| Ok(()), |_| Ok(())).unwrap();
        let upper = AA.to_ascii_uppercase();
        cache.put_key(record(&upper, 1));
        let mut reads = 0;
        for _ in 0..2 {
            let found = cache.key(&upper, || {
                reads += 1;
                Ok(Some(record(&upper, 3)))
            });
            assert_eq!(found.unwrap().unwrap().history.len(), 3, "the store's record");
        }
        assert_eq!(reads, 2, "never kept");
        assert!(cache.key("aa", || Ok(None)).unwrap().is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn after_the_fill_every_record_is_found_and_the_writers_later_versions_win() {
        let fingerprint = |n: u32| format!("{n:08x}{}", "0".repeat(56));
        let cache = KeyCache::new();
        cache
            .fill(
                |keep| {
                    (0..3_000).for_each(|n| keep(record(&fingerprint(n), 1)));
                    Ok(())
                },
                |keep| {
                    keep(b"e1\0", id(AA), 0);
                    Ok(())
                },
            )
            .unwrap();
        assert_eq!((cache.len(), cache.groups()), (3_000, 1));
        for n in [0, 1, 1_500, 2_999] {
            assert!(cache.key(&fingerprint(n), no_store).unwrap().is_some(), "key {n}");
        }
        assert!(cache.key(&fingerprint(3_000), no_store).unwrap().is_none());
        cache.put_key(record(&fingerprint(7), 3));
        cache.put_key(record(&fingerprint(3_000), 1));
        cache.put_group(b"e1\0", Arc::new([(id(AA), 0), (id(BB), 5)]));
        assert_eq!(cache.key(&fingerprint(7), no_store).unwrap().unwrap().history.len(), 3);
        assert_eq!(cache.group(b"e1\0", no_store).unwrap().len(), 2);
        assert_eq!((cache.len(), cache.groups()), (3_001, 1), "a new version is no new record");
    }

    /// (position, fingerprint, events) of each record a group's members name.
    fn summary(keys: &[(u64, Arc<KeyRecord>)]) -> Vec<(u64, String, usize)> {
        keys.iter().map(|(p, r)| (*p, r.fingerprint().to_string(), r.history.len())).collect()
    }

    #[test]
    fn a_groups_keys_come_from_the_packed_records_and_the_writers_newer_versions_win() {
        let cache = KeyCache::new();
        let members: [(&[u8], &str, u64); 3] =
            [(b"e1\0", AA, 0), (b"e1\0", BB, 5), (b"e1\0", CC, 3)];
        fill_with(&cache, &[record(AA, 1), record(CC, 1)], &members);
        let keys = cache.indexed_keys(b"e1\0", no_store, |_| no_store()).unwrap();
        let want = vec![(0, AA.to_string(), 1), (3, CC.to_string(), 1)];
        assert_eq!(summary(&keys), want, "a member without a record is left out");
        cache.put_key(record(CC, 3));
        let keys = cache.indexed_keys(b"e1\0", no_store, |_| no_store()).unwrap();
        assert_eq!(summary(&keys)[1], (3, CC.to_string(), 3), "the writer's version");
        cache.put_group(b"e1\0", Arc::new([(id(CC), 3)]));
        let keys = cache.indexed_keys(b"e1\0", no_store, |_| no_store()).unwrap();
        assert_eq!(summary(&keys), vec![(3, CC.to_string(), 3)], "the writer's group");
        assert!(cache.indexed_keys(b"e9\0", no_store, |_| no_store()).unwrap().is_empty());
    }

    #[test]
    fn before_the_fill_a_groups_keys_are_read_from_the_store() {
        let cache = KeyCache::new();
        let group = || Ok(vec![(id(BB), 4), (id(AA), 2)]);
        let key = |id: &KeyId| Ok((*id == super::key_id(AA).unwrap()).then(|| record(AA, 2)));
        let keys = cache.indexed_keys(b"e1\0", group, key).unwrap();
        assert_eq!(summary(&keys), vec![(2, AA.to_string(), 2)]);
        assert_eq!(cache.len(), 1, "what was read is kept");
    }

    #[test]
    fn a_new_member_keeps_the_group_in_fingerprint_order() {
        let g = with_member(&[(id(AA), 1), (id(CC), 2)], id(BB), 9);
        assert_eq!(&g[..], &[(id(AA), 1), (id(BB), 9), (id(CC), 2)]);
    }
}
