//! Reads of the durable log: entries, proofs and signed checkpoints, never past the durable head,
//! with the Merkle nodes most proofs share kept in memory.

use super::*;

/// Why a read could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The request asks for something outside the durable log.
    #[error("{0}")]
    OutOfRange(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A proof could not be built (a missing node: the store is damaged).
    #[error("proof could not be built: {0}")]
    Proof(ProofError),
    /// A replica cannot sign a checkpoint, and holds none of the primary's for this size.
    #[error("{0}")]
    Unsigned(String),
}

/// Read access to the durable part of the log. Cheap to clone.
#[derive(Clone)]
pub struct LogReader {
    pub(super) store: Arc<dyn LogStore>,
    pub(super) head: watch::Receiver<Arc<Head>>,
    pub(super) signing: Arc<Signing>,
    pub(super) copied: Arc<CopiedCheckpoints>,
    pub(super) nodes: Arc<NodeCache>,
    pub(super) tail: Arc<tail::Tail>,
}

/// The primary's checkpoints a replica copied entries under, newest [`CopiedCheckpoints::KEPT`]
/// of them, by size: what a replica, which cannot sign, serves for sizes other than its head
/// (to a mirror's watch stream, say). Kept in memory only: each is the primary's signed note,
/// and the head's survives a restart in the witness.
#[derive(Default)]
pub(crate) struct CopiedCheckpoints(std::sync::Mutex<std::collections::BTreeMap<u64, Arc<str>>>);

impl CopiedCheckpoints {
    const KEPT: usize = 65_536;

    pub(super) fn insert(&self, size: u64, note: Arc<str>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(size, note);
        while map.len() > Self::KEPT {
            map.pop_first();
        }
    }

    fn get(&self, size: u64) -> Option<Arc<str>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&size).cloned()
    }

    /// The largest size in `(after, up_to]` with a checkpoint.
    fn last_in(&self, after: u64, up_to: u64) -> Option<u64> {
        if after >= up_to {
            return None;
        }
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.range(after + 1..=up_to).next_back().map(|(size, _)| *size)
    }
}

/// Perfect Merkle nodes of level [`NodeCache::LOWEST`] and above, kept once read. A proof at a
/// million entries reads some forty nodes, most of them high in the tree and shared by every
/// proof (a registration's receipt alone needs two); a node never changes once stored, so a
/// read-through cache is always right. Levels below are not kept: they are most of the nodes
/// and each is rarely read twice. The tree has n/16 + n/32 + ... < n/8 nodes of level 4 and
/// up, so the cache holds at most one node per eight entries (about 16 MB at 2M entries).
#[derive(Default)]
pub(super) struct NodeCache(dashmap::DashMap<(u32, u64), Hash>);

impl NodeCache {
    const LOWEST: u32 = 4;
}

/// The nodes a reader's proofs are built from: the tail, its cache, then the store.
pub(super) struct ReaderNodes<'a> {
    store: &'a dyn LogStore,
    cache: &'a NodeCache,
    tail: &'a tail::Tail,
}

impl NodeSource for ReaderNodes<'_> {
    fn perfect_node(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        if let Some(h) = self.tail.node(level, index) {
            return Ok(h);
        }
        if level < NodeCache::LOWEST {
            return StoreNodes(self.store).perfect_node(level, index);
        }
        if let Some(h) = self.cache.0.get(&(level, index)) {
            return Ok(*h);
        }
        let h = StoreNodes(self.store).perfect_node(level, index)?;
        self.cache.0.insert((level, index), h);
        Ok(h)
    }
}

