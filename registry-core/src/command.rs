//! Signed commands: the envelope, its signature, and the typed commands inside.
//!
//! The signature covers a fixed context string, the registry the command is meant for (its
//! checkpoint origin) and the exact command bytes, so a signature made for a command can never
//! be replayed as anything else (not a checkpoint, not another protocol) nor at another registry
//! (a test instance's command at production). Commands logged before the registry was named
//! carry the older context without it; they still verify, and only as what they were. The bytes are stored as signed; [`Command::decode`] validates every field
//! and names the one that is wrong, with its protobuf path.
//! (The envelope's and the command's protobuf conversions are in [`crate::convert`].)

use prost::Message;
use sha2::{Digest, Sha256};

use crate::error::FieldError;
use crate::event::EndReason;
use crate::ids::{EvseId, OperatorId};
use crate::keys::{self, P256KeyPair};
use crate::meter_key::MeterKey;
use crate::pb;
use crate::time::Time;

/// Prefix of a signed command message that names its registry: then the registry's origin and
/// a line feed follow, then the command bytes.
pub const SIGNING_CONTEXT: &[u8] = b"keyregistry.v1 command for\n";

/// Prefix of the signed message of a command that names no registry (logged before 2026-12-05).
pub const LEGACY_SIGNING_CONTEXT: &[u8] = b"keyregistry.v1 command\n";

/// Longest registry name (origin) a command may carry.
pub const MAX_REGISTRY_CHARS: usize = 256;

/// Longest accepted serialized command (bytes). A command is a few hundred bytes; the limit
/// keeps entries small and leaves room for a sample signed meter value.
pub const MAX_COMMAND_BYTES: usize = 32 * 1024;

/// A command with its signature, exactly as submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCommand {
    /// The serialized `Command`.
    pub command: Vec<u8>,
    /// Fingerprint of the signing key.
    pub signer_key_id: [u8; 32],
    /// DER ECDSA P-256 signature over SHA-256(context ‖ registry ‖ LF ‖ command), or over
    /// SHA-256(legacy context ‖ command) when `registry` is `None`.
    pub signature: Vec<u8>,
    /// The registry (checkpoint origin) the command is signed for; `None` only in commands
    /// logged before registries were named.
    pub registry: Option<String>,
}

impl SignedCommand {
    /// Signs serialized command bytes for the registry whose checkpoint origin is `registry`.
    pub fn sign(command: Vec<u8>, registry: &str, key: &P256KeyPair) -> Self {
        let registry = Some(registry.to_string());
        let signature = key.sign_der(&signed_message(&command, registry.as_deref()));
        Self { command, signer_key_id: key.fingerprint(), signature, registry }
    }

    /// Signs with the legacy context that names no registry, as commands were signed before
    /// 2026-12-05: only to build old logs in tests; no registry accepts such a command now.
    pub fn sign_legacy(command: Vec<u8>, key: &P256KeyPair) -> Self {
        let signature = key.sign_der(&signed_message(&command, None));
        Self { command, signer_key_id: key.fingerprint(), signature, registry: None }
    }

    /// Whether the signature verifies with the signer's DER SubjectPublicKeyInfo.
    pub fn verify(&self, signer_spki: &[u8]) -> bool {
        keys::p256_point_of_spki(signer_spki).is_some_and(|point| {
            let message = signed_message(&self.command, self.registry.as_deref());
            keys::p256_verify_point(point, &message, &self.signature)
        })
    }

    /// SHA-256 of the command bytes: what idempotency compares. A retry may carry a fresh
    /// signature over the same bytes; that is the same request.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(&self.command).into()
    }
}

fn signed_message(command: &[u8], registry: Option<&str>) -> Vec<u8> {
    match registry {
        Some(r) => [SIGNING_CONTEXT, r.as_bytes(), b"\n", command].concat(),
        None => [LEGACY_SIGNING_CONTEXT, command].concat(),
    }
}

/// A meter key being registered, with its signing unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// The parsed, normalised key.
    pub key: MeterKey,
    /// The key as submitted.
    pub submitted: String,
    /// Meter serial.
    pub meter_serial: Option<String>,
    /// Gateway serial.
    pub gateway_serial: Option<String>,
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Proof-of-possession sample.
    pub sample_signed_meter_value: Option<String>,
}

