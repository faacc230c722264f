//! The command checks at the edge, and what follows a command.
//!
//! Before a command reaches the writer: it must be signed for this registry (its checkpoint
//! origin); its signer must be a known, unrevoked key; the signature must verify over the exact
//! bytes; the bytes must decode to a valid command; a retry of a known
//! request ID returns the original result (however stale its issue time); and a new command's
//! issue time must lie within the clock-skew tolerance. These checks need no lock and run
//! concurrently; the lifecycle rules then run once more in the writer against the state at that
//! moment ([`crate::machine`]).
//!
//! After a registration is durable and covered by a signed checkpoint, the registry confirms it
//! on its own under the automatic policy. If the process dies in between, [`Commands::confirm_pending`]
//! finishes the job at the next start.

use chrono::TimeDelta;
use registry_core::command::{Action, Command, SignedCommand};
use registry_core::lifecycle::{Proposal, RegistryAction, RejectCode, Rejection, State};
use registry_core::time::Time;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::log::{AppendError, Appender, Clock, LogReader, ReadError};
use crate::machine::{Job, RegistryMachine};
use crate::projection::Projection;
use crate::store::StoreError;

/// Who confirms registrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ConfirmPolicy {
    /// The registry, once the registration is published in a signed checkpoint.
    Auto,
    /// A registry administrator, with a signed confirm or reject command.
    Manual,
}

/// Settings of the command path.
#[derive(Debug, Clone, Copy)]
pub struct CommandSettings {
    /// How far a command's issue time may be from the registry's clock.
    pub max_clock_skew: TimeDelta,
    /// Who confirms registrations.
    pub confirm_policy: ConfirmPolicy,
}

/// A command's durable outcome.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// Position of the command's entry.
    pub position: u64,
    /// The request ID was seen before with the same content.
    pub duplicate: bool,
    /// The entry as stored.
    pub entry: Vec<u8>,
    /// The automatic confirmation, if the command registered a key and policy is automatic.
    pub confirmation: Option<(u64, Vec<u8>)>,
    /// The receipt for that registration and confirmation.
    pub receipt: Option<registry_core::receipt::Receipt>,
}

/// A command that did not go through.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Refused by a rule.
    #[error("{0}")]
    Rejected(#[from] Rejection),
    /// The log cannot take writes.
    #[error("{0}")]
    Unavailable(String),
    /// The store failed while checking.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The caller has spent its budget of failed signature checks.
    #[error("{0}")]
    Exhausted(String),
}

/// Who pays for signature checks that fail: the gRPC layer passes the calling peer's budget
/// ([`crate::admission::signatures`]), so that a flood of bad signatures stops being verified once
/// the budget is spent. The checks themselves know nothing of peers.
pub trait SignatureGate: Send + Sync {
    /// Whether one more signature may be checked for this caller.
    fn may_check(&self) -> bool;
    /// A signature did not verify.
    fn failed(&self);
}

/// Most commands in one `SubmitCommands` call, so that one call cannot hold the writer for long.
pub const MAX_BULK_COMMANDS: usize = 10_000;

/// What a caller whose budget of failed signature checks is spent is told.
pub const BUDGET_SPENT: &str = "too many commands from this client address had bad signatures; \
                                its commands are refused unchecked for a while";

/// No budget: every signature is checked (start-up commands, registries without a budget).
pub struct Ungated;

impl SignatureGate for Ungated {
    fn may_check(&self) -> bool {
        true
    }
    fn failed(&self) {}
}

impl From<ReadError> for CommandError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Store(e) => CommandError::Store(e),
            other => CommandError::Unavailable(other.to_string()),
        }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct Commands {
    appender: Appender<RegistryMachine>,
    reader: LogReader,
    settings: CommandSettings,
    clock: Clock,
}

/// The fingerprint of the key a command registers, if it registers one.
fn registered_key(action: &Action) -> Option<&str> {
    match action {
        Action::RegisterKey { key, .. } => Some(&key.key.fingerprint),
        Action::ReplaceKey { new_key, .. } | Action::RotateKey { new_key, .. } => {
            Some(&new_key.key.fingerprint)
        }
        _ => None,
    }
}

impl Commands {
    /// The command front over a running log.
    pub fn new(
        appender: Appender<RegistryMachine>,
        reader: LogReader,
        settings: CommandSettings,
        clock: Clock,
    ) -> Self {
        Self { appender, reader, settings, clock }
    }

