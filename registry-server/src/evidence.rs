//! Building the evidence that lets clients check answers and receipts without trusting the
//! server (`registry_core::proof`, `registry_core::receipt`).
//!
//! Evidence is taken at the durable head H: the head's checkpoint (which commits to the map),
//! map proofs for the identifiers involved, and every entry of their back-linked chains with
//! inclusion proofs in tree H. The buckets and the tree are read from the published map at H
//! (`crate::map::SharedMap`). The writer keeps appending meanwhile, so a build that notices it
//! raced a newer batch (the published map is past H) starts again at the new head.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use registry_core::entry::Entry;
use registry_core::error::FieldError;
use registry_core::event::{Identifier, IdentifierKind};
use registry_core::lifecycle::State;
use registry_core::map::{self, Bucket};
use registry_core::receipt::Receipt;
use registry_proto::pb;

use crate::log::{Head, LogReader};
use crate::lookup::LookupError;
use crate::map::SharedMap;
use crate::projection::Projection;
use crate::store::StoreError;

/// How often a build may restart because the writer moved on.
const ATTEMPTS: usize = 200;

/// Evidence for one answer, ready to send.
#[derive(Debug, Clone)]
pub struct Built {
    /// The tree size it is taken at.
    pub size: u64,
    /// The wire form.
    pub proof: pb::AnswerProof,
}

enum Attempt {
    Retry,
    Fail(LookupError),
}

impl From<StoreError> for Attempt {
    fn from(e: StoreError) -> Self {
        Attempt::Fail(e.into())
    }
}

impl From<crate::log::ReadError> for Attempt {
    fn from(e: crate::log::ReadError) -> Self {
        Attempt::Fail(e.into())
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct EvidenceBuilder {
    reader: LogReader,
    map: Arc<SharedMap>,
}

impl EvidenceBuilder {
    /// A builder over the log and its published map.
    pub fn new(reader: LogReader, map: Arc<SharedMap>) -> Self {
        Self { reader, map }
    }

    /// Evidence for answers about `roots`; with `expand_keys`, also the complete chains of every
    /// key named in the roots' entries (what EVSE and serial answers depend on).
    pub fn answer(&self, roots: &[Identifier], expand_keys: bool) -> Result<Built, LookupError> {
        for _ in 0..ATTEMPTS {
            let head = self.reader.head();
            match self.attempt(&head, roots, expand_keys) {
                Ok(built) => return Ok(built),
                Err(Attempt::Fail(e)) => return Err(e),
                Err(Attempt::Retry) => std::thread::yield_now(),
            }
        }
        Err(LookupError::Store(StoreError::Io(
            "the log moved too fast to build evidence; retry".into(),
        )))
    }

    fn attempt(
        &self,
        head: &Head,
        roots: &[Identifier],
        expand_keys: bool,
    ) -> Result<Built, Attempt> {
        let mut buckets: BTreeMap<u16, Arc<Bucket>> = BTreeMap::new();
        let mut identifiers: BTreeSet<Identifier> = roots.iter().cloned().collect();
        let mut queue: Vec<Identifier> = roots.to_vec();
        let mut positions = BTreeSet::new();
        while let Some(id) = queue.pop() {
            let key = map::key(&id);
            let index = map::bucket_of(&key);
            if let std::collections::btree_map::Entry::Vacant(slot) = buckets.entry(index) {
                slot.insert(self.map.bucket(head.size, index)?.ok_or(Attempt::Retry)?);
            }
            let latest = buckets[&index].iter().find(|(k, _)| *k == key).map(|(_, p)| *p);
            let mut next = match latest {
                Some(p) if p >= head.size => return Err(Attempt::Retry),
                other => other,
            };
            while let Some(p) = next {
                let bytes = self.reader.entry(p)?;
                let entry = Entry::decode(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("entry {p}: {e}")))?;
                positions.insert(p);
                if expand_keys && id.kind != IdentifierKind::Key {
                    for fp in entry.body.events.iter().filter_map(|e| e.fingerprint()) {
                        let k = Identifier::key(fp);
                        if identifiers.insert(k.clone()) {
                            queue.push(k);
                        }
                    }
                }
                next = entry
                    .body
                    .links
                    .iter()
                    .find(|l| l.identifier == id)
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("entry {p} has no back-link for {}", id.value))
                    })?
                    .previous;
            }
        }
        let indexes: Vec<u16> = buckets.keys().copied().collect();
        let snapshot = self.map.snapshot(head.size, &indexes).ok_or(Attempt::Retry)?;
        for (index, leaves) in &buckets {
            if map::bucket_hash(*index, leaves) != snapshot.paths[index].0 {
                return Err(Attempt::Retry);
            }
        }
        let map_proofs = identifiers
            .iter()
            .map(|id| {
                let index = map::bucket_of(&map::key(id));
                pb::MapProof {
                    identifier: Some(pb::Identifier::from(id)),
                    leaves: buckets[&index]
                        .iter()
                        .map(|(k, p)| pb::MapLeaf { key: k.to_vec(), position: *p })
                        .collect(),
                    siblings: snapshot.paths[&index].1.iter().map(|h| h.to_vec()).collect(),
                }
            })
            .collect();
        let positions: Vec<u64> = positions.into_iter().collect();
        let entries =
            self.reader.prove(head, &positions)?.iter().map(pb::ProvenEntry::from).collect();
        Ok(Built {
            size: head.size,
            proof: pb::AnswerProof { checkpoint: head.checkpoint.to_string(), entries, map_proofs },
        })
    }
}

/// The receipt for a registration and its confirmation, at the current head.
pub fn receipt(
    reader: &LogReader,
    registration: u64,
    confirmation: u64,
) -> Result<Receipt, LookupError> {
    let head = reader.head();
    if confirmation >= head.size {
        return Err(LookupError::OutOfRange(FieldError::new(
            "confirmation",
            format!("entry {confirmation} is not yet durable"),
        )));
    }
    let mut proven = reader.prove(&head, &[registration, confirmation])?.into_iter();
    let (Some(registration), Some(confirmation)) = (proven.next(), proven.next()) else {
        unreachable!("prove returns one entry per position");
    };
    Ok(Receipt { registration, confirmation, checkpoint: head.checkpoint.to_string() })
}

/// The receipt of a confirmed key.
pub fn receipt_for_key(reader: &LogReader, fingerprint: &str) -> Result<Receipt, LookupError> {
    let not_found = || {
        LookupError::NotFound(FieldError::new(
            "fingerprint",
            format!("no key {fingerprint} is registered"),
        ))
    };
    let record =
        Projection::new(reader.store().as_ref()).key(fingerprint)?.ok_or_else(not_found)?;
    let size = reader.head().size;
    let key = record.as_of(size).ok_or_else(not_found)?;
    let confirmed = key.confirmed().ok_or_else(|| {
        LookupError::Precondition(FieldError::new(
            "fingerprint",
            "the key is not confirmed, so there is no receipt",
        ))
    })?;
    receipt(reader, record.registered_at(), confirmed.position)
}
