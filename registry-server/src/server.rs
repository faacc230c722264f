//! Starting and stopping a registry: data directory, registry key, log, gRPC server, and a
//! graceful shutdown that never loses an acknowledged write.
//!
//! Shutdown order: mark health `NOT_SERVING`, stop accepting connections and end open streams,
//! let in-flight requests finish (bounded by `shutdown_timeout_secs`), then let the writer
//! commit whatever is still queued and stop. Every step is bounded, so the process always exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use registry_core::keys::P256KeyPair;
use registry_core::note::NoteSigner;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::RoutesBuilder;

use crate::admission::signatures::SignatureBudget;
use crate::admission::{AdmissionLayer, Limits};
use crate::config::{ClientAuth, Config};
use crate::grpc::audit::{AuditApi, Identity};
use crate::grpc::health::{self, HealthHandle};
use crate::listener::tls::Tls;
use crate::listener::{Accepting, Deadlines};
use crate::log::{
    Appender, Clock, Log, LogOptions, LogReader, Machine, OpenError, Signing, WriterStatus,
};
use crate::registry_key::{self, KeyFileError};
use crate::replica::{Primary, ReplicaStatus, Role};
use crate::store::layered::LayeredStore;
use crate::store::sled::{SledOptions, SledStore};
use crate::store::snapshot::Snapshot;
use crate::store::{LogStore, ORIGIN, StoreError, WriteBatch};
use crate::telemetry::{Live, Metrics, TelemetryLayer};

/// The registry could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The registry key file.
    #[error("registry key: {0}")]
    KeyFile(#[from] KeyFileError),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The log refused to open.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The configured origin contradicts the one the log was created with.
    #[error("{0}")]
    Origin(String),
    /// The listen address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC transport failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection descriptors could not be loaded.
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// A background task of the server failed.
    #[error("internal task failed: {0}")]
    Task(String),
    /// A setting cannot be used.
    #[error("{0}")]
    Config(String),
    /// A replica could not start.
    #[error(transparent)]
    Replica(#[from] crate::replica::ReplicaError),
    /// The TLS files cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::listener::tls::TlsError),
    /// The projections could not be rebuilt.
    #[error("rebuilding the projections failed: {0}")]
    Rebuild(#[from] crate::projection::RebuildError),
    /// A start-up command (bootstrap, pending confirmations) failed.
    #[error("start-up command failed: {0}")]
    Command(#[from] crate::commands::CommandError),
    /// The log did not stop cleanly: its writer had failed, or the final sync did.
    #[error("the log did not stop cleanly: {0}")]
    Stopped(StoreError),
}

impl ServerError {
    /// The process exit status for this error (documented in the README, "Exit status"): 3 when
    /// the data directory is damaged or lost what the registry signed, 4 when storage failed
    /// while running or at the stop, 2 for settings that cannot be used, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServerError::Open(OpenError::Store(StoreError::Io(_) | StoreError::Full(_))) => 4,
            ServerError::Open(_) | ServerError::Store(StoreError::Corrupt(_)) => 3,
            ServerError::Rebuild(_) => 3,
            ServerError::Store(_) | ServerError::Stopped(_) => 4,
            ServerError::KeyFile(KeyFileError::Key { .. }) => 3,
            ServerError::KeyFile(KeyFileError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::InvalidData =>
            {
                3
            }
            ServerError::Replica(crate::replica::ReplicaError::Store(StoreError::Corrupt(_))) => 3,
            ServerError::Replica(crate::replica::ReplicaError::Store(_)) => 4,
            ServerError::Config(_)
            | ServerError::Replica(_)
            | ServerError::Tls(_)
            | ServerError::Origin(_)
            | ServerError::KeyFile(_) => 2,
            _ => 1,
        }
    }
}

/// What a set of extra services may use: handles to the log and the server's lifecycle.
pub struct ServiceContext<'a, M: Machine> {
    /// Reads the durable log.
    pub reader: &'a LogReader,
    /// Appends commands.
    pub appender: &'a Appender<M>,
    /// Cancelled when the server shuts down: streams must end.
    pub shutdown: &'a CancellationToken,
    /// Health of the server and its services.
    pub health: &'a HealthHandle,
    /// The per-peer budget of failed signature checks, if one is configured.
    pub signatures: &'a Option<Arc<SignatureBudget>>,
    /// Where the lookup service the gRPC server gets is also handed to the web face.
    pub web_lookups: &'a std::sync::OnceLock<Arc<crate::grpc::lookup::LookupApi>>,
}

/// A running registry.
pub struct Server<M: Machine> {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    web_addr: Option<SocketAddr>,
    identity: Arc<Identity>,
    reader: LogReader,
    appender: Appender<M>,
    health: HealthHandle,
    stop: CancellationToken,
    task: JoinHandle<Result<(), ServerError>>,
    /// On a replica: its primary and how following it goes.
    replica: Option<(Primary, Arc<ReplicaStatus>)>,
}

/// Opens the store: the log in sled (`<data_dir>/log`), the projections in memory over the
/// snapshot `<data_dir>/projections.snap` (see [`crate::store::layered`]).
pub fn open_store(config: &Config) -> Result<Arc<dyn LogStore>, StoreError> {
    let options = SledOptions::with_cache_mib(config.cache_mib);
    let snapshot = config.data_dir.join(SNAPSHOT_FILE);
    // The snapshot (about 1 GB at a million keys) is read and checked while sled opens.
    let reading = std::thread::Builder::new().name("snapshot-read".into()).spawn({
        let path = snapshot.clone();
        move || {
            let started = std::time::Instant::now();
            let read = Snapshot::read(&path);
            tracing::info!(seconds = started.elapsed().as_secs_f64(), "projection snapshot read");
            read
        }
    })?;
    let started = std::time::Instant::now();
    let log = Arc::new(SledStore::open(&config.data_dir.join("log"), &options)?);
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "sled opened");
    let read = reading
        .join()
        .unwrap_or_else(|_| Err(StoreError::Io("the snapshot reading thread panicked".into())));
    let store = LayeredStore::with_snapshot(log, &snapshot, read, config.snapshot_min_records)?;
    // A replica's copy is replayed from its log if it is cut short: its snapshots can wait.
    Ok(Arc::new(if config.follow.primary.is_some() {
        store.pacing_copies(crate::store::COPYING_RATE)
    } else {
        store
    }))
}

