//! Read replicas: a server started with `--follow URL` copies the primary's log, checks every
//! entry and checkpoint as an auditor would, and serves reads under the primary's checkpoints.
//!
//! What a replica promises: every entry it serves was checked against the rules (chain, command
//! signatures, events re-derived, back-links), and every head it serves is a checkpoint the
//! registry key signed for exactly the entries it holds (Merkle and map roots compared). It
//! never signs and never appends a command (`FAILED_PRECONDITION`, naming the primary). If the
//! primary ever shows a checkpoint that is not consistent with what the replica holds, or a log
//! that does not verify, the replica stops following, says so in its log and in
//! `registry_replica_stopped`, and goes on serving what it verified.
//!
//! [`Role::of`] decides what a start needs (the registry's private key, or the public key a
//! replica pinned at its first start, learnt from the configuration or the primary);
//! [`follower`] is the copying loop; [`ReplicaStatus`] is what it reports to metrics and health.

pub mod follower;
pub mod prepare;
pub mod progress;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use registry_core::note::{NoteError, NoteSigner, NoteVerifier};
use registry_core::time::Time;
use registry_proto::pb::audit_service_client::AuditServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::Config;
use crate::log::Signing;
use crate::registry_key::{self, LoadedKey, PublicKey};
use crate::store::StoreError;

/// Why a replica could not start, or a promotion could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// A setting cannot be used, or the primary could not tell what the replica must know.
    #[error("{0}")]
    Config(String),
    /// The registry key files.
    #[error("registry key: {0}")]
    KeyFile(#[from] registry_key::KeyFileError),
    /// The replica's store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a start holds the registry's key as.
pub enum Role {
    /// The primary: it signs with the registry's private key.
    Primary(LoadedKey),
    /// A replica: the registry's public key it checks the primary's checkpoints with, the
    /// primary's origin when this start had to ask for it, and how to reach the primary.
    Replica {
        /// The pinned public key.
        key: PublicKey,
        /// The origin the primary named, on a first start (later starts read their own).
        origin: Option<String>,
        /// How to reach the primary (boxed: an endpoint is large, and a role is made once).
        primary: Box<Primary>,
    },
}

impl Role {
    /// The role `config` asks for, with its key. A replica's first start asks the primary for
    /// the registry's origin and (unless configured) public key, and pins the key.
    pub async fn of(config: &Config) -> Result<Self, ReplicaError> {
        let Some(url) = &config.follow.primary else {
            return Ok(Role::Primary(match &config.registry_key {
                Some(file) => registry_key::load_from(&config.data_dir, file)?,
                None => registry_key::load_or_create(&config.data_dir)?,
            }));
        };
        let primary = Primary::new(url, &config.follow)?;
        let configured = match &config.follow.registry_key {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| e.to_string())
                    .and_then(|pem| PublicKey::from_pem(&pem).map_err(|e| e.to_string()))
                    .map_err(|e| {
                        ReplicaError::Config(format!("follow.registry_key {}: {e}", path.display()))
                    })?,
            ),
            None => None,
        };
        let (offered, origin) = match (registry_key::pinned(&config.data_dir)?, configured.clone())
        {
            (Some(_), Some(key)) => (key, None),
            (Some(pinned), None) => (pinned, None),
            (None, configured) => {
                let info = primary.registry_info().await?;
                let named = PublicKey::from_pem(&info.public_key_pem).map_err(|e| {
                    ReplicaError::Config(format!("the primary's registry key: {e}"))
                })?;
                if configured.as_ref().is_some_and(|c| c.der != named.der) {
                    return Err(ReplicaError::Config(format!(
                        "the primary at {url} signs with another key than follow.registry_key"
                    )));
                }
                if configured.is_none() {
                    tracing::warn!(primary = %url, fingerprint = %info.fingerprint,
                        "trusting the registry key the primary names (first start, no \
                         follow.registry_key); it is pinned from now on");
                }
                (configured.unwrap_or(named), Some(info.origin))
            }
        };
        let key = registry_key::pin_public(&config.data_dir, &offered, configured.is_some())?;
        Ok(Role::Replica { key, origin, primary: Box::new(primary) })
    }
}

