//! The key lifecycle rules: what each command may do, and what the log's events mean.
//!
//! Two functions carry the rules, and both sides run the same code: the server inside its
//! single writer, and an auditor re-deriving the registry from an exported log.
//!
//! - [`decide`] checks a command against the state after every earlier entry and returns the
//!   events it appends, or a [`Rejection`] naming the field and the rule. It changes nothing.
//! - [`apply`] folds an appended entry's events into the projections: key records, the indexes
//!   by EVSE, serials and operator, operators and their signing keys, and the latest entry per
//!   identifier (for back-links).
//!
//! A [`KeyRecord`] keeps every event of its key in log order, so the key *as known at* any log
//! size is a prefix of its history ([`KeyRecord::as_of`]); validity verdicts are computed from
//! that ([`crate::validity`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

use crate::command::{Action, Command, NewKey, SignedCommand};
use crate::entry::{EntryBody, EntryHeader};
use crate::event::{EndReason, Event, Identifier, IdentifierKind, Link, Registration};
use crate::ids::{EvseId, OperatorId};
use crate::keys;
use crate::time::{self, Time};

/// Where and when an event was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Log position.
    pub position: u64,
    /// Recorded time.
    pub recorded_at: Time,
}

/// A change to a key after (and including) its registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyChange {
    /// Registered (details in [`KeyRecord::registration`]).
    Registered,
    /// Confirmed, once published in a checkpoint of this size.
    Confirmed {
        /// Checkpoint size that covered the registration.
        published_in_tree_size: u64,
    },
    /// Rejected.
    Rejected {
        /// Why.
        reason: String,
    },
    /// Ended.
    Ended {
        /// When.
        effective_at: Time,
        /// Why.
        reason: EndReason,
        /// For people.
        comment: String,
        /// Successor key.
        successor: Option<String>,
    },
    /// Moved to other EVSE IDs.
    Relocated {
        /// When.
        effective_at: Time,
        /// New EVSE IDs.
        evse_ids: Vec<EvseId>,
    },
    /// Released to another operator.
    Released {
        /// Who may take it over.
        to_operator_id: OperatorId,
    },
    /// Moved to another operator.
    TakenOver {
        /// When.
        effective_at: Time,
        /// New operator.
        operator_id: OperatorId,
        /// New EVSE IDs.
        evse_ids: Vec<EvseId>,
        /// Forced by an administrator.
        forced: bool,
    },
}

/// One event in a key's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEvent {
    /// Where it is in the log.
    pub at: Stamp,
    /// What happened.
    pub change: KeyChange,
}

/// Everything known about one meter key: its registration and every later event, in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The registration as recorded.
    pub registration: Registration,
    /// Every event, the registration first.
    pub history: Vec<KeyEvent>,
}

/// Where a key stands at some log size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Waiting for confirmation.
    Pending,
    /// Confirmed, not ended.
    Active,
    /// Ended.
    Deactivated(EndReason),
    /// Rejected.
    Rejected,
}

/// An interval during which a key served a set of EVSE IDs of one operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Start, inclusive.
    pub from: Time,
    /// End, exclusive; `None` while it lasts.
    pub until: Option<Time>,
    /// The operator.
    pub operator_id: OperatorId,
    /// The EVSE IDs.
    pub evse_ids: Vec<EvseId>,
    /// Entry that started it.
    pub from_position: u64,
    /// Entry that ended it.
    pub until_position: Option<u64>,
    /// Why it ended: a key end reason, or `Relocated` / `TakenOver`.
    pub ended_by: Option<EndReason>,
}

impl Binding {
    /// Whether `t` lies in the interval.
    pub fn contains(&self, t: Time) -> bool {
        self.from <= t && self.until.is_none_or(|u| t < u)
    }

    /// Whether the interval overlaps `[from, ∞)`.
    pub fn overlaps_open(&self, from: Time) -> bool {
        self.until.is_none_or(|u| from < u)
    }
}

/// A key as known at a log size: its record and the prefix of its history before that size.
#[derive(Debug, Clone, Copy)]
pub struct KeyAsOf<'a> {
    /// The full record.
    pub record: &'a KeyRecord,
    /// The events recorded before the size.
    pub events: &'a [KeyEvent],
}

impl KeyRecord {
    /// A new record from a registration event.
    pub fn new(registration: Registration, at: Stamp) -> Self {
        Self { registration, history: vec![KeyEvent { at, change: KeyChange::Registered }] }
    }

    /// The fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.registration.fingerprint
    }

    /// Position of the registration.
    pub fn registered_at(&self) -> u64 {
        self.history[0].at.position
    }

    /// The key as known at log size `size`, or `None` if it was registered later.
    pub fn as_of(&self, size: u64) -> Option<KeyAsOf<'_>> {
        let n = self.history.partition_point(|e| e.at.position < size);
        (n > 0).then(|| KeyAsOf { record: self, events: &self.history[..n] })
    }

    /// The key as known now.
    pub fn now(&self) -> KeyAsOf<'_> {
        KeyAsOf { record: self, events: &self.history }
    }
}

impl KeyAsOf<'_> {
    /// The registration.
    pub fn registration(&self) -> &Registration {
        &self.record.registration
    }

    /// The confirmation, if any.
    pub fn confirmed(&self) -> Option<&Stamp> {
        self.events.iter().find(|e| matches!(e.change, KeyChange::Confirmed { .. })).map(|e| &e.at)
    }

    /// The rejection, if any.
    pub fn rejected(&self) -> Option<(&Stamp, &str)> {
        self.events.iter().find_map(|e| match &e.change {
            KeyChange::Rejected { reason } => Some((&e.at, reason.as_str())),
            _ => None,
        })
    }

    /// The end: when, why, where in the log.
    pub fn end(&self) -> Option<(Time, EndReason, &Stamp)> {
        self.events.iter().find_map(|e| match &e.change {
            KeyChange::Ended { effective_at, reason, .. } => Some((*effective_at, *reason, &e.at)),
            _ => None,
        })
    }

    /// The successor key, if ended by replacement or rotation.
    pub fn successor(&self) -> Option<&str> {
        self.events.iter().find_map(|e| match &e.change {
            KeyChange::Ended { successor: Some(s), .. } => Some(s.as_str()),
            _ => None,
        })
    }

    /// Where the key stands.
    pub fn state(&self) -> KeyState {
        if self.rejected().is_some() {
            KeyState::Rejected
        } else if let Some((_, reason, _)) = self.end() {
            KeyState::Deactivated(reason)
        } else if self.confirmed().is_some() {
            KeyState::Active
        } else {
            KeyState::Pending
        }
    }

    /// Whether commands may still change the key's binding (not ended, not rejected).
    pub fn is_open(&self) -> bool {
        matches!(self.state(), KeyState::Pending | KeyState::Active)
    }

    /// Every binding interval, oldest first.
    pub fn bindings(&self) -> Vec<Binding> {
        let reg = &self.record.registration;
        let mut out = vec![Binding {
            from: reg.effective_at,
            until: None,
            operator_id: reg.operator_id.clone(),
            evse_ids: reg.evse_ids.clone(),
            from_position: self.record.registered_at(),
            until_position: None,
            ended_by: None,
        }];
        for e in &self.events[1..] {
            let (effective_at, next, why) = match &e.change {
                KeyChange::Relocated { effective_at, evse_ids } => {
                    let op = out
                        .last()
                        .map(|b| b.operator_id.clone())
                        .unwrap_or(reg.operator_id.clone());
                    (*effective_at, Some((op, evse_ids.clone())), EndReason::Relocated)
                }
                KeyChange::TakenOver { effective_at, operator_id, evse_ids, .. } => (
                    *effective_at,
                    Some((operator_id.clone(), evse_ids.clone())),
                    EndReason::TakenOver,
                ),
                KeyChange::Ended { effective_at, reason, .. } => (*effective_at, None, *reason),
                _ => continue,
            };
            if let Some(last) = out.last_mut().filter(|b| b.until.is_none()) {
                last.until = Some(effective_at);
                last.until_position = Some(e.at.position);
                last.ended_by = Some(why);
            }
            if let Some((operator_id, evse_ids)) = next {
                out.push(Binding {
                    from: effective_at,
                    until: None,
                    operator_id,
                    evse_ids,
                    from_position: e.at.position,
                    until_position: None,
                    ended_by: None,
                });
            }
        }
        out
    }

    /// The latest binding (the current one unless the key ended).
    pub fn last_binding(&self) -> Binding {
        self.bindings().pop().expect("a registered key has a binding")
    }

    /// The latest effective time of any event: later events may not go before it.
    pub fn last_effective_at(&self) -> Time {
        self.events
            .iter()
            .filter_map(|e| match &e.change {
                KeyChange::Ended { effective_at, .. }
                | KeyChange::Relocated { effective_at, .. }
                | KeyChange::TakenOver { effective_at, .. } => Some(*effective_at),
                _ => None,
            })
            .fold(self.record.registration.effective_at, Time::max)
    }

    /// The operator a release is open to (released and not taken over since).
    pub fn released_to(&self) -> Option<&OperatorId> {
        let mut open = None;
        for e in self.events {
            match &e.change {
                KeyChange::Released { to_operator_id } => open = Some(to_operator_id),
                KeyChange::TakenOver { .. } => open = None,
                _ => {}
            }
        }
        open
    }

    /// Positions of every event known, ascending.
    pub fn positions(&self) -> Vec<u64> {
        self.events.iter().map(|e| e.at.position).collect()
    }
}