/// The projection snapshot's file name in the data directory.
pub const SNAPSHOT_FILE: &str = "projections.snap";

/// The origin fixed at first start, or on first start the configured one, else `default`.
fn resolve_origin(
    store: &dyn LogStore,
    configured: Option<&str>,
    default: impl FnOnce() -> Result<String, ServerError>,
) -> Result<String, ServerError> {
    if let Some(stored) = store.meta(ORIGIN)? {
        let stored = String::from_utf8(stored)
            .map_err(|_| StoreError::Corrupt("stored origin is not UTF-8".into()))?;
        if let Some(c) = configured.filter(|c| *c != stored) {
            return Err(ServerError::Origin(format!(
                "the configured origin {c:?} differs from {stored:?}, which this log was created \
                 with; checkpoints would no longer verify. Remove the setting or restore it."
            )));
        }
        return Ok(stored);
    }
    let origin = match configured {
        Some(c) => c.to_string(),
        None => default()?,
    };
    store.write(WriteBatch {
        meta: vec![(ORIGIN, origin.clone().into_bytes())],
        ..Default::default()
    })?;
    store.sync()?;
    Ok(origin)
}

/// The origin of a primary: `keyregistry.local/<key ID>` unless configured; checked usable
/// before it is stored.
fn primary_origin(
    store: &dyn LogStore,
    configured: Option<&str>,
    key: &P256KeyPair,
) -> Result<String, ServerError> {
    if let Some(origin) = configured {
        NoteSigner::new(origin, key.clone()).map_err(|e| signer_error(origin, e))?;
    }
    resolve_origin(store, configured, || {
        Ok(format!("keyregistry.local/{}", registry_key::note_key_id_hex(key)))
    })
}

/// A replica's origin: the primary's, stored at its first start.
fn replica_origin(
    store: &dyn LogStore,
    configured: Option<&str>,
    learnt: &Option<String>,
) -> Result<String, ServerError> {
    resolve_origin(store, configured, || {
        learnt.clone().ok_or_else(|| {
            ServerError::Origin(
                "this replica's log has no origin, and the primary named none".into(),
            )
        })
    })
}

/// A checkpoint signer that could not be made: a bad origin names the origin, a key that the
/// signing backend refused names the key.
fn signer_error(origin: &str, e: registry_core::note::NoteError) -> ServerError {
    match e {
        registry_core::note::NoteError::Key(e) => ServerError::Config(format!("registry key: {e}")),
        other => ServerError::Origin(format!("invalid origin {origin:?}: {other}")),
    }
}