/// What a command asks for, decoded and validated. Each variant is the `keyregistry.v1` message
/// of the same name (`commands.proto` documents every field), with typed identifiers, keys and
/// times in place of strings, bytes and timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // the fields are the protobuf message's, documented in commands.proto
pub enum Action {
    /// See `AddAdminKey`.
    AddAdminKey { public_key: Vec<u8>, label: String },
    /// See `RevokeAdminKey`.
    RevokeAdminKey { key_id: [u8; 32] },
    /// See `AddOperator`.
    AddOperator { operator_id: OperatorId, name: String, public_keys: Vec<Vec<u8>> },
    /// See `AddOperatorKey`.
    AddOperatorKey { operator_id: OperatorId, public_key: Vec<u8> },
    /// See `RevokeOperatorKey`.
    RevokeOperatorKey { operator_id: OperatorId, key_id: [u8; 32] },
    /// See `ConfirmKey`.
    ConfirmKey { fingerprint: String },
    /// See `RejectKey`.
    RejectKey { fingerprint: String, reason: String },
    /// See `ForceTakeOver`.
    ForceTakeOver {
        fingerprint: String,
        operator_id: OperatorId,
        evse_ids: Vec<EvseId>,
        effective_at: Option<Time>,
    },
    /// See `RegisterKey`.
    RegisterKey { key: Box<NewKey>, evse_ids: Vec<EvseId>, effective_at: Option<Time> },
    /// See `DeactivateKey`.
    DeactivateKey {
        fingerprint: String,
        reason: EndReason,
        comment: String,
        effective_at: Option<Time>,
    },
    /// See `RelocateKey`.
    RelocateKey { fingerprint: String, evse_ids: Vec<EvseId>, effective_at: Option<Time> },
    /// See `ReplaceKey`.
    ReplaceKey {
        fingerprint: String,
        new_key: Box<NewKey>,
        effective_at: Option<Time>,
        comment: String,
    },
    /// See `RotateKey`.
    RotateKey { fingerprint: String, new_key: Box<NewKey>, effective_at: Option<Time> },
    /// See `ReleaseKey`.
    ReleaseKey { fingerprint: String, to_operator_id: OperatorId },
    /// See `TakeOverKey`.
    TakeOverKey { fingerprint: String, evse_ids: Vec<EvseId>, effective_at: Option<Time> },
}

impl Action {
    /// Whether only administrators may order it.
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Action::AddAdminKey { .. }
                | Action::RevokeAdminKey { .. }
                | Action::AddOperator { .. }
                | Action::AddOperatorKey { .. }
                | Action::RevokeOperatorKey { .. }
                | Action::ConfirmKey { .. }
                | Action::RejectKey { .. }
                | Action::ForceTakeOver { .. }
        )
    }

    /// The command's name, for messages and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Action::AddAdminKey { .. } => "add_admin_key",
            Action::RevokeAdminKey { .. } => "revoke_admin_key",
            Action::AddOperator { .. } => "add_operator",
            Action::AddOperatorKey { .. } => "add_operator_key",
            Action::RevokeOperatorKey { .. } => "revoke_operator_key",
            Action::ConfirmKey { .. } => "confirm_key",
            Action::RejectKey { .. } => "reject_key",
            Action::ForceTakeOver { .. } => "force_take_over",
            Action::RegisterKey { .. } => "register_key",
            Action::DeactivateKey { .. } => "deactivate_key",
            Action::RelocateKey { .. } => "relocate_key",
            Action::ReplaceKey { .. } => "replace_key",
            Action::RotateKey { .. } => "rotate_key",
            Action::ReleaseKey { .. } => "release_key",
            Action::TakeOverKey { .. } => "take_over_key",
        }
    }
}

/// A decoded, validated command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Idempotency key.
    pub request_id: uuid::Uuid,
    /// When the signer issued it.
    pub issued_at: Time,
    /// What it asks for.
    pub action: Action,
}

