//! Integrity at rest: a registry never starts on a log that lost or changed what it signed, a
//! command signed for one registry is refused by every other, and `audit verify` vouches for
//! every file of an archive a person reads.

use indicatif::ProgressBar;
use registry_client::archive::Archive;
use registry_client::{KeySubmission, Order, RegistryClient, audit, command_bytes};
use registry_core::command::SignedCommand;
use registry_server::config::Config;
use registry_server::log::OpenError;
use registry_server::log::witness::{SLOT, WITNESS_FILE};
use registry_server::server::ServerError;
use registry_tests::{Fixture, copy_dir, meter_key, spki_hex, t};
use tonic::Code;

fn register(evse: &str) -> Order {
    Order::Register {
        key: KeySubmission::new(spki_hex(&meter_key())),
        evse_ids: vec![evse.into()],
        effective_at: Some(t("2026-01-01T00:00:00Z")),
    }
}

async fn stop(f: Fixture) -> (Config, tempfile::TempDir) {
    let Fixture { registry, client, admin: _ } = f;
    drop(client);
    registry.server.shutdown();
    registry.server.wait().await.expect("clean stop");
    (registry.config, registry.dir)
}

async fn start(
    config: &Config,
) -> Result<registry_server::server::Server<registry_server::machine::RegistryMachine>, ServerError>
{
    registry_server::registry::start_registry(config, registry_server::log::system_clock()).await
}

