//! The projections as the rules see them ([`State`] to read, [`StateMut`] to write), and the
//! refusals a decision returns. A backend's own failure stays apart from a refusal: every read of
//! the state in a decision is spelled `.map_err(DecideError::State)?`.

use std::sync::Arc;

use crate::error::FieldError;
use crate::event::{Identifier, IdentifierKind};
use crate::ids::OperatorId;

use super::record::{KeyRecord, OperatorRecord, SignerRecord};

/// Read access to the projections.
pub trait State {
    /// The backend's error.
    type Error;
    /// A key record, shared: backends that keep records in memory hand them out without copying.
    fn key(&self, fingerprint: &str) -> Result<Option<Arc<KeyRecord>>, Self::Error>;
    /// A key record by its fingerprint's 32 bytes, as index groups name keys; backends that
    /// key their records by those bytes answer without writing the fingerprint out.
    fn key_by_id(&self, id: &[u8; 32]) -> Result<Option<Arc<KeyRecord>>, Self::Error> {
        self.key(&hex::encode(id))
    }
    /// Keys ever indexed under an EVSE ID or a serial, with the position that added each.
    /// (Nothing asks for an operator's keys this way, so operators are not indexed: an index
    /// entry per key would make every operator's group as large as its fleet.)
    fn indexed(&self, kind: IdentifierKind, value: &str) -> Result<IndexGroup, Self::Error>;
    /// The records of the keys indexed under an identifier, each with the position that
    /// indexed it, in fingerprint order; members without a record are left out. Backends that
    /// hold a group's members beside their records answer without looking each one up again
    /// (a batch lookup asks this once per question).
    fn indexed_keys(
        &self,
        kind: IdentifierKind,
        value: &str,
    ) -> Result<Vec<(u64, Arc<KeyRecord>)>, Self::Error> {
        records_of(self.indexed(kind, value)?.iter().copied(), |id| self.key_by_id(id))
    }
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
/// order; shared, so backends that keep groups in memory hand them out without copying. A key
/// is its fingerprint's 32 bytes, not its 64 hex digits on the heap: an index holds a member per
/// key and identifier, millions in all (it halved the indexes' memory).
pub type IndexGroup = Arc<[([u8; 32], u64)]>;

/// The records `key` finds for a group's members, each with the position that indexed it;
/// members without a record are left out. What [`State::indexed_keys`] does one member at a time.
pub fn records_of<E>(
    members: impl IntoIterator<Item = ([u8; 32], u64)>,
    mut key: impl FnMut(&[u8; 32]) -> Result<Option<Arc<KeyRecord>>, E>,
) -> Result<Vec<(u64, Arc<KeyRecord>)>, E> {
    let mut out = Vec::new();
    for (id, added) in members {
        if let Some(record) = key(&id)? {
            out.push((added, record));
        }
    }
    Ok(out)
}

/// The 32 bytes of a fingerprint written the one way the registry writes them (64 lowercase hex
/// digits); `None` for any other text.
pub fn fingerprint_bytes(fingerprint: &str) -> Option<[u8; 32]> {
    let lower_hex = |b: &u8| matches!(b, b'0'..=b'9' | b'a'..=b'f');
    if fingerprint.len() != 64 || !fingerprint.as_bytes().iter().all(lower_hex) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(fingerprint, &mut out).ok()?;
    Some(out)
}

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

/// Why a command was refused: the class, and the field (protobuf path) with the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct Rejection {
    /// The class.
    pub code: RejectCode,
    /// The field, when one is to blame, and the rule that was broken.
    pub error: FieldError,
}

impl Rejection {
    /// A refusal of class `code` for `field`.
    pub fn new(code: RejectCode, field: &str, rule: impl Into<String>) -> Self {
        Self { code, error: FieldError::new(field, rule) }
    }
    /// `INVALID_ARGUMENT` for a field.
    pub fn invalid(field: &str, rule: impl Into<String>) -> Self {
        Self::new(RejectCode::InvalidArgument, field, rule)
    }
    /// `FAILED_PRECONDITION` for a field.
    pub fn precondition(field: &str, rule: impl Into<String>) -> Self {
        Self::new(RejectCode::FailedPrecondition, field, rule)
    }
    /// `PERMISSION_DENIED`, naming the field that is out of the signer's reach (`None`: the
    /// signer's role may not issue the command at all).
    pub fn denied(field: Option<&str>, rule: impl Into<String>) -> Self {
        Self::new(RejectCode::PermissionDenied, field.unwrap_or_default(), rule)
    }
    /// `UNAUTHENTICATED`.
    pub fn unauthenticated(field: &str, rule: impl Into<String>) -> Self {
        Self::new(RejectCode::Unauthenticated, field, rule)
    }
    /// `ALREADY_EXISTS` for a field.
    pub fn exists(field: &str, rule: impl Into<String>) -> Self {
        Self::new(RejectCode::AlreadyExists, field, rule)
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
