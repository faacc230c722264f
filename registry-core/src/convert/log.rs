//! The log's messages: identifiers, back-links, events and the signed command envelope.

use crate::command::{MAX_COMMAND_BYTES, MAX_REGISTRY_CHARS, SignedCommand};
use crate::error::FieldError;
use crate::event::{
    EndReason, Event, Identifier, IdentifierKind, Link, Registration, SubmittedKey,
    parse_fingerprint,
};
use crate::ids::{EvseId, OperatorId};
use crate::meter_key::{Curve, MeterKey};
use crate::pb;
use crate::time::{self, Time};

/// Parses and normalises an identifier from the API.
impl TryFrom<&pb::Identifier> for Identifier {
    type Error = FieldError;
    fn try_from(p: &pb::Identifier) -> Result<Self, FieldError> {
        let kind = IdentifierKind::try_from(p.kind)
            .ok()
            .ok_or_else(|| FieldError::new("identifier.kind", "must be set"))?;
        let value = match kind {
            IdentifierKind::Key => parse_fingerprint(&p.value).ok_or_else(|| {
                FieldError::new("identifier.value", "must be a 64-digit hex fingerprint")
            })?,
            IdentifierKind::Evse => EvseId::parse(&p.value)
                .map_err(|e| FieldError::new("identifier.value", e.0))?
                .as_str()
                .to_string(),
            IdentifierKind::Operator => OperatorId::parse(&p.value)
                .map_err(|e| FieldError::new("identifier.value", e.0))?
                .as_str()
                .to_string(),
            IdentifierKind::MeterSerial | IdentifierKind::GatewaySerial => {
                crate::ids::serial(&p.value)
                    .map_err(|e| FieldError::new("identifier.value", e.0))?
            }
        };
        Ok(Self { kind, value })
    }
}

impl From<&Identifier> for pb::Identifier {
    fn from(i: &Identifier) -> Self {
        pb::Identifier { kind: pb::IdentifierKind::from(i.kind) as i32, value: i.value.clone() }
    }
}

fn req_time(t: &Option<registry_proto::Timestamp>, field: &str) -> Result<Time, FieldError> {
    let ts = t.as_ref().ok_or_else(|| FieldError::new(field, "must be set"))?;
    time::from_timestamp(ts).map_err(|e| FieldError::new(field, e.to_string()))
}

fn fingerprint(s: &str, field: &str) -> Result<String, FieldError> {
    parse_fingerprint(s).ok_or_else(|| FieldError::new(field, "must be a 64-digit hex fingerprint"))
}

fn key_id(b: &[u8], field: &str) -> Result<[u8; 32], FieldError> {
    b.try_into().map_err(|_| FieldError::new(field, "must be a 32-byte fingerprint"))
}

fn operator(s: &str, field: &str) -> Result<OperatorId, FieldError> {
    OperatorId::parse(s).map_err(|e| FieldError::new(field, e.0))
}

fn evses(v: &[String], field: &str) -> Result<Vec<EvseId>, FieldError> {
    v.iter().map(|s| EvseId::parse(s).map_err(|e| FieldError::new(field, e.0))).collect()
}

fn command_key(der: &[u8], field: &str) -> Result<Vec<u8>, FieldError> {
    crate::keys::p256_from_spki_der(der).map_err(|e| FieldError::new(field, e.to_string()))?;
    Ok(der.to_vec())
}

fn opt<T: for<'a> From<&'a str>>(s: &str) -> Option<T> {
    (!s.is_empty()).then(|| s.into())
}

