//! A typed async client for the meter key registry.
//!
//! [`RegistryClient`] connects to a registry and offers one method per operation: commands are
//! built, given a fresh time-ordered request ID and the current issue time, signed with the
//! caller's P-256 key ([`keyfile`]) and submitted; lookups and audit reads return the API's
//! protobuf messages. Errors keep the server's status code and its field violations
//! ([`ClientError`]), so callers can tell a bad field from a missing permission.
//!
//! The `registry` command-line tool (`src/bin/registry.rs`) is built on this crate.

pub mod archive;
pub mod audit;
pub mod bench;
pub mod keyfile;
pub mod load;
pub mod receipt_file;
pub mod render;
pub mod verify;

use registry_core::command::SignedCommand;
use registry_core::keys::P256KeyPair;
use registry_core::time::{self, Time};
use registry_proto::pb::{self, command, key_selector};
use tonic::transport::Channel;
use tonic_types::StatusExt;

pub use registry_core::validity::View;
pub use registry_proto::pb::EndReason;

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
    #[error("cannot connect to {url}: {source}")]
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
    },
    /// Local input is unusable (a key file, a time).
    #[error("{0}")]
    Input(String),
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
        ClientError::Status { code: s.code(), message: s.message().to_string(), violations }
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

/// How a lookup names its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyTarget {
    /// By fingerprint.
    Fingerprint(String),
    /// By meter serial.
    MeterSerial(String),
    /// By gateway serial.
    GatewaySerial(String),
    /// By EVSE ID.
    Evse(String),
}

impl KeyTarget {
    /// The protobuf form, narrowed to a manufacturer if given.
    pub fn to_pb(&self, manufacturer: Option<&str>) -> pb::KeySelector {
        let selector = match self {
            KeyTarget::Fingerprint(f) => key_selector::Selector::Fingerprint(f.clone()),
            KeyTarget::MeterSerial(s) => key_selector::Selector::MeterSerial(s.clone()),
            KeyTarget::GatewaySerial(s) => key_selector::Selector::GatewaySerial(s.clone()),
            KeyTarget::Evse(e) => key_selector::Selector::EvseId(e.clone()),
        };
        pb::KeySelector {
            selector: Some(selector),
            manufacturer: manufacturer.unwrap_or_default().to_string(),
        }
    }

    /// The identifier for a history request.
    pub fn identifier(&self) -> pb::Identifier {
        let (kind, value) = match self {
            KeyTarget::Fingerprint(f) => (pb::IdentifierKind::Key, f),
            KeyTarget::MeterSerial(s) => (pb::IdentifierKind::MeterSerial, s),
            KeyTarget::GatewaySerial(s) => (pb::IdentifierKind::GatewaySerial, s),
            KeyTarget::Evse(e) => (pb::IdentifierKind::Evse, e),
        };
        pb::Identifier { kind: kind as i32, value: value.clone() }
    }
}

/// An answer "as known at" an earlier point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// The current durable log.
    Head,
    /// The first `n` entries.
    Size(u64),
    /// Entries recorded at or before a time.
    RecordedAt(Time),
}

impl AsOf {
    fn to_pb(self) -> Option<pb::AsOf> {
        let point = match self {
            AsOf::Head => return None,
            AsOf::Size(n) => pb::as_of::Point::LogSize(n),
            AsOf::RecordedAt(t) => pb::as_of::Point::RecordedAt(time::to_timestamp(&t)),
        };
        Some(pb::AsOf { point: Some(point) })
    }
}

/// The description of a new meter key and its signing unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySubmission {
    /// The key in any accepted encoding.
    pub public_key: String,
    /// Its curve, if the encoding does not say.
    pub curve: Option<registry_core::meter_key::Curve>,
    /// Meter serial.
    pub meter_serial: Option<String>,
    /// Gateway serial.
    pub gateway_serial: Option<String>,
    /// Manufacturer.
    pub manufacturer: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// A sample signed meter value from the unit (proof of possession).
    pub sample_signed_meter_value: Option<String>,
}

