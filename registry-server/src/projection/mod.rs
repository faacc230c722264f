//! The projections: the lifecycle state (`registry_core::lifecycle::State`) as records in
//! named keyspaces of the store. The production store keeps them in memory and makes them
//! durable as snapshots (`store::layered`), so start-up reads the last snapshot and
//! [`catch_up`] replays only the log after it; [`rebuild`] derives everything from entry 0.
//!
//! The writer updates them through its batch [`View`], in the same atomic write as the entries
//! they derive from (the map's bucket records excepted: the writer holds them back until the
//! store makes its projections durable, see `crate::map`); lookups read them from the store,
//! key records and indexes through the in-memory [`KeyCache`], the latest entry per identifier
//! from the published map. Records carry the log positions of their events, and every read is
//! filtered to a basis no later than the durable head, so a record written in a batch that is
//! not yet synced never changes an answer.
//!
//! ```text
//! keys       fingerprint (hex)                     -> KeyRecord
//! index      kind tag, value, 0x00, fingerprint    -> position added (u64 BE); EVSE IDs, serials
//! operators  operator ID                           -> OperatorRecord
//! signers    key ID (32 bytes)                     -> SignerRecord
//! admins     "admins"                              -> active admin key IDs
//! map        bucket (u16 BE)                       -> latest position per identifier (see crate::map)
//! pending    fingerprint (hex)                     -> registration position (u64 BE)
//! ```
//! Values are postcard-encoded; `rebuild` regenerates everything from the log.

use registry_core::entry::Entry;
use registry_core::event::{Identifier, IdentifierKind};
use registry_core::ids::OperatorId;
use registry_core::lifecycle::{
    IndexGroup, KeyRecord, OperatorRecord, SignerRecord, State, StateMut, records_of,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use std::sync::Arc;

use crate::key_cache::{self, KeyCache};
use crate::log::View;
use crate::map::MapBuckets;
use crate::store::{Keyspace, Kv, LogStore, REQUESTS, RequestRecord, StoreError};

mod rebuild;
pub use rebuild::rebuild;

const KEYS: Keyspace = Keyspace("keys");
const INDEX: Keyspace = Keyspace("index");
const OPERATORS: Keyspace = Keyspace("operators");
const SIGNERS: Keyspace = Keyspace("signers");
const ADMINS: Keyspace = Keyspace("admins");
const PENDING: Keyspace = Keyspace("pending");

/// Every projection keyspace, for a rebuild; the request index is one of them.
pub const KEYSPACES: &[Keyspace] =
    &[KEYS, INDEX, OPERATORS, SIGNERS, ADMINS, PENDING, crate::map::MAP, REQUESTS];

/// The lifecycle state over a key-value source, with key records and index groups served from
/// a [`KeyCache`] when it has one. The writer and lookups use one; the few reads that go to the
/// store directly (signer checks at the edge, receipts, tools on a closed store) filter by a
/// basis like everything else, so they get the same answers.
pub struct Projection<'m, K> {
    kv: K,
    cache: Option<Arc<KeyCache>>,
    buckets: Option<&'m mut MapBuckets>,
}

impl<'m, K> Projection<'m, K> {
    /// Reads everything from `kv`.
    pub fn new(kv: K) -> Self {
        Self { kv, cache: None, buckets: None }
    }

    /// Reads key records and index groups from `cache` first (see [`KeyCache`] for why that
    /// is consistent with `kv`).
    pub fn cached(kv: K, cache: Arc<KeyCache>) -> Self {
        Self { kv, cache: Some(cache), buckets: None }
    }

