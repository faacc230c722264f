//! The single writer: position assignment and group commit.
//!
//! One OS thread owns the tip of the log. It takes every append waiting in its queue (up to a
//! batch limit), runs each through the [`Machine`] in order, frames and hashes the entries, and
//! stages the batch in the store (`LogStore::stage`: the projections and request IDs it reads
//! back for the next batch). A second thread, the syncer, writes the rest (entries, Merkle
//! nodes) as one atomic store write and makes it durable with one sync; a third, the
//! publisher, signs the new head's checkpoint, writes it to the witness (see
//! [`super::witness`]), publishes the head and answers the callers. The three overlap: while
//! one batch is witnessed, the next is synced and the one after it decided and written, so the
//! CPU work of a batch does not wait for the disk of the one before, and appends that arrive
//! meanwhile share the next sync without any timer. Each stage runs at most one batch ahead of
//! the next; batches are answered strictly in order, so a reply that depends on an earlier batch
//! (a retried request ID, a refusal decided against its state) is never sent before that batch
//! is durable and published.
//!
//! On a replica the writer appends no commands: it takes entries copied from the primary
//! ([`Appender::copy`]), each group under the primary's signed checkpoint for the size it ends
//! at. It checks every entry as an auditor's replay does (chain, then the [`Machine`]'s
//! `check_copied`: signatures and rules) and the Merkle and map roots against that checkpoint
//! before anything is written, and publishes the primary's note as the head. A copy that fails
//! a check stops the writer like a storage error: the primary signed something this replica
//! cannot accept, and an operator must look.
//!
//! Any storage error is final: every pending append is answered with `Unavailable` (or
//! `DiskFull`), the writer marks itself failed, and no stage appends again: after a failed sync
//! or witness nothing more is written or acknowledged, because it can no longer be known what
//! is on disk. (A batch that was synced and witnessed before another thread's write failed is
//! still answered: it is durable and published.)

use std::collections::HashMap;
use std::sync::Arc;

use registry_core::entry::{ChainVerifier, EntryHeader, encode_entry};
use registry_core::merkle::{Frontier, Hash, leaf_hash};
use registry_core::time::{self, MICROSECOND, Time};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::durable::{Failure, NextHead, Outcome, Pending, Publisher, Syncer, Written};
use super::reader::CopiedCheckpoints;
use super::stats::{WriterStats, WriterStatsSnapshot};
use super::tail::{Tail, TailBatch};
use super::{CopiedEntry, EntryContext, Head, LogOptions, Machine, MachineError, Signing, View};
use crate::store::{LogStore, RequestRecord, StoreError, WriteBatch};

/// The source of "now" for recorded times; injectable so tests can turn the clock back.
pub type Clock = Arc<dyn Fn() -> Time + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(chrono::Utc::now)
}

/// Whether the writer still accepts appends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriterStatus {
    /// Appending.
    Running,
    /// Stopped after a storage error; nothing will be appended until restart.
    Failed(String),
    /// Stopped because the disk is full; nothing will be appended until space is freed and the
    /// registry restarted (see the module documentation for why not before).
    DiskFull(String),
}

impl WriterStatus {
    /// The status after `e` stopped the writer.
    pub(super) fn after(e: &StoreError) -> Self {
        match e {
            StoreError::Full(_) => WriterStatus::DiskFull(format!("storage failed: {e}")),
            _ => WriterStatus::Failed(format!("storage failed: {e}")),
        }
    }

    /// Whether the writer has stopped.
    pub fn is_stopped(&self) -> bool {
        *self != WriterStatus::Running
    }

    /// What an append is told once the writer has stopped this way.
    pub(super) fn refusal<R>(&self) -> AppendError<R> {
        match self {
            WriterStatus::DiskFull(why) => AppendError::DiskFull(why.clone()),
            WriterStatus::Failed(why) => AppendError::Unavailable(why.clone()),
            WriterStatus::Running => AppendError::Unavailable("the log writer stopped".into()),
        }
    }
}

/// A durable append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The entry's position.
    pub position: u64,
    /// True when the request ID was already in the log with the same content: `position` is
    /// the original entry and nothing new was appended.
    pub duplicate: bool,
}

