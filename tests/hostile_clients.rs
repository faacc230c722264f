//! Hostile clients against a real server on real sockets: oversized and over-counted messages,
//! slow senders, silent and surplus connections, call floods and bad-signature floods. Each is
//! refused with the code the gRPC spec uses, costs the registry only what its limits allow, and
//! leaves other peers (other loopback addresses: 127.0.0.2, 127.0.0.3) and health checks served.
//!
//! The per-field refusals of hostile commands (garbage and off-curve keys, foreign curves, bad
//! EVSE IDs, out-of-range times, unsigned, mis-signed and replayed commands, another operator's
//! signer, role mix-ups) are in `bad_input.rs` and `authorization.rs`: code, field, nothing
//! appended.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use registry_client::{KeySubmission, Order, RegistryClient};
use registry_core::command::SignedCommand;
use registry_core::keys::P256KeyPair;
use registry_proto::pb;
use registry_proto::pb::lookup_service_client::LookupServiceClient;
use registry_tests::{Fixture, meter_key, raw, spki_hex, t};
use tokio::io::AsyncReadExt;
use tonic::Code;
use tonic::transport::Channel;

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const BYSTANDER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A channel to `f`'s registry from the loopback address `from`: another peer.
async fn channel_from(f: &Fixture, from: IpAddr) -> Channel {
    Channel::from_shared(f.registry.url())
        .expect("URL")
        .local_address(Some(from))
        .connect()
        .await
        .expect("connects")
}

/// A TCP connection to `addr` from the loopback address `from`.
async fn tcp_from(from: IpAddr, addr: SocketAddr) -> tokio::net::TcpStream {
    raw::tcp_from(from, addr).await.expect("connects from a loopback address")
}

/// Whether the server closes `tcp` within `wait` (whatever it sends first, such as its HTTP/2
/// settings).
async fn closed_within(mut tcp: tokio::net::TcpStream, wait: Duration) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(wait, tcp.read_to_end(&mut sink)).await.is_ok()
}

async fn health(channel: Channel) -> i32 {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
    tokio::time::timeout(Duration::from_secs(2), health.check(request))
        .await
        .expect("health answers at once")
        .expect("health answers")
        .into_inner()
        .status
}

fn lookups(channel: Channel) -> LookupServiceClient<Channel> {
    LookupServiceClient::new(channel).max_encoding_message_size(64 << 20)
}

fn batch_of(queries: Vec<pb::ValidityQuery>) -> pb::CheckValidityBatchRequest {
    pb::CheckValidityBatchRequest { queries, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_over_counted_messages_are_refused_with_resource_exhausted() {
    let f = Fixture::start().await;
    let before = f.log_size();
    let mut lookups = lookups(f.registry.channel().await);

    // Sixteen million empty questions fit in 32 MB; the length prefix alone refuses them, before
    // a byte of them is buffered.
    let addr = f.registry.server.local_addr();
    let path = "/keyregistry.v1.LookupService/CheckValidityBatch";
    let mut huge = slow_streams(addr, ATTACKER, path, 32 << 20, 1).await;
    assert_eq!(status_within(&mut huge[0], Duration::from_secs(5)).await.as_deref(), Some("8"));

    // Twenty thousand empty questions are well within the size; they are refused by count, which
    // stops sixteen million from being decoded into gigabytes of structs.
    let many = batch_of(vec![pb::ValidityQuery::default(); 20_000]);
    let err = lookups.check_validity_batch(many).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("at most 10016 fields"), "{}", err.message());

    // A protobuf group cannot hide the questions after it from the count.
    let mut hidden = vec![0x7b, 0x7c];
    hidden.extend([0x0a, 0x00].repeat(20_000));
    let client = raw::h2_from(ATTACKER, addr).await.expect("h2");
    let mut client = client.ready().await.expect("a stream");
    let (response, mut send) = client.send_request(raw::grpc_request(addr, path), false).unwrap();
    send.send_data(raw::framed(&hidden), true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response).await.unwrap().unwrap();
    assert_eq!(response.headers().get("grpc-status").map(|v| v.as_bytes()), Some(&b"3"[..]));

    // One command over its method's 64 KiB.
    let op = f.operator("DE*ABC").await;
    let big = SignedCommand::sign(vec![0; 100 * 1024], &f.origin(), &op);
    let err = f.client.submit_signed(big).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::ResourceExhausted), "{err}");

    // The largest valid batch still goes through, and nothing was appended by the refusals.
    let full = batch_of(vec![
        pb::ValidityQuery {
            key: Some(pb::KeySelector {
                selector: Some(pb::key_selector::Selector::Fingerprint("00".repeat(32))),
                manufacturer: String::new(),
            }),
            at: Some(registry_core::time::to_timestamp(&t("2026-01-01T00:00:00Z"))),
        };
        10_000
    ]);
    let answers = lookups.check_validity_batch(full).await.expect("a full batch").into_inner();
    assert_eq!(answers.results.len(), 10_000);
    assert_eq!(f.log_size(), before + 1, "only the operator was added");
}

