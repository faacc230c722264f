//! Bad input: each mistake gets the right status code, a `google.rpc.BadRequest` detail naming
//! the field, a message that names the field and the rule, and appends nothing.

use registry_client::{ClientError, EndReason, KeySubmission, Order};
use registry_core::command::SignedCommand;
use registry_core::keys::P256KeyPair;
use registry_tests::{Fixture, meter_key, spki_hex, t};
use tonic::Code;

/// A P-521 key (from OpenSSL): a curve the registry does not support.
const P521_SPKI: &str = "30819b301006072a8648ce3d020106052b810400230381860004017e29a06ef20ecc65c7822ed1bba4237ae05282e178f59c8fde9af8b36d8fabd5c963d78ffc276d688c1d181552d62ea51a47f60e49c82d5d0f146f532b971d067f000c6c3c5520db4781a5904b70d7424fa57fb9e2fb38be1339be903b9e162e2cd9079c1ec884b13842ed8432f5ac8f523f867df62bbc6012fec8d520b59df356d6cf";

fn register(key: &str, evse: &str, at: &str) -> Order {
    Order::Register {
        key: KeySubmission::new(key),
        evse_ids: vec![evse.into()],
        effective_at: Some(t(at)),
    }
}

/// Submits and checks the refusal: code, field, message, nothing appended.
async fn refused(
    f: &Fixture,
    signer: &P256KeyPair,
    action: &Order,
    code: Code,
    field: &str,
) -> ClientError {
    let before = f.log_size();
    let err = f.client.submit(signer, action).await.expect_err("the command must be refused");
    check(f, err, before, code, field)
}

