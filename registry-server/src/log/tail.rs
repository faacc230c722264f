//! The durable tail of the log in memory: the last few thousand entries and the Merkle nodes
//! their appends completed.
//!
//! Almost every read the write path causes is of the newest entries: a registration's answer
//! carries its own entry, its confirmation and a receipt whose two inclusion proofs need the
//! low nodes around the end of the tree, which are too many and too rarely shared to sit in the
//! reader's cache of high nodes. Read from the store, those were a fifth of the tokio workers'
//! time under load. The syncer pushes every batch here once it is durable and before it
//! publishes the head, so whatever a reader may ask for below the head is here, or was pushed
//! out, or was written before this start (and is read from the store). Entries and nodes never
//! change once durable, so a copy is always right; the tail is bounded by a count and by bytes,
//! so large entries only shorten it.

use std::collections::VecDeque;
use std::sync::RwLock;

use registry_core::merkle::{Hash, PerfectNode, completing_position};

/// Most entries kept.
const MAX_ENTRIES: usize = 16_384;
/// Most entry bytes kept (16 MiB).
const MAX_BYTES: usize = 16 << 20;

/// One position of the tail: the entry and the nodes (level, hash) its append completed.
struct Slot {
    entry: Vec<u8>,
    nodes: Vec<(u32, Hash)>,
}

#[derive(Default)]
struct Inner {
    /// Position of `slots[0]`.
    first: u64,
    slots: VecDeque<Slot>,
    bytes: usize,
}

/// See the module documentation.
#[derive(Default)]
pub(super) struct Tail(RwLock<Inner>);

/// A batch's entries and nodes, on their way from the writer to the tail.
pub(super) struct TailBatch {
    pub entries: Vec<(u64, Vec<u8>)>,
    pub nodes: Vec<PerfectNode>,
}

impl Tail {
    /// Appends a durable batch. A batch that does not continue the tail (there is none after a
    /// start) starts it afresh.
    pub fn push(&self, batch: TailBatch) {
        let Some(&(start, _)) = batch.entries.first() else { return };
        let contiguous = batch.entries.iter().enumerate().all(|(i, (p, _))| *p == start + i as u64);
        // Only this function writes, and nothing in it panics while the data is half changed
        // (`first` moves with every slot pushed or popped), so even a poisoned lock holds a
        // consistent tail.
        let mut inner = self.0.write().unwrap_or_else(|p| p.into_inner());
        if !contiguous {
            // Not a batch the writer makes; rather than guess, hold nothing.
            *inner = Inner::default();
            return;
        }
        if inner.first + inner.slots.len() as u64 != start {
            *inner = Inner { first: start, ..Inner::default() };
        }
        let base = inner.slots.len();
        for (_, entry) in batch.entries {
            inner.bytes += entry.len();
            inner.slots.push_back(Slot { entry, nodes: Vec::new() });
        }
        for node in batch.nodes {
            let slot = completing_position(node.level, node.index)
                .and_then(|p| p.checked_sub(start))
                .and_then(|offset| inner.slots.get_mut(base + offset as usize));
            if let Some(slot) = slot {
                slot.nodes.push((node.level, node.hash));
            }
        }
        while inner.slots.len() > MAX_ENTRIES || (inner.bytes > MAX_BYTES && inner.slots.len() > 1)
        {
            if let Some(old) = inner.slots.pop_front() {
                inner.first += 1;
                inner.bytes = inner.bytes.saturating_sub(old.entry.len());
            }
        }
    }

    fn with_slot<T>(&self, position: u64, f: impl FnOnce(&Slot) -> Option<T>) -> Option<T> {
        let inner = self.0.read().unwrap_or_else(|p| p.into_inner());
        let offset = position.checked_sub(inner.first)?;
        inner.slots.get(usize::try_from(offset).ok()?).and_then(f)
    }

    /// Whether the tail holds the entry at `position`.
    pub fn holds(&self, position: u64) -> bool {
        self.with_slot(position, |_| Some(())).is_some()
    }