    /// Reads and records the latest entry per identifier in `buckets`: the writer's and a
    /// catch-up's decoded copy, which they write out as bucket records when the store wants
    /// them ([`MapBuckets::write_unwritten`]). Without it, this projection cannot answer
    /// `latest`: the records in the store lag the buckets between snapshot cuts.
    pub fn with_buckets(self, buckets: &'m mut MapBuckets) -> Self {
        Self { buckets: Some(buckets), ..self }
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("{what} record: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("projection records always serialize")
}

/// A key record as stored under its fingerprint: postcard's encoding less the fingerprint it
/// starts with, which the record's key already is (65 of its 300-odd bytes), marked by a
/// leading 0. A whole record starts with the fingerprint's length instead (64), so records
/// stored whole (by earlier versions, or one whose key is not its fingerprint) still read.
fn encode_key(record: &KeyRecord) -> (Vec<u8>, Vec<u8>) {
    let whole = encode(record);
    let fingerprint = record.fingerprint().as_bytes();
    let head = fingerprint.len() + 1;
    if fingerprint.len() < 0x80
        && whole.first() == Some(&(fingerprint.len() as u8))
        && whole.get(1..head) == Some(fingerprint)
    {
        let mut stored = Vec::with_capacity(whole.len() - head + 1);
        stored.push(0);
        stored.extend_from_slice(&whole[head..]);
        return (fingerprint.to_vec(), stored);
    }
    (fingerprint.to_vec(), whole)
}

/// Reads what [`encode_key`] stored under `key`.
fn decode_key(key: &[u8], value: &[u8]) -> Result<KeyRecord, StoreError> {
    match value.split_first() {
        Some((0, rest)) if key.len() < 0x80 => {
            let mut whole = Vec::with_capacity(1 + key.len() + rest.len());
            whole.push(key.len() as u8);
            whole.extend_from_slice(key);
            whole.extend_from_slice(rest);
            decode(&whole, "key")
        }
        _ => decode(value, "key"),
    }
}

fn u64_value(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} value is not 8 bytes")))?;
    Ok(u64::from_be_bytes(arr))
}

/// An identifier's index prefix: its kind's tag, its value, a zero. Identifiers are short, so
/// almost every prefix stays on the stack (a heap block per question was a few percent of a
/// batch lookup's time).
fn index_prefix(kind: IdentifierKind, value: &str) -> smallvec::SmallVec<[u8; 64]> {
    let mut k = smallvec::SmallVec::with_capacity(2 + value.len());
    k.push(kind.tag());
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k
}

/// An index key: the prefix ([`index_prefix`]), then the member's 32 bytes. Keys written
/// before 2026-12-07 end in the fingerprint's 64 hex digits instead (they sort alike), which
/// took 32 bytes more in each of the two index records of every key.
fn index_key(prefix: &[u8], member: &[u8; 32]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 32);
    key.extend_from_slice(prefix);
    key.extend_from_slice(member);
    key
}

/// The member an index key names after its prefix: 32 bytes, or (older keys) 64 hex digits.
fn index_key_member(rest: &[u8]) -> Result<[u8; 32], StoreError> {
    match rest.len() {
        32 => Ok(rest.try_into().unwrap_or([0; 32])),
        64 => index_member(
            std::str::from_utf8(rest)
                .map_err(|_| StoreError::Corrupt("index fingerprint is not UTF-8".into()))?,
        ),
        n => Err(StoreError::Corrupt(format!("an index key ends in a member of {n} bytes"))),
    }
}

/// An index key's prefix (as [`index_prefix`] builds it) and member. The prefix ends in the
/// only zero byte before the member; a 32-byte member is found by its length (it may hold
/// zeros itself), an older hex one after the last zero byte (hex digits are never zero).
fn split_index_key(key: &[u8]) -> Result<(&[u8], [u8; 32]), StoreError> {
    let at = match key.len().checked_sub(33) {
        Some(at) if key[at] == 0 => at + 1,
        _ => {
            key.iter()
                .rposition(|b| *b == 0)
                .ok_or_else(|| StoreError::Corrupt("index key has no separator".into()))?
                + 1
        }
    };
    Ok((&key[..at], index_key_member(&key[at..])?))
}

/// A fingerprint as an index member: its 32 bytes (the registry writes only lowercase hex).
fn index_member(fingerprint: &str) -> Result<[u8; 32], StoreError> {
    registry_core::lifecycle::fingerprint_bytes(fingerprint).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "index fingerprint {fingerprint:?} is not 64 lowercase hex digits"
        ))
    })
}

