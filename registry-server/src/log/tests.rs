//! The log's own promises: durability before acknowledgement, group commit, failure handling,
//! time ordering, and proofs for every tree size.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use registry_core::keys::P256KeyPair;
use registry_core::merkle::{self, Hash, MemoryTree};
use registry_core::note::NoteSigner;
use registry_core::time::Time;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::*;
use crate::store::memory::MemoryStore;
use crate::store::sled::{SledOptions, SledStore};
use crate::store::{Keyspace, Record, RequestRecord, Visitor, WriteBatch};

fn signer() -> NoteSigner {
    NoteSigner::new("log.test/log", P256KeyPair::generate()).unwrap()
}

fn digest(b: &[u8]) -> Hash {
    Sha256::digest(b).into()
}

/// Wraps a memory store to watch and disturb the writer: it can hold a sync or the reading of
/// entries until released, fail a sync, and it remembers how many entries each write carried.
#[derive(Clone, Default)]
struct Probe {
    inner: MemoryStore,
    hold_sync: Arc<AtomicBool>,
    fail_sync: Arc<AtomicBool>,
    hold_reads: Arc<AtomicBool>,
    reads_done: Arc<AtomicU64>,
    syncs_started: Arc<AtomicU64>,
    batch_sizes: Arc<Mutex<Vec<usize>>>,
}

impl LogStore for Probe {
    fn size(&self) -> Result<u64, StoreError> {
        self.inner.size()
    }
    fn entry(&self, p: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.entry(p)
    }
    fn entries(&self, s: u64, e: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        while self.hold_reads.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let read = self.inner.entries(s, e);
        self.reads_done.fetch_add(1, Ordering::SeqCst);
        read
    }
    fn node(&self, l: u32, i: u64) -> Result<Option<Hash>, StoreError> {
        self.inner.node(l, i)
    }
    fn request(&self, id: &Uuid) -> Result<Option<RequestRecord>, StoreError> {
        self.inner.request(id)
    }
    fn meta(&self, k: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.meta(k)
    }
    fn get(&self, ks: Keyspace, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(ks, k)
    }
    fn scan_prefix(&self, ks: Keyspace, p: &[u8]) -> Result<Vec<Record>, StoreError> {
        self.inner.scan_prefix(ks, p)
    }
    fn for_each(&self, ks: Keyspace, visit: &mut Visitor<'_>) -> Result<(), StoreError> {
        self.inner.for_each(ks, visit)
    }
    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.batch_sizes.lock().unwrap().push(batch.entries.len());
        self.inner.write(batch)
    }
    fn sync(&self) -> Result<(), StoreError> {
        self.syncs_started.fetch_add(1, Ordering::SeqCst);
        while self.hold_sync.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(StoreError::Io("injected fsync failure".into()));
        }
        self.inner.sync()
    }
    fn clear_projections(&self, ks: &[Keyspace]) -> Result<(), StoreError> {
        self.inner.clear_projections(ks)
    }
    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.size_on_disk()
    }
}

fn open(store: Arc<dyn LogStore>, clock: Clock) -> Log<RawBodies> {
    Log::open(store, RawBodies, signer(), LogOptions::default(), clock).unwrap()
}

fn body(i: u64) -> Vec<u8> {
    use prost::Message;
    registry_proto::pb::LogEntry { request_id: format!("body-{i}"), ..Default::default() }
        .encode_to_vec()
}