impl<M: Machine> Server<M> {
    /// Opens the data directory, starts the log writer and the gRPC server, and returns once
    /// the server listens. `extra` adds the services that use `machine` (commands, lookups).
    pub async fn start(
        config: &Config,
        machine: M,
        clock: Clock,
        extra: impl FnOnce(ServiceContext<'_, M>, &mut RoutesBuilder),
    ) -> Result<Self, ServerError> {
        let role = crate::replica::Role::of(config).await?;
        let read_only = crate::disk::make_room(&config.data_dir, config.emergency_ballast_mib)
            .map_err(|e| ServerError::Store(e.into()))?;
        if read_only {
            tracing::error!(
                data_dir = %config.data_dir.display(),
                "the data directory's disk is full: starting read-only (lookups and audit reads \
                 are served, commands are refused with RESOURCE_EXHAUSTED); free space and restart"
            );
        }
        let store = open_store(config)?;
        if read_only {
            // Nothing is written: the projections must be usable as they are.
        } else if !crate::projection::is_complete(store.as_ref())? {
            tracing::warn!(
                "the projections are incomplete (interrupted rebuild?); rebuilding them from the log"
            );
            let s = store.clone();
            let n = tokio::task::spawn_blocking(move || crate::projection::rebuild(s.as_ref()))
                .await
                .map_err(|e| ServerError::Task(e.to_string()))??;
            tracing::info!(entries = n, "projections rebuilt");
        } else {
            crate::projection::mark_complete(store.as_ref())?;
        }
        let origin = match &role {
            Role::Primary(key) => {
                primary_origin(store.as_ref(), config.origin.as_deref(), &key.key)?
            }
            Role::Replica { origin, .. } => {
                replica_origin(store.as_ref(), config.origin.as_deref(), origin)?
            }
        };
        let (public_key_der, public_key_pem) = role.public_key();
        let identity = Arc::new(Identity {
            origin: origin.clone(),
            key_id: hex::encode(registry_core::keys::note_key_id(&public_key_der)),
            fingerprint: registry_core::keys::fingerprint_hex(&public_key_der),
            public_key_der,
            public_key_pem,
        });
        tracing::info!(
            replica_of = role.primary().map(|p| p.url.as_str()),
            key_id = %identity.key_id,
            fingerprint = %identity.fingerprint,
            origin = %identity.origin,
            public_key_file = %config.data_dir.join(registry_key::PUBLIC_KEY_FILE).display(),
            "registry key"
        );
        tracing::info!(public_key_pem = %identity.public_key_pem.trim_end(), "registry public key");

        let replica = role.primary().cloned().map(|p| (p, Arc::new(ReplicaStatus::default())));
        let signing = role.signing(&origin).map_err(|e| signer_error(&origin, e))?;
        let options = LogOptions {
            read_only,
            max_batch: config.max_batch,
            verify_every: config.verify_every(),
            witness: Some(crate::log::Witness::new(
                config.data_dir.join(crate::log::witness::WITNESS_FILE),
            )),
            ..LogOptions::default()
        };
        let log = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || match signing {
                Signing::Primary(signer) => Log::open(store, machine, signer, options, clock),
                Signing::Replica(primary) => {
                    Log::open_replica(store, machine, primary, options, clock)
                }
            })
            .await
            .map_err(|e| ServerError::Task(e.to_string()))??
        };
        let reader = log.reader();
        let appender = log.appender();
        tracing::info!(size = reader.head().size, "log opened and verified");