/// A command-signing key's role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A registry administrator.
    Admin,
    /// An operator.
    Operator(OperatorId),
}

/// A key that may sign commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerRecord {
    /// Fingerprint.
    pub key_id: [u8; 32],
    /// DER SubjectPublicKeyInfo (P-256).
    pub public_key: Vec<u8>,
    /// Who it signs for.
    pub role: Role,
    /// For people.
    pub label: String,
    /// Entry that added it.
    pub added_position: u64,
    /// Entry that revoked it.
    pub revoked_position: Option<u64>,
}

/// An operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorRecord {
    /// Its ID.
    pub operator_id: OperatorId,
    /// Display name.
    pub name: String,
    /// Entry that added it.
    pub added_position: u64,
    /// Every key it ever had (see the signer records for their status).
    pub keys: Vec<[u8; 32]>,
}

/// Read access to the projections.
pub trait State {
    /// The backend's error.
    type Error;
    /// A key record, shared: backends that keep records in memory hand them out without copying.
    fn key(&self, fingerprint: &str) -> Result<Option<Arc<KeyRecord>>, Self::Error>;
    /// Keys ever indexed under an EVSE ID or a serial, with the position that added each.
    /// (Nothing asks for an operator's keys this way, so operators are not indexed: an index
    /// entry per key would make every operator's group as large as its fleet.)
    fn indexed(&self, kind: IdentifierKind, value: &str) -> Result<IndexGroup, Self::Error>;
    /// An operator.
    fn operator(&self, id: &OperatorId) -> Result<Option<OperatorRecord>, Self::Error>;
    /// A command-signing key.
    fn signer(&self, key_id: &[u8; 32]) -> Result<Option<SignerRecord>, Self::Error>;
    /// The active administrator keys.
    fn admins(&self) -> Result<Vec<[u8; 32]>, Self::Error>;
    /// The latest entry that touched an identifier.
    fn latest(&self, id: &Identifier) -> Result<Option<u64>, Self::Error>;
}

/// The keys indexed under one identifier with the position that added each, in fingerprint
/// order; shared, so backends that keep groups in memory hand them out without copying.
pub type IndexGroup = Arc<[(String, u64)]>;

/// Write access to the projections, for [`apply`].
pub trait StateMut: State {
    /// Stores a key record.
    fn put_key(&mut self, record: KeyRecord) -> Result<(), Self::Error>;
    /// Adds a key to an index.
    fn add_to_index(
        &mut self,
        kind: IdentifierKind,
        value: &str,
        fingerprint: &str,
        position: u64,
    ) -> Result<(), Self::Error>;
    /// Stores an operator.
    fn put_operator(&mut self, record: &OperatorRecord) -> Result<(), Self::Error>;
    /// Stores a signer.
    fn put_signer(&mut self, record: &SignerRecord) -> Result<(), Self::Error>;
    /// Replaces the list of active administrator keys.
    fn set_admins(&mut self, admins: &[[u8; 32]]) -> Result<(), Self::Error>;
    /// Records the latest entry that touched an identifier.
    fn set_latest(&mut self, id: &Identifier, position: u64) -> Result<(), Self::Error>;
    /// Marks a key as awaiting confirmation (`Some(registration position)`) or not.
    fn set_pending(
        &mut self,
        fingerprint: &str,
        registration: Option<u64>,
    ) -> Result<(), Self::Error>;
}

/// The status class of a refusal, mapped to gRPC codes at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectCode {
    /// A field breaks a rule regardless of state.
    InvalidArgument,
    /// The state does not allow it now.
    FailedPrecondition,
    /// The signer may not act on the target.
    PermissionDenied,
    /// The signer is not known or not trusted.
    Unauthenticated,
    /// The thing to create exists already.
    AlreadyExists,
}

/// Why a command was refused: the class, the field (protobuf path) and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct Rejection {
    /// The class.
    pub code: RejectCode,
    /// The field, when one is to blame.
    pub field: Option<String>,
    /// The rule that was broken.
    pub message: String,
}

impl Rejection {
    fn new(code: RejectCode, field: Option<&str>, message: impl Into<String>) -> Self {
        Self { code, field: field.map(str::to_string), message: message.into() }
    }
    /// `INVALID_ARGUMENT` for a field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::new(RejectCode::InvalidArgument, Some(field), message)
    }
    /// `FAILED_PRECONDITION` for a field.
    pub fn precondition(field: &str, message: impl Into<String>) -> Self {
        Self::new(RejectCode::FailedPrecondition, Some(field), message)
    }
    /// `PERMISSION_DENIED`, naming the field that is out of the signer's reach.
    pub fn denied(field: Option<&str>, message: impl Into<String>) -> Self {
        Self::new(RejectCode::PermissionDenied, field, message)
    }
    /// `UNAUTHENTICATED`.
    pub fn unauthenticated(field: &str, message: impl Into<String>) -> Self {
        Self::new(RejectCode::Unauthenticated, Some(field), message)
    }
    /// `ALREADY_EXISTS` for a field.
    pub fn exists(field: &str, message: impl Into<String>) -> Self {
        Self::new(RejectCode::AlreadyExists, Some(field), message)
    }
}

/// A failed decision: refused, or the state could not be read.
#[derive(Debug)]
pub enum DecideError<E> {
    /// The command is refused.
    Rejected(Rejection),
    /// The state backend failed.
    State(E),
}

impl<E> From<Rejection> for DecideError<E> {
    fn from(r: Rejection) -> Self {
        DecideError::Rejected(r)
    }
}

/// What the registry itself appends (no signed command).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryAction {
    /// The first administrator keys, from the server's configuration.
    Bootstrap {
        /// DER SubjectPublicKeyInfo and label of each.
        admins: Vec<(Vec<u8>, String)>,
    },
    /// Automatic confirmation of a published registration.
    AutoConfirm {
        /// The key.
        fingerprint: String,
        /// The position of its registration entry.
        registration: u64,
    },
}

/// Namespace of the request IDs the registry derives for its bootstrap entry, and for its
/// confirmations in logs written before 2026-12 (UUIDv5).
const REGISTRY_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5b0e_4c1e_7f2a_4d8b_9a41_6c3e_2f1d_0a77);

/// The 12 bits after the version nibble that mark a UUIDv8 as one of the registry's own
/// confirmation IDs; operators' commands may not use such IDs (see [`is_reserved_request_id`]).
const CONFIRMATION_MARK: u128 = 0xAC1;

/// Whether a request ID has the shape of the registry's own confirmation IDs (version 8, the
/// mark, the RFC 9562 variant). New commands are refused such IDs, so no operator can take the
/// ID of a confirmation before the registry writes it (which would keep the key pending).
pub fn is_reserved_request_id(id: &uuid::Uuid) -> bool {
    let v = id.as_u128();
    id.get_version_num() == 8 && (v >> 64) & 0xFFF == CONFIRMATION_MARK && (v >> 62) & 0b11 == 0b10
}