/// An append that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError<R> {
    /// The machine refused the command.
    #[error("command refused")]
    Rejected(R),
    /// The request ID was used before for different content.
    #[error("request ID already used for different content (entry {position})")]
    AlreadyExists {
        /// The entry the ID belongs to.
        position: u64,
    },
    /// The writer cannot append (stopped, or storage failed). The append may or may not be
    /// durable; retrying with the same request ID is safe.
    #[error("the log is unavailable: {0}")]
    Unavailable(String),
    /// The disk is full: the writer stopped. As with `Unavailable`, the append may or may not be
    /// durable, and a retry with the same request ID is safe once the registry writes again.
    #[error("the disk is full: {0}")]
    DiskFull(String),
}

pub(super) type Reply<R> = oneshot::Sender<Result<Appended, AppendError<R>>>;

/// A copy's answer: the log size after it, or why not (`Rejected`: a check failed).
pub(super) type CopyReply = oneshot::Sender<Result<u64, AppendError<String>>>;

/// Where a queued copy's answer arrives (see [`Appender::copy`]).
pub type CopyReceiver = oneshot::Receiver<Result<u64, AppendError<String>>>;

enum Job<M: Machine> {
    Append { request_id: Uuid, digest: Hash, command: M::Command, reply: Reply<M::Rejection> },
    Copy { entries: Vec<(Vec<u8>, M::Copied)>, checkpoint: CopiedCheckpoint, reply: CopyReply },
}

/// The primary's signed checkpoint a group of copied entries ends at, opened (its signature
/// checked) by the caller.
#[derive(Debug, Clone)]
pub struct CopiedCheckpoint {
    /// The signed note, as the primary sent it.
    pub note: Arc<str>,
    /// Its tree size.
    pub size: u64,
    /// Its root.
    pub root: Hash,
    /// Its extension lines.
    pub extensions: Vec<String>,
}

/// Submits appends to the writer. Cheap to clone.
pub struct Appender<M: Machine> {
    tx: mpsc::Sender<Job<M>>,
    status: watch::Receiver<WriterStatus>,
    stats: Arc<WriterStats>,
}

impl<M: Machine> Clone for Appender<M> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone(), status: self.status.clone(), stats: self.stats.clone() }
    }
}

impl<M: Machine> Appender<M> {
    /// Appends `command` under `request_id`; `digest` identifies its content for idempotency.
    /// Resolves once the entry is durable (or known not to be appended).
    pub async fn append(
        &self,
        request_id: Uuid,
        digest: Hash,
        command: M::Command,
    ) -> Result<Appended, AppendError<M::Rejection>> {
        let status = self.status.borrow().clone();
        if status.is_stopped() {
            return Err(status.refusal());
        }
        let (reply, answer) = oneshot::channel();
        // A writer that stopped drops what is queued: the caller hears why it stopped.
        let stopped = |fallback: &str| {
            let status = self.status.borrow().clone();
            if status.is_stopped() {
                status.refusal()
            } else {
                AppendError::Unavailable(fallback.into())
            }
        };
        self.tx
            .send(Job::Append { request_id, digest, command, reply })
            .await
            .map_err(|_| stopped("the log writer has stopped"))?;
        answer.await.map_err(|_| stopped("the log writer stopped before the append was durable"))?
    }

    /// Queues `entries`, copied from the primary, each with what [`Machine::check_copied`]
    /// needs, to continue the log exactly; `checkpoint` is the primary's for the size they end
    /// at. Copies are taken in the order this is called (awaited). The receiver resolves with
    /// that size once they are durable and published, or with why not: `Rejected` when a check
    /// failed (the writer has stopped then); it is dropped unanswered only if the writer died.
    pub async fn copy(
        &self,
        entries: Vec<(Vec<u8>, M::Copied)>,
        checkpoint: CopiedCheckpoint,
    ) -> Result<CopyReceiver, AppendError<String>> {
        let status = self.status.borrow().clone();
        if status.is_stopped() {
            return Err(status.refusal());
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job::Copy { entries, checkpoint, reply })
            .await
            .map_err(|_| self.status.borrow().refusal())?;
        Ok(answer)
    }

