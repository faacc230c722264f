//! A typed async client for the meter key registry.
//!
//! [`RegistryClient`] connects to a registry and offers one method per operation: commands are
//! built, given a fresh time-ordered request ID and the current issue time, signed with the
//! caller's P-256 key ([`keyfile`]) and submitted; lookups and audit reads return the API's
//! protobuf messages. Errors keep the server's status code and its field violations
//! ([`ClientError`]), so callers can tell a bad field from a missing permission.
//!
//! The `registry` command-line tool (`src/bin/registry/`) is built on this crate.

pub mod archive;
pub mod audit;
pub mod bench;
pub mod connect;
pub mod keyfile;
pub mod load;
pub mod receipt_file;
pub mod render;
mod request;
pub mod tiles;
pub mod verify;

use registry_core::command::SignedCommand;
use registry_core::keys::P256KeyPair;
use registry_core::time::{self, Time};
use registry_proto::pb;
use tonic::transport::Channel;
use tonic_types::StatusExt;

pub use connect::TlsOptions;
pub use registry_core::validity::View;
pub use registry_proto::pb::EndReason;
pub use request::{AsOf, KeySubmission, KeyTarget, Order, command_bytes, command_bytes_with};

/// A field the server named as wrong, and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's path in the request.
    pub field: String,
    /// The rule.
    pub description: String,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not reach the server.
    #[error("cannot connect to {url}: {}", registry_core::error::chain(source))]
    Connect {
        /// The server URL.
        url: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The server refused or failed the call.
    #[error("{}", describe(.code, .message))]
    Status {
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's message.
        message: String,
        /// Fields the server named as wrong.
        violations: Vec<FieldViolation>,
        /// Where the command should have gone, when a read replica refused it.
        primary: Option<String>,
    },
    /// Local input is unusable (a key file, a time).
    #[error("{0}")]
    Input(String),
    /// A tile server did not give what was asked for.
    #[error("{url}: {reason}")]
    Http {
        /// What was fetched.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The server's answer or evidence does not check out.
    #[error("verification failed: {0}")]
    Verification(String),
}

fn describe(code: &tonic::Code, message: &str) -> String {
    format!("{} ({})", message, code_name(*code))
}

/// The canonical upper-case name of a status code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        let violations = s
            .get_details_bad_request()
            .map(|b| {
                b.field_violations
                    .into_iter()
                    .map(|v| FieldViolation { field: v.field, description: v.description })
                    .collect()
            })
            .unwrap_or_default();
        // A replica names its primary in a `google.rpc.ErrorInfo` (reason READ_REPLICA).
        let primary = s
            .get_details_error_info()
            .filter(|i| i.reason == "READ_REPLICA")
            .and_then(|i| i.metadata.get("primary").cloned());
        ClientError::Status {
            code: s.code(),
            message: s.message().to_string(),
            violations,
            primary,
        }
    }
}

impl ClientError {
    /// The status code, if the server answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The primary to send a command to, when a read replica refused it.
    pub fn primary(&self) -> Option<&str> {
        match self {
            ClientError::Status { primary, .. } => primary.as_deref(),
            _ => None,
        }
    }

