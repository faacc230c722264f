//! Cuts: when the active layer is frozen and written with the base as the next snapshot, how
//! that runs on its own thread, and how a failed cut is retried. A cut rewrites the whole
//! state, so when one is due decides what the projections cost in the background.

use std::sync::Arc;

use super::read::Merged;
use super::{Layers, RELEASE_EVERY, Shared, WALK_CHUNK, leaf_at, poisoned};
use crate::store::StoreError;
use crate::store::snapshot::Snapshot;

/// The longest wait between two tries of a failing snapshot.
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(300);

#[derive(Debug, Default)]
pub(super) struct Backoff {
    failures: u32,
    not_before: Option<std::time::Instant>,
}

impl Backoff {
    fn allows_now(&self) -> bool {
        self.not_before.is_none_or(|t| std::time::Instant::now() >= t)
    }

    fn failed(&mut self) -> std::time::Duration {
        self.failures = self.failures.saturating_add(1);
        let wait =
            std::time::Duration::from_secs(1u64 << (self.failures - 1).min(9)).min(MAX_BACKOFF);
        self.not_before = Some(std::time::Instant::now() + wait);
        wait
    }
}

impl Shared {
    /// Whether the active layer has grown enough for a cut, and one may start now: a quarter
    /// of the base's records changed, or (copying, with `pace_copies`) as many as it holds. A
    /// cut rewrites the whole state, so cuts at every quarter cost a copy five times the final
    /// snapshot (a tenth of a replica's CPU at a million entries); at every doubling, twice.
    /// The active layer grows to the base's size meanwhile, and a copy interrupted replays
    /// more of its log at the next start.
    pub(super) fn cut_due(&self, layers: &Layers) -> Result<bool, StoreError> {
        let part = match self.pace_copies {
            Some(above) if layers.growth() > above => 1,
            _ => 4,
        };
        let threshold = self.min_cut.max(layers.base.len() / part);
        Ok(layers.projected.is_some()
            && layers.frozen.is_none()
            && layers.active.len() >= threshold
            && self.backoff.lock().map_err(|_| poisoned())?.allows_now())
    }

    /// Freezes the active layer if it is consistent and whole (nothing held back) and no cut
    /// is running; the cut's size.
    pub(super) fn freeze(layers: &mut Layers) -> Option<u64> {
        let size = layers.projected?;
        if layers.frozen.is_some() || layers.held_back {
            return None;
        }
        layers.frozen = Some(Arc::new(std::mem::take(&mut layers.active)));
        Some(size)
    }

    /// Puts the frozen writes back under the active ones (which are newer).
    pub(super) fn unfreeze(layers: &mut Layers) {
        if let Some(frozen) = layers.frozen.take() {
            let frozen = Arc::try_unwrap(frozen).unwrap_or_else(|shared| (*shared).clone());
            for (k, v) in frozen {
                layers.active.entry(k).or_insert(v);
            }
        }
    }

    /// Writes the frozen layer and the base as the new snapshot and swaps it in. On failure the
    /// frozen writes go back under the active ones, so nothing is lost but the file.
    pub(super) fn cut(&self, size: u64) -> Result<(), StoreError> {
        let outcome = self.write_cut(size);
        let mut layers = self.layers.write().map_err(|_| poisoned())?;
        match outcome {
            Ok(snapshot) => {
                layers.set_base(snapshot);
                layers.frozen = None;
                Ok(())
            }
            Err(e) => {
                Self::unfreeze(&mut layers);
                Err(e)
            }
        }
    }

    fn write_cut(&self, size: u64) -> Result<Snapshot, StoreError> {
        let started = std::time::Instant::now();
        let (frozen, base) = {
            let layers = self.layers.read().map_err(|_| poisoned())?;
            (layers.frozen.clone().unwrap_or_default(), layers.base.clone())
        };
        // The base is read from its file long after the start checked it: a change at rest
        // since then must stop the cut, not be sealed into the next snapshot.
        base.verify()?;
        // The cut starts when its batch is staged, which may be before the entries reach the
        // inner store: reading the last one sooner found it missing and failed the cut.
        self.wait_for(size, |d| d.written)?;
        let last_leaf = leaf_at(self.inner.as_ref(), size)?;
        // The merge reads the whole base: its pages go back to the kernel as it passes them,
        // or each cut would add the base's size to the resident set (1 GB at a million keys).
        let base_records = base.iter_from(b"").enumerate().map(|(i, (k, v))| {
            if (i + 1) % (WALK_CHUNK * RELEASE_EVERY) == 0 {
                base.release();
            }
            (k, Some(v))
        });
        let records = Merged::new(vec![
            Box::new(frozen.iter().map(|(k, v)| (&k[..], v.as_deref()))),
            Box::new(base_records),
        ])
        .filter_map(|(k, v)| v.map(|v| (k, v)));
        let written = Snapshot::write_new(&self.path, size, last_leaf, records)?;
        base.release();
        drop((frozen, base));
        // The snapshot may only describe entries that survive a crash.
        self.wait_synced(size)?;
        self.install(written, started)
    }

    /// Puts `written` in place as the store's file (built from `started` on) and returns it.
    pub(super) fn install(
        &self,
        written: crate::store::snapshot::Written,
        started: std::time::Instant,
    ) -> Result<Snapshot, StoreError> {
        let (bytes, records) = (written.len(), written.records());
        let snapshot = written.install(&self.path)?;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
        self.last_cut_micros.store(micros, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            size = snapshot.size(),
            records,
            bytes,
            seconds = started.elapsed().as_secs_f64(),
            "projection snapshot written"
        );
        Ok(snapshot)
    }

    /// Starts a background cut at `size` (the active layer is frozen already).
    pub(super) fn start_cut(self: &Arc<Self>, size: u64) -> Result<(), StoreError> {
        let mut cutting = self.cutting.lock().map_err(|_| poisoned())?;
        if let Some(previous) = cutting.take() {
            // Only one cut is frozen at a time, so the previous one is past its work.
            let _ = previous.join();
        }
        let shared = self.clone();
        *cutting = Some(
            std::thread::Builder::new()
                .name("projection-snapshot".into())
                .spawn(move || {
                    let outcome = shared.cut(size);
                    let Ok(mut backoff) = shared.backoff.lock() else { return };
                    match outcome {
                        Ok(()) => *backoff = Backoff::default(),
                        Err(e) => {
                            let wait = backoff.failed();
                            tracing::error!(
                                error = %e,
                                size,
                                retry_in_secs = wait.as_secs(),
                                "writing the projection snapshot failed; its records stay in \
                                 memory"
                            );
                        }
                    }
                })
                .map_err(|e| StoreError::Io(format!("starting the snapshot thread: {e}")))?,
        );
        Ok(())
    }
}
