//! The log: one durable, gap-free, hash-chained sequence of entries and its Merkle tree.
//!
//! [`Log::open`] checks the chain from the last verified point before anything else runs and
//! refuses to start on a broken one, naming the first bad position. It then starts the single
//! writer ([`writer`]), which owns position assignment and group commit, and hands out two kinds
//! of handle:
//!
//! - [`Appender`]: submits commands; an append resolves only after its entry is durable.
//! - [`LogReader`]: reads entries, proofs and signed checkpoints, never past the durable head,
//!   so nobody ever sees an entry that a crash could still take back.
//!
//! What an entry contains is decided by a [`Machine`] running inside the writer; the log itself
//! only frames, chains, hashes and stores.

mod tail;
mod view;
pub mod witness;
mod writer;

use std::sync::Arc;

use registry_core::checkpoint::Checkpoint;
use registry_core::entry::{self, ChainError, ChainVerifier, EntryHeader};
use registry_core::merkle::{self, Frontier, Hash, NodeSource, ProofError};
use registry_core::note::NoteSigner;
use registry_core::time::Time;
use tokio::sync::watch;
use uuid::Uuid;

pub use view::View;
pub use witness::{Witness, WitnessError};
pub use writer::{
    AppendError, Appended, Appender, Clock, WriterStats, WriterStatsSnapshot, WriterStatus,
    system_clock,
};

use crate::store::RECOVER;
use crate::store::{LogStore, StoreError};

/// Metadata key: entries below this size were verified, at a start or by the running log's
/// background check.
pub(crate) const VERIFIED_SIZE: &str = "verified_size";

/// Metadata key: set once this log has a witness, so that a witness file that disappears later
/// is a refusal rather than a fresh start (only a log from before the witness has none).
const WITNESSED: &str = "witnessed";

/// The position and recorded time an entry will get, known to the machine while it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryContext {
    /// The position the entry will have.
    pub position: u64,
    /// The recorded time the entry will have.
    pub recorded_at: Time,
    /// Size of the log that is durable and covered by a signed checkpoint when the batch began.
    pub published_size: u64,
}

/// What a [`Machine`] decided a command appends.
#[derive(Debug)]
pub struct Decided<E> {
    /// The serialized `LogEntry` fields after the header (request ID, command, events, links).
    pub body: Vec<u8>,
    /// What [`Machine::apply`] needs to update the projections.
    pub effects: E,
}

/// Why a machine did not produce an entry.
#[derive(Debug)]
pub enum MachineError<R> {
    /// The command is refused; nothing is appended.
    Rejected(R),
    /// Reading the state failed; the writer stops.
    Store(StoreError),
}

impl<R> From<StoreError> for MachineError<R> {
    fn from(e: StoreError) -> Self {
        MachineError::Store(e)
    }
}