    /// The fields the server named.
    pub fn violations(&self) -> &[FieldViolation] {
        match self {
            ClientError::Status { violations, .. } => violations,
            _ => &[],
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A connection to a registry. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    commands: pb::command_service_client::CommandServiceClient<Channel>,
    lookups: pb::lookup_service_client::LookupServiceClient<Channel>,
    audit: pb::audit_service_client::AuditServiceClient<Channel>,
    /// The server's checkpoint origin, asked once: commands are signed for it.
    origin: std::sync::Arc<tokio::sync::OnceCell<String>>,
}

/// The default server URL.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// Entries per history page when reading a whole history.
pub const HISTORY_PAGE: u32 = 1000;

/// Responses can be large (a batch of 10,000 answers, pages of entries).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

impl RegistryClient {
    /// Connects to `url` (e.g. `http://127.0.0.1:50051`; `https://` with the system's roots).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, &TlsOptions::default()).await
    }

    /// Connects to `url` with TLS settings (see [`connect`]).
    pub async fn connect_with(url: &str, tls: &TlsOptions) -> Result<Self> {
        let channel = connect::endpoint(url, tls)?
            .connect()
            .await
            .map_err(|source| ClientError::Connect { url: url.to_string(), source })?;
        Ok(Self::from_channel(channel))
    }

    /// A client over an existing channel.
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            commands: pb::command_service_client::CommandServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            lookups: pb::lookup_service_client::LookupServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            audit: pb::audit_service_client::AuditServiceClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE),
            origin: Default::default(),
        }
    }

    /// The server's checkpoint origin: the registry's name, which every command is signed for
    /// (so that it is refused by any other registry). Asked once per client.
    pub async fn origin(&self) -> Result<String> {
        let origin = self
            .origin
            .get_or_try_init(|| async { Ok::<_, ClientError>(self.registry_info().await?.origin) })
            .await?;
        Ok(origin.clone())
    }

    /// Signs `action` with `signer` for this client's registry.
    pub async fn sign(&self, signer: &P256KeyPair, action: &Order) -> Result<SignedCommand> {
        Ok(SignedCommand::sign(command_bytes(action), &self.origin().await?, signer))
    }

    /// The audit service stub, for streaming reads.
    pub fn audit(&self) -> pb::audit_service_client::AuditServiceClient<Channel> {
        self.audit.clone()
    }

    /// The lookup service stub.
    pub fn lookups(&self) -> pb::lookup_service_client::LookupServiceClient<Channel> {
        self.lookups.clone()
    }

    /// Signs `action` with `signer` and submits it.
    pub async fn submit(
        &self,
        signer: &P256KeyPair,
        action: &Order,
    ) -> Result<pb::SubmitCommandResponse> {
        self.submit_signed(self.sign(signer, action).await?).await
    }

    /// Submits an already signed command (to retry it, or one built elsewhere).
    pub async fn submit_signed(&self, signed: SignedCommand) -> Result<pb::SubmitCommandResponse> {
        let request = pb::SubmitCommandRequest { command: Some(pb::SignedCommand::from(&signed)) };
        Ok(self.commands.clone().submit_command(request).await?.into_inner())
    }

    /// Submits many signed commands in one call (at most 10,000): bulk loads. Each gets its own
    /// result, in order; a refused command does not stop the others. Safe to retry as a whole,
    /// since every command keeps its request ID.
    pub async fn submit_many(
        &self,
        signed: Vec<SignedCommand>,
    ) -> Result<Vec<std::result::Result<pb::SubmitCommandResponse, pb::Refusal>>> {
        let request = pb::SubmitCommandsRequest {
            commands: signed.iter().map(pb::SignedCommand::from).collect(),
        };
        let response = self.commands.clone().submit_commands(request).await?.into_inner();
        response
            .results
            .into_iter()
            .map(|r| match r.outcome {
                Some(pb::command_result::Outcome::Accepted(a)) => Ok(Ok(a)),
                Some(pb::command_result::Outcome::Refused(r)) => Ok(Err(r)),
                None => {
                    Err(ClientError::Verification("the server sent an empty command result".into()))
                }
            })
            .collect()
    }

    /// Validates signed meter values (OCMF records, and an OCPI `signed_data` object as JSON) on
    /// the server; with `prove`, the answer carries the evidence (see
    /// [`verify::Verifier::meter_values`] to check it).
    pub async fn validate_meter_values(
        &self,
        inputs: &[registry_core::ocpi::Input],
        as_of: AsOf,
        prove: bool,
    ) -> Result<pb::ValidateSignedMeterValuesResponse> {
        let request = pb::ValidateSignedMeterValuesRequest {
            values: inputs
                .iter()
                .map(|i| pb::SignedMeterValue {
                    record: i.record.clone(),
                    claimed_public_key: i.claimed_key.clone().unwrap_or_default(),
                    label: i.label.clone(),
                })
                .collect(),
            ocpi_signed_data: String::new(),
            as_of: as_of.to_pb(),
            prove,
        };
        Ok(self.lookups.clone().validate_signed_meter_values(request).await?.into_inner())
    }

    /// Was the selected key valid at `at`?
    pub async fn check(
        &self,
        key: &KeyTarget,
        manufacturer: Option<&str>,
        at: Time,
        as_of: AsOf,
    ) -> Result<pb::CheckValidityResponse> {
        self.check_view(key, manufacturer, at, as_of, View::Full).await
    }

    /// [`RegistryClient::check`] with only what `view` asks for in the answer.
    pub async fn check_view(
        &self,
        key: &KeyTarget,
        manufacturer: Option<&str>,
        at: Time,
        as_of: AsOf,
        view: View,
    ) -> Result<pb::CheckValidityResponse> {
        let request = pb::CheckValidityRequest {
            key: Some(key.to_pb(manufacturer)),
            at: Some(time::to_timestamp(&at)),
            as_of: as_of.to_pb(),
            prove: false,
            view: pb::ValidityView::from(view) as i32,
        };
        Ok(self.lookups.clone().check_validity(request).await?.into_inner())
    }

    /// Was the selected key valid at `at`? With evidence (see [`verify::Verifier`]).
    pub async fn check_proven(
        &self,
        key: &KeyTarget,
        manufacturer: Option<&str>,
        at: Time,
        as_of: AsOf,
    ) -> Result<pb::CheckValidityResponse> {
        let request = pb::CheckValidityRequest {
            key: Some(key.to_pb(manufacturer)),
            at: Some(time::to_timestamp(&at)),
            as_of: as_of.to_pb(),
            prove: true,
            view: pb::ValidityView::from(View::Full) as i32,
        };
        Ok(self.lookups.clone().check_validity(request).await?.into_inner())
    }

    /// A key's record with evidence.
    pub async fn key_proven(&self, fingerprint: &str, as_of: AsOf) -> Result<pb::GetKeyResponse> {
        let request = pb::GetKeyRequest {
            fingerprint: fingerprint.to_string(),
            as_of: as_of.to_pb(),
            prove: true,
        };
        Ok(self.lookups.clone().get_key(request).await?.into_inner())
    }

    /// The first page of an identifier's history with evidence of the whole chain.
    pub async fn history_proven(
        &self,
        identifier: pb::Identifier,
        as_of: AsOf,
    ) -> Result<pb::GetHistoryResponse> {
        let request = pb::GetHistoryRequest {
            identifier: Some(identifier),
            as_of: as_of.to_pb(),
            page_size: HISTORY_PAGE,
            page_token: String::new(),
            prove: true,
        };
        Ok(self.lookups.clone().get_history(request).await?.into_inner())
    }

    /// The receipt of a confirmed key.
    pub async fn receipt(&self, fingerprint: &str) -> Result<registry_core::receipt::Receipt> {
        let r = self
            .audit
            .clone()
            .get_receipt(pb::GetReceiptRequest { fingerprint: fingerprint.to_string() })
            .await?
            .into_inner();
        let receipt = r
            .receipt
            .ok_or_else(|| ClientError::Verification("the server sent no receipt".into()))?;
        registry_core::receipt::Receipt::try_from(&receipt)
            .map_err(|e| ClientError::Verification(e.to_string()))
    }

    /// Many validity questions at once.
    pub async fn check_batch(
        &self,
        queries: &[(KeyTarget, Time)],
        as_of: AsOf,
        view: View,
    ) -> Result<pb::CheckValidityBatchResponse> {
        let request = pb::CheckValidityBatchRequest {
            queries: queries
                .iter()
                .map(|(s, t)| pb::ValidityQuery {
                    key: Some(s.to_pb(None)),
                    at: Some(time::to_timestamp(t)),
                })
                .collect(),
            as_of: as_of.to_pb(),
            prove: false,
            view: pb::ValidityView::from(view) as i32,
        };
        Ok(self.lookups.clone().check_validity_batch(request).await?.into_inner())
    }

    /// A key's record.
    pub async fn key(&self, fingerprint: &str, as_of: AsOf) -> Result<pb::GetKeyResponse> {
        let request = pb::GetKeyRequest {
            fingerprint: fingerprint.to_string(),
            as_of: as_of.to_pb(),
            prove: false,
        };
        Ok(self.lookups.clone().get_key(request).await?.into_inner())
    }

    /// One page of an identifier's history.
    pub async fn history_page(
        &self,
        identifier: pb::Identifier,
        as_of: AsOf,
        page_size: u32,
        page_token: String,
    ) -> Result<pb::GetHistoryResponse> {
        let request = pb::GetHistoryRequest {
            identifier: Some(identifier),
            as_of: as_of.to_pb(),
            page_size,
            page_token,
            prove: false,
        };
        Ok(self.lookups.clone().get_history(request).await?.into_inner())
    }

    /// An identifier's whole history, newest first, following the page tokens.
    pub async fn history(
        &self,
        identifier: pb::Identifier,
        as_of: AsOf,
    ) -> Result<Vec<pb::HistoryEntry>> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let page = self.history_page(identifier.clone(), as_of, 1000, token).await?;
            out.extend(page.entries);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            token = page.next_page_token;
        }
    }

    /// An operator.
    pub async fn operator(&self, operator_id: &str) -> Result<pb::GetOperatorResponse> {
        let request = pb::GetOperatorRequest { operator_id: operator_id.to_string() };
        Ok(self.lookups.clone().get_operator(request).await?.into_inner())
    }

    /// The registry's identity.
    pub async fn registry_info(&self) -> Result<pb::GetRegistryInfoResponse> {
        Ok(self.audit.clone().get_registry_info(pb::GetRegistryInfoRequest {}).await?.into_inner())
    }

    /// A signed checkpoint (0 = the latest).
    pub async fn checkpoint(&self, tree_size: u64) -> Result<pb::GetCheckpointResponse> {
        Ok(self
            .audit
            .clone()
            .get_checkpoint(pb::GetCheckpointRequest { tree_size })
            .await?
            .into_inner())
    }

    /// Entries `start..end` (0 = to the end), as stored.
    pub async fn entries(&self, start: u64, end: u64) -> Result<Vec<pb::StoredEntry>> {
        let mut stream = self
            .audit
            .clone()
            .get_entries(pb::GetEntriesRequest { start, end })
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(msg) = stream.message().await? {
            out.extend(msg.entries);
        }
        Ok(out)
    }
}