/// Decodes and validates a stored event.
impl TryFrom<&pb::Event> for Event {
    type Error = FieldError;
    fn try_from(e: &pb::Event) -> Result<Self, FieldError> {
        use pb::event::Kind;
        let kind = e.kind.as_ref().ok_or_else(|| FieldError::new("event", "has no kind"))?;
        Ok(match kind {
            Kind::AdminKeyAdded(k) => Event::AdminKeyAdded {
                public_key: command_key(&k.public_key, "admin_key_added.public_key")?,
                label: k.label.clone(),
            },
            Kind::AdminKeyRevoked(k) => {
                Event::AdminKeyRevoked { key_id: key_id(&k.key_id, "admin_key_revoked.key_id")? }
            }
            Kind::OperatorAdded(o) => Event::OperatorAdded {
                operator_id: operator(&o.operator_id, "operator_added.operator_id")?,
                name: o.name.clone(),
                public_keys: o
                    .public_keys
                    .iter()
                    .map(|k| command_key(k, "operator_added.public_keys"))
                    .collect::<Result<_, _>>()?,
            },
            Kind::OperatorKeyAdded(o) => Event::OperatorKeyAdded {
                operator_id: operator(&o.operator_id, "operator_key_added.operator_id")?,
                public_key: command_key(&o.public_key, "operator_key_added.public_key")?,
            },
            Kind::OperatorKeyRevoked(o) => Event::OperatorKeyRevoked {
                operator_id: operator(&o.operator_id, "operator_key_revoked.operator_id")?,
                key_id: key_id(&o.key_id, "operator_key_revoked.key_id")?,
            },
            Kind::KeyRegistered(r) => {
                let key = MeterKey::from_spki_der(&r.public_key)
                    .map_err(|e| FieldError::new("key_registered.public_key", e.to_string()))?;
                let fp = fingerprint(&r.fingerprint, "key_registered.fingerprint")?;
                if fp != key.fingerprint {
                    return Err(FieldError::new(
                        "key_registered.fingerprint",
                        "is not the SHA-256 of the public key",
                    ));
                }
                let curve = Curve::try_from(r.curve)
                    .ok()
                    .ok_or_else(|| FieldError::new("key_registered.curve", "must be set"))?;
                if curve != key.curve {
                    return Err(FieldError::new("key_registered.curve", "does not match the key"));
                }
                Event::KeyRegistered(Registration {
                    fingerprint: fp.into(),
                    curve,
                    submitted_public_key: SubmittedKey::new(&r.submitted_public_key, &key.spki_der),
                    public_key: key.spki_der.into(),
                    operator_id: operator(&r.operator_id, "key_registered.operator_id")?,
                    evse_ids: evses(&r.evse_ids, "key_registered.evse_ids")?.into(),
                    meter_serial: opt(&r.meter_serial),
                    gateway_serial: opt(&r.gateway_serial),
                    manufacturer: r.manufacturer.as_str().into(),
                    model: r.model.as_str().into(),
                    effective_at: req_time(&r.effective_at, "key_registered.effective_at")?,
                    predecessor: match r.predecessor.as_str() {
                        "" => None,
                        p => Some(fingerprint(p, "key_registered.predecessor")?.into()),
                    },
                    sample_signed_meter_value: opt(&r.sample_signed_meter_value),
                })
            }
            Kind::KeyConfirmed(c) => Event::KeyConfirmed {
                fingerprint: fingerprint(&c.fingerprint, "key_confirmed.fingerprint")?,
                registration_position: c.registration_position,
                published_in_tree_size: c.published_in_tree_size,
            },
            Kind::KeyRejected(r) => Event::KeyRejected {
                fingerprint: fingerprint(&r.fingerprint, "key_rejected.fingerprint")?,
                reason: r.reason.clone(),
            },
            Kind::KeyEnded(k) => Event::KeyEnded {
                fingerprint: fingerprint(&k.fingerprint, "key_ended.fingerprint")?,
                effective_at: req_time(&k.effective_at, "key_ended.effective_at")?,
                reason: EndReason::try_from(k.reason)
                    .ok()
                    .filter(|r| !matches!(r, EndReason::Relocated | EndReason::TakenOver))
                    .ok_or_else(|| {
                        FieldError::new("key_ended.reason", "must be a key end reason")
                    })?,
                comment: k.comment.clone(),
                successor: match k.successor.as_str() {
                    "" => None,
                    s => Some(fingerprint(s, "key_ended.successor")?),
                },
            },
            Kind::KeyRelocated(k) => Event::KeyRelocated {
                fingerprint: fingerprint(&k.fingerprint, "key_relocated.fingerprint")?,
                effective_at: req_time(&k.effective_at, "key_relocated.effective_at")?,
                evse_ids: evses(&k.evse_ids, "key_relocated.evse_ids")?,
            },
            Kind::KeyReleased(k) => Event::KeyReleased {
                fingerprint: fingerprint(&k.fingerprint, "key_released.fingerprint")?,
                to_operator_id: operator(&k.to_operator_id, "key_released.to_operator_id")?,
            },
            Kind::KeyTakenOver(k) => Event::KeyTakenOver {
                fingerprint: fingerprint(&k.fingerprint, "key_taken_over.fingerprint")?,
                effective_at: req_time(&k.effective_at, "key_taken_over.effective_at")?,
                operator_id: operator(&k.operator_id, "key_taken_over.operator_id")?,
                evse_ids: evses(&k.evse_ids, "key_taken_over.evse_ids")?,
                forced: k.forced,
            },
        })
    }
}

