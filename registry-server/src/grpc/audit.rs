//! The audit service: checkpoints, entries, proofs and the live watch.
//!
//! Everything here reads through [`LogReader`], which never goes past the durable head, and
//! every stream ends cleanly (with `UNAVAILABLE` and a resume position) when the server shuts
//! down.

use std::pin::Pin;
use std::sync::Arc;

use registry_core::merkle;
use registry_proto::pb::audit_service_server::AuditService;
use registry_proto::pb::{
    GetCheckpointRequest, GetCheckpointResponse, GetConsistencyProofRequest,
    GetConsistencyProofResponse, GetEntriesRequest, GetEntriesResponse, GetInclusionProofRequest,
    GetInclusionProofResponse, GetRegistryInfoRequest, GetRegistryInfoResponse, StoredEntry,
    WatchEntriesRequest, WatchEntriesResponse,
};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::status;
use crate::log::{LogReader, ReadError};

/// Entries per streamed message, at most: a replica or mirror catching up verifies and syncs
/// once per message, so fewer, larger ones copy faster (1,024 took a 100,000-key copy from
/// 17,500 to see `tests/bench/replica.sh` entries/s).
const CHUNK_ENTRIES: u64 = 1024;
/// Bytes of entries per streamed message, at most (one entry is always sent).
const CHUNK_BYTES: usize = 1 << 20;

/// The registry's public identity, as served by `GetRegistryInfo`.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Checkpoint origin and note key name.
    pub origin: String,
    /// DER SubjectPublicKeyInfo of the registry key.
    pub public_key_der: Vec<u8>,
    /// PEM of the same.
    pub public_key_pem: String,
    /// Note key ID, hex.
    pub key_id: String,
    /// Fingerprint, hex.
    pub fingerprint: String,
}

/// Reads the writer's counters (the writer is generic over its machine; this is not).
pub type WriterStatsSource = Arc<dyn Fn() -> crate::log::WriterStatsSnapshot + Send + Sync>;

/// See the module documentation.
pub struct AuditApi {
    reader: LogReader,
    identity: Arc<Identity>,
    writer_stats: WriterStatsSource,
    shutdown: CancellationToken,
}

impl AuditApi {
    /// A service over `reader` that ends its streams when `shutdown` is cancelled.
    pub fn new(
        reader: LogReader,
        identity: Arc<Identity>,
        writer_stats: WriterStatsSource,
        shutdown: CancellationToken,
    ) -> Self {
        Self { reader, identity, writer_stats, shutdown }
    }

