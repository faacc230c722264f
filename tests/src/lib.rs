//! Shared harness for the end-to-end tests: temporary registries on loopback ports, clients
//! connected to them, and log bodies to append.

use std::net::SocketAddr;
use std::sync::Arc;

use registry_server::config::Config;
use registry_server::log::{RawBodies, system_clock};
use registry_server::server::Server;
use tonic::transport::Channel;

/// A registry running in this process on a loopback port, with its own temporary data
/// directory (removed when the value is dropped).
pub struct TestRegistry<M: registry_server::log::Machine> {
    /// The running server.
    pub server: Server<M>,
    /// Its configuration.
    pub config: Config,
    /// Keeps the data directory alive.
    pub dir: tempfile::TempDir,
}

/// The configuration of a test registry: temporary data, port chosen by the OS, quiet logs.
pub fn test_config(dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        shutdown_timeout_secs: 5,
        ..Config::default()
    }
}

impl TestRegistry<RawBodies> {
    /// A registry whose log takes raw entry bodies: the log and the audit API without the
    /// domain on top.
    pub async fn start_raw() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = test_config(dir.path());
        let server = Server::start(&config, RawBodies, system_clock(), |_, _| {})
            .await
            .expect("server starts");
        Self { server, config, dir }
    }
}

impl<M: registry_server::log::Machine> TestRegistry<M> {
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.local_addr())
    }

    /// A gRPC channel to the server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url()).expect("valid URL").connect().await.expect("connects")
    }
}

/// A log entry body (the fields after the header) carrying only a request ID.
pub fn body_for(request_id: uuid::Uuid) -> Vec<u8> {
    use prost::Message;
    registry_proto::pb::LogEntry { request_id: request_id.to_string(), ..Default::default() }
        .encode_to_vec()
}

/// SHA-256, the idempotency digest of a raw body.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Appends `n` raw entries from `writers` concurrent tasks; returns their request IDs by
/// position.
pub async fn append_raw(
    server: &Server<RawBodies>,
    n: usize,
    writers: usize,
) -> Vec<(u64, uuid::Uuid)> {
    let appender = server.appender();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (a, next) = (appender.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < n {
                let id = uuid::Uuid::new_v4();
                let body = body_for(id);
                let appended = a.append(id, digest(&body), body).await.expect("append");
                done.push((appended.position, id));
            }
            done
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("append task"));
    }
    all.sort();
    all
}
