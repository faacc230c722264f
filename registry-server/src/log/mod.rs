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

mod durable;
mod open;
mod reader;
mod stats;
mod tail;
mod view;
pub mod witness;
mod writer;

use std::sync::Arc;

use registry_core::checkpoint::Checkpoint;
use registry_core::entry::{self, ChainError, ChainVerifier, EntryHeader};
use registry_core::merkle::{self, Frontier, Hash, NodeSource, ProofError};
use registry_core::note::{NoteSigner, NoteVerifier};
use registry_core::time::Time;
use tokio::sync::watch;
use uuid::Uuid;

use open::{head_at, keeps_promise, record_verified, verify_from_last_point};
pub use reader::{LogReader, ReadError};
pub use stats::{WriterStats, WriterStatsSnapshot};
pub use view::View;
pub use witness::{Witness, WitnessError};
pub use writer::{
    AppendError, Appended, Appender, Clock, CopiedCheckpoint, CopyReceiver, WriterStatus,
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

    /// An entry copied from a primary (on a replica), prepared off the writer thread.
    type Copied: Send + 'static;

    /// Checks an entry copied from the primary against the state after every entry before it,
    /// as an auditor's replay would, and returns what the request index and [`Machine::apply`]
    /// need. A refusal means the primary signed a log that breaks the rules: the replica stops.
    fn check_copied(
        &mut self,
        position: u64,
        copied: Self::Copied,
        view: &View<'_>,
    ) -> Result<CopiedEntry<Self::Effects>, MachineError<String>>;

    /// Loads whatever the machine keeps in memory, once the log is verified and before the
    /// writer starts. `size` is the log's size. The store's projections may reflect fewer
    /// entries ([`LogStore::projected_size`]); `open` must replay the rest into them and write
    /// them with `projected_size: Some(size)`, or the writer's first batch is refused. This
    /// default is for machines that keep no projections: it only records that.
    fn open(&mut self, store: &Arc<dyn LogStore>, size: u64) -> Result<(), StoreError> {
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
    /// `extensions`: whether the batch's head needs [`Machine::checkpoint_extensions`] (always
    /// on a primary; on a replica when the primary's checkpoint carries them), so a machine
    /// may put off what only they need. What it returns runs once the batch is durable, before
    /// readers see it; that happens on the thread that syncs, while this one may already
    /// decide the next batch.
    fn finish_batch(
        &mut self,
        _size: u64,
        _view: &mut View<'_>,
        _extensions: bool,
    ) -> Result<OnDurable, StoreError> {
        Ok(None)
    }

    /// Writes into `view` every projection record the machine has held back from its batches
    /// so far (see [`Machine::holds_back`]): called before a batch when the store wants them
    /// ([`LogStore::projections_wanted`]) and once more when the writer stops cleanly.
    fn write_held_back(&mut self, _view: &mut View<'_>) {}

    /// Whether the machine holds back projection records its batches changed, writing them
    /// only when the store is about to make its projections durable
    /// ([`crate::store::WriteBatch::held_back`]).
    fn holds_back(&self) -> bool {
        false
    }

    /// Extension lines for the next head checkpoint (after `open`, or a `finish_batch` asked
    /// for them).
    fn checkpoint_extensions(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether this machine's checkpoints carry extension lines at all.
    fn has_extensions(&self) -> bool {
        !self.checkpoint_extensions().is_empty()
    }
}

/// A copied entry, checked: what the writer stores for it besides its bytes.
#[derive(Debug)]
pub struct CopiedEntry<E> {
    /// Its header (position, recorded time, link), as the primary wrote it.
    pub header: EntryHeader,
    /// The request ID and content digest the request index keeps.
    pub request: (Uuid, Hash),
    /// What `apply` needs.
    pub effects: E,
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
    type Copied = ();

    fn check_copied(
        &mut self,
        position: u64,
        _: (),
        _: &View<'_>,
    ) -> Result<CopiedEntry<()>, MachineError<String>> {
        Err(MachineError::Rejected(format!("entry {position}: raw logs are not copied")))
    }

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
    /// The signed checkpoint for exactly this size and root: this registry's, or on a replica
    /// the primary's. Empty only on a replica that has copied nothing yet.
    pub checkpoint: Arc<str>,
}

/// Who signs the log's checkpoints.
pub enum Signing {
    /// This registry: it is the primary, and signs a checkpoint for every head.
    Primary(NoteSigner),
    /// The primary, whose checkpoints arrive with the entries this replica copies and are
    /// checked with its public key; this log never signs.
    Replica(NoteVerifier),
}

impl Signing {
    fn verifier(&self) -> NoteVerifier {
        match self {
            Signing::Primary(s) => s.verifier(),
            Signing::Replica(v) => v.clone(),
        }
    }

    fn origin(&self) -> &str {
        match self {
            Signing::Primary(s) => s.name(),
            Signing::Replica(v) => v.name(),
        }
    }
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
    /// The projections, replayed up to the newest signed checkpoint, do not reproduce the
    /// extension lines (the map root) it signed.
    #[error(
        "refusing to start: the projections do not reproduce the checkpoint of {size} entries the          registry signed (kept in {witness}): it carries the extension lines {signed:?}, the          projections make {found:?}. The log's entries are intact (their Merkle root matched);          rebuild the projections from them with `registry-server rebuild`"
    )]
    ProjectionsDiverged {
        /// The size of the newest signed checkpoint (the log's size).
        size: u64,
        /// Its extension lines.
        signed: Vec<String>,
        /// The lines the projections make.
        found: Vec<String>,
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
    /// Verifies the stored chain, then starts the writer: the primary's, which signs.
    pub fn open(
        store: Arc<dyn LogStore>,
        machine: M,
        signer: NoteSigner,
        options: LogOptions,
        clock: Clock,
    ) -> Result<Self, OpenError> {
        Self::open_as(store, machine, Signing::Primary(signer), options, clock)
    }

    /// Verifies the stored chain, then starts a replica's writer, which appends only entries
    /// copied from the primary ([`Appender::copy`]) under the primary's checkpoints, checked
    /// with `primary`. Readers see the newest of those checkpoints (the witness): entries a
    /// previous run copied past it stay unpublished until the next checkpoint covers them.
    pub fn open_replica(
        store: Arc<dyn LogStore>,
        machine: M,
        primary: NoteVerifier,
        options: LogOptions,
        clock: Clock,
    ) -> Result<Self, OpenError> {
        Self::open_as(store, machine, Signing::Replica(primary), options, clock)
    }

    fn open_as(
        store: Arc<dyn LogStore>,
        mut machine: M,
        signing: Signing,
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
                keeps_promise(store.as_ref(), &frontier, w, &signing.verifier())?
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
        machine.open(&store, frontier.size())?;
        if let (Some(w), Some(witness)) = (&witnessed, &options.witness)
            && w.size == frontier.size()
            && !w.extensions.is_empty()
            && machine.has_extensions()
        {
            // The map a start loads (snapshot and replay) must be the one signed at this size.
            let found = machine.checkpoint_extensions();
            if found != w.extensions {
                return Err(OpenError::ProjectionsDiverged {
                    size: w.size,
                    signed: w.extensions.clone(),
                    found,
                    witness: witness.path().to_path_buf(),
                });
            }
        }
        // What the start found and replayed is made durable before anything is built on it
        // (a killed predecessor's last writes may still sit in the page cache only).
        if !options.read_only {
            store.sync()?;
        }
        let signing = Arc::new(signing);
        let behind = witnessed.as_ref().filter(|w| w.size < frontier.size());
        let head = if let Signing::Replica(_) = signing.as_ref() {
            // A replica serves the newest checkpoint of the primary's it recorded, never one
            // of its own.
            match &witnessed {
                Some(w) => head_at(store.as_ref(), w)?,
                None => Head {
                    size: 0,
                    root: merkle::empty_root(),
                    last_hash: entry::ZERO_HASH,
                    last_recorded_at: None,
                    checkpoint: "".into(),
                },
            }
        } else if let (true, Some(w)) = (options.read_only, behind) {
            // The disk filled up between a sync and its witness: the entries after the witness
            // are durable but were never published (nor acknowledged). Without writing, only
            // what was published can be served: the witnessed head, its very note.
            head_at(store.as_ref(), w)?
        } else {
            let Signing::Primary(signer) = signing.as_ref() else { unreachable!() };
            Head {
                size: frontier.size(),
                root: frontier.root(),
                last_hash,
                last_recorded_at,
                checkpoint: sign_checkpoint(
                    signer,
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
            if witnessed.as_ref().map(|w| w.size) != Some(head.size) && !head.checkpoint.is_empty()
            {
                w.record(&head.checkpoint).map_err(StoreError::from)?;
            }
            if store.meta(WITNESSED)?.is_none() && !head.checkpoint.is_empty() {
                store.write(crate::store::WriteBatch {
                    meta: vec![(WITNESSED, vec![1])],
                    ..Default::default()
                })?;
                store.sync()?;
            }
        }
        let (head_size, head_checkpoint) = (head.size, head.checkpoint.clone());
        let (head_tx, head_rx) = watch::channel(Arc::new(head));
        let tail = Arc::new(tail::Tail::default());
        let reader = LogReader {
            store: store.clone(),
            head: head_rx,
            signing: signing.clone(),
            copied: Arc::default(),
            nodes: Arc::default(),
            tail: tail.clone(),
        };
        if let (Signing::Replica(_), false) = (signing.as_ref(), head_checkpoint.is_empty()) {
            // The witnessed note of the primary's stays servable once the head moves on.
            reader.copied.insert(head_size, head_checkpoint);
        }
        let verifier = options.verify_every.filter(|_| !options.read_only).map(|every| {
            let defer = matches!(signing.as_ref(), Signing::Replica(_));
            check.run_behind(store.clone(), reader.clone(), every, defer)
        });
        let (appender, writer) = writer::start(writer::WriterSetup {
            store,
            machine,
            signing,
            copied: reader.copied.clone(),
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
        if let Some(w) = self.writer.take()
            && w.join().is_err()
        {
            return Err(StoreError::Io("the log writer thread panicked".into()));
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

#[cfg(test)]
mod tests;
