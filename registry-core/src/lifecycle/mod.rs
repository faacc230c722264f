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
//!
//! One concern a file: [`state`](State) traits and refusals; the key [`record`](KeyRecord) and
//! its bindings; [`decide`] with the checks both roles share; the administrators' and the
//! operators' decisions; [`apply`]; the in-memory state; the registry's own request IDs.

mod admin;
mod apply;
mod decide;
mod memory;
mod operator;
mod record;
mod request_id;
mod state;
#[cfg(test)]
mod tests;

pub use apply::{ApplyError, apply, apply_key_events, links, touched};
pub use decide::{DecideContext, Policy, Proposal, decide};
pub use memory::{Members, MemoryState};
pub use record::{
    Binding, BindingRef, Ending, KeyAsOf, KeyChange, KeyEvent, KeyRecord, KeyState, OperatorRecord,
    Relocation, Role, SignerRecord, Stamp, Takeover, state_name,
};
pub use request_id::{RegistryAction, is_reserved_request_id};
pub use state::{
    DecideError, IndexGroup, RejectCode, Rejection, State, StateMut, fingerprint_bytes, records_of,
};
