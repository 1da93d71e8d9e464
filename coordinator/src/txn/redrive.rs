//! Phase two: deliver COMMIT to every participant of a logged decision and
//! keep re-sending, with exponential backoff and jitter, until each one has
//! acknowledged; then forget the record. COMMIT is idempotent on shards, so
//! re-sending is always safe.

use super::log::{CommitRecord, DecisionLog};
use super::manager::{delivering, Registry};
use crate::catalog::ShardGroupId;
use crate::shards::ShardPool;
use crate::sql::abort_everywhere;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tessera_shard::txn::TxnContext;
use tokio::sync::mpsc;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Sends COMMIT to each participant of `record` and ABORT to the read-only
/// groups; hands participants that did not acknowledge to the redrive loop.
pub async fn deliver(
    shards: Arc<ShardPool>,
    log: Arc<DecisionLog>,
    registry: Registry,
    redrive: mpsc::UnboundedSender<CommitRecord>,
    record: CommitRecord,
    readers: Vec<ShardGroupId>,
    ctx: TxnContext,
) {
    let ctx = TxnContext { begin: false, ..ctx };
    let missing = commit_round(&shards, &record, &ctx).await;
    abort_everywhere(&shards, &ctx, readers.into_iter()).await;
    finish(&log, &registry, &redrive, record, missing);
}

fn finish(log: &DecisionLog, registry: &Registry, redrive: &mpsc::UnboundedSender<CommitRecord>, record: CommitRecord, missing: Vec<ShardGroupId>) {
    if missing.is_empty() {
        log.forget(&record.txn_id);
        registry.lock().unwrap().remove(&record.txn_id);
        return;
    }
    let remaining = CommitRecord { participants: missing, ..record };
    let mut info = delivering(&remaining);
    if let Some(old) = registry.lock().unwrap().get(&remaining.txn_id) {
        info.started = old.started;
    }
    registry.lock().unwrap().insert(remaining.txn_id.clone(), info);
    let _ = redrive.send(remaining);
}

/// Sends COMMIT to every participant in parallel; returns those that failed.
async fn commit_round(shards: &ShardPool, record: &CommitRecord, ctx: &TxnContext) -> Vec<ShardGroupId> {
    let sends = record.participants.iter().map(|group| async move {
        let outcome = match shards.get(*group) {
            Ok(client) => client.commit_two_phase(ctx).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &outcome {
            tracing::warn!(txn = %ctx.id, group, error = %e, "COMMIT not acknowledged; will re-send");
        }
        (*group, outcome.is_ok())
    });
    futures::future::join_all(sends).await.into_iter().filter(|(_, ok)| !ok).map(|(g, _)| g).collect()
}

/// The redrive loop: retries undelivered commits until acknowledged.
pub fn spawn(shards: Arc<ShardPool>, log: Arc<DecisionLog>, registry: Registry, address: String) -> mpsc::UnboundedSender<CommitRecord> {
    let (sender, mut incoming) = mpsc::unbounded_channel::<CommitRecord>();
    let requeue = sender.clone();
    tokio::spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        let mut waiting: Vec<CommitRecord> = Vec::new();
        loop {
            if waiting.is_empty() {
                match incoming.recv().await {
                    Some(record) => waiting.push(record),
                    None => return,
                }
                backoff = FIRST_BACKOFF;
            }
            while let Ok(record) = incoming.try_recv() {
                waiting.push(record);
            }
            let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
            tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
            let mut still = Vec::new();
            for record in waiting.drain(..) {
                let ctx = TxnContext { id: record.txn_id.clone(), timestamp: record.timestamp, begin: false, coordinator: address.clone() };
                let missing = commit_round(&shards, &record, &ctx).await;
                if missing.is_empty() {
                    tracing::info!(txn = %record.txn_id, "COMMIT delivered to every participant");
                    log.forget(&record.txn_id);
                    registry.lock().unwrap().remove(&record.txn_id);
                } else {
                    still.push(CommitRecord { participants: missing, ..record });
                }
            }
            waiting = still;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
    requeue
}
