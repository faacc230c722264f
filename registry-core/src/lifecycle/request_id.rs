//! The request IDs of what the registry appends on its own (bootstrap, automatic confirmation):
//! derived from what the action does, so it is appended at most once and an auditor can check it,
//! and laid out so that confirmations sit in order in the store's request index.

use crate::keys;

/// What the registry itself appends (no signed command).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryAction {
    /// The first administrator keys, from the server's configuration.
    Bootstrap {
        /// DER SubjectPublicKeyInfo and label of each.
        admins: Vec<(Vec<u8>, String)>,
    },
    /// Automatic confirmation of a published registration.
    AutoConfirm {
        /// The key.
        fingerprint: String,
        /// The position of its registration entry.
        registration: u64,
    },
}

/// Namespace of the request IDs the registry derives for its bootstrap entry, and for its
/// confirmations in logs written before 2026-12 (UUIDv5).
const REGISTRY_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5b0e_4c1e_7f2a_4d8b_9a41_6c3e_2f1d_0a77);

/// The 12 bits after the version nibble that mark a UUIDv8 as one of the registry's own
/// confirmation IDs; operators' commands may not use such IDs (see [`is_reserved_request_id`]).
const CONFIRMATION_MARK: u128 = 0xAC1;

/// Whether a request ID has the shape of the registry's own confirmation IDs (version 8, the
/// mark, the RFC 9562 variant). New commands are refused such IDs, so no operator can take the
/// ID of a confirmation before the registry writes it (which would keep the key pending).
pub fn is_reserved_request_id(id: &uuid::Uuid) -> bool {
    let v = id.as_u128();
    id.get_version_num() == 8 && (v >> 64) & 0xFFF == CONFIRMATION_MARK && (v >> 62) & 0b11 == 0b10
}

impl RegistryAction {
    /// The request ID and content digest of the entry this action appends. Derived from what
    /// the action does, so the registry appends it at most once, and auditors can check it.
    ///
    /// A confirmation's ID starts with its registration's position (a UUIDv8: position in the
    /// first 48 bits, the mark, then 62 bits of the digest), so successive confirmations sit
    /// next to each other in the store's request index, as time-ordered UUIDv7 commands do. The
    /// UUIDv5 used before spread them at random over an index of millions of IDs: every
    /// confirmation cost the writer a page read from disk and a rewrite of a random page.
    pub fn request_id(&self) -> (uuid::Uuid, [u8; 32]) {
        use sha2::{Digest, Sha256};
        let what = self.what();
        let digest: [u8; 32] = Sha256::digest(what.as_bytes()).into();
        let id = match self {
            RegistryAction::Bootstrap { .. } => {
                uuid::Uuid::new_v5(&REGISTRY_NAMESPACE, what.as_bytes())
            }
            RegistryAction::AutoConfirm { registration, .. } => {
                // 2^48 entries is far beyond any log; past it the IDs would stop being ordered.
                debug_assert!(*registration < 1 << 48, "registration position {registration}");
                let low = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) as u128;
                let bits = ((*registration as u128 & 0xFFFF_FFFF_FFFF) << 80)
                    | (0x8 << 76)
                    | (CONFIRMATION_MARK << 64)
                    | (0b10 << 62)
                    | (low & ((1 << 62) - 1));
                uuid::Uuid::from_u128(bits)
            }
        };
        (id, digest)
    }

    /// Whether `id` is this action's request ID: the current derivation, or the one of logs
    /// written before 2026-12 ([`RegistryAction::legacy_request_id`]).
    pub fn has_request_id(&self, id: &uuid::Uuid) -> bool {
        self.request_id().0 == *id || self.legacy_request_id() == Some(*id)
    }

    /// The UUIDv5 that confirmations in logs written before 2026-12 carry (the digest is the
    /// same), so that a retried registration from then still finds its confirmation.
    pub fn legacy_request_id(&self) -> Option<uuid::Uuid> {
        matches!(self, RegistryAction::AutoConfirm { .. })
            .then(|| uuid::Uuid::new_v5(&REGISTRY_NAMESPACE, self.what().as_bytes()))
    }

    /// What the action does, as the text its digest is taken over.
    fn what(&self) -> String {
        match self {
            RegistryAction::Bootstrap { admins } => {
                let mut fps: Vec<String> =
                    admins.iter().map(|(der, _)| keys::fingerprint_hex(der)).collect();
                fps.sort();
                format!("bootstrap:{}", fps.join(","))
            }
            RegistryAction::AutoConfirm { fingerprint, .. } => {
                format!("auto-confirm:{fingerprint}")
            }
        }
    }
}
