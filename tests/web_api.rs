//! The public web face against a real server on loopback: the JSON API answers exactly what
//! gRPC answers (the same messages in the protobuf JSON mapping, the same errors with the HTTP
//! status Connect gives their codes), and the log served as tiles is, byte for byte, the
//! archive `registry audit export` writes.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use registry_client::archive::Archive;
use registry_proto::pb;
use registry_proto::pb::lookup_service_client::LookupServiceClient;
use registry_tests::raw::{HttpReply, http};
use registry_tests::{Fixture, t};

async fn web_registry() -> (Fixture, SocketAddr) {
    let f =
        Fixture::start_configured(|c| c.http_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let addr = f.registry.server.web_addr().expect("a web listener");
    (f, addr)
}

/// POSTs `request` as protobuf JSON to `/keyregistry.v1.<method>`.
async fn post<T: serde::Serialize>(addr: SocketAddr, method: &str, request: &T) -> HttpReply {
    let body = serde_json::to_vec(request).unwrap();
    let path = format!("/keyregistry.v1.{method}");
    tokio::task::spawn_blocking(move || http(addr, &path, Some(("application/json", &body))))
        .await
        .unwrap()
}

async fn get(addr: SocketAddr, path: &str) -> HttpReply {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || http(addr, &path, None)).await.unwrap()
}

