//! TLS and mTLS on a real socket: `https://` is always TLS and checked against the CA given
//! (never a silent plaintext), commands can require a client certificate while reads stay open,
//! and new certificate files are taken without a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use registry_client::{ClientError, Order, RegistryClient, TlsOptions};
use registry_core::keys::P256KeyPair;
use registry_server::config::{ClientAuth, Config};
use registry_server::log::system_clock;
use registry_server::machine::RegistryMachine;
use registry_server::registry::start_registry;
use registry_server::server::Server;
use registry_tests::pki::TestCa;
use registry_tests::{Fixture, test_config};
use tonic::Code;

struct TlsRegistry {
    server: Server<RegistryMachine>,
    admin: P256KeyPair,
    _dir: tempfile::TempDir,
}

impl TlsRegistry {
    fn url(&self) -> String {
        format!("https://localhost:{}", self.server.local_addr().port())
    }
}

/// A registry serving TLS with a certificate from `ca`, with an administrator key.
async fn start(ca: &TestCa, dir: &Path, change: impl FnOnce(&mut Config)) -> TlsRegistry {
    let data = tempfile::tempdir().unwrap();
    let admin = P256KeyPair::generate();
    let admin_file = data.path().join("admin.pub.pem");
    std::fs::write(&admin_file, admin.public_key_pem()).unwrap();
    let server_cert = ca.server(dir, "server");
    let mut config = Config {
        admin_keys: vec![admin_file],
        tls_cert: Some(server_cert.cert),
        tls_key: Some(server_cert.key),
        ..test_config(&data.path().join("data"))
    };
    change(&mut config);
    let server = start_registry(&config, system_clock()).await.expect("a TLS registry starts");
    TlsRegistry { server, admin, _dir: data }
}

/// Whether a client connecting to `url` with `tls` gets an answer at all.
async fn answered(url: &str, tls: &TlsOptions) -> bool {
    match RegistryClient::connect_with(url, tls).await {
        Ok(c) => c.registry_info().await.is_ok(),
        Err(_) => false,
    }
}

fn trusting(ca: &TestCa) -> TlsOptions {
    TlsOptions { ca_cert: Some(ca.cert.clone()), ..Default::default() }
}

fn add_operator(id: &str) -> Order {
    Order::AddOperator {
        operator_id: id.into(),
        name: id.into(),
        public_keys: vec![P256KeyPair::generate().public_key_pem()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_means_tls_checked_against_the_given_ca_and_never_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "registry");
    let registry = start(&ca, dir.path(), |_| {}).await;

    let client = RegistryClient::connect_with(&registry.url(), &trusting(&ca)).await.unwrap();
    let info = client.registry_info().await.expect("a lookup over TLS");
    assert_eq!(info.origin, registry.server.identity().origin);

    // The system's roots do not know this CA: the certificate is refused, and said so.
    let err =
        RegistryClient::connect_with(&registry.url(), &TlsOptions::default()).await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");

    // Nor does another CA.
    let other = TestCa::new(dir.path(), "other");
    let err = RegistryClient::connect_with(&registry.url(), &trusting(&other)).await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");

    // Plaintext to the TLS port gets nothing.
    let plain = format!("http://127.0.0.1:{}", registry.server.local_addr().port());
    assert!(
        !answered(&plain, &TlsOptions::default()).await,
        "a plaintext client was answered by a TLS port"
    );

    // And https:// to a plaintext server fails instead of falling back to plaintext.
    let f = Fixture::start().await;
    let https = f.registry.url().replace("http://", "https://");
    assert!(!answered(&https, &trusting(&ca)).await, "https:// was answered in plaintext");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_need_a_client_certificate_from_the_client_ca_and_reads_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "registry");
    let clients = TestCa::new(dir.path(), "commissioning");
    let registry = start(&ca, dir.path(), |c| {
        c.tls_client_ca = Some(clients.cert.clone());
        c.tls_client_auth = ClientAuth::Writes;
    })
    .await;

    let reader = RegistryClient::connect_with(&registry.url(), &trusting(&ca)).await.unwrap();
    reader.registry_info().await.expect("reads stay open");
    let err = reader.submit(&registry.admin, &add_operator("DE*AAA")).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");
    assert!(err.to_string().contains("client certificate"), "{err}");

    let tool = clients.client(dir.path(), "tool");
    let with_cert =
        TlsOptions { client_cert: Some(tool.cert), client_key: Some(tool.key), ..trusting(&ca) };
    let writer = RegistryClient::connect_with(&registry.url(), &with_cert).await.unwrap();
    writer.submit(&registry.admin, &add_operator("DE*BBB")).await.expect("mTLS writer");

    // A certificate from another CA does not get through the handshake.
    let stranger = TestCa::new(dir.path(), "stranger").client(dir.path(), "stranger-tool");
    let foreign = TlsOptions {
        client_cert: Some(stranger.cert),
        client_key: Some(stranger.key),
        ..trusting(&ca)
    };
    assert!(
        !answered(&registry.url(), &foreign).await,
        "a client certificate from an unknown CA was accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_certificate_files_are_taken_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = TestCa::new(dir.path(), "old");
    let registry = start(&old_ca, dir.path(), |c| c.tls_reload_secs = 1).await;
    let before = RegistryClient::connect_with(&registry.url(), &trusting(&old_ca)).await.unwrap();
    before.registry_info().await.unwrap();

    // Renewal: the same file names, a certificate from a new CA (key first, as a renewal tool
    // might; the moment the two do not match is skipped).
    let new_ca = TestCa::new(dir.path(), "new");
    let renewed = new_ca.server(dir.path(), "renewed");
    std::fs::rename(&renewed.key, dir.path().join("server.key")).unwrap();
    std::fs::rename(&renewed.cert, dir.path().join("server.pem")).unwrap();

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match RegistryClient::connect_with(&registry.url(), &trusting(&new_ca)).await {
            Ok(c) if c.registry_info().await.is_ok() => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            _ => panic!("the renewed certificate was never served"),
        }
    }
    let err = RegistryClient::connect_with(&registry.url(), &trusting(&old_ca)).await;
    assert!(err.is_err(), "new connections get the new certificate");
    before.registry_info().await.expect("an open connection keeps its session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_face_serves_https_with_the_same_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "registry");
    let registry =
        start(&ca, dir.path(), |c| c.http_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let port = registry.server.web_addr().expect("a web listener").port();
    let key = registry.server.identity().public_key_der.clone();

    // An auditor reads the tiles over https://, checked against the CA.
    let tiles = registry_client::tiles::TileClient::new(
        &format!("https://localhost:{port}/"),
        Some(&ca.cert),
    )
    .unwrap();
    let archive_dir = tempfile::tempdir().unwrap();
    let archive = registry_client::archive::Archive::new(archive_dir.path());
    let source = registry_client::audit::Source::Tiles(&tiles, &key);
    let hidden = indicatif::ProgressBar::hidden();
    let exported = registry_client::audit::export(source, &archive, None, &hidden)
        .await
        .expect("an export over https");
    assert_eq!(exported.size, registry.server.reader().head().size);

    // Without the CA the certificate is refused; plaintext to the TLS port gets nothing.
    let untrusted =
        registry_client::tiles::TileClient::new(&format!("https://localhost:{port}/"), None)
            .unwrap();
    assert!(untrusted.checkpoint().await.is_err(), "a certificate from an unknown CA was accepted");
    let plain = registry_client::tiles::TileClient::new(&format!("http://127.0.0.1:{port}/"), None)
        .unwrap();
    assert!(plain.checkpoint().await.is_err(), "plaintext was answered by the TLS web port");
}