impl Command {
    /// Decodes and validates serialized command bytes (the checks are the `TryFrom<&pb::Command>`
    /// in [`crate::convert`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, FieldError> {
        let c = pb::Command::decode(bytes)
            .map_err(|e| FieldError::new("command", format!("is not a Command message: {e}")))?;
        Self::try_from(&c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(public_key: &str, evse: &str) -> pb::Command {
        pb::Command {
            request_id: uuid::Uuid::now_v7().to_string(),
            issued_at: Some(crate::time::to_timestamp(&chrono::Utc::now())),
            action: Some(pb::command::Action::RegisterKey(pb::RegisterKey {
                key: Some(pb::NewKey {
                    public_key: public_key.into(),
                    meter_serial: "M1".into(),
                    ..Default::default()
                }),
                evse_ids: vec![evse.into()],
                effective_at: None,
            })),
        }
    }

    #[test]
    fn a_command_with_a_confirmation_shaped_id_still_decodes() {
        // Logs written before such IDs were reserved may hold one; replay and retries decode it
        // (the registry refuses it for new commands only).
        let id = crate::lifecycle::RegistryAction::AutoConfirm {
            fingerprint: "ab".repeat(32),
            registration: 7,
        }
        .request_id()
        .0;
        let key = P256KeyPair::generate().public_key_pem();
        let c = Command::try_from(&pb::Command {
            request_id: id.to_string(),
            ..register(&key, "DE*ABC*E1")
        })
        .unwrap();
        assert_eq!(c.request_id, id);
    }

    #[test]
    fn a_signature_verifies_only_for_its_bytes_and_key() {
        let signer = P256KeyPair::generate();
        let bytes =
            register(&P256KeyPair::generate().public_key_pem(), "DE*ABC*E1").encode_to_vec();
        let signed = SignedCommand::sign(bytes, "registry.test/a", &signer);
        assert!(signed.verify(signer.public_key_der()));
        assert!(!signed.verify(P256KeyPair::generate().public_key_der()));
        let mut tampered = signed.clone();
        tampered.command[3] ^= 1;
        assert!(!tampered.verify(signer.public_key_der()));
        // The context string is part of what is signed: a bare signature over the bytes fails.
        let bare = SignedCommand { signature: signer.sign_der(&signed.command), ..signed.clone() };
        assert!(!bare.verify(signer.public_key_der()));
    }

    #[test]
    fn a_signature_binds_the_registry_it_was_made_for() {
        let signer = P256KeyPair::generate();
        let bytes =
            register(&P256KeyPair::generate().public_key_pem(), "DE*ABC*E1").encode_to_vec();
        let for_a = SignedCommand::sign(bytes.clone(), "registry.test/a", &signer);
        let as_if_for_b =
            SignedCommand { registry: Some("registry.test/b".into()), ..for_a.clone() };
        assert!(!as_if_for_b.verify(signer.public_key_der()));
        let unnamed = SignedCommand { registry: None, ..for_a.clone() };
        assert!(!unnamed.verify(signer.public_key_der()), "nor passes as a legacy command");
        // A legacy command verifies as one, and only as one.
        let legacy = SignedCommand::sign_legacy(bytes, &signer);
        assert!(legacy.verify(signer.public_key_der()));
        let claimed = SignedCommand { registry: Some("registry.test/a".into()), ..legacy };
        assert!(!claimed.verify(signer.public_key_der()));
        // The wire form keeps the name, and an empty name is the legacy form.
        let back = SignedCommand::try_from(&pb::SignedCommand::from(&for_a)).unwrap();
        assert_eq!(back, for_a);
        let mut two_lines = pb::SignedCommand::from(&for_a);
        two_lines.registry = "a\nb".into();
        assert_eq!(SignedCommand::try_from(&two_lines).unwrap_err().field, "command.registry");
    }

    #[test]
    fn a_valid_registration_decodes_with_normalised_fields() {
        let key = P256KeyPair::generate();
        let c =
            Command::try_from(&register(&hex::encode(key.public_key_der()), "deabce1")).unwrap();
        let Action::RegisterKey { key: k, evse_ids, .. } = c.action else { panic!() };
        assert_eq!(k.key.fingerprint, key.fingerprint_hex());
        assert_eq!(evse_ids[0].as_str(), "DE*ABC*E1");
    }

    #[test]
    fn bad_fields_are_named_by_their_path() {
        let key = P256KeyPair::generate().public_key_pem();
        let cases = [
            (register(&key, "DE*ABC*X1"), "register_key.evse_ids[0]"),
            (register("04abcd", "DE*ABC*E1"), "register_key.key.public_key"),
            (
                pb::Command { request_id: "nope".into(), ..register(&key, "DE*ABC*E1") },
                "request_id",
            ),
            (pb::Command { issued_at: None, ..register(&key, "DE*ABC*E1") }, "issued_at"),
            (pb::Command { action: None, ..register(&key, "DE*ABC*E1") }, "action"),
        ];
        for (command, field) in cases {
            assert_eq!(Command::try_from(&command).unwrap_err().field, field);
        }
    }
}