    /// Appends waiting for the writer (not yet taken into a batch).
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// The writer's status, for health reporting.
    pub fn status(&self) -> watch::Receiver<WriterStatus> {
        self.status.clone()
    }

    /// Group commit counters.
    pub fn stats(&self) -> WriterStatsSnapshot {
        self.stats.snapshot()
    }

    /// The counters themselves, for readers (metrics) that must not hold an appender: an
    /// appender keeps the writer from stopping.
    pub fn stats_handle(&self) -> Arc<WriterStats> {
        self.stats.clone()
    }
}

pub(super) struct WriterSetup<M> {
    pub store: Arc<dyn LogStore>,
    pub machine: M,
    pub signing: Arc<Signing>,
    pub copied: Arc<CopiedCheckpoints>,
    pub frontier: Frontier,
    pub last_hash: Hash,
    pub last_recorded_at: Option<Time>,
    pub head: watch::Sender<Arc<Head>>,
    pub tail: Arc<Tail>,
    pub options: LogOptions,
    pub clock: Clock,
}

pub(super) fn start<M: Machine>(
    setup: WriterSetup<M>,
) -> (Appender<M>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(setup.options.queue_depth.max(1));
    let (status_tx, status_rx) = watch::channel(WriterStatus::Running);
    let stats = Arc::new(WriterStats::default());
    let read_only = setup.options.read_only;
    let writer =
        Writer { setup, failure: Arc::new(Failure { status: status_tx }), stats: stats.clone() };
    if read_only {
        writer.failure.record_status(WriterStatus::DiskFull(
            "the registry started read-only because its disk is full; free space and restart it"
                .into(),
        ));
    }
    let handle = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || writer.run(rx))
        .expect("spawning the log writer thread");
    (Appender { tx, status: status_rx, stats }, handle)
}

struct Writer<M: Machine> {
    setup: WriterSetup<M>,
    failure: Arc<Failure>,
    stats: Arc<WriterStats>,
}

impl<M: Machine> Writer<M> {
    fn run(mut self, mut rx: mpsc::Receiver<Job<M>>) {
        // A rendezvous: the writer runs at most one batch ahead of the sync in progress.
        let (to_syncer, syncer_rx) = std::sync::mpsc::sync_channel::<Written<M::Rejection>>(0);
        let syncer = Syncer {
            store: self.setup.store.clone(),
            failure: self.failure.clone(),
            stats: self.stats.clone(),
        };
        let publisher = Publisher {
            signing: self.setup.signing.clone(),
            copied: self.setup.copied.clone(),
            head: self.setup.head.clone(),
            tail: self.setup.tail.clone(),
            failure: self.failure.clone(),
            witness: self.setup.options.witness.clone(),
        };
        let syncer = std::thread::Builder::new()
            .name("log-syncer".into())
            .spawn(move || syncer.run(syncer_rx, publisher))
            .expect("spawning the log syncer thread");
        // A copy is a batch of its own, so that every head is exactly one of the primary's
        // checkpoints and its roots are checked against it.
        let max_batch = if self.replica() { 1 } else { self.setup.options.max_batch.max(1) };
        let mut stopped = false;
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            while jobs.len() < max_batch {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            // After a failed sync, `commit` answers the jobs with Unavailable and writes nothing.
            match self.commit(jobs) {
                Ok(written) => {
                    if to_syncer.send(written).is_err() {
                        // The syncer is gone (it panicked): nothing can become durable now.
                        self.failure.record("the log syncer stopped".into());
                        stopped = true;
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "log writer stopped after a storage error");
                    self.failure.record_store(&e);
                    stopped = true;
                    break;
                }
            }
        }
        // Dropping the receiver fails every queued append with Unavailable; the syncer answers
        // what it holds and ends.
        drop(rx);
        drop(to_syncer);
        if syncer.join().is_err() {
            tracing::error!("the log syncer thread panicked");
            self.failure.record("the log syncer panicked".into());
        }
        if !stopped && !self.failure.happened() {
            self.write_held_back();
        }
        tracing::debug!("log writer stopped");
    }

