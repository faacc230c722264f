//! The copying loop of a replica: connect to the primary, check that its newest checkpoint is
//! consistent with what this replica holds, then take its watch stream and hand each message
//! (entries and the checkpoint that covers them exactly) to the log writer as one copy.
//!
//! Signatures are checked on every core before a message reaches the writer ([`Preparer`]),
//! which runs the checks that need the state in order (see `registry_core::replay::Prepared`);
//! up to [`IN_FLIGHT`] copies are in hand at once, so one copy's sync overlaps the next one's
//! checks.
//! A broken connection or a restarting primary is retried with backoff from where the copy
//! stands; anything that shows the primary's log is not the one this replica verified stops the
//! loop for good ([`Fault::Diverged`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use registry_core::checkpoint::Checkpoint;
use registry_core::entry;
use registry_core::merkle::{self, Hash};
use registry_core::note::NoteVerifier;
use registry_proto::pb;
use tokio_util::sync::CancellationToken;

use super::prepare::{PreparedEntry, Preparer};
use super::{Primary, ReplicaStatus};
use crate::log::{AppendError, Appender, CopiedCheckpoint, CopyReceiver, LogReader, StoreNodes};
use crate::machine::RegistryMachine;
use crate::store::LogStore;

/// Copies queued for the writer at once.
const IN_FLIGHT: usize = 4;

/// The service a replica reports `SERVING` for only while its answers are fresh (see
/// [`watch_freshness`]).
pub const LOOKUP_SERVICE: &str = "keyregistry.v1.LookupService";

/// Keeps the replica's readiness current until `stop`: fresh while it is connected to the
/// primary, has published everything it copied and is not behind what it has seen of the
/// primary; `ready(true)` while it was fresh within `max_staleness` (`None`: once fresh, ready
/// for good), `ready(false)` otherwise. A replica cut off from its primary would otherwise go
/// on saying a key revoked since is valid, and a load balancer would keep asking it. It looks
/// at every publish and on a tick (staleness grows with no publish at all).
pub async fn watch_freshness(
    status: Arc<ReplicaStatus>,
    reader: LogReader,
    max_staleness: Option<Duration>,
    ready: impl Fn(bool),
    stop: CancellationToken,
) {
    let mut fresh_at: Option<tokio::time::Instant> = None;
    let mut shown: Option<bool> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = status.moved.notified() => {}
            () = stop.cancelled() => return,
        }
        let tip = reader.store().size().unwrap_or(u64::MAX);
        if status.connected() && status.lag_entries() == 0 && reader.head().size == tip {
            fresh_at = Some(tokio::time::Instant::now());
        }
        let now_ready = fresh_at.is_some_and(|at| max_staleness.is_none_or(|m| at.elapsed() <= m));
        if shown != Some(now_ready) {
            if shown.is_some() || now_ready {
                tracing::info!(ready = now_ready, "replica readiness (fresh answers) changed");
            }
            ready(now_ready);
            shown = Some(now_ready);
        }
    }
}

/// Why a session with the primary ended.
enum Fault {
    /// The connection, the primary or the stream failed: try again.
    Transient(String),
    /// The primary's log is not the one this replica verified, or this replica can no longer
    /// write: stop following.
    Diverged(String),
}

/// What the loop needs.
pub struct Follower {
    /// This replica's identity in its progress reports.
    pub replica_id: String,
    /// Appends the copies.
    pub appender: Appender<RegistryMachine>,
    /// This replica's log.
    pub reader: LogReader,
    /// The primary.
    pub primary: Primary,
    /// The registry key the primary's checkpoints must verify with.
    pub verifier: NoteVerifier,
    /// The same key, DER, to compare with what the primary names.
    pub key_der: Vec<u8>,
    /// Where the loop reports.
    pub status: Arc<ReplicaStatus>,
}