impl Role {
    /// The registry's public key (DER SubjectPublicKeyInfo, PEM).
    pub fn public_key(&self) -> (Vec<u8>, String) {
        match self {
            Role::Primary(key) => (key.key.public_key_der().to_vec(), key.key.public_key_pem()),
            Role::Replica { key, .. } => (key.der.clone(), key.pem.clone()),
        }
    }

    /// How the log signs: with the registry key, or not at all (checking the primary's).
    pub fn signing(&self, origin: &str) -> Result<Signing, NoteError> {
        Ok(match self {
            Role::Primary(key) => Signing::Primary(NoteSigner::new(origin, key.key.clone())?),
            Role::Replica { key, .. } => Signing::Replica(NoteVerifier::new(origin, &key.der)?),
        })
    }

    /// The primary a replica follows.
    pub fn primary(&self) -> Option<&Primary> {
        match self {
            Role::Primary(_) => None,
            Role::Replica { primary, .. } => Some(primary),
        }
    }
}

/// How to reach the primary.
#[derive(Clone)]
pub struct Primary {
    /// Its URL, as configured (named in refusals of commands).
    pub url: String,
    endpoint: Endpoint,
    /// The token progress reports carry (`follow.token_file`), if the primary wants one.
    pub(crate) token: Option<String>,
}

/// The HTTP/2 receive window for the watch stream: several watch messages.
const WATCH_WINDOW: u32 = 8 << 20;

