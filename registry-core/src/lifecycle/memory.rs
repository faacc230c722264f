//! The projections held in plain maps: the reference every persistent projection must equal.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::event::{Identifier, IdentifierKind};
use crate::ids::OperatorId;

use super::record::{KeyRecord, OperatorRecord, SignerRecord};
use super::state::{IndexGroup, State, StateMut};

/// The projections in memory: for tests, for offline verification, for the server's full
/// rebuild, and as the reference the persistent projection must equal. Hash maps where only
/// lookups matter: a full audit replays millions of entries through these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryState {
    /// Key records by fingerprint, shared with the lookups that read them (a replay reads a
    /// key's record before each change to it).
    pub keys: HashMap<String, Arc<KeyRecord>>,
    /// Index entries: (kind, value) → fingerprint → position added.
    pub index: HashMap<(IdentifierKind, String), BTreeMap<String, u64>>,
    /// Operators.
    pub operators: BTreeMap<OperatorId, OperatorRecord>,
    /// Signers.
    pub signers: BTreeMap<[u8; 32], SignerRecord>,
    /// Active admins, in the order added; `None` until an admin event set them (the store
    /// then has no admins record either).
    pub admins: Option<Vec<[u8; 32]>>,
    /// Latest position per identifier.
    pub latest: HashMap<Identifier, u64>,
    /// Keys awaiting confirmation.
    pub pending: BTreeMap<String, u64>,
}

impl State for MemoryState {
    type Error = std::convert::Infallible;
    fn key(&self, fingerprint: &str) -> Result<Option<Arc<KeyRecord>>, Self::Error> {
        Ok(self.keys.get(fingerprint).cloned())
    }
    fn indexed(&self, kind: IdentifierKind, value: &str) -> Result<IndexGroup, Self::Error> {
        Ok(self.index.get(&(kind, value.to_string())).map_or_else(
            || Arc::new([]) as IndexGroup,
            |m| m.iter().filter_map(|(k, v)| Some((super::fingerprint_bytes(k)?, *v))).collect(),
        ))
    }
    fn operator(&self, id: &OperatorId) -> Result<Option<OperatorRecord>, Self::Error> {
        Ok(self.operators.get(id).cloned())
    }
    fn signer(&self, key_id: &[u8; 32]) -> Result<Option<SignerRecord>, Self::Error> {
        Ok(self.signers.get(key_id).cloned())
    }
    fn admins(&self) -> Result<Vec<[u8; 32]>, Self::Error> {
        Ok(self.admins.clone().unwrap_or_default())
    }
    fn latest(&self, id: &Identifier) -> Result<Option<u64>, Self::Error> {
        Ok(self.latest.get(id).copied())
    }
}

impl StateMut for MemoryState {
    fn put_key(&mut self, record: KeyRecord) -> Result<(), Self::Error> {
        self.keys.insert(record.fingerprint().to_string(), Arc::new(record));
        Ok(())
    }
    fn add_to_index(
        &mut self,
        kind: IdentifierKind,
        value: &str,
        fingerprint: &str,
        position: u64,
    ) -> Result<(), Self::Error> {
        self.index
            .entry((kind, value.to_string()))
            .or_default()
            .entry(fingerprint.to_string())
            .or_insert(position);
        Ok(())
    }
    fn put_operator(&mut self, record: &OperatorRecord) -> Result<(), Self::Error> {
        self.operators.insert(record.operator_id, record.clone());
        Ok(())
    }
    fn put_signer(&mut self, record: &SignerRecord) -> Result<(), Self::Error> {
        self.signers.insert(record.key_id, record.clone());
        Ok(())
    }
    fn set_admins(&mut self, admins: &[[u8; 32]]) -> Result<(), Self::Error> {
        self.admins = Some(admins.to_vec());
        Ok(())
    }
    fn set_latest(&mut self, id: &Identifier, position: u64) -> Result<(), Self::Error> {
        self.latest.insert(id.clone(), position);
        Ok(())
    }
    fn set_pending(
        &mut self,
        fingerprint: &str,
        registration: Option<u64>,
    ) -> Result<(), Self::Error> {
        match registration {
            Some(p) => self.pending.insert(fingerprint.to_string(), p),
            None => self.pending.remove(fingerprint),
        };
        Ok(())
    }
}
