//! `keyregistry.v1.CommandService`: one endpoint for every signed command.

use registry_core::command::SignedCommand;
use registry_proto::pb::command_service_server::CommandService;
use registry_proto::pb::{
    CommandResult, SubmitCommandRequest, SubmitCommandResponse, SubmitCommandsRequest,
    SubmitCommandsResponse, command_result,
};
use tonic::{Code, Request, Response, Status};

use super::status;
use std::sync::Arc;

use crate::admission::signatures::SignatureBudget;
use crate::commands::{Commands, MAX_BULK_COMMANDS, SignatureGate, Submitted, Ungated};
use crate::peers::Peer;
use crate::replica::progress::Progress;

fn response(done: Submitted) -> SubmitCommandResponse {
    let (confirmation_position, confirmation_entry) = done.confirmation.unwrap_or_default();
    SubmitCommandResponse {
        position: done.position,
        duplicate: done.duplicate,
        entry: done.entry,
        confirmation_position,
        confirmation_entry,
        receipt: done.receipt.as_ref().map(registry_proto::pb::Receipt::from),
    }
}

/// See the module documentation.
pub struct CommandApi {
    commands: Commands,
    signatures: Option<Arc<SignatureBudget>>,
    progress: Arc<Progress>,
}

impl CommandApi {
    /// The service over the command front; answers wait until `progress` says enough replicas
    /// hold what they appended (none, unless `sync_replicas` is set).
    pub fn new(
        commands: Commands,
        signatures: Option<Arc<SignatureBudget>>,
        progress: Arc<Progress>,
    ) -> Self {
        Self { commands, signatures, progress }
    }

    /// The calling peer's budget of failed signature checks.
    fn gate<T>(&self, request: &Request<T>) -> Arc<dyn SignatureGate> {
        let peer = request.extensions().get::<Peer>();
        match (&self.signatures, peer) {
            (Some(budget), Some(peer)) => Arc::new(budget.gate(peer.key)),
            _ => Arc::new(Ungated),
        }
    }
}

#[tonic::async_trait]
impl CommandService for CommandApi {
    async fn submit_command(
        &self,
        request: Request<SubmitCommandRequest>,
    ) -> Result<Response<SubmitCommandResponse>, Status> {
        let gate = self.gate(&request);
        let envelope = request
            .into_inner()
            .command
            .ok_or_else(|| status::invalid("command", "must be set"))?;
        let envelope = SignedCommand::try_from(&envelope)
            .map_err(|e| status::bad_field(Code::InvalidArgument, &e))?;
        let done = self.commands.submit(envelope, gate.as_ref()).await.map_err(Status::from)?;
        self.progress.wait(last_position(&done) + 1).await?;
        Ok(Response::new(response(done)))
    }

    async fn submit_commands(
        &self,
        request: Request<SubmitCommandsRequest>,
    ) -> Result<Response<SubmitCommandsResponse>, Status> {
        let gate = self.gate(&request);
        let commands = request.into_inner().commands;
        if commands.len() > MAX_BULK_COMMANDS {
            return Err(status::invalid(
                "commands",
                format!("at most {MAX_BULK_COMMANDS} commands per call, got {}", commands.len()),
            ));
        }
        // A command that does not even parse is refused on its own; the rest still go through.
        let mut results: Vec<Option<CommandResult>> = Vec::with_capacity(commands.len());
        let mut envelopes = Vec::new();
        for (i, pb) in commands.iter().enumerate() {
            match SignedCommand::try_from(pb) {
                Ok(e) => {
                    envelopes.push(e);
                    results.push(None);
                }
                Err(e) => results.push(Some(refused(status::refusal_of(
                    &status::invalid(&format!("commands[{i}].{}", e.field), e.rule),
                    Some(format!("commands[{i}].{}", e.field)),
                )))),
            }
        }
        let done = self.commands.submit_many(envelopes, gate).await;
        let last = done.iter().filter_map(|d| d.as_ref().ok()).map(last_position).max();
        if let Some(last) = last {
            self.progress.wait(last + 1).await?;
        }
        let mut done = done.into_iter();
        let results = results
            .into_iter()
            .map(|slot| match slot {
                Some(r) => r,
                None => match done.next() {
                    Some(Ok(d)) => CommandResult {
                        outcome: Some(command_result::Outcome::Accepted(response(d))),
                    },
                    Some(Err(e)) => refused(status::refusal(e)),
                    None => refused(status::refusal_of(
                        &Status::internal("a bulk result went missing"),
                        None,
                    )),
                },
            })
            .collect();
        Ok(Response::new(SubmitCommandsResponse { results }))
    }
}

/// The last entry an accepted command appended (or found, for a retry).
fn last_position(done: &Submitted) -> u64 {
    done.confirmation.as_ref().map_or(done.position, |(p, _)| (*p).max(done.position))
}

fn refused(r: registry_proto::pb::Refusal) -> CommandResult {
    CommandResult { outcome: Some(command_result::Outcome::Refused(r)) }
}
