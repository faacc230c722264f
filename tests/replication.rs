//! Read replicas and promotion on real sockets and real disks: a replica copies and verifies
//! the primary's log, serves proven reads under the primary's checkpoints, refuses commands
//! naming the primary, resumes after restarts on either side, stops following a primary whose
//! log was rewritten; and when the primary is killed under load, a replica promoted with the
//! registry key continues the same log with every acknowledged write in it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use registry_client::verify::Verifier;
use registry_client::{AsOf, KeySubmission, KeyTarget, Order, RegistryClient};
use registry_core::keys::P256KeyPair;
use registry_server::config::{Config, Follow};
use registry_server::log::system_clock;
use registry_server::machine::RegistryMachine;
use registry_server::registry::start_registry;
use registry_server::server::Server;
use registry_tests::{ChildRegistry, Fixture, meter_key, spki_hex, t, test_config, verdict_name};

type Registry = Server<RegistryMachine>;

fn replica_config(primary: &str, dir: &Path) -> Config {
    Config {
        follow: Follow { primary: Some(primary.to_string()), ..Follow::default() },
        ..test_config(dir)
    }
}

async fn start_replica(primary: &str, dir: &Path) -> Registry {
    start_registry(&replica_config(primary, dir), system_clock()).await.expect("replica starts")
}

fn url(server: &Registry) -> String {
    format!("http://{}", server.local_addr())
}

/// Waits until `server` publishes at least `size` entries.
async fn caught_up(server: &Registry, size: u64) {
    let mut heads = server.reader().subscribe();
    let reached = tokio::time::timeout(Duration::from_secs(60), async {
        while heads.borrow_and_update().size < size {
            heads.changed().await.expect("the replica runs");
        }
    })
    .await;
    let status = server.replica().map(|(_, s)| s.stopped());
    assert!(
        reached.is_ok(),
        "the replica holds {} entries, not {size}, after a minute (stopped: {status:?})",
        server.reader().head().size
    );
}

async fn register(client: &RegistryClient, operator: &P256KeyPair, evse: &str) -> P256KeyPair {
    let meter = meter_key();
    let order = Order::Register {
        key: KeySubmission::new(spki_hex(&meter)),
        evse_ids: vec![evse.to_string()],
        effective_at: Some(t("2026-01-01T00:00:00Z")),
    };
    client.submit(operator, &order).await.expect("registration accepted");
    meter
}

