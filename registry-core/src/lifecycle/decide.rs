//! The entry point of the rules for commands: [`decide`] checks a proposal against the state after
//! every earlier entry and returns the events to append, or a refusal naming the field and the
//! rule. It changes nothing. This file holds the dispatch by signer role, the registry's own
//! actions, and the checks both administrators' and operators' commands share.

use std::sync::Arc;

use chrono::TimeDelta;

use crate::command::{Command, SignedCommand};
use crate::event::{Event, IdentifierKind};
use crate::ids::{EvseId, OperatorId};
use crate::time::{self, Time};

use super::admin::decide_admin;
use super::operator::decide_operator;
use super::record::{KeyAsOf, KeyRecord, KeyState, Role, state_name};
use super::request_id::RegistryAction;
use super::state::{DecideError, RejectCode, Rejection, State};

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

pub(super) type Decision<E> = Result<Vec<Event>, DecideError<E>>;

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

pub(super) fn confirm<S: State>(
    fingerprint: &str,
    field: &str,
    ctx: &DecideContext,
    state: &S,
) -> Decision<S::Error> {
    let record = state.key(fingerprint).map_err(DecideError::State)?.ok_or_else(|| {
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

/// The effective time of a command: given, or its issue time; never too far in the future.
pub(super) fn effective(
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
pub(super) fn not_before(key: &KeyAsOf<'_>, at: Time, field: &str) -> Result<(), Rejection> {
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

pub(super) fn open_key<S: State>(
    state: &S,
    fingerprint: &str,
    field: &str,
) -> Result<Arc<KeyRecord>, DecideError<S::Error>> {
    let record = state.key(fingerprint).map_err(DecideError::State)?.ok_or_else(|| {
        Rejection::precondition(field, format!("no key {fingerprint} is registered"))
    })?;
    let s = record.now().state();
    if !record.now().is_open() {
        return Err(Rejection::precondition(field, format!("the key is {}", state_name(s))).into());
    }
    Ok(record)
}

/// Every EVSE ID must belong to `operator`.
pub(super) fn own_evses(
    operator: &OperatorId,
    evse_ids: &[EvseId],
    field: &str,
    code: RejectCode,
) -> Result<(), Rejection> {
    for (i, e) in evse_ids.iter().enumerate() {
        if e.operator() != *operator {
            return Err(Rejection::new(
                code,
                &format!("{field}[{i}]"),
                format!("{e} belongs to operator {}, not {operator}", e.operator()),
            ));
        }
    }
    Ok(())
}

/// No other key may be bound to any of `evse_ids` at any time from `from` on.
pub(super) fn evses_free<S: State>(
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
            if ignore.iter().any(|i| super::fingerprint_bytes(i).as_ref() == Some(fp)) {
                continue;
            }
            let Some(other) = state.key_by_id(fp).map_err(DecideError::State)? else { continue };
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
                        "{evse} is bound to key {} from {}{until}, overlapping {}",
                        hex::encode(fp),
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