impl From<&Event> for pb::Event {
    fn from(event: &Event) -> Self {
        use pb::event::Kind;
        let ts = |t: &Time| Some(time::to_timestamp(t));
        let strs = |v: &[EvseId]| v.iter().map(|e| e.as_str().to_string()).collect();
        let kind = match event {
            Event::AdminKeyAdded { public_key, label } => Kind::AdminKeyAdded(pb::AdminKeyAdded {
                public_key: public_key.clone(),
                label: label.clone(),
            }),
            Event::AdminKeyRevoked { key_id } => {
                Kind::AdminKeyRevoked(pb::AdminKeyRevoked { key_id: key_id.to_vec() })
            }
            Event::OperatorAdded { operator_id, name, public_keys } => {
                Kind::OperatorAdded(pb::OperatorAdded {
                    operator_id: operator_id.to_string(),
                    name: name.clone(),
                    public_keys: public_keys.clone(),
                })
            }
            Event::OperatorKeyAdded { operator_id, public_key } => {
                Kind::OperatorKeyAdded(pb::OperatorKeyAdded {
                    operator_id: operator_id.to_string(),
                    public_key: public_key.clone(),
                })
            }
            Event::OperatorKeyRevoked { operator_id, key_id } => {
                Kind::OperatorKeyRevoked(pb::OperatorKeyRevoked {
                    operator_id: operator_id.to_string(),
                    key_id: key_id.to_vec(),
                })
            }
            Event::KeyRegistered(r) => Kind::KeyRegistered(pb::KeyRegistered {
                fingerprint: r.fingerprint.to_string(),
                curve: pb::Curve::from(r.curve) as i32,
                public_key: r.public_key.to_vec(),
                submitted_public_key: r.submitted_public_key.text(&r.public_key).into_owned(),
                operator_id: r.operator_id.to_string(),
                evse_ids: strs(&r.evse_ids),
                meter_serial: r.meter_serial.as_deref().unwrap_or_default().to_string(),
                gateway_serial: r.gateway_serial.as_deref().unwrap_or_default().to_string(),
                manufacturer: r.manufacturer.to_string(),
                model: r.model.to_string(),
                effective_at: ts(&r.effective_at),
                predecessor: r.predecessor.as_deref().unwrap_or_default().to_string(),
                sample_signed_meter_value: r
                    .sample_signed_meter_value
                    .as_deref()
                    .unwrap_or_default()
                    .to_string(),
            }),
            Event::KeyConfirmed { fingerprint, registration_position, published_in_tree_size } => {
                Kind::KeyConfirmed(pb::KeyConfirmed {
                    fingerprint: fingerprint.clone(),
                    registration_position: *registration_position,
                    published_in_tree_size: *published_in_tree_size,
                })
            }
            Event::KeyRejected { fingerprint, reason } => Kind::KeyRejected(pb::KeyRejected {
                fingerprint: fingerprint.clone(),
                reason: reason.clone(),
            }),
            Event::KeyEnded { fingerprint, effective_at, reason, comment, successor } => {
                Kind::KeyEnded(pb::KeyEnded {
                    fingerprint: fingerprint.clone(),
                    effective_at: ts(effective_at),
                    reason: pb::EndReason::from(*reason) as i32,
                    comment: comment.clone(),
                    successor: successor.clone().unwrap_or_default(),
                })
            }
            Event::KeyRelocated { fingerprint, effective_at, evse_ids } => {
                Kind::KeyRelocated(pb::KeyRelocated {
                    fingerprint: fingerprint.clone(),
                    effective_at: ts(effective_at),
                    evse_ids: strs(evse_ids),
                })
            }
            Event::KeyReleased { fingerprint, to_operator_id } => {
                Kind::KeyReleased(pb::KeyReleased {
                    fingerprint: fingerprint.clone(),
                    to_operator_id: to_operator_id.to_string(),
                })
            }
            Event::KeyTakenOver { fingerprint, effective_at, operator_id, evse_ids, forced } => {
                Kind::KeyTakenOver(pb::KeyTakenOver {
                    fingerprint: fingerprint.clone(),
                    effective_at: ts(effective_at),
                    operator_id: operator_id.to_string(),
                    evse_ids: strs(evse_ids),
                    forced: *forced,
                })
            }
        };
        pb::Event { kind: Some(kind) }
    }
}

