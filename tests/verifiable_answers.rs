//! Answers a client can check without trusting the server: confirmation receipts, proven
//! lookups, and what happens when a server lies (a test double in front of the real one that
//! alters an entry, drops one from a history or from the evidence, or claims a false verdict;
//! and a forked registry signing with the same key).

use registry_client::verify::Verifier;
use registry_client::{
    AsOf, ClientError, EndReason, KeySubmission, KeyTarget, Order, RegistryClient,
};
use registry_core::checkpoint::Checkpoint;
use registry_core::keys::P256KeyPair;
use registry_core::note::NoteSigner;
use registry_core::receipt::Receipt;
use registry_proto::pb;
use registry_proto::pb::audit_service_client::AuditServiceClient;
use registry_proto::pb::audit_service_server::{AuditService, AuditServiceServer};
use registry_proto::pb::lookup_service_client::LookupServiceClient;
use registry_proto::pb::lookup_service_server::{LookupService, LookupServiceServer};
use registry_tests::{Fixture, meter_key, spki_hex, t, verdict_name};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

fn new_key(meter: &P256KeyPair, serial: &str) -> KeySubmission {
    KeySubmission {
        meter_serial: Some(serial.into()),
        manufacturer: Some("ACME".into()),
        ..KeySubmission::new(spki_hex(meter))
    }
}

async fn register(
    f: &Fixture,
    op: &P256KeyPair,
    meter: &P256KeyPair,
    evse: &str,
    at: &str,
) -> pb::SubmitCommandResponse {
    f.client
        .submit(
            op,
            &Order::Register {
                key: new_key(meter, "M-1"),
                evse_ids: vec![evse.into()],
                effective_at: Some(t(at)),
            },
        )
        .await
        .unwrap()
}

