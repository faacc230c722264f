//! The sled store's own tests: the conformance suite, sealing, and sled's durability quirks.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::*;
use crate::store::conformance;

#[test]
fn the_sled_store_passes_the_conformance_suite() {
    conformance::run_all(&mut conformance::SledFactory::new());
}

/// Entries shaped like a registration and its confirmation, with the nodes their appends
/// complete.
fn realistic(store: &SledStore, count: u64) -> Vec<Vec<u8>> {
    let entries: Vec<Vec<u8>> = (0..count)
        .map(|p| {
            let key = hex::encode(Sha256::digest(p.to_be_bytes()));
            format!("{{operator DE*BEN evse DE*BEN*E{p} meter BENCH-{p:09} key {key} {key}}}")
                .into_bytes()
        })
        .collect();
    let mut tree = registry_core::merkle::Frontier::new();
    let mut nodes = Vec::new();
    for entry in &entries {
        nodes.extend(tree.push(registry_core::merkle::leaf_hash(entry)));
    }
    let entries_at = entries.iter().cloned().enumerate().map(|(p, e)| (p as u64, e)).collect();
    store.write(WriteBatch { entries: entries_at, nodes, ..Default::default() }).unwrap();
    entries
}

#[test]
fn verified_entries_are_sealed_in_whole_groups_and_take_fewer_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
    let entries = realistic(&store, 200);
    let plain: u64 = store.live_bytes().unwrap()[0].value_bytes;
    assert_eq!(store.seal(170).unwrap(), 160, "ten whole groups below 170");
    let live = store.live_bytes().unwrap();
    let (appended, sealed) = (&live[0], &live[6]);
    assert_eq!((appended.records, sealed.records), (40, 160));
    let sealed_plain: u64 = entries[..160].iter().map(|e| e.len() as u64).sum();
    assert!(sealed.value_bytes * 2 < sealed_plain, "{} of {sealed_plain}", sealed.value_bytes);
    assert!(appended.value_bytes < plain);
    assert_eq!(store.size().unwrap(), 200);
    assert_eq!(store.seal(200).unwrap(), 32);
    assert_eq!(store.size().unwrap(), 200, "the size of a log that ends on a group edge");
    for (p, entry) in entries.iter().enumerate() {
        assert_eq!(store.entry(p as u64).unwrap().as_ref(), Some(entry));
    }
}

#[test]
fn sealed_groups_leave_sled_for_the_group_file_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
    let entries = realistic(&store, 100);
    assert_eq!(store.seal(100).unwrap(), 96);
    store.sync().unwrap();
    let nodes: Vec<_> = (0..7).map(|level| store.node(level, 0).unwrap()).collect();
    let in_sled: usize = store.tree.iter().filter(|kv| kv.as_ref().unwrap().0[0] == ENTRY).count();
    assert_eq!(in_sled, 4, "only the entries of the group not yet whole stay in sled");
    let file = std::fs::metadata(dir.path().join(group_file::DATA_FILE)).unwrap().len();
    let plain: u64 = entries[..96].iter().map(|e| e.len() as u64).sum();
    assert!(file > 0 && file * 2 < plain, "the groups, compressed: {file} of {plain} bytes");
    drop(store);
    let store = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
    for (p, entry) in entries.iter().enumerate() {
        assert_eq!(store.entry(p as u64).unwrap().as_ref(), Some(entry), "entry {p}");
    }
    assert_eq!(store.entries(10, 100).unwrap().len(), 90);
    assert_eq!((0..7).map(|level| store.node(level, 0).unwrap()).collect::<Vec<_>>(), nodes);
    assert_eq!(store.size().unwrap(), 100);
}