    /// Writes what the machine held back, so that the projections the log's close makes
    /// durable are whole. If that fails, the writer is marked failed and the close writes no
    /// snapshot (the next start replays instead).
    fn write_held_back(&mut self) {
        let store = self.setup.store.clone();
        let mut view = View::new(store.as_ref());
        self.setup.machine.write_held_back(&mut view);
        if view.len() == 0 {
            return;
        }
        let batch = WriteBatch {
            projections: view.into_writes(),
            projected_size: Some(self.setup.frontier.size()),
            ..Default::default()
        };
        if let Err(e) = store.write(batch) {
            tracing::error!(error = %e, "writing the held-back projections at close failed");
            self.failure.record_store(&e);
        }
    }

    fn replica(&self) -> bool {
        matches!(self.setup.signing.as_ref(), Signing::Replica(_))
    }

    /// Whether a batch's head may become the readers' head: always here; on a replica only
    /// under a primary's note that carries the extension lines this machine writes (the map
    /// root proven answers need), which the primary's head checkpoints do and the ones it
    /// signs for a cut of its watch stream do not.
    fn publishable(&self, copied: Option<&CopiedCheckpoint>) -> bool {
        copied.is_none_or(|c| !c.extensions.is_empty() || !self.setup.machine.has_extensions())
    }

    /// The next recorded time: now, but always at least a microsecond after the last entry.
    fn next_time(&self) -> Time {
        let now = time::truncate_micros((self.setup.clock)());
        match self.setup.last_recorded_at {
            Some(last) if now <= last => last + MICROSECOND,
            _ => now,
        }
    }

