//! Where a registry's bytes go: `registry-server usage` opens a stopped registry's data
//! directory the way the server does, one structure after another, and reports the memory each
//! one added (the process's resident set, before and after) and the disk each kind of record
//! takes (live bytes by a walk over the log, next to the files sled and the snapshot occupy).
//!
//! The memory figures are what loading each structure cost this process, allocator and page
//! cache included; they are measured, not estimated from sizes, so they show what a server
//! holds after start-up. A running server holds the same structures, plus the writer's and the
//! proof builders' copies of the map tree (4 MiB each), the tile cache as it fills, and whatever
//! its requests allocate.

use std::path::Path;

use serde::Serialize;

use crate::config::Config;
use crate::key_cache::KeyCache;
use crate::store::layered::LayeredStore;
use crate::store::sled::SledStore;
use crate::store::snapshot::Snapshot;
use crate::store::{LogStore, StoreError};

/// One structure's memory.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// What was loaded.
    pub part: &'static str,
    /// Resident bytes it added.
    pub bytes: i64,
    /// Records it holds, where that is a meaningful count.
    pub records: Option<u64>,
}

/// One kind of record on disk, or one file.
#[derive(Debug, Clone, Serialize)]
pub struct Disk {
    /// What it is.
    pub part: String,
    /// Records, for live data (none for files).
    pub records: Option<u64>,
    /// Bytes.
    pub bytes: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    /// Entries in the log.
    pub entries: u64,
    /// Key records.
    pub keys: u64,
    /// Memory by structure, in the order the server loads them.
    pub memory: Vec<Memory>,
    /// Resident bytes of the process at the end.
    pub resident_bytes: u64,
    /// Live bytes by kind of record (what the data is).
    pub live: Vec<Disk>,
    /// Files of the data directory (what it costs).
    pub files: Vec<Disk>,
}

impl Usage {
    /// All files of the data directory together.
    pub fn file_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// The resident set of this process, from `/proc/self/statm` (0 where there is none).
fn resident() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .unwrap_or(0);
    pages * rustix::param::page_size() as u64
}

/// Runs `load` and records the resident bytes it added.
fn measured<T>(
    memory: &mut Vec<Memory>,
    part: &'static str,
    load: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let before = resident();
    let value = load()?;
    memory.push(Memory { part, bytes: resident() as i64 - before as i64, records: None });
    Ok(value)
}

/// The request index's row: it is kept with the projections, in their snapshot.
pub const REQUEST_INDEX: &str = "request index (in projections.snap)";

/// Measures the registry in `config.data_dir` (which no server may have open).
pub fn measure(config: &Config) -> Result<Usage, StoreError> {
    let mut memory = Vec::new();
    let dir = &config.data_dir;
    let options = crate::store::sled::SledOptions::with_cache_mib(config.cache_mib);
    let log =
        measured(&mut memory, "sled, opened", || SledStore::open(&dir.join("log"), &options))?;
    let live = measured(
        &mut memory,
        "sled's page cache after reading every record (at most cache_mib)",
        || log.live_bytes(),
    )?;
    let snapshot_path = dir.join(crate::server::SNAPSHOT_FILE);
    let snapshot = measured(
        &mut memory,
        "projection snapshot, mapped (pages handed back after the checks)",
        || Snapshot::read(&snapshot_path),
    )?;
    if let Some(last) = memory.last_mut() {
        last.records = snapshot.as_ref().map(|s| s.len() as u64);
    }
    let store: std::sync::Arc<dyn LogStore> = std::sync::Arc::new(LayeredStore::with_snapshot(
        std::sync::Arc::new(log),
        &snapshot_path,
        Ok(snapshot),
        config.snapshot_min_records,
    )?);
    let cache = KeyCache::new();
    let before = resident();
    let mut keys_done = before;
    crate::projection::fill_cache_observed(store.as_ref(), &cache, &|| false, &mut || {
        keys_done = resident();
    })?;
    let after = resident();
    memory.push(Memory {
        part: "decoded key records (key cache)",
        bytes: keys_done as i64 - before as i64,
        records: Some(cache.len() as u64),
    });
    memory.push(Memory {
        part: "identifier indexes, decoded (key cache)",
        bytes: after as i64 - keys_done as i64,
        records: Some(cache.groups() as u64),
    });
    // A start only hashes the buckets; they are decoded in the background after it.
    let buckets =
        measured(&mut memory, "map buckets, hashed", || crate::map::MapBuckets::load(&store))?;
    measured(&mut memory, "map buckets, decoded (in the background after a start)", || {
        buckets.decode_now();
        Ok(())
    })?;
    measured(&mut memory, "map tree of bucket hashes", || Ok(buckets.tree()))?;
    let entries = store.size()?;
    let mut live: Vec<Disk> = live
        .into_iter()
        .map(|l| Disk {
            part: l.kind.to_string(),
            records: Some(l.records),
            bytes: l.key_bytes + l.value_bytes,
        })
        .collect();
    let (mut records, mut bytes) = (0, 0);
    store.for_each(crate::store::REQUESTS, &mut |k, v| {
        records += 1;
        bytes += (k.len() + v.len()) as u64;
        Ok(())
    })?;
    live.push(Disk { part: REQUEST_INDEX.to_string(), records: Some(records), bytes });
    Ok(Usage {
        entries,
        keys: cache.len() as u64,
        memory,
        resident_bytes: resident(),
        live,
        files: files(dir)?,
    })
}