    fn now(&self) -> Time {
        (self.clock)()
    }

    async fn append(
        &self,
        request_id: Uuid,
        digest: [u8; 32],
        proposal: Proposal,
    ) -> Result<(u64, bool), CommandError> {
        match self.appender.append(request_id, digest, Job { request_id, proposal }).await {
            Ok(a) => Ok((a.position, a.duplicate)),
            Err(AppendError::Rejected(r)) => Err(r.into()),
            Err(AppendError::AlreadyExists { position }) => Err(Rejection::exists(
                "request_id",
                format!("this request ID was used for different content (entry {position})"),
            )
            .into()),
            Err(AppendError::Unavailable(why)) => Err(CommandError::Unavailable(why)),
            Err(AppendError::DiskFull(why)) => Err(StoreError::Full(why).into()),
        }
    }

    /// Checks and submits a signed command; resolves once it is durable.
    pub async fn submit(
        &self,
        envelope: SignedCommand,
        gate: &dyn SignatureGate,
    ) -> Result<Submitted, CommandError> {
        let command = self.check(&envelope, gate)?;
        self.complete(envelope, command, true).await
    }

    /// Checks and submits many signed commands, each exactly as [`Commands::submit`] would
    /// (its own entry and request ID), without receipts. Signatures are checked on every core and
    /// the appends run concurrently so that they share group commits. Results are in order.
    pub async fn submit_many(
        &self,
        envelopes: Vec<SignedCommand>,
        gate: std::sync::Arc<dyn SignatureGate>,
    ) -> Vec<Result<Submitted, CommandError>> {
        // Checks run in small chunks, one per core at a time; a chunk's appends start as soon as
        // it is checked, so the writer is busy while later chunks are still being verified.
        const CHUNK: usize = 256;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut envelopes = envelopes.into_iter().peekable();
        let mut checks = std::collections::VecDeque::new();
        let mut appends = Vec::new();
        loop {
            while checks.len() < cores && envelopes.peek().is_some() {
                let part: Vec<_> = envelopes.by_ref().take(CHUNK).collect();
                let this = self.clone();
                let gate = gate.clone();
                let n = part.len();
                checks.push_back((
                    n,
                    tokio::task::spawn_blocking(move || {
                        part.into_iter()
                            .map(|e| this.check(&e, gate.as_ref()).map(|c| (e, c)))
                            .collect::<Vec<_>>()
                    }),
                ));
            }
            let Some((n, part)) = checks.pop_front() else { break };
            let part = match part.await {
                Ok(part) => part,
                Err(e) => (0..n)
                    .map(|_| Err(CommandError::Unavailable(format!("a check failed: {e}"))))
                    .collect(),
            };
            for checked in part {
                let this = self.clone();
                appends.push(tokio::spawn(async move {
                    let (envelope, command) = checked?;
                    this.complete(envelope, command, false).await
                }));
            }
        }
        let mut results = Vec::with_capacity(appends.len());
        for append in appends {
            results.push(append.await.unwrap_or_else(|e| {
                Err(CommandError::Unavailable(format!("an append task failed: {e}")))
            }));
        }
        results
    }

    /// The checks that need no lock: a known, unrevoked signer, a good signature and a command
    /// that decodes. Synchronous, so that bulk submissions can spread it over threads. A command
    /// already in the log exactly as submitted passes even if its signer was revoked since: its
    /// retry returns the original result, however long ago (docs/DESIGN.md §5).
    fn check(
        &self,
        envelope: &SignedCommand,
        gate: &dyn SignatureGate,
    ) -> Result<Command, CommandError> {
        match self.check_new(envelope, gate) {
            // A spent budget is not worth a store read either.
            Err(CommandError::Exhausted(why)) => Err(CommandError::Exhausted(why)),
            other => other.or_else(|refusal| self.earlier(envelope).ok_or(refusal)),
        }
    }

    /// The command of `envelope` if the durable log holds this very envelope (same bytes,
    /// signer and signature) under its request ID.
    fn earlier(&self, envelope: &SignedCommand) -> Option<Command> {
        let command = Command::decode(&envelope.command).ok()?;
        let record = self.reader.request(&command.request_id).ok()??;
        if record.digest != envelope.digest() {
            return None;
        }
        let stored = registry_core::entry::Entry::decode(&self.reader.entry(record.position).ok()?);
        (stored.ok()?.body.command.as_ref() == Some(envelope)).then_some(command)
    }

