//! Checking answers without trusting the server.
//!
//! An answer's [`Evidence`] is a signed checkpoint of size H (whose extension line commits to the
//! map of latest entries, [`crate::map`]), the entries the answer depends on with their inclusion
//! proofs in tree H, and map proofs for the identifiers involved. [`Evidence::open`] checks all of
//! that against the registry's key; then [`Evidence::chain`] walks an identifier's back-links from
//! the latest entry the map proves, which yields *every* entry about it before H, and
//! [`Evidence::validity`], [`Evidence::key_record`] and [`Evidence::history`] re-derive answers
//! from those entries with the same rules the server runs. A client compares those with what the
//! server claimed.
//!
//! What this guarantees: the entries exist in the log the registry signed at size H, no entry
//! about the identifiers before H was left out, and the answer follows from them by the
//! published rules. It does not show that the log the client sees is the one everybody sees; for
//! that, clients keep the last checkpoint they saw and demand consistency proofs from it.

use std::collections::{BTreeMap, BTreeSet};

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::entry::{Entry, EntryError};
use crate::error::FieldError;
use crate::event::Identifier;
use crate::lifecycle::{self, KeyRecord, MemoryState};
use crate::map::{self, MapError, MapProof};
use crate::merkle::{self, Hash, ProofError as MerkleError};
use crate::note::NoteVerifier;
use crate::pb;
use crate::time::Time;
use crate::validity::{self, Selector, Validity};

/// An entry with its inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenEntry {
    /// Its position.
    pub position: u64,
    /// The entry as stored.
    pub entry: Vec<u8>,
    /// Its inclusion proof.
    pub proof: Vec<Hash>,
}

impl ProvenEntry {
    /// Checks the inclusion proof against a tree.
    pub fn verify(&self, size: u64, root: &Hash) -> Result<(), MerkleError> {
        merkle::verify_inclusion(
            self.position,
            size,
            &merkle::leaf_hash(&self.entry),
            &self.proof,
            root,
        )
    }
}

/// Why evidence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// The checkpoint does not verify.
    #[error("the checkpoint does not verify: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The checkpoint carries no map root.
    #[error("the checkpoint carries no map root extension line")]
    NoMapRoot,
    /// An entry is not in the checkpoint's tree.
    #[error("entry {position} is not proven to be in the log: {error}")]
    Inclusion {
        /// The entry.
        position: u64,
        /// Why.
        error: MerkleError,
    },
    /// An entry does not decode.
    #[error("entry {position} is malformed: {error}")]
    Entry {
        /// The entry.
        position: u64,
        /// Why.
        error: EntryError,
    },
    /// A map proof fails.
    #[error("the map proof for {identifier} fails: {error}")]
    Map {
        /// The identifier.
        identifier: String,
        /// Why.
        error: MapError,
    },
    /// The evidence lacks something the answer needs.
    #[error("the evidence is incomplete: {0}")]
    Missing(String),
    /// The entries contradict each other or the rules.
    #[error("the evidence is inconsistent: {0}")]
    Inconsistent(String),
    /// The question is outside the evidence.
    #[error("{0}")]
    Basis(String),
}

fn describe(id: &Identifier) -> String {
    format!("{:?} {}", id.kind, id.value)
}

/// Verified evidence: every entry proven to be in the signed tree of size H, every map proof
/// checked against the committed map root.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The map root it commits to.
    pub map_root: Hash,
    entries: BTreeMap<u64, Entry>,
    heads: BTreeMap<Identifier, Option<u64>>,
}

impl Evidence {
    /// Checks evidence against the registry's note verifier.
    pub fn open(proof: &pb::AnswerProof, verifier: &NoteVerifier) -> Result<Self, EvidenceError> {
        let checkpoint = Checkpoint::open(&proof.checkpoint, verifier)?;
        let map_root =
            map::root_from_extensions(&checkpoint.extensions).ok_or(EvidenceError::NoMapRoot)?;
        let mut entries = BTreeMap::new();
        for p in &proof.entries {
            let e = ProvenEntry::try_from(p)
                .map_err(|error| EvidenceError::Inclusion { position: p.position, error })?;
            e.verify(checkpoint.size, &checkpoint.root)
                .map_err(|error| EvidenceError::Inclusion { position: p.position, error })?;
            let decoded = Entry::decode(&e.entry)
                .map_err(|error| EvidenceError::Entry { position: e.position, error })?;
            if decoded.header.position != e.position {
                return Err(EvidenceError::Inconsistent(format!(
                    "entry at {} claims position {}",
                    e.position, decoded.header.position
                )));
            }
            entries.insert(e.position, decoded);
        }
        let mut heads = BTreeMap::new();
        for m in &proof.map_proofs {
            let id = m
                .identifier
                .as_ref()
                .ok_or_else(|| EvidenceError::Missing("a map proof names no identifier".into()))?;
            let identifier = Identifier::try_from(id)
                .map_err(|e: FieldError| EvidenceError::Inconsistent(e.to_string()))?;
            let leaves = m
                .leaves
                .iter()
                .map(|l| Ok((merkle::hash_from_slice(&l.key)?, l.position)))
                .collect::<Result<Vec<_>, MerkleError>>()
                .map_err(|_| EvidenceError::Map {
                    identifier: describe(&identifier),
                    error: MapError::Leaves,
                })?;
            let siblings =
                merkle::hashes_from_slices(&m.siblings).map_err(|_| EvidenceError::Map {
                    identifier: describe(&identifier),
                    error: MapError::Siblings(m.siblings.len()),
                })?;
            let latest = MapProof { leaves, siblings }
                .verify(&identifier, &map_root)
                .map_err(|error| EvidenceError::Map { identifier: describe(&identifier), error })?;
            if latest.is_some_and(|p| p >= checkpoint.size) {
                return Err(EvidenceError::Inconsistent(format!(
                    "the map names an entry past the checkpoint for {}",
                    describe(&identifier)
                )));
            }
            heads.insert(identifier, latest);
        }
        Ok(Self { checkpoint, map_root, entries, heads })
    }

