//! Server configuration: defaults, then a TOML file, then `REGISTRY_*` environment variables,
//! then command-line flags, each layer overriding the one before.
//!
//! Every setting has a default that works on a fresh machine (a `./data` directory, a loopback
//! port), so `registry-server` with no arguments starts a usable registry.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;

use crate::commands::ConfirmPolicy;
pub use crate::listener::tls::ClientAuth;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The language the lookup page opens in (the reader can switch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PageLanguage {
    /// German, for a German registry.
    De,
    /// English.
    En,
}

impl PageLanguage {
    /// The BCP 47 tag.
    pub fn tag(self) -> &'static str {
        match self {
            PageLanguage::De => "de",
            PageLanguage::En => "en",
        }
    }
}

/// The complete server configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the log, its projections and the registry key live.
    pub data_dir: PathBuf,
    /// The gRPC listen address.
    pub listen: SocketAddr,
    /// Log line format.
    pub log_format: LogFormat,
    /// Log filter, in `tracing` env-filter syntax (e.g. `info`, `registry_server=debug`).
    pub log_level: String,
    /// The checkpoint origin (and signed-note key name). Fixed at first start; defaults to
    /// `keyregistry.local/<registry key ID>`.
    pub origin: Option<String>,
    /// Seconds open requests may take to finish once a shutdown begins (then they are closed),
    /// and again for the log to close; the process still exits only once the log has closed
    /// (queued appends, the projection snapshot).
    pub shutdown_timeout_secs: u64,
    /// sled page cache in MiB. The projections and the request index live in memory, so sled
    /// serves only entries and Merkle nodes (proofs, histories, tiles, which the kernel's page
    /// cache also holds); 16 MiB served the benchmarks as fast as 64 and held about 40 MiB
    /// less after 120,000 registrations at 1,000,000 keys (`tests/bench/USAGE.md`).
    pub cache_mib: u64,
    /// Most commands in one group commit.
    pub max_batch: usize,
    /// Seconds between background checks of the entries that became durable (chain and Merkle
    /// nodes read back through the store), so that a restart checks only what came after; 0 leaves all
    /// of it to the next start.
    pub verify_interval_secs: u64,
    /// The projections live in memory and are made durable as snapshot files; a new snapshot
    /// is cut once this many records changed since the last one (or a quarter of the last
    /// one's records, if more), and at every clean stop. A start after a crash replays the log
    /// written since the last snapshot.
    pub snapshot_min_records: usize,
    /// MiB kept free in the data directory as a file of zeros (`emergency-ballast`): when the
    /// disk fills up, a restart deletes it to have room to open the database and serve reads
    /// (read-only until space is freed). 0: no ballast (a full disk then stops the start).
    pub emergency_ballast_mib: u64,
    /// Administrator public keys (PEM files) written to the log while it has no administrator.
    pub admin_keys: Vec<PathBuf>,
    /// Who confirms registrations: the registry once published (`auto`), or an administrator.
    pub confirm_policy: ConfirmPolicy,
    /// Seconds a command's issue time, or an effective time in the future, may differ from the
    /// registry's clock.
    pub max_clock_skew_secs: u64,
    /// Most HTTP/2 streams (concurrent calls) one connection may have open: each holds buffers,
    /// so a peer that opens thousands of slow streams could otherwise hold gigabytes.
    pub max_streams_per_connection: u32,
    /// Seconds a call may take before it is cancelled with `DEADLINE_EXCEEDED` (streams count
    /// until their response starts); 0: no limit. A silent or slow peer holds no handler.
    pub request_timeout_secs: u64,
    /// Seconds between HTTP/2 pings on an idle connection; a peer that does not answer within
    /// the same time again is disconnected, so dead connections do not hold file descriptors.
    /// 0: no pings.
    pub keepalive_secs: u64,
    /// Largest header list a request may send, in bytes (gRPC metadata is small).
    pub max_header_list_bytes: u32,
    /// Certificate chain (PEM, leaf first) to serve TLS with; with `tls_key` the port speaks
    /// only TLS. Reloaded when the file changes and on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) for client certificates (mTLS); commissioning tools present one.
    pub tls_client_ca: Option<PathBuf>,
    /// With `tls_client_ca`: who must present a client certificate: `writes` (commands; reads
    /// stay open to anyone) or `all`.
    pub tls_client_auth: ClientAuth,
    /// Seconds between checks whether the TLS files changed.
    pub tls_reload_secs: u64,
    /// Connections open at once. Each is a file descriptor: the server raises its open-files
    /// limit to the hard limit at start and keeps this below it.
    pub max_connections: usize,
    /// Connections open at once from one peer (an IPv4 address or IPv6 /64), so that one
    /// address cannot take them all; 0: no cap (behind a proxy every peer is the proxy).
    pub max_connections_per_peer: usize,
    /// Seconds a new connection has to complete its TLS handshake and begin its first call: an
    /// idle TCP connection costs the attacker nothing and the registry a file descriptor.
    pub handshake_timeout_secs: u64,
    /// Seconds a connection may stay open with no call in progress.
    pub idle_timeout_secs: u64,
    /// Calls in progress at once (streams until they end); more are answered `UNAVAILABLE` at
    /// once instead of queueing. Health checks are never counted or refused.
    pub max_calls: usize,
    /// Calls in progress at once from one peer; 0: no cap.
    pub max_calls_per_peer: usize,
    /// MiB of request messages announced and being received at once; a message that does not
    /// fit is refused with `RESOURCE_EXHAUSTED` before it is buffered, so slow senders of large
    /// messages cannot hold the registry's memory. Messages up to 64 KiB (lookups, single
    /// commands) are bounded by the call caps instead and never wait for this. At least one
    /// largest request (16 MiB), per peer too.
    pub max_request_mib: usize,
    /// The same for one peer; 0: no cap.
    pub max_request_mib_per_peer: usize,
    /// Failed command signature checks per second one peer may cause (its budget refills at this
    /// rate); while it is spent, all its commands are refused unchecked. Good signatures spend
    /// nothing. 0: off.
    pub bad_signatures_per_sec: u32,
    /// Failed signature checks one peer may cause in a burst.
    pub bad_signatures_burst: u32,
    /// HTTP/2 flow-control window of one stream, in KiB: how much a peer may send ahead of what
    /// the registry has read.
    pub stream_window_kib: u32,
    /// HTTP/2 flow-control window of one connection (all its streams), in KiB.
    pub connection_window_kib: u32,
    /// Address of the metrics listener (`GET /metrics`, Prometheus text format); unset: none.
    /// Keep it on a private network: it tells who is busy with what.
    pub metrics_listen: Option<SocketAddr>,
    /// Address of the public web face (the JSON API, the log as tiles); unset: none. Only
    /// reads are served there.
    pub http_listen: Option<SocketAddr>,
    /// MiB of tiles the web face keeps in memory (tiles never change; a CDN in front carries
    /// the rest).
    pub tile_cache_mib: u32,
    /// The language the lookup page at `/` of the web face opens in, `de` or `en`.
    pub page_language: PageLanguage,
    /// One structured log line per call (method, peer, status code, duration, request ID), at
    /// `info` under the target `registry::request`.
    pub request_log: bool,
    /// The registry's private key (PKCS#8 PEM) in a file outside the data directory, e.g. a
    /// mounted Kubernetes Secret; unset, `registry-key.pem` in the data directory, created at
    /// first start. A replica's data directory started with it (and no `follow`) is the
    /// primary from then on, if it is the key the replica followed.
    pub registry_key: Option<PathBuf>,
    /// On a primary: replicas that must hold a command's entries (reported through
    /// `ReplicationService`) before the command is acknowledged; 0 acknowledges once durable
    /// here (asynchronous replication: a promotion may then lose the last acknowledged writes).
    pub sync_replicas: usize,
    /// Seconds a command waits for `sync_replicas`; then it is answered `UNAVAILABLE` (it is
    /// durable on the primary, and a retry with the same request ID is safe).
    pub sync_timeout_secs: u64,
    /// On a primary: a file holding the token replicas must present with their progress
    /// reports (`authorization: Bearer`), so that nobody else can release a command before a
    /// replica holds it. Unset: reports are taken from anyone who may call (with mTLS, holders
    /// of a client certificate).
    pub replication_token_file: Option<PathBuf>,
    /// Run as a read replica of a primary (`[follow]` in the file).
    pub follow: Follow,
}