impl Primary {
    fn new(url: &str, follow: &crate::config::Follow) -> Result<Self, ReplicaError> {
        let ca_cert = follow.ca_cert.as_deref();
        let bad = |e: String| ReplicaError::Config(format!("follow.primary {url:?}: {e}"));
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(20))
            // A watch message is about half a megabyte: with HTTP/2's default 64 KiB windows
            // the primary could send the next one only as fast as this busy replica's runtime
            // gets round to acknowledging each slice of it.
            .initial_stream_window_size(Some(WATCH_WINDOW))
            .initial_connection_window_size(Some(WATCH_WINDOW));
        if url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_enabled_roots();
            if let Some(path) = ca_cert {
                let pem = std::fs::read(path)
                    .map_err(|e| bad(format!("follow.ca_cert {}: {e}", path.display())))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            match (&follow.client_cert, &follow.client_key) {
                (Some(cert), Some(key)) => {
                    let read = |p: &std::path::Path| {
                        std::fs::read(p).map_err(|e| bad(format!("{}: {e}", p.display())))
                    };
                    tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
                }
                (None, None) => {}
                _ => {
                    return Err(bad("follow.client_cert and follow.client_key go together".into()));
                }
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| bad(e.to_string()))?;
        } else if !url.starts_with("http://") {
            return Err(bad("must start with http:// or https://".into()));
        } else if ca_cert.is_some() {
            return Err(bad("follow.ca_cert needs an https:// primary".into()));
        }
        let token = match &follow.token_file {
            Some(file) => Some(crate::config::read_token(file).map_err(|e| bad(e.to_string()))?),
            None => None,
        };
        if token.is_some() && url.starts_with("http://") {
            tracing::warn!(primary = %url, "the replication token goes to the primary in clear \
                text over http://; use https:// anywhere but a private network");
        }
        Ok(Self { url: url.to_string(), endpoint, token })
    }

    async fn channel(&self) -> Result<Channel, String> {
        self.endpoint.connect().await.map_err(|e| registry_core::error::chain(&e))
    }

    fn audit(channel: Channel) -> AuditServiceClient<Channel> {
        AuditServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024)
    }

    /// The primary's identity, retried for up to a minute (replicas often start with it).
    async fn registry_info(
        &self,
    ) -> Result<registry_proto::pb::GetRegistryInfoResponse, ReplicaError> {
        let mut last = String::new();
        for _ in 0..60 {
            match self.channel().await.map(Self::audit) {
                Ok(mut audit) => {
                    match audit
                        .get_registry_info(registry_proto::pb::GetRegistryInfoRequest {})
                        .await
                    {
                        Ok(r) => return Ok(r.into_inner()),
                        Err(s) => last = s.message().to_string(),
                    }
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Err(ReplicaError::Config(format!(
            "a replica's first start asks the primary at {} for the registry's origin and key, \
             and it did not answer: {last}",
            self.url
        )))
    }
}

/// What a promotion found: the log the new primary continues.
#[derive(Debug, Clone, Copy)]
pub struct Promoted {
    /// Entries in the log.
    pub size: u64,
    /// Its Merkle root.
    pub root: registry_core::merkle::Hash,
}

/// `registry-server promote`: makes the (stopped) replica in `config.data_dir` a primary by
/// giving it the registry's private key from `key_file`, which must be the key of the public
/// key it followed. The next start without `--follow` continues the same log and signs its
/// checkpoints; replicas and mirrors that followed the old primary accept them, as long as this
/// replica had everything the old primary published (deploy/README.md, "Promoting a replica").
pub fn promote(config: &Config, key_file: &std::path::Path) -> Result<Promoted, ReplicaError> {
    use crate::store::LogStore;
    let options = crate::store::sled::SledOptions::with_cache_mib(config.cache_mib);
    // Opening the database also proves that no replica runs on it (sled holds a lock).
    let store = crate::store::sled::SledStore::open(&config.data_dir.join("log"), &options)?;
    let size = store.size()?;
    let root = registry_core::merkle::root(&crate::log::StoreNodes(&store), size)
        .map_err(|e| StoreError::Corrupt(format!("the Merkle tree: {e}")))?;
    drop(store);
    registry_key::promote(&config.data_dir, key_file)?;
    Ok(Promoted { size, root })
}

/// Metadata key: the replica's identity in its progress reports, chosen at its first start.
const REPLICA_ID: &str = "replica_id";

pub(crate) fn replica_id(
    store: &dyn crate::store::LogStore,
) -> Result<String, crate::store::StoreError> {
    if let Some(id) = store.meta(REPLICA_ID)? {
        return Ok(String::from_utf8_lossy(&id).into_owned());
    }
    let id = uuid::Uuid::new_v4().to_string();
    store.write(crate::store::WriteBatch {
        meta: vec![(REPLICA_ID, id.clone().into_bytes())],
        ..Default::default()
    })?;
    store.sync()?;
    Ok(id)
}

/// What the follower reports: for metrics, health and the operator.
#[derive(Debug, Default)]
pub struct ReplicaStatus {
    connected: AtomicBool,
    /// The primary's log size as last seen.
    primary_size: AtomicU64,
    /// The size this replica has copied and published.
    size: AtomicU64,
    /// Recorded time (µs since the epoch) of the oldest entry seen on the primary and not yet
    /// published here; 0 when caught up.
    behind_since_micros: AtomicU64,
    stopped: Mutex<Option<String>>,
    /// Woken at each publish, so readiness turns the moment the copy catches up rather than
    /// at the next tick of its watch.
    moved: tokio::sync::Notify,
}

impl ReplicaStatus {
    /// Entries the primary has that this replica has not published yet.
    pub fn lag_entries(&self) -> u64 {
        self.primary_size.load(Ordering::Relaxed).saturating_sub(self.size.load(Ordering::Relaxed))
    }

    /// How far behind in time: now minus the recorded time of the oldest entry this replica
    /// has seen on the primary but not yet published; 0 when caught up.
    pub fn lag_seconds(&self) -> f64 {
        match self.behind_since_micros.load(Ordering::Relaxed) {
            0 => 0.0,
            since => {
                let now = chrono::Utc::now().timestamp_micros().max(0) as u64;
                now.saturating_sub(since) as f64 / 1e6
            }
        }
    }

    /// Whether a stream from the primary is open.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Why following stopped for good, if it did.
    pub fn stopped(&self) -> Option<String> {
        self.stopped.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn seen(&self, primary_size: u64, first_unpublished: Option<Time>) {
        self.primary_size.fetch_max(primary_size, Ordering::Relaxed);
        if let Some(t) = first_unpublished {
            let micros = t.timestamp_micros().max(1) as u64;
            let _ = self.behind_since_micros.compare_exchange(
                0,
                micros,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn published(&self, size: u64, next_recorded_at: Option<Time>) {
        self.size.store(size, Ordering::Relaxed);
        let micros = next_recorded_at.map_or(0, |t| t.timestamp_micros().max(1) as u64);
        self.behind_since_micros.store(micros, Ordering::Relaxed);
        self.moved.notify_one();
    }

    pub(crate) fn stop(&self, why: String) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        self.connected.store(false, Ordering::Relaxed);
    }
}
