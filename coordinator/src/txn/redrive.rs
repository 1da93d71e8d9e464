//! Phase two: deliver COMMIT to every participant of a logged decision, keep
//! re-sending with exponential backoff and jitter until each one has
//! acknowledged, then make the commits durable and forget the record.
//!
//! Participants apply COMMIT lazily (without an fsync). A decision is
//! forgotten only after a later WAL sync on each of its participants, so
//! until then a participant that crashed and lost its commit still finds its
//! prepared record and the coordinator still answers COMMITTED. One sync per
//! shard every [`SYNC_INTERVAL`] covers every commit delivered in between.
//! COMMIT is idempotent on shards, so re-sending is always safe.

use super::log::{CommitRecord, DecisionLog};
use super::manager::{delivering, Registry};
use crate::catalog::ShardGroupId;
use crate::shards::ShardPool;
use crate::sql::abort_everywhere;
use rand::Rng;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tessera_shard::txn::TxnContext;
use tokio::sync::mpsc;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often delivered commits are made durable on their participants.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// The background tasks of phase two.
#[derive(Clone)]
pub struct PhaseTwo {
    pub redrive: mpsc::UnboundedSender<CommitRecord>,
    pub sync: mpsc::UnboundedSender<CommitRecord>,
}

/// Sends COMMIT to each participant of `record` and ABORT to the read-only
/// groups; hands the record to the sync task, or to the redrive loop if a
/// participant did not acknowledge.
pub async fn deliver(shards: Arc<ShardPool>, registry: Registry, tasks: PhaseTwo, record: CommitRecord, readers: Vec<ShardGroupId>, ctx: TxnContext) {
    let ctx = TxnContext { begin: false, ..ctx };
    let missing = commit_round(&shards, &record, &ctx).await;
    abort_everywhere(&shards, &ctx, readers.into_iter()).await;
    if missing.is_empty() {
        if let Some(info) = registry.lock().unwrap().get_mut(&record.txn_id) {
            info.state = "committed, syncing";
            for g in &record.participants {
                info.participants.insert(*g, "committed");
            }
        }
        let _ = tasks.sync.send(record);
        return;
    }
    let mut info = delivering(&record);
    for g in &record.participants {
        info.participants.insert(*g, if missing.contains(g) { "prepared" } else { "committed" });
    }
    if let Some(old) = registry.lock().unwrap().get(&record.txn_id) {
        info.started = old.started;
    }
    registry.lock().unwrap().insert(record.txn_id.clone(), info);
    let _ = tasks.redrive.send(record);
}

/// Sends COMMIT to every participant in parallel; returns those that failed.
async fn commit_round(shards: &ShardPool, record: &CommitRecord, ctx: &TxnContext) -> Vec<ShardGroupId> {
    let sends = record.participants.iter().map(|group| async move {
        let outcome = match shards.get(*group) {
            Ok(client) => client.commit_two_phase(ctx, true).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &outcome {
            tracing::warn!(txn = %ctx.id, group, error = %e, "COMMIT not acknowledged; will re-send");
        }
        (*group, outcome.is_ok())
    });
    futures::future::join_all(sends).await.into_iter().filter(|(_, ok)| !ok).map(|(g, _)| g).collect()
}

/// Adds queued records to `waiting`, first waiting for one if it is empty.
/// `None` when the queue is closed; `Some(true)` when the task was idle.
async fn take_work(incoming: &mut mpsc::UnboundedReceiver<CommitRecord>, waiting: &mut Vec<CommitRecord>) -> Option<bool> {
    let idle = waiting.is_empty();
    if idle {
        waiting.push(incoming.recv().await?);
    }
    take_queued(incoming, waiting);
    Some(idle)
}

fn take_queued(incoming: &mut mpsc::UnboundedReceiver<CommitRecord>, waiting: &mut Vec<CommitRecord>) {
    while let Ok(record) = incoming.try_recv() {
        waiting.push(record);
    }
}

/// Starts the redrive loop and the sync task.
pub fn spawn(shards: Arc<ShardPool>, log: Arc<DecisionLog>, registry: Registry, address: String) -> PhaseTwo {
    let sync = spawn_sync(shards.clone(), log, registry);
    let (redrive, incoming) = mpsc::unbounded_channel::<CommitRecord>();
    tokio::spawn(redrive_loop(shards, address, incoming, sync.clone()));
    PhaseTwo { redrive, sync }
}

async fn redrive_loop(shards: Arc<ShardPool>, address: String, mut incoming: mpsc::UnboundedReceiver<CommitRecord>, sync: mpsc::UnboundedSender<CommitRecord>) {
    let mut backoff = FIRST_BACKOFF;
    let mut waiting: Vec<CommitRecord> = Vec::new();
    loop {
        match take_work(&mut incoming, &mut waiting).await {
            None => return,
            Some(true) => backoff = FIRST_BACKOFF,
            Some(false) => {}
        }
        let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
        tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
        let mut still = Vec::new();
        for record in waiting.drain(..) {
            let ctx = TxnContext { id: record.txn_id.clone(), timestamp: record.timestamp, begin: false, coordinator: address.clone() };
            if commit_round(&shards, &record, &ctx).await.is_empty() {
                tracing::info!(txn = %record.txn_id, "COMMIT delivered to every participant");
                let _ = sync.send(record);
            } else {
                still.push(record);
            }
        }
        waiting = still;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Every [`SYNC_INTERVAL`], syncs the WAL of each group with delivered
/// commits, then forgets the decisions whose participants all synced.
fn spawn_sync(shards: Arc<ShardPool>, log: Arc<DecisionLog>, registry: Registry) -> mpsc::UnboundedSender<CommitRecord> {
    let (sender, mut incoming) = mpsc::unbounded_channel::<CommitRecord>();
    tokio::spawn(async move {
        let mut waiting: Vec<CommitRecord> = Vec::new();
        loop {
            if take_work(&mut incoming, &mut waiting).await.is_none() {
                return;
            }
            tokio::time::sleep(SYNC_INTERVAL).await;
            take_queued(&mut incoming, &mut waiting);
            let groups: BTreeSet<ShardGroupId> = waiting.iter().flat_map(|r| r.participants.iter().copied()).collect();
            let syncs = groups.into_iter().map(|g| {
                let shards = shards.clone();
                async move { (g, shards.get(g).map(|c| async move { c.sync_wal().await }).ok()) }
            });
            let mut synced = BTreeSet::new();
            for (g, call) in futures::future::join_all(syncs).await {
                if let Some(call) = call {
                    match call.await {
                        Ok(()) => {
                            synced.insert(g);
                        }
                        Err(e) => tracing::warn!(group = g, error = %e, "WAL sync failed; the decision is kept until it succeeds"),
                    }
                }
            }
            waiting.retain(|record| {
                if record.participants.iter().all(|g| synced.contains(g)) {
                    log.forget(&record.txn_id);
                    registry.lock().unwrap().remove(&record.txn_id);
                    false
                } else {
                    true
                }
            });
        }
    });
    sender
}
