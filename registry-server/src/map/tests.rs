//! The map's own tests: records, loads, the background decoding, publication.

use super::*;

#[test]
fn a_new_leaf_grows_a_full_bucket_by_a_little_and_keeps_it_sorted() {
    let mut buckets = MapBuckets::empty();
    // Enough identifiers that one bucket holds a few dozen.
    for n in 0..3_000_000u32 {
        let id = evse(n);
        if map::bucket_of(&map::key(&id)) == 7 {
            buckets.set_latest(&id, u64::from(n)).unwrap();
        }
    }
    let Slot::Held(seven) = &mut buckets.slots[7] else { panic!("a new log's are held") };
    Arc::make_mut(seven).shrink_to_fit(); // as decoded
    let full = seven.len();
    assert!(full > 16, "{full} leaves");
    let extra = (3_000_000u32..).map(evse).find(|id| map::bucket_of(&map::key(id)) == 7).unwrap();
    buckets.set_latest(&extra, 1).unwrap();
    let Slot::Held(bucket) = &buckets.slots[7] else { panic!("changed, so held") };
    assert_eq!(bucket.len(), full + 1);
    assert!(bucket.capacity() <= full + full / 16 + 1, "{} for {full}", bucket.capacity());
    assert!(bucket.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
    assert_eq!(buckets.latest(&extra).unwrap(), Some(1));
}

fn evse(n: u32) -> Identifier {
    Identifier { kind: registry_core::event::IdentifierKind::Evse, value: format!("DE*ABC*E{n}") }
}

#[test]
fn a_batch_that_needs_no_root_leaves_the_hashing_to_the_next_that_does() {
    let mut writer = MapWriter::new(Arc::default());
    writer.open(MapBuckets::empty(), 0);
    for batch in 0..3u32 {
        for n in batch * 100..(batch + 1) * 100 {
            writer.buckets().set_latest(&evse(n), u64::from(n)).unwrap();
        }
        writer.finish_batch(false);
        assert_eq!(writer.root(), None, "no root while buckets wait to be hashed");
    }
    assert!(writer.publication(300).nodes.is_empty(), "no tree nodes to show readers yet");
    // A replica's copy of nothing under a checkpoint that signs the root (on reconnecting).
    writer.finish_batch(true);
    let from_scratch = writer.buckets().tree().root();
    assert_eq!(writer.root(), Some(from_scratch), "a batch of nothing hashes what was put off");
    writer.buckets().set_latest(&evse(300), 300).unwrap();
    writer.finish_batch(true);
    let from_scratch = writer.buckets().tree().root();
    assert_eq!(writer.root(), Some(from_scratch), "every bucket hashed, once");
    assert!(!writer.publication(301).nodes.is_empty(), "the changed nodes, for readers");
}

#[test]
fn bucket_records_are_held_back_until_asked_for_and_then_written_once() {
    let store: Arc<dyn LogStore> = Arc::new(crate::store::memory::MemoryStore::new());
    let mut writer = MapWriter::new(Arc::default());
    writer.open(MapBuckets::empty(), 0);
    let mut changed = BTreeSet::new();
    for n in 0..200u32 {
        writer.buckets().set_latest(&evse(n), u64::from(n)).unwrap();
        changed.insert(map::bucket_of(&map::key(&evse(n))));
        if n % 50 == 49 {
            writer.finish_batch(true);
        }
    }
    assert!(writer.holds_back(), "four batches changed buckets, none wrote them");
    let mut view = View::new(store.as_ref());
    writer.write_held_back(&mut view);
    assert_eq!(view.len(), changed.len(), "each changed bucket once, as it is now");
    assert!(!writer.holds_back());
    let mut again = View::new(store.as_ref());
    writer.write_held_back(&mut again);
    assert_eq!(again.len(), 0, "nothing changed since");
    store
        .write(crate::store::WriteBatch { projections: view.into_writes(), ..Default::default() })
        .unwrap();
    let loaded = MapBuckets::load(&store).unwrap();
    assert_eq!(loaded.tree().root(), writer.buckets().tree().root(), "the records are the map");
}

/// A store holding the records of identifiers `0..n` at positions `0..n`, and the map they
/// make, decoded.
fn stored_map(n: u32) -> (Arc<dyn LogStore>, MapBuckets) {
    let store: Arc<dyn LogStore> = Arc::new(crate::store::memory::MemoryStore::new());
    let mut decoded = MapBuckets::empty();
    for i in 0..n {
        decoded.set_latest(&evse(i), u64::from(i)).unwrap();
    }
    let mut view = View::new(store.as_ref());
    decoded.write_unwritten(&mut view);
    let batch = crate::store::WriteBatch { projections: view.into_writes(), ..Default::default() };
    store.write(batch).unwrap();
    (store, decoded)
}

#[test]
fn a_loaded_bucket_stays_in_the_store_until_the_writer_changes_it() {
    let (store, decoded) = stored_map(3_000);
    let mut loaded = MapBuckets::load(&store).unwrap();
    assert!(decoded.held() > 2_000, "{} buckets hold something", decoded.held());
    assert_eq!(loaded.held(), 0, "nothing decoded at the load");
    assert_eq!(loaded.tree().root(), decoded.tree().root(), "hashed from the records");
    for i in [0, 1_234, 2_999] {
        assert_eq!(loaded.latest(&evse(i)).unwrap(), Some(u64::from(i)), "read from the store");
    }
    assert_eq!(loaded.latest(&evse(3_000)).unwrap(), None);
    assert_eq!(loaded.held(), 0, "reading decodes nothing for good");
    loaded.set_latest(&evse(7), 70).unwrap();
    loaded.set_latest(&evse(3_001), 71).unwrap();
    assert!((1..=2).contains(&loaded.held()), "only the changed buckets are decoded");
    assert_eq!(loaded.latest(&evse(7)).unwrap(), Some(70));
    assert_eq!(loaded.latest(&evse(8)).unwrap(), Some(8));
    let mut changed = MapBuckets::empty();
    for i in 0..3_002 {
        let position = match i {
            7 => 70,
            3_000 => continue,
            3_001 => 71,
            i => u64::from(i),
        };
        changed.set_latest(&evse(i), position).unwrap();
    }
    assert_eq!(loaded.tree().root(), changed.tree().root(), "stored and held hash alike");
}

#[test]
fn a_stored_bucket_changed_behind_the_writer_is_refused_not_used() {
    let (store, _) = stored_map(500);
    let loaded = MapBuckets::load(&store).unwrap();
    let index = map::bucket_of(&map::key(&evse(1)));
    let mut other = vec![([0u8; 32], 1u64)];
    other[0].0[0] = 1;
    store
        .write(crate::store::WriteBatch {
            projections: vec![crate::store::ProjectionWrite::put((
                MAP,
                index.to_be_bytes().to_vec(),
                encode(&other),
            ))],
            ..Default::default()
        })
        .unwrap();
    let mut loaded = loaded;
    let error = loaded.set_latest(&evse(1), 9).unwrap_err();
    assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
    assert!(loaded.latest(&evse(1)).is_err(), "not answered from a record it cannot trust");
}

/// Rewrites bucket `index`'s record in `store` to hold one unrelated leaf.
fn rewrite_behind(store: &Arc<dyn LogStore>, index: u16) {
    let other: Bucket = vec![([1; 32], 1)];
    let record =
        crate::store::ProjectionWrite::put((MAP, index.to_be_bytes().to_vec(), encode(&other)));
    let batch = crate::store::WriteBatch { projections: vec![record], ..Default::default() };
    store.write(batch).unwrap();
}

fn until_decoded(buckets: &MapBuckets, index: u16) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if buckets.decoded.with(index, |_| ()).is_some() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    false
}