impl Follower {
    /// Follows the primary until `stop` is cancelled or the primary's log shows it must not.
    pub async fn run(self, stop: CancellationToken) {
        let preparer = Preparer::start(self.reader.store().clone(), crate::cores::count());
        let mut tip = match self.reader.store().size() {
            Ok(size) => size,
            Err(e) => {
                self.status.stop(format!("the replica's own log cannot be read: {e}"));
                return;
            }
        };
        self.status.published(self.reader.head().size, None);
        let mut backoff = Duration::from_millis(100);
        loop {
            let outcome = tokio::select! {
                outcome = self.session(&mut tip, &preparer) => outcome,
                () = stop.cancelled() => return,
            };
            // A connection that worked is retried at once: the backoff is for a primary away.
            if self.status.connected() {
                backoff = Duration::from_millis(100);
            }
            self.status.connected.store(false, std::sync::atomic::Ordering::Relaxed);
            match outcome {
                Fault::Diverged(why) => {
                    tracing::error!(primary = %self.primary.url, reason = %why,
                        "stopped following the primary; this replica keeps serving what it \
                         verified (see deploy/README.md, \"Replicas\")");
                    self.status.stop(why);
                    return;
                }
                Fault::Transient(why) => {
                    tracing::warn!(primary = %self.primary.url, reason = %why, retry_in = ?backoff,
                        "following the primary was interrupted");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// One connection: check, then copy from the watch stream until it fails. `tip` is the size
    /// of this replica's log (copied and durable) and moves with every copy.
    async fn session(&self, tip: &mut u64, preparer: &Preparer) -> Fault {
        let channel = match self.primary.channel().await {
            Ok(c) => c,
            Err(e) => return Fault::Transient(format!("connecting: {e}")),
        };
        let mut audit = Primary::audit(channel.clone());
        let info = match audit.get_registry_info(pb::GetRegistryInfoRequest {}).await {
            Ok(r) => r.into_inner(),
            Err(s) => return Fault::Transient(format!("GetRegistryInfo: {}", s.message())),
        };
        if info.public_key_der != self.key_der || info.origin != self.reader.origin() {
            return Fault::Diverged(format!(
                "the server at {} is registry {:?} with key {}, not the one this replica follows",
                self.primary.url, info.origin, info.fingerprint
            ));
        }
        let newest = match audit.get_checkpoint(pb::GetCheckpointRequest { tree_size: 0 }).await {
            Ok(r) => r.into_inner(),
            Err(s) => return Fault::Transient(format!("GetCheckpoint: {}", s.message())),
        };
        let newest_note = newest.checkpoint;
        let newest = match self.open(&newest_note) {
            Ok(c) => c,
            Err(f) => return f,
        };
        if let Err(f) = self.consistent(&mut audit, &newest, *tip).await {
            return f;
        }
        self.status.seen(newest.size, None);
        if newest.size == *tip && self.reader.head().size < *tip {
            // A previous run copied these entries but stopped before publishing them: the
            // primary's checkpoint for exactly them publishes them now.
            let copied = CopiedCheckpoint {
                note: newest_note.into(),
                size: newest.size,
                root: newest.root,
                extensions: newest.extensions.clone(),
            };
            let outcome = match self.appender.copy(Vec::new(), copied).await {
                Ok(answer) => answer.await.ok(),
                Err(e) => Some(Err(e)),
            };
            if let Err(f) = self.finish(newest.size, outcome, None, tip) {
                return f;
            }
        }
        let request = pb::WatchEntriesRequest { start: *tip };
        let stream = match audit.watch_entries(request).await {
            Ok(r) => r.into_inner(),
            Err(s) => return Fault::Transient(format!("WatchEntries: {}", s.message())),
        };
        self.status.connected.store(true, std::sync::atomic::Ordering::Relaxed);
        let (report, reports) = tokio::sync::watch::channel(*tip);
        let reporter = tokio::spawn(report_progress(
            channel,
            self.primary.token.clone(),
            self.replica_id.clone(),
            self.reader.store().clone(),
            reports,
        ));
        let fault = self.copy(stream, tip, &report, preparer).await;
        reporter.abort();
        fault
    }

    /// Copies what the watch stream sends until it fails, telling `report` each size that
    /// became durable here. Up to [`IN_FLIGHT`] messages are in hand at once, preparing or
    /// queued for the writer; they reach the writer in stream order as their preparation ends,
    /// so the cores check one message's signatures while the writer stores the one before.
    async fn copy(
        &self,
        mut stream: tonic::Streaming<pb::WatchEntriesResponse>,
        tip: &mut u64,
        report: &tokio::sync::watch::Sender<u64>,
        preparer: &Preparer,
    ) -> Fault {
        let mut preparing: VecDeque<Preparing> = VecDeque::new();
        let mut queued: VecDeque<Copying> = VecDeque::new();
        let mut sent = *tip;
        let fault = loop {
            // A finished copy is reported at once, not when the next message arrives: a primary
            // with `sync_replicas` holds its answer until then.
            tokio::select! {
                biased;
                done = async { (&mut queued.front_mut()?.handle).await.ok() }, if !queued.is_empty() => {
                    let Some(copying) = queued.pop_front() else { continue };
                    let next = queued.front().map(|c| &c.pending).or(preparing.front().map(|p| &p.pending));
                    if let Err(f) = self.finish(copying.pending.size, done, next, tip) {
                        return f;
                    }
                    report.send_replace(*tip);
                }
                prepared = async { (&mut preparing.front_mut()?.work).await.ok().flatten() }, if !preparing.is_empty() => {
                    let Some(Preparing { pending, copied, .. }) = preparing.pop_front() else { continue };
                    let Some(prepared) = prepared else {
                        break Fault::Diverged("preparing entries failed".into());
                    };
                    match self.appender.copy(prepared, copied).await {
                        Ok(handle) => queued.push_back(Copying { pending, handle }),
                        Err(e) => break Fault::Diverged(format!("this replica can no longer write: {e}")),
                    }
                }
                message = stream.message(), if queued.len() + preparing.len() < IN_FLIGHT => {
                    let message = match message {
                        Ok(Some(m)) => m,
                        Ok(None) => break Fault::Transient("the primary ended the stream".into()),
                        Err(s) => {
                            break Fault::Transient(format!("the watch stream: {}", s.message()))
                        }
                    };
                    match self.submit(message, sent, preparer) {
                        Ok(next) => {
                            sent = next.pending.size;
                            preparing.push_back(next);
                        }
                        Err(f) => break f,
                    }
                }
            }
        };
        // What was handed to the writer is finished (or failed) before the next session; what
        // is still being prepared is dropped, and copied again from the tip.
        drop(preparing);
        while let Some(Copying { pending, handle }) = queued.pop_front() {
            let done = handle.await.ok();
            if let Err(f) = self.finish(pending.size, done, queued.front().map(|c| &c.pending), tip)
            {
                return f;
            }
            report.send_replace(*tip);
        }
        fault
    }

    fn open(&self, note: &str) -> Result<Checkpoint, Fault> {
        Checkpoint::open(note, &self.verifier).map_err(|e| {
            Fault::Diverged(format!("the primary sent a checkpoint that does not verify: {e}"))
        })
    }

    /// Checks that the primary's newest checkpoint extends this replica's log (of `tip`
    /// entries): a consistency proof from `tip`, or for a shorter primary, a refusal.
    async fn consistent(
        &self,
        audit: &mut pb::audit_service_client::AuditServiceClient<tonic::transport::Channel>,
        newest: &Checkpoint,
        tip: u64,
    ) -> Result<(), Fault> {
        if tip == 0 {
            return Ok(());
        }
        let ours = self.root(tip)?;
        if newest.size < tip {
            return Err(Fault::Diverged(format!(
                "the primary's newest checkpoint covers {} entries, but this replica copied {tip} \
                 under its checkpoints: it lost entries it had signed",
                newest.size
            )));
        }
        if newest.size == tip {
            return match newest.root == ours {
                true => Ok(()),
                false => Err(Fault::Diverged(format!(
                    "the primary signs another root for {tip} entries than this replica holds"
                ))),
            };
        }
        let request = pb::GetConsistencyProofRequest { from_size: tip, to_size: newest.size };
        let proof = match audit.get_consistency_proof(request).await {
            Ok(r) => r.into_inner().proof,
            Err(s) => {
                return Err(Fault::Transient(format!("GetConsistencyProof: {}", s.message())));
            }
        };
        merkle::verify_consistency(tip, newest.size, &ours, &newest.root, &proof).map_err(|e| {
            Fault::Diverged(format!(
                "the primary's checkpoint of {} entries is not consistent with the {tip} this \
                 replica holds: {e}",
                newest.size
            ))
        })
    }

    fn root(&self, size: u64) -> Result<Hash, Fault> {
        merkle::root(&StoreNodes(self.reader.store().as_ref()), size).map_err(|e| {
            Fault::Diverged(format!("this replica's own Merkle tree cannot be read: {e}"))
        })
    }

    /// Checks a watch message's shape and checkpoint and starts preparing its entries on
    /// every core; `next` is the position it must start at.
    fn submit(
        &self,
        message: pb::WatchEntriesResponse,
        next: u64,
        preparer: &Preparer,
    ) -> Result<Preparing, Fault> {
        let checkpoint = self.open(&message.checkpoint)?;
        let mut entries = Vec::with_capacity(message.entries.len());
        for (i, e) in message.entries.into_iter().enumerate() {
            if e.position != next + i as u64 {
                return Err(Fault::Transient(format!(
                    "the watch stream sent entry {} where {} was due",
                    e.position,
                    next + i as u64
                )));
            }
            entries.push(e.entry);
        }
        let size = next + entries.len() as u64;
        if checkpoint.size != size {
            return Err(Fault::Diverged(format!(
                "the primary's checkpoint covers {} entries, but its message ends at {size}",
                checkpoint.size
            )));
        }
        let first_time =
            entries.first().and_then(|b| entry::decode_header(b).ok()).map(|h| h.recorded_at);
        self.status.seen(size, first_time);
        let work = preparer.prepare(entries);
        let copied = CopiedCheckpoint {
            note: message.checkpoint.into(),
            size,
            root: checkpoint.root,
            extensions: checkpoint.extensions,
        };
        Ok(Preparing { pending: Pending { size, first_time }, copied, work })
    }

    /// Takes the outcome of a copy (`None`: the writer died without answering); `next` is the
    /// one queued after it, if any.
    fn finish(
        &self,
        size: u64,
        outcome: Option<Result<u64, AppendError<String>>>,
        next: Option<&Pending>,
        tip: &mut u64,
    ) -> Result<(), Fault> {
        match outcome {
            Some(Ok(copied)) => {
                debug_assert_eq!(copied, size);
                *tip = copied;
                self.status.published(copied, next.and_then(|n| n.first_time));
                Ok(())
            }
            Some(Err(AppendError::Rejected(why))) => {
                Err(Fault::Diverged(format!("the primary's log does not verify: {why}")))
            }
            Some(Err(e)) => Err(Fault::Diverged(format!("this replica can no longer write: {e}"))),
            None => Err(Fault::Diverged("the log writer stopped without answering".into())),
        }
    }
}

/// Tells the primary each size this replica holds durably (with its root), newest first: a
/// primary with `sync_replicas` acknowledges writes by these reports. A failed report is
/// retried with the next size; the session's end stops it.
async fn report_progress(
    channel: tonic::transport::Channel,
    token: Option<String>,
    replica_id: String,
    store: Arc<dyn LogStore>,
    mut sizes: tokio::sync::watch::Receiver<u64>,
) {
    let mut client = pb::replication_service_client::ReplicationServiceClient::new(channel);
    let mut warned = false;
    let mut failed = false;
    loop {
        let size = *sizes.borrow_and_update();
        if size > 0 {
            let s = store.clone();
            let root = tokio::task::spawn_blocking(move || {
                merkle::root(&StoreNodes(s.as_ref()), size).ok()
            })
            .await
            .ok()
            .flatten();
            if let Some(root) = root {
                let mut request = tonic::Request::new(pb::ReportProgressRequest {
                    replica_id: replica_id.clone(),
                    size,
                    root_hash: root.to_vec(),
                });
                let bearer = token.as_ref().and_then(|t| format!("Bearer {t}").parse().ok());
                if let Some(bearer) = bearer {
                    request.metadata_mut().insert("authorization", bearer);
                }
                let sent = client.report_progress(request).await;
                failed = sent.is_err();
                match sent {
                    Err(s) if !warned => {
                        // Once per connection: a primary that refuses every report (a wrong
                        // token) would otherwise be said at every copy.
                        warned = true;
                        tracing::warn!(error = %s.message(), code = ?s.code(),
                            "the primary refused a progress report; with sync_replicas its \
                             commands wait for this replica in vain");
                    }
                    Err(s) => tracing::debug!(error = %s.message(), "a progress report failed"),
                    Ok(_) => warned = false,
                }
            }
        }
        // A report that failed is sent again after a second even if nothing new was copied:
        // the command waiting for it may be the last of a burst.
        let retry = tokio::time::sleep(Duration::from_secs(1));
        tokio::select! {
            changed = sizes.changed() => if changed.is_err() { return },
            () = retry, if failed => {}
        }
    }
}

/// Where a message's copy will end, and what it starts with.
struct Pending {
    /// The log size once it is done.
    size: u64,
    /// Recorded time of its first entry.
    first_time: Option<registry_core::time::Time>,
}

/// A message whose entries are being prepared.
struct Preparing {
    pending: Pending,
    copied: CopiedCheckpoint,
    work: tokio::task::JoinHandle<Option<Vec<PreparedEntry>>>,
}

/// A copy handed to the writer.
struct Copying {
    pending: Pending,
    handle: CopyReceiver,
}
