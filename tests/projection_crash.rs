//! Crash test for the projections, which live in memory and reach the disk only as snapshots:
//! a real registry (child process, snapshots cut every few dozen records) takes registrations
//! from concurrent clients and is killed with SIGKILL at a random moment, again and again on
//! the same data directory. After every kill the restarted registry must know every
//! registration it acknowledged, and the projections it rebuilt from its last snapshot plus the
//! log after it must equal, record for record, the projections a full rebuild derives from the
//! log alone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use registry_client::{AsOf, KeySubmission, KeyTarget, Order, RegistryClient};
use registry_core::keys::P256KeyPair;
use registry_server::config::Config;
use registry_server::projection::{self, KEYSPACES};
use registry_server::store::LogStore;
use registry_server::store::layered::leaf_at;
use registry_server::store::snapshot::Snapshot;
use registry_tests::{ChildRegistry, meter_key, spki_hex, t, verdict_name};

const RUNS: usize = 4;
const SNAPSHOT_MIN_RECORDS: &str = "40";

fn start_child(dir: &std::path::Path, admin: &std::path::Path) -> ChildRegistry {
    let args = [dir.as_os_str(), admin.as_os_str(), std::ffi::OsStr::new(SNAPSHOT_MIN_RECORDS)];
    ChildRegistry::start(env!("CARGO_BIN_EXE_crash-registry"), &args)
}

/// Every record of every projection, in order.
fn dump(store: &dyn LogStore) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for ks in KEYSPACES {
        store
            .for_each(*ks, &mut |k, v| {
                out.push((ks.0, k.to_vec(), v.to_vec()));
                Ok(())
            })
            .expect("walk");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_from_a_snapshot_and_the_log_after_it_equal_a_full_rebuild_after_sigkill() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let admin = P256KeyPair::generate();
    let admin_file = dir.path().join("admin.pub.pem");
    std::fs::write(&admin_file, admin.public_key_pem()).expect("admin key file");
    let config =
        Config { admin_keys: vec![admin_file.clone()], ..registry_tests::test_config(&data) };
    let operator = P256KeyPair::generate();
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut replayed_after_a_snapshot = 0;

    for run in 0..RUNS {
        let size_at_start = if run == 0 {
            0
        } else {
            let store = registry_server::server::open_store(&config).expect("store opens");
            store.size().unwrap()
        };
        let mut child = start_child(&data, &admin_file);
        let url = child.url.clone();
        let client = RegistryClient::connect(&url).await.expect("client connects");
        if run == 0 {
            client
                .submit(
                    &admin,
                    &Order::AddOperator {
                        operator_id: "DE*ABC".into(),
                        name: "Operator DE*ABC".into(),
                        public_keys: vec![operator.public_key_pem()],
                    },
                )
                .await
                .expect("operator added");
        }
        let mut tasks = Vec::new();
        for task in 0..8 {
            let (client, operator, acked) = (client.clone(), operator.clone(), acked.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let evse = format!("DE*ABC*E{run}T{task}N{i}");
                    let meter = meter_key();
                    let action = Order::Register {
                        key: KeySubmission::new(spki_hex(&meter)),
                        evse_ids: vec![evse.clone()],
                        effective_at: Some(t("2026-01-01T00:00:00Z")),
                    };
                    match client.submit(&operator, &action).await {
                        Ok(_) => acked.lock().unwrap().push((evse, meter.fingerprint_hex())),
                        Err(_) => return, // the server is gone
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(400..1500))).await;
        child.kill();
        for task in tasks {
            task.await.expect("client task");
        }

        // What the restart starts from: the last snapshot, which must describe a durable
        // prefix of this log, and the log after it.
        {
            let store = registry_server::server::open_store(&config).expect("store opens");
            let size = store.size().unwrap();
            let file = data.join(registry_server::server::SNAPSHOT_FILE);
            // None: killed before the first cut (every later run has the last clean stop's).
            let cut = match Snapshot::read(&file).expect("a readable snapshot") {
                Some(snapshot) => {
                    let at = snapshot.size();
                    assert!(at <= size, "run {run}: snapshot at {at} beyond the log ({size})");
                    assert_eq!(
                        snapshot.last_leaf(),
                        leaf_at(store.as_ref(), at).unwrap(),
                        "run {run}: the snapshot was cut from another log"
                    );
                    at
                }
                None => 0,
            };
            assert_eq!(store.projected_size().unwrap(), cut, "run {run}");
            if cut > size_at_start && cut < size {
                replayed_after_a_snapshot += 1;
            }
        }

        let registry = registry_server::registry::start_registry(
            &config,
            registry_server::log::system_clock(),
        )
        .await
        .unwrap_or_else(|e| panic!("run {run}: the registry does not restart: {e}"));
        let client = RegistryClient::connect(&format!("http://{}", registry.local_addr()))
            .await
            .expect("client connects");
        let acked_now = acked.lock().unwrap().clone();
        for (evse, fingerprint) in &acked_now {
            let v = client
                .check(&KeyTarget::Evse(evse.clone()), None, t("2026-06-01T00:00:00Z"), AsOf::Head)
                .await
                .expect("check answered")
                .validity
                .expect("a validity");
            assert_eq!(
                (verdict_name(&v), v.fingerprint.as_str()),
                ("VALID", fingerprint.as_str()),
                "run {run}: acknowledged registration on {evse}"
            );
        }
        drop(client);
        registry.shutdown();
        registry.wait().await.expect("clean stop");

        // The projections as the restart derived them (and the clean stop wrote) against a
        // full rebuild from the log.
        let store = registry_server::server::open_store(&config).expect("store opens");
        assert_eq!(store.projected_size().unwrap(), store.size().unwrap(), "run {run}");
        let derived = dump(store.as_ref());
        projection::rebuild(store.as_ref()).expect("rebuild");
        let rebuilt = dump(store.as_ref());
        assert_eq!(derived.len(), rebuilt.len(), "run {run}: record count");
        assert!(derived == rebuilt, "run {run}: the replayed projections differ from a rebuild");
        eprintln!("run {run}: {} registrations acknowledged so far", acked_now.len());
    }
    assert!(
        replayed_after_a_snapshot > 0,
        "no run restarted from a snapshot cut while it ran, with entries after it: the test \
         proved less than it says"
    );
}