impl<K: Kv + ?Sized, R: std::ops::Deref<Target = K>> Projection<'_, R> {
    fn stored_key(&self, fingerprint: &str) -> Result<Option<KeyRecord>, StoreError> {
        let key = fingerprint.as_bytes();
        self.kv.get(KEYS, key)?.map(|b| decode_key(key, &b)).transpose()
    }

    fn stored_group(&self, prefix: &[u8]) -> Result<Vec<([u8; 32], u64)>, StoreError> {
        self.kv
            .scan_prefix(INDEX, prefix)?
            .into_iter()
            .map(|(k, v)| {
                let member = index_key_member(k.get(prefix.len()..).unwrap_or_default())?;
                Ok((member, u64_value(&v, "index")?))
            })
            .collect()
    }

    fn group(&self, prefix: &[u8]) -> Result<IndexGroup, StoreError> {
        match &self.cache {
            Some(cache) => cache.group(prefix, || self.stored_group(prefix)),
            None => Ok(self.stored_group(prefix)?.into()),
        }
    }
}

impl<K: Kv + ?Sized, R: std::ops::Deref<Target = K>> State for Projection<'_, R> {
    type Error = StoreError;

    fn key(&self, fingerprint: &str) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        match &self.cache {
            Some(cache) => cache.key(fingerprint, || self.stored_key(fingerprint)),
            None => Ok(self.stored_key(fingerprint)?.map(Arc::new)),
        }
    }

    fn key_by_id(&self, id: &[u8; 32]) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        match &self.cache {
            Some(cache) => cache.key_by_id(id, || self.stored_key(&hex::encode(id))),
            None => Ok(self.stored_key(&hex::encode(id))?.map(Arc::new)),
        }
    }

    fn indexed(&self, kind: IdentifierKind, value: &str) -> Result<IndexGroup, StoreError> {
        self.group(&index_prefix(kind, value))
    }

    fn indexed_keys(
        &self,
        kind: IdentifierKind,
        value: &str,
    ) -> Result<Vec<(u64, Arc<KeyRecord>)>, StoreError> {
        let prefix = index_prefix(kind, value);
        match &self.cache {
            Some(cache) => cache.indexed_keys(
                &prefix,
                || self.stored_group(&prefix),
                |id| self.stored_key(&hex::encode(id)),
            ),
            None => records_of(self.stored_group(&prefix)?, |id| {
                Ok(self.stored_key(&hex::encode(id))?.map(Arc::new))
            }),
        }
    }

    fn operator(&self, id: &OperatorId) -> Result<Option<OperatorRecord>, StoreError> {
        self.kv.get(OPERATORS, id.as_str().as_bytes())?.map(|b| decode(&b, "operator")).transpose()
    }

    fn signer(&self, key_id: &[u8; 32]) -> Result<Option<SignerRecord>, StoreError> {
        self.kv.get(SIGNERS, key_id)?.map(|b| decode(&b, "signer")).transpose()
    }

    fn admins(&self) -> Result<Vec<[u8; 32]>, StoreError> {
        Ok(self
            .kv
            .get(ADMINS, b"admins")?
            .map(|b| decode(&b, "admins"))
            .transpose()?
            .unwrap_or_default())
    }

    fn latest(&self, id: &Identifier) -> Result<Option<u64>, StoreError> {
        match &self.buckets {
            Some(buckets) => buckets.latest(id),
            // The store's bucket records lag the writer's between snapshot cuts: only the
            // writer (and a replay) answers this, from its buckets (readers ask the map).
            None => Err(StoreError::Io(format!(
                "the latest entry of {} is asked of a projection without the map's buckets",
                id.value
            ))),
        }
    }
}

impl StateMut for Projection<'_, &mut View<'_>> {
    fn put_key(&mut self, record: KeyRecord) -> Result<(), StoreError> {
        let (key, value) = encode_key(&record);
        // Into the cache first: see the promise in crate::key_cache.
        if let Some(cache) = &self.cache {
            cache.put_key(record);
        }
        self.kv.put(KEYS, key, value);
        Ok(())
    }

