//! Durable appends per second with group commit, next to the ceiling of the same machine.
//!
//! 1. The registry's log on sled: 64 concurrent writers append entries of a realistic size
//!    through the one writer; every append is acknowledged only after flush + fsync.
//! 2. The ceiling, measured in the same run: a bare loop of sled batch inserts + flush + fsync,
//!    with the batch size the writer reached (mean) and entries of the same size.
//!
//! `cargo bench -p registry-server --bench append` (`BENCH_SECS`, `BENCH_WRITERS`,
//! `BENCH_DIR` to change duration, concurrency and the disk used).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prost::Message;
use registry_core::keys::P256KeyPair;
use registry_core::note::NoteSigner;
use registry_server::log::{Log, LogOptions, RawBodies, system_clock};
use registry_server::store::sled::{SledOptions, SledStore};
use registry_server::store::{
    Keyspace, LogStore, Record, RequestRecord, StoreError, Visitor, WriteBatch,
};
use sha2::{Digest, Sha256};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A body the size of a signed registration (request ID, a ~500-byte signed command).
fn body(id: uuid::Uuid) -> Vec<u8> {
    registry_proto::pb::LogEntry {
        request_id: id.to_string(),
        command: Some(registry_proto::pb::SignedCommand {
            command: id.as_bytes().repeat(24),
            signer_key_id: vec![7; 32],
            signature: vec![9; 72],
            registry: String::new(),
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn bench_dir() -> tempfile::TempDir {
    match std::env::var("BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).expect("BENCH_DIR is writable"),
        Err(_) => tempfile::tempdir().expect("temporary directory"),
    }
}

/// Measures how long the writer spends in the store's write and sync.
struct Timed {
    inner: SledStore,
    write_ns: AtomicU64,
    sync_ns: AtomicU64,
}

impl LogStore for Timed {
    fn size(&self) -> Result<u64, StoreError> {
        self.inner.size()
    }
    fn entry(&self, p: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.entry(p)
    }
    fn entries(&self, s: u64, e: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.inner.entries(s, e)
    }
    fn node(&self, l: u32, i: u64) -> Result<Option<[u8; 32]>, StoreError> {
        self.inner.node(l, i)
    }
    fn request(&self, id: &uuid::Uuid) -> Result<Option<RequestRecord>, StoreError> {
        self.inner.request(id)
    }
    fn meta(&self, k: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.meta(k)
    }
    fn get(&self, ks: Keyspace, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(ks, k)
    }
    fn scan_prefix(&self, ks: Keyspace, p: &[u8]) -> Result<Vec<Record>, StoreError> {
        self.inner.scan_prefix(ks, p)
    }
    fn for_each(&self, ks: Keyspace, visit: &mut Visitor<'_>) -> Result<(), StoreError> {
        self.inner.for_each(ks, visit)
    }
    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = self.inner.write(batch);
        self.write_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        r
    }
    fn sync(&self) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = self.inner.sync();
        self.sync_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        r
    }
    fn clear_projections(&self, ks: &[Keyspace]) -> Result<(), StoreError> {
        self.inner.clear_projections(ks)
    }
    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.size_on_disk()
    }
}

/// The registry log's group commit; with `witnessed`, as in production, every published
/// checkpoint is first written to its witness file (one more fsync, a rename and a directory
/// fsync per group commit).
fn group_commit(secs: u64, writers: u64, witnessed: bool) -> (f64, f64, u64, usize) {
    let dir = bench_dir();
    let witness_dir = bench_dir();
    let store = Arc::new(Timed {
        inner: SledStore::open(dir.path(), &SledOptions::default()).unwrap(),
        write_ns: AtomicU64::new(0),
        sync_ns: AtomicU64::new(0),
    });
    let timed = store.clone();
    let signer = NoteSigner::new("bench/log", P256KeyPair::generate()).unwrap();
    let options = LogOptions {
        witness: witnessed.then(|| {
            registry_server::log::Witness::new(witness_dir.path().join("checkpoint.signed"))
        }),
        ..LogOptions::default()
    };
    let log = Log::open(store, RawBodies, signer, options, system_clock()).unwrap();
    let appender = log.appender();
    let entry_size = body(uuid::Uuid::new_v4()).len() + 60;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let (a, stop, done) = (appender.clone(), stop.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    // As registry clients do: time-ordered IDs keep the request index sequential.
                    let id = uuid::Uuid::now_v7();
                    let b = body(id);
                    let digest: [u8; 32] = Sha256::digest(&b).into();
                    a.append(id, digest, b).await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let stats = appender.stats();
    let per_batch =
        |ns: &AtomicU64| ns.load(Ordering::Relaxed) as f64 / 1e3 / stats.batches.max(1) as f64;
    println!(
        "  per group commit: {:.0} us writing, {:.0} us syncing, {:.0} us in all",
        per_batch(&timed.write_ns),
        per_batch(&timed.sync_ns),
        elapsed * 1e6 / stats.batches.max(1) as f64
    );
    drop(appender);
    log.close().unwrap();
    let rate = done.load(Ordering::Relaxed) as f64 / elapsed;
    let mean = stats.entries as f64 / stats.batches.max(1) as f64;
    (rate, mean, stats.largest, entry_size)
}

/// The bare loop. With `with_request_keys`, each entry also writes a time-ordered 16-byte key, as
/// the registry's request index does: the same keys per entry as the log, without the log.
fn bare_sled(secs: u64, batch: usize, entry_size: usize, with_request_keys: bool) -> f64 {
    let dir = bench_dir();
    let db = sled::Config::new().path(dir.path()).flush_every_ms(None).open().unwrap();
    let tree = db.open_tree("entries").unwrap();
    let requests_tree = db.open_tree("requests").unwrap();
    let file = std::fs::File::open(dir.path().join("db")).unwrap();
    let value = vec![0x5au8; entry_size];
    let started = Instant::now();
    let mut n: u64 = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        let mut b = sled::Batch::default();
        let mut requests = sled::Batch::default();
        for _ in 0..batch {
            b.insert(&n.to_be_bytes(), value.as_slice());
            if with_request_keys {
                requests.insert(uuid::Uuid::now_v7().as_bytes(), &[0u8; 40][..]);
            }
            n += 1;
        }
        if with_request_keys {
            use sled::Transactional;
            (&tree, &requests_tree)
                .transaction(|(t, r)| {
                    t.apply_batch(&b)?;
                    r.apply_batch(&requests)?;
                    Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
                })
                .unwrap();
        } else {
            tree.apply_batch(b).unwrap();
        }
        db.flush().unwrap();
        file.sync_all().unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let secs = env_u64("BENCH_SECS", 5);
    let writers = env_u64("BENCH_WRITERS", 64);
    let (rate, mean, largest, entry_size) = group_commit(secs, writers, true);
    let (unwitnessed, unwitnessed_mean, _, _) = group_commit(secs, writers, false);
    let batch = mean.round().max(1.0) as usize;
    let one_key = bare_sled(secs, batch, entry_size, false);
    let two_keys = bare_sled(secs, batch, entry_size, true);
    println!("durable appends, group commit, {writers} writers, {secs} s");
    println!(
        "  registry log:          {rate:>8.0} appends/s  (mean batch {mean:.1}, largest {largest}, entry ~{entry_size} B)"
    );
    println!(
        "  without the witness:   {unwitnessed:>8.0} appends/s  (mean batch {unwitnessed_mean:.1}; the witness costs {:.0} %)",
        (1.0 - rate / unwitnessed) * 100.0
    );
    println!(
        "  bare sled, 1 key:      {one_key:>8.0} entries/s  (batch {batch}, insert + flush + fsync; ratio {:.2})",
        rate / one_key
    );
    println!(
        "  bare sled, same keys:  {two_keys:>8.0} entries/s  (entry + request key each; ratio {:.2})",
        rate / two_keys
    );
}
