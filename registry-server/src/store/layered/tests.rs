//! The layered store against the shared conformance suite, and its own promises: snapshots,
//! cuts, refusals and recovery.

use super::*;
use crate::store::ProjectionWrite;
use crate::store::conformance;
use crate::store::memory::MemoryStore;

const KS: Keyspace = Keyspace("keys");

#[test]
fn the_layered_store_passes_the_conformance_suite() {
    conformance::run_all(&mut conformance::LayeredFactory::new());
}

fn put(key: &str, value: &str) -> ProjectionWrite {
    ProjectionWrite {
        keyspace: KS,
        key: key.as_bytes().to_vec(),
        value: Some(value.as_bytes().to_vec()),
    }
}

fn delete(key: &str) -> ProjectionWrite {
    ProjectionWrite { keyspace: KS, key: key.as_bytes().to_vec(), value: None }
}

/// Appends entry `position` with these projection writes, as the writer does.
fn append(store: &LayeredStore, position: u64, projections: Vec<ProjectionWrite>) {
    store
        .write(WriteBatch {
            entries: vec![(position, format!("entry {position}").into_bytes())],
            projections,
            projected_size: Some(position + 1),
            ..Default::default()
        })
        .unwrap();
    store.sync().unwrap();
}

fn all(store: &LayeredStore) -> Vec<(String, String)> {
    let mut out = Vec::new();
    store
        .for_each(KS, &mut |k, v| {
            out.push((String::from_utf8_lossy(k).into(), String::from_utf8_lossy(v).into()));
            Ok(())
        })
        .unwrap();
    out
}

struct Fixture {
    inner: MemoryStore,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self { inner: MemoryStore::new(), dir: tempfile::tempdir().unwrap() }
    }
    fn path(&self) -> PathBuf {
        self.dir.path().join("p.snap")
    }
    fn open(&self, min_cut: usize) -> LayeredStore {
        LayeredStore::open(Arc::new(self.inner.reopen()), &self.path(), min_cut).unwrap()
    }
    /// A log of one entry whose projections were persisted by a clean stop.
    fn stopped_cleanly_with(&self, projections: Vec<ProjectionWrite>) {
        let store = self.open(1_000);
        append(&store, 0, projections);
        store.persist_projections().unwrap();
    }
}

#[test]
fn a_restart_resumes_from_the_last_cut_with_exactly_its_records() {
    let f = Fixture::new();
    let store = f.open(3);
    append(&store, 0, vec![put("a", "1"), put("b", "1")]);
    append(&store, 1, vec![put("c", "1"), delete("a")]); // 4 writes: a cut at size 2
    store.wait_for_cut().unwrap();
    assert_eq!(store.snapshot_size().unwrap(), 2);
    append(&store, 2, vec![put("b", "2"), put("d", "1")]);
    assert_eq!(
        all(&store),
        [("b", "2"), ("c", "1"), ("d", "1")].map(|(k, v)| (k.into(), v.into()))
    );
    drop(store); // no clean stop: what came after the cut is not in the snapshot
    let reopened = f.open(3);
    assert_eq!(reopened.size().unwrap(), 3);
    assert_eq!(reopened.projected_size().unwrap(), 2);
    assert_eq!(all(&reopened), [("b", "1"), ("c", "1")].map(|(k, v)| (k.into(), v.into())));
}

#[test]
fn a_clean_stop_leaves_nothing_to_replay() {
    let f = Fixture::new();
    let store = f.open(1_000);
    append(&store, 0, vec![put("a", "1")]);
    append(&store, 1, vec![put("b", "1"), delete("a")]);
    store.persist_projections().unwrap();
    drop(store);
    let reopened = f.open(1_000);
    assert_eq!(reopened.projected_size().unwrap(), 2);
    assert_eq!(all(&reopened), vec![("b".to_string(), "1".to_string())]);
}

#[test]
fn a_damaged_snapshot_is_ignored_and_everything_is_replayed() {
    let f = Fixture::new();
    f.stopped_cleanly_with(vec![put("a", "1")]);
    let mut bytes = std::fs::read(f.path()).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(f.path(), bytes).unwrap();
    let reopened = f.open(1_000);
    assert_eq!(reopened.projected_size().unwrap(), 0);
    assert!(all(&reopened).is_empty());
}

#[test]
fn a_snapshot_ahead_of_the_log_is_a_refusal_naming_both_sizes() {
    let f = Fixture::new();
    f.stopped_cleanly_with(vec![put("a", "1")]);
    let snapshot = std::fs::read(f.path()).unwrap();
    // A log that lost its only entry, next to the snapshot that saw it durable.
    let shorter = Fixture::new();
    drop(shorter.open(1_000));
    std::fs::write(shorter.path(), snapshot).unwrap();
    let refused =
        LayeredStore::open(Arc::new(shorter.inner.reopen()), &shorter.path(), 1_000).err();
    let message = refused.map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("log size 1 but the log has 0"), "{message}");
    assert!(message.contains("restore"), "says how to recover: {message}");
}