    fn check_new(
        &self,
        envelope: &SignedCommand,
        gate: &dyn SignatureGate,
    ) -> Result<Command, CommandError> {
        // Before the signature: a command for another registry is refused for what it is, not
        // as a bad signature, so that a client pointed at the wrong registry is told so.
        let origin = self.reader.origin();
        match envelope.registry.as_deref() {
            Some(r) if r == origin => {}
            Some(other) => {
                return Err(Rejection::invalid(
                    "command.registry",
                    format!("the command is signed for registry {other:?}, but this is {origin:?}"),
                )
                .into());
            }
            None => {
                return Err(Rejection::invalid(
                    "command.registry",
                    format!(
                        "must name the registry the command is signed for ({origin:?}); commands \
                         signed without it are accepted only as retries of ones already logged"
                    ),
                )
                .into());
            }
        }
        // A caller that has spent its budget of failed signature checks gets no further.
        if !gate.may_check() {
            return Err(CommandError::Exhausted(BUDGET_SPENT.into()));
        }
        let store = self.reader.store();
        let signer =
            Projection::new(store.as_ref()).signer(&envelope.signer_key_id)?.ok_or_else(|| {
                Rejection::unauthenticated(
                    "command.signer_key_id",
                    "the signing key is not known to the registry",
                )
            })?;
        // A revocation counts once it is durable; until then the writer, which checks the signer
        // again in log order, refuses what comes after it.
        if let Some(p) = signer.revoked_position.filter(|p| *p < self.reader.head().size) {
            return Err(Rejection::unauthenticated(
                "command.signer_key_id",
                format!("the signing key was revoked (entry {p})"),
            )
            .into());
        }
        if !envelope.verify(&signer.public_key) {
            gate.failed();
            return Err(Rejection::unauthenticated(
                "command.signature",
                "does not verify over the command bytes with the signer's key",
            )
            .into());
        }
        let command = Command::decode(&envelope.command)
            .map_err(|error| Rejection { code: RejectCode::InvalidArgument, error })?;
        // Refused here, for new commands only, not in decoding: a log written before these IDs
        // were reserved may hold a command with one, and it must still replay and be retried.
        if registry_core::lifecycle::is_reserved_request_id(&command.request_id) {
            return Err(Rejection::invalid(
                "request_id",
                "is a UUIDv8 of the form the registry reserves for its own confirmations",
            )
            .into());
        }
        Ok(command)
    }

    /// What follows the checks: a retry returns the original result, a new command must be
    /// timely and is appended; then the outcome (with a receipt when `with_receipt`).
    async fn complete(
        &self,
        envelope: SignedCommand,
        command: Command,
        with_receipt: bool,
    ) -> Result<Submitted, CommandError> {
        let digest = envelope.digest();
        // A retry of a durable request returns its original result, however long ago it was.
        if let Some(record) = self.reader.request(&command.request_id)? {
            if record.digest != digest {
                return Err(Rejection::exists(
                    "request_id",
                    format!(
                        "this request ID was used for different content (entry {})",
                        record.position
                    ),
                )
                .into());
            }
            return self.outcome(record.position, true, &command, with_receipt).await;
        }

        let skew = (command.issued_at - self.now()).abs();
        if skew > self.settings.max_clock_skew {
            return Err(Rejection::unauthenticated(
                "issued_at",
                format!(
                    "is {} s away from the registry's clock; commands must be issued within {} s",
                    skew.num_seconds(),
                    self.settings.max_clock_skew.num_seconds()
                ),
            )
            .into());
        }
        let (position, duplicate) = self
            .append(
                command.request_id,
                digest,
                Proposal::Signed { envelope, command: command.clone() },
            )
            .await?;
        self.outcome(position, duplicate, &command, with_receipt).await
    }

