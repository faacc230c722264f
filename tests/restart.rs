//! A registry restarted on its data directory answers and decides exactly as before: the key
//! records and indexes it serves from memory are read back from disk, and the writer's rule
//! checks see every key registered earlier. (With a few hundred keys the background fill is done
//! before the first question; what happens while it runs is covered by `key_cache`'s unit tests.)

use registry_client::verify::Verifier;
use registry_client::{AsOf, KeySubmission, KeyTarget, Order, RegistryClient, command_bytes};
use registry_core::command::SignedCommand;
use registry_tests::{Fixture, decommission, meter_key, spki_hex, t, verdict_name};
use tonic::Code;

const KEYS: usize = 300;

fn register(key: &str, evse: &str) -> Order {
    Order::Register {
        key: KeySubmission::new(key),
        evse_ids: vec![evse.into()],
        effective_at: Some(t("2026-01-01T00:00:00Z")),
    }
}

/// The registry started again on `config`'s data directory, and a client of it.
async fn restarted(
    config: &registry_server::config::Config,
) -> (registry_server::server::Server<registry_server::machine::RegistryMachine>, RegistryClient) {
    let again =
        registry_server::registry::start_registry(config, registry_server::log::system_clock())
            .await
            .expect("restarts");
    let client = RegistryClient::connect(&format!("http://{}", again.local_addr()))
        .await
        .expect("client connects");
    (again, client)
}

