//! The registry's services on a [`Server`]: on a primary the lifecycle rules in the writer,
//! the command service (acknowledging once `sync_replicas` replicas hold what it appended) and
//! the replicas' progress reports; on a replica the refusing command service and the follower.
//! Lookups and the audit API on both. A primary also writes the configured administrators into
//! an administrator-less log and confirms registrations a crash left pending.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::commands::{CommandSettings, Commands};
use crate::config::Config;
use crate::grpc::commands::CommandApi;
use crate::grpc::lookup::LookupApi;
use crate::grpc::replica::ReplicaCommands;
use crate::grpc::replication::ReplicationApi;
use crate::key_cache::KeyCache;
use crate::log::Clock;
use crate::lookup::Lookups;
use crate::machine::RegistryMachine;
use crate::replica::follower::{Follower, LOOKUP_SERVICE, watch_freshness};
use crate::replica::progress::Progress;
use crate::replica::{Primary, ReplicaStatus};
use crate::server::{COMMAND_SERVICE, Server, ServerError};
use crate::store::LogStore;
use registry_core::note::NoteVerifier;

/// Reads the configured administrator public keys (P-256, PEM or hex/base64 DER).
fn admin_keys(config: &Config) -> Result<Vec<(Vec<u8>, String)>, ServerError> {
    config
        .admin_keys
        .iter()
        .map(|path| {
            let mut text = std::fs::read_to_string(path)
                .map_err(|e| ServerError::Config(format!("admin key {}: {e}", path.display())))?;
            if text.contains("PRIVATE KEY") {
                tracing::warn!(file = %path.display(), "admin key file holds a private key; the server only needs the public key");
                let pair = registry_core::keys::P256KeyPair::from_pkcs8_pem(&text)
                    .map_err(|e| ServerError::Config(format!("admin key {}: {e}", path.display())))?;
                text = pair.public_key_pem();
            }
            let key = registry_core::meter_key::MeterKey::parse(&text, None)
                .map_err(|e| ServerError::Config(format!("admin key {}: {e}", path.display())))?;
            if key.curve != registry_core::meter_key::Curve::Secp256r1 {
                return Err(ServerError::Config(format!(
                    "admin key {}: must be a P-256 key",
                    path.display()
                )));
            }
            let label =
                path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            Ok((key.spki_der, label))
        })
        .collect()
}