    /// The entry at `position`, if the tail holds it.
    pub fn entry(&self, position: u64) -> Option<Vec<u8>> {
        self.with_slot(position, |s| Some(s.entry.clone()))
    }

    /// The perfect node `(level, index)`, if the tail holds the entry that completed it.
    pub fn node(&self, level: u32, index: u64) -> Option<Hash> {
        let position = completing_position(level, index)?;
        self.with_slot(position, |s| s.nodes.iter().find(|(l, _)| *l == level).map(|(_, h)| *h))
    }
}

#[cfg(test)]
mod tests {
    use registry_core::merkle::{Frontier, leaf_hash};

    use super::*;

    /// Entries `start..end` of a log whose entry `i` is `i` as text, pushed in batches of `batch`.
    fn pushed(tail: &Tail, frontier: &mut Frontier, start: u64, end: u64, batch: u64) {
        let mut p = start;
        while p < end {
            let mut b = TailBatch { entries: Vec::new(), nodes: Vec::new() };
            for q in p..(p + batch).min(end) {
                let entry = q.to_string().into_bytes();
                b.nodes.extend(frontier.push(leaf_hash(&entry)));
                b.entries.push((q, entry));
            }
            p += batch;
            tail.push(b);
        }
    }

    #[test]
    fn the_tail_answers_every_node_its_entries_completed_and_nothing_older() {
        let tail = Tail::default();
        let mut frontier = Frontier::default();
        let mut all = std::collections::HashMap::new();
        let mut reference = Frontier::default();
        for q in 0..(MAX_ENTRIES as u64 + 1000) {
            for n in reference.push(leaf_hash(q.to_string().as_bytes())) {
                all.insert((n.level, n.index), (q, n.hash));
            }
        }
        pushed(&tail, &mut frontier, 0, MAX_ENTRIES as u64 + 1000, 37);
        let first = 1000;
        assert_eq!(tail.entry(first - 1), None, "pushed out");
        assert_eq!(tail.entry(first), Some(first.to_string().into_bytes()));
        let last = MAX_ENTRIES as u64 + 999;
        assert_eq!(tail.entry(last), Some(last.to_string().into_bytes()));
        assert_eq!(tail.entry(last + 1), None);
        for ((level, index), (completed_at, hash)) in all {
            let expected = (completed_at >= first).then_some(hash);
            assert_eq!(tail.node(level, index), expected, "node ({level}, {index})");
        }
    }

    #[test]
    fn a_batch_that_does_not_continue_the_tail_starts_it_afresh() {
        let tail = Tail::default();
        let mut frontier = Frontier::default();
        pushed(&tail, &mut frontier, 0, 10, 4);
        assert!(tail.entry(9).is_some());
        let mut later = Frontier::default();
        pushed(&tail, &mut later, 50, 52, 2);
        assert_eq!(tail.entry(9), None);
        assert_eq!(tail.entry(50), Some(b"50".to_vec()));
    }

    #[test]
    fn a_batch_with_a_gap_inside_leaves_the_tail_empty() {
        let tail = Tail::default();
        let mut frontier = Frontier::default();
        pushed(&tail, &mut frontier, 0, 10, 5);
        let gap = vec![(10, b"10".to_vec()), (12, b"12".to_vec())];
        tail.push(TailBatch { entries: gap, nodes: Vec::new() });
        assert_eq!(tail.entry(9), None);
        assert_eq!(tail.entry(12), None);
    }

    #[test]
    fn large_entries_shorten_the_tail_to_its_byte_budget() {
        let tail = Tail::default();
        let big = vec![7u8; MAX_BYTES / 4 + 1];
        for p in 0..8u64 {
            tail.push(TailBatch { entries: vec![(p, big.clone())], nodes: Vec::new() });
        }
        // Four of them would be over the budget.
        assert_eq!(tail.entry(4), None);
        assert!(tail.entry(5).is_some() && tail.entry(7).is_some());
    }
}
