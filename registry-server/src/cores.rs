//! Long single passes spread over every core: one scoped thread per core, each taking a run
//! of the items, results in the items' order. For the passes over gigabytes that a start, a
//! snapshot or a rebuild makes (hashing, layout checks, encoding), where nothing else competes
//! for the cores; lookups have their own spreading, which shares the cores between concurrent
//! calls (`lookup::on_every_core`).

/// The threads [`map_in_order`] uses: one per core, at most 8.
pub fn count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8)
}

/// `one` of every item, in order, each of [`count`] threads taking a run of the items.
pub fn map_in_order<I: Sync, T: Send>(items: &[I], one: impl Fn(&I) -> T + Sync) -> Vec<T> {
    let per = items.len().div_ceil(count()).max(1);
    let one = &one;
    std::thread::scope(|s| {
        let runs: Vec<_> = items
            .chunks(per)
            .map(|run| s.spawn(move || run.iter().map(one).collect::<Vec<_>>()))
            .collect();
        runs.into_iter()
            .flat_map(|r| r.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_come_back_in_the_items_order() {
        let items: Vec<u32> = (0..1_001).collect();
        let squares = super::map_in_order(&items, |n| n * n);
        assert_eq!(squares, items.iter().map(|n| n * n).collect::<Vec<_>>());
        assert!(super::map_in_order(&[] as &[u32], |n| *n).is_empty());
    }
}
