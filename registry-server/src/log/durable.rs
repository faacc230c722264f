//! The stages after a group commit is staged: the syncer writes what the writer staged and
//! makes batches durable (one sync for all handed over by then), the publisher witnesses the
//! newest head's checkpoint, then publishes the head and answers every append and copy,
//! strictly in batch order. See [`super::writer`] for how they overlap with the writer, and
//! why a failure anywhere is final.

use std::sync::Arc;

use registry_core::merkle::Hash;
use registry_core::time::Time;
use tokio::sync::watch;

use super::reader::CopiedCheckpoints;
use super::stats::WriterStats;
use super::tail::{Tail, TailBatch};
use super::writer::{AppendError, Appended, CopyReply, Reply, WriterStatus};
use super::{Head, OnDurable, Signing, sign_checkpoint};
use crate::store::{LogStore, StoreError};

/// Whether the log has failed, shared by the writer and the syncer: whichever thread meets a
/// storage error first records it, and both then stop appending.
pub(super) struct Failure {
    /// The one source of truth: a thread that sees the log failed also sees why.
    pub(super) status: watch::Sender<WriterStatus>,
}

impl Failure {
    pub(super) fn happened(&self) -> bool {
        self.status.borrow().is_stopped()
    }

    /// Marks the log failed, keeping the first reason.
    pub(super) fn record(&self, why: String) {
        self.record_status(WriterStatus::Failed(why));
    }

    /// Marks the log failed by a storage error (unless it failed before) and returns the status
    /// it has now, the first failure's.
    pub(super) fn record_store(&self, e: &StoreError) -> WriterStatus {
        self.record_status(WriterStatus::after(e))
    }

    pub(super) fn record_status(&self, status: WriterStatus) -> WriterStatus {
        self.status.send_if_modified(|now| {
            let first = *now == WriterStatus::Running;
            if first {
                *now = status;
            }
            first
        });
        self.status.borrow().clone()
    }
}

pub(super) type Outcome<R> = Result<Appended, AppendError<R>>;

/// A reply channel with the answer it will get once the batch is durable.
pub(super) enum Pending<R> {
    Append(Reply<R>, Outcome<R>),
    Copy(CopyReply, Result<u64, AppendError<String>>),
}

impl<R> Pending<R> {
    /// Sends the answer.
    pub(super) fn answer(self) {
        match self {
            Pending::Append(reply, outcome) => drop(reply.send(outcome)),
            Pending::Copy(reply, outcome) => drop(reply.send(outcome)),
        }
    }

    /// Sends the refusal of a writer stopped this way instead.
    pub(super) fn refuse(self, status: &WriterStatus) {
        match self {
            Pending::Append(reply, _) => drop(reply.send(Err(status.refusal()))),
            Pending::Copy(reply, _) => drop(reply.send(Err(status.refusal()))),
        }
    }
}

/// A batch in the store, on its way to the syncer.
pub(super) struct Written<R> {
    /// The head it leads to, if it appended anything (else only its answers wait for the
    /// batches before it).
    pub(super) head: Option<NextHead>,
    /// What the machine publishes once the batch is durable.
    pub(super) on_durable: OnDurable,
    /// A copy of the batch's entries and nodes for the readers' tail.
    pub(super) tail: Option<TailBatch>,
    /// What the store left for the syncer to write before it syncs (see `LogStore::stage`).
    pub(super) staged: crate::store::Staged,
    pub(super) replies: Vec<Pending<R>>,
}

/// A head before its checkpoint is signed.
pub(super) struct NextHead {
    /// The primary's note for it, on a replica (else it is signed here).
    pub(super) note: Option<Arc<str>>,
    /// Whether it becomes the readers' head. A replica's copy under a note without the map's
    /// extension line is durable but not published: proven answers need the map root in the
    /// head's checkpoint. Its map changes wait for the next head that is published.
    pub(super) publish: bool,
    pub(super) size: u64,
    pub(super) root: Hash,
    pub(super) last_hash: Hash,
    pub(super) last_recorded_at: Option<Time>,
    pub(super) extensions: Vec<String>,
}

/// Makes written batches durable and hands them, in order, to the [`Publisher`].
pub(super) struct Syncer {
    pub(super) store: Arc<dyn LogStore>,
    pub(super) failure: Arc<Failure>,
    pub(super) stats: Arc<WriterStats>,
}

/// A group of written batches after the syncer: durable, or refused for this reason.
pub(super) struct Synced<R> {
    pub(super) group: Vec<Written<R>>,
    pub(super) refused: Option<WriterStatus>,
}

