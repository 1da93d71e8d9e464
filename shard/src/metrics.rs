//! What a shard node counts as it works; the types and the endpoint are
//! [`tessera_model::metrics`]'s.

use std::sync::Arc;
use tessera_model::metrics::{Counter, Histogram};
use tessera_storage::group::GroupCommitMetrics;

/// What a shard node counts as it works (gauges are read at scrape time).
#[derive(Default)]
pub struct ShardMetrics {
    pub one_phase_commits: Counter,
    pub two_phase_commits: Counter,
    pub prepares: Counter,
    pub aborts: Counter,
    /// Lock requests that had to wait for another transaction.
    pub lock_waits: Counter,
    pub lock_wait_seconds: Histogram,
    /// Transactions aborted by an older one that needed their lock
    /// (wound-wait), and lock waits that reached the lock timeout.
    pub wounds: Counter,
    pub conflicts_timeout: Counter,
    /// Snapshot reads that waited for a prepared or committing
    /// transaction's writes.
    pub intent_waits: Counter,
    /// Row versions garbage-collected, and their bytes (keys and values).
    pub gc_versions: Counter,
    pub gc_bytes: Counter,
    /// Time from COMMIT's arrival to its durable apply, by kind.
    pub one_phase_commit_seconds: Histogram,
    pub two_phase_commit_seconds: Histogram,
    pub prepare_seconds: Histogram,
    /// Group commit's batch sizes and write times.
    pub group_commit: Arc<GroupCommitMetrics>,
}

impl ShardMetrics {
    pub fn new() -> ShardMetrics {
        ShardMetrics::default()
    }
}