    fn add_to_index(
        &mut self,
        kind: IdentifierKind,
        value: &str,
        fingerprint: &str,
        position: u64,
    ) -> Result<(), StoreError> {
        let prefix = index_prefix(kind, value);
        // An index entry records when the key first appeared under the value; keep that.
        let group = self.group(&prefix)?;
        let member = index_member(fingerprint)?;
        if group.iter().any(|(f, _)| *f == member) {
            return Ok(());
        }
        if let Some(cache) = &self.cache {
            cache.put_group(&prefix, key_cache::with_member(&group, member, position));
        }
        self.kv.put(INDEX, index_key(&prefix, &member), position.to_be_bytes().to_vec());
        Ok(())
    }

    fn put_operator(&mut self, record: &OperatorRecord) -> Result<(), StoreError> {
        self.kv.put(OPERATORS, record.operator_id.as_str().as_bytes().to_vec(), encode(record));
        Ok(())
    }

    fn put_signer(&mut self, record: &SignerRecord) -> Result<(), StoreError> {
        self.kv.put(SIGNERS, record.key_id.to_vec(), encode(record));
        Ok(())
    }

    fn set_admins(&mut self, admins: &[[u8; 32]]) -> Result<(), StoreError> {
        self.kv.put(ADMINS, b"admins".to_vec(), encode(&admins.to_vec()));
        Ok(())
    }

    fn set_latest(&mut self, id: &Identifier, position: u64) -> Result<(), StoreError> {
        // Only the writer and a catch-up apply entries here, and both hold the buckets.
        let buckets = self.buckets.as_deref_mut().ok_or_else(|| {
            StoreError::Corrupt("entries are applied only with the map buckets in memory".into())
        })?;
        buckets.set_latest(id, position)
    }

    fn set_pending(
        &mut self,
        fingerprint: &str,
        registration: Option<u64>,
    ) -> Result<(), StoreError> {
        let key = fingerprint.as_bytes().to_vec();
        match registration {
            Some(p) => self.kv.put(PENDING, key, p.to_be_bytes().to_vec()),
            None => self.kv.delete(PENDING, key),
        }
        Ok(())
    }
}

impl<K: Kv + ?Sized, R: std::ops::Deref<Target = K>> Projection<'_, R> {
    /// Registrations waiting for confirmation: (fingerprint, registration position).
    pub fn pending(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.kv
            .scan_prefix(PENDING, b"")?
            .into_iter()
            .map(|(k, v)| {
                let fp = String::from_utf8(k)
                    .map_err(|_| StoreError::Corrupt("pending key is not UTF-8".into()))?;
                Ok((fp, u64_value(&v, "pending")?))
            })
            .collect()
    }
}

/// Fills `cache` from the `keys` and `index` projections of `store` (see [`KeyCache::fill`]);
/// gives up (leaving the cache incomplete) as soon as `stop` says so.
pub fn fill_cache(
    store: &dyn LogStore,
    cache: &KeyCache,
    stop: &dyn Fn() -> bool,
) -> Result<(), StoreError> {
    fill_cache_observed(store, cache, stop, &mut || {})
}

/// [`fill_cache`], calling `between` once the key records are in and before the indexes are
/// read (`registry-server usage` measures the two apart).
pub fn fill_cache_observed(
    store: &dyn LogStore,
    cache: &KeyCache,
    stop: &dyn Fn() -> bool,
    between: &mut dyn FnMut(),
) -> Result<(), StoreError> {
    let go_on = || match stop() {
        true => Err(StoreError::Io("stopped before the end".into())),
        false => Ok(()),
    };
    cache.fill(
        |keep| {
            store.for_each(KEYS, &mut |k, v| {
                go_on()?;
                keep(decode_key(k, v)?);
                Ok(())
            })
        },
        |keep| {
            between();
            store.for_each(INDEX, &mut |k, v| {
                go_on()?;
                let (prefix, member) = split_index_key(k)?;
                keep(prefix, member, u64_value(v, "index")?);
                Ok(())
            })
        },
    )
}

