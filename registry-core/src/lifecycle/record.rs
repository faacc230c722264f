//! What the projections know about a meter key and the parties that act on it: the key record
//! with its history, the bindings (which operator's EVSE IDs a key served, and when), and the
//! records of operators and command-signing keys. A record keeps every event in log order, so the
//! key as known at any log size is a prefix of its history.

use serde::{Deserialize, Serialize};

use crate::event::{EndReason, Registration};
use crate::ids::{EvseId, OperatorId};
use crate::time::Time;

/// Where and when an event was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Log position.
    pub position: u64,
    /// Recorded time.
    pub recorded_at: Time,
}

/// A change to a key after (and including) its registration.
///
/// Nearly every key's history is a registration and a confirmation, held in memory for every
/// key: the rarer changes keep their details behind a pointer, so an event takes 48 bytes
/// instead of about 100. (Boxing changes nothing in the records' encoding.)
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
        /// Why (behind one pointer, so that an event takes 16 bytes, not 24, in every record).
        reason: Box<String>,
    },
    /// Ended.
    Ended(Box<Ending>),
    /// Moved to other EVSE IDs.
    Relocated(Box<Relocation>),
    /// Released to another operator.
    Released {
        /// Who may take it over.
        to_operator_id: OperatorId,
    },
    /// Moved to another operator.
    TakenOver(Box<Takeover>),
}

/// How a key ended ([`KeyChange::Ended`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ending {
    /// When.
    pub effective_at: Time,
    /// Why.
    pub reason: EndReason,
    /// For people.
    pub comment: String,
    /// Successor key.
    pub successor: Option<String>,
}

/// Where a key moved ([`KeyChange::Relocated`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relocation {
    /// When.
    pub effective_at: Time,
    /// New EVSE IDs.
    pub evse_ids: Vec<EvseId>,
}

/// Who took a key over ([`KeyChange::TakenOver`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Takeover {
    /// When.
    pub effective_at: Time,
    /// New operator.
    pub operator_id: OperatorId,
    /// New EVSE IDs.
    pub evse_ids: Vec<EvseId>,
    /// Forced by an administrator.
    pub forced: bool,
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
    pub history: Box<[KeyEvent]>,
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

/// A [`Binding`] borrowed from the key record it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingRef<'a> {
    /// Start, inclusive.
    pub from: Time,
    /// End, exclusive; `None` while it lasts.
    pub until: Option<Time>,
    /// The operator.
    pub operator_id: &'a OperatorId,
    /// The EVSE IDs.
    pub evse_ids: &'a [EvseId],
    /// Entry that started it.
    pub from_position: u64,
    /// Entry that ended it.
    pub until_position: Option<u64>,
    /// Why it ended: a key end reason, or `Relocated` / `TakenOver`.
    pub ended_by: Option<EndReason>,
}

