//! What the key cache's fill read, packed into a few large arrays: the key records and the
//! index groups of a registry as it was at start, read-only from then on.
//!
//! A hash map per record costs its slot at whatever load its power-of-two size left it (a
//! million entries land at 48 %), and an index group in a map is three heap blocks: the
//! prefix, the members and the map's slot. Here a record costs its fingerprint's 32 bytes, a
//! pointer and a 4-byte slot in a table of positions; a group its prefix bytes in one arena,
//! its members in two others, two 4-byte ends and a slot. A member names its key by the
//! record's number (4 bytes, not the fingerprint's 32): the keys are all in before the first
//! group, and the few members without a record (which a complete store does not have) keep
//! their fingerprint aside. Lookups hash once and compare bytes in place, as the maps did.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use registry_core::lifecycle::{IndexGroup, KeyRecord};

use super::{Hasher, KeyId};
use crate::store::StoreError;

/// See the module documentation.
#[derive(Default)]
pub struct Packed {
    hasher: Hasher,
    ids: Vec<KeyId>,
    records: Vec<Arc<KeyRecord>>,
    /// Positions in `ids` / `records`, found by the hash of the id.
    keys: HashTable<u32>,
    /// Every group's prefix, one after another; group `g`'s ends at `prefix_ends[g]`.
    prefixes: Vec<u8>,
    prefix_ends: Vec<u32>,
    /// Every group's members, in fingerprint order, as the number of their key (see
    /// [`Packed::member`]) and the position they were indexed at; group `g`'s end at
    /// `member_ends[g]`.
    member_keys: Vec<u32>,
    member_positions: Vec<u64>,
    member_ends: Vec<u32>,
    /// Fingerprints of members that have no record, numbered after the records.
    orphans: Vec<KeyId>,
    /// Group numbers, found by the hash of the prefix.
    groups: HashTable<u32>,
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packed")
            .field("records", &self.records.len())
            .field("groups", &self.prefix_ends.len())
            .finish()
    }
}

fn too_many(what: &str) -> StoreError {
    StoreError::Io(format!("more {what} than the key cache can index (4 billion)"))
}

fn at(n: usize, what: &str) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| too_many(what))
}

impl Packed {
    /// Adds a key record (ids are unique: the store holds one record per fingerprint). Every
    /// record comes before the first group, which numbers its members by record.
    pub fn push_key(&mut self, id: KeyId, record: KeyRecord) -> Result<(), StoreError> {
        if !self.member_ends.is_empty() {
            return Err(StoreError::Io("the key cache took a key record after a group".into()));
        }
        let n = at(self.ids.len(), "key records")?;
        self.ids.push(id);
        self.records.push(Arc::new(record.pooled()));
        let hasher = &self.hasher;
        let hash = hasher.hash_one(id);
        let ids = &self.ids;
        self.keys.insert_unique(hash, n, |&i| hasher.hash_one(ids[i as usize]));
        Ok(())
    }

    /// Adds an index group (prefixes are unique: the store's walk yields each once).
    pub fn push_group(
        &mut self,
        prefix: &[u8],
        mut members: Vec<([u8; 32], u64)>,
    ) -> Result<(), StoreError> {
        let g = at(self.prefix_ends.len(), "index groups")?;
        members.sort_unstable();
        self.prefixes.extend_from_slice(prefix);
        self.prefix_ends.push(at(self.prefixes.len(), "bytes of index prefixes")?);
        for (id, position) in members {
            let number = match self.number(&id) {
                Some(n) => n,
                None => {
                    self.orphans.push(id);
                    at(self.ids.len() + self.orphans.len() - 1, "index members")?
                }
            };
            self.member_keys.push(number);
            self.member_positions.push(position);
        }
        self.member_ends.push(at(self.member_keys.len(), "index members")?);
        let hash = self.hasher.hash_one(prefix);
        // Growing the table re-hashes the prefixes, which it reads from the arenas.
        let mut groups = std::mem::take(&mut self.groups);
        groups.insert_unique(hash, g, |&g| self.hasher.hash_one(packed_prefix(self, g)));
        self.groups = groups;
        Ok(())
    }

    /// Gives the arrays back what they over-allocated while growing.
    pub fn shrink(&mut self) {
        self.ids.shrink_to_fit();
        self.records.shrink_to_fit();
        self.prefixes.shrink_to_fit();
        self.prefix_ends.shrink_to_fit();
        self.member_keys.shrink_to_fit();
        self.member_positions.shrink_to_fit();
        self.member_ends.shrink_to_fit();
        self.orphans.shrink_to_fit();
    }

