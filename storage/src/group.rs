//! Group commit: synced batches from concurrent transactions are merged into
//! one write and one WAL fsync.
//!
//! A writer task takes the first queued batch, then, when other transactions
//! are in flight, waits up to `window` for more (the idea of PostgreSQL's
//! `commit_delay`), merges them into a single atomic batch, syncs once and
//! answers every caller. With one transaction in flight it syncs at once, so
//! a lone client pays no delay.

use super::{Engine, StorageError, Write};
use std::sync::Arc;
use std::time::Duration;
use tessera_model::metrics::Histogram;
use tokio::sync::{mpsc, oneshot};

/// Largest number of batches merged into one write.
const MAX_GROUP: usize = 256;

type Reply = oneshot::Sender<Result<(), StorageError>>;

/// What group commit measures.
#[derive(Debug)]
pub struct GroupCommitMetrics {
    /// Synced writes merged into one WAL fsync.
    pub batch: Histogram,
    /// One group write with its fsync.
    pub write_seconds: Histogram,
}

impl Default for GroupCommitMetrics {
    fn default() -> GroupCommitMetrics {
        GroupCommitMetrics { batch: Histogram::sizes(), write_seconds: Histogram::latency() }
    }
}

pub struct GroupCommit {
    queue: mpsc::UnboundedSender<(Vec<Write>, Reply)>,
}

impl GroupCommit {
    /// Starts the writer. `in_flight` says how many transactions may still
    /// bring writes; the window is only waited when it is above one.
    pub fn start(engine: Arc<dyn Engine>, window: Duration, in_flight: Arc<dyn Fn() -> usize + Send + Sync>, metrics: Arc<GroupCommitMetrics>) -> GroupCommit {
        let (queue, requests) = mpsc::unbounded_channel();
        tokio::spawn(writer(engine, window, in_flight, requests, metrics));
        GroupCommit { queue }
    }

    /// Applies `writes` atomically and durably, possibly with others.
    pub async fn apply(&self, writes: Vec<Write>) -> Result<(), StorageError> {
        let (reply, wait) = oneshot::channel();
        self.queue.send((writes, reply)).map_err(|_| StorageError::other("the commit writer stopped"))?;
        wait.await.map_err(|_| StorageError::other("the commit writer stopped"))?
    }
}

/// Gathers one group for a shared fsync: `first`, everything already
/// queued, then, while `in_flight()` says more callers may come, whatever
/// arrives within `window` (at most `max` in all).
pub async fn gather<T>(
    first: T,
    queue: &mut mpsc::UnboundedReceiver<T>,
    window: Duration,
    in_flight: &(dyn Fn() -> usize + Send + Sync),
    max: usize,
) -> Vec<T> {
    let mut group = vec![first];
    while group.len() < max {
        match queue.try_recv() {
            Ok(more) => group.push(more),
            Err(_) => break,
        }
    }
    if window.is_zero() {
        return group;
    }
    let deadline = tokio::time::Instant::now() + window;
    while group.len() < max && group.len() < in_flight() {
        match tokio::time::timeout_at(deadline, queue.recv()).await {
            Ok(Some(more)) => group.push(more),
            _ => break,
        }
    }
    group
}

async fn writer(
    engine: Arc<dyn Engine>,
    window: Duration,
    in_flight: Arc<dyn Fn() -> usize + Send + Sync>,
    mut requests: mpsc::UnboundedReceiver<(Vec<Write>, Reply)>,
    metrics: Arc<GroupCommitMetrics>,
) {
    while let Some(first) = requests.recv().await {
        let group = gather(first, &mut requests, window, in_flight.as_ref(), MAX_GROUP).await;
        metrics.batch.observe(group.len() as f64);
        let (writes, replies): (Vec<Vec<Write>>, Vec<Reply>) = group.into_iter().unzip();
        let merged: Vec<Write> = writes.into_iter().flatten().collect();
        let engine = engine.clone();
        let started = std::time::Instant::now();
        let outcome = tokio::task::spawn_blocking(move || engine.apply(merged, true))
            .await
            .unwrap_or_else(|e| Err(StorageError::other(format!("commit task failed: {e}"))));
        metrics.write_seconds.observe_duration(started.elapsed());
        for reply in replies {
            let _ = reply.send(outcome.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryEngine;
    use crate::Space;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_a_sync_and_each_is_applied() {
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::default());
        let group = Arc::new(GroupCommit::start(engine.clone(), Duration::from_millis(20), Arc::new(|| 50), Arc::default()));
        let commits: Vec<_> = (0..50u8)
            .map(|i| {
                let group = group.clone();
                tokio::spawn(async move { group.apply(vec![Write { space: Space::Data, key: vec![i], value: Some(vec![i]) }]).await })
            })
            .collect();
        for c in futures_join(commits.into_iter()).await {
            c.unwrap();
        }
        for i in 0..50u8 {
            assert_eq!(engine.get(Space::Data, &[i]).unwrap(), Some(vec![i]));
        }
        assert!(engine.syncs() < 50, "{} syncs for 50 commits", engine.syncs());
    }

    #[tokio::test]
    async fn a_lone_commit_does_not_wait_for_the_window() {
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::default());
        let group = GroupCommit::start(engine, Duration::from_secs(30), Arc::new(|| 1), Arc::default());
        let started = std::time::Instant::now();
        group.apply(vec![Write { space: Space::Data, key: vec![1], value: Some(vec![1]) }]).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    async fn futures_join<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}
