//! Decoding the buckets a start only hashed, on a thread of its own, for the writer to take
//! when it first changes each ([`super::MapBuckets::decode_in_background`]).

use std::sync::{Arc, Mutex, Weak};

use registry_core::map::{self, Bucket};
use registry_core::merkle::Hash;

use super::{MAP, decode_bucket};
use crate::store::{LogStore, StoreError};

/// A store, and the hash of each bucket stored in it at the load (`None` for held ones).
pub(super) type StoredHashes = (Arc<dyn LogStore>, Vec<Option<Hash>>);

/// Stored buckets decoded in the background ([`super::MapBuckets::decode_in_background`]).
#[derive(Debug, Default)]
pub(super) struct Decoded(Mutex<Vec<Decoding>>);

/// One bucket's place in [`Decoded`].
#[derive(Debug, Clone, Default)]
enum Decoding {
    /// Not decoded yet.
    #[default]
    Pending,
    Ready(Bucket),
    /// The writer has it (taken, or read from the store first): a later decoding is dropped,
    /// not kept beside the writer's copy.
    Taken,
}

impl Decoded {
    pub(super) fn put(&self, batch: &mut Vec<(u16, Bucket)>) {
        if let Ok(mut decoded) = self.0.lock() {
            if decoded.is_empty() {
                decoded.resize(map::BUCKETS, Decoding::Pending);
            }
            for (index, leaves) in batch.drain(..) {
                let slot = &mut decoded[usize::from(index)];
                if let Decoding::Pending = slot {
                    *slot = Decoding::Ready(leaves);
                }
            }
        }
    }

    /// Bucket `index` if it is decoded; either way it is the writer's from now on.
    pub(super) fn take(&self, index: u16) -> Option<Bucket> {
        let mut decoded = self.0.lock().ok()?;
        if decoded.is_empty() {
            decoded.resize(map::BUCKETS, Decoding::Pending);
        }
        match std::mem::replace(decoded.get_mut(usize::from(index))?, Decoding::Taken) {
            Decoding::Ready(leaves) => Some(leaves),
            Decoding::Pending | Decoding::Taken => None,
        }
    }

    pub(super) fn with<R>(&self, index: u16, f: impl FnOnce(&Bucket) -> R) -> Option<R> {
        match self.0.lock().ok()?.get(usize::from(index))? {
            Decoding::Ready(leaves) => Some(f(leaves)),
            Decoding::Pending | Decoding::Taken => None,
        }
    }
}

/// The background decoding: every bucket record of `store` whose slot was stored with the hash
/// in `hashes`, handed to `decoded` a few hundred at a time while it lives.
pub(super) fn decode_stored(
    store: &dyn LogStore,
    hashes: &[Option<Hash>],
    decoded: &Weak<Decoded>,
) {
    let started = std::time::Instant::now();
    let mut batch = Vec::new();
    let mut count = 0usize;
    let walked = store.for_each(MAP, &mut |k, v| {
        let index = <[u8; 2]>::try_from(k).map(u16::from_be_bytes).ok();
        let Some((index, hash)) = index.and_then(|i| Some((i, hashes.get(usize::from(i))?))) else {
            return Ok(());
        };
        if let (Some(hash), Ok(leaves)) = (hash, decode_bucket(v))
            && map::bucket_hash(index, &leaves) == *hash
        {
            batch.push((index, leaves));
        }
        if batch.len() >= 256 {
            let Some(decoded) = decoded.upgrade() else { return Err(StoreError::Io(STOP.into())) };
            count += batch.len();
            decoded.put(&mut batch);
        }
        Ok(())
    });
    if let Some(decoded) = decoded.upgrade() {
        count += batch.len();
        decoded.put(&mut batch);
    }
    match walked {
        Ok(()) => tracing::info!(
            buckets = count,
            seconds = started.elapsed().as_secs_f64(),
            "map buckets decoded in the background"
        ),
        Err(StoreError::Io(e)) if e == STOP => {}
        Err(e) => tracing::warn!(error = %e, "decoding the map's buckets in the background"),
    }
}

/// Why [`decode_stored`] ends its walk early: nobody is left to take the buckets.
const STOP: &str = "the map's buckets are no longer in use";
