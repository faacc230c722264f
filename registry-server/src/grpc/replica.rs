//! The command service of a read replica: it takes no command, and says where to send it.

use registry_proto::pb::command_service_server::CommandService;
use registry_proto::pb::{
    SubmitCommandRequest, SubmitCommandResponse, SubmitCommandsRequest, SubmitCommandsResponse,
};
use tonic::{Request, Response, Status};

/// Refuses every command with `FAILED_PRECONDITION`, naming the primary in the message and in
/// a `google.rpc.ErrorInfo` detail (reason `READ_REPLICA`, metadata `primary`), so that a
/// client can redirect without parsing text.
pub struct ReplicaCommands {
    primary: String,
}

impl ReplicaCommands {
    /// The refusing service of a replica of `primary` (its URL).
    pub fn new(primary: String) -> Self {
        Self { primary }
    }

    fn refusal(&self) -> Status {
        super::status::read_replica(&self.primary)
    }
}

#[tonic::async_trait]
impl CommandService for ReplicaCommands {
    async fn submit_command(
        &self,
        _: Request<SubmitCommandRequest>,
    ) -> Result<Response<SubmitCommandResponse>, Status> {
        Err(self.refusal())
    }

    async fn submit_commands(
        &self,
        _: Request<SubmitCommandsRequest>,
    ) -> Result<Response<SubmitCommandsResponse>, Status> {
        Err(self.refusal())
    }
}