impl RegistryAction {
    /// The request ID and content digest of the entry this action appends. Derived from what
    /// the action does, so the registry appends it at most once, and auditors can check it.
    ///
    /// A confirmation's ID starts with its registration's position (a UUIDv8: position in the
    /// first 48 bits, the mark, then 62 bits of the digest), so successive confirmations sit
    /// next to each other in the store's request index, as time-ordered UUIDv7 commands do. The
    /// UUIDv5 used before spread them at random over an index of millions of IDs: every
    /// confirmation cost the writer a page read from disk and a rewrite of a random page.
    pub fn request_id(&self) -> (uuid::Uuid, [u8; 32]) {
        use sha2::{Digest, Sha256};
        let what = self.what();
        let digest: [u8; 32] = Sha256::digest(what.as_bytes()).into();
        let id = match self {
            RegistryAction::Bootstrap { .. } => {
                uuid::Uuid::new_v5(&REGISTRY_NAMESPACE, what.as_bytes())
            }
            RegistryAction::AutoConfirm { registration, .. } => {
                // 2^48 entries is far beyond any log; past it the IDs would stop being ordered.
                debug_assert!(*registration < 1 << 48, "registration position {registration}");
                let low = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) as u128;
                let bits = ((*registration as u128 & 0xFFFF_FFFF_FFFF) << 80)
                    | (0x8 << 76)
                    | (CONFIRMATION_MARK << 64)
                    | (0b10 << 62)
                    | (low & ((1 << 62) - 1));
                uuid::Uuid::from_u128(bits)
            }
        };
        (id, digest)
    }

    /// Whether `id` is this action's request ID: the current derivation, or the one of logs
    /// written before 2026-12 ([`RegistryAction::legacy_request_id`]).
    pub fn has_request_id(&self, id: &uuid::Uuid) -> bool {
        self.request_id().0 == *id || self.legacy_request_id() == Some(*id)
    }

    /// The UUIDv5 that confirmations in logs written before 2026-12 carry (the digest is the
    /// same), so that a retried registration from then still finds its confirmation.
    pub fn legacy_request_id(&self) -> Option<uuid::Uuid> {
        matches!(self, RegistryAction::AutoConfirm { .. })
            .then(|| uuid::Uuid::new_v5(&REGISTRY_NAMESPACE, self.what().as_bytes()))
    }

    /// What the action does, as the text its digest is taken over.
    fn what(&self) -> String {
        match self {
            RegistryAction::Bootstrap { admins } => {
                let mut fps: Vec<String> =
                    admins.iter().map(|(der, _)| keys::fingerprint_hex(der)).collect();
                fps.sort();
                format!("bootstrap:{}", fps.join(","))
            }
            RegistryAction::AutoConfirm { fingerprint, .. } => {
                format!("auto-confirm:{fingerprint}")
            }
        }
    }
}

/// Something to decide: a signed command (already checked for its signature) or a registry
/// action.
#[derive(Debug, Clone)]
pub enum Proposal {
    /// From an operator or administrator.
    Signed {
        /// The envelope, stored with the entry.
        envelope: SignedCommand,
        /// Its decoded content.
        command: Command,
    },
    /// From the registry.
    Registry(RegistryAction),
}

/// Policy knobs of a decision. An auditor re-deriving an old log may relax them.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// How far past the registry's time an effective time may lie.
    pub max_future: TimeDelta,
}

impl Default for Policy {
    fn default() -> Self {
        Self { max_future: TimeDelta::minutes(5) }
    }
}

/// What a decision knows besides the state.
#[derive(Debug, Clone, Copy)]
pub struct DecideContext {
    /// The recorded time the entry will get: the registry's "now".
    pub now: Time,
    /// Size of the log that is durable and covered by a signed checkpoint: what may be
    /// confirmed as published.
    pub published_size: u64,
    /// Policy knobs.
    pub policy: Policy,
}

type Decision<E> = Result<Vec<Event>, DecideError<E>>;

fn st<E>(r: Result<Option<Arc<KeyRecord>>, E>) -> Result<Option<Arc<KeyRecord>>, DecideError<E>> {
    r.map_err(DecideError::State)
}

/// Checks a proposal against the state and returns the events to append.
pub fn decide<S: State>(proposal: &Proposal, ctx: &DecideContext, state: &S) -> Decision<S::Error> {
    match proposal {
        Proposal::Registry(action) => decide_registry(action, ctx, state),
        Proposal::Signed { envelope, command } => {
            let signer = state
                .signer(&envelope.signer_key_id)
                .map_err(DecideError::State)?
                .ok_or_else(|| {
                    Rejection::unauthenticated(
                        "command.signer_key_id",
                        "the signing key is not known to the registry",
                    )
                })?;
            if let Some(p) = signer.revoked_position {
                return Err(Rejection::unauthenticated(
                    "command.signer_key_id",
                    format!("the signing key was revoked (entry {p})"),
                )
                .into());
            }
            match (&signer.role, command.action.is_admin()) {
                (Role::Admin, true) => decide_admin(command, ctx, state),
                (Role::Operator(op), false) => decide_operator(op, command, ctx, state),
                (Role::Operator(_), true) => Err(Rejection::denied(
                    None,
                    format!("only registry administrators may {}", command.action.name()),
                )
                .into()),
                (Role::Admin, false) => Err(Rejection::denied(
                    None,
                    format!(
                        "{} is an operator command; administrators act on keys only through force_take_over",
                        command.action.name()
                    ),
                )
                .into()),
            }
        }
    }
}

fn decide_registry<S: State>(
    action: &RegistryAction,
    ctx: &DecideContext,
    state: &S,
) -> Decision<S::Error> {
    match action {
        RegistryAction::Bootstrap { admins } => {
            if !state.admins().map_err(DecideError::State)?.is_empty() {
                return Err(Rejection::precondition(
                    "admin_keys",
                    "the registry already has administrators",
                )
                .into());
            }
            if admins.is_empty() {
                return Err(Rejection::invalid(
                    "admin_keys",
                    "name at least one administrator key",
                )
                .into());
            }
            Ok(admins
                .iter()
                .map(|(public_key, label)| Event::AdminKeyAdded {
                    public_key: public_key.clone(),
                    label: label.clone(),
                })
                .collect())
        }
        RegistryAction::AutoConfirm { fingerprint, registration } => {
            let events = confirm(fingerprint, "fingerprint", ctx, state)?;
            // The action names the registration it confirms, and its request ID depends on it.
            if !matches!(events.as_slice(),
                [Event::KeyConfirmed { registration_position, .. }] if registration_position == registration)
            {
                return Err(Rejection::precondition(
                    "registration",
                    format!("entry {registration} is not the registration of key {fingerprint}"),
                )
                .into());
            }
            Ok(events)
        }
    }
}

fn confirm<S: State>(
    fingerprint: &str,
    field: &str,
    ctx: &DecideContext,
    state: &S,
) -> Decision<S::Error> {
    let record = st(state.key(fingerprint))?.ok_or_else(|| {
        Rejection::precondition(field, format!("no key {fingerprint} is registered"))
    })?;
    let key = record.now();
    if key.state() != KeyState::Pending {
        return Err(Rejection::precondition(
            field,
            format!("the key is {}, not PENDING", state_name(key.state())),
        )
        .into());
    }
    let registration_position = record.registered_at();
    if registration_position >= ctx.published_size {
        return Err(Rejection::precondition(
            field,
            "the registration is not yet published in a signed checkpoint; confirmation is never given before publication",
        )
        .into());
    }
    Ok(vec![Event::KeyConfirmed {
        fingerprint: fingerprint.to_string(),
        registration_position,
        published_in_tree_size: ctx.published_size,
    }])
}

/// The name of a state, for messages.
pub fn state_name(s: KeyState) -> &'static str {
    match s {
        KeyState::Pending => "PENDING",
        KeyState::Active => "ACTIVE",
        KeyState::Deactivated(_) => "DEACTIVATED",
        KeyState::Rejected => "REJECTED",
    }
}

