//! What a registry administrator may do: manage administrator and operator signing keys, confirm
//! or reject pending registrations, and force a key over to another operator.

use std::collections::BTreeSet;

use crate::command::{Action, Command};
use crate::event::Event;
use crate::keys;

use super::decide::{
    DecideContext, Decision, confirm, effective, evses_free, not_before, open_key, own_evses,
};
use super::record::{KeyState, Role, state_name};
use super::state::{DecideError, RejectCode, Rejection, State};

pub(super) fn no_signer<S: State>(
    state: &S,
    der: &[u8],
    field: &str,
) -> Result<(), DecideError<S::Error>> {
    if let Some(existing) = state.signer(&keys::fingerprint(der)).map_err(DecideError::State)? {
        let whose = match existing.role {
            Role::Admin => "an administrator".to_string(),
            Role::Operator(op) => format!("operator {op}"),
        };
        return Err(Rejection::exists(field, format!("this key already signs for {whose}")).into());
    }
    Ok(())
}

pub(super) fn decide_admin<S: State>(
    command: &Command,
    ctx: &DecideContext,
    state: &S,
) -> Decision<S::Error> {
    match &command.action {
        Action::AddAdminKey { public_key, label } => {
            no_signer(state, public_key, "add_admin_key.public_key")?;
            Ok(vec![Event::AdminKeyAdded { public_key: public_key.clone(), label: label.clone() }])
        }
        Action::RevokeAdminKey { key_id } => {
            let admins = state.admins().map_err(DecideError::State)?;
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
            if state.operator(operator_id).map_err(DecideError::State)?.is_some() {
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
                operator_id: *operator_id,
                name: name.clone(),
                public_keys: public_keys.clone(),
            }])
        }
        Action::AddOperatorKey { operator_id, public_key } => {
            if state.operator(operator_id).map_err(DecideError::State)?.is_none() {
                return Err(Rejection::precondition(
                    "add_operator_key.operator_id",
                    format!("no operator {operator_id}"),
                )
                .into());
            }
            no_signer(state, public_key, "add_operator_key.public_key")?;
            Ok(vec![Event::OperatorKeyAdded {
                operator_id: *operator_id,
                public_key: public_key.clone(),
            }])
        }
        Action::RevokeOperatorKey { operator_id, key_id } => {
            let signer = state.signer(key_id).map_err(DecideError::State)?;
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
            Ok(vec![Event::OperatorKeyRevoked { operator_id: *operator_id, key_id: *key_id }])
        }
        Action::ConfirmKey { fingerprint } => {
            confirm(fingerprint, "confirm_key.fingerprint", ctx, state)
        }
        Action::RejectKey { fingerprint, reason } => {
            let record = state.key(fingerprint).map_err(DecideError::State)?.ok_or_else(|| {
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
            if state.operator(operator_id).map_err(DecideError::State)?.is_none() {
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
                operator_id: *operator_id,
                evse_ids: evse_ids.clone(),
                forced: true,
            }])
        }
        _ => unreachable!("operator commands are routed to decide_operator"),
    }
}
