//! The registry's events as typed values, and their log encoding.
//!
//! Events are what entries record: facts, already checked. Decoding an event from the log
//! validates it (well-formed IDs, keys that parse, times in range), so code that works with
//! [`Event`] never meets a malformed one; [`Event::to_pb`] is the only way back to protobuf.

use serde::{Deserialize, Serialize};

use crate::error::FieldError;
use crate::ids::{EvseId, OperatorId};
use crate::meter_key::{Curve, MeterKey};
use crate::pb;
use crate::time::{self, Time};

/// Why a key's validity ended. The last two appear only in answers about an EVSE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EndReason {
    /// Taken out of service.
    Decommissioned,
    /// The private key is, or may be, known to others.
    Compromised,
    /// The meter or signing module was replaced.
    Replaced,
    /// The key pair was regenerated.
    Rotated,
    /// Another reason (see the comment).
    Other,
    /// Answers only: the binding moved to other EVSE IDs.
    Relocated,
    /// Answers only: the binding moved to another operator.
    TakenOver,
}

impl EndReason {
    /// The reason in words, for messages.
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Decommissioned => "decommissioned",
            EndReason::Compromised => "compromised",
            EndReason::Replaced => "replaced",
            EndReason::Rotated => "rotated",
            EndReason::Other => "other",
            EndReason::Relocated => "relocated",
            EndReason::TakenOver => "taken over",
        }
    }

    /// The protobuf value.
    pub fn to_pb(self) -> pb::EndReason {
        match self {
            EndReason::Decommissioned => pb::EndReason::Decommissioned,
            EndReason::Compromised => pb::EndReason::Compromised,
            EndReason::Replaced => pb::EndReason::Replaced,
            EndReason::Rotated => pb::EndReason::Rotated,
            EndReason::Other => pb::EndReason::Other,
            EndReason::Relocated => pb::EndReason::Relocated,
            EndReason::TakenOver => pb::EndReason::TakenOver,
        }
    }

    /// From the protobuf value (`None` for unspecified or unknown values).
    pub fn from_pb(value: i32) -> Option<Self> {
        Some(match pb::EndReason::try_from(value).ok()? {
            pb::EndReason::Unspecified => return None,
            pb::EndReason::Decommissioned => EndReason::Decommissioned,
            pb::EndReason::Compromised => EndReason::Compromised,
            pb::EndReason::Replaced => EndReason::Replaced,
            pb::EndReason::Rotated => EndReason::Rotated,
            pb::EndReason::Other => EndReason::Other,
            pb::EndReason::Relocated => EndReason::Relocated,
            pb::EndReason::TakenOver => EndReason::TakenOver,
        })
    }
}

impl Curve {
    /// The protobuf value.
    pub fn to_pb(self) -> pb::Curve {
        match self {
            Curve::Secp256r1 => pb::Curve::Secp256r1,
            Curve::Secp384r1 => pb::Curve::Secp384r1,
            Curve::Secp256k1 => pb::Curve::Secp256k1,
            Curve::BrainpoolP256r1 => pb::Curve::Brainpoolp256r1,
            Curve::BrainpoolP384r1 => pb::Curve::Brainpoolp384r1,
            Curve::Secp192r1 => pb::Curve::Secp192r1,
        }
    }

    /// From the protobuf value (`None` for unspecified or unknown values).
    pub fn from_pb(value: i32) -> Option<Self> {
        Some(match pb::Curve::try_from(value).ok()? {
            pb::Curve::Unspecified => return None,
            pb::Curve::Secp256r1 => Curve::Secp256r1,
            pb::Curve::Secp384r1 => Curve::Secp384r1,
            pb::Curve::Secp256k1 => Curve::Secp256k1,
            pb::Curve::Brainpoolp256r1 => Curve::BrainpoolP256r1,
            pb::Curve::Brainpoolp384r1 => Curve::BrainpoolP384r1,
            pb::Curve::Secp192r1 => Curve::Secp192r1,
        })
    }
}

/// The kinds of identifier that are indexed and back-linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IdentifierKind {
    /// A key fingerprint.
    Key,
    /// An EVSE ID.
    Evse,
    /// A meter serial.
    MeterSerial,
    /// A gateway serial.
    GatewaySerial,
    /// An operator ID.
    Operator,
}

impl IdentifierKind {
    /// A stable one-byte tag, for storage keys.
    pub fn tag(self) -> u8 {
        match self {
            IdentifierKind::Key => b'k',
            IdentifierKind::Evse => b'e',
            IdentifierKind::MeterSerial => b'm',
            IdentifierKind::GatewaySerial => b'g',
            IdentifierKind::Operator => b'o',
        }
    }

    /// The kind for a tag from [`IdentifierKind::tag`].
    pub fn from_tag(tag: u8) -> Option<Self> {
        Some(match tag {
            b'k' => IdentifierKind::Key,
            b'e' => IdentifierKind::Evse,
            b'm' => IdentifierKind::MeterSerial,
            b'g' => IdentifierKind::GatewaySerial,
            b'o' => IdentifierKind::Operator,
            _ => return None,
        })
    }

