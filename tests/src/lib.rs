//! Shared harness for the end-to-end tests: temporary registries on loopback ports, clients
//! connected to them, and log bodies to append.

pub mod faults;
pub mod pki;
pub mod raw;

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
        // Tests start many registries; a ballast of the default size would cost each 64 MiB.
        emergency_ballast_mib: 1,
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

/// A full registry (lifecycle rules, command, lookup and audit services) on a loopback port,
/// with one administrator key and a connected client.
pub struct Fixture {
    /// The running registry.
    pub registry: TestRegistry<registry_server::machine::RegistryMachine>,
    /// A client connected to it.
    pub client: registry_client::RegistryClient,
    /// The administrator's key, written to the log at first start.
    pub admin: registry_core::keys::P256KeyPair,
}

impl Fixture {
    /// A registry with automatic confirmation.
    pub async fn start() -> Self {
        Self::start_with(registry_server::commands::ConfirmPolicy::Auto).await
    }

    /// A registry with the given confirmation policy.
    pub async fn start_with(policy: registry_server::commands::ConfirmPolicy) -> Self {
        Self::start_configured(|c| c.confirm_policy = policy).await
    }

    /// A registry with settings changed from the test defaults.
    pub async fn start_configured(change: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let admin = registry_core::keys::P256KeyPair::generate();
        let admin_file = dir.path().join("admin.pub.pem");
        std::fs::write(&admin_file, admin.public_key_pem()).expect("admin key file");
        let mut config =
            Config { admin_keys: vec![admin_file], ..test_config(&dir.path().join("data")) };
        change(&mut config);
        let server = registry_server::registry::start_registry(&config, system_clock())
            .await
            .expect("registry starts");
        let registry = TestRegistry { server, config, dir };
        let client = registry_client::RegistryClient::connect(&registry.url())
            .await
            .expect("client connects");
        Self { registry, client, admin }
    }

    /// Adds an operator with a fresh command key and returns the key.
    pub async fn operator(&self, operator_id: &str) -> registry_core::keys::P256KeyPair {
        let key = registry_core::keys::P256KeyPair::generate();
        self.client
            .submit(
                &self.admin,
                &registry_client::Order::AddOperator {
                    operator_id: operator_id.into(),
                    name: format!("Operator {operator_id}"),
                    public_keys: vec![key.public_key_pem()],
                },
            )
            .await
            .expect("operator added");
        key
    }

    /// The registry's checkpoint origin, which commands are signed for.
    pub fn origin(&self) -> String {
        self.registry.server.identity().origin.clone()
    }

    /// The durable log size.
    pub fn log_size(&self) -> u64 {
        self.registry.server.reader().head().size
    }
}

/// A new meter key; its DER SubjectPublicKeyInfo as hex is how tests submit it.
pub fn meter_key() -> registry_core::keys::P256KeyPair {
    registry_core::keys::P256KeyPair::generate()
}

/// The hex DER SubjectPublicKeyInfo of a key.
pub fn spki_hex(key: &registry_core::keys::P256KeyPair) -> String {
    hex::encode(key.public_key_der())
}

/// An RFC 3339 time.
pub fn t(s: &str) -> registry_core::time::Time {
    registry_core::time::parse(s).expect("test times are RFC 3339")
}

/// The name of a verdict, e.g. `VALID`.
pub fn verdict_name(v: &registry_proto::pb::Validity) -> &'static str {
    registry_client::render::verdict(v.verdict)
}

/// Copies a stopped registry's data directory into `dir` and starts a second registry on the
/// copy: same key, same history, free to diverge (the fork a dishonest operator could run).
pub async fn start_fork(
    config: &Config,
    dir: &std::path::Path,
) -> Server<registry_server::machine::RegistryMachine> {
    let data_dir = dir.join("data");
    copy_dir(&config.data_dir, &data_dir);
    registry_server::registry::start_registry(
        &Config { data_dir, ..config.clone() },
        system_clock(),
    )
    .await
    .expect("the fork starts")
}

/// Copies a directory tree.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("target directory");
    for entry in std::fs::read_dir(from).expect("readable source directory") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("file copied");
        }
    }
}

/// Decommissions `meter`'s key from `at`, signed by `operator`.
pub async fn decommission(
    client: &registry_client::RegistryClient,
    operator: &registry_core::keys::P256KeyPair,
    meter: &registry_core::keys::P256KeyPair,
    at: &str,
) {
    client
        .submit(
            operator,
            &registry_client::Order::Deactivate {
                fingerprint: meter.fingerprint_hex(),
                reason: registry_client::EndReason::Decommissioned,
                comment: String::new(),
                effective_at: Some(t(at)),
            },
        )
        .await
        .expect("decommissioning accepted");
}

/// A registry in a child process (so that a test can kill it), started as `bin` with `args`:
/// the binary prints its address on its first line (`src/bin/crash-registry.rs` does). The child
/// is killed when the value is dropped, whether the test passed or not.
pub struct ChildRegistry {
    /// The process.
    pub child: std::process::Child,
    /// `http://<its address>`.
    pub url: String,
}

impl ChildRegistry {
    /// Starts `bin` (the test's `env!("CARGO_BIN_EXE_...")`) with `args`.
    pub fn start(bin: &str, args: &[&std::ffi::OsStr]) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(bin)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the child registry starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("the child prints its address");
        assert!(!line.trim().is_empty(), "the child exited before listening");
        Self { child, url: format!("http://{}", line.trim()) }
    }

    /// SIGKILL, and waits for it.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for ChildRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A numeric setting of a benchmark from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Registers a fresh meter key (serial `M-<evse>`, manufacturer ACME) at EVSE `evse`, effective
/// 2026-01-01, signed by operator key `op`; returns its fingerprint.
pub async fn register_at_evse(
    f: &Fixture,
    op: &registry_core::keys::P256KeyPair,
    evse: &str,
) -> String {
    let meter = meter_key();
    f.client
        .submit(
            op,
            &registry_client::Order::Register {
                key: registry_client::KeySubmission {
                    meter_serial: Some(format!("M-{evse}")),
                    manufacturer: Some("ACME".into()),
                    ..registry_client::KeySubmission::new(spki_hex(&meter))
                },
                evse_ids: vec![evse.into()],
                effective_at: Some(t("2026-01-01T00:00:00Z")),
            },
        )
        .await
        .expect("registered");
    registry_core::keys::fingerprint_hex(meter.public_key_der())
}
