//! Signed meter values end to end: the shared vectors through the server after registering their
//! keys, curve mismatch, keys not (yet / any more) valid at the reading, EVSE binding, meter
//! status, OCPI CDRs with their own key, proof of possession at registration, and the client
//! that re-checks everything itself.

#[path = "../registry-core/tests/support/ocmf_vectors.rs"]
mod vectors;

use std::path::Path;

use registry_client::verify::Verifier;
use registry_client::{AsOf, ClientError, KeySubmission, Order};
use registry_core::keys::P256KeyPair;
use registry_core::ocmf::Record;
use registry_core::ocpi::Input;
use registry_proto::pb;
use registry_tests::{Fixture, meter_key, spki_hex, t};
use tonic::Code;

fn input(record: &str) -> Input {
    Input { record: record.to_string(), claimed_key: None, label: "test".into() }
}

/// The outcome of each check of a kind, e.g. `["pass", "fail"]` for two readings.
fn outcomes(v: &pb::MeterValueValidation, check: pb::MeterValueCheck) -> Vec<pb::CheckOutcome> {
    v.checks
        .iter()
        .filter(|c| c.check == check as i32)
        .map(|c| pb::CheckOutcome::try_from(c.outcome).unwrap())
        .collect()
}

fn reason(v: &pb::MeterValueValidation, check: pb::MeterValueCheck) -> String {
    v.checks
        .iter()
        .filter(|c| c.check == check as i32)
        .map(|c| c.reason.clone())
        .collect::<Vec<_>>()
        .join(" / ")
}

async fn validate(f: &Fixture, records: &[Input]) -> Vec<pb::MeterValueValidation> {
    f.client.validate_meter_values(records, AsOf::Head, false).await.expect("validation").results
}

async fn register(f: &Fixture, op: &P256KeyPair, key: KeySubmission, evse: &str, at: &str) {
    f.client
        .submit(
            op,
            &Order::Register { key, evse_ids: vec![evse.to_string()], effective_at: Some(t(at)) },
        )
        .await
        .expect("registration accepted");
}