        let stop = CancellationToken::new();
        let drain = CancellationToken::new();
        let (health, health_service) = health::service(drain.clone());
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service);
        routes.add_service(crate::grpc::reflection_v1()?);
        routes.add_service(crate::grpc::reflection_v1alpha()?);
        let audit = Arc::new(AuditApi::new(
            reader.clone(),
            identity.clone(),
            {
                let appender = appender.clone();
                Arc::new(move || appender.stats())
            },
            drain.clone(),
        ));
        routes.add_service(registry_proto::pb::audit_service_server::AuditServiceServer::from_arc(
            audit.clone(),
        ));
        health.set("keyregistry.v1.AuditService", true);
        let signatures = signature_budget(config);
        let web_lookups = std::sync::OnceLock::new();
        extra(
            ServiceContext {
                reader: &reader,
                appender: &appender,
                shutdown: &drain,
                health: &health,
                signatures: &signatures,
                web_lookups: &web_lookups,
            },
            &mut routes,
        );
        watch_writer(appender.status(), health.clone());
        if read_only || replica.is_some() {
            health.set(COMMAND_SERVICE, false);
        }
        if replica.is_some() {
            // Until it has caught up with the primary (see `replica::follower`).
            health.set(crate::replica::follower::LOOKUP_SERVICE, false);
        }

        let tls = match config.tls_files().map_err(|e| ServerError::Config(e.to_string()))? {
            Some(files) => Some(Tls::load(files)?),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Bind { addr: config.listen, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr: config.listen, source })?;
        let open_files = crate::listener::raise_open_files_limit();
        let accepting = accepting(config, open_files, tls.clone());
        match &tls {
            Some(tls) => {
                tls.clone().watch(Duration::from_secs(config.tls_reload_secs), drain.clone())
            }
            None => crate::listener::tls::ignore_hangups(drain.clone()),
        }
        let metrics = Metrics::new(
            live_figures(&reader, &appender, &config.data_dir, replica.as_ref().map(|r| &r.1)),
            &appender.stats_handle(),
            replica.is_some(),
        );
        let metrics_addr = match config.metrics_listen {
            Some(at) => Some(
                crate::telemetry::serve_metrics(at, metrics.clone(), drain.clone())
                    .await
                    .map_err(|source| ServerError::Bind { addr: at, source })?,
            ),
            None => None,
        };
        let web_addr = match config.http_listen {
            Some(at) => {
                let services = crate::web::WebServices {
                    reader: reader.clone(),
                    audit,
                    lookup: web_lookups.get().cloned(),
                    health: health.clone(),
                    metrics: metrics.clone(),
                };
                let settings = crate::web::WebSettings::of(config);
                // The web port counts against the same connection caps as the gRPC port.
                let accepting = Accepting { http1: true, ..accepting.clone() };
                Some(
                    crate::web::serve_web(at, services, settings, accepting, drain.clone())
                        .await
                        .map_err(|source| ServerError::Bind { addr: at, source })?,
                )
            }
            None => None,
        };
        let incoming =
            crate::listener::incoming(listener, accepting, metrics.clone(), drain.clone());
        let serve = connection_limits(config)
            .layer(TelemetryLayer::new(metrics.clone(), config.request_log))
            .layer(AdmissionLayer::new(admission_limits(config), signatures, metrics))
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(incoming, drain.clone().cancelled_owned());
        tracing::info!(%addr, tls = tls.is_some(), "listening for gRPC");
        warn_about_exposure(addr, tls.is_some(), open_files);

        let grace = Duration::from_secs(config.shutdown_timeout_secs);
        let task = tokio::spawn(run(serve, log, stop.clone(), drain, health.clone(), grace));
        Ok(Self {
            addr,
            metrics_addr,
            web_addr,
            identity,
            reader,
            appender,
            health,
            stop,
            task,
            replica,
        })
    }

    /// On a replica, its primary and how following it goes.
    pub fn replica(&self) -> Option<&(Primary, Arc<ReplicaStatus>)> {
        self.replica.as_ref()
    }

    /// Whether the log takes no writes (started read-only on a full disk, or its writer
    /// stopped after a storage failure).
    pub fn is_read_only(&self) -> bool {
        self.appender.status().borrow().is_stopped()
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the metrics listener, if one is configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Where the web face (JSON API, tiles) listens, if it does.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web_addr
    }

    /// The registry's public identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Reads the log.
    pub fn reader(&self) -> LogReader {
        self.reader.clone()
    }

    /// Appends to the log directly (tests, benchmarks, bootstrap).
    pub fn appender(&self) -> Appender<M> {
        self.appender.clone()
    }

    /// The health handle.
    pub fn health(&self) -> &HealthHandle {
        &self.health
    }

    /// A token that shuts the server down when cancelled (e.g. from a signal handler).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Begins a graceful shutdown.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Waits until the server has stopped. Drop other appender handles first, or the writer
    /// cannot stop until they are gone (it gives up waiting after the shutdown timeout).
    pub async fn wait(self) -> Result<(), ServerError> {
        let Self { task, appender, .. } = self;
        drop(appender);
        match task.await {
            Ok(r) => r,
            Err(e) => Err(ServerError::Task(e.to_string())),
        }
    }
}

