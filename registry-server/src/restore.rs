//! Restoring a registry from an audit archive: the backup every operator and every mirror
//! already has (`registry audit export` / `follow`).
//!
//! [`restore`] re-imports every archived entry into a new data directory, checking it exactly
//! as `registry audit verify` does (chain, command signatures against the keys in force at each
//! point, events re-derived by the rules, back-links, Merkle and map roots against the archive's
//! checkpoint, which must be signed by the registry key given). It rebuilds the request index
//! (so that retries of archived commands still find their entries), the Merkle nodes and the
//! projections, and records the archive's checkpoint as the witness. The registry then starts at
//! the archive's size, and its next checkpoints are consistent with every checkpoint it ever
//! signed up to there: a mirror that followed the old server accepts them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use registry_core::checkpoint::Checkpoint;
use registry_core::keys::P256KeyPair;
use registry_core::merkle::{self, Frontier, Hash};
use registry_core::note::NoteVerifier;
use registry_core::replay::{Replayer, Step};
use registry_core::tiles;

use crate::config::Config;
use crate::log::witness::{WITNESS_FILE, Witness};
use crate::registry_key;
use crate::store::layered::LayeredStore;
use crate::store::sled::SledStore;
use crate::store::{LogStore, StoreError, WriteBatch};

/// Bundles (of 256 entries) written to the store per batch.
const BUNDLES_PER_BATCH: u64 = 16;

/// Why a restore stopped. Nothing in the new data directory is to be used then.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The target must be a new (or empty) directory.
    #[error("{0} is not empty: a restore writes a new data directory")]
    NotEmpty(PathBuf),
    /// The registry key file.
    #[error("registry key {path}: {why}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The archive cannot be read or does not verify.
    #[error("the archive {}: {}{why}", dir.display(), position.map(|p| format!("entry {p}: ")).unwrap_or_default())]
    Archive {
        /// The archive directory.
        dir: PathBuf,
        /// The first bad entry, when one is to blame.
        position: Option<u64>,
        /// What is wrong.
        why: String,
    },
    /// The new store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The projections could not be rebuilt.
    #[error("rebuilding the projections: {0}")]
    Rebuild(#[from] crate::projection::RebuildError),
    /// A file of the new data directory.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What was restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The registry's origin.
    pub origin: String,
    /// Entries restored: the archive's checkpoint size.
    pub size: u64,
    /// The Merkle root at that size.
    pub root: Hash,
}

/// Restores the archive in `archive` into `config.data_dir`, which must not exist yet or be
/// empty, with the registry's private key from `key_file`. See the module documentation.
pub fn restore(archive: &Path, config: &Config, key_file: &Path) -> Result<Restored, RestoreError> {
    let data_dir = &config.data_dir;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RestoreError::Io { path, source }
    };
    if std::fs::read_dir(data_dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(RestoreError::NotEmpty(data_dir.clone()));
    }
    let key_error = |why: String| RestoreError::Key { path: key_file.to_path_buf(), why };
    let pem = std::fs::read_to_string(key_file).map_err(|e| key_error(e.to_string()))?;
    let key = P256KeyPair::from_pkcs8_pem(&pem).map_err(|e| key_error(e.to_string()))?;
    let bad = |position: Option<u64>, why: String| RestoreError::Archive {
        dir: archive.to_path_buf(),
        position,
        why,
    };
    let text = std::fs::read_to_string(archive.join("checkpoint"))
        .map_err(|e| bad(None, format!("checkpoint: {e}")))?;
    let origin = text.lines().next().unwrap_or_default().to_string();
    let checkpoint = NoteVerifier::new(&origin, key.public_key_der())
        .map_err(|e| e.to_string())
        .and_then(|v| Checkpoint::open(&text, &v).map_err(|e| e.to_string()))
        .map_err(|e| {
            bad(None, format!("its checkpoint is not signed by this registry key: {e}"))
        })?;

    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    // The witness first: a restore that stops half-way (a bad entry, a kill) leaves a directory
    // that refuses to start, as short of what the registry signed, instead of one that starts
    // and signs a second history under positions the archive's checkpoint covers.
    let witness = data_dir.join(WITNESS_FILE);
    Witness::new(&witness).record(&text).map_err(io(&witness))?;
    registry_key::write_private_key(&data_dir.join(registry_key::KEY_FILE), &pem)
        .map_err(|e| key_error(e.to_string()))?;
    let log = Arc::new(SledStore::open(
        &data_dir.join("log"),
        &crate::store::sled::SledOptions::with_cache_mib(config.cache_mib),
    )?);
    let size = checkpoint.size;
    let mut replayer = Replayer::for_registry(&origin);
    let mut frontier = Frontier::new();
    let bundles = size.div_ceil(tiles::WIDTH);
    let mut n = 0;
    while n < bundles {
        let mut batch = WriteBatch::default();
        let mut entries = Vec::new();
        for bundle in n..(n + BUNDLES_PER_BATCH).min(bundles) {
            let width = tiles::width_in(bundle, size);
            let path = archive.join(tiles::tile_path(None, bundle, width));
            let bytes =
                std::fs::read(&path).map_err(|e| bad(None, format!("{}: {e}", path.display())))?;
            let (read, broken) = tiles::decode_bundle(&bytes, width);
            if let Some(b) = broken {
                return Err(bad(Some(bundle * tiles::WIDTH + b.index), b.reason));
            }
            entries.extend(read);
        }
        let first = replayer.size();
        match replayer.push_all(&entries) {
            Ok(Step::Ok) => {}
            Ok(Step::Break(b)) => {
                return Err(bad(
                    Some(b.position),
                    "its link to the previous entry is broken".into(),
                ));
            }
            Err(e) => return Err(bad(e.position, e.reason)),
        }
        for (i, bytes) in entries.into_iter().enumerate() {
            let position = first + i as u64;
            batch.nodes.extend(frontier.push(merkle::leaf_hash(&bytes)));
            batch.entries.push((position, bytes));
        }
        log.write(batch)?;
        n = (n + BUNDLES_PER_BATCH).min(bundles);
        tracing::info!(entries = replayer.size(), of = size, "restoring");
    }
    replayer.finish(&checkpoint).map_err(|e| bad(e.position, e.reason))?;
    log.write(WriteBatch {
        meta: vec![
            (crate::store::ORIGIN, origin.clone().into_bytes()),
            (crate::log::VERIFIED_SIZE, size.to_be_bytes().to_vec()),
        ],
        ..Default::default()
    })?;
    log.sync()?;

    // The projections over the same database (a reopen could find sled's lock still held).
    let snapshot = data_dir.join(crate::server::SNAPSHOT_FILE);
    let store = LayeredStore::open(log, &snapshot, config.snapshot_min_records)?;
    crate::projection::rebuild(&store)?;
    store.sync()?;
    drop(store);
    registry_key::load_or_create(data_dir).map_err(|e| key_error(e.to_string()))?;
    Ok(Restored { origin, size, root: checkpoint.root })
}