/// Reads the key projections into `cache` on a thread of its own: the server answers at once
/// (from the store, until the cache is complete) instead of after reading every key. It gives up
/// at shutdown, so it does not keep the store open after the server stopped.
fn fill_in_background(store: Arc<dyn LogStore>, cache: Arc<KeyCache>, shutdown: CancellationToken) {
    let spawned = std::thread::Builder::new().name("key-cache-fill".into()).spawn(move || {
        let started = std::time::Instant::now();
        let stop = || shutdown.is_cancelled();
        match crate::projection::fill_cache(store.as_ref(), &cache, &stop) {
            Ok(()) => tracing::info!(
                keys = cache.len(),
                seconds = started.elapsed().as_secs_f64(),
                "key records cached in memory"
            ),
            Err(_) if shutdown.is_cancelled() => {
                tracing::info!("shutting down before the key records were all in memory")
            }
            // Lookups keep reading the store for what is missing; nothing is answered wrongly.
            Err(e) => tracing::error!(error = %e, "reading the key projections into memory failed"),
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the key cache fill; lookups read the store");
    }
}

/// Starts the registry: the lifecycle rules in the writer, the command, lookup and audit
/// services; writes the configured administrators into an administrator-less log and confirms
/// registrations a crash left pending.
pub async fn start_registry(
    config: &Config,
    clock: Clock,
) -> Result<Server<RegistryMachine>, ServerError> {
    let admins = admin_keys(config)?;
    let skew = chrono::TimeDelta::seconds(config.max_clock_skew_secs as i64);
    let settings = CommandSettings { max_clock_skew: skew, confirm_policy: config.confirm_policy };
    let map = std::sync::Arc::new(crate::map::SharedMap::default());
    let cache = Arc::new(KeyCache::new());
    let machine = RegistryMachine::new(
        registry_core::lifecycle::Policy { max_future: skew },
        map.clone(),
        cache.clone(),
    );
    let service_clock = clock.clone();
    let primary = config.follow.primary.clone();
    let (sync_replicas, sync_timeout) =
        (config.sync_replicas, Duration::from_secs(config.sync_timeout_secs));
    let token = match &config.replication_token_file {
        Some(file) => {
            Some(crate::config::read_token(file).map_err(|e| ServerError::Config(e.to_string()))?)
        }
        None => None,
    };
    if sync_replicas > 0 && token.is_none() && config.tls_client_ca.is_none() {
        tracing::warn!(
            "sync_replicas is set but replicas' progress reports are not authenticated: anyone \
             who reaches this port could have commands acknowledged before a replica holds \
             them; set replication_token_file (and follow.token_file on the replicas) or \
             require client certificates"
        );
    }
    let server = Server::start(config, machine, clock.clone(), move |ctx, routes| {
        use registry_proto::pb::command_service_server::CommandServiceServer;
        use registry_proto::pb::replication_service_server::ReplicationServiceServer;
        if let Some(primary) = primary {
            routes.add_service(CommandServiceServer::new(ReplicaCommands::new(primary)));
        } else {
            let commands =
                Commands::new(ctx.appender.clone(), ctx.reader.clone(), settings, service_clock);
            let progress = Arc::new(Progress::new(sync_replicas, sync_timeout));
            let api = CommandApi::new(commands, ctx.signatures.clone(), progress.clone());
            routes.add_service(
                CommandServiceServer::new(api)
                    // The admission layer holds each method to its own, smaller limit first.
                    .max_decoding_message_size(crate::admission::MAX_MESSAGE_BYTES),
            );
            routes.add_service(ReplicationServiceServer::new(ReplicationApi::new(
                ctx.reader.clone(),
                progress,
                token.as_deref(),
            )));
            ctx.health.set("keyregistry.v1.ReplicationService", true);
        }
        let lookups = Arc::new(LookupApi::new(
            Lookups::new(ctx.reader.clone(), cache.clone(), map.clone()),
            crate::evidence::EvidenceBuilder::new(ctx.reader.clone(), map),
        ));
        let _ = ctx.web_lookups.set(lookups.clone());
        routes.add_service(
            registry_proto::pb::lookup_service_server::LookupServiceServer::from_arc(lookups)
                .max_decoding_message_size(crate::admission::MAX_MESSAGE_BYTES),
        );
        fill_in_background(ctx.reader.store().clone(), cache, ctx.shutdown.clone());
        ctx.health.set(COMMAND_SERVICE, true);
        ctx.health.set("keyregistry.v1.LookupService", true);
    })
    .await?;
    if let Some((primary, status)) = server.replica() {
        follow(&server, primary.clone(), status.clone(), config.follow.max_staleness_secs);
        return Ok(server);
    }
    if server.is_read_only() {
        return Ok(server);
    }
    let commands = Commands::new(server.appender(), server.reader(), settings, clock);
    if let Some(position) = commands.bootstrap(admins).await? {
        tracing::info!(position, "wrote the configured administrator keys to the log");
    }
    let confirmed = commands.confirm_pending().await?;
    if confirmed > 0 {
        tracing::info!(confirmed, "confirmed registrations left pending by an earlier stop");
    }
    Ok(server)
}

/// Starts following `primary` in the background for the replica `server`, until it stops, and
/// keeps its readiness to the freshness of its answers (`max_staleness_secs`, 0: no bound).
fn follow(
    server: &Server<RegistryMachine>,
    primary: Primary,
    status: Arc<ReplicaStatus>,
    max_staleness_secs: u64,
) {
    let identity = server.identity();
    let verifier = match NoteVerifier::new(&identity.origin, &identity.public_key_der) {
        Ok(v) => v,
        Err(e) => {
            status.stop(format!("the registry key cannot check checkpoints: {e}"));
            return;
        }
    };
    let replica_id = match crate::replica::replica_id(server.reader().store().as_ref()) {
        Ok(id) => id,
        Err(e) => {
            status.stop(format!("this replica's identity cannot be stored: {e}"));
            return;
        }
    };
    let health = server.health().clone();
    let max_staleness = (max_staleness_secs > 0).then(|| Duration::from_secs(max_staleness_secs));
    tokio::spawn(watch_freshness(
        status.clone(),
        server.reader(),
        max_staleness,
        move |ready| health.set(LOOKUP_SERVICE, ready),
        server.stop_token(),
    ));
    let follower = Follower {
        replica_id,
        appender: server.appender(),
        reader: server.reader(),
        primary,
        verifier,
        key_der: identity.public_key_der.clone(),
        status,
    };
    tokio::spawn(follower.run(server.stop_token()));
}