fn no_signer<S: State>(state: &S, der: &[u8], field: &str) -> Result<(), DecideError<S::Error>> {
    if let Some(existing) = state.signer(&keys::fingerprint(der)).map_err(DecideError::State)? {
        let whose = match existing.role {
            Role::Admin => "an administrator".to_string(),
            Role::Operator(op) => format!("operator {op}"),
        };
        return Err(Rejection::exists(field, format!("this key already signs for {whose}")).into());
    }
    Ok(())
}

fn decide_admin<S: State>(command: &Command, ctx: &DecideContext, state: &S) -> Decision<S::Error> {
    let state_err = DecideError::State;
    match &command.action {
        Action::AddAdminKey { public_key, label } => {
            no_signer(state, public_key, "add_admin_key.public_key")?;
            Ok(vec![Event::AdminKeyAdded { public_key: public_key.clone(), label: label.clone() }])
        }
        Action::RevokeAdminKey { key_id } => {
            let admins = state.admins().map_err(state_err)?;
            if !admins.contains(key_id) {
                return Err(Rejection::precondition(
                    "revoke_admin_key.key_id",
                    "is not an active administrator key",
                )
                .into());
            }
            if admins.len() == 1 {
                return Err(Rejection::precondition(
                    "revoke_admin_key.key_id",
                    "is the last administrator key; add another one first",
                )
                .into());
            }
            Ok(vec![Event::AdminKeyRevoked { key_id: *key_id }])
        }
        Action::AddOperator { operator_id, name, public_keys } => {
            if state.operator(operator_id).map_err(state_err)?.is_some() {
                return Err(Rejection::exists(
                    "add_operator.operator_id",
                    format!("operator {operator_id} already exists"),
                )
                .into());
            }
            let mut seen = BTreeSet::new();
            for (i, k) in public_keys.iter().enumerate() {
                let field = format!("add_operator.public_keys[{i}]");
                if !seen.insert(keys::fingerprint(k)) {
                    return Err(Rejection::invalid(&field, "the same key is named twice").into());
                }
                no_signer(state, k, &field)?;
            }
            Ok(vec![Event::OperatorAdded {
                operator_id: operator_id.clone(),
                name: name.clone(),
                public_keys: public_keys.clone(),
            }])
        }
        Action::AddOperatorKey { operator_id, public_key } => {
            if state.operator(operator_id).map_err(state_err)?.is_none() {
                return Err(Rejection::precondition(
                    "add_operator_key.operator_id",
                    format!("no operator {operator_id}"),
                )
                .into());
            }
            no_signer(state, public_key, "add_operator_key.public_key")?;
            Ok(vec![Event::OperatorKeyAdded {
                operator_id: operator_id.clone(),
                public_key: public_key.clone(),
            }])
        }
        Action::RevokeOperatorKey { operator_id, key_id } => {
            let signer = state.signer(key_id).map_err(state_err)?;
            let active_for =
                signer.filter(|s| s.revoked_position.is_none()).and_then(|s| match s.role {
                    Role::Operator(op) => Some(op),
                    Role::Admin => None,
                });
            if active_for.as_ref() != Some(operator_id) {
                return Err(Rejection::precondition(
                    "revoke_operator_key.key_id",
                    format!("is not an active key of operator {operator_id}"),
                )
                .into());
            }
            Ok(vec![Event::OperatorKeyRevoked {
                operator_id: operator_id.clone(),
                key_id: *key_id,
            }])
        }
        Action::ConfirmKey { fingerprint } => {
            confirm(fingerprint, "confirm_key.fingerprint", ctx, state)
        }
        Action::RejectKey { fingerprint, reason } => {
            let record = st(state.key(fingerprint))?.ok_or_else(|| {
                Rejection::precondition(
                    "reject_key.fingerprint",
                    format!("no key {fingerprint} is registered"),
                )
            })?;
            let now = record.now().state();
            if now != KeyState::Pending {
                return Err(Rejection::precondition(
                    "reject_key.fingerprint",
                    format!(
                        "the key is {}, only PENDING registrations can be rejected",
                        state_name(now)
                    ),
                )
                .into());
            }
            Ok(vec![Event::KeyRejected {
                fingerprint: fingerprint.clone(),
                reason: reason.clone(),
            }])
        }
        Action::ForceTakeOver { fingerprint, operator_id, evse_ids, effective_at } => {
            let f = "force_take_over";
            let record = open_key(state, fingerprint, &format!("{f}.fingerprint"))?;
            let key = record.now();
            if state.operator(operator_id).map_err(state_err)?.is_none() {
                return Err(Rejection::precondition(
                    &format!("{f}.operator_id"),
                    format!("no operator {operator_id}"),
                )
                .into());
            }
            if key.last_binding().operator_id == *operator_id {
                return Err(Rejection::precondition(
                    &format!("{f}.operator_id"),
                    "the key is already bound to that operator; use relocate_key",
                )
                .into());
            }
            own_evses(
                operator_id,
                evse_ids,
                &format!("{f}.evse_ids"),
                RejectCode::InvalidArgument,
            )?;
            let at = effective(command, *effective_at, &format!("{f}.effective_at"), ctx)?;
            not_before(&key, at, &format!("{f}.effective_at"))?;
            evses_free(state, evse_ids, at, &[fingerprint.as_str()], &format!("{f}.evse_ids"))?;
            Ok(vec![Event::KeyTakenOver {
                fingerprint: fingerprint.clone(),
                effective_at: at,
                operator_id: operator_id.clone(),
                evse_ids: evse_ids.clone(),
                forced: true,
            }])
        }
        _ => unreachable!("operator commands are routed to decide_operator"),
    }
}

/// The effective time of a command: given, or its issue time; never too far in the future.
fn effective(
    command: &Command,
    given: Option<Time>,
    field: &str,
    ctx: &DecideContext,
) -> Result<Time, Rejection> {
    let at = given.unwrap_or(command.issued_at);
    if at > ctx.now + ctx.policy.max_future {
        return Err(Rejection::invalid(
            field,
            format!(
                "{} is more than {} minutes after the registry's time {}",
                time::format(&at),
                ctx.policy.max_future.num_minutes(),
                time::format(&ctx.now)
            ),
        ));
    }
    Ok(at)
}

/// Per key, effective times never go backwards.
fn not_before(key: &KeyAsOf<'_>, at: Time, field: &str) -> Result<(), Rejection> {
    let last = key.last_effective_at();
    if at < last {
        return Err(Rejection::precondition(
            field,
            format!(
                "{} is before the key's previous event at {}; effective times never go backwards",
                time::format(&at),
                time::format(&last)
            ),
        ));
    }
    Ok(())
}

fn open_key<S: State>(
    state: &S,
    fingerprint: &str,
    field: &str,
) -> Result<Arc<KeyRecord>, DecideError<S::Error>> {
    let record = st(state.key(fingerprint))?.ok_or_else(|| {
        Rejection::precondition(field, format!("no key {fingerprint} is registered"))
    })?;
    let s = record.now().state();
    if !record.now().is_open() {
        return Err(Rejection::precondition(field, format!("the key is {}", state_name(s))).into());
    }
    Ok(record)
}

/// Every EVSE ID must belong to `operator`.
fn own_evses(
    operator: &OperatorId,
    evse_ids: &[EvseId],
    field: &str,
    code: RejectCode,
) -> Result<(), Rejection> {
    for (i, e) in evse_ids.iter().enumerate() {
        if e.operator() != *operator {
            return Err(Rejection {
                code,
                field: Some(format!("{field}[{i}]")),
                message: format!("{e} belongs to operator {}, not {operator}", e.operator()),
            });
        }
    }
    Ok(())
}

