//! A real full disk: the data directory on a small tmpfs that the test mounts (CI runs as root;
//! where mounting is refused the test says so and checks nothing). Writers are told the disk is
//! full, reads are answered and `SERVING` throughout, nothing acknowledged is lost, no temporary
//! file is left, and after space is freed a restart takes writes again.

use std::path::{Path, PathBuf};
use std::process::Command;

use registry_client::{AsOf, KeySubmission, KeyTarget, Order, RegistryClient, View};
use registry_core::keys::P256KeyPair;
use registry_proto::pb;
use registry_server::config::Config;
use registry_tests::{meter_key, spki_hex, t};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn small(at: &Path, mib: u64) -> Option<Self> {
        std::fs::create_dir_all(at).ok()?;
        let size = format!("size={mib}m");
        let status =
            Command::new("mount").args(["-t", "tmpfs", "-o", &size, "tmpfs"]).arg(at).status();
        match status {
            Ok(s) if s.success() => Some(Mount(at.to_path_buf())),
            other => {
                eprintln!(
                    "SKIPPED: cannot mount a small tmpfs here ({other:?}); the disk-full test \
                     needs root and mount(8)"
                );
                None
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn temporary_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(temporary_files(&p));
        } else if p.to_string_lossy().ends_with(".tmp") {
            out.push(p);
        }
    }
    out
}