/// The domain logic that runs inside the writer, in log order.
///
/// `decide` sees the state after every earlier entry, including the earlier entries of the same
/// group commit (through the batch's [`View`]), and must not change anything; `apply` records an
/// appended entry's effects in the projections, in the same atomic write as the entry.
pub trait Machine: Send + 'static {
    /// What clients submit.
    type Command: Send + 'static;
    /// Why a command is refused.
    type Rejection: Send + 'static;
    /// What `apply` needs from `decide`.
    type Effects: Send + 'static;

    /// Checks a command and returns the entry it appends.
    fn decide(
        &mut self,
        command: &Self::Command,
        context: &EntryContext,
        view: &View<'_>,
    ) -> Result<Decided<Self::Effects>, MachineError<Self::Rejection>>;

    /// Updates the projections for an appended entry.
    fn apply(
        &mut self,
        header: &EntryHeader,
        effects: &Self::Effects,
        view: &mut View<'_>,
    ) -> Result<(), StoreError>;

    /// Loads whatever the machine keeps in memory, once the log is verified and before the
    /// writer starts. `size` is the log's size. The store's projections may reflect fewer
    /// entries ([`LogStore::projected_size`]); `open` must replay the rest into them and write
    /// them with `projected_size: Some(size)`, or the writer's first batch is refused. This
    /// default is for machines that keep no projections: it only records that.
    fn open(&mut self, store: &dyn LogStore, size: u64) -> Result<(), StoreError> {
        if store.projected_size()? != size {
            store.write(crate::store::WriteBatch {
                projected_size: Some(size),
                ..Default::default()
            })?;
        }
        Ok(())
    }

    /// Called once per group commit after its last entry, before the batch is written: a chance
    /// to stage writes derived from the whole batch. `size` is the log size after the batch.
    /// What it returns runs once the batch is durable, before readers see it; that happens on
    /// the thread that syncs, while this one may already decide the next batch.
    fn finish_batch(&mut self, _size: u64, _view: &mut View<'_>) -> Result<OnDurable, StoreError> {
        Ok(None)
    }

    /// Extension lines for the next head checkpoint (after `open` or `finish_batch`).
    fn checkpoint_extensions(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Work a [`Machine`] leaves for the moment its batch is durable (see [`Machine::finish_batch`]).
pub type OnDurable = Option<Box<dyn FnOnce() + Send>>;

/// A machine that appends bodies exactly as given and keeps no projections: the log alone, for
/// tests and benchmarks of the storage path.
#[derive(Debug, Default, Clone, Copy)]
pub struct RawBodies;

impl Machine for RawBodies {
    type Command = Vec<u8>;
    type Rejection = std::convert::Infallible;
    type Effects = ();

    fn decide(
        &mut self,
        command: &Vec<u8>,
        _: &EntryContext,
        _: &View<'_>,
    ) -> Result<Decided<()>, MachineError<Self::Rejection>> {
        Ok(Decided { body: command.clone(), effects: () })
    }

    fn apply(&mut self, _: &EntryHeader, _: &(), _: &mut View<'_>) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The durable head of the log: what readers may see.
#[derive(Debug, Clone)]
pub struct Head {
    /// Number of durable entries.
    pub size: u64,
    /// Merkle root over them.
    pub root: Hash,
    /// Leaf hash of the last entry ([`entry::ZERO_HASH`] when empty).
    pub last_hash: Hash,
    /// Recorded time of the last entry.
    pub last_recorded_at: Option<Time>,
    /// The signed checkpoint for exactly this size and root.
    pub checkpoint: Arc<str>,
}

/// The log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The stored chain is broken: the registry refuses to start on it.
    #[error("refusing to start: the log is broken at position {position}: {reason}")]
    BrokenChain {
        /// The first bad position.
        position: u64,
        /// What is wrong there.
        reason: String,
    },
    /// The log is shorter than a checkpoint the registry signed: entries it published are gone.
    #[error(
        "refusing to start: the registry signed a checkpoint of {signed} entries (kept in {witness}), \
         but the log holds only {found}: entry {found} cannot be read. {RECOVER}"
    )]
    RolledBack {
        /// The size of the newest signed checkpoint.
        signed: u64,
        /// The size of the log found.
        found: u64,
        /// The witness file.
        witness: std::path::PathBuf,
    },
    /// The log's prefix differs from what the registry signed.
    #[error(
        "refusing to start: the log's first {signed} entries are not the ones the registry signed \
         (kept in {witness}): their Merkle root is {found_root}, the signed checkpoint says \
         {signed_root}. {RECOVER}"
    )]
    Diverged {
        /// The size of the newest signed checkpoint.
        signed: u64,
        /// Its root, hex.
        signed_root: String,
        /// The root the log has at that size, hex.
        found_root: String,
        /// The witness file.
        witness: std::path::PathBuf,
    },
    /// The witness cannot be read.
    #[error(
        "refusing to start: {0}. If the log itself is intact, `registry audit verify` of an export proves it; {RECOVER_WITNESS}"
    )]
    Witness(#[from] WitnessError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

const RECOVER_WITNESS: &str = "otherwise restore the data directory from an audit archive \
    (`registry-server restore`, see deploy/README.md, \"Backup and restore\").";

/// Tuning of the writer.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Most appends in one group commit.
    pub max_batch: usize,
    /// Appends that may wait for the writer before callers are held back.
    pub queue_depth: usize,
    /// How often entries that became durable are read back and checked while the log runs, so
    /// that the next start checks only what came after (see [`Log::open`]); `None` checks them
    /// only at the next start.
    pub verify_every: Option<std::time::Duration>,
    /// Where the newest signed checkpoint is kept outside the store, if anywhere (see
    /// [`witness`]). A production log always has one; tests of the storage path may go without.
    pub witness: Option<Witness>,
    /// Open without writing anything (a full disk): the log is checked as usual and every
    /// append is refused as `DiskFull`. Readers see what the witness covers: durable entries
    /// after it (the disk filled between a sync and its witness) were never published and stay
    /// unpublished, and proofs that involve them fail (`UNAVAILABLE`) until a start with room.
    pub read_only: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            max_batch: 1024,
            queue_depth: 8192,
            verify_every: None,
            witness: None,
            read_only: false,
        }
    }
}

