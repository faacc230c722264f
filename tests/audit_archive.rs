//! Audit archives: export, offline verification, resumption, following, and tamper detection.
//! For an archive of a few thousand entries, a single byte flipped at 1,000 random places of the
//! stored entries is always detected and blamed on the right entry; so is a flipped byte of the
//! checkpoint.

use std::path::Path;

use indicatif::ProgressBar;
use rand::Rng;
use registry_client::archive::{self, Archive, WIDTH};
use registry_client::audit;
use registry_client::{KeySubmission, Order, RegistryClient};
use registry_tests::{Fixture, meter_key, spki_hex, t};

/// Registrations (each with its confirmation), relocations and deactivations from 8 concurrent
/// operators' tasks until the log holds at least `entries` entries.
async fn busy_log(f: &Fixture, entries: u64) {
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let operator = format!("DE*B{:02}", CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    let op = f.operator(&operator).await;
    let mut tasks = Vec::new();
    for task in 0..8u64 {
        let (client, op, operator) = (f.client.clone(), op.clone(), operator.clone());
        let per_task = entries / 8 / 2 + 1;
        tasks.push(tokio::spawn(async move {
            for i in 0..per_task {
                let meter = meter_key();
                let evse = format!("{operator}*E{task}X{i}");
                client
                    .submit(
                        &op,
                        &Order::Register {
                            key: KeySubmission {
                                meter_serial: Some(format!("{operator}-M{task}-{i}")),
                                ..KeySubmission::new(spki_hex(&meter))
                            },
                            evse_ids: vec![evse],
                            effective_at: Some(t("2026-01-01T00:00:00Z")),
                        },
                    )
                    .await
                    .unwrap();
                if i % 10 == 3 {
                    registry_tests::decommission(&client, &op, &meter, "2026-02-01T00:00:00Z")
                        .await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

fn key_of(f: &Fixture) -> Vec<u8> {
    let pem =
        std::fs::read_to_string(f.registry.config.data_dir.join("registry-key.pub.pem")).unwrap();
    registry_core::keys::p256_spki_der_from_pem(&pem).unwrap()
}

/// (file, first byte, end byte, position) of every stored entry, length prefix included.
fn entry_spans(dir: &Path, size: u64) -> Vec<(std::path::PathBuf, usize, usize, u64)> {
    let mut out = Vec::new();
    for n in 0..size.div_ceil(WIDTH) {
        let width = if (n + 1) * WIDTH <= size { WIDTH } else { size % WIDTH };
        let path = archive::bundle_path(dir, n, width);
        let bytes = std::fs::read(&path).unwrap();
        let mut offset = 0;
        for i in 0..width {
            let len = u16::from_be_bytes([bytes[offset], bytes[offset + 1]]) as usize;
            out.push((path.clone(), offset, offset + 2 + len, n * WIDTH + i));
            offset += 2 + len;
        }
    }
    out
}

/// The readable view holds exactly one line per archived entry, in order.
fn assert_readable_view(archive: &Archive, size: u64) {
    let jsonl = std::fs::read_to_string(archive.dir().join("entries.jsonl")).unwrap();
    let positions: Vec<u64> = jsonl
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["position"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(positions, (0..size).collect::<Vec<_>>(), "entries.jsonl is one line per entry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_verifies_and_every_flipped_byte_is_caught_at_the_right_entry() {
    let f = Fixture::start().await;
    busy_log(&f, 2000).await;
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::new(&dir.path().join("archive"));
    let exported = audit::export(&f.client, &archive, None, &ProgressBar::hidden()).await.unwrap();
    assert!(exported.size >= 2000, "{exported:?}");
    let key = key_of(&f);
    let verified = audit::verify(&archive, &key, None, &ProgressBar::hidden()).unwrap();
    assert_eq!(verified.checkpoint.size, exported.size);
    assert!(verified.keys > 900);
    let jsonl = std::fs::read_to_string(archive.dir().join("entries.jsonl")).unwrap();
    assert_eq!(jsonl.lines().count() as u64, exported.size, "one readable line per entry");

    // 1,000 single-byte flips in the stored entries, checked on two threads with their own copy.
    let spans = entry_spans(archive.dir(), exported.size);
    let key = std::sync::Arc::new(key);
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (spans, key) = (spans.clone(), key.clone());
            let copy = dir.path().join(format!("copy{w}"));
            registry_tests::copy_dir(archive.dir(), &copy);
            std::thread::spawn(move || {
                let archive = Archive::new(&copy);
                let mut rng = rand::rng();
                let mut wrong = Vec::new();
                for _ in 0..500 {
                    let (path, start, end, position) =
                        spans[rng.random_range(0..spans.len())].clone();
                    let path = copy.join(
                        path.strip_prefix(spans[0].0.ancestors().nth(3).unwrap()).unwrap_or(&path),
                    );
                    let mut bytes = std::fs::read(&path).unwrap();
                    let at = rng.random_range(start..end);
                    let mask: u8 = rng.random_range(1..=255);
                    bytes[at] ^= mask;
                    std::fs::write(&path, &bytes).unwrap();
                    match audit::verify(&archive, &key, None, &ProgressBar::hidden()) {
                        Ok(_) => wrong.push(format!(
                            "flip at {}:{at} (entry {position}) went unnoticed",
                            path.display()
                        )),
                        Err(f) if f.position != Some(position) => wrong.push(format!(
                            "flip in entry {position} (byte {}) blamed on {:?}: {}",
                            at - start,
                            f.position,
                            f.reason
                        )),
                        Err(_) => {}
                    }
                    bytes[at] ^= mask;
                    std::fs::write(&path, &bytes).unwrap();
                }
                wrong
            })
        })
        .collect();
    let wrong: Vec<String> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert!(wrong.is_empty(), "{} of 1000 flips mishandled:\n{}", wrong.len(), wrong.join("\n"));

    // 1,000 single-byte flips of the checkpoint.
    let cp_path = archive.dir().join("checkpoint");
    let original = std::fs::read(&cp_path).unwrap();
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let mut bytes = original.clone();
        let at = rng.random_range(0..bytes.len());
        bytes[at] ^= rng.random_range(1..=255u8);
        std::fs::write(&cp_path, &bytes).unwrap();
        let result = audit::verify(&archive, &key, None, &ProgressBar::hidden());
        assert!(result.is_err(), "a flip at byte {at} of the checkpoint went unnoticed");
    }
    std::fs::write(&cp_path, &original).unwrap();
    audit::verify(&archive, &key, None, &ProgressBar::hidden()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_resumes_and_refuses_a_registry_that_rewrote_its_log() {
    let f = Fixture::start().await;
    busy_log(&f, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::new(&dir.path().join("archive"));
    let first = audit::export(&f.client, &archive, None, &ProgressBar::hidden()).await.unwrap();
    let earlier_checkpoint = archive.checkpoint_text().unwrap();
    busy_log(&f, 300).await;
    let second = audit::export(&f.client, &archive, None, &ProgressBar::hidden()).await.unwrap();
    assert_eq!(second.previous_size, first.size);
    assert_eq!(second.fetched, second.size - first.size, "only the new entries are fetched");
    assert_readable_view(&archive, second.size);
    let key = key_of(&f);
    let verified =
        audit::verify(&archive, &key, Some(&earlier_checkpoint), &ProgressBar::hidden()).unwrap();
    assert_eq!(verified.checkpoint.size, second.size);
    // Re-fetching from an earlier position finds the same entries.
    let again = audit::export(&f.client, &archive, Some(first.size / 2), &ProgressBar::hidden())
        .await
        .unwrap();
    assert_eq!(again.size, second.size);
    audit::verify(&archive, &key, None, &ProgressBar::hidden()).unwrap();
    assert_readable_view(&archive, again.size);
    // Another process resumes the same directory.
    busy_log(&f, 30).await;
    let reopened = Archive::new(archive.dir());
    let third = audit::export(&f.client, &reopened, None, &ProgressBar::hidden()).await.unwrap();
    audit::verify(&reopened, &key, None, &ProgressBar::hidden()).unwrap();
    assert_readable_view(&reopened, third.size);

    // An earlier checkpoint the archive does not extend is reported.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Fixture::start().await;
    busy_log(&other, 50).await;
    let other_archive = Archive::new(&other_dir.path().join("a"));
    audit::export(&other.client, &other_archive, None, &ProgressBar::hidden()).await.unwrap();
    let foreign = other_archive.checkpoint_text().unwrap();
    assert!(
        audit::verify(&archive, &key, Some(&foreign), &ProgressBar::hidden()).is_err(),
        "signed by another registry"
    );

    // The registry's data is copied and the copy diverges, signing with the same key: the
    // archive of the original refuses to continue from the copy.
    let Fixture { registry, client, admin } = f;
    drop(client);
    registry.server.shutdown();
    registry.server.wait().await.unwrap();
    let fork_dir = tempfile::tempdir().unwrap();
    let fork = registry_tests::start_fork(&registry.config, fork_dir.path()).await;
    let fork_client =
        RegistryClient::connect(&format!("http://{}", fork.local_addr())).await.unwrap();
    let honest = registry_server::registry::start_registry(
        &registry.config,
        registry_server::log::system_clock(),
    )
    .await
    .unwrap();
    let honest_client =
        RegistryClient::connect(&format!("http://{}", honest.local_addr())).await.unwrap();
    // Diverge: the honest registry adds one operator, the fork another (both signed by the same admin).
    for (c, id) in [(&honest_client, "DE*HON"), (&fork_client, "DE*FRK")] {
        c.submit(
            &admin,
            &Order::AddOperator {
                operator_id: id.into(),
                name: id.into(),
                public_keys: vec![registry_core::keys::P256KeyPair::generate().public_key_pem()],
            },
        )
        .await
        .unwrap();
    }
    audit::export(&honest_client, &archive, None, &ProgressBar::hidden()).await.unwrap();
    let err =
        audit::export(&fork_client, &archive, None, &ProgressBar::hidden()).await.unwrap_err();
    assert!(err.to_string().contains("forked or rewrote"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_keeps_its_archive_current_and_checked() {
    let f = Fixture::start().await;
    busy_log(&f, 40).await;
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::new(&dir.path().join("mirror"));
    let target = f.log_size() + 120;
    let writer = {
        let client = f.client.clone();
        let op = f.operator("DE*XYZ").await;
        tokio::spawn(async move {
            for i in 0..70 {
                client
                    .submit(
                        &op,
                        &Order::Register {
                            key: KeySubmission::new(spki_hex(&meter_key())),
                            evse_ids: vec![format!("DE*XYZ*E{i}")],
                            effective_at: Some(t("2026-01-01T00:00:00Z")),
                        },
                    )
                    .await
                    .unwrap();
            }
        })
    };
    let mut sizes = Vec::new();
    let size =
        audit::follow(&f.client, &archive, Some(target), |cp| sizes.push(cp.size)).await.unwrap();
    writer.await.unwrap();
    assert!(size >= target);
    assert!(sizes.windows(2).all(|w| w[0] < w[1]), "checkpoints only grow: {sizes:?}");
    assert!(sizes.len() > 2, "followed several checkpoints: {sizes:?}");
    let verified = audit::verify(&archive, &key_of(&f), None, &ProgressBar::hidden()).unwrap();
    assert_eq!(verified.checkpoint.size, size);
}

/// The replay checks signatures ahead on other cores against the keys it knows; a forged one
/// must still be caught at its own entry, with the same verdict as a one-by-one replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_signature_is_caught_at_its_entry_whether_checked_ahead_or_in_order() {
    use registry_core::command::SignedCommand;
    use registry_core::entry::{Entry, encode_entry};
    use registry_core::merkle::leaf_hash;
    use registry_core::replay::{Replayer, Step};

    let f = Fixture::start().await;
    busy_log(&f, 600).await;
    let entries: Vec<Vec<u8>> =
        f.client.entries(0, f.log_size()).await.unwrap().into_iter().map(|e| e.entry).collect();

    // The untouched log replays to the same state either way.
    let mut one = Replayer::new();
    for e in &entries {
        assert_eq!(one.push(e).unwrap(), Step::Ok);
    }
    let mut all = Replayer::new();
    for slice in entries.chunks(200) {
        assert_eq!(all.push_all(slice).unwrap(), Step::Ok);
    }
    assert_eq!(one.leaves(), all.leaves());
    assert_eq!(one.state().keys, all.state().keys);

    // A command deep into the log gets someone else's signature; the chain after it is redone,
    // so only the signature is wrong.
    let p = (300..entries.len())
        .find(|p| Entry::decode(&entries[*p]).unwrap().body.command.is_some())
        .expect("a command entry");
    let mut forged = entries.clone();
    let mut entry = Entry::decode(&forged[p]).unwrap();
    let envelope = entry.body.command.as_mut().unwrap();
    envelope.signature = SignedCommand::sign(
        envelope.command.clone(),
        &f.origin(),
        &registry_core::keys::P256KeyPair::generate(),
    )
    .signature;
    forged[p] = encode_entry(&entry.header, &entry.body.encode());
    for q in p + 1..forged.len() {
        let mut e = Entry::decode(&forged[q]).unwrap();
        e.header.prev_hash = leaf_hash(&forged[q - 1]);
        forged[q] = encode_entry(&e.header, &e.body.encode());
    }
    let mut one = Replayer::new();
    let in_order = forged.iter().find_map(|e| one.push(e).err()).expect("caught one by one");
    let mut all = Replayer::new();
    let ahead = forged
        .chunks(200)
        .find_map(|slice| all.push_all(slice).err())
        .expect("caught when checked ahead");
    assert_eq!(in_order, ahead);
    assert_eq!(ahead.position, Some(p as u64));
    assert!(ahead.reason.contains("signature does not verify"), "{ahead}");
}