fn registry_key(f: &Fixture) -> Vec<u8> {
    let pem =
        std::fs::read_to_string(f.registry.config.data_dir.join("registry-key.pub.pem")).unwrap();
    registry_core::keys::p256_spki_der_from_pem(&pem).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_proves_what_was_registered_and_rejects_any_change() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let meter = meter_key();
    let r = register(&f, &op, &meter, "DE*ABC*E1", "2026-01-01T00:00:00Z").await;
    let receipt = Receipt::try_from(
        r.receipt.as_ref().expect("an automatic confirmation comes with a receipt"),
    )
    .unwrap();
    let key = registry_key(&f);
    let proven = receipt.verify(&key).unwrap();
    assert_eq!(&*proven.registration.fingerprint, meter.fingerprint_hex());
    assert_eq!(proven.registration.evse_ids[0].as_str(), "DE*ABC*E1");
    assert_eq!(proven.registration.operator_id.as_str(), "DE*ABC");
    assert_eq!(
        (proven.registration_position, proven.confirmation_position),
        (r.position, r.confirmation_position)
    );
    // The same receipt, fetched later, verifies too.
    f.client.receipt(&meter.fingerprint_hex()).await.unwrap().verify(&key).unwrap();

    // Any changed byte of an entry.
    for which in 0..2 {
        for i in (0..120).step_by(7) {
            let mut bad = receipt.clone();
            let e =
                if which == 0 { &mut bad.registration.entry } else { &mut bad.confirmation.entry };
            let i = i % e.len();
            e[i] ^= 0x20;
            assert!(
                bad.verify(&key).is_err(),
                "a change at byte {i} of entry {which} went unnoticed"
            );
        }
    }
    // Any changed byte of the checkpoint.
    for i in 0..receipt.checkpoint.len() {
        let mut bytes = receipt.checkpoint.clone().into_bytes();
        bytes[i] ^= 0x01;
        if let Ok(text) = String::from_utf8(bytes) {
            let bad = Receipt { checkpoint: text, ..receipt.clone() };
            assert!(
                bad.verify(&key).is_err(),
                "a change at byte {i} of the checkpoint went unnoticed"
            );
        }
    }
    // A checkpoint of the same tree signed by another key.
    let cp = Checkpoint::parse(
        receipt.checkpoint.split("\n\n").next().map(|t| format!("{t}\n")).unwrap().as_str(),
    )
    .unwrap();
    let impostor = NoteSigner::new(&cp.origin, P256KeyPair::generate()).unwrap();
    let forged = Receipt { checkpoint: cp.sign(&impostor).unwrap(), ..receipt.clone() };
    assert!(forged.verify(&key).is_err(), "a checkpoint signed by another key is refused");
    assert!(receipt.verify(impostor.verifier().name().as_bytes()).is_err(), "not a key at all");
    // A proof for another position.
    let mut swapped = receipt.clone();
    swapped.registration.proof = receipt.confirmation.proof.clone();
    assert!(
        swapped.verify(&key).is_err(),
        "the confirmation's proof does not prove the registration"
    );
    let mut moved = receipt.clone();
    moved.registration.position += 1;
    assert!(moved.verify(&key).is_err(), "an entry claimed at another position is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proven_answers_are_re_derived_by_the_client() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let (old, new) = (meter_key(), meter_key());
    register(&f, &op, &old, "DE*ABC*E1", "2026-01-01T00:00:00Z").await;
    f.client
        .submit(
            &op,
            &Order::Replace {
                fingerprint: old.fingerprint_hex(),
                new_key: new_key(&new, "M-2"),
                effective_at: Some(t("2026-06-01T00:00:00Z")),
                comment: String::new(),
            },
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem = registry_core::keys::p256_spki_pem(&registry_key(&f)).unwrap();
    let mut v = Verifier::new(&f.client, Some(&pem), &dir.path().join("state.json")).await.unwrap();
    for (selector, at, want, who) in [
        (KeyTarget::Evse("DE*ABC*E1".into()), "2026-03-01T00:00:00Z", "VALID", &old),
        (KeyTarget::Evse("DE*ABC*E1".into()), "2026-07-01T00:00:00Z", "VALID", &new),
        (KeyTarget::Fingerprint(old.fingerprint_hex()), "2026-07-01T00:00:00Z", "ENDED", &old),
        (KeyTarget::MeterSerial("M-2".into()), "2026-07-01T00:00:00Z", "VALID", &new),
        (KeyTarget::Evse("DE*ABC*E1".into()), "2025-01-01T00:00:00Z", "NOT_YET", &old),
    ] {
        let (r, evidence) = v.check(&f.client, &selector, None, t(at), AsOf::Head).await.unwrap();
        let validity = r.validity.unwrap();
        assert_eq!(
            (verdict_name(&validity), validity.fingerprint.as_str()),
            (want, who.fingerprint_hex().as_str())
        );
        assert!(evidence.size() >= r.basis.unwrap().log_size);
    }
    // As known before the replacement: the old key, still unreplaced.
    let size_before =
        f.client.key(&old.fingerprint_hex(), AsOf::Head).await.unwrap().key.unwrap().positions[1]
            + 1;
    let (r, _) = v
        .check(
            &f.client,
            &KeyTarget::Evse("DE*ABC*E1".into()),
            None,
            t("2026-07-01T00:00:00Z"),
            AsOf::Size(size_before),
        )
        .await
        .unwrap();
    assert_eq!(r.validity.unwrap().fingerprint, old.fingerprint_hex());
    let (record, _) = v.key(&f.client, &old.fingerprint_hex(), AsOf::Head).await.unwrap();
    assert_eq!(record.key.unwrap().successor, new.fingerprint_hex());
    let (history, _) = v
        .history(&f.client, KeyTarget::Evse("DE*ABC*E1".into()).identifier(), AsOf::Head)
        .await
        .unwrap();
    assert_eq!(history.len(), 2, "registration and replacement");
    assert!(v.last_checkpoint().is_some());
}

/// What the lying double does to honest answers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Lie {
    AlterEntry,
    DropHistoryEntry,
    DropFromEvidence,
    FalseVerdict,
}

/// A double in front of the real registry: forwards everything, lies as told.
#[derive(Clone)]
struct Liar {
    lookups: LookupServiceClient<Channel>,
    audit: AuditServiceClient<Channel>,
    lie: Lie,
}

fn fwd<T>(r: Result<Response<T>, Status>) -> Result<T, Status> {
    r.map(Response::into_inner)
}

#[tonic::async_trait]
impl LookupService for Liar {
    async fn check_validity(
        &self,
        r: Request<pb::CheckValidityRequest>,
    ) -> Result<Response<pb::CheckValidityResponse>, Status> {
        let mut resp = fwd(self.lookups.clone().check_validity(r.into_inner()).await)?;
        let proof = resp.proof.as_mut().expect("asked with prove");
        match self.lie {
            Lie::AlterEntry => {
                let e = &mut proof.entries[0].entry;
                let last = e.len() - 1;
                e[last] ^= 0x01;
            }
            Lie::DropFromEvidence => {
                proof.entries.remove(0);
            }
            Lie::FalseVerdict => {
                let v = resp.validity.as_mut().unwrap();
                v.verdict = if v.verdict == pb::Verdict::Valid as i32 {
                    pb::Verdict::Ended
                } else {
                    pb::Verdict::Valid
                } as i32;
            }
            Lie::DropHistoryEntry => {}
        }
        Ok(Response::new(resp))
    }
    async fn check_validity_batch(
        &self,
        r: Request<pb::CheckValidityBatchRequest>,
    ) -> Result<Response<pb::CheckValidityBatchResponse>, Status> {
        Ok(Response::new(fwd(self.lookups.clone().check_validity_batch(r.into_inner()).await)?))
    }
    async fn get_key(
        &self,
        r: Request<pb::GetKeyRequest>,
    ) -> Result<Response<pb::GetKeyResponse>, Status> {
        Ok(Response::new(fwd(self.lookups.clone().get_key(r.into_inner()).await)?))
    }
    async fn get_history(
        &self,
        r: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        let mut resp = fwd(self.lookups.clone().get_history(r.into_inner()).await)?;
        if self.lie == Lie::DropHistoryEntry {
            // Hide the deactivation: drop it from the answer and from the evidence.
            let hidden = resp.entries.remove(0).position;
            resp.proof.as_mut().unwrap().entries.retain(|e| e.position != hidden);
        }
        Ok(Response::new(resp))
    }
    async fn get_operator(
        &self,
        r: Request<pb::GetOperatorRequest>,
    ) -> Result<Response<pb::GetOperatorResponse>, Status> {
        Ok(Response::new(fwd(self.lookups.clone().get_operator(r.into_inner()).await)?))
    }
    async fn validate_signed_meter_values(
        &self,
        r: Request<pb::ValidateSignedMeterValuesRequest>,
    ) -> Result<Response<pb::ValidateSignedMeterValuesResponse>, Status> {
        let mut resp =
            fwd(self.lookups.clone().validate_signed_meter_values(r.into_inner()).await)?;
        let proof = resp.proof.as_mut().expect("asked with prove");
        match self.lie {
            Lie::AlterEntry => {
                let e = &mut proof.entries[0].entry;
                let last = e.len() - 1;
                e[last] ^= 0x01;
            }
            // Hide the newest entry about the meter (its deactivation).
            Lie::DropFromEvidence | Lie::DropHistoryEntry => {
                let newest = proof.entries.iter().map(|e| e.position).max().unwrap();
                proof.entries.retain(|e| e.position != newest);
            }
            Lie::FalseVerdict => {
                for v in &mut resp.results {
                    v.valid = true;
                    v.billable = true;
                    v.checks.retain(|c| c.outcome != pb::CheckOutcome::Fail as i32);
                }
            }
        }
        Ok(Response::new(resp))
    }
}

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AuditService for Liar {
    async fn get_registry_info(
        &self,
        r: Request<pb::GetRegistryInfoRequest>,
    ) -> Result<Response<pb::GetRegistryInfoResponse>, Status> {
        Ok(Response::new(fwd(self.audit.clone().get_registry_info(r.into_inner()).await)?))
    }
    async fn get_checkpoint(
        &self,
        r: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::GetCheckpointResponse>, Status> {
        Ok(Response::new(fwd(self.audit.clone().get_checkpoint(r.into_inner()).await)?))
    }
    type GetEntriesStream = Stream<pb::GetEntriesResponse>;
    async fn get_entries(
        &self,
        _: Request<pb::GetEntriesRequest>,
    ) -> Result<Response<Self::GetEntriesStream>, Status> {
        Err(Status::unimplemented("not needed by the double"))
    }
    async fn get_inclusion_proof(
        &self,
        r: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::GetInclusionProofResponse>, Status> {
        Ok(Response::new(fwd(self.audit.clone().get_inclusion_proof(r.into_inner()).await)?))
    }
    async fn get_consistency_proof(
        &self,
        r: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::GetConsistencyProofResponse>, Status> {
        Ok(Response::new(fwd(self.audit.clone().get_consistency_proof(r.into_inner()).await)?))
    }
    type WatchEntriesStream = Stream<pb::WatchEntriesResponse>;
    async fn watch_entries(
        &self,
        _: Request<pb::WatchEntriesRequest>,
    ) -> Result<Response<Self::WatchEntriesStream>, Status> {
        Err(Status::unimplemented("not needed by the double"))
    }
    async fn get_receipt(
        &self,
        r: Request<pb::GetReceiptRequest>,
    ) -> Result<Response<pb::GetReceiptResponse>, Status> {
        Ok(Response::new(fwd(self.audit.clone().get_receipt(r.into_inner()).await)?))
    }
}

/// Starts a lying double in front of `f`'s registry and returns a client connected to it.
async fn liar(f: &Fixture, lie: Lie) -> RegistryClient {
    let channel = f.registry.channel().await;
    let double = Liar {
        lookups: LookupServiceClient::new(channel.clone()),
        audit: AuditServiceClient::new(channel),
        lie,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LookupServiceServer::new(double.clone()))
            .add_service(AuditServiceServer::new(double))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    RegistryClient::connect(&format!("http://{addr}")).await.unwrap()
}

fn refused<T: std::fmt::Debug>(r: Result<T, ClientError>, lie: impl std::fmt::Debug) {
    match r {
        Err(ClientError::Verification(_)) => {}
        other => panic!("{lie:?}: the client accepted a lying answer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_server_is_caught() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let meter = meter_key();
    register(&f, &op, &meter, "DE*ABC*E1", "2026-01-01T00:00:00Z").await;
    f.client
        .submit(
            &op,
            &Order::Deactivate {
                fingerprint: meter.fingerprint_hex(),
                reason: EndReason::Compromised,
                comment: String::new(),
                effective_at: Some(t("2026-03-01T00:00:00Z")),
            },
        )
        .await
        .unwrap();
    let pem = registry_core::keys::p256_spki_pem(&registry_key(&f)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let evse = KeyTarget::Evse("DE*ABC*E1".into());
    for lie in [Lie::AlterEntry, Lie::DropFromEvidence, Lie::FalseVerdict] {
        let client = liar(&f, lie).await;
        let mut v = Verifier::new(&client, Some(&pem), &dir.path().join(format!("{lie:?}.json")))
            .await
            .unwrap();
        refused(v.check(&client, &evse, None, t("2026-06-01T00:00:00Z"), AsOf::Head).await, lie);
    }
    let client = liar(&f, Lie::DropHistoryEntry).await;
    let mut v = Verifier::new(&client, Some(&pem), &dir.path().join("history.json")).await.unwrap();
    refused(
        v.history(
            &client,
            KeyTarget::Fingerprint(meter.fingerprint_hex()).identifier(),
            AsOf::Head,
        )
        .await,
        Lie::DropHistoryEntry,
    );
    // Signed meter values: a record from after the deactivation is invalid; each lie about it
    // (or about the entries that show it) is caught by the client's own validation.
    let payload = r#"{"FV":"1.0","PG":"T1","MS":"M-1","IS":false,"IT":"NONE","RD":[{"TM":"2026-06-01T10:00:00,000+0000 S","TX":"B","RV":1,"RI":"1-b:1.8.0","RU":"kWh","EF":"","ST":"G"}]}"#;
    let record = registry_core::ocpi::Input {
        record: format!(
            r#"OCMF|{payload}|{{"SD":"{}"}}"#,
            hex::encode(meter.sign_der(payload.as_bytes()))
        ),
        claimed_key: None,
        label: "after deactivation".into(),
    };
    for lie in [Lie::AlterEntry, Lie::DropFromEvidence, Lie::FalseVerdict] {
        let client = liar(&f, lie).await;
        let mut v =
            Verifier::new(&client, Some(&pem), &dir.path().join(format!("ocmf-{lie:?}.json")))
                .await
                .unwrap();
        refused(v.meter_values(&client, std::slice::from_ref(&record), AsOf::Head).await, lie);
    }

    // The honest server passes the same checks.
    let mut honest =
        Verifier::new(&f.client, Some(&pem), &dir.path().join("honest.json")).await.unwrap();
    let (r, _) =
        honest.meter_values(&f.client, std::slice::from_ref(&record), AsOf::Head).await.unwrap();
    assert!(!r.results[0].valid, "signed after the deactivation");
    let (r, _) =
        honest.check(&f.client, &evse, None, t("2026-06-01T00:00:00Z"), AsOf::Head).await.unwrap();
    assert_eq!(verdict_name(&r.validity.unwrap()), "ENDED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_registry_signing_with_the_same_key_is_caught() {
    // The registry's data is copied; the copy, with the same key, continues differently: a fork
    // where a deactivation never happened. Each checkpoint verifies on its own; only consistency
    // with what the client saw before exposes the fork.
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let meter = meter_key();
    register(&f, &op, &meter, "DE*ABC*E1", "2026-01-01T00:00:00Z").await;
    let fork_dir = tempfile::tempdir().unwrap();
    let Fixture { registry, client, admin } = f;
    registry.server.shutdown();
    registry.server.wait().await.unwrap();
    drop(client);
    let fork = registry_tests::start_fork(&registry.config, fork_dir.path()).await;
    let honest = registry_server::registry::start_registry(
        &registry.config,
        registry_server::log::system_clock(),
    )
    .await
    .unwrap();
    let honest_client =
        RegistryClient::connect(&format!("http://{}", honest.local_addr())).await.unwrap();
    let fork_client =
        RegistryClient::connect(&format!("http://{}", fork.local_addr())).await.unwrap();
    let _ = admin;

    // The honest registry records the deactivation; the fork records something else instead.
    honest_client
        .submit(
            &op,
            &Order::Deactivate {
                fingerprint: meter.fingerprint_hex(),
                reason: EndReason::Compromised,
                comment: String::new(),
                effective_at: Some(t("2026-03-01T00:00:00Z")),
            },
        )
        .await
        .unwrap();
    fork_client
        .submit(
            &op,
            &Order::Register {
                key: new_key(&meter_key(), "M-9"),
                evse_ids: vec!["DE*ABC*E9".into()],
                effective_at: Some(t("2026-01-01T00:00:00Z")),
            },
        )
        .await
        .unwrap();

    let pem =
        std::fs::read_to_string(registry.config.data_dir.join("registry-key.pub.pem")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let evse = KeyTarget::Evse("DE*ABC*E1".into());
    let mut v = Verifier::new(&honest_client, Some(&pem), &state).await.unwrap();
    let (r, _) =
        v.check(&honest_client, &evse, None, t("2026-06-01T00:00:00Z"), AsOf::Head).await.unwrap();
    assert_eq!(verdict_name(&r.validity.unwrap()), "ENDED");
    // The fork's answer verifies on its own ...
    let mut fresh =
        Verifier::new(&fork_client, Some(&pem), &dir.path().join("fresh.json")).await.unwrap();
    let (forked, _) = fresh
        .check(&fork_client, &evse, None, t("2026-06-01T00:00:00Z"), AsOf::Head)
        .await
        .unwrap();
    assert_eq!(verdict_name(&forked.validity.unwrap()), "VALID", "the fork hides the deactivation");
    // ... but not to a client that saw the honest log: the checkpoints are inconsistent.
    let mut remembering = Verifier::new(&fork_client, Some(&pem), &state).await.unwrap();
    refused(
        remembering.check(&fork_client, &evse, None, t("2026-06-01T00:00:00Z"), AsOf::Head).await,
        "fork",
    );
}