#[test]
fn buckets_decoded_in_the_background_spare_the_writer_its_reads_of_the_store() {
    let (store, _) = stored_map(3_000);
    let mut loaded = MapBuckets::load(&store).unwrap();
    let first = map::bucket_of(&map::key(&evse(1)));
    let second = map::bucket_of(&map::key(&evse(2)));
    assert_ne!(first, second);
    // Rewritten before the thread reads it: its hash is not the load's, so it is not used.
    rewrite_behind(&store, second);
    // Read from the store by the writer before the thread got to it: not decoded twice.
    let early = (3..).map(evse).find(|id| {
        let b = map::bucket_of(&map::key(id));
        b != first && b != second
    });
    let early = early.unwrap();
    loaded.set_latest(&early, 3_333).unwrap();
    loaded.decode_in_background();
    assert!(until_decoded(&loaded, first), "decoded within 20 s");
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(loaded.decoded.with(second, |_| ()).is_none(), "a record changed since the load");
    let early_bucket = map::bucket_of(&map::key(&early));
    assert!(loaded.decoded.with(early_bucket, |_| ()).is_none(), "the writer has it already");
    assert_eq!(loaded.latest(&early).unwrap(), Some(3_333));
    // From here the store's record of `first` is wrong too: the writer must not read it.
    rewrite_behind(&store, first);
    assert_eq!(loaded.latest(&evse(1)).unwrap(), Some(1), "answered from the decoded bucket");
    loaded.set_latest(&evse(1), 10).unwrap();
    assert_eq!(loaded.latest(&evse(1)).unwrap(), Some(10));
    assert!(loaded.decoded.with(first, |_| ()).is_none(), "taken, not kept twice");
    assert!(loaded.set_latest(&evse(2), 20).is_err(), "the rewritten record is refused");
}

#[test]
fn the_background_decoding_lets_go_of_the_store() {
    let (store, _) = stored_map(300);
    let loaded = MapBuckets::load(&store).unwrap();
    loaded.decode_in_background();
    drop(loaded);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while Arc::strong_count(&store) > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert_eq!(Arc::strong_count(&store), 1, "the thread let go of the store");
}

