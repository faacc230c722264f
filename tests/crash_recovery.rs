//! Crash test: a child process appends from many concurrent tasks and is killed with SIGKILL at
//! random moments, again and again on the same data directory. After every kill the log must
//! reopen (its chain re-verified), hold every entry the child was told was durable at the
//! position it was told, have no gaps, and sign a checkpoint that verifies over its entries.
//!
//! `REGISTRY_CRASH_ITERATIONS` sets the number of kills (default 20) for longer runs.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use registry_core::checkpoint::Checkpoint;
use registry_core::entry::ChainVerifier;
use registry_core::merkle::Frontier;
use registry_core::note::NoteSigner;
use registry_server::config::Config;
use registry_server::log::{Log, LogOptions, RawBodies, system_clock};
use registry_server::{registry_key, server};

fn iterations() -> usize {
    std::env::var("REGISTRY_CRASH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

/// Runs the child until it has acknowledged at least one append, waits a random while longer,
/// kills it, and returns every `(position, request id)` it acknowledged.
fn run_and_kill(dir: &std::path::Path) -> Vec<(u64, uuid::Uuid)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
        .arg(dir)
        .arg("32")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("crash-writer starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let reader = std::thread::spawn({
        let acked = acked.clone();
        move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // A line cut off by the kill has no request ID that parses: it was never acked
                // as far as we can tell, and is skipped.
                let mut parts = line.split(' ');
                if let (Some(p), Some(id)) = (parts.next(), parts.next())
                    && let (Ok(p), Ok(id)) = (p.parse::<u64>(), uuid::Uuid::parse_str(id))
                {
                    acked.lock().unwrap().push((p, id));
                }
            }
        }
    });
    let started = Instant::now();
    while acked.lock().unwrap().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "the child never acknowledged");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the child exited on its own: {status}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(rand::rng().random_range(5..250)));
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    reader.join().expect("reader thread");
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

#[test]
fn acknowledged_appends_survive_sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    let mut all_acked: Vec<(u64, uuid::Uuid)> = Vec::new();
    let runs = iterations();
    for run in 0..runs {
        all_acked.extend(run_and_kill(dir.path()));

        // Reopen exactly as the server would: this re-verifies the chain from the last point.
        let key = registry_key::load_or_create(dir.path()).unwrap();
        let store = server::open_store(&config).unwrap();
        let signer = NoteSigner::new("crash.test/log", key.key).unwrap();
        let verifier = signer.verifier();
        let log =
            Log::open(store.clone(), RawBodies, signer, LogOptions::default(), system_clock())
                .unwrap_or_else(|e| {
                    panic!("run {run}: the log does not reopen after SIGKILL: {e}")
                });
        let reader = log.reader();
        let size = reader.head().size;

        // Gap-free, chained from position 0, and the signed checkpoint matches the entries.
        let mut chain = ChainVerifier::new();
        let mut frontier = Frontier::new();
        let mut request_ids = Vec::with_capacity(size as usize);
        let mut next = 0;
        while next < size {
            for (pos, bytes) in reader.entries(next, size, 4096).unwrap() {
                assert_eq!(pos, next, "run {run}: gap at {next}");
                frontier.push(chain.push(&bytes).unwrap_or_else(|e| panic!("run {run}: {e}")));
                use prost::Message;
                let entry = registry_proto::pb::LogEntry::decode(bytes.as_slice()).unwrap();
                request_ids.push(entry.request_id);
                next += 1;
            }
        }
        let cp = Checkpoint::open(&reader.head().checkpoint, &verifier).unwrap();
        assert_eq!((cp.size, cp.root), (size, frontier.root()), "run {run}");

        // Every acknowledged append is there, where the child was told it is.
        for (pos, id) in &all_acked {
            assert!(*pos < size, "run {run}: acknowledged position {pos} lost (size {size})");
            assert_eq!(request_ids[*pos as usize], id.to_string(), "run {run}: position {pos}");
        }
        eprintln!("run {run}: log size {size}, {} appends acknowledged so far", all_acked.len());
        drop(reader);
        log.close().expect("a clean stop");
        drop(store);
    }
    assert!(all_acked.len() >= runs, "every run acknowledged something");
}