    /// Decides and writes one batch; a storage failure answers the batch's appends and is
    /// returned (fatal).
    fn commit(&mut self, jobs: Vec<Job<M>>) -> Result<Written<M::Rejection>, StoreError> {
        let store = self.setup.store.clone();
        let mut view = View::new(store.as_ref());
        let mut batch = WriteBatch::default();
        let mut in_batch: HashMap<Uuid, RequestRecord> = HashMap::new();
        let mut replies: Vec<Pending<M::Rejection>> = Vec::with_capacity(jobs.len());
        let mut failure: Option<StoreError> = None;
        // What the rules may count as published: the head the syncer last made public.
        let published_size = self.setup.head.borrow().size;

        let mut copied: Option<CopiedCheckpoint> = None;
        for job in jobs {
            let (request_id, digest, command, reply) = match job {
                Job::Append { request_id, digest, command, reply } => {
                    (request_id, digest, command, reply)
                }
                Job::Copy { entries, checkpoint, reply } => {
                    let outcome = match &failure {
                        Some(_) => Err(AppendError::Unavailable(String::new())),
                        None => match self.copy(entries, &checkpoint, &mut view, &mut batch) {
                            Ok(outcome) => outcome,
                            Err(e) => {
                                failure = Some(e);
                                Err(AppendError::Unavailable(String::new()))
                            }
                        },
                    };
                    if let Err(AppendError::Rejected(why)) = &outcome {
                        // The state in memory took part of the copy: nothing more is written.
                        tracing::error!(reason = %why, primary_size = checkpoint.size, "stopped copying the primary's log: it does not verify");
                        self.failure.record(format!("the primary's log does not verify: {why}"));
                        failure = Some(StoreError::Corrupt(why.clone()));
                    }
                    if outcome.is_ok() {
                        copied = Some(checkpoint);
                    }
                    replies.push(Pending::Copy(reply, outcome));
                    continue;
                }
            };
            if failure.is_some() {
                replies.push(Pending::Append(reply, Err(AppendError::Unavailable(String::new()))));
                continue;
            }
            if self.replica() {
                let why = "a replica appends only what it copies from the primary".to_string();
                replies.push(Pending::Append(reply, Err(AppendError::Unavailable(why))));
                continue;
            }
            let outcome = self.one(
                request_id,
                digest,
                command,
                published_size,
                &mut view,
                &mut batch,
                &mut in_batch,
            );
            match outcome {
                Ok(outcome) => replies.push(Pending::Append(reply, outcome)),
                Err(e) => {
                    failure = Some(e);
                    replies
                        .push(Pending::Append(reply, Err(AppendError::Unavailable(String::new()))));
                }
            }
        }

        let mut on_durable = None;
        let mut head = None;
        let mut tail = None;
        let mut staged = crate::store::Staged::default();
        // A replica's head needs the map root only under a checkpoint that signs one. A copy
        // of nothing under such a checkpoint (what an earlier copy left unpublished, found on
        // reconnecting) still needs it: the batches before may have put the hashing off.
        let extensions = copied.as_ref().is_none_or(|c| !c.extensions.is_empty());
        let signs_root = copied.is_some() && extensions;
        if failure.is_none() && (!batch.entries.is_empty() || signs_root) {
            let size = self.setup.frontier.size();
            match self.setup.machine.finish_batch(size, &mut view, extensions) {
                Ok(publish) => on_durable = publish,
                Err(e) => failure = Some(e),
            }
        }
        if failure.is_none() && !batch.entries.is_empty() {
            if store.projections_wanted() {
                self.setup.machine.write_held_back(&mut view);
            }
            batch.held_back = self.setup.machine.holds_back();
        }
        if let (None, Some(checkpoint)) = (&failure, &copied) {
            // The map root the replica computed must be the one the primary signed.
            let signed = !checkpoint.extensions.is_empty();
            let ours = if signed { self.setup.machine.checkpoint_extensions() } else { Vec::new() };
            if signed && checkpoint.extensions != ours {
                let why = format!(
                    "the primary's checkpoint of {} entries carries the extension lines {:?}, \
                     but its entries make {:?}",
                    checkpoint.size, checkpoint.extensions, ours
                );
                tracing::error!(reason = %why, "stopped copying the primary's log: it does not verify");
                self.failure.record(format!("the primary's log does not verify: {why}"));
                for pending in replies.iter_mut() {
                    if let Pending::Copy(_, outcome) = pending {
                        *outcome = Err(AppendError::Rejected(why.clone()));
                    }
                }
                failure = Some(StoreError::Corrupt(why));
            }
        }
        if failure.is_none() && self.failure.happened() {
            // A sync failed meanwhile: write nothing more (see the module documentation).
            failure = Some(match &*self.failure.status.borrow() {
                WriterStatus::DiskFull(_) => StoreError::Full("an earlier sync failed".into()),
                _ => StoreError::Io("an earlier sync failed".into()),
            });
        }
        if let (None, true, Some(checkpoint)) = (&failure, batch.entries.is_empty(), &copied) {
            // A copy of nothing: the primary's checkpoint for what this replica already holds
            // (entries a previous run copied but never published), published as it is.
            let frontier = &self.setup.frontier;
            head = Some(NextHead {
                note: Some(checkpoint.note.clone()),
                publish: self.publishable(Some(checkpoint)),
                size: frontier.size(),
                root: frontier.root(),
                last_hash: self.setup.last_hash,
                last_recorded_at: self.setup.last_recorded_at,
                extensions: checkpoint.extensions.clone(),
            });
        }
        if failure.is_none() && !batch.entries.is_empty() {
            batch.projections = view.into_writes();
            batch.projected_size = Some(self.setup.frontier.size());
            let written = batch.entries.len();
            let copy = TailBatch { entries: batch.entries.clone(), nodes: batch.nodes.clone() };
            match store.stage(batch) {
                Err(e) => failure = Some(e),
                Ok(rest) => {
                    staged = rest;
                    tail = Some(copy);
                    self.stats.record(written);
                    // A replica publishes the primary's note; only a primary signs these.
                    let extensions = match copied {
                        Some(_) => Vec::new(),
                        None => self.setup.machine.checkpoint_extensions(),
                    };
                    let frontier = &self.setup.frontier;
                    head = Some(NextHead {
                        publish: self.publishable(copied.as_ref()),
                        note: copied.map(|c| c.note),
                        size: frontier.size(),
                        root: frontier.root(),
                        last_hash: self.setup.last_hash,
                        last_recorded_at: self.setup.last_recorded_at,
                        extensions,
                    });
                }
            }
        }

        if let Some(e) = failure {
            let status = WriterStatus::after(&e);
            for pending in replies {
                match pending {
                    // Whoever copied hears what failed the check.
                    Pending::Copy(reply, Err(AppendError::Rejected(why))) => {
                        drop(reply.send(Err(AppendError::Rejected(why))))
                    }
                    pending => pending.refuse(&status),
                }
            }
            return Err(e);
        }
        Ok(Written { head, on_durable, tail, staged, replies })
    }

