//! Every row of the key lifecycle (docs/DESIGN.md §3), end to end: a registry on a loopback port,
//! driven through `registry-client`, with the validity answers checked before, during and after
//! each change, and the *as known at* answers around a backdated deactivation.

use registry_client::{AsOf, EndReason, KeySubmission, KeyTarget, Order, View};
use registry_core::checkpoint::Checkpoint;
use registry_core::entry::Entry;
use registry_core::event::Event;
use registry_core::keys::P256KeyPair;
use registry_core::merkle;
use registry_core::note::NoteVerifier;
use registry_proto::pb;
use registry_server::commands::ConfirmPolicy;
use registry_tests::{Fixture, meter_key, spki_hex, t, verdict_name};

async fn check(f: &Fixture, key: KeyTarget, at: &str) -> pb::Validity {
    check_as_of(f, key, at, AsOf::Head).await.0
}

async fn check_as_of(
    f: &Fixture,
    key: KeyTarget,
    at: &str,
    as_of: AsOf,
) -> (pb::Validity, pb::Basis) {
    let r = f.client.check(&key, None, t(at), as_of).await.expect("lookup succeeds");
    (r.validity.expect("a verdict"), r.basis.expect("a basis"))
}

async fn expect(
    f: &Fixture,
    key: KeyTarget,
    at: &str,
    verdict: &str,
    fingerprint: &str,
) -> pb::Validity {
    let v = check(f, key.clone(), at).await;
    assert_eq!(
        (verdict_name(&v), v.fingerprint.as_str()),
        (verdict, fingerprint),
        "{key:?} at {at}"
    );
    v
}

fn evse(s: &str) -> KeyTarget {
    KeyTarget::Evse(s.into())
}

fn fp(k: &P256KeyPair) -> KeyTarget {
    KeyTarget::Fingerprint(k.fingerprint_hex())
}

async fn register(
    f: &Fixture,
    op: &P256KeyPair,
    key: KeySubmission,
    evses: &[&str],
    at: &str,
) -> pb::SubmitCommandResponse {
    f.client
        .submit(
            op,
            &Order::Register {
                key,
                evse_ids: evses.iter().map(|e| e.to_string()).collect(),
                effective_at: Some(t(at)),
            },
        )
        .await
        .expect("registration accepted")
}

fn new_key(meter: &P256KeyPair, serial: &str) -> KeySubmission {
    KeySubmission {
        meter_serial: Some(serial.into()),
        manufacturer: Some("ACME".into()),
        ..KeySubmission::new(spki_hex(meter))
    }
}