/// A read replica's primary: where it copies the log from and how it trusts what it copies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Follow {
    /// The primary's URL (`http://` or `https://`); set, this server is a read replica.
    pub primary: Option<String>,
    /// CA certificates (PEM) to check an `https://` primary with, instead of the system's.
    pub ca_cert: Option<PathBuf>,
    /// The registry's public key (PEM): the primary's checkpoints must be signed by it. Unset,
    /// the key the primary names at the replica's first start is pinned (trust on first use).
    pub registry_key: Option<PathBuf>,
    /// Client certificate (PEM) to present to a primary that requires one (mTLS).
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub client_key: Option<PathBuf>,
    /// A file holding the token the primary requires with progress reports
    /// (`replication_token_file` there).
    pub token_file: Option<PathBuf>,
    /// Seconds a replica stays ready (lookups `SERVING` in health) after it was last caught up
    /// with a primary it is connected to; then it reports `NOT_SERVING`, so that a load
    /// balancer stops sending it reads that may miss a revocation. It still answers whoever
    /// asks. 0: ready for good once caught up.
    pub max_staleness_secs: u64,
}

impl Default for Follow {
    fn default() -> Self {
        Self {
            primary: None,
            ca_cert: None,
            registry_key: None,
            client_cert: None,
            client_key: None,
            token_file: None,
            max_staleness_secs: 60,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            log_format: LogFormat::Text,
            log_level: "info".into(),
            origin: None,
            shutdown_timeout_secs: 10,
            cache_mib: 16,
            max_batch: 1024,
            verify_interval_secs: 10,
            snapshot_min_records: crate::store::layered::MIN_CUT,
            emergency_ballast_mib: 64,
            admin_keys: Vec::new(),
            confirm_policy: ConfirmPolicy::Auto,
            max_clock_skew_secs: 300,
            max_streams_per_connection: 128,
            request_timeout_secs: 60,
            keepalive_secs: 30,
            max_header_list_bytes: 16 * 1024,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_client_auth: ClientAuth::Writes,
            tls_reload_secs: 10,
            max_connections: 10_000,
            max_connections_per_peer: 512,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 300,
            max_calls: 2048,
            max_calls_per_peer: 512,
            max_request_mib: 256,
            max_request_mib_per_peer: 32,
            bad_signatures_per_sec: 20,
            bad_signatures_burst: 200,
            stream_window_kib: 1024,
            connection_window_kib: 2048,
            metrics_listen: None,
            http_listen: None,
            tile_cache_mib: 256,
            page_language: PageLanguage::De,
            request_log: false,
            registry_key: None,
            sync_replicas: 0,
            sync_timeout_secs: 10,
            replication_token_file: None,
            follow: Follow::default(),
        }
    }
}