/// Marks whether the projections on disk are complete (a rebuild clears them first).
const STATUS: &str = "projections";
/// Version 2 dropped the operator index; a store marked with another version is rebuilt.
const COMPLETE: &[u8] = b"complete v2";

/// The projections could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An entry does not decode or does not apply: the log breaks the rules.
    #[error("entry {position}: {message}")]
    Entry {
        /// Where.
        position: u64,
        /// What is wrong.
        message: String,
    },
}

impl<E: Into<RebuildError>> From<registry_core::lifecycle::ApplyError<E>> for RebuildError {
    fn from(e: registry_core::lifecycle::ApplyError<E>) -> Self {
        match e {
            registry_core::lifecycle::ApplyError::State(e) => e.into(),
            registry_core::lifecycle::ApplyError::Inconsistent { position, message } => {
                RebuildError::Entry { position, message }
            }
        }
    }
}

/// A state that cannot fail ([`registry_core::lifecycle::MemoryState`]'s) has no error to give.
impl From<std::convert::Infallible> for RebuildError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

/// Whether the projections on disk are complete for the log.
pub fn is_complete(store: &dyn LogStore) -> Result<bool, StoreError> {
    Ok(store.meta(STATUS)?.as_deref() == Some(COMPLETE) || store.size()? == 0)
}

/// Marks the projections complete (for a new, empty log).
pub fn mark_complete(store: &dyn LogStore) -> Result<(), StoreError> {
    store.write(crate::store::WriteBatch {
        meta: vec![(STATUS, COMPLETE.to_vec())],
        ..Default::default()
    })
}

/// Brings projections that reflect fewer entries than the log (a store that keeps them in
/// memory, restarted from its last snapshot) up to `size` with the same `apply` as the writer,
/// and records every key record it writes in `cache` and every identifier in `buckets` (the
/// store's, as loaded). Returns the number of entries replayed.
pub fn catch_up(
    store: &dyn LogStore,
    cache: Arc<KeyCache>,
    buckets: &mut MapBuckets,
    size: u64,
) -> Result<u64, RebuildError> {
    catch_up_holding(store, cache, buckets, size, CATCH_UP_HELD_RECORDS)
}

/// [`catch_up`], writing out whenever `held_records` records are pending (tests use a small
/// number, so that a short log also exercises the write-outs in the middle).
pub fn catch_up_holding(
    store: &dyn LogStore,
    cache: Arc<KeyCache>,
    buckets: &mut MapBuckets,
    size: u64,
    held_records: usize,
) -> Result<u64, RebuildError> {
    let from = store.projected_size()?;
    if from >= size {
        return Ok(0);
    }
    if from == 0 {
        // An older layout kept the request index beside the log; it is written again here.
        store.clear_projections(&[REQUESTS])?;
    }
    let started = std::time::Instant::now();
    replay(store, cache, buckets, from, size, held_records)?;
    tracing::info!(
        from,
        to = size,
        seconds = started.elapsed().as_secs_f64(),
        "projections caught up with the log"
    );
    Ok(size - from)
}

/// Applies entries `from..size` to the projections, writing them out every `held_records`
/// records and at the end, where the last write records that they reflect `size` entries.
fn replay(
    store: &dyn LogStore,
    cache: Arc<KeyCache>,
    buckets: &mut MapBuckets,
    from: u64,
    size: u64,
    held_records: usize,
) -> Result<(), RebuildError> {
    let mut view = View::new(store);
    let mut position = from;
    while position < size {
        let end = (position + rebuild::ENTRIES_PER_READ).min(size);
        for entry in rebuild::read_entries(store, position, end)? {
            let mut state = Projection::cached(&mut view, cache.clone()).with_buckets(buckets);
            registry_core::lifecycle::apply(&entry.header, &entry.body, &mut state)?;
            let (id, record) = request_of(&entry)?;
            let (keyspace, key, value) = crate::store::request_record(&id, &record);
            view.put(keyspace, key, value);
            if view.len() >= held_records {
                buckets.write_unwritten(&mut view);
                let writes = std::mem::replace(&mut view, View::new(store)).into_writes_iter();
                crate::store::write_in_batches(store, writes, None)?;
                tracing::info!(entries = entry.header.position + 1, "replay: projections written");
            }
        }
        position = end;
    }
    buckets.write_unwritten(&mut view);
    crate::store::write_in_batches(store, view.into_writes_iter(), Some(size))?;
    tracing::info!(entries = size, "replay: projections written");
    Ok(())
}

