//! The per-connection limits a public port needs, against a real server on a real socket: a
//! connection gets no more concurrent calls than configured; and every limit is in the example
//! configuration a deployment starts from.

use std::time::Duration;

use registry_proto::pb::audit_service_client::AuditServiceClient;
use registry_proto::pb::{GetRegistryInfoRequest, WatchEntriesRequest};
use registry_server::log::{RawBodies, system_clock};
use registry_server::server::Server;
use registry_tests::{TestRegistry, test_config};
use tonic::transport::Channel;

async fn start(
    limit: impl FnOnce(&mut registry_server::config::Config),
) -> TestRegistry<RawBodies> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    limit(&mut config);
    let server = Server::start(&config, RawBodies, system_clock(), |_, _| {}).await.unwrap();
    TestRegistry { server, config, dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_gets_no_more_concurrent_calls_than_configured() {
    let registry = start(|c| c.max_streams_per_connection = 2).await;
    // One channel is one HTTP/2 connection.
    let channel: Channel = registry.channel().await;
    let mut client = AuditServiceClient::new(channel);
    let first = client.watch_entries(WatchEntriesRequest { start: 0 }).await.unwrap().into_inner();
    let second = client.watch_entries(WatchEntriesRequest { start: 0 }).await.unwrap().into_inner();

    // Both streams stay open, so a third call on the connection waits for a free stream.
    let mut third = client.clone();
    let waiting =
        tokio::spawn(async move { third.get_registry_info(GetRegistryInfoRequest {}).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a third concurrent call was served on a two-stream connection"
    );

    // Once one stream ends, it goes through.
    drop(first);
    let info = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the call goes through once a stream is free")
        .unwrap()
        .unwrap()
        .into_inner();
    assert!(!info.origin.is_empty());
    drop(second);

    // Another connection was never limited by this one.
    let mut other = AuditServiceClient::new(registry.channel().await);
    other.get_registry_info(GetRegistryInfoRequest {}).await.unwrap();
}

#[test]
fn the_example_configuration_states_every_connection_limit() {
    let config = registry_server::config::Config::default();
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/registry.example.toml"),
    )
    .unwrap();
    for line in [
        format!("max_streams_per_connection = {}", config.max_streams_per_connection),
        format!("request_timeout_secs = {}", config.request_timeout_secs),
        format!("keepalive_secs = {}", config.keepalive_secs),
        format!("max_header_list_bytes = {}", config.max_header_list_bytes),
        format!("tls_reload_secs = {}", config.tls_reload_secs),
        format!("max_connections = {}", config.max_connections),
        format!("max_connections_per_peer = {}", config.max_connections_per_peer),
        format!("handshake_timeout_secs = {}", config.handshake_timeout_secs),
        format!("idle_timeout_secs = {}", config.idle_timeout_secs),
        format!("max_calls = {}", config.max_calls),
        format!("max_calls_per_peer = {}", config.max_calls_per_peer),
        format!("max_request_mib = {}", config.max_request_mib),
        format!("max_request_mib_per_peer = {}", config.max_request_mib_per_peer),
        format!("bad_signatures_per_sec = {}", config.bad_signatures_per_sec),
        format!("bad_signatures_burst = {}", config.bad_signatures_burst),
        format!("stream_window_kib = {}", config.stream_window_kib),
        format!("connection_window_kib = {}", config.connection_window_kib),
    ] {
        assert!(example.contains(&line), "deploy/registry.example.toml lacks {line:?}");
    }
}
