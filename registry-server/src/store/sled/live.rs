//! What `registry-server usage` reports of the sled store: the live bytes of every kind of
//! record, by a walk over the whole tree and the group file.

use registry_core::merkle::Hash;

use super::sealed::Group;
use super::{ENTRY, META, REQUEST, SEALED, SledStore, decode_record};
use crate::store::StoreError;

/// Live bytes of one kind of record (keys and values as sled holds them), for
/// `registry-server usage`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveBytes {
    /// What the records are.
    pub kind: &'static str,
    /// How many.
    pub records: u64,
    /// Their keys' bytes.
    pub key_bytes: u64,
    /// Their values' bytes.
    pub value_bytes: u64,
}

impl SledStore {
    /// The live bytes of every kind of record, by a walk over the whole tree (the server must
    /// be stopped or idle: it reads every record once). An entry's record counts as the entry
    /// (its key, the entry bytes) and the Merkle nodes stored with it.
    pub fn live_bytes(&self) -> Result<Vec<LiveBytes>, StoreError> {
        let kinds = [
            "entries",
            "Merkle nodes",
            "request index (older layout)",
            "meta",
            "projections (old)",
            "entries, sealed (zstd)",
            "entries, sealed (zstd, in sealed.groups)",
        ];
        let mut out: Vec<LiveBytes> =
            kinds.iter().map(|kind| LiveBytes { kind, ..LiveBytes::default() }).collect();
        // Counts one entry's stored nodes; returns their bytes.
        let count_nodes = |out: &mut [LiveBytes], nodes: &[(u32, Hash)]| {
            let bytes = 1 + 33 * nodes.len() as u64;
            out[1].records += nodes.len() as u64;
            out[1].value_bytes += bytes;
            bytes
        };
        // Counts a sealed group's entries in `slot` and its nodes apart.
        let count_group = |out: &mut [LiveBytes], slot: usize, bytes: &[u8]| {
            let group = Group::parse(bytes)?;
            let mut node_bytes = 0;
            for i in 0..group.count() {
                node_bytes += count_nodes(out, &group.nodes(i).unwrap_or_default());
            }
            out[slot].records += group.count() as u64;
            out[slot].value_bytes += bytes.len() as u64 - node_bytes;
            Ok::<_, StoreError>(())
        };
        for item in self.tree.iter() {
            let (k, v) = item?;
            let (key, value) = (k.len() as u64, v.len() as u64);
            let slot = match k.first() {
                Some(&ENTRY) => {
                    let (nodes, entry) = decode_record(&v)?;
                    count_nodes(&mut out, &nodes);
                    out[0].records += 1;
                    out[0].key_bytes += key;
                    out[0].value_bytes += entry.len() as u64;
                    continue;
                }
                Some(&SEALED) => {
                    count_group(&mut out, 5, &v)?;
                    out[5].key_bytes += key;
                    continue;
                }
                Some(&REQUEST) => 2,
                Some(&META) => 3,
                _ => 4,
            };
            out[slot].records += 1;
            out[slot].key_bytes += key;
            out[slot].value_bytes += value;
        }
        for g in 0..self.groups.count() {
            let Some(bytes) = self.groups.read(g)? else { break };
            count_group(&mut out, 6, &bytes)?;
        }
        Ok(out)
    }
}
