//! The full rebuild: every projection derived again from entry 0.
//!
//! The writer keeps projections as encoded records behind an overlay because it must read them
//! back between commands and write each batch atomically. A rebuild needs neither, so it folds
//! the log into the typed reference state ([`MemoryState`], the one the property tests hold the
//! projections to) and encodes every record once, at the end, in key order. Written record by
//! record, a key was encoded, copied and re-sorted once per event about it, and that was most
//! of the time. Only the fold is one thread's work: entries are read and decoded by one reader
//! per core, and the encoding is spread over every core too.
//!
//! What it promises: the records written equal, byte for byte, those the writer's
//! [`super::Projection`] would have written for the same log (`tests/projection_properties.rs`
//! checks it against live projections).

use registry_core::entry::Entry;
use registry_core::event::IdentifierKind;
use registry_core::lifecycle::{self, Members, MemoryState};

use super::{
    ADMINS, COMPLETE, INDEX, KEYS, KEYSPACES, OPERATORS, PENDING, RebuildError, SIGNERS, STATUS,
    encode, encode_key, index_key, index_prefix, request_of,
};
use crate::store::{
    LogStore, ProjectionRecord, RequestRecord, StoreError, WriteBatch, request_record,
};

/// The request index as a rebuild collects it: one record per entry.
type Requests = Vec<(uuid::Uuid, RequestRecord)>;

/// An entry as a reader hands it over: decoded, with its request index record (or why it has
/// none), which the applying side reports only after the entries before it applied.
type Decoded = (Entry, Result<(uuid::Uuid, RequestRecord), RebuildError>);

/// Entries read and decoded at a time (by each of the rebuild's readers, and by a catch-up).
pub(super) const ENTRIES_PER_READ: u64 = 4_096;

/// Records a thread encodes at a time when a keyspace is spread over every core: large enough
/// that starting the threads costs nothing, small enough that a window's records are little
/// memory.
const WINDOW: usize = 1 << 16;

/// Decoded chunks in flight from the readers together: enough to keep every thread busy, few
/// enough that the readers never run far ahead in memory.
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
    let (state, requests) = derive(store, size)?;
    tracing::info!(
        entries = size,
        seconds = started.elapsed().as_secs_f64(),
        "rebuild: log replayed"
    );
    let started = std::time::Instant::now();
    std::thread::scope(|scope| store.load_projections(&mut records(scope, state, requests), size))?;
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "rebuild: projections written");
    // Persisted before they are marked complete: a stop in between rebuilds again.
    store.sync()?;
    store.persist_projections()?;
    store.write(WriteBatch { meta: vec![(STATUS, COMPLETE.to_vec())], ..Default::default() })?;
    store.sync()?;
    Ok(size)
}

/// Folds entries `0..size` into the reference state and collects their request IDs: scoped
/// threads read and decode chunks of entries (one reader could not keep up with the applying
/// thread), this one applies them in order.
fn derive(store: &dyn LogStore, size: u64) -> Result<(MemoryState, Requests), RebuildError> {
    let readers = crate::cores::count() as u64;
    std::thread::scope(|scope| {
        let mut decoded = Vec::new();
        let mut spawned = Vec::new();
        for first in 0..readers {
            // Each reader takes every `readers`-th chunk, so the applying side takes one chunk
            // from each in turn.
            let (chunks, from_reader) =
                std::sync::mpsc::sync_channel(CHUNKS_IN_FLIGHT.div_ceil(readers as usize));
            decoded.push(from_reader);
            let reader = std::thread::Builder::new()
                .name("rebuild-read".into())
                .spawn_scoped(scope, move || {
                    let mut position = first * ENTRIES_PER_READ;
                    while position < size {
                        let end = (position + ENTRIES_PER_READ).min(size);
                        let chunk = read_entries(store, position, end).map(|entries| {
                            // The request record hashes the command: work for this thread.
                            entries
                                .into_iter()
                                .map(|entry| {
                                    let request = request_of(&entry);
                                    (entry, request)
                                })
                                .collect()
                        });
                        let failed = chunk.is_err();
                        // A closed channel means the applying side failed and has its error.
                        if chunks.send(chunk).is_err() || failed {
                            return;
                        }
                        position += readers * ENTRIES_PER_READ;
                    }
                })
                .map_err(|e| StoreError::Io(format!("starting the rebuild's reader: {e}")))?;
            spawned.push(reader);
        }
        // Takes the receivers, so an error here closes the channels and readers waiting to
        // send wake up and end.
        let applied = apply_all(decoded, size);
        for reader in spawned {
            if reader.join().is_err() {
                return Err(StoreError::Io("the rebuild's reader panicked".into()).into());
            }
        }
        let (state, requests) = applied?;
        let count = requests.len() as u64;
        if count != size {
            return Err(RebuildError::Entry {
                position: count,
                message: format!("the log ends early: {size} entries expected"),
            });
        }
        Ok((state, requests))
    })
}

