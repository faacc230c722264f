//! Confirmation receipts: proof, checkable offline with the registry's public key alone, that a
//! registration was published in the log and then confirmed.
//!
//! A receipt holds the registration and confirmation entries as stored, a checkpoint signed by
//! the registry whose tree contains both, and their inclusion proofs. [`Receipt::verify`] checks
//! all of that and returns what it proves.

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::entry::Entry;
use crate::event::{Event, Registration};
use crate::note::NoteVerifier;
use crate::proof::ProvenEntry;

/// A confirmation receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The registration entry.
    pub registration: ProvenEntry,
    /// The confirmation entry.
    pub confirmation: ProvenEntry,
    /// A signed checkpoint whose tree contains both.
    pub checkpoint: String,
}

/// What a verified receipt proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// The registration as recorded (key, EVSE IDs, operator, effective time, ...).
    pub registration: Registration,
    /// Its position.
    pub registration_position: u64,
    /// The confirmation's position.
    pub confirmation_position: u64,
    /// The checkpoint size that covered the registration when it was confirmed.
    pub published_in_tree_size: u64,
    /// The checkpoint the receipt's proofs are against.
    pub checkpoint: Checkpoint,
}

/// A receipt does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// The registry key is not usable.
    #[error("registry key: {0}")]
    Key(String),
    /// The checkpoint is not signed by the registry key, or malformed.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// An entry is not in the checkpoint's tree.
    #[error("the {which} entry is not in the checkpoint's tree: {error}")]
    Inclusion {
        /// Which entry.
        which: &'static str,
        /// Why.
        error: crate::merkle::ProofError,
    },
    /// The entries are not a registration and its confirmation.
    #[error("{0}")]
    Content(String),
}

impl Receipt {
    /// Checks the receipt with the registry's public key (DER SubjectPublicKeyInfo).
    pub fn verify(&self, registry_key: &[u8]) -> Result<Proven, ReceiptError> {
        // The key name of a registry checkpoint is its origin: the note's first line.
        let origin = self.checkpoint.lines().next().unwrap_or_default();
        let verifier = NoteVerifier::new(origin, registry_key)
            .map_err(|e| ReceiptError::Key(e.to_string()))?;
        let checkpoint = Checkpoint::open(&self.checkpoint, &verifier)?;
        self.registration
            .verify(checkpoint.size, &checkpoint.root)
            .map_err(|error| ReceiptError::Inclusion { which: "registration", error })?;
        self.confirmation
            .verify(checkpoint.size, &checkpoint.root)
            .map_err(|error| ReceiptError::Inclusion { which: "confirmation", error })?;
        let decode = |e: &ProvenEntry, which: &str| {
            let d = Entry::decode(&e.entry).map_err(|err| {
                ReceiptError::Content(format!("the {which} entry is malformed: {err}"))
            })?;
            if d.header.position != e.position {
                return Err(ReceiptError::Content(format!(
                    "the {which} entry is not at position {}",
                    e.position
                )));
            }
            Ok(d)
        };
        let reg_entry = decode(&self.registration, "registration")?;
        let conf_entry = decode(&self.confirmation, "confirmation")?;
        let (fingerprint, registration_position, published_in_tree_size) = conf_entry
            .body
            .events
            .iter()
            .find_map(|e| match e {
                Event::KeyConfirmed {
                    fingerprint,
                    registration_position,
                    published_in_tree_size,
                } => Some((fingerprint.clone(), *registration_position, *published_in_tree_size)),
                _ => None,
            })
            .ok_or_else(|| {
                ReceiptError::Content("the confirmation entry confirms no key".into())
            })?;
        if registration_position != self.registration.position {
            return Err(ReceiptError::Content(format!(
                "the confirmation is for the registration at {registration_position}, not {}",
                self.registration.position
            )));
        }
        let registration = reg_entry
            .body
            .events
            .iter()
            .find_map(|e| match e {
                Event::KeyRegistered(r) if *r.fingerprint == *fingerprint => Some(r.clone()),
                _ => None,
            })
            .ok_or_else(|| {
                ReceiptError::Content(format!(
                    "the registration entry does not register key {fingerprint}"
                ))
            })?;
        if published_in_tree_size <= registration_position
            || published_in_tree_size > self.confirmation.position
        {
            return Err(ReceiptError::Content(
                "the confirmation does not follow the registration's publication".into(),
            ));
        }
        Ok(Proven {
            registration,
            registration_position,
            confirmation_position: self.confirmation.position,
            published_in_tree_size,
            checkpoint,
        })
    }
}