    /// The registry's identity, which the lookup page pins.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Reads the next message's worth of entries from `start` (below `end`) off the async runtime.
async fn read_chunk(reader: &LogReader, start: u64, end: u64) -> Result<Vec<StoredEntry>, Status> {
    let reader = reader.clone();
    let entries = status::blocking(move || reader.entries(start, end, CHUNK_ENTRIES)).await?;
    let mut bytes = 0;
    let mut out = Vec::with_capacity(entries.len());
    for (position, entry) in entries {
        bytes += entry.len();
        if !out.is_empty() && bytes > CHUNK_BYTES {
            break;
        }
        out.push(StoredEntry { position, entry });
    }
    Ok(out)
}

fn next_after(chunk: &[StoredEntry], start: u64) -> u64 {
    chunk.last().map_or(start, |e| e.position + 1)
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn get_registry_info(
        &self,
        _: Request<GetRegistryInfoRequest>,
    ) -> Result<Response<GetRegistryInfoResponse>, Status> {
        let id = &self.identity;
        Ok(Response::new(GetRegistryInfoResponse {
            origin: id.origin.clone(),
            public_key_der: id.public_key_der.clone(),
            public_key_pem: id.public_key_pem.clone(),
            key_id: id.key_id.clone(),
            fingerprint: id.fingerprint.clone(),
            writer: Some({
                let s = (self.writer_stats)();
                registry_proto::pb::WriterStatistics {
                    group_commits: s.batches,
                    entries: s.entries,
                    largest_group_commit: s.largest,
                }
            }),
        }))
    }

    async fn get_checkpoint(
        &self,
        request: Request<GetCheckpointRequest>,
    ) -> Result<Response<GetCheckpointResponse>, Status> {
        let requested = request.into_inner().tree_size;
        let size = self.reader.resolve_size(requested).map_err(|e| match e {
            ReadError::OutOfRange(m) => status::out_of_range("tree_size", m),
            other => Status::from(other),
        })?;
        let reader = self.reader.clone();
        let (checkpoint, root) = status::blocking(move || {
            Ok::<_, ReadError>((reader.checkpoint(size)?, reader.root(size)?))
        })
        .await?;
        Ok(Response::new(GetCheckpointResponse {
            checkpoint,
            tree_size: size,
            root_hash: root.to_vec(),
        }))
    }

    type GetEntriesStream = BoxStream<GetEntriesResponse>;

    async fn get_entries(
        &self,
        request: Request<GetEntriesRequest>,
    ) -> Result<Response<Self::GetEntriesStream>, Status> {
        let GetEntriesRequest { start, end } = request.into_inner();
        let size = self.reader.head().size;
        if start > size {
            return Err(status::out_of_range(
                "start",
                format!("start {start} is past the end of the log (size {size})"),
            ));
        }
        if end != 0 && end < start {
            return Err(status::invalid("end", "must be 0 (to the end) or not below start"));
        }
        let end = if end == 0 { size } else { end.min(size) };
        let (tx, rx) = mpsc::channel(4);
        let (reader, shutdown) = (self.reader.clone(), self.shutdown.clone());
        tokio::spawn(async move {
            let mut next = start;
            while next < end {
                if shutdown.is_cancelled() {
                    let _ = tx.send(Err(status::shutting_down(next))).await;
                    return;
                }
                let chunk = match read_chunk(&reader, next, end).await {
                    Ok(c) if !c.is_empty() => c,
                    Ok(_) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                next = next_after(&chunk, next);
                if tx.send(Ok(GetEntriesResponse { entries: chunk })).await.is_err() {
                    return; // The client went away.
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<GetInclusionProofRequest>,
    ) -> Result<Response<GetInclusionProofResponse>, Status> {
        let GetInclusionProofRequest { position, tree_size } = request.into_inner();
        let size = self.reader.resolve_size(tree_size).map_err(|e| match e {
            ReadError::OutOfRange(m) => status::out_of_range("tree_size", m),
            other => Status::from(other),
        })?;
        if position >= size {
            return Err(status::out_of_range(
                "position",
                format!("position {position} is not below tree size {size}"),
            ));
        }
        let reader = self.reader.clone();
        let (leaf, proof) = status::blocking(move || {
            let entry = reader.entry(position)?;
            Ok::<_, ReadError>((merkle::leaf_hash(&entry), reader.inclusion_proof(position, size)?))
        })
        .await?;
        Ok(Response::new(GetInclusionProofResponse {
            position,
            tree_size: size,
            leaf_hash: leaf.to_vec(),
            proof: proof.iter().map(|h| h.to_vec()).collect(),
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<GetConsistencyProofRequest>,
    ) -> Result<Response<GetConsistencyProofResponse>, Status> {
        let GetConsistencyProofRequest { from_size, to_size } = request.into_inner();
        if from_size == 0 {
            return Err(status::invalid("from_size", "must be at least 1"));
        }
        let to = self.reader.resolve_size(to_size).map_err(|e| match e {
            ReadError::OutOfRange(m) => status::out_of_range("to_size", m),
            other => Status::from(other),
        })?;
        if from_size > to {
            return Err(status::out_of_range(
                "from_size",
                format!("from_size {from_size} is larger than to_size {to}"),
            ));
        }
        let reader = self.reader.clone();
        let proof = status::blocking(move || reader.consistency_proof(from_size, to)).await?;
        Ok(Response::new(GetConsistencyProofResponse {
            from_size,
            to_size: to,
            proof: proof.iter().map(|h| h.to_vec()).collect(),
        }))
    }

    async fn get_receipt(
        &self,
        request: Request<registry_proto::pb::GetReceiptRequest>,
    ) -> Result<Response<registry_proto::pb::GetReceiptResponse>, Status> {
        let fp = registry_core::event::parse_fingerprint(&request.into_inner().fingerprint)
            .ok_or_else(|| status::invalid("fingerprint", "must be 64 hex digits"))?;
        let reader = self.reader.clone();
        let receipt =
            status::blocking(move || crate::evidence::receipt_for_key(&reader, &fp)).await?;
        Ok(Response::new(registry_proto::pb::GetReceiptResponse {
            receipt: Some(registry_proto::pb::Receipt::from(&receipt)),
        }))
    }

    type WatchEntriesStream = BoxStream<WatchEntriesResponse>;

    async fn watch_entries(
        &self,
        request: Request<WatchEntriesRequest>,
    ) -> Result<Response<Self::WatchEntriesStream>, Status> {
        let start = request.into_inner().start;
        let size = self.reader.head().size;
        if start > size {
            return Err(status::out_of_range(
                "start",
                format!("start {start} is past the end of the log (size {size})"),
            ));
        }
        let (tx, rx) = mpsc::channel(4);
        let (reader, shutdown) = (self.reader.clone(), self.shutdown.clone());
        tokio::spawn(async move {
            let mut heads = reader.subscribe();
            let mut next = start;
            loop {
                // Catch up to the head as it is now; a checkpoint covers each message exactly.
                let head = heads.borrow_and_update().clone();
                while next < head.size {
                    if shutdown.is_cancelled() {
                        let _ = tx.send(Err(status::shutting_down(next))).await;
                        return;
                    }
                    let mut chunk = match read_chunk(&reader, next, head.size).await {
                        Ok(c) if !c.is_empty() => c,
                        Ok(_) => break,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    };
                    // A replica cuts where it holds one of the primary's checkpoints.
                    let Some(end) = reader.signed_cut(next, next_after(&chunk, next)) else {
                        let why = format!(
                            "this replica holds none of the primary's checkpoints between {next} \
                             and {} (it cannot sign one, and keeps those it copied under since \
                             its start); follow the primary instead",
                            next_after(&chunk, next)
                        );
                        let _ = tx.send(Err(Status::failed_precondition(why))).await;
                        return;
                    };
                    chunk.truncate((end - next) as usize);
                    let checkpoint = if end == head.size {
                        head.checkpoint.to_string()
                    } else {
                        let r = reader.clone();
                        match status::blocking(move || r.checkpoint(end)).await {
                            Ok(c) => c,
                            Err(s) => {
                                let _ = tx.send(Err(s)).await;
                                return;
                            }
                        }
                    };
                    next = end;
                    let message = WatchEntriesResponse { entries: chunk, checkpoint };
                    if tx.send(Ok(message)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    changed = heads.changed() => {
                        if changed.is_err() {
                            // The log closed: the server is stopping.
                            let _ = tx.send(Err(status::shutting_down(next))).await;
                            return;
                        }
                    }
                    () = shutdown.cancelled() => {
                        let _ = tx.send(Err(status::shutting_down(next))).await;
                        return;
                    }
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