    /// Checks and stages copied entries (see the module documentation). `Err` is a storage
    /// failure; `Ok(Err(Rejected))` a failed check, after which the batch must not be written.
    fn copy(
        &mut self,
        entries: Vec<(Vec<u8>, M::Copied)>,
        checkpoint: &CopiedCheckpoint,
        view: &mut View<'_>,
        batch: &mut WriteBatch,
    ) -> Result<Result<u64, AppendError<String>>, StoreError> {
        if !self.replica() {
            return Ok(Err(AppendError::Unavailable("a primary does not copy entries".into())));
        }
        let setup = &mut self.setup;
        let mut chain =
            ChainVerifier::resume(setup.frontier.size(), setup.last_hash, setup.last_recorded_at);
        for (bytes, prepared) in entries {
            let position = setup.frontier.size();
            let leaf = match chain.push(&bytes) {
                Ok(leaf) => leaf,
                Err(e) => return Ok(Err(AppendError::Rejected(format!("entry {position}: {e}")))),
            };
            let copied = match setup.machine.check_copied(position, prepared, view) {
                Ok(c) => c,
                Err(MachineError::Rejected(why)) => return Ok(Err(AppendError::Rejected(why))),
                Err(MachineError::Store(e)) => return Err(e),
            };
            let CopiedEntry { header, request: (request_id, digest), effects } = copied;
            batch.nodes.extend(setup.frontier.push(leaf));
            batch.entries.push((position, bytes));
            batch.requests.push((request_id, RequestRecord { position, digest }));
            setup.last_hash = leaf;
            setup.last_recorded_at = Some(header.recorded_at);
            setup.machine.apply(&header, &effects, view)?;
        }
        let (size, root) = (setup.frontier.size(), setup.frontier.root());
        if size != checkpoint.size || root != checkpoint.root {
            return Ok(Err(AppendError::Rejected(format!(
                "the entries copied end at {size} with root {}, but the primary's checkpoint \
                 signs {} entries with root {}",
                hex::encode(root),
                checkpoint.size,
                hex::encode(checkpoint.root)
            ))));
        }
        Ok(Ok(size))
    }

    /// Handles one append inside the batch. `Err` is a storage failure (fatal); a refusal is an
    /// `Ok(Err(..))` outcome.
    #[allow(clippy::too_many_arguments)]
    fn one(
        &mut self,
        request_id: Uuid,
        digest: Hash,
        command: M::Command,
        published_size: u64,
        view: &mut View<'_>,
        batch: &mut WriteBatch,
        in_batch: &mut HashMap<Uuid, RequestRecord>,
    ) -> Result<Outcome<M::Rejection>, StoreError> {
        let known = match in_batch.get(&request_id) {
            Some(r) => Some(*r),
            None => self.setup.store.request(&request_id)?,
        };
        if let Some(record) = known {
            return Ok(if record.digest == digest {
                Ok(Appended { position: record.position, duplicate: true })
            } else {
                Err(AppendError::AlreadyExists { position: record.position })
            });
        }

        let context = EntryContext {
            position: self.setup.frontier.size(),
            recorded_at: self.next_time(),
            published_size,
        };
        let decided = match self.setup.machine.decide(&command, &context, view) {
            Ok(d) => d,
            Err(MachineError::Rejected(r)) => return Ok(Err(AppendError::Rejected(r))),
            Err(MachineError::Store(e)) => return Err(e),
        };
        let header = EntryHeader {
            position: context.position,
            recorded_at: context.recorded_at,
            prev_hash: self.setup.last_hash,
        };
        let bytes = encode_entry(&header, &decided.body);
        let leaf = leaf_hash(&bytes);
        batch.nodes.extend(self.setup.frontier.push(leaf));
        batch.entries.push((header.position, bytes));
        let record = RequestRecord { position: header.position, digest };
        batch.requests.push((request_id, record));
        in_batch.insert(request_id, record);
        self.setup.last_hash = leaf;
        self.setup.last_recorded_at = Some(header.recorded_at);
        self.setup.machine.apply(&header, &decided.effects, view)?;
        Ok(Ok(Appended { position: header.position, duplicate: false }))
    }
}