async fn append(
    a: &Appender<RawBodies>,
    i: u64,
) -> Result<Appended, AppendError<std::convert::Infallible>> {
    let b = body(i);
    a.append(Uuid::new_v4(), digest(&b), b).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_append_is_acknowledged_before_its_batch_is_synced() {
    let probe = Probe::default();
    let log = open(Arc::new(probe.clone()), system_clock());
    let appender = log.appender();
    let opened = probe.inner.sync_count() as usize; // the one sync at open
    let mut tasks = Vec::new();
    for w in 0..64u64 {
        let (a, p) = (appender.clone(), probe.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let done = append(&a, w * 1000 + i).await.unwrap();
                // The moment we hear back, the entry must already survive a crash.
                assert!(
                    done.position < p.inner.durable_size(),
                    "position {} acknowledged before it was durable",
                    done.position
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let batches = probe.batch_sizes.lock().unwrap().clone();
    assert_eq!(batches.iter().sum::<usize>(), 64 * 20);
    // Appends share flushes instead of paying one each: at most one sync per written batch
    // (fewer when the syncer finds several batches written by the time it starts).
    let syncs = probe.inner.sync_count() as usize - opened;
    assert!(syncs <= batches.len(), "{syncs} syncs for {} batches", batches.len());
    assert!(syncs < 64 * 20 / 4, "{syncs} syncs for {} appends", 64 * 20);
    drop(appender);
    log.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_arriving_during_a_sync_are_written_meanwhile_and_share_the_next_syncs() {
    let probe = Probe::default();
    let log = open(Arc::new(probe.clone()), system_clock());
    let appender = log.appender();
    let opened = probe.syncs_started.load(Ordering::SeqCst); // the one sync at open
    probe.hold_sync.store(true, Ordering::SeqCst);
    let first = tokio::spawn({
        let a = appender.clone();
        async move { append(&a, 0).await }
    });
    while probe.syncs_started.load(Ordering::SeqCst) == opened {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let mut rest = Vec::new();
    for i in 1..64 {
        let a = appender.clone();
        rest.push(tokio::spawn(async move { append(&a, i).await }));
    }
    // While the first sync hangs, the writer goes on: one more batch is decided and written
    // (but not answered), the other appends wait in the queue.
    let written = || probe.batch_sizes.lock().unwrap().iter().sum::<usize>();
    while written() + appender.queued() < 64 || written() < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert!(!first.is_finished(), "answered before its sync returned");
    assert_eq!(probe.inner.durable_size(), 0);
    probe.hold_sync.store(false, Ordering::SeqCst);
    first.await.unwrap().unwrap();
    for t in rest {
        t.await.unwrap().unwrap();
    }
    // The batch written during the held sync and the one formed from the queue: two more
    // syncs at most, however the 63 arrivals were split.
    let batches = probe.batch_sizes.lock().unwrap().clone();
    assert_eq!(batches[0], 1);
    assert_eq!(batches.iter().sum::<usize>(), 64);
    assert!(batches.len() <= 3, "{batches:?}");
    let syncs = probe.inner.sync_count() - opened;
    assert!(syncs <= 3, "{syncs} syncs");
    drop(appender);
    log.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_fails_its_batch_and_everything_after() {
    let probe = Probe::default();
    let log = open(Arc::new(probe.clone()), system_clock());
    let appender = log.appender();
    for i in 0..5 {
        append(&appender, i).await.unwrap();
    }
    let durable_before = probe.inner.durable_size();
    probe.fail_sync.store(true, Ordering::SeqCst);
    let mut tasks = Vec::new();
    for i in 0..32 {
        let a = appender.clone();
        tasks.push(tokio::spawn(async move { append(&a, 100 + i).await }));
    }
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Err(AppendError::Unavailable(_))));
    }
    // The disk recovers, but the writer must not: it cannot know what reached the disk.
    probe.fail_sync.store(false, Ordering::SeqCst);
    for i in 0..5 {
        assert!(matches!(append(&appender, 200 + i).await, Err(AppendError::Unavailable(_))));
    }
    assert!(matches!(*appender.status().borrow(), WriterStatus::Failed(_)));
    assert_eq!(log.reader().head().size, durable_before, "readers never see the failed batch");
    assert_eq!(probe.inner.crash().size().unwrap(), durable_before);
    drop(appender);
    assert!(log.close().is_err(), "a stop after a failed sync reports it");
}

#[tokio::test]
async fn recorded_times_increase_even_when_the_clock_goes_back() {
    let start = registry_core::time::parse("2030-01-01T00:00:00Z").unwrap();
    let ticks = Arc::new(AtomicU64::new(0));
    let clock: Clock = {
        let ticks = ticks.clone();
        // Every reading is a second earlier than the one before.
        Arc::new(move || {
            start - chrono::TimeDelta::seconds(ticks.fetch_add(1, Ordering::SeqCst) as i64)
        })
    };
    let log = open(Arc::new(MemoryStore::new()), clock);
    let appender = log.appender();
    for i in 0..20 {
        append(&appender, i).await.unwrap();
    }
    let times: Vec<Time> = log
        .reader()
        .entries(0, 20, 20)
        .unwrap()
        .iter()
        .map(|(_, b)| registry_core::entry::decode_header(b).unwrap().recorded_at)
        .collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    drop(appender);
    log.close().unwrap();
}

/// Appends entries `range` to `log` from eight concurrent writers.
fn append_concurrently(log: &Log<RawBodies>, range: std::ops::Range<u64>) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    let appender = log.appender();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..8u64 {
            let a = appender.clone();
            let range = range.clone();
            tasks.push(tokio::spawn(async move {
                for i in (range.start + w..range.end).step_by(8) {
                    append(&a, i).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// The reference tree over the leaf hashes of a log's first `size` entries.
fn reference_tree(log: &Log<RawBodies>, size: u64) -> MemoryTree {
    let entries = log.reader().entries(0, size, size).unwrap();
    MemoryTree::new(entries.iter().map(|(_, b)| merkle::leaf_hash(b)).collect())
}

/// Proptest draws tree sizes up to the head of `reader`'s log; every inclusion and consistency
/// proof for that size must verify, and fail once the root, index or size changes.
fn every_proof_verifies_and_fails_when_changed(reader: &LogReader, tree: &MemoryTree) {
    use proptest::test_runner::{Config, TestRunner};
    let n = tree.size();
    assert_eq!(reader.head().size, n);
    // roots[k] is the root of the first k entries, computed independently of the store.
    let mut frontier = merkle::Frontier::new();
    let mut roots = vec![frontier.root()];
    for i in 0..n {
        frontier.push(tree.perfect_node(0, i).unwrap());
        roots.push(frontier.root());
    }
    assert_eq!(roots[n as usize], tree.mth(0, n));
    let mut runner = TestRunner::new(Config { cases: 16, ..Config::default() });
    let result = runner.run(&(1u64..=n), |size| {
        let root = roots[size as usize];
        prop_assert_eq!(reader.root(size).unwrap(), root);
        let mut bad_root = root;
        bad_root[31] ^= 0x80;
        for index in 0..size {
            let leaf = tree.perfect_node(0, index).unwrap();
            let proof = reader.inclusion_proof(index, size).unwrap();
            prop_assert!(merkle::verify_inclusion(index, size, &leaf, &proof, &root).is_ok());
            prop_assert!(merkle::verify_inclusion(index, size, &leaf, &proof, &bad_root).is_err());
            if size > 1 {
                let other = (index + 1) % size;
                prop_assert!(merkle::verify_inclusion(other, size, &leaf, &proof, &root).is_err());
            }
            // Against another size, with that size's true root.
            if size < n {
                let r = roots[size as usize + 1];
                prop_assert!(merkle::verify_inclusion(index, size + 1, &leaf, &proof, &r).is_err());
            }
        }
        for from in 1..=size {
            let from_root = roots[from as usize];
            let proof = reader.consistency_proof(from, size).unwrap();
            prop_assert!(merkle::verify_consistency(from, size, &from_root, &root, &proof).is_ok());
            prop_assert!(
                merkle::verify_consistency(from, size, &from_root, &bad_root, &proof).is_err()
            );
            if from < size {
                let r = roots[from as usize + 1];
                prop_assert!(
                    merkle::verify_consistency(from + 1, size, &r, &root, &proof).is_err()
                );
            }
            if size < n {
                let r = roots[size as usize + 1];
                prop_assert!(
                    merkle::verify_consistency(from, size + 1, &from_root, &r, &proof).is_err()
                );
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Proofs from the three places nodes come from: the in-memory tail of a running log (all 2,000
/// entries), the store alone (the same log reopened, its tail empty), and both (200 more
/// entries after the reopen, so proofs near the end mix the tail and the store).
#[test]
fn every_proof_the_log_produces_verifies_and_fails_when_changed() {
    let dir = tempfile::tempdir().unwrap();
    let sled = || Arc::new(SledStore::open(dir.path(), &SledOptions::default()).unwrap());
    let log = open(sled(), system_clock());
    append_concurrently(&log, 0..2000);
    let tree = reference_tree(&log, 2000);
    every_proof_verifies_and_fails_when_changed(&log.reader(), &tree);
    log.close().unwrap();

    let log = open(sled(), system_clock());
    every_proof_verifies_and_fails_when_changed(&log.reader(), &tree);
    append_concurrently(&log, 2000..2200);
    let reader = log.reader();
    assert!(reader.tail.entry(1999).is_none() && reader.tail.entry(2000).is_some());
    every_proof_verifies_and_fails_when_changed(&reader, &reference_tree(&log, 2200));
    drop(reader);
    log.close().unwrap();
}

fn verified_size(store: &dyn LogStore) -> Option<u64> {
    store.meta(VERIFIED_SIZE).unwrap().map(|v| u64::from_be_bytes(v.try_into().unwrap()))
}

fn open_verifying(store: Arc<dyn LogStore>, every: std::time::Duration) -> Log<RawBodies> {
    let options = LogOptions { verify_every: Some(every), ..LogOptions::default() };
    Log::open(store, RawBodies, signer(), options, system_clock()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_log_checks_what_became_durable_so_a_restart_need_not() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn LogStore> =
        Arc::new(SledStore::open(dir.path(), &SledOptions::default()).unwrap());
    let log = open_verifying(store.clone(), std::time::Duration::from_millis(20));
    let appender = log.appender();
    for i in 0..50 {
        append(&appender, i).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while verified_size(store.as_ref()) != Some(50) {
        assert!(std::time::Instant::now() < deadline, "the background check never reached 50");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    drop(appender);
    // No sync here: closing the log must make the last record durable itself.
    tokio::task::spawn_blocking(move || log.close()).await.unwrap().unwrap();
    drop(store);
    let store: Arc<dyn LogStore> =
        Arc::new(SledStore::open(dir.path(), &SledOptions::default()).unwrap());
    assert_eq!(verified_size(store.as_ref()), Some(50), "the checked size survives a restart");
    let log = open(store, system_clock());
    assert_eq!(log.reader().head().size, 50);
    tokio::task::spawn_blocking(move || log.close()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_entry_stops_the_background_check_short_of_it_and_the_start_refuses() {
    let probe = Probe::default();
    // The check's reads wait until the entry has been tampered with, whatever the timing. A
    // check that began while the appends were still arriving may rightly record the sound
    // entries before the tampered one (entry 6), never more.
    probe.hold_reads.store(true, Ordering::SeqCst);
    let store: Arc<dyn LogStore> = Arc::new(probe.clone());
    let log = open_verifying(store.clone(), std::time::Duration::from_millis(10));
    let appender = log.appender();
    for i in 0..10 {
        append(&appender, i).await.unwrap();
    }
    let mut bytes = store.entry(6).unwrap().unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    store.write(WriteBatch { entries: vec![(6, bytes)], ..Default::default() }).unwrap();
    store.sync().unwrap();
    probe.hold_reads.store(false, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while probe.reads_done.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "the background check never read the log");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    drop(appender);
    // Closing waits for the check under way, so a check that ignored the broken chain would
    // have recorded its size by now.
    tokio::task::spawn_blocking(move || log.close()).await.unwrap().unwrap();
    let recorded = verified_size(store.as_ref());
    assert!(recorded.is_none_or(|size| size <= 6), "recorded {recorded:?} as checked");
    match Log::open(store, RawBodies, signer(), LogOptions::default(), system_clock()) {
        Err(OpenError::BrokenChain { position, .. }) => assert_eq!(position, 6),
        Err(other) => panic!("expected a broken chain, got {other}"),
        Ok(_) => panic!("a tampered log must not open"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_log_makes_the_last_checked_size_durable() {
    let store = MemoryStore::new();
    let log = open_verifying(Arc::new(store.clone()), std::time::Duration::from_millis(10));
    let appender = log.appender();
    for i in 0..20 {
        append(&appender, i).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while verified_size(&store) != Some(20) {
        assert!(std::time::Instant::now() < deadline, "the background check never reached 20");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    drop(appender);
    tokio::task::spawn_blocking(move || log.close()).await.unwrap().unwrap();
    // Nothing was appended after the check recorded its size, so only close can have synced it.
    assert_eq!(verified_size(&store.crash()), Some(20));
}

/// One test per failure point: the N-th write or sync fails, with an I/O error or a full disk.
/// Nothing is acknowledged from the failing batch on, the writer stops for good and says why,
/// every acknowledged entry stays readable with proofs, and a restart from what was durable
/// (the memory store's crash) holds every acknowledged entry and passes the witness check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_every_failure_point_nothing_is_acknowledged_after_it_and_a_restart_recovers() {
    use crate::store::faulty::{Fault, FaultyStore};
    // At open the log syncs once, then records that it has a witness (a write and a sync):
    // appends start with write 2 and sync 3.
    let faults = [
        Fault::Write { n: 2, full: false },
        Fault::Write { n: 5, full: true },
        Fault::Sync { n: 3, full: false },
        Fault::Sync { n: 6, full: false },
        Fault::Sync { n: 4, full: true },
    ];
    for fault in faults {
        let dir = tempfile::tempdir().unwrap();
        let witness = Witness::new(dir.path().join(witness::WITNESS_FILE));
        let memory = MemoryStore::new();
        let faulty = Arc::new(FaultyStore::new(Arc::new(memory.reopen()), fault));
        let signer = signer();
        let key = signer.verifier();
        let options = LogOptions { witness: Some(witness.clone()), ..LogOptions::default() };
        let log =
            Log::open(faulty.clone(), RawBodies, signer.clone(), options, system_clock()).unwrap();
        let appender = log.appender();
        let mut acknowledged = Vec::new();
        let mut refused = Vec::new();
        for round in 0..12u64 {
            // Appends of one round race each other into batches; a round that starts once
            // the writer has stopped must be refused whole.
            let stopped = appender.status().borrow().is_stopped();
            let tasks: Vec<_> = (0..4)
                .map(|i| {
                    let a = appender.clone();
                    tokio::spawn(async move { append(&a, round * 4 + i).await })
                })
                .collect();
            for t in tasks {
                match t.await.unwrap() {
                    Ok(a) => {
                        assert!(!stopped, "{fault:?}: acknowledged after the writer stopped");
                        acknowledged.push(a.position);
                    }
                    Err(e) => refused.push(e),
                }
            }
        }
        assert!(faulty.has_failed(), "{fault:?} never happened");
        assert!(!refused.is_empty(), "{fault:?}: appends after the failure were refused");
        let full =
            matches!(fault, Fault::Write { full: true, .. } | Fault::Sync { full: true, .. });
        for e in &refused {
            match e {
                AppendError::DiskFull(_) => assert!(full, "{fault:?}: {e}"),
                AppendError::Unavailable(_) => assert!(!full, "{fault:?}: {e}"),
                other => panic!("{fault:?}: {other}"),
            }
        }
        assert!(appender.status().borrow().is_stopped());
        // Reads go on: every acknowledged entry, with an inclusion proof in the served checkpoint.
        let reader = log.reader();
        let head = reader.head();
        for &p in &acknowledged {
            assert!(p < head.size);
            reader.entry(p).unwrap();
            reader.inclusion_proof(p, head.size).unwrap();
        }
        assert_eq!(
            Checkpoint::open(&reader.checkpoint(head.size).unwrap(), &key).unwrap().size,
            head.size
        );
        drop(appender);
        assert!(log.close().is_err(), "{fault:?}: the stop reports the failure");

        // The durable prefix, as a crash leaves it, restarts and holds everything acknowledged.
        let recovered = Arc::new(memory.crash());
        let size = recovered.size().unwrap();
        assert!(size >= head.size, "{fault:?}: durable {size} < published {}", head.size);
        let options = LogOptions { witness: Some(witness), ..LogOptions::default() };
        let again = Log::open(recovered.clone(), RawBodies, signer, options, system_clock())
            .unwrap_or_else(|e| panic!("{fault:?}: the restart refused: {e}"));
        for &p in &acknowledged {
            assert_eq!(again.reader().entry(p).unwrap(), reader.entry(p).unwrap());
        }
        again.close().unwrap();
    }
}

/// The disk filled up between a sync and its witness: the log holds durable entries that were
/// never published. A read-only start serves exactly what was published (the witnessed note);
/// a start with room publishes the rest, witnessing it first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_start_serves_the_witnessed_head_and_nothing_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let witness = Witness::new(dir.path().join(witness::WITNESS_FILE));
    let memory = MemoryStore::new();
    let signer = signer();
    let options = |read_only| LogOptions {
        witness: Some(witness.clone()),
        read_only,
        ..LogOptions::default()
    };
    let log = Log::open(
        Arc::new(memory.reopen()),
        RawBodies,
        signer.clone(),
        options(false),
        system_clock(),
    )
    .unwrap();
    for i in 0..3 {
        append(&log.appender(), i).await.unwrap();
    }
    let published_file = std::fs::read(witness.path()).unwrap();
    let published = witness.read(&log.reader().signing.verifier()).unwrap().unwrap().1;
    for i in 3..5 {
        append(&log.appender(), i).await.unwrap();
    }
    log.close().unwrap();
    // As if the last two entries' witness had never been written.
    std::fs::write(witness.path(), &published_file).unwrap();

    let read_only = Log::open(
        Arc::new(memory.reopen()),
        RawBodies,
        signer.clone(),
        options(true),
        system_clock(),
    )
    .unwrap();
    let reader = read_only.reader();
    assert_eq!(reader.head().size, 3);
    assert_eq!(&*reader.head().checkpoint, published.as_str(), "the very note published");
    assert!(reader.entry(3).is_err(), "nothing past the published head");
    assert!(matches!(append(&read_only.appender(), 9).await, Err(AppendError::DiskFull(_))));
    assert!(read_only.close().is_err());
    assert_eq!(std::fs::read(witness.path()).unwrap(), published_file, "nothing written");

    let with_room =
        Log::open(Arc::new(memory.reopen()), RawBodies, signer, options(false), system_clock())
            .unwrap();
    assert_eq!(with_room.reader().head().size, 5);
    let witnessed = witness.read(&with_room.reader().signing.verifier()).unwrap().unwrap().0;
    assert_eq!(witnessed.size, 5, "witnessed before it is served");
    with_room.close().unwrap();
}

/// A witness that cannot be written stops the log like a failed sync: the batch is durable but
/// neither published nor acknowledged, and nothing after it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_that_cannot_be_witnessed_is_never_published() {
    let dir = tempfile::tempdir().unwrap();
    let witness_dir = dir.path().join("witness");
    std::fs::create_dir(&witness_dir).unwrap();
    let witness = Witness::new(witness_dir.join(witness::WITNESS_FILE));
    let memory = MemoryStore::new();
    let options = LogOptions { witness: Some(witness), ..LogOptions::default() };
    let log =
        Log::open(Arc::new(memory.reopen()), RawBodies, signer(), options, system_clock()).unwrap();
    let appender = log.appender();
    for i in 0..3 {
        append(&appender, i).await.unwrap();
    }
    let published = log.reader().head();
    // The witness's directory vanishes: its next write fails.
    std::fs::remove_dir_all(&witness_dir).unwrap();
    assert!(matches!(append(&appender, 3).await, Err(AppendError::Unavailable(_))));
    assert!(matches!(append(&appender, 4).await, Err(AppendError::Unavailable(_))));
    assert_eq!(log.reader().head().size, published.size, "the head did not move");
    assert_eq!(memory.durable_size(), published.size + 1, "the entry itself was synced");
    assert!(appender.status().borrow().is_stopped());
    drop(appender);
    assert!(log.close().is_err());
}

/// Raw bodies whose checkpoints carry one extension line the test sets: a stand-in for a
/// machine whose projections (like the registry's map) a start loads from a snapshot.
struct Stamped(Arc<Mutex<String>>);

impl Machine for Stamped {
    type Command = Vec<u8>;
    type Rejection = std::convert::Infallible;
    type Effects = ();
    type Copied = ();

    fn check_copied(
        &mut self,
        position: u64,
        copied: (),
        view: &View<'_>,
    ) -> Result<CopiedEntry<()>, MachineError<String>> {
        RawBodies.check_copied(position, copied, view)
    }

    fn decide(
        &mut self,
        command: &Vec<u8>,
        context: &EntryContext,
        view: &View<'_>,
    ) -> Result<Decided<()>, MachineError<Self::Rejection>> {
        RawBodies.decide(command, context, view)
    }

    fn apply(
        &mut self,
        header: &EntryHeader,
        _: &(),
        view: &mut View<'_>,
    ) -> Result<(), StoreError> {
        RawBodies.apply(header, &(), view)
    }

    fn checkpoint_extensions(&self) -> Vec<String> {
        vec![self.0.lock().unwrap().clone()]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_whose_projections_do_not_make_the_signed_extension_lines_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let witness = Witness::new(dir.path().join(witness::WITNESS_FILE));
    let memory = MemoryStore::new();
    let signer = signer();
    let line = Arc::new(Mutex::new("test.v1 map A".to_string()));
    let options = || LogOptions { witness: Some(witness.clone()), ..LogOptions::default() };
    let open = || {
        Log::open(
            Arc::new(memory.reopen()),
            Stamped(line.clone()),
            signer.clone(),
            options(),
            system_clock(),
        )
    };
    let log = open().unwrap();
    for i in 0..2 {
        let b = body(i);
        log.appender().append(Uuid::new_v4(), digest(&b), b).await.unwrap();
    }
    log.close().unwrap();

    *line.lock().unwrap() = "test.v1 map B".into(); // what a damaged snapshot would load
    match open().err() {
        Some(OpenError::ProjectionsDiverged { size, signed, found, .. }) => {
            assert_eq!(size, 2);
            assert_eq!(signed, ["test.v1 map A"]);
            assert_eq!(found, ["test.v1 map B"]);
        }
        other => panic!("expected a refusal naming both lines, got {other:?}"),
    }
    *line.lock().unwrap() = "test.v1 map A".into();
    open().unwrap().close().unwrap();
}
