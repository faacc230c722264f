//! `keyregistry.v1.CommandService`: one endpoint for every signed command.

use registry_proto::command::SignedCommand;
use registry_proto::pb::command_service_server::CommandService;
use registry_proto::pb::{SubmitCommandRequest, SubmitCommandResponse};
use tonic::{Request, Response, Status};

use super::status;
use crate::commands::Commands;

/// See the module documentation.
pub struct CommandApi {
    commands: Commands,
}

impl CommandApi {
    /// The service over the command front.
    pub fn new(commands: Commands) -> Self {
        Self { commands }
    }
}

#[tonic::async_trait]
impl CommandService for CommandApi {
    async fn submit_command(
        &self,
        request: Request<SubmitCommandRequest>,
    ) -> Result<Response<SubmitCommandResponse>, Status> {
        let envelope = request
            .into_inner()
            .command
            .ok_or_else(|| status::invalid("command", "must be set"))?;
        let envelope =
            SignedCommand::from_pb(&envelope).map_err(|e| status::invalid(&e.field, e.rule))?;
        let done = self.commands.submit(envelope).await.map_err(status::command)?;
        let (confirmation_position, confirmation_entry) = done.confirmation.unwrap_or_default();
        Ok(Response::new(SubmitCommandResponse {
            position: done.position,
            duplicate: done.duplicate,
            entry: done.entry,
            confirmation_position,
            confirmation_entry,
            receipt: done.receipt.as_ref().map(|r| r.to_pb()),
        }))
    }
}