impl KeySubmission {
    /// A key with no further details.
    pub fn new(public_key: impl Into<String>) -> Self {
        Self { public_key: public_key.into(), ..Default::default() }
    }

    fn to_pb(&self) -> pb::NewKey {
        pb::NewKey {
            public_key: self.public_key.clone(),
            curve: self.curve.map_or(0, |c| c.to_pb() as i32),
            meter_serial: self.meter_serial.clone().unwrap_or_default(),
            gateway_serial: self.gateway_serial.clone().unwrap_or_default(),
            manufacturer: self.manufacturer.clone().unwrap_or_default(),
            model: self.model.clone().unwrap_or_default(),
            sample_signed_meter_value: self.sample_signed_meter_value.clone().unwrap_or_default(),
        }
    }
}

fn ts(t: Option<Time>) -> Option<prost_types::Timestamp> {
    t.as_ref().map(time::to_timestamp)
}

/// What a signer orders the registry to do: a command to sign and submit, each variant mirroring
/// one `keyregistry.v1` command (the rules' own, decoded form is `registry_core::command::Action`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// Add an administrator key (PEM or hex DER).
    AddAdminKey { public_key: String, label: String },
    /// Revoke an administrator key by fingerprint.
    RevokeAdminKey { key_id: String },
    /// Add an operator with its command keys.
    AddOperator { operator_id: String, name: String, public_keys: Vec<String> },
    /// Add a command key to an operator.
    AddOperatorKey { operator_id: String, public_key: String },
    /// Revoke an operator's command key.
    RevokeOperatorKey { operator_id: String, key_id: String },
    /// Confirm a pending registration.
    Confirm { fingerprint: String },
    /// Reject a pending registration.
    Reject { fingerprint: String, reason: String },
    /// Move a key to another operator without a release.
    ForceTakeOver {
        fingerprint: String,
        operator_id: String,
        evse_ids: Vec<String>,
        effective_at: Option<Time>,
    },
    /// Register a key.
    Register { key: KeySubmission, evse_ids: Vec<String>, effective_at: Option<Time> },
    /// End a key's validity.
    Deactivate {
        fingerprint: String,
        reason: EndReason,
        comment: String,
        effective_at: Option<Time>,
    },
    /// Move a key to other EVSE IDs.
    Relocate { fingerprint: String, evse_ids: Vec<String>, effective_at: Option<Time> },
    /// Replace the meter or signing module.
    Replace {
        fingerprint: String,
        new_key: KeySubmission,
        effective_at: Option<Time>,
        comment: String,
    },
    /// Rotate the key of the same signing unit.
    Rotate { fingerprint: String, new_key: KeySubmission, effective_at: Option<Time> },
    /// Release a key to another operator.
    Release { fingerprint: String, to_operator_id: String },
    /// Take over a released key.
    TakeOver { fingerprint: String, evse_ids: Vec<String>, effective_at: Option<Time> },
}