#[test]
fn a_snapshot_of_another_log_is_refused() {
    let f = Fixture::new();
    f.stopped_cleanly_with(vec![put("a", "1")]);
    let other = Fixture::new();
    let theirs = other.open(1_000);
    theirs
        .write(WriteBatch {
            entries: vec![(0, b"another entry 0".to_vec())],
            projected_size: Some(1),
            ..Default::default()
        })
        .unwrap();
    theirs.sync().unwrap();
    std::fs::copy(f.path(), other.path()).unwrap();
    drop(theirs);
    let refused = LayeredStore::open(Arc::new(other.inner.reopen()), &other.path(), 1_000);
    assert!(matches!(&refused, Err(StoreError::Corrupt(m)) if m.contains("entry 0 differs")));
}

#[test]
fn entries_on_top_of_lagging_projections_are_refused() {
    let f = Fixture::new();
    let store = f.open(1_000);
    append(&store, 0, vec![put("a", "1")]);
    drop(store); // no snapshot: the projections restart at 0
    let reopened = f.open(1_000);
    let refused = reopened.write(WriteBatch {
        entries: vec![(1, b"entry 1".to_vec())],
        projected_size: Some(2),
        ..Default::default()
    });
    assert!(matches!(refused, Err(StoreError::Corrupt(_))), "{refused:?}");
    assert_eq!(reopened.size().unwrap(), 1);
}

#[test]
fn a_failed_cut_keeps_every_record_in_memory() {
    let f = Fixture::new();
    let nowhere = f.dir.path().join("missing").join("p.snap");
    let store = LayeredStore::open(Arc::new(f.inner.reopen()), &nowhere, 2).unwrap();
    append(&store, 0, vec![put("a", "1"), put("b", "1")]); // a cut that cannot be written
    store.wait_for_cut().unwrap();
    assert_eq!(store.snapshot_size().unwrap(), 0);
    append(&store, 1, vec![put("b", "2")]);
    store.wait_for_cut().unwrap();
    assert_eq!(all(&store), [("a", "1"), ("b", "2")].map(|(k, v)| (k.into(), v.into())));
    assert!(store.persist_projections().is_err(), "the file still cannot be written");
    assert_eq!(all(&store), [("a", "1"), ("b", "2")].map(|(k, v)| (k.into(), v.into())));
}

#[test]
fn no_cut_follows_a_batch_that_held_records_back_and_one_follows_the_batch_that_carries_them() {
    let f = Fixture::new();
    let store = f.open(2);
    assert!(!store.projections_wanted(), "an empty active layer wants nothing");
    let held = |position: u64, projections| WriteBatch {
        entries: vec![(position, format!("entry {position}").into_bytes())],
        projections,
        projected_size: Some(position + 1),
        held_back: true,
        ..Default::default()
    };
    store.write(held(0, vec![put("a", "1"), put("b", "1")])).unwrap();
    store.sync().unwrap();
    assert!(store.projections_wanted(), "two records: a cut is due, so the writer is asked");
    store.write(held(1, vec![put("c", "1")])).unwrap();
    store.sync().unwrap();
    // Another thread's write in between (the background check records how far it verified).
    store.write(WriteBatch { meta: vec![("verified", vec![1])], ..Default::default() }).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(!f.path().exists(), "a snapshot after a batch that held records back");
    assert!(store.persist_projections().is_err(), "nor at a stop that comes before them");
    assert!(!f.path().exists());
    assert!(store.projections_wanted(), "still asked");
    append(&store, 2, vec![put("held", "1")]); // what the writer held back, then no more
    store.wait_for_cut().unwrap();
    assert_eq!(store.snapshot_size().unwrap(), 3, "cut right after the batch that carried them");
    assert!(!store.projections_wanted(), "nothing left in the active layer");
}

#[test]
fn a_cut_waits_for_the_log_to_be_synced() {
    let f = Fixture::new();
    let store = f.open(1);
    store
        .write(WriteBatch {
            entries: vec![(0, b"entry 0".to_vec())],
            projections: vec![put("a", "1")],
            projected_size: Some(1),
            ..Default::default()
        })
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(!f.path().exists(), "a snapshot of an entry that is not durable");
    store.sync().unwrap();
    store.wait_for_cut().unwrap();
    assert_eq!(Snapshot::read(&f.path()).unwrap().map(|s| s.size()), Some(1));
}

#[test]
fn clearing_the_projections_removes_the_snapshot() {
    let f = Fixture::new();
    let store = f.open(1_000);
    append(&store, 0, vec![put("a", "1")]);
    store.persist_projections().unwrap();
    assert!(f.path().exists());
    store.clear_projections(&[KS]).unwrap();
    assert!(!f.path().exists(), "a rebuild that stops now would find the old snapshot");
    assert!(all(&store).is_empty());
    assert!(store.projected_size().is_err(), "half rebuilt projections have no size");
}