/// A record from a P-256 meter: begin and end readings with status and error flags.
fn signed_record(
    meter: &P256KeyPair,
    serial: &str,
    evse: Option<&str>,
    readings: &[(&str, &str, &str, &str)],
) -> String {
    let cp = evse.map(|e| format!(r#""CT":"EVSEID","CI":"{e}","#)).unwrap_or_default();
    let rd: Vec<String> = readings
        .iter()
        .map(|(tm, tx, st, ef)| {
            format!(r#"{{"TM":"{tm}","TX":"{tx}","RV":12.5,"RI":"1-b:1.8.0","RU":"kWh","EF":"{ef}","ST":"{st}"}}"#)
        })
        .collect();
    let payload = format!(
        r#"{{"FV":"1.0","GI":"ACME","GS":"GW-{serial}","PG":"T7","MV":"ACME","MS":"{serial}","IS":true,"IL":"TRUSTED","IF":[],"IT":"ISO14443","ID":"0A0B0C0D",{cp}"RD":[{}]}}"#,
        rd.join(",")
    );
    let sd = hex::encode_upper(meter.sign_der(payload.as_bytes()));
    format!(r#"OCMF|{payload}|{{"SA":"ECDSA-secp256r1-SHA256","SD":"{sd}"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vector_gives_its_stated_verdict_through_the_server() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let vectors = vectors::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../registry-core/testdata/ocmf/vectors.txt"),
    );
    // Register each key once, under the serials its records name, effective long before them.
    let mut registered = std::collections::BTreeSet::new();
    for (i, v) in vectors.iter().enumerate() {
        let record = Record::parse(&v.record).unwrap();
        if !registered.insert(v.public_key.to_ascii_lowercase()) {
            continue;
        }
        let key = KeySubmission {
            meter_serial: record.payload.meter_serial.clone().filter(|s| !s.is_empty()),
            gateway_serial: record.payload.gateway_serial.clone().filter(|s| !s.is_empty()),
            ..KeySubmission::new(v.public_key.clone())
        };
        register(&f, &op, key, &format!("DE*ABC*EV{i}"), "2015-01-01T00:00:00Z").await;
    }
    let inputs: Vec<Input> = vectors.iter().map(|v| input(&v.record)).collect();
    let results = validate(&f, &inputs).await;
    for (v, r) in vectors.iter().zip(&results) {
        let signature = outcomes(r, pb::MeterValueCheck::Signature);
        let want = if v.valid { pb::CheckOutcome::Pass } else { pb::CheckOutcome::Fail };
        assert_eq!(
            signature,
            vec![want],
            "{}: {}",
            v.name,
            reason(r, pb::MeterValueCheck::Signature)
        );
        assert_eq!(r.valid, v.valid, "{}: {:#?}", v.name, r.checks);
        assert_eq!(
            outcomes(r, pb::MeterValueCheck::KeyFound),
            vec![pb::CheckOutcome::Pass],
            "{}",
            v.name
        );
    }

    // The same answers when the client checks everything itself against the evidence.
    let dir = tempfile::tempdir().unwrap();
    let info = f.client.registry_info().await.unwrap();
    let mut verifier =
        Verifier::new(&f.client, Some(&info.public_key_pem), &dir.path().join("state.json"))
            .await
            .unwrap();
    let (verified, evidence) = verifier.meter_values(&f.client, &inputs, AsOf::Head).await.unwrap();
    assert!(evidence.is_some());
    assert_eq!(verified.results, results);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validity_at_the_reading_evse_binding_and_meter_status_are_each_checked() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let meter = meter_key();
    let key =
        KeySubmission { meter_serial: Some("M-1".into()), ..KeySubmission::new(spki_hex(&meter)) };
    register(&f, &op, key, "DE*ABC*E1", "2026-01-01T00:00:00Z").await;
    registry_tests::decommission(&f.client, &op, &meter, "2026-02-01T00:00:00Z").await;
    let session = |b: &'static str, e: &'static str| [(b, "B", "G", ""), (e, "E", "G", "")];
    let good = signed_record(
        &meter,
        "M-1",
        Some("DE*ABC*E1"),
        &session("2026-01-15T10:00:00,000+0100 S", "2026-01-15T11:00:00,000+0100 S"),
    );
    let before = signed_record(
        &meter,
        "M-1",
        None,
        &session("2025-12-01T10:00:00,000+0100 S", "2025-12-01T11:00:00,000+0100 S"),
    );
    let after = signed_record(
        &meter,
        "M-1",
        None,
        &session("2026-03-01T10:00:00,000+0100 S", "2026-03-01T11:00:00,000+0100 S"),
    );
    let across = signed_record(
        &meter,
        "M-1",
        None,
        &session("2026-01-31T23:30:00,000+0000 S", "2026-02-01T00:30:00,000+0000 S"),
    );
    let other_evse = signed_record(
        &meter,
        "M-1",
        Some("DE*ABC*E2"),
        &session("2026-01-15T10:00:00,000+0100 S", "2026-01-15T11:00:00,000+0100 S"),
    );
    let error = signed_record(
        &meter,
        "M-1",
        None,
        &[
            ("2026-01-15T10:00:00,000+0100 I", "B", "G", ""),
            ("2026-01-15T11:00:00,000+0100 U", "E", "E", "E"),
        ],
    );
    let r =
        validate(&f, &[good, before, after, across, other_evse, error].map(|s| input(&s))).await;
    use pb::CheckOutcome::{Fail, Pass, Warn};
    use pb::MeterValueCheck as C;

    assert!(r[0].valid && r[0].billable, "{:#?}", r[0].checks);
    assert_eq!(outcomes(&r[0], C::EvseMatch), vec![Pass, Pass]);
    assert_eq!(r[0].key.as_ref().unwrap().fingerprint, meter.fingerprint_hex());

    // Signed by the right key, but the key was not yet valid, or no longer.
    for (i, when) in [(1, "not yet in force"), (2, "had ended")] {
        assert_eq!(outcomes(&r[i], C::Signature), vec![Pass], "the signature itself is fine");
        assert_eq!(outcomes(&r[i], C::KeyValid), vec![Fail, Fail]);
        assert!(reason(&r[i], C::KeyValid).contains(when), "{}", reason(&r[i], C::KeyValid));
        assert!(!r[i].valid);
    }
    assert_eq!(outcomes(&r[3], C::KeyValid), vec![Pass, Fail], "a session across the deactivation");
    assert!(reason(&r[3], C::KeyValid).contains("decommissioned"));

    assert_eq!(outcomes(&r[4], C::EvseMatch), vec![Fail, Fail]);
    assert!(reason(&r[4], C::EvseMatch).contains("DE*ABC*E1"), "{}", reason(&r[4], C::EvseMatch));
    assert!(!r[4].valid);

    // Status E and error flags: a valid signature, not billable; unsynchronised clocks flagged.
    assert!(r[5].valid && !r[5].billable, "{:#?}", r[5].checks);
    assert_eq!(outcomes(&r[5], C::MeterStatus), vec![Pass, Fail]);
    assert_eq!(outcomes(&r[5], C::ErrorFlags), vec![Pass, Fail]);
    assert_eq!(outcomes(&r[5], C::ClockStatus), vec![Warn, Warn]);

    // As known before the key existed, nothing is found.
    let early = f
        .client
        .validate_meter_values(
            &[input(&signed_record(
                &meter,
                "M-1",
                None,
                &session("2026-01-15T10:00:00,000+0100 S", "2026-01-15T11:00:00,000+0100 S"),
            ))],
            AsOf::Size(2),
            false,
        )
        .await
        .unwrap();
    assert_eq!(outcomes(&early.results[0], C::KeyFound), vec![Fail]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curve_mismatch_is_refused_with_a_clear_reason() {
    use ecdsa::elliptic_curve::Generate;
    use ecdsa::elliptic_curve::pkcs8::EncodePublicKey;
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let p192 = ecdsa::SigningKey::<p192::NistP192>::generate();
    let spki = p192.verifying_key().to_public_key_der().unwrap();
    let key = KeySubmission {
        meter_serial: Some("M-192".into()),
        ..KeySubmission::new(hex::encode(spki.as_bytes()))
    };
    register(&f, &op, key, "DE*ABC*E1", "2026-01-01T00:00:00Z").await;
    // A P-256 meter's record naming the same serial.
    let record = signed_record(
        &meter_key(),
        "M-192",
        None,
        &[("2026-03-01T10:00:00,000+0100 S", "B", "G", "")],
    );
    let r = &validate(&f, &[input(&record)]).await[0];
    assert_eq!(outcomes(r, pb::MeterValueCheck::Signature), vec![pb::CheckOutcome::Fail]);
    let why = reason(r, pb::MeterValueCheck::Signature);
    assert!(
        why.contains("curve mismatch")
            && why.contains("secp192r1")
            && why.contains("ECDSA-secp256r1-SHA256"),
        "{why}"
    );
    assert!(!r.valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ocpi_cdr_is_validated_and_a_foreign_key_in_it_is_a_finding() {
    use base64::Engine as _;
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let meter = meter_key();
    let key =
        KeySubmission { meter_serial: Some("M-9".into()), ..KeySubmission::new(spki_hex(&meter)) };
    register(&f, &op, key, "DE*ABC*E9", "2026-01-01T00:00:00Z").await;
    let start = signed_record(
        &meter,
        "M-9",
        Some("DE*ABC*E9"),
        &[("2026-05-01T10:00:00,000+0200 S", "B", "G", "")],
    );
    let end = signed_record(
        &meter,
        "M-9",
        Some("DE*ABC*E9"),
        &[("2026-05-01T11:00:00,000+0200 S", "E", "G", "")],
    );
    let cdr = |public_key: &str| {
        serde_json::json!({
            "id": "CDR-1",
            "signed_data": {
                "encoding_method": "OCMF",
                "encoding_method_version": 1,
                "public_key": public_key,
                "signed_values": [
                    {"nature": "Start", "plain_data": "", "signed_data": base64::engine::general_purpose::STANDARD.encode(&start)},
                    {"nature": "End", "plain_data": "", "signed_data": base64::engine::general_purpose::STANDARD.encode(&end)},
                ],
                "url": "https://example.invalid/transparency"
            }
        })
    };
    let inputs = |json: serde_json::Value| {
        registry_core::ocpi::signed_data(&json["signed_data"].to_string()).unwrap()
    };
    let ours = validate(&f, &inputs(cdr(&spki_hex(&meter)))).await;
    assert_eq!(ours.len(), 2);
    assert!(ours.iter().all(|v| v.valid && v.billable), "{:#?}", ours);
    assert_eq!(ours[1].label, "signed_values[1] (End)");
    assert_eq!(outcomes(&ours[0], pb::MeterValueCheck::CdrKey), vec![pb::CheckOutcome::Pass]);

    let foreign = validate(&f, &inputs(cdr(&spki_hex(&meter_key())))).await;
    for v in &foreign {
        assert!(v.valid, "the registry's key still verifies it");
        assert!(!v.billable, "but the CDR is inconsistent");
        assert_eq!(outcomes(v, pb::MeterValueCheck::CdrKey), vec![pb::CheckOutcome::Fail]);
    }

    // The server takes the OCPI object directly too.
    let mut lookups = f.client.lookups();
    let r = lookups
        .validate_signed_meter_values(pb::ValidateSignedMeterValuesRequest {
            ocpi_signed_data: cdr(&spki_hex(&meter))["signed_data"].to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results.len(), 2);
    assert!(r.results.iter().all(|v| v.billable));
    let bad = lookups
        .validate_signed_meter_values(pb::ValidateSignedMeterValuesRequest {
            ocpi_signed_data: r#"{"encoding_method":"Alfen Eichrecht","signed_values":[]}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().contains("ocpi_signed_data") && bad.message().contains("Alfen"),
        "{}",
        bad.message()
    );
    // The detail names the field inside the object, as every bad field does.
    let details = tonic_types::StatusExt::get_error_details(&bad);
    let violations = details.bad_request().map(|b| b.field_violations.clone()).unwrap_or_default();
    assert_eq!(
        violations.iter().map(|v| v.field.as_str()).collect::<Vec<_>>(),
        ["ocpi_signed_data.encoding_method"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_proves_possession_with_a_sample_from_the_meter() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let meter = meter_key();
    let sample =
        signed_record(&meter, "M-5", None, &[("2026-01-01T10:00:00,000+0100 S", "B", "G", "")]);
    let with = |sample: String, serial: &str| Order::Register {
        key: KeySubmission {
            meter_serial: Some(serial.into()),
            sample_signed_meter_value: Some(sample),
            ..KeySubmission::new(spki_hex(&meter))
        },
        evse_ids: vec!["DE*ABC*E5".into()],
        effective_at: Some(t("2026-01-01T00:00:00Z")),
    };
    let refused = |e: ClientError, rule: &str| {
        assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
        assert_eq!(e.violations()[0].field, "register_key.key.sample_signed_meter_value");
        assert!(e.to_string().contains(rule), "{e}");
    };
    let before = f.log_size();
    // Signed by another meter.
    let foreign = signed_record(
        &meter_key(),
        "M-5",
        None,
        &[("2026-01-01T10:00:00,000+0100 S", "B", "G", "")],
    );
    refused(
        f.client.submit(&op, &with(foreign, "M-5")).await.unwrap_err(),
        "does not verify with the key",
    );
    // From this meter, but naming another serial than the registration.
    refused(
        f.client.submit(&op, &with(sample.clone(), "M-6")).await.unwrap_err(),
        "names meter serial",
    );
    refused(
        f.client.submit(&op, &with("OCMF|{}|{}".into(), "M-5")).await.unwrap_err(),
        "not a readable OCMF record",
    );
    assert_eq!(f.log_size(), before, "refused registrations append nothing");

    let done = f.client.submit(&op, &with(sample.clone(), "M-5")).await.unwrap();
    let entry = registry_core::entry::Entry::decode(&done.entry).unwrap();
    let stored = entry.body.events.iter().find_map(|e| match e {
        registry_core::event::Event::KeyRegistered(r) => r.sample_signed_meter_value.clone(),
        _ => None,
    });
    assert_eq!(
        stored.as_deref(),
        Some(sample.as_str()),
        "the sample is in the log with the registration"
    );
}