async fn answers(client: &RegistryClient, as_of: u64) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for i in 0..KEYS {
        let evse = KeyTarget::Evse(format!("DE*ABC*E{i}"));
        let v = client
            .check(&evse, None, t("2026-06-01T00:00:00Z"), AsOf::Size(as_of))
            .await
            .expect("check answered")
            .validity
            .expect("a validity");
        out.push((verdict_name(&v).to_string(), v.candidates));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_registry_answers_and_decides_as_before() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let meters: Vec<_> = (0..KEYS).map(|_| meter_key()).collect();
    let commands = meters
        .iter()
        .enumerate()
        .map(|(i, m)| {
            SignedCommand::sign(
                command_bytes(&register(&spki_hex(m), &format!("DE*ABC*E{i}"))),
                &f.origin(),
                &op,
            )
        })
        .collect();
    for r in f.client.submit_many(commands).await.expect("bulk call") {
        r.expect("registered");
    }
    for m in meters.iter().step_by(7) {
        decommission(&f.client, &op, m, "2026-03-01T00:00:00Z").await;
    }
    let size = f.log_size();
    let before = answers(&f.client, size).await;
    assert!(before.iter().any(|(v, _)| v == "VALID") && before.iter().any(|(v, _)| v == "ENDED"));

    let Fixture { registry, client, admin: _ } = f;
    drop(client);
    registry.server.shutdown();
    registry.server.wait().await.expect("clean stop");
    let (again, client) = restarted(&registry.config).await;

    assert_eq!(answers(&client, size).await, before, "same answers on the same basis");

    // The rules still see the old keys: a duplicate and a second key on a bound EVSE are refused.
    let duplicate = client.submit(&op, &register(&spki_hex(&meters[1]), "DE*ABC*E9999")).await;
    assert_eq!(duplicate.expect_err("duplicate").code(), Some(Code::AlreadyExists));
    let overlap = client.submit(&op, &register(&spki_hex(&meter_key()), "DE*ABC*E1")).await;
    assert_eq!(overlap.expect_err("overlap").code(), Some(Code::FailedPrecondition));
    // And a key decommissioned before the restart can be decommissioned no more.
    let again_ended = client
        .submit(
            &op,
            &Order::Deactivate {
                fingerprint: meters[0].fingerprint_hex(),
                reason: registry_client::EndReason::Decommissioned,
                comment: String::new(),
                effective_at: Some(t("2026-04-01T00:00:00Z")),
            },
        )
        .await;
    assert_eq!(again_ended.expect_err("already ended").code(), Some(Code::FailedPrecondition));
    assert_eq!(again.reader().head().size, size, "refusals append nothing");

    // Proven answers and histories after the restart: the map's buckets were only hashed at
    // the start, and are read from the store as the proofs need them; a registration then
    // changes one, and the next proofs check against a root of changed and unchanged ones.
    let pem = std::fs::read_to_string(registry.config.data_dir.join("registry-key.pub.pem"))
        .expect("the registry's public key");
    let state = tempfile::tempdir().expect("temp dir");
    let mut verifier =
        Verifier::new(&client, Some(&pem), &state.path().join("v.json")).await.expect("verifier");
    let proven = |i: usize| KeyTarget::Evse(format!("DE*ABC*E{i}"));
    for i in [1, 2, 150, KEYS - 1] {
        let (r, _) = verifier
            .check(&client, &proven(i), None, t("2026-06-01T00:00:00Z"), AsOf::Head)
            .await
            .expect("a proven answer checks out");
        assert_eq!(verdict_name(&r.validity.expect("a validity")), &before[i].0);
    }
    let (history, _) = verifier
        .history(&client, proven(0).identifier(), AsOf::Head)
        .await
        .expect("a proven history checks out");
    assert_eq!(history.len(), 2, "registered, then decommissioned");
    let fresh = meter_key();
    client
        .submit(&op, &register(&spki_hex(&fresh), &format!("DE*ABC*E{KEYS}")))
        .await
        .expect("a registration after the restart");
    for i in [KEYS, 3, 151] {
        let (r, _) = verifier
            .check(&client, &proven(i), None, t("2026-06-01T00:00:00Z"), AsOf::Head)
            .await
            .expect("a proven answer checks out after a change");
        assert_eq!(verdict_name(&r.validity.expect("a validity")), "VALID");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_projections_v2_is_rebuilt_at_start() {
    use registry_server::store::{Keyspace, ProjectionWrite, WriteBatch};
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let meter = meter_key();
    f.client.submit(&op, &register(&spki_hex(&meter), "DE*ABC*E1")).await.expect("registered");
    let Fixture { registry, client, admin: _ } = f;
    drop(client);
    registry.server.shutdown();
    registry.server.wait().await.expect("clean stop");

    // What version 1 left: its completion mark and an operator index entry.
    let store = registry_server::server::open_store(&registry.config).expect("store opens");
    let mut old_entry = b"oDE*ABC\0".to_vec();
    old_entry.extend_from_slice(meter.fingerprint_hex().as_bytes());
    store
        .write(WriteBatch {
            meta: vec![("projections", b"complete v1".to_vec())],
            projections: vec![ProjectionWrite {
                keyspace: Keyspace("index"),
                key: old_entry,
                value: Some(1u64.to_be_bytes().to_vec()),
            }],
            ..Default::default()
        })
        .expect("written");
    store.sync().expect("synced");
    drop(store);

    let (again, client) = restarted(&registry.config).await;
    let store = again.reader().store().clone();
    assert!(store.scan_prefix(Keyspace("index"), b"o").unwrap().is_empty(), "rebuilt without it");
    assert_eq!(store.meta("projections").unwrap().as_deref(), Some(&b"complete v2"[..]));
    let v = client
        .check(&KeyTarget::Evse("DE*ABC*E1".into()), None, t("2026-06-01T00:00:00Z"), AsOf::Head)
        .await
        .expect("check answered")
        .validity
        .expect("a validity");
    assert_eq!(verdict_name(&v), "VALID");
    assert_eq!(v.fingerprint, meter.fingerprint_hex());
}

/// A log from before confirmation IDs were ordered holds confirmations under UUIDv5 IDs; a
/// registration retried on today's registry must still get that confirmation back, not none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_finds_a_confirmation_written_under_the_old_request_id() {
    use registry_core::lifecycle::{Proposal, RegistryAction};
    use registry_server::commands::ConfirmPolicy;
    use registry_server::machine::Job;

    // Manual confirmation, so the confirmation below is the only one.
    let f = Fixture::start_with(ConfirmPolicy::Manual).await;
    let op = f.operator("DE*ABC").await;
    let meter = meter_key();
    let signed = SignedCommand::sign(
        command_bytes(&register(&spki_hex(&meter), "DE*ABC*E1")),
        &f.origin(),
        &op,
    );
    let first = f.client.submit_signed(signed.clone()).await.expect("registration accepted");
    assert_eq!(first.confirmation_position, 0, "not confirmed under the manual policy");

    // Confirmed the way a registry before the change did: the same action under its UUIDv5.
    let action = RegistryAction::AutoConfirm {
        fingerprint: meter.fingerprint_hex(),
        registration: first.position,
    };
    let (_, digest) = action.request_id();
    let legacy = action.legacy_request_id().expect("confirmations had v5 IDs");
    let mut attempts = 0;
    let confirmed = loop {
        let job = Job { request_id: legacy, proposal: Proposal::Registry(action.clone()) };
        match f.registry.server.appender().append(legacy, digest, job).await {
            Ok(a) => break a.position,
            // Refused until a signed checkpoint covers the registration.
            Err(_) if attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the confirmation was never appended: {e:?}"),
        }
    };

    let Fixture { registry, client, admin: _ } = f;
    drop(client);
    registry.server.shutdown();
    registry.server.wait().await.expect("clean stop");
    let config = registry_server::config::Config {
        confirm_policy: ConfirmPolicy::Auto,
        ..registry.config.clone()
    };
    let (again, client) = restarted(&config).await;
    let retry = client.submit_signed(signed).await.expect("the retry is answered");
    assert!(retry.duplicate);
    assert_eq!(retry.position, first.position);
    assert_eq!(retry.confirmation_position, confirmed, "the confirmation under the old ID");
    assert!(retry.receipt.is_some(), "with a receipt");
    assert_eq!(again.reader().head().size, confirmed + 1, "nothing appended for the retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_accounts_for_a_stopped_registrys_keys_entries_and_files() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    for i in 0..40 {
        f.client
            .submit(&op, &register(&spki_hex(&meter_key()), &format!("DE*ABC*E{i}")))
            .await
            .expect("registered");
    }
    let size = f.log_size();
    let Fixture { registry, client, admin: _ } = f;
    drop(client);
    registry.server.shutdown();
    registry.server.wait().await.expect("clean stop");

    let usage = registry_server::usage::measure(&registry.config).expect("measured");
    assert_eq!((usage.keys, usage.entries), (40, size));
    let live = |part: &str| usage.live.iter().find(|d| d.part == part).expect(part).clone();
    assert_eq!(live("entries").records, Some(size), "one record per entry");
    assert!(live("entries").bytes > 40 * 300, "a registration entry is a few hundred bytes");
    let requests = live(registry_server::usage::REQUEST_INDEX).records;
    assert!(requests >= Some(40), "every command's request ID");
    assert_eq!(live("request index (older layout)").records, Some(0), "none left in sled");
    let part = |name: &str| usage.memory.iter().find(|m| m.part.starts_with(name)).expect(name);
    assert_eq!(part("decoded key records").records, Some(40));
    assert_eq!(part("identifier indexes").records, Some(40), "one group per EVSE ID");
    // The files hold the live data, and a snapshot of the projections from the clean stop.
    let live_total: u64 = usage.live.iter().map(|d| d.bytes).sum();
    assert!(usage.file_bytes() > live_total, "{usage:?}");
    assert!(usage.files.iter().any(|f| f.part == "projections.snap" && f.bytes > 0), "{usage:?}");
    let text = registry_server::usage::render(&usage);
    assert!(text.contains("40 keys") && text.contains("Merkle nodes"), "{text}");
}

/// Before snapshot version 04 the request index was kept in sled beside the log. The first
/// start after the upgrade replays the log from entry 0 (it cannot use the older snapshot),
/// writes the index with the projections and drops sled's copy; a retry still finds its entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_index_kept_in_sled_moves_to_the_projections_at_the_first_start() {
    use registry_server::store::sled::{SledOptions, SledStore};
    use registry_server::store::{LogStore, RequestRecord, WriteBatch};
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let order = register(&spki_hex(&meter_key()), "DE*ABC*E1");
    let signed = SignedCommand::sign(command_bytes(&order), &f.origin(), &op);
    let first = f.client.submit_signed(signed.clone()).await.expect("registration accepted");
    let request_id = registry_core::command::Command::decode(&signed.command)
        .expect("our own command decodes")
        .request_id;
    let Fixture { registry, client, admin: _ } = f;
    drop(client);
    registry.server.shutdown();
    registry.server.wait().await.expect("clean stop");

    // The older layout: the record in sled, and a snapshot this version does not read.
    let sled_dir = registry.config.data_dir.join("log");
    let record = RequestRecord { position: first.position, digest: signed.digest() };
    let stray = (uuid::Uuid::new_v4(), RequestRecord { position: 0, digest: [9; 32] });
    {
        let sled = SledStore::open(&sled_dir, &SledOptions::default()).expect("sled opens");
        let requests = vec![(request_id, record), stray];
        sled.write(WriteBatch { requests, ..Default::default() }).expect("written");
        sled.sync().expect("synced");
    }
    let snapshot = registry.config.data_dir.join(registry_server::server::SNAPSHOT_FILE);
    std::fs::remove_file(&snapshot).expect("the clean stop wrote a snapshot");

    let (again, client) = restarted(&registry.config).await;
    let retry = client.submit_signed(signed).await.expect("the retry is answered");
    assert!(retry.duplicate, "found through the index the replay wrote");
    assert_eq!(retry.position, first.position);
    let store = again.reader().store().clone();
    assert_eq!(store.request(&request_id).unwrap(), Some(record));
    assert_eq!(store.request(&stray.0).unwrap(), None, "only what the log says");
    drop(client);
    drop(store);
    again.shutdown();
    again.wait().await.expect("clean stop");
    let sled = SledStore::open(&sled_dir, &SledOptions::default()).expect("sled opens");
    assert_eq!(sled.request(&request_id).unwrap(), None, "sled's copy is gone");
    assert_eq!(sled.request(&stray.0).unwrap(), None);
}