/// No other key may be bound to any of `evse_ids` at any time from `from` on.
fn evses_free<S: State>(
    state: &S,
    evse_ids: &[EvseId],
    from: Time,
    ignore: &[&str],
    field: &str,
) -> Result<(), DecideError<S::Error>> {
    for (i, evse) in evse_ids.iter().enumerate() {
        for (fp, _) in
            state.indexed(IdentifierKind::Evse, evse.as_str()).map_err(DecideError::State)?.iter()
        {
            if ignore.contains(&fp.as_str()) {
                continue;
            }
            let Some(other) = st(state.key(fp))? else { continue };
            let other = other.now();
            if other.state() == KeyState::Rejected {
                continue;
            }
            if let Some(b) =
                other.bindings().iter().find(|b| b.evse_ids.contains(evse) && b.overlaps_open(from))
            {
                let until =
                    b.until.map(|u| format!(" until {}", time::format(&u))).unwrap_or_default();
                return Err(Rejection::precondition(
                    &format!("{field}[{i}]"),
                    format!(
                        "{evse} is bound to key {fp} from {}{until}, overlapping {}",
                        time::format(&b.from),
                        time::format(&from)
                    ),
                )
                .into());
            }
        }
    }
    Ok(())
}

/// No other key of the same signing unit (manufacturer + serial) may be valid at any time from
/// `from` on.
fn unit_free<S: State>(
    state: &S,
    key: &NewKey,
    from: Time,
    ignore: &[&str],
    field: &str,
) -> Result<(), DecideError<S::Error>> {
    let serials = [
        (IdentifierKind::MeterSerial, key.meter_serial.as_deref(), "meter_serial"),
        (IdentifierKind::GatewaySerial, key.gateway_serial.as_deref(), "gateway_serial"),
    ];
    for (kind, serial, name) in serials {
        let Some(serial) = serial else { continue };
        for (fp, _) in state.indexed(kind, serial).map_err(DecideError::State)?.iter() {
            if ignore.contains(&fp.as_str()) {
                continue;
            }
            let Some(other) = st(state.key(fp))? else { continue };
            if other.registration.manufacturer != key.manufacturer {
                continue;
            }
            let other = other.now();
            if other.state() == KeyState::Rejected {
                continue;
            }
            let overlaps = other.end().is_none_or(|(end, _, _)| from < end);
            if overlaps {
                return Err(Rejection::precondition(
                    &format!("{field}.{name}"),
                    format!(
                        "signing unit {} {serial} already has key {fp} at an overlapping time; a new key for the same unit goes through rotate_key or replace_key",
                        if key.manufacturer.is_empty() { "(no manufacturer)" } else { &key.manufacturer }
                    ),
                )
                .into());
            }
        }
    }
    Ok(())
}

fn not_registered<S: State>(
    state: &S,
    key: &NewKey,
    field: &str,
) -> Result<(), DecideError<S::Error>> {
    if let Some(existing) = st(state.key(&key.key.fingerprint))? {
        return Err(Rejection::exists(
            field,
            format!(
                "key {} is already registered (entry {}); a key belongs to exactly one signing unit, ever",
                key.key.fingerprint,
                existing.registered_at()
            ),
        )
        .into());
    }
    Ok(())
}

fn registration(
    key: &NewKey,
    operator_id: &OperatorId,
    evse_ids: &[EvseId],
    effective_at: Time,
    predecessor: Option<String>,
) -> Registration {
    Registration {
        fingerprint: key.key.fingerprint.clone(),
        curve: key.key.curve,
        public_key: key.key.spki_der.clone(),
        submitted_public_key: key.submitted.clone(),
        operator_id: operator_id.clone(),
        evse_ids: evse_ids.to_vec(),
        meter_serial: key.meter_serial.clone(),
        gateway_serial: key.gateway_serial.clone(),
        manufacturer: key.manufacturer.clone(),
        model: key.model.clone(),
        effective_at,
        predecessor,
        sample_signed_meter_value: key.sample_signed_meter_value.clone(),
    }
}

/// Loads a key the signing operator may act on: registered, open, bound to that operator.
fn owned_key<S: State>(
    state: &S,
    operator: &OperatorId,
    fingerprint: &str,
    field: &str,
) -> Result<Arc<KeyRecord>, DecideError<S::Error>> {
    let record = st(state.key(fingerprint))?.ok_or_else(|| {
        Rejection::precondition(field, format!("no key {fingerprint} is registered"))
    })?;
    let owner = record.now().last_binding().operator_id;
    if owner != *operator {
        return Err(Rejection::denied(
            Some(field),
            format!("the key is bound to operator {owner}, not {operator}"),
        )
        .into());
    }
    if !record.now().is_open() {
        return Err(Rejection::precondition(
            field,
            format!("the key is {}", state_name(record.now().state())),
        )
        .into());
    }
    Ok(record)
}

fn decide_operator<S: State>(
    operator: &OperatorId,
    command: &Command,
    ctx: &DecideContext,
    state: &S,
) -> Decision<S::Error> {
    match &command.action {
        Action::RegisterKey { key, evse_ids, effective_at } => {
            own_evses(operator, evse_ids, "register_key.evse_ids", RejectCode::PermissionDenied)?;
            not_registered(state, key, "register_key.key.public_key")?;
            let at = effective(command, *effective_at, "register_key.effective_at", ctx)?;
            evses_free(state, evse_ids, at, &[], "register_key.evse_ids")?;
            unit_free(state, key, at, &[], "register_key.key")?;
            Ok(vec![Event::KeyRegistered(registration(key, operator, evse_ids, at, None))])
        }
        Action::DeactivateKey { fingerprint, reason, comment, effective_at } => {
            let record = owned_key(state, operator, fingerprint, "deactivate_key.fingerprint")?;
            let at = effective(command, *effective_at, "deactivate_key.effective_at", ctx)?;
            not_before(&record.now(), at, "deactivate_key.effective_at")?;
            Ok(vec![Event::KeyEnded {
                fingerprint: fingerprint.clone(),
                effective_at: at,
                reason: *reason,
                comment: comment.clone(),
                successor: None,
            }])
        }
        Action::RelocateKey { fingerprint, evse_ids, effective_at } => {
            let record = owned_key(state, operator, fingerprint, "relocate_key.fingerprint")?;
            own_evses(operator, evse_ids, "relocate_key.evse_ids", RejectCode::PermissionDenied)?;
            let current = record.now().last_binding();
            let same: BTreeSet<&EvseId> = current.evse_ids.iter().collect();
            if same == evse_ids.iter().collect() {
                return Err(Rejection::precondition(
                    "relocate_key.evse_ids",
                    "the key is already bound to exactly these EVSE IDs",
                )
                .into());
            }
            let at = effective(command, *effective_at, "relocate_key.effective_at", ctx)?;
            not_before(&record.now(), at, "relocate_key.effective_at")?;
            evses_free(state, evse_ids, at, &[fingerprint.as_str()], "relocate_key.evse_ids")?;
            Ok(vec![Event::KeyRelocated {
                fingerprint: fingerprint.clone(),
                effective_at: at,
                evse_ids: evse_ids.clone(),
            }])
        }
        Action::ReplaceKey { fingerprint, new_key, effective_at, comment } => succession(
            operator,
            command,
            ctx,
            state,
            fingerprint,
            new_key,
            *effective_at,
            comment,
            EndReason::Replaced,
        ),
        Action::RotateKey { fingerprint, new_key, effective_at } => succession(
            operator,
            command,
            ctx,
            state,
            fingerprint,
            new_key,
            *effective_at,
            "",
            EndReason::Rotated,
        ),
        Action::ReleaseKey { fingerprint, to_operator_id } => {
            owned_key(state, operator, fingerprint, "release_key.fingerprint")?;
            if to_operator_id == operator {
                return Err(Rejection::invalid(
                    "release_key.to_operator_id",
                    "a key cannot be released to its own operator",
                )
                .into());
            }
            if state.operator(to_operator_id).map_err(DecideError::State)?.is_none() {
                return Err(Rejection::precondition(
                    "release_key.to_operator_id",
                    format!("no operator {to_operator_id}"),
                )
                .into());
            }
            Ok(vec![Event::KeyReleased {
                fingerprint: fingerprint.clone(),
                to_operator_id: to_operator_id.clone(),
            }])
        }
        Action::TakeOverKey { fingerprint, evse_ids, effective_at } => {
            let record = open_key(state, fingerprint, "take_over_key.fingerprint")?;
            let key = record.now();
            if key.released_to() != Some(operator) {
                return Err(Rejection::denied(
                    Some("take_over_key.fingerprint"),
                    format!("the key is not released to operator {operator}"),
                )
                .into());
            }
            own_evses(operator, evse_ids, "take_over_key.evse_ids", RejectCode::PermissionDenied)?;
            let at = effective(command, *effective_at, "take_over_key.effective_at", ctx)?;
            not_before(&key, at, "take_over_key.effective_at")?;
            evses_free(state, evse_ids, at, &[fingerprint.as_str()], "take_over_key.evse_ids")?;
            Ok(vec![Event::KeyTakenOver {
                fingerprint: fingerprint.clone(),
                effective_at: at,
                operator_id: operator.clone(),
                evse_ids: evse_ids.clone(),
                forced: false,
            }])
        }
        _ => unreachable!("administrator commands are routed to decide_admin"),
    }
}