/// Settings given on the command line; only those actually given override the other layers.
#[derive(Debug, Clone, Default, Serialize, clap::Args)]
pub struct Overrides {
    /// Data directory [default: ./data]
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051]
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Log format [default: text]
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `registry_server=debug` [default: info]
    #[arg(long, value_name = "FILTER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Checkpoint origin, fixed at first start
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Administrator public key (PEM), repeatable; used while the log has no administrator
    #[arg(long = "admin-key", value_name = "PATH")]
    #[serde(rename = "admin_keys", skip_serializing_if = "Vec::is_empty")]
    pub admin_keys: Vec<PathBuf>,
    /// Who confirms registrations [default: auto]
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm_policy: Option<ConfirmPolicy>,
    /// Seconds of clock difference tolerated on command issue times [default: 300]
    #[arg(long, value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_clock_skew_secs: Option<u64>,
    /// TLS certificate chain (PEM); with --tls-key the port speaks only TLS
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) client certificates must chain to (mTLS)
    #[arg(long, value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the JSON API and the log's tiles at http://ADDR/
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<SocketAddr>,
    /// Log one line per call
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub request_log: bool,
    /// Run as a read replica of the primary at URL (config: follow.primary)
    #[arg(long, value_name = "URL")]
    #[serde(skip)]
    pub follow: Option<String>,
    /// Acknowledge commands once this many replicas hold them [default: 0]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_replicas: Option<usize>,
}