/// An open log: the writer thread plus handles to it. Dropping every [`Appender`] and calling
/// [`Log::close`] lets the writer finish what is queued and stop.
pub struct Log<M: Machine> {
    reader: LogReader,
    appender: Option<Appender<M>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// The background check, if [`LogOptions::verify_every`] asked for one: dropping the sender
    /// stops it.
    verifier: Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl<M: Machine> Log<M> {
    /// Verifies the stored chain, then starts the writer.
    pub fn open(
        store: Arc<dyn LogStore>,
        mut machine: M,
        signer: NoteSigner,
        options: LogOptions,
        clock: Clock,
    ) -> Result<Self, OpenError> {
        let (check, verified) = verify_from_last_point(store.as_ref())?;
        let (frontier, last_hash, last_recorded_at) =
            (check.frontier.clone(), check.chain.last_hash(), check.chain.last_recorded_at());
        let witnessed = match &options.witness {
            Some(w) => {
                // What a kill during a witness write left: never the witness itself.
                crate::files::remove_leftover(w.path()).map_err(StoreError::from)?;
                keeps_promise(store.as_ref(), &frontier, w, &signer)?
            }
            None => None,
        };
        // Recorded only once the witness agrees: a refused directory is kept as it was found.
        if !options.read_only && verified != frontier.size() {
            tracing::info!(from = verified, to = frontier.size(), "verified the log's new entries");
            record_verified(store.as_ref(), frontier.size())?;
            store.sync()?;
        }
        if options.read_only && witnessed.is_none() && frontier.size() > 0 {
            return Err(OpenError::Store(StoreError::Full(format!(
                "the log holds {} entries but no witness; it cannot be published without \
                 writing one. Free space and start the registry again",
                frontier.size(),
            ))));
        }
        machine.open(store.as_ref(), frontier.size())?;
        // What the start found and replayed is made durable before anything is built on it
        // (a killed predecessor's last writes may still sit in the page cache only).
        if !options.read_only {
            store.sync()?;
        }
        let signer = Arc::new(signer);
        let behind = witnessed.as_ref().filter(|w| w.size < frontier.size());
        let head = if let (true, Some(w)) = (options.read_only, behind) {
            // The disk filled up between a sync and its witness: the entries after the witness
            // are durable but were never published (nor acknowledged). Without writing, only
            // what was published can be served: the witnessed head, its very note.
            head_at(store.as_ref(), w)?
        } else {
            Head {
                size: frontier.size(),
                root: frontier.root(),
                last_hash,
                last_recorded_at,
                checkpoint: sign_checkpoint(
                    &signer,
                    frontier.size(),
                    frontier.root(),
                    machine.checkpoint_extensions(),
                )
                .into(),
            }
        };
        if let Some(w) = options.witness.as_ref().filter(|_| !options.read_only) {
            // The head is served from now on: it is witnessed first (a size the witness holds
            // already needs no new record; the log's prefix up to it was just checked).
            if witnessed.as_ref().map(|w| w.size) != Some(head.size) {
                w.record(&head.checkpoint).map_err(StoreError::from)?;
            }
            if store.meta(WITNESSED)?.is_none() {
                store.write(crate::store::WriteBatch {
                    meta: vec![(WITNESSED, vec![1])],
                    ..Default::default()
                })?;
                store.sync()?;
            }
        }
        let (head_tx, head_rx) = watch::channel(Arc::new(head));
        let tail = Arc::new(tail::Tail::default());
        let reader = LogReader {
            store: store.clone(),
            head: head_rx,
            signer: signer.clone(),
            nodes: Arc::default(),
            tail: tail.clone(),
        };
        let verifier = options
            .verify_every
            .filter(|_| !options.read_only)
            .map(|every| check.run_behind(store.clone(), reader.clone(), every));
        let (appender, writer) = writer::start(writer::WriterSetup {
            store,
            machine,
            signer,
            frontier,
            last_hash,
            last_recorded_at,
            head: head_tx,
            tail,
            options,
            clock,
        });
        Ok(Self { reader, appender: Some(appender), writer: Some(writer), verifier })
    }

    /// A handle for reading.
    pub fn reader(&self) -> LogReader {
        self.reader.clone()
    }

    /// A handle for appending.
    pub fn appender(&self) -> Appender<M> {
        self.appender.clone().expect("the appender is only taken by close, which consumes the log")
    }

    /// Lets the writer finish every append already queued and waits for it to stop. Every other
    /// [`Appender`] clone must be dropped first, or this waits until they are. (Dropping a `Log`
    /// without closing it is safe too: the writer then stops once the last appender is gone.)
    /// An error says the log did not stop cleanly: the writer had failed, or the last sync did.
    /// Nothing acknowledged is lost either way; the next start recovers what is durable.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.stop_verifier();
        let status = self.appender.as_ref().map(|a| a.status());
        drop(self.appender.take());
        if let Some(w) = self.writer.take() {
            if w.join().is_err() {
                return Err(StoreError::Io("the log writer thread panicked".into()));
            }
        }
        match status.as_ref().map(|s| s.borrow().clone()) {
            Some(WriterStatus::Failed(why)) => {
                return Err(StoreError::Io(format!("the log writer had stopped: {why}")));
            }
            Some(WriterStatus::DiskFull(why)) => {
                return Err(StoreError::Full(format!("the log writer had stopped: {why}")));
            }
            _ => {}
        }
        // The background check's last record is not synced by anyone else once the writer has
        // stopped. After a failed sync nothing more is made durable (see `writer`).
        self.reader.store.sync()?;
        if let Err(e) = self.reader.store.persist_projections() {
            // Only the next start's replay gets longer.
            tracing::error!(error = %e, "writing the projections at close failed");
        }
        Ok(())
    }

