//! What a start checks before the log takes a write: the chain from the last verified point, and
//! that the log still holds everything its witness says the registry signed (a log that lost or
//! rewrote signed entries is refused, never silently continued).

use super::*;

/// The newest checkpoint the witness holds: its size, root and note.
pub(super) struct Witnessed {
    pub(super) size: u64,
    pub(super) root: Hash,
    pub(super) note: String,
    /// Its extension lines (the map root).
    pub(super) extensions: Vec<String>,
}

/// The head of the log at a witnessed size, served with the witnessed note itself.
pub(super) fn head_at(store: &dyn LogStore, w: &Witnessed) -> Result<Head, OpenError> {
    let (last_hash, last_recorded_at) = match w.size.checked_sub(1) {
        None => (entry::ZERO_HASH, None),
        Some(p) => {
            let bytes = store.entry(p)?.ok_or_else(|| missing(p))?;
            let header = entry::decode_header(&bytes)
                .map_err(|e| OpenError::BrokenChain { position: p, reason: e.to_string() })?;
            (merkle::leaf_hash(&bytes), Some(header.recorded_at))
        }
    };
    Ok(Head {
        size: w.size,
        root: w.root,
        last_hash,
        last_recorded_at,
        checkpoint: w.note.clone().into(),
    })
}

/// Checks that the log still holds what the witness says the registry signed: at least that
/// many entries, with the same Merkle root at that size.
pub(super) fn keeps_promise(
    store: &dyn LogStore,
    frontier: &Frontier,
    witness: &Witness,
    verifier: &NoteVerifier,
) -> Result<Option<Witnessed>, OpenError> {
    let Some((signed, note)) = witness.read(verifier)? else {
        if store.meta(WITNESSED)?.is_some() {
            return Err(OpenError::Witness(WitnessError {
                path: witness.path().to_path_buf(),
                why: "is missing, but this log has had one: it was deleted or lost, and without \
                      it nothing says how far the log must reach"
                    .into(),
            }));
        }
        if frontier.size() > 0 {
            tracing::warn!(
                witness = %witness.path().display(),
                size = frontier.size(),
                "no signed-checkpoint witness found for a log that has entries (first start of \
                 this version?); recording one now"
            );
        }
        return Ok(None);
    };
    let path = || witness.path().to_path_buf();
    if frontier.size() < signed.size {
        return Err(OpenError::RolledBack {
            signed: signed.size,
            found: frontier.size(),
            witness: path(),
        });
    }
    let root = if signed.size == frontier.size() {
        frontier.root()
    } else {
        merkle::root(&StoreNodes(store), signed.size).map_err(|e| OpenError::BrokenChain {
            position: signed.size,
            reason: format!("the Merkle tree at the signed size cannot be read: {e}"),
        })?
    };
    if root != signed.root {
        return Err(OpenError::Diverged {
            signed: signed.size,
            signed_root: hex::encode(signed.root),
            found_root: hex::encode(root),
            witness: path(),
        });
    }
    Ok(Some(Witnessed {
        size: signed.size,
        root: signed.root,
        note,
        extensions: signed.extensions,
    }))
}

/// Checks the entries appended since the last verified point: chain links, positions, recorded
/// times, and every stored Merkle node they complete. Returns the check and the size verified
/// before (the caller records the new one).
pub(super) fn verify_from_last_point(store: &dyn LogStore) -> Result<(ChainCheck, u64), OpenError> {
    let size = store.size()?;
    let verified = match store.meta(VERIFIED_SIZE)? {
        None => 0,
        Some(v) => u64::from_be_bytes(
            v.as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt("verified size is not 8 bytes".into()))?,
        ),
    };
    if verified > size {
        return Err(OpenError::BrokenChain {
            position: size,
            reason: format!("the log ends at {size} but {verified} entries were verified before"),
        });
    }
    let mut check = ChainCheck::resume(store, verified)?;
    check.advance(store, size)?;
    Ok((check, verified))
}

