//! The projections held in plain maps: the reference every persistent projection must equal.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use smallvec::SmallVec;

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
    pub index: HashMap<(IdentifierKind, String), Members>,
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

/// The keys under one identifier, in fingerprint order, each with the position that added it.
/// Nearly every identifier names one key, so the first lives inline: a `BTreeMap` here cost a
/// node of some 400 bytes per identifier, half of a full rebuild's memory at a million keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members(SmallVec<[(String, u64); 1]>);

impl Members {
    /// Adds `fingerprint` at `position`, unless it is a member already: the first addition
    /// stays, as the index keeps the position a key joined.
    pub fn add(&mut self, fingerprint: &str, position: u64) {
        if let Err(at) = self.0.binary_search_by(|(member, _)| member.as_str().cmp(fingerprint)) {
            self.0.insert(at, (fingerprint.to_string(), position));
        }
    }

    /// How many keys the identifier names.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it names none (an identifier is only indexed with a first member).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The members and their positions, in fingerprint order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(member, position)| (member.as_str(), *position))
    }
}

impl IntoIterator for Members {
    type Item = (String, u64);
    type IntoIter = smallvec::IntoIter<[(String, u64); 1]>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl State for MemoryState {
    type Error = std::convert::Infallible;
    fn key(&self, fingerprint: &str) -> Result<Option<Arc<KeyRecord>>, Self::Error> {
        Ok(self.keys.get(fingerprint).cloned())
    }
    fn indexed(&self, kind: IdentifierKind, value: &str) -> Result<IndexGroup, Self::Error> {
        Ok(self.index.get(&(kind, value.to_string())).map_or_else(
            || Arc::new([]) as IndexGroup,
            |m| m.iter().filter_map(|(k, v)| Some((super::fingerprint_bytes(k)?, v))).collect(),
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
        // A key's later records replace its first in place: no new copy of the fingerprint.
        match self.keys.get_mut(record.fingerprint()) {
            Some(slot) => *slot = Arc::new(record),
            None => {
                self.keys.insert(record.fingerprint().to_string(), Arc::new(record));
            }
        }
        Ok(())
    }
    fn add_to_index(
        &mut self,
        kind: IdentifierKind,
        value: &str,
        fingerprint: &str,
        position: u64,
    ) -> Result<(), Self::Error> {
        self.index.entry((kind, value.to_string())).or_default().add(fingerprint, position);
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

#[cfg(test)]
mod tests {
    use super::Members;

    #[test]
    fn an_identifiers_members_stay_in_fingerprint_order_with_the_position_they_joined_at() {
        let mut members = Members::default();
        for (fingerprint, position) in [("cc", 3), ("aa", 5), ("cc", 9), ("bb", 7), ("aa", 1)] {
            members.add(fingerprint, position);
        }
        let listed: Vec<_> = members.iter().collect();
        assert_eq!(listed, [("aa", 5), ("bb", 7), ("cc", 3)]);
        let owned: Vec<_> = members.into_iter().collect();
        assert_eq!(owned[0], ("aa".to_string(), 5));
    }
}