/// The data directory's files by top-level name, sled's files one by one.
fn files(dir: &Path) -> Result<Vec<Disk>, StoreError> {
    fn size(path: &Path) -> std::io::Result<u64> {
        let meta = std::fs::symlink_metadata(path)?;
        if !meta.is_dir() {
            return Ok(meta.len());
        }
        let mut total = 0;
        for entry in std::fs::read_dir(path)? {
            total += size(&entry?.path())?;
        }
        Ok(total)
    }
    let mut out = Vec::new();
    let mut add = |base: &Path, prefix: &str| -> std::io::Result<()> {
        let mut names: Vec<_> = std::fs::read_dir(base)?.collect::<Result<_, _>>()?;
        names.sort_by_key(|e| e.file_name());
        for entry in names {
            let name = entry.file_name().to_string_lossy().into_owned();
            if prefix.is_empty() && name == "log" {
                continue;
            }
            out.push(Disk {
                part: format!("{prefix}{name}"),
                records: None,
                bytes: size(&entry.path())?,
            });
        }
        Ok(())
    };
    let io = |e: std::io::Error| StoreError::Io(format!("{}: {e}", dir.display()));
    add(&dir.join("log"), "log/").map_err(io)?;
    add(dir, "").map_err(io)?;
    Ok(out)
}

/// The report as a table for people.
pub fn render(u: &Usage) -> String {
    use std::fmt::Write as _;
    let per = |bytes: f64| if u.keys == 0 { 0.0 } else { bytes / u.keys as f64 };
    let mib = |b: f64| b / (1u64 << 20) as f64;
    let mut out = String::new();
    let head = |out: &mut String, title: &str| {
        let _ = writeln!(out, "{title:<66} {:>8} {:>10} {:>10}", "MiB", "bytes/key", "records");
    };
    let row = |out: &mut String, part: &str, bytes: f64, records: Option<u64>| {
        let records = records.map(|r| r.to_string()).unwrap_or_default();
        let _ =
            writeln!(out, "  {part:<64} {:>8.1} {:>10.0} {records:>10}", mib(bytes), per(bytes));
    };
    let _ = writeln!(out, "{} keys, {} entries\n", u.keys, u.entries);
    head(&mut out, "memory, as each structure was loaded");
    for m in &u.memory {
        row(&mut out, m.part, m.bytes as f64, m.records);
    }
    row(&mut out, "resident at the end", u.resident_bytes as f64, None);
    out.push('\n');
    head(&mut out, "live data on disk");
    for d in &u.live {
        row(&mut out, &d.part, d.bytes as f64, d.records);
    }
    let live: u64 = u.live.iter().map(|l| l.bytes).sum();
    row(&mut out, "together", live as f64, None);
    out.push('\n');
    head(&mut out, "files");
    for f in &u.files {
        row(&mut out, &f.part, f.bytes as f64, None);
    }
    row(&mut out, "together", u.file_bytes() as f64, None);
    out
}