/// Fills the file system of `dir` until `keep` bytes are left.
fn fill(dir: &Path, keep: u64) -> PathBuf {
    let filler = dir.join("filler");
    let free = {
        let out = Command::new("df").args(["-B1", "--output=avail"]).arg(dir).output().unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let len = free.saturating_sub(keep);
    std::fs::write(&filler, vec![0u8; len as usize]).unwrap();
    filler
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_full_disk_writers_are_told_reads_go_on_and_a_restart_after_freeing_space_writes_again()
 {
    let scratch = tempfile::tempdir().unwrap();
    let Some(mount) = Mount::small(&scratch.path().join("fs"), 48) else { return };
    let data = mount.0.join("data");
    let admin = P256KeyPair::generate();
    let admin_file = scratch.path().join("admin.pub.pem");
    std::fs::write(&admin_file, admin.public_key_pem()).unwrap();
    let config = Config {
        admin_keys: vec![admin_file],
        // Small enough that cuts happen while the disk fills.
        snapshot_min_records: 200,
        cache_mib: 16,
        emergency_ballast_mib: 4,
        ..registry_tests::test_config(&data)
    };
    let server =
        registry_server::registry::start_registry(&config, registry_server::log::system_clock())
            .await
            .unwrap();
    let client = RegistryClient::connect(&format!("http://{}", server.local_addr())).await.unwrap();
    let op = P256KeyPair::generate();
    client
        .submit(
            &admin,
            &Order::AddOperator {
                operator_id: "DE*FUL".into(),
                name: "Full".into(),
                public_keys: vec![op.public_key_pem()],
            },
        )
        .await
        .unwrap();
    let filler = fill(&mount.0, 6 << 20);

    let mut acked = Vec::new();
    let mut refusal = None;
    for i in 0..200_000u64 {
        let evse = format!("DE*FUL*E{i}");
        let (action, fingerprint) = register(&evse);
        match client.submit(&op, &action).await {
            Ok(_) => acked.push((evse, fingerprint)),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let refusal = refusal.expect("the disk filled up");
    assert_eq!(refusal.code(), Some(Code::ResourceExhausted), "{refusal}");
    assert!(refusal.to_string().contains("disk is full"), "{refusal}");
    assert!(!acked.is_empty());
    // The next writer hears the same, at once.
    let again = client.submit(&op, &register("DE*FUL*EX").0).await.unwrap_err();
    assert_eq!(again.code(), Some(Code::ResourceExhausted), "{again}");

    // Reads go on, and say so.
    let h = server.health();
    assert_eq!(h.get("keyregistry.v1.CommandService"), Some(ServingStatus::NotServing));
    assert_eq!(h.get("keyregistry.v1.LookupService"), Some(ServingStatus::Serving));
    assert_eq!(h.get("keyregistry.v1.AuditService"), Some(ServingStatus::Serving));
    assert_eq!(h.get(""), Some(ServingStatus::Serving));
    let answered = answers(&client, &acked).await;
    assert_eq!(answered, acked.len(), "every acknowledged registration is answered");
    assert!(temporary_files(&data).is_empty(), "{:?}", temporary_files(&data));

    drop(client);
    server.shutdown();
    let stopped = server.wait().await;
    let e = stopped.expect_err("a stop after the disk filled reports it");
    assert_eq!(e.exit_code(), 4, "{e}");
    assert!(temporary_files(&data).is_empty(), "{:?}", temporary_files(&data));

    // Started again on the still full disk (twice: the ballast's room must not go to
    // writes), it serves reads and refuses commands.
    for _ in 0..2 {
        let server = registry_server::registry::start_registry(
            &config,
            registry_server::log::system_clock(),
        )
        .await
        .expect("starts on a full disk");
        let client =
            RegistryClient::connect(&format!("http://{}", server.local_addr())).await.unwrap();
        assert_eq!(answers(&client, &acked).await, acked.len());
        let h = server.health();
        assert_eq!(h.get("keyregistry.v1.LookupService"), Some(ServingStatus::Serving));
        assert_eq!(h.get("keyregistry.v1.CommandService"), Some(ServingStatus::NotServing));
        let refused = client.submit(&op, &register("DE*FUL*ERO").0).await.unwrap_err();
        assert_eq!(refused.code(), Some(Code::ResourceExhausted), "{refused}");
        drop(client);
        server.shutdown();
        let stop = server.wait().await.expect_err("a read-only stop is not a clean one");
        assert_eq!(stop.exit_code(), 4);
        assert!(temporary_files(&data).is_empty(), "{:?}", temporary_files(&data));
    }

    // Space comes back; a restart recovers what was durable and writes again.
    std::fs::remove_file(filler).unwrap();
    let server =
        registry_server::registry::start_registry(&config, registry_server::log::system_clock())
            .await
            .expect("restarts once there is space");
    let client = RegistryClient::connect(&format!("http://{}", server.local_addr())).await.unwrap();
    assert_eq!(answers(&client, &acked).await, acked.len());
    client
        .submit(&op, &register("DE*FUL*EAFTER").0)
        .await
        .expect("writes resume after the restart");
    drop(client);
    server.shutdown();
    server.wait().await.unwrap();
}

/// A registration of a new key on `evse`, and the key's fingerprint.
fn register(evse: &str) -> (Order, String) {
    let meter = meter_key();
    let action = Order::Register {
        key: KeySubmission::new(spki_hex(&meter)),
        evse_ids: vec![evse.into()],
        effective_at: Some(t("2026-01-01T00:00:00Z")),
    };
    (action, meter.fingerprint_hex())
}

/// How many of `acked` the registry answers with their key (VALID, or PENDING where the disk
/// filled before the confirmation was written).
async fn answers(client: &RegistryClient, acked: &[(String, String)]) -> usize {
    let at = t("2026-06-01T00:00:00Z");
    let mut good = 0;
    for chunk in acked.chunks(5_000) {
        let queries: Vec<_> = chunk.iter().map(|(e, _)| (KeyTarget::Evse(e.clone()), at)).collect();
        let r = client.check_batch(&queries, AsOf::Head, View::Basic).await.unwrap();
        for ((_, fp), v) in chunk.iter().zip(r.results) {
            let verdict_ok =
                v.verdict == pb::Verdict::Valid as i32 || v.verdict == pb::Verdict::Pending as i32;
            if verdict_ok && &v.fingerprint == fp {
                good += 1;
            }
        }
    }
    good
}
