//! The audit API end to end: a registry on a loopback port with a real sled log, entries appended
//! through the log, and everything read back over gRPC and verified with `registry-proto` alone:
//! checkpoint signatures, the hash chain, the Merkle root, inclusion and consistency proofs, and
//! the watch stream (no gap, no duplicate, every message covered by a verifying checkpoint).

use std::time::Duration;

use registry_core::checkpoint::Checkpoint;
use registry_core::entry::{self, ChainVerifier};
use registry_core::merkle::{self, Frontier};
use registry_core::note::NoteVerifier;
use registry_proto::pb::audit_service_client::AuditServiceClient;
use registry_proto::pb::{
    GetCheckpointRequest, GetConsistencyProofRequest, GetEntriesRequest, GetInclusionProofRequest,
    GetRegistryInfoRequest, WatchEntriesRequest,
};
use registry_tests::{TestRegistry, append_raw};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

async fn verifier(client: &mut AuditServiceClient<Channel>) -> NoteVerifier {
    let info = client.get_registry_info(GetRegistryInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.key_id, hex(&registry_core::keys::note_key_id(&info.public_key_der)));
    assert_eq!(info.fingerprint, registry_core::keys::fingerprint_hex(&info.public_key_der));
    NoteVerifier::new(&info.origin, &info.public_key_der).unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn checkpoint(
    client: &mut AuditServiceClient<Channel>,
    verifier: &NoteVerifier,
    size: u64,
) -> Checkpoint {
    let r =
        client.get_checkpoint(GetCheckpointRequest { tree_size: size }).await.unwrap().into_inner();
    let cp = Checkpoint::open(&r.checkpoint, verifier).expect("checkpoint signature verifies");
    assert_eq!((cp.size, cp.root.to_vec()), (r.tree_size, r.root_hash));
    cp
}

async fn all_entries(client: &mut AuditServiceClient<Channel>, start: u64) -> Vec<(u64, Vec<u8>)> {
    let mut stream =
        client.get_entries(GetEntriesRequest { start, end: 0 }).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(msg) = stream.message().await.unwrap() {
        out.extend(msg.entries.into_iter().map(|e| (e.position, e.entry)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_api_serves_a_log_that_verifies_end_to_end() {
    let registry = TestRegistry::start_raw().await;
    let mut client = AuditServiceClient::new(registry.channel().await);
    let verifier = verifier(&mut client).await;

    // A follower that starts on the empty log and must see every entry exactly once.
    let mut watch =
        client.watch_entries(WatchEntriesRequest { start: 0 }).await.unwrap().into_inner();

    let appended = append_raw(&registry.server, 600, 16).await;
    assert_eq!(appended.iter().map(|(p, _)| *p).collect::<Vec<_>>(), (0..600).collect::<Vec<_>>());

    // The checkpoint covers everything and is signed by the registry key.
    let head = checkpoint(&mut client, &verifier, 0).await;
    assert_eq!(head.size, 600);

    // Entries: the chain verifies, the request IDs are ours, the root matches the checkpoint.
    let entries = all_entries(&mut client, 0).await;
    assert_eq!(entries.len(), 600);
    let mut chain = ChainVerifier::new();
    let mut frontier = Frontier::new();
    for ((position, bytes), (expected_pos, id)) in entries.iter().zip(&appended) {
        assert_eq!(position, expected_pos);
        frontier.push(chain.push(bytes).expect("chain verifies"));
        use prost::Message;
        let decoded = registry_proto::pb::LogEntry::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.request_id, id.to_string());
    }
    assert_eq!(frontier.root(), head.root);

    // Reading again from the middle resumes exactly where asked.
    assert_eq!(all_entries(&mut client, 450).await, entries[450..].to_vec());

    // Inclusion proofs at the head and at an older signed size.
    for (position, size) in [(0, 0), (17, 0), (599, 0), (3, 64), (63, 64), (100, 333)] {
        let proof = client
            .get_inclusion_proof(GetInclusionProofRequest { position, tree_size: size })
            .await
            .unwrap()
            .into_inner();
        let cp = checkpoint(&mut client, &verifier, proof.tree_size).await;
        let leaf = merkle::leaf_hash(&entries[position as usize].1);
        assert_eq!(proof.leaf_hash, leaf.to_vec());
        merkle::verify_inclusion(position, cp.size, &leaf, &proof.proof, &cp.root)
            .expect("inclusion proof verifies against the signed checkpoint");
    }

    // Consistency between two signed checkpoints.
    for (from, to) in [(1, 600), (64, 600), (333, 600), (100, 333), (600, 600)] {
        let old = checkpoint(&mut client, &verifier, from).await;
        let new = checkpoint(&mut client, &verifier, to).await;
        let proof = client
            .get_consistency_proof(GetConsistencyProofRequest { from_size: from, to_size: to })
            .await
            .unwrap()
            .into_inner();
        merkle::verify_consistency(from, to, &old.root, &new.root, &proof.proof)
            .expect("consistency proof verifies between signed checkpoints");
    }

    // The watch stream delivered 0..600 in order, each message covered by its checkpoint.
    let mut seen = Vec::new();
    let mut follower = Frontier::new();
    while seen.len() < 600 {
        let msg = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("watch delivers promptly")
            .unwrap()
            .expect("watch stays open");
        assert!(!msg.entries.is_empty());
        for e in &msg.entries {
            assert_eq!(e.position, seen.len() as u64, "no gap and no duplicate");
            follower.push(merkle::leaf_hash(&e.entry));
            seen.push(e.position);
        }
        let cp = Checkpoint::open(&msg.checkpoint, &verifier).expect("watch checkpoint verifies");
        assert_eq!(cp.size, follower.size());
        assert_eq!(cp.root, follower.root());
    }

    // New entries keep flowing to the follower.
    append_raw(&registry.server, 5, 1).await;
    let msg = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(msg.entries[0].position, 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_started_mid_log_catches_up_then_follows() {
    let registry = TestRegistry::start_raw().await;
    let mut client = AuditServiceClient::new(registry.channel().await);
    let verifier = verifier(&mut client).await;
    append_raw(&registry.server, 700, 8).await;
    let mut watch =
        client.watch_entries(WatchEntriesRequest { start: 250 }).await.unwrap().into_inner();
    let more = tokio::spawn({
        let appender = registry.server.appender();
        async move {
            for _ in 0..50 {
                let id = uuid::Uuid::new_v4();
                let body = registry_tests::body_for(id);
                appender.append(id, registry_tests::digest(&body), body).await.unwrap();
            }
        }
    });
    let mut next = 250;
    while next < 750 {
        let msg = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        for e in &msg.entries {
            assert_eq!(e.position, next);
            assert_eq!(entry::decode_header(&e.entry).unwrap().position, next);
            next += 1;
        }
        assert_eq!(Checkpoint::open(&msg.checkpoint, &verifier).unwrap().size, next);
    }
    more.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_outside_the_log_name_the_field_and_the_rule() {
    let registry = TestRegistry::start_raw().await;
    let mut client = AuditServiceClient::new(registry.channel().await);
    append_raw(&registry.server, 10, 2).await;
    let cases = [
        (
            client
                .get_inclusion_proof(GetInclusionProofRequest { position: 10, tree_size: 0 })
                .await
                .unwrap_err(),
            Code::OutOfRange,
            "position",
        ),
        (
            client
                .get_inclusion_proof(GetInclusionProofRequest { position: 1, tree_size: 11 })
                .await
                .unwrap_err(),
            Code::OutOfRange,
            "tree_size",
        ),
        (
            client
                .get_consistency_proof(GetConsistencyProofRequest { from_size: 0, to_size: 5 })
                .await
                .unwrap_err(),
            Code::InvalidArgument,
            "from_size",
        ),
        (
            client
                .get_consistency_proof(GetConsistencyProofRequest { from_size: 6, to_size: 5 })
                .await
                .unwrap_err(),
            Code::OutOfRange,
            "from_size",
        ),
        (
            client.get_entries(GetEntriesRequest { start: 11, end: 0 }).await.unwrap_err(),
            Code::OutOfRange,
            "start",
        ),
        (
            client.get_entries(GetEntriesRequest { start: 5, end: 3 }).await.unwrap_err(),
            Code::InvalidArgument,
            "end",
        ),
        (
            client.watch_entries(WatchEntriesRequest { start: 12 }).await.unwrap_err(),
            Code::OutOfRange,
            "start",
        ),
    ];
    for (status, code, field) in cases {
        assert_eq!(status.code(), code, "{status:?}");
        let violations =
            status.get_details_bad_request().expect("BadRequest details").field_violations;
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, field);
        assert!(!violations[0].description.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_grpc_tools_find_health_and_reflection() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let registry = TestRegistry::start_raw().await;
    let channel = registry.channel().await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "keyregistry.v1.AuditService"] {
        let status = health
            .check(HealthCheckRequest { service: service.into() })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in ["keyregistry.v1.AuditService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} missing from {names:?}");
    }

    // The error details the registry sends are described too, so tools decode a BadRequest.
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("google.rpc.BadRequest".into())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected the file that defines google.rpc.BadRequest");
    };
    let file = <prost_types::FileDescriptorProto as prost::Message>::decode(
        &files.file_descriptor_proto[0][..],
    )
    .unwrap();
    assert_eq!(file.package(), "google.rpc");
    assert!(file.message_type.iter().any(|m| m.name() == "BadRequest"), "{file:?}");
}

/// Older tools (grpcio's reflection client, Evans, Postman, grpcurl before 1.8.7) speak
/// `grpc.reflection.v1alpha`; it lists the same services.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1alpha_lists_the_services_for_older_tools() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let registry = TestRegistry::start_raw().await;
    let mut reflection = ServerReflectionClient::new(registry.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in
        ["keyregistry.v1.LookupService", "keyregistry.v1.CommandService", "grpc.health.v1.Health"]
    {
        assert!(names.iter().any(|n| n == wanted), "{wanted} missing from {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_and_stops_promptly() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    let registry = TestRegistry::start_raw().await;
    let channel = registry.channel().await;
    let mut client = AuditServiceClient::new(channel.clone());
    append_raw(&registry.server, 3, 1).await;
    let mut watch =
        client.watch_entries(WatchEntriesRequest { start: 0 }).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.entries.len(), 3);
    let mut health_watch = HealthClient::new(channel)
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health_watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );

    let TestRegistry { server, dir, .. } = registry;
    server.shutdown();
    let ended = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("the watch stream ends at shutdown");
    let status = ended.expect_err("the stream ends with a status");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("resume from position 3"), "{}", status.message());
    let last_health = tokio::time::timeout(Duration::from_secs(5), health_watch.message())
        .await
        .expect("the health watch ends at shutdown");
    if let Ok(Some(update)) = last_health {
        assert_eq!(update.status, ServingStatus::NotServing as i32);
    }
    tokio::time::timeout(Duration::from_secs(5), server.wait())
        .await
        .expect("shutdown is bounded")
        .expect("clean stop");
    drop(dir);
}
