//! Commands from the wire: every field checked, and the one that is wrong named with its
//! protobuf path. The rules of shape live here (lengths, encodings, one EVSE ID named once, the
//! proof-of-possession sample); the rules of state live in [`crate::lifecycle`].

use crate::command::{Action, Command, NewKey};
use crate::error::FieldError;
use crate::event::{EndReason, parse_fingerprint};
use crate::ids::{self, EvseId, OperatorId};
use crate::meter_key::{Curve, MeterKey};
use crate::pb;
use crate::time::{self, Time};

fn opt_time(
    t: &Option<registry_proto::Timestamp>,
    field: &str,
) -> Result<Option<Time>, FieldError> {
    t.as_ref()
        .map(|ts| time::from_timestamp(ts).map_err(|e| FieldError::new(field, e.to_string())))
        .transpose()
}

fn fingerprint(s: &str, field: &str) -> Result<String, FieldError> {
    parse_fingerprint(s)
        .ok_or_else(|| FieldError::new(field, "must be a key fingerprint (64 hex digits)"))
}

fn key_id(s: &str, field: &str) -> Result<[u8; 32], FieldError> {
    let fp = fingerprint(s, field)?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(fp, &mut out).map_err(|e| FieldError::new(field, e.to_string()))?;
    Ok(out)
}

fn operator(s: &str, field: &str) -> Result<OperatorId, FieldError> {
    OperatorId::parse(s).map_err(|e| FieldError::new(field, e.0))
}

fn evses(v: &[String], field: &str) -> Result<Vec<EvseId>, FieldError> {
    if v.is_empty() {
        return Err(FieldError::new(field, "must name at least one EVSE ID"));
    }
    let mut out: Vec<EvseId> = Vec::with_capacity(v.len());
    for (i, s) in v.iter().enumerate() {
        let id = EvseId::parse(s).map_err(|e| FieldError::new(format!("{field}[{i}]"), e.0))?;
        if out.contains(&id) {
            return Err(FieldError::new(format!("{field}[{i}]"), format!("{id} is named twice")));
        }
        out.push(id);
    }
    Ok(out)
}

/// A P-256 command-signing key in any accepted encoding, as DER SubjectPublicKeyInfo.
fn command_key(s: &str, field: &str) -> Result<Vec<u8>, FieldError> {
    let key = MeterKey::parse(s, None).map_err(|e| FieldError::new(field, e.to_string()))?;
    if key.curve != Curve::Secp256r1 {
        return Err(FieldError::new(field, "command-signing keys must be P-256"));
    }
    Ok(key.spki_der)
}

fn text(s: &str, field: &str, max: usize) -> Result<String, FieldError> {
    if s.len() > max {
        return Err(FieldError::new(field, format!("must be at most {max} bytes")));
    }
    if s.chars().any(|c| c.is_control() && c != '\n') {
        return Err(FieldError::new(field, "must not contain control characters"));
    }
    Ok(s.trim().to_string())
}

fn opt_serial(s: &str, field: &str) -> Result<Option<String>, FieldError> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    ids::serial(s).map(Some).map_err(|e| FieldError::new(field, e.0))
}

fn new_key(k: &Option<pb::NewKey>, field: &str) -> Result<NewKey, FieldError> {
    let k = k.as_ref().ok_or_else(|| FieldError::new(field, "must be set"))?;
    let named = match k.curve {
        0 => None,
        c => Some(Curve::try_from(c).ok().ok_or_else(|| {
            FieldError::new(format!("{field}.curve"), format!("unknown curve value {c}"))
        })?),
    };
    let key = MeterKey::parse(&k.public_key, named)
        .map_err(|e| FieldError::new(format!("{field}.public_key"), e.to_string()))?;
    Ok(NewKey {
        key,
        submitted: text(&k.public_key, &format!("{field}.public_key"), 8192)?,
        meter_serial: opt_serial(&k.meter_serial, &format!("{field}.meter_serial"))?,
        gateway_serial: opt_serial(&k.gateway_serial, &format!("{field}.gateway_serial"))?,
        manufacturer: text(&k.manufacturer, &format!("{field}.manufacturer"), 128)?,
        model: text(&k.model, &format!("{field}.model"), 128)?,
        sample_signed_meter_value: match k.sample_signed_meter_value.trim() {
            "" => None,
            s => Some(text(s, &format!("{field}.sample_signed_meter_value"), 16 * 1024)?),
        },
    })
}

/// Checks a new key's proof-of-possession sample, if it has one (see
/// [`crate::possession::check_sample`]).
fn possession(key: &NewKey, evse_ids: &[EvseId], field: &str) -> Result<(), FieldError> {
    match &key.sample_signed_meter_value {
        None => Ok(()),
        Some(sample) => crate::possession::check_sample(
            sample,
            &key.key,
            key.meter_serial.as_deref(),
            key.gateway_serial.as_deref(),
            evse_ids,
        )
        .map_err(|rule| FieldError::new(format!("{field}.sample_signed_meter_value"), rule)),
    }
}

fn possessed(key: NewKey, field: &str) -> Result<NewKey, FieldError> {
    possession(&key, &[], field)?;
    Ok(key)
}