/// Entries appended since the last check above which the background check runs before its
/// interval is up. Unchecked entries cannot be sealed, and sled keeps them at up to twice their
/// size in a file it never shrinks: a bulk load of a million keys, checked only every 10 s and
/// sealed at the tick after, left sled's file at 419 bytes a key; with this, 125-170
/// (tests/bench/USAGE.md §13).
const CHECK_BACKLOG: u64 = 16_384;

/// Seals the entries below `up_to` (verified), logging what it did; false if it failed, so
/// the next tick tries again (the entries stay as they were meanwhile).
fn seal(store: &dyn LogStore, up_to: u64) -> bool {
    let started = std::time::Instant::now();
    match store.seal(up_to) {
        Ok(0) => true,
        Ok(entries) => {
            let seconds = started.elapsed().as_secs_f64();
            tracing::debug!(entries, up_to, seconds, "sealed verified entries");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "sealing verified entries failed: they stay as they are, and the next check tries again");
            false
        }
    }
}

pub(super) fn record_verified(store: &dyn LogStore, size: u64) -> Result<(), StoreError> {
    store.write(crate::store::WriteBatch {
        meta: vec![(VERIFIED_SIZE, size.to_be_bytes().to_vec())],
        ..Default::default()
    })
}

/// The state of a check of the stored log from entry 0: the chain so far and the right edge of
/// the Merkle tree its entries build.
pub(super) struct ChainCheck {
    pub(super) chain: ChainVerifier,
    pub(super) frontier: Frontier,
}

pub(super) fn missing(position: u64) -> OpenError {
    OpenError::BrokenChain { position, reason: "entry is missing".into() }
}

impl ChainCheck {
    /// Picks up a check that ended at `verified` (entries below it were checked before).
    pub(super) fn resume(store: &dyn LogStore, verified: u64) -> Result<Self, OpenError> {
        let frontier =
            Frontier::load(&StoreNodes(store), verified).map_err(|e| OpenError::BrokenChain {
                position: verified,
                reason: format!("the Merkle tree up to the verified point cannot be read: {e}"),
            })?;
        if verified == 0 {
            return Ok(Self { chain: ChainVerifier::new(), frontier });
        }
        let last = store.entry(verified - 1)?.ok_or_else(|| missing(verified - 1))?;
        let header = entry::decode_header(&last).map_err(|e| OpenError::BrokenChain {
            position: verified - 1,
            reason: e.to_string(),
        })?;
        let hash = merkle::leaf_hash(&last);
        Ok(Self {
            chain: ChainVerifier::resume(verified, hash, Some(header.recorded_at)),
            frontier,
        })
    }

    /// Checks the stored entries from where the check stands up to `size`.
    pub(super) fn advance(&mut self, store: &dyn LogStore, size: u64) -> Result<(), OpenError> {
        const CHUNK: u64 = 4096;
        let mut position = self.chain.next_position();
        while position < size {
            let end = (position + CHUNK).min(size);
            for (pos, bytes) in store.entries(position, end)? {
                self.push(store, pos, &bytes)?;
            }
            if self.chain.next_position() != end {
                return Err(missing(self.chain.next_position()));
            }
            position = end;
        }
        Ok(())
    }

    pub(super) fn push(
        &mut self,
        store: &dyn LogStore,
        pos: u64,
        bytes: &[u8],
    ) -> Result<(), OpenError> {
        if pos != self.chain.next_position() {
            return Err(missing(self.chain.next_position()));
        }
        let leaf = self.chain.push(bytes).map_err(|e: ChainError| OpenError::BrokenChain {
            position: e.position(),
            reason: e.to_string(),
        })?;
        for node in self.frontier.push(leaf) {
            if store.node(node.level, node.index)? != Some(node.hash) {
                return Err(OpenError::BrokenChain {
                    position: pos,
                    reason: format!(
                        "stored Merkle node (level {}, index {}) does not match the entries",
                        node.level, node.index
                    ),
                });
            }
        }
        Ok(())
    }