#[test]
fn a_reader_waits_for_the_publication_of_a_stored_bucket_the_writer_wrote_out() {
    let (store, _) = stored_map(500);
    let shared = Arc::new(SharedMap::default());
    let mut writer = MapWriter::new(shared.clone());
    writer.open(MapBuckets::load(&store).unwrap(), 500);
    let index = map::bucket_of(&map::key(&evse(1)));
    assert_eq!(shared.bucket(500, index).unwrap().unwrap().len(), writer.buckets().held_len(index));
    // The writer changes the bucket and writes its record out (a cut) before the batch
    // that changed it is published.
    writer.buckets().set_latest(&evse(1), 501).unwrap();
    writer.finish_batch(true);
    let publication = writer.publication(501);
    let mut view = View::new(store.as_ref());
    writer.write_held_back(&mut view);
    let batch = crate::store::WriteBatch { projections: view.into_writes(), ..Default::default() };
    store.write(batch).unwrap();
    assert_eq!(shared.bucket(500, index).unwrap(), None, "the record no longer has its hash");
    let reader = {
        let shared = shared.clone();
        std::thread::spawn(move || shared.latest(&evse(1)).unwrap())
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    publication.publish();
    assert_eq!(reader.join().unwrap(), Some(501), "asked again once published");
    let bucket = shared.bucket(501, index).unwrap().unwrap();
    assert_eq!(
        map::bucket_hash(index, &bucket),
        shared.snapshot(501, &[index]).unwrap().paths[&index].0
    );
}

#[test]
fn readers_see_a_batch_only_once_published_and_never_the_writer_s_later_changes() {
    let shared = Arc::new(SharedMap::default());
    let mut writer = MapWriter::new(shared.clone());
    writer.open(MapBuckets::empty(), 0);
    writer.buckets().set_latest(&evse(1), 10).unwrap();
    writer.finish_batch(true);
    let publication = writer.publication(11);
    assert_eq!(shared.latest(&evse(1)).unwrap(), None, "not durable yet");
    publication.publish();
    assert_eq!(shared.latest(&evse(1)).unwrap(), Some(10));
    // The published bucket is shared with the writer's: its next change copies it.
    writer.buckets().set_latest(&evse(1), 20).unwrap();
    assert_eq!(shared.latest(&evse(1)).unwrap(), Some(10), "the writer's change is its own");
    let index = map::bucket_of(&map::key(&evse(1)));
    let bucket = shared.bucket(11, index).unwrap().unwrap();
    let snapshot = shared.snapshot(11, &[index]).unwrap();
    assert_eq!(map::bucket_hash(index, &bucket), snapshot.paths[&index].0, "tree and bucket agree");
    assert!(shared.bucket(12, index).unwrap().is_none(), "only at the published size");
    writer.finish_batch(true);
    writer.publication(12).publish();
    assert_eq!(shared.latest(&evse(1)).unwrap(), Some(20));
    assert_eq!(shared.snapshot(12, &[]).unwrap().root, writer.root().unwrap());
}

#[test]
fn a_bucket_record_is_exactly_what_postcard_writes() {
    // Positions around every varint length boundary, and buckets of 0 to 300 leaves (the
    // count's own varint grows at 128).
    let positions = [
        0,
        1,
        127,
        128,
        255,
        16_383,
        16_384,
        1 << 21,
        (1 << 28) + 5,
        1 << 35,
        u64::MAX - 1,
        u64::MAX,
    ];
    for n in [0usize, 1, 2, 127, 128, 300] {
        let leaves: Bucket = (0..n)
            .map(|i| {
                let mut key = [0u8; 32];
                key[0] = (i % 256) as u8;
                key[31] = (i / 256) as u8 ^ 0xa5;
                (key, positions[i % positions.len()].wrapping_add(i as u64 / 12))
            })
            .collect();
        let ours = encode(&leaves);
        assert_eq!(ours, postcard::to_stdvec(&leaves).unwrap(), "{n} leaves");
        assert_eq!(decode_bucket(&ours).unwrap(), leaves);
        assert_eq!(record_hash(n as u16, &ours).unwrap(), map::bucket_hash(n as u16, &leaves));
        assert_eq!(postcard::from_bytes::<Bucket>(&ours).unwrap(), leaves);
    }
}

#[test]
fn a_damaged_bucket_record_is_refused_not_misread() {
    let leaves: Bucket = vec![([7; 32], 300), ([9; 32], u64::MAX)];
    let record = encode(&leaves);
    for cut in 0..record.len() {
        assert!(decode_bucket(&record[..cut]).is_err(), "cut at {cut}");
    }
    let mut longer = record.clone();
    longer.push(0);
    assert!(decode_bucket(&longer).is_err(), "a trailing byte");
    // A count far beyond the record, and a position of eleven bytes.
    assert!(decode_bucket(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    let mut overlong = vec![1];
    overlong.extend_from_slice(&[0; 32]);
    overlong.extend_from_slice(&[0xff; 10]);
    overlong.push(0);
    assert!(decode_bucket(&overlong).is_err());
    assert_eq!(decode_bucket(&record).unwrap(), leaves);
}