impl LogReader {
    fn nodes(&self) -> ReaderNodes<'_> {
        ReaderNodes { store: self.store.as_ref(), cache: &self.nodes, tail: &self.tail }
    }

    /// The durable head.
    pub fn head(&self) -> Arc<Head> {
        self.head.borrow().clone()
    }

    /// A receiver that changes whenever the durable head moves.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Head>> {
        self.head.clone()
    }

    /// The store, for projection reads.
    pub fn store(&self) -> &Arc<dyn LogStore> {
        &self.store
    }

    /// The registry's origin (the checkpoints' first line).
    pub fn origin(&self) -> &str {
        self.signing.origin()
    }

    /// Where a stream of entries from `start` should cut so that a signed checkpoint covers
    /// the cut: `end` on a primary (it signs any size), otherwise the largest size up to `end`
    /// a checkpoint of the primary's is held for (`None`: none after `start` yet).
    pub fn signed_cut(&self, start: u64, end: u64) -> Option<u64> {
        let head = self.head();
        match self.signing.as_ref() {
            Signing::Primary(_) => (start < end).then_some(end),
            Signing::Replica(_) if end >= head.size && head.size > start => Some(head.size),
            Signing::Replica(_) => self.copied.last_in(start, end),
        }
    }

    /// Durable entries `start..end` (clamped to the head), at most `limit` of them.
    pub fn entries(
        &self,
        start: u64,
        end: u64,
        limit: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, ReadError> {
        let end = end.min(self.head().size).min(start.saturating_add(limit));
        Ok(self.store.entries(start, end)?)
    }

    /// One durable entry.
    pub fn entry(&self, position: u64) -> Result<Vec<u8>, ReadError> {
        let size = self.head().size;
        if position >= size {
            return Err(ReadError::OutOfRange(format!(
                "position {position} is not in the log (size {size})"
            )));
        }
        if let Some(entry) = self.tail.entry(position) {
            return Ok(entry);
        }
        self.store.entry(position)?.ok_or_else(|| {
            ReadError::Store(StoreError::Corrupt(format!("entry {position} is missing")))
        })
    }

    /// Whether the entry at `position` is held in memory, with the low Merkle nodes around it:
    /// then its proofs read memory, apart from a high node not read since the start.
    pub fn is_recent(&self, position: u64) -> bool {
        self.tail.holds(position)
    }

    /// Resolves a requested tree size: 0 means the head; larger than the head is refused.
    pub fn resolve_size(&self, requested: u64) -> Result<u64, ReadError> {
        let size = self.head().size;
        match requested {
            0 => Ok(size),
            n if n <= size => Ok(n),
            n => {
                Err(ReadError::OutOfRange(format!("tree size {n} is larger than the log ({size})")))
            }
        }
    }

    /// The root hash of the tree of `size` entries.
    pub fn root(&self, size: u64) -> Result<Hash, ReadError> {
        self.within_head(size)?;
        merkle::root(&self.nodes(), size).map_err(ReadError::Proof)
    }

    /// Proofs are only built inside the durable tree (the node cache relies on it too).
    fn within_head(&self, size: u64) -> Result<(), ReadError> {
        let head = self.head.borrow().size;
        if size > head {
            return Err(ReadError::OutOfRange(format!(
                "tree size {size} is beyond the durable log ({head} entries)"
            )));
        }
        Ok(())
    }

    /// The inclusion proof of `position` in the tree of `size` entries.
    pub fn inclusion_proof(&self, position: u64, size: u64) -> Result<Vec<Hash>, ReadError> {
        if position >= size {
            return Err(ReadError::OutOfRange(format!(
                "position {position} is not below tree size {size}"
            )));
        }
        self.within_head(size)?;
        merkle::inclusion_proof(&self.nodes(), position, size).map_err(ReadError::Proof)
    }

    /// The consistency proof between two tree sizes.
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, ReadError> {
        if from == 0 || from > to {
            return Err(ReadError::OutOfRange(format!(
                "consistency needs 0 < from_size <= to_size, got {from} and {to}"
            )));
        }
        self.within_head(to)?;
        merkle::consistency_proof(&self.nodes(), from, to).map_err(ReadError::Proof)
    }

    /// A signed checkpoint for `size`: the head's own (with the machine's extension lines) when
    /// it is the head, otherwise one without extension lines.
    ///
    /// A replica cannot sign: it answers with the primary's checkpoint for the head, or for a
    /// size it copied entries under recently, and otherwise says so ([`ReadError::Unsigned`]).
    pub fn checkpoint(&self, size: u64) -> Result<String, ReadError> {
        let head = self.head();
        if size == head.size && !head.checkpoint.is_empty() {
            return Ok(head.checkpoint.to_string());
        }
        match self.signing.as_ref() {
            Signing::Primary(signer) => {
                let root = self.root(size)?;
                Ok(sign_checkpoint(signer, size, root, Vec::new()))
            }
            Signing::Replica(_) => {
                self.within_head(size)?;
                self.copied.get(size).map(|note| note.to_string()).ok_or_else(|| {
                    ReadError::Unsigned(format!(
                        "this server is a replica: it cannot sign, and holds the primary's \
                         checkpoint for its head ({} entries) and for recent sizes only, not \
                         for {size}; ask the primary",
                        head.size
                    ))
                })
            }
        }
    }

    /// The entries at `positions` with inclusion proofs in the tree of `head`, which must be a
    /// head this reader published (so its checkpoint is the one clients get).
    pub fn prove(
        &self,
        head: &Head,
        positions: &[u64],
    ) -> Result<Vec<registry_core::proof::ProvenEntry>, ReadError> {
        positions
            .iter()
            .map(|&position| {
                let entry = self.entry(position)?;
                let proof = self.inclusion_proof(position, head.size)?;
                Ok(registry_core::proof::ProvenEntry { position, entry, proof })
            })
            .collect()
    }

    /// The request record for an ID, if its entry is durable.
    pub fn request(&self, id: &Uuid) -> Result<Option<crate::store::RequestRecord>, ReadError> {
        let size = self.head().size;
        Ok(self.store.request(id)?.filter(|r| r.position < size))
    }

    /// How many entries the log has checked (at a start or in the background) and recorded as
    /// checked: a restart checks only what came after. `None` when it cannot be read.
    pub fn verified_size(&self) -> Option<u64> {
        let bytes = self.store.meta(super::VERIFIED_SIZE).ok()??;
        Some(u64::from_be_bytes(bytes.as_slice().try_into().ok()?))
    }
}