#[test]
fn groups_an_earlier_version_sealed_into_sled_move_to_the_group_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
    let entries = realistic(&store, 200);
    // Groups 0..4 as an earlier version sealed them: `s` records in sled.
    let mut sealer = Sealer::new().unwrap();
    for start in (0..64).step_by(GROUP as usize) {
        let records: Vec<_> = store
            .tree
            .range(entry_key(start)..entry_key(start + GROUP))
            .map(|kv| kv.unwrap().1)
            .collect();
        let decoded: Vec<_> = records.iter().map(|r| decode_record(r).unwrap()).collect();
        store.tree.insert(sealed_key(start), sealer.seal(&decoded).unwrap()).unwrap();
        for p in start..start + GROUP {
            store.tree.remove(entry_key(p)).unwrap();
        }
    }
    drop(store);
    let store = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
    assert!(store.old_groups.load(Ordering::SeqCst));
    assert_eq!(store.entry(5).unwrap().as_ref(), Some(&entries[5]), "read where it is");
    assert_eq!(store.seal(200).unwrap(), 128, "moved groups are not sealed again");
    let live = store.live_bytes().unwrap();
    assert_eq!((live[0].records, live[5].records, live[6].records), (8, 0, 192));
    assert!(!store.old_groups.load(Ordering::SeqCst), "no old group is left in sled");
    drop(store);
    let store = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
    let read = store.entries(0, 200).unwrap();
    assert_eq!(read.into_iter().map(|(_, e)| e).collect::<Vec<_>>(), entries);
}

#[test]
fn a_reader_never_misses_an_entry_while_it_is_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path(), &SledOptions::default()).unwrap());
    let entries = realistic(&store, 4096);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reading = {
        let (store, entries, done) = (store.clone(), entries.clone(), done.clone());
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !done.load(Ordering::SeqCst) {
                let read = store.entries(0, 4096).unwrap();
                assert_eq!(read.len(), 4096, "round {rounds}");
                for (p, entry) in read {
                    assert_eq!(entry, entries[p as usize]);
                }
                let p = (rounds * 131) % 4096;
                assert_eq!(store.entry(p).unwrap().as_ref(), Some(&entries[p as usize]));
                rounds += 1;
            }
            rounds
        })
    };
    // One group at a time, so the reader walks across many seals.
    let mut sealed = 0;
    for up_to in (GROUP..=4096).step_by(GROUP as usize) {
        sealed += store.seal(up_to).unwrap();
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    done.store(true, Ordering::SeqCst);
    assert_eq!(sealed, 4096);
    assert!(reading.join().unwrap() > 1, "the reader read while entries were sealed");
    assert_eq!(store.live_bytes().unwrap()[0].records, 0);
}

#[test]
fn a_torn_snapshot_is_removed_before_opening() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
    let batch = WriteBatch { entries: vec![(0, b"entry".to_vec())], ..Default::default() };
    store.write(batch).unwrap();
    store.sync().unwrap();
    drop(store);
    let torn = dir.path().join("snap.FFFFFFFFFFFFFFFF.generating");
    std::fs::write(&torn, b"half a snapshot").unwrap();
    let store = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
    assert!(!torn.exists());
    assert_eq!(store.entry(0).unwrap(), Some(b"entry".to_vec()));
}

#[test]
fn a_directory_held_by_an_open_store_is_refused_with_the_lock_error() {
    let dir = tempfile::tempdir().unwrap();
    let held = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
    let brief =
        SledOptions { lock_wait: std::time::Duration::from_millis(200), ..SledOptions::default() };
    let second = SledStore::open(dir.path(), &brief);
    assert!(matches!(&second, Err(StoreError::Io(m)) if m.contains("lock")), "{:?}", second.err());
    drop(held);
    // Once it is dropped, a reopen in the same process succeeds (retrying while sled's
    // threads let go of it).
    for _ in 0..20 {
        drop(SledStore::open(dir.path(), &SledOptions::default()).unwrap());
    }
}

#[test]
fn an_open_waits_for_a_store_that_is_being_let_go_of() {
    let dir = tempfile::tempdir().unwrap();
    let held = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
    let releasing = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(held);
    });
    let started = std::time::Instant::now();
    let second = SledStore::open(dir.path(), &SledOptions::default());
    releasing.join().unwrap();
    assert!(second.is_ok(), "{:?}", second.err());
    assert!(started.elapsed() >= std::time::Duration::from_millis(250), "it waited for the lock");
}