    async fn outcome(
        &self,
        position: u64,
        duplicate: bool,
        command: &Command,
        with_receipt: bool,
    ) -> Result<Submitted, CommandError> {
        let entry = self.reader.entry(position)?;
        let confirmation = match (self.settings.confirm_policy, registered_key(&command.action)) {
            (ConfirmPolicy::Auto, Some(fp)) => self.auto_confirm(fp, position).await?,
            _ => None,
        };
        // The registration to prove is the command's own entry (the new key of a replacement or
        // rotation is registered in it too).
        let receipt = match &confirmation {
            // A new registration's receipt reads memory (the log's tail): built right here, as
            // the hand-off to the blocking pool and back costs more. A retried old one may read
            // many nodes from the store, so that goes to the pool.
            Some((c, _)) if with_receipt && self.reader.is_recent(position) => {
                Some(crate::evidence::receipt(&self.reader, position, *c))
            }
            Some((c, _)) if with_receipt => {
                let (reader, c) = (self.reader.clone(), *c);
                Some(
                    tokio::task::spawn_blocking(move || {
                        crate::evidence::receipt(&reader, position, c)
                    })
                    .await
                    .map_err(|e| CommandError::Unavailable(e.to_string()))?,
                )
            }
            _ => None,
        }
        .transpose()
        .map_err(|e| CommandError::Unavailable(e.to_string()))?;
        Ok(Submitted { position, duplicate, entry, confirmation, receipt })
    }

    /// Confirms the published registration at `registration` on the registry's own authority.
    /// `None` when the key is no longer pending (rejected, ended, or confirmed by an
    /// administrator).
    async fn auto_confirm(
        &self,
        fingerprint: &str,
        registration: u64,
    ) -> Result<Option<(u64, Vec<u8>)>, CommandError> {
        let action =
            RegistryAction::AutoConfirm { fingerprint: fingerprint.to_string(), registration };
        let (id, digest) = action.request_id();
        match self.append(id, digest, Proposal::Registry(action)).await {
            Ok((position, _)) => Ok(Some((position, self.reader.entry(position)?))),
            Err(CommandError::Rejected(r)) => {
                // Confirmed before request IDs were ordered (a retried registration from then).
                let action = RegistryAction::AutoConfirm {
                    fingerprint: fingerprint.to_string(),
                    registration,
                };
                if let Some(earlier) = action
                    .legacy_request_id()
                    .map(|l| self.reader.request(&l))
                    .transpose()?
                    .flatten()
                    && earlier.digest == digest
                {
                    return Ok(Some((earlier.position, self.reader.entry(earlier.position)?)));
                }
                tracing::debug!(%fingerprint, reason = %r, "registration not confirmed automatically");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the configured administrator keys as the log's first administrators, if the log
    /// has none yet. Returns the entry's position when it appended one.
    pub async fn bootstrap(
        &self,
        admins: Vec<(Vec<u8>, String)>,
    ) -> Result<Option<u64>, CommandError> {
        // One key named twice (two paths to one file) is one administrator: kept twice, it
        // could revoke itself as "not the last" and leave the registry with none.
        let mut seen = std::collections::BTreeSet::new();
        let admins: Vec<_> = admins
            .into_iter()
            .filter(|(der, _)| seen.insert(registry_core::keys::fingerprint(der)))
            .collect();
        if admins.is_empty() {
            return Ok(None);
        }
        let store = self.reader.store().clone();
        let existing = Projection::new(store.as_ref()).admins()?;
        if !existing.is_empty() {
            for (der, label) in &admins {
                if !existing.contains(&registry_core::keys::fingerprint(der)) {
                    tracing::warn!(key = %registry_core::keys::fingerprint_hex(der), %label,
                        "configured admin key ignored: the log already has administrators; add it with a signed add_admin_key command");
                }
            }
            return Ok(None);
        }
        let action = RegistryAction::Bootstrap { admins };
        let (id, digest) = action.request_id();
        let (position, _) = self.append(id, digest, Proposal::Registry(action)).await?;
        Ok(Some(position))
    }

    /// Under the automatic policy, confirms every registration still pending (after a crash
    /// between a registration and its confirmation). Returns how many were confirmed.
    pub async fn confirm_pending(&self) -> Result<usize, CommandError> {
        if self.settings.confirm_policy != ConfirmPolicy::Auto {
            return Ok(0);
        }
        let store = self.reader.store().clone();
        let size = self.reader.head().size;
        let pending = Projection::new(store.as_ref()).pending()?;
        let mut confirmed = 0;
        for (fp, registered) in pending.into_iter().filter(|(_, p)| *p < size) {
            if self.auto_confirm(&fp, registered).await?.is_some() {
                tracing::info!(fingerprint = %fp, registration = registered, "confirmed a pending registration");
                confirmed += 1;
            }
        }
        Ok(confirmed)
    }
}