    fn to_pb(self) -> pb::IdentifierKind {
        match self {
            IdentifierKind::Key => pb::IdentifierKind::Key,
            IdentifierKind::Evse => pb::IdentifierKind::Evse,
            IdentifierKind::MeterSerial => pb::IdentifierKind::MeterSerial,
            IdentifierKind::GatewaySerial => pb::IdentifierKind::GatewaySerial,
            IdentifierKind::Operator => pb::IdentifierKind::Operator,
        }
    }

    fn from_pb(value: i32) -> Option<Self> {
        Some(match pb::IdentifierKind::try_from(value).ok()? {
            pb::IdentifierKind::Unspecified => return None,
            pb::IdentifierKind::Key => IdentifierKind::Key,
            pb::IdentifierKind::Evse => IdentifierKind::Evse,
            pb::IdentifierKind::MeterSerial => IdentifierKind::MeterSerial,
            pb::IdentifierKind::GatewaySerial => IdentifierKind::GatewaySerial,
            pb::IdentifierKind::Operator => IdentifierKind::Operator,
        })
    }
}

/// A typed identifier in normalised form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identifier {
    /// What it identifies.
    pub kind: IdentifierKind,
    /// The normalised value.
    pub value: String,
}

impl Identifier {
    /// A key fingerprint.
    pub fn key(fingerprint: &str) -> Self {
        Self { kind: IdentifierKind::Key, value: fingerprint.to_string() }
    }

    /// An EVSE.
    pub fn evse(id: &EvseId) -> Self {
        Self { kind: IdentifierKind::Evse, value: id.as_str().to_string() }
    }

    /// An operator.
    pub fn operator(id: &OperatorId) -> Self {
        Self { kind: IdentifierKind::Operator, value: id.as_str().to_string() }
    }

    /// Parses and normalises an identifier from the API.
    pub fn from_pb(p: &pb::Identifier) -> Result<Self, FieldError> {
        let kind = IdentifierKind::from_pb(p.kind)
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

    /// The protobuf form.
    pub fn to_pb(&self) -> pb::Identifier {
        pb::Identifier { kind: self.kind.to_pb() as i32, value: self.value.clone() }
    }
}

/// A normalised fingerprint: 64 lowercase hex digits.
pub fn parse_fingerprint(s: &str) -> Option<String> {
    let s = s.trim();
    (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

/// An entry's back-link for one identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The identifier.
    pub identifier: Identifier,
    /// The previous entry that touched it, if any.
    pub previous: Option<u64>,
}

/// A meter key registration as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Fingerprint (hex).
    pub fingerprint: String,
    /// Curve.
    pub curve: Curve,
    /// DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    /// As submitted.
    pub submitted_public_key: String,
    /// The operator it is bound to.
    pub operator_id: OperatorId,
    /// The EVSE IDs it is bound to.
    pub evse_ids: Vec<EvseId>,
    /// Meter serial.
    pub meter_serial: Option<String>,
    /// Gateway serial.
    pub gateway_serial: Option<String>,
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// When it started to serve.
    pub effective_at: Time,
    /// The key it succeeds.
    pub predecessor: Option<String>,
    /// Proof-of-possession sample, if given.
    pub sample_signed_meter_value: Option<String>,
}

/// One fact in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// An administrator key was added.
    AdminKeyAdded {
        /// DER SubjectPublicKeyInfo (P-256).
        public_key: Vec<u8>,
        /// For people.
        label: String,
    },
    /// An administrator key was revoked.
    AdminKeyRevoked {
        /// Fingerprint of the key.
        key_id: [u8; 32],
    },
    /// An operator was added.
    OperatorAdded {
        /// Its ID.
        operator_id: OperatorId,
        /// Its name.
        name: String,
        /// Its command-signing keys (DER SubjectPublicKeyInfo, P-256).
        public_keys: Vec<Vec<u8>>,
    },
    /// An operator gained a command-signing key.
    OperatorKeyAdded {
        /// The operator.
        operator_id: OperatorId,
        /// DER SubjectPublicKeyInfo (P-256).
        public_key: Vec<u8>,
    },
    /// An operator's command-signing key was revoked.
    OperatorKeyRevoked {
        /// The operator.
        operator_id: OperatorId,
        /// Fingerprint of the key.
        key_id: [u8; 32],
    },
    /// A meter key was registered.
    KeyRegistered(Registration),
    /// A registration was confirmed.
    KeyConfirmed {
        /// The key.
        fingerprint: String,
        /// Its registration entry.
        registration_position: u64,
        /// The size of the signed checkpoint that covered the registration.
        published_in_tree_size: u64,
    },
    /// A registration was rejected.
    KeyRejected {
        /// The key.
        fingerprint: String,
        /// Why.
        reason: String,
    },
    /// A key's validity ended.
    KeyEnded {
        /// The key.
        fingerprint: String,
        /// When.
        effective_at: Time,
        /// Why.
        reason: EndReason,
        /// For people.
        comment: String,
        /// The successor for REPLACED and ROTATED.
        successor: Option<String>,
    },
    /// A key's binding moved to other EVSE IDs.
    KeyRelocated {
        /// The key.
        fingerprint: String,
        /// When.
        effective_at: Time,
        /// The new EVSE IDs.
        evse_ids: Vec<EvseId>,
    },
    /// A key was released to another operator.
    KeyReleased {
        /// The key.
        fingerprint: String,
        /// Who may take it over.
        to_operator_id: OperatorId,
    },
    /// A key's binding moved to another operator.
    KeyTakenOver {
        /// The key.
        fingerprint: String,
        /// When.
        effective_at: Time,
        /// The new operator.
        operator_id: OperatorId,
        /// The new EVSE IDs.
        evse_ids: Vec<EvseId>,
        /// By an administrator, without release.
        forced: bool,
    },
}