/// The request index's record for `entry`, as the writer kept it when it appended the entry.
fn request_of(entry: &Entry) -> Result<(uuid::Uuid, RequestRecord), RebuildError> {
    let position = entry.header.position;
    let digest = registry_core::replay::request_digest(&entry.body).ok_or_else(|| {
        RebuildError::Entry { position, message: "a registry entry of no known action".into() }
    })?;
    Ok((entry.body.request_id, RequestRecord { position, digest }))
}

/// Records a catch-up holds before it writes them out: a bound on its pending writes.
const CATCH_UP_HELD_RECORDS: usize = 2_000_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn an_identifier_is_found_under_its_own_value_whatever_its_length() {
        let store = MemoryStore::new();
        let mut view = View::new(&store);
        let mut state = Projection::new(&mut view);
        // Around the length where the prefix stops fitting on the stack.
        let lengths = [1usize, 61, 62, 63, 64, 200];
        let value = |n: usize| "E".repeat(n);
        for (i, n) in lengths.into_iter().enumerate() {
            let fingerprint = format!("{i:02x}").repeat(32);
            state
                .add_to_index(IdentifierKind::Evse, &value(n), &fingerprint, i as u64)
                .expect("indexes");
        }
        for (i, n) in lengths.into_iter().enumerate() {
            let group = state.indexed(IdentifierKind::Evse, &value(n)).expect("reads");
            let member = index_member(&format!("{i:02x}").repeat(32)).expect("hex");
            assert_eq!(&group[..], &[(member, i as u64)], "the value of {n} bytes");
            assert!(
                state.indexed(IdentifierKind::MeterSerial, &value(n)).expect("reads").is_empty(),
                "another kind of identifier with the same value of {n} bytes"
            );
        }
        assert!(state.indexed(IdentifierKind::Evse, &value(65)).expect("reads").is_empty());
    }

    #[test]
    fn index_keys_hold_members_as_bytes_and_older_hex_keys_still_read() {
        let member = [0u8; 32]; // zeros, which the separator also is
        let prefix = index_prefix(IdentifierKind::Evse, "DE*ABC*E1");
        let key = index_key(&prefix, &member);
        assert_eq!(key.len(), prefix.len() + 32);
        assert_eq!(split_index_key(&key).unwrap(), (&prefix[..], member));
        let member = [0xab; 32];
        let older = [&prefix[..], "ab".repeat(32).as_bytes()].concat();
        assert_eq!(split_index_key(&older).unwrap(), (&prefix[..], member));
        assert_eq!(index_key_member(&older[prefix.len()..]).unwrap(), member);
        assert!(split_index_key(&[&prefix[..], b"short"].concat()).is_err());
    }

    #[test]
    fn a_key_record_is_stored_without_the_fingerprint_its_key_holds() {
        let fingerprint = "ab".repeat(32);
        let record = crate::key_cache::tests::record(&fingerprint, 2);
        let (key, stored) = encode_key(&record);
        assert_eq!(key, fingerprint.as_bytes());
        let whole = encode(&record);
        assert_eq!(stored.len(), whole.len() - 64, "the fingerprint and its length, for a mark");
        assert!(!stored.windows(64).any(|w| w == fingerprint.as_bytes()));
        assert_eq!(decode_key(&key, &stored).unwrap(), record);
        // A record stored whole, as earlier versions did, reads as it was.
        assert_eq!(decode_key(&key, &whole).unwrap(), record);
        // Through the projection, which puts and gets it.
        let store = MemoryStore::new();
        let mut view = View::new(&store);
        let mut state = Projection::new(&mut view);
        state.put_key(record.clone()).unwrap();
        assert_eq!(state.stored_key(&fingerprint).unwrap(), Some(record));
    }
}