/// A raw HTTP/2 stream that announces a message of `announce` bytes and sends one: the kind of
/// slow sender a tonic client cannot play.
struct SlowStream {
    response: h2::client::ResponseFuture,
    _send: h2::SendStream<Bytes>,
}

async fn slow_streams(
    addr: SocketAddr,
    from: IpAddr,
    path: &str,
    announce: u32,
    n: usize,
) -> Vec<SlowStream> {
    let client = raw::h2_from(from, addr).await.expect("h2");
    let mut streams = Vec::new();
    for _ in 0..n {
        let mut client = client.clone().ready().await.expect("a stream");
        let (response, mut send) =
            client.send_request(raw::grpc_request(addr, path), false).expect("sent");
        send.send_data(raw::announcing(announce), false).expect("data");
        streams.push(SlowStream { response, _send: send });
    }
    streams
}

/// The gRPC status of a stream's answer, if it comes within `wait`.
async fn status_within(stream: &mut SlowStream, wait: Duration) -> Option<String> {
    let response =
        tokio::time::timeout(wait, &mut stream.response).await.ok()?.expect("a response");
    Some(
        response
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap_or("?").to_string())
            .unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_senders_hold_no_more_than_their_peers_share_of_request_memory() {
    // 16 MiB for one peer: four 4 MiB batches being received.
    let f = Fixture::start_configured(|c| c.max_request_mib_per_peer = 16).await;
    let addr = f.registry.server.local_addr();
    let path = "/keyregistry.v1.LookupService/CheckValidityBatch";
    let mut held = slow_streams(addr, ATTACKER, path, 4 << 20, 4).await;
    for s in &mut held {
        assert_eq!(status_within(s, Duration::from_millis(300)).await, None, "still receiving");
    }
    let mut refused = slow_streams(addr, ATTACKER, path, 4 << 20, 1).await;
    assert_eq!(
        status_within(&mut refused[0], Duration::from_secs(5)).await.as_deref(),
        Some("8"),
        "RESOURCE_EXHAUSTED at once, before the message is buffered"
    );

    // Another peer's lookups are unaffected, and so are the slow sender's own small ones: small
    // messages do not wait for the request-bytes budget.
    let mut bystander = lookups(channel_from(&f, BYSTANDER).await);
    let request = pb::CheckValidityBatchRequest::default();
    bystander.check_validity_batch(request.clone()).await.expect("another peer is served");
    let mut own = lookups(f.registry.channel().await);
    own.check_validity_batch(request.clone()).await.expect("a small lookup is served");

    // When the slow sender goes away, its share comes back.
    drop(held);
    drop(refused);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = slow_streams(addr, ATTACKER, path, 4 << 20, 1).await;
        match status_within(&mut again[0], Duration::from_millis(300)).await {
            None => break,
            Some(_) if Instant::now() < deadline => continue,
            Some(code) => panic!("the share never came back: {code}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_surplus_connections_are_closed_and_others_still_connect() {
    let f = Fixture::start_configured(|c| {
        c.handshake_timeout_secs = 1;
        c.max_connections_per_peer = 3;
    })
    .await;
    let addr = f.registry.server.local_addr();
    let quiet: IpAddr = "127.0.0.4".parse().unwrap();
    // Three silent connections take the peer's places...
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(tcp_from(quiet, addr).await);
    }
    // ... so a fourth is closed at once, without waiting for anything.
    let surplus = tcp_from(quiet, addr).await;
    assert!(closed_within(surplus, Duration::from_millis(500)).await, "closed at once");
    // An HTTP/2 connection that never begins a call is no better than a silent one.
    let handshake_only = raw::h2_from("127.0.0.5".parse().unwrap(), addr).await.expect("h2");

    // Another peer connects and is served meanwhile.
    assert_eq!(health(channel_from(&f, BYSTANDER).await).await, 1, "SERVING");

    // Silent connections are closed after the handshake timeout.
    let started = Instant::now();
    for s in silent {
        assert!(closed_within(s, Duration::from_secs(5)).await, "a silent connection stayed open");
    }
    assert!(started.elapsed() < Duration::from_secs(4));
    // It was opened a moment after them, so it may still be open here; it is closed within the
    // same timeout of its own start.
    let deadline = Instant::now() + Duration::from_secs(5);
    while handshake_only.clone().ready().await.is_ok() {
        assert!(Instant::now() < deadline, "an HTTP/2 connection without calls stayed open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Their places are free again.
    assert_eq!(health(channel_from(&f, quiet).await).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_a_peers_limit_are_shed_at_once_and_health_still_answers() {
    let f = Fixture::start_configured(|c| c.max_calls_per_peer = 2).await;
    let channel = f.registry.channel().await;
    let mut audit = pb::audit_service_client::AuditServiceClient::new(channel.clone());
    // Two open streams are two calls in progress until they end.
    let first = audit.watch_entries(pb::WatchEntriesRequest { start: 0 }).await.unwrap();
    let second = audit.watch_entries(pb::WatchEntriesRequest { start: 0 }).await.unwrap();
    let started = Instant::now();
    let err = audit.get_registry_info(pb::GetRegistryInfoRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("calls in progress"), "{}", err.message());
    assert!(started.elapsed() < Duration::from_secs(1), "shed at once, not queued");
    assert_eq!(health(channel.clone()).await, 1, "health is never shed");
    let mut bystander =
        pb::audit_service_client::AuditServiceClient::new(channel_from(&f, BYSTANDER).await);
    bystander.get_registry_info(pb::GetRegistryInfoRequest {}).await.expect("another peer");
    drop((first, second));
    let deadline = Instant::now() + Duration::from_secs(5);
    while audit.get_registry_info(pb::GetRegistryInfoRequest {}).await.is_err() {
        assert!(Instant::now() < deadline, "the calls were never given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn registration(evse: &str) -> Order {
    Order::Register {
        key: KeySubmission::new(spki_hex(&meter_key())),
        evse_ids: vec![evse.into()],
        effective_at: Some(t("2026-01-01T00:00:00Z")),
    }
}

/// A command that names `op`'s key but is signed with another: what anyone can send, since key
/// IDs are public in the log.
fn forged(f: &Fixture, op: &P256KeyPair, n: usize) -> SignedCommand {
    let bytes = registry_client::command_bytes(&registration(&format!("DE*ABC*E{n}")));
    let named = SignedCommand::sign(bytes.clone(), &f.origin(), op);
    let mut forged = SignedCommand::sign(bytes, &f.origin(), &P256KeyPair::generate());
    forged.signer_key_id = named.signer_key_id;
    forged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_flood_spends_its_budget_and_is_then_refused_unchecked() {
    let f = Fixture::start_configured(|c| {
        c.bad_signatures_per_sec = 1;
        c.bad_signatures_burst = 5;
    })
    .await;
    let op = f.operator("DE*ABC").await;
    let before = f.log_size();
    let (mut checked, mut unchecked) = (0, 0);
    for n in 0..20 {
        let err = f.client.submit_signed(forged(&f, &op, n)).await.unwrap_err();
        match err.code() {
            Some(Code::Unauthenticated) => {
                assert_eq!(err.violations()[0].field, "command.signature");
                checked += 1;
            }
            Some(Code::ResourceExhausted) => unchecked += 1,
            other => panic!("unexpected {other:?}: {err}"),
        }
    }
    assert!((5..=8).contains(&checked), "the burst was checked, then no more: {checked}");
    assert_eq!(checked + unchecked, 20);

    // A bulk call from a fresh peer cannot spend more than the budget either.
    let third = RegistryClient::from_channel(channel_from(&f, "127.0.0.3".parse().unwrap()).await);
    let results =
        third.submit_many((100..1100).map(|n| forged(&f, &op, n)).collect()).await.unwrap();
    let verified = results
        .iter()
        .filter(|r| matches!(r, Err(refusal) if refusal.code == Code::Unauthenticated as i32))
        .count();
    let exhausted = results
        .iter()
        .filter(|r| matches!(r, Err(refusal) if refusal.code == Code::ResourceExhausted as i32))
        .count();
    assert!(verified <= 8, "{verified} bad signatures checked in one call");
    assert_eq!(verified + exhausted, 1000);

    assert_eq!(f.log_size(), before, "nothing forged was appended");

    // The operator, elsewhere, is served.
    let operator = RegistryClient::from_channel(channel_from(&f, BYSTANDER).await);
    operator.submit(&op, &registration("DE*ABC*E9999")).await.expect("the real operator");
}