fn req_time(t: &Option<prost_types::Timestamp>, field: &str) -> Result<Time, FieldError> {
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

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl Event {
    /// Decodes and validates a stored event.
    pub fn from_pb(e: &pb::Event) -> Result<Self, FieldError> {
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
                let curve = Curve::from_pb(r.curve)
                    .ok_or_else(|| FieldError::new("key_registered.curve", "must be set"))?;
                if curve != key.curve {
                    return Err(FieldError::new("key_registered.curve", "does not match the key"));
                }
                Event::KeyRegistered(Registration {
                    fingerprint: fp,
                    curve,
                    public_key: key.spki_der,
                    submitted_public_key: r.submitted_public_key.clone(),
                    operator_id: operator(&r.operator_id, "key_registered.operator_id")?,
                    evse_ids: evses(&r.evse_ids, "key_registered.evse_ids")?,
                    meter_serial: opt(&r.meter_serial),
                    gateway_serial: opt(&r.gateway_serial),
                    manufacturer: r.manufacturer.clone(),
                    model: r.model.clone(),
                    effective_at: req_time(&r.effective_at, "key_registered.effective_at")?,
                    predecessor: match r.predecessor.as_str() {
                        "" => None,
                        p => Some(fingerprint(p, "key_registered.predecessor")?),
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
                reason: EndReason::from_pb(k.reason)
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

    /// The log form.
    pub fn to_pb(&self) -> pb::Event {
        use pb::event::Kind;
        let ts = |t: &Time| Some(time::to_timestamp(t));
        let strs = |v: &[EvseId]| v.iter().map(|e| e.as_str().to_string()).collect();
        let kind = match self {
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
                fingerprint: r.fingerprint.clone(),
                curve: r.curve.to_pb() as i32,
                public_key: r.public_key.clone(),
                submitted_public_key: r.submitted_public_key.clone(),
                operator_id: r.operator_id.to_string(),
                evse_ids: strs(&r.evse_ids),
                meter_serial: r.meter_serial.clone().unwrap_or_default(),
                gateway_serial: r.gateway_serial.clone().unwrap_or_default(),
                manufacturer: r.manufacturer.clone(),
                model: r.model.clone(),
                effective_at: ts(&r.effective_at),
                predecessor: r.predecessor.clone().unwrap_or_default(),
                sample_signed_meter_value: r.sample_signed_meter_value.clone().unwrap_or_default(),
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
                    reason: reason.to_pb() as i32,
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

    /// The meter key this event is about, if any.
    pub fn fingerprint(&self) -> Option<&str> {
        match self {
            Event::KeyRegistered(r) => Some(&r.fingerprint),
            Event::KeyConfirmed { fingerprint, .. }
            | Event::KeyRejected { fingerprint, .. }
            | Event::KeyEnded { fingerprint, .. }
            | Event::KeyRelocated { fingerprint, .. }
            | Event::KeyReleased { fingerprint, .. }
            | Event::KeyTakenOver { fingerprint, .. } => Some(fingerprint),
            _ => None,
        }
    }
}

impl Link {
    /// The log form.
    pub fn to_pb(&self) -> pb::IdentifierLink {
        pb::IdentifierLink {
            identifier: Some(self.identifier.to_pb()),
            previous_position_plus_one: self.previous.map_or(0, |p| p + 1),
        }
    }

    /// Decodes a stored back-link.
    pub fn from_pb(l: &pb::IdentifierLink) -> Result<Self, FieldError> {
        let identifier = Identifier::from_pb(
            l.identifier
                .as_ref()
                .ok_or_else(|| FieldError::new("links.identifier", "must be set"))?,
        )?;
        Ok(Self { identifier, previous: l.previous_position_plus_one.checked_sub(1) })
    }
}