impl Syncer {
    pub(super) fn run<R: Send + 'static>(
        self,
        rx: std::sync::mpsc::Receiver<Written<R>>,
        publisher: Publisher,
    ) {
        // A rendezvous again: the syncer syncs the next group while the publisher witnesses
        // this one, and runs at most one group ahead of it.
        let (to_publisher, publisher_rx) = std::sync::mpsc::sync_channel::<Synced<R>>(0);
        let publishing = std::thread::Builder::new()
            .name("log-publisher".into())
            .spawn(move || publisher.run(publisher_rx))
            .expect("spawning the log publisher thread");
        let mut failure: Option<WriterStatus> = None;
        while let Ok(first) = rx.recv() {
            // Everything written by now shares one sync.
            let mut group = vec![first];
            group.extend(rx.try_iter());
            if failure.is_none() && self.failure.happened() {
                failure = Some(self.failure.status.borrow().clone());
            }
            // The writer staged these batches in order; they are written in that order here,
            // off its thread, and the sync below covers them.
            for written in &mut group {
                let staged = std::mem::take(&mut written.staged);
                if failure.is_none()
                    && let Err(e) = self.store.apply_staged(staged)
                {
                    tracing::error!(error = %e, "log writer stopped after a failed write");
                    failure = Some(self.failure.record_store(&e));
                }
            }
            if failure.is_none() && group.iter().any(|w| w.head.is_some()) {
                let started = std::time::Instant::now();
                let synced = self.store.sync();
                self.stats.sync_seconds.observe(started.elapsed().as_secs_f64());
                if let Err(e) = synced {
                    tracing::error!(error = %e, "log writer stopped after a failed sync");
                    failure = Some(self.failure.record_store(&e));
                }
            }
            if let Err(unsent) = to_publisher.send(Synced { group, refused: failure.clone() }) {
                // The publisher is gone (it panicked): nothing more can be published.
                let status = self
                    .failure
                    .record_status(WriterStatus::Failed("the log publisher stopped".into()));
                for pending in unsent.0.group.into_iter().flat_map(|w| w.replies) {
                    pending.refuse(&status);
                }
                failure = Some(status);
            }
        }
        drop(to_publisher);
        if publishing.join().is_err() {
            tracing::error!("the log publisher thread panicked");
            self.failure.record("the log publisher panicked".into());
        }
    }
}

/// Publishes durable batches and answers appends, strictly in batch order. The newest head's
/// checkpoint is signed and witnessed (see `super::witness`) before anything about it is
/// public; then the batches reach the readers' tail and the head is published, so that a
/// caller who hears back can read its entry. Witnessing overlaps the syncer's next sync.
pub(super) struct Publisher {
    pub(super) signing: Arc<Signing>,
    pub(super) copied: Arc<CopiedCheckpoints>,
    pub(super) head: watch::Sender<Arc<Head>>,
    pub(super) tail: Arc<Tail>,
    pub(super) failure: Arc<Failure>,
    pub(super) witness: Option<super::Witness>,
}

impl Publisher {
    pub(super) fn run<R>(self, rx: std::sync::mpsc::Receiver<Synced<R>>) {
        // Map publications of durable batches no published head covers yet, in order.
        let mut deferred: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
        // Once a witness could not be written, nothing after it is published.
        let mut failure: Option<WriterStatus> = None;
        while let Ok(Synced { mut group, refused }) = rx.recv() {
            if let Some(status) = refused.or_else(|| failure.clone()) {
                for pending in group.into_iter().flat_map(|w| w.replies) {
                    pending.refuse(&status);
                }
                continue;
            }
            // The newest head to publish, and the map publications up to it.
            let mut newest: Option<NextHead> = None;
            let mut ready = Vec::new();
            for w in &mut group {
                deferred.extend(w.on_durable.take());
                if let Some(h) = w.head.take() {
                    if let Some(note) = &h.note {
                        self.copied.insert(h.size, note.clone());
                    }
                    if h.publish {
                        ready.append(&mut deferred);
                        newest = Some(h);
                    }
                }
            }
            let head = newest.map(|h| {
                let checkpoint = match (h.note, self.signing.as_ref()) {
                    (Some(note), _) => note,
                    (None, Signing::Primary(signer)) => {
                        sign_checkpoint(signer, h.size, h.root, h.extensions).into()
                    }
                    // The writer never makes a head without a note on a replica.
                    (None, Signing::Replica(_)) => "".into(),
                };
                Head {
                    size: h.size,
                    root: h.root,
                    last_hash: h.last_hash,
                    last_recorded_at: h.last_recorded_at,
                    checkpoint,
                }
            });
            if let (Some(head), Some(witness)) = (&head, &self.witness)
                && let Err(e) = witness.record(&head.checkpoint)
            {
                let e = StoreError::from(e);
                tracing::error!(error = %e, witness = %witness.path().display(), "log writer stopped: the signed checkpoint could not be witnessed");
                let status = self.failure.record_store(&e);
                for pending in group.into_iter().flat_map(|w| w.replies) {
                    pending.refuse(&status);
                }
                failure = Some(status);
                continue;
            }
            for publish in ready {
                publish();
            }
            for w in &mut group {
                if let Some(batch) = w.tail.take() {
                    self.tail.push(batch);
                }
            }
            if let Some(head) = head {
                self.head.send_replace(Arc::new(head));
            }
            for pending in group.into_iter().flat_map(|w| w.replies) {
                pending.answer();
            }
        }
    }
}
