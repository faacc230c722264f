//! What a caller asks of the registry, before it is encoded: which key a lookup names, as known
//! when, and the orders a signer gives with the keys they carry.

use registry_core::time::{self, Time};
use registry_proto::pb::{self, EndReason, command, key_selector};

/// How a lookup names its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyTarget {
    /// By fingerprint.
    Fingerprint(String),
    /// By meter serial.
    MeterSerial(String),
    /// By gateway serial.
    GatewaySerial(String),
    /// By EVSE ID.
    Evse(String),
}

impl KeyTarget {
    /// The protobuf form, narrowed to a manufacturer if given.
    pub fn to_pb(&self, manufacturer: Option<&str>) -> pb::KeySelector {
        let selector = match self {
            KeyTarget::Fingerprint(f) => key_selector::Selector::Fingerprint(f.clone()),
            KeyTarget::MeterSerial(s) => key_selector::Selector::MeterSerial(s.clone()),
            KeyTarget::GatewaySerial(s) => key_selector::Selector::GatewaySerial(s.clone()),
            KeyTarget::Evse(e) => key_selector::Selector::EvseId(e.clone()),
        };
        pb::KeySelector {
            selector: Some(selector),
            manufacturer: manufacturer.unwrap_or_default().to_string(),
        }
    }

    /// The identifier for a history request.
    pub fn identifier(&self) -> pb::Identifier {
        let (kind, value) = match self {
            KeyTarget::Fingerprint(f) => (pb::IdentifierKind::Key, f),
            KeyTarget::MeterSerial(s) => (pb::IdentifierKind::MeterSerial, s),
            KeyTarget::GatewaySerial(s) => (pb::IdentifierKind::GatewaySerial, s),
            KeyTarget::Evse(e) => (pb::IdentifierKind::Evse, e),
        };
        pb::Identifier { kind: kind as i32, value: value.clone() }
    }
}

/// An answer "as known at" an earlier point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// The current durable log.
    Head,
    /// The first `n` entries.
    Size(u64),
    /// Entries recorded at or before a time.
    RecordedAt(Time),
}

impl AsOf {
    pub(crate) fn to_pb(self) -> Option<pb::AsOf> {
        let point = match self {
            AsOf::Head => return None,
            AsOf::Size(n) => pb::as_of::Point::LogSize(n),
            AsOf::RecordedAt(t) => pb::as_of::Point::RecordedAt(time::to_timestamp(&t)),
        };
        Some(pb::AsOf { point: Some(point) })
    }
}

/// The description of a new meter key and its signing unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySubmission {
    /// The key in any accepted encoding.
    pub public_key: String,
    /// Its curve, if the encoding does not say.
    pub curve: Option<registry_core::meter_key::Curve>,
    /// Meter serial.
    pub meter_serial: Option<String>,
    /// Gateway serial.
    pub gateway_serial: Option<String>,
    /// Manufacturer.
    pub manufacturer: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// A sample signed meter value from the unit (proof of possession).
    pub sample_signed_meter_value: Option<String>,
}

impl KeySubmission {
    /// A key with no further details.
    pub fn new(public_key: impl Into<String>) -> Self {
        Self { public_key: public_key.into(), ..Default::default() }
    }

    pub(crate) fn to_pb(&self) -> pb::NewKey {
        pb::NewKey {
            public_key: self.public_key.clone(),
            curve: self.curve.map_or(0, |c| pb::Curve::from(c) as i32),
            meter_serial: self.meter_serial.clone().unwrap_or_default(),
            gateway_serial: self.gateway_serial.clone().unwrap_or_default(),
            manufacturer: self.manufacturer.clone().unwrap_or_default(),
            model: self.model.clone().unwrap_or_default(),
            sample_signed_meter_value: self.sample_signed_meter_value.clone().unwrap_or_default(),
        }
    }
}

fn ts(t: Option<Time>) -> Option<registry_proto::Timestamp> {
    t.as_ref().map(time::to_timestamp)
}