    /// The number of the record with this id.
    fn number(&self, id: &KeyId) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        self.keys.find(hash, |&i| self.ids[i as usize] == *id).copied()
    }

    /// The fingerprint a member number stands for: a record's, or an orphan's after them.
    fn member(&self, number: u32) -> KeyId {
        let n = number as usize;
        match self.ids.get(n) {
            Some(id) => *id,
            None => self.orphans[n - self.ids.len()],
        }
    }

    /// The key record with this id.
    pub fn key(&self, id: &KeyId) -> Option<&Arc<KeyRecord>> {
        Some(&self.records[self.number(id)? as usize])
    }

    /// The index group with this prefix.
    pub fn group(&self, prefix: &[u8]) -> Option<IndexGroup> {
        let (start, end) = self.members(prefix)?;
        let keys = self.member_keys[start..end].iter().map(|&k| self.member(k));
        Some(keys.zip(self.member_positions[start..end].iter().copied()).collect())
    }

    /// The records of the group with this prefix, with the positions that indexed them, in
    /// fingerprint order: `newer` first (the writer's version, if any), else the record the
    /// member's number names. Members without a record are left out; no group, no members.
    pub fn group_keys(
        &self,
        prefix: &[u8],
        newer: impl Fn(&KeyId) -> Option<Arc<KeyRecord>>,
    ) -> Vec<(u64, Arc<KeyRecord>)> {
        let Some((start, end)) = self.members(prefix) else { return Vec::new() };
        let members = self.member_keys[start..end].iter().zip(&self.member_positions[start..end]);
        members
            .filter_map(|(&number, &position)| {
                let record = newer(&self.member(number))
                    .or_else(|| self.records.get(number as usize).cloned())?;
                Some((position, record))
            })
            .collect()
    }

    /// Where the members of the group with this prefix lie in the member arrays.
    fn members(&self, prefix: &[u8]) -> Option<(usize, usize)> {
        let hash = self.hasher.hash_one(prefix);
        let g = *self.groups.find(hash, |&g| packed_prefix(self, g) == prefix)? as usize;
        let start = if g == 0 { 0 } else { self.member_ends[g - 1] as usize };
        Some((start, self.member_ends[g] as usize))
    }

    /// Whether a record with this id is here.
    pub fn has_key(&self, id: &KeyId) -> bool {
        self.key(id).is_some()
    }

    /// Whether a group with this prefix is here.
    pub fn has_group(&self, prefix: &[u8]) -> bool {
        let hash = self.hasher.hash_one(prefix);
        self.groups.find(hash, |&g| packed_prefix(self, g) == prefix).is_some()
    }

    /// Key records held.
    pub fn keys_len(&self) -> usize {
        self.records.len()
    }

    /// Index groups held.
    pub fn groups_len(&self) -> usize {
        self.prefix_ends.len()
    }
}

/// Group `g`'s prefix.
fn packed_prefix(p: &Packed, g: u32) -> &[u8] {
    let start = match g {
        0 => 0,
        g => p.prefix_ends[g as usize - 1] as usize,
    };
    &p.prefixes[start..p.prefix_ends[g as usize] as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> KeyId {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&n.to_be_bytes());
        id[31] = 0xee;
        id
    }

    #[test]
    fn every_group_and_only_those_are_found_after_the_table_grew() {
        let mut p = Packed::default();
        for g in 0..5_000u32 {
            let members: Vec<_> = (0..(g % 3 + 1)).rev().map(|m| (id(m), u64::from(g))).collect();
            p.push_group(format!("E\0DE*ABC*E{g}").as_bytes(), members).unwrap();
        }
        p.shrink();
        assert_eq!(p.groups_len(), 5_000);
        for g in [0u32, 1, 2, 1_234, 4_999] {
            let found = p.group(format!("E\0DE*ABC*E{g}").as_bytes()).unwrap();
            let want: Vec<_> = (0..(g % 3 + 1)).map(|m| (id(m), u64::from(g))).collect();
            assert_eq!(&found[..], &want[..], "group {g}, members in fingerprint order");
        }
        assert!(p.group(b"E\0DE*ABC*E5000").is_none());
        assert!(p.group(b"E\0DE*ABC*E1").is_some_and(|g| g.len() == 2));
        assert!(!p.has_group(b"E\0DE*ABC*E"), "a prefix of a prefix is not a group");
    }

    #[test]
    fn members_with_and_without_a_record_come_back_as_their_fingerprints() {
        let record = |n: u32| crate::key_cache::tests::record(&hex::encode(id(n)), 1);
        let mut p = Packed::default();
        for n in [1u32, 3] {
            p.push_key(id(n), record(n)).unwrap();
        }
        // Members 2 and 4 have no record (a store the cache never sees whole, or a bug).
        let members = vec![(id(4), 40), (id(3), 30), (id(2), 20), (id(1), 10)];
        p.push_group(b"E\0DE*ABC*E1\0", members).unwrap();
        p.push_group(b"M\0S1\0", vec![(id(2), 21)]).unwrap();
        p.shrink();
        let found = p.group(b"E\0DE*ABC*E1\0").unwrap();
        assert_eq!(&found[..], &[(id(1), 10), (id(2), 20), (id(3), 30), (id(4), 40)]);
        assert_eq!(&p.group(b"M\0S1\0").unwrap()[..], &[(id(2), 21)]);
        assert_eq!(p.key(&id(3)).unwrap().fingerprint(), hex::encode(id(3)));
        assert!(p.key(&id(2)).is_none(), "an orphan member is not a key record");
        let late = p.push_key(id(5), record(5));
        assert!(late.is_err(), "a record after the groups would renumber the orphans");
    }
}
