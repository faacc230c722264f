//! The full rebuild: every projection derived again from entry 0.
//!
//! The writer keeps projections as encoded records behind an overlay because it must read them
//! back between commands and write each batch atomically. A rebuild needs neither, so it folds
//! the log into the typed reference state ([`MemoryState`], the one the property tests hold the
//! projections to) and encodes every record once, at the end, in key order. Entries are read
//! and decoded on a second thread while this one applies them. Written record by record, a key
//! was encoded, copied and re-sorted once per event about it, and that was most of the time.
//!
//! What it promises: the records written equal, byte for byte, those the writer's
//! [`super::Projection`] would have written for the same log (`tests/projection_properties.rs`
//! checks it against live projections).

use registry_proto::entry::Entry;
use registry_proto::lifecycle::{self, MemoryState};

use super::{
    ADMINS, COMPLETE, INDEX, KEYS, KEYSPACES, OPERATORS, PENDING, RebuildError, SIGNERS, STATUS,
    encode, index_prefix,
};
use crate::map::MapBuckets;
use crate::store::{LogStore, ProjectionRecord, WriteBatch};

/// Entries the reading thread decodes before it hands them over.
const ENTRIES_PER_READ: u64 = 4_096;

/// Decoded chunks in flight between the threads: enough to keep both busy, few enough that
/// the reader never runs far ahead in memory.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Drops every projection and derives them again from the log with the same `apply` the
/// writer uses. Returns the number of entries replayed. The store must not be in use by a
/// running log.
pub fn rebuild(store: &dyn LogStore) -> Result<u64, RebuildError> {
    store
        .write(WriteBatch { meta: vec![(STATUS, b"rebuilding".to_vec())], ..Default::default() })?;
    store.sync()?;
    let started = std::time::Instant::now();
    store.clear_projections(KEYSPACES)?;
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "rebuild: old projections dropped");
    let size = store.size()?;
    let started = std::time::Instant::now();
    let state = derive(store, size)?;
    tracing::info!(
        entries = size,
        seconds = started.elapsed().as_secs_f64(),
        "rebuild: log replayed"
    );
    let started = std::time::Instant::now();
    store.load_projections(&mut records(state), size)?;
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "rebuild: projections written");
    // Persisted before they are marked complete: a stop in between rebuilds again.
    store.sync()?;
    store.persist_projections()?;
    store.write(WriteBatch { meta: vec![(STATUS, COMPLETE.to_vec())], ..Default::default() })?;
    store.sync()?;
    Ok(size)
}

/// Folds entries `0..size` into the reference state: a scoped thread reads and decodes chunks
/// of entries, this one applies them in order.
fn derive(store: &dyn LogStore, size: u64) -> Result<MemoryState, RebuildError> {
    let (chunks, decoded) = std::sync::mpsc::sync_channel(CHUNKS_IN_FLIGHT);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut position = 0;
            while position < size {
                let end = (position + ENTRIES_PER_READ).min(size);
                let chunk = read_chunk(store, position, end);
                let failed = chunk.is_err();
                // A closed channel means the applying side failed and has its error already.
                if chunks.send(chunk).is_err() || failed {
                    return;
                }
                position = end;
            }
        });
        let mut state = MemoryState::default();
        // The reader sends chunks in order and stops after the first error, so the loop ends
        // either at the first error or after entry size - 1.
        for chunk in decoded {
            for entry in chunk? {
                lifecycle::apply(&entry.header, &entry.body, &mut state).map_err(|e| match e {
                    lifecycle::ApplyError::State(never) => match never {},
                    lifecycle::ApplyError::Inconsistent { position, message } => {
                        RebuildError::Entry { position, message }
                    }
                })?;
            }
        }
        Ok(state)
    })
}

/// Entries `start..end`, decoded; an error if one is missing or does not decode.
fn read_chunk(store: &dyn LogStore, start: u64, end: u64) -> Result<Vec<Entry>, RebuildError> {
    let stored = store.entries(start, end)?;
    let mut entries = Vec::with_capacity(stored.len());
    for (expected, (p, bytes)) in (start..).zip(stored) {
        if p != expected {
            return Err(RebuildError::Entry {
                position: expected,
                message: format!("the log has a gap: the next stored entry is {p}"),
            });
        }
        let entry = Entry::decode(&bytes)
            .map_err(|e| RebuildError::Entry { position: p, message: e.to_string() })?;
        entries.push(entry);
    }
    let read = start + entries.len() as u64;
    if read < end {
        return Err(RebuildError::Entry {
            position: read,
            message: format!("the log ends early: entries up to {end} expected"),
        });
    }
    Ok(entries)
}

/// `state` as the records [`super::Projection`] keeps, in the order
/// [`LogStore::load_projections`] takes them: by keyspace, then by key. Each is encoded when
/// it is taken, so only one keyspace at a time is held twice.
fn records(state: MemoryState) -> impl Iterator<Item = ProjectionRecord> {
    let MemoryState { keys, index, operators, signers, admins, latest, pending } = state;
    // Only an applied admin event writes the admins record, and after the first one an active
    // admin always remains (the last one cannot be revoked), so it exists iff one is active.
    let admins = (!admins.is_empty()).then(|| (ADMINS, b"admins".to_vec(), encode(&admins)));
    // The rest are built on first use, each after the keyspace before it is written.
    let index = lazy(move || {
        let mut entries: Vec<(Vec<u8>, u64)> = index
            .into_iter()
            .flat_map(|((kind, value), members)| {
                let prefix = index_prefix(kind, &value);
                members.into_iter().map(move |(fingerprint, position)| {
                    let mut key = prefix.clone();
                    key.extend_from_slice(fingerprint.as_bytes());
                    (key, position)
                })
            })
            .collect();
        entries.sort_unstable();
        entries.into_iter().map(|(key, position)| (INDEX, key, position.to_be_bytes().to_vec()))
    });
    let keys = lazy(move || {
        let mut keys: Vec<_> = keys.into_iter().collect();
        keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        keys.into_iter()
            .map(|(fingerprint, record)| (KEYS, fingerprint.into_bytes(), encode(&record)))
    });
    let map = lazy(move || {
        MapBuckets::from_latest(latest).into_records().map(|(k, v)| (crate::map::MAP, k, v))
    });
    let operators = operators
        .into_iter()
        .map(|(id, record)| (OPERATORS, id.as_str().as_bytes().to_vec(), encode(&record)));
    let pending = pending.into_iter().map(|(fingerprint, registration)| {
        (PENDING, fingerprint.into_bytes(), registration.to_be_bytes().to_vec())
    });
    let signers =
        signers.into_iter().map(|(key_id, record)| (SIGNERS, key_id.to_vec(), encode(&record)));
    admins
        .into_iter()
        .chain(index)
        .chain(keys)
        .chain(map)
        .chain(operators)
        .chain(pending)
        .chain(signers)
}

/// An iterator made by `make` when it is first asked for an item.
fn lazy<I: Iterator>(make: impl FnOnce() -> I) -> impl Iterator<Item = I::Item> {
    std::iter::once(make).flat_map(|make| make())
}