    /// Keeps checking, every `every` (sooner once [`CHECK_BACKLOG`] entries wait), what became
    /// durable since, reading it back through the store with the checks a start runs, and
    /// records how far it got; so a restart after a long run checks only the last few seconds
    /// of appends instead of everything since the last start.
    /// The recorded size becomes durable with the writer's next sync or at [`Log::close`] (lost
    /// in a crash, it only means more to check at the next start). A store error is retried at
    /// the next tick from the last recorded point; a broken chain is logged and ends the check
    /// without recording anything further, so the next start refuses, naming the position.
    /// After each check it seals what it verified ([`LogStore::seal`]): only entries that
    /// passed are ever rewritten in compact form, and a rewrite lost in a crash leaves them as
    /// they were (a seal that failed is tried again at the next tick). With
    /// `defer_while_copying` (a replica) it neither checks nor seals while the log grows faster
    /// than [`crate::store::COPYING_RATE`]: a replica catching up is bound by its CPU, which
    /// both would take from the copy (and it checked every entry on arrival); it does both
    /// once it has caught up, and a start meanwhile checks what was not checked at rest. One
    /// difference from a start: sled may answer these reads from its page cache, so this checks
    /// what the store hands back, not a file changed on disk behind its back afterwards (which a
    /// later start does not see either, as for entries checked at an earlier start).
    pub(super) fn run_behind(
        self,
        store: Arc<dyn LogStore>,
        reader: LogReader,
        every: std::time::Duration,
        defer_while_copying: bool,
    ) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        use std::sync::mpsc::RecvTimeoutError;
        let every = every.max(std::time::Duration::from_millis(10));
        // How often the backlog is looked at between checks.
        let poll = every.min(std::time::Duration::from_millis(500));
        let mut check = self;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("log-verifier".into())
            .spawn(move || {
                let mut recorded = check.chain.next_position();
                let mut retry = false;
                // Seals what is verified at each tick, from the first (a directory written before
                // sealing existed, or before a crash, gets sealed even while no write comes).
                let mut sealed_to = 0;
                let mut last_tick = (std::time::Instant::now(), reader.head().size);
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(poll) {
                    let head = reader.head().size;
                    let waiting = head.saturating_sub(recorded);
                    if last_tick.0.elapsed() < every && waiting < CHECK_BACKLOG {
                        continue;
                    }
                    let rate = head.saturating_sub(last_tick.1) as f64
                        / last_tick.0.elapsed().as_secs_f64().max(0.001);
                    last_tick = (std::time::Instant::now(), head);
                    let copying = defer_while_copying && rate > crate::store::COPYING_RATE;
                    if sealed_to < recorded && !retry && !copying && seal(store.as_ref(), recorded)
                    {
                        sealed_to = recorded;
                    }
                    if retry {
                        // A failed read may have left the check half-way into an entry.
                        match ChainCheck::resume(store.as_ref(), recorded) {
                            Ok(resumed) => (check, retry) = (resumed, false),
                            Err(e) => {
                                tracing::warn!(error = %e, "the background check of the log could not resume; it tries again");
                                continue;
                            }
                        }
                    }
                    let durable = reader.head().size;
                    if copying || durable <= recorded {
                        continue;
                    }
                    let outcome = check
                        .advance(store.as_ref(), durable)
                        .and_then(|()| Ok(record_verified(store.as_ref(), durable)?));
                    match outcome {
                        Ok(()) => {
                            recorded = durable;
                            if seal(store.as_ref(), recorded) {
                                sealed_to = recorded;
                            }
                        }
                        Err(OpenError::BrokenChain { position, reason }) => {
                            tracing::error!(position, %reason, "a stored entry no longer verifies: the next start will refuse the log");
                            return;
                        }
                        Err(OpenError::Store(e)) => {
                            tracing::warn!(error = %e, "the background check of the log could not read it; it tries again");
                            retry = true;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "the background check of the log stopped");
                            return;
                        }
                    }
                }
            })
            .expect("spawning the log verifier thread");
        (stop, thread)
    }
}