fn decoded<T: serde::de::DeserializeOwned>(reply: &HttpReply) -> T {
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    serde_json::from_slice(&reply.body).expect("the protobuf JSON of the response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_answers_are_the_grpc_answers_proofs_included() {
    let (f, addr) = web_registry().await;
    let op = f.operator("DE*ABC").await;
    let fingerprint = registry_tests::register_at_evse(&f, &op, "DE*ABC*E1").await;
    let mut lookups = LookupServiceClient::new(f.registry.channel().await);

    let question = pb::CheckValidityRequest {
        key: Some(pb::KeySelector {
            selector: Some(pb::key_selector::Selector::EvseId("DE*ABC*E1".into())),
            ..Default::default()
        }),
        at: Some(registry_core::time::to_timestamp(&t("2026-03-01T12:00:00Z"))),
        prove: true,
        ..Default::default()
    };
    let over_grpc = lookups.check_validity(question.clone()).await.unwrap().into_inner();
    let over_http: pb::CheckValidityResponse =
        decoded(&post(addr, "LookupService/CheckValidity", &question).await);
    assert_eq!(over_http, over_grpc);
    assert!(over_http.proof.is_some(), "the proof travels over JSON too");
    assert_eq!(registry_tests::verdict_name(over_http.validity.as_ref().unwrap()), "VALID");

    // The JSON is the protobuf mapping: camelCase names, 64-bit integers as strings.
    let raw = post(addr, "LookupService/CheckValidity", &question).await.json();
    assert!(raw["basis"]["logSize"].is_string(), "{raw}");

    let key = pb::GetKeyRequest { fingerprint: fingerprint.clone(), ..Default::default() };
    let over_grpc = lookups.get_key(key.clone()).await.unwrap().into_inner();
    let over_http: pb::GetKeyResponse = decoded(&post(addr, "LookupService/GetKey", &key).await);
    assert_eq!(over_http, over_grpc);

    let info: pb::GetRegistryInfoResponse =
        decoded(&post(addr, "AuditService/GetRegistryInfo", &pb::GetRegistryInfoRequest {}).await);
    assert_eq!(info.origin, f.origin());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_grpc_code_and_field_with_the_connect_http_status() {
    let (f, addr) = web_registry().await;
    let mut lookups = LookupServiceClient::new(f.registry.channel().await);

    let bad = pb::GetKeyRequest { fingerprint: "zz".into(), ..Default::default() };
    let over_grpc = lookups.get_key(bad.clone()).await.unwrap_err();
    let reply = post(addr, "LookupService/GetKey", &bad).await;
    assert_eq!(reply.status, 400);
    let error = reply.json();
    assert_eq!(error["code"], "invalid_argument");
    assert_eq!(error["message"], over_grpc.message());
    let violation = &error["details"][0]["debug"]["fieldViolations"][0];
    assert_eq!(violation["field"], "fingerprint", "{error}");

    let unknown = pb::GetKeyRequest { fingerprint: "ab".repeat(32), ..Default::default() };
    let over_grpc = lookups.get_key(unknown.clone()).await.unwrap_err();
    assert_eq!(over_grpc.code(), tonic::Code::NotFound);
    let reply = post(addr, "LookupService/GetKey", &unknown).await;
    assert_eq!((reply.status, reply.json()["code"].clone()), (404, "not_found".into()));

    // JSON that is not the request message: the field where parsing stopped is named.
    let body = br#"{"fingerprint": 12}"#;
    let reply = tokio::task::spawn_blocking(move || {
        http(addr, "/keyregistry.v1.LookupService/GetKey", Some(("application/json", body)))
    })
    .await
    .unwrap();
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["details"][0]["debug"]["fieldViolations"][0]["field"], "fingerprint");

    let reply = tokio::task::spawn_blocking(move || {
        http(addr, "/keyregistry.v1.LookupService/GetKey", Some(("text/plain", b"{}")))
    })
    .await
    .unwrap();
    assert_eq!(reply.status, 415);
    // Bodies are limited by method: a batch may be far larger than a single question.
    let mut big = vec![b' '; 2 << 20];
    big.extend_from_slice(b"{}");
    let (one, many) = tokio::task::spawn_blocking(move || {
        let one =
            http(addr, "/keyregistry.v1.LookupService/GetKey", Some(("application/json", &big)));
        let many = http(
            addr,
            "/keyregistry.v1.LookupService/CheckValidityBatch",
            Some(("application/json", &big)),
        );
        (one.status, many.status)
    })
    .await
    .unwrap();
    assert_eq!(one, 413);
    assert_ne!(many, 413);
    // Commands are not served here, nor anything else unknown.
    let command = pb::SubmitCommandRequest::default();
    assert_eq!(post(addr, "CommandService/SubmitCommand", &command).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_openapi_document_describes_every_method() {
    let (_f, addr) = web_registry().await;
    let reply = get(addr, "/openapi.json").await;
    assert_eq!(reply.status, 200);
    let kept = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json"))
        .expect("docs/openapi.json");
    assert_eq!(reply.body, kept, "the served document is the one kept in the repository");
    let doc = reply.json();
    for method in registry_server::web::api::METHODS {
        assert!(
            doc["paths"][method.path()]["post"]["requestBody"].is_object(),
            "{}",
            method.path()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiles_are_the_exported_archive_byte_for_byte() {
    let (f, addr) = web_registry().await;
    let op = f.operator("DE*ABC").await;
    // 2 entries per registration (it and its confirmation): past one full tile of 256.
    for i in 0..140 {
        registry_tests::register_at_evse(&f, &op, &format!("DE*ABC*E{i}")).await;
    }
    let size = f.log_size();
    assert!(size > 256, "{size}");

    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::new(dir.path());
    let bar = indicatif::ProgressBar::hidden();
    registry_client::audit::export(&f.client, &archive, None, &bar).await.expect("exported");

    let checkpoint = get(addr, "/checkpoint").await;
    assert_eq!(checkpoint.status, 200);
    assert_eq!(checkpoint.body, std::fs::read(dir.path().join("checkpoint")).unwrap());
    assert_eq!(checkpoint.header("cache-control"), Some("public, max-age=2"));

    let mut compared = 0;
    for file in walk(&dir.path().join("tile")) {
        let path = file.strip_prefix(dir.path()).unwrap().to_str().unwrap().replace('\\', "/");
        let served = get(addr, &format!("/{path}")).await;
        assert_eq!(served.status, 200, "{path}");
        assert_eq!(served.body, std::fs::read(&file).unwrap(), "{path}");
        assert_eq!(served.header("cache-control"), Some("public, max-age=31536000, immutable"));
        compared += 1;
    }
    // A full and a partial entry bundle, a full and a partial level-0 tile, a level-1 tile.
    assert!(compared >= 5, "{compared}");

    // An index whose first entry overflows names no tile (and is not served as an empty one).
    assert_eq!(get(addr, "/tile/0/x072/x057/x594/x037/x927/935").await.status, 404);
    // Nothing past the published head, and no non-canonical names.
    let beyond = registry_core::tiles::tile_path(None, size / 256, size % 256 + 1);
    assert_eq!(get(addr, &format!("/{beyond}")).await.status, 404);
    assert_eq!(get(addr, "/tile/entries/0").await.status, 404);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_api_follows_grpc_health() {
    let (f, addr) = web_registry().await;
    let question = pb::GetKeyRequest { fingerprint: "ab".repeat(32), ..Default::default() };
    assert_eq!(get(addr, "/healthz").await.status, 200);

    // A replica that fell behind marks its lookups not serving: the JSON API says so too.
    let health = f.registry.server.health();
    health.set("keyregistry.v1.LookupService", false);
    let reply = post(addr, "LookupService/GetKey", &question).await;
    assert_eq!((reply.status, reply.json()["code"].clone()), (503, "unavailable".into()));
    // The audit methods and the tiles do not depend on it.
    let info = post(addr, "AuditService/GetRegistryInfo", &pb::GetRegistryInfoRequest {}).await;
    assert_eq!(info.status, 200);
    health.set("keyregistry.v1.LookupService", true);
    assert_eq!(post(addr, "LookupService/GetKey", &question).await.status, 404);

    // A server stopping: /healthz tells the web port's load balancer.
    health.set("", false);
    assert_eq!(get(addr, "/healthz").await.status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_requests_are_counted_by_route_and_code_and_carry_a_request_id() {
    let f = Fixture::start_configured(|c| {
        c.http_listen = Some("127.0.0.1:0".parse().unwrap());
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        c.request_log = true;
    })
    .await;
    let addr = f.registry.server.web_addr().unwrap();
    let unknown = pb::GetKeyRequest { fingerprint: "ab".repeat(32), ..Default::default() };
    for _ in 0..2 {
        assert_eq!(post(addr, "LookupService/GetKey", &unknown).await.status, 404);
    }
    let checkpoint = get(addr, "/checkpoint").await;
    assert_eq!(checkpoint.status, 200);
    let id = checkpoint.header("x-request-id").expect("a request ID").to_string();
    assert!(!id.is_empty());
    // A client's own request ID comes back.
    let reply = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        write!(
            tcp,
            "GET /healthz HTTP/1.1\r\nHost: r\r\nx-request-id: trace-42\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).unwrap();
        out.to_lowercase()
    })
    .await
    .unwrap();
    assert!(reply.contains("x-request-id: trace-42"), "{reply}");

    let metrics_addr = f.registry.server.metrics_addr().unwrap();
    let m = tokio::task::spawn_blocking(move || {
        registry_tests::raw::http_get(metrics_addr, "/metrics")
    })
    .await
    .unwrap();
    let count = |series: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    assert_eq!(
        count(r#"http_server_request_duration_seconds_count{route="GetKey",code="404"}"#),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        count(r#"http_server_request_duration_seconds_count{route="checkpoint",code="200"}"#),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_port_caps_a_peers_connections_and_closes_silent_ones() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    let f = Fixture::start_configured(|c| {
        c.http_listen = Some("127.0.0.1:0".parse().unwrap());
        c.max_connections_per_peer = 2;
        c.handshake_timeout_secs = 1;
    })
    .await;
    let addr = f.registry.server.web_addr().expect("a web listener");
    let grpc = f.registry.server.local_addr();
    // The fixture's own gRPC client would hold one of this peer's connections.
    let Fixture { registry, client, admin: _ } = f;
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let request = b"GET /healthz HTTP/1.1\r\nhost: registry\r\n\r\n";
    let mut buf = [0u8; 512];

    // Two connections of this peer are served, and stay open (HTTP/1.1 keep-alive).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    // A third is closed at once, unanswered.
    let mut third = TcpStream::connect(addr).await.unwrap();
    let _ = third.write_all(request).await;
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("the connection over the cap is closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "answered over the cap: {}", String::from_utf8_lossy(&buf[..n]));
    // The two ports share one budget: the gRPC port refuses this peer too.
    let mut other = TcpStream::connect(grpc).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), other.read(&mut buf))
        .await
        .expect("the gRPC connection over the shared cap is closed")
        .unwrap_or(0);
    assert_eq!(n, 0);

    // Once they close, a connection that sends nothing is closed after the handshake timeout.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("a silent connection is closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // And the port still serves.
    let reply = get(addr, "/healthz").await;
    assert_eq!(reply.status, 200);
    drop(registry);
}
