//! `keyregistry.v1.ReplicationService`: replicas report how far they have copied; the primary
//! counts a report only if the replica's root at its size is the primary's own.

use std::sync::Arc;

use registry_proto::pb::replication_service_server::ReplicationService;
use registry_proto::pb::{ReportProgressRequest, ReportProgressResponse};
use tonic::{Request, Response, Status};

use super::status;
use crate::log::LogReader;
use crate::replica::progress::Progress;

/// See the module documentation.
pub struct ReplicationApi {
    reader: LogReader,
    progress: Arc<Progress>,
    /// SHA-256 of the token reports must carry, if one is configured (digests are compared, so
    /// the comparison's time says nothing about the token).
    token: Option<[u8; 32]>,
}

impl ReplicationApi {
    /// The service recording into `progress`; with a `token`, only reports that carry it
    /// (`authorization: Bearer <token>`) count.
    pub fn new(reader: LogReader, progress: Arc<Progress>, token: Option<&str>) -> Self {
        Self { reader, progress, token: token.map(digest) }
    }
}

fn digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

#[tonic::async_trait]
impl ReplicationService for ReplicationApi {
    async fn report_progress(
        &self,
        request: Request<ReportProgressRequest>,
    ) -> Result<Response<ReportProgressResponse>, Status> {
        if let Some(expected) = &self.token {
            let given = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if given.map(digest).as_ref() != Some(expected) {
                return Err(Status::unauthenticated(
                    "progress reports need the replication token (authorization: Bearer)",
                ));
            }
        }
        let report = request.into_inner();
        if report.replica_id.is_empty() || report.replica_id.len() > 128 {
            return Err(status::invalid("replica_id", "must be 1 to 128 characters"));
        }
        let root: [u8; 32] = report
            .root_hash
            .as_slice()
            .try_into()
            .map_err(|_| status::invalid("root_hash", "must be 32 bytes (SHA-256)"))?;
        let head = self.reader.head();
        if report.size > head.size {
            return Err(Status::failed_precondition(format!(
                "the replica reports {} entries, but this log holds {}: it does not follow \
                 this primary's log",
                report.size, head.size
            )));
        }
        if report.size > 0 {
            let (reader, size) = (self.reader.clone(), report.size);
            let ours = status::blocking(move || reader.root(size)).await?;
            if ours != root {
                return Err(Status::failed_precondition(format!(
                    "the replica's root at {size} entries is not this log's: it holds another \
                     history"
                )));
            }
            self.progress.report(&report.replica_id, report.size);
        }
        Ok(Response::new(ReportProgressResponse { primary_size: head.size }))
    }
}