/// The configuration could not be assembled.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

/// Names of the settings, for the environment layer (`REGISTRY_DATA_DIR`, ...). Other
/// `REGISTRY_*` variables (such as the client's `REGISTRY_SERVER`) are not ours.
const KEYS: &[&str] = &[
    "data_dir",
    "listen",
    "log_format",
    "log_level",
    "origin",
    "shutdown_timeout_secs",
    "cache_mib",
    "max_batch",
    "verify_interval_secs",
    "snapshot_min_records",
    "emergency_ballast_mib",
    "admin_keys",
    "confirm_policy",
    "max_clock_skew_secs",
    "max_streams_per_connection",
    "request_timeout_secs",
    "keepalive_secs",
    "max_header_list_bytes",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "tls_client_auth",
    "tls_reload_secs",
    "max_connections",
    "max_connections_per_peer",
    "handshake_timeout_secs",
    "idle_timeout_secs",
    "max_calls",
    "max_calls_per_peer",
    "max_request_mib",
    "max_request_mib_per_peer",
    "bad_signatures_per_sec",
    "bad_signatures_burst",
    "stream_window_kib",
    "connection_window_kib",
    "metrics_listen",
    "http_listen",
    "tile_cache_mib",
    "page_language",
    "request_log",
    "registry_key",
    "sync_replicas",
    "sync_timeout_secs",
    "replication_token_file",
];

/// The `[follow]` settings, `REGISTRY_FOLLOW_PRIMARY` and so on in the environment.
const FOLLOW_KEYS: &[&str] = &[
    "primary",
    "ca_cert",
    "registry_key",
    "client_cert",
    "client_key",
    "token_file",
    "max_staleness_secs",
];

/// Reads a replication token: the file's text without surrounding white space, at least 16
/// characters (a shared secret a guess must not find).
pub fn read_token(file: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| ConfigError(format!("replication token {}: {e}", file.display())))?;
    let token = text.trim();
    if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError(format!(
            "replication token {}: must be at least 16 printable characters without spaces",
            file.display()
        )));
    }
    Ok(token.to_string())
}

impl Config {
    /// How often the running log checks what became durable (`None`: only at start).
    pub fn verify_every(&self) -> Option<std::time::Duration> {
        (self.verify_interval_secs > 0)
            .then(|| std::time::Duration::from_secs(self.verify_interval_secs))
    }