#[test]
fn a_walk_merges_every_layer_across_its_chunks() {
    let f = Fixture::new();
    let store = f.open(1_000_000);
    let n = WALK_CHUNK * 2 + 17;
    let keys: Vec<String> = (0..n).map(|i| format!("k{i:06}")).collect();
    append(&store, 0, keys.iter().map(|k| put(k, "base")).collect());
    store.persist_projections().unwrap(); // now the base
    // Over it: every third record deleted, every fifth changed, new ones in between.
    let mut writes = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        if i % 3 == 0 {
            writes.push(delete(k));
        } else if i % 5 == 0 {
            writes.push(put(k, "new"));
        }
        if i % 7 == 0 {
            writes.push(put(&format!("{k}+"), "added"));
        }
    }
    append(&store, 1, writes);
    let mut expected = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        if i % 3 != 0 {
            expected.push((k.clone(), if i % 5 == 0 { "new" } else { "base" }.to_string()));
        }
        if i % 7 == 0 {
            expected.push((format!("{k}+"), "added".to_string()));
        }
    }
    assert_eq!(all(&store), expected);
    let scanned: Vec<(String, String)> = store
        .scan_prefix(KS, b"k00001")
        .unwrap()
        .into_iter()
        .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
        .collect();
    let want: Vec<_> = expected.iter().filter(|(k, _)| k.starts_with("k00001")).cloned().collect();
    assert_eq!(scanned, want);
    assert_eq!(store.get(KS, b"k000000").unwrap(), None);
    assert_eq!(store.get(KS, b"k000010").unwrap(), Some(b"new".to_vec()));
    assert_eq!(store.get(KS, b"k000001").unwrap(), Some(b"base".to_vec()));
    assert_eq!(store.get(Keyspace("other"), b"k000001").unwrap(), None);
}

#[test]
fn a_staged_batch_reaches_the_inner_store_only_when_applied() {
    let dir = tempfile::tempdir().unwrap();
    let inner = MemoryStore::new();
    let store =
        LayeredStore::open(Arc::new(inner.reopen()), &dir.path().join("p.snap"), 1_000).unwrap();
    let staged = store
        .stage(WriteBatch {
            entries: vec![(0, b"entry 0".to_vec())],
            projections: vec![put("a", "1")],
            projected_size: Some(1),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(inner.size().unwrap(), 0, "sled waits for the syncer");
    assert_eq!(store.size().unwrap(), 1);
    assert_eq!(all(&store), [("a".to_string(), "1".to_string())]);
    store.apply_staged(staged).unwrap();
    assert_eq!(inner.entry(0).unwrap(), Some(b"entry 0".to_vec()));
}

#[test]
fn after_a_failed_apply_nothing_more_is_staged_synced_or_cut() {
    use crate::store::faulty::{Fault, FaultyStore};
    let dir = tempfile::tempdir().unwrap();
    let faulty = FaultyStore::new(Arc::new(MemoryStore::new()), Fault::Write { n: 1, full: false });
    let store = LayeredStore::open(Arc::new(faulty), &dir.path().join("p.snap"), 1).unwrap();
    let batch = |position: u64| WriteBatch {
        entries: vec![(position, format!("entry {position}").into_bytes())],
        projections: vec![put(&format!("k{position}"), "v")],
        projected_size: Some(position + 1),
        ..Default::default()
    };
    let staged = store.stage(batch(0)).unwrap();
    assert!(store.apply_staged(staged).is_err(), "the inner write fails");
    assert!(store.stage(batch(1)).is_err(), "the projections are ahead of the log now");
    assert!(store.sync().is_err());
    assert!(store.persist_projections().is_err(), "no snapshot of entries never written");
    assert!(!dir.path().join("p.snap").exists());
}

/// A store over a clean stop's snapshot of eight records, opened to cut after every record
/// (a quarter of the base is two), pacing copies above `above` entries a second.
fn eight_records_cut(f: &Fixture, above: Option<f64>) -> LayeredStore {
    f.stopped_cleanly_with((0..8).map(|i| put(&format!("base {i}"), "1")).collect());
    let store = f.open(1);
    match above {
        Some(rate) => store.pacing_copies(rate),
        None => store,
    }
}

#[test]
fn a_copy_cuts_when_the_active_layer_matches_the_base_not_at_a_quarter_of_it() {
    let f = Fixture::new();
    let store = eight_records_cut(&f, Some(0.0)); // any growth is a copy's
    for position in 1..8 {
        append(&store, position, vec![put(&format!("new {position}"), "1")]);
        store.wait_for_cut().unwrap();
        assert_eq!(store.snapshot_size().unwrap(), 1, "a cut after {position} new records");
    }
    append(&store, 8, vec![put("new 8", "1")]);
    store.wait_for_cut().unwrap();
    assert_eq!(store.snapshot_size().unwrap(), 9, "eight records changed: cut");
}

#[test]
fn slow_growth_cuts_at_a_quarter_of_the_base_even_when_pacing_copies() {
    for above in [None, Some(f64::INFINITY)] {
        let f = Fixture::new();
        let store = eight_records_cut(&f, above);
        append(&store, 1, vec![put("new 1", "1")]);
        store.wait_for_cut().unwrap();
        assert_eq!(store.snapshot_size().unwrap(), 1, "one record is less than a quarter");
        append(&store, 2, vec![put("new 2", "1")]);
        store.wait_for_cut().unwrap();
        assert_eq!(store.snapshot_size().unwrap(), 3, "two records are a quarter ({above:?})");
    }
}