fn events(entry: &[u8]) -> Vec<Event> {
    Entry::decode(entry).expect("entry decodes").body.events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_commissioning_binds_the_key_from_its_effective_time() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let meter = meter_key();
    let key = KeySubmission { gateway_serial: Some("GW-7".into()), ..new_key(&meter, "M-1") };
    let r = register(&f, &op, key, &["DE*ABC*E1*1", "DE*ABC*E1*2"], "2026-01-01T00:00:00Z").await;
    assert!(r.confirmation_position > r.position, "confirmed automatically");
    let k = meter.fingerprint_hex();
    expect(&f, evse("DE*ABC*E1*1"), "2025-12-31T23:59:59Z", "NOT_YET", &k).await;
    expect(&f, evse("DE*ABC*E1*1"), "2026-01-01T00:00:00Z", "VALID", &k).await;
    let v = expect(&f, evse("deabce1*2"), "2026-06-01T00:00:00Z", "VALID", &k).await;
    assert_eq!(v.binding.unwrap().operator_id, "DE*ABC");
    expect(&f, fp(&meter), "2026-06-01T00:00:00Z", "VALID", &k).await;
    expect(&f, KeyTarget::MeterSerial("M-1".into()), "2026-06-01T00:00:00Z", "VALID", &k).await;
    expect(&f, KeyTarget::GatewaySerial("GW-7".into()), "2026-06-01T00:00:00Z", "VALID", &k).await;
    expect(&f, evse("DE*ABC*E9"), "2026-06-01T00:00:00Z", "UNKNOWN", "").await;
    let record = f.client.key(&k, AsOf::Head).await.unwrap().key.unwrap();
    assert_eq!(registry_client::render::key_state(record.state), "ACTIVE");
    assert_eq!(record.public_key, meter.public_key_der());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_confirmation_comes_only_after_publication() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let meter = meter_key();
    let r = register(&f, &op, new_key(&meter, "M-1"), &["DE*ABC*E1"], "2026-01-01T00:00:00Z").await;
    let Event::KeyConfirmed { registration_position, published_in_tree_size, .. } =
        &events(&r.confirmation_entry)[0]
    else {
        panic!("the confirmation entry holds a KeyConfirmed event");
    };
    assert_eq!(*registration_position, r.position);
    assert!(
        *published_in_tree_size > r.position && *published_in_tree_size <= r.confirmation_position
    );
    // The checkpoint of that size is signed and includes the registration.
    let info = f.client.registry_info().await.unwrap();
    let verifier = NoteVerifier::new(&info.origin, &info.public_key_der).unwrap();
    let cp = f.client.checkpoint(*published_in_tree_size).await.unwrap();
    let cp = Checkpoint::open(&cp.checkpoint, &verifier).unwrap();
    let proof = f
        .client
        .audit()
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            position: r.position,
            tree_size: cp.size,
        })
        .await
        .unwrap()
        .into_inner();
    merkle::verify_inclusion(
        r.position,
        cp.size,
        &merkle::leaf_hash(&r.entry),
        &proof.proof,
        &cp.root,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmation_request_ids_follow_the_order_of_their_registrations() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let mut last = None;
    for i in 0..3 {
        let meter = meter_key();
        let r = register(
            &f,
            &op,
            new_key(&meter, &format!("M-{i}")),
            &[&format!("DE*ABC*E{i}")],
            "2026-01-01T00:00:00Z",
        )
        .await;
        let id = Entry::decode(&r.confirmation_entry).expect("entry decodes").body.request_id;
        assert!(registry_core::lifecycle::is_reserved_request_id(&id), "{id}");
        assert_eq!(
            (id.as_u128() >> 80) as u64,
            r.position,
            "the ID starts with the registration's position"
        );
        assert!(last.is_none_or(|l| l < id), "IDs increase with registrations: {last:?} then {id}");
        last = Some(id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_manual_policy_an_administrator_confirms_or_rejects() {
    let f = Fixture::start_with(ConfirmPolicy::Manual).await;
    let op = f.operator("DE*ABC").await;
    let (m1, m2) = (meter_key(), meter_key());
    let r = register(&f, &op, new_key(&m1, "M-1"), &["DE*ABC*E1"], "2026-01-01T00:00:00Z").await;
    assert_eq!(r.confirmation_position, 0, "nothing confirms by itself");
    expect(&f, evse("DE*ABC*E1"), "2026-02-01T00:00:00Z", "PENDING", &m1.fingerprint_hex()).await;
    let before = f.log_size();
    f.client.submit(&f.admin, &Order::Confirm { fingerprint: m1.fingerprint_hex() }).await.unwrap();
    expect(&f, evse("DE*ABC*E1"), "2026-02-01T00:00:00Z", "VALID", &m1.fingerprint_hex()).await;
    let (v, _) =
        check_as_of(&f, evse("DE*ABC*E1"), "2026-02-01T00:00:00Z", AsOf::Size(before)).await;
    assert_eq!(verdict_name(&v), "PENDING", "as known before the confirmation");

    register(&f, &op, new_key(&m2, "M-2"), &["DE*ABC*E2"], "2026-01-01T00:00:00Z").await;
    f.client
        .submit(
            &f.admin,
            &Order::Reject { fingerprint: m2.fingerprint_hex(), reason: "bad".into() },
        )
        .await
        .unwrap();
    expect(&f, evse("DE*ABC*E2"), "2026-02-01T00:00:00Z", "REJECTED", &m2.fingerprint_hex()).await;
    // A rejected key does not hold its EVSE: another key may be registered there.
    let m3 = meter_key();
    register(&f, &op, new_key(&m3, "M-3"), &["DE*ABC*E2"], "2026-01-01T00:00:00Z").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommissioning_ends_validity_and_keeps_the_record() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let meter = meter_key();
    let k = meter.fingerprint_hex();
    register(&f, &op, new_key(&meter, "M-1"), &["DE*ABC*E1"], "2026-01-01T00:00:00Z").await;
    f.client
        .submit(
            &op,
            &Order::Deactivate {
                fingerprint: k.clone(),
                reason: EndReason::Decommissioned,
                comment: "site closed".into(),
                effective_at: Some(t("2026-03-01T00:00:00Z")),
            },
        )
        .await
        .unwrap();
    expect(&f, evse("DE*ABC*E1"), "2026-02-28T23:59:59Z", "VALID", &k).await;
    let v = expect(&f, evse("DE*ABC*E1"), "2026-03-01T00:00:00Z", "ENDED", &k).await;
    assert_eq!(registry_client::render::end_reason(v.end_reason), "DECOMMISSIONED");
    expect(&f, fp(&meter), "2027-01-01T00:00:00Z", "ENDED", &k).await;
    let record = f.client.key(&k, AsOf::Head).await.unwrap().key.unwrap();
    assert_eq!(registry_client::render::key_state(record.state), "DEACTIVATED");
    assert_eq!(record.positions.len(), 3, "registration, confirmation and end stay on record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relocation_moves_the_binding_and_frees_the_old_evse() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let meter = meter_key();
    let k = meter.fingerprint_hex();
    register(&f, &op, new_key(&meter, "M-1"), &["DE*ABC*E1"], "2026-01-01T00:00:00Z").await;
    f.client
        .submit(
            &op,
            &Order::Relocate {
                fingerprint: k.clone(),
                evse_ids: vec!["DE*ABC*E2".into()],
                effective_at: Some(t("2026-04-01T00:00:00Z")),
            },
        )
        .await
        .unwrap();
    expect(&f, evse("DE*ABC*E1"), "2026-02-01T00:00:00Z", "VALID", &k).await;
    let old = expect(&f, evse("DE*ABC*E1"), "2026-05-01T00:00:00Z", "ENDED", &k).await;
    assert_eq!(registry_client::render::end_reason(old.end_reason), "RELOCATED");
    expect(&f, evse("DE*ABC*E2"), "2026-02-01T00:00:00Z", "NOT_YET", &k).await;
    expect(&f, evse("DE*ABC*E2"), "2026-05-01T00:00:00Z", "VALID", &k).await;
    let v = expect(&f, fp(&meter), "2026-05-01T00:00:00Z", "VALID", &k).await;
    assert_eq!(v.binding.unwrap().evse_ids, vec!["DE*ABC*E2".to_string()]);
    // The old EVSE is free from the relocation on, not before.
    let next = meter_key();
    let early = f
        .client
        .submit(
            &op,
            &Order::Register {
                key: new_key(&next, "M-2"),
                evse_ids: vec!["DE*ABC*E1".into()],
                effective_at: Some(t("2026-03-01T00:00:00Z")),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(early.code(), Some(tonic::Code::FailedPrecondition));
    register(&f, &op, new_key(&next, "M-2"), &["DE*ABC*E1"], "2026-04-01T00:00:00Z").await;
    expect(&f, evse("DE*ABC*E1"), "2026-05-01T00:00:00Z", "VALID", &next.fingerprint_hex()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_replacement_swaps_keys_atomically_and_keeps_old_sessions_verifiable() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let (old, new) = (meter_key(), meter_key());
    register(&f, &op, new_key(&old, "M-1"), &["DE*ABC*E1"], "2026-01-01T00:00:00Z").await;
    let r = f
        .client
        .submit(
            &op,
            &Order::Replace {
                fingerprint: old.fingerprint_hex(),
                new_key: new_key(&new, "M-2"),
                effective_at: Some(t("2026-06-01T00:00:00Z")),
                comment: "recalibration".into(),
            },
        )
        .await
        .unwrap();
    let evs = events(&r.entry);
    assert!(
        matches!(&evs[0], Event::KeyEnded { successor: Some(s), .. } if *s == new.fingerprint_hex())
    );
    assert!(
        matches!(&evs[1], Event::KeyRegistered(reg) if reg.predecessor.as_deref() == Some(old.fingerprint_hex().as_str()))
    );
    assert!(r.confirmation_position > r.position, "the new key is confirmed too");
    expect(&f, evse("DE*ABC*E1"), "2026-03-01T00:00:00Z", "VALID", &old.fingerprint_hex()).await;
    expect(&f, evse("DE*ABC*E1"), "2026-07-01T00:00:00Z", "VALID", &new.fingerprint_hex()).await;
    expect(&f, fp(&old), "2026-03-01T00:00:00Z", "VALID", &old.fingerprint_hex()).await;
    let ended = expect(&f, fp(&old), "2026-07-01T00:00:00Z", "ENDED", &old.fingerprint_hex()).await;
    assert_eq!(registry_client::render::end_reason(ended.end_reason), "REPLACED");
    expect(&f, fp(&new), "2026-03-01T00:00:00Z", "NOT_YET", &new.fingerprint_hex()).await;
    let old_record = f.client.key(&old.fingerprint_hex(), AsOf::Head).await.unwrap().key.unwrap();
    assert_eq!(old_record.successor, new.fingerprint_hex());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firmware_rotation_gives_the_same_unit_a_new_key() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let (old, new) = (meter_key(), meter_key());
    register(&f, &op, new_key(&old, "M-1"), &["DE*ABC*E1"], "2026-01-01T00:00:00Z").await;
    let other_unit = f
        .client
        .submit(
            &op,
            &Order::Rotate {
                fingerprint: old.fingerprint_hex(),
                new_key: KeySubmission {
                    meter_serial: Some("M-9".into()),
                    ..KeySubmission::new(spki_hex(&new))
                },
                effective_at: Some(t("2026-06-01T00:00:00Z")),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(other_unit.code(), Some(tonic::Code::InvalidArgument));
    assert_eq!(other_unit.violations()[0].field, "rotate_key.new_key.meter_serial");
    f.client
        .submit(
            &op,
            &Order::Rotate {
                fingerprint: old.fingerprint_hex(),
                new_key: KeySubmission::new(spki_hex(&new)),
                effective_at: Some(t("2026-06-01T00:00:00Z")),
            },
        )
        .await
        .unwrap();
    let serial = || KeyTarget::MeterSerial("M-1".into());
    expect(&f, serial(), "2026-03-01T00:00:00Z", "VALID", &old.fingerprint_hex()).await;
    expect(&f, serial(), "2026-07-01T00:00:00Z", "VALID", &new.fingerprint_hex()).await;
    let ended = expect(&f, fp(&old), "2026-07-01T00:00:00Z", "ENDED", &old.fingerprint_hex()).await;
    assert_eq!(registry_client::render::end_reason(ended.end_reason), "ROTATED");
    let record = f.client.key(&new.fingerprint_hex(), AsOf::Head).await.unwrap().key.unwrap();
    assert_eq!(
        (record.meter_serial.as_str(), record.manufacturer.as_str()),
        ("M-1", "ACME"),
        "the unit is inherited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_needs_a_release_and_moves_the_key_to_the_new_operator() {
    let f = Fixture::start().await;
    let (a, b) = (f.operator("DE*AAA").await, f.operator("DE*BBB").await);
    let meter = meter_key();
    let k = meter.fingerprint_hex();
    register(&f, &a, new_key(&meter, "M-1"), &["DE*AAA*E1"], "2026-01-01T00:00:00Z").await;
    let take = Order::TakeOver {
        fingerprint: k.clone(),
        evse_ids: vec!["DE*BBB*E7".into()],
        effective_at: Some(t("2026-05-01T00:00:00Z")),
    };
    let unreleased = f.client.submit(&b, &take).await.unwrap_err();
    assert_eq!(unreleased.code(), Some(tonic::Code::PermissionDenied));
    f.client
        .submit(&a, &Order::Release { fingerprint: k.clone(), to_operator_id: "DE*BBB".into() })
        .await
        .unwrap();
    f.client.submit(&b, &take).await.unwrap();
    let before = expect(&f, evse("DE*AAA*E1"), "2026-04-01T00:00:00Z", "VALID", &k).await;
    assert_eq!(before.binding.unwrap().operator_id, "DE*AAA");
    let gone = expect(&f, evse("DE*AAA*E1"), "2026-06-01T00:00:00Z", "ENDED", &k).await;
    assert_eq!(registry_client::render::end_reason(gone.end_reason), "TAKEN_OVER");
    let after = expect(&f, evse("DE*BBB*E7"), "2026-06-01T00:00:00Z", "VALID", &k).await;
    assert_eq!(after.binding.unwrap().operator_id, "DE*BBB");
    // The key now answers to its new operator only.
    let end = |at: &str| Order::Deactivate {
        fingerprint: k.clone(),
        reason: EndReason::Decommissioned,
        comment: String::new(),
        effective_at: Some(t(at)),
    };
    assert_eq!(
        f.client.submit(&a, &end("2026-07-01T00:00:00Z")).await.unwrap_err().code(),
        Some(tonic::Code::PermissionDenied)
    );
    f.client.submit(&b, &end("2026-07-01T00:00:00Z")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_can_force_a_takeover_without_release() {
    let f = Fixture::start().await;
    let (a, _b) = (f.operator("DE*AAA").await, f.operator("DE*BBB").await);
    let meter = meter_key();
    let k = meter.fingerprint_hex();
    register(&f, &a, new_key(&meter, "M-1"), &["DE*AAA*E1"], "2026-01-01T00:00:00Z").await;
    let r = f
        .client
        .submit(
            &f.admin,
            &Order::ForceTakeOver {
                fingerprint: k.clone(),
                operator_id: "DE*BBB".into(),
                evse_ids: vec!["DE*BBB*E1".into()],
                effective_at: Some(t("2026-05-01T00:00:00Z")),
            },
        )
        .await
        .unwrap();
    assert!(matches!(&events(&r.entry)[0], Event::KeyTakenOver { forced: true, .. }));
    expect(&f, evse("DE*BBB*E1"), "2026-06-01T00:00:00Z", "VALID", &k).await;
    expect(&f, evse("DE*AAA*E1"), "2026-04-01T00:00:00Z", "VALID", &k).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hardware_exchange_that_keeps_the_meter_needs_no_event() {
    // docs/DESIGN.md §3: the meter moves into new hardware at the same EVSE. There is no command for it:
    // the key, its binding and every answer stay exactly as they were.
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let meter = meter_key();
    register(&f, &op, new_key(&meter, "M-1"), &["DE*ABC*E1"], "2026-01-01T00:00:00Z").await;
    let before =
        expect(&f, evse("DE*ABC*E1"), "2026-03-01T00:00:00Z", "VALID", &meter.fingerprint_hex())
            .await;
    let after =
        expect(&f, evse("DE*ABC*E1"), "2026-09-01T00:00:00Z", "VALID", &meter.fingerprint_hex())
            .await;
    assert_eq!(before.deciding_positions, after.deciding_positions);
    assert_eq!(before.binding.unwrap().evse_ids, after.binding.unwrap().evse_ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compromised_key_is_deactivated_and_flagged() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let meter = meter_key();
    let k = meter.fingerprint_hex();
    register(&f, &op, new_key(&meter, "M-1"), &["DE*ABC*E1"], "2026-01-01T00:00:00Z").await;
    f.client
        .submit(
            &op,
            &Order::Deactivate {
                fingerprint: k.clone(),
                reason: EndReason::Compromised,
                comment: "key leaked".into(),
                effective_at: Some(t("2026-02-01T00:00:00Z")),
            },
        )
        .await
        .unwrap();
    let v = expect(&f, fp(&meter), "2026-03-01T00:00:00Z", "ENDED", &k).await;
    assert_eq!(registry_client::render::end_reason(v.end_reason), "COMPROMISED");
    assert_eq!(registry_client::render::key_state(v.state), "DEACTIVATED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backdated_deactivation_changes_the_answer_but_not_what_was_known_before() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let meter = meter_key();
    let k = meter.fingerprint_hex();
    register(&f, &op, new_key(&meter, "M-1"), &["DE*ABC*E1"], "2026-01-01T00:00:00Z").await;
    // An MSP bills a session of 2026-05-01 on a VALID answer.
    let (billed, basis) =
        check_as_of(&f, evse("DE*ABC*E1"), "2026-05-01T00:00:00Z", AsOf::Head).await;
    assert_eq!(verdict_name(&billed), "VALID");
    // Later the CPO reports that the meter was decommissioned on 2026-04-01.
    f.client
        .submit(
            &op,
            &Order::Deactivate {
                fingerprint: k.clone(),
                reason: EndReason::Decommissioned,
                comment: String::new(),
                effective_at: Some(t("2026-04-01T00:00:00Z")),
            },
        )
        .await
        .unwrap();
    expect(&f, evse("DE*ABC*E1"), "2026-05-01T00:00:00Z", "ENDED", &k).await;
    // As known when the MSP asked, by log size and by recorded time: still VALID, same basis.
    let (by_size, b1) =
        check_as_of(&f, evse("DE*ABC*E1"), "2026-05-01T00:00:00Z", AsOf::Size(basis.log_size))
            .await;
    let recorded =
        registry_core::time::from_timestamp(basis.recorded_at.as_ref().unwrap()).unwrap();
    let (by_time, b2) =
        check_as_of(&f, evse("DE*ABC*E1"), "2026-05-01T00:00:00Z", AsOf::RecordedAt(recorded))
            .await;
    assert_eq!((verdict_name(&by_size), verdict_name(&by_time)), ("VALID", "VALID"));
    assert_eq!(b1, basis, "the same basis gives the same answer");
    assert_eq!(b2, basis);
    assert_eq!(by_size, billed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lists_every_entry_of_an_identifier_newest_first_in_pages() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let meter = meter_key();
    let k = meter.fingerprint_hex();
    register(&f, &op, new_key(&meter, "M-1"), &["DE*ABC*E1"], "2026-01-01T00:00:00Z").await;
    f.client
        .submit(
            &op,
            &Order::Relocate {
                fingerprint: k.clone(),
                evse_ids: vec!["DE*ABC*E2".into()],
                effective_at: Some(t("2026-02-01T00:00:00Z")),
            },
        )
        .await
        .unwrap();
    f.client
        .submit(
            &op,
            &Order::Deactivate {
                fingerprint: k.clone(),
                reason: EndReason::Decommissioned,
                comment: String::new(),
                effective_at: Some(t("2026-03-01T00:00:00Z")),
            },
        )
        .await
        .unwrap();
    let key_id = KeyTarget::Fingerprint(k.clone()).identifier();
    let all = f.client.history(key_id.clone(), AsOf::Head).await.unwrap();
    let positions: Vec<u64> = all.iter().map(|h| h.position).collect();
    assert_eq!(positions.len(), 4, "registration, confirmation, relocation, end");
    assert!(positions.windows(2).all(|w| w[0] > w[1]), "newest first: {positions:?}");
    // Page by page gives the same sequence.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = f.client.history_page(key_id.clone(), AsOf::Head, 1, token).await.unwrap();
        paged.extend(page.entries.iter().map(|h| h.position));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, positions);
    let e1 = f
        .client
        .history(KeyTarget::Evse("DE*ABC*E1".into()).identifier(), AsOf::Head)
        .await
        .unwrap();
    assert_eq!(e1.len(), 2, "registration and relocation away");
    let operator =
        pb::Identifier { kind: pb::IdentifierKind::Operator as i32, value: "DE*ABC".into() };
    let op_history = f.client.history(operator, AsOf::Head).await.unwrap();
    assert!(op_history.len() >= 4, "operator added, registration, relocation, end");
    // As known before the relocation, the key's history is two entries long.
    let early = f.client.history(key_id, AsOf::Size(positions[1])).await.unwrap();
    assert_eq!(early.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_like_single_questions_on_one_basis() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let mut questions = Vec::new();
    for i in 0..20 {
        let meter = meter_key();
        let evse = format!("DE*ABC*E{i}");
        register(
            &f,
            &op,
            new_key(&meter, &format!("M-{i}")),
            &[evse.as_str()],
            "2026-01-01T00:00:00Z",
        )
        .await;
        if i % 3 == 0 {
            registry_tests::decommission(&f.client, &op, &meter, "2026-02-01T00:00:00Z").await;
        }
        for at in ["2025-12-01T00:00:00Z", "2026-01-15T00:00:00Z", "2026-03-01T00:00:00Z"] {
            questions.push((KeyTarget::Evse(evse.clone()), t(at)));
            questions.push((KeyTarget::Fingerprint(meter.fingerprint_hex()), t(at)));
        }
    }
    questions.push((KeyTarget::Evse("DE*ABC*E99".into()), t("2026-03-01T00:00:00Z")));
    let batch = f.client.check_batch(&questions, AsOf::Head, View::Full).await.unwrap();
    let basis = batch.basis.unwrap();
    assert_eq!(batch.results.len(), questions.len());
    for ((selector, at), answer) in questions.iter().zip(&batch.results) {
        let single = f.client.check(selector, None, *at, AsOf::Size(basis.log_size)).await.unwrap();
        assert_eq!(single.validity.as_ref(), Some(answer), "{selector:?} at {at}");
    }
    let verdicts: std::collections::BTreeSet<&str> =
        batch.results.iter().map(verdict_name).collect();
    assert_eq!(verdicts, ["ENDED", "NOT_YET", "UNKNOWN", "VALID"].into_iter().collect());

    // The basic view is the same answer without the key material and the binding.
    let same_basis = AsOf::Size(basis.log_size);
    let basic = f.client.check_batch(&questions, same_basis, View::Basic).await.unwrap();
    let stripped = |v: &registry_proto::pb::Validity| registry_proto::pb::Validity {
        public_key: vec![],
        binding: None,
        ..v.clone()
    };
    assert_eq!(basic.results, batch.results.iter().map(stripped).collect::<Vec<_>>());
    assert!(batch.results.iter().any(|v| !v.public_key.is_empty() && v.binding.is_some()));
    assert!(basic.results.iter().any(|v| !v.fingerprint.is_empty() && v.effective_from.is_some()));
    let (selector, at) = &questions[1];
    let single = f.client.check_view(selector, None, *at, same_basis, View::Basic).await.unwrap();
    assert_eq!(single.validity, Some(stripped(&batch.results[1])));

    let too_many = vec![(KeyTarget::Evse("DE*ABC*E1".into()), t("2026-01-15T00:00:00Z")); 10_001];
    let err = f.client.check_batch(&too_many, AsOf::Head, View::Full).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument));
    assert_eq!(err.violations()[0].field, "queries");

    let operator = f.client.operator("deabc").await.unwrap();
    assert_eq!((operator.operator_id.as_str(), operator.keys.len()), ("DE*ABC", 1));
    assert_eq!(operator.keys[0].key_id, op.fingerprint_hex());
    assert_eq!(f.client.operator("DE*ZZZ").await.unwrap_err().code(), Some(tonic::Code::NotFound));
}
