//! What an operator may do with its own keys: register, deactivate, relocate, replace, rotate,
//! release to another operator, and take over a key released to it. The signing unit's identity
//! (manufacturer and serials) and the EVSE IDs may each hold one key at a time.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::command::{Action, Command, NewKey};
use crate::event::{EndReason, Event, IdentifierKind, Registration, SubmittedKey};
use crate::ids::{EvseId, OperatorId};
use crate::time::Time;

use super::decide::{
    DecideContext, Decision, effective, evses_free, not_before, open_key, own_evses,
};
use super::record::{KeyRecord, KeyState, state_name};
use super::state::{DecideError, RejectCode, Rejection, State};

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
            if ignore.iter().any(|i| super::fingerprint_bytes(i).as_ref() == Some(fp)) {
                continue;
            }
            let Some(other) = state.key_by_id(fp).map_err(DecideError::State)? else { continue };
            if *other.registration.manufacturer != *key.manufacturer {
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
                        "signing unit {} {serial} already has key {} at an overlapping time; a new key for the same unit goes through rotate_key or replace_key",
                        if key.manufacturer.is_empty() { "(no manufacturer)" } else { &key.manufacturer },
                        hex::encode(fp)
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
    if let Some(existing) = state.key(&key.key.fingerprint).map_err(DecideError::State)? {
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
        fingerprint: key.key.fingerprint.as_str().into(),
        curve: key.key.curve,
        public_key: key.key.spki_der.as_slice().into(),
        submitted_public_key: SubmittedKey::new(&key.submitted, &key.key.spki_der),
        operator_id: *operator_id,
        evse_ids: evse_ids.into(),
        meter_serial: key.meter_serial.as_deref().map(Into::into),
        gateway_serial: key.gateway_serial.as_deref().map(Into::into),
        manufacturer: key.manufacturer.as_str().into(),
        model: key.model.as_str().into(),
        effective_at,
        predecessor: predecessor.map(Into::into),
        sample_signed_meter_value: key.sample_signed_meter_value.as_deref().map(Into::into),
    }
}

/// Loads a key the signing operator may act on: registered, open, bound to that operator.
fn owned_key<S: State>(
    state: &S,
    operator: &OperatorId,
    fingerprint: &str,
    field: &str,
) -> Result<Arc<KeyRecord>, DecideError<S::Error>> {
    let record = state.key(fingerprint).map_err(DecideError::State)?.ok_or_else(|| {
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

pub(super) fn decide_operator<S: State>(
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
                to_operator_id: *to_operator_id,
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
                operator_id: *operator,
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
                Some(&*reg.manufacturer),
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
        new_key.meter_serial = reg.meter_serial.as_deref().map(String::from);
        new_key.gateway_serial = reg.gateway_serial.as_deref().map(String::from);
        new_key.manufacturer = reg.manufacturer.to_string();
        if new_key.model.is_empty() {
            new_key.model = reg.model.to_string();
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
