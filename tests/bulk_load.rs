//! The bulk command path: each command of a `SubmitCommands` call is checked and appended exactly
//! as if it had been submitted alone, and a retry of the whole call changes nothing.

use registry_client::{AsOf, KeySubmission, KeyTarget, Order, command_bytes};
use registry_core::command::SignedCommand;
use registry_proto::pb;
use registry_tests::{Fixture, meter_key, spki_hex, t, verdict_name};
use tonic::Code;

fn register(key: &str, evse: &str) -> Order {
    Order::Register {
        key: KeySubmission::new(key),
        evse_ids: vec![evse.into()],
        effective_at: Some(t("2026-01-01T00:00:00Z")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_call_checks_each_command_as_if_alone() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    f.operator("DE*XYZ").await;
    let stranger = registry_core::keys::P256KeyPair::generate();

    let mut commands = Vec::new();
    for i in 0..300 {
        let action = register(&spki_hex(&meter_key()), &format!("DE*ABC*E{i}"));
        let mut signed = SignedCommand::sign(command_bytes(&action), &f.origin(), &op);
        match i {
            // Signed by a key the registry does not know.
            100 => signed = SignedCommand::sign(command_bytes(&action), &f.origin(), &stranger),
            // The operator's key ID, someone else's signature.
            150 => {
                signed.signature =
                    SignedCommand::sign(signed.command.clone(), &f.origin(), &stranger).signature
            }
            _ => {}
        }
        commands.push(signed);
    }
    // Another operator's charge point.
    commands.push(SignedCommand::sign(
        command_bytes(&register(&spki_hex(&meter_key()), "DE*XYZ*E1")),
        &f.origin(),
        &op,
    ));
    let before = f.log_size();
    let results = f.client.submit_many(commands.clone()).await.expect("the call succeeds");
    assert_eq!(results.len(), commands.len(), "one result per command");

    let refusals: Vec<(usize, &pb::Refusal)> =
        results.iter().enumerate().filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e))).collect();
    let codes: Vec<(usize, Code, &str)> =
        refusals.iter().map(|(i, r)| (*i, Code::from(r.code), r.field.as_str())).collect();
    assert_eq!(
        codes,
        vec![
            (100, Code::Unauthenticated, "command.signer_key_id"),
            (150, Code::Unauthenticated, "command.signature"),
            (300, Code::PermissionDenied, "register_key.evse_ids[0]"),
        ]
    );
    for (_, r) in &refusals {
        assert!(r.message.contains(&r.field), "the message names the field: {}", r.message);
    }

    // Each accepted registration has its own entry and its automatic confirmation.
    let accepted: Vec<&pb::SubmitCommandResponse> =
        results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(accepted.len(), 298);
    let mut positions: Vec<u64> =
        accepted.iter().flat_map(|a| [a.position, a.confirmation_position]).collect();
    positions.sort_unstable();
    positions.dedup();
    assert_eq!(positions.len(), 2 * 298, "every entry has its own position");
    assert_eq!(f.log_size(), before + 2 * 298, "refused commands append nothing");
    assert!(accepted.iter().all(|a| !a.duplicate && a.confirmation_position > a.position));

    // The results are in the order of the commands: entry i names the EVSE of command i.
    let evse_of = |a: &pb::SubmitCommandResponse| {
        let entry = registry_core::entry::Entry::decode(&a.entry).expect("a stored entry");
        format!("{:?}", entry.body)
    };
    for (i, r) in results.iter().enumerate().take(300) {
        if let Ok(a) = r {
            assert!(evse_of(a).contains(&format!("\"DE*ABC*E{i}\"")), "result {i} is command {i}");
        }
    }
    let valid = f
        .client
        .check(&KeyTarget::Evse("DE*ABC*E42".into()), None, t("2026-06-01T00:00:00Z"), AsOf::Head)
        .await
        .expect("lookup");
    assert_eq!(verdict_name(valid.validity.as_ref().expect("a verdict")), "VALID");

    // A retry of the whole call (the reply was lost) returns the same positions and appends
    // nothing new.
    let size = f.log_size();
    let again = f.client.submit_many(commands).await.expect("the retry succeeds");
    assert_eq!(f.log_size(), size, "a retry appends nothing");
    for (first, second) in results.iter().zip(&again) {
        match (first, second) {
            (Ok(a), Ok(b)) => {
                assert!(b.duplicate);
                assert_eq!(
                    (a.position, a.confirmation_position),
                    (b.position, b.confirmation_position)
                );
            }
            (Err(a), Err(b)) => assert_eq!(a.code, b.code),
            _ => panic!("a retry changed an outcome: {first:?} then {second:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_envelope_in_a_bulk_call_is_named_by_its_index() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let good = SignedCommand::sign(
        command_bytes(&register(&spki_hex(&meter_key()), "DE*ABC*E1")),
        &f.origin(),
        &op,
    );
    let mut bad = pb::SignedCommand::from(&good);
    bad.signer_key_id.truncate(5);
    let request = pb::SubmitCommandsRequest {
        commands: vec![
            bad,
            pb::SignedCommand::from(&SignedCommand::sign(
                command_bytes(&register(&spki_hex(&meter_key()), "DE*ABC*E2")),
                &f.origin(),
                &op,
            )),
        ],
    };
    let mut stub =
        pb::command_service_client::CommandServiceClient::new(f.registry.channel().await);
    let results =
        stub.submit_commands(request).await.expect("the call succeeds").into_inner().results;
    match &results[0].outcome {
        Some(pb::command_result::Outcome::Refused(r)) => {
            assert_eq!(Code::from(r.code), Code::InvalidArgument);
            assert_eq!(r.field, "commands[0].command.signer_key_id");
        }
        other => panic!("the malformed envelope must be refused, got {other:?}"),
    }
    assert!(matches!(results[1].outcome, Some(pb::command_result::Outcome::Accepted(_))));

    let too_many =
        pb::SubmitCommandsRequest { commands: vec![pb::SignedCommand::from(&good); 10_001] };
    let err = stub.submit_commands(too_many).await.expect_err("too many commands");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("commands"), "{}", err.message());
}