/// What a signer orders the registry to do: a command to sign and submit, each variant mirroring
/// one `keyregistry.v1` command (the rules' own, decoded form is `registry_core::command::Action`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// Add an administrator key (PEM or hex DER).
    AddAdminKey { public_key: String, label: String },
    /// Revoke an administrator key by fingerprint.
    RevokeAdminKey { key_id: String },
    /// Add an operator with its command keys.
    AddOperator { operator_id: String, name: String, public_keys: Vec<String> },
    /// Add a command key to an operator.
    AddOperatorKey { operator_id: String, public_key: String },
    /// Revoke an operator's command key.
    RevokeOperatorKey { operator_id: String, key_id: String },
    /// Confirm a pending registration.
    Confirm { fingerprint: String },
    /// Reject a pending registration.
    Reject { fingerprint: String, reason: String },
    /// Move a key to another operator without a release.
    ForceTakeOver {
        fingerprint: String,
        operator_id: String,
        evse_ids: Vec<String>,
        effective_at: Option<Time>,
    },
    /// Register a key.
    Register { key: KeySubmission, evse_ids: Vec<String>, effective_at: Option<Time> },
    /// End a key's validity.
    Deactivate {
        fingerprint: String,
        reason: EndReason,
        comment: String,
        effective_at: Option<Time>,
    },
    /// Move a key to other EVSE IDs.
    Relocate { fingerprint: String, evse_ids: Vec<String>, effective_at: Option<Time> },
    /// Replace the meter or signing module.
    Replace {
        fingerprint: String,
        new_key: KeySubmission,
        effective_at: Option<Time>,
        comment: String,
    },
    /// Rotate the key of the same signing unit.
    Rotate { fingerprint: String, new_key: KeySubmission, effective_at: Option<Time> },
    /// Release a key to another operator.
    Release { fingerprint: String, to_operator_id: String },
    /// Take over a released key.
    TakeOver { fingerprint: String, evse_ids: Vec<String>, effective_at: Option<Time> },
}

impl Order {
    /// The protobuf action.
    pub fn to_pb(&self) -> command::Action {
        use command::Action as A;
        match self.clone() {
            Order::AddAdminKey { public_key, label } => {
                A::AddAdminKey(pb::AddAdminKey { public_key, label })
            }
            Order::RevokeAdminKey { key_id } => A::RevokeAdminKey(pb::RevokeAdminKey { key_id }),
            Order::AddOperator { operator_id, name, public_keys } => {
                A::AddOperator(pb::AddOperator { operator_id, name, public_keys })
            }
            Order::AddOperatorKey { operator_id, public_key } => {
                A::AddOperatorKey(pb::AddOperatorKey { operator_id, public_key })
            }
            Order::RevokeOperatorKey { operator_id, key_id } => {
                A::RevokeOperatorKey(pb::RevokeOperatorKey { operator_id, key_id })
            }
            Order::Confirm { fingerprint } => A::ConfirmKey(pb::ConfirmKey { fingerprint }),
            Order::Reject { fingerprint, reason } => {
                A::RejectKey(pb::RejectKey { fingerprint, reason })
            }
            Order::ForceTakeOver { fingerprint, operator_id, evse_ids, effective_at } => {
                A::ForceTakeOver(pb::ForceTakeOver {
                    fingerprint,
                    operator_id,
                    evse_ids,
                    effective_at: ts(effective_at),
                })
            }
            Order::Register { key, evse_ids, effective_at } => A::RegisterKey(pb::RegisterKey {
                key: Some(key.to_pb()),
                evse_ids,
                effective_at: ts(effective_at),
            }),
            Order::Deactivate { fingerprint, reason, comment, effective_at } => {
                A::DeactivateKey(pb::DeactivateKey {
                    fingerprint,
                    reason: reason as i32,
                    comment,
                    effective_at: ts(effective_at),
                })
            }
            Order::Relocate { fingerprint, evse_ids, effective_at } => {
                A::RelocateKey(pb::RelocateKey {
                    fingerprint,
                    evse_ids,
                    effective_at: ts(effective_at),
                })
            }
            Order::Replace { fingerprint, new_key, effective_at, comment } => {
                A::ReplaceKey(pb::ReplaceKey {
                    fingerprint,
                    new_key: Some(new_key.to_pb()),
                    effective_at: ts(effective_at),
                    comment,
                })
            }
            Order::Rotate { fingerprint, new_key, effective_at } => A::RotateKey(pb::RotateKey {
                fingerprint,
                new_key: Some(new_key.to_pb()),
                effective_at: ts(effective_at),
            }),
            Order::Release { fingerprint, to_operator_id } => {
                A::ReleaseKey(pb::ReleaseKey { fingerprint, to_operator_id })
            }
            Order::TakeOver { fingerprint, evse_ids, effective_at } => {
                A::TakeOverKey(pb::TakeOverKey {
                    fingerprint,
                    evse_ids,
                    effective_at: ts(effective_at),
                })
            }
        }
    }
}

/// Builds the command bytes for an action: a fresh UUIDv7 request ID and the current time.
pub fn command_bytes(action: &Order) -> Vec<u8> {
    command_bytes_with(action, uuid::Uuid::now_v7(), chrono::Utc::now())
}

/// Builds the command bytes with a given request ID and issue time.
pub fn command_bytes_with(action: &Order, request_id: uuid::Uuid, issued_at: Time) -> Vec<u8> {
    use prost::Message;
    pb::Command {
        request_id: request_id.to_string(),
        issued_at: Some(time::to_timestamp(&time::truncate_micros(issued_at))),
        action: Some(action.to_pb()),
    }
    .encode_to_vec()
}