impl From<&Link> for pb::IdentifierLink {
    fn from(l: &Link) -> Self {
        pb::IdentifierLink {
            identifier: Some(pb::Identifier::from(&l.identifier)),
            previous_position_plus_one: l.previous.map_or(0, |p| p + 1),
        }
    }
}

/// Decodes a stored back-link.
impl TryFrom<&pb::IdentifierLink> for Link {
    type Error = FieldError;
    fn try_from(l: &pb::IdentifierLink) -> Result<Self, FieldError> {
        let identifier = Identifier::try_from(
            l.identifier
                .as_ref()
                .ok_or_else(|| FieldError::new("links.identifier", "must be set"))?,
        )?;
        Ok(Self { identifier, previous: l.previous_position_plus_one.checked_sub(1) })
    }
}

impl From<&SignedCommand> for pb::SignedCommand {
    fn from(c: &SignedCommand) -> Self {
        pb::SignedCommand {
            command: c.command.clone(),
            signer_key_id: c.signer_key_id.to_vec(),
            signature: c.signature.clone(),
            registry: c.registry.clone().unwrap_or_default(),
        }
    }
}

/// From the wire, checking only the envelope's shape.
impl TryFrom<&pb::SignedCommand> for SignedCommand {
    type Error = FieldError;
    fn try_from(p: &pb::SignedCommand) -> Result<Self, FieldError> {
        if p.command.is_empty() {
            return Err(FieldError::new("command.command", "must not be empty"));
        }
        if p.command.len() > MAX_COMMAND_BYTES {
            return Err(FieldError::new(
                "command.command",
                format!("must be at most {MAX_COMMAND_BYTES} bytes"),
            ));
        }
        let signer_key_id = p.signer_key_id.as_slice().try_into().map_err(|_| {
            FieldError::new(
                "command.signer_key_id",
                "must be the 32-byte fingerprint of the signing key",
            )
        })?;
        if p.signature.is_empty() {
            return Err(FieldError::new("command.signature", "must not be empty"));
        }
        if p.registry.chars().count() > MAX_REGISTRY_CHARS || p.registry.contains('\n') {
            return Err(FieldError::new(
                "command.registry",
                format!(
                    "must be a registry origin: one line of at most {MAX_REGISTRY_CHARS} characters"
                ),
            ));
        }
        let registry = Some(p.registry.clone()).filter(|r| !r.is_empty());
        Ok(SignedCommand {
            command: p.command.clone(),
            signer_key_id,
            signature: p.signature.clone(),
            registry,
        })
    }
}
