//! The registry's events as typed values, and their log encoding.
//!
//! Events are what entries record: facts, already checked. Decoding an event from the log
//! validates it (well-formed IDs, keys that parse, times in range), so code that works with
//! [`Event`] never meets a malformed one. Both directions are in [`crate::convert`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::{EvseId, OperatorId};
use crate::meter_key::Curve;
use crate::time::Time;

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

/// The text a meter key was submitted as, next to its DER ([`Registration::public_key`]).
///
/// Nearly every key is submitted as the lowercase hex of its DER: that text is not kept but
/// written again from the DER when asked for, so a million key records do not each hold 182
/// characters the DER already says. Any other text (base64, PEM, uppercase, a raw point) is
/// kept as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmittedKey(Option<Box<str>>);

impl SubmittedKey {
    /// The text `submitted` of the key whose DER is `der`.
    pub fn new(submitted: &str, der: &[u8]) -> Self {
        Self((!is_lower_hex_of(submitted, der)).then(|| submitted.into()))
    }

    /// The text as submitted, given the key's DER.
    pub fn text(&self, der: &[u8]) -> std::borrow::Cow<'_, str> {
        match &self.0 {
            Some(text) => std::borrow::Cow::Borrowed(text),
            None => std::borrow::Cow::Owned(hex::encode(der)),
        }
    }
}

/// Whether `text` is `bytes` in lowercase hex, checked without writing the hex out.
fn is_lower_hex_of(text: &str, bytes: &[u8]) -> bool {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    text.len() == bytes.len() * 2
        && text.as_bytes().chunks_exact(2).zip(bytes).all(|(pair, b)| {
            pair[0] == DIGITS[usize::from(b >> 4)] && pair[1] == DIGITS[usize::from(b & 15)]
        })
}

/// A meter key registration as recorded. Every key record holds one for the life of the
/// registry, so its fields are boxed at their exact length, and the manufacturer and model,
/// which a fleet shares, can be shared between records (see [`crate::pool`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Fingerprint (hex).
    pub fingerprint: Box<str>,
    /// Curve.
    pub curve: Curve,
    /// DER SubjectPublicKeyInfo.
    pub public_key: Box<[u8]>,
    /// As submitted.
    pub submitted_public_key: SubmittedKey,
    /// The operator it is bound to.
    pub operator_id: OperatorId,
    /// The EVSE IDs it is bound to.
    pub evse_ids: Box<[EvseId]>,
    /// Meter serial.
    pub meter_serial: Option<Box<str>>,
    /// Gateway serial.
    pub gateway_serial: Option<Box<str>>,
    /// Manufacturer.
    pub manufacturer: Arc<str>,
    /// Model.
    pub model: Arc<str>,
    /// When it started to serve.
    pub effective_at: Time,
    /// The key it succeeds.
    pub predecessor: Option<Box<str>>,
    /// Proof-of-possession sample, if given.
    pub sample_signed_meter_value: Option<Box<str>>,
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

impl Event {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_submitted_as_its_lowercase_hex_is_written_again_from_the_der() {
        let der = [0x30, 0x59, 0xab, 0x0f];
        let hex = SubmittedKey::new("3059ab0f", &der);
        assert_eq!(hex, SubmittedKey(None), "the hex of the DER is not kept");
        assert_eq!(hex.text(&der), "3059ab0f");
    }

    #[test]
    fn any_other_submitted_text_is_kept_as_it_was() {
        let der = [0x30, 0x59, 0xab, 0x0f];
        for text in ["3059AB0F", "3059ab0", "3059ab0f0", "MFmrDw==", "3059ab0e", ""] {
            let kept = SubmittedKey::new(text, &der);
            assert_eq!(kept.text(&der), text);
            assert!(kept.0.is_some(), "{text:?} must be kept");
        }
    }
}