/// Validates a protobuf command.
impl TryFrom<&pb::Command> for Command {
    type Error = FieldError;
    fn try_from(c: &pb::Command) -> Result<Self, FieldError> {
        use pb::command::Action as A;
        let request_id = uuid::Uuid::parse_str(&c.request_id)
            .map_err(|_| FieldError::new("request_id", "must be a UUID"))?;
        if request_id.is_nil() {
            return Err(FieldError::new("request_id", "must not be the nil UUID"));
        }
        let issued_at = opt_time(&c.issued_at, "issued_at")?
            .ok_or_else(|| FieldError::new("issued_at", "must be set"))?;
        let action = c.action.as_ref().ok_or_else(|| FieldError::new("action", "must be set"))?;
        let action = match action {
            A::AddAdminKey(a) => Action::AddAdminKey {
                public_key: command_key(&a.public_key, "add_admin_key.public_key")?,
                label: text(&a.label, "add_admin_key.label", 256)?,
            },
            A::RevokeAdminKey(a) => {
                Action::RevokeAdminKey { key_id: key_id(&a.key_id, "revoke_admin_key.key_id")? }
            }
            A::AddOperator(a) => {
                if a.public_keys.is_empty() {
                    return Err(FieldError::new(
                        "add_operator.public_keys",
                        "must name at least one key",
                    ));
                }
                let name = text(&a.name, "add_operator.name", 256)?;
                if name.is_empty() {
                    return Err(FieldError::new("add_operator.name", "must not be empty"));
                }
                Action::AddOperator {
                    operator_id: operator(&a.operator_id, "add_operator.operator_id")?,
                    name,
                    public_keys: a
                        .public_keys
                        .iter()
                        .enumerate()
                        .map(|(i, k)| command_key(k, &format!("add_operator.public_keys[{i}]")))
                        .collect::<Result<_, _>>()?,
                }
            }
            A::AddOperatorKey(a) => Action::AddOperatorKey {
                operator_id: operator(&a.operator_id, "add_operator_key.operator_id")?,
                public_key: command_key(&a.public_key, "add_operator_key.public_key")?,
            },
            A::RevokeOperatorKey(a) => Action::RevokeOperatorKey {
                operator_id: operator(&a.operator_id, "revoke_operator_key.operator_id")?,
                key_id: key_id(&a.key_id, "revoke_operator_key.key_id")?,
            },
            A::ConfirmKey(a) => Action::ConfirmKey {
                fingerprint: fingerprint(&a.fingerprint, "confirm_key.fingerprint")?,
            },
            A::RejectKey(a) => Action::RejectKey {
                fingerprint: fingerprint(&a.fingerprint, "reject_key.fingerprint")?,
                reason: text(&a.reason, "reject_key.reason", 1024)?,
            },
            A::ForceTakeOver(a) => Action::ForceTakeOver {
                fingerprint: fingerprint(&a.fingerprint, "force_take_over.fingerprint")?,
                operator_id: operator(&a.operator_id, "force_take_over.operator_id")?,
                evse_ids: evses(&a.evse_ids, "force_take_over.evse_ids")?,
                effective_at: opt_time(&a.effective_at, "force_take_over.effective_at")?,
            },
            A::RegisterKey(a) => {
                let key = new_key(&a.key, "register_key.key")?;
                let evse_ids = evses(&a.evse_ids, "register_key.evse_ids")?;
                possession(&key, &evse_ids, "register_key.key")?;
                Action::RegisterKey {
                    key: Box::new(key),
                    evse_ids,
                    effective_at: opt_time(&a.effective_at, "register_key.effective_at")?,
                }
            }
            A::DeactivateKey(a) => Action::DeactivateKey {
                fingerprint: fingerprint(&a.fingerprint, "deactivate_key.fingerprint")?,
                reason: match EndReason::try_from(a.reason).ok() {
                    Some(
                        r @ (EndReason::Decommissioned | EndReason::Compromised | EndReason::Other),
                    ) => r,
                    _ => {
                        return Err(FieldError::new(
                            "deactivate_key.reason",
                            "must be DECOMMISSIONED, COMPROMISED or OTHER",
                        ));
                    }
                },
                comment: text(&a.comment, "deactivate_key.comment", 1024)?,
                effective_at: opt_time(&a.effective_at, "deactivate_key.effective_at")?,
            },
            A::RelocateKey(a) => Action::RelocateKey {
                fingerprint: fingerprint(&a.fingerprint, "relocate_key.fingerprint")?,
                evse_ids: evses(&a.evse_ids, "relocate_key.evse_ids")?,
                effective_at: opt_time(&a.effective_at, "relocate_key.effective_at")?,
            },
            A::ReplaceKey(a) => Action::ReplaceKey {
                fingerprint: fingerprint(&a.fingerprint, "replace_key.fingerprint")?,
                new_key: Box::new(possessed(
                    new_key(&a.new_key, "replace_key.new_key")?,
                    "replace_key.new_key",
                )?),
                effective_at: opt_time(&a.effective_at, "replace_key.effective_at")?,
                comment: text(&a.comment, "replace_key.comment", 1024)?,
            },
            A::RotateKey(a) => Action::RotateKey {
                fingerprint: fingerprint(&a.fingerprint, "rotate_key.fingerprint")?,
                new_key: Box::new(possessed(
                    new_key(&a.new_key, "rotate_key.new_key")?,
                    "rotate_key.new_key",
                )?),
                effective_at: opt_time(&a.effective_at, "rotate_key.effective_at")?,
            },
            A::ReleaseKey(a) => Action::ReleaseKey {
                fingerprint: fingerprint(&a.fingerprint, "release_key.fingerprint")?,
                to_operator_id: operator(&a.to_operator_id, "release_key.to_operator_id")?,
            },
            A::TakeOverKey(a) => Action::TakeOverKey {
                fingerprint: fingerprint(&a.fingerprint, "take_over_key.fingerprint")?,
                evse_ids: evses(&a.evse_ids, "take_over_key.evse_ids")?,
                effective_at: opt_time(&a.effective_at, "take_over_key.effective_at")?,
            },
        };
        Ok(Command { request_id, issued_at, action })
    }
}