    fn stop_verifier(&mut self) {
        if let Some((stop, verifier)) = self.verifier.take() {
            drop(stop);
            if verifier.join().is_err() {
                tracing::error!("the log verifier thread panicked");
            }
        }
    }
}

impl<M: Machine> Drop for Log<M> {
    /// Stops the background check, so that nothing reads or writes the store for this log once
    /// it is gone (a reopen of the same directory would find sled locked).
    fn drop(&mut self) {
        self.stop_verifier();
    }
}

/// The newest checkpoint the witness holds: its size, root and note.
struct Witnessed {
    size: u64,
    root: Hash,
    note: String,
}

/// The head of the log at a witnessed size, served with the witnessed note itself.
fn head_at(store: &dyn LogStore, w: &Witnessed) -> Result<Head, OpenError> {
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
fn keeps_promise(
    store: &dyn LogStore,
    frontier: &Frontier,
    witness: &Witness,
    signer: &NoteSigner,
) -> Result<Option<Witnessed>, OpenError> {
    let Some((signed, note)) = witness.read(&signer.verifier())? else {
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
    Ok(Some(Witnessed { size: signed.size, root: signed.root, note }))
}

/// Checks the entries appended since the last verified point: chain links, positions, recorded
/// times, and every stored Merkle node they complete. Returns the check and the size verified
/// before (the caller records the new one).
fn verify_from_last_point(store: &dyn LogStore) -> Result<(ChainCheck, u64), OpenError> {
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

fn record_verified(store: &dyn LogStore, size: u64) -> Result<(), StoreError> {
    store.write(crate::store::WriteBatch {
        meta: vec![(VERIFIED_SIZE, size.to_be_bytes().to_vec())],
        ..Default::default()
    })
}

/// The state of a check of the stored log from entry 0: the chain so far and the right edge of
/// the Merkle tree its entries build.
struct ChainCheck {
    chain: ChainVerifier,
    frontier: Frontier,
}

fn missing(position: u64) -> OpenError {
    OpenError::BrokenChain { position, reason: "entry is missing".into() }
}

impl ChainCheck {
    /// Picks up a check that ended at `verified` (entries below it were checked before).
    fn resume(store: &dyn LogStore, verified: u64) -> Result<Self, OpenError> {
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
    fn advance(&mut self, store: &dyn LogStore, size: u64) -> Result<(), OpenError> {
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

    fn push(&mut self, store: &dyn LogStore, pos: u64, bytes: &[u8]) -> Result<(), OpenError> {
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

    /// Keeps checking, every `every`, what became durable since, reading it back through the
    /// store with the checks a start runs, and records how far it got; so a restart after a long run
    /// checks only the last few seconds of appends instead of everything since the last start.
    /// The recorded size becomes durable with the writer's next sync or at [`Log::close`] (lost
    /// in a crash, it only means more to check at the next start). A store error is retried at
    /// the next tick from the last recorded point; a broken chain is logged and ends the check
    /// without recording anything further, so the next start refuses, naming the position.
    /// One difference from a start: sled may answer these reads from its page cache, so this
    /// checks what the store hands back, not a file changed on disk behind its back afterwards
    /// (which a later start does not see either, as for entries checked at an earlier start).
    fn run_behind(
        self,
        store: Arc<dyn LogStore>,
        reader: LogReader,
        every: std::time::Duration,
    ) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        use std::sync::mpsc::RecvTimeoutError;
        let every = every.max(std::time::Duration::from_millis(10));
        let mut check = self;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("log-verifier".into())
            .spawn(move || {
                let mut recorded = check.chain.next_position();
                let mut retry = false;
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
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
                    if durable <= recorded {
                        continue;
                    }
                    let outcome = check
                        .advance(store.as_ref(), durable)
                        .and_then(|()| Ok(record_verified(store.as_ref(), durable)?));
                    match outcome {
                        Ok(()) => recorded = durable,
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

fn sign_checkpoint(signer: &NoteSigner, size: u64, root: Hash, extensions: Vec<String>) -> String {
    let cp = Checkpoint { origin: signer.name().to_string(), size, root, extensions };
    cp.sign(signer).expect("the signer's name is the origin")
}

/// Perfect Merkle nodes read from a store.
pub struct StoreNodes<'a>(pub &'a dyn LogStore);

impl NodeSource for StoreNodes<'_> {
    fn perfect_node(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        match self.0.node(level, index) {
            Ok(Some(h)) => Ok(h),
            Ok(None) => Err(ProofError::Source(format!("node ({level}, {index}) is not stored"))),
            Err(e) => Err(ProofError::Source(e.to_string())),
        }
    }
}

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
    store: Arc<dyn LogStore>,
    head: watch::Receiver<Arc<Head>>,
    signer: Arc<NoteSigner>,
    nodes: Arc<NodeCache>,
    tail: Arc<tail::Tail>,
}

/// Perfect Merkle nodes of level [`NodeCache::LOWEST`] and above, kept once read. A proof at a
/// million entries reads some forty nodes, most of them high in the tree and shared by every
/// proof (a registration's receipt alone needs two); a node never changes once stored, so a
/// read-through cache is always right. Levels below are not kept: they are most of the nodes
/// and each is rarely read twice. The tree has n/16 + n/32 + ... < n/8 nodes of level 4 and
/// up, so the cache holds at most one node per eight entries (about 16 MB at 2M entries).
#[derive(Default)]
struct NodeCache(dashmap::DashMap<(u32, u64), Hash>);

impl NodeCache {
    const LOWEST: u32 = 4;
}

/// The nodes a reader's proofs are built from: the tail, its cache, then the store.
struct ReaderNodes<'a> {
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
}

#[cfg(test)]
mod tests;