    /// The size of the checkpoint's tree.
    pub fn size(&self) -> u64 {
        self.checkpoint.size
    }

    /// A proven entry.
    pub fn entry(&self, position: u64) -> Option<&Entry> {
        self.entries.get(&position)
    }

    /// Every entry about `identifier` in the tree, newest first: the map proves the latest one,
    /// each entry's back-link names the one before.
    pub fn chain(&self, identifier: &Identifier) -> Result<Vec<u64>, EvidenceError> {
        let mut next = *self.heads.get(identifier).ok_or_else(|| {
            EvidenceError::Missing(format!("no map proof for {}", describe(identifier)))
        })?;
        let mut out = Vec::new();
        while let Some(p) = next {
            let entry = self.entries.get(&p).ok_or_else(|| {
                EvidenceError::Missing(format!(
                    "entry {p} of the chain of {} is not included",
                    describe(identifier)
                ))
            })?;
            let link =
                entry.body.links.iter().find(|l| l.identifier == *identifier).ok_or_else(|| {
                    EvidenceError::Inconsistent(format!(
                        "entry {p} does not link {}",
                        describe(identifier)
                    ))
                })?;
            if link.previous.is_some_and(|q| q >= p) {
                return Err(EvidenceError::Inconsistent(format!(
                    "entry {p} links forward for {}",
                    describe(identifier)
                )));
            }
            out.push(p);
            next = link.previous;
        }
        Ok(out)
    }

    /// The projections of the keys `fingerprints`, rebuilt from their complete chains.
    fn state_for(&self, fingerprints: &BTreeSet<String>) -> Result<MemoryState, EvidenceError> {
        let mut positions = BTreeSet::new();
        for fp in fingerprints {
            positions.extend(self.chain(&Identifier::key(fp))?);
        }
        let mut state = MemoryState::default();
        for p in positions {
            let e = &self.entries[&p];
            lifecycle::apply_key_events(&e.header, &e.body, &mut state, |fp| {
                fingerprints.contains(fp)
            })
            .map_err(|e| EvidenceError::Inconsistent(e.to_string()))?;
        }
        Ok(state)
    }

    /// The projections of every key named in the chains of `identifiers`, rebuilt from the
    /// evidence: enough to answer any question about those identifiers with the rules (e.g. to
    /// validate a signed meter value naming them), as known at `as_of`.
    pub fn state_of(
        &self,
        identifiers: &[Identifier],
        as_of: u64,
    ) -> Result<MemoryState, EvidenceError> {
        self.as_of(as_of)?;
        let mut fingerprints = BTreeSet::new();
        for id in identifiers {
            for p in self.chain(id)? {
                for e in &self.entries[&p].body.events {
                    fingerprints.extend(e.fingerprint().map(str::to_string));
                }
            }
        }
        self.state_for(&fingerprints)
    }

    fn as_of(&self, as_of: u64) -> Result<(), EvidenceError> {
        if as_of > self.size() {
            return Err(EvidenceError::Basis(format!(
                "the basis {as_of} is past the evidence's checkpoint {}",
                self.size()
            )));
        }
        Ok(())
    }

    /// Re-derives a validity answer as known at `as_of`.
    pub fn validity(
        &self,
        selector: &Selector,
        t: Time,
        as_of: u64,
    ) -> Result<Validity, EvidenceError> {
        self.as_of(as_of)?;
        let identifier = selector.identifier();
        let mut fingerprints = BTreeSet::new();
        match selector {
            Selector::Fingerprint(fp) => {
                self.chain(&identifier)?;
                fingerprints.insert(fp.clone());
            }
            _ => {
                for p in self.chain(&identifier)? {
                    for e in &self.entries[&p].body.events {
                        fingerprints.extend(e.fingerprint().map(str::to_string));
                    }
                }
            }
        }
        let state = self.state_for(&fingerprints)?;
        validity::check(&state, selector, t, as_of)
            .map_err(|e: std::convert::Infallible| match e {})
    }

    /// Re-derives a key record as known at `as_of` (`None` if not registered by then).
    pub fn key_record(
        &self,
        fingerprint: &str,
        as_of: u64,
    ) -> Result<Option<KeyRecord>, EvidenceError> {
        self.as_of(as_of)?;
        let state = self.state_for(&[fingerprint.to_string()].into_iter().collect())?;
        Ok(state
            .keys
            .get(fingerprint)
            .filter(|r| r.registered_at() < as_of)
            .map(|r| KeyRecord::clone(r)))
    }

    /// An identifier's history as known at `as_of`: positions, newest first.
    pub fn history(&self, identifier: &Identifier, as_of: u64) -> Result<Vec<u64>, EvidenceError> {
        self.as_of(as_of)?;
        Ok(self.chain(identifier)?.into_iter().filter(|p| *p < as_of).collect())
    }
}