/// Applies the chunks in the order of the log, taking one from each reader in turn; the state
/// and the request ID of each entry applied. Each reader sends its chunks in order and stops
/// after its first error, so that error comes after every entry before it.
fn apply_all(
    decoded: Vec<std::sync::mpsc::Receiver<Result<Vec<Decoded>, RebuildError>>>,
    size: u64,
) -> Result<(MemoryState, Requests), RebuildError> {
    let mut state = MemoryState::default();
    // Sized for a fleet's log (a registration and its confirmation per key, each key under two
    // identifiers besides its own) instead of growing there: re-hashing the growing maps was a
    // fifth of the replay.
    // (At most 2^27: a size read from a damaged store must not ask for all memory at once.)
    let entries = usize::try_from(size.min(1 << 27)).unwrap_or(1 << 27);
    state.keys.reserve(entries / 2);
    state.index.reserve(entries);
    state.latest.reserve(entries / 2 * 3);
    let mut requests = Vec::with_capacity(entries);
    // The first reader that has nothing more to send ends the log: the chunks after it are
    // the next readers' to send, and they stop at the same size.
    for chunk in decoded.iter().cycle().map_while(|reader| reader.recv().ok()) {
        for (entry, request) in chunk? {
            lifecycle::apply(&entry.header, &entry.body, &mut state)?;
            requests.push(request?);
        }
    }
    Ok((state, requests))
}

/// Entries `start..end`, decoded; an error names the first one that is missing, does not
/// decode or claims another position.
pub(super) fn read_entries(
    store: &dyn LogStore,
    start: u64,
    end: u64,
) -> Result<Vec<Entry>, RebuildError> {
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
        if entry.header.position != p {
            return Err(RebuildError::Entry {
                position: p,
                message: format!("the entry claims position {}", entry.header.position),
            });
        }
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
/// [`LogStore::load_projections`] takes them: by keyspace, then by key. Each keyspace is
/// encoded when it is taken, so only it and the map's records are held twice. The work is
/// spread over every core: the map's buckets and the sort of the request IDs run on threads of
/// `scope` while the index and key records are written, and those are built a window at a time
/// on every core.
fn records<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    state: MemoryState,
    requests: Requests,
) -> impl Iterator<Item = ProjectionRecord> + 'scope {
    let MemoryState { keys, index, operators, signers, admins, latest, pending } = state;
    let map = scope.spawn(move || crate::map::records_of(latest).collect());
    let requests = scope.spawn(move || {
        let mut requests = requests;
        requests.sort_unstable_by_key(|(id, _)| *id);
        requests
    });
    // Like the writer's, the admins record exists once an admin event set it, even if empty.
    let admins = admins.map(|admins| (ADMINS, b"admins".to_vec(), encode(&admins)));
    // The rest are built on first use, each after the keyspace before it is written.
    let index = lazy(move || {
        let identifiers: Vec<_> = index.into_iter().collect();
        let windows: Vec<_> = identifiers.chunks(WINDOW).collect();
        let mut entries: Vec<(Vec<u8>, u64)> =
            crate::cores::map_in_order(&windows, |window| index_entries(window))
                .into_iter()
                .flatten()
                .collect();
        entries.sort_unstable();
        entries.into_iter().map(|(key, position)| (INDEX, key, position.to_be_bytes().to_vec()))
    });
    let keys = lazy(move || {
        let mut keys: Vec<_> = keys.into_iter().collect();
        keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let windows = keys.len().div_ceil(WINDOW);
        (0..windows).flat_map(move |w| {
            let window = &keys[w * WINDOW..((w + 1) * WINDOW).min(keys.len())];
            crate::cores::map_in_order(window, |(_, record)| {
                let (key, value) = encode_key(record);
                (KEYS, key, value)
            })
        })
    });
    let map = lazy(move || {
        let map: Vec<(Vec<u8>, Vec<u8>)> = join(map);
        map.into_iter().map(|(k, v)| (crate::map::MAP, k, v))
    });
    let operators = operators
        .into_iter()
        .map(|(id, record)| (OPERATORS, id.as_str().as_bytes().to_vec(), encode(&record)));
    let pending = pending.into_iter().map(|(fingerprint, registration)| {
        (PENDING, fingerprint.into_bytes(), registration.to_be_bytes().to_vec())
    });
    let requests = lazy(move || join(requests).into_iter().map(|(id, r)| request_record(&id, &r)));
    let signers =
        signers.into_iter().map(|(key_id, record)| (SIGNERS, key_id.to_vec(), encode(&record)));
    admins
        .into_iter()
        .chain(index)
        .chain(keys)
        .chain(map)
        .chain(operators)
        .chain(pending)
        .chain(requests)
        .chain(signers)
}