/// Marks the command service `NOT_SERVING` for good if the writer stops: it needs a restart
/// (which re-verifies the log) before it can accept writes again. Lookups and audit reads only
/// read what is durable, so they stay `SERVING`: a load balancer keeps sending them reads.
fn watch_writer(mut status: tokio::sync::watch::Receiver<WriterStatus>, health: HealthHandle) {
    tokio::spawn(async move {
        status.mark_changed();
        while status.changed().await.is_ok() {
            let now = status.borrow().clone();
            if now.is_stopped() {
                tracing::error!(status = ?now, "the log writer stopped; the command service reports NOT_SERVING, reads go on");
                health.set(COMMAND_SERVICE, false);
                return;
            }
        }
    });
}

/// The command service's name in `grpc.health.v1`.
pub(crate) const COMMAND_SERVICE: &str = "keyregistry.v1.CommandService";

async fn run<M: Machine>(
    serve: impl std::future::Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
    log: Log<M>,
    stop: CancellationToken,
    drain: CancellationToken,
    health: HealthHandle,
    grace: Duration,
) -> Result<(), ServerError> {
    let mut serve = tokio::spawn(serve);
    let result = tokio::select! {
        r = &mut serve => r,
        () = stop.cancelled() => {
            tracing::info!("shutting down: not serving, ending streams, finishing requests");
            health.set_all_not_serving();
            drain.cancel();
            match tokio::time::timeout(grace, &mut serve).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(?grace, "requests still open after the shutdown timeout; closing them");
                    serve.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    // The services (and their appenders) are gone with the server; the writer now commits what
    // is queued and stops, and the projections are written to their snapshot. This wait is
    // bounded too: connections still open hold appenders, and only the runtime's shutdown,
    // after this returns, ends their tasks. The runtime then still waits for the close (its
    // blocking task) before the process exits; a kill meanwhile loses nothing acknowledged, it
    // only makes the next start replay the log since the last snapshot.
    let closing = tokio::task::spawn_blocking(move || log.close());
    let closed = match tokio::time::timeout(grace, closing).await {
        Ok(Err(e)) => Err(ServerError::Task(format!("closing the log: {e}"))),
        Ok(Ok(Err(e))) => {
            tracing::error!(error = %e, "the log did not stop cleanly");
            Err(ServerError::Stopped(e))
        }
        Ok(Ok(Ok(()))) => Ok(()),
        Err(_) => {
            tracing::warn!(
                ?grace,
                "the log has not closed within the shutdown timeout; the process exits once it has (queued appends, the projection snapshot)"
            );
            Ok(())
        }
    };
    tracing::info!("stopped");
    match result {
        Ok(r) => r.map_err(ServerError::Transport)?,
        Err(e) if e.is_cancelled() => {}
        Err(e) => return Err(ServerError::Task(e.to_string())),
    }
    closed
}

/// The server with the per-connection limits of the configuration (see `Config` for why each
/// exists).
fn connection_limits(config: &Config) -> tonic::transport::Server {
    let secs = |s: u64| (s > 0).then(|| std::time::Duration::from_secs(s));
    let mut server = tonic::transport::Server::builder()
        .max_concurrent_streams(config.max_streams_per_connection.max(1))
        .http2_max_header_list_size(config.max_header_list_bytes)
        .http2_keepalive_interval(secs(config.keepalive_secs))
        .http2_keepalive_timeout(secs(config.keepalive_secs))
        .initial_stream_window_size(window(config.stream_window_kib))
        .initial_connection_window_size(window(config.connection_window_kib));
    if let Some(timeout) = secs(config.request_timeout_secs) {
        server = server.timeout(timeout);
    }
    server
}

/// How connections are accepted: the connection limits (below the open-files limit, which is
/// raised first), the deadlines for silent and idle peers, and TLS.
fn accepting(config: &Config, open_files: Option<u64>, tls: Option<Arc<Tls>>) -> Accepting {
    let max_connections = crate::listener::connections_within(config.max_connections, open_files);
    if max_connections < config.max_connections {
        tracing::warn!(
            configured = config.max_connections,
            open_files,
            max_connections,
            "max_connections is above what the open-files limit allows; using less"
        );
    }
    Accepting {
        connections: crate::peers::Budget::new(
            max_connections.max(1),
            config.max_connections_per_peer,
        ),
        deadlines: Deadlines {
            first_call: Duration::from_secs(config.handshake_timeout_secs.clamp(1, DAY)),
            idle: Duration::from_secs(config.idle_timeout_secs.clamp(1, 365 * DAY)),
        },
        tls,
        http1: false,
    }
}

/// Seconds in a day: the deadlines' ceiling, far below where `Instant` arithmetic could overflow.
const DAY: u64 = 86_400;

/// An HTTP/2 flow-control window of `kib`, within what HTTP/2 allows (64 KiB to 2^31 - 1 bytes).
fn window(kib: u32) -> u32 {
    kib.clamp(64, (i32::MAX as u32) / 1024) * 1024
}

/// What `/metrics` reads at each scrape. It holds the writer's status and counters, not an
/// appender, so that it never keeps the writer from stopping.
fn live_figures<M: Machine>(
    reader: &LogReader,
    appender: &Appender<M>,
    data_dir: &std::path::Path,
    replica: Option<&Arc<ReplicaStatus>>,
) -> impl Fn() -> Live + Send + Sync + 'static {
    let (reader, status, stats) = (reader.clone(), appender.status(), appender.stats_handle());
    let replica = replica.cloned();
    let data_dir = data_dir.to_path_buf();
    move || {
        let head = reader.head();
        let written = stats.snapshot();
        let space = crate::disk::space(&data_dir);
        let snapshot = std::fs::metadata(data_dir.join(SNAPSHOT_FILE)).ok().map(|m| {
            let age = m.modified().ok().and_then(|t| t.elapsed().ok()).unwrap_or_default();
            (age.as_secs_f64(), m.len())
        });
        Live {
            log_size: head.size,
            newest_entry_unix: head.last_recorded_at.map(|t| t.timestamp_micros() as f64 / 1e6),
            group_commits: written.batches,
            entries_written: written.entries,
            largest_group_commit: written.largest,
            writer_up: !status.borrow().is_stopped(),
            disk_free_bytes: space.map(|s| s.0),
            disk_total_bytes: space.map(|s| s.1),
            verified_size: reader.verified_size(),
            snapshot,
            snapshot_seconds: reader.store().last_snapshot_seconds(),
            unsnapshotted_records: reader.store().unsnapshotted_records(),
            replica: replica.as_ref().map(|r| crate::telemetry::ReplicaFigures {
                lag_entries: r.lag_entries(),
                lag_seconds: r.lag_seconds(),
                connected: r.connected(),
                stopped: r.stopped().is_some(),
            }),
        }
    }
}

/// The admission limits of the configuration.
fn admission_limits(config: &Config) -> Limits {
    const MIB: usize = 1024 * 1024;
    Limits {
        calls: config.max_calls,
        calls_per_peer: config.max_calls_per_peer,
        request_bytes: config.max_request_mib.saturating_mul(MIB),
        request_bytes_per_peer: config.max_request_mib_per_peer.saturating_mul(MIB),
        writes_need_client_cert: config.tls_client_ca.is_some()
            && config.tls_cert.is_some()
            && config.tls_client_auth == ClientAuth::Writes,
    }
}

/// The per-peer budget of failed signature checks, forgotten for idle peers every minute while
/// the budget is in use.
fn signature_budget(config: &Config) -> Option<Arc<SignatureBudget>> {
    let budget =
        Arc::new(SignatureBudget::new(config.bad_signatures_per_sec, config.bad_signatures_burst)?);
    let weak = Arc::downgrade(&budget);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            match weak.upgrade() {
                Some(budget) => budget.forget_idle(),
                None => return,
            }
        }
    });
    Some(budget)
}

/// Says at start what an operator putting the registry on a network must know: plaintext gRPC
/// exposes answers (serve TLS or terminate it in front), and every connection is a file
/// descriptor (a low limit lets idle peers starve it).
fn warn_about_exposure(addr: std::net::SocketAddr, tls: bool, open_files: Option<u64>) {
    if !addr.ip().is_loopback() && !tls {
        tracing::warn!(%addr, "serving plaintext gRPC on a non-loopback address: commands are signed \
            but answers and their metadata travel unencrypted and unauthenticated; set tls_cert \
            and tls_key, or put a TLS-terminating proxy in front (README, \"On the internet\")");
    }
    match open_files {
        Some(limit) if limit < MIN_OPEN_FILES => tracing::warn!(
            limit,
            wanted = MIN_OPEN_FILES,
            "the open-files limit is low even after raising it to the hard limit: each \
             connection takes a file descriptor, so max_connections is cut to fit; raise it \
             (LimitNOFILE in the systemd unit, ulimit -Hn)"
        ),
        _ => {}
    }
}

/// The open-files soft limit below which [`warn_about_exposure`] warns.
const MIN_OPEN_FILES: u64 = 4096;