impl BindingRef<'_> {
    /// Whether `t` lies in the interval.
    pub fn contains(&self, t: Time) -> bool {
        self.from <= t && self.until.is_none_or(|u| t < u)
    }

    /// The binding, copied out of the record.
    pub fn to_binding(&self) -> Binding {
        Binding {
            from: self.from,
            until: self.until,
            operator_id: *self.operator_id,
            evse_ids: self.evse_ids.to_vec(),
            from_position: self.from_position,
            until_position: self.until_position,
            ended_by: self.ended_by,
        }
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
    /// A new record from a registration event, without its proof-of-possession sample: it
    /// was checked when the key was registered, no answer shows it, and at up to 16 KiB it
    /// would be most of what a key costs in memory. The log entry keeps it.
    pub fn new(registration: Registration, at: Stamp) -> Self {
        let registration = Registration { sample_signed_meter_value: None, ..registration };
        Self { registration, history: Box::new([KeyEvent { at, change: KeyChange::Registered }]) }
    }

    /// The record with one more event. Its history is allocated at its exact length: records
    /// live as long as the registry and are only ever one event longer, so the spare room a
    /// growing `Vec` keeps would be memory held for nothing in every record.
    pub fn with_event(&self, event: KeyEvent) -> Self {
        let mut history = Vec::with_capacity(self.history.len() + 1);
        history.extend_from_slice(&self.history);
        history.push(event);
        Self { registration: self.registration.clone(), history: history.into() }
    }

    /// The record with its manufacturer and model swapped for the process-wide shared copies
    /// ([`crate::pool`]): for records kept as long as the server runs.
    pub fn pooled(mut self) -> Self {
        let reg = &mut self.registration;
        reg.manufacturer = crate::pool::shared(&reg.manufacturer);
        reg.model = crate::pool::shared(&reg.model);
        self
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

impl<'a> KeyAsOf<'a> {
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
            KeyChange::Ended(end) => Some((end.effective_at, end.reason, &e.at)),
            _ => None,
        })
    }

    /// The successor key, if ended by replacement or rotation.
    pub fn successor(&self) -> Option<&str> {
        self.events.iter().find_map(|e| match &e.change {
            KeyChange::Ended(end) => end.successor.as_deref(),
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
        self.binding_refs().iter().map(BindingRef::to_binding).collect()
    }

    /// Every binding interval, oldest first, borrowed from the record: a lookup that picks
    /// one binding out of them copies only that one (copying every binding's EVSE IDs was a
    /// tenth of a batch lookup's time).
    pub fn binding_refs(&self) -> Vec<BindingRef<'a>> {
        let (reg, events): (&'a Registration, &'a [KeyEvent]) =
            (&self.record.registration, self.events);
        let mut out = vec![BindingRef {
            from: reg.effective_at,
            until: None,
            operator_id: &reg.operator_id,
            evse_ids: &reg.evse_ids,
            from_position: self.record.registered_at(),
            until_position: None,
            ended_by: None,
        }];
        for e in &events[1..] {
            let (effective_at, next, why) = match &e.change {
                KeyChange::Relocated(moved) => {
                    let op = out.last().map_or(&reg.operator_id, |b| b.operator_id);
                    (moved.effective_at, Some((op, &moved.evse_ids[..])), EndReason::Relocated)
                }
                KeyChange::TakenOver(t) => {
                    (t.effective_at, Some((&t.operator_id, &t.evse_ids[..])), EndReason::TakenOver)
                }
                KeyChange::Ended(end) => (end.effective_at, None, end.reason),
                _ => continue,
            };
            if let Some(last) = out.last_mut().filter(|b| b.until.is_none()) {
                last.until = Some(effective_at);
                last.until_position = Some(e.at.position);
                last.ended_by = Some(why);
            }
            if let Some((operator_id, evse_ids)) = next {
                out.push(BindingRef {
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
        self.binding_refs().last().expect("a registered key has a binding").to_binding()
    }

    /// The latest effective time of any event: later events may not go before it.
    pub fn last_effective_at(&self) -> Time {
        self.events
            .iter()
            .filter_map(|e| match &e.change {
                KeyChange::Ended(end) => Some(end.effective_at),
                KeyChange::Relocated(moved) => Some(moved.effective_at),
                KeyChange::TakenOver(t) => Some(t.effective_at),
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

impl KeyState {
    /// Why a deactivated key ended; `None` in any other state.
    pub fn end_reason(self) -> Option<EndReason> {
        match self {
            KeyState::Deactivated(r) => Some(r),
            _ => None,
        }
    }
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

#[cfg(test)]
mod size_tests {
    use super::*;

    /// What the key cache holds per key is mostly these; a field added here is paid a million
    /// times over.
    #[test]
    fn an_event_stays_small() {
        assert!(std::mem::size_of::<KeyEvent>() <= 40, "{}", std::mem::size_of::<KeyEvent>());
        assert!(std::mem::size_of::<KeyChange>() <= 16, "{}", std::mem::size_of::<KeyChange>());
    }

    /// With its `Arc` counts, a record fits the allocator's 224-byte size class (it was a
    /// 320-byte block while its strings were `String`s and its lists `Vec`s).
    #[test]
    fn a_record_stays_small() {
        let size = std::mem::size_of::<KeyRecord>();
        assert!(size + 16 <= 224, "{size}");
    }
}
