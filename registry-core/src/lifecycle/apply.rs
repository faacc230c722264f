//! Folding appended entries into the projections: [`apply`] records an entry's events (key
//! records, indexes, operators, signers, the latest entry per identifier), and [`links`] computes
//! the back-links a new entry carries. Both trust the log: a rule is checked once, by `decide`.

use std::collections::{BTreeSet, HashMap};

use crate::entry::{EntryBody, EntryHeader};
use crate::event::{Event, Identifier, IdentifierKind, Link, Registration};
use crate::ids::OperatorId;
use crate::keys;

use super::record::{
    Ending, KeyChange, KeyEvent, KeyRecord, OperatorRecord, Relocation, Role, SignerRecord, Stamp,
    Takeover,
};
use super::state::{State, StateMut};

/// The identifiers an entry's events touch, judged by the state before the entry.
pub fn touched<S: State>(events: &[Event], state: &S) -> Result<BTreeSet<Identifier>, S::Error> {
    let mut out = BTreeSet::new();
    let mut new_keys: HashMap<&str, &Registration> = HashMap::new();
    let serials = |out: &mut BTreeSet<Identifier>, r: &Registration| {
        if let Some(s) = &r.meter_serial {
            out.insert(Identifier { kind: IdentifierKind::MeterSerial, value: s.to_string() });
        }
        if let Some(s) = &r.gateway_serial {
            out.insert(Identifier { kind: IdentifierKind::GatewaySerial, value: s.to_string() });
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
                    (Some(b), _) => (Some(b.operator_id), b.evse_ids.clone()),
                    (None, Some(r)) => (Some(r.operator_id), r.evse_ids.to_vec()),
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
                .map_err(ApplyError::State)?;
            let mut admins = state.admins().map_err(ApplyError::State)?;
            admins.push(key_id);
            state.set_admins(&admins).map_err(ApplyError::State)?;
        }
        Event::AdminKeyRevoked { key_id } => {
            let mut signer = state
                .signer(key_id)
                .map_err(ApplyError::State)?
                .ok_or_else(|| bad("revokes an unknown admin key".into()))?;
            signer.revoked_position = Some(position);
            state.put_signer(&signer).map_err(ApplyError::State)?;
            let admins: Vec<_> = state
                .admins()
                .map_err(ApplyError::State)?
                .into_iter()
                .filter(|k| k != key_id)
                .collect();
            state.set_admins(&admins).map_err(ApplyError::State)?;
        }
        Event::OperatorAdded { operator_id, name, public_keys } => {
            for k in public_keys {
                put_operator_key(state, operator_id, k, position).map_err(ApplyError::State)?;
            }
            state
                .put_operator(&OperatorRecord {
                    operator_id: *operator_id,
                    name: name.clone(),
                    added_position: position,
                    keys: public_keys.iter().map(|k| keys::fingerprint(k)).collect(),
                })
                .map_err(ApplyError::State)?;
        }
        Event::OperatorKeyAdded { operator_id, public_key } => {
            let mut op = state
                .operator(operator_id)
                .map_err(ApplyError::State)?
                .ok_or_else(|| bad(format!("no operator {operator_id}")))?;
            put_operator_key(state, operator_id, public_key, position)
                .map_err(ApplyError::State)?;
            op.keys.push(keys::fingerprint(public_key));
            state.put_operator(&op).map_err(ApplyError::State)?;
        }
        Event::OperatorKeyRevoked { key_id, .. } => {
            let mut signer = state
                .signer(key_id)
                .map_err(ApplyError::State)?
                .ok_or_else(|| bad("revokes an unknown operator key".into()))?;
            signer.revoked_position = Some(position);
            state.put_signer(&signer).map_err(ApplyError::State)?;
        }
        Event::KeyRegistered(r) => {
            if state.key(&r.fingerprint).map_err(ApplyError::State)?.is_some() {
                return Err(bad(format!("key {} is registered twice", r.fingerprint)));
            }
            state.put_key(KeyRecord::new(r.clone(), at)).map_err(ApplyError::State)?;
            for e in &r.evse_ids {
                state
                    .add_to_index(IdentifierKind::Evse, e.as_str(), &r.fingerprint, position)
                    .map_err(ApplyError::State)?;
            }
            if let Some(m) = &r.meter_serial {
                state
                    .add_to_index(IdentifierKind::MeterSerial, m, &r.fingerprint, position)
                    .map_err(ApplyError::State)?;
            }
            if let Some(g) = &r.gateway_serial {
                state
                    .add_to_index(IdentifierKind::GatewaySerial, g, &r.fingerprint, position)
                    .map_err(ApplyError::State)?;
            }
            state.set_pending(&r.fingerprint, Some(position)).map_err(ApplyError::State)?;
        }
        other => {
            let fp = other.fingerprint().expect("every other event is about a key");
            let record = state
                .key(fp)
                .map_err(ApplyError::State)?
                .ok_or_else(|| bad(format!("event about unregistered key {fp}")))?;
            let change = match other {
                Event::KeyConfirmed { published_in_tree_size, .. } => {
                    state.set_pending(fp, None).map_err(ApplyError::State)?;
                    KeyChange::Confirmed { published_in_tree_size: *published_in_tree_size }
                }
                Event::KeyRejected { reason, .. } => {
                    state.set_pending(fp, None).map_err(ApplyError::State)?;
                    KeyChange::Rejected { reason: Box::new(reason.clone()) }
                }
                Event::KeyEnded { effective_at, reason, comment, successor, .. } => {
                    state.set_pending(fp, None).map_err(ApplyError::State)?;
                    KeyChange::Ended(Box::new(Ending {
                        effective_at: *effective_at,
                        reason: *reason,
                        comment: comment.clone(),
                        successor: successor.clone(),
                    }))
                }
                Event::KeyRelocated { effective_at, evse_ids, .. } => {
                    for e in evse_ids {
                        state
                            .add_to_index(IdentifierKind::Evse, e.as_str(), fp, position)
                            .map_err(ApplyError::State)?;
                    }
                    KeyChange::Relocated(Box::new(Relocation {
                        effective_at: *effective_at,
                        evse_ids: evse_ids.clone(),
                    }))
                }
                Event::KeyReleased { to_operator_id, .. } => {
                    KeyChange::Released { to_operator_id: *to_operator_id }
                }
                Event::KeyTakenOver { effective_at, operator_id, evse_ids, forced, .. } => {
                    for e in evse_ids {
                        state
                            .add_to_index(IdentifierKind::Evse, e.as_str(), fp, position)
                            .map_err(ApplyError::State)?;
                    }
                    KeyChange::TakenOver(Box::new(Takeover {
                        effective_at: *effective_at,
                        operator_id: *operator_id,
                        evse_ids: evse_ids.clone(),
                        forced: *forced,
                    }))
                }
                _ => unreachable!("handled above"),
            };
            state.put_key(record.with_event(KeyEvent { at, change })).map_err(ApplyError::State)?;
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
        role: Role::Operator(*operator),
        label: String::new(),
        added_position: position,
        revoked_position: None,
    })
}
