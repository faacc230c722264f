//! The conformance suite every [`LogStore`] must pass.
//!
//! It checks the store's own promises (reads return what was written, batches are atomic and
//! ordered, prefix scans respect their bounds) and then drives the real log writer on top of it:
//! gap-free positions, a verifying chain and tree, idempotent appends, and all of that again
//! after closing and re-opening the store.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use registry_core::entry::ChainVerifier;
use registry_core::keys::P256KeyPair;
use registry_core::merkle::{self, MemoryTree, PerfectNode};
use registry_core::note::NoteSigner;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::layered::LayeredStore;
use super::memory::MemoryStore;
use super::sled::{SledOptions, SledStore};
use super::{
    Keyspace, LOAD_BATCH, LogStore, ProjectionWrite, RequestRecord, StoreError, WriteBatch,
};
use crate::log::{AppendError, Log, LogOptions, OpenError, RawBodies, system_clock};

/// Opens stores by name; opening a name again after every handle to it is dropped re-opens the
/// same data, as a restart would.
pub(crate) trait Factory {
    fn open(&mut self, name: &str) -> Arc<dyn LogStore>;
}

#[derive(Default)]
pub(crate) struct MemoryFactory {
    stores: HashMap<String, MemoryStore>,
}

impl Factory for MemoryFactory {
    fn open(&mut self, name: &str) -> Arc<dyn LogStore> {
        Arc::new(self.stores.entry(name.to_string()).or_default().reopen())
    }
}

pub(crate) struct SledFactory {
    dir: tempfile::TempDir,
}

impl SledFactory {
    pub(crate) fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("temporary directory") }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Factory for SledFactory {
    fn open(&mut self, name: &str) -> Arc<dyn LogStore> {
        Arc::new(SledStore::open(&self.path(name), &SledOptions::default()).expect("open sled"))
    }
}

/// Layered stores (projections in memory, snapshots in a temporary directory) over memory
/// stores; a cut happens after every few records, so the suite runs across snapshots.
pub(crate) struct LayeredFactory {
    inner: MemoryFactory,
    dir: tempfile::TempDir,
}