fn key_of(config: &Config) -> Vec<u8> {
    let pem = std::fs::read_to_string(config.data_dir.join("registry-key.pub.pem")).unwrap();
    registry_core::keys::p256_spki_der_from_pem(&pem).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_whose_log_lost_signed_entries_refuses_to_start_and_says_how_to_recover() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    f.client.submit(&op, &register("DE*ABC*E1")).await.unwrap();
    let (config, dir) = stop(f).await;
    // An older copy of the data directory (a stale backup of the database, or what a damaged
    // database recovers: a shorter prefix of the log)...
    let old = Config { data_dir: dir.path().join("old"), ..config.clone() };
    copy_dir(&config.data_dir, &old.data_dir);
    let again = start(&config).await.unwrap();
    let client = RegistryClient::connect(&format!("http://{}", again.local_addr())).await.unwrap();
    client.submit(&op, &register("DE*ABC*E2")).await.unwrap();
    let signed = again.reader().head().size;
    drop(client);
    again.shutdown();
    again.wait().await.unwrap();
    // ... next to the witness of everything the registry signed since.
    std::fs::copy(config.data_dir.join(WITNESS_FILE), old.data_dir.join(WITNESS_FILE)).unwrap();

    let refused = start(&old).await.err().expect("refuses to start");
    let found = match &refused {
        ServerError::Open(OpenError::RolledBack { signed: s, found, .. }) => {
            assert_eq!(*s, signed);
            *found
        }
        other => panic!("expected a rollback refusal, got {other}"),
    };
    assert!(found < signed);
    let message = refused.to_string();
    assert!(message.contains(&format!("checkpoint of {signed} entries")), "{message}");
    assert!(message.contains(&format!("entry {found} cannot be read")), "{message}");
    assert!(message.contains("registry-server restore"), "says how to recover: {message}");
    assert_eq!(refused.exit_code(), 3);
    // Nothing was written on top: the old copy still refuses, and the real one still starts.
    assert!(matches!(start(&old).await, Err(ServerError::Open(OpenError::RolledBack { .. }))));
    let intact = start(&config).await.expect("the intact directory starts");
    assert_eq!(intact.reader().head().size, signed);
    intact.shutdown();
    intact.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_whose_log_differs_from_what_it_signed_refuses_to_start() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let (config, dir) = stop(f).await;
    // A fork of the same directory appends other entries under the same positions.
    let fork = registry_tests::start_fork(&config, &dir.path().join("fork")).await;
    let fork_client =
        RegistryClient::connect(&format!("http://{}", fork.local_addr())).await.unwrap();
    fork_client.submit(&op, &register("DE*ABC*E7")).await.unwrap();
    drop(fork_client);
    fork.shutdown();
    fork.wait().await.unwrap();
    let again = start(&config).await.unwrap();
    let client = RegistryClient::connect(&format!("http://{}", again.local_addr())).await.unwrap();
    client.submit(&op, &register("DE*ABC*E8")).await.unwrap();
    drop(client);
    again.shutdown();
    again.wait().await.unwrap();
    // The fork's database next to the original's witness: same size, other entries.
    let fork_dir = dir.path().join("fork").join("data");
    std::fs::copy(config.data_dir.join(WITNESS_FILE), fork_dir.join(WITNESS_FILE)).unwrap();
    let refused = start(&Config { data_dir: fork_dir, ..config }).await.err().expect("refused");
    assert!(
        matches!(refused, ServerError::Open(OpenError::Diverged { .. })),
        "expected a divergence refusal, got {refused}"
    );
    assert!(refused.to_string().contains("not the ones the registry signed"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_witness_is_a_refusal_naming_the_file() {
    let f = Fixture::start().await;
    let (config, _dir) = stop(f).await;
    let path = config.data_dir.join(WITNESS_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    // Both slots: one torn slot is what a crash during a write leaves, and the other is read
    // (registry_server::log::witness's tests).
    for slot in [0, SLOT] {
        bytes[slot + 40] ^= 0x01;
    }
    std::fs::write(&path, bytes).unwrap();
    let refused = start(&config).await.err().expect("refused");
    assert!(matches!(refused, ServerError::Open(OpenError::Witness(_))), "{refused}");
    assert!(refused.to_string().contains(WITNESS_FILE), "{refused}");
    assert_eq!(refused.exit_code(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_witness_is_a_refusal_not_a_fresh_start() {
    let f = Fixture::start().await;
    let (config, _dir) = stop(f).await;
    std::fs::remove_file(config.data_dir.join(WITNESS_FILE)).unwrap();
    let refused = start(&config).await.err().expect("refused");
    assert!(matches!(refused, ServerError::Open(OpenError::Witness(_))), "{refused}");
    assert!(refused.to_string().contains("is missing"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_published_checkpoint_is_witnessed_before_it_is_served() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    for i in 0..5 {
        let answer = f.client.submit(&op, &register(&format!("DE*ABC*E{i}"))).await.unwrap();
        let served = f.client.checkpoint(0).await.unwrap().checkpoint;
        let witnessed = std::fs::read(f.registry.config.data_dir.join(WITNESS_FILE)).unwrap();
        // The witness is at least as new as what was served (a later batch may have moved both).
        let size = |note: &[u8]| -> Option<u64> {
            std::str::from_utf8(note).ok()?.lines().nth(1)?.parse().ok()
        };
        let newest = witnessed.chunks(SLOT).filter_map(size).max().expect("a witnessed note");
        assert!(newest >= size(served.as_bytes()).unwrap(), "{newest} / {served}");
        assert!(newest > answer.position);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_signed_for_one_registry_is_refused_by_another() {
    let a = Fixture::start().await;
    let b = Fixture::start().await;
    assert_ne!(a.origin(), b.origin());
    // The same administrator key administers both (a test instance set up like production).
    let shared = registry_core::keys::P256KeyPair::generate();
    let add = |id: &str| Order::AddOperator {
        operator_id: id.into(),
        name: "Shared".into(),
        public_keys: vec![shared.public_key_pem()],
    };
    a.client.submit(&a.admin, &add("DE*ABC")).await.unwrap();
    b.client.submit(&b.admin, &add("DE*ABC")).await.unwrap();

    let for_a = SignedCommand::sign(command_bytes(&register("DE*ABC*E1")), &a.origin(), &shared);
    let size = b.log_size();
    let refused = b.client.submit_signed(for_a.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Some(Code::InvalidArgument));
    assert_eq!(refused.violations()[0].field, "command.registry");
    assert!(refused.to_string().contains(&a.origin()), "{refused}");
    assert_eq!(b.log_size(), size, "appends nothing");
    // A command that names no registry (the old signature context) is refused as new too.
    let unnamed = SignedCommand::sign_legacy(command_bytes(&register("DE*ABC*E2")), &shared);
    let refused = b.client.submit_signed(unnamed).await.unwrap_err();
    assert_eq!(refused.violations()[0].field, "command.registry");
    // Registry A takes it.
    assert!(a.client.submit_signed(for_a).await.is_ok());
}

/// A log written before commands named their registry holds legacy signatures: it still
/// verifies offline, and a retry of such a command still returns its original result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_with_commands_signed_before_registries_were_named_still_verifies() {
    use registry_core::command::Command;
    use registry_core::lifecycle::Proposal;
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    // As an older registry took it: straight to the writer, past today's edge check.
    let legacy = SignedCommand::sign_legacy(command_bytes(&register("DE*ABC*E1")), &op);
    let command = Command::decode(&legacy.command).unwrap();
    let appended = f
        .registry
        .server
        .appender()
        .append(
            command.request_id,
            legacy.digest(),
            registry_server::machine::Job {
                request_id: command.request_id,
                proposal: Proposal::Signed { envelope: legacy.clone(), command },
            },
        )
        .await
        .expect("appended");
    f.client.submit(&op, &register("DE*ABC*E2")).await.unwrap();

    let retried = f.client.submit_signed(legacy).await.expect("a retry of a logged command");
    assert!(retried.duplicate);
    assert_eq!(retried.position, appended.position);

    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::new(dir.path());
    audit::export(&f.client, &archive, None, &ProgressBar::hidden()).await.unwrap();
    let verified =
        audit::verify(&archive, &key_of(&f.registry.config), None, &ProgressBar::hidden())
            .expect("an old log verifies");
    assert_eq!(verified.checkpoint.size, f.log_size());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_vouches_for_the_readable_view_and_the_manifest() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    for i in 0..3 {
        f.client.submit(&op, &register(&format!("DE*ABC*E{i}"))).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::new(dir.path());
    audit::export(&f.client, &archive, None, &ProgressBar::hidden()).await.unwrap();
    let key = key_of(&f.registry.config);
    let verify = || audit::verify(&archive, &key, None, &ProgressBar::hidden());
    let clean = verify().expect("verifies");
    assert!(clean.warnings.is_empty(), "{:?}", clean.warnings);

    let jsonl = dir.path().join("entries.jsonl");
    let original = std::fs::read_to_string(&jsonl).unwrap();
    // An operator ID changed in the file a person reads.
    let edited = original.replacen("DE*ABC", "DE*XYZ", 1);
    assert_ne!(edited, original);
    std::fs::write(&jsonl, &edited).unwrap();
    let refused = verify().expect_err("an edited entries.jsonl is refused");
    assert!(refused.reason.contains("entries.jsonl line"), "{refused}");
    // A line dropped, or one added.
    let mut lines: Vec<&str> = original.lines().collect();
    let last = lines.pop().unwrap();
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    assert!(verify().is_err(), "a missing line");
    // Lines past the checkpoint (an interrupted export wrote them) are said, not vouched for.
    std::fs::write(&jsonl, format!("{original}{last}\n")).unwrap();
    let extra = verify().expect("verifies");
    assert!(extra.warnings.iter().any(|w| w.contains("NOT verified")), "{:?}", extra.warnings);
    std::fs::write(&jsonl, &original).unwrap();

    let manifest = dir.path().join("archive.json");
    let good = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, good.replace("keyregistry.v1 archive", "something else")).unwrap();
    assert!(verify().unwrap_err().reason.contains("archive.json"));
    std::fs::write(&manifest, &good).unwrap();

    // Another key in the archive's registry-key.pem: verified with the given key, and said.
    let other = registry_core::keys::P256KeyPair::generate();
    std::fs::write(dir.path().join("registry-key.pem"), other.public_key_pem()).unwrap();
    let warned = verify().expect("still verifies with the given key");
    assert_eq!(warned.warnings.len(), 1, "{:?}", warned.warnings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_restored_from_its_archive_answers_the_same_and_a_mirror_accepts_what_follows() {
    use registry_client::{AsOf, KeyTarget, View};
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    let mut retry = None;
    for i in 0..40 {
        let signed = f.client.sign(&op, &register(&format!("DE*ABC*E{i}"))).await.unwrap();
        f.client.submit_signed(signed.clone()).await.unwrap();
        retry = Some(signed);
    }
    // A mirror that followed the registry before the disaster.
    let dir = tempfile::tempdir().unwrap();
    let mirror = Archive::new(&dir.path().join("mirror"));
    audit::export(&f.client, &mirror, None, &ProgressBar::hidden()).await.unwrap();
    let mirrored = f.log_size();
    for i in 40..60 {
        let action = Order::AddOperator {
            operator_id: format!("DE*X{i:02}"),
            name: "later".into(),
            public_keys: vec![registry_core::keys::P256KeyPair::generate().public_key_pem()],
        };
        f.client.submit(&f.admin, &action).await.unwrap();
    }
    let backup = Archive::new(&dir.path().join("backup"));
    audit::export(&f.client, &backup, None, &ProgressBar::hidden()).await.unwrap();
    let size = f.log_size();
    assert!(size > mirrored);
    let queries: Vec<_> = (0..40)
        .map(|i| (KeyTarget::Evse(format!("DE*ABC*E{i}")), t("2026-06-01T00:00:00Z")))
        .collect();
    let before = f.client.check_batch(&queries, AsOf::Size(size), View::Full).await.unwrap();
    let root = f.client.checkpoint(size).await.unwrap().root_hash;

    // The disaster: the data directory is gone; the registry key was kept apart.
    let (config, keep) = stop(f).await;
    let key_file = keep.path().join("registry-key.kept.pem");
    std::fs::copy(config.data_dir.join("registry-key.pem"), &key_file).unwrap();
    std::fs::remove_dir_all(&config.data_dir).unwrap();

    let restored = registry_server::restore::restore(backup.dir(), &config, &key_file)
        .expect("the archive restores");
    assert_eq!((restored.size, restored.root.to_vec()), (size, root.clone()));
    let again = start(&config).await.expect("the restored registry starts");
    let client = RegistryClient::connect(&format!("http://{}", again.local_addr())).await.unwrap();
    assert_eq!(client.checkpoint(0).await.unwrap().root_hash, root, "the same checkpoint root");
    let after = client.check_batch(&queries, AsOf::Size(size), View::Full).await.unwrap();
    assert_eq!(after.results, before.results, "the same answers");
    // The request index came back: a retried command finds its entry.
    assert!(client.submit_signed(retry.unwrap()).await.unwrap().duplicate);
    // New writes continue the same log; the mirror from before checks them with a
    // consistency proof from its own checkpoint.
    client.submit(&op, &register("DE*ABC*E99")).await.expect("writes resume");
    let followed = audit::export(&client, &mirror, None, &ProgressBar::hidden()).await;
    let followed = followed.expect("the mirror accepts the restored registry's checkpoints");
    assert!(followed.size > size);
    audit::verify(&mirror, &key_of(&config), None, &ProgressBar::hidden()).expect("and verifies");
    // A second restore into the same (now used) directory is refused.
    let refused = registry_server::restore::restore(backup.dir(), &config, &key_file);
    assert!(matches!(refused, Err(registry_server::restore::RestoreError::NotEmpty(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_checks_every_entry_and_the_key() {
    let f = Fixture::start().await;
    let op = f.operator("DE*ABC").await;
    for i in 0..5 {
        f.client.submit(&op, &register(&format!("DE*ABC*E{i}"))).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let backup = Archive::new(&dir.path().join("backup"));
    audit::export(&f.client, &backup, None, &ProgressBar::hidden()).await.unwrap();
    let (config, keep) = stop(f).await;
    let key_file = config.data_dir.join("registry-key.pem");
    let target = Config { data_dir: keep.path().join("restored"), ..config.clone() };

    // Another registry's key: the archive's checkpoint does not verify.
    let stranger = keep.path().join("stranger.pem");
    std::fs::write(&stranger, registry_core::keys::P256KeyPair::generate().to_pkcs8_pem()).unwrap();
    let refused = registry_server::restore::restore(backup.dir(), &target, &stranger).unwrap_err();
    assert!(refused.to_string().contains("not signed by this registry key"), "{refused}");

    // A flipped byte in an archived entry is named by its position.
    let bundle = backup.dir().join(registry_core::tiles::tile_path(
        None,
        0,
        registry_core::tiles::width_in(0, 12),
    ));
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes.len() - 5;
    bytes[at] ^= 0x10;
    std::fs::write(&bundle, bytes).unwrap();
    let target = Config { data_dir: keep.path().join("restored2"), ..config };
    let refused = registry_server::restore::restore(backup.dir(), &target, &key_file).unwrap_err();
    assert!(
        matches!(
            refused,
            registry_server::restore::RestoreError::Archive { position: Some(_), .. }
        ),
        "{refused}"
    );
    // What the stopped restore left never starts as a registry.
    let half = start(&target).await.err().expect("a half-restored directory is refused");
    assert!(
        matches!(half, ServerError::Open(OpenError::RolledBack { .. })),
        "expected a rollback refusal, got {half}"
    );
}