fn check(f: &Fixture, err: ClientError, before: u64, code: Code, field: &str) -> ClientError {
    assert_eq!(err.code(), Some(code), "{err}");
    assert_eq!(err.violations().len(), 1, "{err}");
    assert_eq!(err.violations()[0].field, field, "{err}");
    assert!(!err.violations()[0].description.is_empty());
    assert!(err.to_string().contains(field), "the message names the field: {err}");
    assert_eq!(f.log_size(), before, "nothing is appended for {field}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mistake_is_named_and_nothing_is_appended() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    f.operator("DE*XYZ").await;
    let existing = meter_key();
    f.client
        .submit(&op, &register(&spki_hex(&existing), "DE*ABC*E1", "2026-01-01T00:00:00Z"))
        .await
        .unwrap();

    let e = refused(
        &f,
        &op,
        &register(&spki_hex(&meter_key()), "DE*ABC*X1", "2026-01-01T00:00:00Z"),
        Code::InvalidArgument,
        "register_key.evse_ids[0]",
    )
    .await;
    assert!(e.to_string().contains("ID type E"), "{e}");

    refused(
        &f,
        &op,
        &register(&spki_hex(&meter_key()), "DE*XYZ*E1", "2026-01-01T00:00:00Z"),
        Code::PermissionDenied,
        "register_key.evse_ids[0]",
    )
    .await;

    let mut off_curve = meter_key().verifying_key().to_sec1_point(false).as_bytes().to_vec();
    off_curve[64] ^= 0x01;
    let e = refused(
        &f,
        &op,
        &register(&hex::encode(off_curve), "DE*ABC*E2", "2026-01-01T00:00:00Z"),
        Code::InvalidArgument,
        "register_key.key.public_key",
    )
    .await;
    assert!(e.to_string().contains("not on the curve"), "{e}");

    let e = refused(
        &f,
        &op,
        &register(P521_SPKI, "DE*ABC*E2", "2026-01-01T00:00:00Z"),
        Code::InvalidArgument,
        "register_key.key.public_key",
    )
    .await;
    assert!(e.to_string().contains("1.3.132.0.35"), "names the unknown curve: {e}");

    let e = refused(
        &f,
        &op,
        &register(&spki_hex(&existing), "DE*ABC*E2", "2026-01-01T00:00:00Z"),
        Code::AlreadyExists,
        "register_key.key.public_key",
    )
    .await;
    assert!(e.to_string().contains("already registered"), "{e}");

    let e = refused(
        &f,
        &op,
        &register(&spki_hex(&meter_key()), "DE*ABC*E1", "2026-02-01T00:00:00Z"),
        Code::FailedPrecondition,
        "register_key.evse_ids[0]",
    )
    .await;
    assert!(e.to_string().contains(&existing.fingerprint_hex()), "names the key in the way: {e}");

    let future = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    refused(
        &f,
        &op,
        &register(&spki_hex(&meter_key()), "DE*ABC*E3", &future),
        Code::InvalidArgument,
        "register_key.effective_at",
    )
    .await;

    let backwards = Order::Deactivate {
        fingerprint: existing.fingerprint_hex(),
        reason: EndReason::Decommissioned,
        comment: String::new(),
        effective_at: Some(t("2025-12-31T00:00:00Z")),
    };
    let e =
        refused(&f, &op, &backwards, Code::FailedPrecondition, "deactivate_key.effective_at").await;
    assert!(e.to_string().contains("never go backwards"), "{e}");

    // The request ID the registry will give the confirmation of the next registration.
    let next = f.log_size();
    let reserved = registry_core::lifecycle::RegistryAction::AutoConfirm {
        fingerprint: meter_key().fingerprint_hex(),
        registration: next,
    }
    .request_id()
    .0;
    let bytes = registry_client::command_bytes_with(
        &register(&spki_hex(&meter_key()), "DE*ABC*E6", "2026-01-01T00:00:00Z"),
        reserved,
        chrono::Utc::now(),
    );
    let err =
        f.client.submit_signed(SignedCommand::sign(bytes, &f.origin(), &op)).await.unwrap_err();
    let e = check(&f, err, next, Code::InvalidArgument, "request_id");
    assert!(e.to_string().contains("reserves"), "{e}");

    // The same request ID with other content.
    let id = uuid::Uuid::now_v7();
    let now = chrono::Utc::now();
    let first = registry_client::command_bytes_with(
        &register(&spki_hex(&meter_key()), "DE*ABC*E4", "2026-01-01T00:00:00Z"),
        id,
        now,
    );
    let first =
        f.client.submit_signed(SignedCommand::sign(first.clone(), &f.origin(), &op)).await.unwrap();
    let other = registry_client::command_bytes_with(
        &register(&spki_hex(&meter_key()), "DE*ABC*E5", "2026-01-01T00:00:00Z"),
        id,
        now,
    );
    let before = f.log_size();
    let err =
        f.client.submit_signed(SignedCommand::sign(other, &f.origin(), &op)).await.unwrap_err();
    let e = check(&f, err, before, Code::AlreadyExists, "request_id");
    assert!(e.to_string().contains(&format!("entry {}", first.position)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_request_returns_the_original_result_even_when_stale() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let bytes = registry_client::command_bytes(&register(
        &spki_hex(&meter_key()),
        "DE*ABC*E1",
        "2026-01-01T00:00:00Z",
    ));
    let signed = SignedCommand::sign(bytes, &f.origin(), &op);
    let first = f.client.submit_signed(signed.clone()).await.unwrap();
    let size = f.log_size();
    let again = f.client.submit_signed(signed).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(
        (again.position, again.entry, again.confirmation_position),
        (first.position, first.entry, first.confirmation_position)
    );
    assert_eq!(f.log_size(), size, "a retry appends nothing");

    // An old command that never reached the registry is refused as stale ...
    let old = chrono::Utc::now() - chrono::TimeDelta::minutes(30);
    let stale = registry_client::command_bytes_with(
        &register(&spki_hex(&meter_key()), "DE*ABC*E2", "2026-01-01T00:00:00Z"),
        uuid::Uuid::now_v7(),
        old,
    );
    let before = f.log_size();
    let err =
        f.client.submit_signed(SignedCommand::sign(stale, &f.origin(), &op)).await.unwrap_err();
    check(&f, err, before, Code::Unauthenticated, "issued_at");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_envelopes_are_refused_before_anything_else() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let before = f.log_size();
    let mut not_a_command =
        SignedCommand::sign(b"\xff\xff not protobuf".to_vec(), &f.origin(), &op);
    let err = f.client.submit_signed(not_a_command.clone()).await.unwrap_err();
    check(&f, err, before, Code::InvalidArgument, "command");
    not_a_command.signer_key_id = [0; 32];
    let err = f.client.submit_signed(not_a_command).await.unwrap_err();
    check(&f, err, before, Code::Unauthenticated, "command.signer_key_id");
    let no_action = registry_proto::pb::Command {
        request_id: uuid::Uuid::now_v7().to_string(),
        issued_at: Some(registry_core::time::to_timestamp(&chrono::Utc::now())),
        action: None,
    };
    let err = f
        .client
        .submit_signed(SignedCommand::sign(
            prost::Message::encode_to_vec(&no_action),
            &f.origin(),
            &op,
        ))
        .await
        .unwrap_err();
    check(&f, err, before, Code::InvalidArgument, "action");
}
