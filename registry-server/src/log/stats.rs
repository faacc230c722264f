//! The writer's counters and histograms, shared with benchmarks and metrics.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the writer's group commits, for benchmarks and metrics. The histograms are the
/// Prometheus client's own (atomic, cheap to clone); [`crate::telemetry`] registers them.
#[derive(Debug)]
pub struct WriterStats {
    batches: AtomicU64,
    entries: AtomicU64,
    largest: AtomicU64,
    /// Entries per group commit.
    pub group_commit_entries: prometheus_client::metrics::histogram::Histogram,
    /// Seconds each sync (fsync) of a group took.
    pub sync_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Default for WriterStats {
    fn default() -> Self {
        use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
        Self {
            batches: AtomicU64::default(),
            entries: AtomicU64::default(),
            largest: AtomicU64::default(),
            // 1, 2, 4, ... 2048 entries (max_batch is 1024 by default).
            group_commit_entries: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            // 50 µs to about 1.6 s.
            sync_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
        }
    }
}

/// A snapshot of [`WriterStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStatsSnapshot {
    /// Group commits that wrote at least one entry.
    pub batches: u64,
    /// Entries written.
    pub entries: u64,
    /// Most entries in one group commit.
    pub largest: u64,
}

impl WriterStats {
    pub(super) fn record(&self, entries: usize) {
        self.group_commit_entries.observe(entries as f64);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.entries.fetch_add(entries as u64, Ordering::Relaxed);
        self.largest.fetch_max(entries as u64, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> WriterStatsSnapshot {
        WriterStatsSnapshot {
            batches: self.batches.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
            largest: self.largest.load(Ordering::Relaxed),
        }
    }
}