/// Replace and rotate: the old key ends and the new one starts for the same EVSE IDs, atomically.
#[allow(clippy::too_many_arguments)]
fn succession<S: State>(
    operator: &OperatorId,
    command: &Command,
    ctx: &DecideContext,
    state: &S,
    fingerprint: &str,
    new_key: &NewKey,
    effective_at: Option<Time>,
    comment: &str,
    reason: EndReason,
) -> Decision<S::Error> {
    let f = if reason == EndReason::Rotated { "rotate_key" } else { "replace_key" };
    let record = owned_key(state, operator, fingerprint, &format!("{f}.fingerprint"))?;
    let old = record.now();
    let mut new_key = new_key.clone();
    if reason == EndReason::Rotated {
        // The same signing unit: its identity is the old key's.
        let reg = old.registration();
        let fields = [
            ("meter_serial", new_key.meter_serial.as_deref(), reg.meter_serial.as_deref()),
            ("gateway_serial", new_key.gateway_serial.as_deref(), reg.gateway_serial.as_deref()),
            (
                "manufacturer",
                Some(new_key.manufacturer.as_str()).filter(|m| !m.is_empty()),
                Some(reg.manufacturer.as_str()),
            ),
        ];
        for (name, given, old_value) in fields {
            if given.is_some() && given != old_value {
                return Err(Rejection::invalid(
                    &format!("{f}.new_key.{name}"),
                    "a rotation keeps the signing unit; use replace_key for a new unit",
                )
                .into());
            }
        }
        new_key.meter_serial = reg.meter_serial.clone();
        new_key.gateway_serial = reg.gateway_serial.clone();
        new_key.manufacturer = reg.manufacturer.clone();
        if new_key.model.is_empty() {
            new_key.model = reg.model.clone();
        }
    }
    not_registered(state, &new_key, &format!("{f}.new_key.public_key"))?;
    let at = effective(command, effective_at, &format!("{f}.effective_at"), ctx)?;
    not_before(&old, at, &format!("{f}.effective_at"))?;
    let binding = old.last_binding();
    evses_free(state, &binding.evse_ids, at, &[fingerprint], &format!("{f}.fingerprint"))?;
    unit_free(state, &new_key, at, &[fingerprint], &format!("{f}.new_key"))?;
    Ok(vec![
        Event::KeyEnded {
            fingerprint: fingerprint.to_string(),
            effective_at: at,
            reason,
            comment: comment.to_string(),
            successor: Some(new_key.key.fingerprint.clone()),
        },
        Event::KeyRegistered(registration(
            &new_key,
            &binding.operator_id,
            &binding.evse_ids,
            at,
            Some(fingerprint.to_string()),
        )),
    ])
}