impl Order {
    /// The protobuf action.
    pub fn to_pb(&self) -> command::Action {
        use command::Action as A;
        match self.clone() {
            Order::AddAdminKey { public_key, label } => {
                A::AddAdminKey(pb::AddAdminKey { public_key, label })
            }
            Order::RevokeAdminKey { key_id } => A::RevokeAdminKey(pb::RevokeAdminKey { key_id }),
            Order::AddOperator { operator_id, name, public_keys } => {
                A::AddOperator(pb::AddOperator { operator_id, name, public_keys })
            }
            Order::AddOperatorKey { operator_id, public_key } => {
                A::AddOperatorKey(pb::AddOperatorKey { operator_id, public_key })
            }
            Order::RevokeOperatorKey { operator_id, key_id } => {
                A::RevokeOperatorKey(pb::RevokeOperatorKey { operator_id, key_id })
            }
            Order::Confirm { fingerprint } => A::ConfirmKey(pb::ConfirmKey { fingerprint }),
            Order::Reject { fingerprint, reason } => {
                A::RejectKey(pb::RejectKey { fingerprint, reason })
            }
            Order::ForceTakeOver { fingerprint, operator_id, evse_ids, effective_at } => {
                A::ForceTakeOver(pb::ForceTakeOver {
                    fingerprint,
                    operator_id,
                    evse_ids,
                    effective_at: ts(effective_at),
                })
            }
            Order::Register { key, evse_ids, effective_at } => A::RegisterKey(pb::RegisterKey {
                key: Some(key.to_pb()),
                evse_ids,
                effective_at: ts(effective_at),
            }),
            Order::Deactivate { fingerprint, reason, comment, effective_at } => {
                A::DeactivateKey(pb::DeactivateKey {
                    fingerprint,
                    reason: reason as i32,
                    comment,
                    effective_at: ts(effective_at),
                })
            }
            Order::Relocate { fingerprint, evse_ids, effective_at } => {
                A::RelocateKey(pb::RelocateKey {
                    fingerprint,
                    evse_ids,
                    effective_at: ts(effective_at),
                })
            }
            Order::Replace { fingerprint, new_key, effective_at, comment } => {
                A::ReplaceKey(pb::ReplaceKey {
                    fingerprint,
                    new_key: Some(new_key.to_pb()),
                    effective_at: ts(effective_at),
                    comment,
                })
            }
            Order::Rotate { fingerprint, new_key, effective_at } => A::RotateKey(pb::RotateKey {
                fingerprint,
                new_key: Some(new_key.to_pb()),
                effective_at: ts(effective_at),
            }),
            Order::Release { fingerprint, to_operator_id } => {
                A::ReleaseKey(pb::ReleaseKey { fingerprint, to_operator_id })
            }
            Order::TakeOver { fingerprint, evse_ids, effective_at } => {
                A::TakeOverKey(pb::TakeOverKey {
                    fingerprint,
                    evse_ids,
                    effective_at: ts(effective_at),
                })
            }
        }
    }
}

/// Builds the command bytes for an action: a fresh UUIDv7 request ID and the current time.
pub fn command_bytes(action: &Order) -> Vec<u8> {
    command_bytes_with(action, uuid::Uuid::now_v7(), chrono::Utc::now())
}

/// Builds the command bytes with a given request ID and issue time.
pub fn command_bytes_with(action: &Order, request_id: uuid::Uuid, issued_at: Time) -> Vec<u8> {
    use prost::Message;
    pb::Command {
        request_id: request_id.to_string(),
        issued_at: Some(time::to_timestamp(&time::truncate_micros(issued_at))),
        action: Some(action.to_pb()),
    }
    .encode_to_vec()
}

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
    /// Connects to `url` (e.g. `http://127.0.0.1:50051`).
    pub async fn connect(url: &str) -> Result<Self> {
        let endpoint = Channel::from_shared(url.to_string())
            .map_err(|e| ClientError::Input(format!("invalid server URL {url:?}: {e}")))?
            .connect_timeout(std::time::Duration::from_secs(10));
        let channel = endpoint
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
        let request = pb::SubmitCommandRequest { command: Some(signed.to_pb()) };
        Ok(self.commands.clone().submit_command(request).await?.into_inner())
    }

    /// Submits many signed commands in one call (at most 10,000): bulk loads. Each gets its own
    /// result, in order; a refused command does not stop the others. Safe to retry as a whole,
    /// since every command keeps its request ID.
    pub async fn submit_many(
        &self,
        signed: Vec<SignedCommand>,
    ) -> Result<Vec<std::result::Result<pb::SubmitCommandResponse, pb::Refusal>>> {
        let request =
            pb::SubmitCommandsRequest { commands: signed.iter().map(|s| s.to_pb()).collect() };
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
            view: view.to_pb(),
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
            view: View::Full.to_pb(),
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
        registry_core::receipt::Receipt::from_pb(&receipt)
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
            view: view.to_pb(),
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