/// The index records of `identifiers`: each member's key and the position it joined at.
fn index_entries(identifiers: &[((IdentifierKind, String), Members)]) -> Vec<(Vec<u8>, u64)> {
    identifiers
        .iter()
        .flat_map(|((kind, value), members)| {
            let prefix = index_prefix(*kind, value);
            members.iter().map(move |(fingerprint, position)| {
                let key = match lifecycle::fingerprint_bytes(fingerprint) {
                    Some(member) => index_key(&prefix, &member),
                    // Not one the registry writes: kept as it is, which reads alike.
                    None => [&prefix[..], fingerprint.as_bytes()].concat(),
                };
                (key, position)
            })
        })
        .collect()
}

/// What a thread of the scope returned; its panic goes on in the caller.
fn join<T>(thread: std::thread::ScopedJoinHandle<'_, T>) -> T {
    thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// An iterator made by `make` when it is first asked for an item.
fn lazy<I: Iterator>(make: impl FnOnce() -> I) -> impl Iterator<Item = I::Item> {
    std::iter::once(make).flat_map(|make| make())
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use registry_core::entry::{EntryHeader, encode_entry};
    use registry_core::event::Event;

    use super::*;
    use crate::store::memory::MemoryStore;

    /// A stored entry with `events` and nothing else (the store checks no chain).
    fn entry(position: u64, events: &[Event]) -> (u64, Vec<u8>) {
        let header = EntryHeader {
            position,
            recorded_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("valid time"),
            prev_hash: [0; 32],
        };
        // A command (never checked here) gives the entry its request index record.
        let command = registry_proto::pb::SignedCommand {
            command: position.to_be_bytes().to_vec(),
            signer_key_id: vec![7; 32],
            signature: vec![1],
            registry: String::new(),
        };
        let body = registry_proto::pb::LogEntry {
            request_id: uuid::Uuid::new_v4().to_string(),
            command: Some(command),
            events: events.iter().map(registry_proto::pb::Event::from).collect(),
            ..Default::default()
        };
        (position, encode_entry(&header, &body.encode_to_vec()))
    }

    /// A log of `size` empty entries, with `change` applied to the list first.
    fn log(size: u64, change: impl FnOnce(&mut Vec<(u64, Vec<u8>)>)) -> MemoryStore {
        let mut entries: Vec<_> = (0..size).map(|p| entry(p, &[])).collect();
        change(&mut entries);
        let store = MemoryStore::new();
        store.write(WriteBatch { entries, ..Default::default() }).expect("memory write");
        store
    }

    /// Far more entries than the readers may have in flight, so they are blocked when the
    /// applying side stops.
    const LONG: u64 = (CHUNKS_IN_FLIGHT as u64 + 3) * ENTRIES_PER_READ;

    fn failure(store: &MemoryStore) -> (u64, String) {
        match derive(store, store.size().expect("memory size")) {
            Err(RebuildError::Entry { position, message }) => (position, message),
            other => panic!("expected an entry error, got {:?}", other.map(|_| "a state")),
        }
    }

    #[test]
    fn a_long_log_of_empty_entries_folds_into_an_empty_state() {
        let store = log(LONG, |_| {});
        let (state, requests) = derive(&store, LONG).expect("derives");
        assert_eq!(state, MemoryState::default());
        let positions: Vec<u64> = requests.iter().map(|(_, r)| r.position).collect();
        assert_eq!(positions, (0..LONG).collect::<Vec<_>>(), "one request record per entry");
    }

    #[test]
    fn an_entry_that_does_not_decode_is_named_by_its_position() {
        let bad = LONG - 10;
        let store = log(LONG, |e| e[bad as usize].1 = b"not an entry".to_vec());
        assert_eq!(failure(&store).0, bad);
    }

    #[test]
    fn an_event_that_does_not_apply_stops_the_rebuild_while_the_reader_waits() {
        let confirm = Event::KeyConfirmed {
            fingerprint: "ab".repeat(32),
            registration_position: 0,
            published_in_tree_size: 1,
        };
        let store = log(LONG, |e| e[3] = entry(3, &[confirm]));
        let (position, message) = failure(&store);
        assert_eq!(position, 3);
        assert!(message.contains("unregistered key"), "{message}");
    }

    #[test]
    fn a_gap_and_a_wrong_position_are_named() {
        let store = log(20, |e| {
            e.remove(11);
        });
        let (position, message) = failure(&store);
        assert_eq!(position, 11);
        assert!(message.contains("gap"), "{message}");
        let store = log(20, |e| e[7].1 = entry(8, &[]).1);
        let (position, message) = failure(&store);
        assert_eq!(position, 7);
        assert!(message.contains("claims position 8"), "{message}");
    }
}
