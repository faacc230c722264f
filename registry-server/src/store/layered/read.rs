//! Reading across the layers: a read looks in the active layer, then the frozen one, then the
//! base snapshot, and a scan merges all three by key, the newest version of each key winning
//! (a tombstone hides the older ones).

use std::ops::Bound;

use super::{Layer, Layers};

/// Sorted sources merged by key; on equal keys the earlier source wins and the others skip it.
pub(super) struct Merged<'a> {
    sources: Vec<std::iter::Peekable<Source<'a>>>,
}

pub(super) type Source<'a> = Box<dyn Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a>;

impl<'a> Merged<'a> {
    pub(super) fn new(sources: Vec<Source<'a>>) -> Self {
        Self { sources: sources.into_iter().map(Iterator::peekable).collect() }
    }
}

impl<'a> Iterator for Merged<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        let mut best: Option<(usize, &'a [u8])> = None;
        for (i, s) in self.sources.iter_mut().enumerate() {
            if let Some((k, _)) = s.peek()
                && best.is_none_or(|(_, b)| *k < b)
            {
                best = Some((i, k));
            }
        }
        let (winner, key) = best?;
        let item = self.sources[winner].next();
        for s in self.sources.iter_mut().skip(winner + 1) {
            if s.peek().is_some_and(|(k, _)| *k == key) {
                s.next();
            }
        }
        item
    }
}

impl Layers {
    /// The merged records from `from` (inclusive or not) while `keep` holds, at most `limit`.
    pub(super) fn range<'a>(
        &'a self,
        from: Bound<&'a [u8]>,
        keep: impl Fn(&[u8]) -> bool,
        limit: usize,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.merged(from)
            .take_while(|(k, _)| keep(k))
            .filter_map(|(k, v)| v.map(|v| (k.to_vec(), v.to_vec())))
            .take(limit)
            .collect()
    }

    /// Every layer from `from` on, merged: the newest version of each key, tombstones included.
    pub(super) fn merged<'a>(&'a self, from: Bound<&'a [u8]>) -> Merged<'a> {
        fn layer<'a>(l: &'a Layer, from: Bound<&'a [u8]>) -> Source<'a> {
            Box::new(
                l.range::<[u8], _>((from, Bound::Unbounded)).map(|(k, v)| (&k[..], v.as_deref())),
            )
        }
        let base: Source<'a> = {
            let (start, skip_equal) = match from {
                Bound::Included(k) => (k, None),
                Bound::Excluded(k) => (k, Some(k)),
                Bound::Unbounded => (&b""[..], None),
            };
            Box::new(
                self.base
                    .iter_from(start)
                    .filter(move |(k, _)| Some(*k) != skip_equal)
                    .map(|(k, v)| (k, Some(v))),
            )
        };
        let mut sources = vec![layer(&self.active, from)];
        if let Some(f) = &self.frozen {
            sources.push(layer(f, from));
        }
        sources.push(base);
        Merged::new(sources)
    }

    pub(super) fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(v) = self.active.get(key) {
            return v.clone();
        }
        if let Some(v) = self.frozen.as_ref().and_then(|f| f.get(key)) {
            return v.clone();
        }
        self.base.get(key).map(<[u8]>::to_vec)
    }
}