impl LayeredFactory {
    pub(crate) fn new() -> Self {
        Self {
            inner: MemoryFactory::default(),
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }
}

impl Factory for LayeredFactory {
    fn open(&mut self, name: &str) -> Arc<dyn LogStore> {
        let inner = self.inner.open(name);
        let path = self.dir.path().join(format!("{name}.snap"));
        Arc::new(LayeredStore::open(inner, &path, 2).expect("open layered store"))
    }
}

pub(crate) fn run_all(f: &mut dyn Factory) {
    an_empty_store_has_nothing(f);
    a_batch_reads_back_as_written(f);
    request_ids_are_the_records_of_the_requests_keyspace(f);
    a_staged_batch_is_read_back_by_the_writer_at_once_and_whole_once_applied(f);
    prefix_scans_stay_inside_their_prefix(f);
    a_projection_walk_sees_exactly_its_keyspace_in_order(f);
    cleared_projections_take_a_rebuilds_records_and_keep_them_after_reopen(f);
    appends_get_gap_free_positions_and_a_verifying_tree(f);
    a_retry_with_the_same_request_id_returns_the_original_position(f);
    idempotency_holds_across_close_and_reopen(f);
    a_reopened_log_continues_the_chain(f);
    a_tampered_entry_stops_the_log_from_opening(f);
    sealed_entries_read_back_as_written_and_the_log_still_verifies(f);
}

fn signer() -> NoteSigner {
    NoteSigner::new("conformance.test/log", P256KeyPair::generate()).expect("valid name")
}

fn open_log(store: Arc<dyn LogStore>) -> Result<Log<RawBodies>, OpenError> {
    Log::open(store, RawBodies, signer(), LogOptions::default(), system_clock())
}

fn digest(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// A body is any run of encoded `LogEntry` fields; field 4 (request ID) is enough.
fn body(request_id: Uuid) -> Vec<u8> {
    use prost::Message;
    registry_proto::pb::LogEntry { request_id: request_id.to_string(), ..Default::default() }
        .encode_to_vec()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn append_all(log: &Log<RawBodies>, ids: &[Uuid]) -> Vec<u64> {
    let appender = log.appender();
    runtime().block_on(async {
        let mut tasks = Vec::new();
        for id in ids {
            let a = appender.clone();
            let b = body(*id);
            let id = *id;
            tasks.push(tokio::spawn(async move { a.append(id, digest(&b), b).await }));
        }
        let mut positions = Vec::new();
        for t in tasks {
            positions.push(t.await.expect("task").expect("append").position);
        }
        positions
    })
}

fn an_empty_store_has_nothing(f: &mut dyn Factory) {
    let s = f.open("empty");
    assert_eq!(s.size().unwrap(), 0);
    assert_eq!(s.entry(0).unwrap(), None);
    assert!(s.entries(0, 10).unwrap().is_empty());
    assert_eq!(s.node(0, 0).unwrap(), None);
    assert_eq!(s.request(&Uuid::new_v4()).unwrap(), None);
    assert_eq!(s.meta("anything").unwrap(), None);
    assert_eq!(s.get(Keyspace("k"), b"x").unwrap(), None);
}

/// A replay and a rebuild write the request index as projection records, the writer as
/// request IDs of its batch: both must be the same records.
fn request_ids_are_the_records_of_the_requests_keyspace(f: &mut dyn Factory) {
    let s = f.open("requests");
    let (written, projected) = (Uuid::new_v4(), Uuid::new_v4());
    let first = RequestRecord { position: 0, digest: [1u8; 32] };
    let second = RequestRecord { position: 1, digest: [2u8; 32] };
    s.write(WriteBatch {
        entries: vec![(0, b"zero".to_vec()), (1, b"one".to_vec())],
        requests: vec![(written, first)],
        projections: vec![super::request_write(&projected, &second)],
        projected_size: Some(2),
        ..Default::default()
    })
    .unwrap();
    s.sync().unwrap();
    let stored = s.get(super::REQUESTS, written.as_bytes()).unwrap();
    assert_eq!(stored, Some(super::encode_request(&first).to_vec()));
    assert_eq!(s.request(&projected).unwrap(), Some(second));
    s.clear_projections(&[super::REQUESTS]).unwrap();
    assert_eq!(s.request(&written).unwrap(), None);
    assert_eq!(s.request(&projected).unwrap(), None);
}

/// A batch of every kind of record: entries 0 and 1 with a node, `id`'s request record, a
/// projection record `k`/`a` = `1` and metadata `m` = `v`.
fn two_entries(id: Uuid, record: RequestRecord) -> WriteBatch {
    WriteBatch {
        entries: vec![(0, b"zero".to_vec()), (1, b"one".to_vec())],
        nodes: vec![PerfectNode { level: 1, index: 0, hash: [3u8; 32] }],
        requests: vec![(id, record)],
        projections: vec![ProjectionWrite {
            keyspace: Keyspace("k"),
            key: b"a".to_vec(),
            value: Some(b"1".to_vec()),
        }],
        meta: vec![("m", b"v".to_vec())],
        projected_size: Some(2),
        held_back: false,
    }
}

/// The writer stages a batch and reads its projections and request IDs back for the next one
/// while the syncer applies the rest; after that it is an ordinary write.
fn a_staged_batch_is_read_back_by_the_writer_at_once_and_whole_once_applied(f: &mut dyn Factory) {
    let s = f.open("staged");
    let id = Uuid::new_v4();
    let record = RequestRecord { position: 1, digest: [4u8; 32] };
    let staged = s.stage(two_entries(id, record)).unwrap();
    assert_eq!(s.size().unwrap(), 2, "the staged entries count");
    assert_eq!(s.request(&id).unwrap(), Some(record));
    assert_eq!(s.get(Keyspace("k"), b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(s.projected_size().unwrap(), 2);
    s.apply_staged(staged).unwrap();
    s.sync().unwrap();
    assert_eq!(s.entries(0, 10).unwrap(), vec![(0, b"zero".to_vec()), (1, b"one".to_vec())]);
    assert_eq!(s.node(1, 0).unwrap(), Some([3u8; 32]));
    assert_eq!(s.meta("m").unwrap(), Some(b"v".to_vec()));
    // The next batch continues it.
    let next = s
        .stage(WriteBatch {
            entries: vec![(2, b"two".to_vec())],
            projected_size: Some(3),
            ..Default::default()
        })
        .unwrap();
    s.apply_staged(next).unwrap();
    assert_eq!(s.entry(2).unwrap(), Some(b"two".to_vec()));
}

fn a_batch_reads_back_as_written(f: &mut dyn Factory) {
    let s = f.open("readback");
    let id = Uuid::new_v4();
    let record = RequestRecord { position: 1, digest: [5u8; 32] };
    s.write(two_entries(id, record)).unwrap();
    s.sync().unwrap();
    assert_eq!(s.size().unwrap(), 2);
    assert_eq!(s.projected_size().unwrap(), 2);
    assert_eq!(s.entry(1).unwrap(), Some(b"one".to_vec()));
    assert_eq!(s.entries(0, 100).unwrap(), vec![(0, b"zero".to_vec()), (1, b"one".to_vec())]);
    assert_eq!(s.entries(1, 2).unwrap(), vec![(1, b"one".to_vec())]);
    assert_eq!(s.node(1, 0).unwrap(), Some([3u8; 32]));
    assert_eq!(s.request(&id).unwrap(), Some(record));
    assert_eq!(s.meta("m").unwrap(), Some(b"v".to_vec()));
    assert_eq!(s.get(Keyspace("k"), b"a").unwrap(), Some(b"1".to_vec()));
    // Deleting a projection record.
    s.write(WriteBatch {
        projections: vec![ProjectionWrite {
            keyspace: Keyspace("k"),
            key: b"a".to_vec(),
            value: None,
        }],
        projected_size: Some(2),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.get(Keyspace("k"), b"a").unwrap(), None);
    // The same key in another keyspace is another record.
    assert_eq!(s.get(Keyspace("other"), b"a").unwrap(), None);
}

fn prefix_scans_stay_inside_their_prefix(f: &mut dyn Factory) {
    let s = f.open("prefix");
    let put = |k: &[u8]| ProjectionWrite {
        keyspace: Keyspace("p"),
        key: k.to_vec(),
        value: Some(k.to_vec()),
    };
    s.write(WriteBatch {
        projections: vec![put(b"ab\x00"), put(b"ab\xff"), put(b"aa"), put(b"ac"), put(b"ab")],
        projected_size: Some(0),
        ..Default::default()
    })
    .unwrap();
    let keys: Vec<Vec<u8>> =
        s.scan_prefix(Keyspace("p"), b"ab").unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec![b"ab".to_vec(), b"ab\x00".to_vec(), b"ab\xff".to_vec()]);
    assert!(s.scan_prefix(Keyspace("q"), b"ab").unwrap().is_empty());
}

fn a_projection_walk_sees_exactly_its_keyspace_in_order(f: &mut dyn Factory) {
    let s = f.open("walk");
    let put = |ks: &'static str, k: &[u8]| ProjectionWrite {
        keyspace: Keyspace(ks),
        key: k.to_vec(),
        value: Some([k, b"!"].concat()),
    };
    s.write(WriteBatch {
        projections: vec![put("p", b"b"), put("pq", b"x"), put("p", b"a\xff"), put("o", b"c")],
        projected_size: Some(0),
        ..Default::default()
    })
    .unwrap();
    let mut seen = Vec::new();
    s.for_each(Keyspace("p"), &mut |k, v| {
        seen.push((k.to_vec(), v.to_vec()));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        seen,
        vec![(b"a\xff".to_vec(), b"a\xff!".to_vec()), (b"b".to_vec(), b"b!".to_vec())]
    );
    // An error from the visitor stops the walk and comes back.
    let mut calls = 0;
    let stopped = s.for_each(Keyspace("p"), &mut |_, _| {
        calls += 1;
        Err(StoreError::Corrupt("stop".into()))
    });
    assert!(matches!(stopped, Err(StoreError::Corrupt(m)) if m == "stop"));
    assert_eq!(calls, 1);
}

fn cleared_projections_take_a_rebuilds_records_and_keep_them_after_reopen(f: &mut dyn Factory) {
    let walk = |s: &dyn LogStore, ks: &'static str| {
        let mut seen = Vec::new();
        s.for_each(Keyspace(ks), &mut |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        seen
    };
    let put = |ks: &'static str, k: &[u8]| ProjectionWrite {
        keyspace: Keyspace(ks),
        key: k.to_vec(),
        value: Some(b"old".to_vec()),
    };
    // More than one batch of the default way, then a second keyspace.
    let loaded: Vec<(Vec<u8>, Vec<u8>)> = (0..LOAD_BATCH as u32 + 7)
        .map(|i| (i.to_be_bytes().to_vec(), i.to_string().into_bytes()))
        .collect();
    let records = || {
        let p = loaded.iter().map(|(k, v)| (Keyspace("p"), k.clone(), v.clone()));
        p.chain(std::iter::once((Keyspace("q"), b"z".to_vec(), b"last".to_vec())))
    };
    // Everything cleared (a rebuild), and a clear that keeps another keyspace.
    for (name, kept) in [("load", None), ("load-kept", Some("kept"))] {
        let s = f.open(name);
        let mut old = vec![put("p", b"gone"), put("q", b"gone")];
        old.extend(kept.map(|ks| put(ks, b"stays")));
        s.write(WriteBatch { projections: old, projected_size: Some(0), ..Default::default() })
            .unwrap();
        s.sync().unwrap();
        s.clear_projections(&[Keyspace("p"), Keyspace("q")]).unwrap();
        s.load_projections(&mut records(), 0).unwrap();
        s.sync().unwrap();
        s.persist_projections().unwrap();
        assert_eq!(walk(s.as_ref(), "p"), loaded, "{name}: loaded records read back in order");
        drop(s);
        let s = f.open(name);
        assert_eq!(walk(s.as_ref(), "p"), loaded, "{name}: and survive a reopen");
        assert_eq!(walk(s.as_ref(), "q"), vec![(b"z".to_vec(), b"last".to_vec())]);
        if let Some(ks) = kept {
            assert_eq!(walk(s.as_ref(), ks), vec![(b"stays".to_vec(), b"old".to_vec())]);
        }
        assert_eq!(s.projected_size().unwrap(), 0);
    }
}

fn appends_get_gap_free_positions_and_a_verifying_tree(f: &mut dyn Factory) {
    let log = open_log(f.open("tree")).unwrap();
    let ids: Vec<Uuid> = (0..200).map(|_| Uuid::new_v4()).collect();
    let mut positions = append_all(&log, &ids);
    positions.sort_unstable();
    assert_eq!(positions, (0..200).collect::<Vec<_>>());

    let reader = log.reader();
    let head = reader.head();
    assert_eq!(head.size, 200);
    let mut chain = ChainVerifier::new();
    let mut tree = MemoryTree::default();
    for (pos, bytes) in reader.entries(0, 200, 1000).unwrap() {
        assert_eq!(pos, chain.next_position());
        tree.push(chain.push(&bytes).expect("chain verifies"));
    }
    assert_eq!(head.root, tree.mth(0, 200));
    drop(reader);
    // The running log answers from its in-memory tail; reopened, from the store alone.
    let log = {
        log.close().unwrap();
        open_log(f.open("tree")).unwrap()
    };
    let reader = log.reader();
    assert_eq!(reader.head().root, tree.mth(0, 200));
    for (index, size) in [(0, 1), (5, 17), (199, 200), (64, 65), (100, 128)] {
        let proof = reader.inclusion_proof(index, size).unwrap();
        let leaf = merkle::leaf_hash(&reader.entry(index).unwrap());
        merkle::verify_inclusion(index, size, &leaf, &proof, &tree.mth(0, size)).unwrap();
    }
    for (from, to) in [(1, 200), (7, 8), (64, 200), (100, 101), (200, 200)] {
        let proof = reader.consistency_proof(from, to).unwrap();
        merkle::verify_consistency(from, to, &tree.mth(0, from), &tree.mth(0, to), &proof).unwrap();
    }
    drop(reader);
    log.close().unwrap();
}

fn a_retry_with_the_same_request_id_returns_the_original_position(f: &mut dyn Factory) {
    let log = open_log(f.open("idempotent")).unwrap();
    let id = Uuid::new_v4();
    let first = append_all(&log, &[id, Uuid::new_v4()])[0];
    let appender = log.appender();
    let rt = runtime();
    let again = rt.block_on(appender.append(id, digest(&body(id)), body(id))).unwrap();
    assert_eq!(again.position, first);
    assert!(again.duplicate);
    assert_eq!(log.reader().head().size, 2, "a retry appends nothing");
    let other = b"other content".to_vec();
    match rt.block_on(appender.append(id, digest(&other), other)) {
        Err(AppendError::AlreadyExists { position }) => assert_eq!(position, first),
        other => panic!("reusing a request ID for other content must fail, got {other:?}"),
    }
    // Duplicates inside one group commit: all get the same position.
    let dup = Uuid::new_v4();
    let positions = append_all(&log, &[dup, dup, dup]);
    assert!(positions.iter().all(|p| *p == positions[0]));
    assert_eq!(log.reader().head().size, 3);
    drop(appender);
    log.close().unwrap();
}

fn idempotency_holds_across_close_and_reopen(f: &mut dyn Factory) {
    let id = Uuid::new_v4();
    let first = {
        let log = open_log(f.open("idempotent-reopen")).unwrap();
        let p = append_all(&log, &[Uuid::new_v4(), id])[1];
        log.close().unwrap();
        p
    };
    let log = open_log(f.open("idempotent-reopen")).unwrap();
    let appender = log.appender();
    let rt = runtime();
    let again = rt.block_on(appender.append(id, digest(&body(id)), body(id))).unwrap();
    assert_eq!((again.position, again.duplicate), (first, true));
    let other = b"changed".to_vec();
    assert!(matches!(
        rt.block_on(appender.append(id, digest(&other), other)),
        Err(AppendError::AlreadyExists { .. })
    ));
    assert_eq!(log.reader().head().size, 2);
    drop(appender);
    log.close().unwrap();
}

fn a_reopened_log_continues_the_chain(f: &mut dyn Factory) {
    let (root, size) = {
        let log = open_log(f.open("continue")).unwrap();
        append_all(&log, &(0..10).map(|_| Uuid::new_v4()).collect::<Vec<_>>());
        let head = log.reader().head();
        log.close().unwrap();
        (head.root, head.size)
    };
    let log = open_log(f.open("continue")).unwrap();
    assert_eq!((log.reader().head().size, log.reader().head().root), (size, root));
    append_all(&log, &(0..5).map(|_| Uuid::new_v4()).collect::<Vec<_>>());
    let reader = log.reader();
    let mut chain = ChainVerifier::new();
    for (_, bytes) in reader.entries(0, 15, 100).unwrap() {
        chain.push(&bytes).expect("the chain continues across the restart");
    }
    assert_eq!(chain.next_position(), 15);
    let proof = reader.consistency_proof(10, 15).unwrap();
    merkle::verify_consistency(10, 15, &root, &reader.head().root, &proof).unwrap();
    log.close().unwrap();
}

fn a_tampered_entry_stops_the_log_from_opening(f: &mut dyn Factory) {
    {
        let log = open_log(f.open("tamper")).unwrap();
        append_all(&log, &(0..10).map(|_| Uuid::new_v4()).collect::<Vec<_>>());
        log.close().unwrap();
    }
    let store = f.open("tamper");
    let mut bytes = store.entry(6).unwrap().unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    store.write(WriteBatch { entries: vec![(6, bytes)], ..Default::default() }).unwrap();
    store.sync().unwrap();
    match open_log(store) {
        Err(OpenError::BrokenChain { position, .. }) => assert_eq!(position, 6),
        Err(other) => panic!("expected a broken chain, got {other}"),
        Ok(_) => panic!("a tampered log must not open"),
    }
}

/// Everything a reader can ask about `0..size`: each entry alone, ranges across group edges,
/// and every perfect Merkle node.
fn everything_read(store: &dyn LogStore, size: u64) -> Vec<String> {
    let mut seen = Vec::new();
    for p in 0..size + 1 {
        seen.push(format!("entry {p}: {:?}", store.entry(p).unwrap()));
    }
    for (start, end) in [(0, size + 5), (5, 37), (15, 17), (140, 160), (150, 151), (143, 145)] {
        seen.push(format!("entries {start}..{end}: {:?}", store.entries(start, end).unwrap()));
    }
    for level in 0..9 {
        for index in 0..(size >> level) + 1 {
            seen.push(format!("node {level} {index}: {:?}", store.node(level, index).unwrap()));
        }
    }
    seen.push(format!("size {}", store.size().unwrap()));
    seen
}

fn sealed_entries_read_back_as_written_and_the_log_still_verifies(f: &mut dyn Factory) {
    {
        let log = open_log(f.open("sealed")).unwrap();
        append_all(&log, &(0..200).map(|_| Uuid::new_v4()).collect::<Vec<_>>());
        log.close().unwrap();
    }
    let store = f.open("sealed");
    let before = everything_read(store.as_ref(), 200);
    let sealed = store.seal(150).unwrap();
    assert!(sealed <= 150, "only entries below the verified size are sealed");
    assert_eq!(everything_read(store.as_ref(), 200), before);
    assert_eq!(store.seal(150).unwrap(), 0, "sealed entries are not sealed again");
    store.sync().unwrap();
    drop(store);
    // Reopened, the log checks its chain through the sealed entries and goes on.
    let store = f.open("sealed");
    assert_eq!(everything_read(store.as_ref(), 200), before);
    let log = open_log(store.clone()).unwrap();
    append_all(&log, &(0..56).map(|_| Uuid::new_v4()).collect::<Vec<_>>());
    assert!(store.seal(256).unwrap() <= 256 - sealed);
    let reader = log.reader();
    let mut chain = ChainVerifier::new();
    let mut tree = MemoryTree::default();
    for (position, bytes) in reader.entries(0, 256, 1000).unwrap() {
        assert_eq!(position, chain.next_position());
        tree.push(chain.push(&bytes).expect("the chain verifies through sealed entries"));
    }
    assert_eq!(reader.head().root, tree.mth(0, 256));
    for (index, size) in [(0, 256), (17, 150), (143, 144), (255, 256)] {
        let proof = reader.inclusion_proof(index, size).unwrap();
        let leaf = merkle::leaf_hash(&reader.entry(index).unwrap());
        merkle::verify_inclusion(index, size, &leaf, &proof, &tree.mth(0, size)).unwrap();
    }
    drop(reader);
    log.close().unwrap();
}
