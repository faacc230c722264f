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
}

/// Read access to the durable part of the log. Cheap to clone.
#[derive(Clone)]
pub struct LogReader {
    pub(super) store: Arc<dyn LogStore>,
    pub(super) head: watch::Receiver<Arc<Head>>,
    pub(super) signer: Arc<NoteSigner>,
    pub(super) nodes: Arc<NodeCache>,
    pub(super) tail: Arc<tail::Tail>,
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

    /// The checkpoint signer's origin.
    pub fn origin(&self) -> &str {
        self.signer.name()
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
    pub fn checkpoint(&self, size: u64) -> Result<String, ReadError> {
        let head = self.head();
        if size == head.size {
            return Ok(head.checkpoint.to_string());
        }
        let root = self.root(size)?;
        Ok(sign_checkpoint(&self.signer, size, root, Vec::new()))
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
