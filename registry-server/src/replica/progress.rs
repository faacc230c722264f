//! The primary's side of semi-synchronous replication: how far each replica says it has
//! copied, and the wait that holds a command's answer until enough of them hold its entries.
//!
//! A report counts only after the primary checked that the replica's root at its size is its
//! own (the gRPC layer does, with the log's proofs), so a replica of another log, or of an
//! older fork, never lets a write be acknowledged. The size `required` replicas hold only ever
//! grows: once that many held an entry durably, that stays true.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

/// Replicas remembered at most (the oldest report is forgotten first).
const MOST_REPLICAS: usize = 1024;

/// A command's entries are durable on the primary but not yet on enough replicas.
#[derive(Debug, thiserror::Error)]
#[error(
    "the command is durable on the primary (up to entry {}) but fewer than {required} replicas \
     confirmed holding it within {timeout:?}; retrying with the same request ID is safe",
    size - 1
)]
pub struct NotReplicated {
    /// The log size that had to be replicated.
    pub size: u64,
    /// Replicas required.
    pub required: usize,
    /// How long the answer waited.
    pub timeout: Duration,
}

/// See the module documentation.
pub struct Progress {
    required: usize,
    timeout: Duration,
    reports: Mutex<HashMap<String, (u64, std::time::Instant)>>,
    synced: watch::Sender<u64>,
}

impl Progress {
    /// Acknowledges commands once `required` replicas hold them, waiting at most `timeout`.
    pub fn new(required: usize, timeout: Duration) -> Self {
        Self { required, timeout, reports: Mutex::default(), synced: watch::Sender::new(0) }
    }

    /// Records that `replica` holds `size` entries (whose root the caller checked).
    pub fn report(&self, replica: &str, size: u64) {
        let mut reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let held = reports.entry(replica.to_string()).or_insert((0, now));
        *held = (held.0.max(size), now);
        if reports.len() > MOST_REPLICAS
            && let Some(oldest) =
                reports.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| k.clone())
        {
            reports.remove(&oldest);
        }
        let mut sizes: Vec<u64> = reports.values().map(|(s, _)| *s).collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(&held_by_enough) = sizes.get(self.required.saturating_sub(1)) {
            self.synced.send_if_modified(|s| {
                let grows = held_by_enough > *s;
                *s = (*s).max(held_by_enough);
                grows
            });
        }
    }

    /// The log size at least `required` replicas hold.
    pub fn synced(&self) -> u64 {
        *self.synced.borrow()
    }

    /// Waits until `required` replicas hold the first `size` entries.
    pub async fn wait(&self, size: u64) -> Result<(), NotReplicated> {
        if self.required == 0 {
            return Ok(());
        }
        let mut synced = self.synced.subscribe();
        let reached = tokio::time::timeout(self.timeout, synced.wait_for(|s| *s >= size)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(NotReplicated { size, required: self.required, timeout: self.timeout }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_is_acknowledged_once_the_required_number_of_replicas_hold_it() {
        let progress = Progress::new(2, Duration::from_millis(200));
        progress.report("a", 10);
        assert_eq!(progress.synced(), 0, "one replica is not two");
        assert!(progress.wait(5).await.is_err());
        progress.report("a", 12);
        progress.report("b", 7);
        assert_eq!(progress.synced(), 7, "the second-furthest replica decides");
        progress.wait(7).await.expect("both hold 7 entries");
        let waiting = progress.wait(11);
        progress.report("b", 11);
        waiting.await.expect("released once b reports 11");
    }

    #[tokio::test]
    async fn a_replica_reporting_twice_counts_once_and_never_takes_back_what_was_held() {
        let progress = Progress::new(2, Duration::from_millis(50));
        progress.report("a", 10);
        progress.report("a", 20);
        assert_eq!(progress.synced(), 0);
        progress.report("b", 15);
        progress.report("b", 3);
        assert_eq!(progress.synced(), 15, "a stale, smaller report does not lower it");
    }
}