/// The identifiers an entry's events touch, judged by the state before the entry.
pub fn touched<S: State>(events: &[Event], state: &S) -> Result<BTreeSet<Identifier>, S::Error> {
    let mut out = BTreeSet::new();
    let mut new_keys: HashMap<&str, &Registration> = HashMap::new();
    let serials = |out: &mut BTreeSet<Identifier>, r: &Registration| {
        if let Some(s) = &r.meter_serial {
            out.insert(Identifier { kind: IdentifierKind::MeterSerial, value: s.clone() });
        }
        if let Some(s) = &r.gateway_serial {
            out.insert(Identifier { kind: IdentifierKind::GatewaySerial, value: s.clone() });
        }
    };
    for event in events {
        match event {
            Event::AdminKeyAdded { .. } | Event::AdminKeyRevoked { .. } => {}
            Event::OperatorAdded { operator_id, .. }
            | Event::OperatorKeyAdded { operator_id, .. }
            | Event::OperatorKeyRevoked { operator_id, .. } => {
                out.insert(Identifier::operator(operator_id));
            }
            Event::KeyRegistered(r) => {
                out.insert(Identifier::key(&r.fingerprint));
                out.extend(r.evse_ids.iter().map(Identifier::evse));
                out.insert(Identifier::operator(&r.operator_id));
                serials(&mut out, r);
                new_keys.insert(&r.fingerprint, r);
            }
            other => {
                let fp = other.fingerprint().expect("every other event is about a key");
                out.insert(Identifier::key(fp));
                let (binding, reg) = match state.key(fp)? {
                    Some(record) => {
                        (Some(record.now().last_binding()), Some(record.registration.clone()))
                    }
                    None => (None, new_keys.get(fp).map(|r| (*r).clone())),
                };
                let (operator, evses) = match (&binding, &reg) {
                    (Some(b), _) => (Some(b.operator_id.clone()), b.evse_ids.clone()),
                    (None, Some(r)) => (Some(r.operator_id.clone()), r.evse_ids.clone()),
                    (None, None) => (None, vec![]),
                };
                match other {
                    Event::KeyEnded { .. } => {
                        out.extend(evses.iter().map(Identifier::evse));
                        out.extend(operator.iter().map(Identifier::operator));
                        if let Some(r) = &reg {
                            serials(&mut out, r);
                        }
                    }
                    Event::KeyRelocated { evse_ids, .. } => {
                        out.extend(evses.iter().chain(evse_ids).map(Identifier::evse));
                        out.extend(operator.iter().map(Identifier::operator));
                    }
                    Event::KeyReleased { to_operator_id, .. } => {
                        out.extend(operator.iter().map(Identifier::operator));
                        out.insert(Identifier::operator(to_operator_id));
                    }
                    Event::KeyTakenOver { operator_id, evse_ids, .. } => {
                        out.extend(evses.iter().chain(evse_ids).map(Identifier::evse));
                        out.extend(operator.iter().map(Identifier::operator));
                        out.insert(Identifier::operator(operator_id));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}

/// The back-links of an entry with these events: for each identifier touched, the previous
/// entry that touched it.
pub fn links<S: State>(events: &[Event], state: &S) -> Result<Vec<Link>, S::Error> {
    touched(events, state)?
        .into_iter()
        .map(|identifier| Ok(Link { previous: state.latest(&identifier)?, identifier }))
        .collect()
}

/// A rebuilt projection found the log inconsistent with the rules.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError<E> {
    /// An event refers to something that does not exist.
    #[error("entry {position}: {message}")]
    Inconsistent {
        /// The entry.
        position: u64,
        /// What is wrong.
        message: String,
    },
    /// The state backend failed.
    #[error("state backend failed")]
    State(E),
}

/// Records an appended entry in the projections.
pub fn apply<S: StateMut>(
    header: &EntryHeader,
    body: &EntryBody,
    state: &mut S,
) -> Result<(), ApplyError<S::Error>> {
    let at = Stamp { position: header.position, recorded_at: header.recorded_at };
    for event in &body.events {
        apply_event(event, at, state)?;
    }
    for link in &body.links {
        state.set_latest(&link.identifier, at.position).map_err(ApplyError::State)?;
    }
    Ok(())
}

/// Folds only the events about the keys `keep` selects (no operators, no back-links): enough to
/// rebuild those keys' records and index entries from a subset of the log, as a verifier holding
/// their complete chains does.
pub fn apply_key_events<S: StateMut>(
    header: &EntryHeader,
    body: &EntryBody,
    state: &mut S,
    keep: impl Fn(&str) -> bool,
) -> Result<(), ApplyError<S::Error>> {
    let at = Stamp { position: header.position, recorded_at: header.recorded_at };
    for event in body.events.iter().filter(|e| e.fingerprint().is_some_and(&keep)) {
        apply_event(event, at, state)?;
    }
    Ok(())
}

fn apply_event<S: StateMut>(
    event: &Event,
    at: Stamp,
    state: &mut S,
) -> Result<(), ApplyError<S::Error>> {
    let position = at.position;
    let bad = |message: String| ApplyError::Inconsistent { position, message };
    let s = ApplyError::State;
    match event {
        Event::AdminKeyAdded { public_key, label } => {
            let key_id = keys::fingerprint(public_key);
            state
                .put_signer(&SignerRecord {
                    key_id,
                    public_key: public_key.clone(),
                    role: Role::Admin,
                    label: label.clone(),
                    added_position: position,
                    revoked_position: None,
                })
                .map_err(s)?;
            let mut admins = state.admins().map_err(s)?;
            admins.push(key_id);
            state.set_admins(&admins).map_err(s)?;
        }
        Event::AdminKeyRevoked { key_id } => {
            let mut signer = state
                .signer(key_id)
                .map_err(s)?
                .ok_or_else(|| bad("revokes an unknown admin key".into()))?;
            signer.revoked_position = Some(position);
            state.put_signer(&signer).map_err(s)?;
            let admins: Vec<_> =
                state.admins().map_err(s)?.into_iter().filter(|k| k != key_id).collect();
            state.set_admins(&admins).map_err(s)?;
        }
        Event::OperatorAdded { operator_id, name, public_keys } => {
            for k in public_keys {
                put_operator_key(state, operator_id, k, position).map_err(s)?;
            }
            state
                .put_operator(&OperatorRecord {
                    operator_id: operator_id.clone(),
                    name: name.clone(),
                    added_position: position,
                    keys: public_keys.iter().map(|k| keys::fingerprint(k)).collect(),
                })
                .map_err(s)?;
        }
        Event::OperatorKeyAdded { operator_id, public_key } => {
            let mut op = state
                .operator(operator_id)
                .map_err(s)?
                .ok_or_else(|| bad(format!("no operator {operator_id}")))?;
            put_operator_key(state, operator_id, public_key, position).map_err(s)?;
            op.keys.push(keys::fingerprint(public_key));
            state.put_operator(&op).map_err(s)?;
        }
        Event::OperatorKeyRevoked { key_id, .. } => {
            let mut signer = state
                .signer(key_id)
                .map_err(s)?
                .ok_or_else(|| bad("revokes an unknown operator key".into()))?;
            signer.revoked_position = Some(position);
            state.put_signer(&signer).map_err(s)?;
        }
        Event::KeyRegistered(r) => {
            if state.key(&r.fingerprint).map_err(s)?.is_some() {
                return Err(bad(format!("key {} is registered twice", r.fingerprint)));
            }
            state.put_key(KeyRecord::new(r.clone(), at)).map_err(s)?;
            for e in &r.evse_ids {
                state
                    .add_to_index(IdentifierKind::Evse, e.as_str(), &r.fingerprint, position)
                    .map_err(s)?;
            }
            if let Some(m) = &r.meter_serial {
                state
                    .add_to_index(IdentifierKind::MeterSerial, m, &r.fingerprint, position)
                    .map_err(s)?;
            }
            if let Some(g) = &r.gateway_serial {
                state
                    .add_to_index(IdentifierKind::GatewaySerial, g, &r.fingerprint, position)
                    .map_err(s)?;
            }
            state.set_pending(&r.fingerprint, Some(position)).map_err(s)?;
        }
        other => {
            let fp = other.fingerprint().expect("every other event is about a key");
            let mut record = Arc::unwrap_or_clone(
                state
                    .key(fp)
                    .map_err(s)?
                    .ok_or_else(|| bad(format!("event about unregistered key {fp}")))?,
            );
            let change = match other {
                Event::KeyConfirmed { published_in_tree_size, .. } => {
                    state.set_pending(fp, None).map_err(s)?;
                    KeyChange::Confirmed { published_in_tree_size: *published_in_tree_size }
                }
                Event::KeyRejected { reason, .. } => {
                    state.set_pending(fp, None).map_err(s)?;
                    KeyChange::Rejected { reason: reason.clone() }
                }
                Event::KeyEnded { effective_at, reason, comment, successor, .. } => {
                    state.set_pending(fp, None).map_err(s)?;
                    KeyChange::Ended {
                        effective_at: *effective_at,
                        reason: *reason,
                        comment: comment.clone(),
                        successor: successor.clone(),
                    }
                }
                Event::KeyRelocated { effective_at, evse_ids, .. } => {
                    for e in evse_ids {
                        state
                            .add_to_index(IdentifierKind::Evse, e.as_str(), fp, position)
                            .map_err(s)?;
                    }
                    KeyChange::Relocated { effective_at: *effective_at, evse_ids: evse_ids.clone() }
                }
                Event::KeyReleased { to_operator_id, .. } => {
                    KeyChange::Released { to_operator_id: to_operator_id.clone() }
                }
                Event::KeyTakenOver { effective_at, operator_id, evse_ids, forced, .. } => {
                    for e in evse_ids {
                        state
                            .add_to_index(IdentifierKind::Evse, e.as_str(), fp, position)
                            .map_err(s)?;
                    }
                    KeyChange::TakenOver {
                        effective_at: *effective_at,
                        operator_id: operator_id.clone(),
                        evse_ids: evse_ids.clone(),
                        forced: *forced,
                    }
                }
                _ => unreachable!("handled above"),
            };
            record.history.push(KeyEvent { at, change });
            state.put_key(record).map_err(s)?;
        }
    }
    Ok(())
}

fn put_operator_key<S: StateMut>(
    state: &mut S,
    operator: &OperatorId,
    der: &[u8],
    position: u64,
) -> Result<(), S::Error> {
    state.put_signer(&SignerRecord {
        key_id: keys::fingerprint(der),
        public_key: der.to_vec(),
        role: Role::Operator(operator.clone()),
        label: String::new(),
        added_position: position,
        revoked_position: None,
    })
}

/// The projections in memory: for tests, for offline verification, for the server's full
/// rebuild, and as the reference the persistent projection must equal. Hash maps where only
/// lookups matter: a full audit replays millions of entries through these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryState {
    /// Key records by fingerprint.
    pub keys: HashMap<String, KeyRecord>,
    /// Index entries: (kind, value) → fingerprint → position added.
    pub index: HashMap<(IdentifierKind, String), BTreeMap<String, u64>>,
    /// Operators.
    pub operators: BTreeMap<OperatorId, OperatorRecord>,
    /// Signers.
    pub signers: BTreeMap<[u8; 32], SignerRecord>,
    /// Active admins, in the order added; `None` until an admin event set them (the store
    /// then has no admins record either).
    pub admins: Option<Vec<[u8; 32]>>,
    /// Latest position per identifier.
    pub latest: HashMap<Identifier, u64>,
    /// Keys awaiting confirmation.
    pub pending: BTreeMap<String, u64>,
}

impl State for MemoryState {
    type Error = std::convert::Infallible;
    fn key(&self, fingerprint: &str) -> Result<Option<Arc<KeyRecord>>, Self::Error> {
        Ok(self.keys.get(fingerprint).cloned().map(Arc::new))
    }
    fn indexed(&self, kind: IdentifierKind, value: &str) -> Result<IndexGroup, Self::Error> {
        Ok(self.index.get(&(kind, value.to_string())).map_or_else(
            || Arc::new([]) as IndexGroup,
            |m| m.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        ))
    }
    fn operator(&self, id: &OperatorId) -> Result<Option<OperatorRecord>, Self::Error> {
        Ok(self.operators.get(id).cloned())
    }
    fn signer(&self, key_id: &[u8; 32]) -> Result<Option<SignerRecord>, Self::Error> {
        Ok(self.signers.get(key_id).cloned())
    }
    fn admins(&self) -> Result<Vec<[u8; 32]>, Self::Error> {
        Ok(self.admins.clone().unwrap_or_default())
    }
    fn latest(&self, id: &Identifier) -> Result<Option<u64>, Self::Error> {
        Ok(self.latest.get(id).copied())
    }
}

impl StateMut for MemoryState {
    fn put_key(&mut self, record: KeyRecord) -> Result<(), Self::Error> {
        self.keys.insert(record.fingerprint().to_string(), record);
        Ok(())
    }
    fn add_to_index(
        &mut self,
        kind: IdentifierKind,
        value: &str,
        fingerprint: &str,
        position: u64,
    ) -> Result<(), Self::Error> {
        self.index
            .entry((kind, value.to_string()))
            .or_default()
            .entry(fingerprint.to_string())
            .or_insert(position);
        Ok(())
    }
    fn put_operator(&mut self, record: &OperatorRecord) -> Result<(), Self::Error> {
        self.operators.insert(record.operator_id.clone(), record.clone());
        Ok(())
    }
    fn put_signer(&mut self, record: &SignerRecord) -> Result<(), Self::Error> {
        self.signers.insert(record.key_id, record.clone());
        Ok(())
    }
    fn set_admins(&mut self, admins: &[[u8; 32]]) -> Result<(), Self::Error> {
        self.admins = Some(admins.to_vec());
        Ok(())
    }
    fn set_latest(&mut self, id: &Identifier, position: u64) -> Result<(), Self::Error> {
        self.latest.insert(id.clone(), position);
        Ok(())
    }
    fn set_pending(
        &mut self,
        fingerprint: &str,
        registration: Option<u64>,
    ) -> Result<(), Self::Error> {
        match registration {
            Some(p) => self.pending.insert(fingerprint.to_string(), p),
            None => self.pending.remove(fingerprint),
        };
        Ok(())
    }
}

impl Binding {
    /// The protobuf form.
    pub fn to_pb(&self) -> crate::pb::Binding {
        self.clone().into_pb()
    }

    /// The protobuf form, moving the identifiers instead of copying them (answers are built by
    /// the million in batch lookups).
    pub fn into_pb(self) -> crate::pb::Binding {
        crate::pb::Binding {
            operator_id: self.operator_id.into_string(),
            evse_ids: self.evse_ids.into_iter().map(EvseId::into_string).collect(),
            from: Some(time::to_timestamp(&self.from)),
            until: self.until.as_ref().map(time::to_timestamp),
        }
    }
}

impl KeyState {
    /// The protobuf state and, for a deactivated key, its end reason.
    pub fn to_pb(self) -> (crate::pb::KeyState, Option<EndReason>) {
        use crate::pb::KeyState as P;
        match self {
            KeyState::Pending => (P::Pending, None),
            KeyState::Active => (P::Active, None),
            KeyState::Deactivated(r) => (P::Deactivated, Some(r)),
            KeyState::Rejected => (P::Rejected, None),
        }
    }
}

impl KeyAsOf<'_> {
    /// The protobuf key record, as known at this size.
    pub fn to_pb(&self) -> crate::pb::KeyRecord {
        let reg = self.registration();
        let (state, reason) = self.state().to_pb();
        let bindings = self.bindings();
        crate::pb::KeyRecord {
            fingerprint: reg.fingerprint.clone(),
            curve: reg.curve.to_pb() as i32,
            public_key: reg.public_key.clone(),
            submitted_public_key: reg.submitted_public_key.clone(),
            state: state as i32,
            end_reason: reason.map_or(0, |r| r.to_pb() as i32),
            ended_at: self.end().map(|(t, _, _)| time::to_timestamp(&t)),
            operator_id: bindings.last().map(|b| b.operator_id.to_string()).unwrap_or_default(),
            bindings: bindings.iter().map(Binding::to_pb).collect(),
            meter_serial: reg.meter_serial.clone().unwrap_or_default(),
            gateway_serial: reg.gateway_serial.clone().unwrap_or_default(),
            manufacturer: reg.manufacturer.clone(),
            model: reg.model.clone(),
            predecessor: reg.predecessor.clone().unwrap_or_default(),
            successor: self.successor().unwrap_or_default().to_string(),
            released_to: self.released_to().map(|o| o.to_string()).unwrap_or_default(),
            positions: self.positions(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter_key::Curve;

    fn confirm_action(fingerprint: &str, registration: u64) -> RegistryAction {
        RegistryAction::AutoConfirm { fingerprint: fingerprint.into(), registration }
    }

    /// A state holding one pending key, registered at `position`.
    fn pending_key(fingerprint: &str, position: u64) -> MemoryState {
        let registration = Registration {
            fingerprint: fingerprint.into(),
            curve: Curve::Secp256r1,
            public_key: vec![1, 2, 3],
            submitted_public_key: "010203".into(),
            operator_id: OperatorId::parse("DE*ABC").expect("an operator ID"),
            evse_ids: vec![EvseId::parse("DE*ABC*E1").expect("an EVSE ID")],
            meter_serial: None,
            gateway_serial: None,
            manufacturer: "M".into(),
            model: "X".into(),
            effective_at: chrono::DateTime::UNIX_EPOCH,
            predecessor: None,
            sample_signed_meter_value: None,
        };
        let at = Stamp { position, recorded_at: chrono::DateTime::UNIX_EPOCH };
        let mut state = MemoryState::default();
        state.keys.insert(fingerprint.into(), KeyRecord::new(registration, at));
        state
    }

    #[test]
    fn confirmation_ids_are_ordered_by_registration_and_reserved() {
        let fp = "ab".repeat(32);
        let ids: Vec<uuid::Uuid> =
            [1, 2, 1_000, 1 << 40].iter().map(|p| confirm_action(&fp, *p).request_id().0).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        for id in &ids {
            assert!(is_reserved_request_id(id), "{id}");
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        }
        // Different keys confirmed for the same position still get different IDs.
        assert_ne!(ids[0], confirm_action(&"cd".repeat(32), 1).request_id().0);
        // The variant is part of the shape: the same bits with another variant are not reserved.
        let other_variant = uuid::Uuid::from_u128(ids[0].as_u128() ^ (0b11 << 62));
        assert!(!is_reserved_request_id(&other_variant));
        // Neither the command IDs clients make nor the bootstrap's are reserved.
        assert!(!is_reserved_request_id(&uuid::Uuid::now_v7()));
        let bootstrap = RegistryAction::Bootstrap { admins: vec![] }.request_id().0;
        assert!(!is_reserved_request_id(&bootstrap));
    }

    #[test]
    fn a_confirmation_keeps_its_digest_and_accepts_the_id_of_older_logs() {
        let fp = "ab".repeat(32);
        let action = confirm_action(&fp, 9);
        let (id, digest) = action.request_id();
        assert_eq!(digest, confirm_action(&fp, 10).request_id().1, "the digest names the key only");
        let legacy = action.legacy_request_id().expect("confirmations had v5 IDs");
        assert_eq!(legacy.get_version_num(), 5);
        assert!(action.has_request_id(&id) && action.has_request_id(&legacy));
        assert!(!action.has_request_id(&confirm_action(&fp, 10).request_id().0));
        assert!(!action.has_request_id(&uuid::Uuid::now_v7()));
        assert_eq!(RegistryAction::Bootstrap { admins: vec![] }.legacy_request_id(), None);
    }

    #[test]
    fn a_confirmation_must_name_the_registration_it_confirms() {
        let fp = "ab".repeat(32);
        let state = pending_key(&fp, 4);
        let ctx = DecideContext {
            now: chrono::DateTime::UNIX_EPOCH,
            published_size: 10,
            policy: Policy::default(),
        };
        let right = decide(&Proposal::Registry(confirm_action(&fp, 4)), &ctx, &state);
        assert!(
            matches!(right.as_deref(), Ok([Event::KeyConfirmed { registration_position: 4, .. }])),
            "{right:?}"
        );
        let wrong = decide(&Proposal::Registry(confirm_action(&fp, 3)), &ctx, &state);
        let Err(DecideError::Rejected(r)) = wrong else { panic!("{wrong:?}") };
        assert_eq!(r.field.as_deref(), Some("registration"));
    }
}