async fn checkpoint_note(server: &Registry) -> String {
    let client = RegistryClient::connect(&url(server)).await.expect("connects");
    client.checkpoint(0).await.expect("checkpoint").checkpoint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_serves_the_primary_s_log_under_its_checkpoints_and_refuses_commands() {
    let f = Fixture::start().await;
    let operator = f.operator("DE*ABC").await;
    let first = register(&f.client, &operator, "DE*ABC*E1").await;
    let dir = tempfile::tempdir().unwrap();
    let replica = start_replica(&f.registry.url(), dir.path()).await;
    caught_up(&replica, f.log_size()).await;
    assert_eq!(
        checkpoint_note(&replica).await,
        f.client.checkpoint(0).await.unwrap().checkpoint,
        "the replica serves the primary's own signed checkpoint"
    );

    // Entries appended later arrive through the live stream.
    let second = register(&f.client, &operator, "DE*ABC*E2").await;
    caught_up(&replica, f.log_size()).await;
    let client = RegistryClient::connect(&url(&replica)).await.unwrap();
    let pem = f.registry.server.identity().public_key_pem.clone();
    let state = dir.path().join("verifier.json");
    let mut verifier = Verifier::new(&f.client, Some(&pem), &state).await.unwrap();
    for (meter, evse) in [(&first, "DE*ABC*E1"), (&second, "DE*ABC*E2")] {
        let (answer, _) = verifier
            .check(
                &client,
                &KeyTarget::Evse(evse.into()),
                None,
                t("2026-06-01T00:00:00Z"),
                AsOf::Head,
            )
            .await
            .expect("the replica's proven answer verifies with the registry key");
        let validity = answer.validity.unwrap();
        assert_eq!(verdict_name(&validity), "VALID");
        assert_eq!(validity.fingerprint, meter.fingerprint_hex());
    }

    let refused = client
        .submit(
            &operator,
            &Order::Register {
                key: KeySubmission::new(spki_hex(&meter_key())),
                evse_ids: vec!["DE*ABC*E3".into()],
                effective_at: None,
            },
        )
        .await
        .expect_err("a replica takes no command");
    assert_eq!(refused.code(), Some(tonic::Code::FailedPrecondition));
    assert!(refused.to_string().contains(&f.registry.url()), "names the primary: {refused}");
    assert_eq!(replica.reader().head().size, f.log_size(), "nothing was appended");
    // The follower records its progress a moment after the head moves.
    let status = replica.replica().expect("a replica").1.clone();
    for _ in 0..100 {
        if status.lag_entries() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!((status.lag_entries(), status.stopped()), (0, None));

    // A mirror can follow the replica as it would the primary: the watch stream cuts where the
    // replica holds one of the primary's checkpoints, each checked against the one before.
    let archive = registry_client::archive::Archive::new(&dir.path().join("mirror"));
    let until = f.log_size() + 2;
    let mirror = tokio::spawn({
        let client = client.clone();
        async move { registry_client::audit::follow(&client, &archive, Some(until), |_| {}).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    register(&f.client, &operator, "DE*ABC*E4").await;
    let mirrored = tokio::time::timeout(Duration::from_secs(30), mirror).await;
    assert_eq!(mirrored.expect("in time").unwrap().expect("the mirror verifies"), until);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_with_sync_replicas_acknowledges_a_command_only_once_a_replica_holds_it() {
    let f = Fixture::start_configured(|c| {
        c.sync_replicas = 1;
        c.sync_timeout_secs = 1;
    })
    .await;
    let order = Order::AddOperator {
        operator_id: "DE*ABC".into(),
        name: "Operator".into(),
        public_keys: vec![P256KeyPair::generate().public_key_pem()],
    };
    let signed = f.client.sign(&f.admin, &order).await.unwrap();
    let unconfirmed = f.client.submit_signed(signed.clone()).await.expect_err("no replica yet");
    assert_eq!(unconfirmed.code(), Some(tonic::Code::Unavailable));
    assert!(unconfirmed.to_string().contains("durable on the primary"), "{unconfirmed}");
    let size = f.log_size();

    let dir = tempfile::tempdir().unwrap();
    let replica = start_replica(&f.registry.url(), dir.path()).await;
    caught_up(&replica, size).await;
    let retried = f.client.submit_signed(signed).await.expect("acknowledged once replicated");
    assert!(retried.duplicate, "the retry finds the entry written before");
    assert_eq!(f.log_size(), size, "and appends nothing");
    let next = Order::AddOperator {
        operator_id: "DE*XYZ".into(),
        name: "Other".into(),
        public_keys: vec![P256KeyPair::generate().public_key_pem()],
    };
    let done = f.client.submit(&f.admin, &next).await.expect("acknowledged with a replica up");
    assert!(replica.reader().head().size > done.position, "the replica held it before the answer");
}

/// A replica catching up gets the primary's log in messages the primary cuts before its head,
/// under checkpoints it signs for the cut, which carry no map root: those copies become durable
/// but not the head, so every head a replica shows can prove its answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_head_a_replica_publishes_carries_the_map_root_its_proofs_need() {
    let f = Fixture::start().await;
    // More than one watch message's worth (1,024 entries) of registrations.
    registry_client::bench::prepare(&f.client, Some(&f.admin), 600, 7, |_, _| {})
        .await
        .expect("a fleet of 600 keys");
    let size = f.log_size();
    assert!(size > 1024, "{size}");
    let dir = tempfile::tempdir().unwrap();
    let replica = start_replica(&f.registry.url(), dir.path()).await;
    let mut heads = replica.reader().subscribe();
    let mut seen = Vec::new();
    while heads.borrow().size < size {
        heads.changed().await.expect("the replica runs");
        let head = heads.borrow_and_update().clone();
        seen.push((head.size, head.checkpoint.contains("keyregistry.v1 map ")));
    }
    assert!(seen.iter().all(|(_, map)| *map), "heads without a map root: {seen:?}");
    assert_eq!(seen.last().map(|(s, _)| *s), Some(size));
    // And a proven answer from it verifies.
    let client = RegistryClient::connect(&url(&replica)).await.unwrap();
    let pem = f.registry.server.identity().public_key_pem.clone();
    let mut verifier =
        Verifier::new(&f.client, Some(&pem), &dir.path().join("v.json")).await.unwrap();
    let evse = registry_client::load::evse_id(registry_client::bench::OPERATOR, 0);
    verifier
        .check(&client, &KeyTarget::Evse(evse), None, t("2026-06-01T00:00:00Z"), AsOf::Head)
        .await
        .expect("the replica's proven answer verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_resumes_after_its_own_restart_and_the_primary_s() {
    let f = Fixture::start().await;
    let operator = f.operator("DE*ABC").await;
    register(&f.client, &operator, "DE*ABC*E1").await;
    let dir = tempfile::tempdir().unwrap();
    let primary = f.registry.url();
    let replica = start_replica(&primary, dir.path()).await;
    caught_up(&replica, f.log_size()).await;
    replica.shutdown();
    replica.wait().await.expect("the replica stops cleanly");

    for i in 2..5 {
        register(&f.client, &operator, &format!("DE*ABC*E{i}")).await;
    }
    let replica = start_replica(&primary, dir.path()).await;
    caught_up(&replica, f.log_size()).await;

    // Stopped after copying but before publishing (its witness still holds an older checkpoint
    // of the primary's): the next start publishes what it holds though the primary is idle.
    replica.shutdown();
    replica.wait().await.unwrap();
    let older = f.client.checkpoint(3).await.unwrap().checkpoint;
    let witness = dir.path().join(registry_server::log::witness::WITNESS_FILE);
    std::fs::write(&witness, older).unwrap();
    let mut config = replica_config(&primary, dir.path());
    config.follow.max_staleness_secs = 1;
    let replica = start_registry(&config, system_clock()).await.expect("replica starts");
    caught_up(&replica, f.log_size()).await;
    assert_eq!(checkpoint_note(&replica).await, f.client.checkpoint(0).await.unwrap().checkpoint);
    readiness(&replica, true).await;

    // The primary goes away: after max_staleness_secs the replica is no longer ready for reads
    // that may miss a revocation. It comes back on the same address, and so does readiness.
    let Fixture { registry, admin: _, client: _ } = f;
    let config = Config { listen: registry.server.local_addr(), ..registry.config.clone() };
    registry.server.shutdown();
    registry.server.wait().await.expect("the primary stops cleanly");
    readiness(&replica, false).await;
    let primary_again = start_registry(&config, system_clock()).await.expect("primary restarts");
    let client = RegistryClient::connect(&primary).await.unwrap();
    for i in 5..8 {
        register(&client, &operator, &format!("DE*ABC*E{i}")).await;
    }
    let size = primary_again.reader().head().size;
    caught_up(&replica, size).await;
    assert_eq!(checkpoint_note(&replica).await, checkpoint_note(&primary_again).await);
    readiness(&replica, true).await;
    drop(registry.dir);
}

/// Waits (up to 20 s) until the replica's lookups report `SERVING` (`true`) or `NOT_SERVING`
/// in gRPC health, which readiness probes ask.
async fn readiness(replica: &Registry, serving: bool) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = tonic::transport::Channel::from_shared(url(replica)).unwrap();
    let mut health = HealthClient::new(channel.connect().await.unwrap());
    let want = if serving { ServingStatus::Serving } else { ServingStatus::NotServing } as i32;
    let mut last = 0;
    for _ in 0..200 {
        let request = HealthCheckRequest { service: "keyregistry.v1.LookupService".into() };
        last = health.check(request).await.unwrap().into_inner().status;
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the replica's lookups report {last}, not {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stops_following_a_primary_whose_log_was_rewritten() {
    let f = Fixture::start().await;
    let operator = f.operator("DE*ABC").await;
    register(&f.client, &operator, "DE*ABC*E1").await;
    let fork_dir = tempfile::tempdir().unwrap();
    let fork = registry_tests::start_fork(&f.registry.config, fork_dir.path()).await;
    let fork_client = RegistryClient::connect(&url(&fork)).await.unwrap();
    // The same size on both sides, different entries: only the roots tell them apart.
    register(&f.client, &operator, "DE*ABC*E2").await;
    register(&fork_client, &operator, "DE*ABC*E9").await;

    let dir = tempfile::tempdir().unwrap();
    let replica = start_replica(&f.registry.url(), dir.path()).await;
    caught_up(&replica, f.log_size()).await;
    let held = checkpoint_note(&replica).await;
    replica.shutdown();
    replica.wait().await.unwrap();

    let config = Config {
        metrics_listen: Some(([127, 0, 0, 1], 0).into()),
        ..replica_config(&url(&fork), dir.path())
    };
    let replica = start_registry(&config, system_clock()).await.expect("replica starts");
    let status = replica.replica().expect("a replica").1.clone();
    let stopped = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(why) = status.stopped() {
                return why;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the replica stops following the fork");
    assert!(stopped.contains("another root"), "{stopped}");
    assert_eq!(checkpoint_note(&replica).await, held, "it keeps serving what it verified");
    let metrics = registry_tests::raw::http_get(replica.metrics_addr().unwrap(), "/metrics");
    assert!(metrics.contains("registry_replica_stopped 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_replicas_with_the_replication_token_release_a_waiting_command() {
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, "correct-horse-battery-staple\n").unwrap();
    let f = Fixture::start_configured(|c| {
        c.sync_replicas = 1;
        c.sync_timeout_secs = 30;
        c.replication_token_file = Some(token_file.clone());
    })
    .await;
    let channel = f.registry.channel().await;
    let mut reports =
        registry_proto::pb::replication_service_client::ReplicationServiceClient::new(channel);
    let size = f.log_size();
    let root = f.client.checkpoint(0).await.unwrap().root_hash;
    for token in [None, Some("Bearer not-the-token-at-all"), Some("correct-horse-battery-staple")] {
        let mut request = tonic::Request::new(registry_proto::pb::ReportProgressRequest {
            replica_id: "impostor".into(),
            size,
            root_hash: root.clone(),
        });
        if let Some(t) = token {
            request.metadata_mut().insert("authorization", t.parse().unwrap());
        }
        let refused = reports.report_progress(request).await.expect_err("no token, no report");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{token:?}");
    }

    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        follow: Follow {
            token_file: Some(token_file.clone()),
            ..replica_config(&f.registry.url(), dir.path()).follow
        },
        ..replica_config(&f.registry.url(), dir.path())
    };
    let replica = start_registry(&config, system_clock()).await.expect("replica starts");
    caught_up(&replica, size).await;
    let operator = f.operator("DE*ABC").await;
    let meter = register(&f.client, &operator, "DE*ABC*E1").await;
    assert!(replica.reader().head().size >= f.log_size(), "acknowledged once the replica held it");
    let client = RegistryClient::connect(&url(&replica)).await.unwrap();
    assert!(client.key(&meter.fingerprint_hex(), AsOf::Head).await.unwrap().key.is_some());
}

/// The primary as a child process (so that it can be killed), acknowledging a write only once
/// `sync` replicas hold it.
fn start_primary(dir: &Path, admin: &Path, sync: usize) -> ChildRegistry {
    let sync = sync.to_string();
    let args = [dir.as_os_str(), admin.as_os_str(), "100000".as_ref(), sync.as_ref()];
    ChildRegistry::start(env!("CARGO_BIN_EXE_crash-registry"), &args)
}

/// Registers keys from a few concurrent clients until `stop` is set or the server stops
/// answering; returns the fingerprints it acknowledged.
fn write_until(
    client: &RegistryClient,
    operator: &P256KeyPair,
    tag: &str,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<String>>> {
    (0..4)
        .map(|task| {
            let (client, operator) = (client.clone(), operator.clone());
            let (tag, stop) = (tag.to_string(), stop.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let meter = meter_key();
                    let order = Order::Register {
                        key: KeySubmission::new(spki_hex(&meter)),
                        evse_ids: vec![format!("DE*ABC*E{tag}T{task}N{i}")],
                        effective_at: Some(t("2026-01-01T00:00:00Z")),
                    };
                    match client.submit(&operator, &order).await {
                        Ok(_) => acked.push(meter.fingerprint_hex()),
                        Err(_) => break,
                    }
                }
                acked
            })
        })
        .collect()
}

async fn joined(writers: Vec<tokio::task::JoinHandle<Vec<String>>>) -> Vec<String> {
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.expect("writer task"));
    }
    acked
}

async fn settled(replica: &Registry) -> u64 {
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let size = replica.reader().head().size;
        if size == last {
            return size;
        }
        last = size;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_promoted_after_the_primary_is_killed_continues_the_log_with_every_acknowledged_write()
 {
    let dir = tempfile::tempdir().unwrap();
    let admin = P256KeyPair::generate();
    let admin_file = dir.path().join("admin.pub.pem");
    std::fs::write(&admin_file, admin.public_key_pem()).unwrap();
    let primary_dir = dir.path().join("primary");
    let mut primary = start_primary(&primary_dir, &admin_file, 1);
    let primary_url = primary.url.clone();
    let a = start_replica(&primary_url, &dir.path().join("a")).await;
    let b = start_replica(&primary_url, &dir.path().join("b")).await;

    let client = RegistryClient::connect(&primary_url).await.unwrap();
    let operator = P256KeyPair::generate();
    client
        .submit(
            &admin,
            &Order::AddOperator {
                operator_id: "DE*ABC".into(),
                name: "Operator".into(),
                public_keys: vec![operator.public_key_pem()],
            },
        )
        .await
        .expect("operator added once a replica holds it");
    let never = Arc::new(AtomicBool::new(false));
    let writers = write_until(&client, &operator, "1", &never);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    primary.kill();
    let acked = joined(writers).await;
    assert!(acked.len() >= 10, "only {} writes were acknowledged before the kill", acked.len());

    // The runbook: stop the replicas, promote the one that holds the most, re-point the other.
    let (size_a, size_b) = (settled(&a).await, settled(&b).await);
    for replica in [a, b] {
        replica.shutdown();
        replica.wait().await.expect("a replica stops cleanly");
    }
    let (promoted, other) = if size_a >= size_b { ("a", "b") } else { ("b", "a") };
    let config = Config { sync_replicas: 1, ..test_config(&dir.path().join(promoted)) };
    let key_file = primary_dir.join(registry_server::registry_key::KEY_FILE);
    let promotion = registry_server::replica::promote(&config, &key_file).expect("promoted");
    assert_eq!(promotion.size, size_a.max(size_b));
    let new_primary = start_registry(&config, system_clock()).await.expect("new primary starts");
    let other = start_replica(&url(&new_primary), &dir.path().join(other)).await;
    caught_up(&other, promotion.size).await;

    // Writes continue; a third replica joins from nothing meanwhile.
    let client = RegistryClient::connect(&url(&new_primary)).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = write_until(&client, &operator, "2", &stop);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let third = start_replica(&url(&new_primary), &dir.path().join("c")).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::SeqCst);
    let acked_after = joined(writers).await;
    assert!(!acked_after.is_empty(), "writes continue on the new primary");

    // All three agree on the root, and every write either primary acknowledged is in the log.
    let size = new_primary.reader().head().size;
    caught_up(&other, size).await;
    caught_up(&third, size).await;
    let note = checkpoint_note(&new_primary).await;
    assert_eq!(checkpoint_note(&other).await, note);
    assert_eq!(checkpoint_note(&third).await, note);
    for server in [&new_primary, &other, &third] {
        let client = RegistryClient::connect(&url(server)).await.unwrap();
        for fingerprint in acked.iter().chain(&acked_after) {
            let key = client.key(fingerprint, AsOf::Head).await.expect("every acknowledged key");
            assert!(key.key.is_some(), "{fingerprint} is in the log");
        }
    }
    assert_eq!(other.replica().and_then(|(_, s)| s.stopped()), None);
}