    /// The TLS files, when TLS is configured; a certificate without a key (or the reverse), or a
    /// client CA without TLS, is an error.
    pub fn tls_files(&self) -> Result<Option<crate::listener::tls::TlsFiles>, ConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(crate::listener::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
                client_auth: self.tls_client_auth,
            })),
            (None, None) if self.tls_client_ca.is_some() => Err(ConfigError(
                "tls_client_ca needs tls_cert and tls_key: client certificates come with TLS"
                    .into(),
            )),
            (None, None) => Ok(None),
            _ => Err(ConfigError("tls_cert and tls_key go together".into())),
        }
    }

    /// Assembles the layers: defaults < `file` < environment < `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::load_with_env(file, overrides, Env::prefixed("REGISTRY_"))
    }

    fn load_with_env(
        file: Option<&Path>,
        overrides: &Overrides,
        env: Env,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!("config file {} does not exist", path.display())));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let env = env.filter_map(|key| {
            let key = key.as_str().to_ascii_lowercase();
            let key = key.as_str();
            if KEYS.contains(&key) {
                return Some(key.to_string().into());
            }
            let follow = key.strip_prefix("follow_").filter(|k| FOLLOW_KEYS.contains(k))?;
            Some(format!("follow.{follow}").into())
        });
        figment = figment.merge(env).merge(Serialized::defaults(overrides));
        let mut config: Config = figment.extract().map_err(|e| ConfigError(e.to_string()))?;
        if let Some(primary) = &overrides.follow {
            config.follow.primary = Some(primary.clone());
        }
        Ok(config)
    }
}

#[cfg(test)]
// figment's Jail returns figment::Error, which is large; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_environment_beats_file_beats_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "registry.toml",
                r#"
                    data_dir = "/from/file"
                    listen = "127.0.0.1:1111"
                    log_level = "debug"
                    max_batch = 7
                    verify_interval_secs = 3
                "#,
            )?;
            jail.set_env("REGISTRY_LISTEN", "127.0.0.1:2222");
            jail.set_env("REGISTRY_LOG_LEVEL", "warn");
            jail.set_env("REGISTRY_SERVER", "http://not-a-server-setting");
            jail.set_env("REGISTRY_VERIFY_INTERVAL_SECS", "0");
            let overrides = Overrides { log_level: Some("trace".into()), ..Default::default() };
            let c = Config::load(Some(Path::new("registry.toml")), &overrides)
                .map_err(|e| e.to_string())?;
            assert_eq!(c.data_dir, PathBuf::from("/from/file")); // file over default
            assert_eq!(c.listen.port(), 2222); // environment over file
            assert_eq!(c.log_level, "trace"); // flag over environment
            assert_eq!(c.max_batch, 7);
            assert_eq!(c.verify_interval_secs, 0); // environment over file
            assert_eq!(c.verify_every(), None, "0 turns the background check off");
            assert_eq!(Config::default().verify_every(), Some(std::time::Duration::from_secs(10)));
            assert_eq!(c.shutdown_timeout_secs, 10); // default
            Ok(())
        });
    }

    #[test]
    fn the_primary_to_follow_comes_from_the_file_the_environment_or_the_flag() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "replica.toml",
                "[follow]\nprimary = \"http://file:1\"\nregistry_key = \"/k.pem\"\n",
            )?;
            let file = Some(Path::new("replica.toml"));
            let c = Config::load(file, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(c.follow.primary.as_deref(), Some("http://file:1"));
            assert_eq!(c.follow.registry_key, Some(PathBuf::from("/k.pem")));
            jail.set_env("REGISTRY_FOLLOW_PRIMARY", "http://env:2");
            let c = Config::load(file, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(c.follow.primary.as_deref(), Some("http://env:2"));
            assert_eq!(c.follow.registry_key, Some(PathBuf::from("/k.pem")), "kept from the file");
            let flag = Overrides { follow: Some("http://flag:3".into()), ..Default::default() };
            let c = Config::load(file, &flag).map_err(|e| e.to_string())?;
            assert_eq!(c.follow.primary.as_deref(), Some("http://flag:3"));
            Ok(())
        });
    }

    #[test]
    fn no_file_and_no_flags_gives_the_embedded_defaults() {
        figment::Jail::expect_with(|_| {
            let c = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(c, Config::default());
            Ok(())
        });
    }

    #[test]
    fn a_misspelt_setting_or_a_missing_file_is_an_error() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "lissten = \"127.0.0.1:1\"\n")?;
            let err = Config::load(Some(Path::new("bad.toml")), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("lissten"), "{err}");
            assert!(Config::load(Some(Path::new("missing.toml")), &Overrides::default()).is_err());
            Ok(())
        });
    }
}
